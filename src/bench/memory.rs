//! The memory benchmarks: `fill` writes a database file with many stored
//! messages straight through the store (no server involved, so a million
//! take seconds, not the hours a client would), and `memory` measures
//! `history` pages and `search` answers against a server started on that
//! file, over the real protocol.
//!
//! The filled messages are spread over `general` and registered channels
//! (`bench-0`, `bench-1`, ...; owned by an account `bench-owner`), so they
//! all exist when a server starts on the file. Their text is drawn from a
//! vocabulary with a Zipf distribution, as natural language is, so the
//! searches meet words with a few hundred matches, tens of thousands, and
//! hundreds of thousands.

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{BenchError, Latency, Options};
use crate::client::ClientConnection;
use crate::store::{NewAccount, NewChannel, SqliteStore, Store, StoreOptions, StoredMessage};
use crate::wire::protocol::{Notification, ServerPackage};

/// Words in the vocabulary.
const VOCABULARY: usize = 5000;
/// Messages written per transaction while filling.
const FILL_BATCH: usize = 20_000;
/// Longest wait, after filling, for the search index to take everything in
/// (about 2 µs a message: seconds for the default million).
const FILL_INDEX_WAIT: Duration = Duration::from_secs(600);
/// Longest wait for one answer.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// What `fill` wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FillReport {
    /// The file.
    pub db: String,
    /// Messages written.
    pub messages: u64,
    /// Channels they are spread over (`general` included).
    pub channels: usize,
    /// Seconds it took.
    pub secs: f64,
    /// Messages written per second.
    pub per_sec: f64,
}

/// What `memory` measured.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct MemoryReport {
    /// Messages stored on the server (its highest id, as history shows it).
    pub stored: i64,
    /// `history` answers (latest pages and pages before a random id).
    pub history: Option<Latency>,
    /// `search` answers, all kinds together.
    pub search: Option<Latency>,
    /// Per kind of search: a rare word, a common one, a very common one,
    /// a prefix, two words, a phrase.
    pub search_kinds: Vec<(String, Latency)>,
    /// Answers that were errors.
    pub errors: u64,
}

/// A small deterministic generator (xorshift64*): the bench's data and
/// choices repeat from run to run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The vocabulary: pronounceable made-up words, distinct, from syllables.
fn vocabulary() -> Vec<String> {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "pe", "zu", "ri", "ko", "ma", "li",
        "tu", "se", "ba", "ne", "go", "fi", "ha", "jo", "wu",
    ];
    let mut rng = Rng(0x005E_ED0F_3000);
    let mut seen = std::collections::HashSet::new();
    let mut words = Vec::with_capacity(VOCABULARY);
    while words.len() < VOCABULARY {
        let n = 2 + rng.below(3);
        let word: String = (0..n)
            .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
            .collect();
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// Cumulative Zipf weights over the vocabulary's ranks.
fn zipf_cdf() -> Vec<f64> {
    let mut total = 0.0;
    let mut cdf = Vec::with_capacity(VOCABULARY);
    for rank in 1..=VOCABULARY {
        total += 1.0 / rank as f64;
        cdf.push(total);
    }
    cdf.iter_mut().for_each(|c| *c /= total);
    cdf
}

fn pick(cdf: &[f64], rng: &mut Rng) -> usize {
    let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    cdf.partition_point(|c| *c < x).min(cdf.len() - 1)
}

/// The channel names `fill` uses: `general`, then `bench-0`, ...
fn fill_channels(channels: usize) -> Vec<String> {
    std::iter::once("general".to_owned())
        .chain((0..channels.saturating_sub(1)).map(|k| format!("bench-{k}")))
        .collect()
}

/// Writes `messages` messages into the database file `db` (which must
/// hold none yet), spread over `channels` channels.
pub fn fill(db: &Path, messages: u64, channels: usize) -> Result<FillReport, BenchError> {
    let started = Instant::now();
    let failed = |e: crate::store::StoreError| BenchError::Memory(format!("{}: {e}", db.display()));
    let store = SqliteStore::open(db, &StoreOptions::default()).map_err(failed)?;
    if store.max_message_id().map_err(failed)? > 0 {
        return Err(BenchError::Memory(format!(
            "{} holds messages already; fill a new file",
            db.display()
        )));
    }
    let names = fill_channels(channels.max(1));
    if names.len() > 1 {
        let (owner, _) = store
            .create_account(&NewAccount {
                name: "bench-owner".into(),
                key: "bench-owner".into(),
                skeleton: crate::wire::protocol::name_skeleton("bench-owner"),
                // Not a hash anything verifies against: nobody logs in to it.
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$none$none".into(),
                created_at: crate::store::now_millis(),
            })
            .map_err(failed)?;
        for name in &names[1..] {
            store
                .register_channel(&NewChannel {
                    name: name.clone(),
                    key: name.clone(),
                    owner,
                    private: false,
                    created_at: crate::store::now_millis(),
                })
                .map_err(failed)?;
        }
    }
    let words = vocabulary();
    let cdf = zipf_cdf();
    let mut rng = Rng(0xF111_2026);
    // One message a second, ending now: old enough for nothing, recent
    // enough for any --history-days.
    let start = chrono::Utc::now() - chrono::Duration::seconds(messages as i64);
    let senders: Vec<String> = (0..50).map(|i| format!("writer{i}")).collect();
    let mut batch = Vec::with_capacity(FILL_BATCH);
    let mut id = 0u64;
    while id < messages {
        batch.clear();
        while batch.len() < FILL_BATCH && id < messages {
            id += 1;
            let n = 6 + rng.below(10);
            let text: Vec<&str> = (0..n)
                .map(|_| words[pick(&cdf, &mut rng)].as_str())
                .collect();
            let channel = &names[rng.below(names.len())];
            let sender = &senders[rng.below(senders.len())];
            let when = (start + chrono::Duration::seconds(id as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            batch.push(StoredMessage::new(
                id as i64,
                channel,
                channel,
                sender,
                sender,
                &text.join(" "),
                &when,
            ));
        }
        store.append_messages(&batch).map_err(failed)?;
    }
    // Indexed for search before the report, as a running server would
    // have indexed it (its index thread has been at it all along).
    if !store.catch_up_search(FILL_INDEX_WAIT).map_err(failed)? {
        return Err(failed(crate::store::StoreError::Backend(format!(
            "the search index did not catch up within {FILL_INDEX_WAIT:?}"
        ))));
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(FillReport {
        db: db.display().to_string(),
        messages,
        channels: names.len(),
        secs,
        per_sec: messages as f64 / secs.max(1e-9),
    })
}

/// One kind of search the bench asks, from the vocabulary's ranks.
fn search_query(kind: usize, words: &[String], rng: &mut Rng) -> (&'static str, String) {
    match kind {
        // Ranks 2000..5000: a few hundred matches in a million messages.
        0 => ("rare word", words[2000 + rng.below(3000)].clone()),
        // Ranks 100..300: some tens of thousands.
        1 => ("common word", words[100 + rng.below(200)].clone()),
        // Ranks 0..10: hundreds of thousands.
        2 => ("very common word", words[rng.below(10)].clone()),
        3 => {
            let w = &words[500 + rng.below(1000)];
            ("prefix", format!("{}*", &w[..w.len().min(4)]))
        }
        4 => (
            "two words",
            format!(
                "{} {}",
                words[50 + rng.below(100)],
                words[200 + rng.below(500)]
            ),
        ),
        _ => (
            "phrase",
            format!("\"{} {}\"", words[rng.below(20)], words[rng.below(20)]),
        ),
    }
}

/// Kinds of search in [`search_query`].
const SEARCH_KINDS: usize = 6;

/// Measures history pages and searches against the server at
/// `options.addr`: `options.clients` connections (at least one), each
/// asking `requests` of each in turn, waiting for each answer.
pub async fn measure(options: &Options, requests: u64) -> Result<MemoryReport, BenchError> {
    let clients = options.clients.max(1);
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let addr = options.addr.clone();
        let channels = options.channels.max(1);
        tasks.push(tokio::spawn(async move {
            one_reader(&addr, i, channels, requests).await
        }));
    }
    let mut history = new_histogram();
    let mut search = new_histogram();
    let mut kinds: Vec<(String, Histogram<u64>)> = Vec::new();
    let mut report = MemoryReport::default();
    for t in tasks {
        let got = t
            .await
            .map_err(|e| BenchError::Memory(format!("reader task failed: {e}")))??;
        report.stored = report.stored.max(got.stored);
        report.errors += got.errors;
        let _ = history.add(&got.history);
        let _ = search.add(&got.search);
        for (kind, h) in got.kinds {
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, all)) => {
                    let _ = all.add(&h);
                }
                None => kinds.push((kind, h)),
            }
        }
    }
    report.history = Latency::from_histogram(&history);
    report.search = Latency::from_histogram(&search);
    report.search_kinds = kinds
        .into_iter()
        .filter_map(|(k, h)| Latency::from_histogram(&h).map(|l| (k, l)))
        .collect();
    Ok(report)
}

fn new_histogram() -> Histogram<u64> {
    super::new_histogram()
}

/// One reader's figures.
struct ReaderFigures {
    stored: i64,
    errors: u64,
    history: Histogram<u64>,
    search: Histogram<u64>,
    kinds: Vec<(String, Histogram<u64>)>,
}

async fn one_reader(
    addr: &str,
    index: usize,
    channels: usize,
    requests: u64,
) -> Result<ReaderFigures, BenchError> {
    let mut c = ClientConnection::connect(addr)
        .await
        .map_err(|e| BenchError::Memory(format!("connect to {addr}: {e}")))?;
    let name = super::bench_name("r", index);
    let session = c
        .login(&name, ANSWER_WAIT)
        .await
        .map_err(|e| BenchError::Memory(format!("login: {e}")))?;
    if !session.status {
        return Err(BenchError::Memory(format!("login refused: {session:?}")));
    }
    let names = fill_channels(channels);
    let words = vocabulary();
    let mut rng = Rng(0xBEEF ^ (index as u64 + 1));
    let mut figures = ReaderFigures {
        stored: 0,
        errors: 0,
        history: new_histogram(),
        search: new_histogram(),
        kinds: (0..SEARCH_KINDS)
            .map(|k| {
                (
                    search_query(k, &words, &mut Rng(1)).0.to_owned(),
                    new_histogram(),
                )
            })
            .collect(),
    };
    // The newest id, for pages before a random one.
    let latest = ask(
        &mut c,
        "history",
        serde_json::json!({"channel": "general", "limit": 1}),
    )
    .await?;
    if let Answer::History(Some(id)) = latest.0 {
        figures.stored = id;
    }
    for i in 0..requests {
        let channel = &names[rng.below(names.len())];
        let params = if i % 2 == 0 || figures.stored < 2 {
            serde_json::json!({"channel": channel, "limit": 50})
        } else {
            let before = 1 + rng.below(figures.stored as usize) as i64;
            serde_json::json!({"channel": channel, "before": before, "limit": 50})
        };
        let (answer, took) = ask(&mut c, "history", params).await?;
        record(&mut figures.history, took);
        if matches!(answer, Answer::Error) {
            figures.errors += 1;
        }
        let kind = (i as usize) % SEARCH_KINDS;
        let (_, query) = search_query(kind, &words, &mut rng);
        let (answer, took) = ask(&mut c, "search", serde_json::json!({"query": query})).await?;
        record(&mut figures.search, took);
        record(&mut figures.kinds[kind].1, took);
        if matches!(answer, Answer::Error) {
            figures.errors += 1;
        }
    }
    Ok(figures)
}

fn record(h: &mut Histogram<u64>, took: Duration) {
    let us = (took.as_micros() as u64).clamp(1, super::MAX_LATENCY_US);
    let _ = h.record(us);
}

/// What an answer was.
enum Answer {
    /// A history page, with its newest id.
    History(Option<i64>),
    /// Search results.
    Found,
    /// An error package.
    Error,
}

/// Sends a command and waits for its answer; returns it and how long the
/// round trip took (encoding, the server's work, and decoding the answer).
async fn ask(
    c: &mut ClientConnection,
    command: &str,
    params: serde_json::Value,
) -> Result<(Answer, Duration), BenchError> {
    let started = Instant::now();
    c.command(command, Some(params))
        .await
        .map_err(|e| BenchError::Memory(format!("send {command}: {e}")))?;
    loop {
        let package = c
            .recv_timeout(ANSWER_WAIT)
            .await
            .map_err(|e| BenchError::Memory(format!("answer to {command}: {e}")))?;
        let answer = match package {
            ServerPackage::Notification(Notification::History { messages, .. }) => {
                Answer::History(messages.last().map(|m| m.id))
            }
            ServerPackage::Notification(Notification::SearchResults { .. }) => Answer::Found,
            ServerPackage::Error(e) => {
                tracing::warn!(command, error = %e.message, "the server refused");
                Answer::Error
            }
            // Presence and other people's messages are not answers.
            _ => continue,
        };
        return Ok((answer, started.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_is_distinct_and_zipf_favours_the_first_ranks() {
        let words = vocabulary();
        assert_eq!(words.len(), VOCABULARY);
        let cdf = zipf_cdf();
        let mut rng = Rng(7);
        let mut top = 0;
        for _ in 0..10_000 {
            if pick(&cdf, &mut rng) < 10 {
                top += 1;
            }
        }
        // The first ten ranks carry about a third of the weight.
        assert!((2500..4000).contains(&top), "{top}");
    }

    #[test]
    fn fill_writes_channels_and_messages_a_server_can_load() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fill.db");
        let report = fill(&db, 500, 4).unwrap();
        assert_eq!((report.messages, report.channels), (500, 4));
        let store = SqliteStore::open(&db, &StoreOptions::default()).unwrap();
        assert_eq!(store.max_message_id().unwrap(), 500);
        let names: Vec<String> = store
            .registered_channels()
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["bench-0", "bench-1", "bench-2"]);
        // A second fill of the same file is refused.
        assert!(fill(&db, 10, 4).is_err());
    }
}

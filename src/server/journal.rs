//! The message journal: every accepted chat message goes through one
//! bounded queue to one writer thread, which commits them to the
//! [`Store`] in groups (one transaction per batch) and then tells each
//! sender `message_sent` through the sender's own outbound queue.
//!
//! ```text
//!  hub (under its lock):         writer thread:
//!  id = next_id++                take 1..=store_batch jobs
//!  slot.send(message) ──queue──▶ append_messages(batch)   (one commit)
//!  deliver to the channel        for each job, in order:
//!                                  message → sender gets message_sent
//!                                  barrier → its waiter is woken
//! ```
//!
//! Ids are assigned and queued in the same critical section, so the queue,
//! and therefore the store, sees them in increasing order. The chat lock is
//! never held while waiting: a connection takes a queue slot (a permit)
//! *before* it calls the hub, and when none is free it stops reading its
//! socket until one is (see `connection`), so a writer that falls behind
//! slows the senders instead of growing memory or dropping a message.
//!
//! A `ping` waits for a barrier through the queue before it is answered
//! (the connection reads nothing more meanwhile), so its `pong` reaches
//! the sender after the `message_sent` of every message sent before it,
//! and before the answer to anything sent after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::server::chat::Outbox;
use crate::server::config::Config;
use crate::store::{Change, Store, StoreError, StoredMessage};
use crate::wire::codec;
use crate::wire::protocol::{Notification, ServerPackage};

/// First pause after a failed commit; doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between two attempts at a failing commit.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// One unit of the writer's work.
#[derive(Debug)]
pub enum Job {
    /// A message to store, and who to tell once it is.
    Message {
        /// The message as it is to be stored.
        record: StoredMessage,
        /// The sender's queue, for `message_sent`.
        ack: Outbox,
        /// What a direct message's `message_sent` says beyond the record
        /// (boxed: `None` for every channel message).
        extra: Option<Box<AckExtra>>,
    },
    /// Answered once everything queued before it is committed and
    /// acknowledged.
    Barrier(oneshot::Sender<()>),
    /// A change to stored messages or read marks (an edit, a deletion, a
    /// purge, a read mark, an expiry), applied after the messages queued
    /// before it; `done` (if any) gets the rows it affected.
    Change {
        /// What to change.
        change: Change,
        /// Who waits for the outcome.
        done: Option<oneshot::Sender<Result<usize, StoreError>>>,
    },
}

/// The parts of a direct message's `message_sent` that are not in its
/// record: how the recipient was chosen and what they said about being away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckExtra {
    /// The recipient was picked by `random`.
    pub random: bool,
    /// The recipient's away text when the message was sent.
    pub away: Option<String>,
    /// The recipient was online: the message is delivered now (or within
    /// their backlog, which is being delivered), not kept for later.
    pub online: bool,
}

/// A reserved place in the journal's queue: taking it is what may wait,
/// using it never does.
pub type Slot = mpsc::OwnedPermit<Job>;

/// Why no slot could be taken right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// The queue is full: wait for [`Journal::slot`].
    Full,
    /// The writer has stopped (it only does when it panicked).
    Closed,
}

/// The handle on the queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    /// The queue's sending side.
    tx: mpsc::Sender<Job>,
    /// Set by the writer while the store refuses its commits (a database
    /// server gone, a full disk), cleared by the first commit that works.
    failing: Arc<AtomicBool>,
}

impl Journal {
    /// Starts the writer thread over `store`. It runs until every handle is
    /// dropped, committing what is queued before it stops.
    pub fn start(store: Arc<dyn Store>, config: Arc<Config>) -> std::io::Result<Journal> {
        let (tx, rx) = mpsc::channel(config.store_queue.max(1));
        let failing = Arc::new(AtomicBool::new(false));
        let writer = Writer::new(store, config, rx, failing.clone());
        std::thread::Builder::new()
            .name("chatmaster-store".into())
            .spawn(move || writer.run())?;
        Ok(Journal { tx, failing })
    }

    /// Whether the store is refusing the writer's commits right now. New
    /// messages are then refused with an error rather than queued: what
    /// is queued already is kept and retried (and acknowledged once
    /// stored), but a sender should hear at once that nothing more can be
    /// stored, not wait in silence for as long as the outage lasts.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// A slot if one is free now.
    pub fn try_slot(&self) -> Result<Slot, SlotError> {
        self.tx.clone().try_reserve_owned().map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SlotError::Full,
            mpsc::error::TrySendError::Closed(_) => SlotError::Closed,
        })
    }

    /// A slot, waiting for one to free up; `Err` if the writer has stopped.
    pub async fn slot(self) -> Result<Slot, SlotError> {
        self.tx.reserve_owned().await.map_err(|_| SlotError::Closed)
    }

    /// Waits until everything queued so far is committed and its senders
    /// have been given `message_sent` (a `ping`, and shutdown).
    pub async fn barrier(self) -> Result<(), SlotError> {
        let (done, committed) = oneshot::channel();
        self.tx
            .send(Job::Barrier(done))
            .await
            .map_err(|_| SlotError::Closed)?;
        committed.await.map_err(|_| SlotError::Closed)
    }

    /// Applies `change` after everything queued so far and returns the
    /// rows it affected; waits for a place in the queue like a message.
    pub async fn change(self, change: Change) -> Result<usize, StoreError> {
        let (done, applied) = oneshot::channel();
        let closed = || StoreError::Backend("the store's writer has stopped".into());
        self.tx
            .send(Job::Change {
                change,
                done: Some(done),
            })
            .await
            .map_err(|_| closed())?;
        applied.await.map_err(|_| closed())?
    }

    /// Queues `change` after everything queued so far, waiting for room;
    /// `done` gets the rows it affected once it is applied.
    pub async fn queue(
        self,
        change: Change,
        done: oneshot::Sender<Result<usize, StoreError>>,
    ) -> Result<(), SlotError> {
        self.tx
            .send(Job::Change {
                change,
                done: Some(done),
            })
            .await
            .map_err(|_| SlotError::Closed)
    }

    /// Jobs waiting in the queue (for tests and diagnostics).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The writer thread's state.
struct Writer {
    /// Where messages go.
    store: Arc<dyn Store>,
    /// Batch size and encoding limits.
    config: Arc<Config>,
    /// The queue's receiving side.
    rx: mpsc::Receiver<Job>,
    /// The jobs of the batch being handled; kept between batches so a
    /// steady stream allocates nothing.
    jobs: Vec<Job>,
    /// The messages of that batch, in order.
    records: Vec<StoredMessage>,
    /// The changes of that batch, in order.
    changes: Vec<Change>,
    /// What each of them affected, once applied.
    outcomes: Vec<Result<usize, StoreError>>,
    /// Messages committed and not yet added to the search index.
    unindexed: usize,
    /// When the search index was last brought up to date.
    last_index: Instant,
    /// Shared with [`Journal::failing`].
    failing: Arc<AtomicBool>,
}

impl Writer {
    fn new(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        rx: mpsc::Receiver<Job>,
        failing: Arc<AtomicBool>,
    ) -> Self {
        let batch = config.store_batch.max(1);
        Writer {
            store,
            rx,
            jobs: Vec::with_capacity(batch.min(1024)),
            records: Vec::with_capacity(batch.min(1024)),
            changes: Vec::new(),
            outcomes: Vec::new(),
            unindexed: 0,
            last_index: Instant::now(),
            failing,
            config,
        }
    }

    fn run(mut self) {
        let batch = self.config.store_batch.max(1);
        let group = self.config.store_group;
        // When the last commit began; `None` before the first.
        let mut last_commit: Option<Instant> = None;
        while let Some(first) = self.rx.blocking_recv() {
            self.jobs.push(first);
            self.take_queued(batch);
            // Group commit: a writer that began a commit less than `group`
            // ago is busy, so it gathers messages for the rest of that time
            // before committing again. Every commit writes whole pages to
            // the log (three or so for one message), so a commit per
            // message would write, and later checkpoint, a dozen KiB per
            // message; an idle writer commits at once.
            if let Some(due) = last_commit.map(|t| t + group) {
                let now = Instant::now();
                if self.jobs.len() < batch && now < due {
                    std::thread::sleep(due - now);
                    self.take_queued(batch);
                }
            }
            last_commit = Some(Instant::now());
            self.commit();
            self.acknowledge();
            if self.unindexed >= self.config.search_index_batch
                || self.last_index.elapsed() >= self.config.search_index
            {
                self.index(Change::IndexSome(self.config.search_index_batch.max(1)));
            }
        }
        self.index(Change::Index);
        tracing::debug!("store writer stopped");
    }

    /// Adds what is queued to the batch, up to `batch` jobs.
    fn take_queued(&mut self, batch: usize) {
        while self.jobs.len() < batch {
            match self.rx.try_recv() {
                Ok(job) => self.jobs.push(job),
                Err(_) => break,
            }
        }
    }

    /// Stores the batch's messages, retrying until the store takes them:
    /// an acknowledged message must be on disk, and an unacknowledged one
    /// is not dropped while the server runs. Meanwhile the queue fills and
    /// senders wait.
    fn commit(&mut self) {
        for job in &mut self.jobs {
            match job {
                Job::Message { record, .. } => {
                    self.records.push(std::mem::replace(record, empty_record()))
                }
                Job::Change { change, .. } => self
                    .changes
                    .push(std::mem::replace(change, Change::Delete(0))),
                Job::Barrier(_) => {}
            }
        }
        self.apply_changes_after_messages();
    }

    /// Adds what was committed since the last time to the search index, in
    /// one transaction: a segment of the index per batch of messages, not
    /// per commit. `change` is [`Change::IndexSome`] while serving, so one
    /// addition holds up the next commit for a bounded time (a busy writer
    /// indexes a batch as soon as one has gathered), and [`Change::Index`]
    /// for everything at the end. A failure is logged and tried again next
    /// time.
    fn index(&mut self, change: Change) {
        if self.unindexed == 0 {
            return;
        }
        let asked = match change {
            Change::IndexSome(limit) => limit,
            _ => usize::MAX,
        };
        match self.store.apply_changes(std::slice::from_ref(&change)) {
            // Fewer than asked: the index is up to date (the count may
            // differ from `unindexed` when messages were deleted meanwhile).
            Ok(rows) => match rows.first().copied().unwrap_or(0) {
                n if n < asked => self.unindexed = 0,
                n => self.unindexed = self.unindexed.saturating_sub(n).max(1),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot index messages for search; retrying later")
            }
        }
        self.last_index = Instant::now();
    }

    /// Commits the batch's messages, then its changes: those come from
    /// commands about messages stored already (or read marks and purges),
    /// so applying them after the batch's messages keeps every change
    /// after what it changes.
    fn apply_changes_after_messages(&mut self) {
        self.unindexed += self.records.len();
        self.store_messages();
        if self.changes.contains(&Change::Index) {
            // A search asked for the index to be brought up to date.
            self.unindexed = 0;
            self.last_index = Instant::now();
        }
        self.outcomes.clear();
        if self.changes.is_empty() {
            return;
        }
        // One transaction for them all; when it fails, one each, so one
        // bad change fails alone.
        match self.store.apply_changes(&self.changes) {
            Ok(rows) => self.outcomes.extend(rows.into_iter().map(Ok)),
            Err(_) => {
                for change in &self.changes {
                    let outcome = self
                        .store
                        .apply_changes(std::slice::from_ref(change))
                        .map(|rows| rows.first().copied().unwrap_or(0));
                    if let Err(e) = &outcome {
                        tracing::error!(error = %e, ?change, "cannot apply a change to stored messages");
                    }
                    self.outcomes.push(outcome);
                }
            }
        }
        self.changes.clear();
    }

    /// Stores the batch's messages (see [`Writer::commit`]).
    fn store_messages(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let mut pause = FIRST_RETRY_PAUSE;
        let mut failures = 0u32;
        let started = Instant::now();
        while let Err(e) = self.store.append_messages(&self.records) {
            self.failing.store(true, Ordering::Relaxed);
            failures += 1;
            log_failure(&e, failures, self.records.len());
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
        crate::metrics::commit(started.elapsed());
        if failures > 0 {
            self.failing.store(false, Ordering::Relaxed);
            tracing::info!(messages = self.records.len(), "store writes succeed again");
        }
    }

    /// Sends what the batch's jobs owe, in queue order.
    fn acknowledge(&mut self) {
        let mut outcomes = self.outcomes.drain(..);
        let mut records = self.records.drain(..);
        for job in self.jobs.drain(..) {
            match job {
                Job::Message { ack, extra, .. } => {
                    let Some(m) = records.next() else { continue };
                    let extra = extra.map(|e| *e).unwrap_or_default();
                    let sent = ServerPackage::notification(match m.direct {
                        None => Notification::MessageSent {
                            id: m.id,
                            channel: Some(m.channel),
                            to: None,
                            timestamp: m.timestamp,
                            queued: None,
                            random: None,
                            away: None,
                        },
                        Some(d) => Notification::MessageSent {
                            id: m.id,
                            channel: None,
                            to: Some(d.recipient),
                            timestamp: m.timestamp,
                            queued: (d.offline && !extra.online).then_some(true),
                            random: extra.random.then_some(true),
                            away: extra.away,
                        },
                    });
                    // Always stored, never deflated: an acknowledgement is
                    // 130-200 bytes of JSON, deflate would save a tenth of
                    // that, and each deflate clears a 128 KiB table (in
                    // profiles of many small channels that clearing was a
                    // quarter of the writer thread's time).
                    match codec::encode_packed(
                        &sent,
                        self.config.max_package_bytes,
                        self.config.compression_level,
                        usize::MAX,
                    ) {
                        Ok(bytes) => ack.offer(bytes),
                        Err(e) => tracing::error!(error = %e, "cannot encode message_sent"),
                    }
                }
                Job::Barrier(done) => {
                    let _ = done.send(());
                }
                Job::Change { done, .. } => {
                    let outcome = outcomes
                        .next()
                        .unwrap_or_else(|| Err(StoreError::Backend("change not applied".into())));
                    if let Some(done) = done {
                        let _ = done.send(outcome);
                    }
                }
            }
        }
    }
}

/// Placeholder left in a job whose record moved into the batch.
fn empty_record() -> StoredMessage {
    StoredMessage::new(0, "", "", "", "", "", "")
}

/// Logs a failed commit: the first few, then one in a hundred, so a broken
/// disk does not flood the log while the writer keeps retrying.
fn log_failure(e: &StoreError, failures: u32, messages: usize) {
    if failures <= 3 || failures % 100 == 0 {
        tracing::error!(error = %e, failures, messages, "cannot store messages; retrying (senders wait meanwhile)");
    }
}

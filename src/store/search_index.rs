//! The full-text search index of a [`super::SqliteStore`]: what it holds,
//! how it is brought up to date, and, for a database file, the thread that
//! does that beside the message writer.
//!
//! The index is derived data: FTS5 tables holding only the index
//! (contentless, `contentless_delete=1`), keyed by message id, with the
//! text itself in `messages`. A database file keeps it in a file of its
//! own next to it, `PATH-search`, written by its own connection on its own
//! thread. That is the point: SQLite lets one transaction write a file at
//! a time, and adding a batch of messages to an FTS5 index takes about
//! 2 µs a message (25,000 of them gathered in the default quarter second
//! of a busy server is 50 ms). In the database's own file every commit of
//! new messages, so every `message_sent`, waited for that; in a file of
//! its own it goes on beside the commits. Smaller batches would not do:
//! FTS5 writes a segment per transaction and merges segments as they pile
//! up, so a batch per commit costs several times more.
//!
//! How the index follows the messages:
//! - `meta.indexed` (in the index) is the highest message id indexed;
//!   everything above it is added in id order, in batches.
//! - The database's triggers note every edited or deleted message in
//!   `search_stale`; each batch first takes the noted messages it had
//!   indexed out of the index and puts back the text they have now, then
//!   the notes are deleted (on the database's writing connection, a short
//!   write of its own). A crash between the two leaves notes that are
//!   applied again, which changes nothing.
//! - `meta.token` is the database's `search_token`: an index made for
//!   another database (a file restored over this one, whose backup got a
//!   token of its own) is emptied and rebuilt.
//!
//! An in-memory database attaches an in-memory index as `search` to its
//! one connection and indexes in the writer's transactions, as the message
//! journal asks ([`super::Change::IndexSome`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags};

use super::background::{lock, next_round, pause, Background, Flagged, Flags, Shared};
use super::{MessageId, StoreError};

/// The index's own schema version (`PRAGMA user_version` of its file).
const INDEX_VERSION: i64 = 1;

/// The tokenizer of both indexes: folds case and removes diacritics, so
/// `cafe` finds `Café`.
const TOKENIZE: &str = "unicode61 remove_diacritics 2";

/// Where each of the two databases is, as a connection names them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schemas {
    /// The schema holding the index tables.
    pub index: &'static str,
    /// The schema holding `messages`, `meta` and `search_stale`.
    pub messages: &'static str,
}

/// The index thread's connection: the index file is `main`, the database
/// is attached as `msg` (only read).
pub(super) const THREAD: Schemas = Schemas {
    index: "main",
    messages: "msg",
};

/// The one connection of an in-memory store: the index is attached.
pub(super) const ATTACHED: Schemas = Schemas {
    index: "search",
    messages: "main",
};

/// The index file of the database file at `db`.
pub(super) fn index_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-search");
    PathBuf::from(name)
}

/// Creates the index tables in `schema` if they are missing, and empties
/// them if they were made for another database than `token` says.
fn prepare(conn: &Connection, s: Schemas, token: i64) -> rusqlite::Result<()> {
    let i = s.index;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {i}.meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) \
         WITHOUT ROWID;
         CREATE VIRTUAL TABLE IF NOT EXISTS {i}.messages_fts USING fts5(text, content = '', \
         contentless_delete = 1, tokenize = '{TOKENIZE}');
         CREATE VIRTUAL TABLE IF NOT EXISTS {i}.direct_fts USING fts5(text, content = '', \
         contentless_delete = 1, tokenize = '{TOKENIZE}');
         INSERT OR IGNORE INTO {i}.meta (name, value) VALUES ('indexed', 0);"
    ))?;
    let theirs: Option<i64> = conn
        .query_row(
            &format!("SELECT value FROM {i}.meta WHERE name = 'token'"),
            [],
            |r| r.get(0),
        )
        .ok();
    if theirs != Some(token) {
        conn.execute_batch(&format!(
            "INSERT INTO {i}.messages_fts (messages_fts) VALUES ('delete-all');
             INSERT INTO {i}.direct_fts (direct_fts) VALUES ('delete-all');
             UPDATE {i}.meta SET value = 0 WHERE name = 'indexed';"
        ))?;
        conn.execute(
            &format!("INSERT OR REPLACE INTO {i}.meta (name, value) VALUES ('token', ?1)"),
            [token],
        )?;
    }
    Ok(())
}

/// The database's `search_token`.
fn token_of(conn: &Connection, s: Schemas) -> rusqlite::Result<i64> {
    conn.query_row(
        &format!(
            "SELECT value FROM {}.meta WHERE name = 'search_token'",
            s.messages
        ),
        [],
        |r| r.get(0),
    )
}

/// Attaches a fresh in-memory index to the one connection of an
/// in-memory store.
pub(super) fn attach_in_memory(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("ATTACH DATABASE ':memory:' AS search")
        .and_then(|()| token_of(conn, ATTACHED))
        .and_then(|token| prepare(conn, ATTACHED, token))
        .map_err(super::sqlite::classify)
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Batch {
    /// New messages indexed.
    pub added: usize,
    /// The highest `search_stale` note applied (0: none).
    pub stale_upto: i64,
    /// There is more to do than the batch's bound allowed.
    pub more: bool,
}

/// Brings the index closer to the messages, inside the caller's
/// transaction: applies at most `limit` of the noted edits and deletions
/// (oldest first), then indexes at most `limit` new messages (all of both
/// for `None`). The caller deletes the notes up to [`Batch::stale_upto`]
/// once this is committed.
pub(super) fn index_batch(
    conn: &Connection,
    s: Schemas,
    limit: Option<usize>,
) -> rusqlite::Result<Batch> {
    let (i, m) = (s.index, s.messages);
    let from: MessageId = conn
        .prepare_cached(&format!(
            "SELECT value FROM {i}.meta WHERE name = 'indexed'"
        ))?
        .query_row([], |r| r.get(0))?;
    let sql_limit = |n: Option<usize>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let notes: Vec<(i64, MessageId)> = conn
        .prepare_cached(&format!(
            "SELECT seq, id FROM {m}.search_stale ORDER BY seq LIMIT ?1"
        ))?
        .query_map([sql_limit(limit)], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let stale_upto = notes.last().map_or(0, |&(seq, _)| seq);
    let more_notes = limit.is_some_and(|n| notes.len() >= n);
    // Only what was indexed is in the index; a message above `from` is
    // indexed below as it is now, if it is still there. An id noted twice
    // is taken out and put back once.
    let stale: BTreeSet<MessageId> = notes
        .into_iter()
        .map(|(_, id)| id)
        .filter(|&id| id <= from)
        .collect();
    for id in stale {
        for table in ["messages_fts", "direct_fts"] {
            conn.prepare_cached(&format!("DELETE FROM {i}.{table} WHERE rowid = ?1"))?
                .execute([id])?;
        }
        conn.prepare_cached(&format!(
            "INSERT INTO {i}.messages_fts (rowid, text) \
                 SELECT id, text FROM {m}.messages WHERE id = ?1 AND channel_key <> ''"
        ))?
        .execute([id])?;
        conn.prepare_cached(&format!(
            "INSERT INTO {i}.direct_fts (rowid, text) \
                 SELECT id, text FROM {m}.messages WHERE id = ?1 AND channel_key = ''"
        ))?
        .execute([id])?;
    }
    let upto: Option<MessageId> = match limit {
        None => conn
            .prepare_cached(&format!("SELECT max(id) FROM {m}.messages WHERE id > ?1"))?
            .query_row([from], |r| r.get(0))?,
        Some(_) => conn
            .prepare_cached(&format!(
                "SELECT max(id) FROM (SELECT id FROM {m}.messages WHERE id > ?1 ORDER BY id \
                 LIMIT ?2)"
            ))?
            .query_row(params![from, sql_limit(limit)], |r| r.get(0))?,
    };
    let Some(upto) = upto else {
        return Ok(Batch {
            added: 0,
            stale_upto,
            more: more_notes,
        });
    };
    let channels = conn
        .prepare_cached(&format!(
            "INSERT INTO {i}.messages_fts (rowid, text) SELECT id, text FROM {m}.messages \
             WHERE id > ?1 AND id <= ?2 AND channel_key <> ''"
        ))?
        .execute([from, upto])?;
    let direct = conn
        .prepare_cached(&format!(
            "INSERT INTO {i}.direct_fts (rowid, text) SELECT id, text FROM {m}.messages \
             WHERE id > ?1 AND id <= ?2 AND channel_key = ''"
        ))?
        .execute([from, upto])?;
    conn.prepare_cached(&format!(
        "UPDATE {i}.meta SET value = ?1 WHERE name = 'indexed'"
    ))?
    .execute([upto])?;
    let added = channels + direct;
    Ok(Batch {
        added,
        stale_upto,
        more: more_notes || limit.is_some_and(|n| added >= n),
    })
}

/// Deletes the `search_stale` notes a committed batch applied.
pub(super) fn forget_stale(conn: &Connection, s: Schemas, upto: i64) -> rusqlite::Result<()> {
    if upto > 0 {
        conn.prepare_cached(&format!(
            "DELETE FROM {}.search_stale WHERE seq <= ?1",
            s.messages
        ))?
        .execute([upto])?;
    }
    Ok(())
}

/// Opens (creating if missing) the index file of the database file at
/// `db` and attaches the database; refuses a file that is not an index of
/// this version with a reason naming it.
fn open_index(db: &Path, busy: Duration) -> Result<Connection, StoreError> {
    let path = index_path(db);
    let named = |e: StoreError| {
        StoreError::Corrupt(format!(
            "search index {}: {e} (remove the file and it is rebuilt from the database)",
            path.display()
        ))
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&path, flags).map_err(super::sqlite::classify)?;
    conn.busy_timeout(busy).map_err(super::sqlite::classify)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| named(super::sqlite::classify(e)))?;
    if version > INDEX_VERSION {
        return Err(named(StoreError::Corrupt(format!(
            "made by a newer version (index version {version}, this one knows {INDEX_VERSION})"
        ))));
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| named(super::sqlite::classify(e)))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(named(StoreError::Unwritable(format!(
            "cannot switch to WAL mode (journal mode stays {mode})"
        ))));
    }
    // The index is rebuilt from the database after a power cut, so its
    // commits need not wait for the disk.
    let db_name = db.to_string_lossy();
    conn.pragma_update(None, "synchronous", "NORMAL")
        .and_then(|()| conn.execute("ATTACH DATABASE ?1 AS msg", [db_name.as_ref()]))
        .and_then(|_| token_of(&conn, THREAD))
        .and_then(|token| prepare(&conn, THREAD, token))
        .and_then(|()| conn.pragma_update(None, "user_version", INDEX_VERSION))
        .map_err(|e| named(super::sqlite::classify(e)))?;
    Ok(conn)
}

/// What the index thread and the store share.
///
/// The thread works in rounds: a round clears `dirty`, then runs batches
/// until one finds nothing more to do. A write marks `dirty` once it is
/// committed, so every write is seen by the round that clears its mark or
/// by a later one; a search that asks for a round (`requested`) waits
/// until a round that began after its request has caught up (`served`).
#[derive(Debug, Default)]
struct State {
    /// `dirty`: something was written to the database since the last
    /// round began.
    flags: Flags,
    /// A round is running.
    busy: bool,
    /// The last round caught up (it did not fail).
    ok: bool,
    /// Rounds asked for by searches so far.
    requested: u64,
    /// The last request that a finished round began after.
    served: u64,
}

impl Flagged for State {
    fn flags(&mut self) -> &mut Flags {
        &mut self.flags
    }
}

/// The thread indexing a database file (see the module docs); its
/// condition is also what waiting searches wait on.
#[derive(Debug)]
pub(super) struct Indexer(Background<State>);

/// How the index thread works.
#[derive(Debug, Clone, Copy)]
pub(super) struct IndexerOptions {
    /// Least time between the starts of two batches of a busy thread, so
    /// each batch is large (a search does not wait for it).
    pub gap: Duration,
    /// Most new messages per batch (one transaction of the index).
    pub batch: usize,
    /// How long to wait for another process's lock on the index.
    pub busy: Duration,
}

impl Indexer {
    /// Opens the index of the database file at `db` and starts its thread,
    /// which first catches up with what the database holds; `writer` is the
    /// database's writing connection, for deleting applied notes.
    pub(super) fn start(
        db: &Path,
        writer: Arc<Mutex<Connection>>,
        options: IndexerOptions,
    ) -> Result<Indexer, StoreError> {
        let conn = open_index(db, options.busy)?;
        let state = State {
            flags: Flags {
                dirty: true,
                ..Flags::default()
            },
            ..State::default()
        };
        Background::spawn("chatmaster-index", state, move |shared| {
            run(&conn, &writer, shared, options)
        })
        .map(Indexer)
        .map_err(|e| StoreError::Backend(format!("cannot start a thread: {e}")))
    }

    /// Notes a write to the database; wakes the thread only if it waits.
    pub(super) fn wake(&self) {
        self.0.wake();
    }

    /// Waits, at most `wait`, until the index holds everything committed
    /// so far (edits and deletions included); whether it does.
    pub(super) fn catch_up(&self, wait: Duration) -> bool {
        let (state, wake) = self.0.shared();
        let deadline = Instant::now() + wait;
        let mut st = lock(state);
        if !st.flags.dirty && !st.busy && st.ok {
            return true;
        }
        st.requested += 1;
        let mine = st.requested;
        st.flags.dirty = true;
        wake.notify_all();
        while st.served < mine && !st.flags.stop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = wake
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.served >= mine
    }
}

/// The index thread: waits for writes (or a search), indexes in batches
/// until it has caught up, lets `gap` pass unless a search waits, and
/// again, until the store is dropped.
fn run(
    conn: &Connection,
    writer: &Mutex<Connection>,
    shared: &Shared<State>,
    options: IndexerOptions,
) {
    let (state, wake) = shared;
    let mut failing = false;
    loop {
        let round = {
            let Some(mut st) = next_round(shared) else {
                return;
            };
            st.busy = true;
            st.requested
        };
        // A waiting search skips the gap, unless the round failed.
        let mut hurry = true;
        loop {
            match one_batch(conn, writer, options.batch) {
                Ok(batch) if batch.more => {
                    if lock(state).flags.stop {
                        return;
                    }
                }
                Ok(_) => {
                    if failing {
                        failing = false;
                        tracing::info!("indexing messages for search succeeds again");
                    }
                    let mut st = lock(state);
                    st.busy = false;
                    st.ok = true;
                    st.served = st.served.max(round);
                    wake.notify_all();
                    break;
                }
                Err(e) => {
                    if !failing {
                        failing = true;
                        tracing::error!(error = %e, "cannot index messages for search; retrying");
                    }
                    // Try again after the gap, as for a write.
                    let mut st = lock(state);
                    st.busy = false;
                    st.ok = false;
                    st.flags.dirty = true;
                    hurry = false;
                    break;
                }
            }
        }
        let until = Instant::now() + options.gap;
        if !pause(shared, until, |st| hurry && st.requested > st.served) {
            return;
        }
    }
}

/// One batch in one transaction of the index; then the notes it applied
/// are deleted.
fn one_batch(
    conn: &Connection,
    writer: &Mutex<Connection>,
    limit: usize,
) -> rusqlite::Result<Batch> {
    // Deferred: the first write takes the index's lock only; the database
    // is only read, from one snapshot, beside its writer.
    conn.execute_batch("BEGIN DEFERRED")?;
    let done = index_batch(conn, THREAD, Some(limit))
        .and_then(|batch| conn.execute_batch("COMMIT").map(|()| batch));
    let batch = match done {
        Ok(done) => done,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    };
    if batch.stale_upto > 0 {
        let writer = writer.lock().unwrap_or_else(|p| p.into_inner());
        // The writing connection has the database as `main`.
        forget_stale(&writer, ATTACHED, batch.stale_upto)?;
    }
    Ok(batch)
}

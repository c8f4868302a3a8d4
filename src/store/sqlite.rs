//! [`SqliteStore`]: the [`Store`] on SQLite (the bundled library, so no
//! system one is needed), in WAL mode, its schema versioned with
//! `PRAGMA user_version` and migrated at open by `rusqlite_migration`.
//!
//! Opening checks the file before changing anything in it: a file that is
//! not a database, a damaged one, one written by a newer version or one
//! that cannot be written is refused with a [`StoreError`] and left exactly
//! as it was. A busy timeout lets another process (the admin CLI) use the
//! same file while the server runs: each waits for the other's lock
//! instead of failing at once.
//!
//! One connection writes, behind a mutex: writes to SQLite are serialised
//! anyway, and the message writer holds it only for one batch's
//! transaction at a time. On a file, reads (accounts, registered channels,
//! history, search) go through connections of their own
//! ([`StoreOptions::readers`] of them), so a login that reads an account
//! or a search never waits for a commit, nor for one another: WAL lets
//! readers run while the writer commits. An in-memory database has one
//! connection for both.
//!
//! A file store's write-ahead log is checkpointed (copied back into the
//! database file) by a thread of its own, on a connection of its own, at
//! most every [`StoreOptions::checkpoint_gap`] and only after something
//! was written. SQLite would otherwise run the checkpoint inside the
//! commit that fills the log past 1,000 pages, and every message waiting
//! for the next commit would wait for that copy and its disk syncs too (it
//! was the tail of `message_sent` latency). The copy runs beside the
//! writer; only its last step, the frames committed during the copy, takes
//! the writer's mutex, so the log is then copied whole and the next commit
//! starts it again from its beginning: the log stays as small as what is
//! written between two checkpoints.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{ffi, params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};
use rusqlite_migration::{MigrationDefinitionError, Migrations, M};

use super::background::{next_round, pause, Background, Flags, Shared};
use super::search_index::{self, Indexer, IndexerOptions};
use super::{
    Account, AccountId, AccountsVersion, Change, ChannelId, Direct, DirectScope, Durability,
    HistoryPage, MessageId, NewAccount, NewChannel, Page, RegisteredChannel, Scope, SearchHits,
    SearchQuery, Store, StoreError, StoreOptions, StoredBan, StoredMessage, Unread,
};

/// The schema's history, oldest first: version N is the database after
/// the first N scripts. Scripts are never edited once released, only added.
pub(super) const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/0001_initial.sql")),
    M::up(include_str!("migrations/0002_accounts_version.sql")),
    M::up(include_str!("migrations/0003_direct.sql")),
    M::up(include_str!("migrations/0004_moderation.sql")),
    M::up(include_str!("migrations/0005_memory.sql")),
    M::up(include_str!("migrations/0006_search_index.sql")),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    /// The writing connection; see the module docs for why one is enough.
    conn: Arc<Mutex<Connection>>,
    /// The reading connections of a file store (none: reads use `conn`).
    readers: Vec<Mutex<Connection>>,
    /// Where the next read starts looking for a free reader.
    next_reader: AtomicUsize,
    /// The thread checkpointing a file store's log (see the module docs).
    checkpointer: Option<Checkpointer>,
    /// The thread keeping a file store's search index (`None`: the index
    /// is attached to the one connection and follows its transactions).
    indexer: Option<Indexer>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and migrates
    /// it to [`SCHEMA_VERSION`].
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        if path.is_dir() {
            return Err(StoreError::Unwritable("it is a directory".into()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(classify)?;
        conn.busy_timeout(options.busy_timeout).map_err(classify)?;
        // Everything up to the write probe only reads, so a file refused
        // here is left untouched.
        check_readable(&conn)?;
        if conn
            .is_readonly(rusqlite::DatabaseName::Main)
            .map_err(classify)?
        {
            return Err(StoreError::Unwritable("the file is read-only".into()));
        }
        // Takes the write lock without writing: fails on a file or
        // directory the process may not write.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(classify)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(classify)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unwritable(format!(
                "cannot switch to WAL mode (journal mode stays {mode})"
            )));
        }
        let synchronous = match options.durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(classify)?;
        configure(&conn)?;
        if !options.checkpoint_gap.is_zero() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(classify)?;
        }
        migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let indexer = Indexer::start(
            path,
            conn.clone(),
            IndexerOptions {
                gap: options.index_gap,
                batch: options.index_batch.max(1),
                busy: options.busy_timeout,
            },
        )?;
        // Opened once the schema is current; they never write.
        let index = search_index::index_path(path);
        let mut readers = Vec::new();
        for _ in 0..options.readers.max(1) {
            let reader = Connection::open_with_flags(path, flags).map_err(classify)?;
            reader
                .busy_timeout(options.busy_timeout)
                .map_err(classify)?;
            configure(&reader)?;
            reader
                .execute(
                    "ATTACH DATABASE ?1 AS search",
                    [index.to_string_lossy().as_ref()],
                )
                .map_err(classify)?;
            reader
                .pragma_update(None, "query_only", "ON")
                .map_err(classify)?;
            readers.push(Mutex::new(reader));
        }
        let checkpointer = if options.checkpoint_gap.is_zero() {
            None
        } else {
            let own = Connection::open_with_flags(path, flags).map_err(classify)?;
            Some(
                Checkpointer::start(own, conn.clone(), options.checkpoint_gap)
                    .map_err(|e| StoreError::Backend(format!("cannot start a thread: {e}")))?,
            )
        };
        Ok(SqliteStore {
            conn,
            readers,
            next_reader: AtomicUsize::new(0),
            checkpointer,
            indexer: Some(indexer),
        })
    }

    /// A store that lives in memory and is gone when dropped (`--db :memory:`).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Connection::open_in_memory().map_err(classify)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        search_index::attach_in_memory(&conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
            checkpointer: None,
            indexer: None,
        })
    }

    /// Opens an existing database for reading only (inspection, tests):
    /// nothing is migrated or written, and a newer schema is refused.
    pub fn open_read_only(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(classify)?;
        conn.busy_timeout(options.busy_timeout).map_err(classify)?;
        check_readable(&conn)?;
        configure(&conn)?;
        let index = search_index::index_path(path);
        if index.is_file() {
            conn.execute(
                "ATTACH DATABASE ?1 AS search",
                [index.to_string_lossy().as_ref()],
            )
            .map_err(classify)?;
        }
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
            checkpointer: None,
            indexer: None,
        })
    }

    /// The file's schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        user_version(&self.lock())
    }

    /// The writing connection. Whoever takes it writes (reads of a file
    /// store have connections of their own), so when it is given back,
    /// the write committed, the checkpoint and index threads are told.
    fn lock(&self) -> Writing<'_> {
        Writing {
            conn: lock_writer(&self.conn),
            store: self,
        }
    }

    /// The connection to read on: a free reader if there is one (else the
    /// next in turn, waited for), or the one connection of a memory store.
    fn read(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        if n == 0 {
            return lock_writer(&self.conn);
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start % n]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The writing connection of a store, held; see [`SqliteStore::lock`].
struct Writing<'a> {
    /// The connection.
    conn: MutexGuard<'a, Connection>,
    /// Whose threads to tell.
    store: &'a SqliteStore,
}

impl std::ops::Deref for Writing<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Writing<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Some(checkpointer) = &self.store.checkpointer {
            checkpointer.wake();
        }
        if let Some(indexer) = &self.store.indexer {
            indexer.wake();
        }
    }
}

/// The writing connection. A panic in a method leaves it usable (SQLite
/// rolls an unfinished transaction back when it is dropped).
fn lock_writer(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The thread that checkpoints a file store's log (see the module docs).
#[derive(Debug)]
struct Checkpointer(Background<Flags>);

impl Checkpointer {
    /// Starts the thread: `own` copies the log beside the writer, `writer`
    /// is taken for the last frames, and `gap` is the least time between
    /// the starts of two checkpoints.
    fn start(
        own: Connection,
        writer: Arc<Mutex<Connection>>,
        gap: Duration,
    ) -> std::io::Result<Checkpointer> {
        Background::spawn("chatmaster-ckpt", Flags::default(), move |shared| {
            checkpoint_loop(&own, &writer, shared, gap)
        })
        .map(Checkpointer)
    }

    /// Notes a write; wakes the thread only if it is waiting for one.
    fn wake(&self) {
        self.0.wake();
    }
}

/// The checkpoint thread: waits for a write, checkpoints, lets `gap` pass,
/// and again, until the store is dropped (closing the last connection
/// then checkpoints what is left).
fn checkpoint_loop(
    own: &Connection,
    writer: &Mutex<Connection>,
    shared: &Shared<Flags>,
    gap: Duration,
) {
    let mut failing = false;
    while next_round(shared).is_some() {
        match checkpoint(own, writer) {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("checkpoints of the database's log succeed again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot checkpoint the database's log; retrying");
            }
            Err(_) => {}
        }
        if !pause(shared, Instant::now() + gap, |_| false) {
            return;
        }
    }
}

/// Copies the log into the database file: as much as is committed on the
/// thread's own connection, beside the writer, then whatever was committed
/// meanwhile under the writer's mutex, so the log is copied whole (unless
/// a reader still reads an older snapshot) and the next commit starts it
/// from its beginning.
fn checkpoint(own: &Connection, writer: &Mutex<Connection>) -> rusqlite::Result<()> {
    // The frames in the log.
    let passive = |conn: &Connection| {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
    };
    // Under the mutex even when the first copy was whole: the writer may
    // have been inside a transaction that began before that copy ended,
    // and only a transaction that begins after a whole copy starts the log
    // again (otherwise it grows without end under a steady writer).
    let log = passive(own)?;
    if log > 0 {
        passive(&lock_writer(writer))?;
    }
    Ok(())
}

/// The accounts version as `conn` sees it (inside its transaction, if any).
fn version_of(conn: &Connection) -> Result<AccountsVersion, StoreError> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = 'accounts_version'")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(classify)
}

/// Settings every connection needs.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    // SQLite leaves foreign keys off unless each connection asks.
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(classify)
}

pub(super) fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(classify)
}

/// Reads the header and the schema: a file that is not a database, a
/// damaged one, or one from a newer version fails here, before anything
/// has been written to it.
pub(super) fn check_readable(conn: &Connection) -> Result<(), StoreError> {
    let version = user_version(conn)?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(classify)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    Migrations::new(MIGRATIONS.to_vec())
        .to_latest(conn)
        .map_err(|e| match e {
            rusqlite_migration::Error::RusqliteError { err, .. } => classify(err),
            rusqlite_migration::Error::MigrationDefinition(
                MigrationDefinitionError::DatabaseTooFarAhead,
            ) => StoreError::NewerSchema {
                found: conn
                    .query_row("PRAGMA user_version", [], |r| r.get(0))
                    .unwrap_or(-1),
                supported: SCHEMA_VERSION,
            },
            other => StoreError::Backend(format!("migration failed: {other}")),
        })
}

/// Maps SQLite's error codes onto the kinds a caller acts on.
pub(super) fn classify(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(code, _) = &e {
        return match code.code {
            ErrorCode::NotADatabase => StoreError::NotADatabase,
            ErrorCode::DatabaseCorrupt => StoreError::Corrupt(e.to_string()),
            ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied => {
                StoreError::Unwritable(e.to_string())
            }
            ErrorCode::DiskFull => StoreError::Unwritable(e.to_string()),
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy(e.to_string()),
            ErrorCode::ConstraintViolation
                if code.extended_code == ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
            {
                StoreError::NotFound("account or channel")
            }
            _ => StoreError::Backend(e.to_string()),
        };
    }
    StoreError::Backend(e.to_string())
}

/// `Ok` when an UPDATE or DELETE touched a row, `NotFound(what)` otherwise.
fn touched(rows: usize, what: &'static str) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::NotFound(what))
    } else {
        Ok(())
    }
}

const ACCOUNT_COLUMNS: &str = "id, name, name_key, skeleton, password_hash, created_at";

fn account_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        name: r.get(1)?,
        key: r.get(2)?,
        skeleton: r.get(3)?,
        password_hash: r.get(4)?,
        created_at: r.get(5)?,
    })
}

/// The display name of another account holding `key` or `skeleton`.
fn account_conflict(
    conn: &Connection,
    key: &str,
    skeleton: &str,
    except: Option<AccountId>,
) -> Result<Option<String>, StoreError> {
    conn.prepare_cached(
        "SELECT name FROM accounts WHERE (name_key = ?1 OR skeleton = ?2) AND id IS NOT ?3 \
         ORDER BY name_key = ?1 DESC LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![key, skeleton, except], |r| r.get(0))
            .optional()
    })
    .map_err(classify)
}

fn query_accounts(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Account>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(classify)?;
    let rows = stmt.query_map(args, account_row).map_err(classify)?;
    rows.collect::<Result<_, _>>().map_err(classify)
}

fn bans_of(conn: &Connection, channel: ChannelId) -> Result<Vec<StoredBan>, StoreError> {
    // An account's ban shows the account's name now, not the one it was
    // banned under.
    let mut stmt = conn
        .prepare_cached(
            "SELECT b.account, COALESCE(a.name, b.name), b.name_key, b.skeleton \
             FROM channel_bans b LEFT JOIN accounts a ON a.id = b.account \
             WHERE b.channel = ?1 ORDER BY b.id",
        )
        .map_err(classify)?;
    let rows = stmt
        .query_map([channel], |r| {
            Ok(StoredBan {
                account: r.get(0)?,
                name: r.get(1)?,
                key: r.get(2)?,
                skeleton: r.get(3)?,
            })
        })
        .map_err(classify)?;
    rows.collect::<Result<_, _>>().map_err(classify)
}

fn admitted_to(conn: &Connection, channel: ChannelId) -> Result<Vec<AccountId>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT account FROM channel_access WHERE channel = ?1 ORDER BY account")
        .map_err(classify)?;
    let rows = stmt.query_map([channel], |r| r.get(0)).map_err(classify)?;
    rows.collect::<Result<_, _>>().map_err(classify)
}

impl Store for SqliteStore {
    fn create_account(
        &self,
        account: &NewAccount,
    ) -> Result<(AccountId, AccountsVersion), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(classify)?;
        if let Some(existing) = account_conflict(&tx, &account.key, &account.skeleton, None)? {
            return Err(StoreError::Conflict { existing });
        }
        tx.prepare_cached(
            "INSERT INTO accounts (name, name_key, skeleton, password_hash, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| {
            s.execute(params![
                account.name,
                account.key,
                account.skeleton,
                account.password_hash,
                account.created_at
            ])
        })
        .map_err(classify)?;
        let id = tx.last_insert_rowid();
        let version = version_of(&tx)?;
        tx.commit().map_err(classify)?;
        Ok((id, version))
    }

    fn account_by_key(&self, key: &str) -> Result<Option<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name_key = ?1");
        Ok(query_accounts(&self.read(), &sql, [key])?.pop())
    }

    fn account_by_id(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1");
        Ok(query_accounts(&self.read(), &sql, [id])?.pop())
    }

    fn accounts_by_skeleton(&self, skeleton: &str) -> Result<Vec<Account>, StoreError> {
        let sql =
            format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE skeleton = ?1 ORDER BY name_key");
        query_accounts(&self.read(), &sql, [skeleton])
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name_key");
        query_accounts(&self.read(), &sql, [])
    }

    fn set_password(&self, id: AccountId, password_hash: &str) -> Result<(), StoreError> {
        let rows = self
            .lock()
            .prepare_cached("UPDATE accounts SET password_hash = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, password_hash]))
            .map_err(classify)?;
        touched(rows, "account")
    }

    fn rename_account(
        &self,
        id: AccountId,
        name: &str,
        key: &str,
        skeleton: &str,
    ) -> Result<AccountsVersion, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(classify)?;
        if let Some(existing) = account_conflict(&tx, key, skeleton, Some(id))? {
            return Err(StoreError::Conflict { existing });
        }
        let rows = tx
            .prepare_cached(
                "UPDATE accounts SET name = ?2, name_key = ?3, skeleton = ?4 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, name, key, skeleton]))
            .map_err(classify)?;
        touched(rows, "account")?;
        let version = version_of(&tx)?;
        tx.commit().map_err(classify)?;
        Ok(version)
    }

    fn delete_account(&self, id: AccountId) -> Result<AccountsVersion, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(classify)?;
        let rows = tx
            .prepare_cached("DELETE FROM accounts WHERE id = ?1")
            .and_then(|mut s| s.execute([id]))
            .map_err(classify)?;
        touched(rows, "account")?;
        let version = version_of(&tx)?;
        tx.commit().map_err(classify)?;
        Ok(version)
    }

    fn accounts_version(&self) -> Result<AccountsVersion, StoreError> {
        version_of(&self.read())
    }

    fn account_names(
        &self,
        each: &mut dyn FnMut(AccountId, &str, &str),
    ) -> Result<AccountsVersion, StoreError> {
        let mut conn = self.read();
        // One read transaction: the version and the rows are one snapshot.
        let tx = conn.transaction().map_err(classify)?;
        let version = version_of(&tx)?;
        {
            let mut stmt = tx
                .prepare_cached("SELECT id, name_key, skeleton FROM accounts")
                .map_err(classify)?;
            let mut rows = stmt.query([]).map_err(classify)?;
            while let Some(row) = rows.next().map_err(classify)? {
                let id: AccountId = row.get(0).map_err(classify)?;
                let key: String = row.get(1).map_err(classify)?;
                let skeleton: String = row.get(2).map_err(classify)?;
                each(id, &key, &skeleton);
            }
        }
        tx.commit().map_err(classify)?;
        Ok(version)
    }

    fn registered_channels(&self) -> Result<Vec<RegisteredChannel>, StoreError> {
        let conn = self.read();
        let mut channels: Vec<RegisteredChannel> = {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, name, name_key, owner, private, created_at, topic FROM channels \
                     ORDER BY name_key",
                )
                .map_err(classify)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(RegisteredChannel {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        key: r.get(2)?,
                        owner: r.get(3)?,
                        private: r.get(4)?,
                        created_at: r.get(5)?,
                        topic: r.get(6)?,
                        admitted: Vec::new(),
                        bans: Vec::new(),
                    })
                })
                .map_err(classify)?;
            rows.collect::<Result<_, _>>().map_err(classify)?
        };
        for c in &mut channels {
            c.admitted = admitted_to(&conn, c.id)?;
            c.bans = bans_of(&conn, c.id)?;
        }
        Ok(channels)
    }

    fn register_channel(&self, channel: &NewChannel) -> Result<ChannelId, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(classify)?;
        let existing: Option<String> = tx
            .prepare_cached("SELECT name FROM channels WHERE name_key = ?1")
            .and_then(|mut s| s.query_row([&channel.key], |r| r.get(0)).optional())
            .map_err(classify)?;
        if let Some(existing) = existing {
            return Err(StoreError::Conflict { existing });
        }
        tx.prepare_cached(
            "INSERT INTO channels (name, name_key, owner, private, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| {
            s.execute(params![
                channel.name,
                channel.key,
                channel.owner,
                channel.private,
                channel.created_at
            ])
        })
        .map_err(classify)?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(classify)?;
        Ok(id)
    }

    fn set_channel_private(&self, id: ChannelId, private: bool) -> Result<(), StoreError> {
        let rows = self
            .lock()
            .prepare_cached("UPDATE channels SET private = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, private]))
            .map_err(classify)?;
        touched(rows, "channel")
    }

    fn set_channel_owner(&self, id: ChannelId, owner: AccountId) -> Result<(), StoreError> {
        let rows = self
            .lock()
            .prepare_cached("UPDATE channels SET owner = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, owner]))
            .map_err(classify)?;
        touched(rows, "channel")
    }

    fn admit(&self, channel: ChannelId, account: AccountId) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached(
                "INSERT INTO channel_access (channel, account) VALUES (?1, ?2) \
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute([channel, account]))
            .map_err(classify)?;
        Ok(())
    }

    fn admitted(&self, channel: ChannelId) -> Result<Vec<AccountId>, StoreError> {
        admitted_to(&self.read(), channel)
    }

    fn delete_channel(&self, id: ChannelId) -> Result<(), StoreError> {
        let rows = self
            .lock()
            .prepare_cached("DELETE FROM channels WHERE id = ?1")
            .and_then(|mut s| s.execute([id]))
            .map_err(classify)?;
        touched(rows, "channel")
    }

    fn set_channel_topic(&self, id: ChannelId, topic: Option<&str>) -> Result<(), StoreError> {
        let rows = self
            .lock()
            .prepare_cached("UPDATE channels SET topic = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, topic]))
            .map_err(classify)?;
        touched(rows, "channel")
    }

    fn add_ban(&self, channel: ChannelId, ban: &StoredBan) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached(
                // An account deleted meanwhile leaves a ban on the name.
                "INSERT INTO channel_bans (channel, account, name, name_key, skeleton, created_at) \
                 VALUES (?1, (SELECT id FROM accounts WHERE id = ?2), ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    channel,
                    ban.account,
                    ban.name,
                    ban.key,
                    ban.skeleton,
                    super::now_millis()
                ])
            })
            .map_err(classify)?;
        Ok(())
    }

    fn remove_ban(
        &self,
        channel: ChannelId,
        key: &str,
        account: Option<AccountId>,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let done = match account {
            Some(account) => conn
                .prepare_cached("DELETE FROM channel_bans WHERE channel = ?1 AND account = ?2")
                .and_then(|mut s| s.execute(params![channel, account])),
            None => conn
                .prepare_cached(
                    "DELETE FROM channel_bans \
                     WHERE channel = ?1 AND account IS NULL AND name_key = ?2",
                )
                .and_then(|mut s| s.execute(params![channel, key])),
        };
        done.map_err(classify)?;
        Ok(())
    }

    fn delete_channel_and_messages(&self, id: ChannelId) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(classify)?;
        tx.prepare_cached(
            "DELETE FROM messages WHERE channel_key = (SELECT name_key FROM channels WHERE id = ?1)",
        )
        .and_then(|mut s| s.execute([id]))
        .map_err(classify)?;
        let rows = tx
            .prepare_cached("DELETE FROM channels WHERE id = ?1")
            .and_then(|mut s| s.execute([id]))
            .map_err(classify)?;
        touched(rows, "channel")?;
        tx.commit().map_err(classify)
    }

    fn append_messages(&self, batch: &[StoredMessage]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(classify)?;
        {
            // An account deleted (by the admin commands) after the message
            // was accepted is stored as no account: a foreign key failing
            // would fail the batch again at every retry. Rows that name no
            // account (guests' channel messages, most of the traffic) skip
            // those two look-ups.
            let mut with_accounts = tx
                .prepare_cached(
                    "INSERT INTO messages (id, channel_key, channel, sender, sender_key, account, \
                     text, timestamp, attachments, edited, recipient, recipient_key, \
                     recipient_account, conversation, offline) \
                     VALUES (?1, ?2, ?3, ?4, ?5, (SELECT id FROM accounts WHERE id = ?6), ?7, ?8, \
                     ?9, ?10, ?11, ?12, (SELECT id FROM accounts WHERE id = ?13), ?14, ?15)",
                )
                .map_err(classify)?;
            let mut without = tx
                .prepare_cached(
                    "INSERT INTO messages (id, channel_key, channel, sender, sender_key, account, \
                     text, timestamp, attachments, edited, recipient, recipient_key, \
                     recipient_account, conversation, offline) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(classify)?;
            for m in batch {
                let d = m.direct.as_ref();
                let stmt = if m.account.is_none() && d.and_then(|d| d.recipient_account).is_none() {
                    &mut without
                } else {
                    &mut with_accounts
                };
                stmt.execute(params![
                    m.id,
                    m.channel_key,
                    m.channel,
                    m.sender,
                    m.sender_key,
                    m.account,
                    m.text,
                    m.timestamp,
                    m.attachments,
                    m.edited,
                    d.map(|d| &d.recipient),
                    d.map(|d| &d.recipient_key),
                    d.and_then(|d| d.recipient_account),
                    d.map(|d| &d.conversation),
                    d.is_some_and(|d| d.offline),
                ])
                .map_err(|e| match classify(e) {
                    StoreError::Backend(why) => {
                        StoreError::Backend(format!("message {} not stored: {why}", m.id))
                    }
                    other => other,
                })?;
            }
        }
        tx.commit().map_err(classify)
    }

    fn max_message_id(&self) -> Result<MessageId, StoreError> {
        self.lock()
            .prepare_cached("SELECT coalesce(max(id), 0) FROM messages")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(classify)
    }

    fn messages_after(
        &self,
        channel_key: &str,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_key = ?1 AND id > ?2 \
             ORDER BY id LIMIT ?3"
        );
        query_messages(
            &self.read(),
            &sql,
            params![channel_key, after, sql_limit(limit)],
        )
    }

    fn history(
        &self,
        channel_key: &str,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        history_page(
            &self.read(),
            "channel_key = ?1",
            &[&channel_key],
            page,
            limit,
        )
    }

    fn message(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1");
        Ok(query_messages(&self.read(), &sql, [id])?.pop())
    }

    fn catch_up_search(&self, wait: Duration) -> Result<bool, StoreError> {
        Ok(self.indexer.as_ref().map_or(true, |i| i.catch_up(wait)))
    }

    fn search(&self, query: &SearchQuery) -> Result<SearchHits, StoreError> {
        let mut conn = self.read();
        // One read transaction: the totals and the pages agree.
        let tx = conn.transaction().map_err(classify)?;
        let cap = query.count_cap;
        let channels = match &query.scope {
            Some(scope) => Some(ChannelSearch::new(scope, query)?),
            None => None,
        };
        let direct = query
            .direct
            .as_ref()
            .map(|scope| DirectSearch::new(scope, query));
        let channel_total = match &channels {
            Some(c) => c.count(&tx, cap)?,
            None => 0,
        };
        let direct_total = match &direct {
            Some(d) => d.count(&tx, cap)?,
            None => 0,
        };
        let total = (channel_total + direct_total).min(cap);
        let (offset, limit) = (query.offset, query.limit);
        let messages = match (&channels, &direct) {
            // Only one kind matched: its own page, straight.
            (Some(c), _) if direct_total == 0 => c.page(&tx, offset, limit)?,
            (_, Some(d)) if channel_total == 0 => d.page(&tx, offset, limit)?,
            // Both: the newest of the two, merged; each side's first
            // offset + limit are enough.
            (Some(c), Some(d)) => {
                let mut both = c.page(&tx, 0, offset + limit)?;
                both.extend(d.page(&tx, 0, offset + limit)?);
                both.sort_by_key(|m| std::cmp::Reverse(m.id));
                both.into_iter().skip(offset).take(limit).collect()
            }
            _ => Vec::new(),
        };
        tx.commit().map_err(classify)?;
        Ok(SearchHits { total, messages })
    }

    fn direct_history(
        &self,
        conversation: &str,
        from: MessageId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        history_page(
            &self.read(),
            "conversation = ?1 AND id >= ?2",
            &[&conversation, &from],
            page,
            limit,
        )
    }

    fn unread(&self, account: AccountId, cap: usize) -> Result<Vec<Unread>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(
                "SELECT c.name, r.last_id, \
                 (SELECT count(*) FROM (SELECT 1 FROM messages m \
                  WHERE m.channel_key = c.name_key AND m.id > r.last_id LIMIT ?2)) \
                 FROM read_marks r JOIN channels c ON c.id = r.channel \
                 WHERE r.account = ?1 ORDER BY c.name_key",
            )
            .map_err(classify)?;
        let rows = stmt
            .query_map(params![account, sql_limit(cap)], |r| {
                Ok(Unread {
                    channel: r.get(0)?,
                    last_id: r.get(1)?,
                    count: usize::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                })
            })
            .map_err(classify)?;
        let all: Vec<Unread> = rows.collect::<Result<_, _>>().map_err(classify)?;
        Ok(all.into_iter().filter(|u| u.count > 0).collect())
    }

    fn apply_changes(&self, changes: &[Change]) -> Result<Vec<usize>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(classify)?;
        let mut affected = Vec::with_capacity(changes.len());
        for change in changes {
            let rows = match change {
                Change::Edit { id, text, edited } => tx
                    .prepare_cached("UPDATE messages SET text = ?2, edited = ?3 WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![id, text, edited])),
                Change::Delete(id) => tx
                    .prepare_cached("DELETE FROM messages WHERE id = ?1")
                    .and_then(|mut s| s.execute([id])),
                Change::Purge { channel_key, up_to } => tx
                    .prepare_cached("DELETE FROM messages WHERE channel_key = ?1 AND id <= ?2")
                    .and_then(|mut s| s.execute(params![channel_key, up_to])),
                Change::MarkRead {
                    account,
                    channel,
                    last_id,
                } => tx
                    .prepare_cached(
                        "INSERT INTO read_marks (account, channel, last_id) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (account, channel) DO UPDATE \
                         SET last_id = max(last_id, excluded.last_id)",
                    )
                    .and_then(|mut s| s.execute(params![account, channel, last_id])),
                Change::Expire { before, limit } => expire(&tx, before, *limit),
                // A file store's index has a thread of its own.
                Change::Index | Change::IndexSome(_) if self.indexer.is_some() => Ok(0),
                Change::Index => index_attached(&tx, None),
                Change::IndexSome(limit) => index_attached(&tx, Some(*limit)),
                Change::PurgeOthers { keep } => serde_json::to_string(keep)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
                    .and_then(|keep| {
                        tx.prepare_cached(
                            "DELETE FROM messages WHERE channel_key <> '' AND channel_key NOT IN \
                             (SELECT value FROM json_each(?1))",
                        )
                        .and_then(|mut s| s.execute([keep]))
                    }),
            }
            .map_err(classify)?;
            affected.push(rows);
        }
        tx.commit().map_err(classify)?;
        Ok(affected)
    }

    fn direct_backlog(
        &self,
        account: AccountId,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_inbox \
             WHERE offline = 1 AND recipient_account = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        );
        query_messages(
            &self.read(),
            &sql,
            params![account, after, sql_limit(limit)],
        )
    }

    fn direct_waiting(&self, account: AccountId, cap: usize) -> Result<usize, StoreError> {
        let n: i64 = self
            .read()
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM messages INDEXED BY messages_inbox \
                 WHERE offline = 1 AND recipient_account = ?1 AND id > coalesce(\
                 (SELECT up_to FROM direct_delivered WHERE account = ?1), 0) LIMIT ?2)",
            )
            .and_then(|mut s| s.query_row(params![account, sql_limit(cap)], |r| r.get(0)))
            .map_err(classify)?;
        Ok(usize::try_from(n).unwrap_or(cap))
    }

    fn direct_delivered(&self, account: AccountId) -> Result<MessageId, StoreError> {
        self.read()
            .prepare_cached(
                "SELECT coalesce((SELECT up_to FROM direct_delivered WHERE account = ?1), 0)",
            )
            .and_then(|mut s| s.query_row([account], |r| r.get(0)))
            .map_err(classify)
    }

    fn set_direct_delivered(&self, account: AccountId, up_to: MessageId) -> Result<(), StoreError> {
        // An account deleted meanwhile has no marker to keep: nothing is inserted.
        self.lock()
            .prepare_cached(
                "INSERT INTO direct_delivered (account, up_to) \
                 SELECT id, ?2 FROM accounts WHERE id = ?1 \
                 ON CONFLICT (account) DO UPDATE SET up_to = max(up_to, excluded.up_to)",
            )
            .and_then(|mut s| s.execute(params![account, up_to]))
            .map_err(classify)?;
        Ok(())
    }

    fn ignores(&self, account: AccountId) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name_key, name FROM ignores WHERE account = ?1 ORDER BY name_key",
            )
            .map_err(classify)?;
        let rows = stmt
            .query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(classify)?;
        rows.collect::<Result<_, _>>().map_err(classify)
    }

    fn add_ignore(&self, account: AccountId, key: &str, name: &str) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached(
                "INSERT INTO ignores (account, name_key, name) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (account, name_key) DO UPDATE SET name = excluded.name",
            )
            .and_then(|mut s| s.execute(params![account, key, name]))
            .map_err(classify)?;
        Ok(())
    }

    fn remove_ignore(&self, account: AccountId, key: &str) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached("DELETE FROM ignores WHERE account = ?1 AND name_key = ?2")
            .and_then(|mut s| s.execute(params![account, key]))
            .map_err(classify)?;
        Ok(())
    }
}

/// The channel side of a search: the channels' index, with the scope's
/// filter (none at all for every channel, when the index alone counts).
struct ChannelSearch<'q> {
    /// The query.
    query: &'q SearchQuery,
    /// The scope's channel keys as a JSON array.
    keys: String,
    /// Whether the keys are the only channels (or those left out).
    only: bool,
    /// Every channel and no author: no look at the rows to count.
    unfiltered: bool,
}

impl<'q> ChannelSearch<'q> {
    fn new(scope: &Scope, query: &'q SearchQuery) -> Result<Self, StoreError> {
        let (only, keys) = match scope {
            Scope::Only(keys) => (true, keys),
            Scope::Except(keys) => (false, keys),
        };
        Ok(ChannelSearch {
            query,
            keys: serde_json::to_string(keys).map_err(|e| StoreError::Backend(e.to_string()))?,
            only,
            unfiltered: !only && keys.is_empty() && query.sender_key.is_none(),
        })
    }

    fn filter(&self) -> &'static str {
        if self.only {
            "m.channel_key IN (SELECT value FROM json_each(?2)) AND (?3 IS NULL OR m.sender_key = ?3)"
        } else {
            "m.channel_key NOT IN (SELECT value FROM json_each(?2)) \
             AND (?3 IS NULL OR m.sender_key = ?3)"
        }
    }

    fn count(&self, conn: &Connection, cap: usize) -> Result<usize, StoreError> {
        let sql = if self.unfiltered {
            "SELECT count(*) FROM (SELECT 1 FROM search.messages_fts WHERE messages_fts MATCH ?1 \
             AND ?2 IS NOT NULL AND ?3 IS NULL LIMIT ?4)"
                .to_owned()
        } else {
            format!(
                "SELECT count(*) FROM (SELECT 1 FROM search.messages_fts f JOIN messages m ON m.id = f.rowid \
                 WHERE messages_fts MATCH ?1 AND {} LIMIT ?4)",
                self.filter()
            )
        };
        count(
            conn,
            &sql,
            params![
                self.query.expression,
                self.keys,
                self.query.sender_key,
                sql_limit(cap)
            ],
        )
    }

    fn page(
        &self,
        conn: &Connection,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {PREFIXED_COLUMNS} FROM search.messages_fts f JOIN messages m ON m.id = f.rowid \
             WHERE messages_fts MATCH ?1 AND {} ORDER BY f.rowid DESC LIMIT ?4 OFFSET ?5",
            self.filter()
        );
        found(
            conn,
            &sql,
            params![
                self.query.expression,
                self.keys,
                self.query.sender_key,
                sql_limit(limit),
                sql_limit(offset)
            ],
        )
    }
}

/// The direct side of a search: the direct messages' index, with one
/// conversation or every conversation of one party.
struct DirectSearch<'q> {
    /// The query.
    query: &'q SearchQuery,
    /// The conversation key, or the party's identity.
    key: &'q str,
    /// Whether `key` is a party (or a conversation).
    party: bool,
}

impl<'q> DirectSearch<'q> {
    fn new(scope: &'q DirectScope, query: &'q SearchQuery) -> Self {
        match scope {
            DirectScope::Conversation(key) => DirectSearch {
                query,
                key,
                party: false,
            },
            DirectScope::Party(key) => DirectSearch {
                query,
                key,
                party: true,
            },
        }
    }

    fn filter(&self) -> &'static str {
        if self.party {
            "instr(' ' || m.conversation || ' ', ' ' || ?2 || ' ') > 0 AND m.id >= ?6 \
             AND (?3 IS NULL OR m.sender_key = ?3)"
        } else {
            "m.conversation = ?2 AND m.id >= ?6 AND (?3 IS NULL OR m.sender_key = ?3)"
        }
    }

    fn count(&self, conn: &Connection, cap: usize) -> Result<usize, StoreError> {
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM search.direct_fts f JOIN messages m ON m.id = f.rowid \
             WHERE direct_fts MATCH ?1 AND {} LIMIT ?4) WHERE ?5 IS NOT NULL",
            self.filter()
        );
        count(
            conn,
            &sql,
            params![
                self.query.expression,
                self.key,
                self.query.sender_key,
                sql_limit(cap),
                0,
                self.query.direct_from
            ],
        )
    }

    fn page(
        &self,
        conn: &Connection,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {PREFIXED_COLUMNS} FROM search.direct_fts f JOIN messages m ON m.id = f.rowid \
             WHERE direct_fts MATCH ?1 AND {} ORDER BY f.rowid DESC LIMIT ?4 OFFSET ?5",
            self.filter()
        );
        found(
            conn,
            &sql,
            params![
                self.query.expression,
                self.key,
                self.query.sender_key,
                sql_limit(limit),
                sql_limit(offset),
                self.query.direct_from
            ],
        )
    }
}

/// A count query's answer.
fn count(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<usize, StoreError> {
    let n: i64 = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row(args, |r| r.get(0)))
        .map_err(classify_query)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// A search page's rows.
fn found(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<StoredMessage>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(classify_query)?;
    let rows = stmt.query_map(args, message_row).map_err(classify_query)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(classify_query)
}

/// Brings the index attached to the one connection of an in-memory
/// store up to date (all of it, or the oldest `limit` new messages), in
/// the caller's transaction.
fn index_attached(tx: &Connection, limit: Option<usize>) -> rusqlite::Result<usize> {
    let batch = search_index::index_batch(tx, search_index::ATTACHED, limit)?;
    search_index::forget_stale(tx, search_index::ATTACHED, batch.stale_upto)?;
    // The journal reads a full batch as "more to do".
    Ok(match limit {
        Some(limit) if batch.more => batch.added.max(limit),
        _ => batch.added,
    })
}

/// Deletes the oldest messages sent before `before`, at most `limit`:
/// walks the oldest ids (the primary key, so the work is bounded by
/// `limit` whatever the table's size) and stops at the first message that
/// is not old enough, since ids follow the order messages were accepted.
fn expire(conn: &Connection, before: &str, limit: usize) -> rusqlite::Result<usize> {
    let last: Option<MessageId> = {
        let mut stmt =
            conn.prepare_cached("SELECT id, timestamp FROM messages ORDER BY id LIMIT ?1")?;
        let mut rows = stmt.query([sql_limit(limit)])?;
        let mut last = None;
        while let Some(row) = rows.next()? {
            let timestamp: String = row.get(1)?;
            if timestamp.as_str() >= before {
                break;
            }
            last = Some(row.get(0)?);
        }
        last
    };
    match last {
        Some(last) => conn
            .prepare_cached("DELETE FROM messages WHERE id <= ?1")?
            .execute([last]),
        None => Ok(0),
    }
}

/// The columns [`message_row`] reads, in its order.
const MESSAGE_COLUMNS: &str = "id, channel_key, channel, sender, sender_key, account, text, \
     timestamp, attachments, edited, recipient, recipient_key, recipient_account, conversation, \
     offline";
/// [`MESSAGE_COLUMNS`] of the table aliased `m`.
const PREFIXED_COLUMNS: &str = "m.id, m.channel_key, m.channel, m.sender, m.sender_key, \
     m.account, m.text, m.timestamp, m.attachments, m.edited, m.recipient, m.recipient_key, \
     m.recipient_account, m.conversation, m.offline";

fn message_row(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let recipient: Option<String> = r.get(10)?;
    let direct = match recipient {
        None => None,
        Some(recipient) => Some(Box::new(Direct {
            recipient,
            recipient_key: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
            recipient_account: r.get(12)?,
            conversation: r.get::<_, Option<String>>(13)?.unwrap_or_default(),
            offline: r.get(14)?,
        })),
    };
    Ok(StoredMessage {
        id: r.get(0)?,
        channel_key: r.get(1)?,
        channel: r.get(2)?,
        sender: r.get(3)?,
        // Rows written before the column existed and not migrated.
        sender_key: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
        account: r.get(5)?,
        text: r.get(6)?,
        timestamp: r.get(7)?,
        attachments: r.get(8)?,
        edited: r.get(9)?,
        direct,
    })
}

fn query_messages(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<StoredMessage>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(classify)?;
    let rows = stmt.query_map(args, message_row).map_err(classify)?;
    rows.collect::<Result<_, _>>().map_err(classify)
}

/// One history page of the messages `filter` selects (a condition on
/// `messages`, its parameters `args` numbered from ?1): the paging shared
/// by channel and direct histories. One more than `limit` is asked for, to
/// learn whether there are more; the page comes back in increasing id order.
fn history_page(
    conn: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
    page: Page,
    limit: usize,
) -> Result<HistoryPage, StoreError> {
    let probe = sql_limit(limit.saturating_add(1));
    let (bound, ascending) = match page {
        Page::Latest => (None, false),
        Page::Before(id) => (Some(("<", id)), false),
        Page::After(id) => (Some((">", id)), true),
    };
    let mut values = args.to_vec();
    let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE {filter}");
    let bound_id = bound.map(|(_, id)| id);
    if let (Some((op, _)), Some(id)) = (bound, bound_id.as_ref()) {
        values.push(id);
        sql.push_str(&format!(" AND id {op} ?{}", values.len()));
    }
    values.push(&probe);
    let order = if ascending { "" } else { " DESC" };
    sql.push_str(&format!(" ORDER BY id{order} LIMIT ?{}", values.len()));
    let mut messages = query_messages(conn, &sql, values.as_slice())?;
    let more = messages.len() > limit;
    messages.truncate(limit);
    if !ascending {
        messages.reverse();
    }
    Ok(HistoryPage { messages, more })
}

/// A count as SQLite's integer.
fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A failure of a search: what the full-text engine refused in the
/// expression is the user's, the rest the database's.
fn classify_query(e: rusqlite::Error) -> StoreError {
    match classify(e) {
        StoreError::Backend(why) if why.contains("fts5") || why.contains("syntax") => {
            StoreError::Query(why)
        }
        other => other,
    }
}

// The behaviour every store shares (accounts, channels, messages,
// history, expiry, read marks) is tested once for both backends in
// `tests/store_postgres.rs`; these are what only SQLite has: files,
// schema refusals, connections, the batched search index.
#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, skeleton: &str) -> NewAccount {
        NewAccount {
            name: name.to_owned(),
            key: name.to_lowercase(),
            skeleton: skeleton.to_owned(),
            password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${name}"),
            created_at: 1_700_000_000_000,
        }
    }

    fn message(id: MessageId, channel: &str, account: Option<AccountId>) -> StoredMessage {
        StoredMessage {
            id,
            channel_key: channel.to_lowercase(),
            channel: channel.to_owned(),
            sender: "alice".to_owned(),
            sender_key: "alice".to_owned(),
            account,
            text: format!("text {id}"),
            timestamp: "2026-12-01T07:00:00.000Z".to_owned(),
            attachments: None,
            edited: None,
            direct: None,
        }
    }

    fn on_disk() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        (dir, path)
    }

    fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(path, &StoreOptions::default())
    }

    #[test]
    fn a_missing_file_is_created_at_the_current_schema_and_reopens() {
        let (_dir, path) = on_disk();
        let store = open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mode: String = store
            .lock()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        store
            .append_messages(&[message(7, "general", None)])
            .unwrap();
        drop(store);
        let again = open(&path).unwrap();
        assert_eq!(again.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(again.max_message_id().unwrap(), 7);
    }

    #[test]
    fn durability_sets_the_sync_level() {
        for (durability, level) in [(Durability::Normal, 1), (Durability::Full, 2)] {
            let (_dir, path) = on_disk();
            let options = StoreOptions {
                durability,
                ..StoreOptions::default()
            };
            let store = SqliteStore::open(&path, &options).unwrap();
            let got: i64 = store
                .lock()
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(got, level, "{durability:?}");
        }
    }

    #[test]
    fn a_version_1_file_is_migrated_to_version_2_and_keeps_its_data() {
        let (_dir, path) = on_disk();
        {
            // The file as the first release left it: schema v1 only.
            let mut conn = Connection::open(&path).unwrap();
            Migrations::new(MIGRATIONS[..1].to_vec())
                .to_latest(&mut conn)
                .unwrap();
            assert_eq!(user_version(&conn).unwrap(), 1);
            conn.execute_batch(
                "INSERT INTO accounts (name, name_key, skeleton, password_hash, created_at) \
                 VALUES ('Alice', 'alice', 'a1ice', '$argon2id$h', 1); \
                 INSERT INTO channels (name, name_key, owner, private, created_at) \
                 VALUES ('Rust', 'rust', 1, 1, 2); \
                 INSERT INTO messages (id, channel_key, channel, sender, account, text, timestamp) \
                 VALUES (7, 'rust', 'Rust', 'Alice', 1, 'hi', '2026-12-01T07:00:00.000Z');",
            )
            .unwrap();
        }
        let store = open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let alice = store.account_by_key("alice").unwrap().unwrap();
        assert_eq!(
            (alice.name.as_str(), alice.password_hash.as_str()),
            ("Alice", "$argon2id$h")
        );
        let channels = store.registered_channels().unwrap();
        assert_eq!(
            (channels[0].name.as_str(), channels[0].owner),
            ("Rust", alice.id)
        );
        // Moderation came later: an old channel has no topic and no bans.
        assert_eq!((&channels[0].topic, channels[0].bans.len()), (&None, 0));
        assert_eq!(store.messages_after("rust", 0, 10).unwrap()[0].text, "hi");
        // The version starts at 0 and every change to the names bumps it.
        assert_eq!(store.accounts_version().unwrap(), 0);
        let (bob, v) = store.create_account(&account("bob", "b0b")).unwrap();
        assert_eq!(v, 1);
        store.set_password(bob, "$argon2id$other").unwrap();
        assert_eq!(
            store.accounts_version().unwrap(),
            1,
            "passwords do not count"
        );
        assert_eq!(store.rename_account(bob, "Bob", "bob", "b0b").unwrap(), 2);
        assert_eq!(store.delete_account(bob).unwrap(), 3);
        let mut names = Vec::new();
        let v = store
            .account_names(&mut |id, key, skeleton| {
                names.push((id, key.to_owned(), skeleton.to_owned()))
            })
            .unwrap();
        assert_eq!(
            (v, names),
            (3, vec![(alice.id, "alice".into(), "a1ice".into())])
        );
    }

    #[test]
    fn another_processs_account_changes_bump_the_version_the_server_reads() {
        let (_dir, path) = on_disk();
        let server = open(&path).unwrap();
        let admin = open(&path).unwrap();
        let before = server.accounts_version().unwrap();
        admin.create_account(&account("zoe", "z0e")).unwrap();
        assert_eq!(server.accounts_version().unwrap(), before + 1);
        // Reads go through the reader while the writer holds a transaction.
        let writer = server.lock();
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert_eq!(server.account_by_key("zoe").unwrap().unwrap().name, "zoe");
        writer.execute_batch("ROLLBACK").unwrap();
    }

    #[test]
    fn an_empty_file_is_migrated() {
        let (_dir, path) = on_disk();
        std::fs::write(&path, b"").unwrap();
        let store = open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.list_accounts().unwrap(), vec![]);
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_alone() {
        let (_dir, path) = on_disk();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
                .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        assert_eq!(
            open(&path).unwrap_err(),
            StoreError::NewerSchema {
                found: 99,
                supported: SCHEMA_VERSION
            }
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(matches!(
            SqliteStore::open_read_only(&path, &StoreOptions::default()),
            Err(StoreError::NewerSchema { found: 99, .. })
        ));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
        let (_dir, path) = on_disk();
        let text = b"these are my notes, not a database\n".repeat(200);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(open(&path).unwrap_err(), StoreError::NotADatabase);
        assert_eq!(std::fs::read(&path).unwrap(), text);
    }

    #[test]
    fn a_corrupt_database_is_refused_and_left_alone() {
        let (_dir, path) = on_disk();
        {
            let store = open(&path).unwrap();
            store.create_account(&account("alice", "a11ce")).unwrap();
        }
        // Page 1 holds the header (100 bytes) and then the schema table's
        // b-tree page: wreck the latter.
        let mut bytes = std::fs::read(&path).unwrap();
        for b in &mut bytes[100..400] {
            *b = 0xA5;
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(open(&path), Err(StoreError::Corrupt(_))));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_directory_or_a_path_below_a_file_is_unwritable() {
        let (dir, _) = on_disk();
        assert!(matches!(open(dir.path()), Err(StoreError::Unwritable(_))));
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            open(&file.join("chat.db")),
            Err(StoreError::Unwritable(_))
        ));
    }

    fn said(id: MessageId, channel: &str, sender: &str, text: &str, at: &str) -> StoredMessage {
        StoredMessage::new(
            id,
            channel,
            &channel.to_lowercase(),
            sender,
            sender,
            text,
            at,
        )
    }

    #[test]
    fn changes_edit_delete_purge_and_keep_the_index_in_step() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .append_messages(&[
                said(1, "general", "a", "alpha beta", "t"),
                said(2, "tmp", "a", "alpha gamma", "t"),
                said(3, "general", "b", "delta", "t"),
            ])
            .unwrap();
        let find = |q: &str| {
            store.apply_changes(&[Change::Index]).unwrap();
            store
                .search(&phrase(q))
                .unwrap()
                .messages
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(find("alpha"), [2, 1]);
        let rows = store
            .apply_changes(&[
                Change::Edit {
                    id: 1,
                    text: "omega".into(),
                    edited: "t2".into(),
                },
                Change::Delete(3),
                Change::Delete(3),
                Change::Purge {
                    channel_key: "tmp".into(),
                    up_to: 2,
                },
            ])
            .unwrap();
        assert_eq!(rows, [1, 1, 0, 1]);
        assert_eq!(find("alpha"), Vec::<i64>::new());
        assert_eq!(find("omega"), [1]);
        assert_eq!(find("delta"), Vec::<i64>::new());
        assert_eq!(
            store.message(1).unwrap().unwrap().edited.as_deref(),
            Some("t2")
        );
        // A purge keeps what a later channel of the name said.
        store
            .append_messages(&[said(4, "tmp", "a", "new", "t")])
            .unwrap();
        store
            .apply_changes(&[Change::Purge {
                channel_key: "tmp".into(),
                up_to: 3,
            }])
            .unwrap();
        assert_eq!(
            store
                .history("tmp", Page::Latest, 5)
                .unwrap()
                .messages
                .len(),
            1
        );
        // A bad expression is a query error, not a backend one.
        let bad = store.search(&SearchQuery {
            scope: Some(Scope::Only(vec!["general".into()])),
            ..query("AND (")
        });
        assert!(matches!(bad, Err(StoreError::Query(_))), "{bad:?}");
    }

    #[test]
    fn messages_edited_or_deleted_before_they_are_indexed_are_found_as_they_are_now() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .append_messages(&[
                said(1, "general", "a", "first draft", "t"),
                said(2, "general", "a", "to be gone", "t"),
                said(3, "general", "a", "kept as is", "t"),
            ])
            .unwrap();
        // Not indexed yet: the triggers leave the index alone.
        edit_first_delete_second(&store);
        assert_eq!(store.apply_changes(&[Change::Index]).unwrap(), [2]);
        assert_eq!(store.apply_changes(&[Change::Index]).unwrap(), [0]);
        let found = |q: &str| hits(&store, q);
        assert_eq!(
            (found("draft"), found("final"), found("gone"), found("kept")),
            (0, 1, 0, 1)
        );
        // Indexed now: an edit and a deletion reach the index with its next
        // update (which every search asks for first).
        store
            .apply_changes(&[
                Change::Edit {
                    id: 3,
                    text: "changed".into(),
                    edited: "t3".into(),
                },
                Change::Delete(1),
            ])
            .unwrap();
        assert_eq!(store.apply_changes(&[Change::Index]).unwrap(), [0]);
        assert_eq!((found("kept"), found("changed"), found("final")), (0, 1, 0));
        // FTS5's own check: the index matches the rows.
        store
            .lock()
            .execute_batch(
                "INSERT INTO search.messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
            )
            .unwrap();
    }

    fn direct(id: MessageId, to: AccountId, offline: bool) -> StoredMessage {
        StoredMessage {
            channel_key: String::new(),
            channel: String::new(),
            direct: Some(Box::new(Direct {
                recipient: "Bob".into(),
                recipient_key: "bob".into(),
                recipient_account: Some(to),
                conversation: crate::store::conversation_key(
                    crate::store::Participant::Guest("alice"),
                    crate::store::Participant::Account(to),
                ),
                offline,
            })),
            ..message(id, "general", None)
        }
    }

    #[test]
    fn direct_messages_keep_their_recipient_and_an_accounts_backlog_pages_by_id() {
        let store = SqliteStore::open_in_memory().unwrap();
        let bob = store.create_account(&account("bob", "b0b")).unwrap().0;
        let batch = [
            direct(1, bob, true),
            message(2, "general", None),
            direct(3, bob, false),
            direct(4, bob, true),
            direct(5, bob, true),
        ];
        store.append_messages(&batch).unwrap();
        // Only the kept ones are the backlog; a channel never sees them.
        let ids = |v: Vec<StoredMessage>| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(store.direct_backlog(bob, 0, 10).unwrap()), [1, 4, 5]);
        assert_eq!(ids(store.direct_backlog(bob, 1, 1).unwrap()), [4]);
        assert_eq!(store.direct_backlog(bob, 0, 10).unwrap()[0], batch[0]);
        assert_eq!(ids(store.messages_after("general", 0, 10).unwrap()), [2]);
        assert_eq!(
            batch[0].direct.as_ref().unwrap().conversation,
            format!("#{bob} alice")
        );
        // The marker only goes up.
        assert_eq!(store.direct_delivered(bob).unwrap(), 0);
        assert_eq!(store.direct_waiting(bob, 10).unwrap(), 3);
        assert_eq!(store.direct_waiting(bob, 2).unwrap(), 2);
        store.set_direct_delivered(bob, 4).unwrap();
        assert_eq!(store.direct_waiting(bob, 10).unwrap(), 1);
        store.set_direct_delivered(bob, 1).unwrap();
        assert_eq!(store.direct_delivered(bob).unwrap(), 4);
        // Ignore lists, idempotent both ways.
        store.add_ignore(bob, "carol", "Carol").unwrap();
        store.add_ignore(bob, "carol", "CAROL").unwrap();
        store.add_ignore(bob, "al", "al").unwrap();
        assert_eq!(
            store.ignores(bob).unwrap(),
            [("al".into(), "al".into()), ("carol".into(), "CAROL".into())]
        );
        store.remove_ignore(bob, "al").unwrap();
        store.remove_ignore(bob, "al").unwrap();
        assert_eq!(store.ignores(bob).unwrap().len(), 1);
        // A deleted account takes its backlog link, marker, list and
        // conversations along; the messages stay. Its id, the highest,
        // may be handed out again, and must start clean.
        store.delete_account(bob).unwrap();
        assert_eq!(store.direct_backlog(bob, 0, 10).unwrap(), vec![]);
        let again = store.create_account(&account("dan", "dan")).unwrap().0;
        assert_eq!(store.direct_delivered(again).unwrap(), 0);
        assert_eq!(store.ignores(again).unwrap(), vec![]);
        let conversations: i64 = store
            .lock()
            .query_row(
                "SELECT count(*) FROM messages WHERE conversation IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(conversations, 0);
        assert_eq!(store.max_message_id().unwrap(), 5);
        // A recipient account deleted before the commit is stored as none.
        store.append_messages(&[direct(6, 999, true)]).unwrap();
    }

    #[test]
    fn a_second_connection_works_on_the_file_while_the_first_is_open() {
        // What the admin CLI does while the server runs.
        let (_dir, path) = on_disk();
        let server = open(&path).unwrap();
        server
            .append_messages(&[message(1, "general", None)])
            .unwrap();
        let admin = open(&path).unwrap();
        let (id, _) = admin.create_account(&account("alice", "a")).unwrap();
        assert_eq!(server.account_by_key("alice").unwrap().unwrap().id, id);
        server
            .append_messages(&[message(2, "general", None)])
            .unwrap();
        let reader = SqliteStore::open_read_only(&path, &StoreOptions::default()).unwrap();
        assert_eq!(reader.max_message_id().unwrap(), 2);
        assert_eq!(reader.list_accounts().unwrap().len(), 1);
    }

    /// Waits for the index to hold everything committed (a test fails if
    /// that takes over 10 s).
    fn caught_up(store: &SqliteStore) {
        assert!(store.catch_up_search(Duration::from_secs(10)).unwrap());
    }

    /// Edits message 1 to "final words" and deletes message 2.
    fn edit_first_delete_second(store: &SqliteStore) {
        store
            .apply_changes(&[
                Change::Edit {
                    id: 1,
                    text: "final words".into(),
                    edited: "t2".into(),
                },
                Change::Delete(2),
            ])
            .unwrap();
    }

    /// A search of every channel for the phrase `q`, first page of 10.
    fn phrase(q: &str) -> SearchQuery {
        query(&format!("\"{q}\""))
    }

    /// A search of every channel for `expression` as written, first page of 10.
    fn query(expression: &str) -> SearchQuery {
        SearchQuery {
            expression: expression.into(),
            scope: Some(Scope::Except(vec![])),
            direct: None,
            direct_from: 0,
            sender_key: None,
            offset: 0,
            limit: 10,
            count_cap: 100,
        }
    }

    /// How many channel messages a search for the phrase `q` counts.
    fn hits(store: &SqliteStore, q: &str) -> usize {
        store.search(&phrase(q)).unwrap().total
    }

    #[test]
    fn a_file_store_indexes_beside_its_writer_and_follows_edits_and_deletions() {
        let (_dir, path) = on_disk();
        let store = open(&path).unwrap();
        store
            .append_messages(&[
                said(1, "general", "a", "first draft", "t"),
                said(2, "general", "a", "to be gone", "t"),
                said(3, "general", "a", "kept as is", "t"),
            ])
            .unwrap();
        caught_up(&store);
        assert_eq!((hits(&store, "draft"), hits(&store, "gone")), (1, 1));
        edit_first_delete_second(&store);
        // The journal's own index changes do nothing here: the thread does it.
        assert_eq!(store.apply_changes(&[Change::Index]).unwrap(), [0]);
        caught_up(&store);
        assert_eq!(
            (
                hits(&store, "draft"),
                hits(&store, "final"),
                hits(&store, "gone"),
                hits(&store, "kept")
            ),
            (0, 1, 0, 1)
        );
        // The notes were applied, then forgotten.
        let notes: i64 = store
            .lock()
            .query_row("SELECT count(*) FROM search_stale", [], |r| r.get(0))
            .unwrap();
        assert_eq!(notes, 0);
        // FTS5's own check that the index is sound.
        Connection::open(search_index::index_path(&path))
            .unwrap()
            .execute_batch(
                "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
            )
            .unwrap();
        drop(store);
        // A missing index is rebuilt from the messages.
        std::fs::remove_file(search_index::index_path(&path)).unwrap();
        let store = open(&path).unwrap();
        caught_up(&store);
        assert_eq!((hits(&store, "final"), hits(&store, "kept")), (1, 1));
    }

    #[test]
    fn an_index_made_for_another_database_is_rebuilt() {
        let (_dir, path) = on_disk();
        let other = path.with_file_name("other.db");
        for (db, text) in [(&path, "alpha"), (&other, "beta")] {
            let store = open(db).unwrap();
            store
                .append_messages(&[said(1, "general", "a", text, "t")])
                .unwrap();
            caught_up(&store);
        }
        std::fs::copy(
            search_index::index_path(&other),
            search_index::index_path(&path),
        )
        .unwrap();
        let store = open(&path).unwrap();
        caught_up(&store);
        assert_eq!((hits(&store, "alpha"), hits(&store, "beta")), (1, 0));
    }

    #[test]
    fn many_notes_are_applied_a_bounded_batch_at_a_time() {
        let (_dir, path) = on_disk();
        let options = StoreOptions {
            index_batch: 3,
            ..StoreOptions::default()
        };
        let store = SqliteStore::open(&path, &options).unwrap();
        let batch: Vec<_> = (1..=10)
            .map(|id| said(id, "general", "a", &format!("word{id} common"), "t"))
            .collect();
        store.append_messages(&batch).unwrap();
        caught_up(&store);
        assert_eq!(hits(&store, "common"), 10);
        let edits: Vec<_> = (1..=10)
            .map(|id| Change::Edit {
                id,
                text: format!("word{id} changed"),
                edited: "t2".into(),
            })
            .collect();
        store.apply_changes(&edits).unwrap();
        caught_up(&store);
        assert_eq!((hits(&store, "common"), hits(&store, "changed")), (0, 10));
    }

    #[test]
    fn an_index_file_that_is_not_a_database_is_refused_naming_it() {
        let (_dir, path) = on_disk();
        drop(open(&path).unwrap());
        let index = search_index::index_path(&path);
        std::fs::remove_file(&index).unwrap();
        std::fs::write(&index, vec![0x5a; 8192]).unwrap();
        let err = open(&path).unwrap_err().to_string();
        assert!(
            err.contains("search index") && err.contains(&index.display().to_string()),
            "{err}"
        );
    }
}

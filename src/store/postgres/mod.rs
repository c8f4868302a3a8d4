//! [`PostgresStore`]: the [`Store`] on PostgreSQL, for several server
//! nodes sharing one database (`--db postgres://user@host:port/dbname`).
//! Its schema is versioned in a table of its own (`chatmaster_schema`) and
//! migrated at open by the numbered SQL in `src/store/postgres_migrations/`,
//! under an advisory lock so that nodes starting together migrate once.
//!
//! # Several writers
//!
//! Unlike SQLite's one writer, any number of nodes (and the admin
//! commands) write at once, so the database decides every race: a unique
//! key refuses a second account or channel of one name, `ON CONFLICT`
//! makes the idempotent writes idempotent across nodes, and the markers
//! that only go up (read marks, delivered backlogs) take the greater of
//! the two values in the database, never in the node. Changes to account
//! names first lock the `accounts_version` row: they are ordered, so the
//! check for a look-alike (a skeleton, which no constraint covers) sees
//! every earlier change, and the version a change returns is its own.
//! Message ids come from the nodes, unique across them; the primary key
//! refuses one used twice.
//!
//! # Threads
//!
//! [`Store`] methods are blocking calls, made from the message writer's
//! thread or `spawn_blocking`. The connections' I/O runs on a small tokio
//! runtime of this module's own (one thread, started with the first store
//! and kept for the process), and a method waits for its answers with a
//! plain executor. So a call works on any thread, and a store may be opened
//! or dropped on an async worker (the server opens its store there), which
//! the synchronous `postgres` crate forbids: it drives its connection with
//! a runtime of its own per connection, and panics when blocked on inside
//! another runtime or dropped there.
//!
//! One connection writes (the message writer's batches and the other
//! writes, behind a mutex, as in SQLite) and [`StoreOptions::readers`]
//! connections read. A connection the server closed is opened again at its
//! next use, so the store works again once the database is back; until
//! then every call fails with [`StoreError::Unavailable`].
//!
//! # Search
//!
//! Each message carries a `tsvector` of its text, computed by the database
//! as it is written or edited, with a GIN index over channel messages and
//! another over direct ones. The caller's FTS5 expression (quoted terms and
//! phrases, prefixes, all of which must match) is translated to a
//! `tsquery` and bound as a parameter, never spliced into the SQL. The
//! `chatmaster_search` configuration is `simple` (case folded, no stemming,
//! no stop words) with `unaccent` when the extension can be installed.

mod search;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, IsolationLevel, NoTls, Row, Statement};

use super::{
    Account, AccountId, AccountsVersion, Change, ChannelId, Direct, Durability, HistoryPage,
    MessageId, NewAccount, NewChannel, Page, RegisteredChannel, SearchHits, SearchQuery, Store,
    StoreError, StoreOptions, StoredBan, StoredMessage, Unread,
};
pub use search::tsquery;
use search::SearchSide;

/// The schema's history, oldest first: version N is the database after
/// the first N scripts. Scripts are never edited once released, only added.
const MIGRATIONS: &[&str] = &[include_str!("../postgres_migrations/0001_initial.sql")];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Key of the advisory lock held while migrating (any constant both
/// migrating nodes agree on: "chatmast" in ASCII).
const MIGRATION_LOCK: i64 = 0x6368_6174_6d61_7374;

/// Least time an open waits for the server to answer a connection.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Prepared statements kept per connection. The store's SQL is a fixed
/// set (a few dozen texts), so this is only a bound, never reached.
const STATEMENT_CACHE: usize = 256;

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `db` with any password in it replaced by `***`: a PostgreSQL URL's
/// `user:password@` and `password=` parameter. What logs and errors show.
pub fn redact(db: &str) -> String {
    if !is_url(db) {
        return db.to_owned();
    }
    let Some(scheme_end) = db.find("://").map(|i| i + 3) else {
        return db.to_owned();
    };
    let (head, rest) = db.split_at(scheme_end);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => authority.to_owned(),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.find('?') {
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{head}{authority}{tail}")
}

/// The runtime the connections' I/O runs on: one thread, for the process.
fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("chatmaster-postgres")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| StoreError::Backend(format!("cannot start the PostgreSQL runtime: {e}")))
}

/// Waits for `f` on this thread. The futures of a connected client only
/// talk to its connection's task (on [`runtime`]) through channels, so
/// they need no reactor here.
fn wait<F: Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

/// One connection and the statements prepared on it.
struct Conn {
    /// The client; its connection task runs on [`runtime`].
    client: Client,
    /// Prepared statements by SQL text.
    cache: Cache,
}

/// Statements prepared on one connection, by SQL text.
#[derive(Default)]
struct Cache(HashMap<String, Statement>);

impl Cache {
    async fn prepare<C: GenericClient + Sync>(
        &mut self,
        client: &C,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let statement = client.prepare(sql).await?;
        if self.0.len() >= STATEMENT_CACHE {
            self.0.clear();
        }
        self.0.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// Parameters of a statement.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Blocking calls on a connection or a transaction of it, through the
/// connection's statement cache.
struct Db<'c, C: GenericClient + Sync> {
    /// The connection or transaction.
    client: &'c C,
    /// Its connection's statements.
    cache: &'c mut Cache,
}

impl<C: GenericClient + Sync> Db<'_, C> {
    fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, tokio_postgres::Error> {
        wait(async {
            let statement = self.cache.prepare(self.client, sql).await?;
            self.client.query(&statement, params).await
        })
    }

    fn query_opt(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        wait(async {
            let statement = self.cache.prepare(self.client, sql).await?;
            self.client.query_opt(&statement, params).await
        })
    }

    fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error> {
        wait(async {
            let statement = self.cache.prepare(self.client, sql).await?;
            self.client.execute(&statement, params).await
        })
    }

    /// The one value of a query that returns one row of one column.
    fn value<T>(&mut self, sql: &str, params: Params<'_>) -> Result<T, StoreError>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let rows = self.query(sql, params).map_err(classify)?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Backend(format!("no row from {sql}")))?;
        row.try_get(0).map_err(classify)
    }
}

impl Conn {
    /// Calls on the connection outside any transaction.
    fn db(&mut self) -> Db<'_, Client> {
        Db {
            client: &self.client,
            cache: &mut self.cache,
        }
    }
}

/// A connection slot of the store: empty until first used, and emptied
/// again when the server closed the connection.
type Slot = Mutex<Option<Conn>>;

/// The PostgreSQL store.
pub struct PostgresStore {
    /// How to connect (the URL, parsed).
    config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
    /// Session settings every connection runs first.
    session: String,
    /// The writing connection.
    writer: Slot,
    /// The reading connections.
    readers: Vec<Slot>,
    /// Where the next read starts looking for a free reader.
    next_reader: AtomicUsize,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("db", &self.shown)
            .field("readers", &self.readers.len())
            .finish_non_exhaustive()
    }
}

/// A checked-out connection: its slot's lock, holding a live connection.
struct Checkout<'a>(MutexGuard<'a, Option<Conn>>);

impl Checkout<'_> {
    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        self.0
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        // A connection the server closed is opened again next time.
        if self.0.as_ref().is_some_and(|c| c.client.is_closed()) {
            *self.0 = None;
        }
    }
}

impl PostgresStore {
    /// Connects to the database `url` names (`postgres://` or
    /// `postgresql://`) and migrates it to [`SCHEMA_VERSION`]. A server
    /// that cannot be reached, a refused login, a missing database or a
    /// schema from a newer version is refused with a one-line reason that
    /// never holds the password.
    pub fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let shown = redact(url);
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            StoreError::Unavailable(format!("{shown} is not a usable PostgreSQL URL ({e})"))
        })?;
        config
            .connect_timeout(options.busy_timeout.max(MIN_CONNECT_TIMEOUT))
            .application_name("chatmaster-server");
        // Waiting on another writer's lock is bounded as SQLite's busy
        // timeout bounds it. Full durability asks for a commit synced to
        // the disk whatever the server's default; normal keeps the
        // database's own setting.
        let mut session = format!(
            "SET lock_timeout = {}",
            options.busy_timeout.as_millis().clamp(1, i32::MAX as u128)
        );
        if options.durability == Durability::Full {
            session.push_str("; SET synchronous_commit = on");
        }
        let store = PostgresStore {
            config,
            shown,
            session,
            writer: Mutex::new(None),
            readers: (0..options.readers.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next_reader: AtomicUsize::new(0),
        };
        {
            let mut writer = store.checkout(&store.writer)?;
            migrate(writer.conn()?)?;
        }
        // Every reader is opened now, so a limit on connections shows at
        // start rather than at the first busy moment.
        for reader in &store.readers {
            store.checkout(reader)?;
        }
        Ok(store)
    }

    /// The database's schema version.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let mut c = self.write()?;
        c.conn()?.db().value(
            "SELECT coalesce(max(version), 0)::bigint FROM chatmaster_schema",
            &[],
        )
    }

    fn connect(&self) -> Result<Conn, StoreError> {
        let rt = runtime()?;
        let config = self.config.clone();
        let client = wait(rt.spawn(async move {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %describe(&e), "PostgreSQL connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        }))
        .map_err(|e| StoreError::Backend(format!("the PostgreSQL runtime failed: {e}")))?
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to {}: {}",
                self.shown,
                describe(&e)
            ))
        })?;
        wait(client.batch_execute(&self.session)).map_err(classify)?;
        Ok(Conn {
            client,
            cache: Cache::default(),
        })
    }

    /// `slot`'s connection, opened (again) if it has none or lost it.
    fn checkout<'a>(&self, slot: &'a Slot) -> Result<Checkout<'a>, StoreError> {
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if !guard.as_ref().is_some_and(|c| !c.client.is_closed()) {
            *guard = None;
            *guard = Some(self.connect()?);
        }
        Ok(Checkout(guard))
    }

    fn write(&self) -> Result<Checkout<'_>, StoreError> {
        self.checkout(&self.writer)
    }

    /// A free reader if there is one, else the next in turn, waited for.
    fn read(&self) -> Result<Checkout<'_>, StoreError> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let slot = &self.readers[(start + i) % n];
            match slot.try_lock() {
                Ok(guard) => {
                    drop(guard);
                    return self.checkout(slot);
                }
                Err(std::sync::TryLockError::Poisoned(_)) => return self.checkout(slot),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.checkout(&self.readers[start % n])
    }

    /// Runs `body` in a transaction on the writer, committed when it
    /// returns `Ok` (rolled back otherwise).
    fn write_tx<T>(
        &self,
        body: impl FnOnce(&mut Db<'_, tokio_postgres::Transaction<'_>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.write()?;
        let conn = c.conn()?;
        let tx = wait(conn.client.transaction()).map_err(classify)?;
        let out = body(&mut Db {
            client: &tx,
            cache: &mut conn.cache,
        })?;
        wait(tx.commit()).map_err(classify)?;
        Ok(out)
    }

    /// Runs `body` in a read-only snapshot on a reader: what it reads is
    /// of one moment.
    fn read_tx<T>(
        &self,
        body: impl FnOnce(&mut Db<'_, tokio_postgres::Transaction<'_>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.read()?;
        let conn = c.conn()?;
        let tx = wait(
            conn.client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start(),
        )
        .map_err(classify)?;
        let out = body(&mut Db {
            client: &tx,
            cache: &mut conn.cache,
        })?;
        wait(tx.commit()).map_err(classify)?;
        Ok(out)
    }

    /// Runs `body` on a reader, outside a transaction.
    fn reading<T>(
        &self,
        body: impl FnOnce(&mut Db<'_, Client>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.read()?;
        body(&mut c.conn()?.db())
    }

    /// Runs `body` on the writer, outside a transaction (one statement).
    fn writing<T>(
        &self,
        body: impl FnOnce(&mut Db<'_, Client>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.write()?;
        body(&mut c.conn()?.db())
    }
}

/// Applies the scripts the database lacks, in one transaction under the
/// migration lock; a database of a newer version is refused untouched.
fn migrate(conn: &mut Conn) -> Result<(), StoreError> {
    let tx = wait(conn.client.transaction()).map_err(classify)?;
    let found: i64 = wait(async {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS chatmaster_schema (\
             version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
        tx.query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM chatmaster_schema",
            &[],
        )
        .await?
        .try_get(0)
    })
    .map_err(classify)?;
    if found > SCHEMA_VERSION {
        // Dropped uncommitted: rolled back.
        return Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, script) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if i64::from(version) <= found {
            continue;
        }
        wait(async {
            tx.batch_execute(script).await?;
            tx.execute(
                "INSERT INTO chatmaster_schema (version, applied_at) VALUES ($1, $2)",
                &[&version, &super::now_millis()],
            )
            .await
        })
        .map_err(|e| {
            StoreError::Backend(format!("migration {version} failed: {}", describe(&e)))
        })?;
    }
    wait(tx.commit()).map_err(classify)
}

/// An error in one line: the server's message for a database error, the
/// cause (a refused connection, a timeout) for the rest.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Maps PostgreSQL's errors onto the kinds a caller acts on.
fn classify(e: tokio_postgres::Error) -> StoreError {
    let why = describe(&e);
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        return StoreError::Unavailable(format!("the connection to PostgreSQL was lost ({why})"));
    }
    match e.code() {
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::NotFound("account or channel")
        }
        Some(c)
            if *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
        {
            StoreError::Busy(why)
        }
        Some(c)
            if *c == SqlState::DISK_FULL
                || *c == SqlState::READ_ONLY_SQL_TRANSACTION
                || *c == SqlState::INSUFFICIENT_PRIVILEGE =>
        {
            StoreError::Unwritable(why)
        }
        Some(c)
            if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::TOO_MANY_CONNECTIONS =>
        {
            StoreError::Unavailable(why)
        }
        _ => StoreError::Backend(why),
    }
}

/// Whether `e` is a unique key refusing a second row.
fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// `Ok` when an UPDATE or DELETE touched a row, `NotFound(what)` otherwise.
fn touched(rows: u64, what: &'static str) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::NotFound(what))
    } else {
        Ok(())
    }
}

/// A count or limit as PostgreSQL's bigint.
fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A count read back.
fn count_of(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

const ACCOUNT_COLUMNS: &str = "id, name, name_key, skeleton, password_hash, created_at";

fn account_row(r: &Row) -> Result<Account, StoreError> {
    let get = |e| classify(e);
    Ok(Account {
        id: r.try_get(0).map_err(get)?,
        name: r.try_get(1).map_err(get)?,
        key: r.try_get(2).map_err(get)?,
        skeleton: r.try_get(3).map_err(get)?,
        password_hash: r.try_get(4).map_err(get)?,
        created_at: r.try_get(5).map_err(get)?,
    })
}

fn accounts<C: GenericClient + Sync>(
    db: &mut Db<'_, C>,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Account>, StoreError> {
    db.query(sql, params)
        .map_err(classify)?
        .iter()
        .map(account_row)
        .collect()
}

/// The display name of another account holding `key` or `skeleton`.
fn account_conflict<C: GenericClient + Sync>(
    db: &mut Db<'_, C>,
    key: &str,
    skeleton: &str,
    except: Option<AccountId>,
) -> Result<Option<String>, StoreError> {
    let row = db
        .query_opt(
            "SELECT name FROM accounts \
             WHERE (name_key = $1 OR skeleton = $2) AND id IS DISTINCT FROM $3 \
             ORDER BY name_key = $1 DESC LIMIT 1",
            &[&key, &skeleton, &except],
        )
        .map_err(classify)?;
    row.map(|r| r.try_get(0).map_err(classify)).transpose()
}

/// Takes the `accounts_version` row's lock: changes to account names are
/// ordered across nodes, each seeing the ones before it.
fn lock_accounts<C: GenericClient + Sync>(db: &mut Db<'_, C>) -> Result<(), StoreError> {
    db.query(
        "SELECT value FROM meta WHERE name = 'accounts_version' FOR UPDATE",
        &[],
    )
    .map_err(classify)?;
    Ok(())
}

fn version_of<C: GenericClient + Sync>(db: &mut Db<'_, C>) -> Result<AccountsVersion, StoreError> {
    db.value(
        "SELECT value FROM meta WHERE name = 'accounts_version'",
        &[],
    )
}

/// A unique key refused an account name: who holds it, or the key itself
/// when the holder is gone again.
fn name_taken(store: &PostgresStore, key: &str, skeleton: &str) -> StoreError {
    match store.reading(|db| account_conflict(db, key, skeleton, None)) {
        Ok(Some(existing)) => StoreError::Conflict { existing },
        _ => StoreError::Conflict {
            existing: key.to_owned(),
        },
    }
}

/// The columns [`message_row`] reads, in its order.
const MESSAGE_COLUMNS: &str = "id, channel_key, channel, sender, sender_key, account, text, \
     timestamp, attachments, edited, recipient, recipient_key, recipient_account, conversation, \
     offline";

fn message_row(r: &Row) -> Result<StoredMessage, StoreError> {
    let get = |e| classify(e);
    let recipient: Option<String> = r.try_get(10).map_err(get)?;
    let direct = match recipient {
        None => None,
        Some(recipient) => Some(Box::new(Direct {
            recipient,
            recipient_key: r
                .try_get::<_, Option<String>>(11)
                .map_err(get)?
                .unwrap_or_default(),
            recipient_account: r.try_get(12).map_err(get)?,
            conversation: r
                .try_get::<_, Option<String>>(13)
                .map_err(get)?
                .unwrap_or_default(),
            offline: r.try_get(14).map_err(get)?,
        })),
    };
    Ok(StoredMessage {
        id: r.try_get(0).map_err(get)?,
        channel_key: r.try_get(1).map_err(get)?,
        channel: r.try_get(2).map_err(get)?,
        sender: r.try_get(3).map_err(get)?,
        sender_key: r
            .try_get::<_, Option<String>>(4)
            .map_err(get)?
            .unwrap_or_default(),
        account: r.try_get(5).map_err(get)?,
        text: r.try_get(6).map_err(get)?,
        timestamp: r.try_get(7).map_err(get)?,
        attachments: r.try_get(8).map_err(get)?,
        edited: r.try_get(9).map_err(get)?,
        direct,
    })
}

fn messages<C: GenericClient + Sync>(
    db: &mut Db<'_, C>,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<StoredMessage>, StoreError> {
    db.query(sql, params)
        .map_err(classify)?
        .iter()
        .map(message_row)
        .collect()
}

/// One history page of the messages `filter` selects (its parameters
/// `args`, numbered from $1): as SQLite's `history_page`, one more than
/// `limit` is asked for to learn whether there are more, and the page comes
/// back in increasing id order.
fn history_page(
    db: &mut Db<'_, Client>,
    filter: &str,
    args: &[&(dyn ToSql + Sync)],
    page: Page,
    limit: usize,
) -> Result<HistoryPage, StoreError> {
    let probe = sql_limit(limit.saturating_add(1));
    let (bound, ascending) = match page {
        Page::Latest => (None, false),
        Page::Before(id) => (Some(("<", id)), false),
        Page::After(id) => (Some((">", id)), true),
    };
    let bound_id = bound.map(|(_, id)| id);
    let mut values: Vec<&(dyn ToSql + Sync)> = args.to_vec();
    let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE {filter}");
    if let (Some((op, _)), Some(id)) = (bound, bound_id.as_ref()) {
        values.push(id);
        sql.push_str(&format!(" AND id {op} ${}", values.len()));
    }
    values.push(&probe);
    let order = if ascending { "" } else { " DESC" };
    sql.push_str(&format!(" ORDER BY id{order} LIMIT ${}", values.len()));
    let mut found = messages(db, &sql, &values)?;
    let more = found.len() > limit;
    found.truncate(limit);
    if !ascending {
        found.reverse();
    }
    Ok(HistoryPage {
        messages: found,
        more,
    })
}

/// Deletes the oldest messages sent before `before`, at most `limit`, as
/// SQLite's `expire` does: walks the oldest ids and stops at the first one
/// not old enough.
fn expire<C: GenericClient + Sync>(
    db: &mut Db<'_, C>,
    before: &str,
    limit: usize,
) -> Result<u64, tokio_postgres::Error> {
    let rows = db.query(
        "SELECT id, timestamp FROM messages ORDER BY id LIMIT $1",
        &[&sql_limit(limit)],
    )?;
    let mut last: Option<MessageId> = None;
    for row in &rows {
        let timestamp: &str = row.try_get(1)?;
        if timestamp >= before {
            break;
        }
        last = Some(row.try_get(0)?);
    }
    match last {
        Some(last) => db.execute("DELETE FROM messages WHERE id <= $1", &[&last]),
        None => Ok(0),
    }
}

impl Store for PostgresStore {
    fn create_account(
        &self,
        account: &NewAccount,
    ) -> Result<(AccountId, AccountsVersion), StoreError> {
        let done = self.write_tx(|db| {
            lock_accounts(db)?;
            if let Some(existing) = account_conflict(db, &account.key, &account.skeleton, None)? {
                return Err(StoreError::Conflict { existing });
            }
            let id: AccountId = match db.query(
                "INSERT INTO accounts (name, name_key, skeleton, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[
                    &account.name,
                    &account.key,
                    &account.skeleton,
                    &account.password_hash,
                    &account.created_at,
                ],
            ) {
                Ok(rows) => rows
                    .first()
                    .map(|r| r.try_get(0))
                    .transpose()
                    .map_err(classify)?
                    .ok_or_else(|| StoreError::Backend("no id for the new account".into()))?,
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict {
                        existing: String::new(),
                    })
                }
                Err(e) => return Err(classify(e)),
            };
            Ok((id, version_of(db)?))
        });
        match done {
            // Only a writer that skips the lock (none does) gets here: the
            // key decided, and the holder is named from a fresh read.
            Err(StoreError::Conflict { existing }) if existing.is_empty() => {
                Err(name_taken(self, &account.key, &account.skeleton))
            }
            other => other,
        }
    }

    fn account_by_key(&self, key: &str) -> Result<Option<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name_key = $1");
        Ok(self.reading(|db| accounts(db, &sql, &[&key]))?.pop())
    }

    fn account_by_id(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
        Ok(self.reading(|db| accounts(db, &sql, &[&id]))?.pop())
    }

    fn accounts_by_skeleton(&self, skeleton: &str) -> Result<Vec<Account>, StoreError> {
        let sql =
            format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE skeleton = $1 ORDER BY name_key");
        self.reading(|db| accounts(db, &sql, &[&skeleton]))
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name_key");
        self.reading(|db| accounts(db, &sql, &[]))
    }

    fn set_password(&self, id: AccountId, password_hash: &str) -> Result<(), StoreError> {
        let rows = self.writing(|db| {
            db.execute(
                "UPDATE accounts SET password_hash = $2 WHERE id = $1",
                &[&id, &password_hash],
            )
            .map_err(classify)
        })?;
        touched(rows, "account")
    }

    fn rename_account(
        &self,
        id: AccountId,
        name: &str,
        key: &str,
        skeleton: &str,
    ) -> Result<AccountsVersion, StoreError> {
        let done = self.write_tx(|db| {
            lock_accounts(db)?;
            if let Some(existing) = account_conflict(db, key, skeleton, Some(id))? {
                return Err(StoreError::Conflict { existing });
            }
            let rows = match db.execute(
                "UPDATE accounts SET name = $2, name_key = $3, skeleton = $4 WHERE id = $1",
                &[&id, &name, &key, &skeleton],
            ) {
                Ok(rows) => rows,
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict {
                        existing: String::new(),
                    })
                }
                Err(e) => return Err(classify(e)),
            };
            touched(rows, "account")?;
            version_of(db)
        });
        match done {
            Err(StoreError::Conflict { existing }) if existing.is_empty() => {
                Err(name_taken(self, key, skeleton))
            }
            other => other,
        }
    }

    fn delete_account(&self, id: AccountId) -> Result<AccountsVersion, StoreError> {
        self.write_tx(|db| {
            lock_accounts(db)?;
            let rows = db
                .execute("DELETE FROM accounts WHERE id = $1", &[&id])
                .map_err(classify)?;
            touched(rows, "account")?;
            version_of(db)
        })
    }

    fn accounts_version(&self) -> Result<AccountsVersion, StoreError> {
        self.reading(version_of)
    }

    fn account_names(
        &self,
        each: &mut dyn FnMut(AccountId, &str, &str),
    ) -> Result<AccountsVersion, StoreError> {
        self.read_tx(|db| {
            let version = version_of(db)?;
            for row in db
                .query("SELECT id, name_key, skeleton FROM accounts", &[])
                .map_err(classify)?
            {
                let id: AccountId = row.try_get(0).map_err(classify)?;
                let key: &str = row.try_get(1).map_err(classify)?;
                let skeleton: &str = row.try_get(2).map_err(classify)?;
                each(id, key, skeleton);
            }
            Ok(version)
        })
    }

    fn registered_channels(&self) -> Result<Vec<RegisteredChannel>, StoreError> {
        // Three reads of one snapshot rather than two per channel.
        self.read_tx(|db| {
            let mut channels = Vec::new();
            let mut at = HashMap::new();
            for r in db
                .query(
                    "SELECT id, name, name_key, owner, private, created_at, topic FROM channels \
                     ORDER BY name_key",
                    &[],
                )
                .map_err(classify)?
            {
                let c = RegisteredChannel {
                    id: r.try_get(0).map_err(classify)?,
                    name: r.try_get(1).map_err(classify)?,
                    key: r.try_get(2).map_err(classify)?,
                    owner: r.try_get(3).map_err(classify)?,
                    private: r.try_get(4).map_err(classify)?,
                    created_at: r.try_get(5).map_err(classify)?,
                    topic: r.try_get(6).map_err(classify)?,
                    admitted: Vec::new(),
                    bans: Vec::new(),
                };
                at.insert(c.id, channels.len());
                channels.push(c);
            }
            for r in db
                .query(
                    "SELECT channel, account FROM channel_access ORDER BY channel, account",
                    &[],
                )
                .map_err(classify)?
            {
                let channel: ChannelId = r.try_get(0).map_err(classify)?;
                if let Some(&i) = at.get(&channel) {
                    channels[i].admitted.push(r.try_get(1).map_err(classify)?);
                }
            }
            // An account's ban shows the account's name now.
            for r in db
                .query(
                    "SELECT b.channel, b.account, COALESCE(a.name, b.name), b.name_key, \
                     b.skeleton FROM channel_bans b LEFT JOIN accounts a ON a.id = b.account \
                     ORDER BY b.channel, b.id",
                    &[],
                )
                .map_err(classify)?
            {
                let channel: ChannelId = r.try_get(0).map_err(classify)?;
                if let Some(&i) = at.get(&channel) {
                    channels[i].bans.push(StoredBan {
                        account: r.try_get(1).map_err(classify)?,
                        name: r.try_get(2).map_err(classify)?,
                        key: r.try_get(3).map_err(classify)?,
                        skeleton: r.try_get(4).map_err(classify)?,
                    });
                }
            }
            Ok(channels)
        })
    }

    fn register_channel(&self, channel: &NewChannel) -> Result<ChannelId, StoreError> {
        self.write_tx(|db| {
            // The unique key decides between nodes registering one name.
            let inserted = db
                .query_opt(
                    "INSERT INTO channels (name, name_key, owner, private, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name_key) DO NOTHING RETURNING id",
                    &[
                        &channel.name,
                        &channel.key,
                        &channel.owner,
                        &channel.private,
                        &channel.created_at,
                    ],
                )
                .map_err(classify)?;
            if let Some(row) = inserted {
                return row.try_get(0).map_err(classify);
            }
            let existing: Option<String> = db
                .query_opt(
                    "SELECT name FROM channels WHERE name_key = $1",
                    &[&channel.key],
                )
                .map_err(classify)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(classify)?;
            Err(StoreError::Conflict {
                existing: existing.unwrap_or_else(|| channel.name.clone()),
            })
        })
    }

    fn set_channel_private(&self, id: ChannelId, private: bool) -> Result<(), StoreError> {
        let rows = self.writing(|db| {
            db.execute(
                "UPDATE channels SET private = $2 WHERE id = $1",
                &[&id, &private],
            )
            .map_err(classify)
        })?;
        touched(rows, "channel")
    }

    fn set_channel_owner(&self, id: ChannelId, owner: AccountId) -> Result<(), StoreError> {
        let rows = self.writing(|db| {
            db.execute(
                "UPDATE channels SET owner = $2 WHERE id = $1",
                &[&id, &owner],
            )
            .map_err(classify)
        })?;
        touched(rows, "channel")
    }

    fn admit(&self, channel: ChannelId, account: AccountId) -> Result<(), StoreError> {
        self.writing(|db| {
            db.execute(
                "INSERT INTO channel_access (channel, account) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&channel, &account],
            )
            .map_err(classify)
        })?;
        Ok(())
    }

    fn admitted(&self, channel: ChannelId) -> Result<Vec<AccountId>, StoreError> {
        self.reading(|db| {
            db.query(
                "SELECT account FROM channel_access WHERE channel = $1 ORDER BY account",
                &[&channel],
            )
            .map_err(classify)?
            .iter()
            .map(|r| r.try_get(0).map_err(classify))
            .collect()
        })
    }

    fn delete_channel(&self, id: ChannelId) -> Result<(), StoreError> {
        let rows = self.writing(|db| {
            db.execute("DELETE FROM channels WHERE id = $1", &[&id])
                .map_err(classify)
        })?;
        touched(rows, "channel")
    }

    fn set_channel_topic(&self, id: ChannelId, topic: Option<&str>) -> Result<(), StoreError> {
        let rows = self.writing(|db| {
            db.execute(
                "UPDATE channels SET topic = $2 WHERE id = $1",
                &[&id, &topic],
            )
            .map_err(classify)
        })?;
        touched(rows, "channel")
    }

    fn add_ban(&self, channel: ChannelId, ban: &StoredBan) -> Result<(), StoreError> {
        let now = super::now_millis();
        self.writing(|db| {
            // An account deleted meanwhile leaves a ban on the name.
            db.execute(
                "INSERT INTO channel_bans (channel, account, name, name_key, skeleton, created_at) \
                 VALUES ($1, (SELECT id FROM accounts WHERE id = $2), $3, $4, $5, $6)",
                &[
                    &channel,
                    &ban.account,
                    &ban.name,
                    &ban.key,
                    &ban.skeleton,
                    &now,
                ],
            )
            .map_err(classify)
        })?;
        Ok(())
    }

    fn remove_ban(
        &self,
        channel: ChannelId,
        key: &str,
        account: Option<AccountId>,
    ) -> Result<(), StoreError> {
        self.writing(|db| {
            match account {
                Some(account) => db.execute(
                    "DELETE FROM channel_bans WHERE channel = $1 AND account = $2",
                    &[&channel, &account],
                ),
                None => db.execute(
                    "DELETE FROM channel_bans \
                     WHERE channel = $1 AND account IS NULL AND name_key = $2",
                    &[&channel, &key],
                ),
            }
            .map_err(classify)
        })?;
        Ok(())
    }

    fn delete_channel_and_messages(&self, id: ChannelId) -> Result<(), StoreError> {
        self.write_tx(|db| {
            db.execute(
                "DELETE FROM messages WHERE channel_key = \
                 (SELECT name_key FROM channels WHERE id = $1)",
                &[&id],
            )
            .map_err(classify)?;
            let rows = db
                .execute("DELETE FROM channels WHERE id = $1", &[&id])
                .map_err(classify)?;
            touched(rows, "channel")
        })
    }

    fn append_messages(&self, batch: &[StoredMessage]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write_tx(|db| {
            // An account deleted after the message was accepted is stored
            // as no account, as in SQLite.
            let statement = wait(db.cache.prepare(
                db.client,
                "INSERT INTO messages (id, channel_key, channel, sender, sender_key, account, \
                 text, timestamp, attachments, edited, recipient, recipient_key, \
                 recipient_account, conversation, offline) \
                 VALUES ($1, $2, $3, $4, $5, (SELECT id FROM accounts WHERE id = $6), $7, $8, \
                 $9, $10, $11, $12, (SELECT id FROM accounts WHERE id = $13), $14, $15)",
            ))
            .map_err(classify)?;
            // Sent all at once and answered in order: one round trip for
            // the batch rather than one per message.
            let client = db.client;
            let inserts = batch.iter().map(|m| {
                let statement = &statement;
                async move {
                    let d = m.direct.as_ref();
                    let offline = d.is_some_and(|d| d.offline);
                    client
                        .execute(
                            statement,
                            &[
                                &m.id,
                                &m.channel_key,
                                &m.channel,
                                &m.sender,
                                &m.sender_key,
                                &m.account,
                                &m.text,
                                &m.timestamp,
                                &m.attachments,
                                &m.edited,
                                &d.map(|d| &d.recipient),
                                &d.map(|d| &d.recipient_key),
                                &d.and_then(|d| d.recipient_account),
                                &d.map(|d| &d.conversation),
                                &offline,
                            ],
                        )
                        .await
                        .map_err(|e| (m.id, e))
                }
            });
            let results = wait(futures_util::future::join_all(inserts));
            // The first failure is the one to tell: those after it only
            // say the transaction was already aborted.
            if let Some((id, e)) = results.into_iter().find_map(Result::err) {
                return Err(match classify(e) {
                    StoreError::Backend(why) => {
                        StoreError::Backend(format!("message {id} not stored: {why}"))
                    }
                    other => other,
                });
            }
            Ok(())
        })
    }

    fn max_message_id(&self) -> Result<MessageId, StoreError> {
        self.reading(|db| db.value("SELECT coalesce(max(id), 0)::bigint FROM messages", &[]))
    }

    fn messages_after(
        &self,
        channel_key: &str,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_key = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        );
        self.reading(|db| messages(db, &sql, &[&channel_key, &after, &sql_limit(limit)]))
    }

    fn direct_backlog(
        &self,
        account: AccountId,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE offline AND recipient_account = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        self.reading(|db| messages(db, &sql, &[&account, &after, &sql_limit(limit)]))
    }

    fn direct_waiting(&self, account: AccountId, cap: usize) -> Result<usize, StoreError> {
        let n: i64 = self.reading(|db| {
            db.value(
                "SELECT count(*) FROM (SELECT 1 FROM messages \
                 WHERE offline AND recipient_account = $1 AND id > coalesce(\
                 (SELECT up_to FROM direct_delivered WHERE account = $1), 0) LIMIT $2) AS w",
                &[&account, &sql_limit(cap)],
            )
        })?;
        Ok(usize::try_from(n).unwrap_or(cap))
    }

    fn direct_delivered(&self, account: AccountId) -> Result<MessageId, StoreError> {
        self.reading(|db| {
            db.value(
                "SELECT coalesce((SELECT up_to FROM direct_delivered WHERE account = $1), 0)",
                &[&account],
            )
        })
    }

    fn set_direct_delivered(&self, account: AccountId, up_to: MessageId) -> Result<(), StoreError> {
        // An account deleted meanwhile has no marker to keep: nothing is inserted.
        self.writing(|db| {
            db.execute(
                "INSERT INTO direct_delivered (account, up_to) \
                 SELECT id, $2 FROM accounts WHERE id = $1 \
                 ON CONFLICT (account) DO UPDATE \
                 SET up_to = GREATEST(direct_delivered.up_to, excluded.up_to)",
                &[&account, &up_to],
            )
            .map_err(classify)
        })?;
        Ok(())
    }

    fn ignores(&self, account: AccountId) -> Result<Vec<(String, String)>, StoreError> {
        self.reading(|db| {
            db.query(
                "SELECT name_key, name FROM ignores WHERE account = $1 ORDER BY name_key",
                &[&account],
            )
            .map_err(classify)?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(classify)?,
                    r.try_get(1).map_err(classify)?,
                ))
            })
            .collect()
        })
    }

    fn add_ignore(&self, account: AccountId, key: &str, name: &str) -> Result<(), StoreError> {
        self.writing(|db| {
            db.execute(
                "INSERT INTO ignores (account, name_key, name) VALUES ($1, $2, $3) \
                 ON CONFLICT (account, name_key) DO UPDATE SET name = excluded.name",
                &[&account, &key, &name],
            )
            .map_err(classify)
        })?;
        Ok(())
    }

    fn remove_ignore(&self, account: AccountId, key: &str) -> Result<(), StoreError> {
        self.writing(|db| {
            db.execute(
                "DELETE FROM ignores WHERE account = $1 AND name_key = $2",
                &[&account, &key],
            )
            .map_err(classify)
        })?;
        Ok(())
    }

    fn history(
        &self,
        channel_key: &str,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        self.reading(|db| history_page(db, "channel_key = $1", &[&channel_key], page, limit))
    }

    fn direct_history(
        &self,
        conversation: &str,
        from: MessageId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        self.reading(|db| {
            history_page(
                db,
                "conversation = $1 AND id >= $2",
                &[&conversation, &from],
                page,
                limit,
            )
        })
    }

    fn message(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1");
        Ok(self.reading(|db| messages(db, &sql, &[&id]))?.pop())
    }

    fn catch_up_search(&self, _wait: Duration) -> Result<bool, StoreError> {
        // The tsvector column is written with the row: nothing lags.
        Ok(true)
    }

    fn search(&self, query: &SearchQuery) -> Result<SearchHits, StoreError> {
        let q = tsquery(&query.expression)?;
        let channels = query.scope.as_ref().map(|s| SearchSide::channels(s, query));
        let direct = query.direct.as_ref().map(|s| SearchSide::direct(s, query));
        // One snapshot: the totals and the pages agree.
        self.read_tx(|db| {
            let channel_total = match &channels {
                Some(c) => c.count(db, &q)?,
                None => 0,
            };
            let direct_total = match &direct {
                Some(d) => d.count(db, &q)?,
                None => 0,
            };
            let total = (channel_total + direct_total).min(query.count_cap);
            let (offset, limit) = (query.offset, query.limit);
            let messages = match (&channels, &direct) {
                (Some(c), _) if direct_total == 0 => c.page(db, &q, offset, limit)?,
                (_, Some(d)) if channel_total == 0 => d.page(db, &q, offset, limit)?,
                // Both: the newest of the two, merged; each side's first
                // offset + limit are enough.
                (Some(c), Some(d)) => {
                    let reach = offset.saturating_add(limit);
                    let mut both = c.page(db, &q, 0, reach)?;
                    both.extend(d.page(db, &q, 0, reach)?);
                    both.sort_by_key(|m| std::cmp::Reverse(m.id));
                    both.into_iter().skip(offset).take(limit).collect()
                }
                _ => Vec::new(),
            };
            Ok(SearchHits { total, messages })
        })
    }

    fn unread(&self, account: AccountId, cap: usize) -> Result<Vec<Unread>, StoreError> {
        let all = self.reading(|db| {
            db.query(
                "SELECT c.name, r.last_id, \
                 (SELECT count(*) FROM (SELECT 1 FROM messages m \
                  WHERE m.channel_key = c.name_key AND m.id > r.last_id LIMIT $2) AS u) \
                 FROM read_marks r JOIN channels c ON c.id = r.channel \
                 WHERE r.account = $1 ORDER BY c.name_key",
                &[&account, &sql_limit(cap)],
            )
            .map_err(classify)?
            .iter()
            .map(|r| {
                Ok(Unread {
                    channel: r.try_get(0).map_err(classify)?,
                    last_id: r.try_get(1).map_err(classify)?,
                    count: count_of(r.try_get(2).map_err(classify)?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
        })?;
        Ok(all.into_iter().filter(|u| u.count > 0).collect())
    }

    fn apply_changes(&self, changes: &[Change]) -> Result<Vec<usize>, StoreError> {
        self.write_tx(|db| {
            let mut affected = Vec::with_capacity(changes.len());
            for change in changes {
                let rows = match change {
                    Change::Edit { id, text, edited } => db.execute(
                        "UPDATE messages SET text = $2, edited = $3 WHERE id = $1",
                        &[id, text, edited],
                    ),
                    Change::Delete(id) => db.execute("DELETE FROM messages WHERE id = $1", &[id]),
                    Change::Purge { channel_key, up_to } => db.execute(
                        "DELETE FROM messages WHERE channel_key = $1 AND id <= $2",
                        &[channel_key, up_to],
                    ),
                    Change::MarkRead {
                        account,
                        channel,
                        last_id,
                    } => db.execute(
                        "INSERT INTO read_marks (account, channel, last_id) VALUES ($1, $2, $3) \
                         ON CONFLICT (account, channel) DO UPDATE \
                         SET last_id = GREATEST(read_marks.last_id, excluded.last_id)",
                        &[account, channel, last_id],
                    ),
                    Change::Expire { before, limit } => expire(db, before, *limit),
                    // The database indexes each row as it is written.
                    Change::Index | Change::IndexSome(_) => Ok(0),
                    Change::PurgeOthers { keep } => db.execute(
                        "DELETE FROM messages WHERE channel_key <> '' \
                         AND NOT (channel_key = ANY($1))",
                        &[keep],
                    ),
                }
                .map_err(classify)?;
                affected.push(usize::try_from(rows).unwrap_or(usize::MAX));
            }
            Ok(affected)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://chat:s3cret@db.example:5432/chat"),
            "postgres://chat:***@db.example:5432/chat"
        );
        assert_eq!(
            redact("postgresql://chat@127.0.0.1/chat?password=s3cret&sslmode=disable"),
            "postgresql://chat@127.0.0.1/chat?password=***&sslmode=disable"
        );
        assert_eq!(
            redact("postgres://a:b:c@h/d?x=1"),
            "postgres://a:***@h/d?x=1"
        );
        assert_eq!(redact("postgres://h/d"), "postgres://h/d");
        assert_eq!(redact("chat.db"), "chat.db");
        assert!(is_url("postgresql://h") && is_url("postgres://h") && !is_url("pg.db"));
    }
}

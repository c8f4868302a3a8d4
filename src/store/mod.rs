//! The durable store: accounts, registered channels (owner, privacy,
//! admitted accounts, topic, bans), every accepted chat message (channel
//! and direct, with the offline backlog of each account) and accounts'
//! ignore lists, behind the
//! [`Store`] trait the rest of the server calls.
//!
//! The chat logic never sees SQL: it calls [`Store`] methods, so another
//! backend (PostgreSQL for a cluster) is another implementation of the
//! trait, not a branch in the chat code. [`sqlite::SqliteStore`] is the
//! default: SQLite in WAL mode, a schema migrated at open (the numbered SQL
//! in `src/store/migrations/`), `:memory:` for a store that lives and dies
//! with the process. [`postgres::PostgresStore`] is the one several nodes
//! share (`--db postgres://...`), with migrations of its own.
//!
//! # Threads
//!
//! Every [`Store`] method may wait on disk (and on another process holding
//! the file's lock, up to the busy timeout), so none may run on an async
//! worker or under the chat state's lock. Messages go through one writer
//! thread; anything else (account and channel reads and writes)
//! runs in `tokio::task::spawn_blocking` or on a thread of its own. A
//! store may read on connections of its own, so reads need not wait for
//! the writer's commits ([`SqliteStore`] does, on a file). The
//! store orders nothing itself: message ids are assigned by the caller.
//!
//! This layer depends on nothing else in the crate.

mod background;
pub mod maintenance;
pub mod postgres;
mod search_index;
pub mod sqlite;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Id of an account: assigned by the store, never reused.
pub type AccountId = i64;
/// Id of a registered channel: assigned by the store.
pub type ChannelId = i64;
/// Id of a chat message: assigned by the server, unique and increasing in
/// the order messages are stored. A JSON integer on the wire.
pub type MessageId = i64;

/// The `--db` value that keeps everything in memory.
pub const MEMORY: &str = ":memory:";

/// A store operation that failed. Open failures are meant for a one-line
/// refusal to start; the others for logs and for the user's error package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The file's schema is newer than this server knows: it was written
    /// by a newer version, and this one must not touch it.
    #[error("the database was written by a newer version (schema version {found}; this server knows up to {supported})")]
    NewerSchema {
        /// The file's schema version.
        found: i64,
        /// The newest version this build can migrate to.
        supported: i64,
    },
    /// The file exists but is not a SQLite database.
    #[error("the file is not a SQLite database")]
    NotADatabase,
    /// The file is a SQLite database whose contents are damaged.
    #[error("the database is corrupt ({0})")]
    Corrupt(String),
    /// The file or its directory cannot be created or written.
    #[error("the database cannot be written ({0})")]
    Unwritable(String),
    /// Another process held the database's lock for longer than the busy timeout.
    #[error("the database is locked by another process ({0})")]
    Busy(String),
    /// A name (or other unique key) is taken; carries the existing holder's
    /// display name.
    #[error("{existing} already exists")]
    Conflict {
        /// Display name of the account or channel already holding the key.
        existing: String,
    },
    /// The account or channel operated on does not exist.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// A search expression the full-text engine cannot parse.
    #[error("the search cannot be run ({0})")]
    Query(String),
    /// The database server cannot be reached or refused the connection
    /// (PostgreSQL: down, a refused login, no such database); the message
    /// never holds a password.
    #[error("the database is unavailable ({0})")]
    Unavailable(String),
    /// Anything else the backend reported.
    #[error("database error: {0}")]
    Backend(String),
}

/// How much of a commit must reach the disk before it counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// A commit is in the operating system's hands (WAL written, not
    /// synced): it survives the server being killed, not a power cut or
    /// kernel crash, which can lose the last commits (never corrupt the file).
    Normal,
    /// Every commit is synced to the disk before it is acknowledged.
    Full,
}

/// Least milliseconds between two checkpoints of a file store's log
/// ([`StoreOptions::checkpoint_gap`]): the log then holds about what is
/// written in that time, and a checkpoint copies each page once however
/// often it was rewritten meanwhile.
pub const DEFAULT_CHECKPOINT_GAP_MS: u64 = 20;
/// Least milliseconds between the starts of two additions to a file
/// store's search index ([`StoreOptions::index_gap`]).
pub const DEFAULT_INDEX_GAP_MS: u64 = 250;
/// Most messages one addition to a file store's search index takes
/// ([`StoreOptions::index_batch`]): one transaction of the index, about
/// 2 µs a message.
pub const DEFAULT_INDEX_BATCH: usize = 50_000;

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long to wait for another process (the admin CLI, say) holding
    /// the file's lock before an operation fails with [`StoreError::Busy`].
    pub busy_timeout: Duration,
    /// What a commit waits for.
    pub durability: Durability,
    /// Connections of a file store that only read (history, search,
    /// accounts), so reads run beside each other and beside the writer.
    pub readers: usize,
    /// Least time between two checkpoints of a file store's write-ahead
    /// log, which a thread of their own runs so that no commit waits for
    /// one; zero leaves them to SQLite, inside the commit that fills the
    /// log past 1,000 pages.
    pub checkpoint_gap: Duration,
    /// Least time between the starts of two additions to a file store's
    /// search index (by a thread of its own; a search does not wait for
    /// it): each addition is then a large batch, which FTS5 takes far more
    /// cheaply per message than many small ones.
    pub index_gap: Duration,
    /// Most messages one addition to a file store's search index takes.
    pub index_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Normal,
            readers: 2,
            checkpoint_gap: Duration::from_millis(DEFAULT_CHECKPOINT_GAP_MS),
            index_gap: Duration::from_millis(DEFAULT_INDEX_GAP_MS),
            index_batch: DEFAULT_INDEX_BATCH,
        }
    }
}

/// An account to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Display name, as its owner spelled it.
    pub name: String,
    /// Folded name: unique among accounts.
    pub key: String,
    /// Confusable skeleton of the name: an account whose skeleton another
    /// account already has is refused.
    pub skeleton: String,
    /// Password hash in PHC string form (argon2id).
    pub password_hash: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Assigned by the store.
    pub id: AccountId,
    /// Display name.
    pub name: String,
    /// Folded name.
    pub key: String,
    /// Confusable skeleton.
    pub skeleton: String,
    /// PHC string.
    pub password_hash: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A channel to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChannel {
    /// Display name.
    pub name: String,
    /// Folded name: unique among registered channels.
    pub key: String,
    /// The account that owns it, for good.
    pub owner: AccountId,
    /// Hidden from lists and joinable by invitation only.
    pub private: bool,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A registered channel as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredChannel {
    /// Assigned by the store.
    pub id: ChannelId,
    /// Display name.
    pub name: String,
    /// Folded name.
    pub key: String,
    /// Owner account.
    pub owner: AccountId,
    /// Whether it is private.
    pub private: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Accounts admitted by invitation, ascending.
    pub admitted: Vec<AccountId>,
    /// The channel's topic, if set.
    pub topic: Option<String>,
    /// Who is banned from it, oldest ban first.
    pub bans: Vec<StoredBan>,
}

/// A ban from a registered channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBan {
    /// The account banned, whatever name it uses (`None`: a guest's name).
    pub account: Option<AccountId>,
    /// The name shown: the account's current one, or the guest's.
    pub name: String,
    /// The folded name as banned.
    pub key: String,
    /// Its confusable skeleton: names that look like it are banned too.
    pub skeleton: String,
}

/// The store's count of changes to the set of account names: one more
/// with every account created, deleted or renamed, by any process, in the
/// same transaction as the change. Password changes leave it alone.
pub type AccountsVersion = i64;

/// A chat message, as stored and as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Assigned by the server before storing.
    pub id: MessageId,
    /// Folded channel name (what history is looked up by).
    pub channel_key: String,
    /// Channel display name when it was sent.
    pub channel: String,
    /// Sender's name when it was sent.
    pub sender: String,
    /// That name folded (as the server compares names): what a search
    /// narrowed to one author looks for.
    pub sender_key: String,
    /// Sender's account, if logged in to one (cleared if the account is deleted).
    pub account: Option<AccountId>,
    /// The text.
    pub text: String,
    /// RFC 3339 UTC with milliseconds, as delivered.
    pub timestamp: String,
    /// The attachments as a JSON array, as the server validated them;
    /// `None` when there are none.
    pub attachments: Option<String>,
    /// When the text was last edited (RFC 3339 UTC); `None` if never.
    pub edited: Option<String>,
    /// Set for a direct message (whose `channel_key` and `channel` are
    /// empty); `None` for a channel message. Boxed: channel messages, the
    /// most, stay as small as they were in the store's queue.
    pub direct: Option<Box<Direct>>,
}

/// The recipient side of a direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Direct {
    /// The recipient's name when it was sent.
    pub recipient: String,
    /// That name folded.
    pub recipient_key: String,
    /// The recipient's account, if they have one (cleared if it is deleted).
    pub recipient_account: Option<AccountId>,
    /// The conversation's key: see [`conversation_key`].
    pub conversation: String,
    /// Kept for a recipient who was not there to receive it live: delivered
    /// after their next login, carrying `"offline": true`.
    pub offline: bool,
}

impl Participant<'_> {
    /// How the participant is written in a conversation key.
    pub fn identity(&self) -> String {
        match self {
            Participant::Account(id) => format!("#{id}"),
            Participant::Guest(key) => (*key).to_owned(),
        }
    }
}

/// One side of a direct conversation, for [`conversation_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Participant<'a> {
    /// An account holder, known by account id (a rename keeps the conversation).
    Account(AccountId),
    /// A guest, known by folded name.
    Guest(&'a str),
}

/// The key of the conversation between `a` and `b`, the same whichever
/// of them sent: both identities (`#` and the account id, or the folded
/// guest name) sorted and joined by a space, which no name contains. What
/// history and search over direct messages look a conversation up by.
pub fn conversation_key(a: Participant<'_>, b: Participant<'_>) -> String {
    let (a, b) = (a.identity(), b.identity());
    if a <= b {
        format!("{a} {b}")
    } else {
        format!("{b} {a}")
    }
}

impl StoredMessage {
    /// A message of `text` from `sender` in `channel` (display names),
    /// with no account, attachment or edit.
    pub fn new(
        id: MessageId,
        channel: &str,
        channel_key: &str,
        sender: &str,
        sender_key: &str,
        text: &str,
        timestamp: &str,
    ) -> Self {
        StoredMessage {
            id,
            channel_key: channel_key.to_owned(),
            channel: channel.to_owned(),
            sender: sender.to_owned(),
            sender_key: sender_key.to_owned(),
            account: None,
            text: text.to_owned(),
            timestamp: timestamp.to_owned(),
            attachments: None,
            edited: None,
            direct: None,
        }
    }
}

/// Which page of a channel's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The newest messages.
    Latest,
    /// The newest messages with ids below this one.
    Before(MessageId),
    /// The oldest messages with ids above this one.
    After(MessageId),
}

/// One page of a channel's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The messages, ascending by id.
    pub messages: Vec<StoredMessage>,
    /// Whether more exist beyond them in the direction read.
    pub more: bool,
}

/// A full-text search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// An FTS5 query expression the caller built from safe parts (quoted
    /// terms and phrases, prefixes): never the user's raw text.
    pub expression: String,
    /// Which channels' messages may be returned; `None`: no channel's.
    pub scope: Option<Scope>,
    /// Which direct messages may be returned; `None`: none.
    pub direct: Option<DirectScope>,
    /// Direct messages below this id are left out (a guest's are those of
    /// its own session only).
    pub direct_from: MessageId,
    /// Only messages by this folded sender name.
    pub sender_key: Option<String>,
    /// Results skipped (the earlier pages).
    pub offset: usize,
    /// Results returned at most.
    pub limit: usize,
    /// Matches counted at most for the total: counting is the part of a
    /// search that grows with the matches.
    pub count_cap: usize,
}

/// The channels a search covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Only these (folded keys).
    Only(Vec<String>),
    /// Every channel but these (folded keys): the private channels the
    /// asker may not read. Usually few or none, which lets the count skip
    /// the messages table altogether.
    Except(Vec<String>),
}

/// The direct messages a search covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectScope {
    /// One conversation (see [`conversation_key`]).
    Conversation(String),
    /// Every conversation one party (an identity as in
    /// [`conversation_key`]: `#` and an account id, or a folded guest name)
    /// takes part in.
    Party(String),
}

/// What a search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHits {
    /// Matches in all, at most the query's `count_cap`.
    pub total: usize,
    /// The page of them, newest first.
    pub messages: Vec<StoredMessage>,
}

/// Newer messages an account has not seen in a registered channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    /// The channel's display name.
    pub channel: String,
    /// Messages above `last_id` (at most the cap asked for).
    pub count: usize,
    /// The last message id the account has seen there.
    pub last_id: MessageId,
}

/// A change to stored messages or read marks that goes through the
/// writer, in order with the messages it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Replaces a message's text. Affects 0 rows when it is gone.
    Edit {
        /// Which message.
        id: MessageId,
        /// The new text.
        text: String,
        /// When (RFC 3339 UTC).
        edited: String,
    },
    /// Deletes a message. Affects 0 rows when it is gone already.
    Delete(MessageId),
    /// Deletes a channel's messages up to an id (a guest channel that
    /// disappeared; a channel of that name made later keeps its own).
    Purge {
        /// Folded channel name.
        channel_key: String,
        /// The highest id deleted.
        up_to: MessageId,
    },
    /// Sets what an account has seen in a registered channel (never
    /// lowers it).
    MarkRead {
        /// Which account.
        account: AccountId,
        /// Which registered channel.
        channel: ChannelId,
        /// The last message id seen.
        last_id: MessageId,
    },
    /// Deletes the messages of every channel but these (folded keys): at
    /// start, those of channels gone with an earlier run (guests'
    /// channels, the channels of deleted accounts). A message whose key is
    /// empty belongs to no channel and stays.
    PurgeOthers {
        /// The channels that exist.
        keep: Vec<String>,
    },
    /// Adds the messages stored since the last time to the search index,
    /// for a store that indexes in its writer's transactions (an
    /// in-memory one); see the 0005 migration for why this is not a
    /// trigger. A store whose index is built beside its writer (a
    /// database file) does nothing here: [`Store::catch_up_search`] is how
    /// a search waits for it. Affects the rows it indexed.
    Index,
    /// Like [`Change::Index`], at most this many of the oldest messages
    /// not indexed yet, so that one addition holds the writer for a
    /// bounded time however far the index is behind. Affects the rows it
    /// indexed: fewer than asked means the index is up to date.
    IndexSome(usize),
    /// Deletes up to `limit` of the oldest messages sent before `before`
    /// (RFC 3339 UTC), in id order, stopping at the first newer one.
    Expire {
        /// The cut-off time.
        before: String,
        /// Most messages deleted by this change.
        limit: usize,
    },
}

/// What the server stores. See the module docs for the threading rule:
/// every method may block on disk.
///
/// Methods take `&self`: an implementation serialises what it must inside.
/// Writes are atomic (one transaction each, one per batch for messages).
pub trait Store: Send + Sync + fmt::Debug {
    /// Creates an account; returns its id and the [`AccountsVersion`] its
    /// creation made. [`StoreError::Conflict`] when its key, or its
    /// skeleton, is already an account's (the existing name is returned).
    fn create_account(
        &self,
        account: &NewAccount,
    ) -> Result<(AccountId, AccountsVersion), StoreError>;
    /// The account with this folded name.
    fn account_by_key(&self, key: &str) -> Result<Option<Account>, StoreError>;
    /// The account with this id.
    fn account_by_id(&self, id: AccountId) -> Result<Option<Account>, StoreError>;
    /// Accounts whose skeleton is `skeleton` (look-alikes of a name).
    fn accounts_by_skeleton(&self, skeleton: &str) -> Result<Vec<Account>, StoreError>;
    /// Every account, by folded name.
    fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Replaces an account's password hash.
    fn set_password(&self, id: AccountId, password_hash: &str) -> Result<(), StoreError>;
    /// Renames an account; returns the [`AccountsVersion`] the rename made.
    /// [`StoreError::Conflict`] as for creation (the account's own old key
    /// and skeleton do not count).
    fn rename_account(
        &self,
        id: AccountId,
        name: &str,
        key: &str,
        skeleton: &str,
    ) -> Result<AccountsVersion, StoreError>;
    /// Deletes an account, its registered channels and its admissions; its
    /// messages stay, without the account link. Returns the
    /// [`AccountsVersion`] the deletion made.
    fn delete_account(&self, id: AccountId) -> Result<AccountsVersion, StoreError>;
    /// The current [`AccountsVersion`]: one small read, for polling.
    fn accounts_version(&self) -> Result<AccountsVersion, StoreError>;
    /// Calls `each(id, key, skeleton)` for every account and returns the
    /// [`AccountsVersion`] of what it saw: the version and the names are
    /// read in one transaction, so they agree.
    fn account_names(
        &self,
        each: &mut dyn FnMut(AccountId, &str, &str),
    ) -> Result<AccountsVersion, StoreError>;

    /// Every registered channel with its admitted accounts (loaded at start).
    fn registered_channels(&self) -> Result<Vec<RegisteredChannel>, StoreError>;
    /// Registers a channel; [`StoreError::Conflict`] if its key is taken.
    fn register_channel(&self, channel: &NewChannel) -> Result<ChannelId, StoreError>;
    /// Sets a registered channel's privacy.
    fn set_channel_private(&self, id: ChannelId, private: bool) -> Result<(), StoreError>;
    /// Hands a registered channel to another account.
    fn set_channel_owner(&self, id: ChannelId, owner: AccountId) -> Result<(), StoreError>;
    /// Records that `account` was admitted to `channel` (idempotent).
    fn admit(&self, channel: ChannelId, account: AccountId) -> Result<(), StoreError>;
    /// Accounts admitted to `channel`, ascending.
    fn admitted(&self, channel: ChannelId) -> Result<Vec<AccountId>, StoreError>;
    /// Unregisters a channel (its admissions go too; its messages stay).
    fn delete_channel(&self, id: ChannelId) -> Result<(), StoreError>;
    /// Sets (or, with `None`, clears) a registered channel's topic.
    fn set_channel_topic(&self, id: ChannelId, topic: Option<&str>) -> Result<(), StoreError>;
    /// Bans someone from a registered channel.
    fn add_ban(&self, channel: ChannelId, ban: &StoredBan) -> Result<(), StoreError>;
    /// Lifts a ban: the account's if `account` is given, else the guest
    /// ban on the folded name `key`. Lifting no ban is not an error.
    fn remove_ban(
        &self,
        channel: ChannelId,
        key: &str,
        account: Option<AccountId>,
    ) -> Result<(), StoreError>;
    /// Deletes a registered channel (`delete_channel`), with its
    /// admissions, its bans and every stored message sent to it, in one
    /// transaction.
    fn delete_channel_and_messages(&self, id: ChannelId) -> Result<(), StoreError>;

    /// Stores messages in one transaction: all or none. Ids must be new.
    fn append_messages(&self, batch: &[StoredMessage]) -> Result<(), StoreError>;
    /// The highest message id stored, 0 when there is none.
    fn max_message_id(&self) -> Result<MessageId, StoreError>;
    /// Up to `limit` messages of a channel with ids above `after`, ascending.
    fn messages_after(
        &self,
        channel_key: &str,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Up to `limit` direct messages kept for `account` while it was
    /// offline, with ids above `after`, ascending (its backlog).
    fn direct_backlog(
        &self,
        account: AccountId,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// How many messages of `account`'s backlog are not yet delivered
    /// (above its marker), counting at most `cap` (the answer is then `cap`).
    fn direct_waiting(&self, account: AccountId, cap: usize) -> Result<usize, StoreError>;
    /// The highest id of `account`'s backlog written to its connection
    /// (0 before any).
    fn direct_delivered(&self, account: AccountId) -> Result<MessageId, StoreError>;
    /// Raises `account`'s delivered-up-to marker to `up_to` (never lowers it).
    fn set_direct_delivered(&self, account: AccountId, up_to: MessageId) -> Result<(), StoreError>;

    /// The names `account` ignores, as (folded, as given), by folded name.
    fn ignores(&self, account: AccountId) -> Result<Vec<(String, String)>, StoreError>;
    /// Adds `key` (spelled `name`) to `account`'s ignore list (idempotent).
    fn add_ignore(&self, account: AccountId, key: &str, name: &str) -> Result<(), StoreError>;
    /// Takes `key` off `account`'s ignore list (idempotent).
    fn remove_ignore(&self, account: AccountId, key: &str) -> Result<(), StoreError>;

    /// One page of a channel's history: up to `limit` messages, ascending.
    fn history(
        &self,
        channel_key: &str,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage, StoreError>;
    /// One page of a direct conversation (see [`conversation_key`]), its
    /// messages from id `from` on: up to `limit`, ascending.
    fn direct_history(
        &self,
        conversation: &str,
        from: MessageId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage, StoreError>;
    /// One stored message.
    fn message(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError>;
    /// Full-text search. An expression the engine refuses is
    /// [`StoreError::Query`].
    fn search(&self, query: &SearchQuery) -> Result<SearchHits, StoreError>;
    /// Waits, at most `wait`, until every message committed so far can be
    /// found by [`Store::search`] (a store whose index is built beside its
    /// writer); whether it can. Stores whose index follows the writer's
    /// own transactions ([`Change::Index`]) have nothing to wait for.
    /// Required of every store, so a wrapper cannot forget to pass it on.
    fn catch_up_search(&self, wait: Duration) -> Result<bool, StoreError>;
    /// The registered channels where `account` has a read mark and newer
    /// messages exist, with their counts (each at most `cap`).
    fn unread(&self, account: AccountId, cap: usize) -> Result<Vec<Unread>, StoreError>;
    /// Applies changes in one transaction; returns the rows each affected.
    fn apply_changes(&self, changes: &[Change]) -> Result<Vec<usize>, StoreError>;
}

/// Opens the store `--db` names: `:memory:`, a PostgreSQL URL
/// (`postgres://` or `postgresql://`) or a SQLite file (created if
/// missing); either database is migrated to its current schema.
pub fn open(db: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    if db == MEMORY {
        return Ok(Arc::new(SqliteStore::open_in_memory()?));
    }
    if postgres::is_url(db) {
        return Ok(Arc::new(PostgresStore::open(db, options)?));
    }
    Ok(Arc::new(SqliteStore::open(Path::new(db), options)?))
}

/// Whether `--db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres(db: &str) -> bool {
    postgres::is_url(db)
}

/// `--db` as logs and error messages may show it: a PostgreSQL URL's
/// password replaced by `***`.
pub fn shown(db: &str) -> String {
    postgres::redact(db)
}

/// Unix milliseconds now, for `created_at`.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

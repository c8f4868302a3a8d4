//! The durable store: accounts, registered channels (owner, privacy,
//! admitted accounts, topic, bans), every accepted chat message (channel
//! and direct, with the offline backlog of each account) and accounts'
//! ignore lists, behind the
//! [`Store`] trait the rest of the server calls.
//!
//! The chat logic never sees SQL: it calls [`Store`] methods, so another
//! backend (PostgreSQL for a cluster) is another implementation of the
//! trait, not a branch in the chat code. [`sqlite::SqliteStore`] is the one
//! shipped: SQLite in WAL mode, a schema migrated at open (the numbered SQL
//! in `src/store/migrations/`), `:memory:` for a store that lives and dies
//! with the process.
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

pub mod maintenance;
pub mod sqlite;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long to wait for another process (the admin CLI, say) holding
    /// the file's lock before an operation fails with [`StoreError::Busy`].
    pub busy_timeout: Duration,
    /// What a commit waits for.
    pub durability: Durability,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Normal,
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
    /// Sender's account, if logged in to one (cleared if the account is deleted).
    pub account: Option<AccountId>,
    /// The text.
    pub text: String,
    /// RFC 3339 UTC with milliseconds, as delivered.
    pub timestamp: String,
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
    let id = |p: Participant<'_>| match p {
        Participant::Account(id) => format!("#{id}"),
        Participant::Guest(key) => key.to_owned(),
    };
    let (a, b) = (id(a), id(b));
    if a <= b {
        format!("{a} {b}")
    } else {
        format!("{b} {a}")
    }
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
}

/// Opens the store `--db` names: `:memory:` or a SQLite file (created if
/// missing, migrated to the current schema).
pub fn open(db: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    let store = if db == MEMORY {
        SqliteStore::open_in_memory()?
    } else {
        SqliteStore::open(Path::new(db), options)?
    };
    Ok(Arc::new(store))
}

/// Unix milliseconds now, for `created_at`.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

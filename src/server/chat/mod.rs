//! Chat state: who is logged in, which channels exist, who is in which,
//! and who must be told what when any of that changes.
//!
//! Everything lives in one `State` behind a `std::sync::Mutex` that is
//! never held across an `.await`: every operation is a short, synchronous
//! critical section that updates the maps and queues already-encoded
//! packages, never waiting: a package for one user goes into that user's
//! bounded outbound queue ([`Outbox::push`]), a package for a channel's
//! members into the channel's [broadcast log](crate::server::broadcast)
//! once, which every member's queue reads. A queue that is full, or a
//! member that far behind in the log (in packages or in bytes), marks its
//! owner as a slow consumer; such users are removed at the end of the
//! operation, their connection is told to close, and the rest of the
//! channel is not slowed.
//!
//! Presence (who arrives, leaves or is renamed) is announced to every
//! member of a channel only while it has at most `presence_limit` members:
//! above that, each announcement would cost the square of the room. A
//! crowded channel's members get a `channel_stats` with the member count
//! instead, from [`Hub::presence_tick`] (at most once per
//! `presence_interval`, only when the count changed), and one at once when
//! the channel crosses the limit either way.
//!
//! The [`Hub`] API is what the command table calls; it speaks user ids and
//! names, never sockets, so other transports (WebSocket, a cluster link)
//! can drive the same state.
//!
//! Accounts and registered channels live in the store; the hub only knows
//! which user is logged in to which account and which channels are
//! registered (with their owner account and admitted accounts). Operations
//! that change something persistent return the [`Persist`] steps the
//! caller must carry out on the store before it acknowledges them: the hub
//! never waits on disk under its lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::server::accounts::Accounts;
use crate::server::broadcast::ChannelLog;
use crate::server::config::Config;
use crate::server::journal::{Job, Journal, Slot};
pub use crate::server::outbox::Outbox;
use crate::server::outbox::PushError;
use crate::store::{
    AccountId, ChannelId, MessageId, SqliteStore, Store, StoreError, StoredBan, StoredMessage,
};
use crate::wire::codec::{self, EncodeError};
use crate::wire::compress::DeflatedTail;
use crate::wire::protocol::{
    fold_name, name_skeleton, validate_message, validate_name, ChatMessage, Notification,
    ServerPackage, Session, UnreadCount,
};

mod channels;
mod memory;
mod moderation;
mod people;
mod presence;
mod registered;
mod replica;

pub use memory::{
    fts_expression, stored_attachments, Content, HistoryParams, Party, Place, SearchParams,
    DEFAULT_HISTORY_LIMIT, DEFAULT_SEARCH_ROWS, MAX_HISTORY_LIMIT, MAX_SEARCH_ROWS,
    MAX_SEARCH_TERMS,
};
pub use people::{LoginSetup, OfflineDirect, OfflineRecipient};
pub use replica::{ReplicaState, ReplicaUser, WeakHub, REPLICA_VERSION};

/// The channel every user starts in. It always exists, is public and has no owner.
pub const GENERAL: &str = "general";

/// Shortest period the presence task runs at, whatever the config says.
const MIN_PRESENCE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);

/// Server-internal identity of a logged-in user; never reused while the
/// server runs, so a stale id can never alias somebody else.
pub type UserId = u64;

/// A change to persistent state that a hub operation made and the caller
/// must write to the store before acknowledging the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// A registered channel became private or public.
    SetPrivate {
        /// Which channel.
        channel: ChannelId,
        /// Its new state.
        private: bool,
    },
    /// An account joined a private registered channel by invitation and
    /// keeps access from now on.
    Admit {
        /// Which channel.
        channel: ChannelId,
        /// Which account.
        account: AccountId,
    },
    /// A channel registered in the store for a join that then found the
    /// channel already created (by a guest, meanwhile): the registration
    /// is undone.
    Unregister(ChannelId),
    /// A registered channel passed to another account (`transfer`).
    SetOwner {
        /// Which channel.
        channel: ChannelId,
        /// The new owner account.
        owner: AccountId,
    },
    /// A registered channel's topic was set or cleared.
    SetTopic {
        /// Which channel.
        channel: ChannelId,
        /// The topic; `None` clears it.
        topic: Option<String>,
    },
    /// Someone was banned from a registered channel.
    Ban {
        /// Which channel.
        channel: ChannelId,
        /// The ban.
        ban: StoredBan,
    },
    /// A ban on a registered channel was lifted.
    Unban {
        /// Which channel.
        channel: ChannelId,
        /// The folded name of a guest ban.
        key: String,
        /// The account of an account's ban.
        account: Option<AccountId>,
    },
    /// A registered channel was deleted: it goes from the store with its
    /// messages (after every message already queued for it is written).
    Delete(ChannelId),
    /// An account ignores a name from now on.
    Ignore {
        /// Whose list.
        account: AccountId,
        /// The folded name.
        key: String,
        /// The name as given.
        name: String,
    },
    /// An account no longer ignores a name.
    Unignore {
        /// Whose list.
        account: AccountId,
        /// The folded name.
        key: String,
    },
}

/// A registered channel as loaded from the store at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedChannel {
    /// Store id.
    pub id: ChannelId,
    /// Display name.
    pub name: String,
    /// Whether it is private.
    pub private: bool,
    /// The owner account.
    pub owner: AccountId,
    /// The owner account's name.
    pub owner_name: String,
    /// Accounts admitted by invitation.
    pub admitted: Vec<AccountId>,
    /// Its topic, if set.
    pub topic: Option<String>,
    /// Who is banned from it.
    pub bans: Vec<StoredBan>,
}

/// A failed chat operation; the text is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChatError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, ChatError> {
    Err(ChatError(message.into()))
}

/// A point-in-time view of the state, for tests and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Logged-in users as (name, channel name), sorted by name.
    pub users: Vec<(String, String)>,
    /// Channels, sorted by name.
    pub channels: Vec<ChannelSnapshot>,
    /// The account each user logged in to an account is logged in to, by name.
    pub accounts: BTreeMap<String, AccountId>,
}

impl Snapshot {
    /// Checks the structural invariants of the chat state: names are unique
    /// case-insensitively; every user is a member of exactly the channel
    /// their entry names; `general` exists, is public and has no owner;
    /// no two users' names share a confusable skeleton; a guest's channel
    /// other than `general` is non-empty and owned by one of its members;
    /// a registered channel has an owner (its account, who may be offline)
    /// and may be empty; no member of a channel is banned from it (by
    /// account, or by a name that looks like a banned one). Returns the
    /// first violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut folded = HashSet::new();
        let mut skeletons = HashSet::new();
        for (name, channel) in &self.users {
            if !folded.insert(fold_name(name)) {
                return Err(format!("duplicate name {name}"));
            }
            if !skeletons.insert(name_skeleton(name)) {
                return Err(format!("{name} looks like another user's name"));
            }
            let homes: Vec<&str> = self
                .channels
                .iter()
                .filter(|c| c.members.contains(name))
                .map(|c| c.name.as_str())
                .collect();
            if homes != [channel.as_str()] {
                return Err(format!("{name} is in {homes:?}, its entry says {channel}"));
            }
        }
        let memberships: usize = self.channels.iter().map(|c| c.members.len()).sum();
        if memberships != self.users.len() {
            return Err(format!(
                "{memberships} memberships for {} users",
                self.users.len()
            ));
        }
        match self.channels.iter().find(|c| c.name == GENERAL) {
            None => return Err("general is missing".to_owned()),
            Some(g) if g.private || g.owner.is_some() => {
                return Err(format!("general must be public and ownerless: {g:?}"))
            }
            Some(_) => {}
        }
        for c in &self.channels {
            for m in &c.members {
                let account = self.accounts.get(m);
                if let Some(b) = c.bans.iter().find(|b| {
                    name_skeleton(&b.name) == name_skeleton(m)
                        || (b.account.is_some() && b.account == account.copied())
                }) {
                    return Err(format!("{m} is in {} but banned as {}", c.name, b.name));
                }
            }
        }
        for c in self.channels.iter().filter(|c| c.name != GENERAL) {
            if c.registered {
                if c.owner.is_none() {
                    return Err(format!("registered channel {} has no owner", c.name));
                }
                continue;
            }
            if c.members.is_empty() {
                return Err(format!("empty channel {} survived", c.name));
            }
            if !c.owner.as_ref().is_some_and(|o| c.members.contains(o)) {
                return Err(format!("owner of {} is not a member: {c:?}", c.name));
            }
        }
        Ok(())
    }
}

/// One channel in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// Display name.
    pub name: String,
    /// Whether it is private.
    pub private: bool,
    /// Owner's name, if any.
    pub owner: Option<String>,
    /// Member names in join order.
    pub members: Vec<String>,
    /// Whether it is registered (owned by an account, kept when empty).
    pub registered: bool,
    /// Its topic, if set.
    pub topic: Option<String>,
    /// Its bans, oldest first.
    pub bans: Vec<BanSnapshot>,
}

/// One ban in a [`ChannelSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanSnapshot {
    /// The name shown.
    pub name: String,
    /// The account banned, if it is an account's ban.
    pub account: Option<AccountId>,
}

/// A logged-in user.
#[derive(Debug)]
struct User {
    /// Name as its owner spelled it.
    name: String,
    /// `name` folded (`fold_name`), kept because a message's record
    /// carries it and folding is Unicode normalization twice over.
    key: String,
    /// Folded key of the channel the user is in (exactly one at a time).
    channel: String,
    /// Where this user's packages go.
    outbox: Outbox,
    /// The account logged in to, if any.
    account: Option<AccountId>,
    /// Folded keys of channels holding an invitation for this user, so the
    /// invitations can be dropped when the user goes away. A B-tree: an
    /// empty one is 24 bytes against a hash set's 48, in every user.
    invited_to: BTreeSet<String>,
    /// The first message id of this session: a guest may edit and delete
    /// what it sent under its name from here on, not what an earlier
    /// guest of the same name sent.
    first_message: MessageId,
    /// The user's away text (`away`), if set.
    away: Option<String>,
    /// Folded names this user ignores, to the name as given (at most
    /// `max_ignores`); mirrored in [`State::ignored_by`].
    ignores: BTreeMap<String, String>,
    /// When the user last sent a message or a command other than `ping`
    /// (for `whois`'s idle time).
    last_active: std::time::Instant,
    /// Set while this account's backlog of kept direct messages is being
    /// delivered after its login. New direct messages join the backlog
    /// until it is empty, so they keep their order.
    backlog: Option<people::Backlog>,
    /// The cluster node this user is connected to, when it is another
    /// node (whose key this is); `None` for this node's own users.
    home: Option<Arc<str>>,
}

impl User {
    /// A user just logged in, in `general`, with nothing set; the next
    /// message id handed out is `first_message`.
    fn new(
        name: &str,
        outbox: Outbox,
        account: Option<AccountId>,
        first_message: MessageId,
    ) -> Self {
        User {
            first_message,
            name: name.to_owned(),
            key: fold_name(name),
            channel: GENERAL.to_owned(),
            outbox,
            account,
            invited_to: BTreeSet::new(),
            away: None,
            ignores: BTreeMap::new(),
            last_active: std::time::Instant::now(),
            backlog: None,
            home: None,
        }
    }
}

/// A member slot, in join order. (Broadcasts do not walk the members:
/// they go into the channel's log, which every member's queue reads.)
#[derive(Debug)]
struct Member {
    /// Who.
    id: UserId,
}

/// A channel.
#[derive(Debug)]
struct Channel {
    /// Name as its creator spelled it.
    name: String,
    /// Private channels are hidden from lists and need an invitation.
    private: bool,
    /// Owner of a guest's channel; `None` for `general` and for registered
    /// channels, which belong to an account instead.
    owner: Option<UserId>,
    /// Set for a registered channel.
    registered: Option<Registered>,
    /// Members in join order: the first is the longest-present, who inherits ownership.
    members: Vec<Member>,
    /// What is said and announced here, appended once and read by each
    /// member's queue (see [`crate::server::broadcast`]).
    log: ChannelLog,
    /// Users holding a one-time invitation.
    invited: HashSet<UserId>,
    /// Member names, sorted, and the capped `users` list every joiner's
    /// own `user_joined` carries, compressed once per change: folding and
    /// sorting every member per join made a storm into one channel
    /// quadratic.
    sorted: SortedNames,
    /// The member count as last told to the members in a `channel_stats`,
    /// so an interval in which people came and went again sends nothing.
    stats_total: usize,
    /// The topic, if set (at most `max_topic_chars`).
    topic: Option<String>,
    /// Who is kept out, oldest first (at most `max_bans`).
    bans: Vec<Ban>,
    /// Members connected to this node: in a cluster the node follows the
    /// channel's topic while there is one.
    local: usize,
    /// In a cluster, the log sequence of the event that made it (0: made
    /// before this node followed the log): a package another node checked
    /// against an earlier state was for an earlier channel of this name.
    born: u64,
}

/// One ban from a channel.
#[derive(Debug, Clone)]
struct Ban {
    /// The name shown in `ban_list`: the account's current name for an
    /// account's ban.
    name: String,
    /// Folded `name`.
    key: String,
    /// Confusable skeleton of `name`: a joiner whose name has it is kept
    /// out, so a look-alike spelling does not get past a ban.
    skeleton: String,
    /// The account banned, whatever name it logs in under.
    account: Option<AccountId>,
}

impl Channel {
    /// An empty channel.
    fn new(name: &str, owner: Option<UserId>) -> Self {
        Channel {
            name: name.to_owned(),
            private: false,
            owner,
            registered: None,
            members: Vec::new(),
            log: ChannelLog::new(),
            invited: HashSet::new(),
            sorted: SortedNames::new("users"),
            stats_total: 0,
            topic: None,
            bans: Vec::new(),
            local: 0,
            born: 0,
        }
    }
}

/// What the hub knows of a registered channel.
#[derive(Debug)]
struct Registered {
    /// Store id.
    id: ChannelId,
    /// The owner account, for good.
    owner: AccountId,
    /// That account's name, shown as `owner` even while it is offline.
    owner_name: String,
    /// Accounts admitted by invitation to it while private.
    admitted: HashSet<AccountId>,
}

/// All chat state.
#[derive(Debug)]
struct State {
    /// Logged-in users.
    users: HashMap<UserId, User>,
    /// Folded name to user, for uniqueness and lookup by name.
    names: HashMap<String, UserId>,
    /// Confusable skeleton of each user's name to the user: look-alike
    /// names are refused.
    skeletons: HashMap<String, UserId>,
    /// Accounts logged in, to their user.
    online_accounts: HashMap<AccountId, UserId>,
    /// Folded channel name to channel.
    channels: HashMap<String, Channel>,
    /// Users whose queue overflowed (or closed) during the current
    /// operation, and why.
    kicks: Vec<(UserId, PushError)>,
    /// Next id to hand out.
    next_id: UserId,
    /// Id of the next chat message: one above the highest stored at start
    /// (in a cluster: one above the last this node handed out).
    next_message_id: MessageId,
    /// In a cluster, this node's id slot and the time counter of its last
    /// id ([`crate::cluster::replica::message_id`]); `None` alone.
    id_slot: Option<(u64, u64)>,
    /// Set at shutdown: departures are then not announced.
    closing: bool,
    /// Public channels in list order, with the list every login sends.
    public: SortedNames,
    /// Folded keys of channels above the presence limit whose member count
    /// changed since their last `channel_stats` (at most one per channel).
    presence_dirty: HashSet<String>,
    /// Read marks to store (account and registered channel to the last
    /// id seen), queued for the writer at the end of the operation, or by
    /// the memory task when the writer's queue was full; one per pair.
    pending_marks: HashMap<(AccountId, ChannelId), MessageId>,
    /// Guest channels that disappeared, to the last message id their
    /// messages may have (queued like `pending_marks`); one per name.
    pending_purges: HashMap<String, MessageId>,
    /// Purges queued and not yet known to be committed: until they are,
    /// searches leave those channels out, so a private channel's messages
    /// never show in the moment between its going and their deletion.
    purging: HashMap<String, tokio::sync::oneshot::Receiver<Result<usize, StoreError>>>,
    /// Folded name to the online users ignoring it: a message's recipients
    /// are checked against its sender's entry only, and only when the map
    /// is not empty, so fan-out costs nothing extra while nobody ignores.
    ignored_by: HashMap<String, HashSet<UserId>>,
}

/// Names kept sorted, folded key to display name, plus the capped list of
/// them as last sent, compressed: the public channels (the `channels` list
/// every `session` carries) and each channel's members (the `users` list
/// of every joiner's own `user_joined`).
///
/// Both are here for login storms: sorting every channel name per login
/// was once their largest cost, and after that, cloning, serializing and
/// compressing the same list of up to `max_list_names` names per login was;
/// the same held for the members of a crowded `general`. The list changes
/// far less often than people log in (only when a name among the first
/// `max_list_names` comes or goes), so it is compressed once per change and
/// spliced into each package.
#[derive(Debug)]
struct SortedNames {
    /// The package member the list is sent as (`channels`, `users`).
    member: &'static str,
    /// Folded key to display name.
    names: BTreeMap<String, String>,
    /// The list as last sent; `None` until needed again after a change
    /// that alters it.
    listed: Option<Listed>,
}

/// The `channels` list as sent, compressed.
#[derive(Debug)]
struct Listed {
    /// Folded key of the last name in the list.
    last: String,
    /// Names in the list (less than the cap means every public channel).
    count: usize,
    /// The list as the compressed end of a package.
    tail: Arc<DeflatedTail>,
}

impl SortedNames {
    /// No names yet; the list is sent as `member`.
    fn new(member: &'static str) -> Self {
        SortedNames {
            member,
            names: BTreeMap::new(),
            listed: None,
        }
    }

    /// The public channels when the server starts: `general` alone.
    fn public_channels() -> Self {
        let mut public = SortedNames::new("channels");
        public.names.insert(GENERAL.to_owned(), GENERAL.to_owned());
        public
    }

    /// How many names there are.
    fn len(&self) -> usize {
        self.names.len()
    }

    fn insert(&mut self, key: String, name: String, cap: usize) {
        if let Some(l) = &self.listed {
            // A name sorting after a full list's last one does not show.
            if l.count < cap || key <= l.last {
                self.listed = None;
            }
        }
        self.names.insert(key, name);
    }

    fn remove(&mut self, key: &str) {
        if self.names.remove(key).is_some()
            && self.listed.as_ref().is_some_and(|l| key <= l.last.as_str())
        {
            self.listed = None;
        }
    }

    /// The first `cap` display names, in order.
    fn first(&self, cap: usize) -> Vec<String> {
        self.names.values().take(cap).cloned().collect()
    }

    /// The compressed `channels` list, built if a change made it stale.
    fn tail(&mut self, config: &Config) -> Result<Arc<DeflatedTail>, EncodeError> {
        if let Some(l) = &self.listed {
            return Ok(l.tail.clone());
        }
        let mut names = Vec::with_capacity(config.max_list_names.min(self.names.len()));
        let mut last = "";
        for (key, name) in self.names.iter().take(config.max_list_names) {
            names.push(name.as_str());
            last = key;
        }
        let tail = Arc::new(codec::list_tail(
            self.member,
            &names,
            config.compression_level,
        )?);
        self.listed = Some(Listed {
            last: last.to_owned(),
            count: names.len(),
            tail: tail.clone(),
        });
        Ok(tail)
    }
}

/// Shared state plus the limits it enforces.
#[derive(Debug)]
struct Shared {
    /// The state.
    state: Mutex<State>,
    /// The limits in force: swapped whole when the configuration is
    /// reloaded, so every operation sees one consistent set.
    config: ArcSwap<Config>,
    /// The durable store (never called under `state`'s lock).
    store: Arc<dyn Store>,
    /// Logins, passwords and the other account operations, over `store`.
    accounts: Arc<Accounts>,
    /// The queue to the store's writer thread.
    journal: Journal,
    /// History and search reads running at once (`read_calls`).
    reads: Arc<tokio::sync::Semaphore>,
    /// The cluster this node is part of, once it joined one.
    cluster: std::sync::OnceLock<Arc<crate::cluster::replica::Cluster>>,
}

/// A cheap, cloneable handle on the chat state.
#[derive(Debug, Clone)]
pub struct Hub {
    /// The one copy of the state.
    shared: Arc<Shared>,
}

impl Hub {
    /// Empty state holding only `general`, over a fresh in-memory store
    /// (`config.db` is not opened: see [`Hub::with_store`]).
    pub fn new(config: Arc<Config>) -> Self {
        // Opening an in-memory database reads no input; it fails only when
        // SQLite cannot allocate its first page, and then nothing can run.
        let store = SqliteStore::open_in_memory().expect("an in-memory SQLite database opens");
        Hub::with_store(config, Arc::new(store)).expect("an empty in-memory store serves")
    }

    /// Empty state holding only `general`, over `store`: message ids go on
    /// from the highest it holds, and its writer thread starts. Reads the
    /// store, so call it before serving, not on a busy async worker.
    pub fn with_store(config: Arc<Config>, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let next_message_id = store.max_message_id()? + 1;
        let journal = Journal::start(Arc::clone(&store), Arc::clone(&config))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        let mut channels = HashMap::new();
        channels.insert(GENERAL.to_owned(), Channel::new(GENERAL, None));
        let state = State {
            users: HashMap::new(),
            names: HashMap::new(),
            skeletons: HashMap::new(),
            online_accounts: HashMap::new(),
            channels,
            kicks: Vec::new(),
            next_id: 1,
            next_message_id,
            id_slot: None,
            closing: false,
            public: SortedNames::public_channels(),
            presence_dirty: HashSet::new(),
            pending_marks: HashMap::new(),
            pending_purges: HashMap::new(),
            purging: HashMap::new(),
            ignored_by: HashMap::new(),
        };
        Ok(Hub {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                accounts: Arc::new(Accounts::new(Arc::clone(&store), &config)?),
                reads: Arc::new(tokio::sync::Semaphore::new(config.read_calls.max(1))),
                config: ArcSwap::new(config),
                store,
                journal,
                cluster: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The limits in force now (shared, so connections need not copy
    /// them). A reload replaces them; holders of the old `Arc` keep a
    /// consistent old set until they ask again.
    pub fn config(&self) -> Arc<Config> {
        self.shared.config.load_full()
    }

    /// The limits in force if they are not `current` any more: a cheap
    /// check (no reference count is touched when nothing changed) for a
    /// connection to pick up a reload.
    pub fn config_if_changed(&self, current: &Arc<Config>) -> Option<Arc<Config>> {
        let now = self.shared.config.load();
        (!Arc::ptr_eq(&now, current)).then(|| Arc::clone(&now))
    }

    /// Puts new limits in force (a configuration reload). Operations
    /// already under way finish with the old ones.
    pub fn reconfigure(&self, config: Config) {
        let config = Arc::new(config);
        self.shared.accounts.reconfigure(Arc::clone(&config));
        self.shared.config.store(config);
    }

    /// The durable store. Its methods block on disk: call them from
    /// `spawn_blocking` or a thread of their own, never on an async worker
    /// or while holding the chat state's lock.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The accounts service (logins, `register`, `password`, ...).
    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.shared.accounts
    }

    /// The queue to the store's writer: [`Hub::message`] needs a slot of it.
    pub fn journal(&self) -> &Journal {
        &self.shared.journal
    }

    /// Writes the store steps a change returned. A deleted channel's
    /// messages still queued for the writer are written first, or they
    /// would outlive it. The future owns what it needs, so it may run on
    /// after its caller has gone.
    pub fn persist_steps(
        &self,
        steps: Vec<Persist>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let accounts = Arc::clone(self.accounts());
        let barrier = steps
            .iter()
            .any(|s| matches!(s, Persist::Delete(_)))
            .then(|| self.journal().clone());
        async move {
            if let Some(journal) = barrier {
                let _ = journal.barrier().await;
            }
            accounts.persist(steps).await
        }
    }

    fn lock(&self) -> Guard<'_> {
        // A panic while holding the lock would be a bug; the state is still
        // structurally sound then, so keep serving rather than cascade.
        let state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Guard {
            state,
            config: self.shared.config.load(),
            journal: &self.shared.journal,
            cluster: self.shared.cluster.get(),
        }
    }

    /// Logs a guest in under `name`: [`Hub::login_as`] without an account.
    pub fn login(&self, name: &str, outbox: Outbox) -> Result<UserId, ChatError> {
        self.login_as(name, None, outbox)
    }

    /// Removes a user (connection closed). Idempotent. In a cluster the
    /// departure goes through the log, and the user stays until it is
    /// applied.
    pub fn disconnect(&self, id: UserId) {
        if let Some(cluster) = self.shared.cluster.get() {
            cluster.disconnected(id);
            return;
        }
        self.remove_now(id);
    }

    /// Removes a user at once (a departure applied from the log, or one
    /// on a node alone).
    pub(crate) fn remove_now(&self, id: UserId) {
        let mut g = self.lock();
        g.remove_user(id);
        g.finish();
    }

    /// Stops announcing departures: used at shutdown, when everybody is
    /// leaving at once and telling each about all others would be quadratic.
    pub fn close(&self) {
        self.lock().state.closing = true;
    }

    /// Sends chat text to every other member of the sender's channel and
    /// queues it for the store through `slot`: the message gets the next
    /// id, its recipients get it at once, and the sender gets
    /// `message_sent` once it is committed. On failure nothing is stored
    /// or sent, and the slot goes back to the queue.
    pub fn message(&self, id: UserId, text: String, slot: Slot) -> Result<(), ChatError> {
        self.message_with(id, text, None, slot)
    }

    /// [`Hub::message`] with the `attachments` member as the client sent
    /// it (checked here: a bad one is refused naming the field). The text
    /// may be empty when there are attachments.
    pub fn message_with(
        &self,
        id: UserId,
        text: String,
        attachments: Option<serde_json::Value>,
        slot: Slot,
    ) -> Result<(), ChatError> {
        let config = self.config();
        let content = Content::check(text, attachments.as_ref(), config.max_message_bytes)?;
        let stored_attachments = content.stored();
        let shown_attachments = content.shown();
        let text = content.text;
        let mut g = self.lock();
        let user = g.user(id)?;
        let channel = g.channel(&user.channel)?;
        let message_id = g.state.peek_message_id();
        // Encoding happens under the lock: the id must be in the package,
        // and ids must reach the store queue, and every recipient, in the
        // order they are handed out. (Short messages, and messages for a
        // few recipients, are stored, not compressed: a copy, not a deflate.)
        let record = StoredMessage {
            id: message_id,
            channel_key: user.channel.clone(),
            channel: channel.name.clone(),
            sender: user.name.clone(),
            sender_key: user.key.clone(),
            account: user.account,
            text,
            timestamp: timestamp_now(),
            attachments: stored_attachments,
            edited: None,
            direct: None,
        };
        let package = ServerPackage::Message(ChatMessage {
            message: record.text.clone(),
            username: record.sender.clone(),
            channel: Some(record.channel.clone()),
            to: None,
            timestamp: record.timestamp.clone(),
            id: message_id,
            attachments: shown_attachments,
            offline: None,
        });
        // Stored rather than deflated for a few recipients (see
        // `DEFAULT_COMPRESS_MIN_RECIPIENTS`); in a cluster other nodes'
        // members get the same bytes, so it counts as a crowd.
        let recipients = if g.cluster.is_some() {
            usize::MAX
        } else {
            channel.members.len().saturating_sub(1)
        };
        let bytes = codec::encode_packed(
            &package,
            config.max_package_bytes,
            config.compression_level,
            config.message_store_below(recipients),
        )
        .map_err(|e| ChatError(format!("message cannot be sent: {e}")))?;
        let ack = user.outbox.clone();
        // Only looked up when somebody ignores somebody: folding a name
        // per message is not free.
        let ignorers = (!g.state.ignored_by.is_empty())
            .then(|| g.state.ignored_by.get(&record.sender_key).cloned())
            .flatten()
            .map(Arc::new);
        // Only in a cluster: the other nodes get the same bytes.
        let publish = g
            .cluster
            .map(|c| (c, record.channel_key.clone(), record.sender_key.clone()));
        g.state.commit_message_id(message_id);
        slot.send(Job::Message {
            record,
            ack,
            extra: None,
        });
        let state = &mut *g.state;
        if let Some(user) = state.users.get_mut(&id) {
            user.last_active = std::time::Instant::now();
        }
        if let Some(ch) = state
            .users
            .get(&id)
            .and_then(|u| state.channels.get(&u.channel))
        {
            let bounds = (config.outbound_queue, config.max_queue_bytes);
            ch.log
                .append(bytes.clone(), Some(id), ignorers, bounds, &mut state.kicks);
            crate::metrics::deliveries(ch.members.len().saturating_sub(1));
        }
        if let Some((cluster, channel_key, sender_key)) = publish {
            cluster.publish_channel(&channel_key, &sender_key, bytes);
        }
        g.finish();
        Ok(())
    }

    /// Renames the user; everybody in their channel is told, or only the
    /// user when the channel is above the presence limit.
    pub fn rename(&self, id: UserId, new_name: &str) -> Result<(), ChatError> {
        let mut g = self.lock();
        let user = g.user(id)?;
        let old = user.name.clone();
        let channel = user.channel.clone();
        if old == new_name {
            return fail(format!("Your name is already {new_name}."));
        }
        // A new name must not get its holder past a ban of the channel
        // they are in.
        if let Some(ch) = g
            .state
            .channels
            .get(&channel)
            .filter(|ch| moderation::is_banned(ch, new_name, None))
        {
            return fail(format!(
                "{new_name} is banned from {}, where you are; choose another name.",
                ch.name
            ));
        }
        if fold_name(&old) == fold_name(new_name) {
            validate_name(new_name, g.config.max_name_chars).map_err(ChatError)?;
        } else {
            g.check_new_name(new_name, Some(id))?;
            g.state.names.remove(&fold_name(&old));
            g.state.names.insert(fold_name(new_name), id);
        }
        let old_skeleton = name_skeleton(&old);
        if g.state.skeletons.get(&old_skeleton) == Some(&id) {
            g.state.skeletons.remove(&old_skeleton);
        }
        g.state.skeletons.insert(name_skeleton(new_name), id);
        let account = g.state.users.get_mut(&id).and_then(|user| {
            user.name = new_name.to_owned();
            user.key = fold_name(new_name);
            user.account
        });
        // The account's channels show its new name as their owner; their
        // members are told, but for those of the user's own channel, whom
        // the rename itself tells.
        let mut owned = Vec::new();
        if let Some(account) = account {
            g.rename_bans(account, new_name);
            for (key, ch) in g.state.channels.iter_mut() {
                if let Some(reg) = ch.registered.as_mut().filter(|r| r.owner == account) {
                    reg.owner_name = new_name.to_owned();
                    if *key != channel {
                        owned.push(key.clone());
                    }
                }
            }
        }
        let cap = g.config.max_list_names;
        let crowded = match g.state.channels.get_mut(&channel) {
            Some(ch) => {
                ch.sorted.remove(&fold_name(&old));
                ch.sorted
                    .insert(fold_name(new_name), new_name.to_owned(), cap);
                ch.members.len() > g.config.presence_limit
            }
            None => false,
        };
        let note = ServerPackage::notification(Notification::UserRename {
            old_username: old,
            new_username: new_name.to_owned(),
        });
        if crowded {
            g.send_to(id, &note);
        } else {
            g.send_to_channel(&channel, None, &note);
        }
        for key in owned {
            let update = g.channel_update(&key);
            g.send_to_channel(&key, None, &update);
        }
        g.finish();
        Ok(())
    }

    /// Calls [`Hub::presence_tick`] every `presence_interval` until `stop`.
    pub async fn run_presence(self, stop: CancellationToken) {
        // interval() refuses a zero period; a Config built in code may hold one.
        let mut period = self.config().presence_interval.max(MIN_PRESENCE_INTERVAL);
        let mut tick = tokio::time::interval(period);
        // After a stall, one late tick is enough: the next one carries the
        // newer counts anyway.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.presence_tick(),
            }
            // A configuration reload may have changed the interval.
            let wanted = self.config().presence_interval.max(MIN_PRESENCE_INTERVAL);
            if wanted != period {
                period = wanted;
                tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
        }
    }

    /// Answers `ping` with `pong`, through the same queue as everything
    /// else, so the answer proves all earlier packages were handled. (The
    /// connection first waits for a store barrier, so the pong also
    /// follows the `message_sent` of every earlier message.)
    pub fn ping(&self, id: UserId, token: Option<String>) -> Result<(), ChatError> {
        let mut g = self.lock();
        g.user(id)?;
        g.send_to(
            id,
            &ServerPackage::notification(Notification::Pong { token }),
        );
        g.finish();
        Ok(())
    }

    /// The user's current name.
    pub fn username(&self, id: UserId) -> Option<String> {
        self.lock().state.users.get(&id).map(|u| u.name.clone())
    }

    /// Number of logged-in users.
    pub fn user_count(&self) -> usize {
        self.lock().state.users.len()
    }

    /// A consistent copy of users and channels.
    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        let s = &g.state;
        let name = |id: &UserId| s.users.get(id).map(|u| u.name.clone()).unwrap_or_default();
        let mut users: Vec<(String, String)> = s
            .users
            .values()
            .map(|u| {
                let ch = s.channels.get(&u.channel).map(|c| c.name.clone());
                (u.name.clone(), ch.unwrap_or_default())
            })
            .collect();
        users.sort();
        let mut channels: Vec<ChannelSnapshot> = s
            .channels
            .values()
            .map(|c| ChannelSnapshot {
                name: c.name.clone(),
                private: c.private,
                owner: match &c.registered {
                    Some(reg) => Some(reg.owner_name.clone()),
                    None => c.owner.as_ref().map(name),
                },
                members: c.members.iter().map(|m| name(&m.id)).collect(),
                registered: c.registered.is_some(),
                topic: c.topic.clone(),
                bans: c
                    .bans
                    .iter()
                    .map(|b| BanSnapshot {
                        name: b.name.clone(),
                        account: b.account,
                    })
                    .collect(),
            })
            .collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        let accounts = s
            .users
            .values()
            .filter_map(|u| u.account.map(|a| (u.name.clone(), a)))
            .collect();
        Snapshot {
            users,
            channels,
            accounts,
        }
    }
}

/// The lock guard plus the limits, so helpers need one receiver.
struct Guard<'a> {
    /// The locked state.
    state: MutexGuard<'a, State>,
    /// The limits, as they were when the lock was taken (a borrow from
    /// the swap, cheaper than a reference count on every operation).
    config: arc_swap::Guard<Arc<Config>>,
    /// The store's queue, for the read marks and purges an operation left.
    journal: &'a Journal,
    /// The cluster, if this node is in one.
    cluster: Option<&'a Arc<crate::cluster::replica::Cluster>>,
}

impl Guard<'_> {
    fn user(&self, id: UserId) -> Result<&User, ChatError> {
        match self.state.users.get(&id) {
            Some(u) => Ok(u),
            None => fail("You are not logged in."),
        }
    }

    fn channel(&self, key: &str) -> Result<&Channel, ChatError> {
        match self.state.channels.get(key) {
            Some(c) => Ok(c),
            None => fail("That channel no longer exists."),
        }
    }

    /// Validates a name for a new login or rename (by `renaming`) and
    /// checks it is free: no user has it, and no other user's name looks
    /// like it.
    fn check_new_name(&self, name: &str, renaming: Option<UserId>) -> Result<(), ChatError> {
        validate_name(name, self.config.max_name_chars).map_err(ChatError)?;
        if self.state.names.contains_key(&fold_name(name)) {
            return fail("Username is already taken.");
        }
        if let Some(other) = self
            .state
            .skeletons
            .get(&name_skeleton(name))
            .filter(|&&other| Some(other) != renaming)
            .and_then(|other| self.state.users.get(other))
        {
            return fail(format!(
                "{name} looks too much like {}, who is online; choose another name.",
                other.name
            ));
        }
        Ok(())
    }

    /// The name shown as a channel's owner: the owner account's for a
    /// registered channel, the owning member's otherwise.
    fn owner_name(&self, ch: &Channel) -> Option<String> {
        match &ch.registered {
            Some(reg) => Some(reg.owner_name.clone()),
            None => ch
                .owner
                .and_then(|o| self.state.users.get(&o))
                .map(|u| u.name.clone()),
        }
    }

    /// Ends `old`'s session because `name` logged in to its account: it is
    /// told why, and its connection closes after writing what is queued.
    fn replace(&mut self, old: UserId, name: &str) {
        if !self.state.users.contains_key(&old) {
            return;
        }
        let package = ServerPackage::error(
            "login",
            format!(
                "{name} logged in from another connection with its password; this one is closed."
            ),
        );
        self.send_to(old, &package);
        // Finishing, not closed: the error above still goes out.
        if let Some(user) = self.state.users.get(&old) {
            user.outbox.finish();
        }
        self.remove_user(old);
    }

    fn send_to(&mut self, id: UserId, package: &ServerPackage) {
        if let Some(bytes) = encode_with(&self.config, package) {
            self.send_bytes(id, bytes);
        }
    }

    /// Queues an encoded package for one user.
    fn send_bytes(&mut self, id: UserId, bytes: Bytes) {
        let state = &mut *self.state;
        if let Some(u) = state.users.get(&id) {
            deliver(&u.outbox, id, bytes, &mut state.kicks);
        }
    }

    /// Sends to every member of a channel, except `skip`.
    fn send_to_channel(&mut self, key: &str, skip: Option<UserId>, package: &ServerPackage) {
        let state = &mut *self.state;
        let Some(ch) = state.channels.get(key) else {
            return;
        };
        if ch.members.iter().all(|m| Some(m.id) == skip) {
            return;
        }
        let Some(bytes) = encode_with(&self.config, package) else {
            return;
        };
        let bounds = (self.config.outbound_queue, self.config.max_queue_bytes);
        ch.log.append(bytes, skip, None, bounds, &mut state.kicks);
    }

    /// Sends a new user their `session`: the channel list in it is the
    /// shared, precompressed one.
    fn send_session(
        &mut self,
        id: UserId,
        name: &str,
        account: bool,
        unread: Option<Vec<UnreadCount>>,
    ) {
        let config = Arc::clone(&self.config);
        let state = &mut *self.state;
        let head = ServerPackage::Session(Session {
            unread,
            ..Session::accepted_without_list(name, GENERAL, state.public.len())
                .with_account(account)
        });
        let encoded = state
            .public
            .tail(&config)
            .and_then(|tail| codec::encode_with_tail(&head, &tail, config.max_package_bytes));
        match encoded {
            Ok(bytes) => self.send_bytes(id, bytes),
            Err(e) => tracing::error!(error = %e, "could not encode a session"),
        }
    }

    /// Removes a user entirely.
    fn remove_user(&mut self, id: UserId) {
        self.exit(id);
        let state = &mut *self.state;
        if let Some(user) = state.users.remove(&id) {
            state.names.remove(&fold_name(&user.name));
            let skeleton = name_skeleton(&user.name);
            if state.skeletons.get(&skeleton) == Some(&id) {
                state.skeletons.remove(&skeleton);
            }
            if let Some(account) = user.account {
                if state.online_accounts.get(&account) == Some(&id) {
                    state.online_accounts.remove(&account);
                }
            }
            for key in &user.invited_to {
                if let Some(ch) = state.channels.get_mut(key) {
                    ch.invited.remove(&id);
                }
            }
            for key in user.ignores.keys() {
                unmark_ignorer(&mut state.ignored_by, key, id);
            }
            user.outbox.close();
        }
    }

    /// Ends an operation: drops users whose queues overflowed meanwhile
    /// (which may overflow further queues, hence the loop).
    fn finish(&mut self) {
        while let Some((id, why)) = self.state.kicks.pop() {
            if let Some(user) = self.state.users.get(&id) {
                if why != PushError::Closed {
                    tracing::warn!(
                        user = %user.name,
                        reason = %why,
                        "disconnecting slow consumer"
                    );
                }
                if self.cluster.is_some() {
                    // Every replica must see the departure at the same
                    // point of the log: the connection ends, and its end
                    // appends it.
                    user.outbox.close();
                    continue;
                }
                self.remove_user(id);
            }
        }
        self.queue_pending();
    }
}

/// Whether `account` may enter the private channel `ch` without an
/// invitation: its owner account, or one admitted before.
fn admitted(ch: &Channel, account: Option<AccountId>) -> bool {
    match (&ch.registered, account) {
        (Some(reg), Some(account)) => reg.owner == account || reg.admitted.contains(&account),
        _ => false,
    }
}

/// Notes that channel `key`'s count changed; in a storm the channel is
/// nearly always marked already, so the key is copied only when it is not.
fn mark_dirty(dirty: &mut HashSet<String>, key: &str) {
    if !dirty.contains(key) {
        dirty.insert(key.to_owned());
    }
}

/// Takes `id` out of the users ignoring `key`.
fn unmark_ignorer(ignored_by: &mut HashMap<String, HashSet<UserId>>, key: &str, id: UserId) {
    if let Some(set) = ignored_by.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            ignored_by.remove(key);
        }
    }
}

/// Encodes a package once for any number of recipients.
fn encode_with(config: &Config, package: &ServerPackage) -> Option<Bytes> {
    match codec::encode_packed(
        package,
        config.max_package_bytes,
        config.compression_level,
        config.compress_min_bytes,
    ) {
        Ok(b) => Some(b),
        Err(e) => {
            // Lists are capped so this cannot happen with sane limits; if it
            // does, the package is dropped loudly rather than truncated.
            tracing::error!(error = %e, "could not encode an outgoing package");
            None
        }
    }
}

/// Queues `bytes` for one recipient; a full or closed queue marks it for removal.
fn deliver(outbox: &Outbox, id: UserId, bytes: Bytes, kicks: &mut Vec<(UserId, PushError)>) {
    if let Err(why) = outbox.push(bytes) {
        kicks.push((id, why));
    }
}

/// Now, as RFC 3339 UTC with milliseconds: `2026-11-21T10:00:00.123Z`.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests;

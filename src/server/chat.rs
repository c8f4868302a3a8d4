//! Chat state: who is logged in, which channels exist, who is in which,
//! and who must be told what when any of that changes.
//!
//! Everything lives in one [`State`] behind a `std::sync::Mutex` that is
//! never held across an `.await`: every operation is a short, synchronous
//! critical section that updates the maps and pushes already-encoded
//! packages into the bounded outbound queues of the users concerned
//! ([`Outbox::push`], never waiting). A queue that is full (in packages or
//! in bytes) marks its owner as a slow consumer; such users are removed at the end of the operation, their
//! connection is told to close, and the rest of the channel is not slowed.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::server::accounts::Accounts;
use crate::server::config::Config;
use crate::server::journal::{Job, Journal, Slot};
pub use crate::server::outbox::Outbox;
use crate::server::outbox::PushError;
use crate::store::{
    AccountId, ChannelId, MessageId, SqliteStore, Store, StoreError, StoredMessage,
};
use crate::wire::codec::{self, EncodeError};
use crate::wire::compress::DeflatedTail;
use crate::wire::protocol::{
    fold_name, name_skeleton, validate_message, validate_name, ChatMessage, Notification,
    ServerPackage, Session,
};

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
}

impl Snapshot {
    /// Checks the structural invariants of the chat state: names are unique
    /// case-insensitively; every user is a member of exactly the channel
    /// their entry names; `general` exists, is public and has no owner;
    /// no two users' names share a confusable skeleton; a guest's channel
    /// other than `general` is non-empty and owned by one of its members;
    /// a registered channel has an owner (its account, who may be offline)
    /// and may be empty. Returns the first violation found.
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
}

/// A logged-in user.
#[derive(Debug)]
struct User {
    /// Name as its owner spelled it.
    name: String,
    /// Folded key of the channel the user is in (exactly one at a time).
    channel: String,
    /// Where this user's packages go.
    outbox: Outbox,
    /// The account logged in to, if any.
    account: Option<AccountId>,
    /// Folded keys of channels holding an invitation for this user, so the
    /// invitations can be dropped when the user goes away.
    invited_to: HashSet<String>,
}

/// A member slot: the id plus a handle on its queue, so a broadcast walks
/// one vector instead of looking every member up in the user map.
#[derive(Debug)]
struct Member {
    /// Who.
    id: UserId,
    /// That user's queue.
    outbox: Outbox,
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
            invited: HashSet::new(),
            sorted: SortedNames::new("users"),
            stats_total: 0,
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
    /// Id of the next chat message: one above the highest stored at start.
    next_message_id: MessageId,
    /// Set at shutdown: departures are then not announced.
    closing: bool,
    /// Public channels in list order, with the list every login sends.
    public: SortedNames,
    /// Folded keys of channels above the presence limit whose member count
    /// changed since their last `channel_stats` (at most one per channel).
    presence_dirty: HashSet<String>,
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
            closing: false,
            public: SortedNames::public_channels(),
            presence_dirty: HashSet::new(),
        };
        Ok(Hub {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                accounts: Arc::new(Accounts::new(Arc::clone(&store), &config)?),
                config: ArcSwap::new(config),
                store,
                journal,
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

    /// Loads the registered channels from the store (at start: this blocks
    /// on the store, so call it before serving).
    pub fn load_registered_from_store(&self) -> Result<(), StoreError> {
        let store = self.store();
        let mut loaded = Vec::new();
        for c in store.registered_channels()? {
            let Some(owner) = store.account_by_id(c.owner)? else {
                // The schema cascades deletions, so this is a damaged file.
                tracing::warn!(channel = %c.name, "registered channel without its owner skipped");
                continue;
            };
            loaded.push(LoadedChannel {
                id: c.id,
                name: c.name,
                private: c.private,
                owner: c.owner,
                owner_name: owner.name,
                admitted: c.admitted,
            });
        }
        let count = loaded.len();
        self.load_registered(loaded);
        tracing::info!(channels = count, "registered channels loaded");
        Ok(())
    }

    /// The queue to the store's writer: [`Hub::message`] needs a slot of it.
    pub fn journal(&self) -> &Journal {
        &self.shared.journal
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
        }
    }

    /// Logs a guest in under `name`: [`Hub::login_as`] without an account.
    pub fn login(&self, name: &str, outbox: Outbox) -> Result<UserId, ChatError> {
        self.login_as(name, None, outbox)
    }

    /// Logs a user in under `name` (to `account`, whose password the caller
    /// has checked, if given) and puts them in `general`. On success the
    /// user's queue gets the `session` package and a `user_joined` with the
    /// member list; the channel's other members get `user_joined`. On
    /// failure nothing is sent and the reason is returned.
    ///
    /// A login to an account that is already online takes over: the old
    /// connection gets a `login` error and is closed. So is a guest still
    /// holding the account's name (one logged in before the account was
    /// made by the admin commands).
    pub fn login_as(
        &self,
        name: &str,
        account: Option<AccountId>,
        outbox: Outbox,
    ) -> Result<UserId, ChatError> {
        let mut g = self.lock();
        if let Some(account) = account {
            validate_name(name, g.config.max_name_chars).map_err(ChatError)?;
            let holder = g.state.names.get(&fold_name(name)).copied();
            let old = g.state.online_accounts.get(&account).copied();
            for old in old.into_iter().chain(holder) {
                g.replace(old, name);
            }
        }
        g.check_new_name(name, None)?;
        let id = g.state.next_id;
        g.state.next_id += 1;
        g.state.names.insert(fold_name(name), id);
        g.state.skeletons.insert(name_skeleton(name), id);
        if let Some(account) = account {
            g.state.online_accounts.insert(account, id);
        }
        g.state.users.insert(
            id,
            User {
                name: name.to_owned(),
                channel: GENERAL.to_owned(),
                outbox,
                account,
                invited_to: HashSet::new(),
            },
        );
        g.send_session(id, name, account.is_some());
        g.enter(id, GENERAL);
        g.finish();
        Ok(id)
    }

    /// Adds the registered channels loaded from the store (at start).
    pub fn load_registered(&self, channels: Vec<LoadedChannel>) {
        let mut g = self.lock();
        let cap = g.config.max_list_names;
        for c in channels {
            let key = fold_name(&c.name);
            if key == GENERAL || g.state.channels.contains_key(&key) {
                tracing::warn!(channel = %c.name, "registered channel skipped: name in use");
                continue;
            }
            if !c.private {
                g.state.public.insert(key.clone(), c.name.clone(), cap);
            }
            g.state.channels.insert(
                key,
                Channel {
                    private: c.private,
                    registered: Some(Registered {
                        id: c.id,
                        owner: c.owner,
                        owner_name: c.owner_name,
                        admitted: c.admitted.into_iter().collect(),
                    }),
                    ..Channel::new(&c.name, None)
                },
            );
        }
    }

    /// The account the user is logged in to.
    pub fn account(&self, id: UserId) -> Option<AccountId> {
        self.lock().state.users.get(&id).and_then(|u| u.account)
    }

    /// Marks a guest as logged in to the account just registered for their
    /// name; refused if they renamed meanwhile or already have one.
    pub fn set_account(&self, id: UserId, name: &str, account: AccountId) -> Result<(), ChatError> {
        let mut g = self.lock();
        let user = g.user(id)?;
        if user.name != name || user.account.is_some() {
            return fail("Your name changed while registering; register again.");
        }
        if let Some(u) = g.state.users.get_mut(&id) {
            u.account = Some(account);
        }
        g.state.online_accounts.insert(account, id);
        Ok(())
    }

    /// Whether the user's joining `channel` would create it while logged in
    /// to an account, so that the channel must be registered first: returns
    /// the owner account and the checked display name.
    pub fn needs_registration(
        &self,
        id: UserId,
        channel: &str,
    ) -> Result<Option<AccountId>, ChatError> {
        let g = self.lock();
        validate_name(channel, g.config.max_name_chars).map_err(ChatError)?;
        let user = g.user(id)?;
        Ok(user
            .account
            .filter(|_| !g.state.channels.contains_key(&fold_name(channel))))
    }

    /// Removes a user (connection closed). Idempotent.
    pub fn disconnect(&self, id: UserId) {
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
        let config = self.config();
        validate_message(&text, config.max_message_bytes).map_err(ChatError)?;
        let mut g = self.lock();
        let user = g.user(id)?;
        let channel = g.channel(&user.channel)?;
        let message_id = g.state.next_message_id;
        // Encoding happens under the lock: the id must be in the package,
        // and ids must reach the store queue, and every recipient, in the
        // order they are handed out. (Short messages are stored, not
        // compressed, so this is a copy, not a deflate.)
        let record = StoredMessage {
            id: message_id,
            channel_key: user.channel.clone(),
            channel: channel.name.clone(),
            sender: user.name.clone(),
            account: user.account,
            text,
            timestamp: timestamp_now(),
        };
        let package = ServerPackage::Message(ChatMessage {
            message: record.text.clone(),
            username: record.sender.clone(),
            channel: record.channel.clone(),
            timestamp: record.timestamp.clone(),
            id: message_id,
        });
        let bytes = codec::encode_packed(
            &package,
            config.max_package_bytes,
            config.compression_level,
            config.compress_min_bytes,
        )
        .map_err(|e| ChatError(format!("message cannot be sent: {e}")))?;
        let ack = user.outbox.clone();
        g.state.next_message_id += 1;
        slot.send(Job::Message { record, ack });
        let state = &mut *g.state;
        if let Some(ch) = state
            .users
            .get(&id)
            .and_then(|u| state.channels.get(&u.channel))
        {
            for m in ch.members.iter().filter(|m| m.id != id) {
                deliver(&m.outbox, m.id, bytes.clone(), &mut state.kicks);
            }
        }
        g.finish();
        Ok(())
    }

    /// Moves the user to `channel`, creating it (owned by the user) if it
    /// does not exist.
    pub fn join(&self, id: UserId, channel: &str) -> Result<Vec<Persist>, ChatError> {
        self.join_with(id, channel, None)
    }

    /// [`Hub::join`], creating the channel as the registered channel
    /// `registration` (already stored, owned by the user's account) if it
    /// does not exist.
    pub fn join_with(
        &self,
        id: UserId,
        channel: &str,
        registration: Option<ChannelId>,
    ) -> Result<Vec<Persist>, ChatError> {
        let mut g = self.lock();
        let mut persist = Vec::new();
        validate_name(channel, g.config.max_name_chars).map_err(ChatError)?;
        let key = fold_name(channel);
        let user = g.user(id)?;
        let account = user.account;
        let owner_name = user.name.clone();
        let existing = g.state.channels.get(&key);
        if let (Some(_), Some(registered)) = (existing, registration) {
            persist.push(Persist::Unregister(registered));
        }
        if user.channel == key {
            return fail(format!("You are already in {channel}."));
        }
        match existing {
            Some(ch) if ch.private && !ch.invited.contains(&id) && !admitted(ch, account) => {
                return fail(format!(
                    "{} is private: you need an invitation from a member to join.",
                    ch.name
                ))
            }
            Some(ch) => {
                // An account let in by invitation keeps access to a private
                // registered channel.
                if let (Some(reg), Some(account)) = (&ch.registered, account) {
                    if ch.private && reg.owner != account && !reg.admitted.contains(&account) {
                        persist.push(Persist::Admit {
                            channel: reg.id,
                            account,
                        });
                    }
                }
            }
            None => {
                g.state
                    .public
                    .insert(key.clone(), channel.to_owned(), g.config.max_list_names);
                let registered = match (registration, account) {
                    (Some(rid), Some(owner)) => Some(Registered {
                        id: rid,
                        owner,
                        owner_name,
                        admitted: HashSet::new(),
                    }),
                    _ => None,
                };
                let owner = registered.is_none().then_some(id);
                g.state.channels.insert(
                    key.clone(),
                    Channel {
                        registered,
                        ..Channel::new(channel, owner)
                    },
                );
            }
        }
        for p in &persist {
            if let (Persist::Admit { account, .. }, Some(ch)) = (p, g.state.channels.get_mut(&key))
            {
                if let Some(reg) = ch.registered.as_mut() {
                    reg.admitted.insert(*account);
                }
            }
        }
        g.exit(id);
        g.enter(id, &key);
        g.finish();
        Ok(persist)
    }

    /// Moves the user back to `general`.
    pub fn leave(&self, id: UserId) -> Result<(), ChatError> {
        let mut g = self.lock();
        if g.user(id)?.channel == GENERAL {
            return fail("You are in general, which cannot be left; join another channel instead.");
        }
        g.exit(id);
        g.enter(id, GENERAL);
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
            user.account
        });
        // The account's channels show its new name as their owner; their
        // members are told, but for those of the user's own channel, whom
        // the rename itself tells.
        let mut owned = Vec::new();
        if let Some(account) = account {
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

    /// Makes the user's channel private (`true`) or public (`false`). Only
    /// the owner may; `general` stays public.
    pub fn set_private(&self, id: UserId, private: bool) -> Result<Vec<Persist>, ChatError> {
        let mut g = self.lock();
        let user = g.user(id)?;
        let key = user.channel.clone();
        let account = user.account;
        let ch = g.channel(&key)?;
        let word = if private { "private" } else { "public" };
        if key == GENERAL {
            return fail("general is always public.");
        }
        let is_owner = match &ch.registered {
            Some(reg) => account == Some(reg.owner),
            None => ch.owner == Some(id),
        };
        if !is_owner {
            let owner = g.owner_name(ch);
            return fail(format!(
                "Only the owner of {} ({}) can make it {word}.",
                ch.name,
                owner.as_deref().unwrap_or("nobody")
            ));
        }
        let persist: Vec<Persist> = ch
            .registered
            .as_ref()
            .map(|reg| Persist::SetPrivate {
                channel: reg.id,
                private,
            })
            .into_iter()
            .collect();
        if ch.private == private {
            return fail(format!("{} is already {word}.", ch.name));
        }
        if let Some(ch) = g.state.channels.get_mut(&key) {
            ch.private = private;
        }
        if private {
            g.state.public.remove(&key);
        } else if let Some(ch) = g.state.channels.get(&key) {
            let name = ch.name.clone();
            let cap = g.config.max_list_names;
            g.state.public.insert(key.clone(), name, cap);
        }
        let update = g.channel_update(&key);
        g.send_to_channel(&key, None, &update);
        g.finish();
        Ok(persist)
    }

    /// Invites `username` to the inviter's channel: the invitee gets
    /// `invited`, the inviter `invite_sent`, and the invitee may then join
    /// once even if the channel is private.
    pub fn invite(&self, id: UserId, username: &str) -> Result<(), ChatError> {
        let mut g = self.lock();
        let user = g.user(id)?;
        let key = user.channel.clone();
        let by = user.name.clone();
        let Some(&target) = g.state.names.get(&fold_name(username)) else {
            return fail(format!("No user named {username} is online."));
        };
        if target == id {
            return fail("You cannot invite yourself.");
        }
        let target_user = g.user(target)?;
        let target_name = target_user.name.clone();
        let ch = g.channel(&key)?;
        let channel_name = ch.name.clone();
        if target_user.channel == key {
            return fail(format!("{target_name} is already in {channel_name}."));
        }
        if let Some(ch) = g.state.channels.get_mut(&key) {
            ch.invited.insert(target);
        }
        if let Some(t) = g.state.users.get_mut(&target) {
            t.invited_to.insert(key);
        }
        g.send_to(
            target,
            &ServerPackage::notification(Notification::Invited {
                channel: channel_name.clone(),
                by,
            }),
        );
        g.send_to(
            id,
            &ServerPackage::notification(Notification::InviteSent {
                channel: channel_name,
                username: target_name,
            }),
        );
        g.finish();
        Ok(())
    }

    /// Sends the user the list of public channels.
    pub fn channel_list(&self, id: UserId) -> Result<(), ChatError> {
        let mut g = self.lock();
        g.user(id)?;
        let list = ServerPackage::notification(Notification::ChannelList {
            channels: g.state.public.first(g.config.max_list_names),
            channels_total: g.state.public.len(),
        });
        g.send_to(id, &list);
        g.finish();
        Ok(())
    }

    /// Sends `channel_stats` to the members of every channel above the
    /// presence limit whose member count changed since they were last told.
    /// The server's presence task calls this every `presence_interval`;
    /// tests call it directly to step through intervals.
    pub fn presence_tick(&self) {
        let mut g = self.lock();
        let dirty: Vec<String> = g.state.presence_dirty.drain().collect();
        for key in dirty {
            g.send_stats(&key, false, None);
        }
        g.finish();
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

    /// Checks that every channel's sorted member index holds exactly its
    /// members under their current names, and that a cached `users` list
    /// is the first `max_list_names` of them. For tests; returns the first
    /// violation found.
    pub fn check_member_lists(&self) -> Result<(), String> {
        let mut g = self.lock();
        let config = Arc::clone(&g.config);
        let state = &mut *g.state;
        for ch in state.channels.values_mut() {
            let mut expected: Vec<(String, String)> = ch
                .members
                .iter()
                .filter_map(|m| state.users.get(&m.id))
                .map(|u| (fold_name(&u.name), u.name.clone()))
                .collect();
            expected.sort();
            let indexed: Vec<(String, String)> = ch
                .sorted
                .names
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if indexed != expected {
                return Err(format!(
                    "{}: index {indexed:?}, members {expected:?}",
                    ch.name
                ));
            }
            if let Some(listed) = &ch.sorted.listed {
                let mut z = Vec::new();
                listed.tail.splice_into(br#"{"data":{"n":0"#, &mut z);
                let cached = crate::wire::compress::inflate(&z, config.max_package_bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        serde_json::from_slice::<serde_json::Value>(&text)
                            .map_err(|e| e.to_string())
                    })
                    .map(|v| v["data"]["users"].clone());
                let first = serde_json::Value::from(ch.sorted.first(config.max_list_names));
                if cached.as_ref() != Ok(&first) {
                    return Err(format!(
                        "{}: cached users list {cached:?}, members {first}",
                        ch.name
                    ));
                }
            }
        }
        Ok(())
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
            })
            .collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot { users, channels }
    }
}

/// The lock guard plus the limits, so helpers need one receiver.
struct Guard<'a> {
    /// The locked state.
    state: MutexGuard<'a, State>,
    /// The limits, as they were when the lock was taken (a borrow from
    /// the swap, cheaper than a reference count on every operation).
    config: arc_swap::Guard<Arc<Config>>,
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
        for m in ch.members.iter().filter(|m| Some(m.id) != skip) {
            deliver(&m.outbox, m.id, bytes.clone(), &mut state.kicks);
        }
    }

    /// Sends a new user their `session`: the channel list in it is the
    /// shared, precompressed one.
    fn send_session(&mut self, id: UserId, name: &str, account: bool) {
        let config = Arc::clone(&self.config);
        let state = &mut *self.state;
        let head = ServerPackage::Session(
            Session::accepted_without_list(name, GENERAL, state.public.len()).with_account(account),
        );
        let encoded = state
            .public
            .tail(&config)
            .and_then(|tail| codec::encode_with_tail(&head, &tail, config.max_package_bytes));
        match encoded {
            Ok(bytes) => self.send_bytes(id, bytes),
            Err(e) => tracing::error!(error = %e, "could not encode a session"),
        }
    }

    fn channel_update(&self, key: &str) -> ServerPackage {
        let (channel, private, owner) = match self.state.channels.get(key) {
            Some(ch) => (ch.name.clone(), ch.private, self.owner_name(ch)),
            None => (String::new(), false, None),
        };
        ServerPackage::notification(Notification::ChannelUpdate {
            channel,
            private,
            owner,
        })
    }

    /// Puts a user (currently in no member list) into channel `key`, uses up
    /// any invitation, and announces the arrival: to the other members while
    /// the channel stays within the presence limit, as `channel_stats` when
    /// this arrival takes it over, later by [`Hub::presence_tick`] when it
    /// was over already. The joiner's own copy always comes.
    fn enter(&mut self, id: UserId, key: &str) {
        let config = Arc::clone(&self.config);
        let state = &mut *self.state;
        let (Some(user), Some(ch)) = (state.users.get_mut(&id), state.channels.get_mut(key)) else {
            return;
        };
        user.channel = key.to_owned();
        user.invited_to.remove(key);
        ch.invited.remove(&id);
        ch.members.push(Member {
            id,
            outbox: user.outbox.clone(),
        });
        ch.sorted.insert(
            fold_name(&user.name),
            user.name.clone(),
            config.max_list_names,
        );
        let username = user.name.clone();
        let channel = ch.name.clone();
        let total = ch.members.len();
        match presence(total - 1, total, config.presence_limit) {
            Presence::Announce => {
                let joined = ServerPackage::notification(Notification::UserJoined {
                    username: username.clone(),
                    channel: channel.clone(),
                    users: None,
                    users_total: None,
                    owner: None,
                    private: None,
                });
                self.send_to_channel(key, Some(id), &joined);
            }
            // The joiner learns the count from its own copy.
            Presence::Crossed => self.send_stats(key, true, Some(id)),
            Presence::Count => mark_dirty(&mut self.state.presence_dirty, key),
        }

        // The joiner's own copy describes the channel it arrived in; its
        // member list is the channel's cached one, spliced in last.
        let owner = self
            .state
            .channels
            .get(key)
            .and_then(|ch| self.owner_name(ch));
        let state = &mut *self.state;
        let Some(ch) = state.channels.get_mut(key) else {
            return;
        };
        let head = ServerPackage::notification(Notification::UserJoined {
            username,
            channel,
            users: None,
            users_total: Some(total),
            owner,
            private: Some(ch.private),
        });
        let encoded = ch
            .sorted
            .tail(&config)
            .and_then(|tail| codec::encode_with_tail(&head, &tail, config.max_package_bytes));
        match encoded {
            Ok(bytes) => self.send_bytes(id, bytes),
            Err(e) => tracing::error!(error = %e, "could not encode a user_joined"),
        }
    }

    /// Sends the members of channel `key` its member count, if it is above
    /// the presence limit and the count is not what they were last told,
    /// or in any case when `crossed` (the channel just crossed the limit,
    /// so announcements stop or resume from here). `skip` is not told.
    fn send_stats(&mut self, key: &str, crossed: bool, skip: Option<UserId>) {
        let limit = self.config.presence_limit;
        let Some(ch) = self.state.channels.get_mut(key) else {
            return;
        };
        let total = ch.members.len();
        if !crossed && (total <= limit || total == ch.stats_total) {
            return;
        }
        ch.stats_total = total;
        let stats = ServerPackage::notification(Notification::ChannelStats {
            channel: ch.name.clone(),
            users_total: total,
        });
        // Whatever was pending is now told.
        self.state.presence_dirty.remove(key);
        self.send_to_channel(key, skip, &stats);
    }

    /// Takes a user out of their channel's member list, announcing the
    /// departure (or counting it, as [`Guard::enter`] does arrivals),
    /// handing ownership on and removing the channel if it is now empty
    /// (unless it is `general`).
    fn exit(&mut self, id: UserId) {
        let state = &mut *self.state;
        let Some(user) = state.users.get(&id) else {
            return;
        };
        let key = user.channel.clone();
        let username = user.name.clone();
        let Some(ch) = state.channels.get_mut(&key) else {
            return;
        };
        ch.members.retain(|m| m.id != id);
        ch.sorted.remove(&fold_name(&username));
        // A registered channel outlives its members, and its ownership
        // stays with its account.
        if ch.members.is_empty() && key != GENERAL && ch.registered.is_none() {
            state.public.remove(&key);
            state.presence_dirty.remove(&key);
            if let Some(ch) = state.channels.remove(&key) {
                for invited in ch.invited {
                    if let Some(u) = state.users.get_mut(&invited) {
                        u.invited_to.remove(&key);
                    }
                }
            }
            return;
        }
        let owner_left = ch.owner == Some(id) && ch.registered.is_none();
        if owner_left {
            ch.owner = ch.members.first().map(|m| m.id);
        }
        if state.closing {
            return;
        }
        let total = ch.members.len();
        match presence(total + 1, total, self.config.presence_limit) {
            Presence::Announce => {
                let left = ServerPackage::notification(Notification::UserLeft {
                    username,
                    channel: ch.name.clone(),
                });
                self.send_to_channel(&key, None, &left);
            }
            Presence::Crossed => self.send_stats(&key, true, None),
            Presence::Count => mark_dirty(&mut state.presence_dirty, &key),
        }
        if owner_left {
            let update = self.channel_update(&key);
            self.send_to_channel(&key, None, &update);
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
                self.remove_user(id);
            }
        }
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

/// How a change of a channel's member count is told to its other members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// Within the limit before and after: `user_joined` / `user_left`.
    Announce,
    /// The change crossed the limit, either way: `channel_stats` at once.
    Crossed,
    /// Above the limit before and after: counted for the next `channel_stats`.
    Count,
}

/// Which [`Presence`] a change of member count from `before` to `after`
/// calls for under `limit`.
fn presence(before: usize, after: usize, limit: usize) -> Presence {
    match (before > limit, after > limit) {
        (false, false) => Presence::Announce,
        (true, true) => Presence::Count,
        _ => Presence::Crossed,
    }
}

/// Notes that channel `key`'s count changed; in a storm the channel is
/// nearly always marked already, so the key is copied only when it is not.
fn mark_dirty(dirty: &mut HashSet<String>, key: &str) {
    if !dirty.contains(key) {
        dirty.insert(key.to_owned());
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
mod tests {
    use super::*;

    fn channel(name: &str, owner: Option<&str>, members: &[&str]) -> ChannelSnapshot {
        ChannelSnapshot {
            name: name.to_owned(),
            private: false,
            owner: owner.map(str::to_owned),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            registered: false,
        }
    }

    fn user(name: &str, channel: &str) -> (String, String) {
        (name.to_owned(), channel.to_owned())
    }

    /// The names a cached list tail carries, read back through a real
    /// spliced zlib stream.
    fn listed(tail: &DeflatedTail) -> Vec<String> {
        let mut z = Vec::new();
        tail.splice_into(br#"{"type":"x","data":{"n":0"#, &mut z);
        let text = crate::wire::compress::inflate(&z, 1 << 20).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        serde_json::from_value(v["data"]["channels"].clone()).unwrap()
    }

    #[test]
    fn cached_channel_list_matches_the_channels_after_any_change() {
        // A cap of 3 over 8 names makes changes before, at and after the
        // end of the list all common; the cache must be right after each.
        let config = Config {
            max_list_names: 3,
            ..Config::default()
        };
        let pool = ["a", "B", "c", "D", "e", "F", "g", "H"];
        let mut public = SortedNames::public_channels();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rebuilt = 0;
        for step in 0..3000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let name = pool[(seed >> 33) as usize % pool.len()];
            let key = crate::wire::protocol::fold_name(name);
            if (seed >> 40) % 2 == 0 {
                public.insert(key, name.to_owned(), config.max_list_names);
            } else {
                public.remove(&key);
            }
            // Look at the list only every other step, so some changes pile
            // up between two builds.
            if step % 2 == 0 {
                let was_cached = public.listed.is_some();
                let tail = public.tail(&config).unwrap();
                rebuilt += usize::from(!was_cached);
                assert_eq!(listed(&tail), public.first(3), "step {step}");
            }
        }
        // The cache must have been both used and rebuilt for this to test anything.
        assert!(rebuilt > 50 && rebuilt < 1400, "rebuilt {rebuilt} of 1500");
    }

    #[test]
    fn invariants_hold_for_a_sound_state_and_catch_each_violation() {
        let sound = Snapshot {
            users: vec![user("alice", "rust"), user("bob", "general")],
            channels: vec![
                channel("general", None, &["bob"]),
                channel("rust", Some("alice"), &["alice"]),
            ],
        };
        assert_eq!(sound.check_invariants(), Ok(()));

        let mut twice = sound.clone();
        twice.users.push(user("ALICE", "general"));
        twice.channels[0].members.push("ALICE".into());
        let mut two_homes = sound.clone();
        two_homes.channels[0].members.push("alice".into());
        let mut empty = sound.clone();
        empty.channels.push(channel("ghost", Some("alice"), &[]));
        let mut absent_owner = sound.clone();
        absent_owner.channels[1].owner = Some("bob".into());
        let mut private_general = sound.clone();
        private_general.channels[0].private = true;
        let mut no_general = sound.clone();
        no_general.channels.remove(0);
        let mut look_alike = sound.clone();
        look_alike.users.push(user("\u{430}lice", "general"));
        look_alike.channels[0].members.push("\u{430}lice".into());
        let mut ownerless_registered = sound.clone();
        ownerless_registered.channels.push(ChannelSnapshot {
            registered: true,
            ..channel("kept", None, &[])
        });
        let mut sound_registered = sound.clone();
        sound_registered.channels.push(ChannelSnapshot {
            registered: true,
            ..channel("kept", Some("offline_owner"), &[])
        });
        assert_eq!(sound_registered.check_invariants(), Ok(()));
        for (what, bad) in [
            ("case-insensitive duplicate", twice),
            ("user in two channels", two_homes),
            ("empty channel", empty),
            ("owner not a member", absent_owner),
            ("private general", private_general),
            ("missing general", no_general),
            ("look-alike names", look_alike),
            ("registered channel without owner", ownerless_registered),
        ] {
            assert!(bad.check_invariants().is_err(), "{what} not caught");
        }
    }
}

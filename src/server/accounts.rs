//! Accounts as the server uses them: checking a login against the store,
//! and the commands that need the store or a password hash (`register`,
//! `password`, `rename`, and `join` and `group`, which register the
//! channels an account holder creates).
//!
//! Everything here is async and keeps off the async workers: store calls
//! run on tokio's blocking pool behind a semaphore of `account_store_calls`
//! permits (a waiting call is a parked task, bounded by the connection cap), password hashes on the [`Hasher`]'s own bounded pool, and the
//! chat state is touched only through [`Hub`] calls, never across an
//! `.await`.
//!
//! A login (and a `rename`, a `register`) first asks the [`AccountIndex`]
//! in memory whether the name, or its skeleton, is an account's: a guest's
//! name that is neither is decided without the store, on the async worker.
//! Any other goes to the store, which holds the password: so a password
//! changed or an account deleted by the admin commands
//! (`chatmaster-server accounts ...`), run while the server is up, counts
//! from the next login, and an account they add counts once the index has
//! polled the store's version (every `accounts_poll`, [`Accounts::watch`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::server::account_index::{AccountIndex, Change};
use crate::server::chat::{Hub, Persist, UserId};
use crate::server::commands::{
    parse_params, ChannelParams, CommandError, GroupParams, PasswordParams, RegisterParams,
    UsernameParams,
};
use crate::server::config::{Config, Registration};
use crate::server::passwords::{check_password_rules, Hasher, Throttle};
use crate::store::{
    self, Account, AccountId, ChannelId, NewAccount, NewChannel, Store, StoreError,
};
use crate::wire::protocol::{
    fold_name, name_skeleton, validate_message, validate_name, Notification, ServerPackage,
};
use arc_swap::ArcSwap;

/// A refused login: the reason for the user, and whether a password would
/// help (the client may then prompt for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Shown to the user.
    pub reason: String,
    /// The name is registered and the password was missing or wrong.
    pub password_required: bool,
}

impl Refusal {
    fn plain(reason: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
            password_required: false,
        }
    }

    fn password(reason: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
            password_required: true,
        }
    }
}

/// What an accounts command leaves to do: the package to answer with, and
/// store steps to write before any answer leaves.
#[derive(Debug, Default)]
pub struct Answer {
    /// Sent to the user once `persist` is written.
    pub reply: Option<ServerPackage>,
    /// Written to the store first.
    pub persist: Vec<Persist>,
}

/// The accounts service: the store, the hasher and the throttle.
#[derive(Debug)]
pub struct Accounts {
    /// Where accounts and registered channels live.
    store: Arc<dyn Store>,
    /// Which names are accounts', so guests need no store call.
    index: Arc<AccountIndex>,
    /// How often `watch` polls the store for other processes' changes.
    poll: Duration,
    /// argon2id on a bounded pool.
    hasher: Hasher,
    /// Wrong-password counts; a short critical section, never held across `.await`.
    throttle: Mutex<Throttle<AccountId>>,
    /// Store calls running at once.
    store_permits: Arc<Semaphore>,
    /// The limits read at each use (whether `register` is allowed, the
    /// longest name), so that a configuration reload changes them; the
    /// hasher, the throttle and the store permits are sized once, at start.
    limits: ArcSwap<Config>,
}

/// A store failure as the user sees it.
fn unavailable(e: &StoreError) -> String {
    tracing::error!(error = %e, "store operation failed");
    format!("The server's database failed ({e}); try again later.")
}

impl Accounts {
    /// The service over `store` with the limits of `config`. Loads the
    /// accounts' names from the store (blocks on it: call it at start).
    pub fn new(store: Arc<dyn Store>, config: &Config) -> Result<Self, StoreError> {
        let index = Arc::new(AccountIndex::load(store.as_ref())?);
        tracing::info!(accounts = index.len(), "account names loaded");
        Ok(Accounts {
            store,
            index,
            poll: config.accounts_poll,
            hasher: Hasher::from_config(config),
            throttle: Mutex::new(Throttle::new(config)),
            store_permits: Arc::new(Semaphore::new(config.account_store_calls.max(1))),
            limits: ArcSwap::from_pointee(config.clone()),
        })
    }

    /// The index of account names (for tests and diagnostics).
    pub fn index(&self) -> &AccountIndex {
        &self.index
    }

    /// Polls the store's accounts version every `accounts_poll` until
    /// `stop`, reloading the index when another process changed the
    /// accounts. Each poll is one small read on the blocking pool; a
    /// failed one is logged and the next tried.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the index was loaded just now.
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let (index, store) = (Arc::clone(&self.index), Arc::clone(&self.store));
            match tokio::task::spawn_blocking(move || index.refresh(store.as_ref())).await {
                Ok(Ok(true)) => {
                    tracing::info!(accounts = self.index.len(), "account names reloaded")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot poll the accounts version"),
                Err(e) => tracing::warn!(error = %e, "accounts poll failed"),
            }
        }
    }

    /// Puts reloaded limits in force (see the `limits` field for which).
    pub fn reconfigure(&self, config: Arc<Config>) {
        self.limits.store(config);
    }

    /// Runs a store call on the blocking pool.
    pub async fn db<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self
            .store_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Backend("the store is closing".into()))?;
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || call(store.as_ref()))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle<AccountId>> {
        self.throttle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks a password against an account, throttled: a wrong one counts
    /// against the account and the address, a right one clears the
    /// account's count.
    async fn check_password(
        &self,
        account: &Account,
        password: String,
        addr: IpAddr,
    ) -> Result<(), Refusal> {
        if let Err(throttled) = self.throttle().attempt(&account.id, addr) {
            return Err(Refusal::password(throttled.reason(&account.name)));
        }
        let right = self
            .hasher
            .verify(password, account.password_hash.clone())
            .await
            .map_err(|e| {
                tracing::error!(account = %account.name, error = %e, "password check failed");
                Refusal::plain(format!(
                    "The password of {} cannot be checked; ask the server's operator.",
                    account.name
                ))
            })?;
        if right {
            self.throttle().succeeded(&account.id, addr);
            Ok(())
        } else {
            // Counted when the attempt began.
            Err(Refusal::password(format!(
                "Wrong password for {}.",
                account.name
            )))
        }
    }

    /// The accounts holding `name`'s key and those whose skeleton matches
    /// it. A name the index knows nothing like is nobody's: no store call.
    async fn lookup(&self, name: &str) -> Result<(Option<Account>, Vec<Account>), StoreError> {
        let (key, skeleton) = (fold_name(name), name_skeleton(name));
        if !self.index.may_be_taken(&key, &skeleton) {
            return Ok((None, Vec::new()));
        }
        self.db(move |s| Ok((s.account_by_key(&key)?, s.accounts_by_skeleton(&skeleton)?)))
            .await
    }

    /// Decides whether `name` may log in with `password`: returns the
    /// account logged in to (`None` for a guest), or why not.
    pub async fn authenticate(
        &self,
        name: &str,
        password: Option<String>,
        addr: IpAddr,
    ) -> Result<Option<Account>, Refusal> {
        validate_name(name, self.limits.load().max_name_chars).map_err(Refusal::plain)?;
        let (exact, alike) = self
            .lookup(name)
            .await
            .map_err(|e| Refusal::plain(unavailable(&e)))?;
        if let Some(account) = exact {
            let Some(password) = password else {
                return Err(Refusal::password(format!(
                    "{} is a registered name: log in with its password.",
                    account.name
                )));
            };
            self.check_password(&account, password, addr).await?;
            return Ok(Some(account));
        }
        if let Some(other) = alike.first() {
            return Err(Refusal::plain(format!(
                "{name} looks too much like the registered name {}; choose another name.",
                other.name
            )));
        }
        if password.is_some() {
            return Err(Refusal::plain(format!(
                "{name} has no account: log in without a password, then register it."
            )));
        }
        Ok(None)
    }

    /// Carries out the store steps a chat operation returned.
    pub async fn persist(&self, steps: Vec<Persist>) -> Result<(), String> {
        if steps.is_empty() {
            return Ok(());
        }
        self.db(move |s| {
            for step in steps {
                match step {
                    Persist::SetPrivate { channel, private } => {
                        s.set_channel_private(channel, private)?
                    }
                    Persist::Admit { channel, account } => s.admit(channel, account)?,
                    Persist::Unregister(channel) => s.delete_channel(channel)?,
                    Persist::SetOwner { channel, owner } => s.set_channel_owner(channel, owner)?,
                    Persist::SetTopic { channel, topic } => {
                        s.set_channel_topic(channel, topic.as_deref())?
                    }
                    Persist::Ban { channel, ban } => s.add_ban(channel, &ban)?,
                    Persist::Unban {
                        channel,
                        key,
                        account,
                    } => s.remove_ban(channel, &key, account)?,
                    Persist::Delete(channel) => s.delete_channel_and_messages(channel)?,
                    Persist::Ignore { account, key, name } => s.add_ignore(account, &key, &name)?,
                    Persist::Unignore { account, key } => s.remove_ignore(account, &key)?,
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| unavailable(&e))
    }

    /// Runs one of the commands the command table marks as accounts
    /// commands; returns what is left to do (the others answer through the
    /// hub, as chat commands do, and their answers are queued already: the
    /// caller writes `persist` before it writes its queue).
    pub async fn run_command(
        &self,
        hub: &Hub,
        id: UserId,
        command: &'static str,
        parameters: Option<serde_json::Value>,
        addr: IpAddr,
    ) -> Result<Answer, CommandError> {
        let failed = |message: String| CommandError::Failed { command, message };
        match command {
            "join" => {
                let p: ChannelParams =
                    parse_params(command, parameters).map_err(CommandError::Protocol)?;
                let persist = self.join(hub, id, &p.channel).await.map_err(failed)?;
                Ok(Answer {
                    reply: None,
                    persist,
                })
            }
            "rename" => {
                let p: UsernameParams =
                    parse_params(command, parameters).map_err(CommandError::Protocol)?;
                self.rename(hub, id, &p.username).await.map_err(failed)?;
                Ok(Answer::default())
            }
            "register" => {
                let p: RegisterParams =
                    parse_params(command, parameters).map_err(CommandError::Protocol)?;
                let name = self.register(hub, id, p.password).await.map_err(failed)?;
                Ok(Answer {
                    reply: Some(ServerPackage::notification(Notification::Registered {
                        username: name,
                    })),
                    persist: Vec::new(),
                })
            }
            "password" => {
                let p: PasswordParams =
                    parse_params(command, parameters).map_err(CommandError::Protocol)?;
                self.change_password(hub, id, p, addr)
                    .await
                    .map_err(failed)?;
                Ok(Answer {
                    reply: Some(ServerPackage::notification(
                        Notification::PasswordChanged {},
                    )),
                    persist: Vec::new(),
                })
            }
            "group" => {
                let p: GroupParams =
                    parse_params(command, parameters).map_err(CommandError::Protocol)?;
                self.group(hub, id, p).await.map_err(failed)?;
                Ok(Answer::default())
            }
            // The command table and this match are kept in step by the
            // unit test of the table; reaching here would be a bug.
            other => Err(CommandError::Protocol(format!(
                "`{other}` is not an accounts command"
            ))),
        }
    }

    /// `join`: an account holder creating a channel registers it first.
    /// Returns the store steps the join left.
    async fn join(&self, hub: &Hub, id: UserId, channel: &str) -> Result<Vec<Persist>, String> {
        let registration = match hub.needs_registration(id, channel).map_err(|e| e.0)? {
            None => None,
            Some(owner) => Some(self.register_channel(channel, owner, false).await?),
        };
        match hub.join_replicated(id, channel, registration).await {
            Ok(steps) => Ok(steps),
            Err(e) => {
                if let Some(cid) = registration {
                    // Undo the registration the failed join asked for.
                    let _ = self.db(move |s| s.delete_channel(cid)).await;
                }
                Err(e.0)
            }
        }
    }

    /// Registers a new channel owned by `owner`'s account, for `join` and
    /// `group`; the caller undoes it if the chat state then refuses it.
    async fn register_channel(
        &self,
        channel: &str,
        owner: AccountId,
        private: bool,
    ) -> Result<ChannelId, String> {
        let new = NewChannel {
            name: channel.to_owned(),
            key: fold_name(channel),
            owner,
            private,
            created_at: store::now_millis(),
        };
        match self.db(move |s| s.register_channel(&new)).await {
            Ok(cid) => Ok(cid),
            Err(StoreError::Conflict { existing }) => Err(format!(
                "{existing} is registered but not loaded; ask the server's operator."
            )),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// `group`: an account holder's group is registered first, as a
    /// channel made by `join` is (private from the start); its first
    /// message, if any, goes the way every message goes (stored, with an
    /// id, and `message_sent` once committed).
    async fn group(&self, hub: &Hub, id: UserId, p: GroupParams) -> Result<(), String> {
        let config = hub.config();
        if p.recipients.len() > config.max_group_recipients {
            return Err(format!(
                "A group names at most {} recipients ({} given).",
                config.max_group_recipients,
                p.recipients.len()
            ));
        }
        if let Some(text) = &p.message {
            validate_message(text, config.max_message_bytes)?;
        }
        let owner = hub.check_group(id, &p.channel).map_err(|e| e.0)?;
        // The message's place in the store queue is taken before anything
        // changes, so a group is never left half made for want of one.
        let slot = match p.message {
            Some(_) => Some(hub.journal().clone().slot().await.map_err(|_| {
                "Messages cannot be stored right now; the group was not created.".to_owned()
            })?),
            None => None,
        };
        let registration = match owner {
            None => None,
            Some(owner) => Some(self.register_channel(&p.channel, owner, true).await?),
        };
        if let Err(e) = hub
            .create_group_replicated(id, &p.channel, &p.recipients, registration)
            .await
        {
            if let Some(cid) = registration {
                let _ = self.db(move |s| s.delete_channel(cid)).await;
            }
            return Err(e.0);
        }
        if let (Some(text), Some(slot)) = (p.message, slot) {
            hub.message(id, text, slot)
                .map_err(|e| format!("The group was created but its message was not sent: {e}"))?;
        }
        Ok(())
    }

    /// `rename`: the new name must not be another account's, or look like
    /// one; an account holder's account is renamed with them.
    async fn rename(&self, hub: &Hub, id: UserId, new_name: &str) -> Result<(), String> {
        validate_name(new_name, self.limits.load().max_name_chars)?;
        let account = hub.account(id);
        let old_name = hub.username(id).ok_or("You are not logged in.")?;
        let (exact, alike) = self.lookup(new_name).await.map_err(|e| unavailable(&e))?;
        if let Some(other) = exact.filter(|a| Some(a.id) != account) {
            return Err(format!(
                "{} is a registered name: log in with its password to use it.",
                other.name
            ));
        }
        if let Some(other) = alike.iter().find(|a| Some(a.id) != account) {
            return Err(format!(
                "{new_name} looks too much like the registered name {}; choose another name.",
                other.name
            ));
        }
        let Some(account) = account else {
            return hub.rename_replicated(id, new_name).await.map_err(|e| e.0);
        };
        if let Some(refusal) = self.oper_name(new_name) {
            return Err(refusal);
        }
        let rename_to = |from: &str, name: &str| {
            let (name, key, skeleton) = (name.to_owned(), fold_name(name), name_skeleton(name));
            let (index, old_key) = (Arc::clone(&self.index), fold_name(from));
            move |s: &dyn Store| {
                let version = s.rename_account(account, &name, &key, &skeleton)?;
                // On the blocking thread, so the index has the new name
                // before anyone can learn the rename happened.
                index.apply(
                    Change::Renamed {
                        id: account,
                        old_key: &old_key,
                        key: &key,
                        skeleton: &skeleton,
                    },
                    version,
                );
                Ok(())
            }
        };
        match self.db(rename_to(&old_name, new_name)).await {
            Ok(()) => {}
            Err(StoreError::Conflict { existing }) => {
                return Err(format!(
                    "{new_name} is too close to the registered name {existing}."
                ))
            }
            Err(e) => return Err(unavailable(&e)),
        }
        if let Err(e) = hub.rename_replicated(id, new_name).await {
            // Someone online holds the name: the account keeps the old one.
            if let Err(undo) = self.db(rename_to(new_name, &old_name)).await {
                tracing::error!(error = %undo, "could not undo an account rename");
            }
            return Err(e.0);
        }
        Ok(())
    }

    /// Why `name` cannot become an account's name by `register` or an
    /// account's rename: it is a server operator's (`--oper`). Whoever
    /// took an operator name nobody had registered yet would be an
    /// operator, so those accounts are made by the server's operator
    /// (`chatmaster-server accounts add`).
    fn oper_name(&self, name: &str) -> Option<String> {
        let key = fold_name(name);
        self.limits
            .load()
            .opers
            .iter()
            .any(|o| fold_name(o) == key)
            .then(|| {
                format!(
                    "{name} is a server operator's name; its account is made by the server's \
                     operator (chatmaster-server accounts add)."
                )
            })
    }

    /// `register`: the user's current name becomes an account. Returns the name.
    async fn register(&self, hub: &Hub, id: UserId, password: String) -> Result<String, String> {
        if self.limits.load().registration == Registration::Closed {
            return Err(
                "Registration is closed on this server; ask its operator for an account.".into(),
            );
        }
        let name = hub.username(id).ok_or("You are not logged in.")?;
        if hub.account(id).is_some() {
            return Err(format!(
                "{name} is already registered, and you are logged in to it."
            ));
        }
        if let Some(refusal) = self.oper_name(&name) {
            return Err(refusal);
        }
        check_password_rules(&password)?;
        let (exact, alike) = self.lookup(&name).await.map_err(|e| unavailable(&e))?;
        if let Some(other) = exact.or_else(|| alike.into_iter().next()) {
            return Err(format!("{} is already registered.", other.name));
        }
        let password_hash = self.hasher.hash(password).await.map_err(|e| {
            tracing::error!(error = %e, "hashing failed");
            "The password could not be hashed; try again.".to_owned()
        })?;
        let new = NewAccount {
            name: name.clone(),
            key: fold_name(&name),
            skeleton: name_skeleton(&name),
            password_hash,
            created_at: store::now_millis(),
        };
        let index = Arc::clone(&self.index);
        let created = move |s: &dyn Store| {
            let (id, version) = s.create_account(&new)?;
            index.apply(
                Change::Added {
                    id,
                    key: &new.key,
                    skeleton: &new.skeleton,
                },
                version,
            );
            Ok(id)
        };
        let account = match self.db(created).await {
            Ok(a) => a,
            Err(StoreError::Conflict { existing }) => {
                return Err(format!("{existing} is already registered."))
            }
            Err(e) => return Err(unavailable(&e)),
        };
        if let Err(e) = hub.set_account_replicated(id, &name, account).await {
            let (index, key) = (Arc::clone(&self.index), fold_name(&name));
            let _ = self
                .db(move |s| {
                    let version = s.delete_account(account)?;
                    index.apply(
                        Change::Removed {
                            id: account,
                            key: &key,
                        },
                        version,
                    );
                    Ok(())
                })
                .await;
            return Err(e.0);
        }
        // What the guest ignored is the account's from now on.
        let ignores = hub.ignore_entries(id);
        if !ignores.is_empty() {
            let stored = self
                .db(move |s| {
                    for (key, name) in &ignores {
                        s.add_ignore(account, key, name)?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = stored {
                tracing::error!(error = %e, "cannot store a new account's ignore list");
            }
        }
        tracing::info!(account = %name, "account registered");
        Ok(name)
    }

    /// `password`: the old password, checked (and throttled) as at login,
    /// then the new one.
    async fn change_password(
        &self,
        hub: &Hub,
        id: UserId,
        p: PasswordParams,
        addr: IpAddr,
    ) -> Result<(), String> {
        let Some(account_id) = hub.account(id) else {
            return Err("You are not logged in to an account; register your name first.".into());
        };
        let account = self
            .db(move |s| s.account_by_id(account_id))
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or("Your account no longer exists.")?;
        self.check_password(&account, p.old, addr)
            .await
            .map_err(|r| r.reason)?;
        check_password_rules(&p.new)?;
        let hash = self.hasher.hash(p.new).await.map_err(|e| {
            tracing::error!(error = %e, "hashing failed");
            "The password could not be hashed; try again.".to_owned()
        })?;
        self.db(move |s| s.set_password(account_id, &hash))
            .await
            .map_err(|e| unavailable(&e))?;
        tracing::info!(account = %account.name, "password changed");
        Ok(())
    }
}

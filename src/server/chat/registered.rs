//! Accounts in the chat state: logging in to an account (taking over its
//! older session), and the registered channels loaded from the store.

use super::*;

impl Hub {
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
                topic: c.topic,
                bans: c.bans,
            });
        }
        let count = loaded.len();
        // The messages of channels that are gone (guests' channels of an
        // earlier run, which ended before they emptied; the channels of
        // deleted accounts) go too, as they would have had the server seen
        // the channel go.
        let keep: Vec<String> = std::iter::once(GENERAL.to_owned())
            .chain(loaded.iter().map(|c| fold_name(&c.name)))
            .collect();
        let purged = store.apply_changes(&[crate::store::Change::PurgeOthers { keep }])?;
        if let Some(n) = purged.first().filter(|n| **n > 0) {
            tracing::info!(messages = n, "messages of channels that are gone deleted");
        }
        self.load_registered(loaded);
        tracing::info!(channels = count, "registered channels loaded");
        Ok(())
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
        self.login_with(name, account, outbox, LoginSetup::default())
    }

    /// [`Hub::login_as`], with what the session starts with beyond its
    /// name: the account's ignore list, and whether its backlog of kept
    /// direct messages is still to be delivered ([`LoginSetup`]).
    pub fn login_with(
        &self,
        name: &str,
        account: Option<AccountId>,
        outbox: Outbox,
        setup: LoginSetup,
    ) -> Result<UserId, ChatError> {
        self.login_at(name, account, outbox, setup, None)
    }

    /// [`Hub::login_with`] for a user whose connection is on the cluster
    /// node `home` (`None`: this one).
    pub(crate) fn login_at(
        &self,
        name: &str,
        account: Option<AccountId>,
        outbox: Outbox,
        setup: LoginSetup,
        home: Option<Arc<str>>,
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
        let first_message = g.state.next_message_id;
        g.state.users.insert(
            id,
            User {
                home,
                ..User::new(name, outbox, account, first_message)
            },
        );
        // An account's session carries its unread counts (an empty list
        // when there are none); a guest's none.
        let unread = account.map(|_| setup.unread.clone().unwrap_or_default());
        g.setup_user(id, setup);
        g.send_session(id, name, account.is_some(), unread);
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
            // An account's ban is compared under the account's current name.
            let bans = c
                .bans
                .into_iter()
                .map(|b| Ban {
                    key: fold_name(&b.name),
                    skeleton: name_skeleton(&b.name),
                    name: b.name,
                    account: b.account,
                })
                .collect();
            g.state.channels.insert(
                key,
                Channel {
                    private: c.private,
                    topic: c.topic,
                    bans,
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
}

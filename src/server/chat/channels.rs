//! Channel commands: joining (and creating), leaving, privacy, invitations and
//! the channel list, with the presence each of them announces.

use super::moderation::is_banned;
use super::presence::{presence, Presence};
use super::*;

impl Hub {
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
            Some(ch) if is_banned(ch, &owner_name, account) => {
                return fail(format!("You are banned from {}.", ch.name))
            }
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
                        born: g.cluster.map_or(0, |c| c.seen()),
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
        if is_banned(ch, &target_name, target_user.account) {
            return fail(format!(
                "{target_name} is banned from {channel_name}; unban them first."
            ));
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
}

impl Guard<'_> {
    pub(super) fn channel_update(&self, key: &str) -> ServerPackage {
        let (channel, private, owner) = match self.state.channels.get(key) {
            Some(ch) => (ch.name.clone(), ch.private, self.owner_name(ch)),
            None => (String::new(), false, None),
        };
        ServerPackage::notification(Notification::ChannelUpdate {
            channel,
            private,
            owner,
            topic: None,
        })
    }

    /// Puts a user (currently in no member list) into channel `key`, uses up
    /// any invitation, and announces the arrival: to the other members while
    /// the channel stays within the presence limit, as `channel_stats` when
    /// this arrival takes it over, later by [`Hub::presence_tick`] when it
    /// was over already. The joiner's own copy always comes.
    pub(super) fn enter(&mut self, id: UserId, key: &str) {
        let config = Arc::clone(&self.config);
        let state = &mut *self.state;
        let (Some(user), Some(ch)) = (state.users.get_mut(&id), state.channels.get_mut(key)) else {
            return;
        };
        user.channel = key.to_owned();
        user.invited_to.remove(key);
        ch.invited.remove(&id);
        if user.home.is_none() {
            ch.local += 1;
            if ch.local == 1 {
                if let Some(cluster) = self.cluster {
                    cluster.follow_channel(key, true);
                }
            }
        }
        ch.members.push(Member { id });
        user.outbox.subscribe(&ch.log, id);
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
                    topic: None,
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
            topic: ch.topic.clone(),
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

    /// Takes a user out of their channel's member list, announcing the
    /// departure (or counting it, as [`Guard::enter`] does arrivals),
    /// handing ownership on and removing the channel if it is now empty
    /// (unless it is `general`).
    pub(super) fn exit(&mut self, id: UserId) {
        self.exit_as(id, None);
    }

    /// [`Guard::exit`], the departure announced with `kicked` (a
    /// moderator put the user out).
    pub(super) fn exit_as(&mut self, id: UserId, kicked: Option<bool>) {
        let state = &mut *self.state;
        let last_id = state.peek_message_id() - 1;
        let Some(user) = state.users.get(&id) else {
            return;
        };
        let key = user.channel.clone();
        let username = user.name.clone();
        let Some(ch) = state.channels.get_mut(&key) else {
            return;
        };
        ch.members.retain(|m| m.id != id);
        user.outbox.unsubscribe();
        ch.sorted.remove(&fold_name(&username));
        if user.home.is_none() {
            ch.local = ch.local.saturating_sub(1);
            if ch.local == 0 {
                if let Some(cluster) = self.cluster {
                    cluster.follow_channel(&key, false);
                }
            }
        }
        // Whatever was said here so far counts as seen by an account
        // leaving a registered channel.
        // (Only this node's users: another node marks its own.)
        if let (Some(reg), Some(account), None) = (&ch.registered, user.account, &user.home) {
            state.pending_marks.insert((account, reg.id), last_id);
        }
        // A registered channel outlives its members, and its ownership
        // stays with its account.
        if ch.members.is_empty() && key != GENERAL && ch.registered.is_none() {
            // A guest channel's messages go with it (those a channel of
            // the same name gets later have higher ids).
            state.pending_purges.insert(key.clone(), last_id);
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
                    kicked,
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
}

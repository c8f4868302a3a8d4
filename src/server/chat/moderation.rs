//! Groups and moderation: `group` (a private channel made with its
//! invitations at once), and what a channel's owner, or a server operator
//! anywhere, may do to it: `kick`, `ban` / `unban` / `bans`, `transfer`,
//! `topic`, `delete_channel`; and operators' `notice` to everybody.
//!
//! Rights: the owner of a channel is its owning member (a guest's channel)
//! or the user logged in to its owner account (a registered one). A
//! server operator is a user logged in to an account named by `--oper`;
//! operators may kick, ban, unban, list bans and delete in any channel,
//! naming it with `channel` when they are not in it (owners may too, for
//! their own channels). `general` has no owner and no moderation.
//!
//! A ban holds an account when the banned user is logged in to one
//! (whatever name it uses later), or else a name; either way anyone whose
//! name has the same confusable skeleton as the banned name is kept out
//! too, so `tr0ll` does not get past a ban on `troll`. Bans in registered
//! channels are returned as [`Persist`] steps, as are topics, transfers
//! and deletions.

use super::*;
use crate::wire::protocol::validate_short_text;

/// Whether the user named `name` (logged in to `account`, if any) is
/// banned from `ch`.
pub(super) fn is_banned(ch: &Channel, name: &str, account: Option<AccountId>) -> bool {
    if ch.bans.is_empty() {
        return false;
    }
    let skeleton = name_skeleton(name);
    ch.bans
        .iter()
        .any(|b| b.skeleton == skeleton || (b.account.is_some() && b.account == account))
}

impl Hub {
    /// Whether the user is a server operator (`--oper`).
    pub fn is_oper(&self, id: UserId) -> bool {
        self.lock().oper(id)
    }

    /// Checks that `group` may create `channel` (a valid name that is not
    /// in use) and says whether it must be registered first: returns the
    /// account of a user logged in to one.
    pub fn check_group(&self, id: UserId, channel: &str) -> Result<Option<AccountId>, ChatError> {
        let g = self.lock();
        validate_name(channel, g.config.max_name_chars).map_err(ChatError)?;
        let user = g.user(id)?;
        if let Some(ch) = g.state.channels.get(&fold_name(channel)) {
            return fail(format!(
                "{} exists already; a group needs a new channel name.",
                ch.name
            ));
        }
        Ok(user.account)
    }

    /// `group`: creates `channel` as a private channel owned by the user
    /// (registered as `registration`, already stored, when given), moves
    /// the user in, and invites each online recipient. The user gets
    /// `group_created` with who was invited and which names nobody online
    /// has; the user's own name and repeated names are skipped.
    pub fn create_group(
        &self,
        id: UserId,
        channel: &str,
        recipients: &[String],
        registration: Option<ChannelId>,
    ) -> Result<(), ChatError> {
        let mut g = self.lock();
        validate_name(channel, g.config.max_name_chars).map_err(ChatError)?;
        let limit = g.config.max_group_recipients;
        if recipients.len() > limit {
            return fail(format!(
                "A group names at most {limit} recipients ({} given).",
                recipients.len()
            ));
        }
        let key = fold_name(channel);
        let user = g.user(id)?;
        let (by, account) = (user.name.clone(), user.account);
        if let Some(ch) = g.state.channels.get(&key) {
            return fail(format!(
                "{} exists already; a group needs a new channel name.",
                ch.name
            ));
        }
        let registered = match (registration, account) {
            (Some(rid), Some(owner)) => Some(Registered {
                id: rid,
                owner,
                owner_name: by.clone(),
                admitted: HashSet::new(),
            }),
            _ => None,
        };
        let owner = registered.is_none().then_some(id);
        g.state.channels.insert(
            key.clone(),
            Channel {
                private: true,
                registered,
                born: g.cluster.map_or(0, |c| c.seen()),
                ..Channel::new(channel, owner)
            },
        );
        g.exit(id);
        g.enter(id, &key);
        let mut seen = HashSet::from([fold_name(&by)]);
        let (mut invited, mut not_found) = (Vec::new(), Vec::new());
        let invitation = ServerPackage::notification(Notification::Invited {
            channel: channel.to_owned(),
            by,
        });
        for name in recipients {
            let folded = fold_name(name);
            if !seen.insert(folded.clone()) {
                continue;
            }
            let Some(&target) = g.state.names.get(&folded) else {
                not_found.push(name.clone());
                continue;
            };
            if let Some(ch) = g.state.channels.get_mut(&key) {
                ch.invited.insert(target);
            }
            if let Some(t) = g.state.users.get_mut(&target) {
                t.invited_to.insert(key.clone());
                invited.push(t.name.clone());
            }
            g.send_to(target, &invitation);
        }
        g.send_to(
            id,
            &ServerPackage::notification(Notification::GroupCreated {
                channel: channel.to_owned(),
                invited,
                not_found,
            }),
        );
        g.finish();
        Ok(())
    }

    /// `kick`: puts `username` out of the channel (the user's own, or
    /// `channel`) and back into `general`. They get `kicked`; the members
    /// get `user_left` with `kicked`.
    pub fn kick(
        &self,
        id: UserId,
        username: &str,
        reason: Option<&str>,
        channel: Option<&str>,
    ) -> Result<(), ChatError> {
        let mut g = self.lock();
        let key = g.moderated(id, channel, "kick people from", || {
            "Nobody can be kicked from general.".to_owned()
        })?;
        if let Some(reason) = reason {
            validate_short_text(reason, g.config.max_reason_chars, "reason").map_err(ChatError)?;
        }
        let target = g.member_named(&key, username)?;
        if target == id {
            return fail("You cannot kick yourself; leave the channel instead.");
        }
        if let Some(ch) = g.state.channels.get(&key).filter(|ch| g.owns(ch, target)) {
            return fail(format!(
                "{username} owns {} and cannot be kicked from it.",
                ch.name
            ));
        }
        let reason = reason.filter(|r| !r.is_empty()).map(str::to_owned);
        g.put_out(id, target, &key, reason, false);
        g.finish();
        Ok(())
    }

    /// `ban`: keeps `username` out of the channel (the user's own, or
    /// `channel`), and kicks them if they are in it. Someone online is
    /// banned as they are (their account, if any); a name nobody online
    /// has is banned as a name, or as the account of that name.
    pub fn ban(
        &self,
        id: UserId,
        username: &str,
        channel: Option<&str>,
    ) -> Result<Vec<Persist>, ChatError> {
        // Read before the lock: the index has a lock of its own.
        let offline_account = self.accounts().index().account_id(&fold_name(username));
        self.ban_as(id, username, channel, offline_account)
    }

    /// [`Hub::ban`], with `offline_account` as the account of the name
    /// (looked up by the caller: in a cluster, by the node where the
    /// command arrived, so that every node bans the same).
    pub fn ban_as(
        &self,
        id: UserId,
        username: &str,
        channel: Option<&str>,
        offline_account: Option<AccountId>,
    ) -> Result<Vec<Persist>, ChatError> {
        let config = self.config();
        validate_name(username, config.max_name_chars).map_err(ChatError)?;
        let (key, skeleton) = (fold_name(username), name_skeleton(username));
        let mut g = self.lock();
        let channel_key = g.moderated(id, channel, "ban people from", || {
            "Nobody can be banned from general.".to_owned()
        })?;
        // Someone online under the name, or under one that looks like it
        // (whom a ban on the name would keep out too).
        let online = g
            .state
            .names
            .get(&key)
            .or_else(|| g.state.skeletons.get(&skeleton))
            .copied();
        let ban = match online.and_then(|t| g.state.users.get(&t)) {
            Some(t) => Ban {
                name: t.name.clone(),
                key: fold_name(&t.name),
                skeleton: name_skeleton(&t.name),
                account: t.account,
            },
            None => Ban {
                name: username.to_owned(),
                key,
                skeleton,
                account: offline_account,
            },
        };
        let me = g.user(id)?;
        if online == Some(id) || (me.account.is_some() && me.account == ban.account) {
            return fail("You cannot ban yourself.");
        }
        let my_skeleton = name_skeleton(&me.name);
        let ch = g.channel(&channel_key)?;
        let owner = g.owner_name(ch);
        let owns = match (&ch.registered, online) {
            (Some(reg), _) => ban.account == Some(reg.owner),
            (None, Some(t)) => ch.owner == Some(t),
            (None, None) => false,
        };
        if owns
            || owner
                .as_ref()
                .is_some_and(|o| name_skeleton(o) == ban.skeleton)
        {
            return fail(format!(
                "{} owns {} and cannot be banned from it.",
                ban.name, ch.name
            ));
        }
        if ban.skeleton == my_skeleton {
            return fail("You cannot ban yourself.");
        }
        if let Some(b) = ch.bans.iter().find(|b| {
            b.skeleton == ban.skeleton || (b.account.is_some() && b.account == ban.account)
        }) {
            return fail(format!(
                "{} is already banned from {} (as {}).",
                ban.name, ch.name, b.name
            ));
        }
        if ch.bans.len() >= g.config.max_bans {
            return fail(format!(
                "{} has {} bans, the most allowed; unban someone first.",
                ch.name,
                ch.bans.len()
            ));
        }
        let channel_name = ch.name.clone();
        let persist: Vec<Persist> = ch
            .registered
            .as_ref()
            .map(|reg| Persist::Ban {
                channel: reg.id,
                ban: StoredBan {
                    account: ban.account,
                    name: ban.name.clone(),
                    key: ban.key.clone(),
                    skeleton: ban.skeleton.clone(),
                },
            })
            .into_iter()
            .collect();
        let shown = ban.name.clone();
        if let Some(ch) = g.state.channels.get_mut(&channel_key) {
            ch.bans.push(ban);
            if let Some(t) = online {
                ch.invited.remove(&t);
            }
        }
        let inside = online.filter(|t| {
            g.state
                .users
                .get(t)
                .is_some_and(|u| u.channel == channel_key)
        });
        if let Some(t) = online {
            if let Some(u) = g.state.users.get_mut(&t) {
                u.invited_to.remove(&channel_key);
            }
        }
        g.send_to(
            id,
            &ServerPackage::notification(Notification::Banned {
                channel: channel_name,
                username: shown,
            }),
        );
        if let Some(t) = inside {
            g.put_out(id, t, &channel_key, None, true);
        }
        g.finish();
        Ok(persist)
    }

    /// `unban`: lifts the ban on `username` (as the ban list shows it, or
    /// a name that looks like it) from the channel (the user's own, or
    /// `channel`).
    pub fn unban(
        &self,
        id: UserId,
        username: &str,
        channel: Option<&str>,
    ) -> Result<Vec<Persist>, ChatError> {
        let mut g = self.lock();
        let key = g.moderated(id, channel, "unban people from", || {
            "Nobody is banned from general.".to_owned()
        })?;
        let (folded, skeleton) = (fold_name(username), name_skeleton(username));
        let Some(ch) = g.state.channels.get_mut(&key) else {
            return fail("That channel no longer exists.");
        };
        let Some(at) = ch
            .bans
            .iter()
            .position(|b| b.key == folded)
            .or_else(|| ch.bans.iter().position(|b| b.skeleton == skeleton))
        else {
            return fail(format!("{username} is not banned from {}.", ch.name));
        };
        let ban = ch.bans.remove(at);
        let channel_name = ch.name.clone();
        let persist: Vec<Persist> = ch
            .registered
            .as_ref()
            .map(|reg| Persist::Unban {
                channel: reg.id,
                key: ban.key.clone(),
                account: ban.account,
            })
            .into_iter()
            .collect();
        g.send_to(
            id,
            &ServerPackage::notification(Notification::Unbanned {
                channel: channel_name,
                username: ban.name,
            }),
        );
        g.finish();
        Ok(persist)
    }

    /// `bans`: sends the moderator the channel's ban list (sorted, capped
    /// at `max_list_names`, with the total).
    pub fn bans(&self, id: UserId, channel: Option<&str>) -> Result<(), ChatError> {
        let mut g = self.lock();
        let key = g.moderated(id, channel, "list the bans of", || {
            "Nobody is banned from general.".to_owned()
        })?;
        let ch = g.channel(&key)?;
        let mut names: Vec<(String, String)> = ch
            .bans
            .iter()
            .map(|b| (b.key.clone(), b.name.clone()))
            .collect();
        names.sort();
        let list = ServerPackage::notification(Notification::BanList {
            channel: ch.name.clone(),
            usernames_total: names.len(),
            usernames: names
                .into_iter()
                .take(g.config.max_list_names)
                .map(|(_, n)| n)
                .collect(),
        });
        g.send_to(id, &list);
        g.finish();
        Ok(())
    }

    /// `transfer`: the owner hands their channel to another member. A
    /// registered channel can only pass to a member logged in to an
    /// account (it stays registered, to that account); its old owner
    /// account keeps access to it while it is private.
    pub fn transfer(&self, id: UserId, username: &str) -> Result<Vec<Persist>, ChatError> {
        let mut g = self.lock();
        let key = g.user(id)?.channel.clone();
        if key == GENERAL {
            return fail("general has no owner.");
        }
        let ch = g.channel(&key)?;
        if !g.owns(ch, id) {
            let owner = g.owner_name(ch);
            return fail(format!(
                "Only the owner of {} ({}) can give it away.",
                ch.name,
                owner.as_deref().unwrap_or("nobody")
            ));
        }
        let target = g.member_named(&key, username)?;
        if target == id {
            return fail(format!("You own {} already.", ch.name));
        }
        let (target_name, target_account) = match g.state.users.get(&target) {
            Some(t) => (t.name.clone(), t.account),
            None => return fail(format!("No user named {username} is online.")),
        };
        let mut persist = Vec::new();
        let Some(ch) = g.state.channels.get_mut(&key) else {
            return fail("That channel no longer exists.");
        };
        match ch.registered.as_mut() {
            Some(reg) => {
                let Some(account) = target_account else {
                    return fail(format!(
                        "{} is registered, so it can only pass to a member logged in to an \
                         account, and {target_name} is a guest.",
                        ch.name
                    ));
                };
                let old = std::mem::replace(&mut reg.owner, account);
                reg.owner_name = target_name;
                persist.push(Persist::SetOwner {
                    channel: reg.id,
                    owner: account,
                });
                // The old owner may come back to a private channel.
                if reg.admitted.insert(old) {
                    persist.push(Persist::Admit {
                        channel: reg.id,
                        account: old,
                    });
                }
            }
            None => ch.owner = Some(target),
        }
        let update = g.channel_update(&key);
        g.send_to_channel(&key, None, &update);
        g.finish();
        Ok(persist)
    }

    /// `topic`: the owner (or an operator) sets the topic of the channel
    /// they are in; empty clears it. Every member gets `channel_update`
    /// with `topic`.
    pub fn set_topic(&self, id: UserId, topic: &str) -> Result<Vec<Persist>, ChatError> {
        let mut g = self.lock();
        let key = g.user(id)?.channel.clone();
        if key == GENERAL {
            return fail("general has no topic.");
        }
        validate_short_text(topic, g.config.max_topic_chars, "topic").map_err(ChatError)?;
        let ch = g.channel(&key)?;
        if !g.owns(ch, id) && !g.oper(id) {
            let owner = g.owner_name(ch);
            return fail(format!(
                "Only the owner of {} ({}) can set its topic.",
                ch.name,
                owner.as_deref().unwrap_or("nobody")
            ));
        }
        let new = (!topic.is_empty()).then(|| topic.to_owned());
        let persist: Vec<Persist> = ch
            .registered
            .as_ref()
            .map(|reg| Persist::SetTopic {
                channel: reg.id,
                topic: new.clone(),
            })
            .into_iter()
            .collect();
        if let Some(ch) = g.state.channels.get_mut(&key) {
            ch.topic = new;
        }
        let update = match g.channel_update(&key) {
            ServerPackage::Notification(Notification::ChannelUpdate {
                channel,
                private,
                owner,
                ..
            }) => ServerPackage::notification(Notification::ChannelUpdate {
                channel,
                private,
                owner,
                topic: Some(topic.to_owned()),
            }),
            other => other,
        };
        g.send_to_channel(&key, None, &update);
        g.finish();
        Ok(persist)
    }

    /// `delete_channel`: the owner (or an operator) deletes the channel
    /// (the user's own, or `channel`). Every member gets `channel_deleted`
    /// and is moved to `general`; a registered channel goes from the
    /// store with its messages.
    pub fn delete_channel(
        &self,
        id: UserId,
        channel: Option<&str>,
    ) -> Result<Vec<Persist>, ChatError> {
        let mut g = self.lock();
        let key = g.moderated(id, channel, "delete", || {
            "general cannot be deleted.".to_owned()
        })?;
        let by = g.user(id)?.name.clone();
        let state = &mut *g.state;
        let Some(ch) = state.channels.remove(&key) else {
            return fail("That channel no longer exists.");
        };
        if ch.local > 0 {
            if let Some(cluster) = g.cluster {
                cluster.follow_channel(&key, false);
            }
        }
        state.public.remove(&key);
        state.presence_dirty.remove(&key);
        for invited in &ch.invited {
            if let Some(u) = state.users.get_mut(invited) {
                u.invited_to.remove(&key);
            }
        }
        let deleted = ServerPackage::notification(Notification::ChannelDeleted {
            channel: ch.name.clone(),
            by,
        });
        let members: Vec<UserId> = ch.members.iter().map(|m| m.id).collect();
        if !members.contains(&id) {
            g.send_to(id, &deleted);
        }
        for &m in &members {
            g.send_to(m, &deleted);
        }
        for &m in &members {
            g.enter(m, GENERAL);
        }
        g.finish();
        Ok(ch
            .registered
            .map(|reg| Persist::Delete(reg.id))
            .into_iter()
            .collect())
    }

    /// `notice`: an operator's text to every user online, as
    /// `server_notice` (the operator gets it too).
    pub fn notice(&self, id: UserId, message: &str) -> Result<(), ChatError> {
        let mut g = self.lock();
        let by = g.user(id)?.name.clone();
        if !g.oper(id) {
            return fail("Only server operators can send notices.");
        }
        validate_message(message, g.config.max_message_bytes).map_err(ChatError)?;
        let Some(bytes) = encode_with(
            &g.config,
            &ServerPackage::notification(Notification::ServerNotice {
                message: message.to_owned(),
                by,
            }),
        ) else {
            return fail("The notice cannot be sent.");
        };
        let state = &mut *g.state;
        for (&uid, u) in &state.users {
            deliver(&u.outbox, uid, bytes.clone(), &mut state.kicks);
        }
        g.finish();
        Ok(())
    }
}

impl Guard<'_> {
    /// Whether the user is logged in to an account `--oper` names.
    pub(super) fn oper(&self, id: UserId) -> bool {
        let Some(u) = self.state.users.get(&id) else {
            return false;
        };
        if u.account.is_none() || self.config.opers.is_empty() {
            return false;
        }
        let name = fold_name(&u.name);
        self.config.opers.iter().any(|o| fold_name(o) == name)
    }

    /// Whether the user owns `ch`: its owning member, or logged in to its
    /// owner account.
    pub(super) fn owns(&self, ch: &Channel, id: UserId) -> bool {
        match &ch.registered {
            Some(reg) => self
                .state
                .users
                .get(&id)
                .is_some_and(|u| u.account == Some(reg.owner)),
            None => ch.owner == Some(id),
        }
    }

    /// The key of the channel a moderation command acts on (`channel`,
    /// or the user's own), once the user is found to have the right: its
    /// owner or an operator. `action` completes "Only the owner ... can";
    /// `in_general` is the refusal for `general`.
    fn moderated(
        &self,
        id: UserId,
        channel: Option<&str>,
        action: &str,
        in_general: impl FnOnce() -> String,
    ) -> Result<String, ChatError> {
        let user = self.user(id)?;
        let key = match channel {
            Some(c) => {
                validate_name(c, self.config.max_name_chars).map_err(ChatError)?;
                fold_name(c)
            }
            None => user.channel.clone(),
        };
        if key == GENERAL {
            return Err(ChatError(in_general()));
        }
        let Some(ch) = self.state.channels.get(&key) else {
            return fail(format!(
                "No channel named {} exists.",
                channel.unwrap_or(&key)
            ));
        };
        if !self.owns(ch, id) && !self.oper(id) {
            let owner = self.owner_name(ch);
            return fail(format!(
                "Only the owner of {} ({}) or a server operator can {action} it.",
                ch.name,
                owner.as_deref().unwrap_or("nobody")
            ));
        }
        Ok(key)
    }

    /// The online user named `username` who is a member of channel `key`.
    fn member_named(&self, key: &str, username: &str) -> Result<UserId, ChatError> {
        let Some(&target) = self.state.names.get(&fold_name(username)) else {
            return fail(format!("No user named {username} is online."));
        };
        let user = self.user(target)?;
        if user.channel != key {
            let channel = self.channel(key)?;
            return fail(format!("{} is not in {}.", user.name, channel.name));
        }
        Ok(target)
    }

    /// Puts `target` out of channel `key` on `by`'s word and into
    /// `general`: `target` gets `kicked`, the members `user_left` with
    /// `kicked` (as presence allows), and `by` a copy of that `user_left`
    /// when presence did not bring them one.
    fn put_out(
        &mut self,
        by: UserId,
        target: UserId,
        key: &str,
        reason: Option<String>,
        banned: bool,
    ) {
        let (Some(moderator), Some(user), Some(ch)) = (
            self.state.users.get(&by),
            self.state.users.get(&target),
            self.state.channels.get(key),
        ) else {
            return;
        };
        let moderator_name = moderator.name.clone();
        let username = user.name.clone();
        let channel = ch.name.clone();
        // Within the presence limit a member moderator is told by the
        // announcement itself.
        let announced = moderator.channel == key && ch.members.len() <= self.config.presence_limit;
        self.send_to(
            target,
            &ServerPackage::notification(Notification::Kicked {
                channel: channel.clone(),
                by: moderator_name,
                reason,
                banned: banned.then_some(true),
            }),
        );
        self.exit_as(target, Some(true));
        if !announced {
            self.send_to(
                by,
                &ServerPackage::notification(Notification::UserLeft {
                    username,
                    channel,
                    kicked: Some(true),
                }),
            );
        }
        self.enter(target, GENERAL);
    }

    /// Shows an account's bans under its new name (`rename`).
    pub(super) fn rename_bans(&mut self, account: AccountId, new_name: &str) {
        for ch in self.state.channels.values_mut() {
            for b in ch.bans.iter_mut().filter(|b| b.account == Some(account)) {
                b.name = new_name.to_owned();
                b.key = fold_name(new_name);
                b.skeleton = name_skeleton(new_name);
            }
        }
    }
}

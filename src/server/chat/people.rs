//! People rather than rooms: direct messages (delivered live, or kept in
//! the store for an account that is offline), `random`, `who`, `whois`,
//! `away` and ignore lists.
//!
//! A direct message takes the same path as a channel message: a journal
//! slot taken by the connection before the hub is called, an id handed out
//! under the lock, delivery at once to a recipient who is online, and
//! `message_sent` from the writer once it is committed. A recipient who is
//! offline but has an account gets it later: the message is stored marked
//! `offline`, and after the account's next login the connection pages its
//! backlog out of the store ([`Hub::backlog_done`] says when it has caught
//! up). While that backlog is being delivered, new direct messages to the
//! account join it instead of overtaking it.
//!
//! Ignore lists hold folded names (a rename of the ignored user escapes
//! it, as on IRC); an account's list is stored and comes back at login.

use super::*;
use crate::server::journal::AckExtra;
use crate::store::{conversation_key, Direct, Participant};
use crate::wire::protocol::WhoEntry;

/// An account's backlog while it is being delivered after a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backlog {
    /// The highest id of a direct message that joined the backlog during
    /// the delivery (0 if none did).
    pub(super) joined: MessageId,
    /// The highest message id handed out before the login: messages kept
    /// up to it were sent while the account was offline.
    pub(super) kept_up_to: MessageId,
}

/// What a session starts with beyond its name and account.
#[derive(Debug, Default)]
pub struct LoginSetup {
    /// The account's stored ignore list, as (folded, as given).
    pub ignores: Vec<(String, String)>,
    /// Whether the account's backlog of kept direct messages is still to
    /// be delivered by the caller: until [`Hub::backlog_done`] says it is,
    /// new direct messages to the user join the backlog.
    pub backlog: bool,
    /// The account's unread counts in its registered channels, for its
    /// `session` (read from the store beforehand).
    pub unread: Option<Vec<UnreadCount>>,
}

/// A direct message to a name that is not online but may be an account's:
/// the caller looks the account up in the store and hands it to
/// [`Hub::direct_offline`]. It holds its journal slot meanwhile.
#[derive(Debug)]
pub struct OfflineDirect {
    /// The recipient as the sender wrote it.
    pub to: String,
    /// The recipient's folded name.
    pub key: String,
    /// The text and attachments, already checked.
    pub content: Content,
    /// The place in the store's queue.
    pub slot: Slot,
}

/// An offline recipient as found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineRecipient {
    /// Its account.
    pub account: AccountId,
    /// The account's name.
    pub name: String,
    /// Folded names the account ignores.
    pub ignores: HashSet<String>,
    /// How many messages wait in its backlog (counted up to `max_backlog`).
    pub waiting: usize,
}

impl Hub {
    /// `direct`: sends `text` to the user named `to`. A recipient online
    /// gets it at once; for one offline, `Ok(Some(..))` hands the message
    /// back for the caller to look the name up in the store (only when
    /// the name may be an account's). Refused for oneself, for a recipient
    /// who ignores the sender, and for a name that is nobody's account.
    pub fn direct(
        &self,
        id: UserId,
        to: &str,
        text: String,
        slot: Slot,
    ) -> Result<Option<OfflineDirect>, ChatError> {
        self.direct_with(id, to, text, None, slot)
    }

    /// [`Hub::direct`] with the `attachments` member as the client sent it
    /// (checked here, a bad one refused naming the field); the text may be
    /// empty when there are attachments.
    pub fn direct_with(
        &self,
        id: UserId,
        to: &str,
        text: String,
        attachments: Option<serde_json::Value>,
        slot: Slot,
    ) -> Result<Option<OfflineDirect>, ChatError> {
        let config = self.config();
        let content = Content::check(text, attachments.as_ref(), config.max_message_bytes)?;
        let key = fold_name(to);
        let mut g = self.lock();
        let sender = g.user(id)?;
        if sender.key == key {
            return fail("You cannot send a direct message to yourself.");
        }
        if let Some(&recipient) = g.state.names.get(&key) {
            g.send_direct(id, recipient, content, slot, false)?;
            g.finish();
            return Ok(None);
        }
        if validate_name(to, config.max_name_chars).is_err()
            || !self.accounts().index().contains_key(&key)
        {
            return fail(format!(
                "{to} is not online and has no account: direct messages are kept only for accounts."
            ));
        }
        Ok(Some(OfflineDirect {
            to: to.to_owned(),
            key,
            content,
            slot,
        }))
    }

    /// Finishes a [`Hub::direct`] to an offline name once the store was
    /// asked about it: `recipient` is its account, if it has one. If the
    /// recipient logged in meanwhile, the message goes to them live.
    pub fn direct_offline(
        &self,
        id: UserId,
        message: OfflineDirect,
        recipient: Option<OfflineRecipient>,
    ) -> Result<(), ChatError> {
        let mut g = self.lock();
        let sender = g.user(id)?;
        let sender_key = sender.key.clone();
        if let Some(&online) = g.state.names.get(&message.key) {
            g.send_direct(id, online, message.content, message.slot, false)?;
            g.finish();
            return Ok(());
        }
        let Some(recipient) = recipient else {
            return fail(format!(
                "{} is not online and has no account: direct messages are kept only for accounts.",
                message.to
            ));
        };
        if recipient.ignores.contains(&sender_key) {
            return fail(format!(
                "{} does not accept direct messages from you.",
                recipient.name
            ));
        }
        if recipient.waiting >= g.config.max_backlog {
            return fail(format!(
                "{} has {} direct messages waiting already, the most there may be; try again after they log in.",
                recipient.name, recipient.waiting
            ));
        }
        let message_id = g.state.peek_message_id();
        let record = StoredMessage {
            id: message_id,
            channel_key: String::new(),
            channel: String::new(),
            sender: sender.name.clone(),
            sender_key: sender_key.clone(),
            account: sender.account,
            attachments: message.content.stored(),
            edited: None,
            text: message.content.text,
            timestamp: timestamp_now(),
            direct: Some(Box::new(Direct {
                conversation: conversation_key(
                    participant(sender.account, &sender_key),
                    Participant::Account(recipient.account),
                ),
                recipient: recipient.name,
                recipient_key: message.key,
                recipient_account: Some(recipient.account),
                offline: true,
            })),
        };
        let ack = sender.outbox.clone();
        g.state.commit_message_id(message_id);
        message.slot.send(Job::Message {
            record,
            ack,
            extra: None,
        });
        g.touch(id);
        Ok(())
    }

    /// `random`: a direct message to a user picked at random among the
    /// others online who neither ignore the sender nor are ignored by them.
    pub fn random(&self, id: UserId, text: String, slot: Slot) -> Result<(), ChatError> {
        let config = self.config();
        validate_message(&text, config.max_message_bytes).map_err(ChatError)?;
        let mut g = self.lock();
        let sender = g.user(id)?;
        let sender_key = sender.key.clone();
        let eligible = |uid: &UserId, u: &User| {
            *uid != id
                && !u.ignores.contains_key(&sender_key)
                && !sender.ignores.contains_key(&fold_name(&u.name))
        };
        let count = g
            .state
            .users
            .iter()
            .filter(|(uid, u)| eligible(uid, u))
            .count();
        if count == 0 {
            return fail("Nobody else is online to receive a random message.");
        }
        let pick = rand::random_range(0..count);
        let Some(chosen) = g
            .state
            .users
            .iter()
            .filter(|(uid, u)| eligible(uid, u))
            .nth(pick)
            .map(|(uid, _)| *uid)
        else {
            return fail("Nobody else is online to receive a random message.");
        };
        let content = Content {
            text,
            attachments: Vec::new(),
        };
        g.send_direct(id, chosen, content, slot, true)?;
        g.finish();
        Ok(())
    }

    /// Whether the user's backlog is delivered: true (and new direct
    /// messages go to them live from now on) when none joined it above
    /// `delivered`, the highest id the caller has written out; false when
    /// one did, which the caller is to read from the store next. `None`
    /// when the user has gone.
    pub fn backlog_done(&self, id: UserId, delivered: MessageId) -> Option<bool> {
        let mut g = self.lock();
        let user = g.state.users.get_mut(&id)?;
        match user.backlog {
            Some(b) if b.joined > delivered => Some(false),
            _ => {
                user.backlog = None;
                Some(true)
            }
        }
    }

    /// The highest message id handed out before the user logged in: a
    /// message of their backlog above it was sent while they were online
    /// (it joined the backlog so as not to overtake it) and is delivered
    /// without `"offline": true`. `None` once the backlog is delivered.
    pub fn backlog_kept_up_to(&self, id: UserId) -> Option<MessageId> {
        self.lock()
            .state
            .users
            .get(&id)
            .and_then(|u| u.backlog)
            .map(|b| b.kept_up_to)
    }

    /// The user's ignore list as (folded, as given), for storing it when a
    /// guest registers.
    pub fn ignore_entries(&self, id: UserId) -> Vec<(String, String)> {
        self.lock()
            .state
            .users
            .get(&id)
            .map(|u| {
                u.ignores
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The folded names the user ignores (a backlog's messages from them
    /// are not delivered).
    pub fn ignored_keys(&self, id: UserId) -> HashSet<String> {
        self.lock()
            .state
            .users
            .get(&id)
            .map(|u| u.ignores.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Checks that the index of who ignores whom mirrors every user's own
    /// ignore list and that no list is over `max_ignores` (for tests and
    /// diagnostics). A user may come to ignore their own name by a rename:
    /// harmless, since nobody receives their own messages.
    pub fn check_people(&self) -> Result<(), String> {
        let g = self.lock();
        let s = &g.state;
        let mut expected: HashMap<&str, HashSet<UserId>> = HashMap::new();
        for (id, u) in &s.users {
            if u.ignores.len() > g.config.max_ignores {
                return Err(format!("{} ignores {} names", u.name, u.ignores.len()));
            }
            for key in u.ignores.keys() {
                expected.entry(key.as_str()).or_default().insert(*id);
            }
        }
        let actual: HashMap<&str, HashSet<UserId>> = s
            .ignored_by
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        if actual != expected {
            return Err(format!(
                "ignore index {actual:?} does not mirror the lists {expected:?}"
            ));
        }
        Ok(())
    }

    /// Notes that the user did something (`whois` shows the time since):
    /// the command table calls it for every command but `ping`.
    pub fn touch(&self, id: UserId) {
        self.lock().touch(id);
    }

    /// `who`: the users online, or the members of `channel` (a private
    /// channel only for its own members), sorted by folded name, from
    /// after the name `after`, at most `max_list_names` and at most half a
    /// package's bytes.
    pub fn who(
        &self,
        id: UserId,
        channel: Option<&str>,
        after: Option<&str>,
    ) -> Result<(), ChatError> {
        let mut g = self.lock();
        let asker = g.user(id)?;
        let asker_channel = asker.channel.clone();
        // Folded names come from the maps that hold them already: folding
        // every name per `who` under the lock would cost a microsecond or
        // so per user.
        let (shown, mut users): (Option<String>, Vec<(&str, &User)>) = match channel {
            None => (
                None,
                g.state
                    .names
                    .iter()
                    .filter_map(|(key, uid)| Some((key.as_str(), g.state.users.get(uid)?)))
                    .collect(),
            ),
            Some(name) => {
                let key = fold_name(name);
                match g.state.channels.get(&key) {
                    Some(ch) if !ch.private || key == asker_channel => (
                        Some(ch.name.clone()),
                        // The members' folded names, sorted already.
                        ch.sorted
                            .names
                            .keys()
                            .filter_map(|k| {
                                let user = g.state.users.get(g.state.names.get(k)?)?;
                                Some((k.as_str(), user))
                            })
                            .collect(),
                    ),
                    _ => return fail(format!("There is no public channel named {name}.")),
                }
            }
        };
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let total = users.len();
        let after = after.map(fold_name);
        let budget = g.config.max_package_bytes / 2;
        let mut used = 0;
        let mut entries = Vec::new();
        for (key, u) in users {
            if after.as_deref().is_some_and(|a| key <= a) {
                continue;
            }
            if entries.len() >= g.config.max_list_names {
                break;
            }
            let entry = WhoEntry {
                username: u.name.clone(),
                account: u.account.is_some(),
                channel: g.visible_channel(&asker_channel, u),
                away: u.away.clone(),
            };
            // A generous estimate of the entry's JSON: escaping can at most
            // sextuple a character, and the members' names take 60 bytes.
            let size = 64
                + 6 * (entry.username.len()
                    + entry.channel.as_ref().map_or(0, String::len)
                    + entry.away.as_ref().map_or(0, String::len));
            if used + size > budget && !entries.is_empty() {
                break;
            }
            used += size;
            entries.push(entry);
        }
        let answer = ServerPackage::notification(Notification::Who {
            channel: shown,
            users: entries,
            users_total: total,
        });
        g.send_to(id, &answer);
        g.finish();
        Ok(())
    }

    /// `whois`: what is known of `username`: online or not, account or
    /// not, and for someone online their channel (if visible), away text
    /// and idle seconds.
    pub fn whois(&self, id: UserId, username: &str) -> Result<(), ChatError> {
        let key = fold_name(username);
        let registered = self.accounts().index().contains_key(&key);
        let mut g = self.lock();
        let asker_channel = g.user(id)?.channel.clone();
        let answer = match g.state.names.get(&key).and_then(|u| g.state.users.get(u)) {
            Some(u) => Notification::Whois {
                username: u.name.clone(),
                online: true,
                account: u.account.is_some(),
                channel: g.visible_channel(&asker_channel, u),
                away: u.away.clone(),
                idle_secs: Some(u.last_active.elapsed().as_secs()),
            },
            None => {
                validate_name(username, g.config.max_name_chars).map_err(ChatError)?;
                Notification::Whois {
                    username: username.to_owned(),
                    online: false,
                    account: registered,
                    channel: None,
                    away: None,
                    idle_secs: None,
                }
            }
        };
        g.send_to(id, &ServerPackage::notification(answer));
        g.finish();
        Ok(())
    }

    /// `away`: sets the user's away text, or clears it (`None` or empty).
    pub fn away(&self, id: UserId, message: Option<String>) -> Result<(), ChatError> {
        let message = message.filter(|m| !m.is_empty());
        if let Some(m) = &message {
            validate_message(m, self.config().max_away_bytes)
                .map_err(|e| ChatError(format!("The away text is refused: {e}.")))?;
        }
        let mut g = self.lock();
        g.user(id)?;
        if let Some(u) = g.state.users.get_mut(&id) {
            u.away = message.clone();
        }
        g.send_to(
            id,
            &ServerPackage::notification(Notification::Away { message }),
        );
        g.finish();
        Ok(())
    }

    /// `ignore`: the user no longer receives `username`'s messages, channel
    /// or direct, and `username`'s direct messages to them are refused.
    /// For an account the list is stored (the returned step).
    pub fn ignore(&self, id: UserId, username: &str) -> Result<Vec<Persist>, ChatError> {
        let mut g = self.lock();
        validate_name(username, g.config.max_name_chars).map_err(ChatError)?;
        let key = fold_name(username);
        let max = g.config.max_ignores;
        let user = g.user(id)?;
        if fold_name(&user.name) == key {
            return fail("You cannot ignore yourself.");
        }
        if let Some(name) = user.ignores.get(&key) {
            return fail(format!("You already ignore {name}."));
        }
        if user.ignores.len() >= max {
            return fail(format!(
                "You ignore {max} names already, the most there may be; unignore one first."
            ));
        }
        let account = user.account;
        if let Some(u) = g.state.users.get_mut(&id) {
            u.ignores.insert(key.clone(), username.to_owned());
        }
        g.state
            .ignored_by
            .entry(key.clone())
            .or_default()
            .insert(id);
        g.send_ignore_list(id);
        g.finish();
        Ok(account
            .map(|account| Persist::Ignore {
                account,
                key,
                name: username.to_owned(),
            })
            .into_iter()
            .collect())
    }

    /// `unignore`: undoes an `ignore`.
    pub fn unignore(&self, id: UserId, username: &str) -> Result<Vec<Persist>, ChatError> {
        let mut g = self.lock();
        let key = fold_name(username);
        let user = g.user(id)?;
        if !user.ignores.contains_key(&key) {
            return fail(format!("You do not ignore {username}."));
        }
        let account = user.account;
        if let Some(u) = g.state.users.get_mut(&id) {
            u.ignores.remove(&key);
        }
        unmark_ignorer(&mut g.state.ignored_by, &key, id);
        g.send_ignore_list(id);
        g.finish();
        Ok(account
            .map(|account| Persist::Unignore { account, key })
            .into_iter()
            .collect())
    }

    /// `ignores`: sends the user their ignore list.
    pub fn ignores(&self, id: UserId) -> Result<(), ChatError> {
        let mut g = self.lock();
        g.user(id)?;
        g.send_ignore_list(id);
        g.finish();
        Ok(())
    }
}

/// A sender or recipient as a conversation knows them.
fn participant(account: Option<AccountId>, key: &str) -> Participant<'_> {
    match account {
        Some(account) => Participant::Account(account),
        None => Participant::Guest(key),
    }
}

impl Guard<'_> {
    /// Installs what a new session starts with.
    pub(super) fn setup_user(&mut self, id: UserId, setup: LoginSetup) {
        let max = self.config.max_ignores;
        let state = &mut *self.state;
        let kept_up_to = state.peek_message_id() - 1;
        let Some(user) = state.users.get_mut(&id) else {
            return;
        };
        if setup.backlog && user.account.is_some() {
            user.backlog = Some(Backlog {
                joined: 0,
                kept_up_to,
            });
        }
        for (key, name) in setup.ignores.into_iter().take(max) {
            state.ignored_by.entry(key.clone()).or_default().insert(id);
            user.ignores.insert(key, name);
        }
    }

    /// Notes activity for `whois`'s idle time.
    pub(super) fn touch(&mut self, id: UserId) {
        if let Some(u) = self.state.users.get_mut(&id) {
            u.last_active = std::time::Instant::now();
        }
    }

    /// The channel of `user` as someone in `asker_channel` may see it: a
    /// public one, or the one they share.
    fn visible_channel(&self, asker_channel: &str, user: &User) -> Option<String> {
        let ch = self.state.channels.get(&user.channel)?;
        (!ch.private || user.channel == asker_channel).then(|| ch.name.clone())
    }

    fn send_ignore_list(&mut self, id: UserId) {
        let usernames = match self.state.users.get(&id) {
            Some(u) => u.ignores.values().cloned().collect(),
            None => return,
        };
        self.send_to(
            id,
            &ServerPackage::notification(Notification::IgnoreList { usernames }),
        );
    }

    /// Sends a direct message from `from` to `to`, who is online: at once,
    /// or into their backlog while it is being delivered. Refused when `to`
    /// ignores `from`.
    fn send_direct(
        &mut self,
        from: UserId,
        to: UserId,
        content: Content,
        slot: Slot,
        random: bool,
    ) -> Result<(), ChatError> {
        let sender = self.user(from)?;
        let Some(recipient) = self.state.users.get(&to) else {
            return fail("That user has just left.");
        };
        let sender_key = sender.key.clone();
        if recipient.ignores.contains_key(&sender_key) {
            return fail(format!(
                "{} does not accept direct messages from you.",
                recipient.name
            ));
        }
        let message_id = self.state.peek_message_id();
        let queued = recipient.backlog.is_some();
        let home = recipient.home.clone();
        let recipient_key = fold_name(&recipient.name);
        let shown_attachments = content.shown();
        let record = StoredMessage {
            id: message_id,
            channel_key: String::new(),
            channel: String::new(),
            sender: sender.name.clone(),
            sender_key: sender_key.clone(),
            account: sender.account,
            attachments: content.stored(),
            edited: None,
            text: content.text,
            timestamp: timestamp_now(),
            direct: Some(Box::new(Direct {
                conversation: conversation_key(
                    participant(sender.account, &sender_key),
                    participant(recipient.account, &recipient_key),
                ),
                recipient: recipient.name.clone(),
                recipient_key,
                recipient_account: recipient.account,
                offline: queued,
            })),
        };
        let extra = AckExtra {
            random,
            away: recipient.away.clone(),
            online: true,
        };
        let bytes = if queued {
            None
        } else {
            let package = ServerPackage::Message(ChatMessage {
                message: record.text.clone(),
                username: record.sender.clone(),
                channel: None,
                to: Some(recipient.name.clone()),
                timestamp: record.timestamp.clone(),
                id: message_id,
                offline: None,
                attachments: shown_attachments,
            });
            Some(
                // One recipient: stored (see `DEFAULT_COMPRESS_MIN_RECIPIENTS`).
                codec::encode_packed(
                    &package,
                    self.config.max_package_bytes,
                    self.config.compression_level,
                    self.config.message_store_below(1),
                )
                .map_err(|e| ChatError(format!("message cannot be sent: {e}")))?,
            )
        };
        let ack = sender.outbox.clone();
        self.state.commit_message_id(message_id);
        slot.send(Job::Message {
            record,
            ack,
            extra: Some(Box::new(extra)),
        });
        self.touch(from);
        if let (Some(home), Some(cluster), Some(bytes)) = (home, self.cluster, bytes.as_ref()) {
            // The recipient's own node delivers it (or adds it to the
            // backlog it is delivering).
            cluster.publish_direct(&home, to, message_id, bytes.clone());
        }
        let state = &mut *self.state;
        if let Some(recipient) = state.users.get_mut(&to) {
            match bytes {
                Some(bytes) => deliver(&recipient.outbox, to, bytes, &mut state.kicks),
                None => {
                    if let Some(b) = recipient.backlog.as_mut() {
                        b.joined = message_id;
                    }
                }
            }
        }
        Ok(())
    }
}

//! What the chat state contributes to the server's memory of messages:
//! who may read a channel's history or search it, who may edit or delete
//! a stored message, telling everyone who could see a message that it
//! changed, the answers to `history` and `search` cut to the package
//! limits, and the read marks and purges left for the store's writer.
//!
//! Nothing here waits on disk. Reads of the store (history, search, one
//! message, unread counts) run through [`Hub::read`], on the blocking pool
//! behind a semaphore of `read_calls` permits, on the store's own read
//! connections; writes (edits, deletions, read marks, purges, expiry) go
//! through the writer's queue, in order with the messages they concern.
//! The chat lock is only taken for the short checks and deliveries
//! around them.

use std::time::Duration;

use super::*;
use crate::store::{Change, HistoryPage, Scope, SearchHits};
use crate::wire::protocol::{validate_attachments, Attachment, HistoryMessage};

/// How often the memory task looks for read marks and purges left over
/// (when the writer's queue was full at the end of an operation).
const PENDING_TICK: Duration = Duration::from_secs(1);
/// How often old messages are expired under `--history-days`.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// Most messages one expiry step deletes: each step is one short
/// transaction on the writer, between batches of new messages.
const EXPIRE_STEP: usize = 1000;
/// Most expiry steps in one round; the rest wait for the next round.
const EXPIRE_STEPS_PER_ROUND: usize = 1000;

/// What a history page is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A channel (its display name).
    Channel(String),
    /// The direct messages with this user (as named).
    With(String),
}

/// Who a user is in direct conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// The account, if logged in to one.
    pub account: Option<AccountId>,
    /// The folded name.
    pub key: String,
    /// The name as shown.
    pub name: String,
    /// The first message id it may read direct messages from: a guest
    /// only those of its own session (another guest of the name before it
    /// was somebody else); an account all of its own.
    pub from: MessageId,
}

impl Party {
    /// The party's identity in conversation keys.
    pub fn identity(&self) -> String {
        self.participant().identity()
    }

    /// The party as [`crate::store::conversation_key`] takes it.
    pub fn participant(&self) -> crate::store::Participant<'_> {
        match self.account {
            Some(account) => crate::store::Participant::Account(account),
            None => crate::store::Participant::Guest(&self.key),
        }
    }
}

/// Parameters of `history`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// The channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// Or the user whose direct messages with the asker to page.
    #[serde(default)]
    pub with: Option<String>,
    /// Messages older than this id.
    #[serde(default)]
    pub before: Option<i64>,
    /// Messages newer than this id.
    #[serde(default)]
    pub after: Option<i64>,
    /// How many at most (1..=100, default 50).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Parameters of `search`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Words, `prefix*`es and `"phrases"`.
    pub query: String,
    /// Only this channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// Only this author.
    #[serde(default)]
    pub username: Option<String>,
    /// Only the direct messages with this user.
    #[serde(default)]
    pub with: Option<String>,
    /// Which page, from 1.
    #[serde(default)]
    pub page: Option<i64>,
    /// Results per page (1..=100, default 20).
    #[serde(default)]
    pub rows: Option<i64>,
}

/// Most messages one `history` answer holds.
pub const MAX_HISTORY_LIMIT: i64 = 100;
/// Messages in a `history` answer when no `limit` is given.
pub const DEFAULT_HISTORY_LIMIT: i64 = 50;
/// Most results on one `search` page.
pub const MAX_SEARCH_ROWS: i64 = 100;
/// Results on a `search` page when no `rows` is given.
pub const DEFAULT_SEARCH_ROWS: i64 = 20;
/// Most terms one search may have: each is a lookup in the index.
pub const MAX_SEARCH_TERMS: usize = 16;

/// Translates a user's search text into an FTS5 expression that cannot be
/// anything but a conjunction of terms: every word becomes a quoted
/// string (`"word"`), a word ending in `*` a quoted prefix (`"wor"*`), and
/// text between double quotes a quoted phrase. No FTS5 operator, column
/// filter or bracket the user typed survives, so the engine never sees
/// syntax it could refuse or be steered by. Characters the tokenizer
/// would split on anyway separate words. Returns why not when nothing is
/// left to search for or there are too many terms.
pub fn fts_expression(query: &str) -> Result<String, String> {
    let mut terms: Vec<String> = Vec::new();
    let push = |words: &str, prefix: bool, terms: &mut Vec<String>| {
        // Only letters, digits and spaces: the rest separates words.
        let cleaned: String = words
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect();
        let words: Vec<&str> = cleaned.split_whitespace().collect();
        if words.is_empty() {
            return;
        }
        let phrase = words.join(" ");
        terms.push(if prefix {
            format!("\"{phrase}\"*")
        } else {
            format!("\"{phrase}\"")
        });
    };
    let mut rest = query;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('"') {
            // A phrase up to the next quote (or the end).
            let (phrase, tail) = match after.find('"') {
                Some(end) => (&after[..end], &after[end + 1..]),
                None => (after, ""),
            };
            push(phrase, false, &mut terms);
            rest = tail;
            continue;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        let word = &rest[..end];
        rest = rest[end..].trim_start_matches(char::is_whitespace);
        if word.is_empty() {
            continue;
        }
        match word.strip_suffix('*') {
            // A prefix is one word: "foo-ba*" is foo AND ba*.
            Some(stem) => {
                let cleaned: String = stem
                    .chars()
                    .map(|c| if c.is_alphanumeric() { c } else { ' ' })
                    .collect();
                let mut parts: Vec<&str> = cleaned.split_whitespace().collect();
                if let Some(last) = parts.pop() {
                    for p in parts {
                        push(p, false, &mut terms);
                    }
                    push(last, true, &mut terms);
                }
            }
            None => {
                for part in word
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|p| !p.is_empty())
                {
                    push(part, false, &mut terms);
                }
            }
        }
    }
    if terms.is_empty() {
        return Err("Nothing to search for: give at least one word.".to_owned());
    }
    if terms.len() > MAX_SEARCH_TERMS {
        return Err(format!(
            "A search has at most {MAX_SEARCH_TERMS} words and phrases (this one has {}).",
            terms.len()
        ));
    }
    Ok(terms.join(" "))
}

/// The text and attachments of a message or direct message, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Content {
    /// The text: may be empty only when there are attachments.
    pub text: String,
    /// The attachments, validated.
    pub attachments: Vec<Attachment>,
}

impl Content {
    /// Checks `text` and the `attachments` member as the client sent it:
    /// the text follows the message rules (it may be empty beside an
    /// attachment), each attachment the rules of
    /// [`crate::wire::protocol::validate_attachments`]. The error names
    /// what is wrong.
    pub fn check(
        text: String,
        attachments: Option<&serde_json::Value>,
        max_bytes: usize,
    ) -> Result<Content, ChatError> {
        let attachments = match attachments {
            None => Vec::new(),
            Some(value) => validate_attachments(value).map_err(ChatError)?,
        };
        if !text.is_empty() || attachments.is_empty() {
            validate_message(&text, max_bytes).map_err(ChatError)?;
        }
        Ok(Content { text, attachments })
    }

    /// The attachments as the store keeps them: a JSON array, or `None`.
    pub(super) fn stored(&self) -> Option<String> {
        if self.attachments.is_empty() {
            return None;
        }
        serde_json::to_string(&self.attachments).ok()
    }

    /// The attachments as a `message` package carries them.
    pub(super) fn shown(&self) -> Option<Vec<Attachment>> {
        (!self.attachments.is_empty()).then(|| self.attachments.clone())
    }
}

/// The attachments of a stored message (its JSON array), as packages carry
/// them; `None` when there are none (or the column holds something else).
pub fn stored_attachments(json: Option<&str>) -> Option<Vec<Attachment>> {
    json.and_then(|json| serde_json::from_str::<Vec<Attachment>>(json).ok())
        .filter(|a| !a.is_empty())
}

/// A stored message as history and search show it; `placed`: with its
/// channel, or its recipient for a direct message.
fn shown(m: StoredMessage, placed: bool) -> HistoryMessage {
    let attachments = stored_attachments(m.attachments.as_deref());
    HistoryMessage {
        id: m.id,
        username: m.sender,
        message: m.text,
        timestamp: m.timestamp,
        edited: m.edited,
        attachments,
        to: m.direct.as_ref().map(|d| d.recipient.clone()),
        channel: (placed && m.direct.is_none()).then_some(m.channel),
    }
}

/// Encodes the package `build` makes of the first `n` of `len` items (or
/// the last `n`, `from_end`), dropping items until it fits both the
/// inflated limit and the frame limit. Returns the bytes and how many
/// items made it.
fn fit<F>(
    config: &Config,
    len: usize,
    from_end: bool,
    mut build: F,
) -> Result<(Bytes, usize), EncodeError>
where
    F: FnMut(std::ops::Range<usize>) -> ServerPackage,
{
    let mut n = len;
    loop {
        let range = if from_end { len - n..len } else { 0..n };
        let package = build(range);
        match codec::encode_packed(
            &package,
            config.max_package_bytes,
            config.compression_level,
            config.compress_min_bytes,
        ) {
            // The frame's body is what `max_frame_bytes` bounds.
            Ok(bytes) if bytes.len().saturating_sub(4) <= config.max_frame_bytes => {
                return Ok((bytes, n))
            }
            Ok(_) | Err(EncodeError::TooLarge { .. }) if n > 0 => {
                // Drop a quarter (at least one): a few encodings at most.
                n -= (n / 4).max(1);
            }
            Ok(_) => {
                return Err(EncodeError::TooLarge {
                    len: 0,
                    max: config.max_frame_bytes,
                })
            }
            Err(e) => return Err(e),
        }
    }
}

impl Hub {
    /// Runs a store read on the blocking pool, on the store's read
    /// connections, at most `read_calls` at once server-wide (the rest
    /// wait their turn, as parked tasks). Never under the chat lock.
    pub async fn read<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self
            .shared
            .reads
            .acquire()
            .await
            .map_err(|_| StoreError::Backend("the store is closing".into()))?;
        let store = Arc::clone(&self.shared.store);
        tokio::task::spawn_blocking(move || call(store.as_ref()))
            .await
            .map_err(|e| StoreError::Backend(format!("store read failed: {e}")))?
    }

    /// Whether `id` is a server operator (`--oper`), who may delete any
    /// message.
    pub fn is_operator(&self, id: UserId) -> bool {
        self.is_oper(id)
    }

    /// The folded key and display name of `channel` if `id` may read its
    /// messages: anyone a public channel's, a private channel's only its
    /// members and the accounts admitted to it (its owner account too).
    pub fn readable_channel(
        &self,
        id: UserId,
        channel: &str,
    ) -> Result<(String, String), ChatError> {
        let g = self.lock();
        let user = g.user(id)?;
        let key = fold_name(channel);
        match g.state.channels.get(&key) {
            Some(ch) if may_read(ch, &key, user) => Ok((key, ch.name.clone())),
            Some(ch) => fail(format!(
                "{} is private: only its members can read its messages.",
                ch.name
            )),
            None => fail(format!("There is no channel named {channel}.")),
        }
    }

    /// The channels whose messages `id` may search: `channel` alone if
    /// given (refused as [`Hub::readable_channel`] refuses), else every
    /// channel but the private ones it may not read.
    pub fn search_scope(&self, id: UserId, channel: Option<&str>) -> Result<Scope, ChatError> {
        if let Some(channel) = channel {
            return self
                .readable_channel(id, channel)
                .map(|(key, _)| Scope::Only(vec![key]));
        }
        let mut g = self.lock();
        let state = &mut *g.state;
        forget_done_purges(&mut state.purging);
        let Some(user) = state.users.get(&id) else {
            return fail("You are not logged in.");
        };
        // Channels that went and whose messages are not deleted yet are
        // left out too: they may have been private.
        let gone = state.pending_purges.keys().chain(state.purging.keys());
        Ok(Scope::Except(
            state
                .channels
                .iter()
                .filter(|(key, ch)| !may_read(ch, key, user))
                .map(|(key, _)| key)
                .chain(gone)
                .cloned()
                .collect(),
        ))
    }

    /// Whether `id` wrote `m`: an account's messages are its account's; a
    /// guest's are the current guest's of that name, from its login on.
    fn is_author(user: &User, m: &StoredMessage) -> bool {
        match m.account {
            Some(account) => user.account == Some(account),
            None => fold_name(&user.name) == m.sender_key && m.id >= user.first_message,
        }
    }

    /// Checks that `id` may edit `m` (only its author may).
    pub fn check_edit(&self, id: UserId, m: &StoredMessage) -> Result<(), ChatError> {
        let g = self.lock();
        let user = g.user(id)?;
        if Hub::is_author(user, m) {
            Ok(())
        } else {
            fail(format!("Message {} is not yours to edit.", m.id))
        }
    }

    /// Checks that `id` may delete `m` (its author, the owner of its
    /// channel, or a server operator) and returns the name it deletes
    /// under.
    pub fn check_delete(&self, id: UserId, m: &StoredMessage) -> Result<String, ChatError> {
        let operator = self.is_operator(id);
        let g = self.lock();
        let user = g.user(id)?;
        let owner = g
            .state
            .channels
            .get(&m.channel_key)
            .is_some_and(|ch| match &ch.registered {
                Some(reg) => user.account == Some(reg.owner),
                None => ch.owner == Some(id),
            });
        if Hub::is_author(user, m) || owner || operator {
            Ok(user.name.clone())
        } else {
            fail(format!(
                "Message {} is not yours: only its author, the channel's owner or a server operator can delete it.",
                m.id
            ))
        }
    }

    /// The text limit an edit is checked against.
    pub fn max_message_bytes(&self) -> usize {
        self.config().max_message_bytes
    }

    /// The display name of channel `key` now, if it exists.
    pub fn channel_name(&self, key: &str) -> Option<String> {
        self.lock()
            .state
            .channels
            .get(key)
            .map(|ch| ch.name.clone())
    }

    /// `id` as a party to direct conversations.
    pub fn party(&self, id: UserId) -> Result<Party, ChatError> {
        let g = self.lock();
        let user = g.user(id)?;
        Ok(Party {
            account: user.account,
            key: fold_name(&user.name),
            name: user.name.clone(),
            from: if user.account.is_some() {
                0
            } else {
                user.first_message
            },
        })
    }

    /// The user online under `name`, as a party (its `from` is its own).
    pub fn online_party(&self, name: &str) -> Option<Party> {
        let g = self.lock();
        let id = g.state.names.get(&fold_name(name))?;
        let user = g.state.users.get(id)?;
        Some(Party {
            account: user.account,
            key: fold_name(&user.name),
            name: user.name.clone(),
            from: user.first_message,
        })
    }

    /// Tells the two parties of the direct message `m` who are online (a
    /// guest only if it is the one of that name who was there when `m` was
    /// sent) and `requester` about a change to it.
    pub fn announce_direct_change(
        &self,
        requester: UserId,
        m: &StoredMessage,
        package: &ServerPackage,
    ) {
        let mut g = self.lock();
        let state = &*g.state;
        let find = |account: Option<AccountId>, key: &str| -> Option<UserId> {
            match account {
                Some(a) => state.online_accounts.get(&a).copied(),
                None => state
                    .names
                    .get(key)
                    .copied()
                    .filter(|u| state.users.get(u).is_some_and(|u| u.first_message <= m.id)),
            }
        };
        let mut told = vec![requester];
        told.extend(find(m.account, &m.sender_key));
        if let Some(d) = &m.direct {
            told.extend(find(d.recipient_account, &d.recipient_key));
        }
        told.sort_unstable();
        told.dedup();
        for id in told {
            g.send_to(id, package);
            // A party on another node is told by that node.
            let home = g.state.users.get(&id).and_then(|u| u.home.clone());
            if let (Some(home), Some(cluster)) = (home, g.cluster) {
                if let Some(bytes) = encode_with(&g.config, package) {
                    cluster.publish_direct(&home, id, m.id, bytes);
                }
            }
        }
        g.finish();
    }

    /// Tells everyone who can see channel `key`'s messages now (its
    /// members) and `requester` (who may have left it) about a change.
    pub fn announce_change(&self, requester: UserId, key: &str, package: &ServerPackage) {
        let mut g = self.lock();
        let member = g
            .state
            .channels
            .get(key)
            .is_some_and(|ch| ch.members.iter().any(|m| m.id == requester));
        g.send_to_channel(key, None, package);
        if !member {
            g.send_to(requester, package);
        }
        // The channel's members on other nodes are told by theirs.
        if let Some(cluster) = g.cluster {
            if let Some(bytes) = encode_with(&g.config, package) {
                cluster.publish_channel(key, "", bytes);
            }
        }
        g.finish();
    }

    /// Sends `id` a page of channel history, as many of its messages as
    /// fit the package limits: those nearest the page's anchor are kept
    /// (the newest when reading backwards, the oldest when reading
    /// forwards), and `more` is set when any were left out.
    pub fn send_history(&self, id: UserId, place: Place, page: HistoryPage, forward: bool) {
        let config = self.config();
        let HistoryPage { messages, more } = page;
        let shown: Vec<HistoryMessage> = messages.into_iter().map(|m| shown(m, false)).collect();
        let len = shown.len();
        let encoded = fit(&config, len, !forward, |range| {
            let kept = range.len();
            let (channel, with) = match &place {
                Place::Channel(c) => (Some(c.clone()), None),
                Place::With(w) => (None, Some(w.clone())),
            };
            ServerPackage::notification(Notification::History {
                channel,
                with,
                messages: shown[range].to_vec(),
                more: more || kept < len,
            })
        });
        self.send_encoded(id, encoded.map(|(bytes, _)| bytes));
    }

    /// Sends `id` a page of search results, cut (and marked `truncated`)
    /// if they do not fit the package limits.
    pub fn send_search(
        &self,
        id: UserId,
        query: String,
        page: usize,
        rows: usize,
        hits: SearchHits,
    ) {
        let config = self.config();
        let SearchHits { total, messages } = hits;
        let shown: Vec<HistoryMessage> = messages.into_iter().map(|m| shown(m, true)).collect();
        let len = shown.len();
        let encoded = fit(&config, len, false, |range| {
            let kept = range.len();
            ServerPackage::notification(Notification::SearchResults {
                query: query.clone(),
                page,
                rows,
                total,
                messages: shown[range].to_vec(),
                truncated: (kept < len).then_some(true),
            })
        });
        self.send_encoded(id, encoded.map(|(bytes, _)| bytes));
    }

    fn send_encoded(&self, id: UserId, encoded: Result<Bytes, EncodeError>) {
        let mut g = self.lock();
        match encoded {
            Ok(bytes) => g.send_bytes(id, bytes),
            Err(e) => {
                tracing::error!(error = %e, "could not encode an answer");
                g.send_to(
                    id,
                    &ServerPackage::error("server", "The answer does not fit the package limits."),
                );
            }
        }
        g.finish();
    }

    /// Sends `id` one package (an answer).
    pub fn reply(&self, id: UserId, package: &ServerPackage) {
        let mut g = self.lock();
        g.send_to(id, package);
        g.finish();
    }

    /// What `mark_read {channel, id}` stores for `id`: its account, the
    /// registered channel's store id and display name, and the id (no
    /// higher than the last message handed out).
    pub fn read_mark(
        &self,
        id: UserId,
        channel: &str,
        last_id: MessageId,
    ) -> Result<(Change, String, MessageId), ChatError> {
        let g = self.lock();
        let user = g.user(id)?;
        let Some(account) = user.account else {
            return fail("Read marks are kept for accounts: register your name first.");
        };
        let key = fold_name(channel);
        let Some(ch) = g.state.channels.get(&key) else {
            return fail(format!("There is no channel named {channel}."));
        };
        let Some(reg) = &ch.registered else {
            return fail(format!(
                "{} is not a registered channel: read marks are kept for those only.",
                ch.name
            ));
        };
        if !may_read(ch, &key, user) {
            return fail(format!(
                "{} is private: only its members can read its messages.",
                ch.name
            ));
        }
        if last_id < 0 {
            return fail("A message id is not negative.");
        }
        let last_id = last_id.min(g.state.peek_message_id() - 1);
        Ok((
            Change::MarkRead {
                account,
                channel: reg.id,
                last_id,
            },
            ch.name.clone(),
            last_id,
        ))
    }

    /// Runs the memory's background work until `stop`: read marks and
    /// purges an operation could not queue (the writer's queue was full)
    /// are queued, waiting for room; and with `history_days` set, old
    /// messages are expired at start and every minute, in bounded steps
    /// on the writer, between its batches.
    pub async fn run_memory(self, stop: CancellationToken) {
        let mut pending = tokio::time::interval(PENDING_TICK);
        pending.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut expire = tokio::time::interval(EXPIRE_EVERY);
        expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = pending.tick() => self.queue_left_over().await,
                _ = expire.tick() => self.expire_round(&stop).await,
            }
        }
    }

    async fn queue_left_over(&self) {
        let (purges, marks) = {
            let mut g = self.lock();
            let state = &mut *g.state;
            forget_done_purges(&mut state.purging);
            let mut purges = Vec::with_capacity(state.pending_purges.len());
            for (channel_key, up_to) in state.pending_purges.drain() {
                // Searches keep leaving the channel out until it is done.
                let (done, applied) = tokio::sync::oneshot::channel();
                state.purging.insert(channel_key.clone(), applied);
                purges.push((Change::Purge { channel_key, up_to }, done));
            }
            let marks: Vec<Change> = state
                .pending_marks
                .drain()
                .map(|((account, channel), last_id)| Change::MarkRead {
                    account,
                    channel,
                    last_id,
                })
                .collect();
            (purges, marks)
        };
        for (change, done) in purges {
            if self.journal().clone().queue(change, done).await.is_err() {
                tracing::error!("cannot queue a purge: the store's writer has stopped");
            }
        }
        for change in marks {
            if let Err(e) = self.journal().clone().change(change).await {
                tracing::error!(error = %e, "cannot store a read mark");
            }
        }
    }

    /// Deletes the messages older than `history_days`, a step at a time.
    async fn expire_round(&self, stop: &CancellationToken) {
        let days = self.config().history_days;
        if days == 0 {
            return;
        }
        let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        let before = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut expired = 0;
        for _ in 0..EXPIRE_STEPS_PER_ROUND {
            if stop.is_cancelled() {
                break;
            }
            let change = Change::Expire {
                before: before.clone(),
                limit: EXPIRE_STEP,
            };
            match self.journal().clone().change(change).await {
                Ok(n) => {
                    expired += n;
                    if n == 0 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot expire old messages");
                    break;
                }
            }
        }
        if expired > 0 {
            tracing::info!(messages = expired, days, "old messages expired");
        }
    }
}

/// Drops the purges the writer has applied (or given up on) from `purging`.
fn forget_done_purges(
    purging: &mut HashMap<String, tokio::sync::oneshot::Receiver<Result<usize, StoreError>>>,
) {
    purging.retain(|_, applied| {
        matches!(
            applied.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        )
    });
}

/// Whether `user` may read the messages of channel `ch` (folded `key`).
fn may_read(ch: &Channel, key: &str, user: &User) -> bool {
    !ch.private || user.channel == key || admitted(ch, user.account)
}

impl Guard<'_> {
    /// Queues the read marks and purges the operation left for the
    /// writer, as far as its queue has room now; what does not fit stays
    /// for the memory task ([`Hub::run_memory`]).
    pub(super) fn queue_pending(&mut self) {
        let state = &mut *self.state;
        if state.pending_marks.is_empty() && state.pending_purges.is_empty() {
            return;
        }
        forget_done_purges(&mut state.purging);
        let purges: Vec<String> = state.pending_purges.keys().cloned().collect();
        for key in purges {
            let Ok(slot) = self.journal.try_slot() else {
                return;
            };
            if let Some(up_to) = state.pending_purges.remove(&key) {
                let (done, applied) = tokio::sync::oneshot::channel();
                state.purging.insert(key.clone(), applied);
                slot.send(Job::Change {
                    change: Change::Purge {
                        channel_key: key,
                        up_to,
                    },
                    done: Some(done),
                });
            }
        }
        let marks: Vec<(AccountId, ChannelId)> = state.pending_marks.keys().copied().collect();
        for (account, channel) in marks {
            let Ok(slot) = self.journal.try_slot() else {
                return;
            };
            if let Some(last_id) = state.pending_marks.remove(&(account, channel)) {
                slot.send(Job::Change {
                    change: Change::MarkRead {
                        account,
                        channel,
                        last_id,
                    },
                    done: None,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fts_expression;

    #[test]
    fn search_text_becomes_quoted_terms() {
        assert_eq!(fts_expression("hello world").unwrap(), r#""hello" "world""#);
        assert_eq!(fts_expression("foo*").unwrap(), r#""foo"*"#);
        assert_eq!(
            fts_expression(r#"say "two words" now"#).unwrap(),
            r#""say" "two words" "now""#
        );
        // FTS5 syntax is only text: operators, columns, brackets, carets.
        assert_eq!(
            fts_expression("a OR b NOT c").unwrap(),
            r#""a" "OR" "b" "NOT" "c""#
        );
        assert_eq!(fts_expression("text:foo").unwrap(), r#""text" "foo""#);
        assert_eq!(
            fts_expression("(x) ^y NEAR(z)").unwrap(),
            r#""x" "y" "NEAR" "z""#
        );
        assert_eq!(
            fts_expression(r#"un"closed phrase"#).unwrap(),
            r#""un" "closed phrase""#
        );
        assert_eq!(fts_expression("foo-ba*").unwrap(), r#""foo" "ba"*"#);
        assert_eq!(fts_expression("Café").unwrap(), r#""Café""#);
        for nothing in ["", "   ", "*", "\"\"", "-- ()", "\"", "***"] {
            assert!(fts_expression(nothing).is_err(), "{nothing:?}");
        }
        assert!(fts_expression(&"w ".repeat(17)).is_err());
    }
}

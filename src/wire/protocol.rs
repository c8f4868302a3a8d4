//! Protocol types: the JSON packages of both directions, as strict serde
//! types whose field names *are* the wire format.
//!
//! One enum per direction: [`ClientPackage`] is what a client may send,
//! [`ServerPackage`] what the server sends. Both serialize as
//! `{"type": ..., "data": {...}}`. Client input is parsed strictly (unknown
//! fields are errors, in the envelope as in `data`) because a silently
//! ignored typo is a bug report waiting to happen. Server packages are
//! parsed leniently (unknown members are ignored, in the envelope as in
//! `data`), as protocol.md asks of every client: a later server may add
//! optional members without breaking this client. The unit tests below pin
//! the exact JSON of each variant so a refactor cannot change the public
//! contract by accident.

use serde::{Deserialize, Serialize};

/// A package sent by a client. The envelope is closed: a member other than
/// `type` and `data` is an error, like an unknown member of `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "data",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum ClientPackage {
    /// Chat text for the sender's current channel.
    #[serde(deserialize_with = "object_only")]
    Message(OutgoingMessage),
    /// A command such as `login`, `join` or `rename`.
    #[serde(deserialize_with = "object_only")]
    Command(Command),
}

/// Deserializes a struct from a JSON object only. serde's derived structs
/// also accept an array of their fields in order (`"data": ["hi"]`), which
/// the protocol does not allow: `data` is always an object.
fn object_only<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectVisitor<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
}

/// `data` of a client's `message` package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutgoingMessage {
    /// The text: 1..=`max_message_bytes` bytes, no control characters but
    /// `\n` and `\t`; may be empty when attachments are present.
    pub message: String,
    /// Image and video links: kept loosely typed here so that a bad one is
    /// a `message` error naming the field ([`validate_attachments`]), not
    /// a `protocol` error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<serde_json::Value>,
}

impl OutgoingMessage {
    /// Plain text, no attachments.
    pub fn text(message: impl Into<String>) -> Self {
        OutgoingMessage {
            message: message.into(),
            attachments: None,
        }
    }
}

/// Most attachments on one message.
pub const MAX_ATTACHMENTS: usize = 4;
/// Longest attachment `url`, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Largest `width`, `height` or `length` of an attachment.
pub const MAX_ATTACHMENT_NUMBER: u64 = 100_000;
/// Longest video `source`, in characters.
pub const MAX_SOURCE_CHARS: usize = 100;

/// An image or video link carried by a message, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Attachment {
    /// A picture.
    Image {
        /// `http://` or `https://`.
        url: String,
        /// Pixels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        /// Pixels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
    },
    /// A video.
    Video {
        /// `http://` or `https://`.
        url: String,
        /// Where it comes from (a site, a camera), as text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// Seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        length: Option<u32>,
    },
}

/// Checks a message's `attachments` member against the rules (at most
/// [`MAX_ATTACHMENTS`], each an image or a video with an `http(s)` URL of
/// at most [`MAX_URL_BYTES`] bytes without whitespace or control
/// characters, numbers 1..=[`MAX_ATTACHMENT_NUMBER`], a `source` that is
/// valid message text of at most [`MAX_SOURCE_CHARS`] characters).
/// Returns the attachments, or why not, naming the field.
pub fn validate_attachments(value: &serde_json::Value) -> Result<Vec<Attachment>, String> {
    use serde_json::Value;
    let Value::Array(items) = value else {
        return Err("attachments: must be an array".to_owned());
    };
    if items.len() > MAX_ATTACHMENTS {
        return Err(format!(
            "attachments: at most {MAX_ATTACHMENTS} (this message has {})",
            items.len()
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| format!("attachments[{i}].{name}");
        let Value::Object(map) = item else {
            return Err(format!("attachments[{i}]: must be an object"));
        };
        let kind = match map.get("type") {
            Some(Value::String(t)) if t == "image" || t == "video" => t.as_str(),
            Some(_) => return Err(format!("{}: must be \"image\" or \"video\"", field("type"))),
            None => return Err(format!("{}: missing", field("type"))),
        };
        let allowed: &[&str] = if kind == "image" {
            &["type", "url", "width", "height"]
        } else {
            &["type", "url", "source", "length"]
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "{}: unknown member for a{} {kind}",
                field(&unknown.escape_default().to_string()),
                if kind == "image" { "n" } else { "" }
            ));
        }
        let url = match map.get("url") {
            Some(Value::String(u)) => {
                check_url(u).map_err(|why| format!("{}: {why}", field("url")))?
            }
            Some(_) => return Err(format!("{}: must be a string", field("url"))),
            None => return Err(format!("{}: missing", field("url"))),
        };
        let number = |name: &str| -> Result<Option<u32>, String> {
            match map.get(name) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if (1..=MAX_ATTACHMENT_NUMBER).contains(&n) => {
                        Ok(u32::try_from(n).ok())
                    }
                    _ => Err(format!(
                        "{}: must be a whole number from 1 to {MAX_ATTACHMENT_NUMBER}",
                        field(name)
                    )),
                },
            }
        };
        out.push(if kind == "image" {
            Attachment::Image {
                url,
                width: number("width")?,
                height: number("height")?,
            }
        } else {
            let source = match map.get("source") {
                None => None,
                Some(Value::String(s)) => {
                    let chars = s.chars().count();
                    if chars > MAX_SOURCE_CHARS {
                        return Err(format!(
                            "{}: at most {MAX_SOURCE_CHARS} characters (this one has {chars})",
                            field("source")
                        ));
                    }
                    validate_message(s, usize::MAX).map_err(|why| {
                        format!("{}: {}", field("source"), why.replace("a message", "it"))
                    })?;
                    Some(s.clone())
                }
                Some(_) => return Err(format!("{}: must be a string", field("source"))),
            };
            Attachment::Video {
                url,
                source,
                length: number("length")?,
            }
        });
    }
    Ok(out)
}

/// Checks an attachment URL: `http://` or `https://` (any case), at most
/// [`MAX_URL_BYTES`] bytes, something after the scheme, no whitespace or
/// control characters.
fn check_url(url: &str) -> Result<String, String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!(
            "at most {MAX_URL_BYTES} bytes (this one has {})",
            url.len()
        ));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return Err("must start with http:// or https://".to_owned());
    };
    if rest.is_empty() {
        return Err("names no host".to_owned());
    }
    if let Some(bad) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "may not contain whitespace or control characters (found U+{:04X})",
            bad as u32
        ));
    }
    Ok(url.to_owned())
}

/// `data` of a `command` package. The parameters stay loosely typed here
/// because their shape depends on the command; the command table parses
/// them strictly once it knows which command this is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The command name, e.g. `join`.
    pub command: String,
    /// Command arguments; absent or `null` for commands that take none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

impl Command {
    /// A command with the given parameters object.
    pub fn new(command: &str, parameters: Option<serde_json::Value>) -> Self {
        Command {
            command: command.to_owned(),
            parameters,
        }
    }
}

/// A package sent by the server. Deliberately open, envelope and `data`
/// alike: members this version does not know are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ServerPackage {
    /// The server asks the client for something (today only `login`).
    Request(Request),
    /// The answer to a `login` command.
    Session(Session),
    /// Something happened that concerns this client.
    Notification(Notification),
    /// A package or command of this client's failed.
    Error(ErrorData),
    /// Somebody's chat message.
    Message(ChatMessage),
}

/// `data` of a `request` package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// What is requested: `"login"`.
    pub request: String,
}

impl Request {
    /// The request sent on connect and after a refused login.
    pub fn login() -> Self {
        Request {
            request: "login".to_owned(),
        }
    }
}

/// `data` of a `session` package. On success `username`, `channel`,
/// `channels` and `channels_total` are set; on failure only `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Session {
    /// Whether the login succeeded.
    pub status: bool,
    /// The name as registered (the spelling the user chose).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Whether the user is logged in to an account (on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<bool>,
    /// The channel the user is now in (`general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// How many public channels exist in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels_total: Option<usize>,
    /// Public channel names, sorted, at most `max_list_names`. Last, so the
    /// server can splice in a list it compressed once for many sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Why the login was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set on a refusal when the name is registered and the login needs
    /// its password (it was missing or wrong): a client may prompt for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_required: Option<bool>,
    /// An account's registered channels with messages it has not seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<Vec<UnreadCount>>,
}

impl Session {
    /// A successful login: `username` is now in `channel`; `channels` is the
    /// (capped) list of public channels and `channels_total` their number.
    pub fn accepted(
        username: &str,
        channel: &str,
        channels: Vec<String>,
        channels_total: usize,
    ) -> Self {
        Session {
            status: true,
            username: Some(username.to_owned()),
            channel: Some(channel.to_owned()),
            channels: Some(channels),
            channels_total: Some(channels_total),
            account: Some(false),
            reason: None,
            password_required: None,
            unread: None,
        }
    }

    /// The same session, saying whether it is logged in to an account.
    pub fn with_account(self, account: bool) -> Self {
        Session {
            account: Some(account),
            ..self
        }
    }

    /// A successful login without its `channels` list: the head that the
    /// server completes with a precompressed list
    /// ([`crate::wire::codec::encode_with_tail`]).
    pub fn accepted_without_list(username: &str, channel: &str, channels_total: usize) -> Self {
        Session {
            channels: None,
            ..Session::accepted(username, channel, Vec::new(), channels_total)
        }
    }

    /// A refused login, with the reason shown to the user.
    pub fn refused(reason: impl Into<String>) -> Self {
        Session {
            status: false,
            reason: Some(reason.into()),
            ..Session::default()
        }
    }

    /// A refused login to a registered name whose password was missing or
    /// wrong: the client may ask its user for the password.
    pub fn password_required(reason: impl Into<String>) -> Self {
        Session {
            password_required: Some(true),
            ..Session::refused(reason)
        }
    }
}

/// `data` of a `notification` package: the event type and its fields, flat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", rename_all = "snake_case")]
pub enum Notification {
    /// Someone joined a channel. The joiner's own copy carries the member list.
    UserJoined {
        /// Who joined.
        username: String,
        /// Which channel.
        channel: String,
        /// Members, sorted, at most `max_list_names` (joiner's copy only;
        /// the server sends it as the last member of `data`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        users: Option<Vec<String>>,
        /// How many members the channel has (joiner's copy only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        users_total: Option<usize>,
        /// The channel's owner, if it has one (joiner's copy only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// Whether the channel is private (joiner's copy only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        private: Option<bool>,
        /// The channel's topic (joiner's copy only, when it has one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    /// Someone left a channel (by `join`, `leave` or disconnecting, or
    /// kicked out).
    UserLeft {
        /// Who left.
        username: String,
        /// Which channel.
        channel: String,
        /// `true` when a moderator kicked (or banned) them out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kicked: Option<bool>,
    },
    /// Someone in the recipient's channel (or the recipient) changed name.
    UserRename {
        /// The name before.
        old_username: String,
        /// The name now.
        new_username: String,
    },
    /// How many members the recipient's channel has: sent instead of
    /// other people's `user_joined`, `user_left` and `user_rename` while
    /// the channel has more than `presence_limit` members, and once when
    /// it crosses that limit either way.
    ChannelStats {
        /// Which channel.
        channel: String,
        /// How many members it has now.
        users_total: usize,
    },
    /// The answer to `channels`.
    ChannelList {
        /// How many public channels exist in all.
        channels_total: usize,
        /// Public channel names, sorted, at most `max_list_names`.
        channels: Vec<String>,
    },
    /// The recipient's channel changed visibility, owner or topic.
    ChannelUpdate {
        /// Which channel.
        channel: String,
        /// Whether it is now private.
        private: bool,
        /// Its owner now (absent for `general`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// Present only when the topic changed: the new topic, `""` when
        /// it was cleared.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    /// The recipient was invited to a channel.
    Invited {
        /// Which channel.
        channel: String,
        /// Who invited.
        by: String,
    },
    /// The inviter's confirmation that an invitation was delivered.
    InviteSent {
        /// Which channel.
        channel: String,
        /// Who was invited.
        username: String,
    },
    /// The answer to `ping`: everything sent before it has been processed.
    Pong {
        /// The token given to `ping`, echoed back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// The sender's message is stored (committed): it survives a crash of
    /// the server from now on.
    MessageSent {
        /// The message's id, as its recipients got it.
        id: i64,
        /// The channel it was sent to (absent for a direct message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// The recipient of a direct message (absent for a channel message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Its timestamp, as its recipients got it.
        timestamp: String,
        /// Set when the recipient was offline: the message waits in the
        /// store for their next session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queued: Option<bool>,
        /// Set for `random`: the server chose the recipient.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        random: Option<bool>,
        /// The recipient's away text, when they have set one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        away: Option<String>,
    },
    /// The answer to `who`: online users, or a channel's members.
    Who {
        /// The channel asked about; `null` for everybody online.
        channel: Option<String>,
        /// Users sorted by folded name, at most `max_list_names`, after
        /// the `after` name if one was given.
        users: Vec<WhoEntry>,
        /// How many users the question matches in all (ignoring `after`).
        users_total: usize,
    },
    /// The answer to `whois`.
    Whois {
        /// The name as its owner spells it (as asked, when nobody has it).
        username: String,
        /// Whether somebody with that name is online.
        online: bool,
        /// Whether the name is an account.
        account: bool,
        /// The user's channel, when it is public or the asker's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// The user's away text, when set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        away: Option<String>,
        /// Whole seconds since the user's last message or command other
        /// than `ping` (online users only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idle_secs: Option<u64>,
    },
    /// The answer to `away`: the away text now in force (absent: cleared).
    Away {
        /// The text, when set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The answer to `ignore`, `unignore` and `ignores`: everyone the
    /// user ignores, sorted by folded name.
    IgnoreList {
        /// The ignored names, as they were given.
        usernames: Vec<String>,
    },
    /// The server is shutting down; the connection closes next.
    ServerShutdown {},
    /// The answer to `register`: the user's name is now an account.
    Registered {
        /// The registered name, as spelled.
        username: String,
    },
    /// The answer to `password`: the account's password is changed.
    PasswordChanged {},
    /// The answer to `history`: one page of a channel's messages, or of
    /// the direct messages with one user.
    History {
        /// The channel (absent for direct messages).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// The other party of the direct messages (absent for a channel).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// The messages, ascending by id.
        messages: Vec<HistoryMessage>,
        /// Whether more exist in the direction asked.
        more: bool,
    },
    /// The answer to `search`: one page of matches, newest first.
    SearchResults {
        /// The query as given.
        query: String,
        /// The page (from 1).
        page: usize,
        /// Results per page.
        rows: usize,
        /// Matches in all (counted up to a cap).
        total: usize,
        /// This page's matches, each with its `channel`.
        messages: Vec<HistoryMessage>,
        /// Set when the page was cut short to fit the package limits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        truncated: Option<bool>,
    },
    /// A message's text was edited.
    MessageEdited {
        /// Which message.
        id: i64,
        /// Its channel (absent for a direct message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// Its recipient, for a direct message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// The new text.
        message: String,
        /// When it was edited.
        edited: String,
    },
    /// A message was deleted.
    MessageDeleted {
        /// Which message.
        id: i64,
        /// Its channel (absent for a direct message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// Its recipient, for a direct message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Who deleted it.
        by: String,
    },
    /// The answer to `mark_read`.
    ReadMarked {
        /// The channel.
        channel: String,
        /// The last message id now counted as seen there.
        id: i64,
    },
    /// The answer to `group`: the private channel is made and the sender
    /// is in it.
    GroupCreated {
        /// The new channel.
        channel: String,
        /// Recipients who were online and got `invited`, as they spell
        /// their names.
        invited: Vec<String>,
        /// Recipients nobody online is called, as given.
        not_found: Vec<String>,
    },
    /// The recipient was put out of a channel by a moderator and is back
    /// in `general`.
    Kicked {
        /// The channel they were put out of.
        channel: String,
        /// The moderator.
        by: String,
        /// The moderator's reason, if one was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// `true` when it was a ban: joining again is refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        banned: Option<bool>,
    },
    /// The moderator's confirmation of `ban`.
    Banned {
        /// Which channel.
        channel: String,
        /// Who is banned, as the ban list shows it.
        username: String,
    },
    /// The moderator's confirmation of `unban`.
    Unbanned {
        /// Which channel.
        channel: String,
        /// Who may join again.
        username: String,
    },
    /// The answer to `bans`.
    BanList {
        /// Which channel.
        channel: String,
        /// Banned names, sorted, at most `max_list_names`.
        usernames: Vec<String>,
        /// How many bans the channel has in all.
        usernames_total: usize,
    },
    /// The recipient's channel was deleted; the recipient is in `general`
    /// now.
    ChannelDeleted {
        /// The channel that is gone.
        channel: String,
        /// Who deleted it.
        by: String,
    },
    /// A server operator's notice to everybody online.
    ServerNotice {
        /// The text.
        message: String,
        /// The operator.
        by: String,
    },
}

/// `data` of an `error` package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorData {
    /// The command that failed, or `message`, `login`, `protocol`, `server`;
    /// a client must expect types it does not know.
    pub error_type: String,
    /// Human-readable explanation.
    pub message: String,
}

/// One user in a `who` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoEntry {
    /// The name as its owner spells it.
    pub username: String,
    /// Whether the user is logged in to an account.
    pub account: bool,
    /// The user's channel, when it is public or the asker's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The user's away text, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<String>,
}

/// `data` of a server `message` package: chat text with its origin. A
/// channel message has `channel`; a direct message has `to` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The text as sent.
    pub message: String,
    /// Who sent it.
    pub username: String,
    /// Where it was sent (channel messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The recipient (direct messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// When the server accepted it: RFC 3339, UTC, milliseconds.
    pub timestamp: String,
    /// Unique on the server and increasing in the order messages are
    /// stored (a JSON integer).
    pub id: i64,
    /// Set on a direct message kept while its recipient was offline and
    /// delivered after their next login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<bool>,
    /// Image and video links sent with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
}

impl ChatMessage {
    /// Whether this is a direct message (it names a recipient, no channel).
    pub fn is_direct(&self) -> bool {
        self.to.is_some()
    }
}

/// A stored message as `history` and `search_results` carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// The message's id.
    pub id: i64,
    /// Who sent it (the name it was sent under).
    pub username: String,
    /// Its text now (after any edit).
    pub message: String,
    /// When the server accepted it.
    pub timestamp: String,
    /// When it was last edited, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<String>,
    /// Its attachments, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    /// Its channel (search results only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Its recipient, for a direct message (in search results, and in the
    /// history of a conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// An unread count in an account's `session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadCount {
    /// The registered channel.
    pub channel: String,
    /// Messages there newer than `last_id`.
    pub count: usize,
    /// The last message id the account saw there.
    pub last_id: i64,
}

impl ServerPackage {
    /// An `error` package.
    pub fn error(error_type: &str, message: impl Into<String>) -> Self {
        ServerPackage::Error(ErrorData {
            error_type: error_type.to_owned(),
            message: message.into(),
        })
    }

    /// A `notification` package.
    pub fn notification(n: Notification) -> Self {
        ServerPackage::Notification(n)
    }
}

/// Checks a user or channel name: 1..=`max_chars` characters, each a
/// Unicode letter or digit or one of `_ - .`. Returns why it is not valid.
pub fn validate_name(name: &str, max_chars: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".to_owned());
    }
    let count = name.chars().count();
    if count > max_chars {
        return Err(format!(
            "a name is at most {max_chars} characters (this one has {count})"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "a name may contain only letters, digits, '_', '-' and '.' (found {})",
            bad.escape_default()
        ));
    }
    Ok(())
}

/// The form names are compared in, as ergo compares nicknames: NFKC
/// normalisation, then full Unicode case folding, then NFKC again (folding
/// can undo normalisation). `Alice`, `ALICE` and fullwidth `ＡＬＩＣＥ` are one
/// name, and so are `Straße` and `strasse`.
pub fn fold_name(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let folded = caseless::default_case_fold_str(&name.nfkc().collect::<String>());
    folded.nfkc().collect()
}

/// The confusable skeleton of a name (Unicode TR39) after folding: two names
/// with the same skeleton look alike, such as `alice` and `аlice` with a
/// Cyrillic `а`. A new name whose skeleton matches another user's or a
/// registered account's is refused, so nobody can pass for someone else.
pub fn name_skeleton(name: &str) -> String {
    // Skeletons are case-sensitive (`I` is confusable with `l`), so fold
    // before and after: the skeleton of a folded name may hold capitals.
    let skeleton: String = unicode_security::skeleton(&fold_name(name)).collect();
    fold_name(&skeleton)
}

/// Checks a channel topic or a kick reason (`what` names it in the
/// error): at most `max_chars` characters (Unicode scalar values), under
/// the same rule as chat text (no control characters but newline and
/// tab). Empty is allowed: an empty topic clears it.
pub fn validate_short_text(text: &str, max_chars: usize, what: &str) -> Result<(), String> {
    let count = text.chars().count();
    if count > max_chars {
        return Err(format!(
            "a {what} is at most {max_chars} characters (this one has {count})"
        ));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(format!(
            "a {what} may not contain control characters (found U+{:04X})",
            bad as u32
        ));
    }
    Ok(())
}

/// Checks chat text: 1..=`max_bytes` bytes, no control characters but
/// newline and tab. Returns why it is not acceptable.
pub fn validate_message(text: &str, max_bytes: usize) -> Result<(), String> {
    if text.is_empty() {
        return Err("a message cannot be empty".to_owned());
    }
    if text.len() > max_bytes {
        return Err(format!(
            "a message is at most {max_bytes} bytes (this one has {})",
            text.len()
        ));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(format!(
            "a message may not contain control characters (found U+{:04X})",
            bad as u32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_value<T: Serialize>(t: &T) -> serde_json::Value {
        serde_json::to_value(t).unwrap()
    }

    #[test]
    fn client_packages_pin_their_json() {
        let login: ClientPackage = serde_json::from_value(json!({
            "type": "command",
            "data": {"command": "login", "parameters": {"username": "alice"}}
        }))
        .unwrap();
        assert_eq!(
            login,
            ClientPackage::Command(Command::new("login", Some(json!({"username": "alice"}))))
        );
        let leave: ClientPackage =
            serde_json::from_value(json!({"type": "command", "data": {"command": "leave"}}))
                .unwrap();
        assert_eq!(leave, ClientPackage::Command(Command::new("leave", None)));
        let msg = ClientPackage::Message(OutgoingMessage::text("Hello"));
        assert_eq!(
            to_value(&msg),
            json!({"type": "message", "data": {"message": "Hello"}})
        );
    }

    #[test]
    fn client_packages_are_strict() {
        for bad in [
            json!({"type": "message", "data": {"message": "x", "extra": 1}}),
            json!({"type": "message", "data": {"message": 5}}),
            json!({"type": "message", "data": {}}),
            json!({"type": "session", "data": {"status": true}}),
            json!({"type": "command", "data": {"parameters": {}}}),
            json!({"type": "command"}),
            json!({"data": {"message": "x"}}),
            json!({"type": "message", "data": ["x"]}),
            json!({"type": "command", "data": ["join", {"channel": "x"}]}),
            // The envelope is closed too, wherever the stray member is.
            json!({"type": "command", "data": {"command": "channels"}, "extra": 1}),
            json!({"extra": 1, "type": "message", "data": {"message": "x"}}),
            json!({"type": "message", "extra": null, "data": {"message": "x"}}),
        ] {
            assert!(
                serde_json::from_value::<ClientPackage>(bad.clone()).is_err(),
                "accepted {bad}"
            );
        }
    }

    #[test]
    fn unknown_envelope_members_are_named_in_the_error() {
        let err = serde_json::from_str::<ClientPackage>(
            r#"{"type":"command","data":{"command":"channels"},"extra":1}"#,
        )
        .unwrap_err()
        .to_string();
        // serde's wording for adjacently tagged enums: it names the member
        // and the two that are allowed.
        assert!(
            err.contains(r#""extra", expected "type" or "data""#),
            "{err}"
        );
    }

    #[test]
    fn server_packages_are_read_leniently() {
        // What a later server may add: members in the envelope and in data.
        let pong: ServerPackage = serde_json::from_value(json!({
            "type": "notification",
            "id": 7,
            "data": {"event_type": "pong", "token": "t", "server_time": 1}
        }))
        .unwrap();
        assert_eq!(
            pong,
            ServerPackage::notification(Notification::Pong {
                token: Some("t".into())
            })
        );
        let error: ServerPackage = serde_json::from_value(json!({
            "type": "error",
            "data": {"error_type": "slow_down", "message": "m", "retry_after_ms": 50}
        }))
        .unwrap();
        assert_eq!(error, ServerPackage::error("slow_down", "m"));
        let session: ServerPackage = serde_json::from_value(json!({
            "type": "session",
            "data": {"status": false, "reason": "r", "hint": "h"}
        }))
        .unwrap();
        assert_eq!(session, ServerPackage::Session(Session::refused("r")));
    }

    #[test]
    fn server_packages_pin_their_json() {
        let cases = [
            (
                ServerPackage::Request(Request::login()),
                json!({"type": "request", "data": {"request": "login"}}),
            ),
            (
                ServerPackage::Session(Session::accepted(
                    "alice",
                    "general",
                    vec!["general".into()],
                    1,
                )),
                json!({"type": "session", "data": {"status": true, "username": "alice",
                    "channel": "general", "channels": ["general"], "channels_total": 1,
                    "account": false}}),
            ),
            (
                ServerPackage::Session(
                    Session::accepted("bob", "general", vec![], 1).with_account(true),
                ),
                json!({"type": "session", "data": {"status": true, "username": "bob",
                    "channel": "general", "channels": [], "channels_total": 1,
                    "account": true}}),
            ),
            (
                ServerPackage::Session(Session::refused("Username is already taken.")),
                json!({"type": "session", "data": {"status": false, "reason": "Username is already taken."}}),
            ),
            (
                ServerPackage::Session(Session::password_required(
                    "bob is registered: give its password.",
                )),
                json!({"type": "session", "data": {"status": false,
                    "reason": "bob is registered: give its password.", "password_required": true}}),
            ),
            (
                ServerPackage::notification(Notification::Registered {
                    username: "bob".into(),
                }),
                json!({"type": "notification", "data": {"event_type": "registered", "username": "bob"}}),
            ),
            (
                ServerPackage::notification(Notification::PasswordChanged {}),
                json!({"type": "notification", "data": {"event_type": "password_changed"}}),
            ),
            (
                ServerPackage::notification(Notification::UserJoined {
                    username: "bob".into(),
                    channel: "rust".into(),
                    users: None,
                    users_total: None,
                    owner: None,
                    private: None,
                    topic: None,
                }),
                json!({"type": "notification", "data": {"event_type": "user_joined", "username": "bob", "channel": "rust"}}),
            ),
            (
                ServerPackage::notification(Notification::UserRename {
                    old_username: "bob".into(),
                    new_username: "robert".into(),
                }),
                json!({"type": "notification", "data": {"event_type": "user_rename", "old_username": "bob", "new_username": "robert"}}),
            ),
            (
                ServerPackage::notification(Notification::ChannelUpdate {
                    channel: "rust".into(),
                    private: true,
                    owner: Some("bob".into()),
                    topic: None,
                }),
                json!({"type": "notification", "data": {"event_type": "channel_update", "channel": "rust", "private": true, "owner": "bob"}}),
            ),
            (
                ServerPackage::notification(Notification::ChannelUpdate {
                    channel: "rust".into(),
                    private: false,
                    owner: Some("bob".into()),
                    topic: Some(String::new()),
                }),
                json!({"type": "notification", "data": {"event_type": "channel_update", "channel": "rust", "private": false, "owner": "bob", "topic": ""}}),
            ),
            (
                ServerPackage::notification(Notification::UserLeft {
                    username: "troll".into(),
                    channel: "rust".into(),
                    kicked: Some(true),
                }),
                json!({"type": "notification", "data": {"event_type": "user_left", "username": "troll", "channel": "rust", "kicked": true}}),
            ),
            (
                ServerPackage::notification(Notification::GroupCreated {
                    channel: "trip".into(),
                    invited: vec!["bob".into()],
                    not_found: vec!["zed".into()],
                }),
                json!({"type": "notification", "data": {"event_type": "group_created", "channel": "trip", "invited": ["bob"], "not_found": ["zed"]}}),
            ),
            (
                ServerPackage::notification(Notification::Kicked {
                    channel: "rust".into(),
                    by: "bob".into(),
                    reason: Some("spam".into()),
                    banned: None,
                }),
                json!({"type": "notification", "data": {"event_type": "kicked", "channel": "rust", "by": "bob", "reason": "spam"}}),
            ),
            (
                ServerPackage::notification(Notification::Banned {
                    channel: "rust".into(),
                    username: "troll".into(),
                }),
                json!({"type": "notification", "data": {"event_type": "banned", "channel": "rust", "username": "troll"}}),
            ),
            (
                ServerPackage::notification(Notification::Unbanned {
                    channel: "rust".into(),
                    username: "troll".into(),
                }),
                json!({"type": "notification", "data": {"event_type": "unbanned", "channel": "rust", "username": "troll"}}),
            ),
            (
                ServerPackage::notification(Notification::BanList {
                    channel: "rust".into(),
                    usernames: vec!["troll".into()],
                    usernames_total: 1,
                }),
                json!({"type": "notification", "data": {"event_type": "ban_list", "channel": "rust", "usernames": ["troll"], "usernames_total": 1}}),
            ),
            (
                ServerPackage::notification(Notification::ChannelDeleted {
                    channel: "rust".into(),
                    by: "bob".into(),
                }),
                json!({"type": "notification", "data": {"event_type": "channel_deleted", "channel": "rust", "by": "bob"}}),
            ),
            (
                ServerPackage::notification(Notification::ServerNotice {
                    message: "restart at noon".into(),
                    by: "root".into(),
                }),
                json!({"type": "notification", "data": {"event_type": "server_notice", "message": "restart at noon", "by": "root"}}),
            ),
            (
                ServerPackage::notification(Notification::MessageSent {
                    id: 42,
                    channel: Some("rust".into()),
                    to: None,
                    timestamp: "2026-11-21T10:00:00.123Z".into(),
                    queued: None,
                    random: None,
                    away: None,
                }),
                json!({"type": "notification", "data": {"event_type": "message_sent", "id": 42,
                    "channel": "rust", "timestamp": "2026-11-21T10:00:00.123Z"}}),
            ),
            (
                ServerPackage::notification(Notification::ChannelStats {
                    channel: "general".into(),
                    users_total: 10_001,
                }),
                json!({"type": "notification", "data": {"event_type": "channel_stats", "channel": "general", "users_total": 10_001}}),
            ),
            (
                ServerPackage::notification(Notification::ServerShutdown {}),
                json!({"type": "notification", "data": {"event_type": "server_shutdown"}}),
            ),
            (
                ServerPackage::error("join", "nope"),
                json!({"type": "error", "data": {"error_type": "join", "message": "nope"}}),
            ),
            (
                ServerPackage::Message(ChatMessage {
                    message: "Hello".into(),
                    username: "alice".into(),
                    channel: Some("general".into()),
                    to: None,
                    timestamp: "2026-11-21T10:00:00.123Z".into(),
                    id: 7,
                    attachments: None,
                    offline: None,
                }),
                json!({"type": "message", "data": {"message": "Hello", "username": "alice",
                    "channel": "general", "timestamp": "2026-11-21T10:00:00.123Z", "id": 7}}),
            ),
            (
                ServerPackage::Message(ChatMessage {
                    message: "hi".into(),
                    username: "alice".into(),
                    channel: None,
                    to: Some("bob".into()),
                    timestamp: "2026-11-21T10:00:00.123Z".into(),
                    id: 8,
                    offline: Some(true),
                    attachments: Some(vec![Attachment::Image {
                        url: "https://e.org/a.png".into(),
                        width: Some(640),
                        height: None,
                    }]),
                }),
                json!({"type": "message", "data": {"message": "hi", "username": "alice",
                    "to": "bob", "timestamp": "2026-11-21T10:00:00.123Z", "id": 8,
                    "offline": true, "attachments": [{"type": "image",
                    "url": "https://e.org/a.png", "width": 640}]}}),
            ),
            (
                ServerPackage::notification(Notification::MessageSent {
                    id: 8,
                    channel: None,
                    to: Some("bob".into()),
                    timestamp: "2026-11-21T10:00:00.123Z".into(),
                    queued: Some(true),
                    random: None,
                    away: Some("lunch".into()),
                }),
                json!({"type": "notification", "data": {"event_type": "message_sent", "id": 8,
                    "to": "bob", "timestamp": "2026-11-21T10:00:00.123Z", "queued": true,
                    "away": "lunch"}}),
            ),
            (
                ServerPackage::notification(Notification::Who {
                    channel: None,
                    users: vec![WhoEntry {
                        username: "bob".into(),
                        account: true,
                        channel: Some("general".into()),
                        away: None,
                    }],
                    users_total: 1,
                }),
                json!({"type": "notification", "data": {"event_type": "who", "channel": null,
                    "users": [{"username": "bob", "account": true, "channel": "general"}],
                    "users_total": 1}}),
            ),
            (
                ServerPackage::notification(Notification::Whois {
                    username: "bob".into(),
                    online: true,
                    account: false,
                    channel: None,
                    away: Some("out".into()),
                    idle_secs: Some(3),
                }),
                json!({"type": "notification", "data": {"event_type": "whois", "username": "bob",
                    "online": true, "account": false, "away": "out", "idle_secs": 3}}),
            ),
            (
                ServerPackage::notification(Notification::IgnoreList {
                    usernames: vec!["carol".into()],
                }),
                json!({"type": "notification", "data": {"event_type": "ignore_list", "usernames": ["carol"]}}),
            ),
            (
                ServerPackage::notification(Notification::Away { message: None }),
                json!({"type": "notification", "data": {"event_type": "away"}}),
            ),
        ];
        for (package, expected) in cases {
            assert_eq!(to_value(&package), expected);
            let back: ServerPackage = serde_json::from_value(expected).unwrap();
            assert_eq!(back, package);
        }
    }

    #[test]
    fn names() {
        for ok in ["alice", "Ålice", "bob_2", "a.b-c", "名前", "x"] {
            assert_eq!(validate_name(ok, 32), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "a\u{7}", "a\u{200b}", "tab\t", "emoji🙂", "a/b"] {
            assert!(validate_name(bad, 32).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"é".repeat(32), 32).is_ok());
        assert!(validate_name(&"é".repeat(33), 32).is_err());
        assert_eq!(fold_name("ALICE"), fold_name("alice"));
    }

    #[test]
    fn names_fold_like_ergo() {
        assert_eq!(fold_name("ＡＬＩＣＥ"), "alice");
        assert_eq!(fold_name("Straße"), fold_name("STRASSE"));
        assert_eq!(fold_name("ǅemal"), fold_name("džemal"));
        // Cyrillic а is another letter: a different name, but the same skeleton.
        assert_ne!(fold_name("\u{430}lice"), fold_name("alice"));
        assert_eq!(name_skeleton("\u{430}lice"), name_skeleton("alice"));
        assert_eq!(name_skeleton("ALICE"), name_skeleton("alice"));
        assert_eq!(name_skeleton("ａｌｉｃｅ"), name_skeleton("alice"));
        assert_eq!(name_skeleton("paypal"), name_skeleton("paypa1"));
        assert_ne!(name_skeleton("alice"), name_skeleton("alicia"));
        assert_ne!(name_skeleton("bob"), name_skeleton("rob"));
    }

    #[test]
    fn messages() {
        assert!(validate_message("hi\tthere\nfriend", 4096).is_ok());
        assert!(validate_message("", 4096).is_err());
        assert!(validate_message("\u{1b}[31m", 4096).is_err());
        assert!(validate_message(&"a".repeat(4096), 4096).is_ok());
        assert!(validate_message(&"a".repeat(4097), 4096).is_err());
    }

    #[test]
    fn topics() {
        assert!(validate_short_text("", 300, "topic").is_ok());
        assert!(validate_short_text(&"é".repeat(300), 300, "topic").is_ok());
        let long = validate_short_text(&"é".repeat(301), 300, "topic").unwrap_err();
        assert!(long.contains("at most 300 characters"), "{long}");
        assert!(validate_short_text("a\tb", 300, "topic").is_ok());
        assert!(validate_short_text("\u{1b}[2J", 300, "topic").is_err());
    }
}

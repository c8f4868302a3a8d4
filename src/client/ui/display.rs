//! How server packages look on screen, and the little state the client
//! keeps to show them (its own name and channel, for the prompt).
//!
//! Every piece of text that came from the server goes through
//! [`sanitize`] here, in one place. Lines are single lines: a message's
//! own line breaks are shown escaped, so one event is always one line
//! (which scripts reading the client's output rely on).

use std::collections::VecDeque;
use std::fmt;

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Local, TimeZone};

use crate::client::ui::sanitize::sanitize;
use crate::wire::protocol::{
    Attachment, ChatMessage, HistoryMessage, Notification, ServerPackage, Session,
};

/// Prefix of notification lines.
pub const NOTE_PREFIX: &str = "-- ";
/// Prefix of error lines, so errors stand out without colour too.
pub const ERROR_PREFIX: &str = "!! ";

/// Whether and how to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// Emit ANSI colours.
    colour: bool,
}

impl Theme {
    /// A theme that colours when `colour` is true.
    pub fn new(colour: bool) -> Self {
        Theme { colour }
    }

    /// No colours at all.
    pub fn plain() -> Self {
        Theme { colour: false }
    }

    /// Whether this theme emits colours.
    pub fn coloured(&self) -> bool {
        self.colour
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.colour {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    }

    /// A notification line: `-- text`.
    pub fn note(&self, text: &str) -> String {
        self.paint(
            AnsiColor::Cyan.on_default(),
            &format!("{NOTE_PREFIX}{text}"),
        )
    }

    /// An error line: `!! text`, red and bold when colouring.
    pub fn error(&self, text: &str) -> String {
        self.paint(
            AnsiColor::Red.on_default().bold(),
            &format!("{ERROR_PREFIX}{text}"),
        )
    }

    /// A line of help or other local information, uncoloured.
    pub fn info(&self, text: &str) -> String {
        text.to_owned()
    }
}

/// Whether colours should be used: only on a terminal, and never when
/// `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
pub fn want_colour(stdout_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stdout_is_terminal && no_color.map_or(true, |v| v.is_empty())
}

/// Formats an RFC 3339 timestamp as `HH:MM` in `tz`; text that is not a
/// timestamp is shown (sanitized) as it is rather than dropped.
pub fn format_time<Tz: TimeZone>(timestamp: &str, tz: &Tz) -> String
where
    Tz::Offset: fmt::Display,
{
    match DateTime::parse_from_rfc3339(timestamp) {
        Ok(t) => t.with_timezone(tz).format("%H:%M").to_string(),
        Err(_) => sanitize(timestamp).into_owned(),
    }
}

/// `10:02 [general] <bob> hello`, in the given time zone.
pub fn format_message<Tz: TimeZone>(m: &ChatMessage, theme: &Theme, tz: &Tz) -> String
where
    Tz::Offset: fmt::Display,
{
    let time = theme.paint(Style::new().dimmed(), &format_time(&m.timestamp, tz));
    let Some(channel) = &m.channel else {
        // A direct message: no channel, the sender between stars.
        let offline = if m.offline == Some(true) {
            theme.paint(Style::new().dimmed(), " (while you were away)")
        } else {
            String::new()
        };
        return format!(
            "{time} {} {}{offline}",
            theme.paint(
                AnsiColor::Magenta.on_default().bold(),
                &format!("*{}*", sanitize(&m.username))
            ),
            with_attachments(&m.message, m.attachments.as_deref())
        );
    };
    format!(
        "{time} {} {} {}",
        theme.paint(
            AnsiColor::Blue.on_default(),
            &format!("[{}]", sanitize(channel))
        ),
        theme.paint(Style::new().bold(), &format!("<{}>", sanitize(&m.username))),
        with_attachments(&m.message, m.attachments.as_deref())
    )
}

/// The text followed by its attachments, each as `[image 640x480 URL]`
/// or `[video 12s from SOURCE URL]`.
fn with_attachments(text: &str, attachments: Option<&[Attachment]>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !text.is_empty() {
        parts.push(sanitize(text).into_owned());
    }
    for a in attachments.unwrap_or(&[]) {
        parts.push(match a {
            Attachment::Image { url, width, height } => match (width, height) {
                (Some(w), Some(h)) => format!("[image {w}x{h} {}]", sanitize(url)),
                (Some(w), None) => format!("[image {w} wide {}]", sanitize(url)),
                (None, Some(h)) => format!("[image {h} high {}]", sanitize(url)),
                (None, None) => format!("[image {}]", sanitize(url)),
            },
            Attachment::Video {
                url,
                source,
                length,
            } => {
                let mut about = vec!["video".to_owned()];
                if let Some(l) = length {
                    about.push(format!("{l}s"));
                }
                if let Some(s) = source {
                    about.push(format!("from {}", sanitize(s)));
                }
                about.push(sanitize(url).into_owned());
                format!("[{}]", about.join(" "))
            }
        });
    }
    parts.join(" ")
}

/// Formats an RFC 3339 timestamp as `YYYY-MM-DD HH:MM` in `tz`.
fn format_day_time<Tz: TimeZone>(timestamp: &str, tz: &Tz) -> String
where
    Tz::Offset: fmt::Display,
{
    match DateTime::parse_from_rfc3339(timestamp) {
        Ok(t) => t.with_timezone(tz).format("%Y-%m-%d %H:%M").to_string(),
        Err(_) => sanitize(timestamp).into_owned(),
    }
}

/// One stored message as history shows it:
/// `earlier 10:02 [rust] <bob> hello (edited)`.
fn format_earlier<Tz: TimeZone>(m: &HistoryMessage, channel: &str, theme: &Theme, tz: &Tz) -> String
where
    Tz::Offset: fmt::Display,
{
    format!(
        "{} {} {} {} {}{}",
        theme.paint(Style::new().dimmed(), "earlier"),
        theme.paint(Style::new().dimmed(), &format_time(&m.timestamp, tz)),
        theme.paint(
            AnsiColor::Blue.on_default(),
            &format!("[{}]", sanitize(channel))
        ),
        theme.paint(Style::new().bold(), &format!("<{}>", sanitize(&m.username))),
        with_attachments(&m.message, m.attachments.as_deref()),
        if m.edited.is_some() { " (edited)" } else { "" }
    )
}

/// "in rust", or "with bob" for a conversation's history.
fn in_place(label: &str) -> String {
    if label.starts_with("with ") {
        sanitize(label).into_owned()
    } else {
        format!("in {}", sanitize(label))
    }
}

/// "in rust", or "to bob" for a direct message.
fn placed(channel: Option<&str>, to: Option<&str>) -> String {
    match (channel, to) {
        (Some(c), _) => format!("in {}", sanitize(c)),
        (None, Some(t)) => format!("to {}", sanitize(t)),
        (None, None) => String::new(),
    }
}

/// One search result: `2026-11-21 10:02 [rust] <bob> hello`.
fn format_found<Tz: TimeZone>(m: &HistoryMessage, theme: &Theme, tz: &Tz) -> String
where
    Tz::Offset: fmt::Display,
{
    format!(
        "   {} {} {} {}{}",
        theme.paint(Style::new().dimmed(), &format_day_time(&m.timestamp, tz)),
        theme.paint(
            AnsiColor::Blue.on_default(),
            &match (&m.channel, &m.to) {
                (Some(c), _) => format!("[{}]", sanitize(c)),
                (None, Some(t)) => format!("[to {}]", sanitize(t)),
                (None, None) => "[?]".to_owned(),
            }
        ),
        theme.paint(Style::new().bold(), &format!("<{}>", sanitize(&m.username))),
        with_attachments(&m.message, m.attachments.as_deref()),
        if m.edited.is_some() { " (edited)" } else { "" }
    )
}

/// One's own direct message as shown once sent: `10:02 -> *bob* hi`.
pub fn format_own_direct<Tz: TimeZone>(
    to: &str,
    text: &str,
    timestamp: &str,
    theme: &Theme,
    tz: &Tz,
) -> String
where
    Tz::Offset: fmt::Display,
{
    format!(
        "{} -> {} {}",
        theme.paint(Style::new().dimmed(), &format_time(timestamp, tz)),
        theme.paint(
            AnsiColor::Magenta.on_default().bold(),
            &format!("*{}*", sanitize(to))
        ),
        sanitize(text)
    )
}

/// `3: a, b, c` or, when the server capped the list, `1000 of 1500: a, ...`.
fn name_list(names: &[String], total: usize) -> String {
    let count = if total > names.len() {
        format!("{} of {total}", names.len())
    } else {
        total.to_string()
    };
    let joined: Vec<_> = names.iter().map(|n| sanitize(n)).collect();
    format!("({count}): {}", joined.join(", "))
}

/// Names, sanitized, joined with commas.
fn sanitized(names: &[String]) -> String {
    let names: Vec<_> = names.iter().map(|n| sanitize(n)).collect();
    names.join(", ")
}

/// What the client knows about its own session: enough for the prompt and
/// for telling "you" from others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatState {
    /// Our name, once logged in.
    pub username: Option<String>,
    /// The channel we are in, once logged in.
    pub channel: Option<String>,
    /// Our channel's owner, if it has one.
    pub owner: Option<String>,
    /// Whether our channel is private.
    pub private: bool,
    /// The texts of our direct messages (`/msg`, `/reply`, `/random`) not
    /// yet acknowledged, oldest first: each is shown, as `-> *bob* text`,
    /// when its `message_sent` names the recipient (for `/random` the
    /// server picks it). At most [`MAX_PENDING_DIRECT`].
    pub pending_direct: VecDeque<String>,
    /// Who last wrote to us directly (for `/reply`).
    pub last_direct_from: Option<String>,
}

/// Most of our own direct messages remembered while they await their
/// acknowledgement (the client paces itself, so this is never reached in
/// practice; past it, the oldest are forgotten and shown without text).
pub const MAX_PENDING_DIRECT: usize = 1024;

impl ChatState {
    /// The prompt: `[general] alice> `, or `> ` before logging in.
    pub fn prompt(&self) -> String {
        match (&self.channel, &self.username) {
            (Some(c), Some(u)) => format!("[{}] {}> ", sanitize(c), sanitize(u)),
            _ => "> ".to_owned(),
        }
    }

    /// Notes the text of a direct message we are sending.
    pub fn sent_direct(&mut self, text: &str) {
        if self.pending_direct.len() >= MAX_PENDING_DIRECT {
            self.pending_direct.pop_front();
        }
        self.pending_direct.push_back(text.to_owned());
    }

    fn is_me(&self, name: &str) -> bool {
        self.username.as_deref() == Some(name)
    }

    fn is_my_channel(&self, channel: &str) -> bool {
        self.channel.as_deref() == Some(channel)
    }

    /// The line to show for `package`, in local time; `None` for packages
    /// that are not shown (`pong`, `request`). Call before [`Self::apply`]
    /// so "you" is still recognised under the old name.
    pub fn describe(&self, package: &ServerPackage, theme: &Theme) -> Option<String> {
        self.describe_in(package, theme, &Local)
    }

    /// [`Self::describe`] with times shown in `tz`.
    pub fn describe_in<Tz: TimeZone>(
        &self,
        package: &ServerPackage,
        theme: &Theme,
        tz: &Tz,
    ) -> Option<String>
    where
        Tz::Offset: fmt::Display,
    {
        match package {
            ServerPackage::Message(m) => Some(format_message(m, theme, tz)),
            ServerPackage::Request(_) => None,
            ServerPackage::Session(s) => Some(describe_session(s, theme)),
            ServerPackage::Error(e) => Some(theme.error(&format!(
                "{}: {}",
                sanitize(&e.error_type),
                sanitize(&e.message)
            ))),
            ServerPackage::Notification(n) => self.describe_note(n, theme, tz),
        }
    }

    fn describe_note<Tz: TimeZone>(
        &self,
        n: &Notification,
        theme: &Theme,
        tz: &Tz,
    ) -> Option<String>
    where
        Tz::Offset: fmt::Display,
    {
        let text = match n {
            Notification::History {
                channel,
                with,
                messages,
                more: _,
            } => {
                let channel = match (channel, with) {
                    (Some(c), _) => c.clone(),
                    (None, Some(w)) => format!("with {w}"),
                    (None, None) => "?".to_owned(),
                };
                let channel = &channel;
                if messages.is_empty() {
                    format!("no earlier messages {}", in_place(channel))
                } else {
                    // One line per message: the scripted client's output
                    // stays one message per line.
                    let lines: Vec<String> = messages
                        .iter()
                        .map(|m| format_earlier(m, channel, theme, tz))
                        .collect();
                    return Some(lines.join("\n"));
                }
            }
            Notification::SearchResults {
                query,
                page,
                total,
                messages,
                ..
            } => {
                let head = theme.note(&format!(
                    "search {}: {total} found{}",
                    sanitize(&format!("{query:?}")),
                    if *page > 1 {
                        format!(", page {page}")
                    } else {
                        String::new()
                    }
                ));
                let mut lines = vec![head];
                lines.extend(messages.iter().map(|m| format_found(m, theme, tz)));
                return Some(lines.join("\n"));
            }
            Notification::MessageEdited {
                id,
                channel,
                to,
                message,
                ..
            } => format!(
                "message {id} {} edited: {}",
                placed(channel.as_deref(), to.as_deref()),
                sanitize(message)
            ),
            Notification::MessageDeleted {
                id,
                channel,
                to,
                by,
            } => format!(
                "message {id} {} deleted by {}",
                placed(channel.as_deref(), to.as_deref()),
                sanitize(by)
            ),
            Notification::ReadMarked { channel, id } => {
                format!("{} read up to message {id}", sanitize(channel))
            }
            Notification::UserJoined {
                username,
                channel,
                users,
                users_total,
                owner,
                private,
                topic,
            } => match users {
                Some(users) => {
                    let mut about = Vec::new();
                    if *private == Some(true) {
                        about.push("private".to_owned());
                    }
                    if let Some(o) = owner {
                        about.push(format!("owner {}", sanitize(o)));
                    }
                    let about = if about.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", about.join(", "))
                    };
                    let topic = match topic {
                        Some(t) => format!("; topic: {}", sanitize(t)),
                        None => String::new(),
                    };
                    format!(
                        "you are in {}{about}; users {}{topic}",
                        sanitize(channel),
                        name_list(users, users_total.unwrap_or(users.len()))
                    )
                }
                None => format!("{} joined {}", sanitize(username), sanitize(channel)),
            },
            Notification::UserLeft {
                username,
                channel,
                kicked,
            } => {
                let how = if *kicked == Some(true) {
                    "was put out of"
                } else {
                    "left"
                };
                format!("{} {how} {}", sanitize(username), sanitize(channel))
            }
            Notification::UserRename {
                old_username,
                new_username,
            } => {
                if self.is_me(old_username) {
                    format!("you are now {}", sanitize(new_username))
                } else {
                    format!(
                        "{} is now {}",
                        sanitize(old_username),
                        sanitize(new_username)
                    )
                }
            }
            Notification::ChannelList {
                channels,
                channels_total,
            } => format!("channels {}", name_list(channels, *channels_total)),
            Notification::ChannelStats {
                channel,
                users_total,
                // Sent instead of each arrival and departure in a crowded
                // channel: one quiet line with the count.
            } => format!("{} has {users_total} users", sanitize(channel)),
            Notification::ChannelUpdate {
                channel,
                topic: Some(topic),
                ..
            } => {
                if topic.is_empty() {
                    format!("the topic of {} is cleared", sanitize(channel))
                } else {
                    format!("topic of {}: {}", sanitize(channel), sanitize(topic))
                }
            }
            Notification::ChannelUpdate {
                channel,
                private,
                owner,
                topic: None,
            } => self.describe_update(channel, *private, owner.as_deref()),
            Notification::Invited { channel, by } => format!(
                "{} invited you to {}; type /join {} to accept",
                sanitize(by),
                sanitize(channel),
                sanitize(channel)
            ),
            Notification::InviteSent { channel, username } => format!(
                "invitation to {} sent to {}",
                sanitize(channel),
                sanitize(username)
            ),
            Notification::Registered { username } => format!(
                "{} is now registered: from now on logging in as {} needs your password",
                sanitize(username),
                sanitize(username)
            ),
            Notification::PasswordChanged {} => "your password is changed".to_owned(),
            Notification::GroupCreated {
                channel,
                invited,
                not_found,
            } => {
                let mut text = format!("group {} created", sanitize(channel));
                if !invited.is_empty() {
                    text.push_str(&format!("; invited {}", sanitized(invited)));
                }
                if !not_found.is_empty() {
                    text.push_str(&format!("; not online: {}", sanitized(not_found)));
                }
                text
            }
            Notification::Kicked {
                channel,
                by,
                reason,
                banned,
            } => {
                let what = if *banned == Some(true) {
                    "banned from"
                } else {
                    "kicked out of"
                };
                let reason = match reason {
                    Some(r) => format!(" ({})", sanitize(r)),
                    None => String::new(),
                };
                return Some(theme.error(&format!(
                    "you were {what} {} by {}{reason}; you are back in general",
                    sanitize(channel),
                    sanitize(by)
                )));
            }
            Notification::Banned { channel, username } => format!(
                "{} is banned from {}",
                sanitize(username),
                sanitize(channel)
            ),
            Notification::Unbanned { channel, username } => format!(
                "{} may join {} again",
                sanitize(username),
                sanitize(channel)
            ),
            Notification::BanList {
                channel,
                usernames,
                usernames_total,
            } => format!(
                "bans in {} {}",
                sanitize(channel),
                name_list(usernames, *usernames_total)
            ),
            Notification::ChannelDeleted { channel, by } => format!(
                "{} deleted {}; you are back in general",
                sanitize(by),
                sanitize(channel)
            ),
            Notification::ServerNotice { message, by } => {
                return Some(theme.paint(
                    AnsiColor::Yellow.on_default().bold(),
                    &format!(
                        "{NOTE_PREFIX}notice from {}: {}",
                        sanitize(by),
                        sanitize(message)
                    ),
                ))
            }
            Notification::Who {
                channel,
                users,
                users_total,
            } => {
                let entries: Vec<String> = users
                    .iter()
                    .map(|u| {
                        let mut line = sanitize(&u.username).into_owned();
                        if let Some(c) = &u.channel {
                            line.push_str(&format!(" [{}]", sanitize(c)));
                        }
                        if u.account {
                            line.push_str(" (account)");
                        }
                        if let Some(a) = &u.away {
                            line.push_str(&format!(" (away: {})", sanitize(a)));
                        }
                        line
                    })
                    .collect();
                let whom = match channel {
                    Some(c) => format!("in {}", sanitize(c)),
                    None => "online".to_owned(),
                };
                let count = if *users_total > users.len() {
                    format!("{} of {users_total}", users.len())
                } else {
                    users_total.to_string()
                };
                format!("{whom} ({count}): {}", entries.join(", "))
            }
            Notification::Whois {
                username,
                online,
                account,
                channel,
                away,
                idle_secs,
            } => {
                let mut parts = vec![sanitize(username).into_owned()];
                parts.push(if *online { "online" } else { "offline" }.to_owned());
                parts.push(if *account { "account" } else { "guest" }.to_owned());
                if let Some(c) = channel {
                    parts.push(format!("in {}", sanitize(c)));
                }
                if let Some(a) = away {
                    parts.push(format!("away: {}", sanitize(a)));
                }
                if let Some(i) = idle_secs {
                    parts.push(format!("idle {i} s"));
                }
                parts.join(", ")
            }
            Notification::Away { message } => match message {
                Some(m) => format!("you are marked away: {}", sanitize(m)),
                None => "you are back".to_owned(),
            },
            Notification::IgnoreList { usernames } => {
                if usernames.is_empty() {
                    "you ignore nobody".to_owned()
                } else {
                    let names: Vec<String> =
                        usernames.iter().map(|n| sanitize(n).into_owned()).collect();
                    format!("you ignore ({}): {}", names.len(), names.join(", "))
                }
            }
            Notification::MessageSent {
                to: Some(to),
                timestamp,
                queued,
                away,
                ..
            } => {
                let text = self.pending_direct.front().map_or("", String::as_str);
                let mut line = format_own_direct(to, text, timestamp, theme, tz);
                if *queued == Some(true) {
                    line.push_str(&theme.paint(
                        Style::new().dimmed(),
                        " (kept: they will get it when they log in)",
                    ));
                }
                if let Some(a) = away {
                    line.push_str(&theme.paint(
                        Style::new().dimmed(),
                        &format!(" ({} is away: {})", sanitize(to), sanitize(a)),
                    ));
                }
                return Some(line);
            }
            // The acknowledgement that one's own message is stored: the
            // line was already shown when it was typed.
            Notification::Pong { .. } | Notification::MessageSent { .. } => return None,
            Notification::ServerShutdown {} => {
                return Some(theme.error("the server is shutting down"))
            }
        };
        Some(theme.note(&text))
    }

    /// Says what changed, as far as we know the channel's previous state.
    fn describe_update(&self, channel: &str, private: bool, owner: Option<&str>) -> String {
        let name = sanitize(channel);
        let owner_text = match owner {
            Some(o) => format!("{} owns {name}", sanitize(o)),
            None => format!("{name} has no owner"),
        };
        if !self.is_my_channel(channel) {
            let vis = if private { "private" } else { "public" };
            return format!("{name} is {vis}; {owner_text}");
        }
        let mut changes = Vec::new();
        if private != self.private {
            changes.push(format!(
                "{name} is now {}",
                if private { "private" } else { "public" }
            ));
        }
        if owner != self.owner.as_deref() {
            changes.push(match owner {
                Some(o) => format!("{} now owns {name}", sanitize(o)),
                None => format!("{name} has no owner now"),
            });
        }
        if changes.is_empty() {
            let vis = if private { "private" } else { "public" };
            return format!("{name} is {vis}; {owner_text}");
        }
        changes.join("; ")
    }

    /// Updates the state from a package: our name and channel follow
    /// `session`, our own `user_joined` and renames of us.
    pub fn apply(&mut self, package: &ServerPackage) {
        match package {
            ServerPackage::Session(s) if s.status => {
                self.username = s.username.clone();
                self.channel = s.channel.clone();
                self.owner = None;
                self.private = false;
            }
            ServerPackage::Notification(Notification::UserJoined {
                username,
                channel,
                users: Some(_),
                owner,
                private,
                ..
            }) => {
                if self.username.is_none() {
                    self.username = Some(username.clone());
                }
                self.channel = Some(channel.clone());
                self.owner = owner.clone();
                self.private = private.unwrap_or(false);
            }
            ServerPackage::Notification(Notification::UserRename {
                old_username,
                new_username,
            }) => {
                if self.is_me(old_username) {
                    self.username = Some(new_username.clone());
                }
                if self.owner.as_deref() == Some(old_username) {
                    self.owner = Some(new_username.clone());
                }
            }
            ServerPackage::Notification(Notification::ChannelUpdate {
                channel,
                private,
                owner,
                ..
            }) if self.is_my_channel(channel) => {
                self.private = *private;
                self.owner = owner.clone();
            }
            ServerPackage::Notification(Notification::MessageSent { to: Some(_), .. }) => {
                self.pending_direct.pop_front();
            }
            ServerPackage::Error(e) if matches!(e.error_type.as_str(), "direct" | "random") => {
                // Refused instead of acknowledged (a backlog that cannot be
                // read is a `direct` error too, but only right after login,
                // before anything was sent).
                self.pending_direct.pop_front();
            }
            ServerPackage::Message(m) if m.to.is_some() => {
                self.last_direct_from = Some(m.username.clone());
            }
            _ => {}
        }
    }
}

fn describe_session(s: &Session, theme: &Theme) -> String {
    if s.status {
        let channels = s.channels.as_deref().unwrap_or(&[]);
        let account = match s.account {
            Some(true) => " (account)",
            Some(false) => " (guest)",
            None => "",
        };
        let unread = match s.unread.as_deref() {
            Some(list) if !list.is_empty() => {
                let counts: Vec<String> = list
                    .iter()
                    .map(|u| format!("{} {}", sanitize(&u.channel), u.count))
                    .collect();
                format!("; unread: {}", counts.join(", "))
            }
            _ => String::new(),
        };
        theme.note(&format!(
            "logged in as {}{account}{unread}; channels {}",
            sanitize(s.username.as_deref().unwrap_or("?")),
            name_list(channels, s.channels_total.unwrap_or(channels.len()))
        ))
    } else {
        theme.error(&format!(
            "login refused: {}",
            sanitize(s.reason.as_deref().unwrap_or("no reason given"))
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::ErrorData;
    use chrono::{FixedOffset, Utc};

    fn note(n: Notification) -> ServerPackage {
        ServerPackage::Notification(n)
    }

    fn alice_in(channel: &str) -> ChatState {
        ChatState {
            username: Some("alice".into()),
            channel: Some(channel.into()),
            owner: None,
            private: false,
            ..ChatState::default()
        }
    }

    fn show(state: &ChatState, p: &ServerPackage) -> Option<String> {
        state.describe_in(p, &Theme::plain(), &Utc)
    }

    fn message(text: &str, user: &str, ts: &str) -> ServerPackage {
        ServerPackage::Message(ChatMessage {
            message: text.into(),
            username: user.into(),
            channel: Some("general".into()),
            to: None,
            timestamp: ts.into(),
            id: 1,
            attachments: None,
            offline: None,
        })
    }

    #[test]
    fn messages_show_local_time_channel_and_sender() {
        let m = message("hello", "bob", "2026-11-21T10:02:59.123Z");
        assert_eq!(
            show(&alice_in("general"), &m).unwrap(),
            "10:02 [general] <bob> hello"
        );
        let plus_one = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(
            alice_in("general")
                .describe_in(&m, &Theme::plain(), &plus_one)
                .unwrap(),
            "11:02 [general] <bob> hello"
        );
        // A timestamp with its own offset is converted, not reinterpreted.
        assert_eq!(format_time("2026-11-21T10:02:00+02:00", &Utc), "08:02");
        assert_eq!(
            format_time("yesterday\u{1b}[2J", &Utc),
            "yesterday\\u{1b}[2J"
        );
    }

    #[test]
    fn messages_are_sanitized_and_one_line() {
        let m = message(
            "line1\nline2 \u{1b}[31mred \u{202e}evil",
            "bob",
            "2026-11-21T10:02:00Z",
        );
        let line = show(&alice_in("general"), &m).unwrap();
        assert_eq!(
            line,
            "10:02 [general] <bob> line1\\nline2 \\u{1b}[31mred \\u{202e}evil"
        );
        assert!(!line.contains('\n') && !line.contains('\u{1b}'));
        let m = message("hi", "b\u{7}ob", "2026-11-21T10:02:00Z");
        assert_eq!(
            show(&alice_in("general"), &m).unwrap(),
            "10:02 [general] <b\\u{7}ob> hi"
        );
    }

    #[test]
    fn notifications_read_as_sentences() {
        let s = alice_in("general");
        let joined = note(Notification::UserJoined {
            topic: None,
            username: "carol".into(),
            channel: "general".into(),
            users: None,
            users_total: None,
            owner: None,
            private: None,
        });
        assert_eq!(show(&s, &joined).unwrap(), "-- carol joined general");
        let left = note(Notification::UserLeft {
            kicked: None,
            username: "carol".into(),
            channel: "general".into(),
        });
        assert_eq!(show(&s, &left).unwrap(), "-- carol left general");
        let rename = note(Notification::UserRename {
            old_username: "bob".into(),
            new_username: "robert".into(),
        });
        assert_eq!(show(&s, &rename).unwrap(), "-- bob is now robert");
        let invited = note(Notification::Invited {
            channel: "rust".into(),
            by: "bob".into(),
        });
        assert_eq!(
            show(&s, &invited).unwrap(),
            "-- bob invited you to rust; type /join rust to accept"
        );
        let sent = note(Notification::InviteSent {
            channel: "rust".into(),
            username: "carol".into(),
        });
        assert_eq!(
            show(&s, &sent).unwrap(),
            "-- invitation to rust sent to carol"
        );
        assert_eq!(
            show(&s, &note(Notification::ServerShutdown {})).unwrap(),
            "!! the server is shutting down"
        );
    }

    #[test]
    fn channel_stats_show_as_one_quiet_line_with_the_count() {
        let s = ChatState::default();
        let stats = note(Notification::ChannelStats {
            channel: "general".into(),
            users_total: 10_001,
        });
        assert_eq!(show(&s, &stats).unwrap(), "-- general has 10001 users");
        // The channel name is the server's text: it is sanitized like any.
        let odd = note(Notification::ChannelStats {
            channel: "gen\u{1b}[2J".into(),
            users_total: 2,
        });
        let line = show(&s, &odd).unwrap();
        assert!(!line.contains('\u{1b}'), "{line:?}");
        // Nothing else about the session changes.
        let mut applied = s.clone();
        applied.apply(&stats);
        assert_eq!(applied, s);
    }

    #[test]
    fn pong_and_requests_are_silent() {
        let s = alice_in("general");
        assert_eq!(show(&s, &note(Notification::Pong { token: None })), None);
        assert_eq!(
            show(
                &s,
                &note(Notification::Pong {
                    token: Some("x".into())
                })
            ),
            None
        );
        assert_eq!(
            show(
                &s,
                &ServerPackage::Request(crate::wire::protocol::Request::login())
            ),
            None
        );
    }

    #[test]
    fn channel_lists_fit_one_line_with_totals_when_capped() {
        let s = alice_in("general");
        let list = note(Notification::ChannelList {
            channels: vec!["general".into(), "rust".into()],
            channels_total: 2,
        });
        assert_eq!(show(&s, &list).unwrap(), "-- channels (2): general, rust");
        let capped = note(Notification::ChannelList {
            channels: vec!["a".into(), "b".into()],
            channels_total: 1500,
        });
        assert_eq!(show(&s, &capped).unwrap(), "-- channels (2 of 1500): a, b");
    }

    #[test]
    fn own_join_lists_members() {
        let s = alice_in("general");
        let own = note(Notification::UserJoined {
            topic: None,
            username: "alice".into(),
            channel: "rust".into(),
            users: Some(vec!["alice".into(), "bob".into()]),
            users_total: Some(3),
            owner: Some("bob".into()),
            private: Some(true),
        });
        assert_eq!(
            show(&s, &own).unwrap(),
            "-- you are in rust [private, owner bob]; users (2 of 3): alice, bob"
        );
    }

    #[test]
    fn errors_are_distinct() {
        let e = ServerPackage::Error(ErrorData {
            error_type: "join".into(),
            message: "rust is private.".into(),
        });
        assert_eq!(
            show(&alice_in("general"), &e).unwrap(),
            "!! join: rust is private."
        );
        let coloured = alice_in("general")
            .describe_in(&e, &Theme::new(true), &Utc)
            .unwrap();
        assert!(coloured.starts_with("\u{1b}["), "{coloured:?}");
        assert!(coloured.contains("!! join: rust is private."));
        assert!(coloured.ends_with("\u{1b}[0m"), "{coloured:?}");
        let refused = ServerPackage::Session(Session::refused("Username is already taken."));
        assert_eq!(
            show(&ChatState::default(), &refused).unwrap(),
            "!! login refused: Username is already taken."
        );
    }

    #[test]
    fn no_colour_means_no_escape_codes() {
        let m = message("hi", "bob", "2026-11-21T10:02:00Z");
        let plain = show(&alice_in("general"), &m).unwrap();
        assert!(!plain.contains('\u{1b}'));
        let coloured = alice_in("general")
            .describe_in(&m, &Theme::new(true), &Utc)
            .unwrap();
        assert!(coloured.contains('\u{1b}'));
        assert!(want_colour(true, None));
        assert!(want_colour(true, Some(std::ffi::OsStr::new(""))));
        assert!(!want_colour(true, Some(std::ffi::OsStr::new("1"))));
        assert!(!want_colour(false, None));
    }

    #[test]
    fn the_session_line_lists_unread_counts_and_history_is_marked_earlier() {
        use crate::wire::protocol::UnreadCount;
        let session = ServerPackage::Session(Session {
            unread: Some(vec![UnreadCount {
                channel: "Club".into(),
                count: 3,
                last_id: 7,
            }]),
            ..Session::accepted("alice", "general", vec!["general".into()], 1).with_account(true)
        });
        assert_eq!(
            show(&ChatState::default(), &session).unwrap(),
            "-- logged in as alice (account); unread: Club 3; channels (1): general"
        );
        let shown = |attachments| HistoryMessage {
            id: 1,
            username: "bob".into(),
            message: "hi".into(),
            timestamp: "2026-11-21T10:02:00.000Z".into(),
            edited: Some("2026-11-21T10:03:00.000Z".into()),
            attachments,
            channel: Some("rust".into()),
            to: None,
        };
        let page = note(Notification::History {
            channel: Some("rust".into()),
            with: None,
            messages: vec![shown(None)],
            more: false,
        });
        assert_eq!(
            show(&alice_in("rust"), &page).unwrap(),
            "earlier 10:02 [rust] <bob> hi (edited)"
        );
        let video = Attachment::Video {
            url: "https://e.org/v.mp4".into(),
            source: Some("cam\u{1b}".into()),
            length: Some(12),
        };
        let found = note(Notification::SearchResults {
            query: "hi".into(),
            page: 2,
            rows: 20,
            total: 21,
            messages: vec![shown(Some(vec![video]))],
            truncated: None,
        });
        assert_eq!(
            show(&alice_in("rust"), &found).unwrap(),
            "-- search \"hi\": 21 found, page 2\n   2026-11-21 10:02 [rust] <bob> hi [video 12s from cam\\u{1b} https://e.org/v.mp4] (edited)"
        );
    }

    #[test]
    fn state_follows_session_joins_and_renames() {
        let mut s = ChatState::default();
        assert_eq!(s.prompt(), "> ");
        s.apply(&ServerPackage::Session(Session::accepted(
            "alice",
            "general",
            vec!["general".into()],
            1,
        )));
        assert_eq!(s.prompt(), "[general] alice> ");
        // Somebody else's join does not move us.
        s.apply(&note(Notification::UserJoined {
            topic: None,
            username: "bob".into(),
            channel: "general".into(),
            users: None,
            users_total: None,
            owner: None,
            private: None,
        }));
        assert_eq!(s.prompt(), "[general] alice> ");
        s.apply(&note(Notification::UserJoined {
            topic: None,
            username: "alice".into(),
            channel: "rust".into(),
            users: Some(vec!["alice".into()]),
            users_total: Some(1),
            owner: Some("alice".into()),
            private: Some(false),
        }));
        assert_eq!(s.prompt(), "[rust] alice> ");
        let rename = note(Notification::UserRename {
            old_username: "alice".into(),
            new_username: "ally".into(),
        });
        assert_eq!(show(&s, &rename).unwrap(), "-- you are now ally");
        s.apply(&rename);
        assert_eq!(s.prompt(), "[rust] ally> ");
        assert_eq!(s.owner.as_deref(), Some("ally"));
        // Others' renames leave our name alone.
        s.apply(&note(Notification::UserRename {
            old_username: "bob".into(),
            new_username: "robert".into(),
        }));
        assert_eq!(s.prompt(), "[rust] ally> ");
    }

    #[test]
    fn channel_updates_say_what_changed() {
        let mut s = alice_in("rust");
        s.owner = Some("alice".into());
        let private = note(Notification::ChannelUpdate {
            topic: None,
            channel: "rust".into(),
            private: true,
            owner: Some("alice".into()),
        });
        assert_eq!(show(&s, &private).unwrap(), "-- rust is now private");
        s.apply(&private);
        assert!(s.private);
        let handover = note(Notification::ChannelUpdate {
            topic: None,
            channel: "rust".into(),
            private: true,
            owner: Some("bob".into()),
        });
        assert_eq!(show(&s, &handover).unwrap(), "-- bob now owns rust");
        s.apply(&handover);
        assert_eq!(
            show(&s, &handover).unwrap(),
            "-- rust is private; bob owns rust"
        );
    }

    #[test]
    fn prompt_is_sanitized() {
        let s = ChatState {
            username: Some("a\u{1b}[2J".into()),
            channel: Some("c\u{202e}".into()),
            ..ChatState::default()
        };
        assert_eq!(s.prompt(), "[c\\u{202e}] a\\u{1b}[2J> ");
    }

    #[test]
    fn moderation_events_are_shown_sanitized() {
        let me = alice_in("rust");
        let kicked = note(Notification::Kicked {
            channel: "rust".into(),
            by: "bob".into(),
            reason: Some("stop \u{1b}[2J".into()),
            banned: None,
        });
        assert_eq!(
            show(&me, &kicked).unwrap(),
            "!! you were kicked out of rust by bob (stop \\u{1b}[2J); you are back in general"
        );
        let notice = note(Notification::ServerNotice {
            message: "restart\u{202e}".into(),
            by: "root".into(),
        });
        assert_eq!(
            show(&me, &notice).unwrap(),
            "-- notice from root: restart\\u{202e}"
        );
        let topic = note(Notification::ChannelUpdate {
            channel: "rust".into(),
            private: false,
            owner: None,
            topic: Some(String::new()),
        });
        assert_eq!(
            show(&me, &topic).unwrap(),
            "-- the topic of rust is cleared"
        );
        let group = note(Notification::GroupCreated {
            channel: "trip".into(),
            invited: vec![],
            not_found: vec!["zed".into()],
        });
        assert_eq!(
            show(&me, &group).unwrap(),
            "-- group trip created; not online: zed"
        );
    }
}

//! Helpers of the history, search and edit tests: the commands sent and
//! their answers awaited, other packages in between skipped only where a
//! helper says so.

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{
    ClientPackage, HistoryMessage, Notification, OutgoingMessage, ServerPackage,
};
use serde_json::{json, Value};

use super::{next, next_note};

/// One `history` answer.
#[derive(Debug)]
pub struct History {
    pub channel: Option<String>,
    pub with: Option<String>,
    pub messages: Vec<HistoryMessage>,
    pub more: bool,
}

impl History {
    pub fn ids(&self) -> Vec<i64> {
        self.messages.iter().map(|m| m.id).collect()
    }
    pub fn texts(&self) -> Vec<&str> {
        self.messages.iter().map(|m| m.message.as_str()).collect()
    }
}

/// One `search_results` answer.
#[derive(Debug)]
pub struct Found {
    pub total: usize,
    pub page: usize,
    pub rows: usize,
    pub messages: Vec<HistoryMessage>,
    pub truncated: Option<bool>,
}

impl Found {
    pub fn ids(&self) -> Vec<i64> {
        self.messages.iter().map(|m| m.id).collect()
    }
    pub fn texts(&self) -> Vec<&str> {
        self.messages.iter().map(|m| m.message.as_str()).collect()
    }
}

/// The next package that is not presence (`user_joined`, `user_left`,
/// `user_rename`, `channel_stats`) nor somebody's chat message: those come
/// whenever people move and talk.
pub async fn next_answer(c: &mut ClientConnection) -> ServerPackage {
    loop {
        match next(c).await {
            ServerPackage::Notification(
                Notification::UserJoined { .. }
                | Notification::UserLeft { .. }
                | Notification::UserRename { .. }
                | Notification::ChannelStats { .. },
            )
            | ServerPackage::Message(_) => continue,
            other => return other,
        }
    }
}

/// Pings and waits for the pong, past presence and chat: fails on
/// anything else (an answer, an edit, an error nobody expected).
pub async fn settle(c: &mut ClientConnection) {
    c.command("ping", Some(json!({"token": "settle"})))
        .await
        .expect("ping");
    match next_answer(c).await {
        ServerPackage::Notification(Notification::Pong { token }) => {
            assert_eq!(token.as_deref(), Some("settle"))
        }
        other => panic!("expected only the pong, got {other:?}"),
    }
}

/// The next package past presence, which must be a notification.
async fn next_answer_note(c: &mut ClientConnection) -> Notification {
    match next_answer(c).await {
        ServerPackage::Notification(n) => n,
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// Sends `history` with `params` and returns the answer (the next package
/// past presence).
pub async fn history(c: &mut ClientConnection, params: Value) -> History {
    c.command("history", Some(params))
        .await
        .expect("send history");
    match next_answer_note(c).await {
        Notification::History {
            channel,
            with,
            messages,
            more,
        } => History {
            channel,
            with,
            messages,
            more,
        },
        other => panic!("expected history, got {other:?}"),
    }
}

/// Sends `search` with `params` and returns the answer (the next package
/// past presence).
pub async fn search(c: &mut ClientConnection, params: Value) -> Found {
    c.command("search", Some(params))
        .await
        .expect("send search");
    match next_answer_note(c).await {
        Notification::SearchResults {
            total,
            page,
            rows,
            messages,
            truncated,
            ..
        } => Found {
            total,
            page,
            rows,
            messages,
            truncated,
        },
        other => panic!("expected search_results, got {other:?}"),
    }
}

/// Searches everything for `query`; returns the texts found, newest first.
pub async fn search_texts(c: &mut ClientConnection, query: &str) -> Vec<String> {
    search(c, json!({"query": query, "rows": 100}))
        .await
        .texts()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Sends a command and expects an error of `kind`; returns its message.
pub async fn refused(c: &mut ClientConnection, command: &str, params: Value, kind: &str) -> String {
    c.command(command, Some(params)).await.expect("send");
    match next_answer(c).await {
        ServerPackage::Error(e) => {
            assert_eq!(e.error_type, kind, "{command}: {}", e.message);
            e.message
        }
        other => panic!("expected a {kind} error for {command}, got {other:?}"),
    }
}

/// Sends each text and waits for all of them to be stored; returns their ids.
pub async fn say(c: &mut ClientConnection, texts: &[&str]) -> Vec<i64> {
    for t in texts {
        c.message(t).await.expect("send message");
    }
    acks(c, texts.len()).await
}

/// Waits for `n` `message_sent` past presence; returns their ids.
pub async fn acks(c: &mut ClientConnection, n: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        match next_answer(c).await {
            ServerPackage::Notification(Notification::MessageSent { id, .. }) => ids.push(id),
            other => panic!("expected message_sent, got {other:?}"),
        }
    }
    ids
}

/// Sends a message with `attachments` as given (any JSON).
pub async fn say_with(c: &mut ClientConnection, text: &str, attachments: Value) {
    c.send(&ClientPackage::Message(OutgoingMessage {
        message: text.to_owned(),
        attachments: Some(attachments),
    }))
    .await
    .expect("send message");
}

/// Joins `channel` and skips to the own `user_joined`.
pub async fn join(c: &mut ClientConnection, channel: &str) {
    c.command("join", Some(json!({ "channel": channel })))
        .await
        .expect("send join");
    loop {
        if let Notification::UserJoined { users: Some(_), .. } = next_note(c).await {
            return;
        }
    }
}

/// Skips packages until `pick` takes one; fails after the usual wait.
pub async fn until<T>(
    c: &mut ClientConnection,
    mut pick: impl FnMut(ServerPackage) -> Option<T>,
) -> T {
    loop {
        if let Some(t) = pick(next(c).await) {
            return t;
        }
    }
}

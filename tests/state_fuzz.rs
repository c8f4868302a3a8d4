//! Randomised state-machine test: several clients act at once against a
//! live server (log in with clashing and invalid names, join, leave,
//! rename, go private and public, invite, talk, send malformed packages,
//! vanish, moderate: make groups, kick, ban, unban, list bans, hand
//! channels over, set topics, delete channels; and send direct and random
//! messages, set away texts, ignore and unignore each other), each
//! rebuilding its view of its channel (and its ignore list) from the
//! notifications it receives. After the run the views, the server's snapshot and the
//! message logs must agree:
//!
//! - every logged-in user is in exactly one channel, names are unique
//!   case-insensitively, and no channel but `general` is empty; no member
//!   of a channel is banned from it; every channel but `general` has one
//!   owner, a member;
//! - a channel deleted is left at once: its members (the deleter too) are
//!   told `channel_deleted` and are next in `general`;
//! - each client's reconstructed member list, owner, visibility and topic
//!   match the server's;
//! - every message was accepted or refused as its validity says; a member
//!   only ever receives accepted messages of its current channel, each at
//!   most once and in the sender's order, with no gap while it stayed in
//!   the channel; and a final round reaches exactly the channel's members;
//! - no message reaches a client from a name on its ignore list (as the
//!   server last told it), and a client's away text is what it asked for;
//! - a direct message is acknowledged to its sender with `to`, or refused
//!   with error `direct`, never both; each one received went to the
//!   receiver's own name, carries the id its sender was told, and arrives
//!   once at most; and in a final round each client's direct message to
//!   another reaches exactly that one, unless it ignores the sender, which
//!   refuses it, with the recipient's away text on the acknowledgement.
//!
//! The server handles one connection's packages in order, so a `ping`
//! after each action is a barrier: whatever arrives before its `pong` is
//! the action's outcome. Seeds are fixed; set `CHATMASTER_FUZZ_SEED` (and
//! `CHATMASTER_FUZZ_STEPS`) to run another one. A failure names its seed.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatmaster::client::ClientConnection;
use chatmaster::server::chat::Snapshot;
use chatmaster::wire::compress;
use chatmaster::wire::frame::FrameCodec;
use chatmaster::wire::protocol::{fold_name, Notification, ServerPackage};
use common::*;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Barrier;

/// Seeds run by default.
const SEEDS: [u64; 3] = [0x5eed_0001, 0x5eed_0002, 0x5eed_0003];
/// Concurrent clients per run.
const CLIENTS: usize = 8;
/// Actions per client per run.
const STEPS: usize = 150;

const CHANNELS: &[&str] = &[
    "general",
    "General",
    "lobby",
    "Lobby",
    "LOBBY",
    "rust",
    "Rust",
    "x",
    "y.z",
    "Ümlaut",
    "ümlaut",
    "ΣΑΣ",
    "σας",
    "bad name",
    "",
    "tab\t",
    "emoji🙂",
];

/// What one client saw and did.
#[derive(Debug, Default)]
struct ClientLog {
    /// First inconsistency noticed, with context.
    error: Option<String>,
    /// Accepted messages: seq -> channel it was sent in.
    accepted: BTreeMap<u64, String>,
    /// Messages received: (session, segment, sender, seq, channel).
    received: Vec<(u32, u32, usize, u64, String)>,
    /// Ids of received messages, by (sender, seq).
    received_ids: Vec<((usize, u64), i64)>,
    /// Ids the server acknowledged for accepted messages, by seq.
    ids: HashMap<u64, i64>,
    /// Segment -> channel, for the no-gap check.
    segments: HashMap<(u32, u32), String>,
    /// Final-round message seq, if this client took part.
    final_seq: Option<u64>,
    /// Final view, if logged in at the end.
    view: Option<View>,
    /// Direct messages received: (sender, seq, id).
    direct_received: Vec<(usize, u64, i64)>,
    /// Segments during which the client ignored somebody (its receipts
    /// may then have gaps).
    ignoring: HashSet<(u32, u32)>,
    /// The final round's direct message: (recipient client, seq, refused).
    final_direct: Option<(usize, u64, bool)>,
    /// Moderation commands the server carried out, by name.
    moderated: BTreeMap<&'static str, usize>,
}

/// A client's reconstruction of where it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct View {
    name: String,
    channel: String,
    members: BTreeSet<String>,
    owner: Option<String>,
    private: bool,
    /// The ignore list as the server last sent it, folded.
    ignores: BTreeSet<String>,
    /// The away text as the server last confirmed it.
    away: Option<String>,
    topic: Option<String>,
    /// This user's own earlier names in this session: in a cluster a
    /// direct message sent to the old name may come after the rename.
    former: BTreeSet<String>,
}

/// A connection plus its reconstructed view.
struct Session {
    conn: ClientConnection,
    /// Set once logged in.
    view: Option<View>,
    /// Counts own channel changes, so receipts can be grouped by stay.
    segment: u32,
    id: u32,
}

struct Client {
    index: usize,
    rng: StdRng,
    names: Arc<Mutex<Vec<String>>>,
    session: Option<Session>,
    sessions: u32,
    seq: u64,
    step: usize,
    log: ClientLog,
    addr: std::net::SocketAddr,
    /// One of several nodes' clients: a channel message may come late,
    /// from a sender already gone or renamed.
    cluster: bool,
}

/// Outcome of the packages that arrived up to a barrier.
#[derive(Default)]
struct Outcome {
    errors: Vec<(String, String)>,
    /// Channels this client was told were deleted.
    deleted: Vec<String>,
    /// Whether someone else put this client out of its channel (a kick,
    /// a ban, a deletion) meanwhile.
    moved_out: bool,
    /// `message_sent` acknowledgements: (id, channel).
    sent: Vec<(i64, String)>,
    /// Direct `message_sent`: (id, to, random, away).
    direct_sent: Vec<(i64, String, bool, Option<String>)>,
}

type Check = Result<(), String>;

fn frame_of(bytes: &[u8]) -> Vec<u8> {
    FrameCodec::frame(compress::deflate(bytes, 1).into()).to_vec()
}

impl Client {
    fn fail(&self, what: impl std::fmt::Display) -> String {
        format!("client {} step {}: {what}", self.index, self.step)
    }

    fn random_name(&mut self) -> String {
        let i = self.index;
        let pick = self.rng.random_range(0..10);
        let taken = self.names.lock().unwrap().clone();
        let name = match pick {
            0..=3 => {
                let suffix = ["", "_b", ".x", "-2", "Z"].choose(&mut self.rng).unwrap();
                format!("c{i}{suffix}")
            }
            4..=5 if !taken.is_empty() => taken.choose(&mut self.rng).unwrap().clone(),
            6 => format!("Σ{i}"),
            7 => ["", "a b", "emoji🙂", "tab\t", &"n".repeat(33)]
                .choose(&mut self.rng)
                .unwrap()
                .to_string(),
            _ => format!("u{}", self.rng.random_range(0..6)),
        };
        // Random case: the server must treat case variants as one name.
        let name: String = name
            .chars()
            .map(|c| {
                if self.rng.random_bool(0.3) {
                    c.to_uppercase().next().unwrap_or(c)
                } else {
                    c
                }
            })
            .collect();
        self.names.lock().unwrap().push(name.clone());
        name
    }

    /// Usually another member of the own channel (kicks and transfers
    /// need one), else any name.
    fn member_or_random(&mut self) -> String {
        let others: Vec<String> = self
            .view()
            .map(|v| {
                v.members
                    .iter()
                    .filter(|m| **m != v.name)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        match others.choose(&mut self.rng) {
            Some(m) if self.rng.random_bool(0.7) => m.clone(),
            _ => self.random_name(),
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        let s = self.session.as_mut().ok_or("no session")?;
        s.conn
            .stream_mut()
            .write_all(bytes)
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    async fn command(&mut self, name: &str, params: Option<serde_json::Value>) -> Check {
        let s = self.session.as_mut().ok_or("no session")?;
        s.conn
            .command(name, params)
            .await
            .map_err(|e| format!("send failed: {e}"))
    }

    /// Connects and reads the login request.
    async fn connect(&mut self) -> Check {
        let mut conn = ClientConnection::connect(self.addr)
            .await
            .map_err(|e| self.fail(format!("connect: {e}")))?;
        match conn.recv_timeout(WAIT).await {
            Ok(ServerPackage::Request(r)) if r.request == "login" => {}
            other => return Err(self.fail(format!("expected login request, got {other:?}"))),
        }
        self.sessions += 1;
        self.session = Some(Session {
            conn,
            view: None,
            segment: 0,
            id: self.sessions,
        });
        Ok(())
    }

    /// Applies one package to the view; returns true for the awaited pong.
    fn apply(&mut self, p: ServerPackage, token: &str, out: &mut Outcome) -> Result<bool, String> {
        let index = self.index;
        let step = self.step;
        let fail = |m: String| format!("client {index} step {step}: {m}");
        let s = self.session.as_mut().ok_or("no session")?;
        let Some(v) = s.view.as_mut() else {
            return Err(fail(format!("package before login: {p:?}")));
        };
        match p {
            ServerPackage::Notification(n) => match n {
                Notification::Pong { token: t } => return Ok(t.as_deref() == Some(token)),
                Notification::UserJoined {
                    username,
                    channel,
                    users: Some(users),
                    owner,
                    private,
                    topic,
                    ..
                } if username == v.name => {
                    v.channel = channel;
                    v.members = users.into_iter().collect();
                    v.owner = owner;
                    v.private = private.unwrap_or(false);
                    v.topic = topic;
                    s.segment += 1;
                    self.log
                        .segments
                        .insert((s.id, s.segment), v.channel.clone());
                    // An ignore list carried into the new channel may hold
                    // back a sender under one of its names (renames), so
                    // this stay may have gaps too.
                    if !v.ignores.is_empty() {
                        self.log.ignoring.insert((s.id, s.segment));
                    }
                    if !v.members.contains(&v.name) {
                        return Err(fail(format!("own join without self: {v:?}")));
                    }
                }
                Notification::UserJoined {
                    username, channel, ..
                } => {
                    if channel != v.channel || !v.members.insert(username.clone()) {
                        return Err(fail(format!("bad user_joined {username} {channel}: {v:?}")));
                    }
                }
                Notification::UserLeft {
                    username, channel, ..
                } => {
                    if channel != v.channel || !v.members.remove(&username) {
                        return Err(fail(format!("bad user_left {username} {channel}: {v:?}")));
                    }
                }
                Notification::UserRename {
                    old_username,
                    new_username,
                } => {
                    if !v.members.remove(&old_username) || !v.members.insert(new_username.clone()) {
                        return Err(fail(format!(
                            "bad rename {old_username} -> {new_username}: {v:?}"
                        )));
                    }
                    if v.name == old_username {
                        v.former.insert(old_username.clone());
                        v.name = new_username.clone();
                    }
                    if v.owner.as_deref() == Some(old_username.as_str()) {
                        v.owner = Some(new_username);
                    }
                }
                Notification::ChannelUpdate {
                    channel,
                    private,
                    owner,
                    topic,
                } => {
                    if channel != v.channel {
                        return Err(fail(format!("update for {channel} while in {}", v.channel)));
                    }
                    v.private = private;
                    v.owner = owner;
                    if let Some(t) = topic {
                        v.topic = (!t.is_empty()).then_some(t);
                    }
                }
                // The own user_joined for general follows each of these.
                Notification::Kicked { channel, .. } if channel == v.channel => {
                    out.moved_out = true
                }
                Notification::ChannelDeleted { channel, .. } if channel == v.channel => {
                    out.moved_out = true;
                    out.deleted.push(channel)
                }
                Notification::Kicked { .. } | Notification::ChannelDeleted { .. } => {
                    return Err(fail(format!("{n:?} while in {}", v.channel)))
                }
                Notification::GroupCreated { channel, .. } if channel == v.channel => {}
                Notification::GroupCreated { .. } => {
                    return Err(fail(format!("{n:?} but in {}", v.channel)))
                }
                Notification::Banned { .. }
                | Notification::Unbanned { .. }
                | Notification::BanList { .. } => {}
                // Nobody here is an operator.
                Notification::ServerNotice { .. } => {
                    return Err(fail(format!("notice from a non-operator: {n:?}")))
                }
                Notification::Invited { .. }
                | Notification::InviteSent { .. }
                | Notification::ChannelList { .. }
                | Notification::Who { .. }
                | Notification::Whois { .. } => {}
                Notification::MessageSent {
                    id,
                    channel,
                    to,
                    random,
                    away,
                    ..
                } => match to {
                    Some(to) => out.direct_sent.push((id, to, random == Some(true), away)),
                    None => out.sent.push((id, channel.unwrap_or_default())),
                },
                Notification::IgnoreList { usernames } => {
                    v.ignores = usernames.iter().map(|n| fold_name(n)).collect();
                    // Receipts may have gaps from here on while it is not empty.
                    s.segment += 1;
                    self.log
                        .segments
                        .insert((s.id, s.segment), v.channel.clone());
                    if !v.ignores.is_empty() {
                        self.log.ignoring.insert((s.id, s.segment));
                    }
                }
                Notification::Away { message } => v.away = message,
                Notification::ServerShutdown {} => return Err(fail("unexpected shutdown".into())),
                Notification::Registered { .. } | Notification::PasswordChanged {} => {
                    return Err(fail(format!("unexpected account notice {n:?}")))
                }
                // Answers to reads of stored messages, and edits and
                // deletions in the client's channel (or its own).
                Notification::History { .. }
                | Notification::SearchResults { .. }
                | Notification::MessageEdited { .. }
                | Notification::MessageDeleted { .. } => {}
                // Only accounts mark, and these clients are guests.
                Notification::ReadMarked { .. } => {
                    return Err(fail(format!("unexpected read mark {n:?}")))
                }
                // Channels here stay far below the presence limit, where
                // every arrival and departure is announced instead.
                Notification::ChannelStats { .. } => {
                    return Err(fail(format!(
                        "channel_stats below the presence limit: {n:?}"
                    )))
                }
            },
            ServerPackage::Message(m) if m.to.is_some() => {
                let mine = m.to.as_ref() == Some(&v.name)
                    || (self.cluster && m.to.as_ref().is_some_and(|to| v.former.contains(to)));
                if !mine || m.channel.is_some() {
                    return Err(fail(format!("direct {m:?} misdelivered to {v:?}")));
                }
                if v.ignores.contains(&fold_name(&m.username)) {
                    return Err(fail(format!("direct {m:?} from an ignored name: {v:?}")));
                }
                let (sender, seq) =
                    parse_tag(&m.message).ok_or_else(|| fail(format!("untagged message {m:?}")))?;
                self.log.received_ids.push(((sender, seq), m.id));
                self.log.direct_received.push((sender, seq, m.id));
            }
            ServerPackage::Message(m) => {
                if v.ignores.contains(&fold_name(&m.username)) {
                    return Err(fail(format!("{m:?} from an ignored name: {v:?}")));
                }
                // In a cluster a sender's last messages may come after its
                // departure or rename was announced (its node applied that
                // from the log before the messages came on the channel's
                // subject), even to someone whose own join the node applied
                // in between, who never saw the sender as a member. They
                // were sent in this channel, so they are delivered late,
                // not dropped: the sender's name cannot be judged here, and
                // channel and id are checked against what the sender was
                // told at the end (`check_messages`).
                let member = self.cluster || v.members.contains(&m.username);
                if m.channel.as_ref() != Some(&v.channel) || !member || m.username == v.name {
                    return Err(fail(format!("misdelivered {m:?} to {v:?}")));
                }
                let (sender, seq) =
                    parse_tag(&m.message).ok_or_else(|| fail(format!("untagged message {m:?}")))?;
                self.log.received_ids.push(((sender, seq), m.id));
                self.log
                    .received
                    .push((s.id, s.segment, sender, seq, v.channel.clone()));
            }
            ServerPackage::Error(e) => out.errors.push((e.error_type, e.message)),
            other => return Err(fail(format!("unexpected {other:?}"))),
        }
        Ok(false)
    }

    /// Sends a ping and applies everything up to its pong.
    async fn barrier(&mut self) -> Result<Outcome, String> {
        let token = format!("s{}", self.step);
        self.command("ping", Some(json!({ "token": token })))
            .await?;
        let mut out = Outcome::default();
        loop {
            let s = self.session.as_mut().ok_or("no session")?;
            let p = s
                .conn
                .recv_timeout(WAIT)
                .await
                .map_err(|e| self.fail(format!("waiting for pong: {e}")))?;
            if self.apply(p, &token, &mut out)? {
                return Ok(out);
            }
        }
    }

    /// Receives until client `sender`'s direct message `seq` has come
    /// (see the final round of [`run_client`]).
    async fn await_direct(&mut self, sender: usize, seq: u64) -> Check {
        let mut out = Outcome::default();
        while !self
            .log
            .direct_received
            .iter()
            .any(|m| m.0 == sender && m.1 == seq)
        {
            let s = self.session.as_mut().ok_or("no session")?;
            let p = s.conn.recv_timeout(WAIT).await.map_err(|e| {
                self.fail(format!("waiting for the final direct c{sender}#{seq}: {e}"))
            })?;
            self.apply(p, "", &mut out)?;
        }
        Ok(())
    }

    /// Before login every package gets exactly one answer: one error, or
    /// for `login` a session (plus a new request or the own user_joined).
    async fn expect_login_error(&mut self) -> Check {
        let s = self.session.as_mut().ok_or("no session")?;
        match s.conn.recv_timeout(WAIT).await {
            Ok(ServerPackage::Error(e))
                if e.error_type == "login" || e.error_type == "protocol" =>
            {
                Ok(())
            }
            other => Err(self.fail(format!("expected an error before login, got {other:?}"))),
        }
    }

    async fn login(&mut self) -> Check {
        let name = self.random_name();
        self.command("login", Some(json!({ "username": name })))
            .await?;
        let s = self.session.as_mut().ok_or("no session")?;
        let session = match s.conn.recv_timeout(WAIT).await {
            Ok(ServerPackage::Session(session)) => session,
            other => return Err(self.fail(format!("expected session, got {other:?}"))),
        };
        let valid = chatmaster::wire::protocol::validate_name(&name, 32).is_ok();
        if !session.status {
            if !valid && session.reason.as_deref() == Some("Username is already taken.") {
                return Err(self.fail(format!("invalid {name:?} refused as taken")));
            }
            match s.conn.recv_timeout(WAIT).await {
                Ok(ServerPackage::Request(_)) => return Ok(()),
                other => return Err(self.fail(format!("expected request, got {other:?}"))),
            }
        }
        if !valid || session.username.as_deref() != Some(name.as_str()) {
            return Err(self.fail(format!("login as {name:?} accepted as {session:?}")));
        }
        s.view = Some(View {
            name,
            ..View::default()
        });
        let out = self.barrier().await?;
        if !out.errors.is_empty() {
            return Err(self.fail(format!("errors after login: {:?}", out.errors)));
        }
        Ok(())
    }

    /// Sends chat text and records whether the server took it.
    async fn talk(&mut self, valid: bool) -> Check {
        self.seq += 1;
        let tag = format!("c{}#{}", self.index, self.seq);
        let text = if valid {
            let words = self.rng.random_range(0..5);
            format!("{tag} {}", "blah ".repeat(words))
                .trim_end()
                .to_owned()
        } else {
            match self.rng.random_range(0..3) {
                0 => String::new(),
                1 => format!("{tag}\u{7}"),
                _ => format!("{tag} {}", "x".repeat(5000)),
            }
        };
        let channel = self.view().map(|v| v.channel.clone()).unwrap_or_default();
        let s = self.session.as_mut().ok_or("no session")?;
        s.conn
            .message(&text)
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        let out = self.barrier().await?;
        let refused = out.errors.iter().any(|(t, _)| t == "message");
        if refused == valid {
            return Err(self.fail(format!(
                "message valid={valid} but refused={refused}: {:?}",
                out.errors
            )));
        }
        // The pong follows the message's acknowledgement: exactly one for
        // an accepted message, none for a refused one.
        let expected_acks = usize::from(valid);
        // Put out of the channel by someone else before the message was
        // handled, the sender sent it in general.
        let channel = match out.sent.first() {
            Some((_, c)) if out.moved_out && c == "general" => c.clone(),
            _ => channel,
        };
        if out.sent.len() != expected_acks || out.sent.iter().any(|(_, c)| *c != channel) {
            return Err(self.fail(format!(
                "message valid={valid} in {channel} acknowledged as {:?}",
                out.sent
            )));
        }
        if let Some(&(id, _)) = out.sent.first() {
            if self.log.ids.values().any(|&before| before >= id) {
                return Err(self.fail(format!("id {id} not above this client's earlier ids")));
            }
            self.log.ids.insert(self.seq, id);
        }
        if valid {
            self.log.accepted.insert(self.seq, channel);
        }
        Ok(())
    }

    fn view(&self) -> Option<&View> {
        self.session.as_ref().and_then(|s| s.view.as_ref())
    }

    /// Sends a direct message (to `to`, or with `random` to whomever the
    /// server picks) and checks it was acknowledged with a recipient or
    /// refused, exactly one of the two. Returns (acknowledged to, away).
    async fn direct(
        &mut self,
        to: Option<String>,
        valid: bool,
    ) -> Result<Option<(String, Option<String>)>, String> {
        self.seq += 1;
        let tag = format!("c{}#{}", self.index, self.seq);
        let text = if valid { tag } else { format!("{tag}\u{7}") };
        let (command, params, kind) = match &to {
            Some(to) => (
                "direct",
                json!({ "username": to, "message": text }),
                "direct",
            ),
            None => ("random", json!({ "message": text }), "random"),
        };
        self.command(command, Some(params)).await?;
        let out = self.barrier().await?;
        let refused = out.errors.iter().filter(|(t, _)| t == kind).count();
        if out.errors.len() != refused || !out.sent.is_empty() {
            return Err(self.fail(format!("{kind}: {:?} {:?}", out.errors, out.sent)));
        }
        match (refused, out.direct_sent.as_slice()) {
            (1, []) => Ok(None),
            (0, [(id, acked_to, random, away)]) if valid => {
                if *random != to.is_none()
                    || to
                        .as_ref()
                        .is_some_and(|t| fold_name(t) != fold_name(acked_to))
                {
                    return Err(self.fail(format!(
                        "{kind} to {to:?} acknowledged as to {acked_to} random={random}"
                    )));
                }
                if self.log.ids.values().any(|&before| before >= *id) {
                    return Err(self.fail(format!("id {id} not above this client's earlier ids")));
                }
                self.log.ids.insert(self.seq, *id);
                Ok(Some((acked_to.clone(), away.clone())))
            }
            other => Err(self.fail(format!(
                "{kind} valid={valid}: refused {}, acknowledged {:?}",
                other.0, other.1
            ))),
        }
    }

    async fn malformed(&mut self) -> Check {
        let bytes = match self.rng.random_range(0..6) {
            0 => {
                let n = self.rng.random_range(1..64);
                let junk: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
                FrameCodec::frame(junk.into()).to_vec()
            }
            1 => frame_of(b"{not json"),
            2 => frame_of(br#"{"type":"session","data":{"status":true}}"#),
            3 => frame_of(br#"{"type":"command","data":{"command":"fly"}}"#),
            4 => {
                frame_of(br#"{"type":"command","data":{"command":"join","parameters":{"room":1}}}"#)
            }
            _ => frame_of(b"\xff\xfe"),
        };
        self.send_raw(&bytes).await
    }

    async fn step_logged_out(&mut self) -> Check {
        match self.rng.random_range(0..10) {
            0..=6 => self.login().await,
            7 => {
                self.malformed().await?;
                self.expect_login_error().await
            }
            8 => {
                self.command("join", Some(json!({"channel": "lobby"})))
                    .await?;
                self.expect_login_error().await
            }
            _ => {
                self.session = None;
                Ok(())
            }
        }
    }

    async fn step_logged_in(&mut self) -> Check {
        let roll = self.rng.random_range(0..136);
        if roll < 3 {
            // Vanish, sometimes mid-frame.
            if self.rng.random_bool(0.5) {
                let _ = self.send_raw(&[0, 0, 1]).await;
            }
            self.session = None;
            return Ok(());
        }
        if roll < 4 {
            // A fatal frame: error, then the server closes.
            self.send_raw(&[0x7f, 0xff, 0xff, 0xff]).await?;
            let mut s = self.session.take().ok_or("no session")?;
            let mut saw_error = false;
            loop {
                match s.conn.recv_timeout(WAIT).await {
                    Ok(ServerPackage::Error(e)) if e.error_type == "protocol" => saw_error = true,
                    Ok(_) => {}
                    Err(chatmaster::client::ClientError::Timeout(_)) => {
                        return Err(self.fail("not closed after a fatal frame"))
                    }
                    Err(_) => break,
                }
            }
            return if saw_error {
                Ok(())
            } else {
                Err(self.fail("closed without an error"))
            };
        }
        let in_channel = self.view().map(|v| v.channel.clone()).unwrap_or_default();
        let mut deleting = false;
        match roll {
            4..=33 => return self.talk(true).await,
            34..=36 => return self.talk(false).await,
            37..=54 => {
                let ch = CHANNELS.choose(&mut self.rng).unwrap().to_string();
                self.command("join", Some(json!({ "channel": ch }))).await?
            }
            55..=64 => self.command("leave", None).await?,
            65..=71 => {
                let name = self.random_name();
                self.command("rename", Some(json!({ "username": name })))
                    .await?
            }
            72..=76 => self.command("private", None).await?,
            77..=80 => self.command("public", None).await?,
            81..=88 => {
                let name = self.random_name();
                self.command("invite", Some(json!({ "username": name })))
                    .await?
            }
            89..=90 => self.command("channels", None).await?,
            91..=95 => {
                let name = self.member_or_random();
                let reason = self.rng.random_bool(0.5).then_some("go away");
                self.command("kick", Some(json!({ "username": name, "reason": reason })))
                    .await?
            }
            96..=100 => {
                let name = self.member_or_random();
                self.command("ban", Some(json!({ "username": name })))
                    .await?
            }
            101..=103 => {
                let name = self.random_name();
                self.command("unban", Some(json!({ "username": name })))
                    .await?
            }
            104 => self.command("bans", None).await?,
            105..=108 => {
                let name = self.member_or_random();
                self.command("transfer", Some(json!({ "username": name })))
                    .await?
            }
            109..=111 => {
                let topic = ["", "on topic", "\u{7}bell", &"t".repeat(301)]
                    .choose(&mut self.rng)
                    .unwrap()
                    .to_string();
                self.command("topic", Some(json!({ "topic": topic })))
                    .await?
            }
            112..=113 => {
                deleting = true;
                self.command("delete_channel", None).await?
            }
            114..=118 => {
                let ch = CHANNELS.choose(&mut self.rng).unwrap().to_string();
                let recipients: Vec<String> = (0..self.rng.random_range(0..4))
                    .map(|_| self.random_name())
                    .collect();
                let message = self.rng.random_bool(0.3).then(|| {
                    self.seq += 1;
                    format!("c{}#{}", self.index, self.seq)
                });
                self.command(
                    "group",
                    Some(json!({ "channel": ch, "recipients": recipients, "message": message })),
                )
                .await?
            }
            119..=121 => {
                let name = self.random_name();
                let valid = self.rng.random_bool(0.9);
                return self.direct(Some(name), valid).await.map(|_| ());
            }
            122 => return self.direct(None, true).await.map(|_| ()),
            123..=124 => {
                let cmd = if self.rng.random_bool(0.6) {
                    "ignore"
                } else {
                    "unignore"
                };
                let name = self.random_name();
                self.command(cmd, Some(json!({ "username": name }))).await?
            }
            125 => {
                let away = *["", "lunch", "back soon"].choose(&mut self.rng).unwrap();
                self.command("away", Some(json!({ "message": away })))
                    .await?;
                let out = self.barrier().await?;
                let want = Some(away.to_owned()).filter(|a| !a.is_empty());
                if !out.errors.is_empty() || self.view().map(|v| &v.away) != Some(&want) {
                    return Err(self.fail(format!("away {away:?}: {:?}", out.errors)));
                }
                return Ok(());
            }
            132..=135 => {
                // Reads and changes of stored messages, with channels and
                // ids that may or may not be there (or be the client's).
                let ch = CHANNELS.choose(&mut self.rng).unwrap().to_string();
                let id = self.rng.random_range(0..400);
                let (name, params) = match self.rng.random_range(0..5) {
                    0 => ("history", json!({"channel": ch, "before": id, "limit": 5})),
                    1 => ("search", json!({"query": "c0 OR (x", "rows": 3})),
                    2 => ("edit", json!({"id": id, "message": "edited"})),
                    3 => ("delete", json!({"id": id})),
                    _ => ("search", json!({"query": "fuzz*", "channel": ch})),
                };
                self.command(name, Some(params)).await?
            }
            _ => self.malformed().await?,
        }
        let out = self.barrier().await?;
        if let Some((t, m)) = out.errors.iter().find(|(t, _)| {
            !matches!(
                t.as_str(),
                "protocol"
                    | "join"
                    | "leave"
                    | "rename"
                    | "private"
                    | "public"
                    | "invite"
                    | "history"
                    | "search"
                    | "edit"
                    | "delete"
                    | "ignore"
                    | "unignore"
                    | "kick"
                    | "ban"
                    | "unban"
                    | "bans"
                    | "transfer"
                    | "topic"
                    | "delete_channel"
                    | "group"
            )
        }) {
            return Err(self.fail(format!("unexpected error {t}: {m}")));
        }
        // A group's first message is the one message a command may send:
        // acknowledged in the group, and recorded as accepted there.
        let view_channel = self.view().map(|v| v.channel.clone()).unwrap_or_default();
        for (id, channel) in &out.sent {
            if (114..=118).contains(&roll) && *channel == view_channel {
                self.log.ids.insert(self.seq, *id);
                self.log.accepted.insert(self.seq, channel.clone());
            } else {
                return Err(self.fail(format!("unexpected message_sent {id} in {channel}")));
            }
        }
        let moderation = match roll {
            91..=95 => Some("kick"),
            96..=100 => Some("ban"),
            101..=103 => Some("unban"),
            105..=108 => Some("transfer"),
            109..=111 => Some("topic"),
            112..=113 => Some("delete_channel"),
            114..=118 => Some("group"),
            _ => None,
        };
        if let Some(name) = moderation.filter(|_| out.errors.is_empty()) {
            *self.log.moderated.entry(name).or_default() += 1;
        }
        if deleting
            && out.errors.is_empty()
            && (out.deleted != [in_channel.clone()] || view_channel != "general")
        {
            return Err(self.fail(format!(
                "deleted {in_channel}: told {:?}, now in {view_channel}",
                out.deleted
            )));
        }
        Ok(())
    }

    async fn step(&mut self) -> Check {
        if self.session.is_none() {
            return self.connect().await;
        }
        if self.view().is_none() {
            self.step_logged_out().await
        } else {
            self.step_logged_in().await
        }
    }
}

/// `c{sender}#{seq}` at the start of a message.
fn parse_tag(text: &str) -> Option<(usize, u64)> {
    let rest = text.strip_prefix('c')?;
    let (sender, rest) = rest.split_once('#')?;
    let seq = rest.split(' ').next()?;
    Some((sender.parse().ok()?, seq.parse().ok()?))
}

/// Runs one client through the random phase and the final checks,
/// meeting the others at each barrier even after a failure.
/// A client's final direct message once delivered: (recipient, seq).
type FinalDirect = Option<(usize, u64)>;

async fn run_client(
    mut c: Client,
    steps: usize,
    barrier: Arc<Barrier>,
    logged_in: Arc<AtomicUsize>,
    finals: Arc<Mutex<Vec<Option<View>>>>,
    directs: Arc<Mutex<Vec<FinalDirect>>>,
) -> ClientLog {
    let mut result: Check = Ok(());
    for step in 0..steps {
        c.step = step;
        result = c.step().await;
        if result.is_err() {
            break;
        }
    }
    if result.is_err() {
        c.session = None;
    }
    if c.view().is_some() {
        logged_in.fetch_add(1, Ordering::SeqCst);
    }
    // A: actions done. B: the server has settled every disconnect.
    barrier.wait().await;
    barrier.wait().await;
    c.step = steps;
    if result.is_ok() && c.view().is_some() {
        result = c.barrier().await.map(|_| ());
        c.log.view = c.view().cloned();
        finals.lock().unwrap()[c.index] = c.log.view.clone();
    }
    // C: views final; the main task compares them with the snapshot.
    barrier.wait().await;
    if result.is_ok() && c.view().is_some() {
        c.step = steps + 1;
        result = c.talk(true).await;
        c.log.final_seq = Some(c.seq);
    }
    if result.is_ok() && c.view().is_some() {
        // A direct message to the next client still logged in.
        let views = finals.lock().unwrap().clone();
        let next = (1..CLIENTS)
            .map(|k| (c.index + k) % CLIENTS)
            .find(|&r| views[r].is_some());
        if let (Some(r), Some(me)) = (next, views[c.index].clone()) {
            let target = views[r].clone().unwrap_or_default();
            let ignored = target.ignores.contains(&fold_name(&me.name));
            c.step = steps + 2;
            result = match c.direct(Some(target.name.clone()), true).await {
                Ok(None) if ignored => Ok(()),
                Ok(Some((to, away))) if !ignored && to == target.name && away == target.away => {
                    Ok(())
                }
                Ok(other) => Err(c.fail(format!(
                    "final direct to {target:?} (ignored={ignored}) gave {other:?}"
                ))),
                Err(e) => Err(e),
            };
            c.log.final_direct = Some((r, c.seq, ignored));
            if result.is_ok() && !ignored {
                directs.lock().unwrap()[c.index] = Some((r, c.seq));
            }
        }
    }
    // D: final messages sent; collect them.
    barrier.wait().await;
    if result.is_ok() && c.view().is_some() {
        c.step = steps + 3;
        result = c.barrier().await.map(|_| ());
    }
    // In a cluster a direct message to a user of another node travels
    // there after its sender's `message_sent`, so the pong above may come
    // first: wait for the one this client is owed (with WAIT), if any.
    if result.is_ok() && c.cluster && c.view().is_some() {
        let owed: Vec<(usize, u64)> = directs
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .filter_map(|(sender, d)| match d {
                Some((r, seq)) if *r == c.index => Some((sender, *seq)),
                _ => None,
            })
            .collect();
        for (sender, seq) in owed {
            if result.is_ok() {
                result = c.await_direct(sender, seq).await;
            }
        }
    }
    if let Err(e) = result {
        c.log.error = Some(e);
    }
    c.log
}

fn check_snapshot(snap: &Snapshot, views: &[Option<View>]) -> Check {
    snap.check_invariants()?;
    let live: Vec<&View> = views.iter().flatten().collect();
    if live.len() != snap.users.len() {
        return Err(format!(
            "{} clients logged in, server has {:?}",
            live.len(),
            snap.users
        ));
    }
    for v in live {
        let ch = snap
            .channels
            .iter()
            .find(|c| c.name == v.channel)
            .ok_or_else(|| format!("{} thinks it is in missing {}", v.name, v.channel))?;
        let actual: BTreeSet<String> = ch.members.iter().cloned().collect();
        if actual != v.members
            || ch.owner != v.owner
            || ch.private != v.private
            || ch.topic != v.topic
        {
            return Err(format!("view of {} differs: {v:?} vs {ch:?}", v.name));
        }
    }
    Ok(())
}

fn check_messages(logs: &[ClientLog], snap: &Snapshot, views: &[Option<View>]) -> Check {
    // Every id is the server's one answer for one message: unique, and
    // what each recipient got is what the sender was acknowledged with.
    let mut all_ids = HashSet::new();
    for log in logs {
        for id in log.ids.values() {
            if !all_ids.insert(*id) {
                return Err(format!("id {id} acknowledged twice"));
            }
        }
    }
    for (r, log) in logs.iter().enumerate() {
        for ((sender, seq), id) in &log.received_ids {
            let acked = logs.get(*sender).and_then(|l| l.ids.get(seq));
            if acked != Some(id) {
                return Err(format!(
                    "client {r} got c{sender}#{seq} with id {id}, the sender was told {acked:?}"
                ));
            }
        }
    }
    for (r, log) in logs.iter().enumerate() {
        let mut last: HashMap<(u32, usize), u64> = HashMap::new();
        let mut by_segment: HashMap<(u32, u32, usize), Vec<u64>> = HashMap::new();
        for (session, segment, sender, seq, channel) in &log.received {
            let accepted = logs
                .get(*sender)
                .and_then(|l| l.accepted.get(seq))
                .ok_or_else(|| format!("client {r} got c{sender}#{seq}, never accepted"))?;
            if accepted != channel {
                return Err(format!(
                    "c{sender}#{seq} sent in {accepted} arrived as {channel}"
                ));
            }
            if let Some(prev) = last.insert((*session, *sender), *seq) {
                if prev >= *seq {
                    return Err(format!("client {r} got c{sender}#{seq} after #{prev}"));
                }
            }
            by_segment
                .entry((*session, *segment, *sender))
                .or_default()
                .push(*seq);
        }
        // While r stayed in a channel, nothing the sender said there between
        // two received messages may be missing.
        for ((session, segment, sender), seqs) in &by_segment {
            if log.ignoring.contains(&(*session, *segment)) {
                continue;
            }
            let channel = &log.segments[&(*session, *segment)];
            for pair in seqs.windows(2) {
                if let Some((missing, _)) = logs[*sender]
                    .accepted
                    .range(pair[0] + 1..pair[1])
                    .find(|(_, ch)| *ch == channel)
                {
                    return Err(format!(
                        "client {r} missed c{sender}#{missing} in {channel} between #{} and #{}",
                        pair[0], pair[1]
                    ));
                }
            }
        }
    }
    // No direct message arrived twice, anywhere.
    let mut direct_seen = HashSet::new();
    for log in logs {
        for (sender, seq, id) in &log.direct_received {
            if !direct_seen.insert(*id) {
                return Err(format!("direct c{sender}#{seq} (id {id}) received twice"));
            }
        }
    }
    // The final direct messages reached exactly their recipients.
    for (s, log) in logs.iter().enumerate() {
        let Some((r, seq, refused)) = log.final_direct else {
            continue;
        };
        let got = logs[r]
            .direct_received
            .iter()
            .filter(|m| m.0 == s && m.1 == seq)
            .count();
        if got != usize::from(!refused) {
            return Err(format!(
                "final direct c{s}#{seq} reached client {r} {got} times (refused={refused})"
            ));
        }
    }
    // The final round reached exactly the other members of each channel.
    for (s, log) in logs.iter().enumerate() {
        let (Some(seq), Some(view)) = (log.final_seq, views[s].as_ref()) else {
            continue;
        };
        let members = &snap
            .channels
            .iter()
            .find(|c| c.name == view.channel)
            .ok_or("channel vanished")?
            .members;
        for (r, other) in logs.iter().enumerate() {
            let Some(rv) = views[r].as_ref() else {
                continue;
            };
            let got = other
                .received
                .iter()
                .filter(|m| m.2 == s && m.3 == seq)
                .count();
            let ignored = rv.ignores.contains(&fold_name(&view.name));
            let expected = usize::from(r != s && members.contains(&rv.name) && !ignored);
            if got != expected {
                return Err(format!(
                    "final c{s}#{seq} reached client {r} {got} times, expected {expected}"
                ));
            }
        }
    }
    Ok(())
}

/// One node, or several of one cluster ([`common::cluster`]), the
/// clients spread over them.
enum Servers {
    /// A node alone.
    One(TestServer),
    /// A cluster's nodes.
    Cluster(common::cluster::Nodes),
}

impl Servers {
    fn nodes(&self) -> Vec<&TestServer> {
        match self {
            Servers::One(s) => vec![s],
            Servers::Cluster(c) => c.nodes.iter().collect(),
        }
    }

    /// Every node's snapshot, which must be one and the same.
    fn snapshot(&self) -> Result<Snapshot, String> {
        match self {
            Servers::One(s) => Ok(s.hub.snapshot()),
            Servers::Cluster(c) => c.same_everywhere(),
        }
    }

    async fn shutdown(self) {
        match self {
            Servers::One(s) => s.shutdown().await,
            Servers::Cluster(c) => c.shutdown().await,
        }
    }
}

async fn run_seed(seed: u64, steps: usize, nodes: usize) -> Result<String, String> {
    let servers = match nodes {
        1 => Servers::One(TestServer::start_default().await),
        n => Servers::Cluster(common::cluster::Nodes::start(n).await),
    };
    let addrs: Vec<std::net::SocketAddr> = servers.nodes().iter().map(|s| s.addr).collect();
    let names = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let finals = Arc::new(Mutex::new(vec![None; CLIENTS]));
    // Each client's final direct message, delivered: (recipient, seq).
    let directs = Arc::new(Mutex::new(vec![None; CLIENTS]));
    let logged_in = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for index in 0..CLIENTS {
        let client = Client {
            index,
            rng: StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            names: names.clone(),
            session: None,
            sessions: 0,
            seq: 0,
            step: 0,
            log: ClientLog::default(),
            addr: addrs[index % addrs.len()],
            cluster: addrs.len() > 1,
        };
        tasks.push(tokio::spawn(run_client(
            client,
            steps,
            barrier.clone(),
            logged_in.clone(),
            finals.clone(),
            directs.clone(),
        )));
    }
    barrier.wait().await;
    // Abrupt disconnects are noticed by the server asynchronously; wait
    // until its user count matches the clients still logged in.
    let want = logged_in.load(Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + WAIT;
    for server in servers.nodes() {
        while server.hub.user_count() != want {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "server kept {:?}, {want} clients logged in",
                    server.hub.snapshot()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    barrier.wait().await;
    barrier.wait().await;
    let snap = servers.snapshot()?;
    for server in servers.nodes() {
        server.hub.check_member_lists()?;
        server.hub.check_people()?;
    }
    barrier.wait().await;
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await.map_err(|e| format!("client task panicked: {e}"))?);
    }
    if let Some(e) = logs.iter().find_map(|l| l.error.clone()) {
        return Err(e);
    }
    let views: Vec<Option<View>> = logs.iter().map(|l| l.view.clone()).collect();
    check_snapshot(&snap, &views)?;
    check_messages(&logs, &snap, &views)?;
    servers.shutdown().await;
    let mut moderated: BTreeMap<&str, usize> = BTreeMap::new();
    for log in &logs {
        for (name, n) in &log.moderated {
            *moderated.entry(name).or_default() += n;
        }
    }
    let accepted: usize = logs.iter().map(|l| l.accepted.len()).sum();
    let received: usize = logs.iter().map(|l| l.received.len()).sum();
    let direct: usize = logs.iter().map(|l| l.direct_received.len()).sum();
    Ok(format!(
        "{want} logged in at the end, {} channels, {accepted} messages accepted, {received} deliveries, {direct} direct messages received, moderation done {moderated:?}",
        snap.channels.len()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_keep_the_state_consistent() {
    let seeds: Vec<u64> = match std::env::var("CHATMASTER_FUZZ_SEED") {
        Ok(s) => vec![s.parse().expect("CHATMASTER_FUZZ_SEED must be a u64")],
        Err(_) => SEEDS.to_vec(),
    };
    let steps = std::env::var("CHATMASTER_FUZZ_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEPS);
    for seed in seeds {
        let run = tokio::time::timeout(Duration::from_secs(120), run_seed(seed, steps, 1)).await;
        match run {
            Ok(Ok(summary)) => println!("seed {seed}: {summary}"),
            Ok(Err(e)) => panic!("state fuzz failed with CHATMASTER_FUZZ_SEED={seed}: {e}"),
            Err(_) => panic!("state fuzz timed out with CHATMASTER_FUZZ_SEED={seed}"),
        }
    }
}

/// The same clients spread over three nodes of one cluster: after the run
/// every node's state is the same, and what each client saw agrees with
/// it as it does with a node alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_on_three_nodes_keep_one_state() {
    let seeds: Vec<u64> = match std::env::var("CHATMASTER_FUZZ_SEED") {
        Ok(s) => vec![s.parse().expect("CHATMASTER_FUZZ_SEED must be a u64")],
        Err(_) => SEEDS[..1].to_vec(),
    };
    let steps = std::env::var("CHATMASTER_FUZZ_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEPS);
    for seed in seeds {
        let run = tokio::time::timeout(Duration::from_secs(120), run_seed(seed, steps, 3)).await;
        match run {
            Ok(Ok(summary)) => println!("seed {seed} on three nodes: {summary}"),
            Ok(Err(e)) => {
                panic!("cluster state fuzz failed with CHATMASTER_FUZZ_SEED={seed}: {e}")
            }
            Err(_) => panic!("cluster state fuzz timed out with CHATMASTER_FUZZ_SEED={seed}"),
        }
    }
}

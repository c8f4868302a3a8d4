//! One node's part in a cluster: the replicated chat state kept in step
//! through the shared log, and what travels outside it.
//!
//! # Design
//! Every node keeps a full replica of the chat state (the [`Hub`]).
//! Changes go through one totally ordered log ([`Link::append`],
//! [`Link::follow`]) as [`Event`]s, and every node applies every event in
//! log order with the same deterministic code: the very `Hub` operations
//! a node alone runs. The node where a command arrives (its *origin*)
//! appends the event and waits until its own follower has applied it,
//! then answers its user with the outcome computed at apply time, exactly
//! as every other node computed it. So of two nodes logging in the same
//! name at the same moment, the first in the log wins on every node, and
//! the other's user gets the usual "name taken" refusal. User ids are
//! handed out in log order, so they are the same on every node.
//!
//! Users have a home node. A user of another node has a stand-in queue
//! that drops what is pushed ([`crate::server::outbox::Outbox::remote`]):
//! every node computes the same notifications, and each delivers only to
//! its own users. Remote users count everywhere (`who`, member lists,
//! ownership, bans...). Store writes a change asks for ([`Persist`]) are
//! carried out by the origin only, also when the command that asked gave
//! up waiting (the change holds everywhere all the same).
//!
//! Channel messages do not go through the log: the origin checks them
//! against its replica, gives them an id, delivers to its own members,
//! journals them, and publishes the encoded package once on the topic
//! `chan.<hex of the folded channel key>` behind a short header (the
//! origin's key, to skip its own, and the sender's folded name, for
//! ignore lists). Nodes follow a channel's topic only while it has local
//! members, and push the bytes as they are. Per-sender order holds since
//! one node publishes in order, through one queue. A direct message to a
//! user of another node goes to `node.<hex of that node's key>` with the
//! recipient's id.
//!
//! # Log and topics in step
//! The log orders changes, topics carry messages, and nothing orders one
//! against the other by itself. Two rules do:
//! - a node follows a channel's topic before it appends an event that may
//!   bring its user into the channel ([`Cluster::hold_channel`]), and
//!   follows `general` always (other nodes' events put users there), so
//!   whoever learns of the arrival publishes to a subscribed node;
//! - every package carries the sequence its origin had applied (or was
//!   applying) when it checked it, and a node that has applied less holds
//!   it, and all after it, until it has caught up (`Cluster::receive`).
//!
//! So a member always gets what was sent once its arrival was known, and
//! no node takes a newcomer's first words for a stranger's.
//!
//! # Message ids
//! Alone, ids count up from the store's highest. In a cluster each node
//! claims an id slot `slot.<n>` (the lowest free `n` below [`SLOTS`])
//! under its lease, and an id is `max(previous + 1, ticks) * SLOTS +
//! slot`, where `ticks` counts [`TICK_MICROS`] µs since [`ID_EPOCH_SECS`]:
//! unique across nodes, increasing in time, below 2^53 (JavaScript's exact
//! integers) for about 140 years, and a node may hand out 125,000 ids a
//! second for as long as it likes (more in bursts, running ahead of time).
//!
//! # Liveness
//! Each node publishes a heartbeat (its key: name and incarnation) every
//! heartbeat interval (a quarter of the lease by default) and renews its
//! claims. A node not
//! heard from within the lease is declared gone by whichever node notices
//! first: it appends [`Event::NodeGone`] (applying it twice does nothing
//! the second time), which removes that node's users on every node, shown
//! leaving as usual. A node that applies a `NodeGone` naming itself (it
//! was cut off too long) tells its users why, closes their connections
//! and goes on as a new incarnation: its replica is still right, since it
//! applied the same log, so it needs no snapshot; its users log in again.
//!
//! # Joining and faults
//! A node starting listens for heartbeats a little longer than one
//! interval; if a peer is alive it asks for a snapshot on topic
//! `snapshot` (the replica and the last sequence applied) and follows the
//! log from there; otherwise it starts alone from [`Link::last_seq`]. If
//! `append` fails, the command is refused with a clear error and nothing
//! changes. A follower error (events discarded before this node read
//! them) resynchronises from a snapshot.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ClusterError, Delivery, Link};
use crate::server::chat::{
    ChatError, Hub, LoginSetup, Outbox, Persist, ReplicaState, UserId, GENERAL,
};
use crate::server::commands::CommandError;
use crate::store::{AccountId, ChannelId, MessageId};

/// Id slots: at most this many nodes at once.
pub const SLOTS: u64 = 16;
/// One tick of the message id clock, in microseconds.
pub const TICK_MICROS: u64 = 8;
/// Start of the message id clock: 2026-01-01T00:00:00Z, in Unix seconds.
pub const ID_EPOCH_SECS: u64 = 1_767_225_600;
/// Version of the log's `Envelope` layout; entries of another are skipped.
pub const EVENT_VERSION: u32 = 1;
/// Version of the topic header (2: with the origin's applied sequence).
const HEADER_VERSION: u8 = 2;
/// Packages and subscription changes waiting to go out to the carrier.
pub const OUTGOING_QUEUE: usize = 65_536;
/// Snapshot requests a joining node makes before it gives up.
pub const SNAPSHOT_TRIES: usize = 5;
/// Pause between retries of a failed carrier operation.
const RETRY: Duration = Duration::from_millis(200);
/// Nodes remembered as gone, so late events of theirs are ignored.
const GONE_KEPT: usize = 1024;
/// Packages of other nodes held until this node has applied the log as
/// far as their origin had (see `Cluster::receive`); past this, the
/// oldest goes out at once.
pub const HELD_MAX: usize = 65_536;

/// Shortest heartbeat interval, whatever the options say.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// Ticks of the id clock now.
fn ticks_now() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(ID_EPOCH_SECS));
    u64::try_from(since.as_micros() / u128::from(TICK_MICROS)).unwrap_or(u64::MAX / SLOTS)
}

/// The id after one whose counter was `counter`, in slot `slot`.
pub fn message_id(counter: u64, slot: u64) -> MessageId {
    let c = (counter + 1).max(ticks_now());
    MessageId::try_from(c * SLOTS + slot % SLOTS).unwrap_or(MessageId::MAX)
}

/// The counter part of an id.
pub fn counter_of(id: MessageId) -> u64 {
    u64::try_from(id).unwrap_or(0) / SLOTS
}

/// Lower-case hex of `bytes`, for topic names.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The topic of channel `key`.
pub fn channel_topic(key: &str) -> String {
    format!("chan.{}", hex(key.as_bytes()))
}

/// The topic of node `key`.
pub fn node_topic(key: &str) -> String {
    format!("node.{}", hex(key.as_bytes()))
}

/// A change to the chat state, as appended to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A user logs in (password checked by the origin).
    Login {
        /// The name.
        name: String,
        /// The account, if any.
        account: Option<AccountId>,
        /// The account's ignore list, as (folded, as given).
        ignores: Vec<(String, String)>,
    },
    /// A user's connection ended (or was dropped as a slow consumer).
    Disconnect {
        /// Who.
        user: UserId,
    },
    /// A command of the command table that changes the state.
    Command {
        /// Whose.
        user: UserId,
        /// Its canonical name.
        command: String,
        /// Its parameters.
        parameters: Option<serde_json::Value>,
        /// For `ban`: the account of the name, looked up by the origin.
        account_hint: Option<AccountId>,
    },
    /// `join`, with the channel registered by the origin if it had to be.
    Join {
        /// Who.
        user: UserId,
        /// The channel.
        channel: String,
        /// The registration made for it.
        registration: Option<ChannelId>,
    },
    /// `rename`, once the origin checked the name against accounts.
    Rename {
        /// Who.
        user: UserId,
        /// The new name.
        name: String,
    },
    /// `group`.
    Group {
        /// Who.
        user: UserId,
        /// The new channel.
        channel: String,
        /// Whom to invite.
        recipients: Vec<String>,
        /// The registration made for it.
        registration: Option<ChannelId>,
    },
    /// A guest registered its name: it is logged in to the account.
    SetAccount {
        /// Who.
        user: UserId,
        /// The name registered.
        name: String,
        /// The new account.
        account: AccountId,
    },
    /// A node is gone: its users leave.
    NodeGone {
        /// The node's key.
        node: String,
    },
}

/// An event as the log carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    /// [`EVENT_VERSION`].
    v: u32,
    /// The origin node's key.
    node: String,
    /// The origin's token for the waiting command.
    token: u64,
    /// The change.
    event: Event,
}

/// What an applied event gave its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Store steps for the origin to carry out.
    Steps(Vec<Persist>),
    /// The id of the user logged in.
    User(UserId),
}

/// An applied event's outcome.
pub type Outcome = Result<Applied, CommandError>;

/// What only the origin has for an event.
enum Local {
    /// Nothing.
    None,
    /// A login's connection queue and session extras.
    Login(Outbox, LoginSetup),
}

/// A command waiting for its event to be applied.
struct Pending {
    /// What only this node has.
    local: Local,
    /// Where the outcome goes.
    reply: oneshot::Sender<Outcome>,
}

/// What goes out to the carrier, in order.
#[derive(Debug)]
enum Outgoing {
    /// A package on a topic.
    Publish(String, Bytes),
    /// Start (`true`) or stop following a topic.
    Follow(String, bool),
    /// Whether a topic is followed, once every change before is made.
    Confirm(String, oneshot::Sender<bool>),
}

/// Why this node follows a channel's topic.
#[derive(Debug, Default, Clone, Copy)]
struct Interest {
    /// The channel has members here.
    local: bool,
    /// Commands that may bring a member here, waiting for their events.
    held: u32,
}

impl Interest {
    fn wanted(self) -> bool {
        self.local || self.held > 0
    }
}

/// A channel's topic followed for as long as this lives (see
/// [`Cluster::hold_channel`]).
pub struct ChannelHold {
    /// The node, and the channel's key (`None`: nothing held).
    held: Option<(Arc<Cluster>, String)>,
}

impl Drop for ChannelHold {
    fn drop(&mut self) {
        if let Some((cluster, key)) = self.held.take() {
            cluster.change_interest(&key, |i| i.held = i.held.saturating_sub(1));
        }
    }
}

/// The snapshot a joining node gets.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotReply {
    /// The last sequence applied into `state`.
    seq: u64,
    /// The state.
    state: ReplicaState,
    /// Nodes known to be gone.
    gone: Vec<String>,
}

/// The limits of this node's part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's name.
    pub node_name: String,
    /// A node not heard from within this is gone.
    pub lease: Duration,
    /// How long a snapshot request waits for its reply.
    pub snapshot_timeout: Duration,
    /// Longest wait for one's own follower to apply an appended event,
    /// and for a package of another node to be let through (see
    /// `Cluster::receive`).
    pub apply_timeout: Duration,
    /// Time between two heartbeats (and claim renewals): well under the
    /// lease.
    pub heartbeat: Duration,
}

/// This node's part in a cluster (see the module docs).
pub struct Cluster {
    /// The carrier.
    link: Arc<dyn Link>,
    /// The node's name.
    name: String,
    /// Its key: name and incarnation.
    key: Mutex<Arc<str>>,
    /// The limits.
    options: ClusterOptions,
    /// The id slot held.
    slot: AtomicU64,
    /// Commands waiting for their events, by token.
    pending: Mutex<HashMap<u64, Pending>>,
    /// The next token.
    tokens: AtomicU64,
    /// The queue to the carrier.
    outgoing: mpsc::Sender<Outgoing>,
    /// Its receiving end, until the sending task takes it.
    outgoing_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Topic deliveries, until the receiving task takes them.
    deliveries: Mutex<Option<mpsc::Receiver<Delivery>>>,
    /// The last sequence applied; held while an event is applied, so a
    /// snapshot is never taken in the middle of one.
    applied: Mutex<u64>,
    /// The sequence being applied or applied last: set before the event
    /// reaches the replica, so what this node publishes is stamped with a
    /// sequence at least as far as the state it was checked against.
    seen: AtomicU64,
    /// The last sequence applied in full, for packages of other nodes
    /// waiting for it.
    done: tokio::sync::watch::Sender<u64>,
    /// Channel topics followed, and why.
    topics: Mutex<HashMap<String, Interest>>,
    /// Other nodes, to when they were last heard.
    heard: Mutex<HashMap<Arc<str>, Instant>>,
    /// Nodes declared gone, oldest first.
    gone: Mutex<VecDeque<String>>,
    /// Set at a graceful shutdown.
    leaving: AtomicBool,
    /// Stops the tasks.
    stop: CancellationToken,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("key", &self.key())
            .field("slot", &self.slot.load(Ordering::Relaxed))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The error of a command refused because the log cannot be reached.
fn unavailable(command: &'static str, e: &ClusterError) -> CommandError {
    CommandError::Failed {
        command,
        message: format!("The cluster is unavailable ({e}); nothing was changed, try again."),
    }
}

/// A topic header plus the package: the origin's key, a key (channel or
/// sender), the sender's folded name, two numbers, and the last log
/// sequence the origin had applied (or was applying) when it sent it.
fn with_header(
    node: &str,
    key: &str,
    sender: &str,
    (a, b): (u64, u64),
    seq: u64,
    bytes: &[u8],
) -> Bytes {
    let mut out =
        BytesMut::with_capacity(1 + 6 + node.len() + key.len() + sender.len() + 24 + bytes.len());
    out.put_u8(HEADER_VERSION);
    for s in [node, key, sender] {
        out.put_u16(u16::try_from(s.len()).unwrap_or(0));
        out.put_slice(&s.as_bytes()[..usize::from(u16::try_from(s.len()).unwrap_or(0))]);
    }
    out.put_u64(a);
    out.put_u64(b);
    out.put_u64(seq);
    out.put_slice(bytes);
    out.freeze()
}

/// A header read back.
struct Header {
    node: String,
    key: String,
    sender: String,
    a: u64,
    /// The origin's applied sequence.
    seq: u64,
    bytes: Bytes,
}

fn read_header(payload: &Bytes) -> Option<Header> {
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
        let s = payload.get(*at..*at + n)?;
        *at += n;
        Some(s)
    };
    if *take(&mut at, 1)?.first()? != HEADER_VERSION {
        return None;
    }
    let mut strings = Vec::with_capacity(3);
    for _ in 0..3 {
        let len = take(&mut at, 2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        strings.push(String::from_utf8(take(&mut at, len)?.to_vec()).ok()?);
    }
    let a = u64::from_be_bytes(take(&mut at, 8)?.try_into().ok()?);
    // The second number (a direct message's id) is for diagnostics.
    take(&mut at, 8)?;
    let seq = u64::from_be_bytes(take(&mut at, 8)?.try_into().ok()?);
    let sender = strings.pop()?;
    let key = strings.pop()?;
    let node = strings.pop()?;
    Some(Header {
        node,
        key,
        sender,
        a,
        seq,
        bytes: payload.slice(at..),
    })
}

impl Cluster {
    /// Joins the cluster `link` reaches with `hub` as this node's replica:
    /// claims an id slot, takes a snapshot from a live peer or starts
    /// alone, and starts answering snapshot requests. The tasks that keep
    /// it going are [`Cluster::run`]'s.
    pub async fn join(
        hub: &Hub,
        link: Arc<dyn Link>,
        options: ClusterOptions,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let incarnation: u64 = rand::random();
        let key: Arc<str> = Arc::from(format!("{}#{incarnation:016x}", options.node_name));
        let lease = options.lease;
        let mut slot = None;
        for n in 0..SLOTS {
            let value = Bytes::from(key.as_bytes().to_vec());
            if link.claim(&format!("slot.{n}"), value, lease).await? {
                slot = Some(n);
                break;
            }
        }
        let Some(slot) = slot else {
            return Err(ClusterError::Other(format!(
                "all {SLOTS} id slots are held: a cluster has at most {SLOTS} nodes"
            )));
        };
        let mut deliveries = link
            .deliveries()
            .ok_or_else(|| ClusterError::Other("the link's deliveries were taken".to_owned()))?;
        link.subscribe("heartbeat").await?;
        link.subscribe(&node_topic(&key)).await?;
        // Anyone alive? A peer beats every interval.
        let listen = options.heartbeat.max(MIN_HEARTBEAT) * 3 / 2;
        let deadline = Instant::now() + listen;
        let mut heard = HashMap::new();
        while let Ok(Some(d)) = tokio::time::timeout_at(deadline, deliveries.recv()).await {
            if d.topic == "heartbeat" {
                if let Ok(peer) = std::str::from_utf8(&d.payload) {
                    if peer != &*key {
                        heard.insert(Arc::<str>::from(peer), Instant::now());
                        break;
                    }
                }
            }
        }
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        let cluster = Arc::new(Cluster {
            link: Arc::clone(&link),
            name: options.node_name.clone(),
            key: Mutex::new(Arc::clone(&key)),
            options,
            slot: AtomicU64::new(slot),
            pending: Mutex::new(HashMap::new()),
            tokens: AtomicU64::new(1),
            outgoing: tx,
            outgoing_rx: Mutex::new(Some(rx)),
            deliveries: Mutex::new(Some(deliveries)),
            applied: Mutex::new(0),
            seen: AtomicU64::new(0),
            done: tokio::sync::watch::Sender::new(0),
            topics: Mutex::new(HashMap::new()),
            heard: Mutex::new(heard.clone()),
            gone: Mutex::new(VecDeque::new()),
            leaving: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        // Every login lands in general, and kicked and displaced members
        // go there: events of other nodes can put this node's users in it,
        // so this node cannot subscribe first as it does for a join of its
        // own. It follows general always.
        link.subscribe(&channel_topic(GENERAL)).await?;
        if heard.is_empty() {
            let last = link.last_seq().await?;
            cluster.applied_through(&mut lock(&cluster.applied), last);
            tracing::info!(node = %key, slot, "no other node alive: starting the cluster's state here");
            // No node is alive, so no guest channel is: the messages of
            // those gone with earlier runs can go. A node joining live
            // peers must not, or it would delete the messages of their
            // guest channels.
            crate::server::purge_gone_channels(hub).await;
        } else if !cluster.fetch_snapshot(hub).await? {
            return Err(ClusterError::Unavailable(
                "a node is alive but no snapshot came".to_owned(),
            ));
        }
        if !hub.attach_cluster(Arc::clone(&cluster), slot) {
            return Err(ClusterError::Other(
                "this server is in a cluster already".to_owned(),
            ));
        }
        let weak = hub.downgrade();
        let me = Arc::downgrade(&cluster);
        link.serve(
            "snapshot",
            Arc::new(move |_| {
                let (Some(hub), Some(me)) = (weak.upgrade(), me.upgrade()) else {
                    return Bytes::new();
                };
                me.snapshot(&hub)
            }),
        )
        .await?;
        tracing::info!(node = %key, slot, seq = *lock(&cluster.applied), "joined the cluster");
        Ok(cluster)
    }

    /// This node's key (name and incarnation).
    pub fn key(&self) -> Arc<str> {
        Arc::clone(&lock(&self.key))
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last sequence applied.
    pub fn applied(&self) -> u64 {
        *lock(&self.applied)
    }

    /// The snapshot this node serves: its replica at the last applied seq.
    fn snapshot(&self, hub: &Hub) -> Bytes {
        let applied = lock(&self.applied);
        let reply = SnapshotReply {
            seq: *applied,
            state: hub.export_replica(&self.key()),
            gone: lock(&self.gone).iter().cloned().collect(),
        };
        drop(applied);
        serde_json::to_vec(&reply)
            .map(Bytes::from)
            .unwrap_or_default()
    }

    /// Asks a peer for its snapshot and starts from it; false when none came.
    async fn fetch_snapshot(&self, hub: &Hub) -> Result<bool, ClusterError> {
        for attempt in 0..SNAPSHOT_TRIES {
            let reply = self
                .link
                .request("snapshot", Bytes::new(), self.options.snapshot_timeout)
                .await;
            match reply {
                Ok(Some(bytes)) => match serde_json::from_slice::<SnapshotReply>(&bytes) {
                    Ok(s) if s.state.version == crate::server::chat::REPLICA_VERSION => {
                        let mut applied = lock(&self.applied);
                        let (ghosts, followed) = hub.import_replica(s.state, &self.key());
                        self.applied_through(&mut applied, s.seq);
                        let mut gone = lock(&self.gone);
                        gone.clear();
                        gone.extend(s.gone);
                        drop(gone);
                        drop(applied);
                        for topic in followed {
                            self.follow_channel(&topic, true);
                        }
                        for id in ghosts {
                            self.propose_disconnect(id);
                        }
                        tracing::info!(seq = s.seq, "state taken from a snapshot");
                        return Ok(true);
                    }
                    Ok(_) => tracing::warn!("a snapshot of another version was refused"),
                    Err(e) => tracing::warn!(error = %e, "an unreadable snapshot was refused"),
                },
                Ok(None) => tracing::warn!(attempt, "no snapshot came in time"),
                Err(e) => tracing::warn!(attempt, error = %e, "snapshot request failed"),
            }
            tokio::time::sleep(RETRY).await;
        }
        Ok(false)
    }

    /// Runs this node's tasks (follower, deliveries, outgoing queue,
    /// heartbeats) until [`Cluster::leave`].
    pub async fn run(self: Arc<Self>, hub: Hub) {
        let outgoing = lock(&self.outgoing_rx).take();
        let deliveries = lock(&self.deliveries).take();
        let (Some(outgoing), Some(deliveries)) = (outgoing, deliveries) else {
            tracing::error!("the cluster tasks run already");
            return;
        };
        tokio::join!(
            Arc::clone(&self).follow_log(hub.clone()),
            Arc::clone(&self).receive(hub.clone(), deliveries),
            Arc::clone(&self).send(outgoing),
            Arc::clone(&self).beat(hub),
        );
    }

    /// Leaves the cluster gracefully: this node's users are shown leaving
    /// at once on the others, and the tasks stop.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        let node = self.key().to_string();
        let event = Envelope {
            v: EVENT_VERSION,
            node: node.clone(),
            token: 0,
            event: Event::NodeGone { node },
        };
        if let Ok(bytes) = serde_json::to_vec(&event) {
            let appended =
                tokio::time::timeout(self.options.apply_timeout, self.link.append(bytes.into()));
            if !matches!(appended.await, Ok(Ok(_))) {
                tracing::warn!("could not tell the cluster this node leaves; the others will notice within the lease");
            }
        }
        let slot = self.slot.load(Ordering::Relaxed);
        let _ = self.link.release(&format!("slot.{slot}")).await;
        self.stop.cancel();
    }

    /// Appends `event` for a command and waits for its outcome.
    pub async fn propose(&self, command: &'static str, event: Event) -> Outcome {
        self.propose_with(command, event, Local::None).await
    }

    /// Logs a user of this node in through the log.
    pub async fn login(
        &self,
        name: String,
        account: Option<AccountId>,
        outbox: Outbox,
        setup: LoginSetup,
    ) -> Result<UserId, ChatError> {
        let event = Event::Login {
            name,
            account,
            ignores: setup.ignores.clone(),
        };
        match self
            .propose_with("login", event, Local::Login(outbox, setup))
            .await
        {
            Ok(Applied::User(id)) => Ok(id),
            Ok(Applied::Steps(_)) => Err(ChatError("The login was not applied.".to_owned())),
            Err(e) => Err(ChatError(e.to_error().1.to_owned())),
        }
    }

    async fn propose_with(&self, command: &'static str, event: Event, local: Local) -> Outcome {
        if self.leaving.load(Ordering::SeqCst) {
            return Err(unavailable(
                command,
                &ClusterError::Unavailable("this node is shutting down".to_owned()),
            ));
        }
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let envelope = Envelope {
            v: EVENT_VERSION,
            node: self.key().to_string(),
            token,
            event,
        };
        let bytes = serde_json::to_vec(&envelope)
            .map_err(|e| unavailable(command, &ClusterError::Other(e.to_string())))?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(token, Pending { local, reply: tx });
        if let Err(e) = self.link.append(Bytes::from(bytes)).await {
            lock(&self.pending).remove(&token);
            return Err(unavailable(command, &e));
        }
        match tokio::time::timeout(self.options.apply_timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            _ => {
                lock(&self.pending).remove(&token);
                Err(unavailable(
                    command,
                    &ClusterError::Unavailable("the change was not applied in time".to_owned()),
                ))
            }
        }
    }

    /// A user of this node left (connection ended): appends the departure,
    /// retrying while the carrier is away, without waiting.
    pub fn disconnected(self: &Arc<Self>, id: UserId) {
        if self.leaving.load(Ordering::SeqCst) {
            // The node's own NodeGone takes them all.
            return;
        }
        self.propose_disconnect(id);
    }

    fn propose_disconnect(&self, id: UserId) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (link, stop, key) = (Arc::clone(&self.link), self.stop.clone(), self.key());
        runtime.spawn(async move {
            let envelope = Envelope {
                v: EVENT_VERSION,
                node: key.to_string(),
                token: 0,
                event: Event::Disconnect { user: id },
            };
            let Ok(bytes) = serde_json::to_vec(&envelope) else {
                return;
            };
            let bytes = Bytes::from(bytes);
            loop {
                match link.append(bytes.clone()).await {
                    Ok(_) => return,
                    Err(e) => tracing::debug!(error = %e, user = id, "departure not appended yet"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        });
    }

    /// Follows (or stops following) channel `key`'s topic: its first local
    /// member arrived, or its last left.
    pub fn follow_channel(&self, key: &str, on: bool) {
        self.change_interest(key, |i| i.local = on);
    }

    /// Changes why channel `key`'s topic is followed, and follows it or
    /// stops as that changes. General is followed always.
    fn change_interest(&self, key: &str, change: impl FnOnce(&mut Interest)) {
        if key == GENERAL {
            return;
        }
        let mut topics = lock(&self.topics);
        let interest = topics.entry(key.to_owned()).or_default();
        let before = interest.wanted();
        change(interest);
        let after = interest.wanted();
        if !after {
            topics.remove(key);
        }
        if before != after {
            // Queued under the lock: two changes racing must reach the
            // carrier in the order they were decided (the queue does not
            // block).
            self.queue(Outgoing::Follow(channel_topic(key), after));
        }
    }

    /// Follows channel `key`'s topic before a command that may bring a
    /// user of this node into it is appended, until the hold is dropped.
    ///
    /// Other nodes publish to the channel as soon as they have applied the
    /// arrival, which may be before this node has; a subscription made
    /// only then would miss what they sent in between. Made before the
    /// event is in the log, it is in place by the time anyone can know
    /// of the arrival (one NATS server orders the subscription before the
    /// append; see the README for several).
    pub async fn hold_channel(self: &Arc<Self>, key: &str) -> Result<ChannelHold, ClusterError> {
        if key == GENERAL {
            return Ok(ChannelHold { held: None });
        }
        let (tx, rx) = oneshot::channel();
        self.change_interest(key, |i| i.held += 1);
        let hold = ChannelHold {
            held: Some((Arc::clone(self), key.to_owned())),
        };
        self.queue(Outgoing::Confirm(channel_topic(key), tx));
        match tokio::time::timeout(self.options.apply_timeout, rx).await {
            Ok(Ok(true)) => Ok(hold),
            _ => Err(ClusterError::Unavailable(
                "the channel's topic could not be followed".to_owned(),
            )),
        }
    }

    /// Publishes a channel package to the other nodes.
    pub fn publish_channel(&self, key: &str, sender_key: &str, bytes: Bytes) {
        let seq = self.seen.load(Ordering::SeqCst);
        let payload = with_header(&self.key(), key, sender_key, (0, 0), seq, &bytes);
        self.queue(Outgoing::Publish(channel_topic(key), payload));
    }

    /// Publishes a direct message to user `to` of node `home`.
    pub fn publish_direct(&self, home: &str, to: UserId, message_id: MessageId, bytes: Bytes) {
        let id = u64::try_from(message_id).unwrap_or(0);
        let seq = self.seen.load(Ordering::SeqCst);
        let payload = with_header(&self.key(), "", "", (to, id), seq, &bytes);
        self.queue(Outgoing::Publish(node_topic(home), payload));
    }

    /// The sequence being applied or applied last.
    pub(crate) fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Records that the log is applied through `seq` (a snapshot taken,
    /// or a start from the log's end): `applied` is the held lock.
    fn applied_through(&self, applied: &mut u64, seq: u64) {
        *applied = seq;
        self.seen.store(seq, Ordering::SeqCst);
        self.done.send_replace(seq);
    }

    fn queue(&self, item: Outgoing) {
        if let Err(e) = self.outgoing.try_send(item) {
            // The message itself is stored and was delivered here: only
            // other nodes' live copies are missed (history has it).
            tracing::warn!(error = %e, "cluster queue full: a package for other nodes was dropped");
        }
    }

    /// The follower: applies the log in order, resynchronising from a
    /// snapshot when it cannot go on.
    async fn follow_log(self: Arc<Self>, hub: Hub) {
        while !self.stop.is_cancelled() {
            let after = self.applied();
            let mut rx = match self.link.follow(after).await {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the cluster log; retrying");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(RETRY) => continue,
                    }
                }
            };
            loop {
                let item = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    item = rx.recv() => item,
                };
                match item {
                    Some(Ok(entry)) => self.apply_entry(&hub, entry.seq, &entry.payload),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "the cluster log was lost; resynchronising");
                        self.resync(&hub).await;
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// Starts over from a snapshot, or from the log's end when alone.
    async fn resync(&self, hub: &Hub) {
        let failed: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in failed {
            let _ = p.reply.send(Err(unavailable(
                "server",
                &ClusterError::Unavailable("this node is resynchronising".to_owned()),
            )));
        }
        let alive = !lock(&self.heard).is_empty();
        if alive && matches!(self.fetch_snapshot(hub).await, Ok(true)) {
            return;
        }
        if let Ok(seq) = self.link.last_seq().await {
            self.applied_through(&mut lock(&self.applied), seq);
        }
    }

    fn is_gone(&self, node: &str) -> bool {
        lock(&self.gone).iter().any(|g| g == node)
    }

    /// Applies one log entry (skipping one applied already).
    fn apply_entry(self: &Arc<Self>, hub: &Hub, seq: u64, payload: &[u8]) {
        let mut applied = lock(&self.applied);
        if seq <= *applied {
            return;
        }
        *applied = seq;
        self.seen.store(seq, Ordering::SeqCst);
        self.apply_payload(hub, seq, payload, applied);
        // Packages of other nodes that waited for this sequence may go.
        self.done.send_replace(seq);
    }

    /// Applies one log entry's payload; `applied` is the held lock.
    fn apply_payload(
        self: &Arc<Self>,
        hub: &Hub,
        seq: u64,
        payload: &[u8],
        applied: MutexGuard<'_, u64>,
    ) {
        let envelope: Envelope = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(seq, error = %e, "unreadable cluster event skipped");
                return;
            }
        };
        if envelope.v != EVENT_VERSION {
            tracing::warn!(
                seq,
                version = envelope.v,
                "cluster event of another version skipped"
            );
            return;
        }
        let me = self.key();
        let mine = envelope.node == *me;
        let pending = if mine && envelope.token != 0 {
            lock(&self.pending).remove(&envelope.token)
        } else {
            None
        };
        let (local, reply) = match pending {
            Some(p) => (p.local, Some(p.reply)),
            None => (Local::None, None),
        };
        // A node declared gone has no say any more, not even about others
        // (it may have declared them gone while it was the one cut off).
        let gone_origin = self.is_gone(&envelope.node);
        let outcome = if gone_origin {
            Err(unavailable(
                "server",
                &ClusterError::Unavailable("this node was cut off from the cluster".to_owned()),
            ))
        } else {
            self.apply(hub, &envelope, mine, local)
        };
        drop(applied);
        match reply {
            Some(reply) => {
                if let Err(outcome) = reply.send(outcome) {
                    self.orphaned(hub, outcome);
                }
            }
            None if mine => self.orphaned(hub, outcome),
            None => {}
        }
    }

    /// What is left of an event of this node whose command stopped
    /// waiting (its connection ended, or the wait timed out): the event
    /// holds on every node, so what it asked of the store is done all the
    /// same, and a login without a connection is taken out again.
    fn orphaned(&self, hub: &Hub, outcome: Outcome) {
        match outcome {
            Ok(Applied::User(id)) => self.propose_disconnect(id),
            Ok(Applied::Steps(steps)) if !steps.is_empty() => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let store = hub.persist_steps(steps);
                runtime.spawn(async move {
                    if let Err(e) = store.await {
                        tracing::warn!(error = %e, "the store steps of a change whose command stopped waiting failed");
                    }
                });
            }
            Ok(Applied::Steps(_)) | Err(_) => {}
        }
    }

    /// The deterministic part: `envelope` applied to `hub`.
    fn apply(&self, hub: &Hub, envelope: &Envelope, mine: bool, local: Local) -> Outcome {
        let failed = |command: &'static str| {
            move |e: ChatError| CommandError::Failed {
                command,
                message: e.0,
            }
        };
        // Only a user's own node acts for them.
        let owned = |user: UserId| match hub.home_of(user) {
            Some(None) => mine,
            Some(Some(home)) => *home == *envelope.node,
            None => false,
        };
        let not_owned = |command: &'static str| {
            Err(CommandError::Failed {
                command,
                message: "You are not logged in.".to_owned(),
            })
        };
        let steps = |r: Result<Vec<Persist>, ChatError>, command| {
            r.map(Applied::Steps).map_err(failed(command))
        };
        match &envelope.event {
            Event::Login {
                name,
                account,
                ignores,
            } => {
                let result = match local {
                    Local::Login(outbox, setup) => hub.login_with(name, *account, outbox, setup),
                    Local::None if mine => {
                        // Its connection gave up waiting: logged in
                        // without one, and then taken out again.
                        hub.login_at(
                            name,
                            *account,
                            Outbox::remote(),
                            LoginSetup {
                                ignores: ignores.clone(),
                                ..LoginSetup::default()
                            },
                            None,
                        )
                    }
                    Local::None => hub.login_remote(
                        name,
                        *account,
                        ignores.clone(),
                        Arc::from(envelope.node.as_str()),
                    ),
                };
                result.map(Applied::User).map_err(failed("login"))
            }
            Event::Disconnect { user } => {
                if owned(*user) {
                    hub.remove_now(*user);
                }
                Ok(Applied::Steps(Vec::new()))
            }
            Event::Command {
                user,
                command,
                parameters,
                account_hint,
            } => {
                let name = crate::server::commands::find(command).map_or("server", |c| c.name);
                if !owned(*user) {
                    return not_owned(name);
                }
                crate::server::commands::apply_change(
                    hub,
                    *user,
                    name,
                    parameters.clone(),
                    *account_hint,
                )
                .map(Applied::Steps)
            }
            Event::Join {
                user,
                channel,
                registration,
            } => {
                if !owned(*user) {
                    return not_owned("join");
                }
                steps(hub.join_with(*user, channel, *registration), "join")
            }
            Event::Rename { user, name } => {
                if !owned(*user) {
                    return not_owned("rename");
                }
                let renamed = hub.rename(*user, name);
                if let (Ok(()), Some(account), false) = (&renamed, hub.account(*user), mine) {
                    // The account's new name, at once rather than at
                    // this node's next reload of the shared store.
                    hub.accounts().index().learn(account, name);
                }
                steps(renamed.map(|()| Vec::new()), "rename")
            }
            Event::Group {
                user,
                channel,
                recipients,
                registration,
            } => {
                if !owned(*user) {
                    return not_owned("group");
                }
                steps(
                    hub.create_group(*user, channel, recipients, *registration)
                        .map(|()| Vec::new()),
                    "group",
                )
            }
            Event::SetAccount {
                user,
                name,
                account,
            } => {
                if !owned(*user) {
                    return not_owned("register");
                }
                let set = hub.set_account(*user, name, *account);
                if set.is_ok() && !mine {
                    // A guest here must not take the name before this
                    // node's next reload of the shared store finds it.
                    hub.accounts().index().learn(*account, name);
                }
                steps(set.map(|()| Vec::new()), "register")
            }
            Event::NodeGone { node } => {
                if self.is_gone(node) {
                    return Ok(Applied::Steps(Vec::new()));
                }
                let mut gone = lock(&self.gone);
                gone.push_back(node.clone());
                while gone.len() > GONE_KEPT {
                    gone.pop_front();
                }
                drop(gone);
                lock(&self.heard).remove(node.as_str());
                if **node == *self.key() {
                    if !self.leaving.load(Ordering::SeqCst) {
                        self.start_over(hub);
                    }
                } else {
                    let n = hub.remove_node(Some(node), "");
                    tracing::info!(node = %node, users = n, "a cluster node is gone");
                }
                Ok(Applied::Steps(Vec::new()))
            }
        }
    }

    /// This node was declared gone: its users are told and let go, and it
    /// goes on under a new key.
    fn start_over(&self, hub: &Hub) {
        let n = hub.remove_node(
            None,
            "This server lost touch with the rest of the cluster; please reconnect.",
        );
        let old = self.key();
        let incarnation: u64 = rand::random();
        let key: Arc<str> = Arc::from(format!("{}#{incarnation:016x}", self.name));
        *lock(&self.key) = Arc::clone(&key);
        let now = Instant::now();
        for at in lock(&self.heard).values_mut() {
            *at = now;
        }
        tracing::error!(old = %old, new = %key, users = n, "this node was declared gone by the cluster; its users were disconnected and it goes on as a new node");
        self.queue(Outgoing::Follow(node_topic(&old), false));
        self.queue(Outgoing::Follow(node_topic(&key), true));
        let failed: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in failed {
            let _ = p.reply.send(Err(unavailable(
                "server",
                &ClusterError::Unavailable("this node was cut off from the cluster".to_owned()),
            )));
        }
    }

    /// Receives topic packages: heartbeats, channel packages, direct messages.
    ///
    /// A package is stamped with the log sequence its origin had applied
    /// when it checked it (who is in the channel, who is online). This
    /// node may be behind: the recipient's arrival, or the sender's, may
    /// not be applied here yet, and delivered now the package would miss a
    /// member or be taken for a stranger's. So a package ahead of this
    /// node waits until the log is applied as far, and every later one
    /// waits behind it (order per sender holds). Only a follower stuck for
    /// [`ClusterOptions::apply_timeout`] lets it go as things are, and the queue holds at
    /// most [`HELD_MAX`].
    async fn receive(self: Arc<Self>, hub: Hub, mut rx: mpsc::Receiver<Delivery>) {
        let mut done = self.done.subscribe();
        let mut held: VecDeque<(Instant, String, Header)> = VecDeque::new();
        loop {
            let wait = self.options.apply_timeout;
            let due = held.front().map(|(at, ..)| *at + wait);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                d = rx.recv() => match d {
                    Some(d) => self.received(&hub, d, &mut held, *done.borrow()),
                    None => return,
                },
                Ok(()) = done.changed(), if !held.is_empty() => {}
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
            }
            let through = *done.borrow_and_update();
            let now = Instant::now();
            while let Some((at, ..)) = held.front() {
                let ready = held.front().is_some_and(|(_, _, h)| h.seq <= through);
                let late = now >= *at + wait;
                if !ready && !late {
                    break;
                }
                if let Some((_, topic, h)) = held.pop_front() {
                    if late && !ready {
                        tracing::warn!(%topic, seq = h.seq, through, "the cluster log is not applied as far as a package of another node needs; delivered as things are");
                    }
                    Self::deliver(&hub, &topic, h);
                }
            }
        }
    }

    /// One topic package received: a heartbeat noted, a package delivered
    /// or held (see `Cluster::receive`).
    fn received(
        &self,
        hub: &Hub,
        d: Delivery,
        held: &mut VecDeque<(Instant, String, Header)>,
        through: u64,
    ) {
        if d.topic == "heartbeat" {
            if let Ok(peer) = std::str::from_utf8(&d.payload) {
                if peer != &*self.key() && !self.is_gone(peer) {
                    lock(&self.heard).insert(Arc::from(peer), Instant::now());
                }
            }
            return;
        }
        let Some(h) = read_header(&d.payload) else {
            tracing::warn!(topic = %d.topic, "unreadable cluster package skipped");
            return;
        };
        if h.node == *self.key() {
            return;
        }
        if held.is_empty() && h.seq <= through {
            Self::deliver(hub, &d.topic, h);
            return;
        }
        if held.len() >= HELD_MAX {
            if let Some((_, topic, oldest)) = held.pop_front() {
                tracing::warn!(%topic, "too many packages of other nodes wait for the log; the oldest is delivered as things are");
                Self::deliver(hub, &topic, oldest);
            }
        }
        held.push_back((Instant::now(), d.topic, h));
    }

    /// Hands a package of another node to this node's users.
    fn deliver(hub: &Hub, topic: &str, h: Header) {
        if topic.starts_with("chan.") {
            hub.deliver_channel(&h.key, &h.sender, h.seq, h.bytes);
        } else if topic.starts_with("node.") {
            hub.deliver_direct(h.a, h.bytes);
        }
    }

    /// Sends the outgoing queue in order; subscriptions that failed are
    /// tried again until they hold.
    async fn send(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>) {
        let mut wanted: HashMap<String, bool> = HashMap::new();
        let mut retry = tokio::time::interval(RETRY * 5);
        loop {
            let item = tokio::select! {
                _ = self.stop.cancelled() => return,
                item = rx.recv() => match item { Some(i) => i, None => return },
                _ = retry.tick() => {
                    let unsettled: Vec<(String, bool)> = wanted.iter().map(|(t, on)| (t.clone(), *on)).collect();
                    for (topic, on) in unsettled {
                        if self.set_follow(&topic, on).await {
                            wanted.remove(&topic);
                        }
                    }
                    continue;
                }
            };
            match item {
                Outgoing::Publish(topic, payload) => {
                    if let Err(e) = self.link.publish(&topic, payload).await {
                        // Stored and delivered here already: only the
                        // other nodes' live copy is missed.
                        tracing::warn!(error = %e, %topic, "a package for other nodes was not published");
                    }
                }
                Outgoing::Follow(topic, on) => {
                    if self.set_follow(&topic, on).await {
                        wanted.remove(&topic);
                    } else {
                        wanted.insert(topic, on);
                    }
                }
                Outgoing::Confirm(topic, reply) => {
                    let _ = reply.send(!wanted.contains_key(&topic));
                }
            }
        }
    }

    async fn set_follow(&self, topic: &str, on: bool) -> bool {
        let done = if on {
            self.link.subscribe(topic).await
        } else {
            self.link.unsubscribe(topic).await
        };
        match done {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, topic, on, "topic subscription not changed yet");
                false
            }
        }
    }

    /// Takes this node's id slot back after its lease lapsed (the node
    /// was cut off), or another free one if a new node took it meanwhile:
    /// two nodes must never hand out ids from one slot.
    async fn reclaim_slot(&self, hub: &Hub, key: &str, mine: &str) {
        let lease = self.options.lease;
        let value = || Bytes::from(key.as_bytes().to_vec());
        if matches!(self.link.claim(mine, value(), lease).await, Ok(true)) {
            return;
        }
        for n in 0..SLOTS {
            if matches!(
                self.link.claim(&format!("slot.{n}"), value(), lease).await,
                Ok(true)
            ) {
                self.slot.store(n, Ordering::Relaxed);
                hub.set_id_slot(n);
                tracing::warn!(
                    slot = n,
                    "this node's id slot was taken while it was away; it uses another"
                );
                return;
            }
        }
        tracing::error!("this node's id slot was lost and none is free; its message ids may clash with another node's");
    }

    /// Heartbeats, claim renewals, and declaring silent nodes gone.
    async fn beat(self: Arc<Self>, hub: Hub) {
        let mut tick = tokio::time::interval(self.options.heartbeat.max(MIN_HEARTBEAT));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let key = self.key();
            if let Err(e) = self
                .link
                .publish("heartbeat", Bytes::from(key.as_bytes().to_vec()))
                .await
            {
                // Cut off itself, a node hears nobody: that says nothing
                // about the others, who get a fresh lease from when it is
                // back in touch.
                tracing::debug!(error = %e, "heartbeat not published");
                let now = Instant::now();
                for at in lock(&self.heard).values_mut() {
                    *at = now;
                }
                continue;
            }
            match self.link.renew().await {
                Ok(claims) => {
                    let mine = format!("slot.{}", self.slot.load(Ordering::Relaxed));
                    if claims.iter().any(|(k, held)| *k == mine && !held)
                        || !claims.iter().any(|(k, _)| *k == mine)
                    {
                        self.reclaim_slot(&hub, &key, &mine).await;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "claims not renewed"),
            }
            let now = Instant::now();
            let homes: HashSet<Arc<str>> = hub.homes();
            let silent: Vec<Arc<str>> = {
                let mut heard = lock(&self.heard);
                for h in homes {
                    heard.entry(h).or_insert(now);
                }
                let silent: Vec<Arc<str>> = heard
                    .iter()
                    .filter(|(_, at)| now.duration_since(**at) > self.options.lease)
                    .map(|(k, _)| Arc::clone(k))
                    .collect();
                // Not declared again before another lease.
                for k in &silent {
                    heard.insert(Arc::clone(k), now);
                }
                silent
            };
            for node in silent {
                if self.is_gone(&node) {
                    lock(&self.heard).remove(&node);
                    continue;
                }
                tracing::warn!(node = %node, "a cluster node was not heard within the lease: declaring it gone");
                let envelope = Envelope {
                    v: EVENT_VERSION,
                    node: key.to_string(),
                    token: 0,
                    event: Event::NodeGone {
                        node: node.to_string(),
                    },
                };
                if let Ok(bytes) = serde_json::to_vec(&envelope) {
                    if let Err(e) = self.link.append(Bytes::from(bytes)).await {
                        tracing::warn!(error = %e, "could not declare a node gone");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_stay_in_their_slot_and_below_2_53() {
        let a = message_id(0, 3);
        let b = message_id(counter_of(a), 3);
        assert!(b > a);
        assert_eq!(a % 16, 3);
        assert_eq!(b % 16, 3);
        // A century from the epoch, ids are still exact in JavaScript.
        let century = 100 * 365 * 86_400 * 1_000_000 / TICK_MICROS;
        assert!((century + 1) * SLOTS < 1 << 53);
        // Far ahead of the clock, the counter still moves on.
        let ahead = message_id(century, 0);
        assert_eq!(counter_of(ahead), century + 1);
    }

    #[test]
    fn headers_round_trip() {
        let p = with_header("node-a#1", "general", "bob", (7, 9), 42, b"bytes");
        let h = read_header(&p).unwrap();
        assert_eq!(
            (
                h.node.as_str(),
                h.key.as_str(),
                h.sender.as_str(),
                h.a,
                h.seq
            ),
            ("node-a#1", "general", "bob", 7, 42)
        );
        assert_eq!(&h.bytes[..], b"bytes");
        assert_eq!(
            &read_header(&p.slice(..p.len() - 3)).unwrap().bytes[..],
            b"by"
        );
        assert!(
            read_header(&p.slice(..30)).is_none(),
            "cut inside the header"
        );
        assert!(read_header(&Bytes::from_static(b"\x01\x00")).is_none());
        assert!(read_header(&Bytes::new()).is_none());
    }

    #[test]
    fn events_round_trip_as_json() {
        let e = Envelope {
            v: EVENT_VERSION,
            node: "n#1".into(),
            token: 4,
            event: Event::Command {
                user: 3,
                command: "kick".into(),
                parameters: Some(serde_json::json!({"username": "x"})),
                account_hint: None,
            },
        };
        let text = serde_json::to_vec(&e).unwrap();
        let back: Envelope = serde_json::from_slice(&text).unwrap();
        assert_eq!(back.event, e.event);
        assert_eq!(hex(b"ab"), "6162");
        assert_eq!(channel_topic("a"), "chan.61");
    }
}

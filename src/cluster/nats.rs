//! [`NatsLink`]: the [`Link`] of real clusters, carried by NATS.
//!
//! - The log is a JetStream stream on file storage ([`LOG_STREAM`], one
//!   subject [`LOG_SUBJECT`]), bounded by message count and bytes with the
//!   oldest events discarded first. An append is a JetStream publish whose
//!   acknowledgement carries the stream sequence; a follower is an
//!   ephemeral pull consumer from a start sequence, replaced from the next
//!   sequence it still needs whenever it is lost (a NATS restart).
//! - Topics are core NATS subjects under [`TOPIC_PREFIX`]: at most once,
//!   in order per publisher, as the trait asks. Each topic has its own
//!   subscription, so [`Link::deliveries`] keeps arrival order within a
//!   topic, not between two topics. A full deliveries queue holds the
//!   topic's subscription back (backpressure): a burst waits in the NATS
//!   client's bounded per-subscription buffer instead of being dropped;
//!   only past that buffer does the client drop packages, and the link
//!   logs it as a slow subscription.
//! - Request/reply goes over core subjects under [`REQUEST_PREFIX`]; a
//!   reply larger than one NATS message is sent as numbered chunks to the
//!   requester's inbox and joined there, up to a bound.
//! - Claims are keys of a JetStream key-value bucket ([`CLAIMS_BUCKET`])
//!   whose entries expire after the lease: a create-only write claims, an
//!   update with the held revision renews, a delete with it releases.
//!
//! Every operation is bounded by [`NatsOptions::op_timeout`]: while NATS
//! is away the client reconnects by itself and operations fail with
//! [`ClusterError::Unavailable`] instead of hanging. An append retries
//! within that time with one message id, which the stream deduplicates;
//! an append that failed as unavailable may still have been stored (its
//! acknowledgement was what got lost), so the caller must not take
//! `Unavailable` for "not in the log".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{HeaderMap, ServerAddr};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{BoxFuture, ClusterError, Delivery, Entry, Link, Responder};
use crate::server::config::{self, Config};

/// The JetStream stream holding the shared log.
pub const LOG_STREAM: &str = "CHATMASTER_LOG";
/// The one subject the log stream takes its events from.
pub const LOG_SUBJECT: &str = "chatmaster.log";
/// The key-value bucket holding the nodes' leased claims.
pub const CLAIMS_BUCKET: &str = "chatmaster_claims";
/// Topics are core NATS subjects under this prefix.
pub const TOPIC_PREFIX: &str = "chatmaster.t.";
/// Requests for a topic go to core NATS subjects under this prefix.
pub const REQUEST_PREFIX: &str = "chatmaster.r.";

/// How long connecting to one NATS server may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration =
    Duration::from_millis(config::DEFAULT_CLUSTER_TIMEOUT_MS);
/// How long one operation (append, subscribe, claim, ...) may take before
/// it fails with [`ClusterError::Unavailable`].
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(config::DEFAULT_CLUSTER_TIMEOUT_MS);
/// The most events the log keeps; older ones are discarded first.
pub const DEFAULT_LOG_MAX_MSGS: i64 = config::DEFAULT_CLUSTER_LOG_MAX_MSGS as i64;
/// The most bytes the log keeps; older events are discarded first.
pub const DEFAULT_LOG_MAX_BYTES: i64 = config::DEFAULT_CLUSTER_LOG_MAX_BYTES as i64;
/// Copies of the log and of the claims a NATS cluster keeps (1 for one
/// server).
pub const DEFAULT_REPLICAS: usize = config::DEFAULT_CLUSTER_REPLICAS;
/// Events a follower may hold that the chat layer has not taken yet.
pub const DEFAULT_FOLLOW_BUFFER: usize = 1024;
/// Topic packages [`Link::deliveries`] may hold that the chat layer has
/// not taken yet.
pub const DEFAULT_DELIVERIES_BUFFER: usize = 8192;
/// Messages the NATS client buffers per subscription before it drops
/// (and reports) them.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 8192;
/// The largest reply [`Link::request`] accepts once joined.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 256 << 20;
/// The largest value one claim may hold.
pub const CLAIM_MAX_VALUE_BYTES: i32 = 64 << 10;

/// How long the log remembers an append's message id: longer than any
/// append retries (its op timeout), short enough that the ids of a busy
/// log take little of the server's memory.
pub const LOG_DUPLICATE_WINDOW: Duration = Duration::from_secs(30);
/// Events a follower asks for per pull request.
const FOLLOW_BATCH: usize = 256;
/// How often a pull consumer's server says it is alive while idle: a
/// follower that hears nothing for two of these replaces its consumer.
const FOLLOW_HEARTBEAT: Duration = Duration::from_secs(2);
/// How long an idle ephemeral consumer outlives its follower on the server.
const FOLLOW_INACTIVE: Duration = Duration::from_secs(30);
/// The longest pause between two attempts to replace a lost consumer.
const FOLLOW_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The longest pause between two reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
/// How often the client pings the server: a server that stops answering
/// is noticed after two unanswered pings.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Room left in a chunk of a reply for its headers.
const CHUNK_HEADER_ROOM: usize = 1024;

/// Reply chunk headers: which reply (several nodes may answer one
/// request), which chunk, how many.
const H_REPLY: &str = "Chatmaster-Reply";
const H_CHUNK: &str = "Chatmaster-Chunk";
const H_CHUNKS: &str = "Chatmaster-Chunks";
const H_ERROR: &str = "Chatmaster-Error";

/// Tuning of a [`NatsLink`]; [`Default`] takes the `DEFAULT_*` constants.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`DEFAULT_OP_TIMEOUT`].
    pub op_timeout: Duration,
    /// See [`DEFAULT_LOG_MAX_MSGS`].
    pub log_max_msgs: i64,
    /// See [`DEFAULT_LOG_MAX_BYTES`].
    pub log_max_bytes: i64,
    /// See [`DEFAULT_REPLICAS`].
    pub replicas: usize,
    /// See [`DEFAULT_FOLLOW_BUFFER`].
    pub follow_buffer: usize,
    /// See [`DEFAULT_DELIVERIES_BUFFER`].
    pub deliveries_buffer: usize,
    /// See [`DEFAULT_SUBSCRIPTION_CAPACITY`].
    pub subscription_capacity: usize,
    /// See [`DEFAULT_MAX_REPLY_BYTES`].
    pub max_reply_bytes: usize,
}

impl NatsOptions {
    /// The options a server's configuration gives (`--cluster-*`).
    pub fn from_config(config: &Config) -> Self {
        NatsOptions {
            connect_timeout: config.cluster_timeout,
            op_timeout: config.cluster_timeout,
            log_max_msgs: i64::try_from(config.cluster_log_max_msgs).unwrap_or(i64::MAX),
            log_max_bytes: i64::try_from(config.cluster_log_max_bytes).unwrap_or(i64::MAX),
            replicas: config.cluster_replicas,
            ..NatsOptions::default()
        }
    }
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            op_timeout: DEFAULT_OP_TIMEOUT,
            log_max_msgs: DEFAULT_LOG_MAX_MSGS,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            replicas: DEFAULT_REPLICAS,
            follow_buffer: DEFAULT_FOLLOW_BUFFER,
            deliveries_buffer: DEFAULT_DELIVERIES_BUFFER,
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

/// A claim this node holds: the revision its last write got.
struct Held {
    value: Bytes,
    revision: u64,
}

/// The claims bucket (opened on the first claim, for its lease) and what
/// this node holds in it, by the caller's key.
#[derive(Default)]
struct Claims {
    bucket: Option<(Duration, kv::Store)>,
    held: HashMap<String, Held>,
}

/// The NATS [`Link`]. Dropping it stops its subscriptions and servers.
pub struct NatsLink {
    node: String,
    client: async_nats::Client,
    js: jetstream::Context,
    options: NatsOptions,
    /// Makes the message ids of this link's appends unique across nodes and
    /// restarts, so a retried publish is stored once.
    instance: String,
    appended: AtomicU64,
    deliveries_tx: mpsc::Sender<Delivery>,
    deliveries_rx: StdMutex<Option<mpsc::Receiver<Delivery>>>,
    topics: Mutex<HashMap<String, JoinHandle<()>>>,
    serving: Mutex<HashMap<String, JoinHandle<()>>>,
    claims: Mutex<Claims>,
}

impl std::fmt::Debug for NatsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLink")
            .field("node", &self.node)
            .finish()
    }
}

/// `url` with any user and password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(format!("{what}: {err}"))
}

fn other(what: &str, err: impl std::fmt::Display) -> ClusterError {
    ClusterError::Other(format!("{what}: {err}"))
}

/// Runs `fut` for at most `limit`; running out is [`ClusterError::Unavailable`].
async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, ClusterError>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(ClusterError::Unavailable(format!(
            "{what}: no answer from NATS within {limit:?}"
        ))),
    }
}

/// Checks a topic against the trait's alphabet, so it is one safe subject.
fn check_topic(topic: &str) -> Result<(), ClusterError> {
    let ok = !topic.is_empty()
        && topic.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(ClusterError::Other(format!(
            "invalid topic {topic:?}: letters, digits, '-' and '_' separated by '.'"
        )))
    }
}

/// A claim key made into a key-value key: bytes outside `[A-Za-z0-9_-]`
/// (and `.`, which may not start, end or repeat in a key) become `=XX`, so
/// different keys stay different.
pub fn kv_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('=');
    }
    out
}

impl NatsLink {
    /// Connects to NATS (any of `urls`, `nats://HOST:PORT`), makes sure the
    /// log stream exists, and returns the link of node `node`.
    ///
    /// Fails with one line naming the servers (credentials redacted) when
    /// none answers within the connect timeout, or when JetStream is off.
    pub async fn connect(
        urls: &[String],
        node: &str,
        options: NatsOptions,
    ) -> Result<Arc<NatsLink>, ClusterError> {
        let shown = urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(", ");
        if urls.is_empty() {
            return Err(ClusterError::Other("no NATS server given".into()));
        }
        let addrs = urls
            .iter()
            .map(|u| {
                u.parse::<ServerAddr>().map_err(|e| {
                    ClusterError::Other(format!("bad NATS URL {}: {e}", redact_url(u)))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let node_name = node.to_owned();
        let connect = async_nats::ConnectOptions::new()
            .name(format!("chatmaster {node}"))
            .connection_timeout(options.connect_timeout)
            .ping_interval(PING_INTERVAL)
            .subscription_capacity(options.subscription_capacity)
            .reconnect_delay_callback(|attempts| {
                let step = Duration::from_millis(100).saturating_mul(attempts as u32);
                step.min(RECONNECT_MAX_DELAY)
            })
            .event_callback(move |event| {
                let node = node_name.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(node = %node, "connected to NATS")
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(node = %node, "lost NATS; reconnecting")
                        }
                        async_nats::Event::SlowConsumer(sid) => tracing::warn!(
                            node = %node,
                            sid,
                            "a subscription fell behind: NATS packages were dropped"
                        ),
                        other => tracing::info!(node = %node, event = %other, "NATS"),
                    }
                }
            });
        // Each server gets the connect timeout; the whole attempt is bounded too.
        let overall = options
            .connect_timeout
            .saturating_mul(u32::try_from(urls.len()).unwrap_or(u32::MAX))
            .saturating_add(Duration::from_secs(1));
        let client = match tokio::time::timeout(overall, connect.connect(addrs)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(ClusterError::Unavailable(format!(
                    "cannot connect to NATS at {shown}: {e}"
                )))
            }
            Err(_) => {
                return Err(ClusterError::Unavailable(format!(
                    "cannot connect to NATS at {shown}: no answer within {overall:?}"
                )))
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(options.op_timeout)
            .ack_timeout(options.op_timeout)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let (deliveries_tx, deliveries_rx) = mpsc::channel(options.deliveries_buffer.max(1));
        let link = NatsLink {
            node: node.to_owned(),
            // Random, not the node's name: it goes into a message header.
            instance: format!("{:032x}", rand::random::<u128>()),
            client,
            js,
            options,
            appended: AtomicU64::new(0),
            deliveries_tx,
            deliveries_rx: StdMutex::new(Some(deliveries_rx)),
            topics: Mutex::new(HashMap::new()),
            serving: Mutex::new(HashMap::new()),
            claims: Mutex::new(Claims::default()),
        };
        bounded(link.options.op_timeout, "log stream", link.ensure_log())
            .await
            .map_err(|e| match e {
                ClusterError::Unavailable(m) => {
                    ClusterError::Unavailable(format!("NATS at {shown}: {m}"))
                }
                ClusterError::Other(m) => ClusterError::Other(format!("NATS at {shown}: {m}")),
            })?;
        Ok(Arc::new(link))
    }

    /// The node name this link was made for.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn log_config(&self) -> stream::Config {
        stream::Config {
            name: LOG_STREAM.to_owned(),
            subjects: vec![LOG_SUBJECT.to_owned()],
            storage: stream::StorageType::File,
            max_messages: self.options.log_max_msgs,
            max_bytes: self.options.log_max_bytes,
            discard: stream::DiscardPolicy::Old,
            num_replicas: self.options.replicas.max(1),
            duplicate_window: LOG_DUPLICATE_WINDOW,
            description: Some("ChatMaster 3000: the events every node applies".into()),
            ..Default::default()
        }
    }

    /// Creates the log stream if missing. Several nodes may race: creating
    /// a stream with an identical configuration is idempotent; one with
    /// other bounds (another node's options) is updated to this node's.
    async fn ensure_log(&self) -> Result<(), ClusterError> {
        use jetstream::context::CreateStreamErrorKind as K;
        use jetstream::ErrorCode;
        let config = self.log_config();
        let err = match self.js.create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match err.kind() {
            K::JetStream(js) if js.error_code() == ErrorCode::STREAM_NAME_EXIST => {
                self.js
                    .update_stream(config)
                    .await
                    .map_err(|e| other("updating the log stream", e))?;
                tracing::info!("log stream bounds updated to this node's");
                Ok(())
            }
            K::JetStreamUnavailable => Err(ClusterError::Other(
                "JetStream is not enabled (start nats-server with -js)".into(),
            )),
            K::JetStream(js)
                if js.error_code() == ErrorCode::JETSTREAM_NOT_ENABLED
                    || js.error_code() == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT =>
            {
                Err(ClusterError::Other(
                    "JetStream is not enabled (start nats-server with -js)".into(),
                ))
            }
            K::TimedOut => Err(unavailable("creating the log stream", err)),
            _ => Err(other("creating the log stream", err)),
        }
    }

    async fn append_inner(&self, payload: Bytes) -> Result<u64, ClusterError> {
        // One id for every attempt: the stream stores a retried publish once
        // (within its duplicate window).
        let id = format!(
            "{}-{}",
            self.instance,
            self.appended.fetch_add(1, Ordering::Relaxed)
        );
        let limit = self.options.op_timeout;
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(20);
        loop {
            let attempt = async {
                let publish = jetstream::message::PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(id.as_str());
                self.js.send_publish(LOG_SUBJECT, publish).await?.await
            };
            let err = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(ack)) => return Ok(ack.sequence),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(ClusterError::Unavailable(format!(
                        "append: no acknowledgement from NATS within {limit:?}"
                    )))
                }
            };
            use jetstream::context::PublishErrorKind as K;
            match err.kind() {
                // Gone, restarting, or not ready yet: try again until the deadline.
                K::TimedOut | K::BrokenPipe | K::StreamNotFound | K::MaxAckPending => {
                    if Instant::now() + pause >= deadline {
                        return Err(unavailable("append", err));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                _ => return Err(other("append", err)),
            }
        }
    }

    async fn last_seq_inner(&self) -> Result<u64, ClusterError> {
        let log = self
            .js
            .get_stream(LOG_STREAM)
            .await
            .map_err(|e| unavailable("log stream", e))?;
        Ok(log.cached_info().state.last_sequence)
    }

    async fn subscribe_inner(&self, topic: &str) -> Result<(), ClusterError> {
        check_topic(topic)?;
        let mut topics = self.topics.lock().await;
        if topics.contains_key(topic) {
            return Ok(());
        }
        let mut sub = self
            .client
            .subscribe(format!("{TOPIC_PREFIX}{topic}"))
            .await
            .map_err(|e| unavailable("subscribe", e))?;
        // Once the server has it, what others publish from now on reaches
        // this node.
        self.processed("subscribe").await?;
        let tx = self.deliveries_tx.clone();
        let name = topic.to_owned();
        let task = tokio::spawn(async move {
            while let Some(message) = sub.next().await {
                // Backpressure rather than dropping here: a burst waits in
                // the client's bounded subscription buffer; only past that
                // does the client drop (and the link logs it).
                let delivery = Delivery {
                    topic: name.clone(),
                    payload: message.payload,
                };
                if tx.send(delivery).await.is_err() {
                    break;
                }
            }
        });
        topics.insert(topic.to_owned(), task);
        Ok(())
    }

    async fn unsubscribe_inner(&self, topic: &str) -> Result<(), ClusterError> {
        let task = self.topics.lock().await.remove(topic);
        if let Some(task) = task {
            // Once the task is gone nothing more of this topic is queued;
            // dropping its subscriber tells the server.
            task.abort();
            let _ = task.await;
        }
        Ok(())
    }

    async fn request_inner(
        &self,
        topic: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Option<Bytes>, ClusterError> {
        check_topic(topic)?;
        let deadline = Instant::now() + timeout;
        let inbox = self.client.new_inbox();
        let mut replies = bounded(timeout, "request", async {
            self.client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| unavailable("request", e))
        })
        .await?;
        bounded(timeout, "request", async {
            self.client
                .publish_with_reply(format!("{REQUEST_PREFIX}{topic}"), inbox, payload)
                .await
                .map_err(|e| other("request", e))
        })
        .await?;
        let mut joined = BytesMut::new();
        let mut reply_id: Option<String> = None;
        let mut expected = 0u64;
        loop {
            let message = match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => return Err(ClusterError::Unavailable("request: NATS closed".into())),
                Err(_) if reply_id.is_none() => return Ok(None),
                Err(_) => {
                    return Err(ClusterError::Unavailable(format!(
                        "request: the reply was incomplete after {timeout:?}"
                    )))
                }
            };
            if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                return Ok(None);
            }
            let Some(headers) = message.headers.as_ref() else {
                continue;
            };
            let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
            let Some(id) = header(H_REPLY) else { continue };
            match &reply_id {
                None => reply_id = Some(id),
                Some(first) if *first != id => continue, // a second responder
                Some(_) => {}
            }
            if let Some(error) = header(H_ERROR) {
                return Err(ClusterError::Other(format!(
                    "request: the responder said: {error}"
                )));
            }
            let chunk = header(H_CHUNK).and_then(|v| v.parse::<u64>().ok());
            let chunks = header(H_CHUNKS).and_then(|v| v.parse::<u64>().ok());
            let (Some(chunk), Some(chunks)) = (chunk, chunks) else {
                return Err(ClusterError::Other(
                    "request: a malformed reply chunk".into(),
                ));
            };
            if chunk != expected {
                // Core NATS keeps one publisher's order, so a gap is a loss.
                return Err(ClusterError::Unavailable(format!(
                    "request: reply chunk {expected} of {chunks} was lost"
                )));
            }
            if joined.len() + message.payload.len() > self.options.max_reply_bytes {
                return Err(ClusterError::Other(format!(
                    "request: the reply is larger than {} bytes",
                    self.options.max_reply_bytes
                )));
            }
            joined.extend_from_slice(&message.payload);
            expected += 1;
            if expected >= chunks {
                return Ok(Some(joined.freeze()));
            }
        }
    }

    /// Waits until the server has handled everything this connection sent
    /// so far (a subscription, say). The client's `flush` only writes its
    /// buffer to the socket, and the server may then still read a package
    /// another connection publishes first, so a node could miss what comes
    /// right after it subscribed. A server handles one connection's
    /// operations in order: a message published to a subject only this
    /// connection listens on comes back after all of them.
    async fn processed(&self, what: &str) -> Result<(), ClusterError> {
        let inbox = self.client.new_inbox();
        let mut echo = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable(what, e))?;
        self.client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| unavailable(what, e))?;
        match echo.next().await {
            Some(_) => Ok(()),
            None => Err(ClusterError::Unavailable(format!(
                "{what}: the connection to NATS closed"
            ))),
        }
    }

    async fn serve_inner(&self, topic: &str, responder: Responder) -> Result<(), ClusterError> {
        check_topic(topic)?;
        let mut serving = self.serving.lock().await;
        let mut requests = self
            .client
            .subscribe(format!("{REQUEST_PREFIX}{topic}"))
            .await
            .map_err(|e| unavailable("serve", e))?;
        // Requests sent from now on find it.
        self.processed("serve").await?;
        let client = self.client.clone();
        let max_reply = self.options.max_reply_bytes;
        let node = self.node.clone();
        let task = tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let Some(inbox) = request.reply.clone() else {
                    continue;
                };
                let responder = responder.clone();
                let payload = request.payload;
                // The responder may take a while (a snapshot): off the runtime.
                let reply = match tokio::task::spawn_blocking(move || responder(payload)).await {
                    Ok(reply) => reply,
                    Err(e) => {
                        tracing::error!(node = %node, "a responder failed: {e}");
                        continue;
                    }
                };
                if let Err(e) = send_reply(&client, inbox.as_str(), reply, max_reply).await {
                    tracing::warn!(node = %node, "could not send a reply: {e}");
                }
            }
        });
        if let Some(previous) = serving.insert(topic.to_owned(), task) {
            previous.abort();
        }
        Ok(())
    }

    /// The claims bucket for `lease`, created (or brought to this lease)
    /// on first use. Every node should use the same lease: the bucket has
    /// one, and the last node to open it sets it.
    async fn bucket(
        &self,
        claims: &mut Claims,
        lease: Duration,
    ) -> Result<kv::Store, ClusterError> {
        if let Some((held_lease, store)) = &claims.bucket {
            if *held_lease == lease {
                return Ok(store.clone());
            }
            tracing::warn!(
                old = ?held_lease,
                new = ?lease,
                "claims asked for with another lease: the bucket's lease changes for every node"
            );
        }
        // The bucket's stream is made here as async-nats would make it: its
        // own bucket creation first queries the account, whose answer from
        // nats-server 2.9 it cannot parse.
        let config = stream::Config {
            name: format!("KV_{CLAIMS_BUCKET}"),
            description: Some("ChatMaster 3000: leased claims of the nodes".to_owned()),
            subjects: vec![format!("$KV.{CLAIMS_BUCKET}.>")],
            max_messages_per_subject: 1,
            max_bytes: -1,
            max_messages: -1,
            max_age: lease,
            max_message_size: CLAIM_MAX_VALUE_BYTES,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: self.options.replicas.max(1),
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        if let Err(e) = self.js.create_stream(config.clone()).await {
            use jetstream::context::CreateStreamErrorKind as K;
            match e.kind() {
                // It exists with another lease: this node's lease it is.
                K::JetStream(js) if js.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST => {
                    self.js
                        .update_stream(config)
                        .await
                        .map_err(|e| other("updating the claims bucket", e))?;
                    tracing::info!(lease = ?lease, "claims bucket lease updated to this node's");
                }
                K::TimedOut => return Err(unavailable("claims bucket", e)),
                _ => return Err(other("claims bucket", e)),
            }
        }
        let store = self
            .js
            .get_key_value(CLAIMS_BUCKET)
            .await
            .map_err(|e| unavailable("claims bucket", e))?;
        claims.bucket = Some((lease, store.clone()));
        Ok(store)
    }

    async fn claim_inner(
        &self,
        key: &str,
        value: Bytes,
        lease: Duration,
    ) -> Result<bool, ClusterError> {
        let mut claims = self.claims.lock().await;
        let store = self.bucket(&mut claims, lease).await?;
        match store.create(kv_key(key), value.clone()).await {
            Ok(revision) => {
                claims.held.insert(key.to_owned(), Held { value, revision });
                Ok(true)
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(unavailable("claim", e)),
        }
    }

    async fn renew_inner(&self) -> Result<Vec<(String, bool)>, ClusterError> {
        let mut claims = self.claims.lock().await;
        let Some((_, store)) = claims.bucket.clone() else {
            return Ok(Vec::new());
        };
        let mut outcome = Vec::with_capacity(claims.held.len());
        let mut lost = Vec::new();
        for (key, held) in claims.held.iter_mut() {
            match store
                .update(kv_key(key), held.value.clone(), held.revision)
                .await
            {
                Ok(revision) => {
                    held.revision = revision;
                    outcome.push((key.clone(), true));
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // It lapsed (and maybe someone took it): not ours any more.
                    lost.push(key.clone());
                    outcome.push((key.clone(), false));
                }
                Err(e) => return Err(unavailable("renew", e)),
            }
        }
        for key in lost {
            claims.held.remove(&key);
        }
        Ok(outcome)
    }

    async fn release_inner(&self, key: &str) -> Result<(), ClusterError> {
        let mut claims = self.claims.lock().await;
        let Some(held) = claims.held.remove(key) else {
            return Ok(());
        };
        let Some((_, store)) = claims.bucket.clone() else {
            return Ok(());
        };
        match store
            .delete_expect_revision(kv_key(key), Some(held.revision))
            .await
        {
            Ok(()) => Ok(()),
            // The revision moved: it had lapsed and is someone else's now.
            Err(e) if e.to_string().contains("wrong last sequence") => Ok(()),
            Err(e) => {
                claims.held.insert(key.to_owned(), held);
                Err(unavailable("release", e))
            }
        }
    }
}

/// Sends `reply` to `inbox` in chunks that fit the server's message size.
async fn send_reply(
    client: &async_nats::Client,
    inbox: &str,
    reply: Bytes,
    max_reply: usize,
) -> Result<(), ClusterError> {
    let reply_id = format!("{:016x}", rand::random::<u64>());
    let mut headers = HeaderMap::new();
    headers.insert(H_REPLY, reply_id.as_str());
    if reply.len() > max_reply {
        headers.insert(
            H_ERROR,
            format!("the reply is larger than {max_reply} bytes").as_str(),
        );
        headers.insert(H_CHUNK, "0");
        headers.insert(H_CHUNKS, "0");
        return client
            .publish_with_headers(inbox.to_owned(), headers, Bytes::new())
            .await
            .map_err(|e| unavailable("reply", e));
    }
    let room = client
        .server_info()
        .max_payload
        .saturating_sub(CHUNK_HEADER_ROOM)
        .max(1024);
    let chunks = reply.len().div_ceil(room).max(1);
    for index in 0..chunks {
        let start = index * room;
        let end = (start + room).min(reply.len());
        let mut headers = headers.clone();
        headers.insert(H_CHUNK, index.to_string().as_str());
        headers.insert(H_CHUNKS, chunks.to_string().as_str());
        client
            .publish_with_headers(inbox.to_owned(), headers, reply.slice(start..end))
            .await
            .map_err(|e| unavailable("reply", e))?;
    }
    client.flush().await.map_err(|e| unavailable("reply", e))
}

/// Why one consumer of a follower stopped.
enum Stop {
    /// The receiver is gone: the follower ends.
    Closed,
    /// The consumer was lost (NATS away or restarted): make another.
    Lost(String),
    /// Events the follower still needed were discarded: it cannot go on.
    Gap(ClusterError),
}

/// Feeds `tx` with the log from `next` on until the receiver goes away
/// or events it needs are gone, replacing its consumer whenever it is lost.
async fn follow_task(
    js: jetstream::Context,
    mut next: u64,
    tx: mpsc::Sender<Result<Entry, ClusterError>>,
    op_timeout: Duration,
) {
    let mut pause = Duration::from_millis(50);
    let mut warned = false;
    loop {
        let delivered_before = next;
        let stop = tokio::select! {
            stop = follow_consumer(&js, &mut next, &tx, op_timeout) => stop,
            _ = tx.closed() => Stop::Closed,
        };
        match stop {
            Stop::Closed => return,
            Stop::Gap(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Stop::Lost(why) => {
                if next > delivered_before {
                    pause = Duration::from_millis(50);
                    warned = false;
                }
                if !warned {
                    tracing::warn!(next, "log follower lost its consumer ({why}); replacing it");
                    warned = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = tx.closed() => return,
                }
                pause = (pause * 2).min(FOLLOW_MAX_BACKOFF);
            }
        }
    }
}

/// One ephemeral consumer from `next` on: delivers until it is lost.
async fn follow_consumer(
    js: &jetstream::Context,
    next: &mut u64,
    tx: &mpsc::Sender<Result<Entry, ClusterError>>,
    op_timeout: Duration,
) -> Stop {
    let setup = async {
        let log = js.get_stream(LOG_STREAM).await.map_err(|e| e.to_string())?;
        let state = &log.cached_info().state;
        if state.first_sequence > *next && state.last_sequence >= *next {
            return Ok(Err(state.first_sequence));
        }
        let consumer = log
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: *next,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: FOLLOW_INACTIVE,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(FOLLOW_BATCH)
            .heartbeat(FOLLOW_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(Ok(messages))
    };
    let mut messages = match tokio::time::timeout(op_timeout, setup).await {
        Ok(Ok(Ok(messages))) => messages,
        Ok(Ok(Err(first))) => return Stop::Gap(discarded(*next, first)),
        Ok(Err(e)) => return Stop::Lost(e),
        Err(_) => return Stop::Lost(format!("no answer within {op_timeout:?}")),
    };
    loop {
        let message = match messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Stop::Lost(e.to_string()),
            None => return Stop::Lost("the consumer ended".into()),
        };
        let seq = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => return Stop::Lost(format!("a log message without its sequence: {e}")),
        };
        if seq < *next {
            continue; // already delivered (a replaced consumer's overlap)
        }
        if seq > *next {
            return Stop::Gap(discarded(*next, seq));
        }
        let entry = Entry {
            seq,
            payload: message.payload.clone(),
        };
        if tx.send(Ok(entry)).await.is_err() {
            return Stop::Closed;
        }
        *next = seq + 1;
    }
}

fn discarded(next: u64, first: u64) -> ClusterError {
    ClusterError::Other(format!(
        "log events {next}..{} were discarded before this node read them",
        first.saturating_sub(1)
    ))
}

impl Drop for NatsLink {
    fn drop(&mut self) {
        for (_, task) in self.topics.get_mut().drain() {
            task.abort();
        }
        for (_, task) in self.serving.get_mut().drain() {
            task.abort();
        }
    }
}

impl Link for NatsLink {
    fn append(&self, payload: Bytes) -> BoxFuture<'_, Result<u64, ClusterError>> {
        Box::pin(self.append_inner(payload))
    }

    fn last_seq(&self) -> BoxFuture<'_, Result<u64, ClusterError>> {
        Box::pin(bounded(
            self.options.op_timeout,
            "last_seq",
            self.last_seq_inner(),
        ))
    }

    fn follow(
        &self,
        after: u64,
    ) -> BoxFuture<'_, Result<mpsc::Receiver<Result<Entry, ClusterError>>, ClusterError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(self.options.follow_buffer.max(1));
            tokio::spawn(follow_task(
                self.js.clone(),
                after.saturating_add(1),
                tx,
                self.options.op_timeout,
            ));
            Ok(rx)
        })
    }

    fn publish(&self, topic: &str, payload: Bytes) -> BoxFuture<'_, Result<(), ClusterError>> {
        let topic = topic.to_owned();
        Box::pin(bounded(self.options.op_timeout, "publish", async move {
            check_topic(&topic)?;
            // At most once anyway: while NATS is away say so at once rather
            // than queue behind the reconnection (and hold the caller).
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return Err(ClusterError::Unavailable(
                    "publish: not connected to NATS".into(),
                ));
            }
            self.client
                .publish(format!("{TOPIC_PREFIX}{topic}"), payload)
                .await
                .map_err(|e| other("publish", e))
        }))
    }

    fn subscribe(&self, topic: &str) -> BoxFuture<'_, Result<(), ClusterError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            bounded(
                self.options.op_timeout,
                "subscribe",
                self.subscribe_inner(&topic),
            )
            .await
        })
    }

    fn unsubscribe(&self, topic: &str) -> BoxFuture<'_, Result<(), ClusterError>> {
        let topic = topic.to_owned();
        Box::pin(async move { self.unsubscribe_inner(&topic).await })
    }

    fn deliveries(&self) -> Option<mpsc::Receiver<Delivery>> {
        self.deliveries_rx.lock().ok()?.take()
    }

    fn request(
        &self,
        topic: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Option<Bytes>, ClusterError>> {
        let topic = topic.to_owned();
        Box::pin(async move { self.request_inner(&topic, payload, timeout).await })
    }

    fn serve(&self, topic: &str, responder: Responder) -> BoxFuture<'_, Result<(), ClusterError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            bounded(
                self.options.op_timeout,
                "serve",
                self.serve_inner(&topic, responder),
            )
            .await
        })
    }

    fn claim(
        &self,
        key: &str,
        value: Bytes,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, ClusterError>> {
        let key = key.to_owned();
        Box::pin(async move {
            bounded(
                self.options.op_timeout,
                "claim",
                self.claim_inner(&key, value, lease),
            )
            .await
        })
    }

    fn renew(&self) -> BoxFuture<'_, Result<Vec<(String, bool)>, ClusterError>> {
        Box::pin(bounded(
            self.options.op_timeout,
            "renew",
            self.renew_inner(),
        ))
    }

    fn release(&self, key: &str) -> BoxFuture<'_, Result<(), ClusterError>> {
        let key = key.to_owned();
        Box::pin(async move {
            bounded(self.options.op_timeout, "release", self.release_inner(&key)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact_url("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        assert_eq!(redact_url("tok@h:1"), "***@h:1");
    }

    #[test]
    fn kv_keys_are_valid_and_distinct() {
        assert_eq!(kv_key("node.3"), "node=2E3");
        assert_eq!(kv_key("a=b"), "a=3Db");
        assert_ne!(kv_key("a.b"), kv_key("a=2Eb"));
        assert_eq!(kv_key(""), "=");
        assert_eq!(kv_key("x y"), "x=20y");
    }

    #[test]
    fn topics_are_checked() {
        assert!(check_topic("chan.6869").is_ok());
        assert!(check_topic("a-b_c").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("a..b").is_err());
        assert!(check_topic("a.>").is_err());
        assert!(check_topic("a b").is_err());
    }
}

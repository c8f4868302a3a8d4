//! The server: the accept loop and graceful shutdown (here), and the
//! layers it drives: [`connection`] (one task per socket: reads, timeouts,
//! flood control, writes), [`outbox`] (a connection's bounded outbound
//! queue), [`commands`] (the command table),
//! [`chat`] (users, channels, membership behind the `Hub` API), [`rate`]
//! (the token bucket) and [`config`] (every limit and its flag). It calls
//! [`crate::wire`] for bytes and packages, never the other way round.
//!
//! [`Server::run_with`] serves the TCP listener (plain or TLS) and, when
//! given, the HTTP listener ([`crate::web`]: web client, WebSocket
//! sessions, health, metrics); every chat session, whatever its
//! transport, is admitted by the same caps ([`admission`]) and runs the
//! same [`connection`] loop over a [`transport`].
//!
//! [`run`] serves a bound listener, and runs the hub's presence task (the
//! periodic `channel_stats` of crowded channels), until the given future completes, then
//! tells every client `server_shutdown`, gives each a bounded time to
//! receive it, and returns once every connection task has ended. Tests bind
//! `127.0.0.1:0` themselves and drive shutdown with their own future.

pub mod account_index;
pub mod accounts;
pub mod admin;
pub mod admission;
pub mod broadcast;
pub mod chat;
pub mod commands;
pub mod config;
pub mod connection;
pub mod journal;
pub mod outbox;
pub mod passwords;
pub mod rate;
pub mod transport;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::store::{self, Store, StoreError};
use crate::web::tls::Tls;
use crate::wire::codec;
use crate::wire::protocol::ServerPackage;
use admission::{Admission, Refusal};
use chat::Hub;
use config::Config;
use transport::IoTransport;

/// Refusals (server full) being written at once; beyond this a refused
/// connection is closed without a message rather than queueing work.
const MAX_PENDING_REFUSALS: usize = 64;
/// Time a refusal message gets to be written.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error such as running out of file descriptors,
/// so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Longest wait at shutdown for the store to commit what is queued (it
/// only takes long when the disk is failing).
const STORE_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a server listens on.
#[derive(Debug)]
pub struct Listeners {
    /// The chat port.
    pub tcp: TcpListener,
    /// The HTTP port, if any.
    pub http: Option<TcpListener>,
    /// The certificate: both ports speak TLS when it is there.
    pub tls: Option<Arc<Tls>>,
}

impl Listeners {
    /// Only a plain TCP chat port.
    pub fn tcp(tcp: TcpListener) -> Self {
        Listeners {
            tcp,
            http: None,
            tls: None,
        }
    }
}

/// A server: the chat state plus the limits, ready to run on a listener.
#[derive(Debug, Clone)]
pub struct Server {
    /// The chat state, shared by all connections.
    hub: Hub,
}

impl Server {
    /// A server with empty state over a fresh in-memory store; `config.db`
    /// is not opened (tests and embedders that want no files). The binary
    /// uses [`Server::open`].
    pub fn new(config: Config) -> Self {
        Server {
            hub: Hub::new(Arc::new(config)),
        }
    }

    /// A server over the store `config.db` names, opened (and migrated)
    /// now: a file that cannot be used is refused with the reason.
    pub fn open(config: Config) -> Result<Self, StoreError> {
        let store = store::open(&config.db, &config.store_options())?;
        Server::with_store(config, store)
    }

    /// A server over an already opened store (any [`Store`] implementation).
    pub fn with_store(config: Config, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let hub = Hub::with_store(Arc::new(config), store)?;
        hub.load_registered_from_store()?;
        Ok(Server { hub })
    }

    /// Makes this server a node of the cluster `link` reaches (see
    /// [`crate::cluster::replica`]): claims an id slot, takes the chat
    /// state from a live node's snapshot (or starts it, alone), and
    /// answers later nodes' snapshot requests. [`Server::run_with`] then
    /// runs the node's cluster tasks and leaves the cluster at shutdown.
    /// Call it before serving; `config.node_name` and
    /// `config.cluster_lease` apply.
    pub async fn join_cluster(
        self,
        link: Arc<dyn crate::cluster::Link>,
    ) -> Result<Server, crate::cluster::ClusterError> {
        let config = self.hub.config();
        let options = crate::cluster::replica::ClusterOptions {
            node_name: config.node_name.clone(),
            lease: config.cluster_lease,
            snapshot_timeout: config.cluster_snapshot_timeout,
            apply_timeout: config.cluster_apply_timeout,
            heartbeat: config.cluster_heartbeat,
        };
        crate::cluster::replica::Cluster::join(&self.hub, link, options).await?;
        Ok(self)
    }

    /// A handle on the chat state (for inspection in tests and tools).
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// Serves `listener` until `shutdown` completes, then shuts down gracefully.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future) -> io::Result<()> {
        self.run_with(Listeners::tcp(listener), shutdown).await
    }

    /// Serves the chat port and, if given, the HTTP port until `shutdown`
    /// completes, then shuts down gracefully: every session (TCP, TLS,
    /// WebSocket) is told `server_shutdown`, the store commits what is
    /// queued, and the HTTP port, which answers `/healthz` with 503
    /// meanwhile, closes last.
    pub async fn run_with(self, listeners: Listeners, shutdown: impl Future) -> io::Result<()> {
        let Listeners {
            tcp: listener,
            http,
            tls,
        } = listeners;
        let mut config = self.hub.config();
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let admission = Admission::new(config.max_connections);
        let refusals = Arc::new(Semaphore::new(MAX_PENDING_REFUSALS));
        tokio::pin!(shutdown);
        // One presence task per server, whatever the number of channels:
        // it walks only the channels whose count changed.
        tracker.spawn(self.hub.clone().run_presence(token.clone()));
        // The memory task: read marks and purges left over, and expiry.
        tracker.spawn(self.hub.clone().run_memory(token.clone()));
        // Other processes' account changes (the admin commands).
        tracker.spawn(Arc::clone(self.hub.accounts()).watch(token.clone()));
        // A cluster node's follower, deliveries, outgoing queue and
        // heartbeats: they stop when it leaves, below.
        let cluster = self.hub.cluster().cloned();
        let cluster_task = cluster
            .clone()
            .map(|c| tokio::spawn(c.run(self.hub.clone())));
        let http_stop = CancellationToken::new();
        let http_task = http.map(|l| {
            let web = Arc::new(crate::web::Web {
                hub: self.hub.clone(),
                admission: Arc::clone(&admission),
                sessions: tracker.clone(),
                shutdown: token.clone(),
                tls: tls.clone(),
                started: std::time::Instant::now(),
            });
            tokio::spawn(crate::web::serve(l, web, http_stop.clone()))
        });
        if cluster.is_none() {
            // Alone, no guest channel is live yet; a cluster node purges
            // only when it starts the cluster's state itself.
            purge_gone_channels(&self.hub).await;
        }
        let scheme = if tls.is_some() { "tls" } else { "tcp" };
        tracing::info!(addr = %listener.local_addr()?, scheme, "listening");
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Per-connection failures (reset before accept, EMFILE)
                    // must never stop the server.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            // We batch writes ourselves; Nagle would only add latency.
            let _ = stream.set_nodelay(true);
            if let Some(newer) = self.hub.config_if_changed(&config) {
                config = newer;
            }
            admission.resize(config.max_connections);
            match admission.admit(peer.ip(), config.max_connections_per_address) {
                Ok(admitted) => {
                    let hub = self.hub.clone();
                    let token = token.clone();
                    // The connection's log lines carry its peer and user as
                    // fields of their own: a span per connection (its slot
                    // and formatted fields in the subscriber) cost about
                    // 550 bytes per idle connection, a sixth of the rest.
                    match &tls {
                        // Not an async block awaiting the connection: it
                        // would hold its captures for as long as it lives
                        // (and a captured future twice, the capture and
                        // the awaited copy), in every connection's task.
                        None => tracker.spawn(
                            connection::serve(stream, peer, hub, token)
                                .map(move |()| drop(admitted)),
                        ),
                        Some(tls) => {
                            let acceptor = tls.chat_acceptor();
                            let deadline = Instant::now() + config.login_timeout;
                            tracker.spawn(async move {
                                // The handshake counts against the login
                                // timeout, and gives way to a shutdown.
                                let handshake =
                                    tokio::time::timeout_at(deadline, acceptor.accept(stream));
                                let stream = tokio::select! {
                                    _ = token.cancelled() => return,
                                    done = handshake => match done {
                                        Ok(Ok(s)) => s,
                                        Ok(Err(e)) => {
                                            tracing::info!(%peer, error = %e, "TLS handshake failed");
                                            return;
                                        }
                                        Err(_) => {
                                            tracing::info!(%peer, "TLS handshake not completed within the login timeout");
                                            return;
                                        }
                                    },
                                };
                                connection::serve_over(
                                    IoTransport::new(stream),
                                    metrics::Transport::Tls,
                                    peer,
                                    hub,
                                    token,
                                    deadline,
                                )
                                .await;
                                drop(admitted);
                            })
                        }
                    };
                }
                Err(refusal) => {
                    match refusal {
                        Refusal::Full(max) => {
                            tracing::warn!(%peer, max, "connection refused: server full")
                        }
                        Refusal::Address(max) => {
                            tracing::warn!(%peer, max, "connection refused: too many from this address")
                        }
                    }
                    if let Ok(permit) = refusals.clone().try_acquire_owned() {
                        let package = ServerPackage::error("server", refusal.message());
                        let (max, level, min) = (
                            config.max_package_bytes,
                            config.compression_level,
                            config.compress_min_bytes,
                        );
                        let acceptor = tls.as_ref().map(|t| t.chat_acceptor());
                        tracker.spawn(async move {
                            let bytes = codec::encode_packed(&package, max, level, min).ok();
                            match acceptor {
                                None => refuse(stream, bytes).await,
                                Some(acceptor) => {
                                    if let Ok(Ok(s)) = tokio::time::timeout(
                                        REFUSAL_TIMEOUT,
                                        acceptor.accept(stream),
                                    )
                                    .await
                                    {
                                        refuse(s, bytes).await;
                                    }
                                }
                            }
                            drop(permit);
                        });
                    }
                }
            }
        }
        tracing::info!(connections = admission.open(), "shutting down");
        if let Some(cluster) = &cluster {
            // The others show this node's users leaving at once.
            cluster.leave().await;
        }
        if let Some(task) = cluster_task {
            let _ = task.await;
        }
        self.hub.close();
        token.cancel();
        tracker.close();
        tracker.wait().await;
        // Every connection is gone, so nothing more is queued: commit what is.
        let journal = self.hub.journal();
        match tokio::time::timeout(STORE_DRAIN_TIMEOUT, journal.clone().barrier()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("the store writer had stopped; queued messages are lost"),
            Err(_) => tracing::error!(
                queued = journal.queued(),
                "the store did not take the queued messages in time; they were never acknowledged"
            ),
        }
        // The HTTP port closes last: /healthz said 503 until now.
        http_stop.cancel();
        if let Some(task) = http_task {
            let _ = task.await;
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Tells a refused client why, briefly, and closes.
async fn refuse<S: tokio::io::AsyncWrite + Unpin>(mut stream: S, message: Option<bytes::Bytes>) {
    if let Some(bytes) = message {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        })
        .await;
    }
}

/// Serves `listener` with `config` until `shutdown` completes.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future) -> io::Result<()> {
    Server::new(config).run(listener, shutdown).await
}

/// Deletes the stored messages of channels gone with an earlier run
/// ([`Hub::purge_gone_channels`]) off the async workers. A failure is
/// logged: the chat works without it, and the next start tries again.
pub(crate) async fn purge_gone_channels(hub: &Hub) {
    let hub = hub.clone();
    match tokio::task::spawn_blocking(move || hub.purge_gone_channels()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot delete the messages of channels that are gone")
        }
        Err(e) => tracing::error!(error = %e, "the purge of channels that are gone failed"),
    }
}

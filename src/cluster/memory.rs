//! An in-process carrier: several nodes of one chat in one process, for
//! tests and for trying a cluster out without a NATS server.
//!
//! A [`MemoryCarrier`] is the shared medium; [`MemoryCarrier::link`] hands
//! each node its [`Link`]. It keeps the log in memory (the last
//! [`MAX_LOG_ENTRIES`] events: a follower further behind gets an error, as
//! from a carrier that discarded them), topics, request/reply and leased
//! claims on tokio time. Tests can cut one node off
//! ([`MemoryCarrier::cut`]: its operations fail and it receives nothing
//! until [`MemoryCarrier::heal`]) or stop the whole carrier
//! ([`MemoryCarrier::stop`], [`MemoryCarrier::restart`]): the log survives
//! a stop, as a persistent stream would, and followers go on where they
//! were once it is back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{BoxFuture, ClusterError, Delivery, Entry, Link, Responder};

/// Events the log keeps; older ones are dropped.
pub const MAX_LOG_ENTRIES: usize = 100_000;
/// Packages waiting for one node's [`Link::deliveries`] receiver before a
/// publisher waits for room.
pub const DELIVERY_QUEUE: usize = 8192;
/// Events waiting for one follower before the carrier waits for room.
pub const FOLLOW_QUEUE: usize = 1024;

/// One node's standing with the carrier.
struct Node {
    /// Cut off by a test: fails and receives nothing.
    cut: bool,
    /// Held back by a test: its follower gets no new events, while
    /// everything else works (a follower lagging behind the others').
    lagging: bool,
    /// Topics subscribed.
    topics: HashSet<String>,
    /// Where its packages go.
    deliveries: mpsc::Sender<Delivery>,
    /// Topics it answers.
    responders: HashMap<String, Responder>,
}

/// A claim held by a node.
struct Claim {
    /// The holder.
    node: String,
    /// When it lapses unless renewed.
    expires: Instant,
    /// How long a renewal extends it.
    lease: Duration,
}

/// The carrier's state.
struct Carrier {
    /// False while stopped: everything fails.
    running: bool,
    /// The log's last entries.
    log: VecDeque<Entry>,
    /// Sequence of the last entry appended (0 before the first).
    last_seq: u64,
    /// Nodes by name.
    nodes: HashMap<String, Node>,
    /// Claims by key.
    claims: HashMap<String, Claim>,
}

/// Shared by the carrier handle and every link.
struct Shared {
    /// The state.
    carrier: Mutex<Carrier>,
    /// Bumped on every change followers may be waiting for (an append, a
    /// cut healed, a restart).
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Carrier> {
        self.carrier
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The in-process medium several nodes share.
#[derive(Clone)]
pub struct MemoryCarrier {
    /// The state.
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryCarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.shared.lock();
        f.debug_struct("MemoryCarrier")
            .field("running", &c.running)
            .field("last_seq", &c.last_seq)
            .field("nodes", &c.nodes.len())
            .finish()
    }
}

impl Default for MemoryCarrier {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCarrier {
    /// An empty, running carrier.
    pub fn new() -> Self {
        MemoryCarrier {
            shared: Arc::new(Shared {
                carrier: Mutex::new(Carrier {
                    running: true,
                    log: VecDeque::new(),
                    last_seq: 0,
                    nodes: HashMap::new(),
                    claims: HashMap::new(),
                }),
                changed: watch::Sender::new(0),
            }),
        }
    }

    /// The link of the node named `node` (a second link of the same name
    /// replaces the first's subscriptions).
    pub fn link(&self, node: &str) -> Arc<dyn Link> {
        let (tx, rx) = mpsc::channel(DELIVERY_QUEUE);
        self.shared.lock().nodes.insert(
            node.to_owned(),
            Node {
                cut: false,
                lagging: false,
                topics: HashSet::new(),
                deliveries: tx,
                responders: HashMap::new(),
            },
        );
        Arc::new(MemoryLink {
            shared: Arc::clone(&self.shared),
            node: node.to_owned(),
            deliveries: Mutex::new(Some(rx)),
        })
    }

    /// Cuts `node` off: its operations fail, it receives nothing, and its
    /// claims lapse, as for a node whose network went away.
    pub fn cut(&self, node: &str) {
        if let Some(n) = self.shared.lock().nodes.get_mut(node) {
            n.cut = true;
        }
        self.shared.bump();
    }

    /// Ends a [`MemoryCarrier::cut`].
    pub fn heal(&self, node: &str) {
        if let Some(n) = self.shared.lock().nodes.get_mut(node) {
            n.cut = false;
        }
        self.shared.bump();
    }

    /// Holds `node`'s follower back (`true`): it is handed no new events
    /// until released (`false`), while its appends, topics and claims work
    /// on, as for a follower that lags behind the other nodes'.
    pub fn lag(&self, node: &str, lagging: bool) {
        if let Some(n) = self.shared.lock().nodes.get_mut(node) {
            n.lagging = lagging;
        }
        self.shared.bump();
    }

    /// Stops the carrier: every operation of every node fails until
    /// [`MemoryCarrier::restart`]. The log is kept.
    pub fn stop(&self) {
        self.shared.lock().running = false;
        self.shared.bump();
    }

    /// Starts a stopped carrier again.
    pub fn restart(&self) {
        self.shared.lock().running = true;
        self.shared.bump();
    }

    /// The sequence of the last event appended.
    pub fn last_seq(&self) -> u64 {
        self.shared.lock().last_seq
    }
}

/// One node's view of a [`MemoryCarrier`].
struct MemoryLink {
    /// The carrier.
    shared: Arc<Shared>,
    /// This node's name.
    node: String,
    /// The receiver [`Link::deliveries`] hands out once.
    deliveries: Mutex<Option<mpsc::Receiver<Delivery>>>,
}

fn unavailable(why: &str) -> ClusterError {
    ClusterError::Unavailable(why.to_owned())
}

impl MemoryLink {
    /// The carrier's state if this node may use it now.
    fn reach(&self) -> Result<MutexGuard<'_, Carrier>, ClusterError> {
        let c = self.shared.lock();
        if !c.running {
            return Err(unavailable("the carrier is stopped"));
        }
        match c.nodes.get(&self.node) {
            Some(n) if n.cut => Err(unavailable("this node is cut off")),
            Some(_) => Ok(c),
            None => Err(ClusterError::Other("unknown node".to_owned())),
        }
    }
}

impl Link for MemoryLink {
    fn append(&self, payload: Bytes) -> BoxFuture<'_, Result<u64, ClusterError>> {
        Box::pin(async move {
            let seq = {
                let mut c = self.reach()?;
                c.last_seq += 1;
                let seq = c.last_seq;
                c.log.push_back(Entry { seq, payload });
                while c.log.len() > MAX_LOG_ENTRIES {
                    c.log.pop_front();
                }
                seq
            };
            self.shared.bump();
            Ok(seq)
        })
    }

    fn last_seq(&self) -> BoxFuture<'_, Result<u64, ClusterError>> {
        Box::pin(async move { Ok(self.reach()?.last_seq) })
    }

    fn follow(
        &self,
        after: u64,
    ) -> BoxFuture<'_, Result<mpsc::Receiver<Result<Entry, ClusterError>>, ClusterError>> {
        Box::pin(async move {
            drop(self.reach()?);
            let (tx, rx) = mpsc::channel(FOLLOW_QUEUE);
            let shared = Arc::clone(&self.shared);
            let node = self.node.clone();
            let mut changed = shared.changed.subscribe();
            tokio::spawn(async move {
                let mut next = after + 1;
                loop {
                    // What can be handed over now, taken under the lock.
                    let batch: Result<Vec<Entry>, ClusterError> = {
                        let c = shared.lock();
                        let reachable =
                            c.running && c.nodes.get(&node).is_some_and(|n| !n.cut && !n.lagging);
                        let first = c.log.front().map_or(c.last_seq + 1, |e| e.seq);
                        if !reachable {
                            Ok(Vec::new())
                        } else if next < first {
                            Err(ClusterError::Other(format!(
                                "events {next} to {} were discarded",
                                first - 1
                            )))
                        } else {
                            let skip = usize::try_from(next - first).unwrap_or(usize::MAX);
                            Ok(c.log
                                .iter()
                                .skip(skip)
                                .take(FOLLOW_QUEUE)
                                .cloned()
                                .collect())
                        }
                    };
                    match batch {
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        Ok(entries) if entries.is_empty() => {
                            tokio::select! {
                                _ = tx.closed() => return,
                                r = changed.changed() => if r.is_err() { return },
                            }
                        }
                        Ok(entries) => {
                            for e in entries {
                                next = e.seq + 1;
                                if tx.send(Ok(e)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
            Ok(rx)
        })
    }

    fn publish(&self, topic: &str, payload: Bytes) -> BoxFuture<'_, Result<(), ClusterError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            let targets: Vec<mpsc::Sender<Delivery>> = {
                let c = self.reach()?;
                c.nodes
                    .values()
                    .filter(|n| !n.cut && n.topics.contains(&topic))
                    .map(|n| n.deliveries.clone())
                    .collect()
            };
            for t in targets {
                // A node that dropped its receiver simply misses it.
                let _ = t
                    .send(Delivery {
                        topic: topic.clone(),
                        payload: payload.clone(),
                    })
                    .await;
            }
            Ok(())
        })
    }

    fn subscribe(&self, topic: &str) -> BoxFuture<'_, Result<(), ClusterError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            let mut c = self.reach()?;
            if let Some(n) = c.nodes.get_mut(&self.node) {
                n.topics.insert(topic);
            }
            Ok(())
        })
    }

    fn unsubscribe(&self, topic: &str) -> BoxFuture<'_, Result<(), ClusterError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            let mut c = self.reach()?;
            if let Some(n) = c.nodes.get_mut(&self.node) {
                n.topics.remove(&topic);
            }
            Ok(())
        })
    }

    fn deliveries(&self) -> Option<mpsc::Receiver<Delivery>> {
        self.deliveries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn request(
        &self,
        topic: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Option<Bytes>, ClusterError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            let responder = {
                let c = self.reach()?;
                let mut names: Vec<&String> = c
                    .nodes
                    .iter()
                    .filter(|(name, n)| {
                        **name != self.node && !n.cut && n.responders.contains_key(&topic)
                    })
                    .map(|(name, _)| name)
                    .collect();
                names.sort();
                names
                    .first()
                    .and_then(|name| c.nodes.get(*name))
                    .and_then(|n| n.responders.get(&topic))
                    .cloned()
            };
            let Some(responder) = responder else {
                // Nobody answers: the requester waits its time out, as it
                // would on a real carrier.
                tokio::time::sleep(timeout).await;
                return Ok(None);
            };
            let answer = tokio::task::spawn_blocking(move || responder(payload));
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(reply)) => Ok(Some(reply)),
                Ok(Err(e)) => Err(ClusterError::Other(format!("the responder failed: {e}"))),
                Err(_) => Ok(None),
            }
        })
    }

    fn serve(&self, topic: &str, responder: Responder) -> BoxFuture<'_, Result<(), ClusterError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            let mut c = self.reach()?;
            if let Some(n) = c.nodes.get_mut(&self.node) {
                n.responders.insert(topic, responder);
            }
            Ok(())
        })
    }

    fn claim(
        &self,
        key: &str,
        _value: Bytes,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, ClusterError>> {
        let key = key.to_owned();
        Box::pin(async move {
            let mut c = self.reach()?;
            let now = Instant::now();
            let free = match c.claims.get(&key) {
                None => true,
                Some(claim) => claim.node == self.node || claim.expires <= now,
            };
            if free {
                c.claims.insert(
                    key,
                    Claim {
                        node: self.node.clone(),
                        expires: now + lease,
                        lease,
                    },
                );
            }
            Ok(free)
        })
    }

    fn renew(&self) -> BoxFuture<'_, Result<Vec<(String, bool)>, ClusterError>> {
        Box::pin(async move {
            let mut c = self.reach()?;
            let now = Instant::now();
            let mut renewed = Vec::new();
            for (key, claim) in c.claims.iter_mut() {
                if claim.node == self.node {
                    claim.expires = now + claim.lease;
                    renewed.push((key.clone(), true));
                }
            }
            renewed.sort();
            Ok(renewed)
        })
    }

    fn release(&self, key: &str) -> BoxFuture<'_, Result<(), ClusterError>> {
        let key = key.to_owned();
        Box::pin(async move {
            let mut c = self.reach()?;
            if c.claims.get(&key).is_some_and(|cl| cl.node == self.node) {
                c.claims.remove(&key);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    async fn recv<T>(rx: &mut mpsc::Receiver<T>) -> T {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("in time")
            .expect("open")
    }

    #[tokio::test]
    async fn log_is_ordered_and_followed_from_a_point() {
        let carrier = MemoryCarrier::new();
        let (a, b) = (carrier.link("a"), carrier.link("b"));
        assert_eq!(a.last_seq().await.unwrap(), 0);
        let s1 = a.append(Bytes::from_static(b"one")).await.unwrap();
        let s2 = b.append(Bytes::from_static(b"two")).await.unwrap();
        assert!(s2 > s1);
        let mut all = b.follow(0).await.unwrap();
        assert_eq!(recv(&mut all).await.unwrap().payload, "one");
        assert_eq!(recv(&mut all).await.unwrap().payload, "two");
        let mut later = a.follow(s1).await.unwrap();
        assert_eq!(recv(&mut later).await.unwrap().seq, s2);
        // Live events arrive after the backlog.
        let s3 = a.append(Bytes::from_static(b"three")).await.unwrap();
        assert_eq!(recv(&mut all).await.unwrap().seq, s3);
        assert_eq!(recv(&mut later).await.unwrap().seq, s3);
        assert_eq!(b.last_seq().await.unwrap(), s3);
    }

    #[tokio::test]
    async fn a_follower_behind_the_kept_log_gets_an_error() {
        let carrier = MemoryCarrier::new();
        let a = carrier.link("a");
        for _ in 0..MAX_LOG_ENTRIES + 3 {
            a.append(Bytes::new()).await.unwrap();
        }
        let mut rx = a.follow(0).await.unwrap();
        assert!(recv(&mut rx).await.is_err());
        let mut rx = a.follow(3).await.unwrap();
        assert_eq!(recv(&mut rx).await.unwrap().seq, 4);
    }

    #[tokio::test]
    async fn topics_reach_subscribers_only() {
        let carrier = MemoryCarrier::new();
        let (a, b, c) = (carrier.link("a"), carrier.link("b"), carrier.link("c"));
        let mut b_in = b.deliveries().unwrap();
        assert!(b.deliveries().is_none());
        let mut c_in = c.deliveries().unwrap();
        b.subscribe("chan.61").await.unwrap();
        b.subscribe("chan.61").await.unwrap();
        c.subscribe("other").await.unwrap();
        a.publish("chan.61", Bytes::from_static(b"x"))
            .await
            .unwrap();
        a.publish("other", Bytes::from_static(b"y")).await.unwrap();
        let got = recv(&mut b_in).await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("chan.61", &b"x"[..])
        );
        assert_eq!(recv(&mut c_in).await.payload, "y");
        b.unsubscribe("chan.61").await.unwrap();
        a.publish("chan.61", Bytes::from_static(b"z"))
            .await
            .unwrap();
        a.publish("other", Bytes::from_static(b"w")).await.unwrap();
        assert_eq!(recv(&mut c_in).await.payload, "w");
        assert!(b_in.try_recv().is_err());
    }

    #[tokio::test]
    async fn requests_get_a_reply_or_none() {
        let carrier = MemoryCarrier::new();
        let (a, b) = (carrier.link("a"), carrier.link("b"));
        b.serve(
            "snapshot",
            Arc::new(|p: Bytes| Bytes::from([&p[..], b"!"].concat())),
        )
        .await
        .unwrap();
        let reply = a
            .request("snapshot", Bytes::from_static(b"hi"), WAIT)
            .await
            .unwrap();
        assert_eq!(reply.as_deref(), Some(&b"hi!"[..]));
        let none = a
            .request("nobody", Bytes::new(), Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(none, None);
    }

    #[tokio::test(start_paused = true)]
    async fn claims_are_exclusive_until_they_lapse() {
        let carrier = MemoryCarrier::new();
        let (a, b) = (carrier.link("a"), carrier.link("b"));
        let lease = Duration::from_secs(10);
        assert!(a.claim("slot.0", Bytes::new(), lease).await.unwrap());
        assert!(!b.claim("slot.0", Bytes::new(), lease).await.unwrap());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(a.renew().await.unwrap(), [("slot.0".to_owned(), true)]);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!b.claim("slot.0", Bytes::new(), lease).await.unwrap());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.claim("slot.0", Bytes::new(), lease).await.unwrap());
        b.release("slot.0").await.unwrap();
        assert!(a.claim("slot.0", Bytes::new(), lease).await.unwrap());
    }

    #[tokio::test]
    async fn a_cut_node_fails_and_receives_nothing_until_healed() {
        let carrier = MemoryCarrier::new();
        let (a, b) = (carrier.link("a"), carrier.link("b"));
        let mut b_in = b.deliveries().unwrap();
        b.subscribe("t").await.unwrap();
        let mut log = b.follow(0).await.unwrap();
        carrier.cut("b");
        assert!(matches!(
            b.append(Bytes::new()).await,
            Err(ClusterError::Unavailable(_))
        ));
        let seq = a.append(Bytes::from_static(b"e")).await.unwrap();
        a.publish("t", Bytes::from_static(b"lost")).await.unwrap();
        assert!(b_in.try_recv().is_err());
        carrier.heal("b");
        // The log is followed on where it stopped; the topic package is gone.
        assert_eq!(recv(&mut log).await.unwrap().seq, seq);
        a.publish("t", Bytes::from_static(b"seen")).await.unwrap();
        assert_eq!(recv(&mut b_in).await.payload, "seen");
    }

    #[tokio::test]
    async fn a_stopped_carrier_refuses_everything_and_keeps_its_log() {
        let carrier = MemoryCarrier::new();
        let a = carrier.link("a");
        let seq = a.append(Bytes::from_static(b"kept")).await.unwrap();
        carrier.stop();
        assert!(a.append(Bytes::new()).await.is_err());
        assert!(a.last_seq().await.is_err());
        assert!(a.publish("t", Bytes::new()).await.is_err());
        carrier.restart();
        assert_eq!(a.last_seq().await.unwrap(), seq);
        let mut rx = a.follow(0).await.unwrap();
        assert_eq!(recv(&mut rx).await.unwrap().payload, "kept");
    }
}

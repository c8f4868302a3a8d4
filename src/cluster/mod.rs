//! Several server nodes as one chat: the interface between the chat state
//! and whatever carries events between nodes.
//!
//! Every node keeps a full replica of the chat state. Changes to it
//! (logins, joins, renames, moderation, departures) are *events* appended
//! to one totally ordered log that every node applies in the same order
//! with the same code, so every replica agrees and a name claimed by two
//! nodes at once goes to whichever login the log ordered first. Channel
//! messages do not go through the log: the node where one starts encodes
//! it once and publishes the bytes on the channel's topic, and only nodes
//! with local members of that channel subscribe to it.
//!
//! [`Link`] is all the chat layer asks of the carrier: a log, topics,
//! request/reply (a joining node's snapshot) and short-lived claims (a
//! node's id slot). The NATS implementation is the one shipped for real
//! clusters; an in-process one lets several nodes run in one process.

pub mod memory;
pub mod nats;
pub mod replica;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// A boxed future, as [`Link`] methods return (the trait must be object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failure of the cluster link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The carrier cannot be reached (or did not answer in time); the
    /// operation may be retried once it is back.
    #[error("the cluster is unavailable ({0})")]
    Unavailable(String),
    /// Anything else the carrier reported.
    #[error("cluster error: {0}")]
    Other(String),
}

/// One event read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its position in the log: increasing by at least one per event.
    pub seq: u64,
    /// The event as appended.
    pub payload: Bytes,
}

/// A package that arrived on a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The topic it was published on.
    pub topic: String,
    /// The bytes as published.
    pub payload: Bytes,
}

/// Answers requests on a topic: gets the request's payload, returns the reply.
pub type Responder = std::sync::Arc<dyn Fn(Bytes) -> Bytes + Send + Sync>;

/// What the chat layer needs from whatever links the nodes.
///
/// Topics are strings of ASCII letters, digits, `-` and `_`, separated by
/// `.`; the chat layer makes them from hex-encoded keys, so no user text
/// reaches a carrier's subject syntax.
pub trait Link: Send + Sync + 'static {
    /// Appends one event to the shared log; resolves with its sequence once
    /// the log has stored it (it survives a restart of the carrier).
    fn append(&self, payload: Bytes) -> BoxFuture<'_, Result<u64, ClusterError>>;

    /// The sequence of the last event stored (0 when there is none).
    fn last_seq(&self) -> BoxFuture<'_, Result<u64, ClusterError>>;

    /// Follows the log from the event after `after` on: every event, in
    /// order, none twice, into the returned bounded receiver. If the
    /// carrier is lost the link reconnects by itself and goes on where it
    /// stopped; the receiver yields an error (and then ends) only when it
    /// cannot, e.g. events it had not delivered were discarded.
    fn follow(
        &self,
        after: u64,
    ) -> BoxFuture<'_, Result<mpsc::Receiver<Result<Entry, ClusterError>>, ClusterError>>;

    /// Publishes bytes on a topic, outside the log: delivered at most once
    /// to each current subscriber, in publication order per publisher.
    fn publish(&self, topic: &str, payload: Bytes) -> BoxFuture<'_, Result<(), ClusterError>>;

    /// Starts receiving a topic's packages on [`Link::deliveries`].
    /// Subscribing twice to a topic is the same as once.
    fn subscribe(&self, topic: &str) -> BoxFuture<'_, Result<(), ClusterError>>;

    /// Stops receiving a topic.
    fn unsubscribe(&self, topic: &str) -> BoxFuture<'_, Result<(), ClusterError>>;

    /// The packages of every subscribed topic, in arrival order, on one
    /// bounded receiver. Taken once: later calls return `None`.
    fn deliveries(&self) -> Option<mpsc::Receiver<Delivery>>;

    /// Sends a request on a topic and waits up to `timeout` for the first
    /// reply; `None` if nobody answered in time. A reply may be larger
    /// than one carrier message: the link splits and joins it.
    fn request(
        &self,
        topic: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Option<Bytes>, ClusterError>>;

    /// Answers requests on a topic with `responder` from now on.
    fn serve(&self, topic: &str, responder: Responder) -> BoxFuture<'_, Result<(), ClusterError>>;

    /// Claims a key for this node: create-only, so of several nodes
    /// claiming one key exactly one gets `true`. A claim lapses unless
    /// renewed within `lease`; [`Link::renew`] renews every claim this
    /// node holds, [`Link::release`] gives one up.
    fn claim(
        &self,
        key: &str,
        value: Bytes,
        lease: Duration,
    ) -> BoxFuture<'_, Result<bool, ClusterError>>;

    /// Renews every claim this node holds; `false` for a claim lost
    /// meanwhile (it lapsed and someone else took it).
    fn renew(&self) -> BoxFuture<'_, Result<Vec<(String, bool)>, ClusterError>>;

    /// Gives up a claim.
    fn release(&self, key: &str) -> BoxFuture<'_, Result<(), ClusterError>>;
}

//! The server's counters, gauges and the commit-latency histogram, in
//! Prometheus' data model (the `prometheus-client` crate), and their text
//! exposition for `/metrics` ([`crate::web`]).
//!
//! The metrics are process-wide: each is a few atomics, bumped where the
//! event happens (the connection loop, the store's writer, the chat
//! fan-out) without a handle passed around. Gauges that describe one
//! server's state (store queue depth, uptime) are set when the page is
//! scraped, from the server being scraped. Increments on hot paths are one
//! relaxed atomic add per event, and per message rather than per
//! recipient for deliveries.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s output (OpenMetrics text, which
/// Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The transport a connection runs over, as the `transport` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain TCP frames.
    Tcp,
    /// TCP frames inside TLS.
    Tls,
    /// WebSocket (over HTTP or HTTPS).
    WebSocket,
}

impl Transport {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::WebSocket => "websocket",
        }
    }
}

/// The `transport` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    /// `tcp`, `tls` or `websocket`.
    transport: &'static str,
}

/// Every metric the server keeps.
struct Metrics {
    /// The registry the text is encoded from.
    registry: Registry,
    /// Connections open now, by transport.
    connections: Family<TransportLabel, Gauge>,
    /// Connections accepted since start, by transport.
    accepted: Family<TransportLabel, Counter>,
    /// Successful logins.
    logins: Counter,
    /// Refused logins (name taken or invalid, password missing or wrong).
    login_failures: Counter,
    /// Chat messages accepted.
    messages: Counter,
    /// Chat messages queued for a recipient.
    deliveries: Counter,
    /// Connections dropped for not reading (queue full, write stalled).
    slow_consumers: Counter,
    /// Times a connection's reading was paused by flood control.
    throttled: Counter,
    /// Messages waiting for the store's writer.
    store_queue: Gauge,
    /// Time per store commit.
    commit_seconds: Histogram,
    /// Seconds since the server started.
    uptime: Gauge<f64, AtomicU64>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let connections = Family::<TransportLabel, Gauge>::default();
    let accepted = Family::<TransportLabel, Counter>::default();
    let m = Metrics {
        connections: connections.clone(),
        accepted: accepted.clone(),
        logins: Counter::default(),
        login_failures: Counter::default(),
        messages: Counter::default(),
        deliveries: Counter::default(),
        slow_consumers: Counter::default(),
        throttled: Counter::default(),
        store_queue: Gauge::default(),
        // 50 µs to about 6.5 s.
        commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
        uptime: Gauge::default(),
        registry: Registry::default(),
    };
    // Every label value exists from the start, at 0, so a scrape shows
    // each series before its first event.
    for t in [Transport::Tcp, Transport::Tls, Transport::WebSocket] {
        let label = TransportLabel {
            transport: t.label(),
        };
        let _ = connections.get_or_create(&label);
        let _ = accepted.get_or_create(&label);
    }
    registry.register(
        "chatmaster_connections",
        "Connections open now, by transport",
        connections,
    );
    registry.register(
        "chatmaster_connections_accepted",
        "Connections accepted since start, by transport",
        accepted,
    );
    registry.register("chatmaster_logins", "Successful logins", m.logins.clone());
    registry.register(
        "chatmaster_login_failures",
        "Refused logins (name taken or invalid, password missing or wrong)",
        m.login_failures.clone(),
    );
    registry.register(
        "chatmaster_messages",
        "Chat messages accepted",
        m.messages.clone(),
    );
    registry.register(
        "chatmaster_deliveries",
        "Chat messages queued for a recipient",
        m.deliveries.clone(),
    );
    registry.register(
        "chatmaster_slow_consumer_drops",
        "Connections dropped for not reading (queue full or write stalled)",
        m.slow_consumers.clone(),
    );
    registry.register(
        "chatmaster_throttled_reads",
        "Times flood control paused reading a connection",
        m.throttled.clone(),
    );
    registry.register(
        "chatmaster_store_queue_depth",
        "Messages waiting for the store's writer",
        m.store_queue.clone(),
    );
    registry.register(
        "chatmaster_store_commit_seconds",
        "Time per store commit",
        m.commit_seconds.clone(),
    );
    registry.register(
        "chatmaster_uptime_seconds",
        "Seconds since the server started",
        m.uptime.clone(),
    );
    Metrics { registry, ..m }
});

/// A connection over `t` was accepted and is open.
pub fn connection_opened(t: Transport) {
    let label = TransportLabel {
        transport: t.label(),
    };
    METRICS.accepted.get_or_create(&label).inc();
    METRICS.connections.get_or_create(&label).inc();
}

/// A connection over `t` closed.
pub fn connection_closed(t: Transport) {
    let label = TransportLabel {
        transport: t.label(),
    };
    METRICS.connections.get_or_create(&label).dec();
}

/// A login succeeded.
pub fn login() {
    METRICS.logins.inc();
}

/// A login was refused.
pub fn login_failed() {
    METRICS.login_failures.inc();
}

/// A chat message was accepted.
pub fn message() {
    METRICS.messages.inc();
}

/// A chat message was queued for `n` recipients.
pub fn deliveries(n: usize) {
    if n > 0 {
        METRICS.deliveries.inc_by(n as u64);
    }
}

/// A connection was dropped as a slow consumer.
pub fn slow_consumer() {
    METRICS.slow_consumers.inc();
}

/// Flood control paused reading a connection.
pub fn throttled() {
    METRICS.throttled.inc();
}

/// A store commit took `d`.
pub fn commit(d: Duration) {
    METRICS.commit_seconds.observe(d.as_secs_f64());
}

/// The metrics as OpenMetrics text, with the scraped server's store queue
/// depth and uptime.
pub fn encode(store_queue: usize, uptime: Duration) -> String {
    METRICS
        .store_queue
        .set(i64::try_from(store_queue).unwrap_or(i64::MAX));
    METRICS.uptime.set(uptime.as_secs_f64());
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

//! The load generator behind `chatmaster-bench`: opens many real client
//! connections to one server, drives a scenario, and reports what the
//! server delivered, how fast, and what it cost.
//!
//! Scenarios:
//! - [`Scenario::Fanout`]: `clients` receivers and `senders` senders spread
//!   over `channels` channels; senders send timestamped messages, every
//!   member counts what it gets. Reports deliveries expected and received
//!   (loss), deliveries per second and latency percentiles, and the
//!   senders' `message_sent` acknowledgements: committed messages per
//!   second and the send-to-acknowledgement latency. `--clients 0
//!   --senders 2N --channels N` is N two-member channels, all sending.
//! - [`Scenario::Login`]: a connect + log in + join storm; reports logins
//!   per second and the latency of one login.
//! - [`Scenario::Idle`]: logs `clients` connections in and holds them, so
//!   the server's memory per idle connection can be read (`--server-pid`).
//!
//! Everything on the wire goes through the library's own layers
//! ([`FrameCodec`], [`compress`], [`codec::encode`] and
//! [`codec::decode_body`]).
//!
//! The set-up (connect, log in, join; and for fanout a final ping) is
//! kept cheap too, because in a login storm it *is* the load: each
//! connection's `login` and `join` frames are encoded before the clock
//! starts ([`SetupFrames`]), written as bytes on a plain socket, and the
//! server's packages are only classified ([`classify`]): inflated into a
//! reused buffer (for long ones, only their start) and parsed into a
//! lenient [`LightPackage`] instead of decoded into [`ServerPackage`].
//! The rules are those of the client's handshake: a refused `session` or
//! an `error` package ends the run with the server's reason.
//!
//! Receivers are kept cheap, because on a small machine the bench shares
//! the CPU with the server it measures: every frame is *counted* (framing
//! only, no inflate), but only one in `sample` frames is inflated and
//! parsed to read its send time for the latency histogram. Sender
//! connections inspect everything they receive, since they are the ones
//! that get acknowledgements and error packages: each frame is inflated
//! and its JSON parsed leniently (as in the set-up), and only what is
//! neither a message nor a `message_sent` is decoded in full. Senders
//! send their messages as stored zlib streams, which any inflater reads,
//! so the bench does not spend on deflate the CPU it shares with the
//! server.
//!
//! The server should be started with `--rate-per-sec 0` for benchmarks:
//! its default flood control (20 packages per second per client) would
//! otherwise slow every sender down to that rate (it stops reading a fast
//! client; nothing is lost), which the report points out when the senders
//! were no faster than that.

pub mod memory;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::builder::TypedValueParser;
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::client::ClientError;
use crate::server::chat::GENERAL;
use crate::server::config::{
    DEFAULT_COMPRESSION_LEVEL, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_PACKAGE_BYTES,
    DEFAULT_RATE_BURST, DEFAULT_RATE_PER_SEC,
};
use crate::wire::codec::{self, DecodeError};
use crate::wire::compress;
use crate::wire::frame::FrameCodec;
use crate::wire::protocol::{ClientPackage, Command, OutgoingMessage, ServerPackage};
use flate2::{Decompress, FlushDecompress, Status};

/// Receiving connections when `--clients` is not given.
pub const DEFAULT_CLIENTS: usize = 100;
/// Channels the connections are spread over.
pub const DEFAULT_CHANNELS: usize = 1;
/// Sending connections.
pub const DEFAULT_SENDERS: usize = 1;
/// Seconds a fanout run sends for, or an idle run holds, when neither
/// `--duration` nor `--messages` is given.
pub const DEFAULT_DURATION_SECS: f64 = 5.0;
/// Message text size in bytes.
pub const DEFAULT_SIZE: usize = 64;
/// Messages a channel's senders may be ahead of its slowest receiver at
/// `--rate 0`; well below the server's default outbound queue (1024) so a
/// full-speed run measures throughput rather than the slow-consumer policy.
pub const DEFAULT_WINDOW: u64 = 256;
/// One received frame in this many is decoded for its latency.
pub const DEFAULT_SAMPLE: u64 = 16;
/// Connections being set up at once.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Worker threads of the bench's runtime. One, because the bench shares a
/// small machine with the server it measures: a second bench thread
/// competes with the server for the cores and adds cross-thread wake-ups.
/// (In the 100-member latency scenario on 2 cores, one set of runs gave a
/// p99 of 1.4-1.6 ms with 1 thread against 3.5-8 ms with 2, another no
/// difference beyond the noise; a login storm costs the bench about a
/// quarter less CPU on one thread.)
pub const DEFAULT_THREADS: usize = 1;
/// Seconds one connection's handshake (connect, login, join) may take.
pub const SETUP_TIMEOUT_SECS: u64 = 10;
/// Seconds to wait, after the last message was sent, for deliveries still in flight.
pub const DRAIN_TIMEOUT_SECS: u64 = 5;
/// Milliseconds without a single delivery after which the drain gives up early.
pub const DRAIN_STALL_MS: u64 = 1000;
/// Messages one sender writes in one syscall at `--rate 0`.
const SEND_BATCH: u64 = 16;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes a discarding reader (login and idle scenarios) reads at a time.
const DISCARD_CHUNK: usize = 512;
/// Read buffer a connection starts its set-up with; a `session` listing
/// 1,000 channel names compresses to a few KiB, and the buffer grows if a
/// frame needs more.
const SETUP_READ_CAPACITY: usize = 8 * 1024;
/// Inflate buffer kept between packages; a larger one (from an unusually
/// large package) is freed rather than kept for the rest of the run.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;
/// Token of the fanout set-up's final `ping`.
const SETTLE_TOKEN: &str = "bench-ready";
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often the run's completion is checked.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// Pause when a sender is a full window ahead of its receivers.
const WINDOW_WAIT: Duration = Duration::from_micros(200);
/// Unexpected packages logged individually; the rest are only counted.
const MAX_WARNINGS: u64 = 5;
/// Largest latency recorded, in microseconds (longer ones are clamped).
const MAX_LATENCY_US: u64 = 60_000_000;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Senders broadcast timestamped messages to channels of receivers.
    Fanout,
    /// A connect + log in + join storm: logins per second.
    Login,
    /// Hold logged-in connections so server memory per connection can be read.
    Idle,
    /// Write --messages stored messages into the database file --db (no
    /// server involved), for `memory`.
    Fill,
    /// History pages and searches against a server started on a filled
    /// database: answer latency percentiles.
    Memory,
}

/// Command-line flags of `chatmaster-bench`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "chatmaster-bench",
    version,
    about = "Load generator for a ChatMaster 3000 server",
    long_about = "Load generator for a ChatMaster 3000 server.\n\n\
        Start the server with flood control off, e.g. `chatmaster-server --rate-per-sec 0`: \
        by default it slows every client down to 20 packages per second, so the run would \
        measure the limit, not the server (the report says so when it looks like it).\n\n\
        fanout: --clients receivers and --senders senders spread over --channels channels; \
        reports deliveries expected/received (loss), deliveries/s, latency percentiles, bytes. \
        Every frame is counted, one in --sample is decoded for its latency. Senders decode \
        everything: their message_sent acknowledgements give committed messages/s and the \
        send-to-acknowledgement latency, and a sender stays within --window of its commits too. \
        --clients 0 --senders 2N --channels N runs N two-member channels, all sending.\n\
        login: --clients connections connect, log in and join a channel (or, with --stay-in-general, stay in general), \
        --concurrency at a time; reports logins/s.\n\
        idle: --clients connections log in and are held for --duration seconds; with --server-pid \
        reports the server's resident memory per connection.\n\
        fill: writes --messages messages (default 1,000,000) over --channels channels straight into \
        the new database file --db (general and registered channels bench-0, ...); start the server \
        on it next.\n\
        memory: --clients readers (give 1 for answers one at a time) each ask --requests history pages (latest, or before a \
        random id) and as many searches (rare, common and very common words, prefixes, two words, \
        phrases), one at a time; reports the answers' latency percentiles.\n\n\
        Every connection's login and join frames are encoded before the clock starts. \
        --threads sizes the bench's own runtime (default 1, the cheapest next to a server on the same cores).\n\n\
        It connects only to --host:--port (and, fanout, the --also-port nodes of one cluster) and stops by itself."
)]
pub struct BenchArgs {
    /// Scenario to run (also accepted as the first positional argument).
    #[arg(long, value_enum, default_value_t = Scenario::Fanout)]
    pub scenario: Scenario,
    /// Scenario as a positional word: `fanout`, `login` or `idle`.
    #[arg(value_enum, conflicts_with = "scenario")]
    pub scenario_word: Option<Scenario>,
    /// Server address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// fanout: another port of --host (repeatable), a node of the same
    /// cluster: connections are spread over --port and these, round robin
    /// (receivers and senders each), so channels span the nodes.
    #[arg(long, value_name = "PORT")]
    pub also_port: Vec<u16>,
    /// Receiving connections (fanout), or connections to log in (login, idle).
    #[arg(long, default_value_t = DEFAULT_CLIENTS)]
    pub clients: usize,
    /// Channels the connections are spread over (round robin).
    #[arg(long, default_value_t = DEFAULT_CHANNELS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub channels: usize,
    /// Sending connections (fanout); each is also a member of its channel.
    #[arg(long, default_value_t = DEFAULT_SENDERS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub senders: usize,
    /// Messages per second in total; 0 = as fast as the server delivers them
    /// (closed loop: senders stay at most --window messages ahead of the slowest receiver).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds to send for (fanout) or to hold the connections (idle).
    #[arg(long, conflicts_with = "messages")]
    pub duration: Option<f64>,
    /// Messages to send in total (fanout), instead of --duration.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Message text size in bytes (at least 24: the send time rides in the text).
    #[arg(long, default_value_t = DEFAULT_SIZE, value_parser = clap::value_parser!(u32).range(24..).map(|v| v as usize))]
    pub size: usize,
    /// Process id of the server, to report its CPU time and resident memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// At --rate 0, how many messages a channel's senders may be ahead of its
    /// slowest receiver; 0 = no limit (open loop, may trip the slow-consumer policy).
    #[arg(long, default_value_t = DEFAULT_WINDOW)]
    pub window: u64,
    /// Decode one received frame in this many for latency (1 = every frame).
    #[arg(long, default_value_t = DEFAULT_SAMPLE, value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: u64,
    /// Connections being set up at the same time.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub concurrency: usize,
    /// Do not print the progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Worker threads of the bench's own runtime (1 = everything on one
    /// thread, the cheapest when the bench shares the machine with the server).
    #[arg(long, default_value_t = DEFAULT_THREADS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub threads: usize,
    /// login, idle: every connection stays in `general` instead of joining a
    /// bench channel, and all stay connected until the end: a reconnect
    /// storm into one crowded channel (--channels is then ignored).
    #[arg(long)]
    pub stay_in_general: bool,
    /// fill: the new database file to write.
    #[arg(long, value_name = "FILE")]
    pub db: Option<std::path::PathBuf>,
    /// memory: history pages (and searches) each reader asks.
    #[arg(long, default_value_t = DEFAULT_REQUESTS)]
    pub requests: u64,
    /// Print a completion script for this shell and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<clap_complete::Shell>,
}

/// History pages and searches each reader asks in the memory scenario.
pub const DEFAULT_REQUESTS: u64 = 500;
/// Messages the fill scenario writes unless --messages says otherwise.
pub const DEFAULT_FILL_MESSAGES: u64 = 1_000_000;

impl BenchArgs {
    /// The options these flags describe.
    pub fn options(&self) -> Options {
        Options {
            scenario: self.scenario_word.unwrap_or(self.scenario),
            addr: format!("{}:{}", self.host, self.port),
            also: self
                .also_port
                .iter()
                .map(|p| format!("{}:{p}", self.host))
                .collect(),
            clients: self.clients,
            channels: self.channels,
            senders: self.senders,
            rate: self.rate.max(0.0),
            stop: match (self.messages, self.duration) {
                (Some(n), _) => Stop::Messages(n),
                (None, Some(d)) => Stop::Duration(Duration::from_secs_f64(d.max(0.0))),
                (None, None) => Stop::Duration(Duration::from_secs_f64(DEFAULT_DURATION_SECS)),
            },
            size: self.size,
            server_pid: self.server_pid,
            window: self.window,
            sample: self.sample.max(1),
            concurrency: self.concurrency.max(1),
            progress: !self.quiet,
            stay_in_general: self.stay_in_general,
            db: self.db.clone(),
            requests: self.requests,
            messages: self.messages,
        }
    }
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long.
    Duration(Duration),
    /// After this many messages in total.
    Messages(u64),
}

/// What to run, independent of the command line (tests build this directly).
#[derive(Debug, Clone)]
pub struct Options {
    /// Which scenario.
    pub scenario: Scenario,
    /// `host:port` of the server; the only address connected to, but for
    /// `also`.
    pub addr: String,
    /// fanout: more `host:port`s (nodes of one cluster) the connections
    /// are spread over with `addr`, round robin.
    pub also: Vec<String>,
    /// Receiving (fanout) or logging-in (login, idle) connections.
    pub clients: usize,
    /// Channels the connections are spread over.
    pub channels: usize,
    /// Sending connections (fanout).
    pub senders: usize,
    /// Total messages per second; 0 = closed loop.
    pub rate: f64,
    /// When to stop sending (fanout) or holding (idle).
    pub stop: Stop,
    /// Message text bytes.
    pub size: usize,
    /// Server process to read /proc figures of.
    pub server_pid: Option<u32>,
    /// Closed-loop window in messages; 0 = open loop.
    pub window: u64,
    /// Decode one frame in this many.
    pub sample: u64,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Login and idle connections stay in `general` (no join).
    pub stay_in_general: bool,
    /// The database file `fill` writes.
    pub db: Option<std::path::PathBuf>,
    /// Requests of each kind per reader (memory).
    pub requests: u64,
    /// Messages to write (fill), as `--messages` gave them.
    pub messages: Option<u64>,
}

impl Options {
    /// Fanout options with the defaults, for `addr`.
    pub fn fanout(addr: impl Into<String>) -> Self {
        Options {
            scenario: Scenario::Fanout,
            addr: addr.into(),
            also: Vec::new(),
            clients: DEFAULT_CLIENTS,
            channels: DEFAULT_CHANNELS,
            senders: DEFAULT_SENDERS,
            rate: 0.0,
            stop: Stop::Duration(Duration::from_secs_f64(DEFAULT_DURATION_SECS)),
            size: DEFAULT_SIZE,
            server_pid: None,
            window: DEFAULT_WINDOW,
            sample: DEFAULT_SAMPLE,
            concurrency: DEFAULT_CONCURRENCY,
            progress: false,
            stay_in_general: false,
            db: None,
            requests: DEFAULT_REQUESTS,
            messages: None,
        }
    }
}

/// Why a run could not be carried out (as opposed to a run that measured loss).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A connection could not be set up.
    #[error("connection {name}: {source}")]
    Setup {
        /// The bench user's name.
        name: String,
        /// What went wrong.
        source: ClientError,
    },
    /// The server refused a step of the handshake.
    #[error("connection {name}: {reason}")]
    Refused {
        /// The bench user's name.
        name: String,
        /// The server's words.
        reason: String,
    },
    /// A socket failed during the run.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The options make no sense.
    #[error("{0}")]
    Options(String),
    /// The memory bench could not fill its database or read answers.
    #[error("{0}")]
    Memory(String),
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// How many values the percentiles are computed from.
    pub samples: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest value seen.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        Some(Latency {
            samples: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: h.mean(),
        })
    }
}

/// The server's CPU time and memory, read from /proc.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ProcStats {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size in KiB.
    pub rss_kib: u64,
}

impl ProcStats {
    /// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
    pub fn read(pid: u32) -> io::Result<ProcStats> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc format");
        // The command name may contain spaces; fields are counted after its ')'.
        let rest = stat.rsplit_once(')').ok_or_else(bad)?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the name.
        let ticks = |i: usize| -> io::Result<f64> {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .ok_or_else(bad)
        };
        // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
        let cpu_secs = (ticks(11)? + ticks(12)?) / 100.0;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        Ok(ProcStats { cpu_secs, rss_kib })
    }
}

/// The server's figures over a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerUsage {
    /// Before the bench connected.
    pub before: ProcStats,
    /// At the end of the measured phase.
    pub after: ProcStats,
    /// CPU seconds the server used during the run.
    pub cpu_secs_used: f64,
    /// Resident memory growth per connection held, in bytes (idle scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes_per_connection: Option<f64>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Report {
    /// Which scenario.
    pub scenario: String,
    /// Server address.
    pub addr: String,
    /// The machine's 1-minute load average when the run started (the
    /// machine may be shared; figures taken under load are not comparable).
    pub load_average: f64,
    /// CPU seconds the bench itself used (setup included).
    pub bench_cpu_secs: f64,
    /// Of `bench_cpu_secs`, the CPU seconds spent encoding every
    /// connection's set-up frames before the clock started.
    pub prepare_cpu_secs: f64,
    /// Connections opened in all.
    pub connections: usize,
    /// Channels used.
    pub channels: usize,
    /// Members of the largest channel (fanout).
    pub max_channel_members: usize,
    /// Requested total rate (0 = as fast as the server delivers).
    pub rate: f64,
    /// At rate 0, how far senders may run ahead of the slowest receiver
    /// (messages); 0 = open loop.
    pub window: u64,
    /// Message text size.
    pub size: usize,
    /// Seconds spent opening and logging in the connections.
    pub setup_secs: f64,
    /// Seconds of the measured phase.
    pub run_secs: f64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Deliveries the server should have made (each message to every other member).
    pub deliveries_expected: u64,
    /// Deliveries counted by the members.
    pub deliveries_received: u64,
    /// `expected - received`; anything but 0 is a failure.
    pub deliveries_lost: i64,
    /// Connections the server closed during the run.
    pub connections_lost: u64,
    /// Messages sent per second.
    pub messages_per_sec: f64,
    /// Deliveries received per second.
    pub deliveries_per_sec: f64,
    /// Send-to-receive latency of the sampled deliveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// `message_sent` acknowledgements the senders received (messages
    /// the server reported committed).
    pub messages_acknowledged: u64,
    /// Acknowledged messages per second.
    pub committed_per_sec: f64,
    /// Send-to-`message_sent` latency, every acknowledgement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_latency: Option<Latency>,
    /// One frame in this many was decoded for latency.
    pub sample: u64,
    /// Logins per second (login and idle scenarios).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logins_per_sec: Option<f64>,
    /// Bytes the bench wrote during the measured phase, frame headers included.
    pub bytes_sent: u64,
    /// Bytes the bench read during the measured phase, frame headers included.
    pub bytes_received: u64,
    /// Sending connections (fanout).
    pub senders: usize,
    /// Other unexpected packages received (errors, notifications).
    pub unexpected_packages: u64,
    /// The server's CPU and memory, with `--server-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerUsage>,
    /// What `fill` wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill: Option<memory::FillReport>,
    /// What `memory` measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<memory::MemoryReport>,
}

impl Report {
    /// Whether the run delivered everything it should have.
    pub fn lossless(&self) -> bool {
        if let Some(m) = &self.memory {
            return m.errors == 0;
        }
        self.deliveries_lost == 0
            && self.connections_lost == 0
            && (self.scenario != "fanout" || self.messages_acknowledged == self.messages_sent)
    }

    /// Whether the senders were no faster than a server's default flood
    /// control lets a client be (the burst at once, then the rate), which
    /// suggests the server ran with it: every sender sent more than the
    /// burst, and beyond it no more than the rate (plus 5 %) allows.
    pub fn looks_throttled(&self) -> bool {
        if self.senders == 0 || self.rate > 0.0 {
            return false;
        }
        let per_sender = self.messages_sent as f64 / self.senders as f64;
        let burst = f64::from(DEFAULT_RATE_BURST);
        let allowed = burst + 1.05 * f64::from(DEFAULT_RATE_PER_SEC) * self.run_secs;
        per_sender > burst && per_sender <= allowed
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        if let Some(f) = &self.fill {
            return format!(
                "scenario fill  db {}\nwrote {} messages over {} channels in {:.1} s ({:.0} messages/s)\n",
                f.db, f.messages, f.channels, f.secs, f.per_sec
            );
        }
        if let Some(m) = &self.memory {
            return memory_text(self, m);
        }
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {}  server {}  connections {}  channels {}",
            self.scenario, self.addr, self.connections, self.channels
        );
        let _ = writeln!(
            s,
            "machine load    {:.2} at start; bench used {:.2} s CPU ({:.2} s of it encoding set-up frames before the clock)",
            self.load_average, self.bench_cpu_secs, self.prepare_cpu_secs
        );
        let _ = writeln!(s, "setup           {:.3} s", self.setup_secs);
        if let Some(l) = self.logins_per_sec {
            let _ = writeln!(s, "logins/s        {l:.0}");
        }
        if self.scenario == "fanout" {
            let rate = if self.rate > 0.0 {
                format!("{} msg/s", self.rate)
            } else if self.window > 0 {
                format!("closed loop (window {} messages)", self.window)
            } else {
                "open loop (no window)".to_owned()
            };
            let _ = writeln!(
                s,
                "largest channel {} members, {} B messages, rate {rate}",
                self.max_channel_members, self.size
            );
            let _ = writeln!(s, "run             {:.3} s", self.run_secs);
            let _ = writeln!(
                s,
                "messages sent   {}  ({:.0}/s)",
                self.messages_sent, self.messages_per_sec
            );
            let _ = writeln!(
                s,
                "deliveries      {} received / {} expected  ({:.0}/s)",
                self.deliveries_received, self.deliveries_expected, self.deliveries_per_sec
            );
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "latency         p50 {} us  p90 {} us  p99 {} us  max {} us  (mean {:.0} us, {} samples)",
                l.p50_us, l.p90_us, l.p99_us, l.max_us, l.mean_us, l.samples
            );
        }
        if self.scenario == "fanout" {
            let _ = writeln!(
                s,
                "committed       {} acknowledged / {} sent  ({:.0}/s)",
                self.messages_acknowledged, self.messages_sent, self.committed_per_sec
            );
        }
        if let Some(l) = &self.ack_latency {
            let _ = writeln!(
                s,
                "ack latency     p50 {} us  p90 {} us  p99 {} us  max {} us  (mean {:.0} us, {} samples)",
                l.p50_us, l.p90_us, l.p99_us, l.max_us, l.mean_us, l.samples
            );
        }
        if self.scenario == "fanout" {
            let _ = writeln!(
                s,
                "bytes           {} sent, {} received",
                self.bytes_sent, self.bytes_received
            );
        }
        if let Some(u) = &self.server {
            let _ = writeln!(
                s,
                "server cpu      {:.2} s used ({:.2} -> {:.2})",
                u.cpu_secs_used, u.before.cpu_secs, u.after.cpu_secs
            );
            let _ = writeln!(
                s,
                "server rss      {} KiB -> {} KiB",
                u.before.rss_kib, u.after.rss_kib
            );
            if let Some(per) = u.rss_bytes_per_connection {
                let _ = writeln!(s, "rss/connection  {per:.0} B");
            }
        }
        if self.deliveries_lost != 0 {
            let _ = writeln!(
                s,
                "!!! LOSS: {} deliveries missing ({:.3}% of expected) !!!",
                self.deliveries_lost,
                100.0 * self.deliveries_lost as f64 / self.deliveries_expected.max(1) as f64
            );
        }
        if self.connections_lost != 0 {
            let _ = writeln!(
                s,
                "!!! {} connections were closed by the server during the run (slow consumer?) !!!",
                self.connections_lost
            );
        }
        if self.unexpected_packages != 0 {
            let _ = writeln!(
                s,
                "!!! {} unexpected packages received !!!",
                self.unexpected_packages
            );
        }
        if self.looks_throttled() {
            let _ = writeln!(
                s,
                "!!! the senders were no faster than the server's default flood control ({} per second per client, bursts of {}): start the server with --rate-per-sec 0 for benchmarks !!!",
                DEFAULT_RATE_PER_SEC, DEFAULT_RATE_BURST
            );
        }
        s
    }
}

/// The memory scenario's report as text.
fn memory_text(r: &Report, m: &memory::MemoryReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "scenario memory  server {}  readers {}  stored messages {}",
        r.addr, r.connections, m.stored
    );
    let _ = writeln!(
        s,
        "machine load    {:.2} at start; bench used {:.2} s CPU; {:.1} s in all; {} errors",
        r.load_average, r.bench_cpu_secs, r.run_secs, m.errors
    );
    let line = |s: &mut String, what: &str, l: &Latency| {
        let _ = writeln!(
            s,
            "{what:<22} n {:>6}  p50 {:>7} us  p90 {:>7} us  p99 {:>7} us  max {:>7} us",
            l.samples, l.p50_us, l.p90_us, l.p99_us, l.max_us
        );
    };
    if let Some(l) = &m.history {
        line(&mut s, "history (50)", l);
    }
    if let Some(l) = &m.search {
        line(&mut s, "search (all)", l);
    }
    for (kind, l) in &m.search_kinds {
        line(&mut s, &format!("  {kind}"), l);
    }
    s
}

/// Runs the scenario in `options` against the server and reports.
pub async fn run(options: &Options) -> Result<Report, BenchError> {
    let load_average = load_average().unwrap_or(0.0);
    let cpu_before = ProcStats::read(std::process::id()).map(|s| s.cpu_secs);
    let mut report = match options.scenario {
        Scenario::Fanout => fanout(options).await?,
        Scenario::Login | Scenario::Idle => storm(options).await?,
        Scenario::Fill => {
            let db = options
                .db
                .clone()
                .ok_or_else(|| BenchError::Options("fill needs --db FILE".into()))?;
            let messages = options.messages.unwrap_or(DEFAULT_FILL_MESSAGES);
            let channels = options.channels;
            let filled = tokio::task::spawn_blocking(move || memory::fill(&db, messages, channels))
                .await
                .map_err(|e| BenchError::Memory(format!("fill failed: {e}")))??;
            Report {
                scenario: "fill".into(),
                channels: filled.channels,
                fill: Some(filled),
                ..Report::default()
            }
        }
        Scenario::Memory => {
            let started = Instant::now();
            let measured = memory::measure(options, options.requests).await?;
            Report {
                scenario: "memory".into(),
                addr: options.addr.clone(),
                connections: options.clients.max(1),
                run_secs: started.elapsed().as_secs_f64(),
                memory: Some(measured),
                ..Report::default()
            }
        }
    };
    report.load_average = load_average;
    if let (Ok(before), Ok(after)) = (cpu_before, ProcStats::read(std::process::id())) {
        report.bench_cpu_secs = after.cpu_secs - before;
    }
    Ok(report)
}

/// CPU time of the calling thread, from `/proc/thread-self/schedstat`
/// (nanoseconds; `/proc/PID/stat` counts in 10 ms ticks, too coarse for
/// the few tens of milliseconds the frames of a run take to encode).
struct ThreadCpu(Option<u64>);

impl ThreadCpu {
    fn now() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// Starts measuring.
    fn start() -> ThreadCpu {
        ThreadCpu(Self::now())
    }

    /// Seconds of CPU since [`ThreadCpu::start`]; 0 where unreadable.
    fn secs(&self) -> f64 {
        match (self.0, Self::now()) {
            (Some(before), Some(after)) => after.saturating_sub(before) as f64 / 1e9,
            _ => 0.0,
        }
    }
}

/// The 1-minute load average from /proc/loadavg.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A name unique to this process and connection (names are at most 32 chars).
fn bench_name(kind: &str, i: usize) -> String {
    format!("b{}{kind}{i}", std::process::id() % 100_000)
}

/// The bench's channel number `k`.
fn channel_name(k: usize) -> String {
    format!("bench-{k}")
}

/// One connection's set-up commands, framed and compressed before the
/// timed phase starts, so the measured phase only writes bytes (load
/// generators such as redis-benchmark prebuild their command buffers the
/// same way: encoding is the client's cost, not the server's).
#[derive(Debug, Clone)]
pub struct SetupFrames {
    /// `login {"username": name}`, ready to write.
    pub login: Bytes,
    /// `join {"channel": channel}`, ready to write.
    pub join: Bytes,
}

impl SetupFrames {
    /// Encodes the login of `name` and its join of `channel` with the
    /// library's own [`codec::encode`].
    pub fn new(name: &str, channel: &str) -> Result<SetupFrames, BenchError> {
        let login = encode_command("login", serde_json::json!({ "username": name }));
        let join = encode_command("join", serde_json::json!({ "channel": channel }));
        match (login, join) {
            (Ok(login), Ok(join)) => Ok(SetupFrames { login, join }),
            (Err(e), _) | (_, Err(e)) => Err(BenchError::Setup {
                name: name.to_owned(),
                source: ClientError::Encode(e),
            }),
        }
    }
}

/// Frames one command package as the client would send it.
fn encode_command(
    command: &str,
    parameters: serde_json::Value,
) -> Result<Bytes, crate::wire::codec::EncodeError> {
    codec::encode(
        &ClientPackage::Command(Command::new(command, Some(parameters))),
        DEFAULT_MAX_PACKAGE_BYTES,
        DEFAULT_COMPRESSION_LEVEL,
    )
}

/// The members of a server package that the bench's set-up looks at,
/// parsed leniently: a plain struct (no internally tagged enum, so no
/// buffering of the package and no dependence on member order), unknown
/// members skipped, lists such as `channels` and `users` skipped without
/// building them. Strings borrow from the inflated text unless they
/// contain escapes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LightPackage<'a> {
    /// `type`: `request`, `session`, `notification`, `error`, `message`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// `data`, with only the members below.
    #[serde(default, borrow)]
    pub data: LightData<'a>,
}

/// The members of `data` the set-up needs (see `protocol.md`, section 5).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LightData<'a> {
    /// `request` of a `request` package (`login`).
    #[serde(default, borrow, deserialize_with = "opt_text")]
    pub request: Option<Cow<'a, str>>,
    /// `status` of a `session`.
    #[serde(default)]
    pub status: Option<bool>,
    /// `reason` of a refused `session`.
    #[serde(default, borrow, deserialize_with = "opt_text")]
    pub reason: Option<Cow<'a, str>>,
    /// `event_type` of a `notification`.
    #[serde(default, borrow, deserialize_with = "opt_text")]
    pub event_type: Option<Cow<'a, str>>,
    /// `username` of a session or a notification.
    #[serde(default, borrow, deserialize_with = "opt_text")]
    pub username: Option<Cow<'a, str>>,
    /// `channel` of a session or a notification.
    #[serde(default, borrow, deserialize_with = "opt_text")]
    pub channel: Option<Cow<'a, str>>,
    /// `users`, only whether it is there (the joiner's own `user_joined`
    /// carries it); `null` counts as absent, as in the full decode.
    #[serde(default)]
    pub users: Option<IgnoredAny>,
    /// `error_type` of an `error`.
    #[serde(default, borrow, deserialize_with = "opt_text")]
    pub error_type: Option<Cow<'a, str>>,
    /// `message` of an `error` (or the text of a chat `message`).
    #[serde(default, borrow, deserialize_with = "opt_text")]
    pub message: Option<Cow<'a, str>>,
    /// `token` of a `pong` (the fanout set-up pings before measuring).
    #[serde(default, borrow, deserialize_with = "opt_text")]
    pub token: Option<Cow<'a, str>>,
}

/// An optional string that borrows from the input when it can. serde only
/// borrows a `Cow` that is the field's own type, not one inside an
/// `Option`, hence the newtype.
fn opt_text<'de: 'a, 'a, D>(deserializer: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text<'a>>::deserialize(deserializer)?.map(|t| t.0))
}

impl<'a> LightPackage<'a> {
    /// Parses inflated package text.
    pub fn parse(json: &'a [u8]) -> Result<LightPackage<'a>, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Whether this is a `notification` of `event_type`.
    fn is_event(&self, event_type: &str) -> bool {
        self.kind == "notification" && self.data.event_type.as_deref() == Some(event_type)
    }

    /// `"{error_type}: {message}"` of an `error` package, as the set-up reports it.
    fn error_reason(&self) -> String {
        format!(
            "{}: {}",
            self.data.error_type.as_deref().unwrap_or_default(),
            self.data.message.as_deref().unwrap_or_default()
        )
    }
}

/// Inflates one frame body into a buffer reused across packages and hands
/// the lenient parse of it to `f`.
pub fn inspect_light<R>(
    body: &[u8],
    f: impl FnOnce(&LightPackage<'_>) -> R,
) -> Result<R, DecodeError> {
    thread_local! {
        // Reused so the set-up allocates nothing per package; bounded like
        // the codec's own scratch buffer.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        compress::inflate_into(body, DEFAULT_MAX_PACKAGE_BYTES, &mut scratch)?;
        let result = LightPackage::parse(&scratch).map(|p| f(&p));
        // Do not let one large package pin a large buffer to this thread.
        if scratch.capacity() > SCRATCH_KEEP_BYTES {
            *scratch = Vec::new();
        }
        Ok(result?)
    })
}

/// What a set-up step waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStep<'s> {
    /// The server's `request login` on connect.
    LoginRequest,
    /// The `session` answering `login`.
    Session,
    /// The user's own `user_joined` for this channel (the copy with `users`).
    OwnJoin {
        /// The bench user's name.
        name: &'s str,
        /// The channel joined.
        channel: &'s str,
    },
    /// The `pong` carrying this token.
    Pong(&'s str),
}

/// What one package means to a set-up step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The step is complete.
    Done,
    /// Somebody else's traffic: keep reading.
    Skip,
    /// The server refused: a `session` with `status: false` (its reason)
    /// or an `error` package (`"error_type: message"`).
    Refused(String),
    /// Not what the protocol says comes at this point.
    Unexpected,
}

impl SetupStep<'_> {
    /// Judges one leniently parsed package; the same rules as the
    /// client's login handshake followed by waiting for the own join.
    pub fn judge(&self, p: &LightPackage<'_>) -> Verdict {
        let d = &p.data;
        match *self {
            SetupStep::LoginRequest
                if p.kind == "request" && d.request.as_deref() == Some("login") =>
            {
                Verdict::Done
            }
            SetupStep::LoginRequest => Verdict::Unexpected,
            SetupStep::Session if p.kind == "session" => match d.status {
                Some(true) => Verdict::Done,
                Some(false) => Verdict::Refused(d.reason.as_deref().unwrap_or_default().to_owned()),
                None => Verdict::Unexpected,
            },
            SetupStep::Session => Verdict::Unexpected,
            SetupStep::OwnJoin { name, channel } => {
                if p.kind == "error" {
                    Verdict::Refused(p.error_reason())
                } else if p.is_event("user_joined")
                    && d.users.is_some()
                    && d.username.as_deref() == Some(name)
                    && d.channel.as_deref() == Some(channel)
                {
                    Verdict::Done
                } else {
                    Verdict::Skip
                }
            }
            SetupStep::Pong(token) => {
                if p.kind == "error" {
                    Verdict::Refused(p.error_reason())
                } else if p.is_event("pong") && d.token.as_deref() == Some(token) {
                    Verdict::Done
                } else {
                    Verdict::Skip
                }
            }
        }
    }
}

/// Inflates and judges one frame body for `step`.
///
/// Only the first [`PREFIX_BYTES`] of the package are inflated at first.
/// A package that ends within them is parsed leniently as a whole. A
/// longer one is recognised from its start only if it is the `session`
/// accepting the login or the user's own `user_joined` with its member
/// list, laid out as the server writes them (these two carry up to 1,000
/// names each, and inflating and scanning them was most of the set-up's
/// CPU); anything else falls back to [`inspect_light`] on the whole package.
pub fn classify(body: &[u8], step: SetupStep<'_>) -> Result<Verdict, DecodeError> {
    let fast = PREFIX.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (inflater, out) = &mut *guard;
        match inflate_prefix(body, inflater, out)? {
            Prefix::Whole(len) => Some(
                LightPackage::parse(&out[..len])
                    .map(|p| step.judge(&p))
                    .map_err(DecodeError::from),
            ),
            Prefix::Start => step.judge_start(&out[..]).then_some(Ok(Verdict::Done)),
        }
    });
    match fast {
        Some(verdict) => verdict,
        None => inspect_light(body, |p| step.judge(p)),
    }
}

/// Inflated bytes [`classify`] looks at before deciding whether it needs
/// the whole package: enough for the start of a `session` or of an own
/// `user_joined` with bench-sized names, small enough to be cheap.
pub const PREFIX_BYTES: usize = 512;

thread_local! {
    // A zlib state of this module's own, reset per package, so the prefix
    // can be inflated into a fixed buffer (the library's inflate_into
    // inflates everything, into a buffer it zero-fills as it grows).
    static PREFIX: std::cell::RefCell<(Decompress, [u8; PREFIX_BYTES])> =
        std::cell::RefCell::new((Decompress::new(true), [0; PREFIX_BYTES]));
}

/// What inflating the start of a frame body gave.
enum Prefix {
    /// The whole package: its zlib stream ended after this many bytes,
    /// exactly at the end of the frame.
    Whole(usize),
    /// Only the first [`PREFIX_BYTES`] of a longer package.
    Start,
}

/// Inflates at most `out.len()` bytes of `body`. `None` for anything
/// that is neither a whole package nor a full prefix (corrupt, truncated,
/// trailing bytes): the full inflate then says what is wrong.
fn inflate_prefix(body: &[u8], inflater: &mut Decompress, out: &mut [u8]) -> Option<Prefix> {
    inflater.reset(true);
    let status = inflater.decompress(body, out, FlushDecompress::None).ok()?;
    let produced = usize::try_from(inflater.total_out()).ok()?;
    let consumed = usize::try_from(inflater.total_in()).ok()?;
    match status {
        Status::StreamEnd if consumed == body.len() => Some(Prefix::Whole(produced)),
        Status::Ok if produced == out.len() => Some(Prefix::Start),
        _ => None,
    }
}

/// `text` without `prefix`, if it starts with it.
fn after<'t>(text: &'t [u8], prefix: &[u8]) -> Option<&'t [u8]> {
    text.strip_prefix(prefix)
}

/// Whether `s` appears in JSON text exactly as it is (no escaping needed).
fn json_plain(s: &str) -> bool {
    !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

impl SetupStep<'_> {
    /// Whether the start of a long package alone shows it completes this
    /// step. `false` means "cannot tell from the start", not "no".
    fn judge_start(&self, start: &[u8]) -> bool {
        match *self {
            SetupStep::Session => start.starts_with(br#"{"type":"session","data":{"status":true,"#),
            SetupStep::OwnJoin { name, channel } if json_plain(name) && json_plain(channel) => {
                (|| {
                    let rest = after(
                        start,
                        br#"{"type":"notification","data":{"event_type":"user_joined","username":""#,
                    )?;
                    let rest = after(after(rest, name.as_bytes())?, br#"","channel":""#)?;
                    let rest = after(after(rest, channel.as_bytes())?, b"\"")?;
                    // The server sends the list last, after the channel's
                    // description; a list right after the channel is read too.
                    after(skip_join_description(rest), br#","users":["#)
                })()
                .is_some()
            }
            _ => false,
        }
    }
}

/// `text` after the members an own `user_joined` carries between its
/// `channel` and its `users`, as the server writes them:
/// `,"users_total":N`, then `,"owner":"NAME"` if the channel has an owner,
/// then `,"private":BOOL`. Each one that is not there is simply not skipped.
fn skip_join_description(text: &[u8]) -> &[u8] {
    let mut rest = text;
    if let Some(r) = after(rest, br#","users_total":"#) {
        let digits = r.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 {
            rest = &r[digits..];
        }
    }
    if let Some(r) = after(rest, br#","owner":""#) {
        // Names never need escaping (letters, digits, `_-.`), so the next
        // quote ends this one.
        if let Some(end) = r.iter().position(|&b| b == b'"' || b == b'\\') {
            if r[end] == b'"' {
                rest = &r[end + 1..];
            }
        }
    }
    for private in [&br#","private":true"#[..], br#","private":false"#] {
        if let Some(r) = after(rest, private) {
            rest = r;
        }
    }
    rest
}

/// A bench connection during set-up: the raw socket split into frame
/// bodies by the library's [`FrameCodec`]; packages are inflated and
/// parsed only as far as [`classify`] needs.
struct SetupConn {
    /// The socket and the bytes read from it but not yet consumed.
    framed: FramedRead<TcpStream, FrameCodec>,
}

impl SetupConn {
    /// Connects to the first of `addrs` that answers.
    async fn connect(addrs: &[SocketAddr]) -> Result<SetupConn, ClientError> {
        let stream = TcpStream::connect(addrs).await?;
        // Each set-up step is one small write answered by the server:
        // Nagle would hold it back waiting for an ACK.
        stream.set_nodelay(true)?;
        Ok(SetupConn {
            framed: FramedRead::with_capacity(
                stream,
                FrameCodec::new(DEFAULT_MAX_FRAME_BYTES),
                SETUP_READ_CAPACITY,
            ),
        })
    }

    /// Writes a prebuilt frame.
    async fn write(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        Ok(self.framed.get_mut().write_all(frame).await?)
    }

    /// Reads until a package completes `step`, skipping other people's
    /// traffic, for at most `limit`.
    async fn wait(
        &mut self,
        step: SetupStep<'_>,
        name: &str,
        limit: Duration,
    ) -> Result<(), BenchError> {
        let setup = |source| BenchError::Setup {
            name: name.to_owned(),
            source,
        };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let body = match tokio::time::timeout_at(deadline, self.framed.next()).await {
                Err(_) => return Err(setup(ClientError::Timeout(limit))),
                Ok(None) => return Err(setup(ClientError::Closed)),
                Ok(Some(Err(e))) => return Err(setup(ClientError::Decode(e.into()))),
                Ok(Some(Ok(body))) => body,
            };
            match classify(&body, step).map_err(|e| setup(ClientError::Decode(e)))? {
                Verdict::Done => return Ok(()),
                Verdict::Skip => {}
                Verdict::Refused(reason) => {
                    return Err(BenchError::Refused {
                        name: name.to_owned(),
                        reason,
                    })
                }
                // Rare and fatal: worth a full decode to say what arrived.
                Verdict::Unexpected => {
                    return Err(setup(
                        match codec::decode_body::<ServerPackage>(&body, DEFAULT_MAX_PACKAGE_BYTES)
                        {
                            Ok(p) => ClientError::Unexpected(Box::new(p)),
                            Err(e) => ClientError::Decode(e),
                        },
                    ))
                }
            }
        }
    }

    /// The socket plus the bytes already read from it.
    fn into_parts(self) -> (TcpStream, BytesMut) {
        let parts = self.framed.into_parts();
        (parts.io, parts.read_buf)
    }
}

/// Resolves `addr` once, before any connection is timed.
async fn resolve(addr: &str) -> Result<Vec<SocketAddr>, BenchError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
    if addrs.is_empty() {
        return Err(BenchError::Options(format!(
            "{addr} resolves to no address"
        )));
    }
    Ok(addrs)
}

/// Connects, logs in as `name`, and joins `channel` (which `frames`
/// carry, prebuilt) unless it is `general`, where every login lands;
/// returns once the server has confirmed both.
async fn open(
    addrs: &[SocketAddr],
    name: &str,
    channel: &str,
    frames: &SetupFrames,
) -> Result<SetupConn, BenchError> {
    let limit = Duration::from_secs(SETUP_TIMEOUT_SECS);
    let setup = |source| BenchError::Setup {
        name: name.to_owned(),
        source,
    };
    let mut c = tokio::time::timeout(limit, SetupConn::connect(addrs))
        .await
        .map_err(|_| setup(ClientError::Timeout(limit)))?
        .map_err(setup)?;
    c.wait(SetupStep::LoginRequest, name, limit).await?;
    c.write(&frames.login).await.map_err(setup)?;
    c.wait(SetupStep::Session, name, limit).await?;
    c.wait(
        SetupStep::OwnJoin {
            name,
            channel: "general",
        },
        name,
        limit,
    )
    .await?;
    if channel != GENERAL {
        c.write(&frames.join).await.map_err(setup)?;
        c.wait(SetupStep::OwnJoin { name, channel }, name, limit)
            .await?;
    }
    Ok(c)
}

/// Pings and reads until the pong: afterwards nothing sent before it is in flight.
async fn settle(c: &mut SetupConn, name: &str, ping: &[u8]) -> Result<(), BenchError> {
    let limit = Duration::from_secs(SETUP_TIMEOUT_SECS);
    c.write(ping).await.map_err(|source| BenchError::Setup {
        name: name.to_owned(),
        source,
    })?;
    c.wait(SetupStep::Pong(SETTLE_TOKEN), name, limit).await
}

/// One connection to set up: its name, its channel and its prebuilt frames.
struct Member {
    /// The bench user's name.
    name: String,
    /// The channel it joins.
    channel: String,
    /// Its login and join, encoded.
    frames: SetupFrames,
    /// Which of the fanout's addresses it connects to.
    node: usize,
}

/// Names `n` connections of one kind, puts connection `i` into channel
/// `i % channels`, and encodes their commands: all before the clock starts.
fn plan(kind: &str, n: usize, channels: usize) -> Result<Vec<Member>, BenchError> {
    (0..n)
        .map(|i| {
            let name = bench_name(kind, i);
            let channel = channel_name(i % channels);
            let frames = SetupFrames::new(&name, &channel)?;
            Ok(Member {
                name,
                channel,
                frames,
                node: 0,
            })
        })
        .collect()
}

/// Names `n` connections that stay in `general` after logging in.
fn plan_general(kind: &str, n: usize) -> Result<Vec<Member>, BenchError> {
    (0..n)
        .map(|i| {
            let name = bench_name(kind, i);
            let login =
                encode_command("login", serde_json::json!({ "username": name })).map_err(|e| {
                    BenchError::Setup {
                        name: name.clone(),
                        source: ClientError::Encode(e),
                    }
                })?;
            Ok(Member {
                name,
                channel: GENERAL.to_owned(),
                // Never written: open() does not join general.
                frames: SetupFrames {
                    login,
                    join: Bytes::new(),
                },
                node: 0,
            })
        })
        .collect()
}

/// Runs `f(m)` for each member, at most `concurrency` at a time, in order.
async fn set_up<'m, F, Fut, T>(
    members: &'m [Member],
    concurrency: usize,
    f: F,
) -> Result<Vec<T>, BenchError>
where
    F: Fn(&'m Member) -> Fut,
    Fut: std::future::Future<Output = Result<T, BenchError>>,
{
    let results: Vec<Result<T, BenchError>> = stream::iter(members.iter().map(f))
        .buffered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Counters one member's reader keeps, shared with the senders and the
/// progress line.
#[derive(Debug, Default)]
struct MemberCounters {
    /// Frames received since the start of the measured phase.
    frames: AtomicU64,
}

/// Totals shared by all tasks of a run.
#[derive(Debug, Default)]
struct Totals {
    /// Messages sent.
    sent: AtomicU64,
    /// Bytes written.
    bytes_sent: AtomicU64,
    /// Bytes read.
    bytes_received: AtomicU64,
    /// Frames received by all members.
    frames: AtomicU64,
    /// Other packages that are not chat messages.
    unexpected: AtomicU64,
    /// `message_sent` acknowledgements received.
    acked: AtomicU64,
    /// Connections closed by the server.
    closed: AtomicU64,
}

/// What one reader task hands back.
struct ReaderResult {
    /// Latencies of the decoded frames.
    histogram: Histogram<u64>,
    /// Send-to-`message_sent` latencies (senders only).
    acks: Histogram<u64>,
}

/// A sender's messages not yet acknowledged: their send times, oldest
/// first. The server acknowledges one sender's messages in the order they
/// were sent, so each `message_sent` belongs to the front one. Bounded by
/// the sender's window.
type InFlight = Arc<std::sync::Mutex<std::collections::VecDeque<u64>>>;

fn in_flight_len(f: &InFlight) -> u64 {
    f.lock().map(|q| q.len() as u64).unwrap_or(0)
}

fn new_histogram() -> Histogram<u64> {
    // 1 us .. 60 s at 3 significant digits; these bounds are always valid.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

/// Everything a member's reader needs.
struct Reader {
    /// The socket's read side.
    read: OwnedReadHalf,
    /// Bytes already read during the handshake.
    buf: BytesMut,
    /// This member's counters.
    counters: Arc<MemberCounters>,
    /// Run totals.
    totals: Arc<Totals>,
    /// Decode one frame in this many (1 for senders: every frame).
    sample: u64,
    /// Where the sampling counter starts, so members sample different messages.
    offset: u64,
    /// The clock message send times are relative to.
    epoch: Instant,
    /// Ends the reader.
    stop: CancellationToken,
    /// A sender's unacknowledged messages; `None` for receivers.
    in_flight: Option<InFlight>,
}

impl Reader {
    async fn run(mut self) -> ReaderResult {
        let mut histogram = new_histogram();
        let mut acks = new_histogram();
        let mut frames = FrameCodec::new(DEFAULT_MAX_FRAME_BYTES);
        let mut seen = self.offset;
        loop {
            let mut count = 0u64;
            loop {
                match frames.decode(&mut self.buf) {
                    Ok(Some(body)) => {
                        seen += 1;
                        let delivery = seen % self.sample != 0
                            || self.inspect(&body, &mut histogram, &mut acks);
                        count += u64::from(delivery);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "bad frame from the server");
                        self.totals.closed.fetch_add(1, Ordering::Relaxed);
                        return ReaderResult { histogram, acks };
                    }
                }
            }
            if count > 0 {
                self.counters.frames.fetch_add(count, Ordering::Relaxed);
                self.totals.frames.fetch_add(count, Ordering::Relaxed);
            }
            self.buf.reserve(READ_CHUNK);
            let read = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return ReaderResult { histogram, acks },
                r = self.read.read_buf(&mut self.buf) => r,
            };
            match read {
                Ok(0) | Err(_) => {
                    if !self.stop.is_cancelled() {
                        self.totals.closed.fetch_add(1, Ordering::Relaxed);
                    }
                    return ReaderResult { histogram, acks };
                }
                Ok(n) => {
                    self.totals
                        .bytes_received
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }

    /// Decodes one frame: a message's latency is recorded, an
    /// acknowledgement's too, anything else counted. Returns whether the
    /// frame is a chat delivery.
    ///
    /// The frame is inflated (its checksum and end checked) and its JSON
    /// parsed whole, but leniently ([`LightPackage`]): only the members
    /// the counts need are kept, borrowed from the text. Anything that is
    /// neither a message nor an acknowledgement is decoded in full to say
    /// what it was.
    fn inspect(
        &self,
        body: &[u8],
        histogram: &mut Histogram<u64>,
        acks: &mut Histogram<u64>,
    ) -> bool {
        enum Seen {
            Ack,
            Message(Option<u64>),
            Other,
        }
        let seen = inspect_light(body, |p| {
            if p.kind == "message" {
                Seen::Message(p.data.message.as_deref().and_then(parse_send_time))
            } else if p.is_event("message_sent") {
                Seen::Ack
            } else {
                Seen::Other
            }
        });
        match seen {
            Ok(Seen::Ack) if self.in_flight.is_some() => {
                let sent = self
                    .in_flight
                    .as_ref()
                    .and_then(|f| f.lock().ok().and_then(|mut q| q.pop_front()));
                match sent {
                    Some(sent) => {
                        let now = self.epoch.elapsed().as_nanos() as u64;
                        let us = now.saturating_sub(sent) / 1000;
                        acks.saturating_record(us.clamp(1, MAX_LATENCY_US));
                        self.totals.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        self.totals.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                false
            }
            Ok(Seen::Message(Some(sent))) => {
                let now = self.epoch.elapsed().as_nanos() as u64;
                let us = now.saturating_sub(sent) / 1000;
                histogram.saturating_record(us.clamp(1, MAX_LATENCY_US));
                true
            }
            Ok(Seen::Message(None)) => {
                self.totals.unexpected.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(Seen::Ack | Seen::Other) => {
                if self.totals.unexpected.fetch_add(1, Ordering::Relaxed) < MAX_WARNINGS {
                    match codec::decode_body::<ServerPackage>(body, DEFAULT_MAX_PACKAGE_BYTES) {
                        Ok(package) => {
                            tracing::warn!(?package, "unexpected package during the run")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "undecodable package during the run")
                        }
                    }
                }
                false
            }
            Err(e) => {
                if self.totals.unexpected.fetch_add(1, Ordering::Relaxed) < MAX_WARNINGS {
                    tracing::warn!(error = %e, "undecodable package during the run");
                }
                false
            }
        }
    }
}

/// The text of a timestamped message: the send time in nanoseconds since
/// the bench's epoch, a space, then padding up to `size` bytes.
pub fn message_text(sent_nanos: u64, size: usize) -> String {
    let mut text = format!("{sent_nanos:020} ");
    while text.len() < size {
        text.push('x');
    }
    text
}

/// The send time carried by a message from [`message_text`].
pub fn parse_send_time(text: &str) -> Option<u64> {
    text.split(' ').next()?.parse().ok()
}

/// One sender.
struct Sender {
    /// The socket's write side.
    write: OwnedWriteHalf,
    /// Messages this sender is to send (`u64::MAX` when stopping by time).
    quota: u64,
    /// When to stop by time.
    deadline: Option<Instant>,
    /// Messages per second for this sender; 0 = closed loop.
    rate: f64,
    /// Closed-loop window; 0 = none.
    window: u64,
    /// Messages sent so far into this sender's channel, by all its senders.
    channel_sent: Arc<AtomicU64>,
    /// The receivers of this sender's channel.
    receivers: Vec<Arc<MemberCounters>>,
    /// Text size.
    size: usize,
    /// Run totals.
    totals: Arc<Totals>,
    /// The clock send times are relative to.
    epoch: Instant,
    /// This sender's unacknowledged messages, shared with its reader.
    in_flight: InFlight,
}

impl Sender {
    /// Sends until the quota or deadline; hands the write side back so the
    /// caller can keep the connection open until every delivery is counted
    /// (closing it would make the server announce a departure).
    async fn run(mut self) -> (OwnedWriteHalf, io::Result<()>) {
        let result = self.send_all().await;
        (self.write, result)
    }

    async fn send_all(&mut self) -> io::Result<()> {
        let start = Instant::now();
        let mut sent = 0u64;
        let mut buf = BytesMut::new();
        while sent < self.quota {
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                break;
            }
            let mut due = if self.rate > 0.0 {
                let target = (now.duration_since(start).as_secs_f64() * self.rate) as u64 + 1;
                if target <= sent {
                    let next = start + Duration::from_secs_f64((sent as f64) / self.rate);
                    tokio::time::sleep_until(next.into()).await;
                    continue;
                }
                target - sent
            } else {
                SEND_BATCH
            };
            if self.window > 0 {
                // Acknowledgements count as a receiver: a sender is never
                // more than a window ahead of its commits either.
                let unacked = in_flight_len(&self.in_flight);
                let slowest = self
                    .receivers
                    .iter()
                    .map(|r| r.frames.load(Ordering::Relaxed))
                    .min();
                let behind = slowest.map_or(0, |slowest| {
                    self.channel_sent
                        .load(Ordering::Relaxed)
                        .saturating_sub(slowest)
                });
                let ahead = behind.max(unacked);
                if ahead >= self.window {
                    tokio::time::sleep(WINDOW_WAIT).await;
                    continue;
                }
                due = due.min(self.window - ahead);
            }
            due = due.min(self.quota - sent).min(SEND_BATCH * 4);
            buf.clear();
            let mut times = Vec::with_capacity(due as usize);
            for _ in 0..due {
                let nanos = self.epoch.elapsed().as_nanos() as u64;
                times.push(nanos);
                let package =
                    ClientPackage::Message(OutgoingMessage::text(message_text(nanos, self.size)));
                // Stored, not deflated (protocol.md allows either): a
                // deflate per message was a fifth of the bench's CPU,
                // taken from the server it measures.
                let frame = codec::encode_packed(
                    &package,
                    DEFAULT_MAX_PACKAGE_BYTES,
                    crate::server::config::DEFAULT_COMPRESSION_LEVEL,
                    usize::MAX,
                )
                .map_err(|e| io::Error::other(e.to_string()))?;
                buf.extend_from_slice(&frame);
            }
            if let Ok(mut q) = self.in_flight.lock() {
                q.extend(times);
            }
            self.channel_sent.fetch_add(due, Ordering::Relaxed);
            self.totals.sent.fetch_add(due, Ordering::Relaxed);
            self.write.write_all(&buf).await?;
            self.totals
                .bytes_sent
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            sent += due;
        }
        Ok(())
    }
}

/// The fanout scenario.
async fn fanout(o: &Options) -> Result<Report, BenchError> {
    if o.senders == 0 {
        return Err(BenchError::Options(
            "fanout needs at least one sender".into(),
        ));
    }
    let channels = o.channels.max(1);
    let mut nodes = vec![resolve(&o.addr).await?];
    for addr in &o.also {
        nodes.push(resolve(addr).await?);
    }
    let prepare = ThreadCpu::start();
    // Receivers first, then senders; member i of either kind goes to channel i % channels.
    let mut receivers = plan("r", o.clients, channels)?;
    let mut senders = plan("s", o.senders, channels)?;
    for members in [&mut receivers, &mut senders] {
        for (i, m) in members.iter_mut().enumerate() {
            m.node = i % nodes.len();
        }
    }
    let ping =
        encode_command("ping", serde_json::json!({ "token": SETTLE_TOKEN })).map_err(|source| {
            BenchError::Setup {
                name: "ping".into(),
                source: ClientError::Encode(source),
            }
        })?;
    let prepare_cpu_secs = prepare.secs();
    let before = server_stats(o.server_pid);
    let setup_start = Instant::now();
    let receiving = set_up(&receivers, o.concurrency, |m| {
        open(&nodes[m.node], &m.name, &m.channel, &m.frames)
    })
    .await?;
    let sending = set_up(&senders, o.concurrency, |m| {
        open(&nodes[m.node], &m.name, &m.channel, &m.frames)
    })
    .await?;
    // Everybody is in place; drain the join notifications so that what
    // arrives from now on is chat traffic only.
    let mut all: Vec<(bool, &str, SetupConn)> = receivers
        .iter()
        .zip(receiving)
        .map(|(m, c)| (false, m.name.as_str(), c))
        .chain(
            senders
                .iter()
                .zip(sending)
                .map(|(m, c)| (true, m.name.as_str(), c)),
        )
        .collect();
    let settled: Vec<Result<(), BenchError>> = stream::iter(all.iter_mut())
        .map(|(_, name, c)| settle(c, name, &ping))
        .buffer_unordered(o.concurrency)
        .collect()
        .await;
    settled.into_iter().collect::<Result<Vec<()>, _>>()?;
    let setup_secs = setup_start.elapsed().as_secs_f64();

    let totals = Arc::new(Totals::default());
    let stop = CancellationToken::new();
    let epoch = Instant::now();
    let mut members = vec![0usize; channels];
    let mut channel_receivers: Vec<Vec<Arc<MemberCounters>>> = vec![Vec::new(); channels];
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    let mut flights = Vec::new();
    let (mut r_index, mut s_index) = (0usize, 0usize);
    for (i, (is_sender, _name, c)) in all.into_iter().enumerate() {
        let channel = if is_sender {
            s_index += 1;
            (s_index - 1) % channels
        } else {
            r_index += 1;
            (r_index - 1) % channels
        };
        members[channel] += 1;
        let counters = Arc::new(MemberCounters::default());
        if !is_sender {
            channel_receivers[channel].push(counters.clone());
        }
        let (stream, buf) = c.into_parts();
        let (read, write) = stream.into_split();
        let in_flight = is_sender.then(InFlight::default);
        let reader = Reader {
            in_flight: in_flight.clone(),
            read,
            buf,
            counters,
            totals: totals.clone(),
            sample: if is_sender { 1 } else { o.sample },
            offset: i as u64,
            epoch,
            stop: stop.clone(),
        };
        readers.push(tokio::spawn(reader.run()));
        if let Some(f) = in_flight {
            flights.push(f);
            writers.push((channel, write));
        } else {
            // Keep the write side open: dropping it would shut the socket down.
            writers.push((usize::MAX, write));
        }
    }
    let channel_sent: Vec<Arc<AtomicU64>> =
        (0..channels).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let (quota_total, deadline) = match o.stop {
        Stop::Messages(n) => (n, None),
        Stop::Duration(d) => (u64::MAX, Some(Instant::now() + d)),
    };
    let per_sender_rate = o.rate / o.senders as f64;
    let mut idle_writes = Vec::new();
    let mut sender_tasks = Vec::new();
    let mut k = 0u64;
    let run_start = Instant::now();
    let mut flights = flights.into_iter();
    for (channel, write) in writers {
        if channel == usize::MAX {
            idle_writes.push(write);
            continue;
        }
        let Some(in_flight) = flights.next() else {
            break;
        };
        let quota = if quota_total == u64::MAX {
            u64::MAX
        } else {
            quota_total / o.senders as u64 + u64::from(k < quota_total % o.senders as u64)
        };
        k += 1;
        let sender = Sender {
            write,
            quota,
            deadline,
            rate: per_sender_rate,
            window: if o.rate > 0.0 { 0 } else { o.window },
            channel_sent: channel_sent[channel].clone(),
            receivers: channel_receivers[channel].clone(),
            size: o.size,
            totals: totals.clone(),
            epoch,
            in_flight,
        };
        sender_tasks.push(tokio::spawn(sender.run()));
    }

    // Wait for the senders, printing progress.
    let progress = o
        .progress
        .then(|| spawn_progress(totals.clone(), stop.clone(), false));
    let mut send_error = None;
    for t in sender_tasks {
        match t.await {
            Ok((write, result)) => {
                idle_writes.push(write);
                if let Err(e) = result {
                    send_error = Some(e);
                }
            }
            Err(e) => send_error = Some(io::Error::other(e.to_string())),
        }
    }
    let expected = || -> u64 {
        channel_sent
            .iter()
            .zip(&members)
            .map(|(sent, m)| sent.load(Ordering::Relaxed) * (*m as u64).saturating_sub(1))
            .sum()
    };
    // Wait for what is in flight, until everything arrived or nothing more does.
    let drain_deadline = Instant::now() + Duration::from_secs(DRAIN_TIMEOUT_SECS);
    let stall = Duration::from_millis(DRAIN_STALL_MS);
    let progress_count =
        || totals.frames.load(Ordering::Relaxed) + totals.acked.load(Ordering::Relaxed);
    let mut last_count = progress_count();
    let mut last_change = Instant::now();
    loop {
        let got = progress_count();
        if got != last_count {
            last_count = got;
            last_change = Instant::now();
        }
        let now = Instant::now();
        let done = totals.frames.load(Ordering::Relaxed) >= expected()
            && totals.acked.load(Ordering::Relaxed) >= totals.sent.load(Ordering::Relaxed);
        if done || now >= drain_deadline || now.duration_since(last_change) >= stall {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let run_secs = last_change
        .duration_since(run_start)
        .as_secs_f64()
        .max(1e-9);
    let after = server_stats(o.server_pid);
    stop.cancel();
    if let Some(p) = progress {
        let _ = p.await;
    }
    let mut histogram = new_histogram();
    let mut acks = new_histogram();
    for r in readers {
        if let Ok(result) = r.await {
            let _ = histogram.add(&result.histogram);
            let _ = acks.add(&result.acks);
        }
    }
    drop(idle_writes);
    if let Some(e) = send_error {
        return Err(BenchError::Io(e));
    }
    let sent = totals.sent.load(Ordering::Relaxed);
    let expected = expected();
    let received = totals.frames.load(Ordering::Relaxed);
    Ok(Report {
        scenario: "fanout".into(),
        addr: o.addr.clone(),
        connections: o.clients + o.senders,
        channels,
        max_channel_members: members.iter().copied().max().unwrap_or(0),
        rate: o.rate,
        window: if o.rate > 0.0 { 0 } else { o.window },
        size: o.size,
        setup_secs,
        run_secs,
        messages_sent: sent,
        deliveries_expected: expected,
        deliveries_received: received,
        deliveries_lost: expected as i64 - received as i64,
        connections_lost: totals.closed.load(Ordering::Relaxed),
        messages_per_sec: sent as f64 / run_secs,
        deliveries_per_sec: received as f64 / run_secs,
        latency: Latency::from_histogram(&histogram),
        messages_acknowledged: totals.acked.load(Ordering::Relaxed),
        committed_per_sec: totals.acked.load(Ordering::Relaxed) as f64 / run_secs,
        ack_latency: Latency::from_histogram(&acks),
        sample: o.sample,
        logins_per_sec: None,
        bytes_sent: totals.bytes_sent.load(Ordering::Relaxed),
        bytes_received: totals.bytes_received.load(Ordering::Relaxed),
        senders: o.senders,
        unexpected_packages: totals.unexpected.load(Ordering::Relaxed),
        server: usage(before, after, None),
        prepare_cpu_secs,
        ..Report::default()
    })
}

/// Prints a progress line to stderr every second until `stop`.
fn spawn_progress(
    totals: Arc<Totals>,
    stop: CancellationToken,
    logins: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = (0u64, 0u64);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let sent = totals.sent.load(Ordering::Relaxed);
            let got = totals.frames.load(Ordering::Relaxed);
            if logins {
                eprintln!(
                    "[{:5.1} s] logged in {sent} ({}/s)",
                    start.elapsed().as_secs_f64(),
                    sent - last.0
                );
                last = (sent, got);
                continue;
            }
            eprintln!(
                "[{:5.1} s] sent {sent} ({}/s)  delivered {got} ({}/s)",
                start.elapsed().as_secs_f64(),
                sent - last.0,
                got - last.1
            );
            last = (sent, got);
        }
    })
}

fn server_stats(pid: Option<u32>) -> Option<ProcStats> {
    let pid = pid?;
    match ProcStats::read(pid) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(pid, error = %e, "cannot read the server's /proc figures");
            None
        }
    }
}

fn usage(
    before: Option<ProcStats>,
    after: Option<ProcStats>,
    connections: Option<usize>,
) -> Option<ServerUsage> {
    let (before, after) = (before?, after?);
    Some(ServerUsage {
        before,
        after,
        cpu_secs_used: after.cpu_secs - before.cpu_secs,
        rss_bytes_per_connection: connections
            .filter(|&n| n > 0)
            .map(|n| (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / n as f64),
    })
}

/// The login and idle scenarios: log `clients` connections in, each into
/// channel `i % channels`, `concurrency` at a time; idle then holds them.
async fn storm(o: &Options) -> Result<Report, BenchError> {
    let channels = o.channels.max(1);
    let addrs = resolve(&o.addr).await?;
    let prepare = ThreadCpu::start();
    let members = if o.stay_in_general {
        plan_general("l", o.clients)?
    } else {
        plan("l", o.clients, channels)?
    };
    let prepare_cpu_secs = prepare.secs();
    let before = server_stats(o.server_pid);
    let totals = Arc::new(Totals::default());
    let stop = CancellationToken::new();
    let start = Instant::now();
    let progress_stop = CancellationToken::new();
    let progress = o
        .progress
        .then(|| spawn_progress(totals.clone(), progress_stop.clone(), true));
    let logins = set_up(&members, o.concurrency, |m| {
        let totals = totals.clone();
        let stop = stop.clone();
        let addrs = &addrs;
        async move {
            let t = Instant::now();
            let c = open(addrs, &m.name, &m.channel, &m.frames).await?;
            let took = t.elapsed();
            // Counted as "sent" so the progress line can show logins.
            totals.sent.fetch_add(1, Ordering::Relaxed);
            // Later joiners keep notifying this member; read and discard so
            // the server never sees a slow consumer. The task owns the
            // whole socket, which stays open until it ends.
            let (stream, _) = c.into_parts();
            let task = tokio::spawn(discard(stream, totals, stop));
            Ok((took, task))
        }
    })
    .await?;
    let setup_secs = start.elapsed().as_secs_f64().max(1e-9);
    progress_stop.cancel();
    if let Some(p) = progress {
        let _ = p.await;
    }
    let mut histogram = new_histogram();
    for (took, _) in &logins {
        histogram.saturating_record((took.as_micros() as u64).clamp(1, MAX_LATENCY_US));
    }
    let mut run_secs = 0.0;
    if o.scenario == Scenario::Idle {
        let hold = match o.stop {
            Stop::Duration(d) => d,
            Stop::Messages(_) => Duration::from_secs_f64(DEFAULT_DURATION_SECS),
        };
        if o.progress {
            eprintln!(
                "holding {} connections for {:.1} s",
                o.clients,
                hold.as_secs_f64()
            );
        }
        tokio::time::sleep(hold).await;
        run_secs = hold.as_secs_f64();
    }
    let after = server_stats(o.server_pid);
    stop.cancel();
    for (_, task) in logins {
        let _ = task.await;
    }
    Ok(Report {
        scenario: match o.scenario {
            Scenario::Idle => "idle".into(),
            _ => "login".into(),
        },
        addr: o.addr.clone(),
        connections: o.clients,
        channels: if o.stay_in_general { 1 } else { channels },
        rate: 0.0,
        size: 0,
        setup_secs,
        run_secs,
        logins_per_sec: Some(o.clients as f64 / setup_secs),
        latency: Latency::from_histogram(&histogram),
        sample: 1,
        bytes_received: totals.bytes_received.load(Ordering::Relaxed),
        connections_lost: totals.closed.load(Ordering::Relaxed),
        server: usage(
            before,
            after,
            (o.scenario == Scenario::Idle).then_some(o.clients),
        ),
        prepare_cpu_secs,
        ..Report::default()
    })
}

/// Reads and throws away whatever arrives until `stop`, then closes the
/// socket (a plain close: no separate shutdown call per connection).
async fn discard(mut read: TcpStream, totals: Arc<Totals>, stop: CancellationToken) {
    let mut buf = [0u8; DISCARD_CHUNK];
    loop {
        let n = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = read.read(&mut buf) => r,
        };
        match n {
            Ok(0) | Err(_) => {
                if !stop.is_cancelled() {
                    totals.closed.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Ok(n) => {
                totals.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn message_text_carries_its_send_time_and_size() {
        let t = message_text(123_456_789, 64);
        assert_eq!(t.len(), 64);
        assert_eq!(parse_send_time(&t), Some(123_456_789));
        assert_eq!(parse_send_time("hello"), None);
    }

    #[test]
    fn flags_map_to_options() {
        let a = BenchArgs::parse_from([
            "chatmaster-bench",
            "login",
            "--clients",
            "7",
            "--messages",
            "9",
        ]);
        let o = a.options();
        assert_eq!(o.scenario, Scenario::Login);
        assert_eq!(o.clients, 7);
        assert_eq!(o.stop, Stop::Messages(9));
        assert_eq!(o.addr, "127.0.0.1:9000");
        let a = BenchArgs::parse_from(["chatmaster-bench", "--scenario", "idle"]);
        assert_eq!(a.options().scenario, Scenario::Idle);
        assert!(BenchArgs::try_parse_from([
            "chatmaster-bench",
            "--duration",
            "1",
            "--messages",
            "2"
        ])
        .is_err());
    }

    /// A frame body carrying `json`, compressed as the server does.
    fn body_of(json: &str) -> Vec<u8> {
        compress::deflate(json.as_bytes(), DEFAULT_COMPRESSION_LEVEL)
    }

    const JOIN_ME: SetupStep<'static> = SetupStep::OwnJoin {
        name: "me",
        channel: "c",
    };

    #[test]
    fn bad_bodies_are_decode_errors_as_in_the_full_decode() {
        let good = body_of(r#"{"type":"request","data":{"request":"login"}}"#);
        let mut trailing = good.clone();
        trailing.push(0);
        let long = body_of(&format!(
            r#"{{"type":"session","data":{{"status":true,"channels":["{}"]}}}}"#,
            "x".repeat(4 * PREFIX_BYTES)
        ));
        let cut_long = long[..long.len() - 1].to_vec();
        for bad in [
            b"not zlib".to_vec(),
            trailing,
            good[..good.len() - 1].to_vec(),
            cut_long.clone(),
            body_of("{nope"),
            body_of(r#"{"data":{}}"#),
        ] {
            assert!(
                codec::decode_body::<ServerPackage>(&bad, DEFAULT_MAX_PACKAGE_BYTES).is_err(),
                "{bad:?}"
            );
            for step in [SetupStep::LoginRequest, SetupStep::Session, JOIN_ME] {
                if step == SetupStep::Session && bad == cut_long {
                    continue;
                }
                assert!(classify(&bad, step).is_err(), "{step:?} {bad:?}");
            }
        }
        // The price of the fast path, by design: a long session recognised
        // from its start is not inflated to its end, so damage past the
        // prefix goes unseen.
        assert_eq!(
            classify(&cut_long, SetupStep::Session).unwrap(),
            Verdict::Done
        );
    }

    #[test]
    fn long_packages_the_prefix_does_not_settle_fall_back() {
        let pad = "p".repeat(2 * PREFIX_BYTES);
        // A long refusal: the prefix rule only knows acceptance.
        let refused = body_of(&format!(
            r#"{{"type":"session","data":{{"status":false,"reason":"{pad}"}}}}"#
        ));
        assert_eq!(
            classify(&refused, SetupStep::Session).unwrap(),
            Verdict::Refused(pad.clone())
        );
        // `users: null` is no member list.
        let null_users = body_of(&format!(
            r#"{{"type":"notification","data":{{"event_type":"user_joined","username":"me","channel":"c","users":null,"owner":"{pad}"}}}}"#
        ));
        assert_eq!(classify(&null_users, JOIN_ME).unwrap(), Verdict::Skip);
        // Somebody else's long own join, and ours in another channel.
        for (name, channel) in [("mex", "c"), ("me", "cx"), ("m", "e")] {
            let other = body_of(&format!(
                r#"{{"type":"notification","data":{{"event_type":"user_joined","username":"{name}","channel":"{channel}","users":["{pad}"]}}}}"#
            ));
            assert_eq!(
                classify(&other, JOIN_ME).unwrap(),
                Verdict::Skip,
                "{name} {channel}"
            );
        }
        // A name that JSON escapes is never matched on raw text, but the
        // fallback still finds it.
        let quoted = codec::encode(
            &ServerPackage::notification(crate::wire::protocol::Notification::UserJoined {
                topic: None,
                username: "a\"b".into(),
                channel: "c".into(),
                users: Some(vec![pad.clone()]),
                users_total: Some(1),
                owner: None,
                private: Some(false),
            }),
            DEFAULT_MAX_PACKAGE_BYTES,
            DEFAULT_COMPRESSION_LEVEL,
        )
        .unwrap();
        let step = SetupStep::OwnJoin {
            name: "a\"b",
            channel: "c",
        };
        assert!(!json_plain("a\"b"));
        assert_eq!(
            classify(&quoted[crate::wire::frame::HEADER_LEN..], step).unwrap(),
            Verdict::Done
        );
    }

    #[test]
    fn the_servers_own_join_is_recognised_from_its_start() {
        // Laid out as the hub sends it: the description first, the cached
        // member list spliced in last.
        let names: Vec<String> = (0..1000).map(|i| format!("user{i}")).collect();
        let tail = codec::list_tail("users", &names, DEFAULT_COMPRESSION_LEVEL).unwrap();
        for owner in [None, Some("someone".to_owned())] {
            let head =
                ServerPackage::notification(crate::wire::protocol::Notification::UserJoined {
                    topic: None,
                    username: "me".into(),
                    channel: "c".into(),
                    users: None,
                    users_total: Some(12_345),
                    owner: owner.clone(),
                    private: Some(owner.is_some()),
                });
            let frame = codec::encode_with_tail(&head, &tail, DEFAULT_MAX_PACKAGE_BYTES).unwrap();
            let text =
                compress::inflate(&frame[crate::wire::frame::HEADER_LEN..], 1 << 20).unwrap();
            assert!(text.len() > PREFIX_BYTES);
            assert!(JOIN_ME.judge_start(&text[..PREFIX_BYTES]), "{owner:?}");
            let elsewhere = SetupStep::OwnJoin {
                name: "me",
                channel: "d",
            };
            assert!(!elsewhere.judge_start(&text[..PREFIX_BYTES]));
        }
    }

    #[test]
    fn packages_around_the_prefix_size_classify_alike() {
        // Whole packages just under, at and over the inflated prefix.
        let frame = |n: usize| {
            let head = r#"{"type":"notification","data":{"event_type":"user_joined","username":"me","channel":"c","users":["#;
            let tail = r#""]}}"#;
            let fill = n.saturating_sub(head.len() + tail.len() + 1);
            format!("{head}\"{}{tail}", "u".repeat(fill))
        };
        for n in [PREFIX_BYTES - 1, PREFIX_BYTES, PREFIX_BYTES + 1] {
            let json = frame(n);
            assert_eq!(json.len(), n);
            assert_eq!(
                classify(&body_of(&json), JOIN_ME).unwrap(),
                Verdict::Done,
                "{n}"
            );
            let step = SetupStep::OwnJoin {
                name: "me",
                channel: "d",
            };
            assert_eq!(
                classify(&body_of(&json), step).unwrap(),
                Verdict::Skip,
                "{n}"
            );
        }
    }

    #[test]
    fn setup_frames_are_the_client_commands() {
        let frames = SetupFrames::new("alice", "rust").unwrap();
        let decode = |frame: &Bytes| {
            codec::decode_body::<ClientPackage>(
                &frame[crate::wire::frame::HEADER_LEN..],
                DEFAULT_MAX_PACKAGE_BYTES,
            )
            .unwrap()
        };
        assert_eq!(
            decode(&frames.login),
            ClientPackage::Command(Command::new(
                "login",
                Some(serde_json::json!({"username": "alice"}))
            ))
        );
        assert_eq!(
            decode(&frames.join),
            ClientPackage::Command(Command::new(
                "join",
                Some(serde_json::json!({"channel": "rust"}))
            ))
        );
    }

    #[test]
    fn threads_flag_defaults_to_one() {
        let a = BenchArgs::parse_from(["chatmaster-bench", "login"]);
        assert_eq!(a.threads, DEFAULT_THREADS);
        let a = BenchArgs::parse_from(["chatmaster-bench", "login", "--threads", "2"]);
        assert_eq!(a.threads, 2);
        assert!(BenchArgs::try_parse_from(["chatmaster-bench", "--threads", "0"]).is_err());
    }

    #[test]
    fn proc_stats_of_this_process() {
        let s = ProcStats::read(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.cpu_secs >= 0.0);
    }
}

//! Every limit and timeout the server enforces, as named defaults and one
//! [`Config`] value, plus the command-line flags that set them.
//!
//! Limits live here, in one place, so `--help`, `protocol.md` and the code
//! cannot drift apart: each default is a `pub const` that the docs cite.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;

use crate::ops::logging::LogFormat;
use crate::store::{Durability, StoreOptions, MEMORY};

/// Largest frame body (compressed bytes after the 4-byte length) accepted.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest inflated JSON package accepted or sent.
pub const DEFAULT_MAX_PACKAGE_BYTES: usize = 256 * 1024;
/// Largest chat message text, in UTF-8 bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4096;
/// Longest user or channel name, in Unicode scalar values.
pub const DEFAULT_MAX_NAME_CHARS: usize = 32;
/// Most names carried in one `users` or `channels` list; the total rides alongside.
pub const DEFAULT_MAX_LIST_NAMES: usize = 1000;
/// Seconds a new connection has to log in.
pub const DEFAULT_LOGIN_TIMEOUT_SECS: u64 = 30;
/// Seconds a frame may take to arrive once its first byte has.
pub const DEFAULT_FRAME_TIMEOUT_SECS: u64 = 10;
/// Seconds one batched write to a client may stall before it is dropped.
pub const DEFAULT_WRITE_TIMEOUT_SECS: u64 = 10;
/// Milliseconds each client gets to receive its goodbye at shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 2000;
/// Packages that may wait for a client before it counts as a slow consumer.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;
/// Bytes that may wait for a client before it counts as a slow consumer:
/// without it, 1,024 packages of up to 256 KiB would let one client that
/// does not read hold 256 MiB.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 1024 * 1024;
/// Simultaneous connections; the next one gets an error and is closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Packages per second the server handles from one client on average (0
/// turns flood control off). A client sending faster is not refused: the
/// server stops reading its socket until the next token is due.
pub const DEFAULT_RATE_PER_SEC: u32 = 20;
/// Packages a client may send in one burst, handled at once, before the
/// rate applies.
pub const DEFAULT_RATE_BURST: u32 = 40;
/// zlib level for outgoing packages: 1 is fastest; chat text is short, so
/// stronger levels buy little and cost CPU on every broadcast.
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 1;
/// Outgoing packages whose JSON is shorter than this many bytes are sent as
/// stored (uncompressed) zlib blocks: deflate saves about a tenth of a
/// 100-byte notification, while each compression clears a 128 KiB table.
pub const DEFAULT_COMPRESS_MIN_BYTES: usize = 128;
/// A chat message going to fewer recipients than this is sent as stored
/// zlib blocks whatever its length: deflating one costs a fixed 3-5 us
/// (most of it clearing a 128 KiB table) and saves a few dozen bytes per
/// recipient, which pays for a crowd but not for a two-member channel or
/// a direct message. In a cluster a channel message is always deflated:
/// other nodes' members get the same bytes.
pub const DEFAULT_COMPRESS_MIN_RECIPIENTS: usize = 8;

/// Members a channel may have before arrivals, departures and renames in it
/// are no longer announced to each member (`channel_stats` instead): in a
/// crowded room presence costs the square of its size and tells nobody much.
pub const DEFAULT_PRESENCE_LIMIT: usize = 1000;
/// Milliseconds between two `channel_stats` of a channel above the presence limit.
pub const DEFAULT_PRESENCE_INTERVAL_MS: u64 = 2000;

/// Most recipients one `group` may name: each is a name lookup and
/// possibly an invitation, under the chat state's lock.
pub const DEFAULT_MAX_GROUP_RECIPIENTS: usize = 50;
/// Most bans one channel may hold; every join into a channel with bans
/// compares the joiner against them.
pub const DEFAULT_MAX_BANS: usize = 500;
/// Longest channel topic, in characters.
pub const DEFAULT_MAX_TOPIC_CHARS: usize = 300;
/// Longest reason a `kick` may give, in characters.
pub const DEFAULT_MAX_REASON_CHARS: usize = 300;

/// Seconds a cluster node may go unheard before the others declare it
/// gone and its users leave (`--cluster-lease-secs`); heartbeats go out
/// every quarter of it.
pub const DEFAULT_CLUSTER_LEASE_SECS: u64 = 10;
/// Milliseconds between two heartbeats of a cluster node (and claim
/// renewals); keep it well under the lease, a quarter by default. A node
/// starting listens a heartbeat and a half for live peers.
pub const DEFAULT_CLUSTER_HEARTBEAT_MS: u64 = 2500;
/// Milliseconds a joining cluster node waits for a peer's snapshot of the
/// chat state, per try.
pub const DEFAULT_CLUSTER_SNAPSHOT_TIMEOUT_MS: u64 = 5000;
/// Milliseconds a cluster node waits for its own follower to apply what it
/// appended to the log (`--cluster-apply-timeout-ms`): a command then fails
/// as unavailable, and a package of another node waiting for the log goes
/// out as things are.
pub const DEFAULT_CLUSTER_APPLY_TIMEOUT_MS: u64 = 10_000;
/// Milliseconds one operation on NATS (connecting, an append, a claim...)
/// may take before it fails as unavailable (`--cluster-timeout-ms`).
pub const DEFAULT_CLUSTER_TIMEOUT_MS: u64 = 5000;
/// Most events the cluster's log (a JetStream stream) keeps; the oldest
/// go first (`--cluster-log-max-msgs`).
pub const DEFAULT_CLUSTER_LOG_MAX_MSGS: u64 = 10_000_000;
/// Most bytes the cluster's log keeps (`--cluster-log-max-bytes`).
pub const DEFAULT_CLUSTER_LOG_MAX_BYTES: u64 = 1 << 30;
/// Copies of the log and the claims a NATS cluster keeps
/// (`--cluster-replicas`; 1 for a single NATS server, 3 for three).
pub const DEFAULT_CLUSTER_REPLICAS: usize = 1;

/// Worker threads of the server's runtime; 0 means one per CPU core.
pub const DEFAULT_THREADS: usize = 0;

/// Password hashes computed at once (each takes 19 MiB); 0 means two per core.
pub const DEFAULT_HASH_CONCURRENCY: usize = 0;
/// Wrong passwords for one account within the window before further
/// attempts on it are refused, from any connection or address.
pub const DEFAULT_LOGIN_FAILURES_PER_ACCOUNT: usize = 5;
/// Wrong passwords from one client address within the window before its
/// further attempts are refused.
pub const DEFAULT_LOGIN_FAILURES_PER_ADDRESS: usize = 20;
/// Seconds a wrong password counts against its account and address.
pub const DEFAULT_LOGIN_THROTTLE_WINDOW_SECS: u64 = 15 * 60;
/// Accounts (and, separately, addresses) whose failures are remembered at
/// once; past it the entry idle longest is forgotten.
pub const DEFAULT_LOGIN_THROTTLE_ENTRIES: usize = 65_536;

/// Account and registered-channel store calls (logins, `register`, ...)
/// running at once on the blocking pool; the rest wait their turn.
pub const DEFAULT_ACCOUNT_STORE_CALLS: usize = 8;
/// Milliseconds between two checks of the database for accounts added,
/// deleted or renamed by another process (the admin commands): an account
/// added there is enforced within this time.
pub const DEFAULT_ACCOUNTS_POLL_MS: u64 = 1000;

/// Chat sessions one client address may hold at once, over every
/// transport together (0: no cap beyond `--max-connections`). Off by
/// default because clients behind one address (a NAT, a proxy, the
/// loopback load tests) are common; set it on a public server.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 0;
/// The HTTP port (web client, WebSocket, health, metrics).
pub const DEFAULT_HTTP_PORT: u16 = 9080;
/// HTTP connections open at once that are not (yet) WebSocket sessions;
/// past it new ones are closed at once. A WebSocket session counts
/// against `--max-connections` instead, from its upgrade on.
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 1024;
/// Seconds an HTTP connection has to complete its TLS handshake and each
/// request's headers (slow-sender defence).
pub const DEFAULT_HTTP_HEADER_TIMEOUT_SECS: u64 = 10;

/// Most names one user may ignore (`ignore`).
pub const DEFAULT_MAX_IGNORES: usize = 500;
/// Most direct messages kept for one offline account; more are refused
/// until it logs in.
pub const DEFAULT_MAX_BACKLOG: usize = 10_000;
/// Longest away text (`away`), in UTF-8 bytes.
pub const DEFAULT_MAX_AWAY_BYTES: usize = 300;
/// Most kept direct messages read from the store and queued for a user at
/// once when their backlog is delivered after a login; the next page is read
/// once these are written to the socket.
pub const DEFAULT_BACKLOG_PAGE: usize = 64;

/// Whether users may register their names (`register`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Registration {
    /// Anyone logged in may register their name.
    #[default]
    Open,
    /// `register` is refused; accounts are made with `chatmaster-server accounts add`.
    Closed,
}
/// The database file `chatmaster-server` uses, in its working directory.
/// (`Config::default()` keeps the store in memory instead, so tests and
/// embedders leave no files behind.)
pub const DEFAULT_DB: &str = "chatmaster.db";
/// Milliseconds a database operation waits for another process (the admin
/// CLI) holding the file's lock before it fails.
pub const DEFAULT_DB_BUSY_TIMEOUT_MS: u64 = 5000;
/// Accepted messages (and pings) waiting for the store's writer; when it is
/// full, connections that send more are not read until there is room.
pub const DEFAULT_STORE_QUEUE: usize = 8192;
/// Most messages the writer commits in one transaction.
pub const DEFAULT_STORE_BATCH: usize = 1024;
/// Microseconds a busy writer lets pass between the starts of two commits,
/// gathering messages meanwhile (an idle one commits at once).
pub const DEFAULT_STORE_GROUP_US: u64 = 1000;

/// Days a message is kept; older ones are deleted in the background. 0
/// keeps every message for good.
pub const DEFAULT_HISTORY_DAYS: u32 = 0;
/// History and search reads running at once on the blocking pool (across
/// all connections; each connection has at most one, as it handles its
/// packages in order); the rest wait their turn.
pub const DEFAULT_READ_CALLS: usize = 4;
/// Read-only connections of a database file, shared by every read.
pub const DEFAULT_DB_READERS: usize = 2;
/// Most matches a search counts for its `total`, and most unread messages
/// counted per channel: counting is the part of a read that grows with the
/// data. A search's pages reach this far too.
pub const DEFAULT_COUNT_CAP: usize = 10_000;

/// Milliseconds that pass between the starts of two additions of new
/// messages to the search index while messages keep coming (a search
/// always brings the index up to date first): one large batch per
/// interval, which FTS5 takes far more cheaply than many small ones. A
/// database file's index is added to by a thread of its own, beside the
/// commits; an in-memory one by the store's writer, between commits.
pub const DEFAULT_SEARCH_INDEX_MS: u64 = crate::store::DEFAULT_INDEX_GAP_MS;
/// Most messages one addition to the search index takes (one transaction
/// of the index, about 2 µs a message): a server that starts on many
/// messages not indexed yet adds them this many at a time.
pub const DEFAULT_SEARCH_INDEX_BATCH: usize = crate::store::DEFAULT_INDEX_BATCH;
/// Least milliseconds between two checkpoints of the database file's
/// write-ahead log, which run on a thread of their own (0: SQLite runs
/// them inside the commit that fills the log past 1,000 pages).
pub const DEFAULT_DB_CHECKPOINT_MS: u64 = crate::store::DEFAULT_CHECKPOINT_GAP_MS;

/// The server's limits. `Config::default()` is what `chatmaster-server`
/// runs with when no flag is given.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest accepted frame body; larger frames close the connection.
    pub max_frame_bytes: usize,
    /// Largest inflated package; inflating past it closes the connection.
    pub max_package_bytes: usize,
    /// Largest chat message text in bytes.
    pub max_message_bytes: usize,
    /// Longest user or channel name in characters.
    pub max_name_chars: usize,
    /// Cap on names in `users` / `channels` lists.
    pub max_list_names: usize,
    /// Most names on one user's ignore list.
    pub max_ignores: usize,
    /// Longest away text in bytes.
    pub max_away_bytes: usize,
    /// Most direct messages kept for one offline account.
    pub max_backlog: usize,
    /// Kept direct messages delivered per page after a login.
    pub backlog_page: usize,
    /// Time allowed between connecting and logging in.
    pub login_timeout: Duration,
    /// Time allowed for a started frame to finish arriving.
    pub frame_timeout: Duration,
    /// Time one write to a client may stall.
    pub write_timeout: Duration,
    /// Time each client gets to receive `server_shutdown`.
    pub shutdown_timeout: Duration,
    /// Per-connection outbound queue length, in packages.
    pub outbound_queue: usize,
    /// Per-connection outbound queue size, in encoded bytes (an empty queue
    /// still takes one larger package).
    pub max_queue_bytes: usize,
    /// Maximum simultaneous connections.
    pub max_connections: usize,
    /// Sessions per client address, over every transport (0: no cap).
    pub max_connections_per_address: usize,
    /// Origins, besides the page's own, whose pages may open a WebSocket
    /// session (`https://chat.example.org`).
    pub allowed_origins: Vec<String>,
    /// HTTP connections open at once before they are upgraded.
    pub max_http_connections: usize,
    /// Time for an HTTP connection's TLS handshake and request headers.
    pub http_header_timeout: Duration,
    /// Packages per second handled per client on average; past it the
    /// connection stops being read until the next token is due. 0 disables.
    pub rate_per_sec: u32,
    /// Packages handled at once before `rate_per_sec` applies.
    pub rate_burst: u32,
    /// zlib compression level (0..=9) for outgoing packages.
    pub compression_level: u32,
    /// Outgoing packages with less JSON than this are stored, not compressed.
    pub compress_min_bytes: usize,
    /// Chat messages for fewer recipients than this are stored, not compressed.
    pub compress_min_recipients: usize,
    /// Password hashes computed at once; 0 means two per core.
    pub hash_concurrency: usize,
    /// Wrong passwords per account within the window before refusing.
    pub login_failures_per_account: usize,
    /// Wrong passwords per client address within the window before refusing.
    pub login_failures_per_address: usize,
    /// How long a wrong password counts.
    pub login_throttle_window: Duration,
    /// Entries remembered in each throttle map.
    pub login_throttle_entries: usize,
    /// Whether `register` is allowed.
    pub registration: Registration,
    /// Account store calls running at once.
    pub account_store_calls: usize,
    /// Time between two checks for other processes' account changes.
    pub accounts_poll: Duration,
    /// Database file, or `:memory:`.
    pub db: String,
    /// What a commit waits for before messages are acknowledged.
    pub db_durability: Durability,
    /// Time a database operation waits for another process's lock.
    pub db_busy_timeout: Duration,
    /// Messages waiting for the writer, at most.
    pub store_queue: usize,
    /// Messages per transaction, at most.
    pub store_batch: usize,
    /// Least time between the starts of two commits of a busy writer.
    pub store_group: Duration,
    /// Channels with more members than this announce arrivals, departures
    /// and renames only as a periodic `channel_stats`.
    pub presence_limit: usize,
    /// Shortest time between two `channel_stats` of one channel.
    pub presence_interval: Duration,
    /// Days messages are kept (0: for good).
    pub history_days: u32,
    /// History and search reads running at once.
    pub read_calls: usize,
    /// Read-only database connections.
    pub db_readers: usize,
    /// Most matches counted by a search, and unread messages per channel.
    pub count_cap: usize,
    /// Least time between two additions to the search index by a busy writer.
    pub search_index: Duration,
    /// Most messages one addition to the search index takes.
    pub search_index_batch: usize,
    /// Least time between two checkpoints of the database's log (zero:
    /// SQLite's own, inside commits).
    pub db_checkpoint: Duration,
    /// Most recipients of one `group`.
    pub max_group_recipients: usize,
    /// Most bans per channel.
    pub max_bans: usize,
    /// Longest topic in characters.
    pub max_topic_chars: usize,
    /// Longest kick reason in characters.
    pub max_reason_chars: usize,
    /// Account names of the server operators, as given (compared folded):
    /// they may kick, ban and delete in any channel and send notices.
    pub opers: Vec<String>,
    /// The cluster's carrier URLs (`--cluster`); empty: a node alone.
    pub cluster: Vec<String>,
    /// This node's name in a cluster.
    pub node_name: String,
    /// A cluster node not heard from within this is gone.
    pub cluster_lease: Duration,
    /// How long a joining node waits for a snapshot, per try.
    pub cluster_snapshot_timeout: Duration,
    /// How long a node waits for its follower to apply what it appended.
    pub cluster_apply_timeout: Duration,
    /// How long one operation on the cluster's carrier may take.
    pub cluster_timeout: Duration,
    /// Most events the cluster's log keeps.
    pub cluster_log_max_msgs: u64,
    /// Most bytes the cluster's log keeps.
    pub cluster_log_max_bytes: u64,
    /// Copies of the log and claims the carrier keeps.
    pub cluster_replicas: usize,
    /// Time between two heartbeats of this node.
    pub cluster_heartbeat: Duration,
}

impl Config {
    /// Below how many bytes of JSON a chat message for `recipients`
    /// recipients is stored rather than deflated: `compress_min_bytes` for
    /// a crowd, everything for fewer than `compress_min_recipients`.
    pub fn message_store_below(&self, recipients: usize) -> usize {
        if recipients < self.compress_min_recipients {
            usize::MAX
        } else {
            self.compress_min_bytes
        }
    }

    /// The fields that set up what is built once at start: the store's
    /// file, its options and its writer thread; the accounts service's
    /// hasher, throttle, store permits and poll interval. A reload cannot change
    /// them: [`Config::keep_startup`] carries them over from the running
    /// configuration, and a change to them is reported as needing a
    /// restart (see `ops::reload`). Every other field is read through
    /// `Hub::config()` where it is used, and so changes live; a new field
    /// that sizes something built once belongs here.
    pub fn startup_fields(&self) -> impl std::fmt::Debug + '_ {
        (
            (
                &self.db,
                self.db_durability,
                self.db_busy_timeout,
                self.store_queue,
                self.store_batch,
                self.store_group,
                self.db_readers,
                self.read_calls,
                self.search_index,
                self.search_index_batch,
                self.db_checkpoint,
            ),
            // The accounts service's hasher pool, throttle table and
            // store permits.
            (
                self.hash_concurrency,
                self.login_failures_per_account,
                self.login_failures_per_address,
                self.login_throttle_window,
                self.login_throttle_entries,
                self.account_store_calls,
                self.accounts_poll,
            ),
            // The HTTP listener's connection slots.
            self.max_http_connections,
        )
    }

    /// `self`, but with the start-up fields of `running`.
    pub fn keep_startup(self, running: &Config) -> Config {
        Config {
            db: running.db.clone(),
            db_durability: running.db_durability,
            db_busy_timeout: running.db_busy_timeout,
            store_queue: running.store_queue,
            store_batch: running.store_batch,
            store_group: running.store_group,
            db_readers: running.db_readers,
            read_calls: running.read_calls,
            search_index: running.search_index,
            search_index_batch: running.search_index_batch,
            db_checkpoint: running.db_checkpoint,
            hash_concurrency: running.hash_concurrency,
            login_failures_per_account: running.login_failures_per_account,
            login_failures_per_address: running.login_failures_per_address,
            login_throttle_window: running.login_throttle_window,
            login_throttle_entries: running.login_throttle_entries,
            account_store_calls: running.account_store_calls,
            accounts_poll: running.accounts_poll,
            max_http_connections: running.max_http_connections,
            ..self
        }
    }

    /// How the store is to be opened.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            busy_timeout: self.db_busy_timeout,
            durability: self.db_durability,
            readers: self.db_readers,
            checkpoint_gap: self.db_checkpoint,
            index_gap: self.search_index,
            index_batch: self.search_index_batch,
        }
    }
}

/// A node name when none is given: the host's name and the process id.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", std::process::id())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_package_bytes: DEFAULT_MAX_PACKAGE_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_name_chars: DEFAULT_MAX_NAME_CHARS,
            max_list_names: DEFAULT_MAX_LIST_NAMES,
            max_ignores: DEFAULT_MAX_IGNORES,
            max_away_bytes: DEFAULT_MAX_AWAY_BYTES,
            max_backlog: DEFAULT_MAX_BACKLOG,
            backlog_page: DEFAULT_BACKLOG_PAGE,
            login_timeout: Duration::from_secs(DEFAULT_LOGIN_TIMEOUT_SECS),
            frame_timeout: Duration::from_secs(DEFAULT_FRAME_TIMEOUT_SECS),
            write_timeout: Duration::from_secs(DEFAULT_WRITE_TIMEOUT_SECS),
            shutdown_timeout: Duration::from_millis(DEFAULT_SHUTDOWN_TIMEOUT_MS),
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            allowed_origins: Vec::new(),
            max_http_connections: DEFAULT_MAX_HTTP_CONNECTIONS,
            http_header_timeout: Duration::from_secs(DEFAULT_HTTP_HEADER_TIMEOUT_SECS),
            rate_per_sec: DEFAULT_RATE_PER_SEC,
            rate_burst: DEFAULT_RATE_BURST,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            compress_min_bytes: DEFAULT_COMPRESS_MIN_BYTES,
            compress_min_recipients: DEFAULT_COMPRESS_MIN_RECIPIENTS,
            hash_concurrency: DEFAULT_HASH_CONCURRENCY,
            login_failures_per_account: DEFAULT_LOGIN_FAILURES_PER_ACCOUNT,
            login_failures_per_address: DEFAULT_LOGIN_FAILURES_PER_ADDRESS,
            login_throttle_window: Duration::from_secs(DEFAULT_LOGIN_THROTTLE_WINDOW_SECS),
            login_throttle_entries: DEFAULT_LOGIN_THROTTLE_ENTRIES,
            registration: Registration::Open,
            account_store_calls: DEFAULT_ACCOUNT_STORE_CALLS,
            accounts_poll: Duration::from_millis(DEFAULT_ACCOUNTS_POLL_MS),
            db: MEMORY.to_owned(),
            db_durability: Durability::Normal,
            db_busy_timeout: Duration::from_millis(DEFAULT_DB_BUSY_TIMEOUT_MS),
            store_queue: DEFAULT_STORE_QUEUE,
            store_batch: DEFAULT_STORE_BATCH,
            store_group: Duration::from_micros(DEFAULT_STORE_GROUP_US),
            presence_limit: DEFAULT_PRESENCE_LIMIT,
            presence_interval: Duration::from_millis(DEFAULT_PRESENCE_INTERVAL_MS),
            history_days: DEFAULT_HISTORY_DAYS,
            read_calls: DEFAULT_READ_CALLS,
            db_readers: DEFAULT_DB_READERS,
            count_cap: DEFAULT_COUNT_CAP,
            search_index: Duration::from_millis(DEFAULT_SEARCH_INDEX_MS),
            search_index_batch: DEFAULT_SEARCH_INDEX_BATCH,
            db_checkpoint: Duration::from_millis(DEFAULT_DB_CHECKPOINT_MS),
            max_group_recipients: DEFAULT_MAX_GROUP_RECIPIENTS,
            max_bans: DEFAULT_MAX_BANS,
            max_topic_chars: DEFAULT_MAX_TOPIC_CHARS,
            max_reason_chars: DEFAULT_MAX_REASON_CHARS,
            opers: Vec::new(),
            cluster: Vec::new(),
            node_name: default_node_name(),
            cluster_lease: Duration::from_secs(DEFAULT_CLUSTER_LEASE_SECS),
            cluster_snapshot_timeout: Duration::from_millis(DEFAULT_CLUSTER_SNAPSHOT_TIMEOUT_MS),
            cluster_apply_timeout: Duration::from_millis(DEFAULT_CLUSTER_APPLY_TIMEOUT_MS),
            cluster_timeout: Duration::from_millis(DEFAULT_CLUSTER_TIMEOUT_MS),
            cluster_log_max_msgs: DEFAULT_CLUSTER_LOG_MAX_MSGS,
            cluster_log_max_bytes: DEFAULT_CLUSTER_LOG_MAX_BYTES,
            cluster_replicas: DEFAULT_CLUSTER_REPLICAS,
            cluster_heartbeat: Duration::from_millis(DEFAULT_CLUSTER_HEARTBEAT_MS),
        }
    }
}

/// `chatmaster-server --help`'s description: signals, and how flags,
/// environment and configuration file combine.
pub const SERVER_LONG_ABOUT: &str = "ChatMaster 3000 chat server.\n\nSpeaks the framed, zlib-compressed JSON protocol described in protocol.md. \
                  Log level follows RUST_LOG (default: info). SIGINT or SIGTERM shut it down gracefully: \
                  every client is told `server_shutdown` and the process exits 0. SIGHUP reloads the \
                  configuration file.\n\n\
                  Every flag can also be set in the --config file (TOML, the key spelled like the flag: \
                  `rate-per-sec = 20`) or by an environment variable (CHATMASTER_ and the flag in upper \
                  snake case: CHATMASTER_RATE_PER_SEC=20). Precedence: built-in default < file < \
                  environment < command line. `chatmaster-server config` prints the effective values \
                  and where each came from.";

/// What `chatmaster-server` does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServerCommand {
    /// Manage accounts in the database (also while a server runs on it).
    Accounts(crate::server::admin::AccountsArgs),
    /// Prints the effective configuration as TOML, each value with where it
    /// came from (default, file and line, environment variable, flag).
    /// Flags go before the subcommand.
    Config,
    /// Writes a consistent copy of the database (--db) to FILE while the
    /// server may be running (SQLite's online backup). FILE must not exist.
    /// To restore, start the server with --db FILE.
    Backup {
        /// Where the copy goes.
        file: PathBuf,
    },
    /// Prints a shell completion script for chatmaster-server.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Command-line flags of `chatmaster-server`. Kept in the library so the
/// flag set is testable and shared with anything that embeds the server.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "chatmaster-server",
    version,
    about = "ChatMaster 3000 chat server",
    long_about = SERVER_LONG_ABOUT
)]
pub struct ServerArgs {
    /// Configuration file (TOML) to read flags from; also CHATMASTER_CONFIG.
    /// SIGHUP reads it again.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format: `text` for people, `json` for one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Maintenance instead of serving (`accounts add|list|delete|passwd`).
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// HTTP port, on --host, serving the web client, the WebSocket endpoint
    /// /ws, /healthz and /metrics (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_HTTP_PORT)]
    pub http_port: u16,
    /// Serve no HTTP port at all (no web client, WebSocket, health or metrics).
    #[arg(long)]
    pub no_http: bool,
    /// Origin (`scheme://host[:port]`) besides the page's own whose pages may
    /// open WebSocket sessions; repeatable. Any other Origin gets HTTP 403.
    #[arg(long, value_name = "ORIGIN")]
    pub allowed_origin: Vec<String>,
    /// Certificate chain (PEM) making the TCP port speak TLS and the HTTP
    /// port HTTPS and WSS; needs --tls-key. SIGHUP reads it again.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest frame body in bytes (compressed); larger frames close the connection.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME_BYTES, value_parser = clap::value_parser!(u32).range(16..).map(|v| v as usize))]
    pub max_frame_bytes: usize,
    /// Largest package in bytes after inflating; more closes the connection.
    #[arg(long, default_value_t = DEFAULT_MAX_PACKAGE_BYTES, value_parser = clap::value_parser!(u32).range(1024..).map(|v| v as usize))]
    pub max_package_bytes: usize,
    /// Largest chat message text in UTF-8 bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_message_bytes: usize,
    /// Longest user or channel name in characters.
    #[arg(long, default_value_t = DEFAULT_MAX_NAME_CHARS, value_parser = clap::value_parser!(u32).range(1..=1024).map(|v| v as usize))]
    pub max_name_chars: usize,
    /// Most names sent in one `users` or `channels` list (the total is sent too).
    #[arg(long, default_value_t = DEFAULT_MAX_LIST_NAMES, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_list_names: usize,
    /// Most names one user may ignore (`ignore`).
    #[arg(long, default_value_t = DEFAULT_MAX_IGNORES, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_ignores: usize,
    /// Longest away text (`away`) in UTF-8 bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_AWAY_BYTES, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_away_bytes: usize,
    /// Most direct messages kept for one offline account; more are refused until it logs in.
    #[arg(long, default_value_t = DEFAULT_MAX_BACKLOG, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_backlog: usize,
    /// Kept direct messages read and queued per page when a user's backlog is delivered after a login.
    #[arg(long, default_value_t = DEFAULT_BACKLOG_PAGE, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub backlog_page: usize,
    /// Seconds a new connection has to log in before it is closed.
    #[arg(long, default_value_t = DEFAULT_LOGIN_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub login_timeout_secs: u64,
    /// Seconds a frame may take to arrive once its first byte has (slow-sender defence).
    #[arg(long, default_value_t = DEFAULT_FRAME_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub frame_timeout_secs: u64,
    /// Seconds a write to a client may stall before the client is dropped.
    #[arg(long, default_value_t = DEFAULT_WRITE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout_secs: u64,
    /// Milliseconds each client gets to receive `server_shutdown` on shutdown.
    #[arg(long, default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_timeout_ms: u64,
    /// Packages waiting for one client before it is disconnected as a slow
    /// consumer (its channel's unsent traffic and its own packages, each).
    #[arg(long, default_value_t = DEFAULT_OUTBOUND_QUEUE, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub outbound_queue: usize,
    /// Bytes waiting for one client before it is disconnected as a slow
    /// consumer (its channel's unsent traffic and its own packages, each).
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUE_BYTES, value_parser = clap::value_parser!(u32).range(1024..).map(|v| v as usize))]
    pub max_queue_bytes: usize,
    /// Simultaneous connections; past it a new client gets an error and is closed.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_connections: usize,
    /// Chat sessions one client address may hold at once over TCP, TLS and
    /// WebSocket together (0 = no cap beyond --max-connections).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)]
    pub max_connections_per_address: usize,
    /// HTTP connections open at once that are not WebSocket sessions (page
    /// loads, health checks, scrapes); past it new ones are closed.
    #[arg(long, default_value_t = DEFAULT_MAX_HTTP_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_http_connections: usize,
    /// Seconds an HTTP connection has for its TLS handshake and for each
    /// request's headers.
    #[arg(long, default_value_t = DEFAULT_HTTP_HEADER_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout_secs: u64,
    /// Packages per second handled per client (token bucket; 0 turns flood control off).
    /// A faster client is slowed down, never refused: its socket is not read until the
    /// next token is due, so TCP pushes back on it.
    #[arg(long, default_value_t = DEFAULT_RATE_PER_SEC)]
    pub rate_per_sec: u32,
    /// Packages a client may send at once, handled without delay, before the rate applies.
    #[arg(long, default_value_t = DEFAULT_RATE_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,
    /// zlib level for outgoing packages (0 = store, 1 = fastest, 9 = smallest).
    #[arg(long, default_value_t = DEFAULT_COMPRESSION_LEVEL, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compression_level: u32,
    /// Outgoing packages with JSON shorter than this many bytes are sent as
    /// stored zlib blocks, uncompressed (0 compresses everything).
    #[arg(long, default_value_t = DEFAULT_COMPRESS_MIN_BYTES)]
    pub compress_min_bytes: usize,
    /// A chat message going to fewer recipients than this is sent as stored
    /// zlib blocks whatever its length; from this many on it is compressed
    /// (when over --compress-min-bytes). 0 or 1 compresses for any number.
    #[arg(long, default_value_t = DEFAULT_COMPRESS_MIN_RECIPIENTS)]
    pub compress_min_recipients: usize,
    /// Members a channel may have before other people's arrivals, departures
    /// and renames in it are no longer announced; its members get a
    /// `channel_stats` with the member count instead, at most once per
    /// --presence-interval-ms and only when the count changed.
    #[arg(long, default_value_t = DEFAULT_PRESENCE_LIMIT, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub presence_limit: usize,
    /// Milliseconds between two `channel_stats` of a channel above --presence-limit.
    #[arg(long, default_value_t = DEFAULT_PRESENCE_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(10..))]
    pub presence_interval_ms: u64,
    /// Most recipients one `group` command may name.
    #[arg(long, default_value_t = DEFAULT_MAX_GROUP_RECIPIENTS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_group_recipients: usize,
    /// Most bans one channel may hold.
    #[arg(long, default_value_t = DEFAULT_MAX_BANS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_bans: usize,
    /// Longest channel topic, in characters.
    #[arg(long, default_value_t = DEFAULT_MAX_TOPIC_CHARS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_topic_chars: usize,
    /// Longest reason a kick may give, in characters.
    #[arg(long, default_value_t = DEFAULT_MAX_REASON_CHARS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_reason_chars: usize,
    /// An account name that is a server operator (repeat for several): an
    /// operator logged in to that account may kick, ban and delete in any
    /// channel and send `notice` to everybody.
    #[arg(long = "oper", value_name = "NAME")]
    pub oper: Vec<String>,
    /// Join a cluster of nodes through this carrier URL (e.g.
    /// nats://127.0.0.1:4222; repeat for several servers of it).
    #[arg(long = "cluster", value_name = "URL")]
    pub cluster: Vec<String>,
    /// This node's name in a cluster (default: host name and process id).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Seconds a cluster node may go unheard before its users are shown
    /// leaving on the others.
    #[arg(long, default_value_t = DEFAULT_CLUSTER_LEASE_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub cluster_lease_secs: u64,
    /// Milliseconds a joining cluster node waits for a peer's snapshot of
    /// the chat state, per try.
    #[arg(long, default_value_t = DEFAULT_CLUSTER_SNAPSHOT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(10..))]
    pub cluster_snapshot_timeout_ms: u64,
    /// Milliseconds a cluster node waits for its own follower to apply a
    /// change it appended (the command then fails as unavailable), and
    /// that a package of another node may wait for this node to apply the
    /// log as far as its sender had.
    #[arg(long, default_value_t = DEFAULT_CLUSTER_APPLY_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(10..))]
    pub cluster_apply_timeout_ms: u64,
    /// Milliseconds one operation on NATS (connecting, an append, a claim)
    /// may take before it fails: a message then gets a clear error rather
    /// than waiting on an outage.
    #[arg(long, default_value_t = DEFAULT_CLUSTER_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(100..))]
    pub cluster_timeout_ms: u64,
    /// Most events the cluster's log (a JetStream stream) keeps; the oldest
    /// are discarded first (a node that fell further behind takes a snapshot).
    #[arg(long, default_value_t = DEFAULT_CLUSTER_LOG_MAX_MSGS, value_parser = clap::value_parser!(u64).range(1..(i64::MAX as u64)))]
    pub cluster_log_max_msgs: u64,
    /// Most bytes the cluster's log keeps; the oldest events go first.
    #[arg(long, default_value_t = DEFAULT_CLUSTER_LOG_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1024..(i64::MAX as u64)))]
    pub cluster_log_max_bytes: u64,
    /// Copies of the cluster's log and claims NATS keeps (1 for one NATS
    /// server; 3 for a NATS cluster of three, to survive one's loss).
    #[arg(long, default_value_t = DEFAULT_CLUSTER_REPLICAS, value_parser = clap::value_parser!(u32).range(1..=5).map(|v| v as usize))]
    pub cluster_replicas: usize,
    /// Milliseconds between two heartbeats of this cluster node; keep it
    /// well under the lease.
    #[arg(long, default_value_t = DEFAULT_CLUSTER_HEARTBEAT_MS, value_parser = clap::value_parser!(u64).range(10..))]
    pub cluster_heartbeat_ms: u64,
    /// Worker threads running connections (0 = one per CPU core). On a box
    /// shared with other busy processes, fewer threads than cores can serve
    /// more: each cross-thread wake-up costs a futex call and a context switch.
    #[arg(long, default_value_t = DEFAULT_THREADS)]
    pub threads: usize,
    /// Whether users may register their names with `register` (accounts can
    /// always be made with `chatmaster-server accounts add`).
    #[arg(long, value_enum, default_value_t = Registration::Open)]
    pub registration: Registration,
    /// Password hashes (argon2id, 19 MiB each) computed at once; 0 = two per
    /// core, which is also the most allowed.
    #[arg(long, default_value_t = DEFAULT_HASH_CONCURRENCY)]
    pub hash_concurrency: usize,
    /// Wrong passwords for one account within the throttle window after
    /// which attempts on it are refused, from anywhere.
    #[arg(long, default_value_t = DEFAULT_LOGIN_FAILURES_PER_ACCOUNT, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub login_failures_per_account: usize,
    /// Wrong passwords from one client address within the throttle window
    /// after which its attempts are refused.
    #[arg(long, default_value_t = DEFAULT_LOGIN_FAILURES_PER_ADDRESS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub login_failures_per_address: usize,
    /// Seconds a wrong password counts against its account and address.
    #[arg(long, default_value_t = DEFAULT_LOGIN_THROTTLE_WINDOW_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub login_throttle_window_secs: u64,
    /// Accounts, and addresses, whose wrong passwords are remembered at once
    /// (past it the one idle longest is forgotten).
    #[arg(long, default_value_t = DEFAULT_LOGIN_THROTTLE_ENTRIES, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub login_throttle_entries: usize,
    /// Account and registered-channel store calls (logins, register, ...)
    /// running at once; the rest wait their turn.
    #[arg(long, default_value_t = DEFAULT_ACCOUNT_STORE_CALLS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub account_store_calls: usize,
    /// Milliseconds between two checks of the database for accounts added,
    /// deleted or renamed by another process (`chatmaster-server accounts`):
    /// an account added there is enforced within this time; deletions and
    /// password changes count from the next login anyway.
    #[arg(long, default_value_t = DEFAULT_ACCOUNTS_POLL_MS, value_parser = clap::value_parser!(u64).range(10..))]
    pub accounts_poll_ms: u64,
    /// Database holding accounts, registered channels and messages: a
    /// SQLite file (created if missing); `:memory:` keeps everything in
    /// memory, gone at exit; `postgres://user@host:port/dbname` (or
    /// `postgresql://`, a password as `user:password@`) a PostgreSQL
    /// database, which several nodes can share (its schema is created at
    /// first start; no TLS to the database: use a local or private network).
    #[arg(long, default_value = DEFAULT_DB)]
    pub db: String,
    /// What a commit waits for before `message_sent` is sent: `normal`
    /// survives the server being killed, `full` also a power cut (each
    /// commit is synced to the disk). On PostgreSQL, `full` sets
    /// `synchronous_commit = on` for the server's sessions and `normal`
    /// keeps the database's own setting.
    #[arg(long, value_enum, default_value_t = Durability::Normal)]
    pub db_sync: Durability,
    /// Milliseconds a database operation waits for another process (such
    /// as the admin CLI) holding the file's lock; on PostgreSQL, for a
    /// lock another node holds (`lock_timeout`), and for a connection
    /// (at least a second).
    #[arg(long, default_value_t = DEFAULT_DB_BUSY_TIMEOUT_MS)]
    pub db_busy_timeout_ms: u64,
    /// Accepted messages waiting to be committed; when full, clients that
    /// send more are not read until the writer catches up.
    #[arg(long, default_value_t = DEFAULT_STORE_QUEUE, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub store_queue: usize,
    /// Most messages committed in one transaction.
    #[arg(long, default_value_t = DEFAULT_STORE_BATCH, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub store_batch: usize,
    /// Microseconds a busy store writer lets pass between the starts of two
    /// commits, gathering messages meanwhile; 0 commits whenever anything
    /// is queued (an idle writer always commits at once).
    #[arg(long, default_value_t = DEFAULT_STORE_GROUP_US)]
    pub store_group_us: u64,
    /// Days messages are kept: older ones are deleted in the background
    /// (checked at start and every minute). 0 keeps them for good.
    #[arg(long, default_value_t = DEFAULT_HISTORY_DAYS)]
    pub history_days: u32,
    /// History and search reads running at once, across all connections;
    /// the rest wait their turn.
    #[arg(long, default_value_t = DEFAULT_READ_CALLS, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub read_calls: usize,
    /// Read-only connections to the database (file or PostgreSQL),
    /// shared by all reads.
    #[arg(long, default_value_t = DEFAULT_DB_READERS, value_parser = clap::value_parser!(u32).range(1..=64).map(|v| v as usize))]
    pub db_readers: usize,
    /// Most matches a search counts for its `total` (its pages reach no
    /// further), and most unread messages counted per channel.
    #[arg(long, default_value_t = DEFAULT_COUNT_CAP, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub count_cap: usize,
    /// Milliseconds between the starts of two additions of new messages to
    /// the search index while messages keep coming (one index segment
    /// each; a database file's index is added to by a thread of its own,
    /// beside the commits); a search brings the index up to date first, so
    /// it finds every stored message whatever this is.
    #[arg(long, default_value_t = DEFAULT_SEARCH_INDEX_MS)]
    pub search_index_ms: u64,
    /// Most messages one addition to the search index takes (one
    /// transaction of the index).
    #[arg(long, default_value_t = DEFAULT_SEARCH_INDEX_BATCH, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub search_index_batch: usize,
    /// Least milliseconds between two checkpoints of the database file's
    /// write-ahead log (copying it back into the file), which run on a
    /// thread of their own so that no commit waits for one; 0 leaves them
    /// to SQLite, inside the commit that fills the log past 1,000 pages.
    #[arg(long, default_value_t = DEFAULT_DB_CHECKPOINT_MS)]
    pub db_checkpoint_ms: u64,
}

impl ServerArgs {
    /// The limits these flags describe.
    pub fn config(&self) -> Config {
        Config {
            max_frame_bytes: self.max_frame_bytes,
            max_package_bytes: self.max_package_bytes,
            max_message_bytes: self.max_message_bytes,
            max_name_chars: self.max_name_chars,
            max_list_names: self.max_list_names,
            max_ignores: self.max_ignores,
            max_away_bytes: self.max_away_bytes,
            max_backlog: self.max_backlog,
            backlog_page: self.backlog_page,
            login_timeout: Duration::from_secs(self.login_timeout_secs),
            frame_timeout: Duration::from_secs(self.frame_timeout_secs),
            write_timeout: Duration::from_secs(self.write_timeout_secs),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            outbound_queue: self.outbound_queue,
            max_queue_bytes: self.max_queue_bytes,
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            allowed_origins: self.allowed_origin.clone(),
            max_http_connections: self.max_http_connections,
            http_header_timeout: Duration::from_secs(self.http_header_timeout_secs),
            rate_per_sec: self.rate_per_sec,
            rate_burst: self.rate_burst,
            compression_level: self.compression_level,
            compress_min_bytes: self.compress_min_bytes,
            compress_min_recipients: self.compress_min_recipients,
            hash_concurrency: self.hash_concurrency,
            login_failures_per_account: self.login_failures_per_account,
            login_failures_per_address: self.login_failures_per_address,
            login_throttle_window: Duration::from_secs(self.login_throttle_window_secs),
            login_throttle_entries: self.login_throttle_entries,
            registration: self.registration,
            account_store_calls: self.account_store_calls,
            accounts_poll: Duration::from_millis(self.accounts_poll_ms),
            db: self.db.clone(),
            db_durability: self.db_sync,
            db_busy_timeout: Duration::from_millis(self.db_busy_timeout_ms),
            store_queue: self.store_queue,
            store_batch: self.store_batch,
            store_group: Duration::from_micros(self.store_group_us),
            presence_limit: self.presence_limit,
            presence_interval: Duration::from_millis(self.presence_interval_ms),
            history_days: self.history_days,
            read_calls: self.read_calls,
            db_readers: self.db_readers,
            count_cap: self.count_cap,
            search_index: Duration::from_millis(self.search_index_ms),
            search_index_batch: self.search_index_batch,
            db_checkpoint: Duration::from_millis(self.db_checkpoint_ms),
            max_group_recipients: self.max_group_recipients,
            max_bans: self.max_bans,
            max_topic_chars: self.max_topic_chars,
            max_reason_chars: self.max_reason_chars,
            opers: self.oper.clone(),
            cluster: self.cluster.clone(),
            node_name: self.node_name.clone().unwrap_or_else(default_node_name),
            cluster_lease: Duration::from_secs(self.cluster_lease_secs),
            cluster_snapshot_timeout: Duration::from_millis(self.cluster_snapshot_timeout_ms),
            cluster_apply_timeout: Duration::from_millis(self.cluster_apply_timeout_ms),
            cluster_timeout: Duration::from_millis(self.cluster_timeout_ms),
            cluster_log_max_msgs: self.cluster_log_max_msgs,
            cluster_log_max_bytes: self.cluster_log_max_bytes,
            cluster_replicas: self.cluster_replicas,
            cluster_heartbeat: Duration::from_millis(self.cluster_heartbeat_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flag_defaults_match_config_defaults() {
        let args = ServerArgs::parse_from(["chatmaster-server"]);
        let from_flags = format!("{:?}", args.config());
        // The binary keeps a file; `Config::default()` keeps memory.
        let expected = Config {
            db: DEFAULT_DB.to_owned(),
            ..Config::default()
        };
        assert_eq!(from_flags, format!("{expected:?}"));
        assert_eq!(args.port, 9000);
        assert_eq!(args.host, "127.0.0.1");
    }

    #[test]
    fn zero_timeouts_are_refused() {
        // A zero login timeout would close every client on arrival.
        for flag in [
            "--login-timeout-secs",
            "--frame-timeout-secs",
            "--write-timeout-secs",
        ] {
            assert!(ServerArgs::try_parse_from(["chatmaster-server", flag, "0"]).is_err());
        }
    }

    #[test]
    fn store_flags_reach_the_config() {
        let config = ServerArgs::parse_from([
            "chatmaster-server",
            "--db",
            ":memory:",
            "--db-sync",
            "full",
            "--store-queue",
            "7",
            "--store-batch",
            "3",
            "--store-group-us",
            "0",
        ])
        .config();
        assert_eq!(config.db, MEMORY);
        assert_eq!(config.db_durability, Durability::Full);
        assert_eq!((config.store_queue, config.store_batch), (7, 3));
        assert_eq!(config.store_group, Duration::ZERO);
        // A queue of none would stop every sender for good.
        assert!(ServerArgs::try_parse_from(["chatmaster-server", "--store-queue", "0"]).is_err());
    }

    #[test]
    fn flags_override_limits() {
        let args = ServerArgs::parse_from([
            "chatmaster-server",
            "--max-frame-bytes",
            "1024",
            "--rate-per-sec",
            "0",
        ]);
        let config = args.config();
        assert_eq!(config.max_frame_bytes, 1024);
        assert_eq!(config.rate_per_sec, 0);
    }

    #[test]
    fn opers_repeat() {
        let config =
            ServerArgs::parse_from(["chatmaster-server", "--oper", "root", "--oper", "Admin"])
                .config();
        assert_eq!(config.opers, ["root", "Admin"]);
    }
}

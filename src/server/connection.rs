//! One task per connection: reads frames, runs them against the chat
//! state, and writes the connection's outbound queue to the socket. The
//! socket is any [`Transport`] (TCP, TLS, WebSocket): the loop, the limits
//! and everything below are the same for all of them.
//!
//! The task is a single `select!` loop over cancel-safe futures (shutdown,
//! queue non-empty or closed, socket readable, deadlines); the reads and
//! writes themselves happen in the loop body. Frames already buffered are
//! handled one at a time and the replies they cause are flushed before the
//! next one is read, so a client that pipelines requests without reading
//! answers is slowed by TCP backpressure instead of growing our queue.
//!
//! Flood control works the same way ("fakelag"): when the connection's
//! token bucket is empty, reading is *paused* until the next token is due.
//! While paused no frame is decoded or handled and the socket is not read,
//! so what the client sends waits in its order, first in our bounded read
//! buffer, then in the kernel's buffers, until TCP stops the sender; the
//! outbound queue keeps being written and shutdown and kill are obeyed as
//! always. Nothing is refused or dropped for rate. A pause is a reason and
//! a deadline (`Pause`), so that other reasons to stop reading fit the
//! same loop.
//!
//! The store is the other reason: a package that must wait for the store's
//! writer ([`crate::server::journal`]) is parked with the future it waits
//! on (`Stalled`), and reading stops the same way until that completes.
//! A message waits for a place in the writer's bounded queue when it is
//! full (a writer that falls behind slows its senders instead of growing
//! memory); a `ping` waits for a barrier, so its `pong` comes after the
//! `message_sent` of every earlier message and before the answer to
//! anything later.
//!
//! After an account logs in, the connection delivers the direct messages
//! kept for it while it was offline before it reads anything more: pages
//! of `backlog_page` read from the store off the async workers, each
//! queued (writing the queue out first when it is full), written to the
//! socket, and then recorded as delivered in the store, so a connection or
//! server that dies meanwhile leaves the rest for the next login.
//!
//! Memory per idle connection is kept small on purpose: no read buffer is
//! held while nothing is arriving, no zlib state is owned (see
//! [`crate::wire::compress`]), no timer exists once logged in unless a
//! frame is half-read, the outbound queue ([`Outbox`]) gives back its
//! buffer when empty, and the kill signal is the queue's own close flag
//! rather than a token of its own. Nothing of a write is kept between
//! writes either: several queued packages are copied into one per-thread
//! staging buffer and written with one `write`; only what the socket
//! refuses is kept, until it takes it. And the task itself is as large as
//! its largest state, so the loop keeps only a one-byte `Step` across its
//! awaits and leaves rare work to boxed futures (`Deferred`).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, timeout_at, Instant, Sleep};
use tokio_util::codec::Decoder;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::metrics;
use crate::server::chat::{Hub, LoginSetup, OfflineDirect, OfflineRecipient, Persist, UserId};
use crate::server::commands::{self, parse_params, Dispatched, LoginParams};
use crate::server::config::Config;
use crate::server::journal::{Slot, SlotError};
use crate::server::outbox::{Outbox, PushError, Take, Taken};
use crate::server::rate::TokenBucket;
use crate::server::transport::{self, Input, Transport};
use crate::store::{AccountId, MessageId};
use crate::wire::codec;
use crate::wire::frame::FrameCodec;
use crate::wire::protocol::{
    fold_name, ChatMessage, ClientPackage, Notification, Request, ServerPackage, Session,
    UnreadCount,
};

/// Most bytes gathered from the queue into one write.
const MAX_WRITE_BATCH: usize = 64 * 1024;
thread_local! {
    /// Where a batch of several packages is copied to be written with one
    /// plain `write`, shared by every connection the thread runs. A
    /// vectored write of hundreds of short packages cost the kernel twice
    /// as much copying as one contiguous buffer, and a buffer per batch
    /// was an allocation per write; one per thread is neither, and holds
    /// nothing per connection. Used only between two awaits.
    static STAGING: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(MAX_WRITE_BATCH * 2));
}

/// Why a connection ended; logged, and sometimes told to the peer first.
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("peer closed the connection")]
    Eof,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Fatal(String),
    #[error("write stalled for longer than {0:?}")]
    WriteStalled(Duration),
    #[error("dropped by the server (slow consumer)")]
    Killed,
    #[error("replaced by a new login to the same account")]
    Replaced,
    #[error("server shutdown")]
    Shutdown,
    /// The server began to shut down while a write was blocked: what is
    /// queued, and the goodbye, still get the shutdown timeout.
    #[error("server shutdown during a write")]
    ShutdownMidWrite,
}

/// What woke the loop.
enum Event {
    Shutdown,
    Killed,
    Outbound,
    Readable(io::Result<()>),
    LoginTimeout,
    FrameTimeout,
    /// A pause's deadline passed.
    Resume,
    /// The store is ready for the package parked on it.
    StoreReady(StoreReady),
}

/// What the loop does next; decided by its synchronous steps. One byte,
/// since the loop holds it across its awaits (see [`Connection::run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Wait for the next event (or, after one, look at the buffer again).
    Wait,
    /// Write out what is queued.
    Flush,
    /// A frame was handled: write out its replies, then give other tasks
    /// their turn.
    Handled,
    /// The queue has packages: let the tasks already due run, then write.
    Outbound,
    /// Run what waits in `Connection::deferred`.
    Deferred,
}

/// Rare work the loop's synchronous steps leave for a boxed future, so
/// that its size is not carried by every connection's task.
enum Deferred {
    /// Work a handled frame left (see [`Later`]).
    Later(Later),
    /// A frame ends the connection, once the reply saying why is out.
    CloseAfterReply(Close),
    /// The input is not frames (or not packages): the connection ends with
    /// a `protocol` error.
    Protocol(String),
    /// The connection ends now (the peer closed, or the socket failed).
    End(Close),
    /// The server shuts down.
    Shutdown,
    /// The hub dropped the connection.
    Killed,
    /// The store is ready for the parked package.
    StoreReady(StoreReady),
    /// No login within the login timeout.
    LoginTimeout,
    /// A frame begun was not completed within the frame timeout.
    FrameTimeout,
}

/// The deadlines in force for one wait of the loop.
#[derive(Clone, Copy)]
struct Deadlines {
    /// The end of a timed pause.
    pause: Option<Instant>,
    /// The login timeout, until logged in.
    login: Option<Instant>,
    /// The frame timeout, while a frame is begun and reading goes on.
    frame: Option<Instant>,
}

impl Deadlines {
    /// The earliest, for the one timer.
    fn earliest(self) -> Option<Instant> {
        [self.pause, self.login, self.frame]
            .into_iter()
            .flatten()
            .min()
    }

    /// What the timer firing at `now` means (the end of a pause if
    /// nothing else passed: the loop's head then looks again).
    fn passed(self, now: Instant) -> Event {
        if self.pause.is_some_and(|d| now >= d) {
            Event::Resume
        } else if self.login.is_some_and(|d| now >= d) {
            Event::LoginTimeout
        } else if self.frame.is_some_and(|d| now >= d) {
            Event::FrameTimeout
        } else {
            Event::Resume
        }
    }
}

/// What a package parked on the store was waiting for.
enum StoreReady {
    /// A slot in the writer's queue (a message, when the queue was full).
    Slot(Slot),
    /// The writer passed a barrier (a ping).
    Barrier,
    /// The writer has stopped.
    Closed,
}

/// A package parked until the store is ready for it; reading is paused
/// meanwhile, as for [`Pause`], but the end is an event, not a deadline.
struct Stalled {
    /// The package, decoded and counted against the rate limit already.
    package: ClientPackage,
    /// When the wait began (the frame timeout does not run meanwhile).
    since: Instant,
    /// Completes when the store is ready.
    wait: Pin<Box<dyn Future<Output = StoreReady> + Send>>,
}

/// Why reading a connection is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PauseReason {
    /// The client's token bucket is empty: its next package waits for the
    /// next token.
    Rate,
}

/// A stop to reading and handling this connection's packages: nothing is
/// decoded or read from the socket before `until`, while writing and
/// shutdown go on.
#[derive(Debug, Clone, Copy)]
struct Pause {
    /// Why, for the log line when it ends.
    reason: PauseReason,
    /// When it began: the time paused does not count against the frame
    /// timeout, since a frame cannot complete while we do not read.
    since: Instant,
    /// When reading may start again.
    until: Instant,
}

/// Work a package leaves for after its synchronous handling, because it
/// waits on the accounts service (store, hasher) or on the store.
enum Later {
    /// A login: the name may need its password checked.
    Login(LoginParams),
    /// A chat command whose changes must be stored before its answer leaves.
    Persist {
        /// The command's name, for its error type.
        name: String,
        /// What to store.
        steps: Vec<Persist>,
    },
    /// A read or change of stored messages (`history`, `search`, ...).
    Memory {
        /// Who sent it.
        id: UserId,
        /// Its canonical name.
        command: &'static str,
        /// Its parameters, not yet parsed.
        parameters: Option<serde_json::Value>,
    },
    /// A direct message to a name that is not online: the store is asked
    /// whether it is an account's.
    Offline {
        /// Who sent it.
        id: UserId,
        /// The message, holding its place in the store's queue. Boxed:
        /// its text and attachments would grow every connection's task.
        message: Box<OfflineDirect>,
    },
    /// A change for the cluster's log, proposed and waited for. Boxed,
    /// as [`Later::Offline`] is.
    Cluster(Box<(&'static str, crate::cluster::replica::Event)>),
    /// An accounts command (`register`, `password`, ...).
    Accounts {
        /// Who sent it.
        id: UserId,
        /// The name it was sent under.
        name: String,
        /// Its canonical name.
        command: &'static str,
        /// Its parameters, not yet parsed.
        parameters: Option<serde_json::Value>,
    },
}

/// The state of one connection.
struct Connection<T> {
    /// The socket.
    stream: T,
    /// Which kind of socket, for the metrics.
    kind: metrics::Transport,
    /// When the connection is closed unless it has logged in.
    login_deadline: Instant,
    /// Peer address, for logs.
    peer: SocketAddr,
    /// Chat state.
    hub: Hub,
    /// Limits.
    config: Arc<Config>,
    /// Packages waiting to be written. Replies go through it too, so they
    /// keep their order relative to broadcasts; the hub closes it to drop
    /// this connection (slow consumer).
    outbox: Outbox,
    /// The part of a write the socket did not take (it goes before anything
    /// still queued); `None` almost always, so boxed (as `pause` is).
    unsent: Option<Box<Bytes>>,
    /// Cancelled when the server shuts down.
    shutdown: CancellationToken,
    /// The one timer, set to the earliest deadline that applies (login,
    /// a started frame, the end of a pause). An idle logged-in connection
    /// has none: two `Sleep`s built on every turn of the loop were a
    /// cost per wake-up, and kept ones would be 112 bytes each.
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes read but not yet framed; empty (no allocation) while idle.
    buf: BytesMut,
    /// Frame splitter.
    frames: FrameCodec,
    /// The logged-in user, once there is one.
    user: Option<UserId>,
    /// Flood control: `rate_per_sec` tokens per second, `rate_burst` at
    /// once; one token per package handled.
    rate: TokenBucket,
    /// Set while reading is paused. Boxed: rare, and 32 bytes in every
    /// connection's task otherwise.
    pause: Option<Box<Pause>>,
    /// A package waiting for the store; reading is paused meanwhile.
    stalled: Option<Box<Stalled>>,
    /// When a frame begun must be complete; `None` while the read buffer
    /// is empty. Moved on by the time reading is paused.
    frame_deadline: Option<Instant>,
    /// Rare work for the loop's next turn (see [`Deferred`]).
    deferred: Option<Box<Deferred>>,
}

/// What one synchronous write attempt did.
enum Progress {
    /// Nothing was waiting.
    Idle,
    /// Bytes went out (maybe not all: then `unsent` holds the rest).
    Wrote,
    /// The socket took nothing.
    Blocked,
}

/// Serves one accepted connection until it closes.
///
/// Not an `async fn`: the returned future holds only the connection, not
/// also the arguments it was built from (a task is as large as its future,
/// for as long as the connection lives).
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    hub: Hub,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    let login_deadline = Instant::now() + hub.config().login_timeout;
    serve_over(
        stream,
        metrics::Transport::Tcp,
        peer,
        hub,
        shutdown,
        login_deadline,
    )
}

/// Serves one connection over any transport until it closes; it must log
/// in by `login_deadline` (a TLS handshake or an HTTP upgrade before it
/// counts against the login timeout).
pub fn serve_over<T: Transport>(
    stream: T,
    kind: metrics::Transport,
    peer: SocketAddr,
    hub: Hub,
    shutdown: CancellationToken,
    login_deadline: Instant,
) -> impl Future<Output = ()> + Send {
    let config = hub.config();
    let mut conn = Connection {
        stream,
        kind,
        login_deadline,
        peer,
        outbox: Outbox::new(config.outbound_queue, config.max_queue_bytes),
        unsent: None,
        shutdown,
        timer: None,
        buf: BytesMut::new(),
        frames: FrameCodec::new(config.max_frame_bytes),
        user: None,
        rate: TokenBucket::new(config.rate_per_sec, config.rate_burst),
        pause: None,
        stalled: None,
        frame_deadline: None,
        deferred: None,
        hub,
        config,
    };
    async move { conn.serve().await }
}

impl<T: Transport> Connection<T> {
    /// Runs the connection, then lets go of it.
    async fn serve(&mut self) {
        let conn = self;
        metrics::connection_opened(conn.kind);
        let mut result = conn.run().await;
        if let Err(Close::ShutdownMidWrite) = result {
            // protocol.md: at shutdown every client gets what was queued
            // for it and `server_shutdown`, within the shutdown timeout.
            result = conn.goodbye().await;
        }
        metrics::connection_closed(conn.kind);
        if matches!(result, Err(Close::Killed) | Err(Close::WriteStalled(_)))
            && !conn.shutdown.is_cancelled()
        {
            metrics::slow_consumer();
        }
        // Nothing more can be written: refuse further packages at once and
        // free what is queued, before the hub lets go of its clones.
        conn.outbox.close();
        let user = conn.username();
        if let Some(id) = conn.user.take() {
            conn.hub.disconnect(id);
        }
        let (peer, user) = (conn.peer, user.as_deref());
        match result {
            Ok(()) | Err(Close::Eof) | Err(Close::Shutdown) => {
                tracing::debug!(%peer, user, "connection closed")
            }
            Err(e) => tracing::info!(%peer, user, reason = %e, "connection closed"),
        }
    }

    async fn run(&mut self) -> Result<(), Close> {
        // Registered once: after its first poll the future keeps this
        // task's waker in the shutdown token's list, and a cancel wakes the
        // task; each turn then only needs the token's flag. (Polling it on
        // every turn takes the token's lock; a fresh `cancelled()` per turn
        // cost about 8 % of the server's CPU in fan-out profiles.)
        let stop = self.shutdown.clone().cancelled_owned();
        tokio::pin!(stop);
        let mut stop_registered = false;
        self.reply(&ServerPackage::Request(Request::login()))?;
        // The task is as large as this loop's largest state, for as long
        // as the connection lives, and whatever the loop holds across two
        // of its awaits is in every state. So it holds nothing but a
        // one-byte `Step`: the decisions are made by synchronous steps,
        // the hot waits (the next event, a flush) are awaited here, and
        // the rare work (a login, a close, the store becoming ready...)
        // waits in `self.deferred` for a boxed future of its own.
        loop {
            let mut step = self.next_frame();
            if let Step::Wait = step {
                let event = self.next_event(stop.as_mut(), &mut stop_registered).await;
                step = self.on_event(event);
            }
            match step {
                Step::Wait => {}
                Step::Flush => self.flush_queue().await?,
                Step::Handled => {
                    self.flush_queue().await?;
                    // A burst of buffered frames must not monopolise the
                    // thread: recipients' tasks need to drain the queues
                    // this fills, or fast readers look like slow consumers.
                    tokio::task::coop::consume_budget().await;
                }
                Step::Outbound => {
                    // Let the tasks already due run first (senders filling
                    // this and other queues): under load the batch grows
                    // and the syscalls per delivery shrink; when nothing
                    // else is due it costs one turn of the scheduler.
                    tokio::task::yield_now().await;
                    self.flush_queue().await?
                }
                Step::Deferred => Box::pin(self.run_deferred()).await?,
            }
        }
    }

    /// Leaves `work` for the loop to run in a boxed future of its own.
    fn defer(&mut self, work: Deferred) -> Step {
        self.deferred = Some(Box::new(work));
        Step::Deferred
    }

    /// The loop's synchronous head: ends a pause whose time is up, pauses
    /// for flood control, and handles one buffered frame if reading is not
    /// paused. Arms the frame timeout for a frame begun but not complete.
    fn next_frame(&mut self) -> Step {
        if let Some(pause) = self.pause.as_deref().copied() {
            let now = Instant::now();
            if now >= pause.until {
                self.pause = None;
                tracing::trace!(peer = %self.peer, user = self.username().as_deref(), reason = ?pause.reason, paused = ?(now - pause.since), "reading resumed");
                // A frame left incomplete while we did not read gets
                // back the time it lost.
                self.frame_deadline = self.frame_deadline.map(|d| d + (now - pause.since));
            }
        }
        if !self.reading_paused() {
            // Flood control: the next package, buffered or not, waits
            // for a token; until then nothing is decoded or read.
            if let Some(until) = self.rate.ready_at() {
                self.pause_until(PauseReason::Rate, until);
            }
        }
        if !self.reading_paused() {
            // Handle one buffered frame at a time, flushing its replies.
            match self.frames.decode(&mut self.buf) {
                Ok(Some(body)) => {
                    self.frame_deadline = None;
                    // Checked above: a token is there.
                    self.rate.try_take();
                    return match self.handle_frame(&body) {
                        Ok(Some(later)) => self.defer(Deferred::Later(later)),
                        Ok(None) => Step::Handled,
                        // The reply explaining why is queued: let it out first.
                        Err(close) => self.defer(Deferred::CloseAfterReply(close)),
                    };
                }
                Ok(None) => {}
                Err(e) => return self.defer(Deferred::Protocol(e.to_string())),
            }
            if self.buf.is_empty() {
                self.frame_deadline = None;
            } else if self.frame_deadline.is_none() {
                self.frame_deadline = Some(Instant::now() + self.config.frame_timeout);
            }
        }
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            // Give back whatever a large frame made us allocate.
            self.buf = BytesMut::new();
        }
        Step::Wait
    }

    /// Whether reading stops now: for a timed pause (flood control), or
    /// while a package waits for the store.
    fn reading_paused(&self) -> bool {
        self.pause.is_some() || self.stalled.is_some()
    }

    /// The deadlines that apply now: the end of a timed pause, the login
    /// timeout (until logged in), and the frame timeout (while a frame is
    /// begun and reading is not paused).
    fn deadlines(&self) -> Deadlines {
        // Reading stops for a timed pause (flood control) or while a
        // package waits for the store; only the first has a deadline.
        let paused = self.reading_paused();
        Deadlines {
            pause: self.pause.as_ref().map(|p| p.until),
            login: self.user.is_none().then_some(self.login_deadline),
            frame: self.frame_deadline.filter(|_| !paused),
        }
    }

    /// Waits for what the loop reacts to next, looking in this order
    /// (first ready wins): shutdown, the queue (packages, or closed), the
    /// store (when a package is parked on it), the socket (unless reading
    /// is paused), the timer. Every source is cancel-safe, so nothing is
    /// lost when another one wins.
    ///
    /// One `poll_fn` rather than a `select!`: the macro keeps a future per
    /// branch, and this wait is the state an idle connection's task is
    /// in (the task is as large as this future plus the loop's own).
    async fn next_event(
        &mut self,
        mut stop: Pin<&mut WaitForCancellationFutureOwned>,
        stop_registered: &mut bool,
    ) -> Event {
        let paused = self.reading_paused();
        self.set_timer(self.deadlines().earliest());
        poll_fn(|cx| {
            // After its first poll the token's future keeps this task's
            // waker, so a cancel wakes it; from then on the flag suffices.
            if self.shutdown.is_cancelled()
                || (!*stop_registered && {
                    *stop_registered = true;
                    stop.as_mut().poll(cx).is_ready()
                })
            {
                return Poll::Ready(Event::Shutdown);
            }
            if let Poll::Ready(taken) = self.outbox.poll_ready(cx) {
                return Poll::Ready(match taken {
                    Taken::Packages => Event::Outbound,
                    Taken::Closed => Event::Killed,
                });
            }
            if let Some(stalled) = self.stalled.as_mut() {
                if let Poll::Ready(ready) = stalled.wait.as_mut().poll(cx) {
                    return Poll::Ready(Event::StoreReady(ready));
                }
            }
            if !paused {
                if let Poll::Ready(r) = Transport::poll_read_ready(&mut self.stream, cx) {
                    return Poll::Ready(Event::Readable(r));
                }
            }
            if let Some(timer) = self.timer.as_mut() {
                if timer.as_mut().poll(cx).is_ready() {
                    // Which deadline passed is worked out afresh: nothing
                    // the other sources wait on moves them.
                    return Poll::Ready(self.deadlines().passed(Instant::now()));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// What the loop does about `event`: the common ones are a step of
    /// their own, the rare ones deferred.
    fn on_event(&mut self, event: Event) -> Step {
        match event {
            Event::Outbound => Step::Outbound,
            Event::Readable(ready) => match self.read_input(ready) {
                Ok(step) => step,
                Err(close) => self.defer(Deferred::End(close)),
            },
            // The loop's head ends the pause.
            Event::Resume => Step::Wait,
            Event::Shutdown => self.defer(Deferred::Shutdown),
            Event::Killed => self.defer(Deferred::Killed),
            Event::StoreReady(ready) => self.defer(Deferred::StoreReady(ready)),
            Event::LoginTimeout => self.defer(Deferred::LoginTimeout),
            Event::FrameTimeout => self.defer(Deferred::FrameTimeout),
        }
    }

    /// Reads what the socket has.
    fn read_input(&mut self, ready: io::Result<()>) -> Result<Step, Close> {
        ready?;
        self.follow_reload();
        match self.stream.try_read(&mut self.buf) {
            Ok(Input::Data(_)) => Ok(Step::Wait),
            Ok(Input::Eof) => Err(Close::Eof),
            // Not a package (a WebSocket text message): said so in its
            // turn, and the connection stays.
            Ok(Input::Refused(why)) => {
                // Counted like a package, so that refusals cannot be had
                // faster than answers.
                self.rate.try_take();
                self.reply_error("protocol", why)?;
                Ok(Step::Flush)
            }
            Ok(Input::Fatal(why)) => Ok(self.defer(Deferred::Protocol(why))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Wait),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs the work left in `self.deferred`. `Err` ends the connection.
    async fn run_deferred(&mut self) -> Result<(), Close> {
        let Some(work) = self.deferred.take() else {
            return Ok(());
        };
        match *work {
            Deferred::Later(later) => {
                self.finish_later(later).await?;
                // As after any handled frame.
                tokio::task::coop::consume_budget().await;
                Ok(())
            }
            Deferred::CloseAfterReply(close) => self.close_after_reply(close).await,
            Deferred::Protocol(why) => self.close_with("protocol", why).await,
            Deferred::End(close) => Err(close),
            Deferred::Shutdown => self.goodbye().await,
            Deferred::Killed => self.killed().await,
            Deferred::StoreReady(ready) => self.store_ready(ready).await,
            Deferred::LoginTimeout => {
                let secs = self.config.login_timeout.as_secs_f64();
                self.close_with("login", format!("No login within {secs} s; closing."))
                    .await
            }
            Deferred::FrameTimeout => {
                let secs = self.config.frame_timeout.as_secs_f64();
                self.close_with(
                    "protocol",
                    format!("A frame was not completed within {secs} s; closing."),
                )
                .await
            }
        }
    }

    /// Runs what a package left for later, then flushes its replies; a
    /// failure's reply is let out before the connection ends.
    async fn finish_later(&mut self, later: Later) -> Result<(), Close> {
        match self.run_later(later).await {
            Ok(()) => self.flush_queue().await,
            Err(close) => self.close_after_reply(close).await,
        }
    }

    /// Lets out the reply explaining why the connection ends (within the
    /// shutdown timeout), then ends it.
    async fn close_after_reply(&mut self, close: Close) -> Result<(), Close> {
        let _ = timeout(self.config.shutdown_timeout, self.flush_queue()).await;
        Err(close)
    }

    /// Handles the package that was parked on the store, now that the
    /// store is ready for it.
    async fn store_ready(&mut self, ready: StoreReady) -> Result<(), Close> {
        let Some(stalled) = self.stalled.take() else {
            return Ok(());
        };
        let waited = Instant::now() - stalled.since;
        self.frame_deadline = self.frame_deadline.map(|d| d + waited);
        let handled = match ready {
            StoreReady::Slot(slot) => self.handle_package(stalled.package, Some(slot)),
            StoreReady::Barrier => self.handle_package(stalled.package, None),
            StoreReady::Closed => self.store_unavailable().map(|()| None),
        };
        match handled {
            Ok(Some(later)) => self.finish_later(later).await,
            Ok(None) => self.flush_queue().await,
            Err(close) => self.close_after_reply(close).await,
        }
    }

    /// Picks up limits a configuration reload put in force. The rate
    /// applies from the next package (the bucket starts full at the new
    /// burst); the frame limit and queue length stay as this connection
    /// was set up with (they size state already built).
    fn follow_reload(&mut self) {
        if let Some(config) = self.hub.config_if_changed(&self.config) {
            if (config.rate_per_sec, config.rate_burst)
                != (self.config.rate_per_sec, self.config.rate_burst)
            {
                self.rate = TokenBucket::new(config.rate_per_sec, config.rate_burst);
            }
            self.config = config;
        }
    }

    /// The user's current name, for log lines (every line about a
    /// connection names its peer and, once logged in, its user).
    fn username(&self) -> Option<String> {
        self.user.and_then(|id| self.hub.username(id))
    }

    /// Points the one timer at `deadline`, or drops it when there is none.
    fn set_timer(&mut self, deadline: Option<Instant>) {
        match (deadline, &mut self.timer) {
            (None, _) => self.timer = None,
            (Some(d), Some(t)) if t.deadline() == d => {}
            (Some(d), Some(t)) => t.as_mut().reset(d),
            (Some(d), None) => self.timer = Some(Box::pin(sleep_until(d))),
        }
    }

    /// Stops reading until `until` (or extends a pause already running).
    fn pause_until(&mut self, reason: PauseReason, until: Instant) {
        match &mut self.pause {
            Some(p) => p.until = p.until.max(until),
            None => {
                if reason == PauseReason::Rate {
                    metrics::throttled();
                }
                self.pause = Some(Box::new(Pause {
                    reason,
                    since: Instant::now(),
                    until,
                }));
            }
        }
    }

    /// Handles one complete frame body; what must wait on the store or the
    /// hasher is returned, to be run by [`Connection::run_later`].
    fn handle_frame(&mut self, body: &[u8]) -> Result<Option<Later>, Close> {
        let package = match codec::decode_body::<ClientPackage>(body, self.config.max_package_bytes)
        {
            Ok(p) => p,
            Err(e) if e.is_fatal() => {
                self.reply_error("protocol", e.to_string())?;
                return Err(Close::Fatal(e.to_string()));
            }
            Err(e) => return self.reply_error("protocol", e.to_string()).map(|()| None),
        };
        if self.user.is_none() {
            return self.handle_package(package, None);
        }
        // A message (and a command that sends one: `direct`, `random`)
        // takes a place in the store's queue first, or is parked until
        // there is one; a ping is parked until the writer has
        // acknowledged everything queued before it.
        let journal = self.hub.journal();
        let wants_slot = match &package {
            ClientPackage::Message(_) => true,
            ClientPackage::Command(c) => commands::needs_slot(c),
        };
        if wants_slot && journal.failing() {
            return self.store_unavailable().map(|()| None);
        }
        let wait: Pin<Box<dyn Future<Output = StoreReady> + Send>> = match &package {
            _ if wants_slot => match journal.try_slot() {
                Ok(slot) => return self.handle_package(package, Some(slot)),
                Err(SlotError::Closed) => return self.store_unavailable().map(|()| None),
                Err(SlotError::Full) => {
                    let journal = journal.clone();
                    Box::pin(async move {
                        match journal.slot().await {
                            Ok(slot) => StoreReady::Slot(slot),
                            Err(_) => StoreReady::Closed,
                        }
                    })
                }
            },
            ClientPackage::Command(c) if commands::waits_for_store(c) => {
                let journal = journal.clone();
                Box::pin(async move {
                    match journal.barrier().await {
                        Ok(()) => StoreReady::Barrier,
                        Err(_) => StoreReady::Closed,
                    }
                })
            }
            _ => return self.handle_package(package, None),
        };
        // Boxed: rare, and every idle connection would carry its size.
        self.stalled = Some(Box::new(Stalled {
            package,
            since: Instant::now(),
            wait,
        }));
        Ok(None)
    }

    /// The store cannot take messages (its writer stopped, or the store
    /// refuses its commits): nothing more can be acknowledged, so say so
    /// rather than accept messages silently.
    fn store_unavailable(&mut self) -> Result<(), Close> {
        self.reply_error(
            "server",
            "Messages cannot be stored right now; nothing was sent.",
        )
    }

    /// Handles a decoded package; `slot` is a store slot if it wanted one.
    ///
    /// Messages and most commands are handled here and now; a login and
    /// the commands that wait on the store or the hasher come back as
    /// [`Later`] work. Keeping this synchronous keeps those waits out of
    /// the connection task's own state: a task is as large as its largest
    /// state, and every idle connection would otherwise carry them.
    fn handle_package(
        &mut self,
        package: ClientPackage,
        slot: Option<Slot>,
    ) -> Result<Option<Later>, Close> {
        match (package, self.user) {
            (ClientPackage::Command(c), None) if c.command == "login" => {
                match parse_params::<LoginParams>("login", c.parameters) {
                    Ok(p) => Ok(Some(Later::Login(p))),
                    Err(m) => self.reply_error("protocol", m).map(|()| None),
                }
            }
            (_, None) => self
                .reply_error(
                    "login",
                    "Log in first: answer the login request with the login command.",
                )
                .map(|()| None),
            (ClientPackage::Message(m), Some(id)) => {
                let result = match slot {
                    Some(slot) => self.hub.message_with(id, m.message, m.attachments, slot),
                    None => return self.store_unavailable().map(|()| None),
                };
                match result {
                    Ok(()) => {
                        metrics::message();
                        Ok(None)
                    }
                    Err(e) => self.reply_error("message", e.0).map(|()| None),
                }
            }
            (ClientPackage::Command(c), Some(id)) => {
                let name = c.command.clone();
                // `direct` and `random` send a message: counted as one
                // when accepted, and as a delivery when its recipient is
                // online.
                let sends = commands::needs_slot(&c);
                let dispatched = commands::dispatch(&self.hub, id, c, slot);
                if sends {
                    match &dispatched {
                        Ok(Dispatched::Offline(_)) => metrics::message(),
                        Ok(_) => {
                            metrics::message();
                            metrics::deliveries(1);
                        }
                        Err(_) => {}
                    }
                }
                match dispatched {
                    Ok(Dispatched::Offline(message)) => Ok(Some(Later::Offline {
                        id,
                        message: Box::new(message),
                    })),
                    Ok(Dispatched::Cluster { command, event }) => {
                        Ok(Some(Later::Cluster(Box::new((command, event)))))
                    }
                    Ok(Dispatched::Done(steps)) if steps.is_empty() => Ok(None),
                    Ok(Dispatched::Done(steps)) => Ok(Some(Later::Persist { name, steps })),
                    Ok(Dispatched::Accounts {
                        command,
                        parameters,
                    }) => Ok(Some(Later::Accounts {
                        id,
                        name,
                        command,
                        parameters,
                    })),
                    Ok(Dispatched::Memory {
                        command,
                        parameters,
                    }) => Ok(Some(Later::Memory {
                        id,
                        command,
                        parameters,
                    })),
                    Err(e) => self.command_failed(e).map(|()| None),
                }
            }
        }
    }

    /// Runs what a package left for later (see [`Later`]).
    async fn run_later(&mut self, later: Later) -> Result<(), Close> {
        let result = match later {
            Later::Login(p) => return self.login(p).await,
            Later::Persist { name, steps } => self.persist(&name, steps).await?,
            Later::Memory {
                id,
                command,
                parameters,
            } => {
                let hub = self.hub.clone();
                self.serving_while(async move {
                    commands::run_memory(&hub, id, command, parameters).await
                })
                .await?
            }
            Later::Offline { id, message } => self.direct_offline(id, *message).await?,
            Later::Cluster(change) => {
                let (command, event) = *change;
                let Some(cluster) = self.hub.cluster().cloned() else {
                    return Ok(());
                };
                let outcome = self
                    .serving_while(async move { cluster.propose(command, event).await })
                    .await?;
                match outcome {
                    Ok(crate::cluster::replica::Applied::Steps(steps)) => {
                        self.persist(command, steps).await?
                    }
                    Ok(crate::cluster::replica::Applied::User(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Later::Accounts {
                id,
                name,
                command,
                parameters,
            } => {
                self.accounts_command(id, &name, command, parameters)
                    .await?
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.command_failed(e),
        }
    }

    /// Answers a failed command with its error package.
    fn command_failed(&mut self, e: commands::CommandError) -> Result<(), Close> {
        let (kind, message) = e.to_error();
        self.reply(&ServerPackage::error(kind, message))
    }

    /// Runs a command that needs the accounts service (store, hasher),
    /// writing this connection's queue meanwhile, then stores what it
    /// changed before its answer leaves.
    async fn accounts_command(
        &mut self,
        id: UserId,
        name: &str,
        command: &'static str,
        parameters: Option<serde_json::Value>,
    ) -> Result<Result<(), commands::CommandError>, Close> {
        let (hub, addr) = (self.hub.clone(), self.peer.ip());
        let run = async move {
            let accounts = Arc::clone(hub.accounts());
            accounts
                .run_command(&hub, id, command, parameters, addr)
                .await
        };
        let answer = match self.serving_while(run).await? {
            Ok(answer) => answer,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.persist(name, answer.persist).await? {
            return Ok(Err(e));
        }
        if let Some(reply) = answer.reply {
            self.reply(&reply)?;
        }
        Ok(Ok(()))
    }

    /// Writes what a command changed to the store before its answer
    /// leaves: the answer is queued already, and this connection's queue is
    /// not written until the store has committed.
    async fn persist(
        &mut self,
        command: &str,
        steps: Vec<Persist>,
    ) -> Result<Result<(), commands::CommandError>, Close> {
        if steps.is_empty() {
            return Ok(Ok(()));
        }
        let store = self.hub.persist_steps(steps);
        let stored = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return Err(self.stopped().await),
            _ = poll_fn(|cx| self.outbox.poll_closed(cx)) => return Err(self.stopped().await),
            stored = store => stored,
        };
        Ok(stored.map_err(|message| commands::CommandError::Failed {
            command: commands::find(command).map_or("server", |c| c.name),
            message,
        }))
    }

    /// Waits for `work` (a store call or a password hash) while still
    /// writing this connection's queue, so that broadcasts to it do not pile
    /// up meanwhile. The socket is not read: packages stay in order.
    async fn serving_while<R>(&mut self, work: impl Future<Output = R>) -> Result<R, Close> {
        tokio::pin!(work);
        loop {
            let event = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => None,
                taken = poll_fn(|cx| self.outbox.poll_ready(cx)) => Some(taken),
                done = &mut work => return Ok(done),
            };
            match event {
                Some(Taken::Packages) => self.flush_queue().await?,
                None | Some(Taken::Closed) => return Err(self.stopped().await),
            }
        }
    }

    /// The server shut down, or the hub dropped this connection, while it
    /// waited on the store or the hasher: says goodbye at shutdown, or
    /// closes as [`Connection::killed`] does.
    async fn stopped(&mut self) -> Close {
        if self.shutdown.is_cancelled() {
            let _ = self.goodbye().await;
            return Close::Shutdown;
        }
        match self.killed().await {
            Err(close) => close,
            Ok(()) => Close::Killed,
        }
    }

    async fn login(&mut self, p: LoginParams) -> Result<(), Close> {
        let LoginParams { username, password } = p;
        let accounts = Arc::clone(self.hub.accounts());
        let addr = self.peer.ip();
        let name = username.clone();
        let checked = self
            .serving_while(async move { accounts.authenticate(&name, password, addr).await })
            .await?;
        let (name, account) = match checked {
            // The account's own spelling is what others see.
            Ok(Some(account)) => (account.name, Some(account.id)),
            Ok(None) => (username, None),
            Err(refusal) => {
                metrics::login_failed();
                let session = if refusal.password_required {
                    Session::password_required(refusal.reason)
                } else {
                    Session::refused(refusal.reason)
                };
                self.reply(&ServerPackage::Session(session))?;
                return self.reply(&ServerPackage::Request(Request::login()));
            }
        };
        // An account's ignore list comes back with it, before any message
        // can reach the new session.
        let mut setup = LoginSetup {
            ignores: Vec::new(),
            backlog: account.is_some(),
            unread: None,
        };
        if let Some(account) = account {
            let accounts = Arc::clone(self.hub.accounts());
            let read = self
                .serving_while(async move { accounts.db(move |s| s.ignores(account)).await })
                .await?;
            match read {
                Ok(ignores) => setup.ignores = ignores,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read an ignore list");
                    let reason = format!("The server's database failed ({e}); try again later.");
                    self.reply(&ServerPackage::Session(Session::refused(reason)))?;
                    return self.reply(&ServerPackage::Request(Request::login()));
                }
            }
        }
        // And its unread counts, for its session: read on the store's read
        // connections; a failure only leaves them out.
        if let Some(account) = account {
            let (hub, cap) = (self.hub.clone(), self.config.count_cap);
            let read = async move { hub.read(move |s| s.unread(account, cap)).await };
            match self.serving_while(read).await? {
                Ok(unread) => {
                    setup.unread = Some(
                        unread
                            .into_iter()
                            .map(|u| UnreadCount {
                                channel: u.channel,
                                count: u.count,
                                last_id: u.last_id,
                            })
                            .collect(),
                    )
                }
                Err(e) => {
                    tracing::error!(peer = %self.peer, error = %e, "cannot read unread counts")
                }
            }
        }
        let logged_in = match self.hub.cluster().cloned() {
            None => self
                .hub
                .login_with(&name, account, self.outbox.clone(), setup),
            Some(cluster) => {
                let (name, outbox) = (name.clone(), self.outbox.clone());
                self.serving_while(async move { cluster.login(name, account, outbox, setup).await })
                    .await?
            }
        };
        match logged_in {
            Ok(id) => {
                metrics::login();
                self.user = Some(id);
                tracing::debug!(peer = %self.peer, user = %name, account = account.is_some(), "logged in");
                match account {
                    Some(account) => Box::pin(self.deliver_backlog(id, account)).await,
                    None => Ok(()),
                }
            }
            Err(e) => {
                metrics::login_failed();
                self.reply(&ServerPackage::Session(Session::refused(e.0)))?;
                self.reply(&ServerPackage::Request(Request::login()))
            }
        }
    }

    /// Finishes a direct message to a name that is not online: asks the
    /// store for its account (and that account's ignore list) while this
    /// connection's queue is written, then hands the message to the hub.
    async fn direct_offline(
        &mut self,
        id: UserId,
        message: OfflineDirect,
    ) -> Result<Result<(), commands::CommandError>, Close> {
        let accounts = Arc::clone(self.hub.accounts());
        let key = message.key.clone();
        let cap = self.config.max_backlog;
        let found = self
            .serving_while(async move {
                accounts
                    .db(move |s| {
                        let Some(a) = s.account_by_key(&key)? else {
                            return Ok(None);
                        };
                        let ignores = s.ignores(a.id)?.into_iter().map(|(k, _)| k).collect();
                        let waiting = s.direct_waiting(a.id, cap)?;
                        Ok(Some(OfflineRecipient {
                            account: a.id,
                            name: a.name,
                            ignores,
                            waiting,
                        }))
                    })
                    .await
            })
            .await?;
        let failed = |message: String| commands::CommandError::Failed {
            command: "direct",
            message,
        };
        Ok(match found {
            Ok(recipient) => self
                .hub
                .direct_offline(id, message, recipient)
                .map_err(|e| failed(e.0)),
            Err(e) => {
                tracing::error!(error = %e, "cannot look up a direct message's recipient");
                Err(failed(format!(
                    "The server's database failed ({e}); nothing was sent."
                )))
            }
        })
    }

    /// Delivers the direct messages kept for `account` while it was
    /// offline, oldest first, each marked `"offline": true`: a page of at
    /// most `backlog_page` is read from the store and queued, written to
    /// the socket, and only then recorded as delivered (the account's
    /// marker), so a connection or a server that dies in the middle leaves
    /// the rest, and at worst that page again, for the next login. New
    /// direct messages join the backlog until [`Hub::backlog_done`] finds
    /// it empty, so none overtakes an older one.
    async fn deliver_backlog(&mut self, id: UserId, account: AccountId) -> Result<(), Close> {
        let accounts = Arc::clone(self.hub.accounts());
        let a = Arc::clone(&accounts);
        let marker = self
            .serving_while(async move { a.db(move |s| s.direct_delivered(account)).await })
            .await?;
        // Set after an empty page that found messages joining the backlog.
        let mut caught_up = false;
        let mut cursor: MessageId = match marker {
            Ok(marker) => marker,
            Err(e) => return self.backlog_failed(id, &e.to_string()),
        };
        loop {
            // What was accepted for this account before now is committed
            // after this: the store has all of the backlog up to here.
            let journal = self.hub.journal().clone();
            if self.serving_while(journal.barrier()).await?.is_err() {
                return self.backlog_failed(id, "the store's writer has stopped");
            }
            let page = self.config.backlog_page.max(1);
            let a = Arc::clone(&accounts);
            let read = self
                .serving_while(async move {
                    a.db(move |s| s.direct_backlog(account, cursor, page)).await
                })
                .await?;
            let messages = match read {
                Ok(m) => m,
                Err(e) => return self.backlog_failed(id, &e.to_string()),
            };
            if messages.is_empty() {
                match self.hub.backlog_done(id, cursor) {
                    // One joined the backlog meanwhile: the barrier at the
                    // top of the loop makes sure it is stored, then it is read.
                    Some(false) if !caught_up => {
                        caught_up = true;
                        continue;
                    }
                    Some(false) => {
                        // Stored after a barrier and still not in the
                        // account's inbox: the account was deleted meanwhile
                        // (its messages lost the link). Stop waiting for them.
                        tracing::warn!("direct messages left out of a deleted account's backlog");
                        self.hub.backlog_done(id, MessageId::MAX);
                        return Ok(());
                    }
                    Some(true) | None => return Ok(()),
                }
            }
            caught_up = false;
            let ignored = self.hub.ignored_keys(id);
            let kept_up_to = self.hub.backlog_kept_up_to(id).unwrap_or(MessageId::MAX);
            for m in messages {
                cursor = m.id;
                if ignored.contains(&fold_name(&m.sender)) {
                    continue;
                }
                let package = ServerPackage::Message(ChatMessage {
                    message: m.text,
                    username: m.sender,
                    channel: None,
                    to: m.direct.map(|d| d.recipient),
                    timestamp: m.timestamp,
                    id: m.id,
                    offline: (m.id <= kept_up_to).then_some(true),
                    attachments: crate::server::chat::stored_attachments(m.attachments.as_deref()),
                });
                self.queue_waiting(&package).await?;
            }
            self.flush_queue().await?;
            let a = Arc::clone(&accounts);
            let up_to = cursor;
            let marked = self
                .serving_while(async move {
                    a.db(move |s| s.set_direct_delivered(account, up_to)).await
                })
                .await?;
            if let Err(e) = marked {
                // Delivered but not recorded: they come again next time.
                tracing::error!(error = %e, "cannot record delivered direct messages");
            }
        }
    }

    /// The backlog cannot be read: the user is told, and gets direct
    /// messages live from now on; the backlog stays for the next login.
    fn backlog_failed(&mut self, id: UserId, why: &str) -> Result<(), Close> {
        tracing::error!(error = %why, "cannot deliver kept direct messages");
        self.hub.backlog_done(id, MessageId::MAX);
        self.reply_error(
            "direct",
            format!("The direct messages kept for you cannot be read now ({why}); they will come after your next login."),
        )
    }

    /// Queues a package of this connection's own, first writing out what
    /// is queued if the queue has no room for it (an empty queue takes any
    /// one package).
    async fn queue_waiting(&mut self, package: &ServerPackage) -> Result<(), Close> {
        let bytes = codec::encode_packed(
            package,
            self.config.max_package_bytes,
            self.config.compression_level,
            self.config.compress_min_bytes,
        )
        .map_err(|e| Close::Fatal(format!("cannot encode reply: {e}")))?;
        match self.outbox.push(bytes.clone()) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(self.stopped().await),
            Err(_) => {
                self.flush_queue().await?;
                self.outbox
                    .push(bytes)
                    .map_err(|e| Close::Fatal(format!("cannot queue a reply: {e}")))
            }
        }
    }

    /// The hub dropped this connection: a slow consumer closes at once; a
    /// user replaced by a new login has its queue (ending with the `login`
    /// error saying why) written out first.
    async fn killed(&mut self) -> Result<(), Close> {
        if !self.outbox.is_finishing() {
            return Err(Close::Killed);
        }
        let limit = self.config.shutdown_timeout;
        let _ = Box::pin(timeout(limit, self.flush_queue())).await;
        let _ = Box::pin(timeout(limit, transport::shutdown(&mut self.stream))).await;
        Err(Close::Replaced)
    }

    /// Queues a package for this connection.
    fn reply(&mut self, package: &ServerPackage) -> Result<(), Close> {
        let bytes = codec::encode_packed(
            package,
            self.config.max_package_bytes,
            self.config.compression_level,
            self.config.compress_min_bytes,
        )
        .map_err(|e| Close::Fatal(format!("cannot encode reply: {e}")))?;
        self.outbox
            .push(bytes)
            .map_err(|e| Close::Fatal(format!("cannot queue a reply: {e}")))
    }

    fn reply_error(&mut self, error_type: &str, message: impl Into<String>) -> Result<(), Close> {
        self.reply(&ServerPackage::error(error_type, message))
    }

    /// Writes everything queued, without waiting for more, in as few
    /// syscalls as possible (one per batch while the socket has room).
    async fn flush_queue(&mut self) -> Result<(), Close> {
        let mut deadline = None;
        loop {
            match self.write_some()? {
                Progress::Idle if self.stream.has_pending_output() => {
                    // What the transport took must leave too, within the
                    // same write timeout as a stalled write.
                    let limit = self.config.write_timeout;
                    let until = *deadline.get_or_insert_with(|| Instant::now() + limit);
                    return Box::pin(self.wait_flushed(until, limit)).await;
                }
                Progress::Idle => return Ok(()),
                Progress::Wrote => {
                    if self.unsent.is_none() {
                        deadline = None;
                    }
                }
                // The socket pushes back: only now arm the write timeout
                // (arming a timer per write was a timer-wheel insert and
                // removal per batch). Boxed: a task's size is that of its
                // largest state, and this wait (a timer, two wakers) would
                // otherwise be carried by every idle connection.
                Progress::Blocked => {
                    let limit = self.config.write_timeout;
                    let until = *deadline.get_or_insert_with(|| Instant::now() + limit);
                    Box::pin(self.wait_writable(until, limit)).await?;
                }
            }
        }
    }

    /// One write: the rest of an earlier one if there is one, else the
    /// next batch from the queue (a lone package as it is, several copied
    /// together into the thread's staging buffer).
    fn write_some(&mut self) -> Result<Progress, Close> {
        if let Some(rest) = self.unsent.take() {
            return self.write_bytes(*rest);
        }
        STAGING.with(|staging| {
            let mut staging = staging.borrow_mut();
            staging.clear();
            let progress = match self.outbox.take(&mut staging, MAX_WRITE_BATCH) {
                Err(_closed) => return Err(Close::Killed),
                Ok(None) => Ok(Progress::Idle),
                Ok(Some(Take::One(bytes))) => self.write_bytes(bytes),
                Ok(Some(Take::Copied)) => match Transport::try_write(&mut self.stream, &staging) {
                    Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    Ok(n) => {
                        if let Some(rest) = staging.get(n..).filter(|r| !r.is_empty()) {
                            self.unsent = Some(Box::new(Bytes::copy_from_slice(rest)));
                        }
                        Ok(Progress::Wrote)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.unsent = Some(Box::new(Bytes::copy_from_slice(&staging)));
                        Ok(Progress::Blocked)
                    }
                    Err(e) => Err(e.into()),
                },
            };
            if staging.capacity() > MAX_WRITE_BATCH * 4 {
                // A huge package passed through: do not keep its size.
                *staging = Vec::with_capacity(MAX_WRITE_BATCH * 2);
            }
            progress
        })
    }

    /// Writes what it can of `bytes`, keeping the rest in `unsent`.
    fn write_bytes(&mut self, mut bytes: Bytes) -> Result<Progress, Close> {
        match Transport::try_write(&mut self.stream, &bytes) {
            Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Ok(n) => {
                if n < bytes.len() {
                    bytes.advance(n);
                    self.unsent = Some(Box::new(bytes));
                }
                Ok(Progress::Wrote)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.unsent = Some(Box::new(bytes));
                Ok(Progress::Blocked)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the socket takes more, the connection is dropped, or
    /// the server shuts down (unless this is the goodbye, which the caller
    /// bounds with the shutdown timeout).
    async fn wait_writable(&mut self, until: Instant, limit: Duration) -> Result<(), Close> {
        let goodbye = self.shutdown.is_cancelled();
        let wait = async {
            tokio::select! {
                biased;
                _ = poll_fn(|cx| self.outbox.poll_closed(cx)) => Err(Close::Killed),
                _ = self.shutdown.cancelled(), if !goodbye => Err(Close::ShutdownMidWrite),
                r = poll_fn(|cx| Transport::poll_write_ready(&mut self.stream, cx)) => r.map_err(Close::Io),
            }
        };
        match timeout_at(until, wait).await {
            Ok(r) => r,
            Err(_) => Err(Close::WriteStalled(limit)),
        }
    }

    /// Waits until the transport has pushed out what it took, as
    /// [`Connection::wait_writable`] waits for room.
    async fn wait_flushed(&mut self, until: Instant, limit: Duration) -> Result<(), Close> {
        let goodbye = self.shutdown.is_cancelled();
        let wait = async {
            tokio::select! {
                biased;
                _ = poll_fn(|cx| self.outbox.poll_closed(cx)) => Err(Close::Killed),
                _ = self.shutdown.cancelled(), if !goodbye => Err(Close::ShutdownMidWrite),
                r = poll_fn(|cx| self.stream.poll_flush(cx)) => r.map_err(Close::Io),
            }
        };
        match timeout_at(until, wait).await {
            Ok(r) => r,
            Err(_) => Err(Close::WriteStalled(limit)),
        }
    }

    /// Sends an error, gives it a moment to leave, and ends the connection.
    async fn close_with(&mut self, error_type: &str, message: String) -> Result<(), Close> {
        let reason = message.clone();
        // The queue may be full if this is a slow consumer; the error still
        // goes last, after what is queued, so order is kept.
        let _ = self.reply_error(error_type, message);
        let limit = self.config.shutdown_timeout;
        // Boxed, like every wait on the way out: see `flush_queue`.
        let _ = Box::pin(timeout(limit, self.flush_queue())).await;
        Err(Close::Fatal(reason))
    }

    /// Writes what is queued, then `server_shutdown`, within the shutdown timeout.
    async fn goodbye(&mut self) -> Result<(), Close> {
        let _ = self.reply(&ServerPackage::notification(
            Notification::ServerShutdown {},
        ));
        let limit = self.config.shutdown_timeout;
        let _ = Box::pin(timeout(limit, self.flush_queue())).await;
        let _ = Box::pin(timeout(limit, transport::shutdown(&mut self.stream))).await;
        Err(Close::Shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::chat::Hub;
    use tokio::net::TcpListener;

    /// Every idle connection carries its task, and tokio rounds a task to
    /// 128 bytes. Around this future the task holds the admission guard
    /// (48 bytes), the task tracker's token and tokio's header, core and
    /// trailer (112): at 608 bytes it still fits the 768-byte class (see
    /// BENCHMARKS.md, "Idle memory now"). A field or a local kept across
    /// an await that breaks this costs every connection 128 bytes.
    #[tokio::test]
    async fn a_connection_future_fits_its_task_class() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let hub = Hub::new(Arc::new(Config::default()));
        let future = serve(stream, peer, hub, CancellationToken::new());
        let size = std::mem::size_of_val(&future);
        assert!(size <= 608, "the connection future is {size} bytes");
        drop((future, client));
    }
}

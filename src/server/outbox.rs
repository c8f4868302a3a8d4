//! A connection's outbound queue: encoded packages waiting to be written
//! to its socket, bounded in packages and in bytes, plus the signal that
//! tells the connection to close. It also reads the
//! [broadcast log](super::broadcast) of the channel its user is in, and
//! hands the two out as one stream in the order the hub produced them.
//!
//! One [`Outbox`] is shared by the chat state (which pushes the user's own
//! packages into it under the hub lock, and points it at the log of the
//! channel the user is in), the store writer (its acknowledgements) and
//! the connection's task (which takes what is waiting, up to a batch, and
//! writes it). It is a `VecDeque` behind a short per-connection mutex
//! rather than a `tokio::sync::mpsc` channel: a push is one uncontended
//! lock, one slot and a wake-up only when the queue goes from empty to
//! non-empty while the task waits, and the task takes a whole batch with
//! one lock instead of one atomic hand-over per package. An idle queue holds no buffer blocks (mpsc kept a
//! block of 32 slots, about 1 KiB, per channel), and the byte count that
//! the byte bound needs is kept beside the queue for free.
//!
//! Channel traffic does not come through [`Outbox::push`]: the hub appends
//! it once to the channel's log, and [`Outbox::take`] copies it from
//! there. A private package is tagged with the log's head when it is
//! queued, and goes out after the log entries before that tag.
//!
//! Bounds: a push is refused when the queue holds `max_packages` packages,
//! or when it is not empty and the package would take it past `max_bytes`.
//! A single package is always taken by an empty queue, so a package larger
//! than the byte bound (possible only with a small bound) still reaches a
//! client that reads; the queue then holds at most `max_bytes` plus one
//! package. Bytes the task has taken out and is writing no longer count.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::broadcast::ChannelLog;
use super::chat::UserId;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue holds its maximum number of packages.
    #[error("outbound queue full ({0} packages)")]
    Packages(usize),
    /// The package would take the queue past its byte bound.
    #[error("outbound queue full ({0} bytes)")]
    Bytes(usize),
    /// The connection is closing or gone.
    #[error("connection closed")]
    Closed,
}

/// The outbox was closed: the connection is to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbox closed")]
pub struct Closed;

/// What [`Outbox::poll_ready`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Packages are queued.
    Packages,
    /// The outbox was closed: the connection is to end.
    Closed,
}

/// What one [`Outbox::take`] handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// The only package queued.
    One(Bytes),
    /// Several packages, copied in order to the end of the staging buffer.
    Copied,
}

/// A private package, and where it stands against the channel's log.
struct Queued {
    /// The log's head when it was queued: the log entries before it go
    /// out first.
    after: u64,
    /// The encoded package.
    bytes: Bytes,
}

/// The channel log this queue reads, and its place there.
struct Sub {
    /// The channel's log.
    log: ChannelLog,
    /// This queue's reader slot in it.
    slot: u32,
}

/// The queue and its state, behind the mutex.
#[derive(Default)]
struct Inner {
    /// Packages in order.
    items: VecDeque<Queued>,
    /// Sum of the lengths in `items`.
    bytes: usize,
    /// The connection task, while it waits for packages or for a close.
    waker: Option<Waker>,
    /// The log of the user's channel, once it is in one.
    sub: Option<Sub>,
    /// Set by [`Outbox::close`]; nothing is taken in after it.
    closed: bool,
    /// Set by [`Outbox::finish`]: nothing is taken in, what is queued is
    /// still written, and then the connection ends.
    finishing: bool,
}

/// Shared between the hub and the connection task.
struct Shared {
    /// Queue state.
    inner: Mutex<Inner>,
    /// Most packages queued at once.
    max_packages: usize,
    /// Most bytes queued at once (see the module docs for the one exception).
    max_bytes: usize,
    /// Set for a user of another cluster node: pushes are taken and
    /// dropped, since that node delivers to its own users.
    discard: bool,
}

/// A cloneable handle on one connection's outbound queue.
#[derive(Clone)]
pub struct Outbox {
    /// The one queue.
    shared: Arc<Shared>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Outbox")
            .field("packages", &inner.items.len())
            .field("bytes", &inner.bytes)
            .field("subscribed", &inner.sub.is_some())
            .field("closed", &inner.closed)
            .finish()
    }
}

impl Outbox {
    /// An empty, open queue with the given bounds (each at least 1).
    pub fn new(max_packages: usize, max_bytes: usize) -> Self {
        Outbox {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::default()),
                max_packages: max_packages.max(1),
                max_bytes: max_bytes.max(1),
                discard: false,
            }),
        }
    }

    /// The stand-in queue of a user logged in on another cluster node:
    /// every push succeeds and is dropped (the user's own node delivers
    /// to them), so the chat state treats local and remote users alike.
    pub fn remote() -> Self {
        Outbox {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::default()),
                max_packages: 1,
                max_bytes: 1,
                discard: true,
            }),
        }
    }

    /// Whether this is a [`Outbox::remote`] stand-in.
    pub fn is_remote(&self) -> bool {
        self.shared.discard
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding this lock; if something did, the
        // queue is still a valid queue.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `bytes` behind everything queued before, never waiting.
    /// Wakes the connection task if it was waiting for work.
    pub fn push(&self, bytes: Bytes) -> Result<(), PushError> {
        if self.shared.discard {
            return Ok(());
        }
        let waker = {
            let mut inner = self.lock();
            if inner.closed || inner.finishing {
                return Err(PushError::Closed);
            }
            if inner.items.len() >= self.shared.max_packages {
                return Err(PushError::Packages(self.shared.max_packages));
            }
            if !inner.items.is_empty() && inner.bytes + bytes.len() > self.shared.max_bytes {
                return Err(PushError::Bytes(self.shared.max_bytes));
            }
            inner.bytes += bytes.len();
            let after = inner.sub.as_ref().map_or(0, |s| s.log.head());
            inner.items.push_back(Queued { after, bytes });
            // A non-empty queue already woke the task (or the task is
            // running and will look again before it sleeps).
            if inner.items.len() == 1 {
                inner.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Queues a package from outside the hub (the store writer's
    /// acknowledgements): a full queue makes its owner a slow consumer,
    /// dropped as the hub drops one (closed, so its connection ends and
    /// leaves the hub); a closed queue means the owner has gone.
    pub(crate) fn offer(&self, bytes: Bytes) {
        match self.push(bytes) {
            Ok(()) | Err(PushError::Closed) => {}
            Err(why) => {
                tracing::warn!(reason = %why, "disconnecting slow consumer (store acknowledgement)");
                self.close();
            }
        }
    }

    /// Closes the queue: drops what is queued, refuses further pushes and
    /// wakes the connection task, which then ends. Idempotent. A queue
    /// that is [finishing](Self::finish) is left to finish: its last
    /// packages (the reason it ends) still go out.
    pub fn close(&self) {
        let (items, waker) = {
            let mut inner = self.lock();
            if inner.finishing {
                return;
            }
            inner.closed = true;
            inner.bytes = 0;
            if let Some(sub) = inner.sub.take() {
                sub.log.lock().detach(sub.slot);
            }
            (std::mem::take(&mut inner.items), inner.waker.take())
        };
        // Dropped outside the lock: freeing the last clone of a package is
        // the expensive part.
        drop(items);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Ends the connection gracefully: further pushes are refused, what is
    /// queued is still written, and then [`poll_ready`](Self::poll_ready)
    /// reports the outbox closed. Used when a new login takes the user
    /// over: the old connection gets the `login` error saying why before
    /// it closes. Idempotent.
    pub fn finish(&self) {
        let waker = {
            let mut inner = self.lock();
            if inner.closed {
                return;
            }
            // What the channel said so far is still written; nothing after.
            carry_over(&mut inner);
            inner.finishing = true;
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether [`finish`](Self::finish) was called.
    pub fn is_finishing(&self) -> bool {
        self.lock().finishing
    }

    /// Private packages and bytes queued now (channel entries not yet
    /// read are the log's).
    pub fn queued(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.items.len(), inner.bytes)
    }

    /// Takes the oldest packages for one write, private ones and the
    /// channel log's merged in order: a lone package as it is (no copy),
    /// or as many as fit in `max_bytes` (always at least one) appended to
    /// `staging`, in order. `Ok(None)` when nothing is queued; `Err` once
    /// closed.
    ///
    /// Copying under the lock keeps the connection from holding a batch
    /// of its own between writes: a push waits at most for one copy of
    /// `max_bytes`, and nothing but the queue exists per connection.
    pub fn take(&self, staging: &mut Vec<u8>, max_bytes: usize) -> Result<Option<Take>, Closed> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.closed {
            return Err(Closed);
        }
        let mut log = inner.sub.as_ref().map(|s| (s.log.lock(), s.slot));
        let start = staging.len();
        // The first package, held until a second one comes (a lone one is
        // written as it is).
        let mut one: Option<Bytes> = None;
        let mut count = 0;
        let mut taken = 0;
        loop {
            let logged = log
                .as_mut()
                .and_then(|(l, slot)| l.peek(*slot).map(|(seq, _)| seq));
            // A private package goes first once no log entry precedes it.
            let private_first = match (inner.items.front(), logged) {
                (Some(q), Some(seq)) => q.after <= seq,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            // A second package is coming: the first joins the batch.
            if let Some(first) = one.take() {
                staging.extend_from_slice(&first);
            }
            match (private_first, &mut log) {
                (false, Some((l, slot))) if count > 0 => {
                    let before = inner.items.front().map_or(u64::MAX, |q| q.after);
                    let room = max_bytes.saturating_sub(taken);
                    let (n, copied) = l.copy_run(*slot, before, staging, room);
                    if n == 0 {
                        break;
                    }
                    count += n;
                    taken += copied;
                }
                (false, Some((l, slot))) => {
                    one = l.peek(*slot).map(|(_, b)| b.clone());
                    taken += one.as_ref().map_or(0, Bytes::len);
                    l.advance(*slot);
                    count += 1;
                }
                _ => {
                    let Some(len) = inner.items.front().map(|q| q.bytes.len()) else {
                        break;
                    };
                    if count > 0 && taken + len > max_bytes {
                        break;
                    }
                    let Some(q) = inner.items.pop_front() else {
                        break;
                    };
                    inner.bytes -= len;
                    if count == 0 {
                        one = Some(q.bytes);
                    } else {
                        staging.extend_from_slice(&q.bytes);
                    }
                    count += 1;
                    taken += len;
                }
            }
        }
        drop(log);
        // The buffer stays: a busy queue empties between every two bursts,
        // and giving it back each time would regrow it each time. An idle
        // queue gives it back at the next [`Outbox::trim`].
        Ok(match one {
            Some(b) => Some(Take::One(b)),
            None if staging.len() > start => Some(Take::Copied),
            None => None,
        })
    }

    /// Makes this queue read channel `log` from its head on, as `user`
    /// (the channel's messages from `user` and from users it ignores are
    /// left out). What the channel it read before had said and it had
    /// not taken yet is carried over, in order, ahead of anything from
    /// the new one. A remote stand-in, or a closing queue, reads nothing.
    pub fn subscribe(&self, log: &ChannelLog, user: UserId) {
        if self.shared.discard {
            return;
        }
        let mut inner = self.lock();
        if inner.closed || inner.finishing || inner.sub.as_ref().is_some_and(|s| s.log.same(log)) {
            return;
        }
        carry_over(&mut inner);
        let (slot, cursor) = log.attach(user);
        for q in inner.items.iter_mut() {
            q.after = cursor;
        }
        inner.sub = Some(Sub {
            log: log.clone(),
            slot,
        });
    }

    /// Stops reading the channel log, carrying what was not taken yet
    /// over into the queue (see [`Outbox::subscribe`]).
    pub fn unsubscribe(&self) {
        carry_over(&mut self.lock());
    }

    /// Gives back the buffer of an empty queue, so that an idle
    /// connection holds no slots. The hub calls it for every connection
    /// every presence interval: a queue busy meanwhile keeps its buffer
    /// between bursts, one idle through a sweep costs nothing.
    pub fn trim(&self) {
        let mut inner = self.lock();
        if inner.items.is_empty() && inner.items.capacity() > 0 {
            inner.items = VecDeque::new();
        }
    }

    /// Ready when something is queued or the outbox is closed (or
    /// finishing with nothing left to write); otherwise registers the task
    /// to be woken by the next push or by a close.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Taken> {
        let mut inner = self.lock();
        if inner.closed {
            return Poll::Ready(Taken::Closed);
        }
        if !inner.items.is_empty() {
            return Poll::Ready(Taken::Packages);
        }
        if let Some(sub) = &inner.sub {
            let mut log = sub.log.lock();
            if log.has_entry(sub.slot) {
                return Poll::Ready(Taken::Packages);
            }
            log.register(sub.slot, cx.waker());
        }
        if inner.finishing {
            Poll::Ready(Taken::Closed)
        } else {
            Self::register(&mut inner, cx);
            Poll::Pending
        }
    }

    /// Ready once the outbox is closed; otherwise registers the task to be
    /// woken by a close (or, harmlessly, by a push into an empty queue).
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if inner.closed {
            return Poll::Ready(());
        }
        Self::register(&mut inner, cx);
        Poll::Pending
    }

    fn register(inner: &mut Inner, cx: &mut Context<'_>) {
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
    }
}

/// Ends the queue's reading of its channel log: the entries it had not
/// taken yet join its private packages, merged in the order the hub
/// produced them (each private one after the entries before its tag).
fn carry_over(inner: &mut Inner) {
    let Some(sub) = inner.sub.take() else {
        return;
    };
    let mut log = sub.log.lock();
    if log.has_entry(sub.slot) {
        let mut merged = VecDeque::with_capacity(inner.items.len() + 8);
        while let Some((seq, b)) = log.peek(sub.slot) {
            let b = b.clone();
            log.advance(sub.slot);
            while inner.items.front().is_some_and(|q| q.after <= seq) {
                merged.extend(inner.items.pop_front());
            }
            inner.bytes += b.len();
            merged.push_back(Queued { after: 0, bytes: b });
        }
        merged.append(&mut inner.items);
        inner.items = merged;
    }
    log.detach(sub.slot);
    drop(log);
    for q in inner.items.iter_mut() {
        q.after = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn wakes(c: &Counter) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    /// A package of `len` bytes (at least 8) carrying the number `n`.
    fn package(n: usize, len: usize) -> Bytes {
        let mut v = vec![0u8; len.max(8)];
        v[..8].copy_from_slice(&(n as u64).to_be_bytes());
        Bytes::from(v)
    }

    /// Takes once and splits what came out back into packages of `len`.
    fn take_numbers(q: &Outbox, len: usize, max: usize) -> Option<Vec<usize>> {
        let mut staging = Vec::new();
        let number = |b: &[u8]| u64::from_be_bytes(b[..8].try_into().unwrap()) as usize;
        match q.take(&mut staging, max).unwrap()? {
            Take::One(b) => Some(vec![number(&b)]),
            Take::Copied => Some(staging.chunks(len).map(number).collect()),
        }
    }

    #[test]
    fn packages_come_out_in_order_across_takes() {
        let q = Outbox::new(10_000, usize::MAX);
        let mut seen = Vec::new();
        let mut next = 0;
        // Pushes interleaved with takes of different sizes.
        for round in 0..200 {
            for _ in 0..(round % 7) {
                q.push(package(next, 16)).unwrap();
                next += 1;
            }
            let limit = 16 * (1 + round % 3);
            while let Some(got) = take_numbers(&q, 16, limit) {
                assert!(got.len() <= 1 + round % 3);
                seen.extend(got);
            }
        }
        assert_eq!(seen, (0..next).collect::<Vec<_>>());
        assert_eq!(q.queued(), (0, 0));
    }

    #[test]
    fn a_take_stops_at_the_batch_size_but_always_takes_one() {
        let q = Outbox::new(100, usize::MAX);
        for n in 0..10 {
            q.push(package(n, 100)).unwrap();
        }
        assert_eq!(take_numbers(&q, 100, 250), Some(vec![0, 1]));
        assert_eq!(q.queued(), (8, 800));
        assert_eq!(take_numbers(&q, 100, 1), Some(vec![2]));
        assert_eq!(take_numbers(&q, 100, 10_000), Some((3..10).collect()));
        assert_eq!(q.queued(), (0, 0));
        assert_eq!(take_numbers(&q, 100, 10_000), None);
        // A lone package is handed over as it is.
        let lone = package(11, 100);
        q.push(lone.clone()).unwrap();
        let mut staging = Vec::new();
        assert_eq!(q.take(&mut staging, 1), Ok(Some(Take::One(lone))));
        assert!(staging.is_empty());
    }

    #[test]
    fn the_package_bound_refuses_the_one_past_it() {
        let q = Outbox::new(3, usize::MAX);
        for n in 0..3 {
            q.push(package(n, 10)).unwrap();
        }
        assert_eq!(q.push(package(3, 10)), Err(PushError::Packages(3)));
        take_numbers(&q, 10, 1);
        q.push(package(4, 10)).unwrap();
        assert_eq!(q.queued().0, 3);
    }

    #[test]
    fn the_byte_bound_counts_queued_bytes_only() {
        let q = Outbox::new(1000, 100);
        q.push(package(0, 60)).unwrap();
        q.push(package(1, 40)).unwrap();
        assert_eq!(q.queued(), (2, 100));
        assert_eq!(q.push(package(2, 1)), Err(PushError::Bytes(100)));
        // What the task took out no longer counts.
        take_numbers(&q, 60, 1);
        assert_eq!(q.queued(), (1, 40));
        q.push(package(3, 60)).unwrap();
        assert_eq!(q.push(package(4, 8)), Err(PushError::Bytes(100)));
    }

    #[test]
    fn an_empty_queue_takes_a_package_larger_than_the_byte_bound() {
        let q = Outbox::new(1000, 100);
        q.push(package(0, 500)).unwrap();
        assert_eq!(q.push(package(1, 8)), Err(PushError::Bytes(100)));
    }

    #[test]
    fn only_a_push_into_an_empty_queue_wakes_the_waiting_task() {
        let q = Outbox::new(100, usize::MAX);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(q.poll_ready(&mut cx), Poll::Pending);
        q.push(package(0, 10)).unwrap();
        assert_eq!(wakes(&count), 1);
        q.push(package(1, 10)).unwrap();
        q.push(package(2, 10)).unwrap();
        assert_eq!(wakes(&count), 1, "the task is already woken");
        assert_eq!(q.poll_ready(&mut cx), Poll::Ready(Taken::Packages));
        assert_eq!(take_numbers(&q, 10, 1000), Some(vec![0, 1, 2]));
        // Not waiting (no poll since): a push does not wake.
        q.push(package(3, 10)).unwrap();
        assert_eq!(wakes(&count), 1);
        take_numbers(&q, 10, 1000);
        assert_eq!(q.poll_ready(&mut cx), Poll::Pending);
        q.push(package(4, 10)).unwrap();
        assert_eq!(wakes(&count), 2);
    }

    #[test]
    fn finish_refuses_pushes_keeps_what_is_queued_then_reports_closed() {
        let q = Outbox::new(8, 1 << 20);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(q.poll_ready(&mut cx), Poll::Pending);
        q.push(package(1, 10)).unwrap();
        q.finish();
        assert!(wakes(&count) >= 1);
        assert_eq!(q.push(package(2, 10)), Err(PushError::Closed));
        // The hub's close of a finishing queue leaves its last packages.
        q.close();
        assert!(!q.is_closed() && q.is_finishing());
        assert_eq!(q.poll_ready(&mut cx), Poll::Ready(Taken::Packages));
        assert_eq!(take_numbers(&q, 10, 1 << 16), Some(vec![1]));
        assert_eq!(q.poll_ready(&mut cx), Poll::Ready(Taken::Closed));
        // Still writable to the end: closing is not reported as a hard close.
        assert_eq!(q.poll_closed(&mut cx), Poll::Pending);
    }

    #[test]
    fn close_wakes_the_task_drops_the_queue_and_refuses_pushes() {
        let q = Outbox::new(100, usize::MAX);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(q.poll_closed(&mut cx), Poll::Pending);
        q.push(package(0, 1000)).unwrap();
        q.close();
        assert!(wakes(&count) >= 1);
        assert!(q.is_closed());
        assert_eq!(q.queued(), (0, 0));
        assert_eq!(q.push(package(1, 10)), Err(PushError::Closed));
        assert_eq!(q.poll_ready(&mut cx), Poll::Ready(Taken::Closed));
        assert_eq!(q.poll_closed(&mut cx), Poll::Ready(()));
        assert_eq!(q.take(&mut Vec::new(), 1000), Err(Closed));
        q.close();
    }

    #[test]
    fn an_emptied_queue_keeps_its_buffer_until_trimmed() {
        let q = Outbox::new(10_000, usize::MAX);
        for n in 0..500 {
            q.push(package(n, 8)).unwrap();
        }
        assert!(q.lock().items.capacity() >= 500);
        take_numbers(&q, 8, 80);
        q.trim();
        assert!(q.lock().items.capacity() >= 500, "not empty: kept");
        while take_numbers(&q, 8, 800).is_some() {}
        assert!(q.lock().items.capacity() >= 500, "between bursts: kept");
        q.trim();
        assert_eq!(q.lock().items.capacity(), 0);
        q.push(package(1, 8)).unwrap();
        assert_eq!(take_numbers(&q, 8, 80), Some(vec![1]));
    }

    /// Appends package `n` of `len` bytes to `log`, for all but `skip`.
    fn say(log: &ChannelLog, n: usize, len: usize, skip: Option<UserId>) {
        let mut kicks = Vec::new();
        log.append(package(n, len), skip, None, (1000, 1 << 20), &mut kicks);
        assert!(kicks.is_empty());
    }

    #[test]
    fn private_packages_and_the_channel_log_come_out_in_the_order_produced() {
        let q = Outbox::new(1000, 1 << 20);
        let log = ChannelLog::new();
        q.push(package(0, 16)).unwrap();
        q.subscribe(&log, 7);
        say(&log, 1, 16, None);
        say(&log, 99, 16, Some(7));
        q.push(package(2, 16)).unwrap();
        say(&log, 3, 16, None);
        q.push(package(4, 16)).unwrap();
        q.push(package(5, 16)).unwrap();
        say(&log, 6, 16, None);
        // In small takes and in one big one alike.
        let mut seen = Vec::new();
        while let Some(got) = take_numbers(&q, 16, 32) {
            seen.extend(got);
        }
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        for n in 7..12 {
            if n % 2 == 0 {
                say(&log, n, 16, None);
            } else {
                q.push(package(n, 16)).unwrap();
            }
        }
        assert_eq!(take_numbers(&q, 16, 1 << 16), Some((7..12).collect()));
        assert_eq!(take_numbers(&q, 16, 1 << 16), None);
    }

    #[test]
    fn a_channel_switch_carries_what_was_not_read_over_in_order() {
        let q = Outbox::new(1000, 1 << 20);
        let (a, b) = (ChannelLog::new(), ChannelLog::new());
        q.subscribe(&a, 7);
        say(&a, 0, 16, None);
        q.push(package(1, 16)).unwrap();
        say(&a, 2, 16, None);
        q.subscribe(&b, 7);
        // What `a` says now is not for this queue; `b`'s comes after.
        say(&a, 98, 16, None);
        say(&b, 4, 16, None);
        q.push(package(5, 16)).unwrap();
        q.push(package(3, 16)).unwrap();
        let got = take_numbers(&q, 16, 1 << 16).unwrap();
        assert_eq!(got, vec![0, 1, 2, 4, 5, 3]);
        assert_eq!(a.held().0, 0, "a has no reader left");
        // Leaving carries over too; finishing keeps what was said before.
        say(&b, 6, 16, None);
        q.unsubscribe();
        say(&b, 97, 16, None);
        q.subscribe(&b, 7);
        say(&b, 7, 16, None);
        q.finish();
        say(&b, 96, 16, None);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(q.poll_ready(&mut cx), Poll::Ready(Taken::Packages));
        assert_eq!(take_numbers(&q, 16, 1 << 16), Some(vec![6, 7]));
        assert_eq!(q.poll_ready(&mut cx), Poll::Ready(Taken::Closed));
        assert_eq!(wakes(&count), 0);
    }

    #[test]
    fn an_append_wakes_a_waiting_reader_once_and_close_detaches_it() {
        let q = Outbox::new(1000, 1 << 20);
        let log = ChannelLog::new();
        q.subscribe(&log, 7);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(q.poll_ready(&mut cx), Poll::Pending);
        // Its own message neither wakes it for good nor shows.
        say(&log, 0, 16, Some(7));
        assert_eq!(wakes(&count), 1);
        assert_eq!(q.poll_ready(&mut cx), Poll::Pending);
        say(&log, 1, 16, None);
        say(&log, 2, 16, None);
        assert_eq!(wakes(&count), 2);
        assert_eq!(q.poll_ready(&mut cx), Poll::Ready(Taken::Packages));
        assert_eq!(take_numbers(&q, 16, 1 << 16), Some(vec![1, 2]));
        q.close();
        say(&log, 3, 16, None);
        assert_eq!(log.held(), (0, 0), "no reader: nothing kept");
        assert_eq!(q.take(&mut Vec::new(), 1), Err(Closed));
    }

    #[test]
    fn pushes_from_another_thread_arrive_in_order_with_the_task_woken() {
        const N: usize = 20_000;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A small bound makes the producer wait for the consumer often,
        // so the queue goes empty and the wake-up path runs many times.
        let q = Outbox::new(64, usize::MAX);
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while n < N {
                    match q.push(package(n, 8)) {
                        Ok(()) => n += 1,
                        Err(PushError::Packages(_)) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        };
        let seen = rt.block_on(async {
            let mut seen = Vec::new();
            while seen.len() < N {
                let ready = std::future::poll_fn(|cx| q.poll_ready(cx)).await;
                assert_eq!(ready, Taken::Packages);
                while let Some(got) = take_numbers(&q, 8, 256) {
                    seen.extend(got);
                }
            }
            seen
        });
        producer.join().unwrap();
        assert_eq!(seen, (0..N).collect::<Vec<_>>());
        q.close();
        assert_eq!(q.take(&mut Vec::new(), 1), Err(Closed));
    }
}

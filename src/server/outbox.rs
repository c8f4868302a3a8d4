//! A connection's outbound queue: encoded packages waiting to be written
//! to its socket, bounded in packages and in bytes, plus the signal that
//! tells the connection to close.
//!
//! One [`Outbox`] is shared by the chat state (which pushes broadcasts and
//! replies into it under the hub lock) and the connection's task (which
//! takes everything queued in one go and writes it). It is a `VecDeque`
//! behind a short per-connection mutex rather than a `tokio::sync::mpsc`
//! channel because fan-out is a push into hundreds of queues per message:
//! a push here is one uncontended lock, one slot and a wake-up only when
//! the queue goes from empty to non-empty while the task waits, and the
//! task takes the whole queue with one lock instead of one atomic
//! hand-over per package. An idle queue holds no buffer blocks (mpsc kept a
//! block of 32 slots, about 1 KiB, per channel), and the byte count that
//! the byte bound needs is kept beside the queue for free.
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

/// Queue capacity (in packages) kept while a queue is empty; a larger
/// buffer, left over from a burst, is given back then, so an idle
/// connection holds a few slots at most.
const IDLE_SLOTS: usize = 64;

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

/// What [`Outbox::poll_take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Packages were moved into the caller's batch.
    Packages,
    /// The outbox was closed: the connection is to end.
    Closed,
}

/// The queue and its state, behind the mutex.
#[derive(Default)]
struct Inner {
    /// Packages in order.
    items: VecDeque<Bytes>,
    /// Sum of the lengths in `items`.
    bytes: usize,
    /// The connection task, while it waits for packages or for a close.
    waker: Option<Waker>,
    /// Set by [`Outbox::close`]; nothing is taken in after it.
    closed: bool,
}

/// Shared between the hub and the connection task.
struct Shared {
    /// Queue state.
    inner: Mutex<Inner>,
    /// Most packages queued at once.
    max_packages: usize,
    /// Most bytes queued at once (see the module docs for the one exception).
    max_bytes: usize,
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
            }),
        }
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
        let waker = {
            let mut inner = self.lock();
            if inner.closed {
                return Err(PushError::Closed);
            }
            if inner.items.len() >= self.shared.max_packages {
                return Err(PushError::Packages(self.shared.max_packages));
            }
            if !inner.items.is_empty() && inner.bytes + bytes.len() > self.shared.max_bytes {
                return Err(PushError::Bytes(self.shared.max_bytes));
            }
            inner.bytes += bytes.len();
            inner.items.push_back(bytes);
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

    /// Closes the queue: drops what is queued, refuses further pushes and
    /// wakes the connection task, which then ends. Idempotent.
    pub fn close(&self) {
        let (items, waker) = {
            let mut inner = self.lock();
            inner.closed = true;
            inner.bytes = 0;
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

    /// Packages and bytes queued now.
    pub fn queued(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.items.len(), inner.bytes)
    }

    /// Moves queued packages, oldest first, to the end of `batch` until
    /// the queue is empty or `batch` holds at least `max_bytes` (it always
    /// takes one). Returns whether anything was moved; `Err` once closed.
    ///
    /// When the whole queue fits and `batch` is empty, the two buffers are
    /// swapped instead of copied, so the caller's spare buffer becomes the
    /// queue's and no allocation happens in either.
    pub fn try_take(&self, batch: &mut VecDeque<Bytes>, max_bytes: usize) -> Result<bool, Closed> {
        let mut inner = self.lock();
        Self::take_locked(&mut inner, batch, max_bytes)
    }

    fn take_locked(
        inner: &mut Inner,
        batch: &mut VecDeque<Bytes>,
        max_bytes: usize,
    ) -> Result<bool, Closed> {
        if inner.closed {
            return Err(Closed);
        }
        if inner.items.is_empty() {
            if inner.items.capacity() > IDLE_SLOTS {
                inner.items = VecDeque::new();
            }
            return Ok(false);
        }
        if batch.is_empty() && inner.bytes <= max_bytes {
            std::mem::swap(&mut inner.items, batch);
            inner.bytes = 0;
            return Ok(true);
        }
        let mut taken: usize = batch.iter().map(Bytes::len).sum();
        while let Some(next) = inner.items.pop_front() {
            inner.bytes -= next.len();
            taken += next.len();
            batch.push_back(next);
            if taken >= max_bytes {
                break;
            }
        }
        Ok(true)
    }

    /// Like [`try_take`](Self::try_take), but when nothing is queued,
    /// registers the task to be woken by the next push or by a close.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Bytes>,
        max_bytes: usize,
    ) -> Poll<Taken> {
        let mut inner = self.lock();
        match Self::take_locked(&mut inner, batch, max_bytes) {
            Err(Closed) => Poll::Ready(Taken::Closed),
            Ok(true) => Poll::Ready(Taken::Packages),
            Ok(false) => {
                Self::register(&mut inner, cx);
                Poll::Pending
            }
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

    fn package(n: usize, len: usize) -> Bytes {
        let mut v = vec![0u8; len.max(8)];
        v[..8].copy_from_slice(&(n as u64).to_be_bytes());
        Bytes::from(v)
    }

    fn number(b: &Bytes) -> usize {
        u64::from_be_bytes(b[..8].try_into().unwrap()) as usize
    }

    #[test]
    fn packages_come_out_in_order_across_batches() {
        let q = Outbox::new(10_000, usize::MAX);
        let mut seen = Vec::new();
        let mut batch = VecDeque::new();
        let mut next = 0;
        // Pushes interleaved with takes of different sizes.
        for round in 0..200 {
            for _ in 0..(round % 7) {
                q.push(package(next, 16)).unwrap();
                next += 1;
            }
            let limit = 16 * (1 + round % 3);
            while q.try_take(&mut batch, limit).unwrap() {
                seen.extend(batch.drain(..).map(|b| number(&b)));
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
        let mut batch = VecDeque::new();
        assert!(q.try_take(&mut batch, 250).unwrap());
        assert_eq!(batch.len(), 3, "takes until it holds at least 250 bytes");
        assert_eq!(q.queued(), (7, 700));
        batch.clear();
        assert!(q.try_take(&mut batch, 1).unwrap());
        assert_eq!(batch.len(), 1);
        batch.clear();
        // The rest fits: the whole queue moves at once.
        assert!(q.try_take(&mut batch, 10_000).unwrap());
        assert_eq!(
            batch.iter().map(number).collect::<Vec<_>>(),
            (4..10).collect::<Vec<_>>()
        );
        assert_eq!(q.queued(), (0, 0));
        assert!(!q.try_take(&mut batch, 10_000).unwrap());
    }

    #[test]
    fn the_package_bound_refuses_the_one_past_it() {
        let q = Outbox::new(3, usize::MAX);
        for n in 0..3 {
            q.push(package(n, 10)).unwrap();
        }
        assert_eq!(q.push(package(3, 10)), Err(PushError::Packages(3)));
        let mut batch = VecDeque::new();
        q.try_take(&mut batch, 5).unwrap();
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
        let mut batch = VecDeque::new();
        q.try_take(&mut batch, 1).unwrap();
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
        let mut batch = VecDeque::new();
        assert_eq!(q.poll_take(&mut cx, &mut batch, 1000), Poll::Pending);
        q.push(package(0, 10)).unwrap();
        assert_eq!(wakes(&count), 1);
        q.push(package(1, 10)).unwrap();
        q.push(package(2, 10)).unwrap();
        assert_eq!(wakes(&count), 1, "the task is already woken");
        assert_eq!(
            q.poll_take(&mut cx, &mut batch, 1000),
            Poll::Ready(Taken::Packages)
        );
        assert_eq!(batch.len(), 3);
        // Not waiting (no poll since): a push does not wake.
        q.push(package(3, 10)).unwrap();
        assert_eq!(wakes(&count), 1);
        batch.clear();
        assert_eq!(
            q.poll_take(&mut cx, &mut batch, 1000),
            Poll::Ready(Taken::Packages)
        );
        assert_eq!(q.poll_take(&mut cx, &mut batch, 1000), Poll::Pending);
        q.push(package(4, 10)).unwrap();
        assert_eq!(wakes(&count), 2);
    }

    #[test]
    fn close_wakes_the_task_drops_the_queue_and_refuses_pushes() {
        let q = Outbox::new(100, usize::MAX);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(q.poll_closed(&mut cx), Poll::Pending);
        let big = package(0, 1000);
        q.push(big.clone()).unwrap();
        q.close();
        assert!(wakes(&count) >= 1);
        assert!(q.is_closed());
        assert_eq!(q.queued(), (0, 0));
        assert_eq!(big.len(), 1000);
        assert_eq!(q.push(package(1, 10)), Err(PushError::Closed));
        let mut batch = VecDeque::new();
        assert_eq!(
            q.poll_take(&mut cx, &mut batch, 1000),
            Poll::Ready(Taken::Closed)
        );
        assert_eq!(q.poll_closed(&mut cx), Poll::Ready(()));
        assert!(q.try_take(&mut batch, 1000).is_err());
        q.close();
    }

    #[test]
    fn an_empty_queue_gives_back_a_large_buffer() {
        let q = Outbox::new(10_000, usize::MAX);
        let mut batch = VecDeque::new();
        for n in 0..500 {
            q.push(package(n, 8)).unwrap();
        }
        // Partial takes leave the queue's own (large) buffer in place.
        while q.try_take(&mut batch, 800).unwrap() {
            batch.clear();
        }
        assert!(q.lock().items.capacity() <= IDLE_SLOTS);
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
            let mut batch = VecDeque::new();
            while seen.len() < N {
                let taken = std::future::poll_fn(|cx| q.poll_take(cx, &mut batch, 256)).await;
                assert_eq!(taken, Taken::Packages);
                seen.extend(batch.drain(..).map(|b| number(&b)));
            }
            seen
        });
        producer.join().unwrap();
        assert_eq!(seen, (0..N).collect::<Vec<_>>());
        q.close();
        let mut batch = VecDeque::new();
        assert!(q.try_take(&mut batch, 1).is_err());
    }
}

//! A channel's broadcast log: a package for a channel's members is
//! appended here once, and each member's [`Outbox`](super::outbox::Outbox)
//! reads it from a cursor of its own, instead of the package being pushed
//! into every member's queue.
//!
//! Why: a push per member was a lock, a slot and an atomic increment of the
//! package's shared count in another connection's memory, for every
//! delivery; in a 500-member channel that was most of the server's own
//! work per message. An append is one lock and one slot per message, and a
//! member's task copies what it has not read yet, from one buffer every
//! member reads, straight into its write.
//!
//! Order: a member's private packages (replies, its own notifications)
//! stay in its outbox, each tagged with the log's head
//! when it was queued; the outbox hands out log entries before the first
//! private package whose tag they precede, so a member sees everything in
//! the order the hub produced it. Leaving a channel carries the member's
//! unread entries over into its outbox (see `Outbox::subscribe`).
//!
//! Bounds: the log keeps only what some member has not read, and a member
//! falling further behind than its queue bounds (packages, bytes: the same
//! `--outbound-queue` and `--max-queue-bytes` as its own queue) is detached and
//! reported as a slow consumer, so the log holds at most those bounds plus
//! one package. Entries a member would not get (its own messages, those of
//! a user it ignores) do not count against it while they are all that is
//! left.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use bytes::Bytes;

use super::chat::UserId;
use super::outbox::PushError;

/// Below this many entries an append does not look for what every member
/// has read: the look is a walk over all members, so it is done when the
/// log has doubled since the last one, and at least this long.
const TRIM_AT: usize = 64;

/// A reader slot's cursor when the slot is free.
const FREE: u64 = u64::MAX;
/// A reader's cursor once it was detached for falling behind.
const DETACHED: u64 = u64::MAX - 1;

/// A cloneable handle on one channel's log.
#[derive(Clone, Default)]
pub struct ChannelLog {
    /// The log, shared by the hub (which appends) and members' outboxes.
    shared: Arc<Shared>,
}

impl fmt::Debug for ChannelLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = self.lock();
        f.debug_struct("ChannelLog")
            .field("entries", &log.entries.len())
            .field("bytes", &log.bytes)
            .field("readers", &log.live)
            .finish()
    }
}

#[derive(Default)]
struct Shared {
    /// The sequence number the next entry gets (the first is 0). Written
    /// under the lock; read without it to tag private packages, which the
    /// hub queues under its own lock, the same one it appends under.
    head: AtomicU64,
    /// Entries and readers.
    log: Mutex<Log>,
}

/// The entries not yet read by every reader, and the readers.
#[derive(Default)]
pub(super) struct Log {
    /// The sequence number of `entries[0]`.
    base: u64,
    /// Entries in order.
    entries: VecDeque<Entry>,
    /// Sum of the lengths in `entries`.
    bytes: usize,
    /// Bytes ever appended: the offset just past the last entry.
    end: u64,
    /// Reader slots, reused once freed.
    readers: Vec<Reader>,
    /// Free slots in `readers`.
    free: Vec<u32>,
    /// Readers with a waker, to wake at the next append (a reader is here
    /// exactly while its `waker` is set).
    waiting: Vec<u32>,
    /// Readers neither free nor detached.
    live: usize,
    /// The entry count at which an append looks for what all have read.
    trim_at: usize,
}

/// One package in the log.
struct Entry {
    /// The encoded package.
    bytes: Bytes,
    /// Offset of its first byte among all bytes ever appended.
    start: u64,
    /// A member who does not get it (the sender of a message).
    skip: Option<UserId>,
    /// Members who do not get it either (those ignoring its sender).
    ignorers: Option<Arc<HashSet<UserId>>>,
}

impl Entry {
    fn is_for(&self, user: UserId) -> bool {
        self.skip != Some(user) && !self.ignorers.as_ref().is_some_and(|i| i.contains(&user))
    }
}

/// One member's place in the log.
struct Reader {
    /// Sequence number of the next entry to read, or [`FREE`] or [`DETACHED`].
    cursor: u64,
    /// Whose place.
    user: UserId,
    /// The member's task, while it waits for an entry.
    waker: Option<Waker>,
    /// Where the slot is in [`Log::waiting`] while `waker` is set, so a
    /// member leaving a crowded channel whose members all wait takes
    /// itself out in constant time.
    waiting_at: u32,
}

impl ChannelLog {
    /// An empty log with no readers.
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Log> {
        // Nothing panics while holding this lock; if something did, the
        // log is still a valid log.
        self.shared
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The sequence number the next entry will get.
    pub(super) fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    /// Whether `self` and `other` are the same log.
    pub(super) fn same(&self, other: &ChannelLog) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Appends a package for every reader but `skip` and `ignorers`, and
    /// wakes the readers waiting for one. Readers that are now further
    /// behind than `max_packages` packages or `max_bytes` bytes are
    /// detached and added to `kicks`: their owners are slow consumers.
    pub fn append(
        &self,
        bytes: Bytes,
        skip: Option<UserId>,
        ignorers: Option<Arc<HashSet<UserId>>>,
        bounds: (usize, usize),
        kicks: &mut Vec<(UserId, PushError)>,
    ) {
        let mut log = self.lock();
        if log.live == 0 {
            // Nobody reads here (in a cluster, the members may all be on
            // other nodes): what is held is for nobody either.
            if !log.entries.is_empty() {
                log.base += log.entries.len() as u64;
                log.entries.clear();
                log.bytes = 0;
            }
            return;
        }
        let len = bytes.len();
        let start = log.end;
        log.entries.push_back(Entry {
            bytes,
            start,
            skip,
            ignorers,
        });
        log.bytes += len;
        log.end += len as u64;
        self.shared
            .head
            .store(log.base + log.entries.len() as u64, Ordering::Release);
        // Waking only schedules the task, so it is done under the lock:
        // no allocation per append to carry the wakers out.
        let Log {
            waiting, readers, ..
        } = &mut *log;
        for slot in waiting.drain(..) {
            if let Some(w) = readers.get_mut(slot as usize).and_then(|r| r.waker.take()) {
                w.wake();
            }
        }
        // (`waiting_at` is only read while `waker` is set.)
        let (max_packages, max_bytes) = (bounds.0.max(1), bounds.1.max(1));
        let over = log.over(max_packages, max_bytes);
        if over || log.entries.len() >= log.trim_at {
            log.trim();
            if log.over(max_packages, max_bytes) {
                log.detach_laggards(max_packages, max_bytes, kicks);
                log.trim();
            }
            log.trim_at = TRIM_AT.max(log.entries.len() * 2);
        }
    }

    /// Drops what every reader has read, and gives the buffer back when
    /// nothing is left: the hub calls it every presence interval, so an
    /// idle channel holds no entries.
    pub fn trim(&self) {
        let mut log = self.lock();
        log.trim();
        if log.entries.is_empty() {
            log.entries = VecDeque::new();
        }
        log.trim_at = TRIM_AT.max(log.entries.len() * 2);
    }

    /// Entries held and their bytes (for tests and the bound's checks).
    pub fn held(&self) -> (usize, usize) {
        let log = self.lock();
        (log.entries.len(), log.bytes)
    }

    /// A reader for `user`, starting at the head: it gets what is
    /// appended from now on.
    pub(super) fn attach(&self, user: UserId) -> (u32, u64) {
        let mut log = self.lock();
        let cursor = log.base + log.entries.len() as u64;
        log.live += 1;
        let reader = Reader {
            cursor,
            user,
            waker: None,
            waiting_at: 0,
        };
        let slot = match log.free.pop() {
            Some(slot) => {
                if let Some(r) = log.readers.get_mut(slot as usize) {
                    *r = reader;
                }
                slot
            }
            None => {
                log.readers.push(reader);
                // Slots are indexes into a vector of members: a channel
                // cannot have 2^32 members (connections are capped far below).
                u32::try_from(log.readers.len() - 1).unwrap_or(u32::MAX)
            }
        };
        (slot, cursor)
    }
}

impl Log {
    /// Whether the log holds more than one reader may be behind.
    fn over(&self, max_packages: usize, max_bytes: usize) -> bool {
        self.entries.len() > max_packages || (self.entries.len() > 1 && self.bytes > max_bytes)
    }

    fn head(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Drops the entries every live reader has read (or would not get).
    fn trim(&mut self) {
        for slot in 0..self.readers.len() {
            self.skip_unwanted(slot);
        }
        let head = self.head();
        let min = self
            .readers
            .iter()
            .map(|r| r.cursor)
            .filter(|&c| c < DETACHED)
            .min()
            .unwrap_or(head);
        while self.base < min {
            match self.entries.pop_front() {
                Some(e) => self.bytes -= e.bytes.len(),
                None => break,
            }
            self.base += 1;
        }
    }

    /// Detaches every reader further behind than the bounds (counting
    /// from the first entry it would get).
    fn detach_laggards(
        &mut self,
        max_packages: usize,
        max_bytes: usize,
        kicks: &mut Vec<(UserId, PushError)>,
    ) {
        let head = self.head();
        for slot in 0..self.readers.len() {
            self.skip_unwanted(slot);
            let Some(r) = self.readers.get(slot) else {
                continue;
            };
            if r.cursor >= head {
                continue;
            }
            let packages = (head - r.cursor) as usize;
            let start = self
                .entries
                .get((r.cursor - self.base) as usize)
                .map_or(self.end, |e| e.start);
            let bytes = (self.end - start) as usize;
            let why = if packages > max_packages {
                PushError::Packages(max_packages)
            } else if packages > 1 && bytes > max_bytes {
                PushError::Bytes(max_bytes)
            } else {
                continue;
            };
            kicks.push((r.user, why));
            self.release(slot as u32, DETACHED);
        }
    }

    /// Moves a live reader's cursor past the entries it would not get.
    fn skip_unwanted(&mut self, slot: usize) {
        let Some(r) = self.readers.get_mut(slot) else {
            return;
        };
        if r.cursor >= DETACHED {
            return;
        }
        while let Some(e) = r
            .cursor
            .checked_sub(self.base)
            .and_then(|i| self.entries.get(i as usize))
        {
            if e.is_for(r.user) {
                break;
            }
            r.cursor += 1;
        }
    }

    /// Whether the reader in `slot` has an entry to read (moving it past
    /// those it would not get).
    pub(super) fn has_entry(&mut self, slot: u32) -> bool {
        self.skip_unwanted(slot as usize);
        self.readers
            .get(slot as usize)
            .is_some_and(|r| r.cursor < DETACHED && r.cursor < self.head())
    }

    /// The reader's next entry for it, without taking it: its sequence
    /// number and package.
    pub(super) fn peek(&mut self, slot: u32) -> Option<(u64, &Bytes)> {
        self.skip_unwanted(slot as usize);
        let cursor = self.readers.get(slot as usize)?.cursor;
        let e = self.entries.get(cursor.checked_sub(self.base)? as usize)?;
        Some((cursor, &e.bytes))
    }

    /// Moves the reader past the entry [`Log::peek`] showed.
    pub(super) fn advance(&mut self, slot: u32) {
        if let Some(r) = self.readers.get_mut(slot as usize) {
            if r.cursor < DETACHED {
                r.cursor += 1;
            }
        }
    }

    /// Copies the reader's entries before sequence number `before`, as
    /// many as fit in `room` bytes, to the end of `staging`, and moves it
    /// past them. Returns how many packages and bytes it copied.
    ///
    /// The one pass the fan-out's reads make: an entry is looked at once,
    /// not once to size it and again to take it.
    pub(super) fn copy_run(
        &mut self,
        slot: u32,
        before: u64,
        staging: &mut Vec<u8>,
        room: usize,
    ) -> (usize, usize) {
        let Some(r) = self.readers.get_mut(slot as usize) else {
            return (0, 0);
        };
        if r.cursor >= DETACHED {
            return (0, 0);
        }
        let Some(first) = r.cursor.checked_sub(self.base) else {
            return (0, 0);
        };
        let (mut count, mut copied) = (0, 0);
        let user = r.user;
        let stop = before.min(self.base + self.entries.len() as u64);
        let mut cursor = r.cursor;
        for e in self.entries.range(first as usize..) {
            if cursor >= stop {
                break;
            }
            if e.is_for(user) {
                let len = e.bytes.len();
                if copied + len > room {
                    break;
                }
                staging.extend_from_slice(&e.bytes);
                copied += len;
                count += 1;
            }
            cursor += 1;
        }
        r.cursor = cursor;
        (count, copied)
    }

    /// Registers the reader's task to be woken by the next append.
    pub(super) fn register(&mut self, slot: u32, waker: &Waker) {
        let Some(r) = self.readers.get_mut(slot as usize) else {
            return;
        };
        if r.cursor >= DETACHED {
            return;
        }
        match &r.waker {
            Some(w) if w.will_wake(waker) => {}
            Some(_) => r.waker = Some(waker.clone()),
            None => {
                r.waker = Some(waker.clone());
                r.waiting_at = waiting_index(self.waiting.len());
                self.waiting.push(slot);
            }
        }
    }

    /// Frees the reader's slot (its owner no longer reads here).
    pub(super) fn detach(&mut self, slot: u32) {
        if self
            .readers
            .get(slot as usize)
            .is_some_and(|r| r.cursor != FREE)
        {
            self.release(slot, FREE);
            self.free.push(slot);
        }
    }

    /// Takes a reader out of the live ones, leaving its cursor `to`
    /// ([`FREE`] or [`DETACHED`]; a detached slot is freed by its owner).
    fn release(&mut self, slot: u32, to: u64) {
        let Some(r) = self.readers.get_mut(slot as usize) else {
            return;
        };
        if r.cursor < DETACHED {
            self.live -= 1;
        }
        r.cursor = to;
        if r.waker.take().is_some() {
            let at = r.waiting_at as usize;
            if self.waiting.get(at) == Some(&slot) {
                self.waiting.swap_remove(at);
                // The slot moved into `at` now sits there.
                if let Some(&moved) = self.waiting.get(at) {
                    if let Some(m) = self.readers.get_mut(moved as usize) {
                        m.waiting_at = waiting_index(at);
                    }
                }
            }
        }
    }
}

/// A position in [`Log::waiting`] as stored in a reader (a list of at
/// most one entry per member).
fn waiting_index(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: u8, len: usize) -> Bytes {
        Bytes::from(vec![n; len])
    }

    /// Everything `slot` (reading as it goes) gets now.
    fn read_all(log: &ChannelLog, slot: u32) -> Vec<u8> {
        let mut l = log.lock();
        let mut got = Vec::new();
        while let Some((_, b)) = l.peek(slot) {
            got.push(b[0]);
            l.advance(slot);
        }
        got
    }

    #[test]
    fn readers_get_what_was_appended_after_they_came_but_skips() {
        let log = ChannelLog::new();
        let mut kicks = Vec::new();
        let (a, _) = log.attach(1);
        log.append(bytes(1, 10), None, None, (100, 1000), &mut kicks);
        let (b, _) = log.attach(2);
        log.append(bytes(2, 10), Some(2), None, (100, 1000), &mut kicks);
        let ignoring_1 = Arc::new(HashSet::from([2]));
        log.append(
            bytes(3, 10),
            Some(1),
            Some(ignoring_1),
            (100, 1000),
            &mut kicks,
        );
        log.append(bytes(4, 10), None, None, (100, 1000), &mut kicks);
        assert_eq!(read_all(&log, a), vec![1, 2, 4]);
        assert_eq!(read_all(&log, b), vec![4]);
        assert!(kicks.is_empty());
        log.trim();
        assert_eq!(log.held(), (0, 0));
    }

    #[test]
    fn a_reader_past_the_bounds_is_detached_and_the_log_stays_bounded() {
        let log = ChannelLog::new();
        let mut kicks = Vec::new();
        let (slow, _) = log.attach(1);
        let (fast, _) = log.attach(2);
        for n in 0..10 {
            log.append(bytes(n, 10), None, None, (4, 1000), &mut kicks);
            read_all(&log, fast);
            assert!(log.held().0 <= 5);
        }
        assert_eq!(kicks, vec![(1, PushError::Packages(4))]);
        assert!(!log.lock().has_entry(slow));
        // Bytes: 3 entries of 40 against 100.
        let log = ChannelLog::new();
        let mut kicks = Vec::new();
        log.attach(7);
        for n in 0..3 {
            log.append(bytes(n, 40), None, None, (100, 100), &mut kicks);
        }
        assert_eq!(kicks, vec![(7, PushError::Bytes(100))]);
        assert_eq!(log.held(), (0, 0));
    }

    #[test]
    fn a_senders_own_messages_do_not_count_against_it() {
        let log = ChannelLog::new();
        let mut kicks = Vec::new();
        log.attach(1);
        for n in 0..20 {
            log.append(bytes(n, 10), Some(1), None, (4, 1000), &mut kicks);
        }
        assert!(kicks.is_empty());
    }

    #[test]
    fn readers_leaving_while_they_wait_are_not_woken_and_the_others_are_once() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let log = ChannelLog::new();
        let counts: Vec<Arc<Count>> = (0..10)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let slots: Vec<u32> = (0..10).map(|u| log.attach(u).0).collect();
        for (slot, c) in slots.iter().zip(&counts) {
            log.lock().register(*slot, &Waker::from(c.clone()));
        }
        // Leave from the front, the middle and the end of the wait list.
        for gone in [0, 4, 9, 5] {
            log.lock().detach(slots[gone]);
        }
        assert_eq!(log.lock().waiting.len(), 6);
        let mut kicks = Vec::new();
        log.append(bytes(1, 10), None, None, (4, 1000), &mut kicks);
        log.append(bytes(2, 10), None, None, (4, 1000), &mut kicks);
        let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, vec![0, 1, 1, 1, 0, 0, 1, 1, 1, 0]);
        assert!(log.lock().waiting.is_empty());
    }

    #[test]
    fn freed_slots_are_reused_and_a_log_without_readers_keeps_nothing() {
        let log = ChannelLog::new();
        let mut kicks = Vec::new();
        let (a, _) = log.attach(1);
        log.lock().detach(a);
        log.append(bytes(1, 10), None, None, (4, 1000), &mut kicks);
        assert_eq!(log.held(), (0, 0));
        let (b, _) = log.attach(2);
        assert_eq!(a, b);
        log.append(bytes(2, 10), None, None, (4, 1000), &mut kicks);
        assert_eq!(read_all(&log, b), vec![2]);
    }
}

//! What the store's background threads (the log's checkpoints, the search
//! index) have in common: a thread that a write wakes, that lets a gap
//! pass between two rounds of work, and that is stopped and joined when
//! the store is dropped.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// The flags every background thread's state holds.
#[derive(Debug, Default)]
pub(super) struct Flags {
    /// Something was written since the thread's last round began.
    pub(super) dirty: bool,
    /// The thread waits for `dirty` (and needs waking for it).
    pub(super) idle: bool,
    /// The store is being dropped.
    pub(super) stop: bool,
}

/// A background thread's state: [`Flags`] and whatever else it keeps.
pub(super) trait Flagged: Send + 'static {
    /// Its flags.
    fn flags(&mut self) -> &mut Flags;
}

impl Flagged for Flags {
    fn flags(&mut self) -> &mut Flags {
        self
    }
}

/// A state and the condition its thread (and whoever waits for the
/// thread's work) waits on.
pub(super) type Shared<S> = (Mutex<S>, Condvar);

/// A background thread and the state it shares with the store.
#[derive(Debug)]
pub(super) struct Background<S: Flagged> {
    /// Its state, and the condition.
    shared: Arc<Shared<S>>,
    /// Joined when the store is dropped.
    thread: Option<JoinHandle<()>>,
}

impl<S: Flagged> Background<S> {
    /// Starts the thread `name`, running `run` on `state`.
    pub(super) fn spawn(
        name: &str,
        state: S,
        run: impl FnOnce(&Shared<S>) + Send + 'static,
    ) -> std::io::Result<Background<S>> {
        let shared = Arc::new((Mutex::new(state), Condvar::new()));
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&theirs))?;
        Ok(Background {
            shared,
            thread: Some(thread),
        })
    }

    /// The state shared with the thread.
    pub(super) fn shared(&self) -> &Shared<S> {
        &self.shared
    }

    /// Notes a write; wakes the thread only if it waits for one, so a busy
    /// writer costs it one uncontended lock per commit.
    pub(super) fn wake(&self) {
        let (state, wake) = &*self.shared;
        let mut st = lock(state);
        let flags = st.flags();
        if !flags.dirty {
            flags.dirty = true;
            if flags.idle {
                wake.notify_all();
            }
        }
    }
}

impl<S: Flagged> Drop for Background<S> {
    fn drop(&mut self) {
        let (state, wake) = &*self.shared;
        lock(state).flags().stop = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The state, held. A panic elsewhere leaves it usable: its flags are
/// plain values.
pub(super) fn lock<S>(state: &Mutex<S>) -> MutexGuard<'_, S> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for a write; the state, held, with `dirty` cleared (a write from
/// now on marks it again), or `None` once the store is being dropped.
pub(super) fn next_round<S: Flagged>(shared: &Shared<S>) -> Option<MutexGuard<'_, S>> {
    let (state, wake) = shared;
    let mut st = lock(state);
    while !st.flags().dirty && !st.flags().stop {
        st.flags().idle = true;
        st = wake.wait(st).unwrap_or_else(|p| p.into_inner());
    }
    let flags = st.flags();
    flags.idle = false;
    if flags.stop {
        return None;
    }
    flags.dirty = false;
    Some(st)
}

/// Lets time pass until `until`, or until `early` holds of the state;
/// false once the store is being dropped.
pub(super) fn pause<S: Flagged>(
    shared: &Shared<S>,
    until: Instant,
    early: impl Fn(&mut S) -> bool,
) -> bool {
    let (state, wake) = shared;
    let mut st = lock(state);
    loop {
        if st.flags().stop {
            return false;
        }
        let now = Instant::now();
        if early(&mut st) || now >= until {
            return true;
        }
        st = wake
            .wait_timeout(st, until - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

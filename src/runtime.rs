//! The tokio runtime the binaries run on, sized by their `--threads` flag.
//!
//! One place for the choice both the server and the bench make: on a
//! small machine shared between processes, a single-threaded runtime is
//! often the fastest, because waking a task on another thread costs a
//! futex call and a context switch (in a virtual machine, an
//! inter-processor interrupt), while waking one on the same thread is a
//! queue push.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// Builds a runtime with `threads` worker threads: 1 is a current-thread
/// runtime (everything on the calling thread), 0 a pool of one worker per
/// CPU core, more a pool of that many.
pub fn build(threads: usize) -> io::Result<Runtime> {
    let mut builder = match threads {
        1 => Builder::new_current_thread(),
        _ => Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_is_a_current_thread_runtime_and_more_are_a_pool() {
        let flavor = |threads| build(threads).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(1), tokio::runtime::RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(0), tokio::runtime::RuntimeFlavor::MultiThread);
        let pool = build(3).unwrap();
        assert_eq!(pool.metrics().num_workers(), 3);
    }
}

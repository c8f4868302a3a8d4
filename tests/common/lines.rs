//! A child process's output line by line, read to its end on a thread of
//! its own so the child never blocks on a full pipe and a test can wait
//! for one line with a timeout.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Why [`Lines::until`] returned no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// None came in time.
    Timeout,
    /// The pipe closed first: the process ended.
    Ended,
}

/// The lines of one pipe.
pub struct Lines {
    rx: Receiver<String>,
    /// Every line [`Lines::until`] took so far, for failure messages.
    pub seen: Vec<String>,
}

impl Lines {
    /// Reads `pipe` on a thread until it closes or the [`Lines`] is dropped.
    pub fn read(pipe: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits up to `wait` for the next line satisfying `want`, skipping
    /// others (all are kept in `seen`).
    pub fn until(&mut self, wait: Duration, want: impl Fn(&str) -> bool) -> Result<String, Missed> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(Missed::Timeout),
                Err(RecvTimeoutError::Disconnected) => return Err(Missed::Ended),
            }
        }
    }

    /// The lines left until the pipe closes, if it closes within `wait`;
    /// `Err` with those that came otherwise. They are not added to `seen`.
    pub fn rest(&mut self, wait: Duration) -> Result<Vec<String>, Vec<String>> {
        let mut rest = Vec::new();
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => return Ok(rest),
                Err(RecvTimeoutError::Timeout) => return Err(rest),
            }
        }
    }
}

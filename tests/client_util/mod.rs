//! Running the real `chatmaster-client` binary in scriptable mode: its
//! stdin is a pipe we write lines to, its stdout is read line by line on a
//! thread so tests can wait for a line with a timeout.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one expected line or exit may take (generous: the
/// machine may be loaded).
pub const LINE_WAIT: Duration = Duration::from_secs(10);

/// The client binary under test.
pub fn client_command(addr: SocketAddr) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatmaster-client"));
    cmd.arg("--host")
        .arg(addr.ip().to_string())
        .arg("--port")
        .arg(addr.port().to_string())
        .env_remove("NO_COLOR")
        .env("HOME", std::env::temp_dir());
    cmd
}

/// A running scriptable client.
pub struct Scripted {
    /// Label for failure messages.
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    /// Every stdout line seen so far, for failure messages.
    pub seen: Vec<String>,
}

impl Scripted {
    /// Starts the client with extra `args`.
    pub fn start(addr: SocketAddr, name: &str, args: &[&str]) -> Scripted {
        Scripted::start_env(addr, name, args, &[])
    }

    /// Starts the client with extra `args` and environment variables.
    pub fn start_env(
        addr: SocketAddr,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Scripted {
        let mut child = client_command(addr)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s);
            s
        });
        Scripted {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// Starts a client logged in as `user` (`--username`), and waits until
    /// it shows its own arrival in general.
    pub fn login(addr: SocketAddr, user: &str) -> Scripted {
        let mut c = Scripted::start(addr, user, &["--username", user]);
        c.expect_line(|l| l.starts_with("-- you are in general"));
        c
    }

    /// Writes one input line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(line.as_bytes()).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// Waits for the next stdout line satisfying `want`, skipping others;
    /// fails after [`LINE_WAIT`] or if stdout ends first.
    pub fn expect_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LINE_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: expected line not seen; got {:#?}",
                        self.name, self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{}: stdout ended; got {:#?}", self.name, self.seen)
                }
            }
        }
    }

    /// Waits for a line equal to `text`.
    pub fn expect(&mut self, text: &str) -> String {
        self.expect_line(|l| l == text)
    }

    /// The very next stdout line, whatever it is.
    pub fn next_line(&mut self) -> String {
        self.expect_line(|_| true)
    }

    /// Closes stdin (end of input) and waits for the exit; returns the
    /// status, the remaining stdout lines and all of stderr.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        drop(self.stdin.take());
        self.wait()
    }

    /// Waits for the exit without closing stdin.
    pub fn wait(mut self) -> (ExitStatus, Vec<String>, String) {
        let mut rest = Vec::new();
        let deadline = Instant::now() + LINE_WAIT;
        // stdout closes when the process exits; the lines come first.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!(
                        "{}: did not exit; seen {:#?} then {rest:#?}",
                        self.name, self.seen
                    )
                }
            }
        }
        let status = self.child.wait().expect("wait");
        let stderr = self
            .stderr
            .take()
            .expect("stderr")
            .join()
            .expect("stderr thread");
        (status, rest, stderr)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        // A failed test must not leave clients behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `line` is a chat line `HH:MM [channel] <user> text`.
pub fn is_message(line: &str, channel: &str, user: &str, text: &str) -> bool {
    let Some((time, rest)) = line.split_once(' ') else {
        return false;
    };
    let time_ok = time.len() == 5
        && time.as_bytes()[2] == b':'
        && time
            .chars()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit());
    time_ok && rest == format!("[{channel}] <{user}> {text}")
}

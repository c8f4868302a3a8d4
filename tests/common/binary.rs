//! The real `chatmaster-server` binary as a child process: started on a
//! free loopback port, its address learnt from its "listening" log line,
//! and stopped with SIGTERM or `kill -9`; every wait is bounded.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::lines::Lines;

/// How long the binary gets to start or to exit. Generous: the machine
/// may be busy building, and a timeout only ever fails a test.
pub const BIN_WAIT: Duration = Duration::from_secs(20);

/// The server's command line with `args` after `--port 0` (see
/// [`isolated`]).
pub fn server_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = isolated(Command::new(env!("CARGO_BIN_EXE_chatmaster-server")));
    cmd.args(["--port", "0"]).args(args);
    cmd
}

/// `cmd` with info logs, nothing on stdin, and none of the runner's own
/// `CHATMASTER_*` variables, which would configure the server.
pub fn isolated(mut cmd: Command) -> Command {
    cmd.env("RUST_LOG", "info").stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CHATMASTER_") {
            cmd.env_remove(k);
        }
    }
    // A free HTTP port, not the default 9080: tests run side by side.
    cmd.env("CHATMASTER_HTTP_PORT", "0");
    cmd
}

/// The log without colour on a piped stderr, nothing on stdout.
fn pipe_log(cmd: &mut Command) {
    cmd.env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
}

/// The server on the database file `db`, without rate limiting (tests
/// send fast).
pub fn db_command(db: &Path) -> Command {
    let mut cmd = server_command(["--rate-per-sec", "0", "--db"]);
    cmd.arg(db);
    cmd
}

/// `127.0.0.1:PORT` out of the server's `listening addr=...` line.
pub fn listening_addr(line: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    let start = line.find("127.0.0.1:")?;
    let rest = &line[start + "127.0.0.1:".len()..];
    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!port.is_empty()).then(|| format!("127.0.0.1:{port}"))
}

/// Waits up to [`BIN_WAIT`] for `child` to exit; on timeout kills it, so
/// no server is left behind, and returns `None`.
fn exit_within(mut child: Child) -> Option<ExitStatus> {
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(BIN_WAIT) {
        Ok(status) => Some(status.expect("exit status")),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            None
        }
    }
}

/// Runs `cmd` (one that must not start serving) to its end; returns its
/// exit status and stderr, or `None` and what it logged if it was still
/// running after [`BIN_WAIT`] (it is killed then).
pub fn run_to_exit(mut cmd: Command) -> (Option<ExitStatus>, String) {
    pipe_log(&mut cmd);
    let mut child = cmd.spawn().expect("start chatmaster-server");
    let stderr = child.stderr.take().expect("stderr is piped");
    // Read on a thread: a server that keeps running keeps the pipe open.
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).expect("read stderr"));
    let status = exit_within(child);
    let log = log.join().expect("stderr reader");
    (status, log)
}

/// A running server binary, its log line by line and the address it
/// reported. Dropping it kills the process, so a failing test leaves no
/// server behind.
pub struct Binary {
    child: Option<Child>,
    /// `127.0.0.1:PORT` from the "listening" line, once it came.
    pub addr: String,
    /// The log (stderr); `log.seen` holds every line read so far.
    pub log: Lines,
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Binary {
    /// Starts the binary with `args` (see [`server_command`]) and waits
    /// until it listens.
    pub fn start<I, S>(args: I) -> Binary
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn(server_command(args))
    }

    /// Starts the binary on the database file `db` (see [`db_command`])
    /// and waits until it listens.
    pub fn on_db(db: &Path) -> Binary {
        Self::spawn(db_command(db))
    }

    /// Spawns `cmd` and waits for its "listening" log line, which carries
    /// the address.
    pub fn spawn(cmd: Command) -> Binary {
        let mut binary = Self::launch(cmd);
        binary.wait_addr();
        binary
    }

    /// Spawns `cmd` (the server, or a shell that becomes it) with its log
    /// piped; waits for nothing.
    pub fn launch(mut cmd: Command) -> Binary {
        pipe_log(&mut cmd);
        let mut child = cmd.spawn().expect("start chatmaster-server");
        let stderr = child.stderr.take().expect("stderr is piped");
        Binary {
            child: Some(child),
            addr: String::new(),
            log: Lines::read(stderr),
        }
    }

    /// Waits up to [`BIN_WAIT`] for a log line matching `pred` and returns
    /// it; fails the test with the log so far otherwise.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.log.until(BIN_WAIT, pred).unwrap_or_else(|missed| {
            panic!(
                "no log line {what} within {BIN_WAIT:?} ({missed:?}); seen:\n{}",
                self.log.seen.join("\n")
            )
        })
    }

    /// Waits for the "listening" line; keeps its address in `addr` and
    /// returns it.
    pub fn wait_addr(&mut self) -> String {
        let line = self.wait_line("listening", |l| listening_addr(l).is_some());
        self.addr = listening_addr(&line).expect("an address in the line");
        self.addr.clone()
    }

    /// The server's process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("still running").id() as i32)
    }

    /// Sends `signal` and returns at once (SIGHUP, say).
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the server");
    }

    /// Sends `signal` and waits for the exit status; fails the test (after
    /// killing the server) if it does not exit within [`BIN_WAIT`].
    pub fn stop(mut self, signal: Signal) -> ExitStatus {
        self.signal(signal);
        let child = self.child.take().expect("still running");
        exit_within(child)
            .unwrap_or_else(|| panic!("the server did not exit within {BIN_WAIT:?} of {signal}"))
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(self) -> ExitStatus {
        self.stop(Signal::SIGTERM)
    }

    /// SIGTERM, and asserts the server exited 0.
    pub fn shut_down(self) {
        let status = self.terminate();
        assert!(status.success(), "exit status {status:?}");
    }

    /// `kill -9`: no chance to flush or commit anything. Asserts the
    /// server died of it.
    pub fn kill_hard(mut self) {
        let mut child = self.child.take().expect("still running");
        child.kill().expect("SIGKILL");
        let status = exit_within(child).expect("the server is reaped after SIGKILL");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
}

//! The `chatmaster-server` binary itself, as people run it: it builds its
//! own runtime from `--threads` (a single-threaded one for 1, a pool
//! otherwise), logs where it listens, serves, and on SIGTERM tells its
//! clients `server_shutdown` and exits 0.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

/// How long the binary gets to start, answer and stop.
const WAIT: Duration = Duration::from_secs(10);

/// A running server binary and the address it reported. Dropping it
/// kills the process, so a failing test leaves no server behind.
struct Binary {
    child: Option<Child>,
    addr: String,
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
    /// Starts the binary on a free loopback port and waits for its
    /// "listening" log line, which carries the address.
    fn start(threads: &str) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatmaster-server"))
            .args(["--port", "0", "--threads", threads, "--db", ":memory:"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chatmaster-server");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        // Reads the log to its end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
            }
        });
        let mut binary = Binary {
            child: Some(child),
            addr: String::new(),
        };
        binary.addr = rx
            .recv_timeout(WAIT)
            .expect("the server logs the address it listens on");
        binary
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("still running");
        let pid = Pid::from_raw(child.id() as i32);
        kill(pid, Signal::SIGTERM).expect("signal the server");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(status);
        });
        match rx.recv_timeout(WAIT) {
            Ok(status) => status.expect("exit status"),
            Err(_) => {
                // Leave no server behind, then fail.
                let _ = kill(pid, Signal::SIGKILL);
                panic!("the server did not exit within {WAIT:?} of SIGTERM");
            }
        }
    }
}

/// `127.0.0.1:PORT` out of the server's `listening addr=...` line.
fn listening_addr(line: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    let start = line.find("127.0.0.1:")?;
    let rest = &line[start + "127.0.0.1:".len()..];
    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!port.is_empty()).then(|| format!("127.0.0.1:{port}"))
}

async fn next(c: &mut ClientConnection) -> ServerPackage {
    c.recv_timeout(WAIT).await.expect("a package in time")
}

/// Two users talk through the binary, then SIGTERM ends it gracefully.
async fn serves_and_shuts_down(threads: &str) {
    let server = Binary::start(threads);
    let mut alice = ClientConnection::connect(server.addr.as_str())
        .await
        .expect("connect");
    assert!(alice.login("alice", WAIT).await.expect("login").status);
    let mut bob = ClientConnection::connect(server.addr.as_str())
        .await
        .expect("connect");
    let session = bob.login("bob", WAIT).await.expect("login");
    assert_eq!(session.channels, Some(vec!["general".to_owned()]));
    // alice: own join, then bob's arrival; bob: own join.
    for _ in 0..2 {
        assert!(matches!(
            next(&mut alice).await,
            ServerPackage::Notification(_)
        ));
    }
    assert!(matches!(
        next(&mut bob).await,
        ServerPackage::Notification(_)
    ));
    bob.message("hello from bob").await.expect("send");
    match next(&mut alice).await {
        ServerPackage::Message(m) => assert_eq!(m.message, "hello from bob"),
        other => panic!("expected bob's message, got {other:?}"),
    }
    // A round trip through a command, so bob's side is idle too; the
    // pong follows the message's acknowledgement.
    bob.command("ping", Some(json!({"token": "t"})))
        .await
        .expect("ping");
    assert!(matches!(
        next(&mut bob).await,
        ServerPackage::Notification(Notification::MessageSent { .. })
    ));
    assert!(matches!(
        next(&mut bob).await,
        ServerPackage::Notification(Notification::Pong { .. })
    ));

    let status = server.terminate();
    for c in [&mut alice, &mut bob] {
        assert!(matches!(
            next(c).await,
            ServerPackage::Notification(Notification::ServerShutdown { .. })
        ));
    }
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn one_thread_serves_and_shuts_down_on_sigterm() {
    serves_and_shuts_down("1").await;
}

#[tokio::test]
async fn a_thread_pool_serves_and_shuts_down_on_sigterm() {
    serves_and_shuts_down("2").await;
}

#[test]
fn listening_line_yields_the_address() {
    assert_eq!(
        listening_addr(
            "2026-11-22T01:00:00Z  INFO chatmaster::server: listening addr=127.0.0.1:40123"
        ),
        Some("127.0.0.1:40123".to_owned())
    );
    assert_eq!(listening_addr("INFO shutdown complete"), None);
}

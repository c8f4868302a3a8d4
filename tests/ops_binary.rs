//! Running the binaries as an operator does: a configuration file with
//! environment and flags over it, `chatmaster-server config`, SIGHUP
//! reload with users connected, JSON logs, systemd readiness and socket
//! activation, the unit files, `--version` and shell completions.

#![cfg(unix)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::ServerPackage;
use common::binary::{isolated, server_command, Binary};
use nix::sys::signal::Signal;

/// How long the binary gets for any one expected event.
const WAIT: Duration = Duration::from_secs(10);

const SERVER: &str = env!("CARGO_BIN_EXE_chatmaster-server");

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chatmaster-ops-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        // Write then rename, as an editor or deployment tool would, so a
        // reload never reads half a file.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn server() -> Command {
    isolated(Command::new(SERVER))
}

/// `sh -c script`, for what only a shell does without unsafe code here:
/// `$$` is the pid the server will have after `exec`, and `3<&0` puts a
/// socket on fd 3.
fn shell(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    isolated(c)
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run")
}

async fn next(c: &mut ClientConnection) -> ServerPackage {
    c.recv_timeout(WAIT).await.expect("a package in time")
}

/// Logs `name` in and reads what login brings (session, own join).
async fn login(addr: &str, name: &str) -> ClientConnection {
    let mut c = ClientConnection::connect(addr).await.expect("connect");
    assert!(c.login(name, WAIT).await.expect("login").status);
    assert!(matches!(next(&mut c).await, ServerPackage::Notification(_)));
    c
}

/// Sends `text` and returns whether the server refused it (an error of
/// type `message`) or let `other` receive it.
async fn try_message(
    from: &mut ClientConnection,
    other: &mut ClientConnection,
    text: &str,
) -> bool {
    from.message(text).await.expect("send");
    // A ping after it: its pong tells us the message was handled.
    from.command("ping", Some(serde_json::json!({"token": "t"})))
        .await
        .expect("ping");
    let mut refused = false;
    let mut acked = false;
    loop {
        match next(from).await {
            ServerPackage::Error(e) => {
                assert_eq!(e.error_type, "message", "{e:?}");
                refused = true;
            }
            ServerPackage::Notification(chatmaster::Notification::Pong { .. }) => break,
            // The acknowledgement of a stored message.
            ServerPackage::Notification(chatmaster::Notification::MessageSent { .. }) => {
                acked = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_ne!(
        refused, acked,
        "a message is either refused or acknowledged"
    );
    if !refused {
        match next(other).await {
            ServerPackage::Message(m) => assert_eq!(m.message, text),
            other => panic!("expected the message, got {other:?}"),
        }
    }
    !refused
}

#[test]
fn config_subcommand_reports_each_value_and_its_source() {
    let dir = Scratch::new();
    let file = dir.write(
        "chatmaster.toml",
        "# limits\nrate-per-sec = 5\nport = 1234\n",
    );
    let out = run(server()
        .arg("--config")
        .arg(&file)
        .args(["--port", "7", "config"])
        .env("CHATMASTER_RATE_BURST", "9"));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let file = file.display();
    for expected in [
        "port = 7  # flag".to_owned(),
        format!("rate-per-sec = 5  # file {file}:2"),
        "rate-burst = 9  # env CHATMASTER_RATE_BURST".to_owned(),
        "max-message-bytes = 4096  # default".to_owned(),
        "host = \"127.0.0.1\"  # default".to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == expected),
            "no line {expected:?} in:\n{text}"
        );
    }
}

#[test]
fn a_bad_file_is_a_start_up_error_naming_key_and_line() {
    let dir = Scratch::new();
    for (body, needle) in [
        (
            "port = 1\nrate-per-minute = 3\n",
            ":2: unknown key `rate-per-minute`",
        ),
        (
            "port = \"9000\"\n",
            ":1: key `port`: expected an integer, found string",
        ),
        ("\n\nmax-message-bytes = 0\n", ":3: key `max-message-bytes`"),
    ] {
        let file = dir.write("bad.toml", body);
        let out = run(server().arg("--config").arg(&file));
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}{needle}", file.display())),
            "{needle:?} not in {err}"
        );
    }
}

/// SIGHUP applies a changed message limit to users already connected,
/// reports a restart-only change as such, and keeps the running
/// configuration when the new file is broken.
#[tokio::test]
async fn sighup_reloads_limits_without_dropping_anyone() {
    let dir = Scratch::new();
    let file = dir.write(
        "chatmaster.toml",
        "port = 0\nthreads = 1\ndb = \":memory:\"\nrate-per-sec = 0\nmax-message-bytes = 100\n",
    );
    let mut proc = Binary::launch({
        let mut c = server();
        c.arg("--config").arg(&file);
        c
    });
    let addr = proc.wait_addr();
    let mut alice = login(&addr, "alice").await;
    let mut bob = login(&addr, "bob").await;
    assert!(matches!(
        next(&mut alice).await,
        ServerPackage::Notification(_)
    ));
    let long = "x".repeat(50);
    assert!(
        try_message(&mut alice, &mut bob, &long).await,
        "50 bytes pass under 100"
    );

    dir.write(
        "chatmaster.toml",
        "port = 0\nthreads = 2\ndb = \":memory:\"\nrate-per-sec = 0\nmax-message-bytes = 10\n",
    );
    proc.signal(Signal::SIGHUP);
    let restart = proc.wait_line("about threads", |l| l.contains("needs a restart"));
    assert!(restart.contains("threads"), "{restart}");
    proc.wait_line("reloaded", |l| l.contains("configuration reloaded"));
    assert!(
        !try_message(&mut alice, &mut bob, &long).await,
        "50 bytes refused over 10"
    );
    assert!(
        try_message(&mut alice, &mut bob, "short").await,
        "alice is still connected"
    );
    assert!(
        try_message(&mut bob, &mut alice, "me too").await,
        "bob is still connected"
    );

    let broken = dir.write("chatmaster.toml", "max-message-bytes = \"lots\"\n");
    proc.signal(Signal::SIGHUP);
    let failed = proc.wait_line("about the failure", |l| l.contains("reload failed"));
    assert!(
        failed.contains(&format!("{}:1", broken.display())) && failed.contains("max-message-bytes"),
        "{failed}"
    );
    assert!(
        !try_message(&mut alice, &mut bob, &long).await,
        "the limit of 10 stays"
    );
    assert!(try_message(&mut alice, &mut bob, "still ok").await);
    assert!(proc.terminate().success());
}

#[tokio::test]
async fn json_logs_carry_peer_and_user() {
    let mut proc = Binary::launch({
        let mut c = server_command(["--threads", "1", "--db", ":memory:", "--log-format", "json"]);
        c.env("RUST_LOG", "debug");
        c
    });
    let addr = proc.wait_addr();
    let mut alice = login(&addr, "alice").await;
    let local = alice.stream_mut().local_addr().unwrap().to_string();
    let line = proc.wait_line("about alice logging in", |l| l.contains("logged in"));
    let event: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(event["fields"]["user"], "alice", "{line}");
    assert_eq!(event["fields"]["peer"], local, "{line}");
    // A rename follows: later lines carry the new name.
    alice
        .command("rename", Some(serde_json::json!({"username": "alicia"})))
        .await
        .expect("rename");
    assert!(matches!(
        next(&mut alice).await,
        ServerPackage::Notification(_)
    ));
    drop(alice);
    let line = proc.wait_line("about the connection closing", |l| {
        l.contains("connection closed")
    });
    let event: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(event["fields"]["user"], "alicia", "{line}");
    assert_eq!(event["fields"]["peer"], local, "{line}");
    for line in &proc.log.seen {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert!(proc.terminate().success());
}

/// `Type=notify`: READY=1 once listening, WATCHDOG=1 when asked for, and
/// STOPPING=1 on SIGTERM, all on NOTIFY_SOCKET.
#[test]
fn notifies_systemd_ready_watchdog_and_stopping() {
    let dir = Scratch::new();
    let socket_path = dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    // WATCHDOG_PID must be the server's own pid: `exec` keeps the shell's.
    let mut proc = Binary::launch({
        let mut c = shell(&format!(
            "WATCHDOG_PID=$$ exec {SERVER} --port 0 --threads 1 --db :memory:"
        ));
        c.env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "100000");
        c
    });
    let mut received = Vec::new();
    let wait_for = |want: &str, received: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        loop {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want} (got {received:?}): {e}"));
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            received.push(text.clone());
            if text.lines().any(|l| l == want) {
                return;
            }
        }
    };
    wait_for("READY=1", &mut received);
    proc.wait_addr();
    wait_for("WATCHDOG=1", &mut received);
    assert!(proc.terminate().success());
    wait_for("STOPPING=1", &mut received);
}

/// Socket activation: the listener comes from the service manager (fd 3,
/// LISTEN_FDS=1, LISTEN_PID) and the server does not bind its own; the
/// port it was told would be taken anyway.
#[tokio::test]
async fn serves_a_socket_passed_by_the_service_manager() {
    let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = passed.local_addr().unwrap().to_string();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    // The listener goes in as stdin; the shell moves it to fd 3 and sets
    // LISTEN_PID to its own pid, which `exec` hands to the server.
    let mut sh = shell(&format!(
        "LISTEN_PID=$$ exec {SERVER} --port {taken_port} --threads 1 --db :memory: 3<&0 0</dev/null"
    ));
    sh.env("LISTEN_FDS", "1")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(passed)));
    let mut proc = Binary::launch(sh);
    proc.wait_line("about the passed socket", |l| {
        l.contains("passed by the service manager")
    });
    assert_eq!(proc.wait_addr(), addr);
    let _alice = login(&addr, "alice").await;
    drop(taken);
    assert!(proc.terminate().success());
}

/// The unit files pass `systemd-analyze verify` (with ExecStart pointed at
/// the binary just built, since verify checks that it exists).
#[test]
fn unit_files_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package `systemd`); the unit files were NOT verified");
        return;
    }
    let dir = Scratch::new();
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    let mut units = Vec::new();
    for name in ["chatmaster.service", "chatmaster.socket"] {
        let text = std::fs::read_to_string(dist.join(name)).unwrap();
        assert!(text.contains("/usr/local/bin/chatmaster-server") || name.ends_with(".socket"));
        let text = text.replace("/usr/local/bin/chatmaster-server", SERVER);
        units.push(dir.write(name, &text));
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    // verify also complains about unrelated units of the machine it runs on;
    // only lines about ours count.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("chatmaster")).collect();
    assert!(
        ours.is_empty() && out.status.success(),
        "systemd-analyze verify:\n{err}"
    );
}

#[test]
fn every_binary_has_version_and_completions() {
    for (bin, completions, flag) in [
        (SERVER, vec!["completions", "bash"], "--max-message-bytes"),
        (
            env!("CARGO_BIN_EXE_chatmaster-client"),
            vec!["--completions", "bash"],
            "--username",
        ),
        (
            env!("CARGO_BIN_EXE_chatmaster-bench"),
            vec!["--completions", "bash"],
            "--clients",
        ),
    ] {
        let out = run(Command::new(bin).arg("--version"));
        let version = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{bin}: {out:?}");
        assert!(
            version.trim().ends_with(env!("CARGO_PKG_VERSION")),
            "{version}"
        );
        let out = run(Command::new(bin).args(&completions));
        assert!(out.status.success(), "{bin}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("complete") && script.contains(flag),
            "{bin}: {flag} missing"
        );
    }
}

/// The example configuration shipped in dist/ is valid for this build.
#[test]
fn the_shipped_example_configuration_loads() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/chatmaster.toml");
    let out = run(server().arg("--config").arg(&file).arg("config"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("rate-per-sec = 20  # file {}", file.display())),
        "{text}"
    );
}

/// Sends `text` and returns the id the server acknowledged it with.
async fn send_acked(c: &mut ClientConnection, text: &str) -> i64 {
    c.message(text).await.expect("send");
    loop {
        if let ServerPackage::Notification(chatmaster::Notification::MessageSent { id, .. }) =
            next(c).await
        {
            return id;
        }
    }
}

fn serve_on(db: &Path) -> Binary {
    let mut c = server_command(["--threads", "1", "--rate-per-sec", "0", "--db"]);
    c.arg(db);
    Binary::launch(c)
}

/// `chatmaster-server backup FILE` copies the database while the server
/// writes to it; a server started on the copy (a restore) has what was
/// acknowledged before the backup and goes on with the next ids.
#[tokio::test]
async fn backup_while_serving_and_restore_from_it() {
    use chatmaster::store::{sqlite::SqliteStore, Store, StoreOptions};
    let dir = Scratch::new();
    let db = dir.0.join("chat.db");
    let copy = dir.0.join("backup.db");
    let mut proc = serve_on(&db);
    let addr = proc.wait_addr();
    let mut alice = login(&addr, "alice").await;
    let mut before = Vec::new();
    for text in ["one", "two", "three"] {
        before.push(send_acked(&mut alice, text).await);
    }
    let out = run(server().arg("--db").arg(&db).arg("backup").arg(&copy));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up"));
    // A second backup to the same file is refused, and the copy stays.
    let again = run(server().arg("--db").arg(&db).arg("backup").arg(&copy));
    assert!(!again.status.success());
    let after = send_acked(&mut alice, "after the backup").await;
    assert!(after > before[2]);
    drop(alice);
    assert!(proc.terminate().success());

    let stored = SqliteStore::open_read_only(&copy, &StoreOptions::default()).unwrap();
    let texts: Vec<(i64, String)> = stored
        .messages_after("general", 0, 100)
        .unwrap()
        .into_iter()
        .map(|m| (m.id, m.text))
        .collect();
    let expected: Vec<(i64, String)> = before
        .iter()
        .zip(["one", "two", "three"])
        .map(|(id, t)| (*id, t.to_owned()))
        .collect();
    assert_eq!(texts, expected);
    drop(stored);

    let mut restored = serve_on(&copy);
    let addr = restored.wait_addr();
    let mut bob = login(&addr, "bob").await;
    assert!(send_acked(&mut bob, "on the restored copy").await > before[2]);
    drop(bob);
    assert!(restored.terminate().success());
}

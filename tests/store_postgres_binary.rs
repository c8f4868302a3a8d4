//! The real `chatmaster-server` binary on PostgreSQL (`--db postgres://`,
//! a private server from `common::postgres`): an account registered and
//! messages acknowledged survive `kill -9` and a restart, with history and
//! search; the admin commands work on the URL while the server runs; an
//! unreachable database stops the start with one line, exit code 1 and no
//! password; `backup` refuses a PostgreSQL URL; neither `config` nor a
//! reload that changes the URL shows its password; while the database is
//! down, new messages are refused and those queued are kept.

#![cfg(unix)]

mod common;

use std::io::Write;
use std::process::Stdio;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::Notification;
use common::binary::{isolated, run_to_exit, server_command, Binary};
use common::memory::{acks, history, say, search};
use common::postgres::PgServer;
use common::{login_with, next_login_request, next_note};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

fn on(url: &str) -> Binary {
    Binary::spawn(server_command(["--rate-per-sec", "0", "--db", url]))
}

async fn connect(addr: &str) -> ClientConnection {
    let mut c = ClientConnection::connect(addr).await.expect("connect");
    next_login_request(&mut c).await;
    c
}

/// Runs `chatmaster-server --db URL accounts ARGS`, the password (if any)
/// on stdin; returns the exit code and what it printed.
fn admin(url: &str, args: &[&str], password: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = isolated(std::process::Command::new(env!(
        "CARGO_BIN_EXE_chatmaster-server"
    )));
    cmd.args(["--db", url, "accounts"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the admin command");
    let mut stdin = child.stdin.take().expect("piped stdin");
    if let Some(p) = password {
        writeln!(stdin, "{p}").expect("write the password");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("admin command output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn an_account_and_acknowledged_messages_survive_kill_9_with_history_and_search() {
    let Some(pg) = PgServer::shared() else { return };
    // A password in the URL (trust authentication never asks for it):
    // nothing the server logs may show it.
    let url = pg
        .fresh_database()
        .replace("chatmaster@", "chatmaster:sekrit@");
    let server = on(&url);
    let mut alice = connect(&server.addr).await;
    assert!(login_with(&mut alice, "alice", None).await.status);
    alice
        .command("register", Some(json!({"password": PASSWORD})))
        .await
        .unwrap();
    assert_eq!(
        next_note(&mut alice).await,
        Notification::Registered {
            username: "alice".into()
        }
    );
    const N: usize = 120;
    let texts: Vec<String> = (0..N).map(|i| format!("note número {i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = say(&mut alice, &refs).await;
    assert_eq!(ids.len(), N);
    assert!(!server.log.seen.join("\n").contains("sekrit"));
    server.kill_hard();

    let server = on(&url);
    // The account is there: its name needs its password.
    let mut guest = connect(&server.addr).await;
    let refused = login_with(&mut guest, "alice", None).await;
    assert!(!refused.status, "{refused:?}");
    let mut alice = connect(&server.addr).await;
    let session = login_with(&mut alice, "alice", Some(PASSWORD)).await;
    assert!(
        session.status && session.account == Some(true),
        "{session:?}"
    );
    // Every acknowledged message, in order, and search over them.
    let mut seen = Vec::new();
    let mut before = None;
    for _ in 0..10 {
        let params = match before {
            Some(b) => json!({"channel": "general", "before": b, "limit": 50}),
            None => json!({"channel": "general", "limit": 50}),
        };
        let page = history(&mut alice, params).await;
        let mut got = page.ids();
        got.extend(seen);
        seen = got;
        if !page.more {
            break;
        }
        before = seen.first().copied();
    }
    assert_eq!(seen, ids);
    let found = search(&mut alice, json!({"query": "numero"})).await;
    assert_eq!(found.total, N);
    let found = search(&mut alice, json!({"query": "\"número 7\""})).await;
    assert_eq!(found.ids(), [ids[7]]);
    let found = search(&mut alice, json!({"query": "nu*"})).await;
    assert_eq!(found.total, N);
    // Ids go on above the stored ones.
    let more = say(&mut alice, &["after the restart"]).await;
    assert!(more[0] > *ids.last().unwrap());
    let log = server.log.seen.join("\n");
    server.shut_down();
    assert!(!log.contains("sekrit"), "{log}");
}

#[tokio::test]
async fn the_admin_commands_work_on_the_url_while_the_server_runs() {
    let Some(pg) = PgServer::shared() else { return };
    let url = pg.fresh_database();
    let mut server = Binary::spawn(server_command([
        "--rate-per-sec",
        "0",
        "--accounts-poll-ms",
        "50",
        "--db",
        &url,
    ]));
    let (code, out) = admin(&url, &["add", "Bob"], Some(PASSWORD));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("account Bob created"), "{out}");
    let (code, out) = admin(&url, &["add", "BOB"], Some(PASSWORD));
    assert_eq!(code, Some(4), "the name is taken: {out}");
    assert!(out.contains("Bob"), "{out}");
    let (code, out) = admin(&url, &["list"], None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("Bob\t"), "{out}");
    // The running server learns of the account (the accounts version
    // changed) and enforces its password.
    server.wait_line("account names reloaded", |l| {
        l.contains("account names reloaded")
    });
    let mut bob = connect(&server.addr).await;
    let session = login_with(&mut bob, "bob", Some(PASSWORD)).await;
    assert!(
        session.status && session.account == Some(true),
        "{session:?}"
    );
    let (code, out) = admin(&url, &["delete", "bob"], None);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = admin(&url, &["delete", "bob"], None);
    assert_eq!(code, Some(3), "{out}");
    server.shut_down();
}

#[test]
fn an_unreachable_database_stops_the_start_in_one_line_without_the_password() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://chat:hunter2@127.0.0.1:{closed}/chat");
    let (status, stderr) = run_to_exit(server_command(["--db", &url]));
    let status = status.unwrap_or_else(|| panic!("the server kept running: {stderr}"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("listening"),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "chatmaster-server: cannot use the database postgres://chat:***@127.0.0.1:{closed}/chat: \
             the database is unavailable (cannot connect to"
        )),
        "{stderr}"
    );
    // The admin commands refuse it the same way, with their exit code 1.
    let (code, out) = admin(&url, &["list"], None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("cannot connect") && !out.contains("hunter2"),
        "{out}"
    );
    // `config` shows the URL without its password.
    let out = isolated(std::process::Command::new(env!(
        "CARGO_BIN_EXE_chatmaster-server"
    )))
    .args(["--db", &url, "config"])
    .output()
    .expect("run config");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains(&format!(
            "db = \"postgres://chat:***@127.0.0.1:{closed}/chat\""
        )),
        "{printed}"
    );
    assert!(!printed.contains("hunter2"), "{printed}");
    // And a backup is not a file copy of a PostgreSQL database.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = server_command(["--db", &url, "backup"]);
    cmd.arg(dir.path().join("copy.db"));
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(
        stderr.contains("pg_dump") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_reload_that_changes_the_url_logs_it_without_the_password() {
    let Some(pg) = PgServer::shared() else { return };
    let url = pg
        .fresh_database()
        .replace("chatmaster@", "chatmaster:sekrit@");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chatmaster.toml");
    std::fs::write(&file, format!("port = 0\ndb = \"{url}\"\n")).unwrap();
    let mut cmd = isolated(std::process::Command::new(env!(
        "CARGO_BIN_EXE_chatmaster-server"
    )));
    cmd.arg("--config").arg(&file);
    let mut server = Binary::spawn(cmd);
    let other = url.replace("sekrit@", "other-sekrit@");
    std::fs::write(&file, format!("port = 0\ndb = \"{other}\"\n")).unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    let line = server.wait_line("about the database", |l| l.contains("needs a restart"));
    assert!(line.contains("chatmaster:***@"), "{line}");
    server.wait_line("reloaded", |l| l.contains("configuration reloaded"));
    let log = server.log.seen.join("\n");
    server.shut_down();
    assert!(!log.contains("sekrit"), "{log}");
}

#[tokio::test]
async fn while_the_database_is_down_new_messages_are_refused_and_queued_ones_are_kept() {
    let Some(pg) = PgServer::start_or_skip() else {
        return;
    };
    let url = pg.fresh_database();
    let mut server = on(&url);
    let mut alice = connect(&server.addr).await;
    assert!(login_with(&mut alice, "alice", None).await.status);
    let before = say(&mut alice, &["before the outage"]).await;

    pg.stop();
    // Accepted before the writer has seen the outage: kept, not acknowledged.
    alice.message("queued during the outage").await.unwrap();
    server.wait_line("about the failed commit", |l| {
        l.contains("cannot store messages")
    });
    // From the failed commit on, new messages are refused at once.
    alice.message("refused during the outage").await.unwrap();
    let (kind, text) = common::next_error(&mut alice).await;
    assert_eq!(kind, "server");
    assert!(text.contains("cannot be stored"), "{text}");

    pg.restart();
    server.wait_line("about commits working again", |l| {
        l.contains("store writes succeed again")
    });
    let queued = acks(&mut alice, 1).await;
    let after = say(&mut alice, &["after the outage"]).await;
    let page = history(&mut alice, json!({"channel": "general"})).await;
    let mut expected = before;
    expected.extend(queued);
    expected.extend(after);
    assert_eq!(page.ids(), expected);
    let texts = page.texts();
    assert!(!texts.iter().any(|t| t.contains("refused")), "{texts:?}");
}

//! The real client in a real pseudo-terminal: a message arriving while a
//! line is half typed is printed above the prompt, the half-typed line is
//! redrawn and survives, and the prompt follows `/join`.

#![cfg(unix)]

mod client_util;
mod common;

use std::process::Command;

use chatmaster::wire::protocol::{Notification, ServerPackage};
use client_util::LINE_WAIT;
use common::*;
use nix::sys::wait::WaitStatus;
use rexpect::reader::Options;
use rexpect::session::spawn_with_options;

/// The client binary, logging in as alice to `server`, plain output.
fn client_as_alice(server: &TestServer) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatmaster-client"));
    cmd.args([
        "--host",
        "127.0.0.1",
        "--port",
        &server.addr.port().to_string(),
    ])
    .args(["--username", "alice"])
    .env("TERM", "xterm")
    .env("NO_COLOR", "1");
    cmd
}

/// Starts `cmd` in a pseudo-terminal, with the suite's line timeout.
fn spawn_in_pty(cmd: Command) -> rexpect::session::PtySession {
    let timeout = u64::try_from(LINE_WAIT.as_millis()).unwrap();
    spawn_with_options(cmd, Options::new().timeout_ms(Some(timeout))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_message_keeps_the_half_typed_line() {
    let server = TestServer::start_default().await;
    let mut bob = server.login("bob").await;
    let state = std::env::temp_dir().join(format!("chatmaster-pty-{}", std::process::id()));

    let mut cmd = client_as_alice(&server);
    cmd.env("XDG_STATE_HOME", &state);
    let mut p = spawn_in_pty(cmd);

    p.exp_string("[general] alice> ").unwrap();
    match next_note(&mut bob).await {
        Notification::UserJoined { username, .. } => assert_eq!(username, "alice"),
        other => panic!("{other:?}"),
    }

    // Half a line, no Enter; wait until the editor has echoed it.
    p.send("half a li").unwrap();
    p.flush().unwrap();
    p.exp_string("half a li").unwrap();

    bob.message("a message from bob").await.unwrap();
    // The message appears, then the prompt is drawn again with the
    // half-typed text after it.
    p.exp_string("<bob> a message from bob").unwrap();
    p.exp_string("[general] alice> half a li").unwrap();

    // Finishing the line sends it whole, as one message.
    p.send("ne\r").unwrap();
    p.flush().unwrap();
    // bob's own message was acknowledged meanwhile.
    assert!(matches!(
        next(&mut bob).await,
        ServerPackage::Notification(chatmaster::Notification::MessageSent { .. })
    ));
    match next(&mut bob).await {
        ServerPackage::Message(m) => {
            assert_eq!(m.message, "half a line");
            assert_eq!(m.username, "alice");
        }
        other => panic!("{other:?}"),
    }

    // The prompt follows a join once the server has answered.
    p.send("/join rust\r").unwrap();
    p.flush().unwrap();
    p.exp_string("-- you are in rust").unwrap();
    p.exp_string("[rust] alice> ").unwrap();

    // Ctrl-D leaves with exit code 0 after the server confirmed everything.
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    match p.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("{other:?}"),
    }
    match next_note(&mut bob).await {
        Notification::UserLeft { username, .. } => assert_eq!(username, "alice"),
        other => panic!("{other:?}"),
    }
    // The history file was written under XDG_STATE_HOME.
    let history = std::fs::read_to_string(state.join("chatmaster/history")).unwrap();
    assert!(history.contains("half a line"), "{history}");
    let _ = std::fs::remove_dir_all(&state);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_while_typing_exits_5() {
    let server = TestServer::start_default().await;
    let mut cmd = client_as_alice(&server);
    cmd.arg("--no-history");
    let mut p = spawn_in_pty(cmd);
    p.exp_string("[general] alice> ").unwrap();
    p.send("unfinish").unwrap();
    p.flush().unwrap();
    p.exp_string("unfinish").unwrap();
    server.shutdown().await;
    p.exp_string("!! the server is shutting down").unwrap();
    p.exp_string("chatmaster-client: the server shut down")
        .unwrap();
    p.exp_eof().unwrap();
    match p.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => assert_eq!(code, 5),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_asked_without_echo() {
    let server = TestServer::start_default().await;
    let secret = "sekrit-passw0rd";
    let mut cmd = client_as_alice(&server);
    cmd.arg("--no-history");
    let mut p = spawn_in_pty(cmd);
    p.exp_string("[general] alice> ").unwrap();
    p.send("/register\r").unwrap();
    p.flush().unwrap();
    p.exp_string("password: ").unwrap();
    p.send(&format!("{secret}\r")).unwrap();
    p.flush().unwrap();
    let shown = p.exp_string("password again: ").unwrap();
    assert!(!shown.contains(secret), "echoed: {shown:?}");
    p.send(&format!("{secret}\r")).unwrap();
    p.flush().unwrap();
    let shown = p.exp_string("-- alice is now registered").unwrap();
    assert!(!shown.contains(secret), "echoed: {shown:?}");
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();

    // Logging in again: the server wants the password, the client asks.
    let mut cmd = client_as_alice(&server);
    cmd.arg("--no-history");
    let mut p = spawn_in_pty(cmd);
    p.exp_string("password for alice").unwrap();
    p.send(&format!("{secret}\r")).unwrap();
    p.flush().unwrap();
    let shown = p.exp_string("logged in as alice (account)").unwrap();
    assert!(!shown.contains(secret), "echoed: {shown:?}");
    p.exp_string("[general] alice> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    server.shutdown().await;
}

//! The `chatmaster-server` binary itself, as people run it: it builds its
//! own runtime from `--threads` (a single-threaded one for 1, a pool
//! otherwise), logs where it listens, serves, and on SIGTERM tells its
//! clients `server_shutdown` and exits 0.

#![cfg(unix)]

mod common;

use std::time::Duration;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage};
use common::binary::{listening_addr, Binary};
use serde_json::json;

/// How long the binary gets to answer.
const WAIT: Duration = Duration::from_secs(10);

async fn next(c: &mut ClientConnection) -> ServerPackage {
    c.recv_timeout(WAIT).await.expect("a package in time")
}

/// Two users talk through the binary, then SIGTERM ends it gracefully.
async fn serves_and_shuts_down(threads: &str) {
    let server = Binary::start(["--threads", threads, "--db", ":memory:"]);
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

/// The runner does not wait out its timeout for a server that exits
/// before it listens: the start fails at once, with the server's log.
#[test]
#[should_panic(expected = "no log line listening within 20s (Ended)")]
fn a_server_that_never_listens_fails_the_start() {
    Binary::start(["--no-such-flag"]);
}

//! The real client binary in scriptable mode against a real server:
//! clients talking to each other, commands, errors, sanitizing, leaving
//! cleanly and every exit code.

mod client_util;
mod common;

use chatmaster::wire::protocol::{Notification, ServerPackage};
use client_util::*;
use common::*;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_talk_in_a_channel() {
    let server = TestServer::start_default().await;
    let mut alice = Scripted::login(server.addr, "alice");
    let mut bob = Scripted::login(server.addr, "bob");
    alice.expect("-- bob joined general");

    alice.send("/join rust");
    alice.expect("-- you are in rust [owner alice]; users (1): alice");
    bob.expect("-- alice left general");
    bob.send("/join rust");
    bob.expect("-- you are in rust [owner alice]; users (2): alice, bob");
    alice.expect("-- bob joined rust");

    bob.send("hello alice");
    alice.expect_line(|l| is_message(l, "rust", "bob", "hello alice"));
    alice.send("//join is how you get here");
    bob.expect_line(|l| is_message(l, "rust", "alice", "/join is how you get here"));

    bob.send("/rename robert");
    alice.expect("-- bob is now robert");
    bob.expect("-- you are now robert");
    bob.send("still me");
    alice.expect_line(|l| is_message(l, "rust", "robert", "still me"));

    let (status, rest, stderr) = alice.finish();
    assert_eq!(status.code(), Some(0), "{rest:?} {stderr}");
    bob.expect("-- alice left rust");
    let (status, _, stderr) = bob.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_input_exits_only_after_the_server_handled_everything() {
    let server = TestServer::start_default().await;
    let mut watcher = server.login("watcher").await;
    // Everything is written and stdin closed before the client has even
    // logged in: it must still deliver every line, then exit 0.
    // The test server has no flood limit, so pacing is off here (see
    // `a_paste_is_paced_under_the_default_flood_limit` for the paced case).
    let mut client = Scripted::start(
        server.addr,
        "burst",
        &["--username", "burst", "--send-rate", "0"],
    );
    let count = 300;
    for i in 0..count {
        client.send(&format!("line {i}"));
    }
    let (status, out, stderr) = client.finish();
    assert_eq!(status.code(), Some(0), "{out:?} {stderr}");
    match next_note(&mut watcher).await {
        Notification::UserJoined { username, .. } => assert_eq!(username, "burst"),
        other => panic!("{other:?}"),
    }
    for i in 0..count {
        match next(&mut watcher).await {
            ServerPackage::Message(m) => assert_eq!(m.message, format!("line {i}")),
            other => panic!("message {i}: {other:?}"),
        }
    }
    match next_note(&mut watcher).await {
        Notification::UserLeft { username, .. } => assert_eq!(username, "burst"),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mistakes_send_nothing_and_server_errors_are_lines() {
    let server = TestServer::start_default().await;
    let mut alice = Scripted::login(server.addr, "alice");
    let mut watcher = server.login("watcher").await;
    alice.expect("-- watcher joined general");

    for line in ["/jion rust", "/join", "/rename a b", "", "   ", "/"] {
        alice.send(line);
    }
    alice.send("/help");
    alice.expect_line(|l| l.starts_with("/join NAME"));
    // Only the usage lines came out, in order.
    let usage: Vec<_> = alice
        .seen
        .iter()
        .filter(|l| l.starts_with("!! "))
        .cloned()
        .collect();
    assert_eq!(usage.len(), 4, "{usage:?}");
    assert!(
        usage[0].starts_with("!! unknown command /jion"),
        "{usage:?}"
    );
    assert_eq!(usage[1], "!! usage: /join NAME");
    assert_eq!(usage[2], "!! usage: /rename NAME");
    assert!(usage[3].starts_with("!! unknown command /"), "{usage:?}");
    // The watcher got nothing from any of that.
    assert_quiet(&mut watcher).await;

    // A server refusal is one error line; the session goes on.
    alice.send("/leave");
    alice.expect_line(|l| l.starts_with("!! leave: "));
    alice.send("/rename watcher");
    alice.expect_line(|l| l.starts_with("!! rename: "));
    alice.send("/channels");
    alice.expect("-- channels (1): general");
    alice.send("still here");
    match next(&mut watcher).await {
        ServerPackage::Message(m) => assert_eq!(m.message, "still here"),
        other => panic!("{other:?}"),
    }
    let (status, _, stderr) = alice.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_channels_and_invitations() {
    let server = TestServer::start_default().await;
    let mut alice = Scripted::login(server.addr, "alice");
    let mut bob = Scripted::login(server.addr, "bob");
    alice.send("/join den");
    alice.expect_line(|l| l.starts_with("-- you are in den"));
    alice.send("/private");
    alice.expect("-- den is now private");
    bob.send("/join den");
    bob.expect_line(|l| l.starts_with("!! join: ") && l.contains("private"));
    alice.send("/invite bob");
    alice.expect("-- invitation to den sent to bob");
    bob.expect("-- alice invited you to den; type /join den to accept");
    bob.send("/join den");
    bob.expect("-- you are in den [private, owner alice]; users (2): alice, bob");
    alice.expect("-- bob joined den");
    let (status, _, _) = alice.finish();
    assert_eq!(status.code(), Some(0));
    bob.expect("-- alice left den");
    bob.expect("-- bob now owns den");
    let (status, _, _) = bob.finish();
    assert_eq!(status.code(), Some(0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_peoples_text_is_shown_escaped() {
    let server = TestServer::start_default().await;
    let mut alice = Scripted::login(server.addr, "alice");
    let mut mallory = server.login("mallory").await;
    alice.expect("-- mallory joined general");
    mallory
        .message("evil\u{202e}txt.exe\u{2066}x\u{200b}y\nfake line\tz")
        .await
        .unwrap();
    let line = alice.expect_line(|l| l.contains("<mallory>"));
    assert!(
        line.ends_with("<mallory> evil\\u{202e}txt.exe\\u{2066}x\\u{200b}y\\nfake line\\tz"),
        "{line:?}"
    );
    let (status, _, _) = alice.finish();
    assert_eq!(status.code(), Some(0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_from_the_first_line_and_refusal_exit_code() {
    let server = TestServer::start_default().await;
    let _taken = server.login("taken").await;

    // Without --username the first line is the name.
    let mut c = Scripted::start(server.addr, "first-line", &[]);
    c.send("newbie");
    c.expect("-- logged in as newbie (guest); channels (1): general");
    let (status, _, _) = c.finish();
    assert_eq!(status.code(), Some(0));

    // A refused --username is a clean exit 6 with the reason.
    let c = Scripted::start(server.addr, "refused", &["--username", "Taken"]);
    let (status, out, stderr) = c.wait();
    assert_eq!(status.code(), Some(6), "{out:?} {stderr}");
    assert!(
        out.iter().any(|l| l.starts_with("!! login refused: ")),
        "{out:?}"
    );
    assert!(stderr.contains("login refused"), "{stderr}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_exits_5() {
    let server = TestServer::start_default().await;
    let c = Scripted::login(server.addr, "alice");
    server.shutdown().await;
    let (status, out, stderr) = c.wait();
    assert_eq!(status.code(), Some(5), "{out:?} {stderr}");
    assert!(
        out.contains(&"!! the server is shutting down".to_owned()),
        "{out:?}"
    );
    assert!(stderr.contains("shut down"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connection_exits_4() {
    // A "server" that accepts and hangs up at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = Scripted::start(addr, "lost", &["--username", "alice"]);
    let (socket, _) = listener.accept().await.unwrap();
    drop(socket);
    let (status, out, stderr) = c.wait();
    assert_eq!(status.code(), Some(4), "{out:?} {stderr}");
    assert!(stderr.contains("connection lost"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_exits_3() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = Scripted::start(addr, "nobody", &["--username", "alice"]);
    let (status, _, stderr) = c.wait();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn help_lists_exit_codes_and_bad_flags_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatmaster-client"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(help.contains("5  the server shut down"), "{help}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatmaster-client"))
        .args(["--port", "not-a-port"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paste_is_paced_under_the_default_flood_limit() {
    // A server with its default flood control (20 per second, bursts of
    // 40): the client's own pacing keeps under it, every line arrives in
    // order and nothing comes back as an error.
    let server = TestServer::start(chatmaster::Config::default()).await;
    let mut watcher = server.login("watcher").await;
    let mut client = Scripted::start(server.addr, "paster", &["--username", "paster"]);
    let count = 60;
    for i in 0..count {
        client.send(&format!("pasted {i}"));
    }
    let (status, out, stderr) = client.finish();
    assert_eq!(status.code(), Some(0), "{out:?} {stderr}");
    assert!(
        out.iter().all(|l| !l.starts_with("!!")),
        "the server refused something: {out:?}"
    );
    match next_note(&mut watcher).await {
        Notification::UserJoined { username, .. } => assert_eq!(username, "paster"),
        other => panic!("{other:?}"),
    }
    for i in 0..count {
        match next(&mut watcher).await {
            ServerPackage::Message(m) => assert_eq!(m.message, format!("pasted {i}")),
            other => panic!("line {i}: {other:?}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_name_from_stdin_is_followed_by_the_next_line() {
    let server = TestServer::start_default().await;
    // alice is taken, and waits in channel x.
    let mut alice = server.login("alice").await;
    alice
        .command("join", Some(serde_json::json!({"channel": "x"})))
        .await
        .unwrap();
    match next_note(&mut alice).await {
        Notification::UserJoined { channel, .. } => assert_eq!(channel, "x"),
        other => panic!("{other:?}"),
    }

    // No --username: the first line is refused, the next one is the next
    // try. All lines are written at once; the client reads one per need.
    let mut c = Scripted::start(server.addr, "retry", &[]);
    for line in ["alice", "alice2", "/join x", "hello"] {
        c.send(line);
    }
    c.expect("!! login refused: Username is already taken.");
    c.expect("-- logged in as alice2 (guest); channels (2): general, x");
    match next_note(&mut alice).await {
        Notification::UserJoined { username, .. } => assert_eq!(username, "alice2"),
        other => panic!("{other:?}"),
    }
    match next(&mut alice).await {
        ServerPackage::Message(m) => {
            assert_eq!(
                (m.username.as_str(), m.message.as_str()),
                ("alice2", "hello")
            )
        }
        other => panic!("{other:?}"),
    }
    let (status, out, stderr) = c.finish();
    assert_eq!(status.code(), Some(0), "{out:?} {stderr}");
    match next_note(&mut alice).await {
        Notification::UserLeft { username, .. } => assert_eq!(username, "alice2"),
        other => panic!("{other:?}"),
    }

    // Input that ends after a refused name: exit 6, with the reason.
    let mut c = Scripted::start(server.addr, "gives-up", &[]);
    c.send("ALICE");
    c.expect("!! login refused: Username is already taken.");
    let (status, out, stderr) = c.finish();
    assert_eq!(status.code(), Some(6), "{out:?} {stderr}");
    assert!(stderr.contains("login refused"), "{stderr}");
    assert_quiet(&mut alice).await;
    server.shutdown().await;
}

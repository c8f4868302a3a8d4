//! Direct messages against the real server: delivered live wherever the
//! recipient is, kept for an offline account and delivered after its next
//! login (in order, once, in pages), refused for oneself, unknown names and
//! offline guests; `random`; the sender's `message_sent` with `to`,
//! `queued`, `random` and `away`. The second half runs the binary on a file
//! and kills it (`kill -9`) with a backlog waiting and after delivering it.

mod common;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{ChatMessage, Notification, ServerPackage};
use chatmaster::Config;
use common::*;
use serde_json::json;

const PW: &str = "correct horse battery";

async fn send_direct(c: &mut ClientConnection, to: &str, text: &str) {
    c.command("direct", Some(json!({"username": to, "message": text})))
        .await
        .expect("send direct");
}

/// The next package, which must be a chat message.
async fn next_message(c: &mut ClientConnection) -> ChatMessage {
    match next(c).await {
        ServerPackage::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next package, which must be `message_sent`; returns its fields.
async fn next_sent(
    c: &mut ClientConnection,
) -> (
    i64,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<bool>,
    Option<String>,
) {
    match next_note(c).await {
        Notification::MessageSent {
            id,
            channel,
            to,
            queued,
            random,
            away,
            ..
        } => (id, channel, to, queued, random, away),
        other => panic!("expected message_sent, got {other:?}"),
    }
}

/// Logs `name` in as a guest and registers it with [`PW`].
async fn registered(server: &TestServer, name: &str) -> ClientConnection {
    let mut c = server.login(name).await;
    c.command("register", Some(json!({"password": PW})))
        .await
        .unwrap();
    assert!(matches!(
        next_note(&mut c).await,
        Notification::Registered { .. }
    ));
    c
}

/// Logs in to `name`'s account; the session and own `user_joined` are consumed.
async fn account_login(addr: impl tokio::net::ToSocketAddrs, name: &str) -> ClientConnection {
    let mut c = ClientConnection::connect(addr).await.expect("connect");
    next_login_request(&mut c).await;
    let s = login_with(&mut c, name, Some(PW)).await;
    assert!(s.status, "{s:?}");
    c
}

/// Waits until the hub no longer lists `name` (its disconnect was handled).
async fn until_gone(server: &TestServer, name: &str) {
    until_state(server, &format!("{name} gone"), |s| {
        s.users.iter().all(|(n, _)| n != name)
    })
    .await;
}

#[tokio::test]
async fn a_direct_message_reaches_one_user_wherever_they_are() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    // bob's and carol's arrivals.
    for _ in 0..2 {
        next_note(&mut alice).await;
    }
    next_note(&mut bob).await;
    bob.command("join", Some(json!({"channel": "elsewhere"})))
        .await
        .unwrap();
    loop {
        if let Notification::UserJoined { users: Some(_), .. } = next_note(&mut bob).await {
            break;
        }
    }
    next_note(&mut alice).await; // bob left general
    next_note(&mut carol).await;

    send_direct(&mut alice, "BOB", "psst").await;
    let m = next_message(&mut bob).await;
    assert_eq!(
        (m.username.as_str(), m.to.as_deref(), m.channel.as_deref()),
        ("alice", Some("bob"), None)
    );
    assert_eq!((m.message.as_str(), m.offline), ("psst", None));
    let (id, channel, to, queued, random, away) = next_sent(&mut alice).await;
    assert_eq!(id, m.id);
    assert_eq!(
        (channel, to.as_deref(), queued, random, away),
        (None, Some("bob"), None, None, None)
    );
    // A channel message and a direct one share one sequence of ids.
    alice.message("to general").await.unwrap();
    let in_general = next_message(&mut carol).await;
    assert!(in_general.id > m.id);
    let (channel_ack, ..) = next_sent(&mut alice).await;
    assert_eq!(channel_ack, in_general.id);
    assert_quiet(&mut alice).await;
    assert_quiet(&mut bob).await;
    assert_quiet(&mut carol).await;
    server.shutdown().await;
}

#[tokio::test]
async fn refused_direct_messages_say_why() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    next_note(&mut alice).await;
    for (to, text, says) in [
        ("alice", "hi", "yourself"),
        ("ALICE", "hi", "yourself"),
        ("nobody", "hi", "no account"),
        ("not a name!", "hi", "no account"),
        ("bob", "", "empty"),
        ("bob", "bell\u{7}", "control"),
    ] {
        send_direct(&mut alice, to, text).await;
        let (kind, message) = next_error(&mut alice).await;
        assert_eq!(kind, "direct", "{to} {text:?}: {message}");
        assert!(message.contains(says), "{to} {text:?}: {message}");
    }
    // A guest who left is gone: nothing is kept for a guest.
    drop(bob);
    until_gone(&server, "bob").await;
    next_note(&mut alice).await; // user_left
    send_direct(&mut alice, "bob", "still there?").await;
    let (kind, _) = next_error(&mut alice).await;
    assert_eq!(kind, "direct");
    // Malformed parameters are a protocol error, as for every command.
    alice
        .command("direct", Some(json!({"username": "bob"})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut alice).await.0, "protocol");
    bob = server.login("bob").await;
    assert_quiet(&mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_offline_account_gets_its_messages_after_its_next_login_in_order_once() {
    let server = TestServer::start_default().await;
    let bob = registered(&server, "bob").await;
    drop(bob);
    until_gone(&server, "bob").await;
    let mut alice = server.login("alice").await;
    let mut sent = Vec::new();
    for i in 0..5 {
        send_direct(&mut alice, "Bob", &format!("kept {i}")).await;
        let (id, channel, to, queued, ..) = next_sent(&mut alice).await;
        assert_eq!(
            (channel, to.as_deref(), queued),
            (None, Some("bob"), Some(true))
        );
        sent.push(id);
    }

    let mut bob = account_login(server.addr, "bob").await;
    for (i, id) in sent.iter().enumerate() {
        let m = next_message(&mut bob).await;
        assert_eq!(m.id, *id);
        assert_eq!(m.message, format!("kept {i}"));
        assert_eq!(
            (m.username.as_str(), m.to.as_deref(), m.offline),
            ("alice", Some("bob"), Some(true))
        );
    }
    // alice sees bob arrive; from now on his messages come live.
    loop {
        if let Notification::UserJoined { username, .. } = next_note(&mut alice).await {
            assert_eq!(username, "bob");
            break;
        }
    }
    send_direct(&mut alice, "bob", "live now").await;
    let m = next_message(&mut bob).await;
    assert_eq!((m.message.as_str(), m.offline), ("live now", None));
    assert_eq!(next_sent(&mut alice).await.3, None, "not queued");
    assert_quiet(&mut bob).await;

    // Delivered once: the next login brings nothing again.
    drop(bob);
    until_gone(&server, "bob").await;
    let mut bob = account_login(server.addr, "bob").await;
    assert_quiet(&mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_large_backlog_comes_in_pages_through_a_small_queue() {
    let server = TestServer::start(Config {
        backlog_page: 3,
        outbound_queue: 4,
        ..test_config()
    })
    .await;
    let bob = registered(&server, "bob").await;
    drop(bob);
    until_gone(&server, "bob").await;
    let mut alice = server.login("alice").await;
    const N: usize = 40;
    // One at a time: alice's own queue holds 4 acknowledgements at most.
    let mut acks = Vec::new();
    for i in 0..N {
        send_direct(&mut alice, "bob", &format!("m{i}")).await;
        acks.extend(expect_acks(&mut alice, 1).await);
    }
    let mut bob = account_login(server.addr, "bob").await;
    for (i, id) in acks.iter().enumerate() {
        let m = next_message(&mut bob).await;
        assert_eq!((m.id, m.message), (*id, format!("m{i}")));
    }
    assert_quiet(&mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn messages_sent_while_a_backlog_is_delivered_come_after_it() {
    let server = TestServer::start(Config {
        backlog_page: 1,
        ..test_config()
    })
    .await;
    let bob = registered(&server, "bob").await;
    drop(bob);
    until_gone(&server, "bob").await;
    let mut alice = server.login("alice").await;
    const KEPT: usize = 100;
    for i in 0..KEPT {
        send_direct(&mut alice, "bob", &format!("kept {i}")).await;
    }
    expect_acks(&mut alice, KEPT).await;
    // bob logs in; as soon as alice sees him arrive she writes again,
    // while his backlog (a page of one at a time) is still coming.
    let mut bob = ClientConnection::connect(server.addr).await.unwrap();
    next_login_request(&mut bob).await;
    bob.command("login", Some(json!({"username": "bob", "password": PW})))
        .await
        .unwrap();
    loop {
        if let Notification::UserJoined { username, .. } = next_note(&mut alice).await {
            assert_eq!(username, "bob");
            break;
        }
    }
    const LIVE: usize = 20;
    for i in 0..LIVE {
        send_direct(&mut alice, "bob", &format!("live {i}")).await;
    }
    for _ in 0..LIVE {
        let (.., queued, _, _) = next_sent(&mut alice).await;
        assert_eq!(queued, None, "bob is online: not kept for later");
    }
    assert!(next_session(&mut bob).await.status);
    let mut texts = Vec::new();
    let mut last = 0;
    while texts.len() < KEPT + LIVE {
        match next(&mut bob).await {
            ServerPackage::Message(m) => {
                assert!(m.id > last, "{m:?} after id {last}");
                last = m.id;
                let kept = m.message.starts_with("kept");
                assert_eq!(m.offline, kept.then_some(true), "{m:?}");
                texts.push(m.message);
            }
            ServerPackage::Notification(Notification::UserJoined { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    let expected: Vec<String> = (0..KEPT)
        .map(|i| format!("kept {i}"))
        .chain((0..LIVE).map(|i| format!("live {i}")))
        .collect();
    assert_eq!(texts, expected);
    assert_quiet(&mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_offline_accounts_backlog_is_capped() {
    let server = TestServer::start(Config {
        max_backlog: 3,
        ..test_config()
    })
    .await;
    let bob = registered(&server, "bob").await;
    drop(bob);
    until_gone(&server, "bob").await;
    let mut alice = server.login("alice").await;
    for i in 0..3 {
        send_direct(&mut alice, "bob", &format!("m{i}")).await;
        assert_eq!(next_sent(&mut alice).await.3, Some(true));
    }
    send_direct(&mut alice, "bob", "one too many").await;
    let (kind, message) = next_error(&mut alice).await;
    assert_eq!(kind, "direct");
    assert!(message.contains("3 direct messages waiting"), "{message}");
    // Once bob has read them there is room again.
    let mut bob = account_login(server.addr, "bob").await;
    for i in 0..3 {
        assert_eq!(next_message(&mut bob).await.message, format!("m{i}"));
    }
    assert_quiet(&mut bob).await;
    drop(bob);
    until_gone(&server, "bob").await;
    send_direct(&mut alice, "bob", "room again").await;
    loop {
        match next_note(&mut alice).await {
            Notification::MessageSent { queued, .. } => break assert_eq!(queued, Some(true)),
            Notification::UserJoined { .. } | Notification::UserLeft { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn away_text_rides_on_the_senders_acknowledgement() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    next_note(&mut alice).await;
    bob.command("away", Some(json!({"message": "at lunch"})))
        .await
        .unwrap();
    assert_eq!(
        next_note(&mut bob).await,
        Notification::Away {
            message: Some("at lunch".into())
        }
    );
    send_direct(&mut alice, "bob", "you there?").await;
    assert_eq!(next_message(&mut bob).await.message, "you there?");
    let (.., away) = next_sent(&mut alice).await;
    assert_eq!(away.as_deref(), Some("at lunch"));
    // Absent (or empty) clears it.
    bob.command("away", None).await.unwrap();
    assert_eq!(
        next_note(&mut bob).await,
        Notification::Away { message: None }
    );
    send_direct(&mut alice, "bob", "back?").await;
    next_message(&mut bob).await;
    assert_eq!(next_sent(&mut alice).await.5, None);
    // A text that breaks the rules is refused with the command's type.
    bob.command("away", Some(json!({"message": "x".repeat(301)})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut bob).await.0, "away");
    server.shutdown().await;
}

#[tokio::test]
async fn random_picks_another_user_who_does_not_ignore_the_sender() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    alice
        .command("random", Some(json!({"message": "anyone?"})))
        .await
        .unwrap();
    let (kind, message) = next_error(&mut alice).await;
    assert_eq!(kind, "random", "{message}");

    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    for _ in 0..2 {
        next_note(&mut alice).await;
    }
    next_note(&mut bob).await;
    // carol ignores alice: every random message of alice's goes to bob.
    carol
        .command("ignore", Some(json!({"username": "Alice"})))
        .await
        .unwrap();
    assert!(matches!(
        next_note(&mut carol).await,
        Notification::IgnoreList { .. }
    ));
    for i in 0..5 {
        alice
            .command("random", Some(json!({"message": format!("r{i}")})))
            .await
            .unwrap();
        let m = next_message(&mut bob).await;
        assert_eq!(
            (m.message, m.to.as_deref(), m.channel),
            (format!("r{i}"), Some("bob"), None)
        );
        let (id, _, to, _, random, _) = next_sent(&mut alice).await;
        assert_eq!((id, to.as_deref(), random), (m.id, Some("bob"), Some(true)));
    }
    assert_quiet(&mut carol).await;
    server.shutdown().await;
}

#[cfg(unix)]
mod binary {
    use super::*;
    use common::binary::Binary;

    async fn registered_at(addr: &str, name: &str) -> ClientConnection {
        let mut c = ClientConnection::connect(addr).await.expect("connect");
        next_login_request(&mut c).await;
        assert!(login_with(&mut c, name, None).await.status);
        c.command("register", Some(json!({"password": PW})))
            .await
            .unwrap();
        assert!(matches!(
            next_note(&mut c).await,
            Notification::Registered { .. }
        ));
        c
    }

    async fn guest_at(addr: &str, name: &str) -> ClientConnection {
        let mut c = ClientConnection::connect(addr).await.expect("connect");
        next_login_request(&mut c).await;
        assert!(login_with(&mut c, name, None).await.status);
        c
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_message_survives_kill_9_and_is_delivered_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let server = Binary::on_db(&db);
        let addr = server.addr.clone();
        let bob = registered_at(&addr, "bob").await;
        // bob leaves; a ping from someone else proves the hub saw it.
        drop(bob);
        let mut alice = guest_at(&addr, "alice").await;
        let mut acked = Vec::new();
        for i in 0..3 {
            // Sent again while it is not kept: until the hub notices bob's
            // old session is gone, a message goes to it.
            let id = 'kept: loop {
                send_direct(&mut alice, "bob", &format!("kept {i}")).await;
                loop {
                    match next(&mut alice).await {
                        ServerPackage::Notification(Notification::MessageSent {
                            id,
                            queued,
                            ..
                        }) => match queued {
                            Some(true) => break 'kept id,
                            _ => break,
                        },
                        ServerPackage::Notification(_) => {}
                        other => panic!("{other:?}"),
                    }
                }
            };
            acked.push(id);
        }
        server.kill_hard();

        let server = Binary::on_db(&db);
        let addr = server.addr.clone();
        let mut bob = account_login(addr.as_str(), "bob").await;
        let mut got = Vec::new();
        while got.len() < acked.len() {
            match next(&mut bob).await {
                ServerPackage::Message(m) if m.offline == Some(true) => got.push(m.id),
                ServerPackage::Message(m) => panic!("live message before the backlog: {m:?}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, acked);
        assert_quiet(&mut bob).await;
        drop(bob);
        server.kill_hard();

        // Delivered and recorded: a restart brings it no more.
        let server = Binary::on_db(&db);
        let mut bob = account_login(server.addr.as_str(), "bob").await;
        assert_quiet(&mut bob).await;
        server.shut_down();
    }
}

//! The conversation: login, every command and notification, and the errors
//! of each, against a real server on 127.0.0.1:0.

mod common;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage};
use chatmaster::Config;
use common::*;
use serde_json::json;

fn joined(n: Notification) -> (String, String, Option<Vec<String>>) {
    match n {
        Notification::UserJoined {
            username,
            channel,
            users,
            ..
        } => (username, channel, users),
        other => panic!("expected user_joined, got {other:?}"),
    }
}

/// alice, bob and carol logged in, in general, with the join traffic read.
async fn three_users(
    server: &TestServer,
) -> (ClientConnection, ClientConnection, ClientConnection) {
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let carol = server.login("carol").await;
    joined(next_note(&mut alice).await);
    joined(next_note(&mut alice).await);
    joined(next_note(&mut bob).await);
    (alice, bob, carol)
}

/// Moves `who` out of general into `channel`, reading the resulting
/// notifications on `who` and on the `stayers` left behind in general.
async fn move_to<const N: usize>(
    who: &mut ClientConnection,
    channel: &str,
    stayers: [&mut ClientConnection; N],
) {
    who.command("join", Some(json!({ "channel": channel })))
        .await
        .unwrap();
    for s in stayers {
        left(next_note(s).await);
    }
    joined(next_note(who).await);
}

fn left(n: Notification) -> (String, String) {
    match n {
        Notification::UserLeft {
            username, channel, ..
        } => (username, channel),
        other => panic!("expected user_left, got {other:?}"),
    }
}

#[tokio::test]
async fn login_success_tells_the_channel_and_lists_channels() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.connect().await;
    let session = bob.login("Bob", WAIT).await.unwrap();
    assert!(session.status);
    assert_eq!(session.username.as_deref(), Some("Bob"));
    assert_eq!(session.channel.as_deref(), Some("general"));
    assert_eq!(session.channels, Some(vec!["general".to_string()]));
    assert_eq!(session.channels_total, Some(1));
    // Bob's own copy lists the members, sorted case-insensitively.
    match next_note(&mut bob).await {
        Notification::UserJoined {
            username,
            channel,
            users,
            users_total,
            owner,
            private,
            ..
        } => {
            assert_eq!((username.as_str(), channel.as_str()), ("Bob", "general"));
            assert_eq!(users, Some(vec!["alice".into(), "Bob".into()]));
            assert_eq!(users_total, Some(2));
            assert_eq!(owner, None);
            assert_eq!(private, Some(false));
        }
        other => panic!("{other:?}"),
    }
    let (who, channel, users) = joined(next_note(&mut alice).await);
    assert_eq!(
        (who.as_str(), channel.as_str(), users),
        ("Bob", "general", None)
    );
    assert_quiet(&mut alice).await;
    assert_quiet(&mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn refused_login_can_be_retried_on_the_same_connection() {
    let server = TestServer::start_default().await;
    let _alice = server.login("alice").await;
    let mut c = server.connect().await;
    let s = c.login("ALICE", WAIT).await.unwrap();
    assert!(!s.status);
    assert_eq!(s.reason.as_deref(), Some("Username is already taken."));
    assert_eq!(s.username, None);
    // A new login request follows the refusal.
    for bad in ["", "has space", "x".repeat(33).as_str(), "emoji🙂", "tab\t"] {
        next_login_request(&mut c).await;
        c.command("login", Some(json!({ "username": bad })))
            .await
            .unwrap();
        let s = next_session(&mut c).await;
        assert!(!s.status, "{bad:?} accepted");
        assert!(s.reason.is_some());
    }
    next_login_request(&mut c).await;
    c.command("login", Some(json!({"username": "Ålice.2"})))
        .await
        .unwrap();
    assert!(next_session(&mut c).await.status);
    server.shutdown().await;
}

#[tokio::test]
async fn before_login_everything_else_is_a_login_error() {
    let server = TestServer::start_default().await;
    let mut c = server.connect().await;
    let _request = next(&mut c).await;
    c.message("hi").await.unwrap();
    assert_eq!(next_error(&mut c).await.0, "login");
    c.command("join", Some(json!({"channel": "x"})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut c).await.0, "login");
    c.command("login", Some(json!({"name": "x"})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut c).await.0, "protocol");
    // Still usable.
    c.command("login", Some(json!({"username": "late"})))
        .await
        .unwrap();
    assert!(next_session(&mut c).await.status);
    server.shutdown().await;
}

#[tokio::test]
async fn second_login_is_an_error() {
    let server = TestServer::start_default().await;
    let mut a = server.login("alice").await;
    a.command("login", Some(json!({"username": "other"})))
        .await
        .unwrap();
    let (kind, message) = next_error(&mut a).await;
    assert_eq!(kind, "login");
    assert!(message.contains("rename"), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn login_timeout_closes_with_an_error() {
    let server = TestServer::start(Config {
        login_timeout: std::time::Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let mut c = server.connect().await;
    let _request = next(&mut c).await;
    let (kind, _) = next_error(&mut c).await;
    assert_eq!(kind, "login");
    expect_closed(&mut c).await;
    server.shutdown().await;
}

#[tokio::test]
async fn messages_reach_the_channel_but_not_the_sender() {
    let server = TestServer::start_default().await;
    let (mut alice, mut bob, mut carol) = three_users(&server).await;
    move_to(&mut carol, "elsewhere", [&mut alice, &mut bob]).await;

    alice.message("line one\n\tindented 🙂").await.unwrap();
    let delivered = match next(&mut bob).await {
        ServerPackage::Message(m) => {
            assert_eq!(m.message, "line one\n\tindented 🙂");
            assert_eq!(m.username, "alice");
            assert_eq!(m.channel.as_deref(), Some("general"));
            assert_eq!((m.to.as_deref(), m.offline), (None, None));
            // RFC 3339, UTC, milliseconds: 2026-11-21T10:00:00.123Z
            let ts = chrono::DateTime::parse_from_rfc3339(&m.timestamp).unwrap();
            assert_eq!(m.timestamp.len(), 24, "{}", m.timestamp);
            assert!(m.timestamp.ends_with('Z'));
            let age = chrono::Utc::now().signed_duration_since(ts);
            assert!(age.num_seconds().abs() < 60);
            assert!(m.id > 0, "{m:?}");
            m
        }
        other => panic!("{other:?}"),
    };
    // The sender's acknowledgement names the same message.
    assert_eq!(
        next_note(&mut alice).await,
        Notification::MessageSent {
            id: delivered.id,
            channel: Some("general".into()),
            to: None,
            timestamp: delivered.timestamp.clone(),
            queued: None,
            random: None,
            away: None,
        }
    );
    assert_quiet(&mut alice).await;
    assert_quiet(&mut bob).await;
    assert_quiet(&mut carol).await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_messages_are_refused() {
    let server = TestServer::start(Config {
        max_message_bytes: 10,
        ..test_config()
    })
    .await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    joined(next_note(&mut alice).await);
    for bad in ["", "12345678901", "bell\u{7}", "esc\u{1b}[2J", "nul\0"] {
        alice.message(bad).await.unwrap();
        let (kind, message) = next_error(&mut alice).await;
        assert_eq!(kind, "message", "{bad:?}");
        assert!(!message.is_empty());
    }
    alice.message("1234567890").await.unwrap();
    match next(&mut bob).await {
        ServerPackage::Message(m) => assert_eq!(m.message, "1234567890"),
        other => panic!("{other:?}"),
    }
    assert_quiet(&mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn join_creates_moves_and_removes_empty_channels() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    joined(next_note(&mut alice).await);

    alice
        .command("join", Some(json!({"channel": "Rust"})))
        .await
        .unwrap();
    assert_eq!(
        left(next_note(&mut bob).await),
        ("alice".into(), "general".into())
    );
    match next_note(&mut alice).await {
        Notification::UserJoined {
            username,
            channel,
            users,
            users_total,
            owner,
            private,
            ..
        } => {
            assert_eq!((username.as_str(), channel.as_str()), ("alice", "Rust"));
            assert_eq!(users, Some(vec!["alice".into()]));
            assert_eq!(users_total, Some(1));
            assert_eq!(owner.as_deref(), Some("alice"));
            assert_eq!(private, Some(false));
        }
        other => panic!("{other:?}"),
    }
    // Case-insensitive: "rust" is the same channel, keeping its spelling.
    bob.command("join", Some(json!({"channel": "rust"})))
        .await
        .unwrap();
    assert_eq!(joined(next_note(&mut alice).await).0, "bob");
    let (who, channel, users) = joined(next_note(&mut bob).await);
    assert_eq!((who.as_str(), channel.as_str()), ("bob", "Rust"));
    assert_eq!(users, Some(vec!["alice".into(), "bob".into()]));

    bob.command("join", Some(json!({"channel": "RUST"})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut bob).await.0, "join");
    bob.command("join", Some(json!({"channel": "bad name"})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut bob).await.0, "join");
    bob.command("join", Some(json!({"channel": ""})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut bob).await.0, "join");

    // Both leave: the channel disappears.
    alice.command("leave", None).await.unwrap();
    assert_eq!(
        left(next_note(&mut bob).await),
        ("alice".into(), "Rust".into())
    );
    // Ownership passed to bob, the longest-present member.
    match next_note(&mut bob).await {
        Notification::ChannelUpdate {
            channel,
            private,
            owner,
            ..
        } => {
            assert_eq!(
                (channel.as_str(), private, owner.as_deref()),
                ("Rust", false, Some("bob"))
            );
        }
        other => panic!("{other:?}"),
    }
    joined(next_note(&mut alice).await);
    bob.command("leave", Some(json!({}))).await.unwrap();
    assert_eq!(joined(next_note(&mut alice).await).0, "bob");
    let snapshot = server.hub.snapshot();
    assert_eq!(snapshot.channels.len(), 1, "{snapshot:?}");
    assert_eq!(snapshot.channels[0].name, "general");
    server.shutdown().await;
}

#[tokio::test]
async fn leave_in_general_is_an_error() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    alice.command("leave", None).await.unwrap();
    let (kind, message) = next_error(&mut alice).await;
    assert_eq!(kind, "leave");
    assert!(message.contains("general"));
    server.shutdown().await;
}

#[tokio::test]
async fn rename_tells_the_channel_including_the_user() {
    let server = TestServer::start_default().await;
    let (mut alice, mut bob, mut carol) = three_users(&server).await;
    move_to(&mut carol, "away", [&mut alice, &mut bob]).await;

    bob.command("rename", Some(json!({"username": "robert"})))
        .await
        .unwrap();
    for c in [&mut alice, &mut bob] {
        match next_note(c).await {
            Notification::UserRename {
                old_username,
                new_username,
            } => {
                assert_eq!(
                    (old_username.as_str(), new_username.as_str()),
                    ("bob", "robert")
                )
            }
            other => panic!("{other:?}"),
        }
    }
    assert_quiet(&mut carol).await;
    // Taken (case-insensitively), invalid, unchanged: errors of type rename.
    for bad in ["ALICE", "carol", "no way", "robert"] {
        bob.command("rename", Some(json!({"username": bad})))
            .await
            .unwrap();
        assert_eq!(next_error(&mut bob).await.0, "rename", "{bad}");
    }
    // Respelling one's own name is allowed.
    bob.command("rename", Some(json!({"username": "Robert"})))
        .await
        .unwrap();
    match next_note(&mut bob).await {
        Notification::UserRename { new_username, .. } => assert_eq!(new_username, "Robert"),
        other => panic!("{other:?}"),
    }
    // The old name is free again.
    let _bob2 = server.login("bob").await;
    server.shutdown().await;
}

#[tokio::test]
async fn private_channels_need_an_invitation_and_are_unlisted() {
    let server = TestServer::start_default().await;
    let (mut alice, mut bob, mut carol) = three_users(&server).await;

    alice.command("private", None).await.unwrap();
    assert_eq!(next_error(&mut alice).await.0, "private"); // general
    move_to(&mut alice, "secret", [&mut bob, &mut carol]).await;
    bob.command("join", Some(json!({"channel": "secret"})))
        .await
        .unwrap();
    left(next_note(&mut carol).await);
    joined(next_note(&mut alice).await);
    joined(next_note(&mut bob).await);

    bob.command("private", None).await.unwrap();
    let (kind, message) = next_error(&mut bob).await;
    assert_eq!(kind, "private");
    assert!(message.contains("alice"), "{message}");
    alice.command("private", None).await.unwrap();
    for c in [&mut alice, &mut bob] {
        match next_note(c).await {
            Notification::ChannelUpdate {
                channel,
                private,
                owner,
                ..
            } => {
                assert_eq!(
                    (channel.as_str(), private, owner.as_deref()),
                    ("secret", true, Some("alice"))
                )
            }
            other => panic!("{other:?}"),
        }
    }
    alice.command("private", None).await.unwrap();
    assert_eq!(next_error(&mut alice).await.0, "private");

    carol.command("channels", None).await.unwrap();
    match next_note(&mut carol).await {
        Notification::ChannelList {
            channels,
            channels_total,
        } => {
            assert_eq!(channels, vec!["general".to_string()]);
            assert_eq!(channels_total, 1);
        }
        other => panic!("{other:?}"),
    }
    carol
        .command("join", Some(json!({"channel": "SECRET"})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut carol).await.0, "join");

    // Any member may invite; the invitation works once.
    bob.command("invite", Some(json!({"username": "Carol"})))
        .await
        .unwrap();
    match next_note(&mut carol).await {
        Notification::Invited { channel, by } => {
            assert_eq!((channel.as_str(), by.as_str()), ("secret", "bob"))
        }
        other => panic!("{other:?}"),
    }
    match next_note(&mut bob).await {
        Notification::InviteSent { channel, username } => {
            assert_eq!((channel.as_str(), username.as_str()), ("secret", "carol"))
        }
        other => panic!("{other:?}"),
    }
    carol
        .command("join", Some(json!({"channel": "secret"})))
        .await
        .unwrap();
    joined(next_note(&mut alice).await);
    joined(next_note(&mut bob).await);
    joined(next_note(&mut carol).await);
    carol.command("leave", None).await.unwrap();
    left(next_note(&mut alice).await);
    left(next_note(&mut bob).await);
    joined(next_note(&mut carol).await);
    carol
        .command("join", Some(json!({"channel": "secret"})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut carol).await.0, "join");

    // Invitation errors.
    for (who, why) in [("nobody", "unknown"), ("alice", "self"), ("bob", "member")] {
        alice
            .command("invite", Some(json!({"username": who})))
            .await
            .unwrap();
        assert_eq!(next_error(&mut alice).await.0, "invite", "{why}");
    }

    // Public again: listed and joinable.
    alice.command("public", None).await.unwrap();
    for c in [&mut alice, &mut bob] {
        match next_note(c).await {
            Notification::ChannelUpdate { private, .. } => assert!(!private),
            other => panic!("{other:?}"),
        }
    }
    bob.command("public", None).await.unwrap();
    assert_eq!(next_error(&mut bob).await.0, "public");
    carol.command("channel_list", None).await.unwrap();
    match next_note(&mut carol).await {
        Notification::ChannelList { channels, .. } => {
            assert_eq!(channels, vec!["general".to_string(), "secret".to_string()])
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn owner_leaving_a_private_channel_hands_it_on() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    for (c, name) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        c.command("join", Some(json!({"channel": "club"})))
            .await
            .unwrap();
        // Wait for this join to be done before the next one is sent.
        loop {
            if let Notification::UserJoined {
                username, channel, ..
            } = next_note(c).await
            {
                if username == name && channel == "club" {
                    break;
                }
            }
        }
    }
    alice.command("private", None).await.unwrap();
    // Drain everything so far on each client with a ping barrier.
    for c in [&mut alice, &mut bob, &mut carol] {
        c.command("ping", Some(json!({"token": "sync"})))
            .await
            .unwrap();
        loop {
            if let ServerPackage::Notification(Notification::Pong { .. }) = next(c).await {
                break;
            }
        }
    }
    drop(alice); // disconnecting is leaving too
    for c in [&mut bob, &mut carol] {
        assert_eq!(left(next_note(c).await), ("alice".into(), "club".into()));
        match next_note(c).await {
            Notification::ChannelUpdate { owner, private, .. } => {
                assert_eq!(owner.as_deref(), Some("bob"));
                assert!(private);
            }
            other => panic!("{other:?}"),
        }
    }
    carol.command("public", None).await.unwrap();
    assert_eq!(next_error(&mut carol).await.0, "public");
    bob.command("public", None).await.unwrap();
    assert!(matches!(
        next_note(&mut bob).await,
        Notification::ChannelUpdate { private: false, .. }
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn lists_are_capped_and_carry_the_total() {
    let server = TestServer::start(Config {
        max_list_names: 2,
        ..test_config()
    })
    .await;
    let mut users = Vec::new();
    for name in ["dave", "Carol", "bob"] {
        users.push(server.login(name).await);
    }
    for ch in ["zeta", "Alpha", "mid"] {
        let mut c = server.login(&format!("owner-{ch}")).await;
        c.command("join", Some(json!({"channel": ch})))
            .await
            .unwrap();
        users.push(c);
    }
    let mut alice = server.connect().await;
    let session = alice.login("alice", WAIT).await.unwrap();
    assert_eq!(
        session.channels,
        Some(vec!["Alpha".into(), "general".into()])
    );
    assert_eq!(session.channels_total, Some(4));
    match next_note(&mut alice).await {
        Notification::UserJoined {
            users, users_total, ..
        } => {
            assert_eq!(users, Some(vec!["alice".into(), "bob".into()]));
            assert_eq!(users_total, Some(4));
        }
        other => panic!("{other:?}"),
    }
    alice.command("channels", None).await.unwrap();
    match next_note(&mut alice).await {
        Notification::ChannelList {
            channels,
            channels_total,
        } => {
            assert_eq!(channels, vec!["Alpha".to_string(), "general".to_string()]);
            assert_eq!(channels_total, 4);
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn ping_echoes_its_token_and_bad_parameters_are_protocol_errors() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    alice.command("ping", None).await.unwrap();
    assert_eq!(
        next_note(&mut alice).await,
        Notification::Pong { token: None }
    );
    alice
        .command("ping", Some(json!({"token": "x".repeat(65)})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut alice).await.0, "ping");
    for (command, params) in [
        ("join", json!({})),
        ("join", json!({"channel": 7})),
        ("join", json!({"channel": "a", "extra": true})),
        ("leave", json!({"unexpected": 1})),
        ("rename", json!("string")),
        ("invite", json!([])),
        ("nosuchcommand", json!({})),
    ] {
        alice.command(command, Some(params.clone())).await.unwrap();
        let (kind, message) = next_error(&mut alice).await;
        assert_eq!(kind, "protocol", "{command} {params}");
        assert!(!message.is_empty());
    }
    assert_quiet(&mut alice).await;
    server.shutdown().await;
}

//! Moderation against the real server with several users: `kick`, `ban`,
//! `unban`, `bans`, `transfer`, `topic`, `delete_channel`, server
//! operators (`--oper`) and `notice`, with every refusal; the second half
//! runs the `chatmaster-server` binary on a database file and checks that
//! bans, topics, transfers and deletions of registered channels survive
//! `kill -9`.

mod common;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage};
use chatmaster::Config;
use common::*;
use serde_json::{json, Value};

const PW: &str = "correct horse battery";

async fn send(c: &mut ClientConnection, command: &str, params: Value) {
    c.command(command, Some(params)).await.expect("send");
}

/// Everything that arrives until a pong: syncs a client before the part
/// of a test that checks exact sequences.
async fn drain(c: &mut ClientConnection) -> Vec<ServerPackage> {
    c.command("ping", Some(json!({"token": "drain"})))
        .await
        .expect("ping");
    let mut seen = Vec::new();
    loop {
        match next(c).await {
            ServerPackage::Notification(Notification::Pong { token })
                if token.as_deref() == Some("drain") =>
            {
                return seen
            }
            other => seen.push(other),
        }
    }
}

/// Joins `channel` and returns the own `user_joined`'s (owner, private, topic).
async fn join(
    c: &mut ClientConnection,
    channel: &str,
) -> (Option<String>, Option<bool>, Option<String>) {
    send(c, "join", json!({ "channel": channel })).await;
    loop {
        if let Notification::UserJoined {
            users: Some(_),
            owner,
            private,
            topic,
            ..
        } = next_note(c).await
        {
            return (owner, private, topic);
        }
    }
}

/// Sends a command and expects its error; returns the message.
async fn refused(c: &mut ClientConnection, command: &str, params: Value) -> String {
    send(c, command, params).await;
    let (kind, message) = next_error(c).await;
    assert_eq!(kind, command, "{message}");
    message
}

/// Expects the next package to be the own `user_joined` of `channel`.
async fn expect_own_join(c: &mut ClientConnection, channel: &str) {
    match next_note(c).await {
        Notification::UserJoined {
            channel: ch,
            users: Some(_),
            ..
        } => assert_eq!(ch, channel),
        other => panic!("expected own user_joined {channel}, got {other:?}"),
    }
}

/// Expects `user_left {username, channel, kicked: true}` next.
async fn expect_kicked_left(c: &mut ClientConnection, username: &str, channel: &str) {
    assert_eq!(
        next_note(c).await,
        Notification::UserLeft {
            username: username.into(),
            channel: channel.into(),
            kicked: Some(true),
        }
    );
}

async fn register(c: &mut ClientConnection) {
    send(c, "register", json!({ "password": PW })).await;
    assert!(matches!(
        next_note(c).await,
        Notification::Registered { .. }
    ));
}

/// Three users: alice owns `rust` with bob and carol in it; dave stays in
/// general. All drained.
async fn room(server: &TestServer) -> [ClientConnection; 4] {
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    let mut dave = server.login("dave").await;
    assert_eq!(join(&mut alice, "rust").await.0.as_deref(), Some("alice"));
    join(&mut bob, "rust").await;
    join(&mut carol, "rust").await;
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        drain(c).await;
    }
    [alice, bob, carol, dave]
}

#[tokio::test]
async fn kick_sends_the_member_to_general_and_tells_the_channel() {
    let server = TestServer::start_default().await;
    let [mut alice, mut bob, mut carol, mut dave] = room(&server).await;

    send(
        &mut alice,
        "kick",
        json!({"username": "BOB", "reason": "spamming"}),
    )
    .await;
    assert_eq!(
        next_note(&mut bob).await,
        Notification::Kicked {
            channel: "rust".into(),
            by: "alice".into(),
            reason: Some("spamming".into()),
            banned: None,
        }
    );
    expect_own_join(&mut bob, "general").await;
    expect_kicked_left(&mut carol, "bob", "rust").await;
    expect_kicked_left(&mut alice, "bob", "rust").await;
    assert!(matches!(
        next_note(&mut dave).await,
        Notification::UserJoined { username, channel, users: None, .. } if username == "bob" && channel == "general"
    ));
    assert_quiet(&mut alice).await;
    assert_quiet(&mut carol).await;

    // Every refusal has the command's type.
    let m = refused(&mut carol, "kick", json!({"username": "alice"})).await;
    assert!(m.contains("Only the owner of rust (alice)"), "{m}");
    let m = refused(&mut alice, "kick", json!({"username": "alice"})).await;
    assert!(m.contains("yourself"), "{m}");
    let m = refused(&mut alice, "kick", json!({"username": "nobody"})).await;
    assert!(m.contains("No user named nobody"), "{m}");
    let m = refused(&mut alice, "kick", json!({"username": "dave"})).await;
    assert!(m.contains("dave is not in rust"), "{m}");
    let m = refused(&mut dave, "kick", json!({"username": "bob"})).await;
    assert!(m.contains("general"), "{m}");
    let long = "x".repeat(301);
    let m = refused(
        &mut alice,
        "kick",
        json!({"username": "carol", "reason": long}),
    )
    .await;
    assert!(m.contains("at most 300"), "{m}");
    let m = refused(
        &mut alice,
        "kick",
        json!({"username": "carol", "reason": "\u{1b}[2J"}),
    )
    .await;
    assert!(m.contains("control"), "{m}");
    let m = refused(
        &mut alice,
        "kick",
        json!({"username": "carol", "channel": "nowhere"}),
    )
    .await;
    assert!(m.contains("No channel named nowhere"), "{m}");
    // A bad parameter is a protocol error, as for every command.
    send(&mut alice, "kick", json!({"user": "carol"})).await;
    assert_eq!(next_error(&mut alice).await.0, "protocol");

    // A kick is not a ban: bob may come back.
    assert_eq!(join(&mut bob, "rust").await.0.as_deref(), Some("alice"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_kick_in_a_crowded_channel_is_counted_and_the_moderator_still_told() {
    let server = TestServer::start(Config {
        presence_limit: 2,
        ..test_config()
    })
    .await;
    let [mut alice, mut bob, mut carol, _dave] = room(&server).await;
    send(&mut alice, "kick", json!({"username": "bob"})).await;
    // 3 -> 2 members crosses the limit: a count for the members ...
    let stats = Notification::ChannelStats {
        channel: "rust".into(),
        users_total: 2,
    };
    assert_eq!(next_note(&mut carol).await, stats);
    assert_eq!(next_note(&mut alice).await, stats);
    // ... and the kick itself for the moderator.
    expect_kicked_left(&mut alice, "bob", "rust").await;
    assert!(matches!(
        next_note(&mut bob).await,
        Notification::Kicked { .. }
    ));
    assert_quiet(&mut alice).await;
    assert_quiet(&mut carol).await;
    server.shutdown().await;
}

#[tokio::test]
async fn ban_kicks_keeps_out_look_alikes_and_unban_lets_in() {
    let server = TestServer::start_default().await;
    let [mut alice, mut bob, mut carol, mut dave] = room(&server).await;

    send(&mut alice, "ban", json!({"username": "bob"})).await;
    assert_eq!(
        next_note(&mut alice).await,
        Notification::Banned {
            channel: "rust".into(),
            username: "bob".into()
        }
    );
    expect_kicked_left(&mut alice, "bob", "rust").await;
    assert_eq!(
        next_note(&mut bob).await,
        Notification::Kicked {
            channel: "rust".into(),
            by: "alice".into(),
            reason: None,
            banned: Some(true),
        }
    );
    expect_own_join(&mut bob, "general").await;
    expect_kicked_left(&mut carol, "bob", "rust").await;
    drain(&mut dave).await;

    let m = refused(&mut bob, "join", json!({"channel": "Rust"})).await;
    assert_eq!(m, "You are banned from rust.");
    // An invitation does not get past a ban either.
    let m = refused(&mut carol, "invite", json!({"username": "bob"})).await;
    assert!(m.contains("banned"), "{m}");
    // A look-alike of the banned name is kept out too.
    drop(bob);
    until_state(&server, "bob gone", |s| s.users.len() == 3).await;
    let mut cyrillic = server.login("b\u{43e}b").await;
    drain(&mut dave).await;
    let m = refused(&mut cyrillic, "join", json!({"channel": "rust"})).await;
    assert!(m.contains("banned"), "{m}");
    // Banning a name nobody online has works, and looks alike are found.
    send(&mut alice, "ban", json!({"username": "mallory"})).await;
    assert!(
        matches!(next_note(&mut alice).await, Notification::Banned { username, .. } if username == "mallory")
    );
    let m = refused(&mut alice, "ban", json!({"username": "MALLORY"})).await;
    assert!(m.contains("already banned"), "{m}");
    let m = refused(&mut alice, "ban", json!({"username": "b\u{43e}b"})).await;
    assert!(m.contains("already banned from rust (as bob)"), "{m}");

    // A member cannot take a banned name (or a look-alike) where it is banned.
    send(&mut carol, "rename", json!({"username": "Mallory"})).await;
    assert_eq!(
        next_error(&mut carol).await,
        (
            "rename".to_owned(),
            "Mallory is banned from rust, where you are; choose another name.".to_owned()
        )
    );
    send(&mut alice, "bans", json!({})).await;
    assert_eq!(
        next_note(&mut alice).await,
        Notification::BanList {
            channel: "rust".into(),
            usernames: vec!["bob".into(), "mallory".into()],
            usernames_total: 2,
        }
    );
    let m = refused(&mut carol, "bans", json!({})).await;
    assert!(m.contains("Only the owner"), "{m}");
    let m = refused(&mut alice, "ban", json!({"username": "alice"})).await;
    assert!(m.contains("yourself"), "{m}");
    // A look-alike of one's own name is one's own name.
    let m = refused(&mut alice, "ban", json!({"username": "\u{430}lice"})).await;
    assert!(m.contains("yourself"), "{m}");
    let m = refused(&mut carol, "ban", json!({"username": "dave"})).await;
    assert!(m.contains("Only the owner"), "{m}");
    let m = refused(&mut dave, "ban", json!({"username": "carol"})).await;
    assert!(m.contains("general"), "{m}");
    let m = refused(&mut alice, "ban", json!({"username": "bad name"})).await;
    assert!(m.contains("name"), "{m}");

    send(&mut alice, "unban", json!({"username": "BOB"})).await;
    assert_eq!(
        next_note(&mut alice).await,
        Notification::Unbanned {
            channel: "rust".into(),
            username: "bob".into()
        }
    );
    let m = refused(&mut alice, "unban", json!({"username": "bob"})).await;
    assert!(m.contains("bob is not banned from rust"), "{m}");
    assert_eq!(
        join(&mut cyrillic, "rust").await.0.as_deref(),
        Some("alice")
    );
    server.hub.snapshot().check_invariants().unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn bans_are_bounded_per_channel() {
    let server = TestServer::start(Config {
        max_bans: 2,
        ..test_config()
    })
    .await;
    let mut alice = server.login("alice").await;
    join(&mut alice, "rust").await;
    for name in ["a1", "a2"] {
        send(&mut alice, "ban", json!({ "username": name })).await;
        assert!(matches!(
            next_note(&mut alice).await,
            Notification::Banned { .. }
        ));
    }
    let m = refused(&mut alice, "ban", json!({"username": "a3"})).await;
    assert!(m.contains("2 bans, the most allowed"), "{m}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_accounts_ban_follows_the_account_not_the_name() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    register(&mut bob).await;
    join(&mut alice, "rust").await;
    join(&mut bob, "rust").await;
    drain(&mut alice).await;
    send(&mut alice, "ban", json!({"username": "bob"})).await;
    drain(&mut alice).await;
    drain(&mut bob).await;
    send(&mut bob, "rename", json!({"username": "robert"})).await;
    assert!(matches!(
        next_note(&mut bob).await,
        Notification::UserRename { .. }
    ));
    let m = refused(&mut bob, "join", json!({"channel": "rust"})).await;
    assert!(m.contains("banned"), "{m}");
    drain(&mut alice).await;
    send(&mut alice, "bans", json!({})).await;
    match next_note(&mut alice).await {
        Notification::BanList { usernames, .. } => assert_eq!(usernames, ["robert"]),
        other => panic!("{other:?}"),
    }
    // The old name is free, and so is a guest who takes it.
    let mut new_bob = server.login("bob").await;
    assert_eq!(join(&mut new_bob, "rust").await.0.as_deref(), Some("alice"));
    server.hub.snapshot().check_invariants().unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_ban_on_an_offline_accounts_name_holds_the_account() {
    let server = TestServer::start_default().await;
    let mut bob = server.login("bob").await;
    register(&mut bob).await;
    drop(bob);
    until_state(&server, "bob gone", |s| s.users.is_empty()).await;
    let mut alice = server.login("alice").await;
    join(&mut alice, "rust").await;
    send(&mut alice, "ban", json!({"username": "BOB"})).await;
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::Banned { username, .. } if username == "BOB"
    ));
    let mut bob = server.connect().await;
    next_login_request(&mut bob).await;
    assert!(login_with(&mut bob, "bob", Some(PW)).await.status);
    send(&mut bob, "rename", json!({"username": "robert"})).await;
    assert!(matches!(
        next_note(&mut bob).await,
        Notification::UserRename { .. }
    ));
    let m = refused(&mut bob, "join", json!({"channel": "rust"})).await;
    assert_eq!(m, "You are banned from rust.");
    server.shutdown().await;
}

#[tokio::test]
async fn transfer_hands_a_channel_to_another_member() {
    let server = TestServer::start_default().await;
    let [mut alice, mut bob, mut carol, mut dave] = room(&server).await;
    send(&mut alice, "transfer", json!({"username": "bob"})).await;
    let update = Notification::ChannelUpdate {
        channel: "rust".into(),
        private: false,
        owner: Some("bob".into()),
        topic: None,
    };
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(next_note(c).await, update);
    }
    let m = refused(&mut alice, "kick", json!({"username": "carol"})).await;
    assert!(m.contains("Only the owner of rust (bob)"), "{m}");
    let m = refused(&mut alice, "transfer", json!({"username": "carol"})).await;
    assert!(m.contains("Only the owner"), "{m}");
    let m = refused(&mut bob, "transfer", json!({"username": "bob"})).await;
    assert!(m.contains("own rust already"), "{m}");
    let m = refused(&mut bob, "transfer", json!({"username": "dave"})).await;
    assert!(m.contains("dave is not in rust"), "{m}");
    let m = refused(&mut dave, "transfer", json!({"username": "bob"})).await;
    assert!(m.contains("general"), "{m}");
    send(&mut bob, "kick", json!({"username": "alice"})).await;
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::Kicked { by, .. } if by == "bob"
    ));

    // A registered channel passes only to an account, and stays registered.
    let mut erin = server.login("erin").await;
    register(&mut erin).await;
    let mut frank = server.login("frank").await;
    register(&mut frank).await;
    join(&mut erin, "club").await;
    send(&mut erin, "private", json!({})).await;
    send(&mut erin, "invite", json!({"username": "frank"})).await;
    send(&mut erin, "invite", json!({"username": "carol"})).await;
    drain(&mut erin).await;
    join(&mut frank, "club").await;
    join(&mut carol, "club").await;
    drain(&mut erin).await;
    let m = refused(&mut erin, "transfer", json!({"username": "carol"})).await;
    assert!(m.contains("carol is a guest"), "{m}");
    send(&mut erin, "transfer", json!({"username": "frank"})).await;
    assert_eq!(
        next_note(&mut erin).await,
        Notification::ChannelUpdate {
            channel: "club".into(),
            private: true,
            owner: Some("frank".into()),
            topic: None,
        }
    );
    // The old owner keeps access to the private channel.
    send(&mut erin, "leave", json!({})).await;
    drain(&mut erin).await;
    assert_eq!(
        join(&mut erin, "club").await,
        (Some("frank".into()), Some(true), None)
    );
    let snap = server.hub.snapshot();
    let club = snap.channels.iter().find(|c| c.name == "club").unwrap();
    assert!(club.registered && club.owner.as_deref() == Some("frank"));
    snap.check_invariants().unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn topics_are_told_to_members_and_joiners() {
    let server = TestServer::start(Config {
        max_topic_chars: 20,
        ..test_config()
    })
    .await;
    let [mut alice, mut bob, mut carol, mut dave] = room(&server).await;
    send(&mut alice, "topic", json!({"topic": "Borrowing\tand you"})).await;
    let update = Notification::ChannelUpdate {
        channel: "rust".into(),
        private: false,
        owner: Some("alice".into()),
        topic: Some("Borrowing\tand you".into()),
    };
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(next_note(c).await, update);
    }
    assert_quiet(&mut dave).await;
    assert_eq!(
        join(&mut dave, "rust").await,
        (
            Some("alice".into()),
            Some(false),
            Some("Borrowing\tand you".into())
        )
    );
    for c in [&mut alice, &mut bob, &mut carol] {
        drain(c).await;
    }
    let m = refused(&mut bob, "topic", json!({"topic": "mine"})).await;
    assert!(m.contains("Only the owner of rust (alice)"), "{m}");
    let m = refused(&mut alice, "topic", json!({"topic": "é".repeat(21)})).await;
    assert!(m.contains("at most 20 characters"), "{m}");
    let m = refused(&mut alice, "topic", json!({"topic": "a\u{7}"})).await;
    assert!(m.contains("control"), "{m}");
    drain(&mut alice).await;
    // Empty clears it.
    send(&mut alice, "topic", json!({"topic": ""})).await;
    assert!(matches!(
        next_note(&mut bob).await,
        Notification::ChannelUpdate { topic: Some(t), .. } if t.is_empty()
    ));
    send(&mut carol, "leave", json!({})).await;
    drain(&mut carol).await;
    assert_eq!(join(&mut carol, "rust").await.2, None);
    let mut erin = server.login("erin").await;
    let m = refused(&mut erin, "topic", json!({"topic": "x"})).await;
    assert!(m.contains("general has no topic"), "{m}");
    server.shutdown().await;
}

#[tokio::test]
async fn deleting_a_channel_moves_everyone_to_general() {
    let server = TestServer::start_default().await;
    let [mut alice, mut bob, mut carol, mut dave] = room(&server).await;
    send(&mut alice, "invite", json!({"username": "dave"})).await;
    drain(&mut alice).await;
    drain(&mut dave).await;
    let m = refused(&mut bob, "delete_channel", json!({})).await;
    assert!(m.contains("Only the owner of rust (alice)"), "{m}");
    let m = refused(&mut dave, "delete_channel", json!({})).await;
    assert_eq!(m, "general cannot be deleted.");
    send(&mut alice, "delete_channel", json!({})).await;
    let deleted = Notification::ChannelDeleted {
        channel: "rust".into(),
        by: "alice".into(),
    };
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(next_note(c).await, deleted);
        expect_own_join(c, "general").await;
    }
    let snap = server.hub.snapshot();
    assert!(snap.channels.iter().all(|c| c.name != "rust"), "{snap:?}");
    assert_eq!(snap.users.iter().filter(|u| u.1 == "general").count(), 4);
    snap.check_invariants().unwrap();
    // The invitation went with it: joining makes a new channel, dave's.
    drain(&mut dave).await;
    assert_eq!(join(&mut dave, "rust").await.0.as_deref(), Some("dave"));
    server.shutdown().await;
}

#[tokio::test]
async fn deleting_a_registered_channel_removes_it_and_its_messages_from_the_store() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    register(&mut alice).await;
    join(&mut alice, "club").await;
    alice.message("kept until deleted").await.unwrap();
    let ids = expect_acks(&mut alice, 1).await;
    assert_eq!(ids.len(), 1);
    let store = server.hub.store().clone();
    let before = tokio::task::spawn_blocking({
        let store = store.clone();
        move || store.messages_after("club", 0, 10).unwrap().len()
    })
    .await
    .unwrap();
    assert_eq!(before, 1);
    send(&mut alice, "delete_channel", json!({})).await;
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::ChannelDeleted { .. }
    ));
    expect_own_join(&mut alice, "general").await;
    // The store's work is done before the answer's queue is written, so a
    // ping after it proves it.
    assert_quiet(&mut alice).await;
    let (messages, channels) = tokio::task::spawn_blocking(move || {
        (
            store.messages_after("club", 0, 10).unwrap().len(),
            store.registered_channels().unwrap().len(),
        )
    })
    .await
    .unwrap();
    assert_eq!((messages, channels), (0, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn operators_moderate_anywhere_and_send_notices() {
    let server = TestServer::start(Config {
        opers: vec!["Root".into()],
        ..test_config()
    })
    .await;
    let [mut alice, mut bob, mut carol, mut dave] = room(&server).await;
    let mut root = server.login("root").await;
    // A guest under an operator's name is no operator, and cannot make
    // the name an account: whoever did would be an operator.
    let m = refused(&mut root, "notice", json!({"message": "hi"})).await;
    assert_eq!(m, "Only server operators can send notices.");
    let m = refused(&mut root, "register", json!({"password": PW})).await;
    assert!(m.contains("root is a server operator's name"), "{m}");
    let m = refused(&mut alice, "notice", json!({"message": "hi"})).await;
    assert!(m.contains("operators"), "{m}");
    // Nor can an account be renamed to it.
    let mut erin = server.login("erin").await;
    register(&mut erin).await;
    drop(root);
    until_state(&server, "root gone", |s| {
        s.users.iter().all(|u| u.0 != "root")
    })
    .await;
    drain(&mut erin).await;
    let m = refused(&mut erin, "rename", json!({"username": "ROOT"})).await;
    assert!(m.contains("server operator's name"), "{m}");
    drop(erin);
    // The operator's account is made as the admin command makes it.
    add_account(&server, "root", PW).await;
    let mut root = login_account(&server, "root", PW).await;
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        drain(c).await;
    }

    // From general, naming the channel.
    send(
        &mut root,
        "kick",
        json!({"username": "carol", "channel": "RUST", "reason": "rules"}),
    )
    .await;
    expect_kicked_left(&mut root, "carol", "rust").await;
    drain(&mut root).await;
    assert!(matches!(
        next_note(&mut carol).await,
        Notification::Kicked { by, reason: Some(r), .. } if by == "root" && r == "rules"
    ));
    expect_kicked_left(&mut alice, "carol", "rust").await;
    send(
        &mut root,
        "ban",
        json!({"username": "bob", "channel": "rust"}),
    )
    .await;
    assert!(
        matches!(next_note(&mut root).await, Notification::Banned { username, .. } if username == "bob")
    );
    expect_kicked_left(&mut root, "bob", "rust").await;
    drain(&mut root).await;
    send(&mut root, "bans", json!({"channel": "rust"})).await;
    assert!(matches!(
        next_note(&mut root).await,
        Notification::BanList {
            usernames_total: 1,
            ..
        }
    ));
    let m = refused(
        &mut root,
        "kick",
        json!({"username": "alice", "channel": "rust"}),
    )
    .await;
    assert!(m.contains("alice owns rust"), "{m}");
    let m = refused(
        &mut root,
        "ban",
        json!({"username": "alice", "channel": "rust"}),
    )
    .await;
    assert!(m.contains("alice owns rust"), "{m}");
    send(&mut root, "delete_channel", json!({"channel": "rust"})).await;
    let deleted = Notification::ChannelDeleted {
        channel: "rust".into(),
        by: "root".into(),
    };
    assert_eq!(next_note(&mut root).await, deleted);
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        drain(c).await;
    }

    send(&mut root, "notice", json!({"message": "restart at noon"})).await;
    let notice = Notification::ServerNotice {
        message: "restart at noon".into(),
        by: "root".into(),
    };
    for c in [&mut root, &mut alice, &mut bob, &mut carol, &mut dave] {
        let got = loop {
            match next_note(c).await {
                n @ Notification::ServerNotice { .. } => break n,
                // Arrivals and departures in general may come first.
                Notification::UserJoined { .. } | Notification::UserLeft { .. } => continue,
                other => panic!("expected the notice, got {other:?}"),
            }
        };
        assert_eq!(got, notice);
    }
    let m = refused(&mut root, "notice", json!({"message": ""})).await;
    assert!(m.contains("empty"), "{m}");
    server.shutdown().await;
}

#[cfg(unix)]
mod binary {
    use super::*;
    use chatmaster::store::{SqliteStore, Store, StoreOptions};
    use common::binary::Binary;

    async fn fresh(addr: &str) -> ClientConnection {
        let mut c = ClientConnection::connect(addr).await.expect("connect");
        next_login_request(&mut c).await;
        c
    }

    async fn guest(addr: &str, name: &str) -> ClientConnection {
        let mut c = fresh(addr).await;
        assert!(login_with(&mut c, name, None).await.status);
        c
    }

    async fn account(addr: &str, name: &str, new: bool) -> ClientConnection {
        let mut c = fresh(addr).await;
        if new {
            assert!(login_with(&mut c, name, None).await.status);
            register(&mut c).await;
        } else {
            assert!(login_with(&mut c, name, Some(PW)).await.status);
        }
        c
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bans_topics_transfers_and_deletions_survive_kill_9() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let server = Binary::on_db(&db);
        let addr = server.addr.clone();
        let mut alice = account(&addr, "alice", true).await;
        let mut bob = account(&addr, "bob", true).await;
        let mut carol = account(&addr, "carol", true).await;
        let mut troll = guest(&addr, "troll").await;
        join(&mut alice, "old").await;
        alice.message("gone with the channel").await.unwrap();
        expect_acks(&mut alice, 1).await;
        send(&mut alice, "delete_channel", json!({})).await;
        drain(&mut alice).await;
        join(&mut alice, "club").await;
        alice.message("stays").await.unwrap();
        expect_acks(&mut alice, 1).await;
        join(&mut bob, "club").await;
        join(&mut carol, "club").await;
        join(&mut troll, "club").await;
        send(&mut alice, "topic", json!({"topic": "members only"})).await;
        send(&mut alice, "ban", json!({"username": "bob"})).await;
        send(&mut alice, "ban", json!({"username": "troll"})).await;
        send(&mut alice, "transfer", json!({"username": "carol"})).await;
        drain(&mut alice).await;
        // Every answer above left after its store write: kill at once.
        server.kill_hard();

        let server = Binary::on_db(&db);
        let addr = server.addr.clone();
        let mut carol = account(&addr, "carol", false).await;
        assert_eq!(
            join(&mut carol, "club").await,
            (
                Some("carol".into()),
                Some(false),
                Some("members only".into())
            )
        );
        send(&mut carol, "bans", json!({})).await;
        match next_note(&mut carol).await {
            Notification::BanList { usernames, .. } => assert_eq!(usernames, ["bob", "troll"]),
            other => panic!("{other:?}"),
        }
        let mut bob = account(&addr, "bob", false).await;
        let m = refused(&mut bob, "join", json!({"channel": "club"})).await;
        assert!(m.contains("banned"), "{m}");
        let mut troll = guest(&addr, "TR\u{41e}LL").await;
        let m = refused(&mut troll, "join", json!({"channel": "club"})).await;
        assert!(m.contains("banned"), "{m}");
        // The deleted channel is gone: joining makes a new one.
        let mut dave = guest(&addr, "dave").await;
        assert_eq!(join(&mut dave, "old").await.0.as_deref(), Some("dave"));
        server.shut_down();

        let store = SqliteStore::open(&db, &StoreOptions::default()).unwrap();
        assert!(store.messages_after("old", 0, 10).unwrap().is_empty());
        assert_eq!(store.messages_after("club", 0, 10).unwrap().len(), 1);
    }
}

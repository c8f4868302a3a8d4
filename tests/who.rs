//! Who is there and who is ignored, against the real server with several
//! users: `who` (everybody, one channel, private channels, paging with
//! `after`, the visibility of channels, away texts), `whois` (online and
//! not, idle time), and ignore lists (channel and direct messages held
//! back, refusals, the cap, case-insensitivity, kept for accounts across a
//! new login and across a `kill -9` of the binary).

mod common;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage, WhoEntry};
use chatmaster::Config;
use common::*;
use serde_json::json;

const PW: &str = "correct horse battery";

async fn command(c: &mut ClientConnection, name: &str, params: serde_json::Value) {
    c.command(name, Some(params)).await.expect("send");
}

/// Skips notifications until own `user_joined` with the member list.
async fn joined(c: &mut ClientConnection, channel: &str) {
    command(c, "join", json!({ "channel": channel })).await;
    loop {
        if let Notification::UserJoined { users: Some(_), .. } = next_note(c).await {
            return;
        }
    }
}

/// Asks `who` and returns (channel, users, total), skipping presence
/// notifications that arrive first.
async fn who(
    c: &mut ClientConnection,
    params: serde_json::Value,
) -> (Option<String>, Vec<WhoEntry>, usize) {
    command(c, "who", params).await;
    loop {
        match next_note(c).await {
            Notification::Who {
                channel,
                users,
                users_total,
            } => return (channel, users, users_total),
            Notification::UserJoined { .. } | Notification::UserLeft { .. } => {}
            other => panic!("expected who, got {other:?}"),
        }
    }
}

fn names(users: &[WhoEntry]) -> Vec<&str> {
    users.iter().map(|u| u.username.as_str()).collect()
}

fn entry(name: &str, channel: Option<&str>, away: Option<&str>) -> WhoEntry {
    WhoEntry {
        username: name.into(),
        account: false,
        channel: channel.map(Into::into),
        away: away.map(Into::into),
    }
}

async fn whois(c: &mut ClientConnection, name: &str) -> Notification {
    command(c, "whois", json!({ "username": name })).await;
    loop {
        match next_note(c).await {
            n @ Notification::Whois { .. } => return n,
            Notification::UserJoined { .. } | Notification::UserLeft { .. } => {}
            other => panic!("expected whois, got {other:?}"),
        }
    }
}

async fn ignore_list(c: &mut ClientConnection, cmd: &str, name: Option<&str>) -> Vec<String> {
    let params = name.map(|n| json!({ "username": n }));
    c.command(cmd, params).await.unwrap();
    loop {
        match next_note(c).await {
            Notification::IgnoreList { usernames } => return usernames,
            Notification::UserJoined { .. } | Notification::UserLeft { .. } => {}
            other => panic!("expected ignore_list, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn who_lists_users_sorted_with_visible_channels_and_away_texts() {
    let server = TestServer::start_default().await;
    let mut carol = server.login("carol").await;
    let mut alice = server.login("Alice").await;
    let mut bob = server.login("bob").await;
    joined(&mut bob, "secret").await;
    command(&mut bob, "private", json!({})).await;
    assert!(matches!(
        next_note(&mut bob).await,
        Notification::ChannelUpdate { private: true, .. }
    ));
    command(&mut carol, "away", json!({"message": "brb"})).await;
    loop {
        match next_note(&mut carol).await {
            Notification::Away { message } => break assert_eq!(message.as_deref(), Some("brb")),
            Notification::UserJoined { .. } | Notification::UserLeft { .. } => {}
            other => panic!("{other:?}"),
        }
    }

    // Sorted by folded name; bob's private channel is hidden from alice.
    let (channel, users, total) = who(&mut alice, json!({})).await;
    assert_eq!((channel, total), (None, 3));
    assert_eq!(
        users,
        [
            entry("Alice", Some("general"), None),
            entry("bob", None, None),
            entry("carol", Some("general"), Some("brb")),
        ]
    );
    // ... but not from bob, who is in it.
    let (_, users, _) = who(&mut bob, json!(null)).await;
    assert_eq!(users[1], entry("bob", Some("secret"), None));

    // One channel; a private one only for its members.
    let (channel, users, total) = who(&mut alice, json!({"channel": "GENERAL"})).await;
    assert_eq!(
        (channel.as_deref(), names(&users), total),
        (Some("general"), vec!["Alice", "carol"], 2)
    );
    let (channel, users, _) = who(&mut bob, json!({"channel": "secret"})).await;
    assert_eq!(
        (channel.as_deref(), names(&users)),
        (Some("secret"), vec!["bob"])
    );
    for asked in ["secret", "nowhere"] {
        command(&mut alice, "who", json!({ "channel": asked })).await;
        let (kind, message) = next_error(&mut alice).await;
        assert_eq!(kind, "who");
        assert!(message.contains("no public channel"), "{message}");
    }
    command(&mut alice, "who", json!({"channel": 5})).await;
    assert_eq!(next_error(&mut alice).await.0, "protocol");
    server.shutdown().await;
}

#[tokio::test]
async fn who_is_capped_and_pages_on_with_after() {
    let server = TestServer::start(Config {
        max_list_names: 2,
        ..test_config()
    })
    .await;
    let mut first = server.login("u0").await;
    let mut others = Vec::new();
    for i in 1..5 {
        others.push(server.login(&format!("u{i}")).await);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..5 {
        let params = match &after {
            Some(a) => json!({ "after": a }),
            None => json!({}),
        };
        let (_, users, total) = who(&mut first, params).await;
        assert_eq!(total, 5);
        assert!(users.len() <= 2, "{users:?}");
        if users.is_empty() {
            break;
        }
        after = users.last().map(|u| u.username.clone());
        seen.extend(users.into_iter().map(|u| u.username));
    }
    assert_eq!(seen, ["u0", "u1", "u2", "u3", "u4"]);
    server.shutdown().await;
}

#[tokio::test]
async fn whois_tells_online_account_channel_away_and_idle_time() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    command(&mut bob, "register", json!({"password": PW})).await;
    assert!(matches!(
        next_note(&mut bob).await,
        Notification::Registered { .. }
    ));
    command(&mut bob, "away", json!({"message": "lunch"})).await;
    next_note(&mut bob).await;
    match whois(&mut alice, "BOB").await {
        Notification::Whois {
            username,
            online,
            account,
            channel,
            away,
            idle_secs,
        } => {
            assert_eq!((username.as_str(), online, account), ("bob", true, true));
            assert_eq!(
                (channel.as_deref(), away.as_deref()),
                (Some("general"), Some("lunch"))
            );
            // Just active: the away command was bob's last.
            assert!(idle_secs.is_some_and(|s| s < 60), "{idle_secs:?}");
        }
        other => panic!("{other:?}"),
    }
    // Offline: an account that is not online; a name that is nobody's.
    drop(bob);
    until_state(&server, "bob gone", |s| s.users.len() == 1).await;
    assert_eq!(
        whois(&mut alice, "bob").await,
        Notification::Whois {
            username: "bob".into(),
            online: false,
            account: true,
            channel: None,
            away: None,
            idle_secs: None,
        }
    );
    match whois(&mut alice, "Nobody").await {
        Notification::Whois {
            username,
            online: false,
            account: false,
            ..
        } => assert_eq!(username, "Nobody"),
        other => panic!("{other:?}"),
    }
    command(&mut alice, "whois", json!({"username": "no such!"})).await;
    assert_eq!(next_error(&mut alice).await.0, "whois");
    server.shutdown().await;
}

#[tokio::test]
async fn an_ignored_users_messages_do_not_reach_the_one_who_ignores() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    for _ in 0..2 {
        next_note(&mut alice).await;
    }
    next_note(&mut bob).await;
    assert_eq!(
        ignore_list(&mut bob, "ignore", Some("ALICE")).await,
        ["ALICE"]
    );
    alice.message("hello all").await.unwrap();
    match next(&mut carol).await {
        ServerPackage::Message(m) => assert_eq!(m.message, "hello all"),
        other => panic!("{other:?}"),
    }
    // Refused, not dropped: alice hears why.
    alice
        .command("direct", Some(json!({"username": "bob", "message": "hi"})))
        .await
        .unwrap();
    // The refusal and the earlier message's message_sent, in either order
    // (the acknowledgement waits for the commit, the refusal does not).
    let (mut refused, mut acked) = (false, false);
    while !(refused && acked) {
        match next(&mut alice).await {
            ServerPackage::Error(e) => {
                assert_eq!(e.error_type, "direct");
                assert!(e.message.contains("does not accept"), "{}", e.message);
                refused = true;
            }
            ServerPackage::Notification(Notification::MessageSent { .. }) => acked = true,
            other => panic!("{other:?}"),
        }
    }
    assert_quiet(&mut bob).await;
    // bob may still write to alice.
    bob.command(
        "direct",
        Some(json!({"username": "alice", "message": "one-way"})),
    )
    .await
    .unwrap();
    // (alice's acknowledgement of "hello all" may come before it.)
    loop {
        match next(&mut alice).await {
            ServerPackage::Message(m) => break assert_eq!(m.message, "one-way"),
            ServerPackage::Notification(Notification::MessageSent { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        next_note(&mut bob).await,
        Notification::MessageSent { .. }
    ));

    // The refusals of the commands themselves.
    for (cmd, name, says) in [
        ("ignore", "bob", "yourself"),
        ("ignore", "alice", "already"),
        ("unignore", "carol", "do not ignore"),
        ("ignore", "not a name", "letters"),
    ] {
        command(&mut bob, cmd, json!({ "username": name })).await;
        let (kind, message) = next_error(&mut bob).await;
        assert_eq!(kind, cmd, "{message}");
        assert!(message.contains(says), "{cmd} {name}: {message}");
    }
    assert_eq!(ignore_list(&mut bob, "ignores", None).await, ["ALICE"]);
    assert!(ignore_list(&mut bob, "unignore", Some("alice"))
        .await
        .is_empty());
    alice.message("heard again").await.unwrap();
    match next(&mut bob).await {
        ServerPackage::Message(m) => assert_eq!(m.message, "heard again"),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_ignore_list_is_capped() {
    let server = TestServer::start(Config {
        max_ignores: 2,
        ..test_config()
    })
    .await;
    let mut bob = server.login("bob").await;
    ignore_list(&mut bob, "ignore", Some("x1")).await;
    assert_eq!(
        ignore_list(&mut bob, "ignore", Some("x2")).await,
        ["x1", "x2"]
    );
    command(&mut bob, "ignore", json!({"username": "x3"})).await;
    let (kind, message) = next_error(&mut bob).await;
    assert_eq!(kind, "ignore");
    assert!(message.contains("2 names"), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_accounts_ignore_list_comes_back_at_its_next_login() {
    let server = TestServer::start_default().await;
    let mut bob = server.login("bob").await;
    // Ignored as a guest, then registered: the account keeps it.
    ignore_list(&mut bob, "ignore", Some("Eve")).await;
    command(&mut bob, "register", json!({"password": PW})).await;
    next_note(&mut bob).await;
    ignore_list(&mut bob, "ignore", Some("Mallory")).await;
    drop(bob);
    until_state(&server, "bob gone", |s| s.users.is_empty()).await;
    let mut bob = server.connect().await;
    next_login_request(&mut bob).await;
    assert!(login_with(&mut bob, "bob", Some(PW)).await.status);
    assert_eq!(
        ignore_list(&mut bob, "ignores", None).await,
        ["Eve", "Mallory"]
    );
    let mut mallory = server.login("mallory").await;
    mallory
        .command("direct", Some(json!({"username": "bob", "message": "x"})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut mallory).await.0, "direct");
    server.shutdown().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignore_list_and_its_refusal_of_kept_messages_survive_kill_9() {
    use common::binary::Binary;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Binary::on_db(&db);
    let mut bob = ClientConnection::connect(server.addr.as_str())
        .await
        .unwrap();
    next_login_request(&mut bob).await;
    assert!(login_with(&mut bob, "bob", None).await.status);
    command(&mut bob, "register", json!({"password": PW})).await;
    next_note(&mut bob).await;
    // The answer comes once the list is stored.
    ignore_list(&mut bob, "ignore", Some("mallory")).await;
    server.kill_hard();

    let server = Binary::on_db(&db);
    let mut mallory = ClientConnection::connect(server.addr.as_str())
        .await
        .unwrap();
    next_login_request(&mut mallory).await;
    assert!(login_with(&mut mallory, "mallory", None).await.status);
    // bob is offline: the refusal comes from his stored list.
    mallory
        .command("direct", Some(json!({"username": "bob", "message": "x"})))
        .await
        .unwrap();
    let (kind, message) = next_error(&mut mallory).await;
    assert_eq!(kind, "direct");
    assert!(message.contains("does not accept"), "{message}");
    let mut bob = ClientConnection::connect(server.addr.as_str())
        .await
        .unwrap();
    next_login_request(&mut bob).await;
    assert!(login_with(&mut bob, "bob", Some(PW)).await.status);
    assert_eq!(ignore_list(&mut bob, "ignores", None).await, ["mallory"]);
    server.shut_down();
}

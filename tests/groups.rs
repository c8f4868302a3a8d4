//! `group` against the real server: a new private channel owned by the
//! sender, who is moved in, invitations to the recipients online, the
//! optional first message through the normal message path, the answer
//! `group_created`, every refusal, and registration for account holders.

mod common;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage};
use chatmaster::Config;
use common::*;
use serde_json::{json, Value};

async fn send(c: &mut ClientConnection, command: &str, params: Value) {
    c.command(command, Some(params)).await.expect("send");
}

async fn refused(c: &mut ClientConnection, params: Value) -> String {
    send(c, "group", params).await;
    let (kind, message) = next_error(c).await;
    assert_eq!(kind, "group", "{message}");
    message
}

#[tokio::test]
async fn a_group_is_a_private_channel_with_its_invitations_and_first_message() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::UserJoined { .. }
    ));
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::UserJoined { .. }
    ));
    assert!(matches!(
        next_note(&mut bob).await,
        Notification::UserJoined { .. }
    ));

    send(
        &mut alice,
        "group",
        json!({"channel": "Trip", "recipients": ["BOB", "zed", "alice", "bob", "bad name"],
               "message": "where to?"}),
    )
    .await;
    match next_note(&mut alice).await {
        Notification::UserJoined {
            channel,
            users: Some(users),
            owner,
            private,
            ..
        } => {
            assert_eq!(
                (channel.as_str(), users, owner.as_deref(), private),
                ("Trip", vec!["alice".to_owned()], Some("alice"), Some(true))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next_note(&mut alice).await,
        Notification::GroupCreated {
            channel: "Trip".into(),
            invited: vec!["bob".into()],
            not_found: vec!["zed".into(), "bad name".into()],
        }
    );
    match next_note(&mut alice).await {
        Notification::MessageSent { channel, .. } => assert_eq!(channel.as_deref(), Some("Trip")),
        other => panic!("{other:?}"),
    }
    // bob and carol saw alice leave general; bob alone is invited.
    for c in [&mut bob, &mut carol] {
        assert!(matches!(
            next_note(c).await,
            Notification::UserLeft { username, .. } if username == "alice"
        ));
    }
    assert_eq!(
        next_note(&mut bob).await,
        Notification::Invited {
            channel: "Trip".into(),
            by: "alice".into()
        }
    );
    assert_quiet(&mut carol).await;
    // The channel is private: carol is refused, bob comes in by invitation.
    send(&mut carol, "join", json!({"channel": "trip"})).await;
    assert_eq!(next_error(&mut carol).await.0, "join");
    send(&mut bob, "join", json!({"channel": "trip"})).await;
    loop {
        if let Notification::UserJoined {
            users: Some(users), ..
        } = next_note(&mut bob).await
        {
            assert_eq!(users, ["alice", "bob"]);
            break;
        }
    }
    // The first message was stored like any other.
    let store = server.hub.store().clone();
    let stored = tokio::task::spawn_blocking(move || store.messages_after("trip", 0, 10).unwrap())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].text.as_str(), stored[0].sender.as_str()),
        ("where to?", "alice")
    );
    let snap = server.hub.snapshot();
    let trip = snap.channels.iter().find(|c| c.name == "Trip").unwrap();
    assert!(trip.private && !trip.registered && trip.owner.as_deref() == Some("alice"));
    server.shutdown().await;
}

#[tokio::test]
async fn group_refusals_change_nothing() {
    let server = TestServer::start(Config {
        max_group_recipients: 2,
        ..test_config()
    })
    .await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    send(&mut bob, "join", json!({"channel": "taken"})).await;
    // alice sees bob arrive in general and leave it.
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::UserJoined { .. }
    ));
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::UserLeft { .. }
    ));
    let m = refused(
        &mut alice,
        json!({"channel": "TAKEN", "recipients": ["bob"]}),
    )
    .await;
    assert!(m.contains("taken exists already"), "{m}");
    let m = refused(&mut alice, json!({"channel": "general", "recipients": []})).await;
    assert!(m.contains("exists already"), "{m}");
    let m = refused(
        &mut alice,
        json!({"channel": "g", "recipients": ["a", "b", "c"]}),
    )
    .await;
    assert!(m.contains("at most 2 recipients (3 given)"), "{m}");
    let m = refused(&mut alice, json!({"channel": "bad name", "recipients": []})).await;
    assert!(m.contains("name"), "{m}");
    let m = refused(
        &mut alice,
        json!({"channel": "g", "recipients": ["bob"], "message": "\u{1b}[2J"}),
    )
    .await;
    assert!(m.contains("control"), "{m}");
    let m = refused(
        &mut alice,
        json!({"channel": "g", "recipients": ["bob"], "message": ""}),
    )
    .await;
    assert!(m.contains("empty"), "{m}");
    send(&mut alice, "group", json!({"channel": "g"})).await;
    assert_eq!(next_error(&mut alice).await.0, "protocol");
    // Nothing was made, nobody was invited, alice is still in general.
    let snap = server.hub.snapshot();
    assert!(snap.channels.iter().all(|c| c.name != "g"), "{snap:?}");
    assert!(snap
        .users
        .contains(&("alice".to_owned(), "general".to_owned())));
    loop {
        match next(&mut bob).await {
            ServerPackage::Notification(Notification::Invited { .. }) => panic!("invited"),
            ServerPackage::Notification(Notification::UserJoined { users: Some(_), .. }) => break,
            _ => {}
        }
    }
    assert_quiet(&mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_account_holders_group_is_registered_and_outlives_its_members() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    send(
        &mut alice,
        "register",
        json!({"password": "correct horse battery"}),
    )
    .await;
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::Registered { .. }
    ));
    send(
        &mut alice,
        "group",
        json!({"channel": "kept", "recipients": []}),
    )
    .await;
    loop {
        if let Notification::GroupCreated {
            channel,
            invited,
            not_found,
        } = next_note(&mut alice).await
        {
            assert_eq!(
                (channel.as_str(), invited.len(), not_found.len()),
                ("kept", 0, 0)
            );
            break;
        }
    }
    send(&mut alice, "leave", json!({})).await;
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::UserJoined { channel, .. } if channel == "general"
    ));
    assert_quiet(&mut alice).await;
    let snap = server.hub.snapshot();
    let kept = snap.channels.iter().find(|c| c.name == "kept").unwrap();
    assert!(
        kept.registered && kept.private && kept.members.is_empty(),
        "{kept:?}"
    );
    let store = server.hub.store().clone();
    let stored = tokio::task::spawn_blocking(move || store.registered_channels().unwrap())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].private);
    // Its owner may come back without an invitation.
    send(&mut alice, "join", json!({"channel": "kept"})).await;
    loop {
        if let Notification::UserJoined {
            owner,
            users: Some(_),
            ..
        } = next_note(&mut alice).await
        {
            assert_eq!(owner.as_deref(), Some("alice"));
            break;
        }
    }
    server.shutdown().await;
}

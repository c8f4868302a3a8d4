//! Direct messages in the memory, against the real server on
//! 127.0.0.1:0: `history {with}`, `search` over one's own direct messages
//! (and `with`), edits and deletions of a direct message reaching its two
//! parties, attachments on `direct`, and that nobody else ever reads a
//! conversation.

mod common;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage};
use common::memory::{acks, history, next_answer, refused, say, search, search_texts};
use common::TestServer;
use serde_json::{json, Value};

/// Sends `direct` and waits for its acknowledgement; returns the id.
async fn direct(c: &mut ClientConnection, to: &str, text: &str) -> i64 {
    direct_with(c, json!({"username": to, "message": text})).await;
    acks(c, 1).await[0]
}

async fn direct_with(c: &mut ClientConnection, params: Value) {
    c.command("direct", Some(params)).await.unwrap();
}

#[tokio::test]
async fn history_with_pages_a_conversation_and_nobody_elses() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut eve = server.login("eve").await;
    let a1 = direct(&mut alice, "bob", "hello bob").await;
    let b1 = direct(&mut bob, "alice", "hi alice").await;
    let a2 = direct(&mut alice, "bob", "secret plans").await;
    direct(&mut eve, "bob", "eve to bob").await;
    say(&mut alice, &["in general"]).await;

    let page = history(&mut alice, json!({"with": "BOB"})).await;
    assert_eq!(
        (page.channel.as_deref(), page.with.as_deref()),
        (None, Some("bob"))
    );
    assert_eq!(page.ids(), [a1, b1, a2]);
    assert_eq!(page.messages[1].username, "bob");
    assert_eq!(page.messages[1].to.as_deref(), Some("alice"));
    assert!(!page.more);
    // The same conversation from the other side, paged.
    let page = history(&mut bob, json!({"with": "alice", "limit": 2})).await;
    assert_eq!((page.ids(), page.more), (vec![b1, a2], true));
    let page = history(&mut bob, json!({"with": "alice", "before": b1})).await;
    assert_eq!((page.ids(), page.more), (vec![a1], false));
    let page = history(&mut bob, json!({"with": "alice", "after": a1, "limit": 1})).await;
    assert_eq!((page.ids(), page.more), (vec![b1], true));
    // Eve's conversation with alice is empty: she never reads alice and bob's.
    let page = history(&mut eve, json!({"with": "alice"})).await;
    assert_eq!(page.ids(), Vec::<i64>::new());
    // Nobody talks to themselves; bad names are refused.
    let why = refused(&mut alice, "history", json!({"with": "alice"}), "history").await;
    assert!(why.contains("two people"), "{why}");
    refused(&mut alice, "history", json!({"with": "no body"}), "history").await;

    // A later guest of the name is somebody else: it reads nothing.
    drop(bob);
    common::until_state(&server, "bob gone", |s| {
        s.users.iter().all(|(n, _)| n != "bob")
    })
    .await;
    let mut bob2 = server.login("bob").await;
    let page = history(&mut bob2, json!({"with": "alice"})).await;
    assert_eq!(page.ids(), Vec::<i64>::new());
    assert!(search_texts(&mut bob2, "plans").await.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn search_finds_ones_own_direct_messages_only() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut eve = server.login("eve").await;
    let private = direct(&mut alice, "bob", "the treasure is buried").await;
    say(&mut eve, &["any treasure around"]).await;

    // Alice and bob find the direct message and the channel one; eve only hers.
    let found = search(&mut bob, json!({"query": "treasure"})).await;
    assert_eq!(found.total, 2);
    assert_eq!(found.ids()[1], private);
    let dm = &found.messages[1];
    assert_eq!(
        (dm.channel.as_deref(), dm.to.as_deref()),
        (None, Some("bob"))
    );
    assert_eq!(found.messages[0].channel.as_deref(), Some("general"));
    assert_eq!(
        search_texts(&mut eve, "treasure").await,
        ["any treasure around"]
    );
    assert!(search_texts(&mut eve, "buried").await.is_empty());
    // with: one conversation only.
    let found = search(&mut alice, json!({"query": "treasure", "with": "bob"})).await;
    assert_eq!((found.total, found.ids()), (1, vec![private]));
    let found = search(&mut eve, json!({"query": "treasure", "with": "bob"})).await;
    assert_eq!(found.total, 0);
    let why = refused(
        &mut alice,
        "search",
        json!({"query": "x", "with": "bob", "channel": "general"}),
        "search",
    )
    .await;
    assert!(why.contains("not both"), "{why}");
    // An author filter applies to direct messages too.
    let found = search(&mut bob, json!({"query": "treasure", "username": "alice"})).await;
    assert_eq!(found.ids(), [private]);
    server.shutdown().await;
}

#[tokio::test]
async fn edits_and_deletions_of_a_direct_message_reach_both_parties() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut eve = server.login("eve").await;
    let id = direct(&mut alice, "bob", "typo here").await;
    // bob's copy arrives; it is a message, which next_answer skips.
    alice
        .command("edit", Some(json!({"id": id, "message": "fixed here"})))
        .await
        .unwrap();
    for c in [&mut alice, &mut bob] {
        match next_answer(c).await {
            ServerPackage::Notification(Notification::MessageEdited {
                id: got,
                channel: None,
                to: Some(to),
                message,
                ..
            }) => assert_eq!(
                (got, to.as_str(), message.as_str()),
                (id, "bob", "fixed here")
            ),
            other => panic!("{other:?}"),
        }
    }
    // Bob may not edit alice's message, nor eve delete it.
    refused(
        &mut bob,
        "edit",
        json!({"id": id, "message": "mine"}),
        "edit",
    )
    .await;
    refused(&mut eve, "delete", json!({"id": id}), "delete").await;
    let page = history(&mut bob, json!({"with": "alice"})).await;
    assert_eq!(page.texts(), ["fixed here"]);
    assert!(page.messages[0].edited.is_some());
    alice
        .command("delete", Some(json!({"id": id})))
        .await
        .unwrap();
    for c in [&mut alice, &mut bob] {
        match next_answer(c).await {
            ServerPackage::Notification(Notification::MessageDeleted {
                channel: None,
                to: Some(to),
                by,
                ..
            }) => assert_eq!((to.as_str(), by.as_str()), ("bob", "alice")),
            other => panic!("{other:?}"),
        }
    }
    common::memory::settle(&mut eve).await;
    assert_eq!(
        history(&mut bob, json!({"with": "alice"})).await.ids(),
        Vec::<i64>::new()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_direct_message_carries_attachments_and_bad_ones_are_direct_errors() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let image = json!({"type": "image", "url": "https://e.org/cat.png", "width": 10, "height": 20});
    direct_with(
        &mut alice,
        json!({"username": "bob", "message": "", "attachments": [image]}),
    )
    .await;
    let got = common::memory::until(&mut bob, |p| match p {
        ServerPackage::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!((got.message.as_str(), got.to.as_deref()), ("", Some("bob")));
    assert_eq!(
        serde_json::to_value(&got.attachments).unwrap(),
        json!([image])
    );
    acks(&mut alice, 1).await;
    let page = history(&mut alice, json!({"with": "bob"})).await;
    assert_eq!(
        serde_json::to_value(&page.messages[0].attachments).unwrap(),
        json!([image])
    );
    for (attachments, field) in [
        (json!([{"type": "image"}]), "attachments[0].url: missing"),
        (
            json!([{"type": "video", "url": "https://e.org/v", "length": 0}]),
            "attachments[0].length",
        ),
        (json!("x"), "attachments: must be an array"),
    ] {
        let why = refused(
            &mut alice,
            "direct",
            json!({"username": "bob", "message": "x", "attachments": attachments}),
            "direct",
        )
        .await;
        assert!(why.contains(field), "{why}");
    }
    // Empty text needs an attachment.
    refused(
        &mut alice,
        "direct",
        json!({"username": "bob", "message": ""}),
        "direct",
    )
    .await;
    server.shutdown().await;
}

//! The real client binary in scriptable mode with the memory commands:
//! the earlier messages shown on joining, `/history`, `/search` with
//! channel and time, `/edit` and `/delete` of one's last (and N-th last)
//! message, `/attach`, and unread counts on the session line.

mod client_util;
mod common;

use chatmaster::wire::protocol::{Notification, ServerPackage};
use client_util::*;
use common::memory::{history, join, next_answer, say};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_shows_earlier_messages_and_history_goes_further_back() {
    let server = TestServer::start_default().await;
    let mut bob = server.login("bob").await;
    join(&mut bob, "rust").await;
    let texts: Vec<String> = (1..=25).map(|i| format!("old {i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    say(&mut bob, &refs).await;

    let mut alice = Scripted::login(server.addr, "alice");
    alice.send("/join rust");
    alice.expect("-- you are in rust [owner bob]; users (2): alice, bob");
    // The last 20, oldest first, marked as earlier.
    for i in 6..=25 {
        let line = alice.next_line();
        assert!(line.starts_with("earlier "), "{line}");
        assert!(line.ends_with(&format!("[rust] <bob> old {i}")), "{line}");
    }
    alice.send("/history 3");
    for i in 3..=5 {
        let line = alice.next_line();
        assert!(line.ends_with(&format!("<bob> old {i}")), "{line}");
    }
    alice.send("/history");
    alice.expect_line(|l| l.ends_with("<bob> old 1"));
    let (status, rest, stderr) = alice.finish();
    assert_eq!(status.code(), Some(0), "{rest:?} {stderr}");
    server.shutdown().await;
}

/// Skips to the next chat message.
async fn chat(
    c: &mut chatmaster::client::ClientConnection,
) -> chatmaster::wire::protocol::ChatMessage {
    common::memory::until(c, |p| match p {
        ServerPackage::Message(m) => Some(m),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_edit_delete_and_attach() {
    let server = TestServer::start_default().await;
    let mut bob = server.login("bob").await;
    let mut alice = Scripted::login(server.addr, "alice");
    say(&mut bob, &["a needle in general"]).await;
    alice.expect_line(|l| is_message(l, "general", "bob", "a needle in general"));

    alice.send("/search needle");
    alice.expect("-- search \"needle\": 1 found");
    let found = alice.next_line();
    // Date and time, channel, sender, text.
    assert!(
        found.contains("[general] <bob> a needle in general"),
        "{found}"
    );
    assert!(found.trim_start().chars().nth(4) == Some('-'), "{found}");

    alice.send("frist");
    alice.send("second");
    let first = chat(&mut bob).await.id;
    chat(&mut bob).await;
    alice.send("/edit 2 first");
    match next_answer(&mut bob).await {
        ServerPackage::Notification(Notification::MessageEdited { id, message, .. }) => {
            assert_eq!((id, message.as_str()), (first, "first"))
        }
        other => panic!("{other:?}"),
    }
    alice.expect(&format!("-- message {first} in general edited: first"));
    alice.send("/delete");
    match next_answer(&mut bob).await {
        ServerPackage::Notification(Notification::MessageDeleted { by, .. }) => {
            assert_eq!(by, "alice")
        }
        other => panic!("{other:?}"),
    }
    let page = history(&mut bob, json!({"channel": "general"})).await;
    assert_eq!(page.texts(), ["a needle in general", "first"]);
    assert!(page.messages[1].edited.is_some());

    alice.send("/attach https://example.org/cat.png a cat");
    let m = chat(&mut bob).await;
    assert_eq!(m.message, "a cat");
    assert_eq!(
        serde_json::to_value(&m.attachments).unwrap(),
        json!([{"type": "image", "url": "https://example.org/cat.png"}])
    );
    // Others see it with its attachment.
    bob.send(&chatmaster::ClientPackage::Message(
        chatmaster::wire::protocol::OutgoingMessage {
            message: "look".into(),
            attachments: Some(json!([{"type": "image", "url": "https://e.org/d.png", "width": 640, "height": 480}])),
        },
    ))
    .await
    .unwrap();
    alice.expect_line(|l| l.ends_with("[general] <bob> look [image 640x480 https://e.org/d.png]"));
    alice.send("/edit 50 nothing");
    alice.expect("!! you have no 50th last message to edit");
    let (status, rest, stderr) = alice.finish();
    assert_eq!(status.code(), Some(0), "{rest:?} {stderr}");
    server.shutdown().await;
}

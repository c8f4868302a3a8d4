//! `edit`, `delete`, attachments and unread counts against the real
//! server on 127.0.0.1:0: who may, who is told, what history and search
//! show afterwards, every error, and read marks across logins.

mod common;

use chatmaster::wire::protocol::{Attachment, Notification, ServerPackage};
use common::memory::{
    acks, history, join, next_answer, refused, say, say_with, search_texts, settle, until,
};
use common::{login_with, next_note, TestServer, WAIT};
use serde_json::json;

/// The next `message_edited` past presence: (id, channel, text).
async fn edited(c: &mut chatmaster::client::ClientConnection) -> (i64, String, String, String) {
    match next_answer(c).await {
        ServerPackage::Notification(Notification::MessageEdited {
            id,
            channel,
            to: None,
            message,
            edited,
        }) => (id, channel.expect("a channel"), message, edited),
        other => panic!("expected message_edited, got {other:?}"),
    }
}

/// The next `message_deleted` past presence: (id, channel, by).
async fn deleted(c: &mut chatmaster::client::ClientConnection) -> (i64, String, String) {
    match next_answer(c).await {
        ServerPackage::Notification(Notification::MessageDeleted {
            id,
            channel: Some(channel),
            to: None,
            by,
        }) => (id, channel, by),
        other => panic!("expected message_deleted, got {other:?}"),
    }
}

/// Skips to the next chat message.
async fn chat(
    c: &mut chatmaster::client::ClientConnection,
) -> chatmaster::wire::protocol::ChatMessage {
    until(c, |p| match p {
        ServerPackage::Message(m) => Some(m),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn the_author_edits_everyone_in_the_channel_is_told_and_history_shows_it() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    join(&mut alice, "rust").await;
    join(&mut bob, "rust").await;
    let ids = say(&mut alice, &["helo wrld", "second"]).await;
    chat(&mut bob).await;
    chat(&mut bob).await;

    alice
        .command(
            "edit",
            Some(json!({"id": ids[0], "message": "hello world"})),
        )
        .await
        .unwrap();
    let (id, channel, text, when) = edited(&mut bob).await;
    assert_eq!(
        (id, channel.as_str(), text.as_str()),
        (ids[0], "rust", "hello world")
    );
    assert!(when.ends_with('Z'));
    // The author is told too, with the same package.
    assert_eq!(edited(&mut alice).await.3, when);
    // Not the rest of the server.
    settle(&mut carol).await;

    let page = history(&mut carol, json!({"channel": "rust"})).await;
    assert_eq!(page.texts(), ["hello world", "second"]);
    assert_eq!(page.messages[0].edited.as_deref(), Some(when.as_str()));
    assert_eq!(page.messages[1].edited, None);
    // Search finds the new words, not the old ones.
    assert_eq!(search_texts(&mut carol, "world").await, ["hello world"]);
    assert!(search_texts(&mut carol, "wrld").await.is_empty());

    // Somebody else may not edit it; nor edit a message that is not there.
    let why = refused(
        &mut bob,
        "edit",
        json!({"id": ids[0], "message": "mine now"}),
        "edit",
    )
    .await;
    assert!(why.contains("not yours"), "{why}");
    let why = refused(
        &mut alice,
        "edit",
        json!({"id": 999_999, "message": "x"}),
        "edit",
    )
    .await;
    assert!(why.contains("no message 999999"), "{why}");
    // The text follows the message rules.
    for bad in ["", "bell\u{7}"] {
        refused(
            &mut alice,
            "edit",
            json!({"id": ids[1], "message": bad}),
            "edit",
        )
        .await;
    }
    let long = "x".repeat(4097);
    refused(
        &mut alice,
        "edit",
        json!({"id": ids[1], "message": long}),
        "edit",
    )
    .await;
    refused(&mut alice, "edit", json!({"id": ids[1]}), "protocol").await;
    refused(
        &mut alice,
        "edit",
        json!({"id": "1", "message": "x"}),
        "protocol",
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn delete_by_the_author_or_the_channel_owner_and_the_message_is_gone() {
    let server = TestServer::start_default().await;
    let mut owner = server.login("owner").await;
    let mut bob = server.login("bob").await;
    let mut eve = server.login("eve").await;
    join(&mut owner, "den").await;
    join(&mut bob, "den").await;
    join(&mut eve, "den").await;
    let bobs = say(&mut bob, &["bob one", "bob two"]).await;
    let eves = say(&mut eve, &["eve one"]).await;

    // Eve may not delete bob's.
    let why = refused(&mut eve, "delete", json!({"id": bobs[0]}), "delete").await;
    assert!(why.contains("not yours"), "{why}");
    // Bob deletes his own: everyone in the channel hears, by bob.
    bob.command("delete", Some(json!({"id": bobs[0]})))
        .await
        .unwrap();
    for c in [&mut owner, &mut bob, &mut eve] {
        let got = until(c, |p| match p {
            ServerPackage::Notification(Notification::MessageDeleted {
                id,
                channel: Some(channel),
                by,
                ..
            }) => Some((id, channel, by)),
            _ => None,
        })
        .await;
        assert_eq!(got, (bobs[0], "den".to_owned(), "bob".to_owned()));
    }
    // The owner deletes eve's.
    owner
        .command("delete", Some(json!({"id": eves[0]})))
        .await
        .unwrap();
    assert_eq!(
        deleted(&mut eve).await,
        (eves[0], "den".to_owned(), "owner".to_owned())
    );
    assert_eq!(deleted(&mut owner).await.0, eves[0]);
    assert_eq!(deleted(&mut bob).await.0, eves[0]);

    assert_eq!(
        history(&mut eve, json!({"channel": "den"})).await.texts(),
        ["bob two"]
    );
    assert!(search_texts(&mut eve, "one").await.is_empty());
    assert_eq!(search_texts(&mut eve, "two").await, ["bob two"]);
    // Twice is an error, and so is a message that never was.
    let why = refused(&mut bob, "delete", json!({"id": bobs[0]}), "delete").await;
    assert!(why.contains("no message"), "{why}");
    refused(&mut bob, "delete", json!({"id": -5}), "delete").await;
    refused(&mut bob, "delete", json!({}), "protocol").await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_author_that_left_is_told_and_a_later_guest_of_the_same_name_is_not_the_author() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    join(&mut bob, "rust").await;
    join(&mut alice, "rust").await;
    let ids = say(&mut alice, &["typo"]).await;
    alice.command("leave", None).await.unwrap();
    // Alice, in general now, still edits her message in rust; the members
    // of rust are told, and so is she.
    alice
        .command("edit", Some(json!({"id": ids[0], "message": "fixed"})))
        .await
        .unwrap();
    assert_eq!(edited(&mut alice).await.2, "fixed");
    assert_eq!(edited(&mut bob).await.2, "fixed");
    // Another guest called alice later is somebody else.
    drop(alice);
    common::until_state(&server, "alice gone", |s| {
        s.users.iter().all(|(n, _)| n != "alice")
    })
    .await;
    let mut again = server.login("alice").await;
    let why = refused(&mut again, "delete", json!({"id": ids[0]}), "delete").await;
    assert!(why.contains("not yours"), "{why}");
    server.shutdown().await;
}

#[tokio::test]
async fn attachments_travel_with_the_message_and_come_back_in_history_and_search() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let image =
        json!({"type": "image", "url": "https://example.org/cat.png", "width": 640, "height": 480});
    let video = json!({"type": "video", "url": "http://example.org/v.mp4", "source": "camera", "length": 12});
    say_with(&mut alice, "look", json!([image, video])).await;
    let got = chat(&mut bob).await;
    assert_eq!(got.message, "look");
    let expected = vec![
        Attachment::Image {
            url: "https://example.org/cat.png".into(),
            width: Some(640),
            height: Some(480),
        },
        Attachment::Video {
            url: "http://example.org/v.mp4".into(),
            source: Some("camera".into()),
            length: Some(12),
        },
    ];
    assert_eq!(got.attachments.as_ref(), Some(&expected));
    // Empty text is fine with an attachment, and the minimum is just a URL.
    say_with(
        &mut alice,
        "",
        json!([{"type": "image", "url": "https://e.org/x.jpg"}]),
    )
    .await;
    let bare = chat(&mut bob).await;
    assert_eq!(bare.message, "");
    acks(&mut alice, 2).await;

    let page = history(&mut bob, json!({"channel": "general"})).await;
    assert_eq!(page.messages[0].attachments.as_ref(), Some(&expected));
    assert_eq!(page.messages[1].attachments.as_ref().map(Vec::len), Some(1));
    let found = common::memory::search(&mut bob, json!({"query": "look"})).await;
    assert_eq!(found.messages[0].attachments.as_ref(), Some(&expected));
    // A message without attachments has none in history either.
    say(&mut alice, &["plain"]).await;
    let page = history(&mut bob, json!({"channel": "general", "limit": 1})).await;
    assert_eq!(page.messages[0].attachments, None);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_attachments_are_message_errors_naming_the_field() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let url = "https://example.org/a.png";
    let long_url = format!("https://e.org/{}", "a".repeat(2048));
    let long_source = "s".repeat(101);
    let cases = [
        (
            json!({"type": "image", "url": url}),
            "attachments: must be an array",
        ),
        (json!([1]), "attachments[0]: must be an object"),
        (json!([{"url": url}]), "attachments[0].type: missing"),
        (json!([{"type": "gif", "url": url}]), "attachments[0].type"),
        (json!([{"type": "image"}]), "attachments[0].url: missing"),
        (
            json!([{"type": "image", "url": 5}]),
            "attachments[0].url: must be a string",
        ),
        (
            json!([{"type": "image", "url": "ftp://e.org/a"}]),
            "attachments[0].url: must start with http",
        ),
        (
            json!([{"type": "image", "url": "https://"}]),
            "attachments[0].url",
        ),
        (
            json!([{"type": "image", "url": "https://e.org/a b"}]),
            "attachments[0].url: may not contain whitespace",
        ),
        (
            json!([{"type": "image", "url": "https://e.org/\u{1}"}]),
            "attachments[0].url",
        ),
        (
            json!([{"type": "image", "url": long_url}]),
            "attachments[0].url: at most 2048 bytes",
        ),
        (
            json!([{"type": "image", "url": url, "width": 0}]),
            "attachments[0].width",
        ),
        (
            json!([{"type": "image", "url": url, "height": 100_001}]),
            "attachments[0].height",
        ),
        (
            json!([{"type": "image", "url": url, "width": 1.5}]),
            "attachments[0].width",
        ),
        (
            json!([{"type": "image", "url": url, "width": "640"}]),
            "attachments[0].width",
        ),
        (
            json!([{"type": "image", "url": url, "length": 3}]),
            "attachments[0].length: unknown member",
        ),
        (
            json!([{"type": "video", "url": url, "width": 3}]),
            "attachments[0].width: unknown member",
        ),
        (
            json!([{"type": "video", "url": url, "length": -1}]),
            "attachments[0].length",
        ),
        (
            json!([{"type": "video", "url": url, "source": long_source}]),
            "attachments[0].source: at most 100",
        ),
        (
            json!([{"type": "video", "url": url, "source": "a\u{1b}b"}]),
            "attachments[0].source",
        ),
        (
            json!([{"type": "video", "url": url, "source": 7}]),
            "attachments[0].source: must be a string",
        ),
        (
            json!([{"type": "image", "url": url}, {"type": "image"}]),
            "attachments[1].url: missing",
        ),
        (
            json!(vec![json!({"type": "image", "url": url}); 5]),
            "attachments: at most 4",
        ),
    ];
    for (attachments, expected) in cases {
        say_with(&mut alice, "x", attachments.clone()).await;
        match next_answer(&mut alice).await {
            ServerPackage::Error(e) => {
                assert_eq!(e.error_type, "message", "{attachments}");
                assert!(e.message.contains(expected), "{attachments}: {}", e.message);
            }
            other => panic!("{attachments} accepted: {other:?}"),
        }
    }
    // No attachments and no text is an empty message, as before.
    say_with(&mut alice, "", json!([])).await;
    match next_answer(&mut alice).await {
        ServerPackage::Error(e) => assert_eq!(e.error_type, "message"),
        other => panic!("{other:?}"),
    }
    // Four are fine; nothing above was stored.
    say_with(
        &mut alice,
        "four",
        json!(vec![json!({"type": "image", "url": url}); 4]),
    )
    .await;
    acks(&mut alice, 1).await;
    assert_eq!(
        history(&mut alice, json!({"channel": "general"}))
            .await
            .texts(),
        ["four"]
    );
    server.shutdown().await;
}

/// Logs in to a new account `name` (registered on the way).
async fn account(server: &TestServer, name: &str) -> chatmaster::client::ClientConnection {
    let mut c = server.login(name).await;
    c.command("register", Some(json!({"password": "correct horse"})))
        .await
        .unwrap();
    match next_note(&mut c).await {
        Notification::Registered { .. } => {}
        other => panic!("{other:?}"),
    }
    c
}

/// Logs in to `name`'s account again and returns the session's unread counts.
async fn unread_at_login(
    server: &TestServer,
    name: &str,
) -> (
    chatmaster::client::ClientConnection,
    Vec<(String, usize, i64)>,
) {
    let mut c = server.connect().await;
    match c.recv_timeout(WAIT).await.unwrap() {
        ServerPackage::Request(_) => {}
        other => panic!("{other:?}"),
    }
    let session = login_with(&mut c, name, Some("correct horse")).await;
    assert!(session.status, "{session:?}");
    let unread = session
        .unread
        .expect("an account's session has unread counts")
        .into_iter()
        .map(|u| (u.channel, u.count, u.last_id))
        .collect();
    (c, unread)
}

#[tokio::test]
async fn accounts_get_unread_counts_for_registered_channels_and_mark_them_read() {
    let server = TestServer::start_default().await;
    let mut alice = account(&server, "alice").await;
    let mut bob = server.login("bob").await;
    join(&mut alice, "Club").await; // registered: alice is an account
    join(&mut bob, "club").await;
    let seen = say(&mut bob, &["while alice is here"]).await;
    alice.command("leave", None).await.unwrap();
    next_note(&mut alice).await; // own user_joined in general
    settle(&mut alice).await; // the read mark is stored
    let missed = say(&mut bob, &["missed one", "missed two", "missed three"]).await;
    drop(alice);
    common::until_state(&server, "alice gone", |s| {
        s.users.iter().all(|(n, _)| n != "alice")
    })
    .await;

    let (mut alice, unread) = unread_at_login(&server, "alice").await;
    assert_eq!(unread, [("Club".to_owned(), 3, seen[0])]);
    // history after last_id pages exactly what was missed.
    let page = history(&mut alice, json!({"channel": "club", "after": seen[0]})).await;
    assert_eq!(page.ids(), missed);

    // mark_read moves the mark; the answer says where it is.
    alice
        .command(
            "mark_read",
            Some(json!({"channel": "CLUB", "id": missed[1]})),
        )
        .await
        .unwrap();
    match next_answer(&mut alice).await {
        ServerPackage::Notification(Notification::ReadMarked { channel, id }) => {
            assert_eq!((channel.as_str(), id), ("Club", missed[1]))
        }
        other => panic!("{other:?}"),
    }
    drop(alice);
    common::until_state(&server, "alice gone", |s| {
        s.users.iter().all(|(n, _)| n != "alice")
    })
    .await;
    let (mut alice, unread) = unread_at_login(&server, "alice").await;
    assert_eq!(unread, [("Club".to_owned(), 1, missed[1])]);

    // Errors: guests, unregistered channels, unknown ones.
    let why = refused(
        &mut bob,
        "mark_read",
        json!({"channel": "club", "id": 1}),
        "mark_read",
    )
    .await;
    assert!(why.contains("accounts"), "{why}");
    let why = refused(
        &mut alice,
        "mark_read",
        json!({"channel": "general", "id": 1}),
        "mark_read",
    )
    .await;
    assert!(why.contains("not a registered channel"), "{why}");
    refused(
        &mut alice,
        "mark_read",
        json!({"channel": "nowhere", "id": 1}),
        "mark_read",
    )
    .await;
    refused(
        &mut alice,
        "mark_read",
        json!({"channel": "club"}),
        "protocol",
    )
    .await;

    // A guest's session has no unread member at all.
    let mut guest = server.connect().await;
    let session = guest.login("guest", WAIT).await.unwrap();
    assert!(session.status && session.unread.is_none(), "{session:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_operator_deletes_any_message() {
    let server = TestServer::start(chatmaster::Config {
        opers: vec!["Root".into()],
        ..common::test_config()
    })
    .await;
    let mut bob = server.login("bob").await;
    join(&mut bob, "den").await;
    let ids = say(&mut bob, &["bob's words"]).await;
    // A guest under an operator's name is no operator.
    let mut root = server.login("root").await;
    let why = refused(&mut root, "delete", json!({"id": ids[0]}), "delete").await;
    assert!(why.contains("not yours"), "{why}");
    drop(root);
    common::until_state(&server, "root gone", |s| {
        s.users.iter().all(|(n, _)| n != "root")
    })
    .await;
    // The operator's account is made by the server's operator.
    common::add_account(&server, "root", "correct horse").await;
    let mut root = common::login_account(&server, "root", "correct horse").await;
    // Logged in to the operator's account, from general, outside den.
    root.command("delete", Some(json!({"id": ids[0]})))
        .await
        .unwrap();
    assert_eq!(
        deleted(&mut bob).await,
        (ids[0], "den".to_owned(), "root".to_owned())
    );
    assert_eq!(deleted(&mut root).await.0, ids[0]);
    assert_eq!(
        history(&mut bob, json!({"channel": "den"})).await.ids(),
        Vec::<i64>::new()
    );
    server.shutdown().await;
}

//! `history` against the real server on 127.0.0.1:0: the pages (latest,
//! before, after) at their edges, `more`, the package limits, who may
//! read, the errors, guest channels taking their messages along, and a
//! store whose writer is stuck not holding history up.

mod common;

use chatmaster::Config;
use common::memory::{history, join, refused, say};
use common::{assert_quiet, next_note, test_config, TestServer};
use serde_json::json;

#[tokio::test]
async fn pages_latest_before_and_after_with_more_at_the_edges() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    join(&mut alice, "rust").await;

    // An empty channel: nothing, and nothing more.
    let empty = history(&mut alice, json!({"channel": "rust"})).await;
    assert_eq!(
        (empty.channel.as_deref(), empty.ids(), empty.more),
        (Some("rust"), Vec::<i64>::new(), false)
    );

    let texts: Vec<String> = (1..=7).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = say(&mut alice, &refs).await;

    // Latest: the newest `limit`, ascending; more says older ones exist.
    let latest = history(&mut alice, json!({"channel": "RUST", "limit": 3})).await;
    assert_eq!(latest.ids(), ids[4..]);
    assert_eq!(latest.texts(), ["m5", "m6", "m7"]);
    assert!(latest.more);
    assert_eq!(
        (latest.channel.as_deref(), latest.with.as_deref()),
        (Some("rust"), None)
    );
    let m = &latest.messages[0];
    assert_eq!(
        (
            m.username.as_str(),
            m.edited.as_ref(),
            m.attachments.as_ref(),
            m.channel.as_ref()
        ),
        ("alice", None, None, None)
    );
    assert!(m.timestamp.ends_with('Z'), "{}", m.timestamp);

    // Before: the newest older than the id; exactly the rest is not "more".
    let before = history(
        &mut alice,
        json!({"channel": "rust", "before": ids[4], "limit": 4}),
    )
    .await;
    assert_eq!((before.ids(), before.more), (ids[..4].to_vec(), false));
    let before = history(
        &mut alice,
        json!({"channel": "rust", "before": ids[4], "limit": 3}),
    )
    .await;
    assert_eq!((before.ids(), before.more), (ids[1..4].to_vec(), true));
    let none = history(&mut alice, json!({"channel": "rust", "before": ids[0]})).await;
    assert_eq!((none.ids(), none.more), (vec![], false));

    // After: the oldest newer than the id.
    let after = history(
        &mut alice,
        json!({"channel": "rust", "after": ids[1], "limit": 2}),
    )
    .await;
    assert_eq!((after.ids(), after.more), (ids[2..4].to_vec(), true));
    let after = history(&mut alice, json!({"channel": "rust", "after": ids[2]})).await;
    assert_eq!((after.ids(), after.more), (ids[3..].to_vec(), false));
    let after = history(&mut alice, json!({"channel": "rust", "after": ids[6]})).await;
    assert_eq!((after.ids(), after.more), (vec![], false));

    // Exactly `limit` messages: all of them, no more.
    let exact = history(&mut alice, json!({"channel": "rust", "limit": 7})).await;
    assert_eq!((exact.ids(), exact.more), (ids.clone(), false));
    // The default limit (50) holds them all.
    let all = history(&mut alice, json!({"channel": "rust"})).await;
    assert_eq!((all.ids(), all.more), (ids.clone(), false));

    // Other channels' messages are not in it.
    let general = history(&mut alice, json!({"channel": "general"})).await;
    assert_eq!(general.ids(), Vec::<i64>::new());
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_history_or_protocol_errors() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    for limit in [0, 101, -1] {
        let why = refused(
            &mut alice,
            "history",
            json!({"channel": "general", "limit": limit}),
            "history",
        )
        .await;
        assert!(why.contains("limit is from 1 to 100"), "{why}");
    }
    let why = refused(
        &mut alice,
        "history",
        json!({"channel": "general", "before": 5, "after": 1}),
        "history",
    )
    .await;
    assert!(why.contains("not both"), "{why}");
    let why = refused(
        &mut alice,
        "history",
        json!({"channel": "nowhere"}),
        "history",
    )
    .await;
    assert!(why.contains("no channel named nowhere"), "{why}");
    let why = refused(&mut alice, "history", json!({}), "history").await;
    assert!(why.contains("Give a channel, or with"), "{why}");
    refused(
        &mut alice,
        "history",
        json!({"channel": "general", "with": "bob"}),
        "history",
    )
    .await;
    refused(
        &mut alice,
        "history",
        json!({"channel": "general", "limit": "5"}),
        "protocol",
    )
    .await;
    refused(
        &mut alice,
        "history",
        json!({"channel": "general", "extra": 1}),
        "protocol",
    )
    .await;
    // The connection is as good as new.
    assert_quiet(&mut alice).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_private_channels_history_is_for_its_members_and_admitted_accounts() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut eve = server.login("eve").await;
    join(&mut alice, "secret").await;
    alice.command("private", None).await.unwrap();
    next_note(&mut alice).await; // channel_update
    say(&mut alice, &["the plan"]).await;

    let why = refused(&mut eve, "history", json!({"channel": "secret"}), "history").await;
    assert!(why.contains("private"), "{why}");
    // A public channel anyone may read, member or not.
    let general = history(&mut alice, json!({"channel": "general"})).await;
    assert_eq!(general.ids(), Vec::<i64>::new());

    // Invited and joined: a member reads it.
    alice
        .command("invite", Some(json!({"username": "eve"})))
        .await
        .unwrap();
    next_note(&mut alice).await; // invite_sent
    next_note(&mut eve).await; // invited
    join(&mut eve, "secret").await;
    let inside = history(&mut eve, json!({"channel": "secret"})).await;
    assert_eq!(inside.texts(), ["the plan"]);
    // A guest that left is an outsider again.
    eve.command("leave", None).await.unwrap();
    next_note(&mut eve).await; // own user_joined for general
    refused(&mut eve, "history", json!({"channel": "secret"}), "history").await;
    server.shutdown().await;
}

/// Deterministic text that deflate cannot shrink much.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// Reads the whole channel back, newest page first, following `more`.
async fn read_all_backwards(
    c: &mut chatmaster::client::ClientConnection,
    limit: usize,
) -> (Vec<i64>, usize) {
    let mut ids = Vec::new();
    let mut before: Option<i64> = None;
    let mut pages = 0;
    loop {
        let params = match before {
            Some(b) => json!({"channel": "general", "before": b, "limit": limit}),
            None => json!({"channel": "general", "limit": limit}),
        };
        let page = history(c, params).await;
        pages += 1;
        assert!(pages < 100, "paging does not end");
        let mut got = page.ids();
        got.extend(ids);
        ids = got;
        if !page.more {
            return (ids, pages);
        }
        before = page.messages.first().map(|m| m.id);
        assert!(before.is_some(), "more with an empty page");
    }
}

#[tokio::test]
async fn an_answer_never_exceeds_the_inflated_package_limit() {
    // 20 messages of 1,000 bytes do not fit 8 KiB of JSON.
    let config = Config {
        max_package_bytes: 8 * 1024,
        max_message_bytes: 1000,
        ..test_config()
    };
    let server = TestServer::start(config).await;
    let mut alice = server.login("alice").await;
    let texts: Vec<String> = (0..20)
        .map(|i| format!("{i:04}{}", "x".repeat(996)))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = say(&mut alice, &refs).await;
    let page = history(&mut alice, json!({"channel": "general", "limit": 20})).await;
    assert!(page.more, "a cut page says there is more");
    assert!(
        !page.messages.is_empty() && page.messages.len() < 8,
        "{}",
        page.messages.len()
    );
    // The newest are kept when reading backwards.
    assert_eq!(page.ids().last(), ids.last());
    let json = serde_json::to_vec(&page.messages).unwrap();
    assert!(json.len() < 8 * 1024);
    // Reading forwards keeps the oldest.
    let forward = history(
        &mut alice,
        json!({"channel": "general", "after": 0, "limit": 20}),
    )
    .await;
    assert!(forward.more);
    assert_eq!(forward.ids()[0], ids[0]);
    // Following `more` reaches every message, each once.
    let (all, pages) = read_all_backwards(&mut alice, 20).await;
    assert_eq!(all, ids);
    assert!(pages >= 3, "{pages} pages");
    server.shutdown().await;
}

#[tokio::test]
async fn an_answer_never_exceeds_the_frame_limit_as_sent() {
    // Incompressible text: 16 messages of 1,000 letters inflate to 16 KB
    // (within the package limit) but deflate to about 10 KB, over a
    // 4 KiB frame.
    let config = Config {
        max_frame_bytes: 4096,
        max_message_bytes: 1000,
        ..test_config()
    };
    let server = TestServer::start(config).await;
    let mut alice = server.login("alice").await;
    let texts: Vec<String> = (0..16).map(|i| noise(i, 1000)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = say(&mut alice, &refs).await;
    let page = history(&mut alice, json!({"channel": "general", "limit": 16})).await;
    assert!(page.more);
    assert!(page.messages.len() < 16 && !page.messages.is_empty());
    let (all, _) = read_all_backwards(&mut alice, 16).await;
    assert_eq!(all, ids);
    server.shutdown().await;
}

#[tokio::test]
async fn a_guest_channels_messages_go_when_the_channel_does() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    join(&mut alice, "tmp").await;
    say(&mut alice, &["soon gone", "me too"]).await;
    alice.command("leave", None).await.unwrap();
    next_note(&mut alice).await; // own user_joined for general
                                 // The ping's barrier follows the purge the leave queued.
    assert_quiet(&mut alice).await;
    let why = refused(&mut bob, "history", json!({"channel": "tmp"}), "history").await;
    assert!(why.contains("no channel"), "{why}");
    // A new channel of the same name starts empty, and keeps its own.
    join(&mut bob, "TMP").await;
    assert_eq!(
        history(&mut bob, json!({"channel": "tmp"})).await.ids(),
        Vec::<i64>::new()
    );
    let kept = say(&mut bob, &["mine"]).await;
    assert_eq!(
        history(&mut bob, json!({"channel": "tmp"})).await.ids(),
        kept
    );
    // General stays, and keeps its messages.
    say(&mut alice, &["in general"]).await;
    assert_eq!(
        history(&mut alice, json!({"channel": "general"}))
            .await
            .texts(),
        ["in general"]
    );
    server.shutdown().await;
}

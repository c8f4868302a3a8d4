//! `search` against the real server on 127.0.0.1:0: whole words,
//! prefixes, phrases, case and accents, hostile query text, the filters,
//! paging with `total`, newest first, and visibility (a private channel's
//! messages never reach an outsider).

mod common;

use chatmaster::Config;
use common::memory::{join, refused, say, search, search_texts};
use common::{assert_quiet, next_note, test_config, TestServer};
use serde_json::json;

#[tokio::test]
async fn words_prefixes_phrases_case_and_accents() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    say(
        &mut alice,
        &[
            "The Café opens at nine",
            "cafeteria food is fine",
            "I like rust and tokio",
            "rusty nails everywhere",
            "tokio and rust, again",
            "Straße und Übermut",
        ],
    )
    .await;
    // Whole words: rust is not rusty.
    assert_eq!(
        search_texts(&mut alice, "rust").await,
        ["tokio and rust, again", "I like rust and tokio"]
    );
    // A prefix takes both.
    assert_eq!(search_texts(&mut alice, "rust*").await.len(), 3);
    // Case and accents do not matter, either way round.
    assert_eq!(
        search_texts(&mut alice, "CAFE").await,
        ["The Café opens at nine"]
    );
    assert_eq!(
        search_texts(&mut alice, "café").await,
        ["The Café opens at nine"]
    );
    assert_eq!(
        search_texts(&mut alice, "ubermut").await,
        ["Straße und Übermut"]
    );
    assert_eq!(search_texts(&mut alice, "caf*").await.len(), 2);
    // Every word must be there, in any order; a phrase in its order.
    assert_eq!(search_texts(&mut alice, "tokio rust").await.len(), 2);
    assert_eq!(
        search_texts(&mut alice, "\"rust and tokio\"").await,
        ["I like rust and tokio"]
    );
    assert!(search_texts(&mut alice, "\"tokio rust\"").await.is_empty());
    assert!(search_texts(&mut alice, "nothinglikethis").await.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn query_text_is_never_fts_syntax_and_bad_queries_are_search_errors() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    say(
        &mut alice,
        &[
            "apples OR pears",
            "NOT this one",
            "text: plain",
            "near NEAR(x)",
        ],
    )
    .await;
    // Operators and column filters are words like any other.
    assert_eq!(search_texts(&mut alice, "OR").await, ["apples OR pears"]);
    assert_eq!(search_texts(&mut alice, "NOT").await, ["NOT this one"]);
    assert_eq!(
        search_texts(&mut alice, "text:plain").await,
        ["text: plain"]
    );
    assert_eq!(search_texts(&mut alice, "NEAR(x)").await, ["near NEAR(x)"]);
    for hostile in [
        "apples AND",
        "(((",
        "\"unclosed",
        "*",
        "^start",
        "a:b:c",
        "{col1 col2}: x",
        "\u{0}",
        "'; DROP TABLE messages; --",
    ] {
        alice
            .command("search", Some(json!({"query": hostile})))
            .await
            .unwrap();
        match common::next(&mut alice).await {
            chatmaster::wire::protocol::ServerPackage::Notification(
                chatmaster::wire::protocol::Notification::SearchResults { .. },
            ) => {}
            chatmaster::wire::protocol::ServerPackage::Error(e) => {
                assert_eq!(e.error_type, "search", "{hostile:?}: {}", e.message)
            }
            other => panic!("{hostile:?}: {other:?}"),
        }
    }
    // Nothing to search for, or far too much.
    for nothing in ["", "   ", "***", "\"\"", "-- ()"] {
        let why = refused(&mut alice, "search", json!({"query": nothing}), "search").await;
        assert!(why.contains("Nothing to search for"), "{why}");
    }
    let many = "w ".repeat(17);
    refused(&mut alice, "search", json!({"query": many}), "search").await;
    for (key, value) in [("rows", 0), ("rows", 101), ("page", 0), ("page", -3)] {
        refused(
            &mut alice,
            "search",
            json!({"query": "x", key: value}),
            "search",
        )
        .await;
    }
    refused(&mut alice, "search", json!({"query": 5}), "protocol").await;
    refused(&mut alice, "search", json!({"text": "x"}), "protocol").await;
    // The messages are all still there and the connection is fine.
    assert_eq!(search_texts(&mut alice, "apples").await.len(), 1);
    assert_quiet(&mut alice).await;
    server.shutdown().await;
}

#[tokio::test]
async fn pages_total_newest_first_and_filters() {
    let config = Config {
        count_cap: 25,
        ..test_config()
    };
    let server = TestServer::start(config).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let texts: Vec<String> = (0..12).map(|i| format!("needle number {i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let alices = say(&mut alice, &refs[..8]).await;
    let bobs = say(&mut bob, &refs[8..]).await;
    let all: Vec<i64> = alices.iter().chain(&bobs).rev().copied().collect();

    let first = search(&mut alice, json!({"query": "needle", "rows": 5})).await;
    assert_eq!((first.total, first.page, first.rows), (12, 1, 5));
    assert_eq!(first.ids(), all[..5]);
    assert_eq!(first.messages[0].channel.as_deref(), Some("general"));
    assert_eq!(first.truncated, None);
    let third = search(&mut alice, json!({"query": "needle", "rows": 5, "page": 3})).await;
    assert_eq!(third.ids(), all[10..]);
    let past = search(&mut alice, json!({"query": "needle", "rows": 5, "page": 4})).await;
    assert_eq!((past.total, past.ids()), (12, vec![]));
    // Default rows: 20.
    assert_eq!(
        search(&mut alice, json!({"query": "needle"})).await.rows,
        20
    );

    // One author, whatever the case of the name.
    let by_bob = search(&mut alice, json!({"query": "needle", "username": "BOB"})).await;
    assert_eq!(
        (by_bob.total, by_bob.ids()),
        (4, bobs.iter().rev().copied().collect::<Vec<_>>())
    );
    // One channel.
    join(&mut bob, "rust").await;
    let in_rust = say(&mut bob, &["needle in rust"]).await;
    let found = search(&mut alice, json!({"query": "needle", "channel": "Rust"})).await;
    assert_eq!(found.ids(), in_rust);
    assert_eq!(found.messages[0].channel.as_deref(), Some("rust"));
    let why = refused(
        &mut alice,
        "search",
        json!({"query": "x", "channel": "nowhere"}),
        "search",
    )
    .await;
    assert!(why.contains("no channel"), "{why}");

    // The total is counted up to the cap, and pages reach no further.
    let more: Vec<String> = (0..20).map(|i| format!("needle again {i}")).collect();
    let refs: Vec<&str> = more.iter().map(String::as_str).collect();
    say(&mut alice, &refs).await;
    assert_eq!(
        search(&mut alice, json!({"query": "needle"})).await.total,
        25
    );
    let why = refused(
        &mut alice,
        "search",
        json!({"query": "needle", "rows": 5, "page": 6}),
        "search",
    )
    .await;
    assert!(why.contains("first 25"), "{why}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_private_channels_messages_are_never_found_by_an_outsider() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut eve = server.login("eve").await;
    join(&mut alice, "vault").await;
    alice.command("private", None).await.unwrap();
    next_note(&mut alice).await; // channel_update
    say(&mut alice, &["the secret code is swordfish"]).await;
    say(&mut eve, &["is there a swordfish here"]).await;

    assert_eq!(
        search_texts(&mut eve, "swordfish").await,
        ["is there a swordfish here"]
    );
    assert_eq!(search_texts(&mut eve, "secret").await, Vec::<String>::new());
    let all = search(&mut eve, json!({"query": "swordfish"})).await;
    assert_eq!(
        all.total, 1,
        "the total does not count what eve may not read"
    );
    let why = refused(
        &mut eve,
        "search",
        json!({"query": "secret", "channel": "vault"}),
        "search",
    )
    .await;
    assert!(why.contains("private"), "{why}");
    // The member finds both.
    assert_eq!(search_texts(&mut alice, "swordfish").await.len(), 2);
    // Public again: anyone finds it.
    alice.command("public", None).await.unwrap();
    next_note(&mut alice).await;
    assert_eq!(
        search_texts(&mut eve, "secret").await,
        ["the secret code is swordfish"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_page_too_large_for_one_package_is_cut_and_says_so() {
    let config = Config {
        max_package_bytes: 8 * 1024,
        max_message_bytes: 1000,
        ..test_config()
    };
    let server = TestServer::start(config).await;
    let mut alice = server.login("alice").await;
    let texts: Vec<String> = (0..20)
        .map(|i| format!("big {i} {}", "y".repeat(990)))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    say(&mut alice, &refs).await;
    let found = search(&mut alice, json!({"query": "big", "rows": 20})).await;
    assert_eq!(found.total, 20);
    assert_eq!(found.truncated, Some(true));
    assert!(!found.messages.is_empty() && found.messages.len() < 8);
    server.shutdown().await;
}

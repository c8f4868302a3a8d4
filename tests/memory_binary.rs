//! History, search and edits through the real `chatmaster-server` binary
//! on a database file: after `kill -9` (and SIGTERM) and a restart,
//! history holds every acknowledged message, edits and deletions as they
//! were answered, and search agrees; `--history-days` expires old messages
//! in the background.

#![cfg(unix)]

mod common;

use chatmaster::client::ClientConnection;
use chatmaster::store::{SqliteStore, Store, StoreOptions, StoredMessage};
use chatmaster::wire::protocol::{Notification, ServerPackage};
use common::binary::{db_command, Binary};
use common::memory::{history, next_answer, say, search};
use common::WAIT;
use nix::sys::signal::Signal;
use serde_json::json;

async fn login(addr: &str, name: &str) -> ClientConnection {
    let mut c = ClientConnection::connect(addr).await.expect("connect");
    assert!(c.login(name, WAIT).await.expect("login").status);
    assert!(matches!(
        c.recv_timeout(WAIT).await.unwrap(),
        ServerPackage::Notification(Notification::UserJoined { .. })
    ));
    c
}

/// Every message of `general`, paging backwards 100 at a time.
async fn whole_history(c: &mut ClientConnection) -> Vec<(i64, String, Option<String>)> {
    let mut all = Vec::new();
    let mut before = None;
    for _ in 0..100 {
        let params = match before {
            Some(b) => json!({"channel": "general", "before": b, "limit": 100}),
            None => json!({"channel": "general", "limit": 100}),
        };
        let page = history(c, params).await;
        let mut got: Vec<_> = page
            .messages
            .iter()
            .map(|m| (m.id, m.message.clone(), m.edited.clone()))
            .collect();
        got.extend(all);
        all = got;
        if !page.more {
            return all;
        }
        before = page.messages.first().map(|m| m.id);
    }
    panic!("history did not end");
}

async fn survives(stop: impl FnOnce(Binary)) {
    const N: usize = 250;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Binary::on_db(&db);
    let mut alice = login(&server.addr, "alice").await;
    let texts: Vec<String> = (0..N).map(|i| format!("note {i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = say(&mut alice, &refs).await;
    // One edit and one deletion, each answered before the stop.
    alice
        .command(
            "edit",
            Some(json!({"id": ids[10], "message": "edited note"})),
        )
        .await
        .unwrap();
    let edited = match next_answer(&mut alice).await {
        ServerPackage::Notification(Notification::MessageEdited { edited, .. }) => edited,
        other => panic!("{other:?}"),
    };
    alice
        .command("delete", Some(json!({"id": ids[20]})))
        .await
        .unwrap();
    assert!(matches!(
        next_answer(&mut alice).await,
        ServerPackage::Notification(Notification::MessageDeleted { .. })
    ));
    stop(server);

    let server = Binary::on_db(&db);
    let mut bob = login(&server.addr, "bob").await;
    let expected: Vec<(i64, String, Option<String>)> = ids
        .iter()
        .zip(&texts)
        .filter(|(id, _)| **id != ids[20])
        .map(|(id, text)| {
            if *id == ids[10] {
                (*id, "edited note".to_owned(), Some(edited.clone()))
            } else {
                (*id, text.clone(), None)
            }
        })
        .collect();
    assert_eq!(whole_history(&mut bob).await, expected);
    let found = search(&mut bob, json!({"query": "note"})).await;
    assert_eq!(found.total, N - 1);
    let found = search(&mut bob, json!({"query": "edited"})).await;
    assert_eq!(found.ids(), [ids[10]]);
    server.shut_down();
}

#[tokio::test]
async fn history_holds_every_acknowledged_message_after_kill_9() {
    survives(Binary::kill_hard).await;
}

#[tokio::test]
async fn history_holds_every_acknowledged_message_after_sigterm() {
    survives(Binary::shut_down).await;
}

#[tokio::test]
async fn history_days_expires_old_messages_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    {
        let store = SqliteStore::open(&db, &StoreOptions::default()).unwrap();
        let old: Vec<StoredMessage> = (1..=2500)
            .map(|id| {
                StoredMessage::new(
                    id,
                    "general",
                    "general",
                    "old",
                    "old",
                    "ancient words",
                    "2020-01-01T00:00:00.000Z",
                )
            })
            .collect();
        store.append_messages(&old).unwrap();
        let now = chatmaster::server::chat::timestamp_now();
        store
            .append_messages(&[StoredMessage::new(
                2501,
                "general",
                "general",
                "new",
                "new",
                "fresh words",
                &now,
            )])
            .unwrap();
    }
    let mut cmd = db_command(&db);
    cmd.args(["--history-days", "1"]);
    let mut server = Binary::spawn(cmd);
    let line = server.wait_line("old messages expired", |l| {
        l.contains("old messages expired")
    });
    assert!(line.contains("messages=2500"), "{line}");
    let mut alice = login(&server.addr, "alice").await;
    let page = history(&mut alice, json!({"channel": "general"})).await;
    assert_eq!(page.texts(), ["fresh words"]);
    assert!(search(&mut alice, json!({"query": "ancient"}))
        .await
        .messages
        .is_empty());
    say(&mut alice, &["still here"]).await;
    server.stop(Signal::SIGTERM);
}

#[tokio::test]
async fn a_guest_channel_gone_with_a_killed_server_takes_its_messages_along() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Binary::on_db(&db);
    let mut alice = login(&server.addr, "alice").await;
    common::memory::join(&mut alice, "tmp").await;
    say(&mut alice, &["ephemeral words"]).await;
    let mut bob = login(&server.addr, "bob").await;
    say(&mut bob, &["lasting words"]).await;
    // Killed while alice is still in tmp: nobody saw the channel go.
    server.kill_hard();
    let server = Binary::on_db(&db);
    // Logged before the server listens, so among the lines seen already.
    assert!(
        server.log.seen.iter().any(|l| {
            l.contains("messages of channels that are gone deleted") && l.contains("messages=1")
        }),
        "{:?}",
        server.log.seen
    );
    let mut carol = login(&server.addr, "carol").await;
    let found = search(&mut carol, json!({"query": "words"})).await;
    assert_eq!(found.texts(), ["lasting words"]);
    server.shut_down();
}

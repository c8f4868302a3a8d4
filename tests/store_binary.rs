//! The store through the real `chatmaster-server` binary: every database
//! file it cannot use is refused with one line and exit code 1, leaving
//! the file as it was; acknowledged messages survive `kill -9` and SIGTERM,
//! and ids go on above them after a restart.

#![cfg(unix)]

mod common;

use std::path::Path;
use std::time::Duration;

use chatmaster::client::ClientConnection;
use chatmaster::store::{SqliteStore, Store, StoreOptions};
use chatmaster::wire::protocol::{Notification, ServerPackage};
use common::binary::{db_command, run_to_exit, Binary};

/// How long the binary gets to answer.
const WAIT: Duration = Duration::from_secs(10);

/// Runs the binary on a database it must refuse; returns its stderr.
fn refused(db: &Path) -> String {
    let (status, stderr) = run_to_exit(db_command(db));
    let status = status.unwrap_or_else(|| panic!("the server kept running on {db:?}: {stderr}"));
    assert_eq!(status.code(), Some(1), "{db:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(
        lines[0].starts_with("chatmaster-server: cannot use the database"),
        "{stderr}"
    );
    stderr
}

/// A file whose bytes must be the same after the refusal.
fn refused_untouched(db: &Path) -> String {
    let before = std::fs::read(db).expect("read the file");
    let message = refused(db);
    assert_eq!(
        std::fs::read(db).expect("read again"),
        before,
        "{db:?} changed"
    );
    message
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("future.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE t (x); PRAGMA user_version = 1000;")
            .unwrap();
    }
    let message = refused_untouched(&db);
    assert!(message.contains("newer version"), "{message}");
    assert!(message.contains("1000"), "{message}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.txt");
    std::fs::write(&db, "dear diary,\n".repeat(500)).unwrap();
    let message = refused_untouched(&db);
    assert!(message.contains("not a SQLite database"), "{message}");
}

#[test]
fn a_corrupt_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broken.db");
    drop(SqliteStore::open(&db, &StoreOptions::default()).unwrap());
    let mut bytes = std::fs::read(&db).unwrap();
    // Page 1 after the 100-byte header is the schema table's b-tree.
    for b in &mut bytes[100..600] {
        *b = 0x5A;
    }
    std::fs::write(&db, &bytes).unwrap();
    let message = refused_untouched(&db);
    assert!(message.contains("corrupt"), "{message}");
}

#[test]
fn an_unwritable_location_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Below a regular file: the database can never be created.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    let message = refused(&plain.join("chat.db"));
    assert!(message.contains("cannot be written"), "{message}");
    // A directory is not a database file either.
    let message = refused(dir.path());
    assert!(message.contains("cannot be written"), "{message}");
}

#[test]
fn a_read_only_database_is_refused_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    drop(SqliteStore::open(&db, &StoreOptions::default()).unwrap());
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    // Permissions bind everyone but root; as root the file stays writable,
    // and only the path-based cases above can be made unwritable.
    let writable = std::fs::OpenOptions::new().append(true).open(&db).is_ok();
    if !writable {
        let message = refused_untouched(&db);
        assert!(message.contains("cannot be written"), "{message}");
    } else {
        eprintln!("running as root: a read-only file cannot be made; case skipped");
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

async fn next(c: &mut ClientConnection) -> ServerPackage {
    c.recv_timeout(WAIT).await.expect("a package in time")
}

/// Logs in and reads the session and the own `user_joined`.
async fn login(addr: &str, name: &str) -> ClientConnection {
    let mut c = ClientConnection::connect(addr).await.expect("connect");
    assert!(c.login(name, WAIT).await.expect("login").status);
    assert!(matches!(
        next(&mut c).await,
        ServerPackage::Notification(Notification::UserJoined { .. })
    ));
    c
}

/// Sends `n` messages and waits for all their acknowledgements; returns
/// the acknowledged ids, which must increase.
async fn send_acknowledged(c: &mut ClientConnection, prefix: &str, n: usize) -> Vec<i64> {
    for i in 0..n {
        c.feed(&chatmaster::ClientPackage::Message(
            chatmaster::wire::protocol::OutgoingMessage::text(format!("{prefix} {i}")),
        ))
        .await
        .expect("send");
    }
    c.flush().await.expect("flush");
    let mut ids = Vec::new();
    while ids.len() < n {
        match next(c).await {
            ServerPackage::Notification(Notification::MessageSent { id, .. }) => {
                if let Some(last) = ids.last() {
                    assert!(id > *last, "id {id} after {last}");
                }
                ids.push(id);
            }
            ServerPackage::Notification(_) => {}
            other => panic!("expected message_sent, got {other:?}"),
        }
    }
    ids
}

/// What the file holds for `general`, read with a read-only connection.
fn stored(db: &Path) -> Vec<(i64, String)> {
    let store = SqliteStore::open_read_only(db, &StoreOptions::default()).expect("open");
    store
        .messages_after("general", 0, 100_000)
        .expect("read")
        .into_iter()
        .map(|m| (m.id, m.text))
        .collect()
}

fn assert_all_stored(db: &Path, prefix: &str, ids: &[i64]) {
    let rows = stored(db);
    for (i, id) in ids.iter().enumerate() {
        let text = format!("{prefix} {i}");
        assert!(
            rows.contains(&(*id, text.clone())),
            "acknowledged message {id} ({text}) missing after restart"
        );
    }
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9_and_ids_go_on() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");

    let server = Binary::on_db(&db);
    let mut alice = login(&server.addr, "alice").await;
    let first = send_acknowledged(&mut alice, "before", N).await;
    server.kill_hard();
    assert_all_stored(&db, "before", &first);

    // The same file again: ids continue above everything stored.
    let server = Binary::on_db(&db);
    let mut alice = login(&server.addr, "alice").await;
    let mut bob = login(&server.addr, "bob").await;
    let second = send_acknowledged(&mut alice, "after", N).await;
    let highest = *first.last().unwrap();
    assert!(second[0] > highest, "{} not above {highest}", second[0]);
    // bob got them with the same ids.
    let mut delivered = Vec::new();
    while delivered.len() < N {
        match next(&mut bob).await {
            ServerPackage::Message(m) => delivered.push(m.id),
            ServerPackage::Notification(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered, second);
    server.kill_hard();
    assert_all_stored(&db, "before", &first);
    assert_all_stored(&db, "after", &second);
}

#[tokio::test]
async fn sigterm_commits_everything_queued_and_exits_0() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");

    let server = Binary::on_db(&db);
    let mut alice = login(&server.addr, "alice").await;
    let acked = send_acknowledged(&mut alice, "acked", N).await;
    // These are not waited for: SIGTERM follows at once, and the server
    // commits whatever it has accepted before it exits.
    for i in 0..N {
        alice
            .feed(&chatmaster::ClientPackage::Message(
                chatmaster::wire::protocol::OutgoingMessage::text(format!("late {i}")),
            ))
            .await
            .unwrap();
    }
    alice.flush().await.unwrap();
    server.shut_down();
    // Whatever was acknowledged before the goodbye is stored. (The goodbye
    // itself may be lost: closing a socket with unread input, the late
    // messages the server never got to, resets the connection.)
    let mut late_acks = 0;
    loop {
        match alice.recv_timeout(WAIT).await {
            Ok(ServerPackage::Notification(Notification::MessageSent { .. })) => late_acks += 1,
            Ok(ServerPackage::Notification(Notification::ServerShutdown {})) | Err(_) => break,
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert_all_stored(&db, "acked", &acked);
    // Of the late ones, those the server read before it stopped are all
    // stored (its queue was committed on the way out, acknowledged or
    // not), in order and without a hole.
    let rows = stored(&db);
    let late: Vec<&(i64, String)> = rows
        .iter()
        .filter(|(_, t)| t.starts_with("late "))
        .collect();
    assert!(
        late.len() >= late_acks,
        "{} stored, {late_acks} acknowledged",
        late.len()
    );
    for (i, (_, text)) in late.iter().enumerate() {
        assert_eq!(text, &format!("late {i}"));
    }
    assert!(late.windows(2).all(|w| w[0].0 < w[1].0));
    println!(
        "{} of {N} late messages stored, {late_acks} acknowledged",
        late.len()
    );
    let highest = rows.iter().map(|(id, _)| *id).max().unwrap();

    let server = Binary::on_db(&db);
    let mut alice = login(&server.addr, "alice").await;
    let next_ids = send_acknowledged(&mut alice, "next", 1).await;
    assert!(next_ids[0] > highest);
    server.shut_down();
}

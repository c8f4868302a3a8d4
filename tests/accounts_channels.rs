//! Registered channels: created by an account holder, they outlive their
//! members, keep their owner account and privacy, and keep admitted
//! accounts; guests' channels behave as before. The second half runs the
//! `chatmaster-server` binary on a database file and restarts it with
//! `kill -9` and with SIGTERM; the admin commands run as the binary too.

#![cfg(unix)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage, Session};
use common::binary::Binary;
use common::*;
use nix::sys::signal::Signal;
use serde_json::json;

const PW: &str = "correct horse battery";

async fn fresh(addr: &str) -> ClientConnection {
    let mut c = ClientConnection::connect(addr).await.expect("connect");
    next_login_request(&mut c).await;
    c
}

/// Logs in `name` with `PW`, registering it first if `register`.
async fn account(addr: &str, name: &str, register: bool) -> ClientConnection {
    let mut c = fresh(addr).await;
    if register {
        assert!(login_with(&mut c, name, None).await.status);
        c.command("register", Some(json!({"password": PW})))
            .await
            .unwrap();
        assert!(matches!(
            next_note(&mut c).await,
            Notification::Registered { .. }
        ));
    } else {
        let s = login_with(&mut c, name, Some(PW)).await;
        assert!(s.status, "{s:?}");
    }
    c
}

async fn command(c: &mut ClientConnection, name: &str, params: serde_json::Value) {
    c.command(name, Some(params)).await.expect("send");
}

/// Joins `channel` and returns own `user_joined`'s (owner, private).
async fn join(c: &mut ClientConnection, channel: &str) -> (Option<String>, Option<bool>) {
    command(c, "join", json!({ "channel": channel })).await;
    loop {
        match next_note(c).await {
            Notification::UserJoined {
                channel: ch,
                users: Some(_),
                owner,
                private,
                ..
            } if ch.eq_ignore_ascii_case(channel) => return (owner, private),
            _ => continue,
        }
    }
}

async fn channels(c: &mut ClientConnection) -> Vec<String> {
    command(c, "channels", json!({})).await;
    loop {
        if let Notification::ChannelList { channels, .. } = next_note(c).await {
            return channels;
        }
    }
}

/// Sets the channel private and waits for the confirmation.
async fn make_private(c: &mut ClientConnection) {
    command(c, "private", json!({})).await;
    loop {
        if let Notification::ChannelUpdate { private: true, .. } = next_note(c).await {
            return;
        }
    }
}

async fn invite(c: &mut ClientConnection, who: &str) {
    command(c, "invite", json!({ "username": who })).await;
    loop {
        if let Notification::InviteSent { .. } = next_note(c).await {
            return;
        }
    }
}

async fn wait_invited(c: &mut ClientConnection) {
    loop {
        if let Notification::Invited { .. } = next_note(c).await {
            return;
        }
    }
}

/// Expects `join` to be refused as private.
async fn join_refused(c: &mut ClientConnection, channel: &str) {
    command(c, "join", json!({ "channel": channel })).await;
    loop {
        match next(c).await {
            ServerPackage::Error(e) => {
                assert_eq!(e.error_type, "join");
                assert!(e.message.contains("private"), "{}", e.message);
                return;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn registered_channels_outlive_their_members_and_keep_their_owner() {
    let server = TestServer::start_default().await;
    let addr = server.addr.to_string();
    let mut alice = account(&addr, "alice", true).await;
    let mut bob = account(&addr, "bob", true).await;
    let mut guest = server.login("guest").await;

    assert_eq!(
        join(&mut alice, "Club").await,
        (Some("alice".into()), Some(false))
    );
    assert_eq!(join(&mut guest, "tmp").await.0, Some("guest".into()));
    assert_eq!(join(&mut bob, "club").await.0, Some("alice".into()));
    // The owner leaves: ownership stays with the account.
    command(&mut alice, "leave", json!({})).await;
    assert_quiet_after_join(&mut alice).await;
    command(&mut bob, "leave", json!({})).await;
    command(&mut guest, "leave", json!({})).await;
    until_state(&server, "everyone back in general", |s| {
        s.users.iter().all(|(_, c)| c == "general")
    })
    .await;
    // Empty: the registered channel is kept and listed, the guest's is gone.
    assert_eq!(channels(&mut guest).await, vec!["Club", "general"]);
    let snap = server.hub.snapshot();
    snap.check_invariants().unwrap();
    let club = snap.channels.iter().find(|c| c.name == "Club").unwrap();
    assert!(club.registered && club.members.is_empty());
    assert_eq!(club.owner.as_deref(), Some("alice"));
    // Only the owner account may change it, even while it is empty of her.
    assert_eq!(join(&mut guest, "club").await.0, Some("alice".into()));
    command(&mut guest, "private", json!({})).await;
    assert_eq!(next_error(&mut guest).await.0, "private");
    server.shutdown().await;
}

#[tokio::test]
async fn an_owner_renamed_elsewhere_is_announced_in_its_channels() {
    let server = TestServer::start_default().await;
    let addr = server.addr.to_string();
    let mut alice = account(&addr, "alice", true).await;
    let mut guest = server.login("guest").await;
    join(&mut alice, "club").await;
    command(&mut alice, "leave", json!({})).await;
    assert_quiet_after_join(&mut alice).await;
    assert_eq!(join(&mut guest, "club").await.0, Some("alice".into()));
    command(&mut alice, "rename", json!({"username": "alicia"})).await;
    loop {
        if let Notification::ChannelUpdate { channel, owner, .. } = next_note(&mut guest).await {
            assert_eq!(
                (channel.as_str(), owner.as_deref()),
                ("club", Some("alicia"))
            );
            break;
        }
    }
    server.shutdown().await;
}

/// After `leave`, the own `user_joined` for general arrives; skip it.
async fn assert_quiet_after_join(c: &mut ClientConnection) {
    loop {
        if let Notification::UserJoined {
            users: Some(_),
            channel,
            ..
        } = next_note(c).await
        {
            assert_eq!(channel, "general");
            return;
        }
    }
}

#[tokio::test]
async fn admitted_accounts_keep_access_and_guests_need_an_invitation_each_time() {
    let server = TestServer::start_default().await;
    let addr = server.addr.to_string();
    let mut alice = account(&addr, "alice", true).await;
    let mut bob = account(&addr, "bob", true).await;
    let mut guest = server.login("guest").await;
    join(&mut alice, "secret").await;
    make_private(&mut alice).await;
    for who in ["bob", "guest"] {
        invite(&mut alice, who).await;
    }
    wait_invited(&mut bob).await;
    wait_invited(&mut guest).await;
    assert_eq!(join(&mut bob, "secret").await.1, Some(true));
    join(&mut guest, "secret").await;
    for c in [&mut bob, &mut guest] {
        command(c, "leave", json!({})).await;
        assert_quiet_after_join(c).await;
    }
    // Bob's account was admitted; the guest's invitation was used up.
    join(&mut bob, "secret").await;
    join_refused(&mut guest, "secret").await;
    server.shutdown().await;
}

/// Runs `chatmaster-server accounts ARGS` with `stdin` piped in.
fn admin(db: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatmaster-server"))
        .arg("--db")
        .arg(db)
        .arg("accounts")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the admin command");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Builds state, stops the server with `signal`, restarts it on the same
/// file and checks accounts, registered channels, owner, privacy and
/// admitted accounts survived.
async fn survives_restart(signal: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Binary::on_db(&db);
    let addr = server.addr.clone();
    let mut alice = account(&addr, "alice", true).await;
    let mut bob = account(&addr, "bob", true).await;
    let mut guest = account_guest(&addr, "guest").await;
    join(&mut alice, "lobby").await;
    command(&mut alice, "leave", json!({})).await;
    assert_quiet_after_join(&mut alice).await;
    join(&mut alice, "secret").await;
    make_private(&mut alice).await;
    invite(&mut alice, "bob").await;
    wait_invited(&mut bob).await;
    join(&mut bob, "secret").await;
    join(&mut guest, "guestroom").await;
    let status = server.stop(signal);
    if signal == Signal::SIGTERM {
        assert!(status.success(), "{status:?}");
    }

    let server = Binary::on_db(&db);
    let addr = server.addr.clone();
    let mut guest = fresh(&addr).await;
    assert!(login_with(&mut guest, "guest", None).await.status);
    // The public registered channel is listed while empty; the guest's
    // channel and the private one are not.
    assert_eq!(channels(&mut guest).await, vec!["general", "lobby"]);
    join_refused(&mut guest, "secret").await;
    let mut other = fresh(&addr).await;
    let s = login_with(&mut other, "bob", None).await;
    assert_eq!(s.password_required, Some(true), "bob's account survived");
    let mut bob = account(&addr, "bob", false).await;
    assert_eq!(
        join(&mut bob, "secret").await,
        (Some("alice".into()), Some(true)),
        "admitted bob keeps access; alice still owns it"
    );
    server.shut_down();
}

async fn account_guest(addr: &str, name: &str) -> ClientConnection {
    let mut c = fresh(addr).await;
    assert!(login_with(&mut c, name, None).await.status);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_state_survives_kill_9() {
    survives_restart(Signal::SIGKILL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_state_survives_sigterm() {
    survives_restart(Signal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_work_on_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut server = Binary::on_db(&db);
    let addr = server.addr.clone();

    assert_eq!(admin(&db, &["add", "Zoe"], &format!("{PW}\n")).0, 0);
    let (code, _, err) = admin(&db, &["add", "zoe"], &format!("{PW}\n"));
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = admin(&db, &["add", "yann"], "short\n");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("at least 8"), "{err}");
    // The running server enforces the account once it has polled.
    let s = guest_after_reload(&mut server, "zoe").await;
    assert_eq!(s.password_required, Some(true), "{s:?}");
    assert!(s.reason.unwrap().contains("registered name"));
    let mut c = fresh(&addr).await;
    let s = login_with(&mut c, "zoe", Some(PW)).await;
    assert_eq!((s.status, s.username.as_deref()), (true, Some("Zoe")));

    assert_eq!(admin(&db, &["passwd", "ZOE"], "a new password\n").0, 0);
    let mut d = fresh(&addr).await;
    assert!(!login_with(&mut d, "zoe", Some(PW)).await.status);
    assert!(
        login_with(&mut d, "zoe", Some("a new password"))
            .await
            .status
    );

    let (code, out, _) = admin(&db, &["list"], "");
    assert_eq!(code, 0);
    assert!(out.starts_with("Zoe\t"), "{out}");
    assert_eq!(admin(&db, &["delete", "nobody"], "").0, 3);
    assert_eq!(admin(&db, &["delete", "zoe"], "").0, 0);
    let (_, out, _) = admin(&db, &["list"], "");
    assert_eq!(out.trim(), "");
    // Deleted: the name needs no password any more (Zoe is still online,
    // so it is merely taken).
    let mut e = fresh(&addr).await;
    let s = login_with(&mut e, "zoe", None).await;
    assert_eq!(s.password_required, None);
    assert_eq!(s.reason.as_deref(), Some("Username is already taken."));
    server.shut_down();
}

/// Waits for the running server's log to say its poll found another
/// process's account change and reloaded the names (the event the admin
/// command's effect waits on), then logs in once as the guest `name`.
async fn guest_after_reload(server: &mut Binary, name: &str) -> Session {
    server.wait_line("about the account names reloaded", |l| {
        l.contains("account names reloaded")
    });
    let mut c = fresh(&server.addr).await;
    login_with(&mut c, name, None).await
}

/// How long a name may stay taken after its holder's connection was
/// dropped: the server sees the close on its own time, which a client
/// cannot observe, so the login is retried until then.
const CLOSE_BOUND: Duration = Duration::from_secs(15);

/// Logs in as the guest `name` on fresh connections until the server's
/// answer is the one `wanted` accepts (a guest let in is disconnected and
/// the next attempt made). Fails after [`CLOSE_BOUND`].
async fn guest_until_refused(addr: &str, name: &str, wanted: impl Fn(&Session) -> bool) -> Session {
    let deadline = Instant::now() + CLOSE_BOUND;
    loop {
        let mut c = fresh(addr).await;
        let s = login_with(&mut c, name, None).await;
        if wanted(&s) {
            return s;
        }
        // Still "taken" by a connection whose close the server has not
        // seen yet: try again.
        drop(c);
        assert!(
            Instant::now() < deadline,
            "{name}: no wanted answer after {CLOSE_BOUND:?}: {s:?}"
        );
        // Paces the retries; the loop waits on the refusal, not on this.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_added_and_deleted_by_the_admin_command_are_seen_by_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut server = Binary::on_db(&db);
    let addr = server.addr.clone();
    // A guest holds the name before it is made an account elsewhere.
    let mut early = account_guest(&addr, "yves").await;
    assert_eq!(admin(&db, &["add", "Yves"], &format!("{PW}\n")).0, 0);
    // Once polled, the name needs its password (the guest holding it keeps
    // it until a login with the password takes over).
    let s = guest_after_reload(&mut server, "yves").await;
    assert_eq!(s.password_required, Some(true), "{s:?}");
    assert!(s.reason.unwrap().contains("Yves is a registered name"));
    let mut owner = fresh(&addr).await;
    assert!(login_with(&mut owner, "YVES", Some(PW)).await.status);
    loop {
        match next(&mut early).await {
            ServerPackage::Error(e) if e.error_type == "login" => {
                assert!(e.message.contains("another connection"), "{e:?}");
                break;
            }
            ServerPackage::Notification(_) => {}
            other => panic!("{other:?}"),
        }
    }
    drop(owner);

    // Deleted: the next login needs no password (no poll to wait for).
    assert_eq!(admin(&db, &["delete", "yves"], "").0, 0);
    let s = guest_until_refused(&addr, "yves", |s| s.status).await;
    assert_eq!(s.username.as_deref(), Some("yves"));
    server.shut_down();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_alike_of_an_account_added_by_the_admin_command_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut server = Binary::on_db(&db);
    let addr = server.addr.clone();
    assert_eq!(admin(&db, &["add", "alice"], &format!("{PW}\n")).0, 0);
    // Cyrillic а: another name, which looks like alice.
    let s = guest_after_reload(&mut server, "\u{430}lice").await;
    assert!(
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("looks too much like")),
        "{s:?}"
    );
    assert_eq!(s.password_required, None);
    // Renaming to it is refused too.
    let mut carol = account_guest(&addr, "carol").await;
    command(&mut carol, "rename", json!({"username": "a1ice"})).await;
    match next(&mut carol).await {
        ServerPackage::Error(e) => {
            assert!(e.message.contains("looks too much like"), "{e:?}")
        }
        other => panic!("{other:?}"),
    }
    // Once the account is deleted the look-alike is free.
    assert_eq!(admin(&db, &["delete", "alice"], "").0, 0);
    let mut d = fresh(&addr).await;
    assert!(login_with(&mut d, "\u{430}lice", None).await.status);
    server.shut_down();
}

//! Accounts against a real server: register, login with and without the
//! password, look-alike and normalised names, renames of accounts,
//! takeover, password changes, closed registration, and the throttle (on a
//! paused clock).

mod common;

use std::time::Duration;

use chatmaster::client::ClientConnection;
use chatmaster::server::config::Registration;
use chatmaster::wire::protocol::{Notification, ServerPackage, Session};
use chatmaster::Config;
use common::*;
use serde_json::json;

const PW: &str = "correct horse battery";

/// Sends `login` with an optional password and returns the session; on
/// success the own `user_joined` is consumed too, on refusal the
/// `request login` that follows.
async fn login_with(c: &mut ClientConnection, name: &str, password: Option<&str>) -> Session {
    let params = match password {
        Some(p) => json!({"username": name, "password": p}),
        None => json!({"username": name}),
    };
    c.command("login", Some(params)).await.expect("send login");
    let session = next_session(c).await;
    if session.status {
        match next_note(c).await {
            Notification::UserJoined { .. } => {}
            other => panic!("expected own user_joined, got {other:?}"),
        }
    } else {
        next_login_request(c).await;
    }
    session
}

async fn fresh(server: &TestServer) -> ClientConnection {
    let mut c = server.connect().await;
    next_login_request(&mut c).await;
    c
}

/// Logs in as a guest and registers the name with `password`.
async fn registered(server: &TestServer, name: &str, password: &str) -> ClientConnection {
    let mut c = fresh(server).await;
    let s = login_with(&mut c, name, None).await;
    assert!(s.status && s.account == Some(false), "{s:?}");
    c.command("register", Some(json!({"password": password})))
        .await
        .unwrap();
    assert_eq!(
        next_note(&mut c).await,
        Notification::Registered {
            username: name.to_owned()
        }
    );
    c
}

#[tokio::test]
async fn register_then_logins_need_the_password() {
    let server = TestServer::start_default().await;
    let mut bob = fresh(&server).await;
    assert_eq!(login_with(&mut bob, "Bob", None).await.account, Some(false));
    for (bad, why) in [
        ("short", "at least 8"),
        (&*"x".repeat(1025), "at most 1024"),
    ] {
        bob.command("register", Some(json!({"password": bad})))
            .await
            .unwrap();
        let (kind, message) = next_error(&mut bob).await;
        assert_eq!(kind, "register");
        assert!(message.contains(why), "{message}");
    }
    bob.command("register", Some(json!({"password": PW})))
        .await
        .unwrap();
    assert_eq!(
        next_note(&mut bob).await,
        Notification::Registered {
            username: "Bob".into()
        }
    );
    bob.command("register", Some(json!({"password": PW})))
        .await
        .unwrap();
    let (kind, message) = next_error(&mut bob).await;
    assert_eq!(kind, "register");
    assert!(message.contains("already registered"), "{message}");

    // Without the password, and with a wrong one: refused, may retry.
    let mut other = fresh(&server).await;
    let s = login_with(&mut other, "bob", None).await;
    assert!(!s.status);
    assert_eq!(s.password_required, Some(true));
    assert!(s.reason.unwrap().contains("registered"));
    let s = login_with(&mut other, "BOB", Some("not the password")).await;
    assert!(!s.status);
    assert_eq!(s.password_required, Some(true));
    assert!(s.reason.unwrap().contains("Wrong password"));

    // With it, in any capitalisation: the account's spelling, and the old
    // connection is taken over.
    let s = login_with(&mut other, "bOB", Some(PW)).await;
    assert!(s.status, "{s:?}");
    assert_eq!(s.username.as_deref(), Some("Bob"));
    assert_eq!(s.account, Some(true));
    let (kind, message) = next_error(&mut bob).await;
    assert_eq!(kind, "login");
    assert!(message.contains("another connection"), "{message}");
    expect_closed(&mut bob).await;
    let snap = server.hub.snapshot();
    assert_eq!(snap.users, vec![("Bob".to_owned(), "general".to_owned())]);
    snap.check_invariants().unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn passwords_for_guest_names_and_look_alikes_are_refused() {
    let server = TestServer::start_default().await;
    let _alice = registered(&server, "alice", PW).await;
    let _paypal = server.login("paypal").await;
    let mut c = fresh(&server).await;

    let s = login_with(&mut c, "carol", Some(PW)).await;
    assert!(!s.status);
    assert_eq!(s.password_required, None);
    assert!(s.reason.unwrap().contains("no account"));

    // Cyrillic а: another name, but it looks like the registered alice.
    let s = login_with(&mut c, "\u{430}lice", None).await;
    assert!(!s.status);
    assert!(s.reason.unwrap().contains("looks too much like"), "");
    // Fullwidth letters fold to the registered name itself.
    let s = login_with(&mut c, "ＡＬＩＣＥ", None).await;
    assert!(!s.status);
    assert_eq!(s.password_required, Some(true));
    // A look-alike of an online guest: 1 for l.
    let s = login_with(&mut c, "paypa1", None).await;
    assert!(!s.status);
    assert!(s.reason.unwrap().contains("paypal"));
    // Nobody renames to a registered name or its look-alike either.
    let mut dave = server.login("dave").await;
    for name in ["alice", "ALICE", "\u{430}lice"] {
        dave.command("rename", Some(json!({"username": name})))
            .await
            .unwrap();
        let (kind, _) = next_error(&mut dave).await;
        assert_eq!(kind, "rename", "{name}");
    }
    server.hub.snapshot().check_invariants().unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn renaming_an_account_renames_it() {
    let server = TestServer::start_default().await;
    let mut carol = registered(&server, "carol", PW).await;
    carol
        .command("rename", Some(json!({"username": "Caroline"})))
        .await
        .unwrap();
    assert_eq!(
        next_note(&mut carol).await,
        Notification::UserRename {
            old_username: "carol".into(),
            new_username: "Caroline".into()
        }
    );
    // The old name is free now; the new one needs the password.
    let mut c = fresh(&server).await;
    assert!(login_with(&mut c, "carol", None).await.status);
    let mut d = fresh(&server).await;
    let s = login_with(&mut d, "caroline", None).await;
    assert_eq!(s.password_required, Some(true));
    let s = login_with(&mut d, "caroline", Some(PW)).await;
    assert_eq!(s.username.as_deref(), Some("Caroline"));
    // A name held online by someone else cannot be taken by a rename.
    d.command("rename", Some(json!({"username": "CAROL"})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut d).await.0, "rename");
    server.shutdown().await;
}

#[tokio::test]
async fn password_change() {
    let server = TestServer::start_default().await;
    let mut erin = registered(&server, "erin", PW).await;
    let cases = [
        (
            json!({"old": "wrong password", "new": "another one!"}),
            "Wrong password",
        ),
        (json!({"old": PW, "new": "short"}), "at least 8"),
    ];
    for (params, why) in cases {
        erin.command("password", Some(params)).await.unwrap();
        let (kind, message) = next_error(&mut erin).await;
        assert_eq!(kind, "password");
        assert!(message.contains(why), "{message}");
    }
    erin.command("password", Some(json!({"old": PW, "new": "another one!"})))
        .await
        .unwrap();
    assert_eq!(next_note(&mut erin).await, Notification::PasswordChanged {});
    let mut c = fresh(&server).await;
    assert!(!login_with(&mut c, "erin", Some(PW)).await.status);
    assert!(
        login_with(&mut c, "erin", Some("another one!"))
            .await
            .status
    );
    // A guest has no password to change.
    let mut guest = server.login("guest").await;
    guest
        .command("password", Some(json!({"old": PW, "new": "another one!"})))
        .await
        .unwrap();
    assert_eq!(next_error(&mut guest).await.0, "password");
    server.shutdown().await;
}

#[tokio::test]
async fn closed_registration() {
    let server = TestServer::start(Config {
        registration: Registration::Closed,
        ..test_config()
    })
    .await;
    let mut c = server.login("frank").await;
    c.command("register", Some(json!({"password": PW})))
        .await
        .unwrap();
    let (kind, message) = next_error(&mut c).await;
    assert_eq!(kind, "register");
    assert!(message.contains("closed"), "{message}");
    assert_eq!(server.hub.account(1), None);
    server.shutdown().await;
}

/// Skips the clock forward by `by` (no task runs meanwhile but timers).
async fn skip_clock(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn throttle_per_account_whatever_the_connection() {
    let server = TestServer::start_default().await;
    drop(registered(&server, "gina", PW).await);
    // Four wrong, one right: the right one clears the count.
    let mut c = fresh(&server).await;
    for _ in 0..4 {
        assert!(
            !login_with(&mut c, "gina", Some("wrong password"))
                .await
                .status
        );
    }
    assert!(login_with(&mut c, "gina", Some(PW)).await.status);
    drop(c);
    // Five wrong from two connections: the account is locked for all.
    let (mut a, mut b) = (fresh(&server).await, fresh(&server).await);
    for n in 0..5 {
        let c = if n % 2 == 0 { &mut a } else { &mut b };
        let s = login_with(c, "gina", Some("wrong password")).await;
        assert!(s.reason.unwrap().contains("Wrong password"));
    }
    for c in [&mut a, &mut b] {
        let s = login_with(c, "gina", Some(PW)).await;
        assert!(!s.status);
        let reason = s.reason.unwrap();
        assert!(reason.contains("try again in 9"), "{reason}");
    }
    // Other accounts are not affected.
    drop(registered(&server, "hank", PW).await);
    assert!(login_with(&mut a, "hank", Some(PW)).await.status);
    // Fifteen minutes on, the right password works again.
    skip_clock(Duration::from_secs(15 * 60)).await;
    let mut c = fresh(&server).await;
    assert!(login_with(&mut c, "gina", Some(PW)).await.status);
    server.shutdown().await;
}

#[tokio::test]
async fn throttle_per_address() {
    let server = TestServer::start_default().await;
    let names = ["ivy", "jack", "kim", "lee", "max", "ned"];
    for name in names {
        drop(registered(&server, name, PW).await);
    }
    let mut c = fresh(&server).await;
    // Twenty wrong passwords, four per account: no account is locked, but
    // this address is.
    for name in &names[..5] {
        for _ in 0..4 {
            let s = login_with(&mut c, name, Some("wrong password")).await;
            assert!(s.reason.unwrap().contains("Wrong password"));
        }
    }
    let s = login_with(&mut c, "ned", Some(PW)).await;
    assert!(!s.status);
    assert!(s.reason.unwrap().contains("your address"));
    skip_clock(Duration::from_secs(15 * 60)).await;
    let mut c = fresh(&server).await;
    let s = login_with(&mut c, "ned", Some(PW)).await;
    assert!(s.status, "{s:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn session_says_whether_it_is_an_account() {
    let server = TestServer::start_default().await;
    drop(registered(&server, "olga", PW).await);
    let mut c = fresh(&server).await;
    c.command("login", Some(json!({"username": "olga", "password": PW})))
        .await
        .unwrap();
    match next(&mut c).await {
        ServerPackage::Session(s) => {
            assert_eq!(s.account, Some(true));
            assert_eq!(s.username.as_deref(), Some("olga"));
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

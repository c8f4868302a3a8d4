//! The real client binary in scriptable mode with the people commands:
//! `/msg`, `/reply`, `/random`, `/who`, `/whois`, `/away`, `/ignore`,
//! `/unignore`, `/ignores`, and how direct messages are shown
//! (`10:02 *bob* hi`, `10:02 -> *bob* hi` for one's own).

mod client_util;
mod common;

use client_util::*;
use common::*;

/// `HH:MM *from* text`: a direct message from someone.
fn is_direct(line: &str, from: &str, text: &str) -> bool {
    line.split_once(' ')
        .is_some_and(|(time, rest)| time.len() == 5 && rest == format!("*{from}* {text}"))
}

/// `HH:MM -> *to* text...`: our own direct message, acknowledged.
fn is_own_direct(line: &str, to: &str, text: &str) -> bool {
    line.split_once(' ').is_some_and(|(time, rest)| {
        time.len() == 5 && rest.starts_with(&format!("-> *{to}* {text}"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_replies_and_random_are_shown_as_such() {
    let server = TestServer::start_default().await;
    let mut alice = Scripted::login(server.addr, "alice");
    let mut bob = Scripted::login(server.addr, "bob");
    alice.expect("-- bob joined general");

    alice.send("/msg bob psst, over here");
    bob.expect_line(|l| is_direct(l, "alice", "psst, over here"));
    alice.expect_line(|l| is_own_direct(l, "bob", "psst, over here"));
    bob.send("/reply what is it?");
    alice.expect_line(|l| is_direct(l, "bob", "what is it?"));
    bob.expect_line(|l| is_own_direct(l, "alice", "what is it?"));

    bob.send("/away lunch");
    bob.expect("-- you are marked away: lunch");
    alice.send("/random anyone there?");
    bob.expect_line(|l| is_direct(l, "alice", "anyone there?"));
    alice.expect_line(|l| {
        is_own_direct(l, "bob", "anyone there?") && l.ends_with("(bob is away: lunch)")
    });

    alice.send("/msg nobody hello");
    alice.expect_line(|l| l.starts_with("!! direct: nobody is not online"));
    alice.send("/reply nobody wrote");
    // bob wrote to alice, so this one goes to bob.
    bob.expect_line(|l| is_direct(l, "alice", "nobody wrote"));
    let mut carol = Scripted::login(server.addr, "carol");
    carol.send("/reply hm");
    carol.expect("!! nobody has written to you directly yet");

    for c in [alice, bob, carol] {
        let (status, rest, stderr) = c.finish();
        assert_eq!(status.code(), Some(0), "{rest:?} {stderr}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_whois_and_ignore_lists() {
    let server = TestServer::start_default().await;
    let mut alice = Scripted::login(server.addr, "alice");
    let mut bob = Scripted::login(server.addr, "bob");
    alice.expect("-- bob joined general");
    bob.send("/away gone fishing");
    bob.expect("-- you are marked away: gone fishing");

    alice.send("/who");
    alice.expect("-- online (2): alice [general], bob [general] (away: gone fishing)");
    alice.send("/who general");
    alice.expect("-- in general (2): alice [general], bob [general] (away: gone fishing)");
    alice.send("/whois bob");
    alice.expect_line(|l| {
        l.starts_with("-- bob, online, guest, in general, away: gone fishing, idle ")
    });
    alice.send("/whois zed");
    alice.expect("-- zed, offline, guest");
    alice.send("/who nowhere");
    alice.expect_line(|l| l.starts_with("!! who: There is no public channel named nowhere"));

    alice.send("/ignore BOB");
    alice.expect("-- you ignore (1): BOB");
    bob.send("can you hear me");
    bob.send("/msg alice and now?");
    bob.expect_line(|l| l.starts_with("!! direct: alice does not accept direct messages from you"));
    alice.send("/ignores");
    alice.expect("-- you ignore (1): BOB");
    alice.send("/unignore bob");
    alice.expect("-- you ignore nobody");
    bob.send("and now?");
    alice.expect_line(|l| is_message(l, "general", "bob", "and now?"));
    // The ignored message never showed.
    assert!(
        !alice
            .stdout
            .seen
            .iter()
            .any(|l| l.contains("can you hear me")),
        "{:?}",
        alice.stdout.seen
    );
    alice.send("/help");
    for usage in [
        "/msg USER TEXT",
        "/reply TEXT",
        "/random TEXT",
        "/who [CHANNEL]",
        "/whois USER",
        "/away [TEXT]",
        "/ignore USER",
        "/unignore USER",
        "/ignores",
    ] {
        alice.expect_line(|l| l.starts_with(usage));
    }
    for c in [alice, bob] {
        let (status, rest, stderr) = c.finish();
        assert_eq!(status.code(), Some(0), "{rest:?} {stderr}");
    }
    server.shutdown().await;
}

//! The real client binary in scriptable mode: `/group`, `/topic`,
//! `/kick`, `/ban`, `/bans`, `/unban`, `/transfer`, `/delete-channel`, `/notice`,
//! and how their events and refusals are shown.

mod client_util;
mod common;

use chatmaster::Config;
use client_util::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_commands_from_the_client() {
    let server = TestServer::start_default().await;
    let mut alice = Scripted::login(server.addr, "alice");
    let mut bob = Scripted::login(server.addr, "bob");
    alice.expect("-- bob joined general");

    alice.send("/group trip bob zed");
    alice.expect("-- you are in trip [private, owner alice]; users (1): alice");
    alice.expect("-- group trip created; invited bob; not online: zed");
    bob.expect("-- alice invited you to trip; type /join trip to accept");
    bob.send("/join trip");
    bob.expect("-- you are in trip [private, owner alice]; users (2): alice, bob");
    alice.expect("-- bob joined trip");

    alice.send("/topic  Rust   trip ");
    alice.expect("-- topic of trip: Rust   trip");
    bob.expect("-- topic of trip: Rust   trip");
    bob.send("/topic mine");
    bob.expect("!! topic: Only the owner of trip (alice) can set its topic.");

    alice.send("/kick bob too loud");
    bob.expect("!! you were kicked out of trip by alice (too loud); you are back in general");
    bob.expect("-- you are in general; users (1): bob");
    alice.expect("-- bob was put out of trip");

    alice.send("/invite bob");
    bob.expect("-- alice invited you to trip; type /join trip to accept");
    bob.send("/join trip");
    bob.expect(
        "-- you are in trip [private, owner alice]; users (2): alice, bob; topic: Rust   trip",
    );
    alice.expect("-- bob joined trip");
    alice.send("/ban bob");
    alice.expect("-- bob is banned from trip");
    bob.expect("!! you were banned from trip by alice; you are back in general");
    alice.send("/bans");
    alice.expect("-- bans in trip (1): bob");
    bob.send("/join trip");
    bob.expect("!! join: You are banned from trip.");
    alice.send("/unban bob");
    alice.expect("-- bob may join trip again");

    alice.send("/topic");
    alice.expect("-- the topic of trip is cleared");
    alice.send("/transfer bob");
    alice.expect("!! transfer: bob is not in trip.");
    alice.send("/notice hello all");
    alice.expect("!! notice: Only server operators can send notices.");

    // /delete is for one's own messages; /delete-channel deletes the channel.
    alice.send("/delete");
    alice.expect("!! you have no last message to delete");
    alice.send("/delete-channel");
    alice.expect("-- alice deleted trip; you are back in general");
    alice.expect("-- you are in general; users (2): alice, bob");
    bob.expect("-- alice joined general");

    alice.send("/help");
    // In the order /help lists them.
    for usage in [
        "/group NAME USER...",
        "/topic [TEXT]",
        "/kick USER [REASON]",
        "/ban USER",
        "/unban USER",
        "/bans",
        "/transfer USER",
        "/delete-channel",
        "/notice TEXT",
    ] {
        alice.expect_line(|l| l.starts_with(usage));
    }
    let (status, _, stderr) = alice.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let (status, _, stderr) = bob.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_notice_and_a_transfer_in_the_client() {
    let server = TestServer::start(Config {
        opers: vec!["root".into()],
        ..test_config()
    })
    .await;
    // The operator is a raw connection logged in to its account.
    add_account(&server, "root", "correct horse battery").await;
    let mut root = login_account(&server, "root", "correct horse battery").await;
    let mut alice = Scripted::login(server.addr, "alice");
    let mut bob = Scripted::login(server.addr, "bob");
    alice.send("/join den");
    alice.expect("-- you are in den [owner alice]; users (1): alice");
    bob.send("/join den");
    bob.expect("-- you are in den [owner alice]; users (2): alice, bob");
    alice.expect("-- bob joined den");
    alice.send("/transfer bob");
    alice.expect("-- bob now owns den");
    bob.expect("-- bob now owns den");

    root.command(
        "notice",
        Some(serde_json::json!({"message": "restart at \u{1b}[31mnoon"})),
    )
    .await
    .unwrap();
    loop {
        match next(&mut root).await {
            chatmaster::wire::protocol::ServerPackage::Error(e) => {
                assert_eq!(e.error_type, "notice");
                break;
            }
            // Arrivals in general.
            _ => continue,
        }
    }
    root.command(
        "notice",
        Some(serde_json::json!({"message": "restart at noon"})),
    )
    .await
    .unwrap();
    alice.expect("-- notice from root: restart at noon");
    bob.expect("-- notice from root: restart at noon");
    let (status, _, stderr) = alice.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let (status, _, stderr) = bob.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    server.shutdown().await;
}

//! The web client in a real browser: Debian's Chromium, headless, driven
//! through chromedriver (WebDriver) against a real server on 127.0.0.1.
//! Two browser users and a TCP user talk in a channel and see each other
//! in the member list; a script sent by the TCP user is shown as text and
//! never runs; the reconnect banner shows when the server goes away, and
//! the page logs in again by itself when it is back. Screenshots go to
//! `target/web-screenshots/`.
//!
//! Without Chromium the test says loudly that it did not run and how to
//! install it; with `CI` set, a missing Chromium fails it.

mod common;

use std::path::PathBuf;

use chatmaster::wire::protocol::ServerPackage;
use common::web::WebServer;
use common::webdriver::{find_browser, Driver, ENTER};
use common::{next, test_config, WAIT};
use serde_json::json;
use tokio::task::block_in_place;

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_and_a_terminal_user_chat() {
    let Some((driver_path, browser_path)) = find_browser() else {
        let msg = "web_browser: Chromium or chromedriver is not installed, so the browser test \
                   DID NOT RUN. Install them with: apt-get install chromium chromium-driver";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("\n*** {msg} ***\n");
        return;
    };
    let mut server = WebServer::start(test_config()).await;
    let page = format!("http://{}/", server.http);
    let profiles = tempfile::tempdir().unwrap();
    let driver = block_in_place(|| Driver::start(&driver_path, &browser_path));
    let ann = block_in_place(|| driver.session(&profiles.path().join("ann"), 1200, 800));
    // The second user is on a phone-sized screen.
    let bob = block_in_place(|| driver.session(&profiles.path().join("bob"), 390, 844));

    block_in_place(|| {
        for (b, name) in [(&ann, "ann"), (&bob, "bob")] {
            b.goto(&page);
            if name == "bob" {
                b.screenshot(&screenshots().join("login-phone.png"));
            }
            b.type_into("#login-name", name);
            b.click("#login-button");
            b.wait_text("#me", name);
        }
        ann.wait_text("#members", "bob");
    });

    let mut tina = chatmaster::client::ClientConnection::connect(server.tcp)
        .await
        .unwrap();
    assert!(tina.login("tina", WAIT).await.unwrap().status);
    block_in_place(|| ann.wait_text("#members", "tina"));

    // Everybody into #rust: the browsers through the join box.
    block_in_place(|| {
        for b in [&ann, &bob] {
            if b.run(
                "return getComputedStyle(document.getElementById('side')).display",
                json!([]),
            ) == "none"
            {
                b.click("#toggle-side");
            }
            b.type_into("#join-name", "rust");
            b.click("#join-button");
            b.wait_text("#title", "#rust");
        }
        ann.wait_text("#members", "bob");
    });
    tina.command("join", Some(json!({"channel": "rust"})))
        .await
        .unwrap();
    block_in_place(|| {
        ann.wait_text("#members", "tina");
        bob.wait_text("#message-list", "tina joined #rust");
    });

    // ann writes with Enter; bob and tina see it.
    block_in_place(|| ann.type_into("#composer", &format!("hello from ann{ENTER}")));
    block_in_place(|| bob.wait_text("#message-list", "hello from ann"));
    loop {
        match next(&mut tina).await {
            ServerPackage::Message(m) => {
                assert_eq!(
                    (m.username.as_str(), m.message.as_str()),
                    ("ann", "hello from ann")
                );
                break;
            }
            _ => continue,
        }
    }
    // tina's script is text on ann's page, and never runs.
    let xss = r#"<img src=x onerror="window.pwned=1;document.title='pwned'"><script>window.pwned=2</script>"#;
    tina.message(xss).await.unwrap();
    block_in_place(|| {
        ann.wait_text("#message-list", xss);
        let verdict = ann.run(
            "return [document.querySelectorAll('#message-list img, #message-list script').length, window.pwned === undefined, document.title];",
            json!([]),
        );
        assert_eq!(verdict[0], 0, "{verdict}");
        assert_eq!(verdict[1], true, "{verdict}");
        assert!(!verdict[2].as_str().unwrap().contains("pwned"), "{verdict}");
        bob.wait_text("#message-list", "hello from ann");
        ann.screenshot(&screenshots().join("chat-desktop.png"));
        bob.screenshot(&screenshots().join("chat-phone.png"));
    });

    // A direct message: ann clicks bob in the member list.
    block_in_place(|| {
        if ann.run(
            "return getComputedStyle(document.getElementById('members-pane')).display",
            json!([]),
        ) == "none"
        {
            ann.click("#toggle-members");
        }
        ann.click("#members li[data-user='bob'] button");
        ann.wait_text("#title", "@bob");
        ann.type_into("#composer", &format!("psst, bob{ENTER}"));
        ann.wait_text("#message-list .msg.own", "psst, bob");
        // bob sees an unread badge on the conversation, opens it, reads it.
        if bob.run(
            "return getComputedStyle(document.getElementById('side')).display",
            json!([]),
        ) == "none"
        {
            bob.click("#toggle-side");
        }
        bob.wait_text("#dm-list li[data-user='ann'] .badge", "1");
        bob.click("#dm-list li[data-user='ann'] button");
        bob.wait_text("#title", "@ann");
        bob.wait_text("#message-list", "psst, bob");
        bob.screenshot(&screenshots().join("direct-phone.png"));
        // Back to the channel for the rest.
        ann.click("#channel-list li[data-channel='rust'] button");
        ann.wait_text("#title", "#rust");
    });

    // The server goes away: the banner says so and the page retries.
    let (tcp_addr, http_addr) = (server.tcp, server.http);
    server.begin_shutdown();
    block_in_place(|| {
        ann.wait_shown("#banner", true);
        ann.wait_text("#banner", "Reconnecting");
    });
    server.shutdown().await;
    block_in_place(|| ann.screenshot(&screenshots().join("reconnecting.png")));
    // It comes back on the same ports: the page logs in again by itself.
    let tcp = tokio::net::TcpListener::bind(tcp_addr).await.unwrap();
    let http = tokio::net::TcpListener::bind(http_addr).await.unwrap();
    let server = WebServer::start_on(test_config(), None, tcp, http).await;
    block_in_place(|| {
        ann.wait_shown("#banner", false);
        ann.wait_text("#me", "ann");
        ann.wait_text("#title", "#rust");
    });
    drop((ann, bob));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_log_in_with_the_password() {
    let Some((driver_path, browser_path)) = find_browser() else {
        let msg = "web_browser: Chromium or chromedriver is not installed, so the browser test \
                   DID NOT RUN. Install them with: apt-get install chromium chromium-driver";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("\n*** {msg} ***\n");
        return;
    };
    let server = WebServer::start(test_config()).await;
    let page = format!("http://{}/", server.http);
    let profiles = tempfile::tempdir().unwrap();
    let driver = block_in_place(|| Driver::start(&driver_path, &browser_path));
    let b = block_in_place(|| driver.session(&profiles.path().join("reg"), 1000, 700));
    block_in_place(|| {
        b.goto(&page);
        b.type_into("#login-name", "regina");
        b.click("#login-button");
        b.wait_text("#me", "regina (guest)");
        // Register through the dialog.
        b.click("#register-button");
        b.type_into("#register-password", "correct horse battery");
        b.type_into("#register-again", "correct horse battery");
        b.click("#register-ok");
        b.wait_text("#status", "regina is registered");
        b.wait_text("#me", "regina");
        b.wait_shown("#register-button", false);
        // A new page: the name now asks for its password.
        b.goto(&page);
        b.type_into("#login-name", "regina");
        b.click("#login-button");
        b.wait_text("#login-error", "password");
        b.type_into("#login-password", "wrong password");
        b.click("#login-button");
        b.wait_text("#login-error", "password");
        b.clear("#login-password");
        b.type_into("#login-password", "correct horse battery");
        b.click("#login-button");
        b.wait_shown("#chat-view", true);
        b.wait_text("#me", "regina");
        let guest = b.run(
            "return document.getElementById('me').textContent",
            json!([]),
        );
        assert_eq!(guest, "regina", "an account, not a guest");
    });
    drop(b);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_search_and_edits_in_the_browser() {
    let Some((driver_path, browser_path)) = find_browser() else {
        let msg = "web_browser: Chromium or chromedriver is not installed, so the browser test \
                   DID NOT RUN. Install them with: apt-get install chromium chromium-driver";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("\n*** {msg} ***\n");
        return;
    };
    let server = WebServer::start(test_config()).await;
    let page = format!("http://{}/", server.http);
    // Sixty messages in #archive before anybody opens the page: more than
    // one page of history.
    let mut tom = chatmaster::client::ClientConnection::connect(server.tcp)
        .await
        .unwrap();
    assert!(tom.login("tom", WAIT).await.unwrap().status);
    tom.command("join", Some(json!({"channel": "archive"})))
        .await
        .unwrap();
    for i in 0..60 {
        tom.message(&format!("note n-{i:03}")).await.unwrap();
    }
    let mut acked = 0;
    while acked < 60 {
        if let ServerPackage::Notification(chatmaster::Notification::MessageSent { .. }) =
            next(&mut tom).await
        {
            acked += 1;
        }
    }
    let profiles = tempfile::tempdir().unwrap();
    let driver = block_in_place(|| Driver::start(&driver_path, &browser_path));
    let ann = block_in_place(|| driver.session(&profiles.path().join("ann"), 1200, 800));
    block_in_place(|| {
        ann.goto(&page);
        ann.type_into("#login-name", "ann");
        ann.click("#login-button");
        ann.wait_text("#me", "ann");
        ann.type_into("#join-name", "archive");
        ann.click("#join-button");
        // The latest page on joining; the older ones on scrolling up.
        ann.wait_text("#message-list", "note n-059");
        let first = ann.run(
            "return document.querySelector('#message-list .msg .text').textContent",
            json!([]),
        );
        assert_eq!(first, "note n-010", "a page of 50");
        ann.run(
            "document.getElementById('messages').scrollTop = 0; return 0;",
            json!([]),
        );
        ann.wait_text("#message-list", "note n-000");
        ann.screenshot(&screenshots().join("history.png"));

        // ann writes, then edits her message; tom's copy changes too.
        ann.type_into("#composer", &format!("a typo here{ENTER}"));
        ann.wait_text("#message-list .msg.own[data-id]", "a typo here");
        ann.run(
            "document.querySelector('#message-list .msg.own[data-id] .edit').click(); return 0;",
            json!([]),
        );
        ann.clear(".edit-input");
        ann.type_into(".edit-input", &format!("no typo here{ENTER}"));
        ann.wait_text("#message-list .msg.own[data-id]", "no typo here");
    });
    loop {
        match next(&mut tom).await {
            ServerPackage::Notification(chatmaster::Notification::MessageEdited {
                message,
                ..
            }) => {
                assert_eq!(message, "no typo here");
                break;
            }
            _ => continue,
        }
    }
    // An attachment is a link; its image loads only when asked for (here
    // from the server itself: nothing leaves 127.0.0.1).
    let image = format!("http://{}/missing.png", server.http);
    block_in_place(|| {
        ann.type_into("#composer", &format!("/attach {image} a picture{ENTER}"));
        ann.wait_text("#message-list .msg.own[data-id] .attachment a", &image);
        let before = ann.run(
            "return document.querySelectorAll('#message-list img').length",
            json!([]),
        );
        assert_eq!(before, 0, "no image before the click");
        ann.run(
            "document.querySelector('#message-list .attachment .preview').click(); return 0;",
            json!([]),
        );
        ann.wait_shown("#message-list .preview-image", true);
    });
    loop {
        if let ServerPackage::Message(m) = next(&mut tom).await {
            assert_eq!(m.message, "a picture");
            break;
        }
    }
    // ann deletes the picture message (the page's confirmation answered
    // yes); tom is told, ann's page drops it.
    block_in_place(|| {
        ann.run(
            "window.confirm = () => true; const all = document.querySelectorAll('#message-list .msg.own[data-id]'); all[all.length - 1].querySelector('.delete').click(); return 0;",
            json!([]),
        );
    });
    loop {
        if let ServerPackage::Notification(chatmaster::Notification::MessageDeleted { .. }) =
            next(&mut tom).await
        {
            break;
        }
    }

    // After a reload the page asks for the history again: it holds the edit.
    block_in_place(|| {
        ann.goto(&page);
        ann.type_into("#login-name", "ann2");
        ann.click("#login-button");
        ann.wait_text("#me", "ann2");
        ann.type_into("#join-name", "archive");
        ann.click("#join-button");
        ann.wait_text("#message-list", "no typo here");
        let gone = ann.run(
            "return document.getElementById('message-list').textContent.includes('a picture')",
            json!([]),
        );
        assert_eq!(gone, false, "the deleted message is not in the history");
        // Search finds it, with its channel.
        ann.type_into("#search-input", &format!("typo{ENTER}"));
        ann.wait_shown("#search-pane", true);
        ann.wait_text("#search-results", "no typo here");
        ann.wait_text("#search-results", "#archive");
        ann.screenshot(&screenshots().join("search.png"));
    });
    drop(ann);
    server.shutdown().await;
}

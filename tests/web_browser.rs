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

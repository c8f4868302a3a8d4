//! The WebSocket transport against a real server on 127.0.0.1:0, in real
//! bytes: a WebSocket user and a TCP user in one chat; the frame and
//! inflate limits; text messages; the Origin rule; the shared session caps.

mod common;

use chatmaster::wire::protocol::{Notification, ServerPackage};
use chatmaster::Config;
use common::web::{http_head, WebServer, WsClient};
use common::{next, next_note, test_config, WAIT};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_websocket_user_and_a_tcp_user_talk() {
    let server = WebServer::start(test_config()).await;
    let mut tcp = chatmaster::client::ClientConnection::connect(server.tcp)
        .await
        .unwrap();
    let session = tcp.login("tina", WAIT).await.unwrap();
    assert!(session.status);
    let _own = next_note(&mut tcp).await;

    let mut web = WsClient::connect(&server.ws_url(), Some(&server.origin()))
        .await
        .unwrap();
    // The server speaks first, exactly as on TCP.
    let first = web.recv().await;
    assert_eq!(first, json!({"type":"request","data":{"request":"login"}}));
    web.send_json(
        r#"{"type":"command","data":{"command":"login","parameters":{"username":"wendy"}}}"#,
    )
    .await;
    let session = web.recv().await;
    assert_eq!(session["type"], "session");
    assert_eq!(session["data"]["status"], true);
    assert_eq!(session["data"]["username"], "wendy");
    let own = web.recv().await;
    assert_eq!(own["data"]["event_type"], "user_joined");
    let users = own["data"]["users"].as_array().unwrap();
    assert!(
        users.contains(&json!("tina")) && users.contains(&json!("wendy")),
        "{own}"
    );

    // tina sees wendy arrive, and her message.
    match next_note(&mut tcp).await {
        Notification::UserJoined { username, .. } => assert_eq!(username, "wendy"),
        other => panic!("expected user_joined, got {other:?}"),
    }
    web.send_json(r#"{"type":"message","data":{"message":"hello from the browser"}}"#)
        .await;
    match next(&mut tcp).await {
        ServerPackage::Message(m) => {
            assert_eq!(m.username, "wendy");
            assert_eq!(m.message, "hello from the browser");
        }
        other => panic!("expected wendy's message, got {other:?}"),
    }
    let sent = web.recv().await;
    assert_eq!(sent["data"]["event_type"], "message_sent", "{sent}");

    // And wendy sees tina's.
    tcp.message("hello from the terminal").await.unwrap();
    let m = web.recv().await;
    assert_eq!(m["type"], "message");
    assert_eq!(m["data"]["username"], "tina");
    assert_eq!(m["data"]["message"], "hello from the terminal");

    // A WebSocket session is told server_shutdown like a TCP one.
    let mut server = server;
    server.begin_shutdown();
    let seen = web.expect_closed().await;
    assert!(
        seen.iter()
            .any(|p| p["data"]["event_type"] == "server_shutdown"),
        "{seen:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_text_message_is_a_protocol_error_and_the_session_stays() {
    let server = WebServer::start(test_config()).await;
    let mut web = WsClient::connect(&server.ws_url(), None).await.unwrap();
    web.login("tex").await;
    web.ws
        .send(Message::Text(
            r#"{"type":"message","data":{"message":"hi"}}"#.into(),
        ))
        .await
        .unwrap();
    let e = web.recv().await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["data"]["error_type"], "protocol");
    assert!(
        e["data"]["message"].as_str().unwrap().contains("binary"),
        "{e}"
    );
    // Still usable.
    web.send_json(r#"{"type":"command","data":{"command":"ping","parameters":{"token":"t"}}}"#)
        .await;
    let pong = web.recv().await;
    assert_eq!(pong["data"]["event_type"], "pong");
    // A bad zlib stream inside a binary message is the TCP protocol error.
    web.ws
        .send(Message::Binary(b"not zlib at all".to_vec().into()))
        .await
        .unwrap();
    let e = web.recv().await;
    assert_eq!(e["data"]["error_type"], "protocol", "{e}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_a_protocol_error() {
    let config = Config {
        max_frame_bytes: 1024,
        ..test_config()
    };
    let server = WebServer::start(config).await;
    let mut web = WsClient::connect(&server.ws_url(), None).await.unwrap();
    web.login("big").await;
    web.ws
        .send(Message::Binary(vec![0x78; 5000].into()))
        .await
        .unwrap();
    let seen = web.expect_closed().await;
    let error = seen
        .iter()
        .find(|p| p["type"] == "error")
        .unwrap_or_else(|| panic!("no error before the close: {seen:?}"));
    assert_eq!(error["data"]["error_type"], "protocol");
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit of 1024 bytes"),
        "{error}"
    );
    // The server is unharmed.
    let mut other = WsClient::connect(&server.ws_url(), None).await.unwrap();
    other.login("after").await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_inflate_bomb_closes_with_a_protocol_error() {
    let server = WebServer::start(test_config()).await;
    let mut web = WsClient::connect(&server.ws_url(), None).await.unwrap();
    web.login("bomb").await;
    // 16 MiB of spaces compress to about 16 KiB: far past the inflate cap.
    let mut json = String::from(r#"{"type":"message","data":{"message":""#);
    json.push_str(&" ".repeat(16 << 20));
    json.push_str(r#""}}"#);
    let body = chatmaster::wire::compress::deflate(json.as_bytes(), 9);
    assert!(body.len() < 65536, "the bomb fits in one frame");
    web.ws.send(Message::Binary(body.into())).await.unwrap();
    let seen = web.expect_closed().await;
    let error = seen
        .iter()
        .find(|p| p["type"] == "error")
        .expect("an error");
    assert_eq!(error["data"]["error_type"], "protocol", "{error}");
    server.shutdown().await;
}

#[tokio::test]
async fn origin_must_be_the_page_or_an_allowed_one() {
    let config = Config {
        allowed_origins: vec!["https://chat.example.org".into()],
        ..test_config()
    };
    let server = WebServer::start(config).await;
    let url = server.ws_url();
    // A foreign page: refused before the upgrade, with 403.
    let err = WsClient::connect(&url, Some("http://evil.example"))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("403"), "{err}");
    let key = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Origin", "http://evil.example"),
    ];
    let r = http_head(server.http, "/ws", &key).await;
    assert_eq!(r.status, 403);
    // The page's own origin, and an allowed one, get in.
    let mut own = WsClient::connect(&url, Some(&server.origin()))
        .await
        .unwrap();
    own.login("own").await;
    let mut listed = WsClient::connect(&url, Some("https://chat.example.org"))
        .await
        .unwrap();
    listed.login("listed").await;
    // The same host under another scheme is another origin.
    let other_scheme = format!("https://{}", server.http);
    assert!(WsClient::connect(&url, Some(&other_scheme)).await.is_err());
    // No permessage-deflate, whatever the client offers.
    let mut offer = [("Sec-WebSocket-Extensions", "permessage-deflate"); 1].to_vec();
    offer.extend_from_slice(&key[..4]);
    let r = http_head(server.http, "/ws", &offer).await;
    assert_eq!(r.status, 101);
    assert_eq!(r.header("Sec-WebSocket-Extensions"), None, "{r:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_per_address_cap_counts_both_transports() {
    let config = Config {
        max_connections_per_address: 2,
        ..test_config()
    };
    let server = WebServer::start(config).await;
    let mut web = WsClient::connect(&server.ws_url(), None).await.unwrap();
    web.login("one").await;
    let mut tcp = chatmaster::client::ClientConnection::connect(server.tcp)
        .await
        .unwrap();
    assert!(tcp.login("two", WAIT).await.unwrap().status);
    // A third session from 127.0.0.1, over either transport, is refused.
    let mut third = WsClient::connect(&server.ws_url(), None).await.unwrap();
    let refusal = third.recv().await;
    assert_eq!(refusal["data"]["error_type"], "server", "{refusal}");
    assert!(third.recv_or_close().await.is_none());
    let mut fourth = chatmaster::client::ClientConnection::connect(server.tcp)
        .await
        .unwrap();
    match next(&mut fourth).await {
        ServerPackage::Error(e) => {
            assert_eq!(e.error_type, "server");
            assert!(e.message.contains("your address"), "{}", e.message);
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    // A place comes back when a session ends.
    drop(web);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = WsClient::connect(&server.ws_url(), None).await.unwrap();
        let first = again.recv().await;
        if first["type"] == "request" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no place came back");
        // The server has not seen the close yet; it is noticed on its own.
        tokio::task::yield_now().await;
    }
    server.shutdown().await;
}

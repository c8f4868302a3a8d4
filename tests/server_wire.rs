//! The wire format and its failure modes, spoken as raw bytes: exact
//! framing, every class of bad input, fatal frame errors, the slow
//! consumer, the connection cap, and graceful shutdown.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use chatmaster::wire::protocol::{Notification, ServerPackage};
use chatmaster::Config;
use common::*;
use flate2::{read::ZlibDecoder, write::ZlibEncoder, Compression};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// zlib-compresses with flate2 directly, independent of the crate's codec.
fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A frame: big-endian u32 length, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn package(v: Value) -> Vec<u8> {
    frame(&zlib(v.to_string().as_bytes()))
}

/// Reads one frame's body as it came; None when the peer closed.
async fn read_body(s: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    match tokio::time::timeout(WAIT, s.read_exact(&mut len)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return None,
        Err(_) => panic!("no frame within {WAIT:?}"),
    }
    let n = u32::from_be_bytes(len) as usize;
    let mut body = vec![0u8; n];
    tokio::time::timeout(WAIT, s.read_exact(&mut body))
        .await
        .expect("frame body in time")
        .expect("frame body");
    Some(body)
}

/// Inflates a frame body by hand.
fn inflate_raw(body: &[u8]) -> Value {
    let mut text = String::new();
    ZlibDecoder::new(body).read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Reads one frame and inflates it by hand; None when the peer closed.
async fn read_raw(s: &mut (impl AsyncReadExt + Unpin)) -> Option<Value> {
    Some(inflate_raw(&read_body(s).await?))
}

async fn expect_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection not closed"),
        }
    }
}

async fn raw_login(server: &TestServer, name: &str) -> TcpStream {
    raw_login_on(TcpStream::connect(server.addr).await.unwrap(), name).await
}

/// Logs in as `name` on a connected socket, reading up to its own `user_joined`.
async fn raw_login_on(mut s: TcpStream, name: &str) -> TcpStream {
    assert_eq!(
        read_raw(&mut s).await.unwrap(),
        json!({"type": "request", "data": {"request": "login"}})
    );
    s.write_all(&package(
        json!({"type": "command", "data": {"command": "login", "parameters": {"username": name}}}),
    ))
    .await
    .unwrap();
    let session = read_raw(&mut s).await.unwrap();
    assert_eq!(session["type"], "session");
    assert_eq!(session["data"]["status"], true);
    let own = read_raw(&mut s).await.unwrap();
    assert_eq!(own["data"]["event_type"], "user_joined");
    s
}

async fn expect_protocol_error(s: &mut TcpStream, what: &str) -> String {
    let v = read_raw(s)
        .await
        .unwrap_or_else(|| panic!("{what}: closed instead of an error"));
    assert_eq!(v["type"], "error", "{what}: {v}");
    assert_eq!(v["data"]["error_type"], "protocol", "{what}: {v}");
    v["data"]["message"].as_str().unwrap().to_owned()
}

async fn ping_pong(s: &mut TcpStream) {
    s.write_all(&package(
        json!({"type": "command", "data": {"command": "ping", "parameters": {"token": "t"}}}),
    ))
    .await
    .unwrap();
    let v = read_raw(s).await.expect("pong");
    assert_eq!(
        v,
        json!({"type": "notification", "data": {"event_type": "pong", "token": "t"}})
    );
}

#[tokio::test]
async fn first_frame_is_the_stored_login_request_quoted_in_protocol_md() {
    let server = TestServer::start_default().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let json = br#"{"type":"request","data":{"request":"login"}}"#;
    // protocol.md: a 56-byte body; zlib header, one final stored block of
    // the 45 bytes of JSON (length 0x002d and its complement), Adler-32.
    let mut want = vec![0, 0, 0, 0x38, 0x78, 0x01, 0x01, 0x2d, 0x00, 0xd2, 0xff];
    want.extend_from_slice(json);
    let mut first = vec![0u8; want.len() + 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut first))
        .await
        .expect("first frame in time")
        .unwrap();
    assert_eq!(&first[..want.len()], &want[..]);
    // The trailer is the checksum any zlib computes for the same text.
    let mut plain = Vec::new();
    ZlibDecoder::new(&first[4..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, json);
    server.shutdown().await;
}

/// Whether the first deflate block of a zlib stream (after its 2-byte
/// header) is a stored one: BTYPE, bits 1-2 of its first byte, is 00.
fn first_block_is_stored(body: &[u8]) -> bool {
    body.len() > 2 && body[2] & 0b110 == 0
}

#[tokio::test]
async fn a_message_for_few_recipients_is_stored_and_for_more_compressed() {
    let server = TestServer::start(Config {
        compress_min_recipients: 2,
        ..test_config()
    })
    .await;
    let mut alice = raw_login(&server, "alice").await;
    let mut bob = raw_login(&server, "bob").await;
    let joined = read_raw(&mut alice).await.unwrap();
    assert_eq!(joined["data"]["username"], "bob", "{joined}");
    // Well over --compress-min-bytes, and very compressible.
    let text = "hello ".repeat(50);
    let send = package(json!({"type": "message", "data": {"message": text}}));
    alice.write_all(&send).await.unwrap();
    // One recipient: stored whatever its length.
    let body = read_body(&mut bob).await.unwrap();
    assert!(first_block_is_stored(&body), "{body:02x?}");
    assert!(body.len() > text.len(), "stored: {} bytes", body.len());
    assert_eq!(inflate_raw(&body)["data"]["message"], text.as_str());
    let sent = read_raw(&mut alice).await.unwrap();
    assert_eq!(sent["data"]["event_type"], "message_sent", "{sent}");
    // Two recipients: compressed.
    let mut carol = raw_login(&server, "carol").await;
    for member in [&mut alice, &mut bob] {
        let joined = read_raw(member).await.unwrap();
        assert_eq!(joined["data"]["username"], "carol", "{joined}");
    }
    alice.write_all(&send).await.unwrap();
    for member in [&mut bob, &mut carol] {
        let body = read_body(member).await.unwrap();
        assert!(!first_block_is_stored(&body), "{body:02x?}");
        assert!(
            body.len() < text.len() / 2,
            "deflated: {} bytes",
            body.len()
        );
        assert_eq!(inflate_raw(&body)["data"]["message"], text.as_str());
    }
    server.shutdown().await;
}

#[tokio::test]
async fn exact_bytes_of_the_handshake() {
    let server = TestServer::start_default().await;
    let mut s = raw_login(&server, "alice").await;
    // `parameters` may be omitted or null where a command takes none.
    s.write_all(&package(
        json!({"type": "command", "data": {"command": "channels"}}),
    ))
    .await
    .unwrap();
    assert_eq!(
        read_raw(&mut s).await.unwrap(),
        json!({"type": "notification", "data": {"event_type": "channel_list", "channels": ["general"], "channels_total": 1}})
    );
    s.write_all(&package(
        json!({"type": "command", "data": {"command": "channels", "parameters": null}}),
    ))
    .await
    .unwrap();
    assert_eq!(
        read_raw(&mut s).await.unwrap()["data"]["event_type"],
        "channel_list"
    );
    // Several packages in one write, and one package split across writes.
    let mut two = package(
        json!({"type": "command", "data": {"command": "ping", "parameters": {"token": "1"}}}),
    );
    two.extend(package(
        json!({"type": "command", "data": {"command": "ping", "parameters": {"token": "2"}}}),
    ));
    let (a, b) = two.split_at(3);
    s.write_all(a).await.unwrap();
    s.flush().await.unwrap();
    s.write_all(b).await.unwrap();
    assert_eq!(read_raw(&mut s).await.unwrap()["data"]["token"], "1");
    assert_eq!(read_raw(&mut s).await.unwrap()["data"]["token"], "2");
    server.shutdown().await;
}

#[tokio::test]
async fn bad_content_gets_a_protocol_error_and_the_connection_survives() {
    let server = TestServer::start_default().await;
    let mut s = raw_login(&server, "alice").await;
    let mut trailing = zlib(br#"{"type":"message","data":{"message":"x"}}"#);
    trailing.extend_from_slice(b"junk");
    let deep = format!(
        r#"{{"type":"command","data":{{"command":"join","parameters":{}1{}}}}}"#,
        "[".repeat(500),
        "]".repeat(500)
    );
    let mut truncated = zlib(br#"{"type":"message","data":{"message":"truncated"}}"#);
    truncated.truncate(truncated.len() - 5);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not zlib", b"plain text, not zlib".to_vec(), "zlib"),
        ("trailing bytes", trailing, "follow the end"),
        ("truncated zlib", truncated, "zlib"),
        ("not utf-8", zlib(b"\xff\xfe\xfd"), "UTF-8"),
        ("not json", zlib(b"hello"), "invalid package"),
        ("json array", zlib(b"[1,2,3]"), "invalid package"),
        ("too deep", zlib(deep.as_bytes()), "recursion limit"),
        (
            "unknown type",
            zlib(br#"{"type":"shout","data":{}}"#),
            "unknown variant",
        ),
        (
            "server-only type",
            zlib(br#"{"type":"session","data":{"status":true}}"#),
            "unknown variant",
        ),
        (
            "notification from client",
            zlib(br#"{"type":"notification","data":{"event_type":"user_joined"}}"#),
            "unknown variant",
        ),
        ("missing data", zlib(br#"{"type":"message"}"#), "data"),
        (
            "data as array",
            zlib(br#"{"type":"message","data":["hi"]}"#),
            "JSON object",
        ),
        (
            "missing field",
            zlib(br#"{"type":"message","data":{}}"#),
            "message",
        ),
        (
            "wrong type",
            zlib(br#"{"type":"message","data":{"message":42}}"#),
            "invalid type",
        ),
        (
            "unknown field",
            zlib(br#"{"type":"message","data":{"message":"x","color":"red"}}"#),
            "unknown field",
        ),
        (
            "unknown member of the envelope",
            zlib(br#"{"type":"command","data":{"command":"channels"},"extra":1}"#),
            r#""extra", expected "type" or "data""#,
        ),
        (
            "unknown member of the envelope, first",
            zlib(br#"{"extra":1,"type":"message","data":{"message":"x"}}"#),
            r#""extra", expected "type" or "data""#,
        ),
        (
            "unknown command",
            zlib(br#"{"type":"command","data":{"command":"fly"}}"#),
            "unknown command",
        ),
        (
            "command not a string",
            zlib(br#"{"type":"command","data":{"command":1}}"#),
            "invalid type",
        ),
        (
            "huge number",
            zlib(br#"{"type":"message","data":{"message":1e999999}}"#),
            "invalid",
        ),
    ];
    for (what, body, needle) in cases {
        s.write_all(&frame(&body)).await.unwrap();
        let message = expect_protocol_error(&mut s, what).await;
        assert!(message.contains(needle), "{what}: {message}");
    }
    ping_pong(&mut s).await;
    server.shutdown().await;
}

#[tokio::test]
async fn empty_frame_is_fatal() {
    let server = TestServer::start_default().await;
    let mut s = raw_login(&server, "alice").await;
    s.write_all(&[0, 0, 0, 0]).await.unwrap();
    let message = expect_protocol_error(&mut s, "empty frame").await;
    assert!(message.contains("length 0"), "{message}");
    expect_eof(&mut s).await;
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_frame_is_fatal_on_the_header_alone() {
    let server = TestServer::start(Config {
        max_frame_bytes: 1024,
        ..test_config()
    })
    .await;
    let mut s = raw_login(&server, "alice").await;
    // 4 GiB - 1 announced, nothing sent after it.
    s.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    let message = expect_protocol_error(&mut s, "huge frame").await;
    assert!(
        message.contains("4294967295") && message.contains("1024"),
        "{message}"
    );
    expect_eof(&mut s).await;
    // One byte over the limit is refused the same way.
    let mut s = raw_login(&server, "bob").await;
    s.write_all(&1025u32.to_be_bytes()).await.unwrap();
    expect_protocol_error(&mut s, "1025").await;
    expect_eof(&mut s).await;
    server.shutdown().await;
}

#[tokio::test]
async fn compression_bomb_is_fatal() {
    let server = TestServer::start(Config {
        max_package_bytes: 4096,
        ..test_config()
    })
    .await;
    let mut s = raw_login(&server, "alice").await;
    let text = format!(
        r#"{{"type":"message","data":{{"message":"{}"}}}}"#,
        "a".repeat(1 << 20)
    );
    let bomb = zlib(text.as_bytes());
    assert!(bomb.len() < 64 * 1024);
    s.write_all(&frame(&bomb)).await.unwrap();
    let message = expect_protocol_error(&mut s, "bomb").await;
    assert!(message.contains("4096"), "{message}");
    expect_eof(&mut s).await;
    server.shutdown().await;
}

#[tokio::test]
async fn partial_frame_times_out() {
    let server = TestServer::start(Config {
        frame_timeout: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let mut s = raw_login(&server, "alice").await;
    s.write_all(&[0, 0, 0, 50, 1, 2]).await.unwrap();
    let message = expect_protocol_error(&mut s, "stalled frame").await;
    assert!(message.contains("not completed"), "{message}");
    expect_eof(&mut s).await;
    server.shutdown().await;
}

#[tokio::test]
async fn slow_consumer_is_dropped_without_slowing_others() {
    let server = TestServer::start(Config {
        outbound_queue: 16,
        ..test_config()
    })
    .await;
    let mut sender = server.login("sender").await;
    let mut watcher = server.login("watcher").await;
    joined(&mut sender).await;
    // A member that never reads, with a tiny receive buffer so the server's
    // writes stall quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(server.addr).await.unwrap();
    slow.write_all(&package(json!({"type": "command", "data": {"command": "login", "parameters": {"username": "slow"}}})))
        .await
        .unwrap();
    joined(&mut sender).await;
    joined(&mut watcher).await;

    // Incompressible-ish text so the socket buffers fill fast.
    let text = noise(&mut 0x2545F4914F6CDD1Du64, 4000);
    let mut sent = 0;
    let gone = loop {
        sender.message(&text).await.unwrap();
        sent += 1;
        // The sender reads its acknowledgement, so that it is not the
        // one whose queue fills (it would be, on a loaded machine, before
        // the slow member's socket buffers are full).
        loop {
            match next(&mut sender).await {
                ServerPackage::Notification(Notification::MessageSent { .. }) => break,
                ServerPackage::Notification(Notification::UserLeft { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        // The watcher keeps reading: it sees each message, or the departure.
        match next(&mut watcher).await {
            ServerPackage::Message(_) => {}
            ServerPackage::Notification(Notification::UserLeft { username, .. }) => break username,
            other => panic!("{other:?}"),
        }
        assert!(sent < 20_000, "slow consumer never dropped");
    };
    assert_eq!(gone, "slow");
    assert!(server.hub.snapshot().users.iter().all(|(n, _)| n != "slow"));
    expect_eof(&mut slow).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_member_moved_out_of_a_channel_gets_everything_in_the_order_it_was_said() {
    // Room for everything the reader leaves unread: the test is about
    // order, not bounds.
    let server = TestServer::start(Config {
        compression_level: 0,
        outbound_queue: 10_000,
        max_queue_bytes: 64 << 20,
        ..test_config()
    })
    .await;
    let mut owner = server.login("owner").await;
    let mut third = server.login("third").await;
    joined(&mut owner).await;
    owner
        .command("join", Some(json!({"channel": "room"})))
        .await
        .unwrap();
    joined(&mut owner).await;
    left(&mut third).await;
    // The reader's tiny receive window, and its not reading, keep most of
    // what the room says waiting in the server when it is kicked out.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut reader = raw_login_on(stream, "reader").await;
    joined(&mut third).await;
    reader
        .write_all(&package(
            json!({"type": "command", "data": {"command": "join", "parameters": {"channel": "room"}}}),
        ))
        .await
        .unwrap();
    joined(&mut owner).await;
    left(&mut third).await;
    const SAID: usize = 1000;
    let mut seed = 0x9E3779B97F4A7C15u64;
    for i in 0..SAID {
        let text = format!("{i} {}", noise(&mut seed, 4000));
        owner.message(&text).await.unwrap();
    }
    expect_acks(&mut owner, SAID).await;
    owner
        .command("kick", Some(json!({"username": "reader"})))
        .await
        .unwrap();
    match next_note(&mut owner).await {
        Notification::UserLeft {
            username, kicked, ..
        } => {
            assert_eq!((username.as_str(), kicked), ("reader", Some(true)))
        }
        other => panic!("{other:?}"),
    }
    // Now general says something, once the reader is there.
    let reading = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut general = 0;
        while general < 5 {
            let v = read_raw(&mut reader).await.expect("open");
            if v["type"] == "message" && v["data"]["channel"] == "general" {
                general += 1;
            }
            seen.push(v);
        }
        seen
    });
    joined(&mut third).await;
    for i in 0..5 {
        third.message(&format!("general {i}")).await.unwrap();
    }
    expect_acks(&mut third, 5).await;
    // The room's messages, then the kick and the arrival in general, then
    // general's messages.
    let mut room = 0;
    let mut kicked = false;
    let mut arrived = false;
    let mut general = 0;
    for v in reading.await.unwrap() {
        let data = &v["data"];
        match (
            v["type"].as_str(),
            data["event_type"].as_str(),
            data["channel"].as_str(),
        ) {
            (Some("message"), _, Some("room")) => {
                assert!(!kicked, "room's message {room} after the kick");
                let text = data["message"].as_str().unwrap();
                assert!(text.starts_with(&format!("{room} ")), "out of order");
                room += 1;
            }
            (Some("notification"), Some("kicked"), _) => {
                assert_eq!(room, SAID, "the kick came before the room's messages");
                kicked = true;
            }
            (Some("notification"), Some("user_joined"), Some("general"))
                if data["username"] == "reader" =>
            {
                assert!(kicked, "in general before the kick");
                arrived = true;
            }
            (Some("message"), _, Some("general")) => {
                assert!(arrived, "general's message before the arrival");
                assert_eq!(data["message"], format!("general {general}"));
                general += 1;
            }
            (Some("notification"), _, _) => {}
            _ => panic!("{v}"),
        }
    }
    assert_eq!((room, general), (SAID, 5));
    server.shutdown().await;
}

/// `n` printable characters from a xorshift generator: text zlib cannot
/// shrink much, so volumes are what they look like.
fn noise(seed: &mut u64, n: usize) -> String {
    let mut text = String::with_capacity(n);
    for _ in 0..n {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        text.push(char::from(b'!' + (*seed % 90) as u8));
    }
    text
}

async fn left(c: &mut chatmaster::client::ClientConnection) {
    match next_note(c).await {
        Notification::UserLeft { .. } => {}
        other => panic!("expected user_left, got {other:?}"),
    }
}

async fn joined(c: &mut chatmaster::client::ClientConnection) {
    match next_note(c).await {
        Notification::UserJoined { .. } => {}
        other => panic!("expected user_joined, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_cap_refuses_with_an_error() {
    let server = TestServer::start(Config {
        max_connections: 2,
        ..test_config()
    })
    .await;
    let _a = server.login("a").await;
    let _b = server.login("b").await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    let v = read_raw(&mut c).await.expect("an error before closing");
    assert_eq!(v["type"], "error");
    assert_eq!(v["data"]["error_type"], "server");
    assert!(v["data"]["message"].as_str().unwrap().contains("full"));
    expect_eof(&mut c).await;
    // A slot frees when someone leaves.
    drop(_a);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut d = TcpStream::connect(server.addr).await.unwrap();
        let v = read_raw(&mut d).await.expect("a package");
        if v["type"] == "request" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::task::yield_now().await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_everyone_and_returns() {
    let server = TestServer::start(Config {
        shutdown_timeout: Duration::from_millis(500),
        ..test_config()
    })
    .await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    joined(&mut alice).await;
    // Someone who connected but never logged in, and someone who never reads.
    let mut pending = TcpStream::connect(server.addr).await.unwrap();
    let _stuck = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(
        read_raw(&mut pending).await.unwrap()["data"]["request"],
        "login"
    );
    let hub = server.hub.clone();
    server.shutdown().await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(next_note(c).await, Notification::ServerShutdown {});
        expect_closed(c).await;
    }
    assert_eq!(
        read_raw(&mut pending).await.unwrap(),
        json!({"type": "notification", "data": {"event_type": "server_shutdown"}})
    );
    expect_eof(&mut pending).await;
    assert_eq!(hub.user_count(), 0);
}

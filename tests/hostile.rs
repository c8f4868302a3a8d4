//! Hostile clients against the real server: slowloris, bombs, floods, slow
//! consumers, and the connection cap (a thousand clients at once is in
//! `many_clients.rs`, which counts heap bytes). Each test
//! also checks that a bystander keeps being served while the attack runs.
//!
//! Timeouts are shortened through `Config` so the suite stays fast. Memory
//! figures (from /proc/self/status, Linux only) are printed for the record
//! with `--nocapture`; only deterministic outcomes are asserted.

mod common;

use std::time::Duration;

use chatmaster::client::{ClientConnection, ClientError};
use chatmaster::wire::compress;
use chatmaster::wire::frame::FrameCodec;
use chatmaster::wire::protocol::{Notification, ServerPackage};
use chatmaster::Config;
use common::*;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Limits for attack tests: short timeouts, no rate limit unless a test sets one.
fn fast_config() -> Config {
    Config {
        login_timeout: Duration::from_secs(2),
        frame_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(2),
        ..test_config()
    }
}

fn report_memory(what: &str, before: Option<(u64, u64)>) {
    if let (Some((rss0, _)), Some((rss, hwm))) = (before, memory_kib()) {
        println!(
            "memory [{what}]: rss {rss0} -> {rss} KiB ({:+} KiB), peak {hwm} KiB",
            rss as i64 - rss0 as i64
        );
    }
}

fn ping_frame(token: &str) -> Vec<u8> {
    frame_of(&format!(
        r#"{{"type":"command","data":{{"command":"ping","parameters":{{"token":"{token}"}}}}}}"#
    ))
}

/// Reads until an `error` arrives and returns (type, message); other
/// packages in flight are skipped.
async fn until_error(c: &mut ClientConnection) -> (String, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv_timeout(left).await {
            Ok(ServerPackage::Error(e)) => return (e.error_type, e.message),
            Ok(_) => continue,
            Err(e) => panic!("expected an error package, got {e}"),
        }
    }
}

/// Proves the server still serves others: `a` messages `b`, who must get it.
async fn bystanders_talk(a: &mut ClientConnection, b: &mut ClientConnection, text: &str) {
    a.message(text).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match b.recv_timeout(left).await.expect("bystander starved") {
            ServerPackage::Message(m) if m.message == text => return,
            _ => continue,
        }
    }
}

/// Two logged-in bystanders in their own channel.
async fn bystanders(server: &TestServer) -> (ClientConnection, ClientConnection) {
    let mut a = server.login("bystander_a").await;
    let mut b = server.login("bystander_b").await;
    for c in [&mut a, &mut b] {
        c.command("join", Some(serde_json::json!({"channel": "quiet"})))
            .await
            .unwrap();
    }
    assert_quiet_after_joins(&mut a).await;
    assert_quiet_after_joins(&mut b).await;
    (a, b)
}

/// Drains join traffic up to a pong.
async fn assert_quiet_after_joins(c: &mut ClientConnection) {
    c.command("ping", Some(serde_json::json!({"token": "joined"})))
        .await
        .unwrap();
    loop {
        if let ServerPackage::Notification(Notification::Pong { .. }) = next(c).await {
            return;
        }
    }
}

// ---------------------------------------------------------------- slowloris

#[tokio::test]
async fn partial_header_is_closed_by_the_frame_timeout() {
    let server = TestServer::start(fast_config()).await;
    let (mut a, mut b) = bystanders(&server).await;
    let mut slow = server.login("slow").await;
    slow.stream_mut().write_all(&[0, 0]).await.unwrap();
    bystanders_talk(&mut a, &mut b, "while the header stalls").await;
    let (kind, message) = until_error(&mut slow).await;
    assert_eq!(kind, "protocol");
    assert!(message.contains("not completed"), "{message}");
    expect_closed(&mut slow).await;
    until_state(&server, "slow removed", |s| s.users.len() == 2).await;
    bystanders_talk(&mut a, &mut b, "after").await;
    server.shutdown().await;
}

#[tokio::test]
async fn partial_frame_is_closed_by_the_frame_timeout() {
    let server = TestServer::start(fast_config()).await;
    let (mut a, mut b) = bystanders(&server).await;
    // Not logged in: the frame timeout (1 s) fires before the login timeout (2 s).
    let mut slow = server.connect().await;
    let mut frame = login_frame("slowpoke");
    frame.truncate(frame.len() - 3);
    slow.stream_mut().write_all(&frame).await.unwrap();
    bystanders_talk(&mut a, &mut b, "while the frame stalls").await;
    let (kind, message) = until_error(&mut slow).await;
    assert_eq!(kind, "protocol");
    assert!(message.contains("not completed"), "{message}");
    expect_closed(&mut slow).await;
    assert_eq!(
        server.hub.user_count(),
        2,
        "a partial login must not log in"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn silent_client_is_closed_by_the_login_timeout() {
    let server = TestServer::start(fast_config()).await;
    let (mut a, mut b) = bystanders(&server).await;
    let mut silent = server.connect().await;
    match next(&mut silent).await {
        ServerPackage::Request(r) => assert_eq!(r.request, "login"),
        other => panic!("{other:?}"),
    }
    bystanders_talk(&mut a, &mut b, "while one says nothing").await;
    let (kind, _) = until_error(&mut silent).await;
    assert_eq!(kind, "login");
    expect_closed(&mut silent).await;
    server.shutdown().await;
}

#[tokio::test]
async fn dribbling_client_is_closed_by_the_frame_timeout() {
    let server = TestServer::start(fast_config()).await;
    let (mut a, mut b) = bystanders(&server).await;
    let mut slow = server.login("dribbler").await;
    let frame = frame_of(r#"{"type":"message","data":{"message":"one byte at a time, please"}}"#);
    // A byte every 100 ms: the frame needs several seconds, the limit is 1 s.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0;
    let started = Instant::now();
    let (kind, message) = loop {
        tokio::select! {
            _ = tick.tick(), if sent < frame.len() => {
                if slow.stream_mut().write_all(&frame[sent..sent + 1]).await.is_ok() {
                    sent += 1;
                }
            }
            r = slow.recv() => match r {
                Ok(ServerPackage::Error(e)) => break (e.error_type, e.message),
                Ok(_) => continue,
                Err(e) => panic!("closed without an error: {e}"),
            },
        }
        assert!(started.elapsed() < WAIT, "dribbler not cut off");
    };
    assert_eq!(kind, "protocol");
    assert!(message.contains("not completed"), "{message}");
    assert!(
        sent < frame.len(),
        "the frame completed after all ({sent} bytes)"
    );
    expect_closed(&mut slow).await;
    bystanders_talk(&mut a, &mut b, "after the dribbler").await;
    server.shutdown().await;
}

#[tokio::test]
async fn many_stalled_frames_hold_little_memory_and_all_time_out() {
    const STALLERS: usize = 200;
    let _ = rlimit::increase_nofile_limit(4 * STALLERS as u64 + 256);
    let server = TestServer::start(fast_config()).await;
    let (mut a, mut b) = bystanders(&server).await;
    let before = memory_kib();
    let mut stallers = Vec::new();
    for _ in 0..STALLERS {
        let mut c = server.connect().await;
        // Announce the largest frame allowed, then send one byte of it.
        let header = (chatmaster::server::config::DEFAULT_MAX_FRAME_BYTES as u32).to_be_bytes();
        c.stream_mut().write_all(&header).await.unwrap();
        c.stream_mut().write_all(&[0x78]).await.unwrap();
        stallers.push(c);
    }
    bystanders_talk(&mut a, &mut b, "among the stallers").await;
    report_memory("200 stalled 64 KiB frames", before);
    for c in &mut stallers {
        let (kind, _) = until_error(c).await;
        assert_eq!(kind, "protocol");
        expect_closed(c).await;
    }
    bystanders_talk(&mut a, &mut b, "after the stallers").await;
    server.shutdown().await;
}

// -------------------------------------------------------------------- bombs

#[tokio::test]
async fn inflation_bomb_gets_an_error_then_close() {
    let server = TestServer::start(fast_config()).await;
    let (mut a, mut b) = bystanders(&server).await;
    let mut bomber = server.login("bomber").await;
    // 4 MiB of zeros deflate to about 4 KiB: 16 times the package cap.
    let bomb = FrameCodec::frame(compress::deflate(&vec![0u8; 4 << 20], 9).into());
    assert!(bomb.len() < chatmaster::server::config::DEFAULT_MAX_FRAME_BYTES);
    let before = memory_kib();
    bomber.stream_mut().write_all(&bomb).await.unwrap();
    let (kind, message) = until_error(&mut bomber).await;
    assert_eq!(kind, "protocol");
    assert!(message.contains("inflates past"), "{message}");
    expect_closed(&mut bomber).await;
    report_memory("inflation bomb", before);
    bystanders_talk(&mut a, &mut b, "after the bomb").await;
    server.shutdown().await;
}

#[tokio::test]
async fn four_gib_length_prefix_gets_an_error_then_close() {
    let server = TestServer::start(fast_config()).await;
    let (mut a, mut b) = bystanders(&server).await;
    let before = memory_kib();
    for logged_in in [false, true] {
        let mut bomber = if logged_in {
            server.login("prefix").await
        } else {
            server.connect().await
        };
        bomber
            .stream_mut()
            .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4])
            .await
            .unwrap();
        let (kind, message) = until_error(&mut bomber).await;
        assert_eq!(kind, "protocol");
        assert!(message.contains("exceeds the limit"), "{message}");
        expect_closed(&mut bomber).await;
    }
    report_memory("4 GiB length prefix", before);
    bystanders_talk(&mut a, &mut b, "after the prefix").await;
    server.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_frames_without_reading() {
    const FRAMES: usize = 10_000;
    let server = TestServer::start(fast_config()).await;
    let (mut a, mut b) = bystanders(&server).await;
    let mut bomber = server.login("pipeliner").await;
    let mut burst = Vec::new();
    for i in 0..FRAMES {
        burst.extend_from_slice(&ping_frame(&i.to_string()));
    }
    let before = memory_kib();
    // Write everything before reading anything. The server answers each
    // frame before reading the next, so TCP backpressure, not memory, is
    // what holds the pipeliner back; the writer runs on its own task so a
    // full pipe cannot deadlock the test.
    let stream = std::mem::replace(
        bomber.stream_mut(),
        TcpStream::connect(server.addr).await.unwrap(),
    );
    let (reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let r = writer.write_all(&burst).await;
        (r, writer)
    });
    bystanders_talk(&mut a, &mut b, "during the pipeline").await;
    let (written, writer) = writing.await.unwrap();
    // Now read: pongs in order, possibly cut short if the server gave up
    // on us as a stalled reader.
    let stream = reader.reunite(writer).unwrap();
    let mut bomber = ClientConnection::from_stream(stream);
    let mut expected = 0;
    loop {
        match bomber.recv_timeout(WAIT).await {
            Ok(ServerPackage::Notification(Notification::Pong { token })) => {
                assert_eq!(token, Some(expected.to_string()), "pongs out of order");
                expected += 1;
                if expected == FRAMES {
                    break;
                }
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(ClientError::Timeout(_)) => panic!("stuck after {expected} pongs"),
            Err(_) => break,
        }
    }
    report_memory("10,000 pipelined frames", before);
    println!("pipeliner: write {written:?}, {expected} of {FRAMES} pongs");
    if expected == FRAMES {
        assert!(written.is_ok());
        assert_quiet(&mut bomber).await;
    } else {
        until_state(&server, "pipeliner dropped", |s| s.users.len() == 2).await;
    }
    bystanders_talk(&mut a, &mut b, "after the pipeline").await;
    server.shutdown().await;
}

// ------------------------------------------------------------------- floods

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_in_one_channel_does_not_starve_another() {
    // No rate limit: this is about scheduling fairness alone.
    let server = TestServer::start(fast_config()).await;
    let (mut a, mut b) = bystanders(&server).await;
    let mut flooder = server.login("flooder").await;
    let mut audience = server.login("audience").await;
    match next_note(&mut flooder).await {
        Notification::UserJoined { username, .. } => assert_eq!(username, "audience"),
        other => panic!("{other:?}"),
    }
    const FLOOD: u64 = 2_000;
    let flooding = tokio::spawn(async move {
        let started = Instant::now();
        for i in 0..FLOOD {
            flooder
                .feed(&chatmaster::ClientPackage::Message(
                    chatmaster::wire::protocol::OutgoingMessage {
                        message: format!("flood {i}"),
                    },
                ))
                .await
                .unwrap();
            if i % 64 == 63 {
                flooder.flush().await.unwrap();
            }
        }
        flooder.flush().await.unwrap();
        (flooder, started.elapsed())
    });
    let listening = tokio::spawn(async move {
        let mut got = 0u64;
        while got < FLOOD {
            match audience.recv_timeout(WAIT).await.unwrap() {
                ServerPackage::Message(m) => {
                    assert_eq!(m.message, format!("flood {got}"), "flood out of order");
                    got += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        (audience, got)
    });
    let mut worst = Duration::ZERO;
    let mut during = 0;
    for i in 0..20 {
        let started = Instant::now();
        bystanders_talk(&mut a, &mut b, &format!("through the flood {i}")).await;
        worst = worst.max(started.elapsed());
        if !flooding.is_finished() {
            during += 1;
        }
    }
    let (mut flooder, flood_time) = flooding.await.unwrap();
    let (mut audience, got) = listening.await.unwrap();
    println!(
        "flood: {FLOOD} messages written in {flood_time:?}; {during} of 20 bystander exchanges overlapped it, worst latency {worst:?}"
    );
    assert_eq!(got, FLOOD);
    assert_quiet(&mut flooder).await;
    assert_quiet(&mut audience).await;
    server.shutdown().await;
}

#[tokio::test]
async fn rate_limit_answers_recovers_and_disconnects() {
    let server = TestServer::start(Config {
        rate_per_sec: 2,
        rate_burst: 3,
        rate_strikes: 5,
        ..fast_config()
    })
    .await;
    let mut c = server.login("hasty").await; // the login used one token
    for i in 0..3 {
        c.feed(&chatmaster::ClientPackage::Command(
            chatmaster::Command::new("ping", Some(serde_json::json!({"token": i.to_string()}))),
        ))
        .await
        .unwrap();
    }
    c.flush().await.unwrap();
    for expected in ["0", "1"] {
        match next_note(&mut c).await {
            Notification::Pong { token } => assert_eq!(token.as_deref(), Some(expected)),
            other => panic!("{other:?}"),
        }
    }
    let (kind, message) = next_error(&mut c).await;
    assert_eq!(kind, "rate_limit");
    assert!(!message.contains("Disconnecting"), "{message}");
    // The bucket refills at 2 per second: wait out one token.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_quiet(&mut c).await;
    // Now flood: five refusals in a row end the connection.
    for i in 0..12 {
        c.feed(&chatmaster::ClientPackage::Command(
            chatmaster::Command::new("ping", Some(serde_json::json!({"token": i.to_string()}))),
        ))
        .await
        .unwrap();
    }
    let _ = c.flush().await;
    let mut refusals = 0;
    let last = loop {
        match c.recv_timeout(WAIT).await {
            Ok(ServerPackage::Error(e)) => {
                assert_eq!(e.error_type, "rate_limit");
                refusals += 1;
                if e.message.contains("Disconnecting") {
                    break e.message;
                }
            }
            Ok(ServerPackage::Notification(Notification::Pong { .. })) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(refusals, 5, "{last}");
    expect_closed(&mut c).await;
    until_state(&server, "hasty removed", |s| s.users.is_empty()).await;
    server.shutdown().await;
}

#[tokio::test]
async fn flooder_is_throttled_then_dropped_while_the_channel_talks() {
    // Default limits: 20/s, bursts of 40, disconnect after 50 refusals in a row.
    let server = TestServer::start(Config {
        rate_per_sec: chatmaster::server::config::DEFAULT_RATE_PER_SEC,
        ..fast_config()
    })
    .await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut flooder = server.login("flooder").await;
    // Every package counts, so logging in spent one token of the burst.
    const BURST_LEFT: u32 = chatmaster::server::config::DEFAULT_RATE_BURST - 1;
    let started = Instant::now();
    for i in 0..1000 {
        let r = flooder
            .feed(&chatmaster::ClientPackage::Message(
                chatmaster::wire::protocol::OutgoingMessage {
                    message: format!("spam {i}"),
                },
            ))
            .await;
        if r.is_err() {
            break;
        }
    }
    let _ = flooder.flush().await;
    // The flooder hears about its refusals and is then cut off.
    let (kind, _) = until_error(&mut flooder).await;
    assert_eq!(kind, "rate_limit");
    expect_closed(&mut flooder).await;
    let elapsed = started.elapsed().as_secs_f64();
    // Bob saw at most the burst plus what the rate allowed meanwhile.
    let mut spam = 0u32;
    let mut last: Option<u32> = None;
    let allowed = 40.0 + 20.0 * (elapsed + 1.0);
    alice.message("still here").await.unwrap();
    loop {
        match next(&mut bob).await {
            ServerPackage::Message(m) if m.username == "flooder" => {
                let n: u32 = m.message["spam ".len()..].parse().unwrap();
                // The burst passes whole (less the token the login command
                // took); later ones only as tokens refill.
                if spam < BURST_LEFT {
                    assert_eq!(n, spam, "the burst was not delivered whole");
                }
                assert!(last.is_none_or(|l| n > l), "spam out of order");
                last = Some(n);
                spam += 1;
            }
            ServerPackage::Message(m) => {
                assert_eq!(m.message, "still here");
                break;
            }
            ServerPackage::Notification(_) => {}
            other => panic!("{other:?}"),
        }
    }
    println!("flooder: {spam} messages got through in {elapsed:.2} s");
    assert!(spam >= BURST_LEFT, "the burst should pass: {spam}");
    assert!(
        f64::from(spam) <= allowed,
        "{spam} messages passed the limiter"
    );
    until_state(&server, "flooder removed", |s| s.users.len() == 2).await;
    server.shutdown().await;
}

/// Messages the slow-consumer tests send, about 4 KB each.
const SLOW_CONSUMER_MESSAGES: usize = 1500;

#[tokio::test]
async fn slow_consumer_is_dropped_and_others_are_served() {
    // The package bound trips: 128 packages of 4 KB are far below the
    // byte bound.
    slow_consumer_is_dropped(Config {
        outbound_queue: 128,
        max_queue_bytes: 1 << 30,
        ..fast_config()
    })
    .await;
}

#[tokio::test]
async fn a_queue_over_its_byte_bound_makes_a_slow_consumer() {
    // The package bound is out of reach (more than all messages sent), so
    // only the byte bound can drop the reader that does not read. The
    // write timeout is far longer than the test. The bound must hold what
    // the prompt reader may have in flight (two batches of 50 messages).
    let config = Config {
        outbound_queue: 1_000_000,
        max_queue_bytes: 1024 * 1024,
        ..fast_config()
    };
    assert!(config.outbound_queue > SLOW_CONSUMER_MESSAGES * 2);
    slow_consumer_is_dropped(config).await;
}

/// One reader that never reads and one that does; a talker sends
/// `SLOW_CONSUMER_MESSAGES` messages of 4 KB. The non-reader must be
/// dropped, the reader must get every message in order and hear of the
/// drop, and the talker must hear nothing but the non-reader coming and
/// going.
async fn slow_consumer_is_dropped(config: Config) {
    const MESSAGES: usize = SLOW_CONSUMER_MESSAGES;
    let server = TestServer::start(Config {
        // Stored, not compressed: the test is about volume, not zlib.
        compression_level: 0,
        write_timeout: Duration::from_secs(30),
        ..config
    })
    .await;
    let mut talker = server.login("talker").await;
    let mut listener = server.login("listener").await;
    // The lazy one has a tiny receive window and never reads after login.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut lazy = ClientConnection::from_stream(socket.connect(server.addr).await.unwrap());
    assert!(lazy.login("lazy", WAIT).await.unwrap().status);
    let _ = next_note(&mut talker).await; // listener joined
    let mut rng = StdRng::seed_from_u64(7);
    let texts: Vec<String> = (0..MESSAGES)
        .map(|i| format!("{i} {}", Alphanumeric.sample_string(&mut rng, 4000)))
        .collect();
    // The talker keeps at most two batches ahead of the listener, so the
    // listener is a prompt reader and only the lazy one falls behind.
    let (ack, mut acked) = tokio::sync::watch::channel(0usize);
    let sending = tokio::spawn(async move {
        for (b, chunk) in texts.chunks(50).enumerate() {
            let _ = acked.wait_for(|got| got + 50 >= b * 50).await;
            for t in chunk {
                talker
                    .feed(&chatmaster::ClientPackage::Message(
                        chatmaster::wire::protocol::OutgoingMessage { message: t.clone() },
                    ))
                    .await
                    .unwrap();
            }
            talker.flush().await.unwrap();
        }
        talker
    });
    let mut got = 0;
    let mut lazy_left = false;
    while got < MESSAGES {
        match next(&mut listener).await {
            ServerPackage::Message(m) => {
                assert!(m.message.starts_with(&format!("{got} ")), "out of order");
                got += 1;
                ack.send_replace(got);
            }
            ServerPackage::Notification(Notification::UserJoined { username, .. }) => {
                assert_eq!(username, "lazy")
            }
            ServerPackage::Notification(Notification::UserLeft { username, .. }) => {
                assert_eq!(username, "lazy");
                println!("slow consumer dropped after {got} messages");
                lazy_left = true;
            }
            other => panic!("{other:?}"),
        }
    }
    let mut talker = sending.await.unwrap();
    assert!(lazy_left, "the slow consumer was never dropped");
    // The talker heard lazy come and go, and nothing else.
    talker.command("ping", None).await.unwrap();
    let mut notes = Vec::new();
    loop {
        match next_note(&mut talker).await {
            Notification::Pong { .. } => break,
            n => notes.push(n),
        }
    }
    assert!(
        matches!(&notes[..], [Notification::UserJoined { username: j, .. }, Notification::UserLeft { username: l, .. }] if j == "lazy" && l == "lazy"),
        "{notes:?}"
    );
    assert_quiet(&mut listener).await;
    let snap = server.hub.snapshot();
    assert!(
        snap.users.iter().all(|(name, _)| name != "lazy"),
        "{snap:?}"
    );
    drop(lazy);
    server.shutdown().await;
}

// ----------------------------------------------------------- connection cap

#[tokio::test]
async fn connections_past_the_cap_get_an_error_and_are_closed() {
    let server = TestServer::start(Config {
        max_connections: 3,
        ..fast_config()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = server.connect().await;
        match next(&mut c).await {
            ServerPackage::Request(_) => {}
            other => panic!("{other:?}"),
        }
        held.push(c);
    }
    let mut extra = server.connect().await;
    let (kind, message) = next_error(&mut extra).await;
    assert_eq!(kind, "server");
    assert!(message.contains("full"), "{message}");
    expect_closed(&mut extra).await;
    // A slot frees when a connection ends; then a new client gets in.
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = server.connect().await;
        match c.recv_timeout(WAIT).await.unwrap() {
            ServerPackage::Request(_) => break,
            ServerPackage::Error(_) => {
                assert!(Instant::now() < deadline, "slot never freed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    server.shutdown().await;
}

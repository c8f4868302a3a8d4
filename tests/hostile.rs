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
    // No rate limit: this is about scheduling fairness alone. On a loaded
    // machine (this binary's other tests run beside it) the audience's
    // connection task can be kept off the CPU while the flooder's runs; a
    // queue that holds the whole flood, and a generous write timeout, keep
    // the slow-consumer policy (tested elsewhere) out of this test.
    let server = TestServer::start(Config {
        outbound_queue: 4096,
        write_timeout: Duration::from_secs(30),
        ..fast_config()
    })
    .await;
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
    expect_acks(&mut flooder, FLOOD as usize).await;
    assert_quiet(&mut flooder).await;
    assert_quiet(&mut audience).await;
    server.shutdown().await;
}

/// The least time, from before the connection was opened, in which the
/// server can have handled `packages` from one client: the burst at once,
/// then one per token.
fn bucket_time(config: &Config, packages: u32) -> Duration {
    let waited = packages.saturating_sub(config.rate_burst);
    Duration::from_secs_f64(f64::from(waited) / f64::from(config.rate_per_sec))
}

fn message_frame(text: &str) -> Vec<u8> {
    frame_of(&serde_json::json!({"type": "message", "data": {"message": text}}).to_string())
}

/// Waits for the next pong, which must carry `token`; before it exactly
/// `acks` acknowledgements of the sender's own messages, and nothing else.
async fn expect_pong(c: &mut ClientConnection, token: &str, acks: usize) {
    expect_acks(c, acks).await;
    match next(c).await {
        ServerPackage::Notification(Notification::Pong { token: t }) => {
            assert_eq!(t.as_deref(), Some(token), "pongs out of order")
        }
        other => panic!("expected pong {token}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_messages_at_once_all_arrive_in_order_throttled() {
    // Default flood control: 20 packages per second, bursts of 40.
    let config = Config::default();
    let server = TestServer::start(config.clone()).await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    const MESSAGES: u32 = 200;
    const PING_EVERY: u32 = 50;
    let started = Instant::now();
    let mut flooder = server.login("flooder").await;
    // 200 messages and a ping after every 50th, written in one go.
    let mut burst = Vec::new();
    for i in 0..MESSAGES {
        burst.extend_from_slice(&message_frame(&format!("flood {i}")));
        if i % PING_EVERY == PING_EVERY - 1 {
            burst.extend_from_slice(&ping_frame(&i.to_string()));
        }
    }
    burst.extend_from_slice(&ping_frame("end"));
    // Every package counts: the login, the messages, the pings.
    let packages = 1 + MESSAGES + MESSAGES / PING_EVERY + 1;
    let floor = bucket_time(&config, packages);
    flooder.stream_mut().write_all(&burst).await.unwrap();

    // Bob gets every message, in order; a few times during the flood carol
    // (same channel) pings and is answered while the flooder is still held
    // back: before the bucket can possibly have let its last package in.
    let mut got = 0u32;
    let mut carol_pings = 0;
    while got < MESSAGES {
        match next(&mut bob).await {
            ServerPackage::Message(m) => {
                assert_eq!(m.username, "flooder");
                assert_eq!(m.message, format!("flood {got}"), "flood out of order");
                got += 1;
                if got % PING_EVERY == 0 && got < MESSAGES {
                    carol_pings += 1;
                    let asked = Instant::now();
                    assert_quiet_after_joins(&mut carol).await;
                    let answered = started.elapsed();
                    println!(
                        "carol's ping after {got} flood messages: answered in {:?}",
                        asked.elapsed()
                    );
                    assert!(
                        answered < floor,
                        "carol was answered only after the flood could have ended ({answered:?})"
                    );
                }
            }
            ServerPackage::Notification(Notification::UserJoined { username, .. }) => {
                assert!(username == "carol" || username == "flooder", "{username}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(carol_pings, 3);
    // The flooder's pings are answered in order after its messages, and
    // nothing else comes: no error, no refusal.
    for i in 0..MESSAGES / PING_EVERY {
        expect_pong(
            &mut flooder,
            &(i * PING_EVERY + PING_EVERY - 1).to_string(),
            PING_EVERY as usize,
        )
        .await;
    }
    expect_pong(&mut flooder, "end", 0).await;
    let elapsed = started.elapsed();
    println!("{MESSAGES} messages at once: all delivered in {elapsed:?} (bucket floor {floor:?})");
    assert!(
        elapsed >= floor,
        "{packages} packages handled in {elapsed:?}: the bucket allows no less than {floor:?}"
    );
    // Still connected and served.
    assert_quiet(&mut flooder).await;
    assert_quiet(&mut bob).await;
    assert_eq!(server.hub.user_count(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn paused_reading_does_not_trip_the_frame_timeout() {
    // Each pause (half a second) outlasts the frame timeout, and the frames
    // are large enough that a read ends in the middle of one: the partial
    // frame waits in the read buffer while the connection is paused.
    let config = Config {
        rate_per_sec: 2,
        rate_burst: 2,
        frame_timeout: Duration::from_millis(300),
        // Stored, not compressed, so the frames stay large.
        compression_level: 0,
        ..fast_config()
    };
    let server = TestServer::start(config.clone()).await;
    let mut bob = server.login("bob").await;
    let started = Instant::now();
    let mut flooder = server.login("big").await;
    let _ = next_note(&mut bob).await; // big joined
    let mut rng = StdRng::seed_from_u64(11);
    let texts: Vec<String> = (0..4)
        .map(|i| format!("{i} {}", Alphanumeric.sample_string(&mut rng, 3000)))
        .collect();
    let mut burst = Vec::new();
    for t in &texts {
        burst.extend_from_slice(&message_frame(t));
    }
    burst.extend_from_slice(&ping_frame("end"));
    flooder.stream_mut().write_all(&burst).await.unwrap();
    for t in &texts {
        match next(&mut bob).await {
            ServerPackage::Message(m) => assert_eq!(&m.message, t),
            other => panic!("{other:?}"),
        }
    }
    expect_pong(&mut flooder, "end", texts.len()).await;
    let floor = bucket_time(&config, 1 + 4 + 1);
    assert!(
        started.elapsed() >= floor,
        "{:?} < {floor:?}",
        started.elapsed()
    );
    assert_quiet(&mut flooder).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_paused_flooder_is_held_back_by_tcp_not_by_memory() {
    // 16 MiB of messages against 20 per second: the server reads only as
    // the bucket allows, so the kernel buffers (a few MiB at most) fill and
    // the writer blocks, while the server's own buffers stay bounded.
    let server = TestServer::start(Config {
        rate_per_sec: chatmaster::server::config::DEFAULT_RATE_PER_SEC,
        ..fast_config()
    })
    .await;
    let (mut a, mut b) = bystanders(&server).await;
    let mut ear = server.login("ear").await;
    let flooder = server.login("firehose").await;
    let _ = next_note(&mut ear).await; // firehose joined
    let frame = message_frame("m");
    let mut burst = Vec::with_capacity((16 << 20) + frame.len());
    while burst.len() < 16 << 20 {
        burst.extend_from_slice(&frame);
    }
    let before = memory_kib();
    let (stream, _) = flooder.into_parts().unwrap();
    let writing = tokio::spawn(async move {
        let mut stream = stream;
        let r = stream.write_all(&burst).await;
        (r, stream)
    });
    // Past the burst, the rate lets the messages through one by one.
    let past_burst = chatmaster::server::config::DEFAULT_RATE_BURST + 20;
    for _ in 0..past_burst {
        match next(&mut ear).await {
            ServerPackage::Message(m) => assert_eq!(m.message, "m"),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        !writing.is_finished(),
        "16 MiB were taken in while the server handled {past_burst} packages"
    );
    bystanders_talk(&mut a, &mut b, "while the firehose is held back").await;
    report_memory("16 MiB flood held back", before);
    writing.abort();
    assert_eq!(server.hub.user_count(), 4, "nobody was disconnected");
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
            Notification::MessageSent { .. } => {}
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

//! 1,000 clients log in, join rooms, talk and vanish abruptly, twice:
//! afterwards the server holds no users or channels, and the live heap
//! (counted by a wrapping allocator, so the figure is exact rather than
//! the allocator-dependent resident size) returns to where it started
//! but for bounded, one-time caches; a second round adds nothing.
//!
//! A test binary of its own so no other test's allocations are counted.

mod common;

use std::alloc::System;
use std::time::Duration;

use cap::Cap;
use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Heap the first round may leave behind for good: the runtime's I/O
/// registration slab and the hub's maps keep their grown capacity (a few
/// hundred bytes per connection that was ever open at once).
const FIRST_ROUND_RETAINED: usize = 4 << 20;
/// What a second, identical round may add on top: nothing but noise (a
/// leak of 128 bytes per connection would already exceed it).
const SECOND_ROUND_SLACK: usize = 128 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_come_talk_and_vanish() {
    const CLIENTS: usize = 1000;
    const CHANNELS: usize = 25;
    // Two sockets per client live in this process; CI machines often
    // default to a soft limit of 1024 descriptors.
    let limit = rlimit::increase_nofile_limit(2 * CLIENTS as u64 + 512).unwrap();
    assert!(
        limit >= 2 * CLIENTS as u64 + 64,
        "cannot raise the descriptor limit: {limit}"
    );
    let server = TestServer::start(test_config()).await;
    let heap_at_start = ALLOCATOR.allocated();
    let mut heap_after = Vec::new();
    // Two identical rounds: whatever the first leaves resident (allocator
    // caches, runtime structures) must not grow in the second.
    for round in 1..=2 {
        let start = memory_kib();

        // Phase 1: log in and join a room with raw sockets that then read
        // nothing, to measure what an idle logged-in connection costs.
        let mut raw = Vec::with_capacity(CLIENTS);
        for i in 0..CLIENTS {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            let mut hello = login_frame(&format!("m{i}"));
            hello.extend_from_slice(&frame_of(&format!(
            r#"{{"type":"command","data":{{"command":"join","parameters":{{"channel":"room{}"}}}}}}"#,
            i % CHANNELS
        )));
            s.write_all(&hello).await.unwrap();
            raw.push(s);
        }
        until_state(&server, "all logged in and in their rooms", |s| {
            s.users.len() == CLIENTS && s.users.iter().all(|(_, ch)| ch.starts_with("room"))
        })
        .await;
        let idle = memory_kib();
        if let (Some((rss0, _)), Some((rss1, _))) = (start, idle) {
            println!(
            "memory [{CLIENTS} idle logged-in connections]: +{} KiB, {:.1} KiB each (client and server side)",
            rss1.saturating_sub(rss0),
            rss1.saturating_sub(rss0) as f64 / CLIENTS as f64
        );
        }

        // Phase 2: each talks, proves its packages were handled, then half
        // shut down their side and all vanish with unread data (a reset).
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
        let mut tasks = Vec::with_capacity(CLIENTS);
        for (i, s) in raw.into_iter().enumerate() {
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = ClientConnection::from_stream(s);
                c.message(&format!("hello from m{i}")).await.unwrap();
                c.command("ping", Some(serde_json::json!({"token": "done"})))
                    .await
                    .unwrap();
                let mut heard = 0usize;
                loop {
                    match c.recv_timeout(Duration::from_secs(30)).await.unwrap() {
                        ServerPackage::Notification(Notification::Pong { .. }) => break,
                        ServerPackage::Error(e) => panic!("m{i}: {e:?}"),
                        ServerPackage::Message(_) => heard += 1,
                        _ => {}
                    }
                }
                barrier.wait().await;
                if i % 2 == 0 {
                    let _ = c.stream_mut().shutdown().await;
                }
                drop(c);
                heard
            }));
        }
        barrier.wait().await;
        let busy = memory_kib();
        assert_eq!(
            server.hub.snapshot().channels.len(),
            CHANNELS + 1,
            "every room exists while its members are there"
        );
        let mut heard = 0;
        for t in tasks {
            heard += t.await.unwrap();
        }
        until_state(&server, "everybody gone", |s| {
            s.users.is_empty()
                && s.channels.len() == 1
                && s.channels[0].name == "general"
                && s.channels[0].members.is_empty()
        })
        .await;
        let end = memory_kib();
        heap_after.push(ALLOCATOR.allocated());
        if let (Some((rss0, _)), Some((rss1, _)), Some((rss2, hwm))) = (start, busy, end) {
            println!(
            "memory [{CLIENTS} clients, round {round}]: start {rss0} KiB, all talking {rss1} KiB, after all left {rss2} KiB, peak {hwm} KiB; {heard} messages heard"
        );
        }
    }
    let (first, second) = (heap_after[0], heap_after[1]);
    println!(
        "live heap: start {heap_at_start} B, after round 1 {first} B, after round 2 {second} B"
    );
    assert!(
        first <= heap_at_start + FIRST_ROUND_RETAINED,
        "round 1 left {} bytes of heap behind",
        first.saturating_sub(heap_at_start)
    );
    assert!(
        second <= first + SECOND_ROUND_SLACK,
        "round 2 grew the heap by {} bytes: a leak",
        second.saturating_sub(first)
    );
    // The server still works afterwards.
    let mut a = server.login("afterwards").await;
    assert_quiet(&mut a).await;
    server.shutdown().await;
}

//! Micro-benchmarks of the wire codec and the broadcast path.
//!
//! `cargo bench --bench codec` measures encode (JSON + zlib + length
//! prefix) and decode (inflate + JSON) of a short chat message and of a
//! join notification carrying a 500-name member list, and a broadcast to a
//! channel of 500: as the bare "encode once, clone into N queues" (the
//! server's outboxes, and tokio mpsc channels for comparison) and through
//! the real [`Hub::message`], lock included.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use chatmaster::server::chat::Hub;
use chatmaster::server::config::{
    Config, DEFAULT_COMPRESSION_LEVEL, DEFAULT_MAX_PACKAGE_BYTES, DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_OUTBOUND_QUEUE,
};
use chatmaster::server::outbox::Outbox;
use chatmaster::wire::codec::{decode_body, encode};
use chatmaster::wire::frame::HEADER_LEN;
use chatmaster::wire::protocol::{ChatMessage, Notification, ServerPackage};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::sync::mpsc;

/// Members of the channel in the broadcast benchmarks.
const MEMBERS: usize = 500;

fn chat_message() -> ServerPackage {
    ServerPackage::Message(ChatMessage {
        message: "hello everybody, how is the weather over there today?".into(),
        username: "alice".into(),
        channel: Some("general".into()),
        to: None,
        timestamp: "2026-11-21T10:00:00.123Z".into(),
        id: 1_234_567,
        attachments: None,
        offline: None,
    })
}

fn join_with_users(n: usize) -> ServerPackage {
    ServerPackage::notification(Notification::UserJoined {
        topic: None,
        username: "user0042".into(),
        channel: "general".into(),
        users: Some((0..n).map(|i| format!("user{i:04}")).collect()),
        users_total: Some(n),
        owner: None,
        private: Some(false),
    })
}

fn codec(c: &mut Criterion) {
    let max = DEFAULT_MAX_PACKAGE_BYTES;
    let level = DEFAULT_COMPRESSION_LEVEL;
    for (name, package) in [
        ("chat_message", chat_message()),
        ("user_joined_500", join_with_users(500)),
    ] {
        let frame = encode(&package, max, level).expect("encode");
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function("encode", |b| {
            b.iter(|| encode(black_box(&package), max, level).expect("encode"))
        });
        group.bench_function("decode", |b| {
            b.iter(|| {
                decode_body::<ServerPackage>(black_box(&frame[HEADER_LEN..]), max).expect("decode")
            })
        });
        group.finish();
    }
}

fn broadcast(c: &mut Criterion) {
    let mut group = c.benchmark_group("broadcast");
    group.throughput(Throughput::Elements(MEMBERS as u64));

    // The bare path: encode once, hand a clone of the same Bytes to every
    // queue, then take each queue out as a connection does (copied into
    // one staging buffer per batch).
    let package = chat_message();
    let outboxes: Vec<Outbox> = (0..MEMBERS)
        .map(|_| Outbox::new(DEFAULT_OUTBOUND_QUEUE, DEFAULT_MAX_QUEUE_BYTES))
        .collect();
    let mut staging = Vec::new();
    group.bench_function(BenchmarkId::new("encode_once_to_queues", MEMBERS), |b| {
        b.iter(|| {
            let bytes = encode(
                &package,
                DEFAULT_MAX_PACKAGE_BYTES,
                DEFAULT_COMPRESSION_LEVEL,
            )
            .expect("encode");
            for q in &outboxes {
                let _ = q.push(bytes.clone());
            }
            for q in &outboxes {
                while let Ok(Some(_)) = q.take(&mut staging, 64 * 1024) {
                    staging.clear();
                }
            }
        })
    });

    // The same with tokio's bounded mpsc channels, the queues used before
    // the outbox, for comparison.
    let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..MEMBERS)
        .map(|_| mpsc::channel::<Bytes>(DEFAULT_OUTBOUND_QUEUE))
        .unzip();
    group.bench_function(BenchmarkId::new("encode_once_to_mpsc", MEMBERS), |b| {
        b.iter(|| {
            let bytes = encode(
                &package,
                DEFAULT_MAX_PACKAGE_BYTES,
                DEFAULT_COMPRESSION_LEVEL,
            )
            .expect("encode");
            for tx in &txs {
                let _ = tx.try_send(bytes.clone());
            }
            for rx in &mut rxs {
                while rx.try_recv().is_ok() {}
            }
        })
    });

    // The real path: Hub::message to a channel of MEMBERS, lock and timestamp included.
    let hub = Hub::new(Arc::new(Config {
        rate_per_sec: 0,
        ..Config::default()
    }));
    let mut queues = Vec::new();
    let mut sender = None;
    for i in 0..MEMBERS {
        let q = Outbox::new(4096, usize::MAX);
        let id = hub.login(&format!("user{i}"), q.clone()).expect("login");
        sender.get_or_insert(id);
        queues.push(q);
        // Drain as we go: each login notifies everybody already present.
        for q in &queues {
            while let Ok(Some(_)) = q.take(&mut staging, 64 * 1024) {
                staging.clear();
            }
        }
    }
    let sender = sender.expect("at least one member");
    group.bench_function(BenchmarkId::new("hub_message", MEMBERS), |b| {
        b.iter(|| {
            // The store's writer commits behind; wait for room as a
            // connection would (it stops reading its socket).
            let slot = loop {
                match hub.journal().try_slot() {
                    Ok(slot) => break slot,
                    Err(_) => std::thread::yield_now(),
                }
            };
            hub.message(sender, "hello everybody, how is the weather?".into(), slot)
                .expect("message");
            for q in &queues {
                while let Ok(Some(_)) = q.take(&mut staging, 64 * 1024) {
                    staging.clear();
                }
            }
        })
    });
    group.finish();
}

/// One login (and the matching logout) on a server holding 1,000 public
/// channels: the session carries the sorted channel list.
fn login(c: &mut Criterion) {
    let hub = Hub::new(Arc::new(Config::default()));
    let mut owners = Vec::new();
    for i in 0..1000 {
        let q = Outbox::new(64, usize::MAX);
        let id = hub.login(&format!("owner{i}"), q.clone()).expect("login");
        hub.join(id, &format!("channel{i}")).expect("join");
        owners.push(q);
    }
    c.bench_function("hub_login_1000_channels", |b| {
        b.iter(|| {
            // A disconnect closes the outbox, as the connection would.
            let id = hub
                .login("storm", Outbox::new(64, usize::MAX))
                .expect("login");
            hub.disconnect(id);
        })
    });
}

criterion_group!(benches, codec, broadcast, login);
criterion_main!(benches);

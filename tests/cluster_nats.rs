//! `NatsLink` against a real nats-server (JetStream, loopback, data in a
//! temporary directory) that each test starts itself: two links stand for
//! two nodes. The log's order is one for every follower and survives a
//! server restart with nothing lost or repeated; topics deliver until
//! unsubscribed; a reply larger than a NATS message arrives whole; claims
//! are exclusive, renewable, lapse after their lease and can be released;
//! with NATS down an append fails as unavailable instead of hanging.
//!
//! Without nats-server the tests say loudly that they did not run; with
//! `CI` set they fail.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatmaster::cluster::nats::{NatsLink, NatsOptions};
use chatmaster::cluster::{ClusterError, Entry, Link};
use common::nats::NatsServer;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// How long one expected event may take.
const WAIT: Duration = Duration::from_secs(15);

fn options() -> NatsOptions {
    NatsOptions {
        op_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        // JetStream reserves a stream's byte bound on disk: the tests'
        // servers are many, and the disk is shared.
        log_max_bytes: 64 << 20,
        ..NatsOptions::default()
    }
}

async fn link(server: &NatsServer, node: &str) -> Arc<NatsLink> {
    NatsLink::connect(&[server.url()], node, options())
        .await
        .unwrap()
}

async fn next_entry(rx: &mut mpsc::Receiver<Result<Entry, ClusterError>>) -> Entry {
    timeout(WAIT, rx.recv())
        .await
        .expect("a log entry in time")
        .expect("the follower is still there")
        .expect("no follow error")
}

/// Appends until NATS takes it again after a restart, within [`WAIT`].
async fn append_when_back(link: &NatsLink, payload: Bytes) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        match link.append(payload.clone()).await {
            Ok(seq) => return seq,
            Err(ClusterError::Unavailable(_)) if Instant::now() < deadline => {}
            Err(e) => panic!("append after restart: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_at_once_see_one_order() {
    let Some(server) = NatsServer::start("cluster_nats") else {
        return;
    };
    let a = link(&server, "a").await;
    let b = link(&server, "b").await;
    let mut follow_a = a.follow(0).await.unwrap();
    let mut follow_b = b.follow(0).await.unwrap();
    const EACH: usize = 200;
    let append_all = |link: Arc<NatsLink>, name: &'static str| async move {
        let mut seqs = Vec::new();
        for i in 0..EACH {
            let seq = link
                .append(Bytes::from(format!("{name}-{i}")))
                .await
                .unwrap();
            seqs.push(seq);
        }
        seqs
    };
    let (seqs_a, seqs_b) = tokio::join!(
        tokio::spawn(append_all(a.clone(), "a")),
        tokio::spawn(append_all(b.clone(), "b"))
    );
    let (seqs_a, seqs_b) = (seqs_a.unwrap(), seqs_b.unwrap());
    let mut order_a = Vec::new();
    let mut order_b = Vec::new();
    for _ in 0..2 * EACH {
        order_a.push(next_entry(&mut follow_a).await);
        order_b.push(next_entry(&mut follow_b).await);
    }
    assert_eq!(order_a, order_b, "both followers see the same order");
    let seqs: Vec<u64> = order_a.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=(2 * EACH) as u64).collect::<Vec<_>>());
    // Each node's events are there once, in its order, at the acknowledged sequences.
    for (name, acked) in [("a", &seqs_a), ("b", &seqs_b)] {
        let mine: Vec<&Entry> = order_a
            .iter()
            .filter(|e| e.payload.starts_with(name.as_bytes()))
            .collect();
        let want: Vec<Bytes> = (0..EACH)
            .map(|i| Bytes::from(format!("{name}-{i}")))
            .collect();
        assert_eq!(
            mine.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
            want
        );
        assert_eq!(&mine.iter().map(|e| e.seq).collect::<Vec<_>>(), acked);
    }
    assert_eq!(a.last_seq().await.unwrap(), (2 * EACH) as u64);
    // A follower from the middle starts right after it.
    let mut late = b.follow(150).await.unwrap();
    assert_eq!(next_entry(&mut late).await, order_a[150]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_survives_a_nats_restart() {
    let Some(mut server) = NatsServer::start("cluster_nats") else {
        return;
    };
    let a = link(&server, "a").await;
    let b = link(&server, "b").await;
    let mut follower = b.follow(0).await.unwrap();
    for i in 1..=50u64 {
        assert_eq!(a.append(Bytes::from(format!("e{i}"))).await.unwrap(), i);
    }
    for i in 1..=50u64 {
        assert_eq!(next_entry(&mut follower).await.seq, i);
    }
    server.restart();
    let mut acked = Vec::new();
    for i in 51..=100u64 {
        acked.push(append_when_back(&a, Bytes::from(format!("e{i}"))).await);
    }
    assert_eq!(
        acked,
        (51..=100).collect::<Vec<_>>(),
        "nothing stored twice"
    );
    for i in 51..=100u64 {
        let entry = next_entry(&mut follower).await;
        assert_eq!(
            (entry.seq, entry.payload),
            (i, Bytes::from(format!("e{i}")))
        );
    }
    // What was acknowledged before the restart is on disk: a new follower reads it all.
    let mut fresh = a.follow(0).await.unwrap();
    for i in 1..=100u64 {
        let entry = next_entry(&mut fresh).await;
        assert_eq!(
            (entry.seq, entry.payload),
            (i, Bytes::from(format!("e{i}")))
        );
    }
    // Nothing more than that arrives: an append after it is the next one.
    let seq = a.append(Bytes::from_static(b"last")).await.unwrap();
    assert_eq!(seq, 101);
    assert_eq!(next_entry(&mut follower).await.seq, 101);
    assert_eq!(next_entry(&mut fresh).await.seq, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_discarded_part_of_the_log_gets_an_error() {
    let Some(server) = NatsServer::start("cluster_nats") else {
        return;
    };
    let small = NatsOptions {
        log_max_msgs: 10,
        ..options()
    };
    let a = NatsLink::connect(&[server.url()], "a", small)
        .await
        .unwrap();
    for i in 0..30 {
        a.append(Bytes::from(format!("e{i}"))).await.unwrap();
    }
    let mut follower = a.follow(5).await.unwrap();
    match timeout(WAIT, follower.recv()).await.unwrap() {
        Some(Err(ClusterError::Other(m))) => assert!(m.contains("discarded"), "{m}"),
        other => panic!("expected the discarded-events error, got {other:?}"),
    }
    assert!(timeout(WAIT, follower.recv()).await.unwrap().is_none());
    // One that needs only what is still there follows as usual.
    let mut fine = a.follow(20).await.unwrap();
    assert_eq!(next_entry(&mut fine).await.seq, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_deliver_until_unsubscribed() {
    let Some(server) = NatsServer::start("cluster_nats") else {
        return;
    };
    let a = link(&server, "a").await;
    let b = link(&server, "b").await;
    let mut deliveries = a.deliveries().unwrap();
    assert!(a.deliveries().is_none(), "taken once");
    a.subscribe("chan.01").await.unwrap();
    a.subscribe("chan.01").await.unwrap(); // same as once
    a.subscribe("chan.02").await.unwrap();
    for i in 0..100 {
        b.publish("chan.01", Bytes::from(format!("m{i}")))
            .await
            .unwrap();
    }
    b.publish("chan.02", Bytes::from_static(b"marker"))
        .await
        .unwrap();
    // Each topic's packages come in b's order (topics are not ordered
    // among themselves: each has its own subscription).
    let mut got: Vec<(String, Bytes)> = Vec::new();
    while got.len() < 101 {
        let d = timeout(WAIT, deliveries.recv()).await.unwrap().unwrap();
        got.push((d.topic, d.payload));
    }
    let of = |topic: &str| -> Vec<Bytes> {
        got.iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    };
    let want: Vec<Bytes> = (0..100).map(|i| Bytes::from(format!("m{i}"))).collect();
    assert_eq!(of("chan.01"), want, "once each, in order");
    assert_eq!(of("chan.02"), vec![Bytes::from_static(b"marker")]);

    a.unsubscribe("chan.01").await.unwrap();
    b.publish("chan.01", Bytes::from_static(b"after"))
        .await
        .unwrap();
    // A third node subscribed to it shows the package went out.
    let c = link(&server, "c").await;
    let mut seen_by_c = c.deliveries().unwrap();
    c.subscribe("chan.01").await.unwrap();
    b.publish("chan.01", Bytes::from_static(b"after2"))
        .await
        .unwrap();
    let d = timeout(WAIT, seen_by_c.recv()).await.unwrap().unwrap();
    assert_eq!(&d.payload[..], b"after2");
    // Subscribed again, a gets what comes next and not what came meanwhile.
    a.subscribe("chan.01").await.unwrap();
    b.publish("chan.01", Bytes::from_static(b"again"))
        .await
        .unwrap();
    let d = timeout(WAIT, deliveries.recv()).await.unwrap().unwrap();
    assert_eq!(
        (d.topic.as_str(), &d.payload[..]),
        ("chan.01", &b"again"[..])
    );
    assert!(a.subscribe("bad topic").await.is_err());
    assert!(a.publish("a.>", Bytes::new()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_larger_than_a_nats_message_arrives_whole() {
    let Some(server) = NatsServer::start("cluster_nats") else {
        return;
    };
    let a = link(&server, "a").await;
    let b = link(&server, "b").await;
    // Nobody serves yet: no answer, at once rather than after the timeout.
    let started = Instant::now();
    assert_eq!(
        a.request("snapshot", Bytes::new(), WAIT).await.unwrap(),
        None
    );
    assert!(started.elapsed() < WAIT);
    b.serve(
        "snapshot",
        Arc::new(|request: Bytes| {
            let seed = request.first().copied().unwrap_or(0);
            Bytes::from(
                (0..3_000_000u32)
                    .map(|i| (i % 251) as u8 ^ seed)
                    .collect::<Vec<u8>>(),
            )
        }),
    )
    .await
    .unwrap();
    for seed in [7u8, 9] {
        let reply = a
            .request("snapshot", Bytes::from(vec![seed]), WAIT)
            .await
            .unwrap()
            .expect("a reply");
        assert_eq!(reply.len(), 3_000_000);
        assert!(reply
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i as u32 % 251) as u8 ^ seed));
    }
    // A small reply is one chunk, and a reply over the bound is refused.
    b.serve("small", Arc::new(|r: Bytes| r)).await.unwrap();
    assert_eq!(
        a.request("small", Bytes::from_static(b"hi"), WAIT)
            .await
            .unwrap(),
        Some(Bytes::from_static(b"hi"))
    );
    let tight = NatsOptions {
        max_reply_bytes: 1_000_000,
        ..options()
    };
    let c = NatsLink::connect(&[server.url()], "c", tight)
        .await
        .unwrap();
    match c.request("snapshot", Bytes::new(), WAIT).await {
        Err(ClusterError::Other(m)) => assert!(m.contains("larger than"), "{m}"),
        other => panic!("expected the reply to be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_nodes_claiming_a_key_at_once_exactly_one_wins() {
    let Some(server) = NatsServer::start("cluster_nats") else {
        return;
    };
    let a = link(&server, "a").await;
    let b = link(&server, "b").await;
    let lease = Duration::from_secs(30);
    let mut wins = [0usize; 2];
    for round in 0..100 {
        let key = format!("name.{round:04x}");
        let (ra, rb) = tokio::join!(
            a.claim(&key, Bytes::from_static(b"a"), lease),
            b.claim(&key, Bytes::from_static(b"b"), lease)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra ^ rb, "round {round}: a {ra}, b {rb}");
        wins[usize::from(rb)] += 1;
    }
    eprintln!("wins: a {}, b {}", wins[0], wins[1]);
    // Renewing keeps them all; releasing one frees it for the other node.
    let renewed = a.renew().await.unwrap();
    assert_eq!(renewed.len(), wins[0]);
    assert!(renewed.iter().all(|(_, kept)| *kept));
    let (key, _) = &renewed[0];
    assert!(!b.claim(key, Bytes::new(), lease).await.unwrap());
    a.release(key).await.unwrap();
    assert!(b.claim(key, Bytes::new(), lease).await.unwrap());
    assert!(!a.claim(key, Bytes::new(), lease).await.unwrap());
    // Keys outside the key-value alphabet are claimed as themselves.
    assert!(a.claim("odd key/=.", Bytes::new(), lease).await.unwrap());
    assert!(!b.claim("odd key/=.", Bytes::new(), lease).await.unwrap());
    assert!(b.claim("odd key/=,", Bytes::new(), lease).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_not_renewed_lapses_after_its_lease() {
    let Some(server) = NatsServer::start("cluster_nats") else {
        return;
    };
    let a = link(&server, "a").await;
    let b = link(&server, "b").await;
    let lease = Duration::from_secs(2);
    assert!(a
        .claim("slot.1", Bytes::from_static(b"a"), lease)
        .await
        .unwrap());
    let claimed = Instant::now();
    assert!(!b
        .claim("slot.1", Bytes::from_static(b"b"), lease)
        .await
        .unwrap());
    // b gets it once the lease has run out, not before.
    let deadline = claimed + lease + WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if b.claim("slot.1", Bytes::from_static(b"b"), lease)
            .await
            .unwrap()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the claim never lapsed");
    }
    assert!(
        claimed.elapsed() >= lease,
        "lapsed after {:?}",
        claimed.elapsed()
    );
    // a learns on its next renewal that it lost it.
    assert_eq!(a.renew().await.unwrap(), vec![("slot.1".to_owned(), false)]);
    assert_eq!(a.renew().await.unwrap(), vec![]);
    assert_eq!(b.renew().await.unwrap(), vec![("slot.1".to_owned(), true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_an_append_fails_as_unavailable() {
    let Some(mut server) = NatsServer::start("cluster_nats") else {
        return;
    };
    let a = link(&server, "a").await;
    a.append(Bytes::from_static(b"before")).await.unwrap();
    server.kill();
    // op_timeout is 2 s; WAIT only catches a hang.
    for _ in 0..3 {
        match timeout(WAIT, a.append(Bytes::from_static(b"during"))).await {
            Ok(Err(ClusterError::Unavailable(_))) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    // A core publish is refused at once rather than queued.
    match timeout(WAIT, a.publish("t", Bytes::new())).await {
        Ok(Err(ClusterError::Unavailable(_))) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // A node that cannot reach NATS at start gets one line, without the password.
    let url = format!("nats://user:secret@127.0.0.1:{}", server.port);
    let err = NatsLink::connect(&[url], "b", options()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClusterError::Unavailable(_)), "{text}");
    assert!(
        !text.contains("secret") && text.contains("***@127.0.0.1"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ids_make_every_append_distinct() {
    // Two links of one node name do not dedup each other's appends.
    let Some(server) = NatsServer::start("cluster_nats") else {
        return;
    };
    let a1 = link(&server, "a").await;
    let a2 = link(&server, "a").await;
    let mut seqs = HashSet::new();
    for _ in 0..20 {
        assert!(seqs.insert(a1.append(Bytes::from_static(b"x")).await.unwrap()));
        assert!(seqs.insert(a2.append(Bytes::from_static(b"x")).await.unwrap()));
    }
    assert_eq!(a1.last_seq().await.unwrap(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_serving_resume_after_a_nats_restart() {
    let Some(mut server) = NatsServer::start("cluster_nats") else {
        return;
    };
    let a = link(&server, "a").await;
    let b = link(&server, "b").await;
    let mut deliveries = a.deliveries().unwrap();
    a.subscribe("chan.01").await.unwrap();
    b.serve("snapshot", Arc::new(|r: Bytes| r)).await.unwrap();
    server.restart();
    // Core NATS is at most once: b publishes until one gets through, once
    // both clients are back and a's subscription is renewed.
    let deadline = Instant::now() + WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0u32;
    let first = loop {
        assert!(Instant::now() < deadline, "no delivery after the restart");
        tokio::select! {
            d = deliveries.recv() => break d.unwrap(),
            _ = tick.tick() => {
                if b.publish("chan.01", Bytes::from(format!("p{sent}"))).await.is_ok() {
                    sent += 1;
                }
            }
        }
    };
    assert_eq!(first.topic, "chan.01");
    // b's responder is back too.
    let deadline = Instant::now() + WAIT;
    loop {
        match a
            .request("snapshot", Bytes::from_static(b"x"), Duration::from_secs(2))
            .await
        {
            Ok(Some(reply)) => {
                assert_eq!(&reply[..], b"x");
                break;
            }
            Ok(None) | Err(ClusterError::Unavailable(_)) if Instant::now() < deadline => {
                tick.tick().await;
            }
            other => panic!("request after restart: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_over_nats_keep_one_chat_state() {
    use chatmaster::store::{SqliteStore, Store, StoreOptions};
    use chatmaster::wire::protocol::{Notification, ServerPackage};
    use chatmaster::Server;
    use common::TestServer;

    let Some(nats) = NatsServer::start("cluster_nats") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("chat.db"), &StoreOptions::default()).unwrap());
    let mut nodes = Vec::new();
    for i in 0..3 {
        let name = format!("node-{i}");
        let (config, store) = (common::cluster::node_config(&name), Arc::clone(&store));
        let server = tokio::task::spawn_blocking(move || Server::with_store(config, store))
            .await
            .unwrap()
            .unwrap();
        let link = NatsLink::connect(&[nats.url()], &name, options())
            .await
            .unwrap();
        let server = server.join_cluster(link).await.unwrap();
        nodes.push(TestServer::run_server(server).await);
    }
    let mut ann = nodes[0].login("ann").await;
    let mut bob = nodes[1].login("bob").await;
    let mut cy = nodes[2].login("cy").await;
    for n in &nodes {
        common::until_state(n, "three users", |s| s.users.len() == 3).await;
    }
    cy.command("join", Some(serde_json::json!({"channel": "rust"})))
        .await
        .unwrap();
    for n in &nodes {
        common::until_state(n, "rust made", |s| {
            s.channels.iter().any(|c| c.name == "rust")
        })
        .await;
    }
    bob.command("join", Some(serde_json::json!({"channel": "rust"})))
        .await
        .unwrap();
    for n in &nodes {
        common::until_state(n, "rust with two members", |s| {
            s.channels
                .iter()
                .any(|c| c.name == "rust" && c.members.len() == 2)
        })
        .await;
    }
    // A message in rust from node 1 reaches node 2, not ann in general.
    let deadline = Instant::now() + WAIT;
    loop {
        match timeout(WAIT, cy.recv()).await.unwrap().unwrap() {
            ServerPackage::Notification(Notification::UserJoined { username, .. })
                if username == "bob" =>
            {
                break
            }
            _ => assert!(Instant::now() < deadline),
        }
    }
    bob.message("in rust").await.unwrap();
    loop {
        match timeout(WAIT, cy.recv()).await.unwrap().unwrap() {
            ServerPackage::Message(m) => {
                assert_eq!(
                    (m.message.as_str(), m.username.as_str()),
                    ("in rust", "bob")
                );
                break;
            }
            _ => assert!(Instant::now() < deadline),
        }
    }
    // Every replica is the same, and sound.
    let first = nodes[0].hub.snapshot();
    first.check_invariants().unwrap();
    for n in &nodes[1..] {
        assert_eq!(n.hub.snapshot(), first);
    }
    drop((ann.command("who", None).await, bob, cy));
    for n in nodes {
        n.shutdown().await;
    }
}

//! The load generator's own correctness: a short fanout run against an
//! in-process server must count every delivery exactly, and the login
//! scenario must log everybody in. Nothing here is timed.

mod common;

use chatmaster::bench::{self, Options, Scenario, Stop};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_counts_every_delivery() {
    let server = TestServer::start_default().await;
    let options = Options {
        clients: 20,
        channels: 2,
        senders: 2,
        stop: Stop::Messages(100),
        sample: 1,
        ..Options::fanout(server.addr.to_string())
    };
    let report = bench::run(&options).await.expect("bench run");
    assert_eq!(report.messages_sent, 100);
    // Two channels of 10 receivers + 1 sender: each message reaches the 10 others.
    assert_eq!(report.max_channel_members, 11);
    assert_eq!(report.deliveries_expected, 100 * 10);
    assert_eq!(report.deliveries_received, 1000, "{}", report.to_text());
    assert!(report.lossless(), "{}", report.to_text());
    assert!(!report.looks_throttled(), "{}", report.to_text());
    assert_eq!(report.unexpected_packages, 0);
    let latency = report.latency.expect("latency samples");
    assert_eq!(
        latency.samples, 1000,
        "every delivery decoded at --sample 1"
    );
    // The bench's connections are gone once the report is out.
    tokio::time::timeout(WAIT, async {
        while server.hub.user_count() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("bench users logged out");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_at_a_fixed_rate_with_sampling() {
    let server = TestServer::start_default().await;
    let options = Options {
        clients: 5,
        senders: 1,
        rate: 2000.0,
        stop: Stop::Messages(40),
        sample: 4,
        ..Options::fanout(server.addr.to_string())
    };
    let report = bench::run(&options).await.expect("bench run");
    assert_eq!(report.deliveries_expected, 40 * 5);
    assert_eq!(report.deliveries_received, 200, "{}", report.to_text());
    assert!(report.lossless());
    // One in four frames is decoded (counters start at different offsets).
    let samples = report.latency.expect("latency").samples;
    assert!((45..=55).contains(&samples), "{samples} samples");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_server_is_slow_lossless_and_reported() {
    // Default flood control: a 40-package burst, then 20 per second. The
    // server slows the sender down (it stops reading it); nothing is
    // refused, so everything arrives, later, and the report says why.
    let config = chatmaster::Config::default();
    let server = TestServer::start(config.clone()).await;
    let options = Options {
        clients: 1,
        senders: 1,
        stop: Stop::Messages(60),
        ..Options::fanout(server.addr.to_string())
    };
    let report = bench::run(&options).await.expect("bench run");
    assert_eq!(report.deliveries_received, 60, "{}", report.to_text());
    assert!(report.lossless(), "{}", report.to_text());
    // The bucket held at most a burst when the clock started.
    let floor = f64::from(60 - config.rate_burst) / f64::from(config.rate_per_sec);
    assert!(report.run_secs >= floor, "{}", report.to_text());
    assert!(report.looks_throttled(), "{}", report.to_text());
    assert!(report.to_text().contains("--rate-per-sec 0"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_storm_logs_everybody_in() {
    let server = TestServer::start_default().await;
    let options = Options {
        scenario: Scenario::Login,
        clients: 30,
        channels: 3,
        concurrency: 8,
        ..Options::fanout(server.addr.to_string())
    };
    let report = bench::run(&options).await.expect("bench run");
    assert_eq!(report.connections, 30);
    assert_eq!(report.latency.expect("login latencies").samples, 30);
    assert_eq!(report.connections_lost, 0);
    assert!(report.logins_per_sec.expect("logins/s") > 0.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_spreads_connections_over_the_also_addresses() {
    // Two servers that are not one cluster: each sender reaches only the
    // receivers on its own server, which shows who went where.
    let one = TestServer::start_default().await;
    let two = TestServer::start_default().await;
    let options = Options {
        clients: 4,
        channels: 1,
        senders: 2,
        stop: Stop::Messages(10),
        sample: 1,
        also: vec![two.addr.to_string()],
        ..Options::fanout(one.addr.to_string())
    };
    let report = bench::run(&options).await.expect("bench run");
    assert_eq!(report.messages_sent, 10);
    // r0, r2, s0 on one; r1, r3, s1 on two: 5 messages each reach 2 receivers.
    assert_eq!(report.deliveries_expected, 10 * 5);
    assert_eq!(report.deliveries_received, 10 * 2, "{}", report.to_text());
}

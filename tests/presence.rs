//! Presence in crowded channels: above `presence_limit` members, other
//! people's arrivals, departures and renames become a `channel_stats`
//! (at once when the limit is crossed, then at most once per interval and
//! only when the count changed); below it everything is announced.
//!
//! Most tests set an interval of an hour and step through intervals with
//! `Hub::presence_tick`, so what each one sends is exact; one test runs
//! the server's own presence task at a short interval.

mod common;

use std::time::Duration;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage};
use chatmaster::Config;
use common::*;
use serde_json::json;

/// A server whose channels count as crowded above `limit` members and
/// whose presence task never fires during a test.
async fn crowded_server(limit: usize) -> TestServer {
    TestServer::start(Config {
        presence_limit: limit,
        presence_interval: Duration::from_secs(3600),
        ..test_config()
    })
    .await
}

/// Logs `name` in and returns the connection plus its own `user_joined`
/// (users, users_total), read in place of [`TestServer::login`]'s check.
async fn login_seeing(server: &TestServer, name: &str) -> (ClientConnection, Vec<String>, usize) {
    let mut c = server.connect().await;
    assert!(c.login(name, WAIT).await.expect("login").status);
    match next_note(&mut c).await {
        Notification::UserJoined {
            username,
            channel,
            users: Some(users),
            users_total: Some(total),
            ..
        } => {
            assert_eq!((username.as_str(), channel.as_str()), (name, "general"));
            (c, users, total)
        }
        other => panic!("expected own user_joined, got {other:?}"),
    }
}

async fn expect_stats(c: &mut ClientConnection, channel: &str, total: usize) {
    assert_eq!(
        next_note(c).await,
        Notification::ChannelStats {
            channel: channel.into(),
            users_total: total,
        }
    );
}

async fn all_quiet(cs: &mut [&mut ClientConnection]) {
    for c in cs.iter_mut() {
        assert_quiet(c).await;
    }
}

fn check_state(server: &TestServer) {
    server.hub.snapshot().check_invariants().unwrap();
    server.hub.check_member_lists().unwrap();
}

#[tokio::test]
async fn above_the_limit_arrivals_departures_and_renames_become_counts() {
    let server = crowded_server(3).await;
    // Up to the limit (3 members) every arrival is announced.
    let (mut a, _, _) = login_seeing(&server, "alice").await;
    let (mut b, _, _) = login_seeing(&server, "bob").await;
    assert!(
        matches!(next_note(&mut a).await, Notification::UserJoined { username, users: None, .. } if username == "bob")
    );
    let (mut c, _, total) = login_seeing(&server, "carol").await;
    assert_eq!(total, 3);
    for x in [&mut a, &mut b] {
        assert!(
            matches!(next_note(x).await, Notification::UserJoined { username, users: None, .. } if username == "carol")
        );
    }

    // The fourth crosses the limit: the others get the count at once,
    // instead of a user_joined; the joiner's own copy is as always.
    let (mut d, users, total) = login_seeing(&server, "dave").await;
    assert_eq!((users.len(), total), (4, 4));
    for x in [&mut a, &mut b, &mut c] {
        expect_stats(x, "general", 4).await;
    }
    all_quiet(&mut [&mut a, &mut b, &mut c, &mut d]).await;

    // Above the limit an arrival is only counted...
    let (mut e, users, total) = login_seeing(&server, "Eve").await;
    assert_eq!(users, ["alice", "bob", "carol", "dave", "Eve"]);
    assert_eq!(total, 5);
    all_quiet(&mut [&mut a, &mut b, &mut c, &mut d, &mut e]).await;
    // ...until the next interval, which tells every member once.
    server.hub.presence_tick();
    for x in [&mut a, &mut b, &mut c, &mut d, &mut e] {
        expect_stats(x, "general", 5).await;
    }
    server.hub.presence_tick();
    all_quiet(&mut [&mut a, &mut b, &mut c, &mut d, &mut e]).await;

    // A rename is told to the renamed user only.
    e.command("rename", Some(json!({"username": "eve2"})))
        .await
        .unwrap();
    assert_eq!(
        next_note(&mut e).await,
        Notification::UserRename {
            old_username: "Eve".into(),
            new_username: "eve2".into(),
        }
    );
    all_quiet(&mut [&mut a, &mut b, &mut c, &mut d, &mut e]).await;

    // A departure above the limit is counted too; the leaver gets its own
    // user_joined in the new channel as always.
    e.command("join", Some(json!({"channel": "side"})))
        .await
        .unwrap();
    assert!(
        matches!(next_note(&mut e).await, Notification::UserJoined { channel, users: Some(_), .. } if channel == "side")
    );
    all_quiet(&mut [&mut a, &mut b, &mut c, &mut d]).await;
    server.hub.presence_tick();
    for x in [&mut a, &mut b, &mut c, &mut d] {
        expect_stats(x, "general", 4).await;
    }
    all_quiet(&mut [&mut e]).await;
    check_state(&server);

    // The list the joiner gets follows renames and departures.
    let (f, users, total) = login_seeing(&server, "frank").await;
    assert_eq!(users, ["alice", "bob", "carol", "dave", "frank"]);
    assert_eq!(total, 5);
    // frank comes and goes within one interval: the count is what the
    // members were last told, so the interval sends nothing.
    drop(f);
    until_state(&server, "frank gone", |s| s.users.len() == 5).await;
    server.hub.presence_tick();
    all_quiet(&mut [&mut a, &mut b, &mut c, &mut d, &mut e]).await;

    // dave's disconnect takes general back to the limit: the count once,
    // at once, and from then on everything is announced again.
    drop(d);
    for x in [&mut a, &mut b, &mut c] {
        expect_stats(x, "general", 3).await;
    }
    server.hub.presence_tick();
    all_quiet(&mut [&mut a, &mut b, &mut c]).await;
    c.command("rename", Some(json!({"username": "caroline"})))
        .await
        .unwrap();
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(
            next_note(x).await,
            Notification::UserRename {
                old_username: "carol".into(),
                new_username: "caroline".into(),
            }
        );
    }
    c.command("join", Some(json!({"channel": "side"})))
        .await
        .unwrap();
    for x in [&mut a, &mut b] {
        assert_eq!(
            next_note(x).await,
            Notification::UserLeft {
                kicked: None,
                username: "caroline".into(),
                channel: "general".into(),
            }
        );
    }
    check_state(&server);
    server.shutdown().await;
}

#[tokio::test]
async fn ownership_changes_are_told_in_a_crowded_channel() {
    let server = crowded_server(2).await;
    let mut owner = server.login("owner").await;
    owner
        .command("join", Some(json!({"channel": "room"})))
        .await
        .unwrap();
    let _ = next_note(&mut owner).await;
    let mut members = Vec::new();
    for name in ["m1", "m2", "m3"] {
        let mut m = server.login(name).await;
        m.command("join", Some(json!({"channel": "room"})))
            .await
            .unwrap();
        match next_note(&mut m).await {
            Notification::UserJoined { owner, .. } => assert_eq!(owner.as_deref(), Some("owner")),
            other => panic!("expected own user_joined, got {other:?}"),
        }
        members.push(m);
    }
    // m1 was announced to the owner; m2 took room over the limit, which
    // its earlier members were told (m2 learnt it from its own copy).
    assert!(
        matches!(next_note(&mut owner).await, Notification::UserJoined { username, .. } if username == "m1")
    );
    expect_stats(&mut owner, "room", 3).await;
    expect_stats(&mut members[0], "room", 3).await;
    assert_quiet(&mut owner).await;
    // room has 4 members, above the limit of 2: the owner's departure is
    // only counted, but the new owner is named to everyone.
    owner.command("leave", None).await.unwrap();
    let _ = next_note(&mut owner).await; // own user_joined for general
    for m in &mut members {
        assert_eq!(
            next_note(m).await,
            Notification::ChannelUpdate {
                topic: None,
                channel: "room".into(),
                private: false,
                owner: Some("m1".into()),
            }
        );
        assert_quiet(m).await;
    }
    check_state(&server);
    server.shutdown().await;
}

#[tokio::test]
async fn a_capped_list_of_a_crowded_channel_stays_sorted_and_current() {
    // Lists capped at 3 names over a channel of up to 8: arrivals and
    // departures before and after the end of the list.
    let server = TestServer::start(Config {
        presence_limit: 2,
        max_list_names: 3,
        presence_interval: Duration::from_secs(3600),
        ..test_config()
    })
    .await;
    let mut held = Vec::new();
    for name in ["m", "c", "x", "a", "q", "B"] {
        let (c, users, total) = login_seeing(&server, name).await;
        let mut expected: Vec<String> = held
            .iter()
            .map(|(n, _): &(String, ClientConnection)| n.clone())
            .chain([name.to_owned()])
            .collect();
        expected.sort_by_key(|n| n.to_lowercase());
        expected.truncate(3);
        assert_eq!((users, total), (expected, held.len() + 1), "{name}");
        held.push((name.to_owned(), c));
        check_state(&server);
    }
    // "a" goes: the list must move on to the next name.
    let gone = held.remove(3);
    drop(gone);
    until_state(&server, "a gone", |s| s.users.len() == 5).await;
    let (_late, users, total) = login_seeing(&server, "z").await;
    assert_eq!(
        (users, total),
        (vec!["B".into(), "c".into(), "m".into()], 6)
    );
    check_state(&server);
    server.shutdown().await;
}

#[tokio::test]
async fn the_presence_task_sends_counts_on_its_own() {
    let server = TestServer::start(Config {
        presence_limit: 1,
        presence_interval: Duration::from_millis(20),
        ..test_config()
    })
    .await;
    let (mut a, _, _) = login_seeing(&server, "alice").await;
    let (mut b, _, _) = login_seeing(&server, "bob").await;
    expect_stats(&mut a, "general", 2).await; // crossing, at once
    let (_c, _, _) = login_seeing(&server, "carol").await;
    // Nobody calls presence_tick here: the server's task does, within WAIT.
    for x in [&mut a, &mut b] {
        match next(x).await {
            ServerPackage::Notification(Notification::ChannelStats {
                channel,
                users_total,
            }) => assert_eq!((channel.as_str(), users_total), ("general", 3)),
            other => panic!("expected channel_stats, got {other:?}"),
        }
    }
    // And the task ends with the server.
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_storm_can_stay_in_general() {
    use chatmaster::bench::{self, Options, Scenario, Stop};
    let server = crowded_server(5).await;
    let clients = 40;
    let options = Options {
        scenario: Scenario::Idle,
        clients,
        concurrency: 4,
        stay_in_general: true,
        // Held long enough to look; the check below ends as soon as it holds.
        stop: Stop::Duration(Duration::from_secs(3)),
        ..Options::fanout(server.addr.to_string())
    };
    // Every connection ends up in general at once, and no channel of the
    // bench's was created.
    let watch = async {
        until_state(&server, "the whole storm in general", |s| {
            s.users.len() == clients
                && s.users.iter().all(|(_, c)| c == "general")
                && s.channels.len() == 1
        })
        .await;
        check_state(&server);
    };
    let (report, ()) = tokio::join!(bench::run(&options), watch);
    let report = report.expect("bench run");
    assert_eq!(report.connections, clients);
    assert_eq!(report.connections_lost, 0);
    assert!(report.logins_per_sec.is_some());
    server.shutdown().await;
}

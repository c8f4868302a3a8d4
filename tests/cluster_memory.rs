//! Several nodes as one chat, in one process: three (or four) real
//! servers on loopback ports, each its own hub, sharing one in-process
//! carrier and one store, spoken to with real bytes.

mod common;

use std::time::Duration;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::{Notification, ServerPackage};
use common::cluster::Nodes;
use common::{TestServer, WAIT};
use serde_json::json;

/// Logs `name` in on `node`, consuming its login traffic.
async fn login(node: &TestServer, name: &str) -> ClientConnection {
    node.login(name).await
}

/// Reads packages until one matches `f`, failing after [`WAIT`] each.
async fn until(
    c: &mut ClientConnection,
    what: &str,
    f: impl Fn(&ServerPackage) -> bool,
) -> ServerPackage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.recv_timeout(left.min(WAIT)).await {
            Ok(p) if f(&p) => return p,
            Ok(_) => {}
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

fn is_message(p: &ServerPackage, text: &str) -> bool {
    matches!(p, ServerPackage::Message(m) if m.message == text)
}

fn is_joined(p: &ServerPackage, who: &str, channel: &str) -> bool {
    matches!(p, ServerPackage::Notification(Notification::UserJoined { username, channel: c, .. }) if username == who && c == channel)
}

fn is_left(p: &ServerPackage, who: &str) -> bool {
    matches!(p, ServerPackage::Notification(Notification::UserLeft { username, .. }) if username == who)
}

fn is_error(p: &ServerPackage, kind: &str) -> bool {
    matches!(p, ServerPackage::Error(e) if e.error_type == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_three_nodes_chat_as_one() {
    let nodes = Nodes::start(3).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let mut bob = login(&nodes.nodes[1], "bob").await;
    until(&mut ann, "bob arriving", |p| is_joined(p, "bob", "general")).await;
    let mut cy = login(&nodes.nodes[2], "cy").await;
    until(&mut ann, "cy arriving", |p| is_joined(p, "cy", "general")).await;
    until(&mut bob, "cy arriving", |p| is_joined(p, "cy", "general")).await;
    nodes
        .until_all("three users everywhere", |s| s.users.len() == 3)
        .await;

    ann.message("hello from node 0").await.unwrap();
    until(&mut bob, "ann's message", |p| {
        is_message(p, "hello from node 0")
    })
    .await;
    until(&mut cy, "ann's message", |p| {
        is_message(p, "hello from node 0")
    })
    .await;

    // A new channel, made on node 1, joined from node 2.
    bob.command("join", Some(json!({"channel": "rust"})))
        .await
        .unwrap();
    until(&mut bob, "own join", |p| is_joined(p, "bob", "rust")).await;
    cy.command("join", Some(json!({"channel": "rust"})))
        .await
        .unwrap();
    until(&mut cy, "own join", |p| is_joined(p, "cy", "rust")).await;
    until(&mut bob, "cy joining rust", |p| is_joined(p, "cy", "rust")).await;
    cy.message("in rust").await.unwrap();
    until(&mut bob, "cy's message in rust", |p| {
        is_message(p, "in rust")
    })
    .await;

    // who and channels list everyone, from any node.
    ann.command("who", None).await.unwrap();
    let who = until(&mut ann, "who", |p| {
        matches!(p, ServerPackage::Notification(Notification::Who { .. }))
    })
    .await;
    let ServerPackage::Notification(Notification::Who {
        users, users_total, ..
    }) = who
    else {
        unreachable!()
    };
    assert_eq!(users_total, 3);
    let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["ann", "bob", "cy"]);
    ann.command("channels", None).await.unwrap();
    let list = until(&mut ann, "channels", |p| {
        matches!(
            p,
            ServerPackage::Notification(Notification::ChannelList { .. })
        )
    })
    .await;
    let ServerPackage::Notification(Notification::ChannelList { channels, .. }) = list else {
        unreachable!()
    };
    assert_eq!(channels, ["general", "rust"]);

    // A rename on node 2 is seen on node 1; a leave too.
    cy.command("rename", Some(json!({"username": "cyrus"})))
        .await
        .unwrap();
    until(&mut bob, "cy's rename", |p| matches!(p, ServerPackage::Notification(Notification::UserRename { old_username, new_username }) if old_username == "cy" && new_username == "cyrus")).await;
    cy.command("leave", None).await.unwrap();
    until(&mut bob, "cyrus leaving rust", |p| is_left(p, "cyrus")).await;
    until(&mut ann, "cyrus back in general", |p| {
        is_joined(p, "cyrus", "general")
    })
    .await;

    // Every replica agrees.
    nodes
        .until_all("rust holds bob alone", |s| {
            s.channels
                .iter()
                .any(|c| c.name == "rust" && c.members == ["bob"])
        })
        .await;
    let first = nodes.nodes[0].hub.snapshot();
    for n in &nodes.nodes[1..] {
        assert_eq!(n.hub.snapshot(), first);
    }
    first.check_invariants().unwrap();

    // A departure is seen everywhere.
    bob.command("leave", None).await.unwrap();
    until(&mut ann, "bob back in general", |p| {
        is_joined(p, "bob", "general")
    })
    .await;
    drop(bob);
    until(&mut ann, "bob leaving", |p| is_left(p, "bob")).await;
    nodes.until_all("bob gone", |s| s.users.len() == 2).await;
    drop((ann, cy));
    nodes.shutdown().await;
}

fn is_note(p: &ServerPackage, f: impl Fn(&Notification) -> bool) -> bool {
    matches!(p, ServerPackage::Notification(n) if f(n))
}

/// Sends a command and waits for a package matching `f` in answer.
async fn ask(
    c: &mut ClientConnection,
    command: &str,
    params: serde_json::Value,
    what: &str,
    f: impl Fn(&ServerPackage) -> bool,
) -> ServerPackage {
    c.command(command, Some(params)).await.unwrap();
    until(c, what, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_nodes_logging_in_one_name_at_once_exactly_one_wins() {
    let nodes = Nodes::start(3).await;
    for round in 0..20 {
        let name = format!("racer{round}");
        let (a, b) = (&nodes.nodes[round % 3], &nodes.nodes[(round + 1) % 3]);
        let (mut x, mut y) = (a.connect().await, b.connect().await);
        common::next_login_request(&mut x).await;
        common::next_login_request(&mut y).await;
        let params = json!({"username": name});
        let (sx, sy) = tokio::join!(
            x.command("login", Some(params.clone())),
            y.command("login", Some(params.clone()))
        );
        sx.unwrap();
        sy.unwrap();
        let (px, py) = tokio::join!(common::next_session(&mut x), common::next_session(&mut y));
        assert!(
            px.status != py.status,
            "round {round}: exactly one login wins: {px:?} {py:?}"
        );
        let (mut winner, mut loser) = if px.status { (x, y) } else { (y, x) };
        // The loser is asked again, and may then take another name.
        common::next_login_request(&mut loser).await;
        let other = format!("other{round}");
        loser
            .command("login", Some(json!({"username": other})))
            .await
            .unwrap();
        assert!(common::next_session(&mut loser).await.status);
        until(&mut winner, "the other one arriving", |p| {
            is_joined(p, &other, "general")
        })
        .await;
        nodes
            .until_all("both logged in everywhere", |s| s.users.len() == 2)
            .await;
        drop((winner, loser));
        nodes
            .until_all("both gone everywhere", |s| s.users.is_empty())
            .await;
    }
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_cross_nodes_live_and_from_the_backlog() {
    let nodes = Nodes::start(3).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let mut bob = login(&nodes.nodes[1], "bob").await;
    // Node 0 must know bob is online.
    nodes.until_users(2).await;
    ann.command(
        "direct",
        Some(json!({"username": "bob", "message": "psst"})),
    )
    .await
    .unwrap();
    let got = until(&mut bob, "ann's direct message", |p| is_message(p, "psst")).await;
    let ServerPackage::Message(m) = got else {
        unreachable!()
    };
    assert_eq!((m.username.as_str(), m.to.as_deref()), ("ann", Some("bob")));
    until(&mut ann, "its acknowledgement", |p| {
        is_note(p, |n| matches!(n, Notification::MessageSent { .. }))
    })
    .await;

    // An account offline: kept in the shared store, delivered by the node
    // where it next logs in.
    common::add_account(&nodes.nodes[2], "dora", "secret-password").await;
    for n in &nodes.nodes {
        let hub = n.hub.clone();
        tokio::task::spawn_blocking(move || {
            hub.accounts()
                .index()
                .refresh(hub.store().as_ref())
                .expect("refresh the index")
        })
        .await
        .unwrap();
    }
    bob.command(
        "direct",
        Some(json!({"username": "dora", "message": "while you were away"})),
    )
    .await
    .unwrap();
    until(&mut bob, "its acknowledgement", |p| {
        is_note(p, |n| matches!(n, Notification::MessageSent { .. }))
    })
    .await;
    let mut dora = common::login_account(&nodes.nodes[2], "dora", "secret-password").await;
    let got = until(&mut dora, "the kept message", |p| {
        is_message(p, "while you were away")
    })
    .await;
    let ServerPackage::Message(m) = got else {
        unreachable!()
    };
    assert_eq!((m.username.as_str(), m.offline), ("bob", Some(true)));
    // And live from node 0 to node 2 now.
    ann.command(
        "direct",
        Some(json!({"username": "dora", "message": "live"})),
    )
    .await
    .unwrap();
    until(&mut dora, "ann's live message", |p| is_message(p, "live")).await;
    drop((ann, bob, dora));
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_is_the_same_on_every_node() {
    let nodes = Nodes::start(3).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let mut bob = login(&nodes.nodes[1], "bob").await;
    let mut cy = login(&nodes.nodes[2], "cy").await;
    ask(
        &mut ann,
        "join",
        json!({"channel": "mods"}),
        "own join",
        |p| is_joined(p, "ann", "mods"),
    )
    .await;
    ask(
        &mut bob,
        "join",
        json!({"channel": "mods"}),
        "own join",
        |p| is_joined(p, "bob", "mods"),
    )
    .await;
    ask(
        &mut cy,
        "join",
        json!({"channel": "mods"}),
        "own join",
        |p| is_joined(p, "cy", "mods"),
    )
    .await;
    ann.command("topic", Some(json!({"topic": "be nice"})))
        .await
        .unwrap();
    until(&mut cy, "the topic", |p| {
        is_note(
            p,
            |n| matches!(n, Notification::ChannelUpdate { topic: Some(t), .. } if t == "be nice"),
        )
    })
    .await;
    ann.command("kick", Some(json!({"username": "cy", "reason": "test"})))
        .await
        .unwrap();
    until(&mut cy, "being kicked", |p| {
        is_note(p, |n| matches!(n, Notification::Kicked { .. }))
    })
    .await;
    until(&mut bob, "cy put out", |p| is_left(p, "cy")).await;
    ann.command("ban", Some(json!({"username": "cy"})))
        .await
        .unwrap();
    until(&mut ann, "the ban", |p| {
        is_note(p, |n| matches!(n, Notification::Banned { .. }))
    })
    .await;
    nodes
        .until_all("cy banned everywhere", |s| {
            s.channels
                .iter()
                .any(|c| c.name == "mods" && c.bans.iter().any(|b| b.name == "cy"))
        })
        .await;
    ask(
        &mut cy,
        "join",
        json!({"channel": "mods"}),
        "a refusal",
        |p| is_error(p, "join"),
    )
    .await;
    ann.command("private", None).await.unwrap();
    until(&mut bob, "mods private", |p| {
        is_note(p, |n| {
            matches!(n, Notification::ChannelUpdate { private: true, .. })
        })
    })
    .await;
    ann.command("unban", Some(json!({"username": "cy"})))
        .await
        .unwrap();
    until(&mut ann, "the unban", |p| {
        is_note(p, |n| matches!(n, Notification::Unbanned { .. }))
    })
    .await;
    ask(
        &mut cy,
        "join",
        json!({"channel": "mods"}),
        "a refusal",
        |p| is_error(p, "join"),
    )
    .await;
    ann.command("invite", Some(json!({"username": "cy"})))
        .await
        .unwrap();
    until(&mut cy, "the invitation", |p| {
        is_note(p, |n| matches!(n, Notification::Invited { .. }))
    })
    .await;
    ask(
        &mut cy,
        "join",
        json!({"channel": "mods"}),
        "own join",
        |p| is_joined(p, "cy", "mods"),
    )
    .await;
    ann.command("transfer", Some(json!({"username": "bob"})))
        .await
        .unwrap();
    until(&mut cy, "bob owning mods", |p| {
        is_note(
            p,
            |n| matches!(n, Notification::ChannelUpdate { owner: Some(o), .. } if o == "bob"),
        )
    })
    .await;
    nodes
        .until_all("bob owns mods everywhere", |s| {
            s.channels
                .iter()
                .any(|c| c.name == "mods" && c.owner.as_deref() == Some("bob") && c.private)
        })
        .await;
    let first = nodes.nodes[0].hub.snapshot();
    for n in &nodes.nodes[1..] {
        assert_eq!(n.hub.snapshot(), first);
    }
    bob.command("delete_channel", None).await.unwrap();
    for c in [&mut ann, &mut cy] {
        until(c, "mods deleted", |p| {
            is_note(p, |n| matches!(n, Notification::ChannelDeleted { .. }))
        })
        .await;
    }
    nodes
        .until_all("mods gone everywhere, all in general", |s| {
            s.channels.len() == 1 && s.users.iter().all(|(_, c)| c == "general")
        })
        .await;
    let first = nodes.nodes[0].hub.snapshot();
    first.check_invariants().unwrap();
    for n in &nodes.nodes[1..] {
        assert_eq!(n.hub.snapshot(), first);
    }
    drop((ann, bob, cy));
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_is_declared_gone_and_its_users_leave() {
    let mut nodes = Nodes::start(3).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let mut zed = login(&nodes.nodes[2], "zed").await;
    until(&mut ann, "zed arriving", |p| is_joined(p, "zed", "general")).await;
    nodes.carrier.cut("node-2");
    // Within the lease (and a heartbeat or two), zed leaves on the others.
    until(&mut ann, "zed leaving", |p| is_left(p, "zed")).await;
    common::until_state(&nodes.nodes[1], "zed gone on node 1", |s| {
        s.users.iter().all(|(n, _)| n != "zed")
    })
    .await;
    // Meanwhile node 2's id slot lapsed, and a new node takes it.
    let fourth = nodes.add().await;
    let mut dan = login(&nodes.nodes[fourth], "dan").await;
    // Back in touch, node 2 learns it was declared gone: zed is told and
    // let go, and the node serves again as a new one.
    nodes.carrier.heal("node-2");
    until(&mut zed, "the reason", |p| is_error(p, "server")).await;
    common::expect_closed(&mut zed).await;
    let mut zed = login(&nodes.nodes[2], "zed").await;
    until(&mut ann, "zed back", |p| is_joined(p, "zed", "general")).await;
    nodes.until_users(3).await;
    // Node 2 gave up the slot node 3 holds now (at its first heartbeat
    // back): their ids never clash.
    let taken = nodes.nodes[fourth].hub.id_slot();
    common::until_polled("node 2 to give up node 3's slot", WAIT, || {
        let slot = nodes.nodes[2].hub.id_slot();
        if slot == taken {
            Err(slot)
        } else {
            Ok(())
        }
    })
    .await;
    zed.message("back 0").await.unwrap();
    let z = next_ack(&mut zed).await;
    dan.message("new 0").await.unwrap();
    let d = next_ack(&mut dan).await;
    assert_ne!(z % 16, d % 16, "ids {z} and {d} from one slot");
    until(&mut ann, "zed's message", |p| is_message(p, "back 0")).await;
    drop((ann, zed, dan));
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_later_starts_from_a_snapshot() {
    let mut nodes = Nodes::start(3).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let mut bob = login(&nodes.nodes[1], "bob").await;
    ask(
        &mut ann,
        "join",
        json!({"channel": "late"}),
        "own join",
        |p| is_joined(p, "ann", "late"),
    )
    .await;
    ask(
        &mut bob,
        "away",
        json!({"message": "lunch"}),
        "away set",
        |p| is_note(p, |n| matches!(n, Notification::Away { .. })),
    )
    .await;
    // A guest channel's message, stored before the fourth node starts:
    // a node joining live peers must not purge it as a channel gone.
    ann.message("said before the fourth node").await.unwrap();
    until(&mut ann, "its message_sent", |p| {
        is_note(p, |n| matches!(n, Notification::MessageSent { .. }))
    })
    .await;
    let fourth = nodes.add().await;
    let mut dan = login(&nodes.nodes[fourth], "dan").await;
    let joined = ask(
        &mut dan,
        "join",
        json!({"channel": "late"}),
        "own join",
        |p| is_joined(p, "dan", "late"),
    )
    .await;
    let ServerPackage::Notification(Notification::UserJoined {
        users_total, owner, ..
    }) = joined
    else {
        unreachable!()
    };
    assert_eq!((users_total, owner.as_deref()), (Some(2), Some("ann")));
    until(&mut ann, "dan arriving", |p| is_joined(p, "dan", "late")).await;
    ann.message("welcome").await.unwrap();
    until(&mut dan, "ann's message", |p| is_message(p, "welcome")).await;
    let page = common::memory::history(&mut dan, json!({"channel": "late"})).await;
    // (Only the first: "welcome" may not be committed yet.)
    assert_eq!(
        page.texts().first().copied(),
        Some("said before the fourth node"),
        "the fourth node's start kept the live channel's messages"
    );
    let whois = ask(
        &mut dan,
        "whois",
        json!({"username": "bob"}),
        "whois",
        |p| is_note(p, |n| matches!(n, Notification::Whois { .. })),
    )
    .await;
    assert!(
        matches!(whois, ServerPackage::Notification(Notification::Whois { online: true, away: Some(a), .. }) if a == "lunch")
    );
    nodes
        .until_all("three users everywhere", |s| s.users.len() == 3)
        .await;
    let first = nodes.nodes[0].hub.snapshot();
    for n in &nodes.nodes[1..] {
        assert_eq!(n.hub.snapshot(), first);
    }
    drop((ann, bob, dan));
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_senders_messages_arrive_in_order_on_every_node() {
    let nodes = Nodes::start(3).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let bob = login(&nodes.nodes[1], "bob").await;
    let cy = login(&nodes.nodes[2], "cy").await;
    nodes.until_all("three users", |s| s.users.len() == 3).await;
    const N: usize = 2000;
    let reader = |mut c: ClientConnection| {
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity(N);
            while seen.len() < N {
                match c.recv_timeout(Duration::from_secs(20)).await {
                    Ok(ServerPackage::Message(m)) => seen.push(m.message),
                    Ok(_) => {}
                    Err(e) => panic!("after {} messages: {e}", seen.len()),
                }
            }
            seen
        })
    };
    let (b, c) = (reader(bob), reader(cy));
    for batch in 0..N / 100 {
        for i in 0..100 {
            ann.message(&format!("m{}", batch * 100 + i)).await.unwrap();
        }
        let mut acks = 0;
        while acks < 100 {
            if is_note(&common::next(&mut ann).await, |n| {
                matches!(n, Notification::MessageSent { .. })
            }) {
                acks += 1;
            }
        }
    }
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(b.await.unwrap(), expected);
    assert_eq!(c.await.unwrap(), expected);
    drop(ann);
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_carrier_is_down_changes_are_refused_and_then_resume() {
    let nodes = Nodes::start(3).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let mut bob = login(&nodes.nodes[1], "bob").await;
    nodes.until_all("two users", |s| s.users.len() == 2).await;
    nodes.carrier.stop();
    let refused = ask(
        &mut ann,
        "join",
        json!({"channel": "down"}),
        "a refusal",
        |p| is_error(p, "join"),
    )
    .await;
    let ServerPackage::Error(e) = refused else {
        unreachable!()
    };
    assert!(e.message.contains("cluster is unavailable"), "{e:?}");
    let refused = ask(
        &mut bob,
        "away",
        json!({"message": "x"}),
        "a refusal",
        |p| is_error(p, "away"),
    )
    .await;
    assert!(matches!(refused, ServerPackage::Error(_)));
    // A login cannot be decided meanwhile.
    let mut late = nodes.nodes[2].connect().await;
    common::next_login_request(&mut late).await;
    late.command("login", Some(json!({"username": "late"})))
        .await
        .unwrap();
    assert!(!common::next_session(&mut late).await.status);
    // A channel message is stored (and acknowledged) all the same.
    ann.message("kept").await.unwrap();
    until(&mut ann, "its acknowledgement", |p| {
        is_note(p, |n| matches!(n, Notification::MessageSent { .. }))
    })
    .await;
    nodes.carrier.restart();
    // Nothing changed meanwhile, and everything works again.
    nodes
        .until_all("nobody moved", |s| {
            s.users.len() == 2 && s.users.iter().all(|(_, c)| c == "general")
        })
        .await;
    ask(
        &mut ann,
        "join",
        json!({"channel": "up"}),
        "own join",
        |p| is_joined(p, "ann", "up"),
    )
    .await;
    ask(
        &mut bob,
        "join",
        json!({"channel": "up"}),
        "own join",
        |p| is_joined(p, "bob", "up"),
    )
    .await;
    ann.message("after").await.unwrap();
    until(&mut bob, "ann's message", |p| is_message(p, "after")).await;
    drop((ann, bob, late));
    nodes.shutdown().await;
}

/// The id of the next `message_sent`.
async fn next_ack(c: &mut ClientConnection) -> i64 {
    match until(c, "an acknowledgement", |p| {
        is_note(p, |n| matches!(n, Notification::MessageSent { .. }))
    })
    .await
    {
        ServerPackage::Notification(Notification::MessageSent { id, .. }) => id,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletions_reach_other_nodes() {
    let nodes = Nodes::start(3).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let mut bob = login(&nodes.nodes[1], "bob").await;
    nodes.until_users(2).await;
    ann.message("typo").await.unwrap();
    let id = next_ack(&mut ann).await;
    until(&mut bob, "the message", |p| is_message(p, "typo")).await;
    ann.command("edit", Some(json!({"id": id, "message": "fixed"})))
        .await
        .unwrap();
    until(&mut bob, "the edit", |p| {
        is_note(p, |n| matches!(n, Notification::MessageEdited { id: i, message, .. } if *i == id && message == "fixed"))
    })
    .await;
    ann.command(
        "direct",
        Some(json!({"username": "bob", "message": "secret"})),
    )
    .await
    .unwrap();
    let direct = next_ack(&mut ann).await;
    until(&mut bob, "the direct message", |p| is_message(p, "secret")).await;
    ann.command("delete", Some(json!({"id": direct})))
        .await
        .unwrap();
    until(&mut bob, "the deletion", |p| {
        is_note(
            p,
            |n| matches!(n, Notification::MessageDeleted { id: i, .. } if *i == direct),
        )
    })
    .await;
    drop((ann, bob));
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_on_one_node_leaves_on_every_node() {
    use tokio::io::AsyncWriteExt;
    let nodes = Nodes::start_with(3, |c| c.outbound_queue = 16).await;
    let mut sender = login(&nodes.nodes[0], "sender").await;
    let mut watcher = login(&nodes.nodes[2], "watcher").await;
    // A member of node 1 that never reads, with a tiny receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(nodes.nodes[1].addr).await.unwrap();
    slow.write_all(&common::login_frame("slow")).await.unwrap();
    until(&mut watcher, "slow arriving", |p| {
        is_joined(p, "slow", "general")
    })
    .await;
    // Text that does not compress, so the slow member's buffers fill soon.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let text: String = (0..3000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char::from(b'!' + (seed % 90) as u8)
        })
        .collect();
    let mut sent = 0;
    loop {
        sender.message(&text).await.unwrap();
        next_ack(&mut sender).await;
        sent += 1;
        assert!(sent < 20_000, "slow consumer never dropped");
        // The watcher keeps up: it sees each message, or the departure.
        let seen = until(&mut watcher, "the message or the departure", |p| {
            matches!(p, ServerPackage::Message(_)) || is_left(p, "slow")
        })
        .await;
        if is_left(&seen, "slow") {
            break;
        }
    }
    nodes
        .until_all("slow gone everywhere", |s| {
            s.users.iter().all(|(n, _)| n != "slow")
        })
        .await;
    nodes.same_everywhere().unwrap();
    drop((sender, watcher, slow));
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_shows_its_users_leaving_at_once() {
    // A lease far longer than the test: only the leaving node's own word
    // can make its users leave in time.
    let mut nodes = Nodes::start_with(3, |c| c.cluster_lease = Duration::from_secs(600)).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let _zed = login(&nodes.nodes[2], "zed").await;
    until(&mut ann, "zed arriving", |p| is_joined(p, "zed", "general")).await;
    let leaving = nodes.nodes.remove(2);
    leaving.shutdown().await;
    until(&mut ann, "zed leaving", |p| is_left(p, "zed")).await;
    nodes.until_users(1).await;
    drop(ann);
    nodes.shutdown().await;
}

/// A node whose follower lags behind: what another node sends the moment
/// it has applied an arrival still reaches the newcomer there. The lagging
/// node follows the channel before it appends the join, and holds what
/// comes before it has applied as far as the sender's node had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_the_moment_of_a_join_reaches_a_node_behind() {
    let nodes = Nodes::start(3).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let mut bob = login(&nodes.nodes[1], "bob").await;
    let mut cy = login(&nodes.nodes[2], "cy").await;
    nodes.until_users(3).await;
    for c in [&mut ann, &mut cy] {
        c.command("join", Some(json!({"channel": "room"})))
            .await
            .unwrap();
    }
    until(&mut cy, "own join", |p| is_joined(p, "cy", "room")).await;
    nodes
        .until_all("ann and cy in room", |s| {
            s.channels
                .iter()
                .any(|c| c.name == "room" && c.members.len() == 2)
        })
        .await;

    // Node 1 is first in room with bob, and applies nothing for a while.
    nodes.carrier.lag("node-1", true);
    bob.command("join", Some(json!({"channel": "room"})))
        .await
        .unwrap();
    // Node 0 applies the join: ann sees bob arrive, and answers at once.
    until(&mut ann, "bob arriving", |p| is_joined(p, "bob", "room")).await;
    ann.message("welcome, bob").await.unwrap();
    // Node 2 has it: node 0 has published it, before node 1 applied the join.
    until(&mut cy, "ann's welcome", |p| is_message(p, "welcome, bob")).await;
    nodes.carrier.lag("node-1", false);
    until(&mut bob, "own join", |p| is_joined(p, "bob", "room")).await;
    until(&mut bob, "ann's welcome", |p| is_message(p, "welcome, bob")).await;
    drop((ann, bob, cy));
    nodes.shutdown().await;
}

/// The other way round: a newcomer speaks at once, and a node that has
/// not applied the arrival yet neither drops the message as a stranger's
/// nor delivers it before the arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomers_first_words_wait_for_its_arrival_on_a_node_behind() {
    let nodes = Nodes::start(2).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let mut bob = login(&nodes.nodes[1], "bob").await;
    nodes.until_users(2).await;
    ann.command("join", Some(json!({"channel": "room"})))
        .await
        .unwrap();
    until(&mut ann, "own join", |p| is_joined(p, "ann", "room")).await;
    nodes
        .until_all("ann in room", |s| {
            s.channels
                .iter()
                .any(|c| c.name == "room" && c.members == ["ann"])
        })
        .await;

    nodes.carrier.lag("node-0", true);
    bob.command("join", Some(json!({"channel": "room"})))
        .await
        .unwrap();
    until(&mut bob, "own join", |p| is_joined(p, "bob", "room")).await;
    bob.message("hello room").await.unwrap();
    until(&mut bob, "its acknowledgement", |p| {
        is_note(p, |n| matches!(n, Notification::MessageSent { .. }))
    })
    .await;
    nodes.carrier.lag("node-0", false);
    // The arrival first, then the words: nothing in between, nothing lost.
    let mut seen = Vec::new();
    loop {
        let p = ann.recv_timeout(WAIT).await.expect("ann's traffic");
        if is_joined(&p, "bob", "room") {
            seen.push("joined");
        } else if is_message(&p, "hello room") {
            seen.push("message");
            break;
        }
    }
    assert_eq!(seen, ["joined", "message"]);
    drop((ann, bob));
    nodes.shutdown().await;
}

/// A direct message to a user whose login another node applied first
/// waits on the user's own node until the login is applied there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_to_a_login_not_yet_applied_at_home_is_delivered() {
    let nodes = Nodes::start(3).await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    let mut cy = login(&nodes.nodes[2], "cy").await;
    nodes.until_users(2).await;
    nodes.carrier.lag("node-1", true);
    let mut bob = nodes.nodes[1].connect().await;
    common::next_login_request(&mut bob).await;
    bob.command("login", Some(json!({"username": "bob"})))
        .await
        .unwrap();
    // Node 0 applies bob's login first: ann sees him and writes to him.
    until(&mut ann, "bob arriving", |p| is_joined(p, "bob", "general")).await;
    ann.command(
        "direct",
        Some(json!({"username": "bob", "message": "are you there?"})),
    )
    .await
    .unwrap();
    // Node 0 sends in order: once node 2 has what ann said after the
    // direct message, node 1 has been handed the direct message.
    ann.message("after the direct message").await.unwrap();
    until(&mut cy, "ann's next message", |p| {
        is_message(p, "after the direct message")
    })
    .await;
    nodes.carrier.lag("node-1", false);
    let session = common::next_session(&mut bob).await;
    assert!(session.status, "{session:?}");
    until(&mut bob, "ann's direct message", |p| {
        is_message(p, "are you there?")
    })
    .await;
    drop((ann, bob, cy));
    nodes.shutdown().await;
}

/// A change whose command gave up waiting for its own node to apply it
/// holds on every node all the same (it is in the log), and so is what it
/// asked of the store: the store never disagrees with the replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_user_gave_up_waiting_still_reaches_the_store() {
    // Its command gives up soon, while node 0 lags.
    let nodes = Nodes::start_with(2, |c| {
        c.cluster_apply_timeout = Duration::from_millis(300);
    })
    .await;
    common::add_account(&nodes.nodes[0], "ann", "secret-password").await;
    let mut ann = common::login_account(&nodes.nodes[0], "ann", "secret-password").await;
    ask(
        &mut ann,
        "join",
        json!({"channel": "club"}),
        "own join",
        |p| is_joined(p, "ann", "club"),
    )
    .await;
    let store = std::sync::Arc::clone(&nodes.store);
    let registered = move || {
        store
            .registered_channels()
            .unwrap()
            .into_iter()
            .find(|c| c.key == "club")
    };
    assert!(registered().is_some(), "club is registered");

    // Node 0 applies nothing for now: ann's command gives up waiting.
    nodes.carrier.lag("node-0", true);
    ann.command("topic", Some(json!({"topic": "members only"})))
        .await
        .unwrap();
    until(&mut ann, "the command giving up", |p| is_error(p, "topic")).await;
    nodes
        .until_all_but(0, "the topic applied on node 1", |s| {
            s.channels
                .iter()
                .any(|c| c.name == "club" && c.topic.as_deref() == Some("members only"))
        })
        .await;
    nodes.carrier.lag("node-0", false);
    common::until_polled(
        "the topic in the store",
        Duration::from_secs(20),
        || match registered().and_then(|c| c.topic) {
            Some(t) if t == "members only" => Ok(()),
            other => Err(other),
        },
    )
    .await;
    drop(ann);
    nodes.shutdown().await;
}

/// A name registered on one node is guarded on the others at once, not
/// only after their next reload of the shared store (which this test
/// puts out of reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_registered_on_one_node_is_guarded_on_the_others_at_once() {
    let nodes = Nodes::start_with(2, |c| {
        c.accounts_poll = Duration::from_secs(3600);
    })
    .await;
    let mut ann = login(&nodes.nodes[0], "ann").await;
    ann.command("register", Some(json!({"password": "secret-password"})))
        .await
        .unwrap();
    until(&mut ann, "registered", |p| {
        is_note(p, |n| matches!(n, Notification::Registered { .. }))
    })
    .await;
    // Her departure follows the registration in the log: once node 1 has
    // applied the one, it has applied the other.
    drop(ann);
    nodes.until_users(0).await;
    let mut guest = nodes.nodes[1].connect().await;
    common::next_login_request(&mut guest).await;
    guest
        .command("login", Some(json!({"username": "ann"})))
        .await
        .unwrap();
    let session = common::next_session(&mut guest).await;
    assert!(
        !session.status,
        "a guest took a registered name: {session:?}"
    );
    nodes.shutdown().await;
}

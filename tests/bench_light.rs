//! The bench's cheap set-up path against a real server: the lenient
//! classifier must agree with the library's full decode on every package
//! the set-up can meet (also with the members in other orders), and the
//! set-up must end a run with the server's reason when it is refused.
//!
//! The tests live in a module named `bench_light` so that
//! `cargo test bench` selects them.

mod common;

mod bench_light {
    use std::time::Duration;

    use chatmaster::bench::{
        self, classify, inspect_light, BenchError, LightPackage, Options, Scenario, SetupStep,
        Verdict, PREFIX_BYTES,
    };
    use chatmaster::client::{ClientConnection, ClientError};
    use chatmaster::server::config::DEFAULT_MAX_PACKAGE_BYTES;
    use chatmaster::wire::codec;
    use chatmaster::wire::compress;
    use chatmaster::wire::frame::FrameCodec;
    use chatmaster::wire::protocol::{Notification, ServerPackage};
    use chatmaster::Config;
    use futures_util::StreamExt;
    use serde_json::{json, Value};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    use tokio_util::codec::FramedRead;

    use super::common::*;

    /// Helpers with names this long make the probe's `session` and its own
    /// `user_joined` for `general` longer than [`PREFIX_BYTES`], so the
    /// classifier's fast path is exercised on real packages.
    const LONG_LISTS: usize = 20;

    /// The probe's user name.
    const PROBE: &str = "probe";
    /// The channel the probe finally joins.
    const TARGET: &str = "target";
    /// The probe's ping token.
    const TOKEN: &str = "t-1";

    /// The members the classifier exposes, owned, for comparisons.
    #[derive(Debug, Default, PartialEq)]
    struct Fields {
        kind: String,
        request: Option<String>,
        status: Option<bool>,
        reason: Option<String>,
        event_type: Option<String>,
        username: Option<String>,
        channel: Option<String>,
        users: bool,
        error_type: Option<String>,
        message: Option<String>,
        token: Option<String>,
    }

    fn light_fields(p: &LightPackage<'_>) -> Fields {
        let s = |v: &Option<std::borrow::Cow<'_, str>>| v.as_deref().map(str::to_owned);
        let d = &p.data;
        Fields {
            kind: p.kind.to_string(),
            request: s(&d.request),
            status: d.status,
            reason: s(&d.reason),
            event_type: s(&d.event_type),
            username: s(&d.username),
            channel: s(&d.channel),
            users: d.users.is_some(),
            error_type: s(&d.error_type),
            message: s(&d.message),
            token: s(&d.token),
        }
    }

    /// What the full decode says about the same members.
    fn full_fields(p: &ServerPackage) -> Fields {
        match p {
            ServerPackage::Request(r) => Fields {
                kind: "request".into(),
                request: Some(r.request.clone()),
                ..Fields::default()
            },
            ServerPackage::Session(s) => Fields {
                kind: "session".into(),
                status: Some(s.status),
                reason: s.reason.clone(),
                username: s.username.clone(),
                channel: s.channel.clone(),
                ..Fields::default()
            },
            ServerPackage::Error(e) => Fields {
                kind: "error".into(),
                error_type: Some(e.error_type.clone()),
                message: Some(e.message.clone()),
                ..Fields::default()
            },
            ServerPackage::Notification(Notification::UserJoined {
                username,
                channel,
                users,
                ..
            }) => Fields {
                kind: "notification".into(),
                event_type: Some("user_joined".into()),
                username: Some(username.clone()),
                channel: Some(channel.clone()),
                users: users.is_some(),
                ..Fields::default()
            },
            ServerPackage::Notification(Notification::UserLeft {
                username, channel, ..
            }) => Fields {
                kind: "notification".into(),
                event_type: Some("user_left".into()),
                username: Some(username.clone()),
                channel: Some(channel.clone()),
                ..Fields::default()
            },
            ServerPackage::Notification(Notification::Pong { token }) => Fields {
                kind: "notification".into(),
                event_type: Some("pong".into()),
                token: token.clone(),
                ..Fields::default()
            },
            other => panic!("the test does not expect {other:?}"),
        }
    }

    /// The verdict the client's handshake and the old full-decode set-up
    /// reached for `p` at `step`.
    fn full_verdict(p: &ServerPackage, step: SetupStep<'_>) -> Verdict {
        let refused = |e: &chatmaster::wire::protocol::ErrorData| {
            Verdict::Refused(format!("{}: {}", e.error_type, e.message))
        };
        match (step, p) {
            (SetupStep::LoginRequest, ServerPackage::Request(r)) if r.request == "login" => {
                Verdict::Done
            }
            (SetupStep::LoginRequest, _) => Verdict::Unexpected,
            (SetupStep::Session, ServerPackage::Session(s)) if s.status => Verdict::Done,
            (SetupStep::Session, ServerPackage::Session(s)) => {
                Verdict::Refused(s.reason.clone().unwrap_or_default())
            }
            (SetupStep::Session, _) => Verdict::Unexpected,
            (_, ServerPackage::Error(e)) => refused(e),
            (
                SetupStep::OwnJoin { name, channel },
                ServerPackage::Notification(Notification::UserJoined {
                    username,
                    channel: ch,
                    users: Some(_),
                    ..
                }),
            ) if username == name && ch == channel => Verdict::Done,
            (
                SetupStep::Pong(token),
                ServerPackage::Notification(Notification::Pong { token: Some(t) }),
            ) if t == token => Verdict::Done,
            _ => Verdict::Skip,
        }
    }

    /// Every step the set-up has, with the probe's name and channels.
    fn steps() -> [SetupStep<'static>; 5] {
        [
            SetupStep::LoginRequest,
            SetupStep::Session,
            SetupStep::OwnJoin {
                name: PROBE,
                channel: "general",
            },
            SetupStep::OwnJoin {
                name: PROBE,
                channel: TARGET,
            },
            SetupStep::Pong(TOKEN),
        ]
    }

    /// Object members sorted ascending or descending: either way an order
    /// the server never writes (it puts `type` first, `event_type` or
    /// `status` first in `data`).
    fn write_sorted(v: &Value, descending: bool, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                if descending {
                    keys.reverse();
                }
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write_sorted(&map[k], descending, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_sorted(item, descending, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    /// Checks one real frame body and its reordered copies.
    fn check(body: &[u8]) -> ServerPackage {
        let full: ServerPackage =
            codec::decode_body(body, DEFAULT_MAX_PACKAGE_BYTES).expect("full decode");
        let text = compress::inflate(body, DEFAULT_MAX_PACKAGE_BYTES).expect("inflate");
        let value: Value = serde_json::from_slice(&text).expect("json");
        let mut bodies = vec![("as sent".to_owned(), body.to_vec())];
        let mut reordered = false;
        for descending in [false, true] {
            let mut json = String::new();
            write_sorted(&value, descending, &mut json);
            reordered |= json.as_bytes() != &text[..];
            let again: ServerPackage = serde_json::from_str(&json).expect("reordered decodes");
            assert_eq!(again, full);
            bodies.push((json.clone(), compress::deflate(json.as_bytes(), 1)));
        }
        assert!(reordered, "no other member order for {full:?}");
        for (what, b) in &bodies {
            let light = inspect_light(b, light_fields).expect("lenient parse");
            assert_eq!(light, full_fields(&full), "fields of {what} ({full:?})");
            for step in steps() {
                assert_eq!(
                    classify(b, step).expect("classify"),
                    full_verdict(&full, step),
                    "{step:?} on {what} ({full:?})"
                );
            }
        }
        full
    }

    /// Reads the probe's next frame body.
    async fn next_body(probe: &mut FramedRead<TcpStream, FrameCodec>) -> Vec<u8> {
        tokio::time::timeout(WAIT, probe.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("a good frame")
            .to_vec()
    }

    async fn send(probe: &mut FramedRead<TcpStream, FrameCodec>, json: Value) {
        let frame = codec::encode(&json, DEFAULT_MAX_PACKAGE_BYTES, 1).expect("encode");
        probe.get_mut().write_all(&frame).await.expect("write");
    }

    /// Logs `name` in and moves it to `channel`, waiting for its own join.
    async fn login_into(server: &TestServer, name: &str, channel: &str) -> ClientConnection {
        let mut c = server.login(name).await;
        c.command("join", Some(json!({ "channel": channel })))
            .await
            .expect("join");
        loop {
            if let Notification::UserJoined {
                username,
                channel: ch,
                ..
            } = next_note(&mut c).await
            {
                if username == name && ch == channel {
                    break;
                }
            }
        }
        c
    }

    #[tokio::test]
    async fn light_classifier_agrees_with_full_decode_on_real_packages() {
        let server = TestServer::start_default().await;
        // Long channel names make a long session; long names sitting in
        // general make a long own user_joined.
        // Their connections (and so the channels) stay open for the test.
        let mut holders = Vec::new();
        for i in 0..LONG_LISTS {
            holders.push(
                login_into(
                    &server,
                    &format!("holder-with-a-long-user-name-{i:02}"),
                    &format!("a-rather-long-channel-name-{i:02}"),
                )
                .await,
            );
        }
        let mut sitters = Vec::new();
        for i in 0..LONG_LISTS {
            sitters.push(
                server
                    .login(&format!("sitter-with-a-long-user-name-{i:02}"))
                    .await,
            );
        }

        let stream = TcpStream::connect(server.addr).await.expect("connect");
        let mut probe = FramedRead::new(
            stream,
            FrameCodec::new(chatmaster::server::config::DEFAULT_MAX_FRAME_BYTES),
        );
        let mut seen = Vec::new();
        seen.push(check(&next_body(&mut probe).await)); // request login

        // A taken name: refused session, then request login again.
        let login = |name: &str| json!({"type": "command", "data": {"command": "login", "parameters": {"username": name}}});
        send(&mut probe, login("sitter-with-a-long-user-name-00")).await;
        seen.push(check(&next_body(&mut probe).await));
        seen.push(check(&next_body(&mut probe).await));

        // Accepted: a long session and a long own user_joined.
        send(&mut probe, login(PROBE)).await;
        for _ in 0..2 {
            let body = next_body(&mut probe).await;
            let text = compress::inflate(&body, DEFAULT_MAX_PACKAGE_BYTES).expect("inflate");
            assert!(text.len() > PREFIX_BYTES, "{} bytes", text.len());
            seen.push(check(&body));
        }

        // Someone else joins general, then leaves it.
        let mut late = server.login("late").await;
        seen.push(check(&next_body(&mut probe).await));
        late.command("join", Some(json!({"channel": TARGET})))
            .await
            .expect("join");
        let _ = next_note(&mut late).await; // own user_joined in target
        seen.push(check(&next_body(&mut probe).await));

        // An error: joining the channel one is in.
        let join = |channel: &str| json!({"type": "command", "data": {"command": "join", "parameters": {"channel": channel}}});
        send(&mut probe, join("general")).await;
        seen.push(check(&next_body(&mut probe).await));

        // The own join of another channel, and a pong.
        send(&mut probe, join(TARGET)).await;
        seen.push(check(&next_body(&mut probe).await));
        send(
            &mut probe,
            json!({"type": "command", "data": {"command": "ping", "parameters": {"token": TOKEN}}}),
        )
        .await;
        seen.push(check(&next_body(&mut probe).await));

        // The test saw what it meant to.
        let kinds: Vec<String> = seen
            .iter()
            .map(|p| match p {
                ServerPackage::Session(s) => format!("session {}", s.status),
                ServerPackage::Notification(Notification::UserJoined {
                    username, users, ..
                }) => format!("user_joined {username} {}", users.is_some()),
                ServerPackage::Notification(Notification::UserLeft { username, .. }) => {
                    format!("user_left {username}")
                }
                ServerPackage::Notification(Notification::Pong { .. }) => "pong".into(),
                ServerPackage::Request(_) => "request".into(),
                ServerPackage::Error(e) => format!("error {}", e.error_type),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "request",
                "session false",
                "request",
                "session true",
                "user_joined probe true",
                "user_joined late false",
                "user_left late",
                "error join",
                "user_joined probe true",
                "pong"
            ]
        );
        drop((holders, sitters, late, probe));
        server.shutdown().await;
    }

    fn login_options(addr: std::net::SocketAddr, clients: usize) -> Options {
        Options {
            scenario: Scenario::Login,
            clients,
            channels: 1,
            concurrency: 1,
            ..Options::fanout(addr.to_string())
        }
    }

    /// The name the login scenario gives its connection `i` (the bench
    /// runs inside this test process).
    fn storm_name(i: usize) -> String {
        format!("b{}l{i}", std::process::id() % 100_000)
    }

    #[tokio::test]
    async fn bench_set_up_reports_a_refused_login() {
        let server = TestServer::start_default().await;
        let _holder = server.login(&storm_name(0)).await;
        match bench::run(&login_options(server.addr, 1)).await {
            Err(BenchError::Refused { name, reason }) => {
                assert_eq!(name, storm_name(0));
                assert_eq!(reason, "Username is already taken.");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bench_set_up_reports_an_error_package() {
        let server = TestServer::start_default().await;
        // bench-0 is private: the bench's join is answered with an error.
        let mut owner = server.login("owner").await;
        owner
            .command("join", Some(json!({"channel": "bench-0"})))
            .await
            .expect("join");
        let _ = next_note(&mut owner).await; // own user_joined
        owner.command("private", None).await.expect("private");
        let _ = next_note(&mut owner).await; // channel_update
        match bench::run(&login_options(server.addr, 1)).await {
            Err(BenchError::Refused { reason, .. }) => {
                assert!(reason.starts_with("join: "), "{reason}");
                assert!(reason.contains("private"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bench_set_up_reports_a_full_server() {
        let server = TestServer::start(Config {
            max_connections: 1,
            ..test_config()
        })
        .await;
        let mut only = server.connect().await;
        next_login_request(&mut only).await; // the one slot is taken
        let error = tokio::time::timeout(
            Duration::from_secs(20),
            bench::run(&login_options(server.addr, 1)),
        )
        .await
        .expect("the bench gives up in time");
        match error {
            Err(BenchError::Setup {
                source: ClientError::Unexpected(p),
                ..
            }) => match *p {
                ServerPackage::Error(e) => assert_eq!(e.error_type, "server"),
                other => panic!("expected the server error, got {other:?}"),
            },
            other => panic!("expected a set-up error, got {other:?}"),
        }
        drop(only);
        server.shutdown().await;
    }
}

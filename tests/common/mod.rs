//! Shared test harness: a real server on 127.0.0.1:0 and raw-byte helpers.

#![allow(dead_code, unreachable_pub)]

#[cfg(unix)]
pub mod binary;
pub mod cluster;
pub mod lines;
pub mod memory;
pub mod nats;
pub mod postgres;
pub mod web;
pub mod webdriver;

use std::net::SocketAddr;
use std::time::Duration;

use chatmaster::client::ClientConnection;
use chatmaster::server::chat::Hub;
use chatmaster::wire::protocol::{Notification, ServerPackage, Session};
use chatmaster::{Config, Server};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Starts a server with `config` on an ephemeral loopback port.
    pub async fn start(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Server::new(config);
        let hub = server.hub();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            hub,
            stop: Some(stop),
            handle,
        }
    }

    /// Runs an already built `server` (a cluster node, one over a given
    /// store) on an ephemeral loopback port.
    pub async fn run_server(server: Server) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hub = server.hub();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            hub,
            stop: Some(stop),
            handle,
        }
    }

    /// A server with default limits but no rate limiting (tests send fast).
    pub async fn start_default() -> TestServer {
        Self::start(test_config()).await
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), &mut self.handle)
            .await
            .expect("server did not shut down in time")
            .expect("server task panicked");
        result.expect("server returned an error");
    }

    /// A raw connection (not logged in).
    pub async fn connect(&self) -> ClientConnection {
        ClientConnection::connect(self.addr).await.expect("connect")
    }

    /// A connection logged in as `name`, with its login traffic consumed.
    pub async fn login(&self, name: &str) -> ClientConnection {
        let mut c = self.connect().await;
        let session = c.login(name, WAIT).await.expect("login");
        assert!(session.status, "login as {name} refused: {session:?}");
        // The joiner's own user_joined for general follows the session.
        match c.recv_timeout(WAIT).await.expect("own user_joined") {
            ServerPackage::Notification(Notification::UserJoined { username, .. }) => {
                assert_eq!(username, name)
            }
            other => panic!("expected own user_joined, got {other:?}"),
        }
        c
    }
}

/// Default limits minus rate limiting.
pub fn test_config() -> Config {
    Config {
        rate_per_sec: 0,
        ..Config::default()
    }
}

/// Receives the next package, failing the test after [`WAIT`].
pub async fn next(c: &mut ClientConnection) -> ServerPackage {
    c.recv_timeout(WAIT).await.expect("expected a package")
}

/// Receives the next package and asserts it is a notification.
pub async fn next_note(c: &mut ClientConnection) -> Notification {
    match next(c).await {
        ServerPackage::Notification(n) => n,
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// Receives the next package and asserts it is a `session`.
pub async fn next_session(c: &mut ClientConnection) -> Session {
    match next(c).await {
        ServerPackage::Session(s) => s,
        other => panic!("expected a session, got {other:?}"),
    }
}

/// Receives the next package and asserts it is `request login`.
pub async fn next_login_request(c: &mut ClientConnection) {
    match next(c).await {
        ServerPackage::Request(r) => assert_eq!(r.request, "login"),
        other => panic!("expected request login, got {other:?}"),
    }
}

/// Sends `login` with an optional password and returns the session; on
/// success the own `user_joined` is consumed too, on refusal the
/// `request login` that follows.
pub async fn login_with(c: &mut ClientConnection, name: &str, password: Option<&str>) -> Session {
    let params = match password {
        Some(p) => json!({"username": name, "password": p}),
        None => json!({"username": name}),
    };
    c.command("login", Some(params)).await.expect("send login");
    let session = next_session(c).await;
    if session.status {
        match next_note(c).await {
            Notification::UserJoined { .. } => {}
            other => panic!("expected own user_joined, got {other:?}"),
        }
    } else {
        next_login_request(c).await;
    }
    session
}

/// Receives the next package and asserts it is an error; returns (type, message).
pub async fn next_error(c: &mut ClientConnection) -> (String, String) {
    match next(c).await {
        ServerPackage::Error(e) => (e.error_type, e.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Asserts nothing arrives: sends a ping and expects the pong next, which
/// proves the server handled everything before it and queued nothing else.
pub async fn assert_quiet(c: &mut ClientConnection) {
    c.command("ping", Some(serde_json::json!({"token": "quiet"})))
        .await
        .expect("ping");
    match next(c).await {
        ServerPackage::Notification(Notification::Pong { token }) => {
            assert_eq!(token.as_deref(), Some("quiet"))
        }
        other => panic!("expected only the pong, got {other:?}"),
    }
}

/// Expects the connection to be closed by the server within [`WAIT`],
/// skipping any packages still in flight.
pub async fn expect_closed(c: &mut ClientConnection) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.recv_timeout(left).await {
            Ok(_) => continue,
            Err(chatmaster::client::ClientError::Timeout(_)) => panic!("connection not closed"),
            Err(_) => return,
        }
    }
}

/// Resident and peak resident memory of this process in KiB.
pub fn memory_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A full frame carrying `json` as the protocol wants it.
pub fn frame_of(json: &str) -> Vec<u8> {
    chatmaster::wire::frame::FrameCodec::frame(
        chatmaster::wire::compress::deflate(json.as_bytes(), 1).into(),
    )
    .to_vec()
}

pub fn login_frame(name: &str) -> Vec<u8> {
    frame_of(&format!(
        r#"{{"type":"command","data":{{"command":"login","parameters":{{"username":"{name}"}}}}}}"#
    ))
}

/// Waits (polling the hub) until `cond` holds for its snapshot.
pub async fn until_state(
    server: &TestServer,
    what: &str,
    cond: impl Fn(&chatmaster::server::chat::Snapshot) -> bool,
) {
    until_polled(what, Duration::from_secs(20), || {
        let snap = server.hub.snapshot();
        if cond(&snap) {
            Ok(())
        } else {
            Err(snap)
        }
    })
    .await;
}

/// Polls `probe` (state no package announces) until it gives `Ok`, for
/// at most `within`; fails with what the last `Err` held otherwise.
pub async fn until_polled<T: std::fmt::Debug>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<(), T>,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match probe() {
            Ok(()) => return,
            Err(last) => last,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Receives `n` `message_sent` acknowledgements and returns their ids,
/// asserting they increase (the order the messages were stored in).
pub async fn expect_acks(c: &mut ClientConnection, n: usize) -> Vec<i64> {
    let mut ids: Vec<i64> = Vec::with_capacity(n);
    while ids.len() < n {
        match next_note(c).await {
            Notification::MessageSent { id, .. } => {
                if let Some(last) = ids.last() {
                    assert!(id > *last, "id {id} after {last}");
                }
                ids.push(id);
            }
            other => panic!("expected message_sent, got {other:?}"),
        }
    }
    ids
}

/// Makes the account `name` with `password` in the server's store, as
/// `chatmaster-server accounts add` does, and has the server's index of
/// account names read it at once (instead of at its next poll).
pub async fn add_account(server: &TestServer, name: &str, password: &str) {
    use chatmaster::wire::protocol::{fold_name, name_skeleton};
    let (hub, name, password) = (server.hub.clone(), name.to_owned(), password.to_owned());
    tokio::task::spawn_blocking(move || {
        let hash = chatmaster::server::passwords::Hasher::hash_blocking(&password).expect("hash");
        let account = chatmaster::store::NewAccount {
            key: fold_name(&name),
            skeleton: name_skeleton(&name),
            name,
            password_hash: hash,
            created_at: chatmaster::store::now_millis(),
        };
        hub.store()
            .create_account(&account)
            .expect("create account");
        hub.accounts()
            .index()
            .refresh(hub.store().as_ref())
            .expect("refresh the index");
    })
    .await
    .expect("add_account");
}

/// A connection logged in to the account `name` with `password`, its
/// login traffic consumed.
pub async fn login_account(server: &TestServer, name: &str, password: &str) -> ClientConnection {
    let mut c = server.connect().await;
    next_login_request(&mut c).await;
    let session = login_with(&mut c, name, Some(password)).await;
    assert!(session.status, "login to {name} refused: {session:?}");
    c
}

//! The HTTP port against a real server on 127.0.0.1:0, in real bytes: the
//! page and its security headers, `/healthz` through a shutdown,
//! `/metrics` and its counts, and TLS on both ports (certificates made
//! here with rcgen), including a certificate reload, in process and by
//! SIGHUP to the binary.

mod common;

use std::time::Duration;

use chatmaster::web::tls::Tls;
use chatmaster::Config;
use common::web::{
    body_of, client_tls, http_get, http_over, package_of, tls_connect, write_cert, WebServer,
    WsClient,
};
use common::{next_note, test_config, WAIT};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;

#[tokio::test]
async fn the_page_and_its_files_carry_the_security_headers() {
    let server = WebServer::start(test_config()).await;
    let page = http_get(server.http, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    let csp = page.header("Content-Security-Policy").expect("a CSP");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(page.header("X-Frame-Options"), Some("DENY"));
    // Scripts are modules from our own origin; none is inline.
    assert!(page
        .body
        .contains(r#"<script type="module" src="/app.js"></script>"#));
    assert_eq!(page.body.matches("<script").count(), 1, "{}", page.body);
    assert!(!page.body.contains(" on") || !page.body.contains("onclick"));
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/protocol.js", "text/javascript"),
        ("/view.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let r = http_get(server.http, path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("Content-Type").unwrap().starts_with(kind),
            "{path}"
        );
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(r.header("Content-Security-Policy").is_some(), "{path}");
    }
    // Other people's text never goes in as HTML.
    for path in ["/app.js", "/view.js", "/protocol.js"] {
        let js = http_get(server.http, path, &[]).await.body;
        assert!(
            !js.contains("innerHTML") && !js.contains("outerHTML"),
            "{path}"
        );
        assert!(
            !js.contains("insertAdjacentHTML") && !js.contains("eval("),
            "{path}"
        );
    }
    let missing = http_get(server.http, "/nothing-here", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("X-Content-Type-Options"), Some("nosniff"));
    server.shutdown().await;
}

/// A TCP connection that reads nothing, with a small receive window.
async fn stuck_client(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(&common::login_frame("stuck")).await.unwrap();
    s
}

#[tokio::test]
async fn healthz_is_200_while_serving_and_503_once_shutdown_began() {
    let config = Config {
        // The stuck client below holds the shutdown while its goodbye waits.
        shutdown_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(60),
        max_queue_bytes: 64 << 20,
        outbound_queue: 100_000,
        ..test_config()
    };
    let mut server = WebServer::start(config).await;
    let ok = http_get(server.http, "/healthz", &[]).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"));

    let mut loud = WsClient::connect(&server.ws_url(), None).await.unwrap();
    loud.login("loud").await;
    let mut stuck = stuck_client(server.tcp).await;
    let _ = loud
        .recv_until("stuck's arrival", |p| p["data"]["username"] == "stuck")
        .await;
    // More than the kernel buffers hold (random text barely compresses):
    // the server's writes to the stuck client block.
    let n = 2000;
    let text = Alphanumeric.sample_string(&mut rand::rng(), 4000);
    for i in 0..n {
        loud.send_json(&format!(
            r#"{{"type":"message","data":{{"message":"{i} {text}"}}}}"#
        ))
        .await;
    }
    for _ in 0..n {
        let p = loud.recv().await;
        assert_eq!(p["data"]["event_type"], "message_sent", "{p}");
    }
    server.begin_shutdown();
    // Once loud is told, shutdown has begun; the stuck client holds it.
    let bye = loud
        .recv_until("server_shutdown", |p| {
            p["data"]["event_type"] == "server_shutdown"
        })
        .await;
    assert_eq!(bye["type"], "notification");
    let during = http_get(server.http, "/healthz", &[]).await;
    assert_eq!(during.status, 503, "{during:?}");
    // A new WebSocket session is refused meanwhile.
    let refused = common::web::http_head(
        server.http,
        "/ws",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    assert_eq!(refused.status, 503);
    // The stuck client goes: shutdown completes, and the port closes last.
    stuck.shutdown().await.ok();
    drop(stuck);
    let addr = server.http;
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// The value of the series `name` (with its labels, as printed).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse::<f64>().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no series {name} in:\n{text}"))
}

#[tokio::test]
async fn metrics_name_every_series_and_the_counts_move() {
    let config = Config {
        rate_per_sec: 1,
        rate_burst: 1,
        ..Config::default()
    };
    let server = WebServer::start(config).await;
    let r = http_get(server.http, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .unwrap()
        .contains("openmetrics-text"));
    let before = r.body;
    for name in [
        "chatmaster_connections{transport=\"tcp\"}",
        "chatmaster_connections{transport=\"tls\"}",
        "chatmaster_connections{transport=\"websocket\"}",
        "chatmaster_connections_accepted_total{transport=\"websocket\"}",
        "chatmaster_logins_total",
        "chatmaster_login_failures_total",
        "chatmaster_messages_total",
        "chatmaster_deliveries_total",
        "chatmaster_slow_consumer_drops_total",
        "chatmaster_throttled_reads_total",
        "chatmaster_store_queue_depth",
        "chatmaster_store_commit_seconds_count",
        "chatmaster_store_commit_seconds_bucket{le=\"+Inf\"}",
        "chatmaster_uptime_seconds",
    ] {
        series(&before, name);
    }
    assert!(before.contains("# TYPE chatmaster_store_commit_seconds histogram"));

    // A WebSocket user and a TCP user; a refused login; a message to one
    // recipient; three pings past a burst of one (throttled).
    let mut web = WsClient::connect(&server.ws_url(), None).await.unwrap();
    web.login("meter").await;
    let mut tcp = chatmaster::client::ClientConnection::connect(server.tcp)
        .await
        .unwrap();
    let refused = tcp.login("not a name!", WAIT).await.unwrap();
    assert!(!refused.status);
    assert!(tcp.login("reader", WAIT).await.unwrap().status);
    let _own = next_note(&mut tcp).await;
    let _arrival = web.recv().await;
    web.send_json(r#"{"type":"message","data":{"message":"counted"}}"#)
        .await;
    let sent = web.recv().await;
    assert_eq!(sent["data"]["event_type"], "message_sent", "{sent}");
    for i in 0..3 {
        web.send_json(&format!(
            r#"{{"type":"command","data":{{"command":"ping","parameters":{{"token":"{i}"}}}}}}"#
        ))
        .await;
    }
    for _ in 0..3 {
        let p = web.recv().await;
        assert_eq!(p["data"]["event_type"], "pong", "{p}");
    }
    let after = http_get(server.http, "/metrics", &[]).await.body;
    let moved = |name: &str| series(&after, name) - series(&before, name);
    // Other tests in this binary count too: at least, never exactly.
    assert!(moved("chatmaster_logins_total") >= 2.0, "{after}");
    assert!(moved("chatmaster_login_failures_total") >= 1.0, "{after}");
    assert!(moved("chatmaster_messages_total") >= 1.0, "{after}");
    assert!(moved("chatmaster_deliveries_total") >= 1.0, "{after}");
    assert!(moved("chatmaster_throttled_reads_total") >= 1.0, "{after}");
    assert!(
        moved("chatmaster_store_commit_seconds_count") >= 1.0,
        "{after}"
    );
    assert!(
        moved("chatmaster_connections_accepted_total{transport=\"websocket\"}") >= 1.0,
        "{after}"
    );
    assert!(series(&after, "chatmaster_connections{transport=\"websocket\"}") >= 1.0);
    assert!(series(&after, "chatmaster_connections{transport=\"tcp\"}") >= 1.0);
    assert!(series(&after, "chatmaster_uptime_seconds") > 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_counted_when_dropped() {
    let config = Config {
        max_queue_bytes: 64 * 1024,
        ..test_config()
    };
    let server = WebServer::start(config).await;
    let before = http_get(server.http, "/metrics", &[]).await.body;
    let mut loud = WsClient::connect(&server.ws_url(), None).await.unwrap();
    loud.login("flood").await;
    let stuck = stuck_client(server.tcp).await;
    let _ = loud
        .recv_until("stuck's arrival", |p| p["data"]["username"] == "stuck")
        .await;
    let text = Alphanumeric.sample_string(&mut rand::rng(), 4000);
    let left = loop {
        loud.send_json(&format!(
            r#"{{"type":"message","data":{{"message":"{text}"}}}}"#
        ))
        .await;
        let p = loud
            .recv_until("an ack or stuck leaving", |p| {
                p["data"]["event_type"] == "message_sent" || p["data"]["event_type"] == "user_left"
            })
            .await;
        if p["data"]["event_type"] == "user_left" {
            break p;
        }
    };
    assert_eq!(left["data"]["username"], "stuck");
    let after = http_get(server.http, "/metrics", &[]).await.body;
    let drops = "chatmaster_slow_consumer_drops_total";
    assert!(
        series(&after, drops) - series(&before, drops) >= 1.0,
        "{after}"
    );
    drop(stuck);
    server.shutdown().await;
}

async fn send_frame<S: AsyncWrite + Unpin>(io: &mut S, json: &str) {
    let body = body_of(json);
    io.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    io.write_all(&body).await.unwrap();
}

async fn recv_frame<S: AsyncRead + Unpin>(io: &mut S) -> Value {
    let mut len = [0u8; 4];
    tokio::time::timeout(WAIT, io.read_exact(&mut len))
        .await
        .expect("a frame in time")
        .expect("a frame");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    io.read_exact(&mut body).await.unwrap();
    package_of(&body)
}

#[tokio::test]
async fn tls_on_both_ports_and_a_certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path());
    let tls = Tls::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
    let server = WebServer::start_tls(test_config(), Some(tls.clone())).await;
    let trust_first = client_tls(&first);

    // The chat port speaks TLS: the same frames inside.
    let mut chat = tls_connect(server.tcp, trust_first.clone()).await.unwrap();
    assert_eq!(
        recv_frame(&mut chat).await,
        json!({"type":"request","data":{"request":"login"}})
    );
    send_frame(
        &mut chat,
        r#"{"type":"command","data":{"command":"login","parameters":{"username":"secure"}}}"#,
    )
    .await;
    let session = recv_frame(&mut chat).await;
    assert_eq!(session["data"]["status"], true, "{session}");
    let _own = recv_frame(&mut chat).await;

    // HTTPS, and WSS with the page's https origin.
    let io = tls_connect(server.http, trust_first.clone()).await.unwrap();
    let health = http_over(
        io,
        &format!("localhost:{}", server.http.port()),
        "/healthz",
        &[],
    )
    .await;
    assert_eq!(health.status, 200);
    let io = tls_connect(server.http, trust_first.clone()).await.unwrap();
    let host = format!("localhost:{}", server.http.port());
    let request = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("wss://{host}/ws"))
        .header("Host", &host)
        .header("Origin", format!("https://{host}"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(request, io).await.unwrap();
    let mut wss = WsClient { ws };
    wss.login("securer").await;
    let arrival = recv_frame(&mut chat).await;
    assert_eq!(arrival["data"]["username"], "securer", "{arrival}");

    // Plain bytes on the TLS port get no chat.
    let mut plain = tokio::net::TcpStream::connect(server.tcp).await.unwrap();
    plain
        .write_all(&common::login_frame("plain"))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, plain.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "a TLS alert or a close, not a package"
    );

    // A new certificate in the same files: new handshakes get it, the
    // sessions already open stay.
    let second = write_cert(dir.path());
    tls.reload().unwrap();
    assert!(tls_connect(server.tcp, trust_first.clone()).await.is_err());
    let mut again = tls_connect(server.tcp, client_tls(&second)).await.unwrap();
    assert_eq!(recv_frame(&mut again).await["type"], "request");
    send_frame(
        &mut chat,
        r#"{"type":"message","data":{"message":"still here"}}"#,
    )
    .await;
    let echoed = wss.recv().await;
    assert_eq!(echoed["data"]["message"], "still here", "{echoed}");

    // A reload that cannot read the files keeps the running pair.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("key.pem"), "{err}");
    assert!(tls_connect(server.tcp, client_tls(&second)).await.is_ok());
    server.shutdown().await;
}

#[test]
fn a_certificate_that_cannot_be_read_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let err = Tls::load(&missing, &missing).unwrap_err().to_string();
    assert!(
        err.contains("nope.pem") && err.contains("no such file"),
        "{err}"
    );
    write_cert(dir.path());
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let err = Tls::load(&dir.path().join("empty.pem"), &dir.path().join("key.pem"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_client_speaks_tls_and_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let der = write_cert(dir.path());
    let cert = dir.path().join("cert.pem");
    let tls = Tls::load(&cert, &dir.path().join("key.pem")).unwrap();
    let server = WebServer::start_tls(test_config(), Some(tls)).await;
    // Somebody already in general, over TLS too.
    let mut watcher = tls_connect(server.tcp, client_tls(&der)).await.unwrap();
    let _ = recv_frame(&mut watcher).await;
    send_frame(
        &mut watcher,
        r#"{"type":"command","data":{"command":"login","parameters":{"username":"watcher"}}}"#,
    )
    .await;
    let _session = recv_frame(&mut watcher).await;
    let _own = recv_frame(&mut watcher).await;

    let port = server.tcp.port().to_string();
    let run = move |ca: std::path::PathBuf| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chatmaster-client"))
            .args(["--tls", "--host", "localhost", "--port", &port])
            .arg("--ca")
            .arg(ca)
            .args(["--username", "clitls"])
            .env_remove("CHATMASTER_PASSWORD")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        let _ = child.stdin.take().unwrap().write_all(b"hello over tls\n");
        child.wait_with_output().unwrap()
    };
    let (run2, cert2) = (run.clone(), cert.clone());
    let out = tokio::task::spawn_blocking(move || run2(cert2))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut said = None;
    for _ in 0..10 {
        let p = recv_frame(&mut watcher).await;
        if p["type"] == "message" {
            said = Some(p);
            break;
        }
    }
    let said = said.expect("clitls's message");
    assert_eq!(said["data"]["username"], "clitls");
    assert_eq!(said["data"]["message"], "hello over tls");

    // A certificate the client does not trust: it cannot connect (exit 3).
    let other = tempfile::tempdir().unwrap();
    write_cert(other.path());
    let untrusted = other.path().join("cert.pem");
    let out = tokio::task::spawn_blocking(move || run(untrusted))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect"),
        "{out:?}"
    );
    server.shutdown().await;
}

/// SIGHUP to the binary reads the certificate files again: new handshakes
/// get the renewed certificate, a session already open stays.
#[cfg(unix)]
#[tokio::test]
async fn sighup_to_the_binary_reloads_the_certificate() {
    use common::binary::{server_command, Binary};
    use nix::sys::signal::Signal;

    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path());
    let mut cmd = server_command(["--db", ":memory:", "--no-http", "--tls-cert"]);
    cmd.arg(dir.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("key.pem"));
    let mut proc = Binary::spawn(cmd);
    let addr: std::net::SocketAddr = proc.addr.parse().unwrap();
    let mut open = tls_connect(addr, client_tls(&first)).await.unwrap();
    assert_eq!(recv_frame(&mut open).await["type"], "request");

    let second = write_cert(dir.path());
    proc.signal(Signal::SIGHUP);
    proc.wait_line("about the certificate", |l| {
        l.contains("TLS certificate reloaded")
    });
    assert!(
        tls_connect(addr, client_tls(&first)).await.is_err(),
        "a new handshake gets the renewed certificate"
    );
    let mut renewed = tls_connect(addr, client_tls(&second)).await.unwrap();
    assert_eq!(recv_frame(&mut renewed).await["type"], "request");
    send_frame(
        &mut open,
        r#"{"type":"command","data":{"command":"login","parameters":{"username":"before"}}}"#,
    )
    .await;
    let session = recv_frame(&mut open).await;
    assert_eq!(session["data"]["status"], true, "{session}");
    proc.shut_down();
}

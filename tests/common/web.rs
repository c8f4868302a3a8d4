//! Helpers for the HTTP side: a server with its HTTP port (and TLS when
//! asked) on 127.0.0.1:0, a WebSocket chat client speaking real bytes,
//! raw HTTP/1.1 requests, and test certificates made with rcgen.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chatmaster::server::chat::Hub;
use chatmaster::server::Listeners;
use chatmaster::web::tls::Tls;
use chatmaster::{Config, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

/// A running server with its HTTP port.
pub struct WebServer {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    pub hub: Hub,
    pub tls: Option<Arc<Tls>>,
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<std::io::Result<()>>,
}

impl WebServer {
    pub async fn start(config: Config) -> WebServer {
        Self::start_tls(config, None).await
    }

    pub async fn start_tls(config: Config, tls: Option<Arc<Tls>>) -> WebServer {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        Self::start_on(config, tls, tcp, http).await
    }

    /// A server on listeners already bound (a restart on the same ports).
    pub async fn start_on(
        config: Config,
        tls: Option<Arc<Tls>>,
        tcp: TcpListener,
        http: TcpListener,
    ) -> WebServer {
        let (tcp_addr, http_addr) = (tcp.local_addr().unwrap(), http.local_addr().unwrap());
        let server = Server::new(config);
        let hub = server.hub();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            tcp,
            http: Some(http),
            tls: tls.clone(),
        };
        let handle = tokio::spawn(server.run_with(listeners, async move {
            let _ = stopped.await;
        }));
        WebServer {
            tcp: tcp_addr,
            http: http_addr,
            hub,
            tls,
            stop: Some(stop),
            handle,
        }
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits for `run_with` to return.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        let result = tokio::time::timeout(Duration::from_secs(20), &mut self.handle)
            .await
            .expect("server did not shut down in time")
            .expect("server task panicked");
        result.expect("server returned an error");
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.http)
    }
}

/// The zlib stream of one JSON package, as a WebSocket message carries it.
pub fn body_of(json: &str) -> Vec<u8> {
    chatmaster::wire::compress::deflate(json.as_bytes(), 6)
}

/// Inflates one message's package.
pub fn package_of(body: &[u8]) -> Value {
    let json = chatmaster::wire::compress::inflate(body, 1 << 20).expect("a zlib stream");
    serde_json::from_slice(&json).expect("JSON")
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket chat client (over any stream: plain or TLS).
pub struct WsClient<S = MaybeTlsStream<TcpStream>> {
    pub ws: WebSocketStream<S>,
}

impl WsClient {
    /// Connects to `url`, sending `origin` as the Origin header if given.
    pub async fn connect(url: &str, origin: Option<&str>) -> Result<WsClient, String> {
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        if let Some(o) = origin {
            request
                .headers_mut()
                .insert("Origin", HeaderValue::from_str(o).unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(WsClient { ws })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsClient<S> {
    pub async fn send_json(&mut self, json: &str) {
        self.ws
            .send(Message::Binary(body_of(json).into()))
            .await
            .expect("send");
    }

    /// The next package, failing after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        self.recv_or_close().await.expect("a package, not the end")
    }

    /// The next package, or `None` once the server closed.
    pub async fn recv_or_close(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a WebSocket message");
            match msg {
                Some(Ok(Message::Binary(b))) => return Some(package_of(&b)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Text(t))) => panic!("the server sent a text message: {t}"),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(Message::Frame(_))) => continue,
            }
        }
    }

    /// Skips packages until one matches, failing after [`WAIT`] each.
    pub async fn recv_until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let p = self.recv().await;
            if pred(&p) {
                return p;
            }
        }
        panic!("no package matching {what}");
    }

    /// Logs in as `name` (the request login, session, own user_joined).
    pub async fn login(&mut self, name: &str) -> Value {
        let first = self.recv().await;
        assert_eq!(first["type"], "request", "{first}");
        self.send_json(&format!(
            r#"{{"type":"command","data":{{"command":"login","parameters":{{"username":"{name}"}}}}}}"#
        ))
        .await;
        let session = self.recv().await;
        assert_eq!(session["data"]["status"], true, "{session}");
        let joined = self.recv().await;
        assert_eq!(joined["data"]["event_type"], "user_joined", "{joined}");
        session
    }

    /// Expects the server to close the session, skipping what is in flight;
    /// returns the packages seen before the end.
    pub async fn expect_closed(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        while let Some(p) = self.recv_or_close().await {
            seen.push(p);
            assert!(seen.len() < 1000, "the session was not closed");
        }
        seen
    }
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request over `io` with `Connection: close` and reads the
/// whole response.
pub async fn http_over<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> HttpResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, io.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read response");
    parse_response(&raw)
}

/// Sends one request to `addr` and reads only the response's head (for
/// an upgrade, which leaves the connection open).
pub async fn http_head(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> HttpResponse {
    let mut io = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, io.read(&mut byte))
            .await
            .expect("response in time")
            .expect("read response");
        assert!(n == 1, "closed before the end of the head");
        raw.push(byte[0]);
    }
    parse_response(&raw)
}

/// GET `path` from `addr` over plain HTTP.
pub async fn http_get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> HttpResponse {
    let stream = TcpStream::connect(addr).await.expect("connect");
    http_over(stream, &addr.to_string(), path, extra).await
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written to
/// `dir` as `cert.pem` and `key.pem`; returns the certificate's DER.
pub fn write_cert(dir: &std::path::Path) -> Vec<u8> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let cert = rcgen::generate_simple_self_signed(names).expect("certificate");
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    cert.cert.der().to_vec()
}

/// A client TLS configuration trusting exactly `der`.
pub fn client_tls(der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connection to `addr`, checking the name `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, stream).await
}

//! The HTTP side of the server: one listener (`--http-port`, on `--host`)
//! built on axum and hyper serving the web client at `/` ([`assets`]), the
//! WebSocket endpoint `/ws` ([`ws`]: a chat session over the same
//! connection loop as TCP), `/healthz` and `/metrics` ([`crate::metrics`]);
//! and TLS for both listeners ([`tls`]).
//!
//! It calls [`crate::server`] (the hub, the connection loop, admission) and
//! is started by [`crate::server::Server::run_with`], which owns shutdown:
//! chat sessions over WebSocket are tracked with the TCP ones, told
//! `server_shutdown` with them, and counted against the same caps
//! (`--max-connections`, `--max-connections-per-address`). The HTTP
//! listener itself keeps answering while the server shuts down, so that
//! `/healthz` says 503 until the process is gone.
//!
//! Plain HTTP connections (page loads, health checks, scrapes) are capped
//! by `--max-http-connections`, and each has `--http-header-timeout-secs`
//! for its TLS handshake and for each request's headers. A WebSocket
//! request must come from the page's own origin or one of
//! `--allowed-origin`: any other `Origin` gets 403 (cross-site WebSocket
//! hijacking); a request without `Origin` (not from a browser) is let in.

pub mod assets;
pub mod tls;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::SinkExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::server::admission::Admission;
use crate::server::chat::Hub;
use crate::server::connection;
use crate::wire::codec;
use crate::wire::protocol::ServerPackage;
use tls::Tls;
use ws::WsTransport;

/// What the HTTP handlers share.
#[derive(Debug)]
pub(crate) struct Web {
    /// The chat state.
    pub(crate) hub: Hub,
    /// The session caps, shared with the TCP port.
    pub(crate) admission: Arc<Admission>,
    /// Chat sessions, tracked with the TCP ones (shutdown waits for them).
    pub(crate) sessions: TaskTracker,
    /// Cancelled when the server begins to shut down.
    pub(crate) shutdown: CancellationToken,
    /// The certificate, when the port speaks HTTPS.
    pub(crate) tls: Option<Arc<Tls>>,
    /// When the server started (the uptime gauge).
    pub(crate) started: Instant,
}

/// The router: every path the HTTP port serves.
fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_page))
        .route("/ws", get(websocket))
        .route("/{file}", get(assets::file))
        .fallback(assets::not_found)
        .layer(axum::middleware::map_response(assets::security_headers))
        .with_state(web)
}

/// Serves `listener` until `stop` is cancelled, then lets the requests in
/// flight finish (each connection is told to close after its current one).
pub(crate) async fn serve(listener: TcpListener, web: Arc<Web>, stop: CancellationToken) {
    let config = web.hub.config();
    let slots = Arc::new(Semaphore::new(config.max_http_connections));
    let connections = TaskTracker::new();
    let app = router(Arc::clone(&web));
    if let Ok(addr) = listener.local_addr() {
        let scheme = if web.tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, "serving HTTP");
    }
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = config.max_http_connections, "HTTP connection refused: too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, stop, tls) = (app.clone(), stop.clone(), web.tls.clone());
        let header_timeout = web.hub.config().http_header_timeout;
        connections.spawn(async move {
            let io = match tls {
                None => Either::Left(stream),
                Some(tls) => {
                    let handshake = tls.http_acceptor().accept(stream);
                    match tokio::time::timeout(header_timeout, handshake).await {
                        Ok(Ok(s)) => Either::Right(s),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed (HTTP)");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out (HTTP)");
                            return;
                        }
                    }
                }
            };
            // Each request learns its peer, as axum's `ConnectInfo` does.
            let service = TowerToHyperService::new(
                app.layer(axum::Extension(ConnectInfo(peer)))
                    .into_service::<hyper::body::Incoming>(),
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

/// `/healthz`: 200 while serving, 503 once shutdown began.
async fn healthz(State(web): State<Arc<Web>>) -> Response {
    if web.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

/// `/metrics`: Prometheus (OpenMetrics) text.
async fn metrics_page(State(web): State<Arc<Web>>) -> Response {
    let body = metrics::encode(web.hub.journal().queued(), web.started.elapsed());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

/// Whether `origin` may open a session on a page served as `host`.
fn origin_allowed(origin: &str, host: Option<&str>, https: bool, allowed: &[String]) -> bool {
    let origin = origin.trim_end_matches('/');
    let scheme = if https { "https" } else { "http" };
    if let Some(host) = host {
        let own = format!("{scheme}://{host}");
        if origin.eq_ignore_ascii_case(&own) {
            return true;
        }
    }
    allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// `/ws`: a chat session over WebSocket, after the Origin check and the
/// session caps.
async fn websocket(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let config = web.hub.config();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, host, web.tls.is_some(), &config.allowed_origins));
        if !allowed {
            tracing::info!(%peer, origin = ?origin, "WebSocket refused: origin not allowed");
            return (
                StatusCode::FORBIDDEN,
                "This origin may not open chat sessions here.\n",
            )
                .into_response();
        }
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    if web.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    // The upgrade counts against the login timeout, as a TLS handshake does.
    let login_deadline = tokio::time::Instant::now() + config.login_timeout;
    let admitted = web
        .admission
        .admit(peer.ip(), config.max_connections_per_address);
    let limit = config.max_frame_bytes;
    let web2 = Arc::clone(&web);
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            web2.sessions.track_future(async move {
                match admitted {
                    Ok(admitted) => {
                        connection::serve_over(
                            WsTransport::new(socket),
                            metrics::Transport::WebSocket,
                            peer,
                            web.hub.clone(),
                            web.shutdown.clone(),
                            login_deadline,
                        )
                        .await;
                        drop(admitted);
                    }
                    Err(refusal) => {
                        tracing::warn!(%peer, reason = %refusal.message(), "WebSocket session refused");
                        refuse(socket, &web.hub, refusal.message()).await;
                    }
                }
            })
        })
}

/// Tells a refused WebSocket client why, briefly, and closes.
async fn refuse(mut socket: WebSocket, hub: &Hub, message: String) {
    let config = hub.config();
    let package = ServerPackage::error("server", message);
    let Ok(frame) = codec::encode_packed(
        &package,
        config.max_package_bytes,
        config.compression_level,
        config.compress_min_bytes,
    ) else {
        return;
    };
    let body = frame.slice(4..);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        socket.send(Message::Binary(body)).await?;
        socket.close().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn origins() {
        let extra = vec!["https://chat.example.org".to_owned()];
        assert!(origin_allowed(
            "http://127.0.0.1:9080",
            Some("127.0.0.1:9080"),
            false,
            &[]
        ));
        assert!(!origin_allowed(
            "https://127.0.0.1:9080",
            Some("127.0.0.1:9080"),
            false,
            &[]
        ));
        assert!(!origin_allowed(
            "http://evil.example",
            Some("127.0.0.1:9080"),
            false,
            &[]
        ));
        assert!(origin_allowed(
            "https://chat.example.org",
            Some("x"),
            true,
            &extra
        ));
        assert!(origin_allowed(
            "HTTPS://Chat.Example.org/",
            None,
            true,
            &extra
        ));
        assert!(!origin_allowed("null", Some("x"), true, &extra));
    }
}

//! The web client's files, embedded in the binary (`src/web/static/`: plain
//! HTML, CSS and JavaScript modules, no framework, bundler or CDN), and the
//! security headers every response carries.
//!
//! The Content-Security-Policy allows scripts, styles and connections only
//! from the page's own origin (no inline script or style, no `eval`),
//! images from anywhere over HTTP(S) (attachment previews, loaded only
//! after a click), and no framing (`frame-ancestors 'none'`).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The policy every response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' https: http:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Its path under `/`.
    name: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes.
    body: &'static str,
}

/// Every file the client is made of.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("static/index.html"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("static/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("static/app.js"),
    },
    Asset {
        name: "protocol.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("static/protocol.js"),
    },
    Asset {
        name: "view.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("static/view.js"),
    },
];

fn serve(name: &str) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                // Small files, embedded: revalidating costs nothing, and a
                // new server version is picked up at once.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.body,
        )
            .into_response(),
        None => missing(),
    }
}

/// `/`: the client's page.
pub(crate) async fn index() -> Response {
    serve("index.html")
}

/// `/{file}`: one of the client's files.
pub(crate) async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

/// Anything else.
pub(crate) async fn not_found() -> Response {
    missing()
}

fn missing() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Adds the security headers to every response.
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

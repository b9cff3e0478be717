//! The web console: one page, its script and its style sheet, built into the binary and served
//! by the admin router without a key (the page holds no data; every call it makes to the API
//! carries the admin key the operator types, kept in the tab's memory only).

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};

/// The page.
const PAGE: &str = include_str!("../console/console.html");
/// Its script: plain JavaScript, no build step, no library.
const SCRIPT: &str = include_str!("../console/console.js");
/// Its style sheet.
const STYLE: &str = include_str!("../console/console.css");

/// The Content-Security-Policy of the page and its assets: nothing but the page's own script,
/// style sheet and API (same origin); no inline script or style, no framing, no forms posted
/// anywhere, no `<base>` rewriting where relative URLs point.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The console's routes, relative to where the admin router is mounted: the page at
/// `/console`, its assets beside it (the page names them relatively, so the router may be
/// nested under any path).
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/console",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONSOLE_CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

//! The axum version of the suites' app, and helpers to drive it.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use keygate::{Rejection, Verifier};
use keygate_axum::{Cost, Identity, RequireEnvironment, RequireScopes, RouteLimit};
use tower::ServiceExt;

use crate::Reply;

/// The axum app the suites drive:
/// - `GET /` public;
/// - `GET /hello` protected, answers `hello, {key name}`;
/// - `GET /orders` protected, requires `orders:read`;
/// - `GET /live` protected, requires a key of environment `live`;
/// - `GET /report` protected, costs 2 of the key's quotas, answers `{n} left` (the quota's
///   balance after the request, [`keygate::Identity::quota_remaining`]);
/// - `GET /free` protected, costs nothing of the key's quotas, answers as `/report`;
/// - `GET /write` protected, spends the caller's named limit `writes`, answers as `/hello`;
/// - `GET /read` protected, spends the caller's named limit `reads`, answers as `/hello`;
/// - `GET /sensitive` protected, answers whether the credential header was marked sensitive;
/// - `GET /maybe` behind an optional layer, answers the caller's name or `anonymous`.
pub fn axum_app(verifier: &Verifier) -> Router {
    let protected = Router::new()
        .route("/hello", get(hello))
        .route(
            "/orders",
            get(hello).route_layer(RequireScopes::all(["orders:read"])),
        )
        .route(
            "/live",
            get(hello).route_layer(RequireEnvironment::new("live")),
        )
        .route("/report", get(remaining).route_layer(Cost::new(2)))
        .route("/free", get(remaining).route_layer(Cost::new(0)))
        .route("/write", get(hello).route_layer(RouteLimit::new("writes")))
        .route("/read", get(hello).route_layer(RouteLimit::new("reads")))
        .route("/sensitive", get(sensitive))
        .route("/items/{id}", get(item))
        .route_layer(keygate_axum::layer(verifier.clone()).rate_limit_headers());
    let optional = Router::new().route("/maybe", get(maybe)).route_layer(
        keygate_axum::layer(verifier.clone())
            .optional()
            .rate_limit_headers(),
    );
    Router::new()
        .route("/", get(|| async { "public" }))
        .merge(protected)
        .merge(optional)
}

async fn hello(identity: Identity) -> String {
    format!("hello, {}", identity.name())
}

async fn remaining(identity: Identity) -> String {
    crate::quota_left(identity.quota_remaining())
}

async fn maybe(identity: Option<Identity>) -> String {
    identity.map_or_else(|| "anonymous".to_owned(), |i| i.name().to_owned())
}

async fn item(axum::extract::Path(id): axum::extract::Path<String>) -> String {
    format!("item {id}")
}

async fn sensitive(headers: HeaderMap) -> String {
    let marked = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .chain(headers.get_all("x-api-key").iter())
        .all(http::HeaderValue::is_sensitive);
    format!("sensitive={marked}")
}

/// A request to `path` from `peer`, with `headers`.
pub fn request(path: &str, headers: &[(&str, &[u8])], peer: &str) -> Request<Body> {
    let mut builder = Request::get(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(Body::empty()).expect("request");
    let peer: SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// Sends `request` through `app`.
pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        rejection: parts.extensions.get::<Rejection>().cloned(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// GET `path` through `app` with `Authorization: Bearer {key}`, from 127.0.0.1.
pub async fn send_bearer(app: &Router, path: &str, key: &str) -> Reply {
    let auth = format!("Bearer {key}");
    send(
        app,
        request(path, &[("authorization", auth.as_bytes())], "127.0.0.1:1"),
    )
    .await
}

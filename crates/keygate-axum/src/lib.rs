//! axum integration for [keygate]: the caller's [`Identity`] as an extractor, a
//! ready-made layer that reads axum's `ConnectInfo`, and re-exports of the route guards.
//!
//! | item | what it does |
//! | --- | --- |
//! | [`layer`] | [`ApiKeyLayer`] configured to read the client address from axum's `ConnectInfo` |
//! | [`Identity`] | extractor: the verified caller (or `Option<Identity>` on optional routes) |
//! | [`RequireScopes`] | route guard: `403 insufficient_scope` unless the key has the scopes |
//! | [`Cost`] | route guard: what a request to the route costs of the key's [quotas](keygate::quota) (`429 quota_exhausted` when one is used up) |
//! | [`RouteLimit`] | route guard: which of the key's [named limits](keygate::rate::NamedLimits) the route spends (`429 rate_limited` naming the limit when it is spent) |
//! | [`RequireEnvironment`] | route guard: `403 wrong_environment` unless the key belongs to the environment (`live`, `test`; see [`keygate::keyring`]) |
//!
//! # Example
//! ```
//! use axum::{Router, routing::get};
//! use keygate::{Keyring, MemoryStore, Verifier};
//! use keygate_axum::{Identity, RequireScopes};
//!
//! async fn hello(identity: Identity) -> String {
//!     format!("hello, {}", identity.name())
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder(Keyring::development("acme_test")?, MemoryStore::new()).build();
//! let app: Router = Router::new()
//!     .route("/orders", get(hello).route_layer(RequireScopes::all(["orders:read"])))
//!     .route("/hello", get(hello))
//!     .layer(keygate_axum::layer(verifier));
//! // axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//! # Ok(())
//! # }
//! ```
//!
//! Serve with `into_make_service_with_connect_info::<SocketAddr>()` so IP restrictions see the
//! client address; without it, keys restricted to IP ranges are refused (fail closed).

mod identity;

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;

pub use identity::{Identity, IdentityRejection};
pub use keygate::{ApiKeyLayer, Cost, RequireEnvironment, RequireScopes, RouteLimit};

/// An [`ApiKeyLayer`] for `verifier` that reads the peer address from axum's
/// `ConnectInfo<SocketAddr>` (falling back to keygate's own [`keygate::PeerAddr`]).
pub fn layer(verifier: keygate::Verifier) -> ApiKeyLayer {
    ApiKeyLayer::new(verifier)
        .peer_ip(connect_info_peer_ip)
        .route(matched_path)
}

/// The route template axum matched (`MatchedPath`), for audit events. Present when the key layer
/// is added with `route_layer` (or on a route); `Router::layer` runs before routing, so its
/// events have no route.
#[must_use]
pub fn matched_path(
    _uri: &http::Uri,
    extensions: &http::Extensions,
) -> Option<std::sync::Arc<str>> {
    extensions
        .get::<axum::extract::MatchedPath>()
        .map(|path| keygate::gate::shared_route(path.as_str()))
}

/// Reads the client address from `ConnectInfo<SocketAddr>`, else keygate's default sources.
#[must_use]
pub fn connect_info_peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .or_else(|| keygate::layer::default_peer_ip(extensions))
}

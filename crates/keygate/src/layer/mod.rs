//! The tower layer: authenticate every request, put the caller's [`Identity`](crate::Identity)
//! into the request extensions, answer rejections itself.
//!
//! [`ApiKeyLayer`] wraps any `Service<http::Request<B>>` whose response body can be built
//! `From<&'static str>` (axum's `Body`, `http_body_util::Full<Bytes>`, `String`, …). It works with axum's
//! `Router::layer` and `route_layer`, tonic (`keygate-tonic` configures it to answer gRPC
//! statuses), hyper, or any tower stack.
//!
//! - A valid key: the request goes on with an `Arc<Identity>` in its extensions; the credential
//!   headers are marked sensitive first, so well-behaved loggers redact them.
//! - Anything else: the layer answers (see [`crate::rejection`] for statuses and bodies), the inner
//!   service is not called, and the [`Rejection`](crate::Rejection) is in the response extensions.
//!   Rejections are `Ok(response)`, never `Err`, so outer layers still see them.
//!
//! The client address is read from the request extensions by a [`PeerIpFn`]; the default
//! understands [`PeerAddr`] and a bare `SocketAddr`. `keygate-axum` configures axum's
//! `ConnectInfo`.
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use keygate::{ApiKeyLayer, Identity, Keyring, MemoryStore, NewKey, Verifier};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder(Keyring::development("acme_test")?, MemoryStore::new()).build();
//! let created = verifier.admin().create_key(NewKey::new("docs")).await?;
//!
//! let service = ServiceBuilder::new()
//!     .layer(ApiKeyLayer::new(verifier))
//!     .service(service_fn(|req: Request<()>| async move {
//!         let identity = req.extensions().get::<std::sync::Arc<Identity>>().cloned();
//!         let name = identity.map(|i| i.name().to_owned()).unwrap_or_default();
//!         Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(name)))
//!     }));
//!
//! let request = Request::get("/")
//!     .header("authorization", format!("Bearer {}", created.key.expose_secret()))
//!     .body(())?;
//! let response = service.clone().oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let response = service.oneshot(Request::get("/").body(())?).await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! # Ok(())
//! # }
//! ```

mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;

use std::net::{IpAddr, SocketAddr};

pub use future::ResponseFuture;
pub use layer::ApiKeyLayer;
pub use service::ApiKeyService;

/// Reads the connection's peer address from request extensions.
pub type PeerIpFn = fn(&http::Extensions) -> Option<IpAddr>;

/// Names the matched route's template (e.g. `/orders/{id}`) for audit events, from the request's
/// URI and extensions; called only while audit is enabled. Never return the raw path of a route
/// with parameters, or the query: they may carry ids or keys. `keygate-axum` reads axum's
/// `MatchedPath` extension; `keygate-tonic` names the gRPC method, which is the path; the default
/// knows none.
pub type RouteFn = fn(&http::Uri, &http::Extensions) -> Option<std::sync::Arc<str>>;

/// The default [`RouteFn`]: no route template.
#[must_use]
pub fn no_route(_: &http::Uri, _: &http::Extensions) -> Option<std::sync::Arc<str>> {
    None
}

/// The connection's peer address, as a request extension. Insert it from your server loop when
/// your framework does not provide one (axum users: `keygate-axum` reads `ConnectInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The default [`PeerIpFn`]: a [`PeerAddr`] extension, else a bare `SocketAddr` extension.
#[must_use]
pub fn default_peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<PeerAddr>()
        .map(|peer| peer.0.ip())
        .or_else(|| extensions.get::<SocketAddr>().map(SocketAddr::ip))
}

use std::sync::Arc;

use http::HeaderName;
use tower_layer::Layer;

use super::{ApiKeyService, PeerIpFn, RouteFn, default_peer_ip, no_route};
use crate::rejection::ProblemJson;
use crate::verifier::Verifier;

/// Authenticates requests with a [`Verifier`]. See the [module docs](crate::layer).
#[derive(Clone, Debug)]
#[must_use]
pub struct ApiKeyLayer<R = ProblemJson> {
    pub(super) verifier: Verifier,
    // Behind an `Arc`: each request that reaches verification holds a handle to it, and a
    // refcount is cheaper than cloning a responder (realm and challenge header values).
    pub(super) responder: Arc<R>,
    pub(super) peer_ip: PeerIpFn,
    pub(super) route: RouteFn,
    pub(super) optional: bool,
    pub(super) rate_limit_headers: bool,
    pub(super) credential_header: Option<HeaderName>,
}

impl ApiKeyLayer {
    /// A layer that requires a valid key on every request, answering rejections with
    /// [`ProblemJson`] in realm `api`.
    pub fn new(verifier: Verifier) -> Self {
        let credential_header = verifier
            .credential_header()
            .and_then(|name| HeaderName::from_bytes(name.as_bytes()).ok());
        Self {
            verifier,
            responder: Arc::new(ProblemJson::default()),
            peer_ip: default_peer_ip,
            route: no_route,
            optional: false,
            rate_limit_headers: false,
            credential_header,
        }
    }

    /// Names the realm in `WWW-Authenticate` challenges.
    ///
    /// # Panics
    /// If `realm` contains `"`, `\` or control characters.
    pub fn realm(mut self, realm: &str) -> Self {
        self.responder = Arc::new(ProblemJson::with_realm(realm));
        self
    }
}

impl<R> ApiKeyLayer<R> {
    /// Shapes rejection responses yourself: `f` receives the [`Rejection`](crate::Rejection)
    /// (use its `status()`, `problem()` and `reason()`) and returns the response. The rejection
    /// is still inserted into the response extensions.
    ///
    /// Keep the client-facing answer as uniform as the default: do not reveal whether a key
    /// exists, or why it failed.
    pub fn with_rejection_response<R2>(self, responder: R2) -> ApiKeyLayer<R2> {
        ApiKeyLayer {
            verifier: self.verifier,
            responder: Arc::new(responder),
            peer_ip: self.peer_ip,
            route: self.route,
            optional: self.optional,
            rate_limit_headers: self.rate_limit_headers,
            credential_header: self.credential_header,
        }
    }

    /// Lets requests *without any credential* through, with no identity in their extensions
    /// (handlers use `Option<Identity>`). A presented but invalid key is still refused.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Where audit events find the matched route's template (see [`RouteFn`]).
    pub fn route(mut self, route: RouteFn) -> Self {
        self.route = route;
        self
    }

    /// Adds the IETF draft's `RateLimit-Policy` and `RateLimit` fields to allowed responses of
    /// rate-limited keys (`"key";q=100;w=60` and `"key";r=99;t=1`). Off by default. Refused
    /// (429) responses carry them, with `Retry-After`, either way.
    pub fn rate_limit_headers(mut self) -> Self {
        self.rate_limit_headers = true;
        self
    }

    /// How to read the client's address from request extensions.
    pub fn peer_ip(mut self, peer_ip: PeerIpFn) -> Self {
        self.peer_ip = peer_ip;
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

impl<S, R: Clone> Layer<S> for ApiKeyLayer<R> {
    type Service = ApiKeyService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService {
            inner,
            layer: self.clone(),
        }
    }
}

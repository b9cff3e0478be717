use std::sync::Arc;

use tower_layer::Layer;

use super::{ApiKeyService, PeerIpFn, RouteFn, default_peer_ip, no_route};
use crate::gate::Gate;
use crate::rejection::ProblemJson;
use crate::verifier::Verifier;

/// Authenticates requests with a [`Verifier`]. See the [module docs](crate::layer).
#[derive(Clone, Debug)]
#[must_use]
pub struct ApiKeyLayer<R = ProblemJson> {
    pub(super) gate: Gate,
    pub(super) responder: R,
    pub(super) peer_ip: PeerIpFn,
    pub(super) route: RouteFn,
}

/// What every request of a layer's services shares: one `Arc` handle per request.
#[derive(Debug)]
pub(super) struct Shared<R> {
    pub(super) gate: Gate,
    pub(super) responder: R,
    pub(super) peer_ip: PeerIpFn,
    pub(super) route: RouteFn,
}

impl ApiKeyLayer {
    /// A layer that requires a valid key on every request, answering rejections with
    /// [`ProblemJson`] in realm `api`.
    pub fn new(verifier: Verifier) -> Self {
        Self::from_gate(Gate::new(verifier))
    }

    /// A layer over a configured [`Gate`], answering rejections with the gate's
    /// [`ProblemJson`].
    pub fn from_gate(gate: Gate) -> Self {
        Self {
            responder: gate.problem_json().clone(),
            gate,
            peer_ip: default_peer_ip,
            route: no_route,
        }
    }

    /// Names the realm in `WWW-Authenticate` challenges.
    ///
    /// # Panics
    /// If `realm` contains `"`, `\` or control characters.
    pub fn realm(mut self, realm: &str) -> Self {
        self.gate = self.gate.realm(realm);
        self.responder = self.gate.problem_json().clone();
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
            gate: self.gate,
            responder,
            peer_ip: self.peer_ip,
            route: self.route,
        }
    }

    /// Lets requests *without any credential* through, with no identity in their extensions
    /// (handlers use `Option<Identity>`). A presented but invalid key is still refused.
    pub fn optional(mut self) -> Self {
        self.gate = self.gate.optional();
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
        self.gate = self.gate.rate_limit_headers();
        self
    }

    /// How to read the client's address from request extensions.
    pub fn peer_ip(mut self, peer_ip: PeerIpFn) -> Self {
        self.peer_ip = peer_ip;
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &crate::Verifier {
        self.gate.verifier()
    }
}

impl<S, R: Clone> Layer<S> for ApiKeyLayer<R> {
    type Service = ApiKeyService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService {
            inner,
            shared: Arc::new(Shared {
                gate: self.gate.clone(),
                responder: self.responder.clone(),
                peer_ip: self.peer_ip,
                route: self.route,
            }),
        }
    }
}

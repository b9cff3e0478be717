//! A route guard: require scopes of the authenticated key.
//!
//! [`RequireScopes`] is a tower layer placed *inside* [`ApiKeyLayer`](crate::ApiKeyLayer) (with
//! axum: `.route_layer(RequireScopes::all(["orders:read"]))` on the route, the key layer on the
//! router). It reads the `Arc<Identity>` the key layer inserted and answers
//! `403` with `WWW-Authenticate: Bearer realm="api", error="insufficient_scope", scope="…"` when
//! the key lacks the scopes; a refused request spends no [quota](crate::quota) (the key
//! layer's charge is refunded). A request with no identity at all (the key layer is missing, or is
//! [`optional`](crate::ApiKeyLayer::optional) and no key was sent) gets `401`: it fails closed.
//!
//! Scope matching (exact, plus `resource:*`) is described in [`crate::scope`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::identity::Identity;
use crate::quota::QuotaReceipt;
use crate::rejection::{ProblemJson, Reason, Rejection, RejectionResponse, respond};
use crate::scope::ScopeRequirement;

/// Requires scopes of the caller's key. See the [module docs](self).
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireScopes<R = ProblemJson> {
    requirement: Arc<ScopeRequirement>,
    responder: R,
}

impl RequireScopes {
    /// Requires every one of `scopes`.
    ///
    /// # Panics
    /// If a scope is malformed: this is route configuration, caught at start-up.
    pub fn all<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::new(ScopeRequirement::all(scopes).unwrap_or_else(|e| panic!("keygate: {e}")))
    }

    /// Requires at least one of `scopes`.
    ///
    /// # Panics
    /// If a scope is malformed.
    pub fn any<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::new(ScopeRequirement::any(scopes).unwrap_or_else(|e| panic!("keygate: {e}")))
    }

    /// Requires `requirement`.
    pub fn new(requirement: ScopeRequirement) -> Self {
        Self {
            requirement: Arc::new(requirement),
            responder: ProblemJson::default(),
        }
    }

    /// Names the realm in the challenge.
    ///
    /// # Panics
    /// If `realm` contains `"`, `\` or control characters.
    pub fn realm(mut self, realm: &str) -> Self {
        self.responder = ProblemJson::with_realm(realm);
        self
    }
}

impl<R> RequireScopes<R> {
    /// Shapes the rejection response yourself (see
    /// [`ApiKeyLayer::with_rejection_response`](crate::ApiKeyLayer::with_rejection_response)).
    pub fn with_rejection_response<R2>(self, responder: R2) -> RequireScopes<R2> {
        RequireScopes {
            requirement: self.requirement,
            responder,
        }
    }

    /// The requirement.
    pub fn requirement(&self) -> &ScopeRequirement {
        &self.requirement
    }

    /// Checks an identity (or its absence) against the requirement. A refusal is counted in
    /// [`GUARD_REFUSALS`](crate::metrics::GUARD_REFUSALS) (the key check counted the request
    /// already, see [`crate::metrics`]).
    ///
    /// # Errors
    /// `MissingCredentials` without an identity, `InsufficientScope` when scopes are lacking.
    pub fn check(&self, identity: Option<&Identity>) -> Result<(), Rejection> {
        match identity {
            None => {
                crate::metrics::guard_refused(Reason::MissingCredentials);
                tracing::debug!(target: "keygate", "no identity in the request: is the ApiKeyLayer installed outside RequireScopes?");
                Err(Rejection::new(Reason::MissingCredentials))
            }
            Some(identity) if self.requirement.is_met_by(identity.scopes()) => Ok(()),
            Some(identity) => {
                crate::metrics::guard_refused(Reason::InsufficientScope);
                tracing::debug!(target: "keygate", key_id = %identity.key_id(), outcome = "denied", reason = Reason::InsufficientScope.as_str());
                Err(Rejection::insufficient_scope(
                    Some(identity.key_id()),
                    Arc::clone(self.requirement.scope_param()),
                ))
            }
        }
    }
}

impl<S, R: Clone> Layer<S> for RequireScopes<R> {
    type Service = RequireScopesService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopesService {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service made by [`RequireScopes`].
#[derive(Clone, Debug)]
pub struct RequireScopesService<S, R> {
    inner: S,
    guard: RequireScopes<R>,
}

impl<S, R, ReqB, ResB> Service<Request<ReqB>> for RequireScopesService<S, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    R: RejectionResponse<ResB>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let identity = request.extensions().get::<Arc<Identity>>().map(|i| &**i);
        match self.guard.check(identity) {
            Ok(()) => GuardFuture::inner(self.inner.call(request)),
            Err(rejection) => GuardFuture::refused(
                respond(&self.guard.responder, rejection),
                request.extensions_mut().remove::<QuotaReceipt>(),
            ),
        }
    }
}

impl<F, B> GuardFuture<F, B> {
    /// The guard passed: the inner service's future.
    pub(crate) fn inner(future: F) -> Self {
        Self {
            state: GuardState::Inner { future },
        }
    }

    /// The guard refused: this response, once the request's quota charge (if any) is
    /// refunded, so a refused request spends nothing.
    pub(crate) fn refused(response: Response<B>, receipt: Option<QuotaReceipt>) -> Self {
        Self {
            state: GuardState::Rejected {
                refund: receipt
                    .map(|receipt| Box::pin(crate::quota::refund_refused(receipt)) as RefundFuture),
                response: Some(response),
            },
        }
    }
}

/// A refused request's quota refund (boxed: only refusals of keys with a quota make one).
type RefundFuture = Pin<Box<dyn Future<Output = QuotaReceipt> + Send>>;

pin_project! {
    /// Response future of [`RequireScopesService`] and
    /// [`RequireEnvironmentService`](crate::require_environment::RequireEnvironmentService):
    /// the inner service's, or the refusal.
    pub struct GuardFuture<F, B> {
        #[pin]
        state: GuardState<F, B>,
    }
}

pin_project! {
    #[project = GuardProj]
    enum GuardState<F, B> {
        Inner { #[pin] future: F },
        Rejected { refund: Option<RefundFuture>, response: Option<Response<B>> },
    }
}

impl<F, B, E> Future for GuardFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            GuardProj::Inner { future } => future.poll(cx),
            GuardProj::Rejected { refund, response } => {
                let refunded = match refund {
                    Some(future) => {
                        let receipt = std::task::ready!(future.as_mut().poll(cx));
                        *refund = None;
                        Some(receipt)
                    }
                    None => None,
                };
                match response.take() {
                    Some(mut response) => {
                        // The key layer's `RateLimit` fields report the balance refunded.
                        if let Some(receipt) = refunded {
                            response.extensions_mut().insert(receipt);
                        }
                        Poll::Ready(Ok(response))
                    }
                    None => panic!("keygate GuardFuture polled after completion"),
                }
            }
        }
    }
}

impl<F, B> std::fmt::Debug for GuardFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardFuture").finish_non_exhaustive()
    }
}

//! A route guard: what a request to the route costs of the caller's [quotas](crate::quota).
//!
//! The key layer charges every request of a key with a quota (its own or its owner's) the
//! default cost, 1, once the key is valid and its rate limit allowed it, and puts a
//! [`QuotaReceipt`] into the request. An outer layer cannot know which route the request will
//! reach, so a route that costs more (or less) says so with [`Cost`], a tower layer placed
//! *inside* [`ApiKeyLayer`](crate::ApiKeyLayer) (with axum: `.route_layer(Cost::new(5))` on the
//! route). It settles the request's cost to `n`:
//!
//! - more than was charged: the difference is charged, all or nothing, from every line (the
//!   key's quota and its owner's); when a line has less left, what the key layer charged is
//!   refunded and the request is answered `429 quota_exhausted` (`Retry-After` at the next
//!   period or refill, and the `"quota"` item of the `RateLimit` fields);
//! - less: the excess is refunded (`Cost::new(0)`: a free route);
//! - a key without any quota passes untouched; a request without an identity (the key layer
//!   missing, or optional and no key sent) gets `401`: it fails closed, as
//!   [`RequireScopes`](crate::RequireScopes) does.
//!
//! The settled receipt goes on in the request (nested guards compose: the innermost `Cost`
//! decides the total) and into the response, so the key layer's `RateLimit` fields report what
//! the route really spent. Guards that refuse a request ([`RequireScopes`](crate::RequireScopes),
//! [`RequireEnvironment`](crate::RequireEnvironment)) refund its charge. The handler's own
//! responses, errors included, spend what the route costs.
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use keygate::quota::Quota;
//! use keygate::{ApiKeyLayer, Cost, Keyring, MemoryStore, NewKey, Verifier};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder(Keyring::development("acme_live")?, MemoryStore::new()).build();
//! let quota: Quota = "5/day".parse()?;
//! let key = verifier.admin().create_key(NewKey::new("reports").quota(quota)).await?.key;
//!
//! // A report costs 2 of the key's 5 a day.
//! let reports = ServiceBuilder::new()
//!     .layer(ApiKeyLayer::new(verifier))
//!     .layer(Cost::new(2))
//!     .service(service_fn(|_: Request<()>| async {
//!         Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("queued")))
//!     }));
//!
//! let mut statuses = Vec::new();
//! for _ in 0..3 {
//!     let request = Request::post("/reports")
//!         .header("authorization", format!("Bearer {}", key.expose_secret()))
//!         .body(())?;
//!     statuses.push(reports.clone().oneshot(request).await?.status());
//! }
//! assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::identity::Identity;
use crate::quota::{QuotaReceipt, SettleError};
use crate::rejection::{ProblemJson, Reason, Rejection, RejectionResponse, respond};

/// Sets what a request to the route costs of the caller's quotas. See the
/// [module docs](self).
#[derive(Clone, Debug)]
#[must_use]
pub struct Cost<R = ProblemJson> {
    units: u64,
    responder: R,
}

impl Cost {
    /// A route costing `units` (0: free).
    pub fn new(units: u64) -> Self {
        Self {
            units,
            responder: ProblemJson::default(),
        }
    }
}

impl<R> Cost<R> {
    /// Shapes the rejection response yourself (see
    /// [`ApiKeyLayer::with_rejection_response`](crate::ApiKeyLayer::with_rejection_response)).
    pub fn with_rejection_response<R2>(self, responder: R2) -> Cost<R2> {
        Cost {
            units: self.units,
            responder,
        }
    }

    /// The route's cost.
    #[must_use]
    pub fn units(&self) -> u64 {
        self.units
    }

    /// Settles `receipt` (if the key has a quota) to this route's cost; the refusal when the
    /// request has no identity, a quota is exhausted, or the meter fails. On success the
    /// receipt says what the request spent now.
    ///
    /// # Errors
    /// `MissingCredentials` (401) without an identity, `QuotaExhausted` (429),
    /// `QuotaUnavailable` (503).
    pub async fn settle(
        &self,
        identity: Option<&Identity>,
        receipt: Option<&mut QuotaReceipt>,
    ) -> Result<(), Rejection> {
        let Some(identity) = identity else {
            crate::metrics::guard_refused(Reason::MissingCredentials);
            tracing::debug!(target: "keygate", "no identity in the request: is the ApiKeyLayer installed outside Cost?");
            return Err(Rejection::new(Reason::MissingCredentials));
        };
        let Some(receipt) = receipt else {
            return Ok(());
        };
        let id = identity.key_id();
        let settled = receipt.settle(self.units).await;
        identity.set_quota_remaining(receipt.remaining());
        settled.map_err(|error| match error {
            SettleError::Exhausted(report) => {
                crate::metrics::guard_refused(Reason::QuotaExhausted);
                tracing::debug!(target: "keygate", key_id = %id, outcome = "denied", reason = Reason::QuotaExhausted.as_str());
                Rejection::quota_exhausted(Some(id), report, None)
            }
            SettleError::Meter(error) => {
                crate::metrics::guard_refused(Reason::QuotaUnavailable);
                tracing::warn!(target: "keygate", key_id = %id, %error, "quota meter failed");
                Rejection::for_key(Reason::QuotaUnavailable, id)
            }
        })
    }
}

impl<S, R: Clone> Layer<S> for Cost<R> {
    type Service = CostService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        CostService {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service made by [`Cost`].
#[derive(Clone, Debug)]
pub struct CostService<S, R> {
    inner: S,
    guard: Cost<R>,
}

impl<S, R> CostService<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Response future of [`CostService`]: boxed, as settling a quota may await the meter (only
/// requests of keys with a quota settle anything).
pub type CostFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, R, ReqB, ResB> Service<Request<ReqB>> for CostService<S, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    R: RejectionResponse<ResB>,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = CostFuture<Response<ResB>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        // The ready service goes into the future; a fresh clone stays for the next call.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let guard = self.guard.clone();
        Box::pin(async move {
            let identity = request.extensions().get::<Arc<Identity>>().cloned();
            let mut receipt = request.extensions_mut().remove::<QuotaReceipt>();
            if let Err(rejection) = guard.settle(identity.as_deref(), receipt.as_mut()).await {
                return Ok(respond(&guard.responder, rejection));
            }
            let Some(receipt) = receipt else {
                return inner.call(request).await;
            };
            request.extensions_mut().insert(receipt.clone());
            let mut response = inner.call(request).await?;
            // For the key layer's `RateLimit` fields (unless an inner guard refused and
            // refunded: its response says so with its rejection).
            if response.extensions().get::<Rejection>().is_none() {
                response.extensions_mut().insert(receipt);
            }
            Ok(response)
        })
    }
}

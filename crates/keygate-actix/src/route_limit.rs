use std::future::{Ready, ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{Error, HttpMessage};
use keygate::quota::QuotaReceipt;
use keygate::rate::LimitName;
use keygate::route_limit::RouteLimitItems;
use keygate::{Identity, ProblemJson, Rejection};

use crate::response::{ActixRejectionResponse, respond};

type LocalBoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// Chooses which of the caller's [named limits](keygate::rate::NamedLimits) a route spends
/// from; wrap a scope or resource *inside* [`ApiKeyAuth`] (in actix the last `wrap` runs
/// first).
///
/// Behaves exactly as `keygate::RouteLimit` does for tower: one request is taken from the
/// key's limit of that name (or the verifier's default for the name) and from its owner's; a
/// spent limit answers `429 rate_limited` with the limit's own item in the `RateLimit` fields
/// (and refunds the request's quota charge); a key without a limit of that name passes
/// untouched; a request without an identity gets `401` (fail closed).
///
/// [`ApiKeyAuth`]: crate::ApiKeyAuth
#[derive(Clone, Debug)]
#[must_use]
pub struct RouteLimit<R = ProblemJson> {
    guard: keygate::RouteLimit,
    responder: R,
}

impl RouteLimit {
    /// A route that spends from the limit named `name`.
    ///
    /// # Panics
    /// If `name` is not a valid [`LimitName`]: route configuration, caught at start-up.
    pub fn new(name: &str) -> Self {
        Self {
            guard: keygate::RouteLimit::new(name),
            responder: ProblemJson::default(),
        }
    }

    /// A route that spends from the limit `name`.
    pub fn named(name: LimitName) -> Self {
        Self {
            guard: keygate::RouteLimit::named(name),
            responder: ProblemJson::default(),
        }
    }
}

impl<R> RouteLimit<R> {
    /// Shapes the rejection response yourself (see
    /// [`ApiKeyAuth::with_rejection_response`](crate::ApiKeyAuth::with_rejection_response)).
    pub fn with_rejection_response<R2>(self, responder: R2) -> RouteLimit<R2> {
        RouteLimit {
            guard: self.guard,
            responder,
        }
    }
}

impl<S, B, R> Transform<S, ServiceRequest> for RouteLimit<R>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    R: ActixRejectionResponse,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RouteLimitMiddleware<S, R>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RouteLimitMiddleware {
            service: Rc::new(service),
            config: Rc::new(self.clone()),
        }))
    }
}

/// The middleware made by [`RouteLimit`].
#[derive(Debug)]
pub struct RouteLimitMiddleware<S, R> {
    service: Rc<S>,
    config: Rc<RouteLimit<R>>,
}

impl<S, B, R> Service<ServiceRequest> for RouteLimitMiddleware<S, R>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    R: ActixRejectionResponse,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let config = Rc::clone(&self.config);
        Box::pin(async move {
            let identity = request.extensions().get::<Arc<Identity>>().cloned();
            let decision = match config.guard.check(identity.as_deref()).await {
                Ok(decision) => decision,
                Err(rejection) => {
                    let receipt = request.extensions_mut().remove::<QuotaReceipt>();
                    let mut response = respond(&config.responder, rejection);
                    if let Some(mut receipt) = receipt {
                        // Refused requests spend nothing.
                        if let Err(error) = receipt.refund_all().await {
                            tracing::warn!(target: "keygate", %error, "could not refund the quota charge of a refused request");
                        }
                        // The key middleware's `RateLimit` fields report the balance refunded.
                        response.extensions_mut().insert(receipt);
                    }
                    return Ok(request.into_response(response).map_into_right_body());
                }
            };
            let mut response = service.call(request).await?;
            if let Some(decision) = decision {
                // For the key middleware's `RateLimit` fields (unless an inner guard refused:
                // its response carries its own).
                let mut extensions = response.response_mut().extensions_mut();
                if extensions.get::<Rejection>().is_none() {
                    match extensions.get_mut::<RouteLimitItems>() {
                        Some(items) => items.push_front(config.guard.name(), decision),
                        None => {
                            let mut items = RouteLimitItems::default();
                            items.push_front(config.guard.name(), decision);
                            extensions.insert(items);
                        }
                    }
                }
            }
            Ok(response.map_into_left_body())
        })
    }
}

use std::future::{Ready, ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{Error, HttpMessage};
use keygate::quota::QuotaReceipt;
use keygate::{Identity, ProblemJson, Rejection};

use crate::response::{ActixRejectionResponse, respond};

type LocalBoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// Sets what a request to the route costs of the caller's [quotas](keygate::quota); wrap a
/// scope or resource *inside* [`ApiKeyAuth`] (in actix the last `wrap` runs first).
///
/// Behaves exactly as `keygate::Cost` does for tower: the key check charged the default cost
/// (1); this settles the request's cost to `n`, charging the difference (all or nothing) or
/// refunding the excess (`Cost::new(0)`: a free route). A quota with less left refunds what
/// was charged and answers `429 quota_exhausted`; a key without any quota passes untouched; a
/// request without an identity gets `401` (fail closed).
///
/// [`ApiKeyAuth`]: crate::ApiKeyAuth
#[derive(Clone, Debug)]
#[must_use]
pub struct Cost<R = ProblemJson> {
    cost: keygate::Cost,
    responder: R,
}

impl Cost {
    /// A route costing `units` (0: free).
    pub fn new(units: u64) -> Self {
        Self {
            cost: keygate::Cost::new(units),
            responder: ProblemJson::default(),
        }
    }
}

impl<R> Cost<R> {
    /// Shapes the rejection response yourself.
    pub fn with_rejection_response<R2>(self, responder: R2) -> Cost<R2> {
        Cost {
            cost: self.cost,
            responder,
        }
    }
}

impl<S, B, R> Transform<S, ServiceRequest> for Cost<R>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    R: ActixRejectionResponse,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = CostMiddleware<S, R>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CostMiddleware {
            service: Rc::new(service),
            config: Rc::new(self.clone()),
        }))
    }
}

/// The service made by [`Cost`].
#[derive(Debug)]
pub struct CostMiddleware<S, R> {
    service: Rc<S>,
    config: Rc<Cost<R>>,
}

impl<S, B, R> Service<ServiceRequest> for CostMiddleware<S, R>
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
            let mut receipt = request.extensions_mut().remove::<QuotaReceipt>();
            if let Err(rejection) = config
                .cost
                .settle(identity.as_deref(), receipt.as_mut())
                .await
            {
                let response = respond(&config.responder, rejection);
                return Ok(request.into_response(response).map_into_right_body());
            }
            let Some(receipt) = receipt else {
                return service
                    .call(request)
                    .await
                    .map(ServiceResponse::map_into_left_body);
            };
            request.extensions_mut().insert(receipt.clone());
            let mut response = service.call(request).await?;
            // For the key middleware's `RateLimit` fields (unless an inner guard refused and
            // refunded: its response says so with its rejection).
            if response
                .response()
                .extensions()
                .get::<Rejection>()
                .is_none()
            {
                response.response_mut().extensions_mut().insert(receipt);
            }
            Ok(response.map_into_left_body())
        })
    }
}

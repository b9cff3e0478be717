//! The middleware shared by the route guards ([`RequireScopes`](crate::RequireScopes),
//! [`RequireEnvironment`](crate::RequireEnvironment)): read the identity [`ApiKeyAuth`]
//! inserted, ask the core's guard, and either call the route or answer its rejection (after
//! refunding the request's quota charge: a refused request spends nothing).
//!
//! [`ApiKeyAuth`]: crate::ApiKeyAuth

use std::future::{Ready, ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, forward_ready};
use actix_web::{Error, HttpMessage};
use keygate::quota::QuotaReceipt;
use keygate::{Identity, Rejection};

use crate::response::{ActixRejectionResponse, respond};

type LocalBoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// A core route guard: decides on the caller's identity (none: no key was checked).
pub trait RouteGuard: sealed::Sealed + Clone + 'static {
    /// Passes, or the rejection to answer.
    ///
    /// # Errors
    /// The guard's refusal (`401` without an identity, `403` for the wrong one).
    fn check(&self, identity: Option<&Identity>) -> Result<(), Rejection>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for keygate::RequireScopes {}
    impl Sealed for keygate::RequireEnvironment {}
}

impl RouteGuard for keygate::RequireScopes {
    fn check(&self, identity: Option<&Identity>) -> Result<(), Rejection> {
        keygate::RequireScopes::check(self, identity)
    }
}

impl RouteGuard for keygate::RequireEnvironment {
    fn check(&self, identity: Option<&Identity>) -> Result<(), Rejection> {
        keygate::RequireEnvironment::check(self, identity)
    }
}

/// The service a route guard makes (`RequireScopesMiddleware`, `RequireEnvironmentMiddleware`).
#[derive(Debug)]
pub struct GuardMiddleware<S, G, R> {
    service: Rc<S>,
    config: Rc<(G, R)>,
}

/// The transform's future: the middleware around `service`.
pub(crate) fn wrap<S, G, R>(
    service: S,
    guard: &G,
    responder: &R,
) -> Ready<Result<GuardMiddleware<S, G, R>, ()>>
where
    G: Clone,
    R: Clone,
{
    ready(Ok(GuardMiddleware {
        service: Rc::new(service),
        config: Rc::new((guard.clone(), responder.clone())),
    }))
}

impl<S, B, G, R> Service<ServiceRequest> for GuardMiddleware<S, G, R>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    G: RouteGuard,
    R: ActixRejectionResponse,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let (guard, responder) = &*self.config;
        let verdict = {
            let extensions = request.extensions();
            guard.check(extensions.get::<Arc<Identity>>().map(|i| &**i))
        };
        match verdict {
            Ok(()) => {
                let future = self.service.call(request);
                Box::pin(async move { future.await.map(ServiceResponse::map_into_left_body) })
            }
            Err(rejection) => {
                let response = respond(responder, rejection);
                let receipt = request.extensions_mut().remove::<QuotaReceipt>();
                let mut response = request.into_response(response).map_into_right_body();
                match receipt {
                    None => Box::pin(ready(Ok(response))),
                    Some(mut receipt) => Box::pin(async move {
                        if let Err(error) = receipt.refund_all().await {
                            tracing::warn!(target: "keygate", %error, "could not refund the quota charge of a refused request");
                        }
                        // The key middleware's `RateLimit` fields report the balance refunded.
                        response.response_mut().extensions_mut().insert(receipt);
                        Ok(response)
                    }),
                }
            }
        }
    }
}

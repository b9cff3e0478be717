use std::future::{Ready, ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{Error, HttpMessage};
use keygate::{ProblemJson, ScopeRequirement};

use crate::response::{ActixRejectionResponse, respond};

type LocalBoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// Requires scopes of the caller's key; wrap a scope or resource *inside* [`ApiKeyAuth`]
/// (in actix the last `wrap` runs first, so put `ApiKeyAuth` on the app or after this guard).
///
/// Answers exactly as `keygate::RequireScopes` does for tower: `403` with
/// `WWW-Authenticate: Bearer realm="api", error="insufficient_scope", scope="…"`, or `401` when
/// there is no identity at all (fail closed).
///
/// [`ApiKeyAuth`]: crate::ApiKeyAuth
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireScopes<R = ProblemJson> {
    guard: keygate::RequireScopes,
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
        Self::from_guard(keygate::RequireScopes::all(scopes))
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
        Self::from_guard(keygate::RequireScopes::any(scopes))
    }

    /// Requires `requirement`.
    pub fn new(requirement: ScopeRequirement) -> Self {
        Self::from_guard(keygate::RequireScopes::new(requirement))
    }

    fn from_guard(guard: keygate::RequireScopes) -> Self {
        Self {
            guard,
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
    /// Shapes the rejection response yourself.
    pub fn with_rejection_response<R2>(self, responder: R2) -> RequireScopes<R2> {
        RequireScopes {
            guard: self.guard,
            responder,
        }
    }
}

impl<S, B, R> Transform<S, ServiceRequest> for RequireScopes<R>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    R: ActixRejectionResponse,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RequireScopesMiddleware<S, R>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequireScopesMiddleware {
            service: Rc::new(service),
            config: Rc::new(self.clone()),
        }))
    }
}

/// The service made by [`RequireScopes`].
#[derive(Debug)]
pub struct RequireScopesMiddleware<S, R> {
    service: Rc<S>,
    config: Rc<RequireScopes<R>>,
}

impl<S, B, R> Service<ServiceRequest> for RequireScopesMiddleware<S, R>
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
        let verdict = {
            let extensions = request.extensions();
            let identity = extensions.get::<Arc<keygate::Identity>>().map(|i| &**i);
            self.config.guard.check(identity)
        };
        match verdict {
            Ok(()) => {
                let future = self.service.call(request);
                Box::pin(async move { future.await.map(ServiceResponse::map_into_left_body) })
            }
            Err(rejection) => {
                let response = respond(&self.config.responder, rejection);
                Box::pin(ready(Ok(request
                    .into_response(response)
                    .map_into_right_body())))
            }
        }
    }
}

use std::future::Ready;

use actix_web::Error;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use keygate::{ProblemJson, ScopeRequirement};

use crate::guard::{self, GuardMiddleware};
use crate::response::ActixRejectionResponse;

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
        guard::wrap(service, &self.guard, &self.responder)
    }
}

/// The service made by [`RequireScopes`].
pub type RequireScopesMiddleware<S, R> = GuardMiddleware<S, keygate::RequireScopes, R>;

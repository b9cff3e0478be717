use std::future::{Ready, ready};
use std::ops::Deref;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};

/// The verified caller, extracted from a request the [`ApiKeyAuth`](crate::ApiKeyAuth)
/// middleware let through.
///
/// Derefs to [`keygate::Identity`]: `identity.name()`, `identity.key_id()`,
/// `identity.has_scope("orders:read")`, … Use `Option<Identity>` on routes behind
/// [`ApiKeyAuth::optional`](crate::ApiKeyAuth::optional).
///
/// ```
/// use keygate_actix::Identity;
///
/// async fn whoami(identity: Identity) -> String {
///     format!("{} ({})", identity.name(), identity.key_id())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Identity(pub Arc<keygate::Identity>);

impl Deref for Identity {
    type Target = keygate::Identity;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The [`Identity`] extractor found no identity: the middleware is not installed on this route.
/// A server configuration error, answered with 500 and a message saying so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityRejection {
    /// No `ApiKeyAuth` ran before this handler.
    MiddlewareMissing,
}

impl IdentityRejection {
    /// The explanation sent with the 500.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::MiddlewareMissing => {
                "keygate middleware not installed on this route: wrap the app, scope or resource with keygate_actix::ApiKeyAuth (or use Option<Identity> on optional routes)"
            }
        }
    }
}

impl std::fmt::Display for IdentityRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl ResponseError for IdentityRejection {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body(self.message())
    }
}

impl FromRequest for Identity {
    type Error = IdentityRejection;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            request
                .extensions()
                .get::<Arc<keygate::Identity>>()
                .cloned()
                .map(Identity)
                .ok_or(IdentityRejection::MiddlewareMissing),
        )
    }
}

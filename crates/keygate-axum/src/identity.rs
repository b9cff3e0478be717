use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

/// The verified caller, extracted from the request the keygate layer let through.
///
/// Derefs to [`keygate::Identity`]: `identity.name()`, `identity.key_id()`,
/// `identity.has_scope("orders:read")`, … Cloning is one reference-count increment.
///
/// Use `Option<Identity>` on routes behind [`ApiKeyLayer::optional`](keygate::ApiKeyLayer::optional),
/// where anonymous requests are let through.
///
/// ```
/// use keygate_axum::Identity;
///
/// async fn whoami(identity: Identity) -> String {
///     format!("{} ({})", identity.name(), identity.key_id())
/// }
///
/// async fn maybe(identity: Option<Identity>) -> &'static str {
///     if identity.is_some() { "hello, caller" } else { "hello, stranger" }
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

/// The [`Identity`] extractor found no identity: the keygate layer is not installed on this
/// route. A server configuration error, answered with 500 and a message saying so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityRejection {
    /// No `ApiKeyLayer` ran before this handler.
    LayerMissing,
}

impl IdentityRejection {
    /// The explanation sent with the 500.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::LayerMissing => {
                "keygate layer not installed on this route: add keygate_axum::layer(verifier) with Router::layer or route_layer (or use Option<Identity> on optional routes)"
            }
        }
    }
}

impl std::fmt::Display for IdentityRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for IdentityRejection {}

impl IntoResponse for IdentityRejection {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.message()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = IdentityRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<keygate::Identity>>()
            .cloned()
            .map(Identity)
            .ok_or(IdentityRejection::LayerMissing)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Arc<keygate::Identity>>()
            .cloned()
            .map(Identity))
    }
}

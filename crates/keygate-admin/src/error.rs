//! [`ApiError`]: every failure of the admin API as an RFC 9457 `application/problem+json`
//! response, in the style of keygate's own rejections (`urn:keygate:problem:<code>`).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use keygate::StoreError;
use keygate::record::InvalidInput;
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem, as the admin API answers every error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct Problem {
    /// `urn:keygate:problem:<code>`: `invalid_input`, `not_found`, `conflict`, `unavailable`,
    /// `not_configured`, `policy_violation` (and the key layer's own codes for 401, 403 and
    /// 429).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, in words. Never holds a key, a secret or a driver's error.
    pub detail: String,
    /// For `invalid_input`: the request field that is wrong (a JSON field or query parameter,
    /// with a path for nested ones, like `scopes[2]`; `id` for the key id in the path; `body`
    /// when the body is not JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `policy_violation`: the lifetime policy's rule the request breaks
    /// (`expiry_required`, `max_lifetime`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// Why an admin API request failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// Bad input (400): nothing was changed.
    BadInput {
        /// The field that is wrong.
        field: String,
        /// What is wrong with it.
        detail: String,
    },
    /// No key with this id (404).
    NotFound,
    /// The change conflicts with the key's state (409), e.g. enabling a revoked key.
    Conflict(&'static str),
    /// No owner with this id (404).
    OwnerNotFound,
    /// The change conflicts with the owner's state (409): its id exists, or it has keys.
    OwnerConflict(&'static str),
    /// The key store or audit trail could not answer (503); logged, never shown.
    Unavailable,
    /// The API was mounted without an audit trail (501).
    NoAuditTrail,
    /// The key store or audit trail cannot do this (501), e.g. a trail that cannot read by
    /// owner; what it cannot do, in words.
    Unsupported(&'static str),
    /// The deployment's lifetime policy refuses the key (422): nothing was changed.
    Policy(keygate::policy::PolicyViolation),
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn bad(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::BadInput {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The problem body this error answers.
    #[must_use]
    pub fn problem(&self) -> Problem {
        let mut rule = None;
        let (status, code, title, detail, field) = match self {
            Self::BadInput { field, detail } => (
                StatusCode::BAD_REQUEST,
                "invalid_input",
                "Invalid input",
                detail.clone(),
                Some(field.clone()),
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "No such key",
                "No key has this id.".to_owned(),
                None,
            ),
            Self::Conflict(reason) => (
                StatusCode::CONFLICT,
                "conflict",
                "Conflict with the key's state",
                format!("{reason}."),
                None,
            ),
            Self::OwnerNotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "No such owner",
                "No owner has this id.".to_owned(),
                None,
            ),
            Self::OwnerConflict(reason) => (
                StatusCode::CONFLICT,
                "conflict",
                "Conflict with the owner's state",
                format!("{reason}."),
                None,
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "The key store cannot be reached right now; retry later.".to_owned(),
                None,
            ),
            Self::NoAuditTrail => (
                StatusCode::NOT_IMPLEMENTED,
                "not_configured",
                "No audit trail",
                "This admin API was mounted without an audit trail.".to_owned(),
                None,
            ),
            Self::Unsupported(what) => (
                StatusCode::NOT_IMPLEMENTED,
                "not_configured",
                "Not supported",
                format!("This deployment's key store or audit trail does not support {what}."),
                None,
            ),
            Self::Policy(violation) => {
                rule = Some(violation.rule().to_owned());
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "policy_violation",
                    "Refused by the lifetime policy",
                    format!("{violation}."),
                    None,
                )
            }
        };
        Problem {
            kind: format!("urn:keygate:problem:{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            field,
            rule,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_) => Self::NotFound,
            StoreError::InvalidInput(invalid) => Self::bad(field_of(&invalid), invalid.to_string()),
            StoreError::Conflict { reason, .. } => Self::Conflict(reason),
            StoreError::Policy(violation) => Self::Policy(violation),
            StoreError::OwnerNotFound(_) => Self::OwnerNotFound,
            StoreError::OwnerConflict { reason, .. } => Self::OwnerConflict(reason),
            StoreError::Unsupported(what) => Self::Unsupported(what),
            other => {
                tracing::warn!(target: "keygate::admin", error = %other, "admin API: key store unavailable");
                Self::Unavailable
            }
        }
    }
}

/// The request field a store's input refusal is about.
fn field_of(invalid: &InvalidInput) -> &'static str {
    match invalid {
        InvalidInput::Name => "name",
        InvalidInput::Owner => "owner",
        InvalidInput::OwnerName => "name",
        InvalidInput::Scope(_) | InvalidInput::TooManyScopes => "scopes",
        InvalidInput::TooManyIpRanges => "allowed_ips",
        InvalidInput::ExpiryInPast => "expires_at",
        InvalidInput::Metadata => "metadata",
        InvalidInput::GraceTooLong => "grace_seconds",
        InvalidInput::UnknownEnvironment(_) => "environment",
        InvalidInput::Credits => "add",
        _ => "body",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&self.problem())
    }
}

/// `problem` as an `application/problem+json` response that no cache keeps.
pub(crate) fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

//! The OpenAPI document's shared parts: the document's header, the security scheme, and the
//! error responses the endpoints list.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::error::Problem;

/// The document's header; paths come from the handlers' `#[utoipa::path]` registrations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate admin API",
        description = "Manage API keys: list, create, change, rotate, revoke and delete them, and read the audit trail and usage. Callers authenticate with a keygate key carrying keygate:admin:read (GET) or keygate:admin:write (everything; it implies read). Errors are application/problem+json.",
    ),
    // The error responses refer to it (derived responses do not register their schemas).
    components(schemas(Problem)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "keys", description = "API keys, and the environments they are minted in"),
        (name = "owners", description = "Owners: the customers, teams or applications keys belong to, with a rate limit their keys share, and bulk actions on their keys"),
        (name = "audit", description = "The audit trail and usage per key per day"),
        (name = "policy", description = "The deployment's key lifetime policy"),
    )
)]
pub(crate) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A keygate key with an admin scope, in `Authorization: Bearer` (or the service's API key header).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The errors of a read endpoint.
#[derive(Debug, IntoResponses)]
pub enum ReadErrors {
    /// 400.
    #[response(
        status = 400,
        description = "Bad input, naming the field",
        content_type = "application/problem+json"
    )]
    BadInput(Problem),
    /// 401.
    #[response(
        status = 401,
        description = "No key, or not a valid key",
        content_type = "application/problem+json"
    )]
    Unauthenticated(Problem),
    /// 403.
    #[response(
        status = 403,
        description = "The key lacks the admin scope",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    /// 404.
    #[response(
        status = 404,
        description = "No key has this id",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    /// 503.
    #[response(
        status = 503,
        description = "The key store is unavailable",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// The errors of `POST /keys`.
#[derive(Debug, IntoResponses)]
pub enum CreateErrors {
    /// 400.
    #[response(
        status = 400,
        description = "Bad input, naming the field; nothing was created",
        content_type = "application/problem+json"
    )]
    BadInput(Problem),
    /// 401.
    #[response(
        status = 401,
        description = "No key, or not a valid key",
        content_type = "application/problem+json"
    )]
    Unauthenticated(Problem),
    /// 403.
    #[response(
        status = 403,
        description = "The key lacks keygate:admin:write",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    /// 422.
    #[response(
        status = 422,
        description = "Refused by the deployment's lifetime policy (`rule` names it: expiry_required, max_lifetime); nothing was changed",
        content_type = "application/problem+json"
    )]
    PolicyViolation(Problem),
    /// 503.
    #[response(
        status = 503,
        description = "The key store is unavailable",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// The errors of a change.
#[derive(Debug, IntoResponses)]
pub enum ChangeErrors {
    /// 400.
    #[response(
        status = 400,
        description = "Bad input, naming the field; nothing was changed",
        content_type = "application/problem+json"
    )]
    BadInput(Problem),
    /// 401.
    #[response(
        status = 401,
        description = "No key, or not a valid key",
        content_type = "application/problem+json"
    )]
    Unauthenticated(Problem),
    /// 403.
    #[response(
        status = 403,
        description = "The key lacks keygate:admin:write",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    /// 404.
    #[response(
        status = 404,
        description = "No key has this id",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    /// 409.
    #[response(
        status = 409,
        description = "The change conflicts with the key's state (e.g. enabling a revoked key)",
        content_type = "application/problem+json"
    )]
    Conflict(Problem),
    /// 422.
    #[response(
        status = 422,
        description = "Refused by the deployment's lifetime policy (`rule` names it: expiry_required, max_lifetime); nothing was changed",
        content_type = "application/problem+json"
    )]
    PolicyViolation(Problem),
    /// 503.
    #[response(
        status = 503,
        description = "The key store is unavailable",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// The errors of the audit trail and usage endpoints.
#[derive(Debug, IntoResponses)]
pub enum TrailErrors {
    /// 400.
    #[response(
        status = 400,
        description = "Bad input, naming the field",
        content_type = "application/problem+json"
    )]
    BadInput(Problem),
    /// 401.
    #[response(
        status = 401,
        description = "No key, or not a valid key",
        content_type = "application/problem+json"
    )]
    Unauthenticated(Problem),
    /// 403.
    #[response(
        status = 403,
        description = "The key lacks the admin scope",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    /// 404.
    #[response(
        status = 404,
        description = "No owner has the id given as `owner`",
        content_type = "application/problem+json"
    )]
    OwnerNotFound(Problem),
    /// 501.
    #[response(
        status = 501,
        description = "The API was mounted without an audit trail, or with one that cannot read by owner",
        content_type = "application/problem+json"
    )]
    NotConfigured(Problem),
    /// 503.
    #[response(
        status = 503,
        description = "The audit trail is unavailable",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

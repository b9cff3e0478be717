//! The lifetime policy endpoints: `GET /policy`, `PUT /policy`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use keygate::policy::{InvalidPolicy, LifetimePolicy, WritePolicyError};
use keygate_axum::Identity;

use crate::docs::ReadErrors;
use crate::error::ApiError;
use crate::input::{self, SetPolicy};
use crate::state::ApiState;
use crate::views::PolicyView;

/// The deployment's key lifetime policy, as the key store records it.
#[utoipa::path(
    get,
    path = "/policy",
    tag = "policy",
    responses((status = 200, description = "The policy (null: rule off)", body = PolicyView), ReadErrors),
    security(("api_key" = ["keygate:admin:read"]))
)]
pub(crate) async fn show(State(state): State<ApiState>) -> Result<Json<PolicyView>, ApiError> {
    let policy = state.admin.lifetime_policy().await?;
    Ok(Json(PolicyView::new(&policy)))
}

/// Replaces the policy (rules left out or null are off; `{}` clears it). Every process of the
/// deployment applies it from its next create, expiry change or rotation; existing keys are
/// not changed, except by the idle sweep (`max_idle_seconds`).
#[utoipa::path(
    put,
    path = "/policy",
    tag = "policy",
    request_body = SetPolicy,
    responses((status = 200, description = "The policy as set", body = PolicyView), ReadErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn set(
    State(state): State<ApiState>,
    caller: Identity,
    body: Bytes,
) -> Result<Json<PolicyView>, ApiError> {
    let input: SetPolicy = input::body(&body, &[])?;
    let seconds = |s: Option<u64>| s.map(Duration::from_secs);
    let policy = LifetimePolicy {
        require_expiry: input.require_expiry,
        default_lifetime: seconds(input.default_lifetime_seconds),
        max_lifetime: seconds(input.max_lifetime_seconds),
        max_idle: seconds(input.max_idle_seconds),
    };
    let admin = state.admin.clone().actor(caller.key_id().as_str());
    admin
        .set_lifetime_policy(&policy)
        .await
        .map_err(|error| match error {
            WritePolicyError::Invalid(invalid) => {
                ApiError::bad(field_of(&invalid), invalid.to_string())
            }
            WritePolicyError::Store(error) => error.into(),
            other => ApiError::bad("body", other.to_string()),
        })?;
    Ok(Json(PolicyView::new(&policy)))
}

/// The request field an invalid policy is about.
fn field_of(invalid: &InvalidPolicy) -> &'static str {
    match invalid {
        InvalidPolicy::Duration {
            rule: "default_lifetime",
        }
        | InvalidPolicy::DefaultOverMax => "default_lifetime_seconds",
        InvalidPolicy::Duration {
            rule: "max_lifetime",
        } => "max_lifetime_seconds",
        InvalidPolicy::Duration { rule: "max_idle" } => "max_idle_seconds",
        _ => "body",
    }
}

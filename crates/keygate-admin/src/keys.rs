//! The key endpoints: list, show, create, change, rotate, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use keygate::store::{KeyFilter, PageRequest};
use keygate::{KeyAdmin, KeyRecord, KeyState, NewKey};
use keygate_axum::Identity;

use crate::docs::{ChangeErrors, CreateErrors, ReadErrors};
use crate::error::ApiError;
use crate::input::{
    self, AddCredits, CreateKey, ListParams, Rename, Rotate, SetAllowedIps, SetExpiry, SetLimits,
    SetMetadata, SetQuota, SetRateLimit, SetScopes,
};
use crate::state::ApiState;
use crate::views::{CreatedKeyView, KeyList, KeyView, QuotaBalanceView, RotatedKeyView};

fn view(state: &ApiState, record: &KeyRecord) -> Json<KeyView> {
    Json(state.key_view(record, state.admin.clock().now()))
}

/// The prefix of environment `name` (`environment` of `GET /keys`) in the admin handle's
/// keyring; an empty name is no filter.
fn environment_prefix(state: &ApiState, name: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let keyring = state.admin.keyring();
    if let Some(environment) = keyring.and_then(|k| k.environment(name)) {
        return Ok(Some(environment.prefix().to_owned()));
    }
    // Not echoed; the names known are the keyring's, not the caller's.
    let known: Vec<&str> = keyring
        .map(|k| k.environments().iter().map(|e| e.name()).collect())
        .unwrap_or_default();
    Err(ApiError::bad(
        "environment",
        if known.is_empty() {
            "unknown environment: the service's keyring names no environments".to_owned()
        } else {
            format!("unknown environment: expected {}", known.join(", "))
        },
    ))
}

/// Lists keys: filters, search by name, keyset pages.
#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    params(ListParams),
    responses((status = 200, description = "One page of keys, ordered by id", body = KeyList), ReadErrors),
    security(("api_key" = ["keygate:admin:read"]))
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<KeyList>, ApiError> {
    let Query(params) = params.map_err(|_| ApiError::bad("query", "malformed query string"))?;
    let state_filter = match params.state.as_deref().map(str::trim) {
        None | Some("" | "all") => None,
        Some("active") => Some(KeyState::Active),
        Some("disabled") => Some(KeyState::Disabled),
        Some("revoked") => Some(KeyState::Revoked),
        Some("expired") => Some(KeyState::Expired),
        Some(_) => {
            return Err(ApiError::bad(
                "state",
                "expected active, disabled, revoked, expired or all",
            ));
        }
    };
    let limit = input::number(
        "limit",
        params.limit.as_deref(),
        100,
        1..=PageRequest::MAX_LIMIT,
    )?;
    let after = params
        .after
        .as_deref()
        .map(|text| input::key_id(text).map_err(|_| ApiError::bad("after", "malformed key id")))
        .transpose()?;
    let mut filter = KeyFilter::default();
    filter.owner = params.owner.filter(|o| !o.is_empty());
    filter.state = state_filter;
    filter.name_contains = params.search.filter(|s| !s.is_empty());
    filter.prefix = environment_prefix(&state, params.environment.as_deref())?;
    let page = state
        .admin
        .list(&filter, PageRequest { after, limit })
        .await?;
    Ok(Json(KeyList {
        keys: state.key_views(&page.keys),
        next: page.next.map(|id| id.to_string()),
    }))
}

/// Shows one key (never its secret).
#[utoipa::path(
    get,
    path = "/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The key", body = KeyView), ReadErrors),
    security(("api_key" = ["keygate:admin:read"]))
)]
pub(crate) async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let record = state.admin.get(&id).await?;
    Ok(view(&state, &record))
}

/// What a key's quotas have left now: its own quota's balance (shared by its rotation lineage,
/// top-ups included) and its owner's, as the service's quota meter counts them.
#[utoipa::path(
    get,
    path = "/keys/{id}/quota",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The key's quota balances", body = QuotaBalanceView), ReadErrors),
    security(("api_key" = ["keygate:admin:read"]))
)]
pub(crate) async fn quota_balance(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<QuotaBalanceView>, ApiError> {
    let id = input::key_id(&id)?;
    let balance = state.admin.quota_balance(&id).await?;
    Ok(Json(QuotaBalanceView::new(&id, &balance)))
}

/// Creates a key. The response holds the full key, this once: keygate keeps only its digest.
#[utoipa::path(
    post,
    path = "/keys",
    tag = "keys",
    request_body = CreateKey,
    responses((status = 201, description = "The key, with the full key shown this once", body = CreatedKeyView), CreateErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    caller: Identity,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedKeyView>), ApiError> {
    let input: CreateKey = input::body(&body, &["name"])?;
    let mut spec = NewKey::new(input.name)
        .scopes(input::scopes("scopes", &input.scopes)?)
        .metadata(input.metadata)
        .allowed_ips(input::ranges("allowed_ips", &input.allowed_ips)?);
    if let Some(owner) = input.owner {
        spec = spec.owner(owner);
    }
    if let Some(at) = &input.expires_at {
        spec = spec.expires_at(input::time("expires_at", at)?);
    }
    if let Some(limit) = &input.rate_limit {
        spec = spec.rate_limit(input::rate_limit("rate_limit", limit)?);
    }
    if let Some(quota) = &input.quota {
        spec = spec.quota(input::quota("quota", quota)?);
    }
    if let Some(limits) = &input.limits {
        spec = spec.limits(input::limits("limits", limits)?);
    }
    if let Some(environment) = input.environment {
        spec = spec.environment(environment);
    }
    if input.canary {
        // A decoy with admin scopes would say "this is what an admin key looks like" for
        // nothing: it can never be used.
        if input
            .scopes
            .iter()
            .any(|s| [crate::READ_SCOPE, crate::WRITE_SCOPE].contains(&s.trim()))
        {
            return Err(ApiError::bad(
                "canary",
                "a canary may not carry the admin scopes",
            ));
        }
        spec = spec.canary();
    }
    let created = state.acting(&caller).create_key(spec).await?;
    let record = state.key_view(&created.record, state.admin.clock().now());
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyView {
            key: created.key.expose_secret().to_owned(),
            record,
        }),
    ))
}

/// Renames a key.
#[utoipa::path(
    put,
    path = "/keys/{id}/name",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = Rename,
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn rename(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let input: Rename = input::body(&body, &["name"])?;
    let record = state.acting(&caller).rename(&id, &input.name).await?;
    Ok(view(&state, &record))
}

/// Replaces a key's scopes.
#[utoipa::path(
    put,
    path = "/keys/{id}/scopes",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = SetScopes,
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn set_scopes(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let input: SetScopes = input::body(&body, &["scopes"])?;
    let scopes = input::scopes("scopes", &input.scopes)?;
    let record = state.acting(&caller).set_scopes(&id, scopes).await?;
    Ok(view(&state, &record))
}

/// Sets or clears a key's expiry.
#[utoipa::path(
    put,
    path = "/keys/{id}/expiry",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = SetExpiry,
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn set_expiry(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let input: SetExpiry = input::body(&body, &["expires_at"])?;
    let at = input
        .expires_at
        .as_deref()
        .map(|text| input::time("expires_at", text))
        .transpose()?;
    if at.is_some_and(|at| at <= state.admin.clock().now()) {
        return Err(ApiError::bad("expires_at", "expiry must be in the future"));
    }
    let record = state.acting(&caller).set_expiry(&id, at).await?;
    Ok(view(&state, &record))
}

/// Sets a key's rate limit, makes it unlimited, or clears it (the services' default applies).
#[utoipa::path(
    put,
    path = "/keys/{id}/rate-limit",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = SetRateLimit,
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn set_rate_limit(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let input: SetRateLimit = input::body(&body, &["rate_limit"])?;
    let limit = input
        .rate_limit
        .as_deref()
        .map(|text| input::rate_limit("rate_limit", text))
        .transpose()?;
    let record = state.acting(&caller).set_rate_limit(&id, limit).await?;
    Ok(view(&state, &record))
}

/// Sets a key's quota, or clears it (its owner's quota, if any, still applies).
#[utoipa::path(
    put,
    path = "/keys/{id}/quota",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = SetQuota,
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn set_quota(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let input: SetQuota = input::body(&body, &["quota"])?;
    let quota = input
        .quota
        .as_deref()
        .map(|text| input::quota("quota", text))
        .transpose()?;
    let record = state.acting(&caller).set_quota(&id, quota).await?;
    Ok(view(&state, &record))
}

/// Adds credits to a key's credit balance (a top-up). The key's own quota must be credits; the
/// credits are added once, on every key of its rotation lineage (`quota_granted` is the total
/// added so far), and reach the services as any change does.
#[utoipa::path(
    post,
    path = "/keys/{id}/credits",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = AddCredits,
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn add_credits(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let input: AddCredits = input::body(&body, &["add"])?;
    // The count is checked with the change (`KeyChange::validate`): 400 naming `add`.
    let record = state.acting(&caller).add_credits(&id, input.add).await?;
    Ok(view(&state, &record))
}

/// Replaces a key's named limits (`{}` removes them all): rate limits that only the routes
/// naming them apply (`RouteLimit::new("writes")`).
#[utoipa::path(
    put,
    path = "/keys/{id}/limits",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = SetLimits,
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn set_limits(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let input: SetLimits = input::body(&body, &["limits"])?;
    let limits = input::limits("limits", &input.limits)?;
    let record = state.acting(&caller).set_limits(&id, limits).await?;
    Ok(view(&state, &record))
}

/// Replaces a key's metadata.
#[utoipa::path(
    put,
    path = "/keys/{id}/metadata",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = SetMetadata,
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn set_metadata(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let input: SetMetadata = input::body(&body, &["metadata"])?;
    let record = state
        .acting(&caller)
        .set_metadata(&id, input.metadata)
        .await?;
    Ok(view(&state, &record))
}

/// Replaces the client address ranges a key may be used from.
#[utoipa::path(
    put,
    path = "/keys/{id}/allowed-ips",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = SetAllowedIps,
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn set_allowed_ips(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let input: SetAllowedIps = input::body(&body, &["allowed_ips"])?;
    let ranges = input::ranges("allowed_ips", &input.allowed_ips)?;
    let record = state.acting(&caller).set_allowed_ips(&id, ranges).await?;
    Ok(view(&state, &record))
}

/// Disables a key (reversible with enable).
#[utoipa::path(
    post,
    path = "/keys/{id}/disable",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn disable(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let record = state.acting(&caller).disable(&id).await?;
    Ok(view(&state, &record))
}

/// Enables a disabled key (a revoked key stays revoked: 409).
#[utoipa::path(
    post,
    path = "/keys/{id}/enable",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn enable(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let record = state.acting(&caller).enable(&id).await?;
    Ok(view(&state, &record))
}

/// Revokes a key for good (kept for audit; it never authenticates again).
#[utoipa::path(
    post,
    path = "/keys/{id}/revoke",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The key as changed", body = KeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn revoke(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let id = input::key_id(&id)?;
    let record = state.acting(&caller).revoke(&id).await?;
    Ok(view(&state, &record))
}

/// Rotates a key: a new key with the same name, owner, scopes and restrictions; the old one
/// keeps working for the grace period. The response holds the new full key, this once.
#[utoipa::path(
    post,
    path = "/keys/{id}/rotate",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = Rotate,
    responses((status = 201, description = "The new key, shown this once, and the old key", body = RotatedKeyView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn rotate(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<RotatedKeyView>), ApiError> {
    let id = input::key_id(&id)?;
    // An empty body takes the default grace.
    let input: Rotate = if body.is_empty() {
        input::body(b"{}", &[])?
    } else {
        input::body(&body, &[])?
    };
    keygate::Rotation::new(input.grace())
        .map_err(|e| ApiError::bad("grace_seconds", e.to_string()))?;
    let rotated = state.acting(&caller).rotate(&id, input.grace()).await?;
    let now = state.admin.clock().now();
    Ok((
        StatusCode::CREATED,
        Json(RotatedKeyView {
            key: rotated.new.key.expose_secret().to_owned(),
            record: state.key_view(&rotated.new.record, now),
            old: state.key_view(&rotated.old, now),
        }),
    ))
}

/// Deletes a key for good (its id is never reused; revoke keeps it for audit).
#[utoipa::path(
    delete,
    path = "/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Deleted"), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = input::key_id(&id)?;
    state.acting(&caller).delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

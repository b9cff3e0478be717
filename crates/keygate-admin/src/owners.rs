//! The owner endpoints: list, show, create, update, delete, and bulk actions on an owner's keys.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use keygate::owner::{NewOwner, OwnerUpdate};
use keygate::store::MAX_OWNERS_PAGE;
use keygate::{KeyAdmin, KeyRecord};
use keygate_axum::Identity;

use crate::docs::{ChangeErrors, CreateErrors, ReadErrors};
use crate::error::ApiError;
use crate::input::{self, AddCredits, CreateOwner, OwnerListParams, UpdateOwner, owner_id};
use crate::state::ApiState;
use crate::views::{OwnerKeysChanged, OwnerList, OwnerQuotaView, OwnerView};

fn changed(state: &ApiState, records: &[KeyRecord]) -> Json<OwnerKeysChanged> {
    Json(OwnerKeysChanged {
        changed: state.key_views(records),
    })
}

/// Lists owners, ordered by id, one page at a time.
#[utoipa::path(
    get,
    path = "/owners",
    tag = "owners",
    params(OwnerListParams),
    responses((status = 200, description = "One page of owners, ordered by id", body = OwnerList), ReadErrors),
    security(("api_key" = ["keygate:admin:read"]))
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    params: Result<Query<OwnerListParams>, QueryRejection>,
) -> Result<Json<OwnerList>, ApiError> {
    let Query(params) = params.map_err(|_| ApiError::bad("query", "malformed query string"))?;
    let limit = input::number("limit", params.limit.as_deref(), 100, 1..=MAX_OWNERS_PAGE)?;
    let owners = state
        .admin
        .list_owners(params.after.as_deref(), limit)
        .await?;
    // A full page may be followed by another (at worst an empty one).
    let next = if owners.len() == limit {
        owners.last().map(|o| o.id.clone())
    } else {
        None
    };
    Ok(Json(OwnerList {
        owners: owners.iter().map(|o| OwnerView::new(o, None)).collect(),
        next,
    }))
}

/// Shows one owner, with how many keys belong to it.
#[utoipa::path(
    get,
    path = "/owners/{id}",
    tag = "owners",
    params(("id" = String, Path, description = "The owner's id")),
    responses((status = 200, description = "The owner", body = OwnerView), ReadErrors),
    security(("api_key" = ["keygate:admin:read"]))
)]
pub(crate) async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<OwnerView>, ApiError> {
    owner_id("id", &id)?;
    let owner = state.admin.get_owner(&id).await?;
    let keys = state.admin.owner_key_count(&id).await?;
    Ok(Json(OwnerView::new(&owner, Some(keys))))
}

/// Creates an owner. (Creating a key for an unknown owner id creates a bare one too.)
#[utoipa::path(
    post,
    path = "/owners",
    tag = "owners",
    request_body = CreateOwner,
    responses((status = 201, description = "The owner", body = OwnerView), CreateErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    caller: Identity,
    body: Bytes,
) -> Result<(StatusCode, Json<OwnerView>), ApiError> {
    let input: CreateOwner = input::body(&body, &["id"])?;
    owner_id("id", &input.id)?;
    let mut owner = NewOwner::new(input.id).metadata(input.metadata);
    if let Some(name) = input.name {
        owner = owner.name(name);
    }
    if let Some(limit) = &input.rate_limit {
        owner = owner.rate_limit(input::rate_limit("rate_limit", limit)?);
    }
    if let Some(quota) = &input.quota {
        owner = owner.quota(input::quota("quota", quota)?);
    }
    if let Some(limits) = &input.limits {
        owner = owner.limits(input::limits("limits", limits)?);
    }
    let owner = state.acting(&caller).create_owner(owner).await?;
    Ok((StatusCode::CREATED, Json(OwnerView::new(&owner, None))))
}

/// Changes an owner's name, metadata, shared rate limit, shared quota or shared named limits
/// (each field present is replaced; `"rate_limit": null` and `"quota": null` remove them,
/// `"limits": {}` or null removes every named limit). A new limit or quota applies to its keys
/// at once.
#[utoipa::path(
    patch,
    path = "/owners/{id}",
    tag = "owners",
    params(("id" = String, Path, description = "The owner's id")),
    request_body = UpdateOwner,
    responses((status = 200, description = "The owner as changed", body = OwnerView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn update(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<OwnerView>, ApiError> {
    owner_id("id", &id)?;
    let input: UpdateOwner = input::body(&body, &[])?;
    // `rate_limit: null` (remove) differs from no `rate_limit` (keep); `quota` likewise.
    let named = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let names = |field: &str| named.as_ref().is_some_and(|v| v.get(field).is_some());
    let names_limit = names("rate_limit");
    let mut update = OwnerUpdate::new();
    if let Some(name) = input.name {
        update = update.name(name);
    }
    if let Some(metadata) = input.metadata {
        update = update.metadata(metadata);
    }
    if names_limit {
        let limit = input
            .rate_limit
            .as_deref()
            .map(|text| input::rate_limit("rate_limit", text))
            .transpose()?
            .filter(|l| *l != keygate::rate::RateLimit::Unlimited);
        update = update.rate_limit(limit);
    }
    if names("quota") {
        let quota = input
            .quota
            .as_deref()
            .map(|text| input::quota("quota", text))
            .transpose()?;
        update = update.quota(quota);
    }
    if names("limits") {
        let limits = input
            .limits
            .as_ref()
            .map(|limits| input::limits("limits", limits))
            .transpose()?
            .unwrap_or_default();
        update = update.limits(limits);
    }
    let owner = state.acting(&caller).update_owner(&id, update).await?;
    Ok(Json(OwnerView::new(&owner, None)))
}

/// What an owner's shared quota has left now (top-ups included), as the service's quota meter
/// counts it: the balance every key of the owner spends from.
#[utoipa::path(
    get,
    path = "/owners/{id}/quota",
    tag = "owners",
    params(("id" = String, Path, description = "The owner's id")),
    responses((status = 200, description = "The owner's quota balance", body = OwnerQuotaView), ReadErrors),
    security(("api_key" = ["keygate:admin:read"]))
)]
pub(crate) async fn quota_balance(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<OwnerQuotaView>, ApiError> {
    owner_id("id", &id)?;
    let balance = state.admin.owner_quota_balance(&id).await?;
    Ok(Json(OwnerQuotaView::new(&id, &balance)))
}

/// Adds credits to an owner's shared credit balance (a top-up), spent by all its keys. The
/// owner's quota must be credits (else 409); the credits are added once (`quota_granted` is
/// the total added so far) and reach the services as any change to the owner does.
#[utoipa::path(
    post,
    path = "/owners/{id}/credits",
    tag = "owners",
    params(("id" = String, Path, description = "The owner's id")),
    request_body = AddCredits,
    responses((status = 200, description = "The owner as changed", body = OwnerView), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn add_credits(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<OwnerView>, ApiError> {
    owner_id("id", &id)?;
    let input: AddCredits = input::body(&body, &["add"])?;
    // The count is checked with the change (`OwnerUpdate::validate`): 400 naming `add`.
    let update = OwnerUpdate::new().add_credits(input.add);
    let owner = state.acting(&caller).update_owner(&id, update).await?;
    Ok(Json(OwnerView::new(&owner, None)))
}

/// Deletes an owner (409 while keys, in any state, belong to it).
#[utoipa::path(
    delete,
    path = "/owners/{id}",
    tag = "owners",
    params(("id" = String, Path, description = "The owner's id")),
    responses((status = 204, description = "Deleted"), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    owner_id("id", &id)?;
    state.acting(&caller).delete_owner(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disables every active key of the owner, in one transaction (reversible with enable).
#[utoipa::path(
    post,
    path = "/owners/{id}/disable",
    tag = "owners",
    params(("id" = String, Path, description = "The owner's id")),
    responses((status = 200, description = "The keys disabled", body = OwnerKeysChanged), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn disable(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
) -> Result<Json<OwnerKeysChanged>, ApiError> {
    owner_id("id", &id)?;
    let records = state.acting(&caller).disable_owner(&id).await?;
    Ok(changed(&state, &records))
}

/// Enables every disabled key of the owner (revoked keys stay revoked).
#[utoipa::path(
    post,
    path = "/owners/{id}/enable",
    tag = "owners",
    params(("id" = String, Path, description = "The owner's id")),
    responses((status = 200, description = "The keys enabled", body = OwnerKeysChanged), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn enable(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
) -> Result<Json<OwnerKeysChanged>, ApiError> {
    owner_id("id", &id)?;
    let records = state.acting(&caller).enable_owner(&id).await?;
    Ok(changed(&state, &records))
}

/// Revokes every key of the owner for good, in one transaction.
#[utoipa::path(
    post,
    path = "/owners/{id}/revoke",
    tag = "owners",
    params(("id" = String, Path, description = "The owner's id")),
    responses((status = 200, description = "The keys revoked", body = OwnerKeysChanged), ChangeErrors),
    security(("api_key" = ["keygate:admin:write"]))
)]
pub(crate) async fn revoke(
    State(state): State<ApiState>,
    caller: Identity,
    Path(id): Path<String>,
) -> Result<Json<OwnerKeysChanged>, ApiError> {
    owner_id("id", &id)?;
    let records = state.acting(&caller).revoke_owner(&id).await?;
    Ok(changed(&state, &records))
}

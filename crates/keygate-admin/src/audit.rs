//! The audit trail and usage endpoints.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use keygate::audit::{Action, AuditTrail, EventQuery, Outcome, owner_on_record};
use keygate::{KeyId, Reason};

use crate::docs::TrailErrors;
use crate::error::ApiError;
use crate::input::{self, AuditParams, UsageParams};
use crate::state::ApiState;
use crate::views::{EventList, EventView, UsageList, UsageView};

const DAY: Duration = Duration::from_secs(86_400);
/// Most events per page.
pub(crate) const MAX_PAGE: usize = 1_000;
/// Most days of usage one request covers.
pub(crate) const MAX_DAYS: usize = 3_660;

fn trail(state: &ApiState) -> Result<&dyn AuditTrail, ApiError> {
    state.trail.as_deref().ok_or(ApiError::NoAuditTrail)
}

/// The `owner` parameter: checked, and looked up, so an unknown owner is a 404 rather than an
/// empty answer (as `keygate audit --owner` and `keygate usage --owner` refuse it), while a
/// deleted one is read from the trail; empty is none. Not with `key_id`: one names a key, the
/// other a set of keys.
async fn owner<'a>(
    state: &ApiState,
    trail: &dyn AuditTrail,
    owner: Option<&'a str>,
    key_id: Option<&KeyId>,
) -> Result<Option<&'a str>, ApiError> {
    let Some(owner) = owner.filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    if key_id.is_some() {
        return Err(ApiError::bad("owner", "give key_id or owner, not both"));
    }
    input::owner_id("owner", owner)?;
    owner_on_record(&state.admin, trail, owner).await?;
    Ok(Some(owner))
}

/// Reads the audit trail, newest first: request decisions and changes to keys.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    params(AuditParams),
    responses((status = 200, description = "One page of events, newest first", body = EventList), TrailErrors),
    security(("api_key" = ["keygate:admin:read"]))
)]
pub(crate) async fn events(
    State(state): State<ApiState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<EventList>, ApiError> {
    let Query(params) = params.map_err(|_| ApiError::bad("query", "malformed query string"))?;
    let key_id = params
        .key_id
        .as_deref()
        .map(|text| input::key_id(text).map_err(|_| ApiError::bad("key_id", "malformed key id")))
        .transpose()?;
    let outcome = match params.outcome.as_deref() {
        None => None,
        Some("allowed") => Some(Outcome::Allowed),
        Some("denied") => Some(Outcome::Denied),
        Some(_) => return Err(ApiError::bad("outcome", "expected allowed or denied")),
    };
    let reason = params
        .reason
        .as_deref()
        .map(|text| {
            text.parse::<Reason>().map_err(|_| {
                ApiError::bad(
                    "reason",
                    format!(
                        "expected one of {}",
                        Reason::ALL.map(Reason::as_str).join(", ")
                    ),
                )
            })
        })
        .transpose()?;
    let action = params
        .action
        .as_deref()
        .map(|text| {
            text.parse::<Action>().map_err(|_| {
                ApiError::bad(
                    "action",
                    format!(
                        "expected one of {}",
                        Action::ALL.map(Action::as_str).join(", ")
                    ),
                )
            })
        })
        .transpose()?;
    let since = params
        .since
        .as_deref()
        .map(|text| input::time("since", text))
        .transpose()?;
    let before_id = params
        .before
        .as_deref()
        .map(|text| {
            text.trim()
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| ApiError::bad("before", "expected an event id"))
        })
        .transpose()?;
    let limit = input::number("limit", params.limit.as_deref(), 50, 1..=MAX_PAGE)?;
    let query = EventQuery {
        key_id,
        outcome,
        reason,
        action,
        since,
        after_id: None,
        before_id,
        limit,
        oldest_first: false,
    };
    let trail = trail(&state)?;
    let events = match owner(&state, trail, params.owner.as_deref(), key_id.as_ref()).await? {
        Some(owner) => trail.owner_events(&query, owner).await?,
        None => trail.events(&query).await?,
    };
    let next = (events.len() == limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(Json(EventList {
        events: events.iter().map(EventView::from).collect(),
        next,
    }))
}

/// Requests per key per UTC day (allowed and denied), for a chart.
#[utoipa::path(
    get,
    path = "/usage",
    tag = "audit",
    params(UsageParams),
    responses((status = 200, description = "Requests per key per day", body = UsageList), TrailErrors),
    security(("api_key" = ["keygate:admin:read"]))
)]
pub(crate) async fn usage(
    State(state): State<ApiState>,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<UsageList>, ApiError> {
    let Query(params) = params.map_err(|_| ApiError::bad("query", "malformed query string"))?;
    let key_id = params
        .key_id
        .as_deref()
        .map(|text| input::key_id(text).map_err(|_| ApiError::bad("key_id", "malformed key id")))
        .transpose()?;
    let days = input::number("days", params.days.as_deref(), 30, 1..=MAX_DAYS)?;
    let now = state.admin.clock().now();
    let since = now
        .checked_sub(DAY * u32::try_from(days - 1).unwrap_or(0))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let trail = trail(&state)?;
    let counts = match owner(&state, trail, params.owner.as_deref(), key_id.as_ref()).await? {
        Some(owner) => trail.owner_usage(owner, since).await?,
        None => trail.usage(key_id.as_ref(), since).await?,
    };
    Ok(Json(UsageList {
        since: humantime::format_rfc3339_seconds(since)
            .to_string()
            .chars()
            .take(10)
            .collect(),
        days: counts.iter().map(UsageView::from).collect(),
    }))
}

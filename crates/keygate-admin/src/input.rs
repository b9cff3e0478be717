//! The request bodies and query parameters of the admin API, and their parsing: every refusal
//! is a 400 naming the field, before anything is read from or written to the store.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use keygate::rate::RateLimit;
use keygate::{KeyId, Metadata, Scope};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// Parses a JSON object body into `T`, after checking that every field in `required` is
/// present (so that `null` must be said, never implied by a missing field). Unknown fields are
/// refused (`T` denies them).
pub(crate) fn body<T: DeserializeOwned>(bytes: &[u8], required: &[&str]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| ApiError::bad("body", "the body is not JSON"))?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad("body", "the body must be a JSON object"))?;
    if let Some(missing) = required.iter().find(|name| !object.contains_key(**name)) {
        return Err(ApiError::bad(*missing, format!("`{missing}` is required")));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        // serde names unknown fields in its message, not in the path. Its messages about
        // values quote them, so none is passed on: a value might be a key pasted in the wrong
        // field.
        match inner.strip_prefix("unknown field `") {
            Some(rest) => {
                let name = rest.split('`').next().unwrap_or_default();
                let known = name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic());
                ApiError::bad(if known { name } else { "body" }, "unknown field")
            }
            None if path == "." => {
                ApiError::bad("body", "the body does not have the expected shape")
            }
            None => ApiError::bad(path, "wrong type: see the API reference (/openapi.json)"),
        }
    })
}

/// A key id from the path.
pub(crate) fn key_id(text: &str) -> Result<KeyId, ApiError> {
    KeyId::from_str(text.trim()).map_err(|_| {
        ApiError::bad(
            "id",
            "malformed key id: expected the 12 letters and digits after the prefix",
        )
    })
}

/// An owner id from the path, body or query, checked (never echoed: the message says what one
/// is).
pub(crate) fn owner_id(field: &str, id: &str) -> Result<(), ApiError> {
    keygate::owner::validate_owner_id(id).map_err(|e| ApiError::bad(field, e.to_string()))
}

/// A time in RFC 3339 (UTC, `Z`).
pub(crate) fn time(field: &str, text: &str) -> Result<SystemTime, ApiError> {
    humantime::parse_rfc3339(text.trim()).map_err(|_| {
        ApiError::bad(
            field,
            "expected a time in RFC 3339 in UTC, like 2027-01-31T00:00:00Z",
        )
    })
}

/// Scopes, each checked.
pub(crate) fn scopes(field: &str, texts: &[String]) -> Result<Vec<Scope>, ApiError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            // Not echoed: the message says what a scope looks like.
            Scope::new(text).map_err(|_| {
                ApiError::bad(
                    format!("{field}[{i}]"),
                    "invalid scope: use ':'-separated segments of letters, digits, '_', '-' or '.', with '*' only as the whole last segment",
                )
            })
        })
        .collect()
}

/// Client address ranges: CIDR, or a bare address for that one address.
pub(crate) fn ranges(field: &str, texts: &[String]) -> Result<Vec<IpNet>, ApiError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let text = text.trim();
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ApiError::bad(
                        format!("{field}[{i}]"),
                        "expected an address or CIDR range, like 10.0.0.0/8 or 2001:db8::/32",
                    )
                })
        })
        .collect()
}

/// A rate limit: a policy (`100/1s`, `100/1s burst 200`) or `unlimited`.
pub(crate) fn rate_limit(field: &str, text: &str) -> Result<RateLimit, ApiError> {
    text.parse::<RateLimit>()
        .map_err(|e| ApiError::bad(field, e.to_string()))
}

/// A quota: a count per UTC period (`10000/day`, `1000000/month`) or credits
/// (`credits 500 refill 500 every 1d`).
pub(crate) fn quota(field: &str, text: &str) -> Result<keygate::quota::Quota, ApiError> {
    text.parse::<keygate::quota::Quota>()
        .map_err(|e| ApiError::bad(field, e.to_string()))
}

/// Named limits: an object of name -> policy (`{"writes": "10/1s", "bulk": "unlimited"}`). A
/// bad name is refused naming `field`; a bad policy naming `field.NAME` (a valid name, so
/// safe to echo).
pub(crate) fn limits(
    field: &str,
    entries: &BTreeMap<String, String>,
) -> Result<keygate::rate::NamedLimits, ApiError> {
    let mut limits = keygate::rate::NamedLimits::new();
    for (name, policy) in entries {
        // Not echoed: the message says what a name looks like.
        let name: keygate::rate::LimitName = name
            .parse()
            .map_err(|e: keygate::rate::InvalidNamedLimit| ApiError::bad(field, e.to_string()))?;
        let limit = policy
            .parse::<RateLimit>()
            .map_err(|e| ApiError::bad(format!("{field}.{name}"), e.to_string()))?;
        limits
            .set(name, limit)
            .map_err(|e| ApiError::bad(field, e.to_string()))?;
    }
    Ok(limits)
}

/// `POST /keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CreateKey {
    /// Human-readable name (1 to 200 characters).
    pub name: String,
    /// Project, application or team the key belongs to.
    #[serde(default)]
    pub owner: Option<String>,
    /// Scopes to grant, like `orders:read` or `orders:*`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When the key stops working (RFC 3339, in the future); absent or null: never.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Application-defined metadata (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// Client address ranges the key may be used from (CIDR); empty: anywhere.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// The key's rate limit (`100/1s`, `100/1s burst 200`, `unlimited`); absent or null: the
    /// services' default.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// The key's quota (`10000/day`, `1000000/month`, `credits 500 refill 500 every 1d`);
    /// absent or null: none of its own.
    #[serde(default)]
    pub quota: Option<String>,
    /// The key's named limits, name -> policy (`{"writes": "10/1s", "reads": "100/1s burst
    /// 200", "bulk": "unlimited"}`), each applied by the routes that name it; absent, null or
    /// `{}`: none of its own.
    #[serde(default)]
    pub limits: Option<BTreeMap<String, String>>,
    /// The environment to create the key in (`live`, `test`: one the service's keyring
    /// names; its prefix is the key's); absent or null: the keyring's default environment.
    #[serde(default)]
    pub environment: Option<String>,
    /// A canary: a decoy key to plant where a real key could leak. It is never accepted (a
    /// request with it gets exactly an unknown key's `401`) and each use raises a
    /// high-severity audit event (reason `canary`). It may not carry the admin scopes.
    #[serde(default)]
    pub canary: bool,
}

/// `PUT /keys/{id}/name`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rename {
    /// The new name.
    pub name: String,
}

/// `PUT /keys/{id}/scopes`: the whole new list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetScopes {
    /// The scopes (replacing the key's).
    pub scopes: Vec<String>,
}

/// `PUT /keys/{id}/expiry`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetExpiry {
    /// When the key stops working (RFC 3339); null: never. Required.
    #[schema(required = true)]
    pub expires_at: Option<String>,
}

/// `PUT /policy`: the whole lifetime policy (rules left out or null are off).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetPolicy {
    /// Every key must have an expiry (given, or the default lifetime). Default false.
    #[serde(default)]
    pub require_expiry: bool,
    /// The lifetime, in seconds, of a key created (or rotated, or whose expiry is cleared)
    /// without one.
    #[serde(default)]
    pub default_lifetime_seconds: Option<u64>,
    /// The longest lifetime a key may be given, in seconds.
    #[serde(default)]
    pub max_lifetime_seconds: Option<u64>,
    /// Keys unused for longer than this many seconds are disabled by the idle sweep.
    #[serde(default)]
    pub max_idle_seconds: Option<u64>,
}

/// `PUT /keys/{id}/rate-limit`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetRateLimit {
    /// A policy (`100/1s`, `100/1s burst 200`) or `unlimited`; null: the services' default.
    /// Required.
    #[schema(required = true)]
    pub rate_limit: Option<String>,
}

/// `PUT /keys/{id}/quota`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetQuota {
    /// A quota (`10000/day`, `1000000/month`, `credits 500 refill 500 every 1d`); null: none
    /// of its own. Required.
    #[schema(required = true)]
    pub quota: Option<String>,
}

/// `POST /keys/{id}/credits`: a top-up of the key's credit balance.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AddCredits {
    /// How many credits to add: 1 to 1000000000000. The key's own quota (or the owner's
    /// shared quota) must be credits (else 409). Required.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub add: u64,
}

/// `PUT /keys/{id}/limits`: the whole new set of named limits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetLimits {
    /// Name -> policy (`{"writes": "10/1s", "bulk": "unlimited"}`), replacing the key's named
    /// limits; `{}`: none. At most 16; a name is 1 to 32 lowercase letters, digits, `_` or
    /// `-`, starting with a letter (not `key`, `failures` or `quota`).
    pub limits: BTreeMap<String, String>,
}

/// `PUT /keys/{id}/metadata`: the whole new object.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetMetadata {
    /// The metadata (replacing the key's).
    #[schema(value_type = Object)]
    pub metadata: Metadata,
}

/// `PUT /keys/{id}/allowed-ips`: the whole new list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetAllowedIps {
    /// Client address ranges (CIDR, or single addresses); empty: anywhere.
    pub allowed_ips: Vec<String>,
}

/// `POST /keys/{id}/rotate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rotate {
    /// How long the old key keeps working, in seconds (0: revoked at once; at most 30 days).
    /// Absent: 24 hours.
    #[serde(default = "default_grace")]
    pub grace_seconds: u64,
}

fn default_grace() -> u64 {
    24 * 3600
}

impl Rotate {
    pub(crate) fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_seconds)
    }
}

/// The query of `GET /keys`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[non_exhaustive]
pub struct ListParams {
    /// Only keys in this state: `active`, `disabled`, `revoked` or `expired`.
    pub state: Option<String>,
    /// Only keys of this owner.
    pub owner: Option<String>,
    /// Only keys whose name contains this text (case-insensitive).
    pub search: Option<String>,
    /// Only keys of this environment (`live`, `test`: one the service's keyring names, as
    /// `GET /environments` lists them); unknown: 400.
    pub environment: Option<String>,
    /// Keys per page, 1 to 1000 (default 100).
    pub limit: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

/// The query of `GET /audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[non_exhaustive]
pub struct AuditParams {
    /// Only events of this key (its id).
    pub key_id: Option<String>,
    /// Only the owner's own events and those of the keys that belong or belonged to it,
    /// deleted keys too (its id; unknown: 404).
    pub owner: Option<String>,
    /// Only requests with this outcome: `allowed` or `denied`.
    pub outcome: Option<String>,
    /// Only denied requests with this reason: `wrong_secret`, `revoked`, `expired`, …
    pub reason: Option<String>,
    /// Only this action: `request`, `created`, `revoked`, … (see the event's `action`).
    pub action: Option<String>,
    /// Only events at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only events older than this event id (the `next` of the previous page).
    pub before: Option<String>,
    /// Events per page, 1 to 1000 (default 50).
    pub limit: Option<String>,
}

/// The query of `GET /usage`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[non_exhaustive]
pub struct UsageParams {
    /// Only this key (its id).
    pub key_id: Option<String>,
    /// Only the keys that belong or belonged to this owner, deleted keys too (its id;
    /// unknown: 404), one row per key and day.
    pub owner: Option<String>,
    /// Days to cover, today included: 1 to 3660 (default 30).
    pub days: Option<String>,
}

/// A whole number in `range` from query parameter `field`, `default` when absent.
pub(crate) fn number(
    field: &str,
    text: Option<&str>,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::bad(
                field,
                format!(
                    "expected a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// `POST /owners`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CreateOwner {
    /// The id keys name it by (1 to 200 characters, no control characters).
    pub id: String,
    /// Human-readable name (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// Application-defined metadata (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// A rate limit all its keys share, like `10/1m`; absent or null: none.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// A quota all its keys share, like `100000/month`; absent or null: none.
    #[serde(default)]
    pub quota: Option<String>,
    /// Named limits all its keys share, name -> policy (`{"writes": "100/1s"}`); absent,
    /// null or `{}`: none.
    #[serde(default)]
    pub limits: Option<BTreeMap<String, String>>,
}

/// `PATCH /owners/{id}`: each field present is replaced, the others stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UpdateOwner {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// New metadata (replaces the whole object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<Metadata>,
    /// A new shared rate limit, like `10/1m`; null removes it.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// A new shared quota, like `100000/month`; null removes it.
    #[serde(default)]
    pub quota: Option<String>,
    /// New shared named limits, name -> policy (`{"writes": "100/1s"}`): replaces the whole
    /// set; `{}` or null removes them all.
    #[serde(default)]
    pub limits: Option<BTreeMap<String, String>>,
}

/// The query of `GET /owners`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[non_exhaustive]
pub struct OwnerListParams {
    /// Owners with ids after this one (the previous page's `next`).
    pub after: Option<String>,
    /// At most this many owners (1 to 1000, default 100).
    pub limit: Option<String>,
}

//! What both SQL stores share: time and column encodings, record normalisation, error mapping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use keygate::identity::Metadata;
use keygate::owner::OwnerRecord;
use keygate::quota::Quota;
use keygate::rate::{NamedLimits, RateLimit};
use keygate::store::KeyFilter;
use keygate::{KeyChange, KeyId, KeyRecord, KeyState, Scope, StoreError};

/// The columns every read of a key selects (a literal, for `concat!`). The metadata is read
/// as text in both dialects (PostgreSQL keeps it as `jsonb`).
macro_rules! columns {
    () => {
        concat!(
            "id, prefix, name, owner, digest, pepper_version, scopes, ",
            "CAST(metadata AS text) AS metadata, allowed_ips, rotated_from, created_at, ",
            "updated_at, expires_at, disabled_at, revoked_at, last_used_at, rate_limit, canary, ",
            "quota, lineage, limits, quota_granted"
        )
    };
}
pub(crate) use columns;

/// Microseconds since the Unix epoch (negative before it). Both stores keep microseconds.
pub(crate) fn to_micros(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

pub(crate) fn from_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// A change whose times are truncated as the database stores them, so the record returned
/// equals the record read back later.
pub(crate) fn truncate_change(change: KeyChange) -> KeyChange {
    match change {
        KeyChange::SetExpiry(at) => KeyChange::SetExpiry(at.map(truncate)),
        other => other,
    }
}

/// `at`, truncated to what the database keeps.
pub(crate) fn truncate(at: SystemTime) -> SystemTime {
    from_micros(to_micros(at))
}

/// The record with every time truncated to microseconds: what the database will hand back.
pub(crate) fn normalized(record: &KeyRecord) -> KeyRecord {
    let mut r = record.clone();
    r.created_at = truncate(r.created_at);
    r.updated_at = truncate(r.updated_at);
    r.expires_at = r.expires_at.map(truncate);
    r.disabled_at = r.disabled_at.map(truncate);
    r.revoked_at = r.revoked_at.map(truncate);
    r.last_used_at = r.last_used_at.map(truncate);
    r
}

/// The lowercase name, searched by [`KeyFilter::name_contains`] exactly as `MemoryStore` does.
pub(crate) fn fold(name: &str) -> String {
    name.to_lowercase()
}

pub(crate) fn scope_strings(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(|s| s.as_str().to_owned()).collect()
}

pub(crate) fn ip_strings(ips: &[IpNet]) -> Vec<String> {
    ips.iter().map(ToString::to_string).collect()
}

#[cfg(feature = "sqlite")]
pub(crate) fn json_array(items: Vec<String>) -> String {
    serde_json::Value::from(items).to_string()
}

pub(crate) fn metadata_json(metadata: &Metadata) -> String {
    serde_json::Value::Object(metadata.clone()).to_string()
}

/// A row as read, before parsing into a [`KeyRecord`]. Public (hidden) for the fuzz targets;
/// the fields are the columns of the same names. No `Debug`: it would print the digest.
#[allow(missing_docs, missing_debug_implementations)]
pub struct RawRecord {
    pub id: String,
    pub prefix: String,
    pub name: String,
    pub owner: Option<String>,
    pub digest: Vec<u8>,
    pub pepper_version: i64,
    pub scopes: Vec<String>,
    pub metadata: String,
    pub allowed_ips: Vec<String>,
    pub rotated_from: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    pub disabled_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub rate_limit: Option<String>,
    pub canary: bool,
    pub quota: Option<String>,
    /// `None` reads as the key's own id.
    pub lineage: Option<String>,
    /// Named limits in their text form; empty: none.
    pub limits: String,
    /// Credits added by top-ups in all (never negative).
    pub quota_granted: i64,
}

/// A stored value keygate cannot read back: the store is damaged or written by something else.
/// Reported as `Unavailable` (503), never as an unknown key (401).
#[derive(Debug, thiserror::Error)]
#[error("key store returned a malformed {column} for key {id:?}")]
pub(crate) struct Corrupt {
    id: String,
    column: &'static str,
}

pub(crate) fn corrupt(id: &str, column: &'static str) -> StoreError {
    StoreError::unavailable(Corrupt {
        id: id.chars().take(KeyId::LEN + 4).collect(),
        column,
    })
}

/// Reads a SQLite JSON array column of strings.
#[cfg(feature = "sqlite")]
pub fn parse_json_strings(
    id: &str,
    column: &'static str,
    json: &str,
) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(json).map_err(|_| corrupt(id, column))
}

impl RawRecord {
    /// The record, or `Unavailable` (never "unknown key") when a column cannot be read back.
    pub fn into_record(self) -> Result<KeyRecord, StoreError> {
        let id = &self.id;
        let key_id: KeyId = id.parse().map_err(|_| corrupt(id, "id"))?;
        let digest =
            keygate::Digest::from_slice(&self.digest).ok_or_else(|| corrupt(id, "digest"))?;
        let pepper_version =
            u32::try_from(self.pepper_version).map_err(|_| corrupt(id, "pepper_version"))?;
        let scopes = self
            .scopes
            .iter()
            .map(|s| Scope::new(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt(id, "scopes"))?;
        let metadata = match serde_json::from_str(&self.metadata) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(corrupt(id, "metadata")),
        };
        let allowed_ips = self
            .allowed_ips
            .iter()
            .map(|s| s.parse::<IpNet>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt(id, "allowed_ips"))?;
        let rotated_from = self
            .rotated_from
            .as_deref()
            .map(str::parse::<KeyId>)
            .transpose()
            .map_err(|_| corrupt(id, "rotated_from"))?;
        let rate_limit = self
            .rate_limit
            .as_deref()
            .map(str::parse::<RateLimit>)
            .transpose()
            .map_err(|_| corrupt(id, "rate_limit"))?;
        let quota = self
            .quota
            .as_deref()
            .map(str::parse::<Quota>)
            .transpose()
            .map_err(|_| corrupt(id, "quota"))?;
        let limits = self
            .limits
            .parse::<NamedLimits>()
            .map_err(|_| corrupt(id, "limits"))?;
        let lineage = match self.lineage.as_deref() {
            Some(lineage) => lineage.parse().map_err(|_| corrupt(id, "lineage"))?,
            None => key_id,
        };
        Ok(KeyRecord {
            id: key_id,
            prefix: self.prefix,
            name: self.name,
            owner: self.owner,
            digest,
            pepper_version,
            scopes,
            metadata,
            allowed_ips,
            rate_limit,
            limits,
            quota,
            lineage,
            quota_granted: u64::try_from(self.quota_granted)
                .map_err(|_| corrupt(id, "quota_granted"))?,
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
            expires_at: self.expires_at.map(from_micros),
            disabled_at: self.disabled_at.map(from_micros),
            revoked_at: self.revoked_at.map(from_micros),
            rotated_from,
            last_used_at: self.last_used_at.map(from_micros),
            canary: self.canary,
        })
    }
}

/// Maps a driver error. Input is validated before any query, so whatever the database refuses
/// is the store failing (`Unavailable`, 503), except a duplicate id on insert (see
/// [`is_unique_violation`]).
pub(crate) fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::unavailable(error)
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

pub(crate) fn id_taken(id: KeyId) -> StoreError {
    StoreError::Conflict {
        id,
        reason: "a key with this id exists or existed",
    }
}

/// The SQL condition for a state filter, as [`KeyRecord::state`] decides: the text before the
/// bound current time, and the text after it (`None`: the condition needs no time).
pub(crate) fn state_sql(state: KeyState) -> (&'static str, Option<&'static str>) {
    match state {
        KeyState::Revoked => ("revoked_at IS NOT NULL", None),
        KeyState::Disabled => ("revoked_at IS NULL AND disabled_at IS NOT NULL", None),
        KeyState::Expired => (
            "revoked_at IS NULL AND disabled_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ",
            Some(""),
        ),
        KeyState::Active => (
            "revoked_at IS NULL AND disabled_at IS NULL AND (expires_at IS NULL OR expires_at > ",
            Some(")"),
        ),
    }
}

/// The lowercase needle of a name search.
pub(crate) fn needle(filter: &KeyFilter) -> Option<String> {
    filter.name_contains.as_deref().map(fold)
}

/// The stored text of a rate limit (`NULL` for the default).
pub(crate) fn rate_limit_text(limit: Option<&RateLimit>) -> Option<String> {
    limit.map(ToString::to_string)
}

/// A quota as stored: its text form (`10000/day`, `credits 500 refill 500 every 1d`).
pub(crate) fn quota_text(quota: Option<&Quota>) -> Option<String> {
    quota.map(ToString::to_string)
}

/// A key's top-up total as stored: a signed 64-bit number (totals are at most
/// [`MAX_GRANTED`](keygate::quota::MAX_GRANTED), far below its limit).
pub(crate) fn granted_number(granted: u64) -> Result<i64, StoreError> {
    i64::try_from(granted).map_err(|_| {
        StoreError::unavailable(format!(
            "a top-up total of {granted} is beyond what the table keeps"
        ))
    })
}

/// Named limits as stored: their canonical text form (the empty text: none).
pub(crate) fn limits_text(limits: &NamedLimits) -> String {
    limits.to_string()
}

/// An owner's stored named limits.
pub(crate) fn owner_named_limits(text: &str) -> Result<NamedLimits, StoreError> {
    text.parse()
        .map_err(|_| StoreError::unavailable(CorruptOwner { column: "limits" }))
}

/// An owner's stored quota.
pub(crate) fn owner_quota(text: Option<&str>) -> Result<Option<Quota>, StoreError> {
    text.map(str::parse::<Quota>)
        .transpose()
        .map_err(|_| StoreError::unavailable(CorruptOwner { column: "quota" }))
}

/// `(pepper_version, count)` rows as the store trait returns them (both columns are checked
/// non-negative by the schema).
pub(crate) fn version_counts(rows: Vec<(i64, i64)>) -> Vec<(u32, u64)> {
    rows.into_iter()
        .filter_map(|(version, count)| {
            Some((u32::try_from(version).ok()?, u64::try_from(count).ok()?))
        })
        .collect()
}

/// The columns every read of an owner selects.
pub(crate) const OWNER_COLUMNS: &str = "id, name, CAST(metadata AS text) AS metadata, rate_limit, quota, limits, created_at, \
     updated_at, quota_granted";

/// An owner row as read, before parsing into an [`OwnerRecord`].
pub(crate) struct RawOwner {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) metadata: String,
    pub(crate) rate_limit: Option<String>,
    pub(crate) quota: Option<String>,
    pub(crate) limits: String,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) quota_granted: i64,
}

/// A stored owner value keygate cannot read back: reported as `Unavailable` (503).
#[derive(Debug, thiserror::Error)]
#[error("key store returned a malformed {column} for an owner")]
pub(crate) struct CorruptOwner {
    column: &'static str,
}

impl RawOwner {
    /// The record, or `Unavailable` when a column cannot be read back.
    pub(crate) fn into_owner(self) -> Result<OwnerRecord, StoreError> {
        let corrupt = |column| StoreError::unavailable(CorruptOwner { column });
        let metadata = match serde_json::from_str(&self.metadata) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(corrupt("metadata")),
        };
        let rate_limit = self
            .rate_limit
            .as_deref()
            .map(str::parse::<RateLimit>)
            .transpose()
            .map_err(|_| corrupt("rate_limit"))?;
        let quota = owner_quota(self.quota.as_deref())?;
        let limits = owner_named_limits(&self.limits)?;
        let mut owner = OwnerRecord::bare(&self.id, from_micros(self.created_at));
        owner.name = self.name;
        owner.metadata = metadata;
        owner.rate_limit = rate_limit;
        owner.quota = quota;
        owner.limits = limits;
        owner.quota_granted = owner_granted(self.quota_granted)?;
        owner.updated_at = from_micros(self.updated_at);
        Ok(owner)
    }
}

/// The owner with its times truncated to what the database keeps.
pub(crate) fn normalized_owner(mut owner: OwnerRecord) -> OwnerRecord {
    owner.created_at = truncate(owner.created_at);
    owner.updated_at = truncate(owner.updated_at);
    owner
}

/// An owner's stored top-up total (never negative), read with the owner or with a key.
pub(crate) fn owner_granted(granted: i64) -> Result<u64, StoreError> {
    u64::try_from(granted).map_err(|_| {
        StoreError::unavailable(CorruptOwner {
            column: "quota_granted",
        })
    })
}

/// An owner's stored rate limit, read with a key.
pub(crate) fn owner_limit(text: Option<&str>) -> Result<Option<RateLimit>, StoreError> {
    text.map(str::parse::<RateLimit>).transpose().map_err(|_| {
        StoreError::unavailable(CorruptOwner {
            column: "rate_limit",
        })
    })
}

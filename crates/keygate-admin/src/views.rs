//! The JSON the admin API answers: keys (never a secret or a digest, except the one full key of
//! a create or rotate response), audit events and usage. Times are RFC 3339 in UTC with
//! milliseconds (`2027-01-31T00:00:00.000Z`); key ids are the 12 characters after the prefix.

use std::collections::BTreeMap;
use std::time::SystemTime;

use keygate::audit::{Folded, Outcome, StoredEvent, UsageDay};
use keygate::{KeyRecord, KeyState, Keyring, Metadata};
use serde::Serialize;
use utoipa::ToSchema;

/// A time as the API writes it.
pub(crate) fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A key's lifecycle state at the time of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StateView {
    /// Usable.
    Active,
    /// Switched off; can be enabled again.
    Disabled,
    /// Switched off for good.
    Revoked,
    /// Past its expiry time.
    Expired,
}

impl From<KeyState> for StateView {
    fn from(state: KeyState) -> Self {
        match state {
            KeyState::Active => Self::Active,
            KeyState::Disabled => Self::Disabled,
            KeyState::Revoked => Self::Revoked,
            KeyState::Expired => Self::Expired,
        }
    }
}

/// One key, as stored (never its secret or digest).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct KeyView {
    /// The public id.
    pub id: String,
    /// The deployment prefix the key was minted with.
    pub prefix: String,
    /// The environment of that prefix (`live`, `test`), when the service's keyring names
    /// environments; null otherwise.
    pub environment: Option<String>,
    /// Human-readable name.
    pub name: String,
    /// Project, application or team the key belongs to.
    pub owner: Option<String>,
    /// The state now.
    pub state: StateView,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Application-defined metadata (a JSON object).
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// Client address ranges the key may be used from (CIDR); empty: anywhere.
    pub allowed_ips: Vec<String>,
    /// The key's own rate limit (`100/1s`, `100/1s burst 200`, `unlimited`); null: the
    /// services' default applies.
    pub rate_limit: Option<String>,
    /// The key's own quota (`10000/day`, `credits 500 refill 500 every 1d`); null: none (its
    /// owner's may still apply).
    pub quota: Option<String>,
    /// The key its quota is counted under: the first key of its rotation chain (its own id
    /// unless it was made by a rotation), so a rotated key spends its predecessor's balance.
    pub quota_lineage: String,
    /// The credits added to the key's credit balance by top-ups (`POST /keys/{id}/credits`),
    /// in all; 0: none.
    pub quota_granted: u64,
    /// The key's named limits, name -> policy (`{"reads": "100/1s", "writes": "10/1s"}`),
    /// each applied by the routes that name it; `{}`: none of its own.
    pub limits: BTreeMap<String, String>,
    /// The version of the pepper its digest was made with.
    pub pepper_version: u32,
    /// When the key was created.
    pub created_at: String,
    /// When the record last changed.
    pub updated_at: String,
    /// When the key stops working, if ever.
    pub expires_at: Option<String>,
    /// When the key was disabled, if it is.
    pub disabled_at: Option<String>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<String>,
    /// When the key last authenticated a request (trails real use by up to the services'
    /// last-used flush interval).
    pub last_used_at: Option<String>,
    /// The key this one replaced, when it was made by a rotation.
    pub rotated_from: Option<String>,
    /// Whether the key is a canary: never accepted; each use raises a high-severity audit
    /// event (reason `canary`).
    pub canary: bool,
}

impl KeyView {
    /// `record` as the API shows it, its state at `now`, its environment named by `keyring`.
    pub(crate) fn new(record: &KeyRecord, now: SystemTime, keyring: Option<&Keyring>) -> Self {
        Self {
            id: record.id.to_string(),
            prefix: record.prefix.clone(),
            environment: keyring
                .and_then(|k| k.environment_of(&record.prefix))
                .map(|e| e.name().to_owned()),
            name: record.name.clone(),
            owner: record.owner.clone(),
            state: record.state(now).into(),
            scopes: record
                .scopes
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            metadata: record.metadata.clone(),
            allowed_ips: record.allowed_ips.iter().map(ToString::to_string).collect(),
            rate_limit: record.rate_limit.map(|limit| limit.to_string()),
            quota: record.quota.map(|quota| quota.to_string()),
            quota_lineage: record.lineage.to_string(),
            quota_granted: record.quota_granted,
            limits: limits_view(&record.limits),
            pepper_version: record.pepper_version,
            created_at: time(record.created_at),
            updated_at: time(record.updated_at),
            expires_at: record.expires_at.map(time),
            disabled_at: record.disabled_at.map(time),
            revoked_at: record.revoked_at.map(time),
            last_used_at: record.last_used_at.map(time),
            rotated_from: record.rotated_from.map(|id| id.to_string()),
            canary: record.canary,
        }
    }
}

/// One page of keys, ordered by id.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct KeyList {
    /// The keys.
    pub keys: Vec<KeyView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// One environment of the service's keyring (`GET /environments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct EnvironmentView {
    /// Its name (`live`, `test`): what `environment` of `GET /keys` and `POST /keys` takes.
    pub name: String,
    /// The prefix of its keys (`acme_live`).
    pub prefix: String,
    /// Whether keys are minted in it when no environment is given.
    pub default: bool,
}

/// The keyring's environments, the default first; empty when it names none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct EnvironmentList {
    /// The environments.
    pub environments: Vec<EnvironmentView>,
}

/// The deployment's key lifetime policy (`GET /policy`, `PUT /policy`); a null rule is off.
#[derive(Debug, Serialize, ToSchema)]
#[non_exhaustive]
pub struct PolicyView {
    /// Every key must have an expiry.
    pub require_expiry: bool,
    /// The lifetime, in seconds, of a key given none.
    pub default_lifetime_seconds: Option<u64>,
    /// The longest lifetime allowed, in seconds.
    pub max_lifetime_seconds: Option<u64>,
    /// Keys unused for longer than this many seconds are disabled.
    pub max_idle_seconds: Option<u64>,
}

impl PolicyView {
    /// The view of `policy`.
    #[must_use]
    pub fn new(policy: &keygate::policy::LifetimePolicy) -> Self {
        let seconds = |d: Option<std::time::Duration>| d.map(|d| d.as_secs());
        Self {
            require_expiry: policy.require_expiry,
            default_lifetime_seconds: seconds(policy.default_lifetime),
            max_lifetime_seconds: seconds(policy.max_lifetime),
            max_idle_seconds: seconds(policy.max_idle),
        }
    }
}

/// A key just created: the full key, shown this once (keygate keeps only its digest), and its
/// record.
#[derive(Serialize, ToSchema)]
#[non_exhaustive]
pub struct CreatedKeyView {
    /// The full key (`{prefix}_{id}_{secret}{checksum}`). It cannot be shown again.
    pub key: String,
    /// The stored record.
    pub record: KeyView,
}

impl std::fmt::Debug for CreatedKeyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKeyView")
            .field("key", &"<redacted>")
            .field("record", &self.record)
            .finish()
    }
}

/// A rotation: the new key (shown this once) and its record, and the old key as it now stands
/// (expiring at the end of the grace period, or revoked).
#[derive(Serialize, ToSchema)]
#[non_exhaustive]
pub struct RotatedKeyView {
    /// The new full key. It cannot be shown again.
    pub key: String,
    /// The new key's record.
    pub record: KeyView,
    /// The old key's record.
    pub old: KeyView,
}

impl std::fmt::Debug for RotatedKeyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedKeyView")
            .field("key", &"<redacted>")
            .field("record", &self.record)
            .field("old", &self.old)
            .finish()
    }
}

/// Many denied requests that named no existing key, folded into one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct FoldedView {
    /// How many denials the event stands for.
    pub count: u64,
    /// When the last of them happened (the first is the event's `at`).
    pub last_at: String,
    /// A sample of the key ids presented.
    pub sample: Vec<String>,
    /// Whether the event counts clients beyond the folding limit ("other clients").
    pub other_clients: bool,
}

impl From<&Folded> for FoldedView {
    fn from(f: &Folded) -> Self {
        Self {
            count: f.count,
            last_at: time(f.last_at),
            sample: f.sample.iter().map(ToString::to_string).collect(),
            other_clients: f.other_clients,
        }
    }
}

/// One audit event: a request decision, or a change to a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct EventView {
    /// The event's id in the trail (ids only grow).
    pub id: i64,
    /// When it happened.
    pub at: String,
    /// `request`, `created`, `renamed`, `scopes_changed`, `expiry_changed`,
    /// `metadata_changed`, `allowed_ips_changed`, `rate_limit_changed`, `quota_changed`,
    /// `credits_added`,
    /// `limits_changed`, `disabled`, `enabled`, `rotated`, `revoked`, `deleted`, `denials`
    /// (folded), `leak_reported`, `policy_changed` (the lifetime policy; no key), or
    /// `owner_created`, `owner_changed`, `owner_deleted` (no key; `owner` names the owner).
    /// An action a newer keygate sharing the store wrote shows the name it was stored under.
    pub action: String,
    /// The key concerned.
    pub key_id: Option<String>,
    /// For requests: `allowed` or `denied`.
    pub outcome: Option<String>,
    /// For denied requests: why (`wrong_secret`, `revoked`, `rate_limited`, …; a newer
    /// keygate's reason by its stored name).
    pub reason: Option<String>,
    /// For requests: the HTTP method.
    pub method: Option<String>,
    /// For requests: the route template.
    pub route: Option<String>,
    /// For requests: the client address.
    pub client_ip: Option<String>,
    /// For requests: the response status.
    pub status: Option<u16>,
    /// For requests: the time taken, in microseconds.
    pub latency_us: Option<u64>,
    /// For requests: the request id.
    pub request_id: Option<String>,
    /// For changes: who made it (a user name, or an admin key's id).
    pub actor: Option<String>,
    /// For changes: more about it (a rotation names the new key; an owner change lists the
    /// fields it set).
    pub detail: Option<String>,
    /// For owner events: the owner's id.
    pub owner: Option<String>,
    /// For folded denials: how many, until when, a sample of ids.
    pub folded: Option<FoldedView>,
}

impl From<&StoredEvent> for EventView {
    fn from(stored: &StoredEvent) -> Self {
        let e = &stored.event;
        Self {
            id: stored.id,
            at: time(e.at),
            // An unrecognized action or reason (a newer keygate's) shows its stored name.
            action: e.action_name().to_owned(),
            key_id: e.key_id.as_ref().map(ToString::to_string),
            outcome: e.outcome.map(|o: Outcome| o.as_str().to_owned()),
            reason: e.reason_name().map(str::to_owned),
            method: e.method.as_ref().map(|m| m.as_str().to_owned()),
            route: e.route.as_deref().map(str::to_owned),
            client_ip: e.client_ip.map(|ip| ip.to_string()),
            status: e.status,
            latency_us: e
                .latency
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            request_id: e.request_id.as_deref().map(str::to_owned),
            actor: e.actor.as_deref().map(str::to_owned),
            detail: e.detail.clone(),
            owner: e.owner.as_deref().map(str::to_owned),
            folded: e.folded.as_deref().map(FoldedView::from),
        }
    }
}

/// One page of audit events, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct EventList {
    /// The events.
    pub events: Vec<EventView>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next: Option<i64>,
}

/// One key's requests on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct UsageView {
    /// The key.
    pub key_id: String,
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Requests let in.
    pub allowed: u64,
    /// Requests refused (of a key that exists).
    pub denied: u64,
}

impl From<&UsageDay> for UsageView {
    fn from(u: &UsageDay) -> Self {
        Self {
            key_id: u.key_id.to_string(),
            day: humantime::format_rfc3339_seconds(u.day)
                .to_string()
                .chars()
                .take(10)
                .collect(),
            allowed: u.allowed,
            denied: u.denied,
        }
    }
}

/// Requests per key per day, ordered by key id, then day. Days without requests are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct UsageList {
    /// The first day covered (`YYYY-MM-DD`, UTC).
    pub since: String,
    /// The counts.
    pub days: Vec<UsageView>,
}

/// What one quota has left now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct QuotaLineView {
    /// The quota (`10000/day`, `credits 500 refill 500 every 1d`).
    pub quota: String,
    /// Credits operators have added to the balance, in all (a credits quota; 0 otherwise).
    pub granted: u64,
    /// Units left now: what a request may still spend.
    pub remaining: u64,
    /// When the period starts afresh or the next refill comes; null: never (credits without a
    /// refill).
    pub resets_at: Option<String>,
}

/// A key's quota balances now, as the services' quota meter counts them (see docs/quotas.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct QuotaBalanceView {
    /// The key.
    pub key_id: String,
    /// When the balances were read.
    pub at: String,
    /// The key's own quota, counted under its rotation lineage (`quota_lineage`); null: none.
    pub key: Option<QuotaLineView>,
    /// Its owner's quota, shared by all the owner's keys; null: no owner, or none.
    pub owner: Option<QuotaLineView>,
}

impl QuotaBalanceView {
    pub(crate) fn new(key_id: &keygate::KeyId, balance: &keygate::quota::QuotaBalance) -> Self {
        let line = |line| QuotaLineView::new(balance, line);
        Self {
            key_id: key_id.to_string(),
            at: time(balance.at),
            key: balance.key.as_ref().map(line),
            owner: balance.owner.as_ref().map(line),
        }
    }
}

impl QuotaLineView {
    /// One line of `balance`.
    fn new(
        balance: &keygate::quota::QuotaBalance,
        (line, usage): &(keygate::quota::QuotaLine, keygate::quota::QuotaUsage),
    ) -> Self {
        Self {
            quota: line.quota.to_string(),
            granted: line.granted,
            remaining: usage.remaining,
            resets_at: usage.reset.map(|reset| time(balance.at + reset)),
        }
    }
}

/// An owner's shared quota balance now, as the services' quota meter counts it: what every
/// key of the owner spends from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct OwnerQuotaView {
    /// The owner.
    pub owner_id: String,
    /// When the balance was read.
    pub at: String,
    /// The owner's shared quota and its balance; null: the owner has no quota.
    pub quota: Option<QuotaLineView>,
}

impl OwnerQuotaView {
    pub(crate) fn new(owner_id: &str, balance: &keygate::quota::QuotaBalance) -> Self {
        Self {
            owner_id: owner_id.to_owned(),
            at: time(balance.at),
            quota: balance
                .owner
                .as_ref()
                .map(|line| QuotaLineView::new(balance, line)),
        }
    }
}

/// One owner: the customer, team or application its keys belong to.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct OwnerView {
    /// The id keys name it by.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Application-defined metadata (a JSON object).
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// The rate limit all its keys share (`10/1m`, `100/1s burst 200`); null: none.
    pub rate_limit: Option<String>,
    /// The quota all its keys share (`100000/month`); null: none.
    pub quota: Option<String>,
    /// Credits operators have added to the shared credit balance, in all
    /// (`POST /owners/{id}/credits`); 0: none.
    pub quota_granted: u64,
    /// The named limits all its keys share, name -> policy (`{"writes": "100/1s"}`); `{}`:
    /// none.
    pub limits: BTreeMap<String, String>,
    /// When the owner was created (by hand, or with its first key).
    pub created_at: String,
    /// When the record last changed.
    pub updated_at: String,
    /// How many keys (in any state) belong to it; only on `GET /owners/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
}

impl OwnerView {
    pub(crate) fn new(owner: &keygate::owner::OwnerRecord, keys: Option<u64>) -> Self {
        Self {
            id: owner.id.clone(),
            name: owner.name.clone(),
            metadata: owner.metadata.clone(),
            rate_limit: owner.rate_limit.map(|l| l.to_string()),
            quota: owner.quota.map(|q| q.to_string()),
            quota_granted: owner.quota_granted,
            limits: limits_view(&owner.limits),
            created_at: time(owner.created_at),
            updated_at: time(owner.updated_at),
            keys,
        }
    }
}

/// One page of owners, ordered by id.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct OwnerList {
    /// The owners.
    pub owners: Vec<OwnerView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// What a bulk action on an owner's keys changed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[non_exhaustive]
pub struct OwnerKeysChanged {
    /// The keys changed (keys the action does not apply to, like revoked ones, are not).
    pub changed: Vec<KeyView>,
}

/// Named limits as the API shows them: name -> policy text, sorted by name.
fn limits_view(limits: &keygate::rate::NamedLimits) -> BTreeMap<String, String> {
    limits
        .iter()
        .map(|(name, limit)| (name.to_string(), limit.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use keygate::Reason;
    use keygate::audit::{AuditEvent, Outcome, StoredEvent};

    use super::EventView;

    /// An event a newer keygate wrote (read back during a rolling upgrade) shows the names it
    /// was stored under; a known one shows its own.
    #[test]
    fn events_show_their_stored_names() {
        let at = std::time::SystemTime::UNIX_EPOCH;
        let view = |event: AuditEvent| EventView::from(&StoredEvent { id: 7, event });
        let newer = AuditEvent::stored(at, "credits_topped_up")
            .and_then(|event| event.stored_reason("quota_frozen"))
            .map(view)
            .unwrap();
        assert_eq!(newer.action, "credits_topped_up");
        assert_eq!(newer.reason.as_deref(), Some("quota_frozen"));
        let known = view(AuditEvent::request(at, Outcome::Denied).reason(Some(Reason::Revoked)));
        assert_eq!(known.action, "request");
        assert_eq!(known.reason.as_deref(), Some("revoked"));
    }
}

//! What a store keeps about a key, and the inputs that create and change it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::identity::{Identity, Metadata};
use crate::key::{KeyId, PlaintextKey};
use crate::pepper::Digest;
use crate::quota::{Quota, QuotaSubject};
use crate::rate::{NamedLimits, RateLimit};
use crate::scope::Scope;

/// Longest accepted key name or owner, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// Most scopes one key may carry.
pub const MAX_SCOPES: usize = 64;
/// Most allowed client IP ranges one key may carry.
pub const MAX_IP_RANGES: usize = 64;

/// Everything a store keeps about one key. Never the key itself: only its [`Digest`].
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// Public id (primary key).
    pub id: KeyId,
    /// The deployment prefix the key was minted with.
    pub prefix: String,
    /// Human-readable name.
    pub name: String,
    /// The id of the owner (project, customer, application or team) the key belongs to: an
    /// [`OwnerRecord`](crate::owner::OwnerRecord) in stores that keep owners.
    pub owner: Option<String>,
    /// HMAC-SHA256 of the key's `{id}_{secret}` part.
    pub digest: Digest,
    /// Version of the pepper that produced `digest`.
    pub pepper_version: u32,
    /// Scopes granted.
    pub scopes: Vec<Scope>,
    /// Application-defined metadata.
    pub metadata: Metadata,
    /// Client IP ranges the key may be used from; empty means anywhere.
    pub allowed_ips: Vec<IpNet>,
    /// The key's own rate limit; `None` means the verifier's default.
    pub rate_limit: Option<RateLimit>,
    /// The key's [named limits](crate::rate::NamedLimits) (`reads: 100/1s`, `writes: 10/1s`),
    /// each applied on the routes that choose it ([`RouteLimit`](crate::RouteLimit)); empty:
    /// none (the verifier's defaults per name, if any, apply).
    pub limits: NamedLimits,
    /// The key's own [quota](crate::quota) (a count per UTC period, or credits); `None`: no
    /// key quota (its owner's may still apply).
    pub quota: Option<Quota>,
    /// The id of the first key of this key's rotation chain (its own id unless it was made by
    /// a rotation): its quota is counted under [`QuotaSubject::Key`] of this id, so a rotated
    /// key and its predecessor (during the grace period) spend one balance. Set at creation,
    /// copied by every rotation, never changed.
    pub lineage: KeyId,
    /// The credits operators have added to this key's credit balance ([`KeyChange::AddCredits`]),
    /// in all, since the key was created: a running total, never lowered. Meters add what
    /// their counter has not counted yet ([`Quota::with_granted`](crate::quota::Quota::with_granted)),
    /// so a top-up counts once however often the record is read. Copied by rotations, and
    /// kept equal on every key of a [lineage](KeyRecord::lineage): they spend one balance.
    pub quota_granted: u64,
    /// When the key was created.
    pub created_at: SystemTime,
    /// When the record last changed.
    pub updated_at: SystemTime,
    /// When the key stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// When the key was disabled (reversible), if it is.
    pub disabled_at: Option<SystemTime>,
    /// When the key was revoked (final), if it was.
    pub revoked_at: Option<SystemTime>,
    /// The key this one replaced, when it was made by a rotation.
    pub rotated_from: Option<KeyId>,
    /// When the key last authenticated a request, as reported by verifiers (write-behind, so
    /// it trails real use by up to the verifier's flush interval).
    pub last_used_at: Option<SystemTime>,
    /// A canary: a decoy key that is never accepted. A request with it is refused exactly as an
    /// unknown key is (the same `401`), and raises a [`Reason::Canary`](crate::Reason::Canary)
    /// audit event and metric. Set when the key is minted ([`NewKey::canary`]), never changed.
    pub canary: bool,
}

/// The lifecycle state of a key at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Usable.
    Active,
    /// Temporarily switched off; can be enabled again.
    Disabled,
    /// Permanently switched off; kept for audit.
    Revoked,
    /// Past its expiry time.
    Expired,
}

impl KeyState {
    /// Lowercase name: `active`, `disabled`, `revoked`, `expired`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

impl KeyRecord {
    /// The key's state at `now`. Revoked outranks disabled, which outranks expired.
    #[must_use]
    pub fn state(&self, now: SystemTime) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.disabled_at.is_some() {
            KeyState::Disabled
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }

    /// Whether `ip` may use this key (always, when no ranges are set).
    #[must_use]
    pub fn allows_ip(&self, ip: Option<IpAddr>) -> bool {
        ip_allowed(&self.allowed_ips, ip)
    }

    /// Whose balance the key's own quota spends: [`QuotaSubject::Key`] of its
    /// [`lineage`](KeyRecord::lineage).
    #[must_use]
    pub fn quota_subject(&self) -> QuotaSubject {
        QuotaSubject::Key(self.lineage)
    }

    /// The identity handlers see for this key.
    #[must_use]
    pub fn identity(&self) -> Identity {
        Identity::new(
            self.id,
            self.name.clone(),
            self.owner.clone(),
            self.scopes.clone(),
            self.metadata.clone(),
        )
    }
}

pub(crate) fn ip_allowed(ranges: &[IpNet], ip: Option<IpAddr>) -> bool {
    if ranges.is_empty() {
        return true;
    }
    // An unknown client address never satisfies a restriction: fail closed.
    let Some(ip) = ip else { return false };
    let ip = canonical_ip(ip);
    ranges.iter().any(|net| net.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as dual-stack sockets report them) compare as IPv4.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Bad input to a create or change: a typed error, never a database string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The name is empty (after trimming) or too long, or contains control characters.
    #[error("invalid key name: use 1 to {MAX_NAME_LEN} characters without control characters")]
    Name,
    /// The owner is empty or too long, or contains control characters.
    #[error("invalid owner: use 1 to {MAX_NAME_LEN} characters without control characters")]
    Owner,
    /// An owner's name is empty or too long, or contains control characters.
    #[error("invalid owner name: use 1 to {MAX_NAME_LEN} characters without control characters")]
    OwnerName,
    /// A scope is invalid.
    #[error(transparent)]
    Scope(#[from] crate::scope::InvalidScope),
    /// Too many scopes.
    #[error("too many scopes: at most {MAX_SCOPES}")]
    TooManyScopes,
    /// Too many IP ranges.
    #[error("too many allowed IP ranges: at most {MAX_IP_RANGES}")]
    TooManyIpRanges,
    /// The expiry is not after the creation time.
    #[error("expiry must be in the future")]
    ExpiryInPast,
    /// The metadata holds a NUL character (in a key or a string value), which databases refuse.
    #[error("invalid metadata: strings may not contain NUL characters")]
    Metadata,
    /// A rotation's grace period is longer than [`MAX_ROTATION_GRACE`].
    #[error("rotation grace period too long: at most {} days", MAX_ROTATION_GRACE.as_secs() / 86_400)]
    GraceTooLong,
    /// A top-up ([`KeyChange::AddCredits`]) of no credits, or of more than
    /// [`MAX_QUOTA`](crate::quota::MAX_QUOTA) at once.
    #[error("invalid credits: add from 1 to {} at a time", crate::quota::MAX_QUOTA)]
    Credits,
    /// [`NewKey::environment`] names no environment of the keyring.
    #[error("unknown environment {0:?}: the keyring has no environment of that name")]
    UnknownEnvironment(String),
    /// A setting other than a `policy.*` one was to be replaced
    /// ([`KeyStore::replace_policy_settings`](crate::KeyStore::replace_policy_settings)).
    #[error("only `policy.*` settings can be replaced")]
    SettingName,
}

pub(crate) fn validate_name(name: &str) -> Result<(), InvalidInput> {
    text_ok(name).then_some(()).ok_or(InvalidInput::Name)
}

/// Metadata every store can keep: no NUL in any key or string (PostgreSQL's `jsonb` refuses it).
pub(crate) fn validate_metadata(metadata: &Metadata) -> Result<(), InvalidInput> {
    fn clean(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => !s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().all(clean),
            serde_json::Value::Object(map) => {
                map.iter().all(|(k, v)| !k.contains('\0') && clean(v))
            }
            _ => true,
        }
    }
    metadata
        .iter()
        .all(|(k, v)| !k.contains('\0') && clean(v))
        .then_some(())
        .ok_or(InvalidInput::Metadata)
}

pub(crate) fn text_ok(text: &str) -> bool {
    !text.trim().is_empty()
        && text.chars().count() <= MAX_NAME_LEN
        && !text.chars().any(char::is_control)
}

/// What to create: name, owner, scopes and restrictions. The id and secret are generated by
/// [`Keyring::mint`](crate::Keyring::mint).
///
/// ```
/// use keygate::NewKey;
/// let key = NewKey::new("billing service")
///     .owner("team-billing")
///     .scope("invoices:read")?
///     .scope("invoices:write")?;
/// # Ok::<(), keygate::scope::InvalidScope>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub(crate) name: String,
    pub(crate) owner: Option<String>,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) metadata: Metadata,
    pub(crate) expires_at: Option<SystemTime>,
    pub(crate) allowed_ips: Vec<IpNet>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) limits: NamedLimits,
    pub(crate) quota: Option<Quota>,
    pub(crate) environment: Option<String>,
    pub(crate) canary: bool,
}

impl NewKey {
    /// A key named `name`, with no owner, scopes, metadata, expiry or IP restriction.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            owner: None,
            scopes: Vec::new(),
            metadata: Metadata::new(),
            expires_at: None,
            allowed_ips: Vec::new(),
            rate_limit: None,
            limits: NamedLimits::new(),
            quota: None,
            environment: None,
            canary: false,
        }
    }

    /// Mints a canary: a decoy key that is never accepted, whatever its scopes or state. Plant
    /// it where a real key could leak (a config file, a wiki, a CI variable); a request with it
    /// gets the very response of an unknown key, and raises a high-severity
    /// [`Reason::Canary`](crate::Reason::Canary) audit event and the `reason="canary"` metric
    /// with the client's address and route (see `docs/security.md`).
    #[must_use]
    pub fn canary(mut self) -> Self {
        self.canary = true;
        self
    }

    /// Sets the owner (project, customer, application or team) by its id. A store that keeps
    /// [owner records](crate::owner) creates a bare one (named after its id) for an id it does
    /// not know yet, in the same step as the key.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Grants one scope.
    ///
    /// # Errors
    /// [`InvalidScope`](crate::scope::InvalidScope) when the scope is malformed.
    pub fn scope(mut self, scope: &str) -> Result<Self, crate::scope::InvalidScope> {
        self.scopes.push(Scope::new(scope)?);
        Ok(self)
    }

    /// Grants already-validated scopes.
    #[must_use]
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = Scope>) -> Self {
        self.scopes.extend(scopes);
        self
    }

    /// Sets the metadata object.
    #[must_use]
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the expiry time.
    #[must_use]
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Restricts the key to client addresses in `ranges`.
    #[must_use]
    pub fn allowed_ips(mut self, ranges: impl IntoIterator<Item = IpNet>) -> Self {
        self.allowed_ips.extend(ranges);
        self
    }

    /// Sets the key's rate limit (a policy, or [`RateLimit::Unlimited`]); without one the key
    /// gets the verifier's default.
    #[must_use]
    pub fn rate_limit(mut self, limit: impl Into<RateLimit>) -> Self {
        self.rate_limit = Some(limit.into());
        self
    }

    /// Sets the key's [named limits](crate::rate::NamedLimits) (`"reads: 100/1s, writes:
    /// 10/1s"`), each applied on the routes that choose it ([`RouteLimit`](crate::RouteLimit)).
    #[must_use]
    pub fn limits(mut self, limits: NamedLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the key's own [quota](crate::quota) (`"10000/day"`, `"credits 500 refill 500 every
    /// 1d"`); without one only its owner's quota (if any) applies.
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// Mints the key in the keyring's environment `name` (its prefix), instead of the default
    /// one (see [`crate::keyring`]). A name the keyring does not have is refused by
    /// [`Keyring::mint`](crate::Keyring::mint) with [`InvalidInput::UnknownEnvironment`].
    #[must_use]
    pub fn environment(mut self, name: impl Into<String>) -> Self {
        self.environment = Some(name.into());
        self
    }

    pub(crate) fn validate(&self, now: SystemTime) -> Result<(), InvalidInput> {
        validate_name(&self.name)?;
        if self.owner.as_deref().is_some_and(|o| !text_ok(o)) {
            return Err(InvalidInput::Owner);
        }
        if self.scopes.len() > MAX_SCOPES {
            return Err(InvalidInput::TooManyScopes);
        }
        if self.allowed_ips.len() > MAX_IP_RANGES {
            return Err(InvalidInput::TooManyIpRanges);
        }
        validate_metadata(&self.metadata)?;
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(InvalidInput::ExpiryInPast);
        }
        Ok(())
    }
}

/// A validated key, ready for a store: its complete record plus the plaintext to return once.
///
/// Only [`Keyring::mint`](crate::Keyring::mint) makes one, so a store never sees unvalidated
/// input or has to generate secrets itself.
#[derive(Debug)]
pub struct MintedKey {
    pub(crate) record: KeyRecord,
    pub(crate) key: PlaintextKey,
}

impl MintedKey {
    /// The record to persist.
    #[must_use]
    pub fn record(&self) -> &KeyRecord {
        &self.record
    }

    /// For store conformance tests only: the same minted key claiming id `id` (its plaintext no
    /// longer matches the record, so it never verifies). Lets a test prove a store refuses an id
    /// that exists or was deleted.
    #[doc(hidden)]
    #[must_use]
    pub fn testing_with_id(mut self, id: KeyId) -> Self {
        self.record.id = id;
        self
    }

    /// Completes creation: the store hands back the record as stored, with the plaintext. Its
    /// owner (if any) existed already; see [`MintedKey::into_created_with_owner`].
    #[must_use]
    pub fn into_created(self, stored: KeyRecord) -> CreatedKey {
        self.into_created_with_owner(stored, false)
    }

    /// Completes creation, saying whether storing the key created its owner's bare record
    /// (an owner id the store did not know; see [`OwnerRecord::bare`](crate::owner::OwnerRecord::bare)).
    #[must_use]
    pub fn into_created_with_owner(self, stored: KeyRecord, owner_created: bool) -> CreatedKey {
        CreatedKey {
            record: stored,
            key: self.key,
            owner_created,
        }
    }
}

/// A freshly created key: its record and its plaintext, which exists only here.
#[derive(Debug)]
pub struct CreatedKey {
    /// The stored record.
    pub record: KeyRecord,
    /// The full key. Show it to its owner once; it cannot be recovered later.
    pub key: PlaintextKey,
    /// Creating the key created its owner: the store did not know the owner id it names, and
    /// made its bare record in the same write. [`Admin`](crate::Admin) records an
    /// `owner_created` event for it, before the key's `created`.
    pub owner_created: bool,
}

/// One change to an existing key, applied by [`KeyAdmin::apply`](crate::store::KeyAdmin::apply).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum KeyChange {
    /// Give the key a new name.
    Rename(String),
    /// Replace the scopes.
    SetScopes(Vec<Scope>),
    /// Set or clear the expiry.
    SetExpiry(Option<SystemTime>),
    /// Replace the metadata.
    SetMetadata(Metadata),
    /// Replace the allowed client IP ranges (empty: anywhere).
    SetAllowedIps(Vec<IpNet>),
    /// Set the key's rate limit, or clear it (`None`: the verifier's default applies).
    SetRateLimit(Option<RateLimit>),
    /// Set the key's quota, or clear it (`None`: no key quota). A quota of the same kind keeps
    /// counting from the balance spent so far (see [`Quota::counter_kind`]).
    SetQuota(Option<Quota>),
    /// Replace the key's named limits (empty: none).
    SetLimits(NamedLimits),
    /// Add credits to the key's credit balance (a top-up): 1 to [`MAX_QUOTA`](crate::quota::MAX_QUOTA)
    /// at a time. Only for a key whose own quota is credits; the balance grows by this much
    /// once, on top of whatever it holds (a refill later raises it only if it fell below the
    /// refill amount). Stores apply it to every key of the key's [lineage](KeyRecord::lineage).
    AddCredits(u64),
    /// Switch the key off, reversibly.
    Disable,
    /// Switch a disabled key back on.
    Enable,
    /// Switch the key off for good. The record stays for audit.
    Revoke,
}

impl KeyChange {
    /// Checks the change's input. Stores call this before applying.
    ///
    /// # Errors
    /// [`InvalidInput`] for a bad name, too many scopes or ranges, or metadata with a NUL.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        match self {
            Self::Rename(name) => validate_name(name),
            Self::SetScopes(scopes) if scopes.len() > MAX_SCOPES => {
                Err(InvalidInput::TooManyScopes)
            }
            Self::SetMetadata(metadata) => validate_metadata(metadata),
            Self::SetAllowedIps(ips) if ips.len() > MAX_IP_RANGES => {
                Err(InvalidInput::TooManyIpRanges)
            }
            Self::AddCredits(credits) if *credits == 0 || *credits > crate::quota::MAX_QUOTA => {
                Err(InvalidInput::Credits)
            }
            _ => Ok(()),
        }
    }

    /// Applies the change to a record in memory (stores without their own query language use
    /// this; SQL stores translate the same rules into statements).
    ///
    /// Enabling or disabling a revoked key is refused; revoking twice keeps the first time.
    /// Adding credits to a key whose own quota is not credits is refused, as is a top-up
    /// beyond [`MAX_GRANTED`](crate::quota::MAX_GRANTED) in all.
    ///
    /// # Errors
    /// [`ChangeRefused::Revoked`] when enabling or disabling a revoked key;
    /// [`ChangeRefused::NoCredits`] or [`ChangeRefused::TooManyCredits`] for a top-up.
    pub fn apply_to(self, record: &mut KeyRecord, now: SystemTime) -> Result<(), ChangeRefused> {
        match self {
            Self::Rename(name) => record.name = name,
            Self::SetScopes(scopes) => record.scopes = scopes,
            Self::SetExpiry(at) => record.expires_at = at,
            Self::SetMetadata(metadata) => record.metadata = metadata,
            Self::SetAllowedIps(ips) => record.allowed_ips = ips,
            Self::SetRateLimit(limit) => record.rate_limit = limit,
            Self::SetQuota(quota) => record.quota = quota,
            Self::SetLimits(limits) => record.limits = limits,
            Self::AddCredits(credits) => {
                if !matches!(record.quota, Some(Quota::Credits { .. })) {
                    return Err(ChangeRefused::NoCredits);
                }
                record.quota_granted = record
                    .quota_granted
                    .checked_add(credits)
                    .filter(|total| *total <= crate::quota::MAX_GRANTED)
                    .ok_or(ChangeRefused::TooManyCredits)?;
            }
            Self::Disable | Self::Enable if record.revoked_at.is_some() => {
                return Err(ChangeRefused::Revoked);
            }
            Self::Disable => {
                record.disabled_at.get_or_insert(now);
            }
            Self::Enable => record.disabled_at = None,
            Self::Revoke => {
                record.revoked_at.get_or_insert(now);
            }
        }
        record.updated_at = now;
        Ok(())
    }
}

/// A change that cannot apply to the key in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeRefused {
    /// The key is revoked; revocation is final.
    #[error("the key is revoked; revocation is final")]
    Revoked,
    /// Only an active key can be rotated; this one is disabled.
    #[error("the key is disabled; enable it before rotating it")]
    Disabled,
    /// Only an active key can be rotated; this one has expired.
    #[error("the key has expired; create a new key instead of rotating it")]
    Expired,
    /// Credits can be added only to a key whose own quota is credits.
    #[error("the key's own quota is not credits; give it a credits quota before adding credits")]
    NoCredits,
    /// The key has been given the most credits top-ups may add in all.
    #[error("the key has been given the most credits top-ups may add (10^15 in all)")]
    TooManyCredits,
}

impl ChangeRefused {
    /// The reason in words (the same text as `Display`), for [`StoreError::Conflict`](crate::StoreError::Conflict).
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::Revoked => "the key is revoked; revocation is final",
            Self::Disabled => "the key is disabled; enable it before rotating it",
            Self::Expired => "the key has expired; create a new key instead of rotating it",
            Self::NoCredits => {
                "the key's own quota is not credits; give it a credits quota before adding credits"
            }
            Self::TooManyCredits => {
                "the key has been given the most credits top-ups may add (10^15 in all)"
            }
        }
    }
}

/// The longest grace period a rotation accepts: 30 days. A longer overlap defeats the point of
/// rotating; create a second key instead.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A validated rotation request: how long the old key keeps working after its replacement exists.
///
/// ```
/// use std::time::Duration;
/// use keygate::record::{InvalidInput, Rotation};
///
/// assert!(Rotation::new(Duration::from_secs(3600)).is_ok());
/// assert_eq!(Rotation::new(Duration::from_secs(31 * 86_400)), Err(InvalidInput::GraceTooLong));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    grace: Duration,
}

impl Rotation {
    /// A rotation whose old key keeps working for `grace` (zero: revoked at once).
    ///
    /// # Errors
    /// [`InvalidInput::GraceTooLong`] when `grace` exceeds [`MAX_ROTATION_GRACE`].
    pub fn new(grace: Duration) -> Result<Self, InvalidInput> {
        if grace > MAX_ROTATION_GRACE {
            return Err(InvalidInput::GraceTooLong);
        }
        Ok(Self { grace })
    }

    /// The grace period.
    #[must_use]
    pub fn grace(self) -> Duration {
        self.grace
    }

    /// The rotation rules, applied in memory (SQL stores run them inside one transaction):
    ///
    /// - only an active key rotates (revoked, disabled or expired: refused);
    /// - the successor is `replacement` (its id, digest, pepper version, prefix and times) with
    ///   the old key's name, owner, scopes, metadata, allowed IP ranges, rate limit, quota,
    ///   quota [lineage](KeyRecord::lineage) (so both keys spend one balance) and canary flag,
    ///   and `rotated_from` set to the old id. It does not inherit the old key's expiry: it has the
    ///   replacement's (none, or the one the [lifetime policy](crate::policy) gives, set by
    ///   [`Admin::rotate`](crate::Admin::rotate));
    /// - the old key expires at `now + grace` (or keeps an earlier expiry it already had);
    ///   with a zero grace it is revoked at `now`.
    ///
    /// Returns the successor record; `old` is updated in place.
    ///
    /// # Errors
    /// [`ChangeRefused`] when the old key is not active at `now`.
    pub fn apply_to(
        self,
        old: &mut KeyRecord,
        replacement: &KeyRecord,
        now: SystemTime,
    ) -> Result<KeyRecord, ChangeRefused> {
        match old.state(now) {
            KeyState::Active => {}
            KeyState::Revoked => return Err(ChangeRefused::Revoked),
            KeyState::Disabled => return Err(ChangeRefused::Disabled),
            KeyState::Expired => return Err(ChangeRefused::Expired),
        }
        let successor = KeyRecord {
            name: old.name.clone(),
            owner: old.owner.clone(),
            scopes: old.scopes.clone(),
            metadata: old.metadata.clone(),
            allowed_ips: old.allowed_ips.clone(),
            rate_limit: old.rate_limit,
            limits: old.limits.clone(),
            quota: old.quota,
            lineage: old.lineage,
            quota_granted: old.quota_granted,
            rotated_from: Some(old.id),
            canary: old.canary,
            last_used_at: None,
            disabled_at: None,
            revoked_at: None,
            ..replacement.clone()
        };
        if self.grace.is_zero() {
            old.revoked_at = Some(now);
        } else {
            let end = now + self.grace;
            old.expires_at = Some(old.expires_at.map_or(end, |at| at.min(end)));
        }
        old.updated_at = now;
        Ok(successor)
    }
}

/// The result of a rotation: the old key as it now stands, and its successor with the plaintext
/// (shown once).
#[derive(Debug)]
pub struct RotatedKey {
    /// The old key, now expiring at the end of the grace period (or revoked).
    pub old: KeyRecord,
    /// The new key. Its [`CreatedKey::key`] is the only copy of the plaintext.
    pub new: CreatedKey,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keyring;

    fn record(quota: Option<&str>) -> KeyRecord {
        let mut spec = NewKey::new("prepaid");
        if let Some(quota) = quota {
            spec = spec.quota(quota.parse().unwrap());
        }
        Keyring::development("record_test")
            .unwrap()
            .mint(spec)
            .unwrap()
            .record()
            .clone()
    }

    #[test]
    fn a_top_up_adds_to_the_running_total_of_a_credits_key() {
        let now = SystemTime::now();
        let mut key = record(Some("credits 5"));
        KeyChange::AddCredits(3).apply_to(&mut key, now).unwrap();
        KeyChange::AddCredits(4).apply_to(&mut key, now).unwrap();
        assert_eq!(key.quota_granted, 7);
        assert_eq!(key.updated_at, now);
        let refilled = record(Some("credits 0 refill 5 every 1d"));
        let mut refilled = refilled;
        KeyChange::AddCredits(1)
            .apply_to(&mut refilled, now)
            .unwrap();
        assert_eq!(refilled.quota_granted, 1);
    }

    #[test]
    fn a_top_up_of_a_key_without_credits_or_beyond_the_total_is_refused_unchanged() {
        let now = SystemTime::now();
        for quota in [None, Some("5/day")] {
            let mut key = record(quota);
            let before = key.clone();
            assert_eq!(
                KeyChange::AddCredits(1).apply_to(&mut key, now),
                Err(ChangeRefused::NoCredits)
            );
            assert_eq!(key, before);
        }
        let mut key = record(Some("credits 5"));
        key.quota_granted = crate::quota::MAX_GRANTED - 2;
        let before = key.clone();
        assert_eq!(
            KeyChange::AddCredits(3).apply_to(&mut key, now),
            Err(ChangeRefused::TooManyCredits)
        );
        assert_eq!(key, before);
        KeyChange::AddCredits(2).apply_to(&mut key, now).unwrap();
        assert_eq!(key.quota_granted, crate::quota::MAX_GRANTED);
        key.quota_granted = u64::MAX;
        assert_eq!(
            KeyChange::AddCredits(1).apply_to(&mut key, now),
            Err(ChangeRefused::TooManyCredits),
            "no overflow"
        );
    }

    #[test]
    fn a_top_up_takes_one_to_the_largest_quota_at_once() {
        assert_eq!(
            KeyChange::AddCredits(0).validate(),
            Err(InvalidInput::Credits)
        );
        assert_eq!(KeyChange::AddCredits(1).validate(), Ok(()));
        assert_eq!(
            KeyChange::AddCredits(crate::quota::MAX_QUOTA).validate(),
            Ok(())
        );
        assert_eq!(
            KeyChange::AddCredits(crate::quota::MAX_QUOTA + 1).validate(),
            Err(InvalidInput::Credits)
        );
        assert_eq!(
            ChangeRefused::NoCredits.reason(),
            ChangeRefused::NoCredits.to_string()
        );
        assert_eq!(
            ChangeRefused::TooManyCredits.reason(),
            ChangeRefused::TooManyCredits.to_string()
        );
    }

    #[test]
    fn a_rotation_copies_the_top_up_total() {
        let now = SystemTime::now();
        let mut old = record(Some("credits 5"));
        old.quota_granted = 42;
        let replacement = record(Some("credits 5"));
        let new = Rotation::new(Duration::from_secs(60))
            .unwrap()
            .apply_to(&mut old, &replacement, now)
            .unwrap();
        assert_eq!((new.quota_granted, new.lineage), (42, old.lineage));
    }
}

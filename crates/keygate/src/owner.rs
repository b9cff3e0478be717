//! Owners: the customer, team or application a key belongs to, as a record of its own.
//!
//! A key belongs to at most one owner: [`KeyRecord::owner`](crate::KeyRecord::owner) holds the
//! owner's id. An owner has a name, [metadata](crate::Metadata) and an optional rate limit,
//! shared by all its keys: owner limits and key limits both apply, and the tighter wins (see
//! [`OwnerRecord::rate_limit`]).
//!
//! Creating a key for an owner id the store does not know creates a bare owner record (its
//! name is its id, no metadata, no limit) in the same step, so `NewKey::owner("team-x")`
//! keeps working as it did when the owner was a free string. Manage owners through an
//! [`Admin`](crate::Admin): its bulk actions ([`Admin::disable_owner`](crate::Admin::disable_owner),
//! [`enable_owner`](crate::Admin::enable_owner), [`revoke_owner`](crate::Admin::revoke_owner))
//! change every key of an owner in one store transaction, evict them all, and record one
//! audit event per key. Creating, changing and deleting an owner through an `Admin` are audit
//! events of their own ([`Action::OwnerCreated`](crate::audit::Action::OwnerCreated),
//! `OwnerChanged`, `OwnerDeleted`), naming the owner rather than a key.

use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::identity::Metadata;
use crate::quota::Quota;
use crate::rate::{NamedLimits, RateLimit};
use crate::record::{InvalidInput, KeyChange, text_ok, validate_metadata};

/// Everything a store keeps about one owner.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OwnerRecord {
    /// The id the operator chose (`team-billing`, a customer number), as keys name it.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Application-defined metadata.
    pub metadata: Metadata,
    /// A limit shared by all the owner's keys, on top of each key's own: a request must be
    /// allowed by both, so the tighter wins. `None`: no owner limit.
    pub rate_limit: Option<RateLimit>,
    /// [Named limits](crate::rate::NamedLimits) shared by all the owner's keys, each on top of
    /// the key's own of the same name on the routes that choose it
    /// ([`RouteLimit`](crate::RouteLimit)). Empty: none.
    pub limits: NamedLimits,
    /// A [quota](crate::quota) shared by all the owner's keys (counted under
    /// [`QuotaSubject::Owner`](crate::quota::QuotaSubject::Owner)), on top of each key's own:
    /// a request must fit both, so the tighter wins. `None`: no owner quota.
    pub quota: Option<Quota>,
    /// The credits operators have added to the owner's shared credit balance
    /// ([`OwnerUpdate::add_credits`]), in all, since the owner was created: a running total,
    /// never lowered. Meters add what their counter has not counted yet
    /// ([`Quota::with_granted`](crate::quota::Quota::with_granted)), so a top-up counts once
    /// however often the record is read, as a key's [`quota_granted`](crate::KeyRecord::quota_granted).
    pub quota_granted: u64,
    /// When the owner was created (by hand, or with its first key).
    pub created_at: SystemTime,
    /// When the record last changed.
    pub updated_at: SystemTime,
}

impl OwnerRecord {
    /// What a new owner was given, for its audit event's detail: its name and each limit
    /// it has, as [`OwnerUpdate`]'s summary writes them (metadata values are not copied
    /// into the trail).
    #[must_use]
    pub(crate) fn summary(&self) -> String {
        let mut parts = vec![format!("name {:?}", self.name)];
        if !self.metadata.is_empty() {
            parts.push("metadata set".to_owned());
        }
        if let Some(limit) = &self.rate_limit {
            parts.push(format!("rate limit {limit}"));
        }
        if let Some(quota) = &self.quota {
            parts.push(format!("quota {quota}"));
        }
        if !self.limits.is_empty() {
            parts.push(format!("limits {}", self.limits));
        }
        parts.join("; ")
    }

    /// The bare record created for an owner id first named by a new key: name = id.
    #[must_use]
    pub fn bare(id: &str, now: SystemTime) -> Self {
        Self {
            id: id.to_owned(),
            name: id.to_owned(),
            metadata: Metadata::new(),
            rate_limit: None,
            limits: NamedLimits::new(),
            quota: None,
            quota_granted: 0,
            created_at: now,
            updated_at: now,
        }
    }
}

/// What to create: an owner's id, and optionally its name (default: the id), metadata and
/// rate limit.
///
/// ```
/// use keygate::owner::NewOwner;
/// let owner = NewOwner::new("acme-corp")
///     .name("ACME Corporation")
///     .rate_limit("10/1m".parse::<keygate::rate::RatePolicy>()?);
/// # Ok::<(), keygate::rate::InvalidRatePolicy>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewOwner {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) metadata: Metadata,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) limits: NamedLimits,
    pub(crate) quota: Option<Quota>,
}

impl NewOwner {
    /// An owner with id `id`, named after it, with no metadata or limit.
    #[must_use]
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: None,
            metadata: Metadata::new(),
            rate_limit: None,
            limits: NamedLimits::new(),
            quota: None,
        }
    }

    /// Sets the name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the metadata object.
    #[must_use]
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the limit shared by the owner's keys.
    #[must_use]
    pub fn rate_limit(mut self, limit: impl Into<RateLimit>) -> Self {
        self.rate_limit = Some(limit.into());
        self
    }

    /// Sets the named limits shared by the owner's keys.
    #[must_use]
    pub fn limits(mut self, limits: NamedLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the quota shared by the owner's keys.
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// Checks the input and makes the record to store, created at `now`. Stores call this.
    ///
    /// # Errors
    /// [`InvalidInput::Owner`] for a bad id, [`InvalidInput::OwnerName`] for a bad name,
    /// [`InvalidInput::Metadata`].
    pub fn into_record(self, now: SystemTime) -> Result<OwnerRecord, InvalidInput> {
        validate_owner_id(&self.id)?;
        if let Some(name) = &self.name {
            validate_owner_name(name)?;
        }
        validate_metadata(&self.metadata)?;
        Ok(OwnerRecord {
            name: self.name.unwrap_or_else(|| self.id.clone()),
            id: self.id,
            metadata: self.metadata,
            rate_limit: self.rate_limit,
            limits: self.limits,
            quota: self.quota,
            quota_granted: 0,
            created_at: now,
            updated_at: now,
        })
    }
}

/// A change to an owner's record: each field set is replaced, the others stay.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct OwnerUpdate {
    /// A new name.
    pub name: Option<String>,
    /// New metadata (replaces the whole object).
    pub metadata: Option<Metadata>,
    /// A new owner limit (`Some(None)` removes it).
    pub rate_limit: Option<Option<RateLimit>>,
    /// A new owner quota (`Some(None)` removes it).
    pub quota: Option<Option<Quota>>,
    /// New named limits (replace the whole set; empty removes them all).
    pub limits: Option<NamedLimits>,
    /// Credits to add to the owner's shared credit balance (a top-up): 1 to
    /// [`MAX_QUOTA`](crate::quota::MAX_QUOTA) at a time, for an owner whose quota is credits
    /// (after this change's [`quota`](OwnerUpdate::quota), when it sets one too).
    pub add_credits: Option<u64>,
}

impl OwnerUpdate {
    /// A change that changes nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Renames the owner.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Replaces the metadata.
    #[must_use]
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets (`Some`) or removes (`None`) the owner limit.
    #[must_use]
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Sets (`Some`) or removes (`None`) the owner quota.
    #[must_use]
    pub fn quota(mut self, quota: Option<Quota>) -> Self {
        self.quota = Some(quota);
        self
    }

    /// Replaces the named limits (empty: none).
    #[must_use]
    pub fn limits(mut self, limits: NamedLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Adds `credits` to the owner's shared credit balance (a top-up): the balance grows by
    /// this much once, on top of whatever it holds, for every key of the owner. Refused
    /// unless the owner's quota is credits.
    ///
    /// ```
    /// use keygate::owner::{NewOwner, OwnerUpdate};
    /// use keygate::{KeyAdmin, MemoryStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = MemoryStore::new();
    /// store.create_owner(NewOwner::new("acme").quota("credits 100".parse()?)).await?;
    /// let owner = store.update_owner("acme", OwnerUpdate::new().add_credits(50)).await?;
    /// assert_eq!(owner.quota_granted, 50);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn add_credits(mut self, credits: u64) -> Self {
        self.add_credits = Some(credits);
        self
    }

    /// Whether the change alters the owner limit, named limits or quota, or adds credits (its
    /// keys' cached entries, which carry them, must then go).
    #[must_use]
    pub fn changes_rate_limit(&self) -> bool {
        self.rate_limit.is_some()
            || self.quota.is_some()
            || self.limits.is_some()
            || self.add_credits.is_some()
    }

    /// Whether the change only adds credits (audited as
    /// [`Action::CreditsAdded`](crate::audit::Action::CreditsAdded), not as an owner change).
    #[must_use]
    pub(crate) fn only_adds_credits(&self) -> bool {
        self.add_credits.is_some()
            && Self {
                add_credits: None,
                ..self.clone()
            } == Self::default()
    }

    /// What the change sets, for its audit event's detail: `name "…"; metadata replaced;
    /// rate limit 10/1m; quota none; limits search: 5/1s`, the fields it leaves alone left
    /// out (metadata values are not copied into the trail).
    #[must_use]
    pub(crate) fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(name) = &self.name {
            parts.push(format!("name {name:?}"));
        }
        if self.metadata.is_some() {
            parts.push("metadata replaced".to_owned());
        }
        if let Some(limit) = &self.rate_limit {
            parts.push(format!("rate limit {}", or_none(limit.as_ref())));
        }
        if let Some(quota) = &self.quota {
            parts.push(format!("quota {}", or_none(quota.as_ref())));
        }
        if let Some(limits) = &self.limits {
            parts.push(format!(
                "limits {}",
                or_none(Some(limits).filter(|l| !l.is_empty()))
            ));
        }
        if let Some(credits) = self.add_credits {
            parts.push(credits_text(credits));
        }
        parts.join("; ")
    }

    /// Checks the input. Stores call this before applying.
    ///
    /// # Errors
    /// [`InvalidInput::OwnerName`], [`InvalidInput::Metadata`], or [`InvalidInput::Credits`]
    /// for a top-up of no credits or of more than [`MAX_QUOTA`](crate::quota::MAX_QUOTA).
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if let Some(name) = &self.name {
            validate_owner_name(name)?;
        }
        if let Some(metadata) = &self.metadata {
            validate_metadata(metadata)?;
        }
        if let Some(credits) = self.add_credits
            && !(1..=crate::quota::MAX_QUOTA).contains(&credits)
        {
            return Err(InvalidInput::Credits);
        }
        Ok(())
    }

    /// Applies the change to `record` at `now`; nothing is changed when it is refused.
    ///
    /// # Errors
    /// [`OwnerChangeRefused::NoCredits`] when it adds credits to an owner whose quota (as
    /// this change leaves it) is not credits; [`OwnerChangeRefused::TooManyCredits`] when the
    /// owner's top-ups would pass [`MAX_GRANTED`](crate::quota::MAX_GRANTED) in all.
    pub fn apply_to(
        self,
        record: &mut OwnerRecord,
        now: SystemTime,
    ) -> Result<(), OwnerChangeRefused> {
        if let Some(credits) = self.add_credits {
            let quota = self.quota.unwrap_or(record.quota);
            if !matches!(quota, Some(Quota::Credits { .. })) {
                return Err(OwnerChangeRefused::NoCredits);
            }
            record.quota_granted = record
                .quota_granted
                .checked_add(credits)
                .filter(|total| *total <= crate::quota::MAX_GRANTED)
                .ok_or(OwnerChangeRefused::TooManyCredits)?;
        }
        if let Some(name) = self.name {
            record.name = name;
        }
        if let Some(metadata) = self.metadata {
            record.metadata = metadata;
        }
        if let Some(limit) = self.rate_limit {
            record.rate_limit = limit;
        }
        if let Some(quota) = self.quota {
            record.quota = quota;
        }
        if let Some(limits) = self.limits {
            record.limits = limits;
        }
        record.updated_at = now;
        Ok(())
    }
}

/// Why an owner's state refuses a change ([`OwnerUpdate::apply_to`]); stores report it as
/// [`StoreError::OwnerConflict`](crate::StoreError::OwnerConflict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OwnerChangeRefused {
    /// Credits can be added only to an owner whose shared quota is credits.
    #[error("the owner's quota is not credits; give it a credits quota before adding credits")]
    NoCredits,
    /// The owner has been given the most credits top-ups may add.
    #[error("the owner has been given the most credits top-ups may add (10^15 in all)")]
    TooManyCredits,
}

impl OwnerChangeRefused {
    /// The refusal in words, as a `'static` text.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoCredits => {
                "the owner's quota is not credits; give it a credits quota before adding credits"
            }
            Self::TooManyCredits => {
                "the owner has been given the most credits top-ups may add (10^15 in all)"
            }
        }
    }
}

/// `1 credit added` / `N credits added`, as audit details and the CLI write a top-up.
#[must_use]
pub(crate) fn credits_text(credits: u64) -> String {
    let noun = if credits == 1 { "credit" } else { "credits" };
    format!("{credits} {noun} added")
}

/// A change to every key of an owner at once, in one store transaction
/// ([`KeyAdmin::change_owner_keys`](crate::KeyAdmin::change_owner_keys)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OwnerKeysChange {
    /// Disable every key that is not disabled or revoked.
    Disable,
    /// Enable every disabled key that is not revoked.
    Enable,
    /// Revoke every key that is not revoked yet.
    Revoke,
}

impl OwnerKeysChange {
    /// The change each key gets.
    #[must_use]
    pub fn key_change(self) -> KeyChange {
        match self {
            Self::Disable => KeyChange::Disable,
            Self::Enable => KeyChange::Enable,
            Self::Revoke => KeyChange::Revoke,
        }
    }

    /// Whether a key in this state is changed (the others are left as they are, and not
    /// returned): revoked keys are never touched; disabling skips disabled keys, enabling
    /// skips keys that are not disabled.
    #[must_use]
    pub fn applies_to(self, record: &crate::KeyRecord) -> bool {
        if record.revoked_at.is_some() {
            return false;
        }
        match self {
            Self::Disable => record.disabled_at.is_none(),
            Self::Enable => record.disabled_at.is_some(),
            Self::Revoke => true,
        }
    }

    /// Lowercase name: `disable`, `enable`, `revoke`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Enable => "enable",
            Self::Revoke => "revoke",
        }
    }
}

/// Checks an owner id: 1 to [`MAX_NAME_LEN`](crate::record::MAX_NAME_LEN) characters, not
/// blank, no control characters (as owners always were).
///
/// # Errors
/// [`InvalidInput::Owner`].
pub fn validate_owner_id(id: &str) -> Result<(), InvalidInput> {
    text_ok(id).then_some(()).ok_or(InvalidInput::Owner)
}

fn validate_owner_name(name: &str) -> Result<(), InvalidInput> {
    text_ok(name).then_some(()).ok_or(InvalidInput::OwnerName)
}

/// The fixed-size tag an owner's shared limit is counted under
/// ([`LimitKey::Owner`](crate::rate::LimitKey::Owner)): the first 16 bytes of the SHA-256 of
/// the owner id. Fixed-size so the limit key stays `Copy` and the hot path never allocates;
/// 128 bits make two owners sharing an allowance by accident practically impossible, and the
/// id itself (which may hold any text) never reaches a limiter's storage (Redis keys).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerTag([u8; 16]);

impl OwnerTag {
    /// The tag of owner `id`.
    #[must_use]
    pub fn of(id: &str) -> Self {
        let digest = Sha256::digest(id.as_bytes());
        let mut tag = [0; 16];
        tag.copy_from_slice(&digest[..16]);
        Self(tag)
    }
}

impl std::fmt::Display for OwnerTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for OwnerTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnerTag({self})")
    }
}

/// `value`, or `none` when it is absent.
fn or_none(value: Option<&impl std::fmt::Display>) -> String {
    value.map_or_else(|| "none".to_owned(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_owner_defaults_its_name_to_its_id_and_checks_input() {
        let now = SystemTime::UNIX_EPOCH;
        let record = NewOwner::new("team-x").into_record(now).unwrap();
        assert_eq!(record, OwnerRecord::bare("team-x", now));
        assert_eq!(
            NewOwner::new(" ").into_record(now),
            Err(InvalidInput::Owner)
        );
        assert_eq!(
            NewOwner::new("a\u{7}b").into_record(now),
            Err(InvalidInput::Owner)
        );
        assert_eq!(
            NewOwner::new("ok").name("").into_record(now),
            Err(InvalidInput::OwnerName)
        );
        assert_eq!(
            NewOwner::new("x".repeat(crate::record::MAX_NAME_LEN + 1)).into_record(now),
            Err(InvalidInput::Owner)
        );
    }

    /// The audit detail of an owner change names every field given, a removal as `none`, and
    /// never a metadata value.
    #[test]
    fn summaries_name_what_was_set_and_no_metadata_value() {
        let meta = |json: serde_json::Value| match json {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let policy = |text: &str| text.parse::<crate::rate::RatePolicy>().unwrap();
        let quota = |text: &str| text.parse::<Quota>().unwrap();
        let limits = |text: &str| text.parse::<NamedLimits>().unwrap();

        assert_eq!(OwnerUpdate::new().summary(), "");
        let everything = OwnerUpdate::new()
            .name("Team X")
            .metadata(meta(serde_json::json!({"secret-plan": "gold"})))
            .rate_limit(Some(policy("10/1m").into()))
            .quota(Some(quota("1000/day")))
            .limits(limits("search: 5/1s, bulk: unlimited"));
        assert_eq!(
            everything.summary(),
            r#"name "Team X"; metadata replaced; rate limit 10/1m; quota 1000/day; limits bulk: unlimited, search: 5/1s"#
        );
        let removals = OwnerUpdate::new()
            .rate_limit(None)
            .quota(None)
            .limits(NamedLimits::new());
        assert_eq!(
            removals.summary(),
            "rate limit none; quota none; limits none"
        );

        let now = SystemTime::UNIX_EPOCH;
        let bare = OwnerRecord::bare("team-x", now);
        assert_eq!(bare.summary(), r#"name "team-x""#);
        let full = NewOwner::new("acme")
            .name("ACME")
            .metadata(meta(serde_json::json!({"secret-plan": "gold"})))
            .rate_limit(policy("10/1m"))
            .quota(quota("credits 500"))
            .limits(limits("search: 5/1s"))
            .into_record(now)
            .unwrap();
        assert_eq!(
            full.summary(),
            r#"name "ACME"; metadata set; rate limit 10/1m; quota credits 500; limits search: 5/1s"#
        );
        assert!(!everything.summary().contains("gold") && !full.summary().contains("gold"));
    }

    /// A top-up adds to the running total of an owner whose quota is credits (as the same
    /// change leaves it), checks its count, and changes nothing when refused.
    #[test]
    fn owner_top_ups_add_to_a_credits_quota_only() {
        let now = SystemTime::UNIX_EPOCH;
        let later = now + std::time::Duration::from_secs(1);
        let credits = "credits 10".parse::<Quota>().unwrap();
        let mut owner = NewOwner::new("acme")
            .quota(credits)
            .into_record(now)
            .unwrap();
        OwnerUpdate::new()
            .add_credits(3)
            .apply_to(&mut owner, later)
            .unwrap();
        OwnerUpdate::new()
            .add_credits(4)
            .apply_to(&mut owner, later)
            .unwrap();
        assert_eq!((owner.quota_granted, owner.updated_at), (7, later));

        // Refused: no quota, a period quota, or one that this very change removes.
        let mut bare = OwnerRecord::bare("bare", now);
        for (update, quota) in [
            (OwnerUpdate::new().add_credits(1), None),
            (
                OwnerUpdate::new().add_credits(1),
                Some("10/day".parse::<Quota>().unwrap()),
            ),
            (OwnerUpdate::new().quota(None).add_credits(1), Some(credits)),
        ] {
            bare.quota = quota;
            let before = bare.clone();
            assert_eq!(
                update.apply_to(&mut bare, later),
                Err(OwnerChangeRefused::NoCredits)
            );
            assert_eq!(bare, before, "nothing changed");
        }
        // Allowed: the change that sets a credits quota may add to it at once.
        bare.quota = None;
        OwnerUpdate::new()
            .name("Bare")
            .quota(Some(credits))
            .add_credits(5)
            .apply_to(&mut bare, later)
            .unwrap();
        assert_eq!((bare.quota_granted, bare.name.as_str()), (5, "Bare"));

        // At most MAX_GRANTED in all; 1 to MAX_QUOTA at a time.
        owner.quota_granted = crate::quota::MAX_GRANTED - 1;
        let before = owner.clone();
        assert_eq!(
            OwnerUpdate::new()
                .name("renamed")
                .add_credits(2)
                .apply_to(&mut owner, later),
            Err(OwnerChangeRefused::TooManyCredits)
        );
        assert_eq!(owner, before, "nothing changed");
        OwnerUpdate::new()
            .add_credits(1)
            .apply_to(&mut owner, later)
            .unwrap();
        assert_eq!(owner.quota_granted, crate::quota::MAX_GRANTED);
        for bad in [0, crate::quota::MAX_QUOTA + 1] {
            assert_eq!(
                OwnerUpdate::new().add_credits(bad).validate(),
                Err(InvalidInput::Credits)
            );
        }
        assert_eq!(
            OwnerUpdate::new()
                .add_credits(crate::quota::MAX_QUOTA)
                .validate(),
            Ok(())
        );
        assert_eq!(
            OwnerChangeRefused::NoCredits.reason(),
            OwnerChangeRefused::NoCredits.to_string()
        );
        assert_eq!(
            OwnerChangeRefused::TooManyCredits.reason(),
            OwnerChangeRefused::TooManyCredits.to_string()
        );
    }

    /// A top-up evicts the owner's keys (their entries carry its total), and is audited as
    /// one when it is all the change does.
    #[test]
    fn a_top_up_is_a_limit_change_and_alone_a_top_up() {
        let top_up = OwnerUpdate::new().add_credits(2);
        assert!(top_up.changes_rate_limit());
        assert!(top_up.only_adds_credits());
        assert_eq!(top_up.summary(), "2 credits added");
        assert_eq!(credits_text(1), "1 credit added");
        let both = OwnerUpdate::new().name("x").add_credits(2);
        assert!(!both.only_adds_credits());
        assert!(!OwnerUpdate::new().only_adds_credits());
        assert!(!OwnerUpdate::new().name("x").changes_rate_limit());
        for update in [
            OwnerUpdate::new().rate_limit(None),
            OwnerUpdate::new().quota(None),
            OwnerUpdate::new().limits(NamedLimits::new()),
        ] {
            assert!(update.changes_rate_limit(), "{update:?}");
            assert!(!update.only_adds_credits(), "{update:?}");
        }
    }

    #[test]
    fn bulk_changes_skip_keys_they_do_not_change() {
        let key = crate::Keyring::development("acme_test")
            .unwrap()
            .mint_at(crate::NewKey::new("k"), SystemTime::now())
            .unwrap()
            .record()
            .clone();
        assert!(OwnerKeysChange::Disable.applies_to(&key));
        assert!(!OwnerKeysChange::Enable.applies_to(&key));
        let disabled = crate::KeyRecord {
            disabled_at: Some(SystemTime::now()),
            ..key.clone()
        };
        assert!(!OwnerKeysChange::Disable.applies_to(&disabled));
        assert!(OwnerKeysChange::Enable.applies_to(&disabled));
        let revoked = crate::KeyRecord {
            revoked_at: Some(SystemTime::now()),
            ..disabled
        };
        for change in [
            OwnerKeysChange::Disable,
            OwnerKeysChange::Enable,
            OwnerKeysChange::Revoke,
        ] {
            assert!(!change.applies_to(&revoked), "{change:?}");
        }
    }

    #[test]
    fn tags_are_stable_and_tell_owners_apart() {
        assert_eq!(OwnerTag::of("team-x"), OwnerTag::of("team-x"));
        assert_ne!(OwnerTag::of("team-x"), OwnerTag::of("team-y"));
        assert_eq!(OwnerTag::of("a").to_string().len(), 32);
    }
}

//! A deployment's key lifetime policy: whether keys must expire, the lifetime a key gets when
//! none is given, the longest lifetime allowed, and how long a key may go unused before the
//! idle sweep ([`IdleSweep`](crate::notice::IdleSweep)) disables it.
//!
//! The policy is kept in the key store's settings (names `policy.*`, see
//! [`StoreSettings`]), so every process of a deployment (the `keygate` CLI, the services, the
//! admin API, `keygate serve`) applies the same one. [`read_policy`] and [`write_policy`] read
//! and replace it; `keygate policy set` and the admin API's `PUT /policy` write it.
//!
//! [`Admin`](crate::Admin) applies it to every create, expiry change and rotation, reading it
//! from the store each time (management operations are rare; a changed policy applies to the
//! very next operation of every process, with no restart):
//!
//! - a key given no expiry gets `now + default_lifetime` when the policy has a default;
//! - otherwise, a key without expiry is refused with [`PolicyViolation::ExpiryRequired`] when
//!   `require_expiry` is set, or [`PolicyViolation::LifetimeTooLong`] when only a maximum is
//!   (no expiry is an unlimited lifetime);
//! - an expiry later than `now + max_lifetime` is refused with
//!   [`PolicyViolation::LifetimeTooLong`];
//! - a rotation's new key gets `now + default_lifetime`, else `now + max_lifetime` (it does not
//!   inherit the old key's expiry); under `require_expiry` with neither, the rotation is refused.
//!
//! Canary keys are exempt: they grant nothing, and an expiry would only disarm them.
//! Keys that already exist are not changed when the policy changes, except by the idle sweep.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::store::{KeyStore, StoreError, StoreSettings};

/// The start of every policy setting's name. Only these settings can be replaced
/// ([`KeyStore::replace_policy_settings`]).
pub const POLICY_SETTING_PREFIX: &str = "policy.";
/// `true` when every key must have an expiry.
pub const REQUIRE_EXPIRY_SETTING: &str = "policy.require_expiry";
/// The default lifetime, in whole seconds.
pub const DEFAULT_LIFETIME_SETTING: &str = "policy.default_lifetime_seconds";
/// The maximum lifetime, in whole seconds.
pub const MAX_LIFETIME_SETTING: &str = "policy.max_lifetime_seconds";
/// The maximum idle time, in whole seconds.
pub const MAX_IDLE_SETTING: &str = "policy.max_idle_seconds";

/// The longest duration a policy accepts (100 years): longer ones are mistakes, and times this
/// far out stay representable everywhere.
pub const MAX_POLICY_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A deployment's key lifetime policy. The default is no policy (every rule off).
///
/// ```
/// use std::time::Duration;
/// use keygate::policy::LifetimePolicy;
///
/// let day = Duration::from_secs(86_400);
/// let policy = LifetimePolicy {
///     require_expiry: true,
///     default_lifetime: Some(90 * day),
///     max_lifetime: Some(365 * day),
///     max_idle: Some(30 * day),
/// };
/// policy.validate()?;
/// # Ok::<(), keygate::policy::InvalidPolicy>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifetimePolicy {
    /// Every key must have an expiry (one is given, or the default lifetime applies).
    pub require_expiry: bool,
    /// The lifetime of a key created (or rotated, or whose expiry is cleared) without expiry.
    pub default_lifetime: Option<Duration>,
    /// The longest lifetime allowed, from the time of the change.
    pub max_lifetime: Option<Duration>,
    /// How long a key may go unused (since its last use, or its creation if never used)
    /// before the idle sweep disables it.
    pub max_idle: Option<Duration>,
}

/// A change refused by the [`LifetimePolicy`]: which rule it breaks. Carried by
/// [`StoreError::Policy`]; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// The key has no expiry, and the policy requires one and gives no default lifetime.
    #[error(
        "refused by the lifetime policy (rule `expiry_required`): keys must have an expiry; give one, or set a default lifetime"
    )]
    ExpiryRequired,
    /// The key's expiry is later than the policy's maximum lifetime allows (or it has none).
    #[error(
        "refused by the lifetime policy (rule `max_lifetime`): a key may live at most {}; give an earlier expiry", Days(*.max)
    )]
    LifetimeTooLong {
        /// The maximum lifetime.
        max: Duration,
    },
}

impl PolicyViolation {
    /// The rule's name, as in problem responses and docs: `expiry_required`, `max_lifetime`.
    #[must_use]
    pub fn rule(&self) -> &'static str {
        match self {
            Self::ExpiryRequired => "expiry_required",
            Self::LifetimeTooLong { .. } => "max_lifetime",
        }
    }
}

/// A policy refused when set, or a recorded one that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPolicy {
    /// A duration is zero, or longer than [`MAX_POLICY_DURATION`].
    #[error("invalid lifetime policy: {rule} must be between 1 second and 100 years")]
    Duration {
        /// The rule: `default_lifetime`, `max_lifetime` or `max_idle`.
        rule: &'static str,
    },
    /// The default lifetime is longer than the maximum lifetime.
    #[error("invalid lifetime policy: the default lifetime is longer than the maximum lifetime")]
    DefaultOverMax,
    /// A recorded setting's value cannot be read (the store's settings were edited by hand).
    #[error("the lifetime policy in the key store's settings is unreadable: setting `{0}`")]
    Unreadable(String),
}

/// A duration in whole days when it is some, else in seconds (for messages).
pub(crate) struct Days(pub(crate) Duration);

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.as_secs();
        if seconds.is_multiple_of(86_400) && seconds > 0 {
            write!(f, "{} days", seconds / 86_400)
        } else {
            write!(f, "{seconds} seconds")
        }
    }
}

impl LifetimePolicy {
    /// Whether no rule is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the policy can be applied: durations between 1 second and
    /// [`MAX_POLICY_DURATION`] (whole seconds are kept), a default no longer than the maximum.
    ///
    /// # Errors
    /// [`InvalidPolicy`].
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        for (rule, duration) in [
            ("default_lifetime", self.default_lifetime),
            ("max_lifetime", self.max_lifetime),
            ("max_idle", self.max_idle),
        ] {
            if duration.is_some_and(|d| d.as_secs() == 0 || d > MAX_POLICY_DURATION) {
                return Err(InvalidPolicy::Duration { rule });
            }
        }
        if let (Some(default), Some(max)) = (self.default_lifetime, self.max_lifetime)
            && default > max
        {
            return Err(InvalidPolicy::DefaultOverMax);
        }
        Ok(())
    }

    /// The policy recorded in `settings` (no rule for names that are absent).
    ///
    /// # Errors
    /// [`InvalidPolicy::Unreadable`] for a value that is not what [`Self::to_settings`]
    /// writes, or a recorded policy that does not [validate](Self::validate).
    pub fn from_settings(settings: &StoreSettings) -> Result<Self, InvalidPolicy> {
        let seconds = |name: &str| -> Result<Option<Duration>, InvalidPolicy> {
            settings
                .get(name)
                .map(|value| {
                    value
                        .parse::<u64>()
                        .map(Duration::from_secs)
                        .map_err(|_| InvalidPolicy::Unreadable(name.to_owned()))
                })
                .transpose()
        };
        let require_expiry = match settings.get(REQUIRE_EXPIRY_SETTING) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(InvalidPolicy::Unreadable(REQUIRE_EXPIRY_SETTING.to_owned())),
        };
        let policy = Self {
            require_expiry,
            default_lifetime: seconds(DEFAULT_LIFETIME_SETTING)?,
            max_lifetime: seconds(MAX_LIFETIME_SETTING)?,
            max_idle: seconds(MAX_IDLE_SETTING)?,
        };
        policy
            .validate()
            .map_err(|_| InvalidPolicy::Unreadable(POLICY_SETTING_PREFIX.to_owned() + "*"))?;
        Ok(policy)
    }

    /// The settings that record this policy (only the rules that are set; durations in whole
    /// seconds).
    #[must_use]
    pub fn to_settings(&self) -> Vec<(String, String)> {
        let mut entries = Vec::new();
        if self.require_expiry {
            entries.push((REQUIRE_EXPIRY_SETTING.to_owned(), "true".to_owned()));
        }
        for (name, duration) in [
            (DEFAULT_LIFETIME_SETTING, self.default_lifetime),
            (MAX_LIFETIME_SETTING, self.max_lifetime),
            (MAX_IDLE_SETTING, self.max_idle),
        ] {
            if let Some(duration) = duration {
                entries.push((name.to_owned(), duration.as_secs().to_string()));
            }
        }
        entries
    }

    /// The expiry a key given `requested` gets at `now` (when it is created, or its expiry is
    /// set or cleared): `requested` when the policy allows it, `now + default_lifetime` for
    /// none when there is a default.
    ///
    /// # Errors
    /// The [`PolicyViolation`] when the policy refuses it.
    pub fn expiry_for(
        &self,
        requested: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, PolicyViolation> {
        let expiry = match (requested, self.default_lifetime) {
            (Some(at), _) => at,
            (None, Some(default)) => now + default,
            (None, None) if self.require_expiry => return Err(PolicyViolation::ExpiryRequired),
            (None, None) => {
                return match self.max_lifetime {
                    Some(max) => Err(PolicyViolation::LifetimeTooLong { max }),
                    None => Ok(None),
                };
            }
        };
        match self.max_lifetime {
            Some(max) if expiry > now + max => Err(PolicyViolation::LifetimeTooLong { max }),
            _ => Ok(Some(expiry)),
        }
    }

    /// The expiry of a rotation's new key made at `now`: `now + default_lifetime`, else
    /// `now + max_lifetime`, else none (refused under `require_expiry`).
    ///
    /// # Errors
    /// [`PolicyViolation::ExpiryRequired`] under `require_expiry` without a default or maximum.
    pub fn rotation_expiry(&self, now: SystemTime) -> Result<Option<SystemTime>, PolicyViolation> {
        match (self.default_lifetime, self.max_lifetime) {
            (None, Some(max)) => Ok(Some(now + max)),
            _ => self.expiry_for(None, now),
        }
    }

    /// Whether a key last used at `last_used` (or created at `created`, never used) is idle at
    /// `now`: unused for longer than `max_idle`. Never, without a `max_idle`.
    #[must_use]
    pub fn is_idle(
        &self,
        created: SystemTime,
        last_used: Option<SystemTime>,
        now: SystemTime,
    ) -> bool {
        let Some(max_idle) = self.max_idle else {
            return false;
        };
        let since = last_used.map_or(created, |used| used.max(created));
        now.duration_since(since).is_ok_and(|idle| idle > max_idle)
    }
}

impl fmt::Display for LifetimePolicy {
    /// One line: `require_expiry=true default_lifetime=90d …`, `none` without rules.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut parts = Vec::new();
        if self.require_expiry {
            parts.push("require_expiry=true".to_owned());
        }
        for (rule, duration) in [
            ("default_lifetime", self.default_lifetime),
            ("max_lifetime", self.max_lifetime),
            ("max_idle", self.max_idle),
        ] {
            if let Some(duration) = duration {
                parts.push(format!("{rule}={}", Days(duration)));
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// The lifetime policy recorded in `store`'s settings (no rule for a store that keeps none).
///
/// # Errors
/// `Unavailable` when the store cannot answer, or when the recorded policy is unreadable (a
/// policy that cannot be read is not applied as "no policy").
pub async fn read_policy(store: &dyn KeyStore) -> Result<LifetimePolicy, StoreError> {
    let Some(settings) = store.settings().await? else {
        return Ok(LifetimePolicy::default());
    };
    LifetimePolicy::from_settings(&settings).map_err(StoreError::unavailable)
}

/// Replaces the lifetime policy recorded in `store`'s settings with `policy` (an empty policy
/// clears it), in one step.
///
/// # Errors
/// [`WritePolicyError::Invalid`] for an invalid `policy`, with nothing written; store errors as
/// [`KeyStore::replace_policy_settings`] (`Unavailable` also for a store that keeps no
/// settings).
pub async fn write_policy(
    store: &dyn KeyStore,
    policy: &LifetimePolicy,
) -> Result<(), WritePolicyError> {
    policy.validate()?;
    store.replace_policy_settings(&policy.to_settings()).await?;
    Ok(())
}

/// Why [`write_policy`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WritePolicyError {
    /// The policy is invalid; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidPolicy),
    /// The store could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn no_policy_changes_nothing() {
        let policy = LifetimePolicy::default();
        assert_eq!(policy.expiry_for(None, now()), Ok(None));
        let at = now() + 5000 * DAY;
        assert_eq!(policy.expiry_for(Some(at), now()), Ok(Some(at)));
        assert_eq!(policy.rotation_expiry(now()), Ok(None));
        assert!(!policy.is_idle(now() - 5000 * DAY, None, now()));
        assert_eq!(policy.to_string(), "none");
    }

    #[test]
    fn default_fills_in_and_max_caps() {
        let policy = LifetimePolicy {
            default_lifetime: Some(90 * DAY),
            max_lifetime: Some(365 * DAY),
            ..LifetimePolicy::default()
        };
        assert_eq!(policy.expiry_for(None, now()), Ok(Some(now() + 90 * DAY)));
        let ok = now() + 365 * DAY;
        assert_eq!(policy.expiry_for(Some(ok), now()), Ok(Some(ok)));
        let too_far = ok + Duration::from_secs(1);
        let refused = policy.expiry_for(Some(too_far), now()).unwrap_err();
        assert_eq!(refused, PolicyViolation::LifetimeTooLong { max: 365 * DAY });
        assert_eq!(refused.rule(), "max_lifetime");
        assert!(refused.to_string().contains("365 days"), "{refused}");
        assert_eq!(policy.rotation_expiry(now()), Ok(Some(now() + 90 * DAY)));
    }

    #[test]
    fn without_default_an_expiry_is_required() {
        let required = LifetimePolicy {
            require_expiry: true,
            ..LifetimePolicy::default()
        };
        let refused = required.expiry_for(None, now()).unwrap_err();
        assert_eq!(refused, PolicyViolation::ExpiryRequired);
        assert_eq!(refused.rule(), "expiry_required");
        assert_eq!(required.rotation_expiry(now()), Err(refused));
        let at = now() + DAY;
        assert_eq!(required.expiry_for(Some(at), now()), Ok(Some(at)));

        // A maximum alone refuses "no expiry" (an unlimited lifetime) too; a rotation gets
        // the maximum.
        let capped = LifetimePolicy {
            max_lifetime: Some(30 * DAY),
            ..LifetimePolicy::default()
        };
        assert_eq!(
            capped.expiry_for(None, now()),
            Err(PolicyViolation::LifetimeTooLong { max: 30 * DAY })
        );
        assert_eq!(capped.rotation_expiry(now()), Ok(Some(now() + 30 * DAY)));
    }

    #[test]
    fn validation() {
        let bad = |policy: LifetimePolicy| policy.validate().unwrap_err();
        assert_eq!(
            bad(LifetimePolicy {
                default_lifetime: Some(10 * DAY),
                max_lifetime: Some(5 * DAY),
                ..LifetimePolicy::default()
            }),
            InvalidPolicy::DefaultOverMax
        );
        assert_eq!(
            bad(LifetimePolicy {
                max_idle: Some(Duration::from_millis(500)),
                ..LifetimePolicy::default()
            }),
            InvalidPolicy::Duration { rule: "max_idle" }
        );
        assert_eq!(
            bad(LifetimePolicy {
                max_lifetime: Some(MAX_POLICY_DURATION + DAY),
                ..LifetimePolicy::default()
            }),
            InvalidPolicy::Duration {
                rule: "max_lifetime"
            }
        );
    }

    #[test]
    fn settings_round_trip_and_unreadable_values_are_errors() {
        let policy = LifetimePolicy {
            require_expiry: true,
            default_lifetime: Some(90 * DAY),
            max_lifetime: Some(365 * DAY),
            max_idle: Some(30 * DAY),
        };
        let settings = StoreSettings::from_entries(policy.to_settings());
        assert_eq!(LifetimePolicy::from_settings(&settings), Ok(policy));
        assert_eq!(
            policy.to_string(),
            "require_expiry=true default_lifetime=90 days max_lifetime=365 days max_idle=30 days"
        );
        assert_eq!(
            LifetimePolicy::from_settings(&StoreSettings::default()),
            Ok(LifetimePolicy::default())
        );
        let unreadable =
            StoreSettings::from_entries([(MAX_IDLE_SETTING.to_owned(), "30d".to_owned())]);
        assert_eq!(
            LifetimePolicy::from_settings(&unreadable),
            Err(InvalidPolicy::Unreadable(MAX_IDLE_SETTING.to_owned()))
        );
    }

    #[test]
    fn idle_counts_from_last_use_else_creation() {
        let policy = LifetimePolicy {
            max_idle: Some(30 * DAY),
            ..LifetimePolicy::default()
        };
        let created = now() - 40 * DAY;
        assert!(policy.is_idle(created, None, now()));
        assert!(!policy.is_idle(created, Some(now() - 29 * DAY), now()));
        assert!(policy.is_idle(created, Some(now() - 31 * DAY), now()));
        assert!(!policy.is_idle(now() - 30 * DAY, None, now()));
    }

    #[tokio::test]
    async fn written_read_back_and_cleared() {
        let store = MemoryStore::new();
        assert_eq!(
            read_policy(&store).await.unwrap(),
            LifetimePolicy::default()
        );
        let policy = LifetimePolicy {
            require_expiry: true,
            max_idle: Some(DAY),
            ..LifetimePolicy::default()
        };
        write_policy(&store, &policy).await.unwrap();
        assert_eq!(read_policy(&store).await.unwrap(), policy);
        let replaced = LifetimePolicy {
            max_lifetime: Some(DAY),
            ..LifetimePolicy::default()
        };
        write_policy(&store, &replaced).await.unwrap();
        assert_eq!(read_policy(&store).await.unwrap(), replaced);
        let invalid = LifetimePolicy {
            default_lifetime: Some(2 * DAY),
            ..replaced
        };
        assert!(matches!(
            write_policy(&store, &invalid).await,
            Err(WritePolicyError::Invalid(InvalidPolicy::DefaultOverMax))
        ));
        assert_eq!(read_policy(&store).await.unwrap(), replaced);
        write_policy(&store, &LifetimePolicy::default())
            .await
            .unwrap();
        assert_eq!(
            read_policy(&store).await.unwrap(),
            LifetimePolicy::default()
        );
    }
}

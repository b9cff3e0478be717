//! [`AuditEvent`]: one decision on a request, or one change to a key.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::key::KeyId;
use crate::record::KeyChange;
use crate::rejection::Reason;

/// Longest request id or actor kept, in characters; longer ones are cut.
pub const MAX_LABEL_LEN: usize = 128;

/// What happened: a request was decided, or a key was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// A request was allowed or denied.
    Request,
    /// A key was created.
    Created,
    /// A key was renamed.
    Renamed,
    /// A key's scopes were replaced.
    ScopesChanged,
    /// A key's expiry was set or cleared.
    ExpiryChanged,
    /// A key's metadata was replaced.
    MetadataChanged,
    /// A key's allowed client ranges were replaced.
    AllowedIpsChanged,
    /// A key's rate limit was set or cleared.
    RateLimitChanged,
    /// The key's quota was set or cleared.
    QuotaChanged,
    /// Credits were added to the key's credit balance (a top-up; `detail` says how many, and
    /// the total added so far).
    CreditsAdded,
    /// The key's named limits were replaced.
    LimitsChanged,
    /// A key was disabled.
    Disabled,
    /// A key was enabled again.
    Enabled,
    /// A key was rotated (the event is on the old key; `detail` names the new one).
    Rotated,
    /// A key was revoked.
    Revoked,
    /// A key was deleted.
    Deleted,
    /// Many denied requests that name no existing key, folded into one event: see
    /// [`Folded`] and [the audit module](crate::audit#forged-ids-cost-no-storage).
    Denials,
    /// A key was reported leaked (`detail` says where) and nothing about it was changed: the
    /// reporter is configured to report only, or the key was already revoked or disabled.
    LeakReported,
    /// The deployment's key lifetime policy was set or cleared (no key; `detail` is the new
    /// policy as [`LifetimePolicy`](crate::policy::LifetimePolicy) shows it).
    PolicyChanged,
    /// An owner was created (no key; [`AuditEvent::owner`] names it, `detail` lists its
    /// name and the limits it was given).
    OwnerCreated,
    /// An owner's name, metadata, rate limit, named limits or quota changed (no key;
    /// `detail` lists the fields and their new values).
    OwnerChanged,
    /// An owner was deleted (no key).
    OwnerDeleted,
    /// An action this version of keygate has no name for, read back from a store a newer
    /// keygate writes to as well (a rolling upgrade): the event is kept, with the name it was
    /// stored under in [`AuditEvent::unrecognized`]. Never recorded by this version, and not
    /// in [`Action::ALL`] (no filter or parser accepts it).
    Unrecognized,
}

impl Action {
    /// Every action, for parsers and tests.
    pub const ALL: [Self; 22] = [
        Self::Request,
        Self::Created,
        Self::Renamed,
        Self::ScopesChanged,
        Self::ExpiryChanged,
        Self::MetadataChanged,
        Self::AllowedIpsChanged,
        Self::RateLimitChanged,
        Self::QuotaChanged,
        Self::CreditsAdded,
        Self::LimitsChanged,
        Self::Disabled,
        Self::Enabled,
        Self::Rotated,
        Self::Revoked,
        Self::Deleted,
        Self::Denials,
        Self::LeakReported,
        Self::PolicyChanged,
        Self::OwnerCreated,
        Self::OwnerChanged,
        Self::OwnerDeleted,
    ];

    /// A stable snake_case name: `request`, `created`, `scopes_changed`, ….
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Created => "created",
            Self::Renamed => "renamed",
            Self::ScopesChanged => "scopes_changed",
            Self::ExpiryChanged => "expiry_changed",
            Self::MetadataChanged => "metadata_changed",
            Self::AllowedIpsChanged => "allowed_ips_changed",
            Self::RateLimitChanged => "rate_limit_changed",
            Self::QuotaChanged => "quota_changed",
            Self::CreditsAdded => "credits_added",
            Self::LimitsChanged => "limits_changed",
            Self::Disabled => "disabled",
            Self::Enabled => "enabled",
            Self::Rotated => "rotated",
            Self::Revoked => "revoked",
            Self::Deleted => "deleted",
            Self::Denials => "denials",
            Self::LeakReported => "leak_reported",
            Self::PolicyChanged => "policy_changed",
            Self::OwnerCreated => "owner_created",
            Self::OwnerChanged => "owner_changed",
            Self::OwnerDeleted => "owner_deleted",
            Self::Unrecognized => "unrecognized",
        }
    }

    /// The lifecycle action a change records.
    #[must_use]
    pub fn for_change(change: &KeyChange) -> Self {
        match change {
            KeyChange::Rename(_) => Self::Renamed,
            KeyChange::SetScopes(_) => Self::ScopesChanged,
            KeyChange::SetExpiry(_) => Self::ExpiryChanged,
            KeyChange::SetMetadata(_) => Self::MetadataChanged,
            KeyChange::SetAllowedIps(_) => Self::AllowedIpsChanged,
            KeyChange::SetRateLimit(_) => Self::RateLimitChanged,
            KeyChange::SetQuota(_) => Self::QuotaChanged,
            KeyChange::AddCredits(_) => Self::CreditsAdded,
            KeyChange::SetLimits(_) => Self::LimitsChanged,
            KeyChange::Disable => Self::Disabled,
            KeyChange::Enable => Self::Enabled,
            KeyChange::Revoke => Self::Revoked,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
            .ok_or(UnknownName)
    }
}

/// A request's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Let in.
    Allowed,
    /// Refused.
    Denied,
}

impl Outcome {
    /// `allowed` or `denied`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "allowed" => Ok(Self::Allowed),
            "denied" => Ok(Self::Denied),
            _ => Err(UnknownName),
        }
    }
}

/// How urgently an event wants a human: [`AuditEvent::severity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// Routine: allowed requests, ordinary refusals, key changes.
    Info,
    /// Someone used a [canary](crate::NewKey::canary) key: whoever holds it found it where it
    /// was planted. Alert on it.
    High,
}

impl Severity {
    /// `info` or `high`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::High => "high",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the type's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown name")]
pub struct UnknownName;

/// One audit event. Never holds a key's secret or digest: only its public id.
///
/// Request events carry the request's method, route template (the router's pattern, e.g.
/// `/orders/{id}`, never the raw path or query), client address, status, latency and request
/// id (`x-request-id`) where known. Lifecycle events carry the actor who made the change, when
/// the caller named one, and a detail (a rotation names the new key).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AuditEvent {
    /// When it happened.
    pub at: SystemTime,
    /// What happened.
    pub action: Action,
    /// The key concerned: for requests, the key presented when a well-formed one was.
    pub key_id: Option<KeyId>,
    /// For requests: allowed or denied.
    pub outcome: Option<Outcome>,
    /// For denied requests: why.
    pub reason: Option<Reason>,
    /// For requests: the HTTP method.
    pub method: Option<http::Method>,
    /// For requests: the route template, when the framework knows it.
    pub route: Option<Arc<str>>,
    /// For requests: the client address (see the trusted-proxy rule).
    pub client_ip: Option<IpAddr>,
    /// For requests: the response status.
    pub status: Option<u16>,
    /// For requests: time from the request reaching keygate to the response.
    pub latency: Option<Duration>,
    /// For requests: the `x-request-id` header, if present.
    pub request_id: Option<Arc<str>>,
    /// For lifecycle events: who made the change, if the caller said.
    pub actor: Option<Arc<str>>,
    /// For lifecycle events: more about the change (a rotation: the new key's id).
    pub detail: Option<String>,
    /// For owner events ([`Action::OwnerCreated`], [`Action::OwnerChanged`],
    /// [`Action::OwnerDeleted`]): the owner's id. Key events leave it empty: a key's owner is
    /// found through the key store.
    pub owner: Option<Arc<str>>,
    /// For [`Action::Denials`]: how many denials the event stands for, and over what time.
    /// Boxed: rare, and every request's event stays as small as before.
    pub folded: Option<Box<Folded>>,
    /// Names read back from a store that this version of keygate does not know (a newer one
    /// wrote them): see [`Unrecognized`]. `None` for every event this version records.
    pub unrecognized: Option<Box<Unrecognized>>,
}

/// What a stored event said that this version of keygate has no name for. A newer keygate
/// sharing the store (during a rolling upgrade) may record actions and reasons this one does
/// not know; readers keep such events instead of failing the whole read, with
/// [`Action::Unrecognized`] or an empty reason in the typed fields and the stored names here.
/// Only names that pass [`is_name`] are kept (short snake_case ASCII, nothing a terminal or a
/// page could misread); anything else is damage ([`AuditEvent::stored`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Unrecognized {
    /// The stored action name, when the event's action is [`Action::Unrecognized`].
    pub action: Option<Arc<str>>,
    /// The stored reason name, when the event's reason is empty because of it.
    pub reason: Option<Arc<str>>,
}

/// Whether `name` could be an action or reason name a newer keygate wrote: snake_case ASCII
/// (lowercase letters, digits, underscores), starting with a letter, at most
/// [`MAX_LABEL_LEN`] bytes. Anything else in an action or reason column is damage, not a
/// newer version, and readers report it as such.
#[must_use]
pub fn is_name(name: &str) -> bool {
    name.len() <= MAX_LABEL_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// What an [`Action::Denials`] event stands for: `count` denied requests with the event's
/// reason from the event's client (or, with `other_clients`, from clients beyond the
/// pipeline's cap on open aggregates), the first at the event's `at`, the last at `last_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Folded {
    /// Denials folded in (at least 1).
    pub count: u64,
    /// When the last of them happened.
    pub last_at: SystemTime,
    /// The first distinct key ids presented, at most [`MAX_FOLDED_SAMPLE`]: a sample for the
    /// investigation, never the full list (that would cost one row's worth per forged id).
    pub sample: Vec<KeyId>,
    /// The denials came from clients beyond [`MAX_OPEN_FOLDS`](crate::audit::MAX_OPEN_FOLDS)
    /// (the event's `client_ip` is then empty).
    pub other_clients: bool,
}

/// Most key ids an [`Action::Denials`] event keeps as a sample.
pub const MAX_FOLDED_SAMPLE: usize = 5;

impl Folded {
    /// `count` denials from `at` to `last_at`, with the ids sampled and the clients' flag:
    /// for stores reading events back. The sample is cut to [`MAX_FOLDED_SAMPLE`].
    #[must_use]
    pub fn new(
        count: u64,
        last_at: SystemTime,
        mut sample: Vec<KeyId>,
        other_clients: bool,
    ) -> Self {
        sample.truncate(MAX_FOLDED_SAMPLE);
        Self {
            count,
            last_at,
            sample,
            other_clients,
        }
    }
}

impl AuditEvent {
    /// A request decision at `at`, to be completed with the builder-style setters.
    #[must_use]
    pub fn request(at: SystemTime, outcome: Outcome) -> Self {
        Self {
            outcome: Some(outcome),
            ..Self::blank(at, Action::Request)
        }
    }

    /// An event of any action at `at`, every other field empty (stores reading events back
    /// use this).
    #[must_use]
    pub fn new(at: SystemTime, action: Action) -> Self {
        Self::blank(at, action)
    }

    /// A change to key `id` at `at`.
    #[must_use]
    pub fn lifecycle(at: SystemTime, action: Action, id: KeyId) -> Self {
        Self {
            key_id: Some(id),
            ..Self::blank(at, action)
        }
    }

    /// A change to owner `owner` at `at` (an [`Action::OwnerCreated`], `OwnerChanged` or
    /// `OwnerDeleted` event; no key).
    #[must_use]
    pub fn owner_change(at: SystemTime, action: Action, owner: &str) -> Self {
        Self {
            owner: Some(owner.into()),
            ..Self::blank(at, action)
        }
    }

    fn blank(at: SystemTime, action: Action) -> Self {
        Self {
            at,
            action,
            key_id: None,
            outcome: None,
            reason: None,
            method: None,
            route: None,
            client_ip: None,
            status: None,
            latency: None,
            request_id: None,
            actor: None,
            detail: None,
            owner: None,
            folded: None,
            unrecognized: None,
        }
    }

    /// How urgent the event is: [`Severity::High`] for a request with a canary key
    /// ([`Reason::Canary`]), else [`Severity::Info`]. Derived from the reason, so every sink
    /// and every stored event (read back) agrees on it.
    #[must_use]
    pub fn severity(&self) -> Severity {
        match self.reason {
            Some(Reason::Canary) => Severity::High,
            _ => Severity::Info,
        }
    }

    /// Sets the key id.
    #[must_use]
    pub fn key_id(mut self, id: Option<KeyId>) -> Self {
        self.key_id = id;
        self
    }

    /// Sets the denial reason.
    #[must_use]
    pub fn reason(mut self, reason: Option<Reason>) -> Self {
        self.reason = reason;
        self
    }

    /// The action's name: [`Action::as_str`], or the name an [`Action::Unrecognized`] event
    /// was stored under.
    #[must_use]
    pub fn action_name(&self) -> &str {
        match (self.action, self.unrecognized.as_deref()) {
            (
                Action::Unrecognized,
                Some(Unrecognized {
                    action: Some(name), ..
                }),
            ) => name,
            (action, _) => action.as_str(),
        }
    }

    /// The reason's name: [`Reason::as_str`], or the stored name of a reason this version
    /// does not know (see [`Unrecognized`]).
    #[must_use]
    pub fn reason_name(&self) -> Option<&str> {
        match (self.reason, self.unrecognized.as_deref()) {
            (Some(reason), _) => Some(reason.as_str()),
            (None, Some(unrecognized)) => unrecognized.reason.as_deref(),
            (None, None) => None,
        }
    }

    /// For stores reading events back: an event of the action stored as `name` at `at`, every
    /// other field empty. A name this version does not know, but a newer keygate could have
    /// written, is kept: the action is [`Action::Unrecognized`] and the name is in
    /// [`AuditEvent::unrecognized`].
    ///
    /// # Errors
    /// [`UnknownName`] when `name` is not a name any keygate writes (see [`is_name`]): the
    /// store is damaged.
    pub fn stored(at: SystemTime, name: &str) -> Result<Self, UnknownName> {
        match name.parse() {
            Ok(action) => Ok(Self::new(at, action)),
            Err(_) if is_name(name) => {
                let mut event = Self::new(at, Action::Unrecognized);
                event.unrecognized.get_or_insert_default().action = Some(name.into());
                Ok(event)
            }
            Err(unknown) => Err(unknown),
        }
    }

    /// For stores reading events back: sets the reason stored as `name`. A name this version
    /// does not know, but a newer keygate could have written, is kept: the reason is empty and
    /// the name is in [`AuditEvent::unrecognized`].
    ///
    /// # Errors
    /// [`UnknownName`] when `name` is not a name any keygate writes (see [`is_name`]): the
    /// store is damaged.
    pub fn stored_reason(mut self, name: &str) -> Result<Self, UnknownName> {
        match name.parse() {
            Ok(reason) => Ok(self.reason(Some(reason))),
            Err(_) if is_name(name) => {
                self.reason = None;
                self.unrecognized.get_or_insert_default().reason = Some(name.into());
                Ok(self)
            }
            Err(unknown) => Err(unknown),
        }
    }

    /// Sets the actor.
    #[must_use]
    pub fn actor(mut self, actor: Option<Arc<str>>) -> Self {
        self.actor = actor;
        self
    }

    /// Sets the detail.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// A request id or actor as kept: lossy UTF-8, control characters replaced, at most
/// [`MAX_LABEL_LEN`] characters.
#[must_use]
pub fn label(bytes: &[u8]) -> Arc<str> {
    let text = String::from_utf8_lossy(bytes);
    text.chars()
        .take(MAX_LABEL_LEN)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse(), Ok(action));
        }
        for outcome in [Outcome::Allowed, Outcome::Denied] {
            assert_eq!(outcome.as_str().parse(), Ok(outcome));
        }
        assert_eq!("nope".parse::<Action>(), Err(UnknownName));
        // Read back only: no parser or filter accepts it.
        assert!(!Action::ALL.contains(&Action::Unrecognized));
        assert_eq!("unrecognized".parse::<Action>(), Err(UnknownName));
    }

    #[test]
    fn a_newer_keygates_names_are_kept_as_stored() {
        let at = SystemTime::UNIX_EPOCH;
        let stored = |action: &str, reason: &str| {
            AuditEvent::stored(at, action).and_then(|event| event.stored_reason(reason))
        };
        let known = stored("request", "revoked").unwrap();
        assert_eq!(
            (known.action, known.reason),
            (Action::Request, Some(Reason::Revoked))
        );
        assert_eq!(
            (
                known.action_name(),
                known.reason_name(),
                &known.unrecognized
            ),
            ("request", Some("revoked"), &None)
        );
        assert_eq!(AuditEvent::new(at, Action::Rotated).reason_name(), None);

        let newer = stored("credits_topped_up", "quota_frozen").unwrap();
        assert_eq!((newer.action, newer.reason), (Action::Unrecognized, None));
        assert_eq!(
            (newer.action_name(), newer.reason_name()),
            ("credits_topped_up", Some("quota_frozen"))
        );
        // A newer reason replaces a typed one set before.
        let replaced = AuditEvent::new(at, Action::Request)
            .reason(Some(Reason::Revoked))
            .stored_reason("quota_frozen")
            .unwrap();
        assert_eq!(
            (replaced.reason, replaced.reason_name()),
            (None, Some("quota_frozen"))
        );
        // Without a kept name (an event built by hand), the variant's own name.
        assert_eq!(
            AuditEvent::new(at, Action::Unrecognized).action_name(),
            "unrecognized"
        );
        // Not a name any keygate writes: damage.
        for (action, reason) in [("Launched Missiles!", "revoked"), ("request", "REVOKED")] {
            assert_eq!(
                stored(action, reason),
                Err(UnknownName),
                "{action} {reason}"
            );
        }
    }

    #[test]
    fn names_are_snake_case_ascii() {
        for name in ["a", "credits_topped_up", "limit2", "quota_frozen_v2"] {
            assert!(is_name(name), "{name}");
        }
        for name in ["", "_a", "2fa", "Revoked", "a-b", "a b", "é", "a\n"] {
            assert!(!is_name(name), "{name:?}");
        }
        assert!(is_name(&"a".repeat(MAX_LABEL_LEN)));
        assert!(!is_name(&"a".repeat(MAX_LABEL_LEN + 1)));
        for action in Action::ALL {
            assert!(is_name(action.as_str()));
        }
        for reason in Reason::ALL {
            assert!(is_name(reason.as_str()));
        }
    }

    #[test]
    fn labels_are_cut_and_cleaned() {
        assert_eq!(&*label(b"abc\r\ndef"), "abc\u{fffd}\u{fffd}def");
        assert_eq!(label(&[b'x'; 500]).chars().count(), MAX_LABEL_LEN);
        assert_eq!(&*label(b"\xff"), "\u{fffd}");
    }
}

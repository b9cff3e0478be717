//! The caller's identity, handed to handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::key::KeyId;
use crate::rate::{LimitName, RatePolicy};
use crate::route_limit::RouteLimits;
use crate::scope::{Scope, any_grants};

/// Metadata attached to a key: a JSON object of application-defined values.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Who is calling: the verified key's public facts. Shared as `Arc<Identity>`, so cloning is one
/// reference-count increment.
///
/// It never holds the secret or its digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    id: KeyId,
    name: String,
    owner: Option<String>,
    scopes: Vec<Scope>,
    metadata: Metadata,
    environment: Option<Arc<str>>,
    quota_remaining: QuotaGauge,
    route_limits: Option<Arc<RouteLimits>>,
}

impl Identity {
    /// Builds an identity (stores and tests; the verifier builds it from a [`KeyRecord`](crate::KeyRecord)).
    #[must_use]
    pub fn new(
        id: KeyId,
        name: String,
        owner: Option<String>,
        scopes: Vec<Scope>,
        metadata: Metadata,
    ) -> Self {
        Self {
            id,
            name,
            owner,
            scopes,
            metadata,
            environment: None,
            quota_remaining: QuotaGauge::default(),
            route_limits: None,
        }
    }

    /// The identity with `environment` as the key's [environment](Identity::environment)
    /// (the verifier sets it from the stored record's prefix).
    #[must_use]
    pub fn with_environment(mut self, environment: impl Into<Arc<str>>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The identity with the key's named limits, as routes apply them (the verifier resolves
    /// them when it caches the record).
    pub(crate) fn with_route_limits(mut self, limits: Option<Arc<RouteLimits>>) -> Self {
        self.route_limits = limits;
        self
    }

    /// The key's named limits, as routes apply them; `None`: no name has a policy.
    pub(crate) fn route_limits(&self) -> Option<&RouteLimits> {
        self.route_limits.as_deref()
    }

    /// The policies of the key's named limit `name`, as a route choosing it
    /// ([`RouteLimit`](crate::RouteLimit)) applies them: the key's own (or the verifier's
    /// default for the name), and its owner's. `(None, None)`: the route is not limited by it.
    #[must_use]
    pub fn named_limit(&self, name: LimitName) -> (Option<RatePolicy>, Option<RatePolicy>) {
        self.route_limits
            .as_deref()
            .map_or((None, None), |limits| limits.policies(name))
    }

    /// The key's public id.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The key's human-readable name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The project, application or team the key belongs to, if set.
    #[must_use]
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// The scopes granted to the key.
    #[must_use]
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// Whether the key is granted `required` (exact, or through `resource:*`; see [`crate::scope`]).
    #[must_use]
    pub fn has_scope(&self, required: &str) -> bool {
        any_grants(&self.scopes, required)
    }

    /// The environment of the key (`live`, `test`), when the verifier's keyring has named
    /// environments (see [`crate::keyring`]); `None` for a keyring of one unnamed format.
    ///
    /// It is the environment of the stored record's prefix: a key presented with another
    /// environment's prefix is refused before any identity is handed out.
    #[must_use]
    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }

    /// Application-defined metadata.
    #[must_use]
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Units left of the key's [quota](crate::quota) (the tighter of its own and its
    /// owner's) after the request's charge; `None` when neither the key nor its owner has a
    /// quota.
    ///
    /// The identity is shared by the key's concurrent requests (one `Arc`, no allocation per
    /// request), so this is the balance after the key's latest charge at this verifier: the
    /// request's own unless another request of the key was charged meanwhile. The exact
    /// per-request value is [`QuotaReceipt::remaining`](crate::quota::QuotaReceipt::remaining),
    /// in the request's extensions.
    #[must_use]
    pub fn quota_remaining(&self) -> Option<u64> {
        self.quota_remaining.get()
    }

    /// Notes the balance after a charge of this key.
    pub(crate) fn set_quota_remaining(&self, remaining: u64) {
        self.quota_remaining.set(remaining);
    }
}

/// The balance after a key's latest quota charge; `u64::MAX`: none yet (no quota).
#[derive(Debug)]
struct QuotaGauge(AtomicU64);

impl QuotaGauge {
    const NONE: u64 = u64::MAX;

    fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&n| n != Self::NONE)
    }

    fn set(&self, remaining: u64) {
        // A quota is at most `MAX_QUOTA` (10¹²): never the sentinel.
        self.0
            .store(remaining.min(Self::NONE - 1), Ordering::Relaxed);
    }
}

impl Default for QuotaGauge {
    fn default() -> Self {
        Self(AtomicU64::new(Self::NONE))
    }
}

impl Clone for QuotaGauge {
    fn clone(&self) -> Self {
        Self(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

/// Identities compare by the key's facts, not by a balance that changes per request.
impl PartialEq for QuotaGauge {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

//! Scopes: what a key may do, and what a route requires.
//!
//! A scope is one or more `:`-separated segments of ASCII letters, digits, `_`, `-` and `.`,
//! at most 128 characters: `orders:read`, `billing:invoices:write`, `admin`.
//! The last segment of a scope *granted to a key* may be `*`.
//!
//! # Matching
//! A key granted scope `g` satisfies a required scope `r` when
//! - `g == r` (exact match), or
//! - `g` is `resource:*` and `r` starts with `resource:` — so `orders:*` covers `orders:read`
//!   and `orders:items:write`, but not `orders` itself nor `ordersx:read`.
//!
//! There is no global `*`: a key that may do everything lists each resource.

use std::fmt;
use std::sync::Arc;

/// Longest accepted scope, in bytes.
pub const MAX_SCOPE_LEN: usize = 128;

/// A validated scope string. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Arc<str>);

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid scope {scope:?}: use ':'-separated segments of letters, digits, '_', '-' or '.', at most {MAX_SCOPE_LEN} characters, with '*' only as the whole last segment"
)]
pub struct InvalidScope {
    scope: String,
}

impl Scope {
    /// Validates a scope.
    ///
    /// # Errors
    /// [`InvalidScope`] for an empty scope, an empty segment, a bad character, a `*` that is not
    /// the whole last segment, a bare `*`, or a scope over [`MAX_SCOPE_LEN`].
    pub fn new(scope: &str) -> Result<Self, InvalidScope> {
        if Self::is_valid(scope) {
            Ok(Self(Arc::from(scope)))
        } else {
            Err(InvalidScope {
                scope: scope.chars().take(MAX_SCOPE_LEN + 8).collect(),
            })
        }
    }

    fn is_valid(scope: &str) -> bool {
        if scope.is_empty() || scope.len() > MAX_SCOPE_LEN || scope == "*" {
            return false;
        }
        let segments = scope.split(':').count();
        scope.split(':').enumerate().all(|(i, segment)| {
            (segment == "*" && i + 1 == segments)
                || (!segment.is_empty()
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
        })
    }

    /// The scope as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this scope, granted to a key, satisfies the `required` scope (see module docs).
    #[must_use]
    pub fn grants(&self, required: &str) -> bool {
        let granted = self.as_str();
        if granted == required {
            return true;
        }
        match granted.strip_suffix('*') {
            // `resource:*` → `resource:` must be a proper prefix of `required`.
            Some(stem) if stem.ends_with(':') => {
                required.len() > stem.len() && required.starts_with(stem)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for Scope {
    type Err = InvalidScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Whether any of `granted` satisfies `required`.
#[must_use]
pub fn any_grants(granted: &[Scope], required: &str) -> bool {
    granted.iter().any(|g| g.grants(required))
}

/// A route's scope requirement: all of a list, or any of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeRequirement {
    mode: Mode,
    scopes: Vec<Scope>,
    // Pre-rendered for the `scope="…"` parameter of WWW-Authenticate.
    joined: Arc<str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    All,
    Any,
}

impl ScopeRequirement {
    /// Every one of `scopes` is required.
    ///
    /// # Errors
    /// [`InvalidScope`] for the first invalid scope.
    pub fn all<I, S>(scopes: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(Mode::All, scopes)
    }

    /// At least one of `scopes` is required.
    ///
    /// # Errors
    /// [`InvalidScope`] for the first invalid scope.
    pub fn any<I, S>(scopes: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(Mode::Any, scopes)
    }

    fn build<I, S>(mode: Mode, scopes: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let scopes = scopes
            .into_iter()
            .map(|s| Scope::new(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let joined = scopes
            .iter()
            .map(Scope::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Self {
            mode,
            scopes,
            joined: Arc::from(joined),
        })
    }

    /// Whether a key with `granted` scopes meets this requirement. An empty requirement is met.
    #[must_use]
    pub fn is_met_by(&self, granted: &[Scope]) -> bool {
        match self.mode {
            Mode::All => self.scopes.iter().all(|r| any_grants(granted, r.as_str())),
            Mode::Any => {
                self.scopes.is_empty()
                    || self.scopes.iter().any(|r| any_grants(granted, r.as_str()))
            }
        }
    }

    /// The required scopes, space-separated (the `scope` parameter of `WWW-Authenticate`).
    #[must_use]
    pub fn scope_param(&self) -> &Arc<str> {
        &self.joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Scope {
        Scope::new(v).unwrap()
    }

    #[test]
    fn validation() {
        for ok in [
            "admin",
            "orders:read",
            "orders:*",
            "a.b-c_d:e",
            "billing:invoices:*",
        ] {
            assert!(Scope::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*",
            "orders:",
            ":read",
            "or ders",
            "orders:*:read",
            "orders*",
            "ä",
            "a::b",
        ] {
            assert!(Scope::new(bad).is_err(), "{bad}");
        }
        assert!(Scope::new(&"a".repeat(129)).is_err());
    }

    #[test]
    fn matching() {
        assert!(s("orders:read").grants("orders:read"));
        assert!(!s("orders:read").grants("orders:write"));
        assert!(s("orders:*").grants("orders:read"));
        assert!(s("orders:*").grants("orders:items:write"));
        assert!(!s("orders:*").grants("orders"));
        assert!(!s("orders:*").grants("ordersx:read"));
        assert!(!s("orders:*").grants("orders:"));
        assert!(!s("orders").grants("orders:read"));
    }

    #[test]
    fn requirements() {
        let granted = [s("orders:*"), s("profile:read")];
        let all = ScopeRequirement::all(["orders:read", "profile:read"]).unwrap();
        assert!(all.is_met_by(&granted));
        let all2 = ScopeRequirement::all(["orders:read", "admin"]).unwrap();
        assert!(!all2.is_met_by(&granted));
        assert_eq!(&**all2.scope_param(), "orders:read admin");
        let any = ScopeRequirement::any(["admin", "profile:read"]).unwrap();
        assert!(any.is_met_by(&granted));
    }
}

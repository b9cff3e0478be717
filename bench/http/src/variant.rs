//! The servers the benchmark compares: two frameworks, four ways of authenticating each.

use std::fmt;

/// The web framework of a benchmarked server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    /// axum 0.8 on a current-thread tokio runtime.
    Axum,
    /// actix-web 4 with one worker.
    Actix,
}

impl Framework {
    /// Both, in the benchmark's order.
    pub const ALL: [Framework; 2] = [Framework::Axum, Framework::Actix];

    /// `axum` or `actix-web`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Framework::Axum => "axum",
            Framework::Actix => "actix-web",
        }
    }
}

/// How a benchmarked server authenticates its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No authentication: the hello world alone.
    Plain,
    /// The hand-written floor ([`crate::floor::FloorKeys`]): split the key, SHA-256, a `HashMap`
    /// by id, a constant-time compare, the identity into the request's extensions, 401 otherwise.
    Floor,
    /// The same with a `moka::future::Cache` (id → record) in front of the `HashMap`
    /// ([`crate::floor::CachedFloorKeys`]).
    FloorMoka,
    /// keygate (`keygate_axum::layer`, `keygate_actix::ApiKeyAuth`).
    Keygate,
}

impl Auth {
    /// Every kind, in the benchmark's order.
    pub const ALL: [Auth; 4] = [Auth::Plain, Auth::Floor, Auth::FloorMoka, Auth::Keygate];

    /// The name's suffix: `plain`, `floor`, `floor-moka`, `keygate`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Auth::Plain => "plain",
            Auth::Floor => "floor",
            Auth::FloorMoka => "floor-moka",
            Auth::Keygate => "keygate",
        }
    }
}

/// One benchmarked server: a framework and a way of authenticating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// The framework.
    pub framework: Framework,
    /// The authentication in front of its hello world.
    pub auth: Auth,
}

impl Variant {
    /// Every variant, in the benchmark's base order: per framework plain, floor, floor-moka,
    /// keygate.
    pub const ALL: [Variant; 8] = {
        let mut all = [Variant::new(Framework::Axum, Auth::Plain); 8];
        let mut i = 0;
        while i < 8 {
            all[i] = Variant::new(Framework::ALL[i / 4], Auth::ALL[i % 4]);
            i += 1;
        }
        all
    };

    /// The variant of `framework` with `auth`.
    #[must_use]
    pub const fn new(framework: Framework, auth: Auth) -> Self {
        Self { framework, auth }
    }

    /// The command-line name: `axum-plain`, `axum-floor`, `axum-floor-moka`, `axum-keygate`,
    /// `actix-plain`, `actix-floor`, `actix-floor-moka`, `actix-keygate`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match (self.framework, self.auth) {
            (Framework::Axum, Auth::Plain) => "axum-plain",
            (Framework::Axum, Auth::Floor) => "axum-floor",
            (Framework::Axum, Auth::FloorMoka) => "axum-floor-moka",
            (Framework::Axum, Auth::Keygate) => "axum-keygate",
            (Framework::Actix, Auth::Plain) => "actix-plain",
            (Framework::Actix, Auth::Floor) => "actix-floor",
            (Framework::Actix, Auth::FloorMoka) => "actix-floor-moka",
            (Framework::Actix, Auth::Keygate) => "actix-keygate",
        }
    }

    /// The variant called `name`, if any.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }

    /// `axum` or `actix-web`.
    #[must_use]
    pub fn framework(self) -> &'static str {
        self.framework.name()
    }

    /// Whether keygate authenticates this server's requests (the rate-limit and audit options
    /// apply to these only).
    #[must_use]
    pub fn with_keygate(self) -> bool {
        self.auth == Auth::Keygate
    }

    /// Whether the server holds a key set (keygate's store, or the floor's `HashMap`) of
    /// `--store-keys` keys; a plain server only mints the client's keys.
    #[must_use]
    pub fn holds_keys(self) -> bool {
        self.auth != Auth::Plain
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::{Auth, Framework, Variant};

    #[test]
    fn names_round_trip() {
        for v in Variant::ALL {
            assert_eq!(Variant::parse(v.name()), Some(v));
            assert!(v.name().ends_with(v.auth.name()));
        }
        assert_eq!(Variant::parse("axum"), None);
    }

    #[test]
    fn every_framework_has_every_auth_once() {
        for framework in Framework::ALL {
            for auth in Auth::ALL {
                let matching = Variant::ALL
                    .iter()
                    .filter(|v| v.framework == framework && v.auth == auth)
                    .count();
                assert_eq!(matching, 1, "{framework:?} {auth:?}");
            }
        }
        assert_eq!(Variant::ALL[0].name(), "axum-plain");
        assert_eq!(Variant::ALL[7].name(), "actix-keygate");
    }
}

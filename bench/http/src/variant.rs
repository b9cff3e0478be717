//! The four servers the benchmark compares.

use std::fmt;

/// One benchmarked server: a framework, with or without keygate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// axum hello world, no authentication.
    AxumPlain,
    /// axum hello world behind `keygate_axum::layer`.
    AxumKeygate,
    /// actix-web hello world, no authentication.
    ActixPlain,
    /// actix-web hello world wrapped in `keygate_actix::ApiKeyAuth`.
    ActixKeygate,
}

impl Variant {
    /// Every variant, in the benchmark's base order (each plain server before its keygate twin).
    pub const ALL: [Variant; 4] = [
        Variant::AxumPlain,
        Variant::AxumKeygate,
        Variant::ActixPlain,
        Variant::ActixKeygate,
    ];

    /// The command-line name: `axum-plain`, `axum-keygate`, `actix-plain`, `actix-keygate`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Variant::AxumPlain => "axum-plain",
            Variant::AxumKeygate => "axum-keygate",
            Variant::ActixPlain => "actix-plain",
            Variant::ActixKeygate => "actix-keygate",
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
        match self {
            Variant::AxumPlain | Variant::AxumKeygate => "axum",
            Variant::ActixPlain | Variant::ActixKeygate => "actix-web",
        }
    }

    /// Whether keygate authenticates this server's requests.
    #[must_use]
    pub fn with_keygate(self) -> bool {
        matches!(self, Variant::AxumKeygate | Variant::ActixKeygate)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Variant;

    #[test]
    fn names_round_trip() {
        for v in Variant::ALL {
            assert_eq!(Variant::parse(v.name()), Some(v));
        }
        assert_eq!(Variant::parse("axum"), None);
    }
}

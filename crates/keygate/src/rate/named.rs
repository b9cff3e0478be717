//! Named limits: several rate limits per key or owner (`reads: 100/1s`, `writes: 10/1s`),
//! each chosen by the routes that name it ([`RouteLimit`](crate::RouteLimit)).

use std::fmt;
use std::str::FromStr;

use super::{InvalidRatePolicy, RateLimit};

/// Longest limit name, in bytes.
pub const MAX_LIMIT_NAME: usize = 32;
/// Most named limits one key or owner may have.
pub const MAX_NAMED_LIMITS: usize = 16;

/// The names the `RateLimit` fields already use for keygate's own items; a named limit may not
/// take one.
const RESERVED: [&str; 3] = ["key", "failures", "quota"];

/// The name of a limit: 1 to [`MAX_LIMIT_NAME`] bytes of lowercase ASCII letters, digits, `_`
/// and `-`, starting with a letter; not `key`, `failures` or `quota` (the `RateLimit` fields'
/// own items). It names the limit's item in the `RateLimit-Policy` and `RateLimit` fields.
///
/// Stored inline (`Copy`, no allocation), so a limiter can key its state by it.
///
/// ```
/// use keygate::rate::LimitName;
///
/// let writes: LimitName = "writes".parse()?;
/// assert_eq!(writes.as_str(), "writes");
/// assert!("Writes".parse::<LimitName>().is_err());
/// assert!("quota".parse::<LimitName>().is_err());
/// # Ok::<(), keygate::rate::InvalidNamedLimit>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitName {
    len: u8,
    bytes: [u8; MAX_LIMIT_NAME],
}

impl LimitName {
    /// The name `text`.
    ///
    /// # Errors
    /// [`InvalidNamedLimit::Name`] when `text` is not a valid name (see the type's docs).
    pub fn new(text: &str) -> Result<Self, InvalidNamedLimit> {
        let valid = !text.is_empty()
            && text.len() <= MAX_LIMIT_NAME
            && text.as_bytes()[0].is_ascii_lowercase()
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && !RESERVED.contains(&text);
        if !valid {
            return Err(InvalidNamedLimit::Name);
        }
        let mut bytes = [0; MAX_LIMIT_NAME];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Ok(Self {
            #[allow(clippy::cast_possible_truncation)] // at most MAX_LIMIT_NAME
            len: text.len() as u8,
            bytes,
        })
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `new`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

// By the name's text (the derived order would put shorter names first).
impl Ord for LimitName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for LimitName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl FromStr for LimitName {
    type Err = InvalidNamedLimit;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text.trim())
    }
}

/// A key's or owner's named limits: at most [`MAX_NAMED_LIMITS`], one per name, kept sorted by
/// name. A route chooses one with [`RouteLimit`](crate::RouteLimit); a key's
/// [`RateLimit::Unlimited`] under a name switches off the verifier's default for that name
/// ([`VerifierBuilder::default_named_limit`](crate::VerifierBuilder::default_named_limit)).
///
/// Written `name: policy` entries separated by commas (`name=policy` is read too); the empty
/// text is no named limits:
///
/// ```
/// use keygate::rate::{LimitName, NamedLimits};
///
/// let limits: NamedLimits = "writes: 10/1s, reads=100/1s burst 200".parse()?;
/// assert_eq!(limits.to_string(), "reads: 100/1s burst 200, writes: 10/1s");
/// let writes: LimitName = "writes".parse()?;
/// assert_eq!(limits.get(writes).map(|l| l.to_string()), Some("10/1s".to_owned()));
/// assert!("".parse::<NamedLimits>()?.is_empty());
/// # Ok::<(), keygate::rate::InvalidNamedLimit>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NamedLimits(Vec<(LimitName, RateLimit)>);

impl NamedLimits {
    /// No named limits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The limit named `name`, if any.
    #[must_use]
    pub fn get(&self, name: LimitName) -> Option<RateLimit> {
        self.0
            .binary_search_by(|(n, _)| n.cmp(&name))
            .ok()
            .map(|i| self.0[i].1)
    }

    /// Sets the limit named `name` (replacing one of that name).
    ///
    /// # Errors
    /// [`InvalidNamedLimit::TooMany`] when that would make more than [`MAX_NAMED_LIMITS`].
    pub fn set(&mut self, name: LimitName, limit: RateLimit) -> Result<(), InvalidNamedLimit> {
        match self.0.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(i) => self.0[i].1 = limit,
            Err(_) if self.0.len() >= MAX_NAMED_LIMITS => return Err(InvalidNamedLimit::TooMany),
            Err(i) => self.0.insert(i, (name, limit)),
        }
        Ok(())
    }

    /// Removes the limit named `name`; whether there was one.
    pub fn remove(&mut self, name: LimitName) -> bool {
        match self.0.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// The limits, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (LimitName, RateLimit)> + '_ {
        self.0.iter().copied()
    }
}

impl<'a> IntoIterator for &'a NamedLimits {
    type Item = (LimitName, RateLimit);
    type IntoIter = std::iter::Copied<std::slice::Iter<'a, (LimitName, RateLimit)>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().copied()
    }
}

impl fmt::Display for NamedLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, limit)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {limit}")?;
        }
        Ok(())
    }
}

impl FromStr for NamedLimits {
    type Err = InvalidNamedLimit;

    /// Reads `name: policy, name: policy` (or `name=policy`); a name given twice is refused.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut limits = Self::new();
        if text.trim().is_empty() {
            return Ok(limits);
        }
        for entry in text.split(',') {
            let (name, limit) = parse_entry(entry)?;
            if limits.get(name).is_some() {
                return Err(InvalidNamedLimit::Duplicate(name));
            }
            limits.set(name, limit)?;
        }
        Ok(limits)
    }
}

/// Reads one `name: policy` or `name=policy` entry, as the CLI's `--limit` takes it. The
/// policy may be `unlimited` (see [`NamedLimits`]).
///
/// # Errors
/// [`InvalidNamedLimit`] naming what is wrong.
pub fn parse_entry(entry: &str) -> Result<(LimitName, RateLimit), InvalidNamedLimit> {
    let (name, policy) = entry
        .split_once([':', '='])
        .ok_or(InvalidNamedLimit::Syntax)?;
    let name = name.parse()?;
    let limit = policy.trim().parse().map_err(InvalidNamedLimit::Policy)?;
    Ok((name, limit))
}

/// Why a named limit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidNamedLimit {
    /// Not of the shape `name: policy`.
    #[error(
        "invalid named limit: write <name>: <policy> (or <name>=<policy>), e.g. \"writes: 10/1s\""
    )]
    Syntax,
    /// The name is not valid.
    #[error(
        "invalid limit name: 1 to {MAX_LIMIT_NAME} lowercase letters, digits, '_' or '-', starting with a letter, and not key, failures or quota"
    )]
    Name,
    /// The policy is not valid.
    #[error("{0}")]
    Policy(InvalidRatePolicy),
    /// A name is given twice.
    #[error("the limit {0} is given twice")]
    Duplicate(LimitName),
    /// More than [`MAX_NAMED_LIMITS`] names.
    #[error("at most {MAX_NAMED_LIMITS} named limits per key or owner")]
    TooMany,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> LimitName {
        text.parse().unwrap()
    }

    #[test]
    fn names_are_short_lowercase_tokens() {
        for good in [
            "writes",
            "reads",
            "a",
            "gpu-minutes",
            "tier_2",
            &"x".repeat(32),
        ] {
            assert_eq!(LimitName::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "Writes",
            "2fast",
            "_x",
            "-x",
            "a b",
            "a,b",
            "a\"b",
            "é",
            "key",
            "failures",
            "quota",
            &"x".repeat(33),
        ] {
            assert_eq!(LimitName::new(bad), Err(InvalidNamedLimit::Name), "{bad:?}");
        }
        assert_eq!(format!("{:?}", name("writes")), "\"writes\"");
        assert!(name("a") < name("b"));
        assert!(name("ab") < name("b") && name("exports") < name("reads"));
    }

    #[test]
    fn parses_and_displays_canonically() {
        let limits: NamedLimits =
            " writes : 10/1s ,reads=100/1s burst 200, bulk: unlimited, exports: 1/1h"
                .parse()
                .unwrap();
        assert_eq!(
            limits.to_string(),
            "bulk: unlimited, exports: 1/1h, reads: 100/1s burst 200, writes: 10/1s"
        );
        assert_eq!(limits.to_string().parse::<NamedLimits>().unwrap(), limits);
        assert_eq!(limits.len(), 4);
        assert_eq!(limits.get(name("bulk")), Some(RateLimit::Unlimited));
        assert_eq!(limits.get(name("other")), None);
        assert_eq!("".parse::<NamedLimits>().unwrap(), NamedLimits::new());
        assert_eq!(NamedLimits::new().to_string(), "");
    }

    #[test]
    fn refuses_bad_lists() {
        for (text, error) in [
            ("writes", InvalidNamedLimit::Syntax),
            ("writes 10/1s", InvalidNamedLimit::Syntax),
            ("Writes: 10/1s", InvalidNamedLimit::Name),
            ("quota: 10/1s", InvalidNamedLimit::Name),
            (
                "writes: 0/1s",
                InvalidNamedLimit::Policy(InvalidRatePolicy::Requests),
            ),
            (
                "writes:",
                InvalidNamedLimit::Policy(InvalidRatePolicy::Syntax),
            ),
            ("writes: 1/1s,", InvalidNamedLimit::Syntax),
            (
                "writes: 1/1s, writes: 2/1s",
                InvalidNamedLimit::Duplicate(name("writes")),
            ),
        ] {
            assert_eq!(text.parse::<NamedLimits>(), Err(error), "{text:?}");
        }
        let many = (0..=MAX_NAMED_LIMITS)
            .map(|i| format!("l{i}: 1/1s"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(many.parse::<NamedLimits>(), Err(InvalidNamedLimit::TooMany));
    }

    #[test]
    fn set_replaces_and_remove_removes() {
        let mut limits = NamedLimits::new();
        limits.set(name("b"), "1/1s".parse().unwrap()).unwrap();
        limits.set(name("a"), "2/1s".parse().unwrap()).unwrap();
        limits.set(name("b"), "3/1s".parse().unwrap()).unwrap();
        assert_eq!(limits.to_string(), "a: 2/1s, b: 3/1s");
        assert!(limits.remove(name("a")));
        assert!(!limits.remove(name("a")));
        assert_eq!(
            limits.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            [name("b")]
        );
        let full: NamedLimits = (0..MAX_NAMED_LIMITS)
            .map(|i| format!("l{i}: 1/1s"))
            .collect::<Vec<_>>()
            .join(", ")
            .parse()
            .unwrap();
        let mut full_too = full.clone();
        // Replacing one of a full set is fine; a new name is not.
        full_too.set(name("l0"), RateLimit::Unlimited).unwrap();
        assert_eq!(
            full_too.set(name("new"), RateLimit::Unlimited),
            Err(InvalidNamedLimit::TooMany)
        );
    }
}

//! Named limits on the command line: `--limit NAME=POLICY` of `create` and `owners create`, and
//! the changes of `keygate limits` and `owners update --limit` (`NAME=POLICY` sets,
//! `NAME=none` removes), merged into the current set.

use keygate::rate::{InvalidNamedLimit, LimitName, NamedLimits};
use serde_json::{Map, Value};

use crate::cli::{LimitChange, LimitEntry};
use crate::error::CliError;

fn refused(error: InvalidNamedLimit) -> CliError {
    CliError::usage(error.to_string())
}

/// The named limits `--limit` entries give; a name given twice is refused.
pub(crate) fn from_entries(entries: &[LimitEntry]) -> Result<NamedLimits, CliError> {
    let mut limits = NamedLimits::new();
    for entry in entries {
        if limits.get(entry.name).is_some() {
            return Err(refused(InvalidNamedLimit::Duplicate(entry.name)));
        }
        limits.set(entry.name, entry.limit).map_err(refused)?;
    }
    Ok(limits)
}

/// Checks changes before the store is opened: a name given twice is refused, and so is
/// setting more names than a set may hold.
pub(crate) fn check_changes(changes: &[LimitChange]) -> Result<(), CliError> {
    merge(NamedLimits::new(), changes).map(|_| ())
}

/// `current` with `changes` made: each `NAME=POLICY` sets NAME, each `NAME=none` removes it;
/// the names not given stay. Also returns the names removed that were not there (a typo,
/// perhaps).
pub(crate) fn merge(
    mut current: NamedLimits,
    changes: &[LimitChange],
) -> Result<(NamedLimits, Vec<LimitName>), CliError> {
    let mut seen: Vec<LimitName> = Vec::with_capacity(changes.len());
    let mut absent = Vec::new();
    // Removals first, so that removing one and setting another in a full set works.
    for change in changes {
        if seen.contains(&change.name) {
            return Err(refused(InvalidNamedLimit::Duplicate(change.name)));
        }
        seen.push(change.name);
        if change.limit.is_none() && !current.remove(change.name) {
            absent.push(change.name);
        }
    }
    for change in changes {
        if let Some(limit) = change.limit {
            current.set(change.name, limit).map_err(refused)?;
        }
    }
    Ok((current, absent))
}

/// The canonical text (`reads: 100/1s, writes: 10/1s`), or `none`.
pub(crate) fn text(limits: &NamedLimits) -> String {
    if limits.is_empty() {
        "none".into()
    } else {
        limits.to_string()
    }
}

/// A JSON object of name → policy text (`{"reads": "100/1s"}`; `{}` when none).
pub(crate) fn json(limits: &NamedLimits) -> Value {
    Value::Object(
        limits
            .iter()
            .map(|(name, limit)| (name.to_string(), Value::String(limit.to_string())))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn change(text: &str) -> LimitChange {
        text.parse().unwrap()
    }

    fn name(text: &str) -> LimitName {
        text.parse().unwrap()
    }

    #[test]
    fn changes_set_and_remove_and_keep_the_rest() {
        let current: NamedLimits = "reads: 100/1s, writes: 10/1s, bulk: 1/1m".parse().unwrap();
        let (merged, absent) = merge(
            current,
            &[
                change("writes=20/1s burst 40"),
                change("bulk: none"),
                change("zipfiles=unlimited"),
                change("gone=NONE"),
            ],
        )
        .unwrap();
        assert_eq!(
            merged.to_string(),
            "reads: 100/1s, writes: 20/1s burst 40, zipfiles: unlimited"
        );
        assert_eq!(absent, [name("gone")]);
        assert_eq!(text(&merged), merged.to_string());
        assert_eq!(text(&NamedLimits::new()), "none");
        assert_eq!(
            json(&merged),
            serde_json::json!({
                "reads": "100/1s",
                "writes": "20/1s burst 40",
                "zipfiles": "unlimited",
            })
        );
        assert_eq!(json(&NamedLimits::new()), serde_json::json!({}));
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        let error = merge(
            NamedLimits::new(),
            &[change("writes=1/1s"), change("writes=none")],
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("the limit writes is given twice")
        );
        let entries: Vec<LimitEntry> = ["a=1/1s", "b: 2/1s", "a=3/1s"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let error = from_entries(&entries).unwrap_err();
        assert!(error.to_string().contains("the limit a is given twice"));
        assert_eq!(
            from_entries(&entries[..2]).unwrap().to_string(),
            "a: 1/1s, b: 2/1s"
        );
    }

    #[test]
    fn a_full_set_takes_a_new_name_only_after_a_removal() {
        let full: NamedLimits = (0..keygate::rate::MAX_NAMED_LIMITS)
            .map(|i| format!("l{i}: 1/1s"))
            .collect::<Vec<_>>()
            .join(", ")
            .parse()
            .unwrap();
        let error = merge(full.clone(), &[change("extra=1/1s")]).unwrap_err();
        assert!(error.to_string().contains("at most 16"), "{error}");
        let (merged, _) = merge(full, &[change("extra=1/1s"), change("l0=none")]).unwrap();
        assert_eq!(merged.len(), keygate::rate::MAX_NAMED_LIMITS);
        assert!(merged.get(name("extra")).is_some());
    }

    #[test]
    fn entries_are_parsed_with_the_library_messages() {
        assert!(
            "Writes=1/1s"
                .parse::<LimitChange>()
                .unwrap_err()
                .contains("invalid limit name")
        );
        assert!(
            "None=none"
                .parse::<LimitChange>()
                .unwrap_err()
                .contains("invalid limit name")
        );
        assert!(
            "writes"
                .parse::<LimitEntry>()
                .unwrap_err()
                .contains("invalid named limit")
        );
        // `none` only removes: `create` has nothing to remove.
        assert!("writes=none".parse::<LimitEntry>().is_err());
        assert_eq!(change("writes=none").limit, None);
    }
}

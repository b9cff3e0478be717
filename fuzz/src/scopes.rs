//! `scopes`: scope validation and matching.
//!
//! Input: UTF-8 text; line 1 lists scopes granted to a key, line 2 the scopes a route
//! requires, space-separated (every line, whole, is also tried as one scope).
//! Invariants: `Scope::new` accepts exactly the documented grammar (`:`-separated segments of
//! letters, digits, `_`, `-`, `.`, at most 128 bytes, `*` only as the whole last segment, no
//! bare `*`); `grants` is exactly "equal, or `resource:*` covering a longer `resource:…`"
//! (so no scope grants everything, and `orders:*` does not grant `orders` nor `ordersx:read`);
//! `ScopeRequirement::all` and `any` are met exactly when every / some required scope is granted
//! (an empty `any` is met); refusals quote at most 136 characters of the input.

use keygate::scope::{MAX_SCOPE_LEN, any_grants};
use keygate::{Scope, ScopeRequirement};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let granted_text = lines.next().unwrap_or("");
    let required_text = lines.next().unwrap_or("");
    for line in text.split('\n') {
        let _ = check_new(line);
    }
    let granted: Vec<Scope> = granted_text
        .split(' ')
        .filter_map(|s| check_new(s).ok())
        .collect();
    let required: Vec<&str> = required_text.split(' ').collect();
    for g in &granted {
        for r in &required {
            assert_eq!(
                g.grants(r),
                reference_grants(g.as_str(), r),
                "{g} grants {r}?"
            );
        }
    }
    let valid: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| reference_valid(r))
        .collect();
    let met = |r: &&str| any_grants(&granted, r);
    match ScopeRequirement::all(&required) {
        Ok(all) => {
            assert_eq!(valid.len(), required.len());
            assert_eq!(all.is_met_by(&granted), valid.iter().all(met));
            assert_eq!(all.scope_param().as_ref(), valid.join(" "));
        }
        Err(_) => assert!(valid.len() < required.len()),
    }
    match ScopeRequirement::any(&valid) {
        Ok(any) => assert_eq!(
            any.is_met_by(&granted),
            valid.is_empty() || valid.iter().any(met)
        ),
        Err(e) => panic!("refused valid scopes: {e}"),
    }
}

fn check_new(text: &str) -> Result<Scope, ()> {
    match Scope::new(text) {
        Ok(scope) => {
            assert!(reference_valid(text), "accepted {text:?}");
            assert_eq!(scope.as_str(), text);
            assert_eq!(text.parse::<Scope>().as_ref(), Ok(&scope));
            Ok(scope)
        }
        Err(error) => {
            assert!(!reference_valid(text), "refused {text:?}");
            // At most 136 characters quoted, each escaped to at most 10 (`\u{10ffff}`).
            let quoted = error.to_string().chars().count();
            assert!(quoted <= 10 * (MAX_SCOPE_LEN + 8) + 200, "{quoted}");
            Err(())
        }
    }
}

/// The documented grammar, read character by character.
fn reference_valid(scope: &str) -> bool {
    if scope.is_empty() || scope.len() > MAX_SCOPE_LEN {
        return false;
    }
    let segments: Vec<&str> = scope.split(':').collect();
    let last = segments.len() - 1;
    if segments.len() == 1 && scope == "*" {
        return false;
    }
    segments.iter().enumerate().all(|(i, segment)| {
        if *segment == "*" {
            return i == last;
        }
        !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    })
}

/// The documented matching rule.
fn reference_grants(granted: &str, required: &str) -> bool {
    if granted == required {
        return true;
    }
    match granted.strip_suffix(":*") {
        Some(resource) => {
            required.len() > resource.len() + 1
                && required.starts_with(resource)
                && required.as_bytes()[resource.len()] == b':'
        }
        None => false,
    }
}

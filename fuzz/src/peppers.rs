//! `peppers`: `Peppers::parse`, the reader of `KEYGATE_PEPPER`.
//!
//! Input: the variable's text (`2:SECRET,1:OLDSECRET`, or one bare `SECRET`); not UTF-8 is
//! skipped.
//! Invariants: an accepted configuration has a current pepper whose digests verify (and a
//! changed key's do not); every configured version is loaded; versions are distinct and the first entry is
//! current; neither the `Debug` of the peppers nor any error message shows a secret (every
//! secret is at least 32 bytes, so a hit is no coincidence of short strings).

use keygate::Peppers;
use keygate::pepper::MIN_PEPPER_LEN;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Every part of the input that could be a secret: each entry after its first colon, each
    // entry whole, and the whole text.
    let secrets: Vec<&str> = text
        .split(',')
        .flat_map(|entry| [entry.split_once(':').map_or(entry, |(_, s)| s), entry])
        .chain([text])
        .map(str::trim)
        .filter(|s| s.len() >= MIN_PEPPER_LEN)
        .collect();
    match Peppers::parse(text) {
        Ok(peppers) => {
            let shown = format!("{peppers:?}");
            for secret in &secrets {
                assert!(!shown.contains(secret), "Debug shows a secret: {shown}");
            }
            let current = peppers.current().version();
            assert_eq!(
                peppers.get(current).map(keygate::Pepper::version),
                Some(current)
            );
            let entries = text.split(',').count();
            let mut versions = Vec::new();
            for entry in text.trim().split(',') {
                let version = entry
                    .trim()
                    .split_once(':')
                    .and_then(|(v, _)| v.trim().parse::<u32>().ok())
                    .unwrap_or(1);
                versions.push(version);
            }
            if entries > 1 {
                assert_eq!(versions.first(), Some(&current));
                for version in &versions {
                    assert!(peppers.get(*version).is_some(), "version {version} lost");
                }
            }
            let (version, digest) = peppers.digest(b"0123456789AB_secret");
            assert_eq!(version, current);
            assert!(peppers.verify(version, b"0123456789AB_secret", &digest));
            assert!(!peppers.verify(version, b"0123456789AB_secreT", &digest));
        }
        Err(error) => {
            for shown in [error.to_string(), format!("{error:?}")] {
                for secret in &secrets {
                    assert!(!shown.contains(secret), "error shows a secret: {shown}");
                }
            }
        }
    }
}

//! `peppers`: `Peppers::parse`, the reader of `KEYGATE_PEPPER`.
//!
//! Input: the variable's text (`2:SECRET,1:OLDSECRET`, or one bare `SECRET`); not UTF-8 is
//! skipped.
//! Invariants: an accepted configuration has a current pepper whose digests verify (and a
//! changed key's do not); every configured version is loaded; versions are distinct and the first entry is
//! current; neither the `Debug` of the peppers nor any error message shows a secret (every
//! secret is at least 32 bytes, so a hit is no coincidence of short strings).

use keygate::pepper::{MIN_PEPPER_LEN, PepperError};
use keygate::{Pepper, Peppers};

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
            // The same versions under another secret: whatever `Debug` shows that also shows
            // there is not the secret (the input may spell out `Debug`'s own text).
            let listed = if entries > 1 { versions } else { vec![current] };
            let stand_in = |version| Pepper::new(version, [b'x'; MIN_PEPPER_LEN]);
            let reference = listed[1..].iter().try_fold(
                Peppers::new(stand_in(listed[0]).unwrap()),
                |all, version| all.with_previous(stand_in(*version)?),
            );
            let reference = format!("{:?}", reference.unwrap());
            let shown = format!("{peppers:?}");
            for secret in &secrets {
                assert!(
                    !shown.contains(secret) || reference.contains(secret),
                    "Debug shows a secret: {shown}"
                );
            }
            let (version, digest) = peppers.digest(b"0123456789AB_secret");
            assert_eq!(version, current);
            assert!(peppers.verify(version, b"0123456789AB_secret", &digest));
            assert!(!peppers.verify(version, b"0123456789AB_secreT", &digest));
        }
        Err(error) => {
            // Errors carry numbers only: with digits taken out, each reads as one of the
            // variants' fixed texts, so no input text can be in it.
            let digitless = |text: String| text.replace(|c: char| c.is_ascii_digit(), "");
            let known = [
                PepperError::TooShort { version: 0 },
                PepperError::DuplicateVersion { version: 0 },
                PepperError::BadEntry { position: 0 },
                PepperError::NotSet,
            ];
            let shown = digitless(error.to_string());
            assert!(
                known.iter().any(|k| digitless(k.to_string()) == shown),
                "{shown}"
            );
            let shown = digitless(format!("{error:?}"));
            assert!(
                known.iter().any(|k| digitless(format!("{k:?}")) == shown),
                "{shown}"
            );
        }
    }
}

//! `key_parse`: the key format's prefix rules and `KeyFormat::parse`.
//!
//! Input: `PREFIX\nKEY` (any bytes), or just `KEY` for the prefix [`PREFIX`](crate::PREFIX).
//! Invariants: `KeyFormat::new` accepts exactly the prefixes the documented rules allow;
//! `parse` gives exactly the answer of a plain reference parser written from the documented
//! format (length, separators, alphabet, prefix, checksum computed here); an accepted key's id
//! is the one in the text; no `Debug` output or error message shows the secret.

use keygate::key::{FormatError, KeyFormat, MAX_PREFIX_LEN};
use keygate::{KeyId, key};

/// Runs one input.
pub fn run(data: &[u8]) {
    let (prefix, key) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => match std::str::from_utf8(&data[..at]) {
            Ok(prefix) => (prefix, &data[at + 1..]),
            Err(_) => return,
        },
        None => (crate::PREFIX, data),
    };
    let format = match KeyFormat::new(prefix) {
        Ok(format) => {
            assert!(valid_prefix(prefix), "accepted prefix {prefix:?}");
            assert_eq!(format.prefix(), prefix);
            format
        }
        Err(error) => {
            assert!(!valid_prefix(prefix), "refused prefix {prefix:?}");
            // The message quotes at most 64 characters of the prefix, each escaped to at most
            // 10 (`\u{10ffff}`).
            assert!(error.to_string().chars().count() <= 64 * 10 + 200);
            return;
        }
    };
    let expected = reference_parse(prefix, key);
    match format.parse(key) {
        Ok(parsed) => {
            assert_eq!(expected, Ok(()), "accepted {key:?}");
            assert_eq!(key.len(), format.key_len());
            let id_at = prefix.len() + 1;
            assert_eq!(
                parsed.id().as_str().as_bytes(),
                &key[id_at..id_at + KeyId::LEN]
            );
            let presented = parsed.to_presented();
            assert_eq!(presented.id(), parsed.id());
            let secret = &key[id_at + KeyId::LEN + 1..];
            for shown in [format!("{parsed:?}"), format!("{presented:?}")] {
                assert!(!crate::contains(shown.as_bytes(), secret), "{shown}");
            }
        }
        Err(error) => {
            assert_eq!(expected, Err(error), "{key:?}");
            assert!(error.to_string().len() < 64);
        }
    }
}

/// The prefix rules of `KeyFormat`'s documentation.
fn valid_prefix(prefix: &str) -> bool {
    let b = prefix.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_PREFIX_LEN
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'_'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// `{prefix}_{id}_{secret}{crc}` read the obvious way: the documented checks, in the
/// documented order of precedence (shape, then prefix, then checksum).
fn reference_parse(prefix: &str, key: &[u8]) -> Result<(), FormatError> {
    let tail_len = 1 + KeyId::LEN + 1 + key::SECRET_LEN + key::CHECKSUM_LEN;
    if key.len() <= tail_len || key.len() > key::MAX_KEY_LEN {
        return Err(FormatError::Malformed);
    }
    let (key_prefix, tail) = key.split_at(key.len() - tail_len);
    let alnum = |s: &[u8]| s.iter().all(u8::is_ascii_alphanumeric);
    let shape = tail[0] == b'_'
        && alnum(&tail[1..=KeyId::LEN])
        && tail[KeyId::LEN + 1] == b'_'
        && alnum(&tail[KeyId::LEN + 2..])
        && key_prefix
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    if !shape {
        return Err(FormatError::Malformed);
    }
    if key_prefix != prefix.as_bytes() {
        return Err(FormatError::WrongPrefix);
    }
    let (body, crc) = key.split_at(key.len() - key::CHECKSUM_LEN);
    if crate::checksum(body) != crc {
        return Err(FormatError::BadChecksum);
    }
    Ok(())
}

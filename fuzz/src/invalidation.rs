//! `invalidation`: what a received invalidation message evicts.
//!
//! Input: the payload bytes of a Redis pub/sub message (`keygate_redis`'s decoding); when
//! UTF-8, also the text of a PostgreSQL `NOTIFY` (`Invalidated::from_message`, which
//! `keygate_sqlx` applies to the payload as received).
//! Invariants: a message evicts one key only when its trimmed text is exactly that key's id;
//! anything else (bad UTF-8, unknown text, `*`) evicts everything, never nothing; what a
//! publisher sends reads back as what it meant.

use keygate::{Invalidated, KeyId};

/// Runs one input.
pub fn run(data: &[u8]) {
    let from_redis = keygate_redis::fuzzing::message_payload(data);
    match std::str::from_utf8(data) {
        Ok(text) => {
            let from_postgres = Invalidated::from_message(text);
            assert_eq!(from_redis, from_postgres);
            check(text, from_postgres);
        }
        Err(_) => assert_eq!(from_redis, Invalidated::All),
    }
}

fn check(text: &str, read: Invalidated) {
    match read {
        Invalidated::Key(id) => {
            assert_eq!(text.trim(), id.as_str());
            assert_eq!(text.trim().parse::<KeyId>(), Ok(id));
        }
        _ => {
            assert_eq!(read, Invalidated::All);
            assert!(text.trim().parse::<KeyId>().is_err());
        }
    }
    assert_eq!(Invalidated::from_message(&read.to_message()), read);
}

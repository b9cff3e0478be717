//! Notices: things about a key its owner should hear of (it expires soon, it leaked), sent to
//! a [`NoticeSink`] once per key per occasion.
//!
//! - [`Notice`]: what happened, to which key ([`NoticeKey`]: id, name, owner — never a secret
//!   or a digest), with a stable [`Notice::event_id`] so receivers can drop repeats.
//! - [`NoticeSink`]: where notices go. [`NoticeSink::notify`] is synchronous and must return
//!   at once (queue and deliver in the background): callers on a request path never wait on
//!   it. `keygate-webhook` ships a signed-webhook sink; [`MemoryNotices`] keeps them in memory.
//! - [`ExpiringSweep`]: a background task that finds active keys expiring within a window and
//!   sends [`Notice::ExpiringSoon`] once per key per expiry time.
//!
//! Sources today: the sweep (expiring soon) and `keygate-leaks` (leaked). The enum is
//! `#[non_exhaustive]` so further occasions (canary tripped, idle-disabled, quota low) can
//! be added without breaking sinks, which should ignore or forward kinds they do not know:
//! [`Notice::kind`] and [`Notice::data`] describe any notice generically.
//!
//! # Delivery and dedup
//! Delivery is at least once: a sink may deliver a notice twice (a retry after a timeout), and
//! a restarted sweep sends its notices again (what was sent is remembered in memory only).
//! Two notices of the same occasion have the same [`Notice::event_id`]; receivers that keep
//! the ids they have handled see each occasion exactly once. See `docs/notices.md`.

mod sweep;

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::key::KeyId;
use crate::record::KeyRecord;

pub use sweep::{DEFAULT_SWEEP_INTERVAL, ExpiringSweep, SweepHandle};

/// The key a notice is about: its public id, name and owner. Never its secret or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NoticeKey {
    /// The key's public id.
    pub id: KeyId,
    /// The key's name.
    pub name: String,
    /// The key's owner, if it has one.
    pub owner: Option<String>,
}

impl NoticeKey {
    /// The key `id`, named `name`, owned by `owner`.
    #[must_use]
    pub fn new(id: KeyId, name: impl Into<String>, owner: Option<String>) -> Self {
        Self {
            id,
            name: name.into(),
            owner,
        }
    }
}

impl From<&KeyRecord> for NoticeKey {
    fn from(record: &KeyRecord) -> Self {
        Self::new(record.id, record.name.clone(), record.owner.clone())
    }
}

/// Something a key's owner should hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The key is active and expires at `expires_at`, within the sweep's window.
    ExpiringSoon {
        /// The key.
        key: NoticeKey,
        /// When it stops working.
        expires_at: SystemTime,
    },
    /// The key was found in public (reported by GitHub secret scanning) at `url`.
    Leaked {
        /// The key.
        key: NoticeKey,
        /// Where it was found, as reported (the key itself replaced if the URL held it).
        url: String,
    },
}

impl Notice {
    /// The notice's kind, as in webhook payloads: `key.expiring_soon`, `key.leaked`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ExpiringSoon { .. } => "key.expiring_soon",
            Self::Leaked { .. } => "key.leaked",
        }
    }

    /// The key the notice is about.
    #[must_use]
    pub fn key(&self) -> &NoticeKey {
        match self {
            Self::ExpiringSoon { key, .. } | Self::Leaked { key, .. } => key,
        }
    }

    /// The occasion's stable id, the same every time this occasion is noticed (after a retry,
    /// a restart, on another instance): `evt_` and 32 lowercase hex digits of SHA-256 over the
    /// kind, the key id and what makes the occasion (the expiry time in milliseconds; the
    /// leak's URL). A key whose expiry changes gets a new id; a key reported at a second URL too.
    #[must_use]
    pub fn event_id(&self) -> String {
        let occasion = match self {
            Self::ExpiringSoon { expires_at, .. } => unix_millis(*expires_at).to_string(),
            Self::Leaked { url, .. } => url.clone(),
        };
        let mut hash = Sha256::new();
        for part in [self.kind(), self.key().id.as_str(), &occasion] {
            // Length-prefixed, so no two different triples hash the same input.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let mut id = String::with_capacity(36);
        id.push_str("evt_");
        for byte in &digest[..16] {
            id.push(char::from(HEX[usize::from(byte >> 4)]));
            id.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        id
    }

    /// The notice's own fields as a JSON object (a webhook payload's `data`): `key`
    /// (`{id, name, owner}`) and, per kind, `expires_at` (Unix seconds) or `url`.
    #[must_use]
    pub fn data(&self) -> serde_json::Value {
        let key = self.key();
        let key =
            serde_json::json!({ "id": key.id.as_str(), "name": key.name, "owner": key.owner });
        match self {
            Self::ExpiringSoon { expires_at, .. } => {
                serde_json::json!({ "key": key, "expires_at": unix_seconds(*expires_at) })
            }
            Self::Leaked { url, .. } => serde_json::json!({ "key": key, "url": url }),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn unix_millis(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// Whole seconds since the Unix epoch (0 before it).
#[must_use]
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Where notices go. Object safe (`Arc<dyn NoticeSink>`).
///
/// # Never blocks
/// [`notify`](NoticeSink::notify) is called where waiting is not acceptable (the leak endpoint
/// answering GitHub; later, the request path for canary keys). It must return at once: hand the
/// notice to a bounded queue and deliver it from a background task, dropping (and counting)
/// what does not fit.
pub trait NoticeSink: Debug + Send + Sync + 'static {
    /// Takes one notice for delivery, without waiting.
    fn notify(&self, notice: Notice);
}

impl<S: NoticeSink + ?Sized> NoticeSink for Arc<S> {
    fn notify(&self, notice: Notice) {
        (**self).notify(notice);
    }
}

/// A sink that keeps notices in memory, in order, for tests and examples. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct MemoryNotices(Arc<Mutex<Vec<Notice>>>);

impl MemoryNotices {
    /// An empty sink.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The notices received so far.
    #[must_use]
    pub fn all(&self) -> Vec<Notice> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl NoticeSink for MemoryNotices {
    fn notify(&self, notice: Notice) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(notice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(id: &str) -> NoticeKey {
        NoticeKey::new(id.parse::<KeyId>().unwrap(), "billing", Some("team".into()))
    }

    #[test]
    fn event_ids_are_stable_per_occasion() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let expiring = |id, at| Notice::ExpiringSoon {
            key: key(id),
            expires_at: at,
        };
        let a = expiring("abcdefghijkl", at).event_id();
        assert_eq!(a, expiring("abcdefghijkl", at).event_id());
        assert_eq!(a.len(), 36);
        assert!(a.starts_with("evt_"));
        assert_ne!(a, expiring("abcdefghijkm", at).event_id());
        assert_ne!(
            a,
            expiring("abcdefghijkl", at + Duration::from_secs(1)).event_id()
        );
        let leaked = |url: &str| Notice::Leaked {
            key: key("abcdefghijkl"),
            url: url.into(),
        };
        assert_eq!(
            leaked("https://a").event_id(),
            leaked("https://a").event_id()
        );
        assert_ne!(
            leaked("https://a").event_id(),
            leaked("https://b").event_id()
        );
    }

    #[test]
    fn data_names_the_key_and_never_more() {
        let notice = Notice::ExpiringSoon {
            key: key("abcdefghijkl"),
            expires_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        assert_eq!(
            notice.data(),
            serde_json::json!({
                "key": { "id": "abcdefghijkl", "name": "billing", "owner": "team" },
                "expires_at": 1_800_000_000_u64,
            })
        );
        assert_eq!(notice.kind(), "key.expiring_soon");
    }
}

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
//! - [`IdleSweep`]: a background task that disables the keys unused for longer than the
//!   [lifetime policy](crate::policy)'s `max_idle` and sends [`Notice::IdleDisabled`].
//!
//! Sources today: the sweeps (expiring soon, idle-disabled), `keygate-leaks` (leaked) and the
//! verifier ([`VerifierBuilder::notices`](crate::VerifierBuilder::notices): canary tripped).
//! The enum is `#[non_exhaustive]` so further occasions (quota low) can be added without
//! breaking sinks, which should ignore or forward kinds they do not know: [`Notice::kind`] and
//! [`Notice::data`] describe any notice generically.
//!
//! # Delivery and dedup
//! Delivery is at least once: a sink may deliver a notice twice (a retry after a timeout), and
//! a restarted sweep sends its notices again (what was sent is remembered in memory only).
//! Two notices of the same occasion have the same [`Notice::event_id`]; receivers that keep
//! the ids they have handled see each occasion exactly once. See `docs/notices.md`.

mod sweep;

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::identity::Identity;
use crate::key::KeyId;
use crate::record::KeyRecord;

pub use sweep::{DEFAULT_SWEEP_INTERVAL, ExpiringSweep, IdleSweep, SweepHandle};

/// How long one canary occasion lasts: a canary presented again within the same hour (of
/// Unix time) is the same occasion, noticed once.
pub const CANARY_OCCASION: std::time::Duration = std::time::Duration::from_secs(3600);

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
    /// The key was disabled by the [`IdleSweep`]: unused since `idle_since` (its last use,
    /// else its creation or last change), longer than the lifetime policy's `max_idle`.
    IdleDisabled {
        /// The key.
        key: NoticeKey,
        /// Since when it was idle.
        idle_since: SystemTime,
    },
    /// A [canary](crate::NewKey::canary) key was presented at `at` by `client_ip`: someone
    /// holds it. One notice per key per hour of Unix time ([`CANARY_OCCASION`]) per process;
    /// the audit trail has every attempt.
    CanaryTripped {
        /// The key.
        key: NoticeKey,
        /// The client's address, when known.
        client_ip: Option<IpAddr>,
        /// When it was presented (the first time in the occasion).
        at: SystemTime,
    },
}

impl Notice {
    /// The notice's kind, as in webhook payloads: `key.expiring_soon`, `key.leaked`,
    /// `key.idle_disabled`, `key.canary_tripped`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ExpiringSoon { .. } => "key.expiring_soon",
            Self::Leaked { .. } => "key.leaked",
            Self::IdleDisabled { .. } => "key.idle_disabled",
            Self::CanaryTripped { .. } => "key.canary_tripped",
        }
    }

    /// The key the notice is about.
    #[must_use]
    pub fn key(&self) -> &NoticeKey {
        match self {
            Self::ExpiringSoon { key, .. }
            | Self::Leaked { key, .. }
            | Self::IdleDisabled { key, .. }
            | Self::CanaryTripped { key, .. } => key,
        }
    }

    /// The occasion's stable id, the same every time this occasion is noticed (after a retry,
    /// a restart, on another instance): `evt_` and 32 lowercase hex digits of SHA-256 over the
    /// kind, the key id and what makes the occasion (the expiry time in milliseconds; the
    /// leak's URL; the idle-since time in milliseconds; the hour of a canary's use). A key whose
    /// expiry changes gets a new id; a key reported at a second URL too.
    #[must_use]
    pub fn event_id(&self) -> String {
        let occasion = match self {
            Self::ExpiringSoon { expires_at, .. } => unix_millis(*expires_at).to_string(),
            Self::Leaked { url, .. } => url.clone(),
            Self::IdleDisabled { idle_since, .. } => unix_millis(*idle_since).to_string(),
            Self::CanaryTripped { at, .. } => canary_occasion(*at).to_string(),
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
    /// (`{id, name, owner}`) and, per kind, `expires_at` (Unix seconds), `url`, `idle_since`
    /// (Unix seconds) or `client_ip` (a string or null) and `at` (Unix seconds).
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
            Self::IdleDisabled { idle_since, .. } => {
                serde_json::json!({ "key": key, "idle_since": unix_seconds(*idle_since) })
            }
            Self::CanaryTripped { client_ip, at, .. } => serde_json::json!({
                "key": key,
                "client_ip": client_ip.map(|ip| ip.to_string()),
                "at": unix_seconds(*at),
            }),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The canary occasion `at` falls in: the hour of Unix time.
pub(crate) fn canary_occasion(at: SystemTime) -> u64 {
    unix_seconds(at) / CANARY_OCCASION.as_secs()
}

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

/// The verifier's canary notices ([`VerifierBuilder::notices`](crate::VerifierBuilder::notices)):
/// one [`Notice::CanaryTripped`] per key per [`CANARY_OCCASION`], remembered for the current
/// occasion only (bounded).
pub(crate) struct CanaryNotices {
    sink: Arc<dyn NoticeSink>,
    /// The occasion each canary was last noticed in.
    noticed: Mutex<HashMap<KeyId, u64>>,
}

/// Canaries remembered at most (beyond, the current occasion's are kept, or none).
const CANARY_MEMORY: usize = 4_096;

impl CanaryNotices {
    pub(crate) fn new(sink: Arc<dyn NoticeSink>) -> Self {
        Self {
            sink,
            noticed: Mutex::new(HashMap::new()),
        }
    }

    /// Canary `identity` was presented by `client_ip` at `at`: noticed unless it already was
    /// in this occasion. Never waits on delivery ([`NoticeSink::notify`] returns at once).
    pub(crate) fn tripped(&self, identity: &Identity, client_ip: Option<IpAddr>, at: SystemTime) {
        let occasion = canary_occasion(at);
        {
            let mut noticed = self.noticed.lock().unwrap_or_else(PoisonError::into_inner);
            if noticed.get(&identity.key_id()) == Some(&occasion) {
                return;
            }
            if noticed.len() >= CANARY_MEMORY {
                noticed.retain(|_, seen| *seen == occasion);
                if noticed.len() >= CANARY_MEMORY {
                    noticed.clear();
                }
            }
            noticed.insert(identity.key_id(), occasion);
        }
        self.sink.notify(Notice::CanaryTripped {
            key: NoticeKey::new(
                identity.key_id(),
                identity.name(),
                identity.owner().map(str::to_owned),
            ),
            client_ip,
            at,
        });
    }
}

impl std::fmt::Debug for CanaryNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanaryNotices")
            .field("sink", &self.sink)
            .finish_non_exhaustive()
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
    fn idle_and_canary_occasions() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let idle = |since| Notice::IdleDisabled {
            key: key("abcdefghijkl"),
            idle_since: since,
        };
        assert_eq!(idle(at).event_id(), idle(at).event_id());
        assert_ne!(
            idle(at).event_id(),
            idle(at + Duration::from_secs(1)).event_id()
        );
        assert_eq!(idle(at).kind(), "key.idle_disabled");
        assert_eq!(
            idle(at).data(),
            serde_json::json!({
                "key": { "id": "abcdefghijkl", "name": "billing", "owner": "team" },
                "idle_since": 1_800_000_000_u64,
            })
        );
        let tripped = |at, ip: &str| Notice::CanaryTripped {
            key: key("abcdefghijkl"),
            client_ip: Some(ip.parse().unwrap()),
            at,
        };
        // 1_800_000_000 starts an hour of Unix time: the same hour is one occasion, whoever
        // the client; the next hour is another.
        let first = tripped(at, "203.0.113.7").event_id();
        assert_eq!(
            first,
            tripped(at + Duration::from_secs(60), "198.51.100.1").event_id()
        );
        assert_ne!(
            first,
            tripped(at + Duration::from_secs(3600), "203.0.113.7").event_id()
        );
        assert_ne!(first, idle(at).event_id());
        assert_eq!(
            tripped(at, "203.0.113.7").data()["client_ip"],
            serde_json::json!("203.0.113.7")
        );
        assert_eq!(tripped(at, "203.0.113.7").kind(), "key.canary_tripped");
    }

    /// A canary presented again and again is noticed once per hour per key, with the first
    /// client's address; real keys and unknown keys are never noticed.
    #[tokio::test]
    async fn a_verifier_notices_a_canary_once_per_occasion() {
        use crate::clock::{Clock, ManualClock};
        use crate::{HttpRequestView, Keyring, MemoryStore, NewKey, Reason, Verifier};

        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let store = MemoryStore::with_clock(clock.clone());
        let notices = MemoryNotices::new();
        let verifier = Verifier::builder(Keyring::development("acme").unwrap(), store)
            .clock(clock.clone())
            .notices(notices.clone())
            .build();
        let admin = verifier.admin();
        let canary = admin
            .create_key(NewKey::new("decoy").owner("sec").canary())
            .await
            .unwrap();
        let real = admin.create_key(NewKey::new("real")).await.unwrap();
        let other = admin
            .create_key(NewKey::new("decoy 2").canary())
            .await
            .unwrap();
        let uri = http::Uri::from_static("/orders");
        let present = |key: String, ip: &'static str| {
            let verifier = verifier.clone();
            let uri = uri.clone();
            async move {
                let mut headers = http::HeaderMap::new();
                headers.insert(
                    http::header::AUTHORIZATION,
                    format!("Bearer {key}").parse().unwrap(),
                );
                verifier
                    .verify_request(&HttpRequestView::new(
                        &headers,
                        &uri,
                        Some(ip.parse().unwrap()),
                    ))
                    .await
            }
        };
        let secret = |created: &crate::CreatedKey| created.key.expose_secret().to_owned();
        for ip in ["203.0.113.7", "198.51.100.1", "203.0.113.7"] {
            let refused = present(secret(&canary), ip).await.unwrap_err();
            assert_eq!(refused.reason(), Reason::Canary);
        }
        assert!(present(secret(&real), "203.0.113.7").await.is_ok());
        assert_eq!(notices.all().len(), 1);
        assert_eq!(
            notices.all()[0],
            Notice::CanaryTripped {
                key: NoticeKey::new(canary.record.id, "decoy", Some("sec".into())),
                client_ip: Some("203.0.113.7".parse().unwrap()),
                at: clock.now(),
            }
        );
        // Another canary is its own occasion; the next hour is a new one.
        present(secret(&other), "192.0.2.1").await.unwrap_err();
        clock.advance(Duration::from_secs(3600));
        present(secret(&canary), "192.0.2.1").await.unwrap_err();
        present(secret(&canary), "192.0.2.1").await.unwrap_err();
        let all = notices.all();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].key().id, other.record.id);
        assert_eq!(all[2].key().id, canary.record.id);
        assert_ne!(all[2].event_id(), all[0].event_id());
        // No secret in what a receiver gets.
        for notice in &all {
            let text = notice.data().to_string();
            assert!(!text.contains(&secret(&canary)) && !text.contains(&secret(&other)));
        }
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

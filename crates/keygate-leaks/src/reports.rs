//! [`LeakReports`]: the framework-agnostic endpoint. It checks a report's signature, looks
//! every reported token up, acts on the deployment's keys and answers with feedback.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use keygate::audit::Action;
use keygate::notice::{Notice, NoticeKey, NoticeSink};
use keygate::record::KeyChange;
use keygate::store::StoreError;
use keygate::{Admin, KeyAdmin, KeyRecord, Keyring};
use p256::ecdsa::Signature;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::keys::{FetchedKeys, KeySource};

/// The header naming the key a report was signed with (`key_identifier` in GitHub's keys).
pub const KEY_IDENTIFIER_HEADER: &str = "github-public-key-identifier";
/// The header carrying the report's signature: base64 of an ASN.1 DER ECDSA signature.
pub const SIGNATURE_HEADER: &str = "github-public-key-signature";

/// The largest report body read by default: 1 MiB. Larger ones are answered 413.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// The actor named in the audit events of changes the endpoint makes.
pub const ACTOR: &str = "github-secret-scanning";

/// The longest source URL kept in an audit event, in characters.
const MAX_URL_CHARS: usize = 1024;

/// What the endpoint does to a key reported leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LeakAction {
    /// Revoke the key (for good). The default: GitHub recommends treating every reported
    /// secret as public and compromised.
    #[default]
    Revoke,
    /// Disable the key (it can be enabled again).
    Disable,
    /// Change nothing; answer the feedback and log a warning with the key's id and the URL.
    ReportOnly,
}

/// The endpoint's answer, for an adapter to send as is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeakResponse {
    /// The status: 200 with the feedback; 401, 400, 413 or 503 otherwise (see
    /// [`LeakReports::handle`]).
    pub status: StatusCode,
    /// The body's media type: `application/json` for the feedback, `text/plain; charset=utf-8` otherwise.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl LeakResponse {
    fn text(status: StatusCode, message: &'static str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from_static(message.as_bytes()),
        }
    }
}

/// The leak endpoint: answers the reports of GitHub's
/// [secret-scanning partner program](https://docs.github.com/en/code-security/secret-scanning/secret-scanning-partnership-program/secret-scanning-partner-program).
///
/// Build it with [`LeakReports::builder`] from an [`Admin`] (the changes go through it: audited,
/// published on its invalidation channel) and the deployment's [`Keyring`] (to check a
/// reported token's format, checksum and secret). Mount it with the `axum` or `actix`
/// feature's adapter, or call [`LeakReports::handle`] from any framework. Cheap to clone.
///
/// ```
/// use keygate::{Admin, Keyring, MemoryStore};
/// use keygate_leaks::{LeakAction, LeakReports, StaticKeys};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let keyring = Keyring::development("acme_live")?;
/// let admin = Admin::builder(MemoryStore::new()).build();
/// let leaks = LeakReports::builder(admin, keyring)
///     .action(LeakAction::Revoke)
///     .key_source(StaticKeys::new()) // FetchedKeys::github() when not given
///     .build();
/// # let _ = leaks;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LeakReports {
    inner: Arc<Inner>,
}

struct Inner {
    admin: Admin,
    keyring: Keyring,
    action: LeakAction,
    keys: Arc<dyn KeySource>,
    max_body: usize,
    notices: Option<Arc<dyn NoticeSink>>,
}

/// Configures [`LeakReports`] (see [`LeakReports::builder`]). Defaults: action
/// [`LeakAction::Revoke`], keys [`FetchedKeys::github`], body limit [`DEFAULT_MAX_BODY`], no
/// notices.
#[must_use]
pub struct LeakReportsBuilder {
    admin: Admin,
    keyring: Keyring,
    action: LeakAction,
    keys: Option<Arc<dyn KeySource>>,
    max_body: usize,
    notices: Option<Arc<dyn NoticeSink>>,
}

impl LeakReportsBuilder {
    /// What to do to a reported key.
    pub fn action(mut self, action: LeakAction) -> Self {
        self.action = action;
        self
    }

    /// Where the signing keys come from.
    pub fn key_source(mut self, keys: impl KeySource) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// The largest body read, in bytes; larger ones are answered 413.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body = limit;
        self
    }

    /// Where to send a [`Notice::Leaked`] (key id, name, owner and the URL; never the token)
    /// for each reported token that is one of the deployment's keys, whatever the
    /// [`LeakAction`]. A report sent again (GitHub retries) gives the same notice, with the
    /// same [`Notice::event_id`], for receivers to drop. The sink must not wait
    /// ([`NoticeSink::notify`]), so it never delays the answer to GitHub.
    pub fn notices(mut self, sink: impl NoticeSink) -> Self {
        self.notices = Some(Arc::new(sink));
        self
    }

    /// Builds the endpoint. No I/O.
    pub fn build(self) -> LeakReports {
        LeakReports {
            inner: Arc::new(Inner {
                admin: self.admin.actor(ACTOR),
                keyring: self.keyring,
                action: self.action,
                keys: self.keys.unwrap_or_else(|| Arc::new(FetchedKeys::github())),
                max_body: self.max_body,
                notices: self.notices,
            }),
        }
    }
}

impl fmt::Debug for LeakReportsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakReportsBuilder")
            .field("action", &self.action)
            .field("notices", &self.notices.is_some())
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// One match in a report. The token is never logged: `Debug` leaves it out.
#[derive(Deserialize)]
struct Reported {
    token: String,
    #[serde(rename = "type", default)]
    token_type: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    source: String,
}

/// One entry of the feedback, in the program's hashed form.
#[derive(Serialize)]
struct Feedback<'a> {
    token_hash: String,
    token_type: &'a str,
    label: &'static str,
}

impl LeakReports {
    /// Starts configuring the endpoint: changes go through `admin` (its actor becomes
    /// [`ACTOR`]), tokens are checked against `keyring`, which must hold every pepper version
    /// the store's keys use (a key under a missing version is answered `false_positive`).
    pub fn builder(admin: Admin, keyring: Keyring) -> LeakReportsBuilder {
        LeakReportsBuilder {
            admin,
            keyring,
            action: LeakAction::default(),
            keys: None,
            max_body: DEFAULT_MAX_BODY,
            notices: None,
        }
    }

    /// The largest body the adapters read.
    #[must_use]
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body
    }

    /// Answers one report: `headers` and the raw `body` of GitHub's `POST`.
    ///
    /// | status | when | changed |
    /// | --- | --- | --- |
    /// | 413 | `body` is larger than the limit | nothing |
    /// | 401 | a signature header is missing, the identifier is not among the keys, the signature is not base64 DER, or it does not match the body | nothing |
    /// | 503 | the keys cannot be fetched, or the store does not answer | keys before the failing one may have been changed; GitHub's retry finds them changed (idempotent) |
    /// | 400 | the signed body is not a JSON array of `{token, type, url, source}` | nothing |
    /// | 200 | feedback: one `{token_hash, token_type, label}` per reported match, in order | matched keys, per the [`LeakAction`] |
    ///
    /// A token is `true_positive` when it is one of the deployment's keys (format, checksum,
    /// id and secret all match), whatever the key's state; otherwise `false_positive`,
    /// and nothing is done. A key already revoked (or, for [`LeakAction::Disable`], already
    /// disabled) is not changed again: reports are idempotent.
    pub async fn handle(&self, headers: &HeaderMap, body: &[u8]) -> LeakResponse {
        match self.process(headers, body).await {
            Ok(response) | Err(response) => response,
        }
    }

    async fn process(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<LeakResponse, LeakResponse> {
        if body.len() > self.inner.max_body {
            return Err(too_large());
        }
        self.check_signature(headers, body).await?;
        let Ok(reported) = serde_json::from_slice::<Vec<Reported>>(body) else {
            return Err(LeakResponse::text(
                StatusCode::BAD_REQUEST,
                "the body is not a JSON array of {token, type, url, source}",
            ));
        };
        let mut feedback = Vec::with_capacity(reported.len());
        for entry in &reported {
            let label = match self.matched_key(&entry.token).await? {
                Some(record) => {
                    self.act(&record, entry).await?;
                    if let Some(notices) = &self.inner.notices {
                        notices.notify(Notice::Leaked {
                            key: NoticeKey::from(&record),
                            url: source_url(&entry.url, &entry.token),
                        });
                    }
                    "true_positive"
                }
                None => "false_positive",
            };
            feedback.push(Feedback {
                token_hash: sha256_hex(entry.token.as_bytes()),
                token_type: &entry.token_type,
                label,
            });
        }
        let body = serde_json::to_vec(&feedback).map_err(|_| unavailable())?;
        Ok(LeakResponse {
            status: StatusCode::OK,
            content_type: "application/json",
            body: Bytes::from(body),
        })
    }

    async fn check_signature(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), LeakResponse> {
        let unauthorized = |message| LeakResponse::text(StatusCode::UNAUTHORIZED, message);
        let (Some(identifier), Some(signature)) = (
            headers.get(KEY_IDENTIFIER_HEADER),
            headers.get(SIGNATURE_HEADER),
        ) else {
            return Err(unauthorized(
                "missing Github-Public-Key-Identifier or Github-Public-Key-Signature",
            ));
        };
        let Ok(identifier) = identifier.to_str() else {
            return Err(unauthorized("unknown public key identifier"));
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.as_bytes())
            .ok()
            .and_then(|der| Signature::from_der(&der).ok());
        let Some(signature) = signature else {
            return Err(unauthorized(
                "the signature is not base64 of an ASN.1 DER signature",
            ));
        };
        let key = match self.inner.keys.key(identifier).await {
            Ok(Some(key)) => key,
            Ok(None) => return Err(unauthorized("unknown public key identifier")),
            Err(error) => {
                tracing::warn!(target: "keygate::leaks", %error, "a leak report could not be checked");
                return Err(unavailable());
            }
        };
        if key.verifies(body, &signature) {
            Ok(())
        } else {
            tracing::warn!(target: "keygate::leaks", key_identifier = identifier, "a leak report's signature does not match its body");
            Err(unauthorized("the signature does not match the body"))
        }
    }

    /// The deployment's key `token` is, if any: format and checksum are checked first (no
    /// I/O), then the record's prefix and the digest of the secret. `None` for a bad format
    /// or checksum, an unknown id, another prefix's record or another secret.
    async fn matched_key(&self, token: &str) -> Result<Option<KeyRecord>, LeakResponse> {
        let keyring = &self.inner.keyring;
        // Any of the keyring's formats (its environments' too).
        let Ok(parsed) = keyring.parse(token.as_bytes()) else {
            return Ok(None);
        };
        let record = match self.inner.admin.get(&parsed.id()).await {
            Ok(record) => record,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(error) => return Err(store_failed(&error)),
        };
        if keyring.prefixes().nth(parsed.environment_index()) != Some(record.prefix.as_str()) {
            // The id of a key of another format (or environment): not this key.
            return Ok(None);
        }
        if keyring.matches(
            &parsed.to_presented(),
            record.pepper_version,
            &record.digest,
        ) {
            Ok(Some(record))
        } else {
            Ok(None)
        }
    }

    /// Applies the configured action to a matched key, unless it already holds.
    async fn act(&self, record: &KeyRecord, entry: &Reported) -> Result<(), LeakResponse> {
        let url = source_url(&entry.url, &entry.token);
        let source = printable(&entry.source, 64);
        let change = match self.inner.action {
            LeakAction::Revoke if record.revoked_at.is_none() => Some(KeyChange::Revoke),
            LeakAction::Disable if record.revoked_at.is_none() && record.disabled_at.is_none() => {
                Some(KeyChange::Disable)
            }
            _ => None,
        };
        tracing::warn!(
            target: "keygate::leaks",
            key_id = %record.id,
            url = %url,
            source = %source,
            action = ?self.inner.action,
            changed = change.is_some(),
            "GitHub secret scanning reported a leaked key"
        );
        let detail = format!(
            "leaked: reported by GitHub secret scanning, found at {url} (source: {source})"
        );
        let Some(change) = change else {
            // Nothing to change (report only, or already refused): the find is audited anyway.
            self.inner
                .admin
                .record_unchanged(Action::LeakReported, record.id, detail);
            return Ok(());
        };
        match self
            .inner
            .admin
            .apply_with_detail(&record.id, change, detail)
            .await
        {
            // Revoked (or deleted) since it was read: nothing left to do.
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(()),
            Err(error) => Err(store_failed(&error)),
        }
    }
}

impl fmt::Debug for LeakReports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakReports")
            .field("keyring", &self.inner.keyring)
            .field("action", &self.inner.action)
            .field("max_body", &self.inner.max_body)
            .finish_non_exhaustive()
    }
}

/// The 413 answer, for adapters that stop reading a body at the limit.
pub(crate) fn too_large() -> LeakResponse {
    LeakResponse::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        "the report is larger than this endpoint accepts",
    )
}

/// The 400 answer for a body that could not be read.
#[cfg_attr(not(any(feature = "axum", feature = "actix")), allow(dead_code))]
pub(crate) fn unreadable() -> LeakResponse {
    LeakResponse::text(StatusCode::BAD_REQUEST, "the body could not be read")
}

fn unavailable() -> LeakResponse {
    LeakResponse::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the report cannot be processed now; send it again",
    )
}

fn store_failed(error: &StoreError) -> LeakResponse {
    tracing::warn!(target: "keygate::leaks", %error, "a leak report could not be processed: the key store failed");
    unavailable()
}

/// Lowercase hex SHA-256: the program's `token_hash`.
fn sha256_hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// The URL for logs and the audit event: printable, bounded, and never the token itself
/// (should a URL ever embed it).
fn source_url(url: &str, token: &str) -> String {
    let url = if url.is_empty() { "(no URL)" } else { url };
    let url = if token.is_empty() {
        url.to_owned()
    } else {
        url.replace(token, "[token]")
    };
    printable(&url, MAX_URL_CHARS)
}

/// `text` cut to `max` characters, control characters replaced (no log injection).
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hashes_are_lowercase_hex_sha256() {
        // echo -n abc | sha256sum
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn urls_never_carry_the_token_or_control_characters() {
        let url = source_url("https://gist.test/raw?k=acme_tok\nforged: line", "acme_tok");
        assert_eq!(url, "https://gist.test/raw?k=[token]\u{fffd}forged: line");
        assert_eq!(source_url("", "t"), "(no URL)");
        assert_eq!(
            source_url(&"a".repeat(5000), "t").chars().count(),
            MAX_URL_CHARS
        );
    }
}

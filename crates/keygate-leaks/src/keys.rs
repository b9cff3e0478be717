//! GitHub's signing keys: the [`KeySource`] trait, [`StaticKeys`] given in configuration and
//! [`FetchedKeys`] read from GitHub's public-keys API and cached.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use keygate::clock::{Clock, SystemClock};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;

/// Where GitHub publishes its secret-scanning signing keys.
pub const GITHUB_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";

/// How long fetched keys are used before they are fetched again, by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);

/// The shortest time between two fetches, by default: an unknown identifier (GitHub rotated
/// its key) triggers a fetch at most this often, so forged identifiers cannot make the
/// endpoint hammer GitHub's API.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// Largest public-keys document read (GitHub's is about 1 KiB).
const MAX_KEYS_DOCUMENT: usize = 256 * 1024;

/// One ECDSA P-256 public key GitHub signs reports with, under its `key_identifier`.
#[derive(Clone)]
pub struct PublicKey {
    identifier: Arc<str>,
    key: VerifyingKey,
}

/// A public key that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("public key {identifier:?} is not an ECDSA P-256 key in PEM (SubjectPublicKeyInfo)")]
pub struct InvalidPublicKey {
    identifier: String,
}

impl PublicKey {
    /// Reads `pem` (a `-----BEGIN PUBLIC KEY-----` block, as GitHub's `key` field holds), to
    /// be used for reports whose `Github-Public-Key-Identifier` is `identifier`.
    ///
    /// # Errors
    /// [`InvalidPublicKey`] unless `pem` is a P-256 public key.
    pub fn from_pem(identifier: &str, pem: &str) -> Result<Self, InvalidPublicKey> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| InvalidPublicKey {
            identifier: identifier.chars().take(128).collect(),
        })?;
        Ok(Self {
            identifier: Arc::from(identifier),
            key,
        })
    }

    /// The key's identifier.
    #[must_use]
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// Whether `signature` (ASN.1 DER) is this key's ECDSA-P256-SHA256 signature of `body`.
    /// Signatures with a high `s` are accepted, as the specification's verifiers (Go, Ruby,
    /// OpenSSL) accept them.
    pub(crate) fn verifies(&self, body: &[u8], signature: &Signature) -> bool {
        self.key.verify(body, signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("identifier", &self.identifier)
            .finish_non_exhaustive()
    }
}

/// The keys could not be had (GitHub's API down, an unreadable answer): reports are answered
/// 503, so GitHub sends them again, rather than refused as forged.
#[derive(Debug, thiserror::Error)]
#[error("could not fetch GitHub's secret-scanning public keys from {url}: {reason}")]
pub struct KeySourceError {
    url: String,
    reason: String,
}

impl KeySourceError {
    /// An error for a source of your own.
    pub fn new(url: &str, reason: impl fmt::Display) -> Self {
        Self {
            url: url.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// Where the endpoint finds the key a report names in `Github-Public-Key-Identifier`.
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    /// The key named `identifier`, or `None` when the source has no such key (the report is
    /// then refused as unsigned).
    ///
    /// # Errors
    /// [`KeySourceError`] when the source cannot tell (the report is answered 503).
    async fn key(&self, identifier: &str) -> Result<Option<PublicKey>, KeySourceError>;
}

/// Keys given in configuration: no I/O, for tests, air-gapped deployments or a pinned key.
#[derive(Debug, Clone, Default)]
pub struct StaticKeys {
    keys: HashMap<Arc<str>, PublicKey>,
}

impl StaticKeys {
    /// No keys yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key.
    #[must_use]
    pub fn with(mut self, key: PublicKey) -> Self {
        self.keys.insert(key.identifier.clone(), key);
        self
    }

    /// Adds a key read from PEM.
    ///
    /// # Errors
    /// [`InvalidPublicKey`] unless `pem` is a P-256 public key.
    pub fn with_pem(self, identifier: &str, pem: &str) -> Result<Self, InvalidPublicKey> {
        Ok(self.with(PublicKey::from_pem(identifier, pem)?))
    }
}

#[async_trait]
impl KeySource for StaticKeys {
    async fn key(&self, identifier: &str) -> Result<Option<PublicKey>, KeySourceError> {
        Ok(self.keys.get(identifier).cloned())
    }
}

/// Keys fetched from GitHub's public-keys API ([`GITHUB_KEYS_URL`], or another URL of the same
/// format), cached.
///
/// - The first report fetches the keys; they are used for the TTL ([`DEFAULT_TTL`], one hour),
///   then fetched again. If that fetch fails, the old keys stay in use.
/// - A report naming an identifier the cached keys lack (GitHub rotated its key) fetches them
///   again, at most once per [refetch interval](FetchedKeys::refetch_interval) (one minute):
///   within it, an unknown identifier is refused at once.
/// - Concurrent reports wait for one fetch.
///
/// The fetch is a `GET` with `Accept: application/json`, a `User-Agent` (GitHub's API requires
/// one) and, when given, a GitHub token ([`FetchedKeys::github_token`]), which GitHub's documentation
/// recommends against its API's rate limit for anonymous callers.
pub struct FetchedKeys {
    url: String,
    client: Result<reqwest::Client, String>,
    token: Option<String>,
    ttl: Duration,
    refetch_interval: Duration,
    clock: Arc<dyn Clock>,
    state: tokio::sync::Mutex<Fetched>,
}

#[derive(Default)]
struct Fetched {
    keys: HashMap<String, PublicKey>,
    /// When the keys were last fetched successfully.
    fetched_at: Option<SystemTime>,
    /// When a fetch was last tried.
    tried_at: Option<SystemTime>,
}

/// GitHub's public-keys document.
#[derive(Deserialize)]
struct KeysDocument {
    public_keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
struct KeyEntry {
    key_identifier: String,
    key: String,
    // `is_current` is not needed: a report names its key, and every listed key is valid.
}

impl FetchedKeys {
    /// GitHub's keys, from [`GITHUB_KEYS_URL`].
    #[must_use]
    pub fn github() -> Self {
        Self::from_url(GITHUB_KEYS_URL)
    }

    /// Keys from `url`, a document in the format of [`GITHUB_KEYS_URL`]'s:
    /// `{"public_keys": [{"key_identifier": "…", "key": "-----BEGIN PUBLIC KEY-----…", "is_current": true}]}`.
    #[must_use]
    pub fn from_url(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            // Building fails only when TLS cannot be set up; the fetch then reports it.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent(concat!("keygate-leaks/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|error| error.to_string()),
            token: None,
            ttl: DEFAULT_TTL,
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
            clock: Arc::new(SystemClock),
            state: tokio::sync::Mutex::new(Fetched::default()),
        }
    }

    /// Sends `token` (a GitHub token; no scope needed) as `Authorization: Bearer`.
    #[must_use]
    pub fn github_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// How long fetched keys are used before they are fetched again.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The shortest time between two fetches (an unknown identifier fetches at most this often).
    #[must_use]
    pub fn refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// The clock the TTL and refetch interval are measured by (a
    /// [`ManualClock`](keygate::clock::ManualClock) in tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The URL keys are fetched from.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    fn elapsed(now: SystemTime, since: Option<SystemTime>) -> Option<Duration> {
        // A clock that went back counts as no time passed.
        since.map(|at| now.duration_since(at).unwrap_or(Duration::ZERO))
    }

    async fn refresh(&self, state: &mut Fetched, now: SystemTime) -> Result<(), KeySourceError> {
        state.tried_at = Some(now);
        let fetched = self.fetch().await;
        match fetched {
            Ok(keys) => {
                state.keys = keys;
                state.fetched_at = Some(now);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(target: "keygate::leaks", %error, "could not fetch the public keys GitHub signs leak reports with");
                Err(error)
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, PublicKey>, KeySourceError> {
        let error = |reason: &dyn fmt::Display| KeySourceError::new(&self.url, reason);
        let client = self.client.as_ref().map_err(|reason| error(reason))?;
        let mut request = client
            .get(&self.url)
            .header(http::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.map_err(|e| error(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(error(&format_args!("status {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error(&e))? {
            if body.len() + chunk.len() > MAX_KEYS_DOCUMENT {
                return Err(error(&"the document is larger than 256 KiB"));
            }
            body.extend_from_slice(&chunk);
        }
        let document: KeysDocument = serde_json::from_slice(&body).map_err(|e| error(&e))?;
        let mut keys = HashMap::new();
        for entry in document.public_keys {
            match PublicKey::from_pem(&entry.key_identifier, &entry.key) {
                Ok(key) => {
                    keys.insert(entry.key_identifier, key);
                }
                Err(invalid) => {
                    tracing::warn!(target: "keygate::leaks", url = %self.url, %invalid, "skipped an unreadable public key");
                }
            }
        }
        Ok(keys)
    }
}

#[async_trait]
impl KeySource for FetchedKeys {
    async fn key(&self, identifier: &str) -> Result<Option<PublicKey>, KeySourceError> {
        let mut state = self.state.lock().await;
        let now = self.clock.now();
        let may_fetch = |state: &Fetched| {
            Self::elapsed(now, state.tried_at).is_none_or(|d| d >= self.refetch_interval)
        };
        let stale = Self::elapsed(now, state.fetched_at).is_none_or(|d| d >= self.ttl);
        let mut failure = None;
        if stale && may_fetch(&state) {
            // A failed refresh keeps the old keys in use.
            failure = self.refresh(&mut state, now).await.err();
        }
        if let Some(key) = state.keys.get(identifier) {
            return Ok(Some(key.clone()));
        }
        if may_fetch(&state) {
            failure = self.refresh(&mut state, now).await.err();
            if let Some(key) = state.keys.get(identifier) {
                return Ok(Some(key.clone()));
            }
        }
        match failure {
            // The keys could not be had: the identifier may well be GitHub's.
            Some(error) => Err(error),
            None if state.fetched_at.is_none() => Err(KeySourceError::new(
                &self.url,
                "no fetch has succeeded yet; the next is tried after the refetch interval",
            )),
            None => Ok(None),
        }
    }
}

impl fmt::Debug for FetchedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedKeys")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("ttl", &self.ttl)
            .field("refetch_interval", &self.refetch_interval)
            .finish_non_exhaustive()
    }
}

//! The signature scheme: HMAC-SHA256 over `{timestamp}.{body}`, sent as `v1=<hex>`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The header carrying the notice's event id (the same on every attempt and every re-send).
pub const ID_HEADER: &str = "keygate-webhook-id";
/// The header carrying the attempt's time, in whole seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "keygate-webhook-timestamp";
/// The header carrying the signature: `v1=` and the lowercase hex HMAC-SHA256 of
/// `{timestamp}.{body}` under the shared secret.
pub const SIGNATURE_HEADER: &str = "keygate-webhook-signature";

/// How far a receiver should let a timestamp be from its own clock, by default: 5 minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// The secret shared with the receiver. `Debug` redacts it; it is zeroed on drop.
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl WebhookSecret {
    /// The secret `bytes` (the exact bytes the receiver keys its HMAC with; for a text secret,
    /// its UTF-8).
    ///
    /// # Errors
    /// [`SecretTooShort`] below [`MIN_SECRET_LEN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretTooShort> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretTooShort);
        }
        Ok(Self(bytes))
    }

    /// The signature header's value for `body` sent at `timestamp` (Unix seconds).
    #[must_use]
    pub fn sign(&self, timestamp: u64, body: &[u8]) -> String {
        let tag = self.mac(timestamp, body).finalize().into_bytes();
        let mut value = String::with_capacity(3 + 64);
        value.push_str("v1=");
        for byte in tag {
            value.push(char::from(HEX[usize::from(byte >> 4)]));
            value.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        value
    }

    /// Checks a delivery as a receiver would: the timestamp header is within `tolerance` of
    /// `now`, and one of the signature header's space-separated `v1=` values is the HMAC of
    /// `{timestamp}.{body}` (compared in constant time).
    ///
    /// # Errors
    /// [`BadSignature`] saying which check failed.
    pub fn verify(
        &self,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: SystemTime,
        tolerance: Duration,
    ) -> Result<(), BadSignature> {
        let sent: u64 = timestamp.parse().map_err(|_| BadSignature::Timestamp)?;
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if sent.abs_diff(now) > tolerance.as_secs() {
            return Err(BadSignature::Stale);
        }
        let matches = signature
            .split(' ')
            .filter_map(|v| v.strip_prefix("v1="))
            .any(|hex| {
                decode_hex(hex).is_some_and(|tag| self.mac(sent, body).verify_slice(&tag).is_ok())
            });
        if matches {
            Ok(())
        } else {
            Err(BadSignature::Mismatch)
        }
    }

    fn mac(&self, timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this never fails.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(redacted)")
    }
}

/// A [`WebhookSecret`] shorter than [`MIN_SECRET_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the webhook secret is too short: use at least {MIN_SECRET_LEN} random bytes")]
pub struct SecretTooShort;

/// Why [`WebhookSecret::verify`] refused a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadSignature {
    /// The timestamp header is not a number of seconds.
    #[error("the timestamp header is not a Unix time in seconds")]
    Timestamp,
    /// The timestamp is further from now than the tolerance (a replay, or a clock off).
    #[error("the timestamp is outside the tolerance")]
    Stale,
    /// No `v1=` signature matches.
    #[error("no signature matches the body")]
    Mismatch,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec-test-0123456789abcdef";

    #[test]
    fn matches_openssl() {
        // printf '%s' '1800000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac 'whsec-test-0123456789abcdef' -hex
        let secret = WebhookSecret::new(SECRET).unwrap();
        assert_eq!(
            secret.sign(1_800_000_000, br#"{"id":"evt_1"}"#),
            concat!(
                "v1=",
                "e85cc9f9fb446d9ff602785f86040601a0d7b4b1ceabead23b9acb0b453a98fc"
            )
        );
    }

    #[test]
    fn verifies_only_fresh_matching_signatures() {
        let secret = WebhookSecret::new(SECRET).unwrap();
        let body = br#"{"id":"evt_1"}"#;
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let sig = secret.sign(1_800_000_000, body);
        assert_eq!(
            secret.verify("1800000000", &sig, body, at, DEFAULT_TOLERANCE),
            Ok(())
        );
        let rotated = format!("v1=00 {sig}");
        assert_eq!(
            secret.verify("1800000000", &rotated, body, at, DEFAULT_TOLERANCE),
            Ok(())
        );
        assert_eq!(
            secret.verify(
                "1800000000",
                &sig,
                br#"{"id":"evt_2"}"#,
                at,
                DEFAULT_TOLERANCE
            ),
            Err(BadSignature::Mismatch)
        );
        assert_eq!(
            secret.verify("1800000001", &sig, body, at, DEFAULT_TOLERANCE),
            Err(BadSignature::Mismatch)
        );
        assert_eq!(
            secret.verify(
                "1800000000",
                &sig,
                body,
                at + Duration::from_secs(301),
                DEFAULT_TOLERANCE
            ),
            Err(BadSignature::Stale)
        );
        assert_eq!(
            secret.verify("soon", &sig, body, at, DEFAULT_TOLERANCE),
            Err(BadSignature::Timestamp)
        );
        let other = WebhookSecret::new("another-secret-of-16+").unwrap();
        assert_eq!(
            other.verify("1800000000", &sig, body, at, DEFAULT_TOLERANCE),
            Err(BadSignature::Mismatch)
        );
    }

    #[test]
    fn short_secrets_are_refused_and_debug_redacts() {
        assert_eq!(WebhookSecret::new("short").unwrap_err(), SecretTooShort);
        let secret = WebhookSecret::new(SECRET).unwrap();
        assert!(!format!("{secret:?}").contains("whsec"));
    }
}

//! The verified-credential memo: a cached key remembers a keyed 128-bit tag of the credential
//! that last passed its HMAC check, so that its next requests compare tags instead of
//! computing HMAC-SHA256 again.
//!
//! # Why this is as strong as the HMAC compare
//! - The tag is SipHash-2-4 with 128-bit output under a key drawn from the OS random number
//!   generator when the verifier is built, never stored, never shown. It is a PRF: without the
//!   key, a credential whose tag equals the remembered one can only be guessed, with chance
//!   2⁻¹²⁸ per try, and a request never reveals a tag (or whether a compare was close).
//! - A tag is remembered only after the full HMAC compare succeeded for the cached record, so
//!   a tag match means "the same `{id}_{secret}` that matched the stored digest". The entry is
//!   dropped on every change of the key (invalidation, refresh), taking the tag with it.
//! - Everything after the secret check (state, expiry, client address, environment, limits)
//!   runs on every request as before.
//! - Nothing secret is kept: the tag is not the secret, nor a digest an attacker could check
//!   guesses against offline without the process's key (`SECURITY-CHECKLIST` 33: no plaintext
//!   in the cache).
//!
//! # Timing
//! Every request computes the tag and compares it (in constant time) with the entry's
//! remembered tag, or with a fixed placeholder when there is none, so an unknown id, a wrong
//! secret and a first request cost the same: tag, compare, HMAC. Only the holder of the right
//! secret takes the shorter path, and learns nothing from it they did not know.

use std::hash::Hasher as _;

use rand::TryRngCore;
use rand::rngs::OsRng;
use siphasher::sip128::{Hasher128 as _, SipHasher24};
use subtle::ConstantTimeEq;

/// The per-verifier key of the tags.
#[derive(Clone)]
pub(crate) struct MemoKey {
    k0: u64,
    k1: u64,
}

/// What an entry without a remembered tag compares against, so that the compare runs either
/// way (its result is ignored then: a credential whose tag happens to equal it still goes
/// through the HMAC compare).
pub(crate) const NO_TAG: u128 = 0;

impl MemoKey {
    /// A fresh key from the OS random number generator.
    ///
    /// # Panics
    /// If the OS random number generator fails (as minting keys does).
    pub(crate) fn random() -> Self {
        let mut bytes = [0u8; 16];
        // Without randomness the tags' key would be guessable: refuse to run, as minting does.
        #[allow(clippy::expect_used)]
        OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system random number generator failed");
        let (k0, k1) = bytes.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        Self {
            k0: word(k0),
            k1: word(k1),
        }
    }

    /// The tag of `credential` (the hashed `{id}_{secret}` part).
    #[inline]
    pub(crate) fn tag(&self, credential: &[u8]) -> u128 {
        let mut hasher = SipHasher24::new_with_keys(self.k0, self.k1);
        hasher.write(credential);
        hasher.finish128().as_u128()
    }
}

/// Constant-time equality of two tags.
///
/// Word-wise, as [`Digest::ct_eq`](crate::pepper::Digest::ct_eq): the two 64-bit halves of the
/// difference are ORed through an optimisation barrier and the result compared with zero in
/// constant time. subtle's byte-wise compare of the two 16-byte arrays put a barrier per byte:
/// about 200 instructions and 13 cache lines of code on every request (callgrind
/// `--cache-sim`), against about 15 instructions here.
#[inline]
pub(crate) fn same(a: u128, b: u128) -> bool {
    let difference = a ^ b;
    // Truncations on purpose: the low and the high half.
    let folded = std::hint::black_box((difference as u64) | ((difference >> 64) as u64));
    folded.ct_eq(&0).into()
}

impl std::fmt::Debug for MemoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_depend_on_the_credential_and_the_key() {
        let key = MemoKey::random();
        let a = key.tag(b"0123456789abcdef_secret");
        assert_eq!(a, key.tag(b"0123456789abcdef_secret"));
        assert_ne!(a, key.tag(b"0123456789abcdef_secreT"));
        assert_ne!(a, key.tag(b"0123456789abcdef_secret_"));
        assert_ne!(a, MemoKey::random().tag(b"0123456789abcdef_secret"));
        assert_ne!(a, NO_TAG);
        assert!(same(a, a) && !same(a, a ^ 1) && !same(a, a ^ (1 << 127)));
    }

    #[test]
    fn same_tells_every_difference_in_either_half() {
        let a = MemoKey::random().tag(b"0123456789abcdef_secret");
        assert!(same(a, a) && same(0, 0) && same(u128::MAX, u128::MAX));
        for bit in 0..128 {
            let flipped = a ^ (1u128 << bit);
            assert!(!same(a, flipped) && !same(flipped, a), "bit {bit}");
        }
        // Differences in both halves, and halves swapped.
        assert!(!same(a, !a));
        assert!(!same(a, a.rotate_left(64)) || a.rotate_left(64) == a);
        assert!(!same(1, 1 << 64) && !same(1 << 64, 1));
    }

    #[test]
    fn debug_hides_the_key() {
        let key = MemoKey::random();
        let shown = format!("{key:?} {key:#?}");
        assert_eq!(shown, "MemoKey(..) MemoKey(..)");
        assert!(!shown.contains(&key.k0.to_string()) && !shown.contains(&format!("{:x}", key.k1)));
    }
}

//! Base62 alphabet helpers shared by the key format.

use rand::TryRngCore;
use rand::rngs::OsRng;

/// The base62 alphabet, in value order.
pub(crate) const ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Whether `byte` is one of the 62 alphabet characters (the reference for [`all_base62`]).
#[cfg(test)]
pub(crate) fn is_base62(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

/// Whether every byte of `bytes` is a base62 character.
///
/// Same answer as `bytes.iter().all(is_base62)`, without the early exit: the branch-free form
/// vectorises (keys are short and valid ones are read to the end anyway).
#[inline]
pub(crate) fn all_base62(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        // `| 0x20` folds exactly 'A'..='Z' onto 'a'..='z'; nothing else lands in that range.
        let digit = b.wrapping_sub(b'0') < 10;
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        ok & (digit | letter)
    })
}

/// Fills `out` with uniformly random base62 characters from the operating system's CSPRNG.
///
/// Rejection sampling keeps the distribution uniform: bytes ≥ 248 (= 4 × 62) are discarded.
///
/// # Panics
/// Panics when the operating system cannot provide randomness: continuing would mint guessable keys.
pub(crate) fn fill_random(out: &mut [u8]) {
    let mut pool = [0u8; 64];
    let mut filled = 0;
    while filled < out.len() {
        #[allow(clippy::expect_used)]
        OsRng
            .try_fill_bytes(&mut pool)
            .expect("the operating system random number generator failed; refusing to mint keys");
        for &byte in &pool {
            if filled == out.len() {
                break;
            }
            if byte < 248 {
                out[filled] = ALPHABET[usize::from(byte % 62)];
                filled += 1;
            }
        }
    }
    pool.fill(0);
}

/// Encodes `value` as exactly six base62 characters, most significant first.
///
/// 62⁶ ≈ 5.7 × 10¹⁰ > 2³², so every CRC32 fits.
#[inline]
pub(crate) fn encode_u32_6(mut value: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_base62_agrees_with_is_base62_on_every_byte() {
        for b in 0..=u8::MAX {
            assert_eq!(all_base62(&[b'a', b, b'Z']), is_base62(b), "byte {b:#04x}");
        }
        assert!(all_base62(b""));
    }

    #[test]
    fn encodes_fixed_width() {
        assert_eq!(&encode_u32_6(0), b"000000");
        assert_eq!(&encode_u32_6(61), b"00000z");
        assert_eq!(&encode_u32_6(62), b"000010");
        assert_eq!(&encode_u32_6(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn random_is_in_alphabet() {
        let mut buf = [0u8; 200];
        fill_random(&mut buf);
        assert!(buf.iter().all(|b| is_base62(*b)));
        assert!(all_base62(&buf));
    }
}

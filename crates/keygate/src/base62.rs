//! Base62 alphabet helpers shared by the key format.

use rand::TryRngCore;
use rand::rngs::OsRng;
use zeroize::Zeroize;

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
/// Same answer as `bytes.iter().all(is_base62)`, sixteen bytes at a time in a `u128` (SWAR),
/// with no early exit (valid keys are read to the end anyway). Every constant is an immediate
/// operand: the vectorised byte loop this replaces loaded twelve constants from as many places
/// in the binary's read-only data, cold lines that cost a cached request ~7 L1 misses
/// (`loadbench --cache-sim`) to check a 12-character id. (`u128`, not two `u64`s: LLVM turned
/// two independent words back into vector code with its constants in memory; a `u128`'s two
/// halves are lowered to scalar add-with-carry pairs, which it leaves alone.)
#[inline]
pub(crate) fn all_base62(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(16);
    let mut ok = true;
    for chunk in &mut chunks {
        let mut word = [0u8; 16];
        word.copy_from_slice(chunk);
        ok &= word_is_base62(u128::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Padded with a base62 character, so only the real bytes decide.
        let mut word = [b'0'; 16];
        word[..rest.len()].copy_from_slice(rest);
        ok &= word_is_base62(u128::from_le_bytes(word));
    }
    ok
}

/// `byte` in each of a word's sixteen bytes.
const fn splat(byte: u8) -> u128 {
    u128::from_ne_bytes([byte; 16])
}

/// Whether each of the sixteen bytes of `word` is a base62 character.
///
/// Per byte, on its low seven bits `x` (so no sum below carries into the next byte: the largest
/// is 0x7f + 0x50): `x + (0x80 - lo)` has its top bit set exactly when `x >= lo`. A byte is a
/// digit when `x >= '0'` and not `x >= '9' + 1`, a letter when `x | 0x20` (folding 'A'..='Z'
/// onto 'a'..='z', and nothing else into that range) is `>= 'a'` and not `>= 'z' + 1`, and
/// ASCII when its own top bit is clear.
#[inline]
fn word_is_base62(word: u128) -> bool {
    const TOP: u128 = splat(0x80);
    let ascii = !word & TOP;
    let x = word & !TOP;
    let at_least = |value: u128, lo: u8| value + splat(0x80 - lo);
    let digit = at_least(x, b'0') & !at_least(x, b'9' + 1);
    let folded = x | splat(0x20);
    let letter = at_least(folded, b'a') & !at_least(folded, b'z' + 1);
    ascii & (digit | letter) & TOP == TOP
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
    // The pool held the raw bytes the output was drawn from; `zeroize` is a volatile write the
    // compiler cannot drop as a dead store (a plain `fill(0)` before the array dies could be).
    pool.zeroize();
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
    fn all_base62_agrees_with_is_base62_on_every_byte_in_every_position() {
        // Every byte value in every lane of a word and in the padded tail, beside valid
        // characters from both ends of the alphabet's ranges: 0x7f and 0xff would carry into
        // the next lane, and 0x00 borrow from it, if the lanes were not kept apart.
        for len in [1, 3, 8, 12, 13, 30, 43] {
            for position in 0..len {
                for neighbour in [b'a', b'0', b'Z', b'z', b'9'] {
                    for b in 0..=u8::MAX {
                        let mut bytes = vec![neighbour; len];
                        bytes[position] = b;
                        assert_eq!(
                            all_base62(&bytes),
                            is_base62(b),
                            "byte {b:#04x} at {position} of {len}"
                        );
                    }
                }
                for bad in [0x00, 0x7f, 0x80, 0xff, b'/', b':', b'@', b'[', b'`', b'{'] {
                    let mut bytes = ALPHABET.repeat(2)[..len].to_vec();
                    bytes[position] = bad;
                    assert!(!all_base62(&bytes), "{bad:#04x} at {position} of {len}");
                }
            }
        }
        assert!(all_base62(b""));
        assert!(all_base62(ALPHABET));
        assert!(all_base62(&ALPHABET.repeat(3)));
    }

    #[test]
    fn encodes_fixed_width() {
        assert_eq!(&encode_u32_6(0), b"000000");
        assert_eq!(&encode_u32_6(61), b"00000z");
        assert_eq!(&encode_u32_6(62), b"000010");
        assert_eq!(&encode_u32_6(u32::MAX), b"4gfFC3");
    }

    /// χ² over 62 equally likely symbols has 61 degrees of freedom. Its upper and lower
    /// 10⁻⁶ quantiles (computed from the regularised incomplete gamma function): a sound
    /// generator fails either bound once in 500 000 runs, so the test never flakes in practice.
    const CHI2_61_UPPER_1E6: f64 = 128.6;
    const CHI2_61_LOWER_1E6: f64 = 21.9;

    /// χ² statistic of the symbol counts of `chars` against the uniform distribution over
    /// the alphabet; panics on a symbol outside it.
    fn chi_squared(chars: &[u8]) -> f64 {
        let mut counts = [0u64; 62];
        for &c in chars {
            let index = ALPHABET
                .iter()
                .position(|&a| a == c)
                .unwrap_or_else(|| panic!("byte {c:#04x} is not base62"));
            counts[index] += 1;
        }
        #[allow(clippy::cast_precision_loss)]
        let expected = chars.len() as f64 / 62.0;
        counts
            .iter()
            .map(|&n| {
                #[allow(clippy::cast_precision_loss)]
                let d = n as f64 - expected;
                d * d / expected
            })
            .sum()
    }

    #[test]
    fn fill_random_is_uniform_over_all_62_symbols() {
        // 2 × 10⁶ characters, drawn in key-sized calls as the key generator draws them (each
        // call takes fresh pool bytes), and once as one long buffer.
        let mut chars = vec![0u8; 2_000_000];
        for chunk in chars[..1_000_000].chunks_mut(30) {
            fill_random(chunk);
        }
        fill_random(&mut chars[1_000_000..]);
        for half in [&chars[..1_000_000], &chars[1_000_000..]] {
            let chi2 = chi_squared(half);
            assert!(
                (CHI2_61_LOWER_1E6..CHI2_61_UPPER_1E6).contains(&chi2),
                "χ² = {chi2:.1} over 10⁶ characters, outside [{CHI2_61_LOWER_1E6}, {CHI2_61_UPPER_1E6}): not uniform over 62 symbols"
            );
        }
    }

    #[test]
    fn chi_squared_catches_a_biased_alphabet() {
        // The test above must be able to fail: `byte % 62` as `byte / 62` (4 symbols) or
        // keeping byte 248 (symbol '0' 5/4 as likely as the others) are far past the bound.
        let four: Vec<u8> = (0..1_000_000u32)
            .map(|i| ALPHABET[(i % 4) as usize])
            .collect();
        assert!(chi_squared(&four) > CHI2_61_UPPER_1E6);
        let skewed: Vec<u8> = (0..1_000_000u32)
            .map(|i| ALPHABET[((i % 249) % 62) as usize])
            .collect();
        assert!(chi_squared(&skewed) > CHI2_61_UPPER_1E6);
        // A counter is perfectly even: too good a fit fails the lower bound.
        let counter: Vec<u8> = (0..1_000_000u32)
            .map(|i| ALPHABET[(i % 62) as usize])
            .collect();
        assert!(chi_squared(&counter) < CHI2_61_LOWER_1E6);
    }

    #[test]
    fn fill_random_fills_every_byte_of_any_length() {
        // Lengths around the 64-byte pool: a fill that stops at the pool's end, or skips the
        // last slot, leaves a zero byte behind.
        for len in [0, 1, 30, 63, 64, 65, 200, 1000] {
            let mut buf = vec![0u8; len];
            fill_random(&mut buf);
            assert!(all_base62(&buf), "length {len}");
        }
    }

    #[test]
    fn random_is_in_alphabet() {
        let mut buf = [0u8; 200];
        fill_random(&mut buf);
        assert!(buf.iter().all(|b| is_base62(*b)));
        assert!(all_base62(&buf));
    }
}

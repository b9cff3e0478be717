//! The key generator's output over 10⁶ keys (no repeats, every position uniform), and the
//! secret-scanning regex against 10⁵ generated keys and 10⁵ tokens of other shapes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::HashSet;

use keygate::KeyFormat;
use keygate::key::{KeyId, SECRET_LEN};
use rand::Rng;
use regex::Regex;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Upper 10⁻⁸ quantile of χ² with 61 degrees of freedom (62 symbols), from the regularised
/// incomplete gamma function. 42 positions are tested, so a sound generator fails this test
/// about once in 2.4 million runs; a biased one (4 or 7 symbols, or one symbol 5/4 as likely)
/// lands in the thousands.
const CHI2_61_UPPER_1E8: f64 = 144.5;

fn format() -> KeyFormat {
    KeyFormat::new("acme_live").unwrap()
}

fn symbol_index() -> [usize; 256] {
    let mut index = [usize::MAX; 256];
    for (i, &c) in ALPHABET.iter().enumerate() {
        index[usize::from(c)] = i;
    }
    index
}

#[allow(clippy::cast_precision_loss)]
fn chi_squared(counts: &[u64; 62]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / 62.0;
    counts
        .iter()
        .map(|&n| (n as f64 - expected).powi(2) / expected)
        .sum()
}

#[test]
fn a_million_keys_repeat_no_id_or_secret_and_every_position_is_uniform() {
    const KEYS: usize = 1_000_000;
    let format = format();
    let index = symbol_index();
    // `{prefix}_` then the id, `_`, the secret.
    let id_start = format.prefix().len() + 1;
    let secret_start = id_start + KeyId::LEN + 1;
    let mut ids = HashSet::with_capacity(KEYS);
    let mut secrets = HashSet::with_capacity(KEYS);
    let mut counts = vec![[0u64; 62]; KeyId::LEN + SECRET_LEN];
    for _ in 0..KEYS {
        let (id, key) = format.generate();
        let text = key.expose_secret().as_bytes();
        let secret: [u8; SECRET_LEN] = text[secret_start..secret_start + SECRET_LEN]
            .try_into()
            .unwrap();
        assert!(ids.insert(id), "id {id} generated twice");
        assert!(secrets.insert(secret), "a secret was generated twice");
        let id_chars = &text[id_start..id_start + KeyId::LEN];
        for (position, &c) in id_chars.iter().chain(&secret).enumerate() {
            counts[position][index[usize::from(c)]] += 1;
        }
    }
    for (position, counts) in counts.iter().enumerate() {
        let chi2 = chi_squared(counts);
        assert!(
            chi2 < CHI2_61_UPPER_1E8,
            "character {position} of id+secret: χ² = {chi2:.1} over {KEYS} keys, not uniform"
        );
    }
}

/// A JWT-looking token, base64url without padding (alphabet and shape are what matter here).
fn base64(bytes: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(table[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn random_bytes(rng: &mut impl Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 10⁵ tokens of the shapes a scanner meets most: hex digests, base64 blobs, UUIDs and JWTs.
fn other_tokens() -> Vec<String> {
    let mut rng = rand::rng();
    let mut tokens = Vec::with_capacity(100_000);
    for i in 0..25_000 {
        let len = [16, 20, 24, 32][i % 4];
        tokens.push(hex(&random_bytes(&mut rng, len)));
        let len = rng.random_range(16..64);
        tokens.push(base64(&random_bytes(&mut rng, len), i % 2 == 0));
        let u = hex(&random_bytes(&mut rng, 16));
        tokens.push(format!(
            "{}-{}-{}-{}-{}",
            &u[..8],
            &u[8..12],
            &u[12..16],
            &u[16..20],
            &u[20..]
        ));
        let payload = format!(
            r#"{{"sub":"{}","iat":{}}}"#,
            hex(&random_bytes(&mut rng, 6)),
            rng.random::<u32>()
        );
        tokens.push(format!(
            "{}.{}.{}",
            base64(br#"{"alg":"HS256","typ":"JWT"}"#, true),
            base64(payload.as_bytes(), true),
            base64(&random_bytes(&mut rng, 32), true)
        ));
    }
    tokens
}

#[test]
fn scanner_regex_matches_each_generated_key_whole() {
    let format = format();
    let regex = Regex::new(&format.scanner_regex()).unwrap();
    for i in 0..100_000 {
        let (_, key) = format.generate();
        let key = key.expose_secret();
        // The key as it sits in configuration, code, JSON or a header: found, whole.
        let haystack = match i % 4 {
            0 => key.to_owned(),
            1 => format!("export ACME_KEY={key}\n"),
            2 => format!(r#"{{"api_key": "{key}", "n": 1}}"#),
            _ => format!("Authorization: Bearer {key}\r\n"),
        };
        let found: Vec<&str> = regex.find_iter(&haystack).map(|m| m.as_str()).collect();
        assert_eq!(found, [key], "in {haystack:?}");
    }
}

#[test]
fn scanner_regex_matches_no_other_token_and_no_damaged_key() {
    let format = format();
    let regex = Regex::new(&format.scanner_regex()).unwrap();
    let tokens = other_tokens();
    assert_eq!(tokens.len(), 100_000);
    for token in &tokens {
        assert!(!regex.is_match(token), "{token}");
        // Even after the deployment prefix: the id/secret shape is specific, not just the prefix.
        if !token.contains('_') {
            let prefixed = format!("acme_live_{token}");
            assert!(!regex.is_match(&prefixed), "{prefixed}");
        }
    }
    let (_, key) = format.generate();
    let key = key.expose_secret();
    let tail = &key[format.prefix().len()..];
    for damaged in [
        format!("{key}x"),                                     // one character too many
        key[..key.len() - 1].to_owned(),                       // one too few
        format!("xacme_live{tail}"), // another deployment's prefix ending alike
        format!("acme_test{tail}"),  // another prefix
        format!("acme_live_{}-{}", &tail[1..13], &tail[14..]), // separator replaced
    ] {
        assert!(!regex.is_match(&damaged), "{damaged}");
    }
}

#[test]
fn the_scanning_guide_uses_the_scanner_regex() {
    // docs/secret-scanning.md gives ready gitleaks and trufflehog rules for prefix `acme_live`:
    // they must carry exactly the regex the library states, and it must compile.
    let guide = include_str!("../../../docs/secret-scanning.md");
    let regex = format().scanner_regex();
    Regex::new(&regex).unwrap();
    assert!(
        guide.contains(&format!("regex = '''{regex}'''")),
        "gitleaks rule"
    );
    assert!(
        guide.contains(&format!("key: '{regex}'")),
        "trufflehog rule"
    );
}

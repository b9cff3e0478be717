//! Property tests of the key format and of extraction from arbitrary header bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use keygate::{HttpRequestView, KeyFormat, Keyring, MemoryStore, Verifier};
use proptest::prelude::*;
use regex::Regex;

fn prefix_strategy() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,30}[a-z0-9]".prop_filter("valid prefix", |p| KeyFormat::new(p).is_ok())
}

/// RFC 6750's `b64token`, the grammar of a Bearer credential:
/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn b64token() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[A-Za-z0-9\-._~+/]+=*$").unwrap())
}

/// Any key: a prefix, the id, the secret and checksum.
fn key_shape() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^([a-z][a-z0-9_]*)_([0-9A-Za-z]{12})_[0-9A-Za-z]{36}$").unwrap())
}

/// One verifier for every extraction case: building one per case would dominate the run.
fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        Verifier::builder(
            Keyring::development("acme_live").unwrap(),
            MemoryStore::new(),
        )
        .trusted_proxies(["0.0.0.0/0".parse().unwrap()])
        .allow_query_param("key")
        .build()
    })
}

proptest! {
    // 10 000 cases per property (issue 13): the whole file runs in a few seconds.
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn every_generated_key_parses_back(prefix in prefix_strategy()) {
        let format = KeyFormat::new(&prefix).unwrap();
        let (id, key) = format.generate();
        let parsed = format.parse(key.expose_secret().as_bytes());
        prop_assert!(parsed.is_ok());
        prop_assert_eq!(parsed.map(|p| p.id()).ok(), Some(id));
        prop_assert_eq!(parsed.map(|p| p.to_presented().id()).ok(), Some(id));
        prop_assert_eq!(key.expose_secret().len(), format.key_len());
        prop_assert!(format.key_len() <= keygate::key::MAX_KEY_LEN);
    }

    #[test]
    fn every_generated_key_follows_the_grammar(prefix in prefix_strategy()) {
        let format = KeyFormat::new(&prefix).unwrap();
        let (id, key) = format.generate();
        let key = key.expose_secret();
        // Sent as `Authorization: Bearer <key>` unchanged: a valid RFC 6750 b64token.
        prop_assert!(b64token().is_match(key), "not a b64token: {}", key);
        // `^{prefix}_[0-9A-Za-z]{12}_[0-9A-Za-z]{36}$`, with the prefix and id captured (one
        // compiled regex for every prefix: compiling one per case would dominate the run).
        let captures = key_shape().captures(key);
        let part = |i| captures.as_ref().and_then(|c| c.get(i)).map(|m| m.as_str());
        prop_assert_eq!(part(1), Some(prefix.as_str()));
        prop_assert_eq!(part(2), Some(id.as_str()));
    }

    #[test]
    fn any_single_character_change_is_rejected(
        prefix in prefix_strategy(),
        position in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let format = KeyFormat::new(&prefix).unwrap();
        let (_, key) = format.generate();
        let mut bytes = key.expose_secret().as_bytes().to_vec();
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;
        prop_assert!(format.parse(&bytes).is_err());
    }

    #[test]
    fn any_neighbour_swap_is_rejected(prefix in prefix_strategy(), position in any::<prop::sample::Index>()) {
        let format = KeyFormat::new(&prefix).unwrap();
        let (_, key) = format.generate();
        let mut bytes = key.expose_secret().as_bytes().to_vec();
        let i = position.index(bytes.len() - 1);
        prop_assume!(bytes[i] != bytes[i + 1]);
        bytes.swap(i, i + 1);
        prop_assert!(format.parse(&bytes).is_err());
    }

    #[test]
    fn dropping_or_adding_a_character_is_rejected(prefix in prefix_strategy(), position in any::<prop::sample::Index>(), extra in any::<u8>()) {
        let format = KeyFormat::new(&prefix).unwrap();
        let (_, key) = format.generate();
        let bytes = key.expose_secret().as_bytes();
        let i = position.index(bytes.len());
        let mut shorter = bytes.to_vec();
        shorter.remove(i);
        prop_assert!(format.parse(&shorter).is_err());
        let mut longer = bytes.to_vec();
        longer.insert(i, extra);
        prop_assert!(format.parse(&longer).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let format = KeyFormat::new("acme_live").unwrap();
        let _ = format.parse(&bytes);
    }

}

proptest! {
    // Extraction is not the key format, and the fuzz targets cover it at length: 2 000 cases
    // keep this file's run short.
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_header_bytes_never_panic_extraction(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..700), 0..4),
        names in prop::collection::vec(prop::sample::select(vec!["authorization", "x-api-key", "x-forwarded-for", "accept"]), 0..4),
        prefix_bytes in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let verifier = verifier();
        let mut headers = HeaderMap::new();
        for (name, value) in names.iter().zip(&values) {
            // Mix the value with a Bearer scheme prefix sometimes, so the token path is reached.
            let mut raw = prefix_bytes.clone();
            raw.extend_from_slice(value);
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                headers.append(HeaderName::from_static(name), value);
            }
            if let Ok(value) = HeaderValue::from_bytes(&[b"Bearer ".as_slice(), value].concat()) {
                headers.append(HeaderName::from_static(name), value);
            }
        }
        let uri = Uri::from_static("/?key=abc&key");
        let peer = Some("10.0.0.1".parse().unwrap());
        let _ = verifier.extract(&HttpRequestView::new(&headers, &uri, peer));
    }
}

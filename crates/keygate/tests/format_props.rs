//! Property tests of the key format and of extraction from arbitrary header bytes.

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use keygate::{HttpRequestView, KeyFormat, Keyring, MemoryStore, Verifier};
use proptest::prelude::*;

fn prefix_strategy() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,30}[a-z0-9]".prop_filter("valid prefix", |p| KeyFormat::new(p).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_generated_key_parses_back(prefix in prefix_strategy()) {
        let format = KeyFormat::new(&prefix).unwrap_or_else(|e| panic!("{e}"));
        let (id, key) = format.generate();
        let parsed = format.parse(key.expose_secret().as_bytes());
        prop_assert!(parsed.is_ok());
        prop_assert_eq!(parsed.map(|p| p.id()).ok(), Some(id));
        prop_assert_eq!(key.expose_secret().len(), format.key_len());
        prop_assert!(format.key_len() <= keygate::key::MAX_KEY_LEN);
    }

    #[test]
    fn any_single_character_change_is_rejected(
        prefix in prefix_strategy(),
        position in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let format = KeyFormat::new(&prefix).unwrap_or_else(|e| panic!("{e}"));
        let (_, key) = format.generate();
        let mut bytes = key.expose_secret().as_bytes().to_vec();
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;
        prop_assert!(format.parse(&bytes).is_err());
    }

    #[test]
    fn any_neighbour_swap_is_rejected(prefix in prefix_strategy(), position in any::<prop::sample::Index>()) {
        let format = KeyFormat::new(&prefix).unwrap_or_else(|e| panic!("{e}"));
        let (_, key) = format.generate();
        let mut bytes = key.expose_secret().as_bytes().to_vec();
        let i = position.index(bytes.len() - 1);
        prop_assume!(bytes[i] != bytes[i + 1]);
        bytes.swap(i, i + 1);
        prop_assert!(format.parse(&bytes).is_err());
    }

    #[test]
    fn dropping_or_adding_a_character_is_rejected(prefix in prefix_strategy(), position in any::<prop::sample::Index>(), extra in any::<u8>()) {
        let format = KeyFormat::new(&prefix).unwrap_or_else(|e| panic!("{e}"));
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
        let format = KeyFormat::new("acme_live").unwrap_or_else(|e| panic!("{e}"));
        let _ = format.parse(&bytes);
    }

    #[test]
    fn arbitrary_header_bytes_never_panic_extraction(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..700), 0..4),
        names in prop::collection::vec(prop::sample::select(vec!["authorization", "x-api-key", "x-forwarded-for", "accept"]), 0..4),
        prefix_bytes in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let verifier = Verifier::builder(
            Keyring::development("acme_live").unwrap_or_else(|e| panic!("{e}")),
            MemoryStore::new(),
        )
        .trusted_proxies(["0.0.0.0/0".parse().unwrap_or_else(|e| panic!("{e}"))])
        .allow_query_param("key")
        .build();
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
        let peer = Some("10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")));
        let _ = verifier.extract(&HttpRequestView::new(&headers, &uri, peer));
    }
}

//! Every type that holds a key, a digest or a pepper formats without it (`{:?}`, `{:#?}` and,
//! where implemented, `{}`), and a pepper keys HMAC-SHA256 exactly as RFC 2104 says, whatever
//! its length (no fallback key).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Uri};
use keygate::pepper::PepperError;
use keygate::{Digest, HttpRequestView, KeyFormat, Keyring, NewKey, Pepper, Peppers, Verifier};
use sha2::Sha256;

const PEPPER: &str = "pepper-secret-0123456789-abcdefghijklmnop";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fails if any 8-character piece of any of `secrets` appears in `shown`.
fn assert_hides(what: &str, shown: &str, secrets: &[&str]) {
    for secret in secrets {
        for window in secret.as_bytes().windows(8) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(
                !shown.contains(window),
                "{what} shows {window:?} of a secret: {shown}"
            );
        }
    }
}

fn keyring() -> Keyring {
    let pepper = Pepper::new(3, PEPPER).unwrap();
    Keyring::new(KeyFormat::new("acme_live").unwrap(), Peppers::new(pepper))
}

#[test]
fn no_secret_bearing_type_formats_its_secret() {
    let keyring = keyring();
    let minted = keyring.mint(NewKey::new("hygiene")).unwrap();
    let record = minted.record().clone();
    let digest = record.digest;
    let digest_hex = hex(digest.as_bytes());
    let digest_list = format!("{:?}", digest.as_bytes());
    let minted_debug = [format!("{minted:?}"), format!("{minted:#?}")];
    let created = minted.into_created(record.clone());
    let key = created.key.expose_secret().to_owned();
    // Everything after `{prefix}_{id}_` is secret or derived from it.
    let tail = &key[keyring.format().prefix().len() + 14..];
    let secrets = [tail, PEPPER, &digest_hex];

    let format = keyring.format();
    let parsed = format.parse(key.as_bytes()).unwrap();
    let presented_key = parsed.to_presented();
    let mut headers = HeaderMap::new();
    let bearer = format!("Bearer {key}");
    for (name, value) in [
        ("authorization", bearer.as_str()),
        ("cookie", &format!("session={key}")),
        ("proxy-authorization", &bearer),
        ("x-api-key", &key),
    ] {
        headers.append(name, HeaderValue::from_str(value).unwrap());
    }
    let uri: Uri = format!("/orders?key={key}").parse().unwrap();
    let view = HttpRequestView::new(&headers, &uri, None);
    let verifier = Verifier::builder(keyring.clone(), keygate::MemoryStore::new())
        .allow_query_param("other")
        .build();
    let only_bearer = {
        let mut h = HeaderMap::new();
        h.append("authorization", HeaderValue::from_str(&bearer).unwrap());
        h
    };
    let presented = verifier
        .extract(&HttpRequestView::new(&only_bearer, &uri, None))
        .unwrap();
    assert_eq!(presented.key_id(), record.id);

    let peppers = keyring.peppers();
    let pepper = peppers.current();
    let mut shown = vec![
        ("PlaintextKey", format!("{:?}", created.key)),
        ("PlaintextKey", format!("{:#?}", created.key)),
        ("PlaintextKey", format!("{}", created.key)),
        ("CreatedKey", format!("{created:?}")),
        ("CreatedKey", format!("{created:#?}")),
        ("ParsedKey", format!("{parsed:?}")),
        ("ParsedKey", format!("{parsed:#?}")),
        ("PresentedKey", format!("{presented_key:?}")),
        ("PresentedKey", format!("{presented_key:#?}")),
        ("Presented", format!("{presented:?}")),
        ("Presented", format!("{presented:#?}")),
        ("Digest", format!("{digest:?}")),
        ("Digest", format!("{digest:#?}")),
        ("KeyRecord", format!("{record:?}")),
        ("KeyRecord", format!("{record:#?}")),
        ("Pepper", format!("{pepper:?}")),
        ("Pepper", format!("{pepper:#?}")),
        ("Peppers", format!("{peppers:?}")),
        ("Peppers", format!("{peppers:#?}")),
        ("Keyring", format!("{keyring:?}")),
        ("Keyring", format!("{keyring:#?}")),
        ("HttpRequestView", format!("{view:?}")),
        ("HttpRequestView", format!("{view:#?}")),
        ("Verifier", format!("{verifier:?}")),
    ];
    for debug in minted_debug {
        shown.push(("MintedKey", debug));
    }
    assert_eq!(format!("{pepper:?}"), "Pepper { version: 3, .. }");
    assert_eq!(format!("{digest:?}"), "Digest([redacted])");
    for (what, text) in &shown {
        assert!(!text.is_empty(), "{what} formats as nothing");
        assert_hides(what, text, &secrets);
        assert!(
            !text.contains(&digest_list),
            "{what} shows the digest bytes"
        );
    }
    // The redacted forms still say what they are, so logs stay useful.
    let all: String = shown.iter().map(|(_, t)| t.as_str()).collect();
    for expected in [
        "[redacted]",
        "Digest([redacted])",
        record.id.as_str(),
        "version: 3",
        "acme_live",
        "authorization",
    ] {
        assert!(all.contains(expected), "{expected} missing from {all}");
    }
}

#[test]
fn pepper_errors_name_no_secret() {
    for (input, error) in [
        ("short-secret", PepperError::TooShort { version: 1 }),
        (
            &format!("1:{PEPPER},x:{PEPPER}"),
            PepperError::BadEntry { position: 2 },
        ),
        (
            &format!("1:{PEPPER},1:{PEPPER}"),
            PepperError::DuplicateVersion { version: 1 },
        ),
    ] {
        let err = Peppers::parse(input).err();
        assert_eq!(err.as_ref(), Some(&error));
        for text in [format!("{error}"), format!("{error:?}")] {
            assert_hides("PepperError", &text, &[PEPPER, "short-secret"]);
        }
    }
}

#[test]
fn pepper_entries_keep_their_version() {
    // A single versioned entry keeps its version; a bare secret (even one with a ':' after a
    // non-number) is version 1; the first of several is current.
    let one = Peppers::parse(&format!("5:{PEPPER}")).unwrap();
    assert_eq!(one.current().version(), 5);
    let bare = Peppers::parse(&format!("v:{PEPPER}")).unwrap();
    assert_eq!(bare.current().version(), 1);
    let two = Peppers::parse(&format!(" 7:{PEPPER} , 6:{PEPPER}x ")).unwrap();
    assert_eq!(two.current().version(), 7);
    assert_eq!(two.get(6).map(Pepper::version), Some(6));
    assert!(two.get(5).is_none());
    // A bare secret and `1:` the same secret are the same pepper.
    let plain = Peppers::parse(PEPPER).unwrap();
    let versioned = Peppers::parse(&format!("1:{PEPPER}")).unwrap();
    assert_eq!(plain.digest(b"k"), versioned.digest(b"k"));
}

fn reference_hmac(secret: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[test]
fn peppers_key_hmac_as_rfc_2104_at_every_length() {
    // Around SHA-256's 64-byte block: shorter keys are zero-padded, longer ones hashed first.
    for len in 32..=200 {
        let secret: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let peppers = Peppers::new(Pepper::new(1, &secret).unwrap());
        let (version, digest) = peppers.digest(b"4fT0qKb2mZ9x_secret");
        assert_eq!(version, 1);
        assert_eq!(
            digest.as_bytes(),
            &reference_hmac(&secret, b"4fT0qKb2mZ9x_secret"),
            "pepper of {len} bytes"
        );
        assert!(peppers.verify(1, b"4fT0qKb2mZ9x_secret", &digest));
    }
    // RFC 4231 test case 6: a 131-byte key, hashed first.
    let key = [0xaa_u8; 131];
    let peppers = Peppers::new(Pepper::new(9, key).unwrap());
    let (_, digest) = peppers.digest(b"Test Using Larger Than Block-Size Key - Hash Key First");
    assert_eq!(
        hex(digest.as_bytes()),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
    // Two different peppers never give the same digest (no shared fallback key).
    let a = Peppers::new(Pepper::new(1, [1u8; 40]).unwrap());
    let b = Peppers::new(Pepper::new(1, [2u8; 40]).unwrap());
    assert_ne!(a.digest(b"k").1, b.digest(b"k").1);
    assert_eq!(
        Digest::from_slice(a.digest(b"k").1.as_bytes()),
        Some(a.digest(b"k").1)
    );
}

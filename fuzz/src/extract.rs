//! `extract`: `Verifier::extract` (and an optional `Gate`'s admission, `client_ip`) over arbitrary headers,
//! URIs, peers and `X-Forwarded-For` chains, under three credential configurations.
//!
//! Input: the [`request`](crate::request) text format; `@config: N` picks configuration
//! `N % 3` (see [`configs`]); `{key}` and `{key2}` are two valid keys, `{long}` 513 bytes.
//! Invariants, against a reference reading of the request's credentials: a key is accepted
//! only when the request carries exactly one credential, within the length cap, that parses
//! with the same id; each refusal names what the reference sees (none, several, too long, or
//! the format's own error for the single credential); refusals are 400 or 401, never a server
//! error; an optional gate agrees; the client address follows the trusted-proxy rule; the
//! `Debug` of an accepted credential does not show its secret.

use std::sync::OnceLock;

use ipnet::IpNet;
use keygate::gate::{Admission, Gate};
use keygate::key::KeyFormat;
use keygate::rejection::Reason;
use keygate::{HttpRequestView, Keyring, MemoryStore, Pepper, Peppers, Verifier};

use crate::request::{self, Sources};

/// One verifier configuration and what the reference needs to know of it.
struct Config {
    verifier: Verifier,
    sources: Sources,
    proxies: Vec<IpNet>,
}

struct State {
    configs: Vec<Config>,
    keys: [String; 2],
    long: Vec<u8>,
}

/// The fuzz targets' keyring: format [`PREFIX`](crate::PREFIX), a fixed pepper.
pub(crate) fn keyring() -> Keyring {
    let format = KeyFormat::new(crate::PREFIX).unwrap();
    let pepper = Pepper::new(1, [b'p'; 32]).unwrap();
    Keyring::new(format, Peppers::new(pepper))
}

pub(crate) fn nets(nets: &[&str]) -> Vec<IpNet> {
    nets.iter().map(|n| n.parse().unwrap()).collect()
}

/// The configurations: 0 is the default (bearer and `x-api-key`, cap 512, no proxy); 1 adds
/// the query parameter `api_key`, renames the header `x-key`, caps at 100 bytes and trusts
/// proxies in `10.0.0.0/8` and `fd00::/8`; 2 reads only the query parameter `key` and trusts
/// every address as a proxy.
fn configs() -> Vec<Config> {
    let build = |sources: Sources, proxies: Vec<IpNet>| {
        let mut builder = Verifier::builder(keyring(), MemoryStore::new())
            .bearer(sources.bearer)
            .max_credential_len(sources.max_len)
            .trusted_proxies(proxies.clone());
        builder = match sources.header {
            Some(name) => builder.header(name),
            None => builder.no_header(),
        };
        if let Some(param) = sources.query {
            builder = builder.allow_query_param(param);
        }
        Config {
            verifier: builder.build(),
            sources,
            proxies,
        }
    };
    vec![
        build(
            Sources {
                bearer: true,
                header: Some("x-api-key"),
                query: None,
                max_len: 512,
            },
            Vec::new(),
        ),
        build(
            Sources {
                bearer: true,
                header: Some("x-key"),
                query: Some("api_key"),
                max_len: 100,
            },
            nets(&["10.0.0.0/8", "fd00::/8"]),
        ),
        build(
            Sources {
                bearer: false,
                header: None,
                query: Some("key"),
                max_len: 512,
            },
            nets(&["0.0.0.0/0", "::/0"]),
        ),
    ]
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let format = keyring().format().clone();
        let key = || format.generate().1.expose_secret().to_owned();
        State {
            configs: configs(),
            keys: [key(), key()],
            long: vec![b'a'; 513],
        }
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let state = state();
    let request = request::parse(
        data,
        &[
            (b"{key}", state.keys[0].as_bytes()),
            (b"{key2}", state.keys[1].as_bytes()),
            (b"{long}", &state.long),
        ],
    );
    let config = &state.configs[usize::from(request.config) % state.configs.len()];
    let verifier = &config.verifier;
    let view = HttpRequestView::new(&request.headers, &request.uri, request.peer);
    let seen = request::credentials(&request, &config.sources);
    let format = verifier.keyring().format();

    let client = verifier.client_ip(&view);
    request::check_client_ip(&request, &config.proxies, client);

    let extracted = verifier.extract(&view);
    match &extracted {
        Ok(presented) => {
            assert!(!seen.too_long, "accepted beside an over-long credential");
            assert_eq!(
                seen.found.len(),
                1,
                "accepted, but {} credentials",
                seen.found.len()
            );
            let key = &seen.found[0];
            let parsed = format
                .parse(key)
                .expect("accepted a key the format refuses");
            assert_eq!(presented.key_id(), parsed.id());
            assert_eq!(presented.client_ip(), client);
            let secret = &key[format.prefix().len() + 14..];
            assert!(!crate::contains(
                format!("{presented:?}").as_bytes(),
                secret
            ));
        }
        Err(rejection) => {
            let status = rejection.status().as_u16();
            assert!(status == 400 || status == 401, "extract answered {status}");
            match rejection.reason() {
                Reason::MissingCredentials => {
                    assert!(seen.found.is_empty() && !seen.too_long, "{seen:?}");
                }
                Reason::MultipleCredentials => assert!(seen.found.len() >= 2),
                Reason::CredentialTooLong => assert!(seen.too_long),
                reason @ (Reason::Malformed | Reason::WrongPrefix | Reason::BadChecksum) => {
                    assert!(!seen.too_long);
                    assert_eq!(seen.found.len(), 1);
                    let error = format.parse(&seen.found[0]).err();
                    assert_eq!(error.map(Reason::from), Some(reason));
                }
                other => panic!("extract refused with {other:?}"),
            }
        }
    }
    // An optional gate admits what `extract` accepts, passes only a request without any
    // credential, and refuses the rest for the same reason.
    let optional = Gate::new(verifier.clone()).optional();
    match (optional.admit(&view, "GET", || None), extracted) {
        (Admission::Check(a), Ok(b)) => assert_eq!(a.presented().key_id(), b.key_id()),
        (Admission::Pass(_), Err(b)) => assert_eq!(b.reason(), Reason::MissingCredentials),
        (Admission::Refuse(a), Err(b)) => {
            assert_eq!(a.rejection().reason(), b.reason());
            assert_ne!(b.reason(), Reason::MissingCredentials);
        }
        (a, b) => panic!("the optional gate's {a:?} disagrees with extract's {b:?}"),
    }
}

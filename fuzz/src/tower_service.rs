//! `tower_service`: an arbitrary request through keygate's `ApiKeyLayer` over a trivial inner
//! service, on a `MemoryStore` holding one valid key.
//!
//! Input: the [`request`](crate::request) text format. `{key}` is the valid key, `{wrong}` the
//! same id with another secret (checksum valid), `{unknown}` a well-formed key of an unknown id.
//! `@config: N` picks, by `N % 3`: 0 the layer on a verifier that also reads the query
//! parameter `api_key` and trusts proxies in `10.0.0.0/8` (failed-attempt limit set out of
//! reach, so results do not depend on earlier inputs); 1 the same layer in `optional()` mode;
//! 2 a verifier with a strict failed-attempt limit (one failure a day per client), so lockouts
//! are exercised.
//!
//! Invariants: never a panic; never a 5xx (nothing here can fail but the input); only 200,
//! 400, 401 or 429; a 200 reaches the inner service with the valid key's identity only when
//! the request carries exactly that key and no other credential (or, in optional mode, no
//! credential at all, and then no identity); a request carrying exactly the valid key is
//! answered 200 or 429; every refusal has its `Rejection` in the response extensions, and
//! every 401 a `WWW-Authenticate` challenge; no response header or body shows a secret.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use keygate::rate::RatePolicy;
use keygate::{
    ApiKeyLayer, ApiKeyService, Identity, KeyId, MemoryStore, NewKey, PeerAddr, Rejection, Verifier,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::extract::{keyring, nets};
use crate::request::{self, Sources};

/// The trivial inner service: 200, and which identity (if any) it was handed.
#[derive(Clone, Debug)]
struct Inner;

/// What the inner service saw, put in its response's extensions.
#[derive(Clone, Debug)]
struct Seen(Option<KeyId>);

impl Service<Request<String>> for Inner {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<String>) -> Self::Future {
        let seen = request
            .extensions()
            .get::<Arc<Identity>>()
            .map(|identity| identity.key_id());
        let mut response = Response::new("hello".to_owned());
        response.extensions_mut().insert(Seen(seen));
        ready(Ok(response))
    }
}

struct State {
    runtime: tokio::runtime::Runtime,
    services: [ApiKeyService<Inner, keygate::ProblemJson>; 3],
    id: KeyId,
    key: String,
    wrong: String,
    unknown: String,
}

const SOURCES: Sources = Sources {
    bearer: true,
    header: Some("x-api-key"),
    query: Some("api_key"),
    max_len: 512,
};

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let store = MemoryStore::new();
        let verifier = |failures: &str| {
            let policy = failures.parse::<RatePolicy>().unwrap();
            Verifier::builder(keyring(), store.clone())
                .allow_query_param("api_key")
                .trusted_proxies(nets(&["10.0.0.0/8"]))
                .failure_limit(Some(policy))
                .build()
        };
        let lenient = verifier("1000000000/1s");
        let strict = verifier("1/1d burst 1");
        let spec = NewKey::new("fuzz").scope("orders:read").unwrap();
        let created = runtime.block_on(lenient.admin().create_key(spec)).unwrap();
        let key = created.key.expose_secret().to_owned();
        let id = created.record.id;
        let secret = "W".repeat(keygate::key::SECRET_LEN);
        State {
            services: [
                ApiKeyLayer::new(lenient.clone()).layer(Inner),
                ApiKeyLayer::new(lenient).optional().layer(Inner),
                ApiKeyLayer::new(strict).layer(Inner),
            ],
            runtime,
            id,
            wrong: crate::key_with(crate::PREFIX, id.as_str(), &secret),
            unknown: crate::key_with(crate::PREFIX, "UnknownKey00", &secret),
            key,
        }
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let state = state();
    let parsed = request::parse(
        data,
        &[
            (b"{key}", state.key.as_bytes()),
            (b"{wrong}", state.wrong.as_bytes()),
            (b"{unknown}", state.unknown.as_bytes()),
        ],
    );
    let config = usize::from(parsed.config) % state.services.len();
    let seen = request::credentials(&parsed, &SOURCES);
    let exactly_the_key = !seen.too_long && seen.found == [state.key.as_bytes()];

    let mut request = Request::new(String::new());
    *request.method_mut() = parsed.method.clone();
    *request.uri_mut() = parsed.uri.clone();
    *request.headers_mut() = parsed.headers.clone();
    if let Some(ip) = parsed.peer {
        request
            .extensions_mut()
            .insert(PeerAddr(SocketAddr::new(ip, 40_000)));
    }
    let mut service = state.services[config].clone();
    let response = state.runtime.block_on(async move {
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .unwrap_or_else(|e| match e {});
        service.call(request).await.unwrap_or_else(|e| match e {})
    });

    let status = response.status();
    assert!(
        [
            StatusCode::OK,
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
        .contains(&status),
        "answered {status}"
    );
    if status == StatusCode::OK {
        match response.extensions().get::<Seen>() {
            Some(Seen(Some(id))) => {
                assert_eq!(*id, state.id);
                assert!(exactly_the_key, "200 for {:?}", seen);
            }
            Some(Seen(None)) => {
                assert_eq!(config, 1, "no identity outside optional mode");
                assert!(seen.found.is_empty() && !seen.too_long, "{seen:?}");
            }
            None => panic!("200 without reaching the inner service"),
        }
    } else {
        assert!(response.extensions().get::<Seen>().is_none());
        let rejection = response
            .extensions()
            .get::<Rejection>()
            .unwrap_or_else(|| panic!("a {status} without its Rejection"));
        assert_eq!(rejection.status(), status);
        if status == StatusCode::UNAUTHORIZED {
            assert!(response.headers().contains_key("www-authenticate"));
        }
    }
    if exactly_the_key {
        assert!(
            status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
            "the valid key alone got {status}"
        );
    }
    let secret_at = crate::PREFIX.len() + 14;
    for secret in [&state.key[secret_at..], &state.wrong[secret_at..]] {
        let secret = secret.as_bytes();
        assert!(!crate::contains(response.body().as_bytes(), secret));
        for value in response.headers().values() {
            assert!(!crate::contains(value.as_bytes(), secret));
        }
    }
}

//! The scenario table against every framework. Each framework gets its own verifier over the same
//! store, clock and configuration, so caches start equal and store-call counts are comparable.
//! A case fails if axum or actix-web misses an expectation or if the two answer differently. The
//! cases that apply to gRPC run against the tonic app over a real loopback connection, and fail
//! on a wrong code, message, answer, metadata, retry info or audit event, or on a store-call
//! count other than axum's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use keygate::audit::AuditEvent;
use keygate_tests::actix_app::{actix_app, send_actix};
use keygate_tests::scenario::{
    Case, check, check_audit, check_audit_grpc, check_grpc, configure, configure_environments,
    configure_named, environment_table, named_table, quota_table, same_answer, table,
};
use keygate_tests::tonic_app::{send_tonic, serve_tonic};
use keygate_tests::{
    CapturingSink, EnvironmentKeys, Harness, Keys, NamedKeys, QuotaKeys, Reply, axum_app,
    environments_keyring, send, wait_subscribed,
};

fn headers(case: &Case) -> Vec<(&str, &[u8])> {
    case.headers.iter().map(|(n, v)| (*n, &v[..])).collect()
}

/// One framework's verifier and the audit events it records.
struct Audited {
    verifier: keygate::Verifier,
    events: CapturingSink,
}

type Configure = fn(keygate::VerifierBuilder) -> keygate::VerifierBuilder;

impl Audited {
    fn new(h: &Harness, configure: Configure) -> Self {
        let events = CapturingSink::default();
        let sink = events.clone();
        Self {
            verifier: h.sibling_with(|b| configure(b).audit_sink(sink)),
            events,
        }
    }
}

/// Runs one case: moves the clock, sets the store's state, sends, and returns the reply with the
/// store calls made and the audit events recorded.
async fn run<F, Fut, R>(
    h: &Harness,
    audited: &Audited,
    case: &Case,
    send: F,
) -> (R, usize, Vec<AuditEvent>)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let store = &h.store;
    h.clock.advance(case.advance);
    store.set_down(case.store_down);
    let before = store.finds();
    let reply = send().await;
    let calls = store.finds() - before;
    store.set_down(false);
    audited.verifier.flush_audit().await;
    (reply, calls, audited.events.take())
}

#[actix_web::test]
async fn every_case_passes_on_axum_and_actix_alike() {
    every_case_passes_on(Harness::new()).await;
}

/// The same table on a SQLite file, each framework's verifier subscribed to the file's change
/// feed (polling it every 100 ms throughout).
#[actix_web::test]
async fn every_case_passes_with_the_sqlite_change_feed_on() {
    every_case_passes_on(Harness::sqlite_with_feed().await).await;
}

/// The environment cases (issue 17 item 5) on a verifier of two environments, `live` and
/// `test`: a test key on a live-only route is 403 on axum, actix-web and tonic alike.
#[actix_web::test]
async fn every_environment_case_passes_on_axum_and_actix_alike() {
    let h = Harness::with_keyring(environments_keyring());
    let keys = EnvironmentKeys::create(&h).await;
    let cases = environment_table(&keys);
    let outcome = run_table(&h, &cases, configure_environments).await;
    outcome.assert_passed();
    assert!(
        outcome
            .grpc_codes
            .contains(&(tonic::Code::PermissionDenied as i32))
    );
    assert!(cases.iter().all(|c| c.skip_grpc.is_none()));
}

/// The quota cases (issue 17 item 2) on axum, actix-web and tonic alike, on a manual clock: a key with
/// 5/day on a route of cost 2, credits refilling on schedule, an owner's quota shared by three
/// keys, the tighter of key and owner quota, a scope refusal and a free route spending
/// nothing, a rotated key spending its predecessor's balance.
#[actix_web::test]
async fn every_quota_case_passes_on_axum_and_actix_alike() {
    let h = Harness::new();
    let keys = QuotaKeys::create(&h).await;
    let cases = quota_table(&keys, keygate::clock::Clock::now(&h.clock));
    assert!(cases.len() >= 40, "the table lost cases: {}", cases.len());
    run_table(&h, &cases, configure).await.assert_passed();
}

/// The named-limit cases (issue 17 item 4) on axum, actix-web and tonic alike: a key's `writes`
/// limit on the routes that choose it and no other, the verifier's default for `reads` and a
/// key's `unlimited` switching it off, an owner's named limit shared by its keys, the tighter
/// of key and owner, both items beside a quota's, and a refusal that spends no quota.
#[actix_web::test]
async fn every_named_limit_case_passes_on_axum_and_actix_alike() {
    let h = Harness::new();
    let keys = NamedKeys::create(&h).await;
    let cases = named_table(&keys);
    assert!(cases.len() >= 20, "the table lost cases: {}", cases.len());
    run_table(&h, &cases, configure_named).await.assert_passed();
}

/// What running a table found.
struct Outcome {
    failures: Vec<String>,
    grpc_codes: std::collections::BTreeSet<i32>,
    invalid_key_messages: std::collections::BTreeSet<String>,
}

impl Outcome {
    fn assert_passed(&self) {
        assert!(
            self.failures.is_empty(),
            "{} failures:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

async fn every_case_passes_on(h: Harness) {
    let keys = Keys::create(&h).await;
    let cases = table(&keys);
    let Outcome {
        failures,
        grpc_codes,
        invalid_key_messages,
    } = run_table(&h, &cases, configure).await;
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 35, "the table lost cases: {}", cases.len());
    // The gRPC subset gives every answer keygate-tonic has, and every invalid key reads the same.
    use tonic::Code;
    let want: std::collections::BTreeSet<i32> = [
        Code::Ok,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::Unavailable,
    ]
    .into_iter()
    .map(|c| c as i32)
    .collect();
    assert_eq!(grpc_codes, want, "gRPC codes seen");
    assert_eq!(
        invalid_key_messages.len(),
        1,
        "invalid keys read differently: {invalid_key_messages:?}"
    );
    let skipped: Vec<&str> = cases
        .iter()
        .filter(|c| c.skip_grpc.is_some())
        .map(|c| c.name)
        .collect();
    assert!(
        skipped.len() <= 4,
        "{} cases skipped on gRPC: {skipped:?}",
        skipped.len()
    );
}

/// Runs `cases` on axum, actix-web and tonic, each with its own verifier over `h`'s store and
/// clock, built with `configure`, and compares every answer with the case and across
/// frameworks.
async fn run_table(h: &Harness, cases: &[Case], configure: Configure) -> Outcome {
    let h = h.clone();
    // Each framework has its own verifier (caches, rate limiters, audit trail) over one store
    // and clock.
    let axum_audited = Audited::new(&h, configure);
    if h.invalidation.is_some() {
        // Subscribing empties the cache: let it happen before the cases count store calls.
        wait_subscribed(&axum_audited.verifier).await;
    }
    let axum = axum_app(&axum_audited.verifier);
    let mut axum_replies = Vec::new();
    for case in cases {
        let hs = headers(case);
        let request = keygate_tests::request(case.path, &hs, case.peer);
        axum_replies.push(run(&h, &axum_audited, case, || send(&axum, request)).await);
    }

    let actix_audited = Audited::new(&h, configure);
    if h.invalidation.is_some() {
        wait_subscribed(&actix_audited.verifier).await;
    }
    let actix = actix_web::test::init_service(actix_app(actix_audited.verifier.clone())).await;
    let mut actix_replies = Vec::new();
    for case in cases {
        let hs = headers(case);
        actix_replies.push(
            run(&h, &actix_audited, case, || {
                send_actix(&actix, case.path, &hs, case.peer)
            })
            .await,
        );
    }

    let tonic_audited = Audited::new(&h, configure);
    if h.invalidation.is_some() {
        wait_subscribed(&tonic_audited.verifier).await;
    }
    let channel = serve_tonic(&tonic_audited.verifier).await;
    let mut tonic_replies = Vec::new();
    for case in cases {
        if case.skip_grpc.is_some() {
            // The table's time still passes as in the other runs.
            h.clock.advance(case.advance);
            tonic_replies.push(None);
            continue;
        }
        let hs = headers(case);
        tonic_replies.push(Some(
            run(&h, &tonic_audited, case, || {
                send_tonic(&channel, case.path, &hs, case.peer)
            })
            .await,
        ));
    }

    let mut failures = Vec::new();
    let mut grpc_codes = std::collections::BTreeSet::new();
    let mut invalid_key_messages = std::collections::BTreeSet::new();
    for (((case, (axum, axum_calls, axum_events)), (actix, actix_calls, actix_events)), tonic) in
        cases
            .iter()
            .zip(&axum_replies)
            .zip(&actix_replies)
            .zip(&tonic_replies)
    {
        if let Some((grpc, grpc_calls, grpc_events)) = tonic {
            grpc_codes.insert(grpc.code as i32);
            if case.reason.map(keygate::Reason::problem) == Some(keygate::Problem::InvalidToken) {
                invalid_key_messages.insert(grpc.message.clone());
            }
            if let Err(e) = check_grpc(case, grpc, *grpc_calls) {
                failures.push(format!("tonic | {}: {e}", case.name));
            }
            if let Err(e) = check_audit_grpc(case, grpc_events) {
                failures.push(format!("tonic | {}: {e}", case.name));
            }
            if grpc_calls != axum_calls {
                failures.push(format!(
                    "differ| {}: store calls {axum_calls} (axum) vs {grpc_calls} (tonic)",
                    case.name
                ));
            }
        }
        if let Err(e) = check_audit(case, axum_events) {
            failures.push(format!("axum  | {}: {e}", case.name));
        }
        if let Err(e) = check_audit(case, actix_events) {
            failures.push(format!("actix | {}: {e}", case.name));
        }
        if let Err(e) = check(case, axum, *axum_calls) {
            failures.push(format!("axum  | {}: {e}", case.name));
        }
        if let Err(e) = check(case, actix, *actix_calls) {
            failures.push(format!("actix | {}: {e}", case.name));
        }
        if let Err(e) = same_answer(axum, actix) {
            failures.push(format!("differ| {}: {e}", case.name));
        }
        if axum_calls != actix_calls {
            failures.push(format!(
                "differ| {}: store calls {axum_calls} vs {actix_calls}",
                case.name
            ));
        }
    }
    Outcome {
        failures,
        grpc_codes,
        invalid_key_messages,
    }
}

/// The comparison itself must catch a difference: a reply that differs in one header fails.
#[test]
fn a_difference_between_frameworks_is_caught() {
    let reply = Reply {
        status: http::StatusCode::UNAUTHORIZED,
        headers: http::HeaderMap::new(),
        body: "x".into(),
        rejection: None,
    };
    let mut other = reply.clone();
    other
        .headers
        .insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
    assert!(same_answer(&reply, &reply).is_ok());
    assert!(same_answer(&reply, &other).is_err());
}

/// Sends raw bytes to a server on loopback and returns the status line.
async fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer from {addr}"))
        .expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A CR/LF or a NUL inside the key: both servers refuse the request as malformed HTTP (400)
/// before keygate runs; a 1 MiB key in fragments is refused too; and a well-formed request on
/// the same servers works after all of them.
#[actix_web::test]
async fn crlf_inside_the_key_is_refused_by_both_servers() {
    let h = Harness::new();
    let keys = Keys::create(&h).await;

    let axum_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let axum_addr = axum_listener.local_addr().unwrap();
    let app = axum_app(&h.sibling());
    let axum_server = tokio::spawn(async move {
        axum::serve(
            axum_listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });

    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let actix_addr = std_listener.local_addr().unwrap();
    let verifier = h.sibling();
    let actix_server = actix_web::HttpServer::new(move || actix_app(verifier.clone()))
        .workers(1)
        .listen(std_listener)
        .unwrap()
        .run();
    let actix_handle = actix_server.handle();
    actix_web::rt::spawn(actix_server);

    let (head, tail) = keys.valid.split_at(20);
    let split = format!("GET /hello HTTP/1.1\r\nHost: t\r\nx-api-key: {head}\r\n{tail}\r\n\r\n");
    let good = format!(
        "GET /hello HTTP/1.1\r\nHost: t\r\nx-api-key: {}\r\nConnection: close\r\n\r\n",
        keys.valid
    );
    let nul = format!("GET /hello HTTP/1.1\r\nHost: t\r\nx-api-key: {head}\0{tail}\r\n\r\n");
    for addr in [axum_addr, actix_addr] {
        assert!(
            raw_status(addr, split.as_bytes()).await.contains(" 400 "),
            "{addr}: CR/LF split"
        );
        assert!(
            raw_status(addr, nul.as_bytes()).await.contains(" 400 "),
            "{addr}: NUL byte"
        );
        // SECURITY-CHECKLIST item 19 over real sockets: a 1 MiB credential header written in
        // 1 KiB fragments (the hyper #4081 pattern) is refused (the server's header limit, 431
        // or 400, or keygate's cap, 401), never served, never a 5xx, and the server goes on.
        let status = fragmented_status(addr, 1 << 20).await;
        assert!(
            status.is_empty()
                || [" 400 ", " 401 ", " 431 "]
                    .iter()
                    .any(|s| status.contains(s)),
            "{addr}: 1 MiB header answered {status:?}"
        );
        assert!(
            raw_status(addr, good.as_bytes()).await.contains(" 200 "),
            "{addr}: well-formed"
        );
    }
    actix_handle.stop(true).await;
    axum_server.abort();
}

/// Sends a request whose `x-api-key` is `len` bytes, in 1 KiB writes, and returns the status
/// line (empty when the server closed the connection without one).
async fn fragmented_status(addr: std::net::SocketAddr, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = b"GET /hello HTTP/1.1\r\nHost: t\r\nx-api-key: ".to_vec();
    request.resize(request.len() + len, b'a');
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    for chunk in request.chunks(1024) {
        // The server may answer and close before the end: that is a refusal too.
        if stream.write_all(chunk).await.is_err() {
            break;
        }
    }
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        Ok(Err(_)) => String::new(),
        Err(_) => panic!("{addr}: no answer to a 1 MiB header within 10 s"),
    }
}

/// Issue 18: a canary's refusal is an unknown key's, byte for byte (status, every header, body),
/// cold (loaded from the store) and cached, on axum and actix-web; only the rejection in the
/// response extensions (never sent) tells them apart.
#[tokio::test]
async fn a_canary_is_answered_byte_for_byte_as_an_unknown_key() {
    let h = Harness::new();
    let keys = Keys::create(&h).await;
    let peer = "127.0.0.1:40000";
    let wire = |r: &Reply| {
        let mut headers: Vec<(String, Vec<u8>)> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        headers.sort();
        (r.status, headers, r.body.clone())
    };
    let reason = |r: &Reply| r.rejection.as_ref().map(keygate::Rejection::reason);

    let axum = axum_app(&h.sibling_with(configure));
    let actix = actix_web::test::init_service(actix_app(h.sibling_with(configure))).await;
    for round in ["cold", "cached"] {
        for (framework, unknown, canary) in [
            (
                "axum",
                send(
                    &axum,
                    keygate_tests::request(
                        "/hello",
                        &[(
                            "authorization",
                            format!("Bearer {}", keys.unknown).as_bytes(),
                        )],
                        peer,
                    ),
                )
                .await,
                send(
                    &axum,
                    keygate_tests::request(
                        "/hello",
                        &[(
                            "authorization",
                            format!("Bearer {}", keys.canary).as_bytes(),
                        )],
                        peer,
                    ),
                )
                .await,
            ),
            (
                "actix",
                send_actix(
                    &actix,
                    "/hello",
                    &[(
                        "authorization",
                        format!("Bearer {}", keys.unknown).as_bytes(),
                    )],
                    peer,
                )
                .await,
                send_actix(
                    &actix,
                    "/hello",
                    &[(
                        "authorization",
                        format!("Bearer {}", keys.canary).as_bytes(),
                    )],
                    peer,
                )
                .await,
            ),
        ] {
            assert_eq!(unknown.status, 401, "{framework} {round}");
            assert_eq!(wire(&canary), wire(&unknown), "{framework} {round}");
            assert_eq!(reason(&unknown), Some(keygate::Reason::UnknownKey));
            assert_eq!(reason(&canary), Some(keygate::Reason::Canary));
            assert!(
                !canary.body.contains("canary")
                    && !canary
                        .headers
                        .iter()
                        .any(|(_, v)| v.as_bytes().windows(6).any(|w| w == b"canary")),
                "{framework}: the word reaches the client"
            );
        }
    }
}

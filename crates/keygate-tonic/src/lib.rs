//! tonic (gRPC) integration for [keygate]: the same tower layer as every other framework, with
//! refusals answered as gRPC statuses, the caller's identity for handlers, and scope and
//! environment guards.
//!
//! | item | what it does |
//! | --- | --- |
//! | [`layer`] | keygate's [`ApiKeyLayer`](keygate::ApiKeyLayer) with gRPC refusals, tonic's peer address, the method in audit events |
//! | [`identity`] | the verified caller, from a `tonic::Request` |
//! | [`require_scopes`], [`require_any_scope`] | guard: `PERMISSION_DENIED` unless the key has the scopes |
//! | [`require_environment`] | guard: `PERMISSION_DENIED` unless the key belongs to the environment |
//! | [`cost`] | guard: what a call costs of the key's [quotas](keygate::quota) (`RESOURCE_EXHAUSTED` when one is used up) |
//! | [`route_limit`] | guard: which of the key's [named limits](keygate::rate::NamedLimits) the service spends (`RESOURCE_EXHAUSTED` when it is spent) |
//! | [`status`], [`code`], [`GrpcRejection`] | a [`Rejection`](keygate::Rejection) as a `tonic::Status` |
//! | [`peer_ip`], [`grpc_method`] | where the layer finds the client address and the audit route |
//!
//! # Credentials
//! gRPC metadata are HTTP/2 headers, so clients send the key as they would over HTTP:
//! `authorization: Bearer <key>` or `x-api-key: <key>` (the verifier's credential header), exactly
//! one per call. The layer marks both sensitive before the handler sees them.
//!
//! # Answers
//! A refused call never reaches the service: the layer answers with a trailers-only gRPC
//! response (HTTP 200, `grpc-status`, `grpc-message`), whose message is the problem's
//! client-safe [`detail`](keygate::Problem::detail) and never says why a key failed:
//!
//! | refusal | gRPC code | message |
//! | --- | --- | --- |
//! | no key | `UNAUTHENTICATED` | Send an API key in the Authorization header (Bearer) or the API key header. |
//! | two credentials | `UNAUTHENTICATED` | Send exactly one API key per request. |
//! | any invalid key (malformed, unknown, wrong secret, revoked, disabled, expired, …) | `UNAUTHENTICATED` | The API key is not valid. |
//! | missing scope | `PERMISSION_DENIED` | The API key lacks a scope this resource requires. |
//! | client address not allowed for the key | `PERMISSION_DENIED` | The API key may not be used from this client address. |
//! | key of another environment than the guard requires | `PERMISSION_DENIED` | The API key's environment may not use this resource. |
//! | the key's rate limit, a named limit, or the client's failed attempts | `RESOURCE_EXHAUSTED` + `RetryInfo` | … retry after the time in Retry-After. |
//! | a quota used up | `RESOURCE_EXHAUSTED` (+ `RetryInfo` when it refills) | The API key's quota is used up; it refills at the time in Retry-After, if given. |
//! | key store or rate limiter unreachable | `UNAVAILABLE` | API keys cannot be checked right now; retry later. |
//!
//! `RESOURCE_EXHAUSTED` carries a `google.rpc.RetryInfo` in its details (encoded with
//! `tonic-types`) and the `retry-after`, `ratelimit-policy` and `ratelimit` metadata; see
//! [`status`]. With [`rate_limit_headers`](keygate::ApiKeyLayer::rate_limit_headers), allowed
//! calls of rate-limited keys carry `ratelimit-policy` and `ratelimit` in their initial metadata.
//!
//! # Audit
//! Audit events name the gRPC method as their route (`/package.Service/Method`, see
//! [`grpc_method`]) and `POST` as their method. Their status is the HTTP status, which is 200 for
//! every gRPC answer, refusals included: the outcome and reason say what keygate decided. A code
//! that a handler returns travels in the trailers, which the layer does not read.
//!
//! # Example
//! One service guarded with a scope; other services on the same server can stay public (or put
//! the layer on the whole server with `Server::builder().layer(keygate_tonic::layer(verifier))`).
//! ```
//! use keygate::{Keyring, MemoryStore, NewKey, Verifier};
//! use tonic::service::LayerExt;
//! use tonic::transport::server::TcpIncoming;
//! use tonic::transport::{Channel, Server};
//! use tonic_health::pb::HealthCheckRequest;
//! use tonic_health::pb::health_client::HealthClient;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder(Keyring::development("acme_test")?, MemoryStore::new()).build();
//! let created = verifier.admin().create_key(NewKey::new("docs").scope("health:read")?).await?;
//!
//! // `named_layer` keeps the service's gRPC name, so the router still finds it.
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! let guarded = keygate_tonic::layer(verifier)
//!     .named_layer(keygate_tonic::require_scopes(["health:read"]).named_layer(health));
//! let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
//! let addr = incoming.local_addr()?;
//! tokio::spawn(Server::builder().add_service(guarded).serve_with_incoming(incoming));
//!
//! let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
//! let mut client = HealthClient::new(channel);
//! let mut call = tonic::Request::new(HealthCheckRequest::default());
//! let bearer = format!("Bearer {}", created.key.expose_secret());
//! call.metadata_mut().insert("authorization", bearer.parse()?);
//! client.check(call).await?;
//!
//! let refused = client.check(HealthCheckRequest::default()).await.unwrap_err();
//! assert_eq!(refused.code(), tonic::Code::Unauthenticated);
//! # Ok(())
//! # }
//! ```
//!
//! In a handler, [`identity`] gives the caller:
//! `let caller = keygate_tonic::identity(&request);`.

mod identity;
mod layer;
mod status;

pub use identity::identity;
pub use layer::{
    cost, grpc_method, layer, peer_ip, require_any_scope, require_environment, require_scopes,
    route_limit,
};
pub use status::{GrpcRejection, code, status};

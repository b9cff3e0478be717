//! actix-web integration for [keygate]: a native middleware over the same
//! [`Verifier`](keygate::Verifier) as the tower layer, the caller's [`Identity`] as an extractor,
//! and scope and environment guards.
//!
//! | item | what it does |
//! | --- | --- |
//! | [`ApiKeyAuth`] | middleware (`App::wrap`, `Scope::wrap`, `Resource::wrap`): authenticates every request |
//! | [`Identity`] | extractor: the verified caller (or `Option<Identity>` on optional routes) |
//! | [`RequireScopes`] | middleware: `403 insufficient_scope` unless the key has the scopes |
//! | [`RequireEnvironment`] | middleware: `403 wrong_environment` unless the key belongs to the environment (`live`, `test`) |
//! | [`Cost`] | middleware: what a request to the route costs of the key's [quotas](keygate::quota) (`429 quota_exhausted` when one is used up) |
//! | [`RouteLimit`] | middleware: which of the key's [named limits](keygate::rate::NamedLimits) the route spends (`429 rate_limited` naming the limit when it is spent) |
//!
//! actix-web cannot run a tower layer natively (its requests are `!Send`), so this is an actix
//! `Transform`; every decision is the shared `Verifier`'s, and responses are built by the same
//! [`ProblemJson`](keygate::ProblemJson) as the tower layer, so both frameworks answer the same
//! request with the same status, challenge and body. Rejections are returned as responses, never
//! as `Err`, so outer middleware (CORS, Logger) still runs.
//!
//! # Example
//! ```
//! use actix_web::{App, web};
//! use keygate::{Keyring, MemoryStore, Verifier};
//! use keygate_actix::{ApiKeyAuth, Identity, RequireScopes};
//!
//! async fn hello(identity: Identity) -> String {
//!     format!("hello, {}", identity.name())
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder(Keyring::development("acme_test")?, MemoryStore::new()).build();
//! let app = App::new()
//!     .service(web::resource("/orders").wrap(RequireScopes::all(["orders:read"])).to(hello))
//!     .route("/hello", web::get().to(hello))
//!     .wrap(ApiKeyAuth::new(verifier));
//! # drop(app);
//! # Ok(())
//! # }
//! ```
//!
//! The client address is the connection's peer address; `X-Forwarded-For` is honoured only from
//! the verifier's trusted proxies (the same rule as the tower layer, see [`keygate::extract`]).

mod cost;
mod guard;
mod identity;
mod middleware;
mod require_environment;
mod require_scopes;
mod response;
mod route_limit;
mod view;

pub use cost::{Cost, CostMiddleware};
pub use guard::{GuardMiddleware, RouteGuard};
pub use identity::{Identity, IdentityRejection};
pub use middleware::{ApiKeyAuth, ApiKeyFuture, ApiKeyMiddleware};
pub use require_environment::{RequireEnvironment, RequireEnvironmentMiddleware};
pub use require_scopes::{RequireScopes, RequireScopesMiddleware};
pub use response::ActixRejectionResponse;
pub use route_limit::{RouteLimit, RouteLimitMiddleware};

// Compiles the README's examples (axum and actix-web) as doctests; this crate has both as dependencies.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

//! keygate: API-key authentication for Rust services.
//!
//! A service adds one tower [`ApiKeyLayer`] (axum, tonic, hyper, any tower stack; actix-web has
//! `keygate-actix`, and `keygate-tonic` answers refusals as gRPC statuses), and every request's
//! key is extracted, checked against a [`KeyStore`] through a cache, and the caller's
//! [`Identity`] reaches the handler. Operators manage keys through [`Admin`] (and the
//! `keygate` CLI).
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`key`] | the key format `{prefix}_{id}_{secret}{crc}`: generation, parsing, the plaintext type |
//! | [`pepper`] | HMAC-SHA256 digests with versioned peppers |
//! | [`keyring`] | a deployment's format(s) + peppers, environments (`live`, `test`); mints keys |
//! | [`scope`] | scopes and their matching rules |
//! | [`rate`] | rate policies and limiters |
//! | [`quota`] | quotas per calendar period or credits, the meters that count them, receipts (see `docs/quotas.md`) |
//! | [`record`] | what a store keeps; create and change inputs |
//! | [`store`] | the [`KeyStore`] and [`KeyAdmin`] traits; [`MemoryStore`] |
//! | [`verifier`] | the framework-neutral [`Verifier`] and its cache |
//! | [`extract`] | where credentials and the client address come from |
//! | [`rejection`] | refusal reasons and their HTTP responses |
//! | [`layer`] | the tower [`ApiKeyLayer`] |
//! | [`require_scopes`] | the [`RequireScopes`] route guard |
//! | [`require_environment`] | the [`RequireEnvironment`] route guard |
//! | [`cost`] | the [`Cost`] route guard: what a request to a route costs of the key's quotas |
//! | [`audit`] | audit events and sinks |
//! | [`notice`] | notices to key owners (expiring soon, leaked), their sink, the expiring-soon sweep |
//! | [`metrics`] | the names of the metrics keygate emits through the `metrics` facade |
//! | [`clock`] | the injectable clock |
//!
//! Secrets: a key's plaintext exists only in [`PlaintextKey`] (shown once, at creation) and,
//! during a request, in [`PresentedKey`]; both redact `Debug` and are zeroed on drop. Stores
//! keep only a [`Digest`]. Nothing in keygate logs a key or a digest.

pub mod audit;
pub mod clock;
pub mod cost;
pub mod extract;
pub mod gate;
pub mod identity;
pub mod invalidation;
pub mod key;
pub mod keyring;
pub mod layer;
pub mod metrics;
pub mod notice;
pub mod owner;
pub mod pepper;
pub mod policy;
pub mod quota;
pub mod rate;
pub mod record;
pub mod rejection;
pub mod require_environment;
pub mod require_scopes;
pub mod route_limit;
pub mod scope;
pub mod store;
pub mod verifier;

mod base62;

pub use cost::Cost;
pub use extract::{HttpRequestView, RequestView};
pub use identity::{Identity, Metadata};
pub use invalidation::{Invalidated, Invalidation, InvalidationError, Subscription};
pub use key::{KeyFormat, KeyId, PlaintextKey, PresentedKey};
pub use keyring::{Environment, Keyring, KeyringBuilder, KeyringError};
pub use layer::{ApiKeyLayer, ApiKeyService, PeerAddr};
pub use pepper::{Digest, Pepper, Peppers};
pub use record::{
    CreatedKey, KeyChange, KeyRecord, KeyState, MintedKey, NewKey, RotatedKey, Rotation,
};
pub use rejection::{Problem, ProblemJson, Reason, Rejection, RejectionParts};
pub use require_environment::RequireEnvironment;
pub use require_scopes::RequireScopes;
pub use route_limit::RouteLimit;
pub use scope::{Scope, ScopeRequirement};
pub use store::{KeyAdmin, KeyFilter, KeyPage, KeyStore, MemoryStore, PageRequest, StoreError};
pub use verifier::{Admin, AdminBuilder, Presented, Verifier, VerifierBuilder};

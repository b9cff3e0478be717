//! keygate's leak endpoint for GitHub's
//! [secret-scanning partner program](https://docs.github.com/en/code-security/secret-scanning/secret-scanning-partnership-program/secret-scanning-partner-program):
//! GitHub finds one of your deployment's keys in public code and `POST`s it here; the endpoint
//! checks GitHub's ECDSA P-256 signature, looks the key up, revokes it (or disables it, or only
//! reports it), writes an audit event with the URL where it was found, and answers with the
//! program's true/false-positive feedback.
//!
//! - [`LeakReports`]: the endpoint, framework-agnostic ([`LeakReports::handle`]).
//! - [`KeySource`]: GitHub's signing keys, [fetched](FetchedKeys) from its API and cached, or
//!   [given](StaticKeys).
//! - Adapters: `axum` feature ([`LeakReports::axum_handler`]), `actix` feature
//!   ([`LeakReports::actix_route`]).
//!
//! Setup, the regex to send GitHub, and the security notes: `docs/leaks.md`.
//!
//! # Example (axum)
//! ```
//! # #[cfg(feature = "axum")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use keygate::{Admin, Keyring, MemoryStore};
//! use keygate_leaks::{FetchedKeys, LeakReports};
//!
//! let keyring = Keyring::development("acme_live")?;
//! let store = MemoryStore::new();
//! let leaks = LeakReports::builder(Admin::builder(store).build(), keyring)
//!     .key_source(FetchedKeys::github())
//!     .build();
//! let app: axum::Router = axum::Router::new()
//!     .route("/github/secret-scanning", leaks.axum_handler());
//! # let _ = app;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "axum"))]
//! # fn main() {}
//! ```

#[cfg(feature = "actix")]
mod actix;
#[cfg(feature = "axum")]
mod axum;
pub mod keys;
mod reports;

pub use keys::{FetchedKeys, KeySource, KeySourceError, PublicKey, StaticKeys};
pub use reports::{
    ACTOR, DEFAULT_MAX_BODY, KEY_IDENTIFIER_HEADER, LeakAction, LeakReports, LeakReportsBuilder,
    LeakResponse, SIGNATURE_HEADER,
};

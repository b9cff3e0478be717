//! keygate's webhook [`NoticeSink`](keygate::notice::NoticeSink): each
//! [`Notice`](keygate::notice::Notice) (a key expiring soon, a key leaked) is POSTed as JSON to
//! one URL, signed with HMAC-SHA256 over the timestamp and the body, retried with exponential
//! backoff, from a bounded queue that never makes the caller wait.
//!
//! - [`WebhookSink`]: the sink, its builder and its [`WebhookStats`].
//! - [`WebhookSecret`]: the shared secret; it signs deliveries and verifies them for receivers
//!   written in Rust.
//!
//! The payload, the headers ([`ID_HEADER`], [`TIMESTAMP_HEADER`], [`SIGNATURE_HEADER`]), the
//! exact signed string, verification snippets (Rust, shell with openssl), retries and dedup are
//! described in `docs/notices.md`.

mod signature;
mod sink;

pub use signature::{
    BadSignature, DEFAULT_TOLERANCE, ID_HEADER, MIN_SECRET_LEN, SIGNATURE_HEADER, SecretTooShort,
    TIMESTAMP_HEADER, WebhookSecret,
};
pub use sink::{
    DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_TIMEOUT, WebhookError, WebhookSink, WebhookSinkBuilder, WebhookStats,
};

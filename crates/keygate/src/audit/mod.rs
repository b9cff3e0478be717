//! The audit trail: who was let in, who was refused and why, and what was done to keys.
//!
//! - [`AuditEvent`]: one request decision (outcome, reason, method, route template, client,
//!   status, latency, request id) or one lifecycle change (created, renamed, …, deleted, with
//!   the actor when given). Never a secret or a digest.
//! - [`AuditSink`]: where events go, in batches. [`TracingSink`] (the default) logs them;
//!   keygate-sqlx's store sink keeps them in the key store, beside per-day usage counts.
//!
//! # Never on the request path
//! The adapters (tower layer, actix middleware) build one event per decided request once the
//! response is known, and [`Admin`](crate::Admin) one per change. Events go into a bounded
//! buffer (`try_send`: no waiting, no lock); a background task on the tokio runtime hands them to
//! the sinks in batches. A full buffer drops the event and counts it
//! ([`Verifier::audit_stats`](crate::Verifier::audit_stats)); a sink that fails gets the events
//! again with the next batch, up to a bound, beyond which they are counted as lost. When no
//! sink is enabled (the tracing sink without a subscriber for `keygate::audit`), no event is
//! built at all. Call [`Verifier::flush_audit`](crate::Verifier::flush_audit) on shutdown.

mod event;
mod pipeline;
mod request;
mod sink;

pub use event::{Action, AuditEvent, MAX_LABEL_LEN, Outcome, UnknownName, label};
pub use pipeline::AuditStats;
pub(crate) use pipeline::Auditor;
pub use request::{REQUEST_ID_HEADER, RequestAudit, STALE_DETAIL};
pub use sink::{AuditError, AuditSink, TracingSink};

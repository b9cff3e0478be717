//! The audit trail: who was let in, who was refused and why, and what was done to keys.
//!
//! - [`AuditEvent`]: one request decision (outcome, reason, method, route template, client,
//!   status, latency, request id) or one lifecycle change (created, renamed, …, deleted, with
//!   the actor when given). Never a secret or a digest.
//! - [`AuditSink`]: where events go, in batches. [`TracingSink`] (the default) logs them;
//!   keygate-sqlx's store sink keeps them in the key store, beside per-day usage counts;
//!   [`MemoryAuditTrail`] keeps both in memory.
//! - [`AuditTrail`]: reading a trail back ([`EventQuery`] → [`StoredEvent`]s, and
//!   [`UsageDay`]s), as `keygate audit`, `keygate usage` and keygate-admin do.
//!
//! # Never on the request path
//! The adapters (tower layer, actix middleware) build one event per decided request once the
//! response is known, and [`Admin`](crate::Admin) one per change. Events go into a bounded
//! buffer (one push under a lock that is only ever held for a push or for the writer's swap of
//! the whole buffer: nothing waits on a sink); a background task on the tokio runtime hands them
//! to the sinks in batches. The task lets a partial batch gather for a moment
//! ([`DEFAULT_LINGER`]) without being woken per event, so a busy service hands its sinks a
//! few large batches a second rather than many small ones; it can run on a runtime of its own
//! ([`VerifierBuilder::audit_runtime`](crate::VerifierBuilder::audit_runtime)), away from the
//! threads that serve requests. A full buffer drops the event and counts it
//! ([`Verifier::audit_stats`](crate::Verifier::audit_stats)); a sink that fails gets the events
//! again with the next batch, up to a bound, beyond which they are counted as lost (as is what
//! the writer holds when its runtime shuts down under it). When no
//! sink is enabled (the tracing sink without a subscriber for `keygate::audit`), no event is
//! built at all. Sinks that keep something back between batches (keygate-sqlx's sink counts
//! usage in memory) are flushed about once a [`FLUSH_INTERVAL`] while events flow. Call
//! [`Verifier::flush_audit`](crate::Verifier::flush_audit) on shutdown.
//!
//! # Forged ids cost no storage
//! Anyone can send a million well-formed keys with made-up ids. Written one by one, each would
//! be a row in every sink (and, in keygate-sqlx's sink, a usage row per id and day). So the
//! pipeline folds the denials that do not establish that the presented key exists
//! ([`is_folded`]: unknown id, malformed, bad checksum, missing credential, a locked-out
//! client, store or limiter unavailable) into one [`Action::Denials`] event per (client
//! address, reason) and interval: its [`Folded`] part has the count, the first (`at`) and
//! last time, and a sample of at most [`MAX_FOLDED_SAMPLE`] key ids. A fold closes
//! [`FOLD_INTERVAL`] (a minute) after it opened, on
//! [`Verifier::flush_audit`](crate::Verifier::flush_audit), and when the last verifier handle
//! is dropped, so nothing is lost. At most [`MAX_OPEN_FOLDS`] client folds are open at once;
//! denials from further clients go to one "other clients" fold per reason, counted in
//! [`AuditStats::folded_other_clients`]: memory stays bounded under a flood from any number
//! of addresses. Denials of keys that exist (wrong secret, revoked, disabled, expired, client
//! address or scope refused, the key's rate limit) stay one event each, and so does every use
//! of a canary key ([`Reason::Canary`](crate::Reason::Canary), [`Severity::High`]), though
//! its client is told the unknown key's answer. Folding happens after
//! the response is sent: it changes no response.
//!
//! It is done here, before the sinks, rather than in one sink: a flood costs the log
//! ([`TracingSink`]) as much as a table, and every sink gets the same bound without
//! implementing it.

mod event;
mod fold;
mod pipeline;
mod request;
pub(crate) use request::RequestEvent;
mod sink;
mod trail;

pub use event::{
    Action, AuditEvent, Folded, MAX_FOLDED_SAMPLE, MAX_LABEL_LEN, Outcome, Severity, UnknownName,
    Unrecognized, is_name, label,
};
pub use fold::{FOLD_INTERVAL, MAX_OPEN_FOLDS, is_folded};
pub use pipeline::{AuditStats, DEFAULT_LINGER, FLUSH_INTERVAL};
pub(crate) use pipeline::{Auditor, PipelineConfig};
pub(crate) use request::RequestAudit;
pub use request::{REQUEST_ID_HEADER, STALE_DETAIL};
pub use sink::{AuditError, AuditSink, TracingSink};
pub use trail::{
    AuditTrail, EventQuery, MAX_EVENTS, MemoryAuditTrail, StoredEvent, UsageDay, owner_on_record,
};

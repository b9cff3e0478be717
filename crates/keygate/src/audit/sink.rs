//! Where audit events go: the [`AuditSink`] trait and the `tracing` sink.

use async_trait::async_trait;

use super::AuditEvent;
use crate::store::BoxError;

/// A sink could not take a batch (its store is unreachable). The batch is retried, then
/// dropped and counted in [`AuditStats::lost`](super::AuditStats::lost).
#[derive(Debug, thiserror::Error)]
#[error("audit sink failed: {0}")]
pub struct AuditError(#[source] pub BoxError);

/// Receives audit events in batches, from a background task (never on the request path).
/// Object safe (`Arc<dyn AuditSink>`).
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Writes a batch, in the order the events happened.
    ///
    /// # Errors
    /// [`AuditError`] when the batch could not be written; it is retried.
    async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError>;

    /// Writes what the sink keeps back between batches (for example counts it aggregates in
    /// memory). The pipeline calls it about once a [`FLUSH_INTERVAL`](super::FLUSH_INTERVAL)
    /// while events flow, on [`Verifier::flush_audit`](crate::Verifier::flush_audit), and when
    /// the last verifier handle is dropped. Default: nothing to do.
    ///
    /// # Errors
    /// [`AuditError`] when the sink could not write; it keeps what it held and is flushed
    /// again later.
    async fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }

    /// Whether the sink wants events at all right now. When no sink does, the request path
    /// skips building them. Default: yes.
    fn enabled(&self) -> bool {
        true
    }
}

/// The default sink: one `tracing` event per audit event, at INFO, target `keygate::audit`,
/// with structured fields (among them `severity`, `high` for a canary's use: see
/// [`AuditEvent::severity`]). Strings an outsider can influence (route, request id, actor,
/// detail, owner) are `Debug`-formatted: quoted, with control characters escaped, so a CR/LF cannot
/// forge a log line.
///
/// A folded [`Action::Denials`](super::Action::Denials) event is one line too, with `count`,
/// `last_at_ms`, `sample` (the sampled key ids, space-separated) and `other_clients`.
///
/// Enabled only while a subscriber listens to `keygate::audit` at INFO.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

#[async_trait]
impl AuditSink for TracingSink {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        for event in events {
            emit(event);
        }
        Ok(())
    }

    fn enabled(&self) -> bool {
        tracing::enabled!(target: "keygate::audit", tracing::Level::INFO)
    }
}

fn millis(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn emit(e: &AuditEvent) {
    let at = millis(e.at);
    let folded = e.folded.as_ref();
    let sample = folded.map(|f| {
        f.sample
            .iter()
            .map(crate::KeyId::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    });
    tracing::info!(
        target: "keygate::audit",
        at_ms = at,
        action = e.action.as_str(),
        key_id = e.key_id.as_ref().map(crate::KeyId::as_str),
        outcome = e.outcome.map(super::Outcome::as_str),
        reason = e.reason.map(crate::Reason::as_str),
        severity = e.severity().as_str(),
        method = e.method.as_ref().map(http::Method::as_str),
        route = e.route.as_deref().map(tracing::field::debug),
        client_ip = e.client_ip.map(tracing::field::display),
        status = e.status,
        latency_us = e.latency.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        request_id = e.request_id.as_deref().map(tracing::field::debug),
        actor = e.actor.as_deref().map(tracing::field::debug),
        detail = e.detail.as_deref().map(tracing::field::debug),
        owner = e.owner.as_deref().map(tracing::field::debug),
        count = folded.map(|f| f.count),
        last_at_ms = folded.map(|f| millis(f.last_at)),
        sample = sample.as_deref(),
        other_clients = folded.map(|f| f.other_clients),
        "audit"
    );
}

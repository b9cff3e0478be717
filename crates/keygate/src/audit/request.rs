//! [`RequestAudit`]: what an adapter notes about a request, turned into its audit event once
//! the response is known.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{AuditEvent, Outcome, label};
use crate::Reason;
use crate::key::KeyId;
use crate::rejection::Rejection;
use crate::verifier::{Verified, Verifier};

/// The detail of a request event whose key was accepted on a stale cached record.
pub const STALE_DETAIL: &str = "served stale: key store unavailable";

/// The header a request id is read from.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// One request's audit record in the making. The [gate](crate::gate) starts one when the request
/// arrives (if [`Verifier::audit_enabled`]) and its ticket finishes it with the response,
/// so the event has the final status — including a refusal by a route guard such as
/// [`RequireScopes`](crate::RequireScopes) behind the key check — and the whole latency.
#[derive(Debug)]
pub(crate) struct RequestAudit {
    verifier: Verifier,
    started: Instant,
    /// The event so far: [`RequestAudit::finish`] sets its status, latency and outcome.
    event: RequestEvent,
}

impl RequestAudit {
    /// Starts the record: `route` is the router's template (never the raw path), `request_id`
    /// the raw `x-request-id` value if any.
    #[must_use]
    pub(crate) fn start(
        verifier: &Verifier,
        method: http::Method,
        route: Option<Arc<str>>,
        client_ip: Option<IpAddr>,
        request_id: Option<&[u8]>,
    ) -> Self {
        Self {
            verifier: verifier.clone(),
            started: Instant::now(),
            event: RequestEvent {
                at: verifier.clock().now(),
                latency: Duration::ZERO,
                method,
                route,
                request_id: request_id.map(label),
                client_ip,
                key_id: None,
                status: 0,
                outcome: Outcome::Allowed,
                reason: None,
                stale: false,
            },
        }
    }

    /// When the request arrived, by the verifier's clock.
    #[inline]
    pub(crate) fn at(&self) -> SystemTime {
        self.event.at
    }

    /// Notes the verification that allowed the request: its key, and whether it was served
    /// stale (the event's detail is then [`STALE_DETAIL`]).
    pub(crate) fn allowed(&mut self, verified: &Verified) {
        self.event.key_id = Some(verified.identity.key_id());
        self.event.stale = verified.stale;
    }

    /// Records the event: denied when the response carries a [`Rejection`] (from the key
    /// check or a guard behind it, which may name the key), allowed otherwise.
    pub(crate) fn finish(self, status: u16, rejection: Option<&Rejection>) {
        let Self {
            verifier,
            started,
            mut event,
        } = self;
        if let Some(r) = rejection {
            event.outcome = Outcome::Denied;
            event.reason = Some(r.reason());
            event.key_id = r.key_id().or(event.key_id);
        }
        event.status = status;
        event.latency = started.elapsed();
        verifier.audit_request(event);
    }
}

/// A request's audit event as the pipeline queues it: every value its [`AuditEvent`] has, in
/// two thirds of the room (no empty lifecycle fields, the stale detail a flag). The
/// writer makes the `AuditEvent` ([`RequestEvent::into_event`]).
#[derive(Debug)]
pub(crate) struct RequestEvent {
    pub(super) at: SystemTime,
    pub(super) latency: Duration,
    pub(super) method: http::Method,
    pub(super) route: Option<Arc<str>>,
    pub(super) request_id: Option<Arc<str>>,
    pub(super) client_ip: Option<IpAddr>,
    pub(super) key_id: Option<KeyId>,
    pub(super) status: u16,
    pub(super) outcome: Outcome,
    pub(super) reason: Option<Reason>,
    pub(super) stale: bool,
}

impl RequestEvent {
    /// The event a sink is given.
    pub(crate) fn into_event(self) -> AuditEvent {
        let mut event = AuditEvent::request(self.at, self.outcome)
            .key_id(self.key_id)
            .reason(self.reason);
        event.method = Some(self.method);
        event.route = self.route;
        event.client_ip = self.client_ip;
        event.status = Some(self.status);
        event.latency = Some(self.latency);
        event.request_id = self.request_id;
        if self.stale {
            event.detail = Some(STALE_DETAIL.to_owned());
        }
        event
    }
}

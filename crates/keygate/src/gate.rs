//! The request protocol, end to end, for every framework adapter.
//!
//! A [`Gate`] holds what the tower layer, the actix-web middleware and any other adapter share:
//! the verifier, the rejection format, and the options (`optional`, `rate_limit_headers`). An
//! adapter is a translation shell around three calls:
//!
//! 1. [`Gate::admit`] on a [`RequestView`] of the request: the client address is resolved
//!    once, the audit record started (if a sink is enabled), the credential found and its
//!    format checked, without I/O. The answer is an [`Admission`]: pass (no credential on an
//!    optional gate), refuse, or check.
//! 2. [`Gate::check`] on a [`Check`]: the key is verified (cache, store, limits). The answer is
//!    a [`Passed`] (put [`Passed::identity`] into the request and call the service) or a
//!    [`Refusal`]. [`Gate::check_now`] first answers without awaiting when no I/O is needed
//!    (a cached key), and hands the check back otherwise.
//! 3. The response: a refusal renders as [`RejectionParts`] (status, headers, a static body)
//!    with [`Gate::render`], or through the adapter's own responder from
//!    [`Refusal::rejection`]; an allowed response gets [`Ticket::rate_limit_headers`]. Then
//!    [`Ticket::finish`] records the audit event with the final status.
//!
//! ```
//! use keygate::gate::{Admission, Gate};
//! use keygate::{HttpRequestView, Keyring, MemoryStore, Verifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder(Keyring::development("acme_live")?, MemoryStore::new()).build();
//! let gate = Gate::new(verifier);
//! let headers = http::HeaderMap::new();
//! let uri = http::Uri::from_static("/orders");
//! let view = HttpRequestView::new(&headers, &uri, None);
//! let status = match gate.admit(&view, "GET", || None) {
//!     Admission::Pass(ticket) => {
//!         ticket.finish(200, None);
//!         200
//!     }
//!     Admission::Refuse(refusal) => {
//!         let parts = gate.render(refusal.rejection());
//!         let status = parts.status().as_u16();
//!         refusal.finish(status);
//!         status
//!     }
//!     Admission::Check(check) => match gate.check(check).await {
//!         Ok(passed) => {
//!             let (_identity, ticket) = passed.into_parts();
//!             ticket.finish(200, None);
//!             200
//!         }
//!         Err(refusal) => {
//!             let status = gate.render(refusal.rejection()).status().as_u16();
//!             refusal.finish(status);
//!             status
//!         }
//!     },
//! };
//! assert_eq!(status, 401); // no key
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::audit::{REQUEST_ID_HEADER, RequestAudit};
use crate::extract::RequestView;
use crate::identity::Identity;
use crate::quota::{QuotaReceipt, QuotaReport};
use crate::rate::RateDecision;
use crate::rejection::{ProblemJson, Reason, Rejection, RejectionParts, rate_items};
use crate::route_limit::RouteLimitItems;
use crate::verifier::{Charged, Presented, Verified, Verifier};

/// The request protocol's shared state: a verifier, the rejection format, the options. Cheap to
/// clone (a verifier handle and a few header values).
#[derive(Clone, Debug)]
#[must_use]
pub struct Gate {
    verifier: Verifier,
    problem: ProblemJson,
    optional: bool,
    rate_limit_headers: bool,
    credential_header: Option<HeaderName>,
}

impl Gate {
    /// A gate that requires a valid key on every request; rejections are problem+json in realm
    /// `api`.
    pub fn new(verifier: Verifier) -> Self {
        let credential_header = verifier
            .credential_header()
            .and_then(|name| HeaderName::from_bytes(name.as_bytes()).ok());
        Self {
            verifier,
            problem: ProblemJson::default(),
            optional: false,
            rate_limit_headers: false,
            credential_header,
        }
    }

    /// Names the realm in `WWW-Authenticate` challenges.
    ///
    /// # Panics
    /// If `realm` contains `"`, `\` or control characters.
    pub fn realm(mut self, realm: &str) -> Self {
        self.problem = ProblemJson::with_realm(realm);
        self
    }

    /// Lets requests *without any credential* through, with no identity. A presented but
    /// invalid key is still refused.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Adds the `RateLimit-Policy` and `RateLimit` fields to allowed responses of rate-limited
    /// keys ([`Ticket::rate_limit_headers`]). Refusals (429) carry them either way.
    pub fn rate_limit_headers(mut self) -> Self {
        self.rate_limit_headers = true;
        self
    }

    /// The verifier.
    #[must_use]
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The default rejection format of this gate (its realm).
    #[must_use]
    pub fn problem_json(&self) -> &ProblemJson {
        &self.problem
    }

    /// Whether requests without a credential pass.
    #[must_use]
    pub fn is_optional(&self) -> bool {
        self.optional
    }

    /// The verifier's credential header, parsed once (adapters mark it sensitive and look it up
    /// without parsing its name per request).
    #[must_use]
    pub fn credential_header(&self) -> Option<&HeaderName> {
        self.credential_header.as_ref()
    }

    /// Step 1: resolves the client address (once), starts the audit record, finds the
    /// credential and checks its format. Synchronous and free of I/O.
    ///
    /// `method` is the request's method; `route` gives the router's matched template (never
    /// the raw path) and is called only while audit is enabled.
    pub fn admit<V: RequestView + ?Sized>(
        &self,
        view: &V,
        method: &str,
        route: impl FnOnce() -> Option<Arc<str>>,
    ) -> Admission {
        let verifier = &self.verifier;
        let client_ip = verifier.client_ip(view);
        let audit = verifier.audit_enabled().then(|| {
            Box::new(RequestAudit::start(
                verifier,
                http::Method::from_bytes(method.as_bytes()).unwrap_or_default(),
                route(),
                client_ip,
                view.header_values(REQUEST_ID_HEADER).next(),
            ))
        });
        let ticket = Ticket {
            audit,
            rate: None,
            quota: None,
            headers: self.rate_limit_headers,
            named: None,
        };
        match verifier.presented_from(view, client_ip) {
            Ok(presented) => Admission::Check(Check { presented, ticket }),
            // On an optional gate, no credential at all is no decision (not counted as one).
            Err(Reason::MissingCredentials) if self.optional => Admission::Pass(ticket),
            Err(reason) => Admission::Refuse(Refusal {
                rejection: crate::verifier::refused(reason),
                ticket,
            }),
        }
    }

    /// Step 2: verifies the key (cache, store, rate limits, failed attempts).
    ///
    /// # Errors
    /// A [`Refusal`] for any rejection, including `StoreUnavailable` (503).
    pub async fn check(&self, check: Check) -> Result<Passed, Refusal> {
        let verified = self.verifier.verify_with_rate(&check.presented).await;
        self.conclude(verified, check.ticket)
    }

    /// Step 2 without awaiting, when the answer needs no I/O: the key's record is cached and
    /// fresh, and the rate limiter decides in process (the usual case once a key has been
    /// seen). [`Checked::Now`] holds [`Gate::check`]'s answer; [`Checked::Later`] hands the
    /// check back, untouched (no limit taken, no attempt counted), for [`Gate::check`].
    ///
    /// Adapters call it first: a cached key then costs no future, no allocation and no
    /// task switch. An audited request is judged (expiry, limits) at the clock reading its
    /// audit record took in [`Gate::admit`]: call it right after `admit`.
    pub fn check_now(&self, check: Check) -> Checked {
        let now = check.ticket.audit.as_deref().map(RequestAudit::at);
        match self.verifier.verify_now(&check.presented, now) {
            Some(verified) => Checked::Now(self.conclude(verified, check.ticket)),
            None => Checked::Later(check),
        }
    }

    // Inlined into `check_now` (the adapters' cached-key path): since the quota merge it was
    // a call of its own, ~100 instructions a request under callgrind with a `memcpy` of its
    // answer. The quota part is `receipt`, out of line.
    //
    // `Passed` is the larger variant (224 bytes to the refusal's 136; both carry the ticket):
    // boxing the refusal would add an allocation to every refused request and save nothing.
    #[allow(clippy::result_large_err)]
    #[inline]
    fn conclude(
        &self,
        verified: Result<Verified, Rejection>,
        mut ticket: Ticket,
    ) -> Result<Passed, Refusal> {
        match verified {
            Ok(verified) => {
                if let Some(audit) = ticket.audit.as_mut() {
                    audit.allowed(&verified);
                }
                ticket.rate = verified.rate;
                let quota = verified
                    .quota
                    .map(|charged| self.receipt(charged, &mut ticket));
                Ok(Passed {
                    identity: verified.identity,
                    stale: verified.stale,
                    quota,
                    ticket,
                })
            }
            Err(rejection) => Err(Refusal { rejection, ticket }),
        }
    }

    /// The receipt of the key check's quota charge, and the ticket's report of it when the gate
    /// sends the `RateLimit` fields.
    fn receipt(&self, charged: Charged, ticket: &mut Ticket) -> QuotaReceipt {
        if self.rate_limit_headers {
            ticket.quota = QuotaReport::of(&charged.lines, charged.decision).map(Box::new);
        }
        QuotaReceipt::new(
            charged.lines,
            Arc::clone(self.verifier.quota_meter()),
            Arc::clone(self.verifier.shared_clock()),
            charged.decision,
            1,
        )
    }

    /// The default response for a rejection, as parts (status, headers, a static body).
    #[must_use]
    pub fn render(&self, rejection: &Rejection) -> RejectionParts {
        self.problem.parts(rejection)
    }
}

/// What [`Gate::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    /// No credential, on an optional gate: call the service without an identity.
    Pass(Ticket),
    /// Refused before any cache or store access (missing, malformed, two credentials…).
    Refuse(Refusal),
    /// A well-formed key: run [`Gate::check`].
    Check(Check),
}

/// What [`Gate::check_now`] did.
#[derive(Debug)]
pub enum Checked {
    /// Decided without I/O: [`Gate::check`]'s answer.
    Now(Result<Passed, Refusal>),
    /// Deciding needs I/O (a cache miss, a limiter across instances): run [`Gate::check`].
    Later(Check),
}

/// A well-formed credential waiting for [`Gate::check`]. Owns its data, so it can move into a
/// `'static` future.
#[derive(Debug)]
pub struct Check {
    presented: Presented,
    ticket: Ticket,
}

impl Check {
    /// The presented credential.
    #[must_use]
    pub fn presented(&self) -> &Presented {
        &self.presented
    }
}

/// An accepted request: its identity, and the ticket that finishes it.
///
/// The key's rate decision is kept once, in the ticket (which reports it in the `RateLimit`
/// fields when the gate sends them): 56 bytes less to move through every adapter.
#[derive(Debug)]
pub struct Passed {
    identity: Arc<Identity>,
    stale: bool,
    quota: Option<QuotaReceipt>,
    ticket: Ticket,
}

impl Passed {
    /// What the request was charged of its key's quotas (the default cost, 1); `None` when
    /// neither the key nor its owner has a quota. Adapters put it into the request's
    /// extensions (take it before [`Passed::into_parts`]), for route guards: see
    /// [`Cost`](crate::Cost).
    #[must_use]
    #[inline]
    pub fn take_quota_receipt(&mut self) -> Option<QuotaReceipt> {
        self.quota.take()
    }

    /// Who is calling.
    #[must_use]
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The key's rate limit state after this request; `None` for an unlimited key.
    #[must_use]
    pub fn rate(&self) -> Option<&RateDecision> {
        self.ticket.rate.as_ref()
    }

    /// Whether the key was accepted on a cached record past its TTL because the key store was
    /// unreachable (stale-if-error); the audit event says so.
    #[must_use]
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// The identity (for the request's extensions) and the ticket (for the response).
    #[must_use]
    #[inline]
    pub fn into_parts(self) -> (Arc<Identity>, Ticket) {
        (self.identity, self.ticket)
    }
}

/// A refused request: the rejection, and the ticket that finishes it.
#[derive(Debug)]
pub struct Refusal {
    rejection: Rejection,
    ticket: Ticket,
}

impl Refusal {
    /// Why it was refused.
    #[must_use]
    pub fn rejection(&self) -> &Rejection {
        &self.rejection
    }

    /// The rejection (to insert into the response's extensions) and the ticket.
    #[must_use]
    pub fn into_parts(self) -> (Rejection, Ticket) {
        (self.rejection, self.ticket)
    }

    /// Records the audit event of a refusal answered with `status`.
    pub fn finish(self, status: u16) {
        self.ticket.finish(status, Some(&self.rejection));
    }
}

/// What is left to do once the response is known: `RateLimit` headers on an allowed response,
/// and the audit event.
#[derive(Default)]
pub struct Ticket {
    // Boxed: requests are audited only while a sink is enabled; the ticket stays small
    // when they are not.
    audit: Option<Box<RequestAudit>>,
    /// The key's rate decision (`None`: unlimited); reported only when `headers` is set.
    rate: Option<RateDecision>,
    // Boxed: only keys with a quota, on a gate that sends the `RateLimit` fields, have one.
    quota: Option<Box<QuotaReport>>,
    /// The gate sends the `RateLimit` fields on allowed responses.
    headers: bool,
    // Boxed: only requests through a route's named limit, on such a gate, have them.
    named: Option<Box<RouteLimitItems>>,
}

impl Ticket {
    /// The `RateLimit-Policy` and `RateLimit` fields for an allowed response, when the gate
    /// sends them and the key is rate limited, has a quota or went through a route's named
    /// limits: the `"key"` item, the `"quota"` item, then the named limits' items, in one
    /// list per field; else none.
    pub fn rate_limit_headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + use<> {
        let named = self
            .named
            .as_deref()
            .map_or(&[][..], RouteLimitItems::as_slice);
        let rate = self.rate.as_ref().filter(|_| self.headers);
        rate_items(rate, self.quota.as_deref(), named)
            .into_iter()
            .flatten()
    }

    /// Whether the gate sends the `RateLimit` fields on this request's response (the key's
    /// rate limit, its quota and the route's named limits, settled from the response). When
    /// it does not, the ticket has no fields to add: adapters check it first, so such a
    /// response costs no extension or header lookups.
    #[must_use]
    #[inline]
    pub fn sends_rate_limit_headers(&self) -> bool {
        self.headers
    }

    /// Takes the decisions of the route's named limits from the response's extensions, where
    /// [`RouteLimit`](crate::RouteLimit) guards put them, so the `RateLimit` fields report each
    /// as its own item. Adapters call it before
    /// [`rate_limit_headers`](Ticket::rate_limit_headers).
    pub fn settle_route_limits(&mut self, items: Option<&RouteLimitItems>) {
        if self.headers
            && let Some(items) = items.filter(|items| !items.is_empty())
        {
            self.named = Some(Box::new(items.clone()));
        }
    }

    /// Takes the request's final quota state from the response's extensions, where a route
    /// guard ([`Cost`](crate::Cost)) put its settled [`QuotaReceipt`], so the `"quota"` item
    /// reports what the route really spent. Adapters call it before
    /// [`rate_limit_headers`](Ticket::rate_limit_headers).
    pub fn settle_quota(&mut self, receipt: Option<&QuotaReceipt>) {
        if let Some(quota) = self.quota.as_mut()
            && let Some(report) = receipt.and_then(QuotaReceipt::report)
        {
            **quota = report;
        }
    }

    /// Records the audit event (if audit is enabled): denied when `rejection` is given (the
    /// key check's, or one a guard behind it inserted into the response), else allowed.
    #[inline]
    pub fn finish(self, status: u16, rejection: Option<&Rejection>) {
        if let Some(audit) = self.audit {
            audit.finish(status, rejection);
        }
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("audited", &self.audit.is_some())
            .field("rate", &self.rate)
            .field("quota", &self.quota)
            .field("named", &self.named)
            .finish()
    }
}

/// `template` as a shared string for audit events, without allocating once the thread has
/// seen it: route templates come from the router, a few that repeat on every request, and each
/// audited request carries one. Each thread keeps the last [`ROUTES_PER_THREAD`] it was asked
/// for (compared by content, so a template is never confused with another).
#[must_use]
pub fn shared_route(template: &str) -> Arc<str> {
    thread_local! {
        static ROUTES: std::cell::RefCell<(Vec<Arc<str>>, usize)> =
            const { std::cell::RefCell::new((Vec::new(), 0)) };
    }
    ROUTES.with(|routes| {
        let Ok(mut routes) = routes.try_borrow_mut() else {
            return Arc::from(template);
        };
        let (kept, next) = &mut *routes;
        if let Some(found) = kept.iter().find(|kept| kept.as_ref() == template) {
            return Arc::clone(found);
        }
        let route: Arc<str> = Arc::from(template);
        if kept.len() < ROUTES_PER_THREAD {
            kept.push(Arc::clone(&route));
        } else {
            // Full: replace in turn, so a service with more templates than that still works,
            // allocating for some.
            kept[*next] = Arc::clone(&route);
            *next = (*next + 1) % ROUTES_PER_THREAD;
        }
        route
    })
}

/// How many route templates [`shared_route`] keeps per thread.
pub const ROUTES_PER_THREAD: usize = 32;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Admission, Check, Checked, Gate, ROUTES_PER_THREAD, shared_route};
    use crate::rate::RatePolicy;
    use crate::{HttpRequestView, Keyring, MemoryStore, NewKey, Reason, Verifier};

    fn admitted(gate: &Gate, key: &str) -> Check {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", key.parse().unwrap());
        let uri = http::Uri::from_static("/");
        match gate.admit(&HttpRequestView::new(&headers, &uri, None), "GET", || None) {
            Admission::Check(check) => check,
            other => panic!("not admitted for a check: {other:?}"),
        }
    }

    #[tokio::test]
    async fn check_now_hands_back_a_miss_untouched_and_decides_a_cached_key() {
        let verifier = Verifier::builder(
            Keyring::development("acme_test").unwrap(),
            MemoryStore::new(),
        )
        .build();
        let gate = Gate::new(verifier.clone()).rate_limit_headers();
        // Two requests a minute: a request taken twice would show in `remaining`.
        let limit = RatePolicy::new(2, std::time::Duration::from_secs(60)).unwrap();
        let created = verifier
            .admin()
            .create_key(NewKey::new("k").rate_limit(limit))
            .await
            .unwrap();
        let key = created.key.expose_secret();

        // Cold: handed back, nothing taken; the async check then decides.
        let check = match gate.check_now(admitted(&gate, key)) {
            Checked::Later(check) => check,
            Checked::Now(answer) => panic!("a cold key decided without the store: {answer:?}"),
        };
        let passed = gate.check(check).await.unwrap();
        assert_eq!(passed.rate().map(|rate| rate.remaining), Some(1));

        // Cached: decided at once, with the same limit.
        match gate.check_now(admitted(&gate, key)) {
            Checked::Now(Ok(passed)) => {
                assert_eq!(passed.identity().name(), "k");
                assert_eq!(passed.rate().map(|rate| rate.remaining), Some(0));
            }
            other => panic!("a cached key not decided at once: {other:?}"),
        }
        match gate.check_now(admitted(&gate, key)) {
            Checked::Now(Err(refusal)) => {
                assert_eq!(refusal.rejection().reason(), Reason::RateLimited);
            }
            other => panic!("the third request passed a limit of two: {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_request_through_the_gate_is_one_event_with_its_key_status_and_outcome() {
        use crate::audit::{Action, AuditTrail, EventQuery, MemoryAuditTrail, Outcome};
        let trail = MemoryAuditTrail::new();
        let verifier = Verifier::builder(
            Keyring::development("acme_test").unwrap(),
            MemoryStore::new(),
        )
        .audit_sink(trail.clone())
        .build();
        let gate = Gate::new(verifier.clone());
        let created = verifier.admin().create_key(NewKey::new("k")).await.unwrap();
        let key = created.key.expose_secret();

        let (_, ticket) = gate.check(admitted(&gate, key)).await.unwrap().into_parts();
        ticket.finish(204, None);
        // Revoked: refused, and the event names the key presented.
        crate::KeyAdmin::revoke(&verifier.admin(), &created.record.id)
            .await
            .unwrap();
        let refusal = match gate.check(admitted(&gate, key)).await {
            Err(refusal) => refusal,
            Ok(_) => panic!("a revoked key passed"),
        };
        refusal.finish(401);
        verifier.flush_audit().await;

        let requests: Vec<_> = trail
            .events(&EventQuery::default())
            .await
            .unwrap()
            .into_iter()
            .map(|stored| stored.event)
            .filter(|event| event.action == Action::Request)
            .collect();
        let seen: Vec<_> = requests
            .iter()
            .map(|e| (e.key_id, e.outcome, e.status, e.method.clone()))
            .rev() // the trail reads newest first
            .collect();
        assert_eq!(
            seen,
            [
                (
                    Some(created.record.id),
                    Some(Outcome::Allowed),
                    Some(204),
                    Some(http::Method::GET)
                ),
                (
                    Some(created.record.id),
                    Some(Outcome::Denied),
                    Some(401),
                    Some(http::Method::GET)
                ),
            ]
        );
        assert!(requests.iter().all(|e| e.latency.is_some()));
    }

    /// A clock that counts its readings.
    #[derive(Debug, Clone)]
    struct CountingClock {
        clock: crate::clock::ManualClock,
        reads: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl crate::clock::Clock for CountingClock {
        fn now(&self) -> std::time::SystemTime {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.clock.now()
        }
    }

    /// An audited request's record reads the clock on arrival; its cached check decides
    /// expiry and limits at that reading instead of reading the clock again, and with no
    /// record the check reads it itself.
    #[tokio::test]
    async fn an_audited_cached_check_reads_the_clock_once() {
        use std::sync::atomic::Ordering;
        use std::time::{Duration, SystemTime};

        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = CountingClock {
            clock: crate::clock::ManualClock::new(start),
            reads: Arc::default(),
        };
        let build = |audited: bool| {
            let builder = Verifier::builder(
                Keyring::development("acme_test").unwrap(),
                MemoryStore::new(),
            )
            .clock(clock.clone());
            let builder = if audited {
                builder.audit_sink(crate::audit::MemoryAuditTrail::new())
            } else {
                builder
            };
            builder.build()
        };
        for audited in [true, false] {
            let verifier = build(audited);
            let gate = Gate::new(verifier.clone());
            let created = verifier
                .admin()
                .create_key(NewKey::new("k").expires_at(start + Duration::from_secs(60)))
                .await
                .unwrap();
            let key = created.key.expose_secret();
            gate.check(admitted(&gate, key)).await.unwrap(); // cached now

            clock.reads.store(0, Ordering::Relaxed);
            match gate.check_now(admitted(&gate, key)) {
                Checked::Now(Ok(passed)) => passed.into_parts().1.finish(200, None),
                other => panic!("a cached key not decided at once: {other:?}"),
            }
            assert_eq!(clock.reads.load(Ordering::Relaxed), 1, "audited: {audited}");

            // The reading that serves is the arrival's: past the expiry, refused.
            clock.clock.advance(Duration::from_secs(61));
            match gate.check_now(admitted(&gate, key)) {
                Checked::Now(Err(refusal)) => {
                    assert_eq!(refusal.rejection().reason(), Reason::Expired);
                }
                other => panic!("an expired key passed (audited: {audited}): {other:?}"),
            }
            clock.clock.set(start);
        }
    }

    #[test]
    fn a_shared_route_is_the_same_allocation_each_time_and_never_another_template() {
        let a = shared_route("/orders/{id}");
        let b = shared_route(&String::from("/orders/{id}"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = shared_route("/orders");
        assert_eq!(&*c, "/orders");
        assert!(!Arc::ptr_eq(&a, &c));
        // More templates than the thread keeps: each still comes back as itself.
        for n in 0..(3 * ROUTES_PER_THREAD) {
            let template = format!("/r/{n}");
            assert_eq!(&*shared_route(&template), template);
        }
        assert_eq!(&*shared_route("/orders/{id}"), "/orders/{id}");
    }
}

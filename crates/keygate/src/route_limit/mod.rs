//! A route guard: which of the caller's [named limits](crate::rate::NamedLimits) a route
//! spends from.
//!
//! A key (or its owner) may have several named limits, `reads: 100/1s` and `writes: 10/1s`;
//! the key layer cannot know which route a request will reach, so a route says which limit it
//! spends with [`RouteLimit`], a tower layer placed *inside*
//! [`ApiKeyLayer`](crate::ApiKeyLayer) (with axum: `.route_layer(RouteLimit::new("writes"))`
//! on the route). For each request it takes one request from:
//!
//! - the key's limit of that name, else the verifier's default for the name
//!   ([`VerifierBuilder::default_named_limit`](crate::VerifierBuilder::default_named_limit));
//!   a key's `unlimited` under the name switches the default off;
//! - the owner's limit of that name, counted across all the owner's keys.
//!
//! Both apply: the tighter wins, and the owner's is only taken once the key's allowed. When
//! neither the key, its owner nor the defaults name the limit, the route is not limited by
//! it. A refused request is answered `429 rate_limited` with `Retry-After` and the limit's own
//! item in the `RateLimit-Policy` / `RateLimit` fields (`"writes";q=10;w=1`), and the quota the
//! key layer charged it is refunded. Allowed responses carry the item beside the key layer's
//! `"key"` and `"quota"` items, when the key layer sends the fields
//! ([`ApiKeyLayer::rate_limit_headers`](crate::ApiKeyLayer::rate_limit_headers)).
//!
//! The key's main limit (its `rate_limit`) counts every request of the key, whatever the
//! route; a route's named limit counts only the requests of the routes that name it. A
//! request refused by a named limit has spent one of the main limit (the key layer took it
//! first). Limits live in the verifier's [`RateLimiter`]: in process,
//! or across instances with `keygate_redis::RedisRateLimiter`. A request without an identity
//! gets `401` (the guard fails closed, as [`RequireScopes`](crate::RequireScopes) does).
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use keygate::rate::NamedLimits;
//! use keygate::{ApiKeyLayer, Keyring, MemoryStore, NewKey, RouteLimit, Verifier};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder(Keyring::development("acme_live")?, MemoryStore::new()).build();
//! let limits: NamedLimits = "reads: 100/1s, writes: 2/1m".parse()?;
//! let key = verifier.admin().create_key(NewKey::new("sync").limits(limits)).await?.key;
//!
//! let writes = ServiceBuilder::new()
//!     .layer(ApiKeyLayer::new(verifier))
//!     .layer(RouteLimit::new("writes"))
//!     .service(service_fn(|_: Request<()>| async {
//!         Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("saved")))
//!     }));
//!
//! let mut statuses = Vec::new();
//! for _ in 0..3 {
//!     let request = Request::post("/orders")
//!         .header("authorization", format!("Bearer {}", key.expose_secret()))
//!         .body(())?;
//!     statuses.push(writes.clone().oneshot(request).await?.status());
//! }
//! assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::identity::Identity;
use crate::key::KeyId;
use crate::owner::OwnerTag;
use crate::quota::QuotaReceipt;
use crate::rate::{
    LimitKey, LimitName, LimiterError, NamedLimits, RateDecision, RateLimit, RateLimiter,
    RatePolicy,
};
use crate::rejection::{ProblemJson, Reason, Rejection, RejectionResponse, respond};

/// A key's named limits as its routes apply them, resolved when the key's record is cached
/// (the key's own, the verifier's defaults, the owner's) and shared through its
/// [`Identity`]: no lookup beyond a short scan per guarded request.
pub(crate) struct RouteLimits {
    limiter: Arc<dyn RateLimiter>,
    lines: Box<[NamedLine]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NamedLine {
    name: LimitName,
    key: Option<RatePolicy>,
    owner: Option<(OwnerTag, RatePolicy)>,
}

impl RouteLimits {
    /// The lines of a key with named limits `key`, owned by `owner` (its id's tag and named
    /// limits), under the verifier's `defaults`; `None` when no name has a policy.
    pub(crate) fn resolve(
        limiter: &Arc<dyn RateLimiter>,
        key: &NamedLimits,
        owner: Option<(OwnerTag, &NamedLimits)>,
        defaults: &NamedLimits,
    ) -> Option<Arc<Self>> {
        if key.is_empty() && defaults.is_empty() && owner.is_none_or(|(_, l)| l.is_empty()) {
            return None;
        }
        let mut names: Vec<LimitName> = key
            .iter()
            .chain(defaults.iter())
            .chain(owner.into_iter().flat_map(|(_, limits)| limits.iter()))
            .map(|(name, _)| name)
            .collect();
        names.sort_unstable();
        names.dedup();
        let lines: Box<[NamedLine]> = names
            .into_iter()
            .filter_map(|name| {
                let key = match key.get(name).or_else(|| defaults.get(name)) {
                    Some(RateLimit::Limited(policy)) => Some(policy),
                    _ => None,
                };
                let owner = owner.and_then(|(tag, limits)| match limits.get(name) {
                    Some(RateLimit::Limited(policy)) => Some((tag, policy)),
                    _ => None,
                });
                (key.is_some() || owner.is_some()).then_some(NamedLine { name, key, owner })
            })
            .collect();
        (!lines.is_empty()).then(|| {
            Arc::new(Self {
                limiter: Arc::clone(limiter),
                lines,
            })
        })
    }

    fn line(&self, name: LimitName) -> Option<&NamedLine> {
        self.lines.iter().find(|line| line.name == name)
    }

    /// The key's policy under `name` (its own or the default) and its owner's.
    pub(crate) fn policies(&self, name: LimitName) -> (Option<RatePolicy>, Option<RatePolicy>) {
        self.line(name).map_or((None, None), |line| {
            (line.key, line.owner.map(|(_, policy)| policy))
        })
    }
}

impl fmt::Debug for RouteLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLimits")
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl PartialEq for RouteLimits {
    fn eq(&self, other: &Self) -> bool {
        self.lines == other.lines
    }
}

/// Takes one request from `key` under `policy`, without awaiting when the limiter can.
async fn acquire(
    limiter: &dyn RateLimiter,
    key: LimitKey,
    policy: RatePolicy,
) -> Result<RateDecision, LimiterError> {
    match limiter.acquire_now(key, policy) {
        Some(decided) => decided,
        None => limiter.acquire(key, policy).await,
    }
}

/// The decisions of the named limits a request's routes took, in the order taken: the key
/// layer reports each as its own item of the `RateLimit` fields. [`RouteLimit`] puts them
/// into the response's extensions; adapters hand them to
/// [`Ticket::settle_route_limits`](crate::gate::Ticket::settle_route_limits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteLimitItems(Vec<(LimitName, RateDecision)>);

impl RouteLimitItems {
    /// The decisions, in the order the guards took them (outermost first).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &(LimitName, RateDecision)> {
        self.0.iter()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn as_slice(&self) -> &[(LimitName, RateDecision)] {
        &self.0
    }

    /// Notes the decision of limit `name` (an outer guard's goes before the inner ones').
    pub fn push_front(&mut self, name: LimitName, decision: RateDecision) {
        self.0.insert(0, (name, decision));
    }
}

/// Chooses the named limit a route spends from. See the [module docs](self).
#[derive(Clone, Debug)]
#[must_use]
pub struct RouteLimit<R = ProblemJson> {
    name: LimitName,
    responder: R,
}

impl RouteLimit {
    /// A route that spends from the limit named `name`.
    ///
    /// # Panics
    /// If `name` is not a valid [`LimitName`]: this is route configuration, caught at
    /// start-up. [`RouteLimit::named`] takes a parsed name.
    pub fn new(name: &str) -> Self {
        match LimitName::new(name) {
            Ok(name) => Self::named(name),
            Err(error) => panic!("keygate RouteLimit::new({name:?}): {error}"),
        }
    }

    /// A route that spends from the limit `name`.
    pub fn named(name: LimitName) -> Self {
        Self {
            name,
            responder: ProblemJson::default(),
        }
    }
}

impl<R> RouteLimit<R> {
    /// Shapes the rejection response yourself (see
    /// [`ApiKeyLayer::with_rejection_response`](crate::ApiKeyLayer::with_rejection_response)).
    pub fn with_rejection_response<R2>(self, responder: R2) -> RouteLimit<R2> {
        RouteLimit {
            name: self.name,
            responder,
        }
    }

    /// The limit's name.
    #[must_use]
    pub fn name(&self) -> LimitName {
        self.name
    }

    /// The responder.
    pub fn responder(&self) -> &R {
        &self.responder
    }

    /// Takes one request from the caller's limit of this name (the key's, then its owner's):
    /// the decision to report (the tighter), `None` when no limit of this name applies to the
    /// key.
    ///
    /// # Errors
    /// `MissingCredentials` (401) without an identity, `RateLimited` (429, naming this limit)
    /// when a limit is spent, `LimiterUnavailable` (503) when the limiter cannot decide.
    pub async fn check(
        &self,
        identity: Option<&Identity>,
    ) -> Result<Option<RateDecision>, Rejection> {
        let Some(identity) = identity else {
            crate::metrics::guard_refused(Reason::MissingCredentials);
            tracing::debug!(target: "keygate", "no identity in the request: is the ApiKeyLayer installed outside RouteLimit?");
            return Err(Rejection::new(Reason::MissingCredentials));
        };
        let Some(limits) = identity.route_limits() else {
            return Ok(None);
        };
        let Some(line) = limits.line(self.name) else {
            return Ok(None);
        };
        let id = identity.key_id();
        let limiter = &*limits.limiter;
        let unavailable = |error: LimiterError| limiter_unavailable(&error, id);
        let mut decision = match line.key {
            Some(policy) => Some(
                acquire(limiter, LimitKey::KeyNamed(id, self.name), policy)
                    .await
                    .map_err(unavailable)?,
            ),
            None => None,
        };
        if let Some((tag, policy)) = line.owner
            && decision.is_none_or(|d| d.allowed)
        {
            let owner = acquire(limiter, LimitKey::OwnerNamed(tag, self.name), policy)
                .await
                .map_err(unavailable)?;
            decision = Some(match decision {
                Some(key) if key.remaining <= owner.remaining && owner.allowed => key,
                _ => owner,
            });
        }
        match decision {
            Some(decision) if !decision.allowed => {
                crate::metrics::guard_refused(Reason::RateLimited);
                tracing::debug!(target: "keygate", key_id = %id, limit = %self.name, outcome = "denied", reason = Reason::RateLimited.as_str());
                Err(Rejection::named_rate_limited(id, self.name, decision))
            }
            decided => Ok(decided),
        }
    }
}

fn limiter_unavailable(error: &LimiterError, id: KeyId) -> Rejection {
    crate::metrics::guard_refused(Reason::LimiterUnavailable);
    tracing::warn!(target: "keygate", key_id = %id, %error, "rate limiter failed");
    Rejection::for_key(Reason::LimiterUnavailable, id)
}

impl<S, R: Clone> Layer<S> for RouteLimit<R> {
    type Service = RouteLimitService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteLimitService {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service made by [`RouteLimit`].
#[derive(Clone, Debug)]
pub struct RouteLimitService<S, R> {
    inner: S,
    guard: RouteLimit<R>,
}

impl<S, R> RouteLimitService<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Response future of [`RouteLimitService`]: boxed, as the limiter may be awaited.
pub type RouteLimitFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, R, ReqB, ResB> Service<Request<ReqB>> for RouteLimitService<S, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    R: RejectionResponse<ResB>,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = RouteLimitFuture<Response<ResB>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        // The ready service goes into the future; a fresh clone stays for the next call.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let guard = self.guard.clone();
        Box::pin(async move {
            let identity = request.extensions().get::<Arc<Identity>>().cloned();
            match guard.check(identity.as_deref()).await {
                Err(rejection) => {
                    let receipt = request.extensions_mut().remove::<QuotaReceipt>();
                    let mut response = respond(&guard.responder, rejection);
                    if let Some(receipt) = receipt {
                        // Refused requests spend nothing; the key layer reports the balance.
                        let receipt = crate::quota::refund_refused(receipt).await;
                        response.extensions_mut().insert(receipt);
                    }
                    Ok(response)
                }
                Ok(None) => inner.call(request).await,
                Ok(Some(decision)) => {
                    let mut response = inner.call(request).await?;
                    note(response.extensions_mut(), guard.name, decision);
                    Ok(response)
                }
            }
        })
    }
}

/// Notes an allowed decision of limit `name` in a response's extensions, for the key layer's
/// `RateLimit` fields (an inner guard's refusal carries its own fields: nothing to note).
pub(crate) fn note(extensions: &mut http::Extensions, name: LimitName, decision: RateDecision) {
    if extensions.get::<Rejection>().is_some() {
        return;
    }
    match extensions.get_mut::<RouteLimitItems>() {
        Some(items) => items.push_front(name, decision),
        None => {
            let mut items = RouteLimitItems::default();
            items.push_front(name, decision);
            extensions.insert(items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::InProcessLimiter;

    fn limits(text: &str) -> NamedLimits {
        text.parse().unwrap()
    }

    fn name(text: &str) -> LimitName {
        text.parse().unwrap()
    }

    fn policy(text: &str) -> Option<RatePolicy> {
        Some(text.parse().unwrap())
    }

    fn limiter() -> Arc<dyn RateLimiter> {
        Arc::new(InProcessLimiter::new())
    }

    #[test]
    fn nothing_named_resolves_to_nothing() {
        let none = NamedLimits::new();
        let tag = OwnerTag::of("acme");
        assert!(RouteLimits::resolve(&limiter(), &none, None, &none).is_none());
        assert!(RouteLimits::resolve(&limiter(), &none, Some((tag, &none)), &none).is_none());
        // Only `unlimited` everywhere: no line has a policy.
        let off = limits("writes: unlimited");
        assert!(RouteLimits::resolve(&limiter(), &off, Some((tag, &off)), &none).is_none());
    }

    #[test]
    fn the_key_s_own_then_the_default_then_the_owner_s() {
        let tag = OwnerTag::of("acme");
        let key = limits("writes: 2/1s, reads: unlimited");
        let owner = limits("writes: 10/1s, export: 1/1h");
        let defaults = limits("reads: 100/1s, search: 5/1s");
        let resolved =
            RouteLimits::resolve(&limiter(), &key, Some((tag, &owner)), &defaults).unwrap();
        assert_eq!(
            resolved.policies(name("writes")),
            (policy("2/1s"), policy("10/1s"))
        );
        // The key's `unlimited` switches the default off.
        assert_eq!(resolved.policies(name("reads")), (None, None));
        assert_eq!(resolved.policies(name("search")), (policy("5/1s"), None));
        assert_eq!(resolved.policies(name("export")), (None, policy("1/1h")));
        assert_eq!(resolved.policies(name("other")), (None, None));
        // A key without an owner gets no owner policy.
        let alone = RouteLimits::resolve(&limiter(), &key, None, &defaults).unwrap();
        assert_eq!(alone.policies(name("writes")), (policy("2/1s"), None));
        assert_eq!(alone.policies(name("export")), (None, None));
    }

    #[tokio::test]
    async fn check_takes_the_key_s_then_the_owner_s() {
        let tag = OwnerTag::of("acme");
        let shared = limiter();
        let owner = limits("writes: 3/1h");
        let key_limits = limits("writes: 2/1h");
        let identity = |key: &NamedLimits| {
            Identity::new(
                crate::KeyId::random(),
                "k".into(),
                Some("acme".into()),
                Vec::new(),
                crate::Metadata::new(),
            )
            .with_route_limits(RouteLimits::resolve(
                &shared,
                key,
                Some((tag, &owner)),
                &NamedLimits::new(),
            ))
        };
        let guard = RouteLimit::new("writes");
        let tight = identity(&key_limits);
        let first = guard.check(Some(&tight)).await.unwrap().unwrap();
        // The key's (1 left) is tighter than the owner's (2 left).
        assert_eq!(
            (first.policy, first.remaining),
            ("2/1h".parse().unwrap(), 1)
        );
        guard.check(Some(&tight)).await.unwrap().unwrap();
        let refused = guard.check(Some(&tight)).await.unwrap_err();
        assert_eq!(refused.reason(), Reason::RateLimited);
        assert_eq!(refused.limit_name(), Some(name("writes")));
        // The key's refusal took nothing from the owner: one is left for another key.
        let other = identity(&NamedLimits::new());
        let last = guard.check(Some(&other)).await.unwrap().unwrap();
        assert_eq!((last.remaining, last.allowed), (0, true));
        let spent = guard.check(Some(&other)).await.unwrap_err();
        assert_eq!(spent.rate_decision().map(|d| d.policy), policy("3/1h"));
        let headers: Vec<_> = spent
            .rate_limit_headers()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                "retry-after: 1200",
                "ratelimit-policy: \"writes\";q=3;w=3600",
                "ratelimit: \"writes\";r=0;t=3600"
            ]
        );
        // No identity: 401; a route naming a limit nobody has: allowed, nothing reported.
        assert_eq!(
            guard.check(None).await.unwrap_err().reason(),
            Reason::MissingCredentials
        );
        assert_eq!(RouteLimit::new("reads").check(Some(&tight)).await, Ok(None));
        // A key's own allowance left, its owner's spent: refused, naming the owner's policy.
        let fresh = identity(&limits("writes: 10/1h"));
        let refused = guard.check(Some(&fresh)).await.unwrap_err();
        assert_eq!(refused.rate_decision().map(|d| d.policy), policy("3/1h"));
    }

    #[tokio::test]
    async fn the_tighter_of_key_and_owner_is_reported() {
        let tag = OwnerTag::of("wide");
        let shared = limiter();
        let owner = limits("writes: 3/1h");
        let identity = Identity::new(
            crate::KeyId::random(),
            "k".into(),
            Some("wide".into()),
            Vec::new(),
            crate::Metadata::new(),
        )
        .with_route_limits(RouteLimits::resolve(
            &shared,
            &limits("writes: 100/1h"),
            Some((tag, &owner)),
            &NamedLimits::new(),
        ));
        let guard = RouteLimit::new("writes");
        // The key has 99 left, the owner 2: the owner's is reported.
        let decision = guard.check(Some(&identity)).await.unwrap().unwrap();
        assert_eq!(
            (decision.policy, decision.remaining),
            ("3/1h".parse().unwrap(), 2)
        );
    }

    #[test]
    #[should_panic(expected = "RouteLimit::new")]
    fn a_bad_name_is_a_configuration_error() {
        let _ = RouteLimit::new("Writes");
    }

    #[test]
    fn items_keep_the_outer_guard_first() {
        let decision = RateDecision {
            allowed: true,
            policy: "1/1s".parse().unwrap(),
            remaining: 0,
            reset: std::time::Duration::from_secs(1),
            retry_after: std::time::Duration::ZERO,
        };
        let mut extensions = http::Extensions::new();
        note(&mut extensions, name("inner"), decision);
        note(&mut extensions, name("outer"), decision);
        let items = extensions.get::<RouteLimitItems>().unwrap();
        let names: Vec<_> = items.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["outer", "inner"]);
        // A refusal inside carries its own fields: nothing more is noted.
        let mut refused = http::Extensions::new();
        refused.insert(Rejection::new(Reason::RateLimited));
        note(&mut refused, name("outer"), decision);
        assert!(refused.get::<RouteLimitItems>().is_none());
    }
}

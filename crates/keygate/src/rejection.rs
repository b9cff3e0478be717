//! Why a request was refused, and the HTTP response that says so.
//!
//! Every refusal is a [`Rejection`]: a precise [`Reason`] (kept for logs and audit) plus the key
//! id when a well-formed one was presented. Clients see less than the logs: unknown id, canary,
//! wrong secret, revoked, disabled, expired, malformed, wrong prefix and bad checksum all produce the
//! same `401 invalid_token` response, so a caller cannot probe which keys exist or why one failed.
//!
//! | reason | status | `WWW-Authenticate` | problem `type` |
//! | --- | --- | --- | --- |
//! | missing | 401 | `Bearer realm="…"` | `urn:keygate:problem:missing_credentials` |
//! | two credentials | 400 | `…, error="invalid_request"` | `urn:keygate:problem:invalid_request` |
//! | any invalid key | 401 | `…, error="invalid_token"` | `urn:keygate:problem:invalid_token` |
//! | missing scope | 403 | `…, error="insufficient_scope", scope="…"` | `urn:keygate:problem:insufficient_scope` |
//! | key of another environment than the route requires | 403 | — | `urn:keygate:problem:wrong_environment` |
//! | client IP not allowed | 403 | — | `urn:keygate:problem:forbidden` |
//! | key's rate limit exhausted | 429 | — | `urn:keygate:problem:rate_limited` |
//! | too many failed attempts from the client | 429 | — | `urn:keygate:problem:too_many_failures` |
//! | a [quota](crate::quota) of the key or its owner exhausted | 429 | — | `urn:keygate:problem:quota_exhausted` |
//! | store, rate limiter or quota meter unavailable | 503 | — | `urn:keygate:problem:unavailable` |
//!
//! Bodies are `application/problem+json` (RFC 9457); every rejection carries
//! `Cache-Control: no-store`. A 429 also carries `Retry-After` (whole seconds) and the IETF
//! draft's `RateLimit-Policy` and `RateLimit` fields, naming policy `"key"` (the key's limit) or
//! `"failures"` (the client's failed attempts); see [`RateDecision`]. A `quota_exhausted` 429
//! names policy `"quota"` (next to `"key"` when the key is rate limited too), and carries
//! `Retry-After` only when the quota refills (see [`QuotaReport`]). The [`Rejection`] is also inserted into the response's extensions,
//! so outer layers can tell why. Replace the body with
//! [`ApiKeyLayer::with_rejection_response`](crate::layer::ApiKeyLayer::with_rejection_response).

use std::fmt;
use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::key::{FormatError, KeyId};
use crate::quota::QuotaReport;
use crate::rate::{LimitName, RateDecision};

/// The precise cause of a rejection. Shown in logs and audit, not to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No credential in the request.
    MissingCredentials,
    /// More than one credential (two headers, or a header and the query).
    MultipleCredentials,
    /// The credential header is longer than the configured cap.
    CredentialTooLong,
    /// The key is not of the expected shape.
    Malformed,
    /// The key is for another deployment.
    WrongPrefix,
    /// The key's checksum does not match.
    BadChecksum,
    /// No key has this id.
    UnknownKey,
    /// A [canary](crate::NewKey::canary) was used: the id and secret matched a decoy key. The
    /// client is told exactly what an unknown key gets; only logs, audit and metrics say
    /// `canary`.
    Canary,
    /// The id exists but the secret does not match.
    WrongSecret,
    /// The key was revoked.
    Revoked,
    /// The key is disabled.
    Disabled,
    /// The key has expired.
    Expired,
    /// The key may not be used from the client's address.
    ForbiddenClientIp,
    /// The key lacks a scope the route requires.
    InsufficientScope,
    /// The key belongs to another environment than the route requires
    /// ([`RequireEnvironment`](crate::RequireEnvironment)).
    WrongEnvironment,
    /// The key store could not answer.
    StoreUnavailable,
    /// The key's rate limit is exhausted.
    RateLimited,
    /// The client made too many failed attempts recently; refused before any key check.
    TooManyFailures,
    /// The rate limiter could not answer.
    LimiterUnavailable,
    /// A [quota](crate::quota) of the key or its owner has less left than the request costs.
    QuotaExhausted,
    /// The quota meter could not answer.
    QuotaUnavailable,
}

impl Reason {
    /// Every reason, for parsers and tests.
    pub const ALL: [Self; 21] = [
        Self::MissingCredentials,
        Self::MultipleCredentials,
        Self::CredentialTooLong,
        Self::Malformed,
        Self::WrongPrefix,
        Self::BadChecksum,
        Self::UnknownKey,
        Self::Canary,
        Self::WrongSecret,
        Self::Revoked,
        Self::Disabled,
        Self::Expired,
        Self::ForbiddenClientIp,
        Self::InsufficientScope,
        Self::WrongEnvironment,
        Self::StoreUnavailable,
        Self::RateLimited,
        Self::TooManyFailures,
        Self::LimiterUnavailable,
        Self::QuotaExhausted,
        Self::QuotaUnavailable,
    ];

    /// A stable snake_case name, for logs and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::MultipleCredentials => "multiple_credentials",
            Self::CredentialTooLong => "credential_too_long",
            Self::Malformed => "malformed",
            Self::WrongPrefix => "wrong_prefix",
            Self::BadChecksum => "bad_checksum",
            Self::UnknownKey => "unknown_key",
            Self::Canary => "canary",
            Self::WrongSecret => "wrong_secret",
            Self::Revoked => "revoked",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
            Self::ForbiddenClientIp => "forbidden_client_ip",
            Self::InsufficientScope => "insufficient_scope",
            Self::WrongEnvironment => "wrong_environment",
            Self::StoreUnavailable => "store_unavailable",
            Self::RateLimited => "rate_limited",
            Self::TooManyFailures => "too_many_failures",
            Self::LimiterUnavailable => "limiter_unavailable",
            Self::QuotaExhausted => "quota_exhausted",
            Self::QuotaUnavailable => "quota_unavailable",
        }
    }

    /// Whether this refusal counts as a failed attempt against the client's address: a
    /// well-formed key that is unknown, has the wrong secret, or is revoked, disabled or
    /// expired; and a canary (counted as the unknown key it poses as).
    #[must_use]
    pub fn is_failed_attempt(self) -> bool {
        matches!(
            self,
            Self::UnknownKey
                | Self::Canary
                | Self::WrongSecret
                | Self::Revoked
                | Self::Disabled
                | Self::Expired
        )
    }

    /// The client-facing problem this reason maps to.
    #[must_use]
    pub fn problem(self) -> Problem {
        match self {
            Self::MissingCredentials => Problem::MissingCredentials,
            Self::MultipleCredentials => Problem::InvalidRequest,
            Self::CredentialTooLong
            | Self::Malformed
            | Self::WrongPrefix
            | Self::BadChecksum
            | Self::UnknownKey
            | Self::Canary
            | Self::WrongSecret
            | Self::Revoked
            | Self::Disabled
            | Self::Expired => Problem::InvalidToken,
            Self::ForbiddenClientIp => Problem::Forbidden,
            Self::InsufficientScope => Problem::InsufficientScope,
            Self::WrongEnvironment => Problem::WrongEnvironment,
            Self::StoreUnavailable | Self::LimiterUnavailable | Self::QuotaUnavailable => {
                Problem::Unavailable
            }
            Self::RateLimited => Problem::RateLimited,
            Self::QuotaExhausted => Problem::QuotaExhausted,
            Self::TooManyFailures => Problem::TooManyFailures,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Reason {
    type Err = crate::audit::UnknownName;

    /// Parses [`Reason::as_str`]'s names.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or(crate::audit::UnknownName)
    }
}

impl From<FormatError> for Reason {
    fn from(error: FormatError) -> Self {
        match error {
            FormatError::Malformed => Self::Malformed,
            FormatError::WrongPrefix => Self::WrongPrefix,
            FormatError::BadChecksum => Self::BadChecksum,
        }
    }
}

/// What the client is told: several [`Reason`]s share one problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Problem {
    /// 401 without an `error` attribute.
    MissingCredentials,
    /// 400 `invalid_request`.
    InvalidRequest,
    /// 401 `invalid_token`.
    InvalidToken,
    /// 403 `insufficient_scope`.
    InsufficientScope,
    /// 403, not an authentication challenge.
    Forbidden,
    /// 403: the key's environment may not use the route (no challenge).
    WrongEnvironment,
    /// 503.
    Unavailable,
    /// 429: the key's rate limit.
    RateLimited,
    /// 429: the client's failed attempts.
    TooManyFailures,
    /// 429: a quota is exhausted.
    QuotaExhausted,
}

impl Problem {
    /// The HTTP status.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingCredentials | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::InsufficientScope | Self::Forbidden | Self::WrongEnvironment => {
                StatusCode::FORBIDDEN
            }
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited | Self::TooManyFailures | Self::QuotaExhausted => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// The short code used in the problem `type` URI and RFC 6750 `error` attribute.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::Forbidden => "forbidden",
            Self::WrongEnvironment => "wrong_environment",
            Self::Unavailable => "unavailable",
            Self::RateLimited => "rate_limited",
            Self::TooManyFailures => "too_many_failures",
            Self::QuotaExhausted => "quota_exhausted",
        }
    }

    /// The name of the rate policy a 429 reports in `RateLimit-Policy` and `RateLimit`:
    /// `key` or `failures`.
    #[must_use]
    pub fn rate_policy_name(self) -> Option<&'static str> {
        match self {
            Self::RateLimited => Some("key"),
            Self::TooManyFailures => Some("failures"),
            _ => None,
        }
    }

    /// The problem's short title (RFC 9457 `title`).
    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::MissingCredentials => "API key required",
            Self::InvalidRequest => "Invalid request",
            Self::InvalidToken => "Invalid API key",
            Self::InsufficientScope => "Insufficient scope",
            Self::Forbidden => "Forbidden",
            Self::WrongEnvironment => "Wrong environment",
            Self::Unavailable => "Service unavailable",
            Self::RateLimited | Self::TooManyFailures => "Too many requests",
            Self::QuotaExhausted => "Quota exhausted",
        }
    }

    /// What the client should do (RFC 9457 `detail`); never about the key or why it failed.
    #[must_use]
    pub fn detail(self) -> &'static str {
        match self {
            Self::MissingCredentials => {
                "Send an API key in the Authorization header (Bearer) or the API key header."
            }
            Self::InvalidRequest => "Send exactly one API key per request.",
            Self::InvalidToken => "The API key is not valid.",
            Self::InsufficientScope => "The API key lacks a scope this resource requires.",
            Self::Forbidden => "The API key may not be used from this client address.",
            Self::WrongEnvironment => "The API key's environment may not use this resource.",
            Self::Unavailable => "API keys cannot be checked right now; retry later.",
            Self::RateLimited => {
                "The API key's rate limit is exhausted; retry after the time in Retry-After."
            }
            Self::TooManyFailures => {
                "Too many failed attempts from this client; retry after the time in Retry-After."
            }
            Self::QuotaExhausted => {
                "The API key's quota is used up; it refills at the time in Retry-After, if given."
            }
        }
    }

    /// The `application/problem+json` body for this problem.
    #[must_use]
    pub fn body(self) -> &'static str {
        // Literal, not formatted per refusal: a flood of bad keys costs no allocation here.
        // `bodies_match_their_parts` checks each against type, title, status and detail.
        match self {
            Self::MissingCredentials => {
                r#"{"type":"urn:keygate:problem:missing_credentials","title":"API key required","status":401,"detail":"Send an API key in the Authorization header (Bearer) or the API key header."}"#
            }
            Self::InvalidRequest => {
                r#"{"type":"urn:keygate:problem:invalid_request","title":"Invalid request","status":400,"detail":"Send exactly one API key per request."}"#
            }
            Self::InvalidToken => {
                r#"{"type":"urn:keygate:problem:invalid_token","title":"Invalid API key","status":401,"detail":"The API key is not valid."}"#
            }
            Self::InsufficientScope => {
                r#"{"type":"urn:keygate:problem:insufficient_scope","title":"Insufficient scope","status":403,"detail":"The API key lacks a scope this resource requires."}"#
            }
            Self::Forbidden => {
                r#"{"type":"urn:keygate:problem:forbidden","title":"Forbidden","status":403,"detail":"The API key may not be used from this client address."}"#
            }
            Self::WrongEnvironment => {
                r#"{"type":"urn:keygate:problem:wrong_environment","title":"Wrong environment","status":403,"detail":"The API key's environment may not use this resource."}"#
            }
            Self::Unavailable => {
                r#"{"type":"urn:keygate:problem:unavailable","title":"Service unavailable","status":503,"detail":"API keys cannot be checked right now; retry later."}"#
            }
            Self::RateLimited => {
                r#"{"type":"urn:keygate:problem:rate_limited","title":"Too many requests","status":429,"detail":"The API key's rate limit is exhausted; retry after the time in Retry-After."}"#
            }
            Self::TooManyFailures => {
                r#"{"type":"urn:keygate:problem:too_many_failures","title":"Too many requests","status":429,"detail":"Too many failed attempts from this client; retry after the time in Retry-After."}"#
            }
            Self::QuotaExhausted => {
                r#"{"type":"urn:keygate:problem:quota_exhausted","title":"Quota exhausted","status":429,"detail":"The API key's quota is used up; it refills at the time in Retry-After, if given."}"#
            }
        }
    }
}

/// A refused request: the reason, and the key id when a well-formed key was presented.
///
/// Cheap to clone; inserted into rejection responses' extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    reason: Reason,
    key_id: Option<KeyId>,
    required_scopes: Option<Arc<str>>,
    // Boxed: only 429s carry one, and it would double the size of every `Result` otherwise.
    rate: Option<Box<RateRefusal>>,
    // Boxed likewise: only `quota_exhausted` carries one.
    quota: Option<Box<QuotaReport>>,
}

impl Rejection {
    /// A rejection for `reason`, without a key id.
    #[must_use]
    pub fn new(reason: Reason) -> Self {
        Self {
            reason,
            key_id: None,
            required_scopes: None,
            rate: None,
            quota: None,
        }
    }

    /// A rejection concerning a presented, well-formed key.
    #[must_use]
    pub fn for_key(reason: Reason, key_id: KeyId) -> Self {
        Self {
            reason,
            key_id: Some(key_id),
            required_scopes: None,
            rate: None,
            quota: None,
        }
    }

    /// A 429: `reason` ([`Reason::RateLimited`] or [`Reason::TooManyFailures`]) with the
    /// limiter's decision, for the `Retry-After` and `RateLimit` headers.
    #[must_use]
    pub fn rate_limited(reason: Reason, key_id: KeyId, decision: RateDecision) -> Self {
        Self {
            rate: Some(Box::new(RateRefusal {
                decision,
                name: None,
            })),
            ..Self::for_key(reason, key_id)
        }
    }

    /// A 429 `rate_limited` by a route's named limit `name`
    /// ([`RouteLimit`](crate::RouteLimit)): its item in the `RateLimit` fields is named
    /// after the limit.
    #[must_use]
    pub fn named_rate_limited(key_id: KeyId, name: LimitName, decision: RateDecision) -> Self {
        Self {
            rate: Some(Box::new(RateRefusal {
                decision,
                name: Some(name),
            })),
            ..Self::for_key(Reason::RateLimited, key_id)
        }
    }

    /// A 429 `quota_exhausted`: the refusing quota's report (for `Retry-After` and the
    /// `"quota"` item of the `RateLimit` fields), and the key's rate limit decision when it is
    /// rate limited too (its `"key"` item).
    #[must_use]
    pub fn quota_exhausted(
        key_id: Option<KeyId>,
        report: QuotaReport,
        rate: Option<RateDecision>,
    ) -> Self {
        Self {
            reason: Reason::QuotaExhausted,
            key_id,
            required_scopes: None,
            rate: rate.map(|decision| {
                Box::new(RateRefusal {
                    decision,
                    name: None,
                })
            }),
            quota: Some(Box::new(report)),
        }
    }

    /// A 403 `insufficient_scope` rejection naming the required scopes (space-separated).
    #[must_use]
    pub fn insufficient_scope(key_id: Option<KeyId>, required: Arc<str>) -> Self {
        Self {
            reason: Reason::InsufficientScope,
            key_id,
            required_scopes: Some(required),
            rate: None,
            quota: None,
        }
    }

    /// The precise reason.
    #[must_use]
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// What the client is told.
    #[must_use]
    pub fn problem(&self) -> Problem {
        self.reason.problem()
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.problem().status()
    }

    /// The presented key's id, if one was well-formed.
    #[must_use]
    pub fn key_id(&self) -> Option<KeyId> {
        self.key_id
    }

    /// The scopes a route required, for `insufficient_scope`.
    #[must_use]
    pub fn required_scopes(&self) -> Option<&str> {
        self.required_scopes.as_deref()
    }

    /// For a 429, the rate limiter's decision (retry-after, remaining, reset, policy).
    #[must_use]
    pub fn rate_decision(&self) -> Option<&RateDecision> {
        self.rate.as_deref().map(|refusal| &refusal.decision)
    }

    /// For a 429 of a route's named limit, the limit's name (`None`: the key's own limit, or
    /// the client's failed attempts).
    #[must_use]
    pub fn limit_name(&self) -> Option<LimitName> {
        self.rate.as_deref().and_then(|refusal| refusal.name)
    }

    /// For a 429 `quota_exhausted`, the refusing quota's report.
    #[must_use]
    pub fn quota_report(&self) -> Option<&QuotaReport> {
        self.quota.as_deref()
    }

    /// The headers a 429 carries: `Retry-After`, `RateLimit-Policy` and `RateLimit`. Empty
    /// for other rejections. [`ProblemJson`] adds them; a custom rejection response can too.
    /// A `quota_exhausted` 429 has `Retry-After` only when its quota refills.
    pub fn rate_limit_headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        let reason_name = self.problem().rate_policy_name();
        let rate = self
            .rate
            .as_deref()
            .filter(|_| self.quota.is_none())
            .and_then(|refusal| {
                let name = refusal
                    .name
                    .as_ref()
                    .map(LimitName::as_str)
                    .or(reason_name)?;
                let decision = &refusal.decision;
                let [policy, limit] = decision.headers(name);
                Some([(RETRY_AFTER, decision.retry_after_header()), policy, limit])
            })
            .into_iter()
            .flatten();
        let quota = self
            .quota
            .as_deref()
            .into_iter()
            .flat_map(|report| quota_headers(report, self.rate_decision()));
        rate.chain(quota)
    }
}

/// A rate limit's refusal: the decision, and the named limit's name for a route's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RateRefusal {
    decision: RateDecision,
    name: Option<LimitName>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request rejected: {}", self.reason)?;
        if let Some(id) = self.key_id {
            write!(f, " (key {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

/// A quota refusal's headers: `Retry-After` (when the quota refills) and the `RateLimit` fields
/// with the `"quota"` item, after the `"key"` item when the key is rate limited too.
fn quota_headers(
    report: &QuotaReport,
    rate: Option<&RateDecision>,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + use<> {
    let retry = report
        .retry_after_header()
        .map(|value| (RETRY_AFTER, value));
    let [policy, limit] = combined_rate_headers(rate, Some(report));
    retry.into_iter().chain(policy).chain(limit)
}

/// `RateLimit-Policy` and `RateLimit` with the key's rate limit item (`"key"`) and the quota's
/// item (`"quota"`), each when given, as one list per field.
pub(crate) fn combined_rate_headers(
    rate: Option<&RateDecision>,
    quota: Option<&QuotaReport>,
) -> [Option<(HeaderName, HeaderValue)>; 2] {
    rate_items(rate, quota, &[])
}

/// [`combined_rate_headers`] followed by the items of the route's named limits, in order.
pub(crate) fn rate_items(
    rate: Option<&RateDecision>,
    quota: Option<&QuotaReport>,
    named: &[(LimitName, RateDecision)],
) -> [Option<(HeaderName, HeaderValue)>; 2] {
    if quota.is_none() && named.is_empty() {
        // The common case: no string building beyond the rate limit's own.
        return match rate {
            Some(rate) => rate.headers("key").map(Some),
            None => [None, None],
        };
    }
    let join = |items: Vec<String>| {
        (!items.is_empty())
            .then(|| HeaderValue::try_from(items.join(", ")).ok())
            .flatten()
    };
    let text = |value: HeaderValue| value.to_str().unwrap_or_default().to_owned();
    let policy = rate
        .map(|r| text(r.policy_header("key")))
        .into_iter()
        .chain(quota.map(QuotaReport::policy_item))
        .chain(
            named
                .iter()
                .map(|(name, d)| text(d.policy_header(name.as_str()))),
        )
        .collect();
    let limit = rate
        .map(|r| text(r.limit_header("key")))
        .into_iter()
        .chain(quota.map(QuotaReport::limit_item))
        .chain(
            named
                .iter()
                .map(|(name, d)| text(d.limit_header(name.as_str()))),
        )
        .collect();
    [
        join(policy).map(|value| (RATELIMIT_POLICY, value)),
        join(limit).map(|value| (RATELIMIT, value)),
    ]
}

/// The `RateLimit-Policy` header (IETF draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The `RateLimit` header (IETF draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Turns a [`Rejection`] into a response. Implemented by [`ProblemJson`] (the default) and by
/// any `Fn(&Rejection) -> http::Response<B> + Clone + Send + Sync + 'static`.
pub trait RejectionResponse<B>: Clone + Send + Sync + 'static {
    /// The response for `rejection`. The caller adds the rejection to its extensions.
    fn response(&self, rejection: &Rejection) -> Response<B>;
}

impl<F, B> RejectionResponse<B> for F
where
    F: Fn(&Rejection) -> Response<B> + Clone + Send + Sync + 'static,
{
    fn response(&self, rejection: &Rejection) -> Response<B> {
        self(rejection)
    }
}

/// The default rejection response: RFC 9457 `application/problem+json` with RFC 6750
/// `WWW-Authenticate` challenges.
#[derive(Clone, Debug)]
pub struct ProblemJson {
    realm: Arc<str>,
    missing: HeaderValue,
    invalid_request: HeaderValue,
    invalid_token: HeaderValue,
}

impl Default for ProblemJson {
    fn default() -> Self {
        Self::with_realm("api")
    }
}

impl ProblemJson {
    /// Problem responses whose challenges name `realm`.
    ///
    /// # Panics
    /// If `realm` contains `"`, `\` or control characters (it is a quoted-string).
    #[must_use]
    pub fn with_realm(realm: &str) -> Self {
        assert!(
            realm
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' '),
            "keygate: the realm must be printable ASCII without '\"' or '\\'"
        );
        let challenge = |error: Option<&str>| {
            let text = match error {
                None => format!(r#"Bearer realm="{realm}""#),
                Some(e) => format!(r#"Bearer realm="{realm}", error="{e}""#),
            };
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
        };
        Self {
            missing: challenge(None),
            invalid_request: challenge(Some("invalid_request")),
            invalid_token: challenge(Some("invalid_token")),
            realm: Arc::from(realm),
        }
    }

    /// The realm.
    #[must_use]
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The `WWW-Authenticate` value for a rejection, if its problem is a challenge.
    #[must_use]
    pub fn challenge(&self, rejection: &Rejection) -> Option<HeaderValue> {
        match rejection.problem() {
            Problem::MissingCredentials => Some(self.missing.clone()),
            Problem::InvalidRequest => Some(self.invalid_request.clone()),
            Problem::InvalidToken => Some(self.invalid_token.clone()),
            Problem::InsufficientScope => {
                let scope = rejection.required_scopes().unwrap_or_default();
                HeaderValue::from_str(&format!(
                    r#"Bearer realm="{}", error="insufficient_scope", scope="{scope}""#,
                    self.realm
                ))
                .ok()
            }
            Problem::Forbidden
            | Problem::WrongEnvironment
            | Problem::Unavailable
            | Problem::RateLimited
            | Problem::TooManyFailures
            | Problem::QuotaExhausted => None,
        }
    }
}

impl ProblemJson {
    /// The response for `rejection` as parts every adapter can send as they are: status,
    /// headers, a static body. No allocation, except the `RateLimit` fields of a 429 and the
    /// challenge of a 403 `insufficient_scope`.
    #[must_use]
    pub fn parts(&self, rejection: &Rejection) -> RejectionParts {
        let problem = rejection.problem();
        let mut parts = RejectionParts {
            status: problem.status(),
            body: problem.body(),
            headers: Default::default(),
            len: 0,
        };
        parts.push(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        parts.push(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = self.challenge(rejection) {
            parts.push(WWW_AUTHENTICATE, challenge);
        }
        for (name, value) in rejection.rate_limit_headers() {
            parts.push(name, value);
        }
        parts
    }
}

/// A rejection response as parts: status, at most [`RejectionParts::MAX_HEADERS`] headers, and
/// a static body. Made by [`ProblemJson::parts`]; adapters copy them into their framework's
/// response type.
#[derive(Debug, Clone)]
pub struct RejectionParts {
    status: StatusCode,
    body: &'static str,
    headers: [Option<(HeaderName, HeaderValue)>; RejectionParts::MAX_HEADERS],
    len: usize,
}

impl RejectionParts {
    /// The most headers a rejection carries: `Content-Type`, `Cache-Control`,
    /// `WWW-Authenticate`, `Retry-After`, `RateLimit-Policy`, `RateLimit`.
    pub const MAX_HEADERS: usize = 6;

    fn push(&mut self, name: HeaderName, value: HeaderValue) {
        // The slots are sized for every header a rejection can have; `parts_fit` checks.
        if let Some(slot) = self.headers.get_mut(self.len) {
            *slot = Some((name, value));
            self.len += 1;
        }
    }

    /// The status code.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `application/problem+json` body.
    #[must_use]
    pub fn body(&self) -> &'static str {
        self.body
    }

    /// The headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.headers
            .iter()
            .flatten()
            .map(|(name, value)| (name, value))
    }

    /// The parts as an `http` response.
    #[must_use]
    pub fn into_response<B: From<&'static str>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.reserve(self.len);
        for (name, value) in self.headers.into_iter().flatten() {
            headers.insert(name, value);
        }
        response
    }
}

impl<B> RejectionResponse<B> for ProblemJson
where
    B: From<&'static str>,
{
    fn response(&self, rejection: &Rejection) -> Response<B> {
        self.parts(rejection).into_response()
    }
}

/// Builds the response for `rejection` with `responder` and records the rejection in its
/// extensions.
pub(crate) fn respond<B, R: RejectionResponse<B>>(
    responder: &R,
    rejection: Rejection,
) -> Response<B> {
    let mut response = responder.response(&rejection);
    response.extensions_mut().insert(rejection);
    response
}

#[cfg(test)]
mod tests {
    use super::{Problem, ProblemJson, Reason, Rejection, RejectionParts};
    use crate::KeyId;
    use crate::rate::{RateDecision, RatePolicy};

    const PROBLEMS: [Problem; 10] = [
        Problem::MissingCredentials,
        Problem::InvalidRequest,
        Problem::InvalidToken,
        Problem::InsufficientScope,
        Problem::Forbidden,
        Problem::WrongEnvironment,
        Problem::Unavailable,
        Problem::RateLimited,
        Problem::TooManyFailures,
        Problem::QuotaExhausted,
    ];

    #[test]
    fn bodies_match_their_parts() {
        for problem in PROBLEMS {
            let expected = format!(
                r#"{{"type":"urn:keygate:problem:{}","title":"{}","status":{},"detail":"{}"}}"#,
                problem.code(),
                problem.title(),
                problem.status().as_u16(),
                problem.detail(),
            );
            assert_eq!(problem.body(), expected, "{problem:?}");
        }
    }

    #[test]
    fn a_quota_refusal_of_a_rate_limited_key_lists_both_items() {
        use crate::quota::{Quota, QuotaDecision, QuotaReport};
        let policy: RatePolicy = "100/1m".parse().unwrap();
        let rate = RateDecision {
            allowed: true,
            policy,
            remaining: 99,
            reset: std::time::Duration::from_millis(600),
            retry_after: std::time::Duration::ZERO,
        };
        let quota: Quota = "5/day".parse().unwrap();
        let decision = QuotaDecision {
            allowed: false,
            line: 0,
            remaining: 1,
            size: 5,
            reset: Some(std::time::Duration::from_secs(43_200)),
            windows: [20_000, 0],
        };
        let rejection = Rejection::quota_exhausted(
            Some(KeyId::random()),
            QuotaReport { decision, quota },
            Some(rate),
        );
        let parts = ProblemJson::default().parts(&rejection);
        let headers: Vec<(&str, &str)> = parts
            .headers()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or_default()))
            .collect();
        assert_eq!(
            headers[2..],
            [
                ("retry-after", "43200"),
                (
                    "ratelimit-policy",
                    r#""key";q=100;w=60, "quota";q=5;w=86400"#
                ),
                ("ratelimit", r#""key";r=99;t=1, "quota";r=1;t=43200"#),
            ]
        );
        assert_eq!(parts.status().as_u16(), 429);
    }

    #[test]
    fn parts_fit_every_rejection() {
        let id = Some(KeyId::random());
        let policy: RatePolicy = "10/1s".parse().unwrap();
        let decision = RateDecision {
            allowed: false,
            policy,
            remaining: 0,
            reset: std::time::Duration::from_secs(1),
            retry_after: std::time::Duration::from_millis(100),
        };
        let json = ProblemJson::default();
        for reason in Reason::ALL {
            let rejection = match (reason.problem().rate_policy_name(), id) {
                (Some(_), Some(id)) => Rejection::rate_limited(reason, id, decision),
                (None, _) if reason == Reason::InsufficientScope => {
                    Rejection::insufficient_scope(id, "orders:read".into())
                }
                _ => Rejection::new(reason),
            };
            let parts = json.parts(&rejection);
            let names: Vec<&str> = parts.headers().map(|(n, _)| n.as_str()).collect();
            let mut expected = vec!["content-type", "cache-control"];
            if json.challenge(&rejection).is_some() {
                expected.push("www-authenticate");
            }
            if rejection.rate_decision().is_some() {
                expected.extend(["retry-after", "ratelimit-policy", "ratelimit"]);
            }
            assert_eq!(names, expected, "{reason:?}");
            assert!(names.len() <= RejectionParts::MAX_HEADERS);
            assert_eq!(parts.status(), rejection.status());
            assert_eq!(parts.body(), rejection.problem().body());
            let count = names.len();
            let response: http::Response<String> = parts.clone().into_response();
            assert_eq!(response.headers().len(), count);
            assert_eq!(response.status(), parts.status());
            assert_eq!(response.body(), parts.body());
        }
    }
}

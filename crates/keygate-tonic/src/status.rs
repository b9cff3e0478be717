//! keygate's refusals as gRPC statuses.

use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use keygate::rejection::RejectionResponse;
use keygate::{Problem, Rejection};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The gRPC code a client receives for `problem`.
///
/// | problem | HTTP | gRPC code |
/// | --- | --- | --- |
/// | missing key, any invalid key | 401 | `UNAUTHENTICATED` (16) |
/// | two credentials | 400 | `UNAUTHENTICATED` (16) |
/// | missing scope, client address not allowed, another environment | 403 | `PERMISSION_DENIED` (7) |
/// | the key's rate limit, the client's failed attempts | 429 | `RESOURCE_EXHAUSTED` (8) |
/// | key store or rate limiter unreachable | 503 | `UNAVAILABLE` (14) |
///
/// Two credentials answer `UNAUTHENTICATED`, not `INVALID_ARGUMENT`: gRPC keeps
/// `INVALID_ARGUMENT` for the request message's fields, and a client treats `UNAUTHENTICATED`
/// as "fix your credentials", which is what it has to do. The message tells the two apart.
#[must_use]
pub fn code(problem: Problem) -> Code {
    match problem {
        Problem::InvalidRequest => Code::Unauthenticated,
        other => match other.status() {
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            // No problem has another status today; a later one is still a refusal.
            _ => Code::Unknown,
        },
    }
}

/// The gRPC status for `rejection`: [`code`] of its problem, and the problem's client-safe
/// [`detail`](Problem::detail) as the message, which never says why a key failed (every invalid
/// key gets "The API key is not valid.").
///
/// A `RESOURCE_EXHAUSTED` status also carries:
/// - in its details (`grpc-status-details-bin`), a `google.rpc.Status` with one
///   `google.rpc.RetryInfo` whose `retry_delay` is the `Retry-After` value, in whole seconds
///   (encoded by `tonic-types`, readable with its `StatusExt::get_details_retry_info`);
/// - as metadata, the HTTP answer's `retry-after`, `ratelimit-policy` and `ratelimit` fields.
///
/// Use it where a handler refuses with keygate's own checks, for example a scope per method:
/// `guard.check(identity.as_deref()).map_err(|r| keygate_tonic::status(&r))?`. (Such a refusal
/// happens after the layer's audit decision, which records the call as allowed.)
#[must_use]
pub fn status(rejection: &Rejection) -> Status {
    let problem = rejection.problem();
    let code = code(problem);
    let message = problem.detail();
    let headers: HeaderMap = rejection.rate_limit_headers().collect();
    let retry = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|secs| secs.parse::<u64>().ok());
    let metadata = MetadataMap::from_headers(headers);
    match retry {
        Some(secs) => Status::with_error_details_and_metadata(
            code,
            message,
            ErrorDetails::with_retry_info(Some(Duration::from_secs(secs))),
            metadata,
        ),
        None => Status::with_metadata(code, message, metadata),
    }
}

/// The rejection responder of [`layer`](crate::layer) and [`require_scopes`](crate::require_scopes):
/// every refusal is a trailers-only gRPC response (HTTP 200, `content-type: application/grpc`,
/// `grpc-status`, `grpc-message`; see [`status`]), built by [`Status::into_http`]. The
/// [`Status`] and the [`Rejection`] are both in the response's extensions.
///
/// Works with any response body that has an empty `Default` (tonic's `Body`, axum's `Body`, …).
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcRejection;

impl<B: Default> RejectionResponse<B> for GrpcRejection {
    fn response(&self, rejection: &Rejection) -> Response<B> {
        status(rejection).into_http()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use keygate::rate::{RateDecision, RatePolicy};
    use keygate::rejection::RejectionResponse;
    use keygate::{KeyId, Problem, Reason, Rejection};
    use tonic::{Code, Status};
    use tonic_types::StatusExt;

    use super::{GrpcRejection, code, status};

    fn decision(retry_after: Duration) -> RateDecision {
        RateDecision {
            allowed: false,
            policy: "5/1s burst 5".parse::<RatePolicy>().unwrap(),
            remaining: 0,
            reset: Duration::from_secs(1),
            retry_after,
        }
    }

    /// A rejection of every reason, as the verifier and the scope guard build them.
    fn rejection(reason: Reason) -> Rejection {
        let id = KeyId::random();
        match reason {
            Reason::RateLimited | Reason::TooManyFailures => {
                Rejection::rate_limited(reason, id, decision(Duration::from_millis(1_200)))
            }
            Reason::InsufficientScope => Rejection::insufficient_scope(Some(id), "a:b".into()),
            _ => Rejection::for_key(reason, id),
        }
    }

    #[test]
    fn every_reason_maps_to_its_code_and_a_client_safe_message() {
        for reason in Reason::ALL {
            let rejection = rejection(reason);
            let want = match rejection.status().as_u16() {
                400 | 401 => Code::Unauthenticated,
                403 => Code::PermissionDenied,
                429 => Code::ResourceExhausted,
                503 => Code::Unavailable,
                other => panic!("{reason:?}: unexpected HTTP status {other}"),
            };
            let status = status(&rejection);
            assert_eq!(status.code(), want, "{reason:?}");
            assert_eq!(code(rejection.problem()), want, "{reason:?}");
            assert_eq!(status.message(), rejection.problem().detail(), "{reason:?}");
            assert!(
                !status.message().contains(reason.as_str()),
                "{reason:?}: the message names the reason"
            );
        }
    }

    #[test]
    fn invalid_keys_are_indistinguishable() {
        let invalid: Vec<Status> = Reason::ALL
            .into_iter()
            .filter(|r| r.problem() == Problem::InvalidToken)
            .map(|r| status(&Rejection::new(r)))
            .collect();
        assert!(invalid.len() >= 8);
        for s in &invalid {
            assert_eq!(s.code(), Code::Unauthenticated);
            assert_eq!(s.message(), "The API key is not valid.");
            assert!(s.details().is_empty());
            assert!(s.metadata().is_empty());
        }
    }

    #[test]
    fn exhausted_limits_carry_retry_info_and_the_rate_fields() {
        for reason in [Reason::RateLimited, Reason::TooManyFailures] {
            let status = status(&rejection(reason));
            assert_eq!(status.code(), Code::ResourceExhausted);
            let retry = status
                .get_details_retry_info()
                .expect("RetryInfo in the details");
            // 1.2 s rounds up to Retry-After: 2, and the retry delay says the same.
            assert_eq!(
                retry.retry_delay,
                Some(Duration::from_secs(2)),
                "{reason:?}"
            );
            let meta = status.metadata();
            assert_eq!(meta.get("retry-after").unwrap(), "2");
            let name = reason.problem().rate_policy_name().unwrap();
            assert_eq!(
                meta.get("ratelimit-policy").unwrap().to_str().unwrap(),
                format!(r#""{name}";q=5;w=1"#)
            );
            assert!(meta.get("ratelimit").is_some());
        }
        // Other refusals carry no details.
        assert!(
            status(&rejection(Reason::StoreUnavailable))
                .details()
                .is_empty()
        );
    }

    #[test]
    fn responses_are_trailers_only_grpc_answers() {
        for reason in Reason::ALL {
            let rejection = rejection(reason);
            let response: http::Response<String> = GrpcRejection.response(&rejection);
            assert_eq!(response.status(), http::StatusCode::OK, "{reason:?}");
            let headers = response.headers();
            assert_eq!(headers["content-type"], "application/grpc");
            let code = code(rejection.problem()) as i32;
            assert_eq!(headers["grpc-status"], code.to_string().as_str());
            assert!(headers.contains_key("grpc-message"));
            assert_eq!(
                headers.contains_key("grpc-status-details-bin"),
                rejection.rate_decision().is_some(),
                "{reason:?}"
            );
            assert!(response.body().is_empty(), "trailers-only: no message");
            // What a client decodes from these headers.
            let decoded = Status::from_header_map(headers).unwrap();
            assert_eq!(decoded.code() as i32, code);
            assert_eq!(decoded.message(), rejection.problem().detail());
        }
    }
}

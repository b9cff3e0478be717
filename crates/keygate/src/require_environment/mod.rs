//! A route guard: require the authenticated key to belong to an environment.
//!
//! [`RequireEnvironment`] is a tower layer placed *inside* [`ApiKeyLayer`](crate::ApiKeyLayer),
//! like [`RequireScopes`](crate::RequireScopes) (with axum:
//! `.route_layer(RequireEnvironment::new("live"))` on the route, the key layer on the router).
//! It reads the `Arc<Identity>` the key layer inserted and answers `403` with the problem
//! `urn:keygate:problem:wrong_environment` (reason [`Reason::WrongEnvironment`], no
//! `WWW-Authenticate` challenge: another key is needed, not other credentials of the same
//! key) when the key's [environment](crate::Identity::environment) is not one of those
//! required. It fails closed: a key without an environment (the verifier's keyring has no
//! named environments) is refused the same way, and a request with no identity at all gets
//! `401`.
//!
//! The environment is the stored record's (see [`crate::keyring`]): a client cannot choose it
//! by presenting a key under another prefix.
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use keygate::{ApiKeyLayer, KeyFormat, Keyring, MemoryStore, NewKey, Peppers};
//! use keygate::{RequireEnvironment, Verifier};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keyring = Keyring::builder()
//!     .environment("live", KeyFormat::new("acme_live")?)
//!     .environment("test", KeyFormat::new("acme_test")?)
//!     .build(Peppers::development())?;
//! let verifier = Verifier::builder(keyring, MemoryStore::new()).build();
//! let live = verifier.admin().create_key(NewKey::new("billing")).await?;
//! let test = verifier.admin().create_key(NewKey::new("ci").environment("test")).await?;
//!
//! // Payouts move real money: live keys only.
//! let payouts = ServiceBuilder::new()
//!     .layer(ApiKeyLayer::new(verifier))
//!     .layer(RequireEnvironment::new("live"))
//!     .service(service_fn(|_: Request<()>| async {
//!         Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("sent")))
//!     }));
//!
//! for (key, status) in [(live.key, StatusCode::OK), (test.key, StatusCode::FORBIDDEN)] {
//!     let request = Request::post("/payouts")
//!         .header("authorization", format!("Bearer {}", key.expose_secret()))
//!         .body(())?;
//!     assert_eq!(payouts.clone().oneshot(request).await?.status(), status);
//! }
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::identity::Identity;
use crate::keyring::valid_environment_name;
use crate::rejection::{ProblemJson, Reason, Rejection, RejectionResponse, respond};
use crate::require_scopes::GuardFuture;

/// Requires the caller's key to belong to one of some environments. See the
/// [module docs](self).
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireEnvironment<R = ProblemJson> {
    environments: Arc<[Arc<str>]>,
    responder: R,
}

impl RequireEnvironment {
    /// Requires environment `name`.
    ///
    /// # Panics
    /// If `name` is not a valid environment name (see
    /// [`KeyringBuilder::environment`](crate::keyring::KeyringBuilder::environment)): this is
    /// route configuration, caught at start-up.
    pub fn new(name: &str) -> Self {
        Self::any([name])
    }

    /// Requires one of the environments `names`.
    ///
    /// # Panics
    /// If a name is invalid, or `names` is empty.
    pub fn any<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let environments: Arc<[Arc<str>]> = names
            .into_iter()
            .map(|name| {
                let name = name.as_ref();
                assert!(
                    valid_environment_name(name),
                    "keygate: {name:?} is not a valid environment name"
                );
                Arc::from(name)
            })
            .collect();
        assert!(
            !environments.is_empty(),
            "keygate: RequireEnvironment needs at least one environment"
        );
        Self {
            environments,
            responder: ProblemJson::default(),
        }
    }

    /// Names the realm in the challenge of a request without a key (`401`).
    ///
    /// # Panics
    /// If `realm` contains `"`, `\` or control characters.
    pub fn realm(mut self, realm: &str) -> Self {
        self.responder = ProblemJson::with_realm(realm);
        self
    }
}

impl<R> RequireEnvironment<R> {
    /// Shapes the rejection response yourself (see
    /// [`ApiKeyLayer::with_rejection_response`](crate::ApiKeyLayer::with_rejection_response)).
    pub fn with_rejection_response<R2>(self, responder: R2) -> RequireEnvironment<R2> {
        RequireEnvironment {
            environments: self.environments,
            responder,
        }
    }

    /// The environments accepted.
    pub fn environments(&self) -> impl Iterator<Item = &str> {
        self.environments.iter().map(|name| &**name)
    }

    /// The responder of refusals.
    pub(crate) fn responder(&self) -> &R {
        &self.responder
    }

    /// Checks an identity (or its absence) against the requirement. A refusal is counted in
    /// [`GUARD_REFUSALS`](crate::metrics::GUARD_REFUSALS).
    ///
    /// # Errors
    /// `MissingCredentials` without an identity, `WrongEnvironment` when the key's environment
    /// is not accepted (or the key has none).
    pub fn check(&self, identity: Option<&Identity>) -> Result<(), Rejection> {
        match identity {
            None => {
                crate::metrics::guard_refused(Reason::MissingCredentials);
                tracing::debug!(target: "keygate", "no identity in the request: is the ApiKeyLayer installed outside RequireEnvironment?");
                Err(Rejection::new(Reason::MissingCredentials))
            }
            Some(identity)
                if identity
                    .environment()
                    .is_some_and(|env| self.environments.iter().any(|e| **e == *env)) =>
            {
                Ok(())
            }
            Some(identity) => {
                crate::metrics::guard_refused(Reason::WrongEnvironment);
                tracing::debug!(target: "keygate", key_id = %identity.key_id(), environment = identity.environment(), outcome = "denied", reason = Reason::WrongEnvironment.as_str());
                Err(Rejection::for_key(
                    Reason::WrongEnvironment,
                    identity.key_id(),
                ))
            }
        }
    }
}

impl<S, R: Clone> Layer<S> for RequireEnvironment<R> {
    type Service = RequireEnvironmentService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireEnvironmentService {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service made by [`RequireEnvironment`].
#[derive(Clone, Debug)]
pub struct RequireEnvironmentService<S, R> {
    inner: S,
    guard: RequireEnvironment<R>,
}

impl<S, R> RequireEnvironmentService<S, R> {
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

impl<S, R, ReqB, ResB> Service<Request<ReqB>> for RequireEnvironmentService<S, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    R: RejectionResponse<ResB>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let identity = request.extensions().get::<Arc<Identity>>().map(|i| &**i);
        match self.guard.check(identity) {
            Ok(()) => GuardFuture::inner(self.inner.call(request)),
            // A refused request spends no quota: the key layer's charge is refunded.
            Err(rejection) => GuardFuture::refused(
                respond(self.guard.responder(), rejection),
                request
                    .extensions_mut()
                    .remove::<crate::quota::QuotaReceipt>(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyId;
    use crate::identity::Metadata;

    fn identity(environment: Option<&str>) -> Identity {
        let identity = Identity::new(
            KeyId::random(),
            "k".into(),
            None,
            Vec::new(),
            Metadata::new(),
        );
        match environment {
            Some(env) => identity.with_environment(env),
            None => identity,
        }
    }

    #[test]
    fn only_the_required_environments_pass() {
        let live = RequireEnvironment::new("live");
        assert!(live.check(Some(&identity(Some("live")))).is_ok());
        for other in [Some("test"), Some("livex"), None] {
            let who = identity(other);
            let refused = live.check(Some(&who)).err();
            assert_eq!(
                refused.as_ref().map(Rejection::reason),
                Some(Reason::WrongEnvironment),
                "{other:?}"
            );
            assert_eq!(refused.and_then(|r| r.key_id()), Some(who.key_id()));
        }
        assert_eq!(
            live.check(None).err().map(|r| r.reason()),
            Some(Reason::MissingCredentials)
        );
        let either = RequireEnvironment::any(["live", "staging"]);
        assert_eq!(
            either.environments().collect::<Vec<_>>(),
            ["live", "staging"]
        );
        assert!(either.check(Some(&identity(Some("staging")))).is_ok());
        assert!(either.check(Some(&identity(Some("test")))).is_err());
    }

    #[test]
    #[should_panic(expected = "not a valid environment name")]
    fn a_bad_name_is_a_configuration_error() {
        let _ = RequireEnvironment::new("Live");
    }
}

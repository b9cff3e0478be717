use std::future::Ready;

use actix_web::Error;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use keygate::ProblemJson;

use crate::guard::{self, GuardMiddleware};
use crate::response::ActixRejectionResponse;

/// Requires the caller's key to belong to an [environment](keygate::keyring) (`live`,
/// `test`); wrap a scope or resource *inside* [`ApiKeyAuth`] (in actix the last `wrap` runs
/// first, so put `ApiKeyAuth` on the app or after this guard).
///
/// Answers exactly as `keygate::RequireEnvironment` does for tower: `403` with the problem
/// `urn:keygate:problem:wrong_environment` when the key is of another environment (or of none:
/// it fails closed), or `401` when there is no identity at all.
///
/// ```
/// use actix_web::{App, web};
/// use keygate::{KeyFormat, Keyring, MemoryStore, Peppers, Verifier};
/// use keygate_actix::{ApiKeyAuth, RequireEnvironment};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let keyring = Keyring::builder()
///     .environment("live", KeyFormat::new("acme_live")?)
///     .environment("test", KeyFormat::new("acme_test")?)
///     .build(Peppers::development())?;
/// let verifier = Verifier::builder(keyring, MemoryStore::new()).build();
/// let app = App::new()
///     .service(
///         web::resource("/payouts")
///             .wrap(RequireEnvironment::new("live"))
///             .to(|| async { "sent" }),
///     )
///     .wrap(ApiKeyAuth::new(verifier));
/// # drop(app);
/// # Ok(())
/// # }
/// ```
///
/// [`ApiKeyAuth`]: crate::ApiKeyAuth
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireEnvironment<R = ProblemJson> {
    guard: keygate::RequireEnvironment,
    responder: R,
}

impl RequireEnvironment {
    /// Requires environment `name`.
    ///
    /// # Panics
    /// If `name` is not a valid environment name: this is route configuration, caught at
    /// start-up.
    pub fn new(name: &str) -> Self {
        Self::from_guard(keygate::RequireEnvironment::new(name))
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
        Self::from_guard(keygate::RequireEnvironment::any(names))
    }

    fn from_guard(guard: keygate::RequireEnvironment) -> Self {
        Self {
            guard,
            responder: ProblemJson::default(),
        }
    }

    /// Names the realm in the challenge of a request without a key.
    ///
    /// # Panics
    /// If `realm` contains `"`, `\` or control characters.
    pub fn realm(mut self, realm: &str) -> Self {
        self.responder = ProblemJson::with_realm(realm);
        self
    }
}

impl<R> RequireEnvironment<R> {
    /// Shapes the rejection response yourself.
    pub fn with_rejection_response<R2>(self, responder: R2) -> RequireEnvironment<R2> {
        RequireEnvironment {
            guard: self.guard,
            responder,
        }
    }
}

impl<S, B, R> Transform<S, ServiceRequest> for RequireEnvironment<R>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    R: ActixRejectionResponse,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RequireEnvironmentMiddleware<S, R>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        guard::wrap(service, &self.guard, &self.responder)
    }
}

/// The service made by [`RequireEnvironment`].
pub type RequireEnvironmentMiddleware<S, R> = GuardMiddleware<S, keygate::RequireEnvironment, R>;

use std::future::{Ready, ready};
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{AUTHORIZATION, HeaderName};
use actix_web::{Error, HttpMessage};
use std::sync::Arc;

use keygate::audit::{REQUEST_ID_HEADER, RequestAudit};
use keygate::{ProblemJson, Rejection, Verifier};

use crate::response::{ActixRejectionResponse, respond, to_actix};
use crate::view::ActixRequestView;

type LocalBoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// Authenticates requests with a [`Verifier`]; register with `App::wrap` (or on a scope or
/// resource). The same options as [`keygate::ApiKeyLayer`]: `realm`, `optional`,
/// `rate_limit_headers`, `with_rejection_response`.
///
/// A valid key: the request goes on with an `Arc<keygate::Identity>` in its extensions (read it
/// with the [`Identity`](crate::Identity) extractor); the credential headers are marked sensitive
/// first. Anything else: the middleware answers itself, as a response (never `Err`), with the
/// [`Rejection`](keygate::Rejection) in the response extensions.
#[derive(Clone, Debug)]
#[must_use]
pub struct ApiKeyAuth<R = ProblemJson> {
    verifier: Verifier,
    responder: R,
    optional: bool,
    rate_limit_headers: bool,
}

impl ApiKeyAuth {
    /// Requires a valid key on every request; rejections are problem+json in realm `api`.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            responder: ProblemJson::default(),
            optional: false,
            rate_limit_headers: false,
        }
    }

    /// Names the realm in `WWW-Authenticate` challenges.
    ///
    /// # Panics
    /// If `realm` contains `"`, `\` or control characters.
    pub fn realm(mut self, realm: &str) -> Self {
        self.responder = ProblemJson::with_realm(realm);
        self
    }
}

impl<R> ApiKeyAuth<R> {
    /// Shapes rejection responses yourself: `f` receives the [`Rejection`](keygate::Rejection)
    /// and returns the response; the rejection is still inserted into its extensions.
    pub fn with_rejection_response<R2>(self, responder: R2) -> ApiKeyAuth<R2> {
        ApiKeyAuth {
            verifier: self.verifier,
            responder,
            optional: self.optional,
            rate_limit_headers: self.rate_limit_headers,
        }
    }

    /// Lets requests *without any credential* through, with no identity (handlers use
    /// `Option<Identity>`). A presented but invalid key is still refused.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Adds the IETF draft's `RateLimit-Policy` and `RateLimit` fields to allowed responses of
    /// rate-limited keys. Off by default; refused (429) responses carry them either way.
    pub fn rate_limit_headers(mut self) -> Self {
        self.rate_limit_headers = true;
        self
    }
}

impl<S, B, R> Transform<S, ServiceRequest> for ApiKeyAuth<R>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    R: ActixRejectionResponse,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = ApiKeyMiddleware<S, R>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let credential_header = self
            .verifier
            .credential_header()
            .and_then(|name| HeaderName::from_bytes(name.as_bytes()).ok());
        ready(Ok(ApiKeyMiddleware {
            service: Rc::new(service),
            config: Rc::new(self.clone()),
            credential_header,
        }))
    }
}

/// The service made by [`ApiKeyAuth`].
#[derive(Debug)]
pub struct ApiKeyMiddleware<S, R> {
    service: Rc<S>,
    config: Rc<ApiKeyAuth<R>>,
    credential_header: Option<HeaderName>,
}

impl<S, B, R> Service<ServiceRequest> for ApiKeyMiddleware<S, R>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    R: ActixRejectionResponse,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, mut request: ServiceRequest) -> Self::Future {
        mark_sensitive(&mut request, &AUTHORIZATION);
        if let Some(name) = &self.credential_header {
            mark_sensitive(&mut request, name);
        }
        let config = Rc::clone(&self.config);
        let view = ActixRequestView::new(&request);
        let view = match &self.credential_header {
            Some(name) => view.with_parsed_header(name),
            None => view,
        };
        // On an optional route, no credential at all is no decision (and not counted as one).
        let extracted = if config.optional {
            config.verifier.extract_optional(&view)
        } else {
            config.verifier.extract(&view).map(Some)
        };
        let mut audit = config.verifier.audit_enabled().then(|| {
            RequestAudit::start(
                &config.verifier,
                http::Method::from_bytes(request.method().as_str().as_bytes()).unwrap_or_default(),
                request.match_pattern().map(Arc::from),
                config.verifier.client_ip(&view),
                request
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .map(actix_web::http::header::HeaderValue::as_bytes),
            )
        });
        let service = Rc::clone(&self.service);
        Box::pin(async move {
            let response = decide(config, service, request, extracted, audit.as_mut()).await;
            if let (Some(audit), Ok(response)) = (audit, &response) {
                audit.finish(
                    response.status().as_u16(),
                    response.response().extensions().get::<Rejection>(),
                );
            }
            response
        })
    }
}

/// Verifies (or takes the extraction's refusal) and calls the inner service or answers.
async fn decide<S, B, R>(
    config: Rc<ApiKeyAuth<R>>,
    service: Rc<S>,
    request: ServiceRequest,
    extracted: Result<Option<keygate::Presented>, Rejection>,
    audit: Option<&mut RequestAudit>,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    R: ActixRejectionResponse,
{
    let rejection = match extracted {
        Ok(Some(presented)) => match config.verifier.verify_with_rate(&presented).await {
            Ok(verified) => {
                if let Some(audit) = audit {
                    audit.allowed(&verified);
                }
                request.extensions_mut().insert(verified.identity);
                let mut response = service.call(request).await?;
                if let Some(rate) = verified.rate.filter(|_| config.rate_limit_headers) {
                    let headers = response.headers_mut();
                    for (name, value) in rate
                        .headers("key")
                        .iter()
                        .filter_map(|(n, v)| to_actix((n, v)))
                    {
                        headers.insert(name, value);
                    }
                }
                return Ok(response.map_into_left_body());
            }
            Err(rejection) => rejection,
        },
        Ok(None) => {
            return service
                .call(request)
                .await
                .map(ServiceResponse::map_into_left_body);
        }
        Err(rejection) => rejection,
    };
    let response = respond(&config.responder, rejection);
    Ok(request.into_response(response).map_into_right_body())
}

/// Marks every value of `name` sensitive, so loggers that honour the flag redact it.
fn mark_sensitive(request: &mut ServiceRequest, name: &HeaderName) {
    let headers = request.headers_mut();
    match headers.get_all(name).count() {
        0 => {}
        1 => {
            if let Some(value) = headers.get_mut(name) {
                value.set_sensitive(true);
            }
        }
        // Several values (a request that will be refused anyway): actix's map has no mutable
        // iteration over one name, so re-insert them.
        _ => {
            let values: Vec<_> = headers.get_all(name).cloned().collect();
            headers.remove(name);
            for mut value in values {
                value.set_sensitive(true);
                headers.append(name.clone(), value);
            }
        }
    }
}

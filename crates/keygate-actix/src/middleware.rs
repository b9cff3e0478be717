use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{AUTHORIZATION, HeaderName};
use actix_web::{Error, HttpMessage};

use keygate::gate::{Admission, Checked, Gate, Passed, Refusal, Ticket};
use keygate::quota::QuotaReceipt;
use keygate::{ProblemJson, Rejection, Verifier};
use pin_project_lite::pin_project;

use crate::response::{ActixRejectionResponse, respond, to_actix};
use crate::view::ActixRequestView;

/// The `RateLimit` field's name in actix-web's `http` 0.2 type.
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

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
    gate: Gate,
    responder: R,
}

impl ApiKeyAuth {
    /// Requires a valid key on every request; rejections are problem+json in realm `api`.
    pub fn new(verifier: Verifier) -> Self {
        Self::from_gate(Gate::new(verifier))
    }

    /// A middleware over a configured [`Gate`], answering rejections with the gate's
    /// [`ProblemJson`].
    pub fn from_gate(gate: Gate) -> Self {
        Self {
            responder: gate.problem_json().clone(),
            gate,
        }
    }

    /// Names the realm in `WWW-Authenticate` challenges.
    ///
    /// # Panics
    /// If `realm` contains `"`, `\` or control characters.
    pub fn realm(mut self, realm: &str) -> Self {
        self.gate = self.gate.realm(realm);
        self.responder = self.gate.problem_json().clone();
        self
    }
}

impl<R> ApiKeyAuth<R> {
    /// Shapes rejection responses yourself: `f` receives the [`Rejection`](keygate::Rejection)
    /// and returns the response; the rejection is still inserted into its extensions.
    pub fn with_rejection_response<R2>(self, responder: R2) -> ApiKeyAuth<R2> {
        ApiKeyAuth {
            gate: self.gate,
            responder,
        }
    }

    /// Lets requests *without any credential* through, with no identity (handlers use
    /// `Option<Identity>`). A presented but invalid key is still refused.
    pub fn optional(mut self) -> Self {
        self.gate = self.gate.optional();
        self
    }

    /// Adds the IETF draft's `RateLimit-Policy` and `RateLimit` fields to allowed responses of
    /// rate-limited keys. Off by default; refused (429) responses carry them either way.
    pub fn rate_limit_headers(mut self) -> Self {
        self.gate = self.gate.rate_limit_headers();
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
            .gate
            .credential_header()
            .and_then(|name| HeaderName::from_bytes(name.as_str().as_bytes()).ok());
        ready(Ok(ApiKeyMiddleware {
            service: Rc::new(service),
            config: Rc::new(self.clone()),
            credential_header,
            static_routes: StaticRoutes::default(),
        }))
    }
}

/// The service made by [`ApiKeyAuth`].
#[derive(Debug)]
pub struct ApiKeyMiddleware<S, R> {
    service: Rc<S>,
    config: Rc<ApiKeyAuth<R>>,
    // The gate's credential header as actix-web's (`http` 0.2) type, parsed once.
    credential_header: Option<HeaderName>,
    static_routes: StaticRoutes,
}

/// The routes without parameters an audited request reached through this middleware, so that
/// such a request's route is a set lookup instead of `match_pattern`, which matches the path
/// against the app's route tree again and formats the pattern into a new `String` (about 600
/// instructions a request). Only a path equal to the pattern it matched is kept, and it maps to
/// itself whatever request asks: the pattern a path matches depends on nothing but the path and
/// this app's routes, which are fixed once it is built, and this middleware is made per app
/// (per worker), so it never sees another app's. Bounded: paths with parameters are never
/// kept, and a service with more than [`MAX_STATIC_ROUTES`] such routes matches the others.
/// Hashed with foldhash (randomly seeded), not SipHash: only the app's own route paths are
/// ever inserted, so a client's path can make a lookup miss but never a collision chain.
#[derive(Debug, Default)]
struct StaticRoutes(RefCell<HashSet<Arc<str>, foldhash::fast::RandomState>>);

/// Most routes [`StaticRoutes`] keeps per middleware.
const MAX_STATIC_ROUTES: usize = 256;

impl StaticRoutes {
    /// The route pattern `request` matches, as a shared string.
    fn route(&self, request: &ServiceRequest) -> Option<Arc<str>> {
        let path = request.path();
        if let Some(route) = self.0.borrow().get(path) {
            return Some(Arc::clone(route));
        }
        let pattern = request.match_pattern()?;
        if pattern != path {
            return Some(keygate::gate::shared_route(&pattern));
        }
        let route: Arc<str> = Arc::from(pattern);
        let mut kept = self.0.borrow_mut();
        if kept.len() < MAX_STATIC_ROUTES {
            kept.insert(Arc::clone(&route));
        }
        Some(route)
    }
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
    type Future = ApiKeyFuture<S, B>;

    forward_ready!(service);

    fn call(&self, mut request: ServiceRequest) -> Self::Future {
        let named = self.credential_header.as_ref();
        mark_sensitive(&mut request, named);
        let view = ActixRequestView::new(&request);
        let view = match named {
            Some(name) => view.with_parsed_header(name),
            None => view,
        };
        let gate = &self.config.gate;
        let admission = gate.admit(&view, request.method().as_str(), || {
            self.static_routes.route(&request)
        });
        // A cached key is decided without awaiting (`check_now`); only a check that needs
        // I/O (a cache miss, a limiter across instances) makes a future of its own.
        // Each answer is handled where it is matched: an intermediate `Result<Passed, Refusal>`
        // (280 bytes then) was two more `memcpy`s a request.
        match admission {
            Admission::Pass(ticket) => self.call_inner(request, ticket),
            Admission::Refuse(refusal) => self.refused(request, refusal),
            Admission::Check(check) => match gate.check_now(check) {
                Checked::Now(Ok(passed)) => {
                    let ticket = identified(&mut request, passed);
                    self.call_inner(request, ticket)
                }
                Checked::Now(Err(refusal)) => self.refused(request, refusal),
                Checked::Later(check) => {
                    let config = Rc::clone(&self.config);
                    let service = Rc::clone(&self.service);
                    ApiKeyFuture::new(FutureState::Later {
                        future: Box::pin(async move {
                            match config.gate.check(check).await {
                                Ok(passed) => {
                                    let ticket = identified(&mut request, passed);
                                    finish_inner(service.call(request).await, ticket)
                                }
                                Err(refusal) => Ok(refuse(&config.responder, request, refusal)),
                            }
                        }),
                    })
                }
            },
        }
    }
}

/// Puts the caller's identity (and the quota receipt, if any) into the request; the ticket
/// finishes the response.
// Always inlined: as a call it took `Passed` (280 bytes then, 224 now) by a copy.
#[inline(always)]
fn identified(request: &mut ServiceRequest, mut passed: Passed) -> Ticket {
    if let Some(receipt) = passed.take_quota_receipt() {
        request.extensions_mut().insert(receipt);
    }
    let (identity, ticket) = passed.into_parts();
    request.extensions_mut().insert(identity);
    ticket
}

impl<S, B, R> ApiKeyMiddleware<S, R>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    /// Calls the service now; its response is finished by [`finish_inner`].
    fn call_inner(&self, request: ServiceRequest, ticket: Ticket) -> ApiKeyFuture<S, B> {
        ApiKeyFuture::new(FutureState::Inner {
            called: self.service.call(request),
            ticket,
        })
    }

    /// Answers the refusal without calling the service.
    fn refused(&self, request: ServiceRequest, refusal: Refusal) -> ApiKeyFuture<S, B>
    where
        R: ActixRejectionResponse,
    {
        ApiKeyFuture::new(FutureState::Answered {
            response: Some(refuse(&self.config.responder, request, refusal)),
        })
    }
}

pin_project! {
    /// The response future of [`ApiKeyMiddleware`]. A cached key's request and a refusal are
    /// answered through it without a boxed future of their own: only a check that awaits the
    /// key store or a shared limiter is boxed.
    #[must_use = "futures do nothing unless polled"]
    pub struct ApiKeyFuture<S, B>
    where
        S: Service<ServiceRequest>,
    {
        #[pin]
        state: FutureState<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum FutureState<S, B>
    where
        S: Service<ServiceRequest>,
    {
        // The service was called; the ticket finishes its response.
        Inner {
            #[pin]
            called: S::Future,
            ticket: Ticket,
        },
        // Refused by the middleware itself; `None` once taken.
        Answered {
            response: Option<ServiceResponse<EitherBody<B>>>,
        },
        // The check awaits I/O, then the service.
        Later {
            future: LocalBoxFuture<Result<ServiceResponse<EitherBody<B>>, Error>>,
        },
    }
}

impl<S, B> ApiKeyFuture<S, B>
where
    S: Service<ServiceRequest>,
{
    fn new(state: FutureState<S, B>) -> Self {
        Self { state }
    }
}

impl<S, B> Future for ApiKeyFuture<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { called, ticket } => {
                let response = std::task::ready!(called.poll(cx));
                // Taken once: the inner future's own contract forbids a poll after it is ready.
                Poll::Ready(finish_inner(response, std::mem::take(ticket)))
            }
            StateProj::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("keygate ApiKeyFuture polled after completion"),
            },
            StateProj::Later { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, B> fmt::Debug for ApiKeyFuture<S, B>
where
    S: Service<ServiceRequest>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            FutureState::Inner { .. } => "inner",
            FutureState::Answered { .. } => "answered",
            FutureState::Later { .. } => "later",
        };
        f.debug_struct("ApiKeyFuture")
            .field("state", &state)
            .finish()
    }
}

/// Adds the rate headers (if any) to the service's response and finishes the ticket with the
/// final status (a guard behind the middleware may have refused: its rejection is in the
/// response).
fn finish_inner<B>(
    response: Result<ServiceResponse<B>, Error>,
    mut ticket: Ticket,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    B: MessageBody + 'static,
{
    let mut response = response?;
    // Most responses get no fields (the gate does not send them): no lookups for them (a
    // `&str` name would be parsed, and allocated, per lookup).
    if ticket.sends_rate_limit_headers() {
        // A route's `Cost` settled the quota behind the middleware: report what it spent.
        ticket.settle_quota(response.response().extensions().get::<QuotaReceipt>());
        // A route's `RouteLimit` took a named limit: report it as its own item.
        ticket.settle_route_limits(
            response
                .response()
                .extensions()
                .get::<keygate::route_limit::RouteLimitItems>(),
        );
        let headers = response.headers_mut();
        // A route guard's 429 (`Cost`) carries its own fields.
        if !headers.contains_key(RATELIMIT) {
            for (name, value) in ticket
                .rate_limit_headers()
                .filter_map(|(n, v)| to_actix((&n, &v)))
            {
                headers.insert(name, value);
            }
        }
    }
    ticket.finish(
        response.status().as_u16(),
        response.response().extensions().get::<Rejection>(),
    );
    Ok(response.map_into_left_body())
}

/// Answers a refusal and finishes its ticket.
fn refuse<B, R: ActixRejectionResponse>(
    responder: &R,
    request: ServiceRequest,
    refusal: Refusal,
) -> ServiceResponse<EitherBody<B>> {
    let (rejection, ticket) = refusal.into_parts();
    let response = respond(responder, rejection);
    ticket.finish(
        response.status().as_u16(),
        response.extensions().get::<Rejection>(),
    );
    request.into_response(response).map_into_right_body()
}

/// Marks every value of `Authorization` and of the named credential header sensitive, so
/// loggers that honour the flag redact them. One pass over the (few) headers: actix-web's map
/// has no mutable lookup of all of one name's values, and `retain` (keeping everything) visits
/// each value mutably, in place and in order, with no hashing. It replaces, per name, a count
/// of the values and a mutable lookup of the first, each hashing the name: about 390
/// instructions a request under callgrind, against about 160 for the pass.
fn mark_sensitive(request: &mut ServiceRequest, named: Option<&HeaderName>) {
    request.headers_mut().retain(|name, value| {
        if *name == AUTHORIZATION || named.is_some_and(|named| named == name) {
            value.set_sensitive(true);
        }
        true
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use actix_web::dev::{Service, Transform};
    use actix_web::test;
    use keygate::{Keyring, MemoryStore, NewKey, Verifier};

    use super::{ApiKeyAuth, mark_sensitive};

    /// Every value of both credential headers is marked, several values of one name included
    /// (kept in order), and nothing else; with no named header, only `Authorization`.
    #[actix_web::test]
    async fn marks_every_credential_value_and_nothing_else() {
        use actix_web::http::header::{HeaderName, HeaderValue};
        let request = || {
            test::TestRequest::get()
                .append_header(("authorization", "Bearer a"))
                .append_header(("authorization", "Basic b"))
                .append_header(("x-api-key", "c"))
                .append_header(("x-api-key", "d"))
                .append_header(("accept", "*/*"))
                .to_srv_request()
        };
        let named = HeaderName::from_static("x-api-key");
        let mut marked = request();
        mark_sensitive(&mut marked, Some(&named));
        let headers = marked.headers();
        let values = |name: &str| {
            headers
                .get_all(name)
                .map(HeaderValue::as_bytes)
                .collect::<Vec<_>>()
        };
        assert_eq!(values("authorization"), [&b"Bearer a"[..], b"Basic b"]);
        assert_eq!(values("x-api-key"), [&b"c"[..], b"d"]);
        assert!(
            headers
                .get_all("authorization")
                .chain(headers.get_all("x-api-key"))
                .all(HeaderValue::is_sensitive)
        );
        assert!(!headers.get("accept").unwrap().is_sensitive());
        assert_eq!(headers.len(), 5);

        let mut marked = request();
        mark_sensitive(&mut marked, None);
        let headers = marked.headers();
        assert!(
            headers
                .get_all("authorization")
                .all(HeaderValue::is_sensitive)
        );
        assert!(
            !headers.get_all("x-api-key").any(HeaderValue::is_sensitive),
            "no named header configured"
        );
    }

    /// The future's `Debug` names its state and nothing of the request.
    #[actix_web::test]
    async fn the_future_shows_its_state_only() {
        let verifier = Verifier::builder(
            Keyring::development("debug_test").unwrap(),
            MemoryStore::new(),
        )
        .build();
        let key = verifier
            .admin()
            .create_key(NewKey::new("k"))
            .await
            .unwrap()
            .key
            .expose_secret()
            .to_owned();
        let middleware = ApiKeyAuth::new(verifier)
            .new_transform(test::ok_service())
            .await
            .unwrap();
        let request = |key: Option<&str>| {
            let request = test::TestRequest::get().uri("/hello");
            match key {
                Some(key) => request.insert_header(("x-api-key", key)),
                None => request,
            }
            .to_srv_request()
        };
        // No key: refused by the middleware itself.
        let refused = middleware.call(request(None));
        assert_eq!(
            format!("{refused:?}"),
            r#"ApiKeyFuture { state: "answered" }"#
        );
        assert_eq!(refused.await.unwrap().status(), 401);
        // A key not cached yet: the check awaits the store.
        let cold = middleware.call(request(Some(&key)));
        assert_eq!(format!("{cold:?}"), r#"ApiKeyFuture { state: "later" }"#);
        assert_eq!(cold.await.unwrap().status(), 200);
        // Cached: the service was called at once.
        let cached = middleware.call(request(Some(&key)));
        assert_eq!(format!("{cached:?}"), r#"ApiKeyFuture { state: "inner" }"#);
        assert_eq!(cached.await.unwrap().status(), 200);
    }
}

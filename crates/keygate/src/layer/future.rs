use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::audit::RequestAudit;
use crate::rate::RateDecision;
use crate::rejection::{Rejection, RejectionResponse, respond};
use crate::verifier::Verified;

type VerifyFuture = Pin<Box<dyn Future<Output = Result<Verified, Rejection>> + Send>>;

pin_project! {
    /// Response future of [`ApiKeyService`](super::ApiKeyService): verify, then call the inner
    /// service with the identity in the request extensions (or answer the rejection).
    pub struct ResponseFuture<S, ReqB, R>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB, R>,
        // Boxed: requests are audited only while a sink is enabled, and the future stays small
        // when they are not.
        audit: Option<Box<RequestAudit>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB, R>
    where
        S: Service<Request<ReqB>>,
    {
        Verify {
            verify: VerifyFuture,
            request: Option<Request<ReqB>>,
            service: Option<S>,
            responder: Arc<R>,
            rate_limit_headers: bool,
        },
        Inner {
            #[pin]
            future: S::Future,
            // Added to the response when the layer sends `RateLimit` headers.
            rate: Option<RateDecision>,
        },
        Rejected {
            response: Option<S::Response>,
        },
    }
}

impl<S, ReqB, R> ResponseFuture<S, ReqB, R>
where
    S: Service<Request<ReqB>>,
{
    pub(super) fn verify(
        verify: VerifyFuture,
        request: Request<ReqB>,
        service: S,
        responder: Arc<R>,
        rate_limit_headers: bool,
    ) -> Self {
        Self {
            state: State::Verify {
                verify,
                request: Some(request),
                service: Some(service),
                responder,
                rate_limit_headers,
            },
            audit: None,
        }
    }

    pub(super) fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future, rate: None },
            audit: None,
        }
    }

    pub(super) fn rejected(response: S::Response) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
            audit: None,
        }
    }

    pub(super) fn audited(mut self, audit: Option<Box<RequestAudit>>) -> Self {
        self.audit = audit;
        self
    }
}

impl<S, ReqB, ResB, R> Future for ResponseFuture<S, ReqB, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    R: RejectionResponse<ResB>,
{
    type Output = Result<Response<ResB>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(poll_state(this.state, this.audit, cx));
        if let (Some(audit), Ok(response)) = (this.audit.take(), &result) {
            audit.finish(
                response.status().as_u16(),
                response.extensions().get::<Rejection>(),
            );
        }
        Poll::Ready(result)
    }
}

fn poll_state<S, ReqB, ResB, R>(
    mut state: Pin<&mut State<S, ReqB, R>>,
    audit: &mut Option<Box<RequestAudit>>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResB>, S::Error>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    R: RejectionResponse<ResB>,
{
    loop {
        let next = match state.as_mut().project() {
            StateProj::Verify {
                verify,
                request,
                service,
                responder,
                rate_limit_headers,
            } => {
                let verdict = ready!(verify.as_mut().poll(cx));
                match (verdict, request.take(), service.take()) {
                    (Ok(verified), Some(mut request), Some(mut service)) => {
                        if let Some(audit) = audit.as_mut() {
                            audit.allowed(&verified);
                        }
                        request.extensions_mut().insert(verified.identity);
                        State::Inner {
                            future: service.call(request),
                            rate: verified.rate.filter(|_| *rate_limit_headers),
                        }
                    }
                    (Err(rejection), _, _) => State::Rejected {
                        response: Some(respond(&**responder, rejection)),
                    },
                    // Unreachable: both are taken only here, once.
                    (Ok(_), _, _) => panic!("keygate ResponseFuture polled after completion"),
                }
            }
            StateProj::Inner { future, rate } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some(rate) = rate.take() {
                    response.headers_mut().extend(rate.headers("key"));
                }
                return Poll::Ready(Ok(response));
            }
            StateProj::Rejected { response } => {
                return match response.take() {
                    Some(response) => Poll::Ready(Ok(response)),
                    None => panic!("keygate ResponseFuture polled after completion"),
                };
            }
        };
        state.set(next);
    }
}

impl<S, ReqB, R> fmt::Debug for ResponseFuture<S, ReqB, R>
where
    S: Service<Request<ReqB>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

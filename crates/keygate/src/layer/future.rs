use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::layer::Shared;
use crate::gate::{Check, Passed, Refusal, Ticket};
use crate::quota::QuotaReceipt;
use crate::rejection::{Rejection, RejectionResponse, respond};

/// The check's future; it hands the layer's shared state back with its answer, so the request
/// holds one `Arc` of it in all.
type CheckFuture<R> =
    Pin<Box<dyn Future<Output = (Result<Passed, Refusal>, Arc<Shared<R>>)> + Send>>;

pin_project! {
    /// Response future of [`ApiKeyService`](super::ApiKeyService): verify, then call the inner
    /// service with the identity in the request extensions (or answer the rejection).
    pub struct ResponseFuture<S, ReqB, R>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB, R>,
        // Finishes the request once its response is known: rate headers and the audit event.
        ticket: Option<Ticket>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB, R>
    where
        S: Service<Request<ReqB>>,
    {
        // Boxed, with the request and the ready service parked beside it: only a check that
        // awaits I/O (a cache miss) is here, and keeping them inline made every request's
        // future (moved into the router's box, among others) ~250 bytes larger.
        Check {
            check: CheckFuture<R>,
            parked: Option<Box<(Request<ReqB>, S)>>,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
        Refused {
            response: Option<S::Response>,
        },
    }
}

impl<S, ReqB, ResB, R> ResponseFuture<S, ReqB, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    R: RejectionResponse<ResB>,
{
    pub(super) fn check(
        shared: Arc<Shared<R>>,
        check: Check,
        request: Request<ReqB>,
        service: S,
    ) -> Self {
        let check = Box::pin(async move {
            let answer = shared.gate.check(check).await;
            (answer, shared)
        });
        Self {
            state: State::Check {
                check,
                parked: Some(Box::new((request, service))),
            },
            ticket: None,
        }
    }

    pub(super) fn inner(future: S::Future, ticket: Ticket) -> Self {
        Self {
            state: State::Inner { future },
            ticket: Some(ticket),
        }
    }

    pub(super) fn refused(responder: &R, refusal: Refusal) -> Self {
        let (rejection, ticket) = refusal.into_parts();
        Self {
            state: State::Refused {
                response: Some(respond(responder, rejection)),
            },
            ticket: Some(ticket),
        }
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
        let mut result = ready!(poll_state(this.state, this.ticket, cx));
        if let (Some(mut ticket), Ok(response)) = (this.ticket.take(), &mut result) {
            // Most responses get no fields (the gate does not send them): no lookups for them.
            if ticket.sends_rate_limit_headers() {
                // A route's `Cost` settled the quota behind the layer: report what it spent.
                ticket.settle_quota(response.extensions().get::<QuotaReceipt>());
                // A route's `RouteLimit` took a named limit: report it as its own item.
                ticket.settle_route_limits(
                    response
                        .extensions()
                        .get::<crate::route_limit::RouteLimitItems>(),
                );
                // A route guard's 429 (`Cost`) carries its own fields.
                if !response.headers().contains_key(crate::rejection::RATELIMIT) {
                    response.headers_mut().extend(ticket.rate_limit_headers());
                }
            }
            // A guard behind the layer (scopes) may have refused: its rejection is in the
            // response, and the event says so.
            ticket.finish(
                response.status().as_u16(),
                response.extensions().get::<Rejection>(),
            );
        }
        Poll::Ready(result)
    }
}

fn poll_state<S, ReqB, ResB, R>(
    mut state: Pin<&mut State<S, ReqB, R>>,
    ticket: &mut Option<Ticket>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResB>, S::Error>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    R: RejectionResponse<ResB>,
{
    loop {
        let next = match state.as_mut().project() {
            StateProj::Check { check, parked } => {
                let (answer, shared) = ready!(check.as_mut().poll(cx));
                match (answer, parked.take()) {
                    (Ok(mut passed), Some(parked)) => {
                        let (mut request, mut service) = *parked;
                        if let Some(receipt) = passed.take_quota_receipt() {
                            request.extensions_mut().insert(receipt);
                        }
                        let (identity, passed_ticket) = passed.into_parts();
                        *ticket = Some(passed_ticket);
                        request.extensions_mut().insert(identity);
                        State::Inner {
                            future: service.call(request),
                        }
                    }
                    (Err(refusal), _) => {
                        let (rejection, refused_ticket) = refusal.into_parts();
                        *ticket = Some(refused_ticket);
                        State::Refused {
                            response: Some(respond(&shared.responder, rejection)),
                        }
                    }
                    // Unreachable: taken only here, once.
                    (Ok(_), None) => panic!("keygate ResponseFuture polled after completion"),
                }
            }
            StateProj::Inner { future } => return future.poll(cx),
            StateProj::Refused { response } => {
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

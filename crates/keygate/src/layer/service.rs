use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, Entry};
use http::{HeaderMap, HeaderName, Request, Response};
use tower_service::Service;

use super::{ApiKeyLayer, ResponseFuture};
use crate::extract::HttpRequestView;
use crate::rejection::{Reason, RejectionResponse, respond};

/// The service made by [`ApiKeyLayer`].
#[derive(Clone, Debug)]
pub struct ApiKeyService<S, R> {
    pub(super) inner: S,
    pub(super) layer: ApiKeyLayer<R>,
}

impl<S, R, ReqB, ResB> Service<Request<ReqB>> for ApiKeyService<S, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    R: RejectionResponse<ResB>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let layer = &self.layer;
        mark_sensitive(request.headers_mut(), &AUTHORIZATION);
        if let Some(name) = &layer.credential_header {
            mark_sensitive(request.headers_mut(), name);
        }
        let peer = (layer.peer_ip)(request.extensions());
        let view = HttpRequestView::new(request.headers(), request.uri(), peer);
        let view = match &layer.credential_header {
            Some(name) => view.with_parsed_header(name),
            None => view,
        };
        match layer.verifier.extract(&view) {
            Ok(presented) => {
                // The ready service goes into the future; a fresh clone stays for the next call.
                let fresh = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, fresh);
                let verifier = layer.verifier.clone();
                let verify = Box::pin(async move { verifier.verify(&presented).await });
                ResponseFuture::verify(verify, request, ready, Arc::clone(&layer.responder))
            }
            Err(rejection)
                if layer.optional && rejection.reason() == Reason::MissingCredentials =>
            {
                ResponseFuture::inner(self.inner.call(request))
            }
            Err(rejection) => ResponseFuture::rejected(respond(&*layer.responder, rejection)),
        }
    }
}

/// Marks every value of `name` sensitive, so loggers that honour the flag redact it.
fn mark_sensitive(headers: &mut HeaderMap, name: &HeaderName) {
    // `entry` reserves room for an insert even when the name is absent; the common cases (no
    // value, one value) need only lookups.
    let mut values = headers.get_all(name).iter();
    match (values.next().is_some(), values.next().is_some()) {
        (false, _) => {}
        (true, false) => {
            if let Some(value) = headers.get_mut(name) {
                value.set_sensitive(true);
            }
        }
        (true, true) => {
            if let Entry::Occupied(mut entry) = headers.entry(name) {
                for value in entry.iter_mut() {
                    value.set_sensitive(true);
                }
            }
        }
    }
}

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, Request, Response};
use tower_service::Service;

use super::ResponseFuture;
use super::layer::Shared;
use crate::extract::{CredentialScan, HttpRequestView};
use crate::gate::{Admission, Checked};
use crate::rejection::RejectionResponse;

/// The service made by [`ApiKeyLayer`](super::ApiKeyLayer).
#[derive(Debug)]
pub struct ApiKeyService<S, R> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared<R>>,
}

impl<S: Clone, R> Clone for ApiKeyService<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
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
        let shared = &*self.shared;
        let gate = &shared.gate;
        let named = gate.credential_header();
        // One pass over the headers finds both credential headers' values for the check; the
        // values are marked sensitive after it (a second pass, only when there are any).
        let scan = CredentialScan::of(request.headers(), named);
        let found = scan.found_any();
        let view = HttpRequestView::new(
            request.headers(),
            request.uri(),
            (shared.peer_ip)(request.extensions()),
        );
        let view = match named {
            Some(name) => view.with_parsed_header(name),
            None => view,
        }
        .with_scan(scan);
        let admission = gate.admit(&view, request.method().as_str(), || {
            (shared.route)(request.uri(), request.extensions())
        });
        if found {
            mark_sensitive(request.headers_mut(), named);
        }
        match admission {
            // A cached key is decided here: the ready inner service is called at once, with no
            // boxed check future and no service clone.
            Admission::Check(check) => match gate.check_now(check) {
                Checked::Now(Ok(mut passed)) => {
                    if let Some(receipt) = passed.take_quota_receipt() {
                        request.extensions_mut().insert(receipt);
                    }
                    let (identity, ticket) = passed.into_parts();
                    request.extensions_mut().insert(identity);
                    ResponseFuture::inner(self.inner.call(request), ticket)
                }
                Checked::Now(Err(refusal)) => ResponseFuture::refused(&shared.responder, refusal),
                Checked::Later(check) => {
                    // The ready service goes into the future; a fresh clone stays for the
                    // next call.
                    let fresh = self.inner.clone();
                    let ready = std::mem::replace(&mut self.inner, fresh);
                    ResponseFuture::check(Arc::clone(&self.shared), check, request, ready)
                }
            },
            Admission::Pass(ticket) => ResponseFuture::inner(self.inner.call(request), ticket),
            Admission::Refuse(refusal) => ResponseFuture::refused(&shared.responder, refusal),
        }
    }
}

/// Marks every value of `Authorization` and of the named credential header sensitive, so loggers
/// that honour the flag redact them.
fn mark_sensitive(headers: &mut HeaderMap, named: Option<&HeaderName>) {
    // One pass over the (few) headers of a request: no name hashing, no lookups per name, and
    // repeated headers are covered like single ones.
    for (name, value) in headers.iter_mut() {
        if *name == AUTHORIZATION || named.is_some_and(|named| named == name) {
            value.set_sensitive(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::mark_sensitive;

    #[test]
    fn marks_every_credential_value_and_nothing_else() {
        let named = HeaderName::from_static("x-api-key");
        let mut headers = HeaderMap::new();
        headers.append("authorization", HeaderValue::from_static("Bearer a"));
        headers.append("authorization", HeaderValue::from_static("Basic b"));
        headers.append("x-api-key", HeaderValue::from_static("c"));
        headers.append("x-api-key", HeaderValue::from_static("d"));
        headers.append("accept", HeaderValue::from_static("*/*"));
        mark_sensitive(&mut headers, Some(&named));
        assert!(
            headers
                .get_all("authorization")
                .iter()
                .chain(headers.get_all("x-api-key"))
                .all(HeaderValue::is_sensitive)
        );
        assert!(!headers["accept"].is_sensitive());

        let mut headers = HeaderMap::new();
        headers.append("x-api-key", HeaderValue::from_static("c"));
        mark_sensitive(&mut headers, None);
        assert!(
            !headers["x-api-key"].is_sensitive(),
            "no named header configured"
        );
    }
}

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, Request, Response};
use tower_service::Service;

use super::{ApiKeyLayer, ResponseFuture};
use crate::audit::{REQUEST_ID_HEADER, RequestAudit};
use crate::extract::HttpRequestView;
use crate::rejection::{RejectionResponse, respond};

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
        mark_sensitive(request.headers_mut(), layer.credential_header.as_ref());
        let peer = (layer.peer_ip)(request.extensions());
        let view = HttpRequestView::new(request.headers(), request.uri(), peer);
        let view = match &layer.credential_header {
            Some(name) => view.with_parsed_header(name),
            None => view,
        };
        let audit = layer.verifier.audit_enabled().then(|| {
            Box::new(RequestAudit::start(
                &layer.verifier,
                request.method().clone(),
                (layer.route)(request.extensions()),
                layer.verifier.client_ip(&view),
                request
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .map(http::HeaderValue::as_bytes),
            ))
        });
        // On an optional layer, no credential at all is no decision (and not counted as one).
        let extracted = if layer.optional {
            layer.verifier.extract_optional(&view)
        } else {
            layer.verifier.extract(&view).map(Some)
        };
        let future = match extracted {
            Ok(Some(presented)) => {
                // The ready service goes into the future; a fresh clone stays for the next call.
                let fresh = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, fresh);
                let verifier = layer.verifier.clone();
                let verify = Box::pin(async move { verifier.verify_with_rate(&presented).await });
                ResponseFuture::verify(
                    verify,
                    request,
                    ready,
                    Arc::clone(&layer.responder),
                    layer.rate_limit_headers,
                )
            }
            Ok(None) => ResponseFuture::inner(self.inner.call(request)),
            Err(rejection) => ResponseFuture::rejected(respond(&*layer.responder, rejection)),
        };
        future.audited(audit)
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

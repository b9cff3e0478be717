use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use keygate::{ProblemJson, Rejection};

/// Turns a [`Rejection`] into an actix response. Implemented by [`ProblemJson`] (the default, the
/// exact response the tower layer sends) and by any `Fn(&Rejection) -> HttpResponse + Clone`.
pub trait ActixRejectionResponse: Clone + 'static {
    /// The response for `rejection`. The caller adds the rejection to its extensions.
    fn respond(&self, rejection: &Rejection) -> HttpResponse;
}

impl<F> ActixRejectionResponse for F
where
    F: Fn(&Rejection) -> HttpResponse + Clone + 'static,
{
    fn respond(&self, rejection: &Rejection) -> HttpResponse {
        self(rejection)
    }
}

impl ActixRejectionResponse for ProblemJson {
    fn respond(&self, rejection: &Rejection) -> HttpResponse {
        // The parts the tower layer sends too: one source of truth for both frameworks.
        let parts = self.parts(rejection);
        let status = StatusCode::from_u16(parts.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = HttpResponse::build(status);
        for header in parts.headers().filter_map(to_actix) {
            builder.insert_header(header);
        }
        builder.body(parts.body())
    }
}

/// An `http` 1 header as actix-web's (`http` 0.2) types.
pub(crate) fn to_actix(
    (name, value): (&http::HeaderName, &http::HeaderValue),
) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_bytes(name.as_str().as_bytes()).ok()?,
        HeaderValue::from_bytes(value.as_bytes()).ok()?,
    ))
}

/// Builds the response and records the rejection in its extensions.
pub(crate) fn respond<R: ActixRejectionResponse>(
    responder: &R,
    rejection: Rejection,
) -> HttpResponse {
    let mut response = responder.respond(&rejection);
    response.extensions_mut().insert(rejection);
    response
}

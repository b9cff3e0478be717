//! The actix-web adapter: [`LeakReports::actix_route`].

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse, Route, web};

use crate::reports::{
    KEY_IDENTIFIER_HEADER, LeakReports, LeakResponse, SIGNATURE_HEADER, too_large, unreadable,
};

impl LeakReports {
    /// A `POST` route answering GitHub's reports, to mount at the path registered with GitHub:
    /// `App::new().route("/github/secret-scanning", leaks.actix_route())`. The body is read up
    /// to the limit ([`LeakReportsBuilder::max_body_bytes`](crate::LeakReportsBuilder::max_body_bytes)); a larger one is answered 413.
    /// Do not put keygate's own key check in front of it: GitHub sends no keygate key.
    #[must_use]
    pub fn actix_route(&self) -> Route {
        let leaks = self.clone();
        web::post().to(move |request: HttpRequest, payload: web::Payload| {
            let leaks = leaks.clone();
            async move { leaks.answer_actix(&request, payload).await }
        })
    }

    async fn answer_actix(&self, request: &HttpRequest, payload: web::Payload) -> HttpResponse {
        let body = match payload.to_bytes_limited(self.max_body_bytes()).await {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => return into_actix(unreadable()),
            Err(_) => return into_actix(too_large()),
        };
        // actix-web has its own header map: copy the two headers the check reads.
        let mut headers = http::HeaderMap::new();
        for name in [KEY_IDENTIFIER_HEADER, SIGNATURE_HEADER] {
            if let Some(value) = request.headers().get(name)
                && let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes())
            {
                headers.insert(name, value);
            }
        }
        into_actix(self.handle(&headers, &body).await)
    }
}

fn into_actix(response: LeakResponse) -> HttpResponse {
    let status =
        StatusCode::from_u16(response.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, response.content_type))
        .body(response.body)
}

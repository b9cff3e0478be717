//! The axum adapter: [`LeakReports::axum_handler`].

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use http::header::CONTENT_TYPE;
use http_body_util::BodyExt as _;
use http_body_util::{LengthLimitError, Limited};

use crate::reports::{LeakReports, LeakResponse, too_large, unreadable};

impl LeakReports {
    /// A `POST` route answering GitHub's reports, to mount at the path registered with GitHub:
    /// `Router::new().route("/github/secret-scanning", leaks.axum_handler())`. The body is
    /// read up to the limit ([`LeakReportsBuilder::max_body_bytes`](crate::LeakReportsBuilder::max_body_bytes)); a larger one is answered 413 unread.
    /// Do not put keygate's own key check in front of it: GitHub sends no keygate key.
    pub fn axum_handler<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let leaks = self.clone();
        post(move |request: Request| {
            let leaks = leaks.clone();
            async move { leaks.answer_axum(request).await }
        })
    }

    async fn answer_axum(&self, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let limit = self.max_body_bytes();
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                return into_axum(too_large());
            }
            Err(_) => return into_axum(unreadable()),
        };
        into_axum(self.handle(&parts.headers, &body).await)
    }
}

fn into_axum(response: LeakResponse) -> Response {
    (
        response.status,
        [(CONTENT_TYPE, response.content_type)],
        Body::from(response.body),
    )
        .into_response()
}

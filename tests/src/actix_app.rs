//! The actix-web version of the suites' app (the same routes as [`crate::axum_app`]), and
//! helpers to drive it.

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpRequest, web};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use keygate::{Rejection, Verifier};
use keygate_actix::{ApiKeyAuth, Cost, Identity, RequireEnvironment, RequireScopes, RouteLimit};

use crate::Reply;

/// The actix app: the same routes, guards and answers as [`crate::axum_app`].
pub fn actix_app(
    verifier: Verifier,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let auth = ApiKeyAuth::new(verifier).rate_limit_headers();
    App::new()
        .route("/", web::get().to(|| async { "public" }))
        .service(web::resource("/hello").wrap(auth.clone()).get(hello))
        .service(
            web::resource("/orders")
                .wrap(RequireScopes::all(["orders:read"]))
                .wrap(auth.clone())
                .get(hello),
        )
        .service(
            web::resource("/live")
                .wrap(RequireEnvironment::new("live"))
                .wrap(auth.clone())
                .get(hello),
        )
        .service(
            web::resource("/sensitive")
                .wrap(auth.clone())
                .get(sensitive),
        )
        .service(
            web::resource("/report")
                .wrap(Cost::new(2))
                .wrap(auth.clone())
                .get(remaining),
        )
        .service(
            web::resource("/free")
                .wrap(Cost::new(0))
                .wrap(auth.clone())
                .get(remaining),
        )
        .service(
            web::resource("/write")
                .wrap(RouteLimit::new("writes"))
                .wrap(auth.clone())
                .get(hello),
        )
        .service(
            web::resource("/read")
                .wrap(RouteLimit::new("reads"))
                .wrap(auth.clone())
                .get(hello),
        )
        .service(web::resource("/items/{id}").wrap(auth.clone()).get(item))
        .service(web::resource("/maybe").wrap(auth.optional()).get(maybe))
}

async fn hello(identity: Identity) -> String {
    format!("hello, {}", identity.name())
}

async fn remaining(identity: Identity) -> String {
    crate::quota_left(identity.quota_remaining())
}

async fn item(id: web::Path<String>) -> String {
    format!("item {id}")
}

async fn maybe(identity: Option<Identity>) -> String {
    identity.map_or_else(|| "anonymous".to_owned(), |i| i.name().to_owned())
}

async fn sensitive(request: HttpRequest) -> String {
    let headers = request.headers();
    let marked = headers
        .get_all("authorization")
        .chain(headers.get_all("x-api-key"))
        .all(actix_web::http::header::HeaderValue::is_sensitive);
    format!("sensitive={marked}")
}

/// Sends a GET of `path` with `headers` from `peer` through an initialised actix `app`.
pub async fn send_actix<S, B>(app: &S, path: &str, headers: &[(&str, &[u8])], peer: &str) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let peer = peer.parse().unwrap();
    let mut request = TestRequest::get().uri(path).peer_addr(peer);
    for (name, value) in headers {
        let value = actix_web::http::header::HeaderValue::from_bytes(value).expect("header value");
        request = request.append_header((*name, value));
    }
    let response = test::call_service(app, request.to_request()).await;
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or_default();
    let rejection = response.response().extensions().get::<Rejection>().cloned();
    let mut converted = HeaderMap::new();
    for (name, value) in response.headers() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            converted.append(name, value);
        }
    }
    let body = test::read_body(response).await;
    Reply {
        status,
        headers: converted,
        body: String::from_utf8_lossy(&body).into_owned(),
        rejection,
    }
}

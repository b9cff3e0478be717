//! The floor as axum middleware: two small tower services, as a user would write them.
//!
//! A tower service rather than `axum::middleware::from_fn`: `from_fn` boxes and clones the inner
//! service on every request (≈ 1,000 instructions more per request under callgrind), and the
//! floor is meant to be the cheapest reasonable hand-written check. keygate's own layer is a
//! tower service too, so both pay the same framework plumbing.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use http::{HeaderMap, HeaderName, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::floor::{CachedFloorKeys, FloorKeys};

/// The header the keys come in.
const X_API_KEY: HeaderName = HeaderName::from_static(crate::server::KEY_HEADER);

fn key_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(&X_API_KEY)?.to_str().ok()
}

fn unauthorized() -> Response {
    StatusCode::UNAUTHORIZED.into_response()
}

/// `Router::layer(FloorLayer(keys))`: the floor's synchronous check in front of the routes.
#[derive(Debug, Clone)]
pub struct FloorLayer(pub Arc<FloorKeys>);

impl<S> Layer<S> for FloorLayer {
    type Service = Floor<S>;

    fn layer(&self, inner: S) -> Floor<S> {
        Floor {
            keys: Arc::clone(&self.0),
            inner,
        }
    }
}

/// The service of [`FloorLayer`]: checks, then calls the inner service directly (no boxing).
#[derive(Debug, Clone)]
pub struct Floor<S> {
    keys: Arc<FloorKeys>,
    inner: S,
}

impl<S> Service<Request> for Floor<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.keys.check(key_of(request.headers())) {
            Some(identity) => {
                request.extensions_mut().insert(identity);
                Either::Left(self.inner.call(request))
            }
            None => Either::Right(ready(Ok(unauthorized()))),
        }
    }
}

/// `Router::layer(FloorMokaLayer(keys))`: the floor through its moka cache.
#[derive(Debug, Clone)]
pub struct FloorMokaLayer(pub Arc<CachedFloorKeys>);

impl<S> Layer<S> for FloorMokaLayer {
    type Service = FloorMoka<S>;

    fn layer(&self, inner: S) -> FloorMoka<S> {
        FloorMoka {
            keys: Arc::clone(&self.0),
            inner,
        }
    }
}

/// The service of [`FloorMokaLayer`]: the cache lookup awaits before the inner service is
/// called, so the inner service is cloned (tower's clone-and-swap) into one boxed future.
#[derive(Debug, Clone)]
pub struct FloorMoka<S> {
    keys: Arc<CachedFloorKeys>,
    inner: S,
}

impl<S> Service<Request> for FloorMoka<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let keys = Arc::clone(&self.keys);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            // Split so that the header can be borrowed across the `await` (the body is not
            // `Sync`).
            let (mut parts, body) = request.into_parts();
            match keys.check(key_of(&parts.headers)).await {
                Some(identity) => {
                    parts.extensions.insert(identity);
                    inner.call(Request::from_parts(parts, body)).await
                }
                None => Ok(unauthorized()),
            }
        })
    }
}

//! The gRPC version of the suites' app (the routes of [`crate::axum_app`] as tonic services
//! behind `keygate-tonic`), served on loopback, and a real tonic client to call it.
//!
//! The services are written by hand over prost's `()` and `String` messages (what generated code
//! does for a unary method), so no protoc is needed.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use keygate::Verifier;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::{NamedService, UnaryService};
use tonic::service::LayerExt;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic::transport::{Channel, Server};
use tonic::{Code, Extensions};
use tonic_prost::ProstCodec;
use tonic_types::StatusExt;

/// What one test service answers, and under which gRPC name.
pub trait Answer: Send + Sync + 'static {
    /// The service's full name (`package.Service`).
    const NAME: &'static str;
    /// The reply to a call.
    fn answer(request: &tonic::Request<()>) -> String;
}

/// `keygate.test.Public`, unguarded: answers `public`.
#[derive(Debug)]
pub struct Public;
/// `keygate.test.Hello`, behind the key layer: answers `hello, {key name}`.
#[derive(Debug)]
pub struct Hello;
/// `keygate.test.Orders`, behind the key layer and `require_scopes(["orders:read"])`.
#[derive(Debug)]
pub struct Orders;
/// `keygate.test.Live`, behind the key layer and `require_environment("live")`.
#[derive(Debug)]
pub struct Live;
/// `keygate.test.Sensitive`, behind the key layer: whether the credential metadata reached the
/// handler marked sensitive.
#[derive(Debug)]
pub struct Sensitive;
/// `keygate.test.Maybe`, behind an optional key layer: the caller's name or `anonymous`.
#[derive(Debug)]
pub struct Maybe;
/// `keygate.test.Report`, behind the key layer and `cost(2)`: `{n} left` of the key's quota.
#[derive(Debug)]
pub struct Report;
/// `keygate.test.Free`, behind the key layer and `cost(0)`: answers as `Report`.
#[derive(Debug)]
pub struct Free;
/// `keygate.test.Write`, behind the key layer and `route_limit("writes")`: answers as `Hello`.
#[derive(Debug)]
pub struct Write;
/// `keygate.test.Read`, behind the key layer and `route_limit("reads")`: answers as `Hello`.
#[derive(Debug)]
pub struct Read;

fn caller_name(request: &tonic::Request<()>) -> Option<String> {
    keygate_tonic::identity(request).map(|identity| identity.name().to_owned())
}

impl Answer for Public {
    const NAME: &'static str = "keygate.test.Public";
    fn answer(_: &tonic::Request<()>) -> String {
        "public".to_owned()
    }
}

impl Answer for Hello {
    const NAME: &'static str = "keygate.test.Hello";
    fn answer(request: &tonic::Request<()>) -> String {
        format!("hello, {}", caller_name(request).unwrap_or_default())
    }
}

impl Answer for Orders {
    const NAME: &'static str = "keygate.test.Orders";
    fn answer(request: &tonic::Request<()>) -> String {
        Hello::answer(request)
    }
}

impl Answer for Live {
    const NAME: &'static str = "keygate.test.Live";
    fn answer(request: &tonic::Request<()>) -> String {
        Hello::answer(request)
    }
}

impl Answer for Sensitive {
    const NAME: &'static str = "keygate.test.Sensitive";
    fn answer(request: &tonic::Request<()>) -> String {
        let metadata = request.metadata();
        let marked = metadata
            .get_all("authorization")
            .iter()
            .chain(metadata.get_all("x-api-key").iter())
            .all(tonic::metadata::MetadataValue::is_sensitive);
        format!("sensitive={marked}")
    }
}

impl Answer for Maybe {
    const NAME: &'static str = "keygate.test.Maybe";
    fn answer(request: &tonic::Request<()>) -> String {
        caller_name(request).unwrap_or_else(|| "anonymous".to_owned())
    }
}

impl Answer for Report {
    const NAME: &'static str = "keygate.test.Report";
    fn answer(request: &tonic::Request<()>) -> String {
        crate::quota_left(keygate_tonic::identity(request).and_then(|i| i.quota_remaining()))
    }
}

impl Answer for Free {
    const NAME: &'static str = "keygate.test.Free";
    fn answer(request: &tonic::Request<()>) -> String {
        Report::answer(request)
    }
}

impl Answer for Write {
    const NAME: &'static str = "keygate.test.Write";
    fn answer(request: &tonic::Request<()>) -> String {
        Hello::answer(request)
    }
}

impl Answer for Read {
    const NAME: &'static str = "keygate.test.Read";
    fn answer(request: &tonic::Request<()>) -> String {
        Hello::answer(request)
    }
}

/// A gRPC service with one unary method (any method name), `()` in, `String` out.
#[derive(Debug)]
pub struct Service<A>(PhantomData<fn() -> A>);

impl<A> Service<A> {
    fn new() -> Self {
        Self(PhantomData)
    }
}

impl<A> Clone for Service<A> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<A: Answer> NamedService for Service<A> {
    const NAME: &'static str = A::NAME;
}

impl<A: Answer> tower::Service<http::Request<Body>> for Service<A> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<String, ()>::default());
            Ok(grpc.unary(Method::<A>(PhantomData), request).await)
        })
    }
}

struct Method<A>(PhantomData<fn() -> A>);

impl<A: Answer> UnaryService<()> for Method<A> {
    type Response = String;
    type Future = Ready<Result<tonic::Response<String>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<()>) -> Self::Future {
        ready(Ok(tonic::Response::new(A::answer(&request))))
    }
}

/// The gRPC path a scenario path maps to (`/hello?x` → `/keygate.test.Hello/Get?x`).
///
/// # Panics
/// For a path the gRPC app has no service for.
pub fn grpc_path(path: &str) -> String {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let service = match route {
        "/" => Public::NAME,
        "/hello" => Hello::NAME,
        "/orders" => Orders::NAME,
        "/live" => Live::NAME,
        "/sensitive" => Sensitive::NAME,
        "/maybe" => Maybe::NAME,
        "/report" => Report::NAME,
        "/free" => Free::NAME,
        "/write" => Write::NAME,
        "/read" => Read::NAME,
        other => panic!("no gRPC service for {other}"),
    };
    if query.is_empty() {
        format!("/{service}/Get")
    } else {
        format!("/{service}/Get?{query}")
    }
}

/// The metadata key the test server reads a client address from (see [`serve_tonic`]).
pub const TEST_PEER: &str = "x-test-peer";

/// Serves the gRPC app for `verifier` on a fresh loopback port and returns a connected channel.
///
/// The key layer is on each guarded service (`named_layer`), with `rate_limit_headers`, as the
/// axum app has it on its routes. In front of everything, a test-only layer lets a call claim
/// another client address: with `x-test-peer: {addr}` metadata, it rewrites the remote address of
/// tonic's `TcpConnectInfo`, which keygate reads, as a connection from there would have it.
/// Calls without it keep the real peer (127.0.0.1).
pub async fn serve_tonic(verifier: &Verifier) -> Channel {
    let auth = keygate_tonic::layer(verifier.clone()).rate_limit_headers();
    let optional = keygate_tonic::layer(verifier.clone())
        .optional()
        .rate_limit_headers();
    let orders =
        keygate_tonic::require_scopes(["orders:read"]).named_layer(Service::<Orders>::new());
    let live = keygate_tonic::require_environment("live").named_layer(Service::<Live>::new());
    let report = keygate_tonic::cost(2).named_layer(Service::<Report>::new());
    let free = keygate_tonic::cost(0).named_layer(Service::<Free>::new());
    let write = keygate_tonic::route_limit("writes").named_layer(Service::<Write>::new());
    let read = keygate_tonic::route_limit("reads").named_layer(Service::<Read>::new());
    let incoming = TcpIncoming::bind((Ipv4Addr::LOCALHOST, 0).into()).expect("bind");
    let addr = incoming.local_addr().expect("local addr");
    let router = Server::builder()
        .layer(tower::util::MapRequestLayer::new(claimed_peer))
        .add_service(Service::<Public>::new())
        .add_service(auth.named_layer(Service::<Hello>::new()))
        .add_service(auth.named_layer(orders))
        .add_service(auth.named_layer(live))
        .add_service(auth.named_layer(report))
        .add_service(auth.named_layer(free))
        .add_service(auth.named_layer(write))
        .add_service(auth.named_layer(read))
        .add_service(auth.named_layer(Service::<Sensitive>::new()))
        .add_service(optional.named_layer(Service::<Maybe>::new()));
    tokio::spawn(router.serve_with_incoming(incoming));
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

/// The test server's outermost step: moves a claimed `x-test-peer` into `TcpConnectInfo`.
fn claimed_peer(mut request: http::Request<Body>) -> http::Request<Body> {
    let claimed = request
        .headers_mut()
        .remove(TEST_PEER)
        .and_then(|value| value.to_str().ok()?.parse::<SocketAddr>().ok());
    if let Some(remote) = claimed {
        let local = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::local_addr);
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: local,
            remote_addr: Some(remote),
        });
    }
    request
}

/// What a gRPC client saw.
#[derive(Debug, Clone)]
pub struct GrpcReply {
    /// The status code (`Ok` for an answer).
    pub code: Code,
    /// The status message (empty for an answer).
    pub message: String,
    /// The answer, for `Ok`.
    pub body: Option<String>,
    /// The response's metadata: initial metadata of an answer, or the status's.
    pub metadata: HeaderMap,
    /// The `google.rpc.RetryInfo` delay in the status's details, if any.
    pub retry_delay: Option<Duration>,
}

impl GrpcReply {
    /// A metadata value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.metadata.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Calls the scenario `path` (mapped by [`grpc_path`]) with `headers` as metadata, claiming
/// `peer` as the client address unless it is on 127.0.0.1 (the real peer).
///
/// # Panics
/// If the channel fails (not a status: a transport error).
pub async fn send_tonic(
    channel: &Channel,
    path: &str,
    headers: &[(&str, &[u8])],
    peer: &str,
) -> GrpcReply {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}")),
            HeaderValue::from_bytes(value).unwrap_or_else(|e| panic!("{name} value: {e}")),
        );
    }
    let peer: SocketAddr = peer.parse().unwrap();
    if peer.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST) {
        map.insert(TEST_PEER, HeaderValue::from_str(&peer.to_string()).unwrap());
    }
    let request =
        tonic::Request::from_parts(MetadataMap::from_headers(map), Extensions::default(), ());
    let path = grpc_path(path).parse().expect("gRPC path");
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.expect("channel not ready");
    match client
        .unary(request, path, ProstCodec::<(), String>::default())
        .await
    {
        Ok(response) => {
            let metadata = response.metadata().clone().into_headers();
            GrpcReply {
                code: Code::Ok,
                message: String::new(),
                body: Some(response.into_inner()),
                metadata,
                retry_delay: None,
            }
        }
        Err(status) => GrpcReply {
            code: status.code(),
            message: status.message().to_owned(),
            body: None,
            metadata: status.metadata().clone().into_headers(),
            retry_delay: status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay),
        },
    }
}

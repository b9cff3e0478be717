//! keygate's tower layer and its scope and environment guards, configured for tonic.

use std::net::IpAddr;
use std::sync::Arc;

use keygate::{ApiKeyLayer, Cost, RequireEnvironment, RequireScopes, RouteLimit, Verifier};
use tonic::transport::server::TcpConnectInfo;

use crate::GrpcRejection;

/// keygate's [`ApiKeyLayer`] for a tonic server: refusals are gRPC statuses
/// ([`GrpcRejection`]), the client address is the connection's ([`peer_ip`]), and audit events
/// name the called method ([`grpc_method`]).
///
/// Add it to the whole server (`Server::builder().layer(…)`), or to one service with tonic's
/// `LayerExt::named_layer`, which keeps the service's name for the router. Its builder methods
/// are [`ApiKeyLayer`]'s (`optional`, `rate_limit_headers`, …).
pub fn layer(verifier: Verifier) -> ApiKeyLayer<GrpcRejection> {
    ApiKeyLayer::new(verifier)
        .with_rejection_response(GrpcRejection)
        .peer_ip(peer_ip)
        .route(grpc_method)
}

/// A guard that requires every one of `scopes` of the caller's key, answering
/// `PERMISSION_DENIED` when one is lacking (and `UNAUTHENTICATED` when no key was verified).
/// Place it inside [`layer`].
///
/// # Panics
/// If a scope is malformed: this is service configuration, caught at start-up.
pub fn require_scopes<I, S>(scopes: I) -> RequireScopes<GrpcRejection>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    RequireScopes::all(scopes).with_rejection_response(GrpcRejection)
}

/// A guard that requires at least one of `scopes`; see [`require_scopes`].
///
/// # Panics
/// If a scope is malformed.
pub fn require_any_scope<I, S>(scopes: I) -> RequireScopes<GrpcRejection>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    RequireScopes::any(scopes).with_rejection_response(GrpcRejection)
}

/// A guard that requires the caller's key to belong to environment `name` (`live`, `test`;
/// see [`keygate::keyring`]), answering `PERMISSION_DENIED` when it belongs to another (or to
/// none) and `UNAUTHENTICATED` when no key was verified. Place it inside [`layer`]; use
/// `keygate::RequireEnvironment::any(…).with_rejection_response(GrpcRejection)` for several.
///
/// # Panics
/// If `name` is not a valid environment name: this is service configuration, caught at
/// start-up.
pub fn require_environment(name: &str) -> RequireEnvironment<GrpcRejection> {
    RequireEnvironment::new(name).with_rejection_response(GrpcRejection)
}

/// A guard that sets what a call costs of the caller's [quotas](keygate::quota) (the key
/// layer charged the default, 1; `cost(0)` makes the service free), answering
/// `RESOURCE_EXHAUSTED` (with `RetryInfo` when the quota refills, and the `"quota"` item in
/// the `ratelimit` metadata) when a quota has less left. Place it inside [`layer`]; it is
/// [`keygate::Cost`] with gRPC refusals.
pub fn cost(units: u64) -> Cost<GrpcRejection> {
    Cost::new(units).with_rejection_response(GrpcRejection)
}

/// A guard that spends the caller's [named limit](keygate::rate::NamedLimits) `name` on each
/// call (the key's, or the verifier's default for the name, and its owner's), answering
/// `RESOURCE_EXHAUSTED` with `RetryInfo` and the limit's own item in the `ratelimit` metadata
/// when it is spent. Place it inside [`layer`]; it is [`keygate::RouteLimit`] with gRPC
/// refusals.
///
/// # Panics
/// If `name` is not a valid [`LimitName`](keygate::rate::LimitName): service configuration,
/// caught at start-up.
pub fn route_limit(name: &str) -> RouteLimit<GrpcRejection> {
    RouteLimit::new(name).with_rejection_response(GrpcRejection)
}

/// The client address: the remote address of tonic's [`TcpConnectInfo`] (which tonic's TCP
/// server puts into every request), else keygate's defaults ([`keygate::PeerAddr`], a bare
/// `SocketAddr`).
///
/// Behind tonic's TLS acceptor the extension is `TlsConnectInfo<TcpConnectInfo>` instead: give
/// the layer a [`PeerIpFn`](keygate::layer::PeerIpFn) of your own that reads it (as
/// `tonic::Request::remote_addr` does). Without an address, IP-restricted keys are refused.
#[must_use]
pub fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .map(|addr| addr.ip())
        .or_else(|| keygate::layer::default_peer_ip(extensions))
}

/// The longest path recorded as a route.
const MAX_METHOD_PATH: usize = 256;

/// The audit route of a gRPC call: its path, `/{package.Service}/{Method}`, which names the
/// method and carries no ids or query. A path of another shape (not a gRPC call), or longer
/// than 256 bytes, is not recorded.
#[must_use]
pub fn grpc_method(uri: &http::Uri, _: &http::Extensions) -> Option<Arc<str>> {
    let path = uri.path();
    is_method_path(path).then(|| keygate::gate::shared_route(path))
}

/// `/{service}/{method}`: a service name of identifiers joined by dots, a method identifier.
fn is_method_path(path: &str) -> bool {
    let identifier = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    path.len() <= MAX_METHOD_PATH
        && path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(service, method)| {
                service.split('.').all(identifier) && identifier(method)
            })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use tonic::transport::server::TcpConnectInfo;

    use super::{grpc_method, is_method_path, peer_ip};

    #[test]
    fn method_paths_are_recorded_and_nothing_else() {
        for path in [
            "/grpc.health.v1.Health/Check",
            "/Greeter/SayHello",
            "/a_b.c9/_m",
        ] {
            assert!(is_method_path(path), "{path}");
        }
        for path in [
            "/",
            "/hello",
            "/orders/42/items",
            "/grpc.health.v1.Health/",
            "//Check",
            "/pkg..Svc/M",
            "/pkg.Svc/M/extra",
            "/9pkg.Svc/M",
            "/pkg.Svc/M-x",
            "/pkg.Svc/M%20",
        ] {
            assert!(!is_method_path(path), "{path}");
        }
        let long = format!("/{}/M", "a".repeat(300));
        assert!(!is_method_path(&long));

        let ext = http::Extensions::new();
        let uri: http::Uri = "/pkg.Svc/Get?api_key=x".parse().unwrap_or_default();
        assert_eq!(grpc_method(&uri, &ext).as_deref(), Some("/pkg.Svc/Get"));
    }

    #[test]
    fn the_peer_is_tonics_remote_address_else_keygates_defaults() {
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let mut ext = http::Extensions::new();
        assert_eq!(peer_ip(&ext), None);
        ext.insert(keygate::PeerAddr("198.51.100.1:1".parse().unwrap()));
        assert_eq!(
            peer_ip(&ext),
            Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)))
        );
        ext.insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(remote),
        });
        assert_eq!(peer_ip(&ext), Some(remote.ip()));
        // A connection without a remote address falls back.
        ext.insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: None,
        });
        assert_eq!(
            peer_ip(&ext),
            Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)))
        );
    }
}

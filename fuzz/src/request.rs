//! The text request format of the `extract` and `tower_service` targets, and a reference
//! reading of its credentials.
//!
//! ```text
//! GET /orders?api_key={key} HTTP/1.1
//! @peer: 10.0.0.1
//! @config: 1
//! authorization: Bearer {key}
//! x-forwarded-for: 1.2.3.4, 10.0.0.7
//! ```
//!
//! The first line is a method and a request target (an unparsable method reads as `GET`, an
//! unparsable target as `/`). Each other line is `name: value` with any bytes as value (one
//! space after the colon is dropped). Lines named `@peer` (the connection's peer address) and
//! `@config` (which configuration the target uses) are not headers. A header the `http` crate
//! refuses (bad name or value bytes) is left out, as a server would refuse it. Tokens such as
//! `{key}` are replaced everywhere by the target's live keys, so a corpus can name a valid key
//! whose secret is only known at run time.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use ipnet::IpNet;

/// One request, as read from fuzz input.
#[derive(Debug)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Request target.
    pub uri: Uri,
    /// Headers, in order.
    pub headers: HeaderMap,
    /// `@peer`.
    pub peer: Option<IpAddr>,
    /// `@config` (0 when absent).
    pub config: u8,
}

/// Reads `data`, replacing each `(token, text)`.
#[must_use]
pub fn parse(data: &[u8], tokens: &[(&[u8], &[u8])]) -> Request {
    let data = substitute(data, tokens);
    let mut lines = data.split(|b| *b == b'\n').map(trim_cr);
    let first = lines.next().unwrap_or_default();
    let (method, target) = match first.iter().position(|b| *b == b' ') {
        Some(at) => (&first[..at], &first[at + 1..]),
        None => (first, &b"/"[..]),
    };
    // `GET /x HTTP/1.1`: the version is not part of the target.
    let target = target
        .iter()
        .position(|b| *b == b' ')
        .map_or(target, |at| &target[..at]);
    let mut request = Request {
        method: Method::from_bytes(method).unwrap_or(Method::GET),
        uri: Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/")),
        headers: HeaderMap::new(),
        peer: None,
        config: 0,
    };
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match name {
            b"@peer" => {
                request.peer = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            b"@config" => {
                request.config = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            _ => {
                if let (Ok(name), Ok(value)) =
                    (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                {
                    request.headers.append(name, value);
                }
            }
        }
    }
    request
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn substitute(data: &[u8], tokens: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    'outer: while !rest.is_empty() {
        if rest[0] == b'{' {
            for (token, text) in tokens {
                if let Some(after) = rest.strip_prefix(*token) {
                    out.extend_from_slice(text);
                    rest = after;
                    continue 'outer;
                }
            }
        }
        out.push(rest[0]);
        rest = &rest[1..];
    }
    out
}

/// Where a verifier looks for credentials (mirrors its builder settings).
#[derive(Debug, Clone)]
pub struct Sources {
    /// `Authorization: Bearer`.
    pub bearer: bool,
    /// The named header.
    pub header: Option<&'static str>,
    /// The query parameter.
    pub query: Option<&'static str>,
    /// The credential length cap.
    pub max_len: usize,
}

/// What a request carries, read independently of keygate from the documented rules.
#[derive(Debug, Default)]
pub struct Credentials {
    /// Every credential found, in any source.
    pub found: Vec<Vec<u8>>,
    /// Whether some credential (or `Authorization` value) is over the cap.
    pub too_long: bool,
}

/// The credentials `request` carries for `sources`.
#[must_use]
pub fn credentials(request: &Request, sources: &Sources) -> Credentials {
    let mut c = Credentials::default();
    if sources.bearer {
        for value in request.headers.get_all("authorization") {
            let value = value.as_bytes();
            c.too_long |= value.len() > sources.max_len;
            if value.len() >= 6 && value[..6].eq_ignore_ascii_case(b"bearer") {
                match &value[6..] {
                    [] => c.found.push(Vec::new()),
                    [b' ', token @ ..] => c.found.push(token.to_vec()),
                    _ => {}
                }
            }
        }
    }
    if let Some(name) = sources.header {
        for value in request.headers.get_all(name) {
            c.found.push(value.as_bytes().to_vec());
        }
    }
    if let (Some(param), Some(query)) = (sources.query, request.uri.query()) {
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name == param {
                c.found.push(value.as_bytes().to_vec());
            }
        }
    }
    c.too_long |= c.found.iter().any(|v| v.len() > sources.max_len);
    c
}

/// Checks keygate's client address for `request` against the documented rule, loosely
/// enough to hold whatever keygate does with an address it cannot read: no peer, no address;
/// an untrusted peer is the client; behind a trusted proxy, the client is the peer or one of
/// the `X-Forwarded-For` entries (and the peer itself when there is no such header).
pub fn check_client_ip(request: &Request, trusted: &[IpNet], client: Option<IpAddr>) {
    let Some(peer) = request.peer.map(|ip| ip.to_canonical()) else {
        assert_eq!(client, None, "no peer, yet a client address");
        return;
    };
    if !trusted.iter().any(|net| net.contains(&peer)) {
        assert_eq!(client, Some(peer), "untrusted peer");
        return;
    }
    let lines: Vec<&HeaderValue> = request.headers.get_all("x-forwarded-for").iter().collect();
    if lines.is_empty() {
        assert_eq!(client, Some(peer), "trusted peer, no X-Forwarded-For");
    }
    let Some(client) = client else { return };
    let named = client == peer
        || lines.iter().any(|line| {
            String::from_utf8_lossy(line.as_bytes())
                .split(',')
                .any(|entry| forwarded_ip(entry.trim()).map(|ip| ip.to_canonical()) == Some(client))
        });
    assert!(
        named,
        "client {client} is neither the peer nor a forwarded entry"
    );
}

/// An `X-Forwarded-For` entry in any documented form: `1.2.3.4`, `1.2.3.4:5678`,
/// `2001:db8::1`, `[2001:db8::1]:5678`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    entry
        .rsplit_once(':')?
        .0
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

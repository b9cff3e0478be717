//! Finding the credential in a request, and the client's address.
//!
//! # Where keys are read from
//! - `Authorization: Bearer <key>` — the scheme is case-insensitive and followed by exactly one
//!   space (RFC 6750). Other schemes (`Basic …`) are ignored, so another layer may use them.
//! - A named header, `x-api-key` by default.
//! - The query string, only after an explicit
//!   [`allow_query_param`](crate::VerifierBuilder::allow_query_param): **dangerous**, because
//!   URLs end up in access logs, proxy logs, browser history and `Referer` headers, where keys
//!   leak. Use it only for clients that cannot set headers.
//!
//! Exactly one credential per request: two (two headers of either kind, or a header and the
//! query) is a `400 invalid_request`. A credential longer than the cap (512 bytes by default) is
//! refused before it is parsed or hashed.
//!
//! # Client address
//! The client IP is the connection's peer address, unless the peer is one of the configured
//! trusted proxies: then it is the right-most `X-Forwarded-For` entry that is not itself a trusted
//! proxy. Entries left of it are ignored, since any client can write them. An unparsable entry
//! makes the client address unknown, and an unknown address never satisfies an IP restriction.

use std::net::IpAddr;

use http::header::{AUTHORIZATION, ValueIter};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use ipnet::IpNet;

use crate::record::canonical_ip;
use crate::rejection::Reason;

/// A framework-neutral view of the parts of a request the verifier reads.
///
/// Implemented for http 1 requests by [`HttpRequestView`]; the actix-web adapter implements it
/// over its own types.
pub trait RequestView {
    /// Every value of header `name` (lowercase), in order.
    fn header_values(&self, name: &str) -> impl Iterator<Item = &[u8]>;
    /// The raw query string, without `?`.
    fn query(&self) -> Option<&str>;
    /// The connection's peer address.
    fn peer_ip(&self) -> Option<IpAddr>;
}

/// [`RequestView`] over an http 1 request's headers and URI.
///
/// `Debug` shows the path, the peer and the header names, never a header value or the query
/// string: any of them may carry a key.
#[derive(Clone, Copy)]
pub struct HttpRequestView<'a> {
    headers: &'a HeaderMap,
    uri: &'a Uri,
    peer: Option<IpAddr>,
    named_header: Option<&'a HeaderName>,
    /// What one pass over `headers` found of the credential headers (the tower layer's view).
    scan: Option<CredentialScan<'a>>,
}

impl<'a> HttpRequestView<'a> {
    /// A view of `headers` and `uri`, from a connection with peer address `peer`.
    #[must_use]
    pub fn new(headers: &'a HeaderMap, uri: &'a Uri, peer: Option<IpAddr>) -> Self {
        Self {
            headers,
            uri,
            peer,
            named_header: None,
            scan: None,
        }
    }

    /// Serves `Authorization` and the named header (give it first, with
    /// [`with_parsed_header`](Self::with_parsed_header)) from `scan` of these same headers,
    /// instead of a hash lookup per name. Purely a speed-up: lookups give the same values.
    pub(crate) fn with_scan(mut self, scan: CredentialScan<'a>) -> Self {
        self.scan = Some(scan);
        self
    }

    /// Lets lookups of `name` (the verifier's credential header, already parsed) skip parsing
    /// the name again on every request. Purely a speed-up: lookups give the same values.
    #[must_use]
    pub fn with_parsed_header(mut self, name: &'a HeaderName) -> Self {
        self.named_header = Some(name);
        self
    }
}

impl std::fmt::Debug for HttpRequestView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequestView")
            .field("path", &self.uri.path())
            .field("query", &self.uri.query().map(|_| "[redacted]"))
            .field("header_names", &HeaderNames(self.headers))
            .field("peer", &self.peer)
            .field("named_header", &self.named_header)
            .finish()
    }
}

/// Formats a header map as the list of its names (repeated names once per value), no values.
struct HeaderNames<'a>(&'a HeaderMap);

impl std::fmt::Debug for HeaderNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

impl RequestView for HttpRequestView<'_> {
    fn header_values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        // A lookup by `&str` parses and validates the name each time; the hot path's two names
        // are already parsed (`authorization` is a standard header, the named header is given),
        // and a scan of the request's headers may already have found their values.
        let values = if name == AUTHORIZATION.as_str() {
            match self.scan.and_then(|scan| scan.authorization.values()) {
                Some(scanned) => return Values::Scanned(scanned),
                None => self.headers.get_all(AUTHORIZATION),
            }
        } else if let Some(parsed) = self.named_header.filter(|h| h.as_str() == name) {
            match self.scan.and_then(|scan| scan.named.values()) {
                Some(scanned) => return Values::Scanned(scanned),
                None => self.headers.get_all(parsed),
            }
        } else if name == crate::audit::REQUEST_ID_HEADER {
            // Read for every audited request.
            match self.scan.and_then(|scan| scan.request_id.values()) {
                Some(scanned) => return Values::Scanned(scanned),
                None => self.headers.get_all(REQUEST_ID),
            }
        } else {
            self.headers.get_all(name)
        };
        Values::All(values.iter())
    }

    fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer
    }
}

/// The header an audited request's id is read from, parsed once.
const REQUEST_ID: HeaderName = HeaderName::from_static(crate::audit::REQUEST_ID_HEADER);

/// The values of a header in a [`HttpRequestView`]: as a scan found them (a credential header
/// or the request id), or all of the header map's.
enum Values<'a> {
    Scanned(Option<&'a HeaderValue>),
    All(ValueIter<'a, HeaderValue>),
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Scanned(value) => value.take().map(HeaderValue::as_bytes),
            Values::All(values) => values.next().map(HeaderValue::as_bytes),
        }
    }
}

/// What one pass over a request's headers found of a credential header. No `Debug`: it holds
/// credential values.
#[derive(Clone, Copy)]
enum Scanned<'a> {
    Absent,
    One(&'a HeaderValue),
    /// More than one value: looked up again, in order, when asked for.
    Several,
}

impl<'a> Scanned<'a> {
    /// Its values, when the scan knows them all (none or one).
    fn values(self) -> Option<Option<&'a HeaderValue>> {
        match self {
            Scanned::Absent => Some(None),
            Scanned::One(value) => Some(Some(value)),
            Scanned::Several => None,
        }
    }

    fn add(&mut self, value: &'a HeaderValue) {
        *self = match self {
            Scanned::Absent => Scanned::One(value),
            Scanned::One(_) | Scanned::Several => Scanned::Several,
        };
    }
}

/// `Authorization`, the named credential header and `x-request-id`, as one pass over a
/// request's headers found them: a request has few headers, so comparing each name (an enum
/// compare for standard names, a length compare first for others) costs less than hashing
/// the names and probing the map for each (`HeaderMap::find` was ~240 instructions a request
/// under callgrind for the two credential headers, and ~130 more for the request id of an
/// audited request). No `Debug`: it holds credential values.
#[derive(Clone, Copy)]
pub(crate) struct CredentialScan<'a> {
    authorization: Scanned<'a>,
    named: Scanned<'a>,
    /// Read only for audited requests; found in the same pass for the cost of a compare of
    /// the request's other non-standard names.
    request_id: Scanned<'a>,
}

impl<'a> CredentialScan<'a> {
    /// Scans `headers` for `Authorization`, `named` and `x-request-id`. When `named` is one of
    /// the other two, its values are found once, as `Authorization`'s or as the named header's
    /// (which a lookup of that name reads first).
    pub(crate) fn of(headers: &'a HeaderMap, named: Option<&HeaderName>) -> Self {
        let mut scan = Self {
            authorization: Scanned::Absent,
            named: Scanned::Absent,
            request_id: Scanned::Absent,
        };
        for (name, value) in headers {
            if *name == AUTHORIZATION {
                scan.authorization.add(value);
            } else if named.is_some_and(|named| named == name) {
                scan.named.add(value);
            } else if *name == REQUEST_ID {
                scan.request_id.add(value);
            }
        }
        scan
    }

    /// Whether the request has any value of either header.
    pub(crate) fn found_any(&self) -> bool {
        !matches!(
            (self.authorization, self.named),
            (Scanned::Absent, Scanned::Absent)
        )
    }
}

/// Where credentials are looked for. Built through [`VerifierBuilder`](crate::VerifierBuilder).
#[derive(Debug, Clone)]
pub(crate) struct CredentialSources {
    pub(crate) bearer: bool,
    pub(crate) header: Option<Box<str>>,
    pub(crate) query: Option<Box<str>>,
    pub(crate) max_len: usize,
}

impl Default for CredentialSources {
    fn default() -> Self {
        Self {
            bearer: true,
            header: Some("x-api-key".into()),
            query: None,
            max_len: 512,
        }
    }
}

impl CredentialSources {
    /// The single credential of the request, unparsed.
    pub(crate) fn find<'r, R: RequestView + ?Sized>(&self, req: &'r R) -> Result<&'r [u8], Reason> {
        let mut found: Option<&'r [u8]> = None;
        let mut take = |value: &'r [u8]| -> Result<(), Reason> {
            if value.len() > self.max_len {
                return Err(Reason::CredentialTooLong);
            }
            match found.replace(value) {
                Some(_) => Err(Reason::MultipleCredentials),
                None => Ok(()),
            }
        };
        if self.bearer {
            for value in req.header_values("authorization") {
                if value.len() > self.max_len {
                    return Err(Reason::CredentialTooLong);
                }
                if let Some(token) = bearer_token(value) {
                    take(token)?;
                }
            }
        }
        if let Some(name) = &self.header {
            for value in req.header_values(name) {
                take(value)?;
            }
        }
        if let (Some(param), Some(query)) = (&self.query, req.query()) {
            for pair in query.split('&') {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                if name == &**param {
                    take(value.as_bytes())?;
                }
            }
        }
        found.ok_or(Reason::MissingCredentials)
    }
}

/// The token of a `Bearer` credential: scheme matched case-insensitively, then exactly one space.
/// `None` for other schemes.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    match rest {
        [] => Some(rest),
        [b' ', token @ ..] => Some(token),
        // `Bearerfoo` is another scheme name, not ours.
        _ => None,
    }
}

/// Trusted reverse proxies, and the rule that finds the client address behind them.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub(crate) fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client address of `req` (see the [module docs](self)).
    pub(crate) fn client_ip<R: RequestView + ?Sized>(&self, req: &R) -> Option<IpAddr> {
        let peer = canonical_ip(req.peer_ip()?);
        if self.nets.is_empty() || !self.trusts(peer) {
            return Some(peer);
        }
        // Only reached behind a trusted proxy, so the allocation is off the common path.
        let lines: Vec<&[u8]> = req.header_values("x-forwarded-for").collect();
        let mut client = peer;
        for line in lines.iter().rev() {
            let line = std::str::from_utf8(line).ok()?;
            for entry in line.rsplit(',') {
                let ip = canonical_ip(parse_forwarded_ip(entry.trim())?);
                if !self.trusts(ip) {
                    return Some(ip);
                }
                client = ip;
            }
        }
        Some(client)
    }
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    entry
        .rsplit_once(':')?
        .0
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct View {
        headers: Vec<(&'static str, &'static [u8])>,
        query: Option<&'static str>,
        peer: Option<IpAddr>,
    }

    impl RequestView for View {
        fn header_values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
            self.headers
                .iter()
                .filter(move |(n, _)| *n == name)
                .map(|(_, v)| *v)
        }
        fn query(&self) -> Option<&str> {
            self.query
        }
        fn peer_ip(&self) -> Option<IpAddr> {
            self.peer
        }
    }

    fn view(headers: &[(&'static str, &'static [u8])]) -> View {
        View {
            headers: headers.to_vec(),
            query: None,
            peer: None,
        }
    }

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bEaReR abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearer  abc"), Some(&b" abc"[..]));
        assert_eq!(bearer_token(b"Bearer"), Some(&b""[..]));
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }

    #[test]
    fn exactly_one_credential() {
        let s = CredentialSources::default();
        assert_eq!(s.find(&view(&[])), Err(Reason::MissingCredentials));
        assert_eq!(
            s.find(&view(&[("authorization", b"Basic x")])),
            Err(Reason::MissingCredentials)
        );
        assert_eq!(s.find(&view(&[("x-api-key", b"k")])), Ok(&b"k"[..]));
        assert_eq!(
            s.find(&view(&[
                ("authorization", b"Bearer a"),
                ("x-api-key", b"b")
            ])),
            Err(Reason::MultipleCredentials)
        );
        assert_eq!(
            s.find(&view(&[("x-api-key", b"a"), ("x-api-key", b"a")])),
            Err(Reason::MultipleCredentials)
        );
        let long: &'static [u8] = Box::leak(vec![b'a'; 513].into_boxed_slice());
        assert_eq!(
            s.find(&view(&[("x-api-key", long)])),
            Err(Reason::CredentialTooLong)
        );
    }

    /// `n` bytes of `a`, for the lifetime of the test.
    fn bytes(prefix: &str, n: usize) -> &'static [u8] {
        let mut value = prefix.as_bytes().to_vec();
        value.resize(n, b'a');
        Box::leak(value.into_boxed_slice())
    }

    #[test]
    fn the_length_cap_is_inclusive_for_every_source() {
        let max = CredentialSources::default().max_len;
        let find = |headers: &[(&'static str, &'static [u8])]| {
            CredentialSources::default()
                .find(&view(headers))
                .map(<[u8]>::len)
        };
        // The named header: exactly the cap is taken, one byte more is refused.
        assert_eq!(find(&[("x-api-key", bytes("", max))]), Ok(max));
        assert_eq!(
            find(&[("x-api-key", bytes("", max + 1))]),
            Err(Reason::CredentialTooLong)
        );
        // Authorization: the whole header value is capped, before its scheme is read.
        assert_eq!(
            find(&[("authorization", bytes("Bearer ", max))]),
            Ok(max - 7)
        );
        for over in 1..=8 {
            assert_eq!(
                find(&[("authorization", bytes("Bearer ", max + over))]),
                Err(Reason::CredentialTooLong),
                "a header {over} over the cap, its token {} bytes",
                max + over - 7
            );
        }
    }

    #[test]
    fn query_only_when_enabled() {
        let mut v = view(&[]);
        v.query = Some("a=1&api_key=k&b=2");
        assert_eq!(
            CredentialSources::default().find(&v),
            Err(Reason::MissingCredentials)
        );
        let s = CredentialSources {
            query: Some("api_key".into()),
            ..CredentialSources::default()
        };
        assert_eq!(s.find(&v), Ok(&b"k"[..]));
        v.headers.push(("x-api-key", b"k"));
        assert_eq!(s.find(&v), Err(Reason::MultipleCredentials));
    }

    #[test]
    fn a_scanned_view_reads_the_same_values_as_lookups() {
        // Every mix of none, one or two values of each credential header and of the request
        // id, among other headers, with the named header configured or not, or itself
        // `authorization` or `x-request-id`.
        let uri: Uri = "/".parse().unwrap();
        let names = ["authorization", "x-api-key", "x-request-id", "accept"];
        let counts = [0, 1, 2];
        for named in [
            Some("x-api-key"),
            Some("authorization"),
            Some("x-request-id"),
            None,
        ] {
            let named = named.map(HeaderName::from_static);
            for (auth, key, ids) in counts
                .into_iter()
                .flat_map(|a| counts.map(|k| (a, k)))
                .flat_map(|(a, k)| counts.map(|i| (a, k, i)))
            {
                let mut headers = HeaderMap::new();
                headers.append("accept", HeaderValue::from_static("*/*"));
                for i in 0..auth {
                    let value = HeaderValue::from_str(&format!("Bearer a{i}")).unwrap();
                    headers.append(AUTHORIZATION, value);
                }
                for i in 0..ids {
                    let value = HeaderValue::from_str(&format!("r{i}")).unwrap();
                    headers.append("x-request-id", value);
                }
                for i in 0..key {
                    let value = HeaderValue::from_str(&format!("k{i}")).unwrap();
                    headers.append("x-api-key", value);
                }
                let plain = HttpRequestView::new(&headers, &uri, None);
                let plain = match &named {
                    Some(name) => plain.with_parsed_header(name),
                    None => plain,
                };
                let scan = CredentialScan::of(&headers, named.as_ref());
                let named_found = named.as_ref().is_some_and(|n| headers.contains_key(n));
                assert_eq!(
                    scan.found_any(),
                    auth > 0 || named_found,
                    "{named:?} {auth} {key} {ids}"
                );
                let scanned = plain.with_scan(scan);
                for name in names {
                    let expected: Vec<&[u8]> = plain.header_values(name).collect();
                    let got: Vec<&[u8]> = scanned.header_values(name).collect();
                    assert_eq!(got, expected, "{name} with {named:?} {auth} {key} {ids}");
                    let direct: Vec<&[u8]> = headers
                        .get_all(name)
                        .iter()
                        .map(HeaderValue::as_bytes)
                        .collect();
                    assert_eq!(got, direct, "{name} with {named:?} {auth} {key} {ids}");
                }
                // And so the credential found (or the refusal) is the same.
                let sources = CredentialSources {
                    header: named.as_ref().map(|n| n.as_str().into()),
                    ..CredentialSources::default()
                };
                assert_eq!(sources.find(&scanned), sources.find(&plain));
            }
        }
    }

    /// The scan's values are served without a lookup (the speed-up is real), and a header
    /// with several values is looked up in the view's own map. Shown with a scan of other
    /// headers than the view's, which the layer never does.
    #[test]
    fn a_scanned_view_serves_single_values_from_the_scan() {
        let uri: Uri = "/".parse().unwrap();
        let named = HeaderName::from_static("x-api-key");
        let mut scanned = HeaderMap::new();
        scanned.append("x-api-key", HeaderValue::from_static("k0"));
        scanned.append(AUTHORIZATION, HeaderValue::from_static("Bearer a0"));
        scanned.append(AUTHORIZATION, HeaderValue::from_static("Bearer a1"));
        let mut own = HeaderMap::new();
        own.append(AUTHORIZATION, HeaderValue::from_static("Bearer own"));
        own.append("x-api-key", HeaderValue::from_static("own"));
        scanned.append("x-request-id", HeaderValue::from_static("r0"));
        own.append("x-request-id", HeaderValue::from_static("r-own"));
        let view = HttpRequestView::new(&own, &uri, None)
            .with_parsed_header(&named)
            .with_scan(CredentialScan::of(&scanned, Some(&named)));
        let values = |name| view.header_values(name).collect::<Vec<&[u8]>>();
        assert_eq!(values("x-api-key"), [&b"k0"[..]]);
        assert_eq!(values("authorization"), [&b"Bearer own"[..]]);
        assert_eq!(values("x-request-id"), [&b"r0"[..]]);
    }

    #[test]
    fn http_view_debug_shows_no_header_value_or_query() {
        const SECRET: &str = "Yh3kP0aQ9zLm2Xc7Vb1Nn8Rt5Ww6Ee";
        let mut headers = HeaderMap::new();
        for name in [
            "authorization",
            "x-api-key",
            "cookie",
            "proxy-authorization",
            "accept",
        ] {
            let value =
                http::HeaderValue::from_str(&format!("Bearer acme_{name}_{SECRET}")).unwrap();
            headers.append(HeaderName::from_static(name), value);
        }
        let uri: Uri = format!("/orders?api_key={SECRET}").parse().unwrap();
        let named = HeaderName::from_static("x-api-key");
        let peer = "192.0.2.7".parse().ok();
        let view = HttpRequestView::new(&headers, &uri, peer).with_parsed_header(&named);
        // The view reads each header's own values, by the parsed name or any other.
        for name in ["authorization", "x-api-key", "cookie", "accept"] {
            let values: Vec<&[u8]> = view.header_values(name).collect();
            let expected = format!("Bearer acme_{name}_{SECRET}");
            assert_eq!(values, [expected.as_bytes()], "{name}");
        }
        assert_eq!(view.query(), Some(&*format!("api_key={SECRET}")));
        assert_eq!(view.peer_ip(), peer);
        for shown in [format!("{view:?}"), format!("{view:#?}")] {
            for part in [
                "HttpRequestView",
                "/orders",
                "[redacted]",
                "proxy-authorization",
                "accept",
                "192.0.2.7",
            ] {
                assert!(shown.contains(part), "{part} missing from {shown}");
            }
            for window in SECRET.as_bytes().windows(8) {
                let window = std::str::from_utf8(window).unwrap_or_default();
                assert!(!shown.contains(window), "secret in {shown}");
            }
            assert!(!shown.contains("Bearer"), "a header value in {shown}");
        }
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let mut v = view(&[("x-forwarded-for", b"6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        v.peer = Some("9.9.9.9".parse().unwrap());
        assert_eq!(
            proxies.client_ip(&v),
            v.peer,
            "untrusted peer: header ignored"
        );
        v.peer = Some("10.0.0.1".parse().unwrap());
        assert_eq!(
            proxies.client_ip(&v),
            "1.2.3.4".parse().ok(),
            "right-most untrusted entry"
        );
        v.headers = vec![("x-forwarded-for", b"garbage")];
        assert_eq!(proxies.client_ip(&v), None);
        v.headers = vec![("x-forwarded-for", b"[2001:db8::1]:443")];
        assert_eq!(proxies.client_ip(&v), "2001:db8::1".parse().ok());
    }
}

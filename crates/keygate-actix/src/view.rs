use std::net::IpAddr;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{AUTHORIZATION, HeaderName};
use keygate::RequestView;

/// [`RequestView`] over an actix-web request.
///
/// `Debug` shows the path, the peer and the header names, never a header value or the query
/// string: any of them may carry a key.
#[derive(Clone, Copy)]
pub(crate) struct ActixRequestView<'a> {
    request: &'a ServiceRequest,
    named_header: Option<&'a HeaderName>,
}

impl<'a> ActixRequestView<'a> {
    /// A view of `request`.
    #[must_use]
    pub(crate) fn new(request: &'a ServiceRequest) -> Self {
        Self {
            request,
            named_header: None,
        }
    }

    /// Lets lookups of `name` (the verifier's credential header, already parsed) skip parsing
    /// the name again on every request. Purely a speed-up: lookups give the same values.
    #[must_use]
    pub(crate) fn with_parsed_header(mut self, name: &'a HeaderName) -> Self {
        self.named_header = Some(name);
        self
    }
}

impl std::fmt::Debug for ActixRequestView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let query = self.request.query_string();
        f.debug_struct("ActixRequestView")
            .field("path", &self.request.path())
            .field("query", &(!query.is_empty()).then_some("[redacted]"))
            .field("header_names", &HeaderNames(self.request))
            .field("peer", &self.request.peer_addr())
            .field("named_header", &self.named_header)
            .finish()
    }
}

/// Formats a request's header names (repeated names once per value), no values.
struct HeaderNames<'a>(&'a ServiceRequest);

impl std::fmt::Debug for HeaderNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.headers().iter().map(|(name, _)| name))
            .finish()
    }
}

impl RequestView for ActixRequestView<'_> {
    fn header_values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        // A lookup by `&str` parses and validates the name each time; the hot path's two names
        // are already parsed (`authorization` is a standard header, the named header is given).
        let headers = self.request.headers();
        let values = if name == AUTHORIZATION.as_str() {
            headers.get_all(AUTHORIZATION)
        } else if let Some(parsed) = self.named_header.filter(|h| h.as_str() == name) {
            headers.get_all(parsed)
        } else if name == keygate::audit::REQUEST_ID_HEADER {
            // Read for every audited request.
            const REQUEST_ID: HeaderName =
                HeaderName::from_static(keygate::audit::REQUEST_ID_HEADER);
            headers.get_all(REQUEST_ID)
        } else {
            headers.get_all(name)
        };
        values.map(actix_web::http::header::HeaderValue::as_bytes)
    }

    fn query(&self) -> Option<&str> {
        Some(self.request.query_string()).filter(|q| !q.is_empty())
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.request.peer_addr().map(|addr| addr.ip())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn actix_request_view_debug_shows_no_header_value_or_query() {
        let key = "kgt_test_4fT0qKb2mZ9x_Yh3kP0aQ9zLm2Xc7Vb1Nn8Rt5Ww6EeAbC123";
        let request = actix_web::test::TestRequest::get()
            .uri(&format!("/orders?api_key={key}"))
            .insert_header(("authorization", format!("Bearer {key}")))
            .insert_header(("x-api-key", key))
            .insert_header(("cookie", format!("session={key}")))
            .insert_header(("proxy-authorization", format!("Basic {key}")))
            .peer_addr("192.0.2.7:1".parse().unwrap())
            .to_srv_request();
        let view = super::ActixRequestView::new(&request);
        for shown in [format!("{view:?}"), format!("{view:#?}")] {
            for part in [
                "ActixRequestView",
                "/orders",
                "[redacted]",
                "proxy-authorization",
                "192.0.2.7",
            ] {
                assert!(shown.contains(part), "{part} missing from {shown}");
            }
            for window in key.as_bytes()[21..].windows(8) {
                let window = std::str::from_utf8(window).unwrap();
                assert!(!shown.contains(window), "secret in {shown}");
            }
        }
    }
}

use std::net::IpAddr;

use actix_web::dev::ServiceRequest;
use keygate::RequestView;

/// [`RequestView`] over an actix-web request.
#[derive(Debug, Clone, Copy)]
pub struct ActixRequestView<'a> {
    request: &'a ServiceRequest,
}

impl<'a> ActixRequestView<'a> {
    /// A view of `request`.
    #[must_use]
    pub fn new(request: &'a ServiceRequest) -> Self {
        Self { request }
    }
}

impl RequestView for ActixRequestView<'_> {
    fn header_values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.request
            .headers()
            .get_all(name)
            .map(actix_web::http::header::HeaderValue::as_bytes)
    }

    fn query(&self) -> Option<&str> {
        Some(self.request.query_string()).filter(|q| !q.is_empty())
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.request.peer_addr().map(|addr| addr.ip())
    }
}

//! The caller, as a tonic handler reads it.

use std::sync::Arc;

use keygate::Identity;

/// The caller the keygate layer verified: the `Arc<Identity>` it put into the request's
/// extensions, which tonic hands to the handler in `tonic::Request::extensions`. Cloning is one
/// reference-count increment.
///
/// `None` when the layer is [`optional`](keygate::ApiKeyLayer::optional) and the call carried no
/// key, or when no keygate layer is installed in front of this service (on a required layer a
/// call without a verified key never reaches the handler).
///
/// ```
/// use keygate_tonic::identity;
/// use tonic::{Request, Status};
///
/// fn who(request: &Request<()>) -> Result<String, Status> {
///     let caller = identity(request).ok_or_else(|| Status::unauthenticated("API key required"))?;
///     Ok(format!("{} ({})", caller.name(), caller.key_id()))
/// }
/// # assert!(who(&Request::new(())).is_err());
/// ```
#[must_use]
pub fn identity<T>(request: &tonic::Request<T>) -> Option<Arc<Identity>> {
    request.extensions().get::<Arc<Identity>>().cloned()
}

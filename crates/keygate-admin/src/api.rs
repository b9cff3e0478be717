//! [`AdminApi`]: the admin API as an axum [`Router`], secured by keygate itself.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use keygate::audit::AuditTrail;
use keygate::{Admin, RequireScopes, Verifier};
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa::openapi::server::Server;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::docs::ApiDoc;
use crate::state::ApiState;
use crate::{audit, console, environments, keys, owners, policy};

/// The scope of read-only admin keys: every `GET` endpoint.
pub const READ_SCOPE: &str = "keygate:admin:read";
/// The scope of admin keys that change keys. It implies [`READ_SCOPE`]: a key with only this
/// scope may read too (so one scope makes a full admin key; `keygate create --admin` grants
/// both anyway, so that revoking write access is removing one scope).
pub const WRITE_SCOPE: &str = "keygate:admin:write";

/// The admin API, ready to mount: JSON endpoints over an [`Admin`], callers checked by a
/// [`Verifier`] (keygate's own tower layer and scope guard), `/openapi.json`, and the web
/// console at `/console`.
///
/// ```
/// use axum::Router;
/// use keygate::audit::MemoryAuditTrail;
/// use keygate::{Keyring, MemoryStore, Verifier};
/// use keygate_admin::AdminApi;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// let trail = MemoryAuditTrail::new();
/// let verifier = Verifier::builder(Keyring::development("acme_test")?, store)
///     .audit_sink(trail.clone())
///     .build();
/// let admin = AdminApi::new(verifier.admin(), verifier.clone())
///     .audit_trail(trail)
///     .mounted_at("/admin");
/// let app: Router = Router::new()
///     // … the service's own routes …
///     .nest("/admin", admin.router());
/// # Ok(()) }
/// ```
///
/// # Who may call it
/// Every endpoint but `/openapi.json` runs behind keygate's key layer (the verifier given:
/// its cache, rate limits, failure limit and audit apply) and a scope guard: `GET` endpoints
/// need [`READ_SCOPE`] or [`WRITE_SCOPE`], changes need [`WRITE_SCOPE`]. No key: 401; a key
/// without either scope: 403; a read-only key asking for a change: 403. The document at
/// `/openapi.json` describes the API only (no keys, no data) and needs no key; so do the
/// console's page and assets (`/console`, `/console.js`, `/console.css`), which hold no data
/// either.
///
/// # What a change does
/// Each change goes through the [`Admin`] handle, acting as the caller's key id: it is one
/// audit event whose actor is that id, published on the admin handle's invalidation channel.
/// Give it an [`Admin`] that reaches the services: the verifier's own (`verifier.admin()`,
/// also evicting this process's cache), or a standalone one with the channel the services
/// subscribe to.
#[derive(Clone)]
#[must_use]
pub struct AdminApi {
    admin: Admin,
    verifier: Verifier,
    trail: Option<Arc<dyn AuditTrail>>,
    mounted_at: Option<String>,
    console: bool,
}

impl AdminApi {
    /// The API over `admin`, its callers checked by `verifier` (usually over the same store).
    pub fn new(admin: Admin, verifier: Verifier) -> Self {
        Self {
            admin,
            verifier,
            trail: None,
            mounted_at: None,
            console: true,
        }
    }

    /// Where `GET /audit` and `GET /usage` read (without one they answer 501): the store's
    /// `SqlAuditSink` (keygate-sqlx), or a [`MemoryAuditTrail`](keygate::audit::MemoryAuditTrail);
    /// give the same sink to the verifiers so their requests are in it.
    pub fn audit_trail(self, trail: impl AuditTrail) -> Self {
        self.shared_audit_trail(Arc::new(trail))
    }

    /// [`AdminApi::audit_trail`] with a trail already shared.
    pub fn shared_audit_trail(mut self, trail: Arc<dyn AuditTrail>) -> Self {
        self.trail = Some(trail);
        self
    }

    /// The path the router is nested under (e.g. `/admin`), named as the server in the
    /// OpenAPI document so clients resolve its paths. Default: none (paths are relative to
    /// wherever the document was fetched from, less `/openapi.json`).
    pub fn mounted_at(mut self, path: &str) -> Self {
        self.mounted_at = Some(path.trim_end_matches('/').to_owned());
        self
    }

    /// Whether the router serves the web console at `/console` (default: yes). The page and
    /// its assets need no key (they hold no data); every API call the page makes carries the
    /// admin key the operator types. See docs/admin.md.
    pub fn console(mut self, serve: bool) -> Self {
        self.console = serve;
        self
    }

    /// The OpenAPI 3.1 document this API serves at `/openapi.json`.
    #[must_use]
    pub fn openapi(&self) -> OpenApi {
        let mut api = parts().1;
        if let Some(path) = &self.mounted_at {
            api.servers = Some(vec![Server::new(if path.is_empty() { "/" } else { path })]);
        }
        api
    }

    /// The router, to [`nest`](Router::nest) under a path of the service's choice (or serve
    /// as is). Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so admin
    /// keys restricted to client addresses see the address.
    pub fn router<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        // Rendered once: the document never changes while the router lives.
        let document =
            axum::body::Bytes::from(serde_json::to_vec(&self.openapi()).unwrap_or_default());
        let (api, _) = parts();
        let api = api
            .route_layer(keygate_axum::layer(self.verifier))
            // Keys (and, once, a secret) are never kept by a cache on the way.
            .layer(axum::middleware::map_response(no_store))
            .with_state(ApiState {
                admin: self.admin,
                trail: self.trail,
            });
        let router = if self.console {
            console::routes()
        } else {
            Router::new()
        };
        router
            .route(
                "/openapi.json",
                get(move || {
                    let document = document.clone();
                    async move { ([(http::header::CONTENT_TYPE, "application/json")], document) }
                }),
            )
            .merge(api)
    }
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("admin", &self.admin)
            .field("audit_trail", &self.trail.is_some())
            .field("mounted_at", &self.mounted_at)
            .field("console", &self.console)
            .finish_non_exhaustive()
    }
}

async fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

/// The admin API over `admin`, callers checked by `verifier`, without an audit trail (see
/// [`AdminApi`] for the options).
pub fn router<S>(admin: Admin, verifier: Verifier) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    AdminApi::new(admin, verifier).router()
}

/// Every endpoint, registered once: the router (scope guards on, key layer not yet) and the
/// OpenAPI document built from the same registrations.
pub(crate) fn parts() -> (Router<ApiState>, OpenApi) {
    let read: OpenApiRouter<ApiState> = OpenApiRouter::new()
        .routes(routes!(keys::list))
        .routes(routes!(keys::show))
        .routes(routes!(keys::quota_balance))
        .routes(routes!(environments::list))
        .routes(routes!(audit::events))
        .routes(routes!(audit::usage))
        .routes(routes!(policy::show))
        .routes(routes!(owners::list))
        .routes(routes!(owners::show))
        .routes(routes!(owners::quota_balance));
    let write: OpenApiRouter<ApiState> = OpenApiRouter::new()
        .routes(routes!(keys::create))
        .routes(routes!(keys::delete))
        .routes(routes!(keys::rename))
        .routes(routes!(keys::set_scopes))
        .routes(routes!(keys::set_expiry))
        .routes(routes!(keys::set_rate_limit))
        .routes(routes!(keys::set_quota))
        .routes(routes!(keys::add_credits))
        .routes(routes!(keys::set_limits))
        .routes(routes!(keys::set_metadata))
        .routes(routes!(keys::set_allowed_ips))
        .routes(routes!(keys::disable))
        .routes(routes!(keys::enable))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::rotate))
        .routes(routes!(policy::set))
        .routes(routes!(owners::create))
        .routes(routes!(owners::update))
        .routes(routes!(owners::add_credits))
        .routes(routes!(owners::delete))
        .routes(routes!(owners::disable))
        .routes(routes!(owners::enable))
        .routes(routes!(owners::revoke));
    let (read, read_doc) = read.split_for_parts();
    let (write, write_doc) = write.split_for_parts();
    let mut document = ApiDoc::openapi();
    document.merge(read_doc);
    document.merge(write_doc);
    let router = read
        .route_layer(RequireScopes::any([READ_SCOPE, WRITE_SCOPE]))
        .merge(write.route_layer(RequireScopes::all([WRITE_SCOPE])));
    (router, document)
}

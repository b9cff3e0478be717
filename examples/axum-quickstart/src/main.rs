//! keygate quickstart for axum.
//!
//! ```text
//! cargo run -p example-axum-quickstart
//! ```
//!
//! It starts on 127.0.0.1:3000 (`QUICKSTART_LISTEN=ADDR` to change it) with a SQLite key store
//! in `keygate.db` in the working directory (created and migrated on start; the actix-web
//! quickstart shares it when started in the same directory). The first start creates a demo
//! key with the scope `greetings:read` and prints it once with a ready `curl` line; later starts
//! reuse that stored key (its secret is never stored, so it is not shown again). Then it prints
//! the tour: the `keygate` commands to try in the same directory (create a key, call the
//! service with it, revoke it and see the refusal, read the audit trail and the usage):
//!
//! ```text
//! keygate create --name mine                                            # prints the key and its id, once
//! curl -i http://127.0.0.1:3000/                                        # public: 200
//! curl -i http://127.0.0.1:3000/hello                                   # no key: 401
//! curl -i -H "Authorization: Bearer $KEY" http://127.0.0.1:3000/hello   # 200, greets the key by name
//! curl -i -H "x-api-key: $KEY" http://127.0.0.1:3000/admin              # 403 insufficient_scope
//! keygate revoke ID                                                     # the next request: 401, within 1 s
//! keygate audit --key ID                                                # every request with it
//! keygate usage                                                         # requests per key per day
//! curl -s http://127.0.0.1:3000/metrics | grep keygate_                  # Prometheus metrics
//! keygate create --admin --name ops                                     # an admin key, shown once
//! # then http://127.0.0.1:3000/keygate/console in a browser: the web console, with that admin key
//! ```
//!
//! What it wires, beyond the layer: `store.invalidation()` (the file's change feed, so a key
//! changed by the CLI or the other quickstart is refused here within a second, not after the
//! 30 s cache TTL), `store.audit_sink()` (every decision and change in the file, for
//! `keygate audit` and `keygate usage`, besides the log), and a shutdown on Ctrl-C or SIGTERM
//! that writes what is still buffered.
//!
//! `/keygate` is the admin API (keygate-admin) with its web console at `/keygate/console`,
//! nested beside the service's routes with its own key layer over the same verifier: it takes
//! admin keys only (`keygate:admin:read`, `keygate:admin:write`; `keygate create --admin`
//! mints one), so the demo key gets 403 there, and its changes are evicted from this
//! process's cache at once. The app's own `/admin` route is unrelated (scope `admin:write`).
//! See docs/admin.md.
//!
//! `/metrics` shows keygate's metrics (docs/observability.md) in the Prometheus text format,
//! from `metrics-exporter-prometheus`'s recorder, rendered by a route of this same app rather
//! than by the exporter's own HTTP listener (so no second server, and the exporter is built
//! without its listener and push-gateway features). It is unauthenticated, like `/`, and this
//! server listens on loopback only; in production serve it on an internal port or restrict it at
//! the proxy (it shows traffic volumes and refusal reasons, never key ids or secrets).
//!
//! It hashes keys with the public development pepper, asked for by name (`Peppers::development()`),
//! so `keygate.db` is recorded as a development store (with its prefix, `demo_test`): the
//! `keygate` CLI uses that pepper and prefix there without being told, and a verifier given a
//! real pepper refuses the file. A real service reads its secret pepper with
//! `Peppers::from_env()?` (`KEYGATE_PEPPER`) and starts its verifier with `.start().await?`,
//! which refuses a pepper the store's keys were not made with.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use example_quickstart_tour as tour;
use keygate::audit::TracingSink;
use keygate::{KeyFormat, Keyring, Peppers, Verifier};
use keygate_admin::AdminApi;
use keygate_axum::{Identity, RequireScopes};
use keygate_sqlx::SqlAuditSink;
use keygate_sqlx::SqliteStore;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const ADDR: &str = "127.0.0.1:3000";
const DEMO_NAME: &str = "axum quickstart demo";
/// Where the admin API and its web console are mounted.
const ADMIN_MOUNT: &str = "/keygate";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,keygate=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    // The recorder first: the verifier describes its metrics to the recorder installed when it
    // is built.
    let prometheus = install_prometheus()?;

    // A demo: the public development pepper, by name. Yours: `Peppers::from_env()?`.
    let keyring = Keyring::new(KeyFormat::new(tour::PREFIX)?, Peppers::development());
    // Created if missing, migrated on every start (idempotent).
    let store = SqliteStore::open(tour::DATABASE).await?;
    let audit = store.audit_sink();
    let verifier = Verifier::builder(keyring, store.clone())
        // Keys changed by other processes on the file (the CLI) are evicted within ~100 ms.
        .invalidation(store.invalidation())
        // Every decision and change, in the file (`keygate audit`, `keygate usage`) and the log.
        .audit_sink(audit.clone())
        .audit_sink(TracingSink)
        // Checks the pepper and prefix against the store (refusing others), then starts.
        .start()
        .await?;
    // The cache size gauges move on misses only, and lag moka's batched maintenance: refresh
    // them with exact counts now and then.
    let gauges = verifier.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(15));
        loop {
            every.tick().await;
            gauges.cache_entry_counts().await;
        }
    });

    let listener = tokio::net::TcpListener::bind(tour::listen_addr(ADDR)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let demo = tour::demo_key(&verifier.admin(), DEMO_NAME).await?;
    println!(
        "{}",
        tour::tour(
            "axum",
            "actix-web",
            &url,
            &demo,
            &verifier,
            Some(&format!("{url}{ADMIN_MOUNT}/console"))
        )
    );

    axum::serve(
        listener,
        app(verifier.clone(), prometheus, audit)
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(tour::shutdown_signal())
    .await?;
    // Write the last-used times and audit events still buffered.
    tour::flush(&verifier).await?;
    Ok(())
}

/// Installs the Prometheus recorder globally, with histogram buckets for store lookups, and runs
/// its upkeep (histogram maintenance) every few seconds.
fn install_prometheus() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(keygate::metrics::STORE_FIND_DURATION.to_owned()),
            &[
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
            ],
        )?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn app(verifier: Verifier, prometheus: PrometheusHandle, audit: SqlAuditSink) -> Router {
    // The admin API and web console, beside the API (not under its key layer: it has its own,
    // over the same verifier, and wants keys with `keygate:admin:*` scopes). Its changes go
    // through the verifier's admin handle: audited, and evicted from this cache at once.
    let admin_api = AdminApi::new(verifier.admin(), verifier.clone())
        .audit_trail(audit)
        .mounted_at(ADMIN_MOUNT);
    let protected = Router::new()
        .route("/hello", get(hello))
        .route(
            "/admin",
            get(admin).route_layer(RequireScopes::all(["admin:write"])),
        )
        .route_layer(keygate_axum::layer(verifier));
    Router::new()
        .route("/", get(public))
        // Outside the key layer: scrapers send no API key.
        .route(
            "/metrics",
            get(move || std::future::ready(prometheus.render())),
        )
        .merge(protected)
        .nest(ADMIN_MOUNT, admin_api.router())
}

async fn public() -> &'static str {
    "public: no key needed\n"
}

async fn hello(identity: Identity) -> String {
    format!("hello, {} (key {})\n", identity.name(), identity.key_id())
}

async fn admin(identity: Identity) -> String {
    format!("admin area, welcome {}\n", identity.name())
}

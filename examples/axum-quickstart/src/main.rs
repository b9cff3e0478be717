//! keygate quickstart for axum.
//!
//! ```text
//! cargo run -p example-axum-quickstart
//! ```
//!
//! It starts on 127.0.0.1:3000 with a SQLite key store in `keygate.db` (in the working
//! directory; created and migrated on start). The first start creates a demo key with the scope
//! `greetings:read` and prints it once with a ready `curl` line; later starts reuse that stored
//! key (its secret is never stored, so it is not shown again; delete `keygate.db` for a new one).
//! Then try:
//!
//! ```text
//! curl -i http://127.0.0.1:3000/                                        # public: 200
//! curl -i http://127.0.0.1:3000/hello                                   # no key: 401
//! curl -i -H "Authorization: Bearer $KEY" http://127.0.0.1:3000/hello   # 200, greets the key by name
//! curl -i -H "x-api-key: $KEY" http://127.0.0.1:3000/admin              # 403 insufficient_scope
//! curl -s http://127.0.0.1:3000/metrics | grep keygate_                  # Prometheus metrics
//! ```
//!
//! `/metrics` shows keygate's metrics (docs/observability.md) in the Prometheus text format,
//! from `metrics-exporter-prometheus`'s recorder, rendered by a route of this same app rather
//! than by the exporter's own HTTP listener (so no second server, and the exporter is built
//! without its listener and push-gateway features). It is unauthenticated, like `/`, and this
//! server listens on loopback only; in production serve it on an internal port or restrict it at
//! the proxy (it shows traffic volumes and refusal reasons, never key ids or secrets).
//!
//! It hashes keys with the public development pepper, asked for by name (`Peppers::development()`),
//! so `keygate.db` is recorded as a development store: the `keygate` CLI uses that pepper there
//! without being told (and says so), and a verifier given a real pepper refuses the file. A
//! real service reads its secret pepper with `Peppers::from_env()?` (`KEYGATE_PEPPER`) and
//! starts its verifier with `.start().await?`, which refuses a pepper the store's keys were not
//! made with.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use keygate::store::{KeyFilter, PageRequest};
use keygate::{KeyAdmin, KeyRecord, KeyState, Keyring, NewKey, Peppers, Verifier};
use keygate_axum::{Identity, RequireScopes};
use keygate_sqlx::SqliteStore;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const ADDR: &str = "127.0.0.1:3000";
const DATABASE: &str = "keygate.db";
const DEMO_NAME: &str = "quickstart demo";
const DEMO_OWNER: &str = "examples";

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
    let keyring = Keyring::new(
        keygate::KeyFormat::new("demo_test")?,
        Peppers::development(),
    );
    // Created if missing, migrated on every start (idempotent).
    let store = SqliteStore::open(DATABASE).await?;
    // Checks the pepper against the store (refusing one its keys were not made with).
    let verifier = Verifier::builder(keyring, store).start().await?;
    let admin = verifier.admin();
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

    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("keygate quickstart listening on http://{ADDR} (keys in ./{DATABASE})");
    match stored_demo_key(&admin).await? {
        Some(demo) => {
            // Only the digest is stored: the key itself was shown once, at its first start.
            println!(
                "demo key: reusing {} (id {}, scope greetings:read), created at the first start",
                demo.name, demo.id
            );
            println!("its secret was printed then and is not stored, so it cannot be shown again;");
            println!("for a new demo key, stop the server, delete ./{DATABASE} and start again");
        }
        None => {
            let demo = admin
                .create_key(
                    NewKey::new(DEMO_NAME)
                        .owner(DEMO_OWNER)
                        .scope("greetings:read")?,
                )
                .await?;
            // The key is printed once, here, on its own line; it is not stored anywhere in clear.
            println!("demo key (shown once, scope greetings:read):");
            println!("{}", demo.key.expose_secret());
            println!(
                "try: curl -i -H 'Authorization: Bearer {}' http://{ADDR}/hello",
                demo.key.expose_secret()
            );
        }
    }

    axum::serve(
        listener,
        app(verifier.clone(), prometheus).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    // Write the last-used times and audit events still buffered.
    verifier.flush_last_used().await?;
    verifier.flush_audit().await;
    Ok(())
}

/// The active demo key from an earlier start, found by name and owner.
async fn stored_demo_key(admin: &keygate::Admin) -> Result<Option<KeyRecord>, keygate::StoreError> {
    let filter = KeyFilter {
        owner: Some(DEMO_OWNER.to_owned()),
        state: Some(KeyState::Active),
        name_contains: Some(DEMO_NAME.to_owned()),
    };
    let page = admin.list(&filter, PageRequest::first(100)).await?;
    Ok(page.keys.into_iter().find(|key| key.name == DEMO_NAME))
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

fn app(verifier: Verifier, prometheus: PrometheusHandle) -> Router {
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

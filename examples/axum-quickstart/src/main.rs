//! keygate quickstart for axum.
//!
//! ```text
//! cargo run -p example-axum-quickstart
//! ```
//!
//! It starts on 127.0.0.1:3000 with an in-memory key store, creates a demo key with the scope
//! `greetings:read`, and prints it once with a ready `curl` line. Then try:
//!
//! ```text
//! curl -i http://127.0.0.1:3000/                                        # public: 200
//! curl -i http://127.0.0.1:3000/hello                                   # no key: 401
//! curl -i -H "Authorization: Bearer $KEY" http://127.0.0.1:3000/hello   # 200, greets the key by name
//! curl -i -H "x-api-key: $KEY" http://127.0.0.1:3000/admin              # 403 insufficient_scope
//! ```
//!
//! Set `KEYGATE_PEPPER` (≥ 32 bytes) to hash with your own pepper; without it the public
//! development pepper is used and a warning is logged.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use keygate::{Keyring, MemoryStore, NewKey, Peppers, Verifier};
use keygate_axum::{Identity, RequireScopes};

const ADDR: &str = "127.0.0.1:3000";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,keygate=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let keyring = Keyring::new(
        keygate::KeyFormat::new("demo_test")?,
        Peppers::from_env_or_development()?,
    );
    let verifier = Verifier::builder(keyring, MemoryStore::new()).build();

    let demo = verifier
        .admin()
        .create_key(
            NewKey::new("quickstart demo")
                .owner("examples")
                .scope("greetings:read")?,
        )
        .await?;

    let app = app(verifier);
    let listener = tokio::net::TcpListener::bind(ADDR).await?;

    // The key is printed once, here, on its own line; it is not stored anywhere in clear.
    println!("keygate quickstart listening on http://{ADDR}");
    println!("demo key (shown once, scope greetings:read):");
    println!("{}", demo.key.expose_secret());
    println!(
        "try: curl -i -H 'Authorization: Bearer {}' http://{ADDR}/hello",
        demo.key.expose_secret()
    );
    drop(demo);

    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

fn app(verifier: Verifier) -> Router {
    let protected = Router::new()
        .route("/hello", get(hello))
        .route(
            "/admin",
            get(admin).route_layer(RequireScopes::all(["admin:write"])),
        )
        .route_layer(keygate_axum::layer(verifier));
    Router::new().route("/", get(public)).merge(protected)
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

//! keygate quickstart for actix-web.
//!
//! ```text
//! cargo run -p example-actix-quickstart
//! ```
//!
//! It starts on 127.0.0.1:3001 with an in-memory key store, creates a demo key with the scope
//! `greetings:read`, and prints it once with a ready `curl` line. The same curl lines as the axum
//! quickstart give the same answers:
//!
//! ```text
//! curl -i http://127.0.0.1:3001/                                        # public: 200
//! curl -i http://127.0.0.1:3001/hello                                   # no key: 401
//! curl -i -H "Authorization: Bearer $KEY" http://127.0.0.1:3001/hello   # 200, greets the key by name
//! curl -i -H "x-api-key: $KEY" http://127.0.0.1:3001/admin              # 403 insufficient_scope
//! ```
//!
//! Set `KEYGATE_PEPPER` (≥ 32 bytes) to hash with your own pepper; without it the public
//! development pepper is used and a warning is logged.

use actix_web::{App, HttpServer, web};
use keygate::{KeyFormat, Keyring, MemoryStore, NewKey, Peppers, Verifier};
use keygate_actix::{ApiKeyAuth, Identity, RequireScopes};

const ADDR: &str = "127.0.0.1:3001";

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,keygate=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let keyring = Keyring::new(
        KeyFormat::new("demo_test")?,
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

    let server = HttpServer::new(move || {
        let auth = ApiKeyAuth::new(verifier.clone());
        App::new()
            .route("/", web::get().to(public))
            .service(web::resource("/hello").wrap(auth.clone()).get(hello))
            .service(
                web::resource("/admin")
                    .wrap(RequireScopes::all(["admin:write"]))
                    .wrap(auth)
                    .get(admin),
            )
    })
    .bind(ADDR)?;

    // The key is printed once, here, on its own line; it is not stored anywhere in clear.
    println!("keygate quickstart listening on http://{ADDR}");
    println!("demo key (shown once, scope greetings:read):");
    println!("{}", demo.key.expose_secret());
    println!(
        "try: curl -i -H 'Authorization: Bearer {}' http://{ADDR}/hello",
        demo.key.expose_secret()
    );
    drop(demo);

    server.run().await?;
    Ok(())
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

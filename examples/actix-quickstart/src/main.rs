//! keygate quickstart for actix-web.
//!
//! ```text
//! cargo run -p example-actix-quickstart
//! ```
//!
//! It starts on 127.0.0.1:3001 with a SQLite key store in `keygate.db` (in the working
//! directory; created and migrated on start, shared with the axum quickstart when run from the
//! same directory). The first start creates a demo key with the scope `greetings:read` and prints
//! it once with a ready `curl` line; later starts reuse that stored key (its secret is never
//! stored, so it is not shown again; delete `keygate.db` for a new one). The same curl lines as
//! the axum quickstart give the same answers:
//!
//! ```text
//! curl -i http://127.0.0.1:3001/                                        # public: 200
//! curl -i http://127.0.0.1:3001/hello                                   # no key: 401
//! curl -i -H "Authorization: Bearer $KEY" http://127.0.0.1:3001/hello   # 200, greets the key by name
//! curl -i -H "x-api-key: $KEY" http://127.0.0.1:3001/admin              # 403 insufficient_scope
//! ```
//!
//! It hashes keys with the public development pepper, asked for by name (`Peppers::development()`),
//! so `keygate.db` is recorded as a development store: the `keygate` CLI uses that pepper there
//! without being told (and says so), and a verifier given a real pepper refuses the file. A
//! real service reads its secret pepper with `Peppers::from_env()?` (`KEYGATE_PEPPER`) and
//! starts its verifier with `.start().await?`, which refuses a pepper the store's keys were not
//! made with.

use actix_web::{App, HttpServer, web};
use keygate::store::{KeyFilter, PageRequest};
use keygate::{KeyAdmin, KeyFormat, KeyRecord, KeyState, Keyring, NewKey, Peppers, Verifier};
use keygate_actix::{ApiKeyAuth, Identity, RequireScopes};
use keygate_sqlx::SqliteStore;

const ADDR: &str = "127.0.0.1:3001";
const DATABASE: &str = "keygate.db";
const DEMO_NAME: &str = "quickstart demo";
const DEMO_OWNER: &str = "examples";

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,keygate=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    // A demo: the public development pepper, by name. Yours: `Peppers::from_env()?`.
    let keyring = Keyring::new(KeyFormat::new("demo_test")?, Peppers::development());
    // Created if missing, migrated on every start (idempotent).
    let store = SqliteStore::open(DATABASE).await?;
    // Checks the pepper against the store (refusing one its keys were not made with).
    let verifier = Verifier::builder(keyring, store).start().await?;
    let keys = verifier.admin();
    let for_workers = verifier.clone();

    let server = HttpServer::new(move || {
        let verifier = for_workers.clone();
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

    println!("keygate quickstart listening on http://{ADDR} (keys in ./{DATABASE})");
    match stored_demo_key(&keys).await? {
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
            let demo = keys
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

    // Ctrl-C stops the server gracefully; then write the last-used times and audit events still
    // buffered.
    server.run().await?;
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

async fn public() -> &'static str {
    "public: no key needed\n"
}

async fn hello(identity: Identity) -> String {
    format!("hello, {} (key {})\n", identity.name(), identity.key_id())
}

async fn admin(identity: Identity) -> String {
    format!("admin area, welcome {}\n", identity.name())
}

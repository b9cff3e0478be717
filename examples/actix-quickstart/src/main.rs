//! keygate quickstart for actix-web.
//!
//! ```text
//! cargo run -p example-actix-quickstart
//! ```
//!
//! It starts on 127.0.0.1:3001 (`QUICKSTART_LISTEN=ADDR` to change it) with a SQLite key store
//! in `keygate.db` in the working directory (created and migrated on start; the axum quickstart
//! shares it when started in the same directory, each with a demo key of its own). The first
//! start creates a demo key with the scope `greetings:read` and prints it once with a ready
//! `curl` line; later starts reuse that stored key (its secret is never stored, so it is not
//! shown again). Then it prints the tour: the `keygate` commands to try in the same directory.
//! The same curl lines as the axum quickstart give the same answers:
//!
//! ```text
//! keygate create --name mine                                            # prints the key and its id, once
//! curl -i http://127.0.0.1:3001/                                        # public: 200
//! curl -i http://127.0.0.1:3001/hello                                   # no key: 401
//! curl -i -H "Authorization: Bearer $KEY" http://127.0.0.1:3001/hello   # 200, greets the key by name
//! curl -i -H "x-api-key: $KEY" http://127.0.0.1:3001/admin              # 403 insufficient_scope
//! keygate revoke ID                                                     # the next request: 401, within 1 s
//! keygate audit --key ID                                                # every request with it
//! keygate usage                                                         # requests per key per day
//! ```
//!
//! What it wires, beyond the middleware: `store.invalidation()` (the file's change feed, so a
//! key changed by the CLI or the other quickstart is refused here within a second),
//! `store.audit_sink()` (every decision and change in the file, for `keygate audit` and
//! `keygate usage`, besides the log), and a flush of what is still buffered once actix-web has
//! stopped on Ctrl-C or SIGTERM.
//!
//! It hashes keys with the public development pepper, asked for by name (`Peppers::development()`),
//! so `keygate.db` is recorded as a development store (with its prefix, `demo_test`): the
//! `keygate` CLI uses that pepper and prefix there without being told, and a verifier given a
//! real pepper refuses the file. A real service reads its secret pepper with
//! `Peppers::from_env()?` (`KEYGATE_PEPPER`) and starts its verifier with `.start().await?`,
//! which refuses a pepper the store's keys were not made with.

use actix_web::{App, HttpServer, web};
use example_quickstart_tour as tour;
use keygate::audit::TracingSink;
use keygate::{KeyFormat, Keyring, Peppers, Verifier};
use keygate_actix::{ApiKeyAuth, Identity, RequireScopes};
use keygate_sqlx::SqliteStore;

const ADDR: &str = "127.0.0.1:3001";
const DEMO_NAME: &str = "actix-web quickstart demo";

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
    let keyring = Keyring::new(KeyFormat::new(tour::PREFIX)?, Peppers::development());
    // Created if missing, migrated on every start (idempotent).
    let store = SqliteStore::open(tour::DATABASE).await?;
    let verifier = Verifier::builder(keyring, store.clone())
        // Keys changed by other processes on the file (the CLI) are evicted within ~100 ms.
        .invalidation(store.invalidation())
        // Every decision and change, in the file (`keygate audit`, `keygate usage`) and the log.
        .audit_sink(store.audit_sink())
        .audit_sink(TracingSink)
        // Checks the pepper and prefix against the store (refusing others), then starts.
        .start()
        .await?;
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
    // actix-web stops gracefully on Ctrl-C and SIGTERM by itself.
    .shutdown_timeout(10)
    .bind(tour::listen_addr(ADDR))?;

    let url = match server.addrs().first() {
        Some(addr) => format!("http://{addr}"),
        None => format!("http://{ADDR}"),
    };
    let demo = tour::demo_key(&verifier.admin(), DEMO_NAME).await?;
    println!(
        "{}",
        tour::tour("actix-web", "axum", &url, &demo, &verifier, None)
    );

    server.run().await?;
    // Write the last-used times and audit events still buffered.
    tour::flush(&verifier).await?;
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

//! keygate on many instances: one service, run twice, sharing PostgreSQL (keys, audit) and
//! Redis (rate limits; optionally invalidation).
//!
//! ```text
//! examples/multi-instance/run.sh            # the whole demo: two instances, the CLI, curl
//! cargo run -p example-multi-instance -- 3001 a   # one instance on 127.0.0.1:3001, named "a"
//! ```
//!
//! Configuration comes from the environment (see the README beside this file):
//! `KEYGATE_DATABASE_URL` (PostgreSQL), `KEYGATE_REDIS_URL`, `KEYGATE_PEPPER`,
//! `KEYGATE_PREFIX` (default `kg`), `KEYGATE_INVALIDATION` (`postgres` or `redis`).
//!
//! ```text
//! curl -i http://127.0.0.1:3001/healthz                                  # subscription state
//! curl -i -H "Authorization: Bearer $KEY" http://127.0.0.1:3001/hello   # 200 + RateLimit headers
//! ```

use std::net::SocketAddr;

use example_multi_instance::{Config, Error, app, verifier};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .ok_or("usage: example-multi-instance PORT [NAME]")?
        .parse()?;
    let name = args.next().unwrap_or_else(|| format!("instance-{port}"));
    let config = Config::from_env()?;
    let verifier = verifier(&config).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{name} listening on http://{addr} ({config:?})");
    axum::serve(
        listener,
        app(verifier.clone(), &name).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await?;
    // What is still buffered: last-used times and audit events.
    verifier.flush_last_used().await?;
    let audit = verifier.flush_audit().await;
    println!("{name} stopped (audit: {audit:?})");
    Ok(())
}

/// Ctrl-C or SIGTERM (what the demo script and most orchestrators send).
async fn shutdown() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

//! `keygate serve`: the admin API (keygate-admin) and its web console on the key store, in
//! this process.

use std::net::SocketAddr;
use std::sync::Arc;

use keygate::{Invalidation, Keyring, Verifier};
use keygate_admin::AdminApi;

use crate::cli::ServeArgs;
use crate::error::CliError;
use crate::output::Output;
use crate::store::Store;

/// The address `--listen` names, refused (before anything is opened) when it is not loopback
/// and `--allow-remote` is not given: the API speaks plain HTTP.
pub(crate) fn listen_addr(args: &ServeArgs) -> Result<SocketAddr, CliError> {
    let addr: SocketAddr = args.listen.trim().parse().map_err(|_| {
        CliError::usage(format!(
            "bad --listen {:?}: use an address and port, like 127.0.0.1:8080 or [::1]:8080",
            args.listen
        ))
    })?;
    if !addr.ip().is_loopback() && !args.allow_remote {
        return Err(CliError::usage(format!(
            "refusing to serve the admin API on {addr}, which is not a loopback address: it speaks plain HTTP. Put it behind a TLS-terminating proxy and pass --allow-remote (see docs/admin.md)"
        )));
    }
    Ok(addr)
}

/// Serves until interrupted (Ctrl-C), then writes the audit events still queued.
pub(crate) async fn serve(
    store: &Store,
    keyring: Keyring,
    redis: Option<Arc<dyn Invalidation>>,
    listen: SocketAddr,
    out: Output<'_>,
) -> Result<(), CliError> {
    // The verifier checks admin keys; it follows changes made elsewhere through the store's
    // own change feed, and writes its requests to the store's audit trail.
    let builder = match store {
        Store::Sqlite(s) => {
            Verifier::builder(keyring.clone(), s.clone()).invalidation(s.invalidation())
        }
        Store::Postgres(s) => {
            Verifier::builder(keyring.clone(), s.clone()).invalidation(s.invalidation())
        }
    };
    let verifier = builder
        .audit_sink(store.audit())
        // Few requests: each event is written at once, so the trail shows it.
        .audit_linger(std::time::Duration::ZERO)
        .start()
        .await
        .map_err(CliError::from)?;
    // Changes: through the verifier's own handle (evicting its cache at once; the store
    // publishes to its feed), or, with --redis-url, a handle that also publishes there.
    let admin = match redis {
        Some(channel) => store
            .admin_builder()
            .keyring(keyring)
            .shared_invalidation(channel)
            .build(),
        None => verifier.admin(),
    };
    let app = AdminApi::new(admin.clone(), verifier.clone())
        .audit_trail(store.audit())
        .router::<()>();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::usage(format!("cannot listen on {listen}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Unavailable(e.to_string()))?;
    if out.is_json() {
        out.json_line(&serde_json::json!({
            "listening": format!("http://{bound}"),
            "openapi": format!("http://{bound}/openapi.json"),
            "console": format!("http://{bound}/console"),
        }));
    } else {
        out.line(&format!(
            "keygate: admin API listening on http://{bound} (OpenAPI: http://{bound}/openapi.json; web console: http://{bound}/console, sign in with an admin key); Ctrl-C stops"
        ));
    }
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    admin.flush_audit().await;
    verifier.flush_audit().await;
    served.map_err(|e| CliError::Unavailable(format!("the admin API stopped: {e}")))
}

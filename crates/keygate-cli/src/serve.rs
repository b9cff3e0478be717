//! `keygate serve`: the admin API (keygate-admin) and its web console on the key store, in
//! this process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keygate::notice::{ExpiringSweep, IdleSweep, Notice, NoticeSink};
use keygate::quota::QuotaMeter;
use keygate::{Invalidation, Keyring, Verifier};
use keygate_admin::AdminApi;
use keygate_webhook::{WebhookSecret, WebhookSink};

use crate::cli::ServeArgs;
use crate::commands::duration;
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

/// The environment variable holding the webhook's signing secret.
const WEBHOOK_SECRET_ENV: &str = "KEYGATE_WEBHOOK_SECRET";

/// Where `serve`'s notices go and what its sweeps do, from the flags (checked before the
/// store is opened).
pub(crate) struct NoticesConfig {
    /// The webhook and its secret.
    webhook: Option<(String, WebhookSecret)>,
    /// The expiring-soon window; `None`: no expiring-soon sweep.
    expiring_within: Option<Duration>,
    interval: Duration,
}

pub(crate) fn notices_config(args: &ServeArgs) -> Result<NoticesConfig, CliError> {
    let webhook = match args.webhook_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(CliError::usage(
                    "bad --webhook-url: use an http:// or https:// URL",
                ));
            }
            let secret = std::env::var(WEBHOOK_SECRET_ENV).unwrap_or_default();
            let secret = WebhookSecret::new(secret.into_bytes()).map_err(|_| {
                CliError::usage(format!(
                    "--webhook-url needs {WEBHOOK_SECRET_ENV}: the signing secret, at least {} bytes (receivers check each notice's signature with it)",
                    keygate_webhook::MIN_SECRET_LEN
                ))
            })?;
            Some((url.to_owned(), secret))
        }
    };
    let expiring_within = match &args.expiring_within {
        Some(text) => Some(duration(text, "--expiring-within")?),
        None if webhook.is_some() => Some(DEFAULT_EXPIRING_WITHIN),
        None => None,
    }
    .filter(|window| !window.is_zero());
    let interval = duration(&args.sweep_interval, "--sweep-interval")?;
    if interval.is_zero() {
        return Err(CliError::usage("--sweep-interval must be more than 0s"));
    }
    Ok(NoticesConfig {
        webhook,
        expiring_within,
        interval,
    })
}

/// The expiring-soon window with a webhook and no `--expiring-within`.
const DEFAULT_EXPIRING_WITHIN: Duration = Duration::from_secs(7 * 86_400);

/// Notices without a webhook: logged (target `keygate::notice`, warn), never lost silently.
#[derive(Debug)]
struct LoggedNotices;

impl NoticeSink for LoggedNotices {
    fn notify(&self, notice: Notice) {
        tracing::warn!(
            target: "keygate::notice",
            kind = notice.kind(),
            event_id = %notice.event_id(),
            data = %notice.data(),
            "notice"
        );
    }
}

/// Serves until interrupted (Ctrl-C), then writes the audit events still queued.
pub(crate) async fn serve(
    store: &Store,
    keyring: Keyring,
    redis: Option<Arc<dyn Invalidation>>,
    meter: Option<Arc<dyn QuotaMeter>>,
    listen: SocketAddr,
    notices: NoticesConfig,
    out: Output<'_>,
) -> Result<(), CliError> {
    let webhook = match notices.webhook {
        Some((url, secret)) => Some(
            WebhookSink::builder(url, secret)
                .build()
                .map_err(|e| CliError::usage(format!("bad --webhook-url: {e}")))?,
        ),
        None => None,
    };
    let sink: Arc<dyn NoticeSink> = match &webhook {
        Some(webhook) => Arc::new(webhook.clone()),
        None => Arc::new(LoggedNotices),
    };
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
    // Quotas (admin keys' own, and the balances GET /keys/{id}/quota reads): counted where
    // the services count them. Without --redis-meter, the default in-process meter over the
    // store's counters, which reads what the services save.
    let builder = match &meter {
        Some(meter) => builder.quota_meter(Arc::clone(meter)),
        None => builder,
    };
    let verifier = builder
        .shared_notices(Arc::clone(&sink))
        .audit_sink(store.audit())
        // Few requests: each event is written at once, so the trail shows it.
        .audit_linger(std::time::Duration::ZERO)
        .start()
        .await
        .map_err(CliError::from)?;
    // Changes: through the verifier's own handle (evicting its cache at once; the store
    // publishes to its feed), or, with --redis-url, a handle that also publishes there.
    let admin = match redis {
        Some(channel) => {
            let admin = store
                .admin_builder()
                .keyring(keyring)
                .shared_invalidation(channel);
            match meter {
                Some(meter) => admin.quota_meter(meter),
                None => admin,
            }
            .build()
        }
        None => verifier.admin(),
    };
    // The sweeps: expiring soon (when asked for), and idle keys (a pass does nothing until the
    // lifetime policy has a maximum idle time; it is read at each pass).
    let mut sweeps = Vec::new();
    if let Some(window) = notices.expiring_within {
        sweeps.push(
            ExpiringSweep::new(store.shared_admin(), Arc::clone(&sink), window)
                .interval(notices.interval)
                .spawn(),
        );
    }
    sweeps.push(
        // Its disables are audited with this actor (and the reason, `idle: …`).
        IdleSweep::new(
            admin.clone().actor("keygate-serve-idle-sweep"),
            Arc::clone(&sink),
        )
        .interval(notices.interval)
        .spawn(),
    );
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
    for sweep in sweeps {
        sweep.stop().await;
    }
    admin.flush_audit().await;
    verifier.flush_audit().await;
    if let Some(webhook) = webhook {
        let stats = webhook.shutdown(Duration::from_secs(10)).await;
        if stats.lost() > 0 {
            tracing::warn!(target: "keygate::notice", lost = stats.lost(), "notices not delivered to the webhook");
        }
    }
    served.map_err(|e| CliError::Unavailable(format!("the admin API stopped: {e}")))
}

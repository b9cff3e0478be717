//! One benchmark server: a hello world on 127.0.0.1 with one worker thread, with or without
//! keygate.
//!
//! With keygate, the key store is a [`MemoryStore`] of [`ServerConfig::store_keys`] keys (100,000
//! by default), minted with [`Keyring::mint`] and stored with [`KeyAdmin::create`]; the first
//! [`ServerConfig::client_keys`] of them are written to [`ServerConfig::keys_file`] (mode 0600)
//! for the load generator, and verified once before the server listens, so every measured request
//! is a cache hit. Without keygate, the server mints the same number of client keys (never stored)
//! so that both servers receive byte-for-byte the same kind of request.
//!
//! The server prints `ready` on stdout once it listens, and exits cleanly on SIGTERM (so
//! callgrind writes its totals).

use std::error::Error;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use axum::Router;
use axum::routing::get;
use http::{HeaderMap, HeaderValue, Uri};
use keygate::rate::RateLimit;
use keygate::{
    HttpRequestView, KeyAdmin, KeyFormat, Keyring, MemoryStore, NewKey, Pepper, Peppers, Verifier,
};

use crate::Variant;

/// The prefix of the benchmark's keys.
pub const KEY_PREFIX: &str = "bench_live";

/// The path every variant serves.
pub const PATH: &str = "/hello";

/// The header the load generator sends keys in (keygate's default credential header).
pub const KEY_HEADER: &str = "x-api-key";

type BoxError = Box<dyn Error + Send + Sync>;

/// What to serve, where, and with how many keys.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Which server.
    pub variant: Variant,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Where to write the client keys, one per line (created, mode 0600; must not exist).
    pub keys_file: PathBuf,
    /// Keys in the store (keygate variants only).
    pub store_keys: usize,
    /// Keys written for the client, and warmed into the cache.
    pub client_keys: usize,
    /// The verifier's cache TTL: longer than the benchmark, so that the measured path stays the
    /// cache hit (keygate's default is 30 s).
    pub cache_ttl: Duration,
    /// Every key's own rate limit (keygate variants), e.g. a generous `1000000/1s`: the hit
    /// path then includes the in-process rate limiter. None: unlimited keys.
    pub rate_limit: Option<RateLimit>,
    /// Keep the audit trail in a SQLite file (keygate-sqlx's store sink) beside the keys file,
    /// instead of the default tracing sink (which, with no subscriber, builds no events).
    pub audit_sqlite: bool,
    /// With `audit_sqlite`: allowed requests only counted in usage, not kept as rows.
    pub audit_usage_only: bool,
    /// With `audit_sqlite`: the core the audit writer runs on — a runtime on a thread of its
    /// own running keygate's audit task ([`keygate::VerifierBuilder::audit_runtime`]), and the
    /// SQLite connection thread it starts. `None`: the cores the server was started on.
    pub audit_core: Option<usize>,
}

impl ServerConfig {
    /// The defaults for `variant` on `port`: 100,000 keys in the store, 1,000 for the client,
    /// a one-hour cache TTL.
    #[must_use]
    pub fn new(variant: Variant, port: u16, keys_file: PathBuf) -> Self {
        Self {
            variant,
            port,
            keys_file,
            store_keys: 100_000,
            client_keys: 1_000,
            cache_ttl: Duration::from_secs(3_600),
            rate_limit: None,
            audit_sqlite: false,
            audit_usage_only: false,
            audit_core: None,
        }
    }

    /// Parses `VARIANT --port N --keys-file PATH [--store-keys N] [--client-keys N]
    /// [--cache-ttl-secs N] [--rate-limit POLICY] [--audit sqlite|sqlite-usage]
    /// [--audit-core N]`.
    ///
    /// # Errors
    /// A message naming the bad or missing argument.
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut args = args.iter();
        let variant = args.next().ok_or("missing variant")?;
        let variant =
            Variant::parse(variant).ok_or_else(|| format!("unknown variant {variant:?}"))?;
        let (mut port, mut keys_file) = (None, None);
        let mut config = Self::new(variant, 0, PathBuf::new());
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--port" => port = Some(number(flag, value)?),
                "--keys-file" => keys_file = Some(PathBuf::from(value)),
                "--store-keys" => config.store_keys = number(flag, value)?,
                "--client-keys" => config.client_keys = number(flag, value)?,
                "--cache-ttl-secs" => config.cache_ttl = Duration::from_secs(number(flag, value)?),
                "--rate-limit" => config.rate_limit = Some(number(flag, value)?),
                "--audit" if value == "sqlite" => config.audit_sqlite = true,
                "--audit" if value == "sqlite-usage" => {
                    config.audit_sqlite = true;
                    config.audit_usage_only = true;
                }
                "--audit-core" => config.audit_core = Some(number(flag, value)?),
                "--audit" => {
                    return Err(format!(
                        "--audit {value}: `sqlite` or `sqlite-usage` (allowed requests as usage only)"
                    ));
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        config.port = port.ok_or("missing --port")?;
        config.keys_file = keys_file.ok_or("missing --keys-file")?;
        if config.client_keys == 0 {
            return Err("--client-keys must be at least 1".into());
        }
        if config.variant.with_keygate() && config.store_keys < config.client_keys {
            return Err("--store-keys must be at least --client-keys".into());
        }
        Ok(config)
    }
}

/// Parses a flag's numeric value.
///
/// # Errors
/// A message naming the flag.
pub fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| format!("{flag} {value}: {e}"))
}

/// Runs the server until SIGTERM.
///
/// # Errors
/// Key minting, the key file, binding the port, or the server itself failed.
pub fn run(config: &ServerConfig) -> Result<(), BoxError> {
    match config.variant {
        Variant::AxumPlain | Variant::AxumKeygate => run_axum(config),
        Variant::ActixPlain | Variant::ActixKeygate => run_actix(config),
    }
}

async fn hello() -> &'static str {
    "hello"
}

fn run_axum(config: &ServerConfig) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let verifier = prepare(config).await?;
        let app = Router::new().route(PATH, get(hello));
        let app = match &verifier {
            Some(verifier) => app.layer(keygate_axum::layer(verifier.clone())),
            None => app,
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        announce_ready()?;
        // Both variants are served with `ConnectInfo`, which keygate needs for the client address;
        // the only difference between them is the layer.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            terminate.recv().await;
        })
        .await?;
        finish_audit(config, verifier.as_ref()).await
    })
}

fn run_actix(config: &ServerConfig) -> Result<(), BoxError> {
    actix_web::rt::System::new().block_on(async {
        let verifier = prepare(config).await?;
        let address = ("127.0.0.1", config.port);
        // actix-web stops gracefully on SIGTERM by itself.
        let server = match verifier.clone() {
            Some(verifier) => HttpServer::new(move || {
                App::new()
                    .wrap(keygate_actix::ApiKeyAuth::new(verifier.clone()))
                    .route(PATH, web::get().to(hello))
            })
            .workers(1)
            .shutdown_timeout(1)
            .bind(address)?
            .run(),
            None => HttpServer::new(|| App::new().route(PATH, web::get().to(hello)))
                .workers(1)
                .shutdown_timeout(1)
                .bind(address)?
                .run(),
        };
        announce_ready()?;
        server.await?;
        finish_audit(config, verifier.as_ref()).await
    })
}

/// With the SQLite audit trail: writes what is left and the pipeline's final counters, to
/// stderr and to `KEYS_FILE.audit-stats` for the orchestrator.
async fn finish_audit(config: &ServerConfig, verifier: Option<&Verifier>) -> Result<(), BoxError> {
    let (true, Some(verifier)) = (config.audit_sqlite, verifier) else {
        return Ok(());
    };
    let stats = verifier.flush_audit().await;
    eprintln!("{} audit, final: {stats:?}", config.variant);
    std::fs::write(
        config.keys_file.with_extension("audit-stats"),
        format!(
            "recorded={} dropped={} written={} lost={} failed_writes={}\n",
            stats.recorded, stats.dropped, stats.written, stats.lost, stats.failed_writes
        ),
    )?;
    Ok(())
}

fn announce_ready() -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()
}

/// Mints the keys, writes the client's, and (with keygate) builds and warms the verifier.
async fn prepare(config: &ServerConfig) -> Result<Option<Verifier>, BoxError> {
    let keyring = Keyring::new(
        KeyFormat::new(KEY_PREFIX)?,
        Peppers::new(Pepper::new(1, random_pepper()?)?),
    );
    let store = MemoryStore::new();
    let minted = if config.variant.with_keygate() {
        config.store_keys
    } else {
        config.client_keys
    };
    let mut client_keys = Vec::with_capacity(config.client_keys);
    for i in 0..minted {
        // Without keygate the store is thrown away: it only turns minted keys into plaintexts.
        let mut spec = NewKey::new(format!("bench key {i}"));
        if let Some(limit) = config.rate_limit {
            spec = spec.rate_limit(limit);
        }
        let created = store.create(keyring.mint(spec)?).await?;
        if i < config.client_keys {
            client_keys.push(created.key.expose_secret().to_owned());
        }
    }
    write_keys(config, &client_keys)?;
    if !config.variant.with_keygate() {
        return Ok(None);
    }
    let mut builder = Verifier::builder(keyring, store).cache_ttl(config.cache_ttl);
    if config.audit_sqlite {
        let path = config.keys_file.with_extension("audit.db");
        let writer = audit_runtime(config.audit_core)?;
        // Opened from the writer's thread, so the connection threads sqlx starts for it run
        // where the writer does.
        let audit = writer
            .spawn(async move { keygate_sqlx::SqliteStore::open(&path).await })
            .await??;
        builder = builder
            .audit_sink(audit.audit_sink().allowed_rows(!config.audit_usage_only))
            .audit_runtime(writer);
    }
    let verifier = builder.build();
    if config.audit_sqlite {
        // Every 10 s, what the store sink kept and what it dropped (stderr reaches the log).
        let watched = verifier.clone();
        let variant = config.variant;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                eprintln!("{variant} audit: {:?}", watched.audit_stats());
            }
        });
    }
    let uri = Uri::from_static(PATH);
    for key in &client_keys {
        let mut headers = HeaderMap::new();
        headers.insert(KEY_HEADER, HeaderValue::from_str(key)?);
        verifier
            .verify_request(&HttpRequestView::new(&headers, &uri, None))
            .await
            .map_err(|rejection| format!("warming the cache: {rejection}"))?;
    }
    Ok(Some(verifier))
}

/// A single-threaded runtime on a thread of its own (`audit-writer`), pinned to `core` when
/// given; it runs until the process exits.
fn audit_runtime(core: Option<usize>) -> Result<tokio::runtime::Handle, BoxError> {
    let (started, handle) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            let runtime = core.map_or(Ok(()), pin_this_thread).and_then(|()| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            });
            match runtime {
                Ok(runtime) => {
                    let _ = started.send(Ok(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = started.send(Err(e));
                }
            }
        })?;
    Ok(handle.recv()??)
}

/// Pins the calling thread (and the threads it starts from now on) to `core`, with `taskset`.
fn pin_this_thread(core: usize) -> std::io::Result<()> {
    // "/proc/thread-self" links to "PID/task/TID".
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .ok_or_else(|| std::io::Error::other("no thread id in /proc/thread-self"))?;
    let status = std::process::Command::new("taskset")
        .args(["-p", "-c", &core.to_string()])
        .arg(tid)
        .stdout(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "taskset -p -c {core}: {status}"
        )))
    }
}

fn write_keys(config: &ServerConfig, keys: &[String]) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&config.keys_file)?;
    let mut out = BufWriter::new(file);
    for key in keys {
        writeln!(out, "{key}")?;
    }
    out.flush()
}

/// A fresh pepper from the OS (64 hex characters), unknown outside the process.
fn random_pepper() -> std::io::Result<String> {
    let mut bytes = [0_u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

//! One benchmark server: a hello world on 127.0.0.1 with one worker thread, without
//! authentication, behind the hand-written floor (with or without a moka cache), or behind keygate.
//!
//! Keys are minted with keygate's [`Keyring::mint`] and stored with [`KeyAdmin::create`] in a
//! [`MemoryStore`]. Servers that authenticate hold [`ServerConfig::store_keys`] keys (100,000 by
//! default): keygate in that store, the floor in its `HashMap` (built from the same plaintexts,
//! then the store is dropped). The first [`ServerConfig::client_keys`] of them are written to
//! [`ServerConfig::keys_file`] (mode 0600) for the load generator, and verified once before the
//! server listens, so every measured request is a cache hit (keygate's cache, the floor's moka
//! cache). The plain server mints only the client keys (its store is thrown away) so that every
//! server receives byte-for-byte the same kind of request.
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

use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{Service as _, ServiceRequest};
use actix_web::error::ErrorUnauthorized;
use actix_web::middleware::{Next as ActixNext, from_fn};
use actix_web::{App, HttpMessage as _, HttpServer, web};
use axum::Router;
use axum::routing::get;
use http::{HeaderMap, HeaderValue, Uri};
use keygate::rate::RateLimit;
use keygate::{
    HttpRequestView, KeyAdmin, KeyFormat, Keyring, MemoryStore, NewKey, Pepper, Peppers, Verifier,
};

use crate::axum_floor::{FloorLayer, FloorMokaLayer};
use crate::floor::{CachedFloorKeys, FloorKeys};
use crate::variant::{Auth, Framework, Variant};

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
    /// Keys in keygate's store or the floor's map (not used by the plain variants).
    pub store_keys: usize,
    /// Keys written for the client, and warmed into the cache.
    pub client_keys: usize,
    /// The TTL of keygate's cache and of the floor's moka cache: longer than the benchmark, so
    /// that the measured path stays the cache hit (keygate's default is 30 s).
    pub cache_ttl: Duration,
    /// Every key's own rate limit (keygate variants), e.g. a generous `1000000/1s`: the hit
    /// path then includes the in-process rate limiter. None: unlimited keys.
    pub rate_limit: Option<RateLimit>,
    /// A quota every key gets (keygate servers only).
    pub quota: Option<keygate::quota::Quota>,
    /// Keep keygate's audit trail in a SQLite file (keygate-sqlx's store sink) beside the keys
    /// file, instead of the default tracing sink (which, with no subscriber, builds no events).
    pub audit_sqlite: bool,
    /// With `audit_sqlite`: allowed requests only counted in usage, not kept as rows.
    pub audit_usage_only: bool,
    /// Record every request's audit event as the trail does, on the same writer thread, into a
    /// sink that keeps nothing: the trail's cost without SQLite's (`--audit null`, for runs by
    /// hand).
    pub audit_null: bool,
    /// Start one thread that only sleeps (`--idle-thread yes`, for runs by hand): the process
    /// is then multi-threaded, as one with an audit writer is, and glibc leaves its
    /// single-thread fast paths (no cancellation handling around syscalls, no atomic
    /// operations in malloc), so that cost can be told apart from the writer's work.
    pub idle_thread: bool,
    /// With `audit_sqlite` or `audit_null`: the core the audit writer runs on — a runtime on a
    /// thread of its own running keygate's audit task
    /// ([`keygate::VerifierBuilder::audit_runtime`]), and the SQLite connection thread it
    /// starts. `None`: the cores the server was started on.
    pub audit_core: Option<usize>,
    /// With `audit_sqlite` or `audit_null`: the writer thread's nice value (0: as the rest; 19:
    /// it runs on what its core leaves idle, and preempts nothing there).
    pub audit_nice: i32,
    /// With `audit_sqlite` or `audit_null`: the pipeline's batch size
    /// ([`keygate::VerifierBuilder::audit_batch`]); `None`: keygate's default.
    pub audit_batch: Option<usize>,
    /// With `audit_sqlite` or `audit_null`: the writer thread runs under `SCHED_BATCH`
    /// (`--audit-sched batch`): its wake-ups do not preempt what runs on its core (wrk, in the
    /// benchmark), it runs when that waits or its time slice ends.
    pub audit_sched_batch: bool,
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
            quota: None,
            audit_sqlite: false,
            audit_usage_only: false,
            audit_null: false,
            idle_thread: false,
            audit_core: None,
            audit_nice: 0,
            audit_batch: None,
            audit_sched_batch: false,
        }
    }

    /// Parses `VARIANT --port N --keys-file PATH [--store-keys N] [--client-keys N]
    /// [--cache-ttl-secs N] [--rate-limit POLICY] [--quota QUOTA] [--audit sqlite|sqlite-usage|null]
    /// [--idle-thread yes|no]
    /// [--audit-core N] [--audit-nice N] [--audit-batch N] [--audit-sched batch|other]`.
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
                "--quota" => config.quota = Some(number(flag, value)?),
                "--audit" if value == "sqlite" => config.audit_sqlite = true,
                "--audit" if value == "null" => config.audit_null = true,
                "--audit" if value == "sqlite-usage" => {
                    config.audit_sqlite = true;
                    config.audit_usage_only = true;
                }
                "--audit-core" => config.audit_core = Some(number(flag, value)?),
                "--idle-thread" => config.idle_thread = switch(flag, value, "yes", "no")?,
                "--audit-nice" => config.audit_nice = number(flag, value)?,
                "--audit-batch" => config.audit_batch = Some(number(flag, value)?),
                "--audit-sched" => {
                    config.audit_sched_batch = switch(flag, value, "batch", "other")?;
                }
                "--audit" => {
                    return Err(format!(
                        "--audit {value}: `sqlite`, `sqlite-usage` (allowed requests as usage only) or `null` (events recorded and discarded)"
                    ));
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if config.audit_batch == Some(0) {
            return Err("--audit-batch 0: a batch is at least one event".into());
        }
        if config.audit_null && config.audit_sqlite {
            return Err("--audit null --audit sqlite*: one sink, not both".into());
        }
        config.port = port.ok_or("missing --port")?;
        config.keys_file = keys_file.ok_or("missing --keys-file")?;
        if config.client_keys == 0 {
            return Err("--client-keys must be at least 1".into());
        }
        if config.variant.holds_keys() && config.store_keys < config.client_keys {
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

/// A flag's value that is one of two words: whether it is `on` (or else `off`).
fn switch(flag: &str, value: &str, on: &str, off: &str) -> Result<bool, String> {
    match value {
        v if v == on => Ok(true),
        v if v == off => Ok(false),
        _ => Err(format!("{flag} {value}: `{on}` or `{off}`")),
    }
}

/// Runs the server until SIGTERM.
///
/// # Errors
/// Key minting, the key file, binding the port, or the server itself failed.
pub fn run(config: &ServerConfig) -> Result<(), BoxError> {
    if config.idle_thread {
        std::thread::Builder::new().name("idle".into()).spawn(|| {
            loop {
                std::thread::park();
            }
        })?;
    }
    match config.variant.framework {
        Framework::Axum => run_axum(config),
        Framework::Actix => run_actix(config),
    }
}

/// [`KEY_HEADER`] as actix-web's header name (http 0.2), parsed once.
const ACTIX_KEY_HEADER: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static(KEY_HEADER);

/// What stands in front of the hello world.
enum Authenticator {
    Plain,
    Floor(Arc<FloorKeys>),
    FloorMoka(Arc<CachedFloorKeys>),
    Keygate(Verifier),
}

impl Authenticator {
    /// keygate's verifier, for the keygate variants.
    fn verifier(&self) -> Option<Verifier> {
        match self {
            Authenticator::Keygate(verifier) => Some(verifier.clone()),
            _ => None,
        }
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
        let authenticator = prepare(config).await?;
        let verifier = authenticator.verifier();
        let app = Router::new().route(PATH, get(hello));
        let app = match authenticator {
            Authenticator::Plain => app,
            Authenticator::Floor(keys) => app.layer(FloorLayer(keys)),
            Authenticator::FloorMoka(keys) => app.layer(FloorMokaLayer(keys)),
            Authenticator::Keygate(verifier) => app.layer(keygate_axum::layer(verifier)),
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        announce_ready()?;
        // Every variant is served with `ConnectInfo`, which keygate needs for the client address;
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
        let authenticator = prepare(config).await?;
        let verifier = authenticator.verifier();
        let address = ("127.0.0.1", config.port);
        // actix-web stops gracefully on SIGTERM by itself.
        let server = match authenticator {
            Authenticator::Plain => {
                HttpServer::new(|| App::new().route(PATH, web::get().to(hello)))
                    .workers(1)
                    .shutdown_timeout(1)
                    .bind(address)?
                    .run()
            }
            // The floor's check is synchronous, so `wrap_fn` can call the inner service directly
            // (no boxed future); a refusal is actix's error response for 401.
            Authenticator::Floor(keys) => HttpServer::new(move || {
                let keys = Arc::clone(&keys);
                App::new()
                    .wrap_fn(move |request, service| {
                        let header = request.headers().get(&ACTIX_KEY_HEADER);
                        let call = match keys.check(header.and_then(|v| v.to_str().ok())) {
                            Some(identity) => {
                                request.extensions_mut().insert(identity);
                                Some(service.call(request))
                            }
                            None => None,
                        };
                        async move {
                            match call {
                                Some(call) => call.await,
                                None => Err(ErrorUnauthorized("invalid API key")),
                            }
                        }
                    })
                    .route(PATH, web::get().to(hello))
            })
            .workers(1)
            .shutdown_timeout(1)
            .bind(address)?
            .run(),
            // The cache's lookup is async and must finish before the inner service is called:
            // actix's `middleware::from_fn`.
            Authenticator::FloorMoka(keys) => HttpServer::new(move || {
                let keys = Arc::clone(&keys);
                App::new()
                    .wrap(from_fn(
                        move |request: ServiceRequest, next: ActixNext<BoxBody>| {
                            let keys = Arc::clone(&keys);
                            async move {
                                let header = request.headers().get(&ACTIX_KEY_HEADER);
                                match keys.check(header.and_then(|v| v.to_str().ok())).await {
                                    Some(identity) => {
                                        request.extensions_mut().insert(identity);
                                        next.call(request).await
                                    }
                                    None => Err(ErrorUnauthorized("invalid API key")),
                                }
                            }
                        },
                    ))
                    .route(PATH, web::get().to(hello))
            })
            .workers(1)
            .shutdown_timeout(1)
            .bind(address)?
            .run(),
            Authenticator::Keygate(verifier) => HttpServer::new(move || {
                App::new()
                    .wrap(keygate_actix::ApiKeyAuth::new(verifier.clone()))
                    .route(PATH, web::get().to(hello))
            })
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
    let (true, Some(verifier)) = (config.audit_sqlite || config.audit_null, verifier) else {
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

/// Mints the keys, writes the client's, and builds (and warms) the authenticator.
async fn prepare(config: &ServerConfig) -> Result<Authenticator, BoxError> {
    let keyring = Keyring::new(
        KeyFormat::new(KEY_PREFIX)?,
        Peppers::new(Pepper::new(1, random_pepper()?)?),
    );
    let auth = config.variant.auth;
    let store = MemoryStore::new();
    let minted = if config.variant.holds_keys() {
        config.store_keys
    } else {
        config.client_keys
    };
    // The floor's map is built from every minted key; keygate and the plain server need only
    // the client's plaintexts.
    let kept = if matches!(auth, Auth::Floor | Auth::FloorMoka) {
        minted
    } else {
        config.client_keys
    };
    let mut plaintexts = Vec::with_capacity(kept);
    for i in 0..minted {
        // Without keygate the store is thrown away: it only turns minted keys into plaintexts.
        let mut spec = NewKey::new(format!("bench key {i}"));
        if let Some(limit) = config.rate_limit.filter(|_| auth == Auth::Keygate) {
            spec = spec.rate_limit(limit);
        }
        if let Some(quota) = config.quota.filter(|_| auth == Auth::Keygate) {
            spec = spec.quota(quota);
        }
        let created = store.create(keyring.mint(spec)?).await?;
        if i < kept {
            plaintexts.push(created.key.expose_secret().to_owned());
        }
    }
    let client_keys = &plaintexts[..config.client_keys];
    write_keys(config, client_keys)?;
    let floor = || {
        FloorKeys::new(
            KEY_PREFIX,
            plaintexts
                .iter()
                .enumerate()
                .map(|(i, key)| (key.as_str(), format!("bench key {i}"))),
        )
    };
    match auth {
        Auth::Plain => Ok(Authenticator::Plain),
        Auth::Floor => {
            let keys = floor()?;
            for key in client_keys {
                keys.check(Some(key))
                    .ok_or("a client key does not pass the floor's check")?;
            }
            Ok(Authenticator::Floor(Arc::new(keys)))
        }
        Auth::FloorMoka => {
            let keys = CachedFloorKeys::new(floor()?, FLOOR_CACHE_CAPACITY, config.cache_ttl);
            for key in client_keys {
                keys.check(Some(key))
                    .await
                    .ok_or("a client key does not pass the floor's check")?;
            }
            Ok(Authenticator::FloorMoka(Arc::new(keys)))
        }
        Auth::Keygate => Ok(Authenticator::Keygate(
            keygate_verifier(config, keyring, store, client_keys).await?,
        )),
    }
}

/// The floor's moka cache holds as many records as keygate's cache does by default.
const FLOOR_CACHE_CAPACITY: u64 = 100_000;

/// keygate's verifier over `store`, with its cache warm for `client_keys`.
async fn keygate_verifier(
    config: &ServerConfig,
    keyring: Keyring,
    store: MemoryStore,
    client_keys: &[String],
) -> Result<Verifier, BoxError> {
    let mut builder = Verifier::builder(keyring, store).cache_ttl(config.cache_ttl);
    let audited = config.audit_sqlite || config.audit_null;
    if audited {
        let writer = audit_runtime(
            config.audit_core,
            config.audit_nice,
            config.audit_sched_batch,
        )?;
        if let Some(batch) = config.audit_batch {
            builder = builder.audit_batch(batch);
        }
        builder = if config.audit_sqlite {
            let path = config.keys_file.with_extension("audit.db");
            // Opened from the writer's thread, so the connection threads sqlx starts for it
            // run where the writer does.
            let audit = writer
                .spawn(async move { keygate_sqlx::SqliteStore::open(&path).await })
                .await??;
            builder.audit_sink(audit.audit_sink().allowed_rows(!config.audit_usage_only))
        } else {
            builder.audit_sink(NullSink)
        }
        .audit_runtime(writer);
    }
    let verifier = builder.build();
    if audited {
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
    for key in client_keys {
        let mut headers = HeaderMap::new();
        headers.insert(KEY_HEADER, HeaderValue::from_str(key)?);
        verifier
            .verify_request(&HttpRequestView::new(&headers, &uri, None))
            .await
            .map_err(|rejection| format!("warming the cache: {rejection}"))?;
    }
    Ok(verifier)
}

/// An audit sink that takes every event and keeps none (`--audit null`).
struct NullSink;

#[async_trait::async_trait]
impl keygate::audit::AuditSink for NullSink {
    async fn write(
        &self,
        _events: &[keygate::audit::AuditEvent],
    ) -> Result<(), keygate::audit::AuditError> {
        Ok(())
    }
}

/// A single-threaded runtime on a thread of its own (`audit-writer`), pinned to `core` when
/// given and at nice value `nice` (threads it starts, such as sqlx's SQLite worker, inherit
/// both); it runs until the process exits.
fn audit_runtime(
    core: Option<usize>,
    nice: i32,
    batch: bool,
) -> Result<tokio::runtime::Handle, BoxError> {
    let (started, handle) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            let runtime = core
                .map_or(Ok(()), pin_this_thread)
                .and_then(|()| renice_this_thread(nice))
                .and_then(|()| {
                    if batch {
                        on_this_thread("chrt", &["--batch", "--pid", "0"])
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| {
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
    on_this_thread("taskset", &["-p", "-c", &core.to_string()])
}

/// Sets the calling thread's nice value (inherited by the threads it starts from now on), with
/// `renice`; 0 leaves it.
fn renice_this_thread(nice: i32) -> std::io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    on_this_thread("renice", &["-n", &nice.to_string(), "-p"])
}

/// Runs `tool ARGS… TID` on the calling thread's id.
fn on_this_thread(tool: &str, args: &[&str]) -> std::io::Result<()> {
    // "/proc/thread-self" links to "PID/task/TID".
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .ok_or_else(|| std::io::Error::other("no thread id in /proc/thread-self"))?;
    let status = std::process::Command::new(tool)
        .args(args)
        .arg(tid)
        .stdout(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{tool} {}: {status}",
            args.join(" ")
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

#[cfg(test)]
mod tests {
    use super::ServerConfig;

    fn parse(args: &str) -> Result<ServerConfig, String> {
        let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        ServerConfig::from_args(&args)
    }

    #[test]
    fn the_diagnostic_modes_parse_and_bad_values_are_refused() {
        let config =
            parse("axum-keygate --port 1 --keys-file k --audit null --idle-thread yes").unwrap();
        assert!(config.audit_null && config.idle_thread && !config.audit_sqlite);
        let config =
            parse("axum-keygate --port 1 --keys-file k --audit sqlite --idle-thread no").unwrap();
        assert!(config.audit_sqlite && !config.audit_null && !config.idle_thread);
        assert!(config.audit_batch.is_none() && !config.audit_sched_batch);
        let config = parse(
            "axum-keygate --port 1 --keys-file k --audit sqlite --audit-batch 1024 --audit-sched batch",
        )
        .unwrap();
        assert!(config.audit_batch == Some(1024) && config.audit_sched_batch);
        for bad in [
            "--audit nothing",
            "--idle-thread maybe",
            "--audit-batch 0",
            "--audit-sched idle",
            "--audit null --audit sqlite",
        ] {
            let error = parse(&format!("axum-keygate --port 1 --keys-file k {bad}"))
                .err()
                .unwrap_or_else(|| panic!("{bad} was accepted"));
            assert!(error.starts_with(bad), "{error}");
        }
    }
}

//! Revoke-to-refusal latency across instances (issues 8 and 14): how long after a revoke is
//! issued do two *other* running instances refuse the key?
//!
//! ```text
//! cargo build --release -p example-multi-instance -p keygate-loadbench
//! target/release/revokebench --revokes 200            # PostgreSQL and Redis, 200 revokes each
//! target/release/revokebench --channel redis --revokes 100
//!
//! cargo build --release -p keygate-loadbench -p example-axum-quickstart \
//!     -p example-actix-quickstart -p keygate-cli
//! target/release/revokebench --channel sqlite                    # revoked by `keygate revoke ID`
//! target/release/revokebench --channel sqlite --revoker store    # by this process's own store
//! target/release/revokebench --channel sqlite --sweep-pause-ms 1 --verbose
//! ```
//!
//! Per round this process plays the operator: it creates a key, makes both instances cache it
//! (a 200 from each), revokes it, and polls both instances back to back over keep-alive HTTP
//! until each answers 401. The latency of a round is from just before the revoke is issued to
//! the later of the two first refusals. Prints p50 / p90 / p99 / max / mean per channel, and the
//! p50 of the revoke's own time (to subtract). Everything goes to 127.0.0.1 and stops by itself;
//! 200 revokes per channel unless `--revokes N` says otherwise.
//!
//! # PostgreSQL and Redis (the default: both channels)
//! Two processes of `example-multi-instance` (built beside this binary) on 127.0.0.1, both on
//! one PostgreSQL (in a schema of its own, dropped at the end) and one Redis
//! (`KEYGATE_TEST_POSTGRES_URL`, `KEYGATE_TEST_REDIS_URL`), with
//! invalidation by PostgreSQL `NOTIFY` or Redis pub/sub. The revoke is this process's `Admin`
//! call (its commit, and with Redis the publish).
//!
//! # SQLite (`--channel sqlite`)
//! The embedded default as a newcomer runs it. In a fresh temporary directory (removed at the
//! end) it starts the axum quickstart, then the actix-web quickstart (release builds beside this
//! binary, `example-axum-quickstart` and `example-actix-quickstart`), each with
//! `QUICKSTART_LISTEN=127.0.0.1:0` (the port is read from the URL their tour prints) and
//! `RUST_LOG=warn` (their log goes to a file in that directory). Both use `./keygate.db` and its
//! change feed (`store.invalidation()`, polled every 100 ms). This process opens the same file
//! (`SqliteStore`, prefix `demo_test`, the development pepper the store recorded) to create the
//! keys; the revoke comes from another process on the file:
//! - `--revoker cli` (the default): the real CLI, `keygate revoke ID` (built beside this binary
//!   from `keygate-cli`), run in that directory with no flags and no `KEYGATE_*` variables, as
//!   a user would. The polling starts as soon as it is spawned; its own wall time (start-up,
//!   opening the store, the commit, exit) is the last column.
//! - `--revoker store`: this process's own store, i.e. a second process without the CLI's
//!   start-up; the last column is the revoke call (its commit).
//!
//! Before each revoke it pauses for a random 0–100 ms, so that revokes fall at random points of
//! the quickstarts' 100 ms poll cycles, as an operator's do (without the pause each round would
//! start just after the poll that ended the previous one and measure nearly a full interval,
//! every time). The first 3 rounds are not counted (warm-up). The quickstarts keep keygate's
//! default failed-attempts limit (bursts of 20 per client address, then one every 6 s) and each
//! round costs each of them one failure (the 401 that ends it), so every SQLite round connects
//! from a loopback source address of its own (127.1.x.y); all traffic still goes to 127.0.0.1.
//!
//! Each request the quickstarts answer is also an audit event written to the file, so the
//! back-to-back polling keeps SQLite's write lock busy, and the CLI's write can wait for it
//! (docs/benchmarks.md). Two options, SQLite mode only:
//! - `--sweep-pause-ms N`: pause N ms between polling sweeps (fewer requests, fewer writes).
//! - `--verbose`: one line per round on stderr (each quickstart's refusal, the revoke's own
//!   time, the requests sent).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keygate::{Invalidation, KeyAdmin, KeyFormat, Keyring, Peppers, Verifier};
use keygate_redis::RedisInvalidation;
use keygate_sqlx::{PostgresStore, SqliteStore};

type Error = Box<dyn std::error::Error + Send + Sync>;

const PEPPER: &str = "1:revokebench-pepper-not-a-secret-0123456789abcdef";
const PREFIX: &str = "kgrb";
const PORTS: [u16; 2] = [3101, 3102];
/// The quickstarts' file and key prefix (`examples/quickstart-tour`).
const QUICKSTART_DATABASE: &str = "keygate.db";
const QUICKSTART_PREFIX: &str = "demo_test";
/// SQLite rounds run before the counted ones.
const WARM_UP: usize = 3;
/// The SQLite change feed's default poll interval (`SqliteInvalidation::poll_interval`).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a revoked key may stay accepted before the run fails.
const GIVE_UP: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Channel {
    Postgres,
    Redis,
    Sqlite,
}

/// Who revokes in SQLite mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Revoker {
    /// `keygate revoke ID`, the CLI binary.
    Cli,
    /// This process's own `SqliteStore`.
    Store,
}

/// One channel's measurements: per round, revoke-to-refusal and the revoke's own time.
struct Figures {
    samples: Vec<Duration>,
    calls: Vec<Duration>,
}

/// A schema of its own on the benchmark's PostgreSQL, dropped at the end.
struct BenchSchema {
    admin: keygate_sqlx::sqlx::PgPool,
    name: String,
}

impl BenchSchema {
    async fn create(base: &str) -> Result<Self, Error> {
        let admin = keygate_sqlx::sqlx::PgPool::connect(base).await?;
        let name = format!("kgrb_{}", std::process::id());
        for statement in [
            format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
            format!("CREATE SCHEMA {name}"),
        ] {
            keygate_sqlx::sqlx::query(keygate_sqlx::sqlx::AssertSqlSafe(statement))
                .execute(&admin)
                .await?;
        }
        Ok(Self { admin, name })
    }

    /// `base` with this schema as the search path.
    fn url(&self, base: &str) -> String {
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options=-c%20search_path%3D{}", self.name)
    }

    async fn drop_now(self) {
        let _ = keygate_sqlx::sqlx::query(keygate_sqlx::sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        )))
        .execute(&self.admin)
        .await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut revokes = 200_usize;
    let mut channels = vec![Channel::Postgres, Channel::Redis];
    let mut revoker = None;
    let mut verbose = false;
    let mut pause = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--revokes" => revokes = args.next().ok_or("--revokes N")?.parse()?,
            "--channel" => {
                let channel = args.next().ok_or("--channel postgres|redis|sqlite")?;
                channels = match channel.as_str() {
                    "postgres" => vec![Channel::Postgres],
                    "redis" => vec![Channel::Redis],
                    "sqlite" => vec![Channel::Sqlite],
                    other => return Err(format!("unknown channel {other:?}").into()),
                };
            }
            "--revoker" => {
                let who = args.next().ok_or("--revoker cli|store")?;
                revoker = Some(match who.as_str() {
                    "cli" => Revoker::Cli,
                    "store" => Revoker::Store,
                    other => return Err(format!("unknown revoker {other:?}").into()),
                });
            }
            "--verbose" => verbose = true,
            "--sweep-pause-ms" => {
                let text = args.next().ok_or("--sweep-pause-ms N")?;
                pause = Duration::from_millis(text.parse()?);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if revokes == 0 {
        return Err("--revokes must be at least 1".into());
    }
    if (revoker.is_some() || verbose || !pause.is_zero()) && channels != [Channel::Sqlite] {
        return Err(
            "--revoker, --sweep-pause-ms and --verbose apply to --channel sqlite only".into(),
        );
    }
    let revoker = revoker.unwrap_or(Revoker::Cli);
    let database_url = std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let redis_url = std::env::var("KEYGATE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());

    println!("revoke-to-refusal, {revokes} revokes per channel, two instances on 127.0.0.1");
    println!(
        "| channel | p50 | p90 | p99 | max | mean | the revoke itself (the CLI: its wall time), p50 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for channel in channels {
        let (label, figures) = match channel {
            Channel::Postgres | Channel::Redis => {
                let name = if channel == Channel::Postgres {
                    "postgres"
                } else {
                    "redis"
                };
                let instance_bin = beside("example-multi-instance", "example-multi-instance")?;
                // A schema of its own: the store records its deployment's prefix and peppers,
                // which must not collide with other users of the database (tests, demos).
                let schema = BenchSchema::create(&database_url).await?;
                let url = schema.url(&database_url);
                let instances = Instances::start(&instance_bin, name, &url, &redis_url)?;
                let result = run(name, revokes, &url, &redis_url).await;
                drop(instances);
                schema.drop_now().await;
                (name, result?)
            }
            Channel::Sqlite => {
                let label = match revoker {
                    Revoker::Cli => "sqlite, `keygate revoke` (CLI)",
                    Revoker::Store => "sqlite, a second process's store",
                };
                (label, run_sqlite(revoker, revokes, pause, verbose).await?)
            }
        };
        let Figures {
            mut samples,
            mut calls,
        } = figures;
        samples.sort_unstable();
        calls.sort_unstable();
        let call_p50 = calls[calls.len() / 2];
        let pick = |q: f64| {
            let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[index.min(samples.len() - 1)]
        };
        let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len())?;
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(pick(0.5)),
            ms(pick(0.9)),
            ms(pick(0.99)),
            ms(pick(1.0)),
            ms(mean),
            ms(call_p50)
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The path of `binary`, built beside this one from `package`.
fn beside(binary: &str, package: &str) -> Result<PathBuf, Error> {
    let path = std::env::current_exe()?
        .parent()
        .ok_or("no directory")?
        .join(binary);
    if !path.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p {package}",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// The two instance processes; killed on drop.
struct Instances(Vec<Child>);

impl Instances {
    fn start(
        bin: &Path,
        channel: &str,
        database_url: &str,
        redis_url: &str,
    ) -> Result<Self, Error> {
        let mut children = Vec::new();
        for (port, name) in PORTS.iter().zip(["a", "b"]) {
            children.push(
                Command::new(bin)
                    .arg(port.to_string())
                    .arg(name)
                    .env("KEYGATE_DATABASE_URL", database_url)
                    .env("KEYGATE_REDIS_URL", redis_url)
                    .env("KEYGATE_PEPPER", PEPPER)
                    .env("KEYGATE_PREFIX", PREFIX)
                    .env("KEYGATE_INVALIDATION", channel)
                    // The bench refuses keys on purpose, hundreds of times.
                    .env("KEYGATE_FAILURE_LIMIT", "off")
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .spawn()?,
            );
        }
        let instances = Self(children);
        for port in PORTS {
            let started = Instant::now();
            loop {
                if let Ok(mut client) = Client::connect(port)
                    && client.get("/healthz", None)? == 200
                    && client
                        .last_body
                        .contains("\"invalidation_subscribed\":true")
                {
                    break;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    return Err(format!("instance on :{port} did not become ready").into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(instances)
    }
}

impl Drop for Instances {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn run(
    channel: &str,
    revokes: usize,
    database_url: &str,
    redis_url: &str,
) -> Result<Figures, Error> {
    let keyring = Keyring::new(KeyFormat::new(PREFIX)?, Peppers::parse(PEPPER)?);
    let store = PostgresStore::open(database_url).await?;
    let mut builder = Verifier::builder(keyring, store).failure_limit(None);
    if channel == "redis" {
        // The operator publishes (PostgreSQL's store notifies by itself).
        let publisher: std::sync::Arc<dyn Invalidation> =
            std::sync::Arc::new(RedisInvalidation::builder(redis_url).build().await?);
        builder = builder.shared_invalidation(publisher);
    }
    let admin = builder.build().admin();
    let mut clients = [Client::connect(PORTS[0])?, Client::connect(PORTS[1])?];
    let mut samples = Vec::with_capacity(revokes);
    let mut calls = Vec::with_capacity(revokes);
    for _ in 0..revokes {
        let created = admin
            .create_key(keygate::NewKey::new("revokebench"))
            .await?;
        let key = created.key.expose_secret().to_owned();
        cache_everywhere(&mut clients, &key)?;
        let started = Instant::now();
        admin.revoke(&created.record.id).await?;
        calls.push(started.elapsed());
        let [a, b] = await_refusals(&mut clients, &key, started, || Ok(()))?;
        samples.push(a.max(b));
        admin.delete(&created.record.id).await?;
    }
    Ok(Figures { samples, calls })
}

/// Makes both instances cache `key`: a 200 from each.
fn cache_everywhere(clients: &mut [Client; 2], key: &str) -> Result<(), Error> {
    for client in clients {
        let status = client.get("/hello", Some(key))?;
        if status != 200 {
            return Err(format!("fresh key answered {status}").into());
        }
    }
    Ok(())
}

/// Polls both instances back to back until each has answered 401 for `key`, calling
/// `each_sweep` between sweeps; the time from `started` to each one's first refusal.
fn await_refusals(
    clients: &mut [Client; 2],
    key: &str,
    started: Instant,
    mut each_sweep: impl FnMut() -> Result<(), Error>,
) -> Result<[Duration; 2], Error> {
    let mut refused = [None, None];
    while refused.iter().any(Option::is_none) {
        for (client, refused) in clients.iter_mut().zip(refused.iter_mut()) {
            if refused.is_none() && client.get("/hello", Some(key))? == 401 {
                *refused = Some(started.elapsed());
            }
        }
        each_sweep()?;
        if started.elapsed() > GIVE_UP {
            return Err(format!("a revoked key was still accepted after {GIVE_UP:?}").into());
        }
    }
    Ok(refused.map(Option::unwrap_or_default))
}

async fn run_sqlite(
    revoker: Revoker,
    revokes: usize,
    pause: Duration,
    verbose: bool,
) -> Result<Figures, Error> {
    let axum_bin = beside("example-axum-quickstart", "example-axum-quickstart")?;
    let actix_bin = beside("example-actix-quickstart", "example-actix-quickstart")?;
    let cli_bin = match revoker {
        Revoker::Cli => Some(beside("keygate", "keygate-cli")?),
        Revoker::Store => None,
    };
    // Dropped in reverse order: the quickstarts are killed before the directory goes.
    let dir = TempDir::new()?;
    let quickstarts = Quickstarts::start(&dir.0, &[&axum_bin, &actix_bin])?;
    let ports = [quickstarts.ports[0], quickstarts.ports[1]];

    // The operator's own process on the file, as the quickstarts recorded it.
    let store = SqliteStore::open(dir.0.join(QUICKSTART_DATABASE)).await?;
    let keyring = Keyring::new(KeyFormat::new(QUICKSTART_PREFIX)?, Peppers::development());
    let admin = Verifier::builder(keyring, store)
        .failure_limit(None)
        .start()
        .await?
        .admin();
    let mut jitter = Jitter::seeded();
    let mut samples = Vec::with_capacity(revokes);
    let mut calls = Vec::with_capacity(revokes);
    for round in 0..WARM_UP + revokes {
        let source = source_address(round)?;
        let mut clients = [
            Client::connect_from(source, ports[0]).await?,
            Client::connect_from(source, ports[1]).await?,
        ];
        let created = admin
            .create_key(keygate::NewKey::new("revokebench"))
            .await?;
        let id = created.record.id;
        let key = created.key.expose_secret().to_owned();
        cache_everywhere(&mut clients, &key)?;
        // Revoke at a random moment of the feed's poll cycle, as an operator would: without
        // it every round would start just after the poll that ended the previous one, and
        // measure nearly a whole interval each time.
        tokio::time::sleep(jitter.next_below(POLL_INTERVAL)).await;
        let ([a, b], call) = match &cli_bin {
            Some(cli_bin) => {
                let mut command = Command::new(cli_bin);
                command
                    .arg("revoke")
                    .arg(id.to_string())
                    .current_dir(&dir.0)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                // As a user would run it: no flags, no configuration in the environment.
                for (name, _) in std::env::vars_os() {
                    if name.to_string_lossy().starts_with("KEYGATE_") {
                        command.env_remove(name);
                    }
                }
                let started = Instant::now();
                let mut cli = command.spawn()?;
                let mut exited = None;
                let refusals = await_refusals(&mut clients, &key, started, || {
                    if exited.is_none()
                        && let Some(status) = cli.try_wait()?
                    {
                        exited = Some(started.elapsed());
                        if !status.success() {
                            return Err(cli_failed(status, cli.stderr.take()));
                        }
                    }
                    std::thread::sleep(pause);
                    Ok(())
                })?;
                let status = cli.wait()?;
                let wall = exited.unwrap_or_else(|| started.elapsed());
                if !status.success() {
                    return Err(cli_failed(status, cli.stderr.take()));
                }
                (refusals, wall)
            }
            None => {
                let started = Instant::now();
                admin.revoke(&id).await?;
                let call = started.elapsed();
                (
                    await_refusals(&mut clients, &key, started, || {
                        std::thread::sleep(pause);
                        Ok(())
                    })?,
                    call,
                )
            }
        };
        if verbose {
            eprintln!(
                "round {round}: refused by the axum quickstart after {:.2} ms, the actix-web one \
                 after {:.2} ms; the revoke itself {:.2} ms; {} requests",
                ms(a),
                ms(b),
                ms(call),
                clients[0].requests + clients[1].requests
            );
        }
        if round >= WARM_UP {
            samples.push(a.max(b));
            calls.push(call);
        }
        admin.delete(&id).await?;
    }
    drop(quickstarts);
    Ok(Figures { samples, calls })
}

/// The error for a `keygate revoke` that exited with `status`, naming what it printed on
/// `stderr` (the CLI prints no secret: the revoke names the key by id).
fn cli_failed(
    status: std::process::ExitStatus,
    stderr: Option<std::process::ChildStderr>,
) -> Error {
    let mut text = String::new();
    if let Some(mut stderr) = stderr {
        let _ = stderr.read_to_string(&mut text);
    }
    format!("keygate revoke failed ({status}): {}", text.trim()).into()
}

/// Round `round`'s client address on loopback: 127.1.x.y, one per round, so that no address
/// reaches the quickstarts' failed-attempts limit.
fn source_address(round: usize) -> Result<Ipv4Addr, Error> {
    let high = u8::try_from(round / 250).map_err(|_| "too many rounds: at most 64,000")?;
    let low = u8::try_from(round % 250 + 1)?;
    Ok(Ipv4Addr::new(127, 1, high, low))
}

/// Pseudo-random pauses (splitmix64): enough to spread revokes over a poll interval.
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self(u64::from(nanos) ^ (u64::from(std::process::id()) << 32))
    }

    /// A duration uniform in `[0, bound)`, to the microsecond.
    fn next_below(&mut self, bound: Duration) -> Duration {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let micros = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX).max(1);
        Duration::from_micros(z % micros)
    }
}

/// A fresh directory under the system's temporary directory; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("revokebench-sqlite-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The quickstart processes, in one directory; killed on drop.
struct Quickstarts {
    children: Vec<Child>,
    ports: Vec<u16>,
}

impl Quickstarts {
    /// Starts each binary in `dir` on a free loopback port, one after the other (the first
    /// creates and migrates `keygate.db`), and waits until each answers `GET /`.
    fn start(dir: &Path, bins: &[&Path]) -> Result<Self, Error> {
        let mut started = Self {
            children: Vec::new(),
            ports: Vec::new(),
        };
        for bin in bins {
            let name = bin
                .file_name()
                .map_or_else(|| "quickstart".into(), |n| n.to_string_lossy().into_owned());
            let log_path = dir.join(format!("{name}.log"));
            let log = std::fs::File::create(&log_path)?;
            let mut child = Command::new(bin)
                .current_dir(dir)
                .env("QUICKSTART_LISTEN", "127.0.0.1:0")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            started.children.push(child);
            // Reads the tour (it names the URL), then keeps draining: the quickstart must never
            // write into a closed pipe. The tour also shows the demo key: it is not kept.
            let (lines, tour) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = lines.send(line);
                }
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            let failed = |why: &str| -> Error {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                format!("{name} {why}; its log:\n{}", log.trim()).into()
            };
            let port = loop {
                let wait = deadline.saturating_duration_since(Instant::now());
                let line = tour
                    .recv_timeout(wait)
                    .map_err(|_| failed("printed no URL"))?;
                if let Some(port) = listening_port(&line) {
                    break port;
                }
            };
            loop {
                if let Ok(mut client) = Client::connect(port)
                    && client.get("/", None)? == 200
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(failed(&format!("did not answer on :{port}")));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            started.ports.push(port);
        }
        Ok(started)
    }
}

/// The port in the tour's line "... listening on http://127.0.0.1:PORT".
fn listening_port(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("listening on http://")?;
    let addr: SocketAddr = rest.split_whitespace().next()?.parse().ok()?;
    Some(addr.port())
}

impl Drop for Quickstarts {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal keep-alive HTTP/1.1 client for `GET`s on loopback.
struct Client {
    stream: TcpStream,
    last_body: String,
    /// Requests sent on this connection.
    requests: u64,
}

impl Client {
    fn connect(port: u16) -> std::io::Result<Self> {
        Self::with(TcpStream::connect(("127.0.0.1", port))?)
    }

    /// Connects to 127.0.0.1:`port` from the loopback address `source`.
    async fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let stream = socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await?
            .into_std()?;
        stream.set_nonblocking(false)?;
        Self::with(stream)
    }

    fn with(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self {
            stream,
            last_body: String::new(),
            requests: 0,
        })
    }

    fn get(&mut self, path: &str, key: Option<&str>) -> Result<u16, Error> {
        let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
        self.requests += 1;
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}\r\n"
        )?;
        let mut buffer = Vec::new();
        let mut chunk = [0_u8; 4096];
        let head_end = loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err("connection closed".into());
            }
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .get(9..12)
            .ok_or("short status line")?
            .parse()
            .map_err(|_| "bad status line")?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(Ok(0), |v| v.trim().parse())
            .map_err(|_| "bad content-length")?;
        while buffer.len() < head_end + length {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err("connection closed".into());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        self.last_body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).into_owned();
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_the_tours_first_line() {
        let line = "keygate quickstart (axum) listening on http://127.0.0.1:41234";
        assert_eq!(listening_port(line), Some(41234));
        assert_eq!(
            listening_port("keygate quickstart (actix-web) listening on http://127.0.0.1:3001 now"),
            Some(3001)
        );
        assert_eq!(listening_port("demo key \"axum quickstart demo\""), None);
        assert_eq!(listening_port("listening on http://localhost:3000"), None);
    }

    #[test]
    fn every_round_has_its_own_loopback_source_address() -> Result<(), Error> {
        let addresses = (0..1000)
            .map(source_address)
            .collect::<Result<Vec<_>, _>>()?;
        assert!(
            addresses
                .iter()
                .all(|a| a.is_loopback() && *a != Ipv4Addr::LOCALHOST)
        );
        let mut unique = addresses.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), addresses.len());
        assert!(source_address(64_000).is_err());
        Ok(())
    }

    #[test]
    fn jitter_stays_below_its_bound_and_spreads() {
        let mut jitter = Jitter(7);
        let pauses: Vec<Duration> = (0..1000)
            .map(|_| jitter.next_below(POLL_INTERVAL))
            .collect();
        assert!(pauses.iter().all(|p| *p < POLL_INTERVAL));
        let early = pauses.iter().filter(|p| **p < POLL_INTERVAL / 2).count();
        assert!(
            (400..600).contains(&early),
            "{early} of 1000 in the first half"
        );
    }
}

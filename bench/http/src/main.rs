//! keygate's HTTP load benchmark: axum and actix-web hello worlds, each without authentication,
//! behind the hand-written floor, behind the floor through a moka cache, and behind keygate.
//!
//! ```text
//! cargo run --release -p keygate-loadbench --bin loadbench -- [flags]
//! ```
//!
//! Always `--release`: the orchestrator builds nothing itself and starts its own executable as
//! the servers (`loadbench serve VARIANT …`), so servers and orchestrator are always the same
//! build. Needs `taskset`, `wrk` (installed with `apt-get install -y wrk` when missing and running
//! as root) and, unless `--skip-callgrind`, `valgrind`. Two phases:
//!
//! 1. Throughput. The eight servers (per framework: `plain`, `floor`, `floor-moka`, `keygate`)
//!    start once, pinned to core 0 (`taskset -c 0`), one worker thread each; keygate's and the
//!    floor's servers hold 100,000 keys and have the 1,000 the client uses warm in their cache.
//!    After a warm-up, each round runs `wrk` (pinned to core 1, one thread, keep-alive, requests
//!    cycling through the 1,000 keys in `x-api-key`) against each server for `--duration`
//!    seconds, the order reversed every other round. Per run: requests/s, p50/p99 latency, and
//!    the server's user-CPU µs per request (utime from /proc before and after). Per framework:
//!    the median over rounds of the paired ratios keygate / plain, floor / plain,
//!    floor-moka / plain, keygate / floor and keygate / floor-moka. With `--audit-sqlite`, the
//!    keygate servers keep their audit trail in a SQLite file, written by a runtime of their own
//!    pinned to core 1 beside wrk (the request thread stays alone on core 0; all the server's
//!    threads count in its user and system CPU figures, and the writer's threads' share is
//!    printed beside them, /proc/PID/task; the server's CPU share is the request core's); after
//!    the rounds, a table compares the requests wrk saw answered with the pipeline's counters
//!    and the file's rows.
//! 2. Instructions per request. Each variant runs under `valgrind --tool=callgrind` twice (fresh
//!    processes), driven by sequential keep-alive requests from an in-process client: a short and
//!    a long run; (Ir_long − Ir_short) / (N_long − N_short) cancels start-up and shutdown. The
//!    pairs are repeated (`--repeats`) and medians reported (of the figures, and of the
//!    differences paired by repetition): glibc malloc's occasional consolidation moves single
//!    figures by a few hundred instructions.
//!
//! Flags: `--rounds N` (6), `--duration SECS` (10), `--connections N` (32), `--warmup SECS` (3),
//! `--skip-callgrind`, `--skip-load`, `--short N` (2000), `--long N` (22000), `--repeats N` (3),
//! `--store-keys N` (100000; keygate and floor servers), `--rate-limit POLICY` (none; keygate
//! servers only), `--quota QUOTA` (none; keygate servers only), `--audit-sqlite`, `--audit-sqlite-usage` (keygate servers only),
//! `--audit-nice N` (0: the audit writer's nice value on the client core),
//! `--callgrind-dir DIR` (keep the callgrind out files there, for `callgrind_annotate`),
//! `--cache-sim` (the callgrind runs also simulate the L1 caches: data and instruction misses per request),
//! `--framework axum|actix-web` (both: run one framework's four servers only),
//! `--budget SECS` (2400: the whole benchmark stops by then, killing only the processes it
//! started).

mod callgrind;
mod client;
mod procs;
mod stats;
mod wrk;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keygate_loadbench::server::{ServerConfig, number, run};
use keygate_loadbench::{Auth, Framework, Variant};

use crate::callgrind::Callgrind;
use crate::procs::{Children, CpuTime, ServeArgs, Server, TempDir, free_port};
use crate::stats::{Verdict, median, median_interval, order_statistic, range};
use crate::wrk::{Load, WrkReport};

const SERVER_CORE: &str = "0";
const CLIENT_CORE: &str = "1";

#[derive(Debug, Clone)]
struct Options {
    rounds: usize,
    duration: u64,
    connections: u32,
    warmup: u64,
    /// Every this many rounds, each server is stopped and a fresh process started (and warmed
    /// up) in its place; 0: one process per server for the whole run.
    restart_every: usize,
    skip_callgrind: bool,
    skip_load: bool,
    short: usize,
    long: usize,
    repeats: usize,
    store_keys: usize,
    rate_limit: Option<String>,
    quota: Option<String>,
    audit_sqlite: bool,
    audit_usage_only: bool,
    audit_nice: i32,
    callgrind_dir: Option<PathBuf>,
    cache_sim: bool,
    budget: Duration,
    /// The frameworks whose servers run (both by default; `--framework` picks one).
    frameworks: Vec<Framework>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self {
            rounds: 6,
            duration: 10,
            connections: 32,
            warmup: 3,
            restart_every: 0,
            skip_callgrind: false,
            skip_load: false,
            short: 2_000,
            long: 22_000,
            repeats: 3,
            store_keys: 100_000,
            rate_limit: None,
            quota: None,
            audit_sqlite: false,
            audit_usage_only: false,
            audit_nice: 0,
            callgrind_dir: None,
            cache_sim: false,
            budget: Duration::from_secs(2_400),
            frameworks: Framework::ALL.to_vec(),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--rounds" => options.rounds = number(flag, value()?)?,
                "--duration" => options.duration = number(flag, value()?)?,
                "--connections" => options.connections = number(flag, value()?)?,
                "--warmup" => options.warmup = number(flag, value()?)?,
                "--restart-every" => options.restart_every = number(flag, value()?)?,
                "--short" => options.short = number(flag, value()?)?,
                "--long" => options.long = number(flag, value()?)?,
                "--repeats" => options.repeats = number(flag, value()?)?,
                "--store-keys" => options.store_keys = number(flag, value()?)?,
                "--rate-limit" => {
                    let limit = value()?;
                    number::<keygate::rate::RateLimit>(flag, limit)?;
                    options.rate_limit = Some(limit.clone());
                }
                "--quota" => {
                    let quota = value()?;
                    number::<keygate::quota::Quota>(flag, quota)?;
                    options.quota = Some(quota.clone());
                }
                "--budget" => options.budget = Duration::from_secs(number(flag, value()?)?),
                "--callgrind-dir" => options.callgrind_dir = Some(PathBuf::from(value()?)),
                "--audit-sqlite" => options.audit_sqlite = true,
                "--audit-sqlite-usage" => {
                    options.audit_sqlite = true;
                    options.audit_usage_only = true;
                }
                "--audit-nice" => options.audit_nice = number(flag, value()?)?,
                "--framework" => {
                    let name = value()?;
                    let framework = Framework::ALL
                        .into_iter()
                        .find(|f| f.name() == name || (name == "actix" && *f == Framework::Actix))
                        .ok_or_else(|| format!("--framework {name}: `axum` or `actix-web`"))?;
                    options.frameworks = vec![framework];
                }
                "--skip-callgrind" => options.skip_callgrind = true,
                "--cache-sim" => options.cache_sim = true,
                "--skip-load" => options.skip_load = true,
                "-h" | "--help" => {
                    println!("{}", HELP.trim());
                    std::process::exit(0);
                }
                _ => return Err(format!("unknown flag {flag} (see --help)")),
            }
        }
        if options.rounds == 0 || options.duration == 0 || options.connections == 0 {
            return Err("--rounds, --duration and --connections must be positive".into());
        }
        if options.repeats == 0 {
            return Err("--repeats must be positive".into());
        }
        if options.long <= options.short {
            return Err("--long must be greater than --short".into());
        }
        Ok(options)
    }

    /// The `loadbench serve` arguments every server of this run gets.
    fn serve_args(&self) -> ServeArgs<'_> {
        ServeArgs {
            store_keys: self.store_keys,
            rate_limit: self.rate_limit.as_deref(),
            quota: self.quota.as_deref(),
            audit: match (self.audit_sqlite, self.audit_usage_only) {
                (false, _) => None,
                (true, false) => Some("sqlite"),
                (true, true) => Some("sqlite-usage"),
            },
        }
    }

    /// The servers that run: every variant of the chosen frameworks, in the base order.
    fn variants(&self) -> Vec<Variant> {
        Variant::ALL
            .into_iter()
            .filter(|v| self.frameworks.contains(&v.framework))
            .collect()
    }
}

const HELP: &str = "
keygate HTTP load benchmark (run with --release)

  cargo run --release -p keygate-loadbench --bin loadbench -- [flags]

Servers, per framework (axum, actix): plain (no authentication), floor (a hand-written
check: split the key, SHA-256, HashMap, constant-time compare, identity in the request's
extensions), floor-moka (the same through a moka::future::Cache), keygate. Reports keygate
against plain, floor and floor-moka, and both floors against plain, from the same rounds.

  --rounds N           interleaved rounds of the throughput phase (6)
  --duration SECS      seconds per server per round (10)
  --connections N      wrk keep-alive connections (32)
  --warmup SECS        unmeasured wrk run per server before round 1 (3)
  --restart-every N    every N rounds, stop each server and start a fresh process in its
                       place, warmed up again (0: one process per server for the whole run).
                       A process has an offset of its own (code and heap placement): two
                       processes of one binary differed by 1.6 % over 20 rounds on one host.
                       Restarts make that offset part of the spread the intervals measure.
                       With --audit-sqlite each process keeps a trail file of its own, and
                       the trail's table sums them
  --skip-load          skip the throughput phase
  --skip-callgrind     skip the instructions phase
  --short N, --long N  requests of the short and long callgrind runs (2000, 22000)
  --repeats N          callgrind short/long pairs per server; medians are reported (3)
  --store-keys N       keys in keygate's store and in the floors' HashMap (100000)
  --rate-limit POLICY  keygate servers only: give every key this rate limit, e.g. 1000000/1s
                       (default: unlimited; the floors have no rate limits)
  --quota QUOTA        keygate servers only: give every key this quota, e.g. 1000000000000/day
                       (default: none; the floors count nothing)
  --audit-sqlite       keygate servers only: keep the audit trail in a SQLite file (store sink)
  --audit-sqlite-usage the same, allowed requests only counted in usage (not kept as rows)
  --audit-nice N       the audit writer's nice value (0; 19: it runs on the client core's idle
                       time instead of preempting wrk)
  --callgrind-dir DIR  keep the callgrind out files in DIR (for callgrind_annotate)
  --cache-sim          the callgrind runs also simulate the caches (fixed sizes, not the
                       host's): L1 data and instruction misses per request, a noise-free
                       view of memory and code footprint
  --framework NAME     run only this framework's servers: axum or actix-web (both)
  --budget SECS        hard limit for the whole run (2400)
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let config = ServerConfig::from_args(&args[1..]).unwrap_or_else(|e| {
            eprintln!("loadbench serve: {e}");
            std::process::exit(2);
        });
        if let Err(e) = run(&config) {
            eprintln!("loadbench serve {}: {e}", config.variant);
            std::process::exit(1);
        }
        return;
    }
    let options = Options::parse(&args).unwrap_or_else(|e| {
        eprintln!("loadbench: {e}");
        std::process::exit(2);
    });
    if let Err(e) = orchestrate(&options) {
        eprintln!("loadbench: {e}");
        std::process::exit(1);
    }
}

fn orchestrate(options: &Options) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + options.budget;
    let children = Children::default();
    let scratch = TempDir::create()?;
    start_watchdog(&children, scratch.path().to_owned(), options.budget);
    check_tools(options)?;
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    println!(
        "keygate load benchmark — {} (git {}), {}",
        utc_now(),
        git_head(),
        if cfg!(debug_assertions) {
            "DEBUG BUILD: rerun with --release"
        } else {
            "release build"
        }
    );
    println!("options: {options:?}");

    if !options.skip_load {
        let rounds = throughput(options, &exe, scratch.path(), &children, deadline)?;
        print_throughput(&rounds, &options.variants(), Targets::of(options));
        println!("{}", process_note(options.restart_every));
        println!();
    }
    if !options.skip_callgrind {
        let out_dir = match &options.callgrind_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                dir.clone()
            }
            None => scratch.path().to_owned(),
        };
        let callgrind = Callgrind {
            exe: &exe,
            scratch: scratch.path(),
            out_dir: &out_dir,
            children: &children,
            server_core: SERVER_CORE,
            serve: options.serve_args(),
            cache_sim: options.cache_sim,
            deadline,
        };
        instructions(options, &callgrind)?;
    }
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// One measured run of one server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    report: WrkReport,
    user_us_per_request: f64,
    system_us_per_request: f64,
    /// Of user + system, the audit writer's threads' (on the client core; 0 without the trail).
    writer_us_per_request: f64,
    /// The server's CPU time (user + system) less the writer's, over wall time: ≈ 1.0 when the
    /// server core is the limit.
    server_cpu_share: f64,
}

type Rounds = Vec<BTreeMap<&'static str, Sample>>;

fn throughput(
    options: &Options,
    exe: &Path,
    scratch: &Path,
    children: &Children,
    deadline: Instant,
) -> Result<Rounds, String> {
    let tick_us = 1e6 / procs::clock_ticks_per_second() as f64;
    let script = scratch.join("keys.lua");
    std::fs::write(&script, include_str!("../wrk/keys.lua")).map_err(|e| e.to_string())?;
    let load = Load {
        script: &script,
        connections: options.connections,
        client_core: CLIENT_CORE,
    };
    let mut servers = start_servers(options, exe, scratch, children, 0)?;
    // The rounds at which servers started: each generation keeps an audit trail of its own.
    let mut generations = vec![0];
    // Requests wrk saw answered, per server (warm-up included): for the audit trail's count.
    let mut answered: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut runs = 0_u64;
    warm_up(&load, children, &servers, options.warmup, &mut answered)?;
    runs += 1;
    let mut rounds = Rounds::new();
    'rounds: for round in 0..options.rounds {
        if options.restart_every > 0 && round > 0 && round % options.restart_every == 0 {
            for (variant, server) in servers.drain(..) {
                server
                    .stop(Duration::from_secs(10))
                    .map_err(|e| format!("{variant}: {e}"))?;
            }
            servers = start_servers(options, exe, scratch, children, round)?;
            generations.push(round);
            warm_up(&load, children, &servers, options.warmup, &mut answered)?;
            runs += 1;
        }
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut samples = BTreeMap::new();
        for index in order {
            let (variant, server) = &servers[index];
            if Instant::now() + Duration::from_secs(options.duration + 20) > deadline {
                println!("time budget reached: stopping after {round} complete rounds");
                break 'rounds;
            }
            let before = server.cpu_time()?;
            let report = load.run(children, server.port, &server.keys_file, options.duration)?;
            let after = server.cpu_time()?;
            check_errors(*variant, &report)?;
            *answered.entry(variant.name()).or_default() += report.requests;
            let sample = sample(report, before, after, tick_us);
            println!(
                "round {} {variant:>16}: {:>8.0} req/s  p50 {:>5} µs  p99 {:>5} µs  user {:>5.2} µs/req  sys {:>5.2} µs/req  writer {:>4.2} µs/req  server CPU {:>3.0} %",
                round + 1,
                report.requests_per_second(),
                report.p50_us,
                report.p99_us,
                sample.user_us_per_request,
                sample.system_us_per_request,
                sample.writer_us_per_request,
                sample.server_cpu_share * 100.0,
            );
            samples.insert(variant.name(), sample);
        }
        rounds.push(samples);
        runs += 1;
    }
    for (variant, server) in servers {
        server
            .stop(Duration::from_secs(10))
            .map_err(|e| format!("{variant}: {e}"))?;
    }
    if options.audit_sqlite {
        let in_flight = u64::from(options.connections) * runs;
        print_audit_trail(scratch, options, &generations, &answered, in_flight)?;
    }
    Ok(rounds)
}

/// Per keygate server, after its shutdown: requests wrk saw answered, the audit pipeline's
/// final counters (written by the server to `VARIANT.audit-stats`), and what its SQLite file
/// holds, each summed over the server's `generations` (one process each, with
/// `--restart-every`). wrk counts the responses it read before each run's end; a request still
/// in flight then was served (and audited) all the same, so rows may exceed the count by at
/// most the connections times the runs.
fn print_audit_trail(
    scratch: &Path,
    options: &Options,
    generations: &[usize],
    answered: &BTreeMap<&'static str, u64>,
    in_flight_bound: u64,
) -> Result<(), String> {
    let usage_only = options.audit_usage_only;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!();
    if usage_only {
        println!("## Audit trail (SQLite; allowed requests counted in usage, not kept as rows)");
    } else {
        println!("## Audit trail (SQLite, every request an event)");
    }
    println!();
    println!(
        "| server | requests answered (wrk) | recorded | dropped | lost | failed writes | request events (rows and blocks) | usage count (allowed + denied) | events − answered (≤ {in_flight_bound} in flight) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for variant in options.variants().iter().filter(|v| v.with_keygate()) {
        let (mut stats, mut rows, mut usage) = (Vec::new(), 0_i64, 0_i64);
        for &generation in generations {
            let keys = keys_file(scratch, *variant, generation);
            let stats_file = keys.with_extension("audit-stats");
            stats.push(
                std::fs::read_to_string(&stats_file)
                    .map_err(|e| format!("{}: {e}", stats_file.display()))?,
            );
            let (generation_rows, generation_usage) =
                runtime.block_on(trail_counts(&keys.with_extension("audit.db")))?;
            rows += generation_rows;
            usage += generation_usage;
        }
        let stat = |name: &str| -> String {
            summed_stat(&stats, name).map_or_else(|| "?".to_owned(), |n| n.to_string())
        };
        let served = answered.get(variant.name()).copied().unwrap_or(0);
        println!(
            "| {variant} | {served} | {} | {} | {} | {} | {rows} | {usage} | {:+} |",
            stat("recorded"),
            stat("dropped"),
            stat("lost"),
            stat("failed_writes"),
            rows - i64::try_from(served).unwrap_or(i64::MAX),
        );
    }
    println!();
    Ok(())
}

/// What one trail file holds: request events (rows, and those SQLite keeps in blocks), and the
/// usage count (allowed + denied).
async fn trail_counts(db: &Path) -> Result<(i64, i64), String> {
    let store = keygate_sqlx::SqliteStore::connect_with(keygate_sqlx::SqliteStore::options(db))
        .await
        .map_err(|e| format!("{}: {e}", db.display()))?;
    let rows: i64 = keygate_sqlx::sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM keygate_audit_events WHERE action = 'request') \
         + (SELECT coalesce(sum(count), 0) FROM keygate_audit_blocks)",
    )
    .fetch_one(store.pool())
    .await
    .map_err(|e| e.to_string())?;
    let usage: i64 = keygate_sqlx::sqlx::query_scalar(
        "SELECT coalesce(sum(allowed + denied), 0) FROM keygate_usage",
    )
    .fetch_one(store.pool())
    .await
    .map_err(|e| e.to_string())?;
    Ok((rows, usage))
}

/// The counter `name` (`name=N` in a server's `.audit-stats`) summed over `stats`, one text per
/// process; `None` if any lacks it.
fn summed_stat(stats: &[String], name: &str) -> Option<u64> {
    stats.iter().try_fold(0_u64, |sum, text| {
        let value = text
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
        Some(sum + value.parse::<u64>().ok()?)
    })
}

fn sample(report: WrkReport, before: CpuTime, after: CpuTime, tick_us: f64) -> Sample {
    let requests = report.requests.max(1) as f64;
    let user_us = (after.user_ticks - before.user_ticks) as f64 * tick_us;
    let system_us = (after.system_ticks - before.system_ticks) as f64 * tick_us;
    let writer_us = after.writer_ticks.saturating_sub(before.writer_ticks) as f64 * tick_us;
    Sample {
        report,
        user_us_per_request: user_us / requests,
        system_us_per_request: system_us / requests,
        writer_us_per_request: writer_us / requests,
        server_cpu_share: (user_us + system_us - writer_us) / report.duration_us.max(1) as f64,
    }
}

/// Starts one process of each server (pinned to the server core), numbered `generation` (the
/// round it starts before): its files are named by [`keys_file`], a trail of its own each.
fn start_servers(
    options: &Options,
    exe: &Path,
    scratch: &Path,
    children: &Children,
    generation: usize,
) -> Result<Vec<(Variant, Server)>, String> {
    let mut servers = Vec::new();
    for variant in options.variants() {
        let port = free_port()?;
        let keys_file = keys_file(scratch, variant, generation);
        let mut command = Command::new("taskset");
        command.args(["-c", SERVER_CORE]).arg(exe);
        let serve = options.serve_args();
        serve.append_to(&mut command, variant, port, &keys_file);
        if serve.audit.is_some() && variant.with_keygate() {
            // The writer off the request core: on the other one, beside wrk.
            command.args(["--audit-core", CLIENT_CORE]);
            command.args(["--audit-nice", &options.audit_nice.to_string()]);
        }
        let server = Server::start(command, children, port, keys_file, Duration::from_secs(120))?;
        println!("started {variant} (pid {}) on 127.0.0.1:{port}", server.pid);
        servers.push((variant, server));
    }
    Ok(servers)
}

/// The keys file of `variant`'s server started at round `generation` (0: the first). The
/// server keeps its audit trail beside it (`.audit.db`, `.audit-stats`): a trail of its own
/// per process.
fn keys_file(scratch: &Path, variant: Variant, generation: usize) -> PathBuf {
    if generation == 0 {
        scratch.join(format!("{variant}.keys"))
    } else {
        scratch.join(format!("{variant}.{generation}.keys"))
    }
}

/// An unmeasured run of `secs` per server, counted in `answered`.
fn warm_up(
    load: &Load<'_>,
    children: &Children,
    servers: &[(Variant, Server)],
    secs: u64,
    answered: &mut BTreeMap<&'static str, u64>,
) -> Result<(), String> {
    for (variant, server) in servers {
        let report = load.run(children, server.port, &server.keys_file, secs)?;
        *answered.entry(variant.name()).or_default() += report.requests;
        println!(
            "warm-up {variant}: {:.0} req/s",
            report.requests_per_second()
        );
        check_errors(*variant, &report)?;
    }
    Ok(())
}

fn check_errors(variant: Variant, report: &WrkReport) -> Result<(), String> {
    if report.errors > 0 || report.requests == 0 {
        return Err(format!(
            "{variant}: {} errors (non-200 responses, socket errors or timeouts) in {} requests: \
             the measurement would not be of the cache-hit path",
            report.errors, report.requests
        ));
    }
    Ok(())
}

fn print_throughput(rounds: &Rounds, variants: &[Variant], targets: Targets) {
    let complete: Vec<_> = rounds
        .iter()
        .filter(|r| r.len() == variants.len())
        .collect();
    println!();
    println!(
        "## Throughput ({} complete rounds; medians over rounds, [min–max])",
        complete.len()
    );
    println!();
    println!(
        "| server | req/s | p50 µs | p99 µs | user-CPU µs/req | sys-CPU µs/req | of which audit writer µs/req | server CPU (request core) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for variant in variants.iter().copied() {
        let of = |f: &dyn Fn(&Sample) -> f64| -> Vec<f64> {
            complete
                .iter()
                .filter_map(|r| r.get(variant.name()))
                .map(f)
                .collect()
        };
        let rps = of(&|s| s.report.requests_per_second());
        let (lo, hi) = range(&rps);
        println!(
            "| {variant} | {:.0} [{lo:.0}–{hi:.0}] | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} % |",
            median(&rps),
            median(&of(&|s| s.report.p50_us as f64)),
            median(&of(&|s| s.report.p99_us as f64)),
            median(&of(&|s| s.user_us_per_request)),
            median(&of(&|s| s.system_us_per_request)),
            median(&of(&|s| s.writer_us_per_request)),
            median(&of(&|s| s.server_cpu_share)) * 100.0,
        );
    }
    println!();
    print_ratios(&complete, variants, targets);
    // The set-up means the server's core to be the bottleneck; a round where some server got
    // less than 90 % of it (other work on the machine) measures contention as much as keygate.
    let uncontended: Vec<_> = complete
        .iter()
        .copied()
        .filter(|r| r.values().all(|s| s.server_cpu_share >= UNCONTENDED))
        .collect();
    println!(
        "Rounds in which every server had ≥ {:.0} % of its core: {} of {}.",
        UNCONTENDED * 100.0,
        uncontended.len(),
        complete.len()
    );
    if !uncontended.is_empty() {
        println!();
        print_ratios(&uncontended, variants, targets);
    }
}

/// Server CPU share above which a run counts as uncontended.
const UNCONTENDED: f64 = 0.9;

/// The comparisons every report prints, per framework: (server, baseline), both from the same
/// rounds (throughput) or repetitions (callgrind).
const PAIRS: [(Auth, Auth); 5] = [
    (Auth::Keygate, Auth::Plain),
    (Auth::Floor, Auth::Plain),
    (Auth::FloorMoka, Auth::Plain),
    (Auth::Keygate, Auth::Floor),
    (Auth::Keygate, Auth::FloorMoka),
];

/// The acceptance thresholds of issue 15 / DESIGN.md: keygate/plain at least this…
const MIN_KEYGATE_RATIO: f64 = 0.85;
/// …or this with every key rate limited…
const MIN_KEYGATE_RATIO_LIMITED: f64 = 0.88;
/// …or this with the SQLite audit trail writing every request…
const MIN_KEYGATE_RATIO_AUDITED: f64 = 0.80;
/// …and at most this much user CPU added per request (µs)…
const MAX_ADDED_USER_US: f64 = 1.0;
/// …and at most this many instructions per request over plain (axum, actix-web).
fn instruction_budget(framework: Framework) -> f64 {
    match framework {
        Framework::Axum => 12_000.0,
        Framework::Actix => 11_000.0,
    }
}

/// Coverage of the intervals by which a run's medians are judged.
const INTERVAL_LEVEL: f64 = 0.9;

/// The targets a run's options put keygate/plain to.
#[derive(Debug, Clone, Copy)]
struct Targets {
    min_ratio: f64,
}

impl Targets {
    fn of(options: &Options) -> Self {
        let min_ratio = if options.audit_sqlite || options.audit_usage_only {
            MIN_KEYGATE_RATIO_AUDITED
        } else if options.rate_limit.is_some() {
            MIN_KEYGATE_RATIO_LIMITED
        } else {
            MIN_KEYGATE_RATIO
        };
        Self { min_ratio }
    }
}

fn check(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

fn joined(values: &[f64]) -> String {
    values.iter().fold(String::new(), |mut s, r| {
        let _ = write!(s, "{}{r:.3}", if s.is_empty() { "" } else { " " });
        s
    })
}

/// Paired figures of one comparison over rounds: per round, `f(server, baseline)`.
fn paired(
    rounds: &[&BTreeMap<&'static str, Sample>],
    server: Variant,
    baseline: Variant,
    f: &dyn Fn(&Sample, &Sample) -> f64,
) -> Vec<f64> {
    rounds
        .iter()
        .filter_map(|r| Some(f(r.get(server.name())?, r.get(baseline.name())?)))
        .collect()
}

fn requests_ratio(server: &Sample, baseline: &Sample) -> f64 {
    server.report.requests_per_second() / baseline.report.requests_per_second()
}

/// Requests per server-CPU-second, server over baseline: what the req/s ratio would be with the
/// core to itself. Steadier than req/s when other work on the machine takes the server's core.
fn cpu_bound_ratio(server: &Sample, baseline: &Sample) -> f64 {
    let cpu = |s: &Sample| s.user_us_per_request + s.system_us_per_request;
    cpu(baseline) / cpu(server)
}

fn added_user_us(server: &Sample, baseline: &Sample) -> f64 {
    server.user_us_per_request - baseline.user_us_per_request
}

fn print_ratios(
    rounds: &[&BTreeMap<&'static str, Sample>],
    variants: &[Variant],
    targets: Targets,
) {
    let min_ratio = targets.min_ratio;
    let frameworks = frameworks_of(variants);
    println!(
        "| framework | server / baseline | paired ratio, req/s: median [min–max] | per round | CPU-bound ratio (baseline/server CPU per request): median [min–max] | user-CPU µs/req server − baseline |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for framework in frameworks.iter().copied() {
        for (auth, base) in PAIRS {
            let (server, baseline) = (Variant::new(framework, auth), Variant::new(framework, base));
            let ratios = paired(rounds, server, baseline, &requests_ratio);
            let cpu_ratios = paired(rounds, server, baseline, &cpu_bound_ratio);
            let deltas = paired(rounds, server, baseline, &added_user_us);
            let (lo, hi) = range(&ratios);
            let (cpu_lo, cpu_hi) = range(&cpu_ratios);
            let emphasis = if auth == Auth::Keygate { "**" } else { "" };
            println!(
                "| {} | {} / {} | {emphasis}{:.3}{emphasis} [{lo:.3}–{hi:.3}] | {} | {:.3} [{cpu_lo:.3}–{cpu_hi:.3}] | {:+.2} |",
                framework.name(),
                auth.name(),
                base.name(),
                median(&ratios),
                joined(&ratios),
                median(&cpu_ratios),
                median(&deltas),
            );
        }
    }
    println!();
    println!(
        "| framework | measure | keygate/plain ≥ floor-moka/plain | keygate/plain ≥ {min_ratio} | stretch: keygate/plain ≥ floor/plain | user-CPU keygate − plain ≤ {MAX_ADDED_USER_US} µs |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for framework in frameworks.iter().copied() {
        let plain = Variant::new(framework, Auth::Plain);
        let added = median(&paired(
            rounds,
            Variant::new(framework, Auth::Keygate),
            plain,
            &added_user_us,
        ));
        // The targets are stated for req/s; the CPU-bound ratio is the same comparison without
        // the share of core 0 that other work took, so a contended run is still judged.
        for (measure, f) in [
            ("req/s", &requests_ratio as &dyn Fn(&Sample, &Sample) -> f64),
            ("CPU-bound", &cpu_bound_ratio),
        ] {
            let ratio = |auth| median(&paired(rounds, Variant::new(framework, auth), plain, f));
            let (keygate, floor, moka) = (
                ratio(Auth::Keygate),
                ratio(Auth::Floor),
                ratio(Auth::FloorMoka),
            );
            println!(
                "| {} | {measure} | {keygate:.3} vs {moka:.3} {} | {keygate:.3} {} | {keygate:.3} vs {floor:.3} {} | {added:+.2} {} |",
                framework.name(),
                check(keygate >= moka),
                check(keygate >= min_ratio),
                check(keygate >= floor),
                check(added <= MAX_ADDED_USER_US),
            );
        }
    }
    println!();
    print_intervals(rounds, &frameworks, targets);
}

/// What the intervals cover of the servers' processes.
fn process_note(restart_every: usize) -> String {
    match restart_every {
        0 => "Each server ran as one process for the whole run: its own offset (code and heap \
              placement; 1.6 % between two processes of one binary on one host) is in every \
              round alike, so the intervals above do not cover it (`--restart-every N` does)."
            .to_owned(),
        n => format!(
            "Each server was restarted every {n} round(s): the intervals above cover the \
             processes' own offsets as far as the rounds sample them."
        ),
    }
}

/// How far this run's medians can be trusted: per line, the distribution-free interval of the
/// median over the rounds, and whether it lies wholly on one side of the target. A line whose
/// interval holds the target is one this run cannot decide, whichever side its median is on.
fn print_intervals(
    rounds: &[&BTreeMap<&'static str, Sample>],
    frameworks: &[Framework],
    targets: Targets,
) {
    let Some((_, level)) = order_statistic(rounds.len(), INTERVAL_LEVEL) else {
        println!(
            "({} rounds: too few for a {:.0} % interval of the medians.)",
            rounds.len(),
            INTERVAL_LEVEL * 100.0
        );
        println!();
        return;
    };
    println!(
        "| framework | line | median | interval of the median ({:.1} %) | this run |",
        level * 100.0
    );
    println!("| --- | --- | --- | --- | --- |");
    for framework in frameworks.iter().copied() {
        let keygate = Variant::new(framework, Auth::Keygate);
        let base = |auth| Variant::new(framework, auth);
        let lines: [(String, Vec<f64>, f64, bool, usize); 4] = [
            (
                "keygate / floor-moka, paired req/s ≥ 1".to_owned(),
                paired(rounds, keygate, base(Auth::FloorMoka), &requests_ratio),
                1.0,
                true,
                3,
            ),
            (
                format!("keygate / plain req/s ≥ {}", targets.min_ratio),
                paired(rounds, keygate, base(Auth::Plain), &requests_ratio),
                targets.min_ratio,
                true,
                3,
            ),
            (
                "stretch: keygate / floor, paired req/s ≥ 1".to_owned(),
                paired(rounds, keygate, base(Auth::Floor), &requests_ratio),
                1.0,
                true,
                3,
            ),
            (
                format!("user-CPU keygate − plain ≤ {MAX_ADDED_USER_US} µs"),
                paired(rounds, keygate, base(Auth::Plain), &added_user_us),
                MAX_ADDED_USER_US,
                false,
                2,
            ),
        ];
        for (line, values, target, at_least, digits) in lines {
            let Some(interval) = median_interval(&values, INTERVAL_LEVEL) else {
                continue;
            };
            println!(
                "| {} | {line} | {:.digits$} | [{:.digits$} – {:.digits$}] | {} |",
                framework.name(),
                median(&values),
                interval.lo,
                interval.hi,
                Verdict::of(interval, target, at_least).name(),
            );
        }
    }
    println!();
}

fn instructions(options: &Options, callgrind: &Callgrind<'_>) -> Result<(), String> {
    println!(
        "## Instructions per request (callgrind; ({} − {} requests) / {}, {} repetitions)",
        options.long,
        options.short,
        options.long - options.short,
        options.repeats
    );
    println!();
    // Per variant, one (total, SHA-256) figure per repetition. glibc malloc's occasional
    // consolidation makes single figures wander by a few hundred instructions; medians are steady.
    let mut per_request: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    // With `--cache-sim`: L1 data-cache misses (reads and writes) and instruction-cache misses
    // per request, per repetition.
    let mut misses: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    let n = (options.long - options.short) as f64;
    let variants = options.variants();
    for repetition in 1..=options.repeats {
        for variant in variants.iter().copied() {
            let short = callgrind.instructions(variant, options.short)?;
            let long = callgrind.instructions(variant, options.long)?;
            let total = (long.total as f64 - short.total as f64) / n;
            let sha = (long.sha256 as f64 - short.sha256 as f64) / n;
            println!(
                "callgrind #{repetition} {variant:>16}: {} Ir / {} requests, {} Ir / {} requests → {total:.0} instructions/request",
                short.total, options.short, long.total, options.long
            );
            per_request
                .entry(variant.name())
                .or_default()
                .push((total, sha));
            if let (Some(long), Some(short)) = (long.misses, short.misses) {
                misses.entry(variant.name()).or_default().push((
                    (long.data as f64 - short.data as f64) / n,
                    (long.code as f64 - short.code as f64) / n,
                ));
            }
        }
    }
    let totals = |v: Variant| -> Vec<f64> { per_request[v.name()].iter().map(|p| p.0).collect() };
    let shas = |v: Variant| -> Vec<f64> { per_request[v.name()].iter().map(|p| p.1).collect() };
    println!();
    println!("| server | instructions/request, median [min–max] | of which SHA-256 compression |");
    println!("| --- | --- | --- |");
    for variant in variants.iter().copied() {
        let (lo, hi) = range(&totals(variant));
        println!(
            "| {variant} | {:.0} [{lo:.0}–{hi:.0}] | {:.0} |",
            median(&totals(variant)),
            median(&shas(variant))
        );
    }
    println!();
    println!(
        "| framework | server − baseline | instructions/request (median of paired differences) [min–max] | of which SHA-256 | the rest | target |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for framework in frameworks_of(&variants) {
        for (auth, base) in PAIRS {
            let (server, baseline) = (Variant::new(framework, auth), Variant::new(framework, base));
            // Paired by repetition: the servers of one repetition ran back to back.
            let paired = |of: &dyn Fn(Variant) -> Vec<f64>| -> Vec<f64> {
                of(server)
                    .iter()
                    .zip(of(baseline))
                    .map(|(s, b)| s - b)
                    .collect()
            };
            let deltas = paired(&totals);
            let (lo, hi) = range(&deltas);
            let delta = median(&deltas);
            let sha = median(&paired(&shas));
            let target = if (auth, base) == (Auth::Keygate, Auth::Plain) {
                let budget = instruction_budget(framework);
                format!("≤ +{budget:.0} {}", check(delta <= budget))
            } else {
                "—".to_owned()
            };
            let emphasis = if auth == Auth::Keygate { "**" } else { "" };
            println!(
                "| {} | {} − {} | {emphasis}{delta:+.0}{emphasis} [{lo:+.0}–{hi:+.0}] | {sha:+.0} | {:+.0} | {target} |",
                framework.name(),
                auth.name(),
                base.name(),
                delta - sha,
            );
        }
    }
    println!();
    if !misses.is_empty() {
        print_misses(&misses, &variants);
    }
    Ok(())
}

/// The `--cache-sim` table: L1 data and instruction misses per request, and each server's
/// against its framework's plain server, paired by repetition.
fn print_misses(misses: &BTreeMap<&str, Vec<(f64, f64)>>, variants: &[Variant]) {
    println!(
        "## L1 cache misses per request (callgrind --cache-sim: {})",
        callgrind::CACHES
    );
    println!();
    println!(
        "| server | data misses/request, median | − plain, median of paired differences | instruction misses/request, median | − plain |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for variant in variants.iter().copied() {
        let (Some(own), Some(plain)) = (
            misses.get(variant.name()),
            misses.get(Variant::new(variant.framework, Auth::Plain).name()),
        ) else {
            continue;
        };
        let column = |pick: fn(&(f64, f64)) -> f64| -> (f64, f64) {
            let values: Vec<f64> = own.iter().map(pick).collect();
            let deltas: Vec<f64> = own
                .iter()
                .zip(plain)
                .map(|(o, p)| pick(o) - pick(p))
                .collect();
            (median(&values), median(&deltas))
        };
        let (data, data_delta) = column(|m| m.0);
        let (code, code_delta) = column(|m| m.1);
        println!("| {variant} | {data:.1} | {data_delta:+.1} | {code:.1} | {code_delta:+.1} |");
    }
    println!();
}

/// The frameworks among `variants`, in the base order.
fn frameworks_of(variants: &[Variant]) -> Vec<Framework> {
    Framework::ALL
        .into_iter()
        .filter(|f| variants.iter().any(|v| v.framework == *f))
        .collect()
}

/// Kills our children and removes the scratch directory if the run overruns its budget.
fn start_watchdog(children: &Children, scratch: PathBuf, budget: Duration) {
    let children = children.clone();
    std::thread::spawn(move || {
        std::thread::sleep(budget + Duration::from_secs(30));
        eprintln!(
            "loadbench: time budget of {budget:?} exceeded: killing the processes it started"
        );
        children.kill_all();
        let _ = std::fs::remove_dir_all(&scratch);
        std::process::exit(3);
    });
}

fn check_tools(options: &Options) -> Result<(), String> {
    for tool in ["taskset", "kill", "getconf"] {
        if !procs::on_path(tool) {
            return Err(format!("{tool} not found on PATH"));
        }
    }
    if !options.skip_load && !procs::on_path("wrk") {
        install_wrk()?;
    }
    let callgrind_found = procs::on_path("valgrind") && procs::on_path("callgrind_control");
    if !options.skip_callgrind && !callgrind_found {
        return Err("valgrind (with callgrind_control) not found: apt-get install -y valgrind, or pass --skip-callgrind".into());
    }
    Ok(())
}

/// Nothing installed by hand survives onto a new machine, so the benchmark installs its load
/// generator itself (Debian's package), when it runs as root.
fn install_wrk() -> Result<(), String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|out| out.stdout.trim_ascii() == b"0");
    if !root {
        return Err("wrk not found: install it with `sudo apt-get install -y wrk`".into());
    }
    println!("wrk not found: apt-get install -y wrk");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "wrk"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").arg("update").status();
        if !install() {
            return Err("apt-get install -y wrk failed".into());
        }
    }
    Ok(())
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(|| "unknown date".into(), |s| s.trim().to_owned())
}

fn git_head() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use keygate_loadbench::{Auth, Framework, Variant};

    use super::{Options, Targets, keys_file, process_note, summed_stat};

    fn parse(args: &[&str]) -> Result<Options, String> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Options::parse(&args)
    }

    fn target(args: &[&str]) -> f64 {
        Targets::of(&parse(args).expect("valid options")).min_ratio
    }

    #[test]
    fn servers_are_restarted_only_when_asked() {
        assert_eq!(parse(&[]).expect("valid").restart_every, 0);
        assert_eq!(
            parse(&["--restart-every", "5"])
                .expect("valid")
                .restart_every,
            5
        );
        // A trail is kept per process, and counted over them all.
        assert_eq!(
            parse(&["--restart-every", "2", "--audit-sqlite"])
                .expect("valid")
                .restart_every,
            2
        );
        // The report says whether its intervals cover the processes' offsets.
        assert!(process_note(0).contains("do not cover"));
        assert!(process_note(4).contains("every 4 round"));
    }

    #[test]
    fn each_generations_trail_has_its_own_files_and_their_counts_are_summed() {
        let scratch = Path::new("/s");
        let keygate = Variant::new(Framework::Axum, Auth::Keygate);
        let first = keys_file(scratch, keygate, 0);
        let later = keys_file(scratch, keygate, 8);
        assert_eq!(first, Path::new("/s/axum-keygate.keys"));
        assert_eq!(
            later.with_extension("audit.db"),
            Path::new("/s/axum-keygate.8.audit.db")
        );
        assert_ne!(
            first.with_extension("audit-stats"),
            later.with_extension("audit-stats")
        );
        let stats = [
            "recorded=10 dropped=0 lost=1".to_owned(),
            "recorded=32 dropped=2 lost=0 failed_writes=0".to_owned(),
        ];
        assert_eq!(summed_stat(&stats, "recorded"), Some(42));
        assert_eq!(summed_stat(&stats, "dropped"), Some(2));
        assert_eq!(summed_stat(&stats, "lost"), Some(1));
        // Missing from one process: unknown, not a partial sum.
        assert_eq!(summed_stat(&stats, "failed_writes"), None);
        assert_eq!(summed_stat(&["recorded=x".to_owned()], "recorded"), None);
    }

    #[test]
    fn only_keygates_servers_get_the_limit_the_quota_and_the_trail() {
        let options = parse(&[
            "--rate-limit",
            "5/1s",
            "--quota",
            "9/day",
            "--audit-sqlite-usage",
            "--store-keys",
            "7",
        ])
        .expect("valid");
        let args = |auth| {
            let mut command = Command::new("x");
            let variant = Variant::new(Framework::Actix, auth);
            options
                .serve_args()
                .append_to(&mut command, variant, 80, Path::new("/k"));
            command
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let common = "--port 80 --keys-file /k --store-keys 7";
        assert_eq!(
            args(Auth::Keygate),
            format!(
                "serve actix-keygate {common} --rate-limit 5/1s --quota 9/day --audit sqlite-usage"
            )
        );
        assert_eq!(args(Auth::Floor), format!("serve actix-floor {common}"));
        let trail = parse(&["--audit-sqlite"]).expect("valid");
        assert_eq!(trail.serve_args().audit, Some("sqlite"));
        assert_eq!(parse(&[]).expect("valid").serve_args().audit, None);
    }

    #[test]
    fn each_run_is_judged_by_its_own_line_of_issue_15() {
        assert_eq!(target(&[]), 0.85);
        assert_eq!(target(&["--rate-limit", "1000000000/1s"]), 0.88);
        assert_eq!(target(&["--audit-sqlite"]), 0.80);
        assert_eq!(target(&["--audit-sqlite-usage"]), 0.80);
        // The trail's line holds when both are on: it is the lower one, and the run records.
        assert_eq!(
            target(&["--rate-limit", "1000000000/1s", "--audit-sqlite"]),
            0.80
        );
    }
}

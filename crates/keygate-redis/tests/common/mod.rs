//! Shared by the Redis test files: the shared Redis from `KEYGATE_TEST_REDIS_URL`, a random
//! prefix per test, and private `redis-server` processes that tests may stop and restart.
//!
//! When `KEYGATE_TEST_REDIS_URL` is unset, tests print that they are skipped and return. When it
//! is set, Redis must answer (and `redis-server` must be on PATH for the outage tests): else
//! the test fails.
//!
//! Tests that need only a private `redis-server` (not the shared Redis) run whenever it is on
//! PATH, and are skipped with a note when it is not ([`PrivateRedis::available`]).

#![allow(dead_code, unreachable_pub)]

use std::fmt::Display;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keygate_redis::redis;

pub const REDIS_URL_ENV: &str = "KEYGATE_TEST_REDIS_URL";

/// The response timeout of limiters whose tests count exact answers: far beyond any round trip
/// on a loaded CI machine, so a slow answer is waited for instead of failing open (the default
/// `FailurePolicy::Open` with its 250 ms timeout allows the request, and the count is off).
/// Tests of timeouts and outages set their own.
pub const UNDER_LOAD: std::time::Duration = std::time::Duration::from_secs(30);

/// The shared Redis's URL, or `None` (after saying the test is skipped) when unset.
pub fn redis_url(test: &str) -> Option<String> {
    match std::env::var(REDIS_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("{REDIS_URL_ENV} is not set: skipping {test}");
            None
        }
    }
}

/// `result`'s value, or a panic saying what failed.
#[track_caller]
pub fn ok<T, E: Display>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: {error}"),
    }
}

/// A prefix no other test or run uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("kgtest-{test}-{}-{nanos}", std::process::id())
}

/// A multiplexed connection for inspecting Redis (PTTL, CLIENT LIST, …); fails the test when
/// Redis does not answer.
pub async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    let client = ok(redis::Client::open(url), "redis URL");
    match tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => panic!("{REDIS_URL_ENV} is set but Redis at {url} does not answer: {e}"),
        Err(_) => panic!("{REDIS_URL_ENV} is set but Redis at {url} does not answer within 5 s"),
    }
}

pub async fn query<T: redis::FromRedisValue>(
    connection: &mut redis::aio::MultiplexedConnection,
    command: &redis::Cmd,
) -> T {
    ok(command.query_async(connection).await, "redis command")
}

/// Script calls Redis has run (`EVALSHA`, and `EVAL` should a script ever be reloaded), from
/// `INFO commandstats`: the limiter's only commands after start-up.
pub async fn script_calls(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = query(redis, redis::cmd("INFO").arg("commandstats")).await;
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            let calls = line.split(':').nth(1)?.split(',').next()?;
            calls.strip_prefix("calls=")?.parse::<u64>().ok()
        })
        .sum()
}

/// A `redis-server` of the test's own on a free loopback port, killed on drop: tests stop,
/// hang and restart it without touching the shared one.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one and waits until it answers.
    pub async fn start() -> Self {
        let mut redis = Self::not_started();
        redis.restart().await;
        redis
    }

    /// Picks a free loopback port and starts nothing on it (yet: [`restart`](Self::restart)
    /// starts the server). Connections to it are refused meanwhile.
    pub fn not_started() -> Self {
        let port = {
            let listener = ok(TcpListener::bind("127.0.0.1:0"), "find a free port");
            ok(listener.local_addr(), "local address").port()
        };
        Self { port, child: None }
    }

    /// Whether `redis-server` can be run. When it cannot: with `KEYGATE_TEST_REDIS_URL` set,
    /// the test fails (Redis is meant to be installed); unset, it says the test is skipped.
    pub fn available(test: &str) -> bool {
        let runs = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !runs {
            assert!(
                std::env::var_os(REDIS_URL_ENV).is_none(),
                "{REDIS_URL_ENV} is set, and {test} needs `redis-server` on PATH to run a private Redis"
            );
            eprintln!("`redis-server` is not on PATH: skipping {test}");
        }
        runs
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after [`stop`](Self::stop)).
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{REDIS_URL_ENV} is set, and this test needs `redis-server` on PATH to run a private Redis it can stop: {e}"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = ok(redis::Client::open(self.url()), "private redis URL");
        loop {
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_millis(500),
                client.get_multiplexed_async_connection(),
            )
            .await
                && let Ok(Ok(pong)) = tokio::time::timeout(
                    Duration::from_millis(500),
                    redis::cmd("PING").query_async::<String>(&mut c),
                )
                .await
                && pong == "PONG"
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "private redis-server on port {} did not answer within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it (connections see a reset; new ones are refused).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let Some(child) = &self.child else { return };
        let status = ok(
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status(),
            "kill",
        );
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.thaw();
        self.stop();
    }
}

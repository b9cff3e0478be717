//! Revoke-to-refusal latency across instances (issue 8): how long after a revoke is issued do
//! two *other* running instances refuse the key?
//!
//! ```text
//! cargo build --release -p example-multi-instance -p keygate-loadbench
//! target/release/revokebench --revokes 200            # both channels, 200 revokes each
//! target/release/revokebench --channel redis --revokes 100
//! ```
//!
//! It starts two processes of `example-multi-instance` (built beside this binary) on
//! 127.0.0.1, both on one PostgreSQL and one Redis (`KEYGATE_TEST_POSTGRES_URL`,
//! `KEYGATE_TEST_REDIS_URL`), with invalidation by PostgreSQL `NOTIFY` or Redis pub/sub. This
//! process plays the operator (as the CLI would): per round it creates a key, makes both
//! instances cache it (a 200 from each), revokes it, and polls both instances back to back
//! over keep-alive HTTP until each answers 401. The latency of a round is from just before the
//! revoke call (which includes its commit) to the later of the two first refusals. Prints
//! p50 / p90 / p99 / max per channel. Everything goes to 127.0.0.1 and stops by itself.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keygate::{Invalidation, KeyAdmin, KeyFormat, Keyring, Peppers, Verifier};
use keygate_redis::RedisInvalidation;
use keygate_sqlx::PostgresStore;

type Error = Box<dyn std::error::Error + Send + Sync>;

const PEPPER: &str = "1:revokebench-pepper-not-a-secret-0123456789abcdef";
const PREFIX: &str = "kgrb";
const PORTS: [u16; 2] = [3101, 3102];

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut revokes = 200_usize;
    let mut channels = vec!["postgres", "redis"];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--revokes" => revokes = args.next().ok_or("--revokes N")?.parse()?,
            "--channel" => {
                let channel = args.next().ok_or("--channel postgres|redis")?;
                channels = match channel.as_str() {
                    "postgres" => vec!["postgres"],
                    "redis" => vec!["redis"],
                    other => return Err(format!("unknown channel {other:?}").into()),
                };
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let database_url = std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let redis_url = std::env::var("KEYGATE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let instance_bin = std::env::current_exe()?
        .parent()
        .ok_or("no directory")?
        .join("example-multi-instance");
    if !instance_bin.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p example-multi-instance",
            instance_bin.display()
        )
        .into());
    }

    println!("revoke-to-refusal, {revokes} revokes per channel, two instances on 127.0.0.1");
    println!(
        "| channel | p50 | p90 | p99 | max | mean | of which the revoke call (commit, publish), p50 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for channel in channels {
        let instances = Instances::start(&instance_bin, channel, &database_url, &redis_url)?;
        let result = run(channel, revokes, &database_url, &redis_url).await;
        drop(instances);
        let (mut samples, mut calls) = result?;
        samples.sort_unstable();
        calls.sort_unstable();
        let call_p50 = calls[calls.len() / 2];
        let pick = |q: f64| {
            let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[index.min(samples.len() - 1)]
        };
        let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len())?;
        println!(
            "| {channel} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
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

/// The two instance processes; killed on drop.
struct Instances(Vec<Child>);

impl Instances {
    fn start(
        bin: &std::path::Path,
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
) -> Result<(Vec<Duration>, Vec<Duration>), Error> {
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
        for client in &mut clients {
            let status = client.get("/hello", Some(&key))?;
            if status != 200 {
                return Err(format!("fresh key answered {status}").into());
            }
        }
        let started = Instant::now();
        admin.revoke(&created.record.id).await?;
        calls.push(started.elapsed());
        let mut refused = [None, None];
        while refused.iter().any(Option::is_none) {
            for (client, refused) in clients.iter_mut().zip(refused.iter_mut()) {
                if refused.is_none() && client.get("/hello", Some(&key))? == 401 {
                    *refused = Some(started.elapsed());
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err("a revoked key was still accepted after 10 s".into());
            }
        }
        samples.push(refused.iter().flatten().copied().max().unwrap_or_default());
        admin.delete(&created.record.id).await?;
    }
    Ok((samples, calls))
}

/// A minimal keep-alive HTTP/1.1 client for `GET`s on loopback.
struct Client {
    stream: TcpStream,
    last_body: String,
}

impl Client {
    fn connect(port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self {
            stream,
            last_body: String::new(),
        })
    }

    fn get(&mut self, path: &str, key: Option<&str>) -> Result<u16, Error> {
        let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
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

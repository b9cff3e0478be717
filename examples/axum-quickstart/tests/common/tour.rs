//! The quickstart tour, end to end, for both quickstarts (the actix-web quickstart's test
//! includes this file): see tests/tour.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use keygate::{KeyAdmin, KeyChange, KeyFormat, KeyId, Keyring, NewKey, Peppers, Verifier};
use keygate_sqlx::SqliteStore;
use keygate_sqlx::audit::EventQuery;

/// A quickstart binary running in a directory, killed if the test ends before it exits.
pub(crate) struct Quickstart {
    pub(crate) child: Child,
    /// The URL it listens on.
    pub(crate) url: String,
    /// What it printed on start, up to its last line ("Ctrl-C or SIGTERM …").
    pub(crate) tour: String,
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Quickstart {
    /// Starts the quickstart `bin` in `dir` on a free loopback port, with no KEYGATE_PEPPER or
    /// KEYGATE_PREFIX (what a newcomer runs), and reads its tour.
    pub(crate) fn start(bin: &str, dir: &Path) -> Self {
        let mut child = Command::new(bin)
            .current_dir(dir)
            .env("QUICKSTART_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .env_remove("KEYGATE_PEPPER")
            .env_remove("KEYGATE_PREFIX")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut tour = String::new();
        let mut url = None;
        while let Some(Ok(line)) = lines.next() {
            tour.push_str(&line);
            tour.push('\n');
            if let Some(rest) = line.split("listening on ").nth(1) {
                url = Some(rest.trim().to_owned());
            }
            if line.starts_with("Ctrl-C or SIGTERM") {
                break;
            }
        }
        // Drain the rest of stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let url = url.unwrap_or_else(|| panic!("no URL in:\n{tour}"));
        Self { child, url, tour }
    }
}

/// The quickstart with the demo key its tour printed.
struct Server {
    quickstart: Quickstart,
    demo_key: String,
    demo_id: String,
}

impl std::ops::Deref for Server {
    type Target = Quickstart;

    fn deref(&self) -> &Quickstart {
        &self.quickstart
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Quickstart {
        &mut self.quickstart
    }
}

fn start(bin: &str, dir: &Path) -> Server {
    let quickstart = Quickstart::start(bin, dir);
    let tour = &quickstart.tour;
    let mut lines = tour.lines();
    let (mut demo_key, mut demo_id) = (None, None);
    while let Some(line) = lines.next() {
        if line.starts_with("demo key \"") && line.ends_with("shown once:") {
            let id = line
                .split("(id ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            demo_id = Some(id.to_owned());
            demo_key = lines.next().map(|key| key.trim().to_owned());
        }
    }
    for expected in [
        "keygate create --name mine",
        "keygate revoke ID",
        "keygate audit --key ID",
        "keygate usage",
        "prefix demo_test",
    ] {
        assert!(
            tour.contains(expected),
            "the tour lacks {expected:?}:\n{tour}"
        );
    }
    let demo_key = demo_key.unwrap_or_else(|| panic!("no demo key in:\n{tour}"));
    Server {
        demo_key,
        demo_id: demo_id.unwrap(),
        quickstart,
    }
}

/// One request on a fresh connection; the status code.
pub(crate) fn get(url: &str, path: &str, key: Option<&str>) -> u16 {
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

/// The `keygate` binary beside this test's own (target/debug/keygate), if built.
pub(crate) fn cli() -> Option<PathBuf> {
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let bin = deps.parent()?.join("keygate");
    bin.is_file().then_some(bin)
}

/// `keygate ARGS` in `dir`, with no KEYGATE_* environment: what a newcomer types.
pub(crate) fn keygate(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(bin);
    command.current_dir(dir).args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYGATE_") {
            command.env_remove(name);
        }
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "keygate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Sends requests with `key` until one answers `status` (at most 5 s); returns the statuses
/// of all of them.
fn until(url: &str, key: &str, status: u16) -> Vec<u16> {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let got = get(url, "/hello", Some(key));
        seen.push(got);
        if got == status {
            return seen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no {status} within 5 s: {seen:?}"
        );
        // Slow enough that the failed-attempt limiter (20 per client) is never reached.
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// The whole path against the quickstart binary `bin`.
pub(crate) fn run(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(bin, dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cli = cli();
    if cli.is_none() {
        println!(
            "note: target/debug/keygate is not built (test this package alone?): using the library for the CLI's steps"
        );
    }

    // The demo key works; the public route needs none; no key is a 401.
    assert!(
        server
            .demo_key
            .starts_with(&format!("demo_test_{}_", server.demo_id)),
        "{} / {}",
        server.demo_key,
        server.demo_id
    );
    assert_eq!(get(&server.url, "/", None), 200);
    assert_eq!(get(&server.url, "/hello", None), 401);
    assert_eq!(get(&server.url, "/hello", Some(&server.demo_key)), 200);

    // A key of one's own, made by another process in this directory, no flags, no environment.
    let (key, id) = match &cli {
        Some(bin) => {
            let out = keygate(bin, dir.path(), &["create", "--name", "mine", "--json"]);
            let created = &json_lines(&out)[0];
            (
                created["key"].as_str().unwrap().to_owned(),
                created["id"].as_str().unwrap().to_owned(),
            )
        }
        None => runtime.block_on(async {
            let store = SqliteStore::open(dir.path().join("keygate.db"))
                .await
                .unwrap();
            let keyring =
                Keyring::new(KeyFormat::new("demo_test").unwrap(), Peppers::development());
            let verifier = Verifier::builder(keyring, store).start().await.unwrap();
            let created = verifier
                .admin()
                .create_key(NewKey::new("mine"))
                .await
                .unwrap();
            (
                created.key.expose_secret().to_owned(),
                created.record.id.to_string(),
            )
        }),
    };
    assert!(key.starts_with("demo_test_"), "{key}");

    // A scripted run: 3 allowed, then the revoke, then refusals.
    let mut sent: Vec<u16> = until(&server.url, &key, 200);
    for _ in 0..2 {
        sent.push(get(&server.url, "/hello", Some(&key)));
    }
    let revoked_at = Instant::now();
    match &cli {
        Some(bin) => {
            keygate(bin, dir.path(), &["revoke", &id]);
        }
        None => runtime.block_on(async {
            let store = SqliteStore::open(dir.path().join("keygate.db"))
                .await
                .unwrap();
            let id: KeyId = id.parse().unwrap();
            store.apply(&id, KeyChange::Revoke).await.unwrap();
        }),
    }
    sent.extend(until(&server.url, &key, 401));
    let refused_after = revoked_at.elapsed();
    assert!(
        refused_after < Duration::from_secs(1),
        "revoked, still accepted for {refused_after:?}"
    );
    for _ in 0..2 {
        sent.push(get(&server.url, "/hello", Some(&key)));
    }
    let allowed = sent.iter().filter(|s| **s == 200).count();
    let denied = sent.iter().filter(|s| **s == 401).count();
    assert_eq!(allowed + denied, sent.len(), "{sent:?}");
    assert!(allowed >= 3 && denied >= 3, "{sent:?}");

    // SIGTERM right after the last answer: the server writes what it buffered and exits 0.
    let mut server = server;
    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit after SIGTERM: {status:?}");

    // What was sent is what the store shows.
    let (events_denied, usage_allowed, usage_denied) = match &cli {
        Some(bin) => {
            let denied_events = json_lines(&keygate(
                bin,
                dir.path(),
                &["audit", "--key", &id, "--outcome", "denied", "--json"],
            ));
            assert!(
                denied_events
                    .iter()
                    .all(|e| e["reason"] == "revoked" && e["key_id"] == id.as_str()),
                "{denied_events:?}"
            );
            let usage = json_lines(&keygate(bin, dir.path(), &["usage", "--json"]));
            let mine: Vec<_> = usage
                .iter()
                .filter(|u| u["key_id"] == id.as_str())
                .collect();
            assert_eq!(mine.len(), 1, "{usage:?}");
            (
                denied_events.len(),
                mine[0]["allowed"].as_u64().unwrap(),
                mine[0]["denied"].as_u64().unwrap(),
            )
        }
        None => runtime.block_on(async {
            let store = SqliteStore::open(dir.path().join("keygate.db"))
                .await
                .unwrap();
            let id: KeyId = id.parse().unwrap();
            let sink = store.audit_sink().retention(None);
            let events = sink
                .events(&EventQuery {
                    key_id: Some(id),
                    outcome: Some(keygate::audit::Outcome::Denied),
                    ..EventQuery::default()
                })
                .await
                .unwrap();
            let usage = sink
                .usage(Some(&id), SystemTime::now() - Duration::from_secs(86_400))
                .await
                .unwrap();
            assert_eq!(usage.len(), 1, "{usage:?}");
            (events.len(), usage[0].allowed, usage[0].denied)
        }),
    };
    assert_eq!(events_denied, denied, "denied events vs {sent:?}");
    assert_eq!(usage_allowed, allowed as u64, "usage vs {sent:?}");
    assert_eq!(usage_denied, denied as u64, "usage vs {sent:?}");

    // And the last-used time, buffered until shutdown, was written.
    runtime.block_on(async {
        let store = SqliteStore::open(dir.path().join("keygate.db"))
            .await
            .unwrap();
        let record = store.get(&id.parse().unwrap()).await.unwrap();
        assert!(record.last_used_at.is_some(), "last-used time lost");
    });
}

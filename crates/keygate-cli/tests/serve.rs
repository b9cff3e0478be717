//! `keygate create --admin` and `keygate serve`: the admin API on a SQLite file, run by the
//! binary, reached over TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const PEPPER: &str = "1:cli-test-pepper-0123456789abcdefghijklmnop";

fn keygate(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
    command
        .env("KEYGATE_DATABASE_URL", url)
        .env("KEYGATE_PEPPER", PEPPER)
        .env("KEYGATE_PREFIX", "cli_test")
        .env_remove("RUST_LOG")
        .env_remove("KEYGATE_REDIS_URL")
        .stdin(Stdio::null());
    command
}

fn create(url: &str, args: &[&str]) -> Value {
    let out = keygate(url)
        .args(["create", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` (a `keygate serve`) and waits for its first line: the server (killed when
/// dropped), the address it listens on, and that line.
fn start(command: &mut Command) -> (Server, String, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = Server(child);
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split([' ', '/']).next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (server, addr, line)
}

/// One HTTP/1.1 request; the status and body.
fn http(addr: &str, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = key.map_or_else(String::new, |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_runs_the_admin_api_for_admin_keys_only() {
    let dir = common::temp_dir("serve");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let admin = create(&url, &["--name", "ops", "--admin"]);
    assert_eq!(
        admin["scopes"],
        serde_json::json!(["keygate:admin:read", "keygate:admin:write"]),
        "{admin}"
    );
    let reader = create(&url, &["--name", "auditor", "--admin", "--read-only"]);
    assert_eq!(reader["scopes"], serde_json::json!(["keygate:admin:read"]));
    let plain = create(&url, &["--name", "orders", "--scope", "orders:read"]);
    let key = |v: &Value| v["key"].as_str().unwrap().to_owned();

    let (server, addr, line) = start(keygate(&url).args(["serve", "--listen", "127.0.0.1:0"]));

    let (status, document) = http(&addr, "GET", "/openapi.json", None);
    assert_eq!(status, 200);
    assert!(document.contains("\"openapi\":\"3.1"), "{document}");
    assert!(line.contains(&format!("http://{addr}/console")), "{line}");
    // The web console loads without a key; the API it calls does not answer without one.
    let (status, page) = http(&addr, "GET", "/console", None);
    assert_eq!(status, 200);
    assert!(page.contains("keygate console"), "{page}");
    assert_eq!(http(&addr, "GET", "/keys", None).0, 401);
    assert_eq!(http(&addr, "GET", "/keys", Some(&key(&plain))).0, 403);
    let (status, body) = http(&addr, "GET", "/keys", Some(&key(&reader)));
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 3, "{listed}");
    let target = plain["id"].as_str().unwrap();
    let revoke = format!("/keys/{target}/revoke");
    assert_eq!(http(&addr, "POST", &revoke, Some(&key(&reader))).0, 403);
    let (status, body) = http(&addr, "POST", &revoke, Some(&key(&admin)));
    assert_eq!(status, 200, "{body}");
    // Ctrl-C: the server stops gracefully and writes what it still holds.
    let mut server = server;
    let stopped = Command::new("kill")
        .args(["-INT", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let exit = server.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");

    // What the API did is in the store, with the admin key as the actor.
    let out = keygate(&url)
        .args(["audit", "--key", target, "--json"])
        .output()
        .unwrap();
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let revoked = events
        .iter()
        .find(|e| e["action"] == "revoked")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(revoked["actor"], admin["id"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// `serve --redis-meter`: the admin API reads balances from the services' Redis quota meter
/// (at `--redis-url`, under `--redis-prefix`), where they count; the store holds no counter.
/// Without `--redis-url` the flag is refused.
#[tokio::test]
async fn serve_reads_balances_from_the_services_redis_meter() {
    use keygate::quota::{QuotaLine, QuotaMeter as _, QuotaSubject};
    let Ok(redis_url) = std::env::var("KEYGATE_TEST_REDIS_URL") else {
        eprintln!("KEYGATE_TEST_REDIS_URL is not set: skipping serve's Redis meter test");
        return;
    };
    let dir = common::temp_dir("serve-meter");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let admin = create(&url, &["--name", "ops", "--admin", "--read-only"]);
    let metered = create(&url, &["--name", "metered", "--quota", "credits 5"]);
    let id: keygate::KeyId = metered["id"].as_str().unwrap().parse().unwrap();
    let prefix = format!("keygate-cli-serve-meter-{}", std::process::id());
    let meter = keygate_redis::RedisQuotaMeter::builder(redis_url.as_str())
        .prefix(&prefix)
        .build()
        .await
        .unwrap();
    let line = QuotaLine::new(QuotaSubject::Key(id), "credits 5".parse().unwrap());
    assert!(
        meter
            .charge(&[line], 3, std::time::SystemTime::now())
            .await
            .unwrap()
            .allowed
    );

    let refused = keygate(&url)
        .args(["serve", "--listen", "127.0.0.1:0", "--redis-meter"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--redis-url"));

    let (_server, addr, _) = start(
        keygate(&url)
            .args(["serve", "--listen", "127.0.0.1:0", "--redis-meter"])
            .args(["--redis-url", &redis_url, "--redis-prefix", &prefix]),
    );
    let (status, body) = http(
        &addr,
        "GET",
        &format!("/keys/{id}/quota"),
        admin["key"].as_str(),
    );
    assert_eq!(status, 200, "{body}");
    let balance: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(balance["key"]["remaining"], 2, "{balance}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_refuses_a_non_loopback_address_without_the_flag() {
    let dir = common::temp_dir("serve-remote");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let out = keygate(&url)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
    assert!(
        !dir.join("keys.db").exists(),
        "refused before the store was opened"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// What the test webhook receiver got: headers and body of each request.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver on 127.0.0.1 in a thread of its own, answering 200; its URL.
fn receiver(received: Received) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/hooks",
                axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
                    let received = received.clone();
                    async move {
                        received.lock().unwrap().push((headers, body.to_vec()));
                        http::StatusCode::OK
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}/hooks")
}

#[test]
fn serve_sends_signed_expiring_soon_notices_to_the_webhook() {
    const SECRET: &str = "serve-test-webhook-secret-0123456789";
    let dir = common::temp_dir("serve-webhook");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let soon = create(&url, &["--name", "ci", "--expires-in", "2d"]);
    let later = create(&url, &["--name", "batch", "--expires-in", "30d"]);
    let received = Received::default();
    let hook = receiver(received.clone());

    // Without the secret, --webhook-url is refused before anything starts.
    let out = keygate(&url)
        .args(["serve", "--listen", "127.0.0.1:0", "--webhook-url", &hook])
        .env_remove("KEYGATE_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEYGATE_WEBHOOK_SECRET"));

    let (_server, _, line) = start(
        keygate(&url)
            .args(["serve", "--listen", "127.0.0.1:0", "--webhook-url", &hook])
            .env("KEYGATE_WEBHOOK_SECRET", SECRET),
    );
    assert!(line.contains("listening"), "{line}");

    // The sweep's first pass runs at start: one notice, for the key expiring within 7 days.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while received.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one notice: {got:?}");
    let (headers, body) = &got[0];
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    keygate_webhook::WebhookSecret::new(SECRET)
        .unwrap()
        .verify(
            &header(keygate_webhook::TIMESTAMP_HEADER),
            &header(keygate_webhook::SIGNATURE_HEADER),
            body,
            std::time::SystemTime::now(),
            keygate_webhook::DEFAULT_TOLERANCE,
        )
        .unwrap();
    let payload: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["type"], "key.expiring_soon", "{payload}");
    assert_eq!(payload["data"]["key"]["id"], soon["id"], "{payload}");
    assert_eq!(payload["id"], header(keygate_webhook::ID_HEADER).as_str());
    let text = String::from_utf8_lossy(body);
    for key in [&soon, &later] {
        assert!(
            !text.contains(key["key"].as_str().unwrap()),
            "no key in a notice"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_disables_idle_keys_audited_and_noticed() {
    const SECRET: &str = "serve-test-webhook-secret-0123456789";
    let dir = common::temp_dir("serve-idle");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let idle = create(&url, &["--name", "forgotten"]);
    let out = keygate(&url)
        .args(["policy", "set", "--max-idle", "1s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let received = Received::default();
    let hook = receiver(received.clone());
    let (_server, _, _) = start(
        keygate(&url)
            .args(["serve", "--listen", "127.0.0.1:0", "--webhook-url", &hook])
            .env("KEYGATE_WEBHOOK_SECRET", SECRET),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while received.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one notice: {got:?}");
    let payload: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(payload["type"], "key.idle_disabled", "{payload}");
    assert_eq!(payload["data"]["key"]["id"], idle["id"]);

    // Disabled in the store, audited with the sweep's actor and the reason.
    let id = idle["id"].as_str().unwrap();
    let shown = keygate(&url).args(["show", id, "--json"]).output().unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "disabled", "{shown}");
    let out = keygate(&url)
        .args(["audit", "--key", id, "--json"])
        .output()
        .unwrap();
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let disabled = events
        .iter()
        .find(|e| e["action"] == "disabled")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(disabled["actor"], "keygate-serve-idle-sweep", "{disabled}");
    assert!(
        disabled["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("idle:"),
        "{disabled}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

//! Every server of the load benchmark answers what its variant promises: a valid key gets the
//! hello world, and, on every server that authenticates (floor, floor-moka, keygate), a missing,
//! malformed, unknown or wrong key gets 401. The plain server answers 200 to all of them, which
//! also shows that the wrong keys reach the server intact.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keygate_loadbench::server::{KEY_HEADER, PATH};
use keygate_loadbench::{Auth, Variant};

/// A server process, killed when the test is done with it (or fails).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local_addr").port()
}

/// Starts `variant` with a small key set and returns it once it prints `ready`, with the keys
/// it wrote for the client.
fn start(variant: Variant, dir: &std::path::Path) -> (Server, u16, Vec<String>) {
    let port = free_port();
    let keys_file = dir.join(format!("{variant}.keys"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadbench-server"))
        .arg(variant.name())
        .args(["--port", &port.to_string(), "--keys-file"])
        .arg(&keys_file)
        .args(["--store-keys", "300", "--client-keys", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting loadbench-server");
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let server = Server(child);
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.trim() == "ready");
    assert!(ready, "{variant} exited before it was ready");
    let keys: Vec<String> = std::fs::read_to_string(&keys_file)
        .unwrap_or_else(|e| panic!("{}: {e}", keys_file.display()))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(keys.len(), 3, "{variant}: client keys");
    (server, port, keys)
}

/// One `GET /hello` on a fresh connection; the status and the body.
fn get(port: u16, key: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let header = key.map_or_else(String::new, |key| format!("{KEY_HEADER}: {key}\r\n"));
    let request = format!(
        "GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{header}\r\n"
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// `key` with its character at `index` replaced by another base62 character.
fn altered(key: &str, index: usize) -> String {
    let mut bytes = key.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'x' { b'y' } else { b'x' };
    String::from_utf8(bytes).unwrap()
}

/// Wrong keys built from two valid ones (`bench_live_{id:12}_{secret:30}{crc:6}`).
fn wrong_keys(a: &str, b: &str) -> Vec<(&'static str, String)> {
    let secret = "bench_live_".len() + 12 + 1;
    vec![
        ("garbage", "nope".to_owned()),
        ("one secret character changed", altered(a, secret + 5)),
        ("checksum changed", altered(a, a.len() - 1)),
        ("unknown id", altered(a, secret - 3)),
        ("another prefix", a.replacen("bench_live", "bench_test", 1)),
        (
            "a's id with b's secret",
            format!("{}{}", &a[..secret], &b[secret..]),
        ),
        ("truncated", a[..a.len() - 1].to_owned()),
    ]
}

#[test]
fn every_variant_answers_valid_keys_and_refuses_wrong_ones_if_it_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    for variant in Variant::ALL {
        let (_server, port, keys) = start(variant, dir.path());
        // Each key twice: the second request is a cache hit on the servers with a cache.
        for key in keys.iter().chain(&keys) {
            assert_eq!(
                get(port, Some(key)),
                (200, "hello".to_owned()),
                "{variant}: a valid key"
            );
        }
        let refused = if variant.auth == Auth::Plain {
            200
        } else {
            401
        };
        let (status, _) = get(port, None);
        assert_eq!(status, refused, "{variant}: no key");
        for (what, wrong) in wrong_keys(&keys[0], &keys[1]) {
            let (status, body) = get(port, Some(&wrong));
            assert_eq!(status, refused, "{variant}: {what}");
            if refused == 401 {
                assert!(!body.contains("hello"), "{variant}: {what}: {body}");
            }
        }
        // Still answering valid keys after the refusals.
        assert_eq!(
            get(port, Some(&keys[2])).0,
            200,
            "{variant}: after refusals"
        );
    }
}

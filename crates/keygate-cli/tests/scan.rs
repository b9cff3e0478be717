//! `keygate scan`: a key committed to a git repository and later removed is found in history,
//! reported with its id, name, owner and state, masked, with exit status 1; a revoked key is
//! reported and exits 0; a corpus of other formats' tokens and checksum-mangled tokens finds
//! nothing; `--rules` prints gitleaks and TruffleHog rules with the deployment's pattern.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::temp_dir;
use keygate::KeyFormat;
use serde_json::Value;

const PEPPER: &str = "1:cli-scan-test-pepper-0123456789abcdefghijklmnop";
const PREFIX: &str = "scan_live";

fn keygate(db: &Path, pepper: Option<&str>, dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
    command
        .current_dir(dir)
        .args(args)
        .env("KEYGATE_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("KEYGATE_PREFIX", PREFIX)
        .env_remove("KEYGATE_PEPPER")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    if let Some(pepper) = pepper {
        command.env("KEYGATE_PEPPER", pepper);
    }
    command.output().expect("run keygate")
}

fn create(db: &Path, dir: &Path, name: &str) -> (String, String) {
    let out = keygate(
        db,
        Some(PEPPER),
        dir,
        &["create", "--name", name, "--owner", "team-scan", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        created["key"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `key` with its secret replaced and a valid checksum: a token that borrows a key's id.
fn borrowing_id(key: &str) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // {prefix}_{id}_{30-character secret}{6-character CRC32 of everything before it}
    let head = &key[..key.len() - 36];
    let mut token = format!("{head}{}", "Z".repeat(30));
    let mut crc = crc32fast::hash(token.as_bytes());
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    token.push_str(std::str::from_utf8(&digits).unwrap());
    token
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_key_removed_from_a_repository_is_found_in_its_history_masked() {
    let dir = temp_dir("scan-git");
    let db = dir.join("keys.db");
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let (leaked, id) = create(&db, &dir, "leaked");
    let (revoked_key, revoked_id) = create(&db, &dir, "old");
    let out = keygate(&db, None, &dir, &["revoke", &revoked_id]);
    assert!(out.status.success());

    git(&repo, &["init", "-q"]);
    std::fs::write(
        repo.join("config.env"),
        format!("# settings\nAPI_KEY={leaked}\nOLD_KEY={revoked_key}\n"),
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "add config"]);
    std::fs::write(repo.join("config.env"), "# settings\nAPI_KEY=${API_KEY}\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "take the keys out"]);

    // The work tree is clean now: only the history holds the keys.
    let out = keygate(&db, Some(PEPPER), &dir, &["scan", "repo"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let out = keygate(&db, Some(PEPPER), &dir, &["scan", "--git", "repo"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for secret in [&leaked, &revoked_key] {
        let tail = &secret[secret.len() - 37..];
        assert!(
            !stdout.contains(tail) && !stderr.contains(tail),
            "a secret was printed"
        );
    }
    assert!(
        stdout.contains(&format!("config.env:2 (history): {PREFIX}_{id}_…")),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"leaked\", owner team-scan: ACTIVE"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"old\", owner team-scan: REVOKED"),
        "{stdout}"
    );
    assert!(stderr.contains("1 active key found"), "{stderr}");

    // A file names its repository too.
    let out = keygate(
        &db,
        Some(PEPPER),
        &dir,
        &["scan", "--git", "repo/config.env"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("config.env:2 (history)"));

    let out = keygate(
        &db,
        Some(PEPPER),
        &dir,
        &["scan", "--git", "repo", "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let finds = lines(&out);
    assert_eq!(finds.len(), 2, "{finds:?}");
    let find = finds.iter().find(|f| f["id"] == id.as_str()).unwrap();
    assert_eq!(find["path"], "config.env");
    assert_eq!(find["line"], 2);
    assert_eq!(find["state"], "active");
    assert_eq!(find["match"], "verified");
    assert_eq!(find["owner"], "team-scan");
    assert_eq!(find["commit"].as_str().unwrap().len(), 40);

    // A token with the leaked key's id and another secret (valid checksum) is not that key.
    std::fs::write(
        repo.join("borrowed.txt"),
        format!("{}\n", borrowing_id(&leaked)),
    )
    .unwrap();
    let out = keygate(&db, Some(PEPPER), &dir, &["scan", "repo/borrowed.txt"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "the id of key {id} \"leaked\", with another secret: not this key"
        )),
        "{stdout}"
    );
    let out = keygate(
        &db,
        Some(PEPPER),
        &dir,
        &["scan", "repo/borrowed.txt", "--json"],
    );
    let finds = lines(&out);
    assert_eq!(finds[0]["match"], "wrong_secret", "{finds:?}");
    assert_eq!(finds[0]["state"], Value::Null);
    std::fs::remove_file(repo.join("borrowed.txt")).unwrap();

    // Without the pepper: still found, the secret unchecked.
    let out = keygate(&db, None, &dir, &["scan", "--git", "repo", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(lines(&out).iter().all(|f| f["match"] == "unverified"));

    // A canary found is reported as one and does not fail the scan: it is planted to be found.
    let out = keygate(
        &db,
        Some(PEPPER),
        &dir,
        &["create", "--name", "bait", "--canary", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let canary: Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::write(
        dir.join("bait.env"),
        format!("{}\n", canary["key"].as_str().unwrap()),
    )
    .unwrap();
    let out = keygate(&db, Some(PEPPER), &dir, &["scan", "bait.env"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("ACTIVE (a canary"), "{stdout}");
    let out = keygate(&db, Some(PEPPER), &dir, &["scan", "bait.env", "--json"]);
    assert_eq!(lines(&out)[0]["canary"], true);

    // Once revoked, a find is reported and no longer fails the scan.
    assert!(keygate(&db, None, &dir, &["revoke", &id]).status.success());
    let out = keygate(&db, Some(PEPPER), &dir, &["scan", "--git", "repo"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"leaked\", owner team-scan: REVOKED"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn other_formats_made_up_and_mangled_tokens_are_not_reported() {
    let dir = temp_dir("scan-corpus");
    let db = dir.join("keys.db");
    let (key, _) = create(&db, &dir, "real");
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(corpus.join("nested")).unwrap();
    let mut text = String::new();
    for prefix in ["other_live", "scan_test", "scan", "sk_live", "ghp"] {
        let (_, other) = KeyFormat::new(prefix).unwrap().generate();
        text.push_str(other.expose_secret());
        text.push('\n');
    }
    // This deployment's prefix with a made-up id and secret (bad checksum), and the real key
    // with one character changed, and glued into a longer word.
    text.push_str(&format!(
        "{PREFIX}_AAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
    ));
    let mut mangled = key.clone().into_bytes();
    mangled[PREFIX.len() + 3] ^= 0x01;
    text.push_str(&String::from_utf8(mangled).unwrap());
    text.push('\n');
    text.push_str(&format!("x{key}y\n"));
    std::fs::write(corpus.join("nested/tokens.txt"), &text).unwrap();
    std::fs::write(corpus.join("binary.bin"), [0_u8, 159, 146, 150, 0, 1]).unwrap();

    let out = keygate(&db, Some(PEPPER), &dir, &["scan", "corpus"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 keys of this deployment found"));

    // The same file with the key on a line of its own is found, on that line.
    std::fs::write(
        corpus.join("nested/tokens.txt"),
        format!("{text}token: {key}\n"),
    )
    .unwrap();
    let out = keygate(&db, Some(PEPPER), &dir, &["scan", "corpus", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let finds = lines(&out);
    assert_eq!(finds.len(), 1, "{finds:?}");
    assert_eq!(finds[0]["line"], 9);

    // Files over 64 MiB are skipped with a note; up to 64 MiB they are read (sparse files:
    // the key, then zeros).
    let big = dir.join("big");
    std::fs::create_dir_all(&big).unwrap();
    for (name, len) in [("2mib", 2 << 20), ("64mib", 64 << 20), ("65mib", 65 << 20)] {
        let path = big.join(name);
        std::fs::write(&path, format!("{key}\n")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }
    let out = keygate(&db, Some(PEPPER), &dir, &["scan", "big", "--json"]);
    let found: Vec<Value> = lines(&out).iter().map(|f| f["path"].clone()).collect();
    assert_eq!(found, ["big/2mib", "big/64mib"], "{found:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("skipped big/65mib (larger than 64 MiB)")
    );

    // --git outside a repository is an error, not a clean scan.
    let out = keygate(&db, Some(PEPPER), &dir, &["scan", "--git", "corpus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in a git repository"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rules_for_gitleaks_and_trufflehog_use_the_deployment_pattern() {
    let dir = temp_dir("scan-rules");
    let db = dir.join("keys.db");
    create(&db, &dir, "any");
    let pattern = KeyFormat::new(PREFIX).unwrap().scanner_regex();
    let out = keygate(&db, None, &dir, &["scan", "--rules", "gitleaks"]);
    assert!(out.status.success());
    let gitleaks = String::from_utf8_lossy(&out.stdout);
    assert!(
        gitleaks.contains(&format!("regex = '''{pattern}'''")),
        "{gitleaks}"
    );
    assert!(gitleaks.contains(&format!("keywords = [\"{PREFIX}_\"]")));
    let out = keygate(&db, None, &dir, &["scan", "--rules", "trufflehog"]);
    assert!(out.status.success());
    let trufflehog = String::from_utf8_lossy(&out.stdout);
    assert!(
        trufflehog.contains(&format!("key: '{pattern}'")),
        "{trufflehog}"
    );
    // A prefix other than the store's is refused (exit 6), as `create` refuses it.
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .current_dir(&dir)
        .args(["scan", "."])
        .env("KEYGATE_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("KEYGATE_PREFIX", "other_live")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`scan_live`"));
    // Scanning needs a store; rules only a prefix. A scan with no store creates none.
    let none = dir.join("none.db");
    let out = keygate(&none, None, &dir, &["scan", "."]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!none.exists(), "a scan created a key store");
    let _ = std::fs::remove_dir_all(dir);
}

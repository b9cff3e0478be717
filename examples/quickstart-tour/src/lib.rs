//! What the axum and actix-web quickstarts share, so each `main.rs` shows only the keygate
//! wiring: their demo key, the tour they print (the next commands to try), and shutdown on
//! Ctrl-C or SIGTERM.
//!
//! Both quickstarts keep their keys in `./keygate.db` with the prefix `demo_test` and the
//! public development pepper: started in one directory they share the file (and its change
//! feed), each with a demo key of its own, and a key made with `keygate create` there works on
//! both.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use keygate::store::{KeyFilter, PageRequest};
use keygate::{KeyAdmin, KeyId, KeyState, NewKey, Verifier};

/// The SQLite file, in the working directory.
pub const DATABASE: &str = "keygate.db";
/// The demo deployment's key prefix.
pub const PREFIX: &str = "demo_test";
/// The environment variable that overrides the listening address (`127.0.0.1:0` picks a free
/// port; the address is printed).
pub const LISTEN_ENV: &str = "QUICKSTART_LISTEN";
const DEMO_OWNER: &str = "examples";
const DEMO_SCOPE: &str = "greetings:read";

/// The address to listen on: `$QUICKSTART_LISTEN`, else `default`.
#[must_use]
pub fn listen_addr(default: &str) -> String {
    std::env::var(LISTEN_ENV).unwrap_or_else(|_| default.to_owned())
}

/// A quickstart's demo key.
#[derive(Debug)]
pub struct Demo {
    /// Its name, e.g. "axum quickstart demo".
    pub name: String,
    /// Its public id.
    pub id: KeyId,
    /// The key itself, when it was created by this start (it is never stored, so a key made
    /// by an earlier start cannot be shown again).
    pub key: Option<String>,
}

/// The active demo key named `name` made by an earlier start, or a new one (scope
/// `greetings:read`).
///
/// # Errors
/// The store's error.
pub async fn demo_key(admin: &keygate::Admin, name: &str) -> Result<Demo, keygate::StoreError> {
    let filter = KeyFilter::default()
        .owner(DEMO_OWNER)
        .state(KeyState::Active)
        .name_contains(name);
    let page = admin.list(&filter, PageRequest::first(100)).await?;
    if let Some(stored) = page.keys.into_iter().find(|key| key.name == name) {
        return Ok(Demo {
            name: stored.name,
            id: stored.id,
            key: None,
        });
    }
    let spec = NewKey::new(name)
        .owner(DEMO_OWNER)
        .scope(DEMO_SCOPE)
        .map_err(|e| keygate::StoreError::unavailable(e.to_string()))?;
    let created = admin.create_key(spec).await?;
    Ok(Demo {
        name: created.record.name.clone(),
        id: created.record.id,
        key: Some(created.key.expose_secret().to_owned()),
    })
}

/// What a quickstart prints once it listens on `url`: where its keys are, its demo key (once),
/// and the next commands to try, with the CLI, in this directory; with `console` (the web
/// console's URL, when the quickstart mounts the admin API), how to mint an admin key and
/// open it.
#[must_use]
pub fn tour(
    framework: &str,
    other: &str,
    url: &str,
    demo: &Demo,
    verifier: &Verifier,
    console: Option<&str>,
) -> String {
    let mut out = String::new();
    let bound = verifier.revocation_bound();
    let _ = writeln!(
        out,
        "keygate quickstart ({framework}) listening on {url}\n\
         keys in ./{DATABASE}: prefix {PREFIX}, the public development pepper (keys made with it \
         protect nothing); the {other} quickstart shares the file when started in this directory\n\
         a key changed with the keygate CLI is refused here within {bound:?} (its revocation \
         bound)\n"
    );
    match &demo.key {
        Some(key) => {
            // Printed once, here, on its own line; never stored in clear.
            let _ = writeln!(
                out,
                "demo key \"{}\" (id {}, scope {DEMO_SCOPE}), shown once:\n{key}\n  \
                 curl -i -H 'Authorization: Bearer {key}' {url}/hello\n",
                demo.name, demo.id
            );
        }
        None => {
            let _ = writeln!(
                out,
                "demo key \"{}\" (id {}): made at an earlier start, whose output showed it; only \
                 its digest is stored, so it cannot be shown again (make your own below)\n",
                demo.name, demo.id
            );
        }
    }
    let _ = writeln!(out, "Next, in another terminal, in this directory:");
    if !on_path("keygate") {
        let _ = writeln!(
            out,
            "  cargo install --path {}   # once: the keygate command",
            cli_crate().display()
        );
    }
    let _ = writeln!(
        out,
        "  keygate create --name mine      # a key of your own, shown once, and its ID\n  \
         curl -i -H 'Authorization: Bearer KEY' {url}/hello   # with that KEY: 200\n  \
         keygate revoke ID               # then the same curl answers 401 (revoked)\n  \
         keygate audit --key ID          # every request made with it, allowed and denied\n  \
         keygate usage                   # requests per key per day"
    );
    if let Some(console) = console {
        let _ = writeln!(
            out,
            "  keygate create --admin --name ops   # an admin key, shown once: for the web console\n  \
             web console: {console}   (in a browser; sign in with that admin key)"
        );
    }
    let _ = writeln!(
        out,
        "Ctrl-C or SIGTERM stops the server, after writing the audit events and last-used times \
         still buffered."
    );
    out
}

/// Whether `command` is an executable file in a directory of `$PATH`.
fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
}

/// The CLI's crate in this checkout, absolute when it can be found.
fn cli_crate() -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/keygate-cli");
    beside
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("crates/keygate-cli"))
}

/// Resolves on Ctrl-C or SIGTERM (what systemd, containers and Kubernetes send), whichever
/// comes first.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Writes what the verifier still buffers (last-used times, audit events) and says so: call
/// it after the server stopped.
///
/// # Errors
/// The store's error when the last-used times cannot be written.
pub async fn flush(verifier: &Verifier) -> Result<(), keygate::StoreError> {
    let keys = verifier.flush_last_used().await?;
    if let Err(error) = verifier.flush_quota().await {
        eprintln!("stopped: quota counters not saved: {error}");
    }
    let audit = verifier.flush_audit().await;
    eprintln!(
        "stopped: wrote the last-used times of {keys} key(s); audit events written {}, dropped {}, lost {}",
        audit.written, audit.dropped, audit.lost
    );
    Ok(())
}

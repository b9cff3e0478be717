//! One server of the HTTP load benchmark, for running by hand (the `loadbench` orchestrator runs
//! the same code as `loadbench serve …`).
//!
//! ```text
//! cargo run --release -p keygate-loadbench --bin loadbench-server -- \
//!     axum-keygate --port 18080 --keys-file /tmp/keys.txt
//! ```
//!
//! Variants: `axum-plain`, `axum-floor`, `axum-floor-moka`, `axum-keygate`, `actix-plain`,
//! `actix-floor`, `actix-floor-moka`, `actix-keygate`. Optional flags: `--store-keys N` (100000;
//! keygate's store, the floors' map), `--client-keys N` (1000), `--cache-ttl-secs N` (3600;
//! keygate's cache, the floor's moka cache); keygate only: `--rate-limit POLICY`,
//! `--audit sqlite|sqlite-usage` (the audit trail in a SQLite file beside the keys file),
//! `--audit-core N` (the audit writer's thread pinned to core N).
//! Prints `ready` when it listens; stops on SIGTERM.

use keygate_loadbench::server::{ServerConfig, run};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = ServerConfig::from_args(&args).unwrap_or_else(|e| {
        eprintln!("loadbench-server: {e}");
        std::process::exit(2);
    });
    if let Err(e) = run(&config) {
        eprintln!("loadbench-server {}: {e}", config.variant);
        std::process::exit(1);
    }
}

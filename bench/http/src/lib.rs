//! keygate's HTTP load benchmark: the servers it measures.
//!
//! The `loadbench` binary (the orchestrator) starts [`server`]s — axum and actix-web hello worlds,
//! each without authentication, behind the hand-written [`floor`] (with and without a moka cache)
//! and behind keygate — pinned to one core, and drives them from the other core with
//! `wrk` (throughput, latency, user-CPU per request) and with sequential keep-alive requests under
//! `valgrind --tool=callgrind` (instructions per request). How to run it and the figures: `docs/benchmarks.md`, section "HTTP load benchmark".

pub mod axum_floor;
pub mod floor;
pub mod server;
pub mod variant;

pub use variant::{Auth, Framework, Variant};

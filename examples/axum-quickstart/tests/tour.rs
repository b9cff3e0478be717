//! The newcomer's path, run for real: the axum quickstart binary started in an empty directory,
//! a key made there with `keygate create` (no flags, no environment) accepted, a scripted run
//! of requests, `keygate revoke` refused within a second, SIGTERM, and then `keygate audit` and
//! `keygate usage` in that directory showing exactly what was sent.
//!
//! The `keygate` binary is the one `cargo test --workspace` builds beside this test
//! (target/debug/keygate). When it is missing (this package tested alone), the same steps run
//! through the library instead, with a note.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(missing_docs)]

mod common;

#[test]
fn the_tour_works_end_to_end_and_sigterm_loses_nothing() {
    common::tour::run(env!("CARGO_BIN_EXE_example-axum-quickstart"));
}

//! The newcomer's path, run for real on the actix-web quickstart binary: the same steps as the
//! axum quickstart's (examples/axum-quickstart/tests/common/tour.rs), so both quickstarts
//! behave alike.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(missing_docs)]

#[path = "../../axum-quickstart/tests/common/tour.rs"]
mod tour;

#[test]
fn the_tour_works_end_to_end_and_sigterm_loses_nothing() {
    tour::run(env!("CARGO_BIN_EXE_example-actix-quickstart"));
}

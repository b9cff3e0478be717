//! libFuzzer entry for the `tower_service` target; the work and its invariants are in
//! `keygate_fuzz::tower_service`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::tower_service::run(data));

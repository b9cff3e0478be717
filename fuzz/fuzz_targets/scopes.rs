//! libFuzzer entry for the `scopes` target; the work and its invariants are in
//! `keygate_fuzz::scopes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::scopes::run(data));

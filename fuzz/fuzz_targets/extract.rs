//! libFuzzer entry for the `extract` target; the work and its invariants are in
//! `keygate_fuzz::extract`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::extract::run(data));

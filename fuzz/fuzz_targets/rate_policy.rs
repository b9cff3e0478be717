//! libFuzzer entry for the `rate_policy` target; the work and its invariants are in
//! `keygate_fuzz::rate_policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::rate_policy::run(data));

//! libFuzzer entry for the `peppers` target; the work and its invariants are in
//! `keygate_fuzz::peppers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::peppers::run(data));

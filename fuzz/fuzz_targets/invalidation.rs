//! libFuzzer entry for the `invalidation` target; the work and its invariants are in
//! `keygate_fuzz::invalidation`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::invalidation::run(data));

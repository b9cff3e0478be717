//! libFuzzer entry for the `redis_reply` target; the work and its invariants are in
//! `keygate_fuzz::redis_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::redis_reply::run(data));

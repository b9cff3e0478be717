//! libFuzzer entry for the `key_parse` target; the work and its invariants are in
//! `keygate_fuzz::key_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::key_parse::run(data));

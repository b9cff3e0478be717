//! libFuzzer entry for the `sql_row` target; the work and its invariants are in
//! `keygate_fuzz::sql_row`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::sql_row::run(data));

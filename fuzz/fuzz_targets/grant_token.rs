#![no_main]
//! cargo-fuzz target: `approvals_reliability::fuzz::grant_token` (see its docs for the input format).

libfuzzer_sys::fuzz_target!(|data: &[u8]| approvals_reliability::fuzz::grant_token(data));

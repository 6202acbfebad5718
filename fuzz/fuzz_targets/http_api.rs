#![no_main]
//! cargo-fuzz target: `approvals_reliability::fuzz::http_api` (see its docs for the input format).

libfuzzer_sys::fuzz_target!(|data: &[u8]| approvals_reliability::fuzz::http_api(data));

#![no_main]
//! cargo-fuzz target: `approvals_reliability::fuzz::policy` (see its docs for the input format).

libfuzzer_sys::fuzz_target!(|data: &[u8]| approvals_reliability::fuzz::policy(data));

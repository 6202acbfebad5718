#![no_main]
//! cargo-fuzz target: `approvals_reliability::fuzz::audit_log` (see its docs for the input format).

libfuzzer_sys::fuzz_target!(|data: &[u8]| approvals_reliability::fuzz::audit_log(data));

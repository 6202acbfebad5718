//! Shared helpers for the reliability and adversarial suite under `tests/`.
//!
//! The suite proves the product's promise under stress: nothing runs without a recorded human
//! approval, and nothing is lost. See SECURITY.md for the threats each test defends against.
#![warn(missing_docs)]

pub mod crash;
pub mod fuzz;
pub mod load;

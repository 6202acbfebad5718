//! Conformance suites for stores and approvers, and test helpers.
//!
//! [`faults`] wraps a store, an audit sink or an approver so chosen calls fail, hang or lose
//! their answer, for fault-injection tests.
//!
//! [`hostile`] holds the hostile text every review surface's tests run: records whose every
//! untrusted field holds it, and the check that a surface neutralised it visibly.
//!
//! [`store_suite`] is one behaviour suite that every [`Store`](approvals_core::Store)
//! implementation must pass: the in-memory store runs it from this crate's tests, and
//! `approvals-store-sql` runs it against SQLite and a real PostgreSQL server.
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use approvals_core::{MemoryStore, Store};
//!
//! approvals_testkit::store_suite::run_all(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> })
//!     .await;
//! # }
//! ```
#![warn(missing_docs)]

pub mod approver_suite;
pub mod faults;
pub mod fixtures;
pub mod hostile;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod store_suite;

//! Conformance suites for stores and approvers, and test helpers.

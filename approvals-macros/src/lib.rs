//! The `#[requires_approval]` attribute (see approvals-core).

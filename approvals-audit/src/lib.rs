//! Tamper-evident audit log: Merkle-hashed entries, signed checkpoints, verification, SIEM export and evidence reports.

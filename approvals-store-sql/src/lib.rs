//! Durable approval store and audit sink on SQLite (embedded default) and PostgreSQL.

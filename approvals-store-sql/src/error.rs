//! Errors from connecting, migrating and auditing, and their mapping to the core's
//! [`StoreError`].

use approvals_core::StoreError;

use crate::Backend;

/// A SQL store or audit table operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The URL's scheme names no supported database.
    #[error(
        "unsupported database URL scheme {scheme:?}: use sqlite://path/to/file.db, sqlite::memory: or postgres://user@host/db"
    )]
    UnsupportedUrl {
        /// The scheme found.
        scheme: String,
    },
    /// The URL names a backend this build does not include.
    #[error(
        "this build has no {backend:?} support: enable the `{feature}` feature of approvals-store-sql"
    )]
    FeatureDisabled {
        /// The backend asked for.
        backend: Backend,
        /// The feature that adds it.
        feature: &'static str,
    },
    /// An option is invalid.
    #[error("invalid SQL store option: {0}")]
    InvalidOption(String),
    /// The database could not be reached, timed out, or was busy; retrying later may work.
    #[error("database unavailable: {0}; check that it is running and reachable, then retry")]
    Unavailable(String),
    /// Applying the embedded migrations failed.
    #[error("applying migrations failed: {0}")]
    Migrate(String),
    /// Stored data could not be read back.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

impl SqlError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SqlError::Unavailable(_))
    }

    /// The same error again, for each of the callers one failure answers (a batch's
    /// writers). Unavailable and corrupt keep their kind and message; any other becomes a
    /// database error with its text.
    pub(crate) fn copy(&self) -> SqlError {
        match self {
            SqlError::Unavailable(m) => SqlError::Unavailable(m.clone()),
            SqlError::Corrupt(m) => SqlError::Corrupt(m.clone()),
            other => SqlError::Database(other.to_string()),
        }
    }

    /// Classifies a driver error; `what` says what was being done.
    pub(crate) fn from_sqlx(what: &str, e: sqlx::Error) -> SqlError {
        if is_unavailable(&e) {
            return SqlError::Unavailable(format!("{what}: {e}"));
        }
        match e {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                SqlError::Corrupt(format!("{what}: {e}"))
            }
            sqlx::Error::Migrate(m) => SqlError::Migrate(m.to_string()),
            other => SqlError::Database(format!("{what}: {other}")),
        }
    }
}

impl From<SqlError> for StoreError {
    fn from(e: SqlError) -> StoreError {
        match e {
            SqlError::Unavailable(m) => StoreError::Unavailable(m),
            SqlError::Corrupt(m) => StoreError::Corrupt(m),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// Maps a driver error to a core store error; `what` says what was being done.
pub(crate) fn store_error(what: &str, e: sqlx::Error) -> StoreError {
    SqlError::from_sqlx(what, e).into()
}

/// Whether the error means "cannot reach or use the database right now".
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: BUSY (5) and LOCKED (6), with their extended codes (low byte).
            let sqlite_busy = code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
            // PostgreSQL: connection exceptions (08), insufficient resources (53), operator
            // intervention such as shutdown (57), serialization failure and deadlock (40).
            let pg_transient = code.len() == 5
                && (code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code.starts_with("40"));
            sqlite_busy || pg_transient
        }
        _ => false,
    }
}

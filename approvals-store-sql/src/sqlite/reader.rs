//! Point reads, a request by its id or by its idempotency key, on `rusqlite` connections of
//! their own, run on the calling thread.
//!
//! Every waiting agent, every decision and every execution reads its request before it writes,
//! so these two reads are on every lifecycle's path. Through sqlx's pool each one is a hand-off
//! to the connection's worker thread and back, which costs more than the read: in WAL mode a
//! reader never waits for the writer, and a lookup by a unique index is a few microseconds on
//! pages the operating system has cached. Listings and audit reads, which return many rows,
//! stay on the pool.
//!
//! Connections are opened on first use and kept (up to [`MAX_IDLE`]) for the next read. After
//! [`Readers::close`] every read is refused as `Unavailable`, as the pool's are.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use approvals_core::{RequestId, RequestRecord, StoreError};
use rusqlite::{Connection, OptionalExtension};

use super::writer::{open_connection, sql_error};
use crate::error::SqlError;
use crate::lifecycle;

/// Idle connections kept for later reads; more are opened when more reads run at once, and
/// closed after.
const MAX_IDLE: usize = 8;

pub(super) struct Readers {
    path: PathBuf,
    read_only: bool,
    busy_timeout: Duration,
    /// Idle connections, or `None` once the store is closed.
    idle: Mutex<Option<Vec<Connection>>>,
}

impl Readers {
    pub(super) fn new(path: PathBuf, read_only: bool, busy_timeout: Duration) -> Self {
        Readers {
            path,
            read_only,
            busy_timeout,
            idle: Mutex::new(Some(Vec::new())),
        }
    }

    /// Refuses every later read and closes the idle connections.
    pub(super) fn close(&self) {
        *self.lock() = None;
    }

    /// The request `id`.
    pub(super) fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        let id = id.to_string();
        let what = format!("reading request {id}");
        let row = self.read(&what, |conn| {
            conn.prepare_cached("SELECT version, record FROM approval_requests WHERE id = ?1")?
                .query_row([&id], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .optional()
        })?;
        row.map(|(version, json)| lifecycle::decode(&id, version, &json))
            .transpose()
    }

    /// The request holding idempotency key `key`.
    pub(super) fn get_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.read("reading a request by idempotency key", |conn| {
            by_idempotency_key(conn, key)
        })?
        .transpose()
    }

    /// Runs `query` on an idle connection, or a new one, and keeps the connection after.
    fn read<T>(
        &self,
        what: &str,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let idle = self.lock().as_mut().ok_or_else(closed)?.pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open().map_err(StoreError::from)?,
        };
        let result = query(&conn).map_err(|e| StoreError::from(sql_error(what, e)));
        if let Some(idle) = self.lock().as_mut()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
        result
    }

    fn open(&self) -> Result<Connection, SqlError> {
        let what = format!("opening {} for reading", self.path.display());
        // Read-write like the pool's connections unless the store is read-only (a reader
        // that is the last to close checkpoints the WAL, which a read-only one cannot), and
        // made to refuse writes: a write here would bypass the writer thread.
        let conn = open_connection(&self.path, self.read_only, self.busy_timeout, &what)?;
        conn.pragma_update(None, "query_only", "ON")
            .map_err(|e| sql_error(&what, e))?;
        Ok(conn)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Connection>>> {
        // A panic while holding the lock leaves at worst a connection fewer.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The request holding idempotency key `key`, read on `conn`: a reader's connection, or the
/// writer's inside its batch (an insert that found the key taken answers with that request).
/// The outer error is the read's; the inner one the stored record's.
pub(super) fn by_idempotency_key(
    conn: &Connection,
    key: &str,
) -> rusqlite::Result<Option<Result<RequestRecord, StoreError>>> {
    let row = conn
        .prepare_cached(
            "SELECT id, version, record FROM approval_requests WHERE idempotency_key = ?1",
        )?
        .query_row([key], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    Ok(row.map(|(id, version, json)| lifecycle::decode(&id, version, &json)))
}

fn closed() -> StoreError {
    StoreError::Unavailable("the SQLite store was closed".into())
}

//! Audit logs kept in a database table (by `approvals-store-sql`): verified, proven and
//! exported with the same checks and messages as log files.
//!
//! # Table format
//!
//! The table [`TABLE`] holds one log line per row, in the order of the log file format
//! ([`crate::log`]):
//!
//! | column       | content                                                              |
//! |--------------|----------------------------------------------------------------------|
//! | `line_no`    | the line's number in the log: 1, 2, 3, ... without gaps (primary key) |
//! | `seq`        | the entry's `seq` for entry lines, `NULL` for checkpoint lines        |
//! | `at`         | the event's time (entries) or the signing time (checkpoints)          |
//! | `request_id` | the event's `request_id`, for queries (`NULL` on checkpoints)        |
//! | `event`      | the event's name (`event` field), for queries (`NULL` on checkpoints) |
//! | `line`       | the line exactly as a log file holds it, without the newline          |
//!
//! Verification reads `line` in `line_no` order through the file verifier, so "line N" in a
//! report is the row whose `line_no` is N (rows deleted or renumbered by hand included). It
//! also checks that `seq`, `request_id` and `event` agree with the line, because queries such
//! as "every event about this request" trust those columns.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use approvals_audit::log::LogVerifier;
//! use approvals_audit::log::db::LogDb;
//! use approvals_audit::note::Verifier;
//!
//! let db = LogDb::connect("sqlite://approvals.db", None).await?;
//! let report = db.verify(&LogVerifier::new(Verifier::from_file("audit.vkeys")?)).await?;
//! assert!(report.is_ok(), "{report}");
//! # Ok(()) }
//! ```

use std::io::Write;

#[cfg(feature = "postgres")]
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
#[cfg(feature = "sqlite")]
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::LogError;
use super::format::{Line, parse_line};
use super::proof::InclusionProof;
use super::verify::{
    DefaultWitness, LogVerifier, Problem, ProblemKind, Scanner, VerifyReport, Warning,
};
use crate::merkle::{self, Hash, leaf_hash};
use crate::note::{Checkpoint, unverified_text};

/// The table holding the log.
pub const TABLE: &str = "approval_audit_log";

/// The table holding the log's witness: one row (`id` 1) with the latest signed checkpoint
/// note (`note`), its tree size (`size`) and when it was written (`updated_at`), replaced by
/// the writer in the same transaction as the checkpoint row it copies, only forward.
pub const WITNESS_TABLE: &str = "approval_audit_witness";

/// Rows read per query.
const PAGE: i64 = 1000;

/// A database holding an audit log table. Cheap to clone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LogDb {
    /// An SQLite database.
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool),
    /// A PostgreSQL database; the pool's `search_path` selects the schema.
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
}

/// One row of the log table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRow {
    /// The line's number in the log, from 1.
    pub line_no: i64,
    /// The entry's `seq`; `None` for a checkpoint.
    pub seq: Option<i64>,
    /// The `request_id` column.
    pub request_id: Option<String>,
    /// The `event` column.
    pub event: Option<String>,
    /// The log line.
    pub line: String,
}

fn db_error(what: &str) -> impl FnOnce(sqlx::Error) -> LogError + '_ {
    move |e| LogError::Io {
        context: what.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

#[cfg(feature = "postgres")]
fn check_schema(schema: &str) -> Result<(), LogError> {
    let ok = !schema.is_empty()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(LogError::Invalid(format!(
            "schema {schema:?}: use lowercase letters, digits and _"
        )))
    }
}

impl LogDb {
    /// Opens the database at `url` for reading: `sqlite://path/to/file.db` (never created;
    /// opened read-only) or `postgres://user@host/db` with the tables in `schema` (default:
    /// the server's `search_path`). Fails if the database has no audit log table.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, LogError> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let db = match scheme.as_str() {
            #[cfg(feature = "sqlite")]
            "sqlite" => {
                use std::str::FromStr;
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|e| LogError::Invalid(format!("database URL {url}: {e}")))?
                    .read_only(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .map_err(db_error(&format!("opening {url} (does the file exist?)")))?;
                LogDb::Sqlite(pool)
            }
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => {
                use std::str::FromStr;
                let mut options = PgConnectOptions::from_str(url)
                    .map_err(|e| LogError::Invalid(format!("database URL: {e}")))?;
                if let Some(schema) = schema {
                    check_schema(schema)?;
                    options = options.options([("search_path", schema)]);
                }
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .map_err(db_error("connecting to PostgreSQL"))?;
                LogDb::Postgres(pool)
            }
            other => {
                return Err(LogError::Invalid(format!(
                    "cannot read a database with URL scheme {other:?}: use sqlite://path/to/file.db \
                     or postgres://user@host/db (this build reads: {})",
                    supported()
                )));
            }
        };
        let _ = schema;
        db.rows(0, 1).await.map_err(|e| {
            LogError::Invalid(format!(
                "the database has no readable audit log table {TABLE} ({e}); check the URL and \
                 schema, and connect an approvals-store-sql store once to migrate an older database"
            ))
        })?;
        Ok(db)
    }

    /// Up to `limit` rows after `after_line_no` (0 for the start), in order.
    pub async fn rows(&self, after_line_no: i64, limit: i64) -> Result<Vec<DbRow>, LogError> {
        use sqlx::Row;
        let what = "reading the audit log table";
        let rows = match self {
            #[cfg(feature = "sqlite")]
            LogDb::Sqlite(pool) => sqlx::query(
                "SELECT line_no, seq, request_id, event, line FROM approval_audit_log
                  WHERE line_no > ?1 ORDER BY line_no LIMIT ?2",
            )
            .bind(after_line_no)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db_error(what))?
            .iter()
            .map(|r| {
                Ok(DbRow {
                    line_no: r.try_get("line_no")?,
                    seq: r.try_get("seq")?,
                    request_id: r.try_get("request_id")?,
                    event: r.try_get("event")?,
                    line: r.try_get("line")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>(),
            #[cfg(feature = "postgres")]
            LogDb::Postgres(pool) => sqlx::query(
                "SELECT line_no, seq, request_id, event, line FROM approval_audit_log
                  WHERE line_no > $1 ORDER BY line_no LIMIT $2",
            )
            .bind(after_line_no)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db_error(what))?
            .iter()
            .map(|r| {
                Ok(DbRow {
                    line_no: r.try_get("line_no")?,
                    seq: r.try_get("seq")?,
                    request_id: r.try_get("request_id")?,
                    event: r.try_get("event")?,
                    line: r.try_get("line")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>(),
        };
        rows.map_err(db_error(what))
    }

    /// Calls `f` with every row, in order, a page at a time.
    async fn for_each_row(&self, mut f: impl FnMut(DbRow)) -> Result<(), LogError> {
        let mut after = 0;
        loop {
            let page = self.rows(after, PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.line_no;
            page.into_iter().for_each(&mut f);
        }
    }

    /// Verifies the log in the table: every entry, the chain, every checkpoint's root and
    /// signature against `verifier`'s keys and known checkpoints, as
    /// [`LogVerifier::verify_file`] does for a file, plus the query columns. Unless the
    /// verifier names another witness or none, the log is compared with its witness table
    /// [`WITNESS_TABLE`] (invariant 12).
    pub async fn verify(&self, verifier: &LogVerifier) -> Result<VerifyReport, LogError> {
        let (label, note) = self.witness().await;
        let plan = verifier.plan(DefaultWitness::Note(label, note))?;
        self.scan(verifier.scanner(plan)).await
    }

    /// The database's witness: a label naming where it was read, and the latest checkpoint
    /// note the writer copied to [`WITNESS_TABLE`] (`None` when the table is empty, or
    /// absent because the database was not migrated yet).
    pub async fn witness(&self) -> (String, Option<String>) {
        use sqlx::Row;
        let query = "SELECT note FROM approval_audit_witness WHERE id = 1";
        let note: Result<Option<String>, sqlx::Error> = match self {
            #[cfg(feature = "sqlite")]
            LogDb::Sqlite(pool) => sqlx::query(query)
                .fetch_optional(pool)
                .await
                .and_then(|r| r.map(|r| r.try_get("note")).transpose()),
            #[cfg(feature = "postgres")]
            LogDb::Postgres(pool) => sqlx::query(query)
                .fetch_optional(pool)
                .await
                .and_then(|r| r.map(|r| r.try_get("note")).transpose()),
        };
        let label = format!("table {WITNESS_TABLE}");
        match note {
            Ok(note) => (label, note),
            Err(e) => (
                format!(
                    "{label} (unreadable: {e}; connect an approvals-store-sql store once to \
                     migrate the database)"
                ),
                None,
            ),
        }
    }

    /// Checks the log's structure without keys: leaf hashes, the chain, sequence numbers and
    /// each checkpoint's root and position (signatures are not checked; use
    /// [`Self::verify`] for evidence).
    pub async fn check_unsigned(&self) -> Result<VerifyReport, LogError> {
        self.scan(Scanner::unsigned(None)).await
    }

    async fn scan(&self, mut scanner: Scanner<'_>) -> Result<VerifyReport, LogError> {
        let mut line_nos = Vec::new();
        self.for_each_row(|row| {
            scanner.line(row.line.as_bytes());
            if let Some(why) = column_mismatch(&row) {
                let line = scanner.report.lines;
                if scanner.report.problems.len() < 1000 {
                    scanner.report.problems.push(Problem {
                        line: Some(line),
                        seq: row.seq.and_then(|s| u64::try_from(s).ok()),
                        kind: ProblemKind::MalformedLine(why),
                    });
                } else {
                    scanner.report.problems_omitted += 1;
                }
            }
            line_nos.push(row.line_no);
        })
        .await?;
        let mut report = scanner.finish();
        renumber(&mut report, &line_nos);
        Ok(report)
    }

    /// The proof that entry `seq` is in the tree of the checkpoint of size `checkpoint_size`
    /// (default: the log's last checkpoint), as [`super::prove_inclusion`] builds it for a
    /// file. Built from the table as it is; [`InclusionProof::verify`] checks it.
    pub async fn prove_inclusion(
        &self,
        seq: u64,
        checkpoint_size: Option<u64>,
    ) -> Result<InclusionProof, LogError> {
        let mut leaves: Vec<Hash> = Vec::new();
        let mut checkpoints: Vec<(u64, String)> = Vec::new();
        let mut event = None;
        let mut failure = None;
        self.for_each_row(|row| {
            if failure.is_some() {
                return;
            }
            let bad = |why: String| {
                LogError::Invalid(format!(
                    "audit log line {}: {why}; verify the log",
                    row.line_no
                ))
            };
            match parse_line(row.line.as_bytes()) {
                Err(why) => failure = Some(bad(why)),
                Ok(Line::Entry {
                    seq: s, event: e, ..
                }) => {
                    if s != leaves.len() as u64 {
                        failure = Some(bad(format!(
                            "entry has seq {s} at position {}",
                            leaves.len()
                        )));
                        return;
                    }
                    if s == seq {
                        event = Some(String::from_utf8_lossy(e).into_owned());
                    }
                    leaves.push(leaf_hash(e));
                }
                Ok(Line::Checkpoint(note)) => {
                    match unverified_text(&note).and_then(Checkpoint::from_text) {
                        Ok(cp) => checkpoints.push((cp.size, note)),
                        Err(e) => failure = Some(bad(e.to_string())),
                    }
                }
            }
        })
        .await?;
        if let Some(e) = failure {
            return Err(e);
        }
        let size = match checkpoint_size {
            Some(size) => size,
            None => checkpoints
                .last()
                .map(|(s, _)| *s)
                .ok_or_else(|| LogError::Invalid("the log has no checkpoint yet".into()))?,
        };
        if seq >= size {
            return Err(LogError::Invalid(format!(
                "entry {seq} is not covered by a checkpoint of size {size}"
            )));
        }
        let checkpoint = checkpoints
            .iter()
            .rev()
            .find(|(s, _)| *s == size)
            .map(|(_, note)| note.clone())
            .ok_or_else(|| {
                LogError::Invalid(format!("the log has no checkpoint of size {size}"))
            })?;
        let covered = usize::try_from(size)
            .ok()
            .and_then(|n| leaves.get(..n))
            .ok_or_else(|| {
                LogError::Invalid(format!(
                    "a checkpoint claims size {size} but the log holds {} entries; verify the log",
                    leaves.len()
                ))
            })?;
        let path = merkle::inclusion_proof(covered, seq)?;
        let event =
            event.ok_or_else(|| LogError::Invalid(format!("the log has no entry {seq}")))?;
        Ok(InclusionProof {
            seq,
            event,
            checkpoint,
            path,
        })
    }

    /// Writes the table as a log file (each row's line and a newline, in order), exactly as
    /// stored: verify the file with [`super::verify_file`]. Returns the number of lines.
    pub async fn export(&self, out: &mut impl Write) -> Result<u64, LogError> {
        let mut lines = 0;
        let mut failure = None;
        self.for_each_row(|row| {
            if failure.is_none() {
                match out
                    .write_all(row.line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                {
                    Ok(()) => lines += 1,
                    Err(e) => failure = Some(e),
                }
            }
        })
        .await?;
        match failure {
            Some(e) => Err(LogError::io("writing the exported log")(e)),
            None => Ok(lines),
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            LogDb::Sqlite(pool) => pool.close().await,
            #[cfg(feature = "postgres")]
            LogDb::Postgres(pool) => pool.close().await,
        }
    }
}

fn supported() -> &'static str {
    match (cfg!(feature = "sqlite"), cfg!(feature = "postgres")) {
        (true, true) => "sqlite, postgres",
        (true, false) => "sqlite",
        _ => "postgres",
    }
}

/// What is wrong with a row's query columns, compared with its line.
fn column_mismatch(row: &DbRow) -> Option<String> {
    let (seq, event) = match parse_line(row.line.as_bytes()) {
        Ok(Line::Entry { seq, event, .. }) => (Some(seq), Some(event)),
        Ok(Line::Checkpoint(_)) => (None, None),
        // The verifier already reports the line itself.
        Err(_) => return None,
    };
    let column_seq = row.seq.and_then(|s| u64::try_from(s).ok());
    if row.seq.is_some() != seq.is_some() || (seq.is_some() && column_seq != seq) {
        return Some(format!(
            "column seq is {:?} but the line is {}: the row's columns were edited",
            row.seq,
            seq.map_or_else(|| "a checkpoint".to_owned(), |s| format!("entry {s}"))
        ));
    }
    let fields = event
        .and_then(|e| serde_json::from_slice::<serde_json::Value>(e).ok())
        .unwrap_or_default();
    for (column, value) in [("request_id", &row.request_id), ("event", &row.event)] {
        let in_line = fields.get(column).and_then(|v| v.as_str());
        if value.as_deref() != in_line {
            return Some(format!(
                "column {column} is {value:?} but the event holds {in_line:?}: the row's \
                 columns were edited"
            ));
        }
    }
    None
}

/// Replaces line numbers (positions in the read order) with the rows' `line_no`.
fn renumber(report: &mut VerifyReport, line_nos: &[i64]) {
    if line_nos
        .iter()
        .enumerate()
        .all(|(i, n)| usize::try_from(*n).is_ok_and(|n| n == i + 1))
    {
        return;
    }
    let map = |line: u64| -> u64 {
        usize::try_from(line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|i| line_nos.get(i))
            .and_then(|n| u64::try_from(*n).ok())
            .unwrap_or(line)
    };
    for p in &mut report.problems {
        p.line = p.line.map(map);
        if let ProblemKind::Fork { other_line, .. } = &mut p.kind {
            *other_line = map(*other_line);
        }
    }
    if let Some(v) = &mut report.last_verified {
        v.line = map(v.line);
    }
    for k in &mut report.signing_keys {
        k.lines = (map(k.lines.0), map(k.lines.1));
    }
    for w in &mut report.warnings {
        match w {
            Warning::UnverifiedTail { first_line, .. } => *first_line = map(*first_line),
            Warning::IncompleteLastLine { line } => *line = map(*line),
        }
    }
}

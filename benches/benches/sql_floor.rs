//! The floor of a durable lifecycle on SQLite: the physical writes alone, without the gate.
//!
//! `cargo bench -p approvals-benches --bench sql_floor`
//!
//! One thread with one `rusqlite` connection, on the store's own schema (its migrations),
//! makes the writes of a submit → approve → execute lifecycle as the store's writer makes
//! them: the request row inserted, then three compare-and-sets that rewrite it and its
//! indexed columns, and seven hash-chained audit rows (SHA-256 over the previous line's hash
//! and the line, as the log chains). It makes them for 64 lifecycles at a time, in the best
//! grouping any writer could reach: four transactions per 64 lifecycles (one per step, all 64
//! requests' step in it), each committed and its WAL synced (`synchronous=FULL`). No reads,
//! no JSON encoding, no gate, no async runtime. Row sizes are those of the `store_sql`
//! bench's lifecycle, read from its PostgreSQL tables: the record 701, 905, about 950 and
//! 1,012 bytes after each step, an audit line 560 bytes on average.
//!
//! What it is for: the `store_sql` bench's `lifecycle_concurrent_64` target (10,000
//! lifecycles/s on SQLite, issue 19) is for the whole engine; this is the part of it that no
//! engine on this schema can avoid, on one core, which is what SQLite's single writer has.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

const MIGRATIONS: [&str; 7] = [
    include_str!("../../approvals-store-sql/migrations/sqlite/0001_requests_and_audit.sql"),
    include_str!("../../approvals-store-sql/migrations/sqlite/0002_signed_audit_log.sql"),
    include_str!("../../approvals-store-sql/migrations/sqlite/0003_audit_pending_column.sql"),
    include_str!("../../approvals-store-sql/migrations/sqlite/0004_audit_witness.sql"),
    include_str!("../../approvals-store-sql/migrations/sqlite/0005_initiator_key.sql"),
    include_str!("../../approvals-store-sql/migrations/sqlite/0006_due_at.sql"),
    include_str!("../../approvals-store-sql/migrations/sqlite/0007_denied_action_key.sql"),
];

/// Bytes of an audit line in the `store_sql` bench's lifecycle, on average.
const LINE_LEN: usize = 560;
/// Lifecycles whose writes share one transaction per step.
const GROUP: usize = 64;
/// The lifecycle's steps: the state each leaves the request in, the record's length then,
/// and the step's audit rows.
const STEPS: [(&str, usize, usize); 4] = [
    ("pending", 701, 2),
    ("approved", 905, 2),
    ("executing", 950, 1),
    ("executed", 1_012, 2),
];

struct Floor {
    conn: Connection,
    next_id: u64,
    line_no: i64,
    head: [u8; 32],
    records: [String; 4],
    line: String,
}

impl Floor {
    /// `synchronous`: `FULL` (each commit syncs the WAL) or `OFF` (nothing is synced: the
    /// bound with no durability at all).
    fn open(path: &std::path::Path, synchronous: &str) -> Floor {
        let conn = Connection::open(path).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.pragma_update(None, "synchronous", synchronous)
            .expect("synchronous");
        for migration in MIGRATIONS {
            conn.execute_batch(migration).expect("migration");
        }
        Floor {
            conn,
            next_id: 0,
            line_no: 0,
            head: [0; 32],
            records: STEPS.map(|(_, len, _)| "r".repeat(len)),
            line: "l".repeat(LINE_LEN),
        }
    }

    /// `GROUP` lifecycles: four transactions, each committed (and synced, when the connection
    /// was opened `FULL`).
    fn lifecycles(&mut self) {
        let first = self.next_id;
        self.next_id += GROUP as u64;
        let now = 1_780_000_000_000_000_i64;
        for (step, (state, _, events)) in STEPS.iter().enumerate() {
            let record = &self.records[step];
            let tx = self.conn.transaction().expect("begin");
            for n in first..first + GROUP as u64 {
                let id = format!("00000000-0000-4000-8000-{n:012}");
                let due = (*state != "executed").then_some(now + 3_600_000_000);
                if step == 0 {
                    tx.prepare_cached(
                        "INSERT INTO approval_requests
                             (id, version, state, kind, environment, initiator_id, idempotency_key,
                              created_at, expires_at, record, audit_pending, initiator_key, due_at,
                              denied_action_key)
                         VALUES (?1, 1, ?2, 'data.export', NULL, 'billing-agent', NULL, ?3, ?4, ?5,
                                 0, 'billing-agent', ?6, NULL)
                         ON CONFLICT (idempotency_key) DO NOTHING",
                    )
                    .expect("insert")
                    .execute(params![id, state, now, now + 3_600_000_000, record, due])
                    .expect("insert");
                } else {
                    let changed = tx
                        .prepare_cached(
                            "UPDATE approval_requests
                                SET version = version + 1, state = ?2, kind = 'data.export',
                                    environment = NULL, initiator_id = 'billing-agent',
                                    idempotency_key = NULL, created_at = ?3, expires_at = ?4,
                                    record = ?5, audit_pending = 0, initiator_key = 'billing-agent',
                                    due_at = ?6, denied_action_key = NULL
                              WHERE id = ?1 AND version = ?7 AND instr(?8, '|' || state || '|') > 0",
                        )
                        .expect("update")
                        .execute(params![
                            id,
                            state,
                            now,
                            now + 3_600_000_000,
                            record,
                            due,
                            step as i64,
                            format!("|{}|", STEPS[step - 1].0),
                        ])
                        .expect("update");
                    assert_eq!(changed, 1, "compare-and-set of {id}");
                }
                for _ in 0..*events {
                    self.line_no += 1;
                    let mut hash = Sha256::new();
                    hash.update(self.head);
                    hash.update(self.line.as_bytes());
                    self.head = hash.finalize().into();
                    tx.prepare_cached(
                        "INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
                         VALUES (?1, ?2, '2026-12-06T04:00:00Z', ?3, ?4, ?5)",
                    )
                    .expect("append")
                    .execute(params![self.line_no, self.line_no, id, state, self.line])
                    .expect("append");
                }
            }
            tx.commit().expect("commit");
        }
    }
}

fn floor(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("sql_floor_sqlite");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(GROUP as u64));
    for (name, synchronous) in [("synced", "FULL"), ("unsynced", "OFF")] {
        let mut floor = Floor::open(&dir.path().join(format!("{name}.db")), synchronous);
        group.bench_function(format!("lifecycle_writes_{GROUP}_per_commit_{name}"), |b| {
            b.iter(|| floor.lifecycles());
        });
        // Wall time is this thread's: it is the only one.
        let rounds = 100;
        let start = Instant::now();
        for _ in 0..rounds {
            floor.lifecycles();
        }
        let per = start.elapsed() / (rounds * GROUP) as u32;
        println!(
            "sql_floor ({name}): one writer thread, {} lifecycles: {:.1} µs per lifecycle ({:.0} lifecycles/s)",
            rounds * GROUP,
            per.as_secs_f64() * 1e6,
            1.0 / per.as_secs_f64()
        );
    }
    group.finish();
}

criterion_group!(benches, floor);
criterion_main!(benches);

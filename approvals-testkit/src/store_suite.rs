//! The store conformance suite: one behaviour per function, each on a fresh store.
//!
//! Call [`run_all`] with a function that makes an empty store, or call single behaviours.
//! Every function panics with a message naming the broken behaviour. Run them on a
//! multi-threaded tokio runtime so the concurrency checks race for real.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use approvals_core::{
    ActionRequest, GuardError, Inserted, ListFilter, MemorySink, RequestId, RequestRecord,
    RequestState, Review, ReviewError, ReviewRecord, Store, Submission, Verdict,
};
use chrono::TimeDelta;
use futures::future::join_all;

use crate::fixtures::{self, epoch, export_request, full_record, pending_record, reviewer};

/// How many writers race in the concurrency checks.
pub const WRITERS: usize = 64;

/// Runs every behaviour, each on a store made by `make_store`.
pub async fn run_all<F, Fut>(make_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    round_trip_keeps_every_field(make_store().await).await;
    missing_records_are_none(make_store().await).await;
    idempotency_key_is_unique(make_store().await).await;
    concurrent_inserts_with_one_key_create_one_record(make_store().await).await;
    duplicate_id_is_refused(make_store().await).await;
    cas_increments_the_version(make_store().await).await;
    stale_cas_changes_nothing(make_store().await).await;
    cas_on_a_missing_record_is_false(make_store().await).await;
    illegal_transitions_are_refused_and_change_nothing(make_store().await).await;
    list_filters_and_orders(make_store().await).await;
    due_listing_follows_each_write(make_store().await).await;
    due_pages_cover_every_due_record_once_in_order(make_store().await).await;
    pages_cover_every_record_once(make_store().await).await;
    racing_cas_writers_have_one_winner(make_store().await).await;
    retrying_writers_lose_no_update(make_store().await).await;
    gate_approve_then_execute_once(make_store().await).await;
    gate_deny_is_final(make_store().await).await;
    gate_expiry_with_manual_clock(make_store().await).await;
    gate_racing_reviewers_give_one_outcome(make_store().await).await;
    gate_grant_runs_once_under_concurrency(make_store().await).await;
    gate_sweeps_on_every_replica_expire_once(make_store().await).await;
    gate_reattaches_by_idempotency_key(make_store().await).await;
    denied_listing_finds_the_denials_of_one_action(make_store().await).await;
    gate_refuses_asking_again_after_a_denial(make_store().await).await;
    gate_reminds_once_at_each_point(make_store().await).await;
    gate_binds_the_approval_to_the_preview(make_store().await).await;
    gate_takes_each_standing_grant_use_once(make_store().await).await;
    gate_runs_each_plan_item_once(make_store().await).await;
    gate_runs_only_the_edited_action(make_store().await).await;
    gate_refuses_the_asked_action_after_its_edit_is_denied(make_store().await).await;
}

async fn insert_new(store: &Arc<dyn Store>, record: &RequestRecord) {
    match store.insert(record).await {
        Ok(Inserted::Created) => {}
        other => panic!("inserting a new record must return Created, got {other:?}"),
    }
}

async fn fetch(store: &Arc<dyn Store>, id: RequestId) -> RequestRecord {
    store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("get({id}) failed: {e}"))
        .unwrap_or_else(|| panic!("record {id} is missing"))
}

/// Every field of a fully populated record survives insert and get; the stored version is 1.
pub async fn round_trip_keeps_every_field(store: Arc<dyn Store>) {
    let mut record = full_record();
    record.version = 7; // The store sets version 1 on insert, whatever the caller passes.
    insert_new(&store, &record).await;
    record.version = 1;
    assert_eq!(fetch(&store, record.id).await, record, "get after insert");
    let by_key = store
        .get_by_idempotency_key("rotate-payments-2030-01")
        .await
        .expect("get_by_idempotency_key");
    assert_eq!(by_key.as_ref(), Some(&record), "get_by_idempotency_key");
}

/// Unknown ids and keys read as `None`, not as errors.
pub async fn missing_records_are_none(store: Arc<dyn Store>) {
    assert!(store.get(RequestId::new()).await.expect("get").is_none());
    assert!(
        store
            .get_by_idempotency_key("no-such-key")
            .await
            .expect("get_by_idempotency_key")
            .is_none()
    );
}

/// A second insert with the same idempotency key stores nothing and returns the first record;
/// records without a key never collide.
pub async fn idempotency_key_is_unique(store: Arc<dyn Store>) {
    let first = pending_record(export_request().idempotency_key("export-1"), epoch());
    insert_new(&store, &first).await;
    let second = pending_record(
        export_request()
            .idempotency_key("export-1")
            .params(serde_json::json!({"rows": 1})),
        epoch(),
    );
    match store.insert(&second).await.expect("insert") {
        Inserted::Existing(existing) => assert_eq!(*existing, first, "the first record, unchanged"),
        Inserted::Created => panic!("a reused idempotency key must not create a second record"),
    }
    assert!(
        store.get(second.id).await.expect("get").is_none(),
        "the second record must not be stored"
    );
    for _ in 0..3 {
        insert_new(&store, &pending_record(export_request(), epoch())).await;
    }
    assert_eq!(
        store
            .list(&ListFilter::default())
            .await
            .expect("list")
            .len(),
        4
    );
}

/// Many tasks inserting records with one idempotency key: exactly one is created, and every
/// other insert returns that same record.
pub async fn concurrent_inserts_with_one_key_create_one_record(store: Arc<dyn Store>) {
    let records: Vec<RequestRecord> = (0..WRITERS)
        .map(|_| pending_record(export_request().idempotency_key("race-key"), epoch()))
        .collect();
    let results = join_all(records.iter().map(|r| {
        let store = store.clone();
        let r = r.clone();
        tokio::spawn(async move { store.insert(&r).await })
    }))
    .await;
    let mut created = Vec::new();
    let mut existing = Vec::new();
    for (record, result) in records.iter().zip(results) {
        match result.expect("task").expect("insert") {
            Inserted::Created => created.push(record.id),
            Inserted::Existing(r) => existing.push(r.id),
        }
    }
    assert_eq!(created.len(), 1, "exactly one insert creates the record");
    assert!(
        existing.iter().all(|id| *id == created[0]),
        "every other insert returns the winner"
    );
    let stored = store
        .get_by_idempotency_key("race-key")
        .await
        .expect("get_by_idempotency_key")
        .expect("stored");
    assert_eq!(stored.id, created[0]);
}

/// Inserting an id that exists is an error and leaves the stored record alone.
pub async fn duplicate_id_is_refused(store: Arc<dyn Store>) {
    let record = pending_record(export_request(), epoch());
    insert_new(&store, &record).await;
    let mut clash = pending_record(export_request().environment("staging"), epoch());
    clash.id = record.id;
    assert!(
        store.insert(&clash).await.is_err(),
        "a duplicate id must be refused"
    );
    assert_eq!(fetch(&store, record.id).await, record);
}

/// A successful compare-and-set stores the new record with version + 1.
pub async fn cas_increments_the_version(store: Arc<dyn Store>) {
    let record = pending_record(export_request(), epoch());
    insert_new(&store, &record).await;
    let mut next = record.clone();
    next.state = RequestState::Cancelled;
    assert!(store.compare_and_set(1, &next).await.expect("cas"));
    let stored = fetch(&store, record.id).await;
    assert_eq!(stored.version, 2);
    assert_eq!(stored.state, RequestState::Cancelled);
    next.version = 2;
    assert_eq!(stored, next, "the whole record is replaced");
}

/// A compare-and-set with an old version returns false and changes nothing.
pub async fn stale_cas_changes_nothing(store: Arc<dyn Store>) {
    let record = pending_record(export_request(), epoch());
    insert_new(&store, &record).await;
    let mut first = record.clone();
    first.escalated = true;
    assert!(store.compare_and_set(1, &first).await.expect("cas"));
    let before = fetch(&store, record.id).await;
    let mut stale = record.clone();
    stale.state = RequestState::Approved;
    assert!(
        !store.compare_and_set(1, &stale).await.expect("cas"),
        "stale version"
    );
    assert!(
        !store.compare_and_set(3, &stale).await.expect("cas"),
        "future version"
    );
    assert_eq!(fetch(&store, record.id).await, before);
}

/// A compare-and-set on a record that does not exist returns false and creates nothing.
pub async fn cas_on_a_missing_record_is_false(store: Arc<dyn Store>) {
    let ghost = pending_record(export_request(), epoch());
    assert!(!store.compare_and_set(1, &ghost).await.expect("cas"));
    assert!(store.get(ghost.id).await.expect("get").is_none());
}

/// Every pair of states: a compare-and-set that is a lifecycle step (or keeps the state) is
/// stored; any other (a terminal state changing, `Pending -> Executing`, `Denied ->
/// Approved`, ...) is refused with an error and changes nothing. The rule is the core's
/// ([`approvals_core::lifecycle::may_replace`]), so every store refuses the same steps.
pub async fn illegal_transitions_are_refused_and_change_nothing(store: Arc<dyn Store>) {
    use approvals_core::lifecycle::{ALL_STATES, may_replace};
    let mut refused = 0;
    for from in ALL_STATES {
        for to in ALL_STATES {
            let mut record = pending_record(export_request(), epoch());
            record.state = from;
            insert_new(&store, &record).await;
            let mut next = record.clone();
            next.state = to;
            next.escalated = !record.escalated;
            let legal = may_replace(&record, &next).is_ok();
            let result = store.compare_and_set(1, &next).await;
            let stored = fetch(&store, record.id).await;
            if legal {
                assert!(
                    matches!(result, Ok(true)),
                    "{from} -> {to} is a lifecycle step and must be stored, got {result:?}"
                );
                assert_eq!(stored.state, to);
            } else {
                refused += 1;
                assert!(
                    result.is_err(),
                    "{from} -> {to} is not a lifecycle step and must be refused with an error, got {result:?}"
                );
                assert_eq!(stored, record, "a refused {from} -> {to} changes nothing");
            }
        }
    }
    // Terminal states change to nothing else: 6 x 8 refusals, plus the non-terminal ones.
    assert!(refused >= 48, "only {refused} illegal steps refused");
}

/// `list` filters by state, kind, environment and initiator (case-insensitively, trimmed),
/// returns newest first and honours the limit.
pub async fn list_filters_and_orders(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..6_i64 {
        let mut request = export_request();
        if i % 2 == 1 {
            request.kind = "iam.grant".into();
        }
        if i >= 4 {
            request = request.environment("staging");
        }
        if i == 5 {
            request = request.initiator(approvals_core::Initiator::service("Deploy-Bot"));
        }
        let mut record = pending_record(request, epoch() + TimeDelta::seconds(i));
        if i == 0 {
            record.state = RequestState::Denied;
            record.audit_pending = true;
        }
        insert_new(&store, &record).await;
        ids.push(record.id);
    }
    let ids_of =
        |records: Vec<RequestRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(
        ids_of(all),
        ids.iter().rev().copied().collect::<Vec<_>>(),
        "newest first"
    );
    let pending = store.list(&ListFilter::pending()).await.expect("list");
    assert_eq!(
        ids_of(pending),
        vec![ids[5], ids[4], ids[3], ids[2], ids[1]]
    );
    let several = ListFilter {
        states: vec![RequestState::Denied, RequestState::Approved],
        ..Default::default()
    };
    assert_eq!(
        ids_of(store.list(&several).await.expect("list")),
        vec![ids[0]]
    );
    let kind = ListFilter {
        kind: Some("iam.grant".into()),
        ..Default::default()
    };
    assert_eq!(
        ids_of(store.list(&kind).await.expect("list")),
        vec![ids[5], ids[3], ids[1]]
    );
    let env = ListFilter {
        environment: Some("staging".into()),
        ..Default::default()
    };
    assert_eq!(
        ids_of(store.list(&env).await.expect("list")),
        vec![ids[5], ids[4]]
    );
    let initiator = ListFilter {
        initiator: Some(" deploy-bot ".into()),
        ..Default::default()
    };
    assert_eq!(
        ids_of(store.list(&initiator).await.expect("list")),
        vec![ids[5]]
    );
    // Any spelling of the initiator's id finds its requests, as the gate compares ids
    // (approvals_core::identity): case, width, invisible characters, trailing dots.
    for spelling in [
        "DEPLOY-BOT",
        "\u{FF44}\u{FF45}\u{FF50}\u{FF4C}\u{FF4F}\u{FF59}\u{FF0D}\u{FF42}\u{FF4F}\u{FF54}",
        "deploy\u{200B}-bot",
        "\u{FEFF}Deploy-Bot.",
    ] {
        let filter = ListFilter {
            initiator: Some(spelling.into()),
            ..Default::default()
        };
        assert_eq!(
            ids_of(store.list(&filter).await.expect("list")),
            vec![ids[5]],
            "the initiator filter must match {spelling:?}"
        );
    }
    let other = ListFilter {
        initiator: Some("deploy-bat".into()),
        ..Default::default()
    };
    assert!(store.list(&other).await.expect("list").is_empty());
    let combined = ListFilter {
        states: vec![RequestState::Pending],
        kind: Some("data.export".into()),
        environment: Some("production".into()),
        initiator: Some("billing-agent".into()),
        audit_pending: Some(false),
        due_by: None,
        denied_action: None,
        limit: Some(1),
        after: None,
        due_after: None,
    };
    assert_eq!(
        ids_of(store.list(&combined).await.expect("list")),
        vec![ids[2]]
    );
    let limited = ListFilter {
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(
        ids_of(store.list(&limited).await.expect("list")),
        vec![ids[5], ids[4]]
    );
    let none = ListFilter {
        kind: Some("data.export' OR '1'='1".into()),
        ..Default::default()
    };
    assert!(store.list(&none).await.expect("list").is_empty());

    // Decisions not yet audited, as sweeps look for them; the filter follows each update.
    let unaudited = ListFilter {
        states: vec![RequestState::Denied],
        audit_pending: Some(true),
        ..Default::default()
    };
    assert_eq!(
        ids_of(store.list(&unaudited).await.expect("list")),
        vec![ids[0]]
    );
    let audited = ListFilter {
        audit_pending: Some(false),
        ..Default::default()
    };
    assert_eq!(store.list(&audited).await.expect("list").len(), 5);
    let mut denied = store.get(ids[0]).await.expect("get").expect("record");
    denied.audit_pending = false;
    assert!(
        store
            .compare_and_set(denied.version, &denied)
            .await
            .expect("cas")
    );
    assert!(store.list(&unaudited).await.expect("list").is_empty());
    assert_eq!(store.list(&audited).await.expect("list").len(), 6);
}

/// A due listing read a page at a time ([`ListFilter::due_after`], as sweeps read it) lists
/// every due record once, in the order of one whole listing, earliest due first, ties by id:
/// ten records, five of them due at the same moment, pages of one to four.
pub async fn due_pages_cover_every_due_record_once_in_order(store: Arc<dyn Store>) {
    let at = |minutes: i64| epoch() + TimeDelta::minutes(minutes);
    // Pending requests expire an hour after they were created: created at 0 is due at 60.
    let created = [0, 0, 0, 0, 0, 5, 10, 10, 20, 500];
    let mut inserted = Vec::new();
    for minutes in created {
        let record = pending_record(export_request(), at(minutes));
        insert_new(&store, &record).await;
        inserted.push(record);
    }
    let whole = ListFilter {
        due_by: Some(at(100)),
        ..Default::default()
    };
    let expected: Vec<RequestId> = store
        .list(&whole)
        .await
        .expect("list")
        .iter()
        .map(|r| r.id)
        .collect();
    // The order is checked against the records themselves, not only against the store's own
    // listing: earliest due first by `next_due`, ties by id.
    let mut by_due: Vec<approvals_core::DueCursor> = inserted
        .iter()
        .filter_map(approvals_core::DueCursor::of)
        .filter(|cursor| cursor.due_at <= at(100))
        .collect();
    by_due.sort();
    assert_eq!(
        expected,
        by_due.iter().map(|cursor| cursor.id).collect::<Vec<_>>(),
        "the whole due listing is not in due order (the one created at 500 is not due by 100)"
    );
    assert_eq!(expected.len(), 9);
    for size in 1..=4 {
        let mut filter = ListFilter {
            due_by: Some(at(100)),
            limit: Some(size),
            ..Default::default()
        };
        let mut listed = Vec::new();
        loop {
            let page = store.list(&filter).await.expect("list");
            assert!(page.len() <= size);
            listed.extend(page.iter().map(|r| r.id));
            match page.last().and_then(approvals_core::DueCursor::of) {
                Some(cursor) if page.len() == size => filter.due_after = Some(cursor),
                _ => break,
            }
            assert!(
                listed.len() <= expected.len(),
                "pages of {size} repeat records"
            );
        }
        assert_eq!(listed, expected, "pages of {size}");
    }
}

/// `due_by` lists exactly the records whose next due time
/// ([`lifecycle::next_due`](approvals_core::lifecycle::next_due)) has come: a pending request
/// at its expiry, an approval at its grant's expiry, an unaudited decision at once; never a
/// terminal, audited one. Each insert and compare-and-set moves the record's due time.
pub async fn due_listing_follows_each_write(store: Arc<dyn Store>) {
    let at = |minutes: i64| epoch() + TimeDelta::minutes(minutes);
    let pending = pending_record(export_request(), at(0)); // expires at 60
    let later = pending_record(export_request(), at(60)); // expires at 120
    let mut approved = pending_record(export_request(), at(0));
    approved.state = RequestState::Approved;
    approved.grant_expires_at = Some(at(5));
    let mut unaudited = pending_record(export_request(), at(0));
    unaudited.state = RequestState::Denied;
    unaudited.mark_unaudited(Verdict::Deny);
    let mut executed = pending_record(export_request(), at(0));
    executed.state = RequestState::Executed;
    // Running with a credential until 30; and one whose run ended with it still outstanding
    // (due at once), which a write marking it revoked takes out of the listing.
    let credential = |expires_at| approvals_core::store::CredentialState {
        lease: approvals_core::credential::CredentialLease {
            id: "apr_00000000000000000000000000000001".into(),
            scope: "SELECT on public.invoices".into(),
            expires_at,
        },
        issued: true,
        revoked_at: None,
    };
    let execution = |state, credential| {
        let mut r = pending_record(export_request(), at(0));
        r.state = state;
        r.execution = Some(Box::new(approvals_core::Execution {
            started_at: at(1),
            finished_at: None,
            error: None,
            credential: Some(credential),
        }));
        r
    };
    let running = execution(RequestState::Executing, credential(at(30)));
    let left_behind = execution(RequestState::Failed, credential(at(30)));
    for record in [
        &pending,
        &later,
        &approved,
        &unaudited,
        &executed,
        &running,
        &left_behind,
    ] {
        insert_new(&store, record).await;
    }
    let due = |minutes: i64| {
        let store = store.clone();
        async move {
            let filter = ListFilter {
                due_by: Some(at(minutes)),
                ..Default::default()
            };
            let mut ids: Vec<RequestId> = store
                .list(&filter)
                .await
                .expect("list")
                .into_iter()
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let sorted = |mut ids: Vec<RequestId>| {
        ids.sort();
        ids
    };
    assert_eq!(due(-1).await, vec![left_behind.id]);
    assert_eq!(due(0).await, sorted(vec![unaudited.id, left_behind.id]));
    assert_eq!(
        due(5).await,
        sorted(vec![approved.id, unaudited.id, left_behind.id])
    );
    assert_eq!(
        due(30).await,
        sorted(vec![approved.id, unaudited.id, running.id, left_behind.id])
    );
    // Its credential revoked, the finished run is due no more.
    let mut revoked = fetch(&store, left_behind.id).await;
    if let Some(c) = revoked
        .execution
        .as_mut()
        .and_then(|e| e.credential.as_mut())
    {
        c.revoked_at = Some(at(2));
    }
    assert!(store.compare_and_set(1, &revoked).await.expect("cas"));
    assert_eq!(
        due(60).await,
        sorted(vec![pending.id, approved.id, unaudited.id, running.id])
    );
    assert_eq!(
        due(1_000).await,
        sorted(vec![
            pending.id,
            later.id,
            approved.id,
            unaudited.id,
            running.id
        ])
    );

    // Approved with a grant until 600: due then, not at its old expiry.
    let mut next = fetch(&store, pending.id).await;
    next.state = RequestState::Approved;
    next.grant_expires_at = Some(at(600));
    assert!(store.compare_and_set(1, &next).await.expect("cas"));
    // The denial audited: nothing is due for it any more.
    let mut audited = fetch(&store, unaudited.id).await;
    assert!(audited.mark_audited(Verdict::Deny));
    assert!(store.compare_and_set(1, &audited).await.expect("cas"));
    assert_eq!(due(60).await, sorted(vec![approved.id, running.id]));
    assert_eq!(
        due(600).await,
        sorted(vec![pending.id, later.id, approved.id, running.id])
    );
}

/// Following page cursors ([`ListFilter::after`]) lists every matching record exactly once,
/// in the order of the whole listing, including records created in the same microsecond
/// (ties broken by id) and with other states in between.
pub async fn pages_cover_every_record_once(store: Arc<dyn Store>) {
    let at = |i: i64| epoch() + TimeDelta::seconds(i / 4);
    for i in 0..23 {
        insert_new(&store, &pending_record(export_request(), at(i))).await;
        if i % 8 == 0 {
            let mut other = pending_record(export_request(), at(i));
            other.state = RequestState::Denied;
            insert_new(&store, &other).await;
        }
    }
    let whole: Vec<RequestId> = store
        .list(&ListFilter::pending())
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(whole.len(), 23);
    for size in [1, 5, 23, 40] {
        let mut walked: Vec<RequestId> = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list(&ListFilter {
                    after,
                    limit: Some(size),
                    ..ListFilter::pending()
                })
                .await
                .expect("page");
            assert!(page.len() <= size);
            let Some(last) = page.last() else { break };
            after = Some(approvals_core::PageCursor::of(last));
            walked.extend(page.iter().map(|r| r.id));
            assert!(walked.len() <= 23, "pages of {size} repeat records");
        }
        assert_eq!(walked, whole, "pages of {size}");
    }
}

/// [`WRITERS`] tasks compare-and-set the same version at once: exactly one wins, and the
/// stored record is the winner's.
pub async fn racing_cas_writers_have_one_winner(store: Arc<dyn Store>) {
    let record = pending_record(export_request(), epoch());
    insert_new(&store, &record).await;
    let results = join_all((0..WRITERS).map(|i| {
        let store = store.clone();
        let mut next = record.clone();
        next.policy_version = format!("writer-{i}").into();
        tokio::spawn(async move { store.compare_and_set(1, &next).await })
    }))
    .await;
    let winners: Vec<usize> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.expect("task").expect("cas").then_some(i))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one writer wins a version");
    let stored = fetch(&store, record.id).await;
    assert_eq!(stored.version, 2);
    assert_eq!(*stored.policy_version, format!("writer-{}", winners[0]));
}

/// [`WRITERS`] tasks each append one review with read-modify-write retries: every append
/// lands exactly once and the version counts them.
pub async fn retrying_writers_lose_no_update(store: Arc<dyn Store>) {
    let record = pending_record(export_request(), epoch());
    insert_new(&store, &record).await;
    let conflicts = Arc::new(AtomicUsize::new(0));
    let tasks = (0..WRITERS).map(|i| {
        let store = store.clone();
        let conflicts = conflicts.clone();
        let id = record.id;
        tokio::spawn(async move {
            loop {
                let current = store.get(id).await.expect("get").expect("exists");
                let mut next = current.clone();
                next.reviews.push(ReviewRecord {
                    reviewer: reviewer(&format!("r{i}@example.com")),
                    verdict: Verdict::Approve,
                    reason: None,
                    channel: "test".into(),
                    at: epoch(),
                    edit: None,
                    step_up: None,
                });
                if store
                    .compare_and_set(current.version, &next)
                    .await
                    .expect("cas")
                {
                    return;
                }
                conflicts.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    for r in join_all(tasks).await {
        r.expect("task");
    }
    let stored = fetch(&store, record.id).await;
    assert_eq!(stored.reviews.len(), WRITERS, "no update lost");
    assert_eq!(stored.version, 1 + WRITERS as u64, "one version per update");
    let mut names: Vec<&str> = stored
        .reviews
        .iter()
        .map(|r| r.reviewer.id.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), WRITERS, "no update applied twice");
}

fn parts() -> (Arc<approvals_core::ManualClock>, Arc<MemorySink>) {
    (fixtures::clock(), Arc::new(MemorySink::new()))
}

/// Through the gate: approve, wait, execute once; the record ends `executed` and a second
/// grant for the same request is refused without running the action.
pub async fn gate_approve_then_execute_once(store: Arc<dyn Store>) {
    let (clock, audit) = parts();
    let gate = fixtures::gate(store.clone(), clock, audit.clone());
    let action = export_request();
    let Submission::Pending(id) = gate.submit(&action).await.expect("submit") else {
        panic!("the policy requires approval");
    };
    assert_eq!(fetch(&store, id).await.state, RequestState::Pending);
    let outcome = gate
        .decide(id, Review::approve(reviewer("sam@example.com")))
        .await
        .expect("approve");
    assert_eq!(outcome.state, RequestState::Approved);
    let runs = AtomicUsize::new(0);
    let grant = gate.wait(id).await.expect("grant");
    let second = gate
        .wait(id)
        .await
        .expect("a second grant object for the same approval");
    gate.execute(grant, &action, || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, GuardError>(())
    })
    .await
    .expect("execute");
    let again = gate
        .execute(second, &action, || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, GuardError>(())
        })
        .await;
    assert!(
        matches!(again, Err(GuardError::GrantUsed { .. })),
        "second use refused: {again:?}"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the action ran exactly once"
    );
    let stored = fetch(&store, id).await;
    assert_eq!(stored.state, RequestState::Executed);
    assert!(stored.execution.is_some_and(|e| e.finished_at.is_some()));
    assert!(
        gate.decide(id, Review::approve(reviewer("kim@example.com")))
            .await
            .is_err(),
        "an executed request takes no more reviews"
    );
    assert_eq!(fetch(&store, id).await.state, RequestState::Executed);
}

/// Through the gate: a deny ends the request, the waiter gets `Denied`, later reviews and
/// cancels are refused, and the state never changes again.
pub async fn gate_deny_is_final(store: Arc<dyn Store>) {
    let (clock, audit) = parts();
    let gate = fixtures::gate(store.clone(), clock, audit);
    let Submission::Pending(id) = gate.submit(&export_request()).await.expect("submit") else {
        panic!("the policy requires approval");
    };
    let waiter = {
        let gate = gate.clone();
        tokio::spawn(async move { gate.wait(id).await })
    };
    gate.decide(id, Review::deny(reviewer("sam@example.com")).reason("no"))
        .await
        .expect("deny");
    assert!(matches!(
        waiter.await.expect("task"),
        Err(GuardError::Denied { .. })
    ));
    let late = gate
        .decide(id, Review::approve(reviewer("kim@example.com")))
        .await;
    assert!(
        matches!(
            late,
            Err(ReviewError::AlreadyDecided {
                state: RequestState::Denied,
                ..
            })
        ),
        "{late:?}"
    );
    assert!(gate.cancel(id, None, None).await.is_err());
    assert!(gate.sweep().await.is_ok());
    let stored = fetch(&store, id).await;
    assert_eq!(stored.state, RequestState::Denied);
    assert_eq!(stored.reviews.len(), 1);
}

/// Through the gate with a manual clock: a request still pending at its deadline expires,
/// once; an approval one microsecond late is refused.
pub async fn gate_expiry_with_manual_clock(store: Arc<dyn Store>) {
    let (clock, audit) = parts();
    let gate = fixtures::gate(store.clone(), clock.clone(), audit.clone());
    let Submission::Pending(id) = gate.submit(&export_request()).await.expect("submit") else {
        panic!("the policy requires approval");
    };
    let expires_at = fetch(&store, id).await.expires_at;
    clock.advance(expires_at - gate.now() - TimeDelta::microseconds(1));
    assert_eq!(gate.sweep().await.expect("sweep").expired, 0, "not yet due");
    clock.advance(TimeDelta::microseconds(1));
    let late = gate
        .decide(id, Review::approve(reviewer("sam@example.com")))
        .await;
    assert!(matches!(late, Err(ReviewError::Expired { .. })), "{late:?}");
    assert!(matches!(
        gate.wait(id).await,
        Err(GuardError::Expired { .. })
    ));
    assert_eq!(
        gate.sweep().await.expect("sweep").expired,
        0,
        "already expired"
    );
    let stored = fetch(&store, id).await;
    assert_eq!(stored.state, RequestState::Expired);
    assert!(stored.reviews.is_empty());
    let expired_events = audit
        .for_request(id)
        .iter()
        .filter(|e| e.name() == "expired")
        .count();
    assert_eq!(expired_events, 1, "expired exactly once");
}

/// Through the gate: [`WRITERS`] distinct authorized reviewers approve at once with quorum 1;
/// exactly one approval is accepted and the rest are told it is already decided.
pub async fn gate_racing_reviewers_give_one_outcome(store: Arc<dyn Store>) {
    let (clock, audit) = parts();
    let gate = fixtures::gate(store.clone(), clock, audit);
    let Submission::Pending(id) = gate.submit(&export_request()).await.expect("submit") else {
        panic!("the policy requires approval");
    };
    let results = join_all((0..WRITERS).map(|i| {
        let gate = gate.clone();
        tokio::spawn(async move {
            gate.decide(id, Review::approve(reviewer(&format!("r{i}@example.com"))))
                .await
        })
    }))
    .await;
    let mut accepted = 0;
    for r in results {
        match r.expect("task") {
            Ok(outcome) => {
                assert_eq!(outcome.state, RequestState::Approved);
                accepted += 1;
            }
            Err(ReviewError::AlreadyDecided { .. }) => {}
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!(accepted, 1, "exactly one approval is accepted");
    let stored = fetch(&store, id).await;
    assert_eq!(stored.state, RequestState::Approved);
    assert_eq!(stored.reviews.len(), 1);
}

/// Through the gate: several grant objects for one approval, executed at once, run the
/// action exactly once.
pub async fn gate_grant_runs_once_under_concurrency(store: Arc<dyn Store>) {
    let (clock, audit) = parts();
    let gate = fixtures::gate(store.clone(), clock, audit);
    let action = export_request();
    let Submission::Pending(id) = gate.submit(&action).await.expect("submit") else {
        panic!("the policy requires approval");
    };
    gate.decide(id, Review::approve(reviewer("sam@example.com")))
        .await
        .expect("approve");
    let runs = Arc::new(AtomicUsize::new(0));
    let mut grants = Vec::new();
    for _ in 0..8 {
        grants.push(gate.wait(id).await.expect("grant"));
    }
    let mut tasks = Vec::new();
    for grant in grants {
        let (gate, action, runs) = (gate.clone(), action.clone(), runs.clone());
        tasks.push(tokio::spawn(async move {
            gate.execute(grant, &action, || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, GuardError>(())
            })
            .await
        }));
    }
    let ok = join_all(tasks)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(()))))
        .count();
    assert_eq!(ok, 1, "one execution succeeds");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the action ran exactly once"
    );
    assert_eq!(fetch(&store, id).await.state, RequestState::Executed);
}

/// Two gates (replicas) on one store sweep at once after the deadline: the request expires
/// exactly once.
pub async fn gate_sweeps_on_every_replica_expire_once(store: Arc<dyn Store>) {
    let (clock, audit) = parts();
    let a = fixtures::gate(store.clone(), clock.clone(), audit.clone());
    let b = fixtures::gate(store.clone(), clock.clone(), audit.clone());
    let mut ids = Vec::new();
    for i in 0..10 {
        let action = export_request().params(serde_json::json!({"batch": i}));
        let Submission::Pending(id) = a.submit(&action).await.expect("submit") else {
            panic!("the policy requires approval");
        };
        ids.push(id);
    }
    clock.advance(TimeDelta::hours(2));
    let (ra, rb) = tokio::join!(a.sweep(), b.sweep());
    let expired = ra.expect("sweep a").expired + rb.expect("sweep b").expired;
    assert_eq!(
        expired,
        ids.len(),
        "each request expires once across replicas"
    );
    for id in ids {
        assert_eq!(fetch(&store, id).await.state, RequestState::Expired);
        let events = audit
            .for_request(id)
            .iter()
            .filter(|e| e.name() == "expired")
            .count();
        assert_eq!(events, 1);
    }
}

/// Through the gate: resubmitting an action with the same idempotency key re-attaches to the
/// stored request; the same key for a different action is refused.
pub async fn gate_reattaches_by_idempotency_key(store: Arc<dyn Store>) {
    let (clock, audit) = parts();
    let gate = fixtures::gate(store.clone(), clock.clone(), audit.clone());
    let action = export_request().idempotency_key("nightly-export");
    let Submission::Pending(id) = gate.submit(&action).await.expect("submit") else {
        panic!("the policy requires approval");
    };
    // A second gate, as after a restart, finds the same request.
    let restarted = fixtures::gate(store.clone(), clock, audit);
    match restarted.submit(&action).await.expect("resubmit") {
        Submission::Pending(again) => assert_eq!(again, id),
        Submission::Allowed(_) => panic!("the policy requires approval"),
    }
    let changed: ActionRequest = action.clone().params(serde_json::json!({"rows": 999_999}));
    assert!(matches!(
        restarted.submit(&changed).await,
        Err(GuardError::IdempotencyConflict { .. })
    ));
    assert_eq!(
        store
            .list(&ListFilter::default())
            .await
            .expect("list")
            .len(),
        1,
        "one request for one key"
    );
}

/// `ListFilter::denied_action` lists the denied requests for one action (its action key, not
/// its digest: rewording it or a new session is the same action), newest first: stored
/// denied, denied by a compare-and-set from pending, and denied after approval (a revoking
/// deny); never a request still open or ended otherwise, nor another action's denial.
pub async fn denied_listing_finds_the_denials_of_one_action(store: Arc<dyn Store>) {
    let at = |seconds: i64| epoch() + TimeDelta::seconds(seconds);
    let action = export_request();
    let key = action.action_key();
    let reworded = {
        let mut r = export_request()
            .justification("URGENT: the board needs it today")
            .summary("a different summary");
        let mut initiator = fixtures::billing_agent();
        initiator.session = Some("another-session".into());
        r.initiator = Some(Arc::new(initiator));
        r
    };
    assert_eq!(reworded.action_key(), key, "the same action, reworded");
    assert_ne!(reworded.digest(), action.digest());
    let other = export_request().params(serde_json::json!({"rows": 6000}));
    assert_ne!(other.action_key(), key);

    let denied = |request: ActionRequest, seconds| {
        let mut r = pending_record(request, at(seconds));
        r.state = RequestState::Denied;
        r.reviews.push(ReviewRecord {
            reviewer: reviewer("sam@example.com"),
            verdict: Verdict::Deny,
            reason: Some("not this quarter".into()),
            channel: "api".into(),
            at: at(seconds + 1),
            edit: None,
            step_up: None,
        });
        r
    };
    let stored_denied = denied(action.clone(), 0);
    let other_denied = denied(other, 1);
    let later_pending = pending_record(reworded.clone(), at(2));
    let approved = {
        let mut r = pending_record(action.clone(), at(3));
        r.state = RequestState::Approved;
        r
    };
    let expired = {
        let mut r = pending_record(action.clone(), at(4));
        r.state = RequestState::Expired;
        r
    };
    for record in [
        &stored_denied,
        &other_denied,
        &later_pending,
        &approved,
        &expired,
    ] {
        insert_new(&store, record).await;
    }
    let filter = ListFilter {
        denied_action: Some(key),
        ..Default::default()
    };
    let listed = |filter: ListFilter| {
        let store = store.clone();
        async move {
            store
                .list(&filter)
                .await
                .expect("list")
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(filter.clone()).await, vec![stored_denied.id]);

    // Denied later by compare-and-set: from pending, and after approval.
    for (record, version) in [(&later_pending, 1), (&approved, 1)] {
        let mut next = record.clone();
        next.state = RequestState::Denied;
        assert!(
            store.compare_and_set(version, &next).await.expect("cas"),
            "deny {}",
            record.id
        );
    }
    assert_eq!(
        listed(filter.clone()).await,
        vec![approved.id, later_pending.id, stored_denied.id],
        "every denial of the action, newest first"
    );
    assert_eq!(
        listed(ListFilter {
            limit: Some(2),
            ..filter.clone()
        })
        .await,
        vec![approved.id, later_pending.id]
    );
    assert_eq!(
        listed(ListFilter {
            denied_action: Some(other_denied.request.action_key()),
            ..Default::default()
        })
        .await,
        vec![other_denied.id]
    );
    assert!(
        listed(ListFilter {
            denied_action: Some(
                expired
                    .request
                    .params(serde_json::json!({"rows": 1}))
                    .action_key()
            ),
            ..Default::default()
        })
        .await
        .is_empty()
    );
}

/// Through the gate, under a requirement with `cooldown_after_denial`: after a denial the same
/// action, reworded, is refused at once with the reviewer's reason and stores nothing; another
/// action is asked for; once the cool-down has run from the denial, the same action is asked
/// for again.
pub async fn gate_refuses_asking_again_after_a_denial(store: Arc<dyn Store>) {
    let (clock, audit) = parts();
    let gate = fixtures::gate_requiring(
        approvals_core::Requirement::groups(["data-owners"])
            .cooldown_after_denial(std::time::Duration::from_secs(3600)),
        store.clone(),
        clock.clone(),
        audit.clone(),
    );
    let Submission::Pending(first) = gate.submit(&export_request()).await.expect("submit") else {
        panic!("the policy requires approval");
    };
    clock.advance(TimeDelta::minutes(50));
    gate.decide(
        first,
        Review::deny(reviewer("sam@example.com")).reason("not this quarter"),
    )
    .await
    .expect("deny");
    let stored = || {
        let store = store.clone();
        async move {
            store
                .list(&ListFilter::default())
                .await
                .expect("list")
                .len()
        }
    };
    // 59 minutes after the denial (109 after the request): still refused, reworded or not.
    clock.advance(TimeDelta::minutes(59));
    for action in [
        export_request(),
        export_request().justification("please, it is urgent"),
        export_request().idempotency_key("a-new-key"),
        // The preview is words around the action: a new one is the same action.
        export_request().preview(approvals_core::Preview::dry_run("0 rows, honestly")),
    ] {
        match gate.submit(&action).await {
            Err(GuardError::DeniedRecently {
                id,
                by,
                reason,
                until,
            }) => {
                assert_eq!(id, first);
                assert_eq!(by, "sam@example.com");
                assert_eq!(reason.as_deref(), Some("not this quarter"));
                assert_eq!(until, epoch() + TimeDelta::minutes(110));
            }
            other => panic!("the same action must be refused after a denial, got {other:?}"),
        }
    }
    assert_eq!(stored().await, 1, "a refused resubmission stores nothing");
    assert_eq!(
        audit
            .names()
            .iter()
            .filter(|n| **n == "resubmission_refused")
            .count(),
        4
    );
    // Another action is asked for.
    let other = export_request().params(serde_json::json!({"rows": 10}));
    assert!(matches!(
        gate.submit(&other).await.expect("another action"),
        Submission::Pending(_)
    ));
    // The cool-down runs from the denial.
    clock.advance(TimeDelta::minutes(1));
    match gate
        .submit(&export_request())
        .await
        .expect("after the cool-down")
    {
        Submission::Pending(again) => assert_ne!(again, first),
        Submission::Allowed(_) => panic!("the policy requires approval"),
    }
    assert_eq!(stored().await, 3);
}

/// Through the gate, under a requirement with reminders at 50% and 90% of one hour: a sweep
/// that reads only what the store lists as due finds each reminder at its time, once (the
/// stored due time moves to the next point), and the request still expires at its deadline.
pub async fn gate_reminds_once_at_each_point(store: Arc<dyn Store>) {
    let (clock, audit) = parts();
    let gate = fixtures::gate_requiring(
        approvals_core::Requirement::groups(["data-owners"])
            .timeout(std::time::Duration::from_secs(3600))
            .reminders([50, 90]),
        store.clone(),
        clock.clone(),
        audit.clone(),
    );
    let Submission::Pending(id) = gate.submit(&export_request()).await.expect("submit") else {
        panic!("the policy requires approval");
    };
    // Sweeps at 29, 30, 31, 54, 55 and 56 minutes: reminders at 30 and 54.
    let mut reminded = Vec::new();
    for minutes in [29, 1, 1, 23, 1, 1] {
        clock.advance(TimeDelta::minutes(minutes));
        let report = gate.sweep().await.expect("sweep");
        reminded.push(report.reminded);
        assert_eq!(report.expired, 0);
    }
    assert_eq!(
        reminded,
        [0, 1, 0, 1, 0, 0],
        "one reminder at 30 and one at 54"
    );
    assert_eq!(fetch(&store, id).await.reminded, 2);
    clock.advance(TimeDelta::minutes(5));
    let report = gate.sweep().await.expect("sweep");
    assert_eq!((report.expired, report.reminded), (1, 0));
    assert_eq!(fetch(&store, id).await.state, RequestState::Expired);
    assert_eq!(
        audit.names().iter().filter(|n| **n == "reminded").count(),
        2
    );
}

/// Through the gate: an approval covers the action with the preview its reviewers saw. The
/// same action with another preview (swapped after the approval) is another action: the
/// grant is refused for it and nothing runs, asking with it makes a new request, and under
/// the approved request's idempotency key it is refused. The stored record keeps the preview
/// the reviewers saw, and the approved action still runs once.
pub async fn gate_binds_the_approval_to_the_preview(store: Arc<dyn Store>) {
    use approvals_core::Preview;
    let (clock, audit) = parts();
    let gate = fixtures::gate(store.clone(), clock, audit.clone());
    let rows = |total| {
        Preview::rows(
            vec!["id".into(), "email".into()],
            vec![vec!["1".into(), "ann@example.com".into()]],
            Some(total),
        )
    };
    let seen = export_request()
        .preview(rows(1))
        .idempotency_key("export-1");
    let swaps = [
        export_request().preview(rows(1_000_000)),
        export_request().preview(Preview::dry_run("1 row")),
        export_request(),
    ];
    let Submission::Pending(id) = gate.submit(&seen).await.expect("submit") else {
        panic!("the policy requires approval");
    };
    gate.decide(id, Review::approve(reviewer("sam@example.com")))
        .await
        .expect("approve");
    let record = store.get(id).await.expect("get").expect("stored");
    assert_eq!(
        record.request.context.preview,
        Some(rows(1)),
        "the store keeps the preview the reviewers saw"
    );
    assert_eq!(record.digest, seen.digest());

    let ran = AtomicUsize::new(0);
    for swapped in &swaps {
        assert_ne!(swapped.digest(), seen.digest());
        let grant = gate.wait(id).await.expect("grant");
        let err = gate
            .execute(grant, swapped, || async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, GuardError>(())
            })
            .await
            .expect_err("a grant for another preview");
        assert!(
            matches!(err, GuardError::DigestMismatch { .. }),
            "a swapped preview must be refused as another digest, got {err:?}"
        );
        match gate
            .submit(&swapped.clone().idempotency_key("export-1"))
            .await
        {
            Err(GuardError::IdempotencyConflict { .. }) => {}
            other => panic!("the approved request's key with another preview, got {other:?}"),
        }
        match gate.submit(swapped).await.expect("submit") {
            Submission::Pending(other) => assert_ne!(other, id),
            Submission::Allowed(_) => panic!("a swapped preview was allowed without review"),
        }
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "nothing ran for a swap");
    let grant = gate.wait(id).await.expect("grant");
    gate.execute(grant, &seen, || async {
        ran.fetch_add(1, Ordering::SeqCst);
        Ok::<_, GuardError>(())
    })
    .await
    .expect("the approved action runs");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// A standing grant on this store: racing actions take exactly its uses (each one
/// compare-and-set on the grant), the count survives the store's round trip, a covered action
/// runs once, and after a revocation (a deny) the next action is asked for.
pub async fn gate_takes_each_standing_grant_use_once(store: Arc<dyn Store>) {
    use approvals_core::standing::StandingStatus;
    use approvals_core::{Requirement, StandingProposal};
    let (clock, audit) = parts();
    let gate = fixtures::gate_requiring(
        Requirement::groups(["data-owners"]).standing(std::time::Duration::from_secs(3600), 3),
        store.clone(),
        clock,
        audit.clone(),
    );
    let grant = gate
        .propose_standing(
            StandingProposal {
                kind: "data.export".into(),
                resource: "db://prod/*".into(),
                initiator: fixtures::billing_agent(),
                duration: std::time::Duration::from_secs(1800),
                uses: 3,
                justification: "month-end exports".into(),
                environment: None,
            },
            reviewer("kim@example.com"),
        )
        .await
        .expect("proposed");
    gate.decide(grant, Review::approve(reviewer("sam@example.com")))
        .await
        .expect("approved");

    let asked = join_all((0..8).map(|i| {
        let gate = gate.clone();
        async move {
            let action = export_request().params(serde_json::json!({ "table": i }));
            match gate.submit(&action).await.expect("submit") {
                Submission::Pending(id) => id,
                Submission::Allowed(_) => panic!("stored either way"),
            }
        }
    }))
    .await;
    let mut covered = Vec::new();
    for id in &asked {
        let record = store.get(*id).await.expect("get").expect("stored");
        match record.state {
            RequestState::Approved => covered.push(*id),
            RequestState::Pending => {}
            other => panic!("an action is approved or asked for, not {other}"),
        }
    }
    assert_eq!(covered.len(), 3, "exactly the grant's uses");
    let stored = store.get(grant).await.expect("get").expect("stored");
    let status = StandingStatus::of(&stored).expect("a standing grant");
    assert_eq!((status.used, status.uses_left), (3, 0));
    assert_eq!(
        audit
            .names()
            .iter()
            .filter(|n| **n == "standing_grant_used")
            .count(),
        3
    );

    let first = covered[0];
    let record = store.get(first).await.expect("get").expect("stored");
    let action = export_request().params((*record.request.params).clone());
    let ran = AtomicUsize::new(0);
    let grant_for_action = gate.wait(first).await.expect("a covered action's grant");
    gate.execute(grant_for_action, &action, || async {
        ran.fetch_add(1, Ordering::SeqCst);
        Ok::<_, GuardError>(())
    })
    .await
    .expect("runs");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(
        gate.wait(first).await.is_err(),
        "its single-use grant is used"
    );

    gate.revoke_standing(grant, Review::deny(reviewer("sam@example.com")))
        .await
        .expect("revoked");
    assert_eq!(
        store.get(grant).await.expect("get").expect("stored").state,
        RequestState::Denied
    );
    let after = export_request().params(serde_json::json!({ "table": "after" }));
    let Submission::Pending(id) = gate.submit(&after).await.expect("submit") else {
        panic!("stored");
    };
    assert_eq!(
        store.get(id).await.expect("get").expect("stored").state,
        RequestState::Pending,
        "asked for after the revocation"
    );
}

/// A plan of three exports, approved once: racing askers of its first item run it once; the
/// other items each run once; an item with changed parameters is asked for; what was used
/// survives the store; after the plan is revoked its last item is asked for.
pub async fn gate_runs_each_plan_item_once(store: Arc<dyn Store>) {
    use approvals_core::Requirement;
    use approvals_core::plan::PlanStatus;
    let (clock, audit) = parts();
    let gate = fixtures::gate_requiring(
        Requirement::groups(["data-owners"]),
        store.clone(),
        clock,
        audit.clone(),
    );
    let item = |table: &str| export_request().params(serde_json::json!({ "table": table }));
    let items = [item("a"), item("b"), item("c")];
    let plan = gate
        .submit_plan(&items, Some("month-end exports".into()))
        .await
        .expect("submitted");
    gate.decide(plan, Review::approve(reviewer("sam@example.com")))
        .await
        .expect("approved");
    gate.wait_plan(plan).await.expect("the plan is approved");

    let ask = |action: ActionRequest| {
        let gate = gate.clone();
        let store = store.clone();
        async move {
            let Submission::Pending(id) = gate.submit(&action).await.expect("submit") else {
                panic!("stored either way");
            };
            store.get(id).await.expect("get").expect("stored")
        }
    };
    let raced = join_all((0..8).map(|_| ask(item("a").in_plan(plan)))).await;
    let ran: Vec<&RequestRecord> = raced
        .iter()
        .filter(|r| r.state == RequestState::Approved)
        .collect();
    assert_eq!(ran.len(), 1, "one item runs once, however many ask for it");
    assert!(
        raced
            .iter()
            .all(|r| r.state == RequestState::Approved || r.state == RequestState::Pending)
    );
    let changed = ask(export_request()
        .params(serde_json::json!({ "table": "b", "rows": 1 }))
        .in_plan(plan))
    .await;
    assert_eq!(changed.state, RequestState::Pending, "changed parameters");
    assert_eq!(
        ask(item("b").in_plan(plan)).await.state,
        RequestState::Approved
    );
    let stored = store.get(plan).await.expect("get").expect("stored");
    let status = PlanStatus::of(&stored).expect("a plan");
    assert_eq!(status.used, vec![0, 1]);
    assert_eq!(
        audit
            .names()
            .iter()
            .filter(|n| **n == "plan_item_used")
            .count(),
        2
    );

    let first = ran[0].id;
    let ran_once = AtomicUsize::new(0);
    let grant = gate.wait(first).await.expect("the item's grant");
    gate.execute(grant, &item("a"), || async {
        ran_once.fetch_add(1, Ordering::SeqCst);
        Ok::<_, GuardError>(())
    })
    .await
    .expect("runs");
    assert_eq!(ran_once.load(Ordering::SeqCst), 1);

    gate.decide(plan, Review::deny(reviewer("sam@example.com")))
        .await
        .expect("revoked");
    assert_eq!(
        ask(item("c").in_plan(plan)).await.state,
        RequestState::Pending,
        "asked for after the plan is revoked"
    );
}

/// A rule that lets reviewers edit `/rows`, quorum 2: two reviewers racing to edit the same
/// version leave exactly one edit; the edited action, its digest and the edit survive the
/// store; the other reviewer's approval of the edited digest approves it; the grant runs only
/// the edited action; a retry under the idempotency key re-attaches.
pub async fn gate_runs_only_the_edited_action(store: Arc<dyn Store>) {
    use approvals_core::Requirement;
    let (clock, audit) = parts();
    let gate = fixtures::gate_requiring(
        Requirement::groups(["data-owners"])
            .quorum(2)
            .editable(["/rows"]),
        store.clone(),
        clock,
        audit.clone(),
    );
    let action = export_request().idempotency_key("edited-export");
    let Submission::Pending(id) = gate.submit(&action).await.expect("submit") else {
        panic!("needs approval");
    };
    let asked = fetch(&store, id).await;
    let edit = |who: &'static str, rows: u64| {
        let gate = gate.clone();
        let mut params = (*asked.request.params).clone();
        params["rows"] = serde_json::json!(rows);
        let review = Review::approve(reviewer(who))
            .for_digest(asked.digest)
            .edit(params);
        async move { gate.decide(id, review).await }
    };
    let (sam, kim) = futures::join!(edit("sam@example.com", 10), edit("kim@example.com", 20));
    let (winner, loser) = match (&sam, &kim) {
        (Ok(_), Err(_)) => ("sam@example.com", kim.as_ref().err()),
        (Err(_), Ok(_)) => ("kim@example.com", sam.as_ref().err()),
        other => panic!("exactly one edit of one version: {other:?}"),
    };
    assert!(
        matches!(loser, Some(ReviewError::DigestMismatch { .. })),
        "the slower edit saw the old version: {loser:?}"
    );
    let edited = fetch(&store, id).await;
    assert_eq!(edited.state, RequestState::Pending);
    assert_ne!(edited.digest, asked.digest);
    assert_eq!(
        edited.digest,
        edited.request.digest(),
        "the stored digest is the edited action's"
    );
    assert_eq!(edited.asked_digest(), asked.digest);
    assert_eq!(edited.approvers().len(), 1);
    let change = &edited
        .last_edit()
        .and_then(|r| r.edit.as_ref())
        .expect("the edit")
        .changes;
    assert_eq!(change[0].field, "/rows");
    assert!(edited.unaudited_decisions().is_empty());

    let other = if winner == "sam@example.com" {
        "kim@example.com"
    } else {
        "sam@example.com"
    };
    gate.decide(
        id,
        Review::approve(reviewer(other)).for_digest(edited.digest),
    )
    .await
    .expect("the second approval of the edited digest");
    let Submission::Pending(again) = gate.submit(&action).await.expect("re-attached") else {
        panic!("re-attaches");
    };
    assert_eq!(again, id);
    let grant = gate.wait(id).await.expect("granted");
    let approved = grant.edited_action().expect("the edited action").clone();
    let refused = gate
        .execute(grant, &action, || async { Ok::<_, GuardError>(()) })
        .await
        .expect_err("the asked action no longer runs");
    assert!(matches!(refused, GuardError::Edited { .. }), "{refused:?}");
    let grant = gate.wait(id).await.expect("still approved");
    gate.execute(grant, &approved, || async { Ok::<_, GuardError>(()) })
        .await
        .expect("the edited action runs");
    assert_eq!(fetch(&store, id).await.state, RequestState::Executed);
    assert_eq!(audit.names().iter().filter(|n| **n == "edited").count(), 1);
}

/// A request reviewers edited and then denied, under a rule with a cool-down: asking again for
/// the action as it was first asked is refused at once, whichever store lists the denials.
pub async fn gate_refuses_the_asked_action_after_its_edit_is_denied(store: Arc<dyn Store>) {
    use approvals_core::Requirement;
    let (clock, audit) = parts();
    let gate = fixtures::gate_requiring(
        Requirement::groups(["data-owners"])
            .quorum(2)
            .editable(["/rows"])
            .cooldown_after_denial(std::time::Duration::from_secs(3600)),
        store.clone(),
        clock,
        audit,
    );
    let action = export_request();
    let Submission::Pending(id) = gate.submit(&action).await.expect("submit") else {
        panic!("needs approval");
    };
    let asked = fetch(&store, id).await;
    let mut params = (*asked.request.params).clone();
    params["rows"] = serde_json::json!(10);
    gate.decide(
        id,
        Review::approve(reviewer("kim@example.com"))
            .for_digest(asked.digest)
            .edit(params),
    )
    .await
    .expect("edited");
    let edited = fetch(&store, id).await;
    gate.decide(
        id,
        Review::deny(reviewer("sam@example.com"))
            .reason("not this week")
            .for_digest(edited.digest),
    )
    .await
    .expect("denied");
    match gate.submit(&action).await {
        Err(GuardError::DeniedRecently { id: earlier, .. }) => assert_eq!(earlier, id),
        other => panic!("the asked action must be refused during the cool-down: {other:?}"),
    }
}

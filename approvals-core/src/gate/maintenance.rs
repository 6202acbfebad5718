//! Maintenance: sweeps, and executing the transitions that time makes due (expire, escalate,
//! remind, lapse, recover) and cancellation, each through its rule in [`lifecycle`].

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::io::to_delta;
use super::{Gate, SweepReport};
use crate::approver::DispatchReason;
use crate::audit::AuditEvent;
use crate::error::GuardError;
use crate::lifecycle::{self, Due, Step};
use crate::observe;
use crate::request::Principal;
use crate::store::{DueCursor, ListFilter, RequestId, RequestRecord, Verdict};

/// Records a sweep reads at a time.
const SWEEP_PAGE: usize = 500;

impl Gate {
    /// Expires, escalates, reminds and lapses whatever is due, audits decisions whose reviewer
    /// persisted them but died or failed before auditing them (after `audit_recovery_after`),
    /// and revokes credentials that a run left outstanding once they are due.
    /// Safe to run on every replica at once: each change is a compare-and-set, so each
    /// happens once.
    pub async fn sweep(&self) -> Result<SweepReport, GuardError> {
        let mut report = SweepReport::default();
        let now = self.now();
        let recovery = to_delta(self.inner.audit_recovery_after);
        // Only records that may have something due (an indexed time in the SQL stores), not
        // every open request; a page at a time, so that a sweep after a long pause holds one
        // page in memory, and the store reads the due index in order whatever its statistics.
        let mut due = ListFilter {
            due_by: Some(now),
            limit: Some(SWEEP_PAGE),
            ..Default::default()
        };
        loop {
            let records = self.store_call(self.inner.store.list(&due)).await?;
            let full = records.len() == SWEEP_PAGE;
            due.due_after = records.last().and_then(DueCursor::of);
            self.sweep_page(records, now, recovery, &mut report).await?;
            if !full || due.due_after.is_none() {
                break;
            }
        }
        report.credentials_expired = self.revoke_expired_credentials(now).await;
        Ok(report)
    }

    /// Does what is due about each record of one page of a sweep.
    async fn sweep_page(
        &self,
        records: Vec<RequestRecord>,
        now: DateTime<Utc>,
        recovery: TimeDelta,
        report: &mut SweepReport,
    ) -> Result<(), GuardError> {
        for record in records {
            match lifecycle::due(&record, now, recovery) {
                Due::Expire => report.expired += usize::from(self.expire(&record).await?),
                Due::Escalate => report.escalated += usize::from(self.escalate(&record).await?),
                Due::Remind => report.reminded += usize::from(self.remind(&record).await?),
                Due::Lapse => report.lapsed += usize::from(self.lapse(&record).await?),
                // A decision its reviewer persisted but did not audit (it died or failed in
                // between), which no waiting agent has recorded since.
                Due::Recover => report.recovered += self.recover(&record).await?,
                // A credential its run left outstanding (the process died, or its own
                // revocation failed).
                Due::Revoke => {
                    report.revoked += usize::from(self.revoke_left_behind(&record).await?);
                }
                Due::Nothing(_) => {}
            }
        }
        Ok(())
    }

    /// Runs [`sweep`](Gate::sweep) every `interval` until the returned handle is aborted. A
    /// failed sweep is logged (`tracing` warning) and tried again at the next interval.
    pub fn spawn_sweeper(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let gate = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if let Err(e) = gate.sweep().await {
                    tracing::warn!(error = %e, "sweep failed; trying again at the next interval");
                }
            }
        })
    }

    /// Pending -> Expired. Returns whether this call made the change.
    pub(super) async fn expire(&self, record: &RequestRecord) -> Result<bool, GuardError> {
        match lifecycle::expire(record, self.now()) {
            Ok(step) => Ok(self.commit(record, step).await?.is_some()),
            Err(_) => Ok(false),
        }
    }

    /// Approved -> Lapsed. Returns whether this call made the change.
    pub(super) async fn lapse(&self, record: &RequestRecord) -> Result<bool, GuardError> {
        match lifecycle::lapse(record, self.now()) {
            Ok(step) => Ok(self.commit(record, step).await?.is_some()),
            Err(_) => Ok(false),
        }
    }

    /// Marks the request escalated and asks the escalation reviewers.
    pub(super) async fn escalate(&self, record: &RequestRecord) -> Result<bool, GuardError> {
        let step = lifecycle::escalate(record, self.now());
        self.commit_and_tell(record, step, DispatchReason::Escalation)
            .await
    }

    /// Records that a reminder point passed, then nudges the reviewers through every channel
    /// ([`DispatchReason::Reminder`]). On every replica at once, one of them reminds.
    pub(super) async fn remind(&self, record: &RequestRecord) -> Result<bool, GuardError> {
        let step = lifecycle::remind(record, self.now());
        self.commit_and_tell(record, step, DispatchReason::Reminder)
            .await
    }

    /// Commits a step that keeps the request pending (escalate, remind) and tells every
    /// channel why. Returns whether this call made the change: a step that does not apply, or
    /// that another replica committed first, tells nobody.
    async fn commit_and_tell(
        &self,
        record: &RequestRecord,
        step: Result<Step, lifecycle::NotApplicable>,
        reason: DispatchReason,
    ) -> Result<bool, GuardError> {
        let Ok(step) = step else {
            return Ok(false);
        };
        let Some(next) = self.commit(record, step).await? else {
            return Ok(false);
        };
        self.dispatch(next, reason).await?;
        Ok(true)
    }

    /// Records the events of the decisions that their reviewers' `decide()` persisted but did
    /// not audit ([`lifecycle::recover`]), then clears their flags, each only its own. Returns
    /// how many decisions it recorded.
    pub(super) async fn recover(&self, record: &RequestRecord) -> Result<usize, GuardError> {
        let Some((step, decisions)) = lifecycle::recover(record)? else {
            return Ok(0);
        };
        for event in step.events {
            self.audit(self.event(record, event)).await?;
        }
        for decision in &decisions {
            self.mark_audited(record.id, *decision).await?;
        }
        Ok(decisions.len())
    }

    /// Clears the flag of `decision` once its events are recorded ([`lifecycle::audited`]),
    /// and wakes waiters. Only that decision's flag, by a compare-and-set on the record's
    /// version: one decision's recording never clears another's. Returns the record as it now
    /// is.
    pub(super) async fn mark_audited(
        &self,
        id: RequestId,
        decision: Verdict,
    ) -> Result<Option<RequestRecord>, GuardError> {
        let record = self.update(id, |r| lifecycle::audited(r, decision)).await?;
        self.barrier().await?;
        self.wake(id);
        Ok(record)
    }

    /// Pending -> Cancelled, retried against concurrent changes.
    pub(super) async fn cancel_pending(
        &self,
        id: RequestId,
        by: Option<Principal>,
        reason: Option<String>,
    ) -> Result<CancelOutcome, GuardError> {
        loop {
            let Some(record) = self.store_call(self.inner.store.get(id)).await? else {
                return Ok(CancelOutcome::Missing);
            };
            let Ok(step) = lifecycle::cancel(&record, by.clone(), reason.clone(), self.now())
            else {
                return Ok(CancelOutcome::NotPending(Box::new(record)));
            };
            if self.commit(&record, step).await?.is_some() {
                return Ok(CancelOutcome::Cancelled);
            }
        }
    }

    /// Executes one step: compare-and-set `record` to the step's record, audit its events,
    /// wake waiters and tell channels of a state change. `None` when another writer changed
    /// the record first (nothing was done).
    pub(super) async fn commit(
        &self,
        record: &RequestRecord,
        step: Step,
    ) -> Result<Option<RequestRecord>, GuardError> {
        let mut next = step.next;
        if !self.set_recorded(record, &next, step.events).await? {
            return Ok(None);
        }
        next.version = record.version + 1;
        observe::transition(
            next.id,
            record.state,
            next.state,
            next.created_at,
            self.now(),
        );
        self.barrier().await?;
        self.wake(next.id);
        if next.state != record.state {
            self.notify_channels(next.clone());
        }
        Ok(Some(next))
    }

    /// [`update`](Gate::update) that records `events` about the request with the change
    /// ([`Gate::set_recording`]), or alone when `change` leaves the record as it is.
    pub(super) async fn update_recorded(
        &self,
        id: RequestId,
        mut change: impl FnMut(&RequestRecord) -> Option<RequestRecord>,
        events: Vec<AuditEvent>,
    ) -> Result<Option<RequestRecord>, GuardError> {
        loop {
            let Some(record) = self.store_call(self.inner.store.get(id)).await? else {
                return Ok(None);
            };
            let Some(mut next) = change(&record) else {
                self.audit_all(&events).await?;
                return Ok(Some(record));
            };
            if self.set_recording(&record, &next, events.clone()).await? {
                next.version = record.version + 1;
                return Ok(Some(next));
            }
        }
    }

    /// Read-modify-write with retries, for bookkeeping that is not a lifecycle step
    /// (deliveries, audit flags, the execution outcome): `change` returns the new record, or
    /// `None` to leave it alone. Returns the record as it now is.
    pub(super) async fn update(
        &self,
        id: RequestId,
        mut change: impl FnMut(&RequestRecord) -> Option<RequestRecord>,
    ) -> Result<Option<RequestRecord>, GuardError> {
        loop {
            let Some(record) = self.store_call(self.inner.store.get(id)).await? else {
                return Ok(None);
            };
            let Some(mut next) = change(&record) else {
                return Ok(Some(record));
            };
            if self
                .store_call(self.inner.store.compare_and_set(record.version, &next))
                .await?
            {
                next.version = record.version + 1;
                return Ok(Some(next));
            }
        }
    }
}

/// What [`Gate::cancel_pending`] did.
pub(super) enum CancelOutcome {
    Cancelled,
    NotPending(Box<RequestRecord>),
    Missing,
}

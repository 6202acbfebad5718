//! Waiting for a decision, issuing the grant, and running the approved action exactly once.

use std::future::Future;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tracing::{Instrument, Span};

use super::io::{EventSubject, to_delta};
use super::{Gate, Grant};
use crate::audit::{EventDetail, RejectCause};
use crate::error::GuardError;
use crate::lifecycle::{self, Due, Unusable};
use crate::observe;
use crate::request::{Action, Principal};
use crate::store::{RequestId, RequestRecord, RequestState};

impl Gate {
    /// Waits for a pending request to be decided and returns its grant, or the refusal.
    /// Safe to call again after a restart, from any process sharing the store.
    pub async fn wait(&self, id: RequestId) -> Result<Grant, GuardError> {
        let span = observe::request_span();
        span.record("request", tracing::field::display(id));
        self.wait_unspanned(id).instrument(span).await
    }

    /// `wait` inside the caller's span; records how the wait ended in it.
    pub(super) async fn wait_unspanned(&self, id: RequestId) -> Result<Grant, GuardError> {
        let notify = self.waiter(id);
        let result = self.wait_loop(id, &notify).await;
        self.release_waiter(id, notify);
        let state = match &result {
            Ok(_) => "approved",
            Err(GuardError::Denied { .. }) => "denied",
            Err(GuardError::Expired { .. }) => "expired",
            Err(GuardError::Cancelled { .. }) => "cancelled",
            Err(GuardError::GrantLapsed { .. }) => "lapsed",
            Err(_) => "failed",
        };
        Span::current().record("state", state);
        result
    }

    async fn wait_loop(&self, id: RequestId, notify: &Notify) -> Result<Grant, GuardError> {
        self.forward_store_changes();
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Boxed: the record and the rarely taken transitions live only during the check,
            // not in every parked waiter's task (see the load test in reliability/).
            let deadline = match Box::pin(self.wait_step(id)).await? {
                WaitStep::Until(deadline) => deadline,
                WaitStep::Again => continue,
                WaitStep::Done(grant) => return Ok(*grant),
            };
            // Woken by a local decide(), by the store's notification of a change made
            // elsewhere (see forward_store_changes), at the deadline, or by the poll.
            tokio::select! {
                _ = &mut notified => {}
                _ = self.inner.clock.sleep_until(deadline) => {}
                _ = tokio::time::sleep(self.inner.poll_interval) => {}
            }
        }
    }

    /// One look at a waited-for request: the grant, the refusal, a transition that is due
    /// (then look again), or the time to wake up at the latest. A decision is returned only
    /// once its audit events are recorded: the reviewer's `decide()` records them, or this
    /// waiter does after the recovery delay.
    async fn wait_step(&self, id: RequestId) -> Result<WaitStep, GuardError> {
        let record = self
            .store_call(self.inner.store.get(id))
            .await?
            .ok_or_else(|| GuardError::InvalidRequest(format!("no approval request {id}")))?;
        let recovery = to_delta(self.inner.audit_recovery_after);
        let wake_at = match lifecycle::due(&record, self.now(), recovery) {
            Due::Expire => {
                self.expire(&record).await?;
                return Ok(WaitStep::Again);
            }
            Due::Escalate => {
                self.escalate(&record).await?;
                return Ok(WaitStep::Again);
            }
            Due::Lapse => {
                self.lapse(&record).await?;
                return Ok(WaitStep::Again);
            }
            Due::Recover => {
                self.recover(&record).await?;
                return Ok(WaitStep::Again);
            }
            Due::Nothing(wake_at) => wake_at,
        };
        let unaudited = record.unaudited_decisions();
        match (record.state, wake_at) {
            (RequestState::Pending, Some(at)) => Ok(WaitStep::Until(at)),
            (RequestState::Approved, Some(at)) if unaudited.approval => Ok(WaitStep::Until(at)),
            (RequestState::Denied, Some(at)) if unaudited.denial => Ok(WaitStep::Until(at)),
            (RequestState::Approved, _) => {
                Ok(WaitStep::Done(Box::new(self.issue_grant(record).await?)))
            }
            // Ended without a grant. (An approval that a recorded deny revoked may still be
            // unaudited; a sweep records it, and it does not hold up the refusal.)
            _ => Err(lifecycle::refusal(&record)),
        }
    }

    pub(super) async fn issue_grant(&self, record: RequestRecord) -> Result<Grant, GuardError> {
        let now = self.now();
        let expires_at = record.grant_expires_at.unwrap_or(now);
        let approvers: Vec<Principal> = record.approvers().into_iter().cloned().collect();
        self.audit(self.event(
            &record,
            EventDetail::GrantIssued {
                approvers: approvers.clone(),
                expires_at,
            },
        ))
        .await?;
        Ok(Grant {
            request_id: record.id,
            digest: record.digest,
            approvers,
            issued_at: now,
            expires_at,
            policy_rule: record.policy_rule.clone(),
            policy_version: record.policy_version.clone(),
            approved: true,
            initiator: record
                .request
                .initiator
                .clone()
                .or_else(|| self.inner.initiator.clone())
                .ok_or(GuardError::NoInitiator)?,
        })
    }

    // ------------------------------------------------------------------------------------
    // Running.

    /// Consumes `grant` and runs `f`, which performs `action`. Refuses (without running `f`)
    /// when the action's digest differs from the approved one, or the grant was already used
    /// or has lapsed. The outcome is audited as `executed`.
    pub async fn execute<A, F, Fut, T, E>(&self, grant: Grant, action: &A, f: F) -> Result<T, E>
    where
        A: Action + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<GuardError> + std::fmt::Display,
    {
        let (request, presented) = self
            .admit(grant.request_id, action.to_request(), &grant.initiator)
            .await?;
        let subject = EventSubject {
            id: grant.request_id,
            kind: request.kind.as_str().into(),
            resource: request.resource.as_str().into(),
            digest: grant.digest,
        };
        if presented != grant.digest {
            self.audit(subject.event(
                self.now(),
                EventDetail::GrantRejected {
                    cause: RejectCause::DigestMismatch,
                    detail: format!("presented {presented}"),
                },
            ))
            .await?;
            return Err(GuardError::DigestMismatch {
                id: grant.request_id,
                approved: grant.digest,
                presented,
            }
            .into());
        }
        if grant.approved {
            self.consume(&grant).await?;
        } else if self.now() >= grant.expires_at {
            return Err(GuardError::GrantLapsed {
                id: grant.request_id,
            }
            .into());
        }
        if let Err(e) = self
            .audit(subject.event(self.now(), EventDetail::GrantConsumed {}))
            .await
        {
            if grant.approved {
                self.finish(grant.request_id, Some(format!("not run: {e}")))
                    .await;
            }
            return Err(e.into());
        }

        let result = f().await;

        let error = result.as_ref().err().map(|e| e.to_string());
        // The action has run: report its own result whatever happens to the bookkeeping, so a
        // caller never retries an action that did run. The store keeps `Executing` if this
        // update fails, which still shows the grant was consumed.
        let _ = self
            .audit(subject.event(
                self.now(),
                EventDetail::Executed {
                    ok: error.is_none(),
                    error: error.clone(),
                    initiator: request.initiator.clone(),
                },
            ))
            .await;
        if grant.approved
            && let Some(record) = self.finish(grant.request_id, error).await
        {
            self.notify_channels(record);
        }
        result
    }

    /// Approved -> Executing, exactly once ([`lifecycle::consume`]).
    pub(super) async fn consume(&self, grant: &Grant) -> Result<(), GuardError> {
        loop {
            let record = self
                .store_call(self.inner.store.get(grant.request_id))
                .await?
                .ok_or_else(|| {
                    GuardError::InvalidRequest(format!("no approval request {}", grant.request_id))
                })?;
            let step = match lifecycle::consume(&record, grant.digest, self.now()) {
                Ok(step) => step,
                Err(Unusable::Lapsed) => {
                    self.lapse(&record).await?;
                    return Err(GuardError::GrantLapsed { id: record.id });
                }
                Err(Unusable::Refused(error, event)) => {
                    if let Some(event) = event {
                        self.audit(self.event(&record, *event)).await?;
                    }
                    return Err(*error);
                }
            };
            if self
                .store_call(self.inner.store.compare_and_set(record.version, &step.next))
                .await?
            {
                observe::transition(
                    record.id,
                    record.state,
                    step.next.state,
                    record.created_at,
                    self.now(),
                );
                return Ok(());
            }
        }
    }

    /// Executing -> Executed or Failed ([`lifecycle::finish`]); the record as it now is.
    pub(super) async fn finish(
        &self,
        id: RequestId,
        error: Option<String>,
    ) -> Option<RequestRecord> {
        let now = self.now();
        let finished = self
            .update(id, |r| {
                lifecycle::finish(r, error.clone(), now)
                    .ok()
                    .map(|s| s.next)
            })
            .await;
        match finished {
            Ok(record) => {
                if let Some(r) = &record {
                    observe::transition(id, RequestState::Executing, r.state, r.created_at, now);
                }
                record
            }
            Err(e) => {
                tracing::warn!(request = %id, error = %e, "the outcome was audited, but the store keeps the request `executing`");
                None
            }
        }
    }
}

/// What [`Gate::wait_step`] found.
enum WaitStep {
    /// Still waiting; wake up by this time.
    Until(DateTime<Utc>),
    /// A transition was made; look again.
    Again,
    /// Approved and audited: the grant.
    Done(Box<Grant>),
}

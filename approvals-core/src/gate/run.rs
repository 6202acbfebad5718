//! Waiting for a decision, issuing the grant, and running the approved action exactly once.

use std::future::Future;

use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::io::{EventSubject, MAX_REFUSAL_DETAIL_CHARS, to_delta};
use super::wait::ForGrant;
use super::{Gate, Grant};
use crate::audit::{EventDetail, RejectCause};
use crate::credential::{CredentialLease, RevokeReason};
use crate::error::GuardError;
use crate::lifecycle::{self, Due, Unusable};
use crate::observe;
use crate::plan::PLAN_KIND;
use crate::request::{Action, ActionRequest, Digest, Initiator, Principal};
use crate::store::{RequestId, RequestRecord, RequestState};

impl Gate {
    /// Waits for a pending request to be decided and returns its grant, or the refusal.
    /// Safe to call again after a restart, from any process sharing the store.
    ///
    /// Not an `async fn`, like [`run`](Gate::run): a door may hold many of these at once.
    pub fn wait(&self, id: RequestId) -> impl Future<Output = Result<Grant, GuardError>> {
        let span = observe::request_span();
        span.record("request", tracing::field::display(id));
        async move {
            let grant = self.wait_for::<ForGrant>(id).await?;
            // A door hands the grant out of the process: `grant_issued` is on disk first.
            // (`guard()` waits without this: its grant stays in the process until `execute`,
            // whose consumption is a barrier.) Boxed, so a waiting caller's task does not
            // keep room for the barrier's timers.
            Box::pin(self.barrier()).await?;
            Ok(grant)
        }
        .instrument(span)
    }

    /// One look at a waited-for request: the grant, the refusal, a transition that is due
    /// (then look again), or the time to wake up at the latest. A decision is returned only
    /// once its audit events are recorded: the reviewer's `decide()` records them, or this
    /// waiter does after the recovery delay.
    pub(super) async fn wait_step(&self, id: RequestId) -> Result<WaitStep, GuardError> {
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
            Due::Remind => {
                self.remind(&record).await?;
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
            // Revoking a credential left behind is a sweep's work; nobody waits on it.
            Due::Revoke => None,
            Due::Nothing(wake_at) => wake_at,
        };
        let unaudited = record.unaudited_decisions();
        match (record.state, wake_at) {
            (RequestState::Pending, Some(at)) => Ok(WaitStep::Until(at)),
            (RequestState::Approved, Some(at)) if unaudited.approval => Ok(WaitStep::Until(at)),
            (RequestState::Denied, Some(at)) if unaudited.denial => Ok(WaitStep::Until(at)),
            // A plan's approval is what its waiter waits for; its items each get a grant
            // when asked for.
            (RequestState::Approved, _) if record.request.kind == PLAN_KIND => {
                Ok(WaitStep::PlanApproved)
            }
            // A standing grant approves other actions; no grant is issued for it.
            (RequestState::Approved, _) => match lifecycle::not_runnable(&record) {
                Some(refused) => Err(refused),
                None => Ok(WaitStep::Done(Box::new(self.issue_grant(record).await?))),
            },
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
            edited: record
                .last_edit()
                .is_some()
                .then(|| Box::new(record.request.clone())),
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
        let run = self.start_run(&grant, action, None).await?;
        let result = f().await;
        let error = result.as_ref().err().map(|e| e.to_string());
        self.end_run(run, error, RevokeReason::Finished).await;
        result
    }

    /// The first half of [`execute`](Gate::execute): admits `action` under the grant's
    /// initiator, checks its digest, consumes the grant (planning credential `credential`
    /// in the same write) and records `grant_consumed`. The action may run once this returns.
    pub(super) async fn start_run<A: Action + ?Sized>(
        &self,
        grant: &Grant,
        action: &A,
        credential: Option<String>,
    ) -> Result<Run, GuardError> {
        let (request, presented) = self
            .admit(grant.request_id, action.to_request(), &grant.initiator)
            .await?;
        let subject = EventSubject {
            id: grant.request_id,
            kind: request.kind.clone(),
            resource: request.resource.clone(),
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
            if let Some(edited) = &grant.edited {
                return Err(GuardError::Edited {
                    id: grant.request_id,
                    approved: grant.digest,
                    action: edited.clone(),
                });
            }
            return Err(GuardError::DigestMismatch {
                id: grant.request_id,
                approved: grant.digest,
                presented,
            });
        }
        let credential = credential.map(|id| CredentialLease {
            id,
            scope: String::new(),
            expires_at: grant.expires_at,
        });
        let mut consumed = None;
        let mut consumed_recorded = false;
        if grant.approved {
            let (record, recorded) = self
                .consume(
                    grant.request_id,
                    grant.digest,
                    credential.as_ref().map(|c| c.id.clone()),
                )
                .await?;
            consumed = Some(record);
            consumed_recorded = recorded;
        } else if self.now() >= grant.expires_at {
            return Err(GuardError::GrantLapsed {
                id: grant.request_id,
            });
        }
        let run = Run {
            subject,
            request,
            stored: grant.approved,
            consumed,
            credential,
        };
        // The consumed grant and its events are on disk before the action can act on them.
        let recorded = match consumed_recorded {
            true => Ok(()),
            false => {
                self.audit(run.subject.event(self.now(), EventDetail::GrantConsumed {}))
                    .await
            }
        };
        let recorded = match recorded {
            Ok(()) => self.barrier().await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            self.end_run(run, Some(format!("not run: {e}")), RevokeReason::NotRun)
                .await;
            return Err(e);
        }
        Ok(run)
    }

    /// The second half of [`execute`](Gate::execute), once the action has run (or will not
    /// run: then `error` says "not run"): records `executed`, revokes the run's credential,
    /// and moves a stored request to Executed or Failed. The action's own result is the
    /// caller's whatever happens here, so a caller never retries an action that did run: the
    /// store keeps `Executing` if this update fails, which still shows the grant was
    /// consumed, and a credential whose revocation failed is left to a sweep.
    pub(super) async fn end_run(&self, run: Run, error: Option<String>, reason: RevokeReason) {
        let executed = EventDetail::Executed {
            ok: error.is_none(),
            error: error.clone(),
            initiator: run.request.initiator.clone(),
        };
        if run.stored && run.credential.is_none() && self.records_with_writes() {
            match self
                .finish_recorded(run.subject.id, error, executed, run.consumed)
                .await
            {
                Ok(Some(record)) => self.notify_channels_after_barrier(record),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(request = %run.subject.id, error = %e, "the outcome could not be recorded; the store keeps the request `executing`");
                }
            }
            return;
        }
        let _ = self.audit(run.subject.event(self.now(), executed)).await;
        if let Some(lease) = &run.credential {
            self.revoke_credential(&run, lease, reason).await;
        }
        if run.stored
            && let Some(record) = self.finish(run.subject.id, error).await
        {
            self.notify_channels_after_barrier(record);
        }
    }

    /// Approved -> Executing, exactly once ([`lifecycle::consume`]), with `credential`
    /// planned ([`lifecycle::consume_with_credential`]) when given. Returns the record as
    /// stored, and whether `grant_consumed` was recorded with it (when the store keeps the
    /// audit log, [`Gate::set_recorded`]); otherwise the caller records it.
    pub(super) async fn consume(
        &self,
        id: RequestId,
        digest: Digest,
        credential: Option<String>,
    ) -> Result<(Box<RequestRecord>, bool), GuardError> {
        loop {
            let record = self
                .store_call(self.inner.store.get(id))
                .await?
                .ok_or_else(|| GuardError::InvalidRequest(format!("no approval request {id}")))?;
            let now = self.now();
            let step = match &credential {
                Some(credential) => {
                    lifecycle::consume_with_credential(&record, digest, now, credential.clone())
                }
                None => lifecycle::consume(&record, digest, now),
            };
            let step = match step {
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
            let joint = self.records_with_writes();
            let set = if joint {
                self.set_recorded(&record, &step.next, vec![EventDetail::GrantConsumed {}])
                    .await?
            } else {
                self.store_call(self.inner.store.compare_and_set(record.version, &step.next))
                    .await?
            };
            if set {
                observe::transition(
                    record.id,
                    record.state,
                    step.next.state,
                    record.created_at,
                    self.now(),
                );
                let mut consumed = Box::new(step.next);
                consumed.version = record.version + 1;
                return Ok((consumed, joint));
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Running in two steps, for doors whose callers run the action themselves.

    /// Starts running approved request `id` for `caller`, whom a door (the HTTP agent API,
    /// `approvals exec`, the MCP gateway) authenticated: consumes its grant for `digest`,
    /// exactly once (Approved -> Executing, [`lifecycle::consume`]), and records
    /// `grant_consumed`. The caller may run the action once this returns, and reports how it
    /// ended with [`finish_execution`](Gate::finish_execution), from this process or any
    /// other sharing the store. [`execute`](Gate::execute) does both around a closure.
    ///
    /// Refused (and audited as `grant_rejected` where the rules say so) for anyone but the
    /// request's initiator ([`lifecycle::check_executor`]), another digest, a grant already
    /// used, a request not approved, or a grant whose time is over (the request lapses).
    pub async fn start_execution(
        &self,
        id: RequestId,
        digest: Digest,
        caller: &Initiator,
    ) -> Result<RequestRecord, GuardError> {
        let record = self.load(id).await?;
        self.check_executor(&record, caller).await?;
        if record.digest != digest {
            self.audit(self.event(
                &record,
                EventDetail::GrantRejected {
                    cause: RejectCause::DigestMismatch,
                    detail: format!("presented {digest}"),
                },
            ))
            .await?;
            return Err(GuardError::DigestMismatch {
                id,
                approved: record.digest,
                presented: digest,
            });
        }
        let (consumed, consumed_recorded) = self.consume(id, digest, None).await?;
        let recorded = match consumed_recorded {
            true => Ok(()),
            false => {
                self.audit(self.event(&record, EventDetail::GrantConsumed {}))
                    .await
            }
        };
        let recorded = match recorded {
            Ok(()) => self.barrier().await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            self.finish(id, Some(format!("not run: {e}"))).await;
            return Err(e);
        }
        Ok(*consumed)
    }

    /// Records how an execution started with [`start_execution`](Gate::start_execution)
    /// ended: `error` is `None` when the action succeeded, or its (short) error text. Audits
    /// `executed` and moves the request to Executed or Failed ([`lifecycle::finish`]); returns
    /// the record as it now is. Refused for anyone but the initiator, and for a request that
    /// is not executing: one never started ([`GuardError::InvalidRequest`]) or one whose
    /// outcome is already recorded, or being recorded by this gate ([`GuardError::GrantUsed`]):
    /// two reports racing through one gate record one outcome.
    pub async fn finish_execution(
        &self,
        id: RequestId,
        caller: &Initiator,
        error: Option<String>,
    ) -> Result<RequestRecord, GuardError> {
        let Some(_reporting) = Reporting::claim(&self.inner.reporting, id) else {
            return Err(GuardError::GrantUsed {
                id,
                state: RequestState::Executing,
            });
        };
        let record = self.load(id).await?;
        self.check_executor(&record, caller).await?;
        if let Err(e) = lifecycle::finish(&record, error.clone(), self.now()) {
            return Err(match record.state {
                state @ (RequestState::Executed | RequestState::Failed) => {
                    GuardError::GrantUsed { id, state }
                }
                _ => GuardError::InvalidRequest(format!(
                    "request {id} cannot take an outcome ({e}): start the execution first"
                )),
            });
        }
        let executed = EventDetail::Executed {
            ok: error.is_none(),
            error: error.clone(),
            initiator: record.request.initiator.clone(),
        };
        let finished = if self.records_with_writes() {
            self.finish_recorded(id, error, executed, Some(Box::new(record)))
                .await?
        } else {
            self.audit(self.event(&record, executed)).await?;
            self.finish(id, error).await
        };
        let finished = finished.ok_or_else(|| {
            GuardError::unavailable(
                crate::error::Component::Store,
                "the outcome was audited, but the store keeps the request executing",
            )
        })?;
        // The caller is outside this process: it hears only what is on disk.
        self.barrier().await?;
        self.notify_channels(finished.clone());
        Ok(finished)
    }

    /// Records that a grant token was refused for request `id` at a door (forged, or another
    /// request's), as `grant_rejected`. Returns whether it was recorded (`false` when the
    /// request does not exist or the audit sink failed).
    pub async fn record_rejected_grant(
        &self,
        id: RequestId,
        cause: RejectCause,
        detail: &str,
    ) -> bool {
        let detail = crate::text::truncate(detail, MAX_REFUSAL_DETAIL_CHARS).into_owned();
        self.record_about(id, EventDetail::GrantRejected { cause, detail })
            .await
    }

    pub(super) async fn load(&self, id: RequestId) -> Result<RequestRecord, GuardError> {
        self.store_call(self.inner.store.get(id))
            .await?
            .ok_or_else(|| GuardError::InvalidRequest(format!("no approval request {id}")))
    }

    /// [`lifecycle::check_executor`], with its refusal audited.
    async fn check_executor(
        &self,
        record: &RequestRecord,
        caller: &Initiator,
    ) -> Result<(), GuardError> {
        match lifecycle::check_executor(record, caller) {
            Ok(()) => Ok(()),
            Err(Unusable::Refused(error, event)) => {
                if let Some(event) = event {
                    self.audit(self.event(record, *event)).await?;
                }
                Err(*error)
            }
            Err(Unusable::Lapsed) => Err(GuardError::GrantLapsed { id: record.id }),
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

impl Gate {
    /// Executing -> Executed or Failed ([`lifecycle::finish`]) with its `executed` event in
    /// one transaction ([`Gate::set_recorded`]), for a store that keeps the audit log.
    /// Returns the record as it now is; when the request was not executing (its outcome is
    /// already recorded), records the event alone and returns `None`.
    /// `known` is the record as this gate last stored or read it, tried first; the store is
    /// read when it is absent or out of date.
    async fn finish_recorded(
        &self,
        id: RequestId,
        error: Option<String>,
        executed: EventDetail,
        mut known: Option<Box<RequestRecord>>,
    ) -> Result<Option<RequestRecord>, GuardError> {
        loop {
            let now = self.now();
            let record = match known.take() {
                Some(record) => *record,
                None => match self.store_call(self.inner.store.get(id)).await? {
                    Some(record) => record,
                    None => return Ok(None),
                },
            };
            let Ok(step) = lifecycle::finish(&record, error.clone(), now) else {
                self.audit(self.event(&record, executed)).await?;
                return Ok(None);
            };
            let mut next = step.next;
            let mut events = step.events;
            events.push(executed.clone());
            if self.set_recorded(&record, &next, events).await? {
                next.version = record.version + 1;
                observe::transition(
                    id,
                    RequestState::Executing,
                    next.state,
                    next.created_at,
                    now,
                );
                return Ok(Some(next));
            }
        }
    }
}

/// A run in progress ([`Gate::start_run`]): its grant consumed and audited.
pub(super) struct Run {
    pub(super) subject: EventSubject,
    /// The admitted request (its initiator the grant's).
    pub(super) request: ActionRequest,
    /// Whether the request is stored (approved by review), or was allowed by the policy.
    pub(super) stored: bool,
    /// The stored record as the grant's consumption left it, for recording the outcome
    /// without reading it again.
    pub(super) consumed: Option<Box<RequestRecord>>,
    /// The run's credential: planned, then as issued.
    pub(super) credential: Option<CredentialLease>,
}

/// What [`Gate::wait_step`] found.
pub(super) enum WaitStep {
    /// Still waiting; wake up by this time.
    Until(DateTime<Utc>),
    /// A transition was made; look again.
    Again,
    /// Approved and audited: the grant.
    Done(Box<Grant>),
    /// A plan, approved and audited (no grant of its own).
    PlanApproved,
}

/// An outcome report of one request in progress through this gate; dropping it ends the
/// claim.
struct Reporting<'a> {
    claims: &'a std::sync::Mutex<std::collections::HashSet<RequestId>>,
    id: RequestId,
}

impl<'a> Reporting<'a> {
    /// Claims `id`, or `None` when another report of it is in progress.
    fn claim(
        claims: &'a std::sync::Mutex<std::collections::HashSet<RequestId>>,
        id: RequestId,
    ) -> Option<Self> {
        let mut held = claims.lock().unwrap_or_else(|e| e.into_inner());
        // Not `then_some`: that would build (and drop, locking again) a claim on refusal.
        if held.insert(id) {
            Some(Reporting { claims, id })
        } else {
            None
        }
    }
}

impl Drop for Reporting<'_> {
    fn drop(&mut self) {
        let mut held = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.id);
    }
}

//! Asking: admitting an action, asking the policy, storing and delivering a pending request.

use arcstr::ArcStr;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{Instrument, Span};

use super::io::{EventSubject, to_delta};
use super::wait::ForGrant;
use super::{Gate, Grant, Submission};
use crate::admission::{self, MAX_NAME_CHARS};
use crate::approver::{ApproverError, Decisions, DispatchReason};
use crate::audit::{AUDIT_SCHEMA_VERSION, AuditEvent, EventDetail};
use crate::bounds::{contained, within};
use crate::error::{Component, GuardError};
use crate::lifecycle;
use crate::observe;
use crate::policy::{Decision, Requirement};
use crate::request::{Action, ActionRequest, Digest, Initiator};
use crate::store::{Inserted, ListFilter, RequestId, RequestRecord, RequestState};
use crate::text::truncate;

impl Gate {
    /// Asks for permission to run `action` and waits until it is allowed, approved, or
    /// refused. The returned grant must be passed to [`execute`](Gate::execute) with the same
    /// action; [`run`](Gate::run) does both.
    ///
    /// Not an `async fn`, like [`run`](Gate::run): the instrumented future is the whole of it.
    pub fn guard<A: Action + ?Sized>(
        &self,
        action: &A,
    ) -> impl Future<Output = Result<Grant, GuardError>> {
        self.guard_unspanned(action)
            .instrument(observe::request_span())
    }

    /// The gate's initiator, whom every action through it is asked for.
    fn initiator(&self) -> Result<Arc<Initiator>, GuardError> {
        self.inner.initiator.clone().ok_or(GuardError::NoInitiator)
    }

    /// `guard` inside the caller's span.
    async fn guard_unspanned<A: Action + ?Sized>(&self, action: &A) -> Result<Grant, GuardError> {
        let initiator = self.initiator()?;
        // Boxed, so a waiting caller's task does not keep room for submit's larger state;
        // and the submission is taken apart before the wait, so the task does not keep it
        // either (a `match` on the awaited value would hold it until the match ends).
        let id = match Box::pin(self.submit_bound(initiator, action)).await? {
            Submission::Allowed(grant) => return Ok(grant),
            Submission::Pending(id) => id,
        };
        self.wait_for::<ForGrant>(id).await
    }

    /// Asks for permission and runs `f` once granted, consuming the grant and auditing the
    /// result (`executed` with `ok` or the error text). `f` never runs without a grant.
    ///
    /// Not an `async fn`: that would be one more layer of future around the instrumented
    /// one, kept by every waiting caller's task (32 bytes each; BENCHMARKS.md, "Load").
    pub fn run<A, F, Fut, T, E>(&self, action: &A, f: F) -> impl Future<Output = Result<T, E>>
    where
        A: Action + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<GuardError> + std::fmt::Display,
    {
        async move {
            // guard_unspanned written out: one layer of future less in every waiting task.
            let grant = 'granted: {
                let initiator = self.initiator()?;
                let id = match Box::pin(self.submit_bound(initiator, action)).await? {
                    Submission::Allowed(grant) => break 'granted grant,
                    Submission::Pending(id) => id,
                };
                self.wait_for::<ForGrant>(id).await?
            };
            // Boxed, so a waiting caller's task does not keep room for execute's larger state.
            Box::pin(self.execute(grant, action, f)).await
        }
        .instrument(observe::request_span())
    }

    /// [`run`](Gate::run) for an action whose policy rule lets reviewers edit it
    /// ([`edit`](crate::edit)): `f` receives the action that was approved, either `action` as
    /// asked or the version reviewers edited, and must perform that one. The grant is consumed
    /// for it, so only it can run.
    ///
    /// ```no_run
    /// # async fn demo(gate: approvals_core::Gate) -> Result<(), approvals_core::GuardError> {
    /// use approvals_core::ActionRequest;
    /// let export = ActionRequest::new("data.export", "db://prod/customers")
    ///     .params(serde_json::json!({"rows": 5000}));
    /// gate.run_approved(&export, |approved| async move {
    ///     let rows = approved.params["rows"].as_u64().unwrap_or(0);
    ///     println!("exporting {rows} rows");
    ///     Ok::<_, approvals_core::GuardError>(())
    /// })
    /// .await
    /// # }
    /// ```
    pub async fn run_approved<A, F, Fut, T, E>(&self, action: &A, f: F) -> Result<T, E>
    where
        A: Action + ?Sized,
        F: FnOnce(ActionRequest) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<GuardError> + std::fmt::Display,
    {
        async move {
            let grant = self.guard_unspanned(action).await?;
            let approved = match grant.edited_action() {
                Some(edited) => edited.clone(),
                None => action.to_request(),
            };
            let performed = approved.clone();
            Box::pin(self.execute(grant, &approved, move || f(performed))).await
        }
        .instrument(observe::request_span())
        .await
    }

    /// Evaluates policy and, if approval is needed, stores and dispatches the request without
    /// waiting. Use [`wait`](Gate::wait) later (possibly in another process) to get the grant.
    ///
    /// The initiator is the gate's own ([`GateBuilder::initiator`]); an action that names
    /// another is refused with [`GuardError::InitiatorMismatch`].
    pub async fn submit<A: Action + ?Sized>(&self, action: &A) -> Result<Submission, GuardError> {
        let initiator = self
            .inner
            .initiator
            .clone()
            .ok_or(GuardError::NoInitiator)?;
        let submission = self
            .submit_bound(initiator, action)
            .instrument(observe::request_span())
            .await?;
        // The answer may leave the process (a door relays it): what it says is on disk.
        self.barrier().await?;
        Ok(submission)
    }

    /// [`submit`](Gate::submit) for a caller that a door (the HTTP agent API, the MCP
    /// gateway, `approvals exec`) has authenticated: `caller` comes from that credential, never
    /// from the action, and the action is bound to it exactly as `submit` binds it to the
    /// gate's own initiator. Wait with [`wait`](Gate::wait); the grant carries `caller`, and
    /// [`execute`](Gate::execute) binds the action to it again.
    pub async fn submit_as<A: Action + ?Sized>(
        &self,
        caller: &Initiator,
        action: &A,
    ) -> Result<Submission, GuardError> {
        // The door's identity is compared like the gate's own, so it must compare safely.
        caller.validate().map_err(|e| {
            GuardError::InvalidRequest(format!("the caller's identity is refused: {e}"))
        })?;
        let submission = self
            .submit_bound(Arc::new(caller.clone()), action)
            .instrument(observe::request_span())
            .await?;
        self.barrier().await?;
        Ok(submission)
    }

    /// Admits `action` under `initiator`, asks the policy, records both, and grants, refuses
    /// or asks reviewers.
    ///
    /// This is the allow path of every `guard()` call, which boxes this future: the work that
    /// does not wait (admission, the digest, the policy, the events) is done in plain
    /// functions, and every branch the allow path never takes is a boxed future of its own,
    /// so the future keeps room for the two events and the audit append only (small enough
    /// for the allocator's per-thread cache).
    pub(super) async fn submit_bound<A: Action + ?Sized>(
        &self,
        initiator: Arc<Initiator>,
        action: &A,
    ) -> Result<Submission, GuardError> {
        let id = RequestId::new();
        let span = Span::current();
        span.record("request", tracing::field::display(id));
        let admitted = match self.admit_for_submit(action, &initiator, &span) {
            Ok(admitted) => admitted,
            Err(refused) => {
                observe::submitted(observe::Submitted::Refused);
                return Err(Box::pin(self.record_refusal(id, refused, &initiator)).await);
            }
        };
        if let Some(key) = &admitted.request.idempotency_key
            && let Some(submission) = Box::pin(self.reattach_by_key(key, admitted.digest)).await?
        {
            return Ok(submission);
        }
        let now = self.now();
        // In a block, so the events (borrowed by the append) take no room after it. One
        // append for both outcomes of asking the policy, so the future keeps room for one.
        let decided = {
            let asked = self.ask_policy(id, &admitted, now);
            // Both events go to the sink together (one commit for a sink that can).
            self.audit_all(asked.events()).await?;
            self.policy_decided(asked, &admitted.request, initiator, &span)?
        };
        match decided {
            Decided::Allowed(grant) => Ok(Submission::Allowed(grant)),
            Decided::RequiresApproval(required) => {
                Box::pin(self.require_approval(id, now, admitted, required)).await
            }
        }
    }

    /// `action` admitted under `initiator` ([`admission::admit`]), its name and digest
    /// recorded on `span`.
    fn admit_for_submit<A: Action + ?Sized>(
        &self,
        action: &A,
        initiator: &Arc<Initiator>,
        span: &Span,
    ) -> Result<AdmittedAction, Box<admission::Refused>> {
        let mut admitted = admission::admit(action.to_request(), initiator, &self.inner.context)?;
        span.record("kind", admitted.request.kind.as_str());
        span.record("resource", admitted.request.resource.as_str());
        span.record("digest", tracing::field::display(admitted.digest));
        let named_plan = admitted.request.plan.take();
        Ok(AdmittedAction {
            request: Arc::new(admitted.request),
            named_plan,
            digest: admitted.digest,
        })
    }

    /// Asks the policy about the admitted action: its `requested` and `policy_decided`
    /// events, or its `requested` event and the refusal when the policy fails. The decision is
    /// carried by its event, not copied: [`policy_decided`](Gate::policy_decided) takes it
    /// back out.
    fn ask_policy(&self, id: RequestId, admitted: &AdmittedAction, now: DateTime<Utc>) -> Asked {
        let request = &admitted.request;
        let subject = EventSubject {
            id,
            kind: request.kind.clone(),
            resource: request.resource.clone(),
            digest: admitted.digest,
        };
        let requested = subject.event(
            now,
            EventDetail::Requested {
                request: request.clone(),
            },
        );
        match self.evaluate(request) {
            Ok(Evaluated {
                decision,
                policy_version,
            }) => {
                let decided = subject.event(
                    now,
                    EventDetail::PolicyDecided {
                        decision,
                        policy_version,
                    },
                );
                Asked::Decided([requested, decided])
            }
            Err(refused) => Asked::Failed(requested, refused),
        }
    }

    /// What the policy's recorded answer means for the caller: a grant, a refusal, or
    /// asking reviewers.
    fn policy_decided(
        &self,
        asked: Asked,
        request: &ActionRequest,
        initiator: Arc<Initiator>,
        span: &Span,
    ) -> Result<Decided, GuardError> {
        let [requested, decided] = match asked {
            Asked::Decided(events) => events,
            Asked::Failed(_, refused) => return Err(refused),
        };
        let EventDetail::PolicyDecided {
            decision,
            policy_version,
        } = decided.detail
        else {
            unreachable!("ask_policy builds the second event as PolicyDecided")
        };
        if let Some(rule) = decision.rule() {
            span.record("rule", rule);
        }
        match decision {
            Decision::Allow { rule } => {
                observe::submitted(observe::Submitted::Allowed);
                Ok(Decided::Allowed(Grant {
                    request_id: requested.request_id,
                    digest: requested.digest,
                    approvers: Vec::new(),
                    issued_at: requested.at,
                    expires_at: requested.at + to_delta(self.inner.grant_ttl),
                    policy_rule: rule,
                    policy_version,
                    approved: false,
                    initiator,
                    edited: None,
                }))
            }
            Decision::Deny { rule, reason } => {
                observe::submitted(observe::Submitted::DeniedByPolicy);
                Err(GuardError::PolicyDenied {
                    kind: request.kind.to_string(),
                    resource: request.resource.to_string(),
                    rule: rule.to_string(),
                    reason,
                })
            }
            Decision::RequireApproval { rule, requirement } => {
                Ok(Decided::RequiresApproval(Required {
                    rule,
                    requirement,
                    policy_version,
                }))
            }
        }
    }

    /// A request the policy requires approval for: refused under a cool-down after a recent
    /// denial, approved as an item of the plan it names or by a standing grant, or stored and
    /// delivered to reviewers.
    async fn require_approval(
        &self,
        id: RequestId,
        now: DateTime<Utc>,
        admitted: AdmittedAction,
        required: Required,
    ) -> Result<Submission, GuardError> {
        let AdmittedAction {
            request,
            named_plan,
            digest,
        } = admitted;
        if let Some(denied) = self
            .denied_before(&request, &required.requirement, now)
            .await?
        {
            observe::submitted(observe::Submitted::DeniedRecently);
            let subject = EventSubject {
                id,
                kind: request.kind.clone(),
                resource: request.resource.clone(),
                digest,
            };
            self.audit(subject.event(now, denied.event())).await?;
            return Err(denied.error());
        }
        // Only an action that names a plan pays for looking in it.
        if let Some(plan) = named_plan.as_deref().copied()
            && let Some(approved) = self
                .approve_by_plan(plan, id, now, &request, digest, &required)
                .await?
        {
            observe::submitted(observe::Submitted::Plan);
            return Ok(approved);
        }
        if required.requirement.standing.is_some()
            && let Some(approved) = self
                .approve_by_standing(id, now, &request, digest, &required)
                .await?
        {
            observe::submitted(observe::Submitted::Standing);
            return Ok(approved);
        }
        let pending = self
            .create_pending(id, now, request, digest, required)
            .await;
        if pending.is_ok() {
            observe::submitted(observe::Submitted::Pending);
        }
        pending
    }

    /// The policy's decision on `request`, with the version that made it
    /// ([`Policy::evaluate_versioned`](crate::Policy::evaluate_versioned)). A policy error or
    /// panic is a refusal (`Unavailable`, component policy), never a pass and never an unwind.
    pub(super) fn evaluate(&self, request: &ActionRequest) -> Result<Evaluated, GuardError> {
        let (decision, policy_version) = contained(|| {
            let (decision, version) = self.inner.policy.evaluate_versioned(request);
            (decision, self.shared_policy_version(version))
        })
        .map_err(|panic| {
            GuardError::unavailable(Component::Policy, format!("the policy panicked: {panic}"))
        })?;
        let decision = decision.map_err(|e| GuardError::unavailable(Component::Policy, e))?;
        Ok(Evaluated {
            decision,
            policy_version,
        })
    }

    /// Admits `request` under the authenticated `initiator` ([`admission::admit`]): refused
    /// before anything else about it is recorded, with a `request_refused` event holding its
    /// size and digest, never its body. Admission itself does not wait; only a refusal's
    /// event does, in a boxed future, so every caller's future keeps no room for it.
    pub(super) async fn admit(
        &self,
        id: RequestId,
        request: ActionRequest,
        initiator: &Arc<Initiator>,
    ) -> Result<(ActionRequest, Digest), GuardError> {
        match admission::admit(request, initiator, &self.inner.context) {
            Ok(admitted) => Ok((admitted.request, admitted.digest)),
            Err(refused) => Err(Box::pin(self.record_refusal(id, refused, initiator)).await),
        }
    }

    /// Records a refused action's `request_refused` event and gives the caller's error.
    async fn record_refusal(
        &self,
        id: RequestId,
        refused: Box<admission::Refused>,
        initiator: &Arc<Initiator>,
    ) -> GuardError {
        let event = AuditEvent {
            schema: AUDIT_SCHEMA_VERSION,
            at: self.now(),
            request_id: id,
            kind: truncate(&refused.request.kind, MAX_NAME_CHARS).into(),
            resource: truncate(&refused.request.resource, MAX_NAME_CHARS).into(),
            digest: refused.digest,
            detail: EventDetail::RequestRefused {
                cause: refused.cause,
                detail: refused.detail,
                size: refused.size as u64,
                initiator: Some(initiator.clone()),
            },
        };
        // The action is refused either way; a failing sink cannot make it pass.
        if let Err(e) = self.record_bounded(&event).await {
            tracing::warn!(request = %id, error = %e, "a refused action's request_refused event could not be audited");
        }
        refused.error
    }

    /// The recent denial of this same action that refuses asking for it again, under the
    /// deciding rule's cool-down ([`lifecycle::refusing_denial`]); none without a cool-down.
    pub(super) async fn denied_before(
        &self,
        request: &ActionRequest,
        requirement: &Requirement,
        now: DateTime<Utc>,
    ) -> Result<Option<lifecycle::DeniedBefore>, GuardError> {
        let Some(cooldown) = requirement.cooldown_after_denial else {
            return Ok(None);
        };
        let action_key = request.action_key();
        let denied = self
            .store_call(self.inner.store.list(&ListFilter {
                denied_action: Some(action_key),
                limit: Some(lifecycle::COOLDOWN_SCAN),
                ..ListFilter::default()
            }))
            .await?;
        Ok(lifecycle::refusing_denial(
            &denied, action_key, cooldown, now,
        ))
    }

    pub(super) async fn create_pending(
        &self,
        id: RequestId,
        now: DateTime<Utc>,
        request: Arc<ActionRequest>,
        digest: Digest,
        required: Required,
    ) -> Result<Submission, GuardError> {
        let record = lifecycle::open(
            id,
            (*request).clone(),
            digest,
            required.rule,
            required.requirement,
            required.policy_version,
            now,
        )?;
        match self.store_call(self.inner.store.insert(&record)).await? {
            Inserted::Created => {}
            Inserted::Existing(existing) => {
                // Another task inserted the same idempotency key first.
                let key = record.request.idempotency_key.clone().unwrap_or_default();
                return self.reattach(&existing, &key, digest);
            }
        }
        self.dispatch(record, DispatchReason::New).await?;
        Ok(Submission::Pending(id))
    }

    /// Re-attaches to the request stored under `key`, if there is one, delivering it again
    /// if it never was.
    pub(super) async fn reattach_by_key(
        &self,
        key: &str,
        digest: Digest,
    ) -> Result<Option<Submission>, GuardError> {
        let Some(existing) = self
            .store_call(self.inner.store.get_by_idempotency_key(key))
            .await?
        else {
            return Ok(None);
        };
        let submission = self.reattach(&existing, key, digest)?;
        self.redeliver_if_undelivered(existing).await?;
        Ok(Some(submission))
    }

    pub(super) fn reattach(
        &self,
        existing: &RequestRecord,
        key: &str,
        digest: Digest,
    ) -> Result<Submission, GuardError> {
        // Compared with the action as it was asked for: a retry of a request reviewers have
        // since edited re-attaches, and its wait returns the edited action.
        if existing.asked_digest() != digest {
            return Err(GuardError::IdempotencyConflict {
                key: key.to_owned(),
                existing: existing.id,
            });
        }
        Ok(Submission::Pending(existing.id))
    }

    /// Delivers a re-attached request again when it is still pending and no delivery was ever
    /// recorded for it: the process that stored it died before telling its channels, or before
    /// recording their answer, so no reviewer may know of it. At least once: the channel is
    /// told it is a [`DispatchReason::Redelivery`], so one that can find a message an earlier
    /// process posted (Slack, by the request id in the message metadata) records that one;
    /// others may show a second message, and a channel that records no delivery (the
    /// terminal) is asked again. When no channel takes it, the request is cancelled as for a
    /// first delivery.
    pub(super) async fn redeliver_if_undelivered(
        &self,
        existing: RequestRecord,
    ) -> Result<(), GuardError> {
        if existing.state == RequestState::Pending && existing.deliveries.is_empty() {
            self.dispatch(existing, DispatchReason::Redelivery).await?;
        }
        Ok(())
    }

    /// Delivers to every channel; records the deliveries. Cancels the request when no channel
    /// delivered it (nobody could approve it).
    pub(super) async fn dispatch(
        &self,
        record: RequestRecord,
        reason: DispatchReason,
    ) -> Result<(), GuardError> {
        if self.inner.approvers.is_empty() {
            // Reviews arrive through the API or another process; nothing to deliver.
            return Ok(());
        }
        // The request and its events are on disk before any reviewer hears of it.
        self.barrier().await?;
        let mut deliveries = Vec::new();
        let mut errors = Vec::new();
        // With a store that keeps the audit log, the channels' events commit with the
        // deliveries they recorded (one transaction); otherwise each as its channel answers.
        let joint = self.records_with_writes();
        let mut events = Vec::new();
        let decisions: Arc<dyn Decisions> = Arc::new(self.clone());
        for approver in &self.inner.approvers {
            let channel = approver.name().to_owned();
            let timeout = self.inner.approver_timeout;
            let delivered = within(timeout, approver.dispatch(&record, reason, decisions.clone()))
                .await
                .unwrap_or_else(|unfinished| {
                    Err(ApproverError::new(
                        &channel,
                        format!(
                            "the channel did not deliver the request ({unfinished}; approver_timeout {timeout:?})"
                        ),
                    )
                    .retryable())
                });
            let event = match delivered {
                Ok(delivery) => {
                    deliveries.extend(delivery);
                    EventDetail::Dispatched { channel }
                }
                Err(e) => {
                    observe::delivery_failed(&channel);
                    errors.push(e.to_string());
                    EventDetail::DispatchFailed {
                        channel,
                        error: e.message,
                    }
                }
            };
            // Timed as the channel answered, whenever it is recorded.
            let event = self.event(&record, event);
            if joint {
                events.push(event);
            } else {
                self.audit(event).await?;
            }
        }
        // A first delivery, or a redelivery of a request no channel ever recorded: if no channel
        // takes it, no reviewer knows of it, so the agent is refused now rather than left
        // waiting for its deadline.
        if errors.len() == self.inner.approvers.len() && reason.introduces() {
            self.audit_all(&events).await?;
            let why = errors.join("; ");
            self.cancel_pending(
                record.id,
                None,
                Some(format!("no channel could deliver the request: {why}")),
            )
            .await?;
            return Err(GuardError::DeliveryFailed {
                id: record.id,
                errors: why,
            });
        }
        let record_deliveries = !deliveries.is_empty() && reason.records_delivery();
        if record_deliveries || !events.is_empty() {
            self.update_recorded(
                record.id,
                |r| {
                    record_deliveries.then(|| {
                        let mut next = r.clone();
                        next.deliveries.extend(deliveries.iter().cloned());
                        next
                    })
                },
                events,
            )
            .await
            .map_err(|e| GuardError::unavailable(Component::Store, e))?;
        }
        Ok(())
    }
}

/// An admitted action, as `submit` goes on with it.
struct AdmittedAction {
    request: Arc<ActionRequest>,
    /// The plan the action names: where the gate looks for it, not part of what is stored.
    named_plan: Option<Box<RequestId>>,
    digest: Digest,
}

/// The events of asking the policy about a request.
enum Asked {
    /// `requested` and `policy_decided`.
    Decided([AuditEvent; 2]),
    /// `requested`, and the refusal because the policy failed.
    Failed(AuditEvent, GuardError),
}

impl Asked {
    fn events(&self) -> &[AuditEvent] {
        match self {
            Asked::Decided(events) => events,
            Asked::Failed(requested, _) => std::slice::from_ref(requested),
        }
    }
}

/// What a recorded policy decision leaves to do.
enum Decided {
    Allowed(Grant),
    RequiresApproval(Required),
}

/// The policy's decision on an action and the version of the rules that made it, read
/// together ([`Gate::evaluate`]): whatever is recorded of the decision carries this version.
pub(super) struct Evaluated {
    pub(super) decision: Decision,
    pub(super) policy_version: ArcStr,
}

/// The policy's answer that an action needs approval: the rule, what it requires, and the
/// version of the rules that gave it, recorded with the request whichever way it is approved
/// (by reviewers, a plan or a standing grant).
pub(super) struct Required {
    pub(super) rule: Option<ArcStr>,
    pub(super) requirement: Arc<Requirement>,
    pub(super) policy_version: ArcStr,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StaticPolicy, audit::MemorySink};

    /// `guard()` boxes this future on every call. Up to 1,024 bytes, glibc's malloc serves
    /// it from its per-thread cache; above that, each call takes the allocator's slow path
    /// (at 2,424 bytes, `malloc_consolidate` and `_int_malloc` were 6% of the allow path).
    /// 960 bytes at this commit (rustc 1.95): the two events are 592 of them.
    #[test]
    fn the_boxed_submit_future_fits_the_allocators_thread_cache() {
        let gate = Gate::builder()
            .audit(MemorySink::default())
            .policy(StaticPolicy::allow_all())
            .initiator(Initiator::agent("report-bot"))
            .build()
            .expect("gate");
        let action = ActionRequest::new("warehouse.read", "db://analytics/events");
        let initiator = gate.inner.initiator.clone().expect("an initiator");
        let submit = gate.submit_bound(initiator, &action);
        let size = std::mem::size_of_val(&submit);
        assert!(size <= 1024, "the submit future is {size} bytes");
    }
}

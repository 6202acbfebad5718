//! Reviewing: applying verdicts, refusing and recording bad ones, cancelling, reading.

use super::Gate;
use super::io::{MAX_REFUSAL_DETAIL_CHARS, to_delta};
use super::maintenance::CancelOutcome;
use super::submit::Evaluated;
use crate::approver::Decisions;
use crate::audit::{EventDetail, RejectCause};
use crate::error::{Component, GuardError, ReviewError};
use crate::lifecycle::{self, Review, ReviewOutcome};
use crate::request::Principal;
use crate::store::{ListFilter, PageCursor, RequestId, RequestRecord, RequestState, StoreError};

impl Gate {
    /// Applies a reviewer's verdict ([`lifecycle::review`]). Checks, in order: the digest the
    /// reviewer saw, the reviewer's identity, that the request is still pending and not
    /// expired (or approved, for a deny: deny wins), that the reviewer is a human, is neither
    /// the initiator nor the human it acts for, is allowed by the requirement (checked now,
    /// not when the request was sent), gave a reason if one is required, and has not already
    /// approved. One deny ends the request; approvals from distinct humans count toward the
    /// quorum. Every refusal is audited as `review_rejected` and changes nothing.
    ///
    /// The decision is stored first (flagged unaudited), then its events are recorded, then
    /// the flag is cleared: no grant is issued and no refusal told before the events are in
    /// the audit trail, and nobody is told before all of it is on disk (the barrier).
    pub async fn decide(
        &self,
        id: RequestId,
        review: Review,
    ) -> Result<ReviewOutcome, ReviewError> {
        let grant_ttl = to_delta(self.inner.grant_ttl);
        loop {
            let record = self
                .bounded(self.inner.store.get(id))
                .await
                .map_err(review_unavailable)?
                .ok_or(ReviewError::NotFound(id))?;
            let applied = match &review.edit {
                None => lifecycle::review(&record, &review, self.now(), grant_ttl),
                Some(_) => self.review_edited(&record, &review, grant_ttl),
            };
            let (step, outcome) = match applied {
                Ok(applied) => applied,
                Err(refused) => {
                    if matches!(refused, ReviewError::Expired { .. }) {
                        self.expire(&record)
                            .await
                            .map_err(|e| ReviewError::Unavailable {
                                component: Component::Store,
                                message: e.to_string(),
                            })?;
                    }
                    self.audit_rejection(&record, &review, &refused).await;
                    return Err(refused);
                }
            };
            let mut next = step.next;
            let decided = outcome.state != RequestState::Pending;
            let joint = self.records_with_writes();
            if joint {
                // The events commit with the change: stored with its audit flags cleared.
                let audited = if review.edit.is_some() {
                    lifecycle::edit_audited(&next, outcome.state == RequestState::Approved)
                } else if decided {
                    lifecycle::audited(&next, review.verdict)
                } else {
                    None
                };
                if let Some(audited) = audited {
                    next = audited;
                }
            }
            if !self
                .set_recorded(&record, &next, step.events)
                .await
                .map_err(unavailable)?
            {
                continue; // Someone else changed it; re-check against the new state.
            }
            next.version = record.version + 1;
            crate::observe::transition(id, record.state, next.state, record.created_at, self.now());
            if joint {
                // Change and events on disk before a grant is issued, a refusal told, or the
                // reviewer hears.
                self.barrier().await.map_err(store_unavailable)?;
                if review.edit.is_some() || decided {
                    self.notify_channels(next.clone());
                }
            } else if review.edit.is_some() {
                // Only now may the edited action's grant be issued, or its new digest shown.
                let approved = outcome.state == RequestState::Approved;
                let current = self
                    .update(id, |r| lifecycle::edit_audited(r, approved))
                    .await
                    .map_err(store_unavailable)?;
                self.barrier().await.map_err(store_unavailable)?;
                if let Some(current) = current {
                    next = current;
                }
                self.notify_channels(next.clone());
            } else if decided {
                // Only now may a grant be issued, or the refusal be told.
                let current = self
                    .mark_audited(id, review.verdict)
                    .await
                    .map_err(store_unavailable)?;
                if let Some(current) = current {
                    next = current;
                }
                self.notify_channels(next.clone());
            } else {
                // A counted approval short of the quorum: durable before the reviewer hears.
                self.barrier().await.map_err(store_unavailable)?;
            }
            self.wake(id);
            return Ok(ReviewOutcome {
                state: next.state,
                ..outcome
            });
        }
    }

    /// [`lifecycle::propose_edit`], the policy's decision on the edited action, then
    /// [`lifecycle::review_edited`].
    fn review_edited(
        &self,
        record: &RequestRecord,
        review: &Review,
        grant_ttl: chrono::TimeDelta,
    ) -> Result<(lifecycle::Step, ReviewOutcome), ReviewError> {
        let now = self.now();
        let proposed = lifecycle::propose_edit(record, review, now)?;
        let Evaluated {
            decision,
            policy_version,
        } = self
            .evaluate(&proposed.request)
            .map_err(|e| ReviewError::Unavailable {
                component: Component::Policy,
                message: e.to_string(),
            })?;
        lifecycle::review_edited(
            record,
            review,
            proposed,
            decision,
            policy_version,
            now,
            grant_ttl,
        )
    }

    /// Whether `review` would be accepted on request `id` now, without changing or recording
    /// anything ([`lifecycle::check_review`]). A channel calls it before it opens a reason
    /// dialog, so a reviewer who may not decide is told at once; [`decide`](Gate::decide)
    /// checks again when the decision arrives.
    pub async fn check_review(&self, id: RequestId, review: &Review) -> Result<(), ReviewError> {
        let record = self
            .bounded(self.inner.store.get(id))
            .await
            .map_err(review_unavailable)?
            .ok_or(ReviewError::NotFound(id))?;
        lifecycle::check_review(&record, review, self.now())
    }

    async fn audit_rejection(
        &self,
        record: &RequestRecord,
        review: &Review,
        refused: &ReviewError,
    ) {
        if let Some(cause) = refused.cause() {
            let event = self.event(
                record,
                EventDetail::ReviewRejected {
                    reviewer: Some(review.reviewer.clone()),
                    channel: review.channel.clone(),
                    cause,
                    detail: refused.to_string(),
                },
            );
            // The review is refused either way; a failing sink cannot make it pass.
            let _ = self.record_bounded(&event).await;
        }
    }

    /// Records a callback that a channel refused before it reached [`decide`](Gate::decide)
    /// (failed signature or token, replay, unknown reviewer), when it names a request that
    /// exists. Returns whether an event was written.
    pub async fn record_rejected_callback(
        &self,
        id: RequestId,
        reviewer: Option<Principal>,
        channel: &str,
        cause: RejectCause,
        detail: &str,
    ) -> bool {
        let detail = EventDetail::ReviewRejected {
            reviewer,
            channel: channel.to_owned(),
            cause,
            detail: crate::text::truncate(detail, MAX_REFUSAL_DETAIL_CHARS).into_owned(),
        };
        self.record_about(id, detail).await
    }

    /// Withdraws a pending request. `by` is recorded; who may cancel is the caller's decision
    /// (the HTTP API allows the initiator and administrators).
    pub async fn cancel(
        &self,
        id: RequestId,
        by: Option<Principal>,
        reason: Option<String>,
    ) -> Result<RequestState, ReviewError> {
        match self.cancel_pending(id, by, reason).await {
            Ok(CancelOutcome::Cancelled) => Ok(RequestState::Cancelled),
            Ok(CancelOutcome::NotPending(record)) => Err(ReviewError::AlreadyDecided {
                id,
                state: record.state,
                by: lifecycle::decided_by(&record),
            }),
            Ok(CancelOutcome::Missing) => Err(ReviewError::NotFound(id)),
            Err(e) => Err(ReviewError::Unavailable {
                component: Component::Store,
                message: e.to_string(),
            }),
        }
    }

    /// Pending requests, newest first.
    pub async fn pending(&self) -> Result<Vec<RequestRecord>, StoreError> {
        self.bounded(self.inner.store.list(&ListFilter::pending()))
            .await
    }

    /// One page of pending requests, newest first: at most `limit`, after `after` (the `next`
    /// of the previous page; `None` for the first). The store reads only the page (one more
    /// record, to know whether another page follows), however many requests are pending.
    pub async fn pending_page(
        &self,
        limit: usize,
        after: Option<PageCursor>,
    ) -> Result<PendingPage, StoreError> {
        let filter = ListFilter {
            after,
            limit: Some(limit.saturating_add(1)),
            ..ListFilter::pending()
        };
        let mut requests = self.bounded(self.inner.store.list(&filter)).await?;
        let next = (requests.len() > limit).then(|| {
            requests.truncate(limit);
            requests.last().map(PageCursor::of)
        });
        Ok(PendingPage {
            requests,
            next: next.flatten(),
        })
    }

    /// One request.
    pub async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.bounded(self.inner.store.get(id)).await
    }
}

#[async_trait::async_trait]
impl Decisions for Gate {
    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        Gate::get(self, id).await
    }

    async fn check_review(&self, id: RequestId, review: &Review) -> Result<(), ReviewError> {
        Gate::check_review(self, id, review).await
    }

    async fn decide(&self, id: RequestId, review: Review) -> Result<ReviewOutcome, ReviewError> {
        Gate::decide(self, id, review).await
    }
}

fn store_unavailable(e: GuardError) -> ReviewError {
    ReviewError::Unavailable {
        component: Component::Store,
        message: e.to_string(),
    }
}

pub(super) fn review_unavailable(e: StoreError) -> ReviewError {
    ReviewError::Unavailable {
        component: Component::Store,
        message: e.to_string(),
    }
}

/// A store or audit failure while deciding, named by the component that failed.
fn unavailable(e: GuardError) -> ReviewError {
    match e {
        GuardError::Unavailable { component, message } => {
            ReviewError::Unavailable { component, message }
        }
        other => store_unavailable(other),
    }
}

/// A page of [`Gate::pending_page`].
#[derive(Debug, Clone)]
pub struct PendingPage {
    /// Pending requests, newest first.
    pub requests: Vec<RequestRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageCursor>,
}

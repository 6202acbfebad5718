//! The gate's I/O: every store call, audit append and channel call bounded in time and with
//! panics contained ([`within`]); events; waking waiters; telling channels.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arcstr::ArcStr;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;

use super::{Gate, Inner};
use crate::approver::ApproverError;
use crate::audit::{AUDIT_SCHEMA_VERSION, AuditEvent, EventDetail};
use crate::bounds::within;
use crate::error::{Component, GuardError};
use crate::request::Digest;
use crate::store::{RequestId, RequestRecord, StoreError};

/// The longest detail (in characters) kept in an event about a refused grant token or
/// callback: the detail comes from outside, through a door or a channel.
pub(super) const MAX_REFUSAL_DETAIL_CHARS: usize = 1024;

impl Gate {
    pub(super) fn event(&self, record: &RequestRecord, detail: EventDetail) -> AuditEvent {
        AuditEvent {
            schema: AUDIT_SCHEMA_VERSION,
            at: self.now(),
            request_id: record.id,
            kind: record.request.kind.clone(),
            resource: record.request.resource.clone(),
            digest: record.digest,
            detail,
        }
    }

    // Not an `async fn`: one of those keeps its arguments twice in its state (rust-lang/rust
    // issue 62958), and an event is a few hundred bytes on every guard() call.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn audit(
        &self,
        event: AuditEvent,
    ) -> impl Future<Output = Result<(), GuardError>> + '_ {
        async move { self.audit_ref(&event).await }
    }

    /// Records `event`, for callers that still need what it holds afterwards.
    pub(super) async fn audit_ref(&self, event: &AuditEvent) -> Result<(), GuardError> {
        self.record_bounded(event)
            .await
            .map_err(|e| GuardError::unavailable(Component::Audit, e))
    }

    /// Whether the store commits each transition with its audit events
    /// ([`Store::recorded_writes`](crate::Store::recorded_writes)). A transition whose
    /// record says its events are not yet recorded (the audit flags) may then be stored with
    /// the flags already cleared.
    pub(super) fn records_with_writes(&self) -> bool {
        self.inner.recorded.is_some()
    }

    /// Compare-and-sets `record` to `next` and records `events` about `next`: in one
    /// transaction when the store keeps the audit sink's log, otherwise the compare-and-set,
    /// then each event in order (a failure in between leaves the change without its events;
    /// the audit flags a transition sets are what recovers them). Returns whether the
    /// compare-and-set won; when it lost, nothing was recorded.
    pub(super) async fn set_recorded(
        &self,
        record: &RequestRecord,
        next: &RequestRecord,
        events: Vec<EventDetail>,
    ) -> Result<bool, GuardError> {
        let events = events
            .into_iter()
            .map(|detail| self.event(next, detail))
            .collect();
        self.set_recording(record, next, events).await
    }

    /// [`set_recorded`](Gate::set_recorded) with events already made (and timed) by the
    /// caller.
    pub(super) async fn set_recording(
        &self,
        record: &RequestRecord,
        next: &RequestRecord,
        events: Vec<AuditEvent>,
    ) -> Result<bool, GuardError> {
        if let Some(writes) = &self.inner.recorded {
            return self
                .store_call(writes.compare_and_set(record.version, next, &events))
                .await;
        }
        if !self
            .store_call(self.inner.store.compare_and_set(record.version, next))
            .await?
        {
            return Ok(false);
        }
        self.audit_all(&events).await?;
        Ok(true)
    }

    /// Records `events` in order, in one call to the sink ([`AuditSink::record_all`]),
    /// waiting no longer than the store timeout.
    ///
    /// [`AuditSink::record_all`]: crate::AuditSink::record_all
    pub(super) async fn audit_all(&self, events: &[AuditEvent]) -> Result<(), GuardError> {
        self.audit_bounded(self.inner.audit.record_all(events))
            .await
            .map_err(|e| GuardError::unavailable(Component::Audit, e))
    }

    /// Records `detail` about request `id` when the request exists: a refusal at a door or in
    /// a channel, which changes no state. Returns whether the event was written (`false`
    /// when there is no such request, or the store or the sink failed).
    pub(super) async fn record_about(&self, id: RequestId, detail: EventDetail) -> bool {
        let Ok(Some(record)) = self.bounded(self.inner.store.get(id)).await else {
            return false;
        };
        let event = self.event(&record, detail);
        self.record_bounded(&event).await.is_ok()
    }

    /// Records one event, waiting no longer than the store timeout: a hung sink refuses the
    /// action, like an unresponsive store, instead of hanging the caller.
    pub(super) async fn record_bounded(
        &self,
        event: &AuditEvent,
    ) -> Result<(), crate::audit::AuditError> {
        self.audit_bounded(self.inner.audit.record(event)).await
    }

    /// A call to the sink, waiting no longer than the store timeout and counted when it
    /// fails.
    async fn audit_bounded(
        &self,
        recording: impl Future<Output = Result<(), crate::audit::AuditError>>,
    ) -> Result<(), crate::audit::AuditError> {
        let recorded = within(self.inner.store_timeout, recording)
            .await
            .unwrap_or_else(|unfinished| {
                Err(crate::audit::AuditError::new(unfinished.to_string()))
            });
        if recorded.is_err() {
            crate::observe::audit_failed();
        }
        recorded
    }

    /// The durability barrier: returns once every write to the store and every audit event
    /// recorded so far is on disk ([`Store::sync`](crate::Store::sync),
    /// [`AuditSink::sync`](crate::AuditSink::sync)). Called before anything leaves the
    /// process on the strength of those writes: before a channel is told, an action runs, a
    /// waiter is woken, or a door answers. In between, stores may commit without syncing, so
    /// a lifecycle costs one sync per barrier rather than one per write, and concurrent
    /// barriers share one sync. A failure refuses whatever was about to happen.
    pub(super) async fn barrier(&self) -> Result<(), GuardError> {
        if self.shared_sync_domain() {
            // The sink keeps its events in the store's database: one sync covers both.
            return self.store_call(self.inner.store.sync()).await;
        }
        // At once, so that slow syncs overlap.
        let (store, audit) = tokio::join!(
            self.store_call(self.inner.store.sync()),
            within(self.inner.store_timeout, self.inner.audit.sync())
        );
        store?;
        audit
            .unwrap_or_else(|unfinished| Err(crate::audit::AuditError::new(unfinished.to_string())))
            .map_err(|e| GuardError::unavailable(Component::Audit, e))
    }

    /// Whether the store's sync also makes the audit sink's events durable.
    fn shared_sync_domain(&self) -> bool {
        let store = self.inner.store.sync_domain();
        store.is_some() && store == self.inner.audit.sync_domain()
    }

    /// A [`barrier`](Gate::barrier) that may wait for the next sync instead of causing one
    /// ([`Store::sync_soon`](crate::Store::sync_soon)), for what only a channel's timing
    /// depends on. When no sync comes within the store timeout, or it fails, raises a barrier
    /// of its own.
    async fn barrier_soon(&self) -> Result<(), GuardError> {
        let soon = async {
            if self.shared_sync_domain() {
                return self.inner.store.sync_soon().await.is_ok();
            }
            let (store, audit) =
                tokio::join!(self.inner.store.sync_soon(), self.inner.audit.sync_soon());
            store.is_ok() && audit.is_ok()
        };
        match within(self.inner.store_timeout, soon).await {
            Ok(true) => Ok(()),
            _ => self.barrier().await,
        }
    }

    /// `version`, a policy version, as a shared string: the one cached for it, refreshed when
    /// the policy reports a new one (so a decision does not allocate its version's name).
    pub(super) fn shared_policy_version(&self, current: &str) -> ArcStr {
        let mut cached = self
            .inner
            .policy_version
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if &**cached != current {
            *cached = ArcStr::from(current);
        }
        cached.clone()
    }

    pub(super) async fn store_call<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, GuardError> {
        self.bounded(call)
            .await
            .map_err(|e| GuardError::unavailable(Component::Store, e))
    }

    /// A store call limited to the configured store timeout, so no caller (a `guard()`, a
    /// channel's inbound handler) hangs on an unresponsive database.
    pub(super) async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        within(self.inner.store_timeout, call)
            .await
            .unwrap_or_else(|unfinished| Err(StoreError::Unavailable(unfinished.to_string())))
    }

    pub(super) fn waiter(&self, id: RequestId) -> Arc<Notify> {
        let mut waiters = self.inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.entry(id).or_default().clone()
    }

    /// Called by a waiter on `id` that has dropped its reference to the slot.
    pub(super) fn release_waiter(&self, id: RequestId) {
        let mut waiters = self.inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Only the table holds the slot: nobody else is waiting. (References are only taken
        // under this lock, by `waiter`, so none can appear before the removal.)
        if waiters
            .get(&id)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            waiters.remove(&id);
        }
    }

    pub(super) fn wake(&self, id: RequestId) {
        wake_waiter(&self.inner, id);
    }

    /// Starts (or restarts, if its runtime went away) the one task per gate that listens to
    /// the store's change notifications and wakes only the waiter of the changed request.
    /// One listener per gate rather than per waiter: with thousands of waiting agents, every
    /// change would otherwise wake every one of them.
    pub(super) fn forward_store_changes(&self) {
        let mut forwarder = self
            .inner
            .forwarder
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if forwarder.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let Some(mut changes) = self.inner.store.changes() else {
            return;
        };
        let inner = Arc::downgrade(&self.inner);
        *forwarder = Some(tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let changed = changes.recv().await;
                let Some(inner) = inner.upgrade() else {
                    return; // The gate is gone.
                };
                match changed {
                    Ok(id) => wake_waiter(&inner, id),
                    // Missed some notifications: every waiter re-reads to be safe.
                    Err(RecvError::Lagged(_)) => {
                        let waiters = inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
                        for notify in waiters.values() {
                            notify.notify_waiters();
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }));
    }

    /// [`notify_channels`](Gate::notify_channels) for a change no barrier has covered yet:
    /// in the background, once the next sync has made it durable (a barrier of its own only
    /// if the store has no sync coming), so the caller does not wait and the change costs no
    /// sync of its own when others follow it. A change that cannot be made durable is not
    /// told (logged).
    pub(super) fn notify_channels_after_barrier(&self, record: RequestRecord) {
        if self.inner.approvers.is_empty() {
            return;
        }
        let gate = self.clone();
        tokio::spawn(async move {
            match gate.barrier_soon().await {
                Ok(()) => gate.notify_channels(record),
                Err(e) => {
                    tracing::warn!(request = %record.id, error = %e, "the change could not be made durable; the channels are not told of it");
                }
            }
        });
    }

    /// Tells every channel the request changed, in the background (a slow chat API must not
    /// hold up the decision). Failures are audited as `dispatch_failed`. Callers raise a
    /// [`barrier`](Gate::barrier) first: a channel is told only what is on disk.
    ///
    /// One request's updates are sent one at a time, in the order of the record's version:
    /// while a task sends them, later changes queue behind it and an older one is dropped, so
    /// a slow "approved" update can never land after "executed" and leave a stale message.
    pub(super) fn notify_channels(&self, record: RequestRecord) {
        if self.inner.approvers.is_empty() {
            return;
        }
        {
            let mut updates = lock(&self.inner.updates);
            if let Some(queue) = updates.get_mut(&record.id) {
                queue.push(record);
                return;
            }
            updates.insert(record.id, Updates::sending(record.version));
        }
        let gate = self.clone();
        tokio::spawn(async move {
            let mut record = record;
            loop {
                gate.update_channels(&record).await;
                let mut updates = lock(&gate.inner.updates);
                match updates.get_mut(&record.id).and_then(Updates::next) {
                    Some(next) => record = next,
                    None => {
                        updates.remove(&record.id);
                        return;
                    }
                }
            }
        });
    }

    /// Calls every channel's [`resolved`](crate::Approver::resolved) with `record`; audits
    /// each failure.
    async fn update_channels(&self, record: &RequestRecord) {
        for approver in &self.inner.approvers {
            let updated = within(self.inner.approver_timeout, approver.resolved(record))
                .await
                .unwrap_or_else(|unfinished| {
                    Err(ApproverError::new(approver.name(), unfinished.to_string()))
                });
            if let Err(e) = updated {
                crate::observe::delivery_failed(approver.name());
                let event = self.event(
                    record,
                    EventDetail::DispatchFailed {
                        channel: approver.name().to_owned(),
                        error: format!("could not update the message: {}", e.message),
                    },
                );
                if let Err(audit) = self.record_bounded(&event).await {
                    tracing::warn!(
                        request = %record.id,
                        channel = approver.name(),
                        error = %e,
                        audit_error = %audit,
                        "a channel could not update its message, and the failure could not be audited"
                    );
                }
            }
        }
    }
}

/// The changes of one request waiting to be sent to its channels, behind the one being sent.
#[derive(Debug)]
pub(super) struct Updates {
    /// The version of the record being sent (or last sent).
    sent: u64,
    waiting: Vec<RequestRecord>,
}

impl Updates {
    fn sending(version: u64) -> Self {
        Updates {
            sent: version,
            waiting: Vec::new(),
        }
    }

    /// Queues `record`, unless its version was already sent (or is being sent).
    fn push(&mut self, record: RequestRecord) {
        if record.version > self.sent && self.waiting.iter().all(|r| r.version != record.version) {
            self.waiting.push(record);
        }
    }

    /// The oldest queued change, now being sent.
    fn next(&mut self) -> Option<RequestRecord> {
        let oldest = (0..self.waiting.len()).min_by_key(|&i| self.waiting[i].version)?;
        let record = self.waiting.swap_remove(oldest);
        self.sent = record.version;
        Some(record)
    }
}

/// Locks `mutex`, taking the data of one poisoned by a panic (the maps it guards hold no
/// invariant a panic could break halfway).
pub(super) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) struct EventSubject {
    pub(super) id: RequestId,
    pub(super) kind: ArcStr,
    pub(super) resource: ArcStr,
    pub(super) digest: Digest,
}

impl EventSubject {
    pub(super) fn event(&self, at: DateTime<Utc>, detail: EventDetail) -> AuditEvent {
        AuditEvent {
            schema: AUDIT_SCHEMA_VERSION,
            at,
            request_id: self.id,
            kind: self.kind.clone(),
            resource: self.resource.clone(),
            digest: self.digest,
            detail,
        }
    }
}

pub(super) fn wake_waiter(inner: &Inner, id: RequestId) {
    let waiters = inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(notify) = waiters.get(&id) {
        notify.notify_waiters();
    }
}

pub(super) fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

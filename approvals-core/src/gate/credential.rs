//! Running an approved action with a credential minted for it: issuing through the gate's
//! [`CredentialBroker`], handing it to the action, revoking it afterwards, and revoking what a
//! dead process left behind.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::run::Run;
use super::{Gate, Grant};
use crate::audit::EventDetail;
use crate::credential::{
    Credential, CredentialBroker, CredentialLease, IssueRequest, RevokeReason, credential_id,
};
use crate::error::{Component, GuardError};
use crate::lifecycle;
use crate::request::Action;
use crate::store::{RequestId, RequestRecord};

impl Gate {
    /// Runs `action` under the policy, as [`run`](Gate::run), with a credential minted for
    /// exactly this action: [`guard`](Gate::guard), then
    /// [`execute_with_credential`](Gate::execute_with_credential).
    pub async fn run_with_credential<A, F, Fut, T, E>(&self, action: &A, f: F) -> Result<T, E>
    where
        A: Action + ?Sized,
        F: FnOnce(Credential) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<GuardError> + std::fmt::Display,
    {
        let grant = self.guard(action).await?;
        Box::pin(self.execute_with_credential(grant, action, f)).await
    }

    /// Consumes `grant`, has the gate's [`CredentialBroker`] mint a credential for exactly
    /// `action`, runs `f` with it, and revokes it when `f` returns, whatever the outcome. The
    /// credential lives at most as long as the grant, and its id, scope and expiry (never its
    /// secret) are audited as `credential_issued` and `credential_revoked`.
    ///
    /// Fails closed: without a broker, or when the broker fails or returns a credential that
    /// is not the one asked for or outlives the grant, `f` does not run, the grant is used up
    /// (the request ends `failed`, "not run"), and anything issued is revoked. If this process
    /// dies before revoking, a [`sweep`](Gate::sweep) revokes the credential once its time is
    /// over.
    ///
    /// ```no_run
    /// # async fn demo(gate: approvals_core::Gate) -> Result<(), approvals_core::GuardError> {
    /// use approvals_core::ActionRequest;
    ///
    /// let export = ActionRequest::new("db.export", "postgres://prod/public.invoices");
    /// let grant = gate.guard(&export).await?;
    /// let rows = gate
    ///     .execute_with_credential(grant, &export, |credential| async move {
    ///         // Connect as credential.id() with credential.secret(); it can read
    ///         // public.invoices and nothing else, and is dropped when this returns.
    ///         Ok::<_, approvals_core::GuardError>(credential.scope().len())
    ///     })
    ///     .await?;
    /// # let _ = rows; Ok(()) }
    /// ```
    pub async fn execute_with_credential<A, F, Fut, T, E>(
        &self,
        grant: Grant,
        action: &A,
        f: F,
    ) -> Result<T, E>
    where
        A: Action + ?Sized,
        F: FnOnce(Credential) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<GuardError> + std::fmt::Display,
    {
        let broker = self.broker()?;
        let mut run = self
            .start_run(&grant, action, Some(credential_id(grant.request_id)))
            .await?;
        let credential = match self.issue_credential(&broker, &mut run, &grant).await {
            Ok(credential) => credential,
            Err(e) => {
                self.end_run(run, Some(format!("not run: {e}")), RevokeReason::NotRun)
                    .await;
                return Err(e.into());
            }
        };
        let result = f(credential).await;
        let error = result.as_ref().err().map(|e| e.to_string());
        self.end_run(run, error, RevokeReason::Finished).await;
        result
    }

    fn broker(&self) -> Result<Arc<dyn CredentialBroker>, GuardError> {
        self.inner.broker.clone().ok_or_else(|| {
            GuardError::unavailable(
                Component::CredentialBroker,
                "this gate has no credential broker: configure one with GateBuilder::credential_broker",
            )
        })
    }

    /// Asks the broker for the run's planned credential and records it
    /// ([`lifecycle::credential_issued`]) before the action may use it. On any failure the
    /// run's credential stays outstanding (the caller's `end_run` revokes it), and a
    /// credential the broker returned under another id is revoked here.
    async fn issue_credential(
        &self,
        broker: &Arc<dyn CredentialBroker>,
        run: &mut Run,
        grant: &Grant,
    ) -> Result<Credential, GuardError> {
        let Some(planned) = run.credential.clone() else {
            return Err(GuardError::unavailable(
                Component::CredentialBroker,
                "no credential was planned for this run",
            ));
        };
        let issuing = broker.issue(IssueRequest {
            id: &planned.id,
            grant,
            action: &run.request,
            not_after: planned.expires_at,
        });
        let credential = tokio::time::timeout(self.inner.store_timeout, issuing)
            .await
            .map_err(|_| {
                GuardError::unavailable(
                    Component::CredentialBroker,
                    format!(
                        "{} did not issue a credential within {:?}",
                        broker.name(),
                        self.inner.store_timeout
                    ),
                )
            })?
            .map_err(|e| GuardError::unavailable(Component::CredentialBroker, e))?;
        let recorded = if run.stored {
            self.record_issued(run.subject.id, credential.lease()).await
        } else {
            // Allowed by the policy: no record to keep it in, the same check.
            match lifecycle::check_lease(&planned, credential.lease(), self.now()) {
                Ok(()) => {
                    let event = EventDetail::CredentialIssued {
                        credential: credential.lease().clone(),
                    };
                    // On disk before the action holds it, as a record's commit would be.
                    match self.audit(run.subject.event(self.now(), event)).await {
                        Ok(()) => self.barrier().await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(refused(e)),
            }
        };
        if let Err(e) = recorded {
            if credential.id() != planned.id {
                let _ = self.revoke_quietly(broker, credential.lease()).await;
            }
            return Err(e);
        }
        run.credential = Some(credential.lease().clone());
        Ok(credential)
    }

    /// Records an issued credential on its executing request, and audits `credential_issued`.
    async fn record_issued(
        &self,
        id: RequestId,
        lease: &CredentialLease,
    ) -> Result<(), GuardError> {
        loop {
            let record = self.load(id).await?;
            let step = lifecycle::credential_issued(&record, lease, self.now()).map_err(refused)?;
            if self.commit(&record, step).await?.is_some() {
                return Ok(());
            }
        }
    }

    /// Revokes the run's credential and records that (`credential_revoked`). A failure is
    /// logged and left to a sweep: the credential stays outstanding on the record, which makes
    /// it due ([`lifecycle::revoke_at`]).
    pub(super) async fn revoke_credential(
        &self,
        run: &Run,
        lease: &CredentialLease,
        reason: RevokeReason,
    ) {
        let Ok(broker) = self.broker() else {
            return;
        };
        if let Err(e) = self.revoke_quietly(&broker, lease).await {
            tracing::warn!(request = %run.subject.id, credential = %lease.id, error = %e, "the credential was not revoked; a sweep revokes it");
            return;
        }
        let recorded = if run.stored {
            self.record_revoked(run.subject.id, reason).await.map(drop)
        } else {
            let event = EventDetail::CredentialRevoked {
                credential: lease.clone(),
                reason,
            };
            self.audit(run.subject.event(self.now(), event)).await
        };
        if let Err(e) = recorded {
            tracing::warn!(request = %run.subject.id, credential = %lease.id, error = %e, "the credential was revoked, but that is not recorded yet; a sweep records it");
        }
    }

    /// A sweep's part: revokes the credential that `record`'s run left outstanding
    /// ([`lifecycle::Due::Revoke`]). Returns whether this call revoked and recorded it; a gate
    /// without a broker, or a broker that fails, leaves it for a later sweep.
    pub(super) async fn revoke_left_behind(
        &self,
        record: &RequestRecord,
    ) -> Result<bool, GuardError> {
        let Some(lease) = lifecycle::outstanding(record).map(|c| c.lease.clone()) else {
            return Ok(false);
        };
        let Ok(broker) = self.broker() else {
            tracing::warn!(request = %record.id, credential = %lease.id, "a credential is due for revocation, but this gate has no credential broker");
            return Ok(false);
        };
        if let Err(e) = self.revoke_quietly(&broker, &lease).await {
            tracing::warn!(request = %record.id, credential = %lease.id, error = %e, "revoking a credential left behind failed; the next sweep tries again");
            return Ok(false);
        }
        Ok(self
            .record_revoked(record.id, RevokeReason::Swept)
            .await?
            .is_some())
    }

    /// A sweep's last part: has the broker revoke whatever of its own expired before `now`
    /// that no record named ([`CredentialBroker::revoke_expired`]). Runs after the records'
    /// own revocations, so those are recorded with their request first. A failure is logged
    /// and left to the next sweep; returns how many were revoked.
    pub(super) async fn revoke_expired_credentials(&self, now: DateTime<Utc>) -> usize {
        let Some(broker) = self.inner.broker.clone() else {
            return 0;
        };
        let revoking = broker.revoke_expired(now);
        match tokio::time::timeout(self.inner.store_timeout, revoking).await {
            Ok(Ok(ids)) => {
                for id in &ids {
                    tracing::info!(credential = %id, broker = broker.name(), "revoked an expired credential that no request record named");
                }
                ids.len()
            }
            Ok(Err(e)) => {
                tracing::warn!(broker = broker.name(), error = %e, "revoking expired credentials failed; the next sweep tries again");
                0
            }
            Err(_) => {
                tracing::warn!(
                    broker = broker.name(),
                    "revoking expired credentials took longer than {:?}; the next sweep tries again",
                    self.inner.store_timeout
                );
                0
            }
        }
    }

    /// Marks the request's credential revoked ([`lifecycle::credential_revoked`]) and audits
    /// it. `None` when it was no longer outstanding (another sweep or the run recorded it).
    async fn record_revoked(
        &self,
        id: RequestId,
        reason: RevokeReason,
    ) -> Result<Option<RequestRecord>, GuardError> {
        loop {
            let record = self.load(id).await?;
            let Ok(step) = lifecycle::credential_revoked(&record, reason, self.now()) else {
                return Ok(None);
            };
            if let Some(next) = self.commit(&record, step).await? {
                return Ok(Some(next));
            }
        }
    }

    /// The broker's `revoke`, bounded like a store call.
    async fn revoke_quietly(
        &self,
        broker: &Arc<dyn CredentialBroker>,
        lease: &CredentialLease,
    ) -> Result<(), GuardError> {
        tokio::time::timeout(self.inner.store_timeout, broker.revoke(lease))
            .await
            .map_err(|_| {
                GuardError::unavailable(
                    Component::CredentialBroker,
                    format!(
                        "{} did not revoke within {:?}",
                        broker.name(),
                        self.inner.store_timeout
                    ),
                )
            })?
            .map_err(|e| GuardError::unavailable(Component::CredentialBroker, e))
    }
}

fn refused(e: lifecycle::CredentialRefused) -> GuardError {
    GuardError::unavailable(
        Component::CredentialBroker,
        format!("the issued credential is refused: {e}"),
    )
}

//! Server mode of `approvals exec` (`--server URL`, token in `APPROVALS_TOKEN`): the same
//! flow through the agent API of `approvals serve` (submit, bounded long-poll waits, start
//! and finish the execution). The initiator is the token's principal, on the server.

use std::time::Duration;

use approvals_core::{ActionRequest, RequestId, RequestState};
use approvals_http::client::{ApiClient, ClientError};
use approvals_http::view::SubmitStatus;
use url::Url;

use super::action::{EditedRun, edited_run};
use super::child::{Caught, RunError, Signals, run_child};
use super::output::{Progress, human, one_line, shell_line};
use super::{ExecArgs, Withdrawal, exit, interrupted_reason, withdrawn};
use crate::command::{Failure, term};

/// How long one `GET /v1/requests/{id}/wait` parks on the server (it accepts up to 60 s).
const WAIT_STEP: Duration = Duration::from_secs(30);

/// Submits, waits, runs and reports through the agent API; returns exec's exit code.
pub(super) async fn run(
    server: Url,
    args: &ExecArgs,
    action: ActionRequest,
    signals: &mut Signals,
    out: &mut Progress,
) -> Result<u8, Failure> {
    if args.policy.is_some() || args.db.is_some() {
        return Err(Failure::new(
            exit::USAGE,
            "give either --server URL (the server's policy decides) or --db URL --policy FILE, not both",
        ));
    }
    if args.on_behalf_of.is_some() {
        return Err(Failure::new(
            exit::USAGE,
            "with --server the initiator is your token's principal and its on_behalf_of (set in the server's token file), not --on-behalf-of",
        ));
    }
    let token = match std::env::var("APPROVALS_TOKEN") {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            return Err(Failure::new(
                exit::USAGE,
                "set APPROVALS_TOKEN to the pipeline's agent or service token for --server",
            ));
        }
    };
    let client = ApiClient::http(server, Some(token)).map_err(api_failure)?;
    let submitted = client.submit(&action).await.map_err(api_failure)?;
    let id = submitted.id;
    let mut edited_params = None;
    let grant_token = match submitted.status {
        SubmitStatus::Allowed => {
            out.line(&format!(
                "allowed by policy{}; running {}",
                submitted
                    .policy_rule
                    .as_deref()
                    .map(|r| format!(" rule {:?}", term(r)))
                    .unwrap_or_default(),
                term(&shell_line(&args.command))
            ));
            submitted.grant_token
        }
        SubmitStatus::Pending => {
            out.line(&format!(
                "request {id} needs approval{}: {} on {}, digest {}",
                submitted
                    .policy_rule
                    .as_deref()
                    .map(|r| format!(" (policy rule {:?})", term(r)))
                    .unwrap_or_default(),
                term(&action.kind),
                term(&action.resource),
                submitted.digest
            ));
            if let Some(url) = &submitted.review_url {
                out.line(&format!("review it at {}", term(url)));
            }
            match wait(&client, id, signals, out).await? {
                Ok((token, edited)) => {
                    edited_params = edited;
                    Some(token)
                }
                Err(signal) => return interrupted(&client, id, signal, out).await,
            }
        }
    };
    // Reviewers may have approved a changed command: only that one runs, and nothing runs
    // (the grant is left unused) when the change is one the command cannot apply.
    let run = match &edited_params {
        None => EditedRun {
            command: args.command.clone(),
            env: Vec::new(),
        },
        Some(edited) => {
            let run = edited_run(&action.params, edited).map_err(|why| {
                Failure::new(
                    exit::REFUSED,
                    format!("approved with changes, but not run: {why}"),
                )
            })?;
            out.line(&format!(
                "reviewers changed the command before approving; running {}",
                term(&shell_line(&run.command))
            ));
            run
        }
    };
    let grant_token = grant_token.ok_or_else(|| {
        Failure::new(
            exit::UNAVAILABLE,
            "the server answered without a grant token; the command was not run",
        )
    })?;
    client
        .start_execution(id, &grant_token)
        .await
        .map_err(api_failure)?;
    let ran = run_child(&run.command, &run.env, signals).await;
    let (outcome, code, failure) = match &ran {
        Ok(()) => (Ok(()), 0, None),
        Err(RunError::Exited { code, status }) => (Err(status.clone()), *code, None),
        Err(e) => (
            Err(e.to_string()),
            exit::NOT_STARTED,
            Some(format!("approved, but the command {e}; recorded as failed")),
        ),
    };
    if let Err(e) = client
        .finish_execution(id, outcome.as_ref().map(|_| ()).map_err(String::as_str))
        .await
    {
        out.line(&format!(
            "the command ran, but its outcome could not be recorded: {}",
            term(&one_line(&e.to_string()))
        ));
    }
    if let Some(message) = failure {
        return Err(Failure::new(code, message));
    }
    if let Err(status) = outcome {
        out.line(&format!("the command {status}; recorded as failed"));
    }
    Ok(code)
}

/// Long-polls until the request is decided: the grant token, or the signal that interrupted.
async fn wait(
    client: &ApiClient,
    id: RequestId,
    signals: &mut Signals,
    out: &mut Progress,
) -> Result<Result<(String, Option<serde_json::Value>), Caught>, Failure> {
    let started = std::time::Instant::now();
    // Reminders already reported as unanswered.
    let mut told = 0;
    loop {
        let step = client.wait(id, WAIT_STEP);
        tokio::pin!(step);
        let every = if out.tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(60)
        };
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let waited = loop {
            tokio::select! {
                w = &mut step => break w,
                signal = signals.recv() => {
                    out.clear();
                    return Ok(Err(signal));
                }
                _ = ticks.tick() => out.status(&format!(
                    "waiting for approval of {id}: {} elapsed",
                    human(started.elapsed())
                )),
            }
        };
        let waited = waited.map_err(api_failure)?;
        let by = || {
            format!(
                "{}{}",
                waited.decided_by.as_deref().map(term).unwrap_or_default(),
                waited
                    .reason
                    .as_deref()
                    .map(|r| format!(": {}", term(&one_line(r))))
                    .unwrap_or_default()
            )
        };
        if waited.unanswered_reminders > told {
            told = waited.unanswered_reminders;
            out.line(&super::unanswered_text(
                id,
                told,
                waited.expires_at - chrono::Utc::now(),
            ));
        }
        let (code, message) = match waited.state {
            RequestState::Pending => continue,
            RequestState::Approved => {
                out.clear();
                return match waited.grant_token {
                    Some(token) => {
                        out.line(&format!(
                            "approved by {}; running",
                            waited.decided_by.as_deref().map(term).unwrap_or_default()
                        ));
                        Ok(Ok((token, waited.edited.map(|e| e.params))))
                    }
                    None => Err(Failure::new(
                        exit::UNAVAILABLE,
                        "approved, but the server sent no grant token; the command was not run",
                    )),
                };
            }
            RequestState::Denied => (exit::DENIED, format!("denied by {}", by())),
            RequestState::Expired | RequestState::Lapsed => (
                exit::EXPIRED,
                format!("request {id} expired before anyone decided"),
            ),
            RequestState::Cancelled => (exit::CANCELLED, format!("cancelled by {}", by())),
            other => (exit::REFUSED, format!("request {id} is {other}")),
        };
        out.clear();
        return Err(Failure::new(
            code,
            format!("{message}; the command was not run"),
        ));
    }
}

async fn interrupted(
    client: &ApiClient,
    id: RequestId,
    signal: Caught,
    out: &mut Progress,
) -> Result<u8, Failure> {
    let withdrawal = match client.cancel(id, Some(&interrupted_reason(signal))).await {
        Ok(_) => Withdrawal::Cancelled,
        Err(ClientError::Problem(p)) if p.status == 409 => {
            Withdrawal::AlreadyResolved("decided".to_owned())
        }
        Err(e) => Withdrawal::Failed(term(&one_line(&e.to_string()))),
    };
    withdrawn(id, signal, withdrawal, out)
}

/// A failed API call as exec's exit code and one line.
fn api_failure(e: ClientError) -> Failure {
    let (code, message) = match &e {
        ClientError::Problem(p) if p.code == "policy_denied" => (
            exit::REFUSED,
            format!(
                "refused by policy rule {:?}: {}",
                term(p.rule.as_deref().unwrap_or("?")),
                term(&one_line(p.reason.as_deref().unwrap_or(&p.detail)))
            ),
        ),
        ClientError::Problem(p) if p.code == "denied_recently" => {
            (exit::DENIED, term(&one_line(&p.detail)))
        }
        ClientError::Problem(p) => (
            match p.status {
                401 => exit::USAGE,
                400 | 403 | 404 | 409 | 413 | 422 => exit::REFUSED,
                _ => exit::UNAVAILABLE,
            },
            format!("the server refused: {}", term(&one_line(&p.detail))),
        ),
        _ => (
            exit::UNAVAILABLE,
            format!(
                "the server is unavailable: {}",
                term(&one_line(&e.to_string()))
            ),
        ),
    };
    Failure::new(code, format!("{message}; the command was not run"))
}

//! `ConsoleApprover`: review requests at a terminal, for local use and demos.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

use crate::approver::{Approver, ApproverError, Decisions, DispatchReason};
use crate::lifecycle::Review;
use crate::request::{Digest, Principal};
use crate::store::{Delivery, RequestId, RequestRecord, RequestState};

const MAX_VALUE_CHARS: usize = 2000;

type Input = Arc<tokio::sync::Mutex<Box<dyn AsyncBufRead + Send + Unpin>>>;
type Output = Arc<Mutex<Box<dyn Write + Send>>>;

/// Shows each pending request on a terminal and reads `approve [reason]` or `deny [reason]`
/// from its input, deciding as one configured reviewer.
///
/// Untrusted text (parameters, justification, names) has control characters replaced, so an
/// agent cannot move the cursor or recolour the terminal to fake what the reviewer sees, and
/// long values are truncated.
#[derive(Clone)]
pub struct ConsoleApprover {
    reviewer: Principal,
    input: Input,
    output: Output,
    /// Signals a prompt that its request was decided elsewhere (another channel).
    decided_elsewhere: Arc<Mutex<HashMap<RequestId, Arc<Notify>>>>,
}

impl std::fmt::Debug for ConsoleApprover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleApprover")
            .field("reviewer", &self.reviewer.id)
            .finish_non_exhaustive()
    }
}

impl ConsoleApprover {
    /// Reads from standard input and writes to standard output as `reviewer`.
    pub fn new(reviewer: Principal) -> Self {
        Self::with_io(
            reviewer,
            BufReader::new(tokio::io::stdin()),
            std::io::stdout(),
        )
    }

    /// Reads from `input` and writes to `output` (for tests and embedding).
    pub fn with_io(
        reviewer: Principal,
        input: impl AsyncBufRead + Send + Unpin + 'static,
        output: impl Write + Send + 'static,
    ) -> Self {
        ConsoleApprover {
            reviewer,
            input: Arc::new(tokio::sync::Mutex::new(Box::new(input))),
            output: Arc::new(Mutex::new(Box::new(output))),
            decided_elsewhere: Arc::default(),
        }
    }

    /// Asks at the terminal and decides; returns early when the request is decided elsewhere.
    async fn prompt(
        &self,
        id: RequestId,
        digest: Digest,
        prompt: &str,
        decisions: &dyn Decisions,
        decided_elsewhere: &Notify,
    ) {
        // One prompt at a time: the input is shared by every pending request.
        let mut input = self.input.lock().await;
        if decisions
            .get(id)
            .await
            .ok()
            .flatten()
            .is_none_or(|r| r.state != RequestState::Pending)
        {
            return;
        }
        self.print(prompt);
        loop {
            let mut line = String::new();
            tokio::select! {
                read = input.read_line(&mut line) => match read {
                    Ok(0) | Err(_) => {
                        self.print("\n(no more input; leaving the request pending)\n");
                        return;
                    }
                    Ok(_) => {}
                },
                _ = decided_elsewhere.notified() => {
                    self.print("\n(decided in another channel; no answer needed here)\n");
                    return;
                }
            }
            let line = line.trim();
            let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let review = match word.to_ascii_lowercase().as_str() {
                "a" | "approve" | "y" | "yes" => Review::approve(self.reviewer.clone()),
                "d" | "deny" | "n" | "no" => Review::deny(self.reviewer.clone()),
                _ => {
                    self.print("Type `approve [reason]` or `deny [reason]`: ");
                    continue;
                }
            };
            let mut review = review.via("console").for_digest(digest);
            if !rest.trim().is_empty() {
                review = review.reason(rest.trim());
            }
            match decisions.decide(id, review).await {
                Ok(outcome) => self.print(&format!(
                    "Recorded: request {id} is {} ({}/{} approvals).\n",
                    outcome.state, outcome.approvals, outcome.quorum
                )),
                Err(e) => self.print(&format!(
                    "Refused: {}\n",
                    terminal_safe(&e.to_string(), 500)
                )),
            }
            return;
        }
    }

    fn print(&self, text: &str) {
        if let Ok(mut out) = self.output.lock() {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }
}

/// Untrusted text made safe for a terminal: control characters (ESC included, so no ANSI
/// sequence moves the cursor or recolours the screen) and invisible formatting characters
/// (bidi overrides, zero-width) are shown in their visible form (see
/// [`crate::text::neutralize`]), the text is cut to `max_chars` characters, and continuation
/// lines are indented so a value cannot start a line that looks like ours.
///
/// ```
/// use approvals_core::console::terminal_safe;
/// assert_eq!(terminal_safe("ok\x1b[2K", 100), "ok‹U+001B›[2K");
/// assert_eq!(terminal_safe("a\nb", 100), "a\n    | b");
/// ```
pub fn terminal_safe(text: &str, max_chars: usize) -> String {
    let shown = crate::text::neutralize(text);
    let shown = crate::text::truncate_with(&shown, max_chars, " (truncated)");
    shown.replace('\n', "\n    | ")
}

fn render(record: &RequestRecord, reason: DispatchReason, reviewer: &Principal) -> String {
    let req = &record.request;
    let safe = |s: &str| terminal_safe(s, MAX_VALUE_CHARS);
    let mut text = String::new();
    text.push_str("\n=== APPROVAL NEEDED");
    if reason == DispatchReason::Escalation {
        text.push_str(" (ESCALATED)");
    }
    text.push_str(" ===\n");
    text.push_str(&format!("  request   {}\n", record.id));
    text.push_str(&format!(
        "  action    {} on {}\n",
        safe(&req.kind),
        safe(&req.resource)
    ));
    if let Some(init) = &req.initiator {
        let mut who = format!("{} {}", init.principal.kind, safe(init.principal.label()));
        if let Some(model) = &init.model {
            who.push_str(&format!(" (model {})", safe(model)));
        }
        if let Some(h) = &init.on_behalf_of {
            who.push_str(&format!(" on behalf of {}", safe(h.label())));
        }
        text.push_str(&format!("  initiator {who}\n"));
    }
    if let Some(env) = &req.context.environment {
        text.push_str(&format!("  env       {}\n", safe(env)));
    }
    if let Some(why) = &req.justification {
        text.push_str(&format!("  why       {}\n", safe(why)));
    }
    match crate::plan::PlanTerms::of(record) {
        Some(plan) => {
            let shown = plan.excerpt(MAX_VALUE_CHARS * 2);
            let mut body = shown.text.clone();
            if shown.left_out > 0 {
                body.push('\n');
                body.push_str(&shown.left_out_note(record.id, record.digest));
            }
            text.push_str(&format!(
                "  plan      {} action(s), each approved for one run as shown\n    | {}\n",
                plan.items.len(),
                terminal_safe(&body, MAX_VALUE_CHARS * 3)
            ));
        }
        None => {
            let params = serde_json::to_string_pretty(&req.params).unwrap_or_default();
            text.push_str(&format!("  params    {}\n", safe(&params)));
        }
    }
    if let Some(preview) = &req.context.preview {
        let shown = preview.excerpt(crate::preview::SHOWN_LINES, MAX_VALUE_CHARS);
        let mut body = shown.text.clone();
        if shown.is_cut() {
            body.push('\n');
            body.push_str(&shown.omitted_note(record.id, record.digest));
        }
        text.push_str(&format!(
            "  preview   {}\n    | {}\n",
            preview.caption(),
            terminal_safe(&body, MAX_VALUE_CHARS * 2)
        ));
    }
    text.push_str(&format!("  digest    {}\n", record.digest));
    text.push_str(&format!(
        "  needs     {} approval(s); expires {}\n",
        record.requirement.quorum,
        record.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
    ));
    text.push_str(&format!(
        "Reviewing as {}. Type `approve [reason]` or `deny [reason]`: ",
        safe(reviewer.label())
    ));
    text
}

#[async_trait]
impl Approver for ConsoleApprover {
    fn name(&self) -> &str {
        "console"
    }

    async fn dispatch(
        &self,
        record: &RequestRecord,
        reason: DispatchReason,
        decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        // A reminder is one line: the request's prompt is already open, or was answered.
        if reason == DispatchReason::Reminder {
            let status = crate::lifecycle::reminder_status(record);
            self.print(&format!(
                "\n(reminder {} of {}: request {} has {} of {} approvals; it expires {})\n",
                status.reminder,
                status.of,
                record.id,
                status.approvals,
                status.quorum,
                status.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
            ));
            return Ok(None);
        }
        let this = self.clone();
        let id = record.id;
        let digest = record.digest;
        let prompt = render(record, reason, &self.reviewer);
        let decided_elsewhere = Arc::new(Notify::new());
        if let Ok(mut map) = self.decided_elsewhere.lock() {
            map.insert(id, decided_elsewhere.clone());
        }
        tokio::spawn(async move {
            this.prompt(id, digest, &prompt, &*decisions, &decided_elsewhere)
                .await;
            if let Ok(mut map) = this.decided_elsewhere.lock() {
                map.remove(&id);
            }
        });
        Ok(None)
    }

    async fn resolved(&self, record: &RequestRecord) -> Result<(), ApproverError> {
        if record.state != RequestState::Pending
            && let Some(signal) = self
                .decided_elsewhere
                .lock()
                .ok()
                .and_then(|m| m.get(&record.id).cloned())
        {
            // Stored as a permit if the prompt is not waiting yet.
            signal.notify_one();
        }
        // Still pending after a change: a reviewer edited the action (see `edit`).
        if record.state == RequestState::Pending
            && let Some(edit) = record.last_edit()
        {
            let changes: Vec<String> = edit
                .edit
                .iter()
                .flat_map(|e| e.changes.iter().map(|c| c.line(80)))
                .collect();
            self.print(&format!(
                "[console] request {} ({}) was edited by {}: {}; it now has digest {}, and approvals count toward that digest only\n",
                record.id,
                terminal_safe(&record.request.kind, 200),
                terminal_safe(edit.reviewer.label(), 200),
                terminal_safe(&changes.join("; "), 600),
                record.digest
            ));
            return Ok(());
        }
        let by = match record.state {
            RequestState::Approved => {
                let names: Vec<&str> = record.approvers().iter().map(|p| p.label()).collect();
                format!(" by {}", names.join(", "))
            }
            RequestState::Denied => record
                .denial()
                .map(|d| format!(" by {}", d.reviewer.label()))
                .unwrap_or_default(),
            _ => String::new(),
        };
        self.print(&format!(
            "[console] request {} ({}) is now {}{}\n",
            record.id,
            terminal_safe(&record.request.kind, 200),
            record.state,
            terminal_safe(&by, 400)
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_shows_its_actions_with_their_digests_or_how_many_were_left_out() {
        use crate::plan::{MAX_PLAN_ITEMS, PlanItem, PlanTerms};
        use crate::request::{ActionRequest, Initiator};
        let plan = |n: usize| {
            let items = (0..n)
                .map(|i| {
                    let action = ActionRequest::new("deploy.restart", format!("svc://{i}"))
                        .params(serde_json::json!({"why": "\x1b[2Kx".repeat(40)}));
                    PlanItem {
                        digest: action.digest(),
                        action,
                    }
                })
                .collect();
            let request =
                PlanTerms { items }.to_request(std::sync::Arc::new(Initiator::agent("bot")), None);
            crate::lifecycle::open(
                RequestId::new(),
                request.clone(),
                request.digest(),
                None,
                std::sync::Arc::new(crate::policy::Requirement::groups(["sre"])),
                "v1".into(),
                chrono::Utc::now(),
            )
            .expect("opened")
        };
        let sam = Principal::human("sam@example.com");
        let small = plan(2);
        let text = render(&small, DispatchReason::New, &sam);
        assert!(text.contains("  plan      2 action(s)"), "{text}");
        for item in &PlanTerms::of(&small).expect("plan").items {
            assert!(text.contains(&item.digest.to_string()), "{text}");
        }
        assert!(
            !text.contains('\x1b') && !text.contains("\n  params    "),
            "{text}"
        );
        let large = plan(MAX_PLAN_ITEMS);
        let text = render(&large, DispatchReason::New, &sam);
        let shown = text.matches(". deploy.restart on svc://").count();
        assert!((1..MAX_PLAN_ITEMS).contains(&shown), "{shown}");
        assert!(
            text.contains(&format!(
                "{} more actions not shown",
                MAX_PLAN_ITEMS - shown
            )),
            "{text}"
        );
    }

    #[test]
    fn escape_sequences_and_long_values_are_defused() {
        let hostile = "ok\x1b[2K\x1b[1A  approved by security\r";
        let safe = terminal_safe(hostile, 100);
        assert!(!safe.contains('\x1b'));
        assert!(!safe.contains('\r'));
        assert!(safe.starts_with("ok‹U+001B›[2K‹U+001B›[1A"), "{safe}");
        let long = "x".repeat(50);
        let cut = terminal_safe(&long, 20);
        assert!(cut.ends_with("… (truncated)"), "{cut}");
        assert_eq!(cut.chars().count(), 20);
        assert_eq!(terminal_safe("a\nb", 10), "a\n    | b");
        assert_eq!(
            terminal_safe("rm -rf /\u{202E}txt.exe", 100),
            "rm -rf /‹U+202E›txt.exe"
        );
    }
}

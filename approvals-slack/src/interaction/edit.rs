//! Edit on approve through Slack: the "Edit and approve" click (the gate's dry run, then the
//! edit modal) and the modal's submission (the typed fields decided by the gate, which reads
//! them with [`params_from_fields`](approvals_core::edit::params_from_fields); a refused edit
//! shown in the modal).
//!
//! Every rule is core's: which parameters may change and how a typed value is read
//! ([`approvals_core::edit`]), who may approve and which digest ([`lifecycle`]), and the edit's
//! bounds and the policy's word on the edited action ([`Gate::decide`](approvals_core::Gate)).

use approvals_core::edit::MAX_EDITED_FIELDS;
use approvals_core::lifecycle;
use approvals_core::{Principal, RequestRecord, Review, ReviewError, ReviewOutcome, Verdict};

use super::{Ack, Answer, Interaction, ModalMetadata, SlackInteractions};
use crate::approver::CHANNEL;
use crate::blocks::edit::{MAX_EDIT_VALUE_CHARS, block_id};
use crate::blocks::{
    ButtonValue, EDIT_ACTION_ID, EDIT_BLOCK_PREFIX, REASON_BLOCK_ID, edit_modal, editable_fields,
};

/// How an edit submitted in the modal ended, for the answer to Slack and the reviewer.
enum EditEnd {
    /// The edit was refused in a way the reviewer can fix in the modal: `message` under the
    /// input `block_id`.
    Fix { block_id: String, message: String },
    /// Refused before the gate was asked; told in an ephemeral reply.
    Tell(String),
    /// The gate decided (applied or refused); reported as every decision is.
    Decided {
        record: Box<RequestRecord>,
        result: Result<ReviewOutcome, ReviewError>,
    },
}

impl SlackInteractions {
    /// The "Edit and approve" click: refused at once when reviewers may not edit this request
    /// in Slack, or when the gate's dry run of an edited approval by this reviewer refuses
    /// (everything but the edit's bounds, which are checked on submission); otherwise opens
    /// the edit modal bound to the digest on the button.
    pub(super) async fn ask_edit(
        &self,
        interaction: &Interaction,
        record: &RequestRecord,
        button: ButtonValue,
        principal: Principal,
    ) {
        let response_url = interaction.response_url.as_deref();
        let fields = match editable_fields(record) {
            Ok(fields) => fields,
            Err(why) => {
                self.reply(response_url, &format!("Not applied: {why}."))
                    .await;
                return;
            }
        };
        let dry_run = Review::approve(principal.clone())
            .via(CHANNEL)
            .for_digest(button.digest)
            .edit(serde_json::Value::clone(&record.request.params));
        let reason_required =
            match lifecycle::check_review_before_reason(record, &dry_run, self.inner.gate.now()) {
                Ok(required) => required,
                Err(refused) => {
                    self.refuse_dry_run(record.id, principal, &refused, response_url)
                        .await;
                    return;
                }
            };
        let Some(trigger) = interaction.trigger_id.as_deref() else {
            self.reply(
                response_url,
                "Not applied: Slack sent no trigger to open the edit dialog.",
            )
            .await;
            return;
        };
        let metadata = ModalMetadata {
            request_id: record.id,
            digest: button.digest,
            verdict: Verdict::Approve,
            user: interaction.user_id().to_owned(),
            reason_required,
            response_url: interaction.response_url.clone(),
            edit: true,
        }
        .seal(&self.inner.secret);
        let view = edit_modal(record, &fields, reason_required, &metadata);
        if let Err(e) = self.inner.client.open_view(trigger, &view).await {
            self.reply(
                response_url,
                &format!("Not applied: the edit dialog could not be opened ({e}). Click again."),
            )
            .await;
        }
    }

    /// The edit modal submitted (its metadata and reason already checked): reads the
    /// parameters' inputs and starts the decision; the answer comes when it is known.
    pub(super) fn on_edit_submission(
        &self,
        interaction: Interaction,
        meta: ModalMetadata,
        reason: String,
        runtime: &tokio::runtime::Handle,
    ) -> Answer {
        let fields = match submitted_fields(&interaction) {
            Ok(fields) => fields,
            Err(ack) => return Answer::Now(ack),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        runtime.spawn(async move {
            let response_url = meta.response_url.clone();
            let response_url = response_url.as_deref();
            match this.decide_edit(&interaction, &meta, reason, &fields).await {
                EditEnd::Fix { block_id, message } => {
                    if tx.send(Ack::errors(&block_id, &message)).is_err() {
                        // The modal is closed: tell the reviewer in the conversation instead.
                        this.reply(response_url, &format!("Not applied: {message}"))
                            .await;
                    }
                }
                EditEnd::Tell(text) => {
                    let _ = tx.send(Ack::Empty);
                    this.reply(response_url, &text).await;
                }
                EditEnd::Decided { record, result } => {
                    let _ = tx.send(Ack::Empty);
                    this.report(response_url, &record, Verdict::Approve, result)
                        .await;
                }
            }
        });
        Answer::Later(rx)
    }

    /// Resolves the reviewer and submits the edited approval with what was typed: the gate
    /// checks the review again (the request, or the reviewer's groups, may have changed since
    /// the modal opened), reads the fields against the stored request and decides. A refused
    /// edit or a missing reason is shown under the input to fix; any other refusal closes
    /// the modal.
    async fn decide_edit(
        &self,
        interaction: &Interaction,
        meta: &ModalMetadata,
        reason: String,
        fields: &[(String, String)],
    ) -> EditEnd {
        let id = meta.request_id;
        let principal = match self.resolve(interaction.user_id(), Some(id)).await {
            Ok(p) => p,
            Err(e) => return EditEnd::Tell(format!("Not applied: {e}.")),
        };
        let mut review = Review::approve(principal)
            .via(CHANNEL)
            .for_digest(meta.digest)
            .edit_fields(fields.iter().cloned());
        if !reason.is_empty() {
            review = review.reason(reason);
        }
        let result = self.inner.gate.decide(id, review).await;
        match &result {
            Err(refused @ ReviewError::EditRefused { why, .. }) => {
                // Point at the parameter the refusal names (the longest pointer it contains,
                // so `/filter/region` wins over `/filter`), else the first input.
                let block = fields
                    .iter()
                    .map(|(p, _)| p)
                    .filter(|p| why.contains(p.as_str()))
                    .max_by_key(|p| p.len())
                    .or_else(|| fields.first().map(|(p, _)| p))
                    .map_or_else(|| REASON_BLOCK_ID.to_owned(), |p| block_id(p));
                EditEnd::Fix {
                    block_id: block,
                    message: refused.reviewer_message(),
                }
            }
            Err(ReviewError::ReasonRequired { .. }) => EditEnd::Fix {
                block_id: REASON_BLOCK_ID.to_owned(),
                message: "A reason is required to approve the edited action.".to_owned(),
            },
            Err(refused) => EditEnd::Tell(format!("Not applied: {}", refused.reviewer_message())),
            Ok(_) => match self.inner.gate.get(id).await {
                Ok(Some(record)) => EditEnd::Decided {
                    record: Box::new(record),
                    result,
                },
                _ => EditEnd::Tell("Your edited approval is recorded.".to_owned()),
            },
        }
    }
}

/// The parameters' inputs of a submitted edit modal: `(pointer, text)` for each input block
/// of ours (an empty input is empty text), in pointer order. Inputs longer than the modal
/// allows, or more of them than any rule lets reviewers edit, are refused with errors for
/// the modal. Whether each pointer may be edited is the gate's to say when it reads them.
fn submitted_fields(interaction: &Interaction) -> Result<Vec<(String, String)>, Ack> {
    let Some(view) = interaction.view.as_ref() else {
        return Err(Ack::Empty);
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    for (block, actions) in &view.state.values {
        let Some(pointer) = block.strip_prefix(EDIT_BLOCK_PREFIX) else {
            continue;
        };
        let text = actions
            .get(EDIT_ACTION_ID)
            .and_then(|v| v.value.as_deref())
            .unwrap_or("");
        if text.chars().count() > MAX_EDIT_VALUE_CHARS {
            return Err(Ack::errors(
                block,
                &format!("At most {MAX_EDIT_VALUE_CHARS} characters."),
            ));
        }
        fields.push((pointer.to_owned(), text.to_owned()));
    }
    if fields.len() > MAX_EDITED_FIELDS {
        return Err(Ack::errors(
            REASON_BLOCK_ID,
            "This dialog has more parameters than any rule lets reviewers edit.",
        ));
    }
    fields.sort();
    Ok(fields)
}

//! SIEM export of verified audit events: JSON lines, OCSF and CEF, from a whole log (batch) or
//! from a log that is still being written (follow).
//!
//! Only entries covered by a checkpoint signed by a trusted key are exported; a log that fails
//! verification exports nothing (batch) or stops at the first problem (follow), so a SIEM never
//! ingests events that the log itself cannot vouch for. Every exported record names its place in
//! the log (origin, `seq`, leaf hash, covering checkpoint size), so any record can later be
//! proven with `approvals-audit prove <log> <seq>`.
//!
//! # JSON lines, schema `approvals.audit.export/1`
//!
//! One object per line:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `schema` | string | `approvals.audit.export/1`; a new major version changes or removes fields |
//! | `time` | string | the event time, RFC 3339 UTC, as recorded |
//! | `time_ms` | integer | the same, in milliseconds since the Unix epoch |
//! | `event_type` | string | `requested`, `policy_decided`, `reviewed`, `approved`, ... (see `approvals_core::audit`) |
//! | `request_id` | string | the approval request (UUID) |
//! | `action` | object | `kind`, `resource`, `digest` (`sha256:<hex>`) of the action |
//! | `actor` | object | `id`, `kind` (`human`, `agent`, `service`, `system`), optional `display_name` and `groups` (a reviewer's groups at decision time), and for the initiator's events `on_behalf_of` (the human it acts for): who acted in this event (mapping below) |
//! | `actors` | array | everyone who acted, `actor` first: every approver of an `approved` event; the initiator and the human it acts for |
//! | `outcome` | string | `success`, or `failure` for refused reviews and grants, failed dispatches and failed executions |
//! | `severity` | string | `informational`, `low`, `medium` or `high` |
//! | `message` | string | one sentence for people |
//! | `log` | object | `origin`, `seq`, `leaf` (hex), `checkpoint_size`: where the event is in the signed log |
//! | `event` | object | the audit event exactly as logged (schema v1) |
//!
//! Fields may be added within version 1; consumers must ignore unknown fields.
//!
//! # OCSF: API Activity (class 6003), OCSF 1.3.0
//!
//! Each audit event becomes one [API Activity](https://schema.ocsf.io/1.3.0/classes/api_activity)
//! event (category 6, Application Activity). Why this class: every audit event is an operation
//! on an object managed through the approvals API (an approval request and its grant),
//! performed by an identified actor with a success or failure status, which is what API
//! Activity models; it has been stable since OCSF 1.0 and every OCSF consumer (AWS Security
//! Lake, Splunk's OCSF add-on mapping it to the Change data model, ...) ingests it. OCSF 1.3.0
//! has no class for AI-agent activity; the agent, its model and the human it acts for are in
//! `actor` and `unmapped` until such a class is stable.
//!
//! | OCSF attribute | value |
//! |---|---|
//! | `activity_id` | 1 Create (`requested`, `grant_issued`, `request_refused`, `resubmission_refused`, `credential_issued`), 4 Delete (`credential_revoked`), 99 Other (`grant_consumed`, `executed`), 3 Update (every other state change) |
//! | `type_uid` | `600300 + activity_id` |
//! | `time` | event time, ms since the epoch; `metadata.original_time` keeps the RFC 3339 text |
//! | `severity_id` | 1 informational; 2 low (denials, expiries, failures); 3 medium (refused reviews); 4 high (forged callbacks, self-approval, refused grants) |
//! | `status_id` | 1 Success, 2 Failure (as `outcome` above); `status_detail` the reason |
//! | `actor.user` | `uid`, `name`, `type_id` (1 User for humans, 3 System for the gate, 99 Other for agents and services), `groups`; who it is per event: see below |
//! | `actor.app_name`, `actor.app_uid` | for the initiator's events: the agent or service (then `actor.user` is the human it acts for, if any) |
//! | `observables` | one User Name (type_id 4) per person or agent named as actor, so a search by any approver finds the approval |
//! | `api.operation` | `approvals.<event_type>`; `api.request.uid` the request id; `api.service.name` `approvals` |
//! | `resources[0]` | `uid` and `name` the resource, `type` the action kind, `data.digest` the digest |
//! | `metadata` | `version` 1.3.0, `product`, `uid` `<origin>/<seq>`, `log_name` the origin, `sequence` the seq, `correlation_uid` the request id, `event_code` the event type |
//! | `src_endpoint.name` | the channel the event came through, or `approvals-gate` |
//! | `unmapped.approvals` | the audit event exactly as logged; `unmapped.audit_log` its place in the log; `unmapped.actors` everyone who acted, with `role` and `groups` |
//!
//! ## Who is the actor
//!
//! The same mapping decides `actor` (JSON lines), `suser` (CEF) and `actor.user` (OCSF):
//!
//! | event | actor |
//! |---|---|
//! | `requested`, `grant_issued`, `grant_rejected`, `grant_consumed`, `executed`, `request_refused` | the initiator (agent or service; in OCSF `actor.app_*`, with the human it acts for as `actor.user`). `executed` and `request_refused` name it; for the `grant_*` events, and `executed` in logs written before it was recorded, it is the initiator of the request's `requested` event earlier in the export, else the gate |
//! | `reviewed`, `review_rejected`, `edited` | the reviewer (with groups at decision time), else the gate |
//! | `approved`, `approved_by_standing_grant`, `approved_by_plan` | the approvers (of the request, or of the standing grant or plan that approved it): the first as actor, all in `actors` (OCSF: `observables`, `unmapped.actors`) |
//! | `denied`, `cancelled` | the person who denied or cancelled, else the gate |
//! | `resubmission_refused` | the reviewer whose earlier denial of the same action refused it |
//! | `policy_decided`, `dispatched`, `dispatch_failed`, `escalated`, `reminded`, `expired`, `lapsed`, `standing_grant_used`, `plan_item_used` | the gate (`approvals-gate`, kind `system`) |
//!
//! Why several approvers are represented this way in OCSF 1.3.0: see `siem/ocsf_actor.rs`.
//!
//! # CEF
//!
//! `CEF:0|Action-Level Approvals|approvals|<version>|<event_type>|<name>|<severity 0-10>|<extension>`
//! with extension keys `rt` (ms), `externalId` (request id), `act` (event type), `outcome`,
//! `suser` (actor id), `cat` (action kind), `reason`, `msg`, `cn1` (seq) and the labelled custom
//! strings `cs1` resource, `cs2` digest, `cs3` approvers, `cs4` policyVersion, `cs5` logOrigin,
//! `cs6` leafHash. Every value first goes through the one rule for untrusted text
//! ([`approvals_core::text::neutralize`]): control characters other than line feed and tab,
//! bidi controls and other invisible characters are shown as visible `‹U+202E›` markers, so a
//! SIEM analyst reads what the agent sent and a log viewer cannot be made to reorder it.
//! Escaping then follows the ArcSight CEF specification: in header fields `\` and `|` are
//! escaped with a backslash; in extension values `\` and `=` are escaped and a line feed
//! becomes `\n` (a CR LF pair is one line feed). Tabs become spaces, and every value is cut to
//! 1023 characters, so agent-supplied text can neither add fields nor split the record.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::log::{FollowError, LogEntry, LogError, LogFollower, LogVerifier, VerifyReport};
use crate::view::{EventView, InitiatorMemo};

mod ocsf_actor;

/// The JSON-lines export schema.
pub const EXPORT_SCHEMA: &str = "approvals.audit.export/1";
/// The OCSF schema version of the OCSF output.
pub const OCSF_VERSION: &str = "1.3.0";
/// The CEF (and OCSF) vendor name.
pub const VENDOR: &str = "Action-Level Approvals";
/// The CEF (and OCSF) product name.
pub const PRODUCT: &str = "approvals";
/// Longest CEF field value, in characters; longer values are cut.
pub const CEF_MAX_VALUE_CHARS: usize = 1023;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// JSON lines in the `approvals.audit.export/1` schema.
    JsonLines,
    /// OCSF 1.3.0 API Activity events, one JSON object per line.
    Ocsf,
    /// CEF records, one per line.
    Cef,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jsonl" | "json" => Ok(Format::JsonLines),
            "ocsf" => Ok(Format::Ocsf),
            "cef" => Ok(Format::Cef),
            other => Err(format!(
                "unknown export format {other:?} (use jsonl, ocsf or cef)"
            )),
        }
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log failed verification; nothing was exported.
    #[error("the audit log failed verification; nothing was exported:\n{0}")]
    Verification(Box<VerifyReport>),
    /// Following the log stopped.
    #[error(transparent)]
    Follow(#[from] FollowError),
    /// An event is not a JSON object.
    #[error("entry {seq} does not hold a JSON object event")]
    BadEvent {
        /// The entry.
        seq: u64,
    },
    /// Writing the output failed.
    #[error("writing the export: {0}")]
    Write(#[from] std::io::Error),
}

/// Renders verified log entries in one format.
///
/// An exporter remembers the initiator of each request whose `requested` event it rendered,
/// so that later events acted by the initiator that do not name it (`grant_issued`,
/// `grant_rejected`, `grant_consumed`, and `executed` in older logs) name it as their actor
/// instead of the gate: render a log's entries in order with one exporter.
#[derive(Debug, Clone)]
pub struct Exporter {
    format: Format,
    product_version: String,
    initiators: InitiatorMemo,
}

impl Exporter {
    /// An exporter for `format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            product_version: env!("CARGO_PKG_VERSION").to_owned(),
            initiators: InitiatorMemo::default(),
        }
    }

    /// One record (without a newline) for an entry of the log named `origin`.
    pub fn render(&self, entry: &LogEntry, origin: &str) -> Result<String, ExportError> {
        let event = entry
            .event_value()
            .map_err(|_| ExportError::BadEvent { seq: entry.seq })?;
        if !event.is_object() {
            return Err(ExportError::BadEvent { seq: entry.seq });
        }
        // JSON is written canonically (keys sorted), so the output is the same whatever
        // serde_json features other crates in the build enable (`preserve_order`).
        let json = |value: Value| {
            String::from_utf8(approvals_core::request::canonical_json(&value))
                .map_err(|_| ExportError::BadEvent { seq: entry.seq })
        };
        // The event as seen for its actor: with the request's initiator filled in when the
        // event is the initiator's but does not name it. Records still carry the event as
        // logged.
        let completed = self.initiators.complete(&event);
        let view = completed.as_ref().unwrap_or(&event);
        Ok(match self.format {
            Format::JsonLines => json(jsonl_record(entry, &event, view, origin))?,
            Format::Ocsf => json(ocsf_record(
                entry,
                &event,
                view,
                origin,
                &self.product_version,
            ))?,
            Format::Cef => to_cef(entry, view, origin, &self.product_version),
        })
    }
}

fn log_ref(entry: &LogEntry, origin: &str) -> Value {
    json!({
        "origin": origin,
        "seq": entry.seq,
        "leaf": entry.leaf_hex(),
        "checkpoint_size": entry.checkpoint_size,
    })
}

fn time_ms(v: &EventView<'_>) -> i64 {
    v.at().map_or(0, |t| t.timestamp_millis())
}

const OCSF_SEVERITIES: [&str; 5] = ["Unknown", "Informational", "Low", "Medium", "High"];
const SEVERITY_NAMES: [&str; 5] = ["unknown", "informational", "low", "medium", "high"];

/// The `approvals.audit.export/1` record of an entry, on its own (an [`Exporter`] also
/// attributes `grant_*` events to the request's initiator).
pub fn to_jsonl(entry: &LogEntry, event: &Value, origin: &str) -> Value {
    jsonl_record(entry, event, event, origin)
}

fn actor_json(actor: &crate::view::Actor) -> Value {
    let mut out = json!({"id": actor.id, "kind": actor.kind});
    if let Some(name) = &actor.display_name {
        out["display_name"] = json!(name);
    }
    if !actor.groups.is_empty() {
        out["groups"] = json!(actor.groups);
    }
    out
}

/// `event` is carried verbatim; `view` (the event, possibly with its initiator filled in)
/// decides the actor and the other derived fields.
fn jsonl_record(entry: &LogEntry, event: &Value, view: &Value, origin: &str) -> Value {
    let v = EventView(view);
    let actors = v.actors();
    let mut actor = actors
        .first()
        .map(actor_json)
        .unwrap_or_else(|| json!({"id": "approvals-gate", "kind": "system"}));
    if let Some(person) = v.on_behalf_of() {
        actor["on_behalf_of"] = actor_json(&person);
    }
    json!({
        "schema": EXPORT_SCHEMA,
        "time": v.str("at").unwrap_or(""),
        "time_ms": time_ms(&v),
        "event_type": v.name(),
        "request_id": v.request_id(),
        "action": {"kind": v.kind(), "resource": v.resource(), "digest": v.digest()},
        "actor": actor,
        "actors": actors.iter().map(actor_json).collect::<Vec<_>>(),
        "outcome": if v.succeeded() { "success" } else { "failure" },
        "severity": SEVERITY_NAMES[usize::from(v.severity()).min(4)],
        "message": v.message(),
        "log": log_ref(entry, origin),
        "event": event,
    })
}

/// The OCSF 1.3.0 API Activity (6003) event of an entry, on its own (an [`Exporter`] also
/// attributes `grant_*` events to the request's initiator).
pub fn to_ocsf(entry: &LogEntry, event: &Value, origin: &str, product_version: &str) -> Value {
    ocsf_record(entry, event, event, origin, product_version)
}

fn ocsf_record(
    entry: &LogEntry,
    event: &Value,
    view: &Value,
    origin: &str,
    product_version: &str,
) -> Value {
    let v = EventView(view);
    let (activity_id, activity_name) = match v.name() {
        "requested"
        | "grant_issued"
        | "request_refused"
        | "resubmission_refused"
        | "credential_issued" => (1, "Create"),
        "credential_revoked" => (4, "Delete"),
        "grant_consumed" | "executed" => (99, "Other"),
        _ => (3, "Update"),
    };
    let severity_id = v.severity();
    let ok = v.succeeded();
    let (actor, observables, actors) = ocsf_actor::actor(&v);
    let mut out = json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 600300 + activity_id,
        "type_name": format!("API Activity: {activity_name}"),
        "time": time_ms(&v),
        "severity_id": severity_id,
        "severity": OCSF_SEVERITIES[usize::from(severity_id).min(4)],
        "status_id": if ok { 1 } else { 2 },
        "status": if ok { "Success" } else { "Failure" },
        "message": v.message(),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": product_version},
            "uid": format!("{origin}/{}", entry.seq),
            "log_name": origin,
            "sequence": entry.seq,
            "original_time": v.str("at").unwrap_or(""),
            "correlation_uid": v.request_id(),
            "event_code": v.name(),
        },
        "actor": actor,
        "api": {
            "operation": format!("approvals.{}", v.name()),
            "service": {"name": PRODUCT},
            "request": {"uid": v.request_id()},
        },
        "resources": [{
            "uid": v.resource(),
            "name": v.resource(),
            "type": v.kind(),
            "data": {"digest": v.digest()},
        }],
        "src_endpoint": {"name": v.str("channel").unwrap_or("approvals-gate")},
        "unmapped": {
            "approvals": event,
            "audit_log": log_ref(entry, origin),
            "actors": actors,
        },
    });
    if !observables.is_empty() {
        out["observables"] = observables.into();
    }
    if let Some(reason) = v.reason() {
        out["status_detail"] = json!(reason);
    }
    out
}

fn cef_name(v: &EventView<'_>) -> String {
    match v.name() {
        "requested" => "Approval requested",
        "policy_decided" => "Policy decision",
        "dispatched" => "Request sent to reviewers",
        "dispatch_failed" => "Request delivery failed",
        "reviewed" => "Review accepted",
        "review_rejected" => "Review refused",
        "edited" => "Action edited by a reviewer",
        "approved" => "Request approved",
        "approved_by_standing_grant" => "Request approved by a standing grant",
        "standing_grant_used" => "Standing grant used",
        "approved_by_plan" => "Request approved by a plan",
        "plan_item_used" => "Plan item used",
        "denied" => "Request denied",
        "escalated" => "Request escalated",
        "reminded" => "Reviewers reminded",
        "expired" => "Request expired",
        "cancelled" => "Request cancelled",
        "grant_issued" => "Grant issued",
        "grant_rejected" => "Grant refused",
        "lapsed" => "Grant lapsed",
        "grant_consumed" => "Grant consumed",
        "executed" if v.succeeded() => "Action executed",
        "executed" => "Action failed",
        "request_refused" => "Action refused before review",
        "resubmission_refused" => "Action refused after a recent denial",
        "credential_issued" => "Credential issued for the action",
        "credential_revoked" => "Credential revoked",
        other => other,
    }
    .to_owned()
}

/// The CEF record of an entry.
pub fn to_cef(entry: &LogEntry, event: &Value, origin: &str, product_version: &str) -> String {
    let v = EventView(event);
    let cef_severity = match v.severity() {
        4 => 8,
        3 => 6,
        2 => 4,
        _ => 2,
    };
    let mut out = format!(
        "CEF:0|{}|{}|{}|{}|{}|{cef_severity}|",
        cef_header(VENDOR),
        cef_header(PRODUCT),
        cef_header(product_version),
        cef_header(v.name()),
        cef_header(&cef_name(&v)),
    );
    let approvers = v.approvers().join(",");
    let mut fields: Vec<(&str, String)> = vec![
        ("rt", time_ms(&v).to_string()),
        ("externalId", v.request_id().to_owned()),
        ("act", v.name().to_owned()),
        (
            "outcome",
            if v.succeeded() { "success" } else { "failure" }.to_owned(),
        ),
        ("suser", v.actor().id),
        ("cat", v.kind().to_owned()),
        ("cs1Label", "resource".into()),
        ("cs1", v.resource().to_owned()),
        ("cs2Label", "digest".into()),
        ("cs2", v.digest().to_owned()),
    ];
    if !approvers.is_empty() {
        fields.push(("cs3Label", "approvers".into()));
        fields.push(("cs3", approvers));
    }
    if let Some(version) = v.policy_version() {
        fields.push(("cs4Label", "policyVersion".into()));
        fields.push(("cs4", version.to_owned()));
    }
    fields.extend([
        ("cs5Label", "logOrigin".into()),
        ("cs5", origin.to_owned()),
        ("cs6Label", "leafHash".into()),
        ("cs6", entry.leaf_hex()),
        ("cn1Label", "logSeq".into()),
        ("cn1", entry.seq.to_string()),
    ]);
    if let Some(reason) = v.reason() {
        fields.push(("reason", reason));
    }
    fields.push(("msg", v.message()));
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(&cef_value(value));
    }
    out
}

/// `text` as the one rule for untrusted text shows it ([`approvals_core::text::neutralize`]:
/// control, bidi and other invisible characters as visible `‹U+XXXX›` markers, CR LF as LF),
/// cut to [`CEF_MAX_VALUE_CHARS`] characters with `…`.
fn bounded(text: &str) -> String {
    let shown = approvals_core::text::neutralize(text);
    approvals_core::text::truncate(&shown, CEF_MAX_VALUE_CHARS).into_owned()
}

/// Escapes a CEF header field: control, bidi and invisible characters are shown as visible
/// markers, `\` and `|` get a backslash, line feeds and tabs become spaces (a header cannot
/// span lines); at most 1023 characters.
pub fn cef_header(text: &str) -> String {
    let shown = bounded(text);
    let mut out = String::with_capacity(shown.len());
    for c in shown.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\n' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a CEF extension value: control, bidi and invisible characters are shown as visible
/// markers (a CR LF pair is one line feed), `\` and `=` get a backslash, a line feed becomes
/// `\n` and a tab a space; at most 1023 characters.
pub fn cef_value(text: &str) -> String {
    let shown = bounded(text);
    let mut out = String::with_capacity(shown.len());
    for c in shown.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// What a batch export did.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// Records written.
    pub exported: u64,
    /// The log's verification report (warnings tell of an unsigned tail that was held back).
    pub report: VerifyReport,
}

/// Exports every verified entry of the log at `path` to `out`, one record per line.
///
/// The log is verified first; if it has any problem, nothing is written and
/// [`ExportError::Verification`] carries the report. Entries after the last verified
/// checkpoint are not exported (the report's warnings say how many).
pub fn export_file(
    path: impl AsRef<Path>,
    verifier: &LogVerifier,
    format: Format,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    let path = path.as_ref();
    // First pass: verify everything, so that nothing is written from a tampered log.
    let report = verifier.verify_file(path)?;
    if !report.is_ok() {
        return Err(ExportError::Verification(Box::new(report)));
    }
    let origin = report
        .last_verified
        .as_ref()
        .map(|v| v.checkpoint.origin.clone())
        .unwrap_or_default();
    let exporter = Exporter::new(format);
    let mut exported = 0;
    // Second pass: stream the verified entries (re-verified as they are read, in case the file
    // changed in between).
    let report = crate::log::for_each_verified(path, verifier, |entry| {
        let mut line = exporter.render(&entry, &origin)?;
        line.push('\n');
        out.write_all(line.as_bytes())?;
        exported += 1;
        Ok::<(), ExportError>(())
    })?;
    if !report.is_ok() {
        return Err(ExportError::Verification(Box::new(report)));
    }
    out.flush()?;
    Ok(ExportSummary { exported, report })
}

/// Follows the log at `path` (from its first line), writing each entry to `out` as soon as a
/// trusted checkpoint covers it, polling every `poll`. Returns when `keep_going` returns false
/// (checked after each poll) with the number of records written, or at the first problem.
pub fn follow_file(
    path: impl AsRef<Path>,
    verifier: &LogVerifier,
    format: Format,
    out: &mut dyn Write,
    poll: Duration,
    mut keep_going: impl FnMut() -> bool,
) -> Result<u64, ExportError> {
    let mut follower = LogFollower::open(path, verifier)?;
    let exporter = Exporter::new(format);
    let mut exported = 0;
    loop {
        let entries = follower.poll();
        let origin = follower
            .last_verified()
            .map(|v| v.checkpoint.origin.clone())
            .unwrap_or_default();
        let (entries, stop) = match entries {
            Ok(e) => (e, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        for entry in &entries {
            let mut line = exporter.render(entry, &origin)?;
            line.push('\n');
            out.write_all(line.as_bytes())?;
            exported += 1;
        }
        out.flush()?;
        if let Some(e) = stop {
            return Err(e.into());
        }
        if !keep_going() {
            return Ok(exported);
        }
        std::thread::sleep(poll);
    }
}

//! What the API and the console both apply to requests: who may see one ([`may_view`]),
//! the list query ([`ListQuery`]) and the bound on reasons ([`check_reason`]).

use approvals_core::store::PageCursor;
use approvals_core::{
    ListFilter, Principal, PrincipalKind, RequestRecord, RequestState, StoreError,
};

use crate::problem::Problem;
use crate::shared::MAX_REASON_CHARS;

/// Largest `limit` accepted by `GET /v1/requests`.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Whether `principal` may see `record`: humans see everything; agents and services only
/// what they initiated, compared canonically
/// ([`identity::same_canonical`](approvals_core::identity::same_canonical)): any spelling of
/// the initiator, never a look-alike of it.
pub(crate) fn may_view(record: &RequestRecord, principal: &Principal) -> bool {
    principal.kind == PrincipalKind::Human
        || record.request.initiator.as_ref().is_some_and(|i| {
            approvals_core::identity::same_canonical(&i.principal.id, &principal.id)
        })
}

/// The query of `GET /v1/requests`.
#[derive(Debug)]
pub(crate) struct ListQuery {
    pub(crate) states: Vec<RequestState>,
    pub(crate) kind: Option<String>,
    pub(crate) environment: Option<String>,
    pub(crate) initiator: Option<String>,
    pub(crate) limit: usize,
    /// Where the previous page ended (its `next_cursor`).
    pub(crate) cursor: Option<PageCursor>,
}

impl ListQuery {
    pub(crate) fn parse(query: &str) -> Result<Self, Problem> {
        let mut q = ListQuery {
            states: vec![RequestState::Pending],
            kind: None,
            environment: None,
            initiator: None,
            limit: 100,
            cursor: None,
        };
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if seen.iter().any(|k| *k == key) {
                return Err(Problem::bad_request(format!(
                    "query parameter {:?} is given twice",
                    crate::html::truncate(&key, 40)
                )));
            }
            seen.push(key.to_string());
            let text = |v: &str| -> Result<Option<String>, Problem> {
                if v.chars().count() > 512 {
                    return Err(Problem::bad_request(format!(
                        "query parameter {key:?} is longer than 512 characters"
                    )));
                }
                Ok((!v.is_empty()).then(|| v.to_owned()))
            };
            match &*key {
                "state" => q.states = parse_states(&value)?,
                "kind" => q.kind = text(&value)?,
                "environment" => q.environment = text(&value)?,
                "initiator" => q.initiator = text(&value)?,
                "cursor" => {
                    q.cursor = Some(value.parse().map_err(
                        |e: approvals_core::store::BadCursor| Problem::bad_request(e.to_string()),
                    )?);
                }
                "limit" => {
                    q.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                        .ok_or_else(|| {
                            Problem::bad_request(format!(
                                "limit must be a whole number from 1 to {MAX_LIST_LIMIT}"
                            ))
                        })?;
                }
                other => {
                    return Err(Problem::bad_request(format!(
                        "unknown query parameter {:?}; use state, kind, environment, initiator, limit or cursor",
                        crate::html::truncate(other, 40)
                    )));
                }
            }
        }
        Ok(q)
    }
}

/// One page of requests that `principal` may see, newest first: those of `filter` after
/// `query.cursor`, at most `query.limit`, and the cursor of the next page when there is one.
/// The store reads one more than the limit to know; for agents, who see only their own
/// requests, it reads past those it filters out.
pub(crate) async fn page(
    gate: &approvals_core::Gate,
    mut filter: ListFilter,
    query: &ListQuery,
    principal: &Principal,
) -> Result<(Vec<RequestRecord>, Option<PageCursor>), StoreError> {
    let human = principal.kind == PrincipalKind::Human;
    filter.after = query.cursor;
    filter.limit = human.then_some(query.limit.saturating_add(1));
    let mut records: Vec<RequestRecord> = gate
        .store()
        .list(&filter)
        .await?
        .into_iter()
        .filter(|r| may_view(r, principal))
        .take(query.limit.saturating_add(1))
        .collect();
    let next = (records.len() > query.limit).then(|| {
        records.truncate(query.limit);
        records.last().map(PageCursor::of)
    });
    Ok((records, next.flatten()))
}

fn parse_states(value: &str) -> Result<Vec<RequestState>, Problem> {
    if value == "all" {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|s| {
            s.trim().parse::<RequestState>().map_err(|_| {
                Problem::bad_request(format!(
                    "unknown state {:?}; use all, or a comma-separated list of pending, approved, denied, expired, cancelled, executing, executed, failed, lapsed",
                    crate::html::truncate(s, 40)
                ))
            })
        })
        .collect()
}

/// A reason as given, or `None` when blank; refused when longer than [`MAX_REASON_CHARS`].
pub(crate) fn check_reason(reason: Option<String>) -> Result<Option<String>, Problem> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(Problem::bad_request(format!(
            "the reason is longer than {MAX_REASON_CHARS} characters"
        ))),
        Some(r) if r.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use approvals_core::{Initiator, Principal};
    use approvals_testkit::fixtures::{epoch, export_request, pending_record};

    use super::*;

    #[test]
    fn an_agent_sees_its_requests_under_any_spelling_never_a_look_alikes() {
        let initiator =
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com"));
        let record = pending_record(export_request().initiator(initiator), epoch());
        for own in [
            "billing-agent",
            "BILLING-AGENT",
            " billing-agent. ",
            "ｂｉｌｌｉｎｇ-agent",
        ] {
            assert!(may_view(&record, &Principal::agent(own)), "{own:?}");
        }
        for other in ["bi11ing-agent", "b\u{0456}lling-agent", "billing-agents"] {
            assert!(!may_view(&record, &Principal::agent(other)), "{other:?}");
        }
        assert!(may_view(&record, &Principal::human("anyone@example.com")));
    }
}

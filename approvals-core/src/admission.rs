//! Admission: what an action must be before anything about it is recorded. Pure rules (no
//! I/O): the initiator is the authenticated one, the gate's default context fills what the
//! action leaves empty, and sizes and names are within bounds.

use std::sync::Arc;

use crate::audit::RefusalCause;
use crate::error::GuardError;
use crate::plan::PLAN_KIND;
use crate::request::{ActionRequest, Digest, Initiator, Principal, RequestContext};
use crate::standing::{STANDING_KIND, is_reserved_kind};
use crate::text::truncate;

/// Largest canonical request accepted, in bytes: reviewers cannot meaningfully review more,
/// and it bounds what an agent can push into chat messages and logs.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Longest action kind or resource, in characters.
pub const MAX_NAME_CHARS: usize = 512;

/// An admitted action: bound to its initiator, with the gate's default context filled in.
#[derive(Debug)]
pub struct Admitted {
    /// The request as it will be evaluated, stored and reviewed.
    pub request: ActionRequest,
    /// Its digest.
    pub digest: Digest,
}

/// An action refused before anything about it is recorded except this refusal.
#[derive(Debug)]
pub struct Refused {
    /// Why, for the `request_refused` event.
    pub cause: RefusalCause,
    /// Details for the event (bounded).
    pub detail: String,
    /// The canonical size of the action as presented, in bytes.
    pub size: usize,
    /// The digest of the action as presented (bound to the authenticated initiator, unless
    /// the claimed initiator was the reason for the refusal).
    pub digest: Digest,
    /// The caller's error.
    pub error: GuardError,
    /// The action as presented, for the event's kind and resource.
    pub request: ActionRequest,
}

/// Binds `request` to the authenticated `initiator` ([`bind_initiator`]), fills in
/// `defaults`, and checks sizes and names ([`check_limits`]). A kind in the reserved
/// `approvals.` namespace ([`is_reserved_kind`]) is refused: only the gate makes requests of
/// those kinds (a standing grant's or a plan's, [`admit_reserved`]).
pub fn admit(
    request: ActionRequest,
    initiator: &Arc<Initiator>,
    defaults: &Arc<RequestContext>,
) -> Result<Admitted, Box<Refused>> {
    admit_checked(request, initiator, defaults, false)
}

/// [`admit`] for a request the gate builds of a reserved kind: a standing grant's, from a
/// human's proposal ([`StandingTerms::to_request`](crate::standing::StandingTerms::to_request)),
/// or a plan's ([`PlanTerms::to_request`](crate::plan::PlanTerms::to_request)). Those two
/// kinds are expected; everything else is checked as for any action.
pub fn admit_reserved(
    request: ActionRequest,
    initiator: &Arc<Initiator>,
    defaults: &Arc<RequestContext>,
) -> Result<Admitted, Box<Refused>> {
    admit_checked(request, initiator, defaults, true)
}

fn admit_checked(
    mut request: ActionRequest,
    initiator: &Arc<Initiator>,
    defaults: &Arc<RequestContext>,
    standing: bool,
) -> Result<Admitted, Box<Refused>> {
    with_defaults(&mut request.context, defaults);
    let mismatch = match bind_initiator(initiator, request.initiator.as_deref()) {
        Ok(bound) => {
            request.initiator = Some(bound);
            None
        }
        // The refusal records the digest of the action as it was presented.
        Err(refused) => Some(refused),
    };
    let (digest, canonical_size) = request.digest_and_size();
    let size = canonical_size + request.idempotency_key.as_ref().map_or(0, |key| key.len());
    match mismatch
        .or_else(|| check_limits(&request, size))
        .or_else(|| check_kind(&request, standing))
        .map(|r| *r)
    {
        None => Ok(Admitted { request, digest }),
        Some((cause, detail, error)) => Err(Box::new(Refused {
            cause,
            detail: truncate(&detail, 1024).into_owned(),
            size,
            digest,
            error,
            request,
        })),
    }
}

/// A refusal's cause, its detail for the event, and the caller's error.
type Refusal = Box<(RefusalCause, String, GuardError)>;

/// The initiator of an action submitted under the authenticated `initiator`. The action may
/// name none (the common case: the authenticated one is used as it is), or name the same
/// principal and `on_behalf_of` human (compared as identities) and add a session, a prompt
/// reference, or a model where the authenticated initiator has none. Anything else — another
/// agent or service, another kind of principal, a dropped, added or changed `on_behalf_of`,
/// another model — is refused: the initiator is who authenticated, not what the action says.
fn bind_initiator(
    initiator: &Arc<Initiator>,
    claimed: Option<&Initiator>,
) -> Result<Arc<Initiator>, Refusal> {
    let Some(claimed) = claimed else {
        return Ok(initiator.clone());
    };
    let same_principal = |a: &Principal, b: &Principal| a.kind == b.kind && a.same_identity(b);
    let same_human = match (&initiator.on_behalf_of, &claimed.on_behalf_of) {
        (None, None) => true,
        (Some(a), Some(b)) => same_principal(a, b),
        _ => false,
    };
    let same_model = match (&initiator.model, &claimed.model) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    if !(same_principal(&initiator.principal, &claimed.principal) && same_human && same_model) {
        let (authenticated, claimed) = (describe(initiator), describe(claimed));
        let detail =
            format!("the action claims {claimed}; the authenticated initiator is {authenticated}");
        return Err(Box::new((
            RefusalCause::InitiatorMismatch,
            detail,
            GuardError::InitiatorMismatch {
                authenticated,
                claimed,
            },
        )));
    }
    let adds = |mine: &Option<String>, theirs: &Option<String>| theirs.is_some() && mine != theirs;
    if !(adds(&initiator.session, &claimed.session)
        || adds(&initiator.prompt_ref, &claimed.prompt_ref)
        || adds(&initiator.model, &claimed.model))
    {
        return Ok(initiator.clone());
    }
    let mut bound = (**initiator).clone();
    for (slot, claim) in [
        (&mut bound.session, &claimed.session),
        (&mut bound.prompt_ref, &claimed.prompt_ref),
        (&mut bound.model, &claimed.model),
    ] {
        if claim.is_some() {
            slot.clone_from(claim);
        }
    }
    Ok(Arc::new(bound))
}

/// An initiator in words, for refusals (ids clipped: they come from the action).
fn describe(initiator: &Initiator) -> String {
    let p = &initiator.principal;
    let mut text = format!("{} {:?}", p.kind, truncate(&p.id, 128));
    if let Some(human) = &initiator.on_behalf_of {
        text.push_str(&format!(" on behalf of {:?}", truncate(&human.id, 128)));
    } else {
        text.push_str(" on behalf of nobody");
    }
    if let Some(model) = &initiator.model {
        text.push_str(&format!(" (model {:?})", truncate(model, 128)));
    }
    text
}

/// Longest idempotency key accepted, in characters.
const MAX_KEY_CHARS: usize = 512;

/// The size and shape limits every action meets before it is recorded or evaluated.
fn check_limits(request: &ActionRequest, size: usize) -> Option<Refusal> {
    let invalid = |message: String| {
        Some(Box::new((
            RefusalCause::Invalid,
            message.clone(),
            GuardError::InvalidRequest(message),
        )))
    };
    if request.kind.trim().is_empty() || request.kind.chars().count() > MAX_NAME_CHARS {
        return invalid(format!(
            "the action kind must be 1 to {MAX_NAME_CHARS} characters"
        ));
    }
    if request.resource.chars().count() > MAX_NAME_CHARS {
        return invalid(format!(
            "the action resource must be at most {MAX_NAME_CHARS} characters"
        ));
    }
    if request
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.chars().count() > MAX_KEY_CHARS)
    {
        return invalid(format!(
            "the idempotency key must be at most {MAX_KEY_CHARS} characters"
        ));
    }
    if let Some(Err(why)) = request.context.preview.as_ref().map(|p| p.check()) {
        return invalid(why);
    }
    if size > MAX_REQUEST_BYTES {
        return Some(Box::new((
            RefusalCause::Oversized,
            format!("{size} bytes; the limit is {MAX_REQUEST_BYTES}"),
            GuardError::TooLarge {
                size,
                limit: MAX_REQUEST_BYTES,
            },
        )));
    }
    None
}

/// Refuses a reserved kind, unless this is the gate's own standing grant request (and then
/// only exactly that kind).
fn check_kind(request: &ActionRequest, standing: bool) -> Option<Refusal> {
    let allowed = standing && matches!(request.kind.as_str(), STANDING_KIND | PLAN_KIND);
    if allowed || !is_reserved_kind(&request.kind) {
        return None;
    }
    let message = format!(
        "the action kind {:?} is reserved: kinds beginning with \"approvals.\" are made only by the gate (a standing grant is proposed by a human; a plan is submitted as a plan)",
        truncate(&request.kind, MAX_NAME_CHARS)
    );
    Some(Box::new((
        RefusalCause::Invalid,
        message.clone(),
        GuardError::InvalidRequest(message),
    )))
}

fn with_defaults(context: &mut Arc<RequestContext>, defaults: &Arc<RequestContext>) {
    fn missing(slot: &Option<String>, default: &Option<String>) -> bool {
        slot.is_none() && default.is_some()
    }
    if context.is_empty() {
        context.clone_from(defaults);
        return;
    }
    let needed = missing(&context.environment, &defaults.environment)
        || missing(&context.ticket, &defaults.ticket)
        || missing(&context.commit, &defaults.commit)
        || missing(&context.impact, &defaults.impact)
        || (context.risk.is_none() && defaults.risk.is_some());
    if !needed {
        return;
    }
    let ctx = Arc::make_mut(context);
    fill(&mut ctx.environment, &defaults.environment);
    fill(&mut ctx.ticket, &defaults.ticket);
    fill(&mut ctx.commit, &defaults.commit);
    fill(&mut ctx.impact, &defaults.impact);
    if ctx.risk.is_none() {
        ctx.risk = defaults.risk;
    }
}

fn fill(slot: &mut Option<String>, default: &Option<String>) {
    if slot.is_none() {
        slot.clone_from(default);
    }
}

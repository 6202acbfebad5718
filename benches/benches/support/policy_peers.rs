//! One rule set, three engines: the same 100 first-match rules as our `RulePolicy` (TOML), as a
//! Cedar policy set and as a Rego module for `regorus`, the requests the `peers_policy` bench
//! measures, and the equivalence check that every engine decides every request the same way.
//!
//! Shared by `benches/benches/peers_policy.rs` (checks, then measures) and
//! `benches/tests/peers_policy_equivalence.rs` (the check as a test, so CI runs it).
//!
//! How the rules translate:
//!
//! - Ours: `kind` and `resource` globs, a `when` predicate `rows > i`, an effect, first match
//!   wins, `default = "deny"`.
//! - Cedar has no first-match order and only permit/forbid, so each rule is one `permit`
//!   whose policy id is the rule name and whose `@effect` annotation says allow or
//!   require_approval; the request's kind, resource and params travel in the context, the
//!   globs become `like` patterns (Cedar's `*` also matches any run of characters), and
//!   `rows > i` becomes `context.params has rows && context.params.rows > i` (an absent
//!   parameter is false in both). The rules are disjoint for the requests used, so "the one
//!   permit that matched" is the same rule as "the first rule that matched"; the check
//!   fails if more than one matches. No permit: Cedar denies, which is our default.
//! - Rego: one `decision` rule with an `else` chain in rule order (Rego's first-match
//!   construct), `glob.match(pattern, null, value)` (no delimiters, so `*` matches any run),
//!   and a final `else` for the default.
//!
//! Engines' inputs: ours takes the `ActionRequest` as it is; Cedar takes a `Request`
//! (principal, action, resource uids and a context built from the request's JSON) and
//! `Entities` (the initiating agent with its model); regorus takes an input `Value` built from
//! the request's JSON. Building those is measured apart from evaluating them.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr as _;

use approvals_core::{ActionRequest, Decision, Initiator, Policy, RulePolicy};
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression,
};
use serde_json::{Value, json};

/// How many rules every engine holds.
pub const RULES: usize = 100;

/// One rule, the source of all three translations.
struct Rule {
    name: String,
    kind: String,
    resource: String,
    rows_gt: Option<i64>,
    effect: &'static str,
}

/// 99 rules that need approval for `svc{i}.*` on `db://prod/table{i}/*` when `rows > i`,
/// then the rule that allows warehouse reads (the same rules as `core.rs`'s
/// `guard_allow_100_rules`).
fn rules() -> Vec<Rule> {
    let mut rules: Vec<Rule> = (0..RULES as i64 - 1)
        .map(|i| Rule {
            name: format!("rule-{i}"),
            kind: format!("svc{i}.*"),
            resource: format!("db://prod/table{i}/*"),
            rows_gt: Some(i),
            effect: "require_approval",
        })
        .collect();
    rules.push(Rule {
        name: "reads".into(),
        kind: "warehouse.read".into(),
        resource: "db://analytics/*".into(),
        rows_gt: None,
        effect: "allow",
    });
    rules
}

/// Our `RulePolicy` from TOML.
pub fn rule_policy() -> RulePolicy {
    let mut toml = String::from("version = 1\ndefault = \"deny\"\n");
    for (i, rule) in rules().iter().enumerate() {
        let _ = write!(
            toml,
            "\n[[rules]]\nname = \"{}\"\nkind = \"{}\"\nresource = \"{}\"\neffect = \"{}\"\n",
            rule.name, rule.kind, rule.resource, rule.effect
        );
        if let Some(gt) = rule.rows_gt {
            let _ = writeln!(toml, "when = [{{ param = \"rows\", gt = {gt} }}]");
        }
        if rule.effect == "require_approval" {
            let _ = writeln!(toml, "approvers = {{ groups = [\"g{i}\"] }}");
        }
    }
    let policy = RulePolicy::from_toml(&toml).expect("the generated RulePolicy loads");
    assert_eq!(policy.len(), RULES);
    policy
}

/// The same rules as a Cedar policy set: one `permit` per rule, id = rule name.
pub fn cedar_policy_set() -> PolicySet {
    let mut set = PolicySet::new();
    for (i, rule) in rules().iter().enumerate() {
        let mut conditions = vec![
            format!("context.kind like \"{}\"", rule.kind),
            format!("context.resource like \"{}\"", rule.resource),
        ];
        if let Some(gt) = rule.rows_gt {
            conditions.push(format!(
                "context.params has rows && context.params.rows > {gt}"
            ));
        }
        let approvers = if rule.effect == "require_approval" {
            format!("@approvers(\"g{i}\")\n")
        } else {
            String::new()
        };
        let src = format!(
            "@effect(\"{}\")\n{approvers}permit(principal, action == Action::\"invoke\", resource)\nwhen {{ {} }};",
            rule.effect,
            conditions.join(" && ")
        );
        let policy = cedar_policy::Policy::parse(Some(PolicyId::new(&rule.name)), &src)
            .unwrap_or_else(|e| panic!("Cedar policy {} does not parse: {e}\n{src}", rule.name));
        set.add(policy).expect("unique policy ids");
    }
    assert_eq!(set.policies().count(), RULES);
    set
}

/// The Rego source: one `decision` with an `else` chain in rule order.
pub fn rego_source() -> String {
    let mut rego = String::from("package approvals\n\nimport rego.v1\n\ndecision := ");
    for (i, rule) in rules().iter().enumerate() {
        if i > 0 {
            rego.push_str(" else := ");
        }
        let _ = write!(
            rego,
            "{{\"effect\": \"{}\", \"rule\": \"{}\"}} if {{\n\tglob.match(\"{}\", null, input.kind)\n\tglob.match(\"{}\", null, input.resource)\n",
            rule.effect, rule.name, rule.kind, rule.resource
        );
        if let Some(gt) = rule.rows_gt {
            let _ = writeln!(rego, "\tinput.params.rows > {gt}");
        }
        rego.push('}');
    }
    rego.push_str(" else := {\"effect\": \"deny\", \"rule\": \"default\"}\n");
    rego
}

/// A regorus engine with the Rego policy loaded.
pub fn rego_engine() -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("approvals.rego".into(), rego_source())
        .unwrap_or_else(|e| panic!("the Rego policy does not load: {e}"));
    engine
}

/// The rule the benches name `DECISION_RULE`.
pub const REGO_RULE: &str = "data.approvals.decision";

/// The agent every measured request comes from (the `guard()` bench's gate runs as it).
pub fn initiator() -> Initiator {
    Initiator::agent("report-bot").model("gpt-5")
}

/// The measured requests: a match at the last rule (an allow, so `guard()` can run it too),
/// a match in the middle (rule 50 asks for approval), and no match (rule 50's kind and
/// resource but too few rows: the default denies).
pub fn bench_requests() -> Vec<(&'static str, ActionRequest)> {
    vec![
        (
            "match_last",
            ActionRequest::new("warehouse.read", "db://analytics/events")
                .params(
                    json!({"rows": 500, "columns": ["day", "count"], "filter": "country = 'NL'"}),
                )
                .initiator(initiator()),
        ),
        (
            "match_middle",
            ActionRequest::new("svc50.export", "db://prod/table50/orders")
                .params(json!({"rows": 500, "columns": ["id", "total"]}))
                .initiator(initiator()),
        ),
        (
            "no_match",
            ActionRequest::new("svc50.export", "db://prod/table50/orders")
                .params(json!({"rows": 10, "columns": ["id", "total"]}))
                .initiator(initiator()),
        ),
    ]
}

/// Many more requests for the equivalence check: for every rule a match, a miss on the
/// predicate (rows equal to the bound), a miss on the resource and a missing parameter; plus
/// kinds no rule names and the benched requests.
pub fn equivalence_requests() -> Vec<ActionRequest> {
    let mut requests: Vec<ActionRequest> = bench_requests().into_iter().map(|(_, r)| r).collect();
    for i in 0..RULES as i64 - 1 {
        let kind = format!("svc{i}.export");
        let resource = format!("db://prod/table{i}/orders");
        requests.push(ActionRequest::new(&kind, &resource).params(json!({"rows": i + 1})));
        requests.push(ActionRequest::new(&kind, &resource).params(json!({"rows": i})));
        requests.push(
            ActionRequest::new(&kind, format!("db://prod/table{}/orders", i + 1))
                .params(json!({"rows": 1000})),
        );
        requests.push(ActionRequest::new(&kind, &resource).params(json!({"columns": ["id"]})));
    }
    requests.push(ActionRequest::new("warehouse.read", "db://prod/events"));
    requests.push(ActionRequest::new(
        "warehouse.write",
        "db://analytics/events",
    ));
    requests.push(
        ActionRequest::new("billing.refund", "stripe://refunds/1").params(json!({"rows": 5})),
    );
    requests
        .into_iter()
        .map(|r| r.initiator(initiator()))
        .collect()
}

/// A decision in engine-neutral terms: effect and the rule that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub effect: String,
    pub rule: String,
}

/// Our decision.
pub fn ours(policy: &RulePolicy, request: &ActionRequest) -> Outcome {
    match policy.evaluate(request).expect("RulePolicy evaluates") {
        Decision::Allow { rule } => outcome("allow", rule.as_deref().unwrap_or("?")),
        Decision::RequireApproval { rule, .. } => {
            outcome("require_approval", rule.as_deref().unwrap_or("?"))
        }
        Decision::Deny { rule, .. } => outcome("deny", &rule),
    }
}

fn outcome(effect: &str, rule: &str) -> Outcome {
    Outcome {
        effect: effect.into(),
        rule: rule.into(),
    }
}

fn uid(type_name: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(type_name).expect("a valid Cedar type name"),
        EntityId::new(id),
    )
}

/// Cedar's inputs for a request: the request (principal, action, resource, context) and the
/// entities (the initiating agent with its model).
pub fn cedar_inputs(request: &ActionRequest) -> (Request, Entities) {
    let agent = request
        .initiator
        .as_ref()
        .map_or("anonymous", |i| i.principal.id.as_str());
    let principal = uid("Agent", agent);
    let mut attrs = HashMap::new();
    if let Some(model) = request.initiator.as_ref().and_then(|i| i.model.as_deref()) {
        attrs.insert(
            "model".to_owned(),
            RestrictedExpression::new_string(model.to_owned()),
        );
    }
    let entity = Entity::new(principal.clone(), attrs, HashSet::new()).expect("agent entity");
    let entities = Entities::from_entities([entity], None).expect("entities");
    let context = Context::from_json_value(
        json!({"kind": request.kind, "resource": request.resource, "params": request.params}),
        None,
    )
    .expect("Cedar context from the request");
    let cedar_request = Request::new(
        principal,
        uid("Action", "invoke"),
        uid("Resource", &request.resource),
        context,
        None,
    )
    .expect("Cedar request");
    (cedar_request, entities)
}

/// Cedar's decision, read back as the rule that decided.
pub fn cedar(
    authorizer: &Authorizer,
    policies: &PolicySet,
    request: &Request,
    entities: &Entities,
) -> Outcome {
    let response = authorizer.is_authorized(request, policies, entities);
    let errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "Cedar evaluation errors: {errors:?}");
    let reasons: Vec<&PolicyId> = response.diagnostics().reason().collect();
    match (response.decision(), reasons.as_slice()) {
        (cedar_policy::Decision::Deny, []) => outcome("deny", "default"),
        (cedar_policy::Decision::Allow, [id]) => {
            let effect = policies
                .policy(id)
                .and_then(|p| p.annotation("effect"))
                .unwrap_or("?");
            outcome(effect, id.as_ref())
        }
        (decision, reasons) => panic!(
            "Cedar: {decision:?} by {reasons:?}; the rules should be disjoint for this request"
        ),
    }
}

/// The regorus input for a request.
pub fn rego_input(request: &ActionRequest) -> regorus::Value {
    let initiator = request.initiator.as_ref().map(
        |i| json!({"kind": i.principal.kind.to_string(), "id": i.principal.id, "model": i.model}),
    );
    regorus::Value::from(json!({
        "kind": request.kind,
        "resource": request.resource,
        "params": request.params,
        "initiator": initiator.unwrap_or(Value::Null),
    }))
}

/// Rego's decision.
pub fn rego(engine: &mut regorus::Engine, input: regorus::Value) -> Outcome {
    engine.set_input(input);
    let value = engine
        .eval_rule(REGO_RULE.into())
        .unwrap_or_else(|e| panic!("Rego evaluation failed: {e}"));
    let field = |name: &str| match &value[name] {
        regorus::Value::String(s) => s.to_string(),
        other => panic!("Rego decision has no string {name}: {other:?}"),
    };
    outcome(&field("effect"), &field("rule"))
}

/// Checks that Cedar and Rego decide every request of [`equivalence_requests`] exactly as
/// `RulePolicy` does. Returns how many requests were checked, or every disagreement.
pub fn check_equivalence() -> Result<usize, String> {
    let policy = rule_policy();
    let cedar_set = cedar_policy_set();
    let authorizer = Authorizer::new();
    let mut engine = rego_engine();
    let requests = equivalence_requests();
    let mut disagreements = Vec::new();
    let mut effects = HashSet::new();
    for request in &requests {
        let expected = ours(&policy, request);
        let (cedar_request, entities) = cedar_inputs(request);
        let by_cedar = cedar(&authorizer, &cedar_set, &cedar_request, &entities);
        let by_rego = rego(&mut engine, rego_input(request));
        if by_cedar != expected || by_rego != expected {
            disagreements.push(format!(
                "{} on {} with {}: RulePolicy {expected:?}, Cedar {by_cedar:?}, Rego {by_rego:?}",
                request.kind, request.resource, request.params
            ));
        }
        effects.insert(expected.effect);
    }
    if effects.len() != 3 {
        disagreements.push(format!(
            "the request set should reach all three effects, reached {effects:?}"
        ));
    }
    if disagreements.is_empty() {
        Ok(requests.len())
    } else {
        Err(disagreements.join("\n"))
    }
}

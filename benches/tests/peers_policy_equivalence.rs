//! The policy comparison is honest only if the engines agree: `RulePolicy`, Cedar and Rego
//! (regorus) must decide every request of the check set the same way (same effect, same
//! rule). The `peers_policy` bench runs the same check before it measures.

#[allow(dead_code)]
#[path = "../benches/support/policy_peers.rs"]
mod policy_peers;

#[test]
fn cedar_and_rego_decide_like_rule_policy() {
    match policy_peers::check_equivalence() {
        Ok(checked) => assert!(checked > 300, "only {checked} requests checked"),
        Err(disagreements) => panic!("the engines disagree:\n{disagreements}"),
    }
}

#[test]
fn benched_requests_reach_last_middle_and_default() {
    let policy = policy_peers::rule_policy();
    let got: Vec<(String, String)> = policy_peers::bench_requests()
        .iter()
        .map(|(_, request)| {
            let o = policy_peers::ours(&policy, request);
            (o.effect, o.rule)
        })
        .collect();
    let want = [
        ("allow", "reads"),
        ("require_approval", "rule-50"),
        ("deny", "default"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(e, r)| ((*e).to_owned(), (*r).to_owned()))
        .collect();
    assert_eq!(got, want);
}

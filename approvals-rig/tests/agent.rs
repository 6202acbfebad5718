//! The example's scripted rig agent end to end: an approved export runs once, a denied one
//! never runs and the model receives the reviewer's reason as the tool's error.

#[allow(dead_code)]
#[path = "../examples/rig_agent.rs"]
mod example;

#[tokio::test]
async fn the_scripted_agent_runs_the_approved_call_and_hears_the_denial() {
    let report = example::demo().await.expect("the demo runs");

    assert_eq!(
        report.approved.tool_results,
        vec![(false, "exported 100 rows of orders".to_owned())]
    );
    assert_eq!(
        report.denied.tool_results,
        vec![(
            true,
            "Not run: reviewer dana@example.com denied this call: the whole table is too much; export at most 100 rows."
                .to_owned()
        )]
    );
    assert_eq!(
        report.exports,
        vec![example::ExportArgs {
            database: "prod".into(),
            table: "orders".into(),
            limit: 100,
        }],
        "only the approved call ran, once"
    );
    let count = |name: &str| report.audit.iter().filter(|n| **n == name).count();
    assert_eq!(count("requested"), 2);
    assert_eq!(count("approved"), 1);
    assert_eq!(count("denied"), 1);
    assert_eq!(count("grant_consumed"), 1);
    assert_eq!(count("executed"), 1);
    assert!(!report.denied.answer.is_empty());
}

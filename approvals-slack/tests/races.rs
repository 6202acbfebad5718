//! Concurrent clicks give one outcome, and stray copies of a message do not stay clickable.

mod common;

use approvals_core::{RequestState, Requirement};
use approvals_slack::blocks::ACTION_APPROVE;
use approvals_slack::fake::{self, Clicker};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_clicks_resolve_once_and_the_loser_hears_who_won() {
    let env = Env::new(Requirement::groups(["security"])).await;
    for round in 0..5 {
        let (id, ts) = env.submit_export().await;
        let value = env.button_value(&ts, ACTION_APPROVE);
        let (sam_url, alex_url) = (
            env.fake.response_url(&format!("race-sam-{round}")),
            env.fake.response_url(&format!("race-alex-{round}")),
        );
        let a = env.click(&Clicker::new(SAM), ACTION_APPROVE, &value, &ts, &sam_url);
        let b = env.click(&Clicker::new(ALEX), ACTION_APPROVE, &value, &ts, &alex_url);
        assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
        let grant = env.gate.wait(id).await.expect("approved");
        assert_eq!(grant.approvers().len(), 1, "exactly one approval counted");
        let winner = grant.approvers()[0].id.clone();
        let mut replies = env.replies(&sam_url, 1).await;
        replies.extend(env.replies(&alex_url, 1).await);
        let won = replies
            .iter()
            .filter(|r| r.contains("You approved"))
            .count();
        let lost: Vec<_> = replies
            .iter()
            .filter(|r| r.contains("already approved by"))
            .collect();
        assert_eq!((won, lost.len()), (1, 1), "{replies:?}");
        let record = env.record(id).await;
        assert_eq!(record.state, RequestState::Approved);
        assert_eq!(record.reviews.len(), 1);
        assert!(record.reviews[0].reviewer.id == winner);
    }
}

#[tokio::test]
async fn a_stray_copy_of_the_message_is_updated_when_clicked() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    // The same message posted a second time (a post whose answer was lost, then retried).
    let original = env.message(&ts);
    let blocks = original["blocks"].as_array().cloned().unwrap_or_default();
    let copy = env
        .fake
        .client()
        .post_message(
            fake::CONVERSATION,
            original["text"].as_str().unwrap_or(""),
            &blocks,
        )
        .await
        .expect("posted");
    let value = env.button_value(&copy.ts, ACTION_APPROVE);
    let url = env.fake.response_url("stray");
    env.click(&Clicker::new(SAM), ACTION_APPROVE, &value, &copy.ts, &url);
    env.gate.wait(id).await.expect("approved");
    for t in [&ts, &copy.ts] {
        eventually(
            || header(&env.message(t)).contains("Approved"),
            "both copies updated",
        )
        .await;
        assert!(find_button(&env.message(t)["blocks"], ACTION_APPROVE).is_none());
    }
}

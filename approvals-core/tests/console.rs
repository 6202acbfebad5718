//! The terminal approver: answers go to the request on screen, even when another channel
//! decides the earlier one first.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::{
    ActionRequest, ConsoleApprover, Gate, Initiator, MemorySink, Principal, RequestState,
    Requirement, Review, StaticPolicy, Submission,
};
use serde_json::json;
use tokio::io::{AsyncWriteExt, BufReader};

#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }

    async fn wait_for(&self, needle: &str, times: usize) {
        for _ in 0..500 {
            if self.text().matches(needle).count() >= times {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never saw {needle:?} {times} time(s) in:\n{}", self.text());
    }
}

#[tokio::test]
async fn a_prompt_decided_elsewhere_lets_the_next_answer_reach_the_next_request() {
    let sam = Principal::human("sam@example.com");
    let (mut keyboard, input) = tokio::io::duplex(1024);
    let screen = Screen::default();
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::users([
            "sam@example.com",
            "kim@example.com",
        ])))
        .audit(MemorySink::new())
        .initiator(Initiator::agent("bot"))
        .approver(ConsoleApprover::with_io(
            sam,
            BufReader::new(input),
            screen.clone(),
        ))
        .build()
        .expect("gate");
    let submit = |n: u32| {
        let gate = gate.clone();
        async move {
            match gate
                .submit(&ActionRequest::new("data.export", "db://x").params(json!({ "n": n })))
                .await
                .expect("submitted")
            {
                Submission::Pending(id) => id,
                Submission::Allowed(_) => panic!("approval expected"),
            }
        }
    };
    let first = submit(1).await;
    let second = submit(2).await;
    screen.wait_for("APPROVAL NEEDED", 1).await;

    // Kim approves the first request in another channel while the terminal shows it.
    gate.decide(
        first,
        Review::approve(Principal::human("kim@example.com")).via("http"),
    )
    .await
    .expect("approved elsewhere");
    screen.wait_for("decided in another channel", 1).await;
    screen.wait_for("APPROVAL NEEDED", 2).await;

    // The answer typed now is for the second request.
    keyboard
        .write_all(b"deny not this one\n")
        .await
        .expect("typed");
    screen.wait_for("Recorded:", 1).await;
    let record = gate.get(second).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Denied);
    assert_eq!(record.reviews[0].reason.as_deref(), Some("not this one"));
    assert_eq!(
        gate.get(first).await.expect("store").expect("record").state,
        RequestState::Approved
    );
}

/// The cross-surface table of hostile characters against the terminal: each one planted in
/// the kind, resource, environment, justification and parameters is shown as its visible
/// marker, and none reaches the screen.
#[tokio::test]
async fn every_hostile_character_is_shown_as_a_visible_marker() {
    use approvals_core::text::{hostile, marker};
    for &(c, what) in hostile::CHARS {
        let planted = format!("x{c}y");
        let (_keyboard, input) = tokio::io::duplex(64);
        let screen = Screen::default();
        let gate = Gate::builder()
            .policy(StaticPolicy::require(Requirement::users([
                "sam@example.com",
            ])))
            .audit(MemorySink::new())
            .initiator(Initiator::agent("bot"))
            .approver(ConsoleApprover::with_io(
                Principal::human("sam@example.com"),
                BufReader::new(input),
                screen.clone(),
            ))
            .build()
            .expect("gate");
        let action = ActionRequest::new(format!("data.export{planted}"), format!("db://{planted}"))
            .params(json!({ "note": planted }))
            .justification(format!("why {planted}"))
            .environment(planted.clone());
        gate.submit(&action).await.expect("submitted");
        screen.wait_for("Type `approve", 1).await;
        let shown = screen.text();
        assert_eq!(hostile::leftover(&shown), None, "{what}: {shown:?}");
        assert!(shown.contains(&marker(c)), "{what}: {shown}");
    }
}

/// Another reviewer edits the request on screen: the terminal says who changed what and the
/// new digest, and an answer typed for the version on screen is refused, never counted
/// toward the edited one.
#[tokio::test]
async fn an_edit_elsewhere_is_shown_and_an_answer_for_the_old_version_is_refused() {
    let sam = Principal::human("sam@example.com");
    let (mut keyboard, input) = tokio::io::duplex(1024);
    let screen = Screen::default();
    let gate = Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::users(["sam@example.com", "kim@example.com"])
                .quorum(2)
                .editable(["/rows"]),
        ))
        .audit(MemorySink::new())
        .initiator(Initiator::agent("bot"))
        .approver(ConsoleApprover::with_io(
            sam,
            BufReader::new(input),
            screen.clone(),
        ))
        .build()
        .expect("gate");
    let Submission::Pending(id) = gate
        .submit(&ActionRequest::new("data.export", "db://x").params(json!({ "rows": 900 })))
        .await
        .expect("submitted")
    else {
        panic!("approval expected");
    };
    screen.wait_for("APPROVAL NEEDED", 1).await;
    let asked = gate.get(id).await.expect("store").expect("record");
    gate.decide(
        id,
        Review::approve(Principal::human("kim@example.com"))
            .for_digest(asked.digest)
            .edit(json!({ "rows": 90 }))
            .via("http"),
    )
    .await
    .expect("edited elsewhere");
    let edited = gate.get(id).await.expect("store").expect("record");
    screen
        .wait_for("was edited by kim@example.com: /rows: 900 → 90", 1)
        .await;
    assert!(
        screen.text().contains(&edited.digest.to_string()),
        "{}",
        screen.text()
    );

    keyboard.write_all(b"approve\n").await.expect("typed");
    screen.wait_for("Refused:", 1).await;
    let after = gate.get(id).await.expect("store").expect("record");
    assert_eq!(after.state, RequestState::Pending);
    assert_eq!(
        after.approvers().len(),
        1,
        "only the editor's approval counts"
    );
}

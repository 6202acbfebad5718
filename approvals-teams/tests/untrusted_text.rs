//! Untrusted text on Teams: every hostile character of the cross-surface table is shown as a
//! visible marker on the approval card (text blocks, facts, literal runs, the notice) and in
//! the notification preview, in every state that shows something different, and nothing
//! invisible is left or added (U+200B included).

use approvals_core::RequestState;
use approvals_teams::card::{CardOptions, Notice, preview_text, request_card};
use approvals_testkit::hostile;

fn rendered(record: &approvals_core::RequestRecord, notice: Option<&Notice>) -> String {
    let card = request_card(record, &CardOptions::default(), notice);
    let mut out = hostile::json_strings(&card);
    out.push_str(&preview_text(record));
    out
}

#[test]
fn every_hostile_character_is_shown_as_a_visible_marker() {
    for &(c, what) in hostile::CHARS {
        let planted = format!("x{c}y");
        for state in [
            RequestState::Pending,
            RequestState::Denied,
            RequestState::Failed,
        ] {
            let record = hostile::record(&planted, state);
            let notice = Notice::refused(format!("Already decided by {planted}"));
            hostile::assert_shown(
                &rendered(&record, Some(&notice)),
                c,
                &format!("{what} ({state})"),
            );
        }
    }
    for s in hostile::STRINGS {
        hostile::assert_clean(
            &rendered(&hostile::record(s, RequestState::Pending), None),
            s,
        );
    }
}

/// Template and date-function syntax is broken up on the card with a visible brace, not an
/// invisible U+200B (which the one rule forbids on every surface).
#[test]
fn date_functions_are_broken_without_invisible_characters() {
    let record = hostile::record(
        "{{DATE(2026-01-01T00:00:00Z)}} ${secret}",
        RequestState::Pending,
    );
    let card = hostile::json_strings(&request_card(&record, &CardOptions::default(), None));
    hostile::assert_clean(&card, "template syntax");
    for line in card.lines() {
        assert!(
            !line.contains("{{") && !line.contains("}}") && !line.contains("${"),
            "{line}"
        );
    }
    assert!(card.contains("{｛DATE(2026-01-01T00:00:00Z)}｝"), "{card}");
}

//! What the fake refuses as Slack does: messages and views outside the Block Kit limits of
//! [`crate::limits`] (Slack answers `invalid_blocks`, or `invalid_arguments` for a view).

use serde_json::Value;

use crate::limits;

fn chars(v: Option<&Value>) -> usize {
    v.and_then(Value::as_str).map_or(0, |t| t.chars().count())
}

/// A text object: `plain_text` (or, unless `plain_only`, `mrkdwn`) with 1 to `max` characters.
fn text_object(t: Option<&Value>, max: usize, plain_only: bool, what: &str) -> Result<(), String> {
    let Some(t) = t else {
        return Err(format!("{what} is missing"));
    };
    match t.get("type").and_then(Value::as_str) {
        Some("plain_text") => {}
        Some("mrkdwn") if !plain_only => {}
        _ => return Err(format!("{what} is not a valid text object")),
    }
    let n = chars(t.get("text"));
    if n == 0 || n > max {
        return Err(format!("{what} has {n} characters (1 to {max})"));
    }
    Ok(())
}

fn at_most(v: Option<&Value>, max: usize, what: &str) -> Result<(), String> {
    let n = chars(v);
    if n > max {
        return Err(format!("{what} has {n} characters (at most {max})"));
    }
    Ok(())
}

fn button(e: &Value) -> Result<(), String> {
    text_object(
        e.get("text"),
        limits::MAX_BUTTON_TEXT_CHARS,
        true,
        "button text",
    )?;
    at_most(
        e.get("value"),
        limits::MAX_BUTTON_VALUE_CHARS,
        "button value",
    )?;
    at_most(e.get("url"), limits::MAX_BUTTON_URL_CHARS, "button url")?;
    at_most(e.get("action_id"), limits::MAX_ACTION_ID_CHARS, "action_id")?;
    if let Some(c) = e.get("confirm") {
        text_object(
            c.get("title"),
            limits::MAX_CONFIRM_TITLE_CHARS,
            true,
            "confirm title",
        )?;
        text_object(
            c.get("text"),
            limits::MAX_CONFIRM_TEXT_CHARS,
            false,
            "confirm text",
        )?;
        for key in ["confirm", "deny"] {
            text_object(c.get(key), limits::MAX_CONFIRM_BUTTON_CHARS, true, key)?;
        }
    }
    Ok(())
}

fn block(b: &Value) -> Result<(), String> {
    at_most(b.get("block_id"), limits::MAX_BLOCK_ID_CHARS, "block_id")?;
    let elements = || {
        b.get("elements")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match b.get("type").and_then(Value::as_str).unwrap_or("") {
        "header" => text_object(b.get("text"), limits::MAX_HEADER_CHARS, true, "header text"),
        "section" => {
            let fields = b.get("fields").and_then(Value::as_array);
            if b.get("text").is_none() && fields.is_none() {
                return Err("a section needs text or fields".into());
            }
            if b.get("text").is_some() {
                text_object(
                    b.get("text"),
                    limits::MAX_SECTION_TEXT_CHARS,
                    false,
                    "section text",
                )?;
            }
            let fields = fields.map(Vec::as_slice).unwrap_or_default();
            if fields.len() > limits::MAX_SECTION_FIELDS {
                return Err(format!("{} section fields", fields.len()));
            }
            for f in fields {
                text_object(Some(f), limits::MAX_FIELD_CHARS, false, "section field")?;
            }
            Ok(())
        }
        "context" => {
            let elements = elements();
            if elements.is_empty() || elements.len() > limits::MAX_CONTEXT_ELEMENTS {
                return Err("context needs 1 to 10 elements".into());
            }
            for e in elements.iter().filter(|e| e.get("text").is_some()) {
                text_object(
                    Some(e),
                    limits::MAX_TEXT_OBJECT_CHARS,
                    false,
                    "context element",
                )?;
            }
            Ok(())
        }
        "actions" => {
            let elements = elements();
            if elements.is_empty() || elements.len() > limits::MAX_ACTIONS_ELEMENTS {
                return Err("actions needs 1 to 25 elements".into());
            }
            elements.iter().try_for_each(button)
        }
        "input" => {
            text_object(
                b.get("label"),
                limits::MAX_INPUT_LABEL_CHARS,
                true,
                "input label",
            )?;
            let element = b.get("element").cloned().unwrap_or(Value::Null);
            at_most(
                element.get("action_id"),
                limits::MAX_ACTION_ID_CHARS,
                "action_id",
            )?;
            if let Some(p) = element.get("placeholder") {
                text_object(Some(p), limits::MAX_PLACEHOLDER_CHARS, true, "placeholder")?;
            }
            if element
                .get("max_length")
                .and_then(Value::as_u64)
                .is_some_and(|m| m as usize > limits::MAX_PLAIN_TEXT_INPUT_CHARS)
            {
                return Err("plain_text_input max_length over 3000".into());
            }
            Ok(())
        }
        "rich_text" | "divider" | "image" => Ok(()),
        other => Err(format!("unknown block type {other:?}")),
    }
}

fn block_list(blocks: &Value, max: usize) -> Result<(), String> {
    let Some(blocks) = blocks.as_array() else {
        return Err("blocks must be an array".into());
    };
    if blocks.len() > max {
        return Err(format!("{} blocks (at most {max})", blocks.len()));
    }
    blocks.iter().try_for_each(block)
}

/// Checks a message's blocks against the Block Kit limits Slack enforces with
/// `invalid_blocks`: every text object, field, element and id of every block.
pub fn validate_blocks(blocks: &Value) -> Result<(), String> {
    block_list(blocks, limits::MAX_BLOCKS)
}

/// Checks a modal view as `views.open` does: title, submit and close, `private_metadata`,
/// `callback_id`, and its blocks.
pub fn validate_view(view: &Value) -> Result<(), String> {
    text_object(
        view.get("title"),
        limits::MAX_MODAL_TITLE_CHARS,
        true,
        "modal title",
    )?;
    for key in ["submit", "close"] {
        if view.get(key).is_some() {
            text_object(view.get(key), limits::MAX_MODAL_BUTTON_CHARS, true, key)?;
        }
    }
    at_most(
        view.get("private_metadata"),
        limits::MAX_PRIVATE_METADATA_CHARS,
        "private_metadata",
    )?;
    at_most(
        view.get("callback_id"),
        limits::MAX_CALLBACK_ID_CHARS,
        "callback_id",
    )?;
    block_list(
        view.get("blocks").unwrap_or(&Value::Null),
        limits::MAX_MODAL_BLOCKS,
    )
}

/// Checks a message's top-level `text` (Slack's `msg_too_long` beyond its limit).
pub fn validate_text(text: Option<&Value>) -> Result<(), String> {
    at_most(text, limits::MAX_MESSAGE_TEXT_CHARS, "message text")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn section(text: &str) -> Value {
        json!([{"type": "section", "text": {"type": "mrkdwn", "text": text}}])
    }

    #[test]
    fn limits_are_checked_exactly() {
        assert!(validate_blocks(&section(&"a".repeat(3000))).is_ok());
        assert!(validate_blocks(&section(&"a".repeat(3001))).is_err());
        assert!(
            validate_blocks(&section("")).is_err(),
            "text objects are never empty"
        );
        let header = |n: usize| json!([{"type": "header", "text": {"type": "plain_text", "text": "é".repeat(n)}}]);
        assert!(validate_blocks(&header(150)).is_ok());
        assert!(validate_blocks(&header(151)).is_err());
        let confirm = |n: usize| {
            json!([{"type": "actions", "elements": [{
                "type": "button", "action_id": "a", "value": "v",
                "text": {"type": "plain_text", "text": "Approve"},
                "confirm": {
                    "title": {"type": "plain_text", "text": "t"},
                    "text": {"type": "plain_text", "text": "x".repeat(n)},
                    "confirm": {"type": "plain_text", "text": "Approve"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            }]}])
        };
        assert!(validate_blocks(&confirm(300)).is_ok());
        assert!(validate_blocks(&confirm(301)).is_err());
        let view = |title: &str| json!({"type": "modal", "title": {"type": "plain_text", "text": title}, "blocks": []});
        assert!(validate_view(&view(&"t".repeat(24))).is_ok());
        assert!(validate_view(&view(&"t".repeat(25))).is_err());
        assert!(validate_text(Some(&json!("a".repeat(40_000)))).is_ok());
        assert!(validate_text(Some(&json!("a".repeat(40_001)))).is_err());
    }
}

//! Slack's documented Block Kit and message limits, in one place: the renderer
//! ([`crate::blocks`]) bounds every field it sends by them, after escaping, and the loopback
//! fake ([`crate::fake`]) refuses what Slack would refuse.
//!
//! Lengths are in characters (Unicode scalar values) of the text as sent, that is after
//! `&amp;`, `&lt;` and `&gt;` escaping. Source: Slack's Block Kit reference,
//! <https://docs.slack.dev/reference/block-kit> (blocks, block elements, composition objects),
//! the surfaces' references for modals (<https://docs.slack.dev/reference/views>) and
//! `chat.postMessage` (<https://docs.slack.dev/reference/methods/chat.postMessage>), as also
//! typed in `@slack/types` (`block-kit/*.d.ts`).
//!
//! | limit | value | where |
//! |---|---|---|
//! | [`MAX_BLOCKS`] | 50 | blocks in one message |
//! | [`MAX_MODAL_BLOCKS`] | 100 | blocks in one modal view |
//! | [`MAX_TEXT_OBJECT_CHARS`] | 3000 | any text object (`plain_text`, `mrkdwn`), e.g. a context element |
//! | [`MAX_SECTION_TEXT_CHARS`] | 3000 | `section.text` |
//! | [`MAX_SECTION_FIELDS`] | 10 | `section.fields` items |
//! | [`MAX_FIELD_CHARS`] | 2000 | each `section.fields` item |
//! | [`MAX_HEADER_CHARS`] | 150 | `header.text` |
//! | [`MAX_CONTEXT_ELEMENTS`] | 10 | `context.elements` |
//! | [`MAX_ACTIONS_ELEMENTS`] | 25 | `actions.elements` |
//! | [`MAX_BUTTON_TEXT_CHARS`] | 75 | button `text` |
//! | [`MAX_BUTTON_VALUE_CHARS`] | 2000 | button `value` |
//! | [`MAX_BUTTON_URL_CHARS`] | 3000 | button `url` (a link button) |
//! | [`MAX_ACTION_ID_CHARS`] | 255 | `action_id` of an element |
//! | [`MAX_BLOCK_ID_CHARS`] | 255 | `block_id` of a block |
//! | [`MAX_CONFIRM_TITLE_CHARS`] | 100 | confirmation dialog `title` |
//! | [`MAX_CONFIRM_TEXT_CHARS`] | 300 | confirmation dialog `text` |
//! | [`MAX_CONFIRM_BUTTON_CHARS`] | 30 | confirmation dialog `confirm` and `deny` |
//! | [`MAX_OPTION_TEXT_CHARS`] | 75 | option object `text` (no message of ours has options) |
//! | [`MAX_MODAL_TITLE_CHARS`] | 24 | modal `title` |
//! | [`MAX_MODAL_BUTTON_CHARS`] | 24 | modal `submit` and `close` |
//! | [`MAX_PRIVATE_METADATA_CHARS`] | 3000 | modal `private_metadata` |
//! | [`MAX_CALLBACK_ID_CHARS`] | 255 | modal `callback_id` |
//! | [`MAX_INPUT_LABEL_CHARS`] | 2000 | input block `label` |
//! | [`MAX_PLACEHOLDER_CHARS`] | 150 | `placeholder` of an input element |
//! | [`MAX_PLAIN_TEXT_INPUT_CHARS`] | 3000 | `plain_text_input.max_length` |
//! | [`MAX_MESSAGE_TEXT_CHARS`] | 40000 | a message's top-level `text` (Slack cuts longer text) |

/// Blocks in one message.
pub const MAX_BLOCKS: usize = 50;
/// Blocks in one modal view.
pub const MAX_MODAL_BLOCKS: usize = 100;
/// Any text object (`plain_text` or `mrkdwn`), for example a context element.
pub const MAX_TEXT_OBJECT_CHARS: usize = 3000;
/// A section block's `text`.
pub const MAX_SECTION_TEXT_CHARS: usize = 3000;
/// Items in a section block's `fields`.
pub const MAX_SECTION_FIELDS: usize = 10;
/// Each item of a section block's `fields`.
pub const MAX_FIELD_CHARS: usize = 2000;
/// A header block's `text` (plain text only).
pub const MAX_HEADER_CHARS: usize = 150;
/// Elements in a context block.
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Elements in an actions block.
pub const MAX_ACTIONS_ELEMENTS: usize = 25;
/// A button's `text`.
pub const MAX_BUTTON_TEXT_CHARS: usize = 75;
/// A button's `value`.
pub const MAX_BUTTON_VALUE_CHARS: usize = 2000;
/// A link button's `url`.
pub const MAX_BUTTON_URL_CHARS: usize = 3000;
/// An interactive element's `action_id`.
pub const MAX_ACTION_ID_CHARS: usize = 255;
/// A block's `block_id`.
pub const MAX_BLOCK_ID_CHARS: usize = 255;
/// A confirmation dialog's `title`.
pub const MAX_CONFIRM_TITLE_CHARS: usize = 100;
/// A confirmation dialog's `text`.
pub const MAX_CONFIRM_TEXT_CHARS: usize = 300;
/// A confirmation dialog's `confirm` and `deny` button texts.
pub const MAX_CONFIRM_BUTTON_CHARS: usize = 30;
/// An option object's `text` (select menus, radio buttons, checkboxes).
pub const MAX_OPTION_TEXT_CHARS: usize = 75;
/// A modal's `title`.
pub const MAX_MODAL_TITLE_CHARS: usize = 24;
/// A modal's `submit` and `close` button texts.
pub const MAX_MODAL_BUTTON_CHARS: usize = 24;
/// A modal's `private_metadata`.
pub const MAX_PRIVATE_METADATA_CHARS: usize = 3000;
/// A modal's `callback_id`.
pub const MAX_CALLBACK_ID_CHARS: usize = 255;
/// An input block's `label`.
pub const MAX_INPUT_LABEL_CHARS: usize = 2000;
/// An input element's `placeholder`.
pub const MAX_PLACEHOLDER_CHARS: usize = 150;
/// The largest `max_length` of a `plain_text_input`.
pub const MAX_PLAIN_TEXT_INPUT_CHARS: usize = 3000;
/// A message's top-level `text` (the notification fallback); Slack cuts longer text.
pub const MAX_MESSAGE_TEXT_CHARS: usize = 40_000;

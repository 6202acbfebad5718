//! Slack channel for approvals: Block Kit messages, interactivity handler, Socket Mode.

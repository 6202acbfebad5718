//! Microsoft Teams channel for approvals: Bot Framework and Adaptive Card Action.Execute.

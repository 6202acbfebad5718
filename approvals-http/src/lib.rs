//! HTTP API approver, review web console, outbound webhook approver and the approvals CLI.

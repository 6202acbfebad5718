//! How a `tools/call` becomes an `ActionRequest`, and what the model is told when it is refused.

use approvals_core::{ActionRequest, GuardError};
use serde_json::{Map, Value};

/// The longest tool or server name the gateway accepts (it becomes part of the action kind).
pub const MAX_NAME_LEN: usize = 128;

/// How tool calls are named and targeted; the gateway's configuration, never the client's.
#[derive(Debug, Clone)]
pub struct ToolMapping {
    server: String,
    resource_arg: Option<String>,
}

/// A tool call the gateway will not turn into an action (and so never runs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(pub String);

impl ToolMapping {
    /// Calls to `server`'s tools become actions of kind `mcp.<server>.<tool>`. The server name
    /// may hold ASCII letters, digits, `_` and `-` only.
    pub fn new(server: impl Into<String>) -> Result<Self, MappingError> {
        let server = server.into();
        check_name("server", &server)?;
        Ok(ToolMapping {
            server,
            resource_arg: None,
        })
    }

    /// Takes the action's resource from this argument of every call (a string, or a number or
    /// boolean written out); calls without it target the server's name.
    pub fn resource_arg(mut self, name: impl Into<String>) -> Self {
        self.resource_arg = Some(name.into());
        self
    }

    /// The server name in action kinds.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The action a call of `tool` with `arguments` asks for: kind `mcp.<server>.<tool>`,
    /// resource from the configured argument (or the server name), params = the arguments
    /// exactly as sent (an empty object when there are none).
    ///
    /// ```
    /// use approvals_mcp::ToolMapping;
    /// let mapping = ToolMapping::new("fs").unwrap().resource_arg("path");
    /// let args = serde_json::json!({"path": "/srv/a.txt", "content": "hi"});
    /// let action = mapping.action("write_file", args.as_object()).unwrap();
    /// assert_eq!(action.kind, "mcp.fs.write_file");
    /// assert_eq!(action.resource, "/srv/a.txt");
    /// assert_eq!(*action.params, args);
    /// ```
    pub fn action(
        &self,
        tool: &str,
        arguments: Option<&Map<String, Value>>,
    ) -> Result<ActionRequest, MappingError> {
        check_name("tool", tool)?;
        let resource = match self
            .resource_arg
            .as_deref()
            .and_then(|name| Some((name, arguments?.get(name)?)))
        {
            // The tool does not take the argument: the call targets the server.
            None => self.server.clone(),
            Some((name, value)) => resource_of(name, value)?,
        };
        let params = Value::Object(arguments.cloned().unwrap_or_default());
        Ok(
            ActionRequest::new(format!("mcp.{}.{tool}", self.server), resource)
                .params(params)
                .summary(format!("MCP tool call {tool} on server {}", self.server)),
        )
    }
}

/// The resource named by argument `name`. A rule on resources must not be escaped by the way
/// the argument is written, so anything but a plain scalar is refused (an empty string, an
/// array, an object, null), and so is a value with a `.` or `..` segment
/// (`/srv/public/../protected/x` would match `/srv/public/*` and write under `protected`).
fn resource_of(name: &str, value: &Value) -> Result<String, MappingError> {
    let text = match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return Err(MappingError(format!(
                "the argument {name:?} names the resource the approval policy checks, so it must be a non-empty string, a number or a boolean"
            )));
        }
    };
    if text
        .split(['/', '\\'])
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(MappingError(format!(
            "the argument {name:?} names the resource the approval policy checks; write it without '.' or '..' segments (refusing {:?})",
            approvals_core::text::truncate(&text, 200)
        )));
    }
    Ok(text)
}

fn check_name(what: &str, name: &str) -> Result<(), MappingError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(MappingError(format!(
            "the {what} name must be 1 to {MAX_NAME_LEN} characters long"
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !name.chars().all(allowed) {
        return Err(MappingError(format!(
            "the {what} name may hold only ASCII letters, digits, '_' and '-'; refusing {:?}",
            approvals_core::text::truncate(name, 64)
        )));
    }
    Ok(())
}

/// The text a refused call returns to the model (`isError: true`): why, and what to do.
pub fn refusal_text(error: &GuardError) -> String {
    match error {
        GuardError::PolicyDenied { rule, reason, .. } => {
            format!("Refused by approval policy rule {rule:?}: {reason}")
        }
        GuardError::Denied { .. } => format!("Denied by a reviewer: {error}"),
        GuardError::DeniedRecently { .. } => denied_recently_text(&error.to_string()),
        GuardError::Expired { .. } => {
            format!("Not approved in time: {error}. Ask again if it is still needed.")
        }
        GuardError::Cancelled { .. } => format!("Approval request withdrawn: {error}"),
        other => format!("Not run: {other}"),
    }
}

/// The text of a call refused because a reviewer denied the same action recently, around
/// the gate's (or the approvals server's) account of it: the model should not retry.
pub fn denied_recently_text(account: &str) -> String {
    format!(
        "Denied by a reviewer earlier, and not asked again yet: {account}. Do not retry this call; change the plan or ask the reviewer."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refusal_after_a_recent_denial_tells_the_model_not_to_retry() {
        let id = approvals_core::RequestId::new();
        let text = refusal_text(&GuardError::DeniedRecently {
            id,
            by: "sam@example.com".into(),
            reason: Some("legal hold".into()),
            until: "2026-11-21T13:00:00Z".parse().expect("time"),
        });
        for part in [
            "Denied by a reviewer earlier",
            "sam@example.com",
            "legal hold",
            &id.to_string(),
            "Do not retry",
        ] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
    }

    #[test]
    fn kind_resource_and_params_come_from_the_call() {
        let mapping = ToolMapping::new("fs").unwrap().resource_arg("path");
        let args = json!({"path": "/srv/a", "content": "x"});
        let action = mapping.action("write_file", args.as_object()).unwrap();
        assert_eq!(action.kind, "mcp.fs.write_file");
        assert_eq!(action.resource, "/srv/a");
        assert_eq!(*action.params, args);
    }

    #[test]
    fn a_resource_that_could_escape_a_rule_is_refused() {
        let mapping = ToolMapping::new("fs").unwrap().resource_arg("path");
        for path in [
            json!("/srv/public/../protected/x"),
            json!("../etc/passwd"),
            json!("/srv/public/./x"),
            json!("C:\\srv\\public\\..\\protected"),
            json!(""),
            json!(null),
            json!(["/srv/protected/x"]),
            json!({"path": "/srv/protected/x"}),
        ] {
            let args = json!({ "path": path });
            assert!(
                mapping.action("write_file", args.as_object()).is_err(),
                "{path} was accepted"
            );
        }
        let fine = json!({"path": "/srv/public/..hidden/x.txt"});
        assert_eq!(
            mapping
                .action("write_file", fine.as_object())
                .unwrap()
                .resource,
            "/srv/public/..hidden/x.txt"
        );
    }

    #[test]
    fn missing_resource_argument_targets_the_server() {
        let mapping = ToolMapping::new("fs").unwrap().resource_arg("path");
        let action = mapping.action("list_allowed_directories", None).unwrap();
        assert_eq!(action.resource, "fs");
        assert_eq!(*action.params, json!({}));
        let other = json!({"mode": "recursive"});
        assert_eq!(
            mapping.action("x", other.as_object()).unwrap().resource,
            "fs"
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        let mapping = ToolMapping::new("fs").unwrap();
        for name in ["", "a.b", "write file", "x\u{202e}", &"a".repeat(200)] {
            assert!(mapping.action(name, None).is_err(), "{name:?}");
        }
        assert!(ToolMapping::new("my.server").is_err());
    }
}

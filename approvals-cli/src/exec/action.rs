//! The action `approvals exec` asks for (parameters, command line, `--param-env` values) and
//! its configured initiator.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use approvals_core::{ActionRequest, Initiator, Preview, Principal, RequestContext};
use serde_json::{Map, Value};

use super::output::shell_line;
use super::{ExecArgs, exit};
use crate::command::Failure;

/// The action: the caller's parameters, the command line and the `--param-env` values.
pub(super) fn action(args: &ExecArgs) -> Result<ActionRequest, Failure> {
    let usage = |m: String| Failure::new(exit::USAGE, m);
    let mut params = Map::new();
    let mut put = |name: &str, value: Value, flag: &str| -> Result<(), Failure> {
        if name.is_empty() {
            return Err(usage(format!("{flag} needs NAME=VALUE with a name")));
        }
        if name == "command" || name == "env" {
            return Err(usage(format!(
                "{flag} {name}: `command` and `env` are reserved for the command line and --param-env"
            )));
        }
        if params.insert(name.to_owned(), value).is_some() {
            return Err(usage(format!("{flag} {name}: given twice")));
        }
        Ok(())
    };
    for p in &args.params {
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| usage(format!("--param {p:?}: write NAME=VALUE")))?;
        put(name, Value::String(value.to_owned()), "--param")?;
    }
    for p in &args.params_json {
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| usage(format!("--param-json {p:?}: write NAME=JSON")))?;
        let value = serde_json::from_str(value)
            .map_err(|e| usage(format!("--param-json {name}: not JSON ({e})")))?;
        put(name, value, "--param-json")?;
    }
    let mut env = BTreeMap::new();
    for name in &args.params_env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(usage(format!(
                "--param-env {name:?} is not a variable name"
            )));
        }
        let value = match std::env::var(name) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                return Err(usage(format!(
                    "--param-env {name}: the variable is not set, so nothing was submitted; set it (it becomes part of what is approved) or drop the flag"
                )));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(usage(format!(
                    "--param-env {name}: the value is not valid text, so nothing was submitted"
                )));
            }
        };
        if env.insert(name.clone(), Value::String(value)).is_some() {
            return Err(usage(format!("--param-env {name}: given twice")));
        }
    }
    let program = args
        .command
        .first()
        .ok_or_else(|| usage("give the command after --".into()))?;
    check_program(program).map_err(usage)?;
    params.insert(
        "command".into(),
        Value::Array(args.command.iter().cloned().map(Value::String).collect()),
    );
    if !env.is_empty() {
        params.insert("env".into(), Value::Object(env.into_iter().collect()));
    }
    let summary = args
        .summary
        .clone()
        .unwrap_or_else(|| format!("Run: {}", shell_line(&args.command)));
    let mut action = ActionRequest::new(&args.kind, &args.resource)
        .params(Value::Object(params))
        .summary(summary)
        .context(RequestContext {
            environment: args.environment.clone(),
            ticket: args.ticket.clone(),
            ..Default::default()
        });
    if let Some(preview) = preview(args)? {
        action = action.preview(preview);
    }
    if let Some(j) = &args.justification {
        action = action.justification(j);
    }
    if let Some(k) = &args.idempotency_key {
        action = action.idempotency_key(k);
    }
    Ok(action)
}

/// The preview the command line names: the text of the --preview-diff or --preview-dry-run
/// file, which must be UTF-8 and within the request size limit.
fn preview(args: &ExecArgs) -> Result<Option<Preview>, Failure> {
    let usage = |m: String| Failure::new(exit::USAGE, m);
    let (path, flag, make): (_, _, fn(String) -> Preview) =
        match (&args.preview_diff, &args.preview_dry_run) {
            (Some(path), _) => (path, "--preview-diff", Preview::diff),
            (None, Some(path)) => (path, "--preview-dry-run", Preview::dry_run),
            (None, None) => return Ok(None),
        };
    let limit = approvals_core::admission::MAX_REQUEST_BYTES as u64;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| {
            usage(format!(
                "{flag} {}: {e}, so nothing was submitted",
                path.display()
            ))
        })?;
    if bytes.len() as u64 > limit {
        return Err(usage(format!(
            "{flag} {}: larger than the request limit of {limit} bytes, so nothing was submitted",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        usage(format!(
            "{flag} {}: not UTF-8 text, so nothing was submitted",
            path.display()
        ))
    })?;
    Ok(Some(make(text)))
}

/// Refuses a program that cannot be run, before anyone is asked to approve it.
fn check_program(program: &str) -> Result<(), String> {
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            }
            #[cfg(not(unix))]
            {
                m.is_file()
            }
        })
    };
    if program.contains(std::path::MAIN_SEPARATOR) || program.contains('/') {
        if runnable(Path::new(program)) {
            return Ok(());
        }
        return Err(format!(
            "{program:?} is not an executable file, so nothing was submitted"
        ));
    }
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| runnable(&dir.join(program))));
    if found {
        Ok(())
    } else {
        Err(format!(
            "{program:?} is not found on PATH, so nothing was submitted"
        ))
    }
}

/// The configured initiator: `--agent`, on behalf of `--on-behalf-of` or the CI's actor.
pub(super) fn initiator(args: &ExecArgs) -> Result<Initiator, Failure> {
    let non_empty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let human = non_empty(args.on_behalf_of.clone())
        .or_else(|| non_empty(std::env::var("GITHUB_ACTOR").ok()))
        .or_else(|| non_empty(std::env::var("GITLAB_USER_LOGIN").ok()));
    let mut initiator = Initiator::agent(args.agent.trim());
    if let Some(human) = human {
        initiator = initiator.on_behalf_of(Principal::human(human));
    }
    initiator.validate().map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!("the initiator (--agent, --on-behalf-of or the CI's actor) is refused: {e}"),
        )
    })?;
    Ok(initiator)
}

/// What `exec` runs when reviewers approved a changed version of its action
/// ([`edit`](approvals_core::edit)): the command line and the `--param-env` variables as they
/// edited them. An edit of anything else (a `--param` value) is refused, since the command
/// does not read those: running it unchanged would run something other than what was
/// approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EditedRun {
    /// The program and its arguments.
    pub(crate) command: Vec<String>,
    /// The environment variables to set for it.
    pub(crate) env: Vec<(String, String)>,
}

/// The [`EditedRun`] of `edited`, the approved parameters of an action `exec` asked for with
/// `asked`; `Err` says why it cannot run.
pub(crate) fn edited_run(asked: &Value, edited: &Value) -> Result<EditedRun, String> {
    let (Some(asked), Some(edited)) = (asked.as_object(), edited.as_object()) else {
        return Err("the approved parameters are not an object".into());
    };
    let names = asked.keys().chain(edited.keys());
    for name in names {
        if name != "command" && name != "env" && asked.get(name) != edited.get(name) {
            return Err(format!(
                "reviewers changed the parameter {name:?}, which the command does not read; ask them to edit the command line instead"
            ));
        }
    }
    let command: Vec<String> = edited
        .get("command")
        .and_then(Value::as_array)
        .map(|args| {
            args.iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let whole = edited
        .get("command")
        .and_then(Value::as_array)
        .is_some_and(|args| args.len() == command.len());
    if command.is_empty() || !whole {
        return Err("the approved command is not a list of words".into());
    }
    let mut env = Vec::new();
    if let Some(vars) = edited.get("env").and_then(Value::as_object) {
        for (name, value) in vars {
            let value = value
                .as_str()
                .ok_or_else(|| format!("the approved value of {name} is not text"))?;
            env.push((name.clone(), value.to_owned()));
        }
    }
    Ok(EditedRun { command, env })
}

#[cfg(test)]
mod edited_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_command_and_its_variables_may_be_edited_and_nothing_else_runs() {
        let asked = json!({"command": ["deploy", "--canary", "10"], "env": {"REGION": "eu"}, "ticket": "OPS-1"});
        let edited = json!({"command": ["deploy", "--canary", "5"], "env": {"REGION": "us"}, "ticket": "OPS-1"});
        assert_eq!(
            edited_run(&asked, &edited),
            Ok(EditedRun {
                command: vec!["deploy".into(), "--canary".into(), "5".into()],
                env: vec![("REGION".into(), "us".into())],
            })
        );
        for bad in [
            json!({"command": ["deploy"], "env": {"REGION": "eu"}, "ticket": "OPS-2"}),
            json!({"command": ["deploy"], "env": {"REGION": "eu"}, "ticket": "OPS-1", "extra": 1}),
            json!({"command": ["deploy", 5], "env": {"REGION": "eu"}, "ticket": "OPS-1"}),
            json!({"command": [], "env": {"REGION": "eu"}, "ticket": "OPS-1"}),
            json!({"command": ["deploy"], "env": {"REGION": 1}, "ticket": "OPS-1"}),
        ] {
            assert!(edited_run(&asked, &bad).is_err(), "{bad}");
        }
    }
}

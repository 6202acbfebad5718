//! The `#[requires_approval]` attribute: puts an `async fn` behind an approval.
//!
//! Use it through `approvals_core::requires_approval` (re-exported behind the default
//! `macros` feature); the generated code refers to `::approvals_core`, so this crate is not
//! meant to be a direct dependency. Like `tracing`'s `#[instrument]`, the expansion calls only
//! items of a hidden support module, `approvals_core::__private`, by absolute path, and
//! `crate = path` points it elsewhere for a renamed dependency.

mod expand;
mod options;

use proc_macro::TokenStream;
use quote::ToTokens as _;

/// Runs the function's body only after its action is approved.
///
/// Each call builds an `ActionRequest` from the call's arguments and asks a `Gate` for it
/// (`guard`). If the policy allows the action or reviewers approve it, the body runs with the
/// single-use grant consumed (`Gate::execute`), and its result is audited as `executed`
/// (`ok`, or the error's `Display` text). If the request is refused (policy deny, reviewer
/// deny, expiry, cancellation, or any failure of policy, store, channel or audit), the body
/// never runs and the function returns the `GuardError` converted with `E::from`.
///
/// # Requirements
///
/// - The function is an `async fn` (free, or a method taking `&self`, `&mut self` or `self`,
///   also inside an `#[async_trait]` impl).
/// - It returns `Result<T, E>` (or an alias of it) with
///   `E: From<approvals_core::GuardError> + Display`.
/// - Every argument that is not skipped implements `serde::Serialize`: it becomes a parameter
///   that reviewers see and that the approval's digest binds.
///
/// # Options
///
/// | option | meaning | default |
/// |---|---|---|
/// | `kind = "db.drop"` | the action kind policies match on | `module_path!()::fn_name` |
/// | `resource = "db://{db}/{table}"` | the target; `{arg}` inserts an argument's `Display` (`{{`, `}}` for braces) | empty |
/// | `skip(conn, token)` | arguments that must never reach reviewers, the request or the audit log | none |
/// | `gate = expr` | the gate to ask: a `Gate`, `&Gate` or `Arc<Gate>` (may use `self` and arguments; an argument used here is not a parameter) | the process-wide gate ([`set_default_gate`]) |
/// | `justification = arg` | why the agent wants this: an argument or expression of type `&str`, `String` or `Option<..>` of those; an argument used here is not repeated as a parameter | none |
/// | `context = expr` | a `RequestContext` (environment, ticket, impact, links, ..); an argument used here is not a parameter | the gate's defaults fill what it leaves empty |
/// | `crate = path` | where approvals-core is, for a renamed dependency | `::approvals_core` |
///
/// The parameters are a JSON object with one entry per non-skipped argument, keyed by the
/// argument's name (`r#type` becomes `"type"`; a destructured argument contributes each name
/// it binds). `self` is never sent. An argument that fails to serialize at run time (for
/// example a map with non-string keys) refuses the action with `GuardError::InvalidRequest`.
///
/// Inside the body, `return` and `?` work as usual: they end the body, whose result is what
/// gets audited and returned.
///
/// # Example
///
/// ```
/// use approvals_core::{Gate, GuardError, RequestContext, requires_approval};
///
/// #[derive(Debug)]
/// enum ToolError {
///     Refused(GuardError),
///     Db(String),
/// }
/// impl From<GuardError> for ToolError {
///     fn from(e: GuardError) -> Self {
///         ToolError::Refused(e)
///     }
/// }
/// impl std::fmt::Display for ToolError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         match self {
///             ToolError::Refused(e) => write!(f, "not approved: {e}"),
///             ToolError::Db(e) => write!(f, "database error: {e}"),
///         }
///     }
/// }
///
/// pub struct Connection;
///
/// pub struct DbTools {
///     gate: Gate,
/// }
///
/// impl DbTools {
///     /// Drops a table once a reviewer approves. Reviewers see `{"db": .., "table": ..}`
///     /// and the justification; the connection is skipped.
///     #[requires_approval(
///         kind = "db.drop_table",
///         resource = "postgres://{db}/{table}",
///         skip(conn),
///         gate = self.gate,
///         justification = why,
///         context = RequestContext::environment("production"),
///     )]
///     pub async fn drop_table(
///         &self,
///         conn: &mut Connection,
///         db: &str,
///         table: String,
///         why: String,
///     ) -> Result<u64, ToolError> {
///         let _ = conn;
///         if table.is_empty() {
///             return Err(ToolError::Db("no table".into()));
///         }
///         Ok(0)
///     }
/// }
/// ```
///
/// With `#[async_trait]`, put `#[async_trait]` on the impl and `#[requires_approval]` on the
/// method, as with any other method.
///
/// [`set_default_gate`]: https://docs.rs/approvals-core/latest/approvals_core/fn.set_default_gate.html
#[proc_macro_attribute]
pub fn requires_approval(args: TokenStream, item: TokenStream) -> TokenStream {
    let func = match syn::parse::<syn::ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(e) => {
            let message = format!(
                "#[requires_approval] goes on an `async fn` with a body ({e}); \
                 in a trait, put it on the impl's method"
            );
            let mut out = syn::Error::new(e.span(), message).to_compile_error();
            out.extend(proc_macro2::TokenStream::from(item));
            return out.into();
        }
    };
    let expanded = syn::parse::<options::Options>(args)
        .and_then(|options| expand::expand(options, func.clone()));
    match expanded {
        Ok(tokens) => tokens.into(),
        // Keep the function as written so the only error is ours, not "cannot find function".
        Err(e) => {
            let mut out = e.to_compile_error();
            func.to_tokens(&mut out);
            out.into()
        }
    }
}

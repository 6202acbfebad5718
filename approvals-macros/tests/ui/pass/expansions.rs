//! Every supported shape and option compiles.

use std::fmt::Display;
use std::sync::Arc;

use approvals_core::{Gate, GuardError, RequestContext, requires_approval};

// A renamed dependency.
use ::approvals_core as approvals;

type ToolResult<T> = Result<T, GuardError>;

#[derive(Debug)]
struct MyError;
impl From<GuardError> for MyError {
    fn from(_: GuardError) -> Self {
        MyError
    }
}
impl Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}

struct NotSerialize;

#[derive(serde::Serialize)]
struct Point {
    x: i32,
    y: i32,
}

// No options: the default gate, kind `module::fn`, every argument a parameter.
#[requires_approval]
async fn plain(name: String, count: u32, r#type: &str) -> Result<(), GuardError> {
    let _ = (name, count, r#type);
    Ok(())
}

#[requires_approval(
    kind = "db.drop",
    resource = "db://{db}/{table}?v={{1}}",
    skip(conn),
    gate = gate,
    justification = why,
    context = RequestContext::environment("prod"),
)]
async fn everything(
    gate: Arc<Gate>,
    conn: NotSerialize,
    db: &str,
    table: &str,
    why: &str,
) -> Result<u64, MyError> {
    let _ = conn;
    if db.is_empty() {
        return Err(MyError);
    }
    let n: u64 = table.len().try_into().map_err(|_| MyError)?;
    Ok(n)
}

#[requires_approval(crate = approvals, kind = "points.move")]
async fn renamed((a, b): (i32, i32), Point { x, y }: Point, _: u8) -> ToolResult<i32> {
    Ok(a + b + x + y)
}

#[requires_approval(crate = "::approvals_core")]
async fn opaque(value: impl serde::Serialize + Send + Sync) -> Result<impl Display, GuardError> {
    let _ = value;
    Ok(1)
}

struct Service {
    gate: Gate,
    calls: u32,
}

impl Service {
    #[requires_approval(gate = self.gate, resource = "svc://{id}")]
    async fn by_ref(&self, id: u64) -> Result<u64, GuardError> {
        Ok(id + u64::from(self.calls))
    }

    #[requires_approval(gate = &self.gate)]
    async fn by_mut(&mut self) -> Result<u32, GuardError> {
        self.calls += 1;
        Ok(self.calls)
    }

    #[requires_approval(gate = self.gate.clone())]
    async fn by_value(self, note: Option<String>) -> Result<Self, GuardError> {
        let _ = note;
        Ok(self)
    }
}

trait Native {
    fn run(&self, arg: u8) -> impl std::future::Future<Output = Result<u8, GuardError>> + Send;
}

impl Native for Service {
    #[requires_approval(gate = self.gate)]
    async fn run(&self, arg: u8) -> Result<u8, GuardError> {
        Ok(arg)
    }
}

#[async_trait::async_trait]
trait Tool {
    async fn call(&self, input: String, scale: &f64) -> Result<String, GuardError>;
}

#[async_trait::async_trait]
impl Tool for Service {
    #[requires_approval(gate = self.gate, justification = "asked by the user")]
    async fn call(&self, input: String, scale: &f64) -> Result<String, GuardError> {
        Ok(format!("{input}{scale}{}", self.calls))
    }
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    assert_send(plain(String::new(), 1, "t"));
    assert_send(renamed((1, 2), Point { x: 1, y: 2 }, 0));
    assert_send(opaque(1));
    let _ = everything;
}

//! The `approvals` command-line tool and the audit log commands, kept out of the library
//! crates so that embedding approvals-http or approvals-audit never compiles clap, SQLite or a
//! multi-thread runtime (as sqlx keeps its CLI in sqlx-cli).
//!
//! - [`command`]: `approvals serve | pending | show | approve | deny | cancel | exec | token |
//!   audit`.
//! - `serve`: `approvals serve --config FILE`, the whole service from one configuration file.
//! - [`exec`]: `approvals exec -- CMD`, which runs a pipeline's command once humans approve
//!   exactly that command line; its exit codes are in [`exec::exit`].
//! - [`audit`]: `approvals audit ...`, also installed as `approvals-audit`: key generation,
//!   verification, proofs, SIEM export, evidence reports, grant token checks.
//!
//! Both are library functions as well, so other binaries can dispatch to them.

pub mod audit;
pub mod command;
pub mod exec;
mod serve;

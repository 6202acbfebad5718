//! The `approvals-audit` command line, as a library function so that other binaries (the
//! `approvals` CLI's `approvals audit ...`) can dispatch to it.
//!
//! ```no_run
//! // In the `approvals` binary, for `approvals audit <args...>`: forward what follows `audit`
//! // and return its exit status (0, 1 or 2) unchanged.
//! fn main() -> std::process::ExitCode {
//!     let args: Vec<String> = std::env::args().skip(2).collect();
//!     approvals_cli::audit::run_named("approvals audit", args)
//! }
//! ```
//!
//! Exit status: 0 success, 1 verification failed (or a token or proof refused), 2 usage or
//! I/O error.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use approvals_audit::grant::GrantTokenVerifier;
use approvals_audit::log::{
    Completeness, InclusionProof, LogVerifier, prove_consistency, prove_inclusion,
};
use approvals_audit::note::{Signer, Verifier};
use approvals_audit::report::{EvidenceReport, ReportOptions, parse_bound};
use approvals_audit::siem::{ExportError, Format, export_file, follow_file};
use approvals_audit::witness::HttpWitness;

/// The usage text.
pub const USAGE: &str = "\
usage:
  approvals-audit keygen <key name> <new secret key file>
      writes a new Ed25519 signer key (PRIVATE+KEY+...) to the file and prints its verifier key
  approvals-audit verify (<log> | --db <url> [--schema <name>]) (--trust <vkeys file> | --trust-env <VAR>)...
                         [--witness <file>... | --witness-url <url> | --no-witness]
                         [--known <checkpoint file>]... [--origin <origin>] [--format text|json]
      checks every entry, the hash chain and every checkpoint, and that the log is complete:
      it must hold everything its witness (the latest checkpoint kept outside the log) signed.
      The witness is <log>.witness beside a log file, the approval_audit_witness table of a
      database, or the ones named with --witness/--witness-url; a missing witness fails
      verification. --no-witness verifies without one and says COMPLETENESS UNPROVEN. With
      --db, the log kept by approvals-store-sql in a database (sqlite://file.db or
      postgres://...; in a database, line N is the row with line_no N)
  approvals-audit prove (<log> | --db <url> [--schema <name>]) <seq> [--size <checkpoint size>]
      prints a JSON inclusion proof of entry <seq> (default: at the last checkpoint)
  approvals-audit export-db --db <url> [--schema <name>] --out <log file>
      copies a database's audit log, exactly as stored, to a log file (for the other commands),
      and its witness to <log file>.witness
  approvals-audit check-proof <proof file> (--trust <vkeys file> | --trust-env <VAR>)...
      checks an inclusion proof without the log
  approvals-audit consistency <log> <old size> <new size>
      prints a JSON proof that checkpoint <new size> extends checkpoint <old size>
  approvals-audit report (<log> | --db <url> [--schema <name>]) (--trust ...)... --out <report.html> [--csv <report.csv>]
                         [--from <date|RFC 3339>] [--to <date|RFC 3339>] [--title <text>]
                         [--sample <N> --seed <text>]
                         [--witness <file>... | --witness-url <url> | --no-witness]
                         [--known <checkpoint file>]... [--origin <origin>]
      verifies the log (witness as for verify) and writes the auditors' evidence report (HTML,
      and CSV with --csv); exits 1 if the log fails verification (the report then says so in
      red). --sample N --seed S adds a reproducible sample of N requests: the N whose
      SHA-256(S || request id) is lowest (see the report's method section)
  approvals-audit export (<log> | --db <url> [--schema <name>]) (--trust ...)... --format jsonl|ocsf|cef
                         [--out <file>] [--follow] [--poll-ms <ms>] [--known <checkpoint file>]... [--origin <origin>]
                         [--witness <file>... | --witness-url <url> | --no-witness]
      writes every entry covered by a verified checkpoint as JSON lines, OCSF or CEF; with
      --follow keeps reading the growing log file (not with --db); refuses (exit 1) a log that
      fails verification, including against its witness (as for verify)
  approvals-audit grant verify <token | -> (--trust ...)... --digest <sha256:...>
                         [--audience <aud>] [--issuer <iss>] [--now <RFC 3339>]
      checks a signed grant token and prints its claims as JSON; exit 1 if refused";

/// A failure: message and exit status.
struct Fail(String, u8);

fn usage(msg: &str) -> Fail {
    Fail(format!("{msg}\n\n{USAGE}"), 2)
}

fn err(e: impl std::fmt::Display) -> Fail {
    Fail(e.to_string(), 2)
}

/// Positional arguments and `--flag value` options.
struct Args<'a> {
    positional: Vec<&'a str>,
    options: Vec<(&'a str, &'a str)>,
    switches: Vec<&'a str>,
}

fn parse<'a>(args: &'a [String], known: &[&str]) -> Result<Args<'a>, Fail> {
    parse_with(args, known, &[])
}

fn parse_with<'a>(args: &'a [String], known: &[&str], switches: &[&str]) -> Result<Args<'a>, Fail> {
    let mut out = Args {
        positional: Vec::new(),
        options: Vec::new(),
        switches: Vec::new(),
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(flag) = arg.strip_prefix("--") {
            if switches.contains(&flag) {
                out.switches.push(flag);
                continue;
            }
            if !known.contains(&flag) {
                return Err(usage(&format!("unknown option --{flag}")));
            }
            let value = iter
                .next()
                .ok_or_else(|| usage(&format!("--{flag} needs a value")))?;
            out.options.push((flag, value));
        } else {
            out.positional.push(arg);
        }
    }
    Ok(out)
}

impl Args<'_> {
    fn all(&self, flag: &str) -> impl Iterator<Item = &str> {
        self.options
            .iter()
            .filter(move |(f, _)| *f == flag)
            .map(|(_, v)| *v)
    }

    fn one(&self, flag: &str) -> Option<&str> {
        self.all(flag).last()
    }

    fn trusted(&self) -> Result<Vec<Verifier>, Fail> {
        let mut keys = Vec::new();
        for path in self.all("trust") {
            keys.extend(Verifier::from_file(path).map_err(err)?);
        }
        for var in self.all("trust-env") {
            keys.extend(Verifier::from_env(var).map_err(err)?);
        }
        if keys.is_empty() {
            return Err(usage("no trusted key given (--trust or --trust-env)"));
        }
        Ok(keys)
    }
}

fn number(s: &str, what: &str) -> Result<u64, Fail> {
    s.parse()
        .map_err(|_| usage(&format!("{what} must be a number, not {s:?}")))
}

/// Runs the command line `args` (without the program name) and returns the exit status.
/// Errors are printed to standard error prefixed with `approvals-audit:`.
pub fn run(args: Vec<String>) -> ExitCode {
    run_named("approvals-audit", args)
}

/// Like [`run`], with `program` (for example `approvals audit`) in error messages.
pub fn run_named(program: &str, args: Vec<String>) -> ExitCode {
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg, code)) => {
            let msg = msg.replace("approvals-audit ", &format!("{program} "));
            eprintln!("{program}: {msg}");
            ExitCode::from(code)
        }
    }
}

impl Args<'_> {
    fn has(&self, switch: &str) -> bool {
        self.switches.contains(&switch)
    }

    fn log_verifier(&self) -> Result<LogVerifier, Fail> {
        let mut verifier = LogVerifier::new(self.trusted()?);
        if let Some(origin) = self.one("origin") {
            verifier.origin(origin);
        }
        for known in self.all("known") {
            verifier.known_checkpoint_file(known).map_err(err)?;
        }
        let named = self.all("witness").next().is_some() || self.one("witness-url").is_some();
        if self.has("no-witness") {
            if named {
                return Err(usage(
                    "--no-witness verifies without a witness; do not also name one",
                ));
            }
            verifier.without_witness();
        }
        for path in self.all("witness") {
            verifier.witness_file(path).map_err(err)?;
        }
        if let Some(url) = self.one("witness-url") {
            let witness = HttpWitness::new(url).map_err(err)?;
            let note = witness
                .latest()
                .map_err(|e| err(format!("fetching the witness: {e}")))?;
            verifier.witness(format!("URL {url}"), note);
        }
        Ok(verifier)
    }

    /// Whether a witness was named or waived on the command line.
    fn witness_chosen(&self) -> bool {
        self.has("no-witness")
            || self.all("witness").next().is_some()
            || self.one("witness-url").is_some()
    }

    /// The arguments that make `approvals-audit verify` check the same log the same way.
    fn verify_args(&self, input: &LogInput) -> String {
        let mut out = format!("approvals-audit verify {}", input.verify_target);
        for path in self.all("trust") {
            out.push_str(&format!(" --trust {path}"));
        }
        for var in self.all("trust-env") {
            out.push_str(&format!(" --trust-env {var}"));
        }
        if let Some(origin) = self.one("origin") {
            out.push_str(&format!(" --origin {origin}"));
        }
        for known in self.all("known") {
            out.push_str(&format!(" --known {known}"));
        }
        for path in self.all("witness") {
            out.push_str(&format!(" --witness {path}"));
        }
        if let Some(url) = self.one("witness-url") {
            out.push_str(&format!(" --witness-url {url}"));
        }
        if self.has("no-witness") {
            out.push_str(" --no-witness");
        } else if !self.witness_chosen() && input.db_witness.is_none() {
            out.push_str(&format!(
                " --witness {}",
                approvals_audit::witness::witness_path(&input.path).display()
            ));
        }
        out
    }
}

fn dispatch(args: &[String]) -> Result<(), Fail> {
    let Some((command, rest)) = args.split_first() else {
        return Err(usage("no command"));
    };
    match command.as_str() {
        "keygen" => {
            let a = parse(rest, &[])?;
            let [name, path] = a.positional[..] else {
                return Err(usage("keygen needs a key name and a file"));
            };
            let signer = Signer::generate(name).map_err(err)?;
            write_secret(path, &signer.to_skey()).map_err(err)?;
            println!("{}", signer.verifier());
            Ok(())
        }
        "verify" => {
            let a = parse_with(
                rest,
                &[
                    "trust",
                    "trust-env",
                    "known",
                    "origin",
                    "format",
                    "db",
                    "schema",
                    "witness",
                    "witness-url",
                ],
                &["no-witness"],
            )?;
            let json = match a.one("format") {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => return Err(usage(&format!("unknown format {other:?}"))),
            };
            let report = match (a.one("db"), &a.positional[..]) {
                (Some(url), []) => {
                    let verifier = a.log_verifier()?;
                    with_db(url, a.one("schema"), async |db| db.verify(&verifier).await)?
                }
                (None, [log]) => {
                    refuse_plain_json_lines(log)?;
                    a.log_verifier()?.verify_file(log).map_err(err)?
                }
                _ => return Err(usage("verify needs one log file or --db <url>")),
            };
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", colored(&report.to_string()));
            }
            if report.completeness == Completeness::Unproven {
                eprintln!("warning: {}", report.completeness);
            }
            if report.is_ok() {
                Ok(())
            } else {
                Err(Fail("verification failed".into(), 1))
            }
        }
        "prove" => {
            let a = parse(rest, &["size", "db", "schema"])?;
            let size = a.one("size").map(|s| number(s, "--size")).transpose()?;
            let proof = match (a.one("db"), &a.positional[..]) {
                (Some(url), [seq]) => {
                    let seq = number(seq, "seq")?;
                    with_db(url, a.one("schema"), async |db| {
                        db.prove_inclusion(seq, size).await
                    })?
                }
                (None, [log, seq]) => {
                    prove_inclusion(log, number(seq, "seq")?, size).map_err(err)?
                }
                _ => return Err(usage("prove needs a log file (or --db <url>) and a seq")),
            };
            println!("{}", proof.to_json().map_err(err)?);
            Ok(())
        }
        "check-proof" => {
            let a = parse(rest, &["trust", "trust-env"])?;
            let [path] = a.positional[..] else {
                return Err(usage("check-proof needs one proof file"));
            };
            let json = std::fs::read_to_string(path).map_err(err)?;
            let proof = InclusionProof::from_json(&json).map_err(err)?;
            match proof.verify(&a.trusted()?) {
                Ok(opened) => {
                    let cp = opened.checkpoint;
                    println!(
                        "OK: entry {} is in log {:?} at size {}",
                        proof.seq, cp.origin, cp.size
                    );
                    Ok(())
                }
                Err(e) => Err(Fail(format!("proof rejected: {e}"), 1)),
            }
        }
        "consistency" => {
            let a = parse(rest, &[])?;
            let [log, old, new] = a.positional[..] else {
                return Err(usage("consistency needs a log file and two sizes"));
            };
            let proof = prove_consistency(log, number(old, "old size")?, number(new, "new size")?)
                .map_err(err)?;
            println!("{}", serde_json::to_string(&proof).map_err(err)?);
            Ok(())
        }
        "export-db" => {
            let a = parse(rest, &["db", "schema", "out"])?;
            let (Some(url), Some(out), []) = (a.one("db"), a.one("out"), &a.positional[..]) else {
                return Err(usage("export-db needs --db <url> and --out <log file>"));
            };
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(out)
                .map_err(|e| err(format!("creating {out}: {e}")))?;
            let mut writer = std::io::BufWriter::new(file);
            let (lines, (label, witness)) = with_db(url, a.one("schema"), async |db| {
                // The witness first: a log read after it can only be longer.
                let witness = db.witness().await;
                db.export(&mut writer).await.map(|lines| (lines, witness))
            })?;
            writer
                .into_inner()
                .map_err(|e| err(format!("writing {out}: {e}")))?
                .sync_all()
                .map_err(|e| err(format!("writing {out}: {e}")))?;
            println!("{out}: {lines} lines");
            // The copy keeps its witness beside it, where verifying the file looks.
            let witness_out = approvals_audit::witness::witness_path(out);
            match witness {
                Some(note) => {
                    let mut file = create_private(&witness_out)
                        .map_err(|e| err(format!("creating {}: {e}", witness_out.display())))?;
                    file.write_all(note.as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(|e| err(format!("writing {}: {e}", witness_out.display())))?;
                    println!("{}: the witness from {label}", witness_out.display());
                }
                None => eprintln!(
                    "warning: the database has no witness ({label}); the copy can only be \
                     verified with --no-witness, which cannot show it is complete"
                ),
            }
            Ok(())
        }
        "report" => report(rest),
        "export" => export(rest),
        "grant" => match rest.split_first() {
            Some((sub, rest)) if sub == "verify" => grant_verify(rest),
            _ => Err(usage("grant needs a subcommand: grant verify <token>")),
        },
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(usage(&format!("unknown command {other:?}"))),
    }
}

fn report(args: &[String]) -> Result<(), Fail> {
    let a = parse_with(
        args,
        &[
            "trust",
            "trust-env",
            "known",
            "origin",
            "from",
            "to",
            "out",
            "csv",
            "title",
            "db",
            "schema",
            "witness",
            "witness-url",
            "sample",
            "seed",
        ],
        &["no-witness"],
    )?;
    let input = a.log_input("report")?;
    let log = &input.path;
    let out = a
        .one("out")
        .ok_or_else(|| usage("report needs --out <report.html>"))?;
    let bound = |flag: &str, end: bool| {
        a.one(flag)
            .map(|t| parse_bound(t, end).map_err(|e| usage(&format!("--{flag}: {e}"))))
            .transpose()
    };
    let mut options = ReportOptions::default()
        .period(bound("from", false)?, bound("to", true)?)
        .verify_command(a.verify_args(&input));
    if let Some(title) = a.one("title") {
        options = options.title(title);
    }
    match (a.one("sample"), a.one("seed")) {
        (Some(n), Some(seed)) => {
            let n = usize::try_from(number(n, "--sample")?)
                .map_err(|_| usage("--sample is too large"))?;
            options = options.sample(n, seed);
        }
        (None, None) => {}
        _ => {
            return Err(usage(
                "--sample N and --seed S go together (the seed makes the sample reproducible)",
            ));
        }
    }
    let report = EvidenceReport::build(log, &a.input_verifier(&input)?, &options).map_err(err)?;
    std::fs::write(out, report.to_html()).map_err(|e| err(format!("writing {out}: {e}")))?;
    if let Some(csv) = a.one("csv") {
        std::fs::write(csv, report.to_csv()).map_err(|e| err(format!("writing {csv}: {e}")))?;
    }
    let v = &report.verification;
    if v.completeness == Completeness::Unproven {
        eprintln!("warning: {}", v.completeness);
    }
    println!(
        "{}: {} requests in the period, {} refused reviews or grants; log {} ({} entries, {} verified)",
        out,
        report.requests.len(),
        report.refused.len(),
        if v.is_ok() {
            "verified"
        } else {
            "FAILED verification"
        },
        v.entries,
        v.verified_size()
    );
    if v.is_ok() {
        Ok(())
    } else {
        Err(Fail(
            format!("the log failed verification; the report says so:\n{v}"),
            1,
        ))
    }
}

fn export(args: &[String]) -> Result<(), Fail> {
    let a = parse_with(
        args,
        &[
            "trust",
            "trust-env",
            "known",
            "origin",
            "format",
            "out",
            "poll-ms",
            "db",
            "schema",
            "witness",
            "witness-url",
        ],
        &["follow", "no-witness"],
    )?;
    if a.has("follow") && a.one("db").is_some() {
        return Err(usage(
            "--follow reads a growing log file; with --db, run export again for new entries",
        ));
    }
    let input = a.log_input("export")?;
    let log = &input.path;
    let format: Format = a
        .one("format")
        .ok_or_else(|| usage("export needs --format jsonl|ocsf|cef"))?
        .parse()
        .map_err(|e: String| usage(&e))?;
    let verifier = a.input_verifier(&input)?;
    if verifier.is_witness_waived() {
        eprintln!("warning: {}", Completeness::Unproven);
    }
    let mut out: Box<dyn std::io::Write> = match a.one("out") {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| err(format!("creating {path}: {e}")))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let failed = |e: ExportError| match e {
        ExportError::Verification(report) => Fail(
            format!("the log failed verification; nothing was exported:\n{report}"),
            1,
        ),
        ExportError::Follow(e) => Fail(format!("stopped following: {e}"), 1),
        other => err(other),
    };
    if a.has("follow") {
        let poll = a
            .one("poll-ms")
            .map(|s| number(s, "--poll-ms"))
            .transpose()?
            .unwrap_or(1000);
        follow_file(
            log,
            &verifier,
            format,
            &mut out,
            Duration::from_millis(poll),
            || true,
        )
        .map_err(failed)?;
        return Ok(());
    }
    let summary = export_file(log, &verifier, format, &mut out).map_err(failed)?;
    out.flush().map_err(err)?;
    for w in &summary.report.warnings {
        eprintln!("warning: {w} (not exported)");
    }
    Ok(())
}

fn grant_verify(args: &[String]) -> Result<(), Fail> {
    let a = parse(
        args,
        &["trust", "trust-env", "digest", "audience", "issuer", "now"],
    )?;
    let [token] = a.positional[..] else {
        return Err(usage(
            "grant verify needs one token (or - for standard input)",
        ));
    };
    let token = if token == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text).map_err(err)?;
        text
    } else {
        token.to_owned()
    };
    let digest = a
        .one("digest")
        .ok_or_else(|| usage("grant verify needs --digest <sha256:...> of the action to run"))?;
    let digest = approvals_core::Digest::parse(digest).map_err(|e| usage(&e.to_string()))?;
    let now = match a.one("now") {
        Some(t) => parse_bound(t, false).map_err(|e| usage(&e))?,
        None => chrono::Utc::now(),
    };
    let mut verifier = GrantTokenVerifier::new(&a.trusted()?);
    if let Some(aud) = a.one("audience") {
        verifier = verifier.audience(aud);
    }
    if let Some(iss) = a.one("issuer") {
        verifier = verifier.issuer(iss);
    }
    match verifier.verify(token.trim(), &digest, now) {
        Ok(claims) => {
            println!("{}", claims.to_json_pretty());
            Ok(())
        }
        Err(e) => Err(Fail(format!("grant token refused: {e}"), 1)),
    }
}

/// The log a command reads: the file named, or with `--db` the database's log copied exactly
/// as stored (as `export-db` does) to a private temporary file that is removed when this is
/// dropped. `report` and `export` then verify and read a database with the same code as a
/// file.
struct LogInput {
    path: std::path::PathBuf,
    temporary: bool,
    /// What follows `approvals-audit verify` to check the same log, for the report.
    verify_target: String,
    /// A database's witness (label, note), read with its log: the copy in a temporary file
    /// has no witness beside it.
    db_witness: Option<(String, Option<String>)>,
}

impl Drop for LogInput {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Refuses a plain JSON-lines audit file (`approvals_core::JsonLinesSink`, `approvals
/// --audit FILE`) with an explanation instead of one "malformed line" per event: it has no
/// hash chain, no signed checkpoints and no witness, so nothing about it can be verified.
fn refuse_plain_json_lines(path: &str) -> Result<(), Fail> {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(()); // reported by the verifier with its own context
    };
    let mut first = String::new();
    let _ = std::io::BufReader::new(file)
        .take(approvals_audit::log::MAX_EVENT_BYTES as u64)
        .read_line(&mut first);
    let plain = serde_json::from_str::<serde_json::Value>(&first).is_ok_and(|v| {
        v.get("schema").is_some()
            && v.get("event").is_some_and(serde_json::Value::is_string)
            && v.get("seq").is_none()
    });
    if plain {
        return Err(Fail(
            format!(
                "{path} is a plain JSON-lines audit file (approvals_core::JsonLinesSink): it has \
                 no hash chain, no signed checkpoints and no witness, so neither its integrity \
                 nor its completeness can be verified. Record audit events with \
                 approvals_audit::SignedLogSink (a log file with <log>.witness) or the SQL \
                 store's signed audit sink (--audit-key) to get verifiable evidence."
            ),
            1,
        ));
    }
    Ok(())
}

impl Args<'_> {
    fn log_input(&self, command: &str) -> Result<LogInput, Fail> {
        match (self.one("db"), &self.positional[..]) {
            (None, [log]) => {
                refuse_plain_json_lines(log)?;
                Ok(LogInput {
                    path: log.into(),
                    temporary: false,
                    verify_target: (*log).to_owned(),
                    db_witness: None,
                })
            }
            (Some(url), []) => {
                let schema = self.one("schema");
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let path = std::env::temp_dir().join(format!(
                    "approvals-audit-{}-{nanos}.log",
                    std::process::id()
                ));
                let file = create_private(&path)
                    .map_err(|e| err(format!("creating {}: {e}", path.display())))?;
                let mut input = LogInput {
                    path,
                    temporary: true,
                    verify_target: match schema {
                        Some(schema) => format!("--db {} --schema {schema}", redacted(url)),
                        None => format!("--db {}", redacted(url)),
                    },
                    db_witness: None,
                };
                let mut writer = std::io::BufWriter::new(file);
                let witness = with_db(url, schema, async |db| {
                    // The witness first: a log read after it can only be longer.
                    let witness = db.witness().await;
                    db.export(&mut writer).await.map(|_| witness)
                })?;
                input.db_witness = Some(witness);
                writer
                    .into_inner()
                    .map_err(|e| err(format!("copying the database's log: {e}")))?;
                Ok(input)
            }
            _ => Err(usage(&format!(
                "{command} needs one log file or --db <url>"
            ))),
        }
    }
}

impl Args<'_> {
    /// The verifier for a log input: a database's own witness unless one was named or waived.
    fn input_verifier(&self, input: &LogInput) -> Result<LogVerifier, Fail> {
        let mut verifier = self.log_verifier()?;
        if !self.witness_chosen()
            && let Some((label, note)) = &input.db_witness
        {
            verifier.witness(label.clone(), note.clone());
        }
        Ok(verifier)
    }
}

/// The verification text, with failures and unproven completeness in red on a terminal.
fn colored(text: &str) -> String {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return text.to_owned();
    }
    text.lines()
        .map(|line| {
            if line.starts_with("FAILED")
                || line.starts_with("error:")
                || line.starts_with("COMPLETENESS")
            {
                format!("\x1b[1;31m{line}\x1b[0m\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// A database URL without its password, for text that others read (the report).
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => {
                format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Opens the database at `url` and runs `f` on it, on a runtime of its own.
fn with_db<T>(
    url: &str,
    schema: Option<&str>,
    f: impl AsyncFnOnce(&approvals_audit::log::db::LogDb) -> Result<T, approvals_audit::LogError>,
) -> Result<T, Fail> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("starting the database client: {e}")))?;
    runtime.block_on(async {
        let db = approvals_audit::log::db::LogDb::connect(url, schema)
            .await
            .map_err(err)?;
        let result = f(&db).await.map_err(err);
        db.close().await;
        result
    })
}

/// Creates a new file readable by its owner only; never opens an existing one.
fn create_private(path: impl AsRef<std::path::Path>) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Creates the key file, readable by its owner only; never overwrites an existing file.
fn write_secret(path: &str, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = create_private(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_database_url_in_the_report_has_no_password() {
        assert_eq!(
            redacted("postgres://audit:s3cret@db.internal:5432/approvals?sslmode=require"),
            "postgres://audit:***@db.internal:5432/approvals?sslmode=require"
        );
        assert_eq!(
            redacted("postgres://p%40ss:x@y@host/db"),
            "postgres://p%40ss:***@host/db"
        );
        assert_eq!(
            redacted("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redacted("sqlite:///var/lib/approvals.db"),
            "sqlite:///var/lib/approvals.db"
        );
        assert_eq!(redacted("not a url"), "not a url");
    }
}

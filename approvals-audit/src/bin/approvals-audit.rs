//! `approvals-audit`: generate log keys, verify audit logs, export and check proofs.
//!
//! Exit status: 0 success, 1 verification failed, 2 usage or I/O error.

use std::process::ExitCode;

use approvals_audit::log::{InclusionProof, LogVerifier, prove_consistency, prove_inclusion};
use approvals_audit::note::{Signer, Verifier};

const USAGE: &str = "\
usage:
  approvals-audit keygen <key name> <new secret key file>
      writes a new Ed25519 signer key (PRIVATE+KEY+...) to the file and prints its verifier key
  approvals-audit verify <log> (--trust <vkeys file> | --trust-env <VAR>)...
                         [--known <checkpoint file>]... [--origin <origin>] [--format text|json]
      checks every entry, the hash chain and every checkpoint; prints a report
  approvals-audit prove <log> <seq> [--size <checkpoint size>]
      prints a JSON inclusion proof of entry <seq> (default: at the last checkpoint)
  approvals-audit check-proof <proof file> (--trust <vkeys file> | --trust-env <VAR>)...
      checks an inclusion proof without the log
  approvals-audit consistency <log> <old size> <new size>
      prints a JSON proof that checkpoint <new size> extends checkpoint <old size>";

/// A failure: message and exit status.
struct Fail(String, u8);

fn usage(msg: &str) -> Fail {
    Fail(format!("{msg}\n\n{USAGE}"), 2)
}

fn err(e: impl std::fmt::Display) -> Fail {
    Fail(e.to_string(), 2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg, code)) => {
            eprintln!("approvals-audit: {msg}");
            ExitCode::from(code)
        }
    }
}

/// Positional arguments and `--flag value` options.
struct Args<'a> {
    positional: Vec<&'a str>,
    options: Vec<(&'a str, &'a str)>,
}

fn parse<'a>(args: &'a [String], known: &[&str]) -> Result<Args<'a>, Fail> {
    let mut out = Args {
        positional: Vec::new(),
        options: Vec::new(),
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(flag) = arg.strip_prefix("--") {
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

fn run(args: &[String]) -> Result<(), Fail> {
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
            let a = parse(rest, &["trust", "trust-env", "known", "origin", "format"])?;
            let json = match a.one("format") {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => return Err(usage(&format!("unknown format {other:?}"))),
            };
            let [log] = a.positional[..] else {
                return Err(usage("verify needs one log file"));
            };
            let mut verifier = LogVerifier::new(a.trusted()?);
            if let Some(origin) = a.one("origin") {
                verifier.origin(origin);
            }
            for known in a.all("known") {
                verifier.known_checkpoint_file(known).map_err(err)?;
            }
            let report = verifier.verify_file(log).map_err(err)?;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{report}");
            }
            if report.is_ok() {
                Ok(())
            } else {
                Err(Fail("verification failed".into(), 1))
            }
        }
        "prove" => {
            let a = parse(rest, &["size"])?;
            let [log, seq] = a.positional[..] else {
                return Err(usage("prove needs a log file and a seq"));
            };
            let size = a.one("size").map(|s| number(s, "--size")).transpose()?;
            let proof = prove_inclusion(log, number(seq, "seq")?, size).map_err(err)?;
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
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(usage(&format!("unknown command {other:?}"))),
    }
}

/// Creates the key file, readable by its owner only; never overwrites an existing file.
fn write_secret(path: &str, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

//! A private PostgreSQL server that checks passwords (`scram-sha-256` for every login), for
//! the tests that a `trust` server cannot prove: a minted role logs in with its password, not
//! with another, and not after its `VALID UNTIL` or its revocation.
//!
//! The shared test server (`APPROVALS_TEST_POSTGRES_URL`) trusts every TCP login from
//! loopback, so there any password works and `VALID UNTIL` is never consulted. This one is
//! made from the same installation's `initdb` and `postgres` in a temporary directory, on a
//! free loopback port, and stopped when dropped. As root (these machines), it runs as the
//! `postgres` user through `runuser`, since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser's password on the private server.
const PASSWORD: &str = "private-scram-superuser";

pub struct ScramServer {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl ScramServer {
    /// Starts one, or says why not: `None` after a loud SKIPPED line, and a panic with
    /// `CI=true` (CI must run these checks).
    pub fn start(test: &str) -> Option<ScramServer> {
        match Self::try_start() {
            Ok(server) => Some(server),
            Err(why) => {
                if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                    panic!(
                        "{test}: CI=true but no password-checking PostgreSQL could be started: {why}"
                    );
                }
                eprintln!(
                    "\n*** SKIPPED {test}: no password-checking PostgreSQL could be started ({why}) ***"
                );
                None
            }
        }
    }

    fn try_start() -> Result<ScramServer, String> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
        let as_root = is_root();
        if as_root {
            chown_to_postgres(dir.path())?;
            chown_to_postgres(&pwfile)?;
        }
        let initdb = command(as_root, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--no-locale",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        let port = free_port()?;
        let child = command(as_root, &bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres");
        let mut server = ScramServer {
            url,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let _ = server.child.kill();
                return Err("the private server did not start within 30 s".into());
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("the private server exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for ScramServer {
    fn drop(&mut self) {
        // SIGTERM is a smart shutdown; the data directory goes with the temp dir.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The installation's server binaries: `pg_config --bindir`, or the Debian layout.
fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL installation under /usr/lib/postgresql: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".into())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown_to_postgres(path: &Path) -> Result<(), String> {
    let status = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(path)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("chown postgres {} failed", path.display()))
}

fn command(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

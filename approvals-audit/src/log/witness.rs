//! Witnesses: the log's latest signed checkpoint, kept outside the log, so that verification
//! can tell a complete log from one whose end was cut off (invariant 12).
//!
//! A log alone cannot prove it is complete: cutting its last entries together with the
//! checkpoints that signed them leaves a shorter log that verifies. So the writer also keeps
//! its latest checkpoint where cutting the log does not reach, and verification compares the
//! log with it by default ([`LogVerifier`](super::LogVerifier)): the log must hold at least the
//! witnessed number of entries, agree with the witnessed root, and contain the witnessed
//! checkpoint itself.
//!
//! Three kinds, all holding the same thing: one C2SP signed note with a `tlog-checkpoint`
//! body, byte for byte the note of a checkpoint line of the log ([`crate::note`]):
//!
//! - **A witness file beside a log file**: `<log>.witness` by default
//!   ([`witness_path`]). Replaced atomically (temporary file, `fsync`, rename, `fsync` of the
//!   directory) after each checkpoint line is synced, and only ever with a checkpoint at least
//!   as large as the one it holds. The writer refuses to open a log shorter than its witness.
//! - **A witness table for a database log**: `approval_audit_witness` of approvals-store-sql,
//!   one row (`size`, `note`), replaced in the same transaction as the checkpoint row it copies,
//!   only forward (a trigger refuses a smaller size).
//! - **A witness URL** (optional, in addition): the writer `POST`s each checkpoint note to it
//!   (`Content-Type: text/plain; charset=utf-8`; any 2xx is success) and a verifier `GET`s the
//!   latest one (200 with the note as the body; 404 when it holds none). Plain `http://` only;
//!   put a TLS-terminating proxy in front for another machine. This is the witness that
//!   protects against someone who can write both the log and the files beside it: run it on
//!   another machine, under other administrators. (The C2SP `tlog-witness` protocol, which
//!   also checks consistency proofs and cosigns, is a possible later addition.)
//!
//! A witness file or table on the same machine as the log catches accidental truncation,
//! restores from an old backup and copies handed over without their end; it cannot stop an
//! administrator who rewrites both.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::LogError;
use crate::note::{Checkpoint, unverified_text};

/// The largest witness note accepted, in bytes (a checkpoint note is a few hundred).
pub const MAX_WITNESS_BYTES: usize = 64 * 1024;

/// The default witness file of the log at `log`: the same path with `.witness` appended
/// (`audit.jsonl` → `audit.jsonl.witness`).
pub fn witness_path(log: impl AsRef<Path>) -> PathBuf {
    let mut path = log.as_ref().as_os_str().to_owned();
    path.push(".witness");
    PathBuf::from(path)
}

/// The size of a witness note's checkpoint, without checking its signature.
pub(crate) fn note_size(note: &str) -> Result<u64, LogError> {
    Ok(Checkpoint::from_text(unverified_text(note)?)?.size)
}

/// Reads a witness file: `None` when it does not exist.
pub fn read_witness_file(path: impl AsRef<Path>) -> Result<Option<String>, LogError> {
    let path = path.as_ref();
    let context = || format!("reading witness {}", path.display());
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(context())(e)),
    };
    let mut text = String::new();
    file.take(MAX_WITNESS_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(LogError::io(context()))?;
    if text.len() > MAX_WITNESS_BYTES {
        return Err(LogError::Invalid(format!(
            "witness {} is larger than {MAX_WITNESS_BYTES} bytes: it is not a checkpoint note",
            path.display()
        )));
    }
    Ok(Some(text))
}

/// Replaces the witness file at `path` with `note` (a checkpoint of `size` entries):
/// atomically, synced, and only forward: a witness already holding a larger checkpoint is
/// left alone and the call fails.
pub(crate) fn write_witness_file(path: &Path, note: &str, size: u64) -> Result<(), LogError> {
    if let Some(current) = read_witness_file(path)? {
        let held = note_size(&current).map_err(|e| {
            LogError::Invalid(format!(
                "witness {} does not hold a checkpoint ({e}); restore it or remove it",
                path.display()
            ))
        })?;
        if held > size {
            return Err(LogError::Invalid(format!(
                "witness {} already holds a checkpoint of {held} entries, more than the {size} \
                 this writer signed: the log was cut below what was signed, or another writer \
                 appends to a copy of it; the witness is left as it is",
                path.display()
            )));
        }
    }
    write_atomically(path, note.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file, synced and renamed, then syncs the
/// directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(LogError::io(format!(
        "writing checkpoint file {}",
        path.display()
    )))?;
    sync_parent_dir(path);
    Ok(())
}

/// Makes a new directory entry durable. Not possible on every platform; best effort.
pub(crate) fn sync_parent_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = File::open(dir)
    {
        let _ = dir.sync_all();
    }
}

/// A witness reached over HTTP: `POST` stores a checkpoint note, `GET` returns the latest.
///
/// ```no_run
/// use approvals_audit::witness::HttpWitness;
///
/// let witness = HttpWitness::new("http://witness.internal:8080/logs/prod")?;
/// if let Some(note) = witness.latest()? {
///     println!("the witness holds:\n{note}");
/// }
/// # Ok::<(), approvals_audit::LogError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpWitness {
    url: String,
    host: String,
    port: u16,
    path: String,
    timeout: Duration,
}

impl HttpWitness {
    /// A witness at `url` (`http://host[:port][/path]`), with a 5 second timeout.
    pub fn new(url: &str) -> Result<Self, LogError> {
        let bad = |why: &str| LogError::Invalid(format!("witness URL {url:?}: {why}"));
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            bad("only http:// is supported; put a TLS-terminating proxy in front of a remote witness")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("it needs a host, and no user or password"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port.parse().map_err(|_| bad("the port is not a number"))?;
                (host, port)
            }
            _ => (authority, 80),
        };
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad("the path has spaces or control characters"));
        }
        Ok(HttpWitness {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            timeout: Duration::from_secs(5),
        })
    }

    /// Sets the connect, read and write timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stores a checkpoint note at the witness.
    pub fn submit(&self, note: &str) -> Result<(), LogError> {
        let (status, body) = self.call("POST", note.as_bytes())?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(self.refused("POST", status, &body))
        }
    }

    /// The latest checkpoint note the witness holds (`None`: it answered 404, it holds none).
    pub fn latest(&self) -> Result<Option<String>, LogError> {
        let (status, body) = self.call("GET", b"")?;
        match status {
            200 => String::from_utf8(body).map(Some).map_err(|_| {
                LogError::Invalid(format!("witness {} answered with non-UTF-8 text", self.url))
            }),
            404 => Ok(None),
            _ => Err(self.refused("GET", status, &body)),
        }
    }

    fn refused(&self, method: &str, status: u16, body: &[u8]) -> LogError {
        let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
        LogError::Io {
            context: format!("{method} {}", self.url),
            source: std::io::Error::other(format!("the witness answered {status}: {text}")),
        }
    }

    /// One HTTP/1.1 exchange (`Connection: close`); returns the status and the body.
    fn call(&self, method: &str, body: &[u8]) -> Result<(u16, Vec<u8>), LogError> {
        let io = LogError::io(format!("{method} {}", self.url));
        let result = (|| {
            let addr = (self.host.trim_matches(['[', ']']), self.port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other("the host has no address"))?;
            let mut stream = TcpStream::connect_timeout(&addr, self.timeout)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))?;
            let mut request = format!(
                "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
                 Accept: text/plain\r\nUser-Agent: approvals-audit/{}\r\n",
                self.path,
                self.host,
                env!("CARGO_PKG_VERSION")
            );
            if method == "POST" {
                request.push_str(&format!(
                    "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
                    body.len()
                ));
            }
            request.push_str("\r\n");
            stream.write_all(request.as_bytes())?;
            stream.write_all(body)?;
            stream.flush()?;
            let mut response = Vec::new();
            stream
                .take(MAX_WITNESS_BYTES as u64 + 16 * 1024)
                .read_to_end(&mut response)?;
            Ok::<_, std::io::Error>(response)
        })();
        let response = result.map_err(io)?;
        parse_response(&response).ok_or_else(|| LogError::Io {
            context: format!("{method} {}", self.url),
            source: std::io::Error::other("the witness sent a malformed HTTP response"),
        })
    }
}

/// Status and body of an HTTP/1.1 response read to its end (`Content-Length`, chunked, or
/// until the connection closed).
fn parse_response(bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..split]).ok()?;
    let mut body = &bytes[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()?
        .strip_prefix("HTTP/1.")?
        .get(2..5)?
        .parse()
        .ok()?;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().ok()?;
            body = body.get(..n)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[end + 2..];
        if size == 0 {
            return Some((status, out));
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witness_urls_are_parsed_or_refused() {
        let w = HttpWitness::new("http://127.0.0.1:8080/logs/prod").unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.path.as_str()),
            ("127.0.0.1", 8080, "/logs/prod")
        );
        let w = HttpWitness::new("http://witness").unwrap();
        assert_eq!((w.port, w.path.as_str()), (80, "/"));
        for bad in [
            "https://witness/x",
            "http://",
            "http://u:p@witness/",
            "http://h:x/",
            "http://h/a b",
        ] {
            assert!(HttpWitness::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_with_length_chunks_or_close_are_read() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef"),
            Some((200, b"abc".to_vec()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"),
            Some((200, b"abc".to_vec()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnone"),
            Some((404, b"none".to_vec()))
        );
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"),
            None
        );
    }

    #[test]
    fn the_default_witness_file_is_beside_the_log() {
        assert_eq!(
            witness_path("/var/log/approvals/audit.jsonl"),
            PathBuf::from("/var/log/approvals/audit.jsonl.witness")
        );
    }
}

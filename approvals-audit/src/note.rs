//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys, and the
//! `tlog-checkpoint` body (<https://c2sp.org/tlog-checkpoint>) that commits to a tree head.
//!
//! A signed note is a text ending in a newline, a blank line, then one signature line per key:
//! `— <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>` (U+2014 em dash).
//! The key id is the first four bytes of `SHA-256(key name || 0x0A || 0x01 || public key)`.
//!
//! Keys travel as text: a verifier key as `<name>+<8 hex key id>+<base64(0x01 || public key)>`
//! and a signer key as `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || 32-byte seed)>`.
//!
//! ```
//! use approvals_audit::note::{Checkpoint, Signer};
//!
//! let signer = Signer::generate("audit.example/prod").unwrap();
//! let verifier = signer.verifier();
//! let note = Checkpoint::new("audit.example/prod", 0, approvals_audit::merkle::EMPTY_ROOT)
//!     .sign(&[&signer])
//!     .unwrap();
//! let opened = Checkpoint::open(&note, &[verifier]).unwrap();
//! assert_eq!(opened.checkpoint.size, 0);
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// The signature type byte of Ed25519 note keys.
const ED25519: u8 = 0x01;
/// The em dash and space that start every signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// Most signature lines accepted in one note (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 100;
/// Largest note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 1 << 20;
const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";

/// A problem with a key: its text form, its file or its environment variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key text is not in the expected form. The message never repeats secret key material.
    #[error("malformed {kind} key: {reason}")]
    Malformed {
        /// `"verifier"` or `"signer"`.
        kind: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The key name is empty or contains a space or a `+`.
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    InvalidName(String),
    /// The key id written in the key text is not the one computed from its name and key.
    #[error(
        "key id {written:08x} of key {name:?} does not match its key (expected {computed:08x})"
    )]
    KeyIdMismatch {
        /// The key name.
        name: String,
        /// The id found in the text.
        written: u32,
        /// The id computed from the name and public key.
        computed: u32,
    },
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The environment variable is not set or not valid UTF-8.
    #[error("environment variable {0} is not set or not valid UTF-8")]
    MissingEnv(String),
}

/// A signed note or checkpoint that could not be produced, parsed or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note does not follow the signed-note format.
    #[error("malformed signed note: {0}")]
    Malformed(String),
    /// A signature line names a trusted key, but its signature does not verify: the note was
    /// altered after signing, or signed by a different key with the same name and id.
    #[error("signature by trusted key {name}+{key_id:08x} does not verify: the note was altered")]
    BadSignature {
        /// The key name.
        name: String,
        /// The key id.
        key_id: u32,
    },
    /// No signature line comes from a trusted key that verified.
    #[error("no signature from a trusted key (signature lines from: {})", .signers.join(", "))]
    NoTrustedSignature {
        /// `name+keyid` of every signature line found.
        signers: Vec<String>,
    },
    /// The note text is not a valid `tlog-checkpoint` body.
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
}

fn malformed(reason: impl Into<String>) -> NoteError {
    NoteError::Malformed(reason.into())
}

/// Computes the C2SP key id of an Ed25519 public key:
/// the first four bytes of `SHA-256(name || 0x0A || 0x01 || public key)`, big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty()
        || name.contains('+')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(KeyError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// Splits `name+hexid+base64` and decodes the id and the typed key bytes.
fn split_key(kind: &'static str, text: &str) -> Result<(String, u32, Vec<u8>), KeyError> {
    let bad = |reason: &str| KeyError::Malformed {
        kind,
        reason: reason.to_owned(),
    };
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected <name>+<key id>+<base64 key>"));
    };
    check_name(name)?;
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("the key id must be 8 hex digits"));
    }
    let id = u32::from_str_radix(id, 16).map_err(|_| bad("the key id must be 8 hex digits"))?;
    let key = BASE64
        .decode(key)
        .map_err(|_| bad("the key is not valid standard base64"))?;
    match key.split_first() {
        Some((&ED25519, rest)) if rest.len() == 32 => Ok((name.to_owned(), id, rest.to_vec())),
        Some((&ED25519, _)) => Err(bad("an Ed25519 key must be 32 bytes")),
        _ => Err(bad("unsupported key type (only Ed25519, type 0x01)")),
    }
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_env(var: &str) -> Result<String, KeyError> {
    std::env::var(var).map_err(|_| KeyError::MissingEnv(var.to_owned()))
}

/// A trusted public key that checks note signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Verifier {
    /// Parses a verifier key in the note text form `<name>+<8 hex key id>+<base64(0x01 || key)>`.
    pub fn from_vkey(text: &str) -> Result<Self, KeyError> {
        let (name, written, key) = split_key("verifier", text.trim())?;
        let bytes: [u8; 32] = key.try_into().map_err(|_| KeyError::Malformed {
            kind: "verifier",
            reason: "an Ed25519 key must be 32 bytes".into(),
        })?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Malformed {
            kind: "verifier",
            reason: "not a valid Ed25519 public key".into(),
        })?;
        if key.is_weak() {
            return Err(KeyError::Malformed {
                kind: "verifier",
                reason: "weak (small-order) Ed25519 public key".into(),
            });
        }
        let computed = key_id(&name, &bytes);
        if computed != written {
            return Err(KeyError::KeyIdMismatch {
                name,
                written,
                computed,
            });
        }
        Ok(Self {
            name,
            key_id: computed,
            key,
        })
    }

    /// Builds a verifier from a key name and an Ed25519 public key.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, KeyError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, key.as_bytes()),
            key,
        })
    }

    /// The key name (for a log, usually its origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32-bit key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Reads the verifier keys in a file: one vkey per line; blank lines and lines starting
    /// with `#` are ignored.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Vec<Self>, KeyError> {
        Self::parse_list(&read_key_file(path.as_ref())?)
    }

    /// Reads the verifier keys in an environment variable, separated by whitespace or commas.
    pub fn from_env(var: &str) -> Result<Vec<Self>, KeyError> {
        Self::parse_list(&read_env(var)?.replace(',', "\n"))
    }

    /// Parses a list of vkeys, one per line (blank lines and `#` comments ignored; several
    /// keys on one line may be separated by whitespace).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, KeyError> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .flat_map(str::split_whitespace)
            .map(Self::from_vkey)
            .collect()
    }
}

impl fmt::Display for Verifier {
    /// Writes the vkey text form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut typed = [0u8; 33];
        typed[0] = ED25519;
        typed[1..].copy_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(typed)
        )
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({self})")
    }
}

impl std::str::FromStr for Verifier {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_vkey(s)
    }
}

/// A private key that signs notes. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl Signer {
    /// Parses a signer key in the form `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || seed)>`.
    pub fn from_skey(text: &str) -> Result<Self, KeyError> {
        let rest = text
            .trim()
            .strip_prefix(PRIVATE_PREFIX)
            .ok_or_else(|| KeyError::Malformed {
                kind: "signer",
                reason: "it must start with PRIVATE+KEY+".into(),
            })?;
        let (name, written, seed) = split_key("signer", rest)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| KeyError::Malformed {
            kind: "signer",
            reason: "an Ed25519 seed must be 32 bytes".into(),
        })?;
        let signer = Self::new(&name, SigningKey::from_bytes(&seed))?;
        if signer.key_id != written {
            return Err(KeyError::KeyIdMismatch {
                name,
                written,
                computed: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// Builds a signer from a key name and an Ed25519 signing key.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, KeyError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Generates a fresh key from the operating system's random number generator.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        Self::new(name, SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Reads a signer key from a file holding one skey (surrounding whitespace ignored).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::from_skey(&read_key_file(path.as_ref())?)
    }

    /// Reads a signer key from an environment variable.
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        Self::from_skey(&read_env(var)?)
    }

    /// The secret key in skey text form, for storing it in a file or secret manager.
    pub fn to_skey(&self) -> String {
        let mut typed = [0u8; 33];
        typed[0] = ED25519;
        typed[1..].copy_from_slice(&self.key.to_bytes());
        format!(
            "{PRIVATE_PREFIX}{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(typed)
        )
    }

    /// The matching verifier (public) key.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32-bit key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Signs raw bytes (for formats other than notes, such as grant tokens).
    pub(crate) fn sign_raw(&self, message: &[u8]) -> ed25519_dalek::Signature {
        self.key.sign(message)
    }

    fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut blob = [0u8; 68];
        blob[..4].copy_from_slice(&self.key_id.to_be_bytes());
        blob[4..].copy_from_slice(&sig.to_bytes());
        format!("{SIG_PREFIX}{} {}\n", self.name, BASE64.encode(blob))
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signer({}+{:08x}, secret redacted)",
            self.name, self.key_id
        )
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(malformed(
            "the note text must be non-empty and end with a newline",
        ));
    }
    if text.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(malformed("the note contains an ASCII control character"));
    }
    Ok(())
}

/// Signs `text` (which must end with a newline) with every signer and returns the signed note.
pub fn sign_note(text: &str, signers: &[&Signer]) -> Result<String, NoteError> {
    check_text(text)?;
    if signers.is_empty() {
        return Err(malformed("a signed note needs at least one signer"));
    }
    let mut note = String::with_capacity(text.len() + 1 + signers.len() * 110);
    note.push_str(text);
    note.push('\n');
    for signer in signers {
        note.push_str(&signer.signature_line(text));
    }
    Ok(note)
}

/// A note whose signatures were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, including its final newline.
    pub text: String,
    /// `(name, key id)` of the trusted keys whose signatures verified.
    pub verified_by: Vec<(String, u32)>,
    /// How many signature lines came from keys not in the trusted list (ignored).
    pub unknown_signatures: usize,
}

/// Parses a signed note and checks its signatures against the trusted `verifiers`.
///
/// Signatures from unknown keys are ignored; a signature from a trusted key that does not
/// verify rejects the note; at least one trusted signature must verify.
pub fn open_note(note: &str, verifiers: &[Verifier]) -> Result<OpenedNote, NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(malformed(format!(
            "the note is larger than {MAX_NOTE_BYTES} bytes"
        )));
    }
    check_text(note)?;
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| malformed("no blank line separates the text from the signatures"))?;
    let (text, sigs) = (&note[..=split], &note[split + 2..]);
    if sigs.is_empty() {
        return Err(malformed("the note has no signature lines"));
    }
    let mut verified_by = Vec::new();
    let mut seen = Vec::new();
    let mut unknown_signatures = 0;
    for (i, line) in sigs.split_terminator('\n').enumerate() {
        if i >= MAX_SIGNATURES {
            return Err(malformed(format!("more than {MAX_SIGNATURES} signatures")));
        }
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or_else(|| malformed("a signature line must start with an em dash and a space"))?;
        let (name, blob) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("a signature line must be '— <key name> <signature>'"))?;
        check_name(name).map_err(|_| malformed(format!("invalid key name {name:?}")))?;
        let blob = BASE64
            .decode(blob)
            .map_err(|_| malformed(format!("signature by {name} is not valid base64")))?;
        if blob.len() < 5 {
            return Err(malformed(format!("signature by {name} is too short")));
        }
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        seen.push(format!("{name}+{id:08x}"));
        let Some(verifier) = verifiers.iter().find(|v| v.key_id == id && v.name == name) else {
            unknown_signatures += 1;
            continue;
        };
        if verified_by.iter().any(|(n, k)| n == name && *k == id) {
            // A repeated signature by the same key adds nothing; the first one decided.
            continue;
        }
        let ok = ed25519_dalek::Signature::from_slice(&blob[4..])
            .map(|sig| verifier.key.verify_strict(text.as_bytes(), &sig).is_ok())
            .unwrap_or(false);
        if !ok {
            return Err(NoteError::BadSignature {
                name: name.to_owned(),
                key_id: id,
            });
        }
        verified_by.push((name.to_owned(), id));
    }
    if verified_by.is_empty() {
        return Err(NoteError::NoTrustedSignature { signers: seen });
    }
    Ok(OpenedNote {
        text: text.to_owned(),
        verified_by,
        unknown_signatures,
    })
}

/// The text of a note, without checking any signature (for reading one's own log files).
pub(crate) fn unverified_text(note: &str) -> Result<&str, NoteError> {
    check_text(note)?;
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| malformed("no blank line separates the text from the signatures"))?;
    Ok(&note[..=split])
}

/// A `tlog-checkpoint` body: the log's origin, a tree size and the tree head at that size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The identity of the log (first line), e.g. `audit.example.com/prod`.
    pub origin: String,
    /// The number of entries committed to.
    pub size: u64,
    /// The RFC 6962 tree head over the first `size` entries.
    pub root: Hash,
    /// Optional extension lines (each non-empty).
    pub extensions: Vec<String>,
}

/// A checkpoint whose note signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The note it came from.
    pub note: OpenedNote,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: origin, size, base64 root and extension lines, each ending in a newline.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for ext in &self.extensions {
            text.push_str(ext);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint note text (without signatures).
    pub fn from_text(text: &str) -> Result<Self, NoteError> {
        let bad = |reason: &str| NoteError::Checkpoint(reason.to_owned());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the text must end with a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("expected origin, tree size and root hash lines"));
        };
        if origin.is_empty() {
            return Err(bad("the origin line is empty"));
        }
        let canonical_size = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        if !canonical_size {
            return Err(bad(
                "the tree size must be a decimal number without leading zeros",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad("the tree size is too large"))?;
        let root_bytes = BASE64
            .decode(root)
            .map_err(|_| bad("the root hash is not valid base64"))?;
        let root_hash: Hash = root_bytes
            .try_into()
            .map_err(|_| bad("the root hash must be 32 bytes"))?;
        if BASE64.encode(root_hash) != root {
            return Err(bad("the root hash is not in canonical base64"));
        }
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("extension lines must not be empty"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root: root_hash,
            extensions,
        })
    }

    /// Signs the checkpoint with every signer and returns the signed note.
    pub fn sign(&self, signers: &[&Signer]) -> Result<String, NoteError> {
        if self.origin.is_empty() || self.origin.contains('\n') {
            return Err(NoteError::Checkpoint(
                "the origin must be one non-empty line".into(),
            ));
        }
        if self
            .extensions
            .iter()
            .any(|e| e.is_empty() || e.contains('\n'))
        {
            return Err(NoteError::Checkpoint(
                "extension lines must be non-empty single lines".into(),
            ));
        }
        sign_note(&self.to_text(), signers)
    }

    /// Checks a signed checkpoint note against the trusted `verifiers` and parses its body.
    pub fn open(note: &str, verifiers: &[Verifier]) -> Result<OpenedCheckpoint, NoteError> {
        let note = open_note(note, verifiers)?;
        Ok(OpenedCheckpoint {
            checkpoint: Self::from_text(&note.text)?,
            note,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published example key and note of the Go reference implementation
    // (golang.org/x/mod/sumdb/note).
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn reference_note() -> String {
        format!("{TEXT}\n{SIG}")
    }

    #[test]
    fn reference_keys_round_trip() {
        let v = Verifier::from_vkey(VKEY).unwrap();
        assert_eq!(v.name(), "PeterNeumann");
        assert_eq!(v.key_id(), 0xc74f20a3);
        assert_eq!(v.to_string(), VKEY);
        let s = Signer::from_skey(SKEY).unwrap();
        assert_eq!(s.to_skey(), SKEY);
        assert_eq!(s.verifier(), v);
        assert!(
            !format!("{s:?}").contains("AYEK"),
            "Debug must not show the secret"
        );
    }

    #[test]
    fn signing_reproduces_the_reference_note() {
        let s = Signer::from_skey(SKEY).unwrap();
        assert_eq!(sign_note(TEXT, &[&s]).unwrap(), reference_note());
    }

    #[test]
    fn reference_note_opens_and_tampering_is_rejected() {
        let v = Verifier::from_vkey(VKEY).unwrap();
        let opened = open_note(&reference_note(), std::slice::from_ref(&v)).unwrap();
        assert_eq!(opened.text, TEXT);
        assert_eq!(
            opened.verified_by,
            vec![("PeterNeumann".to_owned(), 0xc74f20a3)]
        );

        let altered = reference_note().replace("cryptography", "cryptographY");
        assert!(matches!(
            open_note(&altered, std::slice::from_ref(&v)),
            Err(NoteError::BadSignature { .. })
        ));
    }

    #[test]
    fn unknown_keys_are_ignored_but_one_trusted_key_is_required() {
        let v = Verifier::from_vkey(VKEY).unwrap();
        let other = Signer::generate("other.example/log").unwrap();
        let with_other = format!("{}{}", reference_note(), other.signature_line(TEXT));
        let opened = open_note(&with_other, std::slice::from_ref(&v)).unwrap();
        assert_eq!(opened.unknown_signatures, 1);

        let only_other = sign_note(TEXT, &[&other]).unwrap();
        assert!(matches!(
            open_note(&only_other, std::slice::from_ref(&v)),
            Err(NoteError::NoTrustedSignature { .. })
        ));
        // Same name, different key (so a different id): unknown, not a failure.
        let impostor = Signer::generate("PeterNeumann").unwrap();
        let both = format!("{}{}", reference_note(), impostor.signature_line(TEXT));
        assert!(open_note(&both, std::slice::from_ref(&v)).is_ok());
        assert!(matches!(
            open_note(&sign_note(TEXT, &[&impostor]).unwrap(), &[v]),
            Err(NoteError::NoTrustedSignature { .. })
        ));
    }

    #[test]
    fn malformed_notes_are_rejected() {
        let v = [Verifier::from_vkey(VKEY).unwrap()];
        let note = reference_note();
        let cases = [
            String::new(),
            TEXT.to_owned(),
            format!("{TEXT}\n"),
            note.trim_end().to_owned(),
            note.replace('\u{2014}', "-"),
            note.replace("PeterNeumann x08", "PeterNeumann  x08"),
            note.replace("x08go", "x08g!"),
            format!("{TEXT}\n\u{2014} PeterNeumann AAAA\n"),
            note.replace("your problem,", "your\tproblem,"),
            format!("{note}\u{2014} bad+name AAAAAAAA\n"),
        ];
        for (i, case) in cases.iter().enumerate() {
            assert!(
                matches!(open_note(case, &v), Err(NoteError::Malformed(_))),
                "case {i} should be malformed: {:?}",
                open_note(case, &v)
            );
        }
        let many: String = std::iter::repeat_n(SIG, MAX_SIGNATURES + 1).collect();
        assert!(matches!(
            open_note(&format!("{TEXT}\n{many}"), &v),
            Err(NoteError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        assert!(Verifier::from_vkey(&VKEY.replace("c74f20a3", "c74f20a4")).is_err());
        assert!(Verifier::from_vkey(&VKEY.replace("+ARpc", "+AhpC")).is_err());
        assert!(Verifier::from_vkey("PeterNeumann+c74f20a3").is_err());
        assert!(Verifier::from_vkey(&VKEY[..VKEY.len() - 4]).is_err());
        assert!(Signer::from_skey(VKEY).is_err());
        assert!(Signer::from_skey(&SKEY.replace("c74f20a3", "00000000")).is_err());
        let err = Signer::from_skey(&SKEY[..SKEY.len() - 2])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("AYEK"), "errors must not echo secrets: {err}");
        assert!(Signer::generate("has space").is_err());
        assert!(Signer::generate("has+plus").is_err());
        assert!(Signer::generate("").is_err());
    }

    #[test]
    fn keys_load_from_files_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("# trusted\n{VKEY}\n\n")).unwrap();
        assert_eq!(Verifier::from_file(&path).unwrap().len(), 1);
        std::fs::write(&path, format!("{SKEY}\n")).unwrap();
        assert_eq!(Signer::from_file(&path).unwrap().name(), "PeterNeumann");
        assert!(matches!(
            Signer::from_file(dir.path().join("missing")),
            Err(KeyError::Io { .. })
        ));
        assert!(matches!(
            Signer::from_env("APPROVALS_AUDIT_TEST_SURELY_UNSET"),
            Err(KeyError::MissingEnv(_))
        ));
        let two = format!("{VKEY},{}", Signer::generate("b").unwrap().verifier());
        assert_eq!(
            Verifier::parse_list(&two.replace(',', "\n")).unwrap().len(),
            2
        );
    }

    #[test]
    fn checkpoint_round_trip_and_validation() {
        let signer = Signer::generate("log.example/a").unwrap();
        let mut cp = Checkpoint::new("log.example/a", 20852163, [7u8; 32]);
        cp.extensions.push("ext line".into());
        let note = cp.sign(&[&signer]).unwrap();
        let opened = Checkpoint::open(&note, &[signer.verifier()]).unwrap();
        assert_eq!(opened.checkpoint, cp);

        let root = BASE64.encode([7u8; 32]);
        for bad in [
            format!("o\n01\n{root}\n"),
            format!("o\n\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("\n1\n{root}\n"),
            "o\n1\nAAAA\n".to_owned(),
            format!("o\n1\n{root}"),
            "o\n1\n".to_owned(),
            format!("o\n1\n{root}\n\n"),
        ] {
            assert!(Checkpoint::from_text(&bad).is_err(), "{bad:?}");
        }
        assert!(Checkpoint::from_text(&format!("o\n0\n{root}\n")).is_ok());
    }
}

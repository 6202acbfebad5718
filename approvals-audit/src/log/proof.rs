//! Exportable proofs: one event is in the log, one checkpoint extends another.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::LogError;
use super::format::{Line, ReadLine, parse_line, read_line};
use crate::hex::{parse_hex, to_hex};
use crate::merkle::{self, Hash, leaf_hash};
use crate::note::{Checkpoint, OpenedCheckpoint, Verifier, unverified_text};

/// Proof that one event is entry `seq` of the log committed to by a signed checkpoint.
///
/// It is self-contained: whoever trusts the log's key can check it without the log.
/// Its JSON form (see [`Self::to_json`]) is
/// `{"seq":N,"event":{...},"checkpoint":"<signed note>","proof":["<hex>",...]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The entry's position in the log.
    pub seq: u64,
    /// The event, exactly as stored in the log (canonical JSON).
    pub event: String,
    /// The signed checkpoint the proof leads to.
    pub checkpoint: String,
    /// The RFC 6962 audit path from the entry's leaf to the checkpoint's root.
    pub path: Vec<Hash>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionJson {
    seq: u64,
    event: Box<RawValue>,
    checkpoint: String,
    proof: Vec<String>,
}

fn parse_path(hashes: &[String]) -> Result<Vec<Hash>, LogError> {
    hashes
        .iter()
        .map(|h| {
            parse_hex(h)
                .ok_or_else(|| LogError::Invalid(format!("proof hash {h:?} is not 64 hex digits")))
        })
        .collect()
}

impl InclusionProof {
    /// Checks the proof: the checkpoint is signed by a trusted key, and the event is leaf
    /// `seq` of the tree it commits to. Returns the checkpoint (check its origin).
    pub fn verify(&self, verifiers: &[Verifier]) -> Result<OpenedCheckpoint, LogError> {
        let opened = Checkpoint::open(&self.checkpoint, verifiers)?;
        let cp = &opened.checkpoint;
        let leaf = leaf_hash(self.event.as_bytes());
        merkle::verify_inclusion(&leaf, self.seq, cp.size, &self.path, &cp.root)?;
        Ok(opened)
    }

    /// The event as a JSON value.
    pub fn event_value(&self) -> Result<serde_json::Value, LogError> {
        Ok(serde_json::from_str(&self.event)?)
    }

    /// The proof as one JSON object.
    pub fn to_json(&self) -> Result<String, LogError> {
        let json = InclusionJson {
            seq: self.seq,
            event: RawValue::from_string(self.event.clone())?,
            checkpoint: self.checkpoint.clone(),
            proof: self.path.iter().map(to_hex).collect(),
        };
        Ok(serde_json::to_string(&json)?)
    }

    /// Parses the JSON form. The event bytes are kept exactly as they appear.
    pub fn from_json(json: &str) -> Result<Self, LogError> {
        let parsed: InclusionJson = serde_json::from_str(json)?;
        Ok(Self {
            seq: parsed.seq,
            event: parsed.event.get().to_owned(),
            checkpoint: parsed.checkpoint,
            path: parse_path(&parsed.proof)?,
        })
    }
}

/// Proof that the log at one signed checkpoint extends the log at an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// The earlier signed checkpoint.
    pub old_checkpoint: String,
    /// The later signed checkpoint.
    pub new_checkpoint: String,
    /// The RFC 6962 consistency proof, hex-encoded.
    pub proof: Vec<String>,
}

impl ConsistencyProof {
    /// Checks both signatures, that both checkpoints name the same log, and that the new
    /// tree extends the old one. Returns `(old, new)`.
    pub fn verify(&self, verifiers: &[Verifier]) -> Result<(Checkpoint, Checkpoint), LogError> {
        let old = Checkpoint::open(&self.old_checkpoint, verifiers)?.checkpoint;
        let new = Checkpoint::open(&self.new_checkpoint, verifiers)?.checkpoint;
        if old.origin != new.origin {
            return Err(LogError::Invalid(format!(
                "the checkpoints are for different logs: {:?} and {:?}",
                old.origin, new.origin
            )));
        }
        let path = parse_path(&self.proof)?;
        merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &path)?;
        Ok((old, new))
    }
}

/// What a proof needs from the log: leaf hashes, checkpoint notes, one event.
struct Collected {
    leaves: Vec<Hash>,
    /// (size, signed note), in file order.
    checkpoints: Vec<(u64, String)>,
    event: Option<String>,
}

fn collect(path: &Path, want_seq: Option<u64>) -> Result<Collected, LogError> {
    let file = File::open(path).map_err(LogError::io(format!("opening {}", path.display())))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut out = Collected {
        leaves: Vec::new(),
        checkpoints: Vec::new(),
        event: None,
    };
    let mut buf = Vec::with_capacity(1024);
    let mut line_no = 0u64;
    loop {
        let read = read_line(&mut reader, &mut buf)
            .map_err(LogError::io(format!("reading {}", path.display())))?;
        line_no += 1;
        match read {
            // An incomplete last line holds nothing that was committed.
            ReadLine::Eof | ReadLine::Incomplete => return Ok(out),
            ReadLine::Complete(_) => {}
            ReadLine::TooLong => {
                return Err(LogError::Invalid(format!(
                    "{} line {line_no}: line too long; verify the log",
                    path.display()
                )));
            }
        }
        let line = &buf[..];
        let bad =
            |why: String| LogError::Invalid(format!("{} line {line_no}: {why}", path.display()));
        match parse_line(line).map_err(bad)? {
            Line::Entry { seq, event, .. } => {
                let index = out.leaves.len() as u64;
                if seq != index {
                    return Err(bad(format!(
                        "entry has seq {seq} at position {index}; verify the log"
                    )));
                }
                if want_seq == Some(seq) {
                    let text = std::str::from_utf8(event).map_err(|e| bad(e.to_string()))?;
                    out.event = Some(text.to_owned());
                }
                out.leaves.push(leaf_hash(event));
            }
            Line::Checkpoint(note) => {
                let cp = unverified_text(&note)
                    .and_then(Checkpoint::from_text)
                    .map_err(|e| bad(e.to_string()))?;
                out.checkpoints.push((cp.size, note));
            }
        }
    }
}

fn find_checkpoint(c: &Collected, size: u64) -> Result<String, LogError> {
    c.checkpoints
        .iter()
        .rev()
        .find(|(s, _)| *s == size)
        .map(|(_, note)| note.clone())
        .ok_or_else(|| LogError::Invalid(format!("the log has no checkpoint of size {size}")))
}

fn leaves_up_to(c: &Collected, size: u64) -> Result<&[Hash], LogError> {
    c.leaves.get(..size as usize).ok_or_else(|| {
        LogError::Invalid(format!(
            "a checkpoint claims size {size} but the log holds {} entries; verify the log",
            c.leaves.len()
        ))
    })
}

/// Builds the proof that entry `seq` of the log at `path` is in the tree committed to by the
/// checkpoint of size `checkpoint_size` (by default the log's last checkpoint).
///
/// The proof is built from the file as it is; [`InclusionProof::verify`] is what checks it.
pub fn prove_inclusion(
    path: impl AsRef<Path>,
    seq: u64,
    checkpoint_size: Option<u64>,
) -> Result<InclusionProof, LogError> {
    let c = collect(path.as_ref(), Some(seq))?;
    let size = match checkpoint_size {
        Some(size) => size,
        None => c
            .checkpoints
            .last()
            .map(|(s, _)| *s)
            .ok_or_else(|| LogError::Invalid("the log has no checkpoint yet".into()))?,
    };
    if seq >= size {
        return Err(LogError::Invalid(format!(
            "entry {seq} is not covered by a checkpoint of size {size}"
        )));
    }
    let checkpoint = find_checkpoint(&c, size)?;
    let leaves = leaves_up_to(&c, size)?;
    let path = merkle::inclusion_proof(leaves, seq)?;
    let event = c
        .event
        .ok_or_else(|| LogError::Invalid(format!("the log has no entry {seq}")))?;
    Ok(InclusionProof {
        seq,
        event,
        checkpoint,
        path,
    })
}

/// Builds the proof that the log's checkpoint of size `new_size` extends its checkpoint of
/// size `old_size`.
pub fn prove_consistency(
    path: impl AsRef<Path>,
    old_size: u64,
    new_size: u64,
) -> Result<ConsistencyProof, LogError> {
    let c = collect(path.as_ref(), None)?;
    let old_checkpoint = find_checkpoint(&c, old_size)?;
    let new_checkpoint = find_checkpoint(&c, new_size)?;
    let proof = merkle::consistency_proof(leaves_up_to(&c, new_size)?, old_size)?;
    Ok(ConsistencyProof {
        old_checkpoint,
        new_checkpoint,
        proof: proof.iter().map(to_hex).collect(),
    })
}

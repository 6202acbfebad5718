//! Identity normalisation: when two spellings are one identity, and which spellings are refused.
//!
//! Identities (principal ids, group names, policy approver lists, channel ids) arrive from
//! configuration files, directories and chat platforms, so one person can be spelled many
//! ways: `Dana@Example.COM`, `ｄａｎａ@example.com`, `dana@example.com.`, or with an invisible
//! zero-width space, a bidi override or a Cyrillic `а` that looks like a Latin `a`. This module
//! is the one place that decides what such spellings mean, with maintained Unicode libraries:
//!
//! - [`normalize`] (and [`normalize_group`] for group names) is used where an identity
//!   *enters*: it returns the canonical form, or refuses the spelling with an
//!   [`InvalidIdentity`] that names the offending code point and says what to do. It applies
//!   PRECIS `UsernameCaseMapped` (RFC 8265: width mapping, case mapping, NFC, the
//!   `IdentifierClass` of RFC 8264 and the bidi rule) through `precis-profiles`, then Unicode
//!   full case folding (`caseless`, so `ς`/`σ` and `ß`/`ss` compare equal), and refuses a
//!   label that mixes scripts (UTS #39 mixed-script detection, `unicode-security`).
//! - [`canonical_key`] and [`same_canonical`] say whether two spellings are *the same
//!   identity*. They are total (never fail: invisible characters are dropped, NFKC and case
//!   folding applied), and equal to [`normalize`]'s result for every accepted spelling. Use
//!   them where a match *grants* something: a policy's `users` and `groups`, group membership,
//!   an identity resolver's lookup.
//! - [`identity_key`] and [`same_id`] say whether two spellings *could be the same person*:
//!   the canonical key reduced to its UTS #39 confusable skeleton, so `dаna` (Cyrillic `а`),
//!   `dana` and `dana` with inner spaces share a key, and so do `bill` and `bi11`. Use them
//!   where a match *refuses* something: self-approval, one person counting once toward a
//!   quorum, "already reviewed", listing an initiator's requests. Two different people may
//!   share a key; that costs at most a refused review, never an accepted one. Never use it to
//!   grant: a policy listing `bill@example.com` must not authorize `bi11@example.com`.
//!
//! Decisions:
//!
//! | spelling | result |
//! | --- | --- |
//! | surrounding whitespace (also NBSP, ideographic space) | trimmed |
//! | trailing dots (`dana@example.com.`: the DNS root) | removed |
//! | upper case, ASCII or not (`DANA`, `É`, `Σ`), final sigma, `ß` | folded to lower case (`ß` to `ss`) |
//! | fullwidth and halfwidth forms (`ｄａｎａ`, `＠`) | mapped to the ordinary character |
//! | NFD and NFC (`e` + U+0301, `é`) | the same |
//! | invisible or default-ignorable characters (U+200B..U+200D, U+2060, U+FEFF, U+00AD, U+180E, U+034F, tag characters, variation selectors, Hangul fillers) | refused ([`InvalidIdentity::Invisible`]) |
//! | bidi controls (U+202A..U+202E, U+2066..U+2069, U+200E, U+200F, U+061C) | refused ([`InvalidIdentity::BidiControl`]) |
//! | spaces inside an id (also NBSP, U+3000, line separators) | refused ([`InvalidIdentity::Whitespace`]); group names may have single spaces between words |
//! | other compatibility forms (`ﬁ`, `𝐝𝐚𝐧𝐚`, Kelvin sign U+212A, circled and superscript letters), symbols, unassigned code points | refused by PRECIS ([`InvalidIdentity::Disallowed`]) |
//! | a label mixing scripts (`dаna` with a Cyrillic `а`, `ѕam`) | refused ([`InvalidIdentity::MixedScript`]) |
//! | one script per label (`андрей@пример.рф`, `андрей@example.com`, `山田@example.jp`) | accepted |
//!
//! Scripts are checked per *label*, the parts of an id between `@` and `.` (and between spaces
//! of a group name), not over the whole id: `андрей@example.com` (a Cyrillic name at a Latin
//! domain) is a real address, while a label like `dаna` that mixes Latin and Cyrillic letters
//! only serves to imitate. A label may combine Latin with Han, Hiragana, Katakana, Hangul or
//! Bopomofo (UTS #39 "highly restrictive"), never with Cyrillic or Greek. PRECIS is applied
//! per label too, so its bidi rule (RFC 5893) holds per label as in IDNA: `מיכאל@example.com`
//! is accepted, a label mixing Hebrew and Latin letters is not.
//!
//! Not covered: whole-script confusables (an all-Cyrillic label such as `аре` that reads as
//! Latin `ape`) are accepted at entry, since the label is legitimately Cyrillic; they share an
//! [`identity_key`] with the Latin spelling, so they cannot approve their own requests or
//! count twice, and they are never authorized as the Latin identity. Domains are not decoded
//! from IDNA (`xn--`) form: `bücher.de` and `xn--bcher-kva.de` are different spellings.
//! PRECIS tables follow the Unicode version of the IANA PRECIS registry, so code points
//! assigned after it are refused as unassigned.
//!
//! ```
//! use approvals_core::identity::{normalize, same_canonical, same_id, InvalidIdentity};
//!
//! assert_eq!(normalize(" Dana@Example.COM. ").as_deref(), Ok("dana@example.com"));
//! assert_eq!(normalize("ｄａｎａ＠example.com").as_deref(), Ok("dana@example.com"));
//! assert!(matches!(normalize("da\u{200B}na@example.com"), Err(InvalidIdentity::Invisible { .. })));
//! assert!(matches!(normalize("d\u{0430}na@example.com"), Err(InvalidIdentity::MixedScript { .. })));
//! assert_eq!(normalize("андрей@пример.рф").as_deref(), Ok("андрей@пример.рф"));
//!
//! // Could be the same person: refuse self-approval, count once.
//! assert!(same_id("dana@example.com", "d\u{0430}na@example.com"));
//! // Is the same identity: may be authorized as listed.
//! assert!(same_canonical("sam@example.com", "SAM@ＥＸＡＭＰＬＥ.com"));
//! assert!(!same_canonical("bill@example.com", "bi11@example.com"));
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use precis_core::profile::PrecisFastInvocation;
use precis_core::{DerivedPropertyValue, Error as PrecisError};
use precis_profiles::UsernameCaseMapped;
use unicode_normalization::UnicodeNormalization;
use unicode_script::{Script, UnicodeScript};
use unicode_security::mixed_script::AugmentedScriptSet;

/// The longest identity accepted, in bytes of UTF-8 (an email address has at most 254).
pub const MAX_ID_BYTES: usize = 512;

/// What separates the labels of an identity: `@`, `.` (also in their fullwidth forms, which
/// PRECIS maps to them) and, in group names, the space.
const LABEL_SEPARATORS: [char; 5] = ['@', '.', ' ', '\u{FF20}', '\u{FF0E}'];

/// How many characters of a refused identity an error repeats.
const SHOWN_CHARS: usize = 128;

/// An identity was refused where it entered: it cannot be compared safely.
///
/// Every variant that names a character gives its code point (`U+200B`) and, where it is in
/// the identity as written, its 1-based position. `id` is the refused identity as text that
/// is safe to log and show: quoted, with invisible, control, bidi and whitespace characters
/// other than the ordinary space written as `\u{XXXX}`, and at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidIdentity {
    /// Nothing is left once whitespace and trailing dots are removed.
    #[error(
        "an identity cannot be empty (or only whitespace and dots); use the person's directory id or email address"
    )]
    Empty,
    /// Longer than [`MAX_ID_BYTES`].
    #[error("identity {id} is {bytes} bytes long; identities are at most {MAX_ID_BYTES} bytes")]
    TooLong {
        /// The identity, shown safely.
        id: String,
        /// Its length in bytes.
        bytes: usize,
    },
    /// An invisible (default-ignorable) character, such as a zero-width space or joiner, a
    /// byte order mark, a soft hyphen, a variation selector or a tag character.
    #[error(
        "identity {id} contains the invisible character {} at character {position}; remove it: an identity must be spelled exactly as it is shown",
        Cp(*code_point)
    )]
    Invisible {
        /// The identity, shown safely.
        id: String,
        /// The character.
        code_point: char,
        /// Its 1-based position in the identity as written.
        position: usize,
    },
    /// A bidirectional control (U+202A..U+202E, U+2066..U+2069, U+200E, U+200F, U+061C),
    /// which can make an identity display as another one.
    #[error(
        "identity {id} contains the bidirectional control {} at character {position}, which can make it display as another identity; remove it",
        Cp(*code_point)
    )]
    BidiControl {
        /// The identity, shown safely.
        id: String,
        /// The character.
        code_point: char,
        /// Its 1-based position in the identity as written.
        position: usize,
    },
    /// A control character (C0, C1, DEL).
    #[error(
        "identity {id} contains the control character {} at character {position}; remove it",
        Cp(*code_point)
    )]
    Control {
        /// The identity, shown safely.
        id: String,
        /// The character.
        code_point: char,
        /// Its 1-based position in the identity as written.
        position: usize,
    },
    /// Whitespace inside the identity (surrounding whitespace is trimmed; group names may
    /// have single ordinary spaces between words).
    #[error(
        "identity {id} contains the space {} at character {position}; identities have no spaces inside (group names may separate words with single ordinary spaces)",
        Cp(*code_point)
    )]
    Whitespace {
        /// The identity, shown safely.
        id: String,
        /// The character.
        code_point: char,
        /// Its 1-based position in the identity as written.
        position: usize,
    },
    /// A label (the part between `@` and `.`, or between spaces of a group name) mixes
    /// scripts, for example a Cyrillic `а` among Latin letters.
    #[error(
        "identity {id} mixes scripts in {label}: {} ({}) does not belong with the letters before it; write each part between @ and . in one script so it cannot imitate another identity",
        Cp(*code_point),
        script_name(*code_point)
    )]
    MixedScript {
        /// The identity, shown safely.
        id: String,
        /// The label, normalised and shown safely.
        label: String,
        /// The first character whose script does not fit the label.
        code_point: char,
    },
    /// A character that PRECIS identifiers (RFC 8264 `IdentifierClass`) do not allow: a
    /// symbol, punctuation outside ASCII, a compatibility form (ligature, mathematical or
    /// circled letter, Kelvin sign, superscript), or an unassigned code point.
    #[error(
        "identity {id} contains {}, which identities may not use ({reason}); type the plain letters and digits instead",
        Cp(*code_point)
    )]
    Disallowed {
        /// The identity, shown safely.
        id: String,
        /// The character.
        code_point: char,
        /// Why, in words.
        reason: &'static str,
    },
    /// The identity breaks a PRECIS rule that is not about one character, such as the bidi
    /// rule for identities with right-to-left letters (RFC 5893).
    #[error("identity {id} is not a valid identifier: {reason}")]
    Malformed {
        /// The identity, shown safely.
        id: String,
        /// Why, in words.
        reason: &'static str,
    },
}

impl InvalidIdentity {
    /// The character that made it invalid, when one did.
    pub fn code_point(&self) -> Option<char> {
        match self {
            InvalidIdentity::Invisible { code_point, .. }
            | InvalidIdentity::BidiControl { code_point, .. }
            | InvalidIdentity::Control { code_point, .. }
            | InvalidIdentity::Whitespace { code_point, .. }
            | InvalidIdentity::MixedScript { code_point, .. }
            | InvalidIdentity::Disallowed { code_point, .. } => Some(*code_point),
            InvalidIdentity::Empty
            | InvalidIdentity::TooLong { .. }
            | InvalidIdentity::Malformed { .. } => None,
        }
    }
}

/// A code point written `U+XXXX`.
struct Cp(char);

impl fmt::Display for Cp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U+{:04X}", self.0 as u32)
    }
}

fn script_name(c: char) -> &'static str {
    c.script().full_name()
}

/// The canonical form of an identity, or why it is refused. See the [module docs](self).
///
/// The result equals [`canonical_key`] of the input, so `normalize(a) == normalize(b)` exactly
/// when both are accepted and [`same_canonical`]`(a, b)`.
///
/// ```
/// use approvals_core::identity::normalize;
/// assert_eq!(normalize("ÉLISE@Example.com").as_deref(), Ok("élise@example.com"));
/// let refused = normalize("\u{202E}dana@example.com").unwrap_err();
/// assert!(refused.to_string().contains("U+202E"), "{refused}");
/// ```
pub fn normalize(id: &str) -> Result<String, InvalidIdentity> {
    normalize_as(id, Kind::Id)
}

/// The canonical form of a group name, or why it is refused: the rules of [`normalize`],
/// except that words may be separated by single ordinary spaces (RFC 8265 allows a username
/// of space-separated parts), each part checked on its own.
///
/// ```
/// use approvals_core::identity::normalize_group;
/// assert_eq!(normalize_group(" Data Owners ").as_deref(), Ok("data owners"));
/// assert!(normalize_group("data\u{00A0}owners").is_err());
/// ```
pub fn normalize_group(name: &str) -> Result<String, InvalidIdentity> {
    normalize_as(name, Kind::Group)
}

/// Whether `id` would be accepted by [`normalize`].
pub fn validate(id: &str) -> Result<(), InvalidIdentity> {
    normalize(id).map(drop)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Id,
    Group,
}

fn normalize_as(input: &str, kind: Kind) -> Result<String, InvalidIdentity> {
    if input.len() > MAX_ID_BYTES {
        return Err(InvalidIdentity::TooLong {
            id: shown(input),
            bytes: input.len(),
        });
    }
    let lead = input.chars().take_while(|c| c.is_whitespace()).count();
    let trimmed = input.trim();
    if trimmed.trim_end_matches('.').trim_end().is_empty() {
        return Err(InvalidIdentity::Empty);
    }
    // Characters that hide or reorder text are named precisely (PRECIS refuses them too,
    // with a less helpful reason).
    for (i, c) in trimmed.chars().enumerate() {
        if let Some(refusal) = refusal_for(c, kind) {
            return Err(refusal(shown(input), c, lead + i + 1));
        }
    }
    // PRECIS per label, so that its bidi rule holds per label as in IDNA: a Hebrew local
    // part at a Latin domain is fine, a label mixing directions is not.
    for label in trimmed.split(LABEL_SEPARATORS).filter(|l| !l.is_empty()) {
        UsernameCaseMapped::enforce(label).map_err(|e| precis_refusal(input, e))?;
    }
    let canonical = canonical_key(trimmed);
    if canonical.is_empty() {
        return Err(InvalidIdentity::Empty);
    }
    for label in canonical.split(LABEL_SEPARATORS) {
        if let Some(code_point) = first_mixed_script_char(label) {
            return Err(InvalidIdentity::MixedScript {
                id: shown(input),
                label: shown(label),
                code_point,
            });
        }
    }
    Ok(canonical)
}

type Refusal = fn(String, char, usize) -> InvalidIdentity;

/// The refusal for a character that hides or reorders text, if `c` is one.
fn refusal_for(c: char, kind: Kind) -> Option<Refusal> {
    let refusal: Refusal = if is_bidi_control(c) {
        |id, code_point, position| InvalidIdentity::BidiControl {
            id,
            code_point,
            position,
        }
    } else if is_default_ignorable(c) {
        |id, code_point, position| InvalidIdentity::Invisible {
            id,
            code_point,
            position,
        }
    } else if c.is_whitespace() && !(kind == Kind::Group && c == ' ') {
        |id, code_point, position| InvalidIdentity::Whitespace {
            id,
            code_point,
            position,
        }
    } else if c.is_control() {
        |id, code_point, position| InvalidIdentity::Control {
            id,
            code_point,
            position,
        }
    } else {
        return None;
    };
    Some(refusal)
}

fn precis_refusal(input: &str, error: PrecisError) -> InvalidIdentity {
    let id = shown(input);
    match error {
        PrecisError::BadCodepoint(info) => match char::from_u32(info.cp) {
            Some(code_point) => InvalidIdentity::Disallowed {
                id,
                code_point,
                reason: match info.property {
                    DerivedPropertyValue::SpecClassDis => {
                        "PRECIS identifiers allow letters, digits and ASCII punctuation, not symbols, other punctuation or compatibility forms such as ligatures, mathematical, circled or superscript letters and the Kelvin sign"
                    }
                    DerivedPropertyValue::Unassigned => {
                        "it is unassigned in the Unicode version of the PRECIS tables"
                    }
                    DerivedPropertyValue::ContextJ | DerivedPropertyValue::ContextO => {
                        "it is allowed only next to particular letters (RFC 5892 contextual rules), and not here"
                    }
                    _ => "PRECIS disallows it in any identifier",
                },
            },
            None => InvalidIdentity::Malformed {
                id,
                reason: "it contains a code point that is not a character",
            },
        },
        PrecisError::Invalid => InvalidIdentity::Malformed {
            id,
            reason: "an identifier with right-to-left letters must follow the bidi rule of RFC 5893 (start with a right-to-left letter and not mix directions)",
        },
        PrecisError::Unexpected(_) => InvalidIdentity::Malformed {
            id,
            reason: "PRECIS could not check it (a character needs a context rule that does not apply here)",
        },
    }
}

/// The first character of `label` whose script does not fit the characters before it, unless
/// the mix is Latin with Han, Hiragana, Katakana, Hangul or Bopomofo (UTS #39 "highly
/// restrictive"). Common and inherited characters (digits, `-`, `_`, combining marks) fit
/// every script.
fn first_mixed_script_char(label: &str) -> Option<char> {
    let mut all = AugmentedScriptSet::default();
    let mut without_latin = AugmentedScriptSet::default();
    for c in label.chars() {
        let set = AugmentedScriptSet::for_char(c);
        all.intersect_with(set);
        if !set.base.contains_script(Script::Latin) {
            without_latin.intersect_with(set);
        }
        if all.is_empty() && !(without_latin.jpan || without_latin.kore || without_latin.hanb) {
            return Some(c);
        }
    }
    None
}

/// The canonical form of any spelling, accepted or not: default-ignorable and control
/// characters dropped, NFKC, full case folding, NFKC again, whitespace trimmed and inner runs
/// made one space, trailing dots removed. Equals [`normalize`]'s result for every spelling it
/// accepts. Never fails.
///
/// ```
/// use approvals_core::identity::canonical_key;
/// assert_eq!(canonical_key("\u{FEFF}𝐃𝐚𝐧𝐚@Example.com."), "dana@example.com");
/// assert_eq!(canonical_key("ΣΊΣΥΦΟΣ"), canonical_key("σίσυφος"));
/// ```
pub fn canonical_key(id: &str) -> String {
    if id.is_ascii() {
        // The same steps as below: ASCII has no default-ignorable characters, NFKC leaves it
        // unchanged and its case folding is lowercasing.
        let visible: String = id
            .chars()
            .filter(|&c| !is_invisible_or_control(c))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        return tidy(&visible);
    }
    let visible: String = id
        .chars()
        .filter(|&c| !is_invisible_or_control(c))
        .collect();
    let composed: String = visible.nfkc().collect();
    let folded: String = caseless::default_case_fold_str(&composed)
        .nfkc()
        .filter(|&c| !is_invisible_or_control(c))
        .collect();
    tidy(&folded)
}

/// Whether `a` and `b` are the same identity: equal [`canonical_key`]s. Use it where a match
/// grants something (allow lists, groups).
pub fn same_canonical(a: &str, b: &str) -> bool {
    a == b || canonical_key(a) == canonical_key(b)
}

/// The comparison key for "could be the same person": the [`canonical_key`] without any
/// whitespace, reduced to its UTS #39 confusable skeleton (case folded again, since some
/// prototypes are capitals). Never fails, and `identity_key(identity_key(x)) ==
/// identity_key(x)`.
///
/// The key is for comparing, not for showing: `example.com` becomes `exarnple.corn`.
///
/// ```
/// use approvals_core::identity::identity_key;
/// assert_eq!(identity_key("d\u{0430}na@example.com"), identity_key("DANA@example.com"));
/// assert_eq!(identity_key("da\u{200D}na@ex\u{00AD}ample.com"), identity_key("dana@example.com"));
/// ```
pub fn identity_key(id: &str) -> String {
    if id.len() > MEMO_MAX_ID_BYTES {
        return skeleton_key(id);
    }
    thread_local! {
        // The keys this thread computed last. A decision compares its reviewer with the
        // initiator, the on-behalf-of principal and every earlier reviewer, and each key is a
        // few microseconds of normalisation and confusable mapping; the same few ids come up
        // again and again. The function is pure, so a memo cannot change an answer.
        static MEMO: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    }
    let memoized = MEMO.try_with(|memo| {
        let mut memo = memo.try_borrow_mut().ok()?;
        if let Some(key) = memo.get(id) {
            return Some(key.clone());
        }
        let key = skeleton_key(id);
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(id.to_owned(), key.clone());
        Some(key)
    });
    match memoized {
        Ok(Some(key)) => key,
        // The thread is being torn down, or (not possible today) this thread is already
        // inside the memo: compute without it.
        _ => skeleton_key(id),
    }
}

/// Ids longer than this are not memoized (an identifier is far shorter; a long one is
/// probably an attack and should not pin memory).
const MEMO_MAX_ID_BYTES: usize = 256;
/// Entries per thread before the memo starts over: at most about 0.6 MB per thread.
const MEMO_ENTRIES: usize = 1024;

/// [`identity_key`] without the memo.
fn skeleton_key(id: &str) -> String {
    let mut key = key_once(id);
    // One pass is stable for almost every string; a few prototypes need a second.
    for _ in 0..4 {
        let next = key_once(&key);
        if next == key {
            break;
        }
        key = next;
    }
    key
}

fn key_once(id: &str) -> String {
    let joined: String = canonical_key(id)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let skeleton: String = unicode_security::skeleton(&joined).collect();
    let folded = caseless::default_case_fold_str(&skeleton);
    let mut key: String = unicode_security::skeleton(&folded).collect();
    let kept = key.trim_end_matches('.').len();
    key.truncate(kept);
    key
}

/// Whether `a` and `b` could be the same person: equal [`identity_key`]s. Use it where a
/// match refuses something (self-approval, one person counting once).
pub fn same_id(a: &str, b: &str) -> bool {
    a == b || identity_key(a) == identity_key(b)
}

/// Trims, makes inner whitespace runs one space, and removes trailing dots.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    loop {
        let kept = out.trim_end_matches('.').trim_end().len();
        if kept == out.len() {
            return out;
        }
        out.truncate(kept);
    }
}

fn is_invisible_or_control(c: char) -> bool {
    is_default_ignorable(c) || (c.is_control() && !c.is_whitespace())
}

/// Whether `c` is a default-ignorable code point (Unicode `Default_Ignorable_Code_Point`):
/// the characters [`text::is_invisible_format`](crate::text::is_invisible_format) neutralises
/// on every surface, but for the three interlinear annotation characters, which are not
/// default-ignorable. One set for identities and for what reviewers see; a test checks it
/// against `unicode-security`'s table on every code point.
pub fn is_default_ignorable(c: char) -> bool {
    crate::text::is_invisible_format(c) && !('\u{FFF9}'..='\u{FFFB}').contains(&c)
}

/// Whether `c` is a bidi control (Unicode `Bidi_Control`).
///
/// Written out rather than looked up: the property has had exactly these 12 code points since
/// Unicode 6.3, no maintained crate exports it, and the answer only chooses which error names
/// the character (all 12 are also default-ignorable, and PRECIS refuses them either way).
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// `s` quoted, with characters that hide or reorder text escaped, and bounded.
fn shown(s: &str) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(s.len().min(4 * SHOWN_CHARS) + 2);
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push('…');
            break;
        }
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control()
                || (c.is_whitespace() && c != ' ')
                || is_bidi_control(c)
                || is_default_ignorable(c) =>
            {
                let _ = write!(out, "\\u{{{:04X}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;

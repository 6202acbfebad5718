//! Spellings of one person: which normalise together, which are refused, which stay apart.

use proptest::prelude::*;

use super::*;

const DANA: &str = "dana@example.com";

/// What `normalize` must do with a spelling of `dana@example.com`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Accepted as `dana@example.com`.
    Same,
    Invisible,
    Bidi,
    Space,
    Control,
    MixedScript,
    Disallowed,
}

/// Every spelling of `dana@example.com` we know of: all share its identity key.
fn spellings() -> Vec<(String, Expect)> {
    use Expect::*;
    let mut all: Vec<(String, Expect)> = vec![
        (DANA.into(), Same),
        ("Dana@Example.COM".into(), Same),
        ("DANA@EXAMPLE.COM".into(), Same),
        (" dana@example.com ".into(), Same),
        ("\tdana@example.com\n".into(), Same),
        ("\u{00A0}dana@example.com\u{3000}".into(), Same),
        ("dana@example.com.".into(), Same),
        ("dana@example.com..".into(), Same),
        ("ｄａｎａ@example.com".into(), Same),
        ("ＤＡＮＡ＠ＥＸＡＭＰＬＥ．ＣＯＭ".into(), Same),
        ("dana＠example.com".into(), Same),
        // Invisible characters, anywhere.
        ("da\u{200B}na@example.com".into(), Invisible),
        ("da\u{200C}na@example.com".into(), Invisible),
        ("da\u{200D}na@example.com".into(), Invisible),
        ("da\u{2060}na@example.com".into(), Invisible),
        ("\u{FEFF}dana@example.com".into(), Invisible),
        ("dana@example.com\u{FEFF}".into(), Invisible),
        ("da\u{00AD}na@example.com".into(), Invisible),
        ("da\u{180E}na@example.com".into(), Invisible),
        ("da\u{034F}na@example.com".into(), Invisible),
        ("da\u{FE0F}na@example.com".into(), Invisible),
        ("dana\u{E0100}@example.com".into(), Invisible),
        ("dana@example.com\u{E0041}\u{E007F}".into(), Invisible),
        ("da\u{3164}na@example.com".into(), Invisible),
        ("da\u{115F}na@example.com".into(), Invisible),
        ("da\u{FFA0}na@example.com".into(), Invisible),
        (
            "d\u{200B}\u{200D}\u{FEFF}ana@exam\u{00AD}ple.com".into(),
            Invisible,
        ),
        // Spaces inside.
        ("da na@example.com".into(), Space),
        ("dana @example.com".into(), Space),
        ("da\u{00A0}na@example.com".into(), Space),
        ("da\u{3000}na@example.com".into(), Space),
        ("da\u{2009}na@example.com".into(), Space),
        ("da\u{2028}na@example.com".into(), Space),
        // Controls.
        ("da\u{0000}na@example.com".into(), Control),
        ("da\u{007F}na@example.com".into(), Control),
        ("da\u{0085}na@example.com".into(), Space),
        ("da\u{009B}na@example.com".into(), Control),
        // Look-alikes mixed into Latin labels.
        ("d\u{0430}na@example.com".into(), MixedScript),
        ("dan\u{0430}@example.com".into(), MixedScript),
        ("dana@ex\u{0430}mple.com".into(), MixedScript),
        ("dana@example.c\u{043E}m".into(), MixedScript),
        ("d\u{03B1}na@example.com".into(), MixedScript),
        ("DAN\u{0391}@example.com".into(), MixedScript),
        // Compatibility forms PRECIS refuses (NFKC would map them).
        (
            "\u{1D41D}\u{1D41A}\u{1D427}\u{1D41A}@example.com".into(),
            Disallowed,
        ),
        ("\u{1D5BD}ana@example.com".into(), Disallowed),
        ("\u{24D3}ana@example.com".into(), Disallowed),
        ("dan\u{00AA}@example.com".into(), Disallowed),
    ];
    // Every bidi control, at the start, inside and at the end.
    for c in BIDI_CONTROLS {
        all.push((format!("{c}dana@example.com"), Bidi));
        all.push((format!("da{c}na@example.com"), Bidi));
        all.push((format!("dana@example.com{c}"), Bidi));
    }
    all
}

const BIDI_CONTROLS: [char; 12] = [
    '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
];

/// Default-ignorable characters named in the attack suite and its class.
const INVISIBLES: [char; 24] = [
    '\u{00AD}',
    '\u{034F}',
    '\u{115F}',
    '\u{1160}',
    '\u{17B4}',
    '\u{180B}',
    '\u{180E}',
    '\u{200B}',
    '\u{200C}',
    '\u{200D}',
    '\u{2060}',
    '\u{2064}',
    '\u{3164}',
    '\u{FE00}',
    '\u{FE0F}',
    '\u{FEFF}',
    '\u{FFA0}',
    '\u{1BCA0}',
    '\u{E0001}',
    '\u{E0041}',
    '\u{E007F}',
    '\u{E0100}',
    '\u{E01EF}',
    '\u{2061}',
];

#[test]
fn every_spelling_of_one_person_shares_the_identity_key() {
    let key = identity_key(DANA);
    for (spelling, _) in spellings() {
        assert_eq!(identity_key(&spelling), key, "{spelling:?}");
        assert!(same_id(&spelling, DANA), "{spelling:?}");
        assert!(same_id(DANA, &spelling), "{spelling:?}");
    }
}

#[test]
fn each_spelling_is_normalised_or_refused_by_its_kind() {
    for (spelling, expect) in spellings() {
        let got = normalize(&spelling);
        let kind = match &got {
            Ok(n) => {
                assert_eq!(n, DANA, "{spelling:?}");
                Expect::Same
            }
            Err(InvalidIdentity::Invisible { .. }) => Expect::Invisible,
            Err(InvalidIdentity::BidiControl { .. }) => Expect::Bidi,
            Err(InvalidIdentity::Whitespace { .. }) => Expect::Space,
            Err(InvalidIdentity::Control { .. }) => Expect::Control,
            Err(InvalidIdentity::MixedScript { .. }) => Expect::MixedScript,
            Err(InvalidIdentity::Disallowed { .. }) => Expect::Disallowed,
            Err(other) => panic!("{spelling:?}: unexpected {other:?}"),
        };
        assert_eq!(kind, expect, "{spelling:?}: {got:?}");
    }
}

#[test]
fn refusals_name_the_code_point_and_never_repeat_it_raw() {
    for (spelling, expect) in spellings() {
        if expect == Expect::Same {
            continue;
        }
        let err = normalize(&spelling).expect_err("refused");
        let cp = err.code_point().expect("names a character");
        let message = err.to_string();
        assert!(
            message.contains(&format!("U+{:04X}", cp as u32)),
            "{spelling:?}: {message}"
        );
        let hidden = |c: char| is_default_ignorable(c) || is_bidi_control(c) || c.is_control();
        assert!(
            !message.chars().any(hidden),
            "{spelling:?}: the message carries the hidden character: {message:?}"
        );
    }
    let err = normalize("da\u{200B}na@example.com").expect_err("refused");
    assert_eq!(
        err,
        InvalidIdentity::Invisible {
            id: "\"da\\u{200B}na@example.com\"".into(),
            code_point: '\u{200B}',
            position: 3,
        }
    );
    assert!(err.to_string().contains("remove it"), "{err}");
    let err = normalize("  \u{202E}moc.elpmaxe@anad").expect_err("refused");
    assert!(
        matches!(
            err,
            InvalidIdentity::BidiControl {
                code_point: '\u{202E}',
                position: 3,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn the_whole_classes_are_recognised() {
    for c in INVISIBLES {
        assert!(is_default_ignorable(c), "U+{:04X}", c as u32);
        assert!(
            normalize(&format!("da{c}na")).is_err(),
            "U+{:04X}",
            c as u32
        );
        assert_eq!(identity_key(&format!("da{c}na")), identity_key("dana"));
    }
    for c in BIDI_CONTROLS {
        assert!(is_bidi_control(c), "U+{:04X}", c as u32);
        assert!(is_default_ignorable(c), "U+{:04X}", c as u32);
    }
    for c in [
        'a', 'Z', '0', '@', '.', '-', 'é', 'а', '山', '\u{0301}', ' ',
    ] {
        assert!(!is_default_ignorable(c), "{c:?}");
        assert!(!is_bidi_control(c), "{c:?}");
    }
}

#[test]
fn case_forms_outside_ascii_fold_together() {
    let same = [
        [
            "élise@example.com",
            "ÉLISE@EXAMPLE.COM",
            "e\u{0301}lise@example.com",
        ]
        .as_slice(),
        ["E\u{0301}LISE@example.com", "élise@example.com"].as_slice(),
        [
            "σίσυφος@example.gr",
            "ΣΊΣΥΦΟΣ@example.gr",
            "σίσυφοσ@example.gr",
        ]
        .as_slice(),
        [
            "straße@example.de",
            "STRASSE@example.de",
            "strasse@example.de",
        ]
        .as_slice(),
        ["kim@example.com", "KIM@example.com"].as_slice(),
    ];
    for group in same {
        let first = normalize(group[0]).expect("accepted");
        for spelling in group {
            assert_eq!(
                normalize(spelling).as_deref(),
                Ok(first.as_str()),
                "{spelling:?}"
            );
            assert!(same_canonical(spelling, group[0]), "{spelling:?}");
            assert!(same_id(spelling, group[0]), "{spelling:?}");
        }
    }
    // Compatibility forms other than width are refused, yet still share the key.
    for (alias, plain) in [
        ("\u{212A}im@example.com", "kim@example.com"),
        ("\u{FB01}ona@example.com", "fiona@example.com"),
        ("\u{1D41D}\u{1D41A}\u{1D427}\u{1D41A}", "dana"),
        ("dana\u{00B2}", "dana2"),
    ] {
        let err = normalize(alias).expect_err("compatibility form refused");
        assert!(
            matches!(err, InvalidIdentity::Disallowed { .. }),
            "{alias:?}: {err:?}"
        );
        assert_eq!(canonical_key(alias), canonical_key(plain), "{alias:?}");
        assert!(same_id(alias, plain), "{alias:?}");
    }
}

#[test]
fn legitimate_ids_in_any_script_are_accepted() {
    for (id, canonical) in [
        ("андрей@пример.рф", "андрей@пример.рф"),
        ("Андрей@Пример.РФ", "андрей@пример.рф"),
        ("андрей@example.com", "андрей@example.com"),
        ("山田@example.jp", "山田@example.jp"),
        ("山田taro@example.jp", "山田taro@example.jp"),
        ("やまだ.タロウ@example.jp", "やまだ.タロウ@example.jp"),
        ("김민준@example.kr", "김민준@example.kr"),
        ("σίσυφος@παράδειγμα.gr", "σίσυφοσ@παράδειγμα.gr"),
        ("מיכאל@example.co.il", "מיכאל@example.co.il"),
        ("dana@bücher.de", "dana@bücher.de"),
        ("o'brien+ops@example.com", "o'brien+ops@example.com"),
        ("a_b-c.d@example.com", "a_b-c.d@example.com"),
        ("billing-agent", "billing-agent"),
        (
            "spiffe://prod/ns/billing-agent",
            "spiffe://prod/ns/billing-agent",
        ),
        ("U024BE7LH", "u024be7lh"),
        (
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
        ),
    ] {
        assert_eq!(normalize(id).as_deref(), Ok(canonical), "{id:?}");
        assert_eq!(canonical_key(id), canonical, "{id:?}");
    }
}

#[test]
fn empty_long_and_dotted_ids() {
    for empty in ["", " ", "\u{3000}", ".", "...", " . "] {
        assert_eq!(normalize(empty), Err(InvalidIdentity::Empty), "{empty:?}");
    }
    let long = "a".repeat(MAX_ID_BYTES + 1);
    assert!(matches!(
        normalize(&long),
        Err(InvalidIdentity::TooLong { bytes, .. }) if bytes == MAX_ID_BYTES + 1
    ));
    assert!(normalize(&"a".repeat(MAX_ID_BYTES)).is_ok());
    // Only trailing dots go: a dot inside or in front stays.
    assert_eq!(
        normalize("dana.@example.com").as_deref(),
        Ok("dana.@example.com")
    );
    assert_eq!(normalize(".dana").as_deref(), Ok(".dana"));
    assert_ne!(identity_key("da.na"), identity_key("dana"));
}

#[test]
fn a_label_mixing_directions_breaks_the_bidi_rule() {
    // PRECIS checks each label: right-to-left letters with Latin ones in one label are
    // refused, a Hebrew local part at a Latin domain is not.
    let err = normalize("\u{05DE}\u{05D9}abc@example.com").expect_err("bidi rule");
    assert!(matches!(err, InvalidIdentity::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("RFC 5893"), "{err}");
    assert!(normalize("\u{05DE}\u{05D9}@example.com").is_ok());
}

#[test]
fn groups_may_have_words_but_nothing_hidden() {
    assert_eq!(normalize_group("data-owners").as_deref(), Ok("data-owners"));
    assert_eq!(
        normalize_group(" Data   Owners ").as_deref(),
        Ok("data owners")
    );
    assert_eq!(
        normalize_group("ＳＥＣＵＲＩＴＹ").as_deref(),
        Ok("security")
    );
    assert!(matches!(
        normalize("data owners"),
        Err(InvalidIdentity::Whitespace { .. })
    ));
    for refused in [
        "data\u{00A0}owners",
        "sec\u{200B}urity",
        "s\u{0435}curity",
        "admins\u{202E}",
    ] {
        assert!(normalize_group(refused).is_err(), "{refused:?}");
        assert_eq!(
            canonical_key(refused).replace(' ', ""),
            canonical_key(&refused.replace('\u{00A0}', "")).replace(' ', ""),
        );
    }
}

#[test]
fn granting_comparisons_never_match_a_confusable_of_another_identity() {
    for (listed, other) in [
        ("bill@example.com", "bi11@example.com"),
        ("sam@example.com", "\u{0455}am@example.com"),
        ("sam@example.com", "sarn@example.com"),
        ("dana@example.com", "d\u{0430}na@example.com"),
        ("ape@example.com", "\u{0430}\u{0440}\u{0435}@example.com"),
        ("devops", "dev0ps"),
    ] {
        assert!(!same_canonical(listed, other), "{listed} / {other}");
        // ...while the refusing comparison treats them as one possible person.
        assert!(same_id(listed, other), "{listed} / {other}");
    }
    // A whole-script Cyrillic label is a legitimate id on its own.
    assert!(normalize("\u{0430}\u{0440}\u{0435}@example.com").is_ok());
}

#[test]
fn the_ascii_fast_path_equals_the_general_path() {
    for s in [
        "Dana@Example.COM.",
        " a\tb ",
        "\u{7f}x\u{1}",
        "",
        "..",
        "A . ",
    ] {
        assert_eq!(canonical_key(s), general_canonical_key(s), "{s:?}");
    }
}

/// `canonical_key` without its ASCII shortcut.
fn general_canonical_key(id: &str) -> String {
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

fn any_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._+-]{1,12}@[a-zA-Z0-9-]{1,8}\\.[a-z]{2,4}\\.{0,2}",
        "[ \\t]{0,2}[a-zA-Z0-9._-]{1,16}[ \\t]{0,2}",
        "[а-яА-Я]{1,8}@[а-я]{1,8}\\.рф",
        "[αβγδεζηθικλμνξοπρστυφχψωΣΑΒ]{1,8}@example\\.gr",
        "[ａ-ｚＡ-Ｚ０-９]{1,8}＠example．com",
        "[山田太郎やまだタロウ]{1,6}@example\\.jp",
        any::<String>(),
    ]
}

fn hidden_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(INVISIBLES.to_vec()),
        prop::sample::select(BIDI_CONTROLS.to_vec()),
        (0xE0000u32..=0xE007F).prop_map(|c| char::from_u32(c).unwrap_or('\u{E0001}')),
        (0xFE00u32..=0xFE0F).prop_map(|c| char::from_u32(c).unwrap_or('\u{FE00}')),
        (0xE0100u32..=0xE01EF).prop_map(|c| char::from_u32(c).unwrap_or('\u{E0100}')),
        (0x200Bu32..=0x200F).prop_map(|c| char::from_u32(c).unwrap_or('\u{200B}')),
        (0x2060u32..=0x206F).prop_map(|c| char::from_u32(c).unwrap_or('\u{2060}')),
    ]
}

/// After the memo has filled and started over, it still answers what the computation does.
#[test]
fn the_memo_starts_over_without_changing_an_answer() {
    let ids = [
        "d\u{0430}na@example.com",
        "DANA@Example.com.",
        "ops-lead",
        "rnallory",
    ];
    let computed: Vec<String> = ids.iter().map(|id| skeleton_key(id)).collect();
    for round in 0..3 {
        for (id, key) in ids.iter().zip(&computed) {
            assert_eq!(&identity_key(id), key, "round {round}: {id:?}");
        }
        for i in 0..=MEMO_ENTRIES {
            identity_key(&format!("filler-{round}-{i}"));
        }
    }
    assert_eq!(identity_key(ids[0]), identity_key(ids[1]));
    assert_eq!(identity_key("rnallory"), identity_key("mallory"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn keys_are_idempotent_and_agree_with_normalize(id in any_id()) {
        let key = identity_key(&id);
        prop_assert_eq!(identity_key(&key), key.clone());
        let canonical = canonical_key(&id);
        prop_assert_eq!(canonical_key(&canonical), canonical.clone());
        prop_assert_eq!(identity_key(&canonical), key.clone());
        if let Ok(normal) = normalize(&id) {
            prop_assert_eq!(&normal, &canonical);
            prop_assert_eq!(normalize(&normal), Ok(normal.clone()));
            prop_assert_eq!(identity_key(&normal), key);
        }
        if id.is_ascii() {
            prop_assert_eq!(canonical, general_canonical_key(&id));
        }
    }

    /// The per-thread memo answers what the computation does: for a first sight, a repeat,
    /// and an id over the memo's length limit.
    #[test]
    fn the_memoized_key_is_the_computed_key(id in any_id()) {
        let computed = skeleton_key(&id);
        prop_assert_eq!(identity_key(&id), computed.clone());
        prop_assert_eq!(identity_key(&id), computed);
        let long = format!("{id}{}", "m".repeat(MEMO_MAX_ID_BYTES));
        prop_assert_eq!(identity_key(&long), skeleton_key(&long));
    }

    /// Inserting any invisible or bidi character anywhere is refused by `normalize`, and
    /// changes neither key.
    #[test]
    fn a_hidden_character_anywhere_is_refused_and_ignored_by_the_keys(
        id in any_id(),
        hidden in hidden_char(),
        at in any::<prop::sample::Index>(),
    ) {
        let boundaries: Vec<usize> = id
            .char_indices()
            .map(|(i, _)| i)
            .chain([id.len()])
            .collect();
        let at = boundaries[at.index(boundaries.len())];
        let spoofed = format!("{}{hidden}{}", &id[..at], &id[at..]);
        prop_assert!(normalize(&spoofed).is_err(), "{:?} accepted", spoofed);
        if is_default_ignorable(hidden) {
            prop_assert_eq!(identity_key(&spoofed), identity_key(&id));
            prop_assert_eq!(canonical_key(&spoofed), canonical_key(&id));
        }
    }
}

/// The one set of invisible characters (neutralised on every surface, refused in identities)
/// is Unicode's `Default_Ignorable_Code_Point` as `unicode-security` knows it (its UTS #39
/// skeleton drops exactly those, so a character whose skeleton is empty is one), on every
/// code point; every bidi control is in it.
#[test]
fn invisible_characters_are_unicodes_default_ignorables() {
    let skeleton_is_empty = |c: char| {
        let mut buf = [0u8; 4];
        !c.is_ascii()
            && unicode_security::skeleton(c.encode_utf8(&mut buf))
                .next()
                .is_none()
    };
    let differ: Vec<String> = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|&c| is_default_ignorable(c) != skeleton_is_empty(c))
        .map(|c| format!("U+{:04X}", c as u32))
        .collect();
    assert!(
        differ.is_empty(),
        "the set differs from Unicode's at {differ:?}"
    );
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        if is_bidi_control(c) {
            assert!(crate::text::is_invisible_format(c), "U+{:04X}", c as u32);
        }
    }
}

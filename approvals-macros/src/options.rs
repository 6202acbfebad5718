//! Parsing of the attribute's options: `#[requires_approval(kind = "..", skip(a), ..)]`.

use syn::ext::IdentExt as _;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Path, Token};

/// Every option name, in the order the docs list them.
const OPTIONS: &[&str] = &[
    "kind",
    "resource",
    "skip",
    "gate",
    "justification",
    "context",
    "crate",
];

/// The parsed options of one `#[requires_approval(..)]`.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) kind: Option<LitStr>,
    pub(crate) resource: Option<LitStr>,
    /// Arguments kept out of the request, with the spans the user wrote them at.
    pub(crate) skip: Vec<Ident>,
    pub(crate) gate: Option<Expr>,
    pub(crate) justification: Option<Expr>,
    pub(crate) context: Option<Expr>,
    /// `crate = path`: where approvals-core is, for renamed dependencies.
    pub(crate) krate: Option<Path>,
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut options = Options::default();
        let mut seen_skip = false;
        while !input.is_empty() {
            let name = input.call(Ident::parse_any)?;
            let key = name.to_string();
            match key.as_str() {
                "kind" => set_once(&mut options.kind, &name, parse_value::<LitStr>(input)?)?,
                "resource" => {
                    set_once(&mut options.resource, &name, parse_value::<LitStr>(input)?)?;
                }
                "gate" => set_once(&mut options.gate, &name, parse_value::<Expr>(input)?)?,
                "justification" => {
                    set_once(
                        &mut options.justification,
                        &name,
                        parse_value::<Expr>(input)?,
                    )?;
                }
                "context" => set_once(&mut options.context, &name, parse_value::<Expr>(input)?)?,
                "crate" => {
                    input.parse::<Token![=]>()?;
                    let path = if input.peek(LitStr) {
                        input.parse::<LitStr>()?.parse_with(Path::parse_mod_style)?
                    } else {
                        input.call(Path::parse_mod_style)?
                    };
                    set_once(&mut options.krate, &name, path)?;
                }
                "skip" => {
                    if seen_skip {
                        return Err(twice(&name));
                    }
                    seen_skip = true;
                    let content;
                    syn::parenthesized!(content in input);
                    let names = Punctuated::<Ident, Token![,]>::parse_terminated_with(
                        &content,
                        Ident::parse_any,
                    )?;
                    options.skip.extend(names);
                }
                _ => return Err(unknown(&name)),
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(options)
    }
}

fn parse_value<T: Parse>(input: ParseStream<'_>) -> syn::Result<T> {
    input.parse::<Token![=]>()?;
    input.parse()
}

fn set_once<T>(slot: &mut Option<T>, name: &Ident, value: T) -> syn::Result<()> {
    if slot.is_some() {
        return Err(twice(name));
    }
    *slot = Some(value);
    Ok(())
}

fn twice(name: &Ident) -> syn::Error {
    syn::Error::new(
        name.span(),
        format!("`{name}` is given twice; give each option at most once"),
    )
}

fn unknown(name: &Ident) -> syn::Error {
    let name_str = name.to_string();
    let hint = OPTIONS
        .iter()
        .filter(|o| edit_distance(o, &name_str) <= 2)
        .min_by_key(|o| edit_distance(o, &name_str))
        .map(|o| format!("did you mean `{o}`? "))
        .unwrap_or_default();
    syn::Error::new(
        name.span(),
        format!(
            "unknown option `{name}` for #[requires_approval]; {hint}expected one of: {}",
            OPTIONS.join(", ")
        ),
    )
}

/// Levenshtein distance, for "did you mean" hints on a handful of short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_option() {
        let o: Options = syn::parse_str(
            r#"kind = "db.drop", resource = "db://{name}", skip(conn, r#type), gate = self.gate.clone(),
               justification = why, context = ctx(&name), crate = my_approvals"#,
        )
        .expect("parses");
        assert_eq!(o.kind.expect("kind").value(), "db.drop");
        assert_eq!(o.resource.expect("resource").value(), "db://{name}");
        assert_eq!(o.skip.len(), 2);
        assert!(o.gate.is_some() && o.justification.is_some() && o.context.is_some());
        assert!(o.krate.is_some());
        let quoted: Options = syn::parse_str(r#"crate = "::a::b""#).expect("parses");
        assert_eq!(quoted.krate.expect("crate").segments.len(), 2);
    }

    #[test]
    fn rejects_unknown_and_repeated_options() {
        let err = syn::parse_str::<Options>("kinds = \"x\"")
            .err()
            .expect("unknown");
        assert!(err.to_string().contains("did you mean `kind`?"), "{err}");
        let err = syn::parse_str::<Options>("kind = \"a\", kind = \"b\"")
            .err()
            .expect("twice");
        assert!(err.to_string().contains("given twice"), "{err}");
        assert!(syn::parse_str::<Options>("skip(a), skip(b)").is_err());
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("skip", "skip"), 0);
        assert_eq!(edit_distance("skip", "skp"), 1);
        assert_eq!(edit_distance("gate", "gates"), 1);
        assert_eq!(edit_distance("context", "kind"), 6);
    }
}

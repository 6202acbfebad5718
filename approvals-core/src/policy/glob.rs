//! Glob patterns for kinds and resources: `*` matches any run of characters, `?` one.

/// A precompiled glob. Literal patterns and single-`*` prefix/suffix patterns take fast paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Glob {
    /// `*`
    Any,
    /// No wildcard.
    Exact(String),
    /// `prefix*`
    Prefix(String),
    /// `*suffix`
    Suffix(String),
    /// Anything else (several `*`, or `?`).
    General(Vec<char>),
}

impl Glob {
    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Glob {
        if pattern == "*" {
            return Glob::Any;
        }
        let stars = pattern.matches('*').count();
        let has_q = pattern.contains('?');
        if !has_q {
            if stars == 0 {
                return Glob::Exact(pattern.to_owned());
            }
            if stars == 1 && pattern.ends_with('*') {
                return Glob::Prefix(pattern[..pattern.len() - 1].to_owned());
            }
            if stars == 1 && pattern.starts_with('*') {
                return Glob::Suffix(pattern[1..].to_owned());
            }
        }
        Glob::General(pattern.chars().collect())
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(s) => s == text,
            Glob::Prefix(p) => text.starts_with(p.as_str()),
            Glob::Suffix(s) => text.ends_with(s.as_str()),
            Glob::General(pattern) => wildcard_match(pattern, text),
        }
    }
}

/// Classic wildcard matching with backtracking to the last `*`; linear in practice.
fn wildcard_match(pattern: &[char], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn matches_like_a_shell_glob() {
        let cases = [
            ("*", "anything", true),
            ("data.export", "data.export", true),
            ("data.export", "data.exports", false),
            ("secrets.*", "secrets.rotate", true),
            ("secrets.*", "secret.rotate", false),
            ("*.read", "db.read", true),
            ("*.read", "db.reads", false),
            ("db://prod/*/users", "db://prod/eu/users", true),
            ("db://prod/*/users", "db://prod/eu/users2", false),
            ("iam.?ole.*", "iam.role.grant", true),
            ("iam.?ole.*", "iam.le.grant", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("*é?", "caféx", true),
            ("a*a", "a", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }
}

//! The served policy: a `RulePolicy` file, reloaded when its content changes; a bad edit is
//! refused (logged, reported on `/healthz`) and the policy in force stays.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use approvals_core::{ActionRequest, Decision, Policy, PolicyError, PolicyLoadError, RulePolicy};

/// A policy loaded from one file, with its text (to notice changes) and version.
struct Loaded {
    policy: RulePolicy,
    text: String,
    version: &'static str,
}

/// Versions are `sha256:` hashes, one per distinct policy ever loaded by this process, kept
/// for its lifetime (the trait hands out `&str`): a few dozen bytes per edit.
fn intern(version: &str) -> &'static str {
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = seen.get(version) {
        return known;
    }
    let leaked: &'static str = Box::leak(version.to_owned().into_boxed_str());
    seen.insert(leaked);
    leaked
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reload {
    /// The file is as it was.
    Unchanged,
    /// The new policy is in force.
    Replaced { version: String },
    /// The new file was refused; the old policy stays.
    Refused(String),
}

/// A [`RulePolicy`] read from a file, which [`ReloadingPolicy::reload`] replaces when the
/// file changes.
pub(crate) struct ReloadingPolicy {
    path: PathBuf,
    current: RwLock<Arc<Loaded>>,
    /// The text of the last refused edit (so it is reported once, not at every poll) and why.
    refused: Mutex<Option<(String, String)>>,
}

fn parse(path: &Path, text: &str) -> Result<RulePolicy, PolicyLoadError> {
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let parsed = if json {
        RulePolicy::from_json(text)
    } else {
        RulePolicy::from_toml(text)
    };
    parsed.map_err(|mut e| {
        e.source_name = path.display().to_string();
        e
    })
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl ReloadingPolicy {
    /// Loads `path`; an unreadable or invalid file is an error (the service does not start).
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = read(path)?;
        let policy = parse(path, &text).map_err(|e| e.to_string())?;
        let version = intern(policy.version());
        Ok(ReloadingPolicy {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(Loaded {
                policy,
                text,
                version,
            })),
            refused: Mutex::new(None),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The version in force.
    pub(crate) fn current_version(&self) -> &'static str {
        self.current().version
    }

    /// The file it reads.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Why the last edit was refused, while the file still holds it.
    pub(crate) fn refused(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(|(_, why)| why.clone())
    }

    /// Reads the file again and puts a changed, valid policy in force.
    pub(crate) fn reload(&self) -> Reload {
        let text = match read(&self.path) {
            Ok(text) => text,
            Err(e) => return self.refuse(String::new(), e),
        };
        if text == self.current().text {
            *self
                .refused
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
            return Reload::Unchanged;
        }
        if let Some((refused_text, _)) = &*self
            .refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            && *refused_text == text
        {
            return Reload::Unchanged;
        }
        match parse(&self.path, &text) {
            Ok(policy) => {
                let version = intern(policy.version());
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(Loaded {
                    policy,
                    text,
                    version,
                });
                *self
                    .refused
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                Reload::Replaced {
                    version: version.to_owned(),
                }
            }
            Err(e) => self.refuse(text, e.to_string()),
        }
    }

    fn refuse(&self, text: String, why: String) -> Reload {
        let mut refused = self
            .refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if refused
            .as_ref()
            .is_some_and(|(t, w)| *t == text && *w == why)
        {
            return Reload::Unchanged;
        }
        *refused = Some((text, why.clone()));
        Reload::Refused(why)
    }
}

/// The gate records the version that `evaluate_versioned` returns with each decision: both
/// come from one loaded snapshot, so a reload between asking and recording cannot pair one
/// version's decision with another version's name.
impl Policy for ReloadingPolicy {
    fn evaluate(&self, request: &ActionRequest) -> Result<Decision, PolicyError> {
        self.current().policy.evaluate(request)
    }

    fn version(&self) -> &str {
        self.current_version()
    }

    fn evaluate_versioned(&self, request: &ActionRequest) -> (Result<Decision, PolicyError>, &str) {
        let loaded = self.current();
        (loaded.policy.evaluate(request), loaded.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: &str = "version = 1\ndefault = \"allow\"\n";
    const DENY: &str = "version = 1\ndefault = \"deny\"\n";

    #[test]
    fn a_changed_file_replaces_the_policy_and_a_broken_one_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, ALLOW).expect("write");
        let policy = ReloadingPolicy::load(&path).expect("loads");
        let first = policy.current_version();
        let request = ActionRequest::new("data.export", "db://x");
        assert!(matches!(
            policy.evaluate(&request),
            Ok(Decision::Allow { .. })
        ));
        assert_eq!(policy.version(), first);
        let (decision, decided_by) = policy.evaluate_versioned(&request);
        assert!(matches!(decision, Ok(Decision::Allow { .. })));
        assert_eq!(decided_by, first);
        assert_eq!(policy.reload(), Reload::Unchanged);

        std::fs::write(&path, DENY).expect("write");
        let Reload::Replaced { version } = policy.reload() else {
            panic!("the edit is taken")
        };
        assert_ne!(version, first);
        assert!(matches!(
            policy.evaluate(&request),
            Ok(Decision::Deny { .. })
        ));
        assert_eq!(policy.version(), version);
        let (decision, decided_by) = policy.evaluate_versioned(&request);
        assert!(matches!(decision, Ok(Decision::Deny { .. })));
        assert_eq!(
            decided_by, version,
            "the decision and its version come from one load"
        );

        std::fs::write(&path, "[default\n").expect("write");
        assert!(matches!(policy.reload(), Reload::Refused(_)));
        assert_eq!(policy.reload(), Reload::Unchanged, "reported once");
        assert!(policy.refused().is_some());
        assert_eq!(policy.current_version(), version);
        assert!(matches!(
            policy.evaluate(&request),
            Ok(Decision::Deny { .. })
        ));
    }
}

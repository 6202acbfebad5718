//! Which rules of a `RulePolicy` are worth trying for a request: an index over their resource
//! and kind patterns that never changes which rule decides (first match in file order).

use std::collections::HashMap as StdHashMap;

use smallvec::SmallVec;

/// Maps keyed by the policy's own patterns: a fast hash, since only the policy's author chooses
/// the keys (a request's resource and kind are only looked up).
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// Narrows the rules to try by the request's resource, then by its kind.
///
/// Each rule is listed once, under the most selective key its patterns allow:
///
/// 1. its **resources**, when every resource pattern is literal (`db://prod/orders`) or a
///    literal prefix followed by one `*` (`db://prod/*`): a request tries it only when its
///    resource is that text or starts with that prefix. Prefixes are kept by length, so a
///    lookup is one hash probe per distinct prefix length, not one per rule;
/// 2. otherwise its **kinds**, when every kind pattern starts with a literal segment
///    (`data` in `data.export` or `data.*`): a request tries it only for a kind whose first
///    segment is that text;
/// 3. otherwise it is **always** tried.
///
/// A rule is tried whenever it could match, and the candidates come back in file order, so
/// first-match semantics are those of a linear scan (a test compares the two).
#[derive(Debug, Clone, Default)]
pub(super) struct RuleIndex {
    exact_resource: HashMap<String, Vec<usize>>,
    /// `(prefix length in bytes, prefix → rules)`, by length.
    prefix_resource: Vec<(usize, HashMap<String, Vec<usize>>)>,
    kind_segment: HashMap<String, Vec<usize>>,
    always: Vec<usize>,
}

/// A resource pattern the index can key on.
enum ResourceKey<'a> {
    Exact(&'a str),
    Prefix(&'a str),
}

impl RuleIndex {
    /// Indexes rules given, in file order, as `(kind patterns, resource patterns)`; an empty
    /// list is "any".
    pub(super) fn build(rules: impl IntoIterator<Item = (Vec<String>, Vec<String>)>) -> Self {
        let mut index = RuleIndex::default();
        for (i, (kinds, resources)) in rules.into_iter().enumerate() {
            let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
            let resources: Vec<&str> = resources.iter().map(String::as_str).collect();
            if let Some(keys) = all_keys(&resources, resource_key) {
                for key in keys {
                    match key {
                        ResourceKey::Exact(text) => push(&mut index.exact_resource, text, i),
                        ResourceKey::Prefix(prefix) => {
                            let at = match index
                                .prefix_resource
                                .binary_search_by_key(&prefix.len(), |(len, _)| *len)
                            {
                                Ok(at) => at,
                                Err(at) => {
                                    index
                                        .prefix_resource
                                        .insert(at, (prefix.len(), HashMap::default()));
                                    at
                                }
                            };
                            push(&mut index.prefix_resource[at].1, prefix, i);
                        }
                    }
                }
            } else if let Some(segments) = all_keys(&kinds, literal_first_segment) {
                for segment in segments {
                    push(&mut index.kind_segment, segment, i);
                }
            } else {
                index.always.push(i);
            }
        }
        index
    }

    /// Rule indices to try for `kind` on `resource`, in file order, each once.
    pub(super) fn candidates<'a>(
        &'a self,
        kind: &str,
        resource: &str,
    ) -> impl Iterator<Item = usize> + 'a {
        let mut lists: SmallVec<[&'a [usize]; 6]> = SmallVec::new();
        let mut add = |list: Option<&'a Vec<usize>>| {
            if let Some(list) = list.filter(|l| !l.is_empty()) {
                lists.push(list.as_slice());
            }
        };
        add(self.exact_resource.get(resource));
        for (len, by_prefix) in &self.prefix_resource {
            if *len > resource.len() {
                break;
            }
            if resource.is_char_boundary(*len) {
                add(by_prefix.get(&resource[..*len]));
            }
        }
        add(self
            .kind_segment
            .get(kind.split('.').next().unwrap_or(kind)));
        add(Some(&self.always));
        merge(lists)
    }
}

fn push(map: &mut HashMap<String, Vec<usize>>, key: &str, rule: usize) {
    let list = map.entry(key.to_owned()).or_default();
    if list.last() != Some(&rule) {
        list.push(rule);
    }
}

/// The key of every pattern, or `None` when one of them has none (or there are none: "any").
fn all_keys<'a, K>(patterns: &[&'a str], key: impl Fn(&'a str) -> Option<K>) -> Option<Vec<K>> {
    if patterns.is_empty() {
        return None;
    }
    patterns.iter().map(|p| key(p)).collect()
}

fn resource_key(pattern: &str) -> Option<ResourceKey<'_>> {
    if pattern.contains('?') {
        return None;
    }
    match pattern.find('*') {
        None => Some(ResourceKey::Exact(pattern)),
        Some(at) if at + 1 == pattern.len() && at > 0 => Some(ResourceKey::Prefix(&pattern[..at])),
        Some(_) => None,
    }
}

/// The literal text before the first `.` of a kind pattern, if no wildcard comes before it.
/// A kind matches the pattern only if its own first segment is that text.
fn literal_first_segment(pattern: &str) -> Option<&str> {
    let segment = pattern.split('.').next().unwrap_or(pattern);
    (!segment.contains(['*', '?'])).then_some(segment)
}

/// Merges ascending lists into one ascending sequence without repeats.
fn merge<'a>(mut lists: SmallVec<[&'a [usize]; 6]>) -> impl Iterator<Item = usize> + 'a {
    std::iter::from_fn(move || {
        let next = lists.iter().filter_map(|l| l.first().copied()).min()?;
        for list in lists.iter_mut() {
            if list.first() == Some(&next) {
                *list = &list[1..];
            }
        }
        Some(next)
    })
}

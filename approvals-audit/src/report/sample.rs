//! Reproducible audit samples: which requests an auditor looks at closely, chosen by a seed in
//! a way anyone can redo without this tool.
//!
//! Method: for every request in the population (the requests of the report's period), compute
//! `SHA-256(seed || request_id)` over the UTF-8 bytes of the seed followed directly by the
//! request id as printed in the report (lowercase hyphenated UUID), with no separator; order the
//! requests by that digest (as lowercase hex, which orders like the bytes), lowest first; the
//! sample is the first N. N larger than the population takes all of it. The same seed and
//! population always give the same sample; another seed gives an unrelated one.
//!
//! With the report's CSV, in a POSIX shell (`request_id` is the first column):
//!
//! ```sh
//! SEED='2026-Q4 audit'; N=25
//! tail -n +2 evidence.csv | cut -d, -f1 | tr -d '"' | while read -r id; do
//!   printf '%s %s\n' "$(printf '%s%s' "$SEED" "$id" | sha256sum | cut -d' ' -f1)" "$id"
//! done | sort | head -n "$N" | cut -d' ' -f2
//! ```

use sha2::{Digest as _, Sha256};

use crate::hex::to_hex;

/// The rank of a request in a sample drawn with `seed`: `SHA-256(seed || request_id)` in
/// lowercase hex.
pub fn sample_rank(seed: &str, request_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(seed.as_bytes());
    hasher.update(request_id.as_bytes());
    to_hex(&hasher.finalize().into())
}

/// The `n` request ids of `population` with the lowest [`sample_rank`] under `seed`, lowest
/// first, with their ranks (all of them when `n` is larger than the population). Duplicate ids
/// count once.
pub fn sample<'a>(
    population: impl IntoIterator<Item = &'a str>,
    n: usize,
    seed: &str,
) -> Vec<(String, String)> {
    let mut ranked: Vec<(String, String)> = population
        .into_iter()
        .map(|id| (sample_rank(seed, id), id.to_owned()))
        .collect();
    ranked.sort();
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.truncate(n);
    ranked.into_iter().map(|(rank, id)| (id, rank)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rank_is_sha256_of_the_seed_followed_by_the_id() {
        // printf '%s%s' 'seed' 'id-1' | sha256sum
        assert_eq!(
            sample_rank("seed", "id-1"),
            to_hex(&Sha256::digest(b"seedid-1").into())
        );
        assert_ne!(sample_rank("seed", "id-1"), sample_rank("seed", "id-2"));
    }
}

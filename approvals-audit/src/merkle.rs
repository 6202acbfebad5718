//! RFC 6962 / RFC 9162 Merkle tree hashing: tree heads, inclusion and consistency proofs.
//!
//! Leaves are hashed as `SHA-256(0x00 || entry)`, interior nodes as
//! `SHA-256(0x01 || left || right)`, and a tree of `n > 1` leaves is split at the largest power
//! of two smaller than `n`. The hash of the empty tree is `SHA-256("")`.
//!
//! Functions that build proofs take the leaf hashes of the whole tree (`&[Hash]`); functions
//! that check proofs need only the proof, the sizes and the roots.
//!
//! ```
//! use approvals_audit::merkle::{leaf_hash, root, inclusion_proof, verify_inclusion};
//!
//! let leaves: Vec<_> = [&b"a"[..], b"b", b"c"].iter().map(|e| leaf_hash(e)).collect();
//! let head = root(&leaves);
//! let proof = inclusion_proof(&leaves, 2).unwrap();
//! assert!(verify_inclusion(&leaves[2], 2, 3, &proof, &head).is_ok());
//! ```

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree head.
pub type Hash = [u8; 32];

/// The tree head of the empty tree: `SHA-256("")` (`e3b0c442...b855`).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Why a proof could not be built or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree (`index >= size`).
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof was asked for between sizes that cannot be compared
    /// (the old size is larger than the new one).
    #[error("cannot prove consistency from size {old_size} to the smaller size {new_size}")]
    SizeOrder {
        /// The earlier tree size.
        old_size: u64,
        /// The later tree size.
        new_size: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("the proof has the wrong length for these tree sizes")]
    WrongLength,
    /// The proof does not lead to the expected root hash(es).
    #[error("the proof does not match the root hash")]
    RootMismatch,
}

/// Hashes one log entry as a Merkle leaf: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// Hashes two child nodes into their parent: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly smaller than `n` (`n >= 2`): RFC 6962's split point.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The tree head (Merkle tree hash, `MTH`) over the given leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(*leaf);
    }
    frontier.root()
}

/// Builds the inclusion proof (audit path) of leaf `index` in the tree made of `leaves`
/// (RFC 6962 §2.1.1, `PATH(m, D[n])`), ordered from the leaf's sibling up to the root.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let size = leaves.len() as u64;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(leaves, index as usize, &mut proof);
    Ok(proof)
}

fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(&leaves[..k], m, out);
        out.push(root(&leaves[k..]));
    } else {
        path(&leaves[k..], m - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// Checks that `leaf` is the leaf at `index` of the tree of `size` leaves whose head is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Builds the consistency proof between the first `old_size` leaves of `leaves` and the whole
/// tree (RFC 6962 §2.1.2, `PROOF(m, D[n])`). The proof is empty when `old_size` is 0 or equal
/// to the tree size.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let new_size = leaves.len() as u64;
    if old_size > new_size {
        return Err(ProofError::SizeOrder { old_size, new_size });
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < new_size {
        subproof(leaves, old_size as usize, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(leaves: &[Hash], m: usize, complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(&leaves[..k], m, complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(&leaves[k..], m - k, false, out);
        out.push(root(&leaves[..k]));
    }
}

/// Checks that the tree of `old_size` leaves with head `old_root` is a prefix of the tree of
/// `new_size` leaves with head `new_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeOrder { old_size, new_size });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old_size == 0 {
        // Every tree extends the empty tree.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    let Some((first, rest)) = proof.split_first() else {
        return Err(ProofError::WrongLength);
    };
    // When the old tree is a complete subtree, its head is the implicit first proof element.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    let mut f = old_size - 1;
    let mut s = new_size - 1;
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr = *seed;
    let mut sr = *seed;
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// An append-only Merkle tree that keeps only the heads of its maximal complete subtrees
/// (at most 64 hashes), enough to compute the current tree head after each append.
///
/// ```
/// use approvals_audit::merkle::{Frontier, leaf_hash, EMPTY_ROOT};
///
/// let mut tree = Frontier::new();
/// assert_eq!(tree.root(), EMPTY_ROOT);
/// tree.push(leaf_hash(b"first"));
/// assert_eq!(tree.size(), 1);
/// assert_eq!(tree.root(), leaf_hash(b"first"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Heads of the complete subtrees, largest (leftmost) first.
    heads: Vec<Hash>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        // Each trailing one bit of the old size is a complete subtree that the new leaf
        // completes into a larger one.
        let mut carry = self.size;
        while carry & 1 == 1 {
            // `heads` holds one hash per set bit of `size`, so this cannot be empty here.
            if let Some(left) = self.heads.pop() {
                node = node_hash(&left, &node);
            }
            carry >>= 1;
        }
        self.heads.push(node);
        self.size += 1;
    }

    /// The tree head of the leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.heads.iter().rev();
        let Some(last) = iter.next() else {
            return EMPTY_ROOT;
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    // Certificate Transparency reference leaves and the tree heads for sizes 0..=8.
    const DATA: [&[u8]; 8] = [
        b"",
        &[0x00],
        &[0x10],
        &[0x20, 0x21],
        &[0x30, 0x31],
        &[0x40, 0x41, 0x42, 0x43],
        &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
        &[
            0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
            0x6e, 0x6f,
        ],
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn reference_leaves() -> Vec<Hash> {
        DATA.iter().map(|d| leaf_hash(d)).collect()
    }

    #[test]
    fn split_is_largest_power_of_two_below_n() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(split(n), k, "n = {n}");
        }
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, Hash::from(Sha256::digest(b"")));
        assert_eq!(root(&[]), h(ROOTS[0]));
    }

    #[test]
    fn roots_match_reference_vectors() {
        let leaves = reference_leaves();
        for n in 0..=8 {
            assert_eq!(root(&leaves[..n]), h(ROOTS[n]), "size {n}");
        }
    }

    #[test]
    fn hand_built_three_leaf_tree() {
        let [a, b, c] = [leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")];
        assert_eq!(root(&[a, b, c]), node_hash(&node_hash(&a, &b), &c));
        assert_eq!(
            inclusion_proof(&[a, b, c], 2).unwrap(),
            vec![node_hash(&a, &b)]
        );
        assert_eq!(inclusion_proof(&[a, b, c], 0).unwrap(), vec![b, c]);
    }

    #[test]
    fn inclusion_proofs_match_reference_vectors() {
        let leaves = reference_leaves();
        let cases: [(u64, &[&str]); 2] = [
            (
                0,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, want) in cases {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(inclusion_proof(&leaves, index).unwrap(), want);
            let leaf = &leaves[index as usize];
            verify_inclusion(leaf, index, 8, &want, &h(ROOTS[8])).unwrap();
        }
    }

    #[test]
    fn consistency_proofs_match_reference_vectors() {
        let leaves = reference_leaves();
        let cases: [(u64, u64, &[&str]); 3] = [
            (
                2,
                8,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (m, n, want) in cases {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(consistency_proof(&leaves[..n as usize], m).unwrap(), want);
            let (old, new) = (h(ROOTS[m as usize]), h(ROOTS[n as usize]));
            verify_consistency(m, n, &old, &new, &want).unwrap();
            assert_eq!(
                verify_consistency(m, n, &h(ROOTS[m as usize - 1]), &new, &want),
                Err(ProofError::RootMismatch)
            );
        }
    }

    #[test]
    fn degenerate_sizes() {
        let leaves = reference_leaves();
        assert_eq!(
            inclusion_proof(&leaves, 8),
            Err(ProofError::IndexOutOfRange { index: 8, size: 8 })
        );
        assert_eq!(
            inclusion_proof(&leaves[..1], 0).unwrap(),
            Vec::<Hash>::new()
        );
        verify_inclusion(&leaves[0], 0, 1, &[], &leaves[0]).unwrap();
        let r = root(&leaves);
        assert_eq!(consistency_proof(&leaves, 8).unwrap(), Vec::<Hash>::new());
        verify_consistency(8, 8, &r, &r, &[]).unwrap();
        verify_consistency(0, 8, &EMPTY_ROOT, &r, &[]).unwrap();
        assert!(verify_consistency(8, 8, &r, &leaves[0], &[]).is_err());
        assert!(verify_consistency(3, 8, &r, &r, &[]).is_err());
        assert!(verify_consistency(8, 3, &r, &r, &[]).is_err());
        assert!(consistency_proof(&leaves[..3], 4).is_err());
    }

    fn leaves_strategy() -> impl Strategy<Value = Vec<Hash>> {
        (1usize..70).prop_map(|n| {
            (0..n)
                .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
                .collect()
        })
    }

    proptest! {
        // Each case checks every index and every older size of its tree.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn frontier_matches_recursive_definition(leaves in leaves_strategy()) {
            fn mth(d: &[Hash]) -> Hash {
                match d.len() {
                    0 => EMPTY_ROOT,
                    1 => d[0],
                    n => { let k = split(n); node_hash(&mth(&d[..k]), &mth(&d[k..])) }
                }
            }
            let mut f = Frontier::new();
            for (i, leaf) in leaves.iter().enumerate() {
                f.push(*leaf);
                prop_assert_eq!(f.root(), mth(&leaves[..=i]));
            }
        }

        #[test]
        fn every_inclusion_proof_verifies_and_any_flipped_bit_fails(
            leaves in leaves_strategy(), pick in any::<u64>(), bit in 0usize..256,
        ) {
            let size = leaves.len() as u64;
            let head = root(&leaves);
            for index in 0..size {
                let proof = inclusion_proof(&leaves, index).unwrap();
                let leaf = &leaves[index as usize];
                prop_assert!(verify_inclusion(leaf, index, size, &proof, &head).is_ok());
                if size > 1 {
                    let other = (index + 1 + pick % (size - 1)) % size;
                    prop_assert!(verify_inclusion(leaf, other, size, &proof, &head).is_err());
                }
                // (A wrong tree size is not always detectable from the proof alone: the
                // size is authenticated together with the root, by the signed checkpoint.)
                let mut bad_leaf = *leaf;
                bad_leaf[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_inclusion(&bad_leaf, index, size, &proof, &head).is_err());
                let mut bad_root = head;
                bad_root[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_inclusion(leaf, index, size, &proof, &bad_root).is_err());
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    let at = (pick % proof.len() as u64) as usize;
                    bad[at][bit / 8] ^= 1 << (bit % 8);
                    prop_assert!(verify_inclusion(leaf, index, size, &bad, &head).is_err());
                    prop_assert!(verify_inclusion(leaf, index, size, &proof[1..], &head).is_err());
                }
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_any_flipped_bit_fails(
            leaves in leaves_strategy(), pick in any::<u64>(), bit in 0usize..256,
        ) {
            let n = leaves.len() as u64;
            let new_root = root(&leaves);
            for m in 1..=n {
                let old_root = root(&leaves[..m as usize]);
                let proof = consistency_proof(&leaves, m).unwrap();
                prop_assert!(verify_consistency(m, n, &old_root, &new_root, &proof).is_ok());
                let mut bad_old = old_root;
                bad_old[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(m, n, &bad_old, &new_root, &proof).is_err());
                let mut bad_new = new_root;
                bad_new[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(m, n, &old_root, &bad_new, &proof).is_err());
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    let at = (pick % proof.len() as u64) as usize;
                    bad[at][bit / 8] ^= 1 << (bit % 8);
                    prop_assert!(verify_consistency(m, n, &old_root, &new_root, &bad).is_err());
                    prop_assert!(
                        verify_consistency(m, n, &old_root, &new_root, &proof[..proof.len() - 1])
                            .is_err()
                    );
                }
                if m < n {
                    // A tree that differs in one old leaf is not an extension of the old tree.
                    let mut forked = leaves.clone();
                    forked[(pick % m) as usize][0] ^= 1;
                    let fork_root = root(&forked);
                    let fork_proof = consistency_proof(&forked, m).unwrap();
                    prop_assert!(
                        verify_consistency(m, n, &old_root, &fork_root, &fork_proof).is_err()
                    );
                }
            }
        }
    }
}

//! ChainIDs: the identity of a stack of layers, as the OCI image spec defines it.
//!
//! `ChainID(L0) = DiffID(L0)` and `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`,
//! hashing the digest strings. containerd names committed snapshots by ChainID, so this must be
//! exact to the byte.

use stowage_core_types::digest::Digest;

use crate::digester::Digester;

/// The ChainID of the layer stack `diff_ids` (bottom first); `None` for an empty stack.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    chain_ids(diff_ids).pop()
}

/// The ChainID of every prefix of `diff_ids`: element `i` identifies layers `0..=i`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let mut d = Digester::sha256();
                d.update(parent.as_str().as_bytes());
                d.update(b" ");
                d.update(diff_id.as_str().as_bytes());
                d.finish()
            }
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(v: &[&str]) -> Vec<Digest> {
        v.iter().map(|s| Digest::parse(s).unwrap()).collect()
    }

    #[test]
    fn reproduces_reference_chain() {
        let diff_ids = ds(&[
            "sha256:d0fe97fa8b8cefdffcef1d62b65aba51a6c87b6679628a2b50fc6a7a579f764c",
            "sha256:832f21763c8e6b070314e619ebb9ba62f815580da6d0eaec8a1b080bd01575f7",
            "sha256:223b15010c47044b6bab9611c7a322e8da7660a8268949e18edde9c6e3ea3700",
            "sha256:b96fedf8ee00e59bf69cf5bc8ed19e92e66ee8cf83f0174e33127402b650331d",
            "sha256:aff00695be0cebb8a114f8c5187fd6dd3d806273004797a00ad934ec9cd98212",
            "sha256:d442ae63d423b4b1922875c14c3fa4e801c66c689b69bfd853758fde996feffb",
        ]);
        let want = ds(&[
            "sha256:d0fe97fa8b8cefdffcef1d62b65aba51a6c87b6679628a2b50fc6a7a579f764c",
            "sha256:2ae5fa95c0fce5ef33fbb87a7e2f49f2a56064566a37a83b97d3f668c10b43d6",
            "sha256:a8f09c4919857128b1466cc26381de0f9d39a94171534f63859a662d50c396ca",
            "sha256:aa4b58e6ece416031ce00869c5bf4b11da800a397e250de47ae398aea2782294",
            "sha256:bc8b010e53c5f20023bd549d082c74ef8bfc237dc9bbccea2e0552e52bc5fcb1",
            "sha256:33bd296ab7f37bdacff0cb4a5eb671bcb3a141887553ec4157b1e64d6641c1cd",
        ]);
        assert_eq!(chain_ids(&diff_ids), want);
        assert_eq!(chain_id(&diff_ids), Some(want[5].clone()));
        assert_eq!(chain_id(&diff_ids[..1]), Some(diff_ids[0].clone()));
    }

    #[test]
    fn empty_stack_has_no_chain_id() {
        assert_eq!(chain_id(&[]), None);
        assert!(chain_ids(&[]).is_empty());
    }
}

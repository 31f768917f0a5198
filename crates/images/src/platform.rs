//! Choosing the manifest for a platform, as containerd 1.6's `images.Manifest` does with a
//! platform matcher.
//!
//! In an index, entries without a platform are kept, entries whose platform the matcher refuses
//! are dropped, and the rest are ordered by the matcher's preference (stable, entries without a
//! platform last); only the best one is followed. A manifest reached through an index entry
//! without a platform is checked against the OS and architecture of its config.

use stowage_core_types::content::{read_blob, Provider};
use stowage_core_types::mediatype;
use stowage_core_types::platform::{Matcher, Platform};
use stowage_core_types::{Descriptor, Error, Result};

use crate::model::{read_config, read_index, Index, Manifest};

/// Nested indexes deeper than this are refused rather than followed.
const MAX_DEPTH: usize = 16;

/// The entries of `index` the matcher accepts, best first (containerd's ordering: entries
/// without a platform are accepted and sort after those with one).
pub fn matching_manifests(index: &Index, matcher: &Matcher) -> Vec<Descriptor> {
    let mut out: Vec<Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_none_or(|p| matcher.matches(p)))
        .cloned()
        .collect();
    out.sort_by(|a, b| match (&a.platform, &b.platform) {
        (Some(pa), Some(pb)) => matcher.compare(pa, pb),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    out
}

/// The manifest of `image` (a manifest or an index) for the platforms `matcher` accepts,
/// with its descriptor.
///
/// NotFound when nothing matches; when `image` is an index the message lists the platforms it
/// offers. A top-level manifest is returned whatever its platform, as in containerd.
pub fn resolve_manifest(
    provider: &dyn Provider,
    image: &Descriptor,
    matcher: &Matcher,
) -> Result<(Descriptor, Manifest)> {
    let mut offered = Vec::new();
    let found = resolve(provider, image, image, matcher, 0, &mut offered)?;
    found.ok_or_else(|| {
        let offered = if offered.is_empty() {
            "none".to_string()
        } else {
            offered.join(", ")
        };
        Error::not_found(format!(
            "no match for platform in manifest {}: wanted {}, available: {offered}",
            image.digest,
            describe(matcher)
        ))
    })
}

fn describe(matcher: &Matcher) -> String {
    match matcher {
        Matcher::All => "any platform".to_string(),
        Matcher::Ordered(ps) | Matcher::Any(ps) => ps
            .iter()
            .map(Platform::format)
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

fn resolve(
    provider: &dyn Provider,
    top: &Descriptor,
    desc: &Descriptor,
    matcher: &Matcher,
    depth: usize,
    offered: &mut Vec<String>,
) -> Result<Option<(Descriptor, Manifest)>> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid_argument(format!(
            "{}: indexes nested more than {MAX_DEPTH} deep",
            top.digest
        )));
    }
    if mediatype::is_manifest(&desc.media_type) {
        let bytes = read_blob(provider, desc)?;
        let manifest =
            Manifest::parse(&bytes, &desc.media_type).map_err(|e| e.context(&desc.digest))?;
        if desc.digest != top.digest {
            match &desc.platform {
                Some(p) if !matcher.matches(p) => return Ok(None),
                Some(_) => {}
                None => {
                    let config = read_config(provider, &manifest.config)?;
                    // containerd compares only OS and architecture here.
                    let p = Platform::new(config.os, config.architecture, "").normalize();
                    if !matcher.matches(&p) {
                        offered.push(p.format());
                        return Ok(None);
                    }
                }
            }
        }
        return Ok(Some((desc.clone(), manifest)));
    }
    if mediatype::is_index(&desc.media_type) {
        let index = read_index(provider, desc)?;
        offered.extend(index.manifests.iter().filter_map(|d| {
            d.platform
                .as_ref()
                .map(|p| format!("{} ({})", p.format(), d.digest))
        }));
        let Some(best) = matching_manifests(&index, matcher).into_iter().next() else {
            return Ok(None);
        };
        return resolve(provider, top, &best, matcher, depth + 1, offered);
    }
    Err(Error::not_found(format!(
        "unexpected media type {:?} for {}: expected a manifest or an index",
        desc.media_type, desc.digest
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core_types::Digest;

    fn entry(n: u8, platform: Option<&str>) -> Descriptor {
        let digest = Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap();
        let mut d = Descriptor::new(mediatype::OCI_MANIFEST, digest, 1);
        d.platform = platform.map(|p| {
            let parts: Vec<&str> = p.split('/').collect();
            Platform::new(parts[0], parts[1], parts.get(2).copied().unwrap_or(""))
        });
        d
    }

    fn index(entries: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(mediatype::OCI_INDEX.into()),
            manifests: entries,
            annotations: Default::default(),
        }
    }

    #[test]
    fn ordered_matcher_prefers_the_best_variant_and_keeps_unplatformed_last() {
        let idx = index(vec![
            entry(1, None),
            entry(2, Some("linux/arm/v5")),
            entry(3, Some("linux/amd64")),
            entry(4, Some("linux/arm/v7")),
            entry(5, Some("linux/arm/v6")),
        ]);
        let m = Matcher::only(&Platform::parse("linux/arm/v7").unwrap());
        let got: Vec<u8> = matching_manifests(&idx, &m)
            .iter()
            .map(|d| d.digest.encoded().as_bytes()[1] - b'0')
            .collect();
        assert_eq!(got, vec![4, 5, 2, 1]);
    }

    #[test]
    fn arm64_host_falls_back_to_arm_and_amd64_to_386() {
        let idx = index(vec![
            entry(1, Some("linux/386")),
            entry(2, Some("linux/arm/v7")),
            entry(3, Some("linux/arm64/v8")),
        ]);
        let first = |spec: &str| {
            matching_manifests(&idx, &Matcher::only(&Platform::parse(spec).unwrap()))
                .first()
                .map(|d| d.digest.encoded()[..2].to_string())
        };
        assert_eq!(first("linux/arm64").as_deref(), Some("03"));
        assert_eq!(first("linux/amd64").as_deref(), Some("01"));
        assert_eq!(first("linux/arm/v8").as_deref(), Some("02"));
        assert_eq!(first("windows/amd64"), None);
        assert_eq!(matching_manifests(&idx, &Matcher::all()).len(), 3);
    }
}

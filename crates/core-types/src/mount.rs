//! Mounts as snapshotters return them and appliers consume them.
//!
//! A [`Mount`] describes one `mount(2)` call in fstab terms (type, source, options), as
//! containerd's `types.Mount` does; the snapshotters hand out lists of them and the diff
//! applier and `ctr snapshots mounts` consume them.

use serde::{Deserialize, Serialize};

/// One mount: `mount -t <kind> -o <options> <source> <target>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mount {
    /// The filesystem type (`overlay`, `bind`, `tmpfs`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// What is mounted: a directory for `bind`, a device, or a placeholder such as `overlay`.
    #[serde(default)]
    pub source: String,
    /// Where it is mounted, when the mount itself says so; usually empty because the caller
    /// picks the target.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// fstab-style options (`ro`, `rbind`, `lowerdir=/a:/b`, ...), in order.
    #[serde(default)]
    pub options: Vec<String>,
}

impl Mount {
    /// A mount of `kind` from `source` with `options`, and no target.
    pub fn new<I, S>(kind: impl Into<String>, source: impl Into<String>, options: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Mount {
            kind: kind.into(),
            source: source.into(),
            target: String::new(),
            options: options.into_iter().map(Into::into).collect(),
        }
    }

    /// The value of a `key=value` option (`option_value("lowerdir")` on
    /// `lowerdir=/a:/b` gives `/a:/b`).
    ///
    /// When the option is repeated the last one counts, as it does for `mount(8)`.
    pub fn option_value(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find_map(|o| o.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }

    /// True when the bare flag `name` (such as `rbind` or `nodev`) is among the options.
    pub fn has_option(&self, name: &str) -> bool {
        self.options.iter().any(|o| o == name)
    }

    /// True when the mount is read-only: an `ro` option not overridden by a later `rw`.
    pub fn is_readonly(&self) -> bool {
        self.options
            .iter()
            .rev()
            .find(|o| *o == "ro" || *o == "rw")
            .is_some_and(|o| o == "ro")
    }

    /// The overlay lower directories, top-most first (`lowerdir=/top:/below`); empty when the
    /// mount has none.
    pub fn lower_dirs(&self) -> Vec<&str> {
        self.option_value("lowerdir")
            .map(|v| v.split(':').filter(|d| !d.is_empty()).collect())
            .unwrap_or_default()
    }

    /// A read-only version of this mount, as containerd makes one for diffing a snapshot.
    ///
    /// For `overlay`, `upperdir` and `workdir` are dropped and the upper directory becomes the
    /// top-most lower directory; other types lose `rw`/`ro` and get a single `ro` at the end.
    pub fn to_readonly(&self) -> Mount {
        let mut m = self.clone();
        if self.kind == "overlay" {
            let upper = self.option_value("upperdir").map(str::to_string);
            m.options
                .retain(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir="));
            if let Some(upper) = upper {
                for o in &mut m.options {
                    if let Some(lower) = o.strip_prefix("lowerdir=") {
                        *o = format!("lowerdir={upper}:{lower}");
                    }
                }
            }
        } else {
            m.options.retain(|o| o != "ro" && o != "rw");
            m.options.push("ro".to_string());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay() -> Mount {
        Mount::new(
            "overlay",
            "overlay",
            [
                "index=off",
                "workdir=/s/3/work",
                "upperdir=/s/3/fs",
                "lowerdir=/s/2/fs:/s/1/fs",
            ],
        )
    }

    #[test]
    fn json_names_the_kind_type() {
        let m = Mount::new("bind", "/src", ["rbind", "ro"]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"type":"bind","source":"/src","options":["rbind","ro"]}"#
        );
        assert_eq!(serde_json::from_str::<Mount>(&json).unwrap(), m);

        let mut with_target = m.clone();
        with_target.target = "/mnt".into();
        let json = serde_json::to_string(&with_target).unwrap();
        assert!(json.contains(r#""target":"/mnt""#), "{json}");
        assert_eq!(serde_json::from_str::<Mount>(&json).unwrap(), with_target);

        let minimal: Mount = serde_json::from_str(r#"{"type":"tmpfs"}"#).unwrap();
        assert_eq!(minimal, Mount::new("tmpfs", "", Vec::<String>::new()));
        assert!(serde_json::from_str::<Mount>(r#"{"source":"x"}"#).is_err());
    }

    #[test]
    fn option_values_and_flags() {
        let m = overlay();
        assert_eq!(m.option_value("lowerdir"), Some("/s/2/fs:/s/1/fs"));
        assert_eq!(m.option_value("upperdir"), Some("/s/3/fs"));
        assert_eq!(m.option_value("index"), Some("off"));
        // A prefix of a key is not the key.
        assert_eq!(m.option_value("lower"), None);
        assert_eq!(m.option_value("missing"), None);
        assert_eq!(m.lower_dirs(), vec!["/s/2/fs", "/s/1/fs"]);

        let repeated = Mount::new("overlay", "overlay", ["lowerdir=/a", "lowerdir=/b"]);
        assert_eq!(repeated.option_value("lowerdir"), Some("/b"));

        let bind = Mount::new("bind", "/x", ["rbind", "nodev"]);
        assert!(bind.has_option("rbind"));
        assert!(!bind.has_option("bind"));
        assert!(bind.lower_dirs().is_empty());
    }

    #[test]
    fn readonly_follows_the_last_ro_or_rw() {
        assert!(Mount::new("bind", "/x", ["rbind", "ro"]).is_readonly());
        assert!(!Mount::new("bind", "/x", ["rbind"]).is_readonly());
        assert!(!Mount::new("bind", "/x", ["ro", "rw"]).is_readonly());
        assert!(Mount::new("bind", "/x", ["rw", "ro"]).is_readonly());
        assert!(!Mount::new("bind", "/x", ["rootcontext=ro"]).is_readonly());
    }

    #[test]
    fn to_readonly_for_overlay_and_others() {
        let ro = overlay().to_readonly();
        assert_eq!(
            ro.options,
            vec!["index=off", "lowerdir=/s/3/fs:/s/2/fs:/s/1/fs"]
        );
        assert_eq!(ro.lower_dirs(), vec!["/s/3/fs", "/s/2/fs", "/s/1/fs"]);

        let bind = Mount::new("bind", "/x", ["rbind", "rw", "ro"]).to_readonly();
        assert_eq!(bind.options, vec!["rbind", "ro"]);
        assert!(bind.is_readonly());
    }
}

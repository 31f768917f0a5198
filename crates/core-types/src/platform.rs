//! Platforms (`os/arch/variant`): parsing, normalization and matching.
//!
//! The rules are containerd 1.6's `platforms` package: specifiers such as `linux/arm64/v8`,
//! `linux`, `amd64` or `Linux/x86_64`; normalization of the many names architectures go by
//! (`x86_64`→`amd64`, `aarch64`→`arm64`, `armhf`→`arm/v7`, ...); and matchers that decide which
//! entries of a multi-platform index a host can run, in order of preference.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The platform an image or manifest targets, with the OCI JSON field names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// Operating system (`linux`, `windows`, ...).
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// Required OS features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

/// Operating systems Go knows (`GOOS` values); a one-part specifier naming one of these is an OS.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// Architectures Go knows (`GOARCH` values); a one-part specifier naming one of these (after
/// normalization) is an architecture.
const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

const COMPONENT_RULE: &str = "^[A-Za-z0-9_-]+$";

fn valid_component(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Lower-cases an OS name and maps aliases; an empty OS means the host's.
fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return host_os().to_string();
    }
    let os = os.to_ascii_lowercase();
    if os == "macos" {
        "darwin".to_string()
    } else {
        os
    }
}

/// Maps architecture aliases to Go's names and gives each the variant containerd expects:
/// `arm` always carries one (`v7` by default), `arm64/v8`, `amd64/v1` and `386` carry none.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = if variant == "8" || variant == "v8" {
                String::new()
            } else {
                variant
            };
            ("arm64".into(), variant)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), variant)
        }
        _ => (arch, variant),
    }
}

fn host_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// The host architecture under its Go name (Rust's `std::env::consts::ARCH` uses other names).
fn host_arch() -> &'static str {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if little => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "mips" if little => "mipsle",
        "mips64" if little => "mips64le",
        "loongarch64" => "loong64",
        "sparc64" => "sparc64",
        "wasm32" => "wasm",
        other => other,
    }
}

/// The host CPU variant the build targets; only 32-bit ARM has one that matters.
///
/// containerd reads `/proc/cpuinfo` for this; the compile-time target features give the same
/// answer for the binary actually running, without I/O.
fn host_variant() -> &'static str {
    if host_arch() != "arm" {
        ""
    } else if cfg!(target_feature = "v8") {
        "v8"
    } else if cfg!(target_feature = "v7") {
        "v7"
    } else if cfg!(target_feature = "v6") {
        "v6"
    } else {
        "v5"
    }
}

impl Platform {
    /// A platform with only OS, architecture and variant set, taken as given.
    pub fn new(
        os: impl Into<String>,
        architecture: impl Into<String>,
        variant: impl Into<String>,
    ) -> Self {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.into(),
            ..Platform::default()
        }
    }

    /// The platform this process runs on, normalized (`linux/amd64`, `linux/arm64`, ...).
    pub fn host() -> Platform {
        Platform::new(host_os(), host_arch(), host_variant()).normalize()
    }

    /// Parses a specifier the way containerd's `platforms.Parse` does.
    ///
    /// - `os/arch/variant`: all three, normalized; `arm64` without a usable variant gets `v8`.
    /// - `os/arch`: normalized; `arm/v7` is written as plain `arm`.
    /// - `os` alone (a known OS such as `linux`): the host architecture.
    /// - `arch` alone (a known architecture such as `amd64` or `aarch64`): the host OS.
    ///
    /// Components must match `^[A-Za-z0-9_-]+$`; wildcards, empty components and more than
    /// three components are InvalidArgument.
    pub fn parse(specifier: &str) -> Result<Platform> {
        if specifier.contains('*') {
            return Err(Error::invalid_argument(format!(
                "{specifier:?}: wildcards not yet supported"
            )));
        }
        let parts: Vec<&str> = specifier.split('/').collect();
        if let Some(bad) = parts.iter().find(|p| !valid_component(p)) {
            return Err(Error::invalid_argument(format!(
                "{bad:?} is an invalid component of {specifier:?}: platform specifier component must match {COMPONENT_RULE:?}"
            )));
        }
        match parts[..] {
            [one] => {
                let os = normalize_os(one);
                if KNOWN_OS.contains(&os.as_str()) {
                    let arch = host_arch();
                    // The arm default variant is implied, so only a different one is spelled.
                    let variant = if arch == "arm" && host_variant() != "v7" {
                        host_variant()
                    } else {
                        ""
                    };
                    return Ok(Platform::new(os, arch, variant));
                }
                let (arch, mut variant) = normalize_arch(one, "");
                if arch == "arm" && variant == "v7" {
                    variant.clear();
                }
                if KNOWN_ARCH.contains(&arch.as_str()) {
                    return Ok(Platform::new(host_os(), arch, variant));
                }
                Err(Error::invalid_argument(format!(
                    "{specifier:?}: unknown operating system or architecture"
                )))
            }
            [os, arch] => {
                let (arch, mut variant) = normalize_arch(arch, "");
                if arch == "arm" && variant == "v7" {
                    variant.clear();
                }
                Ok(Platform::new(normalize_os(os), arch, variant))
            }
            [os, arch, variant] => {
                let (arch, mut variant) = normalize_arch(arch, variant);
                if arch == "arm64" && variant.is_empty() {
                    variant = "v8".into();
                }
                Ok(Platform::new(normalize_os(os), arch, variant))
            }
            _ => Err(Error::invalid_argument(format!(
                "{specifier:?}: cannot parse platform specifier: expected at most 3 components (os/arch/variant), got {}",
                parts.len()
            ))),
        }
    }

    /// The specifier form, `os/arch[/variant]`, or `unknown` when the OS is empty.
    pub fn format(&self) -> String {
        if self.os.is_empty() {
            return "unknown".to_string();
        }
        [&self.os, &self.architecture, &self.variant]
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// This platform with OS and architecture names canonicalized and the variant made
    /// explicit or dropped as containerd does; OS version and features are kept.
    pub fn normalize(&self) -> Platform {
        let (architecture, variant) = normalize_arch(&self.architecture, &self.variant);
        Platform {
            os: normalize_os(&self.os),
            architecture,
            variant,
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
        }
    }

    /// True when `self` and `other` name the same OS, architecture and variant once both are
    /// normalized (OS version and features are not compared, as in containerd 1.6 on Linux).
    pub fn same_as(&self, other: &Platform) -> bool {
        let a = self.normalize();
        let b = other.normalize();
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }

    /// The platforms a host of this platform can run, best first: itself, then older variants
    /// of its architecture (`amd64/v3` → `v2`, `v1`, then `386`; `arm/v8` → `v7`..`v5`;
    /// `arm64` → 32-bit `arm` from `v8` down).
    fn compatible(&self) -> Vec<Platform> {
        let mut out = vec![self.clone()];
        let sibling = |arch: &str, variant: String| Platform {
            architecture: arch.to_string(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            variant,
        };
        let level = self
            .variant
            .strip_prefix('v')
            .unwrap_or(&self.variant)
            .parse::<i64>()
            .ok();
        match self.architecture.as_str() {
            "amd64" => {
                if let Some(v) = level.filter(|v| *v > 1) {
                    out.extend((1..v).rev().map(|l| sibling("amd64", format!("v{l}"))));
                }
                out.push(sibling("386", String::new()));
            }
            "arm" => {
                if let Some(v) = level.filter(|v| *v > 5) {
                    out.extend((5..v).rev().map(|l| sibling("arm", format!("v{l}"))));
                }
            }
            "arm64" => {
                let variant = if self.variant.is_empty() {
                    "v8".to_string()
                } else {
                    self.variant.clone()
                };
                out.extend(sibling("arm", variant).compatible());
            }
            _ => {}
        }
        out
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format())
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Platform::parse(s)
    }
}

/// Decides which platforms are acceptable and which of two is preferred.
///
/// Every candidate is normalized before it is compared, so `linux/x86_64` matches a matcher
/// built from `linux/amd64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Accepts any of the platforms, preferring earlier ones.
    Ordered(Vec<Platform>),
    /// Accepts any of the platforms, without preferring one over another.
    Any(Vec<Platform>),
    /// Accepts everything and prefers nothing.
    All,
}

impl Matcher {
    /// Accepts `platform` and what a host of that platform can also run, best first
    /// (containerd's `platforms.Only`): `linux/arm/v8` also takes `arm/v7`, `v6` and `v5`;
    /// `linux/arm64` also takes 32-bit `arm` up to `v8`; `linux/amd64` also takes `386`.
    pub fn only(platform: &Platform) -> Matcher {
        Matcher::ordered(platform.normalize().compatible())
    }

    /// Accepts exactly `platform` (after normalization), nothing older.
    pub fn only_strict(platform: &Platform) -> Matcher {
        Matcher::ordered([platform.clone()])
    }

    /// Accepts any of `platforms`, preferring earlier ones.
    pub fn ordered(platforms: impl IntoIterator<Item = Platform>) -> Matcher {
        Matcher::Ordered(platforms.into_iter().map(|p| p.normalize()).collect())
    }

    /// Accepts any of `platforms` with no preference between them.
    pub fn any(platforms: impl IntoIterator<Item = Platform>) -> Matcher {
        Matcher::Any(platforms.into_iter().map(|p| p.normalize()).collect())
    }

    /// Accepts every platform.
    pub fn all() -> Matcher {
        Matcher::All
    }

    /// The host's default: [`Matcher::only`] of [`Platform::host`].
    pub fn host() -> Matcher {
        Matcher::only(&Platform::host())
    }

    fn platforms(&self) -> &[Platform] {
        match self {
            Matcher::Ordered(ps) | Matcher::Any(ps) => ps,
            Matcher::All => &[],
        }
    }

    /// True when `platform` is acceptable.
    pub fn matches(&self, platform: &Platform) -> bool {
        match self {
            Matcher::All => true,
            _ => self.platforms().iter().any(|p| p.same_as(platform)),
        }
    }

    /// True when `a` is preferred over `b`.
    ///
    /// Ordered: `a` is less when it matches an earlier entry than `b` does (or `b` matches
    /// none). Any: `a` is less only when it matches and `b` does not. All: never.
    pub fn less(&self, a: &Platform, b: &Platform) -> bool {
        match self {
            Matcher::All => false,
            Matcher::Ordered(ps) => {
                for p in ps {
                    match (p.same_as(a), p.same_as(b)) {
                        (true, false) => return true,
                        (false, false) => continue,
                        _ => return false,
                    }
                }
                false
            }
            Matcher::Any(_) => self.matches(a) && !self.matches(b),
        }
    }

    /// [`less`](Self::less) as an [`Ordering`], for `sort_by` (stable sorts keep the order of
    /// equally preferred platforms).
    pub fn compare(&self, a: &Platform, b: &Platform) -> Ordering {
        if self.less(a, b) {
            Ordering::Less
        } else if self.less(b, a) {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn pv(os: &str, arch: &str, variant: &str) -> Platform {
        Platform::new(os, arch, variant)
    }

    #[test]
    fn parse_three_and_two_components() {
        let cases = [
            ("linux/arm64", pv("linux", "arm64", ""), "linux/arm64"),
            (
                "linux/arm64/v8",
                pv("linux", "arm64", "v8"),
                "linux/arm64/v8",
            ),
            (
                "linux/aarch64/8",
                pv("linux", "arm64", "v8"),
                "linux/arm64/v8",
            ),
            ("linux/arm", pv("linux", "arm", ""), "linux/arm"),
            ("linux/arm/v6", pv("linux", "arm", "v6"), "linux/arm/v6"),
            ("linux/arm/7", pv("linux", "arm", "v7"), "linux/arm/v7"),
            ("linux/armhf", pv("linux", "arm", ""), "linux/arm"),
            ("linux/armel", pv("linux", "arm", "v6"), "linux/arm/v6"),
            ("Linux/x86_64", pv("linux", "amd64", ""), "linux/amd64"),
            ("linux/amd64/v1", pv("linux", "amd64", ""), "linux/amd64"),
            (
                "linux/amd64/v3",
                pv("linux", "amd64", "v3"),
                "linux/amd64/v3",
            ),
            ("linux/i386", pv("linux", "386", ""), "linux/386"),
            ("linux/s390x", pv("linux", "s390x", ""), "linux/s390x"),
            ("windows/amd64", pv("windows", "amd64", ""), "windows/amd64"),
            ("macOS/arm64", pv("darwin", "arm64", ""), "darwin/arm64"),
        ];
        for (input, want, formatted) in cases {
            let got = p(input);
            assert_eq!(got, want, "{input}");
            assert_eq!(got.to_string(), formatted, "{input}");
            // Formatting is stable under a re-parse.
            assert_eq!(p(formatted).to_string(), formatted, "{input}");
            assert!(Matcher::only_strict(&got).matches(&want), "{input}");
        }
    }

    #[test]
    fn parse_one_component_fills_in_from_the_host() {
        let host = Platform::host();
        let os = host.os.clone();
        for (input, arch, variant) in [
            ("arm", "arm", ""),
            ("armel", "arm", "v6"),
            ("armhf", "arm", ""),
            ("Aarch64", "arm64", ""),
            ("x86_64", "amd64", ""),
            ("i386", "386", ""),
            ("s390x", "s390x", ""),
        ] {
            assert_eq!(p(input), pv(&os, arch, variant), "{input}");
        }
        let linux = p("linux");
        assert_eq!(linux.os, "linux");
        assert_eq!(linux.architecture, host.architecture);
        let darwin = p("macOS");
        assert_eq!(darwin.os, "darwin");
        assert_eq!(darwin.architecture, host.architecture);
    }

    #[test]
    fn parse_rejects_malformed_specifiers() {
        for bad in [
            "",
            "/linux/arm",
            "linux/arm/",
            "linux /arm",
            "linux/&arm",
            "linux/arm/foo/bar",
            "*",
            "linux/*",
            "notanos",
        ] {
            let err = Platform::parse(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(err.message().contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        let err = Platform::parse("linux/&arm").unwrap_err();
        assert_eq!(
            err.message(),
            r#""&arm" is an invalid component of "linux/&arm": platform specifier component must match "^[A-Za-z0-9_-]+$""#
        );
        assert!(Platform::parse("a/b/c/d")
            .unwrap_err()
            .message()
            .contains("got 4"));
    }

    #[test]
    fn normalization_of_names_and_variants() {
        let cases = [
            (pv("Linux", "x86_64", ""), pv("linux", "amd64", "")),
            (pv("linux", "x86-64", "v1"), pv("linux", "amd64", "")),
            (pv("linux", "aarch64", ""), pv("linux", "arm64", "")),
            (pv("linux", "arm64", "v8"), pv("linux", "arm64", "")),
            (pv("linux", "arm64", "V8"), pv("linux", "arm64", "")),
            (pv("linux", "arm64", "v9"), pv("linux", "arm64", "v9")),
            (pv("linux", "armhf", ""), pv("linux", "arm", "v7")),
            (pv("linux", "armel", ""), pv("linux", "arm", "v6")),
            (pv("linux", "arm", ""), pv("linux", "arm", "v7")),
            (pv("linux", "arm", "5"), pv("linux", "arm", "v5")),
            (pv("linux", "i386", "whatever"), pv("linux", "386", "")),
            (pv("macos", "amd64", ""), pv("darwin", "amd64", "")),
        ];
        for (input, want) in cases {
            assert_eq!(input.normalize(), want, "{input:?}");
        }
        assert_eq!(pv("", "amd64", "").normalize().os, Platform::host().os);
        let mut win = pv("windows", "AMD64", "");
        win.os_version = "10.0.17763.1".into();
        assert_eq!(win.normalize().os_version, "10.0.17763.1");
    }

    #[test]
    fn format_skips_empty_parts_and_names_unknown() {
        assert_eq!(Platform::default().format(), "unknown");
        assert_eq!(pv("linux", "", "").format(), "linux");
        assert_eq!(pv("linux", "arm", "v7").format(), "linux/arm/v7");
    }

    #[test]
    fn host_is_normalized_and_parses_back() {
        let host = Platform::host();
        assert_eq!(host, host.normalize());
        assert!(!host.os.is_empty() && !host.architecture.is_empty());
        assert!(KNOWN_OS.contains(&host.os.as_str()), "{host}");
        assert!(KNOWN_ARCH.contains(&host.architecture.as_str()), "{host}");
        assert!(Matcher::host().matches(&host));
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(host.to_string(), "linux/amd64");
            assert!(Matcher::host().matches(&p("linux/386")));
        }
    }

    /// Checks `Matcher::only(platform)` accepts exactly the `yes` specifiers among
    /// `yes` and `no`.
    fn check_only(platform: &str, yes: &[&str], no: &[&str]) {
        let m = Matcher::only(&p(platform));
        for s in yes {
            assert!(m.matches(&p(s)), "only({platform}) should match {s}");
        }
        for s in no {
            assert!(!m.matches(&p(s)), "only({platform}) should not match {s}");
        }
    }

    #[test]
    fn only_falls_back_to_what_the_cpu_can_also_run() {
        check_only(
            "linux/amd64",
            &["linux/amd64", "linux/386", "linux/x86_64"],
            &[
                "linux/amd64/v2",
                "linux/arm/v7",
                "linux/arm64",
                "windows/amd64",
            ],
        );
        check_only(
            "linux/amd64/v3",
            &[
                "linux/amd64",
                "linux/amd64/v1",
                "linux/amd64/v2",
                "linux/amd64/v3",
                "linux/386",
            ],
            &["linux/amd64/v4", "linux/arm64"],
        );
        check_only(
            "linux/386",
            &["linux/386"],
            &["linux/amd64", "linux/arm/v7", "windows/386"],
        );
        check_only(
            "linux/arm/v8",
            &[
                "linux/arm",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
            ],
            &["linux/arm/v4", "linux/arm64", "linux/amd64", "windows/arm"],
        );
        check_only(
            "linux/arm/v7",
            &[
                "linux/arm",
                "linux/armhf",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
            ],
            &["linux/arm/v4", "linux/arm/v8", "linux/arm64"],
        );
        // Plain `arm` means v7, which a v6 CPU cannot run.
        check_only(
            "linux/arm/v6",
            &["linux/arm/v5", "linux/arm/v6", "linux/armel"],
            &["linux/arm", "linux/arm/v4", "linux/arm/v7"],
        );
        check_only(
            "linux/arm/v5",
            &["linux/arm/v5"],
            &["linux/arm", "linux/arm/v4", "linux/arm/v6"],
        );
        check_only(
            "linux/arm/v4",
            &["linux/arm/v4"],
            &["linux/arm/v5", "linux/arm"],
        );
        check_only(
            "linux/arm64",
            &[
                "linux/arm",
                "linux/arm/v5",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm/v8",
                "linux/arm64",
                "linux/arm64/v8",
                "linux/aarch64",
            ],
            &[
                "linux/amd64",
                "linux/arm/v4",
                "linux/arm/v9",
                "linux/arm64/v9",
                "windows/arm64",
            ],
        );
    }

    #[test]
    fn only_strict_takes_no_fallbacks() {
        let m = Matcher::only_strict(&p("linux/arm/v7"));
        assert!(m.matches(&p("linux/arm")));
        assert!(m.matches(&p("linux/arm/v7")));
        assert!(!m.matches(&p("linux/arm/v6")));
        let m = Matcher::only_strict(&p("linux/amd64"));
        assert!(!m.matches(&p("linux/386")));
        let m = Matcher::only_strict(&p("linux/arm64"));
        assert!(m.matches(&p("linux/arm64/v8")));
        assert!(!m.matches(&p("linux/arm/v8")));
    }

    #[test]
    fn ordered_prefers_earlier_entries() {
        let m = Matcher::only(&p("linux/arm64"));
        let mut candidates = [
            p("linux/arm/v5"),
            p("linux/amd64"),
            p("linux/arm/v7"),
            p("linux/arm64"),
            p("linux/arm/v8"),
        ];
        candidates.sort_by(|a, b| m.compare(a, b));
        let order: Vec<String> = candidates.iter().map(Platform::to_string).collect();
        // Matched platforms come in the matcher's order; unmatched ones sort last.
        assert_eq!(
            order,
            [
                "linux/arm64",
                "linux/arm/v8",
                "linux/arm/v7",
                "linux/arm/v5",
                "linux/amd64"
            ]
        );

        let m = Matcher::ordered([p("linux/amd64"), p("linux/arm64")]);
        assert!(m.less(&p("linux/amd64"), &p("linux/arm64")));
        assert!(!m.less(&p("linux/arm64"), &p("linux/amd64")));
        assert!(m.less(&p("linux/arm64"), &p("windows/amd64")));
        assert!(!m.less(&p("linux/amd64"), &p("linux/x86_64")));
        assert!(!m.matches(&p("linux/386")));
    }

    #[test]
    fn any_accepts_all_listed_without_preference() {
        let m = Matcher::any([p("linux/amd64"), p("linux/arm64")]);
        assert!(m.matches(&p("linux/arm64")));
        assert!(m.matches(&p("linux/x86_64")));
        assert!(!m.matches(&p("linux/386")));
        assert!(!m.less(&p("linux/amd64"), &p("linux/arm64")));
        assert!(!m.less(&p("linux/arm64"), &p("linux/amd64")));
        assert!(m.less(&p("linux/arm64"), &p("linux/s390x")));
        assert!(!m.less(&p("linux/s390x"), &p("linux/arm64")));
    }

    #[test]
    fn all_accepts_everything() {
        let m = Matcher::all();
        assert!(m.matches(&p("linux/s390x")));
        assert!(m.matches(&Platform::default()));
        assert!(!m.less(&p("linux/amd64"), &p("linux/arm64")));
        assert_eq!(
            m.compare(&p("linux/amd64"), &p("linux/arm64")),
            Ordering::Equal
        );
    }

    #[test]
    fn serde_shape_uses_oci_names() {
        let mut pl = pv("windows", "amd64", "");
        pl.os_version = "10.0.17763.1".into();
        pl.os_features = vec!["win32k".into()];
        let json = serde_json::to_string(&pl).unwrap();
        assert_eq!(
            json,
            r#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1","os.features":["win32k"]}"#
        );
        assert_eq!(serde_json::from_str::<Platform>(&json).unwrap(), pl);
        let arm: Platform =
            serde_json::from_str(r#"{"architecture":"arm","os":"linux","variant":"v7"}"#).unwrap();
        assert_eq!(arm, pv("linux", "arm", "v7"));
    }

    /// Answers queries with containerd's own `platforms` package. Each input line is a JSON
    /// array: `["P", spec]` parses, `["N", os, arch, variant]` normalizes, `["O", spec, cand]`
    /// asks `Only(Parse(spec)).Match(Parse(cand))` and `["L", spec, a, b]` asks `Less`.
    const GO_PLATFORMS_PROGRAM: &str = r#"package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/containerd/containerd/platforms"
	specs "github.com/opencontainers/image-spec/specs-go/v1"
)

func must(s string) specs.Platform {
	p, err := platforms.Parse(s)
	if err != nil {
		panic(err)
	}
	return p
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var q []string
		if err := json.Unmarshal(in.Bytes(), &q); err != nil {
			panic(err)
		}
		var res interface{}
		switch q[0] {
		case "P":
			p, err := platforms.Parse(q[1])
			if err != nil {
				res = map[string]string{"err": err.Error()}
			} else {
				res = []string{p.OS, p.Architecture, p.Variant}
			}
		case "N":
			p := platforms.Normalize(specs.Platform{OS: q[1], Architecture: q[2], Variant: q[3]})
			res = []string{p.OS, p.Architecture, p.Variant}
		case "O":
			res = platforms.Only(must(q[1])).Match(must(q[2]))
		case "L":
			res = platforms.Only(must(q[1])).Less(must(q[2]), must(q[3]))
		}
		b, _ := json.Marshal(res)
		fmt.Fprintf(out, "%s\n", b)
	}
}
"#;

    /// Runs `queries` through [`GO_PLATFORMS_PROGRAM`]; `None` when Go is missing and
    /// `STOWAGE_SKIP_EXTERNAL=1` allows skipping.
    fn go_platforms(queries: &[Vec<String>]) -> Option<Vec<serde_json::Value>> {
        if !crate::gotest::have_containerd_package("platforms", "containerd's platforms package") {
            return None;
        }
        let lines: Vec<String> = queries
            .iter()
            .map(|q| serde_json::to_string(q).unwrap())
            .collect();
        let results: Vec<serde_json::Value> =
            crate::gotest::run_lines("platforms", GO_PLATFORMS_PROGRAM, &lines)
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        assert_eq!(results.len(), queries.len(), "one answer per query");
        Some(results)
    }

    const OSES: &[&str] = &[
        "linux", "Linux", "windows", "macOS", "darwin", "freebsd", "plan9",
    ];
    const ARCHES: &[&str] = &[
        "amd64", "x86_64", "x86-64", "AMD64", "aarch64", "arm64", "arm", "armhf", "armel", "i386",
        "386", "s390x", "ppc64le", "riscv64", "mips64le", "wasm", "sparc64", "foo",
    ];
    const VARIANTS: &[&str] = &[
        "", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "5", "6", "7", "8", "V8", "vX",
    ];

    /// Every specifier shape from the tables above, plus malformed ones.
    fn specifiers() -> Vec<String> {
        let mut out = Vec::new();
        for os in OSES {
            out.push(os.to_string());
            for arch in ARCHES {
                out.push(format!("{os}/{arch}"));
                for v in VARIANTS.iter().filter(|v| !v.is_empty()) {
                    out.push(format!("{os}/{arch}/{v}"));
                }
            }
        }
        out.extend(ARCHES.iter().map(|a| a.to_string()));
        for bad in [
            "",
            "/linux",
            "linux/",
            "linux//arm",
            "linux/arm/v7/x",
            "linux/*",
            "*",
            "lin ux",
            "linux/a.b",
            "unknownthing",
            "linux/arm/",
            "a/b/c/d/e",
        ] {
            out.push(bad.to_string());
        }
        out
    }

    #[test]
    fn parse_and_normalize_agree_with_containerd() {
        let specs = specifiers();
        let mut queries: Vec<Vec<String>> =
            specs.iter().map(|s| vec!["P".into(), s.clone()]).collect();
        for os in OSES.iter().chain(&[""]) {
            for arch in ARCHES {
                for v in VARIANTS {
                    queries.push(vec![
                        "N".into(),
                        os.to_string(),
                        arch.to_string(),
                        v.to_string(),
                    ]);
                }
            }
        }
        let Some(answers) = go_platforms(&queries) else {
            return;
        };
        for (q, go) in queries.iter().zip(answers) {
            let ours = match q[0].as_str() {
                "P" => Platform::parse(&q[1]),
                _ => Ok(Platform::new(&q[1], &q[2], &q[3]).normalize()),
            };
            match (ours, go.get("err").and_then(|e| e.as_str())) {
                (Ok(p), None) => {
                    assert_eq!(
                        go,
                        serde_json::json!([p.os, p.architecture, p.variant]),
                        "{q:?}"
                    );
                }
                (Err(e), Some(go_err)) => {
                    // Same words; ours may add what was expected after containerd's text.
                    let go_msg = go_err.strip_suffix(": invalid argument").unwrap_or(go_err);
                    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{q:?}");
                    assert!(e.message().starts_with(go_msg), "{q:?}: {e} vs {go_err}");
                }
                (ours, _) => panic!("{q:?}: we say {ours:?}, containerd says {go}"),
            }
        }
    }

    #[test]
    fn only_matching_and_preference_agree_with_containerd() {
        let valid: Vec<String> = specifiers()
            .into_iter()
            .filter(|s| Platform::parse(s).is_ok() && !s.contains("plan9"))
            .collect();
        // All pairs would be ~3 million queries; a deterministic stride keeps it near 90 000,
        // a couple of seconds.
        let hosts: Vec<&String> = valid.iter().step_by(7).collect();
        let candidates: Vec<&String> = valid.iter().step_by(5).collect();
        let mut queries = Vec::new();
        for h in &hosts {
            for c in &candidates {
                queries.push(vec!["O".to_string(), h.to_string(), c.to_string()]);
            }
        }
        for (i, h) in hosts.iter().enumerate() {
            for pair in candidates.chunks(2).skip(i % 3).step_by(3) {
                if let [a, b] = pair {
                    queries.push(vec![
                        "L".into(),
                        h.to_string(),
                        a.to_string(),
                        b.to_string(),
                    ]);
                }
            }
        }
        let Some(answers) = go_platforms(&queries) else {
            return;
        };
        let mut matched = 0;
        for (q, go) in queries.iter().zip(answers) {
            let m = Matcher::only(&p(&q[1]));
            let ours = match q[0].as_str() {
                "O" => m.matches(&p(&q[2])),
                _ => m.less(&p(&q[2]), &p(&q[3])),
            };
            assert_eq!(serde_json::Value::Bool(ours), go, "{q:?}");
            matched += usize::from(ours);
        }
        assert!(
            matched > 100,
            "only {matched} positive answers: the sample is too thin"
        );
    }
}

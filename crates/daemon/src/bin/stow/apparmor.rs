//! `--apparmor-default-profile NAME`: containerd's default AppArmor profile for containers,
//! loaded under NAME unless a profile of that name is loaded already, as ctr does it (on the
//! client's host, before the record is written; the record only names the profile).
//!
//! ctr's steps, in its order, so that a host without AppArmor fails at the same point: the
//! kernel's list of loaded profiles is read first (no AppArmor, no list: the create fails
//! there), then the profile text is made from what the host has (apparmor_parser's version,
//! the abstractions under /etc/apparmor.d, the caller's own confinement) and loaded with
//! `apparmor_parser -Kr`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The kernel's list of loaded profiles, one `name (mode)` a line.
const LOADED: &str = "/sys/kernel/security/apparmor/profiles";
/// Where the host keeps AppArmor's includes.
const INCLUDES: &str = "/etc/apparmor.d";
/// The parser that compiles and loads profiles.
const PARSER: &str = "apparmor_parser";
/// Parser versions (`major*10^5 + minor*10^3 + patch`) from which the profile has signal
/// rules, and ptrace rules.
const SIGNAL_RULES_FROM: u64 = 208_096;
const PTRACE_RULES_FROM: u64 = 208_095;

/// Makes sure profile `name` is loaded, generating and loading containerd's default
/// profile under that name if it is not.
pub fn ensure_default_profile(name: &str) -> Result<()> {
    if is_loaded(name)? {
        return Ok(());
    }
    let host = HostFacts::read()?;
    let text = profile_text(name, &host);
    let path = write_temp(name, &text)?;
    let loaded = load(&path);
    let _ = std::fs::remove_file(&path);
    loaded
}

/// Whether the kernel lists a profile called `name`.
fn is_loaded(name: &str) -> Result<bool> {
    let list = std::fs::read_to_string(LOADED).with_context(|| {
        format!(
            "reading {LOADED}, the loaded AppArmor profiles (is AppArmor enabled on this host?)"
        )
    })?;
    let prefix = format!("{name} ");
    Ok(list.lines().any(|l| l.starts_with(&prefix)))
}

/// What the generated profile depends on.
#[derive(Debug, Clone, PartialEq)]
struct HostFacts {
    /// /etc/apparmor.d/tunables/global exists (else `@{PROC}` is defined in the profile).
    tunables_global: bool,
    /// /etc/apparmor.d/abstractions/base exists.
    abstractions_base: bool,
    /// apparmor_parser's version as one number.
    parser_version: u64,
    /// The caller's own profile, which may signal the container.
    caller_profile: String,
}

impl HostFacts {
    fn read() -> Result<HostFacts> {
        let has = |p: &str| Path::new(INCLUDES).join(p).exists();
        let out = Command::new(PARSER)
            .arg("--version")
            .output()
            .with_context(|| format!("get {PARSER} version: running {PARSER}"))?;
        if !out.status.success() {
            bail!(
                "get {PARSER} version: {PARSER} --version failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let parser_version = parse_version(&String::from_utf8_lossy(&out.stdout))
            .with_context(|| format!("get {PARSER} version"))?;
        // Unreadable (no AppArmor, or none for this process): taken as unconfined.
        let current = std::fs::read("/proc/self/attr/current").unwrap_or_default();
        Ok(HostFacts {
            tunables_global: has("tunables/global"),
            abstractions_base: has("abstractions/base"),
            parser_version,
            caller_profile: caller_profile(&String::from_utf8_lossy(&current)),
        })
    }
}

/// The profile name in `/proc/self/attr/current`: what precedes the first space (the mode,
/// ` (enforce)`, follows it), or `unconfined` when empty. Like containerd, nothing else is
/// trimmed: a bare name keeps the kernel's line end, and the profile text carries it.
fn caller_profile(current: &str) -> String {
    let name = current.split(' ').next().unwrap_or("");
    if name.is_empty() {
        "unconfined".into()
    } else {
        name.into()
    }
}

/// `apparmor_parser --version` output's first line, last word (`2.13.6`, `3.0.0-beta1`,
/// `2.9.1~rc`) as `major*10^5 + minor*10^3 + patch`.
fn parse_version(output: &str) -> Result<u64> {
    let first = output.split('\n').next().unwrap_or("");
    let word = first.rsplit(' ').next().unwrap_or("");
    let word = word.split('-').next().unwrap_or("");
    let word = word.split('~').next().unwrap_or("");
    let parts: Vec<&str> = word.split('.').collect();
    if parts.len() > 3 {
        bail!("parsing version failed for output: `{output}`");
    }
    let mut n = [0u64; 3];
    for (slot, p) in n.iter_mut().zip(&parts) {
        *slot = p
            .parse()
            .with_context(|| format!("version part {p:?} of {word:?} is not a number"))?;
    }
    Ok(n[0] * 100_000 + n[1] * 1_000 + n[2])
}

/// The text of containerd's default container profile `name` for this host, laid out byte
/// for byte as containerd's template renders it (blank lines included), so that the same
/// host gets the same profile from stow as from ctr.
fn profile_text(name: &str, host: &HostFacts) -> String {
    let mut t = String::from("\n");
    let import = if host.tunables_global {
        "#include <tunables/global>"
    } else {
        "@{PROC}=/proc/"
    };
    t += &format!("\n{import}\n\n\n");
    t += &format!("profile {name} flags=(attach_disconnected,mediate_deleted) {{\n");
    if host.abstractions_base {
        t += "\n  #include <abstractions/base>\n";
    }
    t += "\n\n  network,\n  capability,\n  file,\n  umount,\n";
    if host.parser_version >= SIGNAL_RULES_FROM {
        t += "\n  # Host (privileged) processes may send signals to container processes.\n";
        t += "  signal (receive) peer=unconfined,\n";
        t += "  # Manager may send signals to container processes.\n";
        t += &format!("  signal (receive) peer={},\n", host.caller_profile);
        t += "  # Container processes may send signals amongst themselves.\n";
        t += &format!("  signal (send,receive) peer={name},\n");
    }
    t += "\n\n";
    t += PROC_AND_SYS_RULES;
    t += "\n";
    if host.parser_version >= PTRACE_RULES_FROM {
        t += &format!("\n  ptrace (trace,read) peer={name},\n");
    }
    t += "\n}\n";
    t
}

/// The fixed middle of the profile: writes to /proc and /sys outside the container's own
/// are denied, and so is mounting.
const PROC_AND_SYS_RULES: &str = r"  deny @{PROC}/* w,   # deny write for all files directly in /proc (not in a subdir)
  # deny write to files not in /proc/<number>/** or /proc/sys/**
  deny @{PROC}/{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9]*}/** w,
  deny @{PROC}/sys/[^k]** w,  # deny /proc/sys except /proc/sys/k* (effectively /proc/sys/kernel)
  deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w,  # deny everything except shm* in /proc/sys/kernel/
  deny @{PROC}/sysrq-trigger rwklx,
  deny @{PROC}/mem rwklx,
  deny @{PROC}/kmem rwklx,
  deny @{PROC}/kcore rwklx,

  deny mount,

  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
";

/// Writes `text` to a new file named after the profile in $XDG_RUNTIME_DIR (else the
/// temporary directory), where ctr puts it too.
fn write_temp(name: &str, text: &str) -> Result<PathBuf> {
    if name.contains('/') {
        bail!("--apparmor-default-profile {name}: a profile file cannot be named with a '/'");
    }
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = dir.join(format!("{name}{}{nanos}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating the profile file {}", path.display()))?;
    let written = f.write_all(text.as_bytes());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(e).with_context(|| format!("writing the profile file {}", path.display()));
    }
    Ok(path)
}

/// Compiles and loads (replacing) the profile in `path`, keeping the kernel's cache as is.
fn load(path: &Path) -> Result<()> {
    let out = Command::new(PARSER)
        .arg("-Kr")
        .arg(path)
        .output()
        .with_context(|| format!("load apparmor profile {}: running {PARSER}", path.display()))?;
    if !out.status.success() {
        let mut all = out.stdout;
        all.extend(out.stderr);
        bail!(
            "load apparmor profile {}: parser error({:?}): {}",
            path.display(),
            String::from_utf8_lossy(&all).trim(),
            out.status
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_containerd_numbers_them() {
        let v = |s: &str| parse_version(s).unwrap();
        assert_eq!(v("AppArmor parser version 2.9.1\nCopyright"), 209_001);
        assert_eq!(v("AppArmor parser version 3.0.0-beta1\n"), 300_000);
        assert_eq!(v("AppArmor parser version 2.13.6~git\n"), 213_006);
        assert_eq!(v("x 2.8"), 208_000);
        assert!(parse_version("x 1.2.3.4").is_err());
        assert!(parse_version("x two.1").is_err());
    }

    #[test]
    fn caller_profile_is_the_name_before_the_mode() {
        assert_eq!(
            caller_profile("docker-default (enforce)\n"),
            "docker-default"
        );
        assert_eq!(caller_profile(""), "unconfined");
        assert_eq!(caller_profile("unconfined\n"), "unconfined\n");
    }

    #[test]
    fn rules_follow_the_parser_version_and_the_includes() {
        let mut host = HostFacts {
            tunables_global: true,
            abstractions_base: true,
            parser_version: 300_000,
            caller_profile: "mgr".into(),
        };
        let t = profile_text("p1", &host);
        assert!(
            t.contains("#include <tunables/global>") && t.contains("#include <abstractions/base>")
        );
        assert!(
            t.contains("signal (receive) peer=mgr,") && t.contains("ptrace (trace,read) peer=p1,")
        );
        host = HostFacts {
            tunables_global: false,
            abstractions_base: false,
            parser_version: 208_095,
            caller_profile: "mgr".into(),
        };
        let t = profile_text("p1", &host);
        assert!(t.contains("\n@{PROC}=/proc/\n") && !t.contains("#include"));
        assert!(!t.contains("signal") && t.contains("ptrace (trace,read) peer=p1,"));
        host.parser_version = 208_094;
        assert!(!profile_text("p1", &host).contains("ptrace"));
    }

    /// Renders containerd's own template, read from its source on this host, with Go's
    /// text/template and the same facts, and compares the bytes with ours.
    #[test]
    fn profile_text_is_what_containerds_template_renders() {
        let template = Path::new(
            "/usr/share/gocode/src/github.com/containerd/containerd/contrib/apparmor/template.go",
        );
        if !stowage_tests::containerd::require(&["go"], "apt-get install golang-go") {
            return;
        }
        if !template.exists() {
            if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
                return;
            }
            panic!(
                "this test needs containerd's Go source ({}): apt-get install \
                 golang-github-containerd-containerd-dev, or set STOWAGE_SKIP_EXTERNAL=1 to skip",
                template.display()
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let (src, prog) = (dir.path().join("render.go"), dir.path().join("render"));
        std::fs::write(&src, GO_RENDER).unwrap();
        let built = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&prog)
            .arg(&src)
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", dir.path().join("cache"))
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "go build: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let cases = [
            (true, true, 300_002, "unconfined\n"),
            (false, true, 208_096, "mgr"),
            (true, false, 208_095, "unconfined"),
            (false, false, 208_094, "x"),
        ];
        for (tunables, base, version, caller) in cases {
            let host = HostFacts {
                tunables_global: tunables,
                abstractions_base: base,
                parser_version: version,
                caller_profile: caller.into(),
            };
            let out = Command::new(&prog)
                .arg(template)
                .args([
                    "stow-test.profile",
                    &tunables.to_string(),
                    &base.to_string(),
                ])
                .arg(version.to_string())
                .arg(caller)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "the Go renderer: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                profile_text("stow-test.profile", &host),
                String::from_utf8(out.stdout).unwrap(),
                "{host:?}"
            );
        }
    }

    /// A Go program that takes the template constant out of containerd's source file and
    /// executes it on the facts given as arguments (the data fields are the template's).
    const GO_RENDER: &str = r##"package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"text/template"
)

func main() {
	f, err := parser.ParseFile(token.NewFileSet(), os.Args[1], nil, 0)
	if err != nil {
		panic(err)
	}
	text := ""
	ast.Inspect(f, func(n ast.Node) bool {
		if v, ok := n.(*ast.ValueSpec); ok && v.Names[0].Name == "defaultTemplate" {
			text, _ = strconv.Unquote(v.Values[0].(*ast.BasicLit).Value)
		}
		return true
	})
	if text == "" {
		panic("no defaultTemplate in " + os.Args[1])
	}
	var imports, inner []string
	if os.Args[3] == "true" {
		imports = append(imports, "#include <tunables/global>")
	} else {
		imports = append(imports, "@{PROC}=/proc/")
	}
	if os.Args[4] == "true" {
		inner = append(inner, "#include <abstractions/base>")
	}
	version, _ := strconv.Atoi(os.Args[5])
	data := struct {
		Name          string
		Imports       []string
		InnerImports  []string
		DaemonProfile string
		Version       int
	}{os.Args[2], imports, inner, os.Args[6], version}
	t := template.Must(template.New("p").Parse(text))
	if err := t.Execute(os.Stdout, data); err != nil {
		panic(err)
	}
}
"##;
}

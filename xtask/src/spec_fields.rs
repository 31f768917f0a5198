//! `cargo xtask spec-fields [--check]`: regenerates `crates/daemon/src/bin/stow/spec_fields.rs`,
//! the table of the OCI runtime spec's JSON fields that `stow containers create --config` passes
//! a spec through, from the Go type definitions containerd is built with.
//!
//! The Go source is Debian's `golang-github-opencontainers-specs-dev` (it provides
//! `golang-github-opencontainers-runtime-spec-dev`; Debian's containerd 1.6.20 lists it in
//! Built-Using). Only the subset of Go that type declarations use is read: struct types with
//! their `json:"name,omitempty"` tags, pointers, slices, arrays, maps, basic types, named and
//! aliased types, embedded structs (their fields promoted, as encoding/json does), and `any` /
//! `interface{}`. Anything the table cannot express (floats, channels, anonymous structs,
//! types with their own JSON methods, clashing promoted names) is an error naming it, not a
//! guess. One table is written per struct reachable from `Spec`, in source order, and the
//! result goes through rustfmt so that `cargo fmt --check` agrees with it.
//!
//! With `--check` nothing is written: it fails, naming the first differing line, when the
//! committed file is not what the generator produces.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

/// Where Debian installs the runtime-spec Go package.
pub const SPECS_GO_DIR: &str =
    "/usr/share/gocode/src/github.com/opencontainers/runtime-spec/specs-go";

/// The Debian package that installs [`SPECS_GO_DIR`].
pub const SPECS_GO_PACKAGE: &str = "golang-github-opencontainers-specs-dev";

/// The generated file, relative to the workspace root.
const TABLE_PATH: &str = "crates/daemon/src/bin/stow/spec_fields.rs";

/// The type the tables start from.
const ROOT_TYPE: &str = "Spec";

/// Types from other Go packages that the spec uses, with their underlying basic type.
const EXTERNAL_TYPES: &[(&str, &str)] = &[("os.FileMode", "uint32")];

/// Methods that make encoding/json encode a type its own way; the table cannot describe those.
const JSON_METHODS: &[&str] = &[
    "MarshalJSON",
    "UnmarshalJSON",
    "MarshalText",
    "UnmarshalText",
];

/// The edition rustfmt formats with (the workspace's).
const EDITION: &str = "2021";

/// Widest line of the generated header comment, as rustfmt's default `max_width`.
const MAX_WIDTH: usize = 100;

/// The fixed part of the file between the header and the tables: the types the tables are made
/// of. `stow` matches on these, so they change only with its code.
const PREAMBLE: &str = r#"/// The kind of a JSON value in the spec.
#[derive(Debug)]
pub enum Ty {
    /// A string.
    Str,
    /// A boolean.
    Bool,
    /// A signed integer.
    Int,
    /// An unsigned integer.
    Uint,
    /// An object with known fields.
    Struct(&'static [Field]),
    /// An optional value (absent or null when unset).
    Ptr(&'static Ty),
    /// An array.
    Slice(&'static Ty),
    /// An object of any keys.
    Map(&'static Ty),
    /// Any JSON value, kept as given.
    Any,
}

/// One field of an object.
#[derive(Debug)]
pub struct Field {
    /// Its JSON name.
    pub name: &'static str,
    /// Its kind.
    pub ty: Ty,
    /// Left out when empty (false, 0, "", unset, no elements).
    pub omitempty: bool,
}

const fn f(name: &'static str, ty: Ty, omitempty: bool) -> Field {
    Field {
        name,
        ty,
        omitempty,
    }
}
"#;

/// `cargo xtask spec-fields [--check]`.
pub fn run(args: &[String]) -> Result<()> {
    let mut check_only = false;
    for arg in args {
        match arg.as_str() {
            "--check" => check_only = true,
            other => {
                bail!("spec-fields: unknown argument {other:?} (usage: spec-fields [--check])")
            }
        }
    }
    let root = workspace_root();
    let generated = generate(Path::new(SPECS_GO_DIR), &root)?;
    let path = root.join(TABLE_PATH);
    if check_only {
        check(&path, &generated)?;
        println!("{TABLE_PATH} is up to date with {SPECS_GO_DIR}/config.go");
    } else {
        std::fs::write(&path, &generated)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {TABLE_PATH} from {SPECS_GO_DIR}/config.go");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    // xtask sits directly under the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Fails, naming the first differing line, when the file at `path` is not `generated`.
fn check(path: &Path, generated: &str) -> Result<()> {
    let committed =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(diff) = first_difference(&committed, generated) {
        bail!(
            "{} differs from what `cargo xtask spec-fields` generates, first at line {}:\n  \
             committed: {}\n  generated: {}\n\
             regenerate it with `cargo xtask spec-fields` (and review the change)",
            path.display(),
            diff.line,
            diff.committed.as_deref().unwrap_or("<end of file>"),
            diff.generated.as_deref().unwrap_or("<end of file>"),
        );
    }
    Ok(())
}

/// Where two texts first differ: a 1-based line number and that line in each (`None` past the
/// end of one).
#[derive(Debug, PartialEq)]
struct Difference {
    line: usize,
    committed: Option<String>,
    generated: Option<String>,
}

fn first_difference(committed: &str, generated: &str) -> Option<Difference> {
    // split_inclusive keeps a missing or extra final newline visible as a difference.
    let mut a = committed.split_inclusive('\n');
    let mut b = generated.split_inclusive('\n');
    let mut line = 1;
    loop {
        match (a.next(), b.next()) {
            (None, None) => return None,
            (x, y) if x == y => line += 1,
            (x, y) => {
                let show = |s: &str| format!("{s:?}");
                return Some(Difference {
                    line,
                    committed: x.map(show),
                    generated: y.map(show),
                });
            }
        }
    }
}

/// The whole generated file for the Go package in `dir`, formatted by rustfmt run in `root`
/// (so that a rustfmt.toml there applies, as it does for `cargo fmt`).
pub fn generate(dir: &Path, root: &Path) -> Result<String> {
    let config = dir.join("config.go");
    if !config.exists() {
        bail!(
            "{} is missing: install the Debian package {SPECS_GO_PACKAGE} \
             (it provides golang-github-opencontainers-runtime-spec-dev)",
            config.display()
        );
    }
    let source = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let version_go = dir.join("version.go");
    let version_source = std::fs::read_to_string(&version_go)
        .with_context(|| format!("cannot read {}", version_go.display()))?;
    let version = spec_version(&version_source)
        .with_context(|| format!("cannot read the spec version from {}", version_go.display()))?;
    let package = owning_package(&config)?;
    let tables = tables(&source).with_context(|| format!("in {}", config.display()))?;
    let unformatted = render(&header(&version, &config, &package), &tables);
    rustfmt(&unformatted, root)
}

/// The Debian package and version that installed `file`, as `name version`.
fn owning_package(file: &Path) -> Result<String> {
    let out = Command::new("dpkg-query")
        .arg("-S")
        .arg(file)
        .output()
        .context("cannot run dpkg-query (the spec source is expected from a Debian package)")?;
    ensure!(
        out.status.success(),
        "dpkg-query -S {} found no package: the source must come from {SPECS_GO_PACKAGE}",
        file.display()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let name = stdout
        .split(':')
        .next()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .with_context(|| format!("unexpected dpkg-query -S output {stdout:?}"))?;
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", name])
        .output()
        .context("cannot run dpkg-query")?;
    ensure!(out.status.success(), "dpkg-query -W {name} failed");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(!version.is_empty(), "dpkg-query gave no version for {name}");
    Ok(format!("{name} {version}"))
}

fn header(version: &str, config: &Path, package: &str) -> String {
    let paragraphs = [
        format!(
            "The OCI runtime spec's fields as containerd 1.6 reads and writes them: the JSON \
             names, value kinds and which are left out when empty, for runtime-spec {version}. \
             A spec passes through these tables so that `--config` records what ctr records."
        ),
        format!(
            "Generated by `cargo xtask spec-fields` from `{}` ({package}: the runtime-spec \
             snapshot Debian's containerd 1.6.20 is built with; upstream containerd v1.6.20 \
             pins an older {version} snapshot, 1c3f411f, without `domainname`, `zos`, the \
             mount ID mappings, `checkBeforeUpdate`, CPU `burst` and `idle`, and RDT \
             `enableCMT` and `enableMBM`). Do not edit it by hand: regenerate it. `cargo xtask \
             spec-fields --check`, also run by xtask's tests, fails when it and the Go source \
             disagree.",
            config.display()
        ),
    ];
    let mut out = String::new();
    for (i, paragraph) in paragraphs.iter().enumerate() {
        if i > 0 {
            out.push_str("//!\n");
        }
        wrap_into(&mut out, "//! ", paragraph, MAX_WIDTH);
    }
    out
}

/// Appends `text` as lines of `prefix` + words, each at most `width` wide where words allow.
/// A `code span` is never split across lines.
fn wrap_into(out: &mut String, prefix: &str, text: &str, width: usize) {
    let mut words: Vec<String> = Vec::new();
    let mut in_code = false;
    for word in text.split_whitespace() {
        match words.last_mut() {
            Some(last) if in_code => {
                last.push(' ');
                last.push_str(word);
            }
            _ => words.push(word.to_owned()),
        }
        in_code ^= word.matches('`').count() % 2 == 1;
    }
    let mut line = String::from(prefix);
    for word in &words {
        if line.len() > prefix.len() && line.len() + 1 + word.len() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from(prefix);
        }
        if line.len() > prefix.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

fn render(header: &str, tables: &[Table]) -> String {
    let mut out = String::from(header);
    out.push('\n');
    out.push_str(PREAMBLE);
    for table in tables {
        let fields: Vec<String> = table
            .fields
            .iter()
            .map(|f| format!("f({:?}, {}, {})", f.name, f.kind.rust(), f.omitempty))
            .collect();
        out.push_str(&format!(
            "\n/// `{}`.\npub const {}: &[Field] = &[{}];\n",
            table.go_name,
            const_name(&table.go_name),
            fields.join(", ")
        ));
    }
    out
}

fn rustfmt(source: &str, root: &Path) -> Result<String> {
    let mut child = Command::new("rustfmt")
        .args(["--edition", EDITION, "--emit", "stdout"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run rustfmt (rustup component add rustfmt)")?;
    let mut stdin = child.stdin.take().context("rustfmt has no stdin")?;
    // rustfmt reads all of its input before writing, so writing first cannot deadlock.
    stdin
        .write_all(source.as_bytes())
        .context("cannot feed rustfmt")?;
    drop(stdin);
    let out = child.wait_with_output().context("rustfmt failed")?;
    ensure!(
        out.status.success(),
        "rustfmt refused the generated table: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).context("rustfmt wrote non-UTF-8")
}

/// `SolarisCappedCPU` -> `SOLARIS_CAPPED_CPU`: a word starts at a capital after a lower-case
/// letter or digit, and at the last capital of an acronym followed by lower case
/// (`LinuxIDMapping` -> `LINUX_ID_MAPPING`).
fn const_name(go: &str) -> String {
    let chars: Vec<char> = go.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `VersionMajor.VersionMinor.VersionPatch` + `VersionDev` from version.go.
fn spec_version(source: &str) -> Result<String> {
    let toks = lex(source)?;
    let value = |name: &str| -> Result<String> {
        toks.windows(3)
            .find_map(|w| match w {
                [Tok::Ident(n), Tok::Punct('='), Tok::Num(v) | Tok::Str(v)] if n == name => {
                    Some(v.clone())
                }
                _ => None,
            })
            .with_context(|| format!("no constant {name}"))
    };
    Ok(format!(
        "{}.{}.{}{}",
        value("VersionMajor")?,
        value("VersionMinor")?,
        value("VersionPatch")?,
        value("VersionDev")?
    ))
}

// ---- Go lexing -------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A string literal's contents (raw, or interpreted with `\"` and `\\` undone).
    Str(String),
    Num(String),
    /// A rune literal; only kept so that `'{'` does not count as a brace.
    Rune,
    Punct(char),
    /// An explicit `;` or a newline where Go inserts one.
    Semi,
}

fn lex(source: &str) -> Result<Vec<Tok>> {
    let chars: Vec<char> = source.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    // Go's rule: a newline ends a statement after an identifier, literal or closing bracket.
    let ends_statement = |toks: &[Tok]| {
        matches!(
            toks.last(),
            Some(Tok::Ident(_) | Tok::Str(_) | Tok::Num(_) | Tok::Rune)
                | Some(Tok::Punct(')' | ']' | '}'))
        )
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                if ends_statement(&toks) {
                    toks.push(Tok::Semi);
                }
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let start = i;
                i += 2;
                let mut newline = false;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    newline |= chars[i] == '\n';
                    i += 1;
                }
                ensure!(i < chars.len(), "unterminated comment at offset {start}");
                i += 2;
                if newline && ends_statement(&toks) {
                    toks.push(Tok::Semi);
                }
            }
            '`' => {
                let start = i;
                i += 1;
                let mut s = String::new();
                while i < chars.len() && chars[i] != '`' {
                    s.push(chars[i]);
                    i += 1;
                }
                ensure!(i < chars.len(), "unterminated raw string at offset {start}");
                i += 1;
                toks.push(Tok::Str(s));
            }
            '"' | '\'' => {
                let start = i;
                i += 1;
                let mut s = String::new();
                while i < chars.len() && chars[i] != c {
                    ensure!(chars[i] != '\n', "newline in literal at offset {start}");
                    if chars[i] == '\\' {
                        i += 1;
                        match chars.get(i) {
                            Some('"') => s.push('"'),
                            Some('\\') => s.push('\\'),
                            Some(&other) => {
                                s.push('\\');
                                s.push(other);
                            }
                            None => break,
                        }
                    } else {
                        s.push(chars[i]);
                    }
                    i += 1;
                }
                ensure!(i < chars.len(), "unterminated literal at offset {start}");
                i += 1;
                toks.push(if c == '"' { Tok::Str(s) } else { Tok::Rune });
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                toks.push(Tok::Num(chars[start..i].iter().collect()));
            }
            ';' => {
                toks.push(Tok::Semi);
                i += 1;
            }
            c => {
                toks.push(Tok::Punct(c));
                i += 1;
            }
        }
    }
    if ends_statement(&toks) {
        toks.push(Tok::Semi);
    }
    Ok(toks)
}

// ---- Go type declarations --------------------------------------------------------------------

/// A Go type expression, as written.
#[derive(Debug, Clone, PartialEq)]
enum GoType {
    /// A type name, `pkg.Name` when qualified.
    Named(String),
    Ptr(Box<GoType>),
    /// A slice or an array (both are JSON arrays).
    Slice(Box<GoType>),
    Map(Box<GoType>, Box<GoType>),
    Struct(Vec<GoField>),
    /// `interface{...}` or `any`.
    Interface,
}

/// One line of a struct: its names (none when embedded), type and tag.
#[derive(Debug, Clone, PartialEq)]
struct GoField {
    names: Vec<String>,
    ty: GoType,
    tag: Option<String>,
}

#[derive(Debug)]
struct Decl {
    ty: GoType,
}

/// The type declarations of one Go file, in source order, and the types that have their own
/// JSON (or text) encoding methods.
#[derive(Debug, Default)]
struct Package {
    order: Vec<String>,
    decls: HashMap<String, Decl>,
    custom_json: HashSet<String>,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n)
    }

    fn next(&mut self) -> Result<Tok> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .context("unexpected end of file")?;
        self.pos += 1;
        Ok(tok)
    }

    fn expect(&mut self, want: &Tok) -> Result<()> {
        let got = self.next()?;
        ensure!(&got == want, "expected {want:?}, found {got:?}");
        Ok(())
    }

    fn ident(&mut self) -> Result<String> {
        match self.next()? {
            Tok::Ident(name) => Ok(name),
            other => bail!("expected a name, found {other:?}"),
        }
    }

    fn is_ident(&self, n: usize, name: &str) -> bool {
        matches!(self.peek_at(n), Some(Tok::Ident(i)) if i == name)
    }

    /// Skips to just past the `;` ending the current top-level declaration.
    fn skip_declaration(&mut self) -> Result<()> {
        let mut depth = 0usize;
        while let Some(tok) = self.peek() {
            match tok {
                Tok::Punct('(' | '[' | '{') => depth += 1,
                Tok::Punct(')' | ']' | '}') => {
                    depth = depth.checked_sub(1).context("unbalanced closing bracket")?;
                }
                Tok::Semi if depth == 0 => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => {}
            }
            self.pos += 1;
        }
        Ok(())
    }

    fn package(&mut self) -> Result<Package> {
        let mut pkg = Package::default();
        while let Some(tok) = self.peek() {
            if tok == &Tok::Semi {
                self.pos += 1;
            } else if self.is_ident(0, "type") {
                self.pos += 1;
                if self.peek() == Some(&Tok::Punct('(')) {
                    self.pos += 1;
                    loop {
                        match self.peek() {
                            Some(Tok::Semi) => self.pos += 1,
                            Some(Tok::Punct(')')) => {
                                self.pos += 1;
                                break;
                            }
                            _ => self.type_spec(&mut pkg)?,
                        }
                    }
                } else {
                    self.type_spec(&mut pkg)?;
                }
            } else if self.is_ident(0, "func") && self.peek_at(1) == Some(&Tok::Punct('(')) {
                self.method(&mut pkg)?;
            } else {
                self.skip_declaration()?;
            }
        }
        Ok(pkg)
    }

    /// Notes a method that gives its receiver its own JSON encoding, then skips the method.
    fn method(&mut self, pkg: &mut Package) -> Result<()> {
        self.pos += 2; // `func (`
        let mut receiver = None;
        loop {
            match self.next()? {
                Tok::Punct(')') => break,
                Tok::Ident(name) => receiver = Some(name),
                // Type parameters of a generic receiver (`T[P]`) are not the receiver's name.
                Tok::Punct('[') => while self.next()? != Tok::Punct(']') {},
                _ => {}
            }
        }
        if let (Some(receiver), Some(Tok::Ident(name))) = (receiver, self.peek()) {
            if JSON_METHODS.contains(&name.as_str()) {
                pkg.custom_json.insert(receiver);
            }
        }
        self.skip_declaration()
    }

    fn type_spec(&mut self, pkg: &mut Package) -> Result<()> {
        let name = self.ident()?;
        ensure!(
            self.peek() != Some(&Tok::Punct('[')) || self.peek_at(1) == Some(&Tok::Punct(']')),
            "type {name}: generic types are not supported"
        );
        // An alias (`type A = B`) names the same type; for JSON both read alike.
        if self.peek() == Some(&Tok::Punct('=')) {
            self.pos += 1;
        }
        let ty = self
            .type_expr()
            .with_context(|| format!("in type {name}"))?;
        match self.peek() {
            Some(Tok::Semi) => self.pos += 1,
            Some(Tok::Punct(')')) | None => {}
            Some(other) => bail!("type {name}: unexpected {other:?} after its type"),
        }
        ensure!(
            pkg.decls.insert(name.clone(), Decl { ty }).is_none(),
            "type {name} declared twice"
        );
        pkg.order.push(name);
        Ok(())
    }

    fn type_expr(&mut self) -> Result<GoType> {
        match self.next()? {
            Tok::Punct('*') => Ok(GoType::Ptr(Box::new(self.type_expr()?))),
            Tok::Punct('(') => {
                let ty = self.type_expr()?;
                self.expect(&Tok::Punct(')'))?;
                Ok(ty)
            }
            Tok::Punct('[') => {
                // `[]T` or `[N]T`: both encode as a JSON array.
                while self.next()? != Tok::Punct(']') {}
                Ok(GoType::Slice(Box::new(self.type_expr()?)))
            }
            Tok::Ident(word) => match word.as_str() {
                "map" => {
                    self.expect(&Tok::Punct('['))?;
                    let key = self.type_expr()?;
                    self.expect(&Tok::Punct(']'))?;
                    let value = self.type_expr()?;
                    Ok(GoType::Map(Box::new(key), Box::new(value)))
                }
                "struct" => Ok(GoType::Struct(self.struct_body()?)),
                "interface" => {
                    self.expect(&Tok::Punct('{'))?;
                    let mut depth = 1;
                    while depth > 0 {
                        match self.next()? {
                            Tok::Punct('{') => depth += 1,
                            Tok::Punct('}') => depth -= 1,
                            _ => {}
                        }
                    }
                    Ok(GoType::Interface)
                }
                "any" => Ok(GoType::Interface),
                "func" | "chan" => bail!("{word} types have no JSON form"),
                _ => {
                    if self.peek() == Some(&Tok::Punct('.')) {
                        self.pos += 1;
                        let name = self.ident()?;
                        Ok(GoType::Named(format!("{word}.{name}")))
                    } else {
                        Ok(GoType::Named(word))
                    }
                }
            },
            other => bail!("expected a type, found {other:?}"),
        }
    }

    fn struct_body(&mut self) -> Result<Vec<GoField>> {
        self.expect(&Tok::Punct('{'))?;
        let mut fields = Vec::new();
        loop {
            match self.peek() {
                Some(Tok::Semi) => {
                    self.pos += 1;
                    continue;
                }
                Some(Tok::Punct('}')) => {
                    self.pos += 1;
                    return Ok(fields);
                }
                _ => {}
            }
            // An embedded field is a lone (maybe pointer, maybe qualified) type name.
            let embedded = matches!(
                (self.peek(), self.peek_at(1)),
                (Some(Tok::Punct('*')), _)
                    | (
                        Some(Tok::Ident(_)),
                        Some(Tok::Punct('.' | '}') | Tok::Semi | Tok::Str(_))
                    )
            );
            let mut names = Vec::new();
            if !embedded {
                names.push(self.ident()?);
                while self.peek() == Some(&Tok::Punct(',')) {
                    self.pos += 1;
                    names.push(self.ident()?);
                }
            }
            let ty = self.type_expr()?;
            let tag = match self.peek() {
                Some(Tok::Str(tag)) => {
                    let tag = tag.clone();
                    self.pos += 1;
                    Some(tag)
                }
                _ => None,
            };
            match self.peek() {
                Some(Tok::Semi) => self.pos += 1,
                Some(Tok::Punct('}')) => {}
                other => bail!("unexpected {other:?} after field {names:?}"),
            }
            fields.push(GoField { names, ty, tag });
        }
    }
}

/// The value of `key` in a Go struct tag (`key:"value" other:"..."`), as reflect reads it.
fn tag_value<'a>(tag: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = tag;
    loop {
        rest = rest.trim_start();
        let colon = rest.find(':')?;
        let name = &rest[..colon];
        let after = rest[colon + 1..].strip_prefix('"')?;
        let end = after.find('"')?;
        if name == key {
            return Some(&after[..end]);
        }
        rest = &after[end + 1..];
    }
}

/// What a `json` tag says about a field.
#[derive(Debug, PartialEq)]
enum JsonTag {
    /// `json:"-"`: never encoded.
    Skip,
    /// The name (if the tag gives one) and whether `omitempty` is set.
    Field {
        name: Option<String>,
        omitempty: bool,
    },
}

fn json_tag(tag: Option<&str>) -> Result<JsonTag> {
    let Some(value) = tag.and_then(|t| tag_value(t, "json")) else {
        return Ok(JsonTag::Field {
            name: None,
            omitempty: false,
        });
    };
    if value == "-" {
        return Ok(JsonTag::Skip);
    }
    let mut parts = value.split(',');
    let name = parts.next().unwrap_or_default();
    let mut omitempty = false;
    for option in parts {
        match option {
            "omitempty" => omitempty = true,
            other => bail!("json tag option {other:?} (in {value:?}) is not supported"),
        }
    }
    Ok(JsonTag::Field {
        name: (!name.is_empty()).then(|| name.to_owned()),
        omitempty,
    })
}

// ---- the tables ------------------------------------------------------------------------------

/// A field's kind in the generated table (the Rust `Ty`).
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Str,
    Bool,
    Int,
    Uint,
    /// A struct, by its Go name.
    Struct(String),
    Ptr(Box<Kind>),
    Slice(Box<Kind>),
    Map(Box<Kind>),
    Any,
}

impl Kind {
    fn rust(&self) -> String {
        match self {
            Kind::Str => "Ty::Str".to_owned(),
            Kind::Bool => "Ty::Bool".to_owned(),
            Kind::Int => "Ty::Int".to_owned(),
            Kind::Uint => "Ty::Uint".to_owned(),
            Kind::Any => "Ty::Any".to_owned(),
            Kind::Struct(name) => format!("Ty::Struct({})", const_name(name)),
            Kind::Ptr(inner) => format!("Ty::Ptr(&{})", inner.rust()),
            Kind::Slice(inner) => format!("Ty::Slice(&{})", inner.rust()),
            Kind::Map(inner) => format!("Ty::Map(&{})", inner.rust()),
        }
    }
}

#[derive(Debug, PartialEq)]
struct TableField {
    name: String,
    kind: Kind,
    omitempty: bool,
}

#[derive(Debug, PartialEq)]
struct Table {
    go_name: String,
    fields: Vec<TableField>,
}

fn basic(name: &str) -> Option<Kind> {
    Some(match name {
        "string" => Kind::Str,
        "bool" => Kind::Bool,
        "int" | "int8" | "int16" | "int32" | "int64" | "rune" => Kind::Int,
        "uint" | "uint8" | "uint16" | "uint32" | "uint64" | "uintptr" | "byte" => Kind::Uint,
        _ => return None,
    })
}

/// Deep enough for any honest chain of named types; stops a cycle.
const MAX_DEPTH: usize = 32;

impl Package {
    /// The basic type `ty` is built on, following names and aliases (`None` for composites).
    fn underlying_basic(&self, ty: &GoType, depth: usize) -> Option<String> {
        let GoType::Named(name) = ty else {
            return None;
        };
        if depth > MAX_DEPTH {
            return None;
        }
        if basic(name).is_some() {
            return Some(name.clone());
        }
        if let Some((_, under)) = EXTERNAL_TYPES.iter().find(|(n, _)| n == name) {
            return Some((*under).to_owned());
        }
        self.underlying_basic(&self.decls.get(name)?.ty, depth + 1)
    }

    fn kind(&self, ty: &GoType, depth: usize) -> Result<Kind> {
        ensure!(
            depth <= MAX_DEPTH,
            "type definitions nest too deep (a cycle?)"
        );
        match ty {
            GoType::Named(name) => {
                ensure!(
                    !self.custom_json.contains(name),
                    "type {name} has its own JSON encoding methods; the table cannot describe it"
                );
                if let Some(kind) = basic(name) {
                    return Ok(kind);
                }
                if let Some((_, under)) = EXTERNAL_TYPES.iter().find(|(n, _)| n == name) {
                    return basic(under)
                        .with_context(|| format!("{name}: {under} is not a basic type"));
                }
                ensure!(
                    !name.contains('.'),
                    "type {name} is from another package: add it to EXTERNAL_TYPES"
                );
                let decl = self.decls.get(name).with_context(|| {
                    format!(
                        "unknown type {name} (floats, complex numbers and \
                                              undeclared types have no kind in the table)"
                    )
                })?;
                match &decl.ty {
                    GoType::Struct(_) => Ok(Kind::Struct(name.clone())),
                    other => self
                        .kind(other, depth + 1)
                        .with_context(|| format!("in type {name}")),
                }
            }
            GoType::Ptr(inner) => Ok(Kind::Ptr(Box::new(self.kind(inner, depth + 1)?))),
            GoType::Slice(inner) => {
                // encoding/json writes a byte slice as one base64 string.
                if matches!(
                    self.underlying_basic(inner, 0).as_deref(),
                    Some("uint8" | "byte")
                ) {
                    return Ok(Kind::Str);
                }
                Ok(Kind::Slice(Box::new(self.kind(inner, depth + 1)?)))
            }
            GoType::Map(key, value) => {
                let key_kind = self.underlying_basic(key, 0).and_then(|b| basic(&b));
                ensure!(
                    matches!(key_kind, Some(Kind::Str | Kind::Int | Kind::Uint)),
                    "map key {key:?}: JSON object keys come only from strings and integers"
                );
                Ok(Kind::Map(Box::new(self.kind(value, depth + 1)?)))
            }
            GoType::Interface => Ok(Kind::Any),
            GoType::Struct(_) => bail!("anonymous struct types have no table name"),
        }
    }

    /// The struct declared as `name`, following aliases and defined types.
    fn struct_fields(&self, name: &str) -> Option<&[GoField]> {
        let mut current = name;
        for _ in 0..MAX_DEPTH {
            match &self.decls.get(current)?.ty {
                GoType::Struct(fields) => return Some(fields),
                GoType::Named(next) => current = next,
                _ => return None,
            }
        }
        None
    }

    /// The JSON fields of struct `name`, promoted fields of embedded structs in place.
    fn table_fields(&self, name: &str, depth: usize) -> Result<Vec<TableField>> {
        ensure!(depth <= MAX_DEPTH, "struct {name} embeds itself");
        let fields = self
            .struct_fields(name)
            .with_context(|| format!("{name} is not a struct"))?;
        let mut out: Vec<TableField> = Vec::new();
        for field in fields {
            let tag =
                json_tag(field.tag.as_deref()).with_context(|| format!("in struct {name}"))?;
            let JsonTag::Field {
                name: tag_name,
                omitempty,
            } = tag
            else {
                continue;
            };
            if field.names.is_empty() {
                // Embedded: an untagged struct has its fields promoted; anything else is a
                // field named after its type.
                let base = match &field.ty {
                    GoType::Ptr(inner) => inner.as_ref(),
                    other => other,
                };
                let GoType::Named(type_name) = base else {
                    bail!("struct {name}: embedded {base:?} is not a type name");
                };
                if tag_name.is_none() && self.struct_fields(type_name).is_some() {
                    let promoted = self
                        .table_fields(type_name, depth + 1)
                        .with_context(|| format!("embedded in struct {name}"))?;
                    out.extend(promoted);
                    continue;
                }
                let short = type_name.rsplit('.').next().unwrap_or(type_name);
                if !is_exported(short) {
                    continue;
                }
                out.push(TableField {
                    name: tag_name.unwrap_or_else(|| short.to_owned()),
                    kind: self
                        .kind(&field.ty, 0)
                        .with_context(|| format!("field {short} of struct {name}"))?,
                    omitempty,
                });
                continue;
            }
            for go_name in &field.names {
                if !is_exported(go_name) {
                    continue;
                }
                out.push(TableField {
                    name: tag_name.clone().unwrap_or_else(|| go_name.clone()),
                    kind: self
                        .kind(&field.ty, 0)
                        .with_context(|| format!("field {go_name} of struct {name}"))?,
                    omitempty,
                });
            }
        }
        let mut seen = HashSet::new();
        for field in &out {
            // encoding/json's rules for clashing names (depth, tags) are not modelled.
            ensure!(
                seen.insert(field.name.as_str()),
                "struct {name}: JSON name {:?} appears twice (clashing promoted fields)",
                field.name
            );
        }
        Ok(out)
    }
}

fn is_exported(name: &str) -> bool {
    name.chars().next().is_some_and(char::is_uppercase)
}

fn parse(source: &str) -> Result<Package> {
    let mut parser = Parser {
        toks: lex(source)?,
        pos: 0,
    };
    parser.package()
}

/// One table per struct reachable from [`ROOT_TYPE`], in the order the Go source declares them.
fn tables(source: &str) -> Result<Vec<Table>> {
    let pkg = parse(source)?;
    ensure!(
        pkg.struct_fields(ROOT_TYPE).is_some(),
        "no struct {ROOT_TYPE} declared"
    );
    let mut fields: HashMap<String, Vec<TableField>> = HashMap::new();
    let mut pending = vec![ROOT_TYPE.to_owned()];
    while let Some(name) = pending.pop() {
        if fields.contains_key(&name) {
            continue;
        }
        let table = pkg.table_fields(&name, 0)?;
        for field in &table {
            let mut kind = &field.kind;
            loop {
                match kind {
                    Kind::Ptr(inner) | Kind::Slice(inner) | Kind::Map(inner) => kind = inner,
                    Kind::Struct(referenced) => {
                        pending.push(referenced.clone());
                        break;
                    }
                    _ => break,
                }
            }
        }
        fields.insert(name, table);
    }
    Ok(pkg
        .order
        .iter()
        .filter_map(|name| {
            fields.remove(name).map(|fields| Table {
                go_name: name.clone(),
                fields,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, kind: Kind, omitempty: bool) -> TableField {
        TableField {
            name: name.to_owned(),
            kind,
            omitempty,
        }
    }

    /// The committed table is what the generator makes of the installed Go source.
    #[test]
    fn committed_table_matches_the_go_source() {
        let config = Path::new(SPECS_GO_DIR).join("config.go");
        if !config.exists() {
            if std::env::var("STOWAGE_SKIP_EXTERNAL").as_deref() == Ok("1") {
                eprintln!("skipped: {} is missing", config.display());
                return;
            }
            panic!(
                "{} is missing: install the Debian package {SPECS_GO_PACKAGE} (it provides \
                 golang-github-opencontainers-runtime-spec-dev), or set STOWAGE_SKIP_EXTERNAL=1",
                config.display()
            );
        }
        let root = workspace_root();
        let generated = generate(Path::new(SPECS_GO_DIR), &root).expect("generate");
        check(&root.join(TABLE_PATH), &generated).expect("spec-fields --check");
    }

    #[test]
    fn go_names_become_constant_names() {
        for (go, rust) in [
            ("Spec", "SPEC"),
            ("LinuxIDMapping", "LINUX_ID_MAPPING"),
            ("POSIXRlimit", "POSIX_RLIMIT"),
            ("WindowsHyperV", "WINDOWS_HYPER_V"),
            ("LinuxBlockIO", "LINUX_BLOCK_IO"),
            ("VMHypervisor", "VM_HYPERVISOR"),
            ("SolarisCappedCPU", "SOLARIS_CAPPED_CPU"),
            ("Layer2Thing", "LAYER2_THING"),
        ] {
            assert_eq!(const_name(go), rust, "{go}");
        }
    }

    #[test]
    fn kinds_tags_embedding_and_reachability() {
        let source = r#"
package specs

import "os"

/* A block comment with a brace { that is not code. */
type Spec struct {
	Version string `json:"ociVersion"`
	Process *Process `json:"process,omitempty" platform:"linux"`
	Devices []Device `json:"devices,omitempty"`
	Limits map[string]Limit `json:"limits,omitempty"`
	Blob []byte `json:"blob,omitempty"`
	Extra interface{} `json:"extra,omitempty"`
	Hidden string `json:"-"`
	internal string
	NoTag uint16
	A, B int64 `json:",omitempty"`
}

type Unused struct {
	X string `json:"x"`
}

// Declared before the structs that use it, so the output order is the source order.
type Limit struct{ Max *int `json:"max"` }

type Process struct {
	Kind Kind `json:"kind"`
	Mode *os.FileMode `json:"mode,omitempty"`
	Args Strings `json:"args"`
}

type Strings = []string

type Kind string

type Device struct {
	base
	Rate uint64 `json:"rate"`
}

type base struct {
	Major int64 `json:"major"`
	Minor int64 `json:"minor"`
}

func (k Kind) String() string { return string(k) }

const x = '}'
"#;
        let tables = tables(source).expect("tables");
        let names: Vec<&str> = tables.iter().map(|t| t.go_name.as_str()).collect();
        assert_eq!(names, ["Spec", "Limit", "Process", "Device"]);
        assert_eq!(
            tables[0].fields,
            vec![
                field("ociVersion", Kind::Str, false),
                field(
                    "process",
                    Kind::Ptr(Box::new(Kind::Struct("Process".into()))),
                    true
                ),
                field(
                    "devices",
                    Kind::Slice(Box::new(Kind::Struct("Device".into()))),
                    true
                ),
                field(
                    "limits",
                    Kind::Map(Box::new(Kind::Struct("Limit".into()))),
                    true
                ),
                field("blob", Kind::Str, true),
                field("extra", Kind::Any, true),
                field("NoTag", Kind::Uint, false),
                field("A", Kind::Int, true),
                field("B", Kind::Int, true),
            ]
        );
        assert_eq!(
            tables[1].fields,
            vec![field("max", Kind::Ptr(Box::new(Kind::Int)), false)]
        );
        assert_eq!(
            tables[2].fields,
            vec![
                field("kind", Kind::Str, false),
                field("mode", Kind::Ptr(Box::new(Kind::Uint)), true),
                field("args", Kind::Slice(Box::new(Kind::Str)), false),
            ]
        );
        assert_eq!(
            tables[3].fields,
            vec![
                field("major", Kind::Int, false),
                field("minor", Kind::Int, false),
                field("rate", Kind::Uint, false),
            ]
        );
    }

    #[test]
    fn what_the_table_cannot_express_is_refused() {
        let cases = [
            ("type Spec struct { F float64 `json:\"f\"` }", "float64"),
            ("type Spec struct { C chan int `json:\"c\"` }", "chan"),
            ("type Spec struct { T time.Time `json:\"t\"` }", "time.Time"),
            ("type Spec struct { S struct{ X int } `json:\"s\"` }", "anonymous"),
            ("type Spec struct { N int `json:\"n,string\"` }", "string"),
            (
                "type Spec struct { T T `json:\"t\"` }\ntype T int\n\
                 func (t *T) UnmarshalJSON(b []byte) error { return nil }",
                "JSON encoding methods",
            ),
            (
                "type Spec struct { A\n N string `json:\"n\"` }\ntype A struct { N int `json:\"n\"` }",
                "appears twice",
            ),
            ("type Other struct{}", "no struct Spec"),
        ];
        for (source, want) in cases {
            let err = format!("{:#}", tables(source).expect_err(source));
            assert!(err.contains(want), "{source}: {err}");
        }
    }

    #[test]
    fn version_from_version_go() {
        let source = "package specs\nconst (\n\tVersionMajor = 1\n\tVersionMinor = 0\n\
                      \tVersionPatch = 2\n\tVersionDev = \"-dev\"\n)\n";
        assert_eq!(spec_version(source).expect("version"), "1.0.2-dev");
        assert!(spec_version("package specs\nconst VersionMajor = 1\n").is_err());
    }

    #[test]
    fn the_first_differing_line_is_named() {
        assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
        let diff = first_difference("a\nb\nc\n", "a\nB\nc\n").expect("differs");
        assert_eq!(diff.line, 2);
        assert_eq!(diff.committed.as_deref(), Some("\"b\\n\""));
        assert_eq!(diff.generated.as_deref(), Some("\"B\\n\""));
        // A missing final newline or extra line counts.
        assert_eq!(first_difference("a\n", "a").map(|d| d.line), Some(1));
        let extra = first_difference("a\n", "a\nb\n").expect("differs");
        assert_eq!((extra.line, extra.committed), (2, None));
    }

    #[test]
    fn header_lines_fit_the_width() {
        let mut out = String::new();
        let long = "word ".repeat(60);
        wrap_into(&mut out, "//! ", &long, 40);
        assert!(out
            .lines()
            .all(|l| l.len() <= 40 && l.starts_with("//! word")));
        assert_eq!(out.matches("word").count(), 60);
        let mut out = String::new();
        wrap_into(&mut out, "//! ", "aaaa bbbb `cc dd` ee", 14);
        assert_eq!(out, "//! aaaa bbbb\n//! `cc dd` ee\n");
    }
}

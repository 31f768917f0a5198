//! containerd's filter language (`name==x,labels."a.b"~=re`).
//!
//! A filter string is a comma-separated list of selectors, all of which must match:
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath [operator value]
//! fieldpath := field ("." field)*
//! field     := [A-Za-z0-9_]+ | "quoted"
//! operator  := "==" | "!=" | "~="
//! value     := unquoted run without whitespace or "," | "quoted"
//!              (and, after "~=", also /quoted/ or |quoted|)
//! ```
//!
//! A selector without an operator tests that the field is present. Quoted text uses Go string
//! escapes (`\n`, `\t`, `\\`, `\"`, `\x41`, `\101`, `\u00e9`, `\U0001F600`); inside `/…/` and
//! `|…|` the delimiter is escaped instead of `"`. Several filter strings given together
//! ([`Filter::parse_all`]) match when any of them does, and no filter at all matches everything.
//!
//! Behaviour follows containerd 1.6's `filters` package, including its error text
//! (`filters: parse error: [name== >|,|< x]: expected value or quoted`, where `>|…|<` marks the
//! offending position) and its quirks: `!=` matches an object that lacks the field, and `~=`
//! tests an absent field as the empty string. `~=` patterns are Go `regexp` (RE2) syntax, as
//! containerd's are: where the `regex` crate reads a pattern differently (ASCII-only `\d`, `\w`,
//! `\s`, `\b` in Go, a stray `{` as a literal, no set operations in classes, stacked
//! repetitions refused, ...) the pattern is rewritten to keep Go's meaning.
//!
//! Deliberate differences: containerd compiles a `~=` regular expression only when matching and
//! silently matches nothing if it is invalid, while here an invalid regular expression is a
//! parse error, so the caller learns of the mistake; and a quoted string whose escapes form
//! invalid UTF-8 (`"\xff"`) is a parse error, since Rust strings cannot hold it.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

use crate::error::{Error, Result};

/// Gives a filter the value of a field of the object being matched.
///
/// `path` is the selector's field path split at unquoted dots: `labels."a.b"` arrives as
/// `["labels", "a.b"]`, `labels.a.b` as `["labels", "a", "b"]`. Return `None` when the object has
/// no such field. Closures `Fn(&[&str]) -> Option<String>` are adaptors too.
pub trait Adaptor {
    /// The value of the field at `path`, or `None` when the field is absent.
    fn field(&self, path: &[&str]) -> Option<String>;
}

impl<F> Adaptor for F
where
    F: Fn(&[&str]) -> Option<String>,
{
    fn field(&self, path: &[&str]) -> Option<String> {
        self(path)
    }
}

/// Looks a map field up the way containerd's adaptors do for `labels.<key>` and
/// `annotations.<key>`: the rest of the path, joined with `.`, is the key.
///
/// `rest` is the path after the map's own name, so `labels.a.b` and `labels."a.b"` both find the
/// key `a.b`.
pub fn map_field(rest: &[&str], map: &BTreeMap<String, String>) -> Option<String> {
    map.get(&rest.join(".")).cloned()
}

/// A parsed filter: alternatives of conjunctions of selectors.
#[derive(Debug, Clone)]
pub struct Filter {
    /// `None` matches everything; otherwise an object matches when every selector of at least
    /// one alternative does.
    alternatives: Option<Vec<Vec<Selector>>>,
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Operator,
}

#[derive(Debug, Clone)]
enum Operator {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

impl Selector {
    fn matches(&self, obj: &dyn Adaptor) -> bool {
        let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        let value = obj.field(&path);
        match &self.op {
            Operator::Present => value.is_some(),
            Operator::Equal(want) => value.as_deref() == Some(want.as_str()),
            // containerd compares the absent field as "", so `x!=v` selects objects without `x`.
            Operator::NotEqual(want) => value.as_deref().unwrap_or("") != want,
            Operator::Matches(re) => re.is_match(value.as_deref().unwrap_or("")),
        }
    }
}

impl Filter {
    /// A filter that matches every object.
    pub fn always() -> Filter {
        Filter { alternatives: None }
    }

    /// True when this filter matches every object without looking at it (an empty filter).
    pub fn is_always(&self) -> bool {
        self.alternatives.is_none()
    }

    /// Parses one filter string; the empty string matches everything.
    ///
    /// Errors are [`InvalidArgument`](crate::ErrorKind::InvalidArgument) and show the input with
    /// the offending position marked, followed by what was expected there.
    pub fn parse(s: &str) -> Result<Filter> {
        if s.is_empty() {
            return Ok(Filter::always());
        }
        let selectors = Parser::new(s).selectors()?;
        Ok(Filter {
            alternatives: Some(vec![selectors]),
        })
    }

    /// Parses several filter strings into one filter that matches when any of them matches.
    ///
    /// An empty slice matches everything, and so does a slice containing an empty string.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter> {
        let mut alternatives = Vec::with_capacity(filters.len());
        let mut always = filters.is_empty();
        for f in filters {
            let parsed = Filter::parse(f.as_ref())?;
            match parsed.alternatives {
                None => always = true,
                Some(alts) => alternatives.extend(alts),
            }
        }
        Ok(Filter {
            alternatives: if always { None } else { Some(alternatives) },
        })
    }

    /// True when `obj` matches.
    pub fn matches(&self, obj: &dyn Adaptor) -> bool {
        match &self.alternatives {
            None => true,
            Some(alts) => alts
                .iter()
                .any(|all| all.iter().all(|sel| sel.matches(obj))),
        }
    }
}

impl Default for Filter {
    fn default() -> Self {
        Filter::always()
    }
}

// ---------------------------------------------------------------------------------------------
// Scanner

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Eof,
    /// A `"…"`, `/…/` or `|…|` literal, delimiters included in the text.
    Quoted,
    /// An unquoted value after an operator.
    Value,
    /// A run of `[A-Za-z0-9_]`.
    Field,
    /// `,` or `.`.
    Separator,
    /// A run of `=`, `!` and `~` (validated by the parser).
    Operator,
    /// Malformed input; the scanner's `err` says why.
    Illegal,
    /// Any other single character.
    Other(char),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token<'a> {
    pos: usize,
    tok: Tok,
    text: &'a str,
}

struct Scanner<'a> {
    input: &'a str,
    pos: usize,
    /// Set after an operator: the next non-separator token is a value, whose characters are
    /// far less restricted than a field's.
    value_mode: bool,
    /// The first problem met; like containerd, later problems do not overwrite it.
    err: Option<&'static str>,
}

fn is_field_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn is_value_char(c: char) -> bool {
    // containerd accepts graphic (printable) characters; control characters never qualify.
    c != ',' && !c.is_whitespace() && !c.is_control()
}

impl<'a> Scanner<'a> {
    fn new(input: &'a str) -> Self {
        Scanner {
            input,
            pos: 0,
            value_mode: false,
            err: None,
        }
    }

    fn peek(&self) -> Option<char> {
        self.input
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\0' {
            self.note("unexpected null");
        }
        Some(c)
    }

    fn note(&mut self, msg: &'static str) {
        self.err.get_or_insert(msg);
    }

    fn bump_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.bump();
        }
    }

    fn scan(&mut self) -> Token<'a> {
        self.bump_while(char::is_whitespace);
        let start = self.pos;
        let tok = match self.bump() {
            None => Tok::Eof,
            Some('\0') => Tok::Illegal,
            Some(q @ ('/' | '|' | '"')) => {
                if self.scan_quoted(q) {
                    Tok::Quoted
                } else {
                    Tok::Illegal
                }
            }
            Some(',' | '.') => {
                self.value_mode = false;
                Tok::Separator
            }
            Some('=' | '!' | '~') => {
                self.bump_while(|c| matches!(c, '=' | '!' | '~'));
                self.value_mode = true;
                Tok::Operator
            }
            Some(_) if self.value_mode => {
                self.bump_while(is_value_char);
                self.value_mode = false;
                Tok::Value
            }
            Some(c) if is_field_char(c) => {
                self.bump_while(is_field_char);
                Tok::Field
            }
            Some(c) => Tok::Other(c),
        };
        Token {
            pos: start,
            tok,
            text: &self.input[start..self.pos],
        }
    }

    /// Consumes a quoted literal whose opening `quote` is already consumed; false when it is
    /// unterminated or holds a bad escape (the reason goes to `err`).
    fn scan_quoted(&mut self, quote: char) -> bool {
        let mut legal = true;
        // `current` is the character under examination, already consumed.
        let mut current = self.bump();
        loop {
            match current {
                Some(c) if c == quote => return legal,
                None | Some('\n' | '\0') => {
                    self.note("quoted literal not terminated");
                    return false;
                }
                Some('\\') => {
                    let (next, ok) = self.scan_escape(quote);
                    legal &= ok;
                    current = next;
                }
                Some(_) => current = self.bump(),
            }
        }
    }

    /// Consumes an escape after its backslash; returns the following character and whether the
    /// escape was well formed.
    fn scan_escape(&mut self, quote: char) -> (Option<char>, bool) {
        let escaped = self.bump();
        match escaped {
            Some(c)
                if c == quote || matches!(c, 'a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\') =>
            {
                (self.bump(), true)
            }
            Some('0'..='7') => self.scan_digits(escaped, 8, 3),
            Some('x') => {
                let first = self.bump();
                self.scan_digits(first, 16, 2)
            }
            Some('u') => {
                let first = self.bump();
                self.scan_digits(first, 16, 4)
            }
            Some('U') => {
                let first = self.bump();
                self.scan_digits(first, 16, 8)
            }
            _ => {
                self.note("illegal escape sequence");
                // The offending character is examined again by the caller, so a newline or the
                // end of input still ends the literal.
                (escaped, false)
            }
        }
    }

    fn scan_digits(
        &mut self,
        mut current: Option<char>,
        base: u32,
        count: usize,
    ) -> (Option<char>, bool) {
        let mut left = count;
        while left > 0 && current.is_some_and(|c| c.is_digit(base)) {
            current = self.bump();
            left -= 1;
        }
        if left > 0 {
            self.note("illegal numeric escape sequence");
            return (current, false);
        }
        (current, true)
    }
}

// ---------------------------------------------------------------------------------------------
// Unquoting

/// Decodes a quoted literal including its delimiters (`"…"`, `/…/`, `|…|`) with Go's string
/// escapes; inside `/…/` and `|…|` the delimiter is the escapable quote.
fn unquote(literal: &str) -> std::result::Result<String, &'static str> {
    const SYNTAX: &str = "quote syntax error";
    let mut chars = literal.chars();
    let quote = chars.next().ok_or(SYNTAX)?;
    if chars.next_back() != Some(quote) || !matches!(quote, '"' | '/' | '|') {
        return Err(SYNTAX);
    }
    let body = chars.as_str();
    // Bytes, not chars: `\xNN` and octal escapes produce single bytes, as in Go.
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut rest = body.chars();
    while let Some(c) = rest.next() {
        if c == quote || c == '\n' {
            return Err(SYNTAX);
        }
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let e = rest.next().ok_or(SYNTAX)?;
        let simple = match e {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '\'' | '"' | '|' | '/' if e == quote => Some(e as u8),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        match e {
            'x' => {
                let v = take_digits(&mut rest, 16, 2).ok_or(SYNTAX)?;
                out.push(u8::try_from(v).map_err(|_| SYNTAX)?);
            }
            'u' | 'U' => {
                let n = if e == 'u' { 4 } else { 8 };
                let v = take_digits(&mut rest, 16, n).ok_or(SYNTAX)?;
                if v > 0x10FFFF {
                    return Err(SYNTAX);
                }
                // Go encodes a surrogate code point as U+FFFD rather than rejecting it.
                let ch = char::from_u32(v).unwrap_or('\u{FFFD}');
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            '0'..='7' => {
                let tail = take_digits(&mut rest, 8, 2).ok_or(SYNTAX)?;
                let v = (e as u32 - '0' as u32) * 64 + tail;
                out.push(u8::try_from(v).map_err(|_| SYNTAX)?);
            }
            _ => return Err(SYNTAX),
        }
    }
    String::from_utf8(out).map_err(|_| "escapes do not form valid UTF-8")
}

fn take_digits(chars: &mut std::str::Chars<'_>, base: u32, count: usize) -> Option<u32> {
    let mut v: u32 = 0;
    for _ in 0..count {
        let d = chars.next()?.to_digit(base)?;
        v = v * base + d;
    }
    Some(v)
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    input: &'a str,
    sc: Scanner<'a>,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            sc: Scanner::new(input),
        }
    }

    /// A parse error in containerd's shape: the input with the character at `pos` marked.
    fn error(&self, pos: usize, msg: impl fmt::Display) -> Error {
        let marked = match self.input.get(pos..).and_then(|r| r.chars().next()) {
            Some(c) => format!(
                "[{} >|{}|< {}]",
                &self.input[..pos],
                c,
                &self.input[pos + c.len_utf8()..]
            ),
            None => format!("[{}]", self.input),
        };
        Error::invalid_argument(format!("filters: parse error: {marked}: {msg}"))
    }

    fn illegal(&self, pos: usize) -> Error {
        self.error(pos, self.sc.err.unwrap_or("illegal input"))
    }

    fn selectors(&mut self) -> Result<Vec<Selector>> {
        let mut all = vec![self.selector()?];
        loop {
            match self.sc.peek() {
                None => return Ok(all),
                Some(',') => {
                    self.sc.scan();
                    all.push(self.selector()?);
                }
                Some(c) => {
                    // containerd shows a NUL here as the replacement character.
                    let shown = if c == '\0' { '\u{FFFD}' } else { c };
                    return Err(self.error(self.sc.pos, format_args!("unexpected input: {shown}")));
                }
            }
        }
    }

    fn selector(&mut self) -> Result<Selector> {
        let path = self.fieldpath()?;
        if matches!(self.sc.peek(), None | Some(',')) {
            return Ok(Selector {
                path,
                op: Operator::Present,
            });
        }
        let op = self.sc.scan();
        let kind = match op.tok {
            Tok::Operator => match op.text {
                "==" => OpKind::Equal,
                "!=" => OpKind::NotEqual,
                "~=" => OpKind::Matches,
                other => {
                    return Err(self.error(op.pos, format_args!("unsupported operator {other:?}")))
                }
            },
            Tok::Illegal => return Err(self.illegal(op.pos)),
            _ => {
                return Err(self.error(op.pos, r#"expected an operator ("=="|"!="|"~=")"#));
            }
        };
        let (value_pos, value) = self.value(kind == OpKind::Matches)?;
        let op = match kind {
            OpKind::Equal => Operator::Equal(value),
            OpKind::NotEqual => Operator::NotEqual(value),
            OpKind::Matches => Operator::Matches(compile_go_regex(&value).map_err(|why| {
                self.error(
                    value_pos,
                    format_args!("invalid regular expression {value:?}: {why}"),
                )
            })?),
        };
        Ok(Selector { path, op })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>> {
        let mut path = vec![self.field()?];
        while self.sc.peek() == Some('.') {
            self.sc.scan();
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> Result<String> {
        let t = self.sc.scan();
        match t.tok {
            Tok::Field => Ok(t.text.to_string()),
            Tok::Quoted => self.unquote(t, false),
            Tok::Illegal => Err(self.illegal(t.pos)),
            _ => Err(self.error(t.pos, "expected field or quoted")),
        }
    }

    fn value(&mut self, allow_regex_quotes: bool) -> Result<(usize, String)> {
        let t = self.sc.scan();
        let v = match t.tok {
            Tok::Value | Tok::Field => t.text.to_string(),
            Tok::Quoted => self.unquote(t, allow_regex_quotes)?,
            Tok::Illegal => return Err(self.illegal(t.pos)),
            _ => return Err(self.error(t.pos, "expected value or quoted")),
        };
        Ok((t.pos, v))
    }

    fn unquote(&self, t: Token<'_>, allow_regex_quotes: bool) -> Result<String> {
        if !allow_regex_quotes && !t.text.starts_with('"') {
            return Err(self.error(t.pos, "invalid quote encountered"));
        }
        unquote(t.text).map_err(|why| self.error(t.pos, format_args!("unquoting failed: {why}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Equal,
    NotEqual,
    Matches,
}

/// Compiles a regular expression written for Go's `regexp` (RE2 syntax, as containerd uses)
/// with the `regex` crate.
///
/// The two dialects mostly agree; where they differ, the pattern is rewritten so it means what it
/// means to Go: a `{` that does not start a repeat is a literal, `\Q…\E` quotes literally, `\<`
/// and `\>` are the plain characters, and inside a class `&&`, `~~`, `--` and a `[` not opening
/// `[:name:]` are literals. Patterns Go rejects and `regex` would take are refused: stacked
/// repetitions (`a**`, `a*??`, `a{2}{3}`) and repeat counts above 1000.
fn compile_go_regex(pattern: &str) -> std::result::Result<Regex, String> {
    let translated = translate_go_regex(pattern)?;
    Regex::new(&translated).map_err(|e| regex_reason(&e))
}

/// The `{n}`, `{n,}` or `{n,m}` at the start of `chars`, as Go recognises a repeat: its length
/// and bounds (`max` is `None` for `{n,}`). Anything else is not a repeat.
fn go_repeat(chars: &[char]) -> Option<(usize, u64, Option<u64>)> {
    fn number(chars: &[char], at: usize) -> Option<(u64, usize)> {
        let digits = chars[at..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        // Long digit runs saturate; they are rejected as too large anyway.
        let value = chars[at..at + digits].iter().fold(0u64, |v, c| {
            v.saturating_mul(10)
                .saturating_add(u64::from(*c as u8 - b'0'))
        });
        Some((value, at + digits))
    }
    if chars.first() != Some(&'{') {
        return None;
    }
    let (min, mut at) = number(chars, 1)?;
    let mut max = Some(min);
    if chars.get(at) == Some(&',') {
        at += 1;
        max = match number(chars, at) {
            Some((m, next)) => {
                at = next;
                Some(m)
            }
            None => None,
        };
    }
    (chars.get(at) == Some(&'}')).then_some((at + 1, min, max))
}

/// Copies an escape starting at `chars[i] == '\\'` into `out`; returns the index after it.
///
/// Go's Perl classes and word boundaries are ASCII-only where `regex` is Unicode-aware, so they
/// become the equivalent ASCII classes (`in_class` says whether we are inside `[...]`).
fn copy_escape(chars: &[char], i: usize, out: &mut String, in_class: bool) -> usize {
    let Some(&next) = chars.get(i + 1) else {
        // A trailing backslash: left for the regex compiler to reject, as Go does.
        out.push('\\');
        return i + 1;
    };
    let ascii = match (next, in_class) {
        ('d', false) => Some("[[:digit:]]"),
        ('d', true) => Some("[:digit:]"),
        ('D', false) => Some("[[:^digit:]]"),
        ('D', true) => Some("[:^digit:]"),
        ('w', false) => Some("[[:word:]]"),
        ('w', true) => Some("[:word:]"),
        ('W', false) => Some("[[:^word:]]"),
        ('W', true) => Some("[:^word:]"),
        // Go's \s is exactly these five; the POSIX class would add \v.
        ('s', false) => Some(r"[\t\n\f\r ]"),
        ('s', true) => Some(r"\t\n\f\r "),
        ('S', _) => Some(r"[^\t\n\f\r ]"),
        ('b', false) => Some(r"(?-u:\b)"),
        ('B', false) => Some(r"(?-u:\B)"),
        _ => None,
    };
    if let Some(ascii) = ascii {
        out.push_str(ascii);
        return i + 2;
    }
    match next {
        // `regex` gives these word-boundary meanings; Go reads them as the characters.
        '<' | '>' => {
            out.push(next);
            i + 2
        }
        // Escapes with a braced argument: copy through the closing brace.
        'p' | 'P' | 'x' if chars.get(i + 2) == Some(&'{') => {
            let end = chars[i + 2..]
                .iter()
                .position(|&c| c == '}')
                .map_or(chars.len(), |p| i + 2 + p + 1);
            out.extend(&chars[i..end]);
            end
        }
        _ => {
            out.push('\\');
            out.push(next);
            i + 2
        }
    }
}

fn translate_go_regex(pattern: &str) -> std::result::Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    // Where the previous token began, when that token was a repetition operator.
    let mut last_repeat: Option<usize> = None;
    let mut i = 0;
    // A flag group such as `(?i)` is no operand in Go: a repetition right after it applies to
    // what came before. `regex` rejects that, so flag groups wait until after such a repetition.
    let mut pending_flags = String::new();
    while i < chars.len() {
        let start = i;
        let mut repeat = false;
        let mut flags = false;
        let mut bad_count = None;
        let mut tok = String::new();
        match chars[i] {
            '\\' if chars.get(i + 1) == Some(&'Q') => {
                let body = i + 2;
                let end = (body..chars.len())
                    .find(|&j| chars[j] == '\\' && chars.get(j + 1) == Some(&'E'));
                let literal: String = chars[body..end.unwrap_or(chars.len())].iter().collect();
                tok.push_str(&regex::escape(&literal));
                i = end.map_or(chars.len(), |e| e + 2);
            }
            '\\' => i = copy_escape(&chars, i, &mut tok, false),
            '[' => i = translate_class(&chars, i, &mut tok)?,
            '(' if chars.get(i + 1) == Some(&'?') => {
                let letters = chars[i + 2..]
                    .iter()
                    .take_while(|c| matches!(c, 'i' | 'm' | 's' | 'U' | '-'))
                    .count();
                let after = i + 2 + letters;
                match chars.get(after) {
                    Some(')') if letters > 0 => {
                        tok.extend(&chars[i..=after]);
                        i = after + 1;
                        flags = true;
                    }
                    Some(':') if letters > 0 => {
                        tok.extend(&chars[i..=after]);
                        i = after + 1;
                    }
                    Some('P') if letters == 0 => {
                        tok.push_str("(?P");
                        i += 3;
                    }
                    _ => {
                        let text: String = chars[i..(after + 1).min(chars.len())].iter().collect();
                        return Err(format!("invalid or unsupported Perl syntax: `{text}`"));
                    }
                }
            }
            '*' | '+' | '?' => {
                tok.push(chars[i]);
                i += 1;
                repeat = true;
            }
            '{' => match go_repeat(&chars[i..]) {
                Some((len, min, max)) => {
                    if min > 1000 || max.is_some_and(|m| m > 1000 || m < min) {
                        let text: String = chars[i..i + len].iter().collect();
                        bad_count = Some(format!("invalid repeat count: `{text}`"));
                    }
                    tok.extend(&chars[i..i + len]);
                    i += len;
                    repeat = true;
                }
                None => {
                    tok.push_str("\\{");
                    i += 1;
                }
            },
            c => {
                tok.push(c);
                i += 1;
            }
        }
        if flags {
            pending_flags.push_str(&tok);
            last_repeat = None;
        } else if repeat {
            if let Some(prev) = last_repeat {
                // Go quotes the operators, including a non-greedy `?` after the second one.
                let end = if chars.get(i) == Some(&'?') { i + 1 } else { i };
                let text: String = chars[prev..end].iter().collect();
                return Err(format!("invalid nested repetition operator: `{text}`"));
            }
            // Go checks stacking first, then the count.
            if let Some(why) = bad_count {
                return Err(why);
            }
            if chars.get(i) == Some(&'?') {
                tok.push('?');
                i += 1;
            }
            out.push_str(&tok);
            out.push_str(&std::mem::take(&mut pending_flags));
            last_repeat = Some(start);
        } else {
            out.push_str(&std::mem::take(&mut pending_flags));
            out.push_str(&tok);
            last_repeat = None;
        }
    }
    out.push_str(&pending_flags);
    Ok(out)
}

/// Copies a character class starting at `chars[i] == '['`, spelled so `regex` reads it as Go
/// does; returns the index after the class.
///
/// Go's class is a list of single characters, `lo-hi` ranges, escapes and `[:name:]` classes;
/// `regex` additionally has nested classes and the `&&`, `--`, `~~` set operations, so every
/// literal `[`, `&`, `~` and `-` is escaped and ranges are rebuilt explicitly.
fn translate_class(
    chars: &[char],
    mut i: usize,
    out: &mut String,
) -> std::result::Result<usize, String> {
    out.push('[');
    i += 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    while i < chars.len() {
        // A `]` right after the opening is a member, not the end.
        if chars[i] == ']' && !first {
            out.push(']');
            return Ok(i + 1);
        }
        first = false;
        if chars[i] == '[' && chars.get(i + 1) == Some(&':') {
            if let Some(end) = (i + 2..chars.len().saturating_sub(1))
                .find(|&j| chars[j] == ':' && chars[j + 1] == ']')
            {
                out.extend(&chars[i..end + 2]);
                i = end + 2;
                continue;
            }
        }
        let lo = class_atom(chars, i);
        let starts_range = lo.range_capable
            && chars.get(lo.end) == Some(&'-')
            && chars.get(lo.end + 1).is_some_and(|&c| c != ']');
        if !starts_range {
            out.push_str(&lo.text);
            i = lo.end;
            continue;
        }
        let hi = class_atom(chars, lo.end + 1);
        if let (Some(l), Some(h)) = (lo.literal, hi.literal) {
            if h < l {
                let text: String = chars[i..hi.end].iter().collect();
                return Err(format!("invalid character class range: `{text}`"));
            }
        }
        out.push_str(&lo.text);
        out.push('-');
        out.push_str(&hi.text);
        i = hi.end;
    }
    // Unterminated: the compiler reports it, as Go does.
    Ok(i)
}

/// One member of a character class, re-spelled for `regex`.
struct ClassAtom {
    text: String,
    /// The character, when the member is a plain one (escapes are left to the compiler).
    literal: Option<char>,
    /// False for class escapes such as `\d` or `\pL`, which cannot bound a range.
    range_capable: bool,
    end: usize,
}

fn class_atom(chars: &[char], i: usize) -> ClassAtom {
    let c = chars[i];
    if c == '\\' {
        let mut text = String::new();
        let end = copy_escape(chars, i, &mut text, true);
        let class_escape = matches!(
            chars.get(i + 1),
            Some('d' | 'D' | 's' | 'S' | 'w' | 'W' | 'p' | 'P')
        );
        return ClassAtom {
            text,
            literal: None,
            range_capable: !class_escape,
            end,
        };
    }
    let text = if matches!(c, '[' | ']' | '&' | '~' | '-') {
        format!("\\{c}")
    } else {
        c.to_string()
    };
    ClassAtom {
        text,
        literal: Some(c),
        range_capable: true,
        end: i + 1,
    }
}

/// The one-line reason of a regex error (its full text draws a multi-line caret diagram).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[derive(Debug, Clone, Default)]
    struct Entry {
        name: &'static str,
        other: &'static str,
        labels: BTreeMap<String, String>,
    }

    impl Adaptor for Entry {
        fn field(&self, path: &[&str]) -> Option<String> {
            let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
            match *path.first()? {
                "name" => nonempty(self.name),
                "other" => nonempty(self.other),
                "labels" => map_field(&path[1..], &self.labels),
                _ => None,
            }
        }
    }

    fn entry(name: &'static str, other: &'static str, labels: &[(&str, &str)]) -> Entry {
        Entry {
            name,
            other,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The objects the table below filters; indices are what each case expects to match.
    fn corpus() -> Vec<Entry> {
        vec![
            entry("foo", "", &[("foo", "true")]),
            entry("bar", "", &[]),
            entry(
                "foo",
                "",
                &[("foo", "present"), ("more complex label", "present")],
            ),
            entry("bar", "", &[("bar", "true")]),
            entry(
                "fooer",
                "",
                &[(r#"more complex label with \ and ""#, "present")],
            ),
            entry(
                "fooer",
                "",
                &[(r#"more complex label with \ and ".post"#, "present")],
            ),
            entry("baz", "too complex, yo", &[]),
            entry("bazo", "abc", &[]),
            entry("compound", "", &[("foo", "omg_asdf.asdf-qwer")]),
        ]
    }

    fn matching(filter: &Filter) -> Vec<usize> {
        corpus()
            .iter()
            .enumerate()
            .filter(|(_, e)| filter.matches(*e))
            .map(|(i, _)| i)
            .collect()
    }

    fn select(input: &str) -> Vec<usize> {
        let f = Filter::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        matching(&f)
    }

    fn parse_err(input: &str) -> String {
        let e = Filter::parse(input).expect_err(input);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{input:?}: {e}");
        e.message().to_string()
    }

    #[test]
    fn presence_equality_and_conjunction() {
        assert_eq!(select(""), (0..9).collect::<Vec<_>>());
        assert_eq!(select("name"), (0..9).collect::<Vec<_>>());
        assert_eq!(select("other"), vec![6, 7]);
        assert_eq!(select("labels.foo"), vec![0, 2, 8]);
        assert_eq!(select("labels.foo,name"), vec![0, 2, 8]);
        assert_eq!(select("labels.foo==true"), vec![0]);
        assert_eq!(select("name==bar"), vec![1, 3]);
        assert_eq!(select("name!=bar"), vec![0, 2, 4, 5, 6, 7, 8]);
        assert_eq!(select("name==bar,labels.bar"), vec![3]);
        assert_eq!(select("name==bar,labels.bar==true"), vec![3]);
        assert!(select("name==bar,labels.bar==wrong").is_empty());
        assert!(select("name==nosuch").is_empty());
    }

    #[test]
    fn unquoted_values_keep_punctuation_and_non_ascii() {
        assert_eq!(select("labels.foo==omg_asdf.asdf-qwer"), vec![8]);
        let f = Filter::parse("name==牛/ü=x").unwrap();
        assert!(f.matches(&entry("牛/ü=x", "", &[])));
        assert!(!f.matches(&entry("牛", "", &[])));
    }

    #[test]
    fn quoted_values_may_hold_commas_and_spaces() {
        assert_eq!(select(r#"other=="too complex, yo""#), vec![6]);
    }

    #[test]
    fn regular_expressions_bare_and_delimited() {
        assert_eq!(select("other~=[abc]+,name!=foo"), vec![6, 7]);
        assert_eq!(select("other~=/[abc]+/,name!=foo"), vec![6, 7]);
        // The comma inside `{1,2}` belongs to the delimited regex, not the selector list.
        assert_eq!(select("other~=/[abc]{1,2}/,name!=foo"), vec![6, 7]);
        assert_eq!(select("other~=|[abc]{1,2}|,name!=foo"), vec![6, 7]);
        assert_eq!(select("name~=^foo"), vec![0, 2, 4, 5]);
        assert_eq!(select("name~=^foo$"), vec![0, 2]);
        // Valid, and the escaped delimiter becomes part of the regex, so nothing matches.
        assert!(select(r#"other~=/[abc]{0,1}"\//,name!=foo"#).is_empty());
        let f = Filter::parse(r"name~=/a\/b/").unwrap();
        assert!(f.matches(&entry("xa/by", "", &[])));
        assert!(!f.matches(&entry("ab", "", &[])));
    }

    #[test]
    fn absent_fields_compare_as_empty_for_not_equal_and_regex() {
        // containerd quirks worth keeping: `!=` and `~=` see an absent field as "".
        assert_eq!(select("other!=abc"), vec![0, 1, 2, 3, 4, 5, 6, 8]);
        assert_eq!(select("labels.foo~=^$"), vec![1, 3, 4, 5, 6, 7]);
        assert!(select(r#"other=="""#).is_empty());
        assert_eq!(select(r#"other!="""#), vec![6, 7]);
    }

    #[test]
    fn quoted_field_path_components() {
        assert_eq!(select(r#"name==foo,labels."more complex label""#), vec![2]);
        assert_eq!(
            select(r#"labels."more complex label with \\ and \""==present"#),
            vec![4]
        );
        assert_eq!(
            select(r#"labels."more complex label with \\ and \"".post==present"#),
            vec![5]
        );
        let f = Filter::parse(r#"labels."k.with.dots"==v"#).unwrap();
        let seen = std::cell::RefCell::new(Vec::new());
        let probe = |p: &[&str]| {
            seen.borrow_mut()
                .push(p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            Some("v".to_string())
        };
        assert!(f.matches(&probe));
        assert_eq!(seen.borrow()[0], vec!["labels", "k.with.dots"]);
    }

    #[test]
    fn whitespace_around_operators_is_skipped_but_not_before_commas() {
        assert_eq!(select("  name ==  bar"), vec![1, 3]);
        assert_eq!(select("labels. foo==true"), vec![0]);
        assert_eq!(
            parse_err("name==bar ,labels.bar"),
            "filters: parse error: [name==bar >| |< ,labels.bar]: unexpected input:  "
        );
    }

    #[test]
    fn parse_errors_mark_the_position_and_say_what_was_expected() {
        let cases = [
            (
                "labels.|foo|==omg_asdf.asdf-qwer",
                "filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered",
            ),
            (
                r#"labels.?"more complex label with \\ and \"".post==present"#,
                r#"filters: parse error: [labels. >|?|< "more complex label with \\ and \"".post==present]: expected field or quoted"#,
            ),
            (
                "name==foo,",
                "filters: parse error: [name==foo,]: expected field or quoted",
            ),
            (
                "labels.",
                "filters: parse error: [labels.]: expected field or quoted",
            ),
            (
                "image~=,id?=?fbaq",
                "filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted",
            ),
            (
                "labels.ns/key==value",
                "filters: parse error: [labels.ns >|/|< key==value]: quoted literal not terminated",
            ),
            (
                "labels.key==/value",
                "filters: parse error: [labels.key== >|/|< value]: quoted literal not terminated",
            ),
            (
                "name=bar",
                r#"filters: parse error: [name >|=|< bar]: unsupported operator "=""#,
            ),
            (
                "name=~bar",
                r#"filters: parse error: [name >|=|< ~bar]: unsupported operator "=~""#,
            ),
            (
                "name==",
                "filters: parse error: [name==]: expected value or quoted",
            ),
            (
                "name==/x/",
                "filters: parse error: [name== >|/|< x/]: invalid quote encountered",
            ),
            (
                "name==x y",
                "filters: parse error: [name==x >| |< y]: unexpected input:  ",
            ),
            (
                "name==\"x\"y",
                "filters: parse error: [name==\"x\" >|y|< ]: unexpected input: y",
            ),
            (
                "name?",
                r#"filters: parse error: [name >|?|< ]: expected an operator ("=="|"!="|"~=")"#,
            ),
            (
                ",name",
                "filters: parse error: [ >|,|< name]: expected field or quoted",
            ),
            (
                " ",
                "filters: parse error: [ ]: expected field or quoted",
            ),
            (
                r#"labels."\g"==x"#,
                r#"filters: parse error: [labels. >|"|< \g"==x]: illegal escape sequence"#,
            ),
            (
                r#"labels."\xaz"==x"#,
                r#"filters: parse error: [labels. >|"|< \xaz"==x]: illegal numeric escape sequence"#,
            ),
            (
                "labels.\"a\nb\"==x",
                "filters: parse error: [labels. >|\"|< a\nb\"==x]: quoted literal not terminated",
            ),
            (
                "foo\0bar",
                r#"filters: parse error: [foo >|\0|< bar]: unexpected null"#,
            ),
            (
                r#"name=="\xff""#,
                r#"filters: parse error: [name== >|"|< \xff"]: unquoting failed: escapes do not form valid UTF-8"#,
            ),
            (
                r#"name~=/a\"b/"#,
                r#"filters: parse error: [name~= >|/|< a\"b/]: illegal escape sequence"#,
            ),
        ];
        for (input, want) in cases {
            // `\0` in the expectation stands for the NUL the input carries.
            let want = want.replace(r"\0", "\0");
            assert_eq!(parse_err(input), want, "input {input:?}");
        }
    }

    #[test]
    fn invalid_regex_is_a_parse_error_naming_the_value() {
        let msg = parse_err("name~=[abc");
        assert!(
            msg.starts_with(
                "filters: parse error: [name~= >|[|< abc]: invalid regular expression \"[abc\": "
            ),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn escapes_decode_like_go_strings() {
        let cases = [
            (r#""a\tb\nc""#, "a\tb\nc"),
            (r#""\a\b\f\r\v\\""#, "\x07\x08\x0c\r\x0b\\"),
            (r#""\x41\101\u00e9\U0001F600""#, "AAé😀"),
            (r#""\"quoted\"""#, "\"quoted\""),
            (r"/a\/b/", "a/b"),
            (r"|a\|b|", "a|b"),
            (r#""\ud800""#, "\u{FFFD}"),
        ];
        for (lit, want) in cases {
            assert_eq!(unquote(lit).as_deref(), Ok(want), "{lit}");
        }
        for bad in [
            r#""\/""#,
            r"/\|/",
            r#""\400""#,
            r#""\U00110000""#,
            r#""\q""#,
            "\"",
            r#""abc"#,
        ] {
            assert!(unquote(bad).is_err(), "{bad}");
        }
        let f = Filter::parse(r#"name=="tab\there""#).unwrap();
        assert!(f.matches(&entry("tab\there", "", &[])));
    }

    #[test]
    fn scanner_tokens_and_positions() {
        fn tokens(input: &str) -> Vec<(usize, Tok, String)> {
            let mut sc = Scanner::new(input);
            let mut out = Vec::new();
            loop {
                let t = sc.scan();
                out.push((t.pos, t.tok, t.text.to_string()));
                if t.tok == Tok::Eof {
                    return out;
                }
            }
        }
        let t = |pos, tok, text: &str| (pos, tok, text.to_string());
        assert_eq!(
            tokens("name~=牛,labels.moo=true"),
            vec![
                t(0, Tok::Field, "name"),
                t(4, Tok::Operator, "~="),
                t(6, Tok::Value, "牛"),
                t(9, Tok::Separator, ","),
                t(10, Tok::Field, "labels"),
                t(16, Tok::Separator, "."),
                t(17, Tok::Field, "moo"),
                t(20, Tok::Operator, "="),
                t(21, Tok::Value, "true"),
                t(25, Tok::Eof, ""),
            ]
        );
        assert_eq!(
            tokens("compound.labels==punctuated_value.foo-bar"),
            vec![
                t(0, Tok::Field, "compound"),
                t(8, Tok::Separator, "."),
                t(9, Tok::Field, "labels"),
                t(15, Tok::Operator, "=="),
                t(17, Tok::Value, "punctuated_value.foo-bar"),
                t(41, Tok::Eof, ""),
            ]
        );
        assert_eq!(
            tokens("input~=|foo/bar|,id!=ff"),
            vec![
                t(0, Tok::Field, "input"),
                t(5, Tok::Operator, "~="),
                t(7, Tok::Quoted, "|foo/bar|"),
                t(16, Tok::Separator, ","),
                t(17, Tok::Field, "id"),
                t(19, Tok::Operator, "!="),
                t(21, Tok::Value, "ff"),
                t(23, Tok::Eof, ""),
            ]
        );
        // A value directly after another value is scanned as a field.
        assert_eq!(
            tokens("doublevalue=value value"),
            vec![
                t(0, Tok::Field, "doublevalue"),
                t(11, Tok::Operator, "="),
                t(12, Tok::Value, "value"),
                t(18, Tok::Field, "value"),
                t(23, Tok::Eof, ""),
            ]
        );
        // An unterminated quote swallows the line; scanning resumes after the newline.
        let toks = tokens("labels.\"containerd.io\nkey\"==value");
        assert_eq!(toks[2], t(7, Tok::Illegal, "\"containerd.io\n"));
        assert_eq!(toks[3], t(22, Tok::Field, "key"));
        assert_eq!(toks[4], t(25, Tok::Illegal, "\"==value"));
        let toks = tokens("foo\0bar");
        assert_eq!(toks[1], t(3, Tok::Illegal, "\0"));
        assert_eq!(toks[2], t(4, Tok::Field, "bar"));
        assert_eq!(tokens("foo = bar    ").last(), Some(&t(13, Tok::Eof, "")));
    }

    #[test]
    fn parse_all_ors_filters_and_empty_matches_everything() {
        let none: [&str; 0] = [];
        let f = Filter::parse_all(&none).unwrap();
        assert!(f.is_always());
        assert_eq!(matching(&f).len(), 9);

        let f = Filter::parse_all(&["name==bar", "labels.foo==true"]).unwrap();
        assert_eq!(matching(&f), vec![0, 1, 3]);
        let f = Filter::parse_all(&["name==bar,labels.bar", "other~=abc"]).unwrap();
        assert_eq!(matching(&f), vec![3, 7]);
        let owned = vec![String::from("name==nosuch"), String::new()];
        assert_eq!(matching(&Filter::parse_all(&owned).unwrap()).len(), 9);

        let e = Filter::parse_all(&["name==bar", "name=="]).unwrap_err();
        assert!(e.is(ErrorKind::InvalidArgument));
        assert_eq!(
            e.to_string(),
            "filters: parse error: [name==]: expected value or quoted: invalid argument"
        );
    }

    #[test]
    fn map_field_joins_the_rest_of_the_path() {
        let labels: BTreeMap<String, String> =
            [("a.b".to_string(), "1".to_string())].into_iter().collect();
        assert_eq!(map_field(&["a", "b"], &labels).as_deref(), Some("1"));
        assert_eq!(map_field(&["a.b"], &labels).as_deref(), Some("1"));
        assert_eq!(map_field(&["a"], &labels), None);
        let f = Filter::parse("labels.a.b==1").unwrap();
        let obj = |p: &[&str]| match p.first() {
            Some(&"labels") => map_field(&p[1..], &labels),
            _ => None,
        };
        assert!(f.matches(&obj));
    }

    /// How many generated cases a differential test runs: `default`, or more for a deeper
    /// search when the variable `var` says so.
    fn generated_count(var: &str, default: usize) -> usize {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Deterministic xorshift generator, so a failing case can be reproduced from the seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    /// Builds filter strings from plausible selectors, then damages some of them with random
    /// insertions and deletions so the error paths get exercised too.
    fn generated_inputs(count: usize) -> Vec<String> {
        const PATHS: &[&str] = &[
            "name",
            "other",
            "labels",
            "labels.foo",
            "labels.bar",
            r#"labels."more complex label""#,
            r#"labels."more complex label with \\ and \"""#,
            r#"labels."more complex label with \\ and \"".post"#,
            "labels.|foo|",
            "nosuch",
            r#""leading quote".x"#,
        ];
        const OPS: &[&str] = &["==", "!=", "~=", "=", "~", "!", "=~", " == "];
        const VALUES: &[&str] = &[
            "foo",
            "bar",
            "true",
            "present",
            "omg_asdf.asdf-qwer",
            r#""too complex, yo""#,
            "[abc]+",
            "/[abc]{1,2}/",
            "|f.o|",
            "^foo$",
            "^ba",
            r#""\x66oo""#,
            r#""\146oo""#,
            r#""\u0066oo""#,
            r"/a\/b/",
            "(true|present)",
            "",
            "牛",
        ];
        const NOISE: &[&str] = &[
            "=", "!", "~", ",", ".", "\"", "/", "|", "\\", " ", "a", "f", "o", "[", "]", "(", ")",
            "*", "+", "?", "^", "$", "-", "_", "牛", "\n", "\t", "\0", "x", "7",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let selectors = 1 + rng.next() % 3;
            let mut s = String::new();
            for i in 0..selectors {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(rng.pick(PATHS));
                if rng.next() & 3 != 0 {
                    s.push_str(rng.pick(OPS));
                    s.push_str(rng.pick(VALUES));
                }
            }
            for _ in 0..rng.next() % 3 {
                let mut chars: Vec<char> = s.chars().collect();
                let at = (rng.next() % (chars.len() as u64 + 1)) as usize;
                if rng.next() & 1 == 0 || at == chars.len() {
                    let noise: Vec<char> = rng.pick(NOISE).chars().collect();
                    chars.splice(at..at, noise);
                } else {
                    chars.remove(at);
                }
                s = chars.into_iter().collect();
            }
            out.push(s);
        }
        out
    }

    /// Subjects the regex comparison matches each generated pattern against.
    const REGEX_SUBJECTS: &[&str] = &[
        "", "a", "ab", "abc", "aaa", "A", "foo", "fooer", "bar", "baz", "a{2}", "a{", "{,2}",
        "<a>", "x.y", "牛", "é", "[]", "&", "~", "-", "1", "a b", "a*", "Q.*E", ".*", "b}",
    ];

    /// Runs containerd's parser, and Go's `regexp`, on lines `F <json filter>` or
    /// `R <json pattern>`. Filters are matched against the same corpus as [`corpus`], with the
    /// same adaptor; patterns against `SUBJECTS`.
    const GO_DIFF_PROGRAM: &str = r#"package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/containerd/containerd/filters"
)

type entry struct {
	name, other string
	labels      map[string]string
}

var subjects = []string{SUBJECTS}

func main() {
	corpus := []entry{
		{"foo", "", map[string]string{"foo": "true"}},
		{"bar", "", nil},
		{"foo", "", map[string]string{"foo": "present", "more complex label": "present"}},
		{"bar", "", map[string]string{"bar": "true"}},
		{"fooer", "", map[string]string{"more complex label with \\ and \"": "present"}},
		{"fooer", "", map[string]string{"more complex label with \\ and \".post": "present"}},
		{"baz", "too complex, yo", nil},
		{"bazo", "abc", nil},
		{"compound", "", map[string]string{"foo": "omg_asdf.asdf-qwer"}},
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		line := in.Text()
		var s string
		if err := json.Unmarshal([]byte(line[2:]), &s); err != nil {
			panic(err)
		}
		mask := 0
		if line[0] == 'R' {
			re, err := regexp.Compile(s)
			if err != nil {
				msg, _ := json.Marshal(err.Error())
				fmt.Fprintf(out, "E %s\n", msg)
				continue
			}
			for i, subject := range subjects {
				if re.MatchString(subject) {
					mask |= 1 << i
				}
			}
			fmt.Fprintf(out, "M %d\n", mask)
			continue
		}
		f, err := filters.Parse(s)
		if err != nil {
			msg, _ := json.Marshal(err.Error())
			fmt.Fprintf(out, "E %s\n", msg)
			continue
		}
		for i, e := range corpus {
			e := e
			a := filters.AdapterFunc(func(p []string) (string, bool) {
				switch p[0] {
				case "name":
					return e.name, e.name != ""
				case "other":
					return e.other, e.other != ""
				case "labels":
					v, ok := e.labels[strings.Join(p[1:], ".")]
					return v, ok
				}
				return "", false
			})
			if f.Match(a) {
				mask |= 1 << i
			}
		}
		fmt.Fprintf(out, "M %d\n", mask)
	}
}
"#;

    enum GoResult {
        Error(String),
        Mask(u32),
    }

    /// Runs `inputs` (`'F'` filters or `'R'` regexes) through containerd's `filters.Parse` or
    /// Go's `regexp`, from the Go sources Debian ships.
    fn go_results(mode: char, inputs: &[String]) -> Option<Vec<GoResult>> {
        if !crate::gotest::have_containerd_package("filters", "containerd's filter parser") {
            return None;
        }
        let subjects: Vec<String> = REGEX_SUBJECTS
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        let program = GO_DIFF_PROGRAM.replace("SUBJECTS", &subjects.join(", "));
        let lines: Vec<String> = inputs
            .iter()
            .map(|s| format!("{mode} {}", serde_json::to_string(s).unwrap()))
            .collect();
        let results: Vec<GoResult> =
            crate::gotest::run_lines(&format!("filters-diff-{mode}"), &program, &lines)
                .iter()
                .map(|l| match l.split_once(' ') {
                    Some(("E", msg)) => GoResult::Error(serde_json::from_str(msg).unwrap()),
                    Some(("M", mask)) => GoResult::Mask(mask.parse().unwrap()),
                    _ => panic!("unexpected line from go: {l:?}"),
                })
                .collect();
        assert_eq!(results.len(), inputs.len(), "one result per input");
        Some(results)
    }

    #[test]
    fn agrees_with_containerd_on_generated_filters() {
        let inputs = generated_inputs(generated_count("STOWAGE_FILTER_CASES", 3000));
        let Some(go) = go_results('F', &inputs) else {
            return;
        };
        let corpus = corpus();
        let mut compared_ok = 0;
        let mut compared_err = 0;
        for (input, go) in inputs.iter().zip(go) {
            let ours = Filter::parse(input);
            // Go marks one byte of a multi-byte character (we mark the whole character), so
            // exact message comparison is limited to ASCII input.
            let plain = input.is_ascii();
            match (ours, go) {
                (Ok(f), GoResult::Mask(mask)) => {
                    let ours: u32 = corpus
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| f.matches(*e))
                        .map(|(i, _)| 1 << i)
                        .sum();
                    assert_eq!(ours, mask, "matches differ for {input:?}");
                    compared_ok += 1;
                }
                (Err(e), GoResult::Error(msg)) => {
                    // We report a bad regex as soon as it is parsed; containerd never does, so it
                    // reports whatever later problem the input has.
                    if plain && !e.message().contains("invalid regular expression") {
                        assert_eq!(e.message(), msg, "error differs for {input:?}");
                    }
                    compared_err += 1;
                }
                // Deliberate differences: an invalid regex (containerd matches nothing) and
                // escapes producing invalid UTF-8 (containerd keeps the raw bytes).
                (Err(e), GoResult::Mask(mask))
                    if e.message().contains("invalid regular expression") && mask == 0 => {}
                (Err(e), GoResult::Mask(_))
                    if e.message().contains("escapes do not form valid UTF-8") => {}
                (Err(e), GoResult::Mask(mask)) => {
                    panic!("we reject {input:?} ({e}) but containerd accepts it (mask {mask:b})")
                }
                (Ok(_), GoResult::Error(msg)) => {
                    panic!("we accept {input:?} but containerd rejects it: {msg}")
                }
            }
        }
        // The generator must exercise both outcomes for the comparison to mean anything.
        assert!(
            compared_ok > 300 && compared_err > 300,
            "{compared_ok} ok, {compared_err} errors"
        );
    }

    /// Random patterns built from pieces where Go's RE2 dialect and the `regex` crate differ.
    fn generated_regexes(count: usize) -> Vec<String> {
        const ATOMS: &[&str] = &[
            "a",
            "b",
            "o",
            "f",
            "z",
            "r",
            ".",
            "*",
            "+",
            "?",
            "{2}",
            "{1,}",
            "{0,2}",
            "{,2}",
            "{",
            "}",
            "{1001}",
            "{3,1}",
            "[a-c]",
            "[^o]",
            "[[:alpha:]]",
            "[a&&b]",
            "[~~a]",
            "[a--c]",
            "[]a]",
            "[[a]",
            "\\Q.*\\E",
            "\\Q{",
            "\\<",
            "\\>",
            "(",
            ")",
            "|",
            "^",
            "$",
            "\\w",
            "\\d",
            "\\b",
            "(?i)",
            "(?s:",
            "(?x)",
            "(?P<n>",
            "\\s",
            "\\S",
            "\\W",
            "\\D",
            "\\B",
            "[\\d-z]",
            "[\\w]",
            "[+--]",
            "[a-]",
            "[\\S]",
            " ",
            "\\pL",
            "\\p{Greek}",
            "\\x{62}",
            "\\x62",
            "\\",
            "*?",
            "牛",
            "é",
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        (0..count)
            .map(|_| {
                let n = 1 + rng.next() % 5;
                (0..n).map(|_| rng.pick(ATOMS)).collect()
            })
            .collect()
    }

    #[test]
    fn regex_dialect_agrees_with_go() {
        let patterns = generated_regexes(generated_count("STOWAGE_REGEX_CASES", 4000));
        let Some(go) = go_results('R', &patterns) else {
            return;
        };
        let (mut ok, mut err) = (0, 0);
        for (pattern, go) in patterns.iter().zip(go) {
            match (compile_go_regex(pattern), go) {
                (Ok(re), GoResult::Mask(mask)) => {
                    let ours: u32 = REGEX_SUBJECTS
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| re.is_match(s))
                        .map(|(i, _)| 1 << i)
                        .sum();
                    assert_eq!(ours, mask, "matches differ for {pattern:?}");
                    ok += 1;
                }
                (Err(why), GoResult::Error(msg)) => {
                    // Where we name the same problem as Go (it may find another one first), the
                    // words must agree.
                    let kind = why.split(':').next().unwrap_or("");
                    if msg.starts_with(&format!("error parsing regexp: {kind}:"))
                        && (why.starts_with("invalid nested") || why.starts_with("invalid repeat"))
                    {
                        assert_eq!(msg, format!("error parsing regexp: {why}"), "{pattern:?}");
                    }
                    err += 1;
                }
                (Err(why), GoResult::Mask(_)) => {
                    panic!("we reject {pattern:?} ({why}) but Go accepts it")
                }
                (Ok(_), GoResult::Error(msg)) => {
                    panic!("we accept {pattern:?} but Go rejects it: {msg}")
                }
            }
        }
        assert!(ok > 300 && err > 300, "{ok} ok, {err} errors");
    }

    #[test]
    fn damaged_input_never_panics_and_errors_are_invalid_argument() {
        let obj = entry("foo", "abc", &[("foo", "true")]);
        for input in generated_inputs(3000) {
            match Filter::parse(&input) {
                Ok(f) => {
                    f.matches(&obj);
                }
                Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{input:?}"),
            }
        }
        for pattern in generated_regexes(3000) {
            let _ = compile_go_regex(&pattern);
        }
    }

    #[test]
    fn regex_translation_keeps_go_meanings() {
        let is = |p: &str, s: &str| compile_go_regex(p).unwrap().is_match(s);
        assert!(is("^a{$", "a{"));
        assert!(is("^x{,3}$", "x{,3}"));
        assert!(is(r"^\Q.*\E$", ".*") && !is(r"^\Q.*\E$", "ab"));
        assert!(is(r"\<a\>", "<a>") && !is(r"\<a\>", "a"));
        assert!(is("^[a&&b]$", "&") && is("^[a&&b]$", "a"));
        assert!(is(r"^\p{Greek}$", "λ") && is(r"^\x{62}$", "b"));
        assert!(is("^a{2}$", "aa") && !is("^a{2}$", "a{2}"));
        for (bad, why) in [
            ("a**", "invalid nested repetition operator: `**`"),
            ("a*??", "invalid nested repetition operator: `*??`"),
            ("a{2}{3}", "invalid nested repetition operator: `{2}{3}`"),
            ("a{1001}", "invalid repeat count: `{1001}`"),
            ("a{3,1}", "invalid repeat count: `{3,1}`"),
        ] {
            assert_eq!(compile_go_regex(bad).unwrap_err(), why, "{bad}");
        }
        let msg = parse_err("name~=a**");
        assert!(
            msg.ends_with("invalid nested repetition operator: `**`"),
            "{msg}"
        );
    }
}

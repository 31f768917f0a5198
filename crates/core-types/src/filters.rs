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
//! tests an absent field as the empty string. One deliberate difference: containerd compiles a
//! `~=` regular expression only when matching and silently matches nothing if it is invalid;
//! here an invalid regular expression is a parse error, so the caller learns of the mistake.

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
                    return Err(self.error(
                        self.sc.pos,
                        format_args!("unexpected input: {}", c.escape_debug()),
                    ))
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
            OpKind::Matches => Operator::Matches(Regex::new(&value).map_err(|e| {
                self.error(
                    value_pos,
                    format_args!("invalid regular expression {value:?}: {}", regex_reason(&e)),
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
}

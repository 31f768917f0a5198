//! Everything stow prints: ctr-like tables (or ids only with `--quiet`), JSON for scripts, and
//! the human forms of sizes, ages and times ctr uses.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use serde_json::Value;

/// How listings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns under a header, as ctr prints them.
    Table,
    /// One JSON array (one object per line for streams such as `events`).
    Json,
}

/// A listing: rows of cells for the table, one JSON object per row for scripts.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    json: Vec<Value>,
    id_column: usize,
}

impl Table {
    /// An empty listing under `header`; `--quiet` prints the first column.
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
            json: Vec::new(),
            id_column: 0,
        }
    }

    /// Makes `--quiet` print column `i` instead of the first.
    pub fn id_column(mut self, i: usize) -> Table {
        self.id_column = i;
        self
    }

    /// Adds one row: its table cells and its JSON object.
    pub fn row(&mut self, cells: Vec<String>, json: Value) {
        self.rows.push(cells);
        self.json.push(json);
    }

    /// Prints the listing in `format`; with `quiet` (and the table format) only the id column.
    pub fn print(self, format: Format, quiet: bool) {
        if format == Format::Json {
            print_json(&Value::Array(self.json));
            return;
        }
        if quiet {
            for r in &self.rows {
                println!("{}", r.get(self.id_column).map_or("", String::as_str));
            }
            return;
        }
        print!("{}", self.render());
    }

    /// The aligned table: each column as wide as its widest cell, one space between columns.
    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::new();
            for (i, c) in cells.enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                s.push_str(&format!("{c:<w$} "));
            }
            format!("{}\n", s.trim_end())
        };
        let mut out = line(&mut self.header.iter().copied());
        for r in &self.rows {
            out.push_str(&line(&mut r.iter().map(String::as_str)));
        }
        out
    }
}

/// Prints `v` as indented JSON.
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// The arguments every `ls` shares.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print only the IDs (names, keys, digests).
    #[arg(short, long)]
    pub quiet: bool,
    /// Filters in containerd's syntax, e.g. `labels."k"==v` (any one may match).
    pub filters: Vec<String>,
}

/// What a `label` verb sends: the labels to set and the field paths of every label named
/// (a name given as `k=` is removed); `None` when no label was given, to show them unchanged.
pub fn label_update(args: &[String]) -> Option<(HashMap<String, String>, prost_types::FieldMask)> {
    let l = label_args(args);
    if l.is_empty() {
        return None;
    }
    let paths = l.keys().map(|k| format!("labels.{k}")).collect();
    let set = l.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    Some((set, prost_types::FieldMask { paths }))
}

/// Prints `v` as ctr's `PrintAsJSON` does (indented by four spaces), for the verbs whose JSON
/// ctr itself prints (`snapshots info`, `--mounts`).
pub fn print_json_ctr(v: &Value) {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    match serde::Serialize::serialize(v, &mut ser) {
        Ok(()) => println!("{}", String::from_utf8_lossy(&buf)),
        Err(_) => println!("{v}"),
    }
}

/// Parses ctr's `key=value` label arguments: a bare `key` means `key=true`, and `key=` (empty
/// value) asks for the label to be removed.
pub fn label_args(labels: &[String]) -> HashMap<String, String> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), "true".to_string()),
        })
        .collect()
}

/// Labels as ctr lists them: `k=v` sorted and joined with commas, `-` when there are none.
pub fn labels_cell(m: &HashMap<String, String>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    labels_joined(m)
}

/// `k=v` pairs sorted and joined with commas (empty when there are none), as ctr's `label`
/// verbs print the labels they leave.
pub fn labels_joined(m: &HashMap<String, String>) -> String {
    let mut v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(",")
}

/// A protobuf timestamp as a `SystemTime` (the epoch when absent or before it).
pub fn system_time(t: Option<&prost_types::Timestamp>) -> SystemTime {
    t.and_then(|t| {
        let secs = u64::try_from(t.seconds).ok()?;
        let nanos = u32::try_from(t.nanos).ok()?;
        UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    })
    .unwrap_or(UNIX_EPOCH)
}

/// Days since 1970-01-01 to a civil (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (date, time-of-day, nanoseconds) of `t` in UTC.
fn utc_parts(t: SystemTime) -> (String, String, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let (y, m, day) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (
        format!("{y:04}-{m:02}-{day:02}"),
        format!("{:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60),
        d.subsec_nanos(),
    )
}

/// RFC 3339 in UTC to the second (Go's `time.RFC3339`), as containerd's GC labels want.
pub fn rfc3339(t: SystemTime) -> String {
    let (date, time, _) = utc_parts(t);
    format!("{date}T{time}Z")
}

/// RFC 3339 with nanoseconds, trailing zeros dropped (Go's `time.RFC3339Nano`).
pub fn rfc3339_nano(t: SystemTime) -> String {
    let (date, time, nanos) = utc_parts(t);
    format!("{date}T{time}{}Z", go_fraction(nanos))
}

/// A time as Go's `time.Time` prints by default, in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`.
pub fn go_time(t: SystemTime) -> String {
    let (date, time, nanos) = utc_parts(t);
    format!("{date} {time}{} +0000 UTC", go_fraction(nanos))
}

fn go_fraction(nanos: u32) -> String {
    if nanos == 0 {
        return String::new();
    }
    let s = format!(".{nanos:09}");
    s.trim_end_matches('0').to_string()
}

/// Scales `size` by `base` through `units`: (scaled value, unit).
fn scaled(size: f64, base: f64, units: &[&'static str]) -> (f64, &'static str) {
    let mut v = size;
    let mut i = 0;
    while v >= base && i + 1 < units.len() {
        v /= base;
        i += 1;
    }
    (v, units[i])
}

/// Binary sizes as ctr's progress bars and `snapshots usage` print them: `1.5 KiB`.
pub fn bytes_binary(size: i64) -> String {
    let (v, u) = scaled(
        size as f64,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
    );
    format!("{v:.1} {u}")
}

/// Decimal sizes with four significant digits, as ctr's `content ls` prints them: `1.234kB`.
pub fn bytes_decimal(size: i64) -> String {
    let (v, u) = scaled(
        size as f64,
        1000.0,
        &["B", "kB", "MB", "GB", "TB", "PB", "EB"],
    );
    let int_digits = if v < 1.0 {
        1
    } else {
        v.log10().floor() as usize + 1
    };
    let s = format!("{v:.prec$}", prec = 4usize.saturating_sub(int_digits));
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{u}")
}

/// How long ago `t` was, in the words ctr uses (`5 seconds`, `About an hour`, `3 days`).
pub fn age(t: SystemTime) -> String {
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    let secs = d.as_secs();
    let mins = secs / 60;
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    match () {
        _ if secs < 1 => "Less than a second".into(),
        _ if secs == 1 => "1 second".into(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if mins == 1 => "About a minute".into(),
        _ if mins < 60 => format!("{mins} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_ctr_prints_them() {
        assert_eq!(bytes_binary(0), "0.0 B");
        assert_eq!(bytes_binary(1536), "1.5 KiB");
        assert_eq!(bytes_binary(3 << 20), "3.0 MiB");
        assert_eq!(bytes_decimal(512), "512B");
        assert_eq!(bytes_decimal(1234), "1.234kB");
        assert_eq!(bytes_decimal(12_345), "12.35kB");
        assert_eq!(bytes_decimal(100_000), "100kB");
    }

    #[test]
    fn times_in_go_and_rfc3339_forms() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.12Z");
        assert_eq!(go_time(t), "2023-11-14 22:13:20.12 +0000 UTC");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn table_columns_align_under_the_header() {
        let mut t = Table::new(&["KEY", "PARENT"]);
        t.row(vec!["a-long-key".into(), "p".into()], Value::Null);
        t.row(vec!["b".into(), String::new()], Value::Null);
        assert_eq!(t.render(), "KEY        PARENT\na-long-key p\nb\n");
    }

    #[test]
    fn bare_label_means_true_and_empty_value_removes() {
        let l = label_args(&["a".into(), "b=2".into(), "c=".into()]);
        assert_eq!(l["a"], "true");
        assert_eq!(l["b"], "2");
        assert_eq!(l["c"], "");
        assert_eq!(labels_cell(&HashMap::new()), "-");
        assert_eq!(labels_cell(&l), "a=true,b=2,c=");
    }
}

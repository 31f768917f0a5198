//! The ingest directory of one in-progress write, as containerd 1.6 lays it out:
//!
//! ```text
//! ingest/<sha256(ref) hex>/data       the bytes written so far
//!                          ref        the reference, verbatim
//!                          startedat  RFC 3339 text (Go MarshalText)
//!                          updatedat  same; refreshed when a writer closes
//!                          total      expected size in decimal, only when known
//! ```
//!
//! Hashing the reference keeps every path a fixed-length hex name, so no reference (`..`,
//! `/`, NUL, anything) can reach outside `ingest/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use stowage_core_types::content::Status;
use stowage_core_types::error::{Error, ErrorKind, Result};
use stowage_digest_identity::digest_of;

use crate::timefmt;

/// The files of one ingest directory.
#[derive(Debug, Clone)]
pub(crate) struct IngestPaths {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub reference: PathBuf,
    pub started_at: PathBuf,
    pub updated_at: PathBuf,
    pub total: PathBuf,
}

impl IngestPaths {
    pub(crate) fn for_dir(dir: PathBuf) -> Self {
        IngestPaths {
            data: dir.join("data"),
            reference: dir.join("ref"),
            started_at: dir.join("startedat"),
            updated_at: dir.join("updatedat"),
            total: dir.join("total"),
            dir,
        }
    }
}

/// The directory name of the ingest for `reference`: the hex SHA-256 of the reference string.
pub(crate) fn dir_name(reference: &str) -> String {
    digest_of(reference.as_bytes()).encoded().to_owned()
}

fn corrupt(paths: &IngestPaths, what: impl std::fmt::Display) -> Error {
    Error::data_loss(format!(
        "ingest {} is corrupt: {what}; abort the ingest to start over",
        paths.dir.display()
    ))
}

/// Reads the status of the ingest in `paths.dir`.
///
/// `NotFound` when the directory or its `data` file is absent (nothing to resume, or a commit
/// or abort is removing it right now). `DataLoss` naming the file when the `ref`, a timestamp or
/// `total` is missing or unreadable, or when `ref` does not hash to the directory name. When
/// `want_ref` is given, the stored reference must equal it.
pub(crate) fn read_status(paths: &IngestPaths, want_ref: Option<&str>) -> Result<Status> {
    let data_meta = match fs::metadata(&paths.data) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::not_found(match want_ref {
                Some(r) => format!("ingest ref {r:?}"),
                None => format!("ingest {}", paths.dir.display()),
            }));
        }
        Err(e) => return Err(Error::io(format!("stat {}", paths.data.display()), e)),
    };
    let reference = read_text(paths, &paths.reference, "ref")?;
    let dir_name = paths
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if let Some(want) = want_ref {
        if reference != want {
            return Err(corrupt(
                paths,
                format!("ref file holds {reference:?}, expected {want:?}"),
            ));
        }
    }
    let hashed = self::dir_name(&reference);
    if hashed != dir_name {
        return Err(corrupt(
            paths,
            format!("ref {reference:?} hashes to {hashed}, not to the directory name"),
        ));
    }
    let started_at = read_time(paths, &paths.started_at, "startedat")?;
    let mut updated_at = read_time(paths, &paths.updated_at, "updatedat")?;
    // updatedat is only rewritten when a writer closes; the data file's mtime is fresher while
    // one is active.
    if let Ok(mtime) = data_meta.modified() {
        if mtime > updated_at {
            updated_at = mtime;
        }
    }
    let total = read_total(paths)?;
    Ok(Status {
        reference,
        offset: data_meta.len(),
        total,
        expected: None,
        started_at,
        updated_at,
    })
}

fn read_text(paths: &IngestPaths, file: &Path, name: &str) -> Result<String> {
    let bytes = fs::read(file).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => corrupt(paths, format!("its {name} file is missing")),
        _ => Error::io(format!("read {}", file.display()), e),
    })?;
    String::from_utf8(bytes).map_err(|_| corrupt(paths, format!("its {name} file is not UTF-8")))
}

fn read_time(paths: &IngestPaths, file: &Path, name: &str) -> Result<SystemTime> {
    let text = read_text(paths, file, name)?;
    timefmt::parse(&text).map_err(|e| corrupt(paths, format!("{name}: {}", e.message())))
}

/// The expected total; 0 when the file is absent (the size was not known at open).
fn read_total(paths: &IngestPaths) -> Result<u64> {
    match fs::read(&paths.total) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            // Go writes it with fmt.Sprint of an int64; a negative or non-numeric value is
            // corruption, not "unknown".
            text.parse::<u64>()
                .map_err(|_| corrupt(paths, format!("total {text:?} is not a size")))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(format!("read {}", paths.total.display()), e)),
    }
}

/// True when `e` means "this ingest is gone", which listings skip.
pub(crate) fn is_gone(e: &Error) -> bool {
    e.kind() == ErrorKind::NotFound
}

//! One error type for the whole project, with kinds mirroring containerd's `errdefs`.
//!
//! Every crate returns [`Error`]. The daemon maps [`ErrorKind`] to a gRPC status code in exactly
//! one place, and its client maps the code back, so a kind survives a trip over the wire.

use std::fmt;

/// The class of an error, as containerd's `errdefs` names them.
///
/// Callers branch on the kind (`NotFound` → create it, `AlreadyExists` → reuse it); the message
/// is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing more specific is known.
    Unknown,
    /// The request is malformed: a bad digest, name, label, filter or field path.
    InvalidArgument,
    /// The object does not exist.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// The object is not in a state that allows the operation (e.g. removing a parent snapshot).
    FailedPrecondition,
    /// The resource is busy or temporarily unusable (e.g. an ingest ref locked by another writer).
    Unavailable,
    /// The operation is not supported by this implementation.
    NotImplemented,
    /// The operation was aborted, typically by a concurrency conflict.
    Aborted,
    /// The caller canceled the operation.
    Canceled,
    /// A deadline passed before the operation finished.
    DeadlineExceeded,
    /// The caller may not do this.
    PermissionDenied,
    /// A quota or limit was reached.
    ResourceExhausted,
    /// A read or seek went past the end of the data.
    OutOfRange,
    /// Stored data is corrupt or unreadable.
    DataLoss,
}

impl ErrorKind {
    /// The lower-case phrase containerd appends to messages of this kind (`"not found"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unknown => "unknown",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotImplemented => "not implemented",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Canceled => "context canceled",
            ErrorKind::DeadlineExceeded => "context deadline exceeded",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::ResourceExhausted => "resource exhausted",
            ErrorKind::OutOfRange => "out of range",
            ErrorKind::DataLoss => "data loss",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error with a [`ErrorKind`], a message saying what went wrong, and an optional cause.
///
/// It displays as `"<message>: <kind>"`, the shape containerd's wrapped errdefs errors have
/// (`"content sha256:…: not found"`), so users of `ctr` see familiar text.
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Source>,
}

/// Result alias used throughout stowage.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Prefixes the message with `context` (`"<context>: <message>"`), keeping the kind.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = if self.message.is_empty() {
            context.to_string()
        } else {
            format!("{context}: {}", self.message)
        };
        self
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind suffix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when the kind is `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }

    /// An I/O failure while doing `what`; the kind follows the I/O error (`ENOENT` → NotFound, ...).
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        let kind = kind_of_io(&err);
        Error::new(kind, format!("{what}: {err}")).with_source(err)
    }
}

fn kind_of_io(err: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match err.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::AlreadyExists => ErrorKind::AlreadyExists,
        K::PermissionDenied => ErrorKind::PermissionDenied,
        K::InvalidInput => ErrorKind::InvalidArgument,
        K::InvalidData => ErrorKind::DataLoss,
        K::UnexpectedEof => ErrorKind::OutOfRange,
        K::Unsupported => ErrorKind::NotImplemented,
        K::WouldBlock => ErrorKind::Unavailable,
        _ => ErrorKind::Unknown,
    }
}

macro_rules! constructors {
    ($($name:ident => $kind:ident),* $(,)?) => {
        impl Error {
            $(
                #[doc = concat!("An error of kind [`ErrorKind::", stringify!($kind), "`].")]
                pub fn $name(message: impl Into<String>) -> Self {
                    Error::new(ErrorKind::$kind, message)
                }
            )*
        }
    };
}

constructors! {
    unknown => Unknown,
    invalid_argument => InvalidArgument,
    not_found => NotFound,
    already_exists => AlreadyExists,
    failed_precondition => FailedPrecondition,
    unavailable => Unavailable,
    not_implemented => NotImplemented,
    aborted => Aborted,
    canceled => Canceled,
    deadline_exceeded => DeadlineExceeded,
    permission_denied => PermissionDenied,
    resource_exhausted => ResourceExhausted,
    out_of_range => OutOfRange,
    data_loss => DataLoss,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.message, self.kind)
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = &self.source {
            d.field("source", &format_args!("{s}"));
        }
        d.finish()
    }
}

impl From<std::io::Error> for Error {
    /// Recovers a stowage error that travelled inside an `io::Error` (as trait `io::Write`
    /// implementations pass them); any other I/O error keeps its I/O kind.
    fn from(err: std::io::Error) -> Self {
        if err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(inner) = err.into_inner() {
                if let Ok(e) = inner.downcast::<Error>() {
                    return *e;
                }
            }
            return Error::unknown("i/o error");
        }
        Error::io("i/o error", err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_containerd_shape() {
        let e = Error::not_found("content sha256:abc");
        assert_eq!(e.to_string(), "content sha256:abc: not found");
        assert!(e.is(ErrorKind::NotFound));
        let e = e.context("reading blob");
        assert_eq!(e.to_string(), "reading blob: content sha256:abc: not found");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn io_errors_keep_a_useful_kind() {
        let e = Error::io(
            "open /x",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(std::error::Error::source(&e).is_some());
        let e: Error = std::io::Error::from(std::io::ErrorKind::AlreadyExists).into();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        let wrapped = std::io::Error::other(Error::unavailable("ref r locked"));
        let back: Error = wrapped.into();
        assert_eq!(back.kind(), ErrorKind::Unavailable);
        assert_eq!(back.to_string(), "ref r locked: unavailable");
    }
}

//! The one place error kinds become gRPC codes, and codes become kinds again.
//!
//! containerd's `errdefs.ToGRPC` keeps the full error text (`"<message>: <kind>"`) as the status
//! message; `FromGRPC` on the client strips the kind suffix again. We do the same so `ctr`
//! prints what it prints against containerd.

use stowage_core_types::{Error, ErrorKind};
use tonic::{Code, Status};

/// The gRPC code containerd uses for errors of `kind`.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::NotImplemented => Code::Unimplemented,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::Canceled => Code::Cancelled,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::DataLoss => Code::DataLoss,
        _ => Code::Unknown,
    }
}

/// The error kind a client recovers from a gRPC code (the inverse of [`code_of`]).
pub fn kind_of(code: Code) -> ErrorKind {
    match code {
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::Unimplemented => ErrorKind::NotImplemented,
        Code::Aborted => ErrorKind::Aborted,
        Code::Cancelled => ErrorKind::Canceled,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::OutOfRange => ErrorKind::OutOfRange,
        Code::DataLoss => ErrorKind::DataLoss,
        _ => ErrorKind::Unknown,
    }
}

/// A status carrying `err` as containerd would send it.
pub fn to_status(err: &Error) -> Status {
    Status::new(code_of(err.kind()), err.to_string())
}

/// The error a status stands for, with the kind suffix containerd appended removed.
pub fn from_status(status: &Status) -> Error {
    let kind = kind_of(status.code());
    let msg = status.message();
    let suffix = format!(": {}", kind.as_str());
    let msg = msg.strip_suffix(&suffix).unwrap_or(msg);
    let msg = if msg == kind.as_str() { "" } else { msg };
    Error::new(kind, msg)
}

/// Converts a core result into a gRPC result.
pub trait IntoStatus<T> {
    /// Maps the error with [`to_status`].
    fn status(self) -> Result<T, Status>;
}

impl<T> IntoStatus<T> for stowage_core_types::Result<T> {
    fn status(self) -> Result<T, Status> {
        self.map_err(|e| to_status(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_round_trip() {
        for kind in [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::FailedPrecondition,
            ErrorKind::Unavailable,
            ErrorKind::NotImplemented,
            ErrorKind::Aborted,
            ErrorKind::Canceled,
            ErrorKind::DeadlineExceeded,
            ErrorKind::PermissionDenied,
            ErrorKind::ResourceExhausted,
            ErrorKind::OutOfRange,
            ErrorKind::DataLoss,
            ErrorKind::Unknown,
        ] {
            let err = Error::new(kind, "image \"x\"");
            let status = to_status(&err);
            assert_eq!(status.message(), format!("image \"x\": {}", kind.as_str()));
            let back = from_status(&status);
            assert_eq!(back.kind(), kind);
            assert_eq!(back.message(), "image \"x\"");
        }
        assert_eq!(code_of(ErrorKind::NotFound), Code::NotFound);
        assert_eq!(code_of(ErrorKind::NotImplemented), Code::Unimplemented);
    }
}

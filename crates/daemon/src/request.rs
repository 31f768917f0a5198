//! What a request says about its context: the `containerd-namespace` and `containerd-lease`
//! headers.

use stowage_core_types::{namespace, Error};
use tonic::{Request, Status};

use crate::errors::to_status;

/// The header carrying the namespace on every namespaced call.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The header naming the lease the client works under.
pub const LEASE_HEADER: &str = "containerd-lease";

/// The namespace of `req`, or `None` when the header is absent.
pub fn namespace_of<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The namespace of `req`, required and valid, as containerd's `namespaces.NamespaceRequired`:
/// missing → FailedPrecondition "namespace is required", malformed → InvalidArgument.
pub fn required_namespace<T>(req: &Request<T>) -> Result<String, Status> {
    let Some(ns) = namespace_of(req).filter(|n| !n.is_empty()) else {
        return Err(to_status(&Error::failed_precondition(
            "namespace is required",
        )));
    };
    namespace::validate(&ns).map_err(|e| to_status(&e.context("namespace validation")))?;
    Ok(ns)
}

/// The lease named by the request's `containerd-lease` header, if any.
pub fn lease_of<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

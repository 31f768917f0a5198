//! Media type constants (OCI and Docker) and helpers to classify them.

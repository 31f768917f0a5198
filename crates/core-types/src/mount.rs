//! Mounts as snapshotters return them and appliers consume them.

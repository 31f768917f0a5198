//! Running the cases of a conformance suite (the content, differ and image store suites each
//! keep their cases and fixtures beside their trait's implementations and share this runner).

use std::panic::{self, AssertUnwindSafe};

/// Runs `run_one` for every case name, each in turn, and panics listing the cases of `suite`
/// that failed (a failing case panics; the others still run).
pub fn run_all<'a>(suite: &str, names: impl IntoIterator<Item = &'a str>, run_one: impl Fn(&str)) {
    let mut failed = Vec::new();
    for name in names {
        if panic::catch_unwind(AssertUnwindSafe(|| run_one(name))).is_err() {
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "{suite} conformance cases failed: {failed:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_runs_and_the_failed_ones_are_named() {
        let ran = std::sync::Mutex::new(Vec::new());
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            run_all("demo", ["a", "b", "c"], |n| {
                ran.lock().unwrap().push(n.to_string());
                assert_ne!(n, "b", "case b fails");
            })
        }));
        assert_eq!(*ran.lock().unwrap(), ["a", "b", "c"]);
        let msg = result.unwrap_err();
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("demo conformance cases failed: [\"b\"]"),
            "{msg}"
        );
        run_all("demo", ["a"], |_| {});
    }
}

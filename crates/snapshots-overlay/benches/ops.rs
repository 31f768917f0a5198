//! Latency of the basic snapshot operations (prepare and commit of an empty snapshot,
//! remove, view of a committed parent) for our overlay snapshotter and containerd 1.6's Go
//! overlay snapshotter, in one run on the same disk. Each side opens a fresh root and runs
//! the same sequence; medians are printed with the ratio (stowage / containerd).
//!
//! Run with `cargo bench -p stowage-snapshots-overlay --bench ops` (as root; Go and
//! `golang-github-containerd-containerd-dev` are needed for the containerd column).
//! `STOWAGE_BENCH_ROUNDS` sets the rounds per repeat (default 50), `STOWAGE_BENCH_REPEATS` the
//! repeats (default 5; the two sides alternate and the median over repeats is shown).

use stowage_snapshots_overlay::OverlaySnapshotter;
use stowage_snapshots_storage::testsuite::gocheck;

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("STOWAGE_BENCH_ROUNDS", 50);
    let repeats = env("STOWAGE_BENCH_REPEATS", 5).max(1);
    let dir = tempfile::Builder::new()
        .prefix("stowage-bench-snap-")
        .tempdir_in(std::env::var_os("STOWAGE_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))
        .expect("bench dir");
    // Alternate the two sides so load from other processes hits both alike.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for r in 0..repeats {
        let sn = OverlaySnapshotter::new(dir.path().join(format!("ours-{r}")))
            .expect("open snapshotter");
        ours.push(gocheck::bench_ops(&sn, n));
        drop(sn);
        if let Some(t) =
            gocheck::go_bench_ops("overlayfs", &dir.path().join(format!("containerd-{r}")), n)
        {
            theirs.push(t);
        }
    }
    let ours = gocheck::median_times(ours);
    let theirs = (!theirs.is_empty()).then(|| gocheck::median_times(theirs));
    gocheck::print_comparison(
        &format!("overlay, {repeats} x {n} rounds"),
        &ours,
        theirs.as_ref(),
    );
}

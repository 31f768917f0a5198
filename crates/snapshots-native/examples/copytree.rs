//! Copies a directory tree the way Prepare does, for syscall counting and timing of the copy
//! alone: `copytree SRC DST [ROUNDS]` (DST must not exist; with ROUNDS > 1 it copies to
//! DST-0, DST-1, ... and removes each copy after timing it, printing the median).

use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(src), Some(dst)) = (args.next(), args.next()) else {
        return Err("usage: copytree SRC DST [ROUNDS]".into());
    };
    let rounds: usize = args
        .next()
        .map(|r| r.to_string_lossy().parse())
        .transpose()?
        .unwrap_or(1);
    let (src, dst) = (PathBuf::from(src), PathBuf::from(dst));
    if rounds <= 1 {
        std::fs::create_dir(&dst)?;
        stowage_snapshots_native::copy::copy_dir(&src, &dst)?;
        return Ok(());
    }
    let mut times = Vec::new();
    for r in 0..rounds {
        let d = dst.with_extension(r.to_string());
        std::fs::create_dir(&d)?;
        let t = Instant::now();
        stowage_snapshots_native::copy::copy_dir(&src, &d)?;
        times.push(t.elapsed());
        std::fs::remove_dir_all(&d)?;
    }
    times.sort();
    println!("median {:?} over {rounds}", times[rounds / 2]);
    Ok(())
}

//! Applies a layer file onto new directories, for syscall counting and timing of the apply
//! alone: `applyfile LAYER DST [ROUNDS] [inline]`. Each round applies onto `DST.<round>` (which
//! must not exist) and removes it after timing; prints each round's time and the median.
//! `inline` turns the decompressor and worker threads off.

use std::path::PathBuf;
use std::time::Instant;

use stowage_diff::{apply_layer, ApplyOptions, LayerEncoding};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(layer), Some(dst)) = (args.next(), args.next()) else {
        return Err("usage: applyfile LAYER DST [ROUNDS] [inline]".into());
    };
    let rounds: usize = args
        .next()
        .map(|r| r.to_string_lossy().parse())
        .transpose()?
        .unwrap_or(1);
    let inline = args.next().is_some_and(|a| a == "inline");
    let (layer, dst) = (PathBuf::from(layer), PathBuf::from(dst));
    let opts = ApplyOptions {
        threaded: !inline,
        ..ApplyOptions::default()
    };
    let mut times = Vec::new();
    for r in 0..rounds.max(1) {
        let d = dst.with_extension(r.to_string());
        std::fs::create_dir(&d)?;
        let t = Instant::now();
        apply_layer(
            std::fs::File::open(&layer)?,
            LayerEncoding::Detect,
            &d,
            &opts,
        )?;
        let took = t.elapsed();
        println!("round {r}: {:.3} ms", took.as_secs_f64() * 1e3);
        times.push(took);
        std::fs::remove_dir_all(&d)?;
    }
    times.sort();
    println!(
        "median of {}: {:.3} ms",
        times.len(),
        times[times.len() / 2].as_secs_f64() * 1e3
    );
    Ok(())
}

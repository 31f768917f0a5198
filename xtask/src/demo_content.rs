//! `cargo xtask demo content`: the content store on its own, without the daemon.
//!
//! Generates the `base` and `whiteouts` fixture images, ingests every blob of them into a
//! stowage content store laid out as containerd's (`<root>/io.containerd.content.v1.content`)
//! with the labels a pull sets, shows an interrupted ingest being resumed and a blob with a wrong
//! digest being refused, then prints a listing shaped like `ctr content ls`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use stowage_content::LocalStore;
use stowage_core_types::content::{self, IngestManager, Ingester, Manager, WriterOptions};
use stowage_core_types::{Descriptor, Digest, ErrorKind, Labels};
use stowage_tests::fixtures;

pub fn run() -> Result<()> {
    let work = tempfile::Builder::new().prefix("stowage-demo-").tempdir()?;
    println!("demo root: {}", work.path().display());
    let images = fixtures::generate(&work.path().join("fixtures"), true)?;
    let root = work.path().join("root/io.containerd.content.v1.content");
    let store = LocalStore::with_memory_labels(&root)
        .with_context(|| format!("opening content store at {}", root.display()))?;

    for img in images
        .iter()
        .filter(|i| matches!(i.name.as_str(), "base" | "whiteouts"))
    {
        println!("\ningesting {} ({})", img.reference, img.manifest_digest);
        ingest_image(&store, &img.layout)?;
    }

    println!("\ninterrupted ingest, then resumed:");
    resume_demo(&store)?;

    println!("\nwrong digest:");
    let data = b"these bytes are not what the descriptor promises";
    let claimed = Digest::from_bytes(stowage_core_types::Algorithm::Sha256, &[0x11; 32])?;
    let desc = Descriptor::new("application/octet-stream", claimed, data.len() as u64);
    match content::write_blob(&store, "demo-bad", &mut &data[..], &desc, Labels::new()) {
        Err(e) if e.is(ErrorKind::FailedPrecondition) || e.is(ErrorKind::InvalidArgument) => {
            println!("  refused: {e}");
            store.abort("demo-bad").ok();
        }
        Err(e) => return Err(e).context("unexpected error for a wrong digest"),
        Ok(()) => anyhow::bail!("a blob with a wrong digest was accepted"),
    }

    println!("\n$ ctr content ls   (stowage, {})", root.display());
    list(&store)?;
    Ok(())
}

/// Reads a JSON blob out of an OCI layout.
fn layout_json(layout: &Path, digest: &str) -> Result<serde_json::Value> {
    let path = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    Ok(serde_json::from_slice(
        &fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?)
}

fn descriptor(v: &serde_json::Value) -> Result<Descriptor> {
    Ok(serde_json::from_value(v.clone())?)
}

/// Ingests an image's manifest, config and layers, children first, with the labels containerd's
/// pull sets so that garbage collection would keep them.
fn ingest_image(store: &LocalStore, layout: &Path) -> Result<()> {
    let index = serde_json::from_slice::<serde_json::Value>(&fs::read(layout.join("index.json"))?)?;
    let top = descriptor(&index["manifests"][0])?;
    let manifest = layout_json(layout, top.digest.as_str())?;
    let config = descriptor(&manifest["config"])?;
    let layers: Vec<Descriptor> = manifest["layers"]
        .as_array()
        .context("manifest has no layers")?
        .iter()
        .map(descriptor)
        .collect::<Result<_>>()?;

    let mut manifest_labels = Labels::new();
    manifest_labels.insert(
        "containerd.io/gc.ref.content.config".into(),
        config.digest.to_string(),
    );
    for (i, l) in layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.to_string(),
        );
    }
    for (i, layer) in layers.iter().enumerate() {
        let mut labels = Labels::new();
        labels.insert(
            "containerd.io/distribution.source.stowage.test".into(),
            "fixtures".into(),
        );
        ingest(store, layout, layer, &format!("layer-{i}"), labels)?;
    }
    ingest(store, layout, &config, "config", Labels::new())?;
    ingest(store, layout, &top, "manifest", manifest_labels)
}

fn ingest(
    store: &LocalStore,
    layout: &Path,
    desc: &Descriptor,
    what: &str,
    labels: Labels,
) -> Result<()> {
    let path = layout.join("blobs/sha256").join(desc.digest.encoded());
    let mut file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let reference = format!("demo-{}", desc.digest);
    let started = std::time::Instant::now();
    content::write_blob(store, &reference, &mut file, desc, labels)
        .with_context(|| format!("ingesting {what} {}", desc.digest))?;
    println!(
        "  {what:<10} {}  {:>10}  done in {:.1?}",
        desc.digest,
        human_size(desc.size),
        started.elapsed()
    );
    Ok(())
}

fn resume_demo(store: &LocalStore) -> Result<()> {
    let mut data = vec![0u8; 3 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let digest = stowage_digest_identity::digest_of(&data);
    let desc = Descriptor::new(
        "application/octet-stream",
        digest.clone(),
        data.len() as u64,
    );
    {
        let mut w = store.writer(WriterOptions::with_ref("demo-resume").expect(desc.clone()))?;
        w.write_all(&data[..1 << 20])?;
        // Dropped here: the process "died" after 1 MiB.
    }
    let status = store.status("demo-resume")?;
    println!(
        "  after interruption: ref {} offset {} of {}",
        status.reference, status.offset, status.total
    );
    let mut rest = &data[..];
    content::write_blob(store, "demo-resume", &mut rest, &desc, Labels::new())?;
    let info = store.info(&digest)?;
    println!(
        "  resumed and committed {} ({})",
        info.digest,
        human_size(info.size)
    );
    let mut check = Vec::new();
    content::SectionReader::new(&*store_reader(store, &desc)?, 0).read_to_end(&mut check)?;
    anyhow::ensure!(check == data, "read back differs from what was written");
    Ok(())
}

fn store_reader(store: &LocalStore, desc: &Descriptor) -> Result<Box<dyn content::ReaderAt>> {
    Ok(content::Provider::reader_at(store, desc)?)
}

fn list(store: &LocalStore) -> Result<()> {
    let mut rows = Vec::new();
    store.walk(
        &mut |info| {
            rows.push(info);
            Ok(())
        },
        &[],
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<72}{:<10}{:<24}LABELS", "DIGEST", "SIZE", "AGE")?;
    let now = SystemTime::now();
    for info in rows {
        let labels: BTreeMap<_, _> = info.labels.iter().collect();
        let labels = if labels.is_empty() {
            "-".to_owned()
        } else {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let age = now.duration_since(info.created_at).unwrap_or_default();
        writeln!(
            out,
            "{:<72}{:<10}{:<24}{}",
            info.digest.as_str(),
            human_size(info.size),
            human_age(age),
            labels
        )?;
    }
    Ok(())
}

/// Sizes as containerd's tools print them (decimal units, four significant digits).
fn human_size(size: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = size as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    // Go's "%.4g": four significant digits, trailing zeros dropped.
    let int_digits = if v < 1.0 {
        1
    } else {
        v.log10().floor() as usize + 1
    };
    let mut s = format!("{v:.*}", 4usize.saturating_sub(int_digits));
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{s}{}", UNITS[unit])
}

fn human_age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second ago".into(),
        1 => "1 second ago".into(),
        2..=59 => format!("{s} seconds ago"),
        _ => format!("{} minutes ago", s / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_look_like_ctr() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1234), "1.234kB");
        assert_eq!(human_size(300_123), "300.1kB");
        assert_eq!(human_size(3 << 20), "3.146MB");
        assert_eq!(human_size(1000), "1kB");
    }
}

//! Deterministic OCI image layouts for the pull benchmark: file trees filled from a fast PRNG
//! with roughly the compressibility of real images (about 2:1 under gzip), one gzip layer per
//! [`LayerSpec`]. Layouts are cached on disk, keyed by the generator version and the spec, so
//! only the first run pays for generating them.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest as _, Sha256};

/// Bumped whenever the bytes the generator writes change, so stale caches are not reused.
const GENERATOR_VERSION: u32 = 1;

/// The one timestamp on every entry.
const MTIME: u64 = 1_700_000_000;

/// One layer: `files` regular files of sizes uniform in `min..=max` bytes, spread over
/// directories of 100 files.
#[derive(Debug, Clone, Copy)]
pub struct LayerSpec {
    /// How many files.
    pub files: usize,
    /// Smallest file size.
    pub min: usize,
    /// Largest file size.
    pub max: usize,
}

/// An image to generate.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Repository name in the registry, and cache key prefix.
    pub name: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerSpec>,
}

impl ImageSpec {
    /// Approximate unpacked size in bytes.
    pub fn approx_size(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| (l.files * (l.min + l.max) / 2) as u64)
            .sum()
    }

    /// Total files over all layers.
    pub fn files(&self) -> usize {
        self.layers.iter().map(|l| l.files).sum()
    }

    fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("v{GENERATOR_VERSION}"));
        for l in &self.layers {
            h.update(format!("{}:{}:{};", l.files, l.min, l.max));
        }
        format!(
            "{}-v{GENERATOR_VERSION}-{}",
            self.name,
            &hex(&h.finalize())[..12]
        )
    }
}

/// A generated OCI layout.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The spec's name.
    pub name: String,
    /// The layout directory (`oci-layout`, `index.json`, `blobs/sha256`).
    pub dir: PathBuf,
    /// The manifest's media type, digest and size.
    pub manifest: (String, String, i64),
    /// Hex digests of every blob (manifest, config, layers).
    pub blobs: Vec<String>,
    /// Sum of the compressed layer sizes.
    pub compressed: u64,
}

/// splitmix64: fast, and the same bytes on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Fills `buf` with a mix of incompressible runs (about a third) and text drawn from a
    /// small vocabulary, which gzip squeezes to roughly half overall, as real layers do.
    pub fn fill(&mut self, buf: &mut [u8]) {
        const WORDS: [&[u8]; 32] = [
            b"the ",
            b"lib",
            b"usr/",
            b"share ",
            b"config",
            b"=1\n",
            b"static ",
            b"void ",
            b"return ",
            b"int ",
            b"0x00, ",
            b"struct ",
            b"const ",
            b"char *",
            b"if (",
            b") {\n",
            b"}\n",
            b"locale ",
            b"python3",
            b".so.",
            b"debian ",
            b"package ",
            b"Version: ",
            b"\t",
            b"    ",
            b"#include <",
            b">\n",
            b"error",
            b"data ",
            b"_init",
            b"(void)",
            b"; ",
        ];
        for chunk in buf.chunks_mut(512) {
            if self.below(100) < 34 {
                for part in chunk.chunks_mut(8) {
                    let r = self.next_u64().to_le_bytes();
                    part.copy_from_slice(&r[..part.len()]);
                }
            } else {
                let mut i = 0;
                while i < chunk.len() {
                    let w = WORDS[self.below(WORDS.len())];
                    let n = w.len().min(chunk.len() - i);
                    chunk[i..i + n].copy_from_slice(&w[..n]);
                    i += n;
                }
            }
        }
    }
}

/// Hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes one gzip layer into `blobs`; returns (compressed hex digest, size, diff id hex).
fn write_layer(
    blobs: &Path,
    spec: &LayerSpec,
    index: usize,
    seed: u64,
) -> Result<(String, u64, String)> {
    let tmp = blobs.join(format!("layer-{index}.tmp"));
    let file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let compressed = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        len: 0,
    };
    let gz = GzEncoder::new(compressed, Compression::default());
    let plain = Hashing {
        inner: gz,
        hash: Sha256::new(),
        len: 0,
    };
    let mut tar = tar::Builder::new(plain);
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; spec.max];
    let top = format!("l{index:02}");
    let dir_header = |tar: &mut tar::Builder<_>, path: &str| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        tar.append_data(&mut h, path, io::empty())?;
        Ok(())
    };
    dir_header(&mut tar, &top)?;
    for i in 0..spec.files {
        if i % 100 == 0 {
            dir_header(&mut tar, &format!("{top}/d{:04}", i / 100))?;
        }
        let size = spec.min + rng.below(spec.max - spec.min + 1);
        rng.fill(&mut buf[..size]);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(if i % 7 == 0 { 0o755 } else { 0o644 });
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(size as u64);
        tar.append_data(
            &mut h,
            format!("{top}/d{:04}/f{i:06}", i / 100),
            &buf[..size],
        )?;
    }
    let plain = tar.into_inner()?;
    let diff_id = hex(&plain.hash.finalize());
    let mut compressed = plain.inner.finish()?;
    compressed.flush()?;
    let (digest, size) = (hex(&compressed.hash.finalize()), compressed.len);
    compressed
        .inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    fs::rename(&tmp, blobs.join(&digest))?;
    Ok((digest, size, diff_id))
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<(String, i64)> {
    let digest = hex(&Sha256::digest(bytes));
    fs::write(blobs.join(&digest), bytes)?;
    Ok((digest, bytes.len() as i64))
}

/// The layout for `spec` under `cache`, generated unless a complete one is there.
pub fn layout(cache: &Path, spec: &ImageSpec) -> Result<Layout> {
    let dir = cache.join(spec.key());
    let done = dir.join("layout.json");
    if let Ok(bytes) = fs::read(&done) {
        if let Ok(l) = parse_done(&dir, spec, &bytes) {
            return Ok(l);
        }
    }
    eprintln!(
        "generating image {} ({} layers, {} files, ~{} MB) in {}",
        spec.name,
        spec.layers.len(),
        spec.files(),
        spec.approx_size() >> 20,
        dir.display()
    );
    let _ = fs::remove_dir_all(&dir);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut all = Vec::new();
    let mut compressed = 0;
    for (i, l) in spec.layers.iter().enumerate() {
        let seed = 0x5eed_0000 ^ ((i as u64) << 32) ^ spec.name.len() as u64;
        let (digest, size, diff_id) = write_layer(&blobs, l, i, seed)?;
        compressed += size;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{digest}"),
            "size": size,
        }));
        diff_ids.push(format!("sha256:{diff_id}"));
        all.push(digest);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": { "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let (cdigest, csize) = write_blob(&blobs, &serde_json::to_vec(&config)?)?;
    all.push(cdigest.clone());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{cdigest}"),
            "size": csize,
        },
        "layers": layers,
    });
    let (mdigest, msize) = write_blob(&blobs, &serde_json::to_vec(&manifest)?)?;
    all.push(mdigest.clone());
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": mt,
            "digest": format!("sha256:{mdigest}"),
            "size": msize,
            "annotations": { "org.opencontainers.image.ref.name": "latest" },
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let record = serde_json::json!({
        "manifest": [mt, format!("sha256:{mdigest}"), msize],
        "blobs": all,
        "compressed": compressed,
    });
    fs::write(&done, serde_json::to_vec(&record)?)?;
    parse_done(&dir, spec, &fs::read(&done)?)
}

fn parse_done(dir: &Path, spec: &ImageSpec, bytes: &[u8]) -> Result<Layout> {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    let m = &v["manifest"];
    let blobs: Vec<String> = v["blobs"]
        .as_array()
        .context("blobs")?
        .iter()
        .map(|b| b.as_str().map(str::to_owned).context("blob"))
        .collect::<Result<_>>()?;
    for b in &blobs {
        anyhow::ensure!(
            dir.join("blobs/sha256").join(b).exists(),
            "blob {b} missing"
        );
    }
    Ok(Layout {
        name: spec.name.clone(),
        dir: dir.to_owned(),
        manifest: (
            m[0].as_str().context("media type")?.to_owned(),
            m[1].as_str().context("digest")?.to_owned(),
            m[2].as_i64().context("size")?,
        ),
        blobs,
        compressed: v["compressed"].as_u64().context("compressed")?,
    })
}

/// A file of `size` deterministic bytes under `cache` for `ctr content ingest`, and its
/// `sha256:` digest.
pub fn ingest_data(cache: &Path, size: u64) -> Result<(PathBuf, String)> {
    let path = cache.join(format!("ingest-v{GENERATOR_VERSION}-{size}.bin"));
    let digest_file = path.with_extension("sha256");
    if let (Ok(md), Ok(d)) = (fs::metadata(&path), fs::read_to_string(&digest_file)) {
        if md.len() == size && d.starts_with("sha256:") {
            return Ok((path, d.trim().to_owned()));
        }
    }
    fs::create_dir_all(cache)?;
    let mut out = Hashing {
        inner: BufWriter::with_capacity(1 << 20, fs::File::create(&path)?),
        hash: Sha256::new(),
        len: 0,
    };
    let mut rng = Rng::new(0x1_6e57);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    let digest = format!("sha256:{}", hex(&out.hash.finalize()));
    fs::write(&digest_file, &digest)?;
    Ok((path, digest))
}

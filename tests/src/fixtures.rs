//! Deterministic test images, generated, never downloaded (`cargo xtask fixtures` writes them).
//!
//! Each image is written as an OCI image layout directory (`<out>/<name>/`) and as an OCI archive
//! (`<out>/<name>.tar`) that `ctr images import` and `skopeo copy oci-archive:` accept. The same
//! inputs always give the same bytes: fixed timestamps, a seeded byte generator, gzip headers with
//! no time or name, zstd at a fixed level.
//!
//! The images cover what unpacking must get right: whiteouts and opaque directories across
//! layers, hardlinks, symlinks, xattrs, device nodes and fifos, setuid/setgid/sticky modes, long
//! names, large files, many small files, the three layer compressions, Docker and OCI media types,
//! and a multi-platform index.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// The one timestamp every entry and config carries.
const EPOCH: u64 = 1_700_000_000;
const CREATED: &str = "2023-11-14T22:13:20Z";

/// Where fixtures go when no directory is given.
pub fn default_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures")
}

/// A generated image.
#[derive(Debug)]
pub struct Generated {
    /// Short name (`base`, `whiteouts`, ...).
    pub name: String,
    /// The reference stored in the archive's annotations.
    pub reference: String,
    /// Digest of the top-level manifest or index.
    pub manifest_digest: String,
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// The OCI archive.
    pub archive: PathBuf,
}

/// Writes every fixture image under `out`. `small` leaves out the big ones (50k files, large
/// files) for quick runs.
pub fn generate(out: &Path, small: bool) -> Result<Vec<Generated>> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut images = vec![
        image("base", vec![base_layer(Compression::Gzip)], MediaTypes::Oci),
        image(
            "whiteouts",
            vec![
                whiteout_lower(Compression::Gzip),
                whiteout_upper(Compression::Gzip),
                whiteout_top(Compression::Gzip),
            ],
            MediaTypes::Oci,
        ),
        image(
            "compressions",
            vec![
                simple_layer("gz", Compression::Gzip),
                simple_layer("zst", Compression::Zstd),
                simple_layer("plain", Compression::None),
            ],
            MediaTypes::Oci,
        ),
        image(
            "docker",
            vec![
                base_layer(Compression::Gzip),
                simple_layer("top", Compression::Gzip),
            ],
            MediaTypes::Docker,
        ),
    ];
    if !small {
        images.push(image(
            "smallfiles",
            vec![small_files_layer(50_000)],
            MediaTypes::Oci,
        ));
        images.push(image(
            "largefiles",
            vec![large_files_layer()],
            MediaTypes::Oci,
        ));
    }
    let mut done = Vec::new();
    for img in &images {
        done.push(write_single(out, img)?);
    }
    done.push(write_multi_platform(out)?);
    Ok(done)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MediaTypes {
    Oci,
    Docker,
}

impl MediaTypes {
    fn manifest(self) -> &'static str {
        match self {
            MediaTypes::Oci => "application/vnd.oci.image.manifest.v1+json",
            MediaTypes::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }
    fn config(self) -> &'static str {
        match self {
            MediaTypes::Oci => "application/vnd.oci.image.config.v1+json",
            MediaTypes::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }
    fn layer(self, c: Compression) -> &'static str {
        match (self, c) {
            (MediaTypes::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (MediaTypes::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (MediaTypes::Oci, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (MediaTypes::Docker, Compression::None) => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            (MediaTypes::Docker, _) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

/// Deterministic bytes: xorshift64* seeded per file.
#[derive(Debug)]
struct Pseudo {
    state: u64,
    left: u64,
}

impl Pseudo {
    fn new(seed: u64, len: u64) -> Self {
        Pseudo {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
        }
    }
}

impl Read for Pseudo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            // Sixteen letters per byte: compressible about 2:1 like real binaries, so gzip
            // runs at a realistic speed instead of storing incompressible noise.
            for (dst, src) in chunk.iter_mut().zip(v) {
                *dst = b'a' + (src & 15);
            }
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[derive(Debug)]
enum Data {
    Bytes(Vec<u8>),
    Pseudo { seed: u64, len: u64 },
}

#[derive(Debug)]
enum Kind {
    Dir,
    File(Data),
    Symlink(&'static str),
    Hardlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug)]
struct Entry {
    path: String,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    xattrs: Vec<(&'static str, Vec<u8>)>,
}

fn dir(path: &str) -> Entry {
    entry(path, Kind::Dir, 0o755)
}

fn file(path: &str, data: &[u8]) -> Entry {
    entry(path, Kind::File(Data::Bytes(data.to_vec())), 0o644)
}

fn entry(path: &str, kind: Kind, mode: u32) -> Entry {
    Entry {
        path: path.to_owned(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        xattrs: Vec::new(),
    }
}

#[derive(Debug)]
struct Layer {
    entries: Vec<Entry>,
    compression: Compression,
}

#[derive(Debug)]
struct Image {
    name: &'static str,
    layers: Vec<Layer>,
    media: MediaTypes,
}

fn image(name: &'static str, layers: Vec<Layer>, media: MediaTypes) -> Image {
    Image {
        name,
        layers,
        media,
    }
}

fn base_layer(compression: Compression) -> Layer {
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "n".repeat(150));
    let mut caps = entry(
        "usr/bin/ping",
        Kind::File(Data::Bytes(b"#!/bin/true\n".to_vec())),
        0o755,
    );
    // security.capability v2 for cap_net_raw+ep, as setcap writes it.
    caps.xattrs.push((
        "security.capability",
        vec![
            0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    ));
    let mut with_xattr = file("etc/labelled", b"xattrs\n");
    with_xattr
        .xattrs
        .push(("user.stowage.test", b"value-1".to_vec()));
    with_xattr
        .xattrs
        .push(("trusted.stowage.other", b"value-2".to_vec()));
    let mut owned = file("home/user/owned", b"owned by 1000:1000\n");
    owned.uid = 1000;
    owned.gid = 1000;
    let mut owned_dir = dir("home/user");
    owned_dir.uid = 1000;
    owned_dir.gid = 1000;
    owned_dir.mode = 0o700;
    Layer {
        compression,
        entries: vec![
            dir("bin"),
            dir("dev"),
            dir("etc"),
            dir("home"),
            owned_dir,
            owned,
            entry("tmp", Kind::Dir, 0o1777),
            dir("usr"),
            dir("usr/bin"),
            dir("var"),
            file("etc/hostname", b"stowage\n"),
            file("etc/os-release", b"NAME=stowage-fixture\nID=fixture\n"),
            with_xattr,
            entry("usr/bin/tool", Kind::File(Data::Pseudo { seed: 1, len: 300_000 }), 0o755),
            entry("usr/bin/su", Kind::File(Data::Bytes(b"setuid\n".to_vec())), 0o4755),
            entry("usr/bin/wall", Kind::File(Data::Bytes(b"setgid\n".to_vec())), 0o2755),
            caps,
            entry("usr/bin/tool-hardlink", Kind::Hardlink("usr/bin/tool".into()), 0o755),
            entry("bin/sh", Kind::Symlink("/usr/bin/tool"), 0o777),
            entry("bin/relative", Kind::Symlink("../usr/bin/tool"), 0o777),
            entry("bin/dangling", Kind::Symlink("/does/not/exist"), 0o777),
            entry("dev/null", Kind::Char(1, 3), 0o666),
            entry("dev/loop-fixture", Kind::Block(7, 200), 0o660),
            entry("var/fifo", Kind::Fifo, 0o600),
            file("var/empty", b""),
            dir(&long_dir),
            file(&long_name, b"a long name\n"),
            entry(
                &format!("{long_dir}/link-to-long"),
                Kind::Symlink("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff-long-target"),
                0o777,
            ),
        ],
    }
}

fn whiteout_lower(compression: Compression) -> Layer {
    Layer {
        compression,
        entries: vec![
            dir("keep"),
            file("keep/a", b"lower a\n"),
            file("keep/b", b"lower b, deleted above\n"),
            dir("opaque"),
            file("opaque/old1", b"hidden by opaque\n"),
            dir("opaque/olddir"),
            file("opaque/olddir/deep", b"hidden too\n"),
            dir("gone"),
            file("gone/x", b"whole dir deleted above\n"),
            file("replaced", b"file that becomes a dir\n"),
            dir("dir-to-file"),
            file("dir-to-file/child", b"dir that becomes a file\n"),
            file("hardlink-src", b"linked\n"),
            entry("hardlink-dst", Kind::Hardlink("hardlink-src".into()), 0o644),
        ],
    }
}

fn whiteout_upper(compression: Compression) -> Layer {
    Layer {
        compression,
        entries: vec![
            dir("keep"),
            file("keep/.wh.b", b""),
            file("keep/c", b"upper c\n"),
            dir("opaque"),
            file("opaque/.wh..wh..opq", b""),
            file("opaque/new", b"added with the opaque marker\n"),
            file(".wh.gone", b""),
            dir("replaced"),
            file("replaced/inside", b"now a dir\n"),
            file("dir-to-file", b"now a file\n"),
            file(".wh.hardlink-src", b""),
        ],
    }
}

fn whiteout_top(compression: Compression) -> Layer {
    Layer {
        compression,
        entries: vec![
            dir("gone"),
            file("gone/again", b"recreated after a whiteout\n"),
            dir("keep"),
            file("keep/.wh.a", b""),
        ],
    }
}

fn simple_layer(tag: &str, compression: Compression) -> Layer {
    Layer {
        compression,
        entries: vec![
            dir(tag),
            file(
                &format!("{tag}/hello"),
                format!("hello from {tag}\n").as_bytes(),
            ),
            entry(
                &format!("{tag}/blob"),
                Kind::File(Data::Pseudo {
                    seed: tag.len() as u64 + 7,
                    len: 100_000,
                }),
                0o644,
            ),
        ],
    }
}

fn small_files_layer(count: usize) -> Layer {
    let mut entries = vec![dir("many")];
    for d in 0..count.div_ceil(1000) {
        entries.push(dir(&format!("many/{d:03}")));
        for f in 0..1000.min(count - d * 1000) {
            let n = d * 1000 + f;
            entries.push(file(
                &format!("many/{d:03}/f{n:05}"),
                format!("small file {n}\n").as_bytes(),
            ));
        }
    }
    Layer {
        compression: Compression::Gzip,
        entries,
    }
}

fn large_files_layer() -> Layer {
    let mut entries = vec![dir("large")];
    for i in 0..4u64 {
        entries.push(entry(
            &format!("large/file{i}"),
            Kind::File(Data::Pseudo {
                seed: 100 + i,
                len: 24 << 20,
            }),
            0o644,
        ));
    }
    Layer {
        compression: Compression::Gzip,
        entries,
    }
}

/// Writes bytes through to `inner` while hashing and counting them.
struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }
    fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{:x}", self.hash.finalize()),
            self.len,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
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

struct Blob {
    digest: String,
    size: u64,
}

/// Content-addressed writes into `<layout>/blobs/sha256/`.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn create(root: &Path) -> Result<Layout> {
        if root.exists() {
            fs::remove_dir_all(root).with_context(|| format!("clearing {}", root.display()))?;
        }
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        Ok(Layout {
            root: root.to_owned(),
        })
    }

    fn put_bytes(&self, data: &[u8]) -> Result<Blob> {
        let digest = format!("sha256:{:x}", Sha256::digest(data));
        fs::write(self.blob_path(&digest), data)?;
        Ok(Blob {
            digest,
            size: data.len() as u64,
        })
    }

    fn put_json(&self, v: &serde_json::Value) -> Result<Blob> {
        self.put_bytes(&serde_json::to_vec(v)?)
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Writes a layer: the tar stream goes to a temp file (hashed for the DiffID), then is
    /// compressed into a second temp file (hashed for the blob digest) renamed into place.
    fn put_layer(&self, layer: &Layer) -> Result<(Blob, String)> {
        let tmp_tar = self.root.join("layer.tar.tmp");
        let (diff_id, _) = {
            let w = HashWriter::new(BufWriter::new(File::create(&tmp_tar)?));
            let w = write_tar(w, &layer.entries)?;
            let (inner, d, n) = w.finish();
            inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            (d, n)
        };
        let tmp_blob = self.root.join("layer.blob.tmp");
        let out = HashWriter::new(BufWriter::new(File::create(&tmp_blob)?));
        let mut src = File::open(&tmp_tar)?;
        let out = match layer.compression {
            Compression::None => {
                let mut out = out;
                io::copy(&mut src, &mut out)?;
                out
            }
            Compression::Gzip => {
                let mut gz = flate2::GzBuilder::new().write(out, flate2::Compression::default());
                io::copy(&mut src, &mut gz)?;
                gz.finish()?
            }
            Compression::Zstd => {
                let mut z = zstd::Encoder::new(out, 3)?;
                io::copy(&mut src, &mut z)?;
                z.finish()?
            }
        };
        let (inner, digest, size) = out.finish();
        inner.into_inner().map_err(|e| e.into_error())?;
        fs::rename(&tmp_blob, self.blob_path(&digest))?;
        fs::remove_file(&tmp_tar)?;
        Ok((Blob { digest, size }, diff_id))
    }
}

fn write_tar<W: Write>(w: W, entries: &[Entry]) -> Result<W> {
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    for e in entries {
        if !e.xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> = e
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(EPOCH);
        h.set_size(0);
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, format!("{}/", e.path), io::empty())?;
            }
            Kind::File(Data::Bytes(data)) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, &e.path, data.as_slice())?;
            }
            Kind::File(Data::Pseudo { seed, len }) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*len);
                b.append_data(&mut h, &e.path, Pseudo::new(*seed, *len))?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, &e.path, target)?;
            }
            Kind::Hardlink(target) => {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, &e.path, target)?;
            }
            Kind::Char(major, minor) | Kind::Block(major, minor) => {
                let t = if matches!(e.kind, Kind::Char(..)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                h.set_entry_type(t);
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                b.append_data(&mut h, &e.path, io::empty())?;
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                b.append_data(&mut h, &e.path, io::empty())?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// Writes config and manifest for `img` on `arch`; returns the manifest blob.
fn write_manifest(layout: &Layout, img: &Image, arch: &str) -> Result<Blob> {
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in &img.layers {
        let (blob, diff_id) = layout.put_layer(layer)?;
        layer_descs.push(json!({
            "mediaType": img.media.layer(layer.compression),
            "digest": blob.digest,
            "size": blob.size,
        }));
        diff_ids.push(diff_id);
    }
    let history: Vec<_> = img
        .layers
        .iter()
        .enumerate()
        .map(|(i, _)| json!({"created": CREATED, "created_by": format!("stowage fixture {} layer {i}", img.name)}))
        .collect();
    let config = layout.put_json(&json!({
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }))?;
    layout.put_json(&json!({
        "schemaVersion": 2,
        "mediaType": img.media.manifest(),
        "config": {"mediaType": img.media.config(), "digest": config.digest, "size": config.size},
        "layers": layer_descs,
    }))
}

fn reference(name: &str) -> String {
    format!("stowage.test/fixtures/{name}:latest")
}

fn finish_layout(
    out: &Path,
    layout: &Layout,
    name: &str,
    media_type: &str,
    top: &Blob,
) -> Result<Generated> {
    let reference = reference(name);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": media_type,
            "digest": top.digest,
            "size": top.size,
            "annotations": {
                "io.containerd.image.name": reference,
                "org.opencontainers.image.ref.name": "latest",
            },
        }],
    });
    fs::write(layout.root.join("index.json"), serde_json::to_vec(&index)?)?;
    let archive = out.join(format!("{name}.tar"));
    write_archive(&layout.root, &archive)?;
    Ok(Generated {
        name: name.to_owned(),
        reference,
        manifest_digest: top.digest.clone(),
        layout: layout.root.clone(),
        archive,
    })
}

fn write_single(out: &Path, img: &Image) -> Result<Generated> {
    let layout = Layout::create(&out.join(img.name))?;
    let manifest = write_manifest(&layout, img, "amd64")
        .with_context(|| format!("writing fixture {}", img.name))?;
    finish_layout(out, &layout, img.name, img.media.manifest(), &manifest)
}

fn write_multi_platform(out: &Path) -> Result<Generated> {
    let name = "multiplatform";
    let layout = Layout::create(&out.join(name))?;
    let mut manifests = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8")), ("arm", Some("v7"))] {
        let img = image(
            name,
            vec![simple_layer(arch, Compression::Gzip)],
            MediaTypes::Oci,
        );
        let m = write_manifest(&layout, &img, arch)?;
        let mut platform = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        manifests.push(json!({
            "mediaType": MediaTypes::Oci.manifest(),
            "digest": m.digest,
            "size": m.size,
            "platform": platform,
        }));
    }
    let index = layout.put_json(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))?;
    finish_layout(
        out,
        &layout,
        name,
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
}

/// Tars an OCI layout directory (sorted, fixed times) into an OCI archive.
fn write_archive(layout: &Path, archive: &Path) -> Result<()> {
    let mut files = Vec::new();
    collect(layout, layout, &mut files)?;
    files.sort();
    let mut b = tar::Builder::new(BufWriter::new(File::create(archive)?));
    for rel in files {
        let path = layout.join(&rel);
        let mut f = File::open(&path)?;
        let len = f.seek(io::SeekFrom::End(0))?;
        f.rewind()?;
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(EPOCH);
        h.set_size(len);
        b.append_data(&mut h, &rel, f)?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            collect(base, &p, out)?;
        } else {
            let rel = p.strip_prefix(base)?.to_string_lossy().into_owned();
            out.push(rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_deterministic_and_valid() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ga = generate(a.path(), true).unwrap();
        let gb = generate(b.path(), true).unwrap();
        assert_eq!(ga.len(), gb.len());
        for (x, y) in ga.iter().zip(&gb) {
            assert_eq!(x.manifest_digest, y.manifest_digest, "{}", x.name);
            assert_eq!(fs::read(&x.archive).unwrap(), fs::read(&y.archive).unwrap());
        }
        // Every blob is stored under its own digest, and every layer's DiffID in the config is
        // the digest of its decompressed bytes.
        let whiteouts = ga.iter().find(|g| g.name == "whiteouts").unwrap();
        let blobs = whiteouts.layout.join("blobs/sha256");
        for e in fs::read_dir(&blobs).unwrap() {
            let p = e.unwrap().path();
            let got = format!("{:x}", Sha256::digest(fs::read(&p).unwrap()));
            assert_eq!(got, p.file_name().unwrap().to_str().unwrap());
        }
        let read_json = |d: &str| -> serde_json::Value {
            serde_json::from_slice(&fs::read(blobs.join(d.trim_start_matches("sha256:"))).unwrap())
                .unwrap()
        };
        let manifest = read_json(&whiteouts.manifest_digest);
        let config = read_json(manifest["config"]["digest"].as_str().unwrap());
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for (layer, diff_id) in layers
            .iter()
            .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
        {
            let blob = fs::read(
                blobs.join(
                    layer["digest"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("sha256:"),
                ),
            )
            .unwrap();
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(blob.as_slice())
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(
                format!("sha256:{:x}", Sha256::digest(&plain)),
                diff_id.as_str().unwrap()
            );
            let names: Vec<String> = tar::Archive::new(plain.as_slice())
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
                .collect();
            assert!(!names.is_empty());
        }
    }
}

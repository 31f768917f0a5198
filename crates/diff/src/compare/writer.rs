//! Turns a stream of changes into an OCI layer, as containerd's `archive.ChangeWriter` does:
//! deletions become `.wh.<name>` entries, every change pulls in its parent directories (once
//! each, taken from the upper tree), and hard links inside the layer stay hard links.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use stowage_core_types::error::{Error, Result};

use super::fsmeta;
use super::header::{self, kind, Header};

/// How an entry of the upper tree relates to the lower tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// Only in the upper tree.
    Add,
    /// In both, different.
    Modify,
    /// In both and the same; reported only for hard-linked files, whose names the layer may
    /// still need when another name of the same inode changed.
    Unmodified,
    /// Only in the lower tree.
    Delete,
}

/// Writes the entries of a layer for the changes it is given, in the order given.
pub(crate) struct ChangeWriter<'w> {
    out: &'w mut dyn Write,
    source: PathBuf,
    added_dirs: HashSet<Vec<u8>>,
    inode_src: HashMap<(u64, u64), Vec<u8>>,
    inode_refs: HashMap<(u64, u64), Vec<Vec<u8>>>,
    buf: Vec<u8>,
    pub(crate) entries: u64,
    pub(crate) size: u64,
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

fn show(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

fn parent_of(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|b| *b == b'/') {
        Some(i) => &name[..i],
        None => &[],
    }
}

impl<'w> ChangeWriter<'w> {
    /// A writer whose entries' data and metadata come from the tree at `source`.
    pub(crate) fn new(out: &'w mut dyn Write, source: &Path) -> Self {
        ChangeWriter {
            out,
            source: source.to_path_buf(),
            added_dirs: HashSet::new(),
            inode_src: HashMap::new(),
            inode_refs: HashMap::new(),
            buf: vec![0u8; 256 * 1024],
            entries: 0,
            size: 0,
        }
    }

    fn emit(&mut self, h: &Header) -> Result<()> {
        let n = header::write_header(self.out, h)
            .map_err(|e| Error::from(e).context(format!("layer entry {:?}", show(&h.name))))?;
        self.size += n;
        self.entries += 1;
        Ok(())
    }

    /// Writes the parent directories of `name` that are not in the layer yet, outermost
    /// first, and records `name` itself when it is a directory.
    fn include_parents(&mut self, name: &[u8], is_dir: bool) -> Result<()> {
        let trimmed = name.strip_suffix(b"/").unwrap_or(name);
        let parent = parent_of(trimmed);
        if !parent.is_empty() && !self.added_dirs.contains(parent) {
            let parent = parent.to_vec();
            self.added_dirs.insert(parent.clone());
            let path = join(&self.source, &parent);
            let meta = fs::metadata(&path)
                .map_err(|e| Error::io(format!("stat parent directory {}", path.display()), e))?;
            self.change(ChangeKind::Modify, &parent, Some(&meta))?;
        }
        if is_dir {
            self.added_dirs.insert(trimmed.to_vec());
        }
        Ok(())
    }

    /// Writes the entry (or whiteout) for one change at `rel` (relative to the root, no
    /// leading or trailing `/`). `meta` is the upper entry's `lstat`, absent for deletions.
    pub(crate) fn change(
        &mut self,
        change: ChangeKind,
        rel: &[u8],
        meta: Option<&Metadata>,
    ) -> Result<()> {
        self.change_with_xattrs(change, rel, meta, None)
    }

    /// [`ChangeWriter::change`] with the entry's layer xattrs already read by the caller.
    pub(crate) fn change_with_xattrs(
        &mut self,
        change: ChangeKind,
        rel: &[u8],
        meta: Option<&Metadata>,
        xattrs: Option<fsmeta::Xattrs>,
    ) -> Result<()> {
        let meta = match (change, meta) {
            (ChangeKind::Delete, _) => return self.whiteout(rel),
            (_, Some(m)) => m,
            (_, None) => {
                return Err(Error::invalid_argument(format!(
                    "change {change:?} of {:?} without metadata",
                    show(rel)
                )))
            }
        };
        let ft = meta.file_type();
        if ft.is_socket() {
            // Sockets are not content; containerd leaves them out too.
            return Ok(());
        }
        let path = join(&self.source, rel);
        let mut h = Header {
            name: rel.to_vec(),
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: meta.mtime(),
            ..Header::default()
        };
        if ft.is_dir() {
            h.typeflag = kind::DIR;
            h.name.push(b'/');
        } else if ft.is_symlink() {
            h.typeflag = kind::SYMLINK;
            h.link = fs::read_link(&path)
                .map_err(|e| Error::io(format!("read symlink {}", path.display()), e))?
                .into_os_string()
                .into_vec();
        } else if ft.is_file() {
            h.typeflag = kind::REGULAR;
            h.size = meta.size();
        } else if ft.is_char_device() || ft.is_block_device() {
            h.typeflag = if ft.is_char_device() {
                kind::CHAR
            } else {
                kind::BLOCK
            };
            let rdev = meta.rdev();
            h.devmajor = u64::from(libc::major(rdev));
            h.devminor = u64::from(libc::minor(rdev));
        } else if ft.is_fifo() {
            h.typeflag = kind::FIFO;
        } else {
            return Err(Error::invalid_argument(format!(
                "{}: unknown file type (mode {:o})",
                path.display(),
                meta.mode()
            )));
        }

        let mut additional = Vec::new();
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(src) = self.inode_src.get(&key) {
                h.typeflag = kind::LINK;
                h.link = src.clone();
                h.size = 0;
            } else {
                if change == ChangeKind::Unmodified {
                    self.inode_refs.entry(key).or_default().push(h.name.clone());
                    return Ok(());
                }
                self.inode_src.insert(key, h.name.clone());
                additional = self.inode_refs.remove(&key).unwrap_or_default();
            }
        } else if change == ChangeKind::Unmodified {
            return Ok(());
        }

        h.xattrs = match xattrs {
            Some(x) => x,
            None => fsmeta::layer_xattrs(&path)
                .map_err(|e| Error::io(format!("read xattrs of {}", path.display()), e))?,
        };
        self.include_parents(&h.name.clone(), ft.is_dir())?;
        self.emit(&h)?;
        if h.typeflag == kind::REGULAR && h.size > 0 {
            self.copy_data(&path, h.size)?;
        }

        if !additional.is_empty() {
            let source = std::mem::take(&mut h.name);
            h.typeflag = kind::LINK;
            h.size = 0;
            h.link = source;
            for extra in additional {
                h.name = extra;
                self.include_parents(&h.name.clone(), false)?;
                self.emit(&h)?;
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &[u8]) -> Result<()> {
        let parent = parent_of(rel);
        let base = &rel[if parent.is_empty() {
            0
        } else {
            parent.len() + 1
        }..];
        let mut name = parent.to_vec();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(b".wh.");
        name.extend_from_slice(base);
        self.marker(name)
    }

    /// Marks the directory `rel` opaque: what the lower layers had in it is hidden.
    pub(crate) fn opaque(&mut self, rel: &[u8]) -> Result<()> {
        let mut name = rel.to_vec();
        name.extend_from_slice(b"/.wh..wh..opq");
        self.marker(name)
    }

    fn marker(&mut self, name: Vec<u8>) -> Result<()> {
        // containerd stamps whiteouts with the current time; a fixed time keeps the layer's
        // bytes a function of the trees alone.
        let h = Header {
            name,
            typeflag: kind::REGULAR,
            ..Header::default()
        };
        self.include_parents(&h.name, false)?;
        self.emit(&h)
    }

    fn copy_data(&mut self, path: &Path, size: u64) -> Result<()> {
        let mut f =
            fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let mut left = size;
        while left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match f.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(Error::data_loss(format!(
                        "{} shrank while being read: expected {size} bytes, got {}",
                        path.display(),
                        size - left
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(|e| Error::from(e).context(format!("writing {}", path.display())))?;
            left -= n as u64;
        }
        let pad = header::padding(size);
        self.out
            .write_all(&header::ZEROS[..pad])
            .map_err(Error::from)?;
        self.size += size + pad as u64;
        Ok(())
    }

    /// Ends the archive (two zero blocks).
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.out.write_all(&header::ZEROS).map_err(Error::from)?;
        self.size += header::ZEROS.len() as u64;
        self.out.flush().map_err(Error::from)
    }
}

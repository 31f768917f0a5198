//! Opening a database file, the shared state and read transactions.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::check;
use crate::cursor::{Bucket, Cursor, Root};
use crate::disk::DbFile;
use crate::error::{Error, Result};
use crate::format::{
    write_page_header, Meta, Pages, FREELIST_PAGE, LEAF_PAGE, META_SIZE, NO_FREELIST, PAGE_HEADER,
};
use crate::freelist::Freelist;
use crate::write::WriteTx;

/// Once the file is this large it grows in steps of this size (as bbolt's `AllocSize`).
pub(crate) const ALLOC_STEP: u64 = 16 * 1024 * 1024;

/// How to open a database.
#[derive(Clone, Debug)]
pub struct Options {
    /// Permission bits used when the file is created.
    pub mode: u32,
    /// How long to wait for the file lock held by another handle; `None` waits forever,
    /// `Some(Duration::ZERO)` (the default) tries once and fails with [`Error::Locked`].
    pub lock_timeout: Option<Duration>,
    /// Open read-only with a shared lock; write transactions fail with [`Error::ReadOnly`].
    pub read_only: bool,
    /// Map at least this many bytes up front, so early growth needs no remap.
    pub initial_mmap_size: usize,
    /// Skip fdatasync (tests, bulk loads you can redo). A crash may lose or tear commits.
    pub no_sync: bool,
    /// Do not write the freelist at commit (bbolt's `NoFreelistSync`); it is rebuilt by a
    /// scan of the page tree at open.
    pub no_freelist_sync: bool,
    /// Page size for a new file; 0 means the OS page size. Existing files keep theirs.
    pub page_size: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mode: 0o600,
            lock_timeout: Some(Duration::ZERO),
            read_only: false,
            initial_mmap_size: 0,
            no_sync: false,
            no_freelist_sync: false,
            page_size: 0,
        }
    }
}

/// A read-only memory map of the file. A mapping is never changed or unmapped while a
/// transaction holds it: growth creates a new mapping and old ones die with their last user.
pub(crate) struct Map {
    mmap: memmap2::Mmap,
}

impl Map {
    fn new(file: &File, len: usize) -> Result<Arc<Map>> {
        // SAFETY: the mapping is read-only and MAP_SHARED. We only ever read pages below the
        // high-water mark of a committed meta, which lie inside the file (checked at open,
        // and the file never shrinks while we hold the lock). Pages a reader can reach are
        // never rewritten while that reader lives (copy-on-write + pending freelist), so
        // the bytes behind any slice we hand out do not change. Other processes are kept
        // out by flock; one that ignores the lock can break this, as with Go bbolt.
        let mmap = unsafe { memmap2::MmapOptions::new().len(len).map(file) }
            .map_err(|e| Error::io(format!("mmap {len} bytes"), e))?;
        Ok(Arc::new(Map { mmap }))
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.mmap
    }
}

/// State shared by all transactions, guarded by one mutex held only for short, non-blocking
/// sections (never across I/O that waits on another lock).
pub(crate) struct Shared {
    pub meta: Meta,
    pub map: Arc<Map>,
    pub file_len: u64,
    /// Open read transactions by the txid they see.
    pub readers: BTreeMap<u64, usize>,
    /// Taken by the write transaction while it runs, put back when it ends.
    pub freelist: Freelist,
    pub tx_n: u64,
}

pub(crate) struct Inner {
    pub file: DbFile,
    pub path: PathBuf,
    pub opts: Options,
    pub page_size: usize,
    pub shared: Mutex<Shared>,
    /// Set when a commit failed after it started writing its meta page: the disk may then
    /// hold a meta this process does not know about, so reusing pages would be unsafe.
    pub poisoned: std::sync::atomic::AtomicBool,
    writer: Mutex<bool>,
    writer_cv: Condvar,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding this lock cannot leave Shared half-updated in a way that
        // matters more than refusing all further work, so recover the guard.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn release_writer(&self) {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        *w = false;
        self.writer_cv.notify_one();
    }

    /// Maps `len` bytes.
    pub(crate) fn map(&self, len: usize) -> Result<Arc<Map>> {
        Map::new(self.file.file(), len)
    }

    pub(crate) fn sync(&self) -> Result<()> {
        if self.opts.no_sync {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("fdatasync {}", self.path.display()), e))
    }
}

/// bbolt's mapping size policy: powers of two from 32 KiB to 1 GiB, then 1 GiB steps.
pub(crate) fn mmap_size(size: u64, page_size: u64) -> u64 {
    for i in 15..=30 {
        if size <= 1 << i {
            return 1 << i;
        }
    }
    let step = 1u64 << 30;
    let sz = size.div_ceil(step) * step;
    sz.div_ceil(page_size) * page_size
}

/// A handle to an open database. Cheap to clone, `Send + Sync`; the file is closed and its
/// lock released when the last handle and transaction are gone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// Database-wide statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Pages free for allocation.
    pub free_page_n: usize,
    /// Pages freed but possibly still seen by open readers.
    pub pending_page_n: usize,
    /// Bytes in free pages.
    pub free_alloc: u64,
    /// Bytes the freelist page needs.
    pub freelist_inuse: u64,
    /// Read transactions started since open.
    pub tx_n: u64,
    /// Read transactions open now.
    pub open_tx_n: usize,
    /// Page size of the file.
    pub page_size: usize,
    /// Id of the last committed transaction.
    pub txid: u64,
    /// High-water mark: pages in use or free below it.
    pub page_n: u64,
}

fn lock_file(file: &File, path: &Path, exclusive: bool, timeout: Option<Duration>) -> Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    let start = Instant::now();
    loop {
        // SAFETY: flock on a file descriptor we own and keep open; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
            _ => return Err(Error::io(format!("flock {}", path.display()), err)),
        }
        let waited = start.elapsed();
        if let Some(t) = timeout {
            if waited >= t {
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                    waited_ms: waited.as_millis(),
                });
            }
            std::thread::sleep((t - waited).min(Duration::from_millis(20)));
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_meta_at(file: &File, off: u64, len: u64) -> std::result::Result<Meta, String> {
    let end = off + (PAGE_HEADER + META_SIZE) as u64;
    if end > len {
        return Err(format!("the file ({len} bytes) ends before offset {end}"));
    }
    let mut buf = [0u8; PAGE_HEADER + META_SIZE];
    file.read_exact_at(&mut buf, off)
        .map_err(|e| format!("read at {off}: {e}"))?;
    Meta::decode(&buf[PAGE_HEADER..])
}

/// Picks the meta to use: the checksum-valid one with the higher txid, which must then
/// describe a tree that fits the file.
fn choose_meta(file: &File, len: u64) -> Result<(Meta, usize)> {
    let m0 = read_meta_at(file, 0, len);
    let page_size = match &m0 {
        Ok(m) => m.page_size as u64,
        Err(_) => [4096u64, 8192, 16384, 32768, 65536, 1024, 2048, 512]
            .into_iter()
            .find(|&ps| read_meta_at(file, ps, len).is_ok_and(|m| m.page_size as u64 == ps))
            .unwrap_or(0),
    };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        let e0 = m0.err().unwrap_or_else(|| format!("page size {page_size}"));
        let e1 = read_meta_at(file, 4096, len)
            .err()
            .unwrap_or_else(|| "page size mismatch".into());
        return Err(Error::corrupt(format!(
            "no valid meta page: meta 0: {e0}; meta 1 (probed at every supported page size; at 4096: {e1})"
        )));
    }
    let m1 = read_meta_at(file, page_size, len);
    let m1 = m1.and_then(|m| {
        if m.page_size as u64 == page_size {
            Ok(m)
        } else {
            Err(format!(
                "page size {} differs from meta 0's {page_size}",
                m.page_size
            ))
        }
    });
    let meta = match (&m0, &m1) {
        (Ok(a), Ok(b)) => {
            if a.txid >= b.txid {
                *a
            } else {
                *b
            }
        }
        (Ok(a), Err(_)) => *a,
        (Err(_), Ok(b)) => *b,
        (Err(a), Err(b)) => {
            return Err(Error::corrupt(format!(
                "no valid meta page: meta 0: {a}; meta 1: {b}"
            )))
        }
    };
    let ps = page_size;
    if meta.pgid < 4 {
        return Err(Error::corrupt(format!(
            "meta (txid {}) has high-water mark {}, below the minimum 4",
            meta.txid, meta.pgid
        )));
    }
    let need = meta.pgid.saturating_mul(ps);
    if need > len {
        return Err(Error::corrupt(format!(
            "file is truncated: it is {len} bytes but meta (txid {}) says {} pages of {ps} bytes ({need} bytes)",
            meta.txid, meta.pgid
        )));
    }
    if meta.root < 2 || meta.root >= meta.pgid {
        return Err(Error::corrupt(format!(
            "meta root page {} is outside 2..{}",
            meta.root, meta.pgid
        )));
    }
    if meta.freelist != NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.pgid) {
        return Err(Error::corrupt(format!(
            "meta freelist page {} is outside 2..{}",
            meta.freelist, meta.pgid
        )));
    }
    Ok((meta, ps as usize))
}

fn init_file(file: &DbFile, page_size: usize, sync: bool) -> Result<()> {
    let mut buf = vec![0u8; page_size * 4];
    for txid in 0..2u64 {
        let m = Meta {
            page_size: page_size as u32,
            flags: 0,
            root: 3,
            sequence: 0,
            freelist: 2,
            pgid: 4,
            txid,
        };
        let p = m.page(page_size);
        buf[txid as usize * page_size..(txid as usize + 1) * page_size].copy_from_slice(&p);
    }
    write_page_header(&mut buf[2 * page_size..], 2, FREELIST_PAGE, 0, 0);
    write_page_header(&mut buf[3 * page_size..], 3, LEAF_PAGE, 0, 0);
    file.write_all_at(&buf, 0)
        .map_err(|e| Error::io("write initial pages", e))?;
    if sync {
        file.sync_data()
            .map_err(|e| Error::io("fdatasync initial pages", e))?;
    }
    Ok(())
}

/// Builds the freelist of a snapshot: from its freelist page, or for a file written without
/// one, as every page below the high-water mark that the tree does not reach.
pub(crate) fn load_freelist(pages: Pages<'_>, meta: &Meta) -> Result<Freelist> {
    let mut fl = Freelist::default();
    if meta.freelist == NO_FREELIST {
        let reach = check::reachable(pages, meta)?;
        fl.free
            .extend((2..meta.pgid).filter(|id| !reach.contains(*id)));
        return Ok(fl);
    }
    let p = pages.page(meta.freelist)?;
    for id in p.freelist_ids()? {
        if id < 2 || id >= meta.pgid {
            return Err(Error::corrupt(format!(
                "freelist holds page {id}, outside 2..{}",
                meta.pgid
            )));
        }
        if !fl.free.insert(id) {
            return Err(Error::corrupt(format!("freelist holds page {id} twice")));
        }
    }
    Ok(fl)
}

impl Db {
    /// Opens (creating if needed, unless read-only) the database at `path`.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Db> {
        Db::open_with(path.as_ref(), opts, DbFile::new)
    }

    /// Opens the database with its write path running over the simulated disk `sim`.
    #[cfg(test)]
    pub(crate) fn open_sim(
        path: &Path,
        opts: Options,
        sim: Arc<crate::disk::sim::SimDisk>,
    ) -> Result<Db> {
        Db::open_with(path, opts, |f| DbFile::with_sim(f, sim))
    }

    fn open_with(path: &Path, opts: Options, wrap: impl FnOnce(File) -> DbFile) -> Result<Db> {
        let path = path.to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .create(!opts.read_only)
            .truncate(false)
            .mode(opts.mode)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        lock_file(&file, &path, !opts.read_only, opts.lock_timeout)?;
        let file = wrap(file);
        let mut len = file
            .file()
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        if len == 0 {
            if opts.read_only {
                return Err(Error::corrupt(format!(
                    "{} is empty, cannot open an empty file read-only",
                    path.display()
                )));
            }
            let ps = if opts.page_size == 0 {
                os_page_size()
            } else {
                opts.page_size
            };
            if !(1024..=65536).contains(&ps) || !ps.is_power_of_two() {
                return Err(Error::InvalidArgument(format!(
                    "page size {ps} must be a power of two between 1024 and 65536"
                )));
            }
            init_file(&file, ps, !opts.no_sync)?;
            len = 4 * ps as u64;
        }
        let (meta, page_size) = choose_meta(file.file(), len)?;
        let map_len = mmap_size(len.max(opts.initial_mmap_size as u64), page_size as u64);
        let map = Map::new(file.file(), map_len as usize)?;
        let freelist = if opts.read_only {
            Freelist::default()
        } else {
            let pages = Pages {
                data: map.bytes(),
                page_size,
                high: meta.pgid,
            };
            load_freelist(pages, &meta)?
        };
        let shared = Shared {
            meta,
            map,
            file_len: len,
            readers: BTreeMap::new(),
            freelist,
            tx_n: 0,
        };
        Ok(Db {
            inner: Arc::new(Inner {
                file,
                path,
                opts,
                page_size,
                shared: Mutex::new(shared),
                poisoned: std::sync::atomic::AtomicBool::new(false),
                writer: Mutex::new(false),
                writer_cv: Condvar::new(),
            }),
        })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The page size of the file.
    pub fn page_size(&self) -> usize {
        self.inner.page_size
    }

    /// Whether the database was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.opts.read_only
    }

    /// Starts a read transaction: a consistent snapshot of the last commit. Never blocks on
    /// writers.
    pub fn begin_read(&self) -> Result<ReadTx> {
        let mut sh = self.inner.lock();
        let meta = sh.meta;
        let map = sh.map.clone();
        *sh.readers.entry(meta.txid).or_insert(0) += 1;
        sh.tx_n += 1;
        drop(sh);
        Ok(ReadTx {
            inner: self.inner.clone(),
            map,
            meta,
        })
    }

    /// Starts the write transaction, waiting while another one is open. (Starting a second
    /// one on a thread that already holds one therefore blocks forever, as in Go.)
    pub fn begin_write(&self) -> Result<WriteTx> {
        if self.inner.opts.read_only {
            return Err(Error::ReadOnly);
        }
        if self
            .inner
            .poisoned
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::Poisoned);
        }
        {
            let mut w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            while *w {
                w = self
                    .inner
                    .writer_cv
                    .wait(w)
                    .unwrap_or_else(|p| p.into_inner());
            }
            *w = true;
        }
        let mut sh = self.inner.lock();
        // Pages freed by transaction T were last visible to readers of txid < T.
        let oldest = sh.readers.keys().next().copied().unwrap_or(u64::MAX);
        sh.freelist.release(oldest);
        let freelist = std::mem::take(&mut sh.freelist);
        let meta = sh.meta;
        let map = sh.map.clone();
        let file_len = sh.file_len;
        drop(sh);
        Ok(WriteTx::new(
            self.inner.clone(),
            map,
            meta,
            freelist,
            file_len,
        ))
    }

    /// Runs `f` in a read transaction.
    pub fn view<T, E: From<Error>>(&self, f: impl FnOnce(&ReadTx) -> Result<T, E>) -> Result<T, E> {
        let tx = self.begin_read()?;
        f(&tx)
    }

    /// Runs `f` in the write transaction; commits if it returns `Ok`, rolls back otherwise.
    pub fn update<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut WriteTx) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut tx = self.begin_write()?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Database-wide statistics.
    pub fn stats(&self) -> DbStats {
        let sh = self.inner.lock();
        let pending: usize = sh.freelist.pending.values().map(Vec::len).sum();
        let n = sh.freelist.count_with(0);
        let n = if n >= 0xFFFF { n + 1 } else { n };
        DbStats {
            free_page_n: sh.freelist.free.len(),
            pending_page_n: pending,
            free_alloc: (sh.freelist.free.len() + pending) as u64 * self.inner.page_size as u64,
            freelist_inuse: (PAGE_HEADER + 8 * n) as u64,
            tx_n: sh.tx_n,
            open_tx_n: sh.readers.values().sum(),
            page_size: self.inner.page_size,
            txid: sh.meta.txid,
            page_n: sh.meta.pgid,
        }
    }
}

fn os_page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as usize
    } else {
        4096
    }
}

/// A read transaction: a snapshot that later commits do not change.
pub struct ReadTx {
    inner: Arc<Inner>,
    map: Arc<Map>,
    meta: Meta,
}

impl std::fmt::Debug for ReadTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTx")
            .field("txid", &self.meta.txid)
            .finish()
    }
}

impl ReadTx {
    pub(crate) fn pages(&self) -> Pages<'_> {
        Pages {
            data: self.map.bytes(),
            page_size: self.inner.page_size,
            high: self.meta.pgid,
        }
    }

    /// The root bucket, whose entries are the top-level buckets.
    pub fn root(&self) -> Bucket<'_> {
        Bucket {
            pages: self.pages(),
            root: Root::Page(self.meta.root),
            sequence: self.meta.sequence,
            state: None,
        }
    }

    /// The id of the commit this snapshot shows.
    pub fn id(&self) -> u64 {
        self.meta.txid
    }

    /// Bytes in use up to the high-water mark.
    pub fn size(&self) -> u64 {
        self.meta.pgid * self.inner.page_size as u64
    }

    /// The top-level bucket `name`.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'_>>> {
        self.root().bucket(name)
    }

    /// A cursor over the top-level bucket names (values are always `None`).
    pub fn cursor(&self) -> Cursor<'_> {
        self.root().cursor()
    }

    /// Verifies the snapshot: every page reachable exactly once, reachable and free pages
    /// disjoint, nothing beyond the high-water mark, keys sorted. Lists all problems found.
    pub fn check(&self) -> Result<()> {
        let problems = check::check(self.pages(), &self.meta)?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Corrupt(problems.join("; ")))
        }
    }
}

impl Drop for ReadTx {
    fn drop(&mut self) {
        let mut sh = self.inner.lock();
        if let Some(n) = sh.readers.get_mut(&self.meta.txid) {
            *n -= 1;
            if *n == 0 {
                sh.readers.remove(&self.meta.txid);
            }
        }
    }
}

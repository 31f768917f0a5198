//! A simulated disk for power-loss and I/O-error tests.
//!
//! Every operation is also performed on the real file, so the engine (and its memory map)
//! sees what it would see in production. Alongside, the simulation keeps the *durable image*:
//! the file as the platter holds it after the last successful sync, plus the operations
//! issued since. At a simulated power cut it builds the file a reboot would find: the
//! durable image with an arbitrary subset of the pending operations applied in issue order,
//! each write dropped, landed whole, or torn (landed sector by sector, at 512 or 4096 bytes).
//!
//! Faults are chosen by the global index of the operation (0-based, counting writes, syncs
//! and truncates): either that operation fails with an errno, or the power goes off while
//! it is in flight (it may land partly, like any pending write) and every later operation
//! fails with EIO.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use super::script::Rng;

/// What kind of operation the disk was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Write,
    Sync,
    SetLen,
}

/// One operation as the trace records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceOp {
    pub kind: OpKind,
    pub off: u64,
    pub len: u64,
}

/// The injected fault.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    None,
    /// Operation `n` fails with `errno`. A failing write may still have written a
    /// sector-aligned prefix; a failing sync may have made any subset of the pending writes
    /// durable and lost the others for good (Linux marks the pages clean after an fsync
    /// error), while the page cache still shows them.
    Fail {
        n: u64,
        errno: i32,
    },
    /// The power goes off during operation `n`.
    Cut {
        n: u64,
    },
    /// Operation `n` fails with `errno`, and the power goes off during operation `cut`.
    FailThenCut {
        n: u64,
        errno: i32,
        cut: u64,
    },
}

enum Pending {
    Write { off: u64, data: Vec<u8> },
    SetLen(u64),
}

struct State {
    durable: Vec<u8>,
    pending: Vec<Pending>,
    ops: u64,
    fault: Fault,
    rng: Rng,
    sector: usize,
    trace: Vec<TraceOp>,
    /// The file found after the power cut, once it happened.
    crashed: Option<Vec<u8>>,
}

/// The simulated disk under one database file.
pub(crate) struct SimDisk {
    state: Mutex<State>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated power cut ({what})"))
}

impl SimDisk {
    /// A disk whose platter holds `image` (the file, fully synced), tearing writes at
    /// `sector` bytes, with choices drawn from `seed`.
    pub(crate) fn new(image: Vec<u8>, sector: usize, seed: u64, fault: Fault) -> SimDisk {
        SimDisk {
            state: Mutex::new(State {
                durable: image,
                pending: Vec::new(),
                ops: 0,
                fault,
                rng: Rng::new(seed),
                sector,
                trace: Vec::new(),
                crashed: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The operations issued so far.
    pub(crate) fn trace(&self) -> Vec<TraceOp> {
        self.lock().trace.clone()
    }

    /// Whether the power has been cut.
    pub(crate) fn is_cut(&self) -> bool {
        self.lock().crashed.is_some()
    }

    /// Cuts the power now (if the injected cut has not happened) and returns the file a
    /// reboot finds.
    pub(crate) fn power_cut(&self) -> Vec<u8> {
        let mut st = self.lock();
        if st.crashed.is_none() {
            let img = st.land_some();
            st.crashed = Some(img);
        }
        st.crashed.clone().unwrap_or_default()
    }

    /// Starts operation `kind`: records it and says which fault, if any, hits it.
    fn begin(st: &mut State, kind: OpKind, off: u64, len: u64) -> io::Result<Option<i32>> {
        if st.crashed.is_some() {
            return Err(eio("the disk is gone"));
        }
        let n = st.ops;
        st.ops += 1;
        st.trace.push(TraceOp { kind, off, len });
        match st.fault {
            Fault::Fail { n: at, errno } | Fault::FailThenCut { n: at, errno, .. } if at == n => {
                Ok(Some(errno))
            }
            _ => Ok(None),
        }
    }

    fn is_cut_now(st: &State) -> bool {
        matches!(st.fault, Fault::Cut { n } | Fault::FailThenCut { cut: n, .. } if n + 1 == st.ops)
    }

    pub(crate) fn write_all_at(&self, file: &File, buf: &[u8], off: u64) -> io::Result<()> {
        let mut st = self.lock();
        let fail = Self::begin(&mut st, OpKind::Write, off, buf.len() as u64)?;
        if Self::is_cut_now(&st) {
            st.pending.push(Pending::Write {
                off,
                data: buf.to_vec(),
            });
            let img = st.land_some();
            st.crashed = Some(img);
            return Err(eio("during a write"));
        }
        if let Some(errno) = fail {
            // Part of the write may have reached the page cache before the error.
            let sectors = buf.len().div_ceil(st.sector) as u64;
            let keep = (st.rng.below(sectors + 1) as usize * st.sector).min(buf.len());
            if keep > 0 {
                file.write_all_at(&buf[..keep], off)?;
                st.pending.push(Pending::Write {
                    off,
                    data: buf[..keep].to_vec(),
                });
            }
            return Err(io::Error::from_raw_os_error(errno));
        }
        file.write_all_at(buf, off)?;
        st.pending.push(Pending::Write {
            off,
            data: buf.to_vec(),
        });
        Ok(())
    }

    pub(crate) fn sync(&self, file: &File, all: bool) -> io::Result<()> {
        let mut st = self.lock();
        let fail = Self::begin(&mut st, OpKind::Sync, 0, 0)?;
        if Self::is_cut_now(&st) {
            let img = st.land_some();
            st.crashed = Some(img);
            return Err(eio("during a sync"));
        }
        if let Some(errno) = fail {
            st.durable = st.land_some();
            st.pending.clear();
            return Err(io::Error::from_raw_os_error(errno));
        }
        if all {
            file.sync_all()?;
        } else {
            file.sync_data()?;
        }
        let pending = std::mem::take(&mut st.pending);
        for p in &pending {
            apply(&mut st.durable, p, None);
        }
        Ok(())
    }

    pub(crate) fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        let mut st = self.lock();
        let fail = Self::begin(&mut st, OpKind::SetLen, len, 0)?;
        if Self::is_cut_now(&st) {
            st.pending.push(Pending::SetLen(len));
            let img = st.land_some();
            st.crashed = Some(img);
            return Err(eio("during a truncate"));
        }
        if let Some(errno) = fail {
            return Err(io::Error::from_raw_os_error(errno));
        }
        file.set_len(len)?;
        st.pending.push(Pending::SetLen(len));
        Ok(())
    }
}

impl State {
    /// The durable image with a random subset of the pending operations landed, in issue
    /// order: each is dropped, landed whole or (writes) torn at sector granularity.
    fn land_some(&mut self) -> Vec<u8> {
        let mut img = self.durable.clone();
        let pending = std::mem::take(&mut self.pending);
        for p in &pending {
            match self.rng.below(3) {
                0 => {}
                1 => apply(&mut img, p, None),
                _ => {
                    let mut rng = self.rng.clone();
                    self.rng.next();
                    apply(&mut img, p, Some((self.sector, &mut rng)));
                }
            }
        }
        self.pending = pending;
        img
    }
}

/// Applies `p` to `img`; with `torn`, each sector of a write lands or not at random
/// (sectors are aligned to absolute file offsets, as the device sees them).
fn apply(img: &mut Vec<u8>, p: &Pending, torn: Option<(usize, &mut Rng)>) {
    match p {
        Pending::SetLen(len) => img.resize(*len as usize, 0),
        Pending::Write { off, data } => {
            let off = *off as usize;
            let end = off + data.len();
            if img.len() < end {
                img.resize(end, 0);
            }
            match torn {
                None => img[off..end].copy_from_slice(data),
                Some((sector, rng)) => {
                    let mut pos = off;
                    while pos < end {
                        let next = ((pos / sector + 1) * sector).min(end);
                        if rng.chance(50) {
                            img[pos..next].copy_from_slice(&data[pos - off..next - off]);
                        }
                        pos = next;
                    }
                }
            }
        }
    }
}

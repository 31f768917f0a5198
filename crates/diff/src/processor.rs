//! Stream processors: external programs that turn a layer blob of one media type into a stream
//! of another before it is applied (decryption is the usual one), as containerd 1.6's
//! `[stream_processors]` configuration and `diff.BinaryHandler`.
//!
//! The applier resolves a chain before reading anything: while the current media type is one a
//! configured processor accepts, that processor is added and the current type becomes what it
//! returns; once the type is a layer type the built-in decompressor takes (every OCI and Docker
//! layer type) the chain is complete; any other type fails with containerd's
//! `no processor for media-type`. A processor gets the stream on its standard input and writes
//! the result on its standard output, with `STREAM_PROCESSOR_MEDIATYPE` set to the media type
//! it is given and, when the apply carries a payload under the processor's id, that payload
//! (a protobuf-encoded `google.protobuf.Any`) readable on file descriptor 3. A processor that
//! exits unsuccessfully fails the apply with what it wrote on its standard error.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use stowage_core_types::diff::Payload;
use stowage_core_types::error::{Error, Result};
use stowage_core_types::mediatype;

/// The text containerd's `diff.ErrNoProcessor` carries.
pub const NO_PROCESSOR: &str = "no processor for media-type";

/// The environment variable naming the media type a processor is given.
pub const MEDIA_TYPE_ENV: &str = "STREAM_PROCESSOR_MEDIATYPE";

/// Longest chain of processors followed: a processor returning a type it accepts itself
/// would otherwise chain forever.
const MAX_CHAIN: usize = 16;

/// One configured processor, as containerd's `[stream_processors."<id>"]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamProcessor {
    /// The processor's id: the key of its payload in an apply's payloads.
    pub id: String,
    /// The media types it takes.
    pub accepts: Vec<String>,
    /// The media type of what it writes.
    pub returns: String,
    /// The program (a path, or a name looked up in `PATH`).
    pub path: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment, `KEY=VALUE` each, on top of the daemon's own.
    pub env: Vec<String>,
}

/// Resolves the chain for `media_type`: the processors to run, in order, and the media type
/// the built-in decompressor then takes.
pub(crate) fn resolve<'a>(
    processors: &'a [StreamProcessor],
    media_type: &str,
) -> Result<(Vec<&'a StreamProcessor>, String)> {
    let mut chain = Vec::new();
    let mut current = media_type.to_string();
    loop {
        if let Some(p) = processors.iter().find(|p| p.accepts.contains(&current)) {
            if chain.len() == MAX_CHAIN {
                return Err(Error::invalid_argument(format!(
                    "stream processors for {media_type} chain more than {MAX_CHAIN} times"
                )));
            }
            chain.push(p);
            current = p.returns.clone();
            continue;
        }
        if mediatype::layer_compression(&current).is_ok() {
            return Ok((chain, current));
        }
        return Err(Error::unknown(format!(
            "failed to get stream processor for {media_type}: {NO_PROCESSOR}"
        )));
    }
}

/// A payload encoded as the protobuf message `google.protobuf.Any` (proto3: empty fields are
/// left out).
pub(crate) fn encode_any(p: &Payload) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, tag: u8, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        out.push(tag);
        let mut n = data.len() as u64;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(data);
    }
    let mut out = Vec::with_capacity(p.type_url.len() + p.value.len() + 12);
    field(&mut out, 0x0a, p.type_url.as_bytes());
    field(&mut out, 0x12, &p.value);
    out
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A started processor: the child, and the write end of its payload pipe (filled by the
/// caller on a thread, as a payload may not fit the pipe's buffer).
pub(crate) struct Running {
    pub child: Child,
    pub payload: Option<(OwnedFd, Vec<u8>)>,
}

/// Starts `p` for input of `media_type`, with `payload` on fd 3 when given.
pub(crate) fn start(
    p: &StreamProcessor,
    media_type: &str,
    payload: Option<&Payload>,
) -> Result<Running> {
    let mut cmd = Command::new(&p.path);
    cmd.args(&p.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for kv in &p.env {
        match kv.split_once('=') {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env(kv, ""),
        };
    }
    cmd.env(MEDIA_TYPE_ENV, media_type);
    let mut pipe_ends = None;
    if let Some(payload) = payload {
        let (r, w) = pipe().map_err(|e| Error::io("creating the payload pipe", e))?;
        let fd = r.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and calls only dup2 and
        // fcntl, which are async-signal-safe; `fd` stays open in the child until exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    // dup2 onto itself keeps close-on-exec; clear it instead.
                    if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        pipe_ends = Some((r, w, encode_any(payload)));
    }
    let child = cmd.spawn().map_err(|e| {
        Error::io(
            format!("starting stream processor {} ({})", p.id, p.path.display()),
            e,
        )
    })?;
    // The child has its copy of the read end; ours would keep the pipe open for nothing.
    let payload = pipe_ends.map(|(r, w, data)| {
        drop(r);
        (w, data)
    });
    Ok(Running { child, payload })
}

/// Writes a payload into its pipe and closes it.
pub(crate) fn feed_payload(w: OwnedFd, data: &[u8]) {
    let mut f = std::fs::File::from(w);
    // A processor that does not read its payload closes the pipe: not an error of ours.
    let _ = f.write_all(data);
}

/// Waits for a processor to end and reports an unsuccessful exit with its standard error. A
/// processor the caller killed (`killed`) and that died of it is not a failure.
pub(crate) fn finish(
    p: &StreamProcessor,
    mut child: Child,
    stderr: Vec<u8>,
    killed: bool,
) -> Result<()> {
    let status = child
        .wait()
        .map_err(|e| Error::io(format!("waiting for stream processor {}", p.id), e))?;
    if status.success() || (killed && status.signal() == Some(libc::SIGKILL)) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&stderr);
    let text = text.trim();
    Err(Error::unknown(if text.is_empty() {
        format!("stream processor {} failed: {status}", p.id)
    } else {
        format!("stream processor {} failed: {text}", p.id)
    }))
}

/// Reads a child's standard error to the end (on its own thread, so a chatty processor
/// cannot block on a full pipe).
pub(crate) fn collect(mut r: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = r.read_to_end(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core_types::ErrorKind;

    fn proc(id: &str, accepts: &[&str], returns: &str) -> StreamProcessor {
        StreamProcessor {
            id: id.into(),
            accepts: accepts.iter().map(|s| s.to_string()).collect(),
            returns: returns.into(),
            path: "/bin/cat".into(),
            ..StreamProcessor::default()
        }
    }

    #[test]
    fn chains_resolve_until_a_layer_type() {
        let ps = [
            proc("dec", &["x/enc"], "x/mid"),
            proc("mid", &["x/mid"], mediatype::OCI_LAYER_GZIP),
        ];
        let (chain, rest) = resolve(&ps, "x/enc").unwrap();
        assert_eq!(
            chain.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["dec", "mid"]
        );
        assert_eq!(rest, mediatype::OCI_LAYER_GZIP);
        let (chain, rest) = resolve(&ps, mediatype::OCI_LAYER_ZSTD).unwrap();
        assert!(chain.is_empty());
        assert_eq!(rest, mediatype::OCI_LAYER_ZSTD);

        // A processor configured for a layer type takes precedence over the built-in one.
        let over = [proc(
            "mine",
            &[mediatype::OCI_LAYER_GZIP],
            mediatype::OCI_LAYER,
        )];
        let (chain, _) = resolve(&over, mediatype::OCI_LAYER_GZIP).unwrap();
        assert_eq!(chain.len(), 1);
    }

    #[test]
    fn unknown_types_have_no_processor() {
        let ps = [proc("dec", &["x/enc"], "x/unknown")];
        for (mt, original) in [
            (mediatype::OCI_MANIFEST, mediatype::OCI_MANIFEST),
            ("", ""),
            ("x/enc", "x/enc"),
        ] {
            let err = resolve(&ps, mt).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unknown);
            assert_eq!(
                err.message(),
                format!(
                    "failed to get stream processor for {original}: no processor for media-type"
                )
            );
        }
        let looping = [proc("loop", &["x/a"], "x/a")];
        assert_eq!(
            resolve(&looping, "x/a").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn payloads_encode_as_any() {
        let p = Payload {
            type_url: "t".into(),
            value: vec![1, 2, 3],
        };
        assert_eq!(encode_any(&p), [0x0a, 1, b't', 0x12, 3, 1, 2, 3]);
        let long = Payload {
            type_url: String::new(),
            value: vec![0; 300],
        };
        let enc = encode_any(&long);
        assert_eq!(&enc[..3], &[0x12, 0xac, 0x02]);
        assert_eq!(enc.len(), 303);
        assert!(encode_any(&Payload::default()).is_empty());
    }
}

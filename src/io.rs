//! I/O adapters: hashing writers, atomic output files, directory syncs, and
//! the marker that tells a disk error on the vault file apart from a
//! tampered or truncated age stream.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Size of the buffers the streaming stages use.
pub const BUF_SIZE: usize = 1 << 20;

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// The inner writer, the SHA-256 and the byte count.
    pub fn finish(self) -> (W, [u8; 32], u64) {
        (self.inner, self.hasher.finalize().into(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// fsync the directory holding `path`, so that a rename into it is durable.
pub fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync directory", &dir, e))
}

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Prefix of every temporary file casevault creates beside its outputs.
pub const TEMP_PREFIX: &str = ".casevault-tmp-";

/// An output file written under a temporary name beside its final path and
/// renamed into place only by [`AtomicFile::commit`]; dropped uncommitted, it
/// is removed.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        let dir = parent_dir(target);
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(|e| Error::io("cannot create a temporary file in", &dir, e))?;
        Ok(AtomicFile {
            tmp,
            target: target.to_path_buf(),
        })
    }

    pub fn file(&self) -> &fs::File {
        self.tmp.as_file()
    }

    /// Give the output permission bits `mode` (the temporary file is
    /// created 0600). Set before [`AtomicFile::commit`], so the file never
    /// appears with other bits; fchmod, so no umask applies.
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.tmp
            .as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("cannot set the mode of", &self.target, e))
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temporary file's path (e.g. to read the output back and check it
    /// before [`AtomicFile::commit`]).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// fsync the data, then rename over the target (refusing to replace an
    /// existing file unless `overwrite`). The caller syncs the directory.
    pub fn commit(self, overwrite: bool) -> Result<()> {
        let target = self.target.clone();
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| Error::io("cannot sync", &target, e))?;
        let res = if overwrite {
            self.tmp.persist(&target).map(drop)
        } else {
            self.tmp.persist_noclobber(&target).map(drop)
        };
        res.map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                Error::Refused(format!(
                    "{} already exists (use --force to replace it)",
                    target.display()
                ))
            } else {
                Error::io("cannot rename into place", &target, e.error)
            }
        })
    }
}

impl AsRef<fs::File> for AtomicFile {
    fn as_ref(&self) -> &fs::File {
        self.tmp.as_file()
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.as_file_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.as_file_mut().flush()
    }
}

/// Wraps an error that came from reading the vault file itself (the disk),
/// so that it is not mistaken for a tampered stream after passing through
/// the age, zstd and tar layers.
#[derive(Debug)]
struct SourceError(io::Error);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A reader over the vault file whose errors are marked as disk errors. It
/// also checks for a pending signal between reads.
pub struct SourceReader<R>(pub R);

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if crate::signal::pending().is_some() {
            // Not ErrorKind::Interrupted: std's helpers retry on that kind.
            return Err(io::Error::other(SourceError(io::Error::other(
                "interrupted",
            ))));
        }
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), SourceError(e)))
    }
}

impl<R: io::Seek> io::Seek for SourceReader<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.0
            .seek(pos)
            .map_err(|e| io::Error::new(e.kind(), SourceError(e)))
    }
}

/// Whether an error returned through the decryption stack came from reading
/// the vault file (as opposed to the stream failing authentication, ending
/// early or not parsing).
pub fn is_source_error(e: &io::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|r| r as _);
    while let Some(err) = cur {
        if err.is::<SourceError>() {
            return true;
        }
        // io::Error's source() skips its payload, so look inside it.
        if let Some(inner) = err.downcast_ref::<io::Error>().and_then(|e| e.get_ref()) {
            if inner.is::<SourceError>() {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Classify an error from reading the decrypted stream of `vault`: disk
/// errors stay I/O errors (exit 1), a signal becomes `Interrupted`, anything
/// else is an integrity failure (exit 3).
pub fn classify_stream_error(vault: &Path, what: &str, e: io::Error) -> Error {
    if let Some(sig) = crate::signal::pending() {
        return Error::Interrupted(sig);
    }
    if is_source_error(&e) {
        return Error::io("cannot read vault", vault, e);
    }
    // The age reader reports a chunk that fails authentication as
    // InvalidData and a stream that stops early as UnexpectedEof.
    match e.kind() {
        io::ErrorKind::InvalidData => Error::integrity(format!(
            "{what}: the data failed authentication or does not decode (damaged or tampered): {e}"
        )),
        io::ErrorKind::UnexpectedEof => {
            Error::integrity(format!("{what}: the stream ends early (truncated): {e}"))
        }
        _ => Error::integrity(format!("{what}: {e}")),
    }
}

/// Shared SHA-256 state of bytes read so far, and their count.
pub type SharedHash = std::sync::Arc<std::sync::Mutex<(Sha256, u64)>>;

/// A new, empty [`SharedHash`].
pub fn shared_hash() -> SharedHash {
    std::sync::Arc::new(std::sync::Mutex::new((Sha256::new(), 0)))
}

/// Add `data` to a [`SharedHash`].
pub fn update_shared(state: &SharedHash, data: &[u8]) {
    let mut s = state.lock().expect("hash state lock is never poisoned");
    s.0.update(data);
    s.1 += data.len() as u64;
}

/// Lower-case hex SHA-256 and byte count of a [`SharedHash`] so far.
pub fn shared_digest(state: &SharedHash) -> (String, u64) {
    let s = state.lock().expect("hash state lock is never poisoned");
    (hex(&s.0.clone().finalize()), s.1)
}

/// Hashes the ciphertext of a vault as the decryptor reads it, and reports
/// progress.
pub struct TeeHash<R> {
    pub inner: R,
    pub state: SharedHash,
}

impl<R: Read> Read for TeeHash<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        update_shared(&self.state, &buf[..n]);
        crate::progress::add_bytes(n as u64);
        Ok(n)
    }
}

/// Run `read` again while it fails with `Interrupted` (EINTR), as std's
/// `read_exact` does; every read loop of casevault goes through it.
pub fn retry(mut read: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match read() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// SHA-256 of a whole file, streamed.
pub fn sha256_file(path: &Path) -> Result<([u8; 32], u64)> {
    // A local file, or a vault in S3 (src/source.rs).
    let mut f = crate::source::open_one(path, "cannot open")?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut n = 0u64;
    loop {
        crate::signal::check()?;
        let k = match retry(|| f.read(&mut buf)) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h.finalize().into(), n))
}

/// Open `path` for reading if it is a regular file (`None` if it is
/// something else), without following a symlink or blocking on a FIFO.
pub fn open_regular(path: &Path) -> io::Result<Option<fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let f = match f {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        r => r?,
    };
    Ok(f.metadata()?.is_file().then_some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn source_errors_survive_wrapping() {
        let e = io::Error::other(SourceError(io::Error::other("disk")));
        assert!(is_source_error(&e));
        // Wrapped again, as tar does.
        #[derive(Debug)]
        struct Outer(io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "outer")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let w = io::Error::other(Outer(e));
        assert!(is_source_error(&w));
        assert!(!is_source_error(&io::Error::new(
            io::ErrorKind::InvalidData,
            "mac"
        )));
    }
}

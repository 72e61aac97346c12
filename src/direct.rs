//! Writing a vault around the page cache (`O_DIRECT`).
//!
//! Seal and repair fsync what they write before renaming it into place,
//! so every byte must reach the disk before they are done; going through
//! the page cache first only adds a kernel copy per byte, and on a machine
//! whose memory is full of page cache (the case just read, earlier vaults)
//! each new page costs a reclaim too. Measured on this project's machine,
//! that copy was seal's output thread's whole load and most of a repair's
//! (PERFORMANCE.md, "Writing around the page cache").
//!
//! [`DirectFile`] writes whole aligned [`Chunk`]s with `O_DIRECT` and
//! anything else (the stream's last, partial chunk) through the page
//! cache; `parity::Tee` gathers a stream into such chunks. Where the file
//! system refuses `O_DIRECT` (some at `fcntl`, some at the first write),
//! the file is written as before and nothing is said: this changes how the
//! bytes travel, never which bytes land.

use std::fs;
use std::io::{self, Write};

use rustix::fs::OFlags;

/// Alignment of a chunk's address, length and file offset: a multiple of
/// every logical block size in use (512 and 4096 bytes).
pub const ALIGN: usize = 4096;

/// Bytes per chunk: long enough for the disk, a whole number of parity
/// shards (4 KiB) and a whole fraction of a parity stripe (32 MiB).
pub const CHUNK: usize = 4 << 20;

/// A zeroed buffer whose address is `ALIGN`-aligned, for reads and
/// writes around the page cache.
pub struct Aligned {
    /// `len + ALIGN` bytes, of which `len` from `start` are the buffer.
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    pub fn new(len: usize) -> Aligned {
        let mem = vec![0u8; len + ALIGN];
        // A Vec never moves its buffer unless it grows, and `mem` never
        // grows: this offset stays right.
        let start = (ALIGN - mem.as_ptr() as usize % ALIGN) % ALIGN;
        Aligned { mem, start, len }
    }
}

impl std::ops::Deref for Aligned {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

/// A buffer of `CHUNK` bytes whose address is `ALIGN`-aligned.
pub struct Chunk(Aligned);

impl Chunk {
    pub fn new() -> Chunk {
        Chunk(Aligned::new(CHUNK))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Default for Chunk {
    fn default() -> Self {
        Chunk::new()
    }
}

/// A writer that may take whole aligned chunks around the page cache.
pub trait Sink: Write {
    /// Whether writes of whole aligned chunks bypass the page cache, so
    /// that gathering the stream into [`Chunk`]s pays for its copy.
    fn direct(&self) -> bool {
        false
    }
}

/// A file opened for writing (seal's temporary vault, repair's copy),
/// written with `O_DIRECT` while every write is a run of whole aligned
/// blocks, and through the page cache from the first one that is not.
pub struct DirectFile<F: AsRef<fs::File>> {
    out: F,
    direct: bool,
}

impl<F: AsRef<fs::File>> DirectFile<F> {
    /// Switch `out` to `O_DIRECT` if its file system allows it and it is
    /// not tmpfs (its pages are the file, and gathering the stream into
    /// chunks for it would only add a copy).
    pub fn new(out: F) -> Self {
        let direct = !in_memory(out.as_ref()) && set_direct(out.as_ref(), true).is_ok();
        DirectFile { out, direct }
    }

    pub fn get_ref(&self) -> &F {
        &self.out
    }

    /// The file, with `O_DIRECT` off again, so that whatever the caller
    /// does next with it (fsync, read it back to sign it) is ordinary.
    pub fn into_inner(mut self) -> io::Result<F> {
        self.buffered()?;
        Ok(self.out)
    }

    fn buffered(&mut self) -> io::Result<()> {
        if self.direct {
            set_direct(self.out.as_ref(), false)?;
            self.direct = false;
        }
        Ok(())
    }
}

impl<F: AsRef<fs::File>> Sink for DirectFile<F> {
    fn direct(&self) -> bool {
        self.direct
    }
}

impl<F: AsRef<fs::File>> Write for DirectFile<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.direct {
            let aligned = buf.as_ptr() as usize % ALIGN == 0 && buf.len() % ALIGN == 0;
            if aligned {
                match self.out.as_ref().write(buf) {
                    Ok(n) if n == buf.len() => return Ok(n),
                    // Nothing written: the cache may take it.
                    Ok(0) => self.buffered()?,
                    // The rest (the caller writes it) would be misaligned.
                    Ok(n) => {
                        self.buffered()?;
                        return Ok(n);
                    }
                    // The file system takes O_DIRECT at fcntl but not
                    // this write: go on without it.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.buffered()?,
                    Err(e) => return Err(e),
                }
            } else {
                self.buffered()?;
            }
        }
        self.out.as_ref().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn in_memory(file: &fs::File) -> bool {
    rustix::fs::fstatfs(file).is_ok_and(|s| s.f_type == libc::TMPFS_MAGIC)
}

fn set_direct(file: &fs::File, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(file, flags)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::AtomicFile;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    fn is_tmpfs(f: &fs::File) -> bool {
        rustix::fs::fstatfs(f).unwrap().f_type == libc::TMPFS_MAGIC
    }

    /// Whole aligned chunks go around the page cache, then the partial
    /// tail through it; the file holds exactly the bytes given, and
    /// `O_DIRECT` is off afterwards.
    #[test]
    fn writes_chunks_direct_and_the_tail_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(2 * CHUNK + 12345);
        let mut w = DirectFile::new(AtomicFile::create(&path).unwrap());
        // Off from the start only on tmpfs or where fcntl refused it;
        // tests/it/seal.rs checks on ext4 that it is on.
        let started = w.direct();
        assert!(!(started && is_tmpfs(w.get_ref().file())));
        let mut chunk = Chunk::new();
        for piece in data.chunks(CHUNK) {
            if piece.len() == CHUNK {
                chunk.bytes_mut().copy_from_slice(piece);
                w.write_all(chunk.bytes()).unwrap();
                assert_eq!(w.direct(), started, "a whole chunk turned O_DIRECT off");
            } else {
                w.write_all(piece).unwrap();
                assert!(!w.direct(), "a partial chunk went with O_DIRECT");
            }
        }
        let f = w.into_inner().unwrap();
        assert!(!rustix::fs::fcntl_getfl(f.file())
            .unwrap()
            .contains(OFlags::DIRECT));
        f.commit(false).unwrap();
        assert!(fs::read(&path).unwrap() == data);
    }

    /// A file system that takes `O_DIRECT` at `fcntl` but refuses a
    /// write (here: a whole aligned chunk at a misaligned file offset,
    /// which ext4, XFS and btrfs refuse with EINVAL) costs only the
    /// bypass: the chunk is written through the page cache instead. (On
    /// tmpfs, O_DIRECT is not even tried.)
    #[test]
    fn a_refused_direct_write_falls_back() {
        use std::io::{Seek, SeekFrom};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = DirectFile::new(AtomicFile::create(&path).unwrap());
        let was_direct = w.direct();
        let tmpfs = is_tmpfs(w.get_ref().file());
        let data = pattern(CHUNK);
        let mut chunk = Chunk::new();
        chunk.bytes_mut().copy_from_slice(&data);
        w.get_ref().file().seek(SeekFrom::Start(1)).unwrap();
        w.write_all(chunk.bytes()).unwrap();
        // Refused (or never tried, on tmpfs): written all the same.
        assert!(!w.direct());
        assert!(!(was_direct && tmpfs));
        w.into_inner().unwrap().commit(false).unwrap();
        let back = fs::read(&path).unwrap();
        assert_eq!(back.len(), CHUNK + 1);
        assert!(back[0] == 0 && back[1..] == data[..]);
    }
}

//! The zstd layer of format version 3 (FORMAT §13.1 item 5): the tar
//! stream cut into independent zstd frames, followed by the seek table of
//! the zstd seekable format, so that a reader can decompress any part of
//! the stream by itself. Stock `zstd -d` reads the frames one after the
//! other and skips the seek table (a skippable frame).
//!
//! Three pieces: [`FrameWriter`] (seal: compresses frames on worker
//! threads, writes them in order, then the table), [`SeekTable`] (parsing a
//! table found at the end of a plaintext, defensively), and
//! [`FramedDecoder`] (the streaming reader's decompressor: it records every
//! frame it decodes, so that a full read can check the seek table against
//! the frames it actually read, FORMAT §13.2).

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Tar bytes per frame written by casevault: +0.11% in vault size against
/// one zstd stream on the `mixed` profile (docs/PERFORMANCE.md), and at
/// most 1 MiB to decompress to reach any byte.
pub const FRAME_SIZE: usize = 1 << 20;
/// Largest decompressed frame a version 3 reader accepts (2^23).
pub const MAX_FRAME: u64 = 1 << 23;
/// Most frames a seek table may list (2^24: 16 TiB of tar at 1 MiB).
pub const MAX_FRAMES: u64 = 1 << 24;
/// Magic of the skippable frame holding a seek table.
pub const SKIPPABLE_SEEK_MAGIC: u32 = 0x184D_2A5E;
/// The seek table footer's magic.
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// Footer: frame count (4), descriptor (1), magic (4).
pub const FOOTER_LEN: u64 = 9;

/// The size of the skippable frame holding a table of `frames` entries.
pub fn table_len(frames: u64) -> u64 {
    8 + 8 * frames + FOOTER_LEN
}

fn is_skippable(magic: u32) -> bool {
    magic & 0xFFFF_FFF0 == 0x184D_2A50
}

/// A plain frame sent to a worker, and what comes back.
type Job = Vec<u8>;
type Done = io::Result<(Vec<u8>, Vec<u8>)>;

struct Worker {
    tx: Option<SyncSender<Job>>,
    rx: Receiver<Done>,
    handle: Option<JoinHandle<()>>,
}

/// Writes the tar stream as independent zstd frames of [`FRAME_SIZE`]
/// bytes (the last may be shorter) and, at [`FrameWriter::finish`], the
/// seek table. Frames are compressed on worker threads (one per core, at
/// most 4) and written in order; memory stays at a few frames per worker.
pub struct FrameWriter<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    workers: Vec<Worker>,
    next_send: usize,
    next_recv: usize,
    in_flight: usize,
    free: Vec<Vec<u8>>,
    /// The seek table's entries so far.
    table: Vec<u8>,
    frames: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W, level: i32) -> io::Result<Self> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, job_rx) = mpsc::sync_channel::<Job>(1);
            let (done_tx, rx) = mpsc::sync_channel::<Done>(2);
            let handle = std::thread::Builder::new()
                .name("casevault-zstd".into())
                .spawn(move || compress_loop(level, job_rx, done_tx))?;
            workers.push(Worker {
                tx: Some(tx),
                rx,
                handle: Some(handle),
            });
        }
        Ok(FrameWriter {
            inner: Some(inner),
            buf: Vec::with_capacity(FRAME_SIZE),
            workers,
            next_send: 0,
            next_recv: 0,
            in_flight: 0,
            free: Vec::new(),
            table: Vec::new(),
            frames: 0,
        })
    }

    fn dispatch(&mut self) -> io::Result<()> {
        if self.in_flight == 2 * self.workers.len() {
            self.collect()?;
        }
        let next = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FRAME_SIZE));
        let plain = std::mem::replace(&mut self.buf, next);
        let w = &self.workers[self.next_send];
        w.tx.as_ref()
            .expect("workers live until drop")
            .send(plain)
            .map_err(|_| io::Error::other("zstd worker stopped"))?;
        self.next_send = (self.next_send + 1) % self.workers.len();
        self.in_flight += 1;
        Ok(())
    }

    /// Write the oldest frame in flight.
    fn collect(&mut self) -> io::Result<()> {
        let w = &self.workers[self.next_recv];
        let (compressed, mut plain) =
            w.rx.recv()
                .map_err(|_| io::Error::other("zstd worker stopped"))??;
        self.next_recv = (self.next_recv + 1) % self.workers.len();
        self.in_flight -= 1;
        self.out().write_all(&compressed)?;
        // Both fit: a frame holds at most FRAME_SIZE bytes, and zstd's
        // bound for that is far below 4 GiB.
        self.table
            .extend_from_slice(&(compressed.len() as u32).to_le_bytes());
        self.table
            .extend_from_slice(&(plain.len() as u32).to_le_bytes());
        self.frames += 1;
        plain.clear();
        self.free.push(plain);
        Ok(())
    }

    /// Write the last frame, every frame in flight and the seek table;
    /// return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.dispatch()?;
        }
        while self.in_flight > 0 {
            self.collect()?;
        }
        let body = self.table.len() as u64 + FOOTER_LEN;
        let mut t = Vec::with_capacity(8 + body as usize);
        t.extend_from_slice(&SKIPPABLE_SEEK_MAGIC.to_le_bytes());
        t.extend_from_slice(&(body as u32).to_le_bytes());
        t.extend_from_slice(&self.table);
        t.extend_from_slice(&(self.frames as u32).to_le_bytes());
        t.push(0); // descriptor: no per-frame checksums
        t.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        let mut inner = self.inner.take().expect("finish is called once");
        inner.write_all(&t)?;
        self.stop();
        Ok(inner)
    }

    fn stop(&mut self) {
        // Close both channels first, so that a worker blocked on either
        // returns, then wait for each.
        for w in &mut self.workers {
            w.tx.take();
            let (_closed, rx) = mpsc::sync_channel(0);
            drop(std::mem::replace(&mut w.rx, rx));
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }

    fn out(&mut self) -> &mut W {
        self.inner.as_mut().expect("written to after finish")
    }
}

fn compress_loop(level: i32, jobs: Receiver<Job>, done: SyncSender<Done>) {
    let mut c = match zstd::bulk::Compressor::new(level) {
        Ok(c) => c,
        Err(e) => {
            let _ = done.send(Err(e));
            return;
        }
    };
    let setup = c
        .include_checksum(true)
        .and_then(|()| c.include_contentsize(true));
    if let Err(e) = setup {
        let _ = done.send(Err(e));
        return;
    }
    while let Ok(plain) = jobs.recv() {
        let res = c.compress(&plain).map(|z| (z, plain));
        if done.send(res).is_err() {
            return;
        }
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let k = (FRAME_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..k]);
            data = &data[k..];
            if self.buf.len() == FRAME_SIZE {
                self.dispatch()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for FrameWriter<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A seek table read from the end of a plaintext and checked (FORMAT
/// §13.3 step 2): where each frame starts, compressed and decompressed.
#[derive(Debug)]
pub struct SeekTable {
    /// `n + 1` prefix sums of the compressed sizes (from plaintext 0).
    c_start: Vec<u64>,
    /// `n + 1` prefix sums of the decompressed sizes (tar offsets).
    d_start: Vec<u64>,
}

impl SeekTable {
    /// Read the table of a plaintext of `len` bytes through `read_at`
    /// (which fills its buffer from a plaintext offset, or fails). Every
    /// rule of FORMAT §13.3 step 2 is checked; a failure is an integrity
    /// error naming the rule.
    pub fn read(
        len: u64,
        mut read_at: impl FnMut(u64, &mut [u8]) -> crate::Result<()>,
    ) -> crate::Result<SeekTable> {
        let bad = |why: String| crate::Error::integrity(format!("zstd seek table: {why}"));
        if len < table_len(1) {
            return Err(bad(
                "the payload is too short to end with a seek table".into()
            ));
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        read_at(len - FOOTER_LEN, &mut footer)?;
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if u32_at(&footer, 5) != SEEKABLE_MAGIC {
            return Err(bad(
                "no seek table at the end of the payload (not a version 3 vault?)".into(),
            ));
        }
        if footer[4] != 0 {
            return Err(bad(format!("descriptor {:#04x}, expected 0", footer[4])));
        }
        let n = u64::from(u32_at(&footer, 0));
        if n == 0 || n > MAX_FRAMES {
            return Err(bad(format!("{n} frames (1 to {MAX_FRAMES} allowed)")));
        }
        let tlen = table_len(n);
        if tlen > len {
            return Err(bad(format!("{n} frames do not fit in the payload")));
        }
        let start = len - tlen;
        let mut head = [0u8; 8];
        read_at(start, &mut head)?;
        if u32_at(&head, 0) != SKIPPABLE_SEEK_MAGIC || u64::from(u32_at(&head, 4)) != tlen - 8 {
            return Err(bad("the skippable frame around it is malformed".into()));
        }
        let mut c_start = Vec::with_capacity(n as usize + 1);
        let mut d_start = Vec::with_capacity(n as usize + 1);
        let (mut c, mut d) = (0u64, 0u64);
        c_start.push(0);
        d_start.push(0);
        // Read the entries in slices: the table can be large (8 bytes a
        // frame) and is not kept.
        let mut buf = vec![0u8; 8 * 8192];
        let mut i = 0u64;
        while i < n {
            let k = (n - i).min(8192);
            let slice = &mut buf[..8 * k as usize];
            read_at(start + 8 + 8 * i, slice)?;
            for e in slice.chunks_exact(8) {
                let (cs, ds) = (u64::from(u32_at(e, 0)), u64::from(u32_at(e, 4)));
                if cs == 0 || ds == 0 || ds > MAX_FRAME {
                    return Err(bad(format!(
                        "frame {} has compressed size {cs} and decompressed size {ds} (1 to {MAX_FRAME} allowed)",
                        c_start.len() - 1
                    )));
                }
                c += cs;
                d += ds;
                c_start.push(c);
                d_start.push(d);
            }
            i += k;
        }
        if c != start {
            return Err(bad(format!(
                "its frames add up to {c} bytes, but {start} bytes precede it"
            )));
        }
        Ok(SeekTable { c_start, d_start })
    }

    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.c_start.len() - 1
    }

    /// Length of the decompressed stream (the tar stream).
    pub fn decompressed_len(&self) -> u64 {
        *self.d_start.last().expect("at least one entry")
    }

    /// The frame holding decompressed offset `off` (< the length).
    pub fn frame_of(&self, off: u64) -> usize {
        // The last start <= off.
        self.d_start.partition_point(|&s| s <= off) - 1
    }

    /// Frame `i`: compressed offset and size, decompressed offset and size.
    pub fn frame(&self, i: usize) -> (u64, u64, u64, u64) {
        (
            self.c_start[i],
            self.c_start[i + 1] - self.c_start[i],
            self.d_start[i],
            self.d_start[i + 1] - self.d_start[i],
        )
    }
}

/// A zstd decompression context, for [`decompress_frame`].
pub type Dctx = zstd::zstd_safe::DCtx<'static>;

/// A new [`Dctx`].
pub fn new_dctx() -> Dctx {
    zstd::zstd_safe::DCtx::create()
}

/// Decompress one frame of a seek table (FORMAT §13.3 step 2): `src` must
/// be exactly one zstd frame declaring `size` bytes, and decompress to
/// exactly that many, with a window of at most 8 MiB. `dctx` is reused.
pub fn decompress_frame(
    dctx: &mut zstd::zstd_safe::DCtx<'static>,
    src: &[u8],
    size: u64,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    use zstd::zstd_safe;
    match zstd_safe::find_frame_compressed_size(src) {
        Ok(n) if n == src.len() => {}
        Ok(n) => {
            return Err(format!(
                "holds {n} bytes of zstd frame, the seek table says {}",
                src.len()
            ))
        }
        Err(e) => {
            return Err(format!(
                "is not a zstd frame ({})",
                zstd_safe::get_error_name(e)
            ))
        }
    }
    match zstd_safe::get_frame_content_size(src) {
        Ok(Some(n)) if n == size => {}
        Ok(Some(n)) => return Err(format!("declares {n} bytes, the seek table says {size}")),
        Ok(None) => return Err("does not declare its size".into()),
        Err(_) => return Err("has a malformed header".into()),
    }
    out.clear();
    out.reserve_exact(size as usize);
    // One shot into exactly `size` bytes of room: a frame that would
    // produce more fails (the output is its own window, at most 8 MiB).
    let got = dctx.decompress(out, src).map_err(|e| {
        format!(
            "does not decompress to {size} bytes ({})",
            zstd_safe::get_error_name(e)
        )
    })?;
    if got as u64 != size {
        return Err(format!(
            "decompresses to {got} bytes, the seek table says {size}"
        ));
    }
    Ok(())
}

/// What [`FramedDecoder`] saw: every frame's sizes (as a hash of seek
/// table entries) and every skippable frame (FORMAT §13.2).
#[derive(Debug, Default)]
pub struct FrameLog {
    pub frames: u64,
    pub max_decompressed: u64,
    /// A frame without `Frame_Content_Size`.
    pub missing_content_size: bool,
    /// A frame whose compressed or decompressed size does not fit a table
    /// entry (u32).
    pub oversized: bool,
    /// SHA-256 of the seek table entries these frames call for.
    entries: Sha256,
    pub skippable: u64,
    /// A zstd frame after a skippable frame.
    pub frame_after_skippable: bool,
    /// The last skippable frame: magic, content length, SHA-256 of its
    /// content but the last 9 bytes, and those 9 bytes.
    table: Option<(u32, u64, [u8; 32], [u8; 9])>,
}

impl FrameLog {
    /// Check a version 3 vault's frames against its seek table (FORMAT
    /// §13.2); `Err` names the first rule broken.
    pub fn check_v3(&self) -> Result<(), String> {
        if self.oversized || self.max_decompressed > MAX_FRAME {
            return Err(format!("a zstd frame holds more than {MAX_FRAME} bytes"));
        }
        if self.missing_content_size {
            return Err("a zstd frame does not declare its size".into());
        }
        if self.skippable != 1 || self.frame_after_skippable {
            return Err("the zstd stream does not end with exactly one seek table".into());
        }
        let Some((magic, body, entries, footer)) = &self.table else {
            return Err("the zstd stream has no seek table".into());
        };
        let count = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
        let seekable = u32::from_le_bytes([footer[5], footer[6], footer[7], footer[8]]);
        if *magic != SKIPPABLE_SEEK_MAGIC || seekable != SEEKABLE_MAGIC || footer[4] != 0 {
            return Err("the seek table is malformed".into());
        }
        let expected: [u8; 32] = self.entries.clone().finalize().into();
        if u64::from(count) != self.frames
            || *body != table_len(self.frames) - 8
            || *entries != expected
        {
            return Err(format!(
                "the seek table does not describe the {} zstd frames of the payload",
                self.frames
            ));
        }
        Ok(())
    }
}

/// The shared log a [`FramedDecoder`] writes (it runs on another thread).
pub type SharedLog = Arc<Mutex<FrameLog>>;

/// Skippable frame being consumed.
struct Skip {
    left: u64,
    magic: u32,
    body: u64,
    hash: Sha256,
    tail: [u8; 9],
    tail_len: usize,
}

/// A streaming zstd decoder (any number of frames, skippable frames
/// skipped) that records each frame's compressed and decompressed size in
/// a [`FrameLog`]. Errors: `InvalidData` for anything that does not decode,
/// `UnexpectedEof` for a stream that ends inside a frame.
pub struct FramedDecoder<R> {
    inner: R,
    dctx: zstd::zstd_safe::DCtx<'static>,
    inbuf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    in_frame: bool,
    cur_c: u64,
    cur_d: u64,
    cur_fcs: Option<u64>,
    skip: Option<Skip>,
    log: SharedLog,
}

fn bad_data(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl<R: Read> FramedDecoder<R> {
    pub fn new(inner: R) -> io::Result<(Self, SharedLog)> {
        use zstd::zstd_safe;
        let mut dctx = zstd_safe::DCtx::create();
        dctx.set_parameter(zstd_safe::DParameter::WindowLogMax(
            crate::format::ZSTD_WINDOW_LOG_MAX,
        ))
        .map_err(|e| io::Error::other(zstd_safe::get_error_name(e)))?;
        let log = SharedLog::default();
        Ok((
            FramedDecoder {
                inner,
                dctx,
                inbuf: vec![0u8; 128 * 1024],
                pos: 0,
                len: 0,
                eof: false,
                in_frame: false,
                cur_c: 0,
                cur_d: 0,
                cur_fcs: None,
                skip: None,
                log: Arc::clone(&log),
            },
            log,
        ))
    }

    /// Make at least `want` bytes available (fewer only at EOF).
    fn fill(&mut self, want: usize) -> io::Result<()> {
        if self.len - self.pos >= want || self.eof {
            return Ok(());
        }
        self.inbuf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        while self.len < want && !self.eof {
            match crate::io::retry(|| self.inner.read(&mut self.inbuf[self.len..])) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn avail(&self) -> usize {
        self.len - self.pos
    }

    fn log(&self) -> std::sync::MutexGuard<'_, FrameLog> {
        self.log.lock().expect("frame log lock is never poisoned")
    }

    /// At a frame boundary: start the next frame. `Ok(false)` at the end.
    fn start_frame(&mut self) -> io::Result<bool> {
        use zstd::zstd_safe;
        self.fill(8)?;
        if self.avail() == 0 {
            return Ok(false);
        }
        if self.avail() < 4 {
            return Err(bad_data(
                "the zstd stream ends inside a frame header".into(),
            ));
        }
        let b = &self.inbuf[self.pos..self.len];
        let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if is_skippable(magic) {
            if self.avail() < 8 {
                return Err(bad_data(
                    "the zstd stream ends inside a skippable frame".into(),
                ));
            }
            let body = u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]]));
            self.pos += 8;
            self.log().skippable += 1;
            self.skip = Some(Skip {
                left: body,
                magic,
                body,
                hash: Sha256::new(),
                tail: [0; 9],
                tail_len: 0,
            });
            return Ok(true);
        }
        if magic != u32::from_le_bytes(crate::format::ZSTD_MAGIC) {
            return Err(bad_data(
                "the payload holds data that is not a zstd frame".into(),
            ));
        }
        self.fill(18)?;
        self.cur_fcs = zstd_safe::get_frame_content_size(&self.inbuf[self.pos..self.len])
            .ok()
            .flatten();
        {
            let mut log = self.log();
            if log.skippable > 0 {
                log.frame_after_skippable = true;
            }
        }
        self.dctx
            .reset(zstd_safe::ResetDirective::SessionOnly)
            .map_err(|e| io::Error::other(zstd_safe::get_error_name(e)))?;
        self.in_frame = true;
        self.cur_c = 0;
        self.cur_d = 0;
        Ok(true)
    }

    fn end_frame(&mut self) {
        let (c, d) = (self.cur_c, self.cur_d);
        let missing = self.cur_fcs.is_none();
        self.in_frame = false;
        let mut log = self.log();
        log.frames += 1;
        log.max_decompressed = log.max_decompressed.max(d);
        log.missing_content_size |= missing;
        if c > u64::from(u32::MAX) || d > u64::from(u32::MAX) {
            log.oversized = true;
        }
        log.entries.update((c as u32).to_le_bytes());
        log.entries.update((d as u32).to_le_bytes());
    }

    /// Consume skippable frame content; returns when it is done.
    fn skip_some(&mut self) -> io::Result<()> {
        let Some(mut s) = self.skip.take() else {
            return Ok(());
        };
        while s.left > 0 {
            self.fill(1)?;
            if self.avail() == 0 {
                return Err(bad_data(
                    "the zstd stream ends inside a skippable frame".into(),
                ));
            }
            let k = (self.avail() as u64).min(s.left) as usize;
            let data = &self.inbuf[self.pos..self.pos + k];
            // Hash all but the content's last 9 bytes, which are kept.
            let from_end = s.left; // bytes left before this slice is taken
            for (j, &byte) in data.iter().enumerate() {
                let rem = from_end - j as u64; // bytes left including this one
                if rem <= 9 {
                    let idx = (9 - rem) as usize;
                    s.tail[idx] = byte;
                    s.tail_len = s.tail_len.max(idx + 1);
                } else {
                    s.hash.update([byte]);
                }
            }
            self.pos += k;
            s.left -= k as u64;
        }
        let hash: [u8; 32] = s.hash.finalize().into();
        let tail = if s.body >= 9 { s.tail } else { [0u8; 9] };
        self.log().table = Some((s.magic, s.body, hash, tail));
        Ok(())
    }
}

impl<R: Read> Read for FramedDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use zstd::zstd_safe;
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.skip.is_some() {
                self.skip_some()?;
                continue;
            }
            if !self.in_frame {
                if !self.start_frame()? {
                    return Ok(0);
                }
                continue;
            }
            let mut inb = zstd_safe::InBuffer::around(&self.inbuf[self.pos..self.len]);
            let mut outb = zstd_safe::OutBuffer::around(&mut *out);
            let hint = self
                .dctx
                .decompress_stream(&mut outb, &mut inb)
                .map_err(|e| bad_data(format!("zstd: {}", zstd_safe::get_error_name(e))))?;
            let (consumed, produced) = (inb.pos(), outb.pos());
            self.pos += consumed;
            self.cur_c += consumed as u64;
            self.cur_d += produced as u64;
            if hint == 0 {
                self.end_frame();
            }
            if produced > 0 {
                return Ok(produced);
            }
            if hint != 0 && consumed == 0 {
                self.fill(1)?;
                if self.avail() == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the zstd stream ends inside a frame",
                    ));
                }
            }
        }
    }
}

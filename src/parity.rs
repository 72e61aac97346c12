//! Parity for key-less repair: `VAULT.par` (FORMAT §15, issue #16).
//!
//! The vault's bytes, exactly as stored, are cut into shards of
//! [`SHARD_BYTES`]; consecutive shards form stripes of at most
//! [`STRIPE_SHARDS`]; each stripe gets `ceil(k × PERCENT / 100)`
//! Reed–Solomon recovery shards (`reed-solomon-simd`, high rate) and a
//! table of CRC-32s that tells which shards rotted. Nothing here needs or
//! sees a key: the parity is computed over ciphertext.
//!
//! [`Builder`] is a streaming sink: seal feeds it the ciphertext as it is
//! written, so a 500 GB vault needs one stripe of memory (32 MiB of data
//! plus the coder's work space), never the vault. [`ParFile`] reads a parity
//! file defensively: every table and both geometry blocks carry their own
//! SHA-256, and a damaged one costs only what it describes.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use reed_solomon_simd::engine::{tables, DefaultEngine, Engine, ShardsRefMut, GF_MODULUS};
use reed_solomon_simd::rate::{
    HighRate, HighRateDecoder, HighRateEncoder, Rate, RateDecoder, RateEncoder,
};
use sha2::{Digest, Sha256};

use crate::direct::{Aligned, Chunk, DirectFile, Sink, CHUNK};
use crate::{Error, Result};

/// Shard size casevault writes: a disk sector, so scattered rot costs one
/// shard per damaged sector.
pub const SHARD_BYTES: u32 = 4096;
/// Data shards per stripe casevault writes: 32 MiB stripes, so a seal
/// with parity holds at most one stripe and the coder's work space.
pub const STRIPE_SHARDS: u32 = 8192;
/// Length of the header and of the trailer.
pub const BLOCK_LEN: usize = 128;

const MAGIC: &[u8; 8] = b"CVPARITY";
const TABLE_MAGIC: &[u8; 8] = b"CVPARTBL";
const KIND_HEADER: u32 = 1;
const KIND_TRAILER: u32 = 2;
const VERSION: u32 = 1;
/// Largest shard a reader accepts (FORMAT §15.1).
const MAX_SHARD: u32 = 1 << 20;
/// Most data shards per stripe a reader accepts (the high-rate coder's
/// limit with as many recovery shards).
const MAX_STRIPE: u32 = 32768;
/// Most bytes per stripe a reader accepts: a repair holds one stripe and
/// its coder's work space, so a crafted geometry must not ask for more.
const MAX_STRIPE_BYTES: u64 = 1 << 27;

/// [`STRIPE_SHARDS`]; in debug builds (the tests),
/// `CASEVAULT_PARITY_STRIPE_SHARDS` (1 to 32768) overrides it so that
/// vaults of several stripes are exercised without 32 MiB per stripe
/// (docs/TESTING.md). A release build always writes [`STRIPE_SHARDS`].
fn stripe_shards() -> u32 {
    #[cfg(debug_assertions)]
    if let Some(v) = std::env::var("CASEVAULT_PARITY_STRIPE_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| (1..=MAX_STRIPE).contains(v))
    {
        return v;
    }
    STRIPE_SHARDS
}

/// The path of a vault's parity file: `VAULT.par`.
pub fn path(vault: &Path) -> PathBuf {
    let mut s = vault.as_os_str().to_owned();
    s.push(".par");
    PathBuf::from(s)
}

/// Shard size, stripe length and percentage: everything that fixes where
/// each table and recovery shard lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub shard: u32,
    pub stripe: u32,
    pub percent: u32,
}

impl Geometry {
    /// The geometry casevault writes for `percent` (checked: 1 to 100).
    pub fn new(percent: u32) -> Result<Geometry> {
        let g = Geometry {
            shard: SHARD_BYTES,
            stripe: stripe_shards(),
            percent,
        };
        if !g.valid() {
            return Err(Error::Usage(format!(
                "--parity {percent}: give a percentage from 1 to 100"
            )));
        }
        Ok(g)
    }

    fn valid(&self) -> bool {
        self.shard > 0
            && self.shard % 64 == 0
            && self.shard <= MAX_SHARD
            && (1..=MAX_STRIPE).contains(&self.stripe)
            && self.stripe_bytes() <= MAX_STRIPE_BYTES
            && (1..=100).contains(&self.percent)
    }

    /// Recovery shards for a stripe of `k` data shards.
    pub fn recovery_for(&self, k: u32) -> u32 {
        ((k as u64 * self.percent as u64).div_ceil(100)) as u32
    }

    fn stripe_bytes(&self) -> u64 {
        self.shard as u64 * self.stripe as u64
    }

    /// Number of stripes of a vault of `len` bytes.
    pub fn stripes(&self, len: u64) -> u64 {
        len.div_ceil(self.stripe_bytes())
    }

    /// Data shards in stripe `i` of a vault of `len` bytes.
    fn k_of(&self, i: u64, len: u64) -> u32 {
        let start = i * self.stripe_bytes();
        let bytes = (len - start).min(self.stripe_bytes());
        bytes.div_ceil(self.shard as u64) as u32
    }

    fn section_len(&self, k: u32) -> u64 {
        2 * table_len(k, self.recovery_for(k)) as u64
            + self.recovery_for(k) as u64 * self.shard as u64
    }

    /// Offset of stripe `i`'s section in the parity file (every stripe
    /// before it is full).
    fn section_at(&self, i: u64) -> u64 {
        BLOCK_LEN as u64 + i * self.section_len(self.stripe)
    }

    /// Length of the parity file of a vault of `len` bytes (saturating:
    /// a crafted trailer may claim any length).
    pub fn par_len(&self, len: u64) -> u64 {
        let n = self.stripes(len);
        let last = if n == 0 {
            0
        } else {
            self.section_len(self.k_of(n - 1, len))
        };
        let full = n.saturating_sub(1) as u128 * self.section_len(self.stripe) as u128;
        let total = 2 * BLOCK_LEN as u128 + full + last as u128;
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

fn table_len(k: u32, m: u32) -> usize {
    64 + 4 * k as usize + 4 * m as usize
}

/// The header or trailer (FORMAT §15.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub geometry: Geometry,
    pub vault_len: u64,
    pub stripes: u64,
    pub vault_sha256: [u8; 32],
}

impl Block {
    fn encode(&self, kind: u32) -> [u8; BLOCK_LEN] {
        let mut b = [0u8; BLOCK_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&kind.to_le_bytes());
        b[12..16].copy_from_slice(&VERSION.to_le_bytes());
        b[16..20].copy_from_slice(&self.geometry.shard.to_le_bytes());
        b[20..24].copy_from_slice(&self.geometry.stripe.to_le_bytes());
        b[24..28].copy_from_slice(&self.geometry.percent.to_le_bytes());
        b[32..40].copy_from_slice(&self.vault_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.stripes.to_le_bytes());
        b[48..80].copy_from_slice(&self.vault_sha256);
        let d = Sha256::digest(&b[..96]);
        b[96..].copy_from_slice(&d);
        b
    }

    /// Parse a block of `kind`; `None` if its digest, magic, kind, version
    /// or geometry is wrong.
    fn parse(b: &[u8], kind: u32) -> Option<Block> {
        if b.len() != BLOCK_LEN || Sha256::digest(&b[..96])[..] != b[96..] {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        if &b[0..8] != MAGIC || u32_at(8) != kind || u32_at(12) != VERSION || u32_at(28) != 0 {
            return None;
        }
        if b[80..96].iter().any(|&x| x != 0) {
            return None;
        }
        let geometry = Geometry {
            shard: u32_at(16),
            stripe: u32_at(20),
            percent: u32_at(24),
        };
        let block = Block {
            geometry,
            vault_len: u64_at(32),
            stripes: u64_at(40),
            vault_sha256: b[48..80].try_into().unwrap(),
        };
        let consistent = match kind {
            KIND_HEADER => {
                block.vault_len == 0 && block.stripes == 0 && block.vault_sha256 == [0; 32]
            }
            _ => block.vault_len > 0 && block.stripes == geometry.stripes(block.vault_len),
        };
        (geometry.valid() && consistent).then_some(block)
    }
}

/// One stripe's table: which CRC each data and recovery shard must have.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Table {
    index: u64,
    bytes: u64,
    data: Vec<u32>,
    recovery: Vec<u32>,
}

impl Table {
    fn encode(&self) -> Vec<u8> {
        let mut t = Vec::with_capacity(table_len(
            self.data.len() as u32,
            self.recovery.len() as u32,
        ));
        t.extend_from_slice(TABLE_MAGIC);
        t.extend_from_slice(&self.index.to_le_bytes());
        t.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        t.extend_from_slice(&(self.recovery.len() as u32).to_le_bytes());
        t.extend_from_slice(&self.bytes.to_le_bytes());
        for c in self.data.iter().chain(&self.recovery) {
            t.extend_from_slice(&c.to_le_bytes());
        }
        let d = Sha256::digest(&t);
        t.extend_from_slice(&d);
        t
    }

    /// Parse a table that must describe stripe `index` with `k` data and
    /// `m` recovery shards (holding `bytes` vault bytes, if given).
    fn parse(t: &[u8], index: u64, k: u32, m: u32, bytes: Option<u64>) -> Option<Table> {
        if t.len() != table_len(k, m) {
            return None;
        }
        let (body, digest) = t.split_at(t.len() - 32);
        if Sha256::digest(body)[..] != *digest || &body[0..8] != TABLE_MAGIC {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().unwrap());
        let fields = (u64_at(8), u32_at(16), u32_at(20));
        if fields != (index, k, m) || bytes.is_some_and(|b| u64_at(24) != b) {
            return None;
        }
        let crcs: Vec<u32> = (0..(k + m) as usize).map(|j| u32_at(32 + 4 * j)).collect();
        let (data, recovery) = crcs.split_at(k as usize);
        Some(Table {
            index,
            bytes: u64_at(24),
            data: data.to_vec(),
            recovery: recovery.to_vec(),
        })
    }
}

fn crc(shard: &[u8]) -> u32 {
    crc32fast::hash(shard)
}

fn rs_error(e: reed_solomon_simd::Error) -> io::Error {
    io::Error::other(format!("Reed-Solomon coder: {e}"))
}

/// Writes a parity file for bytes fed to it in order, into any writer;
/// holds one stripe. The bytes are kept in the [`Chunk`]s they came in
/// ([`Builder::push`]: seal's output thread hands over each chunk it has
/// written; [`Builder::update`] copies into chunks of its own), and each
/// shard goes to the coder from there: no stripe buffer, no copy.
pub struct Builder<W: Write> {
    g: Geometry,
    out: W,
    /// The current stripe's bytes: `(chunk, from, to)`, in order.
    pieces: std::collections::VecDeque<(Chunk, usize, usize)>,
    /// Bytes in `pieces`.
    queued: u64,
    /// Chunks whose bytes are all coded, for reuse.
    spent: Vec<Chunk>,
    /// A block of shards not whole inside one chunk (across chunks, or a
    /// stripe's short last block), gathered and padded with zeros.
    gather: Vec<[u8; 64]>,
    /// The XOR of the stripe's transformed blocks (see `flush_stripe`).
    acc: Vec<[u8; 64]>,
    engine: DefaultEngine,
    index: u64,
    total: u64,
}

/// Move the front piece to `spent` once all of it is coded.
fn retire_front(
    pieces: &mut std::collections::VecDeque<(Chunk, usize, usize)>,
    spent: &mut Vec<Chunk>,
) {
    if pieces.front().is_some_and(|(_, from, to)| from == to) {
        let (c, _, _) = pieces.pop_front().expect("checked above");
        spent.push(c);
    }
}

impl<W: Write> Builder<W> {
    /// Start a parity file: writes its header.
    pub fn new(g: Geometry, mut out: W) -> io::Result<Builder<W>> {
        let header = Block {
            geometry: g,
            vault_len: 0,
            stripes: 0,
            vault_sha256: [0; 32],
        };
        out.write_all(&header.encode(KIND_HEADER))?;
        Ok(Builder {
            g,
            out,
            pieces: Default::default(),
            queued: 0,
            spent: Vec::new(),
            gather: Vec::new(),
            acc: Vec::new(),
            engine: DefaultEngine::new(),
            index: 0,
            total: 0,
        })
    }

    /// Feed the next bytes of the vault (copied).
    pub fn update(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let room = match self.pieces.back() {
                Some((_, _, to)) if *to < CHUNK => CHUNK - to,
                _ => {
                    let c = self.spent.pop().unwrap_or_default();
                    self.pieces.push_back((c, 0, 0));
                    CHUNK
                }
            };
            let n = room.min(buf.len());
            let (c, _, to) = self.pieces.back_mut().expect("a piece was just made");
            c.bytes_mut()[*to..*to + n].copy_from_slice(&buf[..n]);
            *to += n;
            buf = &buf[n..];
            self.queued += n as u64;
            self.total += n as u64;
            self.flush_full()?;
        }
        Ok(())
    }

    /// Feed the next `len` bytes of the vault: the start of `chunk`,
    /// which the builder keeps until they are coded.
    pub fn push(&mut self, chunk: Chunk, len: usize) -> io::Result<()> {
        self.pieces.push_back((chunk, 0, len));
        self.queued += len as u64;
        self.total += len as u64;
        self.flush_full()
    }

    /// Chunks whose bytes are coded, to be filled again.
    pub fn take_spent(&mut self) -> std::vec::Drain<'_, Chunk> {
        self.spent.drain(..)
    }

    fn flush_full(&mut self) -> io::Result<()> {
        while self.queued >= self.g.stripe_bytes() {
            self.flush_stripe(self.g.stripe_bytes())?;
        }
        Ok(())
    }

    /// Code the next `bytes` (a stripe, or what is left at the end) and
    /// write the stripe's section.
    ///
    /// This is the crate's high-rate encoder (`HighRateEncoder::encode`,
    /// reed-solomon-simd 3.1) composed from its public engine, so that
    /// the shards are transformed where they lie instead of being copied
    /// into the encoder first: the stripe's `k` data shards are taken in
    /// blocks of `cs` = the next power of two ≥ `m`; block `j` (shards
    /// `j·cs …`, zero-padded to `cs`) gets the IFFT with skew `(j+1)·cs`;
    /// the blocks' XOR gets the FFT, whose first `m` shards are the
    /// recovery shards. A chunk is written to the vault before it reaches
    /// the builder and only refilled after, so its bytes may be
    /// overwritten here. `tests::the_coder_is_the_crates_high_rate_encoder`
    /// holds it to the crate's encoder.
    fn flush_stripe(&mut self, bytes: u64) -> io::Result<()> {
        let s = self.g.shard as usize;
        let s64 = s / 64;
        let k = (bytes as usize).div_ceil(s);
        let m = self.g.recovery_for(k as u32) as usize;
        if !HighRate::<DefaultEngine>::supports(k, m) {
            return Err(io::Error::other(format!(
                "Reed-Solomon coder: {k} data and {m} recovery shards are not supported"
            )));
        }
        let cs = m.next_power_of_two();
        let mut table = Table {
            index: self.index,
            bytes,
            data: Vec::with_capacity(k),
            recovery: Vec::with_capacity(m),
        };
        self.acc.clear();
        self.acc.resize(cs * s64, [0; 64]);
        let mut left = bytes as usize;
        let mut at = 0;
        while at < k {
            let n = cs.min(k - at);
            let want = left.min(n * s);
            let (c, from, to) = self.pieces.front_mut().expect("queued bytes are in pieces");
            let block: &mut [[u8; 64]] = if want == cs * s && *to - *from >= want {
                // The common case: a whole block inside one chunk.
                let b = &mut c.bytes_mut()[*from..*from + want];
                *from += want;
                bytemuck::cast_slice_mut(b)
            } else {
                // The vault's last shard is padded with zeros too
                // (FORMAT §15.1).
                self.gather.clear();
                self.gather.resize(cs * s64, [0; 64]);
                let g = self.gather.as_flattened_mut();
                let mut got = 0;
                while got < want {
                    let (c, from, to) =
                        self.pieces.front_mut().expect("queued bytes are in pieces");
                    let take = (*to - *from).min(want - got);
                    g[got..got + take].copy_from_slice(&c.bytes()[*from..*from + take]);
                    *from += take;
                    got += take;
                    retire_front(&mut self.pieces, &mut self.spent);
                }
                &mut self.gather
            };
            table
                .data
                .extend(block.as_flattened()[..n * s].chunks(s).map(crc));
            let mut shards = ShardsRefMut::new(cs, s64, block);
            self.engine.ifft(&mut shards, 0, cs, n, at + cs);
            reed_solomon_simd::engine::utils::xor(&mut self.acc, block);
            retire_front(&mut self.pieces, &mut self.spent);
            left -= want;
            at += n;
        }
        self.queued -= bytes;
        self.engine
            .fft(&mut ShardsRefMut::new(cs, s64, &mut self.acc), 0, cs, m, 0);
        let recovery = self.acc[..m * s64].as_flattened();
        table.recovery = recovery.chunks(s).map(crc).collect();
        let t = table.encode();
        self.out.write_all(&t)?;
        self.out.write_all(recovery)?;
        self.out.write_all(&t)?;
        self.index += 1;
        Ok(())
    }

    /// Finish with the vault's SHA-256: the last stripe and the trailer.
    /// Returns the writer (not flushed or synced).
    pub fn finish(mut self, vault_sha256: [u8; 32]) -> io::Result<W> {
        if self.queued > 0 {
            self.flush_stripe(self.queued)?;
        }
        let trailer = Block {
            geometry: self.g,
            vault_len: self.total,
            stripes: self.index,
            vault_sha256,
        };
        self.out.write_all(&trailer.encode(KIND_TRAILER))?;
        Ok(self.out)
    }
}

/// A [`Builder`] on a thread of its own, handed each chunk seal's output
/// thread has written (parity is computed beside the writing instead of
/// after it), and handing chunks back for reuse. At most [`IN_FLIGHT`]
/// chunks wait.
pub struct Worker<W: Write + Send + 'static> {
    tx: Option<std::sync::mpsc::SyncSender<(Chunk, usize)>>,
    /// Chunks the thread is done with: fresh allocations of every chunk
    /// cost more page faults than the parity's arithmetic.
    free: std::sync::mpsc::Receiver<Chunk>,
    handle: Option<std::thread::JoinHandle<io::Result<Builder<W>>>>,
}

/// Chunks queued for the parity thread (4 MiB each). The thread codes a
/// stripe in one burst once its last chunk is in (the coder works on whole
/// stripes); the queue must hold what seal writes meanwhile, or seal's
/// output thread, and with it the whole pipeline, waits. 16 MiB, as the
/// 16 pipeline buffers measured before (PERFORMANCE.md).
const IN_FLIGHT: usize = 4;

/// Chunks in use at most: those queued, those of the stripe being
/// gathered (32 MiB), and the one the writer fills. The free list holds
/// as many, so that none is dropped and allocated again.
const CHUNKS_IN_USE: usize = IN_FLIGHT + (32 << 20) / CHUNK + 2;

impl<W: Write + Send + 'static> Worker<W> {
    pub fn spawn(mut builder: Builder<W>) -> io::Result<Worker<W>> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Chunk, usize)>(IN_FLIGHT);
        let (free_tx, free) = std::sync::mpsc::sync_channel::<Chunk>(CHUNKS_IN_USE);
        let handle = std::thread::Builder::new()
            .name("casevault-parity".into())
            .spawn(move || {
                for (chunk, len) in rx {
                    builder.push(chunk, len)?;
                    for c in builder.take_spent() {
                        // Full: the chunk is dropped instead.
                        let _ = free_tx.try_send(c);
                    }
                }
                Ok(builder)
            })?;
        Ok(Worker {
            tx: Some(tx),
            free,
            handle: Some(handle),
        })
    }

    /// Hand over `chunk`, of which the first `len` bytes are the vault's
    /// next; returns an empty chunk to fill next.
    pub fn send(&mut self, chunk: Chunk, len: usize) -> io::Result<Chunk> {
        let sent = self.tx.as_ref().map(|tx| tx.send((chunk, len)));
        match sent {
            Some(Ok(())) => Ok(self.free.try_recv().unwrap_or_default()),
            // The thread stopped: its error says why.
            _ => Err(self
                .stop()
                .err()
                .unwrap_or_else(|| io::Error::other("the parity thread stopped"))),
        }
    }

    fn stop(&mut self) -> io::Result<Builder<W>> {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("the parity thread stopped")),
        }
    }

    /// Wait for every queued chunk; the builder, to be finished.
    pub fn finish(mut self) -> io::Result<Builder<W>> {
        self.stop()
    }
}

/// A writer that passes everything to `inner` in whole aligned
/// [`Chunk`]s (around the page cache, where `inner` is a
/// [`crate::direct::DirectFile`] that allows it) and hands each chunk, once
/// written, to a parity [`Worker`]: the one copy into the chunk serves
/// both. With neither a direct file nor parity to feed, it passes writes
/// straight through.
pub struct Tee<W: Sink, P: Write + Send + 'static> {
    inner: W,
    parity: Option<Worker<P>>,
    /// The chunk being filled, and how far; `None`: pass-through.
    chunk: Option<Chunk>,
    fill: usize,
}

impl<W: Sink, P: Write + Send + 'static> Tee<W, P> {
    pub fn new(inner: W, parity: Option<Worker<P>>) -> Self {
        let staged = parity.is_some() || inner.direct();
        Tee {
            inner,
            parity,
            chunk: staged.then(Chunk::new),
            fill: 0,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Write the filled part of the chunk and hand it to the parity
    /// worker.
    fn write_chunk(&mut self) -> io::Result<()> {
        let Some(chunk) = self.chunk.as_mut() else {
            return Ok(());
        };
        let len = std::mem::take(&mut self.fill);
        self.inner.write_all(&chunk.bytes()[..len])?;
        if let Some(p) = &mut self.parity {
            let full = self.chunk.take().expect("checked above");
            self.chunk = Some(p.send(full, len)?);
        }
        Ok(())
    }

    /// Write what is left (the stream's last, partial chunk); the inner
    /// writer and the parity worker.
    pub fn into_parts(mut self) -> io::Result<(W, Option<Worker<P>>)> {
        if self.fill > 0 {
            self.write_chunk()?;
        }
        Ok((self.inner, self.parity))
    }
}

impl<W: Sink, P: Write + Send + 'static> Write for Tee<W, P> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(chunk) = self.chunk.as_mut() else {
            return self.inner.write(buf);
        };
        let n = buf.len().min(CHUNK - self.fill);
        chunk.bytes_mut()[self.fill..self.fill + n].copy_from_slice(&buf[..n]);
        self.fill += n;
        if self.fill == CHUNK {
            self.write_chunk()?;
        }
        Ok(n)
    }

    /// Nothing to do: a partial chunk waits for the rest of its bytes
    /// ([`Tee::into_parts`] writes the last one).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A [`Builder`] writing into a file: in whole chunks around the page
/// cache where the file system allows it, as the vault is (the parity is
/// fsynced before it is renamed into place, so the cache would only add a
/// copy and a reclaim per page: 1.8 % of a `seal --parity 5`'s CPU).
pub type FileBuilder = Builder<Tee<DirectFile<Box<fs::File>>, io::Sink>>;

impl FileBuilder {
    /// Start a parity file in `file` (a second handle on it, sharing its
    /// offset, is written).
    pub fn to_file(g: Geometry, file: &fs::File) -> io::Result<FileBuilder> {
        let handle = file.try_clone()?;
        Builder::new(g, Tee::new(DirectFile::new(Box::new(handle)), None))
    }

    /// Feed everything `r` yields (the whole vault) and finish the file;
    /// returns the vault's SHA-256. `read_err` and `write_err` name what
    /// failed.
    pub fn build(
        mut self,
        r: &mut dyn Read,
        read_err: &dyn Fn(io::Error) -> Error,
        write_err: &dyn Fn(io::Error) -> Error,
    ) -> Result<[u8; 32]> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; crate::io::BUF_SIZE];
        loop {
            crate::signal::check()?;
            let n = crate::io::retry(|| r.read(&mut buf)).map_err(read_err)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            self.update(&buf[..n]).map_err(write_err)?;
        }
        let digest = h.finalize().into();
        self.finish_file(digest).map_err(write_err)?;
        Ok(digest)
    }

    /// Finish with the vault's SHA-256 and write all of the file (not
    /// synced); `O_DIRECT` is off again.
    pub fn finish_file(self, vault_sha256: [u8; 32]) -> io::Result<()> {
        let (file, _) = self.finish(vault_sha256)?.into_parts()?;
        file.into_inner()?;
        Ok(())
    }
}

/// Write `VAULT.par` for the vault file at `vault`, atomically, with
/// permission bits `mode`. The caller syncs the directory.
pub fn write_for(vault: &Path, percent: u32, mode: u32) -> Result<()> {
    write_to(vault, &path(vault), percent, mode)
}

/// Write the parity file of the vault file at `vault` to `target`,
/// atomically (replacing it), with permission bits `mode`.
pub fn write_to(vault: &Path, target: &Path, percent: u32, mode: u32) -> Result<()> {
    let g = Geometry::new(percent)?;
    let file = crate::io::AtomicFile::create(target)?;
    file.set_mode(mode)?;
    let write_err = |e| Error::io("cannot write", target, e);
    let mut input = fs::File::open(vault).map_err(|e| Error::io("cannot open", vault, e))?;
    FileBuilder::to_file(g, file.file())
        .map_err(write_err)?
        .build(
            &mut input,
            &|e| Error::io("cannot read", vault, e),
            &write_err,
        )?;
    file.commit(true)
}

/// A parity file opened for reading: its geometry, and what of its own
/// structure survived.
pub struct ParFile {
    file: fs::File,
    path: PathBuf,
    len: u64,
    pub geometry: Geometry,
    /// The trailer, if its digest checks.
    pub trailer: Option<Block>,
    pub header_ok: bool,
}

/// What a parity file says about one stripe.
struct StripeTable {
    table: Option<Table>,
    /// Table copies whose digest failed (0, 1 or 2).
    bad_copies: u8,
}

impl ParFile {
    /// Open `path`; an error if neither geometry block is usable.
    pub fn open(path: &Path) -> Result<ParFile> {
        let file = fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot read", path, e))?;
        if !meta.is_file() {
            return Err(Error::Refused(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let len = meta.len();
        let mut head = [0u8; BLOCK_LEN];
        let header = match file.read_exact_at(&mut head, 0) {
            Ok(()) => Block::parse(&head, KIND_HEADER),
            Err(_) => None,
        };
        let mut tail = [0u8; BLOCK_LEN];
        let trailer = match len.checked_sub(BLOCK_LEN as u64) {
            Some(at) if len >= 2 * BLOCK_LEN as u64 => match file.read_exact_at(&mut tail, at) {
                Ok(()) => Block::parse(&tail, KIND_TRAILER),
                Err(_) => None,
            },
            _ => None,
        };
        // A trailer describes a parity file of one exact length.
        let trailer = trailer.filter(|t| t.geometry.par_len(t.vault_len) == len);
        let geometry = match (&header, &trailer) {
            (_, Some(t)) => t.geometry,
            (Some(h), None) => h.geometry,
            (None, None) => {
                return Err(Error::integrity(format!(
                "{}: both its header and its trailer are damaged; this parity file cannot be used",
                path.display()
            )))
            }
        };
        Ok(ParFile {
            file,
            path: path.to_path_buf(),
            len,
            geometry,
            header_ok: header.as_ref().is_some_and(|h| h.geometry == geometry),
            trailer,
        })
    }

    /// The vault length the parity file describes: the trailer's, or else
    /// the one its size and last table imply.
    fn vault_len(&self) -> Option<u64> {
        if let Some(t) = &self.trailer {
            return Some(t.vault_len);
        }
        let g = self.geometry;
        let body = self.len.checked_sub(2 * BLOCK_LEN as u64)?;
        let full = g.section_len(g.stripe);
        // Every stripe but the last is full; find the last one's k from
        // the remainder, then read its table for the exact byte count.
        let (n_full, rest) = (body / full, body % full);
        let (i, k) = if rest == 0 {
            (n_full.checked_sub(1)?, g.stripe)
        } else {
            let k = (1..g.stripe).find(|&k| g.section_len(k) == rest)?;
            (n_full, k)
        };
        // The byte count is what is sought: the table must only agree
        // with its shard count.
        let tb = self.read_table(i, k, None).table?;
        (tb.bytes.div_ceil(g.shard as u64) == k as u64).then(|| i * g.stripe_bytes() + tb.bytes)
    }

    /// The table of stripe `i` of a vault of `vault_len` bytes.
    fn table(&self, i: u64, vault_len: u64) -> StripeTable {
        let g = self.geometry;
        let bytes = (vault_len - i * g.stripe_bytes()).min(g.stripe_bytes());
        self.read_table(i, g.k_of(i, vault_len), Some(bytes))
    }

    /// The first copy of stripe `i`'s table (of `k` data shards, and
    /// `bytes` vault bytes if given) whose digest and fields check.
    fn read_table(&self, i: u64, k: u32, bytes: Option<u64>) -> StripeTable {
        let g = self.geometry;
        let m = g.recovery_for(k);
        let at = g.section_at(i);
        let len = table_len(k, m);
        let mut bad_copies = 0;
        let mut table = None;
        for copy_at in [at, at + len as u64 + m as u64 * g.shard as u64] {
            let mut t = vec![0u8; len];
            let parsed = self.file.read_exact_at(&mut t, copy_at).ok();
            match parsed.and_then(|()| Table::parse(&t, i, k, m, bytes)) {
                Some(tb) => {
                    table.get_or_insert(tb);
                }
                None => bad_copies += 1,
            }
        }
        StripeTable { table, bad_copies }
    }

    /// The recovery shards of stripe `i` (of `k` data shards) whose CRC
    /// is the one `table` gives, with their indices; one read.
    fn recovery(&self, i: u64, k: u32, table: &Table) -> Vec<(u32, Vec<u8>)> {
        let g = self.geometry;
        let (m, s) = (g.recovery_for(k), g.shard as usize);
        let at = g.section_at(i) + table_len(k, m) as u64;
        let mut all = vec![0u8; m as usize * s];
        let got = read_upto(&self.file, &mut all, at).unwrap_or(0);
        all.chunks_exact(s)
            .zip(&table.recovery)
            .enumerate()
            .filter(|(j, (r, want))| (j + 1) * s <= got && crc(r) == **want)
            .map(|(j, (r, _))| (j as u32, r.to_vec()))
            .collect()
    }
}

/// What `repair` found and did (`--json` object, docs/CLI.md).
#[derive(Debug, serde::Serialize)]
pub struct RepairReport {
    pub vault: PathBuf,
    pub parity: PathBuf,
    /// `clean`, `repaired` or `unrepairable`.
    pub outcome: &'static str,
    pub vault_bytes: u64,
    pub vault_sha256: String,
    /// Where the expected SHA-256 came from: `sidecar` or `parity trailer`.
    pub checked_against: &'static str,
    pub stripes: u64,
    pub damaged_shards: u64,
    pub repaired_shards: u64,
    /// Stripes with damage, each with its budget.
    pub damage: Vec<StripeDamage>,
    /// The state of the parity file itself.
    pub parity_state: ParityState,
    /// True when a damaged parity file was written anew from the (now
    /// intact) vault.
    pub parity_rewritten: bool,
    /// Why the vault could not be repaired (outcome `unrepairable`).
    pub problem: Option<String>,
    /// How the repaired vault was written (outcome `repaired`): `"clone"`
    /// (a reflink clone of the vault with the rebuilt shards written into
    /// it) or `"copy"` (every byte copied); `None` otherwise.
    pub rewrite: Option<&'static str>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct StripeDamage {
    pub stripe: u64,
    /// Byte offset of the stripe in the vault.
    pub offset: u64,
    pub damaged_data_shards: u64,
    pub usable_recovery_shards: u64,
    pub recovery_shards: u64,
    pub repairable: bool,
    /// The stripe's table could not be read: damage in it cannot be located.
    pub table_lost: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct ParityState {
    pub header_ok: bool,
    pub trailer_ok: bool,
    /// Stripes with one damaged table copy (the other one served).
    pub table_copies_damaged: u64,
    /// Stripes with both table copies damaged.
    pub tables_lost: u64,
    /// Recovery shards whose CRC fails (counted in stripes that were read).
    pub recovery_shards_damaged: u64,
}

impl ParityState {
    /// Whether any part of the parity file was found damaged.
    pub fn damaged(&self) -> bool {
        !self.header_ok
            || !self.trailer_ok
            || self.table_copies_damaged > 0
            || self.tables_lost > 0
            || self.recovery_shards_damaged > 0
    }
}

/// Read `len` bytes at `at` from `f`, as many as the file has; the rest
/// stays zero. Returns how many were read.
fn read_upto(f: &fs::File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(done)
}

/// Check `vault` against `par` and repair it if it is damaged and within
/// the budget (FORMAT §15.3). An `Err` is an I/O or usage problem; the
/// outcome `unrepairable` leaves every file as it was.
pub fn repair(vault: &Path, par_path: &Path) -> Result<RepairReport> {
    let par = ParFile::open(par_path)?;
    let vf = fs::File::open(vault).map_err(|e| Error::io("cannot open", vault, e))?;
    let vmeta = vf
        .metadata()
        .map_err(|e| Error::io("cannot read", vault, e))?;
    if !vmeta.is_file() {
        return Err(Error::Refused(format!(
            "{} is not a regular file",
            vault.display()
        )));
    }
    let (expected, checked_against) = expected_digest(vault, &par)?;
    let g = par.geometry;
    let Some(vault_len) = par.vault_len() else {
        return Err(Error::integrity(format!(
            "{}: its trailer and last table are damaged, so the vault's length is unknown; this parity file cannot be used",
            par_path.display()
        )));
    };
    let stripes = g.stripes(vault_len);
    let mut report = RepairReport {
        vault: vault.to_path_buf(),
        parity: par_path.to_path_buf(),
        outcome: "clean",
        vault_bytes: vault_len,
        vault_sha256: crate::io::hex(&expected),
        checked_against,
        stripes,
        damaged_shards: 0,
        repaired_shards: 0,
        damage: Vec::new(),
        parity_state: ParityState {
            header_ok: par.header_ok,
            trailer_ok: par.trailer.is_some(),
            ..ParityState::default()
        },
        parity_rewritten: false,
        problem: None,
        rewrite: None,
    };

    // One pass: each stripe is read once, checked by CRC, rebuilt where
    // damaged and hashed. Where the file system shares blocks (XFS,
    // btrfs), the repaired vault starts as a reflink clone taken before
    // anything is read, and the pass reads the clone itself (the bytes
    // that will be kept) and writes only the rebuilt shards into it: one
    // read in all. Elsewhere the pass reads the vault and, from the first
    // damage on, a second thread writes the rebuilt vault beside it
    // ([`copy_out`]), so that copying and writing back overlap with the
    // hashing; an intact vault is only read.
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        vmeta.permissions().mode() & 0o7777
    };
    let clone = reflink_clone(&vf, vault, mode);
    let passed = std::thread::scope(|scope| -> Result<_> {
        let mut pass = Pass::new(scope, &vf, vault, &par, vault_len, mode, clone)?;
        for i in 0..stripes {
            crate::signal::check()?;
            pass.stripe(i, &mut report)?;
        }
        if pass.beyond {
            return Ok(None);
        }
        // Bytes beyond the recorded length are damage too: rewrite
        // without them.
        pass.cut_to_length(vmeta.len())?;
        pass.finish().map(Some)
    })?;
    let Some((digest, out)) = passed else {
        return Ok(beyond_budget(report));
    };
    if digest != expected {
        let lost = report.parity_state.tables_lost > 0;
        let why = match (&out, lost) {
            (_, true) => "the vault's SHA-256 differs from the one recorded, and the damage lies where the parity file's tables are lost: it cannot be located; nothing was changed",
            (None, false) => "the vault's SHA-256 differs from the one recorded, but every shard matches its CRC: the damage is where the parity cannot see it, or the parity file belongs to another vault",
            (Some(_), false) => "the rebuilt vault's SHA-256 differs from the one recorded (damage the parity's CRCs missed, or a parity file of another vault); nothing was changed",
        };
        return Ok(unrepairable(report, why));
    }
    report.damage.retain(|d| !d.table_lost);
    let Some(out) = out else {
        rewrite_damaged_parity(vault, &vmeta, &par, &mut report)?;
        return Ok(report);
    };
    let (out, cloned) = out;
    if let Some(problem) = outer_signature_problem(vault, out.temp_path())? {
        return Ok(unrepairable(report, &problem));
    }
    out.commit(true)?;
    report.rewrite = Some(if cloned { "clone" } else { "copy" });
    crate::io::sync_parent_dir(vault)?;
    report.outcome = "repaired";
    report.repaired_shards = report.damaged_shards;
    rewrite_damaged_parity(vault, &vmeta, &par, &mut report)?;
    Ok(report)
}

/// The single pass of a repair over the vault's stripes.
struct Pass<'scope, 'env> {
    vault: &'env Path,
    par: &'env ParFile,
    vault_len: u64,
    mode: u32,
    /// The stripe being checked (taken from `ring`, and handed back to it).
    buf: Option<Aligned>,
    /// Reading ahead, hashing and writing, each on a thread of its own.
    ring: Ring<'scope>,
    /// The writing thread is writing the rebuilt vault (from the first
    /// damage on).
    copying: bool,
    /// A reflink clone of the vault, read instead of it; the rebuilt
    /// shards are written into it.
    clone: Option<crate::io::AtomicFile>,
    /// Something was written into the clone (or must be: its length).
    clone_changed: bool,
    decoder: Option<HighRateDecoder<DefaultEngine>>,
    /// Re-encodes stripes with one damaged shard ([`rebuild_one`]).
    encoder: Option<HighRateEncoder<DefaultEngine>>,
    /// A stripe was beyond its budget: stop writing, keep reporting.
    beyond: bool,
}

/// The rebuilt vault (not yet synced), and whether it began as a reflink
/// clone of the vault (only the rebuilt shards written into it).
type Written = (crate::io::AtomicFile, bool);

impl<'scope, 'env> Pass<'scope, 'env> {
    fn new(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        vf: &'env fs::File,
        vault: &'env Path,
        par: &'env ParFile,
        vault_len: u64,
        mode: u32,
        clone: Option<crate::io::AtomicFile>,
    ) -> Result<Pass<'scope, 'env>> {
        let src = match &clone {
            Some(c) => c.file().try_clone(),
            None => vf.try_clone(),
        }
        .map_err(|e| Error::io("cannot read", vault, e))?;
        let writer = Writer {
            vf,
            vault,
            par,
            vault_len,
        };
        let ring =
            Ring::spawn(scope, src, writer).map_err(|e| Error::io("cannot repair", vault, e))?;
        Ok(Pass {
            ring,
            clone,
            clone_changed: false,
            vault,
            par,
            vault_len,
            mode,
            buf: None,
            copying: false,
            decoder: None,
            encoder: None,
            beyond: false,
        })
    }

    /// Check stripe `i`, rebuild it if damaged, and send it on to be
    /// hashed (and written, if the rebuilt vault is being written).
    fn stripe(&mut self, i: u64, report: &mut RepairReport) -> Result<()> {
        if self.ring.writer_failed() {
            return Err(self.ring.writer_error());
        }
        let (buf, got) = match self.ring.next() {
            Ok(next) => next,
            Err(e) => {
                let path = self.clone.as_ref().map_or(self.vault, |c| c.temp_path());
                return Err(Error::io("cannot read", path, e));
            }
        };
        self.buf = Some(buf);
        self.check(i, got, report)?;
        // Not sent on (beyond the budget): back to the reader.
        if let Some(buf) = self.buf.take() {
            self.ring.recycle(buf);
        }
        Ok(())
    }

    /// [`Pass::stripe`] once the stripe's bytes are in `buf` (`got` of
    /// them read).
    fn check(&mut self, i: u64, got: usize, report: &mut RepairReport) -> Result<()> {
        let g = self.par.geometry;
        let s = g.shard as usize;
        let k = g.k_of(i, self.vault_len);
        let m = g.recovery_for(k);
        let start = i * g.stripe_bytes();
        let bytes = (self.vault_len - start).min(g.stripe_bytes()) as usize;
        let buf = self.buf.as_mut().expect("the stripe is in the buffer");
        let stripe = &mut buf[..k as usize * s];
        // The reader zeroed what the vault lacks; the padding of a short
        // last stripe is zeroed here.
        stripe[bytes..].fill(0);
        let st = self.par.table(i, self.vault_len);
        report.parity_state.table_copies_damaged += (st.bad_copies == 1) as u64;
        let Some(table) = st.table else {
            // Without a table, damage here cannot be located: only the
            // vault's digest can say whether there is any.
            report.parity_state.tables_lost += 1;
            report.damage.push(StripeDamage {
                stripe: i,
                offset: start,
                recovery_shards: m as u64,
                table_lost: true,
                ..StripeDamage::default()
            });
            return self.emit(i, bytes);
        };
        let bad = damaged_shards(stripe, s, got, &table.data);
        if bad.is_empty() {
            return self.emit(i, bytes);
        }
        let usable = self.par.recovery(i, k, &table);
        report.damaged_shards += bad.len() as u64;
        let repairable = usable.len() >= bad.len();
        report.damage.push(StripeDamage {
            stripe: i,
            offset: start,
            damaged_data_shards: bad.len() as u64,
            usable_recovery_shards: usable.len() as u64,
            recovery_shards: m as u64,
            repairable,
            table_lost: false,
        });
        // Beyond the budget: nothing more is written, and the writing
        // thread, which never gets the end of the pass, drops its
        // temporary file.
        self.beyond |= !repairable;
        if self.beyond {
            return Ok(());
        }
        if !self.copying && self.clone.is_none() {
            self.start_copy()?;
        }
        self.rebuild((k, m, s), &bad, &usable, &table.data)?;
        let buf = self.buf.as_ref().expect("the stripe is in the buffer");
        if let Some(c) = &self.clone {
            // The shards within the recorded length; the last one may be
            // short.
            for &j in &bad {
                let end = ((j + 1) * s).min(bytes);
                c.file()
                    .write_all_at(&buf[j * s..end], start + (j * s) as u64)
                    .map_err(|e| write_error(c, e))?;
            }
            self.clone_changed = true;
        }
        self.emit(i, bytes)
    }

    /// Rebuild the `bad` shards of the stripe in the buffer (`k` data and
    /// `m` recovery shards of `s` bytes; `crcs` the data shards' CRCs): a
    /// lone one from one recovery shard ([`rebuild_one`]), otherwise, or
    /// if that shard fails its CRC, with the decoder.
    fn rebuild(
        &mut self,
        (k, m, s): (u32, u32, usize),
        bad: &[usize],
        usable: &[(u32, Vec<u8>)],
        crcs: &[u32],
    ) -> Result<()> {
        let buf = self.buf.as_mut().expect("the stripe is in the buffer");
        let stripe = &mut buf[..k as usize * s];
        let par = &self.par.path;
        if let (&[j], Some(r)) = (bad, usable.first()) {
            let one = rebuild_one(&mut self.encoder, (k, m, s), j, r, crcs[j], stripe);
            if one.map_err(|e| Error::io("cannot decode", par, e))? {
                return Ok(());
            }
        }
        let dec = decode_stripe(par, k, m, s, bad, usable, stripe, self.decoder.take())?;
        self.decoder = Some(dec);
        Ok(())
    }

    /// A vault file of `file_len` bytes (not the recorded length) is
    /// rewritten at the recorded length even if every shard is intact.
    fn cut_to_length(&mut self, file_len: u64) -> Result<()> {
        if let Some(c) = &self.clone {
            // The clone's own length: the vault may have changed since.
            let len = c
                .file()
                .metadata()
                .map_err(|e| Error::io("cannot read", c.temp_path(), e))?
                .len();
            self.clone_changed |= len != self.vault_len;
            return Ok(());
        }
        if file_len != self.vault_len && !self.copying {
            self.start_copy()?;
        }
        Ok(())
    }

    /// Send the checked (and rebuilt) stripe `i` in the buffer on, to be
    /// hashed and, if the rebuilt vault is being written, written.
    fn emit(&mut self, i: u64, bytes: usize) -> Result<()> {
        if self.beyond {
            return Ok(());
        }
        let buf = self.buf.take().expect("the stripe is in the buffer");
        self.ring.send(Checked::Stripe { i, buf, n: bytes })
    }

    /// Start writing the rebuilt vault beside the vault, from the next
    /// stripe sent on; the writing thread copies the stripes before it
    /// from the vault.
    fn start_copy(&mut self) -> Result<()> {
        let out = crate::io::AtomicFile::create(self.vault)?;
        out.set_mode(self.mode)?;
        self.copying = true;
        self.ring.send(Checked::Copy(out))
    }

    /// The digest of the (rebuilt) vault, and the rebuilt vault if one
    /// was written: complete, cut or extended to the recorded length,
    /// not yet synced; and whether it began as a clone of the vault.
    fn finish(mut self) -> Result<([u8; 32], Option<Written>)> {
        let (digest, copy) = self.ring.finish()?;
        let Some(c) = self.clone.take() else {
            return Ok((digest, copy.map(|out| (out, false))));
        };
        if !self.clone_changed {
            // Intact: the clone goes, nothing was changed.
            return Ok((digest, None));
        }
        c.file()
            .set_len(self.vault_len)
            .map_err(|e| write_error(&c, e))?;
        Ok((digest, Some((c, true))))
    }
}

/// Stripe buffers of a repair (32 MiB each in release geometry; untouched
/// ones cost nothing): one being read, one checked, one hashed, one
/// written, and two more, because decoding a damaged stripe takes as long
/// as hashing three or four: the pass must be that far ahead of the
/// hashing when it meets one, or the hashing thread waits. Measured
/// (PERFORMANCE.md): 4 buffers left repair at 1.41x a cold verify, 6 at
/// 1.24x.
const RING_BUFFERS: usize = 6;

/// What flows from the pass through the hashing thread to the writing
/// thread, in the vault's order.
enum Checked {
    /// Stripe `i`, checked and rebuilt: the first `n` bytes of `buf`.
    Stripe { i: u64, buf: Aligned, n: usize },
    /// From the next stripe on, write the rebuilt vault into this file;
    /// the stripes before that one are copied from the vault.
    Copy(crate::io::AtomicFile),
    /// The pass is complete: finish the rebuilt vault, if one is written.
    Done,
}

/// The threads around a repair's pass, over a fixed ring of stripe
/// buffers: one reads the stripes ahead, in order ([`Ring::next`]); one
/// hashes the stripes the pass has checked ([`Ring::send`]); one writes
/// them into the rebuilt vault if there is one, straight from the buffers
/// the pass checked and the hashing thread hashed, and hands the buffers
/// back to the reader. Reading, checking and rebuilding, hashing and
/// writing thus overlap, in [`RING_BUFFERS`] stripes of memory.
struct Ring<'scope> {
    filled: mpsc::Receiver<(Aligned, io::Result<usize>)>,
    to_hash: Option<mpsc::SyncSender<Checked>>,
    free: mpsc::SyncSender<Aligned>,
    hasher: std::thread::ScopedJoinHandle<'scope, [u8; 32]>,
    writer: Option<std::thread::ScopedJoinHandle<'scope, Result<Option<crate::io::AtomicFile>>>>,
    /// Set by the writing thread when it fails.
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<'scope> Ring<'scope> {
    /// Read the vault's bytes from `src` stripe by stripe.
    fn spawn<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        src: fs::File,
        w: Writer<'env>,
    ) -> io::Result<Self> {
        let (g, vault_len) = (w.par.geometry, w.vault_len);
        let (free, free_rx) = mpsc::sync_channel::<Aligned>(RING_BUFFERS);
        let (filled_tx, filled) = mpsc::sync_channel(RING_BUFFERS);
        let (to_hash, hash_rx) = mpsc::sync_channel::<Checked>(RING_BUFFERS + 2);
        let (to_write, write_rx) = mpsc::sync_channel::<Checked>(RING_BUFFERS + 2);
        for _ in 0..RING_BUFFERS {
            // Zero pages until first written.
            let _ = free.send(Aligned::new(g.stripe_bytes() as usize));
        }
        let named = |name: &str| std::thread::Builder::new().name(format!("casevault-{name}"));
        named("rread").spawn_scoped(scope, move || {
            for i in 0..g.stripes(vault_len) {
                // The pass stopped, and every sender with it.
                let Ok(mut buf) = free_rx.recv() else { return };
                let start = i * g.stripe_bytes();
                let bytes = (vault_len - start).min(g.stripe_bytes()) as usize;
                let got = read_upto(&src, &mut buf[..bytes], start);
                let failed = got.is_err();
                if filled_tx.send((buf, got)).is_err() || failed {
                    return;
                }
            }
        })?;
        let hasher = named("rhash").spawn_scoped(scope, move || {
            let mut h = Sha256::new();
            for msg in hash_rx {
                if let Checked::Stripe { buf, n, .. } = &msg {
                    h.update(&buf[..*n]);
                }
                let _ = to_write.send(msg);
            }
            h.finalize().into()
        })?;
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (back, flag) = (free.clone(), failed.clone());
        let writer = named("rwrite").spawn_scoped(scope, move || w.run(write_rx, back, &flag))?;
        Ok(Ring {
            filled,
            to_hash: Some(to_hash),
            free,
            hasher,
            writer: Some(writer),
            failed,
        })
    }

    /// The next stripe's buffer, and how many of its bytes were read.
    fn next(&mut self) -> io::Result<(Aligned, usize)> {
        let (buf, got) = self
            .filled
            .recv()
            .map_err(|_| io::Error::other("repair's reading thread stopped"))?;
        Ok((buf, got?))
    }

    /// Send `msg` on, in order, to the hashing and then the writing
    /// thread.
    fn send(&mut self, msg: Checked) -> Result<()> {
        self.to_hash
            .as_ref()
            .and_then(|tx| tx.send(msg).ok())
            .ok_or_else(|| Error::Refused("repair's hashing thread stopped".into()))
    }

    /// Give a stripe's buffer back unhashed.
    fn recycle(&mut self, buf: Aligned) {
        let _ = self.free.send(buf);
    }

    fn writer_failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The writing thread's error, once it has failed: the pass stops.
    /// Closing the way in ends the hashing thread, and with it the
    /// writing thread, which drains what is queued.
    fn writer_error(&mut self) -> Error {
        self.to_hash = None;
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => e,
            _ => Error::Refused("repair's writing thread stopped".into()),
        }
    }

    /// The SHA-256 of every stripe hashed, and the rebuilt vault if the
    /// writing thread wrote one.
    fn finish(mut self) -> Result<([u8; 32], Option<crate::io::AtomicFile>)> {
        self.send(Checked::Done)?;
        drop(self.to_hash.take());
        let digest = self
            .hasher
            .join()
            .map_err(|_| Error::Refused("repair's hashing thread stopped".into()))?;
        let out = match self.writer.take().map(|w| w.join()) {
            Some(Ok(out)) => out?,
            _ => return Err(Error::Refused("repair's writing thread stopped".into())),
        };
        Ok((digest, out))
    }
}

fn write_error(out: &crate::io::AtomicFile, e: io::Error) -> Error {
    Error::io("cannot write", out.temp_path(), e)
}

/// The data shards of a stripe (zero-padded, `got` bytes of it read from
/// the vault) that are damaged: missing from the vault, or not matching
/// their CRC in `crcs`.
/// An empty `crcs` checks nothing (a stripe whose table is lost).
fn damaged_shards(stripe: &[u8], s: usize, got: usize, crcs: &[u32]) -> Vec<usize> {
    if crcs.is_empty() {
        return Vec::new();
    }
    stripe
        .chunks_exact(s)
        .enumerate()
        .filter(|(j, sh)| (j * s) >= got || crc(sh) != crcs[*j])
        .map(|(j, _)| j)
        .collect()
}

/// The writing thread of a repair: from a [`Checked::Copy`] on, it
/// writes the rebuilt vault stripe by stripe in order, straight from the
/// buffers the pass checked and rebuilt, and copies from the vault the
/// intact stripes before the first one it is sent.
struct Writer<'a> {
    vf: &'a fs::File,
    vault: &'a Path,
    par: &'a ParFile,
    vault_len: u64,
}

impl Writer<'_> {
    /// Handle `rx` until the pass ends; hand every buffer back to `free`,
    /// even after a failure (which sets `failed`), so that the ring never
    /// stalls. The rebuilt vault, complete and at the recorded length but
    /// not synced, if one was started and the pass completed.
    fn run(
        self,
        rx: mpsc::Receiver<Checked>,
        free: mpsc::SyncSender<Aligned>,
        failed: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<crate::io::AtomicFile>> {
        let mut out: Option<CopyOut> = None;
        let mut err = None;
        let mut done = false;
        for msg in rx {
            let r = match msg {
                Checked::Copy(file) => {
                    out = Some(CopyOut::new(&self, file));
                    Ok(())
                }
                Checked::Stripe { i, buf, n } => {
                    let r = match (&mut out, &err) {
                        (Some(c), None) => c.upto(i).and_then(|()| c.write(&buf[..n])),
                        _ => Ok(()),
                    };
                    let _ = free.send(buf);
                    r
                }
                Checked::Done => {
                    done = true;
                    Ok(())
                }
            };
            if let Err(e) = r {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                // The temporary file goes now.
                out = None;
                err.get_or_insert(e);
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        // A pass that gave up (beyond the budget, or an error) never
        // says it is done, and its temporary file goes.
        if !done {
            return Err(copier_stopped(self.vault));
        }
        out.map(|c| c.finish()).transpose()
    }
}

fn copier_stopped(vault: &Path) -> Error {
    Error::io(
        "cannot write the repaired copy of",
        vault,
        io::Error::other("its writer thread stopped"),
    )
}

/// The rebuilt vault being written.
struct CopyOut<'a> {
    w: &'a Writer<'a>,
    /// Written in order from offset 0, around the page cache where the
    /// file system allows (src/direct.rs): the copy is fsynced before it
    /// replaces the vault, so caching it only adds a kernel copy.
    out: DirectFile<crate::io::AtomicFile>,
    /// The next stripe to write.
    next: u64,
    /// For the stripes copied from the vault.
    chunk: Chunk,
}

impl<'a> CopyOut<'a> {
    fn new(w: &'a Writer<'a>, file: crate::io::AtomicFile) -> Self {
        CopyOut {
            w,
            out: DirectFile::new(file),
            next: 0,
            chunk: Chunk::new(),
        }
    }

    fn temp_path(&self) -> &Path {
        self.out.get_ref().temp_path()
    }

    /// Write stripe `next` (checked, hashed) from `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("cannot write", self.temp_path(), e))?;
        self.next += 1;
        Ok(())
    }

    /// Copy the stripes from `next` to before `i` from the vault.
    fn upto(&mut self, i: u64) -> Result<()> {
        while self.next < i {
            self.copy_stripe()?;
            self.next += 1;
        }
        Ok(())
    }

    /// The rest of the vault, then the file at the recorded length.
    fn finish(mut self) -> Result<crate::io::AtomicFile> {
        self.upto(self.w.par.geometry.stripes(self.w.vault_len))?;
        let tmp = self.temp_path().to_path_buf();
        let out = self
            .out
            .into_inner()
            .map_err(|e| Error::io("cannot write", &tmp, e))?;
        out.file()
            .set_len(self.w.vault_len)
            .map_err(|e| write_error(&out, e))?;
        Ok(out)
    }

    /// Copy stripe `next` from the vault, which the pass found intact:
    /// read again, every shard checked against its CRC once more and
    /// written from the buffer it was checked in, so the copy holds
    /// exactly the bytes the pass hashed (a vault that changed in between
    /// is an error, not a silent bad copy).
    fn copy_stripe(&mut self) -> Result<()> {
        let (w, i) = (self.w, self.next);
        let g = w.par.geometry;
        let s = g.shard as usize;
        let start = i * g.stripe_bytes();
        let bytes = (w.vault_len - start).min(g.stripe_bytes());
        let table = w.par.table(i, w.vault_len).table;
        let mut off = 0u64;
        while off < bytes {
            let n = (bytes - off).min((CHUNK / s * s) as u64) as usize;
            let span = n.div_ceil(s) * s;
            let buf = &mut self.chunk.bytes_mut()[..span];
            let got = read_upto(w.vf, &mut buf[..n], start + off)
                .map_err(|e| Error::io("cannot read", w.vault, e))?;
            buf[n..].fill(0);
            let first = off as usize / s;
            // Without a table (lost) the bytes go as they are, as the
            // pass hashed them.
            let crcs = table
                .as_ref()
                .map_or(&[][..], |t| &t.data[first..first + span / s]);
            if let Some(j) = damaged_shards(buf, s, got, crcs).first() {
                return Err(Error::integrity(format!(
                    "{}: vault bytes from {} changed while it was being repaired; nothing was changed",
                    w.vault.display(),
                    start + ((first + j) * s) as u64
                )));
            }
            self.out
                .write_all(&self.chunk.bytes()[..n])
                .map_err(|e| Error::io("cannot write", self.temp_path(), e))?;
            off += n as u64;
        }
        Ok(())
    }
}

/// A reflink clone of the vault in a temporary file beside it, with
/// permission bits `mode`, where the file system can share blocks (XFS,
/// btrfs); `None` elsewhere, or where no file can be made beside the vault
/// (a repair that finds damage then fails on that, naming it).
fn reflink_clone(vf: &fs::File, vault: &Path, mode: u32) -> Option<crate::io::AtomicFile> {
    let out = crate::io::AtomicFile::create(vault).ok()?;
    rustix::fs::ioctl_ficlone(out.file(), vf).ok()?;
    out.set_mode(mode).ok()?;
    Some(out)
}

/// The outcome when a stripe's damage exceeds its budget.
fn beyond_budget(report: RepairReport) -> RepairReport {
    let d = report
        .damage
        .iter()
        .find(|d| !d.repairable && !d.table_lost)
        .expect("a stripe beyond its budget is in the report");
    let why = format!(
        "stripe {} (vault bytes from {}): {} damaged shards, {} usable recovery shards: beyond the parity budget; nothing was changed",
        d.stripe, d.offset, d.damaged_data_shards, d.usable_recovery_shards
    );
    unrepairable(report, &why)
}

fn unrepairable(mut report: RepairReport, why: &str) -> RepairReport {
    report.outcome = "unrepairable";
    report.problem = Some(why.to_string());
    report
}

/// The digest a repaired vault must have: the sidecar's, or where there
/// is no usable sidecar, the parity trailer's.
fn expected_digest(vault: &Path, par: &ParFile) -> Result<([u8; 32], &'static str)> {
    // A sidecar that is there but unreadable or malformed is rot too: the
    // trailer may stand in for it, as for a missing one.
    let side = match crate::sidecar::read_checked(vault) {
        Ok(Some(hexd)) => parse_hex32(&hexd).ok_or_else(|| {
            Error::integrity(format!(
                "{} is not a sidecar",
                crate::sidecar::path(vault).display()
            ))
        }),
        Ok(None) => Err(Error::integrity(format!(
            "{} is missing",
            crate::sidecar::path(vault).display()
        ))),
        Err(e) => Err(e),
    };
    match (side, &par.trailer) {
        (Ok(d), Some(t)) if t.vault_sha256 != d => Err(Error::integrity(format!(
            "{} describes another vault than {}'s sidecar (their SHA-256 differ)",
            par.path.display(),
            vault.display()
        ))),
        (Ok(d), _) => Ok((d, "sidecar")),
        (Err(_), Some(t)) => Ok((t.vault_sha256, "parity trailer")),
        (Err(e), None) => Err(Error::integrity(format!(
            "{e}, and the parity file's trailer is damaged: nothing says what the vault's SHA-256 must be"
        ))),
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(d)
}

/// Rebuild the `bad` data shards of a stripe of `k` data and `m` recovery
/// shards of `s` bytes in place, from its intact shards and the `usable`
/// recovery shards (index, bytes).
#[allow(clippy::too_many_arguments)]
fn decode_stripe(
    par_path: &Path,
    k: u32,
    m: u32,
    s: usize,
    bad: &[usize],
    usable: &[(u32, Vec<u8>)],
    stripe: &mut [u8],
    reuse: Option<HighRateDecoder<DefaultEngine>>,
) -> Result<HighRateDecoder<DefaultEngine>> {
    let rs = |e: reed_solomon_simd::Error| Error::io("cannot decode", par_path, rs_error(e));
    let mut dec = match reuse {
        Some(mut d) => {
            d.reset(k as usize, m as usize, s).map_err(rs)?;
            d
        }
        None => HighRateDecoder::new(k as usize, m as usize, s, DefaultEngine::new(), None)
            .map_err(rs)?,
    };
    for (j, shard) in stripe.chunks_exact(s).enumerate() {
        if bad.binary_search(&j).is_err() {
            dec.add_original_shard(j, shard).map_err(rs)?;
        }
    }
    for (j, r) in usable.iter().take(bad.len()) {
        dec.add_recovery_shard(*j as usize, r).map_err(rs)?;
    }
    let result = dec.decode().map_err(rs)?;
    for &j in bad {
        let restored = result.restored_original(j).ok_or_else(|| {
            Error::io(
                "cannot decode",
                par_path,
                io::Error::other("a shard was not restored"),
            )
        })?;
        stripe[j * s..(j + 1) * s].copy_from_slice(restored);
    }
    drop(result);
    Ok(dec)
}

/// Rebuild the one damaged data shard `j` of a stripe of `k` data and
/// `m` recovery shards of `s` bytes from one intact recovery shard
/// `(i, r)`, without the decoder; true when the rebuilt shard has the
/// recorded CRC `want`. False leaves shard `j` zeroed for the decoder
/// (the crate's decoder ignores a missing shard's bytes).
///
/// Why it holds: the code is linear over GF(2^16) and applies the same
/// coefficients at every symbol position, so recovery shard `i` is
/// `Σ c_ij · d_j` symbol by symbol. Encoding the stripe with shard `j`
/// zeroed gives `r' = r ⊕ c_ij · d_j` (addition is XOR), so
/// `d_j = (r ⊕ r') / c_ij`. `c_ij` is read off the encoding of a stripe
/// of 64-byte shards that is zero but for one known symbol `t` in shard
/// `j`: its recovery shard `i` begins with `q = c_ij · t`, so
/// `1 / c_ij = t / q`. Symbols are 16 bits, the low bytes of 32 symbols
/// followed by their high bytes in every 64 bytes (the crate's layout,
/// which its engine's `mul` works on).
///
/// Why bother: this costs one encode of the stripe, what seal paid for
/// it, where the decoder transforms a work space of `next_pow2(k + m)`
/// shards three times (about five times the CPU; docs/PERFORMANCE.md).
/// One damaged shard per stripe is what scattered rot looks like.
fn rebuild_one(
    encoder: &mut Option<HighRateEncoder<DefaultEngine>>,
    (k, m, s): (u32, u32, usize),
    j: usize,
    (i, r): &(u32, Vec<u8>),
    want: u32,
    stripe: &mut [u8],
) -> io::Result<bool> {
    let (k, m, i) = (k as usize, m as usize, *i as usize);
    let rs = rs_error;
    let no_shard_i = || {
        rs(reed_solomon_simd::Error::InvalidRecoveryShardIndex {
            index: i,
            recovery_count: m,
        })
    };
    stripe[j * s..(j + 1) * s].fill(0);
    let mut enc = match encoder.take() {
        Some(mut e) => {
            e.reset(k, m, s).map_err(rs)?;
            e
        }
        None => HighRateEncoder::new(k, m, s, DefaultEngine::new(), None).map_err(rs)?,
    };
    for shard in stripe.chunks_exact(s) {
        enc.add_original_shard(shard).map_err(rs)?;
    }
    let mut d: Vec<[u8; 64]> = vec![[0; 64]; s / 64];
    {
        let result = enc.encode().map_err(rs)?;
        let zeroed = result.recovery(i).ok_or_else(no_shard_i)?;
        for ((o, a), b) in bytemuck::cast_slice_mut::<_, u8>(&mut d)
            .iter_mut()
            .zip(r)
            .zip(zeroed)
        {
            *o = a ^ b;
        }
    }
    *encoder = Some(enc);

    // c_ij: a stripe of 64-byte shards, zero but for the symbol t = 1 at
    // the start of shard j.
    const T: u16 = 1;
    let mut unit = HighRateEncoder::new(k, m, 64, DefaultEngine::new(), None).map_err(rs)?;
    let (zero, mut one) = ([0u8; 64], [0u8; 64]);
    one[0] = T as u8;
    for x in 0..k {
        unit.add_original_shard(if x == j { &one } else { &zero })
            .map_err(rs)?;
    }
    let q = {
        let result = unit.encode().map_err(rs)?;
        let ri = result.recovery(i).ok_or_else(no_shard_i)?;
        u16::from(ri[0]) | u16::from(ri[32]) << 8
    };
    if q == 0 {
        // Never for an MDS code; the decoder settles it.
        return Ok(false);
    }
    let log = &tables::get_exp_log().log;
    let modulus = u32::from(GF_MODULUS);
    let log_inv =
        (u32::from(log[usize::from(T)]) + modulus - u32::from(log[usize::from(q)])) % modulus;
    DefaultEngine::new().mul(&mut d, log_inv as u16);
    let rebuilt: &[u8] = bytemuck::cast_slice(&d);
    if crc(rebuilt) != want {
        return Ok(false);
    }
    stripe[j * s..(j + 1) * s].copy_from_slice(rebuilt);
    Ok(true)
}

/// If `VAULT.sig` exists, check it over the repaired bytes at `candidate`.
fn outer_signature_problem(vault: &Path, candidate: &Path) -> Result<Option<String>> {
    let sig = match crate::sign::read_vault_sig(vault) {
        Ok(Some(sig)) => sig,
        Ok(None) => return Ok(None),
        Err(e) => {
            return Ok(Some(format!(
                "{e}; the repaired vault was not accepted without its signature checking"
            )))
        }
    };
    let ns = crate::sign::outer_namespace(&sig);
    Ok(
        match crate::sign::verify_file(&sig, ns, "the repaired vault", candidate) {
            Ok(_) => None,
            Err(e) => Some(format!(
                "{}: does not verify over the repaired vault ({e}); nothing was changed",
                crate::sign::sig_path(vault).display()
            )),
        },
    )
}

/// Write the parity file anew when the vault is intact and the parity
/// file is not: it is derived data, and a damaged one protects less.
fn rewrite_damaged_parity(
    vault: &Path,
    vmeta: &fs::Metadata,
    par: &ParFile,
    report: &mut RepairReport,
) -> Result<()> {
    // Pass 1 read the recovery shards of damaged stripes only: check them
    // all, so that the report says what of the parity file survives.
    report.parity_state.recovery_shards_damaged = count_damaged_recovery(par, report.vault_bytes);
    if !report.parity_state.damaged() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = vmeta.permissions().mode() & 0o7777;
    write_to(vault, &par.path, par.geometry.percent, mode)?;
    crate::io::sync_parent_dir(vault)?;
    report.parity_rewritten = true;
    Ok(())
}

fn count_damaged_recovery(par: &ParFile, vault_len: u64) -> u64 {
    let g = par.geometry;
    let mut bad = 0;
    for i in 0..g.stripes(vault_len) {
        let k = g.k_of(i, vault_len);
        let m = g.recovery_for(k);
        match par.table(i, vault_len).table {
            Some(t) => bad += m as u64 - par.recovery(i, k, &t).len() as u64,
            None => bad += m as u64,
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn par_of(data: &[u8], g: Geometry) -> Vec<u8> {
        let mut b = Builder::new(g, Vec::new()).unwrap();
        for c in data.chunks(10_000) {
            b.update(c).unwrap();
        }
        b.finish(Sha256::digest(data).into()).unwrap()
    }

    /// Chunks handed over whole ([`Builder::push`], seal's way, with
    /// lengths that cut shards and stripes anywhere) give the very bytes
    /// that copying the stream in ([`Builder::update`]) gives.
    #[test]
    fn pushed_chunks_code_like_copied_bytes() {
        for g in [
            Geometry {
                shard: 64,
                stripe: 10,
                percent: 20,
            },
            Geometry {
                shard: 4096,
                stripe: 1500,
                percent: 5,
            },
        ] {
            let len = 3 * CHUNK + 777;
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
            let cuts = [1, CHUNK, 4095, 65, CHUNK - 3, usize::MAX];
            assert!(
                pushed(g, &data, &cuts) == par_of(&data, g),
                "geometry {g:?}"
            );
        }
    }

    /// Check every stripe's recovery shards in `par` (the parity file of
    /// `data`) against the crate's own `HighRateEncoder`.
    fn assert_high_rate_code(g: Geometry, data: &[u8], par: &[u8]) {
        let (s, stripe) = (g.shard as usize, g.stripe_bytes() as usize);
        for (i, part) in data.chunks(stripe).enumerate() {
            let k = part.len().div_ceil(s);
            let m = g.recovery_for(k as u32) as usize;
            let mut enc = HighRateEncoder::new(k, m, s, DefaultEngine::new(), None).unwrap();
            for shard in part.chunks(s) {
                let mut padded = shard.to_vec();
                padded.resize(s, 0);
                enc.add_original_shard(&padded).unwrap();
            }
            let r = enc.encode().unwrap();
            let want: Vec<u8> = r.recovery_iter().flatten().copied().collect();
            let at = g.section_at(i as u64) as usize + table_len(k as u32, m as u32);
            assert!(
                par[at..at + m * s] == want[..],
                "geometry {g:?}, stripe {i}"
            );
        }
    }

    /// Feed `data` to a builder in chunks of the lengths `cuts` gives in
    /// turn (seal's way, [`Builder::push`]); the parity file.
    fn pushed(g: Geometry, data: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut b = Builder::new(g, Vec::new()).unwrap();
        let mut rest = data;
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*cut).clamp(1, CHUNK).min(rest.len());
            let mut c = b.take_spent().next().unwrap_or_default();
            c.bytes_mut()[..n].copy_from_slice(&rest[..n]);
            b.push(c, n).unwrap();
            rest = &rest[n..];
        }
        b.finish(Sha256::digest(data).into()).unwrap()
    }

    /// The builder's coder (blocks transformed in place, or gathered
    /// where they are not whole inside one chunk) gives the recovery
    /// shards of the crate's own `HighRateEncoder`, stripe by stripe:
    /// blocks smaller and larger than a chunk, a first block that is short
    /// (more recovery than data shards), a short last stripe and shard.
    #[test]
    fn the_coder_is_the_crates_high_rate_encoder() {
        for (g, len) in [
            (
                Geometry {
                    shard: 64,
                    stripe: 10,
                    percent: 20,
                },
                6401,
            ),
            (
                Geometry {
                    shard: 64,
                    stripe: 10,
                    percent: 100,
                },
                1000,
            ),
            (
                Geometry {
                    shard: 4096,
                    stripe: 1500,
                    percent: 5,
                },
                3 * CHUNK + 777,
            ),
            // Blocks of 1024 shards: a whole chunk each.
            (
                Geometry {
                    shard: 4096,
                    stripe: 2048,
                    percent: 30,
                },
                2 * CHUNK + 4096 * 5,
            ),
            (
                Geometry {
                    shard: 4096,
                    stripe: 8192,
                    percent: 5,
                },
                9 * CHUNK + 1,
            ),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 131 % 253) as u8).collect();
            let par = pushed(g, &data, &[CHUNK]);
            assert!(par == par_of(&data, g), "geometry {g:?}");
            assert_high_rate_code(g, &data, &par);
        }
    }

    /// A stripe of `k` shards of `s` bytes, its `m` recovery shards, and
    /// the stripe with shard `j` overwritten (rot).
    fn rotted_stripe(
        k: usize,
        m: usize,
        s: usize,
        j: usize,
        seed: u8,
    ) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
        let data: Vec<u8> = (0..k * s)
            .map(|x| (x * 131 + x / 7 + seed as usize) as u8)
            .collect();
        let mut enc = HighRateEncoder::new(k, m, s, DefaultEngine::new(), None).unwrap();
        for shard in data.chunks_exact(s) {
            enc.add_original_shard(shard).unwrap();
        }
        let recovery = enc
            .encode()
            .unwrap()
            .recovery_iter()
            .map(<[u8]>::to_vec)
            .collect();
        let mut rotted = data.clone();
        for (x, b) in rotted[j * s..(j + 1) * s].iter_mut().enumerate() {
            *b = !*b ^ x as u8;
        }
        (data, recovery, rotted)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Any geometry, any length, chunks cut anywhere: the crate's code,
        /// and the same file as copying the bytes in.
        #[test]
        fn any_geometry_and_cuts_give_the_crates_code(
            shard in 1u32..=8,
            stripe in 1u32..=40,
            percent in 1u32..=100,
            len in 0usize..60_000,
            cuts in proptest::collection::vec(1usize..20_000, 1..6),
            seed in 0u8..=255,
        ) {
            let g = Geometry { shard: shard * 64, stripe, percent };
            let data: Vec<u8> = (0..len).map(|i| (i * 97 + seed as usize) as u8).collect();
            let par = pushed(g, &data, &cuts);
            proptest::prop_assert!(par == par_of(&data, g));
            assert_high_rate_code(g, &data, &par);
        }

        /// One damaged shard, rebuilt from any one intact recovery shard
        /// without the decoder, is the shard that was encoded.
        #[test]
        fn one_damaged_shard_is_rebuilt_from_any_recovery_shard(
            shard in 1usize..=8,
            k in 1usize..=300,
            m in 1usize..=40,
            j in 0usize..300,
            i in 0usize..40,
            seed in 0u8..=255,
        ) {
            let (s, j, i) = (shard * 64, j % k, i % m);
            let (data, recovery, mut stripe) = rotted_stripe(k, m, s, j, seed);
            let want = crc(&data[j * s..(j + 1) * s]);
            let mut enc = None;
            let r = (i as u32, recovery[i].clone());
            let ok = rebuild_one(&mut enc, (k as u32, m as u32, s), j, &r, want, &mut stripe).unwrap();
            proptest::prop_assert!(ok);
            proptest::prop_assert!(stripe == data);
            // The encoder is reused for the next stripe.
            proptest::prop_assert!(enc.is_some());
        }
    }

    /// A rebuilt shard that does not have its recorded CRC (here: a
    /// recovery shard that is not the stripe's) is not used: the shard is
    /// left zeroed for the decoder, which the repair then runs.
    #[test]
    fn a_rebuilt_shard_without_its_crc_goes_to_the_decoder() {
        let (k, m, s, j) = (50, 5, 128, 17);
        let (data, recovery, mut stripe) = rotted_stripe(k, m, s, j, 3);
        let want = crc(&data[j * s..(j + 1) * s]);
        let wrong = (1, recovery[2].clone());
        assert!(!rebuild_one(
            &mut None,
            (k as u32, m as u32, s),
            j,
            &wrong,
            want,
            &mut stripe
        )
        .unwrap());
        assert!(stripe[j * s..(j + 1) * s].iter().all(|&b| b == 0));
        let usable: Vec<(u32, Vec<u8>)> = recovery
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, r)| (i as u32, r))
            .collect();
        decode_stripe(
            Path::new("x.par"),
            k as u32,
            m as u32,
            s,
            &[j],
            &usable,
            &mut stripe,
            None,
        )
        .unwrap();
        assert!(stripe == data);
    }

    #[test]
    fn layout_matches_the_geometry() {
        let g = Geometry {
            shard: 64,
            stripe: 10,
            percent: 20,
        };
        for len in [1u64, 63, 64, 640, 641, 6400, 6401] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let p = par_of(&data, g);
            assert_eq!(p.len() as u64, g.par_len(len), "len {len}");
            let t = Block::parse(&p[p.len() - BLOCK_LEN..], KIND_TRAILER).unwrap();
            assert_eq!(t.vault_len, len);
            assert!(Block::parse(&p[..BLOCK_LEN], KIND_HEADER).is_some());
        }
    }

    /// The writing thread copies from the vault the stripes before the
    /// first one it is sent, writes the sent ones from their buffers,
    /// refuses a vault stripe that no longer matches its CRCs (the vault
    /// changed under the repair), and keeps nothing unless the pass says
    /// it is done.
    #[test]
    fn the_writer_writes_what_the_pass_checked_and_nothing_else() {
        let g = Geometry {
            shard: 64,
            stripe: 10,
            percent: 20,
        };
        let data: Vec<u8> = (0..6401u64).map(|i| (i * 7 % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("v.vault");
        let par_path = dir.path().join("v.vault.par");
        fs::write(&par_path, par_of(&data, g)).unwrap();
        let par = ParFile::open(&par_path).unwrap();
        let stripe = |i: usize| {
            let mut buf = Aligned::new(640);
            let part = &data[i * 640..((i + 1) * 640).min(data.len())];
            buf[..part.len()].copy_from_slice(part);
            Checked::Stripe {
                i: i as u64,
                buf,
                n: part.len(),
            }
        };
        // Shard 3 of stripe 5 rotted; the pass rebuilt it (stripe 5 is
        // sent whole), and copying starts there.
        let mut bad = data.clone();
        bad[5 * 640 + 3 * 64 + 10] ^= 1;
        fs::write(&vault, &bad).unwrap();
        let vf = fs::File::open(&vault).unwrap();
        let run = |sent: Vec<usize>, done: bool| {
            let (tx, rx) = mpsc::sync_channel(sent.len() + 2);
            tx.send(Checked::Copy(
                crate::io::AtomicFile::create(&vault).unwrap(),
            ))
            .unwrap();
            for i in sent {
                tx.send(stripe(i)).unwrap();
            }
            if done {
                tx.send(Checked::Done).unwrap();
            }
            drop(tx);
            let (free, back) = mpsc::sync_channel(20);
            let failed = std::sync::atomic::AtomicBool::new(false);
            let w = Writer {
                vf: &vf,
                vault: &vault,
                par: &par,
                vault_len: data.len() as u64,
            };
            let out = w.run(rx, free, &failed);
            // Every buffer comes back, whatever happened.
            let returned = back.try_iter().count();
            (
                out.map(|o| fs::read(o.unwrap().temp_path()).unwrap()),
                returned,
                failed.into_inner(),
            )
        };
        let (copy, returned, failed) = run(vec![5, 6], true);
        assert!(copy.unwrap() == data);
        assert_eq!((returned, failed), (2, false));
        // Stripe 5 not sent: the writer reads it from the vault, where it
        // no longer matches its CRCs.
        let (e, returned, failed) = run(vec![6, 7], true);
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("vault bytes from 3392 changed while it was being repaired"),
            "{e}"
        );
        assert_eq!((returned, failed), (2, true));
        // A pass that stops without saying it is done leaves no copy.
        assert!(run(vec![5], false).0.is_err());
        // No temporary file is left by any of the runs.
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["v.vault", "v.vault.par"]);
    }

    #[test]
    fn recovery_count_rounds_up() {
        let g = Geometry::new(5).unwrap();
        assert_eq!(g.recovery_for(1), 1);
        assert_eq!(g.recovery_for(20), 1);
        assert_eq!(g.recovery_for(21), 2);
        assert_eq!(g.recovery_for(8192), 410);
        assert!(Geometry::new(0).is_err());
        assert!(Geometry::new(101).is_err());
    }

    /// Recovery shards of a fixed stripe with engine `E`.
    fn recovery_with<E: reed_solomon_simd::engine::Engine>(engine: E) -> Vec<u8> {
        let (k, m, s) = (5usize, 3usize, 128usize);
        let mut enc = HighRateEncoder::new(k, m, s, engine, None).unwrap();
        for i in 0..k {
            let shard: Vec<u8> = (0..s).map(|j| (i * 31 + j * 7) as u8).collect();
            enc.add_original_shard(&shard).unwrap();
        }
        let r = enc.encode().unwrap();
        r.recovery_iter().flatten().copied().collect()
    }

    /// The parity is the code of FORMAT §15, not whatever a CPU's SIMD
    /// engine computes: the crate's plain reference engine agrees with the
    /// one casevault uses, and both with the digest pinned here (a new
    /// version of the crate that changed the code fails this test).
    #[test]
    fn recovery_shards_are_the_reference_code() {
        let default = recovery_with(DefaultEngine::new());
        let naive = recovery_with(reed_solomon_simd::engine::Naive::new());
        assert_eq!(default, naive);
        assert_eq!(
            crate::io::hex(&Sha256::digest(&default)),
            "6c39c760817f65e3c776f7e8afca766e3df09f65ad16a6f5d970ef040e82c66c"
        );
    }

    #[test]
    fn crafted_geometry_and_lengths_are_refused_without_panic() {
        let g = Geometry {
            shard: MAX_SHARD,
            stripe: MAX_STRIPE,
            percent: 100,
        };
        assert!(!g.valid(), "a 32 GiB stripe must not be accepted");
        let g = Geometry::new(1).unwrap();
        for len in [u64::MAX, u64::MAX / 2, 1 << 62] {
            let _ = g.par_len(len);
            let trailer = Block {
                geometry: g,
                vault_len: len,
                stripes: g.stripes(len),
                vault_sha256: [1; 32],
            };
            let b = trailer.encode(KIND_TRAILER);
            assert!(Block::parse(&b, KIND_TRAILER).is_some());
        }
        let tiny = Geometry {
            shard: 64,
            stripe: 1,
            percent: 100,
        };
        assert_eq!(tiny.par_len(u64::MAX), u64::MAX);
    }

    /// Damaged, truncated and crafted parity files never panic a repair,
    /// and a repair that says "repaired" left exactly the sealed bytes.
    #[test]
    fn mangled_parity_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("v.vault");
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        fs::write(&vault, &data).unwrap();
        let digest = crate::io::hex(&Sha256::digest(&data));
        fs::write(crate::sidecar::path(&vault), format!("{digest}  v.vault\n")).unwrap();
        write_for(&vault, 10, 0o600).unwrap();
        let good = fs::read(path(&vault)).unwrap();
        let mut seed = 0x9E3779B97F4A7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..300 {
            let mut par = good.clone();
            match round % 3 {
                0 => par.truncate((next() % good.len() as u64) as usize),
                1 => {
                    for _ in 0..1 + next() % 8 {
                        let at = (next() % par.len() as u64) as usize;
                        par[at] = next() as u8;
                    }
                }
                _ => {
                    let at = (next() % 128) as usize;
                    par[at] ^= 1 << (next() % 8);
                    let end = par.len() - 1 - (next() % 128) as usize;
                    par[end] ^= 1 << (next() % 8);
                }
            }
            fs::write(path(&vault), &par).unwrap();
            let mut bad = data.clone();
            let at = (next() % data.len() as u64) as usize;
            bad[at] ^= 0xff;
            fs::write(&vault, &bad).unwrap();
            if let Ok(r) = repair(&vault, &path(&vault)) {
                if r.outcome == "repaired" {
                    assert!(fs::read(&vault).unwrap() == data, "round {round}");
                }
            }
        }
    }

    #[test]
    fn a_flipped_block_byte_is_refused() {
        let g = Geometry::new(5).unwrap();
        let p = par_of(b"x", g);
        let mut t = p[p.len() - BLOCK_LEN..].to_vec();
        t[33] ^= 1;
        assert!(Block::parse(&t, KIND_TRAILER).is_none());
    }
}

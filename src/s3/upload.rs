//! Streaming uploads: a vault goes up as a multipart upload of parts read
//! from any `Read` (a local vault) or written to a `Write` (a sealing
//! pipeline), so no local copy of the vault is needed. [`IN_FLIGHT`] parts
//! are uploaded at once by a small pool of threads while the next part
//! fills; their sizes follow [`part_size`] (8 MiB, doubling every 1,000
//! parts, so that a vault of up to 5 TiB fits in S3's 10,000 parts). Parts
//! of up to [`MEM_PART_MAX`] are held in memory, larger ones (vaults beyond
//! 7.8 GiB) in unnamed temporary files, so memory stays at most
//! (`IN_FLIGHT` + 1) × 8 MiB = 40 MiB of part buffers whatever the size.
//! The object appears only when CompleteMultipartUpload succeeds; on any
//! error the upload is aborted (best effort; a crash leaves it to
//! [`abort_stale`] of the next run).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::{client, Location, Retention};
use crate::io::hex;
use crate::{Error, Result};

/// Size of the first 1,000 parts: 8 MiB (see [`part_size`]).
pub const PART_SIZE: u64 = 8 << 20;

/// Parts whose size doubles after each run of this many parts.
pub const DOUBLE_EVERY: u32 = 1000;

/// S3's limit on the parts of one multipart upload.
pub const MAX_PARTS: u32 = 10_000;

/// Parts being uploaded at once (each by its own thread), besides the one
/// being filled. Chosen by measurement: docs/PERFORMANCE.md.
pub const IN_FLIGHT: usize = 4;

/// Parts up to this size are held in memory; larger ones are written to an
/// unnamed temporary file (in `$TMPDIR`) and uploaded from it.
pub const MEM_PART_MAX: u64 = PART_SIZE;

/// The size of part `n` (from 1): [`PART_SIZE`] for parts 1 to 1,000,
/// twice that for 1,001 to 2,000, and so on, doubling every
/// [`DOUBLE_EVERY`] parts (part 10,000 is 4 GiB, under S3's 5 GiB per
/// part). The first `k` × 1,000 parts hold 8 MiB × 1,000 × (2^k − 1):
/// 7.8 GiB, 23.4 GiB, 54.7 GiB, 117 GiB, 242 GiB, 492 GiB, 992 GiB,
/// 1.95 TiB, 3.9 TiB and, with all 10,000, 7.99 TiB, more than S3's
/// largest object (5 TiB). Every part but the last is exactly this size.
pub fn part_size(n: u32) -> u64 {
    PART_SIZE << ((n.max(1) - 1) / DOUBLE_EVERY).min(9)
}

/// The most parts held in memory or temporary files at once: the
/// [`IN_FLIGHT`] ones the threads upload, and the one filling (which, when
/// full, waits in the rendezvous channel until a thread is free).
pub const PARTS_HELD: usize = IN_FLIGHT + 1;

/// What an upload wrote.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub sha256: String,
    pub size: u64,
    pub version_id: Option<String>,
}

/// The bytes of one part: in memory, or in an unnamed temporary file.
pub enum PartBody {
    Mem(Vec<u8>),
    File { file: std::fs::File, len: u64 },
}

impl PartBody {
    fn len(&self) -> u64 {
        match self {
            PartBody::Mem(v) => v.len() as u64,
            PartBody::File { len, .. } => *len,
        }
    }

    /// An empty part for part number `n`: in memory or on disk by its size.
    fn new(n: u32) -> io::Result<PartBody> {
        let size = part_size(n);
        if size <= mem_part_max() {
            Ok(PartBody::Mem(Vec::with_capacity(size as usize)))
        } else {
            Ok(PartBody::File {
                file: tempfile::tempfile()?,
                len: 0,
            })
        }
    }

    fn extend(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            PartBody::Mem(v) => v.extend_from_slice(data),
            PartBody::File { file, len } => {
                file.write_all(data)?;
                *len += data.len() as u64;
            }
        }
        Ok(())
    }
}

/// [`MEM_PART_MAX`]; in debug builds (the tests), `CASEVAULT_S3_MEM_PART_MAX`
/// (bytes) overrides it so that the temporary-file path is exercised
/// without uploading gigabytes.
fn mem_part_max() -> u64 {
    #[cfg(debug_assertions)]
    if let Some(v) = std::env::var("CASEVAULT_S3_MEM_PART_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return v;
    }
    MEM_PART_MAX
}

/// Uploads one part (number, bytes) and returns its ETag: the real one
/// calls UploadPart; unit tests pass their own.
type PartFn = dyn Fn(i32, PartBody) -> Result<String> + Send + Sync;

/// What the pool's threads share: the ETags by part number, and the first
/// error (which stops everything).
struct Shared {
    etags: Mutex<Vec<Option<String>>>,
    error: Mutex<Option<Error>>,
    failed: AtomicBool,
}

impl Shared {
    fn fail(&self, e: Error) {
        if let Ok(mut g) = self.error.lock() {
            if g.is_none() {
                *g = Some(e);
            }
        }
        self.failed.store(true, Ordering::SeqCst);
    }
}

/// A bounded pool of uploader threads pulling numbered parts from a
/// rendezvous channel: at most `threads` parts in flight, and the sender
/// blocks until a thread is free, so memory is bounded by the caller's
/// part size × (threads + 1). Parts may complete in any order; ETags are
/// kept by part number. The first error stops every thread (parts already
/// taken finish their request; no new part is started).
struct Pool {
    tx: Option<SyncSender<(u32, PartBody)>>,
    workers: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Pool {
    fn new(threads: usize, f: Arc<PartFn>) -> io::Result<Pool> {
        let (tx, rx) = sync_channel::<(u32, PartBody)>(0);
        let rx: Arc<Mutex<Receiver<(u32, PartBody)>>> = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            etags: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            failed: AtomicBool::new(false),
        });
        let mut pool = Pool {
            tx: Some(tx),
            workers: Vec::new(),
            shared: shared.clone(),
        };
        for i in 0..threads.max(1) {
            let (rx, shared, f) = (rx.clone(), shared.clone(), f.clone());
            let w = std::thread::Builder::new()
                .name(format!("s3-upload-{i}"))
                .spawn(move || loop {
                    let msg = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok((n, body)) = msg else { return };
                    if shared.failed.load(Ordering::SeqCst) {
                        return;
                    }
                    match f(n as i32, body) {
                        Ok(etag) => {
                            let Ok(mut e) = shared.etags.lock() else {
                                return;
                            };
                            let i = n as usize - 1;
                            if e.len() <= i {
                                e.resize(i + 1, None);
                            }
                            e[i] = Some(etag);
                        }
                        Err(err) => {
                            shared.fail(err);
                            return;
                        }
                    }
                });
            match w {
                Ok(w) => pool.workers.push(w),
                Err(e) => {
                    pool.stop();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// Hand part `n` to a free thread (waiting for one): false when the
    /// pool has stopped (an error; see [`Pool::take_error`]).
    fn send(&mut self, n: u32, body: PartBody) -> bool {
        if self.shared.failed.load(Ordering::SeqCst) {
            return false;
        }
        match &self.tx {
            Some(tx) => tx.send((n, body)).is_ok(),
            None => false,
        }
    }

    /// Stop: no more parts, wait for the threads to finish theirs.
    fn stop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            // A thread that panicked has nothing to report; its part has
            // no ETag, which `finish` catches.
            let _ = w.join();
        }
    }

    /// The first error of any thread, once stopped.
    fn take_error(&mut self) -> Option<Error> {
        self.stop();
        self.shared.error.lock().ok().and_then(|mut g| g.take())
    }

    /// Wait for every part: their ETags in part order (1 to `parts`), or
    /// the first error.
    fn finish(mut self, parts: u32) -> std::result::Result<Vec<String>, Option<Error>> {
        if let Some(e) = self.take_error() {
            return Err(Some(e));
        }
        let etags = self
            .shared
            .etags
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        if etags.len() != parts as usize || etags.iter().any(Option::is_none) {
            return Err(None);
        }
        Ok(etags.into_iter().flatten().collect())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.failed.store(true, Ordering::SeqCst);
        self.stop();
    }
}

/// Upload everything `r` yields to `loc` as one object, hashing it on the
/// way. `read_err` turns a read error of `r` into casevault's error (the
/// source decides what a failed read means). The object is complete and
/// visible when this returns `Ok`, and absent when it returns `Err`. Parts
/// go up [`IN_FLIGHT`] at a time, as in [`UploadWriter`].
///
/// With `expected` (a SHA-256, hex), the upload is completed only if what
/// was read hashes to it; otherwise it is aborted and the result is an
/// integrity failure (`store push` never publishes a copy that differs
/// from its sidecar).
pub fn upload(
    loc: &Location,
    r: &mut dyn Read,
    read_err: &dyn Fn(io::Error) -> Error,
    expected: Option<&str>,
) -> Result<Uploaded> {
    // Dropped on any error below: the upload is aborted.
    let mut w = UploadWriter::start(loc, false)?;
    let mut h = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; crate::io::BUF_SIZE];
    loop {
        crate::signal::check()?;
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        h.update(&buf[..n]);
        size += n as u64;
        w.put(&buf[..n])?;
    }
    crate::signal::check()?;
    let sha256 = hex(&h.finalize());
    if let Some(exp) = expected {
        if exp != sha256 {
            return Err(Error::integrity(format!(
                "{loc}: what was read hashes to {sha256}, not to {exp} as its sidecar says; the upload was aborted"
            )));
        }
    }
    let (version_id, _) = w.finish()?;
    Ok(Uploaded {
        sha256,
        size,
        version_id,
    })
}

/// Set `retention` on a version and read it back: an error unless the
/// server now reports the same mode and a date at least as late.
/// (radosgw 16.2 ignores Object Lock headers on CreateMultipartUpload, so
/// retention is set after completion; issue #13.)
pub fn retain(loc: &Location, version: Option<&str>, r: &Retention) -> Result<Retention> {
    let c = client()?;
    c.put_retention(loc, version, r)?;
    check_retention(loc, version, r)
}

/// Read a version's retention back and compare it with what was asked.
pub fn check_retention(loc: &Location, version: Option<&str>, r: &Retention) -> Result<Retention> {
    match client()?.get_retention(loc, version)? {
        Some(got) if got.mode == r.mode && got.until >= r.until => Ok(got),
        got => Err(Error::Refused(format!(
            "{loc}: retention read back is {}, not {} until {} as set; the server does not keep Object Lock retention",
            got.map(|g| format!("{} until {}", g.mode, g.until))
                .unwrap_or_else(|| "none".into()),
            r.mode,
            r.until
        ))),
    }
}

/// Re-read an object version from the server and hash it.
pub fn read_back(loc: &Location, version: Option<&str>) -> Result<(String, u64)> {
    let mut o = super::ObjectReader::open_version(loc, version)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; crate::io::BUF_SIZE];
    let mut n = 0u64;
    loop {
        crate::signal::check()?;
        let k = o.read(&mut buf).map_err(|e| Error::Io {
            op: "cannot read back",
            path: loc.to_string().into(),
            cause: e,
        })?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// Abort the multipart uploads under `prefix` whose key `ours` accepts:
/// uploads an interrupted earlier run started (the caller holds the lock
/// that keeps other writers out). Returns the keys aborted.
pub fn abort_stale(prefix: &Location, ours: &dyn Fn(&str) -> bool) -> Result<Vec<String>> {
    let c = client()?;
    let mut out = Vec::new();
    for u in c.list_uploads(prefix)? {
        if ours(&u.key) {
            c.abort_multipart(&prefix.with_key(u.key.clone()), &u.upload_id)?;
            out.push(u.key);
        }
    }
    Ok(out)
}

/// A `Write` that uploads what it is given as a multipart upload of
/// [`part_size`] parts, [`IN_FLIGHT`] at a time on threads of their own, so
/// that sealing and uploading overlap. At most [`PARTS_HELD`] parts exist
/// at once. [`UploadWriter::finish`] completes the upload; dropped
/// unfinished (an error, a signal), it stops its threads and aborts it.
pub struct UploadWriter {
    loc: Location,
    id: String,
    /// The part being filled (number `next`).
    buf: Option<PartBody>,
    next: u32,
    sha512: Option<sha2::Sha512>,
    pool: Option<Pool>,
    done: bool,
}

impl UploadWriter {
    /// Start a multipart upload to `loc`; with `sha512`, also hash what is
    /// written with SHA-512 (for the vault's outer signature).
    pub fn start(loc: &Location, sha512: bool) -> Result<UploadWriter> {
        let c = client()?;
        let id = c.create_multipart(loc)?;
        let (wloc, wid) = (loc.clone(), id.clone());
        let f: Arc<PartFn> = Arc::new(move |n, body| c.upload_part(&wloc, &wid, n, body));
        UploadWriter::with_pool(loc, id, sha512, IN_FLIGHT, f)
    }

    fn with_pool(
        loc: &Location,
        id: String,
        sha512: bool,
        threads: usize,
        f: Arc<PartFn>,
    ) -> Result<UploadWriter> {
        let mut w = UploadWriter {
            loc: loc.clone(),
            id,
            buf: None,
            next: 1,
            sha512: sha512.then(sha2::Sha512::new),
            pool: None,
            done: false,
        };
        let pool = Pool::new(threads, f).map_err(|e| w.io_error(e))?;
        w.pool = Some(pool);
        w.buf = Some(PartBody::new(1).map_err(|e| w.io_error(e))?);
        Ok(w)
    }

    fn io_error(&self, e: io::Error) -> Error {
        Error::Io {
            op: "cannot upload",
            path: self.loc.to_string().into(),
            cause: e,
        }
    }

    /// Why the pool stopped: the first part's error, typed as it came.
    fn stopped(&mut self) -> Error {
        self.pool
            .as_mut()
            .and_then(Pool::take_error)
            .unwrap_or_else(|| s3_stopped(&self.loc))
    }

    fn too_large(&self) -> Error {
        Error::Refused(format!(
            "{}: larger than S3's {MAX_PARTS} parts allow (about 8 TiB); not uploaded",
            self.loc
        ))
    }

    /// Send the part being filled and start the next one.
    fn send(&mut self) -> Result<()> {
        crate::signal::check()?;
        if self.next > MAX_PARTS {
            return Err(self.too_large());
        }
        let Some(mut body) = self.buf.take() else {
            return Err(s3_stopped(&self.loc));
        };
        if let PartBody::File { file, .. } = &mut body {
            file.flush().map_err(|e| self.io_error(e))?;
        }
        let n = self.next;
        let sent = self.pool.as_mut().is_some_and(|p| p.send(n, body));
        if !sent {
            return Err(self.stopped());
        }
        self.next += 1;
        self.buf = Some(PartBody::new(self.next).map_err(|e| self.io_error(e))?);
        Ok(())
    }

    /// Append `data`, sending every part that fills up: the typed error of
    /// a failed part, where [`io::Write`] can only pass a message on.
    pub fn put(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            // A byte past the last part S3 allows: refused at once, not
            // after buffering a part that can never be sent.
            if self.next > MAX_PARTS {
                return Err(self.too_large());
            }
            let Some(buf) = &mut self.buf else {
                return Err(s3_stopped(&self.loc));
            };
            let room = part_size(self.next) - buf.len();
            let n = (data.len() as u64).min(room) as usize;
            if let Err(e) = buf.extend(&data[..n]) {
                return Err(self.io_error(e));
            }
            if let Some(h) = &mut self.sha512 {
                h.update(&data[..n]);
            }
            data = &data[n..];
            if n as u64 == room {
                self.send()?;
            }
        }
        Ok(())
    }

    /// Send the last part and complete the upload: the object is visible
    /// from now on. Returns its version id and, if asked for, the SHA-512
    /// of what was written.
    pub fn finish(mut self) -> Result<(Option<String>, Option<[u8; 64]>)> {
        let parts = match &self.buf {
            // S3 needs at least one part, even an empty one.
            Some(b) if b.len() > 0 || self.next == 1 => {
                self.send()?;
                self.next - 1
            }
            _ => self.next - 1,
        };
        self.buf = None;
        let etags = match self.pool.take().map(|p| p.finish(parts)) {
            Some(Ok(etags)) => etags,
            Some(Err(Some(e))) => return Err(e),
            _ => return Err(s3_stopped(&self.loc)),
        };
        crate::signal::check()?;
        let version = client()?.complete_multipart(&self.loc, &self.id, &etags)?;
        self.done = true;
        let digest = self.sha512.take().map(|h| h.finalize().into());
        Ok((version, digest))
    }
}

fn s3_stopped(loc: &Location) -> Error {
    Error::Io {
        op: "cannot upload",
        path: loc.to_string().into(),
        cause: io::Error::other("the upload threads stopped"),
    }
}

/// Not a file: nothing to gain from whole aligned chunks.
impl crate::direct::Sink for UploadWriter {}

impl io::Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.put(data)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        if !self.done {
            // Stop the threads first: no part may land after the abort.
            drop(self.pool.take());
            if let Ok(c) = client() {
                // Best effort: the next sweep aborts what is left.
                let _ = c.abort_multipart(&self.loc, &self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    #[test]
    fn part_sizes_double_every_thousand_parts_and_fit_five_tib() {
        assert_eq!(part_size(1), 8 * MIB);
        assert_eq!(part_size(1000), 8 * MIB);
        assert_eq!(part_size(1001), 16 * MIB);
        assert_eq!(part_size(2001), 32 * MIB);
        assert_eq!(part_size(9001), 4096 * MIB);
        assert_eq!(part_size(MAX_PARTS), 4096 * MIB);
        let mut total = 0u64;
        let mut prev = 0;
        for n in 1..=MAX_PARTS {
            let s = part_size(n);
            // S3: at least 5 MiB (but the last), at most 5 GiB per part.
            assert!((5 * MIB..=5 << 30).contains(&s), "part {n}: {s}");
            assert!(s >= prev);
            prev = s;
            total += s;
        }
        // S3's largest object is 5 TiB; the documented totals.
        assert!(total >= 5 << 40, "{total}");
        assert_eq!(total, 8 * MIB * 1000 * 1023);
        assert_eq!((1..=1000).map(part_size).sum::<u64>(), 8000 * MIB);
        assert_eq!((1..=6000).map(part_size).sum::<u64>(), 8000 * MIB * 63);
        // Parts held in memory: at most PARTS_HELD of MEM_PART_MAX.
        assert!(PARTS_HELD as u64 * MEM_PART_MAX <= 40 * MIB);
    }

    fn mem(n: u8, len: usize) -> PartBody {
        PartBody::Mem(vec![n; len])
    }

    #[test]
    fn parts_complete_out_of_order_and_etags_stay_in_part_order() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let busy = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (o, b, m) = (order.clone(), busy.clone(), most.clone());
        let f: Arc<PartFn> = Arc::new(move |n, body| {
            let now = b.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            // Part 1 is the slowest: later parts overtake it.
            let ms = if n == 1 {
                300
            } else {
                20 + 10 * (n as u64 % 3)
            };
            std::thread::sleep(Duration::from_millis(ms));
            let PartBody::Mem(v) = body else {
                panic!("in memory")
            };
            assert!(v.iter().all(|&x| x == n as u8));
            o.lock().unwrap().push(n);
            b.fetch_sub(1, Ordering::SeqCst);
            Ok(format!("etag-{n}"))
        });
        let mut pool = Pool::new(IN_FLIGHT, f).unwrap();
        for n in 1..=12u32 {
            assert!(pool.send(n, mem(n as u8, 100)));
        }
        let etags = pool.finish(12).map_err(|_| "failed").unwrap();
        let want: Vec<String> = (1..=12).map(|n| format!("etag-{n}")).collect();
        assert_eq!(etags, want);
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 12);
        assert_ne!(order[0], 1, "part 1 finished first: {order:?}");
        assert!(order.iter().position(|&n| n == 1) > order.iter().position(|&n| n == 2));
        // Parallel, but never more than IN_FLIGHT at once.
        let most = most.load(Ordering::SeqCst);
        assert!(most > 1 && most <= IN_FLIGHT, "{most}");
    }

    #[test]
    fn the_first_error_stops_the_pool_and_is_returned() {
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let f: Arc<PartFn> = Arc::new(move |n, _| {
            s.fetch_add(1, Ordering::SeqCst);
            if n == 3 {
                return Err(Error::Refused("part 3 refused".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
            Ok(format!("e{n}"))
        });
        let mut pool = Pool::new(IN_FLIGHT, f).unwrap();
        let mut sent = 0u32;
        for n in 1..=1000u32 {
            if !pool.send(n, mem(0, 10)) {
                break;
            }
            sent += 1;
        }
        // The sender notices within a few parts, not after all 1000 (a
        // generous bound: the threads may be scheduled late).
        assert!((sent as usize) <= 3 + 4 * IN_FLIGHT, "{sent}");
        match pool.finish(sent) {
            Err(Some(Error::Refused(m))) => assert_eq!(m, "part 3 refused"),
            Err(Some(e)) => panic!("{e}"),
            Err(None) => panic!("no error"),
            Ok(_) => panic!("completed"),
        }
        assert!(started.load(Ordering::SeqCst) <= sent as usize);
    }

    #[test]
    fn a_missing_part_is_not_completed() {
        let f: Arc<PartFn> = Arc::new(|n, _| Ok(format!("e{n}")));
        let mut pool = Pool::new(2, f).unwrap();
        assert!(pool.send(1, mem(0, 1)));
        assert!(pool.send(3, mem(0, 1)));
        assert!(matches!(pool.finish(3), Err(None)));
    }

    #[test]
    fn a_byte_past_the_last_part_is_refused_at_once() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s = sent.clone();
        let f: Arc<PartFn> = Arc::new(move |n, body| {
            s.lock().unwrap().push((n, body.len()));
            Ok(format!("e{n}"))
        });
        let loc = Location::parse("s3://bucket/C1/C1.vault").unwrap().unwrap();
        let mut w = UploadWriter::with_pool(&loc, "id".into(), false, 2, f).unwrap();
        // As if 9,999 parts had gone: the last one S3 allows is filling.
        w.next = MAX_PARTS;
        w.put(b"last part").unwrap();
        w.send().unwrap();
        let err = w.put(b"x").unwrap_err().to_string();
        assert!(
            err.contains("s3://bucket/C1/C1.vault") && err.contains("10000 parts"),
            "{err}"
        );
        // Nothing more was buffered or sent.
        assert_eq!(w.buf.as_ref().map(PartBody::len), Some(0));
        let start = std::time::Instant::now();
        while sent.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        w.done = true; // no abort call to a server that is not there
        drop(w);
        assert_eq!(*sent.lock().unwrap(), [(MAX_PARTS as i32, 9)]);
    }

    #[test]
    fn big_parts_go_to_a_temporary_file() {
        let mut b = PartBody::File {
            file: tempfile::tempfile().unwrap(),
            len: 0,
        };
        b.extend(b"abc").unwrap();
        b.extend(b"def").unwrap();
        assert_eq!(b.len(), 6);
        assert!(part_size(1001) > MEM_PART_MAX);
        assert!(matches!(PartBody::new(1).unwrap(), PartBody::Mem(_)));
    }
}

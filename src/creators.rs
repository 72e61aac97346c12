//! Small files of an unseal, created on two threads beside the payload
//! reader (issue #12).
//!
//! Unsealing a million small files is bound by the kernel's work to create
//! each one (the directory entry, the inode, the first block), which ran on
//! the thread that also reads the tar stream, while the second core idled.
//! The reader now hashes a small file as before and hands its bytes here;
//! two threads take alternate batches and create, write and close the files
//! in the staging directory. Nothing changes in what is checked or when: the
//! staging directory is moved into place only after every check, and a
//! file the threads failed to create fails the unseal like one the reader
//! failed to create, with the same message. Directories and large files
//! are still made by the reader itself: a directory exists before any file
//! inside it is handed over, because handing over is ordered after it.

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use crate::unseal::ParentCache;
use crate::{Error, Result};

/// Files of at most this many bytes are created by the threads here; the
/// reader reads each whole into memory first.
pub const SMALL_FILE: u64 = 64 << 10;

/// A batch is handed over at this many files or bytes, whichever comes
/// first.
const BATCH_FILES: usize = 32;
const BATCH_BYTES: usize = 256 << 10;

/// Batches queued per thread: with the one being worked on and the one
/// being filled, at most `2 × (DEPTH + 1) + 1` batches (about 2.8 MiB) are
/// in memory.
const DEPTH: usize = 4;

/// One file: its place in the payload, its path relative to the staging
/// directory, its bytes.
type Small = (u64, String, Vec<u8>);

/// The first failure by payload order, and whether there was one (read
/// without the lock by the reader at each file it hands over, after which
/// it hands over no more).
#[derive(Default)]
struct Failure {
    any: AtomicBool,
    first: Mutex<Option<(u64, Error)>>,
}

impl Failure {
    fn record(&self, seq: u64, e: Error) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.as_ref().is_none_or(|(s, _)| seq < *s) {
            *first = Some((seq, e));
        }
        self.any.store(true, Ordering::Release);
    }
}

/// The creating threads, and the batch being filled.
pub struct Creators<'scope> {
    txs: Vec<SyncSender<Vec<Small>>>,
    threads: Vec<std::thread::ScopedJoinHandle<'scope, ()>>,
    batch: Vec<Small>,
    bytes: usize,
    seq: u64,
    next: usize,
    failure: Arc<Failure>,
    /// Set when the reader gives up: queued files are then dropped, not
    /// created.
    stop: Arc<AtomicBool>,
}

impl<'scope> Creators<'scope> {
    /// Two threads in `scope` creating files below the staging directory
    /// `staging` (at `root`), if there are two cores; `None` otherwise.
    pub fn start<'env: 'scope>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        staging: BorrowedFd<'env>,
        root: &'env Path,
    ) -> Option<Creators<'scope>> {
        if !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
            return None;
        }
        let failure = Arc::new(Failure::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (mut txs, mut threads) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Small>>(DEPTH);
            let (failure, stop) = (failure.clone(), stop.clone());
            let spawned = std::thread::Builder::new()
                .name("casevault-create".into())
                .spawn_scoped(scope, move || {
                    let mut parent = ParentCache::default();
                    for batch in rx {
                        for (seq, rel, data) in batch {
                            // After a failure the rest of the queue (a few
                            // MiB) is still created, so that the failure
                            // reported is the first in payload order.
                            if stop.load(Ordering::Relaxed) {
                                continue;
                            }
                            if let Err(e) = create(staging, &mut parent, root, &rel, &data) {
                                failure.record(seq, e);
                            }
                        }
                    }
                });
            // A thread that cannot be started: the other one, or none,
            // does the work (a failure to start is no reason to fail).
            if let Ok(t) = spawned {
                txs.push(tx);
                threads.push(t);
            }
        }
        if txs.is_empty() {
            return None;
        }
        Some(Creators {
            txs,
            threads,
            batch: Vec::with_capacity(BATCH_FILES),
            bytes: 0,
            seq: 0,
            next: 0,
            failure,
            stop,
        })
    }

    /// Queue the file at `rel` with `data`. A failure of a file queued
    /// earlier is returned here, as soon as it is known.
    pub fn add(&mut self, rel: &str, data: Vec<u8>) -> Result<()> {
        if self.failure.any.load(Ordering::Acquire) {
            return self.take_failure();
        }
        self.bytes += data.len();
        self.batch.push((self.seq, rel.to_owned(), data));
        self.seq += 1;
        if self.batch.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES {
            self.hand_over();
        }
        Ok(())
    }

    fn hand_over(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_FILES));
        self.bytes = 0;
        let n = self.txs.len();
        // Alternate threads; one that ended (it only ends when its
        // channel closes) cannot take it, so try the others.
        let mut batch = Some(batch);
        for i in 0..n {
            let k = (self.next + i) % n;
            match self.txs[k].send(batch.take().expect("still here")) {
                Ok(()) => {
                    self.next = k + 1;
                    return;
                }
                Err(std::sync::mpsc::SendError(b)) => batch = Some(b),
            }
        }
        self.failure.record(
            self.seq,
            Error::Refused("the threads creating files stopped".into()),
        );
    }

    /// The recorded failure, once: it is then on its way to the user
    /// (from [`Creators::add`], through the reader, to
    /// [`Creators::settle`], which must not replace it).
    fn take_failure(&mut self) -> Result<()> {
        let mut first = self.failure.first.lock().unwrap_or_else(|p| p.into_inner());
        match first.take() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// The outcome of the read that fed these threads, once they have
    /// created everything queued: the first failure in payload order. A
    /// failure here is of a file handed over before the reader stopped,
    /// so it comes before the reader's own (as it would have, the reader
    /// creating every file itself). An interruption is returned at once.
    pub fn settle<T>(self, read: Result<T>) -> Result<T> {
        match read {
            Ok(v) => self.finish().map(|()| v),
            Err(e @ Error::Interrupted(_)) => {
                self.abandon();
                Err(e)
            }
            Err(e) => Err(self.finish().err().unwrap_or(e)),
        }
    }

    /// Create everything queued and wait for the threads to end; the
    /// first failure in payload order.
    pub fn finish(mut self) -> Result<()> {
        if !self.batch.is_empty() {
            self.hand_over();
        }
        self.join();
        self.take_failure()
    }

    /// Drop what is queued and wait for the threads to end (the reader
    /// failed: the staging directory is about to be removed, and nothing
    /// may be created in it meanwhile).
    pub fn abandon(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.join();
    }

    /// Close the queues and wait for the threads. One that panicked
    /// created some of its files, not all: a failure, after every file
    /// queued before (the scope would otherwise panic as it ends).
    fn join(&mut self) {
        self.txs.clear();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                self.failure.record(
                    u64::MAX,
                    Error::Refused("a thread creating the case's files stopped".into()),
                );
            }
        }
    }
}

impl Drop for Creators<'_> {
    /// Never leave the threads creating files behind the caller's back.
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.store(true, Ordering::Relaxed);
            self.join();
        }
    }
}

/// Create the file at `rel` below `staging` and write `data` to it, with
/// the messages of the reader's own extractor.
fn create(
    staging: BorrowedFd<'_>,
    parent: &mut ParentCache,
    root: &Path,
    rel: &str,
    data: &[u8],
) -> Result<()> {
    let mut f = crate::unseal::create_at(staging, parent, root, rel)?;
    f.write_all(data)
        .map_err(|e| Error::io("cannot write", &root.join(rel), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A staging directory with one subdirectory, `d`.
    fn staging() -> (tempfile::TempDir, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        (dir, fd)
    }

    #[test]
    fn every_file_handed_over_is_created_with_its_bytes() {
        let (dir, fd) = staging();
        let root = dir.path().to_path_buf();
        let started = std::thread::scope(|s| {
            let Some(mut c) = Creators::start(s, fd.as_fd(), &root) else {
                return false;
            };
            for i in 0..1000 {
                c.add(&format!("d/f{i}"), vec![i as u8; i % 300]).unwrap();
            }
            c.finish().unwrap();
            true
        });
        if !started {
            return; // one core: no threads, the reader creates the files
        }
        for i in 0..1000 {
            let got = std::fs::read(root.join(format!("d/f{i}"))).unwrap();
            assert_eq!(got, vec![i as u8; i % 300], "d/f{i}");
        }
    }

    /// Two files fail, on the two threads (batches of 32 alternate): the
    /// one earlier in the payload is reported, whichever failed first.
    #[test]
    fn the_first_failure_in_payload_order_is_reported() {
        let (dir, fd) = staging();
        let root = dir.path().to_path_buf();
        let outcome = std::thread::scope(|s| {
            let mut c = Creators::start(s, fd.as_fd(), &root)?;
            for i in 0..100 {
                let rel = match i {
                    5 => "nowhere/first".to_string(),
                    40 => "nowhere/second".to_string(),
                    _ => format!("d/f{i}"),
                };
                if let Err(e) = c.add(&rel, b"x".to_vec()) {
                    return Some(Err(e));
                }
            }
            Some(c.finish())
        });
        let err = match outcome {
            None => return, // one core
            Some(Ok(())) => panic!("two files could not be created, and nothing was reported"),
            Some(Err(e)) => e,
        };
        let text = err.to_string();
        assert!(text.contains("cannot create file"), "{text}");
        assert!(text.contains("nowhere/first"), "{text}");
        assert_eq!(err.kind(), crate::error::ErrorKind::Operational, "{text}");
    }
}

//! Streaming uploads: a vault goes up as a multipart upload of fixed-size
//! parts read from any `Read` (a sealing pipeline, a local vault), so no
//! local copy is needed and memory stays at one part buffer
//! ([`PART_SIZE`]) whatever the size. The object appears only when
//! CompleteMultipartUpload succeeds; on any error the upload is aborted
//! (best effort; a crash leaves it to [`abort_stale`] of the next run).

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::{client, Location, Retention};
use crate::io::hex;
use crate::{Error, Result};

/// Size of one part: 16 MiB. S3 allows 10,000 parts, so a vault may be up
/// to 156 GiB; one part is held in memory at a time.
pub const PART_SIZE: usize = 16 << 20;

/// What an upload wrote.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub sha256: String,
    pub size: u64,
    pub version_id: Option<String>,
}

/// Fill `buf` from `r` as far as it goes; the count read.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Upload everything `r` yields to `loc` as one object, hashing it on the
/// way. `read_err` turns a read error of `r` into casevault's error (the
/// source decides what a failed read means). The object is complete and
/// visible when this returns `Ok`, and absent when it returns `Err`.
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
    let c = client()?;
    let id = c.create_multipart(loc)?;
    let res = (|| {
        let mut etags = Vec::new();
        let mut h = Sha256::new();
        let mut size = 0u64;
        loop {
            crate::signal::check()?;
            let mut buf = vec![0u8; PART_SIZE];
            let n = fill(r, &mut buf).map_err(read_err)?;
            // An empty object still has one (empty) part.
            if n == 0 && !etags.is_empty() {
                break;
            }
            buf.truncate(n);
            h.update(&buf);
            size += n as u64;
            etags.push(c.upload_part(loc, &id, etags.len() as i32 + 1, buf)?);
            if n < PART_SIZE {
                break;
            }
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
        let version_id = c.complete_multipart(loc, &id, &etags)?;
        Ok(Uploaded {
            sha256,
            size,
            version_id,
        })
    })();
    if res.is_err() {
        let _ = c.abort_multipart(loc, &id);
    }
    res
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
/// [`PART_SIZE`] parts, on a thread of its own so that sealing and
/// uploading overlap. At most one part is being filled and one in flight
/// (memory: two parts, 32 MiB). [`UploadWriter::finish`] completes the
/// upload; dropped unfinished (an error, a signal), it aborts it.
pub struct UploadWriter {
    loc: Location,
    id: String,
    buf: Vec<u8>,
    sha512: Option<sha2::Sha512>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<Result<Vec<String>>>>,
    sent: u32,
    done: bool,
}

impl UploadWriter {
    /// Start a multipart upload to `loc`; with `sha512`, also hash what is
    /// written with SHA-512 (for the vault's outer signature).
    pub fn start(loc: &Location, sha512: bool) -> Result<UploadWriter> {
        let c = client()?;
        let id = c.create_multipart(loc)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(0);
        let (wloc, wid) = (loc.clone(), id.clone());
        let worker = std::thread::spawn(move || -> Result<Vec<String>> {
            let mut etags = Vec::new();
            for part in rx {
                etags.push(c.upload_part(&wloc, &wid, etags.len() as i32 + 1, part)?);
            }
            Ok(etags)
        });
        Ok(UploadWriter {
            loc: loc.clone(),
            id,
            buf: Vec::with_capacity(PART_SIZE),
            sha512: sha512.then(sha2::Sha512::new),
            tx: Some(tx),
            worker: Some(worker),
            sent: 0,
            done: false,
        })
    }

    /// The worker's error, once it stopped.
    fn worker_error(&mut self) -> io::Error {
        self.tx = None;
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => io::Error::other(e.to_string()),
            _ => io::Error::other(format!("the upload to {} stopped", self.loc)),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(PART_SIZE));
        let sent = self.tx.as_ref().map(|tx| tx.send(part));
        match sent {
            Some(Ok(())) => {
                self.sent += 1;
                Ok(())
            }
            _ => Err(self.worker_error()),
        }
    }

    /// Send the last part and complete the upload: the object is visible
    /// from now on. Returns its version id and, if asked for, the SHA-512
    /// of what was written.
    pub fn finish(mut self) -> Result<(Option<String>, Option<[u8; 64]>)> {
        if !self.buf.is_empty() || self.sent == 0 {
            // S3 needs at least one part, even an empty one.
            self.send().map_err(|e| Error::Io {
                op: "cannot upload",
                path: self.loc.to_string().into(),
                cause: e,
            })?;
        }
        self.tx = None;
        let etags = match self.worker.take().map(|w| w.join()) {
            Some(Ok(r)) => r?,
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
        cause: io::Error::other("the upload thread stopped"),
    }
}

impl io::Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PART_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if let Some(h) = &mut self.sha512 {
            h.update(&data[..n]);
        }
        if self.buf.len() == PART_SIZE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        if !self.done {
            self.tx = None;
            if let Some(w) = self.worker.take() {
                let _ = w.join();
            }
            if let Ok(c) = client() {
                // Best effort: the next sweep aborts what is left.
                let _ = c.abort_multipart(&self.loc, &self.id);
            }
        }
    }
}

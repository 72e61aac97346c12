//! A full read of a binary version 3 vault in memory that does not grow
//! with the case (issue #12): `casevault.json` and the manifest are first
//! checked from the end of the vault (FORMAT §13.3 step 5), then the
//! payload is streamed and each tar entry is compared with the next entry
//! of `casevault.json`, which a second cursor streams beside it on its own
//! thread. Nothing is kept per entry but the symlink records (bounded by
//! FORMAT §6.1); the findings are those of the in-memory check.

use std::cell::RefCell;
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;

use super::random::{check_meta, RandomVault, Tail};
use crate::error::{Finding, Listing};
use crate::format::{self, CaseJson, Entry, Kind};
use crate::{Error, Result};

/// Entries in flight between the two cursors, in batches: one message
/// per entry cost a thread wake-up per entry (15 % of an unseal's CPU on
/// 195k small files).
const AHEAD: usize = 4096;
const BATCH: usize = 256;

/// A message from the `casevault.json` cursor.
enum Next {
    Entries(Vec<Entry>),
    /// The metadata did not check: the cursor's result says why.
    Failed,
}

/// What the cursor thread ends with: the vault, and the metadata's check:
/// `casevault.json` without its entries but with the symlink records.
type Cursor = (RandomVault, Result<CaseJson>);

/// The checked metadata of a version 3 vault and the cursor that streams
/// its directory and file entries, in order.
pub struct Lockstep {
    pub(super) tail: Tail,
    /// `casevault.json` without its entries, and the symlink records,
    /// once the cursor has checked the metadata to its end.
    json: Option<CaseJson>,
    rx: Option<Receiver<Next>>,
    /// The rest of the batch last received.
    batch: std::vec::IntoIter<Entry>,
    handle: Option<JoinHandle<Cursor>>,
    /// Why the metadata did not check, once the cursor has ended.
    failed: Option<Error>,
    /// The next expected entry, taken from `rx` but not yet matched.
    peeked: Option<Entry>,
    /// Findings, as the in-memory check orders them: the manifest's, then
    /// `casevault.json`'s.
    pub(super) against_manifest: Vec<Finding>,
    pub(super) against_json: Vec<Finding>,
    /// The vault, back from the cursor thread once the entries are done.
    vault: Option<RandomVault>,
}

impl Lockstep {
    /// Start the cursor: one pass over `casevault.json` and the manifest
    /// from the end of the vault (FORMAT §13.3 step 5), which checks them
    /// and streams the entries to the payload reader as it goes. Nothing
    /// it streams is trusted before it ends: the payload is extracted
    /// into staging meanwhile, and [`Lockstep::payload_done`] waits for
    /// its verdict. A vault whose metadata does not check is read again
    /// with every entry held ([`Lockstep::verdict`]).
    pub fn start(rv: RandomVault, tail: Tail) -> Result<Lockstep> {
        let (tx, rx) = mpsc::sync_channel(AHEAD / BATCH);
        let tail2 = tail.clone();
        let handle = std::thread::Builder::new()
            .name("casevault-index".into())
            .spawn(move || {
                let cell = RefCell::new(rv);
                let stopped = |_| Error::integrity("the payload reader stopped");
                let mut batch = Vec::with_capacity(BATCH);
                let mut links = Vec::new();
                let res = check_meta(&cell, &tail2, &mut |e| {
                    if e.kind == Kind::Symlink {
                        // Bounded by FORMAT §6.1 (MAX_LINKS), as checked.
                        links.push(e.clone());
                    } else {
                        batch.push(e.clone());
                        if batch.len() == BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            tx.send(Next::Entries(full)).map_err(stopped)?;
                        }
                    }
                    Ok(())
                });
                // What was read before a failure goes first, in order.
                if !batch.is_empty() {
                    let _ = tx.send(Next::Entries(batch));
                }
                if res.is_err() {
                    let _ = tx.send(Next::Failed);
                }
                let res = res.map(|(mut json, _signature)| {
                    json.entries = links;
                    json
                });
                (cell.into_inner(), res)
            })
            .map_err(|e| Error::Refused(format!("cannot start a thread: {e}")))?;
        Ok(Lockstep {
            tail,
            json: None,
            rx: Some(rx),
            batch: Vec::new().into_iter(),
            handle: Some(handle),
            failed: None,
            peeked: None,
            against_manifest: Vec::new(),
            against_json: Vec::new(),
            vault: None,
        })
    }

    /// `casevault.json` without its entries, and the symlink records, as
    /// checked to its end; an error before [`Lockstep::payload_done`].
    pub(super) fn json(&self) -> Result<&CaseJson> {
        self.json
            .as_ref()
            .ok_or_else(|| Error::integrity("tag files missing"))
    }

    fn pull(&mut self) -> Result<Option<Entry>> {
        if let Some(e) = self.peeked.take() {
            return Ok(Some(e));
        }
        loop {
            if let Some(e) = self.batch.next() {
                return Ok(Some(e));
            }
            match self.rx.as_ref().and_then(|rx| rx.recv().ok()) {
                Some(Next::Entries(b)) => self.batch = b.into_iter(),
                Some(Next::Failed) => {
                    self.join();
                    // Never shown: the caller asks for the verdict, and
                    // reads the vault again with every entry held.
                    return Err(Error::integrity(
                        "the metadata at the end of the vault does not check",
                    ));
                }
                None => return Ok(None),
            }
        }
    }

    /// Wait for the cursor, which has sent all it will.
    fn join(&mut self) {
        self.rx.take();
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok((rv, res)) => {
                    self.vault = Some(rv);
                    match res {
                        Ok(json) => self.json = Some(json),
                        Err(e) => self.failed = Some(e),
                    }
                }
                Err(p) => std::panic::resume_unwind(p),
            }
        }
    }

    /// After a read in lockstep failed: whether the metadata checks. The
    /// cursor runs to its end (what it still sends is dropped), so that
    /// the answer does not depend on where the payload failed. An
    /// integrity error here means the read must be made again with every
    /// entry held, which gives the full read's own findings.
    pub fn verdict(mut self) -> Result<()> {
        self.peeked = None;
        while let Some(rx) = self.rx.as_ref() {
            match rx.recv() {
                Ok(Next::Entries(_)) => {}
                Ok(Next::Failed) | Err(_) => break,
            }
        }
        self.join();
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The `casevault.json` entry for the payload entry `bag_path` (a
    /// directory or file) whose first header is at `offset`: entries the
    /// payload skipped are reported missing; `None` if the payload entry is
    /// not listed (reported unexpected). Both orders are the pre-order of
    /// FORMAT §3, so they are merged by path.
    pub(super) fn expect(
        &mut self,
        bag_path: &str,
        is_dir: bool,
        offset: u64,
    ) -> Result<Option<Entry>> {
        loop {
            let Some(e) = self.pull()? else {
                self.unexpected(bag_path, is_dir);
                return Ok(None);
            };
            match order_cmp(&e.path, bag_path) {
                std::cmp::Ordering::Less => self.missing(&e),
                std::cmp::Ordering::Greater => {
                    self.peeked = Some(e);
                    self.unexpected(bag_path, is_dir);
                    return Ok(None);
                }
                std::cmp::Ordering::Equal => {
                    if (e.kind == Kind::Dir) != is_dir {
                        return Err(Error::integrity(format!(
                            "{bag_path:?} is a {} in the payload and a {} in casevault.json",
                            if is_dir { "directory" } else { "file" },
                            e.kind.as_str()
                        )));
                    }
                    if e.offset != Some(offset) {
                        return Err(Error::integrity(format!(
                            "{}: the offset of {bag_path:?} is {}, but the entry is at {offset} (the index disagrees with the payload)",
                            format::CASEVAULT_JSON,
                            e.offset.map_or("missing".into(), |o| o.to_string())
                        )));
                    }
                    return Ok(Some(e));
                }
            }
        }
    }

    /// A file's size and digest as read, against its entry.
    pub(super) fn file(&mut self, e: &Entry, size: u64, digest: &str) {
        let want = e.sha256.clone().unwrap_or_default();
        if digest != want {
            self.against_manifest.push(Finding::HashMismatch {
                path: e.path.clone(),
                expected: want.clone(),
                actual: digest.to_string(),
                against: Listing::Manifest,
            });
        }
        if e.size != Some(size) {
            self.against_json.push(Finding::SizeMismatch {
                path: e.path.clone(),
                expected: e.size.unwrap_or(0),
                actual: size,
            });
        }
        if digest != want {
            self.against_json.push(Finding::HashMismatch {
                path: e.path.clone(),
                expected: want,
                actual: digest.to_string(),
                against: Listing::CaseJson,
            });
        }
    }

    /// The payload ended: whatever `casevault.json` still lists is
    /// missing, and the metadata must have checked to its end.
    pub(super) fn payload_done(&mut self) -> Result<()> {
        while let Some(e) = self.pull()? {
            self.missing(&e);
        }
        self.join();
        if self.failed.is_some() {
            return Err(Error::integrity(
                "the metadata at the end of the vault does not check",
            ));
        }
        Ok(())
    }

    fn missing(&mut self, e: &Entry) {
        let dir = e.kind == Kind::Dir;
        if !dir {
            self.against_manifest.push(Finding::Missing {
                path: e.path.clone(),
                listed_in: Listing::Manifest,
                dir,
            });
        }
        self.against_json.push(Finding::Missing {
            path: e.path.clone(),
            listed_in: Listing::CaseJson,
            dir,
        });
    }

    fn unexpected(&mut self, bag_path: &str, dir: bool) {
        if !dir {
            self.against_manifest.push(Finding::Unexpected {
                path: bag_path.to_string(),
                not_in: Listing::Manifest,
                dir,
            });
        }
        self.against_json.push(Finding::Unexpected {
            path: bag_path.to_string(),
            not_in: Listing::CaseJson,
            dir,
        });
    }

    /// The vault, for a later pass over `casevault.json` (unseal's modes
    /// and times), once the payload is done.
    pub fn into_vault(mut self) -> Option<(RandomVault, Tail)> {
        let v = self.vault.take()?;
        Some((v, self.tail.clone()))
    }
}

impl Drop for Lockstep {
    fn drop(&mut self) {
        // Stop the cursor (its next send fails) and wait for it.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The pre-order of FORMAT §3: paths compared component by component,
/// each by its bytes (without allocating: this runs for every entry).
fn order_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/')
        .map(str::as_bytes)
        .cmp(b.split('/').map(str::as_bytes))
}

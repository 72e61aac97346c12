//! `casevault salvage` (issue #16): recover every file of a damaged vault
//! that can still be proven intact, and say exactly what was lost and why
//! (docs/FORMAT.md §14).
//!
//! A file is restored into DEST only when all of its bytes come from age
//! chunks that authenticate *and* its size and SHA-256 match the entry
//! recorded in `casevault.json` (or, where that is lost and the payload
//! manifest survives, the SHA-256 the manifest lists: content only, no
//! modes or times). Everything else is listed: as *lost*
//! (recorded, but not recoverable as recorded) or as *unverifiable* (found
//! in the payload, but no recorded digest survives to check it against).
//! Unverifiable bytes go, only when asked (`--unverified DIR`), to a
//! separate directory; never into DEST.
//!
//! Two ways of reading:
//! - **index**: a binary version 3 vault whose end authenticates and whose
//!   metadata passes every check of FORMAT §13.3 steps 1–5. Each entry is
//!   read from its recorded offset; a zstd frame (or, uncompressed, a
//!   64 KiB age chunk) that does not decrypt or decode costs exactly the
//!   entries whose tar bytes touch it.
//! - **scan**: anything else (version 1 and 2, armored, truncated, or a
//!   version 3 vault whose end or metadata is damaged): the plaintext is
//!   read from its start. After damage, a binary vault's raw tar goes on
//!   at the next age chunk that authenticates, and a binary version 3
//!   vault's zstd frames at the next frame that decodes whole from
//!   authenticated bytes (`Frames`; tar offsets after that are unknown);
//!   one zstd stream (versions 1 and 2) and armor stop at the first
//!   failure. Files found whole are verified against `casevault.json` if
//!   the scan read it intact (or the payload manifest), else they are
//!   unverifiable.
//!
//! The staging rules are unseal's: DEST (and UNVERIFIED) appear complete,
//! by one rename each, or not at all.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::format::{self, CaseJson, Entry, Kind};
use crate::io::{hex, SourceReader, BUF_SIZE};
use crate::keys::BoxedIdentity;
use crate::read::random::{self, RandomVault, Tail};
use crate::read::{cipher, Extract, LinkStatus, Links};
use crate::unseal::{self, case_rel, MtimeNotStored, Staging, StagingDir};
use crate::{Error, Result};

/// What to salvage and where.
pub struct SalvageOptions {
    pub vault: PathBuf,
    /// Where verified files go (must not exist, or be empty).
    pub dest: PathBuf,
    pub identities: Vec<BoxedIdentity>,
    /// `--unverified DIR`: where bytes that could not be verified go.
    pub unverified: Option<PathBuf>,
    pub allow_external_links: bool,
}

/// The outcome of a salvage (`--json` object, docs/CLI.md).
#[derive(Debug, Serialize)]
pub struct SalvageReport {
    pub vault: PathBuf,
    pub dest: PathBuf,
    /// The directory holding unverified bytes: present when something was
    /// written there.
    pub unverified_dir: Option<PathBuf>,
    /// The case id, when it could be read.
    pub case_id: Option<String>,
    /// `true` exactly when every recorded entry was restored (exit 0).
    pub complete: bool,
    /// `"index"` or `"scan"` (see the module documentation).
    pub read: &'static str,
    /// Whether the recorded metadata was found and checked.
    pub index: IndexState,
    /// What DEST holds, all verified.
    pub restored: Counts,
    /// Recorded entries (or, by a scan, files seen in part) not restored.
    pub lost: Vec<Lost>,
    /// Files found whole by a scan that no surviving record lets check.
    pub unverifiable: Vec<Unverifiable>,
    /// A scan stopped here (tar offset) and why: what the vault held
    /// after it is unknown unless the index says.
    pub stopped: Option<Stopped>,
    /// Read through the index: every damaged unit of the payload (zstd
    /// frame, or 64 KiB age chunk of an uncompressed vault).
    pub damage: Vec<Damage>,
    /// As unseal's (docs/CLI.md).
    pub mtimes_not_stored: Vec<MtimeNotStored>,
}

/// Whether `casevault.json` was available to check against.
#[derive(Debug, Serialize)]
pub struct IndexState {
    /// `"checked"`: read and checked (from the end, or by the scan);
    /// `"damaged"`: a version 3 index that does not read or check;
    /// `"missing"`: the scan did not reach it (or the vault keeps none at
    /// its end and the scan stopped before it).
    pub state: &'static str,
    /// Why the index could not be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Counts of what was restored into DEST.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// A lost entry.
#[derive(Debug, Serialize)]
pub struct Lost {
    /// Path relative to the case folder.
    pub path: String,
    /// `"file"` or `"symlink"`.
    pub kind: &'static str,
    /// The recorded size (files), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub reason: String,
    /// Where its unverified bytes were put (under `unverified_dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverified_copy: Option<String>,
}

/// A file whose bytes are all present and authenticated but that nothing
/// recorded lets check.
#[derive(Debug, Serialize)]
pub struct Unverifiable {
    pub path: String,
    /// Its size as its tar header gives it.
    pub size: u64,
    /// SHA-256 of the bytes found.
    pub sha256: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverified_copy: Option<String>,
}

/// A part of the payload that does not decrypt or decode.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    /// `"zstd frame"`, `"age chunk"`, or `"zstd frames"` (a scan of a
    /// version 3 zstd vault: one or more frames, how many unknown).
    pub unit: &'static str,
    /// Its index (frame number in the seek table, or chunk number); for
    /// `"zstd frames"`, the first failed frame's, when known.
    pub index: Option<u64>,
    /// The tar bytes it held, `[tar_start, tar_end)`; `None` where
    /// unknown (FORMAT §14.4: after a resync in a zstd scan).
    pub tar_start: Option<u64>,
    pub tar_end: Option<u64>,
    /// `"zstd frames"` only: the decrypted (compressed) bytes skipped,
    /// `[plain_start, plain_end)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain_start: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain_end: Option<u64>,
    pub reason: String,
}

/// Where a scan stopped.
#[derive(Debug, Serialize)]
pub struct Stopped {
    /// Tar stream offset up to which the payload was read; `None` when
    /// unknown (after a resync in a zstd scan, FORMAT §14.4).
    pub tar_offset: Option<u64>,
    pub reason: String,
}

/// Salvage a vault: see the module documentation.
pub fn salvage(opts: SalvageOptions) -> Result<SalvageReport> {
    let _progress = crate::progress::Guard;
    unseal::check_dest(&opts.dest)?;
    if let Some(u) = &opts.unverified {
        if same_place(u, &opts.dest) {
            return Err(Error::Usage(
                "--unverified must name another directory than -o".into(),
            ));
        }
        unseal::check_dest(u)?;
    }
    let remember = crate::keys::Remembering::new(&opts.identities);
    let ids: [&dyn age::Identity; 1] = [&remember];
    check_header(&opts.vault, &ids)?;
    let (problem, manifest) = match open_index(&opts.vault, &ids) {
        Ok(Some(ix)) => return indexed(&opts, &ids, ix),
        Ok(None) => (None, None),
        Err(Error::Integrity(f)) => (Some(f.to_string()), manifest_from_end(&opts.vault, &ids)),
        Err(e) => return Err(e),
    };
    scan(&opts, &ids, problem, manifest)
}

/// A version 3 vault whose index does not check may still have an intact
/// end and payload manifest (the damage is in `casevault.json`): then the
/// manifest, checked against the tag manifest, is the record the scan
/// verifies files against, with the case id the tail names. Anything
/// wrong: none.
fn manifest_from_end(vault: &Path, ids: &[&dyn age::Identity]) -> Option<(String, Vec<u8>)> {
    let mut rv = RandomVault::open_salvage(vault, ids).ok()??;
    let tail = random::read_tail(&mut rv).ok()??;
    let m = random::read_manifest(&std::cell::RefCell::new(rv), &tail).ok()?;
    Some((tail.case_id, m))
}

fn same_place(a: &Path, b: &Path) -> bool {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    abs(a) == abs(b)
}

/// The age header: without it nothing decrypts. A header that does not
/// parse, whose MAC fails, or whose stanza fails to decrypt is damage
/// (exit 3); no identity matching is exit 4 (the CLI adds that a damaged
/// stanza looks the same).
fn check_header(vault: &Path, ids: &[&dyn age::Identity]) -> Result<()> {
    let f = crate::source::open_one(vault, "cannot open vault")?;
    match cipher::age_reader_with(BufReader::new(SourceReader(f)), ids) {
        Ok(_) => Ok(()),
        Err(e) => match cipher::map_error(vault, e) {
            Error::Integrity(f) => Err(Error::integrity(format!(
                "the age header is damaged ({f}): without it no byte of the vault can be \
                 decrypted, so nothing was salvaged; only `casevault repair` with the vault's \
                 parity file can bring it back"
            ))),
            other => Err(other),
        },
    }
}

/// A version 3 vault's checked metadata.
struct Index {
    rv: std::cell::RefCell<RandomVault>,
    tail: Tail,
    json: CaseJson,
}

/// Read the metadata from the end. `Ok(None)`: the vault has none there
/// (version 1 or 2, armored); `Err(Integrity)`: it is damaged.
fn open_index(vault: &Path, ids: &[&dyn age::Identity]) -> Result<Option<Index>> {
    let Some(mut rv) = RandomVault::open_salvage(vault, ids)? else {
        return Ok(None);
    };
    let Some(tail) = random::read_tail(&mut rv)? else {
        return Ok(None);
    };
    let rv = std::cell::RefCell::new(rv);
    let mut entries = Vec::new();
    let (mut json, _signature) = random::check_meta(&rv, &tail, &mut |e| {
        entries.push(e.clone());
        Ok(())
    })?;
    json.entries = entries;
    Ok(Some(Index { rv, tail, json }))
}

/// The staging directories of one salvage: DEST's, and UNVERIFIED's
/// (created when first needed).
struct Places {
    dest: StagingDir,
    uv: Unverified,
}

/// `--unverified DIR` and its staging directory, once created.
struct Unverified {
    target: Option<PathBuf>,
    staging: Option<StagingDir>,
}

impl Places {
    fn new(opts: &SalvageOptions) -> Result<Self> {
        Ok(Places {
            dest: StagingDir::create(&crate::io::parent_dir(&opts.dest))?,
            uv: Unverified {
                target: opts.unverified.clone(),
                staging: None,
            },
        })
    }

    /// Discard both staging directories after `e`.
    fn discard(self, e: Error) -> Error {
        if let Some(u) = self.uv.staging {
            let e = u.discard(e);
            return self.dest.discard(e);
        }
        self.dest.discard(e)
    }
}

impl Unverified {
    /// Move the file at `from` to `rel` (case-relative) below the
    /// unverified staging directory, if `--unverified` was given; else
    /// remove it. Returns the path it now has there.
    fn put(&mut self, from: &Path, rel: &str) -> Result<Option<String>> {
        let Some(target) = &self.target else {
            let _ = fs::remove_file(from);
            return Ok(None);
        };
        if self.staging.is_none() {
            self.staging = Some(StagingDir::create(&crate::io::parent_dir(target))?);
        }
        let root = &self.staging.as_ref().expect("created above").path;
        let to = root.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(parent)
                .map_err(|e| Error::io("cannot create directory", parent, e))?;
        }
        if fs::rename(from, &to).is_err() {
            fs::copy(from, &to).map_err(|e| Error::io("cannot write", &to, e))?;
            fs::remove_file(from).map_err(|e| Error::io("cannot remove", from, e))?;
        }
        Ok(Some(rel.to_string()))
    }
}

/// Salvage through the index (module documentation).
fn indexed(opts: &SalvageOptions, ids: &[&dyn age::Identity], ix: Index) -> Result<SalvageReport> {
    let mut places = Places::new(opts)?;
    match indexed_in(opts, ids, &ix, &mut places) {
        Ok(r) => Ok(r),
        Err(e) => Err(places.discard(e)),
    }
}

fn indexed_in(
    opts: &SalvageOptions,
    ids: &[&dyn age::Identity],
    ix: &Index,
    places: &mut Places,
) -> Result<SalvageReport> {
    let case_id = ix.tail.case_id.clone();
    let payload_end = ix.tail.locator.tags[0].offset;
    let mut report = new_report(opts, "index");
    report.case_id = Some(case_id.clone());
    report.index = IndexState {
        state: "checked",
        problem: None,
    };
    // Where each dir/file entry's tar bytes end: the next one's offset.
    let offsets: Vec<u64> = ix
        .json
        .entries
        .iter()
        .filter(|e| e.kind != Kind::Symlink)
        .map(|e| e.offset.unwrap_or(0))
        .collect();
    let mut next_end = offsets
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(payload_end));
    let mut units = Units::default();
    let mut links = Links::new(&ix.json);
    let mut kept = Vec::new();
    let root = places.dest.path.clone();
    let mut x = places.dest.staging();
    let mut buf = vec![0u8; BUF_SIZE];
    for e in &ix.json.entries {
        crate::signal::check()?;
        let end = if e.kind == Kind::Symlink {
            0
        } else {
            next_end.next().unwrap_or(payload_end)
        };
        match e.kind {
            Kind::Dir => {
                if e.path != "data" {
                    x.reserve(case_rel(&e.path), 0)?;
                    x.dir(case_rel(&e.path))?;
                    report.restored.dirs += 1;
                }
                kept.push(e.clone());
            }
            Kind::Symlink => {
                if let Some(why) = link_refused(opts, &mut links, e) {
                    report.lost.push(lost_link(e, why));
                } else {
                    report.restored.symlinks += 1;
                    kept.push(e.clone());
                }
            }
            Kind::File => {
                let start = e.offset.unwrap_or(0);
                let outcome = copy_entry(ix, &mut units, &case_id, e, &mut x, &mut buf)?;
                match outcome {
                    None => {
                        report.restored.files += 1;
                        report.restored.bytes += e.size.unwrap_or(0);
                        crate::progress::add_file();
                        kept.push(e.clone());
                    }
                    Some(why) => {
                        let uv = &mut places.uv;
                        let lost =
                            lost_file(why, e, (start, end), (ix, ids), &mut units, &root, uv);
                        report.lost.push(lost?);
                    }
                }
            }
        }
    }
    drop(x);
    units.sweep(&ix.rv, ids, payload_end)?;
    report.damage = units.found;
    let json = CaseJson {
        entries: kept,
        ..ix.json.clone()
    };
    finish(opts, places, &json, report)
}

/// The report of a file [`copy_entry`] did not restore. What was copied
/// goes under `--unverified`, if asked, or is removed; for damage met
/// while copying (not known before), the unit at fault is found to say
/// why.
fn lost_file(
    why: NotCopied,
    e: &Entry,
    (start, end): (u64, u64),
    (ix, ids): (&Index, &[&dyn age::Identity]),
    units: &mut Units,
    root: &Path,
    uv: &mut Unverified,
) -> Result<Lost> {
    let rel = case_rel(&e.path);
    let from = root.join(rel);
    let (reason, copy) = match why {
        NotCopied::Unreadable(why, true) => (why, None),
        NotCopied::Unreadable(first, false) => {
            // What was copied before the damage (whole reads only) goes
            // apart, if asked; else it is removed.
            let got = fs::symlink_metadata(&from).map_or(0, |m| m.len());
            let copy = if got > 0 {
                uv.put(&from, rel)?
            } else {
                let _ = fs::remove_file(&from);
                None
            };
            // Age's reader is spent after a chunk failed.
            ix.rv.borrow_mut().reopen(ids)?;
            let why = units.find_bad(&ix.rv, ids, start, end)?.unwrap_or(first);
            let why = match copy {
                Some(_) => format!(
                    "{why}; its first {got} bytes, read before the damage, are under --unverified"
                ),
                None => why,
            };
            (why, copy)
        }
        NotCopied::Mismatch(why) => (why, uv.put(&from, rel)?),
    };
    Ok(Lost {
        path: rel.to_string(),
        kind: "file",
        size: e.size,
        reason,
        unverified_copy: copy,
    })
}

/// Why one entry was not copied (errors that stop the salvage aside).
enum NotCopied {
    /// Some of its bytes did not decrypt or decode: why, and whether the
    /// unit at fault was known bad already (nothing was read).
    Unreadable(String, bool),
    /// Every byte read, but not the recorded size or SHA-256.
    Mismatch(String),
}

/// Copy file entry `e` from its offset into the staging directory,
/// checking its header, size and SHA-256 (FORMAT §13.3 step 6).
/// An entry is lost when its header or data (not its padding) touches a
/// damaged unit: units already known bad are not read again. `None`:
/// copied, and it checks.
fn copy_entry(
    ix: &Index,
    units: &mut Units,
    case_id: &str,
    e: &Entry,
    x: &mut Staging<'_>,
    buf: &mut [u8],
) -> Result<Option<NotCopied>> {
    let unreadable = |err: Error| match err {
        Error::Integrity(f) => Ok(Some(NotCopied::Unreadable(f.to_string(), false))),
        other => Err(other),
    };
    let rel = case_rel(&e.path);
    let offset = e.offset.unwrap_or(0);
    let known = units.known_bad(&ix.rv.borrow(), offset, offset + 512);
    if let Some(why) = known {
        return Ok(Some(NotCopied::Unreadable(why, true)));
    }
    let header = crate::read::select::header_at(&mut ix.rv.borrow_mut(), offset, case_id, e);
    let (data_at, size) = match header {
        Ok(h) => h,
        Err(err) => return unreadable(err),
    };
    let known = units.known_bad(&ix.rv.borrow(), offset, data_at + size);
    if let Some(why) = known {
        return Ok(Some(NotCopied::Unreadable(why, true)));
    }
    x.reserve(rel, size)?;
    let mut out = x.create_file(rel)?;
    let mut h = Sha256::new();
    let (mut pos, mut left) = (data_at, size);
    while left > 0 {
        crate::signal::check()?;
        let k = (buf.len() as u64).min(left) as usize;
        if let Err(err) = ix.rv.borrow_mut().read_at(pos, &mut buf[..k]) {
            return unreadable(err);
        }
        h.update(&buf[..k]);
        out.write_all(&buf[..k])
            .map_err(|err| x.write_error(rel, err))?;
        pos += k as u64;
        left -= k as u64;
    }
    out.flush().map_err(|err| x.write_error(rel, err))?;
    units.mark_good(&ix.rv.borrow(), offset, data_at + size);
    let digest = hex(&h.finalize());
    if Some(digest.as_str()) != e.sha256.as_deref() {
        return Ok(Some(NotCopied::Mismatch(format!(
            "its bytes decrypt but hash to {digest}, casevault.json records {}",
            e.sha256.as_deref().unwrap_or("-")
        ))));
    }
    Ok(None)
}

/// Which units (zstd frames, or age chunks of an uncompressed vault) were
/// found not to decrypt or decode, and why.
#[derive(Default)]
struct Units {
    bad: HashMap<usize, String>,
    good: HashSet<usize>,
    /// The bad units in the order found, for the report.
    found: Vec<Damage>,
}

impl Units {
    /// The reason, if the tar bytes `[start, end)` touch a unit already
    /// known to be bad.
    fn known_bad(&self, rv: &RandomVault, start: u64, end: u64) -> Option<String> {
        let mut off = start;
        while off < end {
            let (_, i, ustart, len) = rv.unit_of(off);
            if let Some(why) = self.bad.get(&i) {
                return Some(why.clone());
            }
            off = ustart + len;
        }
        None
    }

    /// Remember that the units of `[start, end)` were read.
    fn mark_good(&mut self, rv: &RandomVault, start: u64, end: u64) {
        let mut off = start;
        while off < end {
            let (_, i, ustart, len) = rv.unit_of(off);
            self.good.insert(i);
            off = ustart + len;
        }
    }

    /// Try every unit of the payload `[0, end)` that no file needed (it
    /// holds only directory headers or padding), so that the report names
    /// all damage in it.
    fn sweep(
        &mut self,
        rv: &std::cell::RefCell<RandomVault>,
        ids: &[&dyn age::Identity],
        end: u64,
    ) -> Result<()> {
        let mut off = 0;
        while off < end {
            crate::signal::check()?;
            let (_, i, ustart, len) = rv.borrow().unit_of(off);
            if !self.good.contains(&i) && !self.bad.contains_key(&i) {
                self.find_bad(rv, ids, ustart, ustart + 1)?;
            }
            off = ustart + len;
        }
        Ok(())
    }

    /// After a failed copy: try each unit of `[start, end)` in turn and
    /// return the reason for the first that fails.
    fn find_bad(
        &mut self,
        rv: &std::cell::RefCell<RandomVault>,
        ids: &[&dyn age::Identity],
        start: u64,
        end: u64,
    ) -> Result<Option<String>> {
        let mut off = start;
        while off < end {
            let (frame, i, ustart, len) = rv.borrow().unit_of(off);
            let mut one = [0u8; 1];
            let res = rv.borrow_mut().read_at(ustart, &mut one);
            match res {
                Ok(()) => {}
                Err(Error::Integrity(f)) => {
                    rv.borrow_mut().reopen(ids)?;
                    let what = if frame { "zstd frame" } else { "age chunk" };
                    let why = format!(
                        "its bytes lie in {what} {i} (tar bytes {ustart}..{}), which does not \
                         decrypt or decode: {f}",
                        ustart + len
                    );
                    self.bad.insert(i, why.clone());
                    self.found.push(Damage {
                        unit: what,
                        index: Some(i as u64),
                        tar_start: Some(ustart),
                        tar_end: Some(ustart + len),
                        plain_start: None,
                        plain_end: None,
                        reason: f.to_string(),
                    });
                    return Ok(Some(why));
                }
                Err(e) => return Err(e),
            }
            off = ustart + len;
        }
        Ok(None)
    }
}

/// Why link `e` is not recreated, if it is not.
fn link_refused(opts: &SalvageOptions, links: &mut Links<'_>, e: &Entry) -> Option<String> {
    if opts.allow_external_links {
        return None;
    }
    match links.status(&e.path) {
        LinkStatus::Outside(why) => Some(format!(
            "points outside the case ({why}); --allow-external-links recreates it verbatim"
        )),
        _ => None,
    }
}

fn lost_link(e: &Entry, reason: String) -> Lost {
    Lost {
        path: case_rel(&e.path).to_string(),
        kind: "symlink",
        size: None,
        reason,
        unverified_copy: None,
    }
}

fn new_report(opts: &SalvageOptions, read: &'static str) -> SalvageReport {
    SalvageReport {
        vault: opts.vault.clone(),
        dest: opts.dest.clone(),
        unverified_dir: None,
        case_id: None,
        complete: false,
        read,
        index: IndexState {
            state: "missing",
            problem: None,
        },
        restored: Counts::default(),
        lost: Vec::new(),
        unverifiable: Vec::new(),
        stopped: None,
        damage: Vec::new(),
        mtimes_not_stored: Vec::new(),
    }
}

/// Restore links, times and modes of what `json` keeps, make it durable
/// and move DEST (and UNVERIFIED) into place.
fn finish(
    opts: &SalvageOptions,
    places: &mut Places,
    json: &CaseJson,
    mut report: SalvageReport,
) -> Result<SalvageReport> {
    crate::signal::check()?;
    unseal::check_dest(&opts.dest)?;
    let root = places.dest.path.clone();
    let dir = places.dest.fd.as_fd();
    let mut not_stored = Vec::new();
    unseal::restore_tree(dir, &root, json, &mut not_stored)?;
    let data = json.entries.iter().find(|e| e.path == "data").cloned();
    crate::signal::check()?;
    if let (Some(u), Some(target)) = (&places.uv.staging, &opts.unverified) {
        unseal::check_dest(target)?;
        rustix::fs::syncfs(u.fd.as_fd())
            .map_err(|e| Error::io("cannot sync", &u.path, e.into()))?;
        fs::rename(&u.path, target)
            .map_err(|e| Error::io("cannot move the unverified files to", target, e))?;
        u.moved.set(true);
        crate::io::sync_parent_dir(target)?;
        report.unverified_dir = Some(target.clone());
    }
    rustix::fs::syncfs(dir).map_err(|e| Error::io("cannot sync", &root, e.into()))?;
    if let Err(e) = fs::rename(&root, &opts.dest) {
        unseal::check_dest(&opts.dest)?;
        return Err(Error::io("cannot move the salvaged case to", &opts.dest, e));
    }
    places.dest.moved.set(true);
    unseal::restore_root(dir, &opts.dest, data.as_ref(), &mut not_stored)?;
    report.mtimes_not_stored = not_stored;
    report.complete = report.lost.is_empty()
        && report.unverifiable.is_empty()
        && report.stopped.is_none()
        && report.damage.is_empty()
        && report.index.state == "checked";
    Ok(report)
}

/// Salvage by reading from the start (module documentation).
fn scan(
    opts: &SalvageOptions,
    ids: &[&dyn age::Identity],
    problem: Option<String>,
    manifest: Option<(String, Vec<u8>)>,
) -> Result<SalvageReport> {
    let mut places = Places::new(opts)?;
    // Files found go first to a scratch directory beside DEST; only what
    // checks against a record moves into DEST.
    let scratch = match StagingDir::create(&crate::io::parent_dir(&opts.dest)) {
        Ok(s) => s,
        Err(e) => return Err(places.discard(e)),
    };
    let res = scan_in(opts, ids, problem, manifest, &mut places, &scratch);
    let res = match res {
        Ok(r) => Ok(r),
        Err(e) => Err(places.discard(e)),
    };
    // Whatever is left in the scratch directory was not kept.
    match res {
        Ok(r) => match scratch.discard(Error::Refused(String::new())) {
            Error::NotRemoved { what, .. } => Err(Error::Refused(what)),
            _ => Ok(r),
        },
        Err(e) => Err(scratch.discard(e)),
    }
}

/// A file read whole by the scan.
struct Found {
    size: u64,
    sha256: String,
}

/// What a scan read.
#[derive(Default)]
struct Scanned {
    case_id: Option<String>,
    files: Vec<(String, Found)>,
    /// Files cut by damage: path, size, bytes got.
    partial: Vec<(String, u64, u64)>,
    /// Chunks skipped (raw tar in a binary vault).
    damage: Vec<Damage>,
    stopped: Option<Stopped>,
    json: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    tagmanifest: Option<Vec<u8>>,
    /// The tag files as they were when the current run began (after a
    /// resync): restored if it turns out a false start.
    run_start_tags: Option<TagFiles>,
}

/// `casevault.json`, the manifest and the tag manifest, as read.
type TagFiles = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

fn scan_in(
    opts: &SalvageOptions,
    ids: &[&dyn age::Identity],
    problem: Option<String>,
    manifest: Option<(String, Vec<u8>)>,
    places: &mut Places,
    scratch: &StagingDir,
) -> Result<SalvageReport> {
    let mut report = new_report(opts, "scan");
    let mut x = scratch.staging();
    let mut s = read_stream(&opts.vault, ids, &mut x)?;
    drop(x);
    report.case_id = s.case_id.clone();
    report.stopped = s.stopped.take();
    report.damage = std::mem::take(&mut s.damage);
    let (json, manifest) = records(&mut s, manifest);
    report.index = index_state(json.is_some(), manifest.is_some(), problem);
    let mut found: HashMap<String, Found> = s.files.into_iter().collect();
    let kept = match &json {
        Some(json) => by_case_json(
            opts,
            json,
            &mut found,
            &s.partial,
            places,
            scratch,
            &mut report,
        )?,
        None => Vec::new(),
    };
    if let Some(lines) = &manifest {
        by_manifest(
            lines,
            &mut found,
            &mut s.partial,
            places,
            scratch,
            &mut report,
        )?;
    }
    for (p, size, got) in s.partial.iter().filter(|_| json.is_none()) {
        let rel = case_rel(p);
        let copy = places.uv.put(&scratch.path.join(rel), rel)?;
        report.lost.push(Lost {
            path: rel.to_string(),
            kind: "file",
            size: Some(*size),
            reason: format!("damage cuts it: {got} of {size} bytes read before it"),
            unverified_copy: copy,
        });
    }
    let records = (json.is_some(), manifest.is_some());
    unverifiable_rest(found, records, places, scratch, &mut report)?;
    let head = json.unwrap_or_else(|| CaseJson {
        format: format::FORMAT_NAME.into(),
        version: 0,
        case_id: s.case_id.clone().unwrap_or_default(),
        sealed_at: String::new(),
        tool: String::new(),
        compression: format::Compression::None,
        entries: Vec::new(),
        totals: Default::default(),
        signer: None,
    });
    let json = CaseJson {
        entries: kept,
        ..head
    };
    finish(opts, places, &json, report)
}

/// Check every file the scan read whole against `casevault.json`'s
/// record and move the matching ones into DEST; restore its directories
/// and account for its links. Returns the entries kept (restored).
fn by_case_json(
    opts: &SalvageOptions,
    json: &CaseJson,
    found: &mut HashMap<String, Found>,
    partial: &[(String, u64, u64)],
    places: &mut Places,
    scratch: &StagingDir,
    report: &mut SalvageReport,
) -> Result<Vec<Entry>> {
    let mut kept = Vec::new();
    let root = places.dest.path.clone();
    let mut links = Links::new(json);
    let mut x = places.dest.staging();
    for e in &json.entries {
        crate::signal::check()?;
        let rel = case_rel(&e.path);
        match e.kind {
            Kind::Dir => {
                if e.path != "data" {
                    x.dir(rel)?;
                    report.restored.dirs += 1;
                }
                kept.push(e.clone());
            }
            Kind::Symlink => match link_refused(opts, &mut links, e) {
                Some(why) => report.lost.push(lost_link(e, why)),
                None => {
                    report.restored.symlinks += 1;
                    kept.push(e.clone());
                }
            },
            Kind::File => {
                let f = found.remove(&e.path);
                let ok = f.as_ref().is_some_and(|f| {
                    Some(f.size) == e.size && Some(f.sha256.as_str()) == e.sha256.as_deref()
                });
                if ok {
                    fs::rename(scratch.path.join(rel), root.join(rel))
                        .map_err(|err| Error::io("cannot move", &root.join(rel), err))?;
                    report.restored.files += 1;
                    report.restored.bytes += e.size.unwrap_or(0);
                    kept.push(e.clone());
                    continue;
                }
                let cut = partial.iter().find(|(p, _, _)| *p == e.path);
                let (reason, copy) = match (&f, cut) {
                    (Some(f), _) => (
                        format!(
                            "its bytes decrypt but are {} bytes with SHA-256 {}, casevault.json records {} bytes with {}",
                            f.size,
                            f.sha256,
                            e.size.unwrap_or(0),
                            e.sha256.as_deref().unwrap_or("-")
                        ),
                        places.uv.put(&scratch.path.join(rel), rel)?,
                    ),
                    (None, Some((_, size, got))) => (
                        format!("damage cuts it: {got} of {size} bytes read before it"),
                        places.uv.put(&scratch.path.join(rel), rel)?,
                    ),
                    (None, None) => (
                        "its tar entry lies in damaged or unread bytes".to_string(),
                        None,
                    ),
                };
                report.lost.push(Lost {
                    path: rel.to_string(),
                    kind: "file",
                    size: e.size,
                    reason,
                    unverified_copy: copy,
                });
            }
        }
    }
    Ok(kept)
}

/// Whole files no surviving record lets check (`records`: whether
/// `casevault.json`, the payload manifest survived), in payload order:
/// reported as unverifiable, their bytes put with `--unverified`.
fn unverifiable_rest(
    found: HashMap<String, Found>,
    (json, manifest): (bool, bool),
    places: &mut Places,
    scratch: &StagingDir,
    report: &mut SalvageReport,
) -> Result<()> {
    let mut rest: Vec<(String, Found)> = found.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, f) in rest {
        let rel = case_rel(&path).to_string();
        let copy = places.uv.put(&scratch.path.join(&rel), &rel)?;
        report.unverifiable.push(Unverifiable {
            path: rel,
            size: f.size,
            sha256: f.sha256,
            reason: if json {
                "not recorded in casevault.json".into()
            } else if manifest {
                "not listed in manifest-sha256.txt".into()
            } else {
                "complete and authenticated by age, but no recorded size and SHA-256 survive to check it against".into()
            },
            unverified_copy: copy,
        });
    }
    Ok(())
}

/// The records a scan can verify files against: `casevault.json` if it
/// read it whole (and the tag manifest, where read, agrees), else the
/// payload manifest's lines: read from the end (`from_end`: a version 3
/// vault whose end is intact, with the case id its tail names), or by the
/// scan (read past the damage in a raw tar).
fn records(
    s: &mut Scanned,
    from_end: Option<(String, Vec<u8>)>,
) -> (Option<CaseJson>, Option<Vec<(String, String)>>) {
    let tm = s.tagmanifest.as_deref();
    let json = s
        .json
        .as_ref()
        .filter(|j| tag_checks(tm, format::CASEVAULT_JSON, j))
        .and_then(|j| CaseJson::parse(j).ok())
        .filter(|c| Some(&c.case_id) == s.case_id.as_ref());
    let manifest = match (&json, from_end) {
        (Some(_), _) => None,
        (None, Some((id, m))) => (Some(&id) == s.case_id.as_ref()).then_some(m),
        (None, None) => s
            .manifest
            .take()
            .filter(|m| tag_checks(tm, format::MANIFEST, m)),
    };
    let manifest = manifest.and_then(|m| {
        let text = String::from_utf8(m).ok()?;
        crate::manifest::parse(format::MANIFEST, &text).ok()
    });
    (json, manifest)
}

/// What the report says of the record a scan used.
fn index_state(json: bool, manifest: bool, problem: Option<String>) -> IndexState {
    match (json, manifest, problem) {
        (true, _, _) => IndexState {
            state: "checked",
            problem: None,
        },
        (false, true, p) => IndexState {
            state: "manifest",
            problem: Some(format!(
                "{}casevault.json could not be used, so files were verified against \
                 manifest-sha256.txt (their content only): the modes, times, empty \
                 directories and symbolic links that casevault.json records are not restored",
                p.map(|p| format!("{p}; ")).unwrap_or_default()
            )),
        },
        (false, false, Some(p)) => IndexState {
            state: "damaged",
            problem: Some(p),
        },
        (false, false, None) => IndexState {
            state: "missing",
            problem: Some(
                "the scan did not reach an intact casevault.json (it lies after the damage)".into(),
            ),
        },
    }
}

/// Whether a tag file the scan read whole has the digest the tag manifest
/// gives it, where the scan read the tag manifest too; else it rests on
/// age's authentication alone (the tag manifest is a hash inside the same
/// authenticated stream).
fn tag_checks(tagmanifest: Option<&[u8]>, name: &str, data: &[u8]) -> bool {
    let Some(t) = tagmanifest else {
        return true;
    };
    let listed = std::str::from_utf8(t)
        .ok()
        .and_then(|text| crate::manifest::parse(format::TAGMANIFEST, text).ok())
        .and_then(|lines| lines.into_iter().find(|(n, _)| n == name))
        .map(|(_, h)| h);
    listed.as_deref() == Some(hex(&Sha256::digest(data)).as_str())
}

/// Verify the files the scan found against the payload manifest's lines
/// (path, SHA-256) when `casevault.json` is lost: a file whose SHA-256 is
/// the listed one goes into DEST, with the directories its path implies;
/// every other listed file is lost.
fn by_manifest(
    lines: &[(String, String)],
    found: &mut HashMap<String, Found>,
    partial: &mut Vec<(String, u64, u64)>,
    places: &mut Places,
    scratch: &StagingDir,
    report: &mut SalvageReport,
) -> Result<()> {
    let root = places.dest.path.clone();
    let mut x = places.dest.staging();
    let mut made = HashSet::new();
    for (path, sha256) in lines {
        crate::signal::check()?;
        let rel = case_rel(path);
        let f = found.remove(path);
        if f.as_ref().is_some_and(|f| f.sha256 == *sha256) {
            for (i, _) in rel.match_indices('/') {
                if made.insert(rel[..i].to_string()) {
                    x.dir(&rel[..i])?;
                    report.restored.dirs += 1;
                }
            }
            fs::rename(scratch.path.join(rel), root.join(rel))
                .map_err(|err| Error::io("cannot move", &root.join(rel), err))?;
            report.restored.files += 1;
            report.restored.bytes += f.map_or(0, |f| f.size);
            continue;
        }
        let cut = partial
            .iter()
            .position(|(p, _, _)| p == path)
            .map(|i| partial.remove(i));
        let (reason, size, copy) = match (f, cut) {
            (Some(f), _) => (
                format!(
                    "its bytes decrypt but have SHA-256 {}, manifest-sha256.txt records {sha256}",
                    f.sha256
                ),
                Some(f.size),
                places.uv.put(&scratch.path.join(rel), rel)?,
            ),
            (None, Some((_, size, got))) => (
                format!("damage cuts it: {got} of {size} bytes read before it"),
                Some(size),
                places.uv.put(&scratch.path.join(rel), rel)?,
            ),
            (None, None) => (
                "its tar entry lies in damaged or unread bytes".to_string(),
                None,
                None,
            ),
        };
        report.lost.push(Lost {
            path: rel.to_string(),
            kind: "file",
            size,
            reason,
            unverified_copy: copy,
        });
    }
    Ok(())
}

/// Read the plaintext from its start: every regular file under `data/`
/// into `x`, the tag files that matter into memory, until the stream
/// ends or stops. A binary vault whose plaintext is the tar itself
/// (`--compress none`) goes on after a damaged chunk, at the next tar
/// header in the next chunk that authenticates.
fn read_stream(vault: &Path, ids: &[&dyn age::Identity], x: &mut Staging<'_>) -> Result<Scanned> {
    let mut s = Scanned::default();
    let mut head = [0u8; 10];
    let n = {
        let mut f = crate::source::open_one(vault, "cannot open vault")?;
        crate::io::retry(|| f.read(&mut head))
            .map_err(|e| Error::io("cannot read vault", vault, e))?
    };
    let armored = head[..n].starts_with(b"-----");
    // The first frame header (at most 18 bytes): a version 3 zstd layer
    // declares Frame_Content_Size from 1 to 2^23 (FORMAT §14.4).
    let mut first = [0u8; 18];
    let zstd = {
        let f = crate::source::open_one(vault, "cannot open vault")?;
        let mut plain = cipher::age_reader_with(BufReader::new(SourceReader(f)), ids)
            .map_err(|e| cipher::map_error(vault, e))?;
        let source_error = |e| Error::io("cannot read vault", vault, e);
        match plain.read_exact(&mut first[..4]) {
            Ok(()) => {
                match fill(&mut plain, &mut first[4..]) {
                    Err(e) if crate::io::is_source_error(&e) => return Err(source_error(e)),
                    _ => {} // fewer bytes: not a version 3 frame header
                }
                Some(first[..4] == format::ZSTD_MAGIC)
            }
            Err(e) if crate::io::is_source_error(&e) => return Err(source_error(e)),
            Err(_) => None, // the first chunk is damaged (or the stream empty)
        }
    };
    let frames = zstd == Some(true)
        && matches!(
            zstd::zstd_safe::get_frame_content_size(&first),
            Ok(Some(n)) if (1..=crate::frames::MAX_FRAME).contains(&n)
        );
    match (armored, zstd) {
        (false, Some(false) | None) => {
            // Raw tar in a binary vault: chunks can be skipped.
            let mut src = Resync::open(vault, ids)?;
            if zstd.is_none() {
                // Start at the first chunk that authenticates.
                match src.skip(0)? {
                    Some(next) => s.damage.push(skipped(
                        0,
                        next,
                        "the first age chunk does not authenticate",
                    )),
                    None => {
                        s.stopped = Some(Stopped {
                            tar_offset: Some(0),
                            reason: "no age chunk of the payload authenticates".into(),
                        });
                        return Ok(s);
                    }
                }
            }
            walk_tar(vault, &mut src, x, &mut s)?;
        }
        (false, Some(true)) if frames => {
            // Version 3 frames: resync at the next frame after damage.
            walk_tar(vault, &mut Frames::open(vault, ids)?, x, &mut s)?;
        }
        (_, Some(true)) => {
            let f = crate::source::open_one(vault, "cannot open vault")?;
            let plain =
                cipher::age_reader_with(BufReader::with_capacity(BUF_SIZE, SourceReader(f)), ids)
                    .map_err(|e| cipher::map_error(vault, e))?;
            let (d, _log) =
                crate::frames::FramedDecoder::new(BufReader::with_capacity(BUF_SIZE, plain))
                    .map_err(|e| Error::io("cannot start zstd", vault, e))?;
            walk_tar(vault, &mut NoResync(d), x, &mut s)?;
        }
        (true, _) => {
            let f = crate::source::open_one(vault, "cannot open vault")?;
            let plain =
                cipher::age_reader_with(BufReader::with_capacity(BUF_SIZE, SourceReader(f)), ids)
                    .map_err(|e| cipher::map_error(vault, e))?;
            walk_tar(
                vault,
                &mut NoResync(BufReader::with_capacity(BUF_SIZE, plain)),
                x,
                &mut s,
            )?;
        }
    }
    Ok(s)
}

fn skipped(from: u64, to: u64, why: &str) -> Damage {
    Damage {
        unit: "age chunk",
        index: Some(from / AGE_CHUNK_PLAIN),
        tar_start: Some(from),
        tar_end: Some(to),
        plain_start: None,
        plain_end: None,
        reason: why.to_string(),
    }
}

/// Plaintext bytes in one age STREAM chunk.
const AGE_CHUNK_PLAIN: u64 = 64 * 1024;
/// Ciphertext bytes of one full age STREAM chunk (plaintext and tag).
const AGE_CHUNK_CIPHER: u64 = AGE_CHUNK_PLAIN + 16;

/// A plaintext a scan can go on in after damage.
trait Source: Read {
    /// After a read failed with an integrity error (`why`): move past the
    /// damage, to the next place the tar walk can read from, or say that
    /// there is none (or that this source cannot skip: armor, one zstd
    /// stream).
    fn resync(&mut self, why: &str) -> Result<After>;

    /// Whether the run that just failed was a false start (FORMAT §14.4
    /// step 5): the tag files read in it are discarded.
    fn false_start(&self) -> bool {
        false
    }
}

/// What [`Source::resync`] found.
enum After {
    Resumed(Resumed),
    /// Nothing after the damage can be read (with why, if more than the
    /// damage itself).
    Stopped(Option<String>),
}

/// Where a scan goes on after damage.
struct Resumed {
    /// The damage skipped.
    damage: Damage,
    /// It replaces the last record (a false start extended it).
    merge: bool,
    /// The tar offset reading resumes at, if known.
    tar: Option<u64>,
    /// The plaintext offset reading resumes at.
    plain: u64,
}

/// A source that cannot skip damage.
struct NoResync<R>(R);

impl<R: Read> Read for NoResync<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Source for NoResync<R> {
    fn resync(&mut self, _why: &str) -> Result<After> {
        Ok(After::Stopped(None))
    }
}

/// The plaintext of a binary vault, read chunk after chunk; after a chunk
/// fails to authenticate, a new age reader starts at the next chunk that
/// does (age's reader is spent after a failure). Chunk positions are
/// fixed (FORMAT §14.1), so nothing after the damage moves.
struct Resync<'a> {
    vault: PathBuf,
    ids: &'a [&'a dyn age::Identity],
    plain: age::stream::StreamReader<SourceReader<crate::source::VaultInput>>,
    /// Plaintext bytes delivered so far (from offset 0).
    pos: u64,
    /// Chunks in the file (the last may be cut short).
    chunks: u64,
}

impl<'a> Resync<'a> {
    fn open(vault: &Path, ids: &'a [&'a dyn age::Identity]) -> Result<Self> {
        let mut f = crate::source::open_one(vault, "cannot open vault")?;
        let err = |e| Error::io("cannot read vault", vault, e);
        let len = io::Seek::seek(&mut f, io::SeekFrom::End(0)).map_err(err)?;
        io::Seek::seek(&mut f, io::SeekFrom::Start(0)).map_err(err)?;
        // The header ends with the line `--- MAC`; the payload nonce (16
        // bytes) follows it.
        let mut head = Vec::new();
        let mut r = BufReader::new(&mut f);
        let header_len = loop {
            let mut line = Vec::new();
            let n = r
                .by_ref()
                .take(64 * 1024)
                .read_until(b'\n', &mut line)
                .map_err(err)?;
            if n == 0 || head.len() > 16 << 20 {
                return Err(Error::integrity("the age header does not end"));
            }
            head.extend_from_slice(&line);
            if line.starts_with(b"--- ") {
                break head.len() as u64;
            }
        };
        let payload = len.saturating_sub(header_len + 16);
        let plain = new_reader(vault, ids)?;
        Ok(Resync {
            vault: vault.to_path_buf(),
            ids,
            plain,
            pos: 0,
            chunks: payload.div_ceil(AGE_CHUNK_CIPHER),
        })
    }

    /// Position at the start of the first chunk from the one holding
    /// `from` on that authenticates.
    fn skip(&mut self, from: u64) -> Result<Option<u64>> {
        let mut k = from / AGE_CHUNK_PLAIN;
        while k < self.chunks {
            crate::signal::check()?;
            let at = k * AGE_CHUNK_PLAIN;
            let mut plain = new_reader(&self.vault, self.ids)?;
            // Seek one byte in, then back: a seek to a chunk boundary
            // would authenticate the last chunk (age computes the length),
            // which a damaged or truncated vault fails.
            let res = io::Seek::seek(&mut plain, io::SeekFrom::Start(at + 1))
                .and_then(|_| io::Seek::seek(&mut plain, io::SeekFrom::Start(at)));
            match res {
                Ok(_) => {
                    self.plain = plain;
                    self.pos = at;
                    return Ok(Some(at));
                }
                Err(e) if crate::io::is_source_error(&e) => {
                    return Err(Error::io("cannot read vault", &self.vault, e))
                }
                Err(_) => k += 1,
            }
        }
        Ok(None)
    }
}

fn new_reader(
    vault: &Path,
    ids: &[&dyn age::Identity],
) -> Result<age::stream::StreamReader<SourceReader<crate::source::VaultInput>>> {
    let f = crate::source::open_one(vault, "cannot open vault")?;
    let dec = age::Decryptor::new(SourceReader(f)).map_err(|e| cipher::map_error(vault, e))?;
    dec.decrypt(ids.iter().copied())
        .map_err(|e| cipher::map_error(vault, e))
}

impl Read for Resync<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.plain.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Source for Resync<'_> {
    fn resync(&mut self, why: &str) -> Result<After> {
        // Reads stop at the start of the chunk that failed.
        let failed = self.pos.div_ceil(AGE_CHUNK_PLAIN) * AGE_CHUNK_PLAIN;
        Ok(match self.skip(failed + AGE_CHUNK_PLAIN)? {
            Some(next) => After::Resumed(Resumed {
                damage: skipped(failed, next, why),
                merge: false,
                tar: Some(next),
                plain: next,
            }),
            None => After::Stopped(None),
        })
    }
}

/// Largest compressed frame a version 3 scan accepts: zstd's compress
/// bound of a 2^23-byte frame (`ZSTD_COMPRESSBOUND`, FORMAT §14.4).
const MAX_COMPRESSED: usize = (1 << 23) + (1 << 15);
/// What a candidate frame that passes the header checks but does not
/// decode is charged against the search budget (FORMAT §14.4 step 6).
const CANDIDATE_CHARGE: u64 = 16 << 20;
/// The search budget's fixed part; twice the plaintext's length is added.
const SEARCH_BUDGET: u64 = 64 << 20;

/// How the last read of a [`Frames`] source failed.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Failed {
    /// An age chunk did not authenticate (or the vault ended early).
    Chunk,
    /// The bytes authenticate but are not a whole valid frame.
    Decode,
}

/// Why a frame at the cursor could not be decoded.
enum FrameErr {
    /// Its bytes run into a chunk that fails (the read error).
    Chunk(io::Error),
    /// It is not a whole valid frame.
    Bad(String),
}

/// The zstd frames of a binary version 3 vault, decoded one by one, each
/// as a whole (FORMAT §14.4): after a frame fails, the scan resyncs at
/// the next candidate frame that decodes whole from authenticated bytes.
/// Tar offsets are known until the first resync, unknown after it.
struct Frames<'a> {
    src: Resync<'a>,
    /// Authenticated compressed bytes; `buf[cur..]` not yet used.
    buf: Vec<u8>,
    cur: usize,
    /// Plaintext offset of `buf[0]`.
    buf_at: u64,
    /// The read error met after `buf`'s bytes (deferred until needed).
    err: Option<io::Error>,
    eof: bool,
    out: Vec<u8>,
    out_pos: usize,
    dctx: crate::frames::Dctx,
    /// Frames decoded and tar bytes delivered, from the start while
    /// `anchored`, else from the frame where the scan resumed.
    frames: u64,
    tar: u64,
    anchored: bool,
    /// The current run began at a candidate found by a search.
    resumed: bool,
    /// Where and how the last read failed: the plaintext offset of the
    /// frame being read, and the tar offset it held.
    failed: Option<(Failed, u64, u64)>,
    /// The damage record of the last resync (a false start extends it).
    hole: Option<Damage>,
    /// Charged so far, and the limit (FORMAT §14.4 step 6).
    spent: u64,
    budget: u64,
}

impl<'a> Frames<'a> {
    fn open(vault: &Path, ids: &'a [&'a dyn age::Identity]) -> Result<Self> {
        let src = Resync::open(vault, ids)?;
        let budget = SEARCH_BUDGET.saturating_add(src.chunks.saturating_mul(2 * AGE_CHUNK_PLAIN));
        Ok(Frames {
            src,
            buf: Vec::new(),
            cur: 0,
            buf_at: 0,
            err: None,
            eof: false,
            out: Vec::new(),
            out_pos: 0,
            dctx: crate::frames::new_dctx(),
            frames: 0,
            tar: 0,
            anchored: true,
            resumed: false,
            failed: None,
            hole: None,
            spent: 0,
            budget,
        })
    }

    fn avail(&self) -> usize {
        self.buf.len() - self.cur
    }

    /// Plaintext offset of the cursor.
    fn at(&self) -> u64 {
        self.buf_at + self.cur as u64
    }

    /// Make `want` bytes available at the cursor, fewer only when the
    /// source failed (the error is kept in `err`) or ended.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        if self.avail() >= want || self.err.is_some() || self.eof {
            return Ok(());
        }
        if self.cur > 0 {
            self.buf.drain(..self.cur);
            self.buf_at += self.cur as u64;
            self.cur = 0;
        }
        while self.buf.len() < want {
            let have = self.buf.len();
            // A chunk's worth at a time (what age's reader gives per
            // read): room zeroed per read stays the size of the read.
            let k = AGE_CHUNK_PLAIN as usize;
            self.buf.resize(have + k, 0);
            let res = crate::io::retry(|| self.src.read(&mut self.buf[have..]));
            match res {
                Ok(n) => {
                    self.buf.truncate(have + n);
                    if n == 0 {
                        self.eof = true;
                        return Ok(());
                    }
                }
                Err(e) => {
                    self.buf.truncate(have);
                    if crate::io::is_source_error(&e) {
                        return Err(e);
                    }
                    self.err = Some(e);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Decode the whole frame at the cursor into `out` and return its
    /// compressed length. `candidate`: a frame found by a search, which
    /// must also declare a content checksum and no dictionary.
    fn frame(&mut self, candidate: bool) -> io::Result<std::result::Result<usize, FrameErr>> {
        use zstd::zstd_safe;
        self.fill(18)?;
        let head = &self.buf[self.cur..];
        if head.len() < 6 {
            return Ok(Err(self.short("a frame header")));
        }
        let size = match zstd_safe::get_frame_content_size(head) {
            Ok(Some(n)) if (1..=crate::frames::MAX_FRAME).contains(&n) => n,
            Ok(Some(n)) => return Ok(Err(FrameErr::Bad(format!("declares {n} bytes")))),
            Ok(None) => return Ok(Err(FrameErr::Bad("does not declare its size".into()))),
            Err(_) if head.len() < 18 && !self.eof => return Ok(Err(self.short("a frame header"))),
            Err(_) => return Ok(Err(FrameErr::Bad("has a malformed header".into()))),
        };
        // Frame_Header_Descriptor: checksum flag 0x04, reserved 0x08,
        // dictionary id flag 0x03.
        if candidate && head[4] & 0x0F != 0x04 {
            return Ok(Err(FrameErr::Bad(
                "does not declare a checksum, or declares a dictionary".into(),
            )));
        }
        // Its extent: read on until zstd's walk over its block headers
        // finds the end, up to the largest frame allowed.
        let mut want = (2 * AGE_CHUNK_PLAIN as usize).min(MAX_COMPRESSED);
        let len = loop {
            self.fill(want)?;
            let have = self.avail().min(MAX_COMPRESSED);
            match zstd_safe::find_frame_compressed_size(&self.buf[self.cur..self.cur + have]) {
                Ok(n) => break n,
                Err(_) if have < MAX_COMPRESSED && self.err.is_none() && !self.eof => {
                    want = (want * 2).min(MAX_COMPRESSED);
                }
                Err(_) if have < MAX_COMPRESSED => return Ok(Err(self.short("the frame"))),
                Err(e) => {
                    return Ok(Err(FrameErr::Bad(format!(
                        "is not a zstd frame of at most {MAX_COMPRESSED} bytes ({})",
                        zstd_safe::get_error_name(e)
                    ))))
                }
            }
        };
        let src = &self.buf[self.cur..self.cur + len];
        match crate::frames::decompress_frame(&mut self.dctx, src, size, &mut self.out) {
            Ok(()) => {
                self.out_pos = 0;
                Ok(Ok(len))
            }
            Err(why) => Ok(Err(FrameErr::Bad(why))),
        }
    }

    /// The bytes ran out inside `what`: a chunk failed there, or the
    /// plaintext ends.
    fn short(&mut self, what: &str) -> FrameErr {
        match self.err.take() {
            Some(e) => FrameErr::Chunk(e),
            None => FrameErr::Bad(format!("the payload ends inside {what}")),
        }
    }

    /// Decode the next frame at the cursor (skipping skippable frames).
    /// `Ok(false)`: the plaintext ended cleanly.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            self.fill(8)?;
            if self.avail() == 0 {
                return match self.err.take() {
                    Some(e) => self.fail(Failed::Chunk, e),
                    None => Ok(false),
                };
            }
            if self.avail() < 4 {
                return match self.short("a frame's magic") {
                    FrameErr::Chunk(e) => self.fail(Failed::Chunk, e),
                    FrameErr::Bad(why) => self.fail(Failed::Decode, bad_zstd(why)),
                };
            }
            let b = &self.buf[self.cur..];
            let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
                if self.avail() < 8 {
                    return match self.short("a skippable frame") {
                        FrameErr::Chunk(e) => self.fail(Failed::Chunk, e),
                        FrameErr::Bad(why) => self.fail(Failed::Decode, bad_zstd(why)),
                    };
                }
                let body = u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]]));
                self.skip_bytes(8 + body)?;
                continue;
            }
            if magic != u32::from_le_bytes(format::ZSTD_MAGIC) {
                return self.fail(
                    Failed::Decode,
                    bad_zstd("the payload holds data that is not a zstd frame".into()),
                );
            }
            return match self.frame(false)? {
                Ok(len) => {
                    self.cur += len;
                    self.frames += 1;
                    Ok(true)
                }
                Err(FrameErr::Chunk(e)) => self.fail(Failed::Chunk, e),
                Err(FrameErr::Bad(why)) => {
                    let n = if self.anchored { self.frames } else { 0 };
                    self.fail(Failed::Decode, bad_zstd(format!("zstd frame {n} {why}")))
                }
            };
        }
    }

    /// Consume `n` bytes (a skippable frame) without keeping them.
    fn skip_bytes(&mut self, mut n: u64) -> io::Result<()> {
        loop {
            let k = (self.avail() as u64).min(n) as usize;
            self.cur += k;
            n -= k as u64;
            if n == 0 {
                return Ok(());
            }
            self.fill(AGE_CHUNK_PLAIN as usize)?;
            if self.avail() == 0 {
                return match self.short("a skippable frame") {
                    FrameErr::Chunk(e) => self.fail(Failed::Chunk, e),
                    FrameErr::Bad(why) => self.fail(Failed::Decode, bad_zstd(why)),
                };
            }
        }
    }

    /// Note a failure of the frame at the cursor and return `e`.
    fn fail<T>(&mut self, how: Failed, e: io::Error) -> io::Result<T> {
        self.failed = Some((how, self.at(), self.tar));
        Err(e)
    }

    /// Search from the cursor for the next candidate frame that decodes
    /// whole (FORMAT §14.4 step 2), skipping chunks that fail. `Ok(None)`:
    /// none before the end; `Err(why)` (inner): the budget is spent.
    fn search(&mut self) -> Result<std::result::Result<Option<u64>, String>> {
        let vault = self.src.vault.clone();
        let io_err = |e| Error::io("cannot read vault", &vault, e);
        loop {
            crate::signal::check()?;
            if self.avail() < 4 {
                self.fill(AGE_CHUNK_PLAIN as usize).map_err(io_err)?;
                if self.avail() < 4 {
                    if self.err.is_none() {
                        return Ok(Ok(None)); // the end
                    }
                    // A chunk fails here: go on after it.
                    let failed = self.src.pos.div_ceil(AGE_CHUNK_PLAIN) * AGE_CHUNK_PLAIN;
                    if self.skip_to(failed + AGE_CHUNK_PLAIN)?.is_none() {
                        return Ok(Ok(None));
                    }
                    continue;
                }
            }
            let hay = &self.buf[self.cur..];
            let Some(i) = hay.windows(4).position(|w| w == format::ZSTD_MAGIC) else {
                // Keep the last 3 bytes: a magic may straddle them.
                self.cur = self.buf.len() - 3;
                continue;
            };
            self.cur += i;
            let at = self.at();
            match self.frame(true).map_err(io_err)? {
                Ok(len) => {
                    self.cur += len;
                    return Ok(Ok(Some(at)));
                }
                Err(err) => {
                    // A chunk error met while reading the candidate stays
                    // for the search to skip when it gets there.
                    if let FrameErr::Chunk(e) = err {
                        self.err = Some(e);
                    }
                    if self.passes_header() {
                        self.spent = self.spent.saturating_add(CANDIDATE_CHARGE);
                        if self.spent > self.budget {
                            return Ok(Err(format!(
                                "the search for the next zstd frame gave up at plaintext offset \
                                 {at}: candidates that looked like frames but did not decode \
                                 cost more than its budget (FORMAT §14.4)"
                            )));
                        }
                    }
                    self.cur += 1;
                }
            }
        }
    }

    /// Whether the candidate at the cursor passes the header checks of
    /// FORMAT §14.4 step 2 (what the budget is charged for).
    fn passes_header(&self) -> bool {
        let head = &self.buf[self.cur..];
        head.len() >= 6
            && head[4] & 0x0F == 0x04
            && matches!(
                zstd::zstd_safe::get_frame_content_size(head),
                Ok(Some(n)) if (1..=crate::frames::MAX_FRAME).contains(&n)
            )
    }

    /// Start again at the first chunk from plaintext offset `from` on that
    /// authenticates, with nothing buffered.
    fn skip_to(&mut self, from: u64) -> Result<Option<u64>> {
        self.buf.clear();
        self.cur = 0;
        self.err = None;
        self.eof = false;
        let next = self.src.skip(from)?;
        if let Some(at) = next {
            self.buf_at = at;
        }
        Ok(next)
    }
}

fn bad_zstd(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl Read for Frames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out_pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_pos);
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                self.tar += n as u64;
                return Ok(n);
            }
            if self.failed.is_some() {
                return Err(bad_zstd("the zstd stream failed before this".into()));
            }
            if !self.next_frame()? {
                return Ok(0);
            }
        }
    }
}

impl Source for Frames<'_> {
    fn false_start(&self) -> bool {
        self.resumed && matches!(self.failed, Some((Failed::Decode, _, _)))
    }

    fn resync(&mut self, why: &str) -> Result<After> {
        let Some((how, plain, tar)) = self.failed else {
            return Ok(After::Stopped(None));
        };
        let merge = self.false_start() && self.hole.is_some();
        if !merge {
            self.hole = Some(Damage {
                unit: "zstd frames",
                index: self.anchored.then_some(self.frames),
                tar_start: self.anchored.then_some(tar),
                tar_end: None,
                plain_start: Some(plain),
                plain_end: None,
                reason: why.to_string(),
            });
        }
        // Where the search starts: after the chunk that failed, or the
        // byte after the failed frame's first.
        self.out.clear();
        self.out_pos = 0;
        match how {
            Failed::Chunk => {
                let failed = self.src.pos.div_ceil(AGE_CHUNK_PLAIN) * AGE_CHUNK_PLAIN;
                if self.skip_to(failed + AGE_CHUNK_PLAIN)?.is_none() {
                    return Ok(After::Stopped(None));
                }
            }
            Failed::Decode => {
                // The failed frame's bytes are still buffered (the cursor
                // stays at a frame's start until it decodes).
                let at = usize::try_from(plain.saturating_sub(self.buf_at)).unwrap_or(usize::MAX);
                self.cur = at.saturating_add(1).min(self.buf.len());
            }
        }
        let found = match self.search()? {
            Ok(Some(at)) => at,
            Ok(None) => return Ok(After::Stopped(None)),
            Err(why) => return Ok(After::Stopped(Some(why))),
        };
        self.failed = None;
        self.anchored = false;
        self.resumed = true;
        self.frames = 1;
        self.tar = 0;
        let hole = self
            .hole
            .as_mut()
            .expect("set above or by an earlier resync");
        hole.plain_end = Some(found);
        Ok(After::Resumed(Resumed {
            damage: hole.clone(),
            merge,
            tar: None,
            plain: found,
        }))
    }
}

/// Fill `buf`: `Ok(false)` at a clean end of the stream before it is full.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// How reading one piece of the tar stream ended.
enum Got {
    Ok,
    /// The stream ended cleanly before it.
    End,
    /// Damage: the scan goes on at this tar offset (a chunk boundary;
    /// `None`: unknown, a zstd frame boundary) and plaintext offset.
    Resumed(Option<u64>, u64),
    /// Damage, and nothing after it can be read.
    Stopped,
}

/// Read `buf` from `r`; on damage, note it and try to resync. `at`: the
/// tar offset of the piece, if known.
fn read_piece(
    vault: &Path,
    r: &mut dyn Source,
    s: &mut Scanned,
    at: Option<u64>,
    buf: &mut [u8],
) -> Result<Got> {
    match fill(r, buf) {
        Ok(true) => Ok(Got::Ok),
        Ok(false) => Ok(Got::End),
        Err(e) => on_damage(vault, r, s, at, e),
    }
}

/// The tag files read since the last resync were read in no run of the
/// sealer's (FORMAT §14.4 step 5): forget them.
fn drop_run_tags(s: &mut Scanned) {
    if let Some((json, manifest, tagmanifest)) = s.run_start_tags.take() {
        (s.json, s.manifest, s.tagmanifest) = (json, manifest, tagmanifest);
    }
}

/// A read of the payload failed with `e` at tar offset `at` (if known):
/// note the damage and resync, or note where the scan stopped.
fn on_damage(
    vault: &Path,
    r: &mut dyn Source,
    s: &mut Scanned,
    at: Option<u64>,
    e: io::Error,
) -> Result<Got> {
    let why = match crate::io::classify_stream_error(vault, "reading the payload", e) {
        Error::Integrity(f) => f.to_string(),
        other => return Err(other),
    };
    if r.false_start() {
        drop_run_tags(s);
    }
    match r.resync(&why)? {
        After::Resumed(res) => {
            match s.damage.last_mut() {
                Some(last) if res.merge => *last = res.damage,
                _ => s.damage.push(res.damage),
            }
            s.run_start_tags = Some((s.json.clone(), s.manifest.clone(), s.tagmanifest.clone()));
            Ok(Got::Resumed(res.tar, res.plain))
        }
        After::Stopped(more) => {
            s.stopped = Some(Stopped {
                tar_offset: at,
                reason: match more {
                    Some(m) => format!("{why}; {m}"),
                    None => why,
                },
            });
            Ok(Got::Stopped)
        }
    }
}

/// The tar walk of a scan: strict about what it accepts (FORMAT §3). It
/// stops at the first thing it cannot read, unless the source can skip
/// damage: then it looks for the next tar header of this case after it.
fn walk_tar(vault: &Path, r: &mut dyn Source, x: &mut Staging<'_>, s: &mut Scanned) -> Result<()> {
    let mut w = TarWalk {
        vault,
        pos: 0,
        pax: (None, None),
        dirs: HashSet::new(),
        made: HashSet::new(),
        searching: false,
        resynced: false,
        known: true,
        resumed_plain: 0,
    };
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        crate::signal::check()?;
        if let Flow::Done = w.entry(r, x, s, &mut buf)? {
            return Ok(());
        }
    }
}

/// Where a scan's tar walk is (see [`walk_tar`]).
struct TarWalk<'v> {
    vault: &'v Path,
    /// The tar offset of the next read (when `known`).
    pos: u64,
    pax: crate::read::tar::Pax,
    dirs: HashSet<String>,
    /// Files created in the scratch directory (bag paths).
    made: HashSet<String>,
    /// After damage: looking for the next header; parents may be missing.
    searching: bool,
    resynced: bool,
    /// Whether `pos` is the tar offset: not after a resync in a zstd scan,
    /// where it counts from the frame the scan resumed at, at plaintext
    /// offset `resumed_plain` (FORMAT §14.4).
    known: bool,
    resumed_plain: u64,
}

/// How one step of the walk ended.
enum Flow {
    /// On to the next header (after an entry, or after a resync).
    Next,
    /// The walk is over; `Scanned` says why, if it stopped early.
    Done,
}

/// Read a piece or leave the step with its [`Flow`].
macro_rules! get {
    ($read:expr) => {
        if let Some(flow) = $read? {
            return Ok(flow);
        }
    };
}

/// The walk stopped at `at`: a run after a resync that ends in something
/// that is not the sealer's tar was no run of the sealer's, so its tag
/// files go.
fn halt(s: &mut Scanned, at: Option<u64>, why: String) {
    drop_run_tags(s);
    s.stopped = Some(Stopped {
        tar_offset: at,
        reason: why,
    });
}

impl TarWalk<'_> {
    fn tar_at(&self, at: u64) -> Option<u64> {
        self.known.then_some(at)
    }

    fn here(&self, at: u64) -> String {
        if self.known {
            format!("tar offset {at}")
        } else {
            format!(
                "{at} tar bytes after the zstd frame at plaintext offset {} where the scan resumed",
                self.resumed_plain
            )
        }
    }

    /// Stop the walk at tar position `at`.
    fn halt(&self, s: &mut Scanned, at: u64, why: String) -> Result<Flow> {
        halt(s, self.tar_at(at), why);
        Ok(Flow::Done)
    }

    /// Go on after damage: search for the next header from `tar` (`None`:
    /// an unknown tar offset) at plaintext offset `plain`.
    fn resume(&mut self, tar: Option<u64>, plain: u64) -> Flow {
        self.pos = tar.unwrap_or(0);
        self.known = tar.is_some();
        self.resumed_plain = plain;
        self.pax = (None, None);
        self.searching = true;
        self.resynced = true;
        Flow::Next
    }

    /// Read `buf` at tar position `at`: `None` when it arrived; else how
    /// the step ends. A clean end of the stream there halts with what
    /// `end` gives (offset and reason), if anything.
    fn piece(
        &mut self,
        r: &mut dyn Source,
        s: &mut Scanned,
        at: u64,
        buf: &mut [u8],
        end: impl FnOnce(&Self) -> Option<(u64, String)>,
    ) -> Result<Option<Flow>> {
        Ok(match read_piece(self.vault, r, s, self.tar_at(at), buf)? {
            Got::Ok => None,
            Got::End => {
                if let Some((o, why)) = end(self) {
                    halt(s, self.tar_at(o), why);
                }
                Some(Flow::Done)
            }
            Got::Resumed(tar, plain) => Some(self.resume(tar, plain)),
            Got::Stopped => Some(Flow::Done),
        })
    }

    /// Read `len` bytes at `pos` into `buf`, a piece at a time, giving
    /// each to `each`; a clean end halts: "the tar stream ends inside
    /// `what`".
    fn pieces(
        &mut self,
        r: &mut dyn Source,
        s: &mut Scanned,
        buf: &mut [u8],
        len: u64,
        what: &str,
        each: &mut dyn FnMut(&[u8]),
    ) -> Result<Option<Flow>> {
        let mut left = len;
        while left > 0 {
            let k = (buf.len() as u64).min(left) as usize;
            let end = |w: &Self| Some((w.pos, format!("the tar stream ends inside {what}")));
            if let Some(flow) = self.piece(r, s, self.pos, &mut buf[..k], end)? {
                return Ok(Some(flow));
            }
            each(&buf[..k]);
            left -= k as u64;
            self.pos += k as u64;
        }
        Ok(None)
    }

    /// One tar header and what follows it.
    fn entry(
        &mut self,
        r: &mut dyn Source,
        x: &mut Staging<'_>,
        s: &mut Scanned,
        buf: &mut [u8],
    ) -> Result<Flow> {
        let at = self.pos;
        let mut block = [0u8; 512];
        let end = |w: &Self| {
            (!w.searching).then(|| {
                let why = format!(
                    "the tar stream ends without its end-of-archive marker ({})",
                    w.here(at)
                );
                (at, why)
            })
        };
        get!(self.piece(r, s, at, &mut block, end));
        self.pos += 512;
        if self.searching {
            // A header of this case, or go on to the next block.
            let ours = random::checksum_ok(&block)
                && &block[257..263] == b"ustar\0"
                && s.case_id.as_ref().is_some_and(|c| {
                    block[156] == b'x'
                        || tar::Header::from_byte_slice(&block)
                            .path_bytes()
                            .starts_with(format!("{c}/").as_bytes())
                });
            if !ours {
                return Ok(Flow::Next);
            }
            self.searching = false;
        } else if block.iter().all(|&b| b == 0) {
            return self.after_the_end(r, s, buf);
        }
        if !random::checksum_ok(&block) {
            return self.halt(s, at, format!("no valid tar header at {}", self.here(at)));
        }
        let header = tar::Header::from_byte_slice(&block);
        let Ok(size) = header.entry_size() else {
            return self.halt(s, at, format!("malformed tar header at {}", self.here(at)));
        };
        let padded = size.div_ceil(512) * 512;
        if block[156] == b'x' {
            return self.pax_header(r, s, at, size);
        }
        let path = match crate::read::tar::entry_path(header, size, std::mem::take(&mut self.pax)) {
            Ok(p) => p,
            Err(e) => return self.halt(s, at, format!("{e} at {}", self.here(at))),
        };
        let is_dir = header.entry_type().is_dir();
        // The first entry names the case.
        let Some(case_id) = s.case_id.clone() else {
            if !is_dir || !format::is_valid_case_id(&path) {
                return self.halt(s, at, "the first tar entry is not a case directory".into());
            }
            s.case_id = Some(path);
            return Ok(Flow::Next);
        };
        let Some(bag) = path
            .strip_prefix(&case_id)
            .and_then(|p| p.strip_prefix('/'))
        else {
            return self.halt(s, at, format!("{path:?} is outside the case directory"));
        };
        let bag = bag.to_string();
        let parent = bag.rsplit_once('/').map_or("", |(p, _)| p).to_string();
        let payload = bag == "data" || bag.starts_with("data/");
        if self.resynced && payload && clashes(&self.made, &self.dirs, &bag) {
            // After a resync, a path seen before (or one a file already
            // holds): the first copy stays (FORMAT §14.4).
            let len = if is_dir { 0 } else { padded };
            get!(self.pieces(r, s, buf, len, &format!("{bag:?}"), &mut |_| {}));
            return Ok(Flow::Next);
        }
        if payload && bag != "data" && !self.dirs.contains(&parent) {
            if !self.resynced {
                return self.halt(s, at, format!("{bag:?} comes before its directory"));
            }
            self.missing_parents(x, &parent)?;
        }
        if is_dir {
            if !payload || !self.dirs.insert(bag.clone()) {
                return self.halt(s, at, format!("unexpected directory {bag:?}"));
            }
            if bag != "data" {
                x.reserve(case_rel(&bag), 0)?;
                x.dir(case_rel(&bag))?;
            }
            return Ok(Flow::Next);
        }
        if !payload {
            return self.tag_file(r, s, buf, &bag, size);
        }
        self.payload_file(r, x, s, buf, bag, size)
    }

    /// The end-of-archive marker: read on to the authenticated end, so
    /// that damage after it is reported too.
    fn after_the_end(
        &mut self,
        r: &mut dyn Source,
        s: &mut Scanned,
        buf: &mut [u8],
    ) -> Result<Flow> {
        loop {
            match r.read(buf) {
                Ok(0) => return Ok(Flow::Done),
                Ok(n) => self.pos += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if r.false_start() => {
                    // The marker lay in a false start (FORMAT §14.4 step
                    // 5): the tar goes on after the damage.
                    return Ok(
                        match on_damage(self.vault, r, s, self.tar_at(self.pos), e)? {
                            Got::Resumed(tar, plain) => self.resume(tar, plain),
                            _ => Flow::Done,
                        },
                    );
                }
                Err(e) => {
                    read_piece_err(self.vault, s, self.tar_at(self.pos), e)?;
                    return Ok(Flow::Done);
                }
            }
        }
    }

    /// A pax extended header (at tar position `at`) for the next entry.
    fn pax_header(
        &mut self,
        r: &mut dyn Source,
        s: &mut Scanned,
        at: u64,
        size: u64,
    ) -> Result<Flow> {
        if size > format::MAX_PAX {
            return self.halt(s, at, format!("oversized pax header at {}", self.here(at)));
        }
        let mut data = vec![0u8; (size.div_ceil(512) * 512) as usize];
        let end = |_: &Self| Some((at, "the tar stream ends inside a pax header".to_string()));
        get!(self.piece(r, s, self.pos, &mut data, end));
        self.pos += data.len() as u64;
        match crate::read::parse_pax(&data[..size as usize]) {
            Ok(p) => self.pax = p,
            Err(e) => return self.halt(s, at, format!("{e} at {}", self.here(at))),
        }
        Ok(Flow::Next)
    }

    /// After a resync, an entry whose directory's header lay in the
    /// damage: make the directory (and its parents) here.
    fn missing_parents(&mut self, x: &mut Staging<'_>, parent: &str) -> Result<()> {
        if parent != "data" {
            let d = x.root.join(case_rel(parent));
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(&d)
                .map_err(|e| Error::io("cannot create directory", &d, e))?;
        }
        let mut p = parent;
        loop {
            self.dirs.insert(p.to_string());
            match p.rsplit_once('/') {
                Some((up, _)) => p = up,
                None => return Ok(()),
            }
        }
    }

    /// A tag file: casevault.json and the manifests are kept.
    fn tag_file(
        &mut self,
        r: &mut dyn Source,
        s: &mut Scanned,
        buf: &mut [u8],
        bag: &str,
        size: u64,
    ) -> Result<Flow> {
        let keep = bag == format::CASEVAULT_JSON && size <= format::MAX_JSON_ABSOLUTE
            || bag == format::MANIFEST && size <= format::MAX_MANIFEST_ABSOLUTE
            || bag == format::TAGMANIFEST && size <= format::MAX_SMALL_TAG_FILE;
        let mut data = Vec::new();
        let mut left = size;
        let mut each = |piece: &[u8]| {
            let want = (piece.len() as u64).min(left) as usize;
            if keep {
                data.extend_from_slice(&piece[..want]);
            }
            left -= want as u64;
        };
        get!(self.pieces(r, s, buf, size.div_ceil(512) * 512, bag, &mut each));
        if !keep {
            return Ok(Flow::Next);
        }
        match bag {
            format::CASEVAULT_JSON => s.json = Some(data),
            format::MANIFEST => s.manifest = Some(data),
            _ => s.tagmanifest = Some(data),
        }
        Ok(Flow::Next)
    }

    /// A payload file: into the scratch directory, hashed.
    fn payload_file(
        &mut self,
        r: &mut dyn Source,
        x: &mut Staging<'_>,
        s: &mut Scanned,
        buf: &mut [u8],
        bag: String,
        size: u64,
    ) -> Result<Flow> {
        let rel = case_rel(&bag).to_string();
        x.reserve(&rel, size)?;
        self.made.insert(bag.clone());
        let mut out = x.create_file(&rel)?;
        let mut h = Sha256::new();
        let mut got = 0u64;
        let inside = |w: &Self| Some((w.pos, format!("the tar stream ends inside {bag:?}")));
        while got < size {
            crate::signal::check()?;
            let k = (buf.len() as u64).min(size - got) as usize;
            // Only whole reads are known to have arrived: a file cut
            // short keeps those.
            s.partial.push((bag.clone(), size, got));
            get!(self.piece(r, s, self.pos, &mut buf[..k], inside));
            s.partial.pop();
            h.update(&buf[..k]);
            out.write_all(&buf[..k])
                .map_err(|err| x.write_error(&rel, err))?;
            got += k as u64;
            self.pos += k as u64;
        }
        out.flush().map_err(|err| x.write_error(&rel, err))?;
        s.files.push((
            bag,
            Found {
                size,
                sha256: hex(&h.finalize()),
            },
        ));
        // The padding: the file is whole even if the stream stops here.
        let pad = (size.div_ceil(512) * 512 - size) as usize;
        let end = |w: &Self| Some((w.pos, "the tar stream ends inside padding".to_string()));
        get!(self.piece(r, s, self.pos, &mut buf[..pad], end));
        self.pos += pad as u64;
        Ok(Flow::Next)
    }
}

/// Whether bag path `bag` was seen before as a file or directory, or
/// lies below a file.
fn clashes(made: &HashSet<String>, dirs: &HashSet<String>, bag: &str) -> bool {
    made.contains(bag)
        || dirs.contains(bag)
        || bag
            .match_indices('/')
            .any(|(i, _)| made.contains(&bag[..i]))
}

/// An error after the end-of-archive marker: noted as where the scan
/// stopped.
fn read_piece_err(vault: &Path, s: &mut Scanned, at: Option<u64>, e: io::Error) -> Result<()> {
    match crate::io::classify_stream_error(vault, "reading the payload", e) {
        Error::Integrity(f) => {
            s.stopped = Some(Stopped {
                tar_offset: at,
                reason: f.to_string(),
            });
            Ok(())
        }
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};
    use std::str::FromStr;

    /// A binary age file of `plain` to a fresh X25519 identity, written to
    /// `dir/v`.
    fn vault(dir: &Path, plain: &[u8]) -> (PathBuf, age::x25519::Identity) {
        let id = age::x25519::Identity::generate();
        let r = age::x25519::Recipient::from_str(&id.to_public().to_string()).unwrap();
        let enc =
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
        let mut out = Vec::new();
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap();
        let p = dir.join("v");
        fs::write(&p, out).unwrap();
        (p, id)
    }

    fn flip_chunk(p: &Path, k: u64) {
        let mut b = fs::read(p).unwrap();
        let mac = b.windows(5).position(|w| w == b"\n--- ").unwrap() + 1;
        let hl = b[mac..].iter().position(|&c| c == b'\n').unwrap() + mac + 1;
        b[hl + 16 + (k * AGE_CHUNK_CIPHER) as usize + 5] ^= 1;
        fs::write(p, b).unwrap();
    }

    fn noise(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// One zstd frame as casevault writes them (content size, checksum).
    fn zframe(data: &[u8]) -> Vec<u8> {
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        c.include_checksum(true).unwrap();
        c.include_contentsize(true).unwrap();
        c.compress(data).unwrap()
    }

    /// FORMAT §14.4: after a damaged chunk, the search skips a false magic
    /// (with a plausible header) inside a frame's stored bytes, accepts a
    /// whole frame embedded there (a case file holding zstd data), sees
    /// the run end in bytes that are no frame (a false start: the same
    /// damage record, extended), and resumes at the next real frame.
    #[test]
    fn a_zstd_scan_skips_false_frames_and_resumes_at_the_next_frame() {
        let tmp = tempfile::tempdir().unwrap();
        let f0 = noise(1, 200 * 1024);
        // Frame 1's data: noise, a false magic with a header declaring a
        // content size and a checksum, noise, a whole frame, noise.
        let embedded_data = noise(3, 10_000);
        let embedded = zframe(&embedded_data);
        let mut f1 = noise(2, 150 * 1024);
        f1.extend_from_slice(&[0x28, 0xB5, 0x2F, 0xFD, 0x24, 0x64]);
        f1.extend_from_slice(&noise(4, 50 * 1024));
        f1.extend_from_slice(&embedded);
        f1.extend_from_slice(&noise(5, 100 * 1024));
        let f2 = noise(6, 200 * 1024);
        let (z0, z1, z2) = (zframe(&f0), zframe(&f1), zframe(&f2));
        let mut plain = Vec::new();
        for z in [&z0, &z1, &z2] {
            plain.extend_from_slice(z);
        }
        // zstd stored the noise as is: both fakes appear in frame 1.
        let find = |needle: &[u8]| {
            plain
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap() as u64
        };
        let false_at = find(&[0x28, 0xB5, 0x2F, 0xFD, 0x24, 0x64]);
        let embedded_at = find(&embedded);
        let (s1, s2) = (z0.len() as u64, (z0.len() + z1.len()) as u64);
        assert!(s1 < false_at && false_at < embedded_at && embedded_at < s2);
        // Damage the chunk after the one where frame 1 starts (frame 0
        // ends in that one).
        let k = s1 / AGE_CHUNK_PLAIN + 1;
        assert!((k + 1) * AGE_CHUNK_PLAIN < false_at);
        let (p, id) = vault(tmp.path(), &plain);
        flip_chunk(&p, k);
        let ids: [&dyn age::Identity; 1] = [&id];
        let mut r = Frames::open(&p, &ids).unwrap();
        let mut got = vec![0u8; f0.len()];
        r.read_exact(&mut got).unwrap();
        assert_eq!(got, f0);
        assert!(r.read(&mut got).is_err(), "frame 1 lies in the damage");
        assert!(!r.false_start());
        let After::Resumed(first) = r.resync("damaged").unwrap() else {
            panic!("resumes");
        };
        assert!(!first.merge);
        assert_eq!(first.damage.unit, "zstd frames");
        assert_eq!(first.damage.index, Some(1));
        assert_eq!(first.damage.tar_start, Some(f0.len() as u64));
        assert_eq!(first.damage.tar_end, None);
        assert_eq!(first.damage.plain_start, Some(s1));
        // The false magic was skipped; the embedded frame decodes whole.
        assert_eq!(first.damage.plain_end, Some(embedded_at));
        assert_eq!((first.tar, first.plain), (None, embedded_at));
        let mut island = vec![0u8; embedded_data.len()];
        r.read_exact(&mut island).unwrap();
        assert_eq!(island, embedded_data);
        assert!(r.read(&mut got).is_err(), "no frame follows it");
        assert!(r.false_start());
        let After::Resumed(second) = r.resync("not a frame").unwrap() else {
            panic!("resumes");
        };
        assert!(second.merge, "the same hole");
        assert_eq!(second.damage.plain_start, Some(s1));
        assert_eq!(second.damage.plain_end, Some(s2));
        assert_eq!(second.damage.reason, "damaged");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, f2);
    }

    /// FORMAT §14.4 step 6: candidates whose header looks right but that
    /// do not decode are charged; past the budget the search stops there
    /// (without it, it would go on to the real frame at the end).
    #[test]
    fn the_frame_search_gives_up_past_its_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let f0 = noise(7, 100 * 1024);
        let mut plain = zframe(&f0);
        let hole_at = plain.len() as u64;
        plain.extend_from_slice(&noise(8, 2 * AGE_CHUNK_PLAIN as usize));
        // Budget for about 1 MiB of plaintext: 64 MiB + 2 MiB, i.e. five
        // charges; eight fakes (magic, content size 100, checksum), each
        // followed by bytes that are no block.
        for i in 0..8 {
            plain.extend_from_slice(&[0x28, 0xB5, 0x2F, 0xFD, 0x24, 0x64]);
            plain.extend_from_slice(&[0xFF; 10]);
            plain.extend_from_slice(&noise(20 + i, 1000));
        }
        let last = noise(9, 1000);
        let real_at = plain.len() as u64;
        plain.extend_from_slice(&zframe(&last));
        plain.resize(1 << 20, 0);
        let (p, id) = vault(tmp.path(), &plain);
        flip_chunk(&p, hole_at / AGE_CHUNK_PLAIN + 1);
        let ids: [&dyn age::Identity; 1] = [&id];
        let mut r = Frames::open(&p, &ids).unwrap();
        let mut got = vec![0u8; f0.len()];
        r.read_exact(&mut got).unwrap();
        assert!(r.read(&mut got).is_err(), "not a frame after frame 0");
        match r.resync("damaged").unwrap() {
            After::Stopped(Some(why)) => assert!(why.contains("budget"), "{why}"),
            After::Stopped(None) => panic!("stopped without the budget"),
            After::Resumed(res) => {
                panic!("resumed at {} (the real frame is at {real_at})", res.plain)
            }
        }
    }

    /// What the design relies on (age 0.12): after a chunk fails, age's
    /// reader is spent, even for a seek to a later chunk; a seek to a
    /// chunk boundary authenticates the last chunk, so it fails on a cut
    /// vault, while one byte in and back does not.
    #[test]
    fn age_reader_behaviour_salvage_designs_around() {
        let tmp = tempfile::tempdir().unwrap();
        let plain: Vec<u8> = (0..5 * AGE_CHUNK_PLAIN + 100).map(|i| i as u8).collect();
        let (p, id) = vault(tmp.path(), &plain);
        flip_chunk(&p, 2);
        let ids: [&dyn age::Identity; 1] = [&id];
        let mut r = new_reader(&p, &ids).unwrap();
        let mut buf = vec![0u8; (2 * AGE_CHUNK_PLAIN) as usize];
        r.read_exact(&mut buf).unwrap();
        assert!(r.read(&mut buf).is_err(), "chunk 2 fails");
        r.seek(SeekFrom::Start(3 * AGE_CHUNK_PLAIN + 1))
            .unwrap_or(0);
        assert!(r.read(&mut buf[..10]).is_err(), "the reader is spent");
        // A new reader reads chunk 3 on.
        let mut r = new_reader(&p, &ids).unwrap();
        r.seek(SeekFrom::Start(3 * AGE_CHUNK_PLAIN)).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &plain[3 * AGE_CHUNK_PLAIN as usize..]);

        // Cut the file inside chunk 4: a seek to the boundary of chunk 3
        // fails (age authenticates the last chunk), one byte in works.
        let b = fs::read(&p).unwrap();
        fs::write(&p, &b[..b.len() - 200]).unwrap();
        let mut r = new_reader(&p, &ids).unwrap();
        assert!(r.seek(SeekFrom::Start(3 * AGE_CHUNK_PLAIN)).is_err());
        let mut s = Resync::open(&p, &ids).unwrap();
        assert_eq!(
            s.skip(2 * AGE_CHUNK_PLAIN).unwrap(),
            Some(3 * AGE_CHUNK_PLAIN)
        );
        let mut got = vec![0u8; AGE_CHUNK_PLAIN as usize];
        s.read_exact(&mut got).unwrap();
        assert_eq!(
            got,
            &plain[3 * AGE_CHUNK_PLAIN as usize..4 * AGE_CHUNK_PLAIN as usize]
        );
        assert!(s.read(&mut got).is_err(), "chunk 4 is cut");
        assert!(
            matches!(s.resync("cut").unwrap(), After::Stopped(None)),
            "nothing after the cut"
        );
        // From the start: chunk 2 fails, the resync lands on chunk 3.
        let mut s = Resync::open(&p, &ids).unwrap();
        let mut two = vec![0u8; 2 * AGE_CHUNK_PLAIN as usize];
        s.read_exact(&mut two).unwrap();
        assert!(s.read(&mut got).is_err());
        match s.resync("damaged").unwrap() {
            After::Resumed(r) => {
                assert_eq!(r.damage.tar_start, Some(2 * AGE_CHUNK_PLAIN));
                assert_eq!(r.damage.tar_end, Some(3 * AGE_CHUNK_PLAIN));
                assert_eq!(
                    (r.tar, r.plain),
                    (Some(3 * AGE_CHUNK_PLAIN), 3 * AGE_CHUNK_PLAIN)
                );
            }
            After::Stopped(_) => panic!("chunk 3 authenticates"),
        }
    }
}

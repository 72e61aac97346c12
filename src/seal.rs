//! `casevault seal`: walk a case directory once, hash and archive every
//! byte in one pass, and write an age-encrypted vault atomically.
//!
//! Pipeline (FORMAT §2, §3): walk (sorted) → read + SHA-256 + tar framing on
//! this thread → `PipeWriter` → zstd → age on a second thread →
//! `PipeWriter` → sidecar hash → temp file on a third → fsync → rename →
//! fsync dir.
//!
//! On the producer thread, `Walk` walks the case (`src/walk.rs`) and
//! streams each file; `Bag` owns the bag layout: the `CASE/data/…` paths,
//! the `casevault.json` entries, the payload manifest and the tag files.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::format::{self, Compression, Entry, Kind, Totals};
use crate::io::{hex, AtomicFile, HashingWriter};
use crate::keys::BoxedRecipient;
use crate::parity::FileBuilder;
use crate::pipe::{Failed, Lend, PipeWriter};
use crate::tarfmt;
use crate::{manifest, signal, Error, Result};

/// What to seal and how.
pub struct SealOptions {
    pub case_dir: PathBuf,
    pub output: PathBuf,
    pub recipients: Vec<BoxedRecipient>,
    pub case_id: Option<String>,
    pub compression: Compression,
    pub zstd_level: i32,
    pub armor: bool,
    pub force: bool,
    /// Return every sealed entry in [`SealReport::entries`] (sweep's
    /// `--remove-source` needs them); otherwise they are only streamed into
    /// `casevault.json`, keeping memory small for cases with many files.
    pub collect_entries: bool,
    /// Sign the vault (`VAULT.sig`) and its `casevault.json`
    /// (`casevault.sig`) with this key (FORMAT §5.5, §10).
    pub sign: Option<crate::sign::SigningKey>,
    /// Permission bits of the vault, its sidecar and signature:
    /// [`OUTPUT_MODE`] unless a sweep store grants its group read access
    /// (docs/OPERATIONS.md §3.2).
    pub output_mode: u32,
    /// Write `VAULT.par` with this percentage of parity (FORMAT §15).
    pub parity: Option<u32>,
}

/// The mode of a vault and its sidecar and signature: the owner's alone.
pub const OUTPUT_MODE: u32 = 0o600;

/// Default zstd level (see docs/PERFORMANCE.md once measured).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// The outcome of a successful seal (`--json` object).
#[derive(Debug, Serialize)]
pub struct SealReport {
    pub vault: PathBuf,
    pub sidecar: PathBuf,
    pub case_id: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub payload_bytes: u64,
    pub vault_bytes: u64,
    pub vault_sha256: String,
    pub compression: Compression,
    pub armor: bool,
    pub recipients: usize,
    pub sealed_at: String,
    /// SHA-256 of the `manifest-sha256.txt` written into the bag.
    pub manifest_sha256: String,
    /// Every entry sealed, as recorded in `casevault.json`, when
    /// [`SealOptions::collect_entries`] was set (not printed).
    #[serde(skip)]
    pub entries: Vec<Entry>,
    /// `VAULT.sig`, when signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<PathBuf>,
    /// `VAULT.par`, with `--parity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parity: Option<PathBuf>,
    /// The signer recorded in `casevault.json`, when signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<format::Signer>,
}

/// Resolve the case id: `--case-id`, or the case directory's own name.
pub fn case_id_for(case_dir: &Path, given: Option<&str>) -> Result<String> {
    let id = match given {
        Some(id) => id.to_string(),
        None => {
            let canon = fs::canonicalize(case_dir)
                .map_err(|e| Error::io("cannot resolve case directory", case_dir, e))?;
            let name = canon.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !format::is_valid_case_id(name) {
                return Err(Error::Refused(format!(
                    "the case directory name {:?} is not a valid case id ([A-Za-z0-9][A-Za-z0-9._-]{{0,127}}); give one with --case-id",
                    canon.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                )));
            }
            return Ok(name.to_string());
        }
    };
    if !format::is_valid_case_id(&id) {
        return Err(Error::Refused(format!(
            "--case-id {id:?} is not a valid case id ([A-Za-z0-9][A-Za-z0-9._-]{{0,127}})"
        )));
    }
    Ok(id)
}

/// Seal `opts.case_dir` into `opts.output` (and its `.sha256` sidecar).
pub fn seal(opts: SealOptions) -> Result<SealReport> {
    let case_dir = &opts.case_dir;
    let meta =
        fs::metadata(case_dir).map_err(|e| Error::io("cannot read case directory", case_dir, e))?;
    if !meta.is_dir() {
        return Err(Error::Refused(format!(
            "{} is not a directory",
            case_dir.display()
        )));
    }
    let root = crate::walk::Root::open(case_dir)?;
    seal_from(opts, &root)
}

/// Seal the directory already open as `root` (sweep opens each case
/// without following symlinks, issue #10 item 3); `opts.case_dir` is then
/// only the path shown in messages. The walk goes through handles from
/// `root`, so a directory swapped during it cannot redirect it.
pub fn seal_from(opts: SealOptions, root: &crate::walk::Root) -> Result<SealReport> {
    let _progress = crate::progress::Guard;
    let sidecar = crate::sidecar::path(&opts.output);
    refuse_output(&opts, root)?;
    let vault_file = AtomicFile::create(&opts.output)?;
    vault_file.set_mode(opts.output_mode)?;
    let parity = ParityFile::create(&opts)?;
    let builder = parity.as_ref().map(|p| p.builder()).transpose()?;
    let sink = crate::direct::DirectFile::new(vault_file);
    let (out, bag, sealed_at) = pipeline(&opts, root, sink, builder)?;
    let vault_file = out
        .sink
        .into_inner()
        .map_err(|e| Error::io("cannot write vault", &opts.output, e))?;
    let written = Written {
        vault_sha256: hex(&out.digest),
        vault_bytes: out.bytes,
        sidecar,
        signature: None,
        parity: None,
    };
    let written = commit(&opts, vault_file, parity, written)?;
    Ok(report(&opts, bag, sealed_at, written))
}

/// Seal `root` into any writer (an upload to an S3 store, issue #13)
/// instead of a file: the same walk, archive, compression and encryption
/// as [`seal_from`], but no file, sidecar or signature is written, and
/// `opts.output` only names the vault in messages and the report. The
/// caller finishes `sink` (returned) and writes the sidecar and signature,
/// and, with `opts.parity`, uploads the parity file (returned as an
/// unnamed temporary file, complete; its offset is wherever writing left it).
pub fn seal_to<W: crate::direct::Sink + Send + 'static>(
    opts: SealOptions,
    root: &crate::walk::Root,
    sink: W,
) -> Result<(SealReport, W, Option<fs::File>)> {
    let _progress = crate::progress::Guard;
    if opts.recipients.is_empty() {
        return Err(Error::Usage(
            "no recipients given: use -r RECIPIENT or -R FILE".into(),
        ));
    }
    // The parity file goes to an unnamed temporary file (it holds only
    // what the ciphertext implies) for the caller to upload beside it.
    let parity = match opts.parity {
        Some(percent) => {
            let g = crate::parity::Geometry::new(percent)?;
            let tmp_err =
                |e| Error::io("cannot write a temporary file in", &std::env::temp_dir(), e);
            let tmp = tempfile::tempfile().map_err(tmp_err)?;
            let b = FileBuilder::to_file(g, &tmp).map_err(tmp_err)?;
            Some((tmp, b))
        }
        None => None,
    };
    let (tmp, builder) = parity.unzip();
    let (out, bag, sealed_at) = pipeline(&opts, root, sink, builder)?;
    let written = Written {
        vault_sha256: hex(&out.digest),
        vault_bytes: out.bytes,
        sidecar: crate::sidecar::path(&opts.output),
        signature: None,
        parity: None,
    };
    Ok((report(&opts, bag, sealed_at, written), out.sink, tmp))
}

/// The walk and the output stage (compress, encrypt, hash the ciphertext,
/// write to `sink`, feed `parity`); returns what the output stage wrote,
/// the bag and the seal time.
fn pipeline<W: crate::direct::Sink + Send + 'static>(
    opts: &SealOptions,
    root: &crate::walk::Root,
    sink: W,
    parity: Option<FileBuilder>,
) -> Result<(Output<W>, Bag, String)> {
    let case_dir = &opts.case_dir;
    let case_id = case_id_for(case_dir, opts.case_id.as_deref())?;
    let time = SealTime::now();

    // The output stage: compress, encrypt, hash the ciphertext, write.
    let vault_file = sink;
    let target = opts.output.clone();
    let encryptor = crate::read::cipher::encryptor(&opts.recipients)?;
    let (compression, level, armor) = (opts.compression, opts.zstd_level, opts.armor);
    let mut pipe = PipeWriter::spawn(move |mut chunks| {
        // Hashing and writing the ciphertext run on a third thread, so
        // that encryption has a core of its own (issue #12).
        let (out, failed) = output_stage(vault_file, parity, target.clone());
        let werr = |e: io::Error| failed.take_or(|| Error::io("cannot write vault", &target, e));
        let stream = crate::read::cipher::encrypt_writer(encryptor, armor, out).map_err(werr)?;
        let mut comp = Compressor::new(stream, compression, level).map_err(werr)?;
        let complete = chunks.drain(&mut comp).map_err(werr)?;
        if !complete {
            // The producer failed; the temp file is removed on drop.
            return Err(Error::Refused("sealing stopped".into()));
        }
        let stream = comp.finish().map_err(werr)?;
        let out = crate::read::cipher::finish_writer(stream).map_err(werr)?;
        out.finish().map_err(|e| failed.take_or(|| e))
    });

    let bag = Bag::new(case_id, opts.collect_entries, opts.sign.clone());
    let mut walk = Walk::new(bag);
    let produced = walk.archive(root, &mut pipe, &time, compression);
    if let Err(e) = produced {
        // A write error means the output stage stopped: its error is the cause.
        let out_err = pipe.abort();
        return Err(match e {
            WalkError::Write(w) => {
                out_err.unwrap_or_else(|| Error::io("cannot write vault", &opts.output, w))
            }
            WalkError::Other(e) => e,
        });
    }
    let out = pipe.finish()?;
    signal::check()?;
    Ok((out, walk.bag, time.sealed_at))
}

/// What the output stage wrote: the sink, the ciphertext's SHA-256 and
/// length, and the finished parity file's handle.
struct Output<W> {
    sink: W,
    digest: [u8; 32],
    bytes: u64,
}

/// `VAULT.par` being written (`--parity`), renamed into place with the vault.
struct ParityFile {
    file: AtomicFile,
    geometry: crate::parity::Geometry,
}

impl ParityFile {
    fn create(opts: &SealOptions) -> Result<Option<ParityFile>> {
        let Some(percent) = opts.parity else {
            return Ok(None);
        };
        let geometry = crate::parity::Geometry::new(percent)?;
        let file = AtomicFile::create(&crate::parity::path(&opts.output))?;
        file.set_mode(opts.output_mode)?;
        Ok(Some(ParityFile { file, geometry }))
    }

    fn builder(&self) -> Result<FileBuilder> {
        FileBuilder::to_file(self.geometry, self.file.file())
            .map_err(|e| Error::io("cannot write", self.file.target(), e))
    }
}

/// The last stage of seal's pipeline: a thread that hashes the ciphertext
/// (for the sidecar) and writes it to the vault's temporary file (or, for
/// an S3 store, the upload), and
/// returns both with the byte count. Its I/O error, the cause of any write
/// into it failing, is left in the returned [`Failed`].
fn output_stage<W: crate::direct::Sink + Send + 'static>(
    vault_file: W,
    parity: Option<FileBuilder>,
    target: PathBuf,
) -> (PipeWriter<Output<W>>, Failed) {
    let failed = Failed::default();
    let slot = failed.clone();
    let out = PipeWriter::spawn_named("casevault-output", move |mut chunks| {
        // The Tee gathers the ciphertext into aligned 4 MiB chunks where
        // they pay (a file written around the page cache, or parity to
        // feed; otherwise pipeline buffers go straight through), and the
        // parity builder codes those very chunks (FORMAT §15).
        let par_target = crate::parity::path(&target);
        let parity = match parity.map(crate::parity::Worker::spawn).transpose() {
            Ok(p) => p,
            Err(e) => return Err(Error::io("cannot write", &par_target, e)),
        };
        let mut hashing = HashingWriter::new(crate::parity::Tee::new(vault_file, parity));
        match chunks.drain(&mut hashing) {
            Ok(true) => {}
            // The encrypting stage stopped: the temp file is removed on drop.
            Ok(false) => return Err(Error::Refused("sealing stopped".into())),
            Err(e) => {
                slot.set(Error::io("cannot write vault", &target, e));
                return Err(Error::Refused("output stage stopped".into()));
            }
        }
        let (tee, digest, bytes) = hashing.finish();
        let (sink, parity) = tee
            .into_parts()
            .map_err(|e| Error::io("cannot write vault", &target, e))?;
        if let Some(p) = parity {
            let perr = |e: io::Error| Error::io("cannot write", &par_target, e);
            p.finish()
                .and_then(|b| b.finish_file(digest))
                .map_err(perr)?;
        }
        Ok(Output {
            sink,
            digest,
            bytes,
        })
    });
    (out, failed)
}

/// Refuse what would make the seal fail or overwrite something: an
/// existing vault without `--force`, an output inside the case, no
/// recipients. Nothing has been written yet.
fn refuse_output(opts: &SealOptions, root: &crate::walk::Root) -> Result<()> {
    // An existing vault is never replaced without --force. A sidecar whose
    // vault is gone describes nothing and is replaced with the new one.
    if !opts.force && fs::symlink_metadata(&opts.output).is_ok() {
        return Err(Error::Refused(format!(
            "{} already exists (use --force to replace it)",
            opts.output.display()
        )));
    }
    refuse_output_inside_case(&opts.case_dir, root, &opts.output)?;
    if opts.recipients.is_empty() {
        return Err(Error::Usage(
            "no recipients given: use -r RECIPIENT or -R FILE".into(),
        ));
    }
    Ok(())
}

/// When a vault is sealed: `sealed_at` (casevault.json), its date
/// (bag-info.txt's Bagging-Date) and the mtime of the bag directory and
/// tag files.
struct SealTime {
    sealed_at: String,
    unix: i64,
}

impl SealTime {
    fn now() -> Self {
        let now = time::OffsetDateTime::now_utc();
        let sealed_at = now
            .format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .expect("formatting a UTC time cannot fail");
        SealTime {
            sealed_at,
            unix: now.unix_timestamp(),
        }
    }

    fn bagging_date(&self) -> &str {
        &self.sealed_at[..10]
    }
}

/// The vault as written to its temporary file, and the sidecar and
/// signature beside it once committed.
struct Written {
    vault_sha256: String,
    vault_bytes: u64,
    sidecar: PathBuf,
    signature: Option<PathBuf>,
    parity: Option<PathBuf>,
}

/// Write the sidecar (and `VAULT.sig`), then rename the vault and them
/// (and `VAULT.par`) into place and sync the directory.
fn commit(
    opts: &SealOptions,
    vault_file: AtomicFile,
    parity: Option<ParityFile>,
    mut w: Written,
) -> Result<Written> {
    let side = crate::sidecar::write(&w.sidecar, &opts.output, &w.vault_sha256)?;
    side.set_mode(opts.output_mode)?;
    // The outer signature is computed from the ciphertext read back from
    // the temporary file, before anything is renamed into place.
    let sig = match &opts.sign {
        Some(key) => {
            let sig = crate::sign::write_vault_sig(key, &vault_file, &opts.output)?;
            sig.set_mode(opts.output_mode)?;
            Some(sig)
        }
        None => None,
    };
    vault_file.commit(opts.force)?;
    side.commit(true)?;
    w.signature = crate::sign::commit_vault_sig(sig, &opts.output)?;
    w.parity = commit_parity(&opts.output, parity)?;
    crate::io::sync_parent_dir(&opts.output)?;
    Ok(w)
}

/// Rename `VAULT.par` into place; without `--parity`, remove a parity
/// file left by the vault this one replaced (`--force`): it describes
/// other bytes.
fn commit_parity(vault: &Path, parity: Option<ParityFile>) -> Result<Option<PathBuf>> {
    let target = crate::parity::path(vault);
    match parity {
        Some(p) => {
            p.file.commit(true)?;
            Ok(Some(target))
        }
        None => match fs::remove_file(&target) {
            Ok(()) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("cannot remove the stale parity file", &target, e)),
        },
    }
}

/// The `--json` object of a seal.
fn report(opts: &SealOptions, mut bag: Bag, sealed_at: String, w: Written) -> SealReport {
    SealReport {
        vault: opts.output.clone(),
        sidecar: w.sidecar,
        case_id: bag.case_id,
        files: bag.totals.files,
        dirs: bag.totals.dirs,
        symlinks: bag.totals.symlinks,
        payload_bytes: bag.totals.bytes,
        vault_bytes: w.vault_bytes,
        vault_sha256: w.vault_sha256,
        compression: opts.compression,
        armor: opts.armor,
        recipients: opts.recipients.len(),
        sealed_at,
        manifest_sha256: std::mem::take(&mut bag.manifest_sha256),
        entries: std::mem::take(&mut bag.sealed_entries),
        signer: opts.sign.as_ref().map(|k| k.signer()),
        signature: w.signature,
        parity: w.parity,
    }
}

/// Refuse an output path inside the case: sealing would read its own
/// temporary file.
fn refuse_output_inside_case(
    case_dir: &Path,
    root: &crate::walk::Root,
    output: &Path,
) -> Result<()> {
    let out_dir = crate::io::parent_dir(output);
    let out_dir = fs::canonicalize(&out_dir)
        .map_err(|e| Error::io("cannot resolve output directory", &out_dir, e))?;
    // Compared by (device, inode) with the directory actually open, not by
    // its path, which may name something else by now.
    let inside = out_dir.ancestors().any(|a| {
        fs::symlink_metadata(a)
            .is_ok_and(|m| (m.dev(), m.ino()) == (root.meta().dev(), root.meta().ino()))
    });
    if inside {
        return Err(Error::Refused(format!(
            "the vault {} would be inside the case directory {}; write it elsewhere",
            output.display(),
            case_dir.display()
        )));
    }
    Ok(())
}

/// zstd (format version 3: independent frames and a seek table,
/// `src/frames.rs`) or pass-through, with an explicit `finish`.
enum Compressor<W: Write> {
    Zstd(crate::frames::FrameWriter<W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    fn new(w: W, c: Compression, level: i32) -> io::Result<Self> {
        Ok(match c {
            Compression::Zstd => Compressor::Zstd(crate::frames::FrameWriter::new(w, level)?),
            Compression::None => Compressor::None(w),
        })
    }
    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Zstd(e) => e.finish(),
            Compressor::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Zstd(e) => e.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Zstd(e) => e.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

enum WalkError {
    /// Writing to the output stage failed (it stopped; ask it why).
    Write(io::Error),
    Other(Error),
}

impl From<Error> for WalkError {
    fn from(e: Error) -> Self {
        WalkError::Other(e)
    }
}

/// The bag layout (FORMAT §3): where each case entry goes in the tar
/// stream (`CASE/data/…`), the `entries` of `casevault.json` streamed as
/// they come, the payload manifest, and the tag files after the payload.
struct Bag {
    case_id: String,
    /// The `entries` array of casevault.json and the manifest, serialised
    /// as we go and kept compressed until the tag files are written.
    json_entries: Spool,
    collect: bool,
    manifest: Spool,
    totals: Totals,
    manifest_sha256: String,
    sealed_entries: Vec<Entry>,
    /// Signs `casevault.json` into `casevault.sig` when set.
    signer: Option<crate::sign::SigningKey>,
    /// Bytes of the symlinks' paths and targets so far, against the
    /// readers' limit ([`format::MAX_LINK_BYTES`]).
    link_bytes: u64,
    /// Where the next entry starts in the tar stream: each directory and
    /// file records its offset in `casevault.json` (FORMAT §13.1).
    pos: u64,
}

fn rel_str(rel: &Path, path: &Path) -> Result<String> {
    match rel.to_str() {
        Some(s) => Ok(s.to_string()),
        None => Err(Error::Refused(format!(
            "{}: file name is not valid UTF-8; casevault does not transcode evidence names — rename a copy and record the change",
            path.display()
        ))),
    }
}

/// The mode and mtime a case entry is recorded with.
#[derive(Clone, Copy)]
struct Stamp {
    mode: u32,
    mtime: i64,
    mtime_nsec: u32,
}

impl Stamp {
    /// From the entry's lstat; refuses an mtime no vault can record.
    fn of(meta: &crate::walk::Meta, path: &Path) -> Result<Stamp> {
        let mode = meta.mode() & 0o7777;
        let (mtime, mtime_nsec) = (meta.mtime(), meta.mtime_nsec() as u32);
        if !format::mtime_in_range(mtime) {
            return Err(Error::Refused(format!(
                "{}: mtime {} is outside the years 0000 to 9999 that a vault records (FORMAT.md §5.4); seal a copy whose time is corrected (touch -m -d)",
                path.display(),
                format::display_time(mtime, mtime_nsec)
            )));
        }
        Ok(Stamp {
            mode,
            mtime,
            mtime_nsec,
        })
    }

    /// A `casevault.json` entry without size, digest or target.
    fn entry(self, path: String, kind: Kind) -> Entry {
        Entry {
            path,
            kind,
            size: None,
            sha256: None,
            target: None,
            mode: self.mode,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            offset: None,
        }
    }
}

impl Bag {
    fn new(case_id: String, collect: bool, signer: Option<crate::sign::SigningKey>) -> Self {
        Bag {
            case_id,
            json_entries: Spool::new(),
            collect,
            manifest: Spool::new(),
            totals: Totals::default(),
            manifest_sha256: String::new(),
            sealed_entries: Vec::new(),
            signer,
            link_bytes: 0,
            pos: 0,
        }
    }

    /// The bag's top directory `CASE/`, first in the stream.
    fn write_root<W: Write>(&mut self, out: &mut W, time: &SealTime) -> io::Result<()> {
        let id = &self.case_id;
        self.pos += tarfmt::write_header(
            out,
            &format!("{id}/"),
            tar::EntryType::Directory,
            0,
            0o755,
            time.unix,
        )?;
        Ok(())
    }

    /// The bag path (`data/REL`) and tar path (`CASE/data/REL`) of the case
    /// entry at `rel`; refuses a path too long for the tar format.
    fn paths(&self, rel: &str, path: &Path) -> Result<(String, String)> {
        let id = &self.case_id;
        let bag_path = if rel.is_empty() {
            "data".to_string()
        } else {
            format!("data/{rel}")
        };
        let tar_path = format!("{id}/{bag_path}");
        if tar_path.len() + 1 > format::MAX_PATH_BYTES {
            return Err(Error::Refused(format!(
                "{}: path longer than {} bytes",
                path.display(),
                format::MAX_PATH_BYTES
            )));
        }
        Ok((bag_path, tar_path))
    }

    fn push_entry(&mut self, e: Entry) {
        let first = self.json_entries.len() == 0;
        self.json_entries.push_with(|b| {
            if !first {
                b.push(b',');
            }
            serde_json::to_writer(b, &e).expect("serialising an entry into memory cannot fail");
        });
        if self.collect {
            self.sealed_entries.push(e);
        }
    }

    fn add_dir<W: Write>(
        &mut self,
        out: &mut W,
        bag_path: String,
        tar_path: &str,
        stamp: Stamp,
    ) -> io::Result<()> {
        let offset = self.pos;
        self.pos += tarfmt::write_header(
            out,
            &format!("{tar_path}/"),
            tar::EntryType::Directory,
            0,
            stamp.mode,
            stamp.mtime,
        )?;
        self.totals.dirs += 1;
        self.push_entry(Entry {
            offset: Some(offset),
            ..stamp.entry(bag_path, Kind::Dir)
        });
        Ok(())
    }

    /// A symlink is recorded in `casevault.json` only (FORMAT §5.4).
    /// `case_dir` names the case in the refusal.
    fn add_symlink(
        &mut self,
        case_dir: &Path,
        bag_path: String,
        target: &str,
        stamp: Stamp,
    ) -> Result<()> {
        self.totals.symlinks += 1;
        // Readers refuse a casevault.json with more links than this
        // (FORMAT §6.1): seal never writes a vault they must refuse.
        self.link_bytes += (bag_path.len() + target.len()) as u64;
        if self.totals.symlinks > format::MAX_LINKS || self.link_bytes > format::MAX_LINK_BYTES {
            return Err(Error::Refused(format!(
                "{}: the case has more than {} symlinks or {} bytes of their paths and targets, the limits of the vault format (FORMAT.md §6.1); split it into several cases",
                case_dir.display(),
                format::MAX_LINKS,
                format::MAX_LINK_BYTES
            )));
        }
        self.push_entry(Entry {
            target: Some(target.to_string()),
            ..stamp.entry(bag_path, Kind::Symlink)
        });
        Ok(())
    }

    /// A regular file, already written to the stream (`written` bytes of
    /// header(s), data and padding): its manifest line and entry.
    fn add_file(
        &mut self,
        bag_path: String,
        size: u64,
        digest: &[u8; 32],
        stamp: Stamp,
        written: u64,
    ) {
        let offset = self.pos;
        self.pos += written;
        let digest = hex(digest);
        self.manifest
            .push(manifest::line(&digest, &bag_path).as_bytes());
        self.totals.files += 1;
        self.totals.bytes += size;
        self.push_entry(Entry {
            size: Some(size),
            sha256: Some(digest),
            offset: Some(offset),
            ..stamp.entry(bag_path, Kind::File)
        });
    }

    /// The tag files, after the payload (FORMAT §3): `bagit.txt`,
    /// `bag-info.txt`, `casevault.json` (and `casevault.sig`), the payload
    /// manifest, then the tag manifest and the end of the tar stream.
    fn write_tag_files<W: Write>(
        &mut self,
        out: &mut W,
        time: &SealTime,
        compression: Compression,
    ) -> std::result::Result<(), WalkError> {
        let id = self.case_id.clone();
        let signer = self.signer.as_ref().map(|k| k.signer());
        let (json_prefix, json_suffix) = format::json_parts_signed(
            &id,
            &time.sealed_at,
            compression,
            &self.totals,
            signer.as_ref(),
        );
        let json_entries = std::mem::take(&mut self.json_entries).finish();
        let json = [
            Part::Bytes(&json_prefix),
            Part::Spooled(&json_entries),
            Part::Bytes(&json_suffix),
        ];
        // Inner signature over the exact casevault.json bytes (FORMAT §5.5).
        let json_sig = match &self.signer {
            Some(k) => {
                let mut h = sha2::Sha512::new();
                each_chunk(&json, &mut |c| {
                    h.update(c);
                    Ok(())
                })
                .map_err(WalkError::Write)?;
                Some(k.sign_sha512(crate::sign::NS_MANIFEST, &h.finalize().into())?)
            }
            None => None,
        };
        let info = format::bag_info(
            time.bagging_date(),
            self.totals.bytes,
            self.totals.files,
            &id,
        );
        let manifest = std::mem::take(&mut self.manifest).finish();
        let manifest = [Part::Spooled(&manifest)];
        self.manifest_sha256 = hex(&digest_of(&manifest).map_err(WalkError::Write)?);
        let bagit = [Part::Bytes(format::BAGIT_TXT_CONTENT.as_bytes())];
        let info = [Part::Bytes(info.as_bytes())];
        let sig = [Part::Bytes(json_sig.as_deref().unwrap_or("").as_bytes())];
        let mut tags: Vec<(&'static str, &[Part])> = vec![
            (format::BAGIT_TXT, &bagit),
            (format::BAG_INFO_TXT, &info),
            (format::CASEVAULT_JSON, &json),
        ];
        if json_sig.is_some() {
            tags.push((format::CASEVAULT_SIG, &sig)); // only signed vaults have it
        }
        tags.push((format::MANIFEST, &manifest));
        write_tags(out, &id, &tags, time.unix, self.pos).map_err(WalkError::Write)
    }
}

/// Text that grows with the case (`casevault.json`'s entries, the
/// manifest), kept zstd-compressed in memory until the tag files are
/// written: never on disk, where it would reveal names and digests, and
/// several times smaller than the text (issue #12: seal memory). The
/// walking thread, which bounds a seal of many small files, only gathers
/// the text into batches; a thread of the spool's own compresses them, at
/// level 1 (level 3 cost 14 % of the wall time of a 1M-file seal when it
/// ran on the walking thread, and more memory; docs/PERFORMANCE.md).
#[derive(Default)]
struct Spool {
    batch: Vec<u8>,
    worker: Option<SpoolWorker>,
    len: u64,
}

/// Bytes of text per batch handed to the spool's thread.
const SPOOL_BATCH: usize = 256 << 10;
/// Batches queued for it. A batch is allocated only when no emptied one
/// has come back, that is when every batch is being filled, queued or
/// compressed: so at most `SPOOL_QUEUE + 3` batches exist per spool, each
/// with less than `2 × SPOOL_BATCH` of capacity (3.5 MiB).
const SPOOL_QUEUE: usize = 4;

/// The spool's compressing thread: batches in, emptied batches back for
/// reuse, the compressed text when the sender is dropped.
struct SpoolWorker {
    tx: mpsc::SyncSender<Vec<u8>>,
    back: mpsc::Receiver<Vec<u8>>,
    handle: std::thread::JoinHandle<Vec<u8>>,
}

impl SpoolWorker {
    fn spawn() -> SpoolWorker {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(SPOOL_QUEUE);
        let (back_tx, back) = mpsc::sync_channel(SPOOL_QUEUE + 1);
        let handle = std::thread::Builder::new()
            .name("casevault-spool".into())
            .spawn(move || {
                let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1)
                    .expect("a zstd encoder into memory can be made");
                for mut b in rx {
                    enc.write_all(&b)
                        .expect("compressing into memory cannot fail");
                    b.clear();
                    let _ = back_tx.try_send(b);
                }
                enc.finish().expect("compressing into memory cannot fail")
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        SpoolWorker { tx, back, handle }
    }
}

/// A finished [`Spool`]: the compressed bytes and the text's length.
struct Spooled {
    z: Vec<u8>,
    len: u64,
}

impl Spool {
    fn new() -> Spool {
        Spool::default()
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// Append text that `write` puts at the end of the batch.
    fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let before = self.batch.len();
        write(&mut self.batch);
        self.len += (self.batch.len() - before) as u64;
        if self.batch.len() >= SPOOL_BATCH {
            self.send();
        }
    }

    fn push(&mut self, text: &[u8]) {
        self.push_with(|b| b.extend_from_slice(text));
    }

    /// Hand the batch to the spool's thread (started on the first one).
    fn send(&mut self) {
        let w = self.worker.get_or_insert_with(SpoolWorker::spawn);
        let next = w.back.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.batch, next);
        w.tx.send(full)
            .expect("the spool's thread runs until its sender is dropped");
    }

    fn finish(mut self) -> Spooled {
        if !self.batch.is_empty() {
            self.send();
        }
        let z = match self.worker {
            Some(w) => {
                drop(w.tx);
                w.handle
                    .join()
                    .expect("compressing into memory cannot fail")
            }
            None => Vec::new(),
        };
        Spooled { z, len: self.len }
    }
}

/// A piece of a tag file's content.
enum Part<'a> {
    Bytes(&'a [u8]),
    Spooled(&'a Spooled),
}

impl Part<'_> {
    fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::Spooled(s) => s.len,
        }
    }
}

/// Hand the content of `parts` to `f`, in pieces of at most 64 KiB.
fn each_chunk(parts: &[Part], f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    for p in parts {
        match p {
            Part::Bytes(b) => f(b)?,
            Part::Spooled(s) if s.len == 0 => {}
            Part::Spooled(s) => {
                let mut d = zstd::stream::read::Decoder::new(&s.z[..])?;
                let mut left = s.len;
                while left > 0 {
                    let n = d.read(&mut buf)?;
                    if n == 0 {
                        return Err(io::Error::other("spooled text ended early"));
                    }
                    f(&buf[..n])?;
                    left -= n as u64;
                }
            }
        }
    }
    Ok(())
}

fn digest_of(parts: &[Part]) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    each_chunk(parts, &mut |c| {
        h.update(c);
        Ok(())
    })?;
    Ok(h.finalize().into())
}

/// Write each tag file (`name`, its content in parts) from tar offset
/// `pos`, then the locator (FORMAT §13.1: where each of them is), then
/// `tagmanifest-sha256.txt` over all of them and exactly the two
/// end-of-archive blocks, so that the locator and the tag manifest sit at
/// fixed distances from the end.
fn write_tags<W: Write>(
    out: &mut W,
    id: &str,
    tags: &[(&'static str, &[Part])],
    mtime: i64,
    mut pos: u64,
) -> io::Result<()> {
    let mut tagmanifest = String::new();
    let mut places = Vec::with_capacity(tags.len());
    for (name, parts) in tags {
        let size: u64 = parts.iter().map(Part::len).sum();
        let place = format::TagPlace {
            name,
            offset: pos,
            size,
        };
        pos = place.end();
        places.push(place);
        tarfmt::write_header(
            out,
            &format!("{id}/{name}"),
            tar::EntryType::Regular,
            size,
            0o644,
            mtime,
        )?;
        let mut h = Sha256::new();
        each_chunk(parts, &mut |c| {
            h.update(c);
            out.write_all(c)
        })?;
        out.write_all(&[0u8; 512][..tarfmt::padding(size)])?;
        tagmanifest.push_str(&manifest::line(&hex(&h.finalize()), name));
    }
    let locator = format::Locator { tags: places }.to_text();
    tagmanifest.push_str(&manifest::line(
        &hex(&Sha256::digest(locator.as_bytes())),
        format::LOCATOR,
    ));
    // Both fit one block whatever the case (fixed names, 64-digit hashes,
    // 20-digit numbers at most), and their names fit a ustar header.
    debug_assert!(locator.len() as u64 <= format::MAX_TAIL_TAG);
    debug_assert!(tagmanifest.len() as u64 <= format::MAX_TAIL_TAG);
    tarfmt::write_small_file(
        out,
        &format!("{id}/{}", format::LOCATOR),
        locator.as_bytes(),
        mtime,
    )?;
    tarfmt::write_small_file(
        out,
        &format!("{id}/{}", format::TAGMANIFEST),
        tagmanifest.as_bytes(),
        mtime,
    )?;
    tarfmt::write_end(out)
}

/// The producer: walks the case (`src/walk.rs`, sorted, without following
/// links), reads and hashes each file into the stream, and hands every
/// entry to the [`Bag`].
struct Walk {
    bag: Bag,
}

impl Walk {
    fn new(bag: Bag) -> Self {
        Walk { bag }
    }

    fn archive<W: Lend>(
        &mut self,
        root: &crate::walk::Root,
        out: &mut W,
        time: &SealTime,
        compression: Compression,
    ) -> std::result::Result<(), WalkError> {
        self.bag.write_root(out, time).map_err(WalkError::Write)?;
        let (mut entries_seen, mut path_bytes) = (0u64, 0u64);
        for item in root.walk() {
            signal::check()?;
            let ent = item?;
            let path = ent.path.as_path();
            let rel = rel_str(&ent.rel, path)?;
            let (bag_path, tar_path) = self.bag.paths(&rel, path)?;
            // Stay within what every reader accepts (FORMAT §6.1), so that
            // seal never writes a vault that unseal must refuse.
            entries_seen += 1;
            path_bytes += bag_path.len() as u64;
            if entries_seen > crate::format::MAX_PAYLOAD_ENTRIES
                || path_bytes > crate::format::MAX_PAYLOAD_PATH_BYTES
            {
                return Err(Error::Refused(format!(
                    "{}: the case has more than {} entries or {} bytes of paths, the limits of the vault format (FORMAT.md §6.1); split it into several cases",
                    root.path.display(),
                    crate::format::MAX_PAYLOAD_ENTRIES,
                    crate::format::MAX_PAYLOAD_PATH_BYTES
                ))
                .into());
            }
            self.add(&ent, &root.path, bag_path, &tar_path, out)?;
        }
        self.bag.write_tag_files(out, time, compression)
    }

    /// One case entry, by its kind. The root was opened through any symlink
    /// given on the command line; everything below is lstat'ed (fstatat, no
    /// follow).
    fn add<W: Lend>(
        &mut self,
        ent: &crate::walk::Node,
        case_dir: &Path,
        bag_path: String,
        tar_path: &str,
        out: &mut W,
    ) -> std::result::Result<(), WalkError> {
        let path = ent.path.as_path();
        let meta = ent.meta;
        let stamp = Stamp::of(&meta, path)?;
        if meta.is_dir() {
            self.bag
                .add_dir(out, bag_path, tar_path, stamp)
                .map_err(WalkError::Write)
        } else if meta.is_symlink() {
            let target = ent
                .read_link()
                .map_err(|e| Error::io("cannot read symlink", path, e))?;
            let target = target.to_str().ok_or_else(|| {
                Error::Refused(format!(
                    "{}: symlink target is not valid UTF-8",
                    path.display()
                ))
            })?;
            Ok(self.bag.add_symlink(case_dir, bag_path, target, stamp)?)
        } else if meta.is_file() {
            let (size, digest, written) = self.archive_file(ent, &meta, tar_path, out)?;
            self.bag.add_file(bag_path, size, &digest, stamp, written);
            Ok(())
        } else {
            Err(Error::Refused(format!(
                "{}: is a {}; casevault seals only regular files, directories and symlinks",
                path.display(),
                meta.describe_special()
            ))
            .into())
        }
    }

    /// Archive one regular file: open without following links, check it is
    /// the file we stat'ed, stream exactly its size while hashing, confirm
    /// EOF, and re-stat to catch changes during the read.
    fn archive_file<W: Lend>(
        &mut self,
        ent: &crate::walk::Node,
        lmeta: &crate::walk::Meta,
        tar_path: &str,
        out: &mut W,
    ) -> std::result::Result<(u64, [u8; 32], u64), WalkError> {
        let path = ent.path.as_path();
        // Opened from its parent's handle with O_NOFOLLOW (a file swapped
        // for a symlink fails instead of being followed) and O_NONBLOCK (a
        // file swapped for a FIFO cannot hang us).
        let mut f = ent
            .open_file()
            .map_err(|e| Error::io("cannot open", path, e))?;
        let before = f
            .metadata()
            .map_err(|e| Error::io("cannot stat", path, e))?;
        if !before.is_file() || before.ino() != lmeta.ino() || before.dev() != lmeta.dev() {
            return Err(changed(path).into());
        }
        let size = before.len();
        let header = tarfmt::write_header(
            out,
            tar_path,
            tar::EntryType::Regular,
            size,
            before.mode(),
            before.mtime(),
        )
        .map_err(WalkError::Write)?;
        let mut hasher = Sha256::new();
        let mut left = size;
        while left > 0 {
            signal::check()?;
            // Read straight into the stream's buffer and hash it there
            // (issue #12): no copy of the file's bytes on this thread.
            let want = usize::try_from(left).unwrap_or(usize::MAX);
            let read = out
                .lend(want, |dst| {
                    let n = crate::io::retry(|| f.read(dst))?;
                    hasher.update(&dst[..n]);
                    Ok::<usize, io::Error>(n)
                })
                .map_err(WalkError::Write)?;
            let n = match read {
                Ok(0) => return Err(changed(path).into()),
                Ok(n) => n,
                Err(e) => return Err(Error::io("cannot read", path, e).into()),
            };
            left -= n as u64;
            crate::progress::add_bytes(n as u64);
        }
        crate::progress::add_file();
        // The file must end where its size said, and be unchanged.
        let mut probe = [0u8; 1];
        match f.read(&mut probe) {
            Ok(0) => {}
            Ok(_) => return Err(changed(path).into()),
            Err(e) => return Err(Error::io("cannot read", path, e).into()),
        }
        let after = f
            .metadata()
            .map_err(|e| Error::io("cannot stat", path, e))?;
        if after.len() != size
            || after.mtime() != before.mtime()
            || after.mtime_nsec() != before.mtime_nsec()
            || after.ctime() != before.ctime()
            || after.ctime_nsec() != before.ctime_nsec()
        {
            return Err(changed(path).into());
        }
        out.write_all(&[0u8; 512][..tarfmt::padding(size)])
            .map_err(WalkError::Write)?;
        let written = header + size + tarfmt::padding(size) as u64;
        Ok((size, hasher.finalize().into(), written))
    }
}

fn changed(path: &Path) -> Error {
    Error::Refused(format!(
        "{}: file changed while it was being sealed; stop whatever writes to the case and seal again",
        path.display()
    ))
}

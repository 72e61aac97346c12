//! The decrypted payload, read once as a stream (FORMAT §6 steps 2 to 4):
//! compression detection, then each tar entry in the order the format
//! fixes (case directory, `data/`, payload, tag files), each file hashed as
//! it is copied to the extractor, the tag files parsed or kept as they
//! stream, and the end of the archive checked before the bag checks run.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256, Sha512};

use crate::error::Finding;
use crate::format::{self, CaseJson, Compression, MAX_PAYLOAD_ENTRIES, MAX_PAYLOAD_PATH_BYTES};
use crate::io::{classify_stream_error, hex, retry, BUF_SIZE};
use crate::pipe::PumpReader;
use crate::{Error, Result};

use super::bag::{self, Files, Streamed};
use super::tar::{self as tarr, Pax};
use super::{CheckedPayload, Extract};

/// Where the reader is in the entry order FORMAT §3 fixes.
enum Stage {
    Root,
    DataDir,
    Payload,
    /// Expecting tag file `TAG_FILES[i]` (or `casevault.sig` before the
    /// manifest).
    Tags(usize),
    Done,
}

/// Counts bytes, to find where the tar layer ended.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes (and counts) a tag file as it is read.
struct TagHasher<R> {
    inner: R,
    sha256: Sha256,
    /// For `casevault.json`, whose signature may use SHA-512.
    sha512: Option<Sha512>,
    count: u64,
}

impl<R: Read> Read for TagHasher<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha256.update(&buf[..n]);
        if let Some(h) = &mut self.sha512 {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// The reader's state between tar entries.
struct Reader<'a, X> {
    vault: &'a Path,
    x: &'a mut X,
    stage: Stage,
    case_id: String,
    /// Bag paths of the payload's directories: "data", "data/x", …
    dirs: HashSet<String>,
    /// Each payload file's path is kept once (FORMAT §6.1).
    files: Files,
    /// `bagit.txt`, `bag-info.txt`, the tag manifest, kept whole (the
    /// streamed ones as empty placeholders).
    tags: Vec<Vec<u8>>,
    /// casevault.json parsed as it streamed (or why it did not parse), its
    /// SHA-256 and SHA-512; the manifest checked as it streamed, its SHA-256.
    json_tag: Option<Result<CaseJson>>,
    json_digests: Option<(Vec<u8>, Vec<u8>)>,
    manifest_tag: Option<Result<Vec<Finding>>>,
    manifest_sha256: String,
    inner_sig: Option<Vec<u8>>,
    /// Where the data of the last entry ended in the tar stream.
    end_of_last: u64,
    buf: Vec<u8>,
    /// A pax header waiting for its entry.
    pending: Option<Pax>,
    /// Payload entries and the bytes of their bag paths, all and files
    /// only (FORMAT §6.1 limits and tag-file caps).
    n_entries: u64,
    path_bytes: u64,
    file_path_bytes: u64,
    /// Version 3 (FORMAT §13.2): where the pending pax header began; the
    /// first header offset of every directory and file, `data` first, in
    /// payload order; each tag file's name, header offset, size and
    /// whether a pax header came with it; the locator; the zero bytes
    /// after the last entry; the zstd frames read.
    pending_pos: Option<u64>,
    offsets: Vec<u64>,
    tag_places: Vec<(&'static str, u64, u64, bool)>,
    locator: Option<Vec<u8>>,
    trailing: u64,
    frames: Option<crate::frames::SharedLog>,
    /// A version 3 vault read in lockstep with its `casevault.json`
    /// (`src/read/lockstep.rs`): no per-entry maps; the payload's files
    /// and bytes counted for `bag-info.txt`.
    lock: Option<&'a mut super::lockstep::Lockstep>,
    payload_files: u64,
    payload_bytes: u64,
}

/// Detect compression by the first four bytes (FORMAT §2 item 2) and
/// return the plaintext with them put back.
fn detect<R: Read + Send + 'static>(
    vault: &Path,
    mut plain: R,
) -> Result<(Compression, impl Read + Send + 'static)> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match retry(|| plain.read(&mut head[got..])) {
            Ok(0) => {
                return Err(Error::integrity(
                    "the decrypted payload is too short to be a vault",
                ))
            }
            Ok(n) => got += n,
            Err(e) => return Err(classify_stream_error(vault, "reading the payload", e)),
        }
    }
    let compression = if head == format::ZSTD_MAGIC {
        Compression::Zstd
    } else {
        Compression::None
    };
    Ok((compression, io::Cursor::new(head).chain(plain)))
}

/// The post-decryption part of [`super::open_vault`]: read `plain` (which
/// sets `eof` at its authenticated end) to its end, extract into `x`, check.
pub(super) fn read_plaintext<'a, R: Read + Send + 'static, X: Extract>(
    vault: &'a Path,
    plain: R,
    eof: &AtomicBool,
    x: &'a mut X,
    lock: Option<&'a mut super::lockstep::Lockstep>,
) -> Result<CheckedPayload> {
    let stream_err = |what: &str, e: io::Error| classify_stream_error(vault, what, e);
    let (compression, joined) = detect(vault, plain)?;
    // Decryption and decompression run on a second thread, parsing and
    // hashing on this one.
    let mut frames = None;
    let body = match compression {
        Compression::Zstd => {
            // Records every frame, for the version 3 seek table check.
            let (d, log) = crate::frames::FramedDecoder::new(joined)
                .map_err(|e| stream_err("starting zstd", e))?;
            frames = Some(log);
            PumpReader::spawn(d)
        }
        Compression::None => PumpReader::spawn(joined),
    };
    let mut archive = tar::Archive::new(Counting {
        inner: body,
        count: 0,
    });
    let mut r = Reader::new(vault, x);
    r.frames = frames;
    r.lock = lock;
    let entries = archive
        .entries()
        .map_err(|e| stream_err("reading the tar stream", e))?
        .raw(true);
    for item in entries {
        crate::signal::check()?;
        let mut entry = item.map_err(|e| stream_err("reading the tar stream", e))?;
        r.entry(&mut entry)?;
    }
    r.ended()?;
    r.trailer(archive.into_inner(), eof)?;
    r.check(compression)
}

impl<'a, X: Extract> Reader<'a, X> {
    /// [`Reader::check`] for a vault read in lockstep: the tag files as
    /// streamed against the tag manifest, the findings of the way, the
    /// version 3 layout, the inner signature.
    fn check_lockstep(self, compression: Compression) -> Result<CheckedPayload> {
        let lock = self.lock.expect("lockstep mode");
        let Some((json_sha256, json_sha512)) = self.json_digests else {
            return Err(Error::integrity("tag files missing"));
        };
        let [bagit, info, _, _, tagmanifest] = &self.tags[..] else {
            return Err(Error::integrity("tag files missing"));
        };
        let tags = bag::Tags {
            bagit,
            info,
            tagmanifest,
            inner_sig: self.inner_sig.as_deref(),
            locator: self.locator.as_deref(),
        };
        let json = lock.json()?.clone();
        let streamed = Streamed {
            json: Ok(json.clone()),
            json_sha256: hex(&json_sha256),
            manifest: Ok(Vec::new()),
            manifest_sha256: self.manifest_sha256.clone(),
        };
        let mut findings = std::mem::take(&mut lock.against_manifest);
        findings.append(&mut lock.against_json);
        bag::check_streamed_v3(
            &tags,
            &streamed,
            &json,
            &self.case_id,
            compression,
            (self.payload_files, self.payload_bytes),
            findings,
        )?;
        // What the end of the vault said is what was streamed.
        if tail_digest_differs(lock, &json_sha256) {
            return Err(Error::integrity(
                "casevault.json read from the end of the vault differs from the one streamed",
            ));
        }
        let layout = super::index::Layout {
            offsets: &[],
            tag_places: &self.tag_places,
            locator: self.locator.as_deref(),
            trailing: self.trailing,
            frames: self.frames.as_ref(),
        };
        layout.check_tail(&json)?;
        let signature = crate::sign::check_inner_digests(
            &json,
            &json_sha256,
            &json_sha512,
            self.inner_sig.as_deref(),
        )?;
        Ok(CheckedPayload {
            case_id: self.case_id,
            json,
            signature,
        })
    }

    fn new(vault: &'a Path, x: &'a mut X) -> Self {
        Reader {
            vault,
            x,
            stage: Stage::Root,
            case_id: String::new(),
            dirs: HashSet::new(),
            files: Files::new(),
            tags: Vec::new(),
            json_tag: None,
            json_digests: None,
            manifest_tag: None,
            manifest_sha256: String::new(),
            inner_sig: None,
            end_of_last: 0,
            buf: vec![0u8; BUF_SIZE],
            pending: None,
            n_entries: 0,
            path_bytes: 0,
            file_path_bytes: 0,
            pending_pos: None,
            offsets: Vec::new(),
            tag_places: Vec::new(),
            locator: None,
            trailing: 0,
            frames: None,
            lock: None,
            payload_files: 0,
            payload_bytes: 0,
        }
    }

    fn err(&self, what: &str, e: io::Error) -> Error {
        classify_stream_error(self.vault, what, e)
    }

    /// One raw tar entry: a pax header (kept for the next entry), or an
    /// entry of the stage the reader is in.
    fn entry<E: Read>(&mut self, entry: &mut tar::Entry<E>) -> Result<()> {
        let header = entry.header().clone();
        let size = entry.size();
        let data_end = tarr::data_end(entry.raw_file_position(), size);
        if header.entry_type().is_pax_local_extensions() {
            let pax = tarr::read_pax(entry, size, self.pending.is_some(), |e| {
                self.err("reading the tar stream", e)
            })?;
            self.pending = Some(pax);
            self.pending_pos = Some(entry.raw_header_position());
            return Ok(());
        }
        let had_pax = self.pending.is_some();
        let first_header = self
            .pending_pos
            .take()
            .unwrap_or(entry.raw_header_position());
        let pax = self.pending.take().unwrap_or((None, None));
        let path = tarr::entry_path(&header, size, pax)?;
        let is_dir = header.entry_type().is_dir();
        match self.stage {
            Stage::Root => self.root(path, is_dir)?,
            Stage::DataDir => {
                self.data_dir(path, is_dir)?;
                self.offsets.push(first_header);
                if let Some(lock) = self.lock.as_mut() {
                    lock.expect("data", true, first_header)?;
                }
            }
            _ => {
                let bag_path = self.bag_path(&path)?;
                if matches!(self.stage, Stage::Payload) && !bag_path.starts_with("data/") {
                    self.stage = Stage::Tags(0);
                    if let Some(lock) = self.lock.as_mut() {
                        lock.payload_done()?;
                    }
                }
                match self.stage {
                    Stage::Payload if self.lock.is_some() => {
                        self.lockstep_entry(entry, bag_path, size, is_dir, first_header)?;
                    }
                    Stage::Payload => {
                        self.payload_entry(entry, bag_path, size, is_dir)?;
                        self.offsets.push(first_header);
                    }
                    Stage::Tags(i) => {
                        let name = self.tag_entry(entry, i, bag_path, size, is_dir)?;
                        self.tag_places.push((name, first_header, size, had_pax));
                    }
                    _ => {
                        return Err(Error::integrity(format!(
                            "unexpected entry {bag_path:?} after the tag manifest"
                        )))
                    }
                }
            }
        }
        self.end_of_last = data_end;
        Ok(())
    }

    /// The first entry: the case directory.
    fn root(&mut self, path: String, is_dir: bool) -> Result<()> {
        if !is_dir || !format::is_valid_case_id(&path) {
            return Err(Error::integrity(
                "the archive does not start with the case directory",
            ));
        }
        self.case_id = path;
        self.stage = Stage::DataDir;
        Ok(())
    }

    /// The second entry: the bag's `data/` directory.
    fn data_dir(&mut self, path: String, is_dir: bool) -> Result<()> {
        if !is_dir || path != format!("{}/data", self.case_id) {
            return Err(Error::integrity(
                "the second entry is not the bag's data/ directory",
            ));
        }
        self.dirs.insert("data".into());
        self.stage = Stage::Payload;
        Ok(())
    }

    /// `path` relative to the bag directory.
    fn bag_path(&self, path: &str) -> Result<String> {
        path.strip_prefix(&self.case_id)
            .and_then(|p| p.strip_prefix('/'))
            .map(str::to_string)
            .ok_or_else(|| Error::integrity(format!("entry outside the case directory: {path:?}")))
    }

    /// A directory or file under `data/`: after its directory, once,
    /// within the reader's limits; a file is copied and hashed.
    fn payload_entry<E: Read>(
        &mut self,
        entry: &mut E,
        bag_path: String,
        size: u64,
        is_dir: bool,
    ) -> Result<()> {
        let parent = bag_path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        if !self.dirs.contains(parent) {
            return Err(Error::integrity(format!(
                "entry {bag_path:?} comes before its directory"
            )));
        }
        if self.dirs.contains(&bag_path) || self.files.contains_key(&bag_path) {
            return Err(Error::integrity(format!("duplicate entry {bag_path:?}")));
        }
        self.n_entries += 1;
        self.path_bytes += bag_path.len() as u64;
        if self.n_entries > MAX_PAYLOAD_ENTRIES || self.path_bytes > MAX_PAYLOAD_PATH_BYTES {
            return Err(Error::integrity(format!(
                "more than {MAX_PAYLOAD_ENTRIES} payload entries or \
                 {MAX_PAYLOAD_PATH_BYTES} bytes of paths (reader limit)"
            )));
        }
        let rel = &bag_path["data/".len()..];
        self.x.reserve(rel, size)?;
        if is_dir {
            self.x.dir(rel)?;
            self.dirs.insert(bag_path);
            return Ok(());
        }
        let digest = self.hashed_copy(entry, &bag_path, size)?;
        self.file_path_bytes += bag_path.len() as u64;
        let order = self.files.len();
        self.files.insert(bag_path, (size, digest, order));
        crate::progress::add_file();
        Ok(())
    }

    /// A directory or file under `data/` of a vault read in lockstep:
    /// matched with the next entry of `casevault.json` (by path, kind and
    /// offset), within the reader's limits; a file is copied and hashed.
    /// An entry `casevault.json` does not list is read but not extracted
    /// (reported unexpected at the end).
    fn lockstep_entry<E: Read>(
        &mut self,
        entry: &mut E,
        bag_path: String,
        size: u64,
        is_dir: bool,
        first_header: u64,
    ) -> Result<()> {
        self.n_entries += 1;
        self.path_bytes += bag_path.len() as u64;
        if self.n_entries > MAX_PAYLOAD_ENTRIES || self.path_bytes > MAX_PAYLOAD_PATH_BYTES {
            return Err(Error::integrity(format!(
                "more than {MAX_PAYLOAD_ENTRIES} payload entries or \
                 {MAX_PAYLOAD_PATH_BYTES} bytes of paths (reader limit)"
            )));
        }
        let lock = self.lock.as_mut().expect("lockstep mode");
        let expected = lock.expect(&bag_path, is_dir, first_header)?;
        if !is_dir {
            self.payload_files += 1;
            self.payload_bytes = self.payload_bytes.saturating_add(size);
            self.file_path_bytes += bag_path.len() as u64;
        }
        let rel = &bag_path["data/".len()..];
        let Some(e) = expected else {
            if !is_dir {
                self.hashed_copy_to(entry, &bag_path, size, None)?;
            }
            return Ok(());
        };
        self.x.reserve(rel, size)?;
        if is_dir {
            return self.x.dir(rel);
        }
        let digest = self.hashed_copy(entry, &bag_path, size)?;
        self.lock
            .as_mut()
            .expect("lockstep mode")
            .file(&e, size, &digest);
        crate::progress::add_file();
        Ok(())
    }

    /// Copy `size` bytes of a payload file into a file the extractor
    /// creates, hashing them; returns the SHA-256 (hex).
    ///
    /// A small file is read whole and handed over as bytes
    /// ([`Extract::small_file`]: unseal creates it on another thread).
    fn hashed_copy<E: Read>(&mut self, entry: &mut E, bag_path: &str, size: u64) -> Result<String> {
        let rel = &bag_path["data/".len()..];
        if size <= crate::creators::SMALL_FILE && self.x.takes_small_files() {
            let mut data = vec![0u8; size as usize];
            let mut got = 0;
            while got < data.len() {
                got += read_payload(self.vault, entry, bag_path, &mut data[got..])?;
            }
            let digest = hex(&Sha256::digest(&data));
            self.x.small_file(rel, data)?;
            return Ok(digest);
        }
        let out = self.x.create_file(rel)?;
        self.hashed_copy_to(entry, bag_path, size, Some(out))
    }

    /// Copy and hash `size` bytes into `out`, or only hash them.
    fn hashed_copy_to<E: Read>(
        &mut self,
        entry: &mut E,
        bag_path: &str,
        size: u64,
        out: Option<X::File>,
    ) -> Result<String> {
        let rel = &bag_path["data/".len()..];
        let mut out = out;
        let mut h = Sha256::new();
        let mut left = size;
        while left > 0 {
            let want = (self.buf.len() as u64).min(left) as usize;
            let n = read_payload(self.vault, entry, bag_path, &mut self.buf[..want])?;
            h.update(&self.buf[..n]);
            if let Some(out) = out.as_mut() {
                io::Write::write_all(out, &self.buf[..n])
                    .map_err(|e| self.x.write_error(rel, e))?;
            }
            left -= n as u64;
        }
        if let Some(out) = out.as_mut() {
            io::Write::flush(out).map_err(|e| self.x.write_error(rel, e))?;
        }
        Ok(hex(&h.finalize()))
    }

    /// Tag file `TAG_FILES[i]` (or the optional `casevault.sig`, right
    /// before the manifest, at most once: FORMAT §3; or version 3's
    /// `casevault-locator.txt`, right before the tag manifest, §13.1),
    /// within its size cap. Returns its name.
    fn tag_entry<E: Read>(
        &mut self,
        entry: &mut E,
        i: usize,
        bag_path: String,
        size: u64,
        is_dir: bool,
    ) -> Result<&'static str> {
        let expected = format::TAG_FILES[i];
        let is_sig = expected == format::MANIFEST
            && bag_path == format::CASEVAULT_SIG
            && self.inner_sig.is_none();
        let is_locator = expected == format::TAGMANIFEST
            && bag_path == format::LOCATOR
            && self.locator.is_none();
        if is_dir || (bag_path != expected && !is_sig && !is_locator) {
            return Err(Error::integrity(format!(
                "unexpected entry {bag_path:?} where {expected} was expected"
            )));
        }
        let cap = if is_sig {
            format::MAX_SMALL_TAG_FILE
        } else if is_locator {
            format::MAX_TAIL_TAG
        } else {
            self.tag_cap(i)
        };
        if size > cap {
            return Err(Error::integrity(format!(
                "tag file {bag_path} is too large"
            )));
        }
        let name = if is_sig {
            format::CASEVAULT_SIG
        } else if is_locator {
            format::LOCATOR
        } else {
            expected
        };
        let (data, tee) = self.stream_tag(entry, name, size)?;
        match name {
            format::CASEVAULT_SIG => self.inner_sig = Some(data),
            format::LOCATOR => self.locator = Some(data),
            _ => {
                if name == format::CASEVAULT_JSON {
                    let sha512 = tee.sha512.map(|h| h.finalize().to_vec());
                    let sha256 = tee.sha256.finalize().to_vec();
                    self.json_digests = Some((sha256, sha512.unwrap_or_default()));
                } else if name == format::MANIFEST {
                    self.manifest_sha256 = hex(&tee.sha256.finalize());
                }
                self.tags.push(data);
                self.stage = if i + 1 == format::TAG_FILES.len() {
                    Stage::Done
                } else {
                    Stage::Tags(i + 1)
                };
            }
        }
        Ok(name)
    }

    /// Read tag file `name` of `size` bytes, hashing it. `casevault.json`
    /// and the manifest are parsed as they stream and never held whole
    /// (issue #10 item 11); the other tag files are small and returned.
    fn stream_tag<'e, E: Read>(
        &mut self,
        entry: &'e mut E,
        name: &str,
        size: u64,
    ) -> Result<(Vec<u8>, TagHasher<io::Take<&'e mut E>>)> {
        let mut tee = TagHasher {
            inner: entry.take(size),
            sha256: Sha256::new(),
            sha512: None,
            count: 0,
        };
        let vault = self.vault;
        let stream_err = |what: &str, e: io::Error| classify_stream_error(vault, what, e);
        let mut data = Vec::new();
        let lockstep = self.lock.is_some();
        if lockstep && (name == format::CASEVAULT_JSON || name == format::MANIFEST) {
            // Checked from the end of the vault already: only hashed here,
            // against the tag manifest.
            if name == format::CASEVAULT_JSON {
                tee.sha512 = Some(Sha512::new());
            }
        } else if name == format::CASEVAULT_JSON {
            tee.sha512 = Some(Sha512::new());
            let limits = format::JsonLimits {
                entries: self.n_entries + 1,
                path_bytes: self.path_bytes + "data".len() as u64,
            };
            let parsed = CaseJson::parse_stream(&mut tee, Some(&limits), |e| {
                stream_err("reading the tar stream", e)
            })?;
            self.json_tag = Some(parsed);
        } else if name == format::MANIFEST {
            let mut r = io::BufReader::with_capacity(BUF_SIZE, &mut tee);
            self.manifest_tag = Some(bag::stream_manifest(&mut r, &self.files, &stream_err)?);
        } else {
            data.reserve_exact(size as usize);
            tee.read_to_end(&mut data)
                .map_err(|e| stream_err("reading the tar stream", e))?;
        }
        io::copy(&mut tee, &mut io::sink()).map_err(|e| stream_err("reading the tar stream", e))?;
        if tee.count != size {
            return Err(Error::integrity(format!("tar stream ends inside {name}")));
        }
        Ok((data, tee))
    }

    /// Size cap for tag file `i` (FORMAT §6.1), from what the payload read
    /// before it holds: its entry count and path bytes, all entries and
    /// files only. Each cap is above the most a sealer can write for that
    /// payload (JSON escapes a path byte to at most 6 bytes, the manifest
    /// to 3), yet proportional to memory the reader has already spent on
    /// the paths.
    fn tag_cap(&self, i: usize) -> u64 {
        match format::TAG_FILES[i] {
            // Symlinks are not tar entries: a fixed 64 MiB allowance covers them.
            format::CASEVAULT_JSON => (64 << 20) + self.n_entries * 256 + self.path_bytes * 6,
            format::MANIFEST => {
                // In lockstep mode the files are counted, not kept.
                let files = if self.lock.is_some() {
                    self.payload_files
                } else {
                    self.files.len() as u64
                };
                64 * 1024 + files * 80 + self.file_path_bytes * 3
            }
            _ => format::MAX_SMALL_TAG_FILE,
        }
    }

    /// The entries ended: nothing may wait, every tag file must be there.
    fn ended(&self) -> Result<()> {
        if self.pending.is_some() {
            return Err(Error::integrity("pax header at the end of the archive"));
        }
        if !matches!(self.stage, Stage::Done) {
            return Err(Error::integrity(
                "the archive ends before all tag files (truncated or incomplete bag)",
            ));
        }
        Ok(())
    }

    /// The end-of-archive marker and padding: zeros only, within bounds,
    /// then the authenticated end of the stream (FORMAT §2 item 3).
    fn trailer<R: Read>(&mut self, mut rest: Counting<R>, eof: &AtomicBool) -> Result<()> {
        let mut trailing = rest.count - self.end_of_last;
        loop {
            let n = match retry(|| rest.read(&mut self.buf)) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(self.err("reading the end of the stream", e)),
            };
            if self.buf[..n].iter().any(|&b| b != 0) {
                return Err(Error::integrity("data after the end of the tar archive"));
            }
            trailing += n as u64;
            if trailing > format::MAX_TAR_TRAILER {
                return Err(Error::integrity(
                    "too much padding after the end of the tar archive",
                ));
            }
        }
        self.trailing = trailing;
        if trailing < 1024 {
            return Err(Error::integrity(
                "the tar archive has no end-of-archive marker (truncated)",
            ));
        }
        if !eof.load(Ordering::Relaxed) {
            return Err(Error::integrity("the age stream was not read to its end"));
        }
        Ok(())
    }

    /// The bag checks, then the inner signature's digests.
    fn check(self, compression: Compression) -> Result<CheckedPayload> {
        if self.lock.is_some() {
            return self.check_lockstep(compression);
        }
        let (Some(json_tag), Some((json_sha256, json_sha512)), Some(manifest_tag)) =
            (self.json_tag, self.json_digests, self.manifest_tag)
        else {
            return Err(Error::integrity("tag files missing"));
        };
        let [bagit, info, _, _, tagmanifest] = &self.tags[..] else {
            return Err(Error::integrity("tag files missing"));
        };
        let payload = bag::Payload {
            case_id: &self.case_id,
            compression,
            dirs: &self.dirs,
            files: &self.files,
        };
        let tags = bag::Tags {
            bagit,
            info,
            tagmanifest,
            inner_sig: self.inner_sig.as_deref(),
            locator: self.locator.as_deref(),
        };
        let streamed = Streamed {
            json: json_tag,
            json_sha256: hex(&json_sha256),
            manifest: manifest_tag,
            manifest_sha256: self.manifest_sha256,
        };
        let json = bag::check_bag(&payload, &tags, streamed)?;
        let layout = super::index::Layout {
            offsets: &self.offsets,
            tag_places: &self.tag_places,
            locator: self.locator.as_deref(),
            trailing: self.trailing,
            frames: self.frames.as_ref(),
        };
        layout.check(&json)?;
        let signature = crate::sign::check_inner_digests(
            &json,
            &json_sha256,
            &json_sha512,
            self.inner_sig.as_deref(),
        )?;
        Ok(CheckedPayload {
            case_id: self.case_id,
            json,
            signature,
        })
    }
}

/// Read some of payload file `bag_path` from its tar entry into `buf`
/// (not empty): at least one byte, or the error that says why not.
fn read_payload<E: Read>(
    vault: &Path,
    entry: &mut E,
    bag_path: &str,
    buf: &mut [u8],
) -> Result<usize> {
    crate::signal::check()?;
    match retry(|| entry.read(buf)) {
        Ok(0) => Err(Error::integrity(format!(
            "tar stream ends inside {bag_path:?}"
        ))),
        Ok(n) => Ok(n),
        Err(e) => Err(classify_stream_error(vault, "reading the payload", e)),
    }
}

/// Whether the tag manifest read from the end names another
/// `casevault.json` than the one streamed.
fn tail_digest_differs(lock: &super::lockstep::Lockstep, json_sha256: &[u8]) -> bool {
    lock.tail.digest(format::CASEVAULT_JSON) != Some(hex(json_sha256).as_str())
}

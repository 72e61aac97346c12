//! Reading a vault: the one code path behind `unseal`, `verify -i` and
//! `list`. It treats every vault as hostile (FORMAT §6): each tar entry is
//! validated before anything is written, every file is hashed as it
//! streams, and the tag files are checked against the payload only after
//! the age stream has ended cleanly.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::format::{self, CaseJson, Compression, Entry, Kind};
use crate::io::{classify_stream_error, hex, SourceReader, BUF_SIZE};
use crate::keys::BoxedIdentity;
use crate::pipe::PumpReader;
use crate::{manifest, Error, Result};

/// Where the payload goes: a staging directory (unseal) or nowhere (verify).
pub trait Extract {
    type File: io::Write;
    /// A directory, by path relative to the case root (never the root itself).
    fn dir(&mut self, rel: &str) -> Result<()>;
    /// Create a regular file, by path relative to the case root.
    fn create_file(&mut self, rel: &str) -> Result<Self::File>;
    /// The error to report when writing to a created file failed.
    fn write_error(&self, rel: &str, e: io::Error) -> Error;
    /// Called before each payload entry is created, with the size its tar
    /// header declares (0 for a directory), so that an extractor can refuse
    /// what it cannot hold (unseal: free space, FORMAT §6.1). The default
    /// accepts everything.
    fn reserve(&mut self, _rel: &str, _size: u64) -> Result<()> {
        Ok(())
    }
}

/// A checked vault: its `casevault.json` and what was read.
#[derive(Debug)]
pub struct Opened {
    pub case_id: String,
    pub json: CaseJson,
    /// SHA-256 of the vault file (the ciphertext) and its length.
    pub vault_sha256: String,
    pub vault_bytes: u64,
    /// The key that made `casevault.sig` (signed vaults; checked against
    /// the key `casevault.json` names, not yet against any trust list).
    pub signature: Option<crate::sign::Verified>,
}

/// Largest pax extended header we accept.
const MAX_PAX: u64 = 64 * 1024;
/// zstd window limit (2^23 = 8 MiB): bounds decoder memory; casevault
/// writes far smaller windows (FORMAT §2 item 2).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// Symlink hops followed when checking where a link leads (Linux: 40).
const MAX_LINK_HOPS: usize = 40;
/// Most payload entries (directories and files under `data/`) a reader
/// accepts (FORMAT §6.1): each costs memory until the tag files are checked.
pub const MAX_PAYLOAD_ENTRIES: u64 = 1 << 22;
/// Most bytes of payload paths (bag paths, summed) a reader accepts
/// (FORMAT §6.1): bounds the memory the kept paths take.
pub const MAX_PAYLOAD_PATH_BYTES: u64 = 256 << 20;

/// Records whether the decrypted stream was read to its authenticated end.
struct EofReader<R> {
    inner: R,
    eof: Arc<AtomicBool>,
}

impl<R: Read> Read for EofReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }
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

/// Open the vault file and return a reader of its decrypted plaintext.
/// Reading and hashing the ciphertext runs on its own thread.
fn decrypt(
    vault: &Path,
    identities: &[BoxedIdentity],
) -> Result<(
    impl Read + Send + 'static,
    Arc<AtomicBool>,
    fs::File,
    crate::io::SharedHash,
)> {
    let file = fs::File::open(vault).map_err(|e| Error::io("cannot open vault", vault, e))?;
    let drain = file
        .try_clone()
        .map_err(|e| Error::io("cannot open vault", vault, e))?;
    let state = crate::io::shared_hash();
    let tee = crate::io::TeeHash {
        inner: file,
        state: Arc::clone(&state),
    };
    let cipher = PumpReader::spawn(SourceReader(tee));
    let armored = age::armor::ArmoredReader::new(BufReader::with_capacity(BUF_SIZE, cipher));
    let dec = age::Decryptor::new_buffered(BufReader::new(armored))
        .map_err(|e| crate::decrypt::map_error(vault, e))?;
    let plain = dec
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| crate::decrypt::map_error(vault, e))?;
    let eof = Arc::new(AtomicBool::new(false));
    Ok((
        EofReader {
            inner: plain,
            eof: Arc::clone(&eof),
        },
        eof,
        drain,
        state,
    ))
}

/// Parse pax records strictly: `LEN key=value\n`, only `path`, `size`,
/// `mtime`, each at most once (FORMAT §6.1). Returns `path` and `size`.
pub fn parse_pax(data: &[u8]) -> Result<(Option<String>, Option<u64>)> {
    let bad = || Error::integrity("malformed pax extended header");
    let (mut path, mut size) = (None, None);
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&c| c == b' ').ok_or_else(bad)?;
        let len_txt = std::str::from_utf8(&rest[..sp]).map_err(|_| bad())?;
        if len_txt.is_empty() || !len_txt.bytes().all(|c| c.is_ascii_digit()) || len_txt.len() > 6 {
            return Err(bad());
        }
        let len: usize = len_txt.parse().map_err(|_| bad())?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec.iter().position(|&c| c == b'=').ok_or_else(bad)?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        match key {
            b"path" => {
                let p = std::str::from_utf8(value)
                    .map_err(|_| Error::integrity("pax path is not UTF-8"))?;
                if path.replace(p.to_string()).is_some() {
                    return Err(bad());
                }
            }
            b"size" => {
                let v = std::str::from_utf8(value).ok().filter(|v| {
                    !v.is_empty() && v.len() <= 20 && v.bytes().all(|c| c.is_ascii_digit())
                });
                let v = v.and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad)?;
                if size.replace(v).is_some() {
                    return Err(bad());
                }
            }
            b"mtime" => {
                let ok = std::str::from_utf8(value)
                    .ok()
                    .is_some_and(|v| v.len() <= 32 && v.parse::<f64>().is_ok());
                if !ok {
                    return Err(bad());
                }
            }
            _ => {
                return Err(Error::integrity(format!(
                    "unsupported pax key {:?}",
                    String::from_utf8_lossy(key)
                )))
            }
        }
        rest = &rest[len..];
    }
    Ok((path, size))
}

/// Check a path from the archive: relative, `/`-separated, no empty, `.`
/// or `..` components.
fn check_components(path: &str) -> Result<()> {
    if path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::integrity(format!(
            "unsafe path in archive: {path:?}"
        )));
    }
    Ok(())
}

enum Stage {
    Root,
    DataDir,
    Payload,
    Tags(usize),
    Done,
}

/// Read, check and extract a vault. Nothing is trusted until this returns
/// `Ok`: the caller must discard whatever `x` wrote on error.
pub fn open_vault<X: Extract>(
    vault: &Path,
    identities: &[BoxedIdentity],
    x: &mut X,
) -> Result<Opened> {
    let (plain, eof, mut drain, state) = decrypt(vault, identities)?;
    let checked = read_plaintext(vault, plain, &eof, x)?;
    let mut buf = vec![0u8; BUF_SIZE];
    // Hash whatever of the vault file the decryptor did not need to read.
    loop {
        let n = match drain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read vault", vault, e)),
        };
        crate::io::update_shared(&state, &buf[..n]);
    }
    let (vault_sha256, vault_bytes) = crate::io::shared_digest(&state);

    Ok(Opened {
        case_id: checked.case_id,
        json: checked.json,
        vault_sha256,
        vault_bytes,
        signature: checked.signature,
    })
}

/// A decrypted payload that passed every check of FORMAT §6 steps 2 to 4.
#[derive(Debug)]
pub struct CheckedPayload {
    /// The bag directory's name.
    pub case_id: String,
    /// The parsed, checked `casevault.json`.
    pub json: CaseJson,
    /// The key that made `casevault.sig`, in signed vaults.
    pub signature: Option<crate::sign::Verified>,
}

/// Run every check [`open_vault`] makes after decryption on an age
/// plaintext held in memory (no age layer): compression detection, tar,
/// paths, limits, tag files and bag (FORMAT §6 steps 2 to 4). For fuzzing
/// and tests; `label` names the input in error messages.
pub fn check_plaintext<X: Extract>(
    label: &Path,
    plaintext: Vec<u8>,
    x: &mut X,
) -> Result<CheckedPayload> {
    let eof = Arc::new(AtomicBool::new(false));
    let plain = EofReader {
        inner: io::Cursor::new(plaintext),
        eof: Arc::clone(&eof),
    };
    read_plaintext(label, plain, &eof, x)
}

/// The post-decryption part of [`open_vault`]: read `plain` (which sets
/// `eof` at its authenticated end) to its end, extract into `x`, check.
fn read_plaintext<R: Read + Send + 'static, X: Extract>(
    vault: &Path,
    plain: R,
    eof: &AtomicBool,
    x: &mut X,
) -> Result<CheckedPayload> {
    let stream_err = |what: &str, e: io::Error| classify_stream_error(vault, what, e);

    // Detect compression by the first four bytes (FORMAT §2 item 2).
    let mut plain = plain;
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match plain.read(&mut head[got..]) {
            Ok(0) => {
                return Err(Error::integrity(
                    "the decrypted payload is too short to be a vault",
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_err("reading the payload", e)),
        }
    }
    let compression = if head == format::ZSTD_MAGIC {
        Compression::Zstd
    } else {
        Compression::None
    };
    let joined = io::Cursor::new(head).chain(plain);
    // Decryption and decompression run on a second thread, parsing and
    // hashing on this one.
    let body = match compression {
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(joined)
                .map_err(|e| stream_err("starting zstd", e))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| stream_err("configuring zstd", e))?;
            PumpReader::spawn(d)
        }
        Compression::None => PumpReader::spawn(joined),
    };
    let mut archive = tar::Archive::new(Counting {
        inner: body,
        count: 0,
    });

    let mut stage = Stage::Root;
    let mut case_id = String::new();
    let mut dirs: HashSet<String> = HashSet::new(); // bag paths: "data", "data/x"
    let mut files: HashMap<String, (u64, String)> = HashMap::new(); // bag path -> (size, hex)
    let mut file_order: Vec<String> = Vec::new();
    let mut tags: Vec<Vec<u8>> = Vec::new();
    let mut inner_sig: Option<Vec<u8>> = None;
    let mut end_of_last = 0u64;
    let mut buf = vec![0u8; BUF_SIZE];
    let mut pending: Option<(Option<String>, Option<u64>)> = None;
    // Payload entries and the bytes of their bag paths, all and files only
    // (FORMAT §6.1 limits and tag-file caps).
    let (mut n_entries, mut path_bytes, mut file_path_bytes) = (0u64, 0u64, 0u64);
    {
        let entries = archive
            .entries()
            .map_err(|e| stream_err("reading the tar stream", e))?
            .raw(true);
        for item in entries {
            crate::signal::check()?;
            let mut entry = item.map_err(|e| stream_err("reading the tar stream", e))?;
            let header = entry.header().clone();
            let etype = header.entry_type();
            let size = entry.size();
            let data_end = entry.raw_file_position() + size + tarfmt_padding(size);
            if etype.is_pax_local_extensions() {
                if pending.is_some() || size > MAX_PAX {
                    return Err(Error::integrity("bad or oversized pax extended header"));
                }
                let mut data = Vec::with_capacity(size as usize);
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut data)
                    .map_err(|e| stream_err("reading the tar stream", e))?;
                if data.len() as u64 != size {
                    return Err(Error::integrity("tar stream ends inside a pax header"));
                }
                pending = Some(parse_pax(&data)?);
                continue;
            }
            let (pax_path, pax_size) = pending.take().unwrap_or((None, None));
            if !(etype.is_dir() || etype.is_file()) || header.as_ustar().is_none() {
                let p = String::from_utf8_lossy(&header.path_bytes()).into_owned();
                return Err(Error::integrity(format!(
                    "unsupported tar entry {p:?} (type {:?}); a vault holds only directories and regular files",
                    etype
                )));
            }
            if pax_size.is_some_and(|s| s != size) {
                return Err(Error::integrity("pax size disagrees with the tar header"));
            }
            let raw_path = match pax_path {
                Some(p) => p,
                None => String::from_utf8(header.path_bytes().into_owned())
                    .map_err(|_| Error::integrity("tar entry path is not UTF-8"))?,
            };
            if raw_path.len() > format::MAX_PATH_BYTES || raw_path.contains('\0') {
                return Err(Error::integrity("tar entry path too long or contains NUL"));
            }
            let path = if etype.is_dir() {
                if size != 0 {
                    return Err(Error::integrity(format!(
                        "directory entry {raw_path:?} has a size"
                    )));
                }
                raw_path.strip_suffix('/').unwrap_or(&raw_path).to_string()
            } else {
                if raw_path.ends_with('/') {
                    return Err(Error::integrity(format!(
                        "file entry {raw_path:?} ends with '/'"
                    )));
                }
                raw_path.clone()
            };
            check_components(&path)?;

            match stage {
                Stage::Root => {
                    if !etype.is_dir() || !format::is_valid_case_id(&path) {
                        return Err(Error::integrity(
                            "the archive does not start with the case directory",
                        ));
                    }
                    case_id = path;
                    stage = Stage::DataDir;
                }
                Stage::DataDir => {
                    if !etype.is_dir() || path != format!("{case_id}/data") {
                        return Err(Error::integrity(
                            "the second entry is not the bag's data/ directory",
                        ));
                    }
                    dirs.insert("data".into());
                    stage = Stage::Payload;
                }
                Stage::Payload | Stage::Tags(_) | Stage::Done => {
                    let bag_path = path
                        .strip_prefix(&case_id)
                        .and_then(|p| p.strip_prefix('/'))
                        .ok_or_else(|| {
                            Error::integrity(format!("entry outside the case directory: {path:?}"))
                        })?
                        .to_string();
                    let is_payload = bag_path.starts_with("data/");
                    if matches!(stage, Stage::Payload) && !is_payload {
                        stage = Stage::Tags(0);
                    }
                    match stage {
                        Stage::Payload => {
                            let parent = bag_path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                            if !dirs.contains(parent) {
                                return Err(Error::integrity(format!(
                                    "entry {bag_path:?} comes before its directory"
                                )));
                            }
                            if dirs.contains(&bag_path) || files.contains_key(&bag_path) {
                                return Err(Error::integrity(format!(
                                    "duplicate entry {bag_path:?}"
                                )));
                            }
                            n_entries += 1;
                            path_bytes += bag_path.len() as u64;
                            if n_entries > MAX_PAYLOAD_ENTRIES
                                || path_bytes > MAX_PAYLOAD_PATH_BYTES
                            {
                                return Err(Error::integrity(format!(
                                    "more than {MAX_PAYLOAD_ENTRIES} payload entries or \
                                     {MAX_PAYLOAD_PATH_BYTES} bytes of paths (reader limit)"
                                )));
                            }
                            let rel = &bag_path["data/".len()..];
                            x.reserve(rel, size)?;
                            if etype.is_dir() {
                                x.dir(rel)?;
                                dirs.insert(bag_path);
                            } else {
                                let mut out = x.create_file(rel)?;
                                let mut h = Sha256::new();
                                let mut left = size;
                                while left > 0 {
                                    crate::signal::check()?;
                                    let want = (buf.len() as u64).min(left) as usize;
                                    let n = match entry.read(&mut buf[..want]) {
                                        Ok(0) => {
                                            return Err(Error::integrity(format!(
                                                "tar stream ends inside {bag_path:?}"
                                            )))
                                        }
                                        Ok(n) => n,
                                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                                            continue
                                        }
                                        Err(e) => return Err(stream_err("reading the payload", e)),
                                    };
                                    h.update(&buf[..n]);
                                    io::Write::write_all(&mut out, &buf[..n])
                                        .map_err(|e| x.write_error(rel, e))?;
                                    left -= n as u64;
                                }
                                io::Write::flush(&mut out).map_err(|e| x.write_error(rel, e))?;
                                drop(out);
                                file_path_bytes += bag_path.len() as u64;
                                file_order.push(bag_path.clone());
                                files.insert(bag_path, (size, hex(&h.finalize())));
                                crate::progress::add_file();
                            }
                        }
                        Stage::Tags(i) => {
                            // The optional casevault.sig comes right before
                            // the manifest, at most once (FORMAT §3).
                            let is_sig = format::TAG_FILES[i] == format::MANIFEST
                                && bag_path == format::CASEVAULT_SIG
                                && inner_sig.is_none();
                            if !etype.is_file() || (bag_path != format::TAG_FILES[i] && !is_sig) {
                                return Err(Error::integrity(format!(
                                    "unexpected entry {bag_path:?} where {} was expected",
                                    format::TAG_FILES[i]
                                )));
                            }
                            let cap = if is_sig {
                                format::MAX_SMALL_TAG_FILE
                            } else {
                                tag_cap(
                                    i,
                                    n_entries,
                                    path_bytes,
                                    files.len() as u64,
                                    file_path_bytes,
                                )
                            };
                            if size > cap {
                                return Err(Error::integrity(format!(
                                    "tag file {bag_path} is too large"
                                )));
                            }
                            let mut data = Vec::with_capacity(size as usize);
                            (&mut entry)
                                .take(size)
                                .read_to_end(&mut data)
                                .map_err(|e| stream_err("reading the tar stream", e))?;
                            if data.len() as u64 != size {
                                return Err(Error::integrity(format!(
                                    "tar stream ends inside {bag_path}"
                                )));
                            }
                            if is_sig {
                                inner_sig = Some(data);
                            } else {
                                tags.push(data);
                                stage = if i + 1 == format::TAG_FILES.len() {
                                    Stage::Done
                                } else {
                                    Stage::Tags(i + 1)
                                };
                            }
                        }
                        _ => {
                            return Err(Error::integrity(format!(
                                "unexpected entry {bag_path:?} after the tag manifest"
                            )))
                        }
                    }
                }
            }
            end_of_last = data_end;
        }
    }
    if pending.is_some() {
        return Err(Error::integrity("pax header at the end of the archive"));
    }
    if !matches!(stage, Stage::Done) {
        return Err(Error::integrity(
            "the archive ends before all tag files (truncated or incomplete bag)",
        ));
    }

    // The end-of-archive marker and padding: zeros only, within bounds,
    // then the authenticated end of the stream (FORMAT §2 item 3).
    let mut rest = archive.into_inner();
    let mut trailing = rest.count - end_of_last;
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_err("reading the end of the stream", e)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(Error::integrity("data after the end of the tar archive"));
        }
        trailing += n as u64;
        if trailing > format::MAX_TAR_TRAILER {
            return Err(Error::integrity(
                "too much padding after the end of the tar archive",
            ));
        }
    }
    if trailing < 1024 {
        return Err(Error::integrity(
            "the tar archive has no end-of-archive marker (truncated)",
        ));
    }
    if !eof.load(Ordering::Relaxed) {
        return Err(Error::integrity("the age stream was not read to its end"));
    }
    drop(rest);
    let json = check_bag(
        &case_id,
        compression,
        &dirs,
        &files,
        &file_order,
        &tags,
        inner_sig.as_deref(),
    )?;
    let signature = crate::sign::check_inner(&json, &tags[2], inner_sig.as_deref())?;
    Ok(CheckedPayload {
        case_id,
        json,
        signature,
    })
}

fn tarfmt_padding(size: u64) -> u64 {
    crate::tarfmt::padding(size) as u64
}

/// Size cap for tag file `i` (FORMAT §6.1), from what the payload read
/// before it holds: its entry count and path bytes, all entries and files
/// only. Each cap is above the most a sealer can write for that payload
/// (JSON escapes a path byte to at most 6 bytes, the manifest to 3), yet
/// proportional to memory the reader has already spent on the paths.
fn tag_cap(i: usize, entries: u64, path_bytes: u64, files: u64, file_path_bytes: u64) -> u64 {
    match format::TAG_FILES[i] {
        // Symlinks are not tar entries: a fixed 64 MiB allowance covers them.
        format::CASEVAULT_JSON => (64 << 20) + entries * 256 + path_bytes * 6,
        format::MANIFEST => 64 * 1024 + files * 80 + file_path_bytes * 3,
        _ => format::MAX_SMALL_TAG_FILE,
    }
}

/// Check tag files against each other and against the payload (FORMAT §6
/// step 4). Collects every disagreement.
fn check_bag(
    case_id: &str,
    compression: Compression,
    dirs: &HashSet<String>,
    files: &HashMap<String, (u64, String)>,
    file_order: &[String],
    tags: &[Vec<u8>],
    inner_sig: Option<&[u8]>,
) -> Result<CaseJson> {
    let [bagit, info, json_bytes, manifest_bytes, tagmanifest] = tags else {
        return Err(Error::integrity("tag files missing"));
    };
    let mut problems: Vec<String> = Vec::new();

    // Tag manifest first: it vouches for the other tag files.
    let tm_text = std::str::from_utf8(tagmanifest)
        .map_err(|_| Error::integrity("tag manifest is not UTF-8"))?;
    let tm = manifest::parse(format::TAGMANIFEST, tm_text)?;
    let mut expected_tags: Vec<(&str, &[u8])> = vec![
        (format::BAGIT_TXT, bagit),
        (format::BAG_INFO_TXT, info),
        (format::CASEVAULT_JSON, json_bytes),
    ];
    if let Some(sig) = inner_sig {
        expected_tags.push((format::CASEVAULT_SIG, sig));
    }
    expected_tags.push((format::MANIFEST, manifest_bytes));
    if tm.len() != expected_tags.len() {
        problems.push(format!(
            "{} must list exactly the {} tag files before it",
            format::TAGMANIFEST,
            expected_tags.len()
        ));
    }
    for (name, data) in expected_tags {
        match tm.iter().find(|(p, _)| p == name) {
            None => problems.push(format!("{name} is not in {}", format::TAGMANIFEST)),
            Some((_, h)) if *h != hex(&Sha256::digest(data)) => problems.push(format!(
                "{name}: SHA-256 does not match {}",
                format::TAGMANIFEST
            )),
            _ => {}
        }
    }
    if bagit[..] != *format::BAGIT_TXT_CONTENT.as_bytes() {
        problems.push(format!(
            "{} is not the BagIt 1.0 declaration",
            format::BAGIT_TXT
        ));
    }
    if !problems.is_empty() {
        return Err(Error::integrity(problems.join("; ")));
    }

    let json = CaseJson::parse(json_bytes)?;
    let m_text = std::str::from_utf8(manifest_bytes)
        .map_err(|_| Error::integrity("manifest is not UTF-8"))?;
    let manifest = manifest::parse(format::MANIFEST, m_text)?;
    let info_text =
        std::str::from_utf8(info).map_err(|_| Error::integrity("bag-info.txt is not UTF-8"))?;
    let info = format::parse_bag_info(info_text)?;

    // manifest vs payload
    let mut in_manifest = HashSet::new();
    for (path, h) in &manifest {
        in_manifest.insert(path.as_str());
        match files.get(path) {
            None => problems.push(format!(
                "{path}: listed in the manifest but not in the payload"
            )),
            Some((_, actual)) if actual != h => problems.push(format!(
                "{path}: SHA-256 mismatch (manifest {h}, payload {actual})"
            )),
            _ => {}
        }
    }
    for p in file_order {
        if !in_manifest.contains(p.as_str()) {
            problems.push(format!("{p}: in the payload but not in the manifest"));
        }
    }

    // casevault.json vs payload
    if json.case_id != case_id {
        problems.push(format!(
            "casevault.json names case {:?}, the bag is {case_id:?}",
            json.case_id
        ));
    }
    if json.compression != compression {
        problems.push(format!(
            "casevault.json says compression {}, the payload is {}",
            json.compression.as_str(),
            compression.as_str()
        ));
    }
    let mut seen: HashSet<&str> = HashSet::new();
    let (mut n_files, mut n_dirs, mut n_links, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut tree: HashMap<&str, &Entry> = HashMap::new();
    match json.entries.first() {
        Some(e) if e.path == "data" && e.kind == Kind::Dir => {}
        _ => problems.push("casevault.json: the first entry must be the data directory".into()),
    }
    for e in &json.entries {
        if !seen.insert(e.path.as_str()) {
            problems.push(format!("casevault.json: duplicate entry {:?}", e.path));
            continue;
        }
        tree.insert(e.path.as_str(), e);
        let fields_ok = match e.kind {
            Kind::File => e.size.is_some() && e.sha256.is_some() && e.target.is_none(),
            Kind::Dir | Kind::Symlink => {
                e.size.is_none()
                    && e.sha256.is_none()
                    && (e.kind == Kind::Symlink) == e.target.is_some()
            }
        };
        if !fields_ok || e.mtime_nsec >= 1_000_000_000 || e.mode > 0o7777 {
            problems.push(format!("casevault.json: malformed entry {:?}", e.path));
            continue;
        }
        if !format::mtime_in_range(e.mtime) {
            problems.push(format!(
                "casevault.json: entry {:?} has mtime {}, outside the years 0000 to 9999 (FORMAT.md §5.4)",
                e.path, e.mtime
            ));
            continue;
        }
        match e.kind {
            Kind::File => {
                n_files += 1;
                let size = e.size.unwrap_or(0);
                bytes = bytes.saturating_add(size);
                match files.get(&e.path) {
                    None => problems.push(format!(
                        "{}: in casevault.json but not in the payload",
                        e.path
                    )),
                    Some((s, h)) => {
                        if *s != size {
                            problems.push(format!(
                                "{}: size {} in casevault.json, {} in the payload",
                                e.path, size, s
                            ));
                        }
                        if Some(h) != e.sha256.as_ref() {
                            problems.push(format!(
                                "{}: SHA-256 in casevault.json does not match the payload",
                                e.path
                            ));
                        }
                    }
                }
            }
            Kind::Dir => {
                n_dirs += 1;
                if !dirs.contains(&e.path) {
                    problems.push(format!(
                        "{}: directory in casevault.json but not in the payload",
                        e.path
                    ));
                }
            }
            Kind::Symlink => {
                n_links += 1;
                let ok_path = e
                    .path
                    .strip_prefix("data/")
                    .is_some_and(|r| check_components(r).is_ok());
                let parent = e.path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                if !ok_path || e.path.len() > format::MAX_PATH_BYTES {
                    problems.push(format!("unsafe symlink path {:?}", e.path));
                } else if !dirs.contains(parent) {
                    problems.push(format!(
                        "symlink {:?} is not inside a directory of the payload",
                        e.path
                    ));
                } else if dirs.contains(&e.path) || files.contains_key(&e.path) {
                    problems.push(format!(
                        "symlink {:?} collides with a payload entry",
                        e.path
                    ));
                }
                let t = e.target.as_deref().unwrap_or("");
                if t.is_empty() || t.contains('\0') || t.len() > format::MAX_PATH_BYTES {
                    problems.push(format!("symlink {:?} has an invalid target", e.path));
                }
            }
        }
    }
    for p in file_order {
        if tree.get(p.as_str()).is_none_or(|e| e.kind != Kind::File) {
            problems.push(format!("{p}: in the payload but not in casevault.json"));
        }
    }
    for d in dirs {
        if tree.get(d.as_str()).is_none_or(|e| e.kind != Kind::Dir) {
            problems.push(format!(
                "{d}: directory in the payload but not in casevault.json"
            ));
        }
    }
    let t = &json.totals;
    if (t.files, t.dirs, t.symlinks, t.bytes) != (n_files, n_dirs, n_links, bytes) {
        problems.push("casevault.json totals do not match its entries".into());
    }
    let payload_bytes: u64 = files.values().map(|(s, _)| *s).sum();
    if (info.oxum_bytes, info.oxum_files) != (payload_bytes, files.len() as u64) {
        problems.push(format!(
            "bag-info.txt Payload-Oxum {}.{} does not match the payload {}.{}",
            info.oxum_bytes,
            info.oxum_files,
            payload_bytes,
            files.len()
        ));
    }
    if info.external_identifier != case_id {
        problems.push(format!(
            "bag-info.txt External-Identifier {:?} is not the case id",
            info.external_identifier
        ));
    }
    if problems.is_empty() {
        Ok(json)
    } else {
        Err(Error::integrity(problems.join("; ")))
    }
}

/// Whether following `target` from the symlink at bag path `link` can
/// leave the case tree (FORMAT §6 step 5), resolving through the recorded
/// links. Undecidable within [`MAX_LINK_HOPS`] counts as leaving.
pub fn link_escapes(json: &CaseJson, link: &str, target: &str) -> bool {
    let links: HashMap<&str, &str> = json
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Symlink)
        .map(|e| (e.path.as_str(), e.target.as_deref().unwrap_or("")))
        .collect();
    if target.starts_with('/') {
        return true;
    }
    // Stack of components below the case root (the root is "data").
    let mut stack: Vec<String> = link.split('/').skip(1).map(String::from).collect();
    stack.pop();
    let mut queue: std::collections::VecDeque<String> =
        target.split('/').map(String::from).collect();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                if stack.pop().is_none() {
                    return true;
                }
            }
            name => {
                stack.push(name.to_string());
                let p = format!("data/{}", stack.join("/"));
                if let Some(t) = links.get(p.as_str()) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS || t.starts_with('/') {
                        return true;
                    }
                    stack.pop();
                    for part in t.split('/').rev() {
                        queue.push_front(part.to_string());
                    }
                }
            }
        }
    }
    false
}

/// A staging path for a relative case path.
pub fn staged(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Totals;

    fn tree(links: &[(&str, &str)], dirs: &[&str]) -> CaseJson {
        let mut entries = vec![];
        for d in dirs {
            entries.push(Entry {
                path: d.to_string(),
                kind: Kind::Dir,
                size: None,
                sha256: None,
                target: None,
                mode: 0o755,
                mtime: 0,
                mtime_nsec: 0,
            });
        }
        for (p, t) in links {
            entries.push(Entry {
                path: p.to_string(),
                kind: Kind::Symlink,
                size: None,
                sha256: None,
                target: Some(t.to_string()),
                mode: 0o777,
                mtime: 0,
                mtime_nsec: 0,
            });
        }
        CaseJson {
            format: "casevault".into(),
            version: 1,
            case_id: "c".into(),
            sealed_at: String::new(),
            tool: String::new(),
            compression: Compression::None,
            entries,
            totals: Totals::default(),
            signer: None,
        }
    }

    #[test]
    fn link_escape_rules() {
        let j = tree(
            &[
                ("data/up", "."),
                ("data/sub/deep", "../x"),
                ("data/a", "up/.."),
            ],
            &["data", "data/sub"],
        );
        assert!(link_escapes(&j, "data/l", "/etc/passwd"));
        assert!(link_escapes(&j, "data/l", ".."));
        assert!(link_escapes(&j, "data/sub/l", "../../x"));
        assert!(!link_escapes(&j, "data/sub/l", "../x"));
        assert!(!link_escapes(&j, "data/l", "sub/./x"));
        // Through a link that points at the root, `..` leaves the tree even
        // though the text `up/..` looks harmless.
        assert!(link_escapes(&j, "data/a", "up/.."));
        assert!(!link_escapes(&j, "data/sub/l", "deep"));
        // A loop never resolves; past the hop limit it counts as escaping.
        let l = tree(&[("data/p", "q"), ("data/q", "p")], &["data"]);
        assert!(link_escapes(&l, "data/p", "q"));
    }

    #[test]
    fn pax_parsing() {
        assert_eq!(
            parse_pax(b"12 path=a/b\n").unwrap(),
            (Some("a/b".into()), None)
        );
        assert_eq!(parse_pax(b"12 size=123\n").unwrap(), (None, Some(123)));
        assert!(parse_pax(b"12 size=-12\n").is_err());
        assert!(parse_pax(b"99 path=a/b\n").is_err());
        assert!(parse_pax(b"13 uname=root\n").is_err());
        assert!(parse_pax(b"12 path=a/b\n12 path=a/b\n").is_err());
    }

    #[test]
    fn components() {
        for bad in ["", "/a", "a//b", "a/./b", "a/../b", "..", "a/"] {
            assert!(check_components(bad).is_err(), "{bad:?}");
        }
        assert!(check_components("c/data/a b/ü").is_ok());
    }
}

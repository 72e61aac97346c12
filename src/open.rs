//! Reading a vault: the one code path behind `unseal`, `verify -i` and
//! `list`. It treats every vault as hostile (FORMAT §6): each tar entry is
//! validated before anything is written, every file is hashed as it
//! streams, and the tag files are checked against the payload only after
//! the age stream has ended cleanly.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256, Sha512};

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
/// Links followed when checking where a link leads, not counting the link
/// itself (Linux's MAXSYMLINKS is 40, counting it: FORMAT §6 step 5).
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
                                                    // bag path -> (size, hex, position among the files); each path is
                                                    // kept once (FORMAT §6.1).
    let mut files: Files = HashMap::new();
    let mut tags: Vec<Vec<u8>> = Vec::new();
    // casevault.json parsed as it streamed (or why it did not parse), its
    // SHA-256 and SHA-512; the manifest checked as it streamed, its SHA-256.
    let mut json_tag: Option<Result<CaseJson>> = None;
    let mut json_digests: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut manifest_tag: Option<Result<Vec<String>>> = None;
    let mut manifest_sha256 = String::new();
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
                                let order = files.len();
                                files.insert(bag_path, (size, hex(&h.finalize()), order));
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
                            // casevault.json and the manifest are parsed
                            // as they stream and never held whole (issue
                            // #10 item 11); the other tag files are small.
                            let mut tee = TagHasher {
                                inner: (&mut entry).take(size),
                                sha256: Sha256::new(),
                                sha512: None,
                                count: 0,
                            };
                            let mut data = Vec::new();
                            if is_sig
                                || !matches!(
                                    bag_path.as_str(),
                                    format::CASEVAULT_JSON | format::MANIFEST
                                )
                            {
                                data.reserve_exact(size as usize);
                                tee.read_to_end(&mut data)
                                    .map_err(|e| stream_err("reading the tar stream", e))?;
                            } else if bag_path == format::CASEVAULT_JSON {
                                tee.sha512 = Some(Sha512::new());
                                let limits = format::JsonLimits {
                                    entries: n_entries + 1,
                                    path_bytes: path_bytes + "data".len() as u64,
                                };
                                let parsed =
                                    CaseJson::parse_stream(&mut tee, Some(&limits), |e| {
                                        stream_err("reading the tar stream", e)
                                    })?;
                                json_tag = Some(parsed);
                            } else {
                                let mut r = io::BufReader::with_capacity(BUF_SIZE, &mut tee);
                                manifest_tag = Some(stream_manifest(&mut r, &files, &stream_err)?);
                            }
                            io::copy(&mut tee, &mut io::sink())
                                .map_err(|e| stream_err("reading the tar stream", e))?;
                            if tee.count != size {
                                return Err(Error::integrity(format!(
                                    "tar stream ends inside {bag_path}"
                                )));
                            }
                            if bag_path == format::CASEVAULT_JSON && !is_sig {
                                json_digests = Some((
                                    tee.sha256.finalize().to_vec(),
                                    tee.sha512
                                        .take()
                                        .map(|h| h.finalize().to_vec())
                                        .unwrap_or_default(),
                                ));
                            } else if bag_path == format::MANIFEST && !is_sig {
                                manifest_sha256 = hex(&tee.sha256.finalize());
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
    let (Some(json_tag), Some((json_sha256, json_sha512)), Some(manifest_tag)) =
        (json_tag, json_digests, manifest_tag)
    else {
        return Err(Error::integrity("tag files missing"));
    };
    let json = check_bag(
        &case_id,
        compression,
        &dirs,
        &files,
        &tags,
        inner_sig.as_deref(),
        Streamed {
            json: json_tag,
            json_sha256: hex(&json_sha256),
            manifest: manifest_tag,
            manifest_sha256,
        },
    )?;
    let signature =
        crate::sign::check_inner_digests(&json, &json_sha256, &json_sha512, inner_sig.as_deref())?;
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
    files: &Files,
    tags: &[Vec<u8>],
    inner_sig: Option<&[u8]>,
    streamed: Streamed,
) -> Result<CaseJson> {
    let [bagit, info, _, _, tagmanifest] = tags else {
        return Err(Error::integrity("tag files missing"));
    };
    let mut problems = Problems::default();

    // Tag manifest first: it vouches for the other tag files.
    let tm_text = std::str::from_utf8(tagmanifest)
        .map_err(|_| Error::integrity("tag manifest is not UTF-8"))?;
    let tm = manifest::parse(format::TAGMANIFEST, tm_text)?;
    let mut expected_tags: Vec<(&str, String)> = vec![
        (format::BAGIT_TXT, hex(&Sha256::digest(bagit))),
        (format::BAG_INFO_TXT, hex(&Sha256::digest(info))),
        (format::CASEVAULT_JSON, streamed.json_sha256),
    ];
    if let Some(sig) = inner_sig {
        expected_tags.push((format::CASEVAULT_SIG, hex(&Sha256::digest(sig))));
    }
    expected_tags.push((format::MANIFEST, streamed.manifest_sha256));
    if tm.len() != expected_tags.len() {
        problems.push(format!(
            "{} must list exactly the {} tag files before it",
            format::TAGMANIFEST,
            expected_tags.len()
        ));
    }
    for (name, digest) in expected_tags {
        match tm.iter().find(|(p, _)| p == name) {
            None => problems.push(format!("{name} is not in {}", format::TAGMANIFEST)),
            Some((_, h)) if *h != digest => problems.push(format!(
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
    problems.result()?;

    let json = streamed.json?;
    // manifest vs payload, found as it streamed
    for p in streamed.manifest? {
        problems.push(p);
    }
    let info_text =
        std::str::from_utf8(info).map_err(|_| Error::integrity("bag-info.txt is not UTF-8"))?;
    let info = format::parse_bag_info(info_text)?;

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
                    Some((s, h, _)) => {
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
    for p in payload_order(files) {
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
    let payload_bytes: u64 = files.values().map(|(s, _, _)| *s).sum();
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
    problems.result()?;
    Ok(json)
}

/// The payload's files: bag path -> (size, SHA-256 hex, position).
type Files = HashMap<String, (u64, String, usize)>;

/// The payload's file paths in payload order.
fn payload_order(files: &Files) -> Vec<&String> {
    let mut v: Vec<(&String, usize)> = files.iter().map(|(p, (_, _, i))| (p, *i)).collect();
    v.sort_unstable_by_key(|&(_, i)| i);
    v.into_iter().map(|(p, _)| p).collect()
}

/// What [`read_plaintext`] found in the tag files it streamed.
struct Streamed {
    /// `casevault.json`, or why it does not parse.
    json: Result<CaseJson>,
    json_sha256: String,
    /// The manifest's disagreements with the payload, in the order of the
    /// old whole-file check, or why it does not parse.
    manifest: Result<Vec<String>>,
    manifest_sha256: String,
}

/// Most problems one check lists; the rest are counted. A crafted vault
/// could otherwise make a reader hold a message per entry.
const MAX_PROBLEMS: usize = 1000;

/// Collected problems, at most [`MAX_PROBLEMS`] of them kept.
#[derive(Default)]
struct Problems {
    list: Vec<String>,
    more: u64,
}

impl Problems {
    fn push(&mut self, p: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.more += 1;
        }
    }

    fn result(&mut self) -> Result<()> {
        if self.list.is_empty() {
            return Ok(());
        }
        let mut text = self.list.join("; ");
        if self.more > 0 {
            text.push_str(&format!("; and {} more problems", self.more));
        }
        Err(Error::integrity(text))
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

/// Check `manifest-sha256.txt` line by line against the payload as it
/// streams (issue #10 item 11), keeping no line: the same rules and
/// messages as [`manifest::parse`] and the old whole-file comparison.
/// `Err` stops the reader at once (a stream error, or more than
/// [`MAX_PROBLEMS`] lines naming files the payload does not hold);
/// `Ok(Err)` is a manifest that does not parse, reported after the tag
/// manifest; `Ok(Ok)` lists its disagreements with the payload.
fn stream_manifest<R: io::BufRead>(
    r: &mut R,
    files: &Files,
    stream_err: &dyn Fn(&str, io::Error) -> Error,
) -> Result<Result<Vec<String>>> {
    let name = format::MANIFEST;
    let read_err = |e| stream_err("reading the tar stream", e);
    let mut line = Vec::new();
    let (mut n, mut not_utf8, mut last) = (0usize, false, None::<u8>);
    let mut first_err: Option<Error> = None;
    // Payload files listed so far (borrowed), and a digest of each listed
    // path the payload does not hold, to find duplicates.
    let mut listed: HashSet<&str> = HashSet::new();
    let mut strangers: HashSet<[u8; 16]> = HashSet::new();
    let mut problems = Problems::default();
    loop {
        line.clear();
        let got = r
            .by_ref()
            .take(manifest::MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(read_err)?;
        if got == 0 {
            break;
        }
        n += 1;
        last = line.last().copied();
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        if body.len() > manifest::MAX_LINE {
            first_err.get_or_insert_with(|| {
                Error::integrity(format!(
                    "{name} line {n}: longer than {} bytes",
                    manifest::MAX_LINE
                ))
            });
            // Skip the rest of the line.
            while last != Some(b'\n') {
                line.clear();
                let got = r
                    .by_ref()
                    .take(BUF_SIZE as u64)
                    .read_until(b'\n', &mut line)
                    .map_err(read_err)?;
                if got == 0 {
                    break;
                }
                last = line.last().copied();
            }
            continue;
        }
        let Ok(text) = std::str::from_utf8(body) else {
            not_utf8 = true;
            continue;
        };
        if first_err.is_some() || not_utf8 {
            continue;
        }
        let (path, hash) = match manifest::parse_line(name, n, text) {
            Ok(v) => v,
            Err(e) => {
                first_err = Some(e);
                continue;
            }
        };
        let dup = || Error::integrity(format!("{name} line {n}: duplicate path"));
        match files.get_key_value(&path) {
            Some((key, (_, actual, _))) => {
                if !listed.insert(key.as_str()) {
                    first_err = Some(dup());
                } else if actual != hash {
                    problems.push(format!(
                        "{path}: SHA-256 mismatch (manifest {hash}, payload {actual})"
                    ));
                }
            }
            None => {
                let d = Sha256::digest(path.as_bytes());
                let mut key = [0u8; 16];
                key.copy_from_slice(&d[..16]);
                if !strangers.insert(key) {
                    first_err = Some(dup());
                } else if strangers.len() > MAX_PROBLEMS {
                    return Err(Error::integrity(format!(
                        "{name} lists more than {MAX_PROBLEMS} files that are not in the payload"
                    )));
                } else {
                    problems.push(format!(
                        "{path}: listed in the manifest but not in the payload"
                    ));
                }
            }
        }
    }
    if not_utf8 {
        return Ok(Err(Error::integrity("manifest is not UTF-8")));
    }
    if last.is_some_and(|b| b != b'\n') {
        return Ok(Err(Error::integrity(format!(
            "{name} does not end with a line feed"
        ))));
    }
    if let Some(e) = first_err {
        return Ok(Err(e));
    }
    for p in payload_order(files) {
        if !listed.contains(p.as_str()) {
            problems.push(format!("{p}: in the payload but not in the manifest"));
        }
    }
    let mut list = problems.list;
    if problems.more > 0 {
        list.push(format!("and {} more problems", problems.more));
    }
    Ok(Ok(list))
}

/// Where a recorded symlink leads when the OS follows it in the restored
/// tree (FORMAT §6 step 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// Resolves inside the case tree (or dangles inside it).
    Inside,
    /// Resolving it leaves the case tree within [`MAX_LINK_HOPS`] links
    /// followed: the OS would follow it out.
    Outside(Escape),
    /// A cycle, or a chain that needs more than [`MAX_LINK_HOPS`] links
    /// followed, that does not leave the case before the limit: the OS
    /// refuses to follow it (`ELOOP`), so it leads nowhere.
    Loop,
}

/// How a link's resolution leaves the case tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escape {
    /// The link's own target.
    pub target: String,
    /// The link (case-relative path, target) whose target makes the
    /// resolution leave, when it is another link than the one checked.
    pub via: Option<(String, String)>,
    /// Whether it leaves by an absolute target (else by `..` above the
    /// case root).
    pub absolute: bool,
}

impl std::fmt::Display for Escape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.absolute {
            "is absolute"
        } else {
            "climbs above the case root"
        };
        match &self.via {
            None if self.absolute => write!(f, "its target {:?} {how}", self.target),
            None => write!(f, "resolving its target {:?} {how}", self.target),
            Some((path, target)) => write!(
                f,
                "its target {:?} leads through the link {path:?} -> {target:?}, whose target {how}",
                self.target
            ),
        }
    }
}

/// The outcome of resolving one link's target from its directory, with
/// `hops` links followed on the way (not counting the link itself).
#[derive(Debug, Clone, Copy)]
enum Res {
    /// Ends at `node`, `virt` levels below it in names the case does not
    /// record (the resolution is lexical there: nonexistent names and files
    /// count as directories, which is conservative).
    Inside {
        node: u32,
        virt: u32,
        hops: u32,
    },
    /// Leaves the tree after `hops` links followed, in the target of link
    /// node `by`.
    Outside {
        hops: u32,
        by: u32,
        absolute: bool,
    },
    Loop,
}

#[derive(Debug, Clone, Copy)]
enum Memo {
    Unknown,
    InProgress,
    Done(Res),
}

/// One link's target being walked.
struct Frame<'a> {
    link: u32,
    rest: Option<&'a str>,
    node: u32,
    virt: u32,
    hops: u32,
}

impl Frame<'_> {
    /// Continue after following a link whose own resolution is `r`
    /// (`self.hops` already counts the link). `Some` ends this frame.
    fn apply(&mut self, r: Res) -> Option<Res> {
        match r {
            Res::Inside { node, virt, hops } => {
                self.hops += hops;
                if self.hops > MAX_LINK_HOPS as u32 {
                    return Some(Res::Loop);
                }
                self.node = node;
                self.virt = virt;
                None
            }
            Res::Outside { hops, by, absolute } if self.hops + hops <= MAX_LINK_HOPS as u32 => {
                Some(Res::Outside {
                    hops: self.hops + hops,
                    by,
                    absolute,
                })
            }
            Res::Outside { .. } | Res::Loop => Some(Res::Loop),
        }
    }
}

enum Step {
    Done(Res),
    /// This frame must follow the link node, whose outcome is not known yet.
    Need(u32),
}

const ROOT: u32 = 0;

/// The recorded directories and symlinks of a case as a tree, built once
/// per reader run, and the memoised outcome of resolving each link
/// (FORMAT §6 step 5; issue #10 item 10). Checking every link costs time
/// linear in the bytes of the paths and targets: each link's target is
/// walked once, and a link met again on another link's way is answered
/// from its recorded outcome.
pub struct Links<'a> {
    parent: Vec<u32>,
    children: HashMap<(u32, &'a str), u32>,
    /// Link nodes: (case-relative path, target).
    link: Vec<Option<(&'a str, &'a str)>>,
    memo: Vec<Memo>,
    /// Path components walked so far, all links together (for tests).
    steps: u64,
}

impl<'a> Links<'a> {
    /// Build the tree of `json`'s directories and symlinks.
    pub fn new(json: &'a CaseJson) -> Self {
        let mut l = Links {
            parent: vec![u32::MAX],
            children: HashMap::new(),
            link: vec![None],
            memo: vec![Memo::Unknown],
            steps: 0,
        };
        for e in &json.entries {
            let Some(rel) = e.path.strip_prefix("data/") else {
                continue;
            };
            if e.kind == Kind::File {
                continue;
            }
            let node = l.intern(rel);
            if e.kind == Kind::Symlink {
                l.link[node as usize] = Some((rel, e.target.as_deref().unwrap_or("")));
            }
        }
        l
    }

    fn intern(&mut self, rel: &'a str) -> u32 {
        let mut node = ROOT;
        for c in rel.split('/') {
            node = match self.children.get(&(node, c)) {
                Some(&n) => n,
                None => {
                    let n = self.parent.len() as u32;
                    self.parent.push(node);
                    self.link.push(None);
                    self.memo.push(Memo::Unknown);
                    self.children.insert((node, c), n);
                    n
                }
            };
        }
        node
    }

    /// Where the symlink at bag path `path` (`data/...`) leads. A path that
    /// is not a recorded link resolves as a link to itself would not: it is
    /// reported [`LinkStatus::Inside`].
    pub fn status(&mut self, path: &str) -> LinkStatus {
        let Some(rel) = path.strip_prefix("data/") else {
            return LinkStatus::Inside;
        };
        let mut node = ROOT;
        for c in rel.split('/') {
            match self.children.get(&(node, c)) {
                Some(&n) => node = n,
                None => return LinkStatus::Inside,
            }
        }
        let Some((_, target)) = self.link[node as usize] else {
            return LinkStatus::Inside;
        };
        match self.resolve(node) {
            Res::Inside { .. } => LinkStatus::Inside,
            Res::Loop => LinkStatus::Loop,
            Res::Outside { by, absolute, .. } => LinkStatus::Outside(Escape {
                target: target.to_string(),
                via: (by != node)
                    .then(|| self.link[by as usize])
                    .flatten()
                    .map(|(p, t)| (p.to_string(), t.to_string())),
                absolute,
            }),
        }
    }

    fn frame(&mut self, link: u32) -> Frame<'a> {
        self.memo[link as usize] = Memo::InProgress;
        Frame {
            link,
            rest: self.link[link as usize].map(|(_, t)| t),
            node: self.parent[link as usize],
            virt: 0,
            hops: 0,
        }
    }

    /// The outcome of link node `start`, walking with an explicit stack (a
    /// chain of links may be as long as the case has links).
    fn resolve(&mut self, start: u32) -> Res {
        if let Memo::Done(r) = self.memo[start as usize] {
            return r;
        }
        let first = self.frame(start);
        let mut stack = vec![first];
        loop {
            let top = stack.len() - 1;
            match self.walk(&mut stack[top]) {
                Step::Need(next) => {
                    let f = self.frame(next);
                    stack.push(f);
                }
                Step::Done(mut r) => {
                    // Finish this frame, and every frame below that this
                    // outcome ends.
                    loop {
                        let done = stack.pop().expect("a frame is on the stack");
                        self.memo[done.link as usize] = Memo::Done(r);
                        match stack.last_mut() {
                            None => return r,
                            Some(below) => match below.apply(r) {
                                Some(end) => r = end,
                                None => break,
                            },
                        }
                    }
                }
            }
        }
    }

    /// Walk the rest of `f`'s target.
    fn walk(&mut self, f: &mut Frame<'a>) -> Step {
        let Some(mut rest) = f.rest else {
            return Step::Done(Res::Inside {
                node: f.node,
                virt: f.virt,
                hops: f.hops,
            });
        };
        if f.hops == 0 && f.virt == 0 && rest.starts_with('/') {
            return Step::Done(Res::Outside {
                hops: 0,
                by: f.link,
                absolute: true,
            });
        }
        loop {
            let (c, more) = match rest.split_once('/') {
                Some((c, more)) => (c, Some(more)),
                None => (rest, None),
            };
            self.steps += 1;
            match c {
                "" | "." => {}
                ".." if f.virt > 0 => f.virt -= 1,
                ".." if f.node == ROOT => {
                    return Step::Done(Res::Outside {
                        hops: f.hops,
                        by: f.link,
                        absolute: false,
                    })
                }
                ".." => f.node = self.parent[f.node as usize],
                _ if f.virt > 0 => f.virt += 1,
                name => match self.children.get(&(f.node, name)) {
                    None => f.virt = 1,
                    Some(&n) if self.link[n as usize].is_some() => {
                        f.hops += 1;
                        if f.hops > MAX_LINK_HOPS as u32 {
                            return Step::Done(Res::Loop);
                        }
                        f.rest = more;
                        match self.memo[n as usize] {
                            Memo::Done(r) => {
                                if let Some(end) = f.apply(r) {
                                    return Step::Done(end);
                                }
                            }
                            // A cycle: following `n` comes back here before
                            // the walk gets any further, for ever.
                            Memo::InProgress => return Step::Done(Res::Loop),
                            Memo::Unknown => return Step::Need(n),
                        }
                    }
                    Some(&n) => f.node = n,
                },
            }
            match more {
                Some(m) => rest = m,
                None => break,
            }
        }
        f.rest = None;
        Step::Done(Res::Inside {
            node: f.node,
            virt: f.virt,
            hops: f.hops,
        })
    }
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

    fn status(links: &[(&str, &str)], dirs: &[&str], link: &str) -> LinkStatus {
        Links::new(&tree(links, dirs)).status(link)
    }

    fn outside(s: LinkStatus) -> bool {
        matches!(s, LinkStatus::Outside(_))
    }

    #[test]
    fn link_escape_rules() {
        let d = &["data", "data/sub"];
        assert!(outside(status(&[("data/l", "/etc/passwd")], d, "data/l")));
        assert!(outside(status(&[("data/l", "..")], d, "data/l")));
        assert!(outside(status(
            &[("data/sub/l", "../../x")],
            d,
            "data/sub/l"
        )));
        assert_eq!(
            status(&[("data/sub/l", "../x")], d, "data/sub/l"),
            LinkStatus::Inside
        );
        assert_eq!(
            status(&[("data/l", "sub/./x")], d, "data/l"),
            LinkStatus::Inside
        );
        // Names the case does not record resolve lexically.
        assert_eq!(
            status(&[("data/l", "no/such/../..")], d, "data/l"),
            LinkStatus::Inside
        );
        assert!(outside(status(&[("data/l", "no/../..")], d, "data/l")));
        let links = [
            ("data/up", "."),
            ("data/sub/deep", "../x"),
            ("data/a", "up/.."),
            ("data/sub/l", "deep"),
        ];
        let j = tree(&links, d);
        let mut l = Links::new(&j);
        // Through a link that points at the root, `..` leaves the tree even
        // though the text `up/..` looks harmless; the `..` is a's own.
        assert_eq!(
            l.status("data/a"),
            LinkStatus::Outside(Escape {
                target: "up/..".into(),
                via: None,
                absolute: false
            })
        );
        assert_eq!(l.status("data/sub/l"), LinkStatus::Inside);
        assert_eq!(l.status("data/up"), LinkStatus::Inside);
        // The message names the link whose target leaves.
        let j = tree(
            &[
                ("data/l1", "l2"),
                ("data/l2", "sub/l3"),
                ("data/sub/l3", "../../../etc"),
            ],
            d,
        );
        let s = Links::new(&j).status("data/l1");
        let LinkStatus::Outside(why) = s else {
            panic!("{s:?}")
        };
        assert_eq!(
            why.to_string(),
            r#"its target "l2" leads through the link "sub/l3" -> "../../../etc", whose target climbs above the case root"#
        );
    }

    /// Issue #10 item 8: a loop never leaves the case; only a resolution
    /// that reaches outside within the hop limit is "outside".
    #[test]
    fn loops_are_not_outside() {
        let d = &["data", "data/sub"];
        let two = [("data/p", "q"), ("data/q", "p")];
        assert_eq!(status(&two, d, "data/p"), LinkStatus::Loop);
        assert_eq!(status(&[("data/p", "p")], d, "data/p"), LinkStatus::Loop);
        assert_eq!(
            status(&[("data/p", "p/x/../..")], d, "data/p"),
            LinkStatus::Loop
        );
        // A cycle met on the way, before anything leaves, loops too.
        let via = [("data/a", "b/../.."), ("data/b", "c"), ("data/c", "b")];
        assert_eq!(status(&via, d, "data/a"), LinkStatus::Loop);
        // A cycle after an escape does not matter: the escape comes first.
        let esc = [("data/a", "../b"), ("data/b", "a")];
        assert!(outside(status(&esc, d, "data/a")));
        assert!(outside(status(&esc, d, "data/b")));
    }

    fn chain(n: usize, last: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = (0..n)
            .map(|i| (format!("data/h{i:02}"), format!("h{:02}", i + 1)))
            .collect();
        v.push((format!("data/h{n:02}"), last.to_string()));
        v
    }

    fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
        v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
    }

    #[test]
    fn hop_limit() {
        let d = &["data"];
        // h00 -> h01 -> ... -> h41 -> a.txt: from h00, 41 links to follow.
        let c = chain(41, "a.txt");
        let j = tree(&as_refs(&c), d);
        let mut l = Links::new(&j);
        assert_eq!(l.status("data/h00"), LinkStatus::Loop);
        assert_eq!(l.status("data/h01"), LinkStatus::Inside);
        // The same chain ending in `..`: from h01 the escape comes at the
        // 40th link followed (outside); from h00 only at the 41st, which
        // the OS never follows.
        let c = chain(41, "..");
        let j = tree(&as_refs(&c), d);
        let mut l = Links::new(&j);
        assert_eq!(l.status("data/h00"), LinkStatus::Loop);
        assert!(outside(l.status("data/h01")));
        assert!(outside(l.status("data/h41")));
        // A chain far longer than the limit whose prefix leaves is outside.
        let mut c = chain(100, "a.txt");
        c[10].1 = "../data/h11".into();
        let j = tree(&as_refs(&c), d);
        let mut l = Links::new(&j);
        assert!(outside(l.status("data/h00")));
        assert_eq!(l.status("data/h11"), LinkStatus::Loop);
        assert_eq!(l.status("data/h60"), LinkStatus::Inside);
    }

    /// Issue #10 item 10: each link's target is walked once, however many
    /// links share a chain, so checking all links is linear.
    #[test]
    fn link_checks_are_linear() {
        let n = 100_000;
        let d = &["data"];
        // One long chain: every link is on every later link's way.
        let c = chain(n, "a.txt");
        let j = tree(&as_refs(&c), d);
        let mut l = Links::new(&j);
        for (p, _) in &c {
            l.status(p);
        }
        assert!(l.steps <= 2 * (n as u64 + 1), "{} steps", l.steps);
        // Many links into one chain of 35 links with 4000-byte targets.
        let pad = "x/..".repeat(1000);
        let mut v: Vec<(String, String)> = (0..35)
            .map(|i| (format!("data/c{i}"), format!("{pad}/c{}", i + 1)))
            .collect();
        v.push(("data/c35".into(), "a.txt".into()));
        for i in 0..n {
            v.push((format!("data/m{i}"), "c0".into()));
        }
        let j = tree(&as_refs(&v), d);
        let mut l = Links::new(&j);
        for (p, _) in &v {
            assert_ne!(l.status(p), LinkStatus::Loop, "{p}");
        }
        assert!(l.steps <= 2 * n as u64 + 36 * 2002, "{} steps", l.steps);
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

    /// Issue #10 item 11: the streamed manifest check gives the messages of
    /// the whole-file parser and comparison it replaced.
    #[test]
    fn streamed_manifest_matches_whole_file_rules() {
        let h = "a".repeat(64);
        let g = "b".repeat(64);
        let mut files = Files::new();
        files.insert("data/x".into(), (1, h.clone(), 0));
        files.insert("data/y".into(), (1, h.clone(), 1));
        let err = |_: &str, e: io::Error| Error::integrity(e.to_string());
        let run = |text: &str| {
            stream_manifest(&mut io::Cursor::new(text.as_bytes()), &files, &err)
                .unwrap()
                .map_err(|e| e.to_string())
        };
        let ok = format!("{h}  data/x\n{h}  data/y\n");
        assert_eq!(run(&ok), Ok(vec![]));
        assert_eq!(
            run(&format!("{g}  data/x\n{h}  data/z\n")),
            Ok(vec![
                format!("data/x: SHA-256 mismatch (manifest {g}, payload {h})"),
                "data/z: listed in the manifest but not in the payload".into(),
                "data/y: in the payload but not in the manifest".into(),
            ])
        );
        for bad in [
            format!("{h}  data/x"),
            format!("{h} data/x\n"),
            format!("{h}  data/x\n{h}  data/x\n"),
            format!("{h}  data/z\n{h}  data/z\n"),
            format!("{h}  data/%zz\n"),
            "\n".to_string(),
            format!("{h}  data/x\nq"),
        ] {
            let old = std::str::from_utf8(bad.as_bytes())
                .map_err(|_| "manifest is not UTF-8".to_string())
                .and_then(|t| manifest::parse(format::MANIFEST, t).map_err(|e| e.to_string()));
            assert_eq!(run(&bad).unwrap_err(), old.unwrap_err(), "{bad:?}");
        }
        let mut raw = format!("{h}  data/x\n").into_bytes();
        raw.extend_from_slice(b"\xff\n");
        let r = stream_manifest(&mut io::Cursor::new(raw), &files, &err).unwrap();
        assert_eq!(
            r.unwrap_err().to_string(),
            "integrity failure: manifest is not UTF-8"
        );
        // A line longer than any path can make, and too many strangers.
        let long = format!("{h}  data/{}\n", "x".repeat(manifest::MAX_LINE));
        assert!(run(&long).unwrap_err().contains("longer than"));
        let many: String = (0..=MAX_PROBLEMS)
            .map(|i| format!("{h}  data/s{i}\n"))
            .collect();
        assert!(stream_manifest(&mut io::Cursor::new(many.as_bytes()), &files, &err).is_err());
    }
}

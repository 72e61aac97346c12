//! Partial reads of version 3 vaults (FORMAT §13.3): `list` and
//! `unseal --path` read the age header, the last chunk, the seek table,
//! the tail and the tag files, and then only the frames that hold what
//! was asked for. Every rule a partial read relies on is checked before
//! anything is listed or written; what a partial read does not read is
//! left to a full read (`verify -i`, FORMAT §13.2).
//!
//! A vault that is armored, or whose plaintext does not have version 3's
//! shape (no seek table, no locator where one must be), is read by the
//! streaming path instead ([`RandomVault::open`] returns `None`).

use std::cell::RefCell;
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256, Sha512};

use super::cipher;
use crate::format::{self, CaseJson, Compression, Entry, JsonLimits, Kind, Locator};
use crate::frames::{self, SeekTable};
use crate::io::{classify_stream_error, hex, SourceReader};
use crate::{Error, Result};

/// Decompressed frames kept: the manifest and `casevault.json` are read
/// side by side, and a payload file may straddle two frames.
const CACHE_FRAMES: usize = 3;

/// A version 3 vault open for reading anywhere in its tar stream.
pub struct RandomVault {
    vault: PathBuf,
    plain: age::stream::StreamReader<SourceReader<crate::source::VaultInput>>,
    table: Option<SeekTable>,
    compression: Compression,
    tar_len: u64,
    dctx: zstd::zstd_safe::DCtx<'static>,
    cache: Vec<(usize, Vec<u8>)>,
    cbuf: Vec<u8>,
}

impl std::fmt::Debug for RandomVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomVault")
            .field("vault", &self.vault)
            .field("tar_len", &self.tar_len)
            .finish_non_exhaustive()
    }
}

impl RandomVault {
    /// Open `vault` for random access: the age header, the file key, the
    /// authenticated length of the plaintext (FORMAT §13.3 step 1) and,
    /// for zstd, the seek table (step 2). `Ok(None)`: not a binary version
    /// 3 vault; read it by streaming.
    pub fn open(vault: &Path, identities: &[&dyn age::Identity]) -> Result<Option<RandomVault>> {
        Self::open_with(vault, identities, false)
    }

    /// [`RandomVault::open`] for `salvage` (issue #16): a first age chunk
    /// that does not authenticate does not stop it; the compression is
    /// then told by the seek table's magic at the end of the plaintext.
    pub fn open_salvage(
        vault: &Path,
        identities: &[&dyn age::Identity],
    ) -> Result<Option<RandomVault>> {
        Self::open_with(vault, identities, true)
    }

    fn open_with(
        vault: &Path,
        identities: &[&dyn age::Identity],
        lenient_head: bool,
    ) -> Result<Option<RandomVault>> {
        // A local file, or an S3 object read by ranged GETs (issue #13).
        let mut f = crate::source::open_one(vault, "cannot open vault")?;
        let mut head = [0u8; 5];
        let n = crate::io::retry(|| f.read(&mut head))
            .map_err(|e| Error::io("cannot read vault", vault, e))?;
        if head[..n].starts_with(b"-----") {
            return Ok(None); // ASCII armor: streaming only
        }
        f.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("cannot read vault", vault, e))?;
        let dec = age::Decryptor::new(SourceReader(f)).map_err(|e| cipher::map_error(vault, e))?;
        let mut plain = dec
            .decrypt(identities.iter().copied())
            .map_err(|e| cipher::map_error(vault, e))?;
        // Seeking to the end authenticates the last chunk: a truncated or
        // extended vault fails here, however little else is read.
        let plain_len = plain
            .seek(SeekFrom::End(0))
            .map_err(|e| classify_stream_error(vault, "authenticating the end of the vault", e))?;
        let mut rv = RandomVault {
            vault: vault.to_path_buf(),
            plain,
            table: None,
            compression: Compression::None,
            tar_len: plain_len,
            dctx: zstd::zstd_safe::DCtx::create(),
            cache: Vec::new(),
            cbuf: Vec::new(),
        };
        if plain_len < 8 {
            return Ok(None); // far too short: the full read says why
        }
        let mut magic = [0u8; 4];
        let zstd = match rv.plain_at(0, &mut magic) {
            Ok(()) => magic == format::ZSTD_MAGIC,
            Err(Error::Integrity(_)) if lenient_head => {
                // The first chunk is damaged (and age's reader spent):
                // only a seek table at the end can say it is zstd.
                rv.reopen(identities)?;
                let mut tail = [0u8; 4];
                rv.plain_at(plain_len - 4, &mut tail)?;
                u32::from_le_bytes(tail) == frames::SEEKABLE_MAGIC
            }
            Err(e) => return Err(e),
        };
        if zstd {
            rv.compression = Compression::Zstd;
            let mut tail = [0u8; 4];
            rv.plain_at(plain_len - 4, &mut tail)?;
            if u32::from_le_bytes(tail) != frames::SEEKABLE_MAGIC {
                return Ok(None); // a version 1 or 2 zstd stream
            }
            let table = {
                let (vault, plain) = (&rv.vault, &mut rv.plain);
                SeekTable::read(plain_len, |off, buf| read_plain(vault, plain, off, buf))
            };
            match table {
                Ok(t) => {
                    rv.tar_len = t.decompressed_len();
                    rv.table = Some(t);
                }
                // Not version 3's shape after all: the full read decides.
                Err(Error::Integrity(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        // Every version 3 tar stream is longer than this (FORMAT §13.3
        // step 3); a shorter one is left to the full read.
        if rv.tar_len < 4096 {
            return Ok(None);
        }
        Ok(Some(rv))
    }

    /// After a read failed (an age chunk that does not authenticate),
    /// age's reader cannot go on: start a new one over the same vault,
    /// keeping the seek table and the frames read (`salvage`, issue #16).
    /// `identities` unwrap the file key again (a
    /// [`crate::keys::Remembering`] gives it at once).
    pub fn reopen(&mut self, identities: &[&dyn age::Identity]) -> Result<()> {
        let vault = self.vault.clone();
        let f = crate::source::open_one(&vault, "cannot open vault")?;
        let dec = age::Decryptor::new(SourceReader(f)).map_err(|e| cipher::map_error(&vault, e))?;
        let mut plain = dec
            .decrypt(identities.iter().copied())
            .map_err(|e| cipher::map_error(&vault, e))?;
        plain
            .seek(SeekFrom::End(0))
            .map_err(|e| classify_stream_error(&vault, "authenticating the end of the vault", e))?;
        self.plain = plain;
        Ok(())
    }

    /// The smallest part of the tar stream that damage costs, around tar
    /// offset `off` (< the tar length): its zstd frame, or for an
    /// uncompressed vault its 64 KiB age chunk. Returns whether it is a
    /// frame, its index, its tar offset and its length.
    pub fn unit_of(&self, off: u64) -> (bool, usize, u64, u64) {
        match &self.table {
            Some(t) => {
                let i = t.frame_of(off);
                let (_, _, start, len) = t.frame(i);
                (true, i, start, len)
            }
            None => {
                const CHUNK: u64 = 64 * 1024;
                let start = off / CHUNK * CHUNK;
                (
                    false,
                    (off / CHUNK) as usize,
                    start,
                    CHUNK.min(self.tar_len - start),
                )
            }
        }
    }

    /// Length of the tar stream.
    pub fn tar_len(&self) -> u64 {
        self.tar_len
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    fn plain_at(&mut self, off: u64, buf: &mut [u8]) -> Result<()> {
        read_plain(&self.vault, &mut self.plain, off, buf)
    }

    /// Fill `buf` from tar offset `off`.
    pub fn read_at(&mut self, mut off: u64, mut buf: &mut [u8]) -> Result<()> {
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.tar_len)
        {
            return Err(Error::integrity(format!(
                "a read at {off} goes past the end of the tar stream ({} bytes)",
                self.tar_len
            )));
        }
        if self.table.is_none() {
            return self.plain_at(off, buf);
        }
        while !buf.is_empty() {
            let (i, start) = {
                let t = self.table.as_ref().expect("checked above");
                let i = t.frame_of(off);
                (i, t.frame(i).2)
            };
            let frame = self.frame(i)?;
            let at = (off - start) as usize;
            let k = buf.len().min(frame.len() - at);
            buf[..k].copy_from_slice(&frame[at..at + k]);
            buf = &mut buf[k..];
            off += k as u64;
        }
        Ok(())
    }

    /// Frame `i`, decompressed (and cached).
    fn frame(&mut self, i: usize) -> Result<&[u8]> {
        if let Some(pos) = self.cache.iter().position(|(j, _)| *j == i) {
            let hit = self.cache.remove(pos);
            self.cache.push(hit);
        } else {
            let (coff, clen, _, dlen) = self.table.as_ref().expect("zstd").frame(i);
            let mut cbuf = std::mem::take(&mut self.cbuf);
            cbuf.resize(clen as usize, 0);
            self.plain_at(coff, &mut cbuf)?;
            let mut out = if self.cache.len() == CACHE_FRAMES {
                self.cache.remove(0).1
            } else {
                Vec::new()
            };
            frames::decompress_frame(&mut self.dctx, &cbuf, dlen, &mut out)
                .map_err(|why| Error::integrity(format!("zstd frame {i} {why}")))?;
            self.cbuf = cbuf;
            self.cache.push((i, out));
        }
        Ok(&self.cache.last().expect("just pushed").1)
    }
}

fn read_plain(
    vault: &Path,
    plain: &mut age::stream::StreamReader<SourceReader<crate::source::VaultInput>>,
    off: u64,
    buf: &mut [u8],
) -> Result<()> {
    plain
        .seek(SeekFrom::Start(off))
        .and_then(|_| plain.read_exact(buf))
        .map_err(|e| classify_stream_error(vault, "reading the vault", e))
}

/// A `Read` over `len` bytes of the tar stream from `pos`, through a
/// shared [`RandomVault`] (several cursors read side by side).
pub struct Cursor<'a> {
    rv: &'a RefCell<RandomVault>,
    pos: u64,
    end: u64,
}

impl<'a> Cursor<'a> {
    pub fn new(rv: &'a RefCell<RandomVault>, pos: u64, len: u64) -> Self {
        Cursor {
            rv,
            pos,
            end: pos + len,
        }
    }
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = (buf.len() as u64).min(self.end - self.pos) as usize;
        if k == 0 {
            return Ok(0);
        }
        self.rv
            .borrow_mut()
            .read_at(self.pos, &mut buf[..k])
            .map_err(io::Error::other)?;
        self.pos += k as u64;
        Ok(k)
    }
}

/// The error a [`Cursor`] returned, unwrapped again.
fn cursor_error(e: io::Error) -> Error {
    match e.into_inner().map(|b| b.downcast::<Error>()) {
        Some(Ok(err)) => *err,
        Some(Err(other)) => Error::integrity(other.to_string()),
        None => Error::integrity("reading the tar stream failed"),
    }
}

/// Whether a 512-byte tar header block's checksum field holds the sum of
/// its bytes, the field itself counted as spaces.
pub(crate) fn checksum_ok(block: &[u8]) -> bool {
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    block.len() == 512
        && tar::Header::from_byte_slice(block)
            .cksum()
            .is_ok_and(|c| u64::from(c) == sum)
}

/// One ustar header block, strictly: magic, checksum, a regular file or
/// directory, its path (prefix and name) and size.
fn ustar(block: &[u8]) -> Option<(String, u8, u64)> {
    if block.len() != 512 || &block[257..263] != b"ustar\0" || &block[263..265] != b"00" {
        return None;
    }
    let octal = |f: &[u8]| -> Option<u64> {
        let s = std::str::from_utf8(f).ok()?;
        let s = s.trim_matches(|c| c == '\0' || c == ' ');
        if s.is_empty() || !s.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
            return None;
        }
        u64::from_str_radix(s, 8).ok()
    };
    if !checksum_ok(block) {
        return None;
    }
    let cstr = |f: &[u8]| {
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        std::str::from_utf8(&f[..end]).ok().map(str::to_string)
    };
    let (name, prefix) = (cstr(&block[0..100])?, cstr(&block[345..500])?);
    let path = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    Some((path, block[156], octal(&block[124..136])?))
}

/// What the end of a version 3 tar stream says (FORMAT §13.3 steps 3, 4).
#[derive(Clone, Debug)]
pub struct Tail {
    pub case_id: String,
    pub locator: Locator,
    /// The tag manifest's lines: tag file name, SHA-256.
    pub tagmanifest: Vec<(String, String)>,
}

impl Tail {
    /// The SHA-256 the tag manifest gives for `name`.
    pub(super) fn digest(&self, name: &str) -> Option<&str> {
        self.tagmanifest
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h.as_str())
    }
}

/// Read the tail. `Ok(None)`: there is no locator where version 3 puts it
/// (a version 1 or 2 vault); once there is one, anything wrong is an
/// integrity failure.
pub fn read_tail(rv: &mut RandomVault) -> Result<Option<Tail>> {
    let e = rv.tar_len();
    let mut buf = vec![0u8; format::TAIL_BYTES as usize];
    rv.read_at(e - format::TAIL_BYTES, &mut buf)?;
    let (Some(loc), Some(tm)) = (ustar(&buf[0..512]), ustar(&buf[1024..1536])) else {
        return Ok(None);
    };
    let Some(case_id) = loc.0.strip_suffix(&format!("/{}", format::LOCATOR)) else {
        return Ok(None);
    };
    let bad = |why: &str| Error::integrity(format!("version 3 tail: {why}"));
    if buf[2048..].iter().any(|&b| b != 0) {
        return Err(bad("the tar stream does not end with two zero blocks"));
    }
    if !format::is_valid_case_id(case_id) || tm.0 != format!("{case_id}/{}", format::TAGMANIFEST) {
        return Err(bad(
            "the locator and tag manifest do not name the same valid case",
        ));
    }
    let limit = format::MAX_TAIL_TAG;
    if loc.1 != b'0'
        || tm.1 != b'0'
        || !(1..=limit).contains(&loc.2)
        || !(1..=limit).contains(&tm.2)
    {
        return Err(bad(
            "the locator or tag manifest is not a file of 1 to 512 bytes",
        ));
    }
    let loc_text = &buf[512..512 + loc.2 as usize];
    let tm_text = std::str::from_utf8(&buf[1536..1536 + tm.2 as usize])
        .map_err(|_| bad("the tag manifest is not UTF-8"))?;
    let tagmanifest = crate::manifest::parse(format::TAGMANIFEST, tm_text)?;
    let names: Vec<String> = tagmanifest.iter().map(|(n, _)| n.clone()).collect();
    let has_sig = names.iter().any(|n| n == format::CASEVAULT_SIG);
    let mut expected = vec![
        format::BAGIT_TXT,
        format::BAG_INFO_TXT,
        format::CASEVAULT_JSON,
    ];
    if has_sig {
        expected.push(format::CASEVAULT_SIG);
    }
    expected.extend([format::MANIFEST, format::LOCATOR]);
    if names != expected {
        return Err(bad(
            "the tag manifest does not list exactly the version 3 tag files, in order",
        ));
    }
    let tail = Tail {
        case_id: case_id.to_string(),
        locator: Locator::parse(loc_text)?,
        tagmanifest,
    };
    if tail.digest(format::LOCATOR) != Some(hex(&Sha256::digest(loc_text)).as_str()) {
        return Err(bad("the locator does not match the tag manifest"));
    }
    let with_sig = tail.locator.get(format::CASEVAULT_SIG).is_some();
    if with_sig != has_sig {
        return Err(bad(
            "the locator and the tag manifest disagree about casevault.sig",
        ));
    }
    if tail.locator.end() != e - format::TAIL_BYTES {
        return Err(bad("the tag files do not end where the locator begins"));
    }
    // Every tag file's own header, where the locator says.
    for t in &tail.locator.tags {
        let mut h = [0u8; 512];
        rv.read_at(t.offset, &mut h)?;
        let want = format!("{case_id}/{}", t.name);
        match ustar(&h) {
            Some((p, b'0', s)) if p == want && s == t.size => {}
            _ => {
                return Err(bad(&format!(
                    "no header for {} at offset {}",
                    t.name, t.offset
                )))
            }
        }
    }
    Ok(Some(tail))
}

/// A tag file's content, checked against the tag manifest; at most `cap`.
fn small_tag(rv: &RefCell<RandomVault>, tail: &Tail, name: &str, cap: u64) -> Result<Vec<u8>> {
    let t = tail.locator.get(name).expect("listed");
    if t.size > cap {
        return Err(Error::integrity(format!("tag file {name} is too large")));
    }
    let mut data = vec![0u8; t.size as usize];
    rv.borrow_mut().read_at(t.offset + 512, &mut data)?;
    if tail.digest(name) != Some(hex(&Sha256::digest(&data)).as_str()) {
        return Err(Error::integrity(format!(
            "{name} does not match {}",
            format::TAGMANIFEST
        )));
    }
    Ok(data)
}

/// The payload manifest read from the end alone, checked against the tag
/// manifest: what salvage verifies files against when `casevault.json`
/// is damaged (FORMAT §14.4).
pub fn read_manifest(rv: &RefCell<RandomVault>, tail: &Tail) -> Result<Vec<u8>> {
    small_tag(rv, tail, format::MANIFEST, format::MAX_MANIFEST_ABSOLUTE)
}

/// Hashes what it reads: SHA-256, and SHA-512 when asked (for
/// `casevault.json`, whose signature may use it).
struct Hashing<R> {
    inner: R,
    sha256: Sha256,
    sha512: Option<Sha512>,
}

impl<R> Hashing<R> {
    fn new(inner: R, sha512: bool) -> Self {
        Hashing {
            inner,
            sha256: Sha256::new(),
            sha512: sha512.then(Sha512::new),
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha256.update(&buf[..n]);
        if let Some(h) = &mut self.sha512 {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Checks the order of entries as they stream: a directory before its
/// content, siblings strictly increasing by the bytes of their names
/// (FORMAT §3), keeping only the open directories.
#[derive(Default)]
pub(super) struct Order {
    /// Open directories: path, last child's name.
    stack: Vec<(String, Option<String>)>,
}

impl Order {
    pub(super) fn admit(&mut self, path: &str, is_dir: bool) -> Result<()> {
        let bad = || {
            Error::integrity(format!(
                "{}: entry {path:?} is out of order or has no directory before it",
                format::CASEVAULT_JSON
            ))
        };
        if self.stack.is_empty() {
            if path != "data" || !is_dir {
                return Err(Error::integrity(format!(
                    "{}: the first entry must be the data directory",
                    format::CASEVAULT_JSON
                )));
            }
            self.stack.push((path.into(), None));
            return Ok(());
        }
        let rel = path.strip_prefix("data/").ok_or_else(bad)?;
        if path.len() > format::MAX_PATH_BYTES || super::tar::check_components(rel).is_err() {
            return Err(Error::integrity(format!(
                "{}: unsafe path {path:?}",
                format::CASEVAULT_JSON
            )));
        }
        let (parent, name) = path.rsplit_once('/').ok_or_else(bad)?;
        while self.stack.last().is_some_and(|(d, _)| d != parent) {
            self.stack.pop();
        }
        let (_, last) = self.stack.last_mut().ok_or_else(bad)?;
        if last
            .as_deref()
            .is_some_and(|l| l.as_bytes() >= name.as_bytes())
        {
            return Err(bad());
        }
        *last = Some(name.to_string());
        if is_dir {
            self.stack.push((path.into(), None));
        }
        Ok(())
    }
}

/// The checks of FORMAT §13.3 step 5 on one pass over `casevault.json`
/// and the manifest side by side; each entry is handed to `visit` as it
/// streams (not yet trusted: trust comes when this returns `Ok`). Returns
/// the document without its entries, and the inner signature's key.
pub fn check_meta(
    rv: &RefCell<RandomVault>,
    tail: &Tail,
    visit: &mut dyn FnMut(&Entry) -> Result<()>,
) -> Result<(CaseJson, Option<crate::sign::Verified>)> {
    let small = |name| small_tag(rv, tail, name, format::MAX_SMALL_TAG_FILE);
    if small(format::BAGIT_TXT)? != format::BAGIT_TXT_CONTENT.as_bytes() {
        return Err(Error::integrity(
            "bagit.txt is not the BagIt 1.0 declaration",
        ));
    }
    let info = small(format::BAG_INFO_TXT)?;
    let info = std::str::from_utf8(&info)
        .map_err(|_| Error::integrity("bag-info.txt is not UTF-8"))
        .and_then(format::parse_bag_info)?;
    let sig = match tail.locator.get(format::CASEVAULT_SIG) {
        Some(_) => Some(small(format::CASEVAULT_SIG)?),
        None => None,
    };
    let json_at = tail.locator.get(format::CASEVAULT_JSON).expect("listed");
    let man_at = tail.locator.get(format::MANIFEST).expect("listed");
    if json_at.size > format::MAX_JSON_ABSOLUTE || man_at.size > format::MAX_MANIFEST_ABSOLUTE {
        return Err(Error::integrity(
            "casevault.json or the manifest is too large (reader limit)",
        ));
    }
    // SHA-512 only serves an inner signature (one made with rsa-sha2-512).
    let mut json = Hashing::new(
        Cursor::new(rv, json_at.offset + 512, json_at.size),
        sig.is_some(),
    );
    let mut entries = EntryChecks {
        manifest: io::BufReader::with_capacity(
            64 * 1024,
            Hashing::new(Cursor::new(rv, man_at.offset + 512, man_at.size), false),
        ),
        payload_end: tail.locator.tags[0].offset,
        order: Order::default(),
        last_offset: None,
        line: Vec::new(),
        manifest_lines: 0,
        counts: Counts::default(),
    };
    let limits = JsonLimits {
        entries: format::MAX_PAYLOAD_ENTRIES + 1,
        path_bytes: format::MAX_PAYLOAD_PATH_BYTES + 4,
    };
    let mut check = |e: &Entry| entries.admit(e).and_then(|()| visit(e));
    let parsed =
        CaseJson::parse_stream_visit(&mut json, Some(&limits), cursor_error, Some(&mut check))??;
    let manifest_sha256 = entries.finish()?;
    let mut json_rest = Vec::new();
    json.read_to_end(&mut json_rest).map_err(cursor_error)?;
    if json_rest.iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(Error::integrity(
            "casevault.json has data after the document",
        ));
    }
    let json_sha256 = json.sha256.finalize();
    let json_sha512 = json
        .sha512
        .take()
        .map_or_else(Vec::new, |h| h.finalize().to_vec());
    for (name, digest) in [
        (format::CASEVAULT_JSON, hex(&json_sha256)),
        (format::MANIFEST, manifest_sha256),
    ] {
        if tail.digest(name) != Some(digest.as_str()) {
            return Err(Error::integrity(format!(
                "{name} does not match {}",
                format::TAGMANIFEST
            )));
        }
    }
    let compression = rv.borrow().compression();
    check_head(
        &parsed,
        tail,
        compression,
        &entries.counts,
        &info,
        sig.is_some(),
    )?;
    let signature =
        crate::sign::check_inner_digests(&parsed, &json_sha256, &json_sha512, sig.as_deref())?;
    Ok((parsed, signature))
}

/// What `casevault.json` lists, counted as it streams.
#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    links: u64,
    bytes: u64,
}

/// The per-entry checks of a partial read: order, offsets, fields, and
/// the manifest's next line for each file.
struct EntryChecks<M> {
    manifest: M,
    payload_end: u64,
    order: Order,
    last_offset: Option<u64>,
    line: Vec<u8>,
    manifest_lines: usize,
    counts: Counts,
}

impl<'a> EntryChecks<io::BufReader<Hashing<Cursor<'a>>>> {
    fn admit(&mut self, e: &Entry) -> Result<()> {
        self.order.admit(&e.path, e.kind == Kind::Dir)?;
        if !super::bag::fields_well_formed(e) {
            return Err(Error::integrity(format!(
                "casevault.json: malformed entry {:?}",
                e.path
            )));
        }
        if e.kind != Kind::Symlink {
            let off = e.offset.unwrap_or(0);
            let first_ok = self.last_offset.is_some() || off == 512;
            if !first_ok || self.last_offset.is_some_and(|l| off <= l) || off >= self.payload_end {
                return Err(Error::integrity(format!(
                    "{}: the offset of {:?} is out of order or outside the payload",
                    format::CASEVAULT_JSON,
                    e.path
                )));
            }
            self.last_offset = Some(off);
        }
        let c = &mut self.counts;
        match e.kind {
            Kind::Dir => c.dirs += 1,
            Kind::Symlink => c.links += 1,
            Kind::File => {
                c.files += 1;
                c.bytes = c.bytes.saturating_add(e.size.unwrap_or(0));
                self.manifest_line(e)?;
            }
        }
        Ok(())
    }

    /// The manifest's next line must be file `e`, with its digest.
    fn manifest_line(&mut self, e: &Entry) -> Result<()> {
        self.line.clear();
        self.manifest_lines += 1;
        let n = read_line(&mut self.manifest, &mut self.line)?;
        let text = std::str::from_utf8(&self.line[..n])
            .map_err(|_| Error::integrity("the manifest is not UTF-8"))?;
        let text = text.strip_suffix('\n').ok_or_else(|| {
            Error::integrity(format!(
                "{:?} is in casevault.json but not in {}",
                e.path,
                format::MANIFEST
            ))
        })?;
        let (path, hash) =
            crate::manifest::parse_line(format::MANIFEST, self.manifest_lines, text)?;
        if path != e.path || Some(hash) != e.sha256.as_deref() {
            return Err(Error::integrity(format!(
                "{} disagrees with casevault.json at {:?} (the index disagrees with the manifest)",
                format::MANIFEST,
                e.path
            )));
        }
        Ok(())
    }

    /// Every entry seen: the manifest must be over. Returns its SHA-256.
    fn finish(&mut self) -> Result<String> {
        let mut rest = Vec::new();
        self.manifest.read_to_end(&mut rest).map_err(cursor_error)?;
        if !rest.is_empty() {
            return Err(Error::integrity(format!(
                "{} lists files that casevault.json does not",
                format::MANIFEST
            )));
        }
        Ok(hex(&self.manifest.get_ref().sha256.clone().finalize()))
    }
}

/// `casevault.json`'s own fields against the bag: version, case id,
/// compression, totals, bag-info.txt and the signer.
fn check_head(
    parsed: &CaseJson,
    tail: &Tail,
    compression: Compression,
    c: &Counts,
    info: &format::BagInfo,
    signed: bool,
) -> Result<()> {
    let t = &parsed.totals;
    let problems = [
        (
            parsed.version != format::FORMAT_VERSION,
            "is not version 3 but has a locator",
        ),
        (
            parsed.case_id != tail.case_id,
            "names another case than the bag",
        ),
        (
            parsed.compression != compression,
            "gives another compression than the payload's",
        ),
        (
            (t.files, t.dirs, t.symlinks, t.bytes) != (c.files, c.dirs, c.links, c.bytes),
            "totals do not match its entries",
        ),
        (
            (info.oxum_bytes, info.oxum_files) != (c.bytes, c.files)
                || info.external_identifier != tail.case_id,
            "disagrees with bag-info.txt",
        ),
        (
            parsed.signer.is_some() != signed,
            "and casevault.sig disagree about the signer",
        ),
    ];
    match problems.iter().find(|(bad, _)| *bad) {
        Some((_, why)) => Err(Error::integrity(format!("casevault.json {why}"))),
        None => Ok(()),
    }
}

/// One manifest line into `line` (at most the longest line of §6.1 and
/// its line feed); returns its length, 0 at the end.
fn read_line<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> Result<usize> {
    const MAX: u64 = 12_354 + 1;
    let n = r
        .by_ref()
        .take(MAX)
        .read_until(b'\n', line)
        .map_err(cursor_error)?;
    if n as u64 == MAX && line.last() != Some(&b'\n') {
        return Err(Error::integrity("a manifest line is too long"));
    }
    Ok(n)
}

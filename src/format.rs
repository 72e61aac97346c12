//! The vault format's constants and tag files (docs/FORMAT.md): case ids,
//! bag layout, `bagit.txt`, `bag-info.txt` and the `casevault.json` schema.

use serde::{Deserialize, Serialize};

/// The newest format version this casevault reads, and the one it writes
/// (FORMAT §9, §13): version 3 adds entry offsets, the locator and, for
/// zstd, independent frames with a seek table.
pub const FORMAT_VERSION: u32 = 3;
/// Version 2: signed vaults before version 3 (`signer`, `casevault.sig`).
pub const FORMAT_VERSION_SIGNED: u32 = 2;
/// Version 1: unsigned vaults of casevault 0.1.
pub const FORMAT_VERSION_UNSIGNED: u32 = 1;
/// Value of the `format` field of `casevault.json`.
pub const FORMAT_NAME: &str = "casevault";
/// Name and version written into `tool` and `Bag-Software-Agent`.
pub const TOOL: &str = concat!("casevault ", env!("CARGO_PKG_VERSION"));

/// zstd frame magic (RFC 8878 §3.1.1), little-endian 0xFD2FB528.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Tag file names, in the order they appear in the tar stream (FORMAT §3).
pub const BAGIT_TXT: &str = "bagit.txt";
pub const BAG_INFO_TXT: &str = "bag-info.txt";
pub const CASEVAULT_JSON: &str = "casevault.json";
/// The optional inner signature (FORMAT §5.5), between `casevault.json` and
/// `manifest-sha256.txt`; only in signed (version 2) vaults.
pub const CASEVAULT_SIG: &str = "casevault.sig";
pub const MANIFEST: &str = "manifest-sha256.txt";
pub const TAGMANIFEST: &str = "tagmanifest-sha256.txt";
/// Version 3: where each tag file is in the tar stream (FORMAT §13.1),
/// between the manifest and the tag manifest.
pub const LOCATOR: &str = "casevault-locator.txt";
pub const TAG_FILES: [&str; 5] = [
    BAGIT_TXT,
    BAG_INFO_TXT,
    CASEVAULT_JSON,
    MANIFEST,
    TAGMANIFEST,
];

/// The exact content of `bagit.txt` (FORMAT §5.1).
pub const BAGIT_TXT_CONTENT: &str = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n";

/// Trailing zero bytes allowed after the tar end-of-archive blocks
/// (FORMAT §2 item 3): two 10240-byte records in all.
pub const MAX_TAR_TRAILER: u64 = 20480;

/// Largest tag file other than the manifests and casevault.json.
pub const MAX_SMALL_TAG_FILE: u64 = 64 * 1024;

/// Longest path we accept inside a vault, in bytes (Linux PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// Largest pax extended header a reader accepts (FORMAT §6.1).
pub const MAX_PAX: u64 = 64 * 1024;
/// zstd window limit (2^23 = 8 MiB): bounds decoder memory; casevault
/// writes far smaller windows (FORMAT §2 item 2).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// Links followed when checking where a link leads, not counting the link
/// itself (Linux's MAXSYMLINKS is 40, counting it: FORMAT §6 step 5).
pub const MAX_LINK_HOPS: usize = 40;
/// Most payload entries (directories and files under `data/`) a reader
/// accepts (FORMAT §6.1): each costs memory until the tag files are checked.
/// seal refuses cases beyond it.
pub const MAX_PAYLOAD_ENTRIES: u64 = 1 << 22;
/// Most bytes of payload paths (bag paths, summed) a reader accepts
/// (FORMAT §6.1): bounds the memory the kept paths take.
pub const MAX_PAYLOAD_PATH_BYTES: u64 = 256 << 20;
/// Most problems one check lists; the rest are counted. A crafted vault
/// could otherwise make a reader hold a message per entry.
pub const MAX_PROBLEMS: usize = 1000;
/// Largest `.sha256` sidecar a reader accepts: one line of a 64-digit
/// digest and a file name (at most 255 bytes, 765 once percent-encoded).
pub const MAX_SIDECAR: u64 = 4096;

/// First second an `mtime` may hold: 0000-01-01T00:00:00Z (FORMAT §5.4).
pub const MTIME_MIN: i64 = -62_167_219_200;
/// Last second an `mtime` may hold: 9999-12-31T23:59:59Z (FORMAT §5.4).
pub const MTIME_MAX: i64 = 253_402_300_799;

/// Whether `secs` lies in the years 0000 to 9999, the range RFC 3339 can
/// write and the only one casevault records (FORMAT §5.4): seal refuses
/// other times and readers refuse vaults holding them.
pub fn mtime_in_range(secs: i64) -> bool {
    (MTIME_MIN..=MTIME_MAX).contains(&secs)
}

/// A time as RFC 3339 in UTC with its sub-second part
/// (`2024-03-15T10:30:00.12Z`), or `@SECONDS.NANOSECONDS` outside the
/// years 0000 to 9999.
pub fn display_time(secs: i64, nsec: u32) -> String {
    let rfc = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(secs) * 1_000_000_000 + i128::from(nsec),
    )
    .ok()
    .and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    });
    rfc.unwrap_or_else(|| format!("@{secs}.{nsec:09}"))
}

/// Whether `id` is a valid case id: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_case_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Compression of the tar stream inside the age payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    None,
}

impl Compression {
    /// The name used in `casevault.json` and `--compress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

/// Kind of a case entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
            Kind::Symlink => "symlink",
        }
    }
}

/// One entry of `casevault.json` (FORMAT §5.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Bag-relative path: `data` or `data/…`.
    pub path: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Version 3, directories and files: where the entry's first header
    /// block is in the tar stream (FORMAT §13.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Totals of `casevault.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Who signed a vault (`casevault.json` `signer`, format version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signer {
    /// The principal the sealer named (`--signer`, else the key comment);
    /// absent when neither was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// OpenSSH fingerprint of the signing key, `SHA256:…` (unpadded base64).
    pub fingerprint: String,
}

/// The `casevault.json` tag file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseJson {
    pub format: String,
    pub version: u32,
    pub case_id: String,
    pub sealed_at: String,
    pub tool: String,
    pub compression: Compression,
    pub entries: Vec<Entry>,
    pub totals: Totals,
    /// Version 2, signed vaults only: the signing key (FORMAT §5.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
}

/// Only the version fields, parsed first so that a newer vault gets a
/// "newer format" error rather than a schema complaint.
impl CaseJson {
    /// Serialise as written into the bag: compact JSON and a final LF.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("serialising plain structs cannot fail");
        v.push(b'\n');
        v
    }

    /// Parse `casevault.json`, refusing other formats, unknown versions and
    /// unknown fields.
    /// Parse a whole `casevault.json` held in memory (no limits).
    pub fn parse(bytes: &[u8]) -> crate::Result<Self> {
        Self::parse_reader(bytes, None, |e| {
            crate::Error::integrity(format!("{CASEVAULT_JSON} cannot be read: {e}"))
        })
    }

    /// Parse `casevault.json` as a stream (issue #10 item 11): nothing but
    /// the parsed entries is kept, no string or number may be longer than
    /// [`MAX_JSON_TOKEN`] bytes, and with `limits` the document is refused
    /// as soon as its entries exceed them (FORMAT §6.1). `io_err` maps an
    /// error of `r` itself.
    pub fn parse_reader<R: std::io::Read>(
        r: R,
        limits: Option<&JsonLimits>,
        io_err: impl Fn(std::io::Error) -> crate::Error,
    ) -> crate::Result<Self> {
        Self::parse_stream(r, limits, io_err)?
    }

    /// [`CaseJson::parse_reader`], with the errors that must stop a reader
    /// at once (a reader limit, a token too long, an error of `r`) apart
    /// from those about the document itself, which a reader reports only
    /// after the tag manifest (FORMAT §6 step 4): `Err` and `Ok(Err)`.
    pub fn parse_stream<R: std::io::Read>(
        r: R,
        limits: Option<&JsonLimits>,
        io_err: impl Fn(std::io::Error) -> crate::Error,
    ) -> crate::Result<crate::Result<Self>> {
        Self::parse_stream_visit(r, limits, io_err, None)
    }

    /// [`CaseJson::parse_stream`], handing each entry to `visit` (if
    /// given) instead of keeping it: the result's `entries` is then empty,
    /// and memory does not grow with the entries.
    pub fn parse_stream_visit<'l, R: std::io::Read>(
        r: R,
        limits: Option<&'l JsonLimits>,
        io_err: impl Fn(std::io::Error) -> crate::Error,
        visit: Option<&'l mut EntryVisitor<'l>>,
    ) -> crate::Result<crate::Result<Self>> {
        let state = std::cell::RefCell::new(ParseState {
            limits,
            visit,
            ..ParseState::default()
        });
        let lines = std::cell::RefCell::new(LineLengths::default());
        // serde_json reads one byte at a time; from a `BufReader` that is
        // a copy out of its buffer (std specialises it), through any
        // other reader a call per byte, which cost half of a metadata
        // pass. So the counting happens below the buffer.
        let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(Lines {
            inner: TokenGuard {
                inner: r,
                in_str: false,
                esc: false,
                run: 0,
            },
            lines: &lines,
        }));
        let parsed = serde::de::DeserializeSeed::deserialize(DocSeed(&state), &mut de)
            .and_then(|j| de.end().map(|()| j));
        let mut state = state.into_inner();
        let json = match parsed {
            Ok(j) => j,
            Err(e) => {
                if let Some(limit) = state.limit.take() {
                    return Err(limit);
                }
                if let Some(refused) = state.refused.take() {
                    return Ok(Err(refused));
                }
                if e.is_io() {
                    let io: std::io::Error = e.into();
                    if io
                        .get_ref()
                        .is_some_and(|i| i.downcast_ref::<TokenTooLong>().is_some())
                    {
                        return Err(crate::Error::integrity(format!(
                            "{CASEVAULT_JSON} has a string or number longer than {MAX_JSON_TOKEN} bytes (reader limit)"
                        )));
                    }
                    return Err(io_err(io));
                }
                if e.is_syntax() || e.is_eof() {
                    // Report the position as parsing a slice does: a line
                    // feed is the last column of its line, not column 0
                    // of the next (keeps messages as they were).
                    let mut text = e.to_string();
                    let line = e.line();
                    let prev = lines.borrow().length_of(line.wrapping_sub(1));
                    if let (0, Some(prev)) = (e.column(), prev) {
                        let from = format!(" at line {line} column 0");
                        if let Some(head) = text.strip_suffix(&from) {
                            text = format!("{head} at line {} column {prev}", line - 1);
                        }
                    }
                    return Ok(Err(crate::Error::integrity(format!(
                        "{CASEVAULT_JSON} is not valid JSON: {text}"
                    ))));
                }
                return Ok(Err(crate::Error::integrity(format!(
                    "{CASEVAULT_JSON} does not match the version {} schema: {e}",
                    state.version.unwrap_or(0)
                ))));
            }
        };
        // `signer` is new in version 2: in a version 1 file it is an
        // unknown field.
        if json.version == 1 && json.signer.is_some() {
            return Ok(Err(crate::Error::integrity(format!(
                "{CASEVAULT_JSON} says version 1 but has a version 2 field `signer`"
            ))));
        }
        if let Some(why) = state.offset_problem(json.version) {
            return Ok(Err(why));
        }
        Ok(Ok(json))
    }
}

/// Longest string (encoded, with its quotes) or other token a reader
/// accepts in `casevault.json`: a 4096-byte path with every byte escaped
/// as `\u00XX`. Bounds what the JSON parser buffers for one token.
pub const MAX_JSON_TOKEN: u64 = 6 * MAX_PATH_BYTES as u64 + 2;
/// Longest run of bytes outside strings between structural characters
/// (a number, `true`, whitespace): casevault writes at most 20.
const MAX_JSON_BARE: u64 = 64;
/// Most symlink records a reader accepts (FORMAT §6.1).
pub const MAX_LINKS: u64 = 1 << 20;
/// Most bytes of symlink paths and targets, summed, a reader accepts
/// (FORMAT §6.1).
pub const MAX_LINK_BYTES: u64 = 128 << 20;

/// What the payload read before `casevault.json` allows it to list
/// (FORMAT §6.1): its directory and file entries may not outnumber the
/// payload's, nor their paths (and any other strings) outweigh the
/// payload's paths.
#[derive(Debug, Clone, Copy)]
pub struct JsonLimits {
    /// Payload entries, plus one for `data` itself.
    pub entries: u64,
    /// Bytes of the payload's bag paths, plus 4 for `data`.
    pub path_bytes: u64,
}

/// Counts the lines of what is read through it, keeping the lengths of
/// the last [`LineLengths::KEEP`] complete lines: the parser reads
/// through a buffer above this, at most 8 KiB behind, so the line it
/// fails on, and the one before, are among them.
struct Lines<'c, R> {
    inner: R,
    lines: &'c std::cell::RefCell<LineLengths>,
}

/// Line numbers (from 1) and lengths (without the line feed) of the
/// lines most recently completed.
#[derive(Default)]
struct LineLengths {
    /// The line being read and the bytes of it read so far.
    line: usize,
    col: usize,
    done: std::collections::VecDeque<(usize, usize)>,
}

impl LineLengths {
    /// More than the parser's buffer can hold line feeds.
    const KEEP: usize = 8192 + 1;

    fn length_of(&self, line: usize) -> Option<usize> {
        self.done.iter().find(|(l, _)| *l == line).map(|(_, n)| *n)
    }
}

impl<R: std::io::Read> std::io::Read for Lines<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut l = self.lines.borrow_mut();
        for &b in &buf[..n] {
            if b == b'\n' {
                let (line, col) = (l.line.max(1), l.col);
                if l.done.len() == LineLengths::KEEP {
                    l.done.pop_front();
                }
                l.done.push_back((line, col));
                l.line = line + 1;
                l.col = 0;
            } else {
                l.col += 1;
            }
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct TokenTooLong;

impl std::fmt::Display for TokenTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON token too long")
    }
}

impl std::error::Error for TokenTooLong {}

/// Refuses a JSON string longer than [`MAX_JSON_TOKEN`] or a bare token
/// longer than [`MAX_JSON_BARE`] before the parser buffers it.
struct TokenGuard<R> {
    inner: R,
    in_str: bool,
    esc: bool,
    run: u64,
}

impl<R: std::io::Read> std::io::Read for TokenGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                    self.run = 0;
                    continue;
                }
                self.run += 1;
                if self.run > MAX_JSON_TOKEN {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        TokenTooLong,
                    ));
                }
            } else {
                match b {
                    b'"' => {
                        self.in_str = true;
                        self.run = 1;
                    }
                    b'{' | b'}' | b'[' | b']' | b',' | b':' => self.run = 0,
                    _ => {
                        self.run += 1;
                        if self.run > MAX_JSON_BARE {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                TokenTooLong,
                            ));
                        }
                    }
                }
            }
        }
        Ok(n)
    }
}

/// Called with each entry of a streamed `casevault.json`, instead of
/// keeping it (a partial read, FORMAT §13.3); `Err` stops the parse.
pub type EntryVisitor<'v> = dyn FnMut(&Entry) -> crate::Result<()> + 'v;

#[derive(Default)]
struct ParseState<'l> {
    limits: Option<&'l JsonLimits>,
    visit: Option<&'l mut EntryVisitor<'l>>,
    version: Option<u64>,
    /// Why the document was refused, when it was refused by a rule rather
    /// than by the JSON parser.
    refused: Option<crate::Error>,
    /// A reader limit the document broke.
    limit: Option<crate::Error>,
    entries: u64,
    path_bytes: u64,
    links: u64,
    link_bytes: u64,
    /// Version 3 offsets seen (FORMAT §13.1): on any entry, missing on a
    /// directory or file, present on a symlink.
    offsets: bool,
    offset_missing: bool,
    offset_on_link: bool,
}

impl ParseState<'_> {
    /// Version 3's `offset` rule (FORMAT §13.1): on every directory and
    /// file entry, on no symlink; in earlier versions an unknown field.
    fn offset_problem(&self, version: u32) -> Option<crate::Error> {
        let why = if version < 3 && self.offsets {
            format!("{CASEVAULT_JSON} says version {version} but has a version 3 field `offset`")
        } else if version >= 3 && self.offset_missing {
            format!("{CASEVAULT_JSON}: a directory or file entry has no `offset` (version 3)")
        } else if self.offset_on_link {
            format!("{CASEVAULT_JSON}: a symlink entry has an `offset`")
        } else {
            return None;
        };
        Some(crate::Error::integrity(why))
    }

    /// Count `e` against the limits; `Err` refuses the document.
    fn admit(&mut self, e: &Entry) -> Result<(), crate::Error> {
        self.offsets |= e.offset.is_some();
        self.offset_missing |= e.kind != Kind::Symlink && e.offset.is_none();
        self.offset_on_link |= e.kind == Kind::Symlink && e.offset.is_some();
        let Some(l) = self.limits else {
            return Ok(());
        };
        if e.sha256.as_ref().is_some_and(|h| h.len() > 64) {
            return Err(crate::Error::integrity(format!(
                "{CASEVAULT_JSON}: malformed entry {:?}",
                e.path
            )));
        }
        let strings = (e.path.len() + e.target.as_ref().map_or(0, String::len)) as u64;
        if e.kind == Kind::Symlink {
            self.links += 1;
            self.link_bytes += strings;
            if self.links > MAX_LINKS || self.link_bytes > MAX_LINK_BYTES {
                return Err(crate::Error::integrity(format!(
                    "{CASEVAULT_JSON} records more than {MAX_LINKS} symlinks or \
                     {MAX_LINK_BYTES} bytes of their paths and targets (reader limit)"
                )));
            }
        } else {
            self.entries += 1;
            self.path_bytes += strings;
            if self.entries > l.entries || self.path_bytes > l.path_bytes {
                return Err(crate::Error::integrity(format!(
                    "{CASEVAULT_JSON} lists more files and directories, or longer paths, \
                     than the payload holds ({} entries, {} bytes of paths)",
                    l.entries, l.path_bytes
                )));
            }
        }
        Ok(())
    }
}

const DOC_FIELDS: &[&str] = &[
    "format",
    "version",
    "case_id",
    "sealed_at",
    "tool",
    "compression",
    "entries",
    "totals",
    "signer",
];

/// Deserializes the document, checking `format` and `version` as they
/// come, and `entries` one by one.
struct DocSeed<'s, 'l>(&'s std::cell::RefCell<ParseState<'l>>);

impl DocSeed<'_, '_> {
    fn refuse<E: serde::de::Error>(&self, why: crate::Error) -> E {
        self.0.borrow_mut().refused = Some(why);
        E::custom("refused")
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for DocSeed<'_, '_> {
    type Value = CaseJson;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<CaseJson, D::Error> {
        d.deserialize_struct("CaseJson", DOC_FIELDS, self)
    }
}

impl<'de> serde::de::Visitor<'de> for DocSeed<'_, '_> {
    type Value = CaseJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the casevault.json object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<CaseJson, A::Error> {
        let mut d = DocFields::default();
        while let Some(key) = map.next_key::<String>()? {
            self.field(&mut d, &key, &mut map)?;
        }
        self.finish(d)
    }
}

/// The fields of `casevault.json` read so far.
#[derive(Default)]
struct DocFields {
    format: Option<String>,
    version: Option<u64>,
    case_id: Option<String>,
    sealed_at: Option<String>,
    tool: Option<String>,
    compression: Option<Compression>,
    entries: Option<Vec<Entry>>,
    totals: Option<Totals>,
    signer: Option<Option<Signer>>,
}

/// A field may appear once.
fn once<T, E: serde::de::Error>(slot: &Option<T>, name: &'static str) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::duplicate_field(name)),
        None => Ok(()),
    }
}

impl DocSeed<'_, '_> {
    /// Read the value of field `key` into `d`, checking `format` and
    /// `version` at once.
    fn field<'de, A: serde::de::MapAccess<'de>>(
        &self,
        d: &mut DocFields,
        key: &str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        use serde::de::Error as _;
        match key {
            "format" => {
                once(&d.format, "format")?;
                let v: String = map.next_value()?;
                if v != FORMAT_NAME {
                    return Err(self.refuse(crate::Error::integrity(format!(
                        "{CASEVAULT_JSON} does not say format \"{FORMAT_NAME}\""
                    ))));
                }
                d.format = Some(v);
            }
            "version" => {
                once(&d.version, "version")?;
                let v: u64 = map.next_value()?;
                if !(1..=u64::from(FORMAT_VERSION)).contains(&v) {
                    return Err(self.refuse(crate::Error::Unsupported(format!(
                        "vault format version {v}; this casevault reads versions 1 to {FORMAT_VERSION}"
                    ))));
                }
                self.0.borrow_mut().version = Some(v);
                d.version = Some(v);
            }
            "case_id" => {
                once(&d.case_id, "case_id")?;
                d.case_id = Some(map.next_value::<String>()?);
            }
            "sealed_at" => {
                once(&d.sealed_at, "sealed_at")?;
                d.sealed_at = Some(map.next_value::<String>()?);
            }
            "tool" => {
                once(&d.tool, "tool")?;
                d.tool = Some(map.next_value::<String>()?);
            }
            "compression" => {
                once(&d.compression, "compression")?;
                d.compression = Some(map.next_value()?);
            }
            "entries" => {
                once(&d.entries, "entries")?;
                d.entries = Some(map.next_value_seed(EntriesSeed(self.0))?);
            }
            "totals" => {
                once(&d.totals, "totals")?;
                d.totals = Some(map.next_value()?);
            }
            "signer" => {
                once(&d.signer, "signer")?;
                d.signer = Some(map.next_value()?);
            }
            other => return Err(A::Error::unknown_field(other, DOC_FIELDS)),
        }
        Ok(())
    }

    /// The document, once every field was read.
    fn finish<E: serde::de::Error>(&self, d: DocFields) -> Result<CaseJson, E> {
        let Some(format) = d.format else {
            return Err(self.refuse(crate::Error::integrity(format!(
                "{CASEVAULT_JSON} does not say format \"{FORMAT_NAME}\""
            ))));
        };
        let Some(version) = d.version else {
            return Err(self.refuse(crate::Error::integrity(format!(
                "{CASEVAULT_JSON} has no version"
            ))));
        };
        Ok(CaseJson {
            format,
            version: version as u32,
            case_id: d.case_id.ok_or_else(|| E::missing_field("case_id"))?,
            sealed_at: d.sealed_at.ok_or_else(|| E::missing_field("sealed_at"))?,
            tool: d.tool.ok_or_else(|| E::missing_field("tool"))?,
            compression: d
                .compression
                .ok_or_else(|| E::missing_field("compression"))?,
            entries: d.entries.ok_or_else(|| E::missing_field("entries"))?,
            totals: d.totals.ok_or_else(|| E::missing_field("totals"))?,
            signer: d.signer.flatten(),
        })
    }
}

/// `entries`, one at a time, each admitted against the limits before the
/// next is read.
struct EntriesSeed<'s, 'l>(&'s std::cell::RefCell<ParseState<'l>>);

impl<'de> serde::de::DeserializeSeed<'de> for EntriesSeed<'_, '_> {
    type Value = Vec<Entry>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Entry>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EntriesSeed<'_, '_> {
    type Value = Vec<Entry>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a sequence of entries")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Entry>, A::Error> {
        let mut out = Vec::new();
        while let Some(e) = seq.next_element::<Entry>()? {
            let mut state = self.0.borrow_mut();
            let admitted = state.admit(&e).and_then(|()| match state.visit.as_mut() {
                Some(v) => v(&e).map(|()| false),
                None => Ok(true),
            });
            match admitted {
                Ok(true) => out.push(e),
                Ok(false) => {}
                Err(why) => {
                    state.limit = Some(why);
                    return Err(serde::de::Error::custom("refused"));
                }
            }
        }
        Ok(out)
    }
}

pub fn json_parts(
    case_id: &str,
    sealed_at: &str,
    compression: Compression,
    totals: &Totals,
) -> (Vec<u8>, Vec<u8>) {
    json_parts_signed(case_id, sealed_at, compression, totals, None)
}

/// [`json_parts`] for a vault that may be signed: version 3, with
/// `signer` last when signed (FORMAT §5.4, §13.1).
pub fn json_parts_signed(
    case_id: &str,
    sealed_at: &str,
    compression: Compression,
    totals: &Totals,
    signer: Option<&Signer>,
) -> (Vec<u8>, Vec<u8>) {
    let s = |v: &str| serde_json::to_string(v).expect("serialising a string cannot fail");
    let version = FORMAT_VERSION;
    let prefix = format!(
        "{{\"format\":{},\"version\":{version},\"case_id\":{},\"sealed_at\":{},\"tool\":{},\"compression\":{},\"entries\":[",
        s(FORMAT_NAME),
        s(case_id),
        s(sealed_at),
        s(TOOL),
        s(compression.as_str())
    );
    let signer = match signer {
        Some(sg) => format!(
            ",\"signer\":{}",
            serde_json::to_string(sg).expect("serialising the signer cannot fail")
        ),
        None => String::new(),
    };
    let suffix = format!(
        "],\"totals\":{}{signer}}}\n",
        serde_json::to_string(totals).expect("serialising totals cannot fail")
    );
    (prefix.into_bytes(), suffix.into_bytes())
}

/// `bag-info.txt` content (FORMAT §5.2).
pub fn bag_info(bagging_date: &str, bytes: u64, files: u64, case_id: &str) -> String {
    format!(
        "Bagging-Date: {bagging_date}\nPayload-Oxum: {bytes}.{files}\nExternal-Identifier: {case_id}\nBag-Software-Agent: {TOOL}\n"
    )
}

/// The fields of `bag-info.txt` a reader checks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BagInfo {
    pub oxum_bytes: u64,
    pub oxum_files: u64,
    pub external_identifier: String,
}

/// Parse `bag-info.txt`; every line must be `Label: value`, and
/// `Payload-Oxum` and `External-Identifier` must each appear exactly once.
pub fn parse_bag_info(text: &str) -> crate::Result<BagInfo> {
    let bad = |why: &str| crate::Error::integrity(format!("{BAG_INFO_TXT}: {why}"));
    let mut oxum = None;
    let mut ext = None;
    for line in text.split_terminator('\n') {
        let (label, value) = line
            .split_once(": ")
            .ok_or_else(|| bad("a line is not `Label: value`"))?;
        match label {
            "Payload-Oxum" => {
                if oxum.is_some() {
                    return Err(bad("Payload-Oxum appears twice"));
                }
                let (b, f) = value
                    .split_once('.')
                    .ok_or_else(|| bad("bad Payload-Oxum"))?;
                let parse = |s: &str| {
                    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                        return None;
                    }
                    s.parse::<u64>().ok()
                };
                oxum = Some((
                    parse(b).ok_or_else(|| bad("bad Payload-Oxum"))?,
                    parse(f).ok_or_else(|| bad("bad Payload-Oxum"))?,
                ));
            }
            "External-Identifier" => {
                if ext.is_some() {
                    return Err(bad("External-Identifier appears twice"));
                }
                ext = Some(value.to_string());
            }
            _ => {}
        }
    }
    if !text.ends_with('\n') {
        return Err(bad("does not end with a line feed"));
    }
    let (oxum_bytes, oxum_files) = oxum.ok_or_else(|| bad("no Payload-Oxum"))?;
    Ok(BagInfo {
        oxum_bytes,
        oxum_files,
        external_identifier: ext.ok_or_else(|| bad("no External-Identifier"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_ids() {
        for ok in ["a", "CASE-2026-0042", "x.y_z-1", &"a".repeat(128)] {
            assert!(is_valid_case_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a b",
            "a/b",
            "ü",
            &"a".repeat(129),
            "a\n",
        ] {
            assert!(!is_valid_case_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn mtime_range_and_display() {
        assert!(mtime_in_range(MTIME_MIN) && mtime_in_range(MTIME_MAX) && mtime_in_range(0));
        assert!(!mtime_in_range(MTIME_MIN - 1) && !mtime_in_range(MTIME_MAX + 1));
        assert!(!mtime_in_range(i64::MIN) && !mtime_in_range(i64::MAX));
        assert_eq!(display_time(MTIME_MIN, 0), "0000-01-01T00:00:00Z");
        assert_eq!(
            display_time(MTIME_MAX, 999_999_999),
            "9999-12-31T23:59:59.999999999Z"
        );
        assert_eq!(display_time(-1, 500_000_000), "1969-12-31T23:59:59.5Z");
        assert_eq!(
            display_time(i64::MAX, 7),
            format!("@{}.000000007", i64::MAX)
        );
        assert_eq!(
            display_time(i64::MIN, 0),
            format!("@{}.000000000", i64::MIN)
        );
        assert_eq!(
            display_time(MTIME_MAX + 1, 0),
            format!("@{}.000000000", MTIME_MAX + 1)
        );
    }

    #[test]
    fn bag_info_round_trip() {
        let t = bag_info("2026-11-28", 12, 3, "C-1");
        let p = parse_bag_info(&t).unwrap();
        assert_eq!(
            p,
            BagInfo {
                oxum_bytes: 12,
                oxum_files: 3,
                external_identifier: "C-1".into()
            }
        );
        assert!(parse_bag_info("Payload-Oxum: 1.x\nExternal-Identifier: a\n").is_err());
        assert!(parse_bag_info("Payload-Oxum: 1.1\n").is_err());
        assert!(
            parse_bag_info("Payload-Oxum: 1.1\nPayload-Oxum: 1.1\nExternal-Identifier: a\n")
                .is_err()
        );
    }

    #[test]
    fn streamed_json_equals_serde() {
        let e = |p: &str, k| Entry {
            path: p.into(),
            kind: k,
            size: None,
            sha256: None,
            target: None,
            mode: 0o755,
            mtime: -3,
            mtime_nsec: 7,
            offset: (k != Kind::Symlink).then_some(512),
        };
        let mut f = e("data/\"q\"\nü", Kind::File);
        f.size = Some(3);
        f.sha256 = Some("ab".repeat(32));
        let entries = vec![e("data", Kind::Dir), f];
        let totals = Totals {
            files: 1,
            dirs: 1,
            symlinks: 0,
            bytes: 3,
        };
        let whole = CaseJson {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            case_id: "C-1".into(),
            sealed_at: "2026-11-28T00:00:00Z".into(),
            tool: TOOL.into(),
            compression: Compression::Zstd,
            entries: entries.clone(),
            totals: totals.clone(),
            signer: None,
        };
        let (mut streamed, suffix) =
            json_parts("C-1", "2026-11-28T00:00:00Z", Compression::Zstd, &totals);
        for (i, e) in entries.iter().enumerate() {
            if i > 0 {
                streamed.push(b',');
            }
            serde_json::to_writer(&mut streamed, e).unwrap();
        }
        streamed.extend_from_slice(&suffix);
        assert_eq!(
            String::from_utf8(streamed.clone()).unwrap(),
            String::from_utf8(whole.to_bytes()).unwrap()
        );
        assert_eq!(CaseJson::parse(&streamed).unwrap(), whole);
    }

    #[test]
    fn streamed_signed_json_is_version_3() {
        let totals = Totals::default();
        let signer = Signer {
            principal: Some("alice@lab".into()),
            fingerprint: "SHA256:x".into(),
        };
        let (mut j, suffix) =
            json_parts_signed("C-1", "t", Compression::None, &totals, Some(&signer));
        j.extend_from_slice(&suffix);
        let parsed = CaseJson::parse(&j).unwrap();
        assert_eq!(parsed.version, 3);
        assert_eq!(parsed.signer, Some(signer));
        assert_eq!(parsed.to_bytes(), j);
        // `signer` in a version 1 file is refused.
        let v1 = String::from_utf8(j.clone())
            .unwrap()
            .replace("\"version\":3", "\"version\":1");
        assert!(CaseJson::parse(v1.as_bytes()).is_err());
        // So is `offset` in a version 2 file, and its absence in version 3.
        let entry = r#"{"path":"data","kind":"dir","mode":493,"mtime":0,"mtime_nsec":0"#;
        let with = |version: u32, tail: &str| {
            String::from_utf8(j.clone())
                .unwrap()
                .replace("\"version\":3", &format!("\"version\":{version}"))
                .replace("\"entries\":[]", &format!("\"entries\":[{entry}{tail}}}]"))
        };
        assert!(CaseJson::parse(with(3, ",\"offset\":512").as_bytes()).is_ok());
        assert!(CaseJson::parse(with(2, "").as_bytes()).is_ok());
        assert!(CaseJson::parse(with(2, ",\"offset\":512").as_bytes()).is_err());
        assert!(CaseJson::parse(with(3, "").as_bytes()).is_err());
    }

    #[test]
    fn json_versions() {
        assert!(matches!(
            CaseJson::parse(br#"{"format":"casevault","version":4}"#),
            Err(crate::Error::Unsupported(_))
        ));
        assert!(matches!(
            CaseJson::parse(br#"{"format":"x","version":1}"#),
            Err(crate::Error::Integrity(_))
        ));
        assert!(matches!(
            CaseJson::parse(b"nope"),
            Err(crate::Error::Integrity(_))
        ));
    }

    /// Syntax errors keep the positions the parser gave before it read
    /// through a buffer (a line feed is the last column of its line, not
    /// column 0 of the next), also past the buffer's first 8 KiB.
    #[test]
    fn syntax_error_positions_are_kept() {
        let keys: String = (0..200)
            .map(|_| {
                "{\"path\":\"data\",\"kind\":\"dir\",\"mode\":493,\"mtime\":0,\"mtime_nsec\":0},\n"
            })
            .collect();
        let keys = format!("\"entries\":[\n{keys}");
        let cases = [
            (
                "{\n\"format\":\n".to_string(),
                "EOF while parsing a value at line 2 column 9",
            ),
            (
                "{\n,\n}".to_string(),
                "key must be a string at line 2 column 1",
            ),
            (
                "{\"format\":\"casevault\",\n\"version\":1,\n\n".to_string(),
                "EOF while parsing a value at line 3 column 0",
            ),
            (
                format!("{{{keys}"),
                "EOF while parsing a value at line 201 column 65",
            ),
            (
                format!("{{{keys}\n"),
                "EOF while parsing a value at line 202 column 0",
            ),
            (format!("{{{keys}]"), "trailing comma at line 202 column 1"),
        ];
        for (text, want) in cases {
            let e = CaseJson::parse_stream(text.as_bytes(), None, |e| {
                crate::Error::integrity(e.to_string())
            })
            .unwrap()
            .unwrap_err()
            .to_string();
            assert!(e.ends_with(&format!("is not valid JSON: {want}")), "{e}");
        }
    }

    /// Issue #10 item 11: the streaming parser refuses as soon as the
    /// entries outgrow what the payload allows, and refuses long tokens.
    #[test]
    fn streamed_limits() {
        let doc = |entries: &str| {
            format!(
                r#"{{"format":"casevault","version":1,"case_id":"C","sealed_at":"t","tool":"t","compression":"none","entries":[{entries}],"totals":{{"files":0,"dirs":1,"symlinks":0,"bytes":0}}}}"#
            )
        };
        let dir = |p: &str| {
            format!(r#"{{"path":"{p}","kind":"dir","mode":493,"mtime":0,"mtime_nsec":0}}"#)
        };
        let parse = |text: &str, entries, path_bytes| {
            let l = JsonLimits {
                entries,
                path_bytes,
            };
            CaseJson::parse_stream(text.as_bytes(), Some(&l), |e| {
                crate::Error::integrity(e.to_string())
            })
        };
        let one = doc(&dir("data"));
        assert!(matches!(parse(&one, 1, 4), Ok(Ok(_))));
        let two = doc(&format!("{},{}", dir("data"), dir("data/a")));
        // More entries than the payload: refused at once (outer Err).
        let e = parse(&two, 1, 100).unwrap_err().to_string();
        assert!(e.contains("lists more files and directories"), "{e}");
        // More path bytes than the payload's.
        assert!(parse(&two, 2, 8).is_err());
        assert!(matches!(parse(&two, 2, 10), Ok(Ok(_))));
        // A string longer than any path can be, however it is used.
        let long = doc(&dir(&"a".repeat(MAX_JSON_TOKEN as usize)));
        let e = parse(&long, 1, u64::MAX).unwrap_err().to_string();
        assert!(e.contains("longer than"), "{e}");
        let spaces = format!("{{{}}}", " ".repeat(100));
        assert!(parse(&spaces, 1, 4).is_err());
        // Document errors are deferred (inner Err), with the old messages.
        let e = parse(&one[..40], 1, 4).unwrap().unwrap_err().to_string();
        assert!(e.contains("casevault.json is not valid JSON: EOF"), "{e}");
        let e = parse(&one.replace("\"tool\":\"t\",", ""), 1, 4)
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not match the version 1 schema: missing field `tool`"),
            "{e}"
        );
    }
}

/// First line of `casevault-locator.txt` (FORMAT §13.1 item 4).
pub const LOCATOR_FIRST_LINE: &str = "casevault-locator 1";
/// Largest locator and tag manifest in a version 3 vault: one tar block,
/// so that both sit at fixed distances from the end (FORMAT §13.1 item 3).
pub const MAX_TAIL_TAG: u64 = 512;
/// Bytes from the locator's header to the end of the tar stream.
pub const TAIL_BYTES: u64 = 3072;

/// Where one tag file is in the tar stream (a line of the locator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPlace {
    pub name: &'static str,
    /// Offset of its ustar header.
    pub offset: u64,
    /// Length of its content.
    pub size: u64,
}

impl TagPlace {
    /// Where the next tar entry starts: header, content, padding.
    pub fn end(&self) -> u64 {
        self.offset + 512 + self.size.div_ceil(512) * 512
    }
}

/// `casevault-locator.txt` (FORMAT §13.1 item 4): the tag files before it,
/// in tar order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    pub tags: Vec<TagPlace>,
}

impl Locator {
    /// The file's exact bytes.
    pub fn to_text(&self) -> String {
        let mut s = format!("{LOCATOR_FIRST_LINE}\n");
        for t in &self.tags {
            s.push_str(&format!("{} {} {}\n", t.name, t.offset, t.size));
        }
        s
    }

    /// Parse and check a locator: the first line, then exactly the tag
    /// files of a version 3 bag before it, in order (`casevault.sig` where
    /// it may be), with decimal numbers without leading zeros, each tag file
    /// right after the previous one.
    pub fn parse(text: &[u8]) -> crate::Result<Locator> {
        let bad = |why: &str| crate::Error::integrity(format!("{LOCATOR}: {why}"));
        let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?;
        let body = text
            .strip_prefix(LOCATOR_FIRST_LINE)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or_else(|| bad(&format!("does not start with {LOCATOR_FIRST_LINE:?}")))?;
        let mut tags = Vec::new();
        for line in body.split_terminator('\n') {
            let mut it = line.split(' ');
            let (Some(name), Some(off), Some(size), None) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(bad("a line is not `NAME OFFSET SIZE`"));
            };
            let num = |v: &str| {
                let ok = !v.is_empty()
                    && v.len() <= 20
                    && v.bytes().all(|c| c.is_ascii_digit())
                    && (v == "0" || !v.starts_with('0'));
                ok.then(|| v.parse::<u64>().ok()).flatten()
            };
            let (Some(offset), Some(size)) = (num(off), num(size)) else {
                return Err(bad(&format!("bad number in the line for {name:?}")));
            };
            let name = [
                BAGIT_TXT,
                BAG_INFO_TXT,
                CASEVAULT_JSON,
                CASEVAULT_SIG,
                MANIFEST,
            ]
            .into_iter()
            .find(|n| *n == name)
            .ok_or_else(|| bad(&format!("unknown tag file {name:?}")))?;
            tags.push(TagPlace { name, offset, size });
        }
        if !body.is_empty() && !body.ends_with('\n') {
            return Err(bad("the last line has no line feed"));
        }
        let names: Vec<&str> = tags.iter().map(|t| t.name).collect();
        let unsigned = [BAGIT_TXT, BAG_INFO_TXT, CASEVAULT_JSON, MANIFEST];
        let signed = [
            BAGIT_TXT,
            BAG_INFO_TXT,
            CASEVAULT_JSON,
            CASEVAULT_SIG,
            MANIFEST,
        ];
        if names != unsigned && names != signed {
            return Err(bad(
                "does not list exactly the tag files before it, in order",
            ));
        }
        for w in tags.windows(2) {
            if w[0].offset.checked_add(512 + w[0].size.div_ceil(512) * 512) != Some(w[1].offset) {
                return Err(bad(&format!(
                    "{} does not follow {} directly",
                    w[1].name, w[0].name
                )));
            }
        }
        Ok(Locator { tags })
    }

    /// The place of tag file `name`.
    pub fn get(&self, name: &str) -> Option<&TagPlace> {
        self.tags.iter().find(|t| t.name == name)
    }

    /// Where the tag files end (the locator's own header).
    pub fn end(&self) -> u64 {
        self.tags.last().map_or(0, TagPlace::end)
    }
}

/// Absolute cap on `casevault.json` when the payload's counts are not known
/// (a partial read, FORMAT §13.3 step 4): the cap of §6.1 at the limits.
pub const MAX_JSON_ABSOLUTE: u64 =
    (64 << 20) + MAX_PAYLOAD_ENTRIES * 256 + MAX_PAYLOAD_PATH_BYTES * 6;
/// The same for `manifest-sha256.txt`.
pub const MAX_MANIFEST_ABSOLUTE: u64 =
    64 * 1024 + MAX_PAYLOAD_ENTRIES * 80 + MAX_PAYLOAD_PATH_BYTES * 3;

//! The bag checks (FORMAT §6 step 4), run after the age stream ended
//! cleanly: the tag manifest against the tag files, then the manifest,
//! `casevault.json` and `bag-info.txt` against the payload, each check its
//! own function; every disagreement is collected as a typed [`Finding`].
//! The manifest is checked as it streams ([`stream_manifest`]).

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, Read};

use sha2::{Digest, Sha256};

use crate::error::{Finding, Listing};
use crate::format::{self, CaseJson, Compression, Entry, Kind, MAX_PROBLEMS};
use crate::io::{hex, BUF_SIZE};
use crate::{manifest, Error, Result};

use super::tar::check_components;

/// The payload's files: bag path -> (size, SHA-256 hex, position).
pub(super) type Files = HashMap<String, (u64, String, usize)>;

/// The payload's file paths in payload order.
fn payload_order(files: &Files) -> Vec<&String> {
    let mut v: Vec<(&String, usize)> = files.iter().map(|(p, (_, _, i))| (p, *i)).collect();
    v.sort_unstable_by_key(|&(_, i)| i);
    v.into_iter().map(|(p, _)| p).collect()
}

/// What the reader found in the tag files it streamed.
pub(super) struct Streamed {
    /// `casevault.json`, or why it does not parse.
    pub(super) json: Result<CaseJson>,
    pub(super) json_sha256: String,
    /// The manifest's disagreements with the payload, in the order of the
    /// old whole-file check, or why it does not parse.
    pub(super) manifest: Result<Vec<Finding>>,
    pub(super) manifest_sha256: String,
}

/// What the payload held, as the reader recorded it.
pub(super) struct Payload<'a> {
    pub(super) case_id: &'a str,
    pub(super) compression: Compression,
    /// Bag paths of the directories: `data`, `data/x`, …
    pub(super) dirs: &'a HashSet<String>,
    pub(super) files: &'a Files,
}

/// The tag files kept whole: `bagit.txt`, `bag-info.txt`, the tag
/// manifest, and `casevault.sig` if the bag holds one.
pub(super) struct Tags<'a> {
    pub(super) bagit: &'a [u8],
    pub(super) info: &'a [u8],
    pub(super) tagmanifest: &'a [u8],
    pub(super) inner_sig: Option<&'a [u8]>,
    /// Version 3's `casevault-locator.txt`, if the bag holds one.
    pub(super) locator: Option<&'a [u8]>,
}

/// Collected findings, at most [`MAX_PROBLEMS`] of them kept.
#[derive(Default)]
struct Problems {
    list: Vec<Finding>,
    more: u64,
}

impl Problems {
    fn push(&mut self, p: Finding) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.more += 1;
        }
    }

    /// A finding about tag file `file`, in prose.
    fn tag(&mut self, file: &'static str, detail: String) {
        self.push(Finding::TagFile { file, detail });
    }

    /// The findings so far, the uncounted ones as a last [`Finding::More`].
    fn take(&mut self) -> Vec<Finding> {
        let mut list = std::mem::take(&mut self.list);
        if self.more > 0 {
            list.push(Finding::More(std::mem::take(&mut self.more)));
        }
        list
    }

    fn result(&mut self) -> Result<()> {
        Error::findings(self.take())
    }
}

/// Check tag files against each other and against the payload (FORMAT §6
/// step 4). Collects every disagreement.
pub(super) fn check_bag(p: &Payload, tags: &Tags, streamed: Streamed) -> Result<CaseJson> {
    let mut problems = Problems::default();
    check_tagmanifest(tags, &streamed, &mut problems)?;
    problems.result()?;

    let json = streamed.json?;
    // manifest vs payload, found as it streamed
    for f in streamed.manifest? {
        problems.push(f);
    }
    let info_text = std::str::from_utf8(tags.info)
        .map_err(|_| Error::integrity("bag-info.txt is not UTF-8"))?;
    let info = format::parse_bag_info(info_text)?;

    check_json_header(&json, p, &mut problems);
    let tree = check_json_entries(&json, p, &mut problems);
    check_payload_listed(p, &tree, &mut problems);
    check_bag_info(&info, p, &mut problems);
    problems.result()?;
    Ok(json)
}

/// The tag manifest first: it vouches for the other tag files. Then
/// `bagit.txt`'s declaration.
fn check_tagmanifest(tags: &Tags, streamed: &Streamed, problems: &mut Problems) -> Result<()> {
    let tm_text = std::str::from_utf8(tags.tagmanifest)
        .map_err(|_| Error::integrity("tag manifest is not UTF-8"))?;
    let tm = manifest::parse(format::TAGMANIFEST, tm_text)?;
    let mut expected_tags: Vec<(&str, String)> = vec![
        (format::BAGIT_TXT, hex(&Sha256::digest(tags.bagit))),
        (format::BAG_INFO_TXT, hex(&Sha256::digest(tags.info))),
        (format::CASEVAULT_JSON, streamed.json_sha256.clone()),
    ];
    if let Some(sig) = tags.inner_sig {
        expected_tags.push((format::CASEVAULT_SIG, hex(&Sha256::digest(sig))));
    }
    expected_tags.push((format::MANIFEST, streamed.manifest_sha256.clone()));
    if let Some(locator) = tags.locator {
        expected_tags.push((format::LOCATOR, hex(&Sha256::digest(locator))));
    }
    if tm.len() != expected_tags.len() {
        problems.tag(
            format::TAGMANIFEST,
            format!(
                "{} must list exactly the {} tag files before it",
                format::TAGMANIFEST,
                expected_tags.len()
            ),
        );
    }
    for (name, digest) in expected_tags {
        match tm.iter().find(|(p, _)| p == name) {
            None => problems.push(Finding::Unexpected {
                path: name.into(),
                not_in: Listing::TagManifest,
                dir: false,
            }),
            Some((_, h)) if *h != digest => problems.push(Finding::HashMismatch {
                path: name.into(),
                expected: h.clone(),
                actual: digest,
                against: Listing::TagManifest,
            }),
            _ => {}
        }
    }
    if tags.bagit != format::BAGIT_TXT_CONTENT.as_bytes() {
        problems.tag(
            format::BAGIT_TXT,
            format!("{} is not the BagIt 1.0 declaration", format::BAGIT_TXT),
        );
    }
    Ok(())
}

/// `casevault.json`'s case id, compression and first entry.
fn check_json_header(json: &CaseJson, p: &Payload, problems: &mut Problems) {
    let j = format::CASEVAULT_JSON;
    if json.case_id != p.case_id {
        problems.tag(
            j,
            format!(
                "casevault.json names case {:?}, the bag is {:?}",
                json.case_id, p.case_id
            ),
        );
    }
    if json.compression != p.compression {
        problems.tag(
            j,
            format!(
                "casevault.json says compression {}, the payload is {}",
                json.compression.as_str(),
                p.compression.as_str()
            ),
        );
    }
    match json.entries.first() {
        Some(e) if e.path == "data" && e.kind == Kind::Dir => {}
        _ => problems.tag(
            j,
            "casevault.json: the first entry must be the data directory".into(),
        ),
    }
}

/// Each `casevault.json` entry against the payload, then the totals.
/// Returns the entries by path.
fn check_json_entries<'j>(
    json: &'j CaseJson,
    p: &Payload,
    problems: &mut Problems,
) -> HashMap<&'j str, &'j Entry> {
    let (mut n_files, mut n_dirs, mut n_links, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    use std::collections::hash_map::Entry::{Occupied, Vacant};
    let mut tree: HashMap<&str, &Entry> = HashMap::new();
    for e in &json.entries {
        match tree.entry(e.path.as_str()) {
            Occupied(_) => {
                problems.tag(
                    format::CASEVAULT_JSON,
                    format!("casevault.json: duplicate entry {:?}", e.path),
                );
                continue;
            }
            Vacant(v) => v.insert(e),
        };
        if !entry_well_formed(e, problems) {
            continue;
        }
        match e.kind {
            Kind::File => {
                n_files += 1;
                bytes = bytes.saturating_add(e.size.unwrap_or(0));
                check_file_entry(e, p.files, problems);
            }
            Kind::Dir => {
                n_dirs += 1;
                if !p.dirs.contains(&e.path) {
                    problems.push(Finding::Missing {
                        path: e.path.clone(),
                        listed_in: Listing::CaseJson,
                        dir: true,
                    });
                }
            }
            Kind::Symlink => {
                n_links += 1;
                check_symlink_entry(e, p, problems);
            }
        }
    }
    let t = &json.totals;
    if (t.files, t.dirs, t.symlinks, t.bytes) != (n_files, n_dirs, n_links, bytes) {
        problems.tag(
            format::CASEVAULT_JSON,
            "casevault.json totals do not match its entries".into(),
        );
    }
    tree
}

/// Whether entry `e` has the fields its kind needs and in-range values.
fn entry_well_formed(e: &Entry, problems: &mut Problems) -> bool {
    if fields_well_formed(e) {
        return true;
    }
    problems.tag(
        format::CASEVAULT_JSON,
        format!("casevault.json: malformed entry {:?}", e.path),
    );
    false
}

/// Whether entry `e` has exactly the fields its kind needs and in-range
/// values (FORMAT §5.4). An mtime outside the years 0000 to 9999 is not
/// written by seal but is not damage either: a vault an older casevault
/// sealed from a filesystem that held one must still open (unseal reports
/// what the filesystem could not store).
pub(super) fn fields_well_formed(e: &Entry) -> bool {
    let fields_ok = match e.kind {
        Kind::File => e.size.is_some() && e.sha256.is_some() && e.target.is_none(),
        Kind::Dir | Kind::Symlink => {
            e.size.is_none()
                && e.sha256.is_none()
                && (e.kind == Kind::Symlink) == e.target.is_some()
        }
    };
    fields_ok && e.mtime_nsec < 1_000_000_000 && e.mode <= 0o7777
}

/// A file entry against the payload file of its path.
fn check_file_entry(e: &Entry, files: &Files, problems: &mut Problems) {
    let size = e.size.unwrap_or(0);
    let Some((s, h, _)) = files.get(&e.path) else {
        problems.push(Finding::Missing {
            path: e.path.clone(),
            listed_in: Listing::CaseJson,
            dir: false,
        });
        return;
    };
    if *s != size {
        problems.push(Finding::SizeMismatch {
            path: e.path.clone(),
            expected: size,
            actual: *s,
        });
    }
    if Some(h) != e.sha256.as_ref() {
        problems.push(Finding::HashMismatch {
            path: e.path.clone(),
            expected: e.sha256.clone().unwrap_or_default(),
            actual: h.clone(),
            against: Listing::CaseJson,
        });
    }
}

/// A symlink entry: a safe path inside a payload directory, colliding
/// with nothing, with a valid target.
fn check_symlink_entry(e: &Entry, p: &Payload, problems: &mut Problems) {
    let ok_path = e
        .path
        .strip_prefix("data/")
        .is_some_and(|r| check_components(r).is_ok());
    let parent = e.path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    let j = format::CASEVAULT_JSON;
    if !ok_path || e.path.len() > format::MAX_PATH_BYTES {
        problems.tag(j, format!("unsafe symlink path {:?}", e.path));
    } else if !p.dirs.contains(parent) {
        problems.tag(
            j,
            format!(
                "symlink {:?} is not inside a directory of the payload",
                e.path
            ),
        );
    } else if p.dirs.contains(&e.path) || p.files.contains_key(&e.path) {
        problems.tag(
            j,
            format!("symlink {:?} collides with a payload entry", e.path),
        );
    }
    let t = e.target.as_deref().unwrap_or("");
    if t.is_empty() || t.contains('\0') || t.len() > format::MAX_PATH_BYTES {
        problems.tag(j, format!("symlink {:?} has an invalid target", e.path));
    }
}

/// Every payload file and directory must be in `casevault.json`.
fn check_payload_listed(p: &Payload, tree: &HashMap<&str, &Entry>, problems: &mut Problems) {
    for f in payload_order(p.files) {
        if tree.get(f.as_str()).is_none_or(|e| e.kind != Kind::File) {
            problems.push(Finding::Unexpected {
                path: f.clone(),
                not_in: Listing::CaseJson,
                dir: false,
            });
        }
    }
    for d in p.dirs {
        if tree.get(d.as_str()).is_none_or(|e| e.kind != Kind::Dir) {
            problems.push(Finding::Unexpected {
                path: d.clone(),
                not_in: Listing::CaseJson,
                dir: true,
            });
        }
    }
}

/// `bag-info.txt`'s Payload-Oxum and External-Identifier.
fn check_bag_info(info: &format::BagInfo, p: &Payload, problems: &mut Problems) {
    let payload_bytes: u64 = p.files.values().map(|(s, _, _)| *s).sum();
    if (info.oxum_bytes, info.oxum_files) != (payload_bytes, p.files.len() as u64) {
        problems.tag(
            format::BAG_INFO_TXT,
            format!(
                "bag-info.txt Payload-Oxum {}.{} does not match the payload {}.{}",
                info.oxum_bytes,
                info.oxum_files,
                payload_bytes,
                p.files.len()
            ),
        );
    }
    if info.external_identifier != p.case_id {
        problems.tag(
            format::BAG_INFO_TXT,
            format!(
                "bag-info.txt External-Identifier {:?} is not the case id",
                info.external_identifier
            ),
        );
    }
}

/// The streamed check of `manifest-sha256.txt`: what has been seen so far.
struct ManifestCheck<'f> {
    files: &'f Files,
    /// Lines read, and the first reason the manifest does not parse.
    n: usize,
    not_utf8: bool,
    first_err: Option<Error>,
    /// Payload files listed so far (borrowed), and a digest of each listed
    /// path the payload does not hold, to find duplicates.
    listed: HashSet<&'f str>,
    strangers: HashSet<[u8; 16]>,
    problems: Problems,
}

impl<'f> ManifestCheck<'f> {
    /// One line's body (without its line feed).
    fn line(&mut self, body: &[u8]) -> Result<()> {
        let name = format::MANIFEST;
        let n = self.n;
        if body.len() > manifest::MAX_LINE {
            self.first_err.get_or_insert_with(|| {
                Error::integrity(format!(
                    "{name} line {n}: longer than {} bytes",
                    manifest::MAX_LINE
                ))
            });
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(body) else {
            self.not_utf8 = true;
            return Ok(());
        };
        if self.first_err.is_some() || self.not_utf8 {
            return Ok(());
        }
        match manifest::parse_line(name, n, text) {
            Ok((path, hash)) => self.entry(path, hash),
            Err(e) => {
                self.first_err = Some(e);
                Ok(())
            }
        }
    }

    /// One parsed line: a payload file (once), or a stranger.
    fn entry(&mut self, path: String, hash: &str) -> Result<()> {
        let name = format::MANIFEST;
        let n = self.n;
        let dup = || Error::integrity(format!("{name} line {n}: duplicate path"));
        match self.files.get_key_value(&path) {
            Some((key, (_, actual, _))) => {
                if !self.listed.insert(key.as_str()) {
                    self.first_err = Some(dup());
                } else if *actual != hash {
                    self.problems.push(Finding::HashMismatch {
                        path,
                        expected: hash.to_string(),
                        actual: actual.clone(),
                        against: Listing::Manifest,
                    });
                }
            }
            None => {
                let d = Sha256::digest(path.as_bytes());
                let mut key = [0u8; 16];
                key.copy_from_slice(&d[..16]);
                if !self.strangers.insert(key) {
                    self.first_err = Some(dup());
                } else if self.strangers.len() > MAX_PROBLEMS {
                    return Err(Error::integrity(format!(
                        "{name} lists more than {MAX_PROBLEMS} files that are not in the payload"
                    )));
                } else {
                    self.problems.push(Finding::Missing {
                        path,
                        listed_in: Listing::Manifest,
                        dir: false,
                    });
                }
            }
        }
        Ok(())
    }

    /// The outcome once the manifest ended; `last` is its last byte.
    fn finish(mut self, last: Option<u8>) -> Result<Vec<Finding>> {
        if self.not_utf8 {
            return Err(Error::integrity("manifest is not UTF-8"));
        }
        if last.is_some_and(|b| b != b'\n') {
            return Err(Error::integrity(format!(
                "{} does not end with a line feed",
                format::MANIFEST
            )));
        }
        if let Some(e) = self.first_err {
            return Err(e);
        }
        for p in payload_order(self.files) {
            if !self.listed.contains(p.as_str()) {
                self.problems.push(Finding::Unexpected {
                    path: p.clone(),
                    not_in: Listing::Manifest,
                    dir: false,
                });
            }
        }
        Ok(self.problems.take())
    }
}

/// Check `manifest-sha256.txt` line by line against the payload as it
/// streams (issue #10 item 11), keeping no line: the same rules and
/// messages as [`manifest::parse`] and the old whole-file comparison.
/// `Err` stops the reader at once (a stream error, or more than
/// [`MAX_PROBLEMS`] lines naming files the payload does not hold);
/// `Ok(Err)` is a manifest that does not parse, reported after the tag
/// manifest; `Ok(Ok)` lists its disagreements with the payload.
pub(super) fn stream_manifest<R: io::BufRead>(
    r: &mut R,
    files: &Files,
    stream_err: &dyn Fn(&str, io::Error) -> Error,
) -> Result<Result<Vec<Finding>>> {
    let read_err = |e| stream_err("reading the tar stream", e);
    let mut check = ManifestCheck {
        files,
        n: 0,
        not_utf8: false,
        first_err: None,
        listed: HashSet::new(),
        strangers: HashSet::new(),
        problems: Problems::default(),
    };
    let mut line = Vec::new();
    let mut last = None::<u8>;
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
        check.n += 1;
        last = line.last().copied();
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        check.line(body)?;
        if body.len() > manifest::MAX_LINE {
            last = skip_line(r, last).map_err(read_err)?;
        }
    }
    Ok(check.finish(last))
}

/// Skip the rest of a line whose first part ended in `last`; returns the
/// last byte read.
fn skip_line<R: io::BufRead>(r: &mut R, mut last: Option<u8>) -> io::Result<Option<u8>> {
    let mut line = Vec::new();
    while last != Some(b'\n') {
        line.clear();
        if r.by_ref()
            .take(BUF_SIZE as u64)
            .read_until(b'\n', &mut line)?
            == 0
        {
            break;
        }
        last = line.last().copied();
    }
    Ok(last)
}

/// The bag checks of a version 3 vault read in lockstep (FORMAT §6 step 4,
/// `src/read/lockstep.rs`): `casevault.json` and the manifest were checked
/// against each other from the end of the vault; here the tag files as
/// streamed must be those the tag manifest lists, and the payload's case
/// id, compression and counts must match. `findings` are the payload's
/// disagreements found on the way.
pub(super) fn check_streamed_v3(
    tags: &Tags,
    streamed: &Streamed,
    json: &CaseJson,
    case_id: &str,
    compression: Compression,
    (files, bytes): (u64, u64),
    findings: Vec<Finding>,
) -> Result<()> {
    let mut problems = Problems::default();
    check_tagmanifest(tags, streamed, &mut problems)?;
    problems.result()?;
    for f in findings {
        problems.push(f);
    }
    let info_text = std::str::from_utf8(tags.info)
        .map_err(|_| Error::integrity("bag-info.txt is not UTF-8"))?;
    let info = format::parse_bag_info(info_text)?;
    let j = format::CASEVAULT_JSON;
    if json.case_id != case_id {
        problems.tag(
            j,
            format!(
                "casevault.json names case {:?}, the bag is {:?}",
                json.case_id, case_id
            ),
        );
    }
    if json.compression != compression {
        problems.tag(
            j,
            format!(
                "casevault.json says compression {}, the payload is {}",
                json.compression.as_str(),
                compression.as_str()
            ),
        );
    }
    if (info.oxum_bytes, info.oxum_files) != (bytes, files) {
        problems.tag(
            format::BAG_INFO_TXT,
            format!(
                "bag-info.txt Payload-Oxum {}.{} does not match the payload {bytes}.{files}",
                info.oxum_bytes, info.oxum_files
            ),
        );
    }
    if info.external_identifier != case_id {
        problems.tag(
            format::BAG_INFO_TXT,
            format!(
                "bag-info.txt External-Identifier {:?} is not the case id",
                info.external_identifier
            ),
        );
    }
    problems.result()
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .map(|v| v.iter().map(|f| f.to_string()).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        let ok = format!("{h}  data/x\n{h}  data/y\n");
        assert_eq!(run(&ok), Ok(vec![]));
        assert_eq!(
            run(&format!("{g}  data/x\n{h}  data/z\n")),
            Ok(vec![
                format!("data/x: SHA-256 mismatch (manifest {g}, payload {h})"),
                "data/z: listed in the manifest but not in the payload".to_string(),
                "data/y: in the payload but not in the manifest".to_string(),
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

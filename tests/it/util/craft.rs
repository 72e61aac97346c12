//! Crafting vaults that casevault would never write: the one toolkit the
//! hostile tests, the vector generator and the other tests share.
//!
//! A [`Bag`] is a vault's tar members in order (case dir, `data/`, payload,
//! the five tag files) as [`RawEntry`]s, taken from a sealed vault
//! ([`Bag::open`]) or built from a [`Recipe`]. Edit its entries or tag files
//! (the tag manifest can be recomputed, so that only the intended change
//! counts), then turn it into an age plaintext or a vault. [`TarStream`]
//! writes a crafted tar straight into a writer, for plaintexts too large
//! to hold; [`zstd_frame`] makes tiny zstd frames that expand a lot.

use std::fs;
use std::path::{Path, PathBuf};

use casevault::format::{CaseJson, Compression, Entry, Kind, Totals};
use casevault::manifest;

use super::{
    build_tar, decrypt_vault, encrypt_to, parse_tar, pax_record, plaintext_tar, sha256_hex, Fx,
    Key, RawEntry, ZSTD_MAGIC,
};

/// The tag files that the tag manifest covers, in archive order; the tag
/// manifest itself follows them.
pub const TAGGED: [&str; 4] = [
    "bagit.txt",
    "bag-info.txt",
    "casevault.json",
    "manifest-sha256.txt",
];

/// mtime of every entry a [`Recipe`] makes.
pub const RECIPE_MTIME: u64 = 1_600_000_000;

/// A vault's tar members, editable.
#[derive(Clone)]
pub struct Bag {
    /// The case id: the archive's top directory.
    pub case: String,
    pub entries: Vec<RawEntry>,
    /// zstd level for the age plaintext; `None` for a raw tar.
    pub zstd: Option<i32>,
}

impl Bag {
    /// Decrypt a sealed vault with `key` and take its tar apart. Only zero
    /// padding may follow the archive. A compressed vault is compressed
    /// again at level 3.
    pub fn open(vault: &Path, key: &Key) -> Bag {
        let plain = decrypt_vault(vault, key);
        let compressed = plain.starts_with(&ZSTD_MAGIC);
        let (entries, trailing) = parse_tar(&plaintext_tar(&plain));
        assert!(trailing.iter().all(|&b| b == 0));
        let case = entries[0].path().trim_end_matches('/').to_string();
        Bag {
            case,
            entries,
            zstd: compressed.then_some(3),
        }
    }

    /// A consistent bag for a recipe, its tag files made by hand (zstd at
    /// level 19, so that checked-in vectors stay small).
    pub fn from_recipe(r: &Recipe, compression: Compression) -> Bag {
        let case = &r.case;
        let mut entries = vec![
            tar_entry(&format!("{case}/"), b'5', vec![]),
            tar_entry(&format!("{case}/data/"), b'5', vec![]),
        ];
        for (path, data) in &r.items {
            entries.push(match data {
                None => tar_entry(&format!("{case}/{path}/"), b'5', vec![]),
                Some(d) => tar_entry(&format!("{case}/{path}"), b'0', d.clone()),
            });
        }
        let (info, json, manifest) = recipe_tags(r, compression);
        for (name, data) in [
            (
                "bagit.txt",
                b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n".to_vec(),
            ),
            ("bag-info.txt", info),
            ("casevault.json", json),
            ("manifest-sha256.txt", manifest),
            ("tagmanifest-sha256.txt", vec![]),
        ] {
            entries.push(tar_entry(&format!("{case}/{name}"), b'0', data));
        }
        let mut bag = Bag {
            case: case.clone(),
            entries,
            zstd: match compression {
                Compression::Zstd => Some(19),
                Compression::None => None,
            },
        };
        bag.fix_tagmanifest();
        bag
    }

    /// [`Bag::from_recipe`] as format version 3 (FORMAT §13): entry
    /// offsets, the locator, exact end, seekable zstd frames. Settled: the
    /// offsets and locator are right.
    pub fn from_recipe_v3(r: &Recipe, compression: Compression) -> Bag {
        let mut bag = Bag::from_recipe(r, compression);
        bag.edit_json(|j| {
            j["version"] = 3.into();
            let list = j["entries"].as_array_mut().unwrap();
            for e in list.iter_mut() {
                if e["kind"] != "symlink" {
                    e["offset"] = 0.into();
                }
            }
            // Symlink records in their sorted place (FORMAT §3, §13.3).
            let key = |e: &serde_json::Value| {
                let p = e["path"].as_str().unwrap().to_string();
                p.split('/')
                    .map(|c| c.as_bytes().to_vec())
                    .collect::<Vec<_>>()
            };
            list.sort_by_key(key);
        });
        let at = bag.idx(&format!("{}/tagmanifest-sha256.txt", bag.case));
        bag.entries.insert(
            at,
            tar_entry(&format!("{}/casevault-locator.txt", bag.case), b'0', vec![]),
        );
        bag.settle_v3();
        bag
    }

    /// Make a version 3 bag consistent again after an edit: offsets,
    /// locator, tag manifest.
    pub fn settle_v3(&mut self) {
        self.fix_tagmanifest();
        crate::util::v3_fixup(&mut self.entries);
        self.fix_tagmanifest();
        crate::util::v3_fixup(&mut self.entries);
    }

    /// The age plaintext of the entries exactly as they are (no version 3
    /// fixup: offsets, locator and tag manifest may lie).
    pub fn plaintext_as_is(&self) -> Vec<u8> {
        let v3 = self
            .entries
            .iter()
            .any(|e| e.header.path_bytes().ends_with(b"/casevault-locator.txt"));
        let tar = crate::util::build_tar_as_is(&self.entries, v3);
        match self.zstd {
            Some(level) if v3 => seekable_zstd(&tar, level),
            Some(level) => zstd::encode_all(&tar[..], level).unwrap(),
            None => tar,
        }
    }

    /// Index of the entry whose path is `path` (the full archive path).
    pub fn idx(&self, path: &str) -> usize {
        self.entries
            .iter()
            .position(|e| e.path() == path)
            .unwrap_or_else(|| panic!("no entry {path}"))
    }

    /// Index of the first tag file (= one past the last payload entry).
    pub fn first_tag(&self) -> usize {
        self.idx(&format!("{}/bagit.txt", self.case))
    }

    /// Insert `e` right before `bagit.txt` (the end of the payload).
    pub fn insert_payload(&mut self, e: RawEntry) {
        let at = self.first_tag();
        self.entries.insert(at, e);
    }

    /// The age plaintext with `e` inserted at the end of the payload (the
    /// bag itself is left as it is).
    pub fn with_payload(&self, e: RawEntry) -> Vec<u8> {
        let at = self.first_tag();
        self.with_entries(|v| v.insert(at, e))
    }

    /// The bytes of tag file `name`.
    pub fn tag(&self, name: &str) -> Vec<u8> {
        self.entries[self.idx(&format!("{}/{name}", self.case))]
            .data
            .clone()
    }

    /// Replace tag file `name` (the tag manifest is left as it is).
    pub fn set_tag(&mut self, name: &str, data: Vec<u8>) {
        let i = self.idx(&format!("{}/{name}", self.case));
        self.entries[i].set_data(data);
    }

    /// Edit tag file `name` as text and recompute the tag manifest.
    pub fn edit_tag(&mut self, name: &str, f: impl FnOnce(String) -> String) {
        let text = String::from_utf8(self.tag(name)).unwrap();
        self.set_tag(name, f(text).into_bytes());
        self.fix_tagmanifest();
    }

    /// Recompute tagmanifest-sha256.txt from the current tag files.
    pub fn fix_tagmanifest(&mut self) {
        let mut tm = String::new();
        let has = |name: &str| {
            self.entries
                .iter()
                .any(|e| e.path() == format!("{}/{name}", self.case))
        };
        for t in TAGGED {
            if t == "manifest-sha256.txt" && has("casevault.sig") {
                let sig = "casevault.sig";
                tm.push_str(&manifest::line(&sha256_hex(&self.tag(sig)), sig));
            }
            tm.push_str(&manifest::line(&sha256_hex(&self.tag(t)), t));
        }
        // Version 3: the locator's line (its hash is set when the tar is
        // built, crate::util::v3_fixup).
        if has("casevault-locator.txt") {
            let l = "casevault-locator.txt";
            tm.push_str(&manifest::line(&sha256_hex(&self.tag(l)), l));
        }
        self.set_tag("tagmanifest-sha256.txt", tm.into_bytes());
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.tag("casevault.json")).unwrap()
    }

    /// Write `v` as casevault.json (one line) and recompute the tag manifest.
    pub fn set_json(&mut self, v: &serde_json::Value) {
        let mut s = serde_json::to_string(v).unwrap();
        s.push('\n');
        self.set_tag("casevault.json", s.into_bytes());
        self.fix_tagmanifest();
    }

    /// Edit casevault.json and recompute the tag manifest.
    pub fn edit_json(&mut self, f: impl FnOnce(&mut serde_json::Value)) {
        let mut v = self.json();
        f(&mut v);
        self.set_json(&v);
    }

    /// The `casevault.json` record of bag path `path` (`data/…`).
    pub fn json_entry<'a>(j: &'a mut serde_json::Value, path: &str) -> &'a mut serde_json::Value {
        j["entries"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("no casevault.json record {path}"))
    }

    /// The first symlink record of `casevault.json`.
    pub fn json_symlink(j: &mut serde_json::Value) -> &mut serde_json::Value {
        j["entries"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| e["kind"] == "symlink")
            .expect("the bag has a symlink record")
    }

    /// The tar stream: the entries, end-of-archive blocks, record padding.
    pub fn tar(&self) -> Vec<u8> {
        build_tar(&self.entries)
    }

    /// The age plaintext for `tar` (zstd-compressed if the bag is).
    pub fn plaintext_of(&self, tar: Vec<u8>) -> Vec<u8> {
        let v3 = self
            .entries
            .iter()
            .any(|e| e.header.path_bytes().ends_with(b"/casevault-locator.txt"));
        match self.zstd {
            Some(level) if v3 => seekable_zstd(&tar, level),
            Some(level) => zstd::encode_all(&tar[..], level).unwrap(),
            None => tar,
        }
    }

    pub fn plaintext(&self) -> Vec<u8> {
        self.plaintext_of(self.tar())
    }

    /// The age plaintext after `f` edited a copy of the entries.
    pub fn with_entries(&self, f: impl FnOnce(&mut Vec<RawEntry>)) -> Vec<u8> {
        let mut e = self.entries.clone();
        f(&mut e);
        self.plaintext_of(build_tar(&e))
    }

    /// Encrypt to the fixture key and write `out/NAME`.
    pub fn write(&self, fx: &Fx, name: &str) -> PathBuf {
        write_vault(fx, name, &self.plaintext())
    }
}

/// Encrypt an age plaintext to the fixture key and write `out/NAME`.
pub fn write_vault(fx: &Fx, name: &str, plain: &[u8]) -> PathBuf {
    let v = fx.vault(name);
    fs::write(&v, encrypt_to(&fx.key.recipient, plain, false)).unwrap();
    v
}

/// A payload to build a [`Bag`] from: bag paths (`data/…`) in archive
/// order with file bytes (`None` for a directory), plus symlink records.
#[derive(Clone)]
pub struct Recipe {
    pub case: String,
    pub items: Vec<(String, Option<Vec<u8>>)>,
    pub links: Vec<(String, String)>,
}

impl Recipe {
    pub fn new(case: &str) -> Recipe {
        Recipe {
            case: case.into(),
            items: vec![],
            links: vec![],
        }
    }

    pub fn file(mut self, path: &str, data: &[u8]) -> Recipe {
        self.items.push((path.into(), Some(data.to_vec())));
        self
    }

    pub fn dir(mut self, path: &str) -> Recipe {
        self.items.push((path.into(), None));
        self
    }

    pub fn link(mut self, path: &str, target: &str) -> Recipe {
        self.links.push((path.into(), target.into()));
        self
    }
}

/// bag-info.txt, casevault.json and manifest-sha256.txt for a recipe.
fn recipe_tags(r: &Recipe, compression: Compression) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let entry = |path: &str, kind, mode| Entry {
        path: path.into(),
        kind,
        size: None,
        sha256: None,
        target: None,
        mode,
        mtime: RECIPE_MTIME as i64,
        mtime_nsec: 0,
        offset: None,
    };
    let mut entries = vec![entry("data", Kind::Dir, 0o755)];
    let (mut files, mut dirs, mut bytes) = (0, 1, 0);
    let mut manifest = String::new();
    for (path, data) in &r.items {
        match data {
            None => {
                dirs += 1;
                entries.push(entry(path, Kind::Dir, 0o755));
            }
            Some(d) => {
                files += 1;
                bytes += d.len() as u64;
                let h = sha256_hex(d);
                manifest.push_str(&manifest::line(&h, path));
                entries.push(Entry {
                    size: Some(d.len() as u64),
                    sha256: Some(h),
                    ..entry(path, Kind::File, 0o644)
                });
            }
        }
    }
    for (path, target) in &r.links {
        entries.push(Entry {
            target: Some(target.clone()),
            ..entry(path, Kind::Symlink, 0o777)
        });
    }
    let case = &r.case;
    let json = CaseJson {
        format: "casevault".into(),
        version: 1,
        case_id: case.clone(),
        sealed_at: "2026-01-01T00:00:00Z".into(),
        tool: "casevault-vector-generator".into(),
        compression,
        entries,
        totals: Totals {
            files,
            dirs,
            symlinks: r.links.len() as u64,
            bytes,
        },
        signer: None,
    };
    let info = format!(
        "Bagging-Date: 2026-01-01\nPayload-Oxum: {bytes}.{files}\n\
         External-Identifier: {case}\nBag-Software-Agent: casevault-vector-generator\n"
    );
    (
        info.into_bytes(),
        (serde_json::to_string(&json).unwrap() + "\n").into_bytes(),
        manifest.into_bytes(),
    )
}

/// A tar entry for `path`, with a pax `path` record when it does not fit
/// the 100-byte ustar name field (the ustar name is then
/// `CASE/data/PaxShortName`, CASE being the first component).
pub fn tar_entry(path: &str, typeflag: u8, data: Vec<u8>) -> RawEntry {
    if path.len() <= 100 {
        return RawEntry::new_raw(path.as_bytes(), typeflag, data, b"");
    }
    let case = path.split('/').next().unwrap();
    let short = format!("{case}/data/PaxShortName");
    let mut e = RawEntry::new_raw(short.as_bytes(), typeflag, data, b"");
    e.pax = Some(pax_header(case, &pax_record("path", path)));
    e
}

/// A pax extended header (type `x`, named `CASE/PaxHeader`) holding
/// `records` verbatim.
pub fn pax_header(case: &str, records: &str) -> (tar::Header, Vec<u8>) {
    let name = format!("{case}/PaxHeader");
    let px = RawEntry::new_raw(name.as_bytes(), b'x', records.as_bytes().to_vec(), b"");
    (px.header, px.data)
}

/// Writes a crafted tar straight into a writer (e.g. zstd inside age), so
/// that tests can make vaults whose plaintext is far larger than they want
/// to hold.
pub struct TarStream<W: std::io::Write> {
    pub w: W,
}

impl<W: std::io::Write> TarStream<W> {
    /// A header for `path` of `size` bytes (with a pax `path` record when
    /// it is long); the caller writes the data and the padding.
    pub fn header(&mut self, path: &str, typeflag: u8, size: u64) {
        let mut e = tar_entry(path, typeflag, vec![]);
        if let Some((h, d)) = &e.pax {
            self.data(h.as_bytes());
            self.data(d);
            self.pad(d.len() as u64);
        }
        e.header.set_size(size);
        e.header.set_cksum();
        self.data(e.header.as_bytes());
    }

    pub fn data(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// Zero padding after `size` bytes of data, to the next 512-byte block.
    pub fn pad(&mut self, size: u64) {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.w.write_all(&vec![0u8; 512 - rem]).unwrap();
        }
    }

    /// A regular file whose content `gen` writes (twice: once to size and
    /// hash it, once into the archive); returns its SHA-256.
    pub fn file_from(&mut self, path: &str, gen: &dyn Fn(&mut dyn std::io::Write)) -> String {
        use sha2::Digest;
        struct Sizer(sha2::Sha256, u64);
        impl std::io::Write for Sizer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.update(b);
                self.1 += b.len() as u64;
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut s = Sizer(sha2::Sha256::new(), 0);
        gen(&mut s);
        let size = s.1;
        self.header(path, b'0', size);
        gen(&mut self.w);
        self.pad(size);
        s.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A zstd frame (RFC 8878) built by hand: `prefix` as a raw block, then
/// `zeros` zero bytes as RLE blocks of 128 KiB (4 bytes each), so that a
/// few KiB decode to hundreds of MiB.
pub fn zstd_rle_frame(prefix: &[u8], zeros: usize) -> Vec<u8> {
    zstd_frame(prefix, zeros, &[])
}

/// [`zstd_rle_frame`] followed by `suffix` as a last raw block (at most
/// 128 KiB).
pub fn zstd_frame(prefix: &[u8], zeros: usize, suffix: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 128 * 1024;
    let mut f = ZSTD_MAGIC.to_vec();
    f.push(0x00); // no content size, no checksum, not single-segment
    f.push(7 << 3); // window 2^(10+7) = 128 KiB
    let header = |last: bool, ty: u32, size: usize| {
        let v = (last as u32) | (ty << 1) | ((size as u32) << 3);
        [v as u8, (v >> 8) as u8, (v >> 16) as u8]
    };
    let mut left = zeros;
    f.extend_from_slice(&header(left == 0 && suffix.is_empty(), 0, prefix.len()));
    f.extend_from_slice(prefix);
    while left > 0 {
        let n = left.min(BLOCK);
        left -= n;
        f.extend_from_slice(&header(left == 0 && suffix.is_empty(), 1, n));
        f.push(0);
    }
    if !suffix.is_empty() {
        f.extend_from_slice(&header(true, 0, suffix.len()));
        f.extend_from_slice(suffix);
    }
    f
}

/// Headers only (no data) for `(path, typeflag, size)` members: the start
/// of a tar whose data a [`zstd_rle_frame`] supplies.
pub fn headers_only(members: &[(&str, u8, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(name, flag, len) in members {
        let mut e = RawEntry::new_raw(name.as_bytes(), flag, vec![], b"");
        e.header.set_size(len);
        e.header.set_cksum();
        out.extend_from_slice(e.header.as_bytes());
    }
    out
}

/// `data` as version 3 writes it (FORMAT §13.1 item 5), made here from the
/// zstd seekable format's description: independent 1 MiB frames that
/// declare their size, then the seek table (skippable frame, no checksums).
pub fn seekable_zstd(data: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut table = Vec::new();
    let mut n = 0u32;
    for chunk in data.chunks(1 << 20) {
        let mut c = zstd::bulk::Compressor::new(level).unwrap();
        c.include_contentsize(true).unwrap();
        c.include_checksum(true).unwrap();
        let z = c.compress(chunk).unwrap();
        table.extend_from_slice(&(z.len() as u32).to_le_bytes());
        table.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(&z);
        n += 1;
    }
    out.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
    out.extend_from_slice(&(table.len() as u32 + 9).to_le_bytes());
    out.extend_from_slice(&table);
    out.extend_from_slice(&n.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&0x8F92_EAB1u32.to_le_bytes());
    out
}

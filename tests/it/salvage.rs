//! `casevault salvage` (issue #16, FORMAT §14): what a damaged vault still
//! gives back. Damage is placed by age chunk; which entries it must cost
//! is computed here from the vault's bytes (age crate, the seek table, the
//! tar headers and casevault.json), never taken from the tool.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::unpriv::Unprivileged;
use crate::util::*;

/// Plaintext bytes in one age chunk.
const CHUNK: u64 = 65536;

/// A case of a few MiB: big incompressible files that span several 1 MiB
/// zstd frames and 64 KiB chunks, many small files, links, odd modes.
fn case(fx: &Fx, name: &str) -> CaseTree {
    let c = CaseTree::new(fx.cases().join(name));
    c.file("a-big.bin", &seeded_bytes(1, 3 * 1024 * 1024 + 777));
    for d in 0..6 {
        for f in 0..40 {
            let len = 200 + (d * 40 + f) * 37 % 3000;
            c.file(
                &format!("dir{d}/f{f:03}.txt"),
                &seeded_bytes(100 + (d * 40 + f) as u64, len),
            );
        }
    }
    c.file("m-mid.bin", &seeded_bytes(2, 1536 * 1024 + 5));
    c.file("empty.txt", b"");
    c.file("z-last.csv", &"a,b,c\n".repeat(20_000).into_bytes());
    c.symlink("dir1/to-big", "../a-big.bin");
    c.symlink("dir2/dangling", "nowhere/at/all");
    c.mode("dir3", 0o750);
    c.mode("dir3/f001.txt", 0o600);
    c.stamp_times(1_650_000_000);
    c
}

/// The layout of a vault, found from its bytes independently of casevault.
struct Geometry {
    /// Ciphertext bytes before the 16-byte payload nonce.
    header_len: u64,
    plain_len: u64,
    /// zstd frames: plaintext start and length, tar start and length
    /// (empty for an uncompressed vault, whose plaintext is the tar).
    frames: Vec<(u64, u64, u64, u64)>,
    /// Payload regular files (case-relative): the tar bytes of their
    /// header(s) and data, `[first header, end of data)`.
    files: BTreeMap<String, (u64, u64)>,
    /// Tar offset of `casevault.json`'s header and its data's end.
    json: (u64, u64),
    dirs: usize,
    links: usize,
}

/// Bytes of a binary vault's age header (up to and including the MAC
/// line); the 16-byte payload nonce follows.
fn age_header_len(bytes: &[u8]) -> usize {
    let mac = bytes.windows(5).position(|w| w == b"\n--- ").unwrap() + 1;
    bytes[mac..].iter().position(|&b| b == b'\n').unwrap() + mac + 1
}

fn geometry(vault: &Path, key: &Key) -> Geometry {
    let bytes = fs::read(vault).unwrap();
    let header_len = age_header_len(&bytes) as u64;
    let plain = decrypt_vault(vault, key);
    let mut frames = Vec::new();
    if plain.starts_with(&ZSTD_MAGIC) {
        // The seek table (zstd seekable format): footer, then entries.
        let n = plain.len();
        let count = u32::from_le_bytes(plain[n - 9..n - 5].try_into().unwrap()) as usize;
        let first = n - 9 - 8 * count;
        let (mut c, mut d) = (0u64, 0u64);
        for i in 0..count {
            let e = &plain[first + 8 * i..first + 8 * i + 8];
            let cs = u64::from(u32::from_le_bytes(e[0..4].try_into().unwrap()));
            let ds = u64::from(u32::from_le_bytes(e[4..8].try_into().unwrap()));
            frames.push((c, cs, d, ds));
            c += cs;
            d += ds;
        }
    }
    let tar = plaintext_tar(&plain);
    let mut offsets = BTreeMap::new();
    let mut json_bytes = Vec::new();
    let mut json = (0, 0);
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let end = e.raw_file_position() + e.size();
        let start = e.raw_header_position();
        if p.ends_with("/casevault.json") {
            json = (start, end);
            std::io::Read::read_to_end(&mut e, &mut json_bytes).unwrap();
        }
        offsets.insert(p.split_once('/').unwrap().1.to_string(), end);
    }
    let j: serde_json::Value = serde_json::from_slice(&json_bytes).unwrap();
    let mut files = BTreeMap::new();
    let (mut dirs, mut links) = (0, 0);
    for e in j["entries"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap();
        match e["kind"].as_str().unwrap() {
            "file" => {
                let start = e["offset"].as_u64().unwrap();
                let rel = path.strip_prefix("data/").unwrap().to_string();
                files.insert(rel, (start, offsets[path]));
            }
            "dir" => dirs += 1,
            _ => links += 1,
        }
    }
    Geometry {
        header_len,
        plain_len: plain.len() as u64,
        frames,
        files,
        json,
        dirs,
        links,
    }
}

impl Geometry {
    /// Number of age chunks.
    fn chunks(&self) -> u64 {
        self.plain_len.div_ceil(CHUNK)
    }

    /// Tar byte ranges that damage to age chunk `k` makes unreadable: the
    /// zstd frames whose compressed bytes touch it, or the chunk itself.
    fn damaged_tar(&self, k: u64) -> Vec<(u64, u64)> {
        let (lo, hi) = (k * CHUNK, ((k + 1) * CHUNK).min(self.plain_len));
        if self.frames.is_empty() {
            return vec![(lo, hi)];
        }
        self.frames
            .iter()
            .filter(|(c, cs, _, _)| *c < hi && c + cs > lo)
            .map(|(_, _, d, ds)| (*d, d + ds))
            .collect()
    }

    /// The files whose header or data touch `ranges`.
    fn files_in(&self, ranges: &[(u64, u64)]) -> BTreeSet<String> {
        self.files
            .iter()
            .filter(|(_, (s, e))| ranges.iter().any(|(a, b)| s < b && e > a))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The age chunk holding plaintext byte `off`.
    fn chunk_of_plain(&self, off: u64) -> u64 {
        off / CHUNK
    }

    /// The plaintext offset of tar offset `off` (the start of its frame).
    fn plain_of_tar(&self, off: u64) -> u64 {
        match self
            .frames
            .iter()
            .find(|(_, _, d, ds)| *d <= off && off < d + ds)
        {
            Some((c, _, _, _)) => *c,
            None => off,
        }
    }
}

/// A copy of `clean` named `name` with one byte of age chunk `k` flipped
/// (at `at` inside its ciphertext).
fn damaged_copy(fx: &Fx, clean: &Path, name: &str, g: &Geometry, k: u64, at: u64) -> PathBuf {
    let vault = fx.vault(name);
    fs::copy(clean, &vault).unwrap();
    damage_chunk(&vault, g, k, at);
    vault
}

/// Flip one byte of age chunk `k` (at `at` inside its ciphertext).
fn damage_chunk(vault: &Path, g: &Geometry, k: u64, at: u64) {
    let mut b = fs::read(vault).unwrap();
    let off = (g.header_len + 16 + k * AGE_CHUNK as u64 + at) as usize;
    b[off] ^= 0x20;
    fs::write(vault, b).unwrap();
}

fn salvage_cmd(fx: &Fx, vault: &Path, dest: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    casevault()
        .arg("salvage")
        .arg(vault)
        .arg("-o")
        .arg(dest)
        .arg("-i")
        .arg(&fx.key.path)
        .arg("--json")
        .args(extra)
        .assert()
}

/// Run salvage, assert `code`, and return its JSON.
fn salvage(fx: &Fx, vault: &Path, dest: &Path, extra: &[&str], code: i32) -> serde_json::Value {
    let a = salvage_cmd(fx, vault, dest, extra);
    assert_eq!(
        a.get_output().status.code(),
        Some(code),
        "stderr: {}\nstdout: {}",
        stderr_of(&a),
        stdout_of(&a)
    );
    json_of(&a)
}

fn paths(list: &serde_json::Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

/// Every regular file under `root`, case-relative.
fn files_under(root: &Path) -> BTreeSet<String> {
    entries(root)
        .into_iter()
        .filter(|(_, k)| *k == Kind::File)
        .map(|(p, _)| rel_str(&p))
        .collect()
}

/// DEST holds exactly `expected` of the source's files, each byte for byte
/// with its mode and mtime, every directory and (where `links`) every link.
fn assert_restored(src: &Path, dest: &Path, expected: &BTreeSet<String>, links: bool) {
    assert_eq!(&files_under(dest), expected, "files in DEST");
    for p in expected {
        let (a, b) = (src.join(p), dest.join(p));
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{p} differs");
        let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
        assert_eq!(ma.mode() & 0o777, mb.mode() & 0o777, "{p}: mode");
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "{p}: mtime"
        );
    }
    for (p, k) in entries(src) {
        match k {
            Kind::Dir => {
                let (ma, mb) = (
                    fs::metadata(src.join(&p)).unwrap(),
                    fs::metadata(dest.join(&p)).unwrap(),
                );
                assert_eq!(ma.mode() & 0o777, mb.mode() & 0o777, "{p:?}: mode");
                assert_eq!(ma.mtime(), mb.mtime(), "{p:?}: mtime");
            }
            Kind::Symlink if links => assert_eq!(
                fs::read_link(src.join(&p)).unwrap(),
                fs::read_link(dest.join(&p)).unwrap()
            ),
            _ => {}
        }
    }
}

fn all_files(src: &Path) -> BTreeSet<String> {
    files_under(src)
}

#[test]
fn a_clean_vault_salvages_exactly_as_unseal_restores() {
    let fx = Fx::new();
    let c = case(&fx, "CLEAN-1");
    for compress in ["zstd", "none"] {
        let vault = fx.vault(&format!("clean-{compress}.vault"));
        fx.seal(&c.root, &vault, &["--compress", compress]);
        let (u, s) = (
            fx.dest(&format!("u-{compress}")),
            fx.dest(&format!("s-{compress}")),
        );
        fx.unseal(&vault, &u, &[]);
        let uv = fx.dest(&format!("uv-{compress}"));
        let j = salvage(&fx, &vault, &s, &["--unverified", uv.to_str().unwrap()], 0);
        assert_same_tree(&u, &s, true);
        assert_same_tree(&c.root, &s, true);
        assert_eq!(j["complete"], true);
        assert_eq!(j["read"], "index");
        assert_eq!(j["index"]["state"], "checked");
        assert_eq!(j["lost"], serde_json::json!([]));
        assert_eq!(j["unverifiable"], serde_json::json!([]));
        assert_eq!(j["unverified_dir"], serde_json::Value::Null);
        assert!(!uv.exists(), "nothing unverified, so no --unverified dir");
        let g = geometry(&vault, &fx.key);
        assert_eq!(j["restored"]["files"], g.files.len());
        assert_eq!(j["restored"]["dirs"], g.dirs - 1);
        assert_eq!(j["restored"]["symlinks"], g.links);
    }
}

#[test]
fn one_damaged_middle_chunk_costs_exactly_the_entries_it_holds() {
    let fx = Fx::new();
    let c = case(&fx, "MID-1");
    let mut n = 0;
    for compress in ["zstd", "none"] {
        let clean = fx.vault(&format!("mid-{compress}.vault"));
        fx.seal(&c.root, &clean, &["--compress", compress]);
        let g = geometry(&clean, &fx.key);
        let payload_chunks = g.chunk_of_plain(g.plain_of_tar(g.json.0));
        // A chunk inside the big file, one among the small files, one
        // in the file after them, and the first chunk.
        let small = g.files["dir3/f000.txt"].0;
        let picks = [
            3,
            g.chunk_of_plain(g.plain_of_tar(small)),
            g.chunk_of_plain(g.plain_of_tar(g.files["m-mid.bin"].0)) + 1,
            0,
        ];
        for k in picks {
            assert!(
                k < payload_chunks,
                "{compress}: chunk {k} is in the payload"
            );
            n += 1;
            let vault = damaged_copy(
                &fx,
                &clean,
                &format!("mid-{compress}-{k}.vault"),
                &g,
                k,
                1000,
            );
            let lost = g.files_in(&g.damaged_tar(k));
            assert!(
                !lost.is_empty(),
                "{compress} chunk {k}: the damage costs something"
            );
            let dest = fx.dest(&format!("mid-{n}"));
            let j = salvage(&fx, &vault, &dest, &[], 3);
            assert_eq!(j["complete"], false);
            assert_eq!(j["read"], "index", "{compress} chunk {k}");
            assert_eq!(paths(&j["lost"]), lost, "{compress} chunk {k}: lost");
            for l in j["lost"].as_array().unwrap() {
                let why = l["reason"].as_str().unwrap();
                let unit = if compress == "zstd" {
                    "zstd frame"
                } else {
                    "age chunk"
                };
                assert!(why.contains(unit), "{why}");
                assert!(l.get("unverified_copy").is_none());
            }
            let kept: BTreeSet<String> = all_files(&c.root).difference(&lost).cloned().collect();
            assert_restored(&c.root, &dest, &kept, true);
            assert_eq!(j["restored"]["files"], kept.len());
            // The damage named: the frames over the chunk, or the chunk.
            let named: Vec<(u64, u64)> = j["damage"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    (
                        d["tar_start"].as_u64().unwrap(),
                        d["tar_end"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(named, g.damaged_tar(k), "{compress} chunk {k}: damage");
            // The same vault, unseal: refused, nothing written.
            fx.unseal_fails(&vault, &fx.dest(&format!("mid-u-{n}")), 3, &[]);
        }
        // Damage 2.5 MiB into the big file: with --unverified, what was
        // read of it before the damage goes apart, a prefix of the source.
        let vault = damaged_copy(
            &fx,
            &clean,
            &format!("mid-{compress}-late.vault"),
            &g,
            40,
            1000,
        );
        let (dest, uv) = (
            fx.dest(&format!("mid-{compress}-late")),
            fx.dest(&format!("mid-{compress}-late-uv")),
        );
        let j = salvage(
            &fx,
            &vault,
            &dest,
            &["--unverified", uv.to_str().unwrap()],
            3,
        );
        assert_eq!(paths(&j["lost"]), g.files_in(&g.damaged_tar(40)));
        let big = j["lost"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["path"] == "a-big.bin")
            .unwrap();
        assert_eq!(big["unverified_copy"], "a-big.bin");
        let got = fs::read(uv.join("a-big.bin")).unwrap();
        let src = fs::read(c.root.join("a-big.bin")).unwrap();
        assert!(
            got.len() >= 1 << 20 && got.len() < src.len(),
            "{}",
            got.len()
        );
        assert!(src.starts_with(&got));
        assert!(!dest.join("a-big.bin").exists());
    }
}

#[test]
fn a_truncated_vault_gives_what_lies_before_the_cut_as_unverifiable_only() {
    let fx = Fx::new();
    let c = case(&fx, "CUT-1");
    for compress in ["none", "zstd"] {
        let clean = fx.vault(&format!("cut-{compress}.vault"));
        fx.seal(&c.root, &clean, &["--compress", compress]);
        let g = geometry(&clean, &fx.key);
        // Cut in a chunk inside the file after the small ones.
        let k = g.chunk_of_plain(g.plain_of_tar(g.files["m-mid.bin"].0 + 1_200_000)) + 1;
        let cut = g.header_len + 16 + k * AGE_CHUNK as u64 + 5000;
        let vault = fx.vault(&format!("cut-{compress}-short.vault"));
        fs::write(&vault, &fs::read(&clean).unwrap()[..cut as usize]).unwrap();
        let (dest, uv) = (
            fx.dest(&format!("cut-{compress}")),
            fx.dest(&format!("cut-{compress}-unverified")),
        );
        let before = snapshot(fx.root());
        let j = salvage(
            &fx,
            &vault,
            &dest,
            &["--unverified", uv.to_str().unwrap()],
            3,
        );
        assert_eq!(j["read"], "scan");
        assert_eq!(j["index"]["state"], "damaged");
        assert_eq!(j["complete"], false);
        // Nothing is verified without the records at the end of the vault.
        assert_eq!(files_under(&dest), BTreeSet::new());
        assert_eq!(j["restored"]["files"], 0);
        // Readable: the chunks before the cut (for zstd, what their frames
        // decode to: at least every frame that lies wholly before it).
        let readable = k * CHUNK;
        let (whole, partial): (BTreeSet<String>, BTreeSet<String>) = if compress == "none" {
            let whole = g
                .files
                .iter()
                .filter(|(_, (_, e))| *e <= readable)
                .map(|(p, _)| p.clone())
                .collect();
            let partial = g.files_in(&[(readable, readable + 1)]);
            (whole, partial)
        } else {
            let frames_before: u64 = g
                .frames
                .iter()
                .filter(|(c, cs, _, _)| c + cs <= readable)
                .map(|(_, _, _, ds)| ds)
                .sum();
            let whole = g
                .files
                .iter()
                .filter(|(_, (_, e))| *e <= frames_before)
                .map(|(p, _)| p.clone())
                .collect();
            (whole, BTreeSet::new())
        };
        let unverifiable = paths(&j["unverifiable"]);
        assert!(
            whole.len() > 200,
            "{compress}: the cut lies after the small files"
        );
        assert!(
            unverifiable.is_superset(&whole),
            "{compress}: missing {:?}",
            whole.difference(&unverifiable).collect::<Vec<_>>()
        );
        if compress == "none" {
            assert_eq!(unverifiable, whole);
            assert_eq!(paths(&j["lost"]), partial);
        }
        for u in j["unverifiable"].as_array().unwrap() {
            let p = u["path"].as_str().unwrap();
            assert_eq!(u["unverified_copy"], p);
            let got = fs::read(uv.join(p)).unwrap();
            assert_eq!(got, fs::read(c.root.join(p)).unwrap(), "{p}");
            assert_eq!(u["sha256"], sha256_hex(&got));
        }
        assert_eq!(j["unverified_dir"], uv.to_str().unwrap());
        assert_eq!(fs::metadata(&uv).unwrap().mode() & 0o777, 0o700);
        // Only DEST and the unverified directory are new.
        let mut after = snapshot(fx.root());
        after.retain(|p| !p.starts_with(dest.strip_prefix(fx.root()).unwrap()));
        after.retain(|p| !p.starts_with(uv.strip_prefix(fx.root()).unwrap()));
        assert_eq!(after, before);
    }
}

#[test]
fn a_damaged_index_leaves_every_file_unverified() {
    let fx = Fx::new();
    let c = case(&fx, "IDX-1");
    let clean = fx.vault("idx.vault");
    fx.seal(&c.root, &clean, &[]);
    let g = geometry(&clean, &fx.key);
    // The chunk holding the start of casevault.json's frame.
    let k = g.chunk_of_plain(g.plain_of_tar(g.json.0)) + 1;
    let k = k.min(g.chunks() - 2);
    let vault = damaged_copy(&fx, &clean, "idx-damaged.vault", &g, k, 7);
    let dest = fx.dest("idx");
    let j = salvage(&fx, &vault, &dest, &[], 3);
    assert_eq!(j["read"], "scan");
    assert_eq!(j["index"]["state"], "damaged");
    assert!(
        j["index"]["problem"]
            .as_str()
            .unwrap()
            .contains("casevault.json")
            || j["index"]["problem"].as_str().unwrap().contains("frame")
            || j["index"]["problem"]
                .as_str()
                .unwrap()
                .contains("authentication")
    );
    assert_eq!(files_under(&dest), BTreeSet::new());
    let found: BTreeSet<String> = paths(&j["unverifiable"])
        .union(&paths(&j["lost"]))
        .cloned()
        .collect();
    assert!(found.is_subset(&all_files(&c.root)));
    assert!(!paths(&j["unverifiable"]).is_empty());
    for u in j["unverifiable"].as_array().unwrap() {
        assert!(
            u.get("unverified_copy").is_none(),
            "no --unverified, no copy"
        );
    }

    // The seek table and the tail (the last chunk): the index cannot be
    // read from the end, but a scan reaches casevault.json intact before
    // the damage and checks every file against it.
    let vault = fx.vault("tail-damaged.vault");
    fs::copy(&clean, &vault).unwrap();
    let last = g.chunks() - 1;
    damage_chunk(&vault, &g, last, 3);
    // Whether the zstd frame that ends casevault.json ends (compressed)
    // before the damaged chunk: then the scan decodes all of it.
    let (c0, cs, _, _) = g
        .frames
        .iter()
        .find(|(_, _, d, ds)| *d < g.json.1 && g.json.1 <= d + ds)
        .copied()
        .unwrap();
    let json_readable = g.chunk_of_plain(c0 + cs - 1) < last;
    let dest = fx.dest("tail");
    let j = salvage(&fx, &vault, &dest, &[], 3);
    assert_eq!(j["read"], "scan");
    assert!(j["stopped"].is_object(), "{j}");
    if json_readable {
        assert_eq!(j["index"]["state"], "checked");
        assert_restored(&c.root, &dest, &all_files(&c.root), true);
        assert_eq!(j["lost"], serde_json::json!([]));
        assert_eq!(j["unverifiable"], serde_json::json!([]));
    } else {
        // Only what the frames wholly before the last chunk decode to.
        assert_eq!(j["index"]["state"], "damaged");
        assert_eq!(files_under(&dest), BTreeSet::new());
        let decoded: u64 = g
            .frames
            .iter()
            .filter(|(c, cs, _, _)| c + cs <= last * CHUNK)
            .map(|(_, _, _, ds)| ds)
            .sum();
        let whole: BTreeSet<String> = g
            .files
            .iter()
            .filter(|(_, (_, e))| *e <= decoded)
            .map(|(p, _)| p.clone())
            .collect();
        let un = paths(&j["unverifiable"]);
        assert!(un.is_superset(&whole), "{:?}", whole.difference(&un));
        assert!(un
            .union(&paths(&j["lost"]))
            .all(|p| g.files.contains_key(p)));
    }
}

/// Damage that costs `casevault.json` alone: the payload manifest, read
/// from the end (version 3) or by the scan past the damage (a version 1
/// raw tar), is the record every file is verified against.
#[test]
fn a_damaged_casevault_json_falls_back_to_the_manifest() {
    let fx = Fx::new();
    let c = case(&fx, "MAN-1");
    // Enough entries that casevault.json spans zstd frames and age
    // chunks of its own (about 3 MiB of it).
    for f in 0..12_000 {
        let name = format!("many/{}/{f:05}-{}.txt", f / 1000, "n".repeat(80));
        c.file(&name, format!("{f}\n").as_bytes());
    }
    for compress in ["zstd", "none"] {
        let clean = fx.vault(&format!("man-{compress}.vault"));
        fx.seal(&c.root, &clean, &["--compress", compress]);
        let g = geometry(&clean, &fx.key);
        // The manifest's header follows casevault.json's data.
        let man_start = g.json.1.div_ceil(512) * 512;
        let k = (0..g.chunks())
            .find(|&k| {
                let r = g.damaged_tar(k);
                !r.is_empty()
                    && r.iter()
                        .all(|&(a, b)| a >= g.json.0 + 512 && b <= man_start)
            })
            .expect("a chunk inside casevault.json alone");
        let vault = damaged_copy(
            &fx,
            &clean,
            &format!("man-{compress}-damaged.vault"),
            &g,
            k,
            11,
        );
        let dest = fx.dest(&format!("man-{compress}"));
        let j = salvage(&fx, &vault, &dest, &[], 3);
        assert_eq!(j["read"], "scan", "{compress}");
        assert_eq!(
            j["index"]["state"], "manifest",
            "{compress}: {}",
            j["index"]
        );
        assert!(j["index"]["problem"]
            .as_str()
            .unwrap()
            .contains("manifest-sha256.txt"));
        assert_eq!(j["lost"], serde_json::json!([]), "{compress}");
        assert_eq!(j["unverifiable"], serde_json::json!([]), "{compress}");
        assert_eq!(j["restored"]["symlinks"], 0);
        // Every file, byte for byte; modes and times are casevault.json's
        // and are not restored.
        let all = all_files(&c.root);
        assert_eq!(files_under(&dest), all, "{compress}");
        assert_eq!(j["restored"]["files"], all.len());
        for p in &all {
            assert!(
                fs::read(c.root.join(p)).unwrap() == fs::read(dest.join(p)).unwrap(),
                "{compress}: {p} differs"
            );
        }
    }

    // Version 1, raw tar: no index at the end, so the scan reads past
    // the damaged chunk to the manifest and the tag manifest.
    let mut r = Recipe::new("MAN-2").dir("data/d");
    let mut files = Vec::new();
    for i in 0..2500 {
        let p = format!("data/d/{i:05}-{}.txt", "x".repeat(90));
        let data = format!("line {i}\n").into_bytes();
        r = r.file(&p, &data);
        files.push((p.strip_prefix("data/").unwrap().to_string(), data));
    }
    let bag = Bag::from_recipe(&r, casevault::format::Compression::None);
    let clean = write_vault(&fx, "man-v1.vault", &bag.plaintext());
    let plain = decrypt_vault(&clean, &fx.key);
    let json_end = tar_end_of(&plain, "casevault.json");
    let json_len = bag.tag("casevault.json").len() as u64;
    // A chunk wholly inside casevault.json's data.
    let k = (json_end - json_len).div_ceil(CHUNK);
    assert!((k + 1) * CHUNK <= json_end, "casevault.json spans a chunk");
    let bytes = fs::read(&clean).unwrap();
    let hl = age_header_len(&bytes);
    let mut b = bytes.clone();
    b[hl + 16 + k as usize * AGE_CHUNK + 5] ^= 1;
    let vault = fx.vault("man-v1-damaged.vault");
    fs::write(&vault, b).unwrap();
    let dest = fx.dest("man-v1");
    let j = salvage(&fx, &vault, &dest, &[], 3);
    assert_eq!(j["index"]["state"], "manifest", "{}", j["index"]);
    assert_eq!(j["lost"], serde_json::json!([]));
    assert_eq!(j["unverifiable"], serde_json::json!([]));
    assert_eq!(j["restored"]["files"], files.len());
    for (p, data) in &files {
        assert_eq!(&fs::read(dest.join(p)).unwrap(), data, "{p}");
    }
}

#[test]
fn a_damaged_age_header_salvages_nothing_and_says_why() {
    let fx = Fx::new();
    let c = case(&fx, "HDR-1");
    let clean = fx.vault("hdr.vault");
    fx.seal(&c.root, &clean, &[]);
    let g = geometry(&clean, &fx.key);
    let bytes = fs::read(&clean).unwrap();
    let stanza = bytes.windows(3).position(|w| w == b"-> ").unwrap();
    // The version line and the MAC: damage (3); a recipient stanza: no
    // identity matches any more (4).
    for (at, code, says) in [
        (5, 3, "age header is damaged"),
        (g.header_len as usize - 5, 3, "age header is damaged"),
        (stanza + 12, 4, "no identity given can open this vault"),
    ] {
        let vault = fx.vault(&format!("hdr-{at}.vault"));
        let mut b = bytes.clone();
        // Another valid base64 character (a flipped bit may make one that
        // does not parse, which is exit 3 rather than 4).
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        fs::write(&vault, b).unwrap();
        let dest = fx.dest(&format!("hdr-{at}"));
        let before = snapshot(fx.root());
        let a = salvage_cmd(&fx, &vault, &dest, &[]).code(code);
        let err = stderr_of(&a);
        assert_error_message(&err);
        assert!(err.contains(says), "{err}");
        assert!(err.contains("casevault repair"), "{err}");
        assert!(stdout_of(&a).is_empty());
        assert!(!dest.exists());
        assert_snapshot_unchanged(fx.root(), &before);
    }
}

#[test]
fn a_version_1_vault_gives_what_lies_outside_the_damage() {
    let fx = Fx::new();
    let mut r = Recipe::new("OLD-1").dir("data/d");
    let mut files = Vec::new();
    for i in 0..30 {
        let p = format!("data/d/f{i:02}.bin");
        let data = seeded_bytes(i, 40_000);
        r = r.file(&p, &data);
        files.push((p.strip_prefix("data/").unwrap().to_string(), data));
    }
    use casevault::format::Compression;
    for compression in [Compression::Zstd, Compression::None] {
        let bag = Bag::from_recipe(&r, compression);
        let name = format!("old-{}.vault", compression.as_str());
        let clean = write_vault(&fx, &name, &bag.plaintext());
        let plain = decrypt_vault(&clean, &fx.key);
        let version = serde_json::from_slice::<serde_json::Value>(&bag.tag("casevault.json"))
            .unwrap()["version"]
            .clone();
        assert_eq!(version, 1);
        // Undamaged: read by the scan, every file checked, exit 0.
        let whole = fx.dest(&format!("old-{}-clean", compression.as_str()));
        let j = salvage(&fx, &clean, &whole, &[], 0);
        assert_eq!(
            (&j["read"], &j["index"]["state"]),
            (&"scan".into(), &"checked".into())
        );
        assert_eq!(j["restored"]["files"], files.len());
        for (p, data) in &files {
            assert_eq!(&fs::read(whole.join(p)).unwrap(), data, "{p}");
        }
        let bytes = fs::read(&clean).unwrap();
        let hl = age_header_len(&bytes);
        // Chunk 8 of ~19 (zstd at level 19 barely compresses seeded bytes).
        let k = 8;
        assert!((k as u64 + 2) * CHUNK < plain.len() as u64);
        let vault = fx.vault(&format!("old-{}-damaged.vault", compression.as_str()));
        let mut b = bytes.clone();
        b[hl + 16 + k * AGE_CHUNK + 99] ^= 1;
        fs::write(&vault, b).unwrap();
        let (dest, uv) = (
            fx.dest(&format!("old-{}", compression.as_str())),
            fx.dest(&format!("old-{}-uv", compression.as_str())),
        );
        let j = salvage(
            &fx,
            &vault,
            &dest,
            &["--unverified", uv.to_str().unwrap()],
            3,
        );
        assert_eq!(j["read"], "scan");
        if compression == Compression::None {
            // Raw tar: the scan goes on after the damaged chunk, reaches
            // casevault.json and checks every file against it; lost are
            // exactly the files whose header or data touch the chunk.
            let damaged = (k as u64 * CHUNK, (k as u64 + 1) * CHUNK);
            let lost: BTreeSet<String> = files_in_plain_tar(&plain)
                .into_iter()
                .filter(|(_, s, e)| *s < damaged.1 && *e > damaged.0)
                .map(|(p, _, _)| p)
                .collect();
            assert_eq!(j["index"]["state"], "checked");
            assert_eq!(paths(&j["lost"]), lost);
            assert!(!lost.is_empty());
            assert_eq!(j["unverifiable"], serde_json::json!([]));
            assert_eq!(j["damage"][0]["tar_start"], damaged.0);
            assert_eq!(j["damage"][0]["tar_end"], damaged.1);
            let kept: BTreeSet<String> = files
                .iter()
                .map(|(p, _)| p.clone())
                .filter(|p| !lost.contains(p))
                .collect();
            assert_eq!(files_under(&dest), kept);
            for (p, data) in &files {
                if kept.contains(p) {
                    assert_eq!(&fs::read(dest.join(p)).unwrap(), data, "{p}");
                }
            }
            // A file cut by the damage: its first bytes, apart.
            for l in j["lost"].as_array().unwrap() {
                if let Some(copy) = l["unverified_copy"].as_str() {
                    let got = fs::read(uv.join(copy)).unwrap();
                    let (_, data) = files.iter().find(|(p, _)| p == copy).unwrap();
                    assert!(got.len() < data.len() && data.starts_with(&got), "{copy}");
                }
            }
        } else {
            // One zstd stream: nothing after the damage decodes, and
            // casevault.json lies after it: the files before it, all
            // unverifiable.
            assert_eq!(j["index"]["state"], "missing");
            assert_eq!(files_under(&dest), BTreeSet::new());
            let un = paths(&j["unverifiable"]);
            assert!(!un.is_empty());
            for (p, data) in &files {
                if un.contains(p) {
                    assert_eq!(&fs::read(uv.join(p)).unwrap(), data, "{p}");
                }
            }
            // In payload order: a prefix of the files.
            let prefix: BTreeSet<String> =
                files[..un.len()].iter().map(|(p, _)| p.clone()).collect();
            assert_eq!(un, prefix);
        }

        // Damage after casevault.json (in the tag manifest's chunk, the
        // last): every file checks against the records read before it.
        let last = plain.len() as u64 / CHUNK;
        let json_end = tar_end_of(&plaintext_tar(&plain), "casevault.json");
        if compression == Compression::None && json_end < last * CHUNK {
            let vault = fx.vault("old-none-tail.vault");
            let mut b = bytes.clone();
            let at = hl + 16 + last as usize * AGE_CHUNK + 3;
            b[at.min(bytes.len() - 1)] ^= 1;
            fs::write(&vault, b).unwrap();
            let dest = fx.dest("old-none-tail");
            // Every file is restored, but the vault did not read to its
            // end: exit 3, and the damage named.
            let j = salvage(&fx, &vault, &dest, &[], 3);
            assert_eq!(j["index"]["state"], "checked");
            assert_eq!(j["restored"]["files"], files.len());
            assert_eq!(j["lost"], serde_json::json!([]));
            assert!(j["stopped"].is_object() || !j["damage"].as_array().unwrap().is_empty());
            for (p, data) in &files {
                assert_eq!(&fs::read(dest.join(p)).unwrap(), data);
            }
        }
    }
}

/// Payload files of a raw tar: where their header starts and their data
/// ends.
fn files_in_plain_tar(plain: &[u8]) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    let mut a = tar::Archive::new(plain);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if let Some(rel) = p.split_once("/data/").map(|(_, r)| r.to_string()) {
            if e.header().entry_type().is_file() {
                out.push((
                    rel,
                    e.raw_header_position(),
                    e.raw_file_position() + e.size(),
                ));
            }
        }
    }
    out
}

fn tar_end_of(tar: &[u8], name: &str) -> u64 {
    let mut a = tar::Archive::new(tar);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_string_lossy().ends_with(name) {
            return e.raw_file_position() + e.size();
        }
    }
    panic!("no {name}")
}

#[test]
fn salvage_refuses_a_dest_that_holds_something_and_writes_nothing() {
    let fx = Fx::new();
    let c = case(&fx, "DEST-1");
    let vault = fx.vault("dest.vault");
    fx.seal(&c.root, &vault, &[]);
    let dest = fx.dest("full");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("keep"), b"x").unwrap();
    let before = snapshot(fx.root());
    let a = salvage_cmd(&fx, &vault, &dest, &[]).code(1);
    assert!(stderr_of(&a).contains("is not empty"), "{}", stderr_of(&a));
    assert_snapshot_unchanged(fx.root(), &before);
    // -o and --unverified the same: usage.
    let d = fx.dest("same");
    salvage_cmd(&fx, &vault, &d, &["--unverified", d.to_str().unwrap()]).code(2);
    assert!(!d.exists());
}

#[test]
fn salvage_json_has_the_documented_shape() {
    let fx = Fx::new();
    let c = case(&fx, "JSON-1");
    let clean = fx.vault("json.vault");
    fx.seal(&c.root, &clean, &[]);
    let g = geometry(&clean, &fx.key);
    let vault = damaged_copy(&fx, &clean, "json-damaged.vault", &g, 2, 10);
    let j = salvage(&fx, &vault, &fx.dest("j"), &[], 3);
    assert_json_keys(
        &j,
        &[
            "vault",
            "dest",
            "unverified_dir",
            "case_id",
            "complete",
            "read",
            "index",
            "restored",
            "lost",
            "unverifiable",
            "stopped",
            "damage",
            "mtimes_not_stored",
        ],
    );
    assert_json_keys(&j["restored"], &["files", "dirs", "symlinks", "bytes"]);
    assert_json_keys(&j["index"], &["state"]);
    assert_json_keys(&j["lost"][0], &["path", "kind", "size", "reason"]);
    assert_json_keys(
        &j["damage"][0],
        &["unit", "index", "tar_start", "tar_end", "reason"],
    );
    assert_eq!(j["case_id"], "JSON-1");
    // Text mode: one line per lost file, the summary first.
    let a = casevault()
        .arg("salvage")
        .arg(&vault)
        .arg("-o")
        .arg(fx.dest("t"))
        .arg("-i")
        .arg(&fx.key.path)
        .assert()
        .code(3);
    let out = stdout_of(&a);
    assert!(out.starts_with("salvaged JSON-1: "), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("lost: ")).count(),
        j["lost"].as_array().unwrap().len()
    );
    assert_error_message(&stderr_of(&a));
}

#[test]
fn salvage_as_nobody_restores_and_fails_cleanly() {
    let fx = Fx::new();
    let c = case(&fx, "NOBODY-1");
    let clean = fx.vault("nobody.vault");
    fx.seal(&c.root, &clean, &[]);
    let g = geometry(&clean, &fx.key);
    let vault = damaged_copy(&fx, &clean, "nobody-damaged.vault", &g, 3, 10);
    let lost = g.files_in(&g.damaged_tar(3));
    let Some(u) = Unprivileged::new(fx.root()) else {
        return;
    };
    let dest = fx.dest("as-nobody");
    let out = u.run([
        "salvage".as_ref(),
        vault.as_os_str(),
        "-o".as_ref(),
        dest.as_os_str(),
        "-i".as_ref(),
        fx.key.path.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_exit(&out, 3);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(paths(&j["lost"]), lost);
    let kept: BTreeSet<String> = all_files(&c.root).difference(&lost).cloned().collect();
    assert_restored(&c.root, &dest, &kept, true);
    assert_eq!(fs::metadata(&dest).unwrap().uid(), crate::unpriv::NOBODY);
    // A destination nobody cannot create: exit 1, nothing written.
    let locked = fx.root().join("locked");
    fs::create_dir(&locked).unwrap();
    let dest = locked.join("dest");
    let out = u.run([
        "salvage".as_ref(),
        vault.as_os_str(),
        "-o".as_ref(),
        dest.as_os_str(),
        "-i".as_ref(),
        fx.key.path.as_os_str(),
    ]);
    assert_exit(&out, 1);
    assert_error_message(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read_dir(&locked).unwrap().count(), 0);
}

/// Random damage never puts a byte into DEST that differs from the
/// source, and what is listed as unverifiable (complete, authenticated)
/// is the source's file byte for byte: seeded positions on a small vault,
/// zstd and raw tar (each run one or two flipped bytes past the header).
#[test]
fn random_damage_never_restores_a_wrong_byte() {
    let fx = Fx::new();
    let c = CaseTree::new(fx.cases().join("RND-1"));
    for i in 0..60 {
        c.file(
            &format!("d{}/f{i:02}", i % 4),
            &seeded_bytes(i, 3000 + (i as usize * 4099) % 90_000),
        );
    }
    c.symlink("d0/l", "f00");
    let mut seed = 0x5eed_u64;
    for compress in ["zstd", "none"] {
        let clean = fx.vault(&format!("rnd-{compress}.vault"));
        fx.seal(&c.root, &clean, &["--compress", compress]);
        let bytes = fs::read(&clean).unwrap();
        let g = geometry(&clean, &fx.key);
        for n in 0..8 {
            let mut b = bytes.clone();
            for _ in 0..1 + n % 2 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at =
                    g.header_len as usize + (seed as usize % (b.len() - g.header_len as usize));
                b[at] ^= 1 << (seed % 8);
            }
            let vault = fx.vault(&format!("rnd-{compress}-{n}.vault"));
            fs::write(&vault, &b).unwrap();
            let dest = fx.dest(&format!("rnd-{compress}-{n}"));
            let uv = fx.dest(&format!("rnd-{compress}-{n}-uv"));
            let a = salvage_cmd(&fx, &vault, &dest, &["--unverified", uv.to_str().unwrap()]);
            let code = a.get_output().status.code();
            assert!(matches!(code, Some(0 | 3)), "{n}: {}", stderr_of(&a));
            for p in files_under(&dest) {
                assert_eq!(
                    fs::read(dest.join(&p)).unwrap(),
                    fs::read(c.root.join(&p)).unwrap(),
                    "{compress} {n}: {p}"
                );
            }
            let j = json_of(&a);
            for u in j["unverifiable"].as_array().unwrap() {
                let p = u["path"].as_str().unwrap();
                assert_eq!(
                    fs::read(uv.join(p)).unwrap(),
                    fs::read(c.root.join(p)).unwrap(),
                    "{compress} {n}: unverifiable {p}"
                );
            }
        }
    }
}

/// One zstd frame as casevault writes them (content size and checksum).
fn zstd_frame(data: &[u8]) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.include_checksum(true).unwrap();
    c.include_contentsize(true).unwrap();
    c.compress(data).unwrap()
}

/// A tar of `entries` (path, bytes; a path ending in `/` is a
/// directory), ustar headers, with its end marker.
fn small_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_650_000_000);
        h.set_entry_type(if path.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// The island a hostile case file can carry (FORMAT §14.4 step 5): a
/// whole zstd frame, stored by seal's zstd as raw bytes, holding a tar
/// with a directory and a file the real case has too (`dir0/`,
/// `z-last.csv`, the file with other bytes), `CASE_ID/data/fake.txt` and
/// a `CASE_ID/casevault.json` that records it (taken from a real seal of
/// a case holding only that file, so that it parses and checks).
fn island(fx: &Fx, case_id: &str) -> Vec<u8> {
    let fake = CaseTree::new(fx.root().join("fake").join(case_id));
    let text = b"planted, never sealed in this case\n";
    fake.file("fake.txt", text);
    let v = fx.vault("fake.vault");
    fx.seal(&fake.root, &v, &[]);
    let tar = plaintext_tar(&decrypt_vault(&v, &fx.key));
    let mut json = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("casevault.json") {
            std::io::Read::read_to_end(&mut e, &mut json).unwrap();
        }
    }
    assert!(!json.is_empty());
    let t = small_tar(&[
        (&format!("{case_id}/data/dir0/"), b""),
        (
            &format!("{case_id}/data/z-last.csv"),
            b"not the sealed bytes\n",
        ),
        (&format!("{case_id}/data/fake.txt"), text),
        (&format!("{case_id}/casevault.json"), &json),
    ]);
    zstd_frame(&t)
}

/// A case (the one of `case`, 2,000 more small files and a hostile file,
/// `m-evil.bin`, carrying an [`island`]) sealed so that casevault.json
/// ends just before a 1 MiB frame boundary, followed by a manifest that
/// compresses to more than an age chunk: damage to the last chunk (the
/// seek table and the tail) leaves casevault.json's frame readable.
/// Returns the case, the vault, its geometry, and the island's plaintext
/// offset.
fn case_with_json_before_the_tail(fx: &Fx, name: &str) -> (CaseTree, PathBuf, Geometry, u64) {
    let c = case(fx, name);
    for i in 0..2000u64 {
        let h = sha256_hex(&i.to_le_bytes());
        c.file(
            &format!("many/d{}/{}.txt", i % 10, &h[..16]),
            &seeded_bytes(5000 + i, 40 + (i % 50) as usize),
        );
    }
    let z = island(fx, name);
    let mut evil = seeded_bytes(600, 700 * 1024);
    evil.extend_from_slice(&z);
    evil.extend_from_slice(&seeded_bytes(601, 300 * 1024));
    c.file("m-evil.bin", &evil);
    let pad = |n: u64| seeded_bytes(77, n as usize);
    let p0 = 1_100_000u64;
    c.file("zz-pad.bin", &pad(p0));
    c.stamp_times(1_650_000_000);
    let probe = fx.vault(&format!("{name}-probe.vault"));
    fx.seal(&c.root, &probe, &[]);
    // Move casevault.json's end to 1 KiB before the next boundary (the
    // pad is the last payload file, its size keeps its digit count).
    let e0 = geometry(&probe, &fx.key).json.1;
    let boundary = (e0 + 2048).div_ceil(1 << 20) << 20;
    c.file("zz-pad.bin", &pad(p0 + (boundary - 1024 - e0) / 512 * 512));
    c.stamp_times(1_650_000_000);
    let clean = fx.vault(&format!("{name}.vault"));
    fx.seal(&c.root, &clean, &[]);
    let g = geometry(&clean, &fx.key);
    let jf = g.json_frame();
    let (c0, cs, _, _) = g.frames[jf];
    assert!(
        g.chunk_of_plain(c0 + cs - 1) < g.chunks() - 1,
        "casevault.json's frame ends before the last chunk"
    );
    let plain = decrypt_vault(&clean, &fx.key);
    let at = plain
        .windows(z.len())
        .position(|w| w == z)
        .expect("seal stored the island as is");
    (c, clean, g, at as u64)
}

impl Geometry {
    /// The frame holding the end of casevault.json.
    fn json_frame(&self) -> usize {
        self.frames
            .iter()
            .position(|(_, _, d, ds)| *d < self.json.1 && self.json.1 <= d + ds)
            .unwrap()
    }

    /// The frames whose compressed bytes touch age chunk `k`.
    fn frames_of_chunk(&self, k: u64) -> Vec<usize> {
        let (lo, hi) = (k * CHUNK, (k + 1) * CHUNK);
        (0..self.frames.len())
            .filter(|&i| self.frames[i].0 < hi && self.frames[i].0 + self.frames[i].1 > lo)
            .collect()
    }
}

/// Issue #16, FORMAT §14.4: a version 3 zstd vault whose end (seek table,
/// tail) is damaged is read by scan; damage in its payload too no longer
/// stops the scan: it resyncs at the next frame, so every file outside
/// the frames the damage touches is verified against casevault.json
/// (which lies after the damage) and restored, whether the hole is one
/// chunk or many in a row over several frames.
#[test]
fn a_version_3_zstd_scan_resyncs_at_the_next_frame_after_damage() {
    let fx = Fx::new();
    let (c, clean, g, island_at) = case_with_json_before_the_tail(&fx, "RESYNC-1");
    let last = g.chunks() - 1;
    let jf = g.json_frame();
    let small = g.chunk_of_plain(g.plain_of_tar(g.files["dir0/f005.txt"].0));
    // From inside frame 1 to inside frame 3: frames 1, 2 and 3.
    let hole: Vec<u64> = (g.frames[1].0 / CHUNK + 1..=g.frames[3].0 / CHUNK + 1).collect();
    for (n, chunks) in [vec![small], hole].into_iter().enumerate() {
        let hit: BTreeSet<usize> = chunks.iter().flat_map(|&k| g.frames_of_chunk(k)).collect();
        let (first, next) = (*hit.first().unwrap(), *hit.last().unwrap() + 1);
        assert!(
            first > 0 && next < jf,
            "{n}: {hit:?}, casevault.json in {jf}"
        );
        assert!(
            n == 0 || hit.len() == 3,
            "a hole over several frames: {hit:?}"
        );
        // The search meets the next real frame before the island.
        assert!(g.frames[next].0 < island_at);
        let vault = fx.vault(&format!("resync-{n}.vault"));
        fs::copy(&clean, &vault).unwrap();
        for &k in &chunks {
            damage_chunk(&vault, &g, k, 1000);
        }
        damage_chunk(&vault, &g, last, 3);
        let ranges: Vec<(u64, u64)> = hit
            .iter()
            .map(|&i| (g.frames[i].2, g.frames[i].2 + g.frames[i].3))
            .collect();
        let lost = g.files_in(&ranges);
        assert!(!lost.is_empty());
        let dest = fx.dest(&format!("resync-{n}"));
        let j = salvage(&fx, &vault, &dest, &[], 3);
        assert_eq!(j["read"], "scan", "{n}");
        assert_eq!(j["index"]["state"], "checked", "{n}: {}", j["index"]);
        assert_eq!(paths(&j["lost"]), lost, "{n}: lost");
        assert_eq!(j["unverifiable"], serde_json::json!([]), "{n}");
        let kept: BTreeSet<String> = all_files(&c.root).difference(&lost).cloned().collect();
        assert_restored(&c.root, &dest, &kept, true);
        assert_eq!(j["restored"]["files"], kept.len());
        // One record for the hole: where it starts is known, how many
        // frames it holds is not (FORMAT §14.4 step 4).
        let d = j["damage"].as_array().unwrap();
        assert_eq!(d.len(), 1, "{n}: {d:?}");
        assert_eq!(d[0]["unit"], "zstd frames");
        assert_eq!(d[0]["index"], first);
        assert_eq!(d[0]["tar_start"], g.frames[first].2);
        assert_eq!(d[0]["tar_end"], serde_json::Value::Null);
        assert_eq!(d[0]["plain_start"], g.frames[first].0);
        assert_eq!(d[0]["plain_end"], g.frames[next].0);
        assert_json_keys(
            &d[0],
            &[
                "unit",
                "index",
                "tar_start",
                "tar_end",
                "plain_start",
                "plain_end",
                "reason",
            ],
        );
        // The tail: where the scan stopped, at an unknown tar offset.
        assert_eq!(j["stopped"]["tar_offset"], serde_json::Value::Null, "{j}");
        assert!(j["stopped"]["reason"].is_string());
        if n == 0 {
            // Text mode says so too (docs/CLI.md).
            let a = casevault()
                .arg("salvage")
                .arg(&vault)
                .arg("-o")
                .arg(fx.dest("resync-text"))
                .arg("-i")
                .arg(&fx.key.path)
                .assert()
                .code(3);
            let (out, err) = (stdout_of(&a), stderr_of(&a));
            assert!(
                out.contains("\nstopped at an unknown tar offset: "),
                "{out}"
            );
            assert!(
                err.contains(
                    "could not be read past a point after the damage, at an unknown tar offset"
                ),
                "{err}"
            );
            assert_error_message(&err);
        }
    }
}

/// FORMAT §14.4 step 5: a hostile case file holding a whole zstd frame
/// with a tar of a fake `data/fake.txt` and a `casevault.json` recording
/// it. When the scan resyncs into it, nothing it holds is ever restored
/// as verified: the run ends in bytes that are no frame (a false start),
/// its casevault.json is discarded, and the real one (when it survives)
/// is the record. Paths it shares with the case are not extracted twice
/// (the first copy stays, so the real `z-last.csv` after it is lost, not
/// replaced).
#[test]
fn a_frame_inside_a_case_file_never_passes_as_the_vaults_own() {
    let fx = Fx::new();
    let (c, clean, g, island_at) = case_with_json_before_the_tail(&fx, "ISLAND-1");
    let last = g.chunks() - 1;
    let jf = g.json_frame();
    // The chunk before the island's, inside the same real frame.
    let k = island_at / CHUNK - 1;
    let hit = g.frames_of_chunk(k);
    assert_eq!(hit.len(), 1);
    let r = hit[0];
    assert!(g.frames[r].0 < k * CHUNK && island_at < g.frames[r].0 + g.frames[r].1);
    assert!(r + 1 < jf);
    let mut lost = g.files_in(&[(g.frames[r].2, g.frames[r].2 + g.frames[r].3)]);
    assert!(lost.contains("m-evil.bin"));
    assert!(!lost.contains("z-last.csv"));
    lost.insert("z-last.csv".into());
    // casevault.json intact: it is the record; fake.txt is unverifiable.
    let vault = fx.vault("island.vault");
    fs::copy(&clean, &vault).unwrap();
    damage_chunk(&vault, &g, k, 100);
    damage_chunk(&vault, &g, last, 3);
    let (dest, uv) = (fx.dest("island"), fx.dest("island-uv"));
    let j = salvage(
        &fx,
        &vault,
        &dest,
        &["--unverified", uv.to_str().unwrap()],
        3,
    );
    assert_eq!(j["index"]["state"], "checked", "{}", j["index"]);
    assert_eq!(paths(&j["lost"]), lost);
    assert_eq!(
        paths(&j["unverifiable"]),
        BTreeSet::from(["fake.txt".to_string()])
    );
    let kept: BTreeSet<String> = all_files(&c.root).difference(&lost).cloned().collect();
    assert_restored(&c.root, &dest, &kept, true);
    assert!(!dest.join("fake.txt").exists());
    // One hole: the island's run was a false start, counted in it.
    let d = j["damage"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["plain_start"], g.frames[r].0);
    assert_eq!(d[0]["plain_end"], g.frames[r + 1].0);

    // casevault.json's frame damaged too: the island's casevault.json is
    // the only one the scan reads whole, and it must not be used.
    let vault = fx.vault("island-nojson.vault");
    fs::copy(&clean, &vault).unwrap();
    damage_chunk(&vault, &g, k, 100);
    let jk = g.frames[jf].0 / CHUNK + 1;
    assert_eq!(g.frames_of_chunk(jk), vec![jf]);
    damage_chunk(&vault, &g, jk, 100);
    damage_chunk(&vault, &g, last, 3);
    let dest = fx.dest("island-nojson");
    let j = salvage(&fx, &vault, &dest, &[], 3);
    assert_ne!(j["index"]["state"], "checked", "{}", j["index"]);
    assert_eq!(files_under(&dest), BTreeSet::new(), "nothing is verified");
    assert_eq!(j["restored"]["files"], 0);
    assert!(paths(&j["unverifiable"]).contains("fake.txt"));
}

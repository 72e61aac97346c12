//! Case trees: a builder for case directories (in the manner of
//! ripgrep's `Dir`), the stock trees most tests seal, and seeded bytes.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{walk, Kind};

/// Deterministic pseudo-random bytes (xorshift64*) from a seed.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Builder for a case directory (in the manner of ripgrep's `Dir`).
pub struct CaseTree {
    pub root: PathBuf,
}

impl CaseTree {
    pub fn new(root: impl Into<PathBuf>) -> CaseTree {
        let root = root.into();
        fs::create_dir_all(&root).unwrap();
        CaseTree { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn file(&self, rel: &str, bytes: &[u8]) -> &Self {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, bytes).unwrap();
        self
    }

    pub fn dir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.path(rel)).unwrap();
        self
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        std::os::unix::fs::symlink(target, &p).unwrap();
        self
    }

    pub fn mode(&self, rel: &str, mode: u32) -> &Self {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// Give every file and directory (including the root) a distinct,
    /// deterministic mtime with a non-zero sub-second part. Call last:
    /// creating entries afterwards changes directory mtimes.
    pub fn stamp_times(&self, base: i64) -> &Self {
        let mut all = Vec::new();
        walk(&self.root, Path::new(""), &mut all);
        for (i, (rel, kind)) in all.iter().enumerate() {
            if *kind == Kind::Symlink {
                continue;
            }
            let t = filetime::FileTime::from_unix_time(
                base + 3_607 * i as i64,
                123_456_789 - i as u32 * 1000,
            );
            filetime::set_file_mtime(self.root.join(rel), t).unwrap();
        }
        let t = filetime::FileTime::from_unix_time(base - 86_400, 987_654_321);
        filetime::set_file_mtime(&self.root, t).unwrap();
        self
    }
}

/// Relative link targets used by the rich tree (inside, inside to a dir,
/// dangling).
pub const RICH_LINKS: &[(&str, &str)] = &[
    ("latest", "calls.csv"),
    ("nested/a/photos", "../../02 extraction/photos"),
    ("dangling", "missing/nowhere.txt"),
];

/// Absolute link added by [`rich_case`] with `with_absolute_link`.
pub const ABS_LINK: (&str, &str) = ("abs-hostname", "/etc/hostname");

/// Size of the seeded big file in the rich tree.
pub const BIG_LEN: usize = 3 * 1024 * 1024 + 12345;

/// The rich case tree: nested dirs, spaces and non-ASCII names, empty files
/// and dirs, symlinks (relative inside, dangling, optionally absolute), odd
/// permission bits, a seeded multi-MiB file, distinct mtimes.
pub fn rich_case(parent: &Path, name: &str, with_absolute_link: bool) -> CaseTree {
    rich_case_sized(parent, name, with_absolute_link, BIG_LEN)
}

/// The rich tree without the multi-MiB file (its `big.bin` has 64 KiB + 1),
/// for tests that are about outputs rather than volume.
pub fn rich_case_light(parent: &Path, name: &str) -> CaseTree {
    rich_case_sized(parent, name, false, 65_537)
}

fn rich_case_sized(parent: &Path, name: &str, with_absolute_link: bool, big: usize) -> CaseTree {
    let t = CaseTree::new(parent.join(name));
    t.file(
        "calls.csv",
        b"caller,callee,start,duration\n+491701234567,+4930123456,2024-03-15T10:30:00Z,42\n",
    )
    .file(
        "Zeugenaussage \u{fc}.csv",
        "Zeuge;Aussage\nM\u{fc}ller;\u{bb}Ich habe nichts gesehen.\u{ab}\n".as_bytes(),
    )
    .file(
        "\u{540d}\u{524d}.txt",
        "\u{540d}\u{524d}: \u{5c71}\u{7530}\n".as_bytes(),
    )
    .file("empty.txt", b"")
    .dir("empty_dir")
    .file("02 extraction/sms.db", &seeded_bytes(7, 100 * 1024))
    .file(
        "02 extraction/photos/IMG 0001.jpg",
        &seeded_bytes(8, 20 * 1024),
    )
    .file("02 extraction/photos/empty.jpg", b"")
    .file("02 extraction/run.sh", b"#!/bin/sh\necho hi\n")
    .file("nested/a/b/c/deep.txt", b"deep\n")
    .file("private/notes.txt", b"confidential\n")
    .file(
        "report.xml",
        b"<?xml version=\"1.0\"?>\n<report case=\"x\"/>\n",
    )
    .file("big.bin", &seeded_bytes(42, big));
    for (link, target) in RICH_LINKS {
        t.symlink(link, target);
    }
    if with_absolute_link {
        t.symlink(ABS_LINK.0, ABS_LINK.1);
    }
    t.mode("02 extraction/sms.db", 0o600)
        .mode("02 extraction/run.sh", 0o755)
        .mode("private/notes.txt", 0o640)
        .mode("private", 0o700)
        .mode("report.xml", 0o444)
        .mode("empty_dir", 0o750);
    t.stamp_times(1_700_000_000);
    t
}

/// A small case with a bit of everything but no big file.
pub fn small_case(parent: &Path, name: &str) -> CaseTree {
    let t = CaseTree::new(parent.join(name));
    t.file("a.txt", b"alpha\n")
        .file("sub/b.txt", b"bravo\n")
        .file("sub/c.bin", &seeded_bytes(3, 3000))
        .file("empty.txt", b"")
        .dir("empty_dir")
        .symlink("link-to-a", "a.txt");
    t.stamp_times(1_600_000_000);
    t
}

/// A path from raw bytes (for non-UTF-8 names).
pub fn path_from_bytes(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

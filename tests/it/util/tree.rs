//! Walking and comparing trees: payload-order walks, snapshots of what a
//! command may have written, tree equality, digests.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::{small_case, CaseTree};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Other => "other",
        }
    }
}

fn kind_of(md: &fs::Metadata) -> Kind {
    let ft = md.file_type();
    if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

/// Depth-first pre-order walk, children sorted by the bytes of their names
/// (the payload order of FORMAT.md §3). Paths are relative to `root`; the
/// root itself is not included.
pub fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, Kind)>) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let r = rel.join(&name);
        let md = fs::symlink_metadata(root.join(&r)).unwrap();
        let k = kind_of(&md);
        out.push((r.clone(), k));
        if k == Kind::Dir {
            walk(root, &r, out);
        }
    }
}

/// Every entry under `root` (recursive, relative paths), not following links.
pub fn entries(root: &Path) -> Vec<(PathBuf, Kind)> {
    let mut v = Vec::new();
    walk(root, Path::new(""), &mut v);
    v
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: Kind,
    mode: u32,
    mtime: i64,
    sha256: Option<String>,
    target: Option<PathBuf>,
}

fn node(path: &Path) -> Node {
    let md = fs::symlink_metadata(path).unwrap();
    let kind = kind_of(&md);
    Node {
        kind,
        mode: if kind == Kind::Symlink {
            0
        } else {
            md.mode() & 0o777
        },
        mtime: if kind == Kind::Symlink { 0 } else { md.mtime() },
        sha256: (kind == Kind::File).then(|| sha256_hex(&fs::read(path).unwrap())),
        target: (kind == Kind::Symlink).then(|| fs::read_link(path).unwrap()),
    }
}

/// Compare two trees: same paths, kinds, bytes, permission bits
/// (`mode & 0o777`), mtimes (seconds) of files and dirs, symlink targets.
/// With `check_root` the roots' own mode and mtime are compared too.
pub fn assert_same_tree(expected: &Path, actual: &Path, check_root: bool) {
    let collect = |root: &Path| -> BTreeMap<PathBuf, Node> {
        entries(root)
            .into_iter()
            .map(|(rel, _)| {
                let n = node(&root.join(&rel));
                (rel, n)
            })
            .collect()
    };
    let a = collect(expected);
    let b = collect(actual);
    let ka: BTreeSet<_> = a.keys().collect();
    let kb: BTreeSet<_> = b.keys().collect();
    assert_eq!(
        ka,
        kb,
        "trees {} and {} hold different paths (missing: {:?}, extra: {:?})",
        expected.display(),
        actual.display(),
        ka.difference(&kb).collect::<Vec<_>>(),
        kb.difference(&ka).collect::<Vec<_>>()
    );
    for (rel, na) in &a {
        let nb = &b[rel];
        assert_eq!(na, nb, "entry {rel:?} differs (expected vs restored)");
    }
    if check_root {
        let ra = node(expected);
        let rb = node(actual);
        assert_eq!(ra.mode, rb.mode, "root dir mode differs");
        assert_eq!(ra.mtime, rb.mtime, "root dir mtime differs");
    }
}

/// Recursive listing of everything under `dir` (paths relative to it).
pub fn snapshot(dir: &Path) -> BTreeSet<PathBuf> {
    entries(dir).into_iter().map(|(p, _)| p).collect()
}

pub fn assert_snapshot_unchanged(dir: &Path, before: &BTreeSet<PathBuf>) {
    let after = snapshot(dir);
    assert_eq!(
        &after,
        before,
        "files appeared or vanished under {} (new: {:?}, gone: {:?})",
        dir.display(),
        after.difference(before).collect::<Vec<_>>(),
        before.difference(&after).collect::<Vec<_>>()
    );
}

/// Counts (files, dirs incl. the root, symlinks, bytes) of a case tree.
pub fn case_totals(root: &Path) -> (u64, u64, u64, u64) {
    let (mut f, mut d, mut s, mut b) = (0, 1, 0, 0);
    for (rel, k) in entries(root) {
        match k {
            Kind::File => {
                f += 1;
                b += fs::metadata(root.join(rel)).unwrap().len();
            }
            Kind::Dir => d += 1,
            Kind::Symlink => s += 1,
            Kind::Other => {}
        }
    }
    (f, d, s, b)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn rel_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

// Self-check: the comparison helpers must be able to fail.

fn compare_panics(a: &Path, b: &Path, check_root: bool) -> bool {
    let (a, b) = (a.to_path_buf(), b.to_path_buf());
    std::panic::catch_unwind(move || assert_same_tree(&a, &b, check_root)).is_err()
}

#[test]
fn self_check_tree_compare_detects_each_difference() {
    let tmp = TempDir::new().unwrap();
    let make = |name: &str| small_case(tmp.path(), name);
    let base = make("base");
    let same = make("same");
    assert!(
        !compare_panics(&base.root, &same.root, true),
        "equal trees compare equal"
    );

    type Mutation = fn(&CaseTree);
    let mutations: [(&str, Mutation); 7] = [
        ("bytes", |t| {
            t.file("a.txt", b"alphA\n");
        }),
        ("mode", |t| {
            t.mode("sub/b.txt", 0o600);
        }),
        ("mtime", |t| {
            filetime::set_file_mtime(
                t.path("sub/c.bin"),
                filetime::FileTime::from_unix_time(5, 0),
            )
            .unwrap();
        }),
        ("link target", |t| {
            fs::remove_file(t.path("link-to-a")).unwrap();
            t.symlink("link-to-a", "sub/b.txt");
        }),
        ("extra file", |t| {
            t.file("empty_dir/new.txt", b"");
        }),
        ("kind", |t| {
            fs::remove_file(t.path("empty.txt")).unwrap();
            t.dir("empty.txt");
        }),
        ("dir mtime", |t| {
            filetime::set_file_mtime(t.path("sub"), filetime::FileTime::from_unix_time(5, 0))
                .unwrap();
        }),
    ];
    for (i, (label, mutate)) in mutations.iter().enumerate() {
        let t = make(&format!("m{i}"));
        mutate(&t);
        // Restore the mtimes the mutation did not target on purpose.
        if !label.contains("mtime") {
            t.stamp_times(1_600_000_000);
        }
        assert!(
            compare_panics(&base.root, &t.root, true),
            "difference in {label} not detected"
        );
    }
    // Root metadata only with check_root.
    let t = make("root");
    filetime::set_file_mtime(&t.root, filetime::FileTime::from_unix_time(5, 0)).unwrap();
    assert!(compare_panics(&base.root, &t.root, true));
    assert!(!compare_panics(&base.root, &t.root, false));
}

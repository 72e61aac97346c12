//! The case tree as sweep sees it: a cheap stat fingerprint (to detect an
//! unchanged case without reading it), the check that the source still
//! equals what was just sealed (before removing it), and the removal.
//!
//! Every walk goes through directory handles from the case directory that
//! sweep opened with `O_NOFOLLOW | O_DIRECTORY` ([`crate::walk`], issue #10
//! item 3), in the order seal walks, so a case swapped for a symlink, or a
//! directory in it swapped during a walk, cannot redirect a fingerprint, a
//! check or a removal to files outside the inbox.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::format::{Entry, Kind};
use crate::io::{hex, BUF_SIZE};
use crate::walk::{Loc, Meta, Node, Root};
use crate::{signal, Error, Result};

/// Domain separator of fingerprint version 1 (docs/FORMAT.md, "Sweep store and state").
const FINGERPRINT_V1: &[u8] = b"casevault-sweep-fingerprint-v1\n";

/// What a stat walk found.
#[derive(Debug, Clone)]
pub struct Scan {
    /// SHA-256 (hex) over every entry's path, kind, size, mtime, ctime,
    /// inode, mode and symlink target.
    pub fingerprint: String,
    /// Regular files and their total size.
    pub files: u64,
    pub bytes: u64,
    /// Symlinks and directories (the case directory included).
    pub symlinks: u64,
    pub dirs: u64,
    /// The first entry that is not a regular file, directory or symlink
    /// (seal refuses those), if any.
    pub special: Option<PathBuf>,
}

/// One entry's contribution to the fingerprint: length-prefixed fields, so
/// that no two different lists hash the same bytes.
struct Fingerprinter(Sha256);

impl Fingerprinter {
    fn new() -> Self {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_V1);
        Fingerprinter(h)
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }
    fn add(&mut self, rel: &OsStr, meta: &Meta, target: Option<&OsStr>) {
        let kind: u8 = if meta.is_dir() {
            b'd'
        } else if meta.is_file() {
            b'f'
        } else if meta.is_symlink() {
            b'l'
        } else {
            b'o'
        };
        self.bytes(rel.as_bytes());
        self.0.update([kind]);
        for v in [
            meta.len(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
            meta.ino(),
            u64::from(meta.mode()),
        ] {
            self.0.update(v.to_le_bytes());
        }
        self.bytes(target.map(OsStr::as_bytes).unwrap_or(b""));
    }
    fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn read_link(n: &Node) -> Result<PathBuf> {
    n.read_link()
        .map_err(|e| Error::io("cannot read symlink", &n.path, e))
}

/// Stat every entry (never reading file contents) and fingerprint the tree.
pub fn scan(root: &Root) -> Result<Scan> {
    let mut fp = Fingerprinter::new();
    let (mut files, mut bytes, mut symlinks, mut dirs) = (0u64, 0u64, 0u64, 0u64);
    let mut special = None;
    for item in root.walk() {
        signal::check()?;
        let n = item?;
        let meta = n.meta;
        let target = if meta.is_symlink() {
            Some(read_link(&n)?)
        } else {
            None
        };
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        } else if meta.is_dir() {
            dirs += 1;
        } else if meta.is_symlink() {
            symlinks += 1;
        } else if special.is_none() {
            special = Some(n.path.clone());
        }
        fp.add(
            n.rel.as_os_str(),
            &meta,
            target.as_deref().map(Path::as_os_str),
        );
    }
    Ok(Scan {
        fingerprint: fp.finish(),
        files,
        bytes,
        symlinks,
        dirs,
        special,
    })
}

/// An entry that may be removed: its path relative to the case and the
/// stat it had when it was checked; it is unlinked only if it still has
/// exactly that stat. Paths, not handles, are kept (a handle per directory
/// of a big case would run out of file descriptors); the removal reopens
/// each directory from the case's handle and checks it is the same one.
#[derive(Debug)]
struct Item {
    rel: PathBuf,
    path: PathBuf,
    meta: Meta,
}

/// What may be removed from a case directory: only entries proven to be in
/// the vault.
#[derive(Debug)]
pub struct Plan {
    /// The case directory's handle.
    root: Root,
    /// Files and symlinks.
    items: Vec<Item>,
    /// Directories in walk (pre-)order; removed in reverse, if empty.
    dirs: Vec<Item>,
}

#[cfg(test)]
impl Plan {
    pub fn files(&self) -> u64 {
        self.items.iter().filter(|i| !i.meta.is_symlink()).count() as u64
    }
    pub fn symlinks(&self) -> u64 {
        self.items.iter().filter(|i| i.meta.is_symlink()).count() as u64
    }
    pub fn dirs(&self) -> u64 {
        self.dirs.len() as u64
    }
}

/// Hash the regular file `n`, which must still be the one its stat
/// describes: opened from its parent's handle without following links or
/// blocking, read to its end, unchanged after.
fn hash_file(n: &Node, buf: &mut [u8]) -> Result<String> {
    let (path, lmeta) = (&n.path, &n.meta);
    let changed = || {
        Error::Refused(format!(
            "{}: changed while sweep checked it",
            path.display()
        ))
    };
    let mut f = n
        .open_file()
        .map_err(|e| Error::io("cannot open", path, e))?;
    let before = Meta::from_std(
        &f.metadata()
            .map_err(|e| Error::io("cannot stat", path, e))?,
    );
    if !before.is_file() || before.ino() != lmeta.ino() || before.dev() != lmeta.dev() {
        return Err(changed());
    }
    let mut h = Sha256::new();
    let mut total = 0u64;
    loop {
        signal::check()?;
        let k = match crate::io::retry(|| f.read(buf)) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        h.update(&buf[..k]);
        total += k as u64;
    }
    let after = Meta::from_std(
        &f.metadata()
            .map_err(|e| Error::io("cannot stat", path, e))?,
    );
    if total != lmeta.len() || !after.same(lmeta) {
        return Err(changed());
    }
    Ok(hex(&h.finalize()))
}

/// Check the case directory against the entries just sealed from it: every
/// sealed file still has its size and SHA-256, every sealed symlink its
/// target, every sealed directory is still a directory. Entries that
/// appeared since are not in the plan (and are never removed); an entry of
/// the vault that is gone or different refuses the whole removal.
pub fn check_sealed(root: &Root, entries: &[Entry]) -> Result<Plan> {
    let mut want: HashMap<&str, &Entry> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut plan = Plan {
        root: root.clone(),
        items: Vec::new(),
        dirs: Vec::new(),
    };
    let mut buf = vec![0u8; BUF_SIZE];
    for item in root.walk() {
        signal::check()?;
        let n = item?;
        let bag_path = match n.rel.to_str() {
            Some("") => "data".to_string(),
            Some(rel) => format!("data/{rel}"),
            None => continue, // not UTF-8: seal could not have sealed it
        };
        let Some(e) = want.remove(bag_path.as_str()) else {
            continue; // appeared after sealing
        };
        let differs = |what: &str| {
            Error::Refused(format!("{}: {what} since it was sealed", n.path.display()))
        };
        let meta = n.meta;
        match e.kind {
            Kind::Dir if meta.is_dir() => {}
            Kind::Symlink if meta.is_symlink() => {
                let t = read_link(&n)?;
                if Some(t.as_os_str()) != e.target.as_deref().map(OsStr::new) {
                    return Err(differs("symlink target changed"));
                }
            }
            Kind::File if meta.is_file() => {
                if Some(meta.len()) != e.size {
                    return Err(differs("size changed"));
                }
                let digest = hash_file(&n, &mut buf)?;
                if Some(digest.as_str()) != e.sha256.as_deref() {
                    return Err(differs("contents changed"));
                }
            }
            _ => return Err(differs("type changed")),
        }
        let it = Item {
            rel: n.rel,
            path: n.path,
            meta,
        };
        if meta.is_dir() {
            plan.dirs.push(it);
        } else {
            plan.items.push(it);
        }
    }
    // Whatever the vault holds and the walk did not find was removed.
    if let Some(e) = entries.iter().find(|e| want.contains_key(e.path.as_str())) {
        let shown = match e.path.strip_prefix("data/") {
            Some(rel) => root.path.join(rel),
            None => root.path.clone(),
        };
        return Err(Error::Refused(format!(
            "{}: removed since it was sealed",
            shown.display()
        )));
    }
    Ok(plan)
}

/// What a removal did.
#[derive(Debug, Default)]
pub struct Removed {
    pub files: u64,
    pub symlinks: u64,
    pub dirs: u64,
    /// Entries of the plan left in place because they changed after the
    /// check (their paths).
    pub kept_changed: Vec<PathBuf>,
    /// Entries that could not be removed (permission denied, say), with
    /// the first error; the rest of the plan is still carried out.
    pub failed: Vec<(PathBuf, io::Error)>,
}

/// Carry out a plan through handles: unlink each checked file or symlink
/// that still has the stat it had when checked, then remove the planned
/// directories deepest first, each only if it is still the same directory
/// and empty by then (`rmdir` refuses otherwise). Each entry's directory is
/// reopened from the case's handle without following links and must be
/// the directory that was checked; if it is not, its entries are kept.
pub fn remove(plan: &Plan) -> Result<Removed> {
    let mut done = Removed::default();
    let dirs: HashMap<&Path, Meta> = plan
        .dirs
        .iter()
        .map(|d| (d.rel.as_path(), d.meta))
        .collect();
    let expect = |p: &Path| dirs.get(p).copied();
    let parent_of = |rel: &Path| rel.parent().unwrap_or(Path::new("")).to_path_buf();

    // The entry `item` in its directory, if that is still the one checked.
    let locate = |item: &Item, done: &mut Removed| -> Option<Loc> {
        let Some(name) = item.rel.file_name() else {
            return plan.root.loc(); // the case directory itself
        };
        match plan.root.open_below(&parent_of(&item.rel), &expect) {
            Ok(Some(dir)) => Some(dir.child(name)),
            Ok(None) => {
                done.kept_changed.push(item.path.clone());
                None
            }
            Err(e) => {
                done.failed.push((item.path.clone(), e));
                None
            }
        }
    };

    // Files and symlinks, one reopening per directory.
    let mut by_dir: BTreeMap<PathBuf, Vec<&Item>> = BTreeMap::new();
    for item in &plan.items {
        by_dir.entry(parent_of(&item.rel)).or_default().push(item);
    }
    for (dir_rel, items) in by_dir {
        signal::check()?;
        let dir = match plan.root.open_below(&dir_rel, &expect) {
            Ok(Some(d)) => d,
            Ok(None) => {
                done.kept_changed
                    .extend(items.iter().map(|i| i.path.clone()));
                continue;
            }
            Err(e) => {
                let shown = plan.root.path.join(&dir_rel);
                done.failed.push((shown, e));
                continue;
            }
        };
        for item in items {
            let Some(name) = item.rel.file_name() else {
                continue;
            };
            let loc = dir.child(name);
            match loc.stat() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    done.failed.push((item.path.clone(), e));
                    continue;
                }
                Ok(m) if !item.meta.same(&m) => {
                    done.kept_changed.push(item.path.clone());
                    continue;
                }
                Ok(_) => {}
            }
            match loc.unlink() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    done.failed.push((item.path.clone(), e));
                    continue;
                }
            }
            if item.meta.is_symlink() {
                done.symlinks += 1;
            } else {
                done.files += 1;
            }
        }
    }

    // Directories, deepest first (reverse walk order).
    for d in plan.dirs.iter().rev() {
        signal::check()?;
        let Some(loc) = locate(d, &mut done) else {
            continue;
        };
        match loc.stat() {
            Ok(m) if m.is_dir() && m.dev() == d.meta.dev() && m.ino() == d.meta.ino() => {}
            // Gone, or another object under that name now: not ours.
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                done.failed.push((d.path.clone(), e));
                continue;
            }
        }
        match loc.rmdir() {
            Ok(()) => done.dirs += 1,
            // Not empty: something not in the vault lives there; it stays.
            Err(e)
                if e.kind() == io::ErrorKind::DirectoryNotEmpty
                    || e.raw_os_error() == Some(libc::EEXIST)
                    || e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => done.failed.push((d.path.clone(), e)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn open_case(dir: &Path, name: &str) -> Root {
        Root::open(dir)
            .unwrap()
            .open_child(OsStr::new(name))
            .unwrap()
    }

    #[test]
    fn fingerprint_is_stable_and_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("C1");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), b"hello").unwrap();
        std::os::unix::fs::symlink("sub/a", root.join("l")).unwrap();
        let a = scan(&open_case(dir.path(), "C1")).unwrap();
        assert_eq!(
            scan(&open_case(dir.path(), "C1")).unwrap().fingerprint,
            a.fingerprint
        );
        assert_eq!((a.files, a.bytes, a.symlinks, a.dirs), (1, 5, 1, 2));
        fs::write(root.join("sub/a"), b"hellO").unwrap();
        assert_ne!(
            scan(&open_case(dir.path(), "C1")).unwrap().fingerprint,
            a.fingerprint
        );
    }

    #[test]
    fn check_sealed_plans_only_vault_entries_and_removal_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("C1");
        fs::create_dir_all(root.join("b")).unwrap();
        fs::write(root.join("b/x"), b"1").unwrap();
        fs::write(root.join("new"), b"not sealed").unwrap();
        let entry = |path: &str, kind, data: Option<&[u8]>| Entry {
            path: path.into(),
            kind,
            size: data.map(|d| d.len() as u64),
            sha256: data.map(|d| hex(&Sha256::digest(d))),
            target: None,
            mode: 0o644,
            mtime: 0,
            mtime_nsec: 0,
            offset: None,
        };
        let entries = [
            entry("data", Kind::Dir, None),
            entry("data/b", Kind::Dir, None),
            entry("data/b/x", Kind::File, Some(b"1")),
        ];
        let plan = check_sealed(&open_case(dir.path(), "C1"), &entries).unwrap();
        assert_eq!((plan.files(), plan.symlinks(), plan.dirs()), (1, 0, 2));
        let done = remove(&plan).unwrap();
        assert_eq!((done.files, done.dirs), (1, 1), "C1 keeps `new`");
        assert_eq!(fs::read(root.join("new")).unwrap(), b"not sealed");
        assert!(!root.join("b").exists());

        // A sealed file that has gone refuses the whole removal.
        let err = check_sealed(&open_case(dir.path(), "C1"), &entries).unwrap_err();
        assert!(
            err.to_string().contains("removed since it was sealed"),
            "{err}"
        );
    }
}

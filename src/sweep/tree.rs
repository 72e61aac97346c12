//! The case tree as sweep sees it: a cheap stat fingerprint (to detect an
//! unchanged case without reading it), a full re-hash (to prove the source
//! still equals a vault before removing it), and the removal itself.
//!
//! Walks use the same `walkdir` settings as `seal` (sorted by file name,
//! links not followed), so a re-hash rebuilds `manifest-sha256.txt` line for
//! line in the order seal wrote it.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::format::{Entry, Kind};
use crate::io::{hex, BUF_SIZE};
use crate::{manifest, signal, Error, Result};

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
    /// The first entry that is not a regular file, directory or symlink
    /// (seal refuses those), if any.
    pub special: Option<PathBuf>,
}

fn walker(root: &Path) -> walkdir::WalkDir {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
}

fn walk_error(root: &Path, e: walkdir::Error) -> Error {
    let p = e
        .path()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.to_path_buf());
    match e.into_io_error() {
        Some(io) => Error::io("cannot read", &p, io),
        None => Error::Refused(format!("{}: directory loop", p.display())),
    }
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
    fn add(&mut self, rel: &OsStr, meta: &fs::Metadata, target: Option<&OsStr>) {
        let ft = meta.file_type();
        let kind: u8 = if ft.is_dir() {
            b'd'
        } else if ft.is_file() {
            b'f'
        } else if ft.is_symlink() {
            b'l'
        } else {
            b'o'
        };
        self.bytes(rel.as_bytes());
        self.0.update([kind]);
        for v in [
            meta.size(),
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

fn rel_of<'a>(root: &Path, path: &'a Path) -> &'a OsStr {
    path.strip_prefix(root)
        .expect("walkdir yields paths under its root")
        .as_os_str()
}

/// Stat every entry (never reading file contents) and fingerprint the tree.
pub fn scan(root: &Path) -> Result<Scan> {
    let mut fp = Fingerprinter::new();
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut special = None;
    for item in walker(root) {
        signal::check()?;
        let ent = item.map_err(|e| walk_error(root, e))?;
        let path = ent.path();
        let meta = fs::symlink_metadata(path).map_err(|e| Error::io("cannot stat", path, e))?;
        let target = if meta.file_type().is_symlink() {
            Some(fs::read_link(path).map_err(|e| Error::io("cannot read symlink", path, e))?)
        } else {
            None
        };
        let ft = meta.file_type();
        if ft.is_file() {
            files += 1;
            bytes += meta.len();
        } else if !ft.is_dir() && !ft.is_symlink() && special.is_none() {
            special = Some(path.to_path_buf());
        }
        fp.add(
            rel_of(root, path),
            &meta,
            target.as_deref().map(Path::as_os_str),
        );
    }
    Ok(Scan {
        fingerprint: fp.finish(),
        files,
        bytes,
        special,
    })
}

/// A file or symlink that may be removed, with the stat it had when it was
/// checked: it is unlinked only if it still has exactly that stat.
#[derive(Debug)]
struct Item {
    path: PathBuf,
    symlink: bool,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Item {
    fn new(path: PathBuf, m: &fs::Metadata) -> Item {
        Item {
            path,
            symlink: m.file_type().is_symlink(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
    fn same(&self, m: &fs::Metadata) -> bool {
        m.file_type().is_symlink() == self.symlink
            && m.dev() == self.dev
            && m.ino() == self.ino
            && m.size() == self.size
            && (m.mtime(), m.mtime_nsec()) == self.mtime
            && (m.ctime(), m.ctime_nsec()) == self.ctime
    }
}

/// What may be removed from a case directory: only entries proven to be in
/// the vault.
#[derive(Debug, Default)]
pub struct Plan {
    items: Vec<Item>,
    /// Directories in walk (pre-)order; removed in reverse, if empty.
    dirs: Vec<PathBuf>,
}

impl Plan {
    pub fn files(&self) -> u64 {
        self.items.iter().filter(|i| !i.symlink).count() as u64
    }
    pub fn symlinks(&self) -> u64 {
        self.items.iter().filter(|i| i.symlink).count() as u64
    }
    pub fn dirs(&self) -> u64 {
        self.dirs.len() as u64
    }
}

/// Hash a regular file that must be the one `lmeta` describes: opened
/// without following links or blocking, read to its end, unchanged after.
fn hash_file(path: &Path, lmeta: &fs::Metadata, buf: &mut [u8]) -> Result<String> {
    let changed = || {
        Error::Refused(format!(
            "{}: changed while sweep checked it",
            path.display()
        ))
    };
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io("cannot open", path, e))?;
    let before = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    if !before.is_file() || before.ino() != lmeta.ino() || before.dev() != lmeta.dev() {
        return Err(changed());
    }
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        signal::check()?;
        let k = match f.read(buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    let after = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    if n != lmeta.len()
        || after.len() != n
        || (after.mtime(), after.mtime_nsec()) != (lmeta.mtime(), lmeta.mtime_nsec())
        || (after.ctime(), after.ctime_nsec()) != (lmeta.ctime(), lmeta.ctime_nsec())
    {
        return Err(changed());
    }
    Ok(hex(&h.finalize()))
}

/// Re-read the whole tree: its fingerprint, the SHA-256 of the manifest
/// text `seal` would write for it now, and a removal plan covering exactly
/// what was read. Used by a dry run to say what `--remove-source` would
/// remove.
pub fn rehash(root: &Path) -> Result<(Scan, String, Plan)> {
    let mut fp = Fingerprinter::new();
    let mut manifest_text = String::new();
    let mut plan = Plan::default();
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; BUF_SIZE];
    for item in walker(root) {
        signal::check()?;
        let ent = item.map_err(|e| walk_error(root, e))?;
        let path = ent.path();
        let rel = rel_of(root, path);
        let meta = fs::symlink_metadata(path).map_err(|e| Error::io("cannot stat", path, e))?;
        let ft = meta.file_type();
        let target = if ft.is_symlink() {
            Some(fs::read_link(path).map_err(|e| Error::io("cannot read symlink", path, e))?)
        } else {
            None
        };
        fp.add(rel, &meta, target.as_deref().map(Path::as_os_str));
        if ft.is_dir() {
            plan.dirs.push(path.to_path_buf());
        } else if ft.is_symlink() {
            plan.items.push(Item::new(path.to_path_buf(), &meta));
        } else if ft.is_file() {
            let rel = rel.to_str().ok_or_else(|| {
                Error::Refused(format!("{}: file name is not valid UTF-8", path.display()))
            })?;
            let digest = hash_file(path, &meta, &mut buf)?;
            manifest_text.push_str(&manifest::line(&digest, &format!("data/{rel}")));
            files += 1;
            bytes += meta.len();
            plan.items.push(Item::new(path.to_path_buf(), &meta));
        } else {
            return Err(Error::Refused(format!(
                "{}: not a regular file, directory or symlink",
                path.display()
            )));
        }
    }
    let scan = Scan {
        fingerprint: fp.finish(),
        files,
        bytes,
        special: None,
    };
    Ok((scan, hex(&Sha256::digest(manifest_text.as_bytes())), plan))
}

/// Check the case directory against the entries just sealed from it: every
/// sealed file still has its size and SHA-256, every sealed symlink its
/// target. Entries that appeared since are not looked at (and not removed).
pub fn check_sealed(root: &Path, entries: &[Entry]) -> Result<Plan> {
    let mut plan = Plan::default();
    let mut buf = vec![0u8; BUF_SIZE];
    for e in entries {
        signal::check()?;
        let path = match e.path.strip_prefix("data/") {
            Some(rel) => root.join(rel),
            None if e.path == "data" => root.to_path_buf(),
            None => {
                return Err(Error::Refused(format!(
                    "unexpected entry path {:?} in the seal report",
                    e.path
                )))
            }
        };
        let differs =
            |what: &str| Error::Refused(format!("{}: {what} since it was sealed", path.display()));
        let meta = match fs::symlink_metadata(&path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(differs("removed")),
            Err(err) => return Err(Error::io("cannot stat", &path, err)),
            Ok(m) => m,
        };
        let ft = meta.file_type();
        match e.kind {
            Kind::Dir if ft.is_dir() => plan.dirs.push(path),
            Kind::Symlink if ft.is_symlink() => {
                let t = fs::read_link(&path)
                    .map_err(|err| Error::io("cannot read symlink", &path, err))?;
                if Some(t.as_os_str()) != e.target.as_deref().map(OsStr::new) {
                    return Err(differs("symlink target changed"));
                }
                plan.items.push(Item::new(path, &meta));
            }
            Kind::File if ft.is_file() => {
                if Some(meta.len()) != e.size {
                    return Err(differs("size changed"));
                }
                let digest = hash_file(&path, &meta, &mut buf)?;
                if Some(digest.as_str()) != e.sha256.as_deref() {
                    return Err(differs("contents changed"));
                }
                plan.items.push(Item::new(path, &meta));
            }
            _ => return Err(differs("type changed")),
        }
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
}

/// Carry out a plan: unlink each checked file or symlink that still has the
/// stat it had when checked, then remove the planned directories deepest
/// first, each only if it is empty by then (`rmdir` refuses otherwise).
pub fn remove(plan: &Plan) -> Result<Removed> {
    let mut done = Removed::default();
    for item in &plan.items {
        match fs::symlink_metadata(&item.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("cannot stat", &item.path, e)),
            Ok(m) if !item.same(&m) => {
                done.kept_changed.push(item.path.clone());
                continue;
            }
            Ok(_) => {}
        }
        match fs::remove_file(&item.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("cannot remove", &item.path, e)),
        }
        if item.symlink {
            done.symlinks += 1;
        } else {
            done.files += 1;
        }
    }
    for dir in plan.dirs.iter().rev() {
        match fs::remove_dir(dir) {
            Ok(()) => done.dirs += 1,
            // Not empty: something not in the vault lives there; it stays.
            Err(e)
                if e.kind() == io::ErrorKind::DirectoryNotEmpty
                    || e.raw_os_error() == Some(libc::EEXIST)
                    || e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove directory", dir, e)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("C1");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), b"hello").unwrap();
        std::os::unix::fs::symlink("sub/a", root.join("l")).unwrap();
        let a = scan(&root).unwrap();
        assert_eq!(scan(&root).unwrap().fingerprint, a.fingerprint);
        assert_eq!((a.files, a.bytes), (1, 5));
        fs::write(root.join("sub/a"), b"hellO").unwrap();
        assert_ne!(scan(&root).unwrap().fingerprint, a.fingerprint);
    }

    #[test]
    fn rehash_rebuilds_the_manifest_text() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("C1");
        fs::create_dir_all(root.join("b")).unwrap();
        fs::write(root.join("b/x%y"), b"1").unwrap();
        fs::write(root.join("a"), b"2").unwrap();
        let (_, digest, plan) = rehash(&root).unwrap();
        let text = format!(
            "{}{}",
            manifest::line(&hex(&Sha256::digest(b"2")), "data/a"),
            manifest::line(&hex(&Sha256::digest(b"1")), "data/b/x%y")
        );
        assert_eq!(digest, hex(&Sha256::digest(text.as_bytes())));
        assert_eq!((plan.files(), plan.symlinks(), plan.dirs()), (2, 0, 2));
        let done = remove(&plan).unwrap();
        assert_eq!((done.files, done.dirs), (2, 2));
        assert!(!root.exists());
    }
}

//! `casevault unseal`: extract into a staging directory beside the
//! destination, and rename it into place only after every check passed.
//!
//! The staging directory is mode 0700 from its creation until it has become
//! DEST (issue #10 item 4); the recorded mode and mtime of the case root are
//! applied to DEST only after the rename. Times are set by path and never
//! through an open file, so no recorded mode can stop the owner from
//! restoring them (item 2), and each is read back (item 6). Whatever fails,
//! the staging directory is removed by a walk that first gives its owner
//! back every permission bit a restored mode took away (item 1).

use std::cell::Cell;
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags, Timespec, Timestamps};
use serde::Serialize;

use crate::format::{CaseJson, Entry, Kind};
use crate::keys::BoxedIdentity;
use crate::read::{open_vault, Extract, LinkStatus, Links};
use crate::{Error, Result};

/// Prefix of the staging directory created beside DEST_DIR.
pub const STAGING_PREFIX: &str = ".casevault-unseal-";

/// What to unseal and where.
pub struct UnsealOptions {
    pub vault: PathBuf,
    pub dest: PathBuf,
    pub identities: Vec<BoxedIdentity>,
    pub allow_external_links: bool,
    /// `--path`: restore only these (case-relative) files and directory
    /// subtrees; empty for the whole case.
    pub paths: Vec<String>,
}

/// The outcome of a successful unseal (`--json` object).
#[derive(Debug, Serialize)]
pub struct UnsealReport {
    pub vault: PathBuf,
    pub dest: PathBuf,
    pub case_id: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// SHA-256 of the vault file; absent after `--path` from a version 3
    /// vault, which reads only part of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_sha256: Option<String>,
    /// `--path`: the paths asked for (the counts above are then of what
    /// was restored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Entries whose recorded mtime the destination filesystem did not
    /// store exactly (it clamped or rounded it); empty when every time was
    /// restored (docs/CLI.md).
    pub mtimes_not_stored: Vec<MtimeNotStored>,
}

/// An entry whose mtime could not be stored exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MtimeNotStored {
    /// Path relative to the case folder; `.` is the case folder itself.
    pub path: String,
    /// The recorded time.
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// What the filesystem holds instead.
    pub stored_mtime: i64,
    pub stored_mtime_nsec: u32,
}

/// The extractor of unseal: creates each payload entry in the staging
/// directory, relative to a descriptor of its parent directory.
pub(crate) struct Staging<'a> {
    pub(crate) root: PathBuf,
    /// The staging directory (the case root).
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) parent: ParentCache,
    /// Threads creating the small files (a full unseal); without them the
    /// reader creates every file itself.
    pub(crate) creators: Option<crate::creators::Creators<'a>>,
}

/// Create the regular file at `rel` below `staging` (at `root`): new,
/// never through a link, mode 0600 until its recorded mode is restored.
pub(crate) fn create_at(
    staging: BorrowedFd<'_>,
    parent: &mut ParentCache,
    root: &Path,
    rel: &str,
) -> Result<fs::File> {
    let err = |e: rustix::io::Errno| Error::io("cannot create file", &root.join(rel), e.into());
    let (dir, name) = parent.split(staging, rel).map_err(err)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600)).map_err(err)?;
    Ok(fs::File::from(fd))
}

impl Extract for Staging<'_> {
    type File = fs::File;

    fn dir(&mut self, rel: &str) -> Result<()> {
        let err = |e: rustix::io::Errno| {
            Error::io("cannot create directory", &self.root.join(rel), e.into())
        };
        let (dir, name) = self.parent.split(self.fd, rel).map_err(err)?;
        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(err)
    }

    fn create_file(&mut self, rel: &str) -> Result<fs::File> {
        create_at(self.fd, &mut self.parent, &self.root, rel)
    }

    fn takes_small_files(&self) -> bool {
        self.creators.is_some()
    }

    fn small_file(&mut self, rel: &str, data: Vec<u8>) -> Result<()> {
        match self.creators.as_mut() {
            Some(c) => c.add(rel, data),
            None => crate::read::write_whole(self, rel, &data),
        }
    }

    fn write_error(&self, rel: &str, e: io::Error) -> Error {
        Error::io("cannot write", &self.root.join(rel), e)
    }

    /// Refuse an entry that would leave the staging filesystem with less
    /// than [`free_margin`] bytes, or less than 1% of its inodes, free
    /// (FORMAT §6.1). The size is the one the tar header declares, so a
    /// decompression bomb is stopped before its first byte is written.
    fn reserve(&mut self, rel: &str, size: u64) -> Result<()> {
        // Through the descriptor: no walk of the staging path per entry.
        let st = rustix::fs::fstatvfs(self.fd)
            .map_err(|e| Error::io("cannot inspect the filesystem of", &self.root, e.into()))?;
        let unit = if st.f_frsize > 0 {
            st.f_frsize
        } else {
            st.f_bsize
        };
        let avail = st.f_bavail.saturating_mul(unit);
        let favail = st.f_favail;
        let margin = free_margin(st.f_blocks.saturating_mul(unit));
        if size.saturating_add(margin) > avail {
            return Err(Error::Refused(format!(
                "not enough free space to unseal: {rel:?} needs {size} bytes, the filesystem \
                 of {} has {avail} bytes free and unseal keeps {margin} free; unseal \
                 elsewhere or free space (the staging directory was removed)",
                crate::io::parent_dir(&self.root).display()
            )));
        }
        if st.f_files > 0 && favail <= st.f_files / 100 {
            return Err(Error::Refused(format!(
                "not enough free inodes to unseal: the filesystem of {} has {} left and \
                 unseal keeps 1% free",
                crate::io::parent_dir(&self.root).display(),
                favail
            )));
        }
        Ok(())
    }

    /// Empty the staging directory (it stays, mode 0700).
    fn restart(&mut self) -> Result<()> {
        // Nothing may be created in it meanwhile, and a file that could
        // not be created fails the unseal as before (it came before what
        // made the reader start again); the second read creates its files
        // itself.
        if let Some(c) = self.creators.take() {
            c.finish()?;
        }
        self.parent = ParentCache::default();
        let mut r = Removal::default();
        let dup = self
            .fd
            .try_clone_to_owned()
            .map_err(|e| Error::io("cannot open", &self.root, e))?;
        let _ = clear_dir(dup, &self.root, &mut r);
        match r.first {
            None => Ok(()),
            Some(first) => Err(Error::io(
                "cannot empty the staging directory",
                &self.root,
                io::Error::other(first),
            )),
        }
    }
}

/// The directory that holds the entries being worked on, open below the
/// staging directory. Entries arrive grouped by directory (tar order,
/// `casevault.json` order), so each is then reached through one path
/// component instead of a walk of its whole path (issue #12). One
/// descriptor at most, whatever the depth of the tree.
#[derive(Default)]
pub(crate) struct ParentCache {
    rel: String,
    fd: Option<OwnedFd>,
}

impl ParentCache {
    /// The directory (`staging` itself for a top-level entry) and the
    /// final name of the entry at `rel`, relative to `staging`. The
    /// parent is opened without following a symlink at its last
    /// component; only this user can change the staging tree (0700).
    fn split<'a>(
        &'a mut self,
        staging: BorrowedFd<'a>,
        rel: &'a str,
    ) -> rustix::io::Result<(BorrowedFd<'a>, &'a str)> {
        let Some((parent, name)) = rel.rsplit_once('/') else {
            return Ok((staging, rel));
        };
        if self.fd.is_none() || self.rel != parent {
            self.fd = None;
            let fd = rustix::fs::openat(staging, parent, dir_flags(), Mode::empty())?;
            self.rel.clear();
            self.rel.push_str(parent);
            self.fd = Some(fd);
        }
        let fd = self.fd.as_ref().expect("opened above").as_fd();
        Ok((fd, name))
    }
}

/// Bytes unseal leaves free on the destination filesystem: 1% of its size,
/// at most 256 MiB (FORMAT §6.1). A crafted vault can fill a disk no
/// further than this.
pub fn free_margin(fs_bytes: u64) -> u64 {
    (fs_bytes / 100).min(256 << 20)
}

/// Check that `dest` does not exist or is an empty directory.
pub(crate) fn check_dest(dest: &Path) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // unseal creates DEST, never its parents: a mistyped path must
            // not grow a tree of directories (issue #17 item 5).
            let parent = crate::io::parent_dir(dest);
            match fs::metadata(&parent) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(Error::Usage(format!(
                    "{} is not a directory, so it cannot hold the destination {}",
                    parent.display(),
                    dest.display()
                ))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Usage(format!(
                    "the directory {} that is to hold the destination {} does not exist; \
                     unseal does not create it: mkdir -p {} first",
                    parent.display(),
                    dest.display(),
                    parent.display()
                ))),
                Err(e) => Err(Error::io("cannot inspect", &parent, e)),
            }
        }
        Err(e) => Err(Error::io("cannot inspect destination", dest, e)),
        Ok(m) if m.is_dir() => {
            let mut it =
                fs::read_dir(dest).map_err(|e| Error::io("cannot read destination", dest, e))?;
            if it.next().is_some() {
                Err(dest_not_empty(dest))
            } else {
                Ok(())
            }
        }
        Ok(_) => Err(Error::Refused(format!(
            "destination {} exists and is not a directory",
            dest.display()
        ))),
    }
}

/// The refusal for a DEST that holds something (also when another process
/// filled it while this unseal ran and the final rename found it so).
fn dest_not_empty(dest: &Path) -> Error {
    Error::Refused(format!(
        "destination {} is not empty; give a new directory",
        dest.display()
    ))
}

/// The staging directory: created mode 0700 beside DEST, with a descriptor
/// for fd-relative work. Until [`StagingDir::moved`] it is removed on every
/// failure: explicitly by [`StagingDir::discard`], which reports what could
/// not be removed, or, on a panic, by `Drop`.
pub(crate) struct StagingDir {
    pub(crate) path: PathBuf,
    pub(crate) fd: OwnedFd,
    /// Renamed onto DEST: nothing left to remove.
    pub(crate) moved: Cell<bool>,
}

impl StagingDir {
    /// Extraction into this directory, every file created on the calling
    /// thread (no [`crate::creators::Creators`]).
    pub(crate) fn staging(&self) -> Staging<'_> {
        Staging {
            root: self.path.clone(),
            fd: self.fd.as_fd(),
            parent: ParentCache::default(),
            creators: None,
        }
    }

    pub(crate) fn create(parent: &Path) -> Result<StagingDir> {
        let err = |e| Error::io("cannot create a staging directory in", parent, e);
        let path = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(err)?
            .keep();
        // The umask may have taken bits from 0700 (never added any): set
        // exactly 0700, so that the owner can work in it and nobody else
        // can look (issue #10 item 4).
        let open = || -> io::Result<OwnedFd> {
            let fd = match rustix::fs::open(&path, dir_flags(), Mode::empty()) {
                Err(rustix::io::Errno::ACCESS) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
                    rustix::fs::open(&path, dir_flags(), Mode::empty())?
                }
                other => other?,
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
            Ok(fd)
        };
        match open() {
            Ok(fd) => Ok(StagingDir {
                path,
                fd,
                moved: Cell::new(false),
            }),
            Err(e) => {
                let _ = fs::remove_dir(&path);
                Err(err(e))
            }
        }
    }

    /// Remove the staging directory after `error`. If anything remains,
    /// the error says so and names it; `error` stays the main message and
    /// decides the exit code.
    pub(crate) fn discard(self, error: Error) -> Error {
        if self.moved.replace(true) {
            return error;
        }
        let mut r = Removal::default();
        remove_tree(&self.fd, &self.path, &mut r);
        match r.first {
            None => error,
            Some(first) => Error::NotRemoved {
                error: Box::new(error),
                what: format!(
                    "the staging directory {} could not be removed completely ({} {}, the first: {first}); it may hold plaintext of the case: delete it",
                    self.path.display(),
                    r.failures,
                    if r.failures == 1 { "error" } else { "errors" },
                ),
            },
        }
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.moved.get() {
            remove_tree(&self.fd, &self.path, &mut Removal::default());
        }
    }
}

/// What removing a tree failed to do.
#[derive(Default)]
struct Removal {
    failures: u64,
    first: Option<String>,
}

impl Removal {
    fn fail(&mut self, what: &str, path: &Path, e: impl Into<io::Error>) {
        self.failures += 1;
        if self.first.is_none() {
            self.first = Some(format!("{what} {}: {}", path.display(), e.into()));
        }
    }
}

/// Remove the directory `root` (open as `fd`) and everything in it, as its
/// owner and whatever modes its entries have: each directory gets mode 0700
/// before it is read, so a restored 0555 or 0000 does not stop the removal.
/// Never follows a symlink; goes on past every failure and counts it.
fn remove_tree(fd: &OwnedFd, root: &Path, r: &mut Removal) {
    if let Ok(dup) = fd.try_clone() {
        let _ = clear_dir(dup, root, r);
    } else {
        r.fail(
            "cannot open",
            root,
            io::Error::other("no file descriptor left"),
        );
    }
    // By path: a symlink put in its place is not removed (ENOTDIR).
    if let Err(e) = fs::remove_dir(root) {
        r.fail("cannot remove", root, e);
    }
}

/// Empty the directory open as `dir` (at `path`, for messages). Returns a
/// descriptor of the same directory, or `None` if it was lost. Before
/// descending, the parent's descriptor is closed and afterwards reopened
/// through `..`, so that a deep tree (up to 2048 levels fit in a vault's
/// paths) does not run out of file descriptors.
fn clear_dir(mut dir: OwnedFd, path: &Path, r: &mut Removal) -> Option<OwnedFd> {
    let _ = rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700));
    let mut names: Vec<CString> = Vec::new();
    match rustix::fs::Dir::read_from(&dir) {
        Ok(mut d) => {
            while let Some(ent) = d.read() {
                match ent {
                    Ok(ent) => {
                        let n = ent.file_name();
                        if n != c"." && n != c".." {
                            names.push(n.to_owned());
                        }
                    }
                    Err(e) => {
                        r.fail("cannot read directory", path, e);
                        break;
                    }
                }
            }
        }
        Err(e) => r.fail("cannot read directory", path, e),
    }
    for name in names {
        let child = path.join(OsStr::from_bytes(name.to_bytes()));
        let is_dir = match rustix::fs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => FileType::from_raw_mode(st.st_mode) == FileType::Directory,
            Err(e) => {
                r.fail("cannot inspect", &child, e);
                continue;
            }
        };
        if is_dir {
            match open_subdir(&dir, name.as_c_str()) {
                Ok(sub) => {
                    drop(dir);
                    let sub = clear_dir(sub, &child, r)?;
                    dir = match rustix::fs::openat(&sub, c"..", dir_flags(), Mode::empty()) {
                        Ok(d) => d,
                        Err(e) => {
                            r.fail("cannot reopen", path, e);
                            return None;
                        }
                    };
                }
                Err(e) => {
                    r.fail("cannot open", &child, e);
                    continue;
                }
            }
        }
        let flags = if is_dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        if let Err(e) = rustix::fs::unlinkat(&dir, name.as_c_str(), flags) {
            r.fail("cannot remove", &child, e);
        }
    }
    Some(dir)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Open the subdirectory `name` of `dir`, giving it mode 0700 first if its
/// mode keeps its owner out.
fn open_subdir(dir: &OwnedFd, name: &CStr) -> rustix::io::Result<OwnedFd> {
    match rustix::fs::openat(dir, name, dir_flags(), Mode::empty()) {
        Err(rustix::io::Errno::ACCESS) => {
            // `name` was just seen as a directory (not a link) in a tree
            // only this user can change.
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rustix::fs::openat(dir, name, dir_flags(), Mode::empty())
        }
        other => other,
    }
}

/// Unseal a vault into `opts.dest`.
pub fn unseal(opts: UnsealOptions) -> Result<UnsealReport> {
    let _progress = crate::progress::Guard;
    check_dest(&opts.dest)?;
    if !opts.paths.is_empty() {
        return unseal_paths(&opts);
    }
    let parent = crate::io::parent_dir(&opts.dest);
    let staging = StagingDir::create(&parent)?;
    match restore(&opts, &staging) {
        Ok(report) => Ok(report),
        Err(e) => Err(staging.discard(e)),
    }
}

/// The part of `rel` below `data/`, for fd-relative calls on the staging
/// root (`data` itself is the root).
pub(crate) fn case_rel(bag_path: &str) -> &str {
    bag_path.strip_prefix("data/").unwrap_or(".")
}

/// The recorded mtime as `utimensat` takes it (atime = mtime).
fn timestamps(e: &Entry) -> Timestamps {
    let t = Timespec {
        tv_sec: e.mtime,
        tv_nsec: e.mtime_nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Compare what the filesystem holds with the recorded time.
fn check_stored(e: &Entry, st: &rustix::fs::Statx, out: &mut Vec<MtimeNotStored>) {
    let (s, ns) = (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec);
    if (s, ns) != (e.mtime, e.mtime_nsec) {
        out.push(MtimeNotStored {
            path: case_rel(&e.path).to_string(),
            mtime: e.mtime,
            mtime_nsec: e.mtime_nsec,
            stored_mtime: s,
            stored_mtime_nsec: ns,
        });
    }
}

/// Set the times of the entry at `rel` below `dir` without following a
/// link, read them back, check that it is the kind the vault records (the
/// mode is then applied by path, which would follow a link), and apply the
/// mode to a file or directory.
fn restore_entry(
    staging: BorrowedFd<'_>,
    parent: &mut ParentCache,
    root: &Path,
    e: &Entry,
    out: &mut Vec<MtimeNotStored>,
) -> Result<()> {
    let rel = case_rel(&e.path);
    let p = || root.join(rel);
    let (dir, rel) = parent
        .split(staging, rel)
        .map_err(|err| Error::io("cannot set mtime of", &p(), err.into()))?;
    match rustix::fs::utimensat(dir, rel, &timestamps(e), AtFlags::SYMLINK_NOFOLLOW) {
        // A time the kernel cannot take at all is one the filesystem did
        // not store: reported by the read-back below, like a clamped one.
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::OVERFLOW) => {}
        Err(err) => return Err(Error::io("cannot set mtime of", &p(), err.into())),
    }
    let st = rustix::fs::statx(
        dir,
        rel,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::TYPE | StatxFlags::MTIME,
    )
    .map_err(|err| Error::io("cannot inspect", &p(), err.into()))?;
    let kind = FileType::from_raw_mode(st.stx_mode.into());
    let want = match e.kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    };
    if kind != want {
        return Err(Error::io(
            "cannot restore",
            &p(),
            io::Error::other(format!(
                "it is no longer the {} unseal created",
                e.kind.as_str()
            )),
        ));
    }
    check_stored(e, &st, out);
    if e.kind != Kind::Symlink {
        rustix::fs::chmodat(
            dir,
            rel,
            Mode::from_raw_mode(e.mode & 0o777),
            AtFlags::empty(),
        )
        .map_err(|err| Error::io("cannot set mode of", &p(), err.into()))?;
    }
    Ok(())
}

/// Extract, check, restore metadata and move into place. On error the
/// caller removes the staging directory (unless it was already moved).
fn restore(opts: &UnsealOptions, staging: &StagingDir) -> Result<UnsealReport> {
    let root = staging.path.clone();
    let mut opened = std::thread::scope(|scope| {
        let mut x = Staging {
            root: root.clone(),
            fd: staging.fd.as_fd(),
            parent: ParentCache::default(),
            creators: crate::creators::Creators::start(scope, staging.fd.as_fd(), &root),
        };
        // The threads have ended when the scope does, so nothing is
        // created while the caller removes staging after an error.
        let opened = open_vault(&opts.vault, &opts.identities, &mut x);
        match x.creators.take() {
            Some(c) => c.settle(opened),
            None => opened,
        }
    })?;
    check_links(opts, &opened.json, None)?;
    let index = opened.index.take();
    finish(
        opts,
        staging,
        &opened.json,
        index,
        &opened.case_id,
        Some(opened.vault_sha256.clone()),
        &[],
    )
}

/// After every entry of `json` was extracted into `staging` and checked:
/// restore links, times and modes, make it durable, move it into place.
fn finish(
    opts: &UnsealOptions,
    staging: &StagingDir,
    json: &CaseJson,
    index: Option<(crate::read::random::RandomVault, crate::read::random::Tail)>,
    case_id: &str,
    vault_sha256: Option<String>,
    paths: &[String],
) -> Result<UnsealReport> {
    let root = staging.path.clone();
    // Every check that does not depend on the disk comes before the first
    // recorded mode is applied (issue #10 item 1); the cleanup copes with
    // any mode anyway.
    crate::signal::check()?;
    check_dest(&opts.dest)?;

    let dir = staging.fd.as_fd();
    let mut not_stored = Vec::new();
    let data = match index {
        Some((rv, tail)) => restore_tree_streaming(dir, &root, json, rv, tail, &mut not_stored)?,
        None => {
            restore_tree(dir, &root, json, &mut not_stored)?;
            json.entries.iter().find(|e| e.path == "data").cloned()
        }
    };
    crate::signal::check()?;

    // Durable before visible: one syncfs for the whole tree instead of an
    // fsync per file, then the rename, then the directory.
    rustix::fs::syncfs(dir).map_err(|e| Error::io("cannot sync", &root, e.into()))?;
    if let Err(e) = fs::rename(&root, &opts.dest) {
        // DEST may have been filled since it was checked (another unseal
        // finished first): say so rather than "directory not empty".
        check_dest(&opts.dest)?;
        return Err(Error::io("cannot move the unsealed case to", &opts.dest, e));
    }
    staging.moved.set(true);
    restore_root(dir, &opts.dest, data.as_ref(), &mut not_stored)?;

    let (mut files, mut dirs, mut links, mut bytes) = (0, 0, 0, 0);
    if paths.is_empty() {
        let t = &json.totals;
        (files, dirs, links, bytes) = (t.files, t.dirs, t.symlinks, t.bytes);
    } else {
        for e in &json.entries {
            match e.kind {
                Kind::File => {
                    files += 1;
                    bytes += e.size.unwrap_or(0);
                }
                Kind::Dir => dirs += 1,
                Kind::Symlink => links += 1,
            }
        }
    }
    Ok(UnsealReport {
        vault: opts.vault.clone(),
        dest: opts.dest.clone(),
        case_id: case_id.to_string(),
        files,
        dirs,
        symlinks: links,
        bytes,
        vault_sha256,
        paths: paths.to_vec(),
        mtimes_not_stored: not_stored,
    })
}

/// An extractor that keeps only what a [`Selection`] selects (`--path`
/// from a vault read by streaming); the rest is read, checked, dropped.
///
/// [`Selection`]: crate::read::select::Selection
struct Selecting<'s> {
    inner: Staging<'s>,
    sel: &'s mut crate::read::select::Selection,
}

/// A selected file, or one read and dropped.
enum Kept {
    File(fs::File),
    Dropped(io::Sink),
}

impl io::Write for Kept {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Kept::File(f) => f.write(buf),
            Kept::Dropped(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Kept::File(f) => f.flush(),
            Kept::Dropped(s) => s.flush(),
        }
    }
}

impl Extract for Selecting<'_> {
    type File = Kept;
    fn dir(&mut self, rel: &str) -> Result<()> {
        if self.sel.admit(&format!("data/{rel}")) {
            self.inner.dir(rel)?;
        }
        Ok(())
    }
    fn create_file(&mut self, rel: &str) -> Result<Kept> {
        if self.sel.admit(&format!("data/{rel}")) {
            return Ok(Kept::File(self.inner.create_file(rel)?));
        }
        Ok(Kept::Dropped(io::sink()))
    }
    fn write_error(&self, rel: &str, e: io::Error) -> Error {
        self.inner.write_error(rel, e)
    }
    fn reserve(&mut self, rel: &str, size: u64) -> Result<()> {
        if self.sel.admit(&format!("data/{rel}")) {
            return self.inner.reserve(rel, size);
        }
        Ok(())
    }
    fn restart(&mut self) -> Result<()> {
        self.inner.restart()
    }
}

/// `unseal --path`: from a binary version 3 vault, read the metadata from
/// the end (every check of FORMAT §13.3) and refuse a path the vault does
/// not hold before anything is written; then read only the selected
/// entries into the staging directory, check each, and finish as a full
/// unseal does. Other vaults are read fully, and only the selection is
/// kept.
fn unseal_paths(opts: &UnsealOptions) -> Result<UnsealReport> {
    use crate::read::{random, select};
    let mut sel = select::Selection::new(&opts.paths)?;
    // One unwrap of the file key for both reads (the end, then all).
    let remember = crate::keys::Remembering::new(&opts.identities);
    let ids: [&dyn age::Identity; 1] = [&remember];
    let partial = match random::RandomVault::open(&opts.vault, &ids)? {
        Some(mut rv) => random::read_tail(&mut rv)?.map(|tail| (std::cell::RefCell::new(rv), tail)),
        None => None,
    };
    let Some((rv, tail)) = partial else {
        return unseal_paths_streaming(opts, sel, &ids);
    };
    let (head, picked) = select::select(&rv, &tail, &mut sel)?;
    let mut json = CaseJson {
        entries: picked,
        ..head
    };
    check_links(opts, &json, Some(&mut sel))?;
    let parent = crate::io::parent_dir(&opts.dest);
    let staging = StagingDir::create(&parent)?;
    let res = (|| {
        let mut x = staging.staging();
        select::extract(&rv, &tail.case_id, &json.entries, &mut sel, &mut x)?;
        json.entries.retain(|e| sel.admit(&e.path));
        finish(
            opts,
            &staging,
            &json,
            None,
            &tail.case_id,
            None,
            sel.wanted(),
        )
    })();
    res.map_err(|e| staging.discard(e))
}

/// `--path` from a vault that cannot be read from its end: everything is
/// read and checked, only the selection is kept.
fn unseal_paths_streaming(
    opts: &UnsealOptions,
    mut sel: crate::read::select::Selection,
    ids: &[&dyn age::Identity],
) -> Result<UnsealReport> {
    let parent = crate::io::parent_dir(&opts.dest);
    let staging = StagingDir::create(&parent)?;
    let res = (|| {
        let mut x = Selecting {
            inner: staging.staging(),
            sel: &mut sel,
        };
        let opened = crate::read::open_vault_with(&opts.vault, ids, &mut x)?;
        drop(x);
        let mut json = opened.json.clone();
        json.entries
            .retain(|e| sel.admit(&e.path) || e.kind == Kind::Symlink);
        sel.check_found()?;
        check_links(opts, &json, Some(&mut sel))?;
        json.entries.retain(|e| sel.admit(&e.path));
        finish(
            opts,
            &staging,
            &json,
            None,
            &opened.case_id,
            Some(opened.vault_sha256.clone()),
            sel.wanted(),
        )
    })();
    res.map_err(|e| staging.discard(e))
}

/// Links are checked before anything else is created, against one map
/// of them all; loops stay inside the case and are recreated (FORMAT §6
/// step 5, issue #10 items 8 and 10).
/// With `only`, just the links it selects are checked (`--path`).
fn check_links(
    opts: &UnsealOptions,
    json: &CaseJson,
    mut only: Option<&mut crate::read::select::Selection>,
) -> Result<()> {
    let mut links = Links::new(json);
    for e in json.entries.iter().filter(|e| e.kind == Kind::Symlink) {
        if opts.allow_external_links {
            break;
        }
        if only.as_mut().is_some_and(|s| !s.admit(&e.path)) {
            continue;
        }
        if let LinkStatus::Outside(why) = links.status(&e.path) {
            return Err(Error::UnsafeEntry(format!(
                "symlink {:?} points outside the case: {why}",
                &e.path["data/".len()..]
            )));
        }
    }
    Ok(())
}

/// Create the links and restore every entry's times and mode below the
/// staging directory `dir` (at `root`), except the case root's own.
pub(crate) fn restore_tree(
    dir: BorrowedFd<'_>,
    root: &Path,
    json: &CaseJson,
    not_stored: &mut Vec<MtimeNotStored>,
) -> Result<()> {
    // Links first: creating one changes its directory's mtime and needs
    // write permission on it. Then files and links, then directories
    // deepest first, so that touching a child never changes a restored
    // directory and a directory's mode is applied only when nothing below
    // it is left to do. The root ("data") waits until it is DEST.
    // Each entry is reached from its parent directory's descriptor.
    let mut parent = ParentCache::default();
    for e in json.entries.iter().filter(|e| e.kind == Kind::Symlink) {
        let rel = case_rel(&e.path);
        let err = |err: rustix::io::Errno| {
            Error::io("cannot create symlink", &root.join(rel), err.into())
        };
        let (at, name) = parent.split(dir, rel).map_err(err)?;
        rustix::fs::symlinkat(e.target.as_deref().unwrap_or(""), at, name).map_err(err)?;
    }
    restore_leaves(dir, root, &json.entries, not_stored)?;
    let mut dirs: Vec<&Entry> = json
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Dir && e.path != "data")
        .collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.path.matches('/').count()));
    // Deepest first: a directory's parent gets its mode only after all of
    // its children, so the cached parent stays searchable while in use.
    for e in dirs {
        restore_entry(dir, &mut parent, root, e, not_stored)?;
    }
    Ok(())
}

/// [`restore_tree`] for a version 3 vault read in lockstep, whose `json`
/// holds only the symlink records: the links first, then one more pass
/// over `casevault.json` from the vault's end restores each file's and
/// link's time and mode as it comes and each directory's once everything
/// below it is done (a stack of open directories, not every entry).
/// Returns the case root's entry (`data`).
fn restore_tree_streaming(
    dir: BorrowedFd<'_>,
    root: &Path,
    json: &CaseJson,
    rv: crate::read::random::RandomVault,
    tail: crate::read::random::Tail,
    not_stored: &mut Vec<MtimeNotStored>,
) -> Result<Option<Entry>> {
    for e in json.entries.iter().filter(|e| e.kind == Kind::Symlink) {
        let rel = case_rel(&e.path);
        rustix::fs::symlinkat(e.target.as_deref().unwrap_or(""), dir, rel)
            .map_err(|err| Error::io("cannot create symlink", &root.join(rel), err.into()))?;
    }
    let cell = std::cell::RefCell::new(rv);
    std::thread::scope(|scope| {
        let mut leaves = StreamedLeaves::new(scope, dir, root);
        let mut parent = ParentCache::default();
        let mut open: Vec<Entry> = Vec::new();
        let mut data = None;
        crate::read::random::check_meta(&cell, &tail, &mut |e| {
            while let Some(top) = open.last() {
                let inside = e
                    .path
                    .strip_prefix(top.path.as_str())
                    .is_some_and(|r| r.starts_with('/'));
                if inside {
                    break;
                }
                let done = open.pop().expect("not empty");
                // Everything below it first: its mode may take away the
                // search permission their paths need.
                leaves.settle(not_stored)?;
                restore_entry(dir, &mut parent, root, &done, not_stored)?;
            }
            match e.kind {
                Kind::Dir if e.path == "data" => data = Some(e.clone()),
                Kind::Dir => open.push(e.clone()),
                _ => leaves.push(e.clone()),
            }
            crate::signal::check()
        })?;
        leaves.settle(not_stored)?;
        while let Some(done) = open.pop() {
            restore_entry(dir, &mut parent, root, &done, not_stored)?;
        }
        Ok(data)
    })
}

/// Files and links per batch of [`StreamedLeaves`].
const LEAF_BATCH: usize = 256;

/// The files and links of [`restore_tree_streaming`], restored in batches
/// on two threads while this one parses `casevault.json`: setting a time
/// or a mode changes no directory. With one core, here, one after
/// another. What they report is joined in list order, and the first error
/// in list order wins, as it would one entry after another
/// ([`StreamedLeaves::settle`]).
struct StreamedLeaves<'a, 'scope> {
    dir: BorrowedFd<'a>,
    root: &'a Path,
    parent: ParentCache,
    batch: Vec<Entry>,
    /// Batches handed out, by sequence number.
    sent: u64,
    /// The two threads, if there are two cores.
    workers: Option<LeafWorkers<'scope>>,
    /// Batches restored, by sequence number, not yet joined.
    done: std::collections::BTreeMap<u64, Leaves>,
    /// Batches sent to the workers and not yet back.
    out: u64,
}

/// What restoring one batch reported: the first error, and the times the
/// file system did not store exactly.
type Leaves = (Result<()>, Vec<MtimeNotStored>);

/// Batches to each thread, what they report (by sequence number), and
/// the threads, to tell one that ended from one that is slow.
type LeafWorkers<'scope> = (
    Vec<std::sync::mpsc::SyncSender<(u64, Vec<Entry>)>>,
    std::sync::mpsc::Receiver<(u64, Leaves)>,
    Vec<std::thread::ScopedJoinHandle<'scope, ()>>,
);

fn restore_batch(
    dir: BorrowedFd<'_>,
    parent: &mut ParentCache,
    root: &Path,
    batch: &[Entry],
) -> Leaves {
    let mut out = Vec::new();
    let r = batch
        .iter()
        .try_for_each(|e| restore_entry(dir, parent, root, e, &mut out));
    (r, out)
}

impl<'a, 'scope> StreamedLeaves<'a, 'scope> {
    fn new<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        dir: BorrowedFd<'a>,
        root: &'a Path,
    ) -> Self
    where
        'a: 'env,
    {
        let two_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
        let workers = two_cores.then(|| {
            let (back, results) = std::sync::mpsc::channel();
            let (txs, handles) = (0..2)
                .map(|_| {
                    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<Entry>)>(2);
                    let back = back.clone();
                    let handle = scope.spawn(move || {
                        let mut parent = ParentCache::default();
                        for (seq, batch) in rx {
                            let r = restore_batch(dir, &mut parent, root, &batch);
                            if back.send((seq, r)).is_err() {
                                return;
                            }
                        }
                    });
                    (tx, handle)
                })
                .unzip();
            (txs, results, handles)
        });
        StreamedLeaves {
            dir,
            root,
            parent: ParentCache::default(),
            batch: Vec::with_capacity(LEAF_BATCH),
            sent: 0,
            workers,
            done: std::collections::BTreeMap::new(),
            out: 0,
        }
    }

    fn push(&mut self, e: Entry) {
        self.batch.push(e);
        if self.batch.len() == LEAF_BATCH {
            self.hand_out();
        }
    }

    /// The batch so far: to the threads in turn, or restored here.
    fn hand_out(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(LEAF_BATCH));
        let seq = self.sent;
        self.sent += 1;
        let batch = match self.workers.as_ref() {
            Some((txs, _, _)) => match txs[(seq % txs.len() as u64) as usize].send((seq, batch)) {
                Ok(()) => {
                    self.out += 1;
                    return;
                }
                // The thread stopped (it only does when this side went
                // away): restored here.
                Err(std::sync::mpsc::SendError((_, batch))) => batch,
            },
            None => batch,
        };
        let r = restore_batch(self.dir, &mut self.parent, self.root, &batch);
        self.done.insert(seq, r);
    }

    /// Wait until every entry pushed so far is restored, then report in
    /// list order: the times not stored go to `not_stored`, and the first
    /// error is returned.
    fn settle(&mut self, not_stored: &mut Vec<MtimeNotStored>) -> Result<()> {
        if !self.batch.is_empty() {
            self.hand_out();
        }
        let stopped = || Error::Refused("a thread restoring times and modes stopped".into());
        while self.out > 0 {
            let Some((_, rx, handles)) = self.workers.as_ref() else {
                break;
            };
            // A thread that ended while batches are out (it panicked)
            // never reports them: waiting for it would never end.
            match rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok((seq, r)) => {
                    self.done.insert(seq, r);
                    self.out -= 1;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if handles.iter().any(|h| h.is_finished()) {
                        return Err(stopped());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(stopped()),
            }
        }
        for (_, (r, mut out)) in std::mem::take(&mut self.done) {
            not_stored.append(&mut out);
            r?;
        }
        Ok(())
    }
}

/// Entries below which the files and links are restored on one thread.
const PARALLEL_LEAVES: usize = 4096;

/// Restore the times and modes of the files and links among `entries`.
/// Setting them changes no directory, so with many entries the two halves
/// of the list go to two threads (issue #12); what each reports is joined
/// in list order, and the first error in list order wins, as it would
/// one entry after another.
fn restore_leaves(
    dir: BorrowedFd<'_>,
    root: &Path,
    entries: &[Entry],
    not_stored: &mut Vec<MtimeNotStored>,
) -> Result<()> {
    let leaves = |part: &[Entry], out: &mut Vec<MtimeNotStored>| -> Result<()> {
        let mut parent = ParentCache::default();
        for e in part
            .iter()
            .filter(|e| matches!(e.kind, Kind::File | Kind::Symlink))
        {
            restore_entry(dir, &mut parent, root, e, out)?;
        }
        Ok(())
    };
    let two_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    if entries.len() < PARALLEL_LEAVES || !two_cores {
        return leaves(entries, not_stored);
    }
    let (first, second) = entries.split_at(entries.len() / 2);
    let mut later = Vec::new();
    let (a, b) = std::thread::scope(|s| {
        let other = s.spawn(|| leaves(second, &mut later));
        let a = leaves(first, not_stored);
        let b = match other.join() {
            Ok(b) => b,
            Err(p) => std::panic::resume_unwind(p),
        };
        (a, b)
    });
    a?;
    b?;
    not_stored.append(&mut later);
    Ok(())
}

/// The case root's own mode and mtime, now that the tree is `dest`: until
/// here it stayed 0700, whatever the case records (issue #10 item 4).
/// Through the descriptor `dir`, so no path can be swapped underneath.
pub(crate) fn restore_root(
    dir: BorrowedFd<'_>,
    dest: &Path,
    data: Option<&Entry>,
    not_stored: &mut Vec<MtimeNotStored>,
) -> Result<()> {
    let after_move = |what: &'static str, e: rustix::io::Errno| Error::io(what, dest, e.into());
    if let Some(e) = data {
        rustix::fs::futimens(dir, &timestamps(e))
            .map_err(|err| after_move("the case is complete, but cannot set the mtime of", err))?;
        let st = rustix::fs::statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::MTIME)
            .map_err(|err| after_move("the case is complete, but cannot inspect", err))?;
        check_stored(e, &st, not_stored);
        rustix::fs::fchmod(dir, Mode::from_raw_mode(e.mode & 0o777))
            .map_err(|err| after_move("the case is complete, but cannot set the mode of", err))?;
    }
    rustix::fs::fsync(dir).map_err(|e| after_move("the case is complete, but cannot sync", e))?;
    crate::io::sync_parent_dir(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    fn open_dir(p: &Path) -> OwnedFd {
        rustix::fs::open(p, dir_flags(), Mode::empty()).unwrap()
    }

    /// Above [`PARALLEL_LEAVES`] entries the two halves run on two
    /// threads: every entry gets its time and mode, and the error reported
    /// is the first in list order (here one in each half fails).
    #[test]
    fn restore_leaves_in_two_halves_keeps_list_order() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        fs::create_dir(root.join("d")).unwrap();
        let n = PARALLEL_LEAVES + 10;
        let entries: Vec<Entry> = (0..n)
            .map(|i| {
                let path = format!("data/d/f{i:05}");
                fs::write(root.join(case_rel(&path)), b"x").unwrap();
                Entry {
                    path,
                    kind: Kind::File,
                    size: Some(1),
                    sha256: None,
                    target: None,
                    mode: 0o640,
                    mtime: 1_000_000 + i as i64,
                    mtime_nsec: 7,
                    offset: None,
                }
            })
            .collect();
        let dir = open_dir(&root);
        let mut not_stored = Vec::new();
        restore_leaves(dir.as_fd(), &root, &entries, &mut not_stored).unwrap();
        assert!(not_stored.is_empty(), "{not_stored:?}");
        for i in [0, n / 2 - 1, n / 2, n - 1] {
            let m = fs::symlink_metadata(root.join(format!("d/f{i:05}"))).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o640);
            assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000 + i as i64, 7));
        }
        // One entry missing in each half: the first half's is reported.
        let (early, late) = (n / 4, 3 * n / 4);
        for i in [early, late] {
            fs::remove_file(root.join(format!("d/f{i:05}"))).unwrap();
        }
        let e = restore_leaves(dir.as_fd(), &root, &entries, &mut Vec::new()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("d/f{early:05}")), "{msg}");
        fs::write(root.join(format!("d/f{early:05}")), b"x").unwrap();
        let e = restore_leaves(dir.as_fd(), &root, &entries, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains(&format!("d/f{late:05}")), "{e}");
    }

    /// A deep tree of write-protected directories goes entirely, through
    /// `..` at every level, and links are removed, never followed.
    #[test]
    fn remove_tree_removes_deep_protected_trees_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"keep").unwrap();
        let root = tmp.path().join("staging");
        let mut deep = root.clone();
        for _ in 0..600 {
            deep.push("d");
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d/link")).unwrap();
        let mut p = deep.clone();
        while p != root {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o500)).unwrap();
            p.pop();
        }
        let mut r = Removal::default();
        remove_tree(&open_dir(&root), &root, &mut r);
        assert_eq!((r.failures, r.first), (0, None));
        assert!(!root.exists());
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");
    }

    /// An entry that cannot be removed (immutable) is counted and named;
    /// everything else still goes. Needs root and chattr on this
    /// filesystem; the unprivileged tests in tests/it/unseal_unpriv.rs
    /// cover what a plain user meets.
    #[test]
    fn remove_tree_goes_on_past_failures_and_names_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("staging");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"x").unwrap();
        fs::write(root.join("a/stuck"), b"x").unwrap();
        fs::write(root.join("z"), b"x").unwrap();
        fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o555)).unwrap();
        let immutable = Command::new("chattr")
            .arg("+i")
            .arg(root.join("a/stuck"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !immutable {
            eprintln!("SKIPPED: chattr +i does not work here");
            return;
        }
        let mut r = Removal::default();
        remove_tree(&open_dir(&root), &root, &mut r);
        let _ = Command::new("chattr")
            .arg("-i")
            .arg(root.join("a/stuck"))
            .status();
        // unlink a/stuck, rmdir a, rmdir the root.
        assert_eq!(r.failures, 3, "{:?}", r.first);
        let first = r.first.unwrap();
        assert!(
            first.starts_with("cannot remove ") && first.contains("a/stuck"),
            "{first}"
        );
        let left: Vec<_> = walkdir::WalkDir::new(&root)
            .into_iter()
            .map(|e| e.unwrap().path().strip_prefix(&root).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            left,
            [PathBuf::new(), PathBuf::from("a"), PathBuf::from("a/stuck")]
        );
    }
}

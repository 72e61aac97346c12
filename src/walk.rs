//! A walk of a case tree through directory handles (issue #10, item 3).
//!
//! Every directory is opened with `openat(parent, name, O_NOFOLLOW |
//! O_DIRECTORY)` from the handle of its parent, every entry is `fstatat`'ed
//! without following links, and files and symlinks are opened or read
//! relative to their parent's handle. Once the root is open, renaming a
//! directory of the tree or swapping it for a symlink cannot redirect the
//! walk: it goes on reading the directories it opened. A directory that was
//! swapped between its `fstatat` and its `openat` is refused.
//!
//! The order is `walkdir`'s with `sort_by_file_name` (pre-order, each
//! directory's entries sorted by their bytes), so seal, sweep's fingerprint
//! and its removal checks all see the same sequence.
//!
//! One handle stays open per directory level of the current path.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::{Error, Result};

/// The stat fields casevault uses, from `fstatat` or `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Meta {
    // The field types of `struct stat` differ between architectures; on
    // some of them these casts are no-ops.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &rustix::fs::Stat) -> Meta {
        Meta {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }

    /// The same fields from a `std` metadata (of an open file).
    pub fn from_std(m: &fs::Metadata) -> Meta {
        Meta {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }
    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }
    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }
    pub fn dev(&self) -> u64 {
        self.dev
    }
    pub fn ino(&self) -> u64 {
        self.ino
    }
    /// `st_mode`, type bits included.
    pub fn mode(&self) -> u32 {
        self.mode
    }
    pub fn len(&self) -> u64 {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub fn mtime(&self) -> i64 {
        self.mtime.0
    }
    pub fn mtime_nsec(&self) -> i64 {
        self.mtime.1
    }
    pub fn ctime(&self) -> i64 {
        self.ctime.0
    }
    pub fn ctime_nsec(&self) -> i64 {
        self.ctime.1
    }
    /// Same object, same size and times: nothing was written to it.
    pub fn same(&self, other: &Meta) -> bool {
        self.file_type() == other.file_type()
            && (self.dev, self.ino, self.size, self.mtime, self.ctime)
                == (other.dev, other.ino, other.size, other.mtime, other.ctime)
    }
    /// What a special file is, for messages.
    pub fn describe_special(&self) -> &'static str {
        match self.file_type() {
            FileType::Fifo => "FIFO",
            FileType::Socket => "socket",
            FileType::BlockDevice => "block device",
            FileType::CharacterDevice => "character device",
            _ => "special file",
        }
    }
}

/// An open directory handle and where it is.
#[derive(Debug, Clone)]
pub struct Root {
    /// The path shown in messages (not used to open anything).
    pub path: PathBuf,
    fd: Rc<OwnedFd>,
    meta: Meta,
    /// The handle of the directory holding the root and the root's name
    /// there, when the root was opened from it (sweep): lets a removal
    /// `rmdir` the root through that handle.
    parent: Option<(Rc<OwnedFd>, OsString)>,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

impl Root {
    /// Open the directory `path` names, following symlinks on the way (the
    /// command line's choice, as `seal DIR` always did).
    pub fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(path, dir_flags(), Mode::empty())
            .map_err(|e| Error::io("cannot open directory", path, e.into()))?;
        let meta = rustix::fs::fstat(&fd).map_err(|e| Error::io("cannot stat", path, e.into()))?;
        Ok(Root {
            path: path.to_path_buf(),
            fd: Rc::new(fd),
            meta: Meta::from_stat(&meta),
            parent: None,
        })
    }

    /// Open `name` in `self` as a directory, refusing a symlink or anything
    /// that is not a directory (`O_NOFOLLOW | O_DIRECTORY`). The raw error
    /// is returned so the caller can tell "no longer a directory" apart.
    pub fn open_child(&self, name: &OsStr) -> io::Result<Root> {
        let fd = rustix::fs::openat(
            &*self.fd,
            name,
            dir_flags() | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
        let meta = rustix::fs::fstat(&fd)?;
        Ok(Root {
            path: self.path.join(name),
            fd: Rc::new(fd),
            meta: Meta::from_stat(&meta),
            parent: Some((self.fd.clone(), name.to_os_string())),
        })
    }

    /// The stat of the opened directory.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Where the root itself lives (its parent's handle and its name), if
    /// it was opened with [`Root::open_child`].
    pub fn loc(&self) -> Option<Loc> {
        self.parent
            .clone()
            .map(|(parent, name)| Loc { parent, name })
    }

    /// The entry `name` in this directory.
    pub fn child(&self, name: &OsStr) -> Loc {
        Loc {
            parent: self.fd.clone(),
            name: name.to_os_string(),
        }
    }

    /// Open the directory `rel` below this one again, one component at a
    /// time with [`Root::open_child`], each required to be the directory
    /// `expect` gives for its relative path (same device and inode).
    /// `None` when a component is missing, no longer a directory, or
    /// another directory. Holds at most two handles at a time, so callers
    /// can keep paths instead of a handle per directory.
    pub fn open_below(
        &self,
        rel: &Path,
        expect: &dyn Fn(&Path) -> Option<Meta>,
    ) -> io::Result<Option<Root>> {
        let mut cur = self.clone();
        let mut prefix = PathBuf::new();
        for comp in rel.components() {
            let name = comp.as_os_str();
            prefix.push(name);
            let next = match cur.open_child(name) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ELOOP | libc::ENOTDIR | libc::ENOENT)
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            match expect(&prefix) {
                Some(m) if m.same_object(next.meta()) => cur = next,
                _ => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Walk the tree from this handle.
    pub fn walk(&self) -> Walker {
        Walker {
            root: Some(self.clone()),
            stack: Vec::new(),
        }
    }
}

/// Where an entry lives: its parent's handle and its name there.
#[derive(Debug, Clone)]
pub struct Loc {
    parent: Rc<OwnedFd>,
    name: OsString,
}

impl Loc {
    /// `fstatat` without following a symlink.
    pub fn stat(&self) -> io::Result<Meta> {
        rustix::fs::statat(&*self.parent, &self.name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| Meta::from_stat(&st))
            .map_err(Into::into)
    }
    /// Open a regular file for reading: never following a symlink, never
    /// blocking on a FIFO swapped in.
    pub fn open_file(&self) -> io::Result<fs::File> {
        let fd = rustix::fs::openat(
            &*self.parent,
            &self.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(fs::File::from(fd))
    }
    pub fn read_link(&self) -> io::Result<PathBuf> {
        let t = rustix::fs::readlinkat(&*self.parent, &self.name, Vec::new())?;
        Ok(PathBuf::from(OsString::from_vec(t.into_bytes())))
    }
    /// `unlinkat` a file or symlink.
    pub fn unlink(&self) -> io::Result<()> {
        rustix::fs::unlinkat(&*self.parent, &self.name, AtFlags::empty()).map_err(Into::into)
    }
    /// `unlinkat(AT_REMOVEDIR)`: removes the directory only if it is empty.
    pub fn rmdir(&self) -> io::Result<()> {
        rustix::fs::unlinkat(&*self.parent, &self.name, AtFlags::REMOVEDIR).map_err(Into::into)
    }
}

/// One entry of a walk.
#[derive(Debug)]
pub struct Node {
    /// Path relative to the root (empty for the root itself).
    pub rel: PathBuf,
    /// The root's display path joined with `rel`, for messages.
    pub path: PathBuf,
    pub meta: Meta,
    /// 0 for the root.
    pub depth: usize,
    /// Where it lives; `None` only for a root opened by path.
    pub loc: Option<Loc>,
}

impl Node {
    fn loc(&self) -> io::Result<&Loc> {
        self.loc.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "the walk's root has no parent handle",
            )
        })
    }
    pub fn open_file(&self) -> io::Result<fs::File> {
        self.loc()?.open_file()
    }
    pub fn read_link(&self) -> io::Result<PathBuf> {
        self.loc()?.read_link()
    }
}

struct Frame {
    fd: Rc<OwnedFd>,
    rel: PathBuf,
    path: PathBuf,
    depth: usize,
    names: std::vec::IntoIter<OsString>,
}

/// The walk itself; yields the root first.
pub struct Walker {
    root: Option<Root>,
    stack: Vec<Frame>,
}

/// The names in a directory, sorted by their bytes.
fn read_names(fd: &OwnedFd, path: &Path) -> Result<Vec<OsString>> {
    let err = |e: rustix::io::Errno| Error::io("cannot read", path, e.into());
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(fd.as_fd()).map_err(err)? {
        let ent = ent.map_err(err)?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

impl Walker {
    fn push(&mut self, fd: Rc<OwnedFd>, rel: PathBuf, path: PathBuf, depth: usize) -> Result<()> {
        let names = read_names(&fd, &path)?;
        self.stack.push(Frame {
            fd,
            rel,
            path,
            depth,
            names: names.into_iter(),
        });
        Ok(())
    }

    fn step(&mut self) -> Option<Result<Node>> {
        if let Some(root) = self.root.take() {
            let node = Node {
                rel: PathBuf::new(),
                path: root.path.clone(),
                meta: root.meta,
                depth: 0,
                loc: root
                    .parent
                    .clone()
                    .map(|(parent, name)| Loc { parent, name }),
            };
            if let Err(e) = self.push(root.fd.clone(), PathBuf::new(), root.path.clone(), 1) {
                return Some(Err(e));
            }
            return Some(Ok(node));
        }
        loop {
            let top = self.stack.last_mut()?;
            let Some(name) = top.names.next() else {
                self.stack.pop();
                continue;
            };
            let (rel, path, depth) = (top.rel.join(&name), top.path.join(&name), top.depth);
            let loc = Loc {
                parent: top.fd.clone(),
                name,
            };
            let meta = match loc.stat() {
                Ok(m) => m,
                Err(e) => return Some(Err(Error::io("cannot stat", &path, e))),
            };
            if meta.is_dir() {
                let opened = rustix::fs::openat(
                    &*loc.parent,
                    &loc.name,
                    dir_flags() | OFlags::NOFOLLOW,
                    Mode::empty(),
                )
                .map_err(io::Error::from)
                .and_then(|fd| Ok((rustix::fs::fstat(&fd)?, fd)));
                let replaced = || {
                    Error::Refused(format!(
                        "{}: directory replaced while it was being read; stop whatever changes the case and try again",
                        path.display()
                    ))
                };
                let fd = match opened {
                    Ok((st, fd)) if Meta::from_stat(&st).same_object(&meta) => fd,
                    Ok(_) => return Some(Err(replaced())),
                    // Swapped for a symlink or a file since the fstatat.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                        return Some(Err(replaced()))
                    }
                    Err(e) => return Some(Err(Error::io("cannot open directory", &path, e))),
                };
                if let Err(e) = self.push(Rc::new(fd), rel.clone(), path.clone(), depth + 1) {
                    return Some(Err(e));
                }
            }
            return Some(Ok(Node {
                rel,
                path,
                meta,
                depth,
                loc: Some(loc),
            }));
        }
    }
}

impl Meta {
    fn same_object(&self, other: &Meta) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

impl Iterator for Walker {
    type Item = Result<Node>;
    fn next(&mut self) -> Option<Result<Node>> {
        let item = self.step();
        if matches!(item, Some(Err(_))) {
            // An error ends the walk.
            self.stack.clear();
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_in_walkdir_order_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("C");
        fs::create_dir_all(root.join("b/c")).unwrap();
        fs::write(root.join("a"), b"1").unwrap();
        fs::write(root.join("b/c/d"), b"2").unwrap();
        fs::write(root.join("B"), b"3").unwrap();
        std::os::unix::fs::symlink("/", root.join("b/l")).unwrap();
        let ours: Vec<(PathBuf, usize)> = Root::open(&root)
            .unwrap()
            .walk()
            .map(|n| n.map(|n| (n.rel, n.depth)).unwrap())
            .collect();
        let theirs: Vec<(PathBuf, usize)> = walkdir::WalkDir::new(&root)
            .sort_by_file_name()
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().strip_prefix(&root).unwrap().to_path_buf(),
                    e.depth(),
                )
            })
            .collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn open_child_refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let top = Root::open(dir.path()).unwrap();
        assert!(top.open_child(OsStr::new("real")).is_ok());
        let e = top.open_child(OsStr::new("link")).unwrap_err();
        // Linux checks O_DIRECTORY first (ENOTDIR); ELOOP elsewhere.
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)),
            "{e}"
        );
    }
}

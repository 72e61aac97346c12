//! `casevault unseal`: extract into a staging directory beside the
//! destination, and rename it into place only after every check passed.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use serde::Serialize;

use crate::format::Kind;
use crate::keys::BoxedIdentity;
use crate::open::{open_vault, Extract, LinkStatus, Links};
use crate::{Error, Result};

/// Prefix of the staging directory created beside DEST_DIR.
pub const STAGING_PREFIX: &str = ".casevault-unseal-";

/// What to unseal and where.
pub struct UnsealOptions {
    pub vault: PathBuf,
    pub dest: PathBuf,
    pub identities: Vec<BoxedIdentity>,
    pub allow_external_links: bool,
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
    pub vault_sha256: String,
}

struct Staging {
    root: PathBuf,
}

impl Extract for Staging {
    type File = fs::File;

    fn dir(&mut self, rel: &str) -> Result<()> {
        let p = self.root.join(rel);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .map_err(|e| Error::io("cannot create directory", &p, e))
    }

    fn create_file(&mut self, rel: &str) -> Result<fs::File> {
        let p = self.root.join(rel);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map_err(|e| Error::io("cannot create file", &p, e))
    }

    fn write_error(&self, rel: &str, e: io::Error) -> Error {
        Error::io("cannot write", &self.root.join(rel), e)
    }

    /// Refuse an entry that would leave the staging filesystem with less
    /// than [`free_margin`] bytes, or less than 1% of its inodes, free
    /// (FORMAT §6.1). The size is the one the tar header declares, so a
    /// decompression bomb is stopped before its first byte is written.
    fn reserve(&mut self, rel: &str, size: u64) -> Result<()> {
        let st = rustix::fs::statvfs(&self.root)
            .map_err(|e| Error::io("cannot inspect the filesystem of", &self.root, e.into()))?;
        let unit = if st.f_frsize > 0 {
            st.f_frsize
        } else {
            st.f_bsize
        };
        let avail = st.f_bavail.saturating_mul(unit);
        let margin = free_margin(st.f_blocks.saturating_mul(unit));
        if size.saturating_add(margin) > avail {
            return Err(Error::Refused(format!(
                "not enough free space to unseal: {rel:?} needs {size} bytes, the filesystem \
                 of {} has {avail} bytes free and unseal keeps {margin} free; unseal \
                 elsewhere or free space (the staging directory was removed)",
                crate::io::parent_dir(&self.root).display()
            )));
        }
        if st.f_files > 0 && st.f_favail <= st.f_files / 100 {
            return Err(Error::Refused(format!(
                "not enough free inodes to unseal: the filesystem of {} has {} left and \
                 unseal keeps 1% free",
                crate::io::parent_dir(&self.root).display(),
                st.f_favail
            )));
        }
        Ok(())
    }
}

/// Bytes unseal leaves free on the destination filesystem: 1% of its size,
/// at most 256 MiB (FORMAT §6.1). A crafted vault can fill a disk no
/// further than this.
pub fn free_margin(fs_bytes: u64) -> u64 {
    (fs_bytes / 100).min(256 << 20)
}

/// Check that `dest` does not exist or is an empty directory.
fn check_dest(dest: &Path) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot inspect destination", dest, e)),
        Ok(m) if m.is_dir() => {
            let mut it =
                fs::read_dir(dest).map_err(|e| Error::io("cannot read destination", dest, e))?;
            if it.next().is_some() {
                Err(Error::Refused(format!(
                    "destination {} is not empty; give a new directory",
                    dest.display()
                )))
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

/// Unseal a vault into `opts.dest`.
pub fn unseal(opts: UnsealOptions) -> Result<UnsealReport> {
    let _progress = crate::progress::Guard;
    check_dest(&opts.dest)?;
    let parent = crate::io::parent_dir(&opts.dest);
    let tmp = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(&parent)
        .map_err(|e| Error::io("cannot create a staging directory in", &parent, e))?;
    let mut staging = Staging {
        root: tmp.path().to_path_buf(),
    };
    let opened = open_vault(&opts.vault, &opts.identities, &mut staging)?;
    let json = &opened.json;

    // Links are checked before anything else is created, against one map
    // of them all; loops stay inside the case and are recreated (FORMAT §6
    // step 5, issue #10 items 8 and 10).
    let mut links = Links::new(json);
    for e in json.entries.iter().filter(|e| e.kind == Kind::Symlink) {
        if opts.allow_external_links {
            break;
        }
        if let LinkStatus::Outside(why) = links.status(&e.path) {
            return Err(Error::UnsafeEntry(format!(
                "symlink {:?} points outside the case: {why}",
                &e.path["data/".len()..]
            )));
        }
    }
    let root = staging.root.clone();
    let rel = |p: &str| -> PathBuf {
        match p.strip_prefix("data/") {
            Some(r) => root.join(r),
            None => root.clone(),
        }
    };
    let time = |e: &crate::format::Entry| FileTime::from_unix_time(e.mtime, e.mtime_nsec);
    // Files, then links, then directories deepest first, so that creating
    // or touching a child never changes a restored directory mtime.
    for e in json.entries.iter().filter(|e| e.kind == Kind::File) {
        let p = rel(&e.path);
        fs::set_permissions(&p, fs::Permissions::from_mode(e.mode & 0o777))
            .map_err(|err| Error::io("cannot set mode of", &p, err))?;
        filetime::set_file_times(&p, time(e), time(e))
            .map_err(|err| Error::io("cannot set mtime of", &p, err))?;
    }
    for e in json.entries.iter().filter(|e| e.kind == Kind::Symlink) {
        let p = rel(&e.path);
        std::os::unix::fs::symlink(e.target.as_deref().unwrap_or(""), &p)
            .map_err(|err| Error::io("cannot create symlink", &p, err))?;
        filetime::set_symlink_file_times(&p, time(e), time(e))
            .map_err(|err| Error::io("cannot set mtime of", &p, err))?;
    }
    let mut dirs: Vec<&crate::format::Entry> = json
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.path.matches('/').count()));
    for e in dirs {
        let p = rel(&e.path);
        fs::set_permissions(&p, fs::Permissions::from_mode(e.mode & 0o777))
            .map_err(|err| Error::io("cannot set mode of", &p, err))?;
        filetime::set_file_times(&p, time(e), time(e))
            .map_err(|err| Error::io("cannot set mtime of", &p, err))?;
    }
    crate::signal::check()?;

    // Durable before visible: one syncfs for the whole tree instead of an
    // fsync per file, then the rename, then the directory.
    let dirf = fs::File::open(&root).map_err(|e| Error::io("cannot open", &root, e))?;
    rustix::fs::syncfs(&dirf).map_err(|e| Error::io("cannot sync", &root, e.into()))?;
    drop(dirf);
    check_dest(&opts.dest)?;
    fs::rename(&root, &opts.dest)
        .map_err(|e| Error::io("cannot move the unsealed case to", &opts.dest, e))?;
    // Renamed: the staging directory no longer exists, so nothing to clean.
    let _ = tmp.keep();
    crate::io::sync_parent_dir(&opts.dest)?;

    Ok(UnsealReport {
        vault: opts.vault.clone(),
        dest: opts.dest.clone(),
        case_id: opened.case_id.clone(),
        files: json.totals.files,
        dirs: json.totals.dirs,
        symlinks: json.totals.symlinks,
        bytes: json.totals.bytes,
        vault_sha256: opened.vault_sha256.clone(),
    })
}

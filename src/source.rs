//! Where a vault is read from: a local file, or an S3 object named
//! `s3://BUCKET/KEY` (issue #13), with its sidecar and signature as the
//! neighbouring objects `KEY.sha256` and `KEY.sig`. The reading wing opens
//! a vault only through [`open`] and [`read_small`], so every reader
//! (`unseal`, `verify`, `list`, `rekey`) accepts both.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use crate::{Error, Result};

/// The bytes of a vault as the reading wing sees them.
pub struct VaultInput(Inner);

enum Inner {
    File(fs::File),
    #[cfg(feature = "s3")]
    S3(std::sync::Arc<std::sync::Mutex<crate::s3::ObjectReader>>),
}

impl Read for VaultInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::File(f) => f.read(buf),
            #[cfg(feature = "s3")]
            Inner::S3(o) => o
                .lock()
                .map_err(|_| io::Error::other("S3 reader poisoned"))?
                .read(buf),
        }
    }
}

impl io::Seek for VaultInput {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        match &mut self.0 {
            Inner::File(f) => f.seek(pos),
            // Ranged GETs from the new position (format version 3's
            // partial reads, issue #12).
            #[cfg(feature = "s3")]
            Inner::S3(o) => o
                .lock()
                .map_err(|_| io::Error::other("S3 reader poisoned"))?
                .seek(pos),
        }
    }
}

/// Whether `p` names an S3 object (`s3://…`).
pub fn is_remote(p: &Path) -> bool {
    p.to_str().is_some_and(|s| s.starts_with("s3://"))
}

#[cfg(not(feature = "s3"))]
fn no_s3(p: &Path) -> Error {
    Error::Refused(format!(
        "{}: this casevault was built without S3 support (cargo feature `s3`)",
        p.display()
    ))
}

/// Open `vault` twice over one position: a reader and a second handle on
/// the same stream (the drain that reads what the first left).
pub fn open(vault: &Path, op: &'static str) -> Result<(VaultInput, VaultInput)> {
    if is_remote(vault) {
        #[cfg(feature = "s3")]
        {
            let loc = crate::s3::Location::of_path(vault).expect("an s3:// path")?;
            let r =
                std::sync::Arc::new(std::sync::Mutex::new(crate::s3::ObjectReader::open(&loc)?));
            return Ok((
                VaultInput(Inner::S3(std::sync::Arc::clone(&r))),
                VaultInput(Inner::S3(r)),
            ));
        }
        #[cfg(not(feature = "s3"))]
        return Err(no_s3(vault));
    }
    let file = fs::File::open(vault).map_err(|e| Error::io(op, vault, e))?;
    let drain = file.try_clone().map_err(|e| Error::io(op, vault, e))?;
    Ok((
        VaultInput(Inner::File(file)),
        VaultInput(Inner::File(drain)),
    ))
}

/// Open `vault` once.
pub fn open_one(vault: &Path, op: &'static str) -> Result<VaultInput> {
    open(vault, op).map(|(r, _)| r)
}

/// A small neighbour of a remote vault (sidecar, signature): `Ok(None)`
/// when `p` is a local path (the caller reads it as a file), else
/// `Some(None)` when the object does not exist, `Some(Some(bytes))` with at
/// most `cap + 1` bytes (so the caller sees it is too large).
pub fn read_small(p: &Path, cap: u64) -> Result<Option<Option<Vec<u8>>>> {
    if !is_remote(p) {
        return Ok(None);
    }
    #[cfg(feature = "s3")]
    {
        let loc = crate::s3::Location::of_path(p).expect("an s3:// path")?;
        match crate::s3::client()?.get_small(&loc, cap) {
            Ok(v) => Ok(Some(v)),
            // Too large: hand the caller cap + 1 bytes so it reports it
            // in its own words.
            Err(Error::Refused(_)) => Ok(Some(Some(vec![0; cap as usize + 1]))),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(feature = "s3"))]
    {
        let _ = cap;
        Err(no_s3(p))
    }
}

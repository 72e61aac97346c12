//! The reading wing: the one code path behind `unseal`, `verify -i`,
//! `list` and `rekey`. It treats every vault as hostile (FORMAT §6): each
//! tar entry is validated before anything is written, every file is hashed
//! as it streams, and the tag files are checked against the payload only
//! after the age stream has ended cleanly.
//!
//! The layers, outside in: [`cipher`] (the age stack, both directions),
//! [`tar`] (pax, paths), `payload` (the entry-order state machine, hashed
//! copies, tag files), `bag` (the cross-checks of FORMAT §6 step 4), and
//! [`links`] (where recorded symlinks lead, step 5).

use std::io;
use std::path::{Path, PathBuf};

use crate::format::CaseJson;
use crate::keys::BoxedIdentity;
use crate::{Error, Result};

mod bag;
pub mod cipher;
mod index;
pub mod links;
mod lockstep;
mod payload;
pub mod random;
pub mod select;
pub mod tar;

pub use links::{Escape, LinkStatus, Links};
pub use tar::parse_pax;

/// Where the payload goes: a staging directory (unseal) or nowhere (verify).
pub trait Extract {
    type File: io::Write;
    /// A directory, by path relative to the case root (never the root itself).
    fn dir(&mut self, rel: &str) -> Result<()>;
    /// Create a regular file, by path relative to the case root.
    fn create_file(&mut self, rel: &str) -> Result<Self::File>;
    /// The error to report when writing to a created file failed.
    fn write_error(&self, rel: &str, e: io::Error) -> Error;
    /// Whether regular files of at most [`crate::creators::SMALL_FILE`]
    /// bytes should come whole, through [`Extract::small_file`], instead
    /// of through [`Extract::create_file`]: for unseal's threads that
    /// create them. The default: no.
    fn takes_small_files(&self) -> bool {
        false
    }
    /// A whole small regular file, read and hashed already. An extractor
    /// may create it later on another thread (unseal) and report a failure
    /// with a later call; the default creates and writes it now.
    fn small_file(&mut self, rel: &str, data: Vec<u8>) -> Result<()> {
        write_whole(self, rel, &data)
    }
    /// Called before each payload entry is created, with the size its tar
    /// header declares (0 for a directory), so that an extractor can refuse
    /// what it cannot hold (unseal: free space, FORMAT §6.1). The default
    /// accepts everything.
    fn reserve(&mut self, _rel: &str, _size: u64) -> Result<()> {
        Ok(())
    }
    /// Forget everything extracted so far: the vault is read again from
    /// its start (a version 3 vault whose metadata turned out not to
    /// check while it was extracted in lockstep). The default keeps
    /// nothing anyway.
    fn restart(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Create the file at `rel` through `x` and write `data` to it, now.
pub(crate) fn write_whole<X: Extract + ?Sized>(x: &mut X, rel: &str, data: &[u8]) -> Result<()> {
    let mut f = x.create_file(rel)?;
    io::Write::write_all(&mut f, data)
        .and_then(|()| io::Write::flush(&mut f))
        .map_err(|e| x.write_error(rel, e))
}

/// An extractor that keeps nothing: for checking a vault (verify, list,
/// rekey's first pass).
pub struct Discard;

impl Extract for Discard {
    type File = io::Sink;
    fn dir(&mut self, _rel: &str) -> Result<()> {
        Ok(())
    }
    fn create_file(&mut self, _rel: &str) -> Result<io::Sink> {
        Ok(io::sink())
    }
    fn write_error(&self, rel: &str, e: io::Error) -> Error {
        Error::io("cannot discard", Path::new(rel), e)
    }
}

/// A checked vault: its `casevault.json` and what was read.
#[derive(Debug)]
pub struct Opened {
    pub case_id: String,
    pub json: CaseJson,
    /// SHA-256 of the vault file (the ciphertext) and its length.
    pub vault_sha256: String,
    pub vault_bytes: u64,
    /// The key that made `casevault.sig` (signed vaults; checked against
    /// the key `casevault.json` names, not yet against any trust list).
    pub signature: Option<crate::sign::Verified>,
    /// A version 3 vault read in lockstep: `json` holds only its symlink
    /// records, and this reads the other entries again (unseal's modes and
    /// times).
    pub index: Option<(random::RandomVault, random::Tail)>,
}

/// A decrypted payload that passed every check of FORMAT §6 steps 2 to 4.
#[derive(Debug)]
pub struct CheckedPayload {
    /// The bag directory's name.
    pub case_id: String,
    /// The parsed, checked `casevault.json`.
    pub json: CaseJson,
    /// The key that made `casevault.sig`, in signed vaults.
    pub signature: Option<crate::sign::Verified>,
}

/// Read, check and extract a vault. Nothing is trusted until this returns
/// `Ok`: the caller must discard whatever `x` wrote on error.
pub fn open_vault<X: Extract>(
    vault: &Path,
    identities: &[BoxedIdentity],
    x: &mut X,
) -> Result<Opened> {
    let ids: Vec<&dyn age::Identity> = identities
        .iter()
        .map(|i| i.as_ref() as &dyn age::Identity)
        .collect();
    open_vault_with(vault, &ids, x)
}

/// [`open_vault`] with identities given as trait objects (e.g. a
/// [`crate::keys::Remembering`] that already unwrapped this vault's key).
pub fn open_vault_with<X: Extract>(
    vault: &Path,
    identities: &[&dyn age::Identity],
    x: &mut X,
) -> Result<Opened> {
    // One unwrap of the file key for the end and the whole (FORMAT §13).
    let remember = crate::keys::Remembering::of(identities.to_vec());
    let ids: [&dyn age::Identity; 1] = [&remember];
    let mut lock = lockstep_for(vault, &ids)?;
    let (plain, eof, mut cipher) = cipher::decrypt(vault, &ids)?;
    let checked = match payload::read_plaintext(vault, plain, &eof, x, lock.as_mut()) {
        Ok(checked) => checked,
        // Not about the vault's contents (I/O, an interruption): as it
        // is, without waiting for the metadata's verdict.
        Err(e) if e.kind() != crate::error::ErrorKind::Integrity => return Err(e),
        Err(e) => {
            // Whether the metadata at the end checks decides what the
            // failure was: if it does not, the vault is read again with
            // every entry held, for the full read's own findings.
            match lock.take().map(lockstep::Lockstep::verdict) {
                Some(Err(Error::Integrity(_))) => {}
                Some(Err(other)) => return Err(other),
                Some(Ok(())) | None => return Err(e),
            }
            x.restart()?;
            let (plain, eof, again) = cipher::decrypt(vault, &ids)?;
            cipher = again;
            payload::read_plaintext(vault, plain, &eof, x, None)?
        }
    };
    // Hash whatever of the vault file the decryptor did not need to read.
    let (vault_sha256, vault_bytes) = cipher.finish(vault)?;
    Ok(Opened {
        case_id: checked.case_id,
        json: checked.json,
        vault_sha256,
        vault_bytes,
        signature: checked.signature,
        index: lock.and_then(lockstep::Lockstep::into_vault),
    })
}

/// A binary version 3 vault whose end can be read (its tag locator) is
/// read in lockstep with its `casevault.json` (memory that does not grow
/// with the case), which is checked as it streams. Anything else, and a
/// vault whose metadata turns out not to check, is read with every entry
/// held, which gives the full read's own findings.
fn lockstep_for(vault: &Path, ids: &[&dyn age::Identity]) -> Result<Option<lockstep::Lockstep>> {
    let fallback = |e: Error| match e {
        Error::Integrity(_) => Ok(None),
        other => Err(other),
    };
    let mut rv = match random::RandomVault::open(vault, ids) {
        Ok(Some(rv)) => rv,
        Ok(None) => return Ok(None),
        Err(e) => return fallback(e),
    };
    let tail = match random::read_tail(&mut rv) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(e) => return fallback(e),
    };
    match lockstep::Lockstep::start(rv, tail) {
        Ok(l) => Ok(Some(l)),
        Err(e) => fallback(e),
    }
}

/// Run every check [`open_vault`] makes after decryption on an age
/// plaintext held in memory (no age layer): compression detection, tar,
/// paths, limits, tag files and bag (FORMAT §6 steps 2 to 4). For fuzzing
/// and tests; `label` names the input in error messages.
pub fn check_plaintext<X: Extract>(
    label: &Path,
    plaintext: Vec<u8>,
    x: &mut X,
) -> Result<CheckedPayload> {
    let (plain, eof) = cipher::EofReader::new(io::Cursor::new(plaintext));
    payload::read_plaintext(label, plain, &eof, x, None)
}

/// A staging path for a relative case path.
pub fn staged(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

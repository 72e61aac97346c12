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
    /// Called before each payload entry is created, with the size its tar
    /// header declares (0 for a directory), so that an extractor can refuse
    /// what it cannot hold (unseal: free space, FORMAT §6.1). The default
    /// accepts everything.
    fn reserve(&mut self, _rel: &str, _size: u64) -> Result<()> {
        Ok(())
    }
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
    let (plain, eof, cipher) = cipher::decrypt(vault, identities)?;
    let checked = payload::read_plaintext(vault, plain, &eof, x)?;
    // Hash whatever of the vault file the decryptor did not need to read.
    let (vault_sha256, vault_bytes) = cipher.finish(vault)?;
    Ok(Opened {
        case_id: checked.case_id,
        json: checked.json,
        vault_sha256,
        vault_bytes,
        signature: checked.signature,
    })
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
    payload::read_plaintext(label, plain, &eof, x)
}

/// A staging path for a relative case path.
pub fn staged(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

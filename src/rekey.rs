//! `casevault rekey`: re-encrypt a vault to a new set of recipients (add the
//! defence's key, drop a departed investigator's, move to post-quantum
//! recipients) without touching its payload.
//!
//! How (issue #7; the choice between a tee in the reader and two passes):
//! two streaming passes over the old vault, so that `open.rs`, the one
//! checked reading path, stays untouched.
//!
//! 1. **Verify**: the whole vault goes through [`open_vault`] exactly as
//!    `verify -i` reads it (every file's SHA-256 against the manifest, the
//!    tag files, the end of the age stream), and its `.sha256` sidecar, if
//!    there is one, must match. A damaged vault stops here: exit 3, nothing
//!    written.
//! 2. **Copy**: the age plaintext (the compressed tar stream, byte for byte:
//!    the manifest and any inner signature stay valid) is decrypted again
//!    and streamed into a new age encryptor writing a temporary file beside
//!    the target. The ciphertext read in this pass is hashed and must equal
//!    the hash taken in pass 1: age decryption is deterministic, so equal
//!    ciphertext means exactly the plaintext pass 1 verified, even if the
//!    file were swapped in between.
//!
//! No plaintext touches disk; memory is a few fixed buffers. The new vault
//! and its sidecar (and `VAULT.sig` with a signing key) are renamed into
//! place only when complete. With `--in-place` the new file is read back
//! and fully verified with the given identities before it replaces VAULT.

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::io::{classify_stream_error, hex, sidecar_path, AtomicFile, HashingWriter, BUF_SIZE};
use crate::keys::{BoxedIdentity, BoxedRecipient};
use crate::open::{open_vault, Extract};
use crate::{manifest, signal, Error, Result};

/// What to re-encrypt, to whom.
pub struct RekeyOptions {
    /// The vault to re-encrypt (left unchanged unless `in_place`).
    pub vault: PathBuf,
    /// The new vault; `None` only with `in_place`.
    pub output: Option<PathBuf>,
    /// Identities that open the old vault (and, for `in_place`, the new).
    pub identities: Vec<BoxedIdentity>,
    /// The complete new recipient set.
    pub recipients: Vec<BoxedRecipient>,
    /// Replace `vault` itself, after the new file is verified.
    pub in_place: bool,
    /// Write age's ASCII armor.
    pub armor: bool,
    /// Replace an existing `output`.
    pub force: bool,
    /// Sign the new vault (`VAULT.sig`, as seal does).
    pub sign: Option<crate::sign::SigningKey>,
}

/// The outcome of a rekey (`--json` object).
#[derive(Debug, Serialize)]
pub struct RekeyReport {
    /// The vault that was read.
    pub source: PathBuf,
    /// SHA-256 of the vault that was read.
    pub source_sha256: String,
    /// The vault written (equal to `source` with `--in-place`).
    pub vault: PathBuf,
    pub sidecar: PathBuf,
    pub vault_sha256: String,
    pub vault_bytes: u64,
    pub case_id: String,
    pub files: u64,
    pub bytes: u64,
    /// SHA-256 and length of the age plaintext carried over unchanged.
    pub plaintext_sha256: String,
    pub plaintext_bytes: u64,
    pub recipients: usize,
    pub armor: bool,
    pub in_place: bool,
    /// `VAULT.sig` of the new vault, when signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<PathBuf>,
}

/// Checks a vault without writing anything.
struct Discard;

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

/// Re-encrypt `opts.vault`; see the module doc.
pub fn rekey(opts: RekeyOptions) -> Result<RekeyReport> {
    let _progress = crate::progress::Guard;
    let source = &opts.vault;
    let target = match (&opts.output, opts.in_place) {
        (None, true) => source.clone(),
        (Some(o), false) => o.clone(),
        (Some(_), true) => {
            return Err(Error::Usage(
                "--in-place replaces VAULT itself; do not give -o as well".into(),
            ))
        }
        (None, false) => {
            return Err(Error::Usage(
                "give -o NEW_VAULT, or --in-place to replace VAULT".into(),
            ))
        }
    };
    crate::keys::check_recipients(&opts.recipients)?;
    let meta = fs::metadata(source).map_err(|e| Error::io("cannot open vault", source, e))?;
    if !meta.is_file() {
        return Err(Error::Refused(format!(
            "{} is not a vault file",
            source.display()
        )));
    }
    if !opts.in_place {
        if same_file(source, &target) {
            return Err(Error::Refused(format!(
                "{} is the vault being re-encrypted; use --in-place to replace it",
                target.display()
            )));
        }
        if !opts.force && fs::symlink_metadata(&target).is_ok() {
            return Err(Error::Refused(format!(
                "{} already exists (use --force to replace it)",
                target.display()
            )));
        }
    }

    // Pass 1: verify everything.
    let opened = open_vault(source, &opts.identities, &mut Discard)?;
    if let Some(expected) = crate::verify::read_sidecar(source)? {
        if expected != opened.vault_sha256 {
            return Err(Error::integrity(format!(
                "the contents verify, but the vault's SHA-256 {} does not match its sidecar {}; \
                 find out which copy is authentic before re-encrypting",
                opened.vault_sha256, expected
            )));
        }
    }
    signal::check()?;

    // Pass 2: copy the plaintext into a new age file.
    let out = AtomicFile::create(&target)?;
    let copied = reencrypt(source, &opts, out, &opened.vault_sha256)?;
    signal::check()?;

    if opts.in_place {
        // Read the new file back and check it all before VAULT goes.
        match open_vault(copied.file.temp_path(), &opts.identities, &mut Discard) {
            Ok(new) if new.case_id == opened.case_id => {}
            Ok(_) => {
                return Err(Error::integrity(
                    "the re-encrypted vault names another case",
                ))
            }
            Err(Error::NoMatchingKey) => {
                return Err(Error::Refused(
                    "--in-place verifies the new vault before replacing VAULT, but none of the \
                     identities given (-i) is among the new recipients; VAULT is unchanged \
                     (give such an identity, or write to -o NEW_VAULT instead)"
                        .into(),
                ))
            }
            Err(e) => return Err(e),
        }
    }

    let sidecar = sidecar_path(&target);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut side = AtomicFile::create(&sidecar)?;
    side.write_all(manifest::line(&copied.sha256, &name).as_bytes())
        .map_err(|e| Error::io("cannot write sidecar", &sidecar, e))?;
    let sig = match &opts.sign {
        Some(key) => Some(crate::sign::write_vault_sig(key, &copied.file, &target)?),
        None => None,
    };
    signal::check()?;
    copied.file.commit(opts.in_place || opts.force)?;
    side.commit(true)?;
    let signature = crate::sign::commit_vault_sig(sig, &target)?;
    crate::io::sync_parent_dir(&target)?;

    Ok(RekeyReport {
        source: source.clone(),
        source_sha256: opened.vault_sha256,
        vault: target,
        sidecar,
        vault_sha256: copied.sha256,
        vault_bytes: copied.bytes,
        case_id: opened.case_id,
        files: opened.json.totals.files,
        bytes: opened.json.totals.bytes,
        plaintext_sha256: copied.plaintext_sha256,
        plaintext_bytes: copied.plaintext_bytes,
        recipients: opts.recipients.len(),
        armor: opts.armor,
        in_place: opts.in_place,
        signature,
    })
}

/// The new vault, written but not committed.
struct Copied {
    file: AtomicFile,
    sha256: String,
    bytes: u64,
    plaintext_sha256: String,
    plaintext_bytes: u64,
}

/// Pass 2: decrypt `source` again and stream its plaintext into a new age
/// file; the ciphertext read must hash to `expected` (pass 1's).
fn reencrypt(
    source: &Path,
    opts: &RekeyOptions,
    out: AtomicFile,
    expected: &str,
) -> Result<Copied> {
    let file = fs::File::open(source).map_err(|e| Error::io("cannot open vault", source, e))?;
    let mut drain = file
        .try_clone()
        .map_err(|e| Error::io("cannot open vault", source, e))?;
    let state = crate::io::shared_hash();
    let tee = crate::io::SourceReader(crate::io::TeeHash {
        inner: file,
        state: std::sync::Arc::clone(&state),
    });
    let mut plain =
        crate::decrypt::age_reader(BufReader::with_capacity(BUF_SIZE, tee), &opts.identities)
            .map_err(|e| crate::decrypt::map_error(source, e))?;

    let target = out.target().to_path_buf();
    let werr = |e: io::Error| Error::io("cannot write vault", &target, e);
    let encryptor = age::Encryptor::with_recipients(
        opts.recipients
            .iter()
            .map(|r| r.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| Error::Refused(format!("cannot encrypt to these recipients: {e}")))?;
    let fmt = if opts.armor {
        age::armor::Format::AsciiArmor
    } else {
        age::armor::Format::Binary
    };
    let hashing = HashingWriter::new(BufWriter::with_capacity(BUF_SIZE, out));
    let armored = age::armor::ArmoredWriter::wrap_output(hashing, fmt).map_err(werr)?;
    let mut w = encryptor.wrap_output(armored).map_err(werr)?;

    let mut buf = vec![0u8; BUF_SIZE];
    let mut ph = Sha256::new();
    let mut plen = 0u64;
    loop {
        signal::check()?;
        let n = match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify_stream_error(source, "decrypting the vault", e)),
        };
        ph.update(&buf[..n]);
        plen += n as u64;
        w.write_all(&buf[..n]).map_err(werr)?;
    }
    let armored = w.finish().map_err(werr)?;
    let hashing = armored.finish().map_err(werr)?;
    let (bufw, digest, bytes) = hashing.finish();
    let file = bufw.into_inner().map_err(|e| werr(e.into_error()))?;
    drop(plain);

    // Whatever of the source the decryptor did not need (nothing, for a
    // well-formed vault) still counts toward its hash.
    loop {
        let n = match drain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read vault", source, e)),
        };
        crate::io::update_shared(&state, &buf[..n]);
    }
    let (read_sha, _) = crate::io::shared_digest(&state);
    if read_sha != expected {
        return Err(Error::integrity(format!(
            "{} changed between verifying and re-encrypting it (SHA-256 {expected}, then \
             {read_sha}); nothing was written",
            source.display()
        )));
    }
    Ok(Copied {
        file,
        sha256: hex(&digest),
        bytes,
        plaintext_sha256: hex(&ph.finalize()),
        plaintext_bytes: plen,
    })
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    /// Pass 2 refuses a source whose ciphertext is not the one pass 1
    /// verified (the file was swapped in between), and writes nothing.
    #[test]
    fn copy_pass_detects_a_changed_source() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        let src = dir.path().join("v.vault");
        let ct = age::encrypt(&r, b"payload").unwrap();
        fs::write(&src, &ct).unwrap();
        let opts = RekeyOptions {
            vault: src.clone(),
            output: Some(dir.path().join("n.vault")),
            identities: vec![Box::new(id)],
            recipients: vec![Box::new(
                age::x25519::Recipient::from_str(&r.to_string()).unwrap(),
            )],
            in_place: false,
            armor: false,
            force: false,
            sign: None,
        };
        let out = AtomicFile::create(&dir.path().join("n.vault")).unwrap();
        let good = hex(&Sha256::digest(&ct));
        let copied = reencrypt(&src, &opts, out, &good).unwrap();
        assert_eq!(copied.plaintext_bytes, 7);
        drop(copied);
        let out = AtomicFile::create(&dir.path().join("n.vault")).unwrap();
        let err = reencrypt(&src, &opts, out, &"0".repeat(64)).err().unwrap();
        assert!(matches!(err, Error::Integrity(ref m) if m.contains("changed between")));
        // Dropped uncommitted: only the source is left.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

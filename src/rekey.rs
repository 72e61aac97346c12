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
//! place only when complete, in an order a crash cannot turn into a
//! mismatch nobody can recover from ([`finish_interrupted`]). With
//! `--in-place` the new file is read back and fully verified with the
//! given identities before it replaces VAULT.
//!
//! Signing (issue #10 item 12): `--sign` needs `--signers`, and the vault's
//! inner signature (made when it was sealed) must be trusted before
//! anything is written; the new `VAULT.sig` is made in namespace
//! `casevault-rekey`, so that a verifier reads it as "re-encrypted by",
//! never as "sealed by".

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::io::{classify_stream_error, hex, AtomicFile, HashingWriter, BUF_SIZE};
use crate::keys::{BoxedIdentity, BoxedRecipient};
use crate::read::{cipher, open_vault, Discard};
use crate::sidecar::path as sidecar_path;
use crate::{signal, Error, Result};

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
    /// Sign the new vault: `VAULT.sig` in namespace `casevault-rekey`
    /// ("re-encrypted by"). Requires `sealer`.
    pub sign: Option<crate::sign::SigningKey>,
    /// Require the vault's inner signature (`casevault.sig`) to be valid
    /// and trusted by this allowed_signers file (namespace
    /// `casevault-manifest`, optionally one principal) before anything is
    /// written. Required with `sign`, so that rekey never vouches for a
    /// vault nobody trusted sealed (issue #10 item 12).
    pub sealer: Option<crate::verify::SignatureCheck>,
    /// `--parity PERCENT`: write the new vault's parity file (FORMAT §15).
    pub parity: Option<u32>,
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
    /// `VAULT.sig` of the new vault, when signed (namespace
    /// `casevault-rekey`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<PathBuf>,
    /// The trusted sealer: who made the inner `casevault.sig` (with
    /// `--signers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed_by: Option<crate::format::Signer>,
    /// The new vault's `VAULT.par` (with `--parity`, or rewritten because
    /// the replaced vault had one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parity: Option<PathBuf>,
}

/// Re-encrypt `opts.vault`; see the module doc.
pub fn rekey(opts: RekeyOptions) -> Result<RekeyReport> {
    let _progress = crate::progress::Guard;
    let source = &opts.vault;
    let target = target_of(&opts)?;
    check_request(&opts, &target)?;

    // Pass 1: verify everything.
    let opened = open_vault(source, &opts.identities, &mut Discard)?;
    if let Some(expected) = crate::sidecar::read_checked(source)? {
        if expected != opened.vault_sha256 {
            return Err(Error::integrity(format!(
                "the contents verify, but the vault's SHA-256 {} does not match its sidecar {}; \
                 find out which copy is authentic before re-encrypting",
                opened.vault_sha256, expected
            )));
        }
    }
    let sealed_by = match &opts.sealer {
        Some(chk) => Some(trusted_sealer(source, &opened, chk)?),
        None => None,
    };
    signal::check()?;

    // Pass 2: copy the plaintext into a new age file.
    let out = AtomicFile::create(&target)?;
    let copied = reencrypt(source, &opts, out, &opened.vault_sha256)?;
    signal::check()?;

    if opts.in_place {
        check_in_place(&opts, &opened, &copied)?;
    }
    let sidecar = sidecar_path(&target);
    let signature = commit(&opts, &target, copied.file, &copied.sha256)?;
    let parity = parity_for(&target, opts.parity)?;
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
        sealed_by,
        parity,
    })
}

/// The parity file of the new vault at `target`: written with `--parity`;
/// otherwise one already at `VAULT.par` describes the bytes just replaced
/// (`--in-place`, `--force`), so it is written anew with its own
/// percentage, or removed if even that cannot be read from it.
fn parity_for(target: &Path, percent: Option<u32>) -> Result<Option<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let par = crate::parity::path(target);
    let percent = match percent {
        Some(p) => p,
        None => match std::fs::symlink_metadata(&par) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot read", &par, e)),
            Ok(_) => match crate::parity::ParFile::open(&par) {
                Ok(old) => old.geometry.percent,
                Err(_) => {
                    std::fs::remove_file(&par)
                        .map_err(|e| Error::io("cannot remove the stale parity file", &par, e))?;
                    crate::io::sync_parent_dir(target)?;
                    return Ok(None);
                }
            },
        },
    };
    let mode = std::fs::metadata(target)
        .map_err(|e| Error::io("cannot read", target, e))?
        .permissions()
        .mode()
        & 0o7777;
    crate::parity::write_for(target, percent, mode)?;
    crate::io::sync_parent_dir(target)?;
    Ok(Some(par))
}

/// The vault to write: `-o NEW_VAULT`, or VAULT itself with `--in-place`.
fn target_of(opts: &RekeyOptions) -> Result<PathBuf> {
    match (&opts.output, opts.in_place) {
        (None, true) => Ok(opts.vault.clone()),
        (Some(o), false) => Ok(o.clone()),
        (Some(_), true) => Err(Error::Usage(
            "--in-place replaces VAULT itself; do not give -o as well".into(),
        )),
        (None, false) => Err(Error::Usage(
            "give -o NEW_VAULT, or --in-place to replace VAULT".into(),
        )),
    }
}

/// Everything checked before the vault is read: the options, the new
/// recipients, an interrupted earlier rekey of `target` (finished or
/// discarded first), the source, and that `target` may be written.
fn check_request(opts: &RekeyOptions, target: &Path) -> Result<()> {
    let source = &opts.vault;
    if opts.sign.is_some() && opts.sealer.is_none() {
        return Err(Error::Usage(
            "rekey --sign requires --signers ALLOWED_SIGNERS_FILE: the new signature is given only \
             to a vault whose inner signature a trusted key made"
                .into(),
        ));
    }
    crate::keys::check_recipients(&opts.recipients)?;
    if crate::source::is_remote(target) {
        // A vault store in S3 is written by sweep and `store push` only
        // (issue #13); under Object Lock a vault cannot be replaced anyway.
        return Err(Error::Usage(format!(
            "rekey writes a local file: give -o NEW_VAULT on this machine, not {} (store push copies it to a bucket)",
            target.display()
        )));
    }
    finish_interrupted(target)?;
    if crate::source::is_remote(source) {
        // Read from S3: the checks below are about local files.
        if !opts.force && fs::symlink_metadata(target).is_ok() {
            return Err(Error::Refused(format!(
                "{} already exists (use --force to replace it)",
                target.display()
            )));
        }
        return Ok(());
    }
    let meta = fs::metadata(source).map_err(|e| Error::io("cannot open vault", source, e))?;
    if !meta.is_file() {
        return Err(Error::Refused(format!(
            "{} is not a vault file",
            source.display()
        )));
    }
    if !opts.in_place {
        if same_file(source, target) {
            return Err(Error::Refused(format!(
                "{} is the vault being re-encrypted; use --in-place to replace it",
                target.display()
            )));
        }
        if !opts.force && fs::symlink_metadata(target).is_ok() {
            return Err(Error::Refused(format!(
                "{} already exists (use --force to replace it)",
                target.display()
            )));
        }
    }
    Ok(())
}

/// `--in-place`: read the new file back and check it all before VAULT goes.
fn check_in_place(
    opts: &RekeyOptions,
    opened: &crate::read::Opened,
    copied: &Copied,
) -> Result<()> {
    match open_vault(copied.file.temp_path(), &opts.identities, &mut Discard) {
        Ok(new) if new.case_id == opened.case_id => Ok(()),
        Ok(_) => Err(Error::integrity(
            "the re-encrypted vault names another case",
        )),
        Err(Error::NoMatchingKey) => Err(Error::Refused(
            "--in-place verifies the new vault before replacing VAULT, but none of the \
             identities given (-i) is among the new recipients; VAULT is unchanged \
             (give such an identity, or write to -o NEW_VAULT instead)"
                .into(),
        )),
        Err(e) => Err(e),
    }
}

/// Put the new vault (`file`, whose SHA-256 is `sha256`) in place of
/// `target` with its sidecar (and signature); returns the signature's path.
fn commit(
    opts: &RekeyOptions,
    target: &Path,
    file: AtomicFile,
    sha256: &str,
) -> Result<Option<PathBuf>> {
    // Commit (issue #10 item 14): the new sidecar and signature first go
    // to fixed `.pending` names, then the vault is renamed (the commit
    // point), then the pending files are renamed over the old ones. A
    // crash at any point leaves either the old pair, or the new vault with
    // its pending sidecar, which `finish_interrupted` (run by the next
    // rekey of that target) recognises by its hash and completes.
    let pending = Pending::new(target);
    crate::sidecar::write(&pending.sidecar, target, sha256)?.commit(true)?;
    if let Some(key) = &opts.sign {
        crate::sign::write_outer_sig(key, crate::sign::NS_REKEY, &file, &pending.sig, target)?
            .commit(true)?;
    }
    crate::io::sync_parent_dir(target)?;
    signal::check()?;
    file.commit(opts.in_place || opts.force)?;
    pending.disarm();
    crate::io::sync_parent_dir(target)?;
    finish_commit(target)
}

/// The inner signature's trust check (as `verify -i --signers` does it):
/// `open_vault` has checked that `casevault.sig` verifies over
/// `casevault.json` with the key it names; here that key must be trusted
/// for `casevault-manifest`. Missing or untrusted: integrity failure
/// (exit 3), before anything is written.
fn trusted_sealer(
    source: &Path,
    opened: &crate::read::Opened,
    chk: &crate::verify::SignatureCheck,
) -> Result<crate::format::Signer> {
    let ns = crate::sign::NS_MANIFEST;
    let Some(v) = &opened.signature else {
        return Err(Error::integrity(format!(
            "{} holds no inner signature (casevault.sig): it was sealed without --sign, so no \
             trusted key vouches for who sealed it; rekey with --signers re-encrypts only vaults \
             whose sealer {} trusts; nothing was written",
            source.display(),
            chk.signers.path().display()
        )));
    };
    match chk.signers.trusted(&v.key, ns, chk.principal.as_deref()) {
        Some(p) => Ok(crate::format::Signer {
            principal: Some(p),
            fingerprint: v.fingerprint.clone(),
        }),
        None => Err(Error::integrity(format!(
            "casevault.sig inside {} was made by key {}, which {} does not trust for {} in \
             namespace {ns}; nothing was written",
            source.display(),
            v.fingerprint,
            chk.signers.path().display(),
            match &chk.principal {
                Some(p) => format!("principal {p:?}"),
                None => "any principal".to_string(),
            }
        ))),
    }
}

/// The fixed names of a target's pending sidecar and signature
/// (`TARGET.sha256.pending`, `TARGET.sig.pending`), removed on drop
/// unless disarmed (after the vault itself was renamed into place).
struct Pending {
    sidecar: PathBuf,
    sig: PathBuf,
    armed: std::cell::Cell<bool>,
}

/// Suffix of the files a rekey commit writes before its commit point.
pub const PENDING_SUFFIX: &str = ".pending";

fn pending_of(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(PENDING_SUFFIX);
    PathBuf::from(s)
}

impl Pending {
    fn new(target: &Path) -> Self {
        Pending {
            sidecar: pending_of(&sidecar_path(target)),
            sig: pending_of(&crate::sign::sig_path(target)),
            armed: std::cell::Cell::new(true),
        }
    }
    fn disarm(&self) {
        self.armed.set(false);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.armed.get() {
            // Before the commit point: the old pair stays; these go.
            let _ = fs::remove_file(&self.sig);
            let _ = fs::remove_file(&self.sidecar);
        }
    }
}

/// After the commit point: move the pending signature into place (or,
/// without one, remove a `TARGET.sig` that does not verify over the new
/// vault: it belonged to the old one), then the pending sidecar, and sync
/// the directory. Returns the signature's path when there is one.
fn finish_commit(target: &Path) -> Result<Option<PathBuf>> {
    let pending = Pending::new(target);
    pending.disarm();
    let sig = crate::sign::sig_path(target);
    let signature = if pending.sig.exists() {
        fs::rename(&pending.sig, &sig)
            .map_err(|e| Error::io("cannot rename into place", &sig, e))?;
        Some(sig)
    } else {
        let valid = matches!(
            crate::sign::read_vault_sig(target),
            Ok(Some(s)) if crate::sign::verify_file(
                &s,
                crate::sign::outer_namespace(&s),
                "signature",
                target
            ).is_ok()
        );
        if valid {
            Some(sig)
        } else {
            match fs::remove_file(&sig) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io("cannot remove the stale signature", &sig, e))
                }
                _ => None,
            }
        }
    };
    let sidecar = sidecar_path(target);
    fs::rename(&pending.sidecar, &sidecar)
        .map_err(|e| Error::io("cannot rename into place", &sidecar, e))?;
    crate::io::sync_parent_dir(target)?;
    Ok(signature)
}

/// What [`finish_interrupted`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// The new vault was in place: its pending sidecar (and signature)
    /// were moved over the old ones.
    Finished,
    /// The vault was never replaced: the pending files were removed.
    Discarded,
}

/// Recognise and finish a rekey of `target` that was interrupted (killed,
/// power lost) during its commit (issue #10 item 14). A
/// `TARGET.sha256.pending` whose hash is the target's means the vault was
/// renamed into place and only the sidecar and signature were not: they
/// are moved into place now. One whose hash is not the target's belongs
/// to a vault that never replaced it: the pending files are removed. No
/// pending sidecar: nothing to do (a lone pending signature is removed).
pub fn finish_interrupted(target: &Path) -> Result<Option<Interrupted>> {
    let pending = Pending::new(target);
    pending.disarm();
    let expected = match crate::sidecar::read_at(&pending.sidecar, target) {
        Err(crate::sidecar::Unusable::Missing) => {
            if pending.sig.exists() {
                fs::remove_file(&pending.sig)
                    .map_err(|e| Error::io("cannot remove", &pending.sig, e))?;
            }
            return Ok(None);
        }
        Err(crate::sidecar::Unusable::Io(e)) => {
            return Err(Error::io("cannot read", &pending.sidecar, e))
        }
        Ok(h) => Some(h),
        Err(_) => None,
    };
    let actual = match crate::io::sha256_file(target) {
        Ok((d, _)) => Some(hex(&d)),
        Err(_) => None,
    };
    if expected.is_some() && expected == actual {
        finish_commit(target)?;
        return Ok(Some(Interrupted::Finished));
    }
    for p in [&pending.sig, &pending.sidecar] {
        match fs::remove_file(p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("cannot remove", p, e))
            }
            _ => {}
        }
    }
    crate::io::sync_parent_dir(target)?;
    Ok(Some(Interrupted::Discarded))
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
    let (tee, ciphertext) = cipher::Ciphertext::open(source)?;
    let mut plain = cipher::age_reader(BufReader::with_capacity(BUF_SIZE, tee), &opts.identities)
        .map_err(|e| cipher::map_error(source, e))?;

    let target = out.target().to_path_buf();
    let werr = |e: io::Error| Error::io("cannot write vault", &target, e);
    let encryptor = cipher::encryptor(&opts.recipients)?;
    let hashing = HashingWriter::new(BufWriter::with_capacity(BUF_SIZE, out));
    let mut w = cipher::encrypt_writer(encryptor, opts.armor, hashing).map_err(werr)?;

    let mut buf = vec![0u8; BUF_SIZE];
    let mut ph = Sha256::new();
    let mut plen = 0u64;
    loop {
        signal::check()?;
        let n = match crate::io::retry(|| plain.read(&mut buf)) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(classify_stream_error(source, "decrypting the vault", e)),
        };
        ph.update(&buf[..n]);
        plen += n as u64;
        w.write_all(&buf[..n]).map_err(werr)?;
    }
    let hashing = cipher::finish_writer(w).map_err(werr)?;
    let (bufw, digest, bytes) = hashing.finish();
    let file = bufw.into_inner().map_err(|e| werr(e.into_error()))?;
    drop(plain);

    // Whatever of the source the decryptor did not need (nothing, for a
    // well-formed vault) still counts toward its hash.
    let (read_sha, _) = ciphertext.finish(source)?;
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
            sealer: None,
            parity: None,
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

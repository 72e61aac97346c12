//! OpenSSH signatures (SSHSIG, OpenSSH's `PROTOCOL.sshsig`) over vaults,
//! their `casevault.json` and custody records (issue #5, FORMAT §5.5, §10,
//! §11). Signatures are the armored text `ssh-keygen -Y sign` writes, so
//! `ssh-keygen -Y verify` checks them without casevault.
//!
//! Signing hashes the message with SHA-512 (what `ssh-keygen` uses) and
//! signs the SSHSIG "signed data" blob built from that hash, so a vault of
//! any size is signed from a streaming hash instead of from memory.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256, Sha512};
use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};

use crate::io::BUF_SIZE;
use crate::{format, Error, Result};

/// Namespace of the outer signature, over the vault file's bytes.
pub const NS_VAULT: &str = "casevault-vault";
/// Namespace of the outer signature that `rekey --sign` writes over the
/// re-encrypted vault file: it says "re-encrypted by", not "sealed by"
/// (issue #10 item 12, FORMAT §10).
pub const NS_REKEY: &str = "casevault-rekey";
/// Namespace of the inner signature, over `casevault.json`.
pub const NS_MANIFEST: &str = "casevault-manifest";
/// Namespace of custody record signatures.
pub const NS_CUSTODY: &str = "casevault-custody";

/// Largest signature or key file we read.
const MAX_KEY_FILE: u64 = 1 << 20;

/// Path of the outer signature of a vault: `VAULT.sig`.
pub fn sig_path(vault: &Path) -> PathBuf {
    let mut s = vault.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// An OpenSSH private key loaded for signing, with the principal to record.
#[derive(Clone)]
pub struct SigningKey {
    key: PrivateKey,
    principal: Option<String>,
}

impl fmt::Debug for SigningKey {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint())
            .field("principal", &self.principal)
            .finish()
    }
}

impl SigningKey {
    /// Read an OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    /// A passphrase-protected key is decrypted after asking on the
    /// terminal; without a terminal it is refused, never waited on.
    /// `principal`: `--signer`, else the key's comment, else none.
    pub fn load(path: &Path, principal: Option<String>) -> Result<Self> {
        let text = read_small(path, "cannot read signing key")?;
        let text = String::from_utf8(text).map_err(|_| not_a_key(path))?;
        if !text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            return Err(not_a_key(path));
        }
        let mut key = PrivateKey::from_openssh(text.trim()).map_err(|e| {
            Error::Refused(format!(
                "{}: cannot parse the OpenSSH private key: {e}",
                path.display()
            ))
        })?;
        if key.is_encrypted() {
            if !crate::keys::prompt::can_ask() {
                return Err(Error::Refused(format!(
                    "{} is protected by a passphrase and there is no terminal to ask for it; for unattended use give an unencrypted key kept with mode 0600",
                    path.display()
                )));
            }
            let pass =
                rpassword::prompt_password(format!("Enter passphrase for {}: ", path.display()))
                    .map_err(|e| Error::io("cannot read the passphrase for", path, e))?;
            key = key.decrypt(pass.as_bytes()).map_err(|_| {
                Error::Refused(format!(
                    "wrong passphrase for {} (or the key cannot be decrypted)",
                    path.display()
                ))
            })?;
        }
        use ssh_key::Algorithm as A;
        match key.algorithm() {
            A::Ed25519 | A::Rsa { .. } | A::Ecdsa { .. } => {}
            other => {
                return Err(Error::Refused(format!(
                    "{}: cannot sign with a {} key; use ssh-ed25519 (ssh-keygen -t ed25519)",
                    path.display(),
                    other.as_str()
                )))
            }
        }
        let principal = principal.or_else(|| {
            let c = key.comment().trim();
            (!c.is_empty()).then(|| c.to_string())
        });
        Ok(SigningKey { key, principal })
    }

    /// `SHA256:…` fingerprint of the key, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// The principal recorded with signatures, if any.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The `signer` object of `casevault.json` and custody records.
    pub fn signer(&self) -> format::Signer {
        format::Signer {
            principal: self.principal.clone(),
            fingerprint: self.fingerprint(),
        }
    }

    /// Sign `msg` in `namespace`; returns the armored SSHSIG.
    pub fn sign(&self, namespace: &str, msg: &[u8]) -> Result<String> {
        self.sign_sha512(namespace, &Sha512::digest(msg).into())
    }

    /// Sign a message of which only the SHA-512 is at hand.
    pub fn sign_sha512(&self, namespace: &str, digest: &[u8; 64]) -> Result<String> {
        let data = signed_data(namespace, &[], HashAlg::Sha512, digest);
        let sig = match self.key.key_data().rsa() {
            Some(rsa) => sign_rsa_sha512(rsa, &data)?,
            None => signature::Signer::try_sign(&self.key, &data)
                .map_err(|e| Error::Refused(format!("cannot sign: {e}")))?,
        };
        let sshsig = SshSig::new(
            self.key.public_key().key_data().clone(),
            namespace,
            HashAlg::Sha512,
            sig,
        )
        .map_err(|e| Error::Refused(format!("cannot sign: {e}")))?;
        let mut pem = sshsig
            .to_pem(LineEnding::LF)
            .map_err(|e| Error::Refused(format!("cannot encode the signature: {e}")))?;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        Ok(pem)
    }

    /// Sign the file behind `file` (read from offset 0 with `pread`, so the
    /// caller's file position does not matter) in `namespace`.
    pub fn sign_file(&self, namespace: &str, file: &fs::File, path: &Path) -> Result<String> {
        let digest = hash_file_at(file, path, HashAlg::Sha512)?;
        let digest: [u8; 64] = digest
            .try_into()
            .expect("a SHA-512 digest is 64 bytes long");
        self.sign_sha512(namespace, &digest)
    }
}

/// Sign the concatenation of `parts` (a tag file written in pieces).
pub fn sign_parts(key: &SigningKey, namespace: &str, parts: &[&[u8]]) -> Result<String> {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    key.sign_sha512(namespace, &h.finalize().into())
}

/// Sign the finished, not yet committed vault and write `VAULT.sig` to a
/// temporary file beside it; [`commit_vault_sig`] renames it into place.
pub fn write_vault_sig(
    key: &SigningKey,
    vault: &crate::io::AtomicFile,
    target: &Path,
) -> Result<crate::io::AtomicFile> {
    write_outer_sig(key, NS_VAULT, vault, &sig_path(target), target)
}

/// Sign the not yet committed vault in `namespace` ([`NS_VAULT`] or
/// [`NS_REKEY`]) and write the signature to a temporary file that
/// commits to `path`.
pub fn write_outer_sig(
    key: &SigningKey,
    namespace: &str,
    vault: &crate::io::AtomicFile,
    path: &Path,
    target: &Path,
) -> Result<crate::io::AtomicFile> {
    let text = key.sign_file(namespace, vault.file(), target)?;
    let mut f = crate::io::AtomicFile::create(path)?;
    io::Write::write_all(&mut f, text.as_bytes())
        .map_err(|e| Error::io("cannot write signature", path, e))?;
    Ok(f)
}

/// The namespace an outer signature is checked in: its own when it is one
/// of the two outer namespaces ([`NS_REKEY`] for a re-encrypted vault),
/// else [`NS_VAULT`] (so that checking fails, naming both).
pub fn outer_namespace(sig: &SshSig) -> &'static str {
    if sig.namespace() == NS_REKEY {
        NS_REKEY
    } else {
        NS_VAULT
    }
}

/// Rename a signature from [`write_vault_sig`] into place; without one,
/// remove a `VAULT.sig` left from an earlier vault of that name, which
/// could only fail to verify. The caller syncs the directory. Returns the
/// signature's path when there is one.
pub fn commit_vault_sig(
    sig: Option<crate::io::AtomicFile>,
    vault: &Path,
) -> Result<Option<PathBuf>> {
    let path = sig_path(vault);
    match sig {
        Some(f) => {
            f.commit(true)?;
            Ok(Some(path))
        }
        None => match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(Error::io("cannot remove the stale signature", &path, e))
            }
            _ => Ok(None),
        },
    }
}

/// rsa-sha2-512 signing, done here because ssh-key 0.6.7 builds the RSA
/// private key from `p` twice instead of `p` and `q`, so its own RSA
/// signer always fails.
fn sign_rsa_sha512(key: &ssh_key::private::RsaKeypair, data: &[u8]) -> Result<ssh_key::Signature> {
    let bad = |what: &str| Error::Refused(format!("cannot sign with this RSA key: {what}"));
    let big = |m: &ssh_key::Mpint| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or_else(|| bad("a key component is not a positive integer"))
    };
    let private = rsa::RsaPrivateKey::from_components(
        big(&key.public.n)?,
        big(&key.public.e)?,
        big(&key.private.d)?,
        vec![big(&key.private.p)?, big(&key.private.q)?],
    )
    .map_err(|e| bad(&e.to_string()))?;
    if rsa::traits::PublicKeyParts::size(&private) * 8 < 2048 {
        return Err(bad("shorter than 2048 bits"));
    }
    let signer = rsa::pkcs1v15::SigningKey::<Sha512>::new(private);
    let sig = signature::Signer::try_sign(&signer, data).map_err(|e| bad(&e.to_string()))?;
    ssh_key::Signature::new(
        ssh_key::Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        signature::SignatureEncoding::to_vec(&sig),
    )
    .map_err(|e| bad(&e.to_string()))
}

fn not_a_key(path: &Path) -> Error {
    Error::Refused(format!(
        "{} is not an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----); `ssh-keygen -t ed25519` makes one, `ssh-keygen -p -f KEY` converts an old PEM key",
        path.display()
    ))
}

fn read_small(path: &Path, op: &'static str) -> Result<Vec<u8>> {
    let f = fs::File::open(path).map_err(|e| Error::io(op, path, e))?;
    let mut out = Vec::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(op, path, e))?;
    if out.len() as u64 > MAX_KEY_FILE {
        return Err(Error::Refused(format!(
            "{}: file too large (over 1 MiB)",
            path.display()
        )));
    }
    Ok(out)
}

/// The SSHSIG "signed data" blob: `"SSHSIG" || string(namespace) ||
/// string(reserved) || string(hash_alg) || string(H(message))`.
fn signed_data(namespace: &str, reserved: &[u8], alg: HashAlg, hash: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + 4 * 4 + namespace.len() + reserved.len() + 6 + 64);
    out.extend_from_slice(b"SSHSIG");
    for s in [
        namespace.as_bytes(),
        reserved,
        alg.as_str().as_bytes(),
        hash,
    ] {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    }
    out
}

/// Hash a whole file with `alg`, reading with `pread` from offset 0.
/// Like [`hash_file_at`] over any reader (a vault in S3).
fn hash_reader(mut r: impl Read, path: &Path, alg: HashAlg) -> Result<Vec<u8>> {
    let mut s256 = Sha256::new();
    let mut s512 = Sha512::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        crate::signal::check()?;
        let n = match crate::io::retry(|| r.read(&mut buf)) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        match alg {
            HashAlg::Sha256 => s256.update(&buf[..n]),
            _ => s512.update(&buf[..n]),
        }
    }
    Ok(match alg {
        HashAlg::Sha256 => s256.finalize().to_vec(),
        _ => s512.finalize().to_vec(),
    })
}

fn hash_file_at(file: &fs::File, path: &Path, alg: HashAlg) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    enum H {
        S256(Sha256),
        S512(Sha512),
    }
    let mut h = match alg {
        HashAlg::Sha256 => H::S256(Sha256::new()),
        _ => H::S512(Sha512::new()),
    };
    let mut buf = vec![0u8; BUF_SIZE];
    let mut off = 0u64;
    loop {
        crate::signal::check()?;
        let n = match crate::io::retry(|| file.read_at(&mut buf, off)) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        match &mut h {
            H::S256(h) => h.update(&buf[..n]),
            H::S512(h) => h.update(&buf[..n]),
        }
        off += n as u64;
    }
    Ok(match h {
        H::S256(h) => h.finalize().to_vec(),
        H::S512(h) => h.finalize().to_vec(),
    })
}

/// A signature that verified: the key that made it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signing key, as found in the signature.
    pub key: ssh_key::public::KeyData,
    /// Its `SHA256:…` fingerprint.
    pub fingerprint: String,
}

/// Parse an armored SSHSIG. `what` names it in errors (integrity failures:
/// a signature that does not parse is as bad as one that does not verify).
pub fn parse(text: &[u8], what: &str) -> Result<SshSig> {
    let text = std::str::from_utf8(text)
        .map_err(|_| Error::integrity(format!("{what} is not an armored SSH signature")))?;
    SshSig::from_pem(text.trim()).map_err(|e| {
        Error::integrity(format!(
            "{what} is not an armored SSH signature (-----BEGIN SSH SIGNATURE-----): {e}"
        ))
    })
}

fn check_digest(sig: &SshSig, namespace: &str, what: &str, digest: &[u8]) -> Result<Verified> {
    if sig.namespace() != namespace {
        return Err(Error::integrity(format!(
            "{what} is for namespace {:?}, not {namespace:?}",
            sig.namespace()
        )));
    }
    let data = signed_data(namespace, sig.reserved(), sig.hash_alg(), digest);
    signature::Verifier::verify(sig.public_key(), &data, sig.signature()).map_err(|_| {
        Error::integrity(format!(
            "{what} does not verify: the signed data was changed, or the signature was made over something else"
        ))
    })?;
    Ok(Verified {
        key: sig.public_key().clone(),
        fingerprint: sig.public_key().fingerprint(HashAlg::Sha256).to_string(),
    })
}

/// Check that `sig` is a valid signature over `msg` in `namespace` by the
/// key it names. Whether that key is trusted is for [`crate::allowed_signers`].
pub fn verify_bytes(sig: &SshSig, namespace: &str, what: &str, msg: &[u8]) -> Result<Verified> {
    check_digest(sig, namespace, what, &sig.hash_alg().digest(msg))
}

/// Like [`verify_bytes`] over the contents of a file, streamed.
pub fn verify_file(sig: &SshSig, namespace: &str, what: &str, path: &Path) -> Result<Verified> {
    if crate::source::is_remote(path) {
        // An S3 object (issue #13): hashed as it streams.
        let r = crate::source::open_one(path, "cannot open")?;
        let digest = hash_reader(r, path, sig.hash_alg())?;
        return check_digest(sig, namespace, what, &digest);
    }
    let f = fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let digest = hash_file_at(&f, path, sig.hash_alg())?;
    check_digest(sig, namespace, what, &digest)
}

/// Read and parse `VAULT.sig`; `Ok(None)` when it does not exist.
pub fn read_vault_sig(vault: &Path) -> Result<Option<SshSig>> {
    let p = sig_path(vault);
    if let Some(remote) = crate::source::read_small(&p, MAX_KEY_FILE)? {
        return match remote {
            None => Ok(None),
            Some(text) if text.len() as u64 > MAX_KEY_FILE => Err(Error::Refused(format!(
                "{}: file too large (over 1 MiB)",
                p.display()
            ))),
            Some(text) => parse(&text, &p.display().to_string()).map(Some),
        };
    }
    match fs::symlink_metadata(&p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read signature", &p, e)),
        Ok(_) => {}
    }
    let text = read_small(&p, "cannot read signature")?;
    parse(&text, &p.display().to_string()).map(Some)
}

/// The inner signature check every reader does (FORMAT §6 step 4): the
/// `casevault.sig` tag file is a valid `casevault-manifest` signature over
/// the exact `casevault.json` bytes, by the key whose fingerprint
/// `casevault.json` records. Trust is decided later, against an
/// allowed_signers file.
pub fn check_manifest_sig(
    json_bytes: &[u8],
    sig_bytes: &[u8],
    signer: &format::Signer,
) -> Result<Verified> {
    let sig = parse(sig_bytes, format::CASEVAULT_SIG)?;
    let v = verify_bytes(&sig, NS_MANIFEST, format::CASEVAULT_SIG, json_bytes)?;
    made_by_named_key(v, signer)
}

/// `casevault.sig` must be made by the key `casevault.json` names.
fn made_by_named_key(v: Verified, signer: &format::Signer) -> Result<Verified> {
    if v.fingerprint != signer.fingerprint {
        return Err(Error::integrity(format!(
            "{} was made by key {}, but {} names {}",
            format::CASEVAULT_SIG,
            v.fingerprint,
            format::CASEVAULT_JSON,
            signer.fingerprint
        )));
    }
    Ok(v)
}

/// The reader's rule for the inner signature (FORMAT §6 step 4):
/// `casevault.sig` is present exactly when `casevault.json` names a
/// signer, and then it must verify ([`check_manifest_sig`]).
pub fn check_inner(
    json: &format::CaseJson,
    json_bytes: &[u8],
    sig: Option<&[u8]>,
) -> Result<Option<Verified>> {
    match (&json.signer, sig) {
        (Some(signer), Some(sig)) => check_manifest_sig(json_bytes, sig, signer).map(Some),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::integrity(format!(
            "{} names a signer but the bag has no {}",
            format::CASEVAULT_JSON,
            format::CASEVAULT_SIG
        ))),
        (None, Some(_)) => Err(Error::integrity(format!(
            "the bag has {} but {} names no signer",
            format::CASEVAULT_SIG,
            format::CASEVAULT_JSON
        ))),
    }
}

/// [`check_inner`] for a `casevault.json` that the reader streamed rather
/// than kept (issue #10 item 11): given by its SHA-256 and SHA-512, the
/// two hashes an SSHSIG may use.
pub fn check_inner_digests(
    json: &format::CaseJson,
    sha256: &[u8],
    sha512: &[u8],
    sig: Option<&[u8]>,
) -> Result<Option<Verified>> {
    let (Some(signer), Some(sig_bytes)) = (&json.signer, sig) else {
        return check_inner(json, &[], sig);
    };
    let sig = parse(sig_bytes, format::CASEVAULT_SIG)?;
    let digest = match sig.hash_alg() {
        HashAlg::Sha256 => sha256,
        HashAlg::Sha512 => sha512,
        other => {
            return Err(Error::integrity(format!(
                "{} uses an unsupported hash {other}",
                format::CASEVAULT_SIG
            )))
        }
    };
    let v = check_digest(&sig, NS_MANIFEST, format::CASEVAULT_SIG, digest)?;
    made_by_named_key(v, signer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    // An Ed25519 key from the ssh-key crate's documentation.
    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACCzPq7zfqLffKoBDe/eo04kH2XxtSmk9D7RQyf1xUqrYgAAAJgAIAxdACAM
XQAAAAtzc2gtZWQyNTUxOQAAACCzPq7zfqLffKoBDe/eo04kH2XxtSmk9D7RQyf1xUqrYg
AAAEC2BsIi0QwW2uFscKTUUXNHLsYX4FxlaSDSblbAj7WR7bM+rvN+ot98qgEN796jTiQf
ZfG1KaT0PtFDJ/XFSqtiAAAAEHVzZXJAZXhhbXBsZS5jb20BAgMEBQ==
-----END OPENSSH PRIVATE KEY-----";

    fn key() -> SigningKey {
        SigningKey {
            key: PrivateKey::from_openssh(KEY).unwrap(),
            principal: None,
        }
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let k = key();
        let pem = k.sign(NS_CUSTODY, b"hello").unwrap();
        assert!(pem.starts_with("-----BEGIN SSH SIGNATURE-----\n"));
        assert!(pem.ends_with("-----END SSH SIGNATURE-----\n"));
        let sig = parse(pem.as_bytes(), "t").unwrap();
        let v = verify_bytes(&sig, NS_CUSTODY, "t", b"hello").unwrap();
        assert_eq!(v.fingerprint, k.fingerprint());
        assert!(verify_bytes(&sig, NS_CUSTODY, "t", b"hellO").is_err());
        assert!(verify_bytes(&sig, NS_VAULT, "t", b"hello").is_err());
    }

    #[test]
    fn our_signed_data_is_the_crates() {
        // The blob we sign from a streaming hash equals what ssh-key builds.
        let msg = b"casevault";
        let ours = signed_data(NS_VAULT, &[], HashAlg::Sha512, &HashAlg::Sha512.digest(msg));
        assert_eq!(
            ours,
            SshSig::signed_data(NS_VAULT, HashAlg::Sha512, msg).unwrap()
        );
        // And the crate's own verifier accepts our signature.
        let k = key();
        let sig = parse(k.sign(NS_VAULT, msg).unwrap().as_bytes(), "t").unwrap();
        k.key.public_key().verify(NS_VAULT, msg, &sig).unwrap();
    }
}

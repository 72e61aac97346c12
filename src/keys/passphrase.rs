//! Passphrases: passphrase-protected identity files (an identity file
//! encrypted with `age -p`), the scrypt recipient behind
//! `seal --passphrase`, and the scrypt identity that opens such a vault.
//!
//! A passphrase is read only from the terminal ([`crate::keys::prompt`]),
//! never from arguments or the environment, and is held in a
//! `SecretString` that is wiped on drop. Without a terminal the operation
//! is refused (exit 1), never waited on: cron and scripts must not hang.

use std::io::Read;
use std::iter;
use std::path::Path;

use age::secrecy::{ExposeSecret, SecretSlice};

use crate::keys::prompt::{ask, ask_new};
use crate::{Error, Result};

/// Largest plaintext of an encrypted identity file we accept (identity files
/// are small; this bounds memory, as for unencrypted ones).
const MAX_IDENTITY_PLAINTEXT: u64 = 1 << 20;

/// scrypt work factor (log2 N) that stock `age -p` writes (Go age,
/// `ScryptRecipient`); used for `seal --passphrase` so that the vault is as
/// costly to attack as one made with age, whatever this machine's speed.
pub const WORK_FACTOR: u8 = 18;

/// Largest scrypt work factor accepted when decrypting a passphrase-protected
/// identity file: Go age's default limit (`ScryptIdentity`).
pub const MAX_WORK_FACTOR: u8 = 22;

/// Whether `bytes` are an age file (binary `age-encryption.org/…` or ASCII
/// armored) rather than a plain identity file: the form `age -p key.txt`
/// writes.
pub fn is_encrypted_identity(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    bytes.starts_with(b"age-encryption.org/")
        || bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

/// The scrypt recipient for `seal --passphrase`, with the passphrase asked
/// twice on the terminal. age refuses to combine it with other recipients.
pub fn recipient() -> Result<age::scrypt::Recipient> {
    let mut r = age::scrypt::Recipient::new(ask_new("seal --passphrase")?);
    r.set_work_factor(WORK_FACTOR);
    Ok(r)
}

/// Decrypt a passphrase-protected identity file (`bytes`, binary or armored,
/// as read from `path`), asking for the passphrase on the terminal. Returns
/// the plaintext identity file, wiped on drop.
pub fn decrypt_identity_file(bytes: &[u8], path: &Path) -> Result<SecretSlice<u8>> {
    let name = path.display();
    let decryptor = age::Decryptor::new(age::armor::ArmoredReader::new(bytes)).map_err(|e| {
        Error::Refused(format!(
            "{name}: not a readable passphrase-protected identity file: {e}"
        ))
    })?;
    if !decryptor.is_scrypt() {
        return Err(Error::Refused(format!(
            "{name} is an age file encrypted to recipients, not with a passphrase; \
             only passphrase-protected identity files (age -p) are supported"
        )));
    }
    let pass = ask(
        &format!("Enter passphrase for identity file {name}: "),
        &format!("identity file {name}"),
    )?;
    let mut identity = age::scrypt::Identity::new(pass);
    // The age crate's default limit follows this machine's speed (target + 4),
    // which on a slow or busy machine is below the fixed 18 that stock
    // `age -p` writes; accept what Go age accepts.
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    let reader = decryptor
        .decrypt(iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                Error::Refused(format!("wrong passphrase for identity file {name}"))
            }
            age::DecryptError::ExcessiveWork { required, target } => Error::Refused(format!(
                "identity file {name} needs scrypt work factor {required}, more than this \
                 machine allows (about {target}); re-encrypt it with `age -p` on this machine"
            )),
            e => Error::Refused(format!("cannot decrypt identity file {name}: {e}")),
        })?;
    let mut raw = Vec::new();
    let res = reader
        .take(MAX_IDENTITY_PLAINTEXT + 1)
        .read_to_end(&mut raw);
    // Wrapped at once, so that the bytes are wiped on drop also on error.
    let plain = SecretSlice::from(raw);
    res.map_err(|e| {
        Error::Refused(format!(
            "identity file {name} is damaged (decryption failed: {e})"
        ))
    })?;
    if plain.expose_secret().len() as u64 > MAX_IDENTITY_PLAINTEXT {
        return Err(Error::Refused(format!(
            "{name} is not an identity file (too large)"
        )));
    }
    Ok(plain)
}

/// An scrypt identity for a vault sealed with `seal --passphrase`, asked on
/// the terminal. A wrong passphrase reads as "no matching key" (exit 4),
/// not as damage: scrypt cannot tell the two apart, and a wrong passphrase
/// is by far the likelier.
pub fn vault_identity() -> Result<Box<dyn age::Identity + Send + Sync>> {
    let pass = ask("Enter passphrase: ", "a vault sealed with --passphrase")?;
    let mut id = age::scrypt::Identity::new(pass);
    id.set_max_work_factor(MAX_WORK_FACTOR);
    Ok(Box::new(VaultPassphrase(id)))
}

struct VaultPassphrase(age::scrypt::Identity);

impl age::Identity for VaultPassphrase {
    fn unwrap_stanza(
        &self,
        stanza: &age_core::format::Stanza,
    ) -> Option<std::result::Result<age_core::format::FileKey, age::DecryptError>> {
        match self.0.unwrap_stanza(stanza) {
            Some(Err(age::DecryptError::DecryptionFailed)) => None,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_encrypted_identity;

    #[test]
    fn encrypted_identity_files_are_recognised() {
        assert!(is_encrypted_identity(
            b"age-encryption.org/v1\n-> scrypt x 18\n"
        ));
        assert!(is_encrypted_identity(
            b"\n-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n"
        ));
        assert!(!is_encrypted_identity(
            b"# created: x\nAGE-SECRET-KEY-1QQQ\n"
        ));
        assert!(!is_encrypted_identity(
            b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
        ));
        assert!(!is_encrypted_identity(b""));
    }
}

//! Recipients and identities: parsing `-r`/`-R` recipients and `-i` identity
//! files (age and unencrypted OpenSSH keys), and generating new identities.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use crate::{Error, Result};

/// A recipient a vault can be sealed to.
pub type BoxedRecipient = Box<dyn age::Recipient + Send>;
/// An identity that may open a vault.
pub type BoxedIdentity = Box<dyn age::Identity + Send + Sync>;

/// Parse one recipient string: `age1…`, `ssh-ed25519 …` or `ssh-rsa …`.
pub fn parse_recipient(s: &str) -> std::result::Result<BoxedRecipient, String> {
    let s = s.trim();
    if s.starts_with("age1") {
        age::x25519::Recipient::from_str(s)
            .map(|r| Box::new(r) as BoxedRecipient)
            .map_err(|e| format!("not a valid age recipient: {e}"))
    } else if s.starts_with("ssh-") {
        age::ssh::Recipient::from_str(s)
            .map(|r| Box::new(r) as BoxedRecipient)
            .map_err(|e| match e {
                age::ssh::ParseRecipientKeyError::Unsupported(t) => {
                    format!("unsupported SSH key type {t} (use ssh-ed25519 or ssh-rsa)")
                }
                age::ssh::ParseRecipientKeyError::RsaModulusTooSmall => {
                    "ssh-rsa key shorter than 2048 bits is refused".to_string()
                }
                age::ssh::ParseRecipientKeyError::RsaModulusTooLarge => {
                    "ssh-rsa key longer than supported".to_string()
                }
                _ => "not a valid SSH public key".to_string(),
            })
    } else {
        Err("unknown recipient type (expected age1…, ssh-ed25519 … or ssh-rsa …)".to_string())
    }
}

/// Read a recipients file: one recipient per line, blank lines and `#`
/// comments ignored.
pub fn read_recipients_file(path: &Path) -> Result<Vec<BoxedRecipient>> {
    let f = fs::File::open(path).map_err(|e| Error::io("cannot open recipients file", path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io("cannot read recipients file", path, e))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let r = parse_recipient(t)
            .map_err(|e| Error::Refused(format!("{} line {}: {e}", path.display(), i + 1)))?;
        out.push(r);
    }
    if out.is_empty() {
        return Err(Error::Refused(format!(
            "recipients file {} holds no recipient",
            path.display()
        )));
    }
    Ok(out)
}

/// Largest identity file we read (keys are small; this bounds memory).
const MAX_IDENTITY_FILE: u64 = 1 << 20;

/// Read an identity file: an age identity file (one or more
/// `AGE-SECRET-KEY-1…` lines) or an unencrypted OpenSSH private key.
pub fn read_identity_file(path: &Path) -> Result<Vec<BoxedIdentity>> {
    let meta = fs::metadata(path).map_err(|e| Error::io("cannot read identity file", path, e))?;
    if !meta.is_file() || meta.len() > MAX_IDENTITY_FILE {
        return Err(Error::Refused(format!(
            "{} is not an identity file",
            path.display()
        )));
    }
    let data = age::secrecy::SecretSlice::from(
        fs::read(path).map_err(|e| Error::io("cannot read identity file", path, e))?,
    );
    let bytes = data.expose_secret();
    let name = path.display().to_string();
    if bytes.windows(11).any(|w| w == b"-----BEGIN ")
        && bytes.windows(15).any(|w| w == b"PRIVATE KEY----")
    {
        let id = age::ssh::Identity::from_buffer(bytes, Some(name.clone()))
            .map_err(|_| Error::Refused(format!("{name}: not a supported SSH private key")))?;
        return match id {
            age::ssh::Identity::Unencrypted(_) => Ok(vec![Box::new(id)]),
            age::ssh::Identity::Encrypted(_) => Err(Error::Refused(format!(
                "{name}: passphrase-protected SSH keys are not supported yet; use an unencrypted copy on a protected medium or an age identity"
            ))),
            age::ssh::Identity::Unsupported(k) => {
                use age::ssh::UnsupportedKey as U;
                let why = match k {
                    U::EncryptedPem => "an encrypted PEM key".to_string(),
                    U::EncryptedSsh(c) => format!("encrypted with unsupported cipher {c}"),
                    U::Hardware(t) => format!("a hardware key ({t})"),
                    U::Type(t) => format!("key type {t}"),
                };
                Err(Error::Refused(format!("{name}: unsupported SSH key: {why}")))
            }
        };
    }
    let file = age::IdentityFile::from_buffer(bytes)
        .map_err(|e| Error::Refused(format!("{name}: not an identity file: {e}")))?;
    let ids = file
        .into_identities()
        .map_err(|e| Error::Refused(format!("{name}: not an identity file: {e}")))?;
    if ids.is_empty() {
        return Err(Error::Refused(format!("{name} holds no identity")));
    }
    Ok(ids)
}

/// A freshly generated identity, as the text of an identity file and the
/// matching recipient.
pub struct NewIdentity {
    pub file_text: age::secrecy::SecretString,
    pub recipient: String,
}

/// Generate an X25519 identity in the `age-keygen` file format.
pub fn generate(created: &str) -> NewIdentity {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let text = format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        id.to_string().expose_secret()
    );
    NewIdentity {
        file_text: text.into(),
        recipient,
    }
}

/// Write an identity file with mode 0600, refusing to overwrite, and
/// syncing it before returning.
pub fn write_identity_file(path: &Path, id: &NewIdentity) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Refused(format!(
                    "{} already exists; refusing to overwrite an identity",
                    path.display()
                ))
            } else {
                Error::io("cannot create identity file", path, e)
            }
        })?;
    let res = f
        .write_all(id.file_text.expose_secret().as_bytes())
        .and_then(|_| f.sync_all());
    if let Err(e) = res {
        let _ = fs::remove_file(path);
        return Err(Error::io("cannot write identity file", path, e));
    }
    crate::io::sync_parent_dir(path)
}

//! Recipients and identities: parsing `-r`/`-R` recipients and `-i` identity
//! files (age, including post-quantum `AGE-SECRET-KEY-PQ-1…`, and unencrypted
//! OpenSSH keys), and generating new identities.
//!
//! The key types that age does not provide live beside this module:
//! [`pq`] (post-quantum), [`plugin`] (age plugins), [`passphrase`]
//! (passphrase-protected identity files and the scrypt recipient). The
//! terminal is reached only through [`prompt`]. Imports go one way: this
//! module uses those, `passphrase` and `plugin` use `prompt`, and none of
//! them uses this module.

pub mod passphrase;
pub mod plugin;
pub mod pq;
pub mod prompt;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::{Error, Result};

/// A recipient a vault can be sealed to.
pub type BoxedRecipient = Box<dyn age::Recipient + Send>;
/// An identity that may open a vault.
pub type BoxedIdentity = Box<dyn age::Identity + Send + Sync>;

/// Parse one recipient string: `age1pq1…` (post-quantum), `age1…`,
/// `ssh-ed25519 …` or `ssh-rsa …`.
pub fn parse_recipient(s: &str) -> std::result::Result<BoxedRecipient, String> {
    let s = s.trim();
    if pq::is_pq_recipient(s) {
        pq::Recipient::from_str(s)
            .map(|r| Box::new(r) as BoxedRecipient)
            .map_err(|e| format!("not a valid post-quantum age1pq1 recipient: {e}"))
    } else if s.starts_with("age1") {
        match age::x25519::Recipient::from_str(s) {
            Ok(r) => Ok(Box::new(r) as BoxedRecipient),
            // `age1<name>1…`: handled by the age-plugin-<name> binary.
            Err(e) => plugin::parse_recipient(s)
                .map(|r| r.map(|r| Box::new(r) as BoxedRecipient))
                .unwrap_or_else(|| Err(format!("not a valid age recipient: {e}"))),
        }
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
        Err(
            "unknown recipient type (expected age1pq1…, age1…, ssh-ed25519 … or ssh-rsa …)"
                .to_string(),
        )
    }
}

/// Refuse a recipient set age would refuse, before anything is written,
/// with a message naming the rule: post-quantum recipients are never mixed
/// with classic ones in one vault (c2sp.org/age: such a file "SHOULD NOT" be
/// made, since the classic stanza would undo the quantum resistance).
///
/// This wraps a throw-away file key once per recipient, which is how age
/// learns each recipient's labels; it costs microseconds.
pub fn check_recipients(recipients: &[BoxedRecipient]) -> Result<()> {
    if recipients.is_empty() {
        return Err(Error::Usage(
            "no recipients given: use -r RECIPIENT or -R FILE".into(),
        ));
    }
    match age::Encryptor::with_recipients(
        recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
    ) {
        Ok(_) => Ok(()),
        Err(age::EncryptError::IncompatibleRecipients { l_labels, r_labels })
            if l_labels.contains(pq::LABEL_POSTQUANTUM)
                || r_labels.contains(pq::LABEL_POSTQUANTUM) =>
        {
            Err(Error::Refused(
                "post-quantum recipients (age1pq1…) cannot be mixed with classic recipients \
                 (age1…, ssh-…) in one vault: the classic stanza would be the weak link; \
                 seal to post-quantum recipients only, or to classic ones only"
                    .into(),
            ))
        }
        Err(e) => Err(Error::Refused(format!(
            "cannot encrypt to these recipients: {e}"
        ))),
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

/// Permission bits that make an identity file too open: any access by group
/// or others (OpenSSH refuses private keys with these bits, `sshkey_perm_ok`).
pub const INSECURE_IDENTITY_MODE: u32 = 0o077;

/// Refuse an identity file that group or others may access (issue #6), as
/// ssh does, naming the file and the fix. `mode` is its `st_mode`.
pub fn check_identity_mode(path: &Path, mode: u32) -> Result<()> {
    if mode & INSECURE_IDENTITY_MODE == 0 {
        return Ok(());
    }
    let p = path.display();
    Err(Error::Refused(format!(
        "permissions {:04o} for identity file {p} are too open: it must not be accessible \
         by group or others; fix it with `chmod 600 {p}` (or pass --allow-insecure-identity \
         to use it anyway)",
        mode & 0o7777
    )))
}

/// Read an identity file: an age identity file (one or more
/// `AGE-SECRET-KEY-1…` or `AGE-SECRET-KEY-PQ-1…` lines), such a file
/// encrypted with a passphrase (`age -p`; the passphrase is asked on the
/// terminal, see [`passphrase`]), or an unencrypted OpenSSH private key.
///
/// A file that group or others may access is refused
/// ([`check_identity_mode`]) unless `allow_insecure` is set. The mode is
/// taken from the opened file, so the file checked is the file read.
pub fn read_identity_file(path: &Path, allow_insecure: bool) -> Result<Vec<BoxedIdentity>> {
    let data = read_secret_file(path, allow_insecure)?;
    // A passphrase-protected identity file (`age -p`, binary or armored):
    // decrypt it with the passphrase asked on the terminal, then parse the
    // plaintext like any identity file.
    let data = if passphrase::is_encrypted_identity(data.expose_secret()) {
        passphrase::decrypt_identity_file(data.expose_secret(), path)?
    } else {
        data
    };
    let bytes = data.expose_secret();
    let name = path.display().to_string();
    if bytes.windows(11).any(|w| w == b"-----BEGIN ")
        && bytes.windows(15).any(|w| w == b"PRIVATE KEY----")
    {
        return ssh_identity(bytes, name);
    }
    age_identities(bytes, &name)
}

/// The bytes of an identity file, wiped on drop: refused unless it is a
/// regular file of at most [`MAX_IDENTITY_FILE`] bytes that holds secret
/// material, with a safe mode (unless `allow_insecure`).
fn read_secret_file(path: &Path, allow_insecure: bool) -> Result<SecretSlice<u8>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let not_identity = || Error::Refused(format!("{} is not an identity file", path.display()));
    // Checked before opening: opening a FIFO would block.
    let pre = fs::metadata(path).map_err(|e| Error::io("cannot read identity file", path, e))?;
    if !pre.is_file() {
        return Err(not_identity());
    }
    let file = fs::File::open(path).map_err(|e| Error::io("cannot read identity file", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot read identity file", path, e))?;
    if !meta.is_file() || meta.len() > MAX_IDENTITY_FILE {
        return Err(not_identity());
    }
    let mut raw = Vec::with_capacity(meta.len() as usize);
    let res = file.take(MAX_IDENTITY_FILE + 1).read_to_end(&mut raw);
    // Wrapped at once, so that the bytes are wiped on drop also on error.
    let data = SecretSlice::from(raw);
    res.map_err(|e| Error::io("cannot read identity file", path, e))?;
    // What the file is decides the message: "chmod 600" is the wrong advice
    // for a recipients file given to -i by mistake (it would cut the sweep
    // account off a file it must read), so the mode is judged only for a
    // file that holds secret material.
    if !holds_secret_material(data.expose_secret()) {
        return Err(not_an_identity(path, data.expose_secret()));
    }
    if !allow_insecure {
        check_identity_mode(path, meta.permissions().mode())?;
    }
    Ok(data)
}

/// An OpenSSH private key (`name` is its file, for messages): only an
/// unencrypted one is supported.
fn ssh_identity(bytes: &[u8], name: String) -> Result<Vec<BoxedIdentity>> {
    let id = age::ssh::Identity::from_buffer(bytes, Some(name.clone()))
        .map_err(|_| Error::Refused(format!("{name}: not a supported SSH private key")))?;
    match id {
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
    }
}

/// The identities of an age identity file: post-quantum, classic and
/// plugin ones.
fn age_identities(bytes: &[u8], name: &str) -> Result<Vec<BoxedIdentity>> {
    // age 0.12 does not know post-quantum identities yet: take those lines
    // out, hand the rest (classic identities, comments) to age.
    let (mut ids, rest) = split_pq_identities(bytes, name)?;
    if rest.iter().any(|l| !l.trim().is_empty()) {
        let rest = zeroize::Zeroizing::new(rest.join("\n"));
        let file = age::IdentityFile::from_buffer(rest.as_bytes())
            .map_err(|e| Error::Refused(format!("{name}: not an identity file: {e}")))?;
        ids.extend(plugin::identities(file, name)?);
    }
    if ids.is_empty() {
        return Err(Error::Refused(format!("{name} holds no identity")));
    }
    Ok(ids)
}

/// Whether an identity file's bytes can hold a secret: an age identity
/// (`AGE-SECRET-KEY-…`, also post-quantum), a plugin identity
/// (`AGE-PLUGIN-…`), a passphrase-encrypted age file, or a PEM/OpenSSH
/// private key. Anything else cannot be an identity.
fn holds_secret_material(bytes: &[u8]) -> bool {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    has(b"AGE-SECRET-KEY-")
        || has(b"AGE-PLUGIN-")
        || has(b"PRIVATE KEY-----")
        || passphrase::is_encrypted_identity(bytes)
}

/// The refusal for a file given to `-i` that holds no secret: name a
/// recipients file as such (every line a recipient or a comment), so that
/// the user swaps -i for -R instead of changing its mode.
fn not_an_identity(path: &Path, bytes: &[u8]) -> Error {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .peekable();
    let recipients = lines.peek().is_some() && lines.all(|l| parse_recipient(l).is_ok());
    if recipients {
        Error::Refused(format!(
            "{} is a recipients file (public keys), not an identity: give recipients \
             with -R when sealing, and an identity file (AGE-SECRET-KEY-… or an SSH \
             private key) with -i",
            path.display()
        ))
    } else {
        Error::Refused(format!(
            "{} is not an identity file: it holds no age identity (AGE-SECRET-KEY-…), \
             plugin identity, passphrase-encrypted identity or SSH private key",
            path.display()
        ))
    }
}

/// Parse the `AGE-SECRET-KEY-PQ-1…` lines of an age identity file; return
/// them and the other lines, which age parses. `#` comments and blank lines
/// are skipped as age does.
/// The other lines are wiped on drop: they hold classic identities.
fn split_pq_identities(
    bytes: &[u8],
    name: &str,
) -> Result<(Vec<BoxedIdentity>, zeroize::Zeroizing<Vec<String>>)> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::Refused(format!("{name}: not an identity file (not UTF-8)")))?;
    let mut ids: Vec<BoxedIdentity> = Vec::new();
    let mut rest = zeroize::Zeroizing::new(Vec::new());
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.len() > pq::IDENTITY_HRP.len()
            && t[..pq::IDENTITY_HRP.len() + 1]
                .eq_ignore_ascii_case(&format!("{}1", pq::IDENTITY_HRP))
        {
            let id = pq::Identity::from_str(t)
                .map_err(|e| Error::Refused(format!("{name} line {}: {e}", i + 1)))?;
            ids.push(Box::new(id));
        } else {
            rest.push(line.to_string());
        }
    }
    Ok((ids, rest))
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
    new_identity(created, id.to_public().to_string(), &id.to_string())
}

/// Generate a post-quantum (ML-KEM-768 + X25519) identity in the format of
/// Go `age-keygen -pq`: the same three lines as [`generate`], with an
/// `AGE-SECRET-KEY-PQ-1…` identity and its `age1pq1…` recipient.
pub fn generate_pq(created: &str) -> NewIdentity {
    let id = pq::Identity::generate();
    new_identity(created, id.to_public().to_string(), &id.to_string())
}

/// The three lines of an `age-keygen` identity file.
fn new_identity(created: &str, recipient: String, secret: &SecretString) -> NewIdentity {
    let text = format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        secret.expose_secret()
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

/// The identities of one command, remembering the file key they unwrap
/// for a header, so that reading a vault twice (its end, then all of it:
/// `list` and `unseal --path` of an older vault, FORMAT §13) asks a
/// passphrase-protected or hardware key once. The key is returned again
/// only for exactly the same recipient stanzas (the same vault header);
/// it lives in memory only, wiped when the command ends.
pub struct Remembering<'a> {
    inner: Vec<&'a dyn age::Identity>,
    cache: std::sync::Mutex<Option<Remembered>>,
}

/// A header's digest and the file key unwrapped for it.
type Remembered = ([u8; 32], zeroize::Zeroizing<[u8; 16]>);

impl<'a> Remembering<'a> {
    pub fn new(inner: &'a [BoxedIdentity]) -> Self {
        Self::of(
            inner
                .iter()
                .map(|i| i.as_ref() as &dyn age::Identity)
                .collect(),
        )
    }

    pub fn of(inner: Vec<&'a dyn age::Identity>) -> Self {
        Remembering {
            inner,
            cache: std::sync::Mutex::new(None),
        }
    }
}

/// A digest of a header's stanzas: which header a remembered key is for.
fn stanzas_digest(stanzas: &[age_core::format::Stanza]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for s in stanzas {
        for part in std::iter::once(&s.tag).chain(&s.args) {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.update((s.body.len() as u64).to_le_bytes());
        h.update(&s.body);
    }
    h.finalize().into()
}

impl age::Identity for Remembering<'_> {
    fn unwrap_stanza(
        &self,
        stanza: &age_core::format::Stanza,
    ) -> Option<std::result::Result<age_core::format::FileKey, age::DecryptError>> {
        self.unwrap_stanzas(std::slice::from_ref(stanza))
    }

    fn unwrap_stanzas(
        &self,
        stanzas: &[age_core::format::Stanza],
    ) -> Option<std::result::Result<age_core::format::FileKey, age::DecryptError>> {
        use age::secrecy::ExposeSecret;
        let digest = stanzas_digest(stanzas);
        let mut cache = self.cache.lock().expect("key cache lock is never poisoned");
        if let Some((d, key)) = cache.as_ref() {
            if *d == digest {
                let key: &[u8; 16] = key;
                return Some(Ok(age_core::format::FileKey::new(Box::new(*key))));
            }
        }
        for id in &self.inner {
            if let Some(res) = id.unwrap_stanzas(stanzas) {
                if let Ok(k) = &res {
                    *cache = Some((digest, zeroize::Zeroizing::new(*k.expose_secret())));
                }
                return Some(res);
            }
        }
        None
    }
}

#[cfg(test)]
mod remembering_tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// An identity that counts how often it is asked.
    struct Counting(age::x25519::Identity, Arc<AtomicUsize>);

    impl age::Identity for Counting {
        fn unwrap_stanza(
            &self,
            s: &age_core::format::Stanza,
        ) -> Option<std::result::Result<age_core::format::FileKey, age::DecryptError>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.unwrap_stanza(s)
        }
    }

    fn encrypt(to: &age::x25519::Identity, msg: &[u8]) -> Vec<u8> {
        let r = to.to_public();
        let enc =
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
        let mut out = Vec::new();
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(msg).unwrap();
        w.finish().unwrap();
        out
    }

    fn open(ids: &Remembering, file: &[u8]) -> std::result::Result<Vec<u8>, age::DecryptError> {
        let d = age::Decryptor::new(file)?;
        let mut r = d.decrypt(std::iter::once(ids as &dyn age::Identity))?;
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        Ok(v)
    }

    #[test]
    fn a_key_is_unwrapped_once_per_header_and_only_reused_for_it() {
        let id = age::x25519::Identity::generate();
        let calls = Arc::new(AtomicUsize::new(0));
        let boxed: Vec<BoxedIdentity> = vec![Box::new(Counting(id.clone(), Arc::clone(&calls)))];
        let rem = Remembering::new(&boxed);
        let a = encrypt(&id, b"first vault");
        assert_eq!(open(&rem, &a).unwrap(), b"first vault");
        assert_eq!(open(&rem, &a).unwrap(), b"first vault");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "asked once for one header");
        // Another header (another vault): asked again, and right.
        let b = encrypt(&id, b"second vault");
        assert_eq!(open(&rem, &b).unwrap(), b"second vault");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A header for someone else: nothing remembered is handed out.
        let other = encrypt(&age::x25519::Identity::generate(), b"x");
        assert!(matches!(
            open(&rem, &other),
            Err(age::DecryptError::NoMatchingKeys)
        ));
    }
}

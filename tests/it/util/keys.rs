//! Keys: age X25519 identities written as age-keygen does, and private
//! (mode 0600) secret files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;

/// An age X25519 identity written in the age-keygen file format.
pub struct Key {
    pub path: PathBuf,
    pub recipient: String,
    pub secret: String,
}

impl Key {
    /// Generate a fresh identity (with the age crate, independent of the
    /// code under test) and write it to `dir/name`.
    pub fn generate(dir: &Path, name: &str) -> Key {
        let id = age::x25519::Identity::generate();
        let recipient = id.to_public().to_string();
        let secret = id.to_string().expose_secret().to_string();
        let path = dir.join(name);
        fs::create_dir_all(dir).unwrap();
        write_private(
            &path,
            format!("# created: 2026-01-01T00:00:00Z\n# public key: {recipient}\n{secret}\n"),
        );
        Key {
            path,
            recipient,
            secret,
        }
    }

    pub fn identity(&self) -> age::x25519::Identity {
        age::x25519::Identity::from_str(&self.secret).unwrap()
    }
}

/// Write a secret file (an identity) with mode 0600, as `keygen -o` and
/// `age-keygen -o` do: casevault refuses identity files that group or others
/// can read.
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

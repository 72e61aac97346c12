//! The age layer of a vault, done with the age and zstd crates
//! independently of the code under test: decrypt, find the tar, encrypt.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use super::{Key, ZSTD_MAGIC};

/// Decrypt a vault (binary or armored) with the age crate.
pub fn decrypt_vault(vault: &Path, key: &Key) -> Vec<u8> {
    let bytes = fs::read(vault).unwrap();
    age::decrypt(&key.identity(), &bytes).expect("vault decrypts with the age crate")
}

/// The tar stream inside an age plaintext (zstd detected by magic).
pub fn plaintext_tar(plain: &[u8]) -> Vec<u8> {
    if plain.starts_with(&ZSTD_MAGIC) {
        zstd::decode_all(plain).expect("zstd stream decodes")
    } else {
        plain.to_vec()
    }
}

/// Encrypt `plain` to an age X25519 recipient with the age crate.
pub fn encrypt_to(recipient: &str, plain: &[u8], armor: bool) -> Vec<u8> {
    let r = age::x25519::Recipient::from_str(recipient).unwrap();
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
    let mut out = Vec::new();
    if armor {
        let aw = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
            .unwrap();
        let mut w = enc.wrap_output(aw).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap().finish().unwrap();
    } else {
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap();
    }
    out
}

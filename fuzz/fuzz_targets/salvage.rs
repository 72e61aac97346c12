//! `casevault salvage` (issue #16) on damaged vaults of arbitrary
//! plaintext. The input is three bytes of damage and the plaintext; the
//! plaintext is encrypted to a fixed identity, the damage flips up to two
//! 64 KiB age chunks and may cut the vault short, and salvage runs into a
//! fresh directory. The seeds are sealed vaults' plaintexts, one of them
//! cut into many small zstd frames so that the scan's resync (FORMAT §14.4)
//! has frames to find after damage. Besides crashes and hangs it checks
//! what salvage promises about the file system: when it returns, nothing
//! but DEST (or nothing at all, on an error) is left beside the vault — no
//! staging directory, no stray file — and DEST holds only directories and
//! regular files and symlinks inside it.
#![no_main]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

struct Fx {
    identity: age::x25519::Identity,
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| Fx {
        identity: age::x25519::Identity::generate(),
    })
}

/// The plaintext age-encrypted to the fixture's identity.
fn encrypt(plain: &[u8]) -> Vec<u8> {
    let r = fx().identity.to_public();
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        .expect("one recipient");
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).expect("in memory");
    w.write_all(plain).expect("in memory");
    w.finish().expect("in memory");
    out
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir.join(rel)) else {
        return;
    };
    for e in rd {
        let e = e.unwrap();
        let r = rel.join(e.file_name());
        let t = e.file_type().unwrap();
        if t.is_dir() {
            tree(dir, &r, out);
        }
        assert!(
            t.is_dir() || t.is_file() || t.is_symlink(),
            "salvage left a special file: {r:?}"
        );
        out.push(r);
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let (damage, plain) = (&input[..3], &input[3..]);
    let mut vault = encrypt(plain);
    // Chunk k lies at H + 16 + 65552 k; H ends after "--- MAC\n".
    let header = vault
        .windows(4)
        .position(|w| w == b"--- ")
        .and_then(|i| vault[i..].iter().position(|&b| b == b'\n').map(|j| i + j + 1))
        .expect("an age header");
    let payload = vault.len() - header - 16;
    let chunks = payload.div_ceil(65552).max(1);
    for &sel in &damage[..(damage[0] & 3).min(2) as usize] {
        let k = sel as usize % chunks;
        let at = header + 16 + k * 65552 + 100;
        if at < vault.len() {
            vault[at] ^= 0x5a;
        }
    }
    if damage[0] & 4 != 0 {
        let cut = header + 16 + (damage[2] as usize * 4099) % (payload + 1);
        vault.truncate(cut);
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.vault");
    fs::write(&path, &vault).unwrap();
    let dest = dir.path().join("dest");
    let identity: casevault::keys::BoxedIdentity = Box::new(fx().identity.clone());
    let r = casevault::salvage::salvage(casevault::salvage::SalvageOptions {
        vault: path,
        dest: dest.clone(),
        identities: vec![identity],
        unverified: None,
        allow_external_links: false,
    });
    let mut left = Vec::new();
    tree(dir.path(), Path::new(""), &mut left);
    let outside: Vec<_> = left
        .iter()
        .filter(|p| !(p.as_os_str() == "v.vault" || p.starts_with("dest")))
        .collect();
    assert!(outside.is_empty(), "salvage ({r:?}) left {outside:?}");
    if r.is_err() {
        assert!(!dest.exists(), "an error left DEST behind: {r:?}");
    }
    // A symlink salvage makes stays inside DEST (allow_external_links off).
    for p in left.iter().filter(|p| p.starts_with("dest")) {
        let full = dir.path().join(p);
        if fs::symlink_metadata(&full).unwrap().file_type().is_symlink() {
            let target = fs::read_link(&full).unwrap();
            assert!(target.is_relative(), "absolute link {p:?} -> {target:?}");
            let mut depth = p.components().count() as i64 - 2;
            for c in target.components() {
                match c {
                    std::path::Component::ParentDir => depth -= 1,
                    std::path::Component::Normal(_) => depth += 1,
                    _ => {}
                }
                assert!(depth >= 0, "link {p:?} -> {target:?} leaves DEST");
            }
        }
    }
});

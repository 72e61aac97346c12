//! The fixture `Fx`: one temporary directory with a key, case trees, an
//! output directory and restore destinations, and the seal/unseal calls
//! most tests make through it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::{
    assert_error_message, assert_snapshot_unchanged, json_of, seal_cmd, snapshot, stderr_of,
    unseal_cmd, Key,
};

/// Layout: `ROOT/keys/key.txt`, case trees under `ROOT/cases/`, vaults under
/// `ROOT/out/`, restore destinations under `ROOT/restore/`. Keeping those
/// apart lets a test snapshot exactly the directory a command may write to.
pub struct Fx {
    pub tmp: TempDir,
    pub key: Key,
}

impl Fx {
    pub fn new() -> Fx {
        let tmp = tempfile::Builder::new()
            .prefix("casevault-it-")
            .tempdir()
            .unwrap();
        let key = Key::generate(&tmp.path().join("keys"), "key.txt");
        fs::create_dir_all(tmp.path().join("cases")).unwrap();
        fs::create_dir_all(tmp.path().join("out")).unwrap();
        fs::create_dir_all(tmp.path().join("restore")).unwrap();
        Fx { tmp, key }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }
    pub fn cases(&self) -> PathBuf {
        self.root().join("cases")
    }
    pub fn out(&self) -> PathBuf {
        self.root().join("out")
    }
    pub fn restore(&self) -> PathBuf {
        self.root().join("restore")
    }
    pub fn vault(&self, name: &str) -> PathBuf {
        self.out().join(name)
    }
    pub fn dest(&self, name: &str) -> PathBuf {
        self.restore().join(name)
    }
    pub fn new_key(&self, name: &str) -> Key {
        Key::generate(&self.root().join("keys"), name)
    }

    /// `seal CASE -o VAULT -r KEY --json EXTRA…`, asserting success; returns
    /// the JSON object.
    pub fn seal(&self, case: &Path, vault: &Path, extra: &[&str]) -> serde_json::Value {
        let a = seal_cmd(case, vault, &self.key.recipient)
            .arg("--json")
            .args(extra)
            .assert();
        let code = a.get_output().status.code();
        assert_eq!(code, Some(0), "seal failed: stderr:\n{}", stderr_of(&a));
        json_of(&a)
    }

    /// `unseal VAULT -o DEST -i KEY --json EXTRA…`, asserting success.
    pub fn unseal(&self, vault: &Path, dest: &Path, extra: &[&str]) -> serde_json::Value {
        let a = unseal_cmd(vault, dest, &self.key.path)
            .arg("--json")
            .args(extra)
            .assert();
        assert_eq!(
            a.get_output().status.code(),
            Some(0),
            "unseal failed: stderr:\n{}",
            stderr_of(&a)
        );
        json_of(&a)
    }

    /// Run `unseal VAULT -o DEST -i KEY` and assert exit `code`, that DEST
    /// does not exist afterwards and that nothing at all changed under the
    /// fixture root (no staging leftovers, nothing written outside).
    pub fn unseal_fails(&self, vault: &Path, dest: &Path, code: i32, extra: &[&str]) -> String {
        let before = snapshot(self.root());
        let a = unseal_cmd(vault, dest, &self.key.path)
            .args(extra)
            .assert()
            .code(code);
        let err = stderr_of(&a);
        eprintln!("unseal {} (expected exit {code}): {err}", vault.display());
        assert!(
            !dest.exists() && dest.symlink_metadata().is_err(),
            "DEST {} was created by a failing unseal",
            dest.display()
        );
        assert_snapshot_unchanged(self.root(), &before);
        assert_error_message(&err);
        err
    }
}

/// Would a `chmod 000` file be readable by us (root / CAP_DAC_OVERRIDE)?
pub fn chmod_000_is_readable(dir: &Path) -> bool {
    let p = dir.join(".probe-chmod-000");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    let readable = fs::File::open(&p).is_ok();
    fs::remove_file(&p).unwrap();
    readable
}

//! The non-root tier: CI runs as root, which reads and removes everything
//! and so hides permission bugs. These helpers run the real binary as
//! `nobody` (uid/gid 65534) through setpriv(1), on a tree handed to nobody.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// uid and gid of `nobody` on Debian.
pub const NOBODY: u32 = 65534;

/// A way to run casevault as `nobody`. `None` locally when that cannot be
/// done (not root, no setpriv), with the reason printed; under `CI` a
/// missing tier is a failure, never a skip.
pub struct Unprivileged {
    setpriv: PathBuf,
    bin: PathBuf,
}

impl Unprivileged {
    /// Prepare to run as nobody inside `dir`, a test's own temporary
    /// directory: a copy of the binary goes there (so the checkout's
    /// permissions do not matter) and `dir` is handed to nobody.
    pub fn new(dir: &Path) -> Option<Unprivileged> {
        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let root = fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0);
        let why = match (&setpriv, root) {
            (None, _) => "setpriv(1) not found",
            (_, false) => "not running as root, cannot switch to nobody",
            (Some(_), true) => "",
        };
        if !why.is_empty() {
            if std::env::var_os("CI").is_some() {
                panic!("the non-root tier cannot run: {why} (CI is set, so this is a failure)");
            }
            eprintln!("SKIPPED (non-root tier): {why}");
            return None;
        }
        let bin = dir.join(".casevault-bin");
        fs::copy(env!("CARGO_BIN_EXE_casevault"), &bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        give_to_nobody(dir);
        Some(Unprivileged {
            setpriv: setpriv.unwrap(),
            bin,
        })
    }

    /// `casevault ARGS…` as nobody, with no groups, no standard input and an
    /// environment of PATH only.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.setpriv);
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&self.bin)
            // Nothing of root's environment; a test may add what it needs.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null());
        if let Some(log) = std::env::var_os(crate::util::PANIC_LOG_ENV) {
            c.env(crate::util::PANIC_LOG_ENV, log);
        }
        c
    }

    /// Run `casevault ARGS…` as nobody and return its output, asserting
    /// that it did not panic.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = self.cmd().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "casevault panicked:\n{err}");
        out
    }
}

/// Hand `dir` and everything below it to nobody (links themselves, not
/// their targets), and make `dir` itself reachable.
pub fn give_to_nobody(dir: &Path) {
    for ent in walkdir::WalkDir::new(dir) {
        let p = ent.unwrap().into_path();
        std::os::unix::fs::lchown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // tempfile makes 0700 directories owned by root: nobody must be able
    // to pass through every ancestor of `dir` as well.
    let mut up = dir.parent();
    while let Some(p) = up {
        let m = fs::metadata(p).unwrap();
        if m.uid() == 0 && m.mode() & 0o001 == 0 {
            panic!(
                "{} is not searchable by others: put the test directory under one that is",
                p.display()
            );
        }
        up = p.parent();
    }
}

//! Stock tools (age, zstd, tar, bagit.py, …): locating them on PATH, as
//! CI requires, and running them.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether the tests run as root (CI does): mounts need it.
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A file system mounted on `dir` for one test, unmounted (lazily) on
/// drop.
pub struct Mounted {
    pub dir: PathBuf,
}

impl Mounted {
    /// `mount ARGS… DIR` (creating DIR); the error is mount's stderr. The
    /// caller checks [`is_root`] first and decides whether a failure skips
    /// or fails the test.
    pub fn new(args: &[&std::ffi::OsStr], dir: &std::path::Path) -> Result<Mounted, String> {
        fs::create_dir_all(dir).unwrap();
        let o = std::process::Command::new("mount")
            .args(args)
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        Ok(Mounted {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// A fresh file system of `size` bytes made by `mkfs` (a stock tool,
/// with `mkfs_args`) in an image under `dir` and loop-mounted on
/// `dir/mnt` with `opts`, for a test whose result depends on the file
/// system (not on whatever /tmp is). `None`, after saying why, where the
/// tests are not root or there is no loop device; a missing `mkfs` fails
/// under CI.
pub fn loop_mount(
    dir: &Path,
    mkfs: &str,
    mkfs_args: &[&str],
    size: u64,
    opts: &str,
) -> Option<Mounted> {
    let mkfs = tool(mkfs)?;
    if !is_root() {
        eprintln!("SKIPPED: not root, cannot mount a file system image");
        return None;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIPPED: no loop device (/dev/loop-control), cannot mount a file system image");
        return None;
    }
    let img = dir.join("fs.img");
    // Sparse: only what the test writes takes space.
    fs::File::create(&img).unwrap().set_len(size).unwrap();
    let o = std::process::Command::new(mkfs)
        .args(mkfs_args)
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let opts = format!("loop,{opts}");
    let args = ["-o".as_ref(), opts.as_ref(), img.as_os_str()];
    Some(Mounted::new(&args, &dir.join("mnt")).expect("mount -o loop"))
}

/// Bytes of `file` in the page cache, by util-linux `fincore`.
pub fn cached_bytes(fincore: &Path, file: &Path) -> u64 {
    let out = run_tool(
        std::process::Command::new(fincore)
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(file),
    );
    String::from_utf8_lossy(&out).trim().parse().unwrap()
}

/// Find a stock tool on PATH. Missing under `CI` → panic (the test fails);
/// missing locally → say why and return None (the test returns early).
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|c| {
                fs::metadata(c)
                    .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("required tool `{name}` not found on PATH (CI is set, so this is a failure)")
        }
        None => {
            eprintln!("SKIPPED: tool `{name}` not found on PATH");
            None
        }
    }
}

/// Run a stock tool, asserting success; returns stdout.
pub fn run_tool(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Run `cmd` (the casevault binary with its arguments and environment)
/// under strace and sum what every read(2)-family call returned on the
/// descriptors whose strace `-yy` decoration `on` accepts (a file
/// `<PATH>`, a socket `TCP:[…:PORT]`): bytes read, counted from outside
/// the binary. `log` is strace's output, removed afterwards. `None`
/// locally without strace (under CI, a failure).
pub fn strace_reads(
    cmd: &std::process::Command,
    log: &std::path::Path,
    on: impl Fn(&str) -> bool,
) -> Option<(std::process::Output, u64)> {
    let strace = tool("strace")?;
    let mut s = std::process::Command::new(strace);
    s.args([
        "-f",
        "-qq",
        "-yy",
        "-e",
        "trace=read,pread64,readv,preadv,recvfrom,recvmsg",
        "-o",
    ])
    .arg(log)
    .arg(cmd.get_program())
    .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    let out = s.output().unwrap();
    let bytes = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| on(l))
        .filter_map(|l| l.rsplit_once("= ")?.1.trim().parse::<u64>().ok())
        .sum();
    std::fs::remove_file(log).unwrap();
    Some((out, bytes))
}

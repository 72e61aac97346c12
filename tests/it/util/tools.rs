//! Stock tools (age, zstd, tar, bagit.py, …): locating them on PATH, as
//! CI requires, and running them.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

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

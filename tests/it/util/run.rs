//! Running the binary: the `casevault` command with its panic log, its
//! outputs as text or JSON, and the one-line error-message check.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin_cmd;

use super::run_tool;

/// A `casevault` command with a generous timeout so that a hang fails the
/// test instead of the whole run.
pub fn casevault() -> assert_cmd::Command {
    let mut cmd = cargo_bin_cmd!("casevault");
    cmd.timeout(Duration::from_secs(90));
    cmd.env_remove("RUST_LOG");
    cmd.env(PANIC_LOG_ENV, panic_log());
    cmd
}

/// The binary appends every panic to the file this variable names (see
/// src/main.rs); no input may make casevault panic, and the `no_panics`
/// test target fails the run if anything was appended.
pub const PANIC_LOG_ENV: &str = "CASEVAULT_PANIC_LOG";

/// The binary as a plain `std::process::Command` (for spawning and
/// signalling), with the panic log set.
pub fn bin_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_casevault"));
    c.env(PANIC_LOG_ENV, panic_log());
    c
}

/// The panic log shared by every test run of this checkout.
pub fn panic_log() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("casevault-panics.log")
}

/// stdout of an assert as UTF-8.
pub fn stdout_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(a.get_output().stdout.clone()).expect("stdout is UTF-8")
}

/// Assert that a finished `std::process::Command` exited with `code`,
/// showing its stdout and stderr if not.
pub fn assert_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// stderr of an assert as (lossy) text.
pub fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// Parse `--json` stdout: exactly one JSON object on one line.
pub fn json_of(a: &assert_cmd::assert::Assert) -> serde_json::Value {
    let out = stdout_of(a);
    let trimmed = out.strip_suffix('\n').unwrap_or(&out);
    assert!(
        !trimmed.contains('\n'),
        "--json output must be one line, got:\n{out}"
    );
    let v: serde_json::Value = serde_json::from_str(trimmed)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{out}"));
    assert!(v.is_object(), "--json output must be an object: {out}");
    v
}

/// Assert that a JSON object has every field in `keys` (the names CLI.md
/// lists). Extra fields are reported on stderr but tolerated: adding a
/// field does not break a script.
pub fn assert_json_keys(v: &serde_json::Value, keys: &[&str]) {
    let got: BTreeSet<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(|k| k.as_str())
        .collect();
    let want: BTreeSet<&str> = keys.iter().copied().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "JSON lacks fields {missing:?} (CLI.md): {v}"
    );
    let extra: Vec<_> = got.difference(&want).collect();
    if !extra.is_empty() {
        eprintln!("NOTE: JSON has fields not in CLI.md: {extra:?}");
    }
}

/// Errors are one line `casevault: error: …` on stderr (CLI.md).
pub fn assert_error_message(stderr: &str) {
    assert!(
        stderr.lines().any(|l| l.starts_with("casevault: error: ")),
        "stderr has no `casevault: error: ` line:\n{stderr}"
    );
}

/// Send `kill -s SIG` to a running child and wait (at most 30 s) for it.
pub fn signal_and_wait(mut child: std::process::Child, sig: &str) -> std::process::ExitStatus {
    run_tool(
        std::process::Command::new("kill")
            .args(["-s", sig])
            .arg(child.id().to_string()),
    );
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("process did not exit within 30 s of SIG{sig}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `casevault seal CASE -o VAULT -r RECIPIENT`, to add arguments to.
pub fn seal_cmd(
    case: impl AsRef<OsStr>,
    vault: impl AsRef<OsStr>,
    recipient: impl AsRef<OsStr>,
) -> assert_cmd::Command {
    let mut cmd = casevault();
    cmd.arg("seal")
        .arg(case)
        .arg("-o")
        .arg(vault)
        .arg("-r")
        .arg(recipient);
    cmd
}

/// `casevault unseal VAULT -o DEST -i IDENTITY`, to add arguments to.
pub fn unseal_cmd(
    vault: impl AsRef<OsStr>,
    dest: impl AsRef<OsStr>,
    identity: impl AsRef<OsStr>,
) -> assert_cmd::Command {
    let mut cmd = casevault();
    cmd.arg("unseal")
        .arg(vault)
        .arg("-o")
        .arg(dest)
        .arg("-i")
        .arg(identity);
    cmd
}

/// `casevault verify VAULT -i IDENTITY`, to add arguments to.
pub fn verify_cmd(vault: impl AsRef<OsStr>, identity: impl AsRef<OsStr>) -> assert_cmd::Command {
    let mut cmd = casevault();
    cmd.arg("verify").arg(vault).arg("-i").arg(identity);
    cmd
}

/// `casevault list VAULT -i IDENTITY`, to add arguments to.
pub fn list_cmd(vault: impl AsRef<OsStr>, identity: impl AsRef<OsStr>) -> assert_cmd::Command {
    let mut cmd = casevault();
    cmd.arg("list").arg(vault).arg("-i").arg(identity);
    cmd
}

/// Run `cmd` (stdout discarded) and poll its peak resident memory (VmHWM,
/// bytes) from /proc while it runs: a poll can only under-read the peak,
/// never over-read it (samples before the exec, when the child is still a
/// copy of the test process, are not counted). `cmd` must run the
/// casevault binary itself. Returns the peak, the exit code and stderr.
pub fn peak_rss(mut cmd: std::process::Command) -> (u64, Option<i32>, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let comm = format!("/proc/{}/comm", child.id());
    let mut peak = 0u64;
    let code = loop {
        // Between fork and exec the child is a copy of this test process,
        // whose memory is not the program's: count only after the exec.
        let exec_done = std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "casevault");
        if let Some(s) = exec_done
            .then(|| std::fs::read_to_string(&status).ok())
            .flatten()
        {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb * 1024);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (peak, code, err)
}

//! Issue #17: what a lab's set-up (docs/OPERATIONS.md) depends on, tested
//! as the people involved would meet it. The set-up itself is exercised end
//! to end by scripts/ops-drill, which CI runs.

use std::fs;

use crate::unpriv::Unprivileged;
use crate::util::*;

/// Item 9: the custody actor is the account the process runs as, from the
/// operating system, whatever `$USER` / `$LOGNAME` claim.
#[test]
fn custody_actor_is_the_os_account_not_the_environment() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "ACT-1");
    let vault = fx.vault("act.vault");
    let log = fx.root().join("custody.jsonl");
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    casevault()
        .arg("seal")
        .arg(&case.root)
        .arg("-o")
        .arg(&vault)
        .args(["-r", &fx.key.recipient, "--custody"])
        .arg(&log)
        .env("USER", "somebody-else")
        .env("LOGNAME", "somebody-else")
        .assert()
        .code(0);
    let first: serde_json::Value =
        serde_json::from_str(fs::read_to_string(&log).unwrap().lines().next().unwrap()).unwrap();
    if running_as_root() {
        assert_eq!(first["actor"], format!("root@{host}"));
    }
    assert!(!first["actor"].as_str().unwrap().contains("somebody-else"));

    // The same as nobody, with the environment claiming root.
    let Some(nobody) = Unprivileged::new(fx.root()) else {
        return;
    };
    let out = nobody
        .cmd()
        .arg("verify")
        .arg(&vault)
        .arg("--custody")
        .arg(&log)
        .env("USER", "root")
        .env("LOGNAME", "root")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["actor"], format!("nobody@{host}"));
}

/// Whether the tests run as root (the effective uid owns /proc/self).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

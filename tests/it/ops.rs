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

/// The doc and the drill cannot drift: scripts/ops-drill runs the doc's
/// marked blocks themselves, knows their names (checked here and again when
/// it runs), and the unit, timer, logrotate snippet and cron line the doc
/// shows are the files in contrib/ (comments aside).
#[test]
fn operations_doc_matches_the_drill_and_the_shipped_files() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/OPERATIONS.md")).unwrap();
    let drill = fs::read_to_string(root.join("scripts/ops-drill")).unwrap();

    // Every marker heads a sh block; the names are the drill's list.
    let lines: Vec<&str> = doc.lines().collect();
    let mut names = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(rest) = l.strip_prefix("<!-- ops-drill: ") {
            let (name, who) = rest
                .strip_suffix(" -->")
                .and_then(|r| r.split_once(" as "))
                .unwrap_or_else(|| panic!("malformed marker: {l}"));
            assert!(
                ["root", "analyst", "investigator"].contains(&who),
                "{name}: unknown role {who}"
            );
            assert_eq!(
                lines.get(i + 1),
                Some(&"```sh"),
                "{name}: no sh block after its marker"
            );
            names.push(name.to_string());
        }
    }
    let expected = drill
        .lines()
        .find_map(|l| l.strip_prefix("expected=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the drill lists the blocks it runs");
    assert_eq!(names.join(" "), expected);
    for name in &names {
        assert!(
            drill.contains(&format!("run_block {name}")),
            "the drill never runs block {name}"
        );
    }

    // The shipped files, as the doc shows them.
    let fenced = |lang: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut cur: Option<String> = None;
        for l in doc.lines() {
            match &mut cur {
                None if l == format!("```{lang}") => cur = Some(String::new()),
                Some(_) if l == "```" => out.push(cur.take().unwrap()),
                Some(b) => {
                    b.push_str(l);
                    b.push('\n')
                }
                None => {}
            }
        }
        out
    };
    let uncommented = |p: &str| -> String {
        fs::read_to_string(root.join(p))
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let ini = fenced("ini");
    for unit in [
        "contrib/systemd/casevault-sweep.service",
        "contrib/systemd/casevault-sweep.timer",
    ] {
        assert!(
            ini.contains(&uncommented(unit)),
            "docs/OPERATIONS.md does not show {unit} as shipped"
        );
    }
    assert!(
        fenced("").contains(&uncommented("contrib/logrotate/casevault")),
        "docs/OPERATIONS.md does not show contrib/logrotate/casevault as shipped"
    );
    let exec = uncommented("contrib/systemd/casevault-sweep.service")
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=").map(str::to_string))
        .unwrap();
    assert!(
        doc.lines()
            .any(|l| l.contains(" casevault ") && l.ends_with(&exec)),
        "the cron line does not run the unit's ExecStart: {exec}"
    );
}

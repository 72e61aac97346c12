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
    assert_exit(&out, 0);
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

/// Item 4: investigators get vaults through a read-only group on the store.
/// What sweep creates follows the store directory's group bits, whatever
/// the umask: a `2750` store gives `0640` vaults, sidecars and signatures
/// and `2750` case directories, readable by a member of the store's group;
/// a `0700` store keeps `0600` / `0700`. The state is never shared.
#[test]
fn store_files_follow_the_store_directory_group_bits() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const CUSTODIANS: u32 = 65534; // nogroup
    for (store_mode, file_mode, dir_mode) in [(0o2750, 0o640, 0o2750), (0o700, 0o600, 0o700)] {
        let fx = Fx::new();
        let inbox = fx.root().join("inbox");
        let store = fx.root().join("store");
        fs::create_dir_all(&inbox).unwrap();
        small_case(&inbox, "C-1");
        fs::create_dir(&store).unwrap();
        std::os::unix::fs::chown(&store, None, Some(CUSTODIANS)).unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(store_mode)).unwrap();
        let sign_key = fx.root().join("keys/sign");
        crate::util::run_tool(
            std::process::Command::new(tool("ssh-keygen").unwrap())
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "lab", "-f"])
                .arg(&sign_key),
        );
        // sh sets the umask the service would have (UMask=0077).
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 0077; exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_casevault"))
            .arg("sweep")
            .arg(&inbox)
            .arg("-o")
            .arg(&store)
            .args(["-r", &fx.key.recipient, "-q", "--sign"])
            .arg(&sign_key)
            .env(PANIC_LOG_ENV, panic_log())
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let case_dir = store.join("C-1");
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(
            mode(&case_dir),
            dir_mode,
            "case directory in a {store_mode:o} store"
        );
        let files: Vec<_> = fs::read_dir(&case_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 3, "vault, sidecar, signature: {files:?}");
        for f in &files {
            assert_eq!(
                mode(f),
                file_mode,
                "{} in a {store_mode:o} store",
                f.display()
            );
            if store_mode & 0o2000 != 0 {
                // The setgid store hands its group down.
                assert_eq!(
                    fs::metadata(f).unwrap().gid(),
                    CUSTODIANS,
                    "{}",
                    f.display()
                );
            }
        }
        assert_eq!(mode(&store.join(".casevault")) & 0o777, 0o700);
        assert_eq!(mode(&store.join(".casevault/state.json")) & 0o777, 0o600);

        // A member of the store's group (and of nothing else) can copy the
        // vault out exactly when the store shares it.
        if crate::unpriv::Unprivileged::new(fx.root()).is_none() {
            continue;
        }
        std::os::unix::fs::chown(&store, Some(0), Some(CUSTODIANS)).unwrap();
        std::os::unix::fs::chown(&case_dir, Some(0), Some(CUSTODIANS)).unwrap();
        for f in &files {
            std::os::unix::fs::chown(f, Some(0), Some(CUSTODIANS)).unwrap();
        }
        let vault = files
            .iter()
            .find(|f| f.extension().unwrap() == "vault")
            .unwrap();
        let read = std::process::Command::new("setpriv")
            .args([
                "--reuid=12345",
                "--regid=12345",
                "--groups=65534",
                "--",
                "cat",
            ])
            .arg(vault)
            .output()
            .unwrap();
        assert_eq!(
            read.status.success(),
            file_mode == 0o640,
            "{store_mode:o}: {read:?}"
        );
    }
}

/// Item 8: a vault whose state cannot be written (a full disk; here a
/// metadata directory the sweep may not write, run as nobody) is deleted
/// again: the case fails with the reason, the source stays, no custody
/// record claims it, and the next run seals exactly one generation.
#[test]
fn a_vault_the_state_cannot_record_is_rolled_back() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fx::new();
    let inbox = fx.root().join("inbox");
    let store = fx.root().join("store");
    fs::create_dir_all(&inbox).unwrap();
    let case = small_case(&inbox, "C-1");
    fs::create_dir(&store).unwrap();
    let before = snapshot(&case.root);
    let Some(nobody) = Unprivileged::new(fx.root()) else {
        return;
    };
    let sweep = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "sweep".into(),
            inbox.clone().into(),
            "-o".into(),
            store.clone().into(),
            "-r".into(),
            fx.key.recipient.clone().into(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(Into::into));
        nobody.run(args)
    };
    // A first, empty-store run creates .casevault (lock); then its
    // directory is made read-only for its owner.
    let dry = sweep(&["--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{dry:?}");
    let meta = store.join(".casevault");
    fs::set_permissions(&meta, fs::Permissions::from_mode(0o500)).unwrap();

    let out = sweep(&["--remove-source"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(rec["status"], "failed");
    let why = rec["error"].as_str().unwrap();
    assert!(
        why.contains("could not be recorded in the sweep state")
            && why.contains("deleted again and the source kept"),
        "{why}"
    );
    assert!(rec.get("vault").is_none(), "{rec}");
    assert!(
        !store.join("C-1").exists(),
        "no vault, no case directory left"
    );
    assert_snapshot_unchanged(&case.root, &before);
    assert!(
        !store.join("custody.jsonl").exists()
            || fs::read_to_string(store.join("custody.jsonl"))
                .unwrap()
                .is_empty()
    );

    fs::set_permissions(&meta, fs::Permissions::from_mode(0o700)).unwrap();
    let out = sweep(&[]);
    assert_exit(&out, 0);
    let vaults: Vec<_> = fs::read_dir(store.join("C-1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".vault"))
        .collect();
    assert_eq!(vaults.len(), 1, "{vaults:?}");
}

/// Item 10: a sweep that cannot start (here: the store is not there, an
/// unmounted disk) still leaves its summary in `--log`, with the reason and
/// the exit code, so that the log alone shows a broken night.
#[test]
fn a_sweep_that_cannot_start_says_so_in_its_log() {
    let fx = Fx::new();
    let inbox = fx.root().join("inbox");
    fs::create_dir_all(&inbox).unwrap();
    let log = fx.root().join("sweep.jsonl");
    let missing = fx.root().join("store");
    // `sweep INBOX -o STORE -r KEY FLAG --log LOG`, asserting its exit code.
    let sweep = |flag: &str, log: &std::path::Path, code: i32| {
        casevault()
            .arg("sweep")
            .arg(&inbox)
            .arg("-o")
            .arg(&missing)
            .args(["-r", &fx.key.recipient, flag, "--log"])
            .arg(log)
            .assert()
            .code(code)
    };
    let a = sweep("-q", &log, 1);
    assert!(stderr_of(&a).contains("does not exist"));
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let s: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(s["summary"], true);
    assert_eq!(s["exit"], 1);
    assert_eq!(s["busy"], false);
    let why = s["error"].as_str().unwrap();
    assert!(
        why.contains(&missing.display().to_string()) && why.contains("does not exist"),
        "{why}"
    );

    // A dry run writes no log, also when it cannot start.
    let dry_log = fx.root().join("dry.jsonl");
    sweep("--dry-run", &dry_log, 1);
    assert!(!dry_log.exists());

    // A normal run's summary carries its exit code too.
    fs::create_dir(&missing).unwrap();
    sweep("-q", &log, 0);
    let text = fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            last["summary"].clone(),
            last["exit"].clone(),
            last["busy"].clone()
        ),
        (true.into(), 0.into(), false.into())
    );
    assert!(last.get("error").is_none());
}

/// Item 4, the trap: a shared (2750) store whose group the sweep account is
/// not in would get vaults in the account's own group, unreadable by the
/// store's; the sweep refuses to start and says what to do.
#[test]
fn a_shared_store_whose_group_the_sweep_is_not_in_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fx::new();
    let inbox = fx.root().join("inbox");
    let store = fx.root().join("store");
    fs::create_dir_all(&inbox).unwrap();
    small_case(&inbox, "C-1");
    fs::create_dir(&store).unwrap();
    let Some(nobody) = Unprivileged::new(fx.root()) else {
        return;
    };
    // Owned by nobody, group root: nobody is not in it.
    std::os::unix::fs::chown(&store, None, Some(0)).unwrap();
    fs::set_permissions(&store, fs::Permissions::from_mode(0o2750)).unwrap();
    let out = nobody.run([
        "sweep".as_ref(),
        inbox.as_os_str(),
        "-o".as_ref(),
        store.as_os_str(),
        "-r".as_ref(),
        fx.key.recipient.as_ref(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not in that group") && err.contains("usermod -aG"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&store).unwrap().count(),
        0,
        "nothing created in the store"
    );
}

/// Item 5: `unseal -o ~/work/CASE` where `~/work` does not exist says so
/// plainly (exit 2, a usage error), creates nothing, and appends no custody
/// record; the same command after `mkdir -p` works.
#[test]
fn unseal_into_a_missing_parent_says_so_and_records_nothing() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "PAR-1");
    let vault = fx.vault("par.vault");
    fx.seal(&case.root, &vault, &[]);
    let work = fx.root().join("work");
    let dest = work.join("PAR-1");
    let log = fx.root().join("custody.jsonl");
    let before = snapshot(fx.root());
    let unseal = || {
        let mut c = casevault();
        c.arg("unseal")
            .arg(&vault)
            .arg("-o")
            .arg(&dest)
            .arg("-i")
            .arg(&fx.key.path)
            .arg("--custody")
            .arg(&log);
        c
    };
    let a = unseal().assert().code(2);
    let err = stderr_of(&a);
    assert_error_message(&err);
    assert!(
        err.contains(&format!(
            "{} that is to hold the destination",
            work.display()
        )) && err.contains("does not exist")
            && err.contains(&format!("mkdir -p {}", work.display())),
        "{err}"
    );
    assert!(!err.contains("staging"), "{err}");
    assert_snapshot_unchanged(fx.root(), &before);
    assert!(!log.exists(), "no custody record for a usage error");

    fs::create_dir(&work).unwrap();
    unseal().assert().code(0);
    assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 1);
}

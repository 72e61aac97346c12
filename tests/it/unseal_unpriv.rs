//! `unseal` as a non-root user (issue #10 items 1, 2 and 4). Root reads,
//! writes and removes everything, so CI (which runs as root) would never see
//! a recorded mode stop an analyst's unseal or its cleanup: these tests seal
//! as root and unseal as `nobody` through setpriv (tests/it/unpriv.rs).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::unpriv::Unprivileged;
use crate::util::*;

/// `unseal VAULT -o DEST -i KEY --json` as an argument list.
fn unseal_args(fx: &Fx, vault: &Path, dest: &Path) -> Vec<OsString> {
    vec![
        "unseal".into(),
        vault.into(),
        "-o".into(),
        dest.into(),
        "-i".into(),
        fx.key.path.clone().into(),
        "--json".into(),
    ]
}

/// Assert exit 0 and return the `--json` object.
fn json_ok(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim_end()).unwrap()
}

/// Seconds, nanoseconds and permission bits of every entry under `root`
/// (links included: unseal restores their own times) and of `root` itself.
fn exact_meta(root: &Path) -> Vec<(PathBuf, i64, i64, u32)> {
    let mut v = vec![(PathBuf::new(), root.to_path_buf())];
    v.extend(entries(root).into_iter().map(|(rel, _)| {
        let p = root.join(&rel);
        (rel, p)
    }));
    v.into_iter()
        .map(|(rel, p)| {
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = if m.file_type().is_symlink() {
                0
            } else {
                m.mode() & 0o777
            };
            (rel, m.mtime(), m.mtime_nsec(), mode)
        })
        .collect()
}

/// The restored tree equals the case: paths, kinds, bytes, link targets,
/// permission bits, and mtimes to the nanosecond, the root's included.
fn assert_restored_exactly(case: &Path, dest: &Path) {
    assert_same_tree(case, dest, true);
    assert_eq!(exact_meta(case), exact_meta(dest));
}

/// Names in `dir` starting with `.casevault-unseal-`.
fn staging_dirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".casevault-unseal-")
        })
        .collect()
}

/// Wait for `child` to create its staging directory in `parent`, then stop
/// it (SIGSTOP) and return the directory. Panics if the child ended first.
pub fn stop_at_staging(child: &mut Child, parent: &Path) -> PathBuf {
    let start = Instant::now();
    let staging = loop {
        if let Some(s) = staging_dirs(parent).pop() {
            break s;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("unseal ended ({st:?}) before its staging directory was seen");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no staging directory within 20 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    signal(child, "STOP");
    assert!(
        child.try_wait().unwrap().is_none(),
        "unseal finished before it could be stopped: make the case bigger"
    );
    staging
}

pub fn signal(child: &Child, sig: &str) {
    run_tool(
        std::process::Command::new("kill")
            .args(["-s", sig])
            .arg(child.id().to_string()),
    );
}

/// A case whose extraction takes a while (thousands of small files, most
/// of them in a write-protected 0555 directory, and 24 MiB of zeros), so
/// that a test can stop unseal mid-extraction.
pub(crate) fn slow_readonly_case(fx: &Fx, name: &str) -> CaseTree {
    let case = CaseTree::new(fx.cases().join(name));
    for i in 0..3000 {
        case.file(
            &format!("evidence/f{i:05}.txt"),
            format!("{i}\n").as_bytes(),
        );
    }
    case.file("evidence/deep/inner.txt", b"inner\n")
        .file("zeros.bin", &vec![0u8; 24 << 20])
        .file("top.txt", b"top\n");
    case.mode("evidence/deep", 0o555)
        .mode("evidence", 0o555)
        .mode("top.txt", 0o444);
    case.stamp_times(1_650_000_000);
    case
}

/// Issue #10 item 2: files recorded as 000, 004, 044 or 200 and directories
/// without owner read, write or search must unseal as a non-root user, with
/// exactly the recorded modes and mtimes (the old code opened each entry to
/// set its mtime after applying its mode: "Permission denied").
#[test]
fn restrictive_modes_unseal_as_nobody() {
    let fx = Fx::new();
    let case = CaseTree::new(fx.cases().join("MODES-1"));
    case.file("f000.txt", b"zero\n")
        .file("f004.txt", b"others read\n")
        .file("f044.txt", b"group and others read\n")
        .file("f200.txt", b"write only\n")
        .file("d0300/inner.txt", b"in a dir without read\n")
        .file("d0311/inner.txt", b"in a dir with search only\n")
        .file("d0000/sub/inner.txt", b"behind a dir without any bit\n")
        .file("d0500/inner.txt", b"in a read-only dir\n")
        .symlink("link-to-000", "f000.txt")
        .symlink("d0500/up", "../f004.txt");
    for (rel, mode) in [
        ("f000.txt", 0o000),
        ("f004.txt", 0o004),
        ("f044.txt", 0o044),
        ("f200.txt", 0o200),
        ("d0300", 0o300),
        ("d0311", 0o311),
        ("d0000/sub", 0o500),
        ("d0000", 0o000),
        ("d0500", 0o500),
    ] {
        case.mode(rel, mode);
    }
    case.stamp_times(1_620_000_000);
    let vault = fx.vault("modes.vault");
    fx.seal(&case.root, &vault, &[]);
    let Some(nobody) = Unprivileged::new(fx.root()) else {
        return;
    };
    // What verify -i accepts as nobody, unseal must restore as nobody.
    let out = nobody.run([
        "verify".as_ref(),
        vault.as_os_str(),
        "-i".as_ref(),
        fx.key.path.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dest = fx.dest("modes");
    json_ok(&nobody.run(unseal_args(&fx, &vault, &dest)));
    assert_restored_exactly(&case.root, &dest);
    assert_eq!(fs::metadata(&dest).unwrap().uid(), crate::unpriv::NOBODY);
    assert!(staging_dirs(&fx.restore()).is_empty());
}

/// Issue #10 items 1 and 2: a case whose root directory has no owner-read
/// bit (0311) unseals as nobody, and DEST gets that mode and mtime.
#[test]
fn case_root_0311_unseals_as_nobody() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "ROOT-0311");
    case.mode(".", 0o311);
    let vault = fx.vault("root0311.vault");
    fx.seal(&case.root, &vault, &[]);
    let Some(nobody) = Unprivileged::new(fx.root()) else {
        return;
    };
    let dest = fx.dest("r");
    let v = json_ok(&nobody.run(unseal_args(&fx, &vault, &dest)));
    assert_eq!(v["files"], 4);
    assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o311);
    assert_restored_exactly(&case.root, &dest);
    assert_eq!(fs::read_dir(fx.restore()).unwrap().count(), 1);
}

/// Seal a slow case holding read-only directories as root, start its unseal
/// as nobody into `RESTORE/case`, and stop it (SIGSTOP) as soon as its
/// staging directory appears. `None` where the non-root tier cannot run.
fn paused_unseal_as_nobody(fx: &Fx, name: &str) -> Option<(PathBuf, Child, PathBuf)> {
    let case = slow_readonly_case(fx, name);
    let vault = fx.vault(&format!("{name}.vault"));
    fx.seal(&case.root, &vault, &[]);
    let nobody = Unprivileged::new(fx.root())?;
    let dest = fx.dest("case");
    let mut child = nobody
        .cmd()
        .args(unseal_args(fx, &vault, &dest))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let staging = stop_at_staging(&mut child, &fx.restore());
    Some((dest, child, staging))
}

/// Issue #10 item 1, as reported: a second unseal to the same DEST fails
/// with "destination is not empty" once the first has put the case there.
/// It must leave nothing beside DEST, although the case holds 0555
/// directories that nobody cannot write into. (The old code applied the
/// recorded modes first and then could not remove the files.)
#[test]
fn dest_filled_meanwhile_leaves_nothing_as_nobody() {
    let fx = Fx::new();
    let Some((dest, child, staging)) = paused_unseal_as_nobody(&fx, "BUSY-1") else {
        return;
    };
    // Another unseal finished first: DEST now holds a case.
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("other.txt"), b"the first unseal's case\n").unwrap();
    signal(&child, "CONT");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_error_message(&err);
    assert!(err.contains("is not empty"), "{err}");
    assert!(!staging.exists(), "staging left behind: {err}");
    let left: Vec<_> = fs::read_dir(fx.restore())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![OsString::from("case")], "{err}");
    assert_eq!(snapshot(&dest).len(), 1);
}

/// Issue #10 item 1: a failure at the very end (here the rename onto DEST,
/// because DEST's parent lost its write permission while unseal ran) must
/// still remove every file from the staging directory, whatever modes the
/// case records, keep going past what it cannot remove, and say so: the
/// staging directory itself cannot be removed from a read-only parent, so
/// the error names it.
#[test]
fn failed_rename_removes_the_plaintext_and_names_what_is_left() {
    let fx = Fx::new();
    let Some((dest, child, staging)) = paused_unseal_as_nobody(&fx, "RO-PARENT-1") else {
        return;
    };
    fs::set_permissions(fx.restore(), fs::Permissions::from_mode(0o555)).unwrap();
    signal(&child, "CONT");
    let out = child.wait_with_output().unwrap();
    fs::set_permissions(fx.restore(), fs::Permissions::from_mode(0o755)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_error_message(&err);
    assert!(err.contains("cannot move the unsealed case"), "{err}");
    assert!(
        err.contains(&*staging.to_string_lossy()) && err.contains("could not be removed"),
        "the error must name the staging directory left behind: {err}"
    );
    assert!(!dest.exists());
    assert_eq!(
        snapshot(&staging).len(),
        0,
        "plaintext left in {}: {err}",
        staging.display()
    );
}

/// The round trip of the rich tree, sealed and unsealed by nobody.
#[test]
fn rich_round_trip_as_nobody() {
    let fx = Fx::new();
    let case = rich_case_light(&fx.cases(), "RICH-NB");
    let Some(nobody) = Unprivileged::new(fx.root()) else {
        return;
    };
    let vault = fx.vault("rich.vault");
    let out = nobody.run([
        "seal".as_ref(),
        case.root.as_os_str(),
        "-o".as_ref(),
        vault.as_os_str(),
        "-r".as_ref(),
        fx.key.recipient.as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dest = fx.dest("rich");
    let v = json_ok(&nobody.run(unseal_args(&fx, &vault, &dest)));
    assert_eq!(v["case_id"], "RICH-NB");
    assert_restored_exactly(&case.root, &dest);
    assert_eq!(fs::read_dir(fx.restore()).unwrap().count(), 1);
}

/// Issue #12: a version 3 vault's file times and modes are restored in
/// batches on two threads (src/unseal.rs, `StreamedLeaves`). With several
/// batches of files inside directories whose recorded modes take away the
/// search permission their paths need, every file's mode and time must
/// still land before its directory's mode, as nobody.
#[test]
fn many_files_under_restrictive_dirs_unseal_as_nobody() {
    let fx = Fx::new();
    let case = CaseTree::new(fx.cases().join("MODES-2"));
    let dirs = [("a0000", 0o000), ("b0500", 0o500), ("c0311", 0o311)];
    for (d, _) in dirs {
        for i in 0..400 {
            case.file(&format!("{d}/f{i:03}.txt"), format!("{d} {i}\n").as_bytes());
        }
    }
    case.file("top.txt", b"top\n");
    for (d, mode) in dirs {
        for i in 0..400 {
            case.mode(&format!("{d}/f{i:03}.txt"), [0o400, 0o000, 0o644][i % 3]);
        }
        case.mode(d, mode);
    }
    case.stamp_times(1_630_000_000);
    let vault = fx.vault("many.vault");
    fx.seal(&case.root, &vault, &[]);
    let Some(nobody) = Unprivileged::new(fx.root()) else {
        return;
    };
    let dest = fx.dest("many");
    json_ok(&nobody.run(unseal_args(&fx, &vault, &dest)));
    assert_restored_exactly(&case.root, &dest);
    assert!(staging_dirs(&fx.restore()).is_empty());
}

//! `casevault sweep` (issue #4): idempotence, generations, the store lock,
//! failing cases, kill -9 recovery, `--remove-source`, `--keep` and
//! `--dry-run`, driven through the real binary.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::util::{
    assert_same_tree, casevault, seeded_bytes, stderr_of, stdout_of, unseal_cmd, Key,
};

/// One temp dir with `inbox/`, `store/`, a key, and room for copies.
struct Env {
    tmp: tempfile::TempDir,
    key: Key,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("casevault-sweep-")
            .tempdir()
            .unwrap();
        fs::create_dir(tmp.path().join("inbox")).unwrap();
        fs::create_dir(tmp.path().join("store")).unwrap();
        let key = Key::generate(&tmp.path().join("keys"), "key.txt");
        Env { tmp, key }
    }
    fn root(&self) -> &Path {
        self.tmp.path()
    }
    fn inbox(&self) -> PathBuf {
        self.root().join("inbox")
    }
    fn store(&self) -> PathBuf {
        self.root().join("store")
    }
    fn case(&self, name: &str) -> PathBuf {
        self.inbox().join(name)
    }

    /// `sweep INBOX -o STORE -r KEY EXTRA…`.
    fn sweep(&self, extra: &[&str]) -> assert_cmd::assert::Assert {
        casevault()
            .arg("sweep")
            .arg(self.inbox())
            .arg("-o")
            .arg(self.store())
            .arg("-r")
            .arg(&self.key.recipient)
            .args(extra)
            .assert()
    }

    /// `sweep … --json EXTRA…`, asserting exit `code`; returns the records
    /// by case and the summary.
    fn sweep_json(&self, extra: &[&str], code: i32) -> (BTreeMap<String, Value>, Value) {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let a = self.sweep(&args);
        assert_eq!(
            a.get_output().status.code(),
            Some(code),
            "sweep exit code; stdout:\n{}\nstderr:\n{}",
            stdout_of(&a),
            stderr_of(&a)
        );
        records(&stdout_of(&a))
    }

    /// [`Env::sweep_json`] run as nobody (the non-root tier).
    fn sweep_json_as(
        &self,
        nobody: &crate::unpriv::Unprivileged,
        extra: &[&str],
        code: i32,
    ) -> (BTreeMap<String, Value>, Value) {
        let mut args: Vec<std::ffi::OsString> = vec![
            "sweep".into(),
            self.inbox().into(),
            "-o".into(),
            self.store().into(),
            "-r".into(),
            self.key.recipient.clone().into(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(Into::into));
        let out = nobody.run(args);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        records(&stdout)
    }

    /// The vault file names of a case in the store, oldest first.
    fn vaults(&self, case: &str) -> Vec<String> {
        let dir = self.store().join(case);
        let mut v: Vec<String> = match fs::read_dir(&dir) {
            Err(_) => return Vec::new(),
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".vault"))
                .collect(),
        };
        v.sort();
        v
    }

    fn unseal(&self, vault: &Path, dest: &Path) {
        unseal_cmd(vault, dest, &self.key.path).assert().code(0);
    }
}

/// Split JSON Lines into records by case and the final summary.
fn records(stdout: &str) -> (BTreeMap<String, Value>, Value) {
    let mut by_case = BTreeMap::new();
    let mut summary = None;
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nall:\n{stdout}"));
        assert!(v["time"].is_string(), "every record has a time: {line}");
        if v["summary"] == Value::Bool(true) {
            assert!(summary.is_none(), "one summary only:\n{stdout}");
            summary = Some(v);
        } else {
            assert!(summary.is_none(), "the summary comes last:\n{stdout}");
            let case = v["case"].as_str().unwrap().to_string();
            assert!(by_case.insert(case, v).is_none(), "one record per case");
        }
    }
    (by_case, summary.expect("a summary line"))
}

/// `{case: status}` of a run.
fn statuses(recs: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    recs.iter()
        .map(|(k, v)| (k.clone(), v["status"].as_str().unwrap().to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn counts(summary: &Value) -> [u64; 5] {
    ["sealed", "unchanged", "failed", "skipped", "removed"].map(|k| summary[k].as_u64().unwrap())
}

/// A small case: files in subdirectories, a relative symlink.
fn small_case(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("photos/raw")).unwrap();
    fs::write(dir.join("notes.txt"), format!("case notes {seed}\n")).unwrap();
    fs::write(dir.join("photos/raw/img1.bin"), seeded_bytes(seed, 5000)).unwrap();
    fs::write(dir.join("photos/index.csv"), b"img1.bin,1\n").unwrap();
    std::os::unix::fs::symlink("photos/index.csv", dir.join("index-link")).unwrap();
}

/// Every entry under `dir` with kind, mode, size, mtime (ns), and SHA-256
/// or link target: what "changes nothing" is checked against.
fn listing(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for ent in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let ent = ent.unwrap();
        let m = fs::symlink_metadata(ent.path()).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(ent.path()).unwrap().display())
        } else if m.is_file() {
            format!("file {:x}", Sha256::digest(fs::read(ent.path()).unwrap()))
        } else {
            "dir".to_string()
        };
        out.insert(
            ent.path().strip_prefix(dir).unwrap().to_path_buf(),
            format!(
                "{what} mode {:o} size {} mtime {}.{:09} ino {}",
                m.mode(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino()
            ),
        );
    }
    out
}

/// `.casevault-tmp-*` files anywhere under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    // Tolerant of entries vanishing while a sweep runs beside us.
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".casevault-tmp-"))
        })
        .collect()
}

/// Start `sweep` as a child process (to kill it, or to race it).
fn spawn_sweep(env: &Env, extra: &[&str]) -> Child {
    crate::util::bin_command()
        .arg("sweep")
        .arg(env.inbox())
        .arg("-o")
        .arg(env.store())
        .arg("-r")
        .arg(&env.key.recipient)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until the sweep writes a temporary vault of at least `min` bytes
/// under `dir`; `None` if the child exited first.
fn wait_for_temp(child: &mut Child, dir: &Path, min: u64) -> Option<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(p) = temp_files(dir)
            .into_iter()
            .find(|p| fs::metadata(p).is_ok_and(|m| m.len() >= min))
        {
            return Some(p);
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("sweep neither wrote a temporary vault nor exited");
}

/// A case whose sealing takes a while: one big incompressible file first in
/// walk order. Sizes grow until a child is caught mid-seal, so that the
/// test does not depend on how fast this build seals.
fn big_case(dir: &Path, len: usize) {
    fs::create_dir_all(dir.join("z-sub")).unwrap();
    fs::write(dir.join("a-big.bin"), seeded_bytes(len as u64, len)).unwrap();
    fs::write(dir.join("z-sub/small.txt"), b"small\n").unwrap();
}

#[test]
fn two_sweeps_in_a_row_seal_nothing_the_second_time() {
    let env = Env::new();
    small_case(&env.case("C1"), 1);
    small_case(&env.case("C2"), 2);
    fs::create_dir(env.case(".hidden")).unwrap();
    fs::write(env.case(".hidden/secret"), b"x").unwrap();
    fs::write(env.case("loose-file.txt"), b"not a case").unwrap();

    let (recs, summary) = env.sweep_json(&[], 0);
    assert_eq!(
        statuses(&recs),
        map(&[
            (".hidden", "skipped"),
            ("C1", "sealed"),
            ("C2", "sealed"),
            ("loose-file.txt", "skipped")
        ])
    );
    assert_eq!(counts(&summary), [2, 0, 0, 2, 0]);
    assert_eq!(recs["C1"]["files"], 3);
    let vault = PathBuf::from(recs["C1"]["vault"].as_str().unwrap());
    assert!(vault.starts_with(env.store().canonicalize().unwrap().join("C1")));
    let name = vault.file_name().unwrap().to_str().unwrap();
    // C1.YYYYMMDDTHHMMSS.ffffffZ.vault
    assert!(
        name.len() == "C1..vault".len() + 23
            && name.starts_with("C1.2")
            && name.ends_with("Z.vault"),
        "{name}"
    );
    let store_vaults = (env.vaults("C1"), env.vaults("C2"));

    let (recs, summary) = env.sweep_json(&[], 0);
    assert_eq!(
        statuses(&recs),
        map(&[
            (".hidden", "skipped"),
            ("C1", "unchanged"),
            ("C2", "unchanged"),
            ("loose-file.txt", "skipped")
        ])
    );
    assert_eq!(counts(&summary), [0, 2, 0, 2, 0]);
    assert_eq!((env.vaults("C1"), env.vaults("C2")), store_vaults);
    assert_eq!(recs["C1"]["vault"].as_str(), Some(vault.to_str().unwrap()));

    // Text mode: one line per entry and a summary; the sidecar checks out
    // with the stock tool's format, and the state names no case file.
    let a = env.sweep(&[]).code(0);
    assert_eq!(
        stdout_of(&a),
        "skipped .hidden: hidden\nunchanged C1\nunchanged C2\nskipped loose-file.txt: not a directory\nsweep: 0 sealed, 2 unchanged, 0 failed, 2 skipped\n"
    );
    assert_eq!(stderr_of(&a), "");
    let state = fs::read_to_string(env.store().join(".casevault/state.json")).unwrap();
    for leak in ["notes", "photos", "img1", "index"] {
        assert!(
            !state.contains(leak),
            "state.json reveals {leak:?}:\n{state}"
        );
    }
}

#[test]
fn a_modified_case_is_sealed_into_a_new_generation() {
    let env = Env::new();
    small_case(&env.case("C1"), 1);
    small_case(&env.case("C2"), 2);
    env.sweep_json(&[], 0);
    let first = env.vaults("C1");
    assert_eq!(first.len(), 1);

    fs::write(env.case("C1/notes.txt"), b"amended notes\n").unwrap();
    let (recs, summary) = env.sweep_json(&[], 0);
    assert_eq!(
        statuses(&recs),
        map(&[("C1", "sealed"), ("C2", "unchanged")])
    );
    assert_eq!(recs["C1"]["reason"], "contents changed");
    assert_eq!(counts(&summary), [1, 1, 0, 0, 0]);
    let both = env.vaults("C1");
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], first[0], "the old generation is kept by default");
    assert!(both[1] > both[0], "names sort by time");

    // The new generation holds the change.
    let dest = env.root().join("restored");
    env.unseal(&env.store().join("C1").join(&both[1]), &dest);
    assert_eq!(
        fs::read(dest.join("notes.txt")).unwrap(),
        b"amended notes\n"
    );

    // A change of metadata only (mode) is a change too.
    fs::set_permissions(env.case("C2/notes.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    let (recs, _) = env.sweep_json(&[], 0);
    assert_eq!(
        statuses(&recs),
        map(&[("C1", "unchanged"), ("C2", "sealed")])
    );
}

#[test]
fn a_concurrent_sweep_exits_75_and_touches_nothing() {
    let env = Env::new();
    small_case(&env.case("C1"), 1);
    env.sweep_json(&[], 0);
    small_case(&env.case("C2"), 2);
    fs::write(env.case("C1/notes.txt"), b"changed\n").unwrap();

    // Hold the lock the way a running sweep does: flock on the lock file.
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.store().join(".casevault/lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let before = listing(env.root());
    let log = env.root().join("sweep.log");
    let started = Instant::now();
    let a = casevault()
        .arg("sweep")
        .arg(env.inbox())
        .arg("-o")
        .arg(env.store())
        .arg("-r")
        .arg(&env.key.recipient)
        .args(["--json", "--remove-source", "--keep", "1", "--log"])
        .arg(&log)
        .assert()
        .code(75);
    assert!(started.elapsed() < Duration::from_secs(20), "exits at once");
    assert_eq!(stdout_of(&a), "");
    let err = stderr_of(&a);
    assert!(
        err.starts_with("casevault: error: another sweep is running on this store"),
        "{err}"
    );
    assert!(err.contains("nothing was done"), "{err}");
    // Nothing changed but the log, which says so (issue #17 item 10): one
    // summary with busy, exit 75 and the reason, so that monitoring sees
    // repeated contention although the unit treats 75 as success.
    // (The log's directory changed with it.)
    let mut after = listing(env.root());
    after.remove(Path::new("sweep.log"));
    let mut before = before;
    for m in [&mut after, &mut before] {
        m.remove(Path::new(""));
    }
    assert_eq!(after, before, "a locked-out sweep changed something");
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let busy: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(busy["summary"], true);
    assert_eq!(busy["busy"], true);
    assert_eq!(busy["exit"], 75);
    assert_eq!(busy["sealed"], 0);
    assert!(busy["error"]
        .as_str()
        .unwrap()
        .contains("another sweep is running"));

    // Released (as the kernel does when the holder dies): the next run works.
    drop(lock);
    let (recs, _) = env.sweep_json(&[], 0);
    assert_eq!(statuses(&recs), map(&[("C1", "sealed"), ("C2", "sealed")]));
}

#[test]
fn a_case_with_a_fifo_fails_while_the_others_seal() {
    let env = Env::new();
    small_case(&env.case("A1"), 1);
    small_case(&env.case("B2"), 2);
    small_case(&env.case("C3"), 3);
    let st = Command::new("mkfifo")
        .arg(env.case("B2/photos/pipe"))
        .status()
        .unwrap();
    assert!(st.success());

    let a = env.sweep(&["--json"]).code(1);
    let (recs, summary) = records(&stdout_of(&a));
    assert_eq!(
        statuses(&recs),
        map(&[("A1", "sealed"), ("B2", "failed"), ("C3", "sealed")])
    );
    assert_eq!(counts(&summary), [2, 0, 1, 0, 0]);
    let why = recs["B2"]["error"].as_str().unwrap();
    assert!(why.contains("pipe") && why.contains("FIFO"), "{why}");
    let err = stderr_of(&a);
    assert!(err.starts_with("casevault: error: B2: "), "{err}");
    assert!(
        !env.store().join("B2").exists(),
        "no store dir for a failed first seal"
    );
    assert!(temp_files(env.root()).is_empty());

    // A dry run sees it too; still failing next time, still not blocking;
    // fixed, it seals.
    let (recs, _) = env.sweep_json(&["--dry-run"], 1);
    assert_eq!(recs["B2"]["status"], "failed");
    env.sweep_json(&[], 1);
    fs::remove_file(env.case("B2/photos/pipe")).unwrap();
    let (recs, _) = env.sweep_json(&[], 0);
    assert_eq!(
        statuses(&recs),
        map(&[("A1", "unchanged"), ("B2", "sealed"), ("C3", "unchanged")])
    );
}

/// The issue's variant: a file the sweeping account cannot read. Root reads
/// everything, so the sweep runs as `nobody` through setpriv(1).
#[test]
fn an_unreadable_file_fails_its_case_when_run_unprivileged() {
    let env = Env::new();
    small_case(&env.case("A1"), 1);
    small_case(&env.case("B2"), 2);
    fs::write(env.case("B2/locked.bin"), b"secret").unwrap();
    let Some(nobody) = crate::unpriv::Unprivileged::new(env.root()) else {
        return;
    };
    fs::set_permissions(env.root(), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(env.case("B2/locked.bin"), Some(0), Some(0)).unwrap();
    fs::set_permissions(env.case("B2/locked.bin"), fs::Permissions::from_mode(0o000)).unwrap();

    let (recs, _) = env.sweep_json_as(&nobody, &[], 1);
    assert_eq!(statuses(&recs), map(&[("A1", "sealed"), ("B2", "failed")]));
    let why = recs["B2"]["error"].as_str().unwrap();
    assert!(
        why.contains("locked.bin") && why.contains("ermission denied"),
        "{why}"
    );
    assert!(temp_files(env.root()).is_empty());
}

#[test]
fn kill_9_mid_seal_then_a_clean_sweep_recovers() {
    let mut len = 2 << 20;
    loop {
        let env = Env::new();
        big_case(&env.case("C1"), len);
        let mut child = spawn_sweep(&env, &["--compress", "none"]);
        let Some(tmp) = wait_for_temp(&mut child, &env.store(), 1) else {
            // Sealed before we looked: try a bigger case.
            assert!(len < 512 << 20, "could not catch a sweep mid-seal");
            eprintln!("sweep of {len} bytes finished before it was killed; retrying bigger");
            len *= 4;
            continue;
        };
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if child_finished_first(&env) {
            eprintln!("sweep of {len} bytes finished before it was killed; retrying bigger");
            len *= 4;
            continue;
        }
        assert!(tmp.exists(), "kill -9 leaves the temporary vault behind");
        assert!(env.vaults("C1").is_empty(), "no vault that looks complete");
        // The vault's, and the sidecar's too if the kill came while seal
        // was renaming them into place.
        let stale = temp_files(&env.store()).len();
        assert!((1..=2).contains(&stale), "{stale} temporary files");

        // The lock died with the process; the next run cleans up and seals.
        let (recs, summary) = env.sweep_json(&["--compress", "none"], 0);
        assert_eq!(statuses(&recs), map(&[("C1", "sealed")]));
        assert_eq!(summary["stale_temp_removed"], stale);
        assert!(
            temp_files(env.root()).is_empty(),
            "stale temporary files remain"
        );
        let vault = env.store().join("C1").join(&env.vaults("C1")[0]);
        casevault().arg("verify").arg(&vault).assert().code(0);
        return;
    }
}

/// Whether the killed sweep had already renamed its vault into place.
fn child_finished_first(env: &Env) -> bool {
    !env.vaults("C1").is_empty()
}

#[test]
fn remove_source_removes_exactly_what_was_sealed() {
    let env = Env::new();
    // C2 is sealed by an earlier sweep without --remove-source.
    small_case(&env.case("C2"), 2);
    env.sweep_json(&[], 0);
    small_case(&env.case("C1"), 1);
    fs::create_dir(env.case(".hidden")).unwrap();
    fs::write(env.case(".hidden/keep.txt"), b"x").unwrap();
    fs::write(env.case("loose.txt"), b"y").unwrap();
    let copies = env.root().join("copies");
    fs::create_dir(&copies).unwrap();
    for c in ["C1", "C2"] {
        let st = Command::new("cp")
            .arg("-a")
            .arg(env.case(c))
            .arg(copies.join(c))
            .status()
            .unwrap();
        assert!(st.success());
    }

    let (recs, summary) = env.sweep_json(&["--remove-source"], 0);
    assert_eq!(
        statuses(&recs),
        map(&[
            (".hidden", "skipped"),
            ("C1", "sealed"),
            // Unchanged since the earlier sweep, sealed again: removal
            // relies only on what this run sealed (issue #10 item 13).
            ("C2", "sealed"),
            ("loose.txt", "skipped")
        ])
    );
    for c in ["C1", "C2"] {
        assert_eq!(recs[c]["removed_files"], 3, "{c}");
        assert_eq!(recs[c]["removed_symlinks"], 1, "{c}");
        assert_eq!(recs[c]["removed_dirs"], 3, "{c}");
    }
    assert_eq!(summary["removed"], 2);
    let left: Vec<String> = fs::read_dir(env.inbox())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(left, [".hidden", "loose.txt"]);
    assert_eq!(fs::read(env.case(".hidden/keep.txt")).unwrap(), b"x");

    // Each newest vault restores the original tree.
    for (c, generations) in [("C1", 1), ("C2", 2)] {
        let vaults = env.vaults(c);
        assert_eq!(vaults.len(), generations, "{c}");
        fs::create_dir_all(env.root().join("restored")).unwrap();
        let dest = env.root().join("restored").join(c);
        env.unseal(&env.store().join(c).join(vaults.last().unwrap()), &dest);
        assert_same_tree(&copies.join(c), &dest, false);
    }
}

#[test]
fn remove_source_keeps_a_file_added_during_sealing() {
    let mut len = 2 << 20;
    loop {
        let env = Env::new();
        big_case(&env.case("C1"), len);
        let mut child = spawn_sweep(&env, &["--json", "--remove-source", "--compress", "none"]);
        // A temporary vault of 1 MiB means the walk is inside a-big.bin,
        // after listing the case root: a new file there is not sealed.
        let caught = wait_for_temp(&mut child, &env.store(), 1 << 20).is_some();
        let late = env.case("C1/late.txt");
        if !caught || fs::write(&late, b"arrived during sealing\n").is_err() {
            child.wait().unwrap();
            assert!(len < 512 << 20, "could not catch a sweep mid-seal");
            eprintln!("sweep of {len} bytes was not caught mid-seal; retrying bigger");
            len *= 4;
            continue;
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        let (recs, _) = records(&stdout);
        assert_eq!(statuses(&recs), map(&[("C1", "sealed")]));
        assert_eq!(recs["C1"]["removed_files"], 2);
        assert_eq!(
            recs["C1"]["removed_dirs"], 1,
            "z-sub only; the case dir is not empty"
        );
        let left: Vec<_> = walkdir::WalkDir::new(env.case("C1"))
            .min_depth(1)
            .into_iter()
            .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
            .collect();
        assert_eq!(left, ["late.txt"]);

        // The late file was not in the vault; the next sweep seals it.
        let (recs, _) = env.sweep_json(&["--remove-source"], 0);
        assert_eq!(statuses(&recs), map(&[("C1", "sealed")]));
        assert!(!env.case("C1").exists());
        let dest = env.root().join("restored");
        env.unseal(&env.store().join("C1").join(&env.vaults("C1")[1]), &dest);
        assert_eq!(
            fs::read(dest.join("late.txt")).unwrap(),
            b"arrived during sealing\n"
        );
        return;
    }
}

#[test]
fn keep_2_retains_the_two_newest_generations() {
    let env = Env::new();
    small_case(&env.case("C1"), 1);
    let mut all = Vec::new();
    for gen in 0..3 {
        fs::write(env.case("C1/notes.txt"), format!("generation {gen}\n")).unwrap();
        let (recs, summary) = env.sweep_json(&["--keep", "2"], 0);
        assert_eq!(recs["C1"]["status"], "sealed");
        all.push(
            Path::new(recs["C1"]["vault"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
        );
        if gen == 2 {
            assert_eq!(recs["C1"]["pruned"], serde_json::json!([all[0]]));
            assert_eq!(summary["pruned"], 1);
        } else {
            assert!(recs["C1"].get("pruned").is_none());
        }
    }
    assert_eq!(env.vaults("C1"), all[1..].to_vec());
    let files: Vec<String> = fs::read_dir(env.store().join("C1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 4, "two vaults and their sidecars: {files:?}");

    // Applied on every run, also when nothing is sealed; never below one.
    let (recs, _) = env.sweep_json(&["--keep", "1"], 0);
    assert_eq!(recs["C1"]["status"], "unchanged");
    assert_eq!(recs["C1"]["pruned"], serde_json::json!([all[1]]));
    assert_eq!(env.vaults("C1"), [all[2].clone()]);
    env.sweep(&["--keep", "0"]).code(2);

    // Issue #17 item 7: each deletion is in the custody log, with the
    // digest its `sealed` record gave, after it.
    let log = fs::read_to_string(env.store().join("custody.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |action: &str, vault: &str| -> Vec<(usize, String)> {
        recs.iter()
            .enumerate()
            .filter(|(_, r)| r["action"] == action && r["vault"] == vault)
            .map(|(i, r)| (i, r["vault_sha256"].as_str().unwrap().to_string()))
            .collect()
    };
    for gone in &all[..2] {
        let sealed = of("sealed", gone);
        let pruned = of("pruned", gone);
        assert_eq!(sealed.len(), 1, "{gone}: {log}");
        assert_eq!(pruned.len(), 1, "{gone}: {log}");
        assert_eq!(sealed[0].1, pruned[0].1, "{gone}");
        assert!(sealed[0].0 < pruned[0].0);
    }
    assert!(of("pruned", &all[2]).is_empty());
    casevault()
        .args(["custody", "verify"])
        .arg(env.store().join("custody.jsonl"))
        .assert()
        .code(0);
}

#[test]
fn dry_run_changes_nothing() {
    let env = Env::new();
    small_case(&env.case("C1"), 1);
    small_case(&env.case("C2"), 2);
    env.sweep_json(&[], 0);
    fs::write(env.case("C1/notes.txt"), b"changed\n").unwrap();
    env.sweep_json(&[], 0); // C1 has two generations now
    fs::write(env.case("C1/notes.txt"), b"changed again\n").unwrap();
    small_case(&env.case("C3"), 3);
    fs::write(
        env.store().join("C2/.casevault-tmp-stale"),
        b"left by a crash",
    )
    .unwrap();

    let before = listing(env.root());
    let log = env.root().join("dry.log");
    let a = env
        .sweep(&[
            "--dry-run",
            "--json",
            "--remove-source",
            "--keep",
            "1",
            "--log",
            log.to_str().unwrap(),
        ])
        .code(0);
    let (recs, summary) = records(&stdout_of(&a));
    assert_eq!(listing(env.root()), before, "--dry-run changed something");
    assert_eq!(
        statuses(&recs),
        map(&[
            ("C1", "would-seal"),
            // Unchanged, but --remove-source removes only what the same run
            // sealed (issue #10 item 13).
            ("C2", "would-seal"),
            ("C3", "would-seal")
        ])
    );
    assert!(recs.values().all(|r| r["dry_run"] == true));
    assert!(recs["C2"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("unchanged; sealed again"));
    assert_eq!(recs["C1"]["pruned"].as_array().unwrap().len(), 2);
    assert_eq!(recs["C2"]["removed_files"], 3);
    assert_eq!(recs["C2"]["removed_symlinks"], 1);
    assert_eq!(recs["C2"]["removed_dirs"], 3);
    assert_eq!(summary["dry_run"], true);
    assert_eq!(summary["would_seal"], 3);
    assert_eq!(summary["stale_temp_removed"], 1);

    // Text output says "would".
    let a = env.sweep(&["--dry-run", "--remove-source"]).code(0);
    let text = stdout_of(&a);
    assert!(text.contains("would seal C1 ("), "{text}");
    assert!(
        text.contains("would remove source of C2: 3 files"),
        "{text}"
    );
    assert!(
        text.ends_with("would remove 1 stale temporary file\n"),
        "{text}"
    );
    assert_eq!(listing(env.root()), before);

    // On a store no sweep has used yet, only the lock file appears.
    let fresh = Env::new();
    small_case(&fresh.case("C1"), 1);
    let before = listing(&fresh.inbox());
    fresh.sweep(&["--dry-run"]).code(0);
    assert_eq!(listing(&fresh.inbox()), before);
    let store: Vec<_> = listing(&fresh.store()).into_keys().collect();
    assert_eq!(
        store,
        [
            PathBuf::new(),
            ".casevault".into(),
            ".casevault/lock".into()
        ]
    );
}

#[test]
fn log_file_gets_the_same_records_with_mode_0600() {
    let env = Env::new();
    small_case(&env.case("C1"), 1);
    let log = env.root().join("sweep.jsonl");
    let a = env
        .sweep(&["--json", "--log", log.to_str().unwrap()])
        .code(0);
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text, stdout_of(&a));
    assert_eq!(fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
    // Appended, not replaced; --quiet prints nothing on stdout.
    let a = env
        .sweep(&["--quiet", "--log", log.to_str().unwrap()])
        .code(0);
    assert_eq!(stdout_of(&a), "");
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 4);
    let (recs, _) = records(text.lines().skip(2).collect::<Vec<_>>().join("\n").as_str());
    assert_eq!(recs["C1"]["status"], "unchanged");
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let a = casevault().args(["completions", shell]).assert().code(0);
        assert!(stdout_of(&a).contains("sweep"), "{shell}");
    }
    let a = casevault().arg("man").assert().code(0);
    assert!(stdout_of(&a).starts_with(".ie") || stdout_of(&a).contains(".TH casevault 1"));
    let a = casevault().args(["man", "sweep"]).assert().code(0);
    assert!(stdout_of(&a).contains(".TH casevault-sweep 1"));
    assert!(stdout_of(&a).contains("remove\\-source"));
}

/// Issue #17 item 11: every subcommand has a page (`man --list` names them
/// for installing), and SYNOPSIS shows each option's value placeholder.
/// Issue #15: nested subcommands (`store audit`) have pages too, since the
/// Debian package installs one page per line of `man --list`.
#[test]
fn man_pages_list_every_command_and_show_value_placeholders() {
    let list = stdout_of(&casevault().args(["man", "--list"]).assert().code(0));
    let names: Vec<&str> = list.lines().collect();
    assert_eq!(
        names,
        [
            "keygen",
            "seal",
            "unseal",
            "verify",
            "list",
            "rekey",
            "report",
            "repair",
            "salvage",
            "sweep",
            "custody",
            "custody-show",
            "custody-verify",
            "store",
            "store-audit",
            "store-push",
            "completions",
            "man"
        ]
    );
    for name in names {
        let page = stdout_of(&casevault().args(["man", name]).assert().code(0));
        assert!(page.contains(&format!(".TH casevault-{name} 1")), "{name}");
        let synopsis = page
            .split(".SH SYNOPSIS\n")
            .nth(1)
            .and_then(|s| s.lines().next())
            .unwrap_or_else(|| panic!("{name}: no SYNOPSIS"));
        let words = name.replace('-', " ");
        assert!(
            synopsis.starts_with(&format!("\\fBcasevault {words}\\fR")),
            "{name}: {synopsis}"
        );
        assert!(!synopsis.contains("[OPTIONS]"), "{name}: {synopsis}");
    }
    // A nested page by its words or its page name, and its parent's page
    // pointing to it.
    let by_words = stdout_of(&casevault().args(["man", "store", "audit"]).assert().code(0));
    let by_name = stdout_of(&casevault().args(["man", "store-audit"]).assert().code(0));
    assert_eq!(by_words, by_name);
    assert!(by_words.contains("\\-\\-min\\-retain"), "{by_words}");
    let store = stdout_of(&casevault().args(["man", "store"]).assert().code(0));
    assert!(store.contains("casevault\\-store\\-audit(1)"), "{store}");
    let a = casevault()
        .args(["man", "store", "nosuch"])
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("no such command: store nosuch"));
    let sweep = stdout_of(&casevault().args(["man", "sweep"]).assert().code(0));
    for want in [
        "[\\-\\-keep <N>]",
        "[\\-\\-log <FILE>]",
        "[\\-q|\\-\\-quiet]",
    ] {
        assert!(sweep.contains(want), "sweep synopsis lacks {want}");
    }
    assert!(!sweep.contains("(docs/OPERATIONS.md)"));
    assert!(sweep.contains("/usr/local/share/doc/casevault/"));
}

/// Start `sweep --json --compress none`, and once its first temporary
/// vault holds 1 MiB replace the inbox case `case` by a symlink to
/// `outside` (the original moved aside). Returns whether the swap happened
/// while the sweep was still sealing, the sweep's exit code and stdout.
fn swap_for_a_link_mid_seal(env: &Env, case: &str, outside: &Path) -> (bool, Option<i32>, String) {
    let mut child = spawn_sweep(env, &["--json", "--compress", "none"]);
    let caught = wait_for_temp(&mut child, &env.store(), 1 << 20).is_some();
    if caught {
        fs::rename(env.case(case), env.root().join(format!("{case}-moved"))).unwrap();
        std::os::unix::fs::symlink(outside, env.case(case)).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (caught, out.status.code(), stdout)
}

/// Issue #10 item 3: a case directory swapped for a symlink after the inbox
/// was listed (here, while the case before it is being sealed) is skipped:
/// nothing from outside the inbox is sealed, recorded or logged.
#[test]
fn a_case_swapped_for_a_symlink_after_listing_is_skipped() {
    let mut len = 2 << 20;
    loop {
        let env = Env::new();
        big_case(&env.case("A1"), len);
        small_case(&env.case("B2"), 2);
        let outside = env.root().join("outside");
        small_case(&outside, 3);
        fs::write(outside.join("secret.txt"), b"outside the inbox\n").unwrap();
        let (caught, code, stdout) = swap_for_a_link_mid_seal(&env, "B2", &outside);
        let (recs, _) = records(&stdout);
        let b2_vaults = env.vaults("B2");
        if let Some(v) = b2_vaults.first() {
            // Sealed: it must hold B2's own files, never the outside ones.
            let dest = env.root().join("restored");
            env.unseal(&env.store().join("B2").join(v), &dest);
            assert!(
                !dest.join("secret.txt").exists(),
                "a directory outside the inbox was sealed as B2:\n{stdout}"
            );
        }
        if !caught || recs["B2"]["status"] == "sealed" {
            // The swap came too late (B2 was already sealed): bigger.
            assert!(len < 512 << 20, "could not catch a sweep mid-seal");
            eprintln!("sweep of {len} bytes was not caught before B2; retrying bigger");
            len *= 4;
            continue;
        }
        assert_eq!(code, Some(0), "{stdout}");
        assert_eq!(statuses(&recs), map(&[("A1", "sealed"), ("B2", "skipped")]));
        let why = recs["B2"]["reason"].as_str().unwrap();
        assert!(why.contains("no longer a directory"), "{why}");
        assert!(b2_vaults.is_empty() && !env.store().join("B2").exists());
        let state = fs::read_to_string(env.store().join(".casevault/state.json")).unwrap();
        assert!(!state.contains("B2"), "{state}");
        let custody = fs::read_to_string(env.store().join("custody.jsonl")).unwrap();
        assert!(
            custody.contains("A1") && !custody.contains("B2"),
            "{custody}"
        );
        return;
    }
}

/// Issue #10 item 3: the case directory itself swapped for a symlink while
/// it is being sealed cannot redirect the rest of the walk: seal reads the
/// directory it opened, not whatever the path names later.
#[test]
fn a_case_swapped_during_its_own_seal_is_sealed_from_the_directory_opened() {
    // Big enough that the walk is still inside a-big.bin when the first
    // MiB of the vault reaches the disk (pipe buffers sit in between).
    let mut len = 16 << 20;
    loop {
        let env = Env::new();
        big_case(&env.case("C1"), len);
        let outside = env.root().join("outside");
        fs::create_dir_all(outside.join("z-sub")).unwrap();
        fs::write(outside.join("z-sub/secret.txt"), b"outside\n").unwrap();
        let (caught, code, stdout) = swap_for_a_link_mid_seal(&env, "C1", &outside);
        if !caught {
            assert!(len < 512 << 20, "could not catch a sweep mid-seal");
            len *= 4;
            continue;
        }
        assert_eq!(code, Some(0), "{stdout}");
        let dest = env.root().join("restored");
        env.unseal(&env.store().join("C1").join(&env.vaults("C1")[0]), &dest);
        assert!(!dest.join("z-sub/secret.txt").exists(), "{stdout}");
        assert_eq!(fs::read(dest.join("z-sub/small.txt")).unwrap(), b"small\n");
        return;
    }
}

/// Issue #10 item 9: odd entries in a case's store directory fail that
/// case (exit 1) with a message naming the entry; they never panic and
/// never stop the other cases.
#[test]
fn odd_store_entries_fail_their_case_and_the_others_still_seal() {
    let env = Env::new();
    for (i, c) in ["A1", "B2", "C3", "D4"].iter().enumerate() {
        small_case(&env.case(c), i as u64);
    }
    let far = "99991231T235959.999999Z";
    // The exact file from the issue: zero bytes, no sidecar.
    fs::create_dir(env.store().join("A1")).unwrap();
    fs::write(env.store().join(format!("A1/A1.{far}.vault")), b"").unwrap();
    // A directory named like the newest possible vault.
    fs::create_dir_all(env.store().join(format!("B2/B2.{far}.vault"))).unwrap();
    // A sidecar without its vault, garbage names, a nearly-last stamp.
    let c3 = env.store().join("C3");
    fs::create_dir(&c3).unwrap();
    fs::write(
        c3.join("C3.20260101T000000.000000Z.vault.sha256"),
        b"garbage",
    )
    .unwrap();
    fs::write(c3.join("C3.notastamp.vault"), b"").unwrap();
    fs::write(c3.join("C3.20261399T000000.000000Z.vault"), b"").unwrap();
    fs::write(c3.join("\u{1}weird"), b"").unwrap();
    fs::write(c3.join("C3.99991231T235959.999998Z.vault"), b"").unwrap();

    let (recs, summary) = env.sweep_json(&["--keep", "1"], 1);
    assert_eq!(
        statuses(&recs),
        map(&[
            ("A1", "failed"),
            ("B2", "failed"),
            ("C3", "sealed"),
            ("D4", "sealed")
        ])
    );
    assert_eq!(counts(&summary), [2, 0, 2, 0, 0]);
    for c in ["A1", "B2"] {
        let why = recs[c]["error"].as_str().unwrap();
        let entry = env.store().join(c).join(format!("{c}.{far}.vault"));
        assert!(why.contains(&entry.display().to_string()), "{why}");
        assert_eq!(
            env.vaults(c),
            [format!("{c}.{far}.vault")],
            "nothing sealed"
        );
    }
    // C3's new vault is later than every name there; the odd ones stay.
    assert_eq!(
        recs["C3"]["vault"],
        c3.join("C3.99991231T235959.999999Z.vault")
            .display()
            .to_string()
    );
    assert!(c3.join("C3.notastamp.vault").exists() && c3.join("\u{1}weird").exists());
    // The next night is the same: no panic, the same two failures.
    let (recs, _) = env.sweep_json(&["--keep", "1"], 1);
    assert_eq!(recs["A1"]["status"], "failed");
    assert_eq!(recs["D4"]["status"], "unchanged");
}

/// Issue #10 item 9: a sidecar that is a FIFO fails its case instead of
/// hanging the sweep.
#[test]
fn a_fifo_sidecar_fails_its_case_instead_of_hanging() {
    let env = Env::new();
    small_case(&env.case("C1"), 1);
    small_case(&env.case("C2"), 2);
    env.sweep_json(&[], 0);
    let vault = env.store().join("C1").join(&env.vaults("C1")[0]);
    let side = PathBuf::from(format!("{}.sha256", vault.display()));
    fs::remove_file(&side).unwrap();
    let st = Command::new("mkfifo").arg(&side).status().unwrap();
    assert!(st.success());
    let a = casevault()
        .arg("sweep")
        .arg(env.inbox())
        .arg("-o")
        .arg(env.store())
        .arg("-r")
        .arg(&env.key.recipient)
        .arg("--json")
        .timeout(Duration::from_secs(60))
        .assert();
    let stdout = stdout_of(&a);
    assert_eq!(a.get_output().status.code(), Some(1), "{stdout}");
    let (recs, _) = records(&stdout);
    assert_eq!(
        statuses(&recs),
        map(&[("C1", "failed"), ("C2", "unchanged")])
    );
    let why = recs["C1"]["error"].as_str().unwrap();
    assert!(why.contains("sidecar"), "{why}");
}

/// Issue #10 item 13: a store writer who copies the current tree's
/// fingerprint and manifest digest into `state.json` (computed by sealing
/// it into a scratch store with the public recipient) cannot make
/// `--remove-source` delete files that are in no vault.
#[test]
fn forged_state_cannot_make_remove_source_delete_unsealed_files() {
    let env = Env::new();
    small_case(&env.case("C1"), 1);
    env.sweep_json(&[], 0);
    // The case changes after it was sealed.
    fs::write(env.case("C1/new-evidence.bin"), b"never sealed\n").unwrap();
    let copy = env.root().join("copy");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(env.case("C1"))
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    // The forger seals the current tree into a scratch store...
    let scratch = env.root().join("scratch");
    fs::create_dir(&scratch).unwrap();
    casevault()
        .args(["sweep", "--no-custody"])
        .arg(env.inbox())
        .arg("-o")
        .arg(&scratch)
        .arg("-r")
        .arg(&env.key.recipient)
        .assert()
        .code(0);
    // ...and copies its digests into the real state, keeping the old vault.
    let read = |p: &Path| -> Value {
        serde_json::from_str(&fs::read_to_string(p.join(".casevault/state.json")).unwrap()).unwrap()
    };
    let fresh = read(&scratch);
    let mut state = read(&env.store());
    for k in ["fingerprint", "manifest_sha256"] {
        state["cases"]["C1"][k] = fresh["cases"]["C1"][k].clone();
    }
    fs::write(
        env.store().join(".casevault/state.json"),
        serde_json::to_vec_pretty(&state).unwrap(),
    )
    .unwrap();

    let (recs, _) = env.sweep_json(&["--remove-source"], 0);
    // Removal relies only on what this run sealed: C1 is sealed again, and
    // everything removed is in that new vault.
    assert_eq!(recs["C1"]["status"], "sealed", "{:?}", recs["C1"]);
    assert_eq!(recs["C1"]["removed_files"], 4);
    assert!(!env.case("C1").exists());
    let vaults = env.vaults("C1");
    assert_eq!(vaults.len(), 2);
    let dest = env.root().join("restored");
    env.unseal(&env.store().join("C1").join(vaults.last().unwrap()), &dest);
    assert_same_tree(&copy, &dest, false);
}

/// Issue #10, non-root tier: a sweep run as an unprivileged user seals and
/// removes through directory handles; an entry it may not remove is kept,
/// the rest of the case is still removed, and the case fails naming it.
#[test]
fn remove_source_when_run_unprivileged_keeps_what_it_may_not_remove() {
    let env = Env::new();
    small_case(&env.case("C1"), 1);
    small_case(&env.case("C2"), 2);
    let Some(nobody) = crate::unpriv::Unprivileged::new(env.root()) else {
        return;
    };
    fs::set_permissions(env.root(), fs::Permissions::from_mode(0o755)).unwrap();
    // nobody may read C2/photos/raw but not change it.
    let raw = env.case("C2/photos/raw");
    std::os::unix::fs::chown(&raw, Some(0), Some(0)).unwrap();
    fs::set_permissions(&raw, fs::Permissions::from_mode(0o755)).unwrap();

    let (recs, _) = env.sweep_json_as(&nobody, &["--remove-source"], 1);
    assert_eq!(statuses(&recs), map(&[("C1", "sealed"), ("C2", "failed")]));
    assert!(!env.case("C1").exists(), "C1 removed whole");
    let why = recs["C2"]["error"].as_str().unwrap();
    assert!(
        why.contains("photos/raw/img1.bin") && why.contains("ermission denied"),
        "{why}"
    );
    // Everything else of C2 went; what stayed is in its vault.
    assert_eq!(recs["C2"]["removed_files"], 2);
    assert_eq!(recs["C2"]["removed_symlinks"], 1);
    let left: Vec<_> = walkdir::WalkDir::new(env.case("C2"))
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(env.case("C2"))
                .unwrap()
                .to_path_buf()
        })
        .collect();
    assert_eq!(
        left,
        [
            PathBuf::from("photos"),
            PathBuf::from("photos/raw"),
            PathBuf::from("photos/raw/img1.bin")
        ]
    );
    assert_eq!(env.vaults("C2").len(), 1);
    let custody = fs::read_to_string(env.store().join("custody.jsonl")).unwrap();
    assert_eq!(custody.matches("removed-source").count(), 2, "{custody}");
}

/// Issue #10 item 3: walking and removing through handles must not need a
/// file descriptor per directory of the case. A case with 300 directories
/// is sealed and removed by a sweep limited to 64 open files.
#[test]
fn remove_source_of_a_case_with_many_directories_needs_few_descriptors() {
    let env = Env::new();
    let case = env.case("C1");
    for i in 0..300 {
        let d = case.join(format!("d{:03}/sub", i));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f.txt"), format!("{i}\n")).unwrap();
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_casevault"))
        .arg("sweep")
        .arg(env.inbox())
        .arg("-o")
        .arg(env.store())
        .arg("-r")
        .arg(&env.key.recipient)
        .args(["--json", "--remove-source"])
        .env(crate::util::PANIC_LOG_ENV, crate::util::panic_log())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (recs, _) = records(&stdout);
    assert_eq!(recs["C1"]["status"], "sealed");
    assert_eq!(recs["C1"]["removed_files"], 300);
    assert_eq!(recs["C1"]["removed_dirs"], 601);
    assert!(!case.exists());
}

#[test]
fn parity_is_written_beside_each_vault_and_pruned_with_it() {
    let env = Env::new();
    small_case(&env.case("C1"), 1);
    let (recs, _) = env.sweep_json(&["--parity", "10"], 0);
    let vault = PathBuf::from(recs["C1"]["vault"].as_str().unwrap());
    let par = PathBuf::from(format!("{}.par", vault.display()));
    assert!(par.is_file(), "no parity file beside {}", vault.display());
    // It repairs the vault it was written for.
    let pristine = fs::read(&vault).unwrap();
    let mut bad = pristine.clone();
    bad[pristine.len() / 2] ^= 1;
    fs::write(&vault, &bad).unwrap();
    casevault().arg("repair").arg(&vault).assert().code(0);
    assert!(fs::read(&vault).unwrap() == pristine);

    // The next generation replaces the first under --keep 1: its parity
    // file goes with it.
    fs::write(env.case("C1/notes.txt"), "generation 2\n").unwrap();
    let (recs, _) = env.sweep_json(&["--parity", "10", "--keep", "1"], 0);
    let newer = PathBuf::from(recs["C1"]["vault"].as_str().unwrap());
    assert!(
        !vault.exists() && !par.exists(),
        "pruned vault left its parity file"
    );
    assert!(PathBuf::from(format!("{}.par", newer.display())).is_file());
    env.sweep(&["--parity", "0"]).code(2);
}

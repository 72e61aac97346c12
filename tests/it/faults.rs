//! Fault injection (issue #6): full disks, file size limits, sources that
//! change while they are sealed, output directories that vanish or are
//! read-only, kill -9 and SIGTERM of unseal, and the free-space bound that
//! makes decompression bombs harmless. docs/TESTING.md lists what each test
//! shows and what is not covered.
//!
//! Tests that need a small filesystem mount a tmpfs when running as root
//! (as CI does); elsewhere they say why they skip. The `prlimit --fsize`
//! variants run everywhere.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A tmpfs with `opts` (e.g. `size=2m`) mounted on `dir` for one test,
/// if we are root and mounting works here; otherwise say why and return
/// `None`.
fn tmpfs(dir: &Path, opts: &str) -> Option<Mounted> {
    if !is_root() {
        eprintln!("SKIPPED: not root, cannot mount a tmpfs");
        return None;
    }
    let args = ["-t", "tmpfs", "-o", opts, "tmpfs"].map(std::ffi::OsStr::new);
    match Mounted::new(&args, dir) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("SKIPPED: mount -t tmpfs failed (no CAP_SYS_ADMIN?): {e}");
            None
        }
    }
}

/// An incompressible case of `len` bytes in one file.
fn random_case(fx: &Fx, name: &str, len: usize) -> CaseTree {
    let t = CaseTree::new(fx.cases().join(name));
    t.file("random.bin", &seeded_bytes(len as u64, len))
        .file("small.txt", b"small\n");
    t
}

fn seal_cmd(fx: &Fx, case: &Path, vault: &Path) -> Command {
    let mut c = crate::util::bin_command();
    c.arg("seal")
        .arg(case)
        .arg("-o")
        .arg(vault)
        .arg("-r")
        .arg(&fx.key.recipient)
        .stdin(Stdio::null());
    c
}

fn unseal_cmd(fx: &Fx, vault: &Path, dest: &Path) -> Command {
    let mut c = crate::util::bin_command();
    c.arg("unseal")
        .arg(vault)
        .arg("-o")
        .arg(dest)
        .arg("-i")
        .arg(&fx.key.path)
        .stdin(Stdio::null());
    c
}

/// Run `cmd` under `prlimit --fsize=BYTES` (RLIMIT_FSIZE): a write past
/// BYTES fails with EFBIG.
fn with_fsize(cmd: &Command, bytes: u64) -> Command {
    let mut c = Command::new("prlimit");
    c.arg(format!("--fsize={bytes}"))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    c
}

/// Run to completion; (exit code, stderr).
fn run(mut cmd: Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Unseal `vault` onto a 2 MiB tmpfs (root only; `None` elsewhere): it
/// must fail with exit 1, one well-formed error line and nothing left on
/// the tmpfs. The error line, for what it must say.
fn unseal_onto_2mib_tmpfs(fx: &Fx, vault: &Path, what: &str) -> Option<String> {
    let fs_ = tmpfs(&fx.root().join("small"), "size=2m")?;
    let (code, err) = run(unseal_cmd(fx, vault, &fs_.dir.join("dest")));
    assert_eq!(code, Some(1), "{what}: {err}");
    assert_error_message(&err);
    assert_empty(&fs_.dir, what);
    Some(err)
}

fn assert_empty(dir: &Path, what: &str) {
    let left = snapshot(dir);
    assert!(
        left.is_empty(),
        "{what}: left {left:?} in {}",
        dir.display()
    );
}

// --- disk full --------------------------------------------------------------

#[test]
fn disk_full_during_seal_tmpfs() {
    let fx = Fx::new();
    let Some(fs_) = tmpfs(&fx.root().join("small"), "size=2m") else {
        return;
    };
    let case = random_case(&fx, "FULL-1", 3 << 20);
    let vault = fs_.dir.join("full.vault");
    let (code, err) = run(seal_cmd(&fx, &case.root, &vault));
    assert_eq!(code, Some(1), "{err}");
    assert_error_message(&err);
    assert!(err.contains("No space left on device"), "{err}");
    assert_empty(&fs_.dir, "seal on a full disk");
}

/// The limit inside the last, partial chunk (written through the page
/// cache), and inside a whole 4 MiB chunk written with `O_DIRECT` where
/// the file system allows it (the kernel cuts that write short at the
/// limit, the rest fails).
#[test]
fn file_size_limit_during_seal() {
    let fx = Fx::new();
    for (name, len, limit) in [
        ("FSIZE-1", 3 << 20, 1 << 20),
        ("FSIZE-3", 9 << 20, (5 << 20) + 512),
    ] {
        let case = random_case(&fx, name, len);
        let vault = fx.vault("fsize.vault");
        let (code, err) = run(with_fsize(&seal_cmd(&fx, &case.root, &vault), limit));
        assert_eq!(
            code,
            Some(1),
            "seal of {len} bytes under RLIMIT_FSIZE {limit}: {err}"
        );
        assert_error_message(&err);
        assert!(err.contains("File too large"), "{err}");
        assert_empty(&fx.out(), "seal over RLIMIT_FSIZE");
    }
}

/// Repair's copy hits RLIMIT_FSIZE on its writing thread (the copy is
/// written from the ring's stripe buffers, src/parity.rs): exit 1 naming
/// the cause, the damaged vault left exactly as it was, and no temporary
/// file beside it.
#[test]
fn file_size_limit_during_repair() {
    let fx = Fx::new();
    let case = random_case(&fx, "FSIZE-R", 6 << 20);
    let vault = fx.vault("rep.vault");
    let mut seal = seal_cmd(&fx, &case.root, &vault);
    seal.arg("--parity").arg("10");
    // 256 KiB stripes (debug builds): the copy spans many of them.
    seal.env("CASEVAULT_PARITY_STRIPE_SHARDS", "64");
    let (code, err) = run(seal);
    assert_eq!(code, Some(0), "{err}");
    let mut bytes = fs::read(&vault).unwrap();
    // Damage in the second stripe: the copy starts there.
    bytes[300_000] ^= 0x40;
    fs::write(&vault, &bytes).unwrap();
    let before = snapshot(&fx.out());
    let mut repair = crate::util::bin_command();
    repair.arg("repair").arg(&vault);
    let mut limited = with_fsize(&repair, 2 << 20);
    limited.env("CASEVAULT_PARITY_STRIPE_SHARDS", "64");
    let (code, err) = run(limited);
    assert_eq!(code, Some(1), "repair under RLIMIT_FSIZE: {err}");
    assert_error_message(&err);
    assert!(
        err.contains("cannot write") && err.contains("File too large"),
        "{err}"
    );
    assert!(fs::read(&vault).unwrap() == bytes, "the vault was changed");
    assert_eq!(snapshot(&fx.out()), before, "something was left or changed");
    // Without the limit, the same vault repairs.
    let mut again = crate::util::bin_command();
    again.arg("repair").arg(&vault);
    again.env("CASEVAULT_PARITY_STRIPE_SHARDS", "64");
    let (code, err) = run(again);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn disk_full_during_unseal_tmpfs() {
    let fx = Fx::new();
    let case = random_case(&fx, "FULL-2", 3 << 20);
    let vault = fx.vault("full2.vault");
    fx.seal(&case.root, &vault, &[]);
    let Some(err) = unseal_onto_2mib_tmpfs(&fx, &vault, "unseal on a full disk") else {
        return;
    };
    // Refused before writing: the tar header declares 3 MiB.
    assert!(err.contains("not enough free space"), "{err}");
}

/// A disk that fills while unseal writes (here: a second file no longer
/// fits after the first): either the free-space check or ENOSPC stops it,
/// with nothing left.
#[test]
fn disk_fills_while_unsealing_tmpfs() {
    let fx = Fx::new();
    let t = CaseTree::new(fx.cases().join("FULL-3"));
    t.file("a.bin", &seeded_bytes(1, 1_500_000))
        .file("b.bin", &seeded_bytes(2, 1_500_000));
    let vault = fx.vault("full3.vault");
    fx.seal(&t.root, &vault, &[]);
    let Some(err) = unseal_onto_2mib_tmpfs(&fx, &vault, "unseal on a filling disk") else {
        return;
    };
    assert!(
        err.contains("not enough free space") || err.contains("No space left"),
        "{err}"
    );
}

#[test]
fn file_size_limit_during_unseal() {
    let fx = Fx::new();
    let case = random_case(&fx, "FSIZE-2", 3 << 20);
    let vault = fx.vault("fsize2.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("d");
    let (code, err) = run(with_fsize(&unseal_cmd(&fx, &vault, &dest), 1 << 20));
    assert_eq!(code, Some(1), "unseal under RLIMIT_FSIZE: {err}");
    assert!(err.contains("File too large"), "{err}");
    assert_empty(&fx.restore(), "unseal over RLIMIT_FSIZE");
}

/// Many small files: unseal creates them on two threads beside the reader
/// (src/creators.rs). A file they cannot write fails the unseal as one the
/// reader could not: exit 1, the path and the reason, nothing left.
fn small_files_case(fx: &Fx, name: &str, files: usize, len: usize) -> PathBuf {
    let t = CaseTree::new(fx.cases().join(name));
    for i in 0..files {
        t.file(
            &format!("d{}/f{i:04}.bin", i % 7),
            &seeded_bytes(i as u64, len),
        );
    }
    let vault = fx.vault(&format!("{name}.vault"));
    fx.seal(&t.root, &vault, &[]);
    vault
}

#[test]
fn file_size_limit_with_small_files_during_unseal() {
    let fx = Fx::new();
    let vault = small_files_case(&fx, "FSIZE-SMALL", 300, 10_000);
    let dest = fx.dest("d");
    let (code, err) = run(with_fsize(&unseal_cmd(&fx, &vault, &dest), 4096));
    assert_eq!(code, Some(1), "unseal under RLIMIT_FSIZE: {err}");
    assert_error_message(&err);
    assert!(err.contains("cannot write"), "{err}");
    assert!(
        err.contains("/f0") && err.contains(".bin: File too large"),
        "{err}"
    );
    assert_empty(&fx.restore(), "unseal of small files over RLIMIT_FSIZE");
}

#[test]
fn disk_fills_with_small_files_while_unsealing_tmpfs() {
    let fx = Fx::new();
    let vault = small_files_case(&fx, "FULL-SMALL", 400, 8_000);
    let what = "unseal of small files on a filling disk";
    let Some(err) = unseal_onto_2mib_tmpfs(&fx, &vault, what) else {
        return;
    };
    assert!(
        err.contains("not enough free space") || err.contains("No space left"),
        "{err}"
    );
}

/// The free-space bound (FORMAT §6.1) in numbers.
#[test]
fn free_margin_is_one_percent_capped_at_256_mib() {
    use casevault::unseal::free_margin;
    assert_eq!(free_margin(2 << 20), (2 << 20) / 100);
    assert_eq!(free_margin(10 << 30), (10u64 << 30) / 100);
    assert_eq!(free_margin(1 << 40), 256 << 20);
}

// --- sources that change while sealed --------------------------------------

/// Seal a case whose one big sparse file is changed by `change` once seal
/// has started writing; seal must fail naming the file. Sizes grow until
/// seal is caught in the middle.
fn seal_with_change(label: &str, change: fn(&Path)) {
    for len in [256u64 << 20, 1 << 30, 4 << 30] {
        let fx = Fx::new();
        let case = CaseTree::new(fx.cases().join("CHG-1"));
        case.file("a.txt", b"a\n");
        let big = case.path("big.bin");
        fs::File::create(&big).unwrap().set_len(len).unwrap();
        let vault = fx.vault("chg.vault");
        let mut child = seal_cmd(&fx, &case.root, &vault)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while snapshot(&fx.out()).is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        change(&big);
        let out = wait_child(&mut child);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() == Some(0) {
            eprintln!("{label}: seal of {len} bytes finished before the change; retrying bigger");
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "{label}: {err}");
        assert!(
            err.contains("big.bin") && err.contains("changed while it was being sealed"),
            "{label}: the error must name the file: {err}"
        );
        assert_empty(&fx.out(), label);
        return;
    }
    panic!("{label}: seal was never caught mid-file");
}

fn wait_child(child: &mut Child) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            panic!("child did not exit within 300 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    std::process::Output {
        status: child.wait().unwrap(),
        stdout: vec![],
        stderr: stderr.into_bytes(),
    }
}

#[test]
fn source_file_that_grows_while_sealed_is_refused() {
    seal_with_change("grows", |p| {
        let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
        std::io::Write::write_all(&mut f, b"appended while sealing").unwrap();
    });
}

#[test]
fn source_file_that_shrinks_while_sealed_is_refused() {
    seal_with_change("shrinks", |p| {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(4096)
            .unwrap();
    });
}

#[test]
fn source_file_replaced_while_sealed_is_refused() {
    seal_with_change("replaced", |p| {
        let new = p.with_extension("new");
        let len = fs::metadata(p).unwrap().len();
        fs::File::create(&new).unwrap().set_len(len).unwrap();
        fs::rename(&new, p).unwrap();
    });
}

// --- output directories ------------------------------------------------------

/// The vault's directory is removed while seal writes into it: seal fails
/// (it cannot rename its temporary file into place) and leaves nothing.
#[test]
fn output_directory_removed_during_seal() {
    for len in [256u64 << 20, 1 << 30, 4 << 30] {
        let fx = Fx::new();
        let case = CaseTree::new(fx.cases().join("GONE-1"));
        fs::File::create(case.path("big.bin"))
            .unwrap()
            .set_len(len)
            .unwrap();
        let outdir = fx.out().join("sub");
        fs::create_dir(&outdir).unwrap();
        let mut child = seal_cmd(&fx, &case.root, &outdir.join("v.vault"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while snapshot(&outdir).is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::remove_dir_all(&outdir).unwrap();
        let out = wait_child(&mut child);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() == Some(0) {
            eprintln!("seal of {len} bytes finished before rmdir; retrying bigger");
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_error_message(&err);
        assert_empty(&fx.out(), "seal into a removed directory");
        return;
    }
    panic!("seal was never caught mid-file");
}

/// DEST's parent is removed while unseal extracts into its staging
/// directory: unseal fails (exit 1), nothing is left anywhere.
#[test]
fn destination_parent_removed_during_unseal() {
    let fx = Fx::new();
    // 512 MiB of zeros, then a second file: creating it in the removed
    // directory fails.
    let vault = zero_vault(&fx, "GONE-2", 512 << 20, true);
    let parent = fx.restore().join("p");
    fs::create_dir(&parent).unwrap();
    let mut child = unseal_cmd(&fx, &vault, &parent.join("dest"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_staging_data(&parent);
    fs::remove_dir_all(&parent).unwrap();
    let out = wait_child(&mut child);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_error_message(&err);
    assert_empty(&fx.restore(), "unseal into a removed directory");
}

#[test]
fn read_only_output_directory() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "RO-1");
    let good = fx.vault("good.vault");
    fx.seal(&case.root, &good, &[]);
    let ro = fx.root().join("ro");
    let _mount;
    if chmod_000_is_readable(fx.root()) {
        // Root ignores modes: a read-only mount is the only way.
        match tmpfs(&ro, "size=1m,ro") {
            Some(m) => _mount = m,
            None => return,
        }
    } else {
        fs::create_dir(&ro).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    }
    let (code, err) = run(seal_cmd(&fx, &case.root, &ro.join("v.vault")));
    assert_eq!(code, Some(1), "seal into a read-only directory: {err}");
    assert_error_message(&err);
    let (code, err) = run(unseal_cmd(&fx, &good, &ro.join("dest")));
    assert_eq!(code, Some(1), "unseal into a read-only directory: {err}");
    assert_error_message(&err);
    assert_empty(&ro, "read-only directory");
}

// --- kill -9 and signals ------------------------------------------------------

/// A vault whose one file is 1 GiB of zeros (about 32 KiB of RLE blocks):
/// unseal is busy writing it for a while. (1 GiB, not more, so that the
/// free-space check passes on small CI disks.)
fn big_zero_vault(fx: &Fx, case: &str) -> PathBuf {
    zero_vault(fx, case, 1 << 30, false)
}

/// A vault (never complete) whose first file holds `zeros` zero bytes,
/// followed, with `then_file`, by the header of a second, empty file.
fn zero_vault(fx: &Fx, case: &str, zeros: usize, then_file: bool) -> PathBuf {
    let prefix = headers_only(&[
        (&format!("{case}/"), b'5', 0),
        (&format!("{case}/data/"), b'5', 0),
        (&format!("{case}/data/zeros.bin"), b'0', zeros as u64),
    ]);
    let suffix = if then_file {
        headers_only(&[(&format!("{case}/data/next.bin"), b'0', 0)])
    } else {
        vec![]
    };
    let vault = fx.vault(&format!("{case}.vault"));
    let frame = zstd_frame(&prefix, zeros, &suffix);
    fs::write(&vault, encrypt_to(&fx.key.recipient, &frame, false)).unwrap();
    vault
}

/// Wait until a staging directory under `parent` holds some plaintext.
fn wait_for_staging_data(parent: &Path) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let staged = entries(parent).into_iter().any(|(p, k)| {
            k == Kind::File && fs::metadata(parent.join(&p)).is_ok_and(|m| m.len() > 1 << 20)
        });
        if staged {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("unseal wrote no staging data within 20 s");
}

fn staging_dirs(parent: &Path) -> Vec<String> {
    fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// kill -9 mid-extraction: DEST is absent and the only leftover is one
/// `.casevault-unseal-*` staging directory (plaintext!). The next unseal
/// beside it works and does not touch it (docs/TESTING.md, THREAT-MODEL).
#[test]
fn kill_9_of_unseal_leaves_only_the_staging_directory() {
    let fx = Fx::new();
    let vault = big_zero_vault(&fx, "K9-1");
    let parent = fx.restore();
    let dest = parent.join("dest");
    let mut child = unseal_cmd(&fx, &vault, &dest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_staging_data(&parent);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = staging_dirs(&parent);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(".casevault-unseal-"), "{left:?}");
    assert!(dest.symlink_metadata().is_err());

    let case = small_case(&fx.cases(), "K9-2");
    let good = fx.vault("good.vault");
    fx.seal(&case.root, &good, &[]);
    fx.unseal(&good, &parent.join("dest2"), &[]);
    let mut now = staging_dirs(&parent);
    now.sort();
    assert_eq!(now, vec![left[0].clone(), "dest2".to_string()]);
}

/// kill -9 of seal: the only leftover is its `.casevault-tmp-*` file
/// (ciphertext); no vault, no sidecar.
#[test]
fn kill_9_of_seal_leaves_only_the_temporary_file() {
    let fx = Fx::new();
    let case = CaseTree::new(fx.cases().join("K9-3"));
    fs::File::create(case.path("big.bin"))
        .unwrap()
        .set_len(32 << 30)
        .unwrap();
    let mut child = seal_cmd(&fx, &case.root, &fx.vault("k9.vault"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while snapshot(&fx.out()).is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = staging_dirs(&fx.out());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(".casevault-tmp-"), "{left:?}");
}

/// SIGTERM of unseal mid-extraction: exit 143, no staging directory, no
/// DEST (SIGINT → 130 is in unseal.rs).
#[test]
fn sigterm_of_unseal_exits_143_and_leaves_nothing() {
    let fx = Fx::new();
    let vault = big_zero_vault(&fx, "TERM-1");
    let dest = fx.dest("dest");
    let child = unseal_cmd(&fx, &vault, &dest)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_staging_data(&fx.restore());
    let status = signal_and_wait(child, "TERM");
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert_empty(&fx.restore(), "unseal after SIGTERM");
}

// --- many symlinks -----------------------------------------------------------

/// casevault.json grows with symlinks, which are not tar entries: a case
/// of one file and thousands of links must still open (its tag-file cap,
/// FORMAT §6.1, has a fixed allowance for them).
#[test]
fn case_with_thousands_of_symlinks_round_trips() {
    let fx = Fx::new();
    let case = CaseTree::new(fx.cases().join("LINKS-1"));
    case.file("target.txt", b"t\n");
    for i in 0..3000 {
        case.symlink(&format!("link-{i:05}-with-a-longer-name"), "target.txt");
    }
    let vault = fx.vault("links.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("links");
    fx.unseal(&vault, &dest, &[]);
    assert_same_tree(&case.root, &dest, false);
}

// --- a source vault that changes while store push computes its parity -------

/// `store push --parity` reads the source vault a second time, after the
/// copy, to compute the copy's parity file. A source changed in between
/// must not give the copy a parity file of other bytes: that vault fails
/// (exit 3) and stays in DST without `.par` or `.sha256`; a later push,
/// once the source is back, completes the copy and gives it its parity
/// file. Sizes grow until the change lands while push is still busy.
#[test]
fn source_vault_changed_while_push_computes_its_parity() {
    use std::io::Write as _;
    let name = "C1.20261129T010000.000001Z.vault";
    for len in [64u64 << 20, 256 << 20] {
        let fx = Fx::new();
        let case = CaseTree::new(fx.cases().join("C1"));
        case.file("a.txt", b"a\n");
        fs::File::create(case.path("big.bin"))
            .unwrap()
            .set_len(len)
            .unwrap();
        let (src, dst) = (fx.root().join("src"), fx.root().join("dst"));
        fs::create_dir_all(src.join("C1")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        let vault = src.join("C1").join(name);
        fx.seal(&case.root, &vault, &["--compress", "none"]);
        let original = fs::read(&vault).unwrap();
        let copy = dst.join("C1").join(name);
        let side = |p: &Path, ext: &str| PathBuf::from(format!("{}.{ext}", p.display()));
        let push = |out: &str| {
            let mut c = crate::util::bin_command();
            c.args(["store", "push", "--parity", "5", "--json"])
                .arg(&src)
                .arg(&dst)
                .stdin(Stdio::null())
                .stdout(fs::File::create(fx.root().join(out)).unwrap())
                .stderr(Stdio::piped());
            c
        };
        let record = |out: &str| -> serde_json::Value {
            let text = fs::read_to_string(fx.root().join(out)).unwrap();
            serde_json::from_str(text.lines().next().expect("a record")).unwrap()
        };

        let mut child = push("first.json").spawn().unwrap();
        // The copy is renamed into DST, read back, and only then is the
        // source read for its parity.
        let start = Instant::now();
        while !copy.exists() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(1));
        }
        fs::OpenOptions::new()
            .append(true)
            .open(&vault)
            .unwrap()
            .write_all(b"appended after the copy")
            .unwrap();
        let out = wait_child(&mut child);
        if out.status.code() == Some(0) {
            eprintln!("push of a {len}-byte vault finished before the change; retrying bigger");
            continue;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(3), "{err}");
        let r = record("first.json");
        assert_eq!(r["status"], "failed", "{r}");
        let problems = r["problems"].to_string();
        assert!(
            problems.contains(&vault.display().to_string())
                && problems.contains("changed while its parity was computed"),
            "{r}"
        );
        assert_eq!(
            fs::read(&copy).unwrap(),
            original,
            "the copy is the checked one"
        );
        let mut left: Vec<_> = fs::read_dir(dst.join("C1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [name],
            "no parity file, no sidecar, no temporary file"
        );

        // The source as it was: the next push completes the copy, with a
        // parity file that repairs it.
        fs::write(&vault, &original).unwrap();
        let out = push("second.json").output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(record("second.json")["status"], "completed");
        assert!(side(&copy, "sha256").exists());
        assert!(
            side(&copy, "par").exists(),
            "the completed copy has its parity file"
        );
        let mut damaged = original.clone();
        damaged[100_000] ^= 0x55;
        fs::write(&copy, &damaged).unwrap();
        casevault().arg("repair").arg(&copy).assert().code(0);
        assert!(
            fs::read(&copy).unwrap() == original,
            "repaired to the source's bytes"
        );
        return;
    }
    panic!("store push was never caught between its copy and its parity pass");
}

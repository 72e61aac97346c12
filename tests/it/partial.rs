//! Format version 3 read from its end (issue #12, FORMAT §13): `list` and
//! `unseal --path` read only what they need, counted from outside the
//! binary (strace: the bytes every read(2) on the vault file returned);
//! `--path` restores exactly the selection with the checks of a full
//! unseal; the zstd reference implementation of the seekable format reads
//! the frames casevault writes; stock recovery is unchanged.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::unpriv::{give_to_nobody, Unprivileged};
use crate::util::*;

/// A case whose big, incompressible file comes first, so that the
/// metadata at the end lies in frames of its own.
fn big_case(fx: &Fx) -> CaseTree {
    let case = CaseTree::new(fx.cases().join("BIG-1"));
    case.file("a-big.bin", &seeded_bytes(7, 24 << 20));
    case.dir("sub");
    case.file("sub/one.txt", b"one\n");
    case.file("sub/two.csv", &"x,y\n".repeat(10_000).into_bytes());
    case.dir("sub/deeper");
    case.file("sub/deeper/three.txt", b"three\n");
    case.symlink("sub/to-one", "one.txt");
    case.symlink("sub/up", "../a-big.bin");
    case.file("z-last.txt", &"tail\n".repeat(1000).into_bytes());
    case.mode("sub", 0o750);
    case.stamp_times(1_700_000_000);
    case
}

/// `casevault ARGS…` under strace: its output and the bytes read from
/// `vault` (the file itself, through any descriptor).
fn traced(args: &[&std::ffi::OsStr], vault: &Path) -> Option<(std::process::Output, u64)> {
    let mut cmd = bin_command();
    cmd.args(args);
    let name = format!("<{}>", fs::canonicalize(vault).unwrap().display());
    strace_reads(&cmd, &vault.with_extension("strace"), |l| l.contains(&name))
}

/// `list VAULT -i KEY` / `verify VAULT -i KEY` / `unseal VAULT -o DEST -i
/// KEY EXTRA…` as argument lists for [`traced`].
fn args<'a>(
    cmd: &'a str,
    vault: &'a Path,
    key: &'a Path,
    dest: Option<&'a Path>,
    extra: &'a [&'a str],
) -> Vec<&'a std::ffi::OsStr> {
    let mut v: Vec<&std::ffi::OsStr> = vec![
        cmd.as_ref(),
        vault.as_os_str(),
        "-i".as_ref(),
        key.as_os_str(),
    ];
    if let Some(d) = dest {
        v.extend(["-o".as_ref(), d.as_os_str()]);
    }
    v.extend(extra.iter().map(|e| std::ffi::OsStr::new(*e)));
    v
}

#[test]
fn list_and_unseal_path_read_only_what_they_need() {
    let fx = Fx::new();
    let case = big_case(&fx);
    for compress in ["zstd", "none"] {
        let vault = fx.vault(&format!("big-{compress}.vault"));
        fx.seal(&case.root, &vault, &["--compress", compress]);
        let size = fs::metadata(&vault).unwrap().len();

        // The full read, as a yardstick: verify -i reads every byte.
        let Some((out, full)) = traced(&args("verify", &vault, &fx.key.path, None, &[]), &vault)
        else {
            return;
        };
        assert_eq!(out.status.code(), Some(0));
        assert!(full >= size, "{compress}: verify -i read {full} of {size}");

        let (out, listed) = traced(&args("list", &vault, &fx.key.path, None, &[]), &vault).unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("\tsub/deeper/three.txt\n"), "{text}");
        assert!(text.contains("\tsub/to-one -> one.txt\n"), "{text}");
        assert_eq!(text.lines().count(), 9, "{text}");
        // Age header, last chunk, seek table, tail and tag files: a small
        // fraction of the 24 MiB this vault holds.
        assert!(
            listed < 2 << 20 && listed * 10 < size,
            "{compress}: list read {listed} of {size} bytes"
        );

        let dest = fx.dest(&format!("one-{compress}"));
        let extra = ["--path", "sub/one.txt", "--json"];
        let (out, one) = traced(
            &args("unseal", &vault, &fx.key.path, Some(&dest), &extra),
            &vault,
        )
        .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read(dest.join("sub/one.txt")).unwrap(), b"one\n");
        assert!(!dest.join("a-big.bin").exists() && !dest.join("z-last.txt").exists());
        assert!(
            one < 3 << 20 && one * 8 < size,
            "{compress}: unseal --path read {one} of {size} bytes"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["files"], 1);
        assert_eq!(v["paths"], serde_json::json!(["sub/one.txt"]));
        assert!(v.get("vault_sha256").is_none(), "{v}");

        // The big file costs what it holds, not the whole vault twice.
        let dest = fx.dest(&format!("big-{compress}"));
        let extra = ["--path", "a-big.bin"];
        let (out, big) = traced(
            &args("unseal", &vault, &fx.key.path, Some(&dest), &extra),
            &vault,
        )
        .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::read(dest.join("a-big.bin")).unwrap(),
            fs::read(case.root.join("a-big.bin")).unwrap()
        );
        assert!(
            big >= 24 << 20 && big < size + (4 << 20),
            "{compress}: {big} of {size}"
        );
        eprintln!(
            "{compress}: vault {size} bytes; read by verify -i {full}, list {listed}, \
             unseal --path sub/one.txt {one}, unseal --path a-big.bin {big}"
        );
    }
}

#[test]
fn unseal_path_restores_exactly_the_selection() {
    let fx = Fx::new();
    let case = big_case(&fx);
    let vault = fx.vault("sel.vault");
    fx.seal(&case.root, &vault, &[]);

    // A subtree and a file inside it: the union, once; parents as recorded.
    let dest = fx.dest("sub");
    let v = fx.unseal(&vault, &dest, &["--path", "sub", "--path", "sub/one.txt/"]);
    assert_eq!(v["files"], 3, "{v}");
    assert_eq!(v["symlinks"], 2, "{v}");
    for f in ["sub/one.txt", "sub/two.csv", "sub/deeper/three.txt"] {
        assert_eq!(
            fs::read(dest.join(f)).unwrap(),
            fs::read(case.root.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        fs::read_link(dest.join("sub/to-one")).unwrap(),
        Path::new("one.txt")
    );
    // A link inside the case but leading out of the selection is evidence
    // like any other: recreated, dangling here.
    assert_eq!(
        fs::read_link(dest.join("sub/up")).unwrap(),
        Path::new("../a-big.bin")
    );
    assert!(!dest.join("a-big.bin").exists() && !dest.join("z-last.txt").exists());
    let m = fs::metadata(dest.join("sub")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o750);
    assert_eq!(
        m.mtime(),
        fs::metadata(case.root.join("sub")).unwrap().mtime()
    );
    assert_eq!(
        fs::metadata(&dest).unwrap().mtime(),
        fs::metadata(&case.root).unwrap().mtime()
    );

    // A path the vault does not hold: exit 1, naming it, nothing written.
    let dest = fx.dest("missing");
    let err = fx.unseal_fails(
        &vault,
        &dest,
        1,
        &["--path", "sub", "--path", "sub/nope.txt"],
    );
    assert!(
        err.contains("\"sub/nope.txt\" is not in the vault"),
        "{err}"
    );
    // A path that leaves the case is a usage error.
    fx.unseal_fails(&vault, &dest, 2, &["--path", "../etc"]);
}

#[test]
fn unseal_path_refuses_a_selected_link_that_leaves_the_case() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "OUTLINK-1");
    case.dir("inside");
    case.file("inside/ok.txt", b"ok\n");
    case.dir("outside");
    case.symlink("outside/escape", "/etc/passwd");
    let vault = fx.vault("out.vault");
    fx.seal(&case.root, &vault, &[]);
    // The unsafe link is outside the selection: not restored, not refused.
    let dest = fx.dest("in");
    fx.unseal(&vault, &dest, &["--path", "inside"]);
    assert!(dest.join("inside/ok.txt").exists());
    assert!(dest.join("outside").symlink_metadata().is_err());
    // Selected, it is refused as a full unseal refuses it.
    let dest = fx.dest("out");
    let err = fx.unseal_fails(&vault, &dest, 3, &["--path", "outside"]);
    assert!(err.contains("points outside the case"), "{err}");
    fx.unseal(
        &vault,
        &dest,
        &["--path", "outside", "--allow-external-links"],
    );
    assert_eq!(
        fs::read_link(dest.join("outside/escape")).unwrap(),
        Path::new("/etc/passwd")
    );
}

/// Armored vaults and version 1 vaults are read fully, and `--path` still
/// restores only the selection.
#[test]
fn armored_and_version_1_vaults_fall_back_to_the_full_read() {
    let fx = Fx::new();
    let case = big_case(&fx);
    let vault = fx.vault("armored.vault");
    fx.seal(&case.root, &vault, &["--armor"]);
    let Some((out, n)) = traced(&args("list", &vault, &fx.key.path, None, &[]), &vault) else {
        return;
    };
    assert_eq!(out.status.code(), Some(0));
    assert!(n >= fs::metadata(&vault).unwrap().len());
    let dest = fx.dest("armored");
    fx.unseal(&vault, &dest, &["--path", "sub/deeper"]);
    assert!(dest.join("sub/deeper/three.txt").exists());
    assert!(!dest.join("sub/one.txt").exists());

    // The checked-in version 1 control vector.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let key = fx.root().join("vector-key.txt");
    write_private(&key, fs::read(dir.join("TEST-ONLY-key.txt")).unwrap());
    let v1 = dir.join("hostile/ok-control.vault");
    let dest = fx.dest("v1");
    let a = unseal_cmd(&v1, &dest, &key)
        .args(["--path", "sub/b.txt", "--json"])
        .assert()
        .code(0);
    assert_eq!(fs::read(dest.join("sub/b.txt")).unwrap(), b"bravo\n");
    assert!(!dest.join("a.txt").exists());
    assert!(json_of(&a)["vault_sha256"].is_string());
    let dest = fx.dest("v1-missing");
    let before = snapshot(fx.root());
    unseal_cmd(&v1, &dest, &key)
        .args(["--path", "nope"])
        .assert()
        .code(1);
    assert_snapshot_unchanged(fx.root(), &before);
}

/// The zstd reference implementation of the seekable format
/// (contrib/seekable_format, through zstd-safe's `seekable` feature) reads
/// the plaintext casevault writes, frame by frame and at any offset.
#[test]
fn zstd_reference_seekable_reader_reads_the_frames() {
    use zstd::zstd_safe::seekable::Seekable;
    let fx = Fx::new();
    let case = big_case(&fx);
    let vault = fx.vault("ref.vault");
    fx.seal(&case.root, &vault, &[]);
    let plain = decrypt_vault(&vault, &fx.key);
    let tar = plaintext_tar(&plain);
    let mut s = Seekable::create();
    s.init_buff(&plain)
        .expect("the reference reader accepts the seek table");
    let frames = s.num_frames();
    assert_eq!(u64::from(frames), (tar.len() as u64).div_ceil(1 << 20));
    for i in 0..frames {
        assert!(s.frame_decompressed_size(i).unwrap() <= 1 << 20);
    }
    for off in [0usize, 511, 1 << 20, (5 << 20) + 3, tar.len() - 4096] {
        let mut out = Vec::with_capacity(4096);
        let n = s.decompress(&mut out, off as u64).unwrap();
        assert!(n > 0);
        assert_eq!(&out[..], &tar[off..off + n], "offset {off}");
    }
}

/// Stock recovery of version 3 vaults, compressed and not: age, zstd, tar,
/// bagit.py and sha256sum, exactly as FORMAT §8 says.
#[test]
fn stock_tools_recover_version_3_vaults() {
    let fx = Fx::new();
    let case = big_case(&fx);
    for compress in ["zstd", "none"] {
        let vault = fx.vault(&format!("stock-{compress}.vault"));
        fx.seal(&case.root, &vault, &["--compress", compress]);
        let (Some(age), Some(tar), Some(zstd), Some(bagit), Some(sha)) = (
            tool("age"),
            tool("tar"),
            tool("zstd"),
            tool("bagit.py"),
            tool("sha256sum"),
        ) else {
            return;
        };
        let out = fx.root().join(format!("stock-{compress}"));
        fs::create_dir_all(&out).unwrap();
        let plain = out.join("plain");
        run_tool(
            Command::new(&age)
                .arg("-d")
                .arg("-i")
                .arg(&fx.key.path)
                .arg("-o")
                .arg(&plain)
                .arg(&vault),
        );
        let tarfile = if compress == "zstd" {
            let t = out.join("t.tar");
            run_tool(
                Command::new(&zstd)
                    .args(["-d", "-q", "-o"])
                    .arg(&t)
                    .arg(&plain),
            );
            t
        } else {
            plain
        };
        run_tool(
            Command::new(&tar)
                .arg("-xf")
                .arg(&tarfile)
                .arg("-C")
                .arg(&out),
        );
        let bag = out.join("BIG-1");
        run_tool(Command::new(&bagit).arg("--validate").arg(&bag));
        run_tool(Command::new(&sha).current_dir(&bag).args([
            "-c",
            "--quiet",
            "manifest-sha256.txt",
        ]));
        run_tool(Command::new(&sha).current_dir(&bag).args([
            "-c",
            "--quiet",
            "tagmanifest-sha256.txt",
        ]));
        assert_eq!(
            fs::read(bag.join("data/sub/deeper/three.txt")).unwrap(),
            b"three\n"
        );
        assert!(bag.join("casevault-locator.txt").exists());
    }
}

/// The non-root tier: `--path` as nobody, a success and a refusal.
#[test]
fn unseal_path_as_nobody() {
    let fx = Fx::new();
    let case = big_case(&fx);
    let work = fx.root().join("nobody");
    fs::create_dir(&work).unwrap();
    let vault = work.join("n.vault");
    fx.seal(&case.root, &vault, &[]);
    let key = work.join("key.txt");
    fs::copy(&fx.key.path, &key).unwrap();
    let Some(u) = Unprivileged::new(&work) else {
        return;
    };
    give_to_nobody(&work);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let dest: PathBuf = work.join("dest");
    let out = u.run([
        "unseal".as_ref(),
        vault.as_os_str(),
        "-o".as_ref(),
        dest.as_os_str(),
        "-i".as_ref(),
        key.as_os_str(),
        "--path".as_ref(),
        "sub/deeper".as_ref(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(dest.join("sub/deeper/three.txt")).unwrap(),
        b"three\n"
    );
    assert_eq!(
        fs::metadata(dest.join("sub/deeper/three.txt"))
            .unwrap()
            .uid(),
        65534
    );
    let out = u.run([
        "unseal".as_ref(),
        vault.as_os_str(),
        "-o".as_ref(),
        work.join("dest2").as_os_str(),
        "-i".as_ref(),
        key.as_os_str(),
        "--path".as_ref(),
        "sub/none".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!work.join("dest2").exists());
    let left: Vec<_> = fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".casevault-unseal-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Issue #12: the readers of a version 3 vault keep nothing per entry
/// (`casevault.json` is checked from the end and streamed beside the
/// payload): `verify -i`, `list` and `unseal` of 20,000 files stay within
/// 64 MiB, while the in-memory read of the same vault (armored, so read
/// from the start) grows with the entries — which shows this test can
/// fail.
#[test]
fn version_3_readers_do_not_grow_with_the_entries() {
    let fx = Fx::new();
    let case = CaseTree::new(fx.cases().join("MANY-1"));
    // Long names, as phone extractions have them: the in-memory read keeps
    // each several times, the version 3 reader none.
    let long = "com.example.messenger.attachments.".repeat(5);
    for d in 0..20 {
        let dir = format!("extraction/dir-{d:02}");
        case.dir(&dir);
        for f in 0..1000 {
            let name = format!("{dir}/{long}message-{f:04}.txt");
            case.file(&name, format!("{d}/{f}\n").as_bytes());
        }
    }
    let vault = fx.vault("many.vault");
    fx.seal(&case.root, &vault, &[]);
    let armored = fx.vault("many-armored.vault");
    fx.seal(&case.root, &armored, &["--armor"]);
    let run = |args: &[&std::ffi::OsStr]| {
        let mut c = bin_command();
        c.args(args);
        let (peak, code, err) = peak_rss(c);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        peak
    };
    let key = fx.key.path.as_os_str();
    let dest = fx.dest("many");
    let peaks = [
        (
            "verify -i",
            run(&["verify".as_ref(), vault.as_os_str(), "-i".as_ref(), key]),
        ),
        (
            "list",
            run(&["list".as_ref(), vault.as_os_str(), "-i".as_ref(), key]),
        ),
        (
            "unseal",
            run(&[
                "unseal".as_ref(),
                vault.as_os_str(),
                "-i".as_ref(),
                key,
                "-o".as_ref(),
                dest.as_os_str(),
            ]),
        ),
    ];
    let in_memory = run(&["verify".as_ref(), armored.as_os_str(), "-i".as_ref(), key]);
    eprintln!("20,000 files: {peaks:?} bytes; in-memory verify -i: {in_memory} bytes");
    for (what, peak) in peaks {
        assert!(peak < 64 << 20, "{what}: peak RSS {} MiB", peak >> 20);
        assert!(
            in_memory > peak + (8 << 20),
            "{what}: {} MiB is not below the in-memory read's {} MiB",
            peak >> 20,
            in_memory >> 20
        );
    }
    let last = format!("extraction/dir-19/{long}message-0999.txt");
    assert_eq!(fs::read(dest.join(last)).unwrap(), b"19/999\n");
}

//! `casevault unseal`: round trips, recipients and identities, destinations,
//! symlink policy.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::util::*;

const UNSEAL_JSON_KEYS: &[&str] = &[
    "vault",
    "dest",
    "case_id",
    "files",
    "dirs",
    "symlinks",
    "bytes",
    "vault_sha256",
    "mtimes_not_stored",
];

fn check_unseal_json(v: &serde_json::Value, case: &Path, case_id: &str, vault: &Path) {
    assert_json_keys(v, UNSEAL_JSON_KEYS);
    let (files, dirs, symlinks, bytes) = case_totals(case);
    assert_eq!(v["case_id"], case_id);
    assert_eq!(v["files"], files);
    assert_eq!(v["dirs"], dirs);
    assert_eq!(v["symlinks"], symlinks);
    assert_eq!(v["bytes"], bytes);
    assert_eq!(v["mtimes_not_stored"], serde_json::json!([]));
    assert_eq!(
        v["vault_sha256"],
        sha256_hex(&fs::read(vault).unwrap()).as_str()
    );
}

fn round_trip(seal_args: &[&str]) {
    let fx = Fx::new();
    let case = rich_case(&fx.cases(), "RT-1", true);
    let vault = fx.vault("rt.vault");
    fx.seal(&case.root, &vault, seal_args);
    let dest = fx.dest("restored");
    let v = fx.unseal(&vault, &dest, &["--allow-external-links"]);
    check_unseal_json(&v, &case.root, "RT-1", &vault);
    assert!(v["dest"].as_str().unwrap().ends_with("restored"));
    assert_same_tree(&case.root, &dest, true);
    // Only DEST appeared in restore/ (no staging leftovers).
    let top: Vec<_> = fs::read_dir(fx.restore())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, vec![std::ffi::OsString::from("restored")]);
}

#[test]
fn round_trip_rich_tree_zstd() {
    round_trip(&[]);
}

#[test]
fn round_trip_rich_tree_compress_none() {
    round_trip(&["--compress", "none"]);
}

#[test]
fn round_trip_rich_tree_armor() {
    round_trip(&["--armor"]);
}

#[test]
fn round_trip_odd_names() {
    let fx = Fx::new();
    let case = CaseTree::new(fx.cases().join("ODD-1"));
    let long_dir = format!("{}/{}", "d".repeat(60), "e".repeat(60));
    case.file("100%.txt", b"percent")
        .file("%41.txt", b"looks encoded")
        .file("line\nbreak.txt", b"lf")
        .file("carriage\rreturn.txt", b"cr")
        .file("back\\slash.txt", b"bs")
        .file("\u{e9}.txt", b"nfc")
        .file("e\u{301}.txt", b"nfd")
        .file(" leading space.txt", b"sp")
        .file(&format!("{long_dir}/{}.bin", "f".repeat(120)), b"long path")
        .file("tab\tname.txt", b"tab")
        .symlink("link%25", "100%.txt");
    case.stamp_times(1_500_000_000);
    let vault = fx.vault("odd.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("odd");
    fx.unseal(&vault, &dest, &[]);
    assert_same_tree(&case.root, &dest, true);
}

#[test]
fn round_trip_odd_mtimes_and_empty_case() {
    let fx = Fx::new();
    let case = CaseTree::new(fx.cases().join("TIME-1"));
    case.file("epoch.txt", b"0")
        .file("y1969.txt", b"-1y")
        .file("y2300.txt", b"far future")
        .dir("empty");
    case.stamp_times(1_400_000_000);
    for (rel, secs) in [
        ("epoch.txt", 0i64),
        ("y1969.txt", -31_536_000),
        ("y2300.txt", 10_413_792_000),
    ] {
        filetime::set_file_mtime(case.path(rel), filetime::FileTime::from_unix_time(secs, 0))
            .unwrap();
    }
    let vault = fx.vault("time.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("time");
    fx.unseal(&vault, &dest, &[]);
    assert_same_tree(&case.root, &dest, true);

    // A case with nothing in it.
    let empty = CaseTree::new(fx.cases().join("EMPTY-1"));
    empty.stamp_times(1_300_000_000);
    let vault = fx.vault("empty.vault");
    let v = fx.seal(&empty.root, &vault, &[]);
    assert_eq!(v["files"], 0);
    assert_eq!(v["payload_bytes"], 0);
    let dest = fx.dest("empty");
    let u = fx.unseal(&vault, &dest, &[]);
    assert_eq!(u["files"], 0);
    assert_same_tree(&empty.root, &dest, true);
}

#[test]
fn unseal_human_output_line() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "HU-1");
    let vault = fx.vault("hu.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("hu");
    let a = unseal_cmd(&vault, &dest, &fx.key.path).assert().code(0);
    let (files, _, _, bytes) = case_totals(&case.root);
    assert_eq!(
        stdout_of(&a),
        format!(
            "unsealed HU-1: {files} files, {bytes} bytes verified -> {}\n",
            dest.display()
        )
    );
}

#[test]
fn two_recipients_each_can_unseal() {
    let fx = Fx::new();
    let other = fx.new_key("other.txt");
    let rfile = fx.root().join("recipients.txt");
    fs::write(
        &rfile,
        format!("# the lab's archive key\n\n{}\n# end\n\n", other.recipient),
    )
    .unwrap();
    let case = small_case(&fx.cases(), "TWO-1");
    let vault = fx.vault("two.vault");
    let v = fx.seal(&case.root, &vault, &["-R", rfile.to_str().unwrap()]);
    assert_eq!(v["recipients"], 2);

    let d1 = fx.dest("by-first");
    fx.unseal(&vault, &d1, &[]);
    assert_same_tree(&case.root, &d1, true);

    let d2 = fx.dest("by-second");
    unseal_cmd(&vault, &d2, &other.path).assert().code(0);
    assert_same_tree(&case.root, &d2, true);
}

#[test]
fn several_identities_one_matching() {
    let fx = Fx::new();
    let stranger = fx.new_key("stranger.txt");
    let case = small_case(&fx.cases(), "MI-1");
    let vault = fx.vault("mi.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("mi");
    unseal_cmd(&vault, &dest, &stranger.path)
        .arg("-i")
        .arg(&fx.key.path)
        .assert()
        .code(0);
    assert_same_tree(&case.root, &dest, true);
}

fn ssh_round_trip(kind: &[&str]) {
    let Some(ssh_keygen) = tool("ssh-keygen") else {
        return;
    };
    let fx = Fx::new();
    let key = fx.root().join("keys/id_test");
    run_tool(
        std::process::Command::new(ssh_keygen)
            .args(kind)
            .args(["-N", "", "-q", "-C", "analyst@lab", "-f"])
            .arg(&key),
    );
    let pubkey = fs::read_to_string(key.with_extension("pub")).unwrap();
    let case = small_case(&fx.cases(), "SSH-1");
    let vault = fx.vault("ssh.vault");
    let a = seal_cmd(&case.root, &vault, pubkey.trim_end())
        .arg("--json")
        .assert()
        .code(0);
    assert_eq!(json_of(&a)["recipients"], 1);
    let dest = fx.dest("ssh");
    unseal_cmd(&vault, &dest, &key).assert().code(0);
    assert_same_tree(&case.root, &dest, true);
    // The X25519 test key does not open it.
    fx.unseal_fails(&vault, &fx.dest("nope"), 4, &[]);
}

#[test]
fn ssh_ed25519_recipient_unseals_with_ssh_key() {
    ssh_round_trip(&["-t", "ed25519"]);
}

#[test]
fn ssh_rsa_recipient_unseals_with_ssh_key() {
    ssh_round_trip(&["-t", "rsa", "-b", "2048"]);
}

#[test]
fn wrong_key_is_exit_4() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "WK-1");
    let vault = fx.vault("wk.vault");
    let other = fx.new_key("other.txt");
    seal_cmd(&case.root, &vault, &other.recipient)
        .assert()
        .code(0);
    fx.unseal_fails(&vault, &fx.dest("wk"), 4, &[]);
}

#[test]
fn bad_or_missing_identity_file_is_exit_1() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "BI-1");
    let vault = fx.vault("bi.vault");
    fx.seal(&case.root, &vault, &[]);
    let garbage = fx.root().join("keys/garbage.txt");
    write_private(&garbage, "this is not a key\n");
    let missing = fx.root().join("keys/missing.txt");
    for id in [&garbage, &missing] {
        let before = snapshot(fx.root());
        let dest = fx.dest("bi");
        let a = unseal_cmd(&vault, &dest, id).assert().code(1);
        assert_error_message(&stderr_of(&a));
        assert!(!dest.exists());
        assert_snapshot_unchanged(fx.root(), &before);
    }
}

#[test]
fn missing_vault_is_exit_1() {
    let fx = Fx::new();
    fx.unseal_fails(&fx.vault("nothing.vault"), &fx.dest("x"), 1, &[]);
}

#[test]
fn unseal_without_identity_is_usage_error() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "NI-1");
    let vault = fx.vault("ni.vault");
    fx.seal(&case.root, &vault, &[]);
    let before = snapshot(fx.root());
    let dest = fx.dest("ni");
    casevault()
        .arg("unseal")
        .arg(&vault)
        .arg("-o")
        .arg(&dest)
        .assert()
        .code(2);
    assert_snapshot_unchanged(fx.root(), &before);
}

#[test]
fn unseal_into_non_empty_dir_is_refused() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "NE-1");
    let vault = fx.vault("ne.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("busy");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("keep.txt"), b"keep me").unwrap();
    let before = snapshot(fx.root());
    let a = unseal_cmd(&vault, &dest, &fx.key.path).assert().code(1);
    assert_error_message(&stderr_of(&a));
    assert_snapshot_unchanged(fx.root(), &before);
    assert_eq!(fs::read(dest.join("keep.txt")).unwrap(), b"keep me");

    // DEST is a regular file: refused as well.
    let file_dest = fx.dest("a-file");
    fs::write(&file_dest, b"file").unwrap();
    let before = snapshot(fx.root());
    unseal_cmd(&vault, &file_dest, &fx.key.path)
        .assert()
        .code(1);
    assert_snapshot_unchanged(fx.root(), &before);
    assert_eq!(fs::read(&file_dest).unwrap(), b"file");
}

#[test]
fn unseal_into_existing_empty_dir_works() {
    let fx = Fx::new();
    let case = rich_case_light(&fx.cases(), "EE-1");
    let vault = fx.vault("ee.vault");
    fx.seal(&case.root, &vault, &["--compress", "none"]);
    let dest = fx.dest("empty-target");
    fs::create_dir(&dest).unwrap();
    let v = fx.unseal(&vault, &dest, &[]);
    check_unseal_json(&v, &case.root, "EE-1", &vault);
    assert_same_tree(&case.root, &dest, false);
    assert_eq!(
        fs::read_dir(fx.restore()).unwrap().count(),
        1,
        "no staging leftovers"
    );
}

#[test]
fn absolute_link_needs_allow_external_links() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "ABS-1");
    case.symlink("passwd", "/etc/passwd");
    case.stamp_times(1_600_000_000);
    let vault = fx.vault("abs.vault");
    fx.seal(&case.root, &vault, &[]);
    let err = fx.unseal_fails(&vault, &fx.dest("abs"), 3, &[]);
    assert!(
        err.contains("passwd") || err.contains("--allow-external-links"),
        "stderr should name the link or the flag: {err}"
    );
    let dest = fx.dest("abs-ok");
    fx.unseal(&vault, &dest, &["--allow-external-links"]);
    assert_same_tree(&case.root, &dest, true);
    assert_eq!(
        fs::read_link(dest.join("passwd")).unwrap(),
        Path::new("/etc/passwd")
    );
}

#[test]
fn relative_link_escaping_the_tree_needs_allow_external_links() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "ESC-1");
    case.symlink("sub/up", "../../../outside.txt")
        // Escapes through another link: sub/hop -> ../via, via -> ..
        .symlink("via", "..")
        .symlink("sub/hop", "../via/x");
    case.stamp_times(1_600_000_000);
    let vault = fx.vault("esc.vault");
    fx.seal(&case.root, &vault, &[]);
    fx.unseal_fails(&vault, &fx.dest("esc"), 3, &[]);
    let dest = fx.dest("esc-ok");
    fx.unseal(&vault, &dest, &["--allow-external-links"]);
    assert_same_tree(&case.root, &dest, true);
    assert!(!fx.restore().join("outside.txt").exists());
}

#[test]
fn escape_through_one_link_only_is_refused() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "ESC-2");
    // `..` from the case root leaves the tree.
    case.symlink("via", "..");
    case.stamp_times(1_600_000_000);
    let vault = fx.vault("esc2.vault");
    fx.seal(&case.root, &vault, &[]);
    fx.unseal_fails(&vault, &fx.dest("esc2"), 3, &[]);
}

/// Issue #10 item 8 (https://github.com/casevault/casevault/issues/10):
/// a symlink loop sealed fine but unseal refused it as "outside the
/// case". A loop cannot leave the case (the OS stops it with ELOOP), so it
/// is evidence that unseal recreates as it is, without any flag.
#[test]
fn link_loops_are_recreated() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "LOOP-1");
    case.symlink("a", "b")
        .symlink("b", "a")
        .symlink("self", "self");
    // A chain of 45 links that ends inside: the first four need more than
    // 40 links followed, so the OS cannot follow them either.
    for i in 0..45 {
        case.symlink(&format!("sub/h{i:02}"), &format!("h{:02}", i + 1));
    }
    case.symlink("sub/h45", "b.txt");
    case.stamp_times(1_600_000_000);
    let vault = fx.vault("loop.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("loop");
    let out = fx.unseal(&vault, &dest, &[]);
    assert_eq!(out["symlinks"], 50, "49 links and small_case's one");
    assert_same_tree(&case.root, &dest, true);
    assert_eq!(fs::read_link(dest.join("a")).unwrap(), Path::new("b"));
    assert_eq!(fs::read_link(dest.join("self")).unwrap(), Path::new("self"));
    // They stay loops: opening one fails with ELOOP, nothing else happens.
    let e = fs::metadata(dest.join("a")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
    assert_eq!(fs::read(dest.join("sub/h10")).unwrap(), b"bravo\n");
}

/// Issue #10 item 8: a chain longer than the hop limit whose first links
/// already leave the case is still outside (the OS follows it out before
/// the limit), and the message names the link and how it leaves.
#[test]
fn long_chain_leaving_early_is_outside_and_named() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "LOOP-2");
    for i in 0..60 {
        case.symlink(&format!("h{i:02}"), &format!("h{:02}", i + 1));
    }
    case.symlink("h60", "a.txt");
    // h05 leaves through `..` before the chain gets long.
    fs::remove_file(case.path("h05")).unwrap();
    case.symlink("h05", "../LOOP-2/h06");
    case.stamp_times(1_600_000_000);
    let vault = fx.vault("loop2.vault");
    fx.seal(&case.root, &vault, &[]);
    let err = fx.unseal_fails(&vault, &fx.dest("loop2"), 3, &[]);
    assert!(
        err.contains(
            r#"unsafe entry: symlink "h00" points outside the case: its target "h01" leads through the link "h05" -> "../LOOP-2/h06", whose target climbs above the case root"#
        ),
        "{err}"
    );
    let dest = fx.dest("loop2-ok");
    fx.unseal(&vault, &dest, &["--allow-external-links"]);
    assert_same_tree(&case.root, &dest, true);
}

/// Issue #10 item 8: the refusal of an absolute link says what it is.
#[test]
fn absolute_link_message_says_absolute() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "ABS-2");
    case.symlink("passwd", "/etc/passwd");
    let vault = fx.vault("abs2.vault");
    fx.seal(&case.root, &vault, &[]);
    let err = fx.unseal_fails(&vault, &fx.dest("abs2"), 3, &[]);
    assert!(
        err.contains(
            r#"unsafe entry: symlink "passwd" points outside the case: its target "/etc/passwd" is absolute"#
        ),
        "{err}"
    );
}

#[test]
fn setuid_bits_are_not_restored() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "SUID-1");
    case.file("tool", b"#!/bin/sh\n")
        .mode("tool", 0o4755)
        .file("shared/x", b"x")
        .mode("shared", 0o1777)
        .file("sgid", b"y")
        .mode("sgid", 0o2750);
    case.stamp_times(1_600_000_000);
    let vault = fx.vault("suid.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("suid");
    fx.unseal(&vault, &dest, &[]);
    assert_same_tree(&case.root, &dest, true);
    let mode = |rel: &str| fs::metadata(dest.join(rel)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("tool"), 0o755);
    assert_eq!(mode("shared"), 0o777);
    assert_eq!(mode("sgid"), 0o750);
}

/// CLI.md exit codes: SIGINT → 130, temporary files removed; DEST is not
/// created.
#[test]
fn unseal_sigint_exits_130_and_leaves_nothing() {
    let fx = Fx::new();
    // Tar: CASE/, CASE/data/, CASE/data/big (4 GiB of zeros), never ends.
    // The vault is ~130 KiB; the binary is killed long before the end.
    let size = 4usize << 30;
    let prefix = headers_only(&[
        ("SIGU-1/", b'5', 0),
        ("SIGU-1/data/", b'5', 0),
        ("SIGU-1/data/big", b'0', size as u64),
    ]);
    // The hand-made frame decodes as intended (checked on a small one).
    let small = zstd_rle_frame(&prefix, 300 * 1024);
    let decoded = zstd::decode_all(&small[..]).unwrap();
    assert_eq!(decoded.len(), prefix.len() + 300 * 1024);
    assert_eq!(&decoded[..prefix.len()], &prefix[..]);
    assert!(decoded[prefix.len()..].iter().all(|&b| b == 0));

    let vault = fx.vault("sig.vault");
    fs::write(
        &vault,
        encrypt_to(&fx.key.recipient, &zstd_rle_frame(&prefix, size), false),
    )
    .unwrap();
    let dest = fx.dest("sig");
    let before = snapshot(&fx.restore());
    let child = crate::util::bin_command()
        .arg("unseal")
        .arg(&vault)
        .arg("-o")
        .arg(&dest)
        .arg("-i")
        .arg(&fx.key.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while snapshot(&fx.restore()) == before && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = signal_and_wait(child, "INT");
    assert_eq!(
        status.code(),
        Some(130),
        "exit status after SIGINT: {status:?}"
    );
    assert!(!dest.exists());
    assert_snapshot_unchanged(&fx.restore(), &before);
}

/// CLI.md: errors are one `casevault: error: …` line "naming the path".
#[test]
fn errors_name_the_path() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "EP-1");
    let vault = fx.vault("named-vault.vault");
    fx.seal(&case.root, &vault, &["--compress", "none"]);

    // Non-empty destination: names DEST.
    let busy = fx.dest("busy-dest");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("x"), b"x").unwrap();
    let a = casevault()
        .args(["unseal"])
        .arg(&vault)
        .arg("-o")
        .arg(&busy)
        .arg("-i")
        .arg(&fx.key.path)
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("busy-dest"), "{}", stderr_of(&a));

    // Missing identity file: names it.
    let missing = fx.root().join("keys/absent-key.txt");
    let a = unseal_cmd(&vault, fx.dest("d1"), &missing).assert().code(1);
    assert!(
        stderr_of(&a).contains("absent-key.txt"),
        "{}",
        stderr_of(&a)
    );

    // No matching identity: names the vault.
    let other = fx.new_key("other.txt");
    let a = unseal_cmd(&vault, fx.dest("d2"), &other.path)
        .assert()
        .code(4);
    let err = stderr_of(&a);
    assert_error_message(&err);
    assert!(
        err.contains("named-vault.vault"),
        "exit 4 error does not name the vault: {err}"
    );

    // Damaged payload: names the vault.
    let mut bytes = fs::read(&vault).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    fs::write(&vault, &bytes).unwrap();
    let a = unseal_cmd(&vault, fx.dest("d3"), &fx.key.path)
        .assert()
        .code(3);
    let err = stderr_of(&a);
    assert_error_message(&err);
    assert!(
        err.contains("named-vault.vault"),
        "exit 3 error does not name the vault: {err}"
    );
}

/// Issue #10 item 4: the staging directory is 0700 whatever the umask, so
/// other local users cannot watch names and sizes appear while a vault is
/// extracted; DEST gets the recorded mode of the case root only at the end.
#[test]
fn staging_directory_is_0700_under_umask_022() {
    let fx = Fx::new();
    let case = crate::unseal_unpriv::slow_readonly_case(&fx, "UMASK-1");
    case.mode(".", 0o750);
    let vault = fx.vault("umask.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("umask");
    let mut child = std::process::Command::new("sh")
        .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_casevault"))
        .arg("unseal")
        .arg(&vault)
        .arg("-o")
        .arg(&dest)
        .arg("-i")
        .arg(&fx.key.path)
        .env(PANIC_LOG_ENV, panic_log())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let staging = crate::unseal_unpriv::stop_at_staging(&mut child, &fx.restore());
    let mode = fs::symlink_metadata(&staging).unwrap().permissions().mode() & 0o7777;
    crate::unseal_unpriv::signal(&child, "CONT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(mode, 0o700, "staging directory mode while unsealing");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert_same_tree(&case.root, &dest, true);
}

/// A vault like one sealed from `case`, except for what `edit` changes in
/// its casevault.json (the tag manifest is fixed to match), re-encrypted
/// to the fixture key: as an attacker, or a sealer on another filesystem,
/// could make it.
fn craft_json(
    fx: &Fx,
    case: &CaseTree,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let orig = fx.root().join(format!("{name}.orig.vault"));
    fx.seal(&case.root, &orig, &["--compress", "none"]);
    let (mut entries, _) = parse_tar(&decrypt_vault(&orig, &fx.key));
    fs::remove_file(&orig).unwrap();
    fs::remove_file(orig.with_extension("vault.sha256")).unwrap();
    let id = case.root.file_name().unwrap().to_str().unwrap();
    let idx = |entries: &[RawEntry], tag: &str| {
        entries
            .iter()
            .position(|e| e.path() == format!("{id}/{tag}"))
            .unwrap()
    };
    let j = idx(&entries, "casevault.json");
    let mut json: serde_json::Value = serde_json::from_slice(&entries[j].data).unwrap();
    edit(&mut json);
    let mut bytes = serde_json::to_vec(&json).unwrap();
    bytes.push(b'\n');
    entries[j].set_data(bytes);
    let mut tm = String::new();
    for tag in [
        "bagit.txt",
        "bag-info.txt",
        "casevault.json",
        "manifest-sha256.txt",
        "casevault-locator.txt",
    ] {
        let data = &entries[idx(&entries, tag)].data;
        tm.push_str(&format!("{}  {tag}\n", sha256_hex(data)));
    }
    let t = idx(&entries, "tagmanifest-sha256.txt");
    entries[t].set_data(tm.into_bytes());
    let vault = fx.vault(&format!("{name}.vault"));
    fs::write(
        &vault,
        encrypt_to(&fx.key.recipient, &build_tar(&entries), false),
    )
    .unwrap();
    vault
}

/// Set `mtime` and `mtime_nsec` of the casevault.json entries whose path
/// `pick` selects.
fn set_mtimes(json: &mut serde_json::Value, pick: impl Fn(&str) -> bool, secs: i64, nsec: u32) {
    for e in json["entries"].as_array_mut().unwrap() {
        if pick(e["path"].as_str().unwrap()) {
            e["mtime"] = secs.into();
            e["mtime_nsec"] = nsec.into();
        }
    }
}

/// 9999-12-31T23:59:59Z, the last second FORMAT.md §5.4 allows.
const LAST_SECOND: i64 = 253_402_300_799;
/// 0000-01-01T00:00:00Z, the first.
const FIRST_SECOND: i64 = -62_167_219_200;

/// Issue #10 item 6: an mtime the destination filesystem cannot hold (ext4
/// stops in 2446) used to be clamped silently. unseal now restores the case
/// and names every entry whose time was not stored: one stderr line each,
/// capped at 10 plus a count, and all of them in `--json`.
#[test]
fn mtimes_the_filesystem_cannot_store_are_reported() {
    let fx = Fx::new();
    let probe = fx.root().join("probe");
    fs::write(&probe, b"").unwrap();
    let far = filetime::FileTime::from_unix_time(LAST_SECOND, 0);
    filetime::set_file_mtime(&probe, far).unwrap();
    if filetime::FileTime::from_last_modification_time(&fs::metadata(&probe).unwrap()) == far {
        eprintln!("SKIPPED: this filesystem stores year 9999, nothing is clamped");
        return;
    }
    fs::remove_file(&probe).unwrap();
    let case = small_case(&fx.cases(), "FAR-1");
    for i in 0..25 {
        case.file(&format!("far/f{i:02}"), b"x");
    }
    case.stamp_times(1_600_000_000);
    let vault = craft_json(&fx, &case, "far", |j| {
        set_mtimes(
            j,
            |p| p == "data" || p.starts_with("data/far"),
            LAST_SECOND,
            999_999_999,
        )
    });
    let dest = fx.dest("far");
    let a = unseal_cmd(&vault, &dest, &fx.key.path)
        .arg("--json")
        .assert()
        .code(0);
    let v = json_of(&a);
    let err = stderr_of(&a);
    let listed = v["mtimes_not_stored"].as_array().unwrap();
    let mut paths: Vec<&str> = listed.iter().map(|e| e["path"].as_str().unwrap()).collect();
    paths.sort();
    let mut want = vec![".".to_string(), "far".to_string()];
    want.extend((0..25).map(|i| format!("far/f{i:02}")));
    want.sort();
    assert_eq!(paths, want);
    for e in listed {
        assert_eq!(e["mtime"], LAST_SECOND);
        assert_eq!(e["mtime_nsec"], 999_999_999);
        let stored = e["stored_mtime"].as_i64().unwrap();
        assert!(stored < LAST_SECOND, "{e}");
        let p = if e["path"] == "." {
            dest.clone()
        } else {
            dest.join(e["path"].as_str().unwrap())
        };
        assert_eq!(fs::symlink_metadata(p).unwrap().mtime(), stored);
    }
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("casevault: warning: "))
        .collect();
    assert_eq!(warnings.len(), 11, "{err}");
    assert!(
        warnings[..10]
            .iter()
            .all(|l| l.contains("9999-12-31T23:59:59.999999999Z")),
        "{err}"
    );
    assert!(warnings[10].contains("17 more"), "{err}");
    // Everything else is exact.
    let untouched = ["a.txt", "sub", "sub/b.txt", "empty_dir"];
    for rel in untouched {
        let (a, b) = (
            fs::metadata(case.path(rel)).unwrap(),
            fs::metadata(dest.join(rel)).unwrap(),
        );
        assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()));
    }

    // Human output: the same stdout line as always, warnings on stderr.
    let dest2 = fx.dest("far-human");
    let a = unseal_cmd(&vault, &dest2, &fx.key.path).assert().code(0);
    assert!(stdout_of(&a).starts_with("unsealed FAR-1: "));
    assert_eq!(
        stderr_of(&a)
            .lines()
            .filter(|l| l.starts_with("casevault: warning: "))
            .count(),
        11
    );
}

/// A vault whose times all fit reports none.
#[test]
fn mtimes_not_stored_is_empty_when_all_fit() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "FIT-1");
    let vault = fx.vault("fit.vault");
    fx.seal(&case.root, &vault, &[]);
    let a = unseal_cmd(&vault, fx.dest("fit"), &fx.key.path)
        .arg("--json")
        .assert()
        .code(0);
    assert_eq!(json_of(&a)["mtimes_not_stored"], serde_json::json!([]));
    assert_eq!(stderr_of(&a), "");
}

/// Issue #10 item 6: seal never writes an mtime outside the years 0000 to
/// 9999 (FORMAT.md §5.4), but a vault holding one (an older casevault
/// could seal it from tmpfs or btrfs) is not damaged: every reader opens
/// it (no panic, no exit 3), and unseal restores the case and names the entry whose time the filesystem
/// did not store.
#[test]
fn mtimes_outside_the_format_range_still_open_and_are_reported() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "RANGE-1");
    for (i, secs) in [LAST_SECOND + 1, FIRST_SECOND - 1, i64::MIN, i64::MAX]
        .into_iter()
        .enumerate()
    {
        let vault = craft_json(&fx, &case, &format!("odd{i}"), |j| {
            set_mtimes(j, |p| p == "data/sub/b.txt", secs, 0)
        });
        verify_cmd(&vault, &fx.key.path).assert().code(0);
        list_cmd(&vault, &fx.key.path).assert().code(0);
        let dest = fx.dest(&format!("odd{i}"));
        let a = unseal_cmd(&vault, &dest, &fx.key.path)
            .arg("--json")
            .assert()
            .code(0);
        let v = json_of(&a);
        let not_stored = v["mtimes_not_stored"].as_array().unwrap();
        assert_eq!(not_stored.len(), 1, "{secs}: {v}");
        assert_eq!(not_stored[0]["path"], "sub/b.txt");
        assert_eq!(not_stored[0]["mtime"], secs);
        assert!(stderr_of(&a).contains("sub/b.txt"), "{}", stderr_of(&a));
        assert_eq!(
            fs::read(dest.join("sub/b.txt")).unwrap(),
            fs::read(case.root.join("sub/b.txt")).unwrap()
        );
    }
    for (i, secs) in [LAST_SECOND, FIRST_SECOND].into_iter().enumerate() {
        let vault = craft_json(&fx, &case, &format!("edge{i}"), |j| {
            set_mtimes(j, |p| p == "data/sub/b.txt", secs, 0)
        });
        verify_cmd(&vault, &fx.key.path).assert().code(0);
    }
}

/// Issue #10 item 6: seal refuses an mtime outside years 0000 to 9999
/// (FORMAT.md §5.4), naming the path, and writes no vault. ext4 cannot
/// hold such times, tmpfs can: the case lives in /dev/shm.
#[test]
fn seal_refuses_mtime_outside_the_format_range() {
    let fx = Fx::new();
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "/dev/shm is needed (CI is set, so this is a failure)"
        );
        eprintln!("SKIPPED: no /dev/shm");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("casevault-it-")
        .tempdir_in(shm)
        .unwrap();
    let set = |p: &Path, secs: i64| {
        filetime::set_symlink_file_times(
            p,
            filetime::FileTime::from_unix_time(secs, 0),
            filetime::FileTime::from_unix_time(secs, 0),
        )
        .unwrap();
        assert_eq!(
            fs::symlink_metadata(p).unwrap().mtime(),
            secs,
            "tmpfs stores it"
        );
    };
    for (i, (rel, secs)) in [
        ("sub/b.txt", LAST_SECOND + 1),
        ("sub", FIRST_SECOND - 1),
        ("link", 1i64 << 40),
    ]
    .into_iter()
    .enumerate()
    {
        let case = small_case(tmp.path(), &format!("SHM-{i}"));
        case.symlink("link", "a.txt");
        set(&case.path(rel), secs);
        let vault = fx.vault(&format!("shm{i}.vault"));
        let a = seal_cmd(&case.root, &vault, &fx.key.recipient)
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert_error_message(&err);
        assert!(
            err.contains(&*case.path(rel).to_string_lossy()) && err.contains("mtime"),
            "{err}"
        );
        assert_eq!(fs::read_dir(fx.out()).unwrap().count(), 0, "no vault");
    }
    // The last second of year 9999 is within the range.
    let case = small_case(tmp.path(), "SHM-EDGE");
    set(&case.path("a.txt"), LAST_SECOND);
    fx.seal(&case.root, &fx.vault("edge.vault"), &[]);
}

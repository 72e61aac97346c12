//! Post-quantum `mlkem768x25519` recipients (issue #7): `keygen --pq`, seal
//! and unseal round trips, the rule that PQ and classic recipients are never
//! mixed, and interop both ways with typage (`age-encryption` 0.3.1, an
//! independent implementation by age's author; installed by .ci/run into
//! `target/typage`, driven by `tests/typage/typage.mjs`).

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use crate::util::*;

/// `casevault keygen --pq -o DIR/NAME`; returns (path, recipient).
fn pq_key(dir: &Path, name: &str) -> (PathBuf, String) {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let a = casevault()
        .args(["keygen", "--pq", "-o"])
        .arg(&path)
        .assert()
        .code(0);
    let recipient = stdout_of(&a).trim().to_string();
    (path, recipient)
}

/// The stanza types of an age header (binary vault), without grease.
fn stanza_types(vault: &Path) -> Vec<String> {
    let bytes = fs::read(vault).unwrap();
    let end = bytes
        .windows(4)
        .position(|w| w == b"\n---")
        .expect("age header ends with ---");
    let header = std::str::from_utf8(&bytes[..end]).expect("header is text");
    assert!(header.starts_with("age-encryption.org/v1\n"), "{header}");
    header
        .lines()
        .filter_map(|l| l.strip_prefix("-> "))
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        // age adds a random "grease" stanza some of the time.
        .filter(|t| !t.ends_with("-grease"))
        .collect()
}

/// typage's install directory, or None (skip) locally; under CI a missing
/// node or package is a failure.
fn typage() -> Option<(PathBuf, PathBuf)> {
    let node = tool("node")?;
    let dir = std::env::var_os("CASEVAULT_TYPAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/typage"));
    let pkg = dir.join("node_modules/age-encryption/package.json");
    match fs::read_to_string(&pkg) {
        Ok(text) if text.contains("\"version\": \"0.3.1\"") => Some((node, dir)),
        _ if std::env::var_os("CI").is_some() => panic!(
            "typage age-encryption@0.3.1 not found at {} (CI is set, so this is a failure; \
             run `npm install --prefix target/typage age-encryption@0.3.1`)",
            pkg.display()
        ),
        _ => {
            eprintln!(
                "SKIPPED: typage not installed at {} \
                 (npm install --prefix target/typage age-encryption@0.3.1)",
                dir.display()
            );
            None
        }
    }
}

/// Run `node tests/typage/typage.mjs ARGS…`, asserting success.
fn typage_run(t: &(PathBuf, PathBuf), args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/typage/typage.mjs");
    run_tool(
        Command::new(&t.0)
            .arg(script)
            .args(args)
            .env("TYPAGE_DIR", &t.1),
    )
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn keygen_pq_writes_an_age_keygen_pq_identity_file() {
    let fx = Fx::new();
    let (path, recipient) = pq_key(&fx.root().join("k"), "pq.txt");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("# created: ") && lines[0].ends_with('Z'));
    assert_eq!(lines[1], format!("# public key: {recipient}"));
    assert!(recipient.starts_with("age1pq1"), "{recipient}");
    // 1216 bytes of key in Bech32: 6 + 1 + ceil(1216*8/5) + 6 characters.
    assert_eq!(recipient.len(), 7 + 1946 + 6);
    assert!(lines[2].starts_with("AGE-SECRET-KEY-PQ-1"), "{}", lines[2]);
    assert_eq!(lines[2].len(), 19 + 52 + 6);
    // The identity derives the printed recipient in the crate…
    let id = casevault::pq::Identity::from_str(lines[2]).unwrap();
    assert_eq!(id.to_public().to_string(), recipient);
    // …and in typage, an independent implementation.
    if let Some(t) = typage() {
        let out = typage_run(&t, &[os("recipient"), os(lines[2])]);
        assert_eq!(String::from_utf8(out).unwrap().trim(), recipient);
    }
    // Without -o the identity file text goes to stdout.
    let a = casevault().args(["keygen", "--pq"]).assert().code(0);
    let out = stdout_of(&a);
    assert_eq!(out.lines().count(), 3);
    assert!(out
        .lines()
        .nth(2)
        .unwrap()
        .starts_with("AGE-SECRET-KEY-PQ-1"));
}

#[test]
fn pq_seal_unseal_round_trip() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "case-pq");
    let (key, recipient) = pq_key(&fx.root().join("k"), "pq.txt");
    let vault = fx.vault("pq.vault");
    casevault()
        .arg("seal")
        .arg(&case.root)
        .arg("-o")
        .arg(&vault)
        .args(["-r", &recipient])
        .assert()
        .code(0);
    assert_eq!(stanza_types(&vault), vec!["mlkem768x25519"]);
    let dest = fx.dest("case-pq");
    unseal_cmd(&vault, &dest, &key).assert().code(0);
    assert_same_tree(&case.root, &dest, true);
    verify_cmd(&vault, &key).assert().code(0);
    // A classic identity does not open it: exit 4, nothing written.
    fx.unseal_fails(&vault, &fx.dest("wrong"), 4, &[]);
}

#[test]
fn pq_recipients_file_and_mixed_identity_file() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "case-r");
    let (k1, r1) = pq_key(&fx.root().join("k"), "one.txt");
    let (k2, r2) = pq_key(&fx.root().join("k"), "two.txt");
    let rfile = fx.root().join("recipients.txt");
    fs::write(&rfile, format!("# two investigators\n{r1}\n\n{r2}\n")).unwrap();
    let vault = fx.vault("r.vault");
    casevault()
        .arg("seal")
        .arg(&case.root)
        .arg("-o")
        .arg(&vault)
        .arg("-R")
        .arg(&rfile)
        .assert()
        .code(0);
    assert_eq!(
        stanza_types(&vault),
        vec!["mlkem768x25519", "mlkem768x25519"]
    );
    // An identity file holding a classic identity and a PQ one (as `cat`
    // of two age-keygen files gives) opens it.
    let both = fx.root().join("both.txt");
    let text = fs::read_to_string(&fx.key.path).unwrap() + &fs::read_to_string(&k2).unwrap();
    write_private(&both, text);
    for (i, key) in [&k1, &both].into_iter().enumerate() {
        let dest = fx.dest(&format!("d{i}"));
        unseal_cmd(&vault, &dest, key).assert().code(0);
        assert_same_tree(&case.root, &dest, true);
    }
    // A damaged PQ identity line is refused with its line number (exit 1).
    let bad = fx.root().join("bad.txt");
    let mut t = fs::read_to_string(&k1).unwrap();
    t = t.replace("AGE-SECRET-KEY-PQ-1", "AGE-SECRET-KEY-PQ-1Q");
    write_private(&bad, t);
    let a = verify_cmd(&vault, &bad).assert().code(1);
    assert!(stderr_of(&a).contains("line 3"), "{}", stderr_of(&a));
}

/// CLARIFICATIONS "Keys": mixing post-quantum and classic recipients is
/// refused with exit 1 and a message naming the rule; no vault is written.
#[test]
fn pq_and_classic_recipients_are_never_mixed() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "case-mix");
    let (_, pq) = pq_key(&fx.root().join("k"), "pq.txt");
    let classic = fx.key.recipient.clone();
    let rfile = fx.root().join("mixed.txt");
    fs::write(&rfile, format!("{classic}\n{pq}\n")).unwrap();
    let attempts: Vec<Vec<String>> = vec![
        vec!["-r".into(), pq.clone(), "-r".into(), classic.clone()],
        vec!["-r".into(), classic.clone(), "-r".into(), pq.clone()],
        vec!["-R".into(), rfile.display().to_string()],
    ];
    for args in attempts {
        let before = snapshot(fx.root());
        let vault = fx.vault("mixed.vault");
        let a = casevault()
            .arg("seal")
            .arg(&case.root)
            .arg("-o")
            .arg(&vault)
            .args(&args)
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(
            err.contains("post-quantum recipients (age1pq1…) cannot be mixed with classic"),
            "{err}"
        );
        assert_error_message(&err);
        assert!(!vault.exists());
        assert_snapshot_unchanged(fx.root(), &before);
    }
}

/// Issue #11: sweep loads -r/-R through seal's loader, so a mixed set is
/// refused before the run starts (seal's message, exit 1), not per case:
/// the store is left exactly as it was, without even a lock file.
#[test]
fn sweep_refuses_mixed_recipients_up_front() {
    let fx = Fx::new();
    let inbox = fx.root().join("inbox");
    small_case(&inbox, "case-mix");
    let store = fx.root().join("store");
    fs::create_dir(&store).unwrap();
    let (_, pq) = pq_key(&fx.root().join("k"), "pq.txt");
    let rfile = fx.root().join("mixed.txt");
    fs::write(&rfile, format!("{}\n{pq}\n", fx.key.recipient)).unwrap();
    let before = snapshot(fx.root());
    let a = casevault()
        .arg("sweep")
        .arg(&inbox)
        .arg("-o")
        .arg(&store)
        .arg("-R")
        .arg(&rfile)
        .assert()
        .code(1)
        .stdout("");
    let err = stderr_of(&a);
    assert!(
        err.contains("post-quantum recipients (age1pq1…) cannot be mixed with classic"),
        "{err}"
    );
    assert_error_message(&err);
    assert_snapshot_unchanged(fx.root(), &before);
}

/// typage decrypts a vault casevault sealed to a typage-made `age1pq1…`
/// recipient; the plaintext is the zstd-compressed tar of the case.
#[test]
fn typage_opens_a_casevault_pq_vault() {
    let Some(t) = typage() else { return };
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "case-t");
    let out = String::from_utf8(typage_run(&t, &[os("keygen")])).unwrap();
    let mut lines = out.lines();
    let (identity, recipient) = (lines.next().unwrap(), lines.next().unwrap());
    assert!(recipient.starts_with("age1pq1"));
    let idfile = fx.root().join("typage.key");
    write_private(&idfile, format!("{identity}\n"));
    for armor in [false, true] {
        let vault = fx.vault(&format!("t{armor}.vault"));
        let mut cmd = casevault();
        cmd.arg("seal")
            .arg(&case.root)
            .arg("-o")
            .arg(&vault)
            .args(["-r", recipient]);
        if armor {
            cmd.arg("--armor");
        }
        cmd.assert().code(0);
        let plain = fx.root().join(format!("t{armor}.plain"));
        typage_run(
            &t,
            &[
                os("decrypt"),
                idfile.as_os_str(),
                vault.as_os_str(),
                plain.as_os_str(),
            ],
        );
        let tar_bytes = plaintext_tar(&fs::read(&plain).unwrap());
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        let mut seen = 0;
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().into_owned();
            let Ok(rel) = p.strip_prefix("case-t/data") else {
                continue;
            };
            if e.header().entry_type().is_file() {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                assert_eq!(data, fs::read(case.root.join(rel)).unwrap(), "{rel:?}");
                seen += 1;
            }
        }
        assert_eq!(seen, 4, "a.txt, sub/b.txt, sub/c.bin, empty.txt");
    }
}

/// A file typage encrypts to a `casevault keygen --pq` recipient opens with
/// casevault: the plaintext of a classic vault (read with the age crate)
/// re-encrypted by typage, binary and armored.
#[test]
fn casevault_opens_a_typage_pq_file() {
    let Some(t) = typage() else { return };
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "case-u");
    let classic = fx.vault("classic.vault");
    fx.seal(&case.root, &classic, &[]);
    let plain = fx.root().join("classic.plain");
    fs::write(&plain, decrypt_vault(&classic, &fx.key)).unwrap();
    let (key, recipient) = pq_key(&fx.root().join("k"), "pq.txt");
    for cmd in ["encrypt", "encrypt-armor"] {
        let vault = fx.vault(&format!("{cmd}.vault"));
        typage_run(
            &t,
            &[
                os(cmd),
                os(&recipient),
                plain.as_os_str(),
                vault.as_os_str(),
            ],
        );
        let dest = fx.dest(cmd);
        unseal_cmd(&vault, &dest, &key).assert().code(0);
        assert_same_tree(&case.root, &dest, true);
    }
}

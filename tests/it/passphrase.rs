//! Passphrases (issue #7): identity files encrypted with `age -p` open
//! vaults for unseal, verify, list and rekey; `seal --passphrase` makes a
//! vault stock `age -d` opens. The passphrase comes only from the terminal,
//! so these tests run the programs under `script` (a pseudo-terminal) and
//! type into it; without a terminal the commands must refuse with exit 1
//! and write nothing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use age::secrecy::SecretString;

use crate::util::*;

const PASS: &str = "correct horse battery staple";

/// Quote one argument for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Run `program args…` under `script` (so it has a terminal), typing each
/// of `lines` after a pause, and return its exit code and what the terminal
/// showed. `None` when `script` is missing (the test is skipped).
pub(crate) fn on_terminal(
    dir: &Path,
    program: &Path,
    args: &[&str],
    lines: &[&str],
) -> Option<(i32, String)> {
    let script = tool("script")?;
    let cmd = std::iter::once(program.to_str().expect("UTF-8 path"))
        .chain(args.iter().copied())
        .map(sh_quote)
        .collect::<Vec<_>>()
        .join(" ");
    let log = dir.join(format!("terminal-{}.log", std::process::id()));
    let mut child = Command::new(script)
        .env(crate::util::PANIC_LOG_ENV, crate::util::panic_log())
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Keep stdin open until the program exits: its end would reach the
    // program as end of input on the terminal.
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        std::thread::sleep(Duration::from_millis(1500));
        // The program may already have exited (a refusal): ignore EPIPE.
        let _ = stdin.write_all(format!("{line}\n").as_bytes());
        let _ = stdin.flush();
    }
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(180) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("`{cmd}` under script did not exit within 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let shown = String::from_utf8_lossy(&fs::read(&log).unwrap()).into_owned();
    fs::remove_file(&log).unwrap();
    eprintln!("{cmd}:\n{shown}");
    Some((status.code().expect("exit code"), shown))
}

pub(crate) fn casevault_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_casevault"))
}

/// `key` encrypted with a passphrase by the stock `age -p` (binary), mode
/// 0600. `None` when age or script is missing.
fn stock_encrypted_identity(fx: &Fx) -> Option<PathBuf> {
    let age = tool("age")?;
    let out = fx.root().join("keys/key.age");
    let (code, shown) = on_terminal(
        fx.root(),
        &age,
        &[
            "-p",
            "-o",
            out.to_str().unwrap(),
            fx.key.path.to_str().unwrap(),
        ],
        &[PASS, PASS],
    )?;
    assert_eq!(code, 0, "age -p failed: {shown}");
    assert!(fs::read(&out)
        .unwrap()
        .starts_with(b"age-encryption.org/v1\n-> scrypt "));
    fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    Some(out)
}

/// `key` encrypted with a passphrase by the age crate, ASCII-armored: the
/// same format as `age -a -p`.
fn crate_encrypted_identity_armored(fx: &Fx) -> PathBuf {
    let enc = age::Encryptor::with_user_passphrase(SecretString::from(PASS.to_string()));
    let mut buf = Vec::new();
    let armor =
        age::armor::ArmoredWriter::wrap_output(&mut buf, age::armor::Format::AsciiArmor).unwrap();
    let mut w = enc.wrap_output(armor).unwrap();
    w.write_all(&fs::read(&fx.key.path).unwrap()).unwrap();
    w.finish().unwrap().finish().unwrap();
    let out = fx.root().join("keys/key.age.asc");
    write_private(&out, &buf);
    out
}

#[test]
fn stock_age_p_identity_opens_vault_for_unseal_verify_list_and_rekey() {
    let fx = Fx::new();
    let Some(key_age) = stock_encrypted_identity(&fx) else {
        return;
    };
    let case = small_case(&fx.cases(), "PP-1");
    let vault = fx.vault("pp.vault");
    fx.seal(&case.root, &vault, &[]);
    let bin = casevault_bin();
    let k = key_age.to_str().unwrap();
    let v = vault.to_str().unwrap();

    let dest = fx.dest("restored");
    let (code, shown) = on_terminal(
        fx.root(),
        &bin,
        &["unseal", v, "-i", k, "-o", dest.to_str().unwrap(), "-q"],
        &[PASS],
    )
    .unwrap();
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("Enter passphrase for identity file"),
        "{shown}"
    );
    assert_same_tree(&case.root, &dest, true);

    let (code, shown) =
        on_terminal(fx.root(), &bin, &["verify", v, "-i", k, "-q"], &[PASS]).unwrap();
    assert_eq!(code, 0, "{shown}");

    let (code, shown) = on_terminal(fx.root(), &bin, &["list", v, "-i", k, "-q"], &[PASS]).unwrap();
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("sub/c.bin"), "{shown}");

    let other = fx.new_key("other.txt");
    let rekeyed = fx.vault("rekeyed.vault");
    let (code, shown) = on_terminal(
        fx.root(),
        &bin,
        &[
            "rekey",
            v,
            "-i",
            k,
            "-r",
            &other.recipient,
            "-o",
            rekeyed.to_str().unwrap(),
        ],
        &[PASS],
    )
    .unwrap();
    assert_eq!(code, 0, "{shown}");
    verify_cmd(&rekeyed, &other.path).assert().code(0);
}

#[test]
fn armored_passphrase_identity_opens_vault() {
    let fx = Fx::new();
    if tool("script").is_none() {
        return;
    }
    let key_asc = crate_encrypted_identity_armored(&fx);
    assert!(fs::read(&key_asc)
        .unwrap()
        .starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
    let case = small_case(&fx.cases(), "PP-2");
    let vault = fx.vault("pp.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("restored");
    let (code, shown) = on_terminal(
        fx.root(),
        &casevault_bin(),
        &[
            "unseal",
            vault.to_str().unwrap(),
            "-i",
            key_asc.to_str().unwrap(),
            "-o",
            dest.to_str().unwrap(),
            "-q",
        ],
        &[PASS],
    )
    .unwrap();
    assert_eq!(code, 0, "{shown}");
    assert_same_tree(&case.root, &dest, true);
}

#[test]
fn passphrase_identity_without_terminal_or_with_wrong_passphrase_fails_and_writes_nothing() {
    let fx = Fx::new();
    let key_asc = crate_encrypted_identity_armored(&fx);
    let case = small_case(&fx.cases(), "PP-3");
    let vault = fx.vault("pp.vault");
    fx.seal(&case.root, &vault, &[]);
    let dest = fx.dest("restored");

    // No terminal: stdin is not one (assert_cmd gives /dev/null).
    let before = snapshot(fx.root());
    let a = casevault()
        .arg("unseal")
        .arg(&vault)
        .arg("-i")
        .arg(&key_asc)
        .arg("-o")
        .arg(&dest)
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert_error_message(&err);
    assert!(err.contains("no terminal"), "{err}");
    assert_eq!(
        snapshot(fx.root()),
        before,
        "a refused unseal wrote something"
    );

    // Wrong passphrase on the terminal.
    let Some((code, shown)) = on_terminal(
        fx.root(),
        &casevault_bin(),
        &[
            "unseal",
            vault.to_str().unwrap(),
            "-i",
            key_asc.to_str().unwrap(),
            "-o",
            dest.to_str().unwrap(),
        ],
        &["not the passphrase"],
    ) else {
        return;
    };
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("wrong passphrase"), "{shown}");
    assert_eq!(
        snapshot(fx.root()),
        before,
        "a failed unseal wrote something"
    );
}

#[test]
fn seal_passphrase_round_trips_through_stock_age() {
    let fx = Fx::new();
    let Some(age) = tool("age") else {
        return;
    };
    let case = small_case(&fx.cases(), "PP-4");
    let vault = fx.vault("pp.vault");
    let Some((code, shown)) = on_terminal(
        fx.root(),
        &casevault_bin(),
        &[
            "seal",
            case.root.to_str().unwrap(),
            "-o",
            vault.to_str().unwrap(),
            "--passphrase",
            "-q",
        ],
        &[PASS, PASS],
    ) else {
        return;
    };
    assert_eq!(code, 0, "{shown}");
    assert!(fs::read(&vault)
        .unwrap()
        .starts_with(b"age-encryption.org/v1\n-> scrypt "));

    let plain = fx.root().join("pp.tar.zst");
    let (code, shown) = on_terminal(
        fx.root(),
        &age,
        &["-d", "-o", plain.to_str().unwrap(), vault.to_str().unwrap()],
        &[PASS],
    )
    .unwrap();
    assert_eq!(code, 0, "age -d failed: {shown}");
    let tar = zstd::decode_all(fs::File::open(&plain).unwrap()).unwrap();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n == "PP-4/data/sub/c.bin"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "PP-4/bagit.txt"), "{names:?}");

    // casevault opens it too: unseal/verify --passphrase; a wrong one is
    // "no matching key" (4) with nothing at DEST.
    let dest = fx.dest("pp");
    let (code, shown) = on_terminal(
        fx.root(),
        &casevault_bin(),
        &[
            "unseal",
            vault.to_str().unwrap(),
            "-o",
            dest.to_str().unwrap(),
            "--passphrase",
            "-q",
        ],
        &[PASS],
    )
    .unwrap();
    assert_eq!(code, 0, "{shown}");
    assert_same_tree(&case.root, &dest, true);
    let (code, shown) = on_terminal(
        fx.root(),
        &casevault_bin(),
        &["verify", vault.to_str().unwrap(), "--passphrase", "-q"],
        &[PASS],
    )
    .unwrap();
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("OK PP-4:"), "{shown}");
    let wrong = fx.dest("pp-wrong");
    let (code, shown) = on_terminal(
        fx.root(),
        &casevault_bin(),
        &[
            "unseal",
            vault.to_str().unwrap(),
            "-o",
            wrong.to_str().unwrap(),
            "--passphrase",
            "-q",
        ],
        &["not the passphrase"],
    )
    .unwrap();
    assert_eq!(code, 4, "{shown}");
    assert!(!wrong.exists());
    // Without a terminal: exit 1, nothing written.
    casevault()
        .args([
            "unseal",
            vault.to_str().unwrap(),
            "-o",
            wrong.to_str().unwrap(),
            "--passphrase",
        ])
        .assert()
        .code(1);
    assert!(!wrong.exists());
}

#[test]
fn seal_passphrase_refusals_write_nothing() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "PP-5");
    let vault = fx.vault("pp.vault");
    let before = snapshot(fx.root());

    // No terminal: exit 1.
    let a = casevault()
        .arg("seal")
        .arg(&case.root)
        .arg("-o")
        .arg(&vault)
        .arg("--passphrase")
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert_error_message(&err);
    assert!(err.contains("no terminal"), "{err}");
    assert_eq!(snapshot(fx.root()), before);

    // With recipients: a usage error (age forbids mixing scrypt with any
    // other recipient), exit 2.
    let a = casevault()
        .arg("seal")
        .arg(&case.root)
        .arg("-o")
        .arg(&vault)
        .arg("--passphrase")
        .arg("-r")
        .arg(&fx.key.recipient)
        .assert()
        .code(2);
    assert!(
        stderr_of(&a).contains("cannot be used with"),
        "{}",
        stderr_of(&a)
    );
    assert_eq!(snapshot(fx.root()), before);

    // The confirmation differs: exit 1.
    let Some((code, shown)) = on_terminal(
        fx.root(),
        &casevault_bin(),
        &[
            "seal",
            case.root.to_str().unwrap(),
            "-o",
            vault.to_str().unwrap(),
            "--passphrase",
        ],
        &[PASS, "something else"],
    ) else {
        return;
    };
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("do not match"), "{shown}");
    assert_eq!(snapshot(fx.root()), before);
}

//! Key hygiene (issue #6): identity files that group or others can read are
//! refused like ssh refuses such private keys, unless
//! `--allow-insecure-identity` is given; error paths never print key
//! material. (keygen's 0600 and no-overwrite rules are in keygen.rs.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::util::*;

/// The commands that read identity files, as argument lists that
/// succeed with a good key. `{DEST}` and `{NEW}` are fresh outputs.
fn commands(fx: &Fx, vault: &Path, n: usize) -> Vec<(&'static str, Vec<std::ffi::OsString>)> {
    let dest = fx.dest(&format!("d{n}"));
    let new = fx.vault(&format!("new{n}.vault"));
    let os = |s: &str| std::ffi::OsString::from(s);
    vec![
        (
            "unseal",
            vec![os("unseal"), vault.into(), os("-o"), dest.into_os_string()],
        ),
        ("verify", vec![os("verify"), vault.into()]),
        (
            "salvage",
            vec![
                os("salvage"),
                vault.into(),
                os("-o"),
                fx.dest(&format!("s{n}")).into_os_string(),
            ],
        ),
        ("list", vec![os("list"), vault.into()]),
        (
            "rekey",
            vec![
                os("rekey"),
                vault.into(),
                os("-o"),
                new.into_os_string(),
                os("-r"),
                os(&fx.key.recipient),
            ],
        ),
    ]
}

fn sealed(fx: &Fx) -> PathBuf {
    let case = small_case(&fx.cases(), "KH-1");
    let vault = fx.vault("kh.vault");
    fx.seal(&case.root, &vault, &[]);
    vault
}

#[test]
fn identity_readable_by_group_or_others_is_refused_naming_the_fix() {
    let fx = Fx::new();
    let vault = sealed(&fx);
    let key = &fx.key.path;
    for (n, mode) in [0o644, 0o640, 0o604, 0o620, 0o601].into_iter().enumerate() {
        fs::set_permissions(key, fs::Permissions::from_mode(mode)).unwrap();
        for (name, args) in commands(&fx, &vault, n) {
            let before = snapshot(fx.root());
            let a = casevault().args(&args).arg("-i").arg(key).assert().code(1);
            let err = stderr_of(&a);
            assert_error_message(&err);
            let shown = key.display().to_string();
            assert!(
                err.contains(&format!("permissions {mode:04o}")) && err.contains("too open"),
                "{name} with a {mode:o} key: {err}"
            );
            assert!(
                err.contains(&format!("chmod 600 {shown}")),
                "{name}: the message must name the file and the fix: {err}"
            );
            assert!(err.contains("--allow-insecure-identity"), "{err}");
            assert!(
                !err.contains(&fx.key.secret),
                "{name}: the secret was printed"
            );
            assert_snapshot_unchanged(fx.root(), &before);
        }
    }
}

#[test]
fn allow_insecure_identity_overrides_the_check() {
    let fx = Fx::new();
    let vault = sealed(&fx);
    fs::set_permissions(&fx.key.path, fs::Permissions::from_mode(0o644)).unwrap();
    for (name, args) in commands(&fx, &vault, 0) {
        let a = casevault()
            .args(&args)
            .arg("-i")
            .arg(&fx.key.path)
            .arg("--allow-insecure-identity")
            .assert();
        assert_eq!(
            a.get_output().status.code(),
            Some(0),
            "{name} --allow-insecure-identity: {}",
            stderr_of(&a)
        );
    }
}

#[test]
fn identity_modes_0600_and_0400_are_accepted() {
    let fx = Fx::new();
    let vault = sealed(&fx);
    for (n, mode) in [0o600, 0o400].into_iter().enumerate() {
        fs::set_permissions(&fx.key.path, fs::Permissions::from_mode(mode)).unwrap();
        for (name, args) in commands(&fx, &vault, 10 + n) {
            let a = casevault().args(&args).arg("-i").arg(&fx.key.path).assert();
            assert_eq!(
                a.get_output().status.code(),
                Some(0),
                "{name} with a {mode:o} key: {}",
                stderr_of(&a)
            );
        }
    }
}

/// Every 16-character window of `secret` (from its data part): none may
/// appear in any output.
fn assert_no_key_material(out: &str, secret: &str, what: &str) {
    let upper = out.to_uppercase();
    let body = secret.to_uppercase();
    let chars: Vec<char> = body.chars().collect();
    for w in chars.windows(16).skip(15) {
        let s: String = w.iter().collect();
        assert!(
            !upper.contains(&s),
            "{what}: output contains key material {s:?}:\n{out}"
        );
    }
}

#[test]
fn error_paths_never_print_key_material() {
    let fx = Fx::new();
    let vault = sealed(&fx);
    let secret = fx.key.secret.clone();
    let keys = fx.root().join("keys");
    // One character changed in the data part: the bech32 checksum fails.
    let pos = secret.len() - 10;
    let flip = if &secret[pos..pos + 1] == "Q" {
        "P"
    } else {
        "Q"
    };
    let typo = format!("{}{flip}{}", &secret[..pos], &secret[pos + 1..]);
    assert_ne!(typo, secret);
    // A post-quantum identity with a typo, from a real one.
    let pq_path = keys.join("pq.txt");
    casevault()
        .args(["keygen", "--pq", "-o"])
        .arg(&pq_path)
        .assert()
        .code(0);
    let pq_text = fs::read_to_string(&pq_path).unwrap();
    let pq_secret = pq_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-PQ-1"))
        .unwrap()
        .to_string();
    let pq_typo = pq_secret.replacen("AGE-SECRET-KEY-PQ-1", "AGE-SECRET-KEY-PQ-1QQ", 1);

    let cases: Vec<(&str, String, &str)> = vec![
        ("typo", format!("# public key: x\n{typo}\n"), &secret),
        ("typo-lower", format!("{}\n", typo.to_lowercase()), &secret),
        (
            "good-then-garbage",
            format!("{secret}\nAGE-SECRET-KEY-1 {secret}\n"),
            &secret,
        ),
        ("missing-prefix", format!("{}\n", &secret[4..]), &secret),
        ("pq-typo", format!("{pq_typo}\n"), &pq_secret),
        (
            "ssh-broken",
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
                &secret[14..]
            ),
            &secret,
        ),
    ];
    for (i, (label, text, key_material)) in cases.iter().enumerate() {
        let f = keys.join(format!("bad-{label}.txt"));
        write_private(&f, text);
        for (name, args) in commands(&fx, &vault, 20 + i) {
            let a = casevault().args(&args).arg("-i").arg(&f).assert();
            let code = a.get_output().status.code();
            assert_eq!(code, Some(1), "{label} via {name}: {}", stderr_of(&a));
            let err = stderr_of(&a);
            assert_error_message(&err);
            assert_no_key_material(&err, key_material, &format!("{label} via {name}"));
            assert_no_key_material(&stdout_of(&a), key_material, label);
        }
    }
    // Also when the file is refused for its mode, and when it is the wrong
    // key (exit 4) or the vault is damaged (exit 3).
    let other = fx.new_key("other.txt");
    fs::set_permissions(&other.path, fs::Permissions::from_mode(0o644)).unwrap();
    let a = casevault()
        .args(["verify"])
        .arg(&vault)
        .arg("-i")
        .arg(&other.path)
        .assert()
        .code(1);
    assert_no_key_material(&stderr_of(&a), &other.secret, "insecure mode");
    fs::set_permissions(&other.path, fs::Permissions::from_mode(0o600)).unwrap();
    let a = casevault()
        .args(["verify"])
        .arg(&vault)
        .arg("-i")
        .arg(&other.path)
        .assert()
        .code(4);
    assert_no_key_material(&stderr_of(&a), &other.secret, "wrong key");
    let mut bytes = fs::read(&vault).unwrap();
    let n = bytes.len();
    bytes[n - 30] ^= 1;
    fs::write(&vault, &bytes).unwrap();
    let a = casevault()
        .args(["verify"])
        .arg(&vault)
        .arg("-i")
        .arg(&fx.key.path)
        .arg("--json")
        .assert()
        .code(3);
    assert_no_key_material(&stderr_of(&a), &secret, "damaged vault");
    assert_no_key_material(&stdout_of(&a), &secret, "damaged vault");
}

/// Issue #17 item 6: a recipients file (public keys, world-readable by
/// design) given to `-i` by mistake is named as such, never met with
/// "chmod 600" advice that would cut the sweep account off it; a file with
/// no key at all is "not an identity file". Each command, nothing written.
#[test]
fn recipients_file_given_as_identity_is_named_not_judged_by_its_mode() {
    let fx = Fx::new();
    let vault = sealed(&fx);
    let recipients = fx.root().join("keys/recipients.txt");
    fs::write(
        &recipients,
        format!("# lab key\n{}\n\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB/VHtZ6nq+y test\n", fx.key.recipient),
    )
    .unwrap();
    fs::set_permissions(&recipients, fs::Permissions::from_mode(0o644)).unwrap();
    let notes = fx.root().join("keys/notes.txt");
    fs::write(&notes, "just some notes\n").unwrap();
    fs::set_permissions(&notes, fs::Permissions::from_mode(0o644)).unwrap();
    for (n, (file, want)) in [
        (
            &recipients,
            "is a recipients file (public keys), not an identity",
        ),
        (&notes, "is not an identity file"),
    ]
    .into_iter()
    .enumerate()
    {
        for (name, args) in commands(&fx, &vault, n) {
            let before = snapshot(fx.root());
            let a = casevault().args(&args).arg("-i").arg(file).assert().code(1);
            let err = stderr_of(&a);
            assert_error_message(&err);
            assert!(
                err.contains(&file.display().to_string()) && err.contains(want),
                "{name}: {err}"
            );
            assert!(
                !err.contains("chmod") && !err.contains("too open"),
                "{name}: {err}"
            );
            assert_snapshot_unchanged(fx.root(), &before);
        }
    }
    // A real identity that is too open is still refused for its mode.
    fs::set_permissions(&fx.key.path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = stderr_of(
        &casevault()
            .args(["verify".as_ref(), vault.as_os_str(), "-i".as_ref()])
            .arg(&fx.key.path)
            .assert()
            .code(1),
    );
    assert!(err.contains("too open"), "{err}");
}

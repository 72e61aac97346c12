//! Issue #5, signatures: `seal --sign`, `verify --signers`, and interop
//! with stock `ssh-keygen -Y sign|verify` both ways. Every failure case
//! asserts its exact exit code.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// An OpenSSH key pair made by the stock `ssh-keygen` (None: skipped
/// locally; under CI a missing tool fails in `tool`).
struct SshKey {
    path: PathBuf,
    public: String,
}

fn ssh_keygen() -> Option<PathBuf> {
    tool("ssh-keygen")
}

fn ssh_key(dir: &Path, name: &str, kind: &str, comment: &str, pass: &str) -> SshKey {
    let path = dir.join(name);
    fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", pass, "-C", comment, "-f"])
        .arg(&path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run_tool(&mut cmd);
    let public = fs::read_to_string(format!("{}.pub", path.display())).unwrap();
    SshKey {
        path,
        public: public.trim().to_string(),
    }
}

/// An allowed_signers file with `lines` ("PRINCIPALS [OPTIONS]", key).
fn allowed(dir: &Path, name: &str, lines: &[(&str, &SshKey)]) -> PathBuf {
    let p = dir.join(name);
    let text: String = lines
        .iter()
        .map(|(who, k)| format!("{who} {}\n", k.public))
        .collect();
    fs::write(&p, text).unwrap();
    p
}

/// A fixture with a small case, alice's and mallory's keys, and an
/// allowed_signers file trusting alice@lab.
struct Sx {
    fx: Fx,
    case: PathBuf,
    alice: SshKey,
    mallory: SshKey,
    allowed: PathBuf,
}

fn sx() -> Option<Sx> {
    ssh_keygen()?;
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "SIG-1").root.clone();
    let keys = fx.root().join("ssh");
    let alice = ssh_key(&keys, "alice", "ed25519", "alice@lab", "");
    let mallory = ssh_key(&keys, "mallory", "ed25519", "mallory@evil", "");
    let allowed = allowed(&keys, "allowed_signers", &[("alice@lab", &alice)]);
    Some(Sx {
        fx,
        case,
        alice,
        mallory,
        allowed,
    })
}

fn sig_of(vault: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sig", vault.display()))
}

/// `verify VAULT --signers FILE --json EXTRA…`: (exit code, JSON, stderr).
fn verify_signed(vault: &Path, signers: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let a = casevault()
        .arg("verify")
        .arg(vault)
        .arg("--signers")
        .arg(signers)
        .arg("--json")
        .args(extra)
        .assert();
    let code = a.get_output().status.code().unwrap();
    (code, json_of(&a), stderr_of(&a))
}

#[test]
fn sign_and_verify_round_trip() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("sig.vault");
    let j =
        s.fx.seal(&s.case, &vault, &["--sign", s.alice.path.to_str().unwrap()]);
    assert_eq!(j["signer"]["principal"], "alice@lab", "{j}");
    assert!(j["signer"]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    assert_eq!(j["signature"], sig_of(&vault).to_str().unwrap());
    assert!(sig_of(&vault).exists());
    let sig_text = fs::read_to_string(sig_of(&vault)).unwrap();
    assert!(sig_text.starts_with("-----BEGIN SSH SIGNATURE-----\n"));

    // Outer only, without a key.
    let (code, v, err) = verify_signed(&vault, &s.allowed, &[]);
    assert_eq!(code, 0, "{err}");
    let sig = &v["signature"];
    assert_eq!(sig["checked"], true);
    assert_eq!(sig["principal"], "alice@lab");
    assert_eq!(sig["fingerprint"], j["signer"]["fingerprint"]);
    assert_eq!(sig["inner_checked"], false);

    // Outer and inner, with a key.
    let key = s.fx.key.path.to_str().unwrap().to_string();
    let (code, v, err) = verify_signed(&vault, &s.allowed, &["-i", &key]);
    assert_eq!(code, 0, "{err}");
    let sig = &v["signature"];
    assert_eq!(sig["inner_checked"], true);
    assert_eq!(sig["inner_principal"], "alice@lab");
    assert_eq!(sig["inner_fingerprint"], j["signer"]["fingerprint"]);

    // Human output names principal and fingerprint.
    let a = casevault()
        .arg("verify")
        .arg(&vault)
        .args(["-i", &key, "--signers"])
        .arg(&s.allowed)
        .assert()
        .code(0);
    let out = stdout_of(&a);
    assert!(
        out.contains("signature ok: VAULT.sig by alice@lab (SHA256:")
            && out.contains("inner signature ok: casevault.sig by alice@lab"),
        "{out}"
    );

    // The signed vault still unseals (format version 2 opens).
    s.fx.unseal(&vault, &s.fx.dest("sig"), &[]);
    assert_same_tree(&s.case, &s.fx.dest("sig"), false);
}

#[test]
fn signed_vault_is_format_version_3_with_signer_and_tag_file() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("v2.vault");
    s.fx.seal(
        &s.case,
        &vault,
        &[
            "--sign",
            s.alice.path.to_str().unwrap(),
            "--signer",
            "alice@example",
        ],
    );
    let tar = plaintext_tar(&decrypt_vault(&vault, &s.fx.key));
    let (entries, _) = parse_tar(&tar);
    let names: Vec<String> = entries.iter().map(|e| e.path()).collect();
    let tail: Vec<&str> = names[names.len() - 7..]
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        tail,
        [
            "SIG-1/bagit.txt",
            "SIG-1/bag-info.txt",
            "SIG-1/casevault.json",
            "SIG-1/casevault.sig",
            "SIG-1/manifest-sha256.txt",
            "SIG-1/casevault-locator.txt",
            "SIG-1/tagmanifest-sha256.txt"
        ]
    );
    let find = |n: &str| {
        entries
            .iter()
            .find(|e| e.path() == format!("SIG-1/{n}"))
            .unwrap()
            .data
            .clone()
    };
    let json: serde_json::Value = serde_json::from_slice(&find("casevault.json")).unwrap();
    assert_eq!(json["version"], 3);
    assert_eq!(json["signer"]["principal"], "alice@example");
    let tm = String::from_utf8(find("tagmanifest-sha256.txt")).unwrap();
    assert!(
        tm.contains(&format!(
            "{}  casevault.sig\n",
            sha256_hex(&find("casevault.sig"))
        )),
        "{tm}"
    );

    // The inner signature checks with stock ssh-keygen over casevault.json.
    let dir = s.fx.root().join("inner");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("casevault.json"), find("casevault.json")).unwrap();
    fs::write(dir.join("casevault.sig"), find("casevault.sig")).unwrap();
    let allowed = allowed(&dir, "allowed", &[("alice@example", &s.alice)]);
    run_tool(
        Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(&allowed)
            .args(["-I", "alice@example", "-n", "casevault-manifest", "-s"])
            .arg(dir.join("casevault.sig"))
            .stdin(fs::File::open(dir.join("casevault.json")).unwrap()),
    );

    // Unsigned vaults stay version 1.
    let plain = s.fx.vault("v1.vault");
    s.fx.seal(&s.case, &plain, &[]);
    let tar = plaintext_tar(&decrypt_vault(&plain, &s.fx.key));
    let (entries, _) = parse_tar(&tar);
    assert!(!entries.iter().any(|e| e.path().ends_with("casevault.sig")));
    assert!(!sig_of(&plain).exists());
}

/// README: `ssh-keygen -Y verify -f allowed_signers -I PRINCIPAL -n
/// casevault-vault -s VAULT.sig < VAULT`.
#[test]
fn stock_ssh_keygen_verifies_casevault_signature() {
    let Some(s) = sx() else { return };
    for (kind, armor) in [("ed25519", false), ("rsa", true)] {
        let key = ssh_key(
            &s.fx.root().join("ssh"),
            &format!("k-{kind}"),
            kind,
            "k@lab",
            "",
        );
        let vault = s.fx.vault(&format!("{kind}.vault"));
        let mut extra = vec!["--sign", key.path.to_str().unwrap()];
        if armor {
            extra.push("--armor");
        }
        s.fx.seal(&s.case, &vault, &extra);
        let allowed = allowed(&s.fx.root().join("ssh"), "k-allowed", &[("k@lab", &key)]);
        let out = run_tool(
            Command::new("ssh-keygen")
                .args(["-Y", "verify", "-f"])
                .arg(&allowed)
                .args(["-I", "k@lab", "-n", "casevault-vault", "-s"])
                .arg(sig_of(&vault))
                .stdin(fs::File::open(&vault).unwrap()),
        );
        eprintln!("{}", String::from_utf8_lossy(&out));
        // And ssh-keygen refuses it for another namespace.
        let st = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(&allowed)
            .args(["-I", "k@lab", "-n", "file", "-s"])
            .arg(sig_of(&vault))
            .stdin(fs::File::open(&vault).unwrap())
            .output()
            .unwrap();
        assert!(!st.status.success());
        // casevault verifies the same pair.
        let (code, v, err) = verify_signed(&vault, &allowed, &[]);
        assert_eq!(code, 0, "{kind}: {err}");
        assert_eq!(v["signature"]["principal"], "k@lab");
    }
}

#[test]
fn ssh_keygen_signature_verifies_with_casevault() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("stock.vault");
    s.fx.seal(&s.case, &vault, &[]);
    run_tool(
        Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", "casevault-vault", "-f"])
            .arg(&s.alice.path)
            .arg(&vault),
    );
    assert!(sig_of(&vault).exists());
    let (code, v, err) = verify_signed(&vault, &s.allowed, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["signature"]["principal"], "alice@lab");
    // A stock signature in another namespace is refused.
    fs::remove_file(sig_of(&vault)).unwrap();
    run_tool(
        Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", "file", "-f"])
            .arg(&s.alice.path)
            .arg(&vault),
    );
    let (code, v, err) = verify_signed(&vault, &s.allowed, &[]);
    assert_eq!(code, 3, "{v}");
    assert!(err.contains("namespace"), "{err}");
}

/// Someone who knows the recipients seals a different case to them: the
/// vault is valid age and a valid bag, but not alice's.
#[test]
fn forged_vault_fails_verify_signers() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("forged.vault");
    s.fx.seal(&s.case, &vault, &["--sign", s.alice.path.to_str().unwrap()]);
    let alice_sig = fs::read(sig_of(&vault)).unwrap();
    let other = small_case(&s.fx.cases(), "SIG-1-forged").root.clone();
    fs::write(other.join("a.txt"), b"forged\n").unwrap();
    let key = s.fx.key.path.to_str().unwrap().to_string();

    // 1. Re-sealed unsigned, alice's old VAULT.sig put back.
    s.fx.seal(&other, &vault, &["--force", "--case-id", "SIG-1"]);
    assert!(!sig_of(&vault).exists(), "a stale VAULT.sig is removed");
    fs::write(sig_of(&vault), &alice_sig).unwrap();
    let (code, v, err) = verify_signed(&vault, &s.allowed, &[]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["ok"], false);
    assert!(err.contains("does not verify"), "{err}");
    let (code, _, err) = verify_signed(&vault, &s.allowed, &["-i", &key]);
    assert_eq!(code, 3);
    assert!(err.contains("no inner signature"), "{err}");

    // 2. Re-sealed and signed with mallory's own key.
    s.fx.seal(
        &other,
        &vault,
        &[
            "--force",
            "--case-id",
            "SIG-1",
            "--sign",
            s.mallory.path.to_str().unwrap(),
            "--signer",
            "alice@lab",
        ],
    );
    let (code, v, err) = verify_signed(&vault, &s.allowed, &["-i", &key]);
    assert_eq!(code, 3, "{v}");
    assert!(err.contains("does not trust"), "{err}");
    assert!(v["signature"]["principal"].is_null());
    assert!(v["signature"]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
}

#[test]
fn unsigned_vault_fails_when_signers_given() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("plain.vault");
    s.fx.seal(&s.case, &vault, &[]);
    let (code, v, err) = verify_signed(&vault, &s.allowed, &[]);
    assert_eq!(code, 3, "{v}");
    assert!(err.contains(".sig is missing"), "{err}");
    assert_error_message(&err);
    // Without --signers: ok, and JSON says signatures were not checked.
    let a = casevault()
        .arg("verify")
        .arg(&vault)
        .arg("--json")
        .assert()
        .code(0);
    let v = json_of(&a);
    assert_eq!(v["signature"]["checked"], false);
    assert_eq!(v["signature"]["outer_present"], false);
}

#[test]
fn signed_vault_without_signers_says_not_checked() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("nc.vault");
    s.fx.seal(&s.case, &vault, &["--sign", s.alice.path.to_str().unwrap()]);
    let a = casevault().arg("verify").arg(&vault).assert().code(0);
    assert!(
        stdout_of(&a).contains("signatures NOT checked"),
        "{}",
        stdout_of(&a)
    );
}

#[test]
fn principal_and_namespace_mismatches_fail() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("p.vault");
    s.fx.seal(&s.case, &vault, &["--sign", s.alice.path.to_str().unwrap()]);
    let dir = s.fx.root().join("ssh");
    // --signer names someone else.
    let (code, _, err) = verify_signed(&vault, &s.allowed, &["--signer", "bob@lab"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("\"bob@lab\""), "{err}");
    // --signer matches, via a wildcard line.
    let wild = allowed(&dir, "wild", &[("*@lab", &s.alice)]);
    let (code, v, err) = verify_signed(&vault, &wild, &["--signer", "alice@lab"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["signature"]["principal"], "alice@lab");
    // The file trusts alice's key only as bob@lab; --signer alice@lab fails.
    let bob = allowed(&dir, "bob", &[("bob@lab", &s.alice)]);
    let (code, _, _) = verify_signed(&vault, &bob, &["--signer", "alice@lab"]);
    assert_eq!(code, 3);
    // Without --signer any principal listing the key is accepted, and named.
    let (code, v, _) = verify_signed(&vault, &bob, &[]);
    assert_eq!(code, 0);
    assert_eq!(v["signature"]["principal"], "bob@lab");
    // The file lists only mallory.
    let m = allowed(&dir, "m", &[("alice@lab", &s.mallory)]);
    let (code, _, _) = verify_signed(&vault, &m, &[]);
    assert_eq!(code, 3);
    // namespaces= excludes casevault-vault.
    let ns = allowed(
        &dir,
        "ns",
        &[("alice@lab namespaces=\"file,casevault-custody\"", &s.alice)],
    );
    let (code, _, err) = verify_signed(&vault, &ns, &[]);
    assert_eq!(code, 3, "{err}");
    let ns_ok = allowed(
        &dir,
        "ns-ok",
        &[("alice@lab namespaces=\"casevault-*\"", &s.alice)],
    );
    let (code, _, err) = verify_signed(&vault, &ns_ok, &[]);
    assert_eq!(code, 0, "{err}");
}

/// Issue #11: verify's accepted principal is `--accept-signer` (`--signer`
/// records a principal everywhere else); `--signer` stays on verify as a
/// hidden alias for a release.
#[test]
fn verify_accept_signer_and_hidden_signer_alias() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("accept.vault");
    s.fx.seal(&s.case, &vault, &["--sign", s.alice.path.to_str().unwrap()]);
    for flag in ["--accept-signer", "--signer"] {
        let (code, v, err) = verify_signed(&vault, &s.allowed, &[flag, "alice@lab"]);
        assert_eq!(code, 0, "{flag}: {err}");
        assert_eq!(v["signature"]["principal"], "alice@lab", "{flag}");
        let (code, v, err) = verify_signed(&vault, &s.allowed, &[flag, "bob@lab"]);
        assert_eq!(code, 3, "{flag}: {err}");
        assert_eq!(v["ok"], false, "{flag}");
        assert!(err.contains("\"bob@lab\""), "{flag}: {err}");
        // Like --signer before it, it needs --signers.
        casevault()
            .arg("verify")
            .arg(&vault)
            .args([flag, "alice@lab"])
            .assert()
            .code(2)
            .stdout("");
    }
    let help = casevault().args(["verify", "--help"]).assert().success();
    let help = String::from_utf8_lossy(&help.get_output().stdout).into_owned();
    assert!(help.contains("--accept-signer <PRINCIPAL>"), "{help}");
    assert!(!help.contains("--signer "), "the alias is hidden: {help}");
}

#[test]
fn unsupported_allowed_signers_lines_are_errors() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("ca.vault");
    s.fx.seal(&s.case, &vault, &["--sign", s.alice.path.to_str().unwrap()]);
    let dir = s.fx.root().join("ssh");
    for (name, line, want) in [
        ("ca", "*@lab cert-authority", "cert-authority"),
        ("va", "alice@lab valid-before=\"20991231\"", "valid-before"),
        ("opt", "alice@lab no-touch-required", "unsupported option"),
    ] {
        // A supported line first: the unsupported one must still be refused.
        let f = allowed(&dir, name, &[("alice@lab", &s.alice), (line, &s.alice)]);
        let a = casevault()
            .arg("verify")
            .arg(&vault)
            .arg("--signers")
            .arg(&f)
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(err.contains("line 2") && err.contains(want), "{err}");
    }
    fs::write(dir.join("junk"), "alice@lab ssh-ed25519 not-base64\n").unwrap();
    casevault()
        .arg("verify")
        .arg(&vault)
        .arg("--signers")
        .arg(dir.join("junk"))
        .assert()
        .code(1);
}

#[test]
fn passphrase_key_without_terminal_is_refused() {
    let Some(s) = sx() else { return };
    let key = ssh_key(
        &s.fx.root().join("ssh"),
        "locked",
        "ed25519",
        "locked@lab",
        "correct horse",
    );
    let vault = s.fx.vault("locked.vault");
    let before = snapshot(&s.fx.out());
    let a = casevault()
        .arg("seal")
        .arg(&s.case)
        .arg("-o")
        .arg(&vault)
        .args(["-r", &s.fx.key.recipient, "--sign"])
        .arg(&key.path)
        .write_stdin("")
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(err.contains("passphrase"), "{err}");
    assert_snapshot_unchanged(&s.fx.out(), &before);
}

#[test]
fn signer_without_sign_is_a_usage_error() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "U-1").root.clone();
    casevault()
        .arg("seal")
        .arg(&case)
        .arg("-o")
        .arg(fx.vault("u.vault"))
        .args(["-r", &fx.key.recipient, "--signer", "x"])
        .assert()
        .code(2);
    assert!(!fx.vault("u.vault").exists());
}

/// Rewrite the bag inside a signed vault (re-encrypted to the same
/// recipient, tag manifest recomputed): the inner signature checks are
/// what must catch it.
fn rewrite_tags(fx: &Fx, vault: &Path, out: &str, edit: impl Fn(&mut Vec<RawEntry>)) -> PathBuf {
    let tar = plaintext_tar(&decrypt_vault(vault, &fx.key));
    let (mut entries, _) = parse_tar(&tar);
    edit(&mut entries);
    let mut tm = String::new();
    for e in &entries {
        let p = e.path();
        let name = p.rsplit('/').next().unwrap().to_string();
        if !p.contains("/data/")
            && e.typeflag() == b'0'
            && !matches!(name.as_str(), "tagmanifest-sha256.txt")
        {
            tm.push_str(&format!("{}  {name}\n", sha256_hex(&e.data)));
        }
    }
    let tmi = entries
        .iter()
        .position(|e| e.path().ends_with("/tagmanifest-sha256.txt"))
        .unwrap();
    entries[tmi].set_data(tm.into_bytes());
    let path = fx.vault(out);
    fs::write(
        &path,
        encrypt_to(&fx.key.recipient, &build_tar(&entries), false),
    )
    .unwrap();
    path
}

#[test]
fn tampered_inner_signature_is_an_integrity_failure() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("inner.vault");
    // Uncompressed, so that the rewritten tar needs no zstd step.
    s.fx.seal(
        &s.case,
        &vault,
        &[
            "--compress",
            "none",
            "--sign",
            s.alice.path.to_str().unwrap(),
        ],
    );

    // casevault.sig removed while casevault.json still names a signer.
    let v = rewrite_tags(&s.fx, &vault, "nosig.vault", |e| {
        e.retain(|x| !x.path().ends_with("/casevault.sig"))
    });
    let err = s.fx.unseal_fails(&v, &s.fx.dest("nosig"), 3, &[]);
    assert!(err.contains("no casevault.sig"), "{err}");

    // casevault.sig replaced by mallory's valid signature over the same
    // casevault.json: it does not match the fingerprint recorded there.
    let tar = plaintext_tar(&decrypt_vault(&vault, &s.fx.key));
    let (entries, _) = parse_tar(&tar);
    let json = entries
        .iter()
        .find(|e| e.path().ends_with("/casevault.json"))
        .unwrap()
        .data
        .clone();
    let jpath = s.fx.root().join("casevault.json");
    fs::write(&jpath, &json).unwrap();
    run_tool(
        Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", "casevault-manifest", "-f"])
            .arg(&s.mallory.path)
            .arg(&jpath),
    );
    let msig = fs::read(format!("{}.sig", jpath.display())).unwrap();
    let v = rewrite_tags(&s.fx, &vault, "mallory.vault", |e| {
        for x in e.iter_mut() {
            if x.path().ends_with("/casevault.sig") {
                x.set_data(msig.clone());
            }
        }
    });
    let err = s.fx.unseal_fails(&v, &s.fx.dest("mallory"), 3, &[]);
    assert!(err.contains("was made by key"), "{err}");

    // A garbage casevault.sig.
    let v = rewrite_tags(&s.fx, &vault, "junk.vault", |e| {
        for x in e.iter_mut() {
            if x.path().ends_with("/casevault.sig") {
                x.set_data(b"not a signature\n".to_vec());
            }
        }
    });
    s.fx.unseal_fails(&v, &s.fx.dest("junk"), 3, &[]);

    // The untouched rewrite still opens (the helper itself is sound).
    let v = rewrite_tags(&s.fx, &vault, "same.vault", |_| {});
    s.fx.unseal(&v, &s.fx.dest("same"), &[]);
}

/// Issue #10 item 15 (https://github.com/casevault/casevault/issues/10):
/// casevault decides every allowed_signers line as the stock `ssh-keygen
/// -Y verify` does on the same files: negation-only principals, quoted and
/// unquoted `namespaces=`, `?` and `*`, whitespace in pattern lists, case.
#[test]
fn allowed_signers_decisions_match_ssh_keygen() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("m.vault");
    s.fx.seal(&s.case, &vault, &["--sign", s.alice.path.to_str().unwrap()]);
    let dir = s.fx.root().join("ssh");
    // (principals and options, trusted for alice@lab?, a principal name
    // ssh-keygen accepts the signature for, if there is one: without
    // --signer casevault accepts exactly when there is).
    let cases = [
        ("!*", false, None),
        ("\"!alice@lab,!bob@lab\"", false, None),
        ("alice@lab,!alice@lab", false, None),
        ("*@lab,!alice@lab", false, Some("bob@lab")),
        ("alice@lab", true, Some("alice@lab")),
        ("a?ice@*", true, Some("alice@lab")),
        ("\"*@lab,!mallory@lab\"", true, Some("alice@lab")),
        ("ALICE@lab", false, Some("ALICE@lab")),
        (
            "alice@lab namespaces=\"casevault-vault\"",
            true,
            Some("alice@lab"),
        ),
        (
            "alice@lab namespaces=\"casevault-*\"",
            true,
            Some("alice@lab"),
        ),
        ("alice@lab namespaces=\"x, casevault-vault\"", false, None),
        (
            "alice@lab namespaces=\"x,casevault-vault\"",
            true,
            Some("alice@lab"),
        ),
        ("alice@lab namespaces=\"\"", false, None),
        ("alice@lab namespaces=casevault-vault", false, None),
    ];
    let stock = |f: &Path, who: &str| {
        Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(f)
            .args(["-I", who, "-n", "casevault-vault", "-s"])
            .arg(sig_of(&vault))
            .stdin(fs::File::open(&vault).unwrap())
            .output()
            .unwrap()
    };
    for (i, (line, trusted, witness)) in cases.iter().enumerate() {
        let f = allowed(&dir, &format!("m{i}"), &[(line, &s.alice)]);
        let st = stock(&f, "alice@lab");
        assert_eq!(
            st.status.success(),
            *trusted,
            "ssh-keygen on {line:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        if let Some(w) = witness {
            let st = stock(&f, w);
            assert!(st.status.success(), "ssh-keygen -I {w} on {line:?}");
        }
        // An unquoted namespaces= is an error (exit 1), as ssh-keygen
        // says "bad options: missing start quote"; other refusals are
        // untrusted signatures (exit 3).
        let refused = if line.contains("namespaces=c") { 1 } else { 3 };
        for (extra, ok) in [
            (&["--signer", "alice@lab"][..], *trusted),
            (&[][..], witness.is_some()),
        ] {
            let want = if ok { 0 } else { refused };
            let a = casevault()
                .arg("verify")
                .arg(&vault)
                .arg("--signers")
                .arg(&f)
                .args(extra)
                .assert();
            let code = a.get_output().status.code().unwrap();
            assert_eq!(code, want, "{line:?} {extra:?}: {}", stderr_of(&a));
        }
    }
}

/// Issue #10 item 16 (https://github.com/casevault/casevault/issues/10):
/// `verify -i --json` without `--signers` must not report a `VAULT.sig`
/// that nobody checked as `"signed": true`; the fields say exactly what
/// is known.
#[test]
fn verify_json_names_what_was_checked() {
    let Some(s) = sx() else { return };
    let vault = s.fx.vault("named.vault");
    s.fx.seal(&s.case, &vault, &["--sign", s.alice.path.to_str().unwrap()]);
    // Replace VAULT.sig by garbage: it exists, but nothing checked it.
    fs::write(sig_of(&vault), "not a signature\n").unwrap();
    let key = s.fx.key.path.to_str().unwrap().to_string();
    let a = casevault()
        .arg("verify")
        .arg(&vault)
        .args(["-i", &key, "--json"])
        .assert()
        .code(0);
    let v = json_of(&a);
    let sig = &v["signature"];
    assert!(sig.get("signed").is_none(), "{sig}");
    assert_eq!(sig["checked"], false, "{sig}");
    assert_eq!(sig["outer_present"], true, "{sig}");
    assert!(sig["outer_role"].is_null(), "{sig}");
    assert!(sig["principal"].is_null(), "{sig}");
    // casevault.sig was verified over casevault.json (every -i read does),
    // its trust was not checked.
    assert_eq!(sig["inner_present"], true, "{sig}");
    assert_eq!(sig["inner_checked"], false, "{sig}");
    assert!(sig["inner_principal"].is_null(), "{sig}");
    // With --signers the garbage VAULT.sig is an integrity failure.
    let (code, _, err) = verify_signed(&vault, &s.allowed, &["-i", &key]);
    assert_eq!(code, 3, "{err}");
}

/// `rekey VAULT -o NEW … EXTRA…` with the fixture's identity and recipient.
fn rekey_signed(s: &Sx, vault: &Path, new: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    casevault()
        .arg("rekey")
        .arg(vault)
        .arg("-o")
        .arg(new)
        .arg("-i")
        .arg(&s.fx.key.path)
        .arg("-r")
        .arg(&s.fx.key.recipient)
        .args(extra)
        .assert()
}

/// Issue #10 item 12 (https://github.com/casevault/casevault/issues/10):
/// `rekey --sign` must not launder a vault nobody trusted sealed. Anyone
/// who knows a recipient seals a forged case unsigned; an operator
/// re-encrypts it with `--sign`: refused (exit 3, nothing written) unless
/// the inner signature is trusted, and the outer signature of a rekey
/// reads "re-encrypted by", never "sealed by".
#[test]
fn rekey_sign_does_not_launder_an_unsigned_or_untrusted_vault() {
    let Some(s) = sx() else { return };
    let dir = s.fx.root().join("ssh");
    let bob = ssh_key(&dir, "bob", "ed25519", "bob@lab", "");
    let trust = dir.join("trust");
    fs::write(
        &trust,
        format!(
            "alice@lab {}\nbob@lab namespaces=\"casevault-rekey\" {}\n",
            s.alice.public, bob.public
        ),
    )
    .unwrap();
    let bob_key = bob.path.to_str().unwrap();
    let signers = trust.to_str().unwrap();
    let idkey = s.fx.key.path.to_str().unwrap().to_string();
    let leftovers = |new: &Path| {
        for suffix in ["", ".sha256", ".sig", ".sha256.pending", ".sig.pending"] {
            let p = PathBuf::from(format!("{}{suffix}", new.display()));
            assert!(!p.exists(), "{} must not exist", p.display());
        }
    };

    // The forgery: sealed to the recipient, unsigned.
    let forged = s.fx.vault("forged.vault");
    s.fx.seal(&s.case, &forged, &[]);
    let new = s.fx.vault("laundered.vault");
    // --sign without --signers: usage error, nothing written.
    let a = rekey_signed(&s, &forged, &new, &["--sign", bob_key]).code(2);
    assert!(stderr_of(&a).contains("--signers"), "{}", stderr_of(&a));
    leftovers(&new);
    // With --signers: the missing inner signature is refused.
    let a = rekey_signed(
        &s,
        &forged,
        &new,
        &["--sign", bob_key, "--signers", signers],
    )
    .code(3);
    let err = stderr_of(&a);
    assert!(
        err.contains("no inner signature") && err.contains("nothing was written"),
        "{err}"
    );
    assert_error_message(&err);
    leftovers(&new);

    // Sealed and signed by mallory, whom nobody trusts: refused too.
    let by_mallory = s.fx.vault("mallory.vault");
    s.fx.seal(
        &s.case,
        &by_mallory,
        &["--sign", s.mallory.path.to_str().unwrap()],
    );
    let a = rekey_signed(
        &s,
        &by_mallory,
        &new,
        &["--sign", bob_key, "--signers", signers],
    )
    .code(3);
    assert!(
        stderr_of(&a).contains("does not trust"),
        "{}",
        stderr_of(&a)
    );
    leftovers(&new);
    // And --sealed-by restricts the sealer.
    let genuine = s.fx.vault("genuine.vault");
    s.fx.seal(
        &s.case,
        &genuine,
        &["--sign", s.alice.path.to_str().unwrap()],
    );
    rekey_signed(
        &s,
        &genuine,
        &new,
        &[
            "--sign",
            bob_key,
            "--signers",
            signers,
            "--sealed-by",
            "carol@lab",
        ],
    )
    .code(3);
    leftovers(&new);

    // Sealed by alice, re-encrypted and signed by bob: accepted.
    let a = rekey_signed(
        &s,
        &genuine,
        &new,
        &[
            "--sign",
            bob_key,
            "--signers",
            signers,
            "--sealed-by",
            "alice@lab",
            "--json",
        ],
    )
    .code(0);
    let j = json_of(&a);
    assert_eq!(j["sealed_by"]["principal"], "alice@lab", "{j}");
    assert_eq!(j["signature"], sig_of(&new).to_str().unwrap());
    // The outer signature is in namespace casevault-rekey: stock
    // ssh-keygen accepts it there, and not as casevault-vault.
    let stock = |ns: &str| {
        Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(&trust)
            .args(["-I", "bob@lab", "-n", ns, "-s"])
            .arg(sig_of(&new))
            .stdin(fs::File::open(&new).unwrap())
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(stock("casevault-rekey"));
    assert!(!stock("casevault-vault"));
    // verify tells "re-encrypted by bob", and with -i "sealed by alice".
    let (code, v, err) = verify_signed(&new, &trust, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["signature"]["outer_role"], "re-encrypted");
    assert_eq!(v["signature"]["principal"], "bob@lab");
    let (code, v, err) = verify_signed(&new, &trust, &["-i", &idkey]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["signature"]["outer_role"], "re-encrypted");
    assert_eq!(v["signature"]["inner_principal"], "alice@lab");
    let a = casevault()
        .arg("verify")
        .arg(&new)
        .args(["-i", &idkey, "--signers", signers])
        .assert()
        .code(0);
    let out = stdout_of(&a);
    assert!(
        out.contains("signature ok: VAULT.sig re-encrypted by bob@lab (SHA256:")
            && out.contains("inner signature ok: casevault.sig by alice@lab"),
        "{out}"
    );
    // A seal signature by alice still reads as sealed.
    let (code, v, _) = verify_signed(&genuine, &trust, &[]);
    assert_eq!(code, 0);
    assert_eq!(v["signature"]["outer_role"], "sealed");
    // bob is trusted only to re-encrypt: a seal signature by bob fails.
    let bob_sealed = s.fx.vault("bob-sealed.vault");
    s.fx.seal(&s.case, &bob_sealed, &["--sign", bob_key]);
    let (code, _, err) = verify_signed(&bob_sealed, &trust, &[]);
    assert_eq!(code, 3, "{err}");

    // --signers without --sign is a plain gate: the forgery is refused.
    let plain = s.fx.vault("plain-re.vault");
    rekey_signed(&s, &forged, &plain, &["--signers", signers]).code(3);
    leftovers(&plain);
}

//! `casevault keygen`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use crate::util::*;

/// Check the age-keygen file format and return (recipient comment, secret).
fn parse_identity_text(text: &str) -> (String, String) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "identity text must be 3 lines:\n{text}");
    assert!(text.ends_with('\n'), "identity text must end with LF");
    let created = lines[0]
        .strip_prefix("# created: ")
        .unwrap_or_else(|| panic!("first line is not `# created: …`: {text}"));
    assert!(
        created.len() >= 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "created time is not RFC 3339 UTC: {created}"
    );
    let recipient = lines[1]
        .strip_prefix("# public key: ")
        .unwrap_or_else(|| panic!("second line is not `# public key: …`: {text}"));
    assert!(recipient.starts_with("age1"), "{recipient}");
    let secret = lines[2];
    assert!(secret.starts_with("AGE-SECRET-KEY-1"), "{secret}");
    // The secret must be a valid identity whose public key is the comment.
    let id = age::x25519::Identity::from_str(secret).expect("valid AGE-SECRET-KEY");
    assert_eq!(id.to_public().to_string(), recipient);
    assert_eq!(id.to_string().expose_secret(), secret);
    (recipient.to_string(), secret.to_string())
}

#[test]
fn keygen_o_writes_0600_identity_and_prints_recipient() {
    let fx = Fx::new();
    let key = fx.root().join("new-key.txt");
    let a = casevault()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .assert()
        .code(0);
    let out = stdout_of(&a);
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "identity file mode is {mode:o}");
    let (recipient, _) = parse_identity_text(&fs::read_to_string(&key).unwrap());
    assert_eq!(
        out,
        format!("{recipient}\n"),
        "stdout must be the recipient line"
    );
}

#[test]
fn keygen_refuses_to_overwrite() {
    let fx = Fx::new();
    let key = fx.root().join("existing.txt");
    fs::write(&key, b"do not touch\n").unwrap();
    let before = snapshot(fx.root());
    let a = casevault()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .assert()
        .code(1);
    assert_error_message(&stderr_of(&a));
    assert_eq!(stdout_of(&a), "", "nothing on stdout on failure");
    assert_eq!(fs::read(&key).unwrap(), b"do not touch\n");
    assert_snapshot_unchanged(fx.root(), &before);

    // An existing identity is not replaced either.
    let key2 = fx.root().join("k2.txt");
    casevault()
        .arg("keygen")
        .arg("-o")
        .arg(&key2)
        .assert()
        .code(0);
    let first = fs::read(&key2).unwrap();
    casevault()
        .arg("keygen")
        .arg("-o")
        .arg(&key2)
        .assert()
        .code(1);
    assert_eq!(fs::read(&key2).unwrap(), first);
}

#[test]
fn keygen_without_o_prints_identity() {
    let fx = Fx::new();
    let before = snapshot(fx.root());
    let a = casevault()
        .arg("keygen")
        .current_dir(fx.root())
        .assert()
        .code(0);
    parse_identity_text(&stdout_of(&a));
    assert_snapshot_unchanged(fx.root(), &before);
}

/// age-keygen writes `# created: 2006-01-02T15:04:05Z` (Go's RFC 3339,
/// whole seconds), as in CLI.md's example.
#[test]
fn keygen_created_line_has_whole_seconds_like_age_keygen() {
    let a = casevault().arg("keygen").assert().code(0);
    let out = stdout_of(&a);
    let created = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("# created: ")
        .unwrap();
    let b = created.as_bytes();
    assert!(
        b.len() == 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z'
            && b.iter()
                .enumerate()
                .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit()),
        "`# created:` is not YYYY-MM-DDTHH:MM:SSZ: {created}"
    );
}

#[test]
fn keygen_makes_a_new_key_each_time() {
    let a = casevault().arg("keygen").assert().code(0);
    let b = casevault().arg("keygen").assert().code(0);
    let (ra, sa) = parse_identity_text(&stdout_of(&a));
    let (rb, sb) = parse_identity_text(&stdout_of(&b));
    assert_ne!(ra, rb);
    assert_ne!(sa, sb);
}

#[test]
fn keygen_key_seals_and_unseals() {
    let fx = Fx::new();
    let key = fx.root().join("keys/cv-key.txt");
    let a = casevault()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .assert()
        .code(0);
    let recipient = stdout_of(&a).trim_end().to_string();
    let case = small_case(&fx.cases(), "KG-1");
    let vault = fx.vault("kg.vault");
    seal_cmd(&case.root, &vault, &recipient).assert().code(0);
    let dest = fx.dest("kg");
    unseal_cmd(&vault, &dest, &key).assert().code(0);
    assert_same_tree(&case.root, &dest, true);
}

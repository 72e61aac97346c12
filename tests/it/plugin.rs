//! age plugins (issue #7): `age1<name>1…` recipients and
//! `AGE-PLUGIN-<NAME>-1…` identities handled by `age-plugin-<name>` on
//! PATH. Uses the test-only plugin `tests/plugin/age-plugin-casevaulttest`
//! (Python, speaking the real plugin protocol; its "wrapping" is a XOR with
//! a fixed secret), not real hardware.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use bech32::{Bech32, Hrp};

use crate::util::*;

/// The directory holding the test plugin, to put first on PATH.
fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugin")
}

fn path_with_plugin() -> OsString {
    let old = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(plugin_dir()).chain(std::env::split_paths(&old))).unwrap()
}

/// A plugin recipient and the identity file holding the matching plugin
/// identity (the test plugin ignores their data).
fn plugin_keys(fx: &Fx) -> (String, PathBuf) {
    let data = [7u8; 16];
    let recipient =
        bech32::encode::<Bech32>(Hrp::parse("age1casevaulttest").unwrap(), &data).unwrap();
    let identity =
        bech32::encode::<Bech32>(Hrp::parse("age-plugin-casevaulttest-").unwrap(), &data)
            .unwrap()
            .to_uppercase();
    let path = fx.root().join("keys/plugin-identity.txt");
    write_private(&path, format!("# recipient: {recipient}\n{identity}\n"));
    (recipient, path)
}

#[test]
fn plugin_recipient_and_identity_round_trip() {
    if tool("python3").is_none() {
        return;
    }
    let fx = Fx::new();
    let (recipient, identity) = plugin_keys(&fx);
    assert!(recipient.starts_with("age1casevaulttest1"), "{recipient}");
    let case = small_case(&fx.cases(), "PLUG-1");
    let vault = fx.vault("plugin.vault");
    let a = seal_cmd(&case.root, &vault, &recipient)
        .env("PATH", path_with_plugin())
        .assert();
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr_of(&a));
    let header = fs::read(&vault).unwrap();
    assert!(
        header.windows(17).any(|w| w == b"-> casevaulttest\n"),
        "no plugin stanza in the vault header"
    );

    let dest = fx.dest("restored");
    let a = casevault()
        .env("PATH", path_with_plugin())
        .arg("unseal")
        .arg(&vault)
        .arg("-i")
        .arg(&identity)
        .arg("-o")
        .arg(&dest)
        .assert();
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr_of(&a));
    assert_same_tree(&case.root, &dest, true);

    // An identity that does not match (the fixture's X25519 key) gets exit 4.
    // (Sealed below to both, it opens: plugin and X25519 recipients mix.)
    verify_cmd(&vault, &fx.key.path)
        .env("PATH", path_with_plugin())
        .assert()
        .code(4);
    let mixed = fx.vault("mixed.vault");
    seal_cmd(&case.root, &mixed, &recipient)
        .env("PATH", path_with_plugin())
        .arg("-r")
        .arg(&fx.key.recipient)
        .assert()
        .code(0);
    verify_cmd(&mixed, &fx.key.path).assert().code(0);
}

#[test]
fn plugin_recipient_without_plugin_binary_is_refused_and_writes_nothing() {
    let fx = Fx::new();
    let (recipient, _) = plugin_keys(&fx);
    let case = small_case(&fx.cases(), "PLUG-2");
    let vault = fx.vault("plugin.vault");
    let before = snapshot(fx.root());
    let a = seal_cmd(&case.root, &vault, &recipient)
        .env("PATH", "/nonexistent")
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert_error_message(&err);
    assert!(err.contains("age-plugin-casevaulttest"), "{err}");
    assert_eq!(snapshot(fx.root()), before);
}

#[test]
fn plugin_identity_without_plugin_binary_is_refused_and_writes_nothing() {
    if tool("python3").is_none() {
        return;
    }
    let fx = Fx::new();
    let (recipient, identity) = plugin_keys(&fx);
    let case = small_case(&fx.cases(), "PLUG-3");
    let vault = fx.vault("plugin.vault");
    seal_cmd(&case.root, &vault, &recipient)
        .env("PATH", path_with_plugin())
        .assert()
        .code(0);
    let before = snapshot(fx.root());
    let a = casevault()
        .env("PATH", "/nonexistent")
        .arg("unseal")
        .arg(&vault)
        .arg("-i")
        .arg(&identity)
        .arg("-o")
        .arg(fx.dest("restored"))
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert_error_message(&err);
    assert!(
        err.contains("needs the program age-plugin-casevaulttest on PATH"),
        "{err}"
    );
    assert_eq!(snapshot(fx.root()), before);
}

/// A plugin's question (here a PIN, as age-plugin-yubikey asks) is asked on
/// the terminal; a wrong answer, or no terminal, fails with exit 1 (a key
/// problem, not damage: not exit 3) and writes nothing.
#[test]
fn plugin_pin_prompt_on_terminal() {
    if tool("python3").is_none() {
        return;
    }
    let Some(env) = tool("env") else {
        return;
    };
    let fx = Fx::new();
    let (recipient, identity) = plugin_keys(&fx);
    let case = small_case(&fx.cases(), "PLUG-4");
    let vault = fx.vault("plugin.vault");
    seal_cmd(&case.root, &vault, &recipient)
        .env("PATH", path_with_plugin())
        .assert()
        .code(0);
    let before = snapshot(fx.root());

    // No terminal: the plugin's request is declined.
    let a = verify_cmd(&vault, &identity)
        .env("PATH", path_with_plugin())
        .env("CASEVAULTTEST_PIN", "1234")
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(err.contains("wrong or missing PIN"), "{err}");

    let path = format!("PATH={}", path_with_plugin().to_str().unwrap());
    let bin = crate::passphrase::casevault_bin();
    let dest = fx.dest("restored");
    let run = |pin: &str| {
        crate::passphrase::on_terminal(
            fx.root(),
            &env,
            &[
                &path,
                "CASEVAULTTEST_PIN=1234",
                bin.to_str().unwrap(),
                "unseal",
                vault.to_str().unwrap(),
                "-i",
                identity.to_str().unwrap(),
                "-o",
                dest.to_str().unwrap(),
                "-q",
            ],
            &[pin],
        )
    };
    let Some((code, shown)) = run("9999") else {
        return;
    };
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("Enter PIN for casevaulttest"), "{shown}");
    assert!(shown.contains("wrong or missing PIN"), "{shown}");
    assert_eq!(snapshot(fx.root()), before);

    let (code, shown) = run("1234").unwrap();
    assert_eq!(code, 0, "{shown}");
    assert_same_tree(&case.root, &dest, true);
}

//! Interop with software this project did not write (FORMAT.md §8):
//! Go age / age-keygen, zstd, GNU tar, bagit.py, coreutils sha256sum,
//! OpenSSH keys.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// Stock recovery: `age -d -i KEY VAULT` (→ `zstd -d` unless `raw`) →
/// `tar -x` into `out`. Each stage is run on its own so each exit status is
/// checked. Returns the bag directory `out/CASE_ID`.
fn stock_extract(
    vault: &Path,
    key: &Path,
    out: &Path,
    case_id: &str,
    raw: bool,
) -> Option<PathBuf> {
    let age = tool("age")?;
    let tar = tool("tar")?;
    fs::create_dir_all(out).unwrap();
    let plain = out.with_extension("plain");
    run_tool(
        Command::new(age)
            .arg("-d")
            .arg("-i")
            .arg(key)
            .arg("-o")
            .arg(&plain)
            .arg(vault),
    );
    let tarfile = if raw {
        plain.clone()
    } else {
        let zstd = tool("zstd")?;
        let t = out.with_extension("tar");
        run_tool(
            Command::new(zstd)
                .arg("-d")
                .arg("-q")
                .arg("-o")
                .arg(&t)
                .arg(&plain),
        );
        t
    };
    run_tool(
        Command::new(tar)
            .arg("-x")
            .arg("-f")
            .arg(&tarfile)
            .arg("-C")
            .arg(out),
    );
    fs::remove_file(&plain).unwrap();
    if tarfile != plain {
        fs::remove_file(&tarfile).unwrap();
    }
    let names: Vec<_> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![case_id.to_string()],
        "one top-level bag directory"
    );
    Some(out.join(case_id))
}

/// The extracted `BAG/data` holds the case's regular files and directories
/// (bytes and mtimes equal), and no symlinks (those are only listed in
/// casevault.json).
fn assert_bag_matches_case(bag: &Path, case: &Path) {
    let data = bag.join("data");
    let want: Vec<(PathBuf, Kind)> = entries(case)
        .into_iter()
        .filter(|(_, k)| *k != Kind::Symlink)
        .collect();
    let got = entries(&data);
    assert_eq!(
        got, want,
        "bag data/ holds exactly the case's files and dirs"
    );
    for (rel, k) in &want {
        let a = fs::metadata(case.join(rel)).unwrap();
        let b = fs::metadata(data.join(rel)).unwrap();
        if *k == Kind::File {
            assert_eq!(
                fs::read(case.join(rel)).unwrap(),
                fs::read(data.join(rel)).unwrap(),
                "{rel:?}"
            );
            assert_eq!(a.mtime(), b.mtime(), "{rel:?}: mtime after tar -x");
        }
    }
    // Symlinks are recorded in casevault.json, target byte for byte.
    let j: serde_json::Value =
        serde_json::from_slice(&fs::read(bag.join("casevault.json")).unwrap()).unwrap();
    for (rel, k) in entries(case) {
        if k == Kind::Symlink {
            let p = format!("data/{}", rel_str(&rel));
            let e = j["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["path"] == p.as_str())
                .unwrap_or_else(|| panic!("{p} not in casevault.json"));
            assert_eq!(e["kind"], "symlink");
            assert_eq!(
                e["target"],
                rel_str(&fs::read_link(case.join(&rel)).unwrap()).as_str()
            );
        }
    }
}

#[test]
fn stock_age_zstd_tar_recovers_bag_and_bagit_validates() {
    let fx = Fx::new();
    let case = rich_case(&fx.cases(), "INTEROP-1", true);
    let vault = fx.vault("i.vault");
    fx.seal(&case.root, &vault, &[]);
    let Some(bag) = stock_extract(
        &vault,
        &fx.key.path,
        &fx.root().join("x"),
        "INTEROP-1",
        false,
    ) else {
        return;
    };
    assert_bag_matches_case(&bag, &case.root);

    // bagit.py --validate BAG
    if let Some(bagit) = tool("bagit.py") {
        run_tool(Command::new(bagit).arg("--validate").arg(&bag));
    }
    // cd BAG && sha256sum -c manifest-sha256.txt (and the tag manifest)
    if let Some(sha256sum) = tool("sha256sum") {
        run_tool(Command::new(&sha256sum).current_dir(&bag).args([
            "--strict",
            "-c",
            "manifest-sha256.txt",
        ]));
        run_tool(Command::new(&sha256sum).current_dir(&bag).args([
            "--strict",
            "-c",
            "tagmanifest-sha256.txt",
        ]));
        // The sidecar checks with sha256sum in the vault's directory.
        run_tool(Command::new(&sha256sum).current_dir(fx.out()).args([
            "--strict",
            "-c",
            "i.vault.sha256",
        ]));
    }
}

#[test]
fn sha256sum_detects_a_damaged_copy_via_sidecar() {
    let Some(sha256sum) = tool("sha256sum") else {
        return;
    };
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "SIDE-1");
    let vault = fx.vault("s.vault");
    fx.seal(&case.root, &vault, &[]);
    let mut b = fs::read(&vault).unwrap();
    let n = b.len();
    b[n / 2] ^= 4;
    fs::write(&vault, b).unwrap();
    let st = Command::new(sha256sum)
        .current_dir(fx.out())
        .args(["-c", "s.vault.sha256"])
        .output()
        .unwrap();
    assert!(
        !st.status.success(),
        "sha256sum -c must fail on a damaged copy"
    );
}

#[test]
fn compress_none_extracts_with_age_and_tar() {
    let fx = Fx::new();
    let case = rich_case_light(&fx.cases(), "RAW-1");
    let vault = fx.vault("raw.vault");
    fx.seal(&case.root, &vault, &["--compress", "none"]);
    let Some(bag) = stock_extract(&vault, &fx.key.path, &fx.root().join("x"), "RAW-1", true) else {
        return;
    };
    assert_bag_matches_case(&bag, &case.root);
    if let Some(bagit) = tool("bagit.py") {
        run_tool(Command::new(bagit).arg("--validate").arg(&bag));
    }
}

#[test]
fn armored_vault_decrypts_with_stock_age() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "ARMOR-1");
    let vault = fx.vault("a.vault");
    fx.seal(&case.root, &vault, &["--armor"]);
    let Some(bag) = stock_extract(&vault, &fx.key.path, &fx.root().join("x"), "ARMOR-1", false)
    else {
        return;
    };
    assert_bag_matches_case(&bag, &case.root);
}

#[test]
fn age_keygen_identity_unseals_casevault_vault() {
    let Some(age_keygen) = tool("age-keygen") else {
        return;
    };
    let fx = Fx::new();
    let key = fx.root().join("keys/stock.txt");
    run_tool(Command::new(&age_keygen).arg("-o").arg(&key));
    assert!(key.exists());
    let recipient = String::from_utf8(run_tool(Command::new(&age_keygen).arg("-y").arg(&key)))
        .unwrap()
        .trim_end()
        .to_string();
    let case = rich_case_light(&fx.cases(), "STOCKKEY-1");
    let vault = fx.vault("sk.vault");
    seal_cmd(&case.root, &vault, &recipient).assert().code(0);
    let dest = fx.dest("sk");
    unseal_cmd(&vault, &dest, &key).assert().code(0);
    assert_same_tree(&case.root, &dest, true);
    // A recipients file written by age-keygen -y is accepted by -R too.
    let rfile = fx.root().join("keys/stock.pub");
    fs::write(&rfile, format!("{recipient}\n")).unwrap();
    casevault()
        .arg("seal")
        .arg(&case.root)
        .arg("-o")
        .arg(fx.vault("sk2.vault"))
        .arg("-R")
        .arg(&rfile)
        .assert()
        .code(0);
}

#[test]
fn casevault_keygen_identity_works_with_stock_age() {
    let Some(age) = tool("age") else {
        return;
    };
    let fx = Fx::new();
    let key = fx.root().join("keys/cv.txt");
    let a = casevault()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .assert()
        .code(0);
    let recipient = stdout_of(&a).trim_end().to_string();
    // stock age encrypts to the casevault recipient and decrypts with the
    // casevault identity file.
    let msg = fx.root().join("msg.txt");
    fs::write(&msg, b"hello from casevault keygen\n").unwrap();
    let enc = fx.root().join("msg.age");
    run_tool(
        Command::new(&age)
            .arg("-r")
            .arg(&recipient)
            .arg("-o")
            .arg(&enc)
            .arg(&msg),
    );
    let dec = run_tool(Command::new(&age).arg("-d").arg("-i").arg(&key).arg(&enc));
    assert_eq!(dec, b"hello from casevault keygen\n");
    // A vault sealed to it decrypts with stock age.
    let case = small_case(&fx.cases(), "CVKEY-1");
    let vault = fx.vault("cv.vault");
    seal_cmd(&case.root, &vault, &recipient).assert().code(0);
    if let Some(bag) = stock_extract(&vault, &key, &fx.root().join("x"), "CVKEY-1", false) {
        assert_bag_matches_case(&bag, &case.root);
    }
}

#[test]
fn ssh_ed25519_vault_decrypts_with_stock_age() {
    let Some(ssh_keygen) = tool("ssh-keygen") else {
        return;
    };
    let fx = Fx::new();
    let key = fx.root().join("keys/id_ed25519");
    run_tool(
        Command::new(ssh_keygen)
            .args(["-t", "ed25519", "-N", "", "-q", "-f"])
            .arg(&key),
    );
    let pubkey = fs::read_to_string(key.with_extension("pub")).unwrap();
    let case = small_case(&fx.cases(), "SSHAGE-1");
    let vault = fx.vault("ssh.vault");
    seal_cmd(&case.root, &vault, pubkey.trim_end())
        .assert()
        .code(0);
    if let Some(bag) = stock_extract(&vault, &key, &fx.root().join("x"), "SSHAGE-1", false) {
        assert_bag_matches_case(&bag, &case.root);
    }
}

#[test]
fn stock_age_encrypted_bag_unseals() {
    // Two-way: a casevault plaintext re-encrypted by stock `age -r` (as a
    // user re-keying by hand would) still unseals.
    let Some(age) = tool("age") else {
        return;
    };
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "REKEY-1");
    let vault = fx.vault("orig.vault");
    fx.seal(&case.root, &vault, &[]);
    let plain = fx.root().join("plain.bin");
    run_tool(
        Command::new(&age)
            .arg("-d")
            .arg("-i")
            .arg(&fx.key.path)
            .arg("-o")
            .arg(&plain)
            .arg(&vault),
    );
    let rekeyed = fx.vault("rekeyed.vault");
    run_tool(
        Command::new(&age)
            .arg("-r")
            .arg(&fx.key.recipient)
            .arg("-o")
            .arg(&rekeyed)
            .arg(&plain),
    );
    let dest = fx.dest("rekeyed");
    fx.unseal(&rekeyed, &dest, &[]);
    assert_same_tree(&case.root, &dest, true);
    // Armored by stock age, too.
    let armored = fx.vault("rekeyed-armor.vault");
    run_tool(
        Command::new(&age)
            .arg("-a")
            .arg("-r")
            .arg(&fx.key.recipient)
            .arg("-o")
            .arg(&armored)
            .arg(&plain),
    );
    let dest = fx.dest("rekeyed-armor");
    fx.unseal(&armored, &dest, &[]);
    assert_same_tree(&case.root, &dest, true);
}

#[test]
fn gnu_tar_lists_only_files_and_dirs_owned_by_0() {
    let Some(tar) = tool("tar") else {
        return;
    };
    let fx = Fx::new();
    let case = rich_case_light(&fx.cases(), "GNUTAR-1");
    let vault = fx.vault("g.vault");
    fx.seal(&case.root, &vault, &["--compress", "none"]);
    let plain = fx.root().join("g.tar");
    fs::write(&plain, decrypt_vault(&vault, &fx.key)).unwrap();
    let out = String::from_utf8(run_tool(
        Command::new(tar)
            .args(["--numeric-owner", "-tvf"])
            .arg(&plain),
    ))
    .unwrap();
    for line in out.lines() {
        let kind = line.as_bytes()[0];
        assert!(kind == b'-' || kind == b'd', "unexpected entry: {line}");
        assert!(line.contains(" 0/0 "), "owner is not 0/0: {line}");
    }
}

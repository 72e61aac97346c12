//! `casevault list`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::util::*;

const LIST_KEYS: &[&str] = &[
    "vault",
    "case_id",
    "sealed_at",
    "files",
    "dirs",
    "symlinks",
    "bytes",
    "entries",
];
const ENTRY_KEYS: &[&str] = &["path", "kind", "size", "sha256", "mode", "mtime", "target"];

#[test]
fn list_human_lines() {
    let fx = Fx::new();
    let case = rich_case_light(&fx.cases(), "LS-1");
    let vault = fx.vault("ls.vault");
    fx.seal(&case.root, &vault, &[]);
    let before = snapshot(fx.root());
    let a = list_cmd(&vault, &fx.key.path).assert().code(0);
    assert_snapshot_unchanged(fx.root(), &before);
    let out = stdout_of(&a);

    let mut want = Vec::new();
    for (rel, kind) in entries(&case.root) {
        let full = case.root.join(&rel);
        let p = rel_str(&rel);
        want.push(match kind {
            Kind::File => {
                let data = fs::read(&full).unwrap();
                format!("file\t{}\t{}\t{p}", data.len(), sha256_hex(&data))
            }
            Kind::Dir => format!("dir\t-\t-\t{p}"),
            Kind::Symlink => {
                format!(
                    "symlink\t-\t-\t{p} -> {}",
                    rel_str(&fs::read_link(&full).unwrap())
                )
            }
            Kind::Other => unreachable!(),
        });
    }
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "one line per entry, `.` not listed:\n{out}"
    );
    let got_set: BTreeSet<&str> = got.iter().copied().collect();
    let want_set: BTreeSet<&str> = want.iter().map(|s| s.as_str()).collect();
    assert_eq!(got_set, want_set);
    assert!(out.ends_with('\n'));
}

#[test]
fn list_json_entries() {
    let fx = Fx::new();
    let case = rich_case_light(&fx.cases(), "LJ-1");
    let vault = fx.vault("lj.vault");
    let sealed = fx.seal(&case.root, &vault, &["--compress", "none"]);
    let a = list_cmd(&vault, &fx.key.path)
        .arg("--json")
        .assert()
        .code(0);
    let v = json_of(&a);
    assert_json_keys(&v, LIST_KEYS);
    let (files, dirs, symlinks, bytes) = case_totals(&case.root);
    assert_eq!(v["case_id"], "LJ-1");
    assert_eq!(v["sealed_at"], sealed["sealed_at"]);
    assert_eq!(v["files"], files);
    assert_eq!(v["dirs"], dirs);
    assert_eq!(v["symlinks"], symlinks);
    assert_eq!(v["bytes"], bytes);

    let list = v["entries"].as_array().unwrap();
    let want = entries(&case.root);
    assert_eq!(list.len(), want.len(), "every entry once, `.` not listed");
    for (rel, kind) in want {
        let p = rel_str(&rel);
        let e = list
            .iter()
            .find(|e| e["path"] == p.as_str())
            .unwrap_or_else(|| panic!("{p} not listed"));
        assert_json_keys(e, ENTRY_KEYS);
        let full = case.root.join(&rel);
        let md = fs::symlink_metadata(&full).unwrap();
        assert_eq!(e["kind"], kind.as_str(), "{p}");
        assert_eq!(e["mode"], md.mode() & 0o7777, "{p}: mode");
        match kind {
            Kind::File => {
                let data = fs::read(&full).unwrap();
                assert_eq!(e["size"], data.len() as u64, "{p}");
                assert_eq!(e["sha256"], sha256_hex(&data).as_str(), "{p}");
                assert!(e["target"].is_null(), "{p}");
                assert_eq!(e["mtime"], md.mtime(), "{p}: mtime");
            }
            Kind::Dir => {
                assert!(
                    e["size"].is_null() && e["sha256"].is_null() && e["target"].is_null(),
                    "{p}"
                );
                assert_eq!(e["mtime"], md.mtime(), "{p}: mtime");
            }
            Kind::Symlink => {
                assert!(e["size"].is_null() && e["sha256"].is_null(), "{p}");
                assert_eq!(
                    e["target"],
                    rel_str(&fs::read_link(&full).unwrap()).as_str()
                );
            }
            Kind::Other => unreachable!(),
        }
    }
}

#[test]
fn list_damaged_vault_is_exit_3() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "LD-1");
    let vault = fx.vault("ld.vault");
    fx.seal(&case.root, &vault, &[]);
    let mut bytes = fs::read(&vault).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0x80;
    fs::write(&vault, &bytes).unwrap();
    let before = snapshot(fx.root());
    let a = list_cmd(&vault, &fx.key.path).assert().code(3);
    assert_error_message(&stderr_of(&a));
    assert_snapshot_unchanged(fx.root(), &before);
}

#[test]
fn list_wrong_key_and_missing_identity() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "LK-1");
    let vault = fx.vault("lk.vault");
    let other = fx.new_key("other.txt");
    seal_cmd(&case.root, &vault, &other.recipient)
        .assert()
        .code(0);
    list_cmd(&vault, &fx.key.path).assert().code(4);
    casevault().arg("list").arg(&vault).assert().code(2);
}

//! Issue #16, parity: `seal --parity`, `casevault repair` (FORMAT §15).
//! Every repair is checked against the pristine bytes, the stock
//! `sha256sum -c` and the stock `age -d`; every refusal against an
//! unchanged directory.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// FORMAT §15 constants, restated here rather than taken from the crate.
const S: usize = 4096;
const K: usize = 8192;

fn par_of(vault: &Path) -> PathBuf {
    PathBuf::from(format!("{}.par", vault.display()))
}

fn recovery_for(k: usize, percent: usize) -> usize {
    (k * percent).div_ceil(100)
}

/// The parity file's length for a vault of `len` bytes (FORMAT §15.2).
fn expected_par_len(len: usize, percent: usize) -> usize {
    let mut total = 2 * 128;
    let mut rest = len;
    while rest > 0 {
        let bytes = rest.min(S * K);
        let k = bytes.div_ceil(S);
        let m = recovery_for(k, percent);
        total += 2 * (64 + 4 * k + 4 * m) + m * S;
        rest -= bytes;
    }
    total
}

/// Offset of the first byte of age payload chunk `i` (after the header
/// and the 16-byte nonce).
fn chunk_at(vault: &[u8], i: usize) -> usize {
    let end = vault.windows(5).position(|w| w == b"\n--- ").unwrap() + 5;
    let nl = end + vault[end..].iter().position(|&b| b == b'\n').unwrap() + 1;
    nl + 16 + i * AGE_CHUNK
}

fn flip(bytes: &mut [u8], at: usize) {
    bytes[at] ^= 0x5a;
}

/// Damage every shard in `shards` (indices into the vault's shards).
fn damage_shards(bytes: &mut [u8], shards: impl IntoIterator<Item = usize>) {
    for s in shards {
        flip(bytes, s * S + 17);
    }
}

struct Px {
    fx: Fx,
    vault: PathBuf,
    pristine: Vec<u8>,
    par: Vec<u8>,
}

/// A vault of about `len` bytes of incompressible payload, sealed with
/// `--parity percent` (`--compress none`: the vault's size follows `len`).
fn px(len: usize, percent: u32) -> Px {
    px_stripes(len, percent, None)
}

impl Px {
    /// `repair VAULT --json` → (exit code, JSON, stderr).
    fn repair(&self, extra: &[&str]) -> (i32, serde_json::Value, String) {
        let a = casevault()
            .arg("repair")
            .arg(&self.vault)
            .arg("--json")
            .args(extra)
            .assert();
        let out = a.get_output();
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code().unwrap(), json, stderr_of(&a))
    }

    fn write_vault(&self, bytes: &[u8]) {
        fs::write(&self.vault, bytes).unwrap();
    }

    /// The vault is back to its sealed bytes and the stock tools agree.
    fn assert_pristine(&self) {
        assert!(
            fs::read(&self.vault).unwrap() == self.pristine,
            "vault not restored"
        );
        if let Some(sha) = tool("sha256sum") {
            let out = Command::new(sha)
                .arg("-c")
                .arg("par.vault.sha256")
                .current_dir(self.fx.out())
                .output()
                .unwrap();
            assert!(out.status.success(), "sha256sum -c: {out:?}");
        }
    }

    /// Stock `age -d` decrypts the vault (the whole ciphertext is right,
    /// header and last chunk included).
    fn assert_age_decrypts(&self) {
        let Some(age) = tool("age") else { return };
        let out = Command::new(age)
            .arg("-d")
            .arg("-i")
            .arg(&self.fx.key.path)
            .arg(&self.vault)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "age -d: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.len() > 1000);
    }

    /// Every file of the output directory, with its bytes.
    fn out_state(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = fs::read_dir(self.fx.out())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }
}

#[test]
fn seal_writes_the_parity_file_only_when_asked() {
    let p = px(3 << 20, 5);
    assert_eq!(p.par.len(), expected_par_len(p.pristine.len(), 5));
    assert_eq!(&p.par[..8], b"CVPARITY");
    assert_eq!(&p.par[p.par.len() - 128..][..8], b"CVPARITY");
    let mode = fs::metadata(par_of(&p.vault)).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Without --parity: no parity file; and --force over a vault that had
    // one removes it (it describes other bytes).
    let case = p.fx.cases().join("PAR-1");
    let other = p.fx.vault("plain.vault");
    let json = p.fx.seal(&case, &other, &[]);
    assert!(json.get("parity").is_none());
    assert!(!par_of(&other).exists());
    p.fx.seal(&case, &p.vault, &["--force"]);
    assert!(
        !par_of(&p.vault).exists(),
        "stale parity file left beside a re-sealed vault"
    );

    for bad in ["0", "101", "x"] {
        seal_cmd(&case, p.fx.vault("n.vault"), &p.fx.key.recipient)
            .args(["--parity", bad])
            .assert()
            .code(2);
    }
    assert!(!p.fx.vault("n.vault").exists());
}

#[test]
fn an_intact_vault_is_left_alone() {
    let p = px(1 << 20, 5);
    let before = p.out_state();
    let (code, json, _) = p.repair(&[]);
    assert_eq!(code, 0);
    assert_eq!(json["outcome"], "clean");
    assert_eq!(json["damaged_shards"], 0);
    assert_eq!(json["parity_rewritten"], false);
    assert_eq!(p.out_state(), before);
}

#[test]
fn repairs_the_header_first_middle_and_last_chunk_and_scattered_shards() {
    let p = px(3 << 20, 5);
    let n_shards = p.pristine.len().div_ceil(S);
    let budget = recovery_for(n_shards, 5);
    let last_chunk = (p.pristine.len() - chunk_at(&p.pristine, 0)) / AGE_CHUNK;
    let cases: Vec<(&str, Vec<usize>)> = vec![
        ("age header", vec![40]),
        ("first chunk", vec![chunk_at(&p.pristine, 0) + 3]),
        (
            "middle chunk",
            vec![chunk_at(&p.pristine, last_chunk / 2) + 100],
        ),
        ("last chunk", vec![p.pristine.len() - 1]),
        (
            "scattered shards, the whole budget",
            (0..budget)
                .map(|i| (i * n_shards / budget) * S + 9)
                .collect(),
        ),
    ];
    for (what, offsets) in cases {
        let mut bad = p.pristine.clone();
        for &o in &offsets {
            flip(&mut bad, o);
        }
        p.write_vault(&bad);
        let (code, json, err) = p.repair(&[]);
        assert_eq!(code, 0, "{what}: {err}");
        assert_eq!(json["outcome"], "repaired", "{what}");
        let shards: std::collections::BTreeSet<usize> = offsets.iter().map(|o| o / S).collect();
        assert_eq!(json["damaged_shards"], shards.len(), "{what}");
        assert_eq!(json["checked_against"], "sidecar");
        p.assert_pristine();
        if what == "age header" || what == "last chunk" {
            p.assert_age_decrypts();
        }
    }
    // Scattered shards take a text report too.
    let mut bad = p.pristine.clone();
    damage_shards(&mut bad, [1, 100, 700]);
    p.write_vault(&bad);
    let a = casevault().arg("repair").arg(&p.vault).assert().code(0);
    let text = stdout_of(&a);
    assert!(
        text.contains("repaired 3 damaged shards in 1 stripes"),
        "{text}"
    );
    p.assert_pristine();
    verify_cmd(&p.vault, &p.fx.key.path).assert().code(0);
}

#[test]
fn damage_beyond_the_budget_changes_nothing() {
    let p = px(3 << 20, 5);
    let n_shards = p.pristine.len().div_ceil(S);
    let budget = recovery_for(n_shards, 5);
    let mut bad = p.pristine.clone();
    damage_shards(&mut bad, 200..200 + budget + 1);
    p.write_vault(&bad);
    let before = p.out_state();
    let (code, json, err) = p.repair(&[]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(json["outcome"], "unrepairable");
    assert_eq!(json["damage"][0]["damaged_data_shards"], budget + 1);
    assert_eq!(json["damage"][0]["usable_recovery_shards"], budget);
    assert_eq!(json["damage"][0]["repairable"], false);
    assert!(err.contains("beyond the parity budget"), "{err}");
    assert!(err.contains("par.vault"), "{err}");
    assert_eq!(p.out_state(), before, "a refused repair changed files");
    // Exactly at the budget it is repaired.
    let mut bad = p.pristine.clone();
    damage_shards(&mut bad, 200..200 + budget);
    p.write_vault(&bad);
    assert_eq!(p.repair(&[]).0, 0);
    p.assert_pristine();
}

#[test]
fn stripes_are_repaired_or_refused_one_by_one() {
    // Three stripes: 2 full (32 MiB each) and a short one.
    let p = px(70 << 20, 5);
    let n = p.pristine.len().div_ceil(S);
    assert!(n > 2 * K);
    let budget_full = recovery_for(K, 5);
    let mut bad = p.pristine.clone();
    damage_shards(&mut bad, (0..50).map(|i| i * 100));
    damage_shards(&mut bad, (2 * K..n).step_by(97));
    p.write_vault(&bad);
    let (code, json, err) = p.repair(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["stripes"], 3);
    let stripes: Vec<u64> = json["damage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["stripe"].as_u64().unwrap())
        .collect();
    assert_eq!(stripes, [0, 2]);
    p.assert_pristine();
    p.assert_age_decrypts();

    // Damage in the last stripe only: the intact stripes before it are
    // copied into the rebuilt vault too.
    let mut bad = p.pristine.clone();
    damage_shards(&mut bad, [2 * K + 1, n - 1]);
    p.write_vault(&bad);
    let (code, json, err) = p.repair(&[]);
    assert_eq!((code, &json["outcome"]), (0, &"repaired".into()), "{err}");
    assert_eq!(json["damage"][0]["stripe"], 2);
    p.assert_pristine();

    // A burst beyond the middle stripe's budget: refused, whatever the
    // other stripes could do.
    let mut bad = p.pristine.clone();
    damage_shards(&mut bad, [3]);
    damage_shards(&mut bad, K + 10..K + 10 + budget_full + 1);
    p.write_vault(&bad);
    let (code, json, _) = p.repair(&[]);
    assert_eq!(code, 3);
    assert_eq!(json["damage"][1]["stripe"], 1);
    assert_eq!(json["damage"][1]["repairable"], false);
    assert_eq!(json["damage"][0]["repairable"], true);
    assert!(fs::read(&p.vault).unwrap() == bad);
}

#[test]
fn a_truncated_or_extended_vault_is_cut_back_to_its_bytes() {
    let p = px(2 << 20, 5);
    let cut = &p.pristine[..p.pristine.len() - 5000];
    p.write_vault(cut);
    let (code, json, err) = p.repair(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["outcome"], "repaired");
    p.assert_pristine();

    let mut longer = p.pristine.clone();
    longer.extend_from_slice(b"appended by a broken copy");
    p.write_vault(&longer);
    let (code, json, _) = p.repair(&[]);
    assert_eq!(code, 0);
    assert_eq!(json["outcome"], "repaired");
    p.assert_pristine();
}

/// Geometry of a one-stripe vault's parity file: the offsets of its
/// first table copy, its recovery shards and its second copy.
fn one_stripe_layout(vault_len: usize, percent: usize) -> (usize, usize, usize) {
    let k = vault_len.div_ceil(S);
    let m = recovery_for(k, percent);
    let table = 64 + 4 * k + 4 * m;
    (128, 128 + table, 128 + table + m * S)
}

#[test]
fn a_damaged_parity_file_says_what_survives() {
    let p = px(2 << 20, 5);
    let len = p.pristine.len();
    let (t1, rec, t2) = one_stripe_layout(len, 5);
    let par_path = par_of(&p.vault);
    let mut bad_vault = p.pristine.clone();
    damage_shards(&mut bad_vault, [5, 50]);

    // Each damage to the parity file that leaves enough of it.
    let survivable: Vec<(&str, Vec<usize>, &str)> = vec![
        ("header", vec![20], "header_ok"),
        ("trailer", vec![p.par.len() - 100], "trailer_ok"),
        ("one table copy", vec![t1 + 40], "table_copies_damaged"),
        (
            "recovery shards",
            vec![rec + 10, rec + S + 10],
            "recovery_shards_damaged",
        ),
    ];
    for (what, offsets, field) in survivable {
        let mut par = p.par.clone();
        for &o in &offsets {
            flip(&mut par, o);
        }
        fs::write(&par_path, &par).unwrap();
        p.write_vault(&bad_vault);
        let (code, json, err) = p.repair(&[]);
        assert_eq!(code, 0, "{what}: {err}");
        assert_eq!(json["outcome"], "repaired", "{what}");
        let state = &json["parity_state"][field];
        match field {
            "header_ok" | "trailer_ok" => assert_eq!(*state, false, "{what}"),
            "table_copies_damaged" => assert_eq!(*state, 1, "{what}"),
            _ => assert_eq!(*state, 2, "{what}"),
        }
        assert_eq!(json["parity_rewritten"], true, "{what}");
        p.assert_pristine();
        // The parity file is written anew: byte for byte the sealed one.
        assert!(
            fs::read(&par_path).unwrap() == p.par,
            "{what}: parity not rewritten"
        );
    }

    // A clean vault with a damaged parity file: exit 0, parity rewritten.
    let mut par = p.par.clone();
    flip(&mut par, rec + 3 * S);
    fs::write(&par_path, &par).unwrap();
    let (code, json, _) = p.repair(&[]);
    assert_eq!((code, &json["outcome"]), (0, &serde_json::json!("clean")));
    assert_eq!(json["parity_state"]["recovery_shards_damaged"], 1);
    assert!(fs::read(&par_path).unwrap() == p.par);

    // Not enough left: both table copies of the damaged stripe, or both
    // geometry blocks. Nothing changes.
    let fatal: Vec<(&str, Vec<usize>, &str)> = vec![
        (
            "both table copies",
            vec![t1 + 40, t2 + 40],
            "tables are lost",
        ),
        (
            "header and trailer",
            vec![20, p.par.len() - 100],
            "both its header and its trailer are damaged",
        ),
    ];
    for (what, offsets, message) in fatal {
        let mut par = p.par.clone();
        for &o in &offsets {
            flip(&mut par, o);
        }
        fs::write(&par_path, &par).unwrap();
        p.write_vault(&bad_vault);
        let before = p.out_state();
        let (code, _, err) = p.repair(&[]);
        assert_eq!(code, 3, "{what}: {err}");
        assert!(err.contains(message), "{what}: {err}");
        assert_eq!(p.out_state(), before, "{what}");
    }
}

#[test]
fn the_sidecar_decides_and_the_trailer_stands_in_for_a_lost_one() {
    let p = px(1 << 20, 10);
    let side = PathBuf::from(format!("{}.sha256", p.vault.display()));
    let mut bad = p.pristine.clone();
    damage_shards(&mut bad, [7]);

    // No sidecar: the trailer's digest is the reference, and says so.
    let line = fs::read(&side).unwrap();
    fs::remove_file(&side).unwrap();
    p.write_vault(&bad);
    let (code, json, _) = p.repair(&[]);
    assert_eq!(code, 0);
    assert_eq!(json["checked_against"], "parity trailer");
    assert!(fs::read(&p.vault).unwrap() == p.pristine);
    fs::write(&side, &line).unwrap();

    // A parity file of another vault: refused, nothing changed.
    let other = px(1 << 20, 10);
    fs::write(par_of(&p.vault), &other.par).unwrap();
    p.write_vault(&bad);
    let before = p.out_state();
    let (code, _, err) = p.repair(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("describes another vault"), "{err}");
    assert_eq!(p.out_state(), before);

    // No parity file at all: an error naming it.
    fs::remove_file(par_of(&p.vault)).unwrap();
    let (code, _, err) = p.repair(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("par.vault.par"), "{err}");
    assert_error_message(&err);

    // --parity names another file; an S3 vault is refused (repair works
    // on a local copy).
    fs::write(p.fx.root().join("elsewhere.par"), &p.par).unwrap();
    let elsewhere = p.fx.root().join("elsewhere.par");
    let (code, json, _) = p.repair(&["--parity", elsewhere.to_str().unwrap()]);
    assert_eq!(
        (code, &json["outcome"]),
        (0, &serde_json::json!("repaired"))
    );
    casevault()
        .args(["repair", "s3://bucket/C/C.vault"])
        .assert()
        .code(2);
}

#[test]
fn a_signed_vault_is_accepted_only_if_its_signature_still_verifies() {
    let Some(keygen) = tool("ssh-keygen") else {
        return;
    };
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "SIG-PAR").root.clone();
    let ssh = fx.root().join("ssh_key");
    run_tool(
        Command::new(keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "a@lab", "-f"])
            .arg(&ssh),
    );
    let vault = fx.vault("par.vault");
    fx.seal(
        &case,
        &vault,
        &["--sign", ssh.to_str().unwrap(), "--parity", "20"],
    );
    let pristine = fs::read(&vault).unwrap();
    let p = Px {
        par: fs::read(par_of(&vault)).unwrap(),
        fx,
        vault,
        pristine,
    };
    let mut bad = p.pristine.clone();
    flip(&mut bad, 300);
    p.write_vault(&bad);
    assert_eq!(p.repair(&[]).0, 0);
    p.assert_pristine();

    // A VAULT.sig that does not verify over the rebuilt bytes: refused.
    let sig = PathBuf::from(format!("{}.sig", p.vault.display()));
    let text = fs::read_to_string(&sig).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mid = lines.len() / 2;
    let swapped: String = lines[mid].chars().rev().collect();
    lines[mid] = swapped;
    fs::write(&sig, lines.join("\n") + "\n").unwrap();
    p.write_vault(&bad);
    let before = p.out_state();
    let (code, _, err) = p.repair(&[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("par.vault.sig"), "{err}");
    assert_eq!(p.out_state(), before);
}

#[test]
fn repair_as_nobody_keeps_owner_and_mode_and_fails_cleanly() {
    let p = px(1 << 20, 5);
    let mut bad = p.pristine.clone();
    damage_shards(&mut bad, [3, 9]);
    p.write_vault(&bad);
    let Some(nobody) = crate::unpriv::Unprivileged::new(p.fx.root()) else {
        return;
    };
    let out = nobody.run([std::ffi::OsStr::new("repair"), p.vault.as_os_str()]);
    assert_exit(&out, 0);
    let meta = fs::metadata(&p.vault).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (crate::unpriv::NOBODY, 0o600)
    );
    assert!(fs::read(&p.vault).unwrap() == p.pristine);

    // The vault's directory not writable by nobody: an error naming it,
    // the damaged vault as it was.
    p.write_vault(&bad);
    std::os::unix::fs::chown(p.vault.parent().unwrap(), Some(0), Some(0)).unwrap();
    fs::set_permissions(p.vault.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = nobody.run([std::ffi::OsStr::new("repair"), p.vault.as_os_str()]);
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("out"), "{err}");
    assert_error_message(&err);
    assert!(fs::read(&p.vault).unwrap() == bad);
}

/// Damage one byte in the middle of `vault`, repair, and check it is back.
fn damage_and_repair(vault: &Path) {
    let good = fs::read(vault).unwrap();
    let mut bad = good.clone();
    flip(&mut bad, good.len() / 2);
    fs::write(vault, &bad).unwrap();
    casevault().arg("repair").arg(vault).assert().code(0);
    assert!(
        fs::read(vault).unwrap() == good,
        "{} not repaired",
        vault.display()
    );
}

#[test]
fn rekey_writes_or_renews_the_parity_file() {
    let p = px(1 << 20, 5);
    let key = p.fx.key.path.to_str().unwrap().to_string();
    let rcpt = p.fx.key.recipient.clone();
    // In place, without --parity: the old parity file described the old
    // bytes; it is written anew, same percentage.
    casevault()
        .arg("rekey")
        .arg(&p.vault)
        .args(["--in-place", "-i", &key, "-r", &rcpt])
        .assert()
        .code(0);
    let renewed = fs::read(par_of(&p.vault)).unwrap();
    let len = fs::metadata(&p.vault).unwrap().len() as usize;
    assert_eq!(renewed.len(), expected_par_len(len, 5));
    assert!(renewed != p.par);
    damage_and_repair(&p.vault);

    // A parity file whose header and trailer are both unreadable says
    // nothing of its percentage: rekey removes it rather than leave a
    // parity file of the replaced bytes.
    let mut par = fs::read(par_of(&p.vault)).unwrap();
    let n = par.len();
    flip(&mut par, 20);
    flip(&mut par, n - 100);
    fs::write(par_of(&p.vault), &par).unwrap();
    casevault()
        .arg("rekey")
        .arg(&p.vault)
        .args(["--in-place", "-i", &key, "-r", &rcpt])
        .assert()
        .code(0);
    assert!(
        !par_of(&p.vault).exists(),
        "unreadable stale parity file left"
    );

    // To a new vault with --parity.
    let new = p.fx.vault("new.vault");
    let a = casevault()
        .arg("rekey")
        .arg(&p.vault)
        .arg("-o")
        .arg(&new)
        .args(["-i", &key, "-r", &rcpt, "--parity", "20", "--json"])
        .assert()
        .code(0);
    assert_eq!(json_of(&a)["parity"], par_of(&new).to_str().unwrap());
    let len = fs::metadata(&new).unwrap().len() as usize;
    assert_eq!(
        fs::read(par_of(&new)).unwrap().len(),
        expected_par_len(len, 20)
    );
    damage_and_repair(&new);
}

#[test]
fn store_push_carries_the_parity_file_or_writes_one() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "C1").root.clone();
    let (src, dst, dst2) = (
        fx.root().join("src"),
        fx.root().join("dst"),
        fx.root().join("dst2"),
    );
    for d in [&src, &dst, &dst2] {
        fs::create_dir_all(d.join("C1")).unwrap();
    }
    let with = src.join("C1/C1.20261129T010000.000001Z.vault");
    fx.seal(&case, &with, &["--parity", "10"]);
    let without = src.join("C1/C1.20261129T020000.000001Z.vault");
    fx.seal(&case, &without, &[]);

    // The source's parity file travels with its vault; none is made up.
    casevault()
        .args(["store", "push"])
        .arg(&src)
        .arg(&dst)
        .assert()
        .code(0);
    let copied = dst.join("C1").join(with.file_name().unwrap());
    assert!(fs::read(par_of(&copied)).unwrap() == fs::read(par_of(&with)).unwrap());
    assert!(!par_of(&dst.join("C1").join(without.file_name().unwrap())).exists());
    damage_and_repair(&copied);

    // --parity: every copy gets one computed from the source.
    casevault()
        .args(["store", "push", "--parity", "5"])
        .arg(&src)
        .arg(&dst2)
        .assert()
        .code(0);
    for v in [&with, &without] {
        let c = dst2.join("C1").join(v.file_name().unwrap());
        let len = fs::metadata(&c).unwrap().len() as usize;
        assert_eq!(
            fs::read(par_of(&c)).unwrap().len(),
            expected_par_len(len, 5)
        );
        damage_and_repair(&c);
    }
}

// ---------------------------------------------------------------------------
// Issue #16: an independent check of the GF(2^16) code. scripts/par-ref is
// a pure-Python implementation of FORMAT §15 written from the mathematics
// of §15.1 (no Reed–Solomon library): it recomputes every recovery shard
// casevault writes, repairs with casevault's parity files, and checks the
// parity files casevault's repair rewrites.

/// `python3 scripts/par-ref ARGS…`; None where python3 is missing
/// locally (under CI=true `tool` fails instead).
fn par_ref(args: &[&std::ffi::OsStr]) -> Option<std::process::Output> {
    let python = tool("python3")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/par-ref");
    Some(
        Command::new(python)
            .arg(script)
            .args(args)
            .output()
            .unwrap(),
    )
}

fn par_ref_check(vault: &Path, par: &Path) -> Option<std::process::Output> {
    par_ref(&["check".as_ref(), vault.as_os_str(), par.as_os_str()])
}

/// Like [`px`], with `CASEVAULT_PARITY_STRIPE_SHARDS` (debug builds only)
/// set to `stripe` when given, so that a small vault has several stripes.
fn px_stripes(len: usize, percent: u32, stripe: Option<usize>) -> Px {
    let fx = Fx::new();
    let case = fx.cases().join("PAR-1");
    CaseTree::new(&case)
        .file("extraction/blob.bin", &seeded_bytes(16, len))
        .file("report.xml", b"<report/>\n");
    let vault = fx.vault("par.vault");
    let mut cmd = seal_cmd(&case, &vault, &fx.key.recipient);
    cmd.args([
        "--json",
        "--compress",
        "none",
        "--parity",
        &percent.to_string(),
    ]);
    if let Some(k) = stripe {
        cmd.env("CASEVAULT_PARITY_STRIPE_SHARDS", k.to_string());
    }
    let a = cmd.assert();
    assert_exit(a.get_output(), 0);
    assert_eq!(json_of(&a)["parity"], par_of(&vault).to_str().unwrap());
    let pristine = fs::read(&vault).unwrap();
    let par = fs::read(par_of(&vault)).unwrap();
    Px {
        fx,
        vault,
        pristine,
        par,
    }
}

/// (k_i, m_i) of every stripe of a vault of `len` bytes.
fn stripe_shape(len: usize, percent: usize, stripe: usize) -> Vec<(usize, usize)> {
    (0..len.div_ceil(S * stripe))
        .map(|i| {
            let k = (len - i * S * stripe).min(S * stripe).div_ceil(S);
            (k, recovery_for(k, percent))
        })
        .collect()
}

/// In each stripe, the full budget of data shards (vault-wide indices):
/// `m_i` shards spread over the stripe, its last one included.
fn full_budget(shape: &[(usize, usize)], stripe: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, &(k, m)) in shape.iter().enumerate() {
        let mut mine: Vec<usize> = (0..m - 1).map(|t| t * k / m).collect();
        mine.push(k - 1);
        out.extend(mine.iter().map(|x| i * stripe + x));
    }
    out
}

#[test]
fn par_ref_recomputes_and_repairs_what_casevault_writes() {
    if tool("python3").is_none() {
        return;
    }
    // (payload bytes, PERCENT, stripe override): one stripe of k = 76 with
    // m = 8 (k not a multiple of m); the same with m = 6 (not a power of
    // two: chunks of n = 8); three stripes of K = 16 (m = 5) and a last one
    // of k = 4 (m = 2).
    for (len, percent, stripe) in [
        (300_000, 10, None),
        (300_000, 7, None),
        (200_000, 30, Some(16)),
    ] {
        let p = px_stripes(len, percent, stripe);
        let k_max = stripe.unwrap_or(K);
        let shape = stripe_shape(p.pristine.len(), percent as usize, k_max);
        let (k0, m0) = shape[0];
        let what = format!("{len} bytes, {percent} %, {} stripe(s)", shape.len());
        if stripe.is_none() {
            assert_eq!(shape.len(), 1, "{what}");
            assert_ne!(k0 % m0.next_power_of_two(), 0, "{what}: k is a whole chunk");
        } else {
            assert!(shape.len() > 2 && shape.last().unwrap().0 < k_max, "{what}");
        }
        let par_path = par_of(&p.vault);

        // 1. par-ref recomputes every recovery shard casevault wrote.
        let out = par_ref_check(&p.vault, &par_path).unwrap();
        assert_exit(&out, 0);
        let summary = String::from_utf8_lossy(&out.stdout);
        let (ks, ms): (usize, usize) = shape.iter().fold((0, 0), |a, s| (a.0 + s.0, a.1 + s.1));
        assert!(
            summary.starts_with("par-ref: ok:")
                && summary.contains(&format!(
                    "{} stripe(s), {ks} data + {ms} recovery shards",
                    shape.len()
                )),
            "{what}: {summary}"
        );

        // 2. par-ref repairs a vault damaged to the full budget of every
        //    stripe (and truncated), from casevault's parity file.
        let mut damaged = p.pristine.clone();
        damage_shards(&mut damaged, full_budget(&shape, k_max));
        damaged.truncate(damaged.len() - 100);
        let bad = p.fx.out().join("damaged.vault");
        fs::write(&bad, &damaged).unwrap();
        let fixed = p.fx.out().join("fixed.vault");
        let out = par_ref(&[
            "repair".as_ref(),
            bad.as_os_str(),
            par_path.as_os_str(),
            fixed.as_os_str(),
        ])
        .unwrap();
        assert_exit(&out, 0);
        assert!(
            fs::read(&fixed).unwrap() == p.pristine,
            "{what}: par-ref's repair differs from the sealed vault"
        );

        // One shard more than the budget of the first stripe: par-ref
        // refuses and writes nothing.
        let mut over = damaged.clone();
        let spare = (0..k0).find(|x| !full_budget(&shape, k_max).contains(x));
        damage_shards(&mut over, [spare.unwrap()]);
        fs::write(&bad, &over).unwrap();
        fs::remove_file(&fixed).unwrap();
        let out = par_ref(&[
            "repair".as_ref(),
            bad.as_os_str(),
            par_path.as_os_str(),
            fixed.as_os_str(),
        ])
        .unwrap();
        assert_exit(&out, 1);
        assert!(!fixed.exists(), "{what}: output written beyond the budget");
        fs::remove_file(&bad).unwrap();

        // 3. The other way round: casevault repairs the same damage and
        //    rewrites a damaged parity file; par-ref checks both.
        p.write_vault(&damaged);
        let (code, json, err) = p.repair(&[]);
        assert_eq!(
            (code, &json["outcome"]),
            (0, &"repaired".into()),
            "{what}: {err}"
        );
        p.assert_pristine();
        let mut par = p.par.clone();
        let rec0 = BLOCK + 64 + 4 * (k0 + m0);
        flip(&mut par, rec0 + 7);
        fs::write(&par_path, &par).unwrap();
        let (code, json, err) = p.repair(&[]);
        assert_eq!(code, 0, "{what}: {err}");
        assert_eq!(json["parity_rewritten"], true, "{what}");
        assert_exit(&par_ref_check(&p.vault, &par_path).unwrap(), 0);

        // 4. The check can fail: one flipped byte of a recovery shard …
        let mut par = p.par.clone();
        let last_rec = rec0 + (m0 - 1) * S;
        flip(&mut par, last_rec + 1000);
        fs::write(&par_path, &par).unwrap();
        let out = par_ref_check(&p.vault, &par_path).unwrap();
        assert_exit(&out, 1);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("stripe 0: recovery shard {}: CRC-32", m0 - 1))
                && err.contains(&format!(
                    "stripe 0: recovery shard {} differs from the recomputed one at byte 1000",
                    m0 - 1
                )),
            "{what}: {err}"
        );
        // … and the same byte with its CRC and both table digests forged,
        // so that only the recomputation can see it.
        forge_recovery_crc(&mut par, k0, m0, m0 - 1);
        fs::write(&par_path, &par).unwrap();
        let out = par_ref_check(&p.vault, &par_path).unwrap();
        assert_exit(&out, 1);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("differs from the recomputed one") && !err.contains("CRC-32"),
            "{what}: {err}"
        );
    }
}

/// Length of the parity file's header.
const BLOCK: usize = 128;

/// Rewrite stripe 0's CRC of recovery shard `j` to match its (damaged)
/// bytes, and both table copies' digests (FORMAT §15.2).
fn forge_recovery_crc(par: &mut [u8], k: usize, m: usize, j: usize) {
    use sha2::{Digest, Sha256};
    let tl = 64 + 4 * (k + m);
    let rec = BLOCK + tl + j * S;
    let crc = crc32fast::hash(&par[rec..rec + S]).to_le_bytes();
    for table in [BLOCK, BLOCK + tl + m * S] {
        let at = table + 32 + 4 * (k + j);
        par[at..at + 4].copy_from_slice(&crc);
        let digest = Sha256::digest(&par[table..table + tl - 32]);
        par[table + tl - 32..table + tl].copy_from_slice(&digest);
    }
}

#[test]
fn par_ref_agrees_at_the_edges_of_the_code() {
    if tool("python3").is_none() {
        return;
    }
    // par-ref's own checks: the field constants (FORMAT §15.1), and any m
    // losses of small stripes rebuilt.
    assert_exit(&par_ref(&["selftest".as_ref()]).unwrap(), 0);
    // A vault of k = 28 shards: m = 1 (n = 1: the XOR of the data
    // shards); m = k (n = 32 > k: one partial chunk); K = 9 at 33 % (m = 3,
    // n = 4: two full chunks and a partial one, three such stripes and a
    // last one of k = 1); K = 1 (28 stripes of one data and one recovery
    // shard).
    for (percent, stripe) in [(1, None), (100, None), (33, Some(9)), (100, Some(1))] {
        let p = px_stripes(100_000, percent, stripe);
        let shape = stripe_shape(p.pristine.len(), percent as usize, stripe.unwrap_or(K));
        let what = format!("{percent} %, K = {stripe:?}: {shape:?}");
        let par_path = par_of(&p.vault);
        assert_exit(&par_ref_check(&p.vault, &par_path).unwrap(), 0);

        // The last byte but four of the last recovery shard of the last
        // stripe (just before that stripe's second table copy).
        let (n, &(k, m)) = (shape.len(), shape.last().unwrap());
        let mut par = p.par.clone();
        flip(&mut par, p.par.len() - BLOCK - (64 + 4 * (k + m)) - 5);
        fs::write(&par_path, &par).unwrap();
        let out = par_ref_check(&p.vault, &par_path).unwrap();
        assert_exit(&out, 1);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "stripe {}: recovery shard {} differs from the recomputed one at byte {}",
                n - 1,
                m - 1,
                S - 5
            )),
            "{what}: {err}"
        );
    }
}

/// An XFS file system (with reflink) in a loop-mounted image under `dir`;
/// `None` (with the reason) where this cannot be done: not root, or no
/// loop device. A mount that fails otherwise fails the test.
fn xfs(dir: &Path) -> Option<Mounted> {
    // Sparse; mkfs.xfs wants at least 300 MB.
    loop_mount(
        dir,
        "mkfs.xfs",
        &["-q", "-m", "reflink=1"],
        512 << 20,
        "strictatime",
    )
}

/// On a file system that shares blocks (XFS with reflink), repair starts
/// the repaired copy as a clone of the vault, reads and checks the clone
/// itself, and writes only the rebuilt shards into it (`"rewrite":
/// "clone"`): the result is the sealed vault byte for byte.
/// Without reflink (this file system's /tmp, most likely) the copy is
/// written whole (`"copy"`), as the other tests show.
#[test]
fn repair_on_xfs_clones_the_vault_and_writes_only_the_rebuilt_shards() {
    let fx = Fx::new();
    let Some(xfs) = xfs(fx.root()) else {
        return;
    };
    let case = fx.cases().join("XFS-1");
    let len = 1 << 20;
    CaseTree::new(&case).file("blob.bin", &seeded_bytes(7, len));
    let vault = xfs.dir.join("x.vault");
    let mut cmd = seal_cmd(&case, &vault, &fx.key.recipient);
    cmd.args(["--compress", "none", "--parity", "20"])
        .env("CASEVAULT_PARITY_STRIPE_SHARDS", "64");
    assert_exit(cmd.assert().get_output(), 0);
    let pristine = fs::read(&vault).unwrap();
    let mut bad = pristine.clone();
    // One shard in each of the four stripes, and bytes appended.
    damage_shards(&mut bad, [3, 64 + 10, 128 + 63, 192]);
    bad.extend_from_slice(b"appended");
    fs::write(&vault, &bad).unwrap();
    // The damaged vault's inode stays reachable after the rename, and its
    // access time (strictatime) tells whether repair read it: it must read
    // only the clone.
    let old = xfs.dir.join("damaged.link");
    fs::hard_link(&vault, &old).unwrap();
    let past = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_times(fs::FileTimes::new().set_accessed(past))
        .unwrap();
    let repair = |code| {
        json_of(
            &casevault()
                .arg("repair")
                .arg(&vault)
                .arg("--json")
                .assert()
                .code(code),
        )
    };
    let j = repair(0);
    assert_eq!(j["outcome"], "repaired", "{j}");
    assert_eq!(j["rewrite"], "clone", "{j}");
    assert_eq!(j["repaired_shards"], 4, "{j}");
    assert!(
        fs::read(&vault).unwrap() == pristine,
        "not the sealed bytes"
    );
    assert_eq!(
        fs::metadata(&old).unwrap().accessed().unwrap(),
        past,
        "repair read the damaged vault, not only its clone"
    );
    fs::remove_file(&old).unwrap();
    let listing = || {
        let mut l: Vec<_> = fs::read_dir(&xfs.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        l.sort();
        l
    };
    let left = listing();
    assert_eq!(left.len(), 3, "vault, sidecar, parity only: {left:?}");
    // An intact vault: its clone is removed unused, the vault untouched.
    let ino = fs::metadata(&vault).unwrap().ino();
    assert_eq!(repair(0)["outcome"], "clean");
    assert_eq!(fs::metadata(&vault).unwrap().ino(), ino, "vault replaced");
    assert_eq!(listing(), left);
    // Damage beyond stripe 1's budget (13 recovery shards of 64): the
    // clone is dropped and nothing changes.
    let mut bad = pristine.clone();
    damage_shards(&mut bad, 64..64 + 14);
    fs::write(&vault, &bad).unwrap();
    assert_eq!(repair(3)["outcome"], "unrepairable");
    assert!(fs::read(&vault).unwrap() == bad, "vault changed");
    assert_eq!(listing(), left);
}

/// The parity file is written around the page cache like the vault
/// (src/direct.rs): right after a seal on a loop-mounted ext4, no more of
/// `VAULT.par` is cached than its last, partial 4 MiB chunk. Its bytes are
/// the parity all the same: its length is the geometry's, and a damaged
/// vault is repaired from it.
#[test]
fn seal_writes_the_parity_around_the_page_cache() {
    let fx = Fx::new();
    let Some(fincore) = tool("fincore") else {
        return;
    };
    let Some(ext4) = loop_mount(fx.root(), "mkfs.ext4", &["-q"], 128 << 20, "defaults") else {
        return;
    };
    let case = fx.cases().join("DIRECT-PAR");
    CaseTree::new(&case).file("blob.bin", &seeded_bytes(12, (18 << 20) + 4321));
    let vault = ext4.dir.join("p.vault");
    let mut cmd = seal_cmd(&case, &vault, &fx.key.recipient);
    cmd.args(["--compress", "none", "--parity", "50"]);
    assert_exit(cmd.assert().get_output(), 0);
    let len = fs::metadata(&vault).unwrap().len() as usize;
    let par_len = fs::metadata(par_of(&vault)).unwrap().len() as usize;
    assert_eq!(par_len, expected_par_len(len, 50));
    assert!(par_len > 8 << 20, "parity of {par_len} bytes");
    let cached = cached_bytes(&fincore, &par_of(&vault));
    assert!(
        cached <= (4 << 20) + 4096,
        "{cached} of the parity file's {par_len} bytes are in the page cache"
    );
    damage_and_repair(&vault);
}

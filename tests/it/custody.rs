//! Issue #5, custody log: records appended by seal, verify and unseal; the
//! hash chain catches edited, deleted, swapped and inserted lines (with the
//! line number, exit 3); parallel appenders lose nothing; `--signers`
//! requires a trusted signature on every record.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

struct Cx {
    fx: Fx,
    vault: PathBuf,
    log: PathBuf,
}

/// A sealed vault and a log with sealed, verified, verified (without a
/// key), unsealed: four records.
fn cx() -> Cx {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "CUS-1").root.clone();
    let vault = fx.vault("cus.vault");
    let log = fx.root().join("custody.jsonl");
    let l = log.to_str().unwrap().to_string();
    fx.seal(
        &case,
        &vault,
        &[
            "--custody",
            &l,
            "--actor",
            "alice@lab",
            "--reason",
            "intake",
        ],
    );
    verify_cmd(&vault, &fx.key.path)
        .args(["--custody", &l])
        .assert()
        .code(0);
    casevault()
        .arg("verify")
        .arg(&vault)
        .args(["--custody", &l, "--reason", "transfer to lab 2"])
        .assert()
        .code(0);
    fx.unseal(
        &vault,
        &fx.dest("cus"),
        &["--custody", &l, "--reason", "disclosure to defence"],
    );
    Cx { fx, vault, log }
}

fn lines(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(log: &Path, lines: &[String]) {
    let mut t = lines.join("\n");
    t.push('\n');
    fs::write(log, t).unwrap();
}

/// `custody verify LOG EXTRA…`: (code, stdout, stderr).
fn custody_verify(log: &Path, extra: &[&str]) -> (i32, String, String) {
    let a = casevault()
        .args(["custody", "verify"])
        .arg(log)
        .args(extra)
        .assert();
    (
        a.get_output().status.code().unwrap(),
        stdout_of(&a),
        stderr_of(&a),
    )
}

fn expect_broken_at(log: &Path, line: u64) -> String {
    let (code, out, err) = custody_verify(log, &[]);
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains(&format!("line {line}:")),
        "expected line {line}: {err}"
    );
    assert_error_message(&err);
    let a = casevault()
        .args(["custody", "verify", "--json"])
        .arg(log)
        .assert()
        .code(3);
    let v = json_of(&a);
    assert_eq!(v["ok"], false);
    assert_eq!(v["line"], line);
    err
}

#[test]
fn seal_verify_unseal_append_a_chain() {
    let c = cx();
    let ls = lines(&c.log);
    assert_eq!(ls.len(), 4, "{ls:?}");
    let mode = fs::metadata(&c.log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let recs: Vec<serde_json::Value> = ls
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sealed_sha =
        fs::read_to_string(format!("{}.sha256", c.vault.display())).unwrap()[..64].to_string();
    let mut prev = "0".repeat(64);
    for (i, (r, l)) in recs.iter().zip(&ls).enumerate() {
        assert_json_keys(
            r,
            &[
                "seq",
                "time",
                "action",
                "actor",
                "host",
                "case_id",
                "vault",
                "vault_sha256",
                "outcome",
                "reason",
                "prev",
            ],
        );
        assert_eq!(r["seq"], i as u64 + 1);
        assert_eq!(r["prev"], prev.as_str());
        assert_eq!(r["vault"], "cus.vault");
        assert_eq!(r["vault_sha256"], sealed_sha.as_str());
        assert_eq!(r["outcome"], "ok");
        assert!(r["time"].as_str().unwrap().ends_with('Z'));
        prev = sha256_hex(l.as_bytes());
    }
    let actions: Vec<&str> = recs.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["sealed", "verified", "verified", "unsealed"]);
    assert_eq!(recs[0]["actor"], "alice@lab");
    assert_eq!(recs[0]["reason"], "intake");
    assert_eq!(recs[0]["case_id"], "CUS-1");
    assert_eq!(recs[3]["reason"], "disclosure to defence");
    assert!(recs[1]["actor"].as_str().unwrap().contains('@'));

    let (code, out, err) = custody_verify(&c.log, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("4 records") && out.contains(&format!("head sha256 {prev}")),
        "{out}"
    );

    // show --json: JSON Lines, exactly the stored records.
    let a = casevault()
        .args(["custody", "show", "--json"])
        .arg(&c.log)
        .assert()
        .code(0);
    assert_eq!(stdout_of(&a), fs::read_to_string(&c.log).unwrap());
    let a = casevault()
        .args(["custody", "show"])
        .arg(&c.log)
        .assert()
        .code(0);
    let out = stdout_of(&a);
    assert_eq!(out.lines().count(), 4);
    assert!(out.contains("disclosure to defence"), "{out}");
}

#[test]
fn failed_verify_is_recorded_as_failed() {
    let c = cx();
    let mut bytes = fs::read(&c.vault).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 1;
    fs::write(&c.vault, bytes).unwrap();
    verify_cmd(&c.vault, &c.fx.key.path)
        .arg("--custody")
        .arg(&c.log)
        .assert()
        .code(3);
    let ls = lines(&c.log);
    let last: serde_json::Value = serde_json::from_str(ls.last().unwrap()).unwrap();
    assert_eq!(last["action"], "verified");
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["seq"], 5);
    assert_eq!(custody_verify(&c.log, &[]).0, 0);
}

#[test]
fn edited_field_is_detected_at_the_next_line() {
    let c = cx();
    let mut ls = lines(&c.log);
    ls[1] = ls[1].replace("\"outcome\":\"ok\"", "\"outcome\":\"failed\"");
    write_lines(&c.log, &ls);
    let err = expect_broken_at(&c.log, 3);
    assert!(err.contains("line 2 was edited"), "{err}");
}

#[test]
fn deleted_line_is_detected() {
    let c = cx();
    let mut ls = lines(&c.log);
    ls.remove(1);
    write_lines(&c.log, &ls);
    expect_broken_at(&c.log, 2);
}

#[test]
fn swapped_lines_are_detected() {
    let c = cx();
    let mut ls = lines(&c.log);
    ls.swap(1, 2);
    write_lines(&c.log, &ls);
    expect_broken_at(&c.log, 2);
}

#[test]
fn inserted_line_is_detected() {
    let c = cx();
    let mut ls = lines(&c.log);
    // A plausible forged record: right seq and prev, after line 2.
    let mut forged: serde_json::Value = serde_json::from_str(&ls[1]).unwrap();
    forged["seq"] = 3.into();
    forged["prev"] = sha256_hex(ls[1].as_bytes()).into();
    forged["reason"] = "forged".into();
    ls.insert(2, serde_json::to_string(&forged).unwrap());
    write_lines(&c.log, &ls);
    expect_broken_at(&c.log, 4);
}

#[test]
fn truncated_last_line_is_detected_and_blocks_appends() {
    let c = cx();
    let mut t = fs::read(&c.log).unwrap();
    t.truncate(t.len() - 10);
    fs::write(&c.log, &t).unwrap();
    expect_broken_at(&c.log, 4);
    // The vault is fine: exit 1 (a custody-log problem), not 3.
    let a = casevault()
        .arg("verify")
        .arg(&c.vault)
        .arg("--custody")
        .arg(&c.log)
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("no line feed"));
    assert_eq!(fs::read(&c.log).unwrap(), t, "nothing appended");
}

/// Issue #10 item 5 (https://github.com/casevault/casevault/issues/10): a
/// torn last line in the custody log after a fully verified unseal or
/// verify is not "do not trust this vault" (exit 3): the restore's result
/// is printed, the error says what succeeded and what did not, exit 1.
#[test]
fn torn_custody_log_after_success_is_exit_1_and_says_what_succeeded() {
    let c = cx();
    let mut t = fs::read(&c.log).unwrap();
    t.truncate(t.len() - 10);
    fs::write(&c.log, &t).unwrap();
    let l = c.log.to_str().unwrap();

    // unseal: the case is restored and reported (human and --json).
    for (name, json) in [("torn-h", false), ("torn-j", true)] {
        let dest = c.fx.dest(name);
        let mut cmd = casevault();
        cmd.arg("unseal")
            .arg(&c.vault)
            .arg("-o")
            .arg(&dest)
            .arg("-i")
            .arg(&c.fx.key.path)
            .args(["--custody", l]);
        if json {
            cmd.arg("--json");
        }
        let a = cmd.assert().code(1);
        let (out, err) = (stdout_of(&a), stderr_of(&a));
        if json {
            let v = json_of(&a);
            assert_eq!(v["case_id"], "CUS-1", "{out}");
        } else {
            assert!(out.starts_with("unsealed CUS-1: "), "{out}");
        }
        assert!(
            err.contains("unsealed and verified CUS-1")
                && err.contains(&format!("the custody record could not be appended to {l}"))
                && err.contains("no line feed")
                && err.contains("the vault and the restored case are fine"),
            "{err}"
        );
        assert!(!err.contains("do not trust"), "{err}");
        assert_error_message(&err);
        assert_same_tree(&c.fx.cases().join("CUS-1"), &dest, false);
    }

    // verify -i: the OK line and the JSON object, then exit 1.
    let a = verify_cmd(&c.vault, &c.fx.key.path)
        .args(["--custody", l, "--json"])
        .assert()
        .code(1);
    assert_eq!(json_of(&a)["ok"], true);
    let err = stderr_of(&a);
    assert!(
        err.contains("verified ")
            && err.contains("the vault is fine")
            && !err.contains("do not trust"),
        "{err}"
    );

    // seal as well.
    let v2 = c.fx.vault("torn2.vault");
    let a = seal_cmd(c.fx.cases().join("CUS-1"), &v2, &c.fx.key.recipient)
        .args(["--custody", l])
        .assert()
        .code(1);
    assert!(stdout_of(&a).starts_with("sealed CUS-1: "));
    assert!(stderr_of(&a).contains("sealed CUS-1 -> "));
    assert!(v2.exists());
    assert_eq!(fs::read(&c.log).unwrap(), t, "nothing appended");

    // A failed operation keeps its own exit code (here: no identity).
    let other = c.fx.new_key("other.txt");
    let a = verify_cmd(&c.vault, &other.path)
        .args(["--custody", l])
        .assert()
        .code(4);
    assert!(stderr_of(&a).contains("custody record of this failure could not be appended"));
}

#[test]
fn parallel_appenders_lose_nothing() {
    let c = cx();
    let children: Vec<_> = (0..16)
        .map(|i| {
            crate::util::bin_command()
                .arg("verify")
                .arg(&c.vault)
                .arg("--custody")
                .arg(&c.log)
                .args(["--reason", &format!("parallel {i}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut ch in children {
        assert!(ch.wait().unwrap().success());
    }
    let ls = lines(&c.log);
    assert_eq!(ls.len(), 20);
    let mut reasons: Vec<String> = ls[4..]
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["reason"].as_str().unwrap().to_string()
        })
        .collect();
    reasons.sort();
    let mut want: Vec<String> = (0..16).map(|i| format!("parallel {i}")).collect();
    want.sort();
    assert_eq!(reasons, want);
    let (code, out, err) = custody_verify(&c.log, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("20 records"), "{out}");
}

fn ssh_key(dir: &Path, name: &str) -> (PathBuf, String) {
    fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    run_tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&p),
    );
    let public = fs::read_to_string(format!("{}.pub", p.display())).unwrap();
    (p, public.trim().to_string())
}

#[test]
fn signed_records_and_signers() {
    if tool("ssh-keygen").is_none() {
        return;
    }
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "CS-1").root.clone();
    let dir = fx.root().join("ssh");
    let (alice, alice_pub) = ssh_key(&dir, "alice");
    let (mallory, _) = ssh_key(&dir, "mallory");
    let allowed = dir.join("allowed");
    fs::write(
        &allowed,
        format!("alice@lab namespaces=\"casevault-vault,casevault-custody\" {alice_pub}\n"),
    )
    .unwrap();
    let log = fx.root().join("signed.jsonl");
    let vault = fx.vault("cs.vault");
    let l = log.to_str().unwrap();
    let a = alice.to_str().unwrap();
    fx.seal(
        &case,
        &vault,
        &["--custody", l, "--sign", a, "--signer", "alice@lab"],
    );
    casevault()
        .arg("verify")
        .arg(&vault)
        .arg("--signers")
        .arg(&allowed)
        .args(["--custody", l, "--sign", a])
        .assert()
        .code(0);
    let (code, out, err) = custody_verify(&log, &["--signers", allowed.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("every record signed by a trusted key"),
        "{out}"
    );

    // Each signed record checks with stock ssh-keygen by the documented
    // byte rule: the line without `,"sig":…` and without its LF.
    for (i, line) in lines(&log).iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let sig = v["sig"].as_str().unwrap();
        let tail = format!(",\"sig\":{}}}", serde_json::to_string(sig).unwrap());
        let unsigned = format!("{}}}", line.strip_suffix(&tail).unwrap());
        let (sp, up) = (dir.join(format!("r{i}.sig")), dir.join(format!("r{i}")));
        fs::write(&sp, sig).unwrap();
        fs::write(&up, unsigned).unwrap();
        run_tool(
            Command::new("ssh-keygen")
                .args(["-Y", "verify", "-f"])
                .arg(&allowed)
                .args(["-I", "alice@lab", "-n", "casevault-custody", "-s"])
                .arg(&sp)
                .stdin(fs::File::open(&up).unwrap()),
        );
    }

    // An edit to the last (signed) record is caught by its signature.
    let mut ls = lines(&log);
    let saved = ls.clone();
    ls[1] = ls[1].replace("\"outcome\":\"ok\"", "\"outcome\":\"failed\"");
    write_lines(&log, &ls);
    let err = expect_broken_at(&log, 2);
    assert!(err.contains("does not verify"), "{err}");
    write_lines(&log, &saved);

    // An unsigned record appended: fine without --signers, 3 with.
    casevault()
        .arg("verify")
        .arg(&vault)
        .args(["--custody", l])
        .assert()
        .code(0);
    assert_eq!(custody_verify(&log, &[]).0, 0);
    let (code, _, err) = custody_verify(&log, &["--signers", allowed.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("line 3:") && err.contains("not signed"),
        "{err}"
    );

    // A record signed by an untrusted key.
    write_lines(&log, &saved);
    casevault()
        .arg("verify")
        .arg(&vault)
        .args(["--custody", l, "--sign"])
        .arg(&mallory)
        .assert()
        .code(0);
    let (code, _, err) = custody_verify(&log, &["--signers", allowed.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("line 3:") && err.contains("does not trust"),
        "{err}"
    );
    // --accept-signer restricts the principal; --signer is its hidden
    // alias for a release (issue #11).
    write_lines(&log, &saved);
    for flag in ["--accept-signer", "--signer"] {
        let args = ["--signers", allowed.to_str().unwrap(), flag];
        let (code, _, _) = custody_verify(&log, &[&args[..], &["bob@lab"]].concat());
        assert_eq!(code, 3, "{flag} bob@lab");
        let (code, _, err) = custody_verify(&log, &[&args[..], &["alice@lab"]].concat());
        assert_eq!(code, 0, "{flag} alice@lab: {err}");
    }
    let help = stdout_of(
        &casevault()
            .args(["custody", "verify", "--help"])
            .assert()
            .code(0),
    );
    assert!(
        help.contains("--accept-signer") && !help.contains("--signer "),
        "{help}"
    );
}

#[test]
fn custody_flags_need_custody() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "CF-1").root.clone();
    casevault()
        .arg("seal")
        .arg(&case)
        .arg("-o")
        .arg(fx.vault("cf.vault"))
        .args(["-r", &fx.key.recipient, "--reason", "x"])
        .assert()
        .code(2);
    assert!(!fx.vault("cf.vault").exists());
}

/// sweep keeps STORE/custody.jsonl by default (issue #4: "in sweep default
/// to STORE/custody.jsonl"): `sealed`, then `removed-source`; `--dry-run`
/// writes nothing; `--no-custody` keeps no log.
#[test]
fn sweep_appends_to_store_custody_log() {
    let fx = Fx::new();
    let inbox = fx.root().join("inbox");
    let store = fx.root().join("store");
    fs::create_dir_all(&store).unwrap();
    small_case(&inbox, "SW-1");
    let sweep = |extra: &[&str]| {
        casevault()
            .arg("sweep")
            .arg(&inbox)
            .arg("-o")
            .arg(&store)
            .args(["-r", &fx.key.recipient])
            .args(extra)
            .assert()
            .code(0);
    };
    sweep(&["--dry-run"]);
    assert!(!store.join("custody.jsonl").exists());
    // Another store, --no-custody: sealed, but no log.
    let other = fx.root().join("store2");
    fs::create_dir_all(&other).unwrap();
    casevault()
        .arg("sweep")
        .arg(&inbox)
        .arg("-o")
        .arg(&other)
        .args(["-r", &fx.key.recipient, "--no-custody"])
        .assert()
        .code(0);
    assert!(!other.join("custody.jsonl").exists());
    assert!(other.join("SW-1").is_dir());
    sweep(&["--remove-source", "--reason", "nightly"]);
    let ls = lines(&store.join("custody.jsonl"));
    let recs: Vec<serde_json::Value> = ls
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = recs.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["sealed", "removed-source"]);
    assert_eq!(recs[0]["case_id"], "SW-1");
    assert_eq!(recs[0]["reason"], "nightly");
    assert_eq!(recs[0]["vault_sha256"], recs[1]["vault_sha256"]);
    assert_eq!(custody_verify(&store.join("custody.jsonl"), &[]).0, 0);
}

/// Issue #10 item 16 (https://github.com/casevault/casevault/issues/10):
/// `custody verify --expect-head HASH` checks that a head pinned earlier
/// is still in the chain (exit 0, and which line it is), and fails with
/// exit 3 when the log was cut back and re-grown (the chain itself stays
/// intact, so without the pinned head nothing would show).
#[test]
fn expect_head_finds_a_pinned_head_or_fails() {
    let c = cx();
    let ls = lines(&c.log);
    let h2 = sha256_hex(ls[1].as_bytes());
    let h4 = sha256_hex(ls[3].as_bytes());

    let (code, out, err) = custody_verify(&c.log, &["--expect-head", &h2]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("head sha256 {h4}")), "{out}");
    assert!(
        out.contains(&format!("expected head {h2} is line 2")),
        "{out}"
    );
    let (code, out, _) = custody_verify(&c.log, &["--expect-head", &h4.to_uppercase(), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["expected_head_line"], 4);
    assert_eq!(v["expected_head"], h4.as_str());

    // Cut the log back to two records and append two new ones: the chain
    // is intact, but the head pinned at four records is gone.
    write_lines(&c.log, &ls[..2]);
    let l = c.log.to_str().unwrap();
    for _ in 0..2 {
        casevault()
            .arg("verify")
            .arg(&c.vault)
            .args(["--custody", l])
            .assert()
            .code(0);
    }
    let (code, _, err) = custody_verify(&c.log, &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = custody_verify(&c.log, &["--expect-head", &h4]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!(
            "the expected head {h4} is not the SHA-256 of any of its 4 records"
        )),
        "{err}"
    );
    assert_error_message(&err);
    let (code, out, _) = custody_verify(&c.log, &["--expect-head", &h4, "--json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["expected_head_line"], serde_json::Value::Null);
    // The head pinned at two records is still there.
    let (code, _, err) = custody_verify(&c.log, &["--expect-head", &h2]);
    assert_eq!(code, 0, "{err}");
    // Not a hash: usage error.
    let (code, _, _) = custody_verify(&c.log, &["--expect-head", "abc"]);
    assert_eq!(code, 2);
}

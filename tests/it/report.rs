//! Issue #14, `casevault report`: one self-contained HTML page per vault.
//! The page is parsed with a real HTML parser (scraper/html5ever) and every
//! fact is compared with what `list --json`, `ssh-keygen` and the custody
//! log say; hostile names must yield no active element; a failed check
//! still writes the page (exit 3); a missing vault writes nothing (exit 1);
//! two runs differ only in the generated-at line; headless Chromium renders
//! and prints it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use scraper::{ElementRef, Html, Selector};

use crate::unpriv::Unprivileged;
use crate::util::*;

/// An OpenSSH key made by the stock ssh-keygen; its public line.
fn ssh_key(dir: &Path, name: &str, comment: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    fs::create_dir_all(dir).unwrap();
    run_tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(&path),
    );
    let public = fs::read_to_string(format!("{}.pub", path.display())).unwrap();
    (path, public.trim().to_string())
}

/// A signed vault of a small case with two custody records (sealed by
/// anna@lab, verified by ben@lab), and an allowed_signers file trusting
/// anna@lab.
struct Rx {
    fx: Fx,
    case: PathBuf,
    vault: PathBuf,
    log: PathBuf,
    allowed: PathBuf,
    anna_pub: PathBuf,
}

fn rx_with(case: impl FnOnce(&Path) -> PathBuf, reason: &str, actor: &str) -> Option<Rx> {
    tool("ssh-keygen")?;
    let fx = Fx::new();
    let case_dir = case(&fx.cases());
    let (anna, anna_line) = ssh_key(&fx.root().join("ssh"), "anna", "anna@lab");
    let allowed = fx.root().join("ssh/allowed_signers");
    fs::write(&allowed, format!("anna@lab {anna_line}\n")).unwrap();
    let vault = fx.vault("CASE-R1.vault");
    let log = fx.root().join("custody.log");
    let a = seal_cmd(&case_dir, &vault, &fx.key.recipient)
        .arg("--sign")
        .arg(&anna)
        .arg("--custody")
        .arg(&log)
        .args(["--actor", "anna@lab", "--reason", reason])
        .assert();
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr_of(&a));
    let a = casevault()
        .arg("verify")
        .arg(&vault)
        .arg("-i")
        .arg(&fx.key.path)
        .arg("--custody")
        .arg(&log)
        .arg("--sign")
        .arg(&anna)
        .args(["--actor", actor, "--reason", "disclosure check"])
        .assert();
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr_of(&a));
    Some(Rx {
        case: case_dir,
        vault,
        log,
        allowed,
        anna_pub: fx.root().join("ssh/anna.pub"),
        fx,
    })
}

fn rx() -> Option<Rx> {
    rx_with(
        |dir| small_case(dir, "CASE-R1").root.clone(),
        "seized 2024-03-14",
        "ben@lab",
    )
}

/// `report VAULT -o OUT ARGS…`: exit code and stdout.
fn report(vault: &Path, out: &Path, args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let a = casevault()
        .arg("report")
        .arg(vault)
        .arg("-o")
        .arg(out)
        .args(args)
        .assert();
    let code = a.get_output().status.code().unwrap_or(-1);
    (code, stdout_of(&a), stderr_of(&a))
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn text(e: ElementRef) -> String {
    e.text().collect::<String>()
}

/// The value cell of the facts row whose header is `label`.
fn fact(doc: &Html, label: &str) -> String {
    for tr in doc.select(&sel("table.facts tr")) {
        let th = tr.select(&sel("th")).next().map(text).unwrap_or_default();
        if th == label {
            return tr.select(&sel("td")).next().map(text).unwrap_or_default();
        }
    }
    panic!("no fact row {label:?}");
}

/// The rows of the first table under the heading `h2`, as cell texts.
fn table_after(doc: &Html, h2: &str) -> Vec<Vec<String>> {
    let mut seen = false;
    for el in doc.select(&sel("h2, table")) {
        if el.value().name() == "h2" {
            seen = text(el) == h2;
        } else if seen {
            return el
                .select(&sel("tbody tr"))
                .map(|tr| tr.select(&sel("td")).map(text).collect())
                .collect();
        }
    }
    panic!("no table after {h2:?}");
}

fn fingerprint(public: &Path) -> String {
    let out = run_tool(Command::new("ssh-keygen").arg("-lf").arg(public));
    String::from_utf8(out)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

fn list_json(fx: &Fx, vault: &Path) -> serde_json::Value {
    let a = casevault()
        .arg("list")
        .arg(vault)
        .arg("-i")
        .arg(&fx.key.path)
        .arg("--json")
        .assert()
        .success();
    json_of(&a)
}

/// Every field the issue names, on a signed, custody-logged vault, checked
/// against `list --json`, `ssh-keygen -l`, the custody log and the files.
#[test]
fn report_states_every_fact() {
    let Some(r) = rx() else { return };
    let out = r.fx.root().join("report.html");
    let csv = r.fx.root().join("listing.csv");
    let (code, stdout, err) = report(
        &r.vault,
        &out,
        &[
            os("-i"),
            r.fx.key.path.as_os_str(),
            os("--signers"),
            r.allowed.as_os_str(),
            os("--custody"),
            r.log.as_os_str(),
            os("--listing"),
            csv.as_os_str(),
            os("--json"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let page = fs::read_to_string(&out).unwrap();
    let doc = Html::parse_document(&page);
    let list = list_json(&r.fx, &r.vault);
    let vault_bytes = fs::read(&r.vault).unwrap();
    let sha = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(&vault_bytes))
    };
    let fp = fingerprint(&r.anna_pub);

    // Report and listing are private: names and hashes are sensitive.
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(&csv).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let status = text(doc.select(&sel("div.status")).next().unwrap());
    assert!(
        status.contains("VERIFIED: every file was decrypted and checked"),
        "{status}"
    );
    assert_eq!(fact(&doc, "Case id"), "CASE-R1");
    assert_eq!(fact(&doc, "Vault file"), "CASE-R1.vault");
    assert!(
        fact(&doc, "Size").starts_with(&format!("{} bytes", group(vault_bytes.len() as u64))),
        "{}",
        fact(&doc, "Size")
    );
    assert_eq!(fact(&doc, "SHA-256"), sha);
    assert_eq!(fact(&doc, "Sidecar (.sha256)"), "matches the vault file");
    let rec = fact(&doc, "Recipients (age header)");
    assert!(rec.starts_with("1 recipient stanza: X25519 × 1"), "{rec}");
    // casevault.json as the test toolkit reads it (age crate, tar crate).
    let sealed = Bag::open(&r.vault, &r.fx.key).json();
    assert_eq!(
        fact(&doc, "Format version"),
        format!("casevault {}", sealed["version"])
    );
    assert_eq!(fact(&doc, "Compression"), "zstd");
    assert_eq!(sealed["compression"], "zstd");
    assert_eq!(
        fact(&doc, "Sealed at (UTC)"),
        list["sealed_at"].as_str().unwrap()
    );
    assert_eq!(
        fact(&doc, "Sealed at (UTC)"),
        sealed["sealed_at"].as_str().unwrap()
    );
    assert_eq!(
        fact(&doc, "Sealed with"),
        format!("casevault {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(fact(&doc, "Sealed with"), sealed["tool"].as_str().unwrap());
    let outer = fact(&doc, "Vault file (VAULT.sig)");
    assert!(
        outer.starts_with("valid, trusted: sealed by anna@lab"),
        "{outer}"
    );
    assert!(outer.contains(&format!("Key fingerprint: {fp}")), "{outer}");
    let inner = fact(&doc, "Case manifest (casevault.sig, inside)");
    assert!(
        inner.starts_with("valid, trusted: sealed by anna@lab"),
        "{inner}"
    );
    assert!(inner.contains(&fp), "{inner}");
    assert!(fact(&doc, "Signer named at sealing").contains(&fp));
    assert_eq!(fact(&doc, "Files"), list["files"].to_string());
    assert_eq!(fact(&doc, "Directories"), list["dirs"].to_string());
    assert_eq!(fact(&doc, "Symbolic links"), list["symlinks"].to_string());
    assert!(fact(&doc, "Bytes in files")
        .starts_with(&format!("{} bytes", group(list["bytes"].as_u64().unwrap()))));

    // Every entry, with path, type, size, SHA-256, mode and mtime.
    let rows = table_after(&doc, "Entries");
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(rows.len(), entries.len());
    let csv_text = fs::read_to_string(&csv).unwrap();
    let csv_lines: Vec<&str> = csv_text.split("\r\n").collect();
    assert_eq!(csv_lines[0], "path,type,size,sha256,mode,mtime,target");
    assert_eq!(csv_lines.len(), entries.len() + 2, "{csv_text:?}");
    for (i, (row, e)) in rows.iter().zip(entries).enumerate() {
        let path = e["path"].as_str().unwrap();
        let mut shown = path.to_string();
        if let Some(t) = e["target"].as_str() {
            shown = format!("{path} → {t}");
        }
        let size = e["size"]
            .as_u64()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let sha = e["sha256"].as_str().unwrap_or("").to_string();
        let mode = format!("{:04o}", e["mode"].as_u64().unwrap() & 0o7777);
        let mtime = e["mtime"].as_i64().unwrap();
        // The time on disk, to the nanosecond (list --json has seconds).
        let disk = fs::symlink_metadata(r.case.join(path)).unwrap();
        let nanos = std::os::unix::fs::MetadataExt::mtime_nsec(&disk);
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&disk), mtime);
        let kind = e["kind"].as_str().unwrap();
        assert_eq!(row[0], shown);
        assert_eq!(row[1], kind);
        assert_eq!(row[2], size);
        assert_eq!(row[3], sha);
        assert_eq!(row[4], mode);
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(mtime) * 1_000_000_000 + i128::from(nanos),
        )
        .unwrap();
        let rfc = t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert_eq!(row[5], rfc);
        let target = e["target"].as_str().unwrap_or("");
        assert_eq!(
            csv_lines[i + 1],
            format!("{path},{kind},{size},{sha},{mode},{rfc},{target}")
        );
    }

    // The bar chart: one bar per top-level folder, the timeline: one
    // marker per custody record.
    let svgs: Vec<ElementRef> = doc.select(&sel("svg")).collect();
    assert_eq!(svgs.len(), 2);
    let bars = text(svgs[0]);
    assert!(
        bars.contains("sub") && bars.contains("(top level)") && bars.contains("empty_dir"),
        "{bars}"
    );
    assert_eq!(svgs[1].select(&sel("circle")).count(), 2);

    // The custody chain for this vault.
    let custody = text(
        doc.select(&sel("h2 + p"))
            .find(|p| text(*p).starts_with("Custody log"))
            .unwrap(),
    );
    assert!(
        custody.contains("chain intact, 2 records, every record signed by a trusted key"),
        "{custody}"
    );
    let head = {
        use sha2::Digest;
        let log = fs::read(&r.log).unwrap();
        let last = log[..log.len() - 1].rsplit(|&b| b == b'\n').next().unwrap();
        hex(&sha2::Sha256::digest(last))
    };
    assert!(custody.contains(&head), "{custody}");
    let rows = table_after(&doc, "Chain of custody");
    let records: Vec<serde_json::Value> = fs::read_to_string(&r.log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for (row, rec) in rows.iter().zip(&records) {
        assert_eq!(row[1], rec["seq"].to_string());
        assert_eq!(row[2], rec["time"].as_str().unwrap());
        assert_eq!(row[3], rec["action"].as_str().unwrap());
        assert_eq!(row[4], rec["actor"].as_str().unwrap());
        assert_eq!(row[5], rec["host"].as_str().unwrap());
        assert_eq!(row[6], rec["outcome"].as_str().unwrap());
        assert_eq!(row[7], rec["reason"].as_str().unwrap());
        assert_eq!(row[8], format!("valid, trusted: anna@lab ({fp})"));
    }
    assert_eq!(
        (
            rows[0][3].as_str(),
            rows[0][4].as_str(),
            rows[0][7].as_str()
        ),
        ("sealed", "anna@lab", "seized 2024-03-14")
    );
    assert_eq!(
        (rows[1][3].as_str(), rows[1][4].as_str()),
        ("verified", "ben@lab")
    );

    // "Check this without casevault", and the first two commands work as
    // printed (run in the vault's directory).
    let cmds: Vec<String> = doc.select(&sel("pre")).map(text).collect();
    let want = [
        "sha256sum -c CASE-R1.vault.sha256",
        "ssh-keygen -Y verify -f ALLOWED_SIGNERS_FILE -I anna@lab -n casevault-vault -s CASE-R1.vault.sig < CASE-R1.vault",
        "age -d -i IDENTITY_FILE CASE-R1.vault | zstd -d | tar -x",
        "bagit.py --validate CASE-R1",
        "cd CASE-R1 && sha256sum -c manifest-sha256.txt",
        "ssh-keygen -Y verify -f ALLOWED_SIGNERS_FILE -I PRINCIPAL -n casevault-manifest -s CASE-R1/casevault.sig < CASE-R1/casevault.json",
    ];
    assert_eq!(cmds, want);
    for c in &cmds[..2] {
        let c = c.replace("ALLOWED_SIGNERS_FILE", &r.allowed.display().to_string());
        run_tool(Command::new("sh").arg("-c").arg(&c).current_dir(r.fx.out()));
    }

    // The JSON document states the same facts.
    assert_eq!(json["ok"], true);
    assert_eq!(json["contents_checked"], true);
    assert_eq!(json["vault"]["sha256"], sha.as_str());
    assert_eq!(json["vault"]["sidecar"], "ok");
    assert_eq!(json["case"]["case_id"], "CASE-R1");
    assert_eq!(json["case"]["sealed_at"], list["sealed_at"]);
    assert_eq!(json["recipients"]["count"], 1);
    assert_eq!(json["recipients"]["types"]["X25519"], 1);
    assert_eq!(json["signatures"]["outer"]["principal"], "anna@lab");
    assert_eq!(json["signatures"]["outer"]["fingerprint"], fp.as_str());
    assert_eq!(json["totals"]["files"], list["files"]);
    assert_eq!(json["entries"]["count"], entries.len());
    assert_eq!(json["entries"]["all_listed"], true);
    assert_eq!(json["entries"]["listing"], "listing.csv");
    assert_eq!(json["custody"]["intact"], true);
    assert_eq!(json["custody"]["records"].as_array().unwrap().len(), 2);
    assert_eq!(json["stock_commands"].as_array().unwrap().len(), 6);
}

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
    let d = n.to_string();
    let mut s = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(c);
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Without -i: only the key-less checks, and the page says so plainly.
#[test]
fn report_without_identity_says_contents_not_checked() {
    let Some(r) = rx() else { return };
    let out = r.fx.root().join("report.html");
    let (code, stdout, err) = report(&r.vault, &out, &[os("--json")]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["contents_checked"], false);
    assert!(json["entries"].is_null() && json["case"].is_null());
    let doc = Html::parse_document(&fs::read_to_string(&out).unwrap());
    let status = text(doc.select(&sel("div.status")).next().unwrap());
    assert!(
        status.contains("Contents NOT checked: no identity was given."),
        "{status}"
    );
    assert!(status.contains("Nothing inside the vault was decrypted or compared"));
    assert!(fact(&doc, "Case id").starts_with("not known without -i"));
    assert_eq!(fact(&doc, "Sidecar (.sha256)"), "matches the vault file");
    // VAULT.sig still verified, by which key, but not whose.
    let outer = fact(&doc, "Vault file (VAULT.sig)");
    assert!(
        outer.contains("NOT checked against a list of trusted signers"),
        "{outer}"
    );
    assert!(outer.contains(&fingerprint(&r.anna_pub)), "{outer}");
    assert!(doc.select(&sel("h2")).all(|h| text(h) != "Entries"));
    // --listing without a key is a usage error and writes nothing.
    let csv = r.fx.root().join("l.csv");
    let out2 = r.fx.root().join("r2.html");
    let (code, _, _) = report(&r.vault, &out2, &[os("--listing"), csv.as_os_str()]);
    assert_eq!(code, 2);
    assert!(!csv.exists() && !out2.exists());
}

/// Assert that a page holds nothing active: no script, image, iframe,
/// object, embed, link, base, form or meta refresh; no attribute `on…`;
/// no `src`, `href`, `action` or `xlink:href` anywhere.
fn assert_inert(page: &str) {
    let doc = Html::parse_document(page);
    for tag in [
        "script",
        "img",
        "iframe",
        "object",
        "embed",
        "link",
        "base",
        "form",
        "a",
        "image",
        "use",
        "foreignObject",
        "audio",
        "video",
        "source",
    ] {
        assert_eq!(doc.select(&sel(tag)).count(), 0, "found a <{tag}> element");
    }
    let mut elements = 0;
    for el in doc.select(&sel("*")) {
        elements += 1;
        for (name, value) in el.value().attrs() {
            let n = name.to_ascii_lowercase();
            assert!(
                !n.starts_with("on"),
                "event handler {name}={value:?} on <{}>",
                el.value().name()
            );
            assert!(
                !matches!(
                    n.as_str(),
                    "src"
                        | "href"
                        | "action"
                        | "xlink:href"
                        | "formaction"
                        | "srcset"
                        | "background"
                ),
                "{name}={value:?} on <{}>",
                el.value().name()
            );
            assert!(!value.contains("://"), "external URL in {name}={value:?}");
        }
        if el.value().name() == "meta" {
            assert_ne!(
                el.value()
                    .attr("http-equiv")
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("refresh")
            );
        }
    }
    assert!(
        elements > 100,
        "the page parsed to only {elements} elements"
    );
    // The CSS loads nothing either.
    for style in doc.select(&sel("style")) {
        let css = text(style);
        assert!(!css.contains("url(") && !css.contains("@import"), "{css}");
    }
}

/// Hostile file names, link targets, actors and reasons: shown as text,
/// never as markup; control and bidi characters visible as escapes.
#[test]
fn hostile_names_yield_no_active_element() {
    let case = |dir: &Path| -> PathBuf {
        let t = CaseTree::new(dir.join("CASE-R1"));
        // `/` cannot be in a name: the path is `<script>alert(1)</script>.txt`.
        t.file("<script>alert(1)</script>.txt", b"x")
            .file("\"><img src=x onerror=alert(1)>", b"y")
            .file("evil\u{202E}txt.exe", b"z")
            .file("ctl\u{1b}[2J\u{7}.txt", b"w")
            .symlink("lnk", "<a href=\"https://evil.example/\">x</a>")
            .file("</td></tr></table><svg onload=alert(1)>", b"v");
        t.stamp_times(1_600_000_000);
        t.root.clone()
    };
    let Some(r) = rx_with(
        case,
        "\"><img src=x onerror=alert(2)> <script>alert(3)</script>",
        "<script>alert(4)</script>\u{202E}",
    ) else {
        return;
    };
    let out = r.fx.root().join("report.html");
    let (code, _, err) = report(
        &r.vault,
        &out,
        &[
            os("-i"),
            r.fx.key.path.as_os_str(),
            os("--custody"),
            r.log.as_os_str(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let page = fs::read_to_string(&out).unwrap();
    assert_inert(&page);
    assert!(!page.contains('\u{202E}') && !page.contains('\u{1b}') && !page.contains('\u{7}'));
    // The names are there, as text.
    let doc = Html::parse_document(&page);
    let rows = table_after(&doc, "Entries");
    let paths: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    for want in [
        "<script>alert(1)</script>.txt",
        "\"><img src=x onerror=alert(1)>",
        "evil\\u{202e}txt.exe",
        "ctl\\u{1b}[2J\\u{7}.txt",
        "lnk → <a href=\"https://evil.example/\">x</a>",
        "</td></tr></table><svg onload=alert(1)>",
    ] {
        assert!(paths.contains(&want), "{want:?} not in {paths:?}");
    }
    let custody = table_after(&doc, "Chain of custody");
    assert_eq!(custody[1][4], "<script>alert(4)</script>\\u{202e}");
    assert_eq!(
        custody[0][7],
        "\"><img src=x onerror=alert(2)> <script>alert(3)</script>"
    );
}

/// A page that is broken on purpose must fail `assert_inert`: the check
/// itself can fail.
#[test]
fn the_inertness_check_catches_active_markup() {
    let good = format!("<html><body>{}</body></html>", "<p>x</p>".repeat(120));
    assert_inert(&good);
    for bad in [
        "<script>alert(1)</script>",
        "<img src=x>",
        "<p onclick=x>",
        "<svg><a xlink:href=\"https://e/\">x</a></svg>",
    ] {
        let page = good.replace("<body>", &format!("<body>{bad}"));
        let r = std::panic::catch_unwind(|| assert_inert(&page));
        assert!(r.is_err(), "{bad} passed");
    }
}

/// A vault that fails verification still gets a report, headed by the
/// failure, and report exits 3; the --listing of a failed read is not
/// written.
#[test]
fn failed_verification_writes_report_and_exits_3() {
    let Some(r) = rx() else { return };
    let mut bytes = fs::read(&r.vault).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&r.vault, &bytes).unwrap();
    let out = r.fx.root().join("report.html");
    let csv = r.fx.root().join("listing.csv");
    let (code, _, err) = report(
        &r.vault,
        &out,
        &[
            os("-i"),
            r.fx.key.path.as_os_str(),
            os("--listing"),
            csv.as_os_str(),
            os("--signers"),
            r.allowed.as_os_str(),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("integrity failure"), "{err}");
    assert!(
        !csv.exists(),
        "a listing of a vault that failed was written"
    );
    let doc = Html::parse_document(&fs::read_to_string(&out).unwrap());
    // The first thing after the title is the failure.
    let first = doc.select(&sel("div.status")).next().unwrap();
    assert!(first.value().classes().any(|c| c == "fail"));
    let status = text(first);
    assert!(status.starts_with("VERIFICATION FAILED"), "{status}");
    assert!(status.contains("sidecar"), "{status}");
    assert!(fact(&doc, "Sidecar (.sha256)").contains("DOES NOT MATCH"));
    // The flipped byte breaks the vault signature too.
    assert!(fact(&doc, "Vault file (VAULT.sig)").starts_with("FAILED"));

    // Without -i: the sidecar mismatch alone fails the report.
    let out2 = r.fx.root().join("report2.html");
    let (code, _, _) = report(&r.vault, &out2, &[]);
    assert_eq!(code, 3);
    let status = text(
        Html::parse_document(&fs::read_to_string(&out2).unwrap())
            .select(&sel("div.status"))
            .next()
            .unwrap(),
    );
    assert!(status.starts_with("VERIFICATION FAILED"), "{status}");

    // A sidecar that does not parse: the page says so (exit 3).
    let side = PathBuf::from(format!("{}.sha256", r.vault.display()));
    fs::write(&side, "garbage\n").unwrap();
    let out4 = r.fx.root().join("report4.html");
    let (code, _, err) = report(&r.vault, &out4, &[os("-i"), r.fx.key.path.as_os_str()]);
    assert_eq!(code, 3, "{err}");
    let doc = Html::parse_document(&fs::read_to_string(&out4).unwrap());
    let status = text(doc.select(&sel("div.status")).next().unwrap());
    assert!(status.contains("sidecar line 1"), "{status}");
    assert!(fact(&doc, "Sidecar (.sha256)").contains("DOES NOT MATCH"));

    // No sidecar and no key: nothing could be checked, which the page
    // says at its top (exit 3), with the vault's own SHA-256.
    fs::remove_file(&side).unwrap();
    let out3 = r.fx.root().join("report3.html");
    let (code, _, err) = report(&r.vault, &out3, &[]);
    assert_eq!(code, 3, "{err}");
    let doc = Html::parse_document(&fs::read_to_string(&out3).unwrap());
    let status = text(doc.select(&sel("div.status")).next().unwrap());
    assert!(status.starts_with("VERIFICATION FAILED"), "{status}");
    assert!(
        status.contains("is missing; without it and without -i IDENTITY nothing can be checked"),
        "{status}"
    );
    assert_eq!(fact(&doc, "Sidecar (.sha256)"), "missing");
    let sha = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(fs::read(&r.vault).unwrap()))
    };
    assert_eq!(fact(&doc, "SHA-256"), sha);
}

/// A broken custody chain fails the report (exit 3), naming the line.
#[test]
fn broken_custody_chain_fails_the_report() {
    let Some(r) = rx() else { return };
    let log = fs::read_to_string(&r.log).unwrap();
    fs::write(
        &r.log,
        log.replacen("seized 2024-03-14", "seized 2024-03-15", 1),
    )
    .unwrap();
    let out = r.fx.root().join("report.html");
    let (code, _, err) = report(&r.vault, &out, &[os("--custody"), r.log.as_os_str()]);
    assert_eq!(code, 3, "{err}");
    let doc = Html::parse_document(&fs::read_to_string(&out).unwrap());
    let custody = text(
        doc.select(&sel("h2 + p"))
            .find(|p| text(*p).starts_with("Custody log"))
            .unwrap(),
    );
    assert!(custody.contains("chain BROKEN at line 1"), "{custody}");
    let status = text(doc.select(&sel("div.status")).next().unwrap());
    assert!(
        status.contains("custody log custody.log: line 1:"),
        "{status}"
    );
    assert!(table_after(&doc, "Chain of custody")[0][8].starts_with("FAILED"));
}

/// A missing or unreadable vault: nothing written, exit 1. So too a
/// custody log that cannot be read, and a wrong key (exit 4).
#[test]
fn unreadable_inputs_write_nothing() {
    let fx = Fx::new();
    let out = fx.root().join("report.html");
    let (code, _, err) = report(&fx.vault("missing.vault"), &out, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing.vault"), "{err}");
    assert!(!out.exists());
    // A directory where the vault should be cannot be read.
    let (code, _, err) = report(&fx.out(), &out, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(!out.exists());

    let case = small_case(&fx.cases(), "CASE-R2");
    let vault = fx.vault("CASE-R2.vault");
    fx.seal(&case.root, &vault, &[]);
    let log = fx.root().join("no-such.log");
    let (code, _, err) = report(&vault, &out, &[os("--custody"), log.as_os_str()]);
    assert_eq!(code, 1, "{err}");
    assert!(!out.exists());
    let bad = fx.root().join("no-such-signers");
    let (code, _, err) = report(&vault, &out, &[os("--signers"), bad.as_os_str()]);
    assert_eq!(code, 1, "{err}");
    assert!(!out.exists());
    let other = fx.new_key("other.txt");
    let (code, _, err) = report(&vault, &out, &[os("-i"), other.path.as_os_str()]);
    assert_eq!(code, 4, "{err}");
    assert!(!out.exists());
    assert_eq!(
        fs::read_dir(fx.root()).unwrap().count(),
        4,
        "a temporary file was left"
    );

    // As nobody (CI runs as root, which reads everything): a vault it
    // cannot read.
    let Some(nobody) = Unprivileged::new(fx.root()) else {
        return;
    };
    fs::set_permissions(&vault, fs::Permissions::from_mode(0o000)).unwrap();
    let o = nobody.run([os("report"), vault.as_os_str(), os("-o"), out.as_os_str()]);
    assert_exit(&o, 1);
    assert!(!out.exists());
    fs::set_permissions(&vault, fs::Permissions::from_mode(0o644)).unwrap();
    let o = nobody.run([os("report"), vault.as_os_str(), os("-o"), out.as_os_str()]);
    assert_exit(&o, 0);
    assert!(out.exists());
}

/// Two runs give the same bytes, apart from the one generated-at line.
#[test]
fn report_is_deterministic() {
    let Some(r) = rx() else { return };
    let run = |n: &str| {
        let out = r.fx.root().join(format!("{n}.html"));
        let csv = r.fx.root().join(format!("{n}.csv"));
        let (code, _, err) = report(
            &r.vault,
            &out,
            &[
                os("-i"),
                r.fx.key.path.as_os_str(),
                os("--signers"),
                r.allowed.as_os_str(),
                os("--custody"),
                r.log.as_os_str(),
                os("--listing"),
                csv.as_os_str(),
            ],
        );
        assert_eq!(code, 0, "{err}");
        (fs::read_to_string(out).unwrap(), fs::read(csv).unwrap())
    };
    let (a, csv_a) = run("a");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (b, csv_b) = run("b");
    assert_eq!(csv_a, csv_b);
    let gen = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains("Generated at "))
            .map(String::from)
            .collect()
    };
    assert_eq!(gen(&a).len(), 1);
    assert_ne!(gen(&a), gen(&b), "the generated-at line did not change");
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.contains("Generated at "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&a), strip(&b));
}

/// Above the cut (20,000 entries) the page shows per-folder totals and
/// the CSV holds every entry.
#[test]
fn large_case_gets_folder_summary_and_full_listing() {
    let fx = Fx::new();
    let root = fx.cases().join("CASE-BIG");
    for (dir, n) in [("alpha", 12_000), ("beta", 8_000)] {
        let d = root.join(dir);
        fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            fs::write(
                d.join(format!("f{i:05}")),
                if i % 2 == 0 { "ab" } else { "" },
            )
            .unwrap();
        }
    }
    fs::write(root.join("top.txt"), "hello").unwrap();
    let vault = fx.vault("CASE-BIG.vault");
    fx.seal(&root, &vault, &["--compress", "none"]);
    let out = fx.root().join("report.html");
    let csv = fx.root().join("listing.csv");
    let (code, _, err) = report(
        &vault,
        &out,
        &[
            os("-i"),
            fx.key.path.as_os_str(),
            os("--listing"),
            csv.as_os_str(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let page = fs::read_to_string(&out).unwrap();
    let doc = Html::parse_document(&page);
    assert!(page
        .contains("The case holds 20003 entries, more than the 20000 this page lists one by one"));
    let rows = table_after(&doc, "Entries");
    assert_eq!(
        rows,
        vec![
            vec!["alpha", "12000", "0", "0", "12000"],
            vec!["beta", "8000", "0", "0", "8000"],
            vec!["(top level)", "1", "0", "0", "5"],
        ]
        .into_iter()
        .map(|r| r.into_iter().map(String::from).collect::<Vec<_>>())
        .collect::<Vec<_>>()
    );
    let csv_text = fs::read_to_string(&csv).unwrap();
    assert_eq!(csv_text.matches("\r\n").count(), 20_003 + 1);
    assert!(csv_text.contains(
        "\r\nbeta/f07999,file,0,e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855,"
    ));
    // The page stays small: no row per entry.
    assert!(page.len() < 200_000, "{} bytes", page.len());
}

/// Headless Chromium renders the page (the screenshot is not blank) and
/// prints it to a sane number of pages.
#[test]
fn renders_in_headless_chromium() {
    let Some(chromium) = tool("chromium") else {
        return;
    };
    let Some(r) = rx() else { return };
    let out = r.fx.root().join("report.html");
    let (code, _, err) = report(
        &r.vault,
        &out,
        &[
            os("-i"),
            r.fx.key.path.as_os_str(),
            os("--signers"),
            r.allowed.as_os_str(),
            os("--custody"),
            r.log.as_os_str(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let png = r.fx.root().join("shot.png");
    let pdf = r.fx.root().join("print.pdf");
    let url = format!("file://{}", out.display());
    let browser = |arg: String| {
        let profile = tempfile::tempdir().unwrap();
        let o = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-pdf-header-footer",
                "--window-size=1280,2000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(arg)
            .arg(&url)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    browser(format!("--screenshot={}", png.display()));
    browser(format!("--print-to-pdf={}", pdf.display()));
    let (w, h, var) = png_variance(&png);
    assert_eq!((w, h), (1280, 2000));
    assert!(var > 100.0, "the screenshot looks blank (variance {var})");
    let pages = pdf_pages(&fs::read(&pdf).unwrap());
    assert!((1..=10).contains(&pages), "{pages} pages");
}

/// Printed, a page of 363 entries repeats the table header on every page
/// the table reaches, and never cuts a row across pages (print CSS): each
/// entry's path and both ends of its SHA-256 are on one page. The PDF's
/// text comes from pdftotext (Debian poppler-utils), pages split at FF.
#[test]
fn printed_table_repeats_its_header_and_keeps_rows_whole() {
    let Some(chromium) = tool("chromium") else {
        return;
    };
    let Some(pdftotext) = tool("pdftotext") else {
        return;
    };
    let fx = Fx::new();
    let root = fx.cases().join("CASE-PRINT");
    for d in ["a", "b", "c"] {
        fs::create_dir_all(root.join(d)).unwrap();
        for i in 0..120 {
            fs::write(
                root.join(d).join(format!("file-{i:03}.txt")),
                format!("{d}{i}"),
            )
            .unwrap();
        }
    }
    let vault = fx.vault("CASE-PRINT.vault");
    fx.seal(&root, &vault, &[]);
    let out = fx.root().join("report.html");
    let (code, _, err) = report(&vault, &out, &[os("-i"), fx.key.path.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    let list = list_json(&fx, &vault);
    // Letter is Chromium's default paper here; A4 is what a printer set
    // to A4 does with the page (the report sets no size of its own): the
    // same page with the size a user agent would apply.
    let html = fs::read_to_string(&out).unwrap();
    for (paper, media) in [("Letter", "612 792"), ("A4", "594.95996 841.91998")] {
        let page_file = fx.root().join(format!("report-{paper}.html"));
        let sized = html.replacen(
            "</head>",
            &format!("<style>@page {{ size: {paper}; }}</style></head>"),
            1,
        );
        fs::write(&page_file, sized).unwrap();
        check_printed(&chromium, &pdftotext, &fx, &page_file, paper, media, &list);
    }
}

/// Print `page` to PDF in headless Chromium on `paper` (its MediaBox
/// `media`): every page of the table repeats its header, every file's row
/// is whole on one page.
fn check_printed(
    chromium: &Path,
    pdftotext: &Path,
    fx: &Fx,
    page: &Path,
    paper: &str,
    media: &str,
    list: &serde_json::Value,
) {
    let pdf = fx.root().join(format!("print-{paper}.pdf"));
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = fs::read(&pdf).unwrap();
    let raw = String::from_utf8_lossy(&bytes);
    assert!(
        raw.contains(&format!("/MediaBox [0 0 {media}]")),
        "{paper}: not printed on {paper} paper"
    );
    let pages_n = pdf_pages(&bytes);
    assert!((3..=50).contains(&pages_n), "{paper}: {pages_n} pages");
    let text = String::from_utf8(run_tool(
        Command::new(pdftotext).arg("-layout").arg(&pdf).arg("-"),
    ))
    .unwrap();
    let pages: Vec<&str> = text
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .collect();
    assert_eq!(pages.len(), pages_n);
    let mut table_pages = 0;
    for page in &pages {
        if page.contains("file-") {
            table_pages += 1;
            assert!(
                page.contains("Modified (UTC)"),
                "{paper}: a page of the table without its header:\n{page}"
            );
        }
    }
    assert!(table_pages >= 3, "{paper}: {table_pages}");
    for e in list["entries"].as_array().unwrap() {
        let Some(sha) = e["sha256"].as_str() else {
            continue;
        };
        let path = e["path"].as_str().unwrap();
        let on: Vec<usize> = (0..pages.len())
            .filter(|&i| pages[i].contains(&format!("{path} ")))
            .collect();
        assert_eq!(on.len(), 1, "{paper}: {path} on pages {on:?}");
        let page = pages[on[0]];
        assert!(
            page.contains(&sha[..12]) && page.contains(&sha[52..]),
            "{paper}: the row of {path} is cut across pages"
        );
    }
}

/// Width, height and the variance of the grey level of a PNG.
fn png_variance(p: &Path) -> (u32, u32, f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(p).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let grey: Vec<f64> = px
        .chunks(ch)
        .map(|c| c.iter().take(3.min(ch)).map(|&v| v as f64).sum::<f64>() / 3f64.min(ch as f64))
        .collect();
    let mean = grey.iter().sum::<f64>() / grey.len() as f64;
    let var = grey.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / grey.len() as f64;
    (info.width, info.height, var)
}

/// `/Type /Page` objects (not `/Pages`) in a PDF.
fn pdf_pages(pdf: &[u8]) -> usize {
    let s = String::from_utf8_lossy(pdf);
    s.match_indices("/Type")
        .filter(|(i, _)| {
            let rest = s[i + 5..].trim_start();
            rest.starts_with("/Page") && !rest.starts_with("/Pages")
        })
        .count()
}

/// The page-count and blank checks can fail: a white PNG, and a PDF of
/// `/Pages` only.
#[test]
fn the_render_checks_can_fail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("white.png");
    {
        let f = fs::File::create(&p).unwrap();
        let mut e = png::Encoder::new(std::io::BufWriter::new(f), 4, 4);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        e.write_header()
            .unwrap()
            .write_image_data(&[255u8; 48])
            .unwrap();
    }
    assert_eq!(png_variance(&p).2, 0.0);
    assert_eq!(pdf_pages(b"<< /Type /Pages /Count 0 >>"), 0);
    assert_eq!(pdf_pages(b"<< /Type /Page >> << /Type/Page >>"), 2);
}

/// The recipients as the age header lists them, binary or armored, by
/// type (age's grease stanza counted apart), without any key.
#[test]
fn recipients_from_the_age_header() {
    let Some(r) = rx() else { return };
    let (_, ssh_pub) = ssh_key(&r.fx.root().join("ssh"), "bob", "bob@lab");
    let second = r.fx.new_key("second.txt");
    let vault = r.fx.vault("CASE-R1-armored.vault");
    let a = seal_cmd(&r.case, &vault, &r.fx.key.recipient)
        .args(["-r", &second.recipient, "-r", &ssh_pub, "--armor"])
        .assert();
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr_of(&a));
    let out = r.fx.root().join("report.html");
    let (code, stdout, err) = report(&vault, &out, &[os("--json")]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let rc = &json["recipients"];
    assert_eq!(rc["armored"], true);
    assert_eq!(rc["count"], 3);
    assert_eq!(
        rc["types"],
        serde_json::json!({"X25519": 2, "ssh-ed25519": 1})
    );
    assert!(rc["problem"].is_null());
    let doc = Html::parse_document(&fs::read_to_string(&out).unwrap());
    let shown = fact(&doc, "Recipients (age header)");
    assert!(
        shown.starts_with("3 recipient stanzas: X25519 × 2, ssh-ed25519 × 1"),
        "{shown}"
    );
    assert!(shown.ends_with("(ASCII-armored)"), "{shown}");
}

/// An existing REPORT.html or --listing is replaced only with --force, and
/// never when it is one of the inputs (the vault, its sidecar or .sig, the
/// custody log): `report VAULT -o VAULT --force` must not destroy evidence.
#[test]
fn outputs_never_replace_inputs_and_need_force() {
    let Some(r) = rx() else { return };
    let out = r.fx.root().join("report.html");
    fs::write(&out, "old").unwrap();
    let (code, _, err) = report(&r.vault, &out, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("already exists (use --force to replace it)"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), "old");
    let (code, _, err) = report(&r.vault, &out, &[os("--force")]);
    assert_eq!(code, 0, "{err}");
    assert!(fs::read_to_string(&out)
        .unwrap()
        .starts_with("<!DOCTYPE html>"));

    let vault_bytes = fs::read(&r.vault).unwrap();
    let side = PathBuf::from(format!("{}.sha256", r.vault.display()));
    let sig = PathBuf::from(format!("{}.sig", r.vault.display()));
    let before: Vec<Vec<u8>> = [&side, &sig, &r.log]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    let key = r.fx.key.path.as_os_str();
    for (target, listing) in [
        (&r.vault, false),
        (&side, false),
        (&sig, false),
        (&r.log, false),
        (&r.vault, true),
        (&r.log, true),
    ] {
        let (code, _, err) = if listing {
            report(
                &r.vault,
                &r.fx.root().join("other.html"),
                &[
                    os("-i"),
                    key,
                    os("--listing"),
                    target.as_os_str(),
                    os("--custody"),
                    r.log.as_os_str(),
                    os("--force"),
                ],
            )
        } else {
            report(
                &r.vault,
                target,
                &[os("--custody"), r.log.as_os_str(), os("--force")],
            )
        };
        assert_eq!(code, 2, "{}: {err}", target.display());
        assert!(err.contains("is an input of this report"), "{err}");
    }
    assert_eq!(fs::read(&r.vault).unwrap(), vault_bytes);
    let after: Vec<Vec<u8>> = [&side, &sig, &r.log]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert_eq!(before, after);
    assert!(!r.fx.root().join("other.html").exists());
    // -o and --listing naming one file.
    let same = r.fx.root().join("same");
    let (code, _, _) = report(
        &r.vault,
        &same,
        &[os("-i"), key, os("--listing"), same.as_os_str()],
    );
    assert_eq!(code, 2);
    assert!(!same.exists());
}

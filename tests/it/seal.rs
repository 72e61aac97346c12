//! `casevault seal`: outputs, JSON, the on-disk format, case ids, refusals.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

const SEAL_JSON_KEYS: &[&str] = &[
    "vault",
    "sidecar",
    "case_id",
    "files",
    "dirs",
    "symlinks",
    "payload_bytes",
    "vault_bytes",
    "vault_sha256",
    "compression",
    "armor",
    "recipients",
    "sealed_at",
];

/// Run a seal that must fail with `code`; assert nothing changed anywhere
/// under the fixture (no vault, no sidecar, no temp files). Returns stderr.
fn seal_fails(fx: &Fx, args: &[&std::ffi::OsStr], code: i32) -> String {
    let before = snapshot(fx.root());
    let a = casevault().arg("seal").args(args).assert().code(code);
    assert_eq!(stdout_of(&a), "", "nothing on stdout when seal fails");
    assert_snapshot_unchanged(fx.root(), &before);
    stderr_of(&a)
}

fn os(s: &(impl AsRef<std::ffi::OsStr> + ?Sized)) -> &std::ffi::OsStr {
    s.as_ref()
}

fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z')
        && b[..4].iter().all(u8::is_ascii_digit)
}

/// The case id of a vault = the bag's top directory in the tar.
fn bag_top_dirs(fx: &Fx, vault: &Path) -> Vec<String> {
    let tar = plaintext_tar(&decrypt_vault(vault, &fx.key));
    let (entries, _) = parse_tar(&tar);
    let mut tops: Vec<String> = entries
        .iter()
        .map(|e| e.path().split('/').next().unwrap().to_string())
        .collect();
    tops.dedup();
    tops
}

#[test]
fn seal_json_fields_and_sidecar() {
    let fx = Fx::new();
    let case = rich_case(&fx.cases(), "CASE-2026-0042", true);
    let vault = fx.vault("case.vault");
    let v = fx.seal(&case.root, &vault, &[]);
    assert_json_keys(&v, SEAL_JSON_KEYS);

    let (files, dirs, symlinks, bytes) = case_totals(&case.root);
    assert_eq!(v["case_id"], "CASE-2026-0042");
    assert_eq!(v["files"], files, "files");
    assert_eq!(v["dirs"], dirs, "dirs (including the case dir itself)");
    assert_eq!(v["symlinks"], symlinks, "symlinks");
    assert_eq!(v["payload_bytes"], bytes, "payload_bytes");
    assert_eq!(v["compression"], "zstd");
    assert_eq!(v["armor"], false);
    assert_eq!(v["recipients"], 1);
    assert!(
        is_rfc3339_utc(v["sealed_at"].as_str().unwrap()),
        "sealed_at: {}",
        v["sealed_at"]
    );

    let vault_bytes = fs::read(&vault).unwrap();
    assert_eq!(v["vault_bytes"], vault_bytes.len() as u64);
    let hex = sha256_hex(&vault_bytes);
    assert_eq!(v["vault_sha256"], hex.as_str());
    assert!(v["vault"].as_str().unwrap().ends_with("case.vault"));
    assert!(v["sidecar"]
        .as_str()
        .unwrap()
        .ends_with("case.vault.sha256"));

    let sidecar = fs::read_to_string(fx.vault("case.vault.sha256")).unwrap();
    assert_eq!(sidecar, format!("{hex}  case.vault\n"));

    // Exactly the vault and its sidecar were written.
    let names: Vec<_> = snapshot(&fx.out()).into_iter().collect();
    assert_eq!(
        names,
        vec![
            Path::new("case.vault").to_path_buf(),
            Path::new("case.vault.sha256").to_path_buf()
        ]
    );
    // The source case was not modified.
    assert_eq!(case_totals(&case.root), (files, dirs, symlinks, bytes));
}

#[test]
fn seal_human_output_line() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "H-1");
    let vault = fx.vault("h.vault");
    let a = seal_cmd(&case.root, &vault, &fx.key.recipient)
        .assert()
        .code(0);
    let bytes = fs::read(&vault).unwrap();
    let (files, _, _, payload) = case_totals(&case.root);
    assert_eq!(
        stdout_of(&a),
        format!(
            "sealed H-1: {files} files, {payload} bytes -> {} ({} bytes, sha256 {})\n",
            vault.display(),
            bytes.len(),
            sha256_hex(&bytes)
        )
    );
}

#[test]
fn seal_default_is_zstd_and_none_is_raw_tar() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "Z-1");
    let vz = fx.vault("z.vault");
    let vn = fx.vault("n.vault");
    fx.seal(&case.root, &vz, &[]);
    let v = fx.seal(&case.root, &vn, &["--compress", "none"]);
    assert_eq!(v["compression"], "none");
    let pz = decrypt_vault(&vz, &fx.key);
    let pn = decrypt_vault(&vn, &fx.key);
    assert!(pz.starts_with(&ZSTD_MAGIC), "default payload is zstd");
    assert!(!pn.starts_with(&ZSTD_MAGIC), "--compress none is raw tar");
    assert!(pn.starts_with(b"Z-1/"), "raw tar begins with the case id");
    // Both hold the same tar entries.
    let (ez, _) = parse_tar(&plaintext_tar(&pz));
    let (en, _) = parse_tar(&pn);
    let names = |e: &[RawEntry]| e.iter().map(|e| e.path()).collect::<Vec<_>>();
    assert_eq!(names(&ez), names(&en));
    let explicit = fx.vault("z2.vault");
    let v = fx.seal(&case.root, &explicit, &["--compress", "zstd"]);
    assert_eq!(v["compression"], "zstd");
}

#[test]
fn seal_bad_compress_value_is_usage_error() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "C-1");
    let vault = fx.vault("c.vault");
    seal_fails(
        &fx,
        &[
            case.root.as_os_str(),
            os("-o"),
            vault.as_os_str(),
            os("-r"),
            os(&fx.key.recipient),
            os("--compress"),
            os("lz4"),
        ],
        2,
    );
}

#[test]
fn seal_armor_writes_armored_vault() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "A-1");
    let vault = fx.vault("a.vault");
    let v = fx.seal(&case.root, &vault, &["--armor"]);
    assert_eq!(v["armor"], true);
    let text = fs::read_to_string(&vault).expect("armored vault is text");
    assert!(text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
    assert!(text
        .trim_end()
        .ends_with("-----END AGE ENCRYPTED FILE-----"));
    assert_eq!(v["vault_sha256"], sha256_hex(text.as_bytes()).as_str());
    let sidecar = fs::read_to_string(fx.vault("a.vault.sha256")).unwrap();
    assert_eq!(
        sidecar,
        format!("{}  a.vault\n", sha256_hex(text.as_bytes()))
    );
    assert!(decrypt_vault(&vault, &fx.key).starts_with(&ZSTD_MAGIC));
}

/// FORMAT.md §2.1, §3, §5: entry order, header fields, tag files, manifests
/// and casevault.json of a freshly sealed vault.
#[test]
fn seal_writes_format_v3_layout() {
    let fx = Fx::new();
    let case = rich_case_light(&fx.cases(), "LAYOUT-1");
    case.symlink(ABS_LINK.0, ABS_LINK.1);
    // A setuid file: the bit is recorded (mode & 07777).
    case.file("suid-tool", b"#!/bin/sh\n")
        .mode("suid-tool", 0o4755);
    case.stamp_times(1_650_000_000);
    let vault = fx.vault("layout.vault");
    fx.seal(&case.root, &vault, &["--compress", "none"]);
    let tar = decrypt_vault(&vault, &fx.key);
    let (entries, trailing) = parse_tar(&tar);

    // Trailer: exactly the two zero end blocks (version 3, FORMAT §13.1).
    assert!(trailing.iter().all(|&b| b == 0), "non-zero bytes after end");
    assert_eq!(trailing.len(), 1024);
    assert_eq!(tar.len() % 512, 0);

    // Expected order: CASE/, CASE/data/, payload pre-order, tag files.
    let walk = entries_of(&case.root);
    let mut want = vec!["LAYOUT-1/".to_string(), "LAYOUT-1/data/".to_string()];
    for (rel, k) in &walk {
        match k {
            Kind::Dir => want.push(format!("LAYOUT-1/data/{}/", rel_str(rel))),
            Kind::File => want.push(format!("LAYOUT-1/data/{}", rel_str(rel))),
            _ => {}
        }
    }
    for t in TAG_FILES {
        want.push(format!("LAYOUT-1/{t}"));
    }
    let got: Vec<String> = entries.iter().map(|e| e.path()).collect();
    assert_eq!(got, want, "tar entry order");

    for e in &entries {
        let b = e.header.as_bytes();
        let p = e.path();
        assert!(
            e.typeflag() == b'0' || e.typeflag() == b'5',
            "{p}: typeflag {}",
            e.typeflag() as char
        );
        assert_eq!(&b[257..263], b"ustar\0", "{p}: magic");
        assert_eq!(&b[263..265], b"00", "{p}: version");
        assert_eq!(e.header.uid().unwrap(), 0, "{p}: uid");
        assert_eq!(e.header.gid().unwrap(), 0, "{p}: gid");
        assert!(
            b[265..329].iter().all(|&c| c == 0),
            "{p}: uname/gname not empty"
        );
        if let Some((ph, _)) = &e.pax {
            assert_eq!(ph.as_bytes()[156], b'x');
        }
        let rel = p
            .strip_prefix("LAYOUT-1/data/")
            .map(|r| r.trim_end_matches('/'));
        match rel {
            Some(rel) if !rel.is_empty() => {
                let md = fs::symlink_metadata(case.root.join(rel)).unwrap();
                assert_eq!(e.header.mode().unwrap(), md.mode() & 0o7777, "{p}: mode");
                assert_eq!(e.header.mtime().unwrap() as i64, md.mtime(), "{p}: mtime");
                if md.is_file() {
                    assert_eq!(e.data, fs::read(case.root.join(rel)).unwrap(), "{p}: bytes");
                } else {
                    assert_eq!(e.header.size().unwrap(), 0, "{p}: dir size");
                }
            }
            _ if TAG_FILES.iter().any(|t| p == format!("LAYOUT-1/{t}")) => {
                assert_eq!(e.header.mode().unwrap(), 0o644, "{p}: tag file mode");
            }
            _ => {}
        }
    }

    let tag = |name: &str| -> String {
        let p = format!("LAYOUT-1/{name}");
        let e = entries.iter().find(|e| e.path() == p).unwrap();
        String::from_utf8(e.data.clone()).unwrap()
    };
    assert_eq!(
        tag("bagit.txt"),
        "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    );

    let (files, dirs, symlinks, bytes) = case_totals(&case.root);
    let info = tag("bag-info.txt");
    let lines: Vec<&str> = info.lines().collect();
    assert_eq!(lines.len(), 4, "{info}");
    let date = lines[0]
        .strip_prefix("Bagging-Date: ")
        .expect("Bagging-Date");
    assert_eq!(date.len(), 10, "{date}");
    assert_eq!(lines[1], format!("Payload-Oxum: {bytes}.{files}"));
    assert_eq!(lines[2], "External-Identifier: LAYOUT-1");
    assert!(
        lines[3].starts_with("Bag-Software-Agent: casevault "),
        "{}",
        lines[3]
    );
    assert!(info.ends_with('\n'));

    let mut manifest = String::new();
    for (rel, k) in &walk {
        if *k == Kind::File {
            let data = fs::read(case.root.join(rel)).unwrap();
            manifest.push_str(&format!("{}  data/{}\n", sha256_hex(&data), rel_str(rel)));
        }
    }
    assert_eq!(tag("manifest-sha256.txt"), manifest);

    let mut tagmanifest = String::new();
    for t in &TAG_FILES[..5] {
        tagmanifest.push_str(&format!("{}  {t}\n", sha256_hex(tag(t).as_bytes())));
    }
    assert_eq!(tag("tagmanifest-sha256.txt"), tagmanifest);

    // The locator: where each tag file before it is (FORMAT §13.1 item 4),
    // at a fixed distance from the end of the tar stream.
    let mut pos = 0u64;
    let mut locator = String::from("casevault-locator 1\n");
    for e in &entries {
        let p = e.path();
        if TAG_FILES[..4].iter().any(|t| p == format!("LAYOUT-1/{t}")) {
            locator.push_str(&format!(
                "{} {pos} {}\n",
                &p["LAYOUT-1/".len()..],
                e.data.len()
            ));
        }
        let pax = e
            .pax
            .as_ref()
            .map_or(0, |(_, d)| 512 + d.len().div_ceil(512) * 512);
        pos += (pax + 512 + e.data.len().div_ceil(512) * 512) as u64;
    }
    assert_eq!(tag("casevault-locator.txt"), locator);
    assert_eq!(
        &tar[tar.len() - 3072..tar.len() - 3072 + 21],
        b"LAYOUT-1/casevault-lo"
    );

    // casevault.json
    let json_text = tag("casevault.json");
    assert!(json_text.ends_with('\n'));
    assert_eq!(json_text.matches('\n').count(), 1, "compact, one line");
    let j: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    assert_json_keys(
        &j,
        &[
            "format",
            "version",
            "case_id",
            "sealed_at",
            "tool",
            "compression",
            "entries",
            "totals",
        ],
    );
    assert_eq!(j["format"], "casevault");
    assert_eq!(j["version"], 3);
    assert_eq!(j["case_id"], "LAYOUT-1");
    assert_eq!(j["compression"], "none");
    assert!(is_rfc3339_utc(j["sealed_at"].as_str().unwrap()));
    assert!(j["tool"].as_str().unwrap().starts_with("casevault "));
    assert_eq!(j["totals"]["files"], files);
    assert_eq!(j["totals"]["dirs"], dirs);
    assert_eq!(j["totals"]["symlinks"], symlinks);
    assert_eq!(j["totals"]["bytes"], bytes);

    let je = j["entries"].as_array().unwrap();
    let mut at = std::collections::HashMap::new();
    let mut pos = 0u64;
    for e in &entries {
        at.insert(e.path(), pos);
        let pax = e
            .pax
            .as_ref()
            .map_or(0, |(_, d)| 512 + d.len().div_ceil(512) * 512);
        pos += (pax + 512 + e.data.len().div_ceil(512) * 512) as u64;
    }
    for e in je {
        let p = e["path"].as_str().unwrap();
        let key = match e["kind"].as_str().unwrap() {
            "dir" => format!("LAYOUT-1/{p}/"),
            "file" => format!("LAYOUT-1/{p}"),
            _ => {
                assert!(e.get("offset").is_none(), "{p}: a symlink has no offset");
                continue;
            }
        };
        assert_eq!(e["offset"], at[&key], "{p}: offset");
    }
    assert_eq!(je.len(), walk.len() + 1, "every entry plus data itself");
    let root_md = fs::metadata(&case.root).unwrap();
    assert_eq!(je[0]["path"], "data");
    assert_eq!(je[0]["kind"], "dir");
    assert_eq!(je[0]["mode"], root_md.mode() & 0o7777);
    assert_eq!(je[0]["mtime"], root_md.mtime());
    assert_eq!(je[0]["mtime_nsec"], root_md.mtime_nsec());
    for ((rel, k), e) in walk.iter().zip(&je[1..]) {
        let full = case.root.join(rel);
        let md = fs::symlink_metadata(&full).unwrap();
        let p = format!("data/{}", rel_str(rel));
        assert_eq!(e["path"], p.as_str());
        assert_eq!(e["kind"], k.as_str(), "{p}");
        assert_eq!(e["mode"], md.mode() & 0o7777, "{p}: mode");
        if *k != Kind::Symlink {
            assert_eq!(e["mtime"], md.mtime(), "{p}: mtime");
            assert_eq!(e["mtime_nsec"], md.mtime_nsec(), "{p}: mtime_nsec");
        }
        let field = |f: &str| e.get(f).cloned().unwrap_or(serde_json::Value::Null);
        match k {
            Kind::File => {
                let data = fs::read(&full).unwrap();
                assert_eq!(e["size"], data.len() as u64, "{p}");
                assert_eq!(e["sha256"], sha256_hex(&data).as_str(), "{p}");
                assert!(field("target").is_null(), "{p}: file has a target");
            }
            Kind::Symlink => {
                let target = fs::read_link(&full).unwrap();
                assert_eq!(e["target"], rel_str(&target).as_str(), "{p}");
                assert!(field("size").is_null() && field("sha256").is_null(), "{p}");
            }
            _ => {
                assert!(
                    field("size").is_null()
                        && field("sha256").is_null()
                        && field("target").is_null(),
                    "{p}"
                );
            }
        }
    }
}

pub const TAG_FILES: [&str; 6] = [
    "bagit.txt",
    "bag-info.txt",
    "casevault.json",
    "manifest-sha256.txt",
    "casevault-locator.txt",
    "tagmanifest-sha256.txt",
];

fn entries_of(root: &Path) -> Vec<(std::path::PathBuf, Kind)> {
    entries(root)
}

#[test]
fn seal_without_recipient_is_usage_error() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "NR-1");
    let vault = fx.vault("nr.vault");
    seal_fails(
        &fx,
        &[case.root.as_os_str(), os("-o"), vault.as_os_str()],
        2,
    );
    // An -R file with only comments and blank lines gives no recipient either;
    // whichever code it is, nothing may be written.
    let rfile = fx.root().join("empty-recipients.txt");
    fs::write(&rfile, "# nobody\n\n").unwrap();
    let before = snapshot(fx.root());
    let a = casevault()
        .arg("seal")
        .arg(&case.root)
        .arg("-o")
        .arg(&vault)
        .arg("-R")
        .arg(&rfile)
        .assert()
        .failure();
    let code = a.get_output().status.code();
    assert!(matches!(code, Some(1) | Some(2)), "exit {code:?}");
    assert_snapshot_unchanged(fx.root(), &before);
}

#[test]
fn seal_bad_recipient_is_refused() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "BR-1");
    let vault = fx.vault("br.vault");
    let err = seal_fails(
        &fx,
        &[
            case.root.as_os_str(),
            os("-o"),
            vault.as_os_str(),
            os("-r"),
            os("age1notarealrecipient"),
        ],
        1,
    );
    assert_error_message(&err);
    let rfile = fx.root().join("bad-recipients.txt");
    fs::write(&rfile, format!("{}\nnot-a-key\n", fx.key.recipient)).unwrap();
    let err = seal_fails(
        &fx,
        &[
            case.root.as_os_str(),
            os("-o"),
            vault.as_os_str(),
            os("-R"),
            rfile.as_os_str(),
        ],
        1,
    );
    assert_error_message(&err);
    let missing = fx.root().join("no-such-recipients.txt");
    seal_fails(
        &fx,
        &[
            case.root.as_os_str(),
            os("-o"),
            vault.as_os_str(),
            os("-R"),
            missing.as_os_str(),
        ],
        1,
    );
}

fn seal_args<'a>(fx: &'a Fx, case: &'a Path, vault: &'a Path) -> [&'a std::ffi::OsStr; 5] {
    [
        case.as_os_str(),
        os("-o"),
        vault.as_os_str(),
        os("-r"),
        os(&fx.key.recipient),
    ]
}

#[test]
fn seal_refuses_existing_vault() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "EX-1");
    let vault = fx.vault("ex.vault");
    fs::write(&vault, b"precious").unwrap();
    let err = seal_fails(&fx, &seal_args(&fx, &case.root, &vault), 1);
    assert_error_message(&err);
    assert_eq!(fs::read(&vault).unwrap(), b"precious");
}

#[test]
fn seal_replaces_orphan_sidecar() {
    // CLI.md: a leftover VAULT.sha256 whose vault is gone describes nothing
    // and is replaced; only an existing vault needs --force.
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "EX-2");
    let vault = fx.vault("ex.vault");
    let sidecar = fx.vault("ex.vault.sha256");
    fs::write(&sidecar, b"old sidecar\n").unwrap();
    let v = fx.seal(&case.root, &vault, &[]);
    let bytes = fs::read(&vault).unwrap();
    assert_eq!(v["vault_sha256"], sha256_hex(&bytes).as_str());
    assert_eq!(
        fs::read_to_string(&sidecar).unwrap(),
        format!("{}  ex.vault\n", sha256_hex(&bytes))
    );
}

#[test]
fn seal_force_overwrites_vault_and_sidecar() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "EX-3");
    let vault = fx.vault("ex.vault");
    let sidecar = fx.vault("ex.vault.sha256");
    fs::write(&vault, b"precious").unwrap();
    fs::write(&sidecar, b"old sidecar\n").unwrap();
    let v = fx.seal(&case.root, &vault, &["--force"]);
    let bytes = fs::read(&vault).unwrap();
    assert_ne!(bytes, b"precious");
    assert_eq!(v["vault_sha256"], sha256_hex(&bytes).as_str());
    assert_eq!(
        fs::read_to_string(&sidecar).unwrap(),
        format!("{}  ex.vault\n", sha256_hex(&bytes))
    );
    let dest = fx.dest("ex");
    fx.unseal(&vault, &dest, &[]);
    assert_same_tree(&case.root, &dest, true);
    // Exactly vault + sidecar in out/ (no temp files left by the overwrite).
    assert_eq!(snapshot(&fx.out()).len(), 2);
}

/// CLI.md exit codes: SIGTERM → 143, temporary files removed. A sparse
/// 4 GiB file (no disk space, instant to make) keeps the binary busy long
/// enough to be interrupted, even in a release build.
#[test]
fn seal_sigterm_exits_143_and_leaves_nothing() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "SIG-1");
    fs::File::create(case.path("sparse.bin"))
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let vault = fx.vault("sig.vault");
    let before_out = snapshot(&fx.out());
    let child = crate::util::bin_command()
        .arg("seal")
        .arg(&case.root)
        .arg("-o")
        .arg(&vault)
        .arg("-r")
        .arg(&fx.key.recipient)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has started writing (a temp file appears), at most 5 s.
    let start = Instant::now();
    while snapshot(&fx.out()) == before_out && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = signal_and_wait(child, "TERM");
    assert_eq!(
        status.code(),
        Some(143),
        "exit status after SIGTERM: {status:?}"
    );
    assert_snapshot_unchanged(&fx.out(), &before_out);
}

#[test]
fn seal_refuses_vault_inside_case() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "IN-1");
    for vault in [case.path("self.vault"), case.path("sub/self.vault")] {
        let err = seal_fails(&fx, &seal_args(&fx, &case.root, &vault), 1);
        assert_error_message(&err);
    }
}

#[test]
fn seal_missing_or_non_directory_case_is_refused() {
    let fx = Fx::new();
    let vault = fx.vault("m.vault");
    let missing = fx.cases().join("NOPE");
    let err = seal_fails(&fx, &seal_args(&fx, &missing, &vault), 1);
    assert!(err.contains("NOPE"), "stderr names the path: {err}");
    let file = fx.cases().join("plainfile");
    fs::write(&file, b"x").unwrap();
    seal_fails(&fx, &seal_args(&fx, &file, &vault), 1);
}

#[test]
fn seal_refuses_unreadable_file() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "UR-1");
    case.file("locked.csv", b"secret").mode("locked.csv", 0o000);
    if chmod_000_is_readable(fx.root()) {
        eprintln!("SKIPPED assertion: running as root (or with CAP_DAC_OVERRIDE), chmod 000 does not prevent reading");
        return;
    }
    let vault = fx.vault("ur.vault");
    let err = seal_fails(&fx, &seal_args(&fx, &case.root, &vault), 1);
    assert!(err.contains("locked.csv"), "stderr names the path: {err}");
}

#[test]
fn seal_refuses_fifo_quickly() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "FIFO-1");
    let fifo = case.path("sub/pipe.fifo");
    run_tool(std::process::Command::new("mkfifo").arg(&fifo));
    let vault = fx.vault("fifo.vault");
    let before = snapshot(fx.root());
    let start = Instant::now();
    let a = seal_cmd(&case.root, &vault, &fx.key.recipient)
        .timeout(Duration::from_secs(20))
        .assert()
        .code(1);
    assert!(start.elapsed() < Duration::from_secs(20));
    let err = stderr_of(&a);
    assert_error_message(&err);
    assert!(err.contains("pipe.fifo"), "stderr names the FIFO: {err}");
    assert_snapshot_unchanged(fx.root(), &before);
}

#[test]
fn seal_refuses_non_utf8_name() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "NU-1");
    fs::write(path_from_bytes(&case.path("sub"), b"bad\xffname.txt"), b"x").unwrap();
    let vault = fx.vault("nu.vault");
    let err = seal_fails(&fx, &seal_args(&fx, &case.root, &vault), 1);
    assert_error_message(&err);
}

#[test]
fn seal_unknown_flag_is_usage_error() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "UF-1");
    let vault = fx.vault("uf.vault");
    seal_fails(
        &fx,
        &[
            case.root.as_os_str(),
            os("-o"),
            vault.as_os_str(),
            os("-r"),
            os(&fx.key.recipient),
            os("--no-such-flag"),
        ],
        2,
    );
}

// --- case ids -------------------------------------------------------------

#[test]
fn case_id_defaults_to_dir_name() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "CASE-2026.07_a");
    let vault = fx.vault("d.vault");
    let v = fx.seal(&case.root, &vault, &[]);
    assert_eq!(v["case_id"], "CASE-2026.07_a");
    assert_eq!(bag_top_dirs(&fx, &vault), vec!["CASE-2026.07_a"]);
}

#[test]
fn case_id_from_dot_inside_the_case_dir() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "DOT-7");
    let vault = fx.vault("dot.vault");
    let a = seal_cmd(".", &vault, &fx.key.recipient)
        .current_dir(&case.root)
        .arg("--json")
        .assert()
        .code(0);
    let v = json_of(&a);
    assert_eq!(v["case_id"], "DOT-7");
    assert_eq!(bag_top_dirs(&fx, &vault), vec!["DOT-7"]);
    let dest = fx.dest("dot");
    fx.unseal(&vault, &dest, &[]);
    assert_same_tree(&case.root, &dest, true);
}

#[test]
fn case_id_from_path_with_trailing_slash() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "SLASH-8");
    let vault = fx.vault("slash.vault");
    let arg = format!("{}/", case.root.display());
    let a = seal_cmd(&arg, &vault, &fx.key.recipient)
        .arg("--json")
        .assert()
        .code(0);
    assert_eq!(json_of(&a)["case_id"], "SLASH-8");
    assert_eq!(bag_top_dirs(&fx, &vault), vec!["SLASH-8"]);

    // `CASE/.` and a relative path from the parent resolve the same way.
    let vault2 = fx.vault("slash2.vault");
    let a = seal_cmd("SLASH-8/.", &vault2, &fx.key.recipient)
        .current_dir(fx.cases())
        .arg("--json")
        .assert()
        .code(0);
    assert_eq!(json_of(&a)["case_id"], "SLASH-8");
}

#[test]
fn invalid_dir_name_needs_case_id() {
    let fx = Fx::new();
    let too_long = format!("A{}", "b".repeat(128));
    for name in [
        "bad name",
        ".hidden",
        "-dash",
        "caf\u{e9}",
        too_long.as_str(),
    ] {
        let case = small_case(&fx.cases(), name);
        let vault = fx.vault("bad.vault");
        let err = seal_fails(&fx, &seal_args(&fx, &case.root, &vault), 1);
        assert_error_message(&err);
        assert!(
            err.contains("--case-id"),
            "{name:?}: stderr must mention --case-id: {err}"
        );
    }
    // The longest valid id (128 chars) is accepted.
    let ok_long = format!("A{}", "b".repeat(127));
    let case = small_case(&fx.cases(), &ok_long);
    let v = fx.seal(&case.root, &fx.vault("long.vault"), &[]);
    assert_eq!(v["case_id"], ok_long.as_str());

    // --case-id OK-1 makes the refused dir sealable; the bag dir is OK-1.
    let case = fx.cases().join("bad name");
    let vault = fx.vault("ok.vault");
    let v = fx.seal(&case, &vault, &["--case-id", "OK-1"]);
    assert_eq!(v["case_id"], "OK-1");
    assert_eq!(bag_top_dirs(&fx, &vault), vec!["OK-1"]);
    let dest = fx.dest("ok");
    let u = fx.unseal(&vault, &dest, &[]);
    assert_eq!(u["case_id"], "OK-1");
    assert_same_tree(&case, &dest, true);
}

#[test]
fn invalid_case_id_flag_is_refused() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "GOOD-1");
    let vault = fx.vault("x.vault");
    for bad in ["../x", "a/b", "", ".x", "has space"] {
        let before = snapshot(fx.root());
        let a = seal_cmd(&case.root, &vault, &fx.key.recipient)
            .arg("--case-id")
            .arg(bad)
            .assert()
            .failure();
        let code = a.get_output().status.code();
        assert!(
            matches!(code, Some(1) | Some(2)),
            "--case-id {bad:?}: exit {code:?}"
        );
        assert_snapshot_unchanged(fx.root(), &before);
    }
}

/// Seal stays within what readers accept (FORMAT §6.1): a case whose
/// symlinks' paths and targets exceed the readers' 128 MiB is refused up
/// front, naming the limit, and no vault is written (a vault no reader
/// would open is worse than none).
#[test]
fn seal_refuses_more_link_bytes_than_readers_accept() {
    let fx = Fx::new();
    let case = fx.cases().join("LINKS-1");
    fs::create_dir_all(&case).unwrap();
    let target = "t".repeat(4000);
    for i in 0..34_000 {
        std::os::unix::fs::symlink(&target, case.join(format!("l{i:05}"))).unwrap();
    }
    let vault = fx.vault("links.vault");
    let a = casevault()
        .arg("seal")
        .arg(&case)
        .arg("-o")
        .arg(&vault)
        .args(["-r", &fx.key.recipient])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains("symlinks or 134217728 bytes of their paths and targets"),
        "{err}"
    );
    assert!(!vault.exists());
    assert!(
        fs::read_dir(vault.parent().unwrap())
            .unwrap()
            .next()
            .is_none(),
        "nothing written"
    );
}

/// Seal writes the vault around the page cache (`O_DIRECT`,
/// src/direct.rs): right after a seal, no more of the vault is cached than
/// its last, partial 4 MiB chunk, which goes through the cache. On a
/// loop-mounted ext4, so that the result does not depend on what /tmp is
/// (tmpfs keeps everything in memory). The vault is the sealed case all
/// the same: it verifies, every byte and the sidecar.
#[test]
fn seal_writes_the_vault_around_the_page_cache() {
    let fx = Fx::new();
    let Some(fincore) = tool("fincore") else {
        return;
    };
    let Some(ext4) = loop_mount(fx.root(), "mkfs.ext4", &["-q"], 128 << 20, "defaults") else {
        return;
    };
    let case = fx.cases().join("DIRECT-1");
    let blob = seeded_bytes(11, (18 << 20) + 4321);
    CaseTree::new(&case).file("blob.bin", &blob);
    let vault = ext4.dir.join("d.vault");
    let mut cmd = seal_cmd(&case, &vault, &fx.key.recipient);
    cmd.args(["--compress", "none"]);
    assert_exit(cmd.assert().get_output(), 0);
    let len = fs::metadata(&vault).unwrap().len();
    assert!(len > 18 << 20, "vault of {len} bytes");
    let cached = cached_bytes(&fincore, &vault);
    assert!(
        cached <= (4 << 20) + 4096,
        "{cached} of the vault's {len} bytes are in the page cache"
    );
    // Every byte checked against the manifest, and the sidecar.
    verify_cmd(&vault, &fx.key.path).assert().success();
}

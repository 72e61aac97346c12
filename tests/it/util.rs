//! Shared helpers: running the binary, building case trees, comparing trees,
//! keys, locating stock tools, and taking vaults apart (decrypt, tar parse,
//! re-encrypt) for the corruption and hostile-vault tests.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use assert_cmd::cargo::cargo_bin_cmd;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Magic bytes of a zstd frame (RFC 8878), see FORMAT.md §2 item 2.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Size of one age payload chunk on disk: 64 KiB plaintext + 16-byte tag.
pub const AGE_CHUNK: usize = 65536 + 16;

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// A `casevault` command with a generous timeout so that a hang fails the
/// test instead of the whole run.
pub fn casevault() -> assert_cmd::Command {
    let mut cmd = cargo_bin_cmd!("casevault");
    cmd.timeout(Duration::from_secs(90));
    cmd.env_remove("RUST_LOG");
    cmd.env(PANIC_LOG_ENV, panic_log());
    cmd
}

/// The binary appends every panic to the file this variable names (see
/// src/main.rs); no input may make casevault panic, and the `no_panics`
/// test target fails the run if anything was appended.
pub const PANIC_LOG_ENV: &str = "CASEVAULT_PANIC_LOG";

/// The binary as a plain `std::process::Command` (for spawning and
/// signalling), with the panic log set.
pub fn bin_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_casevault"));
    c.env(PANIC_LOG_ENV, panic_log());
    c
}

/// The panic log shared by every test run of this checkout.
pub fn panic_log() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("casevault-panics.log")
}

/// stdout of an assert as UTF-8.
pub fn stdout_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(a.get_output().stdout.clone()).expect("stdout is UTF-8")
}

/// stderr of an assert as (lossy) text.
pub fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// Parse `--json` stdout: exactly one JSON object on one line.
pub fn json_of(a: &assert_cmd::assert::Assert) -> serde_json::Value {
    let out = stdout_of(a);
    let trimmed = out.strip_suffix('\n').unwrap_or(&out);
    assert!(
        !trimmed.contains('\n'),
        "--json output must be one line, got:\n{out}"
    );
    let v: serde_json::Value = serde_json::from_str(trimmed)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{out}"));
    assert!(v.is_object(), "--json output must be an object: {out}");
    v
}

/// Assert that a JSON object has every field in `keys` (the names CLI.md
/// lists). Extra fields are reported on stderr but tolerated: adding a
/// field does not break a script.
pub fn assert_json_keys(v: &serde_json::Value, keys: &[&str]) {
    let got: BTreeSet<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(|k| k.as_str())
        .collect();
    let want: BTreeSet<&str> = keys.iter().copied().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "JSON lacks fields {missing:?} (CLI.md): {v}"
    );
    let extra: Vec<_> = got.difference(&want).collect();
    if !extra.is_empty() {
        eprintln!("NOTE: JSON has fields not in CLI.md: {extra:?}");
    }
}

/// Errors are one line `casevault: error: …` on stderr (CLI.md).
pub fn assert_error_message(stderr: &str) {
    assert!(
        stderr.lines().any(|l| l.starts_with("casevault: error: ")),
        "stderr has no `casevault: error: ` line:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// An age X25519 identity written in the age-keygen file format.
pub struct Key {
    pub path: PathBuf,
    pub recipient: String,
    pub secret: String,
}

impl Key {
    /// Generate a fresh identity (with the age crate, independent of the
    /// code under test) and write it to `dir/name`.
    pub fn generate(dir: &Path, name: &str) -> Key {
        let id = age::x25519::Identity::generate();
        let recipient = id.to_public().to_string();
        let secret = id.to_string().expose_secret().to_string();
        let path = dir.join(name);
        fs::create_dir_all(dir).unwrap();
        write_private(
            &path,
            format!("# created: 2026-01-01T00:00:00Z\n# public key: {recipient}\n{secret}\n"),
        );
        Key {
            path,
            recipient,
            secret,
        }
    }

    pub fn identity(&self) -> age::x25519::Identity {
        age::x25519::Identity::from_str(&self.secret).unwrap()
    }
}

/// Write a secret file (an identity) with mode 0600, as `keygen -o` and
/// `age-keygen -o` do: casevault refuses identity files that group or others
/// can read.
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

// ---------------------------------------------------------------------------
// Fixture: one temp dir with a key, an output dir and a restore dir
// ---------------------------------------------------------------------------

/// Layout: `ROOT/keys/key.txt`, case trees under `ROOT/cases/`, vaults under
/// `ROOT/out/`, restore destinations under `ROOT/restore/`. Keeping those
/// apart lets a test snapshot exactly the directory a command may write to.
pub struct Fx {
    pub tmp: TempDir,
    pub key: Key,
}

impl Fx {
    pub fn new() -> Fx {
        let tmp = tempfile::Builder::new()
            .prefix("casevault-it-")
            .tempdir()
            .unwrap();
        let key = Key::generate(&tmp.path().join("keys"), "key.txt");
        fs::create_dir_all(tmp.path().join("cases")).unwrap();
        fs::create_dir_all(tmp.path().join("out")).unwrap();
        fs::create_dir_all(tmp.path().join("restore")).unwrap();
        Fx { tmp, key }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }
    pub fn cases(&self) -> PathBuf {
        self.root().join("cases")
    }
    pub fn out(&self) -> PathBuf {
        self.root().join("out")
    }
    pub fn restore(&self) -> PathBuf {
        self.root().join("restore")
    }
    pub fn vault(&self, name: &str) -> PathBuf {
        self.out().join(name)
    }
    pub fn dest(&self, name: &str) -> PathBuf {
        self.restore().join(name)
    }
    pub fn new_key(&self, name: &str) -> Key {
        Key::generate(&self.root().join("keys"), name)
    }

    /// `seal CASE -o VAULT -r KEY --json EXTRA…`, asserting success; returns
    /// the JSON object.
    pub fn seal(&self, case: &Path, vault: &Path, extra: &[&str]) -> serde_json::Value {
        let a = casevault()
            .arg("seal")
            .arg(case)
            .arg("-o")
            .arg(vault)
            .arg("-r")
            .arg(&self.key.recipient)
            .arg("--json")
            .args(extra)
            .assert();
        let code = a.get_output().status.code();
        assert_eq!(code, Some(0), "seal failed: stderr:\n{}", stderr_of(&a));
        json_of(&a)
    }

    /// `unseal VAULT -o DEST -i KEY --json EXTRA…`, asserting success.
    pub fn unseal(&self, vault: &Path, dest: &Path, extra: &[&str]) -> serde_json::Value {
        let a = casevault()
            .arg("unseal")
            .arg(vault)
            .arg("-o")
            .arg(dest)
            .arg("-i")
            .arg(&self.key.path)
            .arg("--json")
            .args(extra)
            .assert();
        assert_eq!(
            a.get_output().status.code(),
            Some(0),
            "unseal failed: stderr:\n{}",
            stderr_of(&a)
        );
        json_of(&a)
    }

    /// Run `unseal VAULT -o DEST -i KEY` and assert exit `code`, that DEST
    /// does not exist afterwards and that nothing at all changed under the
    /// fixture root (no staging leftovers, nothing written outside).
    pub fn unseal_fails(&self, vault: &Path, dest: &Path, code: i32, extra: &[&str]) -> String {
        let before = snapshot(self.root());
        let a = casevault()
            .arg("unseal")
            .arg(vault)
            .arg("-o")
            .arg(dest)
            .arg("-i")
            .arg(&self.key.path)
            .args(extra)
            .assert()
            .code(code);
        let err = stderr_of(&a);
        eprintln!("unseal {} (expected exit {code}): {err}", vault.display());
        assert!(
            !dest.exists() && dest.symlink_metadata().is_err(),
            "DEST {} was created by a failing unseal",
            dest.display()
        );
        assert_snapshot_unchanged(self.root(), &before);
        assert_error_message(&err);
        err
    }
}

// ---------------------------------------------------------------------------
// Case trees
// ---------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*) from a seed.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Builder for a case directory (in the manner of ripgrep's `Dir`).
pub struct CaseTree {
    pub root: PathBuf,
}

impl CaseTree {
    pub fn new(root: impl Into<PathBuf>) -> CaseTree {
        let root = root.into();
        fs::create_dir_all(&root).unwrap();
        CaseTree { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn file(&self, rel: &str, bytes: &[u8]) -> &Self {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, bytes).unwrap();
        self
    }

    pub fn dir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.path(rel)).unwrap();
        self
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        std::os::unix::fs::symlink(target, &p).unwrap();
        self
    }

    pub fn mode(&self, rel: &str, mode: u32) -> &Self {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// Give every file and directory (including the root) a distinct,
    /// deterministic mtime with a non-zero sub-second part. Call last:
    /// creating entries afterwards changes directory mtimes.
    pub fn stamp_times(&self, base: i64) -> &Self {
        let mut all = Vec::new();
        walk(&self.root, Path::new(""), &mut all);
        for (i, (rel, kind)) in all.iter().enumerate() {
            if *kind == Kind::Symlink {
                continue;
            }
            let t = filetime::FileTime::from_unix_time(
                base + 3_607 * i as i64,
                123_456_789 - i as u32 * 1000,
            );
            filetime::set_file_mtime(self.root.join(rel), t).unwrap();
        }
        let t = filetime::FileTime::from_unix_time(base - 86_400, 987_654_321);
        filetime::set_file_mtime(&self.root, t).unwrap();
        self
    }
}

/// Relative link targets used by the rich tree (inside, inside to a dir,
/// dangling).
pub const RICH_LINKS: &[(&str, &str)] = &[
    ("latest", "calls.csv"),
    ("nested/a/photos", "../../02 extraction/photos"),
    ("dangling", "missing/nowhere.txt"),
];

/// Absolute link added by [`rich_case`] with `with_absolute_link`.
pub const ABS_LINK: (&str, &str) = ("abs-hostname", "/etc/hostname");

/// Size of the seeded big file in the rich tree.
pub const BIG_LEN: usize = 3 * 1024 * 1024 + 12345;

/// The rich case tree: nested dirs, spaces and non-ASCII names, empty files
/// and dirs, symlinks (relative inside, dangling, optionally absolute), odd
/// permission bits, a seeded multi-MiB file, distinct mtimes.
pub fn rich_case(parent: &Path, name: &str, with_absolute_link: bool) -> CaseTree {
    rich_case_sized(parent, name, with_absolute_link, BIG_LEN)
}

/// The rich tree without the multi-MiB file (its `big.bin` has 64 KiB + 1),
/// for tests that are about outputs rather than volume.
pub fn rich_case_light(parent: &Path, name: &str) -> CaseTree {
    rich_case_sized(parent, name, false, 65_537)
}

fn rich_case_sized(parent: &Path, name: &str, with_absolute_link: bool, big: usize) -> CaseTree {
    let t = CaseTree::new(parent.join(name));
    t.file(
        "calls.csv",
        b"caller,callee,start,duration\n+491701234567,+4930123456,2024-03-15T10:30:00Z,42\n",
    )
    .file(
        "Zeugenaussage \u{fc}.csv",
        "Zeuge;Aussage\nM\u{fc}ller;\u{bb}Ich habe nichts gesehen.\u{ab}\n".as_bytes(),
    )
    .file(
        "\u{540d}\u{524d}.txt",
        "\u{540d}\u{524d}: \u{5c71}\u{7530}\n".as_bytes(),
    )
    .file("empty.txt", b"")
    .dir("empty_dir")
    .file("02 extraction/sms.db", &seeded_bytes(7, 100 * 1024))
    .file(
        "02 extraction/photos/IMG 0001.jpg",
        &seeded_bytes(8, 20 * 1024),
    )
    .file("02 extraction/photos/empty.jpg", b"")
    .file("02 extraction/run.sh", b"#!/bin/sh\necho hi\n")
    .file("nested/a/b/c/deep.txt", b"deep\n")
    .file("private/notes.txt", b"confidential\n")
    .file(
        "report.xml",
        b"<?xml version=\"1.0\"?>\n<report case=\"x\"/>\n",
    )
    .file("big.bin", &seeded_bytes(42, big));
    for (link, target) in RICH_LINKS {
        t.symlink(link, target);
    }
    if with_absolute_link {
        t.symlink(ABS_LINK.0, ABS_LINK.1);
    }
    t.mode("02 extraction/sms.db", 0o600)
        .mode("02 extraction/run.sh", 0o755)
        .mode("private/notes.txt", 0o640)
        .mode("private", 0o700)
        .mode("report.xml", 0o444)
        .mode("empty_dir", 0o750);
    t.stamp_times(1_700_000_000);
    t
}

/// A small case with a bit of everything but no big file.
pub fn small_case(parent: &Path, name: &str) -> CaseTree {
    let t = CaseTree::new(parent.join(name));
    t.file("a.txt", b"alpha\n")
        .file("sub/b.txt", b"bravo\n")
        .file("sub/c.bin", &seeded_bytes(3, 3000))
        .file("empty.txt", b"")
        .dir("empty_dir")
        .symlink("link-to-a", "a.txt");
    t.stamp_times(1_600_000_000);
    t
}

// ---------------------------------------------------------------------------
// Tree walking and comparison
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Other => "other",
        }
    }
}

fn kind_of(md: &fs::Metadata) -> Kind {
    let ft = md.file_type();
    if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

/// Depth-first pre-order walk, children sorted by the bytes of their names
/// (the payload order of FORMAT.md §3). Paths are relative to `root`; the
/// root itself is not included.
pub fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, Kind)>) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let r = rel.join(&name);
        let md = fs::symlink_metadata(root.join(&r)).unwrap();
        let k = kind_of(&md);
        out.push((r.clone(), k));
        if k == Kind::Dir {
            walk(root, &r, out);
        }
    }
}

/// Every entry under `root` (recursive, relative paths), not following links.
pub fn entries(root: &Path) -> Vec<(PathBuf, Kind)> {
    let mut v = Vec::new();
    walk(root, Path::new(""), &mut v);
    v
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: Kind,
    mode: u32,
    mtime: i64,
    sha256: Option<String>,
    target: Option<PathBuf>,
}

fn node(path: &Path) -> Node {
    let md = fs::symlink_metadata(path).unwrap();
    let kind = kind_of(&md);
    Node {
        kind,
        mode: if kind == Kind::Symlink {
            0
        } else {
            md.mode() & 0o777
        },
        mtime: if kind == Kind::Symlink { 0 } else { md.mtime() },
        sha256: (kind == Kind::File).then(|| sha256_hex(&fs::read(path).unwrap())),
        target: (kind == Kind::Symlink).then(|| fs::read_link(path).unwrap()),
    }
}

/// Compare two trees: same paths, kinds, bytes, permission bits
/// (`mode & 0o777`), mtimes (seconds) of files and dirs, symlink targets.
/// With `check_root` the roots' own mode and mtime are compared too.
pub fn assert_same_tree(expected: &Path, actual: &Path, check_root: bool) {
    let collect = |root: &Path| -> BTreeMap<PathBuf, Node> {
        entries(root)
            .into_iter()
            .map(|(rel, _)| {
                let n = node(&root.join(&rel));
                (rel, n)
            })
            .collect()
    };
    let a = collect(expected);
    let b = collect(actual);
    let ka: BTreeSet<_> = a.keys().collect();
    let kb: BTreeSet<_> = b.keys().collect();
    assert_eq!(
        ka,
        kb,
        "trees {} and {} hold different paths (missing: {:?}, extra: {:?})",
        expected.display(),
        actual.display(),
        ka.difference(&kb).collect::<Vec<_>>(),
        kb.difference(&ka).collect::<Vec<_>>()
    );
    for (rel, na) in &a {
        let nb = &b[rel];
        assert_eq!(na, nb, "entry {rel:?} differs (expected vs restored)");
    }
    if check_root {
        let ra = node(expected);
        let rb = node(actual);
        assert_eq!(ra.mode, rb.mode, "root dir mode differs");
        assert_eq!(ra.mtime, rb.mtime, "root dir mtime differs");
    }
}

/// Recursive listing of everything under `dir` (paths relative to it).
pub fn snapshot(dir: &Path) -> BTreeSet<PathBuf> {
    entries(dir).into_iter().map(|(p, _)| p).collect()
}

pub fn assert_snapshot_unchanged(dir: &Path, before: &BTreeSet<PathBuf>) {
    let after = snapshot(dir);
    assert_eq!(
        &after,
        before,
        "files appeared or vanished under {} (new: {:?}, gone: {:?})",
        dir.display(),
        after.difference(before).collect::<Vec<_>>(),
        before.difference(&after).collect::<Vec<_>>()
    );
}

/// Counts (files, dirs incl. the root, symlinks, bytes) of a case tree.
pub fn case_totals(root: &Path) -> (u64, u64, u64, u64) {
    let (mut f, mut d, mut s, mut b) = (0, 1, 0, 0);
    for (rel, k) in entries(root) {
        match k {
            Kind::File => {
                f += 1;
                b += fs::metadata(root.join(rel)).unwrap().len();
            }
            Kind::Dir => d += 1,
            Kind::Symlink => s += 1,
            Kind::Other => {}
        }
    }
    (f, d, s, b)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn rel_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

/// Send `kill -s SIG` to a running child and wait (at most 30 s) for it.
pub fn signal_and_wait(mut child: std::process::Child, sig: &str) -> std::process::ExitStatus {
    run_tool(
        std::process::Command::new("kill")
            .args(["-s", sig])
            .arg(child.id().to_string()),
    );
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("process did not exit within 30 s of SIG{sig}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Stock tools
// ---------------------------------------------------------------------------

/// Find a stock tool on PATH. Missing under `CI` → panic (the test fails);
/// missing locally → say why and return None (the test returns early).
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|c| {
                fs::metadata(c)
                    .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("required tool `{name}` not found on PATH (CI is set, so this is a failure)")
        }
        None => {
            eprintln!("SKIPPED: tool `{name}` not found on PATH");
            None
        }
    }
}

/// Run a stock tool, asserting success; returns stdout.
pub fn run_tool(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------
// Taking vaults apart
// ---------------------------------------------------------------------------

/// Decrypt a vault (binary or armored) with the age crate.
pub fn decrypt_vault(vault: &Path, key: &Key) -> Vec<u8> {
    let bytes = fs::read(vault).unwrap();
    age::decrypt(&key.identity(), &bytes).expect("vault decrypts with the age crate")
}

/// The tar stream inside an age plaintext (zstd detected by magic).
pub fn plaintext_tar(plain: &[u8]) -> Vec<u8> {
    if plain.starts_with(&ZSTD_MAGIC) {
        zstd::decode_all(plain).expect("zstd stream decodes")
    } else {
        plain.to_vec()
    }
}

/// Encrypt `plain` to an age X25519 recipient with the age crate.
pub fn encrypt_to(recipient: &str, plain: &[u8], armor: bool) -> Vec<u8> {
    let r = age::x25519::Recipient::from_str(recipient).unwrap();
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
    let mut out = Vec::new();
    if armor {
        let aw = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
            .unwrap();
        let mut w = enc.wrap_output(aw).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap().finish().unwrap();
    } else {
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap();
    }
    out
}

/// One tar member as raw bytes: an optional pax extended header (type `x`)
/// and the entry it applies to.
#[derive(Clone)]
pub struct RawEntry {
    pub pax: Option<(tar::Header, Vec<u8>)>,
    pub header: tar::Header,
    pub data: Vec<u8>,
}

fn pax_value<'a>(data: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        let rec = &rest[sp + 1..len];
        let eq = rec.iter().position(|&b| b == b'=')?;
        if &rec[..eq] == key.as_bytes() {
            return Some(&rec[eq + 1..rec.len() - 1]);
        }
        rest = &rest[len..];
    }
    None
}

impl RawEntry {
    /// The entry's path (pax `path` if present, else ustar prefix/name).
    pub fn path(&self) -> String {
        if let Some((_, d)) = &self.pax {
            if let Some(p) = pax_value(d, "path") {
                return String::from_utf8_lossy(p).into_owned();
            }
        }
        String::from_utf8_lossy(&self.header.path_bytes()).into_owned()
    }

    pub fn typeflag(&self) -> u8 {
        self.header.as_bytes()[156]
    }

    /// Replace the data and fix the size field and checksum.
    pub fn set_data(&mut self, data: Vec<u8>) {
        self.header.set_size(data.len() as u64);
        self.header.set_cksum();
        self.data = data;
    }

    /// Write `name` verbatim into the ustar name field (no validation, so
    /// `..` and absolute paths are possible), clear the prefix, drop any pax
    /// header, fix the checksum.
    pub fn set_raw_name(&mut self, name: &[u8]) {
        assert!(name.len() <= 100, "raw name too long");
        let b = self.header.as_mut_bytes();
        b[..100].fill(0);
        b[..name.len()].copy_from_slice(name);
        b[345..500].fill(0);
        self.pax = None;
        self.header.set_cksum();
    }

    /// A new ustar entry with a raw (unvalidated) name.
    pub fn new_raw(name: &[u8], typeflag: u8, data: Vec<u8>, link: &[u8]) -> RawEntry {
        let mut h = tar::Header::new_ustar();
        h.set_mode(if typeflag == b'5' { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.as_mut_bytes()[156] = typeflag;
        h.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link);
        let mut e = RawEntry {
            pax: None,
            header: h,
            data,
        };
        e.set_raw_name(name);
        e
    }
}

/// One pax extended-header record `LEN key=value\n`, LEN counting itself.
pub fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut digits = 1;
    while (body.len() + digits).to_string().len() != digits {
        digits += 1;
    }
    format!("{}{body}", body.len() + digits)
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    let rem = v.len() % 512;
    if rem != 0 {
        v.resize(v.len() + 512 - rem, 0);
    }
    v
}

/// Parse a tar stream into raw entries plus everything after the first zero
/// block (end-of-archive marker and padding).
pub fn parse_tar(tar: &[u8]) -> (Vec<RawEntry>, Vec<u8>) {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut pax: Option<(tar::Header, Vec<u8>)> = None;
    while pos + 512 <= tar.len() {
        let block = &tar[pos..pos + 512];
        if block.iter().all(|&b| b == 0) {
            return (out, tar[pos..].to_vec());
        }
        let h = tar::Header::from_byte_slice(block).clone();
        let size = h.entry_size().unwrap() as usize;
        let data = tar[pos + 512..pos + 512 + size].to_vec();
        pos += 512 + size.div_ceil(512) * 512;
        if h.as_bytes()[156] == b'x' {
            pax = Some((h, data));
        } else {
            out.push(RawEntry {
                pax: pax.take(),
                header: h,
                data,
            });
        }
    }
    panic!("tar stream has no end-of-archive block");
}

/// Serialize entries, then the two zero blocks, padded to a 10240 record.
pub fn build_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if let Some((h, d)) = &e.pax {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&padded(d));
        }
        out.extend_from_slice(e.header.as_bytes());
        out.extend_from_slice(&padded(&e.data));
    }
    out.extend_from_slice(&[0u8; 1024]);
    let rem = out.len() % 10240;
    if rem != 0 {
        out.resize(out.len() + 10240 - rem, 0);
    }
    out
}

/// A path from raw bytes (for non-UTF-8 names).
pub fn path_from_bytes(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

/// Would a `chmod 000` file be readable by us (root / CAP_DAC_OVERRIDE)?
pub fn chmod_000_is_readable(dir: &Path) -> bool {
    let p = dir.join(".probe-chmod-000");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    let readable = fs::File::open(&p).is_ok();
    fs::remove_file(&p).unwrap();
    readable
}

// ---------------------------------------------------------------------------
// Self-checks: the comparison helpers must be able to fail.
// ---------------------------------------------------------------------------

fn compare_panics(a: &Path, b: &Path, check_root: bool) -> bool {
    let (a, b) = (a.to_path_buf(), b.to_path_buf());
    std::panic::catch_unwind(move || assert_same_tree(&a, &b, check_root)).is_err()
}

#[test]
fn self_check_tree_compare_detects_each_difference() {
    let tmp = TempDir::new().unwrap();
    let make = |name: &str| small_case(tmp.path(), name);
    let base = make("base");
    let same = make("same");
    assert!(
        !compare_panics(&base.root, &same.root, true),
        "equal trees compare equal"
    );

    type Mutation = fn(&CaseTree);
    let mutations: [(&str, Mutation); 7] = [
        ("bytes", |t| {
            t.file("a.txt", b"alphA\n");
        }),
        ("mode", |t| {
            t.mode("sub/b.txt", 0o600);
        }),
        ("mtime", |t| {
            filetime::set_file_mtime(
                t.path("sub/c.bin"),
                filetime::FileTime::from_unix_time(5, 0),
            )
            .unwrap();
        }),
        ("link target", |t| {
            fs::remove_file(t.path("link-to-a")).unwrap();
            t.symlink("link-to-a", "sub/b.txt");
        }),
        ("extra file", |t| {
            t.file("empty_dir/new.txt", b"");
        }),
        ("kind", |t| {
            fs::remove_file(t.path("empty.txt")).unwrap();
            t.dir("empty.txt");
        }),
        ("dir mtime", |t| {
            filetime::set_file_mtime(t.path("sub"), filetime::FileTime::from_unix_time(5, 0))
                .unwrap();
        }),
    ];
    for (i, (label, mutate)) in mutations.iter().enumerate() {
        let t = make(&format!("m{i}"));
        mutate(&t);
        // Restore the mtimes the mutation did not target on purpose.
        if !label.contains("mtime") {
            t.stamp_times(1_600_000_000);
        }
        assert!(
            compare_panics(&base.root, &t.root, true),
            "difference in {label} not detected"
        );
    }
    // Root metadata only with check_root.
    let t = make("root");
    filetime::set_file_mtime(&t.root, filetime::FileTime::from_unix_time(5, 0)).unwrap();
    assert!(compare_panics(&base.root, &t.root, true));
    assert!(!compare_panics(&base.root, &t.root, false));
}

#[test]
fn self_check_tar_parse_build_round_trip() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("X/a.txt").unwrap();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"abc"[..]).unwrap();
    // ustar prefix + name
    let split = format!("X/{}/f.txt", "p".repeat(120));
    let mut h = tar::Header::new_ustar();
    h.set_path(&split).unwrap();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"y"[..]).unwrap();
    let mut bytes = b.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024.min(bytes.len()));
    // A pax `x` header carrying the path of the next entry.
    let long = format!("X/{}", "n".repeat(150));
    let rec = pax_record("path", &long);
    let mut px = RawEntry::new_raw(b"X/PaxHeader", b'x', rec.into_bytes(), b"");
    px.header.set_cksum();
    let mut e = RawEntry::new_raw(b"X/short", b'0', b"z".to_vec(), b"");
    e.pax = Some((px.header.clone(), px.data.clone()));
    let extra = build_tar(&[e]);
    // parse_tar must see the pax path.
    bytes.extend_from_slice(&extra);
    let (entries, trailing) = parse_tar(&bytes);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].path(), "X/a.txt");
    assert_eq!(entries[0].data, b"abc");
    assert_eq!(entries[1].path(), split);
    assert_eq!(entries[2].path(), long);
    assert_eq!(entries[2].data, b"z");
    assert!(trailing.iter().all(|&b| b == 0));
    let rebuilt = build_tar(&entries);
    let names: Vec<String> = tar::Archive::new(&rebuilt[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["X/a.txt".to_string(), split, long]);
}

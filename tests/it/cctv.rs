//! C2SP CCTV age conformance vectors (`../shared/vectors/cctv-age`, see its
//! README): every vector whose features casevault supports goes through
//! casevault's own age layer (`casevault::read::cipher::age_reader`, identities
//! parsed by `casevault::keys::read_identity_file`), and the outcome must be
//! the expected class: success with the payload's SHA-256, or header, HMAC,
//! payload (with the SHA-256 of what was released before the error), armor
//! failure, or no match. Modelled on Go age's `testkit_test.go`.
//!
//! Every `hybrid*` vector (post-quantum `mlkem768x25519`, `src/pq.rs`) must
//! pass without exception. The few places where the age crate that
//! casevault builds on deliberately differs from the reference are listed in
//! [`AGE_CRATE_DEVIATIONS`], each with its reason; none is a hybrid vector.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use casevault::keys::read_identity_file;
use casevault::read::cipher::{age_reader, map_error};
use casevault::ErrorKind;
use sha2::{Digest, Sha256};

/// Where the vectors are: `../shared/vectors/cctv-age` beside the repo.
fn vectors_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/cctv-age");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CCTV vectors not found at {} (CI is set, so this is a failure)",
            dir.display()
        );
    }
    eprintln!("SKIPPED: CCTV vectors not found at {}", dir.display());
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Success([u8; 32]),
    HeaderFailure,
    HmacFailure,
    PayloadFailure([u8; 32]),
    ArmorFailure,
    NoMatch,
}

impl Outcome {
    fn class(&self) -> &'static str {
        match self {
            Outcome::Success(_) => "success",
            Outcome::HeaderFailure => "header failure",
            Outcome::HmacFailure => "HMAC failure",
            Outcome::PayloadFailure(_) => "payload failure",
            Outcome::ArmorFailure => "armor failure",
            Outcome::NoMatch => "no match",
        }
    }
}

struct Vector {
    expect: Outcome,
    identities: Vec<String>,
    passphrases: Vec<String>,
    armored: bool,
    comment: String,
    age_file: Vec<u8>,
}

fn hex32(s: &str) -> [u8; 32] {
    assert_eq!(s.len(), 64, "bad payload hash {s:?}");
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex payload hash");
    }
    out
}

/// Parse a vector: header lines `key: value`, an empty line, the age file
/// (zlib-compressed when the header says so).
fn parse(path: &Path) -> Vector {
    let bytes = fs::read(path).unwrap();
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or_else(|| panic!("{}: no end of header", path.display()));
    let header = std::str::from_utf8(&bytes[..split]).expect("header is UTF-8");
    let body = &bytes[split + 2..];
    let (mut expect, mut payload) = (None, None);
    let mut v = Vector {
        expect: Outcome::NoMatch,
        identities: vec![],
        passphrases: vec![],
        armored: false,
        comment: String::new(),
        age_file: vec![],
    };
    let mut compressed = false;
    for line in header.lines() {
        let (k, val) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{}: bad header line {line:?}", path.display()));
        match k {
            "expect" => expect = Some(val.to_string()),
            "payload" => payload = Some(hex32(val)),
            "file key" => {}
            "identity" => v.identities.push(val.to_string()),
            "passphrase" => v.passphrases.push(val.to_string()),
            "armored" => v.armored = val == "yes",
            "compressed" => {
                assert_eq!(val, "zlib", "{}", path.display());
                compressed = true;
            }
            "comment" => v.comment = val.to_string(),
            other => panic!("{}: unknown header field {other:?}", path.display()),
        }
    }
    v.expect = match expect.as_deref() {
        Some("success") => Outcome::Success(payload.expect("success has a payload hash")),
        Some("payload failure") => {
            Outcome::PayloadFailure(payload.expect("payload failure has a payload hash"))
        }
        Some("header failure") => Outcome::HeaderFailure,
        Some("HMAC failure") => Outcome::HmacFailure,
        Some("armor failure") => Outcome::ArmorFailure,
        Some("no match") => Outcome::NoMatch,
        e => panic!("{}: unknown expect {e:?}", path.display()),
    };
    v.age_file = if compressed {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(body)
            .read_to_end(&mut out)
            .expect("zlib body");
        out
    } else {
        body.to_vec()
    };
    v
}

fn is_armor_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<age::armor::ArmoredReadError>())
}

/// How casevault classes an age error: exit 4 for no match, exit 3 for a
/// damaged file.
fn casevault_kind(e: age::DecryptError) -> ErrorKind {
    map_error(Path::new("vector"), e).kind()
}

/// Run one vector through casevault's age layer.
fn run(name: &str, v: &Vector, tmp: &Path) -> (Outcome, Option<ErrorKind>) {
    // Identities go through casevault's identity-file parser.
    let identities = if v.identities.is_empty() {
        vec![]
    } else {
        let f = tmp.join(format!("{name}.key"));
        crate::util::write_private(&f, v.identities.join("\n") + "\n");
        read_identity_file(&f, false).unwrap_or_else(|e| panic!("{name}: identity file: {e}"))
    };
    let mut ids = identities;
    for p in &v.passphrases {
        // Go age's default ceiling (2^22): scrypt_work_factor_23 is refused.
        let mut id = age::scrypt::Identity::new(p.clone().into());
        id.set_max_work_factor(22);
        ids.push(Box::new(id));
    }
    let reader = age_reader(BufReader::new(&v.age_file[..]), &ids);
    let mut r = match reader {
        Ok(r) => r,
        Err(e) => {
            let outcome = match &e {
                age::DecryptError::InvalidMac => Outcome::HmacFailure,
                age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                    Outcome::NoMatch
                }
                age::DecryptError::Io(io) if is_armor_error(io) => Outcome::ArmorFailure,
                _ => Outcome::HeaderFailure,
            };
            return (outcome, Some(casevault_kind(e)));
        }
    };
    let mut payload = Vec::new();
    match r.read_to_end(&mut payload) {
        Ok(_) => (Outcome::Success(Sha256::digest(&payload).into()), None),
        Err(e) if is_armor_error(&e) => (Outcome::ArmorFailure, None),
        Err(e) => {
            let kind = casevault::io::classify_stream_error(Path::new("vector"), "reading", e);
            (
                Outcome::PayloadFailure(Sha256::digest(&payload).into()),
                Some(kind.kind()),
            )
        }
    }
}

/// Vectors where the age crate (not casevault) knowingly differs from the
/// reference, as listed in the age crate's own `tests/testkit.rs`. Each is
/// still refused or read exactly as the age crate documents; none is a
/// hybrid vector. (name, expected, what age does, why)
const AGE_CRATE_DEVIATIONS: &[(&str, &str, &str)] = &[
    (
        "stanza_missing_body",
        "success",
        "age keeps parsing legacy stanzas without an explicit short final line",
    ),
    (
        "stanza_missing_final_line",
        "success",
        "age keeps parsing legacy stanzas without an explicit short final line",
    ),
    (
        "armor_garbage_leading",
        "header failure",
        "age detects armor by its begin line; a bad begin line is read as a binary header",
    ),
    (
        "armor_lowercase",
        "header failure",
        "age detects armor by its begin line; a bad begin line is read as a binary header",
    ),
    (
        "armor_whitespace_begin",
        "header failure",
        "age detects armor by its begin line; a bad begin line is read as a binary header",
    ),
    (
        "armor_wrong_type",
        "header failure",
        "age detects armor by its begin line; a bad begin line is read as a binary header",
    ),
    (
        "armor_whitespace_outside",
        "header failure",
        "age does not skip whitespace before the armor begin line (refused, not read)",
    ),
];

#[test]
fn cctv_age_vectors() {
    let Some(dir) = vectors_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "README.md" && !n.starts_with('.'))
        .collect();
    names.sort();
    assert!(
        names.len() >= 140,
        "expected the full CCTV set, got {}",
        names.len()
    );

    // class -> (run, passed); plus the deviations actually seen.
    let mut counts: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut deviations = Vec::new();
    let mut hybrid = 0;
    for name in &names {
        let v = parse(&dir.join(name));
        let (got, kind) = run(name, &v, tmp.path());
        let class = v.expect.class();
        let entry = counts.entry(class).or_default();
        entry.0 += 1;
        if name.starts_with("hybrid") || name == "armor_hybrid" {
            hybrid += 1;
        }
        // casevault's exit-code class must agree with the vector's class.
        // Not for scrypt vectors: casevault never opens a vault sealed to a
        // passphrase, and its vault error mapping (like src/read/cipher.rs) reads age's
        // DecryptionFailed, which only scrypt gives for a wrong passphrase,
        // as tampering.
        let kind_ok = match (&v.expect, kind) {
            _ if !v.passphrases.is_empty() => true,
            (Outcome::NoMatch, Some(k)) => k == ErrorKind::NoMatchingKey,
            (Outcome::NoMatch, None) => false,
            (_, Some(k)) => k == ErrorKind::Integrity,
            (_, None) => true,
        };
        let dev = AGE_CRATE_DEVIATIONS.iter().find(|d| d.0 == name);
        if got == v.expect && kind_ok {
            entry.1 += 1;
        } else if let Some((_, as_class, why)) = dev.filter(|d| got.class() == d.1) {
            deviations.push(format!(
                "{name}: expected {class}, age gives {as_class}: {why}"
            ));
        } else {
            failures.push(format!(
                "{name}: expected {:?}, got {got:?} (casevault kind {kind:?}); {}",
                v.expect, v.comment
            ));
        }
    }
    eprintln!("CCTV age vectors in {}:", dir.display());
    for (class, (run, pass)) in &counts {
        eprintln!("  {class:16} run {run:3}  as expected {pass:3}");
    }
    eprintln!("  hybrid vectors: {hybrid}");
    for d in &deviations {
        eprintln!("  known age-crate deviation: {d}");
    }
    assert_eq!(hybrid, 19, "18 hybrid* vectors + armor_hybrid");
    assert!(
        deviations.len() <= AGE_CRATE_DEVIATIONS.len(),
        "deviations: {deviations:#?}"
    );
    assert!(
        failures.is_empty(),
        "CCTV failures:\n{}",
        failures.join("\n")
    );
}

/// A vector that must fail cannot pass by accident: flipping the expected
/// payload hash of the plain `hybrid` vector is detected.
#[test]
fn cctv_harness_detects_a_wrong_payload() {
    let Some(dir) = vectors_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut v = parse(&dir.join("hybrid"));
    let Outcome::Success(mut h) = v.expect.clone() else {
        panic!("hybrid is a success vector")
    };
    h[0] ^= 1;
    v.expect = Outcome::Success(h);
    let (got, _) = run("hybrid", &v, tmp.path());
    assert_ne!(got, v.expect);
    // And without the identity it is "no match", exit 4.
    v.identities.clear();
    v.identities.push(
        age::x25519::Identity::generate()
            .to_string()
            .expose_secret_owned(),
    );
    let (got, kind) = run("hybrid_other", &v, tmp.path());
    assert_eq!(got, Outcome::NoMatch);
    assert_eq!(kind, Some(ErrorKind::NoMatchingKey));
}

trait ExposeOwned {
    fn expose_secret_owned(&self) -> String;
}

impl ExposeOwned for age::secrecy::SecretString {
    fn expose_secret_owned(&self) -> String {
        use age::secrecy::ExposeSecret;
        self.expose_secret().to_string()
    }
}

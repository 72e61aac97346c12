//! `casevault report` (issue #14): one self-contained HTML page per vault
//! that states what the vault is, what was checked and how it was handled,
//! for readers who will not read JSON. This module gathers the facts
//! ([`Report`], also the `--json` document); [`html`] renders them.
//!
//! The facts come from the library's own checks: [`crate::verify`] (with
//! -i every byte, without only the sidecar and header), the signature
//! checks against `--signers`, [`crate::custody`] for the chain, and
//! [`header`] for the recipient stanzas. Entries stream through
//! [`Entries`]: the first [`ENTRY_CUT`] are kept for the page, every one
//! goes to the `--listing` CSV as it passes, and per-folder totals are
//! kept for the rest, so the report adds no per-entry memory beyond the cut.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::allowed_signers::AllowedSigners;
use crate::custody;
use crate::error::Finding;
use crate::format::{self, CaseJson, Entry, Kind, Signer};
use crate::io::AtomicFile;
use crate::keys::BoxedIdentity;
use crate::sign;
use crate::verify::{self, Sidecar, SignatureCheck, VerifyReport};
use crate::{Error, ErrorKind, Result};

pub mod header;
pub mod html;

/// Entries listed one per row in the page; above this, the page shows a
/// per-folder summary and the complete listing goes to `--listing`. A
/// table of 20,000 rows is about 8 MB of HTML, which a browser still
/// opens in a few seconds and prints on some 400 pages; beyond that
/// neither reading nor printing the page is practical.
pub const ENTRY_CUT: u64 = 20_000;

/// Top-level folders summed by name; more fall into one `(other folders)`
/// row, so that a case of a million top-level folders stays bounded.
pub const MAX_FOLDERS: usize = 1000;

/// Bars in the bytes-per-folder chart; the rest are summed as one bar.
pub const MAX_BARS: usize = 12;

/// What `report` was asked to do.
pub struct Options<'a> {
    pub vault: &'a Path,
    /// `-i`: empty means the key-less checks only.
    pub identities: &'a [BoxedIdentity],
    /// `--signers` (and the accepted principal).
    pub signatures: Option<&'a SignatureCheck>,
    /// `--custody LOG`.
    pub custody: Option<&'a Path>,
    /// `--listing FILE.csv`.
    pub listing: Option<&'a Path>,
    /// The one line that differs between runs.
    pub generated_at: String,
    /// Replace an existing `--listing` file (`--force`).
    pub overwrite: bool,
}

/// Every fact of the report; the `--json` document (docs/CLI.md).
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the report was made (UTC); the only field that changes between
    /// two runs on the same inputs.
    pub generated_at: String,
    /// The casevault that made the report.
    pub generated_by: String,
    /// Whether everything that was checked passed (vault and custody chain).
    pub ok: bool,
    /// Whether every file was decrypted and checked (-i).
    pub contents_checked: bool,
    /// What failed, one line each (empty when `ok`).
    pub failures: Vec<String>,
    pub vault: VaultFacts,
    pub recipients: header::Recipients,
    /// From `casevault.json` (-i only).
    pub case: Option<CaseFacts>,
    pub signatures: Signatures,
    /// Totals from `casevault.json` (-i only).
    pub totals: Option<format::Totals>,
    /// The entries (-i only).
    pub entries: Option<EntryFacts>,
    /// The custody chain (`--custody`).
    pub custody: Option<CustodyFacts>,
    /// The commands that check the same without casevault.
    pub stock_commands: Vec<StockCommand>,
}

/// The vault file.
#[derive(Debug, Serialize)]
pub struct VaultFacts {
    /// The file name (no directory).
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// `ok`, `missing` or `mismatch`.
    pub sidecar: Sidecar,
}

/// The case as `casevault.json` records it.
#[derive(Debug, Serialize)]
pub struct CaseFacts {
    pub case_id: String,
    pub format_version: u32,
    pub compression: &'static str,
    pub sealed_at: String,
    pub tool: String,
    /// The signer the sealer named inside the vault (format version 2).
    pub signer: Option<Signer>,
}

/// One signature's outcome.
#[derive(Debug, Serialize)]
pub struct SignatureFacts {
    /// Whether the signature exists.
    pub present: bool,
    /// The trusted principal, when checked against `--signers` and trusted.
    pub principal: Option<String>,
    /// `SHA256:…` of the key that made it, when it verified.
    pub fingerprint: Option<String>,
    /// The outcome in words.
    pub outcome: String,
}

/// `VAULT.sig` and `casevault.sig`.
#[derive(Debug, Serialize)]
pub struct Signatures {
    /// Whether they were checked against an allowed_signers file.
    pub checked_against_signers: bool,
    /// `VAULT.sig`, over the vault file.
    pub outer: SignatureFacts,
    /// `casevault.sig`, inside the vault (-i only).
    pub inner: Option<SignatureFacts>,
}

/// One entry row (page, `--json`, and the `--listing` CSV).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Path inside the case (without `data/`).
    pub path: String,
    pub kind: Kind,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// Permission bits, octal text (`0644`).
    pub mode: String,
    /// Modification time, RFC 3339 UTC.
    pub mtime: String,
    /// A symlink's target.
    pub target: Option<String>,
}

/// Totals of one top-level folder.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Folder {
    /// Its name, `(top level)` for entries directly in the case, or
    /// `(other folders)` beyond [`MAX_FOLDERS`].
    pub name: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// The entries of the case.
#[derive(Debug, Serialize)]
pub struct EntryFacts {
    /// Entries in the case (files, directories, symlinks; not the root).
    pub count: u64,
    /// The cut: up to this many entries are listed in the page.
    pub cut: u64,
    /// Whether every entry is listed in `rows`.
    pub all_listed: bool,
    /// The entries, in the vault's order (empty above the cut).
    pub rows: Vec<Row>,
    /// Per top-level folder, in the vault's order.
    pub folders: Vec<Folder>,
    /// The `--listing` file's name, when one was written.
    pub listing: Option<String>,
}

/// One custody record of this vault.
#[derive(Debug, Serialize)]
pub struct CustodyRow {
    pub line: u64,
    pub seq: u64,
    pub time: String,
    pub action: String,
    pub actor: String,
    pub host: String,
    pub outcome: String,
    pub reason: Option<String>,
    /// The signature's outcome in words.
    pub signature: String,
}

/// The custody chain for this vault.
#[derive(Debug, Serialize)]
pub struct CustodyFacts {
    /// The log's file name.
    pub log: String,
    /// Whether the chain is intact (as `custody verify [--signers]` says).
    pub intact: bool,
    /// Records in the log (intact ones when broken).
    pub records_in_log: u64,
    /// SHA-256 of the last intact line.
    pub head_sha256: String,
    /// The first broken line and what is wrong there.
    pub broken_line: Option<u64>,
    pub problem: Option<String>,
    /// Whether every record had to carry a trusted signature.
    pub signatures_checked: bool,
    /// The records that name this vault (by file name or SHA-256).
    pub records: Vec<CustodyRow>,
}

/// A stock command and what it checks.
#[derive(Debug, Serialize)]
pub struct StockCommand {
    pub purpose: String,
    pub command: String,
}

/// Collects the entries as they stream: rows up to the cut, per-folder
/// totals, and every row into the `--listing` CSV.
pub struct Entries {
    count: u64,
    rows: Vec<Row>,
    over_cut: bool,
    folders: Vec<Folder>,
    folder_index: BTreeMap<String, usize>,
    listing: Option<(BufWriter<AtomicFile>, PathBuf)>,
    overwrite: bool,
}

impl Entries {
    /// Start collecting; with `listing`, open the CSV (written under a
    /// temporary name, in place only after [`Entries::finish`]).
    pub fn new(listing: Option<&Path>, overwrite: bool) -> Result<Entries> {
        let listing = match listing {
            Some(p) => {
                let f = AtomicFile::create(p)?;
                f.set_mode(0o600)?;
                let mut w = BufWriter::new(f);
                w.write_all(b"path,type,size,sha256,mode,mtime,target\r\n")
                    .map_err(|e| Error::io("cannot write", p, e))?;
                Some((w, p.to_path_buf()))
            }
            None => None,
        };
        Ok(Entries {
            count: 0,
            rows: Vec::new(),
            over_cut: false,
            folders: Vec::new(),
            folder_index: BTreeMap::new(),
            listing,
            overwrite,
        })
    }

    /// Walk the entries of a checked `casevault.json`, one at a time.
    pub fn visit(&mut self, json: &CaseJson) -> Result<()> {
        for e in &json.entries {
            crate::signal::check()?;
            self.entry(e)?;
        }
        Ok(())
    }

    /// One entry (`data` itself is skipped).
    pub fn entry(&mut self, e: &Entry) -> Result<()> {
        let Some(path) = e.path.strip_prefix("data/") else {
            return Ok(());
        };
        let row = Row {
            path: path.to_string(),
            kind: e.kind,
            size: e.size,
            sha256: e.sha256.clone(),
            mode: format!("{:04o}", e.mode & 0o7777),
            mtime: format::display_time(e.mtime, e.mtime_nsec),
            target: e.target.clone(),
        };
        self.count += 1;
        self.add_to_folder(&row);
        if let Some((w, p)) = &mut self.listing {
            write_csv_row(w, &row).map_err(|err| Error::io("cannot write", p, err))?;
        }
        if self.count > ENTRY_CUT {
            if !self.over_cut {
                self.over_cut = true;
                self.rows = Vec::new();
            }
        } else {
            self.rows.push(row);
        }
        Ok(())
    }

    fn add_to_folder(&mut self, row: &Row) {
        let name = match row.path.split_once('/') {
            Some((top, _)) => top.to_string(),
            None if row.kind == Kind::Dir => row.path.clone(),
            None => "(top level)".to_string(),
        };
        let at_top = !row.path.contains('/');
        let i = match self.folder_index.get(&name) {
            Some(&i) => i,
            None => {
                let name = if self.folders.len() < MAX_FOLDERS {
                    name
                } else {
                    "(other folders)".to_string()
                };
                match self.folder_index.get(&name) {
                    Some(&i) => i,
                    None => {
                        self.folders.push(Folder {
                            name: name.clone(),
                            ..Folder::default()
                        });
                        self.folder_index.insert(name, self.folders.len() - 1);
                        self.folders.len() - 1
                    }
                }
            }
        };
        let f = &mut self.folders[i];
        match row.kind {
            // The top-level folder itself is not counted inside itself.
            Kind::Dir if at_top => {}
            Kind::Dir => f.dirs += 1,
            Kind::File => {
                f.files += 1;
                f.bytes += row.size.unwrap_or(0);
            }
            Kind::Symlink => f.symlinks += 1,
        }
    }

    /// The facts, and the listing put in place.
    pub fn finish(self) -> Result<EntryFacts> {
        let listing = match self.listing {
            Some((w, p)) => {
                let f = w
                    .into_inner()
                    .map_err(|e| Error::io("cannot write", &p, e.into_error()))?;
                f.commit(self.overwrite)?;
                crate::io::sync_parent_dir(&p)?;
                Some(file_name(&p))
            }
            None => None,
        };
        Ok(EntryFacts {
            count: self.count,
            cut: ENTRY_CUT,
            all_listed: !self.over_cut,
            rows: self.rows,
            folders: self.folders,
            listing,
        })
    }
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote, CR or
/// LF; names are escaped as on the page first (control and bidi
/// characters as `\u{…}`), so a row is always one line.
fn csv_field(s: &str) -> String {
    let s = crate::sanitize::sanitize(s);
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn write_csv_row<W: Write>(w: &mut W, r: &Row) -> std::io::Result<()> {
    let opt = |v: &Option<String>| v.as_deref().map(csv_field).unwrap_or_default();
    write!(
        w,
        "{},{},{},{},{},{},{}\r\n",
        csv_field(&r.path),
        r.kind.as_str(),
        r.size.map(|s| s.to_string()).unwrap_or_default(),
        opt(&r.sha256),
        r.mode,
        csv_field(&r.mtime),
        opt(&r.target),
    )
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Gather every fact. `Err` only when the vault (or another named input)
/// cannot be read at all, or no identity opens it: then no report is
/// written. A vault that fails verification yields `Ok` with `ok: false`.
pub fn build(o: &Options) -> Result<Report> {
    // A missing or unreadable vault: nothing to report on (exit 1).
    let size = std::fs::File::open(o.vault)
        .and_then(|f| f.metadata())
        .map_err(|e| Error::io("cannot open vault", o.vault, e))?
        .len();
    let recipients = header::recipients(o.vault)?;
    let mut entries = if o.identities.is_empty() {
        None
    } else {
        Some(Entries::new(o.listing, o.overwrite)?)
    };
    let mut failures = Vec::new();
    let (verified, case) = verify_gathering(o, &mut entries);
    let report = match verified {
        Ok(r) => r,
        Err(e)
            if e.kind() == ErrorKind::Integrity
                || (o.identities.is_empty() && matches!(e, Error::Refused(_))) =>
        {
            failures.extend(verify::problems_of(&e).iter().map(Finding::to_string));
            // The contents failed (or could not be checked): still give
            // what the key-less checks say (sidecar, VAULT.sig).
            fallback(o, &mut failures)?
        }
        Err(e) => return Err(e),
    };
    failures.extend(report.problems.iter().map(Finding::to_string));
    let contents_checked = report.contents_checked && case.is_some();
    let entries = match entries {
        Some(e) if contents_checked => Some(e.finish()?),
        _ => None,
    };
    let signatures = signatures(o, &report, contents_checked);
    let custody = custody_checked(o, &report, &mut failures)?;
    let totals = contents_checked
        .then(|| {
            Some(format::Totals {
                files: report.files?,
                dirs: report.dirs?,
                symlinks: report.symlinks?,
                bytes: report.bytes?,
            })
        })
        .flatten();
    let case = if contents_checked { case } else { None };
    let name = file_name(o.vault);
    let stock_commands = stock_commands(&name, case.as_ref(), &signatures);
    let mut seen = std::collections::HashSet::new();
    failures.retain(|f| seen.insert(f.clone()));
    Ok(Report {
        generated_at: o.generated_at.clone(),
        generated_by: format::TOOL.to_string(),
        ok: failures.is_empty(),
        contents_checked,
        failures,
        vault: VaultFacts {
            name,
            size,
            sha256: report.vault_sha256.clone(),
            sidecar: report.sidecar,
        },
        recipients,
        case,
        signatures,
        totals,
        entries,
        custody,
        stock_commands,
    })
}

/// Verify the vault, gathering the case's facts from casevault.json and,
/// where `entries` is given (a key), every entry into it.
fn verify_gathering(
    o: &Options,
    entries: &mut Option<Entries>,
) -> (Result<VerifyReport>, Option<CaseFacts>) {
    let mut case = None;
    let mut visit = |v: verify::Visit| -> Result<()> {
        match v {
            verify::Visit::Head(json) => {
                case = Some(CaseFacts {
                    case_id: json.case_id.clone(),
                    format_version: json.version,
                    compression: json.compression.as_str(),
                    sealed_at: json.sealed_at.clone(),
                    tool: json.tool.clone(),
                    signer: json.signer.clone(),
                });
                Ok(())
            }
            verify::Visit::Entry(e) => match entries {
                Some(x) => {
                    crate::signal::check()?;
                    x.entry(e)
                }
                None => Ok(()),
            },
        }
    };
    let verified = verify::verify_visiting(o.vault, o.identities, o.signatures, &mut visit);
    (verified, case)
}

/// The custody log's facts (`--custody`); a broken chain is a failure.
fn custody_checked(
    o: &Options,
    report: &VerifyReport,
    failures: &mut Vec<String>,
) -> Result<Option<CustodyFacts>> {
    let Some(log) = o.custody else {
        return Ok(None);
    };
    let signers = o.signatures.map(|s| (&s.signers, s.principal.as_deref()));
    let c = custody_facts(log, report, o.vault, signers)?;
    if !c.intact {
        failures.push(format!(
            "custody log {}: {}{}",
            c.log,
            c.broken_line
                .map(|l| format!("line {l}: "))
                .unwrap_or_default(),
            c.problem.as_deref().unwrap_or("the chain is broken")
        ));
    }
    Ok(Some(c))
}

/// After the contents failed: the key-less checks, or at least the
/// vault's SHA-256 and sidecar state.
fn fallback(o: &Options, failures: &mut Vec<String>) -> Result<VerifyReport> {
    let (sidecar, sha) = match verify::check_sidecar(o.vault) {
        Ok(found) => found,
        // A sidecar that cannot be parsed vouches for nothing: reported as
        // not matching, with its own failure.
        Err(e) if e.kind() == ErrorKind::Integrity => {
            add_failures(failures, &e);
            let (digest, _) = crate::io::sha256_file(o.vault)?;
            (Sidecar::Mismatch, crate::io::hex(&digest))
        }
        Err(e) => return Err(e),
    };
    let signatures = o.signatures;
    match verify::verify_with(o.vault, &[], signatures) {
        Ok(mut r) => {
            r.ok = false;
            Ok(r)
        }
        Err(e) if e.kind() == ErrorKind::Operational && !matches!(e, Error::Refused(_)) => Err(e),
        Err(e) => {
            add_failures(failures, &e);
            Ok(VerifyReport::unchecked(o.vault, sidecar, sha))
        }
    }
}

/// The findings of `e`, each once.
fn add_failures(failures: &mut Vec<String>, e: &Error) {
    for p in verify::problems_of(e) {
        let p = p.to_string();
        if !failures.contains(&p) {
            failures.push(p);
        }
    }
}

fn signatures(o: &Options, r: &VerifyReport, contents_checked: bool) -> Signatures {
    let s = &r.signature;
    let outer = if !s.outer_present {
        SignatureFacts {
            present: false,
            principal: None,
            fingerprint: None,
            outcome: format!("none: there is no {}", file_name(&sign::sig_path(o.vault))),
        }
    } else if s.checked {
        let outcome = match (&s.principal, s.outer_role) {
            (Some(p), Some(role)) => format!("valid, trusted: {role} by {p}"),
            _ => "FAILED: missing, invalid or not trusted (see the failures above)".to_string(),
        };
        SignatureFacts {
            present: true,
            principal: s.principal.clone(),
            fingerprint: s.fingerprint.clone(),
            outcome,
        }
    } else {
        // Without --signers: whether it verifies, and by which key.
        let checked = sign::read_vault_sig(o.vault).and_then(|sig| match sig {
            Some(sig) => {
                let what = file_name(&sign::sig_path(o.vault));
                sign::verify_file(&sig, sign::outer_namespace(&sig), &what, o.vault).map(Some)
            }
            None => Ok(None),
        });
        match checked {
            Ok(Some(v)) => SignatureFacts {
                present: true,
                principal: None,
                fingerprint: Some(v.fingerprint),
                outcome: "valid signature; its key was NOT checked against a list of trusted signers (give --signers)".into(),
            },
            Ok(None) => SignatureFacts {
                present: false,
                principal: None,
                fingerprint: None,
                outcome: "none".into(),
            },
            Err(e) => SignatureFacts {
                present: true,
                principal: None,
                fingerprint: None,
                outcome: format!("FAILED: {e}"),
            },
        }
    };
    let inner = contents_checked.then(|| {
        if !s.inner_present {
            SignatureFacts {
                present: false,
                principal: None,
                fingerprint: None,
                outcome: "none: the vault was sealed without --sign".into(),
            }
        } else if !s.inner_checked {
            SignatureFacts {
                present: true,
                principal: None,
                fingerprint: s.inner_fingerprint.clone(),
                outcome: "valid signature over casevault.json; its key was NOT checked against a list of trusted signers (give --signers)".into(),
            }
        } else {
            let outcome = match &s.inner_principal {
                Some(p) => format!("valid, trusted: sealed by {p}"),
                None => "FAILED: not trusted (see the failures above)".into(),
            };
            SignatureFacts {
                present: true,
                principal: s.inner_principal.clone(),
                fingerprint: s.inner_fingerprint.clone(),
                outcome,
            }
        }
    });
    Signatures {
        checked_against_signers: s.checked,
        outer,
        inner,
    }
}

/// The records of `log` that name this vault, and the chain's state.
fn custody_facts(
    log: &Path,
    r: &VerifyReport,
    vault: &Path,
    signers: Option<(&AllowedSigners, Option<&str>)>,
) -> Result<CustodyFacts> {
    let chain = custody::verify_log(log, signers)?;
    let name = file_name(vault);
    let mut records = Vec::new();
    for (i, (bytes, _)) in custody::read_lines(log)?.iter().enumerate() {
        let Ok(rec) = custody::parse_line(bytes) else {
            continue;
        };
        let ours = rec.vault.as_deref() == Some(name.as_str())
            || rec.vault_sha256.as_deref() == Some(r.vault_sha256.as_str());
        if !ours {
            continue;
        }
        let signature = record_signature(bytes, &rec, signers);
        records.push(CustodyRow {
            line: i as u64 + 1,
            seq: rec.seq,
            time: rec.time,
            action: rec.action,
            actor: rec.actor,
            host: rec.host,
            outcome: rec.outcome,
            reason: rec.reason,
            signature,
        });
    }
    Ok(CustodyFacts {
        log: file_name(log),
        intact: chain.ok,
        records_in_log: chain.records,
        head_sha256: chain.head_sha256,
        broken_line: chain.line,
        problem: chain.problem,
        signatures_checked: chain.signatures_checked,
        records,
    })
}

/// One record's signature, as FORMAT §11 defines it, in words.
fn record_signature(
    bytes: &[u8],
    rec: &custody::Record,
    signers: Option<(&AllowedSigners, Option<&str>)>,
) -> String {
    let (Some(sig_text), Some(signer)) = (&rec.sig, &rec.signer) else {
        return if rec.sig.is_none() && rec.signer.is_none() {
            "unsigned".into()
        } else {
            "FAILED: sig and signer do not come together".into()
        };
    };
    let checked = std::str::from_utf8(bytes)
        .ok()
        .and_then(|line| custody::signed_bytes(line, sig_text))
        .ok_or_else(|| "the sig field is not the last field of the line".to_string())
        .and_then(|signed| {
            let sig = sign::parse(sig_text.as_bytes(), "sig").map_err(|e| e.to_string())?;
            sign::verify_bytes(
                &sig,
                sign::NS_CUSTODY,
                "the record's sig",
                signed.as_bytes(),
            )
            .map_err(|e| e.to_string())
        });
    let v = match checked {
        Ok(v) => v,
        Err(why) => return format!("FAILED: {why}"),
    };
    if v.fingerprint != signer.fingerprint {
        return format!(
            "FAILED: signed by key {}, but the record names {}",
            v.fingerprint, signer.fingerprint
        );
    }
    match signers {
        Some((allowed, principal)) => match allowed.trusted(&v.key, sign::NS_CUSTODY, principal) {
            Some(p) => format!("valid, trusted: {p} ({})", v.fingerprint),
            None => format!("FAILED: key {} is not trusted", v.fingerprint),
        },
        None => format!(
            "valid signature by {}; NOT checked against a list of trusted signers",
            v.fingerprint
        ),
    }
}

fn stock_commands(
    vault: &str,
    case: Option<&CaseFacts>,
    signatures: &Signatures,
) -> Vec<StockCommand> {
    let v = shell_word(vault);
    let case_id = case.map_or("CASE_ID".to_string(), |c| shell_word(&c.case_id));
    let principal = signatures
        .outer
        .principal
        .as_deref()
        .map_or("PRINCIPAL".to_string(), shell_word);
    let unpack = match case.map(|c| c.compression) {
        Some("none") => format!("age -d -i IDENTITY_FILE {v} | tar -x"),
        Some(_) => format!("age -d -i IDENTITY_FILE {v} | zstd -d | tar -x"),
        None => format!(
            "age -d -i IDENTITY_FILE {v} | zstd -d | tar -x    (a vault sealed with --compress none: age -d -i IDENTITY_FILE {v} | tar -x)"
        ),
    };
    let mut out = vec![
        StockCommand {
            purpose: "The vault file is the one the sidecar names (its SHA-256)".into(),
            command: format!("sha256sum -c {}", shell_word(&format!("{vault}.sha256"))),
        },
        StockCommand {
            purpose: "Who signed the vault file (VAULT.sig, OpenSSH signature)".into(),
            command: format!(
                "ssh-keygen -Y verify -f ALLOWED_SIGNERS_FILE -I {principal} -n casevault-vault -s {} < {v}",
                shell_word(&format!("{vault}.sig"))
            ),
        },
        StockCommand {
            purpose: "Decrypt and unpack the case (needs a recipient's identity)".into(),
            command: unpack,
        },
        StockCommand {
            purpose: "The bag is complete and every file matches its manifest (BagIt)".into(),
            command: format!("bagit.py --validate {case_id}"),
        },
        StockCommand {
            purpose: "Every file against the SHA-256 manifest".into(),
            command: format!("cd {case_id} && sha256sum -c manifest-sha256.txt"),
        },
    ];
    if signatures.inner.as_ref().is_some_and(|s| s.present) {
        out.push(StockCommand {
            purpose: "Who sealed the case (casevault.sig, inside the bag)".into(),
            command: format!(
                "ssh-keygen -Y verify -f ALLOWED_SIGNERS_FILE -I PRINCIPAL -n casevault-manifest -s {case_id}/casevault.sig < {case_id}/casevault.json"
            ),
        });
    }
    out
}

/// `s` as one POSIX shell word (single-quoted unless plainly safe).
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/@:+=,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Write the page for `r` to `out` (atomically; an existing file is
/// replaced only with `overwrite`).
pub fn write_html(r: &Report, out: &Path, overwrite: bool) -> Result<()> {
    let page = html::render(r);
    let mut f = AtomicFile::create(out)?;
    // Names and per-file hashes are sensitive (they can be matched
    // against hash sets of known files): 0600, as the custody log.
    f.set_mode(0o600)?;
    f.write_all(page.as_bytes())
        .map_err(|e| Error::io("cannot write", out, e))?;
    f.commit(overwrite)?;
    crate::io::sync_parent_dir(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_escapes() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("x\ny"), "x\\u{a}y");
        assert_eq!(csv_field("r\u{202E}l"), "r\\u{202e}l");
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("CASE-1.vault"), "CASE-1.vault");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }

    /// An entry as `casevault.json` holds it (parsed, so that fields a
    /// newer format adds take their defaults).
    fn entry(path: &str, kind: Kind, size: Option<u64>) -> Entry {
        serde_json::from_value(serde_json::json!({
            "path": path,
            "kind": kind,
            "size": size,
            "sha256": size.map(|_| "0".repeat(64)),
            "mode": 0o644,
            "mtime": 0,
            "mtime_nsec": 0,
        }))
        .expect("a valid entry")
    }

    #[test]
    fn folders_and_cut() {
        let mut e = Entries::new(None, false).unwrap();
        e.entry(&entry("data", Kind::Dir, None)).unwrap();
        e.entry(&entry("data/a", Kind::Dir, None)).unwrap();
        e.entry(&entry("data/a/x", Kind::File, Some(5))).unwrap();
        e.entry(&entry("data/a/y", Kind::Dir, None)).unwrap();
        e.entry(&entry("data/top.txt", Kind::File, Some(7)))
            .unwrap();
        let f = e.finish().unwrap();
        assert_eq!(f.count, 4);
        assert!(f.all_listed);
        assert_eq!(f.rows.len(), 4);
        assert_eq!(f.folders.len(), 2);
        assert_eq!(
            (f.folders[0].files, f.folders[0].dirs, f.folders[0].bytes),
            (1, 1, 5)
        );
        assert_eq!(f.folders[1].name, "(top level)");
        assert_eq!(f.folders[1].bytes, 7);

        let mut e = Entries::new(None, false).unwrap();
        for i in 0..ENTRY_CUT + 1 {
            e.entry(&entry(&format!("data/d{i}"), Kind::Dir, None))
                .unwrap();
        }
        let f = e.finish().unwrap();
        assert!(!f.all_listed);
        assert!(f.rows.is_empty());
        assert_eq!(f.folders.len(), MAX_FOLDERS + 1);
        assert_eq!(f.folders[MAX_FOLDERS].name, "(other folders)");
    }
}

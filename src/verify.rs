//! `casevault verify` and `casevault list`: check a vault without writing
//! anything. With identities, every byte is decrypted and checked; without,
//! only the sidecar and the age header are.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Finding, Findings};
use crate::format::{CaseJson, Entry, Kind};
use crate::io::{hex, sha256_file};
use crate::keys::BoxedIdentity;
use crate::read::{cipher, open_vault, random, Discard, LinkStatus, Links};
use crate::sidecar;
use crate::{Error, Result};

/// State of the `.sha256` sidecar.
pub use crate::sidecar::State as Sidecar;

/// The outcome of verify (`--json` object).
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub vault: PathBuf,
    pub ok: bool,
    pub contents_checked: bool,
    pub sidecar: Sidecar,
    pub vault_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlinks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Symlinks whose target leaves the case (unseal refuses them unless
    /// `--allow-external-links`); with -i only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_links: Option<u64>,
    /// Symlinks that loop (a cycle, or a chain longer than 40 links that
    /// stays inside the case): the OS cannot follow them; unseal recreates
    /// them as they are (FORMAT §6 step 5); with -i only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub looping_links: Option<u64>,
    /// Every finding, each `{kind, message, path?, expected?, actual?}`
    /// in JSON (docs/CLI.md).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Finding>,
    /// Signature findings (issue #5); `checked: false` without `--signers`.
    pub signature: SignatureReport,
    /// The key of the inner signature, for the trust check.
    #[serde(skip)]
    inner_key: Option<ssh_key::public::KeyData>,
}

impl VerifyReport {
    /// A report of nothing checked but the vault file's SHA-256 and its
    /// sidecar: for `casevault report` after a failed read (issue #14).
    pub fn unchecked(vault: &Path, sidecar: Sidecar, vault_sha256: String) -> VerifyReport {
        VerifyReport {
            vault: vault.to_path_buf(),
            ok: false,
            contents_checked: false,
            sidecar,
            vault_sha256,
            case_id: None,
            files: None,
            dirs: None,
            symlinks: None,
            bytes: None,
            external_links: None,
            looping_links: None,
            problems: Vec::new(),
            signature: SignatureReport::default(),
            inner_key: None,
        }
    }
}

/// What `verify --signers` trusts (FORMAT §10).
pub struct SignatureCheck {
    /// The allowed_signers file.
    pub signers: crate::allowed_signers::AllowedSigners,
    /// `--signer`: only this principal is accepted.
    pub principal: Option<String>,
}

/// The `signature` object of `verify --json`.
#[derive(Debug, Default, Serialize)]
pub struct SignatureReport {
    /// Whether signatures were checked against an allowed_signers file
    /// (`--signers`): `VAULT.sig` always, `casevault.sig` with -i.
    pub checked: bool,
    /// Whether a `VAULT.sig` file exists beside the vault. Only this: it
    /// was verified only when `checked` (issue #10 item 16; this replaces
    /// the old `signed`, which also said true for an unchecked file).
    pub outer_present: bool,
    /// What the trusted `VAULT.sig` vouches for, by its namespace (FORMAT
    /// §10): `"sealed"` (`casevault-vault`, written by seal) or
    /// `"re-encrypted"` (`casevault-rekey`, written by rekey: the signer
    /// re-encrypted the vault, and did not necessarily seal it); `null`
    /// unless checked and trusted.
    pub outer_role: Option<&'static str>,
    /// The trusted principal that made `VAULT.sig`.
    pub principal: Option<String>,
    /// `SHA256:…` fingerprint of the key that made `VAULT.sig`.
    pub fingerprint: Option<String>,
    /// With -i: whether the bag holds `casevault.sig`, in which case it was
    /// verified over `casevault.json` with the key `casevault.json` names
    /// (every -i read does that); whether that key is trusted is
    /// `inner_checked` / `inner_principal`.
    pub inner_present: bool,
    /// Whether the inner signature (`casevault.sig`) was checked against
    /// the allowed_signers file (-i with `--signers`).
    pub inner_checked: bool,
    /// The trusted principal that made `casevault.sig`.
    pub inner_principal: Option<String>,
    /// `SHA256:…` fingerprint of the key that made `casevault.sig`.
    pub inner_fingerprint: Option<String>,
}

/// The sidecar's state and the vault file's SHA-256 (one extra read of the
/// ciphertext; used to complete a report after the contents failed).
pub fn check_sidecar(vault: &Path) -> Result<(Sidecar, String)> {
    sidecar::check(vault)
}

/// The findings of a failed read, for `verify --json`'s `problems` (one
/// finding in prose for an error that is not an integrity failure).
pub fn problems_of(e: &Error) -> Vec<Finding> {
    match e {
        Error::Integrity(Findings(list)) => list.clone(),
        other => vec![Finding::Other(other.to_string())],
    }
}

/// Verify a vault. `identities` empty: sidecar and header only.
pub fn verify(vault: &Path, identities: &[BoxedIdentity]) -> Result<VerifyReport> {
    verify_with(vault, identities, None)
}

/// [`verify`], and with `signatures` also the vault's signatures: the
/// outer `VAULT.sig` always, the inner `casevault.sig` when `identities`
/// open the vault. A missing, invalid or untrusted signature is a problem
/// (exit 3). With `signatures` a missing sidecar is no longer fatal
/// without identities: the signature covers the vault file.
pub fn verify_with(
    vault: &Path,
    identities: &[BoxedIdentity],
    signatures: Option<&SignatureCheck>,
) -> Result<VerifyReport> {
    let _progress = crate::progress::Guard;
    let mut report = verify_inner(vault, identities, signatures.is_some(), None)?;
    check_signatures(&mut report, vault, signatures)?;
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// What [`verify_visiting`] hands its visitor: `casevault.json` (its
/// entries may be only the symlink records, see [`crate::read::Opened`]),
/// then every entry in order.
pub enum Visit<'a> {
    Head(&'a CaseJson),
    Entry(&'a Entry),
}

/// A visitor of [`verify_visiting`].
pub type Visitor<'v> = dyn FnMut(Visit) -> Result<()> + 'v;

/// [`verify_with`], handing the checked `casevault.json` to `visit` once
/// the contents verified (with identities only; before the signatures are
/// checked). For `casevault report`, which writes the entries as it walks
/// them instead of keeping them (issue #14). An error of `visit` stops
/// verify and is returned.
pub fn verify_visiting(
    vault: &Path,
    identities: &[BoxedIdentity],
    signatures: Option<&SignatureCheck>,
    visit: &mut dyn FnMut(Visit) -> Result<()>,
) -> Result<VerifyReport> {
    let _progress = crate::progress::Guard;
    let mut report = verify_inner(vault, identities, signatures.is_some(), Some(visit))?;
    check_signatures(&mut report, vault, signatures)?;
    report.ok = report.problems.is_empty();
    Ok(report)
}

fn verify_inner(
    vault: &Path,
    identities: &[BoxedIdentity],
    signatures: bool,
    visit: Option<&mut Visitor>,
) -> Result<VerifyReport> {
    let expected = sidecar::read_checked(vault)?;
    if identities.is_empty() {
        if expected.is_none() && !signatures {
            return Err(Error::Refused(format!(
                "{} is missing; without it and without -i IDENTITY nothing can be checked",
                sidecar::path(vault).display()
            )));
        }
        return verify_outside(vault, expected);
    }
    let opened = open_vault(vault, identities, &mut Discard)?;
    let mut opened = opened;
    if let Some(visit) = visit {
        visit(Visit::Head(&opened.json))?;
        match opened.index.take() {
            // Read in lockstep: the entries, once more from the end.
            Some((rv, tail)) => {
                let cell = std::cell::RefCell::new(rv);
                random::check_meta(&cell, &tail, &mut |e| visit(Visit::Entry(e)))?;
            }
            None => {
                for e in &opened.json.entries {
                    visit(Visit::Entry(e))?;
                }
            }
        }
    }
    let sidecar = Sidecar::of(expected.as_deref(), &opened.vault_sha256);
    let mut problems = Vec::new();
    if let (Sidecar::Mismatch, Some(expected)) = (sidecar, expected) {
        problems.push(Finding::SidecarMismatch {
            expected,
            actual: opened.vault_sha256.clone(),
            contents_verified: true,
        });
    }
    let t = &opened.json.totals;
    let (external, looping) = count_links(&opened.json);
    Ok(VerifyReport {
        vault: vault.to_path_buf(),
        ok: problems.is_empty(),
        contents_checked: true,
        sidecar,
        vault_sha256: opened.vault_sha256.clone(),
        case_id: Some(opened.case_id.clone()),
        files: Some(t.files),
        dirs: Some(t.dirs),
        symlinks: Some(t.symlinks),
        bytes: Some(t.bytes),
        external_links: Some(external),
        looping_links: Some(looping),
        problems,
        signature: SignatureReport {
            inner_present: opened.signature.is_some(),
            inner_checked: signatures,
            inner_fingerprint: opened.signature.as_ref().map(|v| v.fingerprint.clone()),
            ..SignatureReport::default()
        },
        inner_key: opened.signature.map(|v| v.key),
    })
}

/// Verify without identities: the sidecar and the age header only.
fn verify_outside(vault: &Path, expected: Option<String>) -> Result<VerifyReport> {
    let actual = hex(&sha256_file(vault)?.0);
    let sidecar = Sidecar::of(expected.as_deref(), &actual);
    let mut problems = Vec::new();
    if let (Sidecar::Mismatch, Some(expected)) = (sidecar, expected) {
        problems.push(Finding::SidecarMismatch {
            expected,
            actual: actual.clone(),
            contents_verified: false,
        });
    }
    if let Some(p) = cipher::check_header(vault)? {
        problems.push(Finding::Other(p));
    }
    Ok(VerifyReport {
        vault: vault.to_path_buf(),
        ok: problems.is_empty(),
        contents_checked: false,
        sidecar,
        vault_sha256: actual,
        case_id: None,
        files: None,
        dirs: None,
        symlinks: None,
        bytes: None,
        external_links: None,
        looping_links: None,
        problems,
        signature: SignatureReport::default(),
        inner_key: None,
    })
}

/// Symlinks leading outside the case, and looping ones; one map of the
/// links for all of them (issue #10 item 10).
fn count_links(json: &CaseJson) -> (u64, u64) {
    let (mut external, mut looping) = (0u64, 0u64);
    let mut links = Links::new(json);
    for e in json.entries.iter().filter(|e| e.kind == Kind::Symlink) {
        match links.status(&e.path) {
            LinkStatus::Inside => {}
            LinkStatus::Outside(_) => external += 1,
            LinkStatus::Loop => looping += 1,
        }
    }
    (external, looping)
}

/// The findings of an integrity error, as signature findings; other
/// errors stop verify.
fn signature_findings(e: Error) -> Result<Vec<Finding>> {
    match e {
        Error::Integrity(Findings(list)) => Ok(list
            .into_iter()
            .map(|f| Finding::Signature(f.to_string()))
            .collect()),
        other => Err(other),
    }
}

/// Check the signatures against `chk` (FORMAT §10), recording findings in
/// `r.signature` and `r.problems`.
fn check_signatures(
    r: &mut VerifyReport,
    vault: &Path,
    chk: Option<&SignatureCheck>,
) -> Result<()> {
    use crate::sign;
    let sig_name = sign::sig_path(vault).display().to_string();
    let outer = match sign::read_vault_sig(vault) {
        Ok(s) => s.map(Ok),
        Err(e) => Some(Err(signature_findings(e)?)),
    };
    r.signature.outer_present = outer.is_some();
    let Some(chk) = chk else {
        return Ok(());
    };
    r.signature.checked = true;
    let who = |p: &Option<String>| match p {
        Some(p) => format!("principal {p:?}"),
        None => "any principal".to_string(),
    };
    match outer {
        None => r.problems.push(Finding::Signature(format!(
            "{sig_name} is missing: the vault is not signed, so who sealed it cannot be checked"
        ))),
        Some(Err(m)) => r.problems.extend(m),
        Some(Ok(sig)) => {
            // seal signs in casevault-vault, rekey in casevault-rekey
            // (issue #10 item 12); the namespace is part of the signed data.
            let ns = sign::outer_namespace(&sig);
            match sign::verify_file(&sig, ns, &sig_name, vault) {
                Err(e) => r.problems.extend(signature_findings(e)?),
                Ok(v) => {
                    r.signature.fingerprint = Some(v.fingerprint.clone());
                    match chk.signers.trusted(&v.key, ns, chk.principal.as_deref()) {
                        Some(p) => {
                            r.signature.principal = Some(p);
                            r.signature.outer_role = Some(if ns == sign::NS_REKEY {
                                "re-encrypted"
                            } else {
                                "sealed"
                            });
                        }
                        None => r.problems.push(Finding::Signature(format!(
                            "{sig_name} was made by key {}, which {} does not trust for {} in namespace {ns}",
                            v.fingerprint,
                            chk.signers.path().display(),
                            who(&chk.principal),
                        ))),
                    }
                }
            }
        }
    }
    if r.signature.inner_checked {
        match (&r.inner_key, &r.signature.inner_fingerprint) {
            (Some(key), Some(fp)) => {
                match chk.signers.trusted(key, sign::NS_MANIFEST, chk.principal.as_deref()) {
                    Some(p) => r.signature.inner_principal = Some(p),
                    None => r.problems.push(Finding::Signature(format!(
                        "casevault.sig (inside the vault) was made by key {fp}, which {} does not trust for {} in namespace {}",
                        chk.signers.path().display(),
                        who(&chk.principal),
                        sign::NS_MANIFEST
                    ))),
                }
            }
            _ => r.problems.push(Finding::Signature(
                "the vault holds no inner signature (casevault.sig): it was sealed without --sign"
                    .into(),
            )),
        }
    }
    Ok(())
}

/// One entry of `list --json`.
#[derive(Debug, Serialize)]
pub struct ListEntry {
    pub path: String,
    pub kind: Kind,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub mode: u32,
    pub mtime: i64,
    pub target: Option<String>,
}

/// The outcome of list (`--json` object).
#[derive(Debug, Serialize)]
pub struct ListReport {
    pub vault: PathBuf,
    pub case_id: String,
    pub sealed_at: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub entries: Vec<ListEntry>,
}

/// Where [`list_to`] hands what it lists: first the report without its
/// entries, then each entry in payload order.
pub trait ListSink {
    fn head(&mut self, head: &ListReport) -> Result<()>;
    fn entry(&mut self, entry: ListEntry) -> Result<()>;
}

impl ListEntry {
    /// The listed form of a `casevault.json` entry (`data` itself is not
    /// listed).
    fn of(e: &Entry) -> Option<ListEntry> {
        Some(ListEntry {
            path: e.path.strip_prefix("data/")?.to_string(),
            kind: e.kind,
            size: e.size,
            sha256: e.sha256.clone(),
            mode: e.mode,
            mtime: e.mtime,
            target: e.target.clone(),
        })
    }
}

/// List a vault into `sink`. A binary version 3 vault is listed from its
/// end (FORMAT §13.3): `casevault.json` and the manifest are checked in a
/// first pass and streamed to `sink` in a second, and nothing else of the
/// payload is read; memory does not grow with the entries. Other vaults
/// are read and checked fully first ([`list`]).
pub fn list_to(vault: &Path, identities: &[BoxedIdentity], sink: &mut dyn ListSink) -> Result<()> {
    let _progress = crate::progress::Guard;
    // One unwrap of the file key for both reads (the end, then all).
    let remember = crate::keys::Remembering::new(identities);
    let ids: [&dyn age::Identity; 1] = [&remember];
    if let Some(mut rv) = random::RandomVault::open(vault, &ids)? {
        if let Some(tail) = random::read_tail(&mut rv)? {
            let rv = std::cell::RefCell::new(rv);
            let (json, _) = random::check_meta(&rv, &tail, &mut |_| Ok(()))?;
            sink.head(&ListReport {
                vault: vault.to_path_buf(),
                case_id: json.case_id,
                sealed_at: json.sealed_at,
                files: json.totals.files,
                dirs: json.totals.dirs,
                symlinks: json.totals.symlinks,
                bytes: json.totals.bytes,
                entries: Vec::new(),
            })?;
            // The second pass checks everything again, so that a vault
            // file changed in between fails rather than lists something
            // else.
            random::check_meta(&rv, &tail, &mut |e| match ListEntry::of(e) {
                Some(l) => sink.entry(l),
                None => Ok(()),
            })?;
            return Ok(());
        }
    }
    let mut report = list_with(vault, &ids)?;
    let entries = std::mem::take(&mut report.entries);
    sink.head(&report)?;
    for e in entries {
        sink.entry(e)?;
    }
    Ok(())
}

/// Decrypt and check a vault fully, then list its entries.
pub fn list(vault: &Path, identities: &[BoxedIdentity]) -> Result<ListReport> {
    let ids: Vec<&dyn age::Identity> = identities
        .iter()
        .map(|i| i.as_ref() as &dyn age::Identity)
        .collect();
    list_with(vault, &ids)
}

fn list_with(vault: &Path, identities: &[&dyn age::Identity]) -> Result<ListReport> {
    let _progress = crate::progress::Guard;
    let opened = crate::read::open_vault_with(vault, identities, &mut Discard)?;
    let CaseJson {
        case_id,
        sealed_at,
        entries,
        totals,
        ..
    } = opened.json;
    let entries = entries
        .into_iter()
        .filter_map(|e| {
            let path = e.path.strip_prefix("data/")?.to_string();
            Some(ListEntry {
                path,
                kind: e.kind,
                size: e.size,
                sha256: e.sha256,
                mode: e.mode,
                mtime: e.mtime,
                target: e.target,
            })
        })
        .collect();
    Ok(ListReport {
        vault: vault.to_path_buf(),
        case_id,
        sealed_at,
        files: totals.files,
        dirs: totals.dirs,
        symlinks: totals.symlinks,
        bytes: totals.bytes,
        entries,
    })
}

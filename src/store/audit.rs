//! `casevault store audit STORE`: check every vault of a store without any
//! key (issue #13). Per vault: the vault re-hashed (read back from the
//! disk or the server) against its sidecar, the outer signature
//! (`VAULT.sig`) against an allowed_signers file when one is given, and,
//! in S3, the Object Lock retention of the vault, sidecar and signature
//! objects read back and compared with `--min-retain`.

use std::path::Path;

use serde::Serialize;

use super::{Store, VaultRef};
use crate::error::Findings;
use crate::sidecar::Unusable;
use crate::verify::SignatureCheck;
use crate::{sign, Error, Result};

/// What to check beyond the sidecar.
#[derive(Default)]
pub struct AuditOptions {
    /// `--signers` (and `--accept-signer`): the outer signature must verify and be trusted.
    pub signatures: Option<SignatureCheck>,
    /// `--min-retain`: every object of an S3 store must be retained at
    /// least this many seconds from now.
    pub min_retain: Option<i64>,
}

/// Object Lock retention of one object, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectRetention {
    /// `vault`, `sidecar` or `signature`.
    pub object: &'static str,
    /// `COMPLIANCE` / `GOVERNANCE`, or `null` with no retention.
    pub mode: Option<String>,
    /// RFC 3339, UTC.
    pub until: Option<String>,
}

/// One vault's result (one line of text, or one JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// The vault as a reader opens it (path or `s3://` URL).
    pub vault: String,
    pub case_id: String,
    pub ok: bool,
    /// SHA-256 of the vault as read back (`null` if it was not read).
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
    /// The trusted principal that signed `VAULT.sig` (with `--signers`).
    pub signer: Option<String>,
    /// S3 stores only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<ObjectRetention>,
    pub problems: Vec<String>,
}

/// The closing summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditSummary {
    pub summary: bool,
    pub store: String,
    pub vaults: u64,
    pub ok: u64,
    pub failed: u64,
}

/// Audit every vault of `store`, handing each record to `out` as soon as
/// it is known. An operational failure (the server unreachable, a disk
/// error) stops the audit with that error; problems with vaults are
/// counted in the summary.
pub fn audit(
    store: &Store,
    opts: &AuditOptions,
    out: &mut dyn FnMut(&AuditRecord) -> Result<()>,
) -> Result<AuditSummary> {
    let mut sum = AuditSummary {
        summary: true,
        store: store.display(),
        ..AuditSummary::default()
    };
    store.each_vault(&mut |v| {
        let rec = audit_one(store, &v, opts)?;
        sum.vaults += 1;
        if rec.ok {
            sum.ok += 1;
        } else {
            sum.failed += 1;
        }
        out(&rec)
    })?;
    Ok(sum)
}

/// An integrity error's findings as problem lines; other errors stop.
fn problems_or_stop(e: Error, problems: &mut Vec<String>) -> Result<()> {
    match e {
        Error::Integrity(Findings(list)) => {
            problems.extend(list.into_iter().map(|f| f.to_string()));
            Ok(())
        }
        other => Err(other),
    }
}

fn audit_one(store: &Store, v: &VaultRef, opts: &AuditOptions) -> Result<AuditRecord> {
    crate::signal::check()?;
    let path = store.vault_path(v);
    let mut rec = AuditRecord {
        vault: path.display().to_string(),
        case_id: v.case.clone(),
        ok: false,
        sha256: None,
        bytes: None,
        signer: None,
        retention: Vec::new(),
        problems: Vec::new(),
    };
    let expected = match crate::sidecar::read(&path) {
        Ok(h) => Some(h),
        Err(Unusable::Io(e)) => {
            return Err(Error::io(
                "cannot read sidecar",
                &crate::sidecar::path(&path),
                e,
            ))
        }
        Err(Unusable::Missing) => {
            rec.problems.push("its sidecar (.sha256) is missing".into());
            None
        }
        Err(other) => {
            rec.problems
                .push(format!("its sidecar is unusable: {other:?}"));
            None
        }
    };
    let (digest, bytes) = crate::io::sha256_file(&path)?;
    let actual = crate::io::hex(&digest);
    if let Some(exp) = &expected {
        if *exp != actual {
            rec.problems.push(format!(
                "its SHA-256 {actual} does not match its sidecar ({exp})"
            ));
        }
    }
    rec.sha256 = Some(actual);
    rec.bytes = Some(bytes);
    if let Some(chk) = &opts.signatures {
        check_signature(&path, chk, &mut rec)?;
    }
    #[cfg(feature = "s3")]
    if let Some(loc) = store.vault_location(v) {
        check_retention(&loc, opts.min_retain, &mut rec)?;
    }
    rec.ok = rec.problems.is_empty();
    Ok(rec)
}

fn check_signature(path: &Path, chk: &SignatureCheck, rec: &mut AuditRecord) -> Result<()> {
    let sig = match sign::read_vault_sig(path) {
        Ok(Some(s)) => s,
        Ok(None) => {
            rec.problems
                .push("its signature (.sig) is missing: who sealed it cannot be checked".into());
            return Ok(());
        }
        Err(e) => return problems_or_stop(e, &mut rec.problems),
    };
    let ns = sign::outer_namespace(&sig);
    match sign::verify_file(&sig, ns, "signature", path) {
        Err(e) => problems_or_stop(e, &mut rec.problems)?,
        Ok(v) => match chk.signers.trusted(&v.key, ns, chk.principal.as_deref()) {
            Some(p) => rec.signer = Some(p),
            None => rec.problems.push(format!(
                "its signature was made by key {}, which {} does not trust in namespace {ns}",
                v.fingerprint,
                chk.signers.path().display()
            )),
        },
    }
    Ok(())
}

#[cfg(feature = "s3")]
fn check_retention(
    loc: &crate::s3::Location,
    min_retain: Option<i64>,
    rec: &mut AuditRecord,
) -> Result<()> {
    let c = crate::s3::client()?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut objects = vec![("vault", loc.clone()), ("sidecar", loc.suffixed(".sha256"))];
    if c.head(&loc.suffixed(".sig"), None)?.is_some() {
        objects.push(("signature", loc.suffixed(".sig")));
    }
    for (what, l) in objects {
        let r = if what == "sidecar" && rec.problems.iter().any(|p| p.contains("is missing")) {
            None
        } else {
            c.get_retention(&l, None)?
        };
        rec.retention.push(ObjectRetention {
            object: what,
            mode: r.as_ref().map(|r| r.mode.clone()),
            until: r.as_ref().map(|r| rfc3339(r.until)),
        });
        if let Some(min) = min_retain {
            match &r {
                None => rec.problems.push(format!(
                    "its {what} object has no Object Lock retention (--min-retain asks for {})",
                    rfc3339(now + min)
                )),
                Some(r) if r.until < now + min => rec.problems.push(format!(
                    "its {what} object is retained only until {}, earlier than --min-retain asks ({})",
                    rfc3339(r.until),
                    rfc3339(now + min)
                )),
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

//! `casevault verify`: check a vault (every byte with -i, else its sidecar
//! and header), and its signatures with --signers.

use std::path::{Path, PathBuf};

use clap::Args;

use casevault::allowed_signers::AllowedSigners;
use casevault::custody::Custody;
use casevault::sanitize::sanitize;
use casevault::verify;

use super::args::{
    file_len, print_json, show_progress, signing_key, CustodyArgs, IdentityArgs, OutputArgs,
};
use super::{record, Exit};

#[derive(Args)]
#[command(mut_arg("identity", |a| a.help("Identity file; without one only the sidecar and header are checked")))]
#[command(mut_arg("passphrase", |a| a.help("The vault was sealed with --passphrase: ask for it on the terminal and check every byte")))]
pub struct VerifyArgs {
    /// The vault to check.
    vault: PathBuf,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Check the vault's signatures against this OpenSSH allowed_signers
    /// file: VAULT.sig always, casevault.sig too with -i. A missing,
    /// invalid or untrusted signature is an integrity failure (exit 3).
    #[arg(long, value_name = "ALLOWED_SIGNERS_FILE")]
    signers: Option<PathBuf>,
    /// Accept only this principal (default: any principal in the file
    /// whose key made the signature and whose namespaces allow it).
    // `--signer` means "principal to record" everywhere else (issue #11);
    // the hidden alias keeps scripts working for a release.
    #[arg(
        long = "accept-signer",
        alias = "signer",
        value_name = "PRINCIPAL",
        requires = "signers"
    )]
    accept_signer: Option<String>,
    /// Sign the custody record with this OpenSSH private key.
    #[arg(long, value_name = "SSH_PRIVATE_KEY", requires = "custody")]
    sign: Option<PathBuf>,
    #[command(flatten)]
    custody: CustodyArgs,
    #[command(flatten)]
    output_args: OutputArgs,
}

pub fn run(a: VerifyArgs) -> anyhow::Result<Exit> {
    let ids = a.identity.load()?;
    if !ids.is_empty() {
        show_progress(a.output_args.quiet, "verifying", || file_len(&a.vault));
    }
    let check = match &a.signers {
        Some(f) => Some(verify::SignatureCheck {
            signers: AllowedSigners::load(f)?,
            principal: a.accept_signer.clone(),
        }),
        None => None,
    };
    let key = signing_key(a.sign.as_deref(), None)?;
    let custody = a.custody.custody(key.as_ref());
    let report = match verify::verify_with(&a.vault, &ids, check.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            record::failure(custody.as_ref(), record::failed_event("verified", &a.vault));
            return failed(&a, !ids.is_empty(), e);
        }
    };
    if a.output_args.json {
        print_json(&report)?;
    } else if report.ok {
        print_ok(&report);
    }
    Ok(record_outcome(&a.vault, &report, custody.as_ref()))
}

/// verify could not finish: report the error (for scripts also as a JSON
/// object on an integrity failure).
fn failed(a: &VerifyArgs, contents_checked: bool, e: casevault::Error) -> anyhow::Result<Exit> {
    if a.output_args.json && e.kind() == casevault::ErrorKind::Integrity {
        let (sidecar, sha) = match verify::check_sidecar(&a.vault) {
            Ok((s, h)) => (serde_json::to_value(s)?, serde_json::Value::from(h)),
            Err(_) => (serde_json::Value::Null, serde_json::Value::Null),
        };
        print_json(&serde_json::json!({
            "vault": a.vault,
            "ok": false,
            "contents_checked": contents_checked,
            "sidecar": sidecar,
            "vault_sha256": sha,
            "problems": verify::problems_of(&e),
        }))?;
    }
    if pending_rekey(&a.vault).is_some() {
        // Not "do not trust this vault": say what happened.
        eprintln!(
            "casevault: error: {}",
            sanitize(&format!("cannot verify {}: {e}", a.vault.display()))
        );
        pending_rekey_hint(&a.vault);
        return Ok(e.kind().into());
    }
    Err(anyhow::Error::new(e).context(format!("cannot verify {}", a.vault.display())))
}

/// Append the custody record of a finished check; report findings on
/// stderr (exit 3).
fn record_outcome(vault: &Path, report: &verify::VerifyReport, custody: Option<&Custody>) -> Exit {
    let event = record::done_event(
        "verified",
        report.case_id.clone(),
        vault.to_path_buf(),
        report.vault_sha256.clone(),
        report.ok,
    );
    if !report.ok {
        for p in &report.problems {
            eprintln!(
                "casevault: error: integrity failure: {}: {}",
                sanitize(&vault.display().to_string()),
                sanitize(&p.to_string())
            );
        }
        record::failure(custody, event);
        pending_rekey_hint(vault);
        return Exit::Integrity;
    }
    let what = if report.contents_checked {
        format!(
            "verified {}: {} files, {} bytes",
            vault.display(),
            report.files.unwrap_or(0),
            report.bytes.unwrap_or(0)
        )
    } else {
        format!("verified {} (sidecar and header)", vault.display())
    };
    record::after_success(custody, event, &what, "the vault is fine")
}

fn print_ok(report: &verify::VerifyReport) {
    if report.contents_checked {
        let side = match report.sidecar {
            verify::Sidecar::Ok => "ok",
            verify::Sidecar::Missing => "missing",
            verify::Sidecar::Mismatch => "mismatch",
        };
        println!(
            "OK {}: {} files, {} bytes verified; sidecar {side}",
            report.case_id.as_deref().unwrap_or(""),
            report.files.unwrap_or(0),
            report.bytes.unwrap_or(0)
        );
        if let Some(n @ 1..) = report.external_links {
            println!("note: {n} symlink(s) point outside the case; unseal recreates them only with --allow-external-links");
        }
        if let Some(n @ 1..) = report.looping_links {
            println!("note: {n} symlink(s) loop (a cycle, or a chain of more than 40 links) and lead nowhere; unseal recreates them as they are");
        }
    } else {
        println!("OK sidecar sha256 matches and age header parses; contents NOT checked (give -i IDENTITY to check every file)");
    }
    print_signature(&report.signature);
}

fn print_signature(s: &verify::SignatureReport) {
    let fp = |f: &Option<String>| f.clone().unwrap_or_default();
    if s.checked {
        if s.outer_role == Some("re-encrypted") {
            // rekey's signature (casevault-rekey): not who sealed the case.
            println!(
                "signature ok: VAULT.sig re-encrypted by {} ({}); who sealed the case only casevault.sig says (verify -i --signers)",
                sanitize(s.principal.as_deref().unwrap_or("")),
                fp(&s.fingerprint)
            );
        } else {
            println!(
                "signature ok: VAULT.sig by {} ({})",
                sanitize(s.principal.as_deref().unwrap_or("")),
                fp(&s.fingerprint)
            );
        }
        if s.inner_checked {
            println!(
                "inner signature ok: casevault.sig by {} ({})",
                sanitize(s.inner_principal.as_deref().unwrap_or("")),
                fp(&s.inner_fingerprint)
            );
        }
    } else if s.outer_present || s.inner_present {
        println!("signatures NOT checked (give --signers ALLOWED_SIGNERS_FILE to check who sealed this vault)");
    }
}

/// After a failed verify: if a rekey of this vault was interrupted during
/// its commit (`VAULT.sha256.pending` exists), say how to finish it.
fn pending_rekey_hint(vault: &Path) {
    if let Some(p) = pending_rekey(vault) {
        eprintln!(
            "casevault: hint: {} exists: a `casevault rekey` of this vault was interrupted while replacing it; run the same rekey command again, which finishes it (or checks and removes the leftovers) before anything else",
            sanitize(&p.display().to_string())
        );
    }
}

/// `VAULT.sha256.pending`, when it exists.
fn pending_rekey(vault: &Path) -> Option<PathBuf> {
    let mut p = casevault::sidecar::path(vault).into_os_string();
    p.push(casevault::rekey::PENDING_SUFFIX);
    let p = PathBuf::from(p);
    p.exists().then_some(p)
}

//! `casevault report`: write one self-contained HTML page that states what
//! a vault is, what was checked and how it was handled (issue #14).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use casevault::allowed_signers::AllowedSigners;
use casevault::report;
use casevault::sanitize::sanitize;
use casevault::verify;

use super::args::{file_len, print_json, show_progress, IdentityArgs};
use super::Exit;

#[derive(Args)]
#[command(mut_arg("identity", |a| a.help("Identity file: verify every file first, and list the entries. Without one only the sidecar, header and VAULT.sig are checked, and the report says the contents were not")))]
pub struct ReportArgs {
    /// The vault to report on.
    vault: PathBuf,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Include this vault's records from a custody log (read only; the
    /// chain is checked as `custody verify` checks it).
    #[arg(long, value_name = "LOG")]
    custody: Option<PathBuf>,
    /// Check VAULT.sig, casevault.sig (with -i) and the custody records'
    /// signatures against this OpenSSH allowed_signers file.
    #[arg(long, value_name = "ALLOWED_SIGNERS_FILE")]
    signers: Option<PathBuf>,
    /// Accept only this principal (default: any principal in the file
    /// whose key made the signature and whose namespaces allow it).
    #[arg(long, value_name = "PRINCIPAL", requires = "signers")]
    accept_signer: Option<String>,
    /// Write the report here (HTML; replaced if it exists). Written also
    /// when verification fails, headed by the failure (exit 3).
    #[arg(short, long, value_name = "REPORT.html")]
    output: PathBuf,
    /// Also write every entry to this CSV file (RFC 4180), however many
    /// there are; the page lists entries one by one only up to 20,000.
    /// Needs -i.
    #[arg(long, value_name = "FILE.csv")]
    listing: Option<PathBuf>,
    /// Also print the report's facts as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(a: ReportArgs) -> anyhow::Result<Exit> {
    let ids = a.identity.load()?;
    if a.listing.is_some() && ids.is_empty() {
        return Err(casevault::Error::Usage(
            "--listing needs -i IDENTITY_FILE (or --passphrase): without a key the entries cannot be read".into(),
        )
        .into());
    }
    if !ids.is_empty() {
        show_progress(a.quiet, "verifying", || file_len(&a.vault));
    }
    let check = match &a.signers {
        Some(f) => Some(verify::SignatureCheck {
            signers: AllowedSigners::load(f)?,
            principal: a.accept_signer.clone(),
        }),
        None => None,
    };
    let opts = report::Options {
        vault: &a.vault,
        identities: &ids,
        signatures: check.as_ref(),
        custody: a.custody.as_deref(),
        listing: a.listing.as_deref(),
        generated_at: now(),
    };
    let r =
        report::build(&opts).with_context(|| format!("cannot report on {}", a.vault.display()))?;
    report::write_html(&r, &a.output)
        .with_context(|| format!("cannot write the report {}", a.output.display()))?;
    if a.json {
        print_json(&r)?;
    }
    let out = sanitize(&a.output.display().to_string());
    if !r.ok {
        for f in &r.failures {
            eprintln!(
                "casevault: error: integrity failure: {}: {}",
                sanitize(&a.vault.display().to_string()),
                sanitize(f)
            );
        }
        eprintln!("casevault: hint: the report {out} was written and says so at its top");
        return Ok(Exit::Integrity);
    }
    if !a.json {
        let what = if r.contents_checked {
            "every file verified"
        } else {
            "contents NOT checked (give -i IDENTITY_FILE)"
        };
        println!("report written to {out}: {what}");
    }
    Ok(Exit::Success)
}

/// The report's one varying line: now, UTC, to the second.
fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

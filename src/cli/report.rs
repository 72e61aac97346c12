//! `casevault report`: write one self-contained HTML page that states what
//! a vault is, what was checked and how it was handled (issue #14).

use std::fs;
use std::path::{Path, PathBuf};

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
    /// Write the report here (HTML). Written also when verification
    /// fails, headed by the failure (exit 3).
    #[arg(short, long, value_name = "REPORT.html")]
    output: PathBuf,
    /// Also write every entry to this CSV file (RFC 4180), however many
    /// there are; the page lists entries one by one only up to 20,000.
    /// Needs -i.
    #[arg(long, value_name = "FILE.csv")]
    listing: Option<PathBuf>,
    /// Replace an existing REPORT.html or --listing file (never one of
    /// the inputs).
    #[arg(long)]
    force: bool,
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
    check_outputs(&a)?;
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
        overwrite: a.force,
    };
    let r =
        report::build(&opts).with_context(|| format!("cannot report on {}", a.vault.display()))?;
    report::write_html(&r, &a.output, a.force)
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

/// Refuse, before any work, an output that exists (without `--force`),
/// one given twice, or one that is an input: `report VAULT -o VAULT
/// --force` must not replace the evidence.
fn check_outputs(a: &ReportArgs) -> anyhow::Result<()> {
    use casevault::Error;
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mut inputs = vec![
        a.vault.clone(),
        casevault::sidecar::path(&a.vault),
        casevault::sign::sig_path(&a.vault),
    ];
    inputs.extend(a.custody.iter().cloned());
    inputs.extend(a.signers.iter().cloned());
    inputs.extend(a.identity.identity.iter().cloned());
    let outputs: Vec<&Path> = std::iter::once(a.output.as_path())
        .chain(a.listing.as_deref())
        .collect();
    if let [html, csv] = outputs[..] {
        if html == csv || (id(html).is_some() && id(html) == id(csv)) {
            return Err(Error::Usage("-o and --listing name the same file".into()).into());
        }
    }
    for out in outputs {
        let Ok(meta) = fs::symlink_metadata(out) else {
            continue;
        };
        let out_id = id(out);
        for input in &inputs {
            if input == out || (out_id.is_some() && out_id == id(input)) {
                return Err(Error::Usage(format!(
                    "{} is an input of this report; write the report elsewhere",
                    out.display()
                ))
                .into());
            }
        }
        if !a.force {
            return Err(Error::Refused(format!(
                "{} already exists (use --force to replace it)",
                out.display()
            ))
            .into());
        }
        if !meta.is_file() {
            return Err(Error::Refused(format!("{} is not a regular file", out.display())).into());
        }
    }
    Ok(())
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

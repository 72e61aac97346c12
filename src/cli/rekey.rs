//! `casevault rekey`: re-encrypt a vault to a new set of recipients.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use casevault::allowed_signers::AllowedSigners;
use casevault::rekey;
use casevault::sanitize::sanitize;
use casevault::verify;

use super::args::{
    file_len, identities, show_progress, CustodyArgs, OutputArgs, RecipientArgs, SignArgs,
};
use super::{record, Exit};

#[derive(Args)]
#[command(group = clap::ArgGroup::new("recipients").required(true).multiple(true).args(["recipient", "recipients_file"]))]
#[command(group = clap::ArgGroup::new("target").required(true).args(["output", "in_place"]))]
#[command(mut_arg("recipient", |a| a.help("A recipient of the new vault: age1pq1…, age1…, \"ssh-ed25519 …\" or \"ssh-rsa …\". Repeatable")))]
#[command(mut_arg("sign", |a| a.help("Sign the new vault with this OpenSSH private key: NEW_VAULT.sig in namespace casevault-rekey, which says \"re-encrypted by\", not \"sealed by\". Requires --signers: VAULT's inner signature must be trusted").requires("signers")))]
pub struct RekeyArgs {
    /// The vault to re-encrypt.
    vault: PathBuf,
    /// The new vault (VAULT is left as it is).
    #[arg(short, long, value_name = "NEW_VAULT")]
    output: Option<PathBuf>,
    /// Replace VAULT (and its sidecar) instead, only after the new vault is
    /// complete and verified with an -i identity that is among the new
    /// recipients.
    #[arg(long)]
    in_place: bool,
    /// Identity file that opens VAULT. Repeatable.
    #[arg(
        short,
        long = "identity",
        value_name = "IDENTITY_FILE",
        required = true
    )]
    identity: Vec<PathBuf>,
    /// Use identity files that group or others can read (refused by
    /// default, like ssh does with private keys).
    #[arg(long)]
    allow_insecure_identity: bool,
    #[command(flatten)]
    recipients: RecipientArgs,
    /// Write age's ASCII armor instead of binary. An armored vault cannot
    /// be read from its end: list and unseal --path then read all of it.
    #[arg(long)]
    armor: bool,
    /// Replace an existing NEW_VAULT.
    #[arg(long, conflicts_with = "in_place")]
    force: bool,
    /// Write PERCENT % of parity for the new vault (VAULT.par, FORMAT §15).
    /// Without it, a parity file of the vault being replaced is written
    /// anew with its own percentage.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(1..=100))]
    parity: Option<u32>,
    #[command(flatten)]
    sign: SignArgs,
    /// Re-encrypt only if VAULT's inner signature (casevault.sig, made when
    /// it was sealed) is by a key this OpenSSH allowed_signers file trusts
    /// for namespace casevault-manifest; else exit 3, nothing written.
    /// Required with --sign.
    #[arg(long, value_name = "ALLOWED_SIGNERS_FILE")]
    signers: Option<PathBuf>,
    /// With --signers: accept only this principal as the sealer.
    #[arg(long, value_name = "PRINCIPAL", requires = "signers")]
    sealed_by: Option<String>,
    #[command(flatten)]
    custody: CustodyArgs,
    #[command(flatten)]
    output_args: OutputArgs,
}

pub fn run(a: RekeyArgs) -> anyhow::Result<Exit> {
    let vault = a.vault.clone();
    // Two passes over the vault: check, then re-encrypt.
    show_progress(a.output_args.quiet, "rekeying", || {
        file_len(&a.vault).map(|n| 2 * n)
    });
    let key = a.sign.key()?;
    let custody = a.custody.custody(key.as_ref());
    let sealer = match &a.signers {
        Some(f) => Some(verify::SignatureCheck {
            signers: AllowedSigners::load(f)?,
            principal: a.sealed_by.clone(),
        }),
        None => None,
    };
    // A rekey of this target that was interrupted during its commit is
    // finished (or its leftovers removed) first, and said so.
    if let Some(target) = a.output.as_ref().or(a.in_place.then_some(&a.vault)) {
        finish_interrupted(target)?;
    }
    let res = rekey::rekey(rekey::RekeyOptions {
        vault: a.vault,
        output: a.output,
        identities: identities(&a.identity, a.allow_insecure_identity)?,
        recipients: a.recipients.load()?,
        in_place: a.in_place,
        armor: a.armor,
        force: a.force,
        sign: key,
        sealer,
        parity: a.parity,
    });
    let report = match res {
        Ok(r) => r,
        Err(e) => {
            record::failure(
                custody.as_ref(),
                record::failed_event("re-encrypted", &vault),
            );
            return Err(
                anyhow::Error::new(e).context(format!("cannot re-encrypt {}", vault.display()))
            );
        }
    };
    record::print_then_record(
        a.output_args.json,
        &report,
        print_text,
        custody.as_ref(),
        record::done_event(
            "re-encrypted",
            Some(report.case_id.clone()),
            report.vault.clone(),
            report.vault_sha256.clone(),
            true,
        ),
        &format!(
            "re-encrypted {} -> {}",
            report.case_id,
            report.vault.display()
        ),
        "the new vault is fine",
    )
}

fn finish_interrupted(target: &Path) -> anyhow::Result<()> {
    match rekey::finish_interrupted(target)
        .with_context(|| format!("cannot finish an interrupted rekey of {}", target.display()))?
    {
        Some(rekey::Interrupted::Finished) => eprintln!(
            "casevault: note: finished an interrupted rekey of {}: the new vault's sidecar (and signature, if it had one) moved into place",
            sanitize(&target.display().to_string()),
        ),
        Some(rekey::Interrupted::Discarded) => eprintln!(
            "casevault: note: removed the leftovers of an interrupted rekey of {} (it had not replaced the vault)",
            sanitize(&target.display().to_string())
        ),
        None => {}
    }
    Ok(())
}

fn print_text(report: &rekey::RekeyReport) {
    println!(
        "re-encrypted {}: {} files, {} bytes verified -> {} (recipients: {}, {} bytes, sha256 {})",
        report.case_id,
        report.files,
        report.bytes,
        sanitize(&report.vault.display().to_string()),
        report.recipients,
        report.vault_bytes,
        report.vault_sha256
    );
    if let Some(s) = &report.sealed_by {
        println!(
            "sealed by {} ({}): inner signature casevault.sig trusted",
            sanitize(s.principal.as_deref().unwrap_or("")),
            s.fingerprint
        );
    }
    if let Some(sig) = &report.signature {
        println!(
            "re-encryption signed (namespace casevault-rekey) -> {}",
            sanitize(&sig.display().to_string())
        );
    }
}

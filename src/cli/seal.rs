//! `casevault seal`: one case directory into one vault.

use std::path::PathBuf;

use clap::Args;

use casevault::sanitize::sanitize;
use casevault::seal;

use super::args::{
    case_bytes, show_progress, CompressArg, CustodyArgs, OutputArgs, RecipientArgs, SignArgs,
};
use super::{record, Exit};

#[derive(Args)]
#[command(group = clap::ArgGroup::new("recipients").required(true).multiple(true).args(["recipient", "recipients_file", "passphrase"]))]
#[command(mut_arg("sign", |a| a.help("Sign the vault with this OpenSSH private key: writes VAULT.sig (namespace casevault-vault) and casevault.sig inside the vault")))]
pub struct SealArgs {
    /// The case directory to seal.
    case_dir: PathBuf,
    /// The vault file to write (VAULT.sha256 is written beside it).
    #[arg(short, long, value_name = "VAULT")]
    output: PathBuf,
    #[command(flatten)]
    recipients: RecipientArgs,
    /// Encrypt with a passphrase (age's scrypt recipient) instead of
    /// recipients, for a hand-carried transfer. Asked twice on the terminal;
    /// refused without one. age allows no other recipient beside it, so it
    /// cannot be combined with -r/-R.
    #[arg(short = 'p', long, conflicts_with_all = ["recipient", "recipients_file"])]
    passphrase: bool,
    /// Case id (default: the case directory's name).
    #[arg(long, value_name = "ID")]
    case_id: Option<String>,
    /// Compression of the tar stream inside the vault.
    #[arg(long, value_enum, default_value = "zstd", value_name = "zstd|none")]
    compress: CompressArg,
    /// Write age's ASCII armor instead of binary. An armored vault cannot
    /// be read from its end: list and unseal --path then read all of it.
    #[arg(long)]
    armor: bool,
    /// Replace an existing vault and sidecar.
    #[arg(long)]
    force: bool,
    /// Also write VAULT.par: PERCENT % of Reed-Solomon parity over the
    /// vault file, so that `casevault repair` can rebuild damaged bytes
    /// without a key (FORMAT §15). Default: no parity file.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(1..=100))]
    parity: Option<u32>,
    #[command(flatten)]
    sign: SignArgs,
    #[command(flatten)]
    custody: CustodyArgs,
    #[command(flatten)]
    output_args: OutputArgs,
}

pub fn run(a: SealArgs) -> anyhow::Result<Exit> {
    let recipients = if a.passphrase {
        // Alone by construction (clap conflicts), so age accepts it.
        vec![Box::new(casevault::passphrase::recipient()?) as _]
    } else {
        a.recipients.load()?
    };
    let key = a.sign.key()?;
    let custody = a.custody.custody(key.as_ref());
    show_progress(a.output_args.quiet, "sealing", || case_bytes(&a.case_dir));
    let report = seal::seal(seal::SealOptions {
        case_dir: a.case_dir.clone(),
        output: a.output.clone(),
        recipients,
        case_id: a.case_id.clone(),
        compression: a.compress.into(),
        zstd_level: seal::DEFAULT_ZSTD_LEVEL,
        armor: a.armor,
        force: a.force,
        collect_entries: false,
        sign: key,
        output_mode: seal::OUTPUT_MODE,
        parity: a.parity,
    })?;
    record::print_then_record(
        a.output_args.json,
        &report,
        print_text,
        custody.as_ref(),
        record::done_event(
            "sealed",
            Some(report.case_id.clone()),
            report.vault.clone(),
            report.vault_sha256.clone(),
            true,
        ),
        &format!("sealed {} -> {}", report.case_id, report.vault.display()),
        "the vault is fine",
    )
}

fn print_text(report: &seal::SealReport) {
    println!(
        "sealed {}: {} files, {} bytes -> {} ({} bytes, sha256 {})",
        report.case_id,
        report.files,
        report.payload_bytes,
        sanitize(&report.vault.display().to_string()),
        report.vault_bytes,
        report.vault_sha256
    );
    if let (Some(sig), Some(signer)) = (&report.signature, &report.signer) {
        println!(
            "signed by {} ({}) -> {}",
            sanitize(signer.principal.as_deref().unwrap_or("(no principal)")),
            signer.fingerprint,
            sanitize(&sig.display().to_string())
        );
    }
}

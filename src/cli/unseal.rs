//! `casevault unseal`: restore a case folder from a vault.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use casevault::sanitize::sanitize;
use casevault::unseal;

use super::args::{file_len, show_progress, CustodyArgs, IdentityArgs, OutputArgs, SignArgs};
use super::{record, Exit};

#[derive(Args)]
#[command(mut_arg("identity", |a| a.required_unless_present("passphrase")))]
#[command(mut_arg("sign", |a| a.help("Sign the custody record with this OpenSSH private key").requires("custody")))]
pub struct UnsealArgs {
    /// The vault to open.
    vault: PathBuf,
    /// Destination directory: must not exist, or be empty.
    #[arg(short, long, value_name = "DEST_DIR")]
    output: PathBuf,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Recreate symlinks that point outside the case, verbatim (never
    /// written through).
    #[arg(long)]
    allow_external_links: bool,
    /// Restore only this file or directory subtree (a path as `list`
    /// prints it). Repeatable. A version 3 vault is read only where the
    /// paths are; other vaults are read fully.
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,
    #[command(flatten)]
    sign: SignArgs,
    #[command(flatten)]
    custody: CustodyArgs,
    #[command(flatten)]
    output_args: OutputArgs,
}

pub fn run(a: UnsealArgs) -> anyhow::Result<Exit> {
    let vault = a.vault.clone();
    show_progress(a.output_args.quiet, "unsealing", || file_len(&a.vault));
    let key = a.sign.key()?;
    let custody = a.custody.custody(key.as_ref());
    let res = unseal::unseal(unseal::UnsealOptions {
        vault: a.vault,
        dest: a.output,
        identities: a.identity.load()?,
        allow_external_links: a.allow_external_links,
        paths: a.paths,
    });
    let report = match res {
        Ok(r) => r,
        Err(e) => {
            // A usage error (e.g. DEST's parent missing) touched no
            // vault: nothing to record (issue #17 item 5).
            if e.kind() != casevault::ErrorKind::Usage {
                record::failure(custody.as_ref(), record::failed_event("unsealed", &vault));
            }
            return Err(anyhow::Error::new(e).context(format!("cannot unseal {}", vault.display())));
        }
    };
    // The result first: a custody log that cannot take the record
    // does not hide what was restored (issue #10 item 5).
    warn_mtimes_not_stored(&report.mtimes_not_stored);
    // A partial read did not hash the whole vault; the custody record
    // names the vault by its hash all the same.
    let vault_sha256 = match (&report.vault_sha256, &custody) {
        (Some(h), _) => h.clone(),
        (None, Some(_)) => casevault::io::sha256_file(&vault)
            .map(|(h, _)| casevault::io::hex(&h))
            .with_context(|| format!("cannot hash {}", vault.display()))?,
        (None, None) => String::new(),
    };
    record::print_then_record(
        a.output_args.json,
        &report,
        |r| {
            println!(
                "unsealed {}: {} files, {} bytes verified -> {}",
                r.case_id,
                r.files,
                r.bytes,
                sanitize(&r.dest.display().to_string())
            )
        },
        custody.as_ref(),
        record::done_event(
            "unsealed",
            Some(report.case_id.clone()),
            vault,
            vault_sha256,
            true,
        ),
        &format!(
            "unsealed and verified {}: {} files, {} bytes -> {}",
            report.case_id,
            report.files,
            report.bytes,
            report.dest.display()
        ),
        "the vault and the restored case are fine",
    )
}

/// How many entries whose mtime was not stored unseal names one per line;
/// `--json` lists them all.
const MAX_MTIME_WARNINGS: usize = 10;

/// Say on stderr which entries' recorded mtimes the destination filesystem
/// did not store exactly (docs/CLI.md, issue #10 item 6).
fn warn_mtimes_not_stored(list: &[unseal::MtimeNotStored]) {
    use casevault::format::display_time;
    for m in list.iter().take(MAX_MTIME_WARNINGS) {
        eprintln!(
            "casevault: warning: {}: the filesystem did not store the recorded mtime {}; it holds {}",
            sanitize(&m.path),
            display_time(m.mtime, m.mtime_nsec),
            display_time(m.stored_mtime, m.stored_mtime_nsec)
        );
    }
    if list.len() > MAX_MTIME_WARNINGS {
        eprintln!(
            "casevault: warning: and {} more entries whose mtime was not stored (--json lists all in mtimes_not_stored)",
            list.len() - MAX_MTIME_WARNINGS
        );
    }
}

//! `casevault salvage`: recover what is provably intact from a damaged
//! vault (issue #16, docs/CLI.md).

use std::path::PathBuf;

use clap::Args;

use casevault::salvage::{self, SalvageReport};
use casevault::sanitize::sanitize;

use super::args::{file_len, print_json, show_progress, IdentityArgs, OutputArgs};
use super::Exit;

#[derive(Args)]
#[command(mut_arg("identity", |a| a.required_unless_present("passphrase")))]
pub struct SalvageArgs {
    /// The damaged vault.
    vault: PathBuf,
    /// Where the verified files go: must not exist, or be empty.
    #[arg(short, long, value_name = "DEST_DIR")]
    output: PathBuf,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Also put the bytes that could not be verified (files no surviving
    /// record checks, files cut off by the damage, files whose bytes do not
    /// match their record) under this directory, apart from DEST_DIR. It
    /// must not exist, or be empty; it is created only if something goes
    /// there, mode 0700, files 0600. Nothing in it is evidence as sealed.
    #[arg(long, value_name = "DIR")]
    unverified: Option<PathBuf>,
    /// Recreate symlinks that point outside the case, verbatim (never
    /// written through).
    #[arg(long)]
    allow_external_links: bool,
    #[command(flatten)]
    output_args: OutputArgs,
}

/// How many lost or unverifiable files the text output names; `--json`
/// lists them all.
const MAX_LISTED: usize = 50;

pub fn run(a: SalvageArgs) -> anyhow::Result<Exit> {
    let vault = a.vault.clone();
    show_progress(a.output_args.quiet, "salvaging", || file_len(&a.vault));
    let res = salvage::salvage(salvage::SalvageOptions {
        vault: a.vault,
        dest: a.output,
        identities: a.identity.load()?,
        unverified: a.unverified,
        allow_external_links: a.allow_external_links,
    });
    let report = match res {
        Ok(r) => r,
        Err(e) => {
            let no_key = e.kind() == casevault::ErrorKind::NoMatchingKey;
            let err = anyhow::Error::new(e).context(format!("cannot salvage {}", vault.display()));
            if no_key {
                eprintln!(
                    "casevault: note: if one of these identities should open this vault, its age \
                     header (the recipient stanzas) may be damaged, which looks the same: no byte \
                     can be decrypted without it, and only `casevault repair` with the vault's \
                     parity file can bring it back"
                );
            }
            return Err(err);
        }
    };
    if a.output_args.json {
        print_json(&report)?;
    } else {
        print_text(&report);
    }
    if report.complete {
        return Ok(Exit::Success);
    }
    eprintln!(
        "casevault: error: salvage of {} is incomplete: {} lost, {} unverifiable{}",
        sanitize(&vault.display().to_string()),
        report.lost.len(),
        report.unverifiable.len(),
        match &report.stopped {
            Some(s) => format!(
                "; the payload could not be read past {}, so entries after it are unknown{}",
                match s.tar_offset {
                    Some(n) => format!("tar offset {n}"),
                    None => "a point after the damage, at an unknown tar offset".into(),
                },
                if report.index.state == "checked" {
                    " beyond those listed"
                } else {
                    ""
                }
            ),
            None => String::new(),
        }
    );
    Ok(Exit::Integrity)
}

fn print_text(r: &SalvageReport) {
    println!(
        "salvaged {}: {} files, {} bytes verified -> {}",
        sanitize(r.case_id.as_deref().unwrap_or("(unknown case)")),
        r.restored.files,
        r.restored.bytes,
        sanitize(&r.dest.display().to_string())
    );
    if let Some(p) = &r.index.problem {
        println!("index {}: {}", r.index.state, sanitize(p));
    }
    if let Some(s) = &r.stopped {
        println!(
            "stopped at {}: {}",
            match s.tar_offset {
                Some(n) => format!("tar offset {n}"),
                None => "an unknown tar offset".into(),
            },
            sanitize(&s.reason)
        );
    }
    for l in r.lost.iter().take(MAX_LISTED) {
        println!("lost: {}: {}", sanitize(&l.path), sanitize(&l.reason));
    }
    if r.lost.len() > MAX_LISTED {
        println!(
            "lost: and {} more (--json lists all)",
            r.lost.len() - MAX_LISTED
        );
    }
    for u in r.unverifiable.iter().take(MAX_LISTED) {
        println!(
            "unverifiable: {}: {}",
            sanitize(&u.path),
            sanitize(&u.reason)
        );
    }
    if r.unverifiable.len() > MAX_LISTED {
        println!(
            "unverifiable: and {} more (--json lists all)",
            r.unverifiable.len() - MAX_LISTED
        );
    }
    if let Some(u) = &r.unverified_dir {
        println!(
            "unverified bytes (NOT verified, not evidence as sealed) -> {}",
            sanitize(&u.display().to_string())
        );
    }
}

//! `casevault list`: check a vault, then list its entries.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use casevault::format::Kind;
use casevault::sanitize::sanitize;
use casevault::verify;

use super::args::{file_len, print_json, show_progress, IdentityArgs, OutputArgs};
use super::Exit;

#[derive(Args)]
#[command(mut_arg("identity", |a| a.help("Identity file. Repeatable").required_unless_present("passphrase")))]
pub struct ListArgs {
    /// The vault to list.
    vault: PathBuf,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    output_args: OutputArgs,
}

pub fn run(a: ListArgs) -> anyhow::Result<Exit> {
    let ids = a.identity.load()?;
    show_progress(a.output_args.quiet, "checking", || file_len(&a.vault));
    let report = verify::list(&a.vault, &ids)
        .with_context(|| format!("cannot list {}", a.vault.display()))?;
    if a.output_args.json {
        print_json(&report)?;
        return Ok(Exit::Success);
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for e in &report.entries {
        let size = e.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        let sha = e.sha256.as_deref().unwrap_or("-");
        let name = match (&e.kind, &e.target) {
            (Kind::Symlink, Some(t)) => format!("{} -> {}", sanitize(&e.path), sanitize(t)),
            _ => sanitize(&e.path),
        };
        writeln!(out, "{}\t{size}\t{sha}\t{name}", e.kind.as_str())?;
    }
    Ok(Exit::Success)
}

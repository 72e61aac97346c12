//! `casevault list`: check a vault, then list its entries.

use std::path::PathBuf;

use std::io::Write;

use anyhow::Context;
use clap::Args;

use casevault::format::Kind;
use casevault::sanitize::sanitize;
use casevault::verify;

use super::args::{file_len, show_progress, IdentityArgs, OutputArgs};
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
    let mut sink = Printer {
        out: std::io::stdout().lock(),
        json: a.output_args.json,
        first: true,
    };
    verify::list_to(&a.vault, &ids, &mut sink)
        .with_context(|| format!("cannot list {}", a.vault.display()))?;
    if a.output_args.json {
        sink.out.write_all(b"]}\n")?;
    }
    sink.out.flush()?;
    Ok(Exit::Success)
}

/// Prints as entries come: tab-separated lines, or the `--json` object
/// (the report's fields, then `entries` one by one), so that memory does
/// not grow with the vault.
struct Printer<W: Write> {
    out: W,
    json: bool,
    first: bool,
}

impl<W: Write> verify::ListSink for Printer<W> {
    fn head(&mut self, head: &verify::ListReport) -> casevault::Result<()> {
        if self.json {
            // The object as serde writes it, up to the open `entries`.
            let mut text = serde_json::to_vec(head).map_err(|e| stdout_err(e.into()))?;
            let open = text.len() - b"]}".len();
            text.truncate(open);
            self.out.write_all(&text).map_err(stdout_err)?;
        }
        Ok(())
    }

    fn entry(&mut self, e: verify::ListEntry) -> casevault::Result<()> {
        if self.json {
            if !self.first {
                self.out.write_all(b",").map_err(stdout_err)?;
            }
            self.first = false;
            serde_json::to_writer(&mut self.out, &e).map_err(|e| stdout_err(e.into()))?;
            return Ok(());
        }
        let size = e.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        let sha = e.sha256.as_deref().unwrap_or("-");
        let name = match (&e.kind, &e.target) {
            (Kind::Symlink, Some(t)) => format!("{} -> {}", sanitize(&e.path), sanitize(t)),
            _ => sanitize(&e.path),
        };
        writeln!(self.out, "{}\t{size}\t{sha}\t{name}", e.kind.as_str()).map_err(stdout_err)?;
        Ok(())
    }
}

fn stdout_err(e: std::io::Error) -> casevault::Error {
    casevault::Error::io("cannot write", std::path::Path::new("standard output"), e)
}

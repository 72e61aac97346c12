//! `casevault keygen`: a new identity, written to a file or printed.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use casevault::keys;

use super::Exit;

#[derive(Args)]
pub struct KeygenArgs {
    /// Write the identity to FILE (mode 0600, never overwritten) and print
    /// the recipient; without it, print the identity to stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Make a post-quantum identity (ML-KEM-768 + X25519, age1pq1…
    /// recipient), as `age-keygen -pq` does. Recommended for any case whose
    /// confidentiality must outlive the next decade.
    #[arg(long)]
    pq: bool,
}

pub fn run(a: KeygenArgs) -> anyhow::Result<Exit> {
    let created = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .context("cannot format the time")?
        .format(&time::format_description::well_known::Rfc3339)
        .context("cannot format the time")?;
    let id = if a.pq {
        keys::generate_pq(&created)
    } else {
        keys::generate(&created)
    };
    match a.output {
        Some(path) => {
            keys::write_identity_file(&path, &id)?;
            println!("{}", id.recipient);
        }
        None => {
            use age::secrecy::ExposeSecret;
            print!("{}", id.file_text.expose_secret());
        }
    }
    Ok(Exit::Success)
}

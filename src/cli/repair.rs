//! `casevault repair`: rebuild a damaged vault from its parity file,
//! without a key (FORMAT §15).

use std::path::PathBuf;

use clap::Args;

use casevault::parity::{self, RepairReport};
use casevault::sanitize::sanitize;

use super::args::print_json;
use super::Exit;

#[derive(Args)]
pub struct RepairArgs {
    /// The vault to check and, if damaged, repair in place.
    vault: PathBuf,
    /// The parity file (default: VAULT.par).
    #[arg(long, value_name = "FILE")]
    parity: Option<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: RepairArgs) -> anyhow::Result<Exit> {
    if casevault::source::is_remote(&a.vault) {
        return Err(casevault::Error::Usage(format!(
            "{}: repair works on a local copy (an object in a locked bucket cannot be replaced): download the vault, its .sha256 and .par, repair, then `casevault store push` the copy",
            a.vault.display()
        ))
        .into());
    }
    let par = a.parity.clone().unwrap_or_else(|| parity::path(&a.vault));
    let report = parity::repair(&a.vault, &par)?;
    if a.json {
        print_json(&report)?;
    } else {
        print_text(&report);
    }
    if report.outcome == "unrepairable" {
        let why = report.problem.as_deref().unwrap_or("not repairable");
        eprintln!(
            "casevault: integrity failure: {}: {}",
            sanitize(&report.vault.display().to_string()),
            sanitize(why)
        );
        return Ok(Exit::Integrity);
    }
    Ok(Exit::Success)
}

fn print_text(r: &RepairReport) {
    let vault = sanitize(&r.vault.display().to_string());
    match r.outcome {
        "clean" => println!("{vault}: intact (sha256 {})", r.vault_sha256),
        "repaired" => println!(
            "{vault}: repaired {} damaged shards in {} stripes (sha256 {}, checked against the {})",
            r.repaired_shards,
            r.damage.len(),
            r.vault_sha256,
            r.checked_against
        ),
        _ => {}
    }
    let p = &r.parity_state;
    if p.damaged() {
        println!(
            "{}: damaged (header {}, trailer {}, {} tables with one copy damaged, {} tables lost, {} recovery shards damaged){}",
            sanitize(&r.parity.display().to_string()),
            if p.header_ok { "ok" } else { "damaged" },
            if p.trailer_ok { "ok" } else { "damaged" },
            p.table_copies_damaged,
            p.tables_lost,
            p.recovery_shards_damaged,
            if r.parity_rewritten { "; written anew from the intact vault" } else { "" }
        );
    }
}

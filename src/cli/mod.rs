//! Command-line interface: clap definitions, conversion into the library's
//! option structs, and output (human or `--json`), custody records and the
//! exit code of every command. One file per command; shared flags in
//! [`args`]; the one route from a result to an exit code in [`exit`].
//! See docs/CLI.md.

mod args;
mod custody;
pub mod exit;
mod keygen;
mod list;
mod man;
mod record;
mod rekey;
mod repair;
mod report;
mod salvage;
mod seal;
mod store;
mod sweep;
mod sweep_report;
mod unseal;
mod verify;

use clap::{Parser, Subcommand};

pub use exit::Exit;

/// Seal forensic case folders into encrypted, self-verifying vaults.
///
/// A vault is an age-encrypted tar stream holding a BagIt bag with SHA-256
/// manifests; it opens with the stock age, zstd and tar tools.
///
/// Exit codes: 0 success, 1 error, 2 usage, 3 integrity failure,
/// 4 no matching key, 75 another sweep holds the store lock, 130/143
/// interrupted.
#[derive(Parser)]
#[command(name = "casevault", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an age identity: X25519, or post-quantum with --pq
    /// (age-keygen format).
    Keygen(keygen::KeygenArgs),
    /// Seal a case directory into a vault.
    Seal(seal::SealArgs),
    /// Decrypt a vault, check every byte, and restore the case folder.
    Unseal(unseal::UnsealArgs),
    /// Check a vault: every byte with -i, else its sidecar and header.
    Verify(verify::VerifyArgs),
    /// Decrypt and check a vault, then list its entries.
    List(list::ListArgs),
    /// Re-encrypt a vault to a new set of recipients, payload unchanged.
    ///
    /// Checks every byte of VAULT with -i (as verify -i does), then streams
    /// its decrypted payload, byte for byte, into a new vault for the
    /// recipients given (the complete new set: add the defence's key, drop
    /// a departed investigator's, move to post-quantum recipients). The new
    /// vault and its .sha256 sidecar appear only when complete; a damaged
    /// VAULT writes nothing. No plaintext touches disk. With --sign the new
    /// VAULT.sig says "re-encrypted by" (namespace casevault-rekey), and is
    /// given only after --signers found VAULT's inner signature trusted.
    /// An interrupted rekey of the same target is finished first.
    ///
    /// Exit codes: 0 done, 1 error, 2 usage (also --sign without
    /// --signers), 3 VAULT is damaged or its inner signature missing or
    /// untrusted, 4 no -i identity opens VAULT.
    Rekey(rekey::RekeyArgs),
    /// Write a self-contained HTML report on a vault for a court or an
    /// expert.
    ///
    /// States what the vault is (case id, name, size, SHA-256, sidecar,
    /// format, sealing time, recipients), who signed it, every entry (up to
    /// 20,000; beyond, per-folder totals and --listing CSV), its custody
    /// chain (--custody), and the stock commands that check the same
    /// without casevault. With -i every file is verified first; without,
    /// only the key-less checks, and the report says so. No script, nothing
    /// loaded from anywhere; prints on A4 and Letter.
    ///
    /// Exit codes: 0 everything checked passed, 1 error (nothing written),
    /// 2 usage, 3 verification or the custody chain failed (the report is
    /// still written, headed by the failure), 4 no -i identity opens VAULT.
    Report(report::ReportArgs),
    /// Check a vault against its parity file and rebuild damaged bytes,
    /// without a key.
    ///
    /// Finds damaged blocks with VAULT.par (written by seal --parity),
    /// rebuilds them, and replaces VAULT only when the result matches its
    /// .sha256 sidecar (and VAULT.sig if present). A damaged parity file is
    /// written anew once the vault is intact.
    ///
    /// Exit codes: 0 intact or repaired, 1 error (e.g. no parity file),
    /// 2 usage, 3 damage beyond the parity budget or not locatable
    /// (nothing changed).
    Repair(repair::RepairArgs),
    /// Recover every file still provably intact from a damaged vault.
    ///
    /// For a vault that cannot be repaired. A file goes into DEST_DIR only
    /// if all its bytes come from age chunks that authenticate and its size
    /// and SHA-256 match casevault.json; every other file is listed as lost
    /// or unverifiable, with the reason. Version 3 vaults lose only the
    /// entries inside a damaged zstd frame; other and truncated vaults give
    /// what lies before the first damage. DEST_DIR appears complete or not
    /// at all. Bytes that cannot be verified go only to --unverified DIR.
    ///
    /// Exit codes: 0 everything was recovered, 1 error (nothing written),
    /// 2 usage, 3 something was lost (or the age header is damaged: then
    /// nothing is written), 4 no -i identity opens VAULT.
    Salvage(salvage::SalvageArgs),
    /// Seal every new or changed case of an inbox into a vault store.
    ///
    /// For cron or a systemd timer; the set-up is in OPERATIONS.md, which the
    /// Debian package installs in /usr/share/doc/casevault/ (a source
    /// install in /usr/local/share/doc/casevault/; docs/ in the source). Every immediate subdirectory of INBOX is a case (its name is the case id); hidden
    /// entries and non-directories are reported as skipped. A case is sealed
    /// to STORE/CASE/CASE.YYYYMMDDTHHMMSS.ffffffZ.vault (+ .sha256) unless it
    /// is unchanged since its last seal. Never prompts, never reads stdin.
    ///
    /// Exit codes: 0 every case sealed or unchanged, 1 some case failed (the
    /// others were still processed), 2 usage, 75 another sweep holds the
    /// store lock (nothing was done), 130/143 interrupted.
    Sweep(sweep::SweepArgs),
    /// Show or check a custody log (the chain of custody of vaults).
    #[command(subcommand)]
    Custody(custody::CustodyCommand),
    /// Whole vault stores, local or s3://BUCKET[/PREFIX]: audit, push.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Print a shell completion script to stdout.
    Completions(man::CompletionsArgs),
    /// Print the casevault(1) man page, or casevault-COMMAND(1), as roff.
    Man(man::ManArgs),
}

/// Run the parsed command. `Ok` carries the exit of an outcome that was
/// reported already (also one that is not success, e.g. verify's integrity
/// findings); `Err` is reported by [`exit::report`].
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Keygen(a) => keygen::run(a),
        Command::Seal(a) => seal::run(a),
        Command::Unseal(a) => unseal::run(a),
        Command::Verify(a) => verify::run(a),
        Command::List(a) => list::run(a),
        Command::Rekey(a) => rekey::run(a),
        Command::Report(a) => report::run(a),
        Command::Repair(a) => repair::run(a),
        Command::Salvage(a) => salvage::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Custody(c) => custody::run(c),
        Command::Store(c) => store::run(c),
        Command::Completions(a) => man::completions(a),
        Command::Man(a) => man::man(a),
    }
}

//! Command-line interface: clap definitions, conversion into the library's
//! option structs, and output (human or `--json`). See docs/CLI.md.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use casevault::format::{Compression, Kind};
use casevault::keys::{self, BoxedIdentity, BoxedRecipient};
use casevault::sanitize::sanitize;
use casevault::{seal, unseal, verify, Error};

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
    /// Generate an age X25519 identity (age-keygen format).
    Keygen(KeygenArgs),
    /// Seal a case directory into a vault.
    Seal(SealArgs),
    /// Decrypt a vault, check every byte, and restore the case folder.
    Unseal(UnsealArgs),
    /// Check a vault: every byte with -i, else its sidecar and header.
    Verify(VerifyArgs),
    /// Decrypt and check a vault, then list its entries.
    List(ListArgs),
    /// Seal every new or changed case of an inbox into a vault store.
    ///
    /// For cron or a systemd timer (docs/OPERATIONS.md). Every immediate
    /// subdirectory of INBOX is a case (its name is the case id); hidden
    /// entries and non-directories are reported as skipped. A case is sealed
    /// to STORE/CASE/CASE.YYYYMMDDTHHMMSS.ffffffZ.vault (+ .sha256) unless it
    /// is unchanged since its last seal. Never prompts, never reads stdin.
    ///
    /// Exit codes: 0 every case sealed or unchanged, 1 some case failed (the
    /// others were still processed), 2 usage, 75 another sweep holds the
    /// store lock (nothing was done), 130/143 interrupted.
    Sweep(SweepArgs),
    /// Print a shell completion script to stdout.
    Completions(CompletionsArgs),
    /// Print the casevault(1) man page, or casevault-COMMAND(1), as roff.
    Man(ManArgs),
}

#[derive(Args)]
struct KeygenArgs {
    /// Write the identity to FILE (mode 0600, never overwritten) and print
    /// the recipient; without it, print the identity to stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressArg {
    Zstd,
    None,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("recipients").required(true).multiple(true).args(["recipient", "recipients_file"]))]
struct SealArgs {
    /// The case directory to seal.
    case_dir: PathBuf,
    /// The vault file to write (VAULT.sha256 is written beside it).
    #[arg(short, long, value_name = "VAULT")]
    output: PathBuf,
    /// A recipient: age1…, "ssh-ed25519 …" or "ssh-rsa …". Repeatable.
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    recipient: Vec<String>,
    /// A file of recipients, one per line (# comments). Repeatable.
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    recipients_file: Vec<PathBuf>,
    /// Case id (default: the case directory's name).
    #[arg(long, value_name = "ID")]
    case_id: Option<String>,
    /// Compression of the tar stream inside the vault.
    #[arg(long, value_enum, default_value = "zstd", value_name = "zstd|none")]
    compress: CompressArg,
    /// Write age's ASCII armor instead of binary.
    #[arg(long)]
    armor: bool,
    /// Replace an existing vault and sidecar.
    #[arg(long)]
    force: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct UnsealArgs {
    /// The vault to open.
    vault: PathBuf,
    /// Destination directory: must not exist, or be empty.
    #[arg(short, long, value_name = "DEST_DIR")]
    output: PathBuf,
    /// Identity file (age or unencrypted OpenSSH). Repeatable.
    #[arg(
        short,
        long = "identity",
        value_name = "IDENTITY_FILE",
        required = true
    )]
    identity: Vec<PathBuf>,
    /// Recreate symlinks that point outside the case, verbatim (never
    /// written through).
    #[arg(long)]
    allow_external_links: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// The vault to check.
    vault: PathBuf,
    /// Identity file; without one only the sidecar and header are checked.
    #[arg(short, long = "identity", value_name = "IDENTITY_FILE")]
    identity: Vec<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ListArgs {
    /// The vault to list.
    vault: PathBuf,
    /// Identity file. Repeatable.
    #[arg(
        short,
        long = "identity",
        value_name = "IDENTITY_FILE",
        required = true
    )]
    identity: Vec<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("recipients").required(true).multiple(true).args(["recipient", "recipients_file"]))]
struct SweepArgs {
    /// The inbox: one subdirectory per case.
    inbox: PathBuf,
    /// The vault store (must exist).
    #[arg(short, long, value_name = "STORE")]
    output: PathBuf,
    /// A recipient: age1…, "ssh-ed25519 …" or "ssh-rsa …". Repeatable.
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    recipient: Vec<String>,
    /// A file of recipients, one per line (# comments). Repeatable.
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    recipients_file: Vec<PathBuf>,
    /// After a vault is written, read back and checked, and the source
    /// re-hashed and found equal, remove the sealed files, symlinks and
    /// (then empty) directories from the inbox.
    #[arg(long)]
    remove_source: bool,
    /// Keep the N newest verified vaults per case; delete older ones.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    keep: Option<u64>,
    /// Append JSON Lines records to FILE (created with mode 0600; not
    /// written by --dry-run).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Print JSON Lines (one object per entry, then a summary).
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print nothing on stdout; failures still go to stderr.
    #[arg(short, long)]
    quiet: bool,
    /// Say what would be sealed, removed or pruned; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Compression of the tar stream inside each vault.
    #[arg(long, value_enum, default_value = "zstd", value_name = "zstd|none")]
    compress: CompressArg,
}

#[derive(Args)]
struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args)]
struct ManArgs {
    /// A subcommand (e.g. sweep) whose page to print instead.
    command: Option<String>,
}

fn man(a: ManArgs) -> anyhow::Result<i32> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    let page = match a.command {
        None => cmd,
        Some(name) => {
            let sub = cmd
                .find_subcommand(&name)
                .ok_or_else(|| Error::Usage(format!("no such command: {}", sanitize(&name))))?
                .clone();
            // The process ends right after; leaking one short string is fine
            // (clap names are &'static without its "string" feature).
            sub.name(String::leak(format!("casevault-{name}")) as &str)
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    clap_mangen::Man::new(page).render(&mut std::io::stdout())?;
    Ok(0)
}

fn sweep(a: SweepArgs) -> anyhow::Result<i32> {
    use casevault::sweep::{self, RecipientSpec};
    // Recipient order does not matter to age: -r first, then -R.
    let specs = a
        .recipient
        .into_iter()
        .map(RecipientSpec::Recipient)
        .chain(a.recipients_file.into_iter().map(RecipientSpec::File));
    let opts = sweep::SweepOptions {
        inbox: a.inbox,
        store: a.output,
        recipients: specs.collect(),
        remove_source: a.remove_source,
        keep: a.keep.map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
        dry_run: a.dry_run,
        compression: match a.compress {
            CompressArg::Zstd => Compression::Zstd,
            CompressArg::None => Compression::None,
        },
        zstd_level: seal::DEFAULT_ZSTD_LEVEL,
    };
    let out = sweep::Output {
        json: a.json,
        quiet: a.quiet,
        log: a.log,
    };
    Ok(sweep::run(&opts, &out)?)
}

fn identities(paths: &[PathBuf]) -> anyhow::Result<Vec<BoxedIdentity>> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(keys::read_identity_file(p)?);
    }
    Ok(out)
}

fn recipients(args: &SealArgs) -> anyhow::Result<Vec<BoxedRecipient>> {
    let mut out = Vec::new();
    for r in &args.recipient {
        out.push(
            keys::parse_recipient(r)
                .map_err(|e| Error::Refused(format!("recipient {:?}: {e}", sanitize(r))))?,
        );
    }
    for f in &args.recipients_file {
        out.extend(keys::read_recipients_file(f)?);
    }
    Ok(out)
}

fn print_json<T: serde::Serialize>(v: &T) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)
}

/// Run the parsed command. Returns the exit code for a non-error outcome
/// that still is not success (verify's integrity findings).
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Keygen(a) => {
            let created = time::OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .context("cannot format the time")?
                .format(&time::format_description::well_known::Rfc3339)
                .context("cannot format the time")?;
            let id = keys::generate(&created);
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
            Ok(0)
        }
        Command::Seal(a) => {
            let recipients = recipients(&a)?;
            let report = seal::seal(seal::SealOptions {
                case_dir: a.case_dir.clone(),
                output: a.output.clone(),
                recipients,
                case_id: a.case_id.clone(),
                compression: match a.compress {
                    CompressArg::Zstd => Compression::Zstd,
                    CompressArg::None => Compression::None,
                },
                zstd_level: seal::DEFAULT_ZSTD_LEVEL,
                armor: a.armor,
                force: a.force,
            })?;
            if a.json {
                print_json(&report)?;
            } else {
                println!(
                    "sealed {}: {} files, {} bytes -> {} ({} bytes, sha256 {})",
                    report.case_id,
                    report.files,
                    report.payload_bytes,
                    sanitize(&report.vault.display().to_string()),
                    report.vault_bytes,
                    report.vault_sha256
                );
            }
            Ok(0)
        }
        Command::Unseal(a) => {
            let report = unseal::unseal(unseal::UnsealOptions {
                vault: a.vault,
                dest: a.output,
                identities: identities(&a.identity)?,
                allow_external_links: a.allow_external_links,
            })?;
            if a.json {
                print_json(&report)?;
            } else {
                println!(
                    "unsealed {}: {} files, {} bytes verified -> {}",
                    report.case_id,
                    report.files,
                    report.bytes,
                    sanitize(&report.dest.display().to_string())
                );
            }
            Ok(0)
        }
        Command::Verify(a) => {
            let ids = identities(&a.identity)?;
            let report = verify::verify(&a.vault, &ids)?;
            if a.json {
                print_json(&report)?;
            } else if report.ok {
                if report.contents_checked {
                    let side = match report.sidecar {
                        verify::Sidecar::Ok => "ok",
                        verify::Sidecar::Missing => "missing",
                        verify::Sidecar::Mismatch => "mismatch",
                    };
                    println!(
                        "OK {}: {} files, {} bytes verified; sidecar {side}",
                        report.case_id.as_deref().unwrap_or(""),
                        report.files.unwrap_or(0),
                        report.bytes.unwrap_or(0)
                    );
                } else {
                    println!("OK sidecar sha256 matches and age header parses; contents NOT checked (give -i IDENTITY to check every file)");
                }
            }
            if report.ok {
                Ok(0)
            } else {
                for p in &report.problems {
                    eprintln!(
                        "casevault: error: integrity failure: {}: {}",
                        sanitize(&a.vault.display().to_string()),
                        sanitize(p)
                    );
                }
                Ok(casevault::error::exit::INTEGRITY)
            }
        }
        Command::Sweep(a) => sweep(a),
        Command::Completions(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "casevault", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man(a) => man(a),
        Command::List(a) => {
            let report = verify::list(&a.vault, &identities(&a.identity)?)?;
            if a.json {
                print_json(&report)?;
            } else {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                for e in &report.entries {
                    let size = e.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                    let sha = e.sha256.as_deref().unwrap_or("-");
                    let name = match (&e.kind, &e.target) {
                        (Kind::Symlink, Some(t)) => {
                            format!("{} -> {}", sanitize(&e.path), sanitize(t))
                        }
                        _ => sanitize(&e.path),
                    };
                    writeln!(out, "{}\t{size}\t{sha}\t{name}", e.kind.as_str())?;
                }
            }
            Ok(0)
        }
    }
}

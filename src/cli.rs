//! Command-line interface: clap definitions, conversion into the library's
//! option structs, and output (human or `--json`). See docs/CLI.md.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use casevault::custody::{self, Custody, Event};
use casevault::format::{Compression, Kind};
use casevault::keys::{self, BoxedIdentity, BoxedRecipient};
use casevault::sanitize::sanitize;
use casevault::sign::SigningKey;
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
    /// Generate an age identity: X25519, or post-quantum with --pq
    /// (age-keygen format).
    Keygen(KeygenArgs),
    /// Seal a case directory into a vault.
    Seal(SealArgs),
    /// Decrypt a vault, check every byte, and restore the case folder.
    Unseal(UnsealArgs),
    /// Check a vault: every byte with -i, else its sidecar and header.
    Verify(VerifyArgs),
    /// Decrypt and check a vault, then list its entries.
    List(ListArgs),
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
    Rekey(RekeyArgs),
    /// Seal every new or changed case of an inbox into a vault store.
    ///
    /// For cron or a systemd timer; the set-up is in OPERATIONS.md, which the
    /// documented install puts in /usr/local/share/doc/casevault/ (docs/ in
    /// the source). Every immediate subdirectory of INBOX is a case (its name is the case id); hidden
    /// entries and non-directories are reported as skipped. A case is sealed
    /// to STORE/CASE/CASE.YYYYMMDDTHHMMSS.ffffffZ.vault (+ .sha256) unless it
    /// is unchanged since its last seal. Never prompts, never reads stdin.
    ///
    /// Exit codes: 0 every case sealed or unchanged, 1 some case failed (the
    /// others were still processed), 2 usage, 75 another sweep holds the
    /// store lock (nothing was done), 130/143 interrupted.
    Sweep(SweepArgs),
    /// Show or check a custody log (the chain of custody of vaults).
    #[command(subcommand)]
    Custody(CustodyCommand),
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
    /// Make a post-quantum identity (ML-KEM-768 + X25519, age1pq1…
    /// recipient), as `age-keygen -pq` does. Recommended for any case whose
    /// confidentiality must outlive the next decade.
    #[arg(long)]
    pq: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressArg {
    Zstd,
    None,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("recipients").required(true).multiple(true).args(["recipient", "recipients_file", "passphrase"]))]
struct SealArgs {
    /// The case directory to seal.
    case_dir: PathBuf,
    /// The vault file to write (VAULT.sha256 is written beside it).
    #[arg(short, long, value_name = "VAULT")]
    output: PathBuf,
    /// A recipient: age1pq1…, age1…, age1NAME1… (age plugin NAME on PATH),
    /// "ssh-ed25519 …" or "ssh-rsa …". Repeatable.
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    recipient: Vec<String>,
    /// A file of recipients, one per line (# comments). Repeatable.
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    recipients_file: Vec<PathBuf>,
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
    /// Write age's ASCII armor instead of binary.
    #[arg(long)]
    armor: bool,
    /// Replace an existing vault and sidecar.
    #[arg(long)]
    force: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Sign the vault with this OpenSSH private key: writes VAULT.sig
    /// (namespace casevault-vault) and casevault.sig inside the vault.
    #[arg(long, value_name = "SSH_PRIVATE_KEY")]
    sign: Option<PathBuf>,
    /// The principal recorded as signer (default: the key's comment).
    #[arg(long, value_name = "PRINCIPAL", requires = "sign")]
    signer: Option<String>,
    #[command(flatten)]
    custody: CustodyArgs,
    /// No progress bar (one is shown on stderr only when it is a terminal).
    #[arg(short, long)]
    quiet: bool,
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
        required_unless_present = "passphrase"
    )]
    identity: Vec<PathBuf>,
    /// The vault was sealed with --passphrase: ask for it on the terminal.
    #[arg(long, conflicts_with = "identity")]
    passphrase: bool,
    /// Use identity files that group or others can read (refused by
    /// default, like ssh does with private keys).
    #[arg(long)]
    allow_insecure_identity: bool,
    /// Recreate symlinks that point outside the case, verbatim (never
    /// written through).
    #[arg(long)]
    allow_external_links: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Sign the custody record with this OpenSSH private key.
    #[arg(long, value_name = "SSH_PRIVATE_KEY", requires = "custody")]
    sign: Option<PathBuf>,
    /// The principal recorded as signer (default: the key's comment).
    #[arg(long, value_name = "PRINCIPAL", requires = "sign")]
    signer: Option<String>,
    #[command(flatten)]
    custody: CustodyArgs,
    /// No progress bar (one is shown on stderr only when it is a terminal).
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// The vault to check.
    vault: PathBuf,
    /// Identity file; without one only the sidecar and header are checked.
    #[arg(short, long = "identity", value_name = "IDENTITY_FILE")]
    identity: Vec<PathBuf>,
    /// The vault was sealed with --passphrase: ask for it on the terminal
    /// and check every byte.
    #[arg(long, conflicts_with = "identity")]
    passphrase: bool,
    /// Use identity files that group or others can read (refused by
    /// default, like ssh does with private keys).
    #[arg(long)]
    allow_insecure_identity: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Check the vault's signatures against this OpenSSH allowed_signers
    /// file: VAULT.sig always, casevault.sig too with -i. A missing,
    /// invalid or untrusted signature is an integrity failure (exit 3).
    #[arg(long, value_name = "ALLOWED_SIGNERS_FILE")]
    signers: Option<PathBuf>,
    /// Accept only this principal (default: any principal in the file
    /// whose key made the signature and whose namespaces allow it).
    #[arg(long, value_name = "PRINCIPAL", requires = "signers")]
    signer: Option<String>,
    /// Sign the custody record with this OpenSSH private key.
    #[arg(long, value_name = "SSH_PRIVATE_KEY", requires = "custody")]
    sign: Option<PathBuf>,
    #[command(flatten)]
    custody: CustodyArgs,
    /// No progress bar (one is shown on stderr only when it is a terminal).
    #[arg(short, long)]
    quiet: bool,
}

/// `--custody`, `--actor`, `--reason` (seal, unseal, verify).
#[derive(Args)]
struct CustodyArgs {
    /// Append a custody record (JSON Lines, created with mode 0600) to LOG.
    #[arg(long, value_name = "LOG")]
    custody: Option<PathBuf>,
    /// Who acts, for the custody record (default: the account the process runs as, from the OS, @HOST).
    #[arg(long, value_name = "NAME", requires = "custody")]
    actor: Option<String>,
    /// Why, for the custody record (e.g. "disclosure to defence").
    #[arg(long, value_name = "TEXT", requires = "custody")]
    reason: Option<String>,
}

#[derive(Subcommand)]
enum CustodyCommand {
    /// Print a custody log, one record per line (does not check the chain).
    Show(CustodyShowArgs),
    /// Check a custody log's hash chain (and signatures), report the first
    /// broken link, and print the head hash.
    ///
    /// Exit codes: 0 intact, 1 error, 2 usage, 3 broken chain, bad,
    /// missing or untrusted signature, or --expect-head not in the chain.
    Verify(CustodyVerifyArgs),
}

#[derive(Args)]
struct CustodyShowArgs {
    /// The custody log.
    log: PathBuf,
    /// Print JSON Lines, one object per record (the stored lines).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CustodyVerifyArgs {
    /// The custody log.
    log: PathBuf,
    /// Require every record to carry a valid signature by a key this
    /// OpenSSH allowed_signers file trusts for namespace casevault-custody.
    #[arg(long, value_name = "ALLOWED_SIGNERS_FILE")]
    signers: Option<PathBuf>,
    /// Accept only this principal.
    #[arg(long, value_name = "PRINCIPAL", requires = "signers")]
    signer: Option<String>,
    /// A head hash kept earlier (64 hex digits): it must still be the
    /// SHA-256 of one of the log's intact lines, else exit 3.
    #[arg(long, value_name = "HASH", value_parser = parse_head)]
    expect_head: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// A SHA-256 in hex (either case), returned in lower case.
fn parse_head(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("expected 64 hexadecimal digits (a head sha256 printed by `custody verify`)".into())
    }
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("recipients").required(true).multiple(true).args(["recipient", "recipients_file"]))]
#[command(group = clap::ArgGroup::new("target").required(true).args(["output", "in_place"]))]
struct RekeyArgs {
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
    /// A recipient of the new vault: age1pq1…, age1…, "ssh-ed25519 …" or
    /// "ssh-rsa …". Repeatable.
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    recipient: Vec<String>,
    /// A file of recipients, one per line (# comments). Repeatable.
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    recipients_file: Vec<PathBuf>,
    /// Write age's ASCII armor instead of binary.
    #[arg(long)]
    armor: bool,
    /// Replace an existing NEW_VAULT.
    #[arg(long, conflicts_with = "in_place")]
    force: bool,
    /// Sign the new vault with this OpenSSH private key: NEW_VAULT.sig in
    /// namespace casevault-rekey, which says "re-encrypted by", not "sealed
    /// by". Requires --signers: VAULT's inner signature must be trusted.
    #[arg(long, value_name = "SSH_PRIVATE_KEY", requires = "signers")]
    sign: Option<PathBuf>,
    /// The principal recorded as signer (default: the key's comment).
    #[arg(long, value_name = "PRINCIPAL", requires = "sign")]
    signer: Option<String>,
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
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress bar (one is shown on stderr only when it is a terminal).
    #[arg(short, long)]
    quiet: bool,
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
        required_unless_present = "passphrase"
    )]
    identity: Vec<PathBuf>,
    /// The vault was sealed with --passphrase: ask for it on the terminal.
    #[arg(long, conflicts_with = "identity")]
    passphrase: bool,
    /// Use identity files that group or others can read (refused by
    /// default, like ssh does with private keys).
    #[arg(long)]
    allow_insecure_identity: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress bar (one is shown on stderr only when it is a terminal).
    #[arg(short, long)]
    quiet: bool,
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
    /// (then empty) directories from the inbox. Only what this run sealed
    /// is removed: an unchanged case is sealed again first.
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
    /// Sign each vault (VAULT.sig, casevault.sig) and each custody record
    /// with this unencrypted OpenSSH private key.
    #[arg(long, value_name = "SSH_PRIVATE_KEY")]
    sign: Option<PathBuf>,
    /// The principal recorded as signer (default: the key's comment).
    #[arg(long, value_name = "PRINCIPAL", requires = "sign")]
    signer: Option<String>,
    /// Append custody records (sealed, removed-source) to LOG instead of
    /// the default STORE/custody.jsonl. Not written by --dry-run.
    #[arg(long, value_name = "LOG", num_args = 0..=1, default_missing_value = SWEEP_CUSTODY)]
    custody: Option<PathBuf>,
    /// Keep no custody log (the default is STORE/custody.jsonl).
    #[arg(long, conflicts_with_all = ["custody", "actor", "reason"])]
    no_custody: bool,
    /// Who acts, for the custody records (default: the account the process runs as, from the OS, @HOST).
    #[arg(long, value_name = "NAME")]
    actor: Option<String>,
    /// Why, for the custody records.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
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
    #[arg(conflicts_with = "list")]
    command: Option<String>,
    /// List the subcommands that have a page of their own, one per line
    /// (for installing every casevault-COMMAND(1) page).
    #[arg(long)]
    list: bool,
}

fn man(a: ManArgs) -> anyhow::Result<i32> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    if a.list {
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            println!("{}", sub.get_name());
        }
        return Ok(0);
    }
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
                .bin_name(String::leak(format!("casevault {name}")) as &str)
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let usage = man_synopsis(&page);
    let page = page.override_usage(usage);
    clap_mangen::Man::new(page).render(&mut std::io::stdout())?;
    Ok(0)
}

/// The SYNOPSIS line of a man page: clap's usage with "[OPTIONS]" spelled
/// out, each option with its value placeholder (`[--keep <N>]`), which
/// clap_mangen's own synopsis leaves out.
fn man_synopsis(cmd: &clap::Command) -> String {
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage).to_string();
    let optional: Vec<String> = cmd
        .get_arguments()
        .filter(|a| {
            !a.is_hide_set()
                && !a.is_positional()
                && !a.is_required_set()
                && !matches!(
                    a.get_action(),
                    clap::ArgAction::Help | clap::ArgAction::Version
                )
                && !cmd
                    .get_groups()
                    .any(|g| g.is_required_set() && g.get_args().any(|id| id == a.get_id()))
        })
        .map(|a| {
            let mut flag = match (a.get_short(), a.get_long()) {
                (Some(s), Some(l)) => format!("-{s}|--{l}"),
                (Some(s), None) => format!("-{s}"),
                (None, Some(l)) => format!("--{l}"),
                (None, None) => String::new(),
            };
            if a.get_action().takes_values() {
                let names = a
                    .get_value_names()
                    .map(|v| v.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>())
                    .unwrap_or_else(|| vec![format!("<{}>", a.get_id().as_str().to_uppercase())]);
                let value = names.join(" ");
                if a.get_num_args().is_some_and(|n| n.min_values() == 0) {
                    flag.push_str(&format!(" [{value}]"));
                } else {
                    flag.push(' ');
                    flag.push_str(&value);
                }
            }
            format!("[{flag}]")
        })
        .collect();
    usage.replacen("[OPTIONS]", &optional.join(" "), 1)
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
        sign: signing_key(a.sign.as_deref(), a.signer.clone())?,
        custody: None,
    };
    let mut opts = opts;
    if !a.dry_run {
        // Issue #4/#5: sweep keeps a custody log by default.
        let log = match a.custody {
            _ if a.no_custody => None,
            Some(p) if p.as_os_str() != SWEEP_CUSTODY => Some(p),
            _ => Some(opts.store.join("custody.jsonl")),
        };
        opts.custody = custody_of(
            &CustodyArgs {
                custody: log,
                actor: a.actor,
                reason: a.reason,
            },
            opts.sign.as_ref(),
        );
    }
    let out = sweep::Output {
        json: a.json,
        quiet: a.quiet,
        log: a.log,
    };
    Ok(sweep::run(&opts, &out)?)
}

fn identities(paths: &[PathBuf], allow_insecure: bool) -> anyhow::Result<Vec<BoxedIdentity>> {
    let mut out = Vec::new();
    if paths.is_empty() {
        return Ok(out);
    }
    for p in paths {
        out.extend(keys::read_identity_file(p, allow_insecure)?);
    }
    Ok(out)
}

/// The identities that open a vault: `-i` files, or with `--passphrase` the
/// passphrase asked on the terminal (vaults sealed with `seal --passphrase`).
fn vault_identities(
    paths: &[PathBuf],
    passphrase: bool,
    allow_insecure: bool,
) -> anyhow::Result<Vec<BoxedIdentity>> {
    if passphrase {
        return Ok(vec![casevault::passphrase::vault_identity()?]);
    }
    identities(paths, allow_insecure)
}

fn recipients(args: &SealArgs) -> anyhow::Result<Vec<BoxedRecipient>> {
    if args.passphrase {
        // Alone by construction (clap conflicts), so age accepts it.
        return Ok(vec![Box::new(casevault::passphrase::recipient()?)]);
    }
    recipient_list(&args.recipient, &args.recipients_file)
}

/// Parse `-r` and `-R` recipients and refuse a set age would refuse (a
/// post-quantum recipient beside a classic one) before anything is written.
fn recipient_list(
    recipient: &[String],
    recipients_file: &[PathBuf],
) -> anyhow::Result<Vec<BoxedRecipient>> {
    let mut out = Vec::new();
    for r in recipient {
        out.push(
            keys::parse_recipient(r)
                .map_err(|e| Error::Refused(format!("recipient {:?}: {e}", sanitize(r))))?,
        );
    }
    for f in recipients_file {
        out.extend(keys::read_recipients_file(f)?);
    }
    keys::check_recipients(&out)?;
    Ok(out)
}

/// Show a progress bar on stderr when it is a terminal and not `--quiet`.
fn show_progress(quiet: bool, label: &str, total: impl FnOnce() -> Option<u64>) {
    use std::io::IsTerminal;
    if !quiet && std::io::stderr().is_terminal() {
        casevault::progress::enable(label, total());
    }
}

/// Bytes of regular files under `dir` (a quick stat walk, for the ETA).
fn case_bytes(dir: &std::path::Path) -> Option<u64> {
    let mut total = 0u64;
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let m = e.ok()?.metadata().ok()?;
        if m.is_file() {
            total += m.len();
        }
    }
    Some(total)
}

fn file_len(p: &std::path::Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
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
            Ok(0)
        }
        Command::Seal(a) => {
            let recipients = recipients(&a)?;
            let key = signing_key(a.sign.as_deref(), a.signer.clone())?;
            let custody = custody_of(&a.custody, key.as_ref());
            show_progress(a.quiet, "sealing", || case_bytes(&a.case_dir));
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
                collect_entries: false,
                sign: key,
                output_mode: seal::OUTPUT_MODE,
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
                if let (Some(sig), Some(signer)) = (&report.signature, &report.signer) {
                    println!(
                        "signed by {} ({}) -> {}",
                        sanitize(signer.principal.as_deref().unwrap_or("(no principal)")),
                        signer.fingerprint,
                        sanitize(&sig.display().to_string())
                    );
                }
            }
            Ok(record_after_success(
                custody.as_ref(),
                Event {
                    action: "sealed",
                    case_id: Some(report.case_id.clone()),
                    vault: Some(report.vault.clone()),
                    vault_sha256: Some(report.vault_sha256.clone()),
                    ok: true,
                },
                &format!("sealed {} -> {}", report.case_id, report.vault.display()),
                "the vault is fine",
            ))
        }
        Command::Unseal(a) => {
            let vault = a.vault.clone();
            show_progress(a.quiet, "unsealing", || file_len(&a.vault));
            let key = signing_key(a.sign.as_deref(), a.signer.clone())?;
            let custody = custody_of(&a.custody, key.as_ref());
            let res = unseal::unseal(unseal::UnsealOptions {
                vault: a.vault,
                dest: a.output,
                identities: vault_identities(&a.identity, a.passphrase, a.allow_insecure_identity)?,
                allow_external_links: a.allow_external_links,
            });
            let report = match res {
                Ok(r) => r,
                Err(e) => {
                    // A usage error (e.g. DEST's parent missing) touched no
                    // vault: nothing to record (issue #17 item 5).
                    if e.kind() != casevault::ErrorKind::Usage {
                        record_failure(custody.as_ref(), failed_event("unsealed", &vault));
                    }
                    return Err(
                        anyhow::Error::new(e).context(format!("cannot unseal {}", vault.display()))
                    );
                }
            };
            // The result first: a custody log that cannot take the record
            // does not hide what was restored (issue #10 item 5).
            warn_mtimes_not_stored(&report.mtimes_not_stored);
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
            Ok(record_after_success(
                custody.as_ref(),
                Event {
                    action: "unsealed",
                    case_id: Some(report.case_id.clone()),
                    vault: Some(vault.clone()),
                    vault_sha256: Some(report.vault_sha256.clone()),
                    ok: true,
                },
                &format!(
                    "unsealed and verified {}: {} files, {} bytes -> {}",
                    report.case_id,
                    report.files,
                    report.bytes,
                    report.dest.display()
                ),
                "the vault and the restored case are fine",
            ))
        }
        Command::Verify(a) => {
            let ids = vault_identities(&a.identity, a.passphrase, a.allow_insecure_identity)?;
            if !ids.is_empty() {
                show_progress(a.quiet, "verifying", || file_len(&a.vault));
            }
            let check = match &a.signers {
                Some(f) => Some(verify::SignatureCheck {
                    signers: casevault::allowed_signers::AllowedSigners::load(f)?,
                    principal: a.signer.clone(),
                }),
                None => None,
            };
            let key = signing_key(a.sign.as_deref(), None)?;
            let custody = custody_of(&a.custody, key.as_ref());
            let res = verify::verify_with(&a.vault, &ids, check.as_ref());
            if res.is_err() {
                record_failure(custody.as_ref(), failed_event("verified", &a.vault));
            }
            let report = match res {
                Ok(r) => r,
                Err(e) => {
                    // Scripts get their object on integrity failures too.
                    if a.json && e.kind() == casevault::ErrorKind::Integrity {
                        let (sidecar, sha) = match verify::check_sidecar(&a.vault) {
                            Ok((s, h)) => (serde_json::to_value(s)?, serde_json::Value::from(h)),
                            Err(_) => (serde_json::Value::Null, serde_json::Value::Null),
                        };
                        print_json(&serde_json::json!({
                            "vault": a.vault,
                            "ok": false,
                            "contents_checked": !ids.is_empty(),
                            "sidecar": sidecar,
                            "vault_sha256": sha,
                            "problems": verify::problems_of(&e),
                        }))?;
                    }
                    if pending_rekey(&a.vault).is_some() {
                        // Not "do not trust this vault": say what happened.
                        eprintln!(
                            "casevault: error: {}",
                            sanitize(&format!("cannot verify {}: {e}", a.vault.display()))
                        );
                        pending_rekey_hint(&a.vault);
                        return Ok(casevault::error::exit::code(e.kind()));
                    }
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot verify {}", a.vault.display())));
                }
            };
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
                    if let Some(n @ 1..) = report.external_links {
                        println!("note: {n} symlink(s) point outside the case; unseal recreates them only with --allow-external-links");
                    }
                    if let Some(n @ 1..) = report.looping_links {
                        println!("note: {n} symlink(s) loop (a cycle, or a chain of more than 40 links) and lead nowhere; unseal recreates them as they are");
                    }
                } else {
                    println!("OK sidecar sha256 matches and age header parses; contents NOT checked (give -i IDENTITY to check every file)");
                }
                print_signature(&report.signature);
            }
            let event = Event {
                action: "verified",
                case_id: report.case_id.clone(),
                vault: Some(a.vault.clone()),
                vault_sha256: Some(report.vault_sha256.clone()),
                ok: report.ok,
            };
            if report.ok {
                let what = if report.contents_checked {
                    format!(
                        "verified {}: {} files, {} bytes",
                        a.vault.display(),
                        report.files.unwrap_or(0),
                        report.bytes.unwrap_or(0)
                    )
                } else {
                    format!("verified {} (sidecar and header)", a.vault.display())
                };
                Ok(record_after_success(
                    custody.as_ref(),
                    event,
                    &what,
                    "the vault is fine",
                ))
            } else {
                for p in &report.problems {
                    eprintln!(
                        "casevault: error: integrity failure: {}: {}",
                        sanitize(&a.vault.display().to_string()),
                        sanitize(&p.to_string())
                    );
                }
                record_failure(custody.as_ref(), event);
                pending_rekey_hint(&a.vault);
                Ok(casevault::error::exit::INTEGRITY)
            }
        }
        Command::Sweep(a) => sweep(a),
        Command::Custody(c) => custody_command(c),
        Command::Completions(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "casevault", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man(a) => man(a),
        Command::Rekey(a) => rekey(a),
        Command::List(a) => {
            let ids = vault_identities(&a.identity, a.passphrase, a.allow_insecure_identity)?;
            show_progress(a.quiet, "checking", || file_len(&a.vault));
            let report = verify::list(&a.vault, &ids)
                .with_context(|| format!("cannot list {}", a.vault.display()))?;
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

// ---------------------------------------------------------------------------
// Signatures and custody (issue #5)
// ---------------------------------------------------------------------------

/// What a bare `sweep --custody` stands for: `custody.jsonl` in the store
/// (also the default without the flag).
const SWEEP_CUSTODY: &str = "STORE/custody.jsonl";

fn rekey(a: RekeyArgs) -> anyhow::Result<i32> {
    use casevault::rekey;
    let vault = a.vault.clone();
    // Two passes over the vault: check, then re-encrypt.
    show_progress(a.quiet, "rekeying", || file_len(&a.vault).map(|n| 2 * n));
    let key = signing_key(a.sign.as_deref(), a.signer.clone())?;
    let custody = custody_of(&a.custody, key.as_ref());
    let sealer = match &a.signers {
        Some(f) => Some(verify::SignatureCheck {
            signers: casevault::allowed_signers::AllowedSigners::load(f)?,
            principal: a.sealed_by.clone(),
        }),
        None => None,
    };
    // A rekey of this target that was interrupted during its commit is
    // finished (or its leftovers removed) first, and said so.
    if let Some(target) = a.output.as_ref().or(a.in_place.then_some(&a.vault)) {
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
    }
    let res = rekey::rekey(rekey::RekeyOptions {
        vault: a.vault,
        output: a.output,
        identities: identities(&a.identity, a.allow_insecure_identity)?,
        recipients: recipient_list(&a.recipient, &a.recipients_file)?,
        in_place: a.in_place,
        armor: a.armor,
        force: a.force,
        sign: key,
        sealer,
    });
    let report = match res {
        Ok(r) => r,
        Err(e) => {
            record_failure(custody.as_ref(), failed_event("re-encrypted", &vault));
            return Err(
                anyhow::Error::new(e).context(format!("cannot re-encrypt {}", vault.display()))
            );
        }
    };
    if a.json {
        print_json(&report)?;
    } else {
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
    Ok(record_after_success(
        custody.as_ref(),
        Event {
            action: "re-encrypted",
            case_id: Some(report.case_id.clone()),
            vault: Some(report.vault.clone()),
            vault_sha256: Some(report.vault_sha256.clone()),
            ok: true,
        },
        &format!(
            "re-encrypted {} -> {}",
            report.case_id,
            report.vault.display()
        ),
        "the new vault is fine",
    ))
}

fn signing_key(
    path: Option<&std::path::Path>,
    principal: Option<String>,
) -> anyhow::Result<Option<SigningKey>> {
    Ok(match path {
        Some(p) => Some(SigningKey::load(p, principal)?),
        None => None,
    })
}

fn custody_of(a: &CustodyArgs, key: Option<&SigningKey>) -> Option<Custody> {
    a.custody.as_ref().map(|log| Custody {
        log: log.clone(),
        actor: a.actor.clone().unwrap_or_else(custody::default_actor),
        reason: a.reason.clone(),
        sign: key.cloned(),
    })
}

/// The text of a custody append failure, without the "integrity failure"
/// prefix (that is about vaults; this is about the log).
fn custody_problem(e: &Error) -> String {
    match e {
        Error::Integrity(m) => m.to_string(),
        other => other.to_string(),
    }
}

/// Append the record of an operation that succeeded, after its result was
/// printed. If the record cannot be appended, say what succeeded and what
/// did not, and exit 1: a custody-log problem is not damage to the vault
/// (exit 3), and must not read as such (issue #10 item 5, docs/CLI.md).
fn record_after_success(c: Option<&Custody>, ev: Event, done: &str, fine: &str) -> i32 {
    let Some(c) = c else {
        return casevault::error::exit::OK;
    };
    match c.append(&ev) {
        Ok(_) => casevault::error::exit::OK,
        Err(e) => {
            eprintln!(
                "casevault: error: {}",
                sanitize(&format!(
                    "{done}, but the custody record could not be appended to {}: {}; {fine}",
                    c.log.display(),
                    custody_problem(&e)
                ))
            );
            eprintln!(
                "casevault: hint: the custody log needs attention, not the vault: run `casevault custody verify {}`, then append the missing record by hand or from a repaired log",
                sanitize(&c.log.display().to_string())
            );
            casevault::error::exit::ERROR
        }
    }
}

/// Append the record of an operation that failed: a failure to record is
/// printed, and the operation's own error decides the exit code.
fn record_failure(c: Option<&Custody>, ev: Event) {
    if let Some(c) = c {
        if let Err(e) = c.append(&ev) {
            eprintln!(
                "casevault: error: {}",
                sanitize(&format!(
                    "the custody record of this failure could not be appended to {}: {}",
                    c.log.display(),
                    custody_problem(&e)
                ))
            );
        }
    }
}

/// After a failed verify: if a rekey of this vault was interrupted during
/// its commit (`VAULT.sha256.pending` exists), say how to finish it.
fn pending_rekey_hint(vault: &std::path::Path) {
    if let Some(p) = pending_rekey(vault) {
        eprintln!(
            "casevault: hint: {} exists: a `casevault rekey` of this vault was interrupted while replacing it; run the same rekey command again, which finishes it (or checks and removes the leftovers) before anything else",
            sanitize(&p.display().to_string())
        );
    }
}

/// `VAULT.sha256.pending`, when it exists.
fn pending_rekey(vault: &std::path::Path) -> Option<PathBuf> {
    let mut p = casevault::io::sidecar_path(vault).into_os_string();
    p.push(casevault::rekey::PENDING_SUFFIX);
    let p = PathBuf::from(p);
    p.exists().then_some(p)
}

/// A record of a failed unseal or verify: the vault's hash if readable.
fn failed_event(action: &'static str, vault: &std::path::Path) -> Event {
    Event {
        action,
        case_id: None,
        vault: Some(vault.to_path_buf()),
        vault_sha256: casevault::io::sha256_file(vault)
            .ok()
            .map(|(d, _)| casevault::io::hex(&d)),
        ok: false,
    }
}

fn print_signature(s: &verify::SignatureReport) {
    let fp = |f: &Option<String>| f.clone().unwrap_or_default();
    if s.checked {
        if s.outer_role == Some("re-encrypted") {
            // rekey's signature (casevault-rekey): not who sealed the case.
            println!(
                "signature ok: VAULT.sig re-encrypted by {} ({}); who sealed the case only casevault.sig says (verify -i --signers)",
                sanitize(s.principal.as_deref().unwrap_or("")),
                fp(&s.fingerprint)
            );
        } else {
            println!(
                "signature ok: VAULT.sig by {} ({})",
                sanitize(s.principal.as_deref().unwrap_or("")),
                fp(&s.fingerprint)
            );
        }
        if s.inner_checked {
            println!(
                "inner signature ok: casevault.sig by {} ({})",
                sanitize(s.inner_principal.as_deref().unwrap_or("")),
                fp(&s.inner_fingerprint)
            );
        }
    } else if s.outer_present || s.inner_present {
        println!("signatures NOT checked (give --signers ALLOWED_SIGNERS_FILE to check who sealed this vault)");
    }
}

fn custody_command(c: CustodyCommand) -> anyhow::Result<i32> {
    use std::io::Write;
    match c {
        CustodyCommand::Show(a) => {
            let lines = custody::read_lines(&a.log)?;
            let mut out = std::io::stdout().lock();
            for (i, (bytes, _)) in lines.iter().enumerate() {
                let rec = custody::parse_line(bytes).map_err(|why| {
                    Error::integrity(format!("{} line {}: {why}", a.log.display(), i + 1))
                })?;
                if a.json {
                    out.write_all(bytes)?;
                    out.write_all(b"\n")?;
                    continue;
                }
                let opt = |v: &Option<String>| sanitize(v.as_deref().unwrap_or("-"));
                let signed = match &rec.signer {
                    Some(sg) => format!(
                        "signed {}",
                        sanitize(sg.principal.as_deref().unwrap_or(&sg.fingerprint))
                    ),
                    None => "unsigned".into(),
                };
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{signed}",
                    rec.seq,
                    sanitize(&rec.time),
                    sanitize(&rec.action),
                    sanitize(&rec.outcome),
                    opt(&rec.case_id),
                    opt(&rec.vault),
                    opt(&rec.vault_sha256),
                    sanitize(&rec.actor),
                    opt(&rec.reason),
                )?;
            }
            Ok(0)
        }
        CustodyCommand::Verify(a) => {
            let signers = match &a.signers {
                Some(f) => Some(casevault::allowed_signers::AllowedSigners::load(f)?),
                None => None,
            };
            let report = custody::verify_log_expecting(
                &a.log,
                signers.as_ref().map(|s| (s, a.signer.as_deref())),
                a.expect_head.as_deref(),
            )?;
            if a.json {
                print_json(&report)?;
            }
            if report.ok {
                if !a.json {
                    println!(
                        "OK {}: {} records, chain intact{}; head sha256 {}",
                        sanitize(&a.log.display().to_string()),
                        report.records,
                        if report.signatures_checked {
                            ", every record signed by a trusted key"
                        } else {
                            ""
                        },
                        report.head_sha256
                    );
                    if let (Some(h), Some(Some(n))) =
                        (&report.expected_head, report.expected_head_line)
                    {
                        println!("expected head {h} is line {n}");
                    }
                }
                Ok(0)
            } else if report.line.is_none() {
                eprintln!(
                    "casevault: error: integrity failure: {}: {}",
                    sanitize(&a.log.display().to_string()),
                    sanitize(report.problem.as_deref().unwrap_or(""))
                );
                eprintln!(
                    "casevault: hint: the chain itself is intact (head sha256 {}); compare with a backup of the log",
                    report.head_sha256
                );
                Ok(casevault::error::exit::INTEGRITY)
            } else {
                eprintln!(
                    "casevault: error: integrity failure: {} line {}: {}",
                    sanitize(&a.log.display().to_string()),
                    report.line.unwrap_or(0),
                    sanitize(report.problem.as_deref().unwrap_or(""))
                );
                eprintln!(
                    "casevault: hint: records 1 to {} are intact (head sha256 {}); compare the head with the one recorded in the case file",
                    report.records, report.head_sha256
                );
                Ok(casevault::error::exit::INTEGRITY)
            }
        }
    }
}

//! Flags shared by several commands, declared once and flattened into each
//! command's arguments (`#[command(flatten)]`), and their conversion into
//! the library's types. Where one command words a shared flag's help
//! differently, it says so with `mut_arg` beside its own arguments.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use casevault::custody::{self, Custody};
use casevault::format::Compression;
use casevault::keys::{self, BoxedIdentity, BoxedRecipient};
use casevault::recipients::Recipients;
use casevault::sign::SigningKey;

/// `-i`, `--passphrase`, `--allow-insecure-identity`: what opens a vault.
/// Commands that need one say `required_unless_present("passphrase")` on
/// `identity` with `mut_arg`.
#[derive(Args)]
pub struct IdentityArgs {
    /// Identity file (age or unencrypted OpenSSH). Repeatable.
    #[arg(short, long = "identity", value_name = "IDENTITY_FILE")]
    pub identity: Vec<PathBuf>,
    /// The vault was sealed with --passphrase: ask for it on the terminal.
    #[arg(long, conflicts_with = "identity")]
    pub passphrase: bool,
    /// Use identity files that group or others can read (refused by
    /// default, like ssh does with private keys).
    #[arg(long)]
    pub allow_insecure_identity: bool,
}

impl IdentityArgs {
    /// The identities that open a vault: `-i` files, or with `--passphrase`
    /// the passphrase asked on the terminal (vaults sealed with
    /// `seal --passphrase`).
    pub fn load(&self) -> anyhow::Result<Vec<BoxedIdentity>> {
        if self.passphrase {
            return Ok(vec![casevault::passphrase::vault_identity()?]);
        }
        identities(&self.identity, self.allow_insecure_identity)
    }
}

/// `-i` files (no passphrase), e.g. rekey's.
pub fn identities(paths: &[PathBuf], allow_insecure: bool) -> anyhow::Result<Vec<BoxedIdentity>> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(keys::read_identity_file(p, allow_insecure)?);
    }
    Ok(out)
}

/// `-r`, `-R`: who a new vault is sealed to.
#[derive(Args)]
pub struct RecipientArgs {
    /// A recipient: age1pq1…, age1…, age1NAME1… (age plugin NAME on PATH),
    /// "ssh-ed25519 …" or "ssh-rsa …". Repeatable.
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    pub recipient: Vec<String>,
    /// A file of recipients, one per line (# comments). Repeatable.
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    pub recipients_file: Vec<PathBuf>,
}

impl RecipientArgs {
    /// Parse `-r` and `-R` (each file read once) and refuse a set age would
    /// refuse (a post-quantum recipient beside a classic one) before
    /// anything is written.
    pub fn load(&self) -> anyhow::Result<Vec<BoxedRecipient>> {
        Ok(Recipients::load(&self.recipient, &self.recipients_file)?.parse()?)
    }
}

/// `--sign`, `--signer`: sign what the command writes.
#[derive(Args)]
pub struct SignArgs {
    /// Sign with this OpenSSH private key.
    #[arg(long, value_name = "SSH_PRIVATE_KEY")]
    pub sign: Option<PathBuf>,
    /// The principal recorded as signer (default: the key's comment).
    #[arg(long, value_name = "PRINCIPAL", requires = "sign")]
    pub signer: Option<String>,
}

impl SignArgs {
    pub fn key(&self) -> anyhow::Result<Option<SigningKey>> {
        signing_key(self.sign.as_deref(), self.signer.clone())
    }
}

pub fn signing_key(
    path: Option<&Path>,
    principal: Option<String>,
) -> anyhow::Result<Option<SigningKey>> {
    Ok(match path {
        Some(p) => Some(SigningKey::load(p, principal)?),
        None => None,
    })
}

/// `--json`, `-q`.
#[derive(Args)]
pub struct OutputArgs {
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (one is shown on stderr only when it is a terminal).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--custody`, `--actor`, `--reason` (seal, unseal, verify, rekey).
#[derive(Args)]
pub struct CustodyArgs {
    /// Append a custody record (JSON Lines, created with mode 0600) to LOG.
    #[arg(long, value_name = "LOG")]
    pub custody: Option<PathBuf>,
    /// Who acts, for the custody record (default: the account the process runs as, from the OS, @HOST).
    #[arg(long, value_name = "NAME", requires = "custody")]
    pub actor: Option<String>,
    /// Why, for the custody record (e.g. "disclosure to defence").
    #[arg(long, value_name = "TEXT", requires = "custody")]
    pub reason: Option<String>,
}

impl CustodyArgs {
    /// The log to append to, if `--custody`, signed with `key`.
    pub fn custody(&self, key: Option<&SigningKey>) -> Option<Custody> {
        custody_of(
            self.custody.clone(),
            self.actor.clone(),
            self.reason.clone(),
            key,
        )
    }
}

pub fn custody_of(
    log: Option<PathBuf>,
    actor: Option<String>,
    reason: Option<String>,
    key: Option<&SigningKey>,
) -> Option<Custody> {
    log.map(|log| Custody {
        log,
        actor: actor.unwrap_or_else(custody::default_actor),
        reason,
        sign: key.cloned(),
    })
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressArg {
    Zstd,
    None,
}

impl From<CompressArg> for Compression {
    fn from(c: CompressArg) -> Compression {
        match c {
            CompressArg::Zstd => Compression::Zstd,
            CompressArg::None => Compression::None,
        }
    }
}

/// Show a progress bar on stderr when it is a terminal and not `--quiet`.
pub fn show_progress(quiet: bool, label: &str, total: impl FnOnce() -> Option<u64>) {
    use std::io::IsTerminal;
    if !quiet && std::io::stderr().is_terminal() {
        casevault::progress::enable(label, total());
    }
}

/// Bytes of regular files under `dir` (a quick stat walk, for the ETA).
pub fn case_bytes(dir: &Path) -> Option<u64> {
    let mut total = 0u64;
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let m = e.ok()?.metadata().ok()?;
        if m.is_file() {
            total += m.len();
        }
    }
    Some(total)
}

pub fn file_len(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

pub fn print_json<T: serde::Serialize>(v: &T) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)
}

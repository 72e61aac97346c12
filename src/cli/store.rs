//! `casevault store audit|push`: whole vault stores, local or S3 (issue #13).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use casevault::allowed_signers::AllowedSigners;
use casevault::sanitize::sanitize;
use casevault::store::audit::{self, AuditOptions, AuditRecord};
use casevault::store::push::{self, PushOptions, PushRecord, PushStatus};
use casevault::store::{parse_duration, LockMode, RetentionPlan, Store};
use casevault::verify::SignatureCheck;

use super::args::{print_json, signing_key, CustodyArgs};
use super::Exit;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Check every vault of a store without any key.
    ///
    /// STORE is a directory or s3://BUCKET[/PREFIX]. For every vault
    /// (CASE/CASE.TIMESTAMP.vault): the vault is read back and re-hashed
    /// against its .sha256 sidecar; with --signers its VAULT.sig must verify
    /// and be trusted; in S3, the Object Lock retention of the vault,
    /// sidecar and signature objects is read back (and, with --min-retain,
    /// must last at least that long from now). One line (or JSON object)
    /// per vault, then a summary. Memory does not grow with the store.
    ///
    /// Exit codes: 0 every vault checks out, 1 error (the store or server
    /// cannot be read; the audit stops), 2 usage, 3 some vault failed.
    Audit(AuditArgs),
    /// Copy every vault that DST lacks from SRC to DST (off-site copy).
    ///
    /// SRC and DST are directories or s3://BUCKET[/PREFIX]. Each copy: the
    /// source's sidecar is read first; the vault streams to DST and is
    /// published only if it hashes to that sidecar; it is then read back
    /// from DST and hashed again; then its .sig and .sha256 follow.
    /// Vaults complete in DST are skipped, so a second push copies nothing.
    /// To an S3 bucket every object is put under Object Lock retention
    /// (--retain, or the bucket's default), read back after writing; a
    /// bucket with Object Lock off is refused unless --no-retention.
    ///
    /// Exit codes: 0 done, 1 error (the push stops), 2 usage, 3 some vault
    /// did not match its sidecar (not copied).
    Push(PushArgs),
}

#[derive(Args)]
pub struct AuditArgs {
    /// The store: a directory or s3://BUCKET[/PREFIX].
    store: PathBuf,
    /// Check each VAULT.sig against this OpenSSH allowed_signers file; a
    /// missing, invalid or untrusted signature is a failure.
    #[arg(long, value_name = "ALLOWED_SIGNERS_FILE")]
    signers: Option<PathBuf>,
    /// Accept only this principal (default: any principal in the file).
    #[arg(long, value_name = "PRINCIPAL", requires = "signers")]
    accept_signer: Option<String>,
    /// S3 stores: every object must be under Object Lock retention for at
    /// least this long from now (e.g. 7y, 30d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    min_retain: Option<i64>,
    /// One JSON object per vault, then a summary object (JSON Lines).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LockModeArg {
    Compliance,
    Governance,
}

impl From<LockModeArg> for LockMode {
    fn from(m: LockModeArg) -> LockMode {
        match m {
            LockModeArg::Compliance => LockMode::Compliance,
            LockModeArg::Governance => LockMode::Governance,
        }
    }
}

/// `--retain`, `--lock-mode`, `--no-retention` (sweep and store push to S3).
#[derive(Args)]
pub struct RetentionArgs {
    /// S3: put every object written under Object Lock retention for this
    /// long (e.g. 7y, 30d); default: the bucket's default retention.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retain: Option<i64>,
    /// S3: the Object Lock mode of --retain.
    #[arg(long, value_enum, default_value = "compliance", requires = "retain")]
    pub lock_mode: LockModeArg,
    /// S3: write without Object Lock retention (a bucket with Object Lock
    /// off, or no default retention, is otherwise refused).
    #[arg(long, conflicts_with = "retain")]
    pub no_retention: bool,
}

impl RetentionArgs {
    /// The plan for writing to `store`.
    pub fn plan(&self, store: &Store) -> anyhow::Result<RetentionPlan> {
        match store {
            Store::Local(_) => {
                if self.retain.is_some() {
                    anyhow::bail!(casevault::Error::Usage(
                        "--retain applies to S3 stores (Object Lock); a directory has no retention"
                            .into()
                    ));
                }
                Ok(RetentionPlan::None)
            }
            #[cfg(feature = "s3")]
            Store::S3(loc) => Ok(casevault::store::plan_retention(
                loc,
                self.retain,
                self.lock_mode.into(),
                self.no_retention,
            )?),
        }
    }
}

#[derive(Args)]
pub struct PushArgs {
    /// Where the vaults are: a directory or s3://BUCKET[/PREFIX].
    src: PathBuf,
    /// Where they go: a directory or s3://BUCKET[/PREFIX].
    dst: PathBuf,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Say what would be copied; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write PERCENT % of parity beside each copy (VAULT.par, FORMAT §15),
    /// computed from the source. Without it a source's VAULT.par is
    /// copied with its vault.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(1..=100))]
    parity: Option<u32>,
    /// One JSON object per vault, then a summary object (JSON Lines).
    #[arg(long)]
    json: bool,
    /// Sign the custody records with this OpenSSH private key.
    #[arg(long, value_name = "SSH_PRIVATE_KEY", requires = "custody")]
    sign: Option<PathBuf>,
    #[command(flatten)]
    custody: CustodyArgs,
}

pub fn run(c: StoreCommand) -> anyhow::Result<Exit> {
    match c {
        StoreCommand::Audit(a) => run_audit(a),
        StoreCommand::Push(a) => run_push(a),
    }
}

fn run_audit(a: AuditArgs) -> anyhow::Result<Exit> {
    let store = Store::parse(&a.store)?;
    let opts = AuditOptions {
        signatures: match &a.signers {
            Some(f) => Some(SignatureCheck {
                signers: AllowedSigners::load(f)?,
                principal: a.accept_signer.clone(),
            }),
            None => None,
        },
        min_retain: a.min_retain,
    };
    let json = a.json;
    let sum = audit::audit(&store, &opts, &mut |r| {
        print_audit(json, r).map_err(|e| casevault::Error::Refused(format!("cannot print: {e}")))
    })?;
    if json {
        print_json(&sum)?;
    } else {
        println!(
            "audit {}: {} vaults, {} ok, {} failed",
            sanitize(&sum.store),
            sum.vaults,
            sum.ok,
            sum.failed
        );
    }
    Ok(if sum.failed > 0 {
        Exit::Integrity
    } else {
        Exit::Success
    })
}

fn print_audit(json: bool, r: &AuditRecord) -> std::io::Result<()> {
    if json {
        return print_json(r);
    }
    let ret = r
        .retention
        .iter()
        .find(|o| o.object == "vault")
        .map(|o| match (&o.mode, &o.until) {
            (Some(m), Some(u)) => format!(" retained {m} until {u}"),
            _ => " not retained".into(),
        })
        .unwrap_or_default();
    if r.ok {
        let signer = r
            .signer
            .as_ref()
            .map(|s| format!(" signed by {s}"))
            .unwrap_or_default();
        println!(
            "ok {} sha256 {}{signer}{ret}",
            sanitize(&r.vault),
            r.sha256.as_deref().unwrap_or("-")
        );
    } else {
        println!(
            "FAILED {}: {}",
            sanitize(&r.vault),
            sanitize(&r.problems.join("; "))
        );
    }
    Ok(())
}

fn run_push(a: PushArgs) -> anyhow::Result<Exit> {
    let src = Store::parse(&a.src)?;
    let dst = Store::parse(&a.dst)?;
    if src.display() == dst.display() {
        return Err(casevault::Error::Usage("SRC and DST are the same store".into()).into());
    }
    let retention = a.retention.plan(&dst)?;
    let key = signing_key(a.sign.as_deref(), None)?;
    let opts = PushOptions {
        dry_run: a.dry_run,
        retention,
        custody: a.custody.custody(key.as_ref()),
        parity: a.parity,
    };
    let json = a.json;
    let sum = push::push(&src, &dst, &opts, &mut |r| {
        print_push(json, r).map_err(|e| casevault::Error::Refused(format!("cannot print: {e}")))
    })?;
    if json {
        print_json(&sum)?;
    } else {
        println!(
            "push: {} vaults, {} {}, {} already there, {} failed",
            sum.vaults,
            sum.copied,
            if sum.dry_run {
                "would be copied"
            } else {
                "copied"
            },
            sum.present,
            sum.failed
        );
    }
    Ok(if sum.failed > 0 {
        Exit::Integrity
    } else {
        Exit::Success
    })
}

fn print_push(json: bool, r: &PushRecord) -> std::io::Result<()> {
    if json {
        return print_json(r);
    }
    let (v, to) = (sanitize(&r.vault), sanitize(&r.to));
    match r.status {
        PushStatus::Copied => println!("copied {v} -> {to}"),
        PushStatus::Completed => println!("completed {to} (its sidecar was missing)"),
        PushStatus::WouldCopy => println!("would copy {v} -> {to}"),
        PushStatus::Present => {}
        PushStatus::Failed => println!("FAILED {v}: {}", sanitize(&r.problems.join("; "))),
    }
    Ok(())
}

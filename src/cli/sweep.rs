//! `casevault sweep`: the library runs the sweep and hands each record and
//! the summary to [`Printer`]; what is printed, logged, and the exit code
//! are decided here, as for every command.

use std::path::PathBuf;

use clap::Args;

use casevault::sanitize::sanitize;
use casevault::seal;
use casevault::sweep::{self, Outcome};

use super::args::{custody_of, CompressArg, OutputArgs, RecipientArgs, SignArgs};
use super::sweep_report::{log_unfinished, Printer};
use super::Exit;

/// What a bare `sweep --custody` stands for: `custody.jsonl` in the store
/// (also the default without the flag).
const SWEEP_CUSTODY: &str = "STORE/custody.jsonl";

#[derive(Args)]
#[command(group = clap::ArgGroup::new("recipients").required(true).multiple(true).args(["recipient", "recipients_file"]))]
#[command(mut_arg("json", |a| a.help("Print JSON Lines (one object per entry, then a summary)").conflicts_with("quiet")))]
#[command(mut_arg("quiet", |a| a.help("Print nothing on stdout; failures still go to stderr")))]
#[command(mut_arg("sign", |a| a.help("Sign each vault (VAULT.sig, casevault.sig) and each custody record with this unencrypted OpenSSH private key")))]
pub struct SweepArgs {
    /// The inbox: one subdirectory per case.
    inbox: PathBuf,
    /// The vault store (must exist).
    #[arg(short, long, value_name = "STORE")]
    output: PathBuf,
    #[command(flatten)]
    recipients: RecipientArgs,
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
    #[command(flatten)]
    output_args: OutputArgs,
    /// Say what would be sealed, removed or pruned; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Compression of the tar stream inside each vault.
    #[arg(long, value_enum, default_value = "zstd", value_name = "zstd|none")]
    compress: CompressArg,
    /// Write PERCENT % of parity beside each vault (VAULT.par; in an S3
    /// store the object KEY.par), for `casevault repair` (FORMAT §15).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(1..=100))]
    parity: Option<u32>,
    #[command(flatten)]
    sign: SignArgs,
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
    #[command(flatten)]
    retention: super::store::RetentionArgs,
    /// S3 stores: the directory of the sweep lock, state and default
    /// custody log (default: $STATE_DIRECTORY, else $XDG_STATE_HOME or
    /// ~/.local/state, then casevault/sweep/BUCKET[+PREFIX]).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

pub fn run(a: SweepArgs) -> anyhow::Result<Exit> {
    let sign = a.sign.key()?;
    // Issue #4/#5: sweep keeps a custody log by default; a dry run none.
    let remote = casevault::source::is_remote(&a.output);
    if !remote
        && (a.retention.retain.is_some() || a.retention.no_retention || a.state_dir.is_some())
    {
        return Err(casevault::Error::Usage(
            "--retain, --no-retention and --state-dir apply to S3 stores (-o s3://BUCKET/PREFIX)"
                .into(),
        )
        .into());
    }
    // An S3 store keeps its lock, state and default custody log locally.
    let home = if remote {
        state_dir_of(&a.output, a.state_dir.as_deref())?
    } else {
        a.output.clone()
    };
    let log = match a.custody {
        _ if a.no_custody || a.dry_run => None,
        Some(p) if p.as_os_str() != SWEEP_CUSTODY => Some(p),
        _ => Some(home.join("custody.jsonl")),
    };
    let custody = custody_of(log, a.actor, a.reason, sign.as_ref());
    let opts = sweep::SweepOptions {
        inbox: a.inbox,
        store: a.output,
        // Recipient order does not matter to age: -r first, then -R.
        recipients: a.recipients.recipient,
        recipients_files: a.recipients.recipients_file,
        remove_source: a.remove_source,
        keep: a.keep.map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
        dry_run: a.dry_run,
        compression: a.compress.into(),
        zstd_level: seal::DEFAULT_ZSTD_LEVEL,
        parity: a.parity,
        sign,
        custody,
        retain: a.retention.retain,
        lock_mode: a.retention.lock_mode.into(),
        no_retention: a.retention.no_retention,
        state_dir: remote.then_some(home),
    };
    let mut printer = Printer::new(a.output_args.json, a.output_args.quiet, a.log.clone());
    let res = sweep::run(&opts, &mut printer);
    let exit = match &res {
        Ok(Outcome::Finished { failed: false }) => Exit::Success,
        Ok(Outcome::Finished { failed: true }) => Exit::Error,
        Ok(Outcome::Busy(msg)) => {
            eprintln!("casevault: error: {}", sanitize(msg));
            eprintln!(
                "casevault: hint: the lock is released when that sweep ends; try again later"
            );
            Exit::Busy
        }
        Err(e) => e.kind().into(),
    };
    // Every run that is not a dry run leaves exactly one summary record in
    // --log, with its exit code: also a run that found the store locked
    // ("busy": true, exit 75) or could not start ("error"), so that
    // monitoring sees repeated contention and broken set-ups in the log
    // alone.
    if let (Some(log), false, false) = (&a.log, printer.summarized, opts.dry_run) {
        let error = match &res {
            Ok(Outcome::Busy(msg)) => msg.clone(),
            Ok(Outcome::Finished { .. }) => "the run ended before its summary".to_string(),
            Err(e) => e.to_string(),
        };
        log_unfinished(log, exit.code(), exit == Exit::Busy, &error);
    }
    res?;
    Ok(exit)
}

/// The state directory of an S3 sweep: `--state-dir`, or the default.
fn state_dir_of(
    store: &std::path::Path,
    given: Option<&std::path::Path>,
) -> anyhow::Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d.to_path_buf());
    }
    #[cfg(feature = "s3")]
    {
        let loc = casevault::s3::Location::of_path(store).expect("an s3:// store")?;
        Ok(casevault::sweep::default_state_dir(&loc)?)
    }
    #[cfg(not(feature = "s3"))]
    Err(casevault::Error::Refused(format!(
        "{}: this casevault was built without S3 support (cargo feature `s3`)",
        store.display()
    ))
    .into())
}

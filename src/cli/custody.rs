//! `casevault custody show|verify`: print or check a custody log.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use casevault::allowed_signers::AllowedSigners;
use casevault::custody::{self, Record};
use casevault::sanitize::sanitize;
use casevault::Error;

use super::args::print_json;
use super::Exit;

#[derive(Subcommand)]
pub enum CustodyCommand {
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
pub struct CustodyShowArgs {
    /// The custody log.
    log: PathBuf,
    /// Print JSON Lines, one object per record (the stored lines).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CustodyVerifyArgs {
    /// The custody log.
    log: PathBuf,
    /// Require every record to carry a valid signature by a key this
    /// OpenSSH allowed_signers file trusts for namespace casevault-custody.
    #[arg(long, value_name = "ALLOWED_SIGNERS_FILE")]
    signers: Option<PathBuf>,
    /// Accept only this principal.
    // Named as on verify (issue #11); `--signer` stays a hidden alias for
    // a release.
    #[arg(
        long = "accept-signer",
        alias = "signer",
        value_name = "PRINCIPAL",
        requires = "signers"
    )]
    accept_signer: Option<String>,
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

pub fn run(c: CustodyCommand) -> anyhow::Result<Exit> {
    match c {
        CustodyCommand::Show(a) => show(a),
        CustodyCommand::Verify(a) => verify(a),
    }
}

fn show(a: CustodyShowArgs) -> anyhow::Result<Exit> {
    let lines = custody::read_lines(&a.log)?;
    let mut out = std::io::stdout().lock();
    for (i, (bytes, _)) in lines.iter().enumerate() {
        let rec = custody::parse_line(bytes).map_err(|why| {
            Error::integrity(format!("{} line {}: {why}", a.log.display(), i + 1))
        })?;
        if a.json {
            out.write_all(bytes)?;
            out.write_all(b"\n")?;
        } else {
            writeln!(out, "{}", text_line(&rec))?;
        }
    }
    Ok(Exit::Success)
}

/// One record as a tab-separated line.
fn text_line(rec: &Record) -> String {
    let opt = |v: &Option<String>| sanitize(v.as_deref().unwrap_or("-"));
    let signed = match &rec.signer {
        Some(sg) => format!(
            "signed {}",
            sanitize(sg.principal.as_deref().unwrap_or(&sg.fingerprint))
        ),
        None => "unsigned".into(),
    };
    format!(
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
    )
}

fn verify(a: CustodyVerifyArgs) -> anyhow::Result<Exit> {
    let signers = match &a.signers {
        Some(f) => Some(AllowedSigners::load(f)?),
        None => None,
    };
    let report = custody::verify_log_expecting(
        &a.log,
        signers.as_ref().map(|s| (s, a.accept_signer.as_deref())),
        a.expect_head.as_deref(),
    )?;
    if a.json {
        print_json(&report)?;
    }
    if !report.ok {
        report_broken(&a.log, &report);
        return Ok(Exit::Integrity);
    }
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
        if let (Some(h), Some(Some(n))) = (&report.expected_head, report.expected_head_line) {
            println!("expected head {h} is line {n}");
        }
    }
    Ok(Exit::Success)
}

/// Say on stderr where the chain breaks (or why the whole log fails).
fn report_broken(log: &Path, report: &custody::ChainReport) {
    let log = sanitize(&log.display().to_string());
    let problem = sanitize(report.problem.as_deref().unwrap_or(""));
    match report.line {
        None => {
            eprintln!("casevault: error: integrity failure: {log}: {problem}");
            eprintln!(
                "casevault: hint: the chain itself is intact (head sha256 {}); compare with a backup of the log",
                report.head_sha256
            );
        }
        Some(line) => {
            eprintln!("casevault: error: integrity failure: {log} line {line}: {problem}");
            eprintln!(
                "casevault: hint: records 1 to {} are intact (head sha256 {}); compare the head with the one recorded in the case file",
                report.records, report.head_sha256
            );
        }
    }
}

//! The custody log (issue #5, FORMAT §11): one JSON Lines record per event
//! (sealed, verified, unsealed, re-encrypted, removed-source), each naming
//! the SHA-256 of the line before it, optionally signed (SSHSIG, namespace
//! `casevault-custody`). Appends are locked, single writes, fsynced.
//!
//! The log holds metadata only: case ids, vault names and hashes, actors,
//! hosts, reasons. It never holds contents.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::allowed_signers::AllowedSigners;
use crate::format::Signer;
use crate::io::hex;
use crate::sign::{self, SigningKey};
use crate::{Error, Result};

/// `prev` of the first record: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest line we read back (a record with a signature is ~1 KiB; RSA
/// signatures and long reasons stay far below this).
const MAX_LINE: usize = 1 << 20;

/// One custody record, in the field order of its line (FORMAT §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1 for the first line, then +1 per line.
    pub seq: u64,
    /// UTC time of the event, RFC 3339 with `Z`.
    pub time: String,
    /// `sealed`, `verified`, `unsealed`, `re-encrypted`, `removed-source`.
    pub action: String,
    /// Who (`--actor`, default `user@host`).
    pub actor: String,
    /// The host the event happened on.
    pub host: String,
    pub case_id: Option<String>,
    /// The vault's file name (no directory).
    pub vault: Option<String>,
    /// SHA-256 of the vault file.
    pub vault_sha256: Option<String>,
    /// `ok` or `failed`.
    pub outcome: String,
    /// `--reason`, free text.
    pub reason: Option<String>,
    /// SHA-256 (hex) of the previous line without its LF; [`GENESIS`] first.
    pub prev: String,
    /// The signing key, on signed records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
    /// Armored SSHSIG over this line without `sig` (FORMAT §11); always last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// What happened, as the command that appends knows it.
#[derive(Debug, Clone)]
pub struct Event {
    pub action: &'static str,
    pub case_id: Option<String>,
    /// The vault's path; only its file name is recorded.
    pub vault: Option<PathBuf>,
    pub vault_sha256: Option<String>,
    pub ok: bool,
}

/// Where and how to record events (`--custody`, `--actor`, `--reason`,
/// `--sign`).
#[derive(Debug, Clone)]
pub struct Custody {
    pub log: PathBuf,
    pub actor: String,
    pub reason: Option<String>,
    pub sign: Option<SigningKey>,
}

/// The host name (uname nodename).
pub fn host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The default actor: `ACCOUNT@host`, the account the process runs as
/// (effective uid) as the operating system names it (`getpwuid`, so NSS
/// accounts work too), or `uid-N@host` when it has no name. Never taken
/// from `$USER`/`$LOGNAME`, which any caller can set to anything.
pub fn default_actor() -> String {
    let uid = nix::unistd::geteuid();
    let user = match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) if !u.name.is_empty() => u.name,
        _ => format!("uid-{uid}"),
    };
    format!("{user}@{}", host())
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
        .expect("formatting a UTC time cannot fail")
}

/// The exact line of a record, without LF. For a signed record this is
/// the unsigned line with `,"sig":"…"` inserted before the final `}`.
pub fn line_of(rec: &Record) -> String {
    serde_json::to_string(rec).expect("serialising a record cannot fail")
}

/// The bytes a record's `sig` signs: its stored line with the trailing
/// `,"sig":STRING}` replaced by `}` (FORMAT §11). `None` when the line does
/// not end that way (sig missing, not last, or not in canonical form).
pub fn signed_bytes(line: &str, sig: &str) -> Option<String> {
    let tail = format!(
        ",\"sig\":{}}}",
        serde_json::to_string(sig).expect("serialising a string cannot fail")
    );
    line.strip_suffix(&tail).map(|head| format!("{head}}}"))
}

impl Custody {
    /// Append one record for `ev`: lock the log, read its last line for
    /// `seq` and `prev`, write the new line in one `write`, fsync, unlock.
    pub fn append(&self, ev: &Event) -> Result<Record> {
        let log = &self.log;
        let f = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(log)
            .map_err(|e| Error::io("cannot open custody log", log, e))?;
        // Held until `f` is closed at the end of this function.
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io("cannot lock custody log", log, e.into()))?;
        let meta = f
            .metadata()
            .map_err(|e| Error::io("cannot stat custody log", log, e))?;
        if !meta.is_file() {
            return Err(Error::Refused(format!(
                "custody log {} is not a regular file",
                log.display()
            )));
        }
        let (last_seq, prev) = last_record(&f, meta.len(), log)?;
        let mut rec = Record {
            seq: last_seq + 1,
            time: now(),
            action: ev.action.to_string(),
            actor: self.actor.clone(),
            host: host(),
            case_id: ev.case_id.clone(),
            vault: ev
                .vault
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
            vault_sha256: ev.vault_sha256.clone(),
            outcome: if ev.ok { "ok" } else { "failed" }.into(),
            reason: self.reason.clone(),
            prev,
            signer: self.sign.as_ref().map(|k| k.signer()),
            sig: None,
        };
        if let Some(key) = &self.sign {
            let unsigned = line_of(&rec);
            rec.sig = Some(key.sign(sign::NS_CUSTODY, unsigned.as_bytes())?);
        }
        let mut line = line_of(&rec);
        line.push('\n');
        (&f).write_all(line.as_bytes())
            .map_err(|e| Error::io("cannot append to custody log", log, e))?;
        f.sync_data()
            .map_err(|e| Error::io("cannot sync custody log", log, e))?;
        if meta.len() == 0 {
            crate::io::sync_parent_dir(log)?;
        }
        Ok(rec)
    }
}

/// `seq` and SHA-256 of the last line (`(0, GENESIS)` for an empty log).
fn last_record(f: &fs::File, len: u64, log: &Path) -> Result<(u64, String)> {
    if len == 0 {
        return Ok((0, GENESIS.to_string()));
    }
    let rerr = |e| Error::io("cannot read custody log", log, e);
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len - 1).map_err(rerr)?;
    if last[0] != b'\n' {
        return Err(Error::integrity(format!(
            "custody log {}: the last line has no line feed (a write was cut short, or the log was edited); nothing appended; run `casevault custody verify`",
            log.display()
        )));
    }
    // Read backwards until the line feed before the last line.
    let end = len - 1;
    let mut start = end;
    let mut chunk = vec![0u8; 64 * 1024];
    'scan: while start > 0 {
        let n = (start as usize).min(chunk.len());
        let off = start - n as u64;
        f.read_exact_at(&mut chunk[..n], off).map_err(rerr)?;
        for i in (0..n).rev() {
            if chunk[i] == b'\n' {
                start = off + i as u64 + 1;
                break 'scan;
            }
        }
        start = off;
        if end - start > MAX_LINE as u64 {
            return Err(Error::integrity(format!(
                "custody log {}: the last line is longer than {MAX_LINE} bytes",
                log.display()
            )));
        }
    }
    let mut line = vec![0u8; (end - start) as usize];
    f.read_exact_at(&mut line, start).map_err(rerr)?;
    let rec: Record = serde_json::from_slice(&line).map_err(|e| {
        Error::integrity(format!(
            "custody log {}: the last line is not a custody record ({e}); nothing appended",
            log.display()
        ))
    })?;
    Ok((rec.seq, hex(&Sha256::digest(&line))))
}

/// Read every line of a log: `(line number, bytes without LF)`. A final
/// line without LF is returned with `complete = false`.
pub fn read_lines(log: &Path) -> Result<Vec<(Vec<u8>, bool)>> {
    let f = fs::File::open(log).map_err(|e| Error::io("cannot open custody log", log, e))?;
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    loop {
        let mut buf = Vec::new();
        let n = Read::by_ref(&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io("cannot read custody log", log, e))?;
        if n == 0 {
            break;
        }
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
        } else if buf.len() > MAX_LINE {
            return Err(Error::integrity(format!(
                "custody log {} line {}: longer than {MAX_LINE} bytes",
                log.display(),
                out.len() + 1
            )));
        }
        out.push((buf, complete));
    }
    Ok(out)
}

/// Parse one stored line as a record.
pub fn parse_line(line: &[u8]) -> std::result::Result<Record, String> {
    serde_json::from_slice(line).map_err(|e| format!("not a custody record: {e}"))
}

/// The outcome of `custody verify` (`--json` object).
#[derive(Debug, Serialize)]
pub struct ChainReport {
    pub log: PathBuf,
    pub ok: bool,
    /// Records checked (all of them when `ok`).
    pub records: u64,
    /// SHA-256 of the last line: keep it elsewhere to detect truncation.
    pub head_sha256: String,
    /// Whether every record had to carry a trusted signature (`--signers`).
    pub signatures_checked: bool,
    /// Records that carry a (valid) signature.
    pub signed_records: u64,
    /// `--expect-head`: the head an auditor pinned earlier, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_head: Option<String>,
    /// The line whose SHA-256 is `expected_head` (0 for 64 zeros, the head
    /// of an empty log), or `null` when no intact line has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_head_line: Option<Option<u64>>,
    /// The first broken line (1-based), when not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// What is wrong there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Walk the chain and stop at the first broken link (FORMAT §11): an
/// unparsable line, a wrong `seq`, a `prev` that is not the SHA-256 of the
/// line before, a bad signature, or (with `signers`) an unsigned or
/// untrusted record.
pub fn verify_log(
    log: &Path,
    signers: Option<(&AllowedSigners, Option<&str>)>,
) -> Result<ChainReport> {
    verify_log_expecting(log, signers, None)
}

/// [`verify_log`], and with `expect_head` (`--expect-head`, lower-case
/// hex) also require that a head pinned earlier is still in the chain:
/// it must be the SHA-256 of one of the lines that verified (or 64 zeros,
/// the head of an empty log). Otherwise the report is not `ok`, with no
/// `line`: records were cut off or the log was replaced (issue #10 item
/// 16).
pub fn verify_log_expecting(
    log: &Path,
    signers: Option<(&AllowedSigners, Option<&str>)>,
    expect_head: Option<&str>,
) -> Result<ChainReport> {
    let lines = read_lines(log)?;
    let mut report = ChainReport {
        log: log.to_path_buf(),
        ok: true,
        records: 0,
        head_sha256: GENESIS.to_string(),
        signatures_checked: signers.is_some(),
        signed_records: 0,
        expected_head: expect_head.map(str::to_string),
        expected_head_line: expect_head.map(|h| (h == GENESIS).then_some(0)),
        line: None,
        problem: None,
    };
    let mut prev = GENESIS.to_string();
    for (i, (bytes, complete)) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        if let Err(why) = check_line(n, bytes, *complete, &prev, signers, &mut report) {
            report.ok = false;
            report.line = Some(n);
            report.problem = Some(why);
            return Ok(report);
        }
        prev = hex(&Sha256::digest(bytes));
        report.records = n;
        report.head_sha256 = prev.clone();
        if let Some(found @ None) = &mut report.expected_head_line {
            if expect_head == Some(prev.as_str()) {
                *found = Some(n);
            }
        }
    }
    if let (Some(h), Some(None)) = (expect_head, report.expected_head_line) {
        report.ok = false;
        report.problem = Some(format!(
            "the expected head {h} is not the SHA-256 of any of its {} records: records after it were cut off and others appended, or the log was replaced",
            report.records
        ));
    }
    Ok(report)
}

fn check_line(
    n: u64,
    bytes: &[u8],
    complete: bool,
    prev: &str,
    signers: Option<(&AllowedSigners, Option<&str>)>,
    report: &mut ChainReport,
) -> std::result::Result<(), String> {
    if !complete {
        return Err(
            "the last line has no line feed (a write was cut short, or the log was edited)".into(),
        );
    }
    let rec = parse_line(bytes)?;
    if rec.seq != n {
        return Err(format!(
            "sequence number {} where {n} was expected: a record was deleted, inserted or moved at or before this line",
            rec.seq
        ));
    }
    if rec.prev != prev {
        return Err(if n == 1 {
            "prev is not 64 zeros: this is not the first record of its log (records before it were removed)".into()
        } else {
            format!(
                "prev does not match the SHA-256 of line {}: line {} was edited, or a record was deleted, inserted or moved here",
                n - 1,
                n - 1
            )
        });
    }
    match (&rec.sig, &rec.signer) {
        (None, None) => {
            if signers.is_some() {
                return Err(
                    "the record is not signed, and --signers requires every record to be".into(),
                );
            }
        }
        (Some(_), None) => return Err("the record has a sig but no signer".into()),
        (None, Some(_)) => return Err("the record names a signer but has no sig".into()),
        (Some(sig_text), Some(signer)) => {
            let line = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
            let signed = signed_bytes(line, sig_text)
                .ok_or("the sig field is not the last field of the line")?;
            let sig = sign::parse(sig_text.as_bytes(), "sig").map_err(|e| e.to_string())?;
            let v = sign::verify_bytes(
                &sig,
                sign::NS_CUSTODY,
                "the record's sig",
                signed.as_bytes(),
            )
            .map_err(|e| e.to_string())?;
            if v.fingerprint != signer.fingerprint {
                return Err(format!(
                    "the record was signed by key {}, but names {}",
                    v.fingerprint, signer.fingerprint
                ));
            }
            if let Some((allowed, principal)) = signers {
                if allowed
                    .trusted(&v.key, sign::NS_CUSTODY, principal)
                    .is_none()
                {
                    return Err(format!(
                        "signed by key {}, which {} does not trust for {} in namespace {}",
                        v.fingerprint,
                        allowed.path().display(),
                        principal
                            .map_or("any principal".to_string(), |p| format!("principal {p:?}")),
                        sign::NS_CUSTODY
                    ));
                }
            }
            report.signed_records += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_bytes_rule() {
        let rec = Record {
            seq: 1,
            time: "t".into(),
            action: "sealed".into(),
            actor: "a@h".into(),
            host: "h".into(),
            case_id: Some("C".into()),
            vault: None,
            vault_sha256: None,
            outcome: "ok".into(),
            reason: Some("r \"q\"".into()),
            prev: GENESIS.into(),
            signer: None,
            sig: None,
        };
        let unsigned = line_of(&rec);
        let mut signed = rec.clone();
        signed.sig =
            Some("-----BEGIN SSH SIGNATURE-----\nAA\n-----END SSH SIGNATURE-----\n".into());
        let line = line_of(&signed);
        assert_eq!(
            signed_bytes(&line, signed.sig.as_deref().unwrap()).as_deref(),
            Some(unsigned.as_str())
        );
        assert!(signed_bytes(&unsigned, "x").is_none());
    }
}

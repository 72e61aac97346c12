//! `casevault store push SRC DST`: copy to DST every vault of SRC (with its
//! sidecar and signature) that DST lacks (issue #13). Each copy: the
//! source's sidecar is read and checked first; the vault streams to DST
//! hashed on the way and is published (multipart completion, or rename)
//! only if it hashes to that sidecar; then it is read back from DST and
//! hashed again; then its signature and, last, its sidecar are written. A
//! vault whose sidecar is in DST is complete there and is not copied
//! again, so a second push copies nothing.

use std::io::{self, Read, Write};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{read_small, RetentionPlan, Store, VaultRef};
use crate::custody::{Custody, Event};
use crate::error::Findings;
use crate::format::MAX_SIDECAR;
use crate::io::{hex, AtomicFile, BUF_SIZE};
use crate::sidecar::Unusable;
use crate::{Error, Result};

/// Options of a push.
pub struct PushOptions {
    pub dry_run: bool,
    /// How objects written to an S3 DST are retained (resolved by the
    /// caller with [`super::plan_retention`]); ignored for a directory.
    pub retention: RetentionPlan,
    /// `--custody`: a `copied` record per vault copied.
    pub custody: Option<Custody>,
    /// `--parity PERCENT`: write a parity file for each copy (FORMAT §15);
    /// without it, a parity file the source has travels with its vault.
    pub parity: Option<u32>,
}

/// What happened to one vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PushStatus {
    /// Copied now.
    Copied,
    /// `--dry-run`: would be copied.
    WouldCopy,
    /// Already complete in DST (its sidecar there matches).
    Present,
    /// The vault was in DST without its sidecar (an interrupted push): it
    /// matched, and its signature and sidecar were written.
    Completed,
    /// Not copied: see the problems.
    Failed,
}

/// One vault's result.
#[derive(Debug, Clone, Serialize)]
pub struct PushRecord {
    pub vault: String,
    pub to: String,
    pub status: PushStatus,
    pub sha256: Option<String>,
    pub problems: Vec<String>,
}

/// The closing summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushSummary {
    pub summary: bool,
    pub dry_run: bool,
    pub vaults: u64,
    pub copied: u64,
    pub present: u64,
    pub failed: u64,
}

/// Push every vault of `src` that `dst` lacks. Problems with single vaults
/// (a source that does not match its sidecar, a copy that differs) are
/// records with [`PushStatus::Failed`]; an operational failure (a server
/// unreachable, a disk full) stops the push with that error.
pub fn push(
    src: &Store,
    dst: &Store,
    opts: &PushOptions,
    out: &mut dyn FnMut(&PushRecord) -> Result<()>,
) -> Result<PushSummary> {
    let mut sum = PushSummary {
        summary: true,
        dry_run: opts.dry_run,
        ..PushSummary::default()
    };
    src.each_vault(&mut |v| {
        crate::signal::check()?;
        let rec = push_one(src, dst, &v, opts)?;
        sum.vaults += 1;
        match rec.status {
            PushStatus::Copied | PushStatus::WouldCopy | PushStatus::Completed => sum.copied += 1,
            PushStatus::Present => sum.present += 1,
            PushStatus::Failed => sum.failed += 1,
        }
        if matches!(rec.status, PushStatus::Copied | PushStatus::Completed) {
            if let Some(c) = &opts.custody {
                c.append(&Event {
                    action: "copied",
                    case_id: Some(v.case.clone()),
                    vault: Some(dst.vault_path(&v)),
                    vault_sha256: rec.sha256.clone(),
                    ok: true,
                })?;
            }
        }
        out(&rec)
    })?;
    Ok(sum)
}

/// The digest a sidecar records, `Ok(None)` if there is none, a problem
/// line if it is unusable; a read failure is an error.
fn sidecar_digest(vault: &Path) -> Result<std::result::Result<Option<String>, String>> {
    Ok(match crate::sidecar::read(vault) {
        Ok(h) => Ok(Some(h)),
        Err(Unusable::Missing) => Ok(None),
        Err(Unusable::Io(e)) => {
            return Err(Error::io(
                "cannot read sidecar",
                &crate::sidecar::path(vault),
                e,
            ))
        }
        Err(other) => Err(format!(
            "sidecar {} is unusable ({other:?})",
            crate::sidecar::path(vault).display()
        )),
    })
}

fn push_one(src: &Store, dst: &Store, v: &VaultRef, opts: &PushOptions) -> Result<PushRecord> {
    let from = src.vault_path(v);
    let to = dst.vault_path(v);
    let mut rec = PushRecord {
        vault: from.display().to_string(),
        to: to.display().to_string(),
        status: PushStatus::Failed,
        sha256: None,
        problems: Vec::new(),
    };
    // The source's sidecar, checked before the vault is read.
    let expected = match sidecar_digest(&from)? {
        Ok(Some(h)) => h,
        Ok(None) => {
            rec.problems.push(format!(
                "its sidecar {} is missing: nothing to check a copy against; not copied",
                crate::sidecar::path(&from).display()
            ));
            return Ok(rec);
        }
        Err(p) => {
            rec.problems.push(format!("{p}; not copied"));
            return Ok(rec);
        }
    };
    rec.sha256 = Some(expected.clone());
    let side_bytes =
        read_small(&crate::sidecar::path(&from), MAX_SIDECAR)?.expect("the sidecar was just read");
    let sig_bytes = read_small(&crate::sign::sig_path(&from), 1 << 20)?;
    let neighbours = (sig_bytes.as_deref(), &side_bytes[..]);
    if dst.has_vault(v)? {
        match sidecar_digest(&to)? {
            Ok(Some(h)) if h == expected => rec.status = PushStatus::Present,
            Ok(Some(h)) => rec.problems.push(format!(
                "{} is already in the destination with another SHA-256 ({h}) than the source's sidecar ({expected})",
                to.display()
            )),
            Err(p) => rec.problems.push(p),
            Ok(None) if opts.dry_run => rec.status = PushStatus::WouldCopy,
            Ok(None) => {
                // An interrupted push: the vault arrived, its sidecar not.
                let (d, _) = crate::io::sha256_file(&to)?;
                if hex(&d) == expected {
                    // Its parity file may be what was missing, or what
                    // stopped it (the source changed meanwhile).
                    if finish_copy(dst, &from, &to, &expected, neighbours, opts, &mut rec)? {
                        rec.status = PushStatus::Completed;
                    }
                } else {
                    rec.problems.push(format!(
                        "{} is in the destination without a sidecar and does not match the source's ({expected})",
                        to.display()
                    ));
                }
            }
        }
        return Ok(rec);
    }
    if opts.dry_run {
        rec.status = PushStatus::WouldCopy;
        return Ok(rec);
    }
    let copied = match copy_vault(dst, v, &from, &to, &expected, opts) {
        Ok(()) => true,
        Err(e @ Error::Integrity(_)) => {
            problems_of(e, &mut rec.problems);
            false
        }
        Err(e) => return Err(e),
    };
    if copied && finish_copy(dst, &from, &to, &expected, neighbours, opts, &mut rec)? {
        rec.status = PushStatus::Copied;
    }
    Ok(rec)
}

/// After the vault itself is in DST and checked: its parity file, then its
/// `.sig` and `.sha256`. The sidecar comes last, because a sidecar in DST
/// says the copy is complete (a second push skips it). `false`, with the
/// problem noted, when the parity file cannot be made for these bytes.
fn finish_copy(
    dst: &Store,
    from: &Path,
    to: &Path,
    expected: &str,
    (sig, side): (Option<&[u8]>, &[u8]),
    opts: &PushOptions,
    rec: &mut PushRecord,
) -> Result<bool> {
    match push_parity(dst, from, to, expected, opts) {
        Ok(()) => {}
        Err(e @ Error::Integrity(_)) => {
            problems_of(e, &mut rec.problems);
            return Ok(false);
        }
        Err(other) => return Err(other),
    }
    write_neighbours(dst, to, sig, side, opts)?;
    Ok(true)
}

/// Whether `p` (a file or an S3 object) exists.
fn exists(p: &Path) -> Result<bool> {
    #[cfg(feature = "s3")]
    if let Some(loc) = crate::s3::Location::of_path(p) {
        return Ok(crate::s3::client()?.head(&loc?, None)?.is_some());
    }
    match std::fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("cannot read", p, e)),
    }
}

/// Give the copy at `to` its parity file: built from the source with
/// `--parity` (the source read once more, and its digest checked again),
/// else the source's own `VAULT.par` copied as it is, if it has one.
fn push_parity(
    dst: &Store,
    from: &Path,
    to: &Path,
    expected: &str,
    opts: &PushOptions,
) -> Result<()> {
    let src_par = crate::parity::path(from);
    let tmp_dir = std::env::temp_dir();
    let tmp_err = |e: io::Error| Error::io("cannot write a temporary file in", &tmp_dir, e);
    let mut tmp = tempfile::tempfile().map_err(tmp_err)?;
    match opts.parity {
        Some(percent) => {
            let g = crate::parity::Geometry::new(percent)?;
            let mut input = crate::source::open_one(from, "cannot open vault")?;
            let digest = crate::parity::FileBuilder::to_file(g, &tmp)
                .map_err(tmp_err)?
                .build(
                    &mut input,
                    &|e| Error::io("cannot read vault", from, e),
                    &tmp_err,
                )?;
            // The parity file is unnamed: dropped with `tmp` if refused.
            if hex(&digest) != expected {
                return Err(Error::integrity(format!(
                    "{} changed while its parity was computed (it now hashes to {}); no parity file written",
                    from.display(),
                    hex(&digest)
                )));
            }
        }
        None => {
            if !exists(&src_par)? {
                return Ok(());
            }
            let mut input = crate::source::open_one(&src_par, "cannot open parity file")?;
            io::copy(&mut input, &mut tmp)
                .map_err(|e| Error::io("cannot copy parity file", &src_par, e))?;
        }
    }
    use std::io::Seek;
    tmp.seek(io::SeekFrom::Start(0)).map_err(tmp_err)?;
    publish(dst, &crate::parity::path(to), &mut tmp, opts)
}

/// Write everything `r` yields to `p` in DST, whole or not at all.
fn publish(
    dst: &Store,
    p: &Path,
    r: &mut dyn Read,
    #[cfg_attr(not(feature = "s3"), allow(unused_variables))] opts: &PushOptions,
) -> Result<()> {
    match dst {
        Store::Local(_) => {
            let mut f = AtomicFile::create(p)?;
            io::copy(r, &mut f).map_err(|e| Error::io("cannot write", p, e))?;
            f.commit(true)?;
            crate::io::sync_parent_dir(p)
        }
        #[cfg(feature = "s3")]
        Store::S3(_) => {
            let loc = crate::s3::Location::of_path(p).expect("an s3:// path")?;
            let tmp = std::env::temp_dir();
            let read_err = |e: io::Error| Error::io("cannot read a temporary file in", &tmp, e);
            let up = crate::s3::upload::upload(&loc, r, &read_err, None)?;
            super::apply_retention(&loc, up.version_id.as_deref(), &opts.retention).map(drop)
        }
    }
}

fn problems_of(e: Error, out: &mut Vec<String>) {
    match e {
        Error::Integrity(Findings(list)) => out.extend(list.into_iter().map(|f| f.to_string())),
        other => out.push(other.to_string()),
    }
}

/// Stream the vault to `to`, publish it only if it hashes to `expected`,
/// then read it back from the destination and hash it again.
fn copy_vault(
    dst: &Store,
    v: &VaultRef,
    from: &Path,
    to: &Path,
    expected: &str,
    #[cfg_attr(not(feature = "s3"), allow(unused_variables))] opts: &PushOptions,
) -> Result<()> {
    let mut input = crate::source::open_one(from, "cannot open vault")?;
    let read_err = |e: io::Error| Error::io("cannot read vault", from, e);
    match dst {
        Store::Local(dir) => {
            let case_dir = dir.join(&v.case);
            if let Err(e) = std::fs::DirBuilder::new().mode_0700().create(&case_dir) {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(Error::io("cannot create", &case_dir, e));
                }
            }
            let mut out = AtomicFile::create(to)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; BUF_SIZE];
            loop {
                crate::signal::check()?;
                let n = crate::io::retry(|| input.read(&mut buf)).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| Error::io("cannot write", to, e))?;
            }
            let got = hex(&h.finalize());
            if got != expected {
                return Err(Error::integrity(format!(
                    "{} hashes to {got}, not to {expected} as its sidecar says; not copied",
                    from.display()
                )));
            }
            out.commit(false)?;
            crate::io::sync_parent_dir(to)?;
            let (back, _) = crate::io::sha256_file(to)?;
            if hex(&back) != expected {
                return Err(Error::integrity(format!(
                    "{} read back hashes to {}, not to {expected}",
                    to.display(),
                    hex(&back)
                )));
            }
            Ok(())
        }
        #[cfg(feature = "s3")]
        Store::S3(_) => {
            let loc = dst.vault_location(v).expect("an S3 store");
            // Uploads of this key that an interrupted push left behind.
            crate::s3::upload::abort_stale(&loc, &|k| k == loc.key)?;
            let up = crate::s3::upload::upload(&loc, &mut input, &read_err, Some(expected))?;
            super::apply_retention(&loc, up.version_id.as_deref(), &opts.retention)?;
            let (back, _) = crate::s3::upload::read_back(&loc, up.version_id.as_deref())?;
            if back != expected {
                return Err(Error::integrity(format!(
                    "{loc} read back from the server hashes to {back}, not to {expected}"
                )));
            }
            Ok(())
        }
    }
}

/// Write the signature (if any) and then the sidecar beside a copied vault.
fn write_neighbours(
    dst: &Store,
    to: &Path,
    sig: Option<&[u8]>,
    sidecar: &[u8],
    #[cfg_attr(not(feature = "s3"), allow(unused_variables))] opts: &PushOptions,
) -> Result<()> {
    let mut items = Vec::new();
    if let Some(s) = sig {
        items.push((crate::sign::sig_path(to), s));
    }
    items.push((crate::sidecar::path(to), sidecar));
    for (p, bytes) in items {
        match dst {
            Store::Local(_) => {
                let mut f = AtomicFile::create(&p)?;
                f.write_all(bytes)
                    .map_err(|e| Error::io("cannot write", &p, e))?;
                f.commit(true)?;
                crate::io::sync_parent_dir(&p)?;
            }
            #[cfg(feature = "s3")]
            Store::S3(_) => {
                let loc = crate::s3::Location::of_path(&p).expect("an s3:// path")?;
                let version = crate::s3::client()?.put_small(&loc, bytes.to_vec(), None)?;
                super::apply_retention(&loc, version.as_deref(), &opts.retention)?;
            }
        }
    }
    Ok(())
}

/// `DirBuilder` with mode 0700 (what sweep gives a case directory in an
/// unshared store).
trait Mode0700 {
    fn mode_0700(&mut self) -> &mut Self;
}

impl Mode0700 for std::fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(0o700)
    }
}

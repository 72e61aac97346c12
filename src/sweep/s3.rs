//! Sweeping into an S3 store (`-o s3://BUCKET/PREFIX`, issue #13): the same
//! run as for a directory, with the vault streamed into a multipart upload
//! as it is sealed, Object Lock retention set and read back on every
//! object, and the lock and state kept in a local `--state-dir` (S3 has no
//! flock). Layout in the bucket: `PREFIX/CASE/CASE.TIMESTAMP.vault`,
//! `.sha256`, `.sig` (docs/FORMAT.md §12).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{store, CaseState, Record, Status, Sweep, SweepOptions, VaultCheck};
use crate::s3::upload::{read_back, UploadWriter};
use crate::s3::Location;
use crate::store::{apply_retention, plan_retention, RetentionPlan};
use crate::{seal, Error, Result};

/// The default `--state-dir` of a bucket and prefix: under systemd's
/// `$STATE_DIRECTORY` when the service has one, else `$XDG_STATE_HOME` or
/// `~/.local/state`, then `casevault/sweep/BUCKET[+PREFIX]` (a `/` of the
/// prefix becomes `+`).
pub fn default_state_dir(loc: &Location) -> Result<PathBuf> {
    let base = std::env::var_os("STATE_DIRECTORY")
        .map(|d| {
            // systemd may list several, separated by ':'.
            let s = d.to_string_lossy().into_owned();
            PathBuf::from(s.split(':').next().unwrap_or_default())
        })
        .or_else(|| std::env::var_os("XDG_STATE_HOME").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| {
            Error::Usage(
                "no --state-dir given and neither STATE_DIRECTORY, XDG_STATE_HOME nor HOME is set"
                    .into(),
            )
        })?;
    let mut name = loc.bucket.clone();
    let prefix = loc.key.trim_end_matches('/');
    if !prefix.is_empty() {
        name.push('+');
        name.push_str(&prefix.replace('/', "+"));
    }
    Ok(base.join("casevault/sweep").join(name))
}

/// Check an S3 sweep's options against the bucket, before anything is
/// sealed: the bucket and prefix, the retention plan (Object Lock off, or
/// no retention, is refused unless `--no-retention`) and the state
/// directory (created 0700).
pub(super) fn open_store(opts: &SweepOptions) -> Result<(Location, RetentionPlan, PathBuf)> {
    let mut loc = Location::of_path(&opts.store).expect("an s3:// store")?;
    if !loc.key.is_empty() && !loc.key.ends_with('/') {
        loc.key.push('/');
    }
    if opts.keep.is_some() {
        return Err(Error::Usage(
            "--keep deletes old vaults, which an S3 store under Object Lock does not allow; \
             the bucket's retention (--retain, or its default) decides how long vaults are kept"
                .into(),
        ));
    }
    let plan = plan_retention(&loc, opts.retain, opts.lock_mode, opts.no_retention)?;
    let meta = match &opts.state_dir {
        Some(d) => d.clone(),
        None => default_state_dir(&loc)?,
    };
    if let Err(e) = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&meta)
    {
        return Err(Error::io("cannot create the state directory", &meta, e));
    }
    Ok((loc, plan, meta))
}

/// Whether `key` (under `prefix`) is a vault key sweep writes.
fn is_vault_key(prefix: &Location, key: &str) -> bool {
    key.strip_prefix(prefix.key.as_str())
        .and_then(crate::store::VaultRef::of_rel)
        .is_some()
}

/// Abort the multipart uploads of vaults under the prefix that an
/// interrupted sweep left (under the lock, no other sweep is uploading).
/// Returns how many (a dry run only counts them).
pub(super) fn abort_stale(loc: &Location, dry_run: bool) -> Result<u64> {
    if dry_run {
        let c = crate::s3::client()?;
        return Ok(c
            .list_uploads(loc)?
            .iter()
            .filter(|u| is_vault_key(loc, &u.key))
            .count() as u64);
    }
    crate::s3::upload::abort_stale(loc, &|k| is_vault_key(loc, k)).map(|v| v.len() as u64)
}

/// The newest vault recorded in the state, as it is in the bucket: missing,
/// or the digest its sidecar object records (compared with the state by
/// the caller). The object is not downloaded every night: under Object
/// Lock it cannot be replaced unnoticed by the sidecar, and `store audit`
/// re-hashes every vault.
pub(super) fn check_vault(path: &Path) -> Result<VaultCheck> {
    let loc = Location::of_path(path).expect("an s3:// vault")?;
    if crate::s3::client()?.head(&loc, None)?.is_none() {
        return Ok(VaultCheck::Missing);
    }
    use crate::sidecar::Unusable as U;
    Ok(match crate::sidecar::read(path) {
        Ok(h) => VaultCheck::Ok(h),
        Err(U::Io(e)) => return Err(Error::io("cannot read sidecar", path, e)),
        Err(U::Missing) => VaultCheck::Bad("its sidecar is missing".into()),
        Err(_) => VaultCheck::Bad("its sidecar is unusable".into()),
    })
}

/// The vault names of a case under the prefix, oldest first.
fn list_case(case_prefix: &Location, case: &str) -> Result<Vec<String>> {
    let c = crate::s3::client()?;
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = c.list_page(case_prefix, token)?;
        for o in page {
            let name = &o.key[case_prefix.key.len()..];
            if store::vault_stamp(case, name).is_some() {
                out.push(name.to_string());
            }
        }
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    out.sort();
    Ok(out)
}

impl Sweep<'_> {
    /// Seal a case straight into the bucket: multipart upload while
    /// sealing, completed only when the vault is whole; retention set and
    /// read back; with `--remove-source` the object read back from the
    /// server and hashed first; then `.sig` and `.sha256` (also retained);
    /// then the state and custody record.
    pub(super) fn seal_s3(
        &mut self,
        case: &str,
        src: &crate::walk::Root,
        scan: &super::tree::Scan,
        r: &mut Record,
    ) -> Result<()> {
        let super::Backend::S3 { loc, plan } = &self.backend else {
            unreachable!("seal_s3 is called for S3 stores only")
        };
        let (loc, plan) = (loc.clone(), plan.clone());
        let case_prefix = loc.with_key(format!("{}{case}/", loc.key));
        let existing = list_case(&case_prefix, case)?;
        let case_path = PathBuf::from(case_prefix.to_string().trim_end_matches('/'));
        let name =
            store::new_vault_name(&case_path, case, &existing, time::OffsetDateTime::now_utc())?;
        let vault_loc = case_prefix.with_key(format!("{}{name}", case_prefix.key));
        let vault = PathBuf::from(vault_loc.to_string());
        let sink = UploadWriter::start(&vault_loc, self.opts.sign.is_some())?;
        let (report, sink, parity) = seal::seal_to(
            self.seal_options(&src.path, case, vault.clone())?,
            src,
            sink,
        )?;
        // The object appears now, whole.
        let (version, sha512) = sink.finish()?;
        if r.status != Status::Failed {
            r.status = Status::Sealed;
        }
        r.vault = Some(vault.clone());
        r.vault_sha256 = Some(report.vault_sha256.clone());
        r.files = Some(report.files);
        r.bytes = Some(report.payload_bytes);
        apply_retention(&vault_loc, version.as_deref(), &plan)?;
        if self.opts.remove_source {
            // Before the plaintext goes: the object as the server has it.
            let (back, _) = read_back(&vault_loc, version.as_deref())?;
            if back != report.vault_sha256 {
                r.status = Status::Failed;
                return Err(Error::Refused(format!(
                    "{vault_loc} read back from the server hashes to {back}, not to {} as written; the source was kept",
                    report.vault_sha256
                )));
            }
        }
        let c = crate::s3::client()?;
        if let (Some(key), Some(digest)) = (&self.opts.sign, sha512) {
            let text = key.sign_sha512(crate::sign::NS_VAULT, &digest)?;
            let sig_loc = vault_loc.suffixed(".sig");
            let v = c.put_small(&sig_loc, text.into_bytes(), None)?;
            apply_retention(&sig_loc, v.as_deref(), &plan)?;
        }
        if let Some(file) = parity {
            let par_loc = vault_loc.suffixed(".par");
            let up = upload_parity(&par_loc, file)?;
            apply_retention(&par_loc, up.version_id.as_deref(), &plan)?;
        }
        let side_loc = vault_loc.suffixed(".sha256");
        let line = crate::manifest::line(&report.vault_sha256, &name);
        let v = c.put_small(&side_loc, line.into_bytes(), None)?;
        apply_retention(&side_loc, v.as_deref(), &plan)?;
        self.checked
            .insert(vault.clone(), VaultCheck::Ok(report.vault_sha256.clone()));

        self.state.cases.insert(
            case.to_string(),
            CaseState {
                fingerprint: scan.fingerprint.clone(),
                manifest_sha256: report.manifest_sha256.clone(),
                vault: name,
                vault_sha256: report.vault_sha256.clone(),
                sealed_at: report.sealed_at.clone(),
            },
        );
        if let Err(e) = self.state.save() {
            // Under Object Lock the vault cannot be taken back: say so.
            return Err(Error::Refused(format!(
                "{vault_loc} was written, but the sweep state could not be saved ({e}); the source was kept and the next sweep seals the case again"
            )));
        }
        self.custody("sealed", r)?;
        if self.opts.remove_source {
            let plan = super::tree::check_sealed(src, &report.entries).map_err(|e| {
                Error::Refused(format!("source kept: {e}; the next sweep seals it again"))
            })?;
            self.remove(&plan, r)?;
        }
        Ok(())
    }
}

/// Upload a vault's parity file (written by the seal to an unnamed
/// temporary file) as `KEY.par` (FORMAT §15).
fn upload_parity(
    loc: &crate::s3::Location,
    mut file: std::fs::File,
) -> Result<crate::s3::upload::Uploaded> {
    use std::io::{Seek, SeekFrom};
    let tmp = std::env::temp_dir();
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("cannot read the parity file in", &tmp, e))?;
    crate::s3::upload::upload(
        loc,
        &mut file,
        &|e| Error::io("cannot read the parity file in", &tmp, e),
        None,
    )
}

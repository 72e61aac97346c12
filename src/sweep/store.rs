//! The vault store's layout: `STORE/<case-id>/<case-id>.<stamp>.vault` and
//! its sidecar, generation names, checking a vault against its sidecar,
//! stale temporary files, and retention (docs/FORMAT.md, "Sweep store and state").

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::io::{hex, open_regular, BUF_SIZE, TEMP_PREFIX};
use crate::sidecar::path as sidecar_path;
use crate::{signal, Error, Result};

/// Length of a generation stamp: `YYYYMMDDTHHMMSS.ffffffZ`.
const STAMP_LEN: usize = 23;

/// The stamp of a UTC time given in microseconds since the Unix epoch, or
/// `None` outside the years 0000–9999 a stamp can hold (a name in the store
/// can claim `99991231T235959.999999Z`, and the next one after it has no
/// stamp: issue #10 item 9).
pub fn stamp(micros: i128) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1000)?).ok()?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    t.format(time::macros::format_description!(
        "[year][month][day]T[hour][minute][second].[subsecond digits:6]Z"
    ))
    .ok()
}

/// Microseconds since the epoch of a stamp, if it is one.
pub fn parse_stamp(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() != STAMP_LEN || b[8] != b'T' || b[15] != b'.' || b[22] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let date = time::Date::from_calendar_date(
        i32::try_from(digits(0..4)?).ok()?,
        time::Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?,
        u8::try_from(digits(6..8)?).ok()?,
    )
    .ok()?;
    let tod = time::Time::from_hms_micro(
        u8::try_from(digits(9..11)?).ok()?,
        u8::try_from(digits(11..13)?).ok()?,
        u8::try_from(digits(13..15)?).ok()?,
        digits(16..22)?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, tod)
            .assume_utc()
            .unix_timestamp_nanos()
            / 1000,
    )
}

/// The generation stamp of a vault file name of `case`, if it is one.
pub fn vault_stamp<'a>(case: &str, name: &'a str) -> Option<&'a str> {
    let s = name
        .strip_prefix(case)?
        .strip_prefix('.')?
        .strip_suffix(".vault")?;
    parse_stamp(s).map(|_| s)
}

/// File name of a generation.
pub fn vault_name(case: &str, stamp: &str) -> String {
    format!("{case}.{stamp}.vault")
}

/// The vaults of a case (file names), oldest first. Names that do not
/// follow the pattern are not ours and are ignored (never deleted).
pub fn list_vaults(dir: &Path, case: &str) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list", dir, e)),
        Ok(rd) => rd,
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("cannot list", dir, e))?;
        if let Some(name) = ent.file_name().to_str() {
            if vault_stamp(case, name).is_some() {
                out.push(name.to_string());
            }
        }
    }
    // Same prefix and fixed-width stamps: name order is time order.
    out.sort();
    Ok(out)
}

/// The name of a new generation: the current time to the microsecond, but
/// always later than every existing generation of the case (a clock that
/// stepped back, or two seals in one microsecond, bump it by 1 µs), and
/// never the name of an existing file or sidecar.
///
/// When no later stamp exists (the newest name in the store claims the last
/// microsecond of year 9999), the case fails with a message naming that
/// entry; it is never a panic (issue #10 item 9).
pub fn new_vault_name(
    dir: &Path,
    case: &str,
    existing: &[String],
    now: OffsetDateTime,
) -> Result<String> {
    let mut micros = now.unix_timestamp_nanos() / 1000;
    let newest = existing.last();
    if let Some(t) = newest
        .and_then(|n| vault_stamp(case, n))
        .and_then(parse_stamp)
    {
        micros = micros.max(t + 1);
    }
    loop {
        let Some(stamp) = stamp(micros) else {
            let blame = newest
                .map(|n| dir.join(n))
                .unwrap_or_else(|| dir.to_path_buf());
            return Err(Error::Refused(format!(
                "cannot name a new vault: {} is named later than any time a vault name can hold (year 9999); it is not a vault sweep wrote, move it out of the store",
                blame.display()
            )));
        };
        let name = vault_name(case, &stamp);
        let path = dir.join(&name);
        if fs::symlink_metadata(&path).is_err()
            && fs::symlink_metadata(sidecar_path(&path)).is_err()
        {
            return Ok(name);
        }
        micros += 1;
    }
}

/// How a vault file compares with its sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultCheck {
    /// The file's SHA-256 (hex) equals the sidecar's.
    Ok(String),
    Missing,
    /// The vault, the sidecar or both are not as written.
    Bad(String),
}

impl VaultCheck {
    pub fn describe(&self) -> String {
        match self {
            VaultCheck::Ok(_) => "ok".into(),
            VaultCheck::Missing => "missing".into(),
            VaultCheck::Bad(why) => why.clone(),
        }
    }
}

/// The digest a sidecar records for `vault`, or why it has none.
/// Whatever sits in the store under the sidecar's name (a FIFO, a
/// symlink, a huge file) is read only as deep as the size cap and never
/// blocks.
fn sidecar_digest(vault: &Path) -> std::result::Result<String, String> {
    use crate::sidecar::Unusable as U;
    crate::sidecar::read(vault).map_err(|why| match why {
        U::Missing => "its sidecar is missing".into(),
        U::Io(e) => format!("cannot read its sidecar: {e}"),
        U::NotRegular => "its sidecar is not a regular file".into(),
        U::TooLarge => "its sidecar is not a sidecar".into(),
        U::NotText => "its sidecar is not text".into(),
        U::Malformed(_) | U::WrongLines => {
            "its sidecar does not hold exactly one line for it".into()
        }
    })
}

/// Re-read a vault from disk and compare its SHA-256 with its sidecar.
///
/// Before reading, the page cache for the file is dropped where the kernel
/// allows it (`posix_fadvise(DONTNEED)` on clean pages, best effort), so the
/// bytes are read back from the device rather than from memory.
pub fn check_vault(path: &Path) -> Result<VaultCheck> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VaultCheck::Missing),
        Err(e) => return Err(Error::io("cannot stat", path, e)),
        Ok(m) if !m.is_file() => return Ok(VaultCheck::Bad("not a regular file".into())),
        Ok(_) => {}
    }
    let expected = match sidecar_digest(path) {
        Ok(h) => h,
        Err(why) => return Ok(VaultCheck::Bad(why)),
    };
    let mut f = match open_regular(path).map_err(|e| Error::io("cannot open", path, e))? {
        Some(f) => f,
        None => return Ok(VaultCheck::Bad("not a regular file".into())),
    };
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        signal::check()?;
        let k = match crate::io::retry(|| f.read(&mut buf)) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        h.update(&buf[..k]);
    }
    let actual = hex(&h.finalize());
    Ok(if actual == expected {
        VaultCheck::Ok(actual)
    } else {
        VaultCheck::Bad("its SHA-256 does not match its sidecar".into())
    })
}

/// Remove a vault and then its sidecar (a crash in between leaves only a
/// harmless sidecar, never a vault that has lost its checksum).
pub fn delete_vault(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| Error::io("cannot remove", path, e))?;
    // The sidecar, then the signature (issue #5) if the vault was signed,
    // and its parity file (issue #16).
    for side in [
        sidecar_path(path),
        crate::sign::sig_path(path),
        crate::parity::path(path),
    ] {
        match fs::remove_file(&side) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("cannot remove", &side, e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Temporary files (`.casevault-tmp-*`) in the store's metadata directory
/// and in every case directory. Under the store lock no other sweep is
/// writing, so every one of them is left over from an interrupted run.
pub fn stale_temp_files(store: &Path, meta_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![meta_dir.to_path_buf()];
    for ent in fs::read_dir(store).map_err(|e| Error::io("cannot list", store, e))? {
        let ent = ent.map_err(|e| Error::io("cannot list", store, e))?;
        let name = ent.file_name();
        let hidden = name.to_str().is_none_or(|n| n.starts_with('.'));
        if !hidden && ent.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(ent.path());
        }
    }
    let mut out = Vec::new();
    for dir in dirs {
        let rd = match fs::read_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // A case directory sweep cannot list fails that case when it
            // comes to it; it does not stop the others.
            Err(_) if dir != meta_dir => continue,
            Err(e) => return Err(Error::io("cannot list", &dir, e)),
            Ok(rd) => rd,
        };
        for ent in rd {
            let Ok(ent) = ent else { continue };
            let ours = ent
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TEMP_PREFIX));
            if ours && ent.file_type().is_ok_and(|t| t.is_file()) {
                out.push(ent.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What retention decided for one case.
#[derive(Debug, Default)]
pub struct Pruning {
    /// Vault file names deleted (or, in a dry run, that would be).
    pub pruned: Vec<String>,
    /// For each of [`Pruning::pruned`], the SHA-256 its sidecar recorded
    /// (read before deleting), for the custody record of its end.
    pub pruned_sha256: Vec<Option<String>>,
    /// Vaults among the newest that do not match their sidecar: kept, not
    /// counted, reported.
    pub problems: Vec<String>,
}

/// Retention: keep the `keep` newest vaults that match their sidecar and
/// delete the generations older than the oldest of those.
///
/// - Nothing is read when a case has no more than `keep` vaults.
/// - The newest vault and `protect` (the one recorded in the state) are
///   never deleted; neither is a vault newer than the `keep`-th verified one,
///   even if it fails its check (it is reported instead).
/// - If fewer than `keep` vaults verify, nothing is deleted.
/// - `pending_new` counts a vault a dry run would have sealed as one
///   verified generation newer than all on disk.
/// - `check` verifies one vault (the caller caches results).
pub fn prune(
    dir: &Path,
    case: &str,
    keep: usize,
    protect: Option<&str>,
    pending_new: bool,
    dry_run: bool,
    check: &mut dyn FnMut(&Path) -> Result<VaultCheck>,
) -> Result<Pruning> {
    let names = list_vaults(dir, case)?;
    let mut out = Pruning::default();
    if names.len() + usize::from(pending_new) <= keep {
        return Ok(out);
    }
    let mut verified = usize::from(pending_new);
    let mut doomed = Vec::new();
    for (i, name) in names.iter().enumerate().rev() {
        // With a pending (dry-run) vault, the newest on disk would no
        // longer be the newest.
        let newest = i + 1 == names.len() && !pending_new;
        if verified >= keep {
            if !newest && Some(name.as_str()) != protect {
                doomed.push(name.clone());
            }
            continue;
        }
        match check(&dir.join(name))? {
            VaultCheck::Ok(_) => verified += 1,
            other => out.problems.push(format!(
                "{name}: {}; kept and not counted as a generation",
                other.describe()
            )),
        }
    }
    if verified < keep {
        return Ok(out);
    }
    for name in doomed {
        let vault = dir.join(&name);
        let sha = sidecar_digest(&vault).ok();
        if !dry_run {
            delete_vault(&vault)?;
        }
        out.pruned.push(name);
        out.pruned_sha256.push(sha);
    }
    if !out.pruned.is_empty() && !dry_run {
        crate::io::sync_parent_dir(&dir.join("x"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_sort() {
        let t = 1_796_000_000_123_456i128;
        let s = |t| stamp(t).unwrap();
        assert_eq!(parse_stamp(&s(t)), Some(t));
        assert_eq!(s(t).len(), STAMP_LEN);
        assert!(s(t) < s(t + 1));
        let last = parse_stamp("99991231T235959.999999Z").unwrap();
        assert_eq!(s(last), "99991231T235959.999999Z");
        assert_eq!(stamp(last + 1), None);
        assert_eq!(stamp(i128::MAX), None);
        assert_eq!(parse_stamp("20261128T021500Z"), None);
        assert_eq!(parse_stamp("20261328T021500.000000Z"), None);
        assert_eq!(
            vault_stamp("C.1", "C.1.20261128T021500.000001Z.vault"),
            Some("20261128T021500.000001Z")
        );
        assert_eq!(vault_stamp("C", "C.1.20261128T021500.000001Z.vault"), None);
    }

    #[test]
    fn new_names_are_later_than_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_796_000_000).unwrap();
        let first = new_vault_name(dir.path(), "C", &[], now).unwrap();
        fs::write(dir.path().join(&first), b"").unwrap();
        // Same instant again (or a clock that went back): still later.
        let second = new_vault_name(dir.path(), "C", std::slice::from_ref(&first), now).unwrap();
        assert!(second > first, "{second} > {first}");
        let earlier = now - time::Duration::hours(1);
        let third =
            new_vault_name(dir.path(), "C", &[first.clone(), second.clone()], earlier).unwrap();
        assert!(third > second);
        // Nothing comes after the last stamp: an error naming the entry.
        let far = "C.99991231T235959.999999Z.vault".to_string();
        let err = new_vault_name(dir.path(), "C", std::slice::from_ref(&far), now).unwrap_err();
        assert!(err.to_string().contains(&far), "{err}");
    }
}

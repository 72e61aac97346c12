//! Vault stores as `store audit` and `store push` see them (issue #13): a
//! local directory or `s3://BUCKET[/PREFIX]`, with one layout in both
//! (docs/FORMAT.md §12): `PREFIX/CASE/CASE.TIMESTAMP.vault`, its
//! `.sha256` sidecar and `.sig` signature beside it.
//!
//! Vaults are visited one at a time, in name order, from a directory
//! listing or from S3 listing pages of at most 1,000 keys, so memory does
//! not grow with the store (only with the number of case names in a local
//! store's top directory).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::sweep::{list_vaults, vault_stamp};
use crate::{Error, Result};

pub mod audit;
pub mod push;

/// A vault store.
#[derive(Debug, Clone)]
pub enum Store {
    /// A directory.
    Local(PathBuf),
    /// A bucket and a key prefix (empty, or ending in `/`).
    #[cfg(feature = "s3")]
    S3(crate::s3::Location),
}

/// One vault of a store: its case and file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRef {
    pub case: String,
    pub name: String,
}

impl VaultRef {
    /// `CASE/NAME`, as reports print it.
    pub fn rel(&self) -> String {
        format!("{}/{}", self.case, self.name)
    }

    /// The vault ref of `CASE/NAME` when it follows the store's layout.
    pub fn of_rel(rel: &str) -> Option<VaultRef> {
        let (case, name) = rel.split_once('/')?;
        if case.is_empty() || case.starts_with('.') || name.contains('/') {
            return None;
        }
        vault_stamp(case, name)?;
        Some(VaultRef {
            case: case.into(),
            name: name.into(),
        })
    }
}

impl Store {
    /// A store named on the command line: `s3://BUCKET[/PREFIX]` or a
    /// directory that exists.
    pub fn parse(p: &Path) -> Result<Store> {
        if crate::source::is_remote(p) {
            #[cfg(feature = "s3")]
            {
                let mut loc = crate::s3::Location::of_path(p).expect("an s3:// path")?;
                if !loc.key.is_empty() && !loc.key.ends_with('/') {
                    loc.key.push('/');
                }
                return Ok(Store::S3(loc));
            }
            #[cfg(not(feature = "s3"))]
            return Err(Error::Refused(format!(
                "{}: this casevault was built without S3 support (cargo feature `s3`)",
                p.display()
            )));
        }
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => Ok(Store::Local(p.to_path_buf())),
            Ok(_) => Err(Error::Refused(format!(
                "store {} is not a directory",
                p.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Refused(format!(
                "store {} does not exist; create it first (mkdir -m 0700 {})",
                p.display(),
                p.display()
            ))),
            Err(e) => Err(Error::io("cannot open store", p, e)),
        }
    }

    /// The store as given (`s3://BUCKET/PREFIX/` or the directory).
    pub fn display(&self) -> String {
        match self {
            Store::Local(d) => d.display().to_string(),
            #[cfg(feature = "s3")]
            Store::S3(l) => l.to_string(),
        }
    }

    /// The path the reading wing opens for a vault (`s3://…` for S3).
    pub fn vault_path(&self, v: &VaultRef) -> PathBuf {
        match self {
            Store::Local(d) => d.join(&v.case).join(&v.name),
            #[cfg(feature = "s3")]
            Store::S3(l) => PathBuf::from(self.location(l, v).to_string()),
        }
    }

    #[cfg(feature = "s3")]
    fn location(&self, l: &crate::s3::Location, v: &VaultRef) -> crate::s3::Location {
        l.with_key(format!("{}{}/{}", l.key, v.case, v.name))
    }

    /// The S3 location of a vault, for an S3 store.
    #[cfg(feature = "s3")]
    pub fn vault_location(&self, v: &VaultRef) -> Option<crate::s3::Location> {
        match self {
            Store::S3(l) => Some(self.location(l, v)),
            Store::Local(_) => None,
        }
    }

    /// Visit every vault, in name order (case, then generation).
    pub fn each_vault(&self, f: &mut dyn FnMut(VaultRef) -> Result<()>) -> Result<()> {
        match self {
            Store::Local(dir) => {
                let mut cases = Vec::new();
                for ent in fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))? {
                    let ent = ent.map_err(|e| Error::io("cannot list", dir, e))?;
                    let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                        continue;
                    };
                    if !name.starts_with('.') && ent.file_type().is_ok_and(|t| t.is_dir()) {
                        cases.push(name);
                    }
                }
                cases.sort();
                for case in cases {
                    for name in list_vaults(&dir.join(&case), &case)? {
                        f(VaultRef {
                            case: case.clone(),
                            name,
                        })?;
                    }
                }
                Ok(())
            }
            #[cfg(feature = "s3")]
            Store::S3(l) => {
                let c = crate::s3::client()?;
                let mut token = None;
                loop {
                    let (page, next) = c.list_page(l, token)?;
                    for o in page {
                        let rel = &o.key[l.key.len()..];
                        if let Some(v) = VaultRef::of_rel(rel) {
                            f(v)?;
                        }
                    }
                    match next {
                        Some(t) => token = Some(t),
                        None => return Ok(()),
                    }
                }
            }
        }
    }

    /// Whether the store holds this vault (the vault itself).
    pub fn has_vault(&self, v: &VaultRef) -> Result<bool> {
        self.exists(&self.vault_path(v))
    }

    /// Whether an object or file exists.
    pub fn exists(&self, p: &Path) -> Result<bool> {
        match self {
            Store::Local(_) => match fs::symlink_metadata(p) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(Error::io("cannot stat", p, e)),
            },
            #[cfg(feature = "s3")]
            Store::S3(_) => {
                let loc = crate::s3::Location::of_path(p).expect("an s3:// path")?;
                Ok(crate::s3::client()?.head(&loc, None)?.is_some())
            }
        }
    }
}

/// Read a small neighbour (sidecar, signature) of a vault in any store:
/// `None` if it does not exist.
pub fn read_small(p: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    if let Some(remote) = crate::source::read_small(p, cap)? {
        return Ok(remote);
    }
    match crate::io::open_regular(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot read", p, e)),
        Ok(None) => Err(Error::Refused(format!(
            "{} is not a regular file",
            p.display()
        ))),
        Ok(Some(f)) => {
            use std::io::Read;
            let mut out = Vec::new();
            f.take(cap + 1)
                .read_to_end(&mut out)
                .map_err(|e| Error::io("cannot read", p, e))?;
            Ok(Some(out))
        }
    }
}

/// A retention period: `30d`, `7y`, `12h`, `90m`, `45s` (a year is 365
/// days). Returns seconds.
pub fn parse_duration(s: &str) -> std::result::Result<i64, String> {
    let err = || {
        format!("{s:?} is not a duration: give a number and a unit, like 30d, 7y, 12h (s, m, h, d, w, y)")
    };
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?);
    let n: i64 = num.parse().map_err(|_| err())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(err()),
    };
    if n == 0 {
        return Err(format!(
            "{s:?}: a retention period must be longer than zero"
        ));
    }
    n.checked_mul(mult).ok_or_else(err)
}

/// Object Lock mode of per-object retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMode {
    /// Nobody can shorten or remove the retention, the root account
    /// included.
    #[default]
    Compliance,
    /// Accounts with `s3:BypassGovernanceRetention` can.
    Governance,
}

impl LockMode {
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

/// How objects written to an S3 store are kept (`--retain`,
/// `--lock-mode`, `--no-retention`), resolved against the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionPlan {
    /// Per object: this mode, this many seconds from the time of writing.
    PerObject { mode: LockMode, secs: i64 },
    /// The bucket's default retention applies (checked on every object).
    BucketDefault,
    /// `--no-retention`: none asked for, none checked.
    None,
}

/// Decide how objects written to `loc`'s bucket are retained, or refuse
/// with the fix: Object Lock off, or neither `--retain` nor a bucket
/// default, is refused unless `no_retention` (issue #13).
#[cfg(feature = "s3")]
pub fn plan_retention(
    loc: &crate::s3::Location,
    retain: Option<i64>,
    mode: LockMode,
    no_retention: bool,
) -> Result<RetentionPlan> {
    if no_retention {
        return Ok(RetentionPlan::None);
    }
    let conf = crate::s3::client()?.lock_config(loc)?;
    if !conf.enabled {
        return Err(Error::Refused(format!(
            "bucket {} has Object Lock off, so vaults written there could be deleted or overwritten; \
             use a bucket created with Object Lock enabled (docs/OPERATIONS.md, \"S3 vault stores\"), \
             or pass --no-retention to write without it",
            loc.bucket
        )));
    }
    match (retain, conf.default) {
        (Some(secs), _) => Ok(RetentionPlan::PerObject { mode, secs }),
        (None, Some(_)) => Ok(RetentionPlan::BucketDefault),
        (None, None) => Err(Error::Refused(format!(
            "bucket {} has Object Lock on but no default retention, and no --retain was given, \
             so vaults written there would not be retained; pass --retain DURATION (e.g. --retain 7y), \
             set a default retention on the bucket, or pass --no-retention",
            loc.bucket
        ))),
    }
}

/// Apply a retention plan to an object version just written, and read it
/// back: an error unless the server reports the retention asked for.
#[cfg(feature = "s3")]
pub fn apply_retention(
    loc: &crate::s3::Location,
    version: Option<&str>,
    plan: &RetentionPlan,
) -> Result<Option<crate::s3::Retention>> {
    match plan {
        RetentionPlan::None => Ok(None),
        RetentionPlan::PerObject { mode, secs } => {
            let until = time::OffsetDateTime::now_utc().unix_timestamp() + secs;
            let r = crate::s3::Retention {
                mode: mode.as_s3().into(),
                until,
            };
            crate::s3::upload::retain(loc, version, &r).map(Some)
        }
        RetentionPlan::BucketDefault => match crate::s3::client()?.get_retention(loc, version)? {
            Some(r) => Ok(Some(r)),
            None => Err(Error::Refused(format!(
                "{loc}: the bucket's default retention was not applied to this object (the server reports none); pass --retain DURATION"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("7y"), Ok(7 * 365 * 86_400));
        assert_eq!(parse_duration("12h"), Ok(12 * 3_600));
        for bad in [
            "",
            "d",
            "7",
            "7x",
            "-1d",
            "0d",
            "1.5d",
            "99999999999999999999y",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vault_refs_follow_the_layout() {
        let v = VaultRef::of_rel("C1/C1.20261128T021500.000001Z.vault").unwrap();
        assert_eq!(v.case, "C1");
        assert_eq!(v.rel(), "C1/C1.20261128T021500.000001Z.vault");
        for bad in [
            "C1/C1.20261128T021500.000001Z.vault.sha256",
            "C1/C2.20261128T021500.000001Z.vault",
            "x/C1/C1.20261128T021500.000001Z.vault",
            ".casevault/x.20261128T021500.000001Z.vault",
            "C1.20261128T021500.000001Z.vault",
        ] {
            assert_eq!(VaultRef::of_rel(bad), None, "{bad}");
        }
    }
}

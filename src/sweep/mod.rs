//! `casevault sweep`: seal every new or changed case of an inbox into a
//! vault store, unattended (issue #4). The store layout, the state file and
//! the rules are in docs/FORMAT.md ("Sweep store and state"); operating it in docs/OPERATIONS.md.
//!
//! One run: take the store lock (or report [`Outcome::Busy`]), load the state, remove stale
//! temporary files, then for each inbox entry in name order decide
//! skipped / unchanged / seal, seal, check, record, optionally remove the
//! source, and apply retention. A failing case is reported and the run goes
//! on; the exit code says whether anything failed (ripgrep's "keep going,
//! but remember").

mod lock;
mod report;
#[cfg(feature = "s3")]
mod s3;
mod state;
mod store;
mod tree;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use lock::{acquire, Acquire, StoreLock};
pub use report::{now, Record, Reporter, Status, Summary};
#[cfg(feature = "s3")]
pub use s3::default_state_dir;
pub use state::{CaseState, State};
pub use store::{
    check_vault, list_vaults, parse_stamp, stamp, vault_name, vault_stamp, VaultCheck,
};

use crate::error::exit;
use crate::format::{self, Compression};
use crate::recipients::Recipients;
use crate::walk::Root;
use crate::{seal, signal, Error, Result};

/// Exit code when another sweep holds the store lock (EX_TEMPFAIL).
pub const EXIT_LOCKED: i32 = 75;
/// The store's metadata directory (lock and state), `STORE/.casevault`.
pub const META_DIR: &str = ".casevault";
/// The lock file inside [`META_DIR`].
pub const LOCK_FILE: &str = "lock";
/// The state file inside [`META_DIR`].
pub const STATE_FILE: &str = "state.json";

/// What to sweep and how.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub inbox: PathBuf,
    pub store: PathBuf,
    /// `-r` recipients.
    pub recipients: Vec<String>,
    /// `-R` files, read once per run by [`Recipients::load`].
    pub recipients_files: Vec<PathBuf>,
    pub remove_source: bool,
    /// Keep this many newest verified vaults per case (at least 1).
    pub keep: Option<usize>,
    pub dry_run: bool,
    pub compression: Compression,
    pub zstd_level: i32,
    /// `--parity PERCENT`: write each vault's parity file (FORMAT §15).
    pub parity: Option<u32>,
    /// `--sign`: sign each vault (and the custody records).
    pub sign: Option<crate::sign::SigningKey>,
    /// `--custody`: append `sealed` and `removed-source` records (issue #5).
    pub custody: Option<crate::custody::Custody>,
    /// S3 stores (`-o s3://BUCKET/PREFIX`, issue #13): `--retain`
    /// (seconds), `--lock-mode`, `--no-retention`, `--state-dir`.
    pub retain: Option<i64>,
    pub lock_mode: crate::store::LockMode,
    pub no_retention: bool,
    pub state_dir: Option<PathBuf>,
}

/// How a sweep that started ended; the caller prints what is not yet
/// printed and chooses the exit code.
#[derive(Debug)]
pub enum Outcome {
    /// Every inbox entry was processed; `failed` when a case failed or the
    /// `--log` could not be written (exit 1), else exit 0.
    Finished { failed: bool },
    /// Another sweep holds the store lock; nothing was done. The message
    /// says so (exit [`EXIT_LOCKED`]).
    Busy(String),
}

fn is_dir(p: &Path, what: &str) -> Result<PathBuf> {
    let m = fs::metadata(p).map_err(|e| Error::io("cannot open", p, e))?;
    if !m.is_dir() {
        return Err(Error::Refused(format!(
            "{what} {} is not a directory",
            p.display()
        )));
    }
    fs::canonicalize(p).map_err(|e| Error::io("cannot resolve", p, e))
}

/// Run a sweep and report its records and summary through `out`. Errors
/// that stop the whole run (no inbox, unreadable state, a signal) are
/// returned; a run that began ([`Reporter::begin`]) has reported its summary
/// even then.
pub fn run(opts: &SweepOptions, out: &mut dyn Reporter) -> Result<Outcome> {
    if opts.keep == Some(0) {
        return Err(Error::Usage(
            "--keep must be at least 1 (the newest vault is never deleted)".into(),
        ));
    }
    let recipients = Recipients::load(&opts.recipients, &opts.recipients_files)?;
    let (inbox, store, modes, meta, backend) = if crate::source::is_remote(&opts.store) {
        s3_store(opts)?
    } else {
        let (inbox, store) = inbox_and_store(opts)?;
        let modes = StoreModes::of(&store)?;
        let meta = store.join(META_DIR);
        (inbox, store, modes, meta, Backend::Local)
    };
    let _lock = match lock_store(&meta, opts.dry_run)? {
        Ok(l) => l,
        Err(busy) => return Ok(Outcome::Busy(busy)),
    };
    out.begin(opts.dry_run)?;
    let state = State::load(&meta.join(STATE_FILE))?;
    let mut sweep = Sweep {
        opts,
        recipients,
        backend,
        modes,
        store,
        state,
        checked: HashMap::new(),
        summary: Summary {
            summary: true,
            dry_run: opts.dry_run,
            ..Summary::default()
        },
        out,
    };
    let res = sweep.run_all(&inbox, &meta);
    sweep.finish(&res);
    res?;
    Ok(Outcome::Finished {
        failed: sweep.summary.failed > 0 || sweep.out.failed(),
    })
}

/// Where a sweep puts vaults.
enum Backend {
    /// The local store directory (`Sweep::store`).
    Local,
    /// A bucket and prefix (empty or ending in `/`), and how objects are
    /// retained.
    #[cfg(feature = "s3")]
    S3 {
        loc: crate::s3::Location,
        plan: crate::store::RetentionPlan,
    },
}

/// The inbox, the store as shown, the modes, the lock-and-state
/// directory and the backend of an S3 store.
fn s3_store(opts: &SweepOptions) -> Result<(PathBuf, PathBuf, StoreModes, PathBuf, Backend)> {
    #[cfg(feature = "s3")]
    {
        let inbox = is_dir(&opts.inbox, "inbox")?;
        let (loc, plan, meta) = s3::open_store(opts)?;
        let modes = StoreModes {
            file: crate::seal::OUTPUT_MODE,
            dir: 0o700,
        };
        let shown = PathBuf::from(loc.to_string().trim_end_matches('/'));
        Ok((inbox, shown, modes, meta, Backend::S3 { loc, plan }))
    }
    #[cfg(not(feature = "s3"))]
    Err(Error::Refused(format!(
        "{}: this casevault was built without S3 support (cargo feature `s3`)",
        opts.store.display()
    )))
}

/// The inbox and the store, checked and canonical.
fn inbox_and_store(opts: &SweepOptions) -> Result<(PathBuf, PathBuf)> {
    let inbox = is_dir(&opts.inbox, "inbox")?;
    let store = match fs::metadata(&opts.store) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Refused(format!(
                "store {} does not exist; create it first (mkdir -m 0700 {})",
                opts.store.display(),
                opts.store.display()
            )))
        }
        _ => is_dir(&opts.store, "store")?,
    };
    if store.starts_with(&inbox) || inbox.starts_with(&store) {
        return Err(Error::Usage(format!(
            "the inbox {} and the store {} must not contain one another",
            opts.inbox.display(),
            opts.store.display()
        )));
    }
    Ok((inbox, store))
}

/// Take the store lock in `meta` (created if missing), or say who has it.
fn lock_store(meta: &Path, dry_run: bool) -> Result<std::result::Result<StoreLock, String>> {
    if let Err(e) = fs::DirBuilder::new().mode(0o700).create(meta) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(Error::io("cannot create", meta, e));
        }
    }
    Ok(match lock::acquire(&meta.join(LOCK_FILE), !dry_run)? {
        Acquire::Held(l) => Ok(l),
        Acquire::Busy { path, holder } => Err(format!(
            "another sweep is running on this store (lock {} is held{}); nothing was done",
            path.display(),
            holder
                .map(|h| format!("; the last sweep to take it was {h}"))
                .unwrap_or_default()
        )),
    })
}

/// The modes of what sweep creates in the store: the owner's alone, plus
/// group read (and search, for directories) when the store directory is
/// setgid and grants its group read access (2750), so that an administrator can let
/// a group (`custodians`) fetch vaults by the store's own mode, whatever
/// the umask (docs/OPERATIONS.md §3.2). The lock and state in
/// `.casevault/` are never shared.
#[derive(Clone, Copy)]
struct StoreModes {
    /// Vaults, sidecars, signatures.
    file: u32,
    /// Case directories.
    dir: u32,
}

impl StoreModes {
    fn of(store: &Path) -> Result<StoreModes> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(store).map_err(|e| Error::io("cannot inspect", store, e))?;
        // Shared: setgid (so that what is created inherits the store's
        // group) and group-readable, as `install -d -m 2750` makes it.
        let shared = m.permissions().mode() & 0o2040 == 0o2040;
        // What sweep creates gets the store's group through its setgid bit;
        // the kernel drops the setgid bit of a new case directory (and so
        // the group of what goes in it) when the sweep is not a member of
        // that group. Say so now rather than write vaults nobody can fetch.
        if shared && !in_group(m.gid()) {
            return Err(Error::Refused(format!(
                "the store {} is shared with group id {} (mode {:o}), but this account is not \
                 in that group, so the vaults it writes would not be readable by it; add the \
                 sweep account to the store's group (usermod -aG GROUP ACCOUNT, see \
                 OPERATIONS.md §3.2), or make the store 0700",
                store.display(),
                m.gid(),
                m.permissions().mode() & 0o7777
            )));
        }
        Ok(if shared {
            StoreModes {
                file: 0o640,
                dir: 0o750,
            }
        } else {
            StoreModes {
                file: crate::seal::OUTPUT_MODE,
                dir: 0o700,
            }
        })
    }

    /// Set a new case directory's mode (DirBuilder's is cut by the umask),
    /// keeping the setgid bit it inherited from a setgid store.
    fn apply_to_dir(&self, dir: &Path) -> Result<()> {
        let cur = fs::metadata(dir)
            .map_err(|e| Error::io("cannot inspect", dir, e))?
            .permissions()
            .mode();
        fs::set_permissions(dir, fs::Permissions::from_mode((cur & 0o2000) | self.dir))
            .map_err(|e| Error::io("cannot set the mode of", dir, e))
    }
}

/// Whether the process is root or in group `gid` (effective or
/// supplementary), as the kernel decides for chmod's setgid rule.
fn in_group(gid: u32) -> bool {
    use nix::unistd::{getegid, geteuid, getgroups, Gid};
    let gid = Gid::from_raw(gid);
    geteuid().is_root() || getegid() == gid || getgroups().is_ok_and(|g| g.contains(&gid))
}

struct Sweep<'a> {
    opts: &'a SweepOptions,
    recipients: Recipients,
    /// Where vaults go: the local store, or an S3 bucket (src/sweep/s3.rs).
    backend: Backend,
    modes: StoreModes,
    store: PathBuf,
    state: State,
    /// Vault checks done in this run (a vault is read at most once).
    checked: HashMap<PathBuf, VaultCheck>,
    summary: Summary,
    out: &'a mut dyn Reporter,
}

/// An inbox entry's name as a string, or why it is not a case.
enum Entry {
    Case(String),
    Skip(String, &'static str),
    Bad(String, String),
}

fn classify(ent: &fs::DirEntry) -> Entry {
    let raw = ent.file_name();
    let shown = raw.to_string_lossy().into_owned();
    if shown.starts_with('.') {
        return Entry::Skip(shown, "hidden");
    }
    match ent.file_type() {
        Ok(t) if t.is_dir() => {}
        Ok(t) if t.is_symlink() => return Entry::Skip(shown, "a symlink, not a directory"),
        Ok(_) => return Entry::Skip(shown, "not a directory"),
        Err(e) => return Entry::Bad(shown, format!("cannot stat: {e}")),
    }
    match raw.to_str() {
        Some(name) if format::is_valid_case_id(name) => Entry::Case(name.to_string()),
        _ => Entry::Bad(
            shown,
            "the directory name is not a valid case id ([A-Za-z0-9][A-Za-z0-9._-]{0,127}); rename it"
                .into(),
        ),
    }
}

impl Sweep<'_> {
    /// How sweep seals case `case` (open at `case_dir`) into `vault`,
    /// whatever the store.
    fn seal_options(
        &self,
        case_dir: &std::path::Path,
        case: &str,
        vault: PathBuf,
    ) -> Result<seal::SealOptions> {
        Ok(seal::SealOptions {
            case_dir: case_dir.to_path_buf(),
            output: vault,
            recipients: self.recipients.parse()?,
            case_id: Some(case.to_string()),
            compression: self.opts.compression,
            zstd_level: self.opts.zstd_level,
            armor: false,
            force: false,
            collect_entries: self.opts.remove_source,
            sign: self.opts.sign.clone(),
            output_mode: self.modes.file,
            parity: self.opts.parity,
        })
    }

    /// Complete the summary with how the run ended, and report it.
    fn finish(&mut self, res: &Result<()>) {
        self.summary.time = report::now();
        if let Err(Error::Interrupted(_)) = res {
            self.summary.interrupted = true;
        }
        self.summary.exit = match res {
            Err(e) => exit::code(e.kind()),
            Ok(()) if self.summary.failed > 0 => exit::ERROR,
            Ok(()) => exit::OK,
        };
        if let Err(e) = res {
            if !matches!(e, Error::Interrupted(_)) {
                self.summary.error = Some(e.to_string());
            }
        }
        self.out.summary(&self.summary);
    }

    fn emit(&mut self, r: Record) {
        self.summary.count(&r);
        self.out.record(&r);
    }

    fn check(&mut self, path: &Path) -> Result<VaultCheck> {
        if let Some(c) = self.checked.get(path) {
            return Ok(c.clone());
        }
        let c = match &self.backend {
            Backend::Local => store::check_vault(path)?,
            #[cfg(feature = "s3")]
            Backend::S3 { .. } => s3::check_vault(path)?,
        };
        self.checked.insert(path.to_path_buf(), c.clone());
        Ok(c)
    }

    fn run_all(&mut self, inbox: &Path, meta: &Path) -> Result<()> {
        // Under the lock, every temporary file in the store is ours and
        // left over from an interrupted run.
        #[cfg(feature = "s3")]
        if let Backend::S3 { loc, .. } = &self.backend {
            self.summary.stale_temp_removed = s3::abort_stale(loc, self.opts.dry_run)?;
            return self.run_cases(inbox);
        }
        let stale = store::stale_temp_files(&self.store, meta)?;
        for p in &stale {
            if !self.opts.dry_run {
                fs::remove_file(p)
                    .map_err(|e| Error::io("cannot remove stale temporary file", p, e))?;
            }
        }
        self.summary.stale_temp_removed = stale.len() as u64;
        self.run_cases(inbox)
    }

    fn run_cases(&mut self, inbox: &Path) -> Result<()> {
        let inbox_dir = Root::open(inbox)?;
        let mut entries: Vec<fs::DirEntry> = fs::read_dir(inbox)
            .map_err(|e| Error::io("cannot list", inbox, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("cannot list", inbox, e))?;
        entries.sort_by_key(|e| e.file_name());
        let mut seen = BTreeSet::new();
        for ent in entries {
            signal::check()?;
            match classify(&ent) {
                Entry::Skip(name, why) => {
                    let mut r = Record::new(&name, Status::Skipped);
                    r.reason = Some(why.into());
                    r.dry_run = self.opts.dry_run;
                    self.emit(r);
                }
                Entry::Bad(name, why) => {
                    let mut r = Record::new(&name, Status::Failed);
                    r.dry_run = self.opts.dry_run;
                    r.fail(why);
                    self.emit(r);
                }
                Entry::Case(case) => match inbox_dir.open_child(OsStr::new(&case)) {
                    Ok(src) => {
                        seen.insert(case.clone());
                        let r = self.case(&case, &src)?;
                        self.emit(r);
                    }
                    Err(e) => {
                        let r = self.vanished(inbox, &case, e);
                        self.emit(r);
                    }
                },
            }
        }
        self.prune_departed(&seen)
    }

    /// A case listed as a directory, but replaced or removed since it was
    /// listed: never follow what took its place.
    fn vanished(&self, inbox: &Path, case: &str, e: std::io::Error) -> Record {
        let mut r = Record::new(case, Status::Skipped);
        r.dry_run = self.opts.dry_run;
        match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR) => {
                r.reason = Some(
                    "no longer a directory (replaced after the inbox was listed); not followed"
                        .into(),
                )
            }
            Some(libc::ENOENT) => {
                r.reason = Some("no longer in the inbox (removed after it was listed)".into())
            }
            _ => r.fail(Error::io("cannot open case directory", &inbox.join(case), e).to_string()),
        }
        r
    }

    /// Retention applies on every run to every case in the store, also
    /// those whose source has left the inbox (`seen` holds those that have
    /// not; CLARIFICATIONS).
    fn prune_departed(&mut self, seen: &BTreeSet<String>) -> Result<()> {
        let Some(keep) = self.opts.keep else {
            return Ok(());
        };
        for case in self.store_cases()? {
            if seen.contains(&case) {
                continue;
            }
            signal::check()?;
            let mut r = Record::new(&case, Status::Pruned);
            r.dry_run = self.opts.dry_run;
            self.retention(&case, keep, false, &mut r)?;
            if !r.pruned.is_empty() || r.status == Status::Failed {
                self.emit(r);
            }
        }
        Ok(())
    }

    /// Case directories of the store (valid case ids, not hidden).
    fn store_cases(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for ent in
            fs::read_dir(&self.store).map_err(|e| Error::io("cannot list", &self.store, e))?
        {
            let ent = ent.map_err(|e| Error::io("cannot list", &self.store, e))?;
            if !ent.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some(name) = ent.file_name().to_str() {
                if format::is_valid_case_id(name) {
                    out.push(name.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Process one case. Only a signal (or a failure to record state)
    /// escapes as an error; everything else becomes a failed record.
    fn case(&mut self, case: &str, src: &Root) -> Result<Record> {
        let mut r = Record::new(case, Status::Unchanged);
        r.dry_run = self.opts.dry_run;
        match self.case_inner(case, src, &mut r) {
            Ok(()) => {}
            Err(Error::Interrupted(sig)) => {
                r.fail(format!(
                    "interrupted by signal {sig}; temporary files removed"
                ));
                self.emit(r);
                return Err(Error::Interrupted(sig));
            }
            Err(e) => r.fail(e.to_string()),
        }
        if let Some(keep) = self.opts.keep {
            let pending = r.status == Status::WouldSeal;
            match self.retention(case, keep, pending, &mut r) {
                Err(Error::Interrupted(sig)) => return Err(Error::Interrupted(sig)),
                Err(e) => r.fail(format!("retention: {e}")),
                Ok(()) => {}
            }
        }
        Ok(r)
    }

    fn case_inner(&mut self, case: &str, src: &Root, r: &mut Record) -> Result<()> {
        let scan = tree::scan(src)?;
        r.files = Some(scan.files);
        r.bytes = Some(scan.bytes);
        let case_dir = self.store.join(case);
        let prev = self.state.cases.get(case).cloned();

        // Unchanged: same fingerprint as at the last seal, and that vault is
        // still on disk exactly as written.
        //
        // The state is not authenticated against someone who can write the
        // store (issue #10 item 13), so it may only save work, never decide
        // a removal: with --remove-source an unchanged case is sealed again
        // and removed only after that new vault is read back and the source
        // re-hashed against it.
        let mut reason = "new case";
        if let Some(prev) = &prev {
            if prev.fingerprint != scan.fingerprint {
                reason = "contents changed";
            } else {
                let path = case_dir.join(&prev.vault);
                match self.check(&path)? {
                    VaultCheck::Ok(h) if h == prev.vault_sha256 && !self.opts.remove_source => {
                        r.status = Status::Unchanged;
                        r.vault = Some(path);
                        r.vault_sha256 = Some(h);
                        return Ok(());
                    }
                    VaultCheck::Ok(h) if h == prev.vault_sha256 => {
                        reason = "unchanged; sealed again because --remove-source removes only what this run sealed";
                    }
                    VaultCheck::Missing => reason = "newest vault missing from the store",
                    other => {
                        // Damage in the store is worth a person's attention
                        // even though re-sealing repairs it.
                        r.fail(format!(
                            "newest vault {} {} (kept); sealing a new generation",
                            path.display(),
                            match other {
                                VaultCheck::Ok(_) => "is not the one recorded".to_string(),
                                o => o.describe(),
                            }
                        ));
                        reason = "newest vault damaged";
                    }
                }
            }
        }
        r.reason = Some(reason.into());
        if self.opts.dry_run {
            // The stat walk already sees what seal would refuse.
            if let Some(p) = &scan.special {
                return Err(Error::Refused(format!(
                    "{}: not a regular file, directory or symlink; sealing would fail",
                    p.display()
                )));
            }
            if r.status != Status::Failed {
                r.status = Status::WouldSeal;
            }
            if self.opts.remove_source {
                // What removal would cover if the post-seal checks pass.
                r.removed_files = Some(scan.files);
                r.removed_symlinks = Some(scan.symlinks);
                r.removed_dirs = Some(scan.dirs);
            }
            return Ok(());
        }
        self.seal_case(case, src, &case_dir, &scan, r)
    }

    fn seal_case(
        &mut self,
        case: &str,
        src: &Root,
        case_dir: &Path,
        scan: &tree::Scan,
        r: &mut Record,
    ) -> Result<()> {
        #[cfg(feature = "s3")]
        if let Backend::S3 { .. } = &self.backend {
            return self.seal_s3(case, src, scan, r);
        }
        let created = match fs::DirBuilder::new().mode(0o700).create(case_dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(Error::io("cannot create", case_dir, e)),
        };
        if created {
            self.modes.apply_to_dir(case_dir)?;
        }
        let res = self.seal_into(case, src, case_dir, scan, r);
        if res.is_err() && created {
            // A first seal that failed leaves no empty case directory.
            let _ = fs::remove_dir(case_dir);
        }
        res
    }

    fn seal_into(
        &mut self,
        case: &str,
        src: &Root,
        case_dir: &Path,
        scan: &tree::Scan,
        r: &mut Record,
    ) -> Result<()> {
        let existing = store::list_vaults(case_dir, case)?;
        let name =
            store::new_vault_name(case_dir, case, &existing, time::OffsetDateTime::now_utc())?;
        let vault = case_dir.join(&name);
        let report = seal::seal_from(self.seal_options(&src.path, case, vault.clone())?, src)?;
        let failed_before = r.status == Status::Failed;
        if !failed_before {
            r.status = Status::Sealed;
        }
        r.vault = Some(vault.clone());
        r.vault_sha256 = Some(report.vault_sha256.clone());
        r.files = Some(report.files);
        r.bytes = Some(report.payload_bytes);

        // Before anything relies on the new vault (removing the plaintext,
        // deleting older generations), read it back from disk.
        if self.opts.remove_source || self.opts.keep.is_some() {
            let check = store::check_vault(&vault)?;
            let good = matches!(&check, VaultCheck::Ok(h) if *h == report.vault_sha256);
            if !good {
                store::delete_vault(&vault)?;
                r.vault = None;
                r.vault_sha256 = None;
                r.status = Status::Failed;
                return Err(Error::Refused(format!(
                    "the vault read back from disk does not match what was written ({}); it was deleted and the source kept",
                    check.describe()
                )));
            }
            self.checked.insert(vault.clone(), check);
        }

        let before = self.state.cases.insert(
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
            return Err(self.roll_back(case, before, &vault, r, e));
        }
        self.custody("sealed", r)?;

        if self.opts.remove_source {
            let plan = tree::check_sealed(src, &report.entries).map_err(|e| {
                Error::Refused(format!("source kept: {e}; the next sweep seals it again"))
            })?;
            self.remove(&plan, r)?;
        }
        Ok(())
    }

    /// Undo a seal whose vault could not be recorded in the state (a full
    /// disk, say): a vault in no state and no custody record would be
    /// sealed again by the next run and sit in the store unexplained, so it
    /// is deleted again (with its sidecar and signature) and the case fails
    /// with its source kept (docs/OPERATIONS.md §1).
    fn roll_back(
        &mut self,
        case: &str,
        before: Option<CaseState>,
        vault: &Path,
        r: &mut Record,
        cause: Error,
    ) -> Error {
        match before {
            Some(prev) => self.state.cases.insert(case.to_string(), prev),
            None => self.state.cases.remove(case),
        };
        self.checked.remove(vault);
        r.vault = None;
        r.vault_sha256 = None;
        let undone = match store::delete_vault(vault) {
            Ok(()) => "the new vault was deleted again and the source kept; the next sweep \
                       seals the case again"
                .to_string(),
            Err(e) => format!(
                "deleting the new vault again failed too ({e}); it is in no state and no \
                 custody record: remove it and its sidecar by hand"
            ),
        };
        Error::Refused(format!(
            "the new vault could not be recorded in the sweep state ({cause}); {undone}"
        ))
    }

    /// Append a custody record for case record `r`, if `--custody`.
    fn custody(&self, action: &'static str, r: &Record) -> Result<()> {
        if let Some(c) = &self.opts.custody {
            c.append(&crate::custody::Event {
                action,
                case_id: Some(r.case.clone()),
                vault: r.vault.clone(),
                vault_sha256: r.vault_sha256.clone(),
                ok: true,
            })?;
        }
        Ok(())
    }

    fn remove(&mut self, plan: &tree::Plan, r: &mut Record) -> Result<()> {
        let done = tree::remove(plan)?;
        self.custody("removed-source", r)?;
        r.removed_files = Some(done.files);
        r.removed_symlinks = Some(done.symlinks);
        r.removed_dirs = Some(done.dirs);
        if !done.kept_changed.is_empty() {
            r.fail(format!(
                "{} entries changed after they were checked and were kept (first: {})",
                done.kept_changed.len(),
                done.kept_changed[0].display()
            ));
        }
        if let Some((path, e)) = done.failed.first() {
            r.fail(format!(
                "{} of the source could not be removed and kept (first: {}: {e}); the vault holds them",
                match done.failed.len() {
                    1 => "1 entry".to_string(),
                    n => format!("{n} entries"),
                },
                path.display()
            ));
        }
        Ok(())
    }

    fn retention(
        &mut self,
        case: &str,
        keep: usize,
        pending_new: bool,
        r: &mut Record,
    ) -> Result<()> {
        let dir = self.store.join(case);
        // The vault the state relies on is never deleted; in a dry run
        // that would seal, the state would have moved on to the new one.
        let protect = if pending_new {
            None
        } else {
            self.state.cases.get(case).map(|c| c.vault.clone())
        };
        let mut checked = std::mem::take(&mut self.checked);
        let res = store::prune(
            &dir,
            case,
            keep,
            protect.as_deref(),
            pending_new,
            self.opts.dry_run,
            &mut |p: &Path| {
                if let Some(c) = checked.get(p) {
                    return Ok(c.clone());
                }
                let c = store::check_vault(p)?;
                checked.insert(p.to_path_buf(), c.clone());
                Ok(c)
            },
        );
        self.checked = checked;
        let pruning = res?;
        // The log is the chain of custody of every vault, its end included.
        if !self.opts.dry_run {
            if let Some(c) = &self.opts.custody {
                for (name, sha) in pruning.pruned.iter().zip(&pruning.pruned_sha256) {
                    c.append(&crate::custody::Event {
                        action: "pruned",
                        case_id: Some(case.to_string()),
                        vault: Some(dir.join(name)),
                        vault_sha256: sha.clone(),
                        ok: true,
                    })?;
                }
            }
        }
        r.pruned = pruning.pruned;
        if !pruning.problems.is_empty() {
            r.fail(format!("retention: {}", pruning.problems.join("; ")));
        }
        Ok(())
    }
}

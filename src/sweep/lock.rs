//! The store lock: an OS advisory lock (`flock(2)`, exclusive, non-blocking)
//! on `STORE/.casevault/lock`, held for a whole sweep.
//!
//! An OS lock rather than a pid file because the kernel drops it when the
//! holder's last descriptor closes, including on `kill -9` or a crash: a
//! killed sweep never blocks the next night (issue #4).

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::{Error, Result};

/// A held store lock; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct StoreLock {
    _file: fs::File,
}

/// The outcome of trying to take the lock.
#[derive(Debug)]
pub enum Acquire {
    /// We hold the lock until the value is dropped.
    Held(StoreLock),
    /// Another process holds it. `holder` is what the lock file says about
    /// the last sweep that wrote it (a pid), if anything.
    Busy {
        path: PathBuf,
        holder: Option<String>,
    },
}

/// Try to take the lock at `path` without waiting. The file is created
/// (mode 0600) if missing but never truncated unless we get the lock, so a
/// second sweep that finds the lock busy changes nothing. With `record_pid`
/// the holder writes its pid into the file, for the busy message.
pub fn acquire(path: &Path, record_pid: bool) -> Result<Acquire> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("cannot open lock file", path, e))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut text = String::new();
            let holder = match Read::by_ref(&mut file).take(64).read_to_string(&mut text) {
                Ok(_) if !text.trim().is_empty() => Some(text.trim().to_string()),
                _ => None,
            };
            return Ok(Acquire::Busy {
                path: path.to_path_buf(),
                holder,
            });
        }
        Err(e) => return Err(Error::io("cannot lock", path, io::Error::from(e))),
    }
    if record_pid {
        // Informational only: the lock is the flock, not this text.
        let res = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "pid {}", std::process::id()));
        res.map_err(|e| Error::io("cannot write lock file", path, e))?;
    }
    Ok(Acquire::Held(StoreLock { _file: file }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_in_another_open_file_description_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let first = acquire(&p, true).unwrap();
        assert!(matches!(first, Acquire::Held(_)));
        match acquire(&p, true).unwrap() {
            Acquire::Busy { holder, .. } => {
                assert_eq!(holder, Some(format!("pid {}", std::process::id())))
            }
            Acquire::Held(_) => panic!("flock must exclude a second open"),
        }
        drop(first);
        assert!(matches!(acquire(&p, false).unwrap(), Acquire::Held(_)));
    }
}

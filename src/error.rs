//! Typed errors: each variant follows a decision a caller has to make
//! (integrity failure vs. wrong key vs. I/O vs. refusal), so that the binary
//! can map them to exit codes without looking at strings.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What kind of failure an [`Error`] is; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// I/O, unreadable or unsupported input, existing output: exit 1.
    Operational,
    /// Bad command-line use: exit 2.
    Usage,
    /// The vault is damaged, tampered with, truncated or unsafe: exit 3.
    Integrity,
    /// None of the given identities can open the vault: exit 4.
    NoMatchingKey,
    /// Stopped by SIGINT (130) or SIGTERM (143).
    Interrupted(i32),
}

/// The library's error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a named path failed. The cause is part of the
    /// message (and deliberately not a `source()`, so that a printed chain
    /// does not repeat it).
    #[error("{op} {}: {cause}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    /// The vault (or its sidecar) does not check out.
    #[error("integrity failure: {0}")]
    Integrity(String),
    /// The vault is intact but holds an entry casevault will not create
    /// (a symlink leaving the case).
    #[error("unsafe entry: {0}")]
    UnsafeEntry(String),
    /// No identity matched any recipient stanza in the vault header.
    #[error("no identity given can open this vault")]
    NoMatchingKey,
    /// Input we will not seal or an operation we refuse (FIFO, non-UTF-8
    /// name, changed file, existing output, bad key file…).
    #[error("{0}")]
    Refused(String),
    /// A usage error detected after argument parsing.
    #[error("{0}")]
    Usage(String),
    /// The vault was written by a newer casevault.
    #[error("unsupported vault format: {0}")]
    Unsupported(String),
    /// `error`, after which a staging directory could not be removed
    /// completely; `what` says which and why. Exits as `error` does.
    #[error("{error}; {what}")]
    NotRemoved { error: Box<Error>, what: String },
    /// SIGINT or SIGTERM arrived; temporary output was removed.
    #[error("interrupted by signal {0}; temporary files removed")]
    Interrupted(i32),
}

impl Error {
    /// Which exit code this error maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::Refused(_) | Error::Unsupported(_) => ErrorKind::Operational,
            Error::Integrity(_) | Error::UnsafeEntry(_) => ErrorKind::Integrity,
            Error::NoMatchingKey => ErrorKind::NoMatchingKey,
            Error::Usage(_) => ErrorKind::Usage,
            Error::Interrupted(sig) => ErrorKind::Interrupted(*sig),
            Error::NotRemoved { error, .. } => error.kind(),
        }
    }

    /// A short recommendation to print after the error, if there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Integrity(_) => Some(
                "do not trust this vault; fetch another copy and check it with `casevault verify`",
            ),
            Error::UnsafeEntry(_) => Some(
                "nothing was written; if you trust who sealed this vault, --allow-external-links recreates such links verbatim",
            ),
            Error::NoMatchingKey => {
                Some("check that -i names the identity of a recipient this vault was sealed to")
            }
            Error::Unsupported(_) => Some("open this vault with a newer casevault"),
            Error::NotRemoved { error, .. } => error.hint(),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        if let Some(sig) = crate::signal::pending() {
            return Error::Interrupted(sig);
        }
        Error::Io {
            op,
            path: path.to_path_buf(),
            cause: source,
        }
    }

    pub(crate) fn integrity(msg: impl fmt::Display) -> Self {
        Error::Integrity(msg.to_string())
    }
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes, as documented in README and docs/CLI.md.
pub mod exit {
    use super::ErrorKind;
    /// Success.
    pub const OK: i32 = 0;
    /// Operational error.
    pub const ERROR: i32 = 1;
    /// Usage error.
    pub const USAGE: i32 = 2;
    /// Integrity failure.
    pub const INTEGRITY: i32 = 3;
    /// No matching key.
    pub const NO_MATCHING_KEY: i32 = 4;

    /// Exit code for an error kind.
    pub fn code(kind: ErrorKind) -> i32 {
        match kind {
            ErrorKind::Operational => ERROR,
            ErrorKind::Usage => USAGE,
            ErrorKind::Integrity => INTEGRITY,
            ErrorKind::NoMatchingKey => NO_MATCHING_KEY,
            ErrorKind::Interrupted(sig) => 128 + sig,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        #[test]
        fn codes_are_the_documented_ones() {
            assert_eq!(code(ErrorKind::Operational), 1);
            assert_eq!(code(ErrorKind::Usage), 2);
            assert_eq!(code(ErrorKind::Integrity), 3);
            assert_eq!(code(ErrorKind::NoMatchingKey), 4);
            assert_eq!(code(ErrorKind::Interrupted(2)), 130);
            assert_eq!(code(ErrorKind::Interrupted(15)), 143);
        }
    }
}

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
    /// The vault (or its sidecar) does not check out: one finding, or
    /// every finding of a check that collects them.
    #[error("integrity failure: {0}")]
    Integrity(Findings),
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
    /// An S3 request failed: the operation, bucket, key, the S3 error code
    /// (or `ConnectionFailed`, `Timeout`, ...) and the server's message.
    /// Never a credential (issue #13).
    #[error("S3 {op} of s3://{bucket}/{key} failed: {code}{}", if .detail.is_empty() { String::new() } else { format!(" ({})", .detail) })]
    S3 {
        op: &'static str,
        bucket: String,
        key: String,
        code: String,
        detail: String,
    },
}

impl Error {
    /// Which exit code this error maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::Refused(_) | Error::Unsupported(_) | Error::S3 { .. } => {
                ErrorKind::Operational
            }
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
            Error::S3 { code, .. } => match code.as_str() {
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "CredentialsNotLoaded" => Some(
                    "check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or AWS_PROFILE and ~/.aws/credentials (docs/OPERATIONS.md, S3 stores)",
                ),
                "ConnectionFailed" | "Timeout" | "DispatchFailure" => Some(
                    "check that the S3 endpoint (AWS_ENDPOINT_URL) is up and reachable",
                ),
                "NoSuchBucket" => Some("check the bucket name, or create the bucket (with Object Lock for a vault store)"),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        if let Some(sig) = crate::signal::pending() {
            return Error::Interrupted(sig);
        }
        Error::Io {
            op,
            path: path.to_path_buf(),
            cause: source,
        }
    }

    /// An integrity failure described in prose only.
    pub fn integrity(msg: impl fmt::Display) -> Self {
        Error::Integrity(Findings(vec![Finding::Other(msg.to_string())]))
    }

    /// An integrity failure made of typed findings (`Ok` if there are none).
    pub(crate) fn findings(list: Vec<Finding>) -> Result<()> {
        if list.is_empty() {
            Ok(())
        } else {
            Err(Error::Integrity(Findings(list)))
        }
    }
}

/// Which listing a finding compares the payload (or a tag file) with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `manifest-sha256.txt`.
    Manifest,
    /// `tagmanifest-sha256.txt`.
    TagManifest,
    /// `casevault.json`'s entries.
    CaseJson,
}

/// One integrity finding. `Display` gives the human message (the same
/// text casevault printed before findings were typed); `verify --json`
/// lists each as `{kind, message, path?, expected?, actual?}` (docs/CLI.md).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// A file's SHA-256 differs from what `against` records for it (for a
    /// tag file listed in the tag manifest, `actual` is the tag file's).
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
        against: Listing,
    },
    /// A file's size differs from what `casevault.json` records.
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    /// `listed_in` names a file (or directory) the payload does not hold.
    Missing {
        path: String,
        listed_in: Listing,
        dir: bool,
    },
    /// The payload (or bag) holds a file (or directory) `not_in` does not
    /// list.
    Unexpected {
        path: String,
        not_in: Listing,
        dir: bool,
    },
    /// A tag file is malformed or disagrees with the bag; `detail` is the
    /// whole message.
    TagFile { file: &'static str, detail: String },
    /// The vault file's SHA-256 differs from its `.sha256` sidecar.
    SidecarMismatch {
        expected: String,
        actual: String,
        /// Whether the contents were checked (and verified) first.
        contents_verified: bool,
    },
    /// A signature is missing, invalid or untrusted.
    Signature(String),
    /// Anything else, in prose (damaged stream, unsafe tar entry, …).
    Other(String),
    /// More findings than a check keeps ([`crate::format::MAX_PROBLEMS`]).
    More(u64),
}

impl Finding {
    /// The finding's kind, as `verify --json` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::HashMismatch { .. } => "hash_mismatch",
            Finding::SizeMismatch { .. } => "size_mismatch",
            Finding::Missing { .. } => "missing",
            Finding::Unexpected { .. } => "unexpected",
            Finding::TagFile { .. } => "tag_file",
            Finding::SidecarMismatch { .. } => "sidecar_mismatch",
            Finding::Signature(_) => "signature",
            Finding::Other(_) => "other",
            Finding::More(_) => "more",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::format::TAGMANIFEST;
        match self {
            Finding::HashMismatch {
                path,
                expected,
                actual,
                against,
            } => match against {
                Listing::Manifest => write!(
                    f,
                    "{path}: SHA-256 mismatch (manifest {expected}, payload {actual})"
                ),
                Listing::TagManifest => write!(f, "{path}: SHA-256 does not match {TAGMANIFEST}"),
                Listing::CaseJson => write!(
                    f,
                    "{path}: SHA-256 in casevault.json does not match the payload"
                ),
            },
            Finding::SizeMismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "{path}: size {expected} in casevault.json, {actual} in the payload"
            ),
            Finding::Missing {
                path, listed_in, ..
            } => match listed_in {
                Listing::Manifest => {
                    write!(f, "{path}: listed in the manifest but not in the payload")
                }
                Listing::TagManifest => {
                    write!(f, "{path}: listed in {TAGMANIFEST} but not in the bag")
                }
                Listing::CaseJson => {
                    let what = if self.is_dir() { "directory " } else { "" };
                    write!(f, "{path}: {what}in casevault.json but not in the payload")
                }
            },
            Finding::Unexpected { path, not_in, dir } => match not_in {
                Listing::Manifest => write!(f, "{path}: in the payload but not in the manifest"),
                Listing::TagManifest => write!(f, "{path} is not in {TAGMANIFEST}"),
                Listing::CaseJson if *dir => write!(
                    f,
                    "{path}: directory in the payload but not in casevault.json"
                ),
                Listing::CaseJson => write!(f, "{path}: in the payload but not in casevault.json"),
            },
            Finding::TagFile { detail, .. } => f.write_str(detail),
            Finding::SidecarMismatch {
                expected,
                actual,
                contents_verified: false,
            } => write!(
                f,
                "vault SHA-256 {actual} does not match the sidecar {expected}"
            ),
            Finding::SidecarMismatch { actual, .. } => write!(
                f,
                "the contents verify, but the vault's SHA-256 {actual} does not match its sidecar"
            ),
            Finding::Signature(m) | Finding::Other(m) => f.write_str(m),
            Finding::More(n) => write!(f, "and {n} more problems"),
        }
    }
}

impl Finding {
    fn is_dir(&self) -> bool {
        matches!(
            self,
            Finding::Missing { dir: true, .. } | Finding::Unexpected { dir: true, .. }
        )
    }

    /// The path a finding is about, where it names one.
    pub fn path(&self) -> Option<&str> {
        match self {
            Finding::HashMismatch { path, .. }
            | Finding::SizeMismatch { path, .. }
            | Finding::Missing { path, .. }
            | Finding::Unexpected { path, .. } => Some(path),
            _ => None,
        }
    }

    /// What was recorded and what was found, where they apply.
    pub fn expected_actual(&self) -> Option<(String, String)> {
        match self {
            Finding::HashMismatch {
                expected, actual, ..
            }
            | Finding::SidecarMismatch {
                expected, actual, ..
            } => Some((expected.clone(), actual.clone())),
            Finding::SizeMismatch {
                expected, actual, ..
            } => Some((expected.to_string(), actual.to_string())),
            _ => None,
        }
    }
}

impl serde::Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let ea = self.expected_actual();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", self.kind())?;
        m.serialize_entry("message", &self.to_string())?;
        if let Some(p) = self.path() {
            m.serialize_entry("path", p)?;
        }
        if let Some((e, a)) = &ea {
            m.serialize_entry("expected", e)?;
            m.serialize_entry("actual", a)?;
        }
        m.end()
    }
}

/// The findings of one integrity failure; displayed joined by `"; "`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings(pub Vec<Finding>);

impl fmt::Display for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, finding) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{finding}")?;
        }
        Ok(())
    }
}

impl Findings {
    /// Whether the message contains `text` (for tests and callers that
    /// look for one case).
    pub fn contains(&self, text: &str) -> bool {
        self.to_string().contains(text)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Findings display as the messages they replaced, joined by "; ".
    #[test]
    fn findings_display_and_serialise() {
        let (h, g) = ("a".repeat(64), "b".repeat(64));
        let e = Error::Integrity(Findings(vec![
            Finding::HashMismatch {
                path: "data/x".into(),
                expected: h.clone(),
                actual: g.clone(),
                against: Listing::Manifest,
            },
            Finding::Missing {
                path: "data/d".into(),
                listed_in: Listing::CaseJson,
                dir: true,
            },
            Finding::More(3),
        ]));
        assert_eq!(
            e.to_string(),
            format!(
                "integrity failure: data/x: SHA-256 mismatch (manifest {h}, payload {g}); \
                 data/d: directory in casevault.json but not in the payload; and 3 more problems"
            )
        );
        let Error::Integrity(f) = e else {
            unreachable!()
        };
        let v = serde_json::to_value(&f.0).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"kind": "hash_mismatch", "message": f.0[0].to_string(), "path": "data/x",
                 "expected": h, "actual": g},
                {"kind": "missing", "message": f.0[1].to_string(), "path": "data/d"},
                {"kind": "more", "message": "and 3 more problems"},
            ])
        );
    }
}

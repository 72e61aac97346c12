//! casevault seals forensic case folders into encrypted, self-verifying
//! archives: an age v1 file holding a (zstd-compressed) tar stream of one
//! BagIt 1.0 bag with SHA-256 manifests. The format is specified in
//! `docs/FORMAT.md`; every vault opens with the stock `age`, `zstd` and `tar`.
//!
//! The library does the work; `src/main.rs` only parses arguments and maps
//! errors to exit codes.
#![forbid(unsafe_code)]

pub mod allowed_signers;
mod creators;
pub mod custody;
mod direct;
pub mod error;
pub mod format;
pub mod frames;
pub mod io;
pub mod keys;
pub mod manifest;
pub mod parity;
mod pipe;
pub mod progress;
pub mod read;
pub mod recipients;
pub mod rekey;
pub mod report;
#[cfg(feature = "s3")]
pub mod s3;
pub mod salvage;
pub mod sanitize;
pub mod seal;
pub mod sidecar;
pub mod sign;
pub mod signal;
pub mod source;
pub mod store;
pub mod sweep;
mod tarfmt;
pub mod unseal;
pub mod verify;
pub mod walk;

pub use error::{Error, ErrorKind, Finding, Result};
/// Kept at their paths from before `src/keys/` (issue #11).
pub use keys::{passphrase, pq};

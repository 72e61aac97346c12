//! Shared helpers for the integration tests, one module per concern:
//!
//! - [`run`]: running the binary (`casevault()`, `bin_command()`, the panic
//!   log), its outputs as text or JSON, the error-message check;
//! - [`keys`]: age identities and private files;
//! - [`fixture`]: `Fx`, one temporary directory per test, with seal/unseal;
//! - [`case`]: case trees (`CaseTree`, `rich_case`, `small_case`, …);
//! - [`tree`]: walking, snapshotting and comparing trees;
//! - [`tools`]: locating and running stock tools;
//! - [`vault`]: the age layer of a vault (decrypt, encrypt, find the tar);
//! - [`rawtar`]: raw tar members (parse, edit, build, pax records);
//! - [`craft`]: crafting vaults no casevault would write (`Bag`, `Recipe`,
//!   streamed tars, hand-made zstd frames).
//!
//! Everything is re-exported here, so test modules `use crate::util::*;`.

mod case;
mod craft;
mod fixture;
mod keys;
mod rawtar;
mod run;
mod tools;
mod tree;
mod vault;

pub use case::*;
pub use craft::*;
pub use fixture::*;
pub use keys::*;
pub use rawtar::*;
pub use run::*;
pub use tools::*;
pub use tree::*;
pub use vault::*;

/// Magic bytes of a zstd frame (RFC 8878), see FORMAT.md §2 item 2.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Size of one age payload chunk on disk: 64 KiB plaintext + 16-byte tag.
pub const AGE_CHUNK: usize = 65536 + 16;

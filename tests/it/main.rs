//! Integration tests for the `casevault` binary: one test binary, a module
//! per command (see /work/shared/STYLE.md "Testing"). Every test drives the
//! real binary in a temporary directory and checks exact exit codes, outputs
//! and that failing commands leave nothing behind.

#![forbid(unsafe_code)]

mod unpriv;
mod util;

mod cctv;
mod corruption;
mod custody;
mod faults;
mod hostile;
mod interop;
mod key_hygiene;
mod keygen;
mod list;
mod ops;
mod parity;
mod partial;
mod passphrase;
mod plugin;
mod pq;
mod progress;
mod rekey;
mod report;
mod roundtrip_prop;
#[cfg(feature = "s3")]
mod s3;
mod salvage;
mod seal;
mod sign;
mod sweep;
mod unseal;
mod unseal_unpriv;
mod vectors;
mod verify;

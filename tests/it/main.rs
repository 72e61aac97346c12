//! Integration tests for the `casevault` binary: one test binary, a module
//! per command (see /work/shared/STYLE.md "Testing"). Every test drives the
//! real binary in a temporary directory and checks exact exit codes, outputs
//! and that failing commands leave nothing behind.

#![forbid(unsafe_code)]

mod util;

mod cctv;
mod corruption;
mod custody;
mod hostile;
mod interop;
mod keygen;
mod list;
mod pq;
mod rekey;
mod seal;
mod sign;
mod sweep;
mod unseal;
mod verify;

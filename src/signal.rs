//! SIGINT/SIGTERM handling: the first signal sets a flag that the streaming
//! loops check between buffers, so that they unwind through the normal error
//! path and every temporary file or staging directory is removed by its
//! owner's `Drop`. A second signal terminates at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

static FLAGS: OnceLock<(Arc<AtomicBool>, Arc<AtomicBool>)> = OnceLock::new();

/// Install the handlers. Call once, early in `main`.
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let int = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    // Order matters: the conditional shutdown must be registered before the
    // flag setter, so that it sees the flag still false on the first signal.
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&int))?;
    signal_hook::flag::register(SIGINT, Arc::clone(&int))?;
    signal_hook::flag::register_conditional_shutdown(SIGTERM, 143, Arc::clone(&term))?;
    signal_hook::flag::register(SIGTERM, Arc::clone(&term))?;
    // With a file size limit (RLIMIT_FSIZE, e.g. `prlimit --fsize`), a write
    // past it raises SIGXFSZ, whose default action kills the process without
    // cleaning up. Caught, the write fails with EFBIG instead, and the
    // command ends through its normal error path (exit 1, temporary files
    // removed).
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(AtomicBool::new(false)),
    )?;
    let _ = FLAGS.set((int, term));
    Ok(())
}

/// The signal number of a pending SIGINT or SIGTERM, if one arrived.
pub fn pending() -> Option<i32> {
    let (int, term) = FLAGS.get()?;
    if int.load(Ordering::Relaxed) {
        Some(signal_hook::consts::SIGINT)
    } else if term.load(Ordering::Relaxed) {
        Some(signal_hook::consts::SIGTERM)
    } else {
        None
    }
}

/// Fail with [`crate::Error::Interrupted`] if a signal is pending.
pub fn check() -> crate::Result<()> {
    match pending() {
        Some(sig) => Err(crate::Error::Interrupted(sig)),
        None => Ok(()),
    }
}

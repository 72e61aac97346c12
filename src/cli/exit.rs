//! The one route from a command's result to the process exit code (as fd's
//! `exit_codes.rs`): every outcome becomes an [`Exit`], and only
//! `From<Exit> for ExitCode` turns it into a number. The codes are
//! documented in README and docs/CLI.md.

use casevault::error::{exit as codes, ErrorKind};
use casevault::sanitize::sanitize;

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Success,
    /// 1: an operational error.
    Error,
    /// 2: bad command-line use.
    Usage,
    /// 3: an integrity failure (vault, signature or custody chain).
    Integrity,
    /// 4: no identity given opens the vault.
    NoMatchingKey,
    /// 75: another sweep holds the store lock (EX_TEMPFAIL).
    Busy,
    /// 128 + the signal: stopped by SIGINT (130) or SIGTERM (143).
    Interrupted(i32),
}

impl From<ErrorKind> for Exit {
    fn from(kind: ErrorKind) -> Exit {
        match kind {
            ErrorKind::Operational => Exit::Error,
            ErrorKind::Usage => Exit::Usage,
            ErrorKind::Integrity => Exit::Integrity,
            ErrorKind::NoMatchingKey => Exit::NoMatchingKey,
            ErrorKind::Interrupted(sig) => Exit::Interrupted(sig),
        }
    }
}

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> i32 {
        match self {
            Exit::Success => codes::OK,
            Exit::Error => codes::ERROR,
            Exit::Usage => codes::USAGE,
            Exit::Integrity => codes::INTEGRITY,
            Exit::NoMatchingKey => codes::NO_MATCHING_KEY,
            Exit::Busy => casevault::sweep::EXIT_LOCKED,
            Exit::Interrupted(sig) => 128 + sig,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(u8::try_from(e.code()).unwrap_or(u8::MAX))
    }
}

/// The end of every run: an `Ok` outcome was reported by its command; an
/// error is printed once here as `casevault: error: …` (with a hint when
/// the library has one), and its exit is that of the first typed error in
/// the chain. A closed stdout (`casevault list … | head`) is not an error.
pub fn report(res: anyhow::Result<Exit>) -> Exit {
    let err = match res {
        Ok(exit) => return exit,
        Err(err) => err,
    };
    if is_broken_pipe(&err) {
        return Exit::Success;
    }
    let typed = err
        .chain()
        .find_map(|c| c.downcast_ref::<casevault::Error>());
    eprintln!("casevault: error: {}", sanitize(&format!("{err:#}")));
    if let Some(hint) = typed.and_then(|e| e.hint()) {
        eprintln!("casevault: hint: {hint}");
    }
    typed.map_or(Exit::Error, |e| e.kind().into())
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::from(ErrorKind::Operational).code(), 1);
        assert_eq!(Exit::from(ErrorKind::Usage).code(), 2);
        assert_eq!(Exit::from(ErrorKind::Integrity).code(), 3);
        assert_eq!(Exit::from(ErrorKind::NoMatchingKey).code(), 4);
        assert_eq!(Exit::Busy.code(), 75);
        assert_eq!(Exit::from(ErrorKind::Interrupted(2)).code(), 130);
        assert_eq!(Exit::from(ErrorKind::Interrupted(15)).code(), 143);
    }

    #[test]
    fn an_error_exits_by_its_first_typed_cause() {
        let err = anyhow::Error::new(casevault::Error::NoMatchingKey).context("cannot open x");
        assert_eq!(report(Err(err)), Exit::NoMatchingKey);
        assert_eq!(report(Err(anyhow::anyhow!("untyped"))), Exit::Error);
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(report(Err(pipe.into())), Exit::Success);
    }
}

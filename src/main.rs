//! The `casevault` binary: parse arguments, run, map errors to the
//! documented exit codes (docs/CLI.md). All work happens in the library.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use casevault::error::{exit, ErrorKind};
use casevault::sanitize::sanitize;
use clap::Parser;

fn main() -> ExitCode {
    record_panics();
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version on stdout (exit 0) and usage errors
            // on stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE as u8
            } else {
                exit::OK as u8
            });
        }
    };
    if let Err(e) = casevault::signal::install() {
        eprintln!("casevault: error: cannot install signal handlers: {e}");
        return ExitCode::from(exit::ERROR as u8);
    }
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            // The exit code comes from the first typed error in the chain.
            let typed = err
                .chain()
                .find_map(|c| c.downcast_ref::<casevault::Error>());
            let kind = typed.map(|e| e.kind()).unwrap_or(ErrorKind::Operational);
            if is_broken_pipe(&err) {
                return ExitCode::from(exit::OK as u8);
            }
            eprintln!("casevault: error: {}", sanitize(&format!("{err:#}")));
            if let Some(hint) = typed.and_then(|e| e.hint()) {
                eprintln!("casevault: hint: {hint}");
            }
            ExitCode::from(exit::code(kind) as u8)
        }
    }
}

/// No input may make casevault panic. A panic is still printed by Rust's
/// default hook (exit 101); when `CASEVAULT_PANIC_LOG` names a file, the
/// message is appended there too, so that a test harness can fail a whole
/// run on any panic of any invocation, including ones whose stderr no test
/// looks at (docs/TESTING.md).
fn record_panics() {
    let Some(log) = std::env::var_os("CASEVAULT_PANIC_LOG") else {
        return;
    };
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        use std::io::Write;
        let args: Vec<String> = std::env::args().skip(1).collect();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            let _ = writeln!(f, "casevault {}: {info}", args.join(" "));
        }
        default(info);
    }));
}

/// A closed stdout (e.g. `casevault list … | head`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

//! The `casevault` binary: parse arguments, run, and exit with the code
//! [`cli::exit`] chooses (docs/CLI.md). All work happens in the library.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::Exit;

fn main() -> ExitCode {
    record_panics();
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version on stdout (exit 0) and usage errors
            // on stderr (exit 2).
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            }
            .into();
        }
    };
    if let Err(e) = casevault::signal::install() {
        eprintln!("casevault: error: cannot install signal handlers: {e}");
        return Exit::Error.into();
    }
    cli::exit::report(cli::run(cli)).into()
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

//! Progress on a terminal (issue #3): a bar on stderr only when stderr is a
//! terminal and `--quiet` is not given; never in pipes (cron, scripts).

use crate::util::*;

/// Run `casevault ARGS…` under a pseudo-terminal with `script(1)` and
/// return everything the terminal received.
fn on_a_terminal(args: &[&str]) -> String {
    let script = match tool("script") {
        Some(s) => s,
        None => return String::new(),
    };
    let bin = env!("CARGO_BIN_EXE_casevault");
    let cmd = std::iter::once(bin)
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new(script)
        .env(crate::util::PANIC_LOG_ENV, crate::util::panic_log())
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bar_on_a_terminal_only_and_not_with_quiet() {
    let fx = Fx::new();
    let case = small_case(&fx.cases(), "PG-1");
    let vault = fx.vault("pg.vault");
    let v = vault.to_str().unwrap();
    let key = fx.key.path.to_str().unwrap().to_string();
    let screen = on_a_terminal(&[
        "seal",
        case.root.to_str().unwrap(),
        "-o",
        v,
        "-r",
        &fx.key.recipient,
    ]);
    if screen.is_empty() {
        return; // no script(1) here (and not CI)
    }
    assert!(
        screen.contains("sealing"),
        "no bar on a terminal: {screen:?}"
    );
    assert!(screen.contains("sealed PG-1:"), "{screen:?}");

    let quiet = on_a_terminal(&["verify", v, "-i", &key, "-q"]);
    assert!(
        !quiet.contains("verifying"),
        "--quiet still drew a bar: {quiet:?}"
    );
    assert!(quiet.contains("OK PG-1:"), "{quiet:?}");

    // In a pipe (as under cron) stderr stays empty.
    let a = casevault()
        .args(["verify", v, "-i", &key])
        .assert()
        .success();
    assert_eq!(stderr_of(&a), "");
}

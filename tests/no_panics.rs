//! No input may make casevault panic (docs/CLI.md, exit codes). Every run
//! of the binary by the `it` target appends any panic to a shared log (see
//! tests/it/util.rs `PANIC_LOG_ENV`); cargo runs this target after `it`
//! (targets run in name order), and it fails the run if the log holds
//! anything. .ci/run checks the same file again after the whole suite.

#[test]
fn no_test_run_of_the_binary_panicked() {
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("casevault-panics.log");
    match std::fs::read_to_string(&log) {
        Ok(s) => assert!(
            s.is_empty(),
            "casevault panicked during the test run ({}):\n{s}",
            log.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot read {}: {e}", log.display()),
    }
}

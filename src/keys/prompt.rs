//! The terminal, the one place casevault asks a person anything: passphrase
//! prompts (through `rpassword`, from `/dev/tty`) and the age plugin
//! callbacks ([`Ui`]). Nothing is asked without a terminal: the operation
//! is refused (exit 1) or the plugin's question declined, never waited on,
//! so cron and scripts cannot hang.

use std::io::{IsTerminal, Write};

use age::secrecy::{ExposeSecret, SecretString};

use crate::{Error, Result};

/// Whether a passphrase can be asked for: stdin and stderr are terminals
/// (the same rule as for passphrase-protected signing keys, `sign.rs`).
pub fn can_ask() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Ask for a passphrase once on the terminal. `what` names what it is for,
/// in the refusal when there is no terminal.
pub fn ask(prompt: &str, what: &str) -> Result<SecretString> {
    if !can_ask() {
        return Err(Error::Refused(format!(
            "{what} needs a passphrase and there is no terminal to ask for it \
             (a passphrase is read only from the terminal, never from arguments or the environment)"
        )));
    }
    let pass = rpassword::prompt_password(prompt).map_err(|e| Error::Io {
        op: "cannot read the passphrase from",
        path: "/dev/tty".into(),
        cause: e,
    })?;
    Ok(SecretString::from(pass))
}

/// Ask for a new passphrase twice (for `seal --passphrase`); refuse an empty
/// one and a mismatch.
pub fn ask_new(what: &str) -> Result<SecretString> {
    let first = ask("Enter passphrase: ", what)?;
    if first.expose_secret().is_empty() {
        return Err(Error::Refused("empty passphrase refused".into()));
    }
    let second = ask("Confirm passphrase: ", what)?;
    if first.expose_secret() != second.expose_secret() {
        return Err(Error::Refused("the passphrases do not match".into()));
    }
    Ok(first)
}

/// The plugin callbacks: messages go to stderr; a question is asked on the
/// terminal when there is one ([`can_ask`]) and declined otherwise, which
/// the plugin reports as an error instead of waiting.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ui;

impl age::Callbacks for Ui {
    fn display_message(&self, message: &str) {
        eprintln!("casevault: {}", crate::sanitize::sanitize(message));
    }

    fn confirm(&self, message: &str, yes_string: &str, no_string: Option<&str>) -> Option<bool> {
        if !can_ask() {
            return None;
        }
        let choices = match no_string {
            Some(no) => format!("[{yes_string}/{no}]"),
            None => format!("[{yes_string}]"),
        };
        eprint!("{} {choices}: ", crate::sanitize::sanitize(message));
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).ok()?;
        let answer = line.trim();
        if answer == yes_string || (no_string.is_none() && answer.is_empty()) {
            Some(true)
        } else if no_string == Some(answer) {
            Some(false)
        } else {
            None
        }
    }

    fn request_public_string(&self, description: &str) -> Option<String> {
        if !can_ask() {
            return None;
        }
        eprint!("{} ", crate::sanitize::sanitize(description));
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).ok()?;
        Some(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn request_passphrase(&self, description: &str) -> Option<SecretString> {
        let prompt = format!("{} ", crate::sanitize::sanitize(description));
        ask(&prompt, "the age plugin").ok()
    }
}

//! age plugins (hardware keys and other recipient types): `age1<name>1…`
//! recipients and `AGE-PLUGIN-<NAME>-1…` identities are handled by the
//! `age-plugin-<name>` binary on PATH, through the age crate's plugin
//! client. [`Ui`] is how a plugin talks to the user: messages on stderr,
//! questions (PIN, confirmation) on the terminal only, never without one.

use std::io::Write;

use age::secrecy::SecretString;

use crate::keys::BoxedRecipient;

/// The plugin callbacks: messages go to stderr; a question is asked on the
/// terminal when there is one ([`crate::passphrase::can_ask`]) and declined
/// otherwise, which the plugin reports as an error instead of waiting.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ui;

impl age::Callbacks for Ui {
    fn display_message(&self, message: &str) {
        eprintln!("casevault: {}", crate::sanitize::sanitize(message));
    }

    fn confirm(&self, message: &str, yes_string: &str, no_string: Option<&str>) -> Option<bool> {
        if !crate::passphrase::can_ask() {
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
        if !crate::passphrase::can_ask() {
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
        crate::passphrase::ask(&prompt, "the age plugin").ok()
    }
}

/// Parse a plugin recipient `age1<name>1…`; `None` if `s` is not one.
/// Fails when `age-plugin-<name>` is not on PATH.
pub fn parse_recipient(s: &str) -> Option<Result<BoxedRecipient, String>> {
    let r: age::plugin::Recipient = s.parse().ok()?;
    let name = r.plugin().to_string();
    Some(
        age::plugin::RecipientPluginV1::new(&name, &[r], &[], Ui)
            .map(|p| Box::new(p) as BoxedRecipient)
            .map_err(|_| {
                format!(
                    "recipient of plugin type {name:?} needs the program age-plugin-{name} on PATH"
                )
            }),
    )
}

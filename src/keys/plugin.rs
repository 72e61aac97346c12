//! age plugins (hardware keys and other recipient types): `age1<name>1…`
//! recipients and `AGE-PLUGIN-<NAME>-1…` identities are handled by the
//! `age-plugin-<name>` binary on PATH, through the age crate's plugin
//! client; a plugin talks to the user through [`Ui`].

use crate::keys::prompt::Ui;

/// A plugin recipient, handled by its `age-plugin-<name>` binary.
pub type Recipient = age::plugin::RecipientPluginV1<Ui>;

/// Parse a plugin recipient `age1<name>1…`; `None` if `s` is not one.
/// Fails when `age-plugin-<name>` is not on PATH.
pub fn parse_recipient(s: &str) -> Option<Result<Recipient, String>> {
    let r: age::plugin::Recipient = s.parse().ok()?;
    let name = r.plugin().to_string();
    Some(
        age::plugin::RecipientPluginV1::new(&name, &[r], &[], Ui).map_err(|_| {
            format!("recipient of plugin type {name:?} needs the program age-plugin-{name} on PATH")
        }),
    )
}

/// The identities of an age identity file (classic and plugin ones; the
/// plugin's questions go through [`Ui`]). `name` names the file in errors.
pub fn identities(
    file: age::IdentityFile<age::NoCallbacks>,
    name: &str,
) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, crate::Error> {
    file.with_callbacks(Ui)
        .into_identities()
        .map_err(|e| match e {
            age::DecryptError::PluginResolve(age::plugin::ResolveError::MissingPlugin {
                binary_name,
            }) => crate::Error::Refused(format!(
                "{name}: a plugin identity needs the program {binary_name} on PATH"
            )),
            e => crate::Error::Refused(format!("{name}: not an identity file: {e}")),
        })
}

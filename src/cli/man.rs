//! `casevault completions` and `casevault man`: generated from the clap
//! definitions, so they never disagree with `--help`.

use clap::Args;

use casevault::sanitize::sanitize;
use casevault::Error;

use super::{Cli, Exit};

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// A subcommand (e.g. sweep) whose page to print instead.
    #[arg(conflicts_with = "list")]
    command: Option<String>,
    /// List the subcommands that have a page of their own, one per line
    /// (for installing every casevault-COMMAND(1) page).
    #[arg(long)]
    list: bool,
}

pub fn completions(a: CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(a.shell, &mut cmd, "casevault", &mut std::io::stdout());
    Ok(Exit::Success)
}

pub fn man(a: ManArgs) -> anyhow::Result<Exit> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    if a.list {
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            println!("{}", sub.get_name());
        }
        return Ok(Exit::Success);
    }
    let page = match a.command {
        None => cmd,
        Some(name) => {
            let sub = cmd
                .find_subcommand(&name)
                .ok_or_else(|| Error::Usage(format!("no such command: {}", sanitize(&name))))?
                .clone();
            // The process ends right after; leaking one short string is fine
            // (clap names are &'static without its "string" feature).
            sub.name(String::leak(format!("casevault-{name}")) as &str)
                .bin_name(String::leak(format!("casevault {name}")) as &str)
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let usage = synopsis(&page);
    let page = page.override_usage(usage);
    clap_mangen::Man::new(page).render(&mut std::io::stdout())?;
    Ok(Exit::Success)
}

/// The SYNOPSIS line of a man page: clap's usage with "[OPTIONS]" spelled
/// out, each option with its value placeholder (`[--keep <N>]`), which
/// clap_mangen's own synopsis leaves out.
fn synopsis(cmd: &clap::Command) -> String {
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage).to_string();
    let optional: Vec<String> = cmd
        .get_arguments()
        .filter(|a| {
            !a.is_hide_set()
                && !a.is_positional()
                && !a.is_required_set()
                && !matches!(
                    a.get_action(),
                    clap::ArgAction::Help | clap::ArgAction::Version
                )
                && !cmd
                    .get_groups()
                    .any(|g| g.is_required_set() && g.get_args().any(|id| id == a.get_id()))
        })
        .map(option_synopsis)
        .collect();
    usage.replacen("[OPTIONS]", &optional.join(" "), 1)
}

/// `[-q|--quiet]`, `[--keep <N>]`, `[--custody [<LOG>]]`.
fn option_synopsis(a: &clap::Arg) -> String {
    let mut flag = match (a.get_short(), a.get_long()) {
        (Some(s), Some(l)) => format!("-{s}|--{l}"),
        (Some(s), None) => format!("-{s}"),
        (None, Some(l)) => format!("--{l}"),
        (None, None) => String::new(),
    };
    if a.get_action().takes_values() {
        let names = a
            .get_value_names()
            .map(|v| v.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>())
            .unwrap_or_else(|| vec![format!("<{}>", a.get_id().as_str().to_uppercase())]);
        let value = names.join(" ");
        if a.get_num_args().is_some_and(|n| n.min_values() == 0) {
            flag.push_str(&format!(" [{value}]"));
        } else {
            flag.push(' ');
            flag.push_str(&value);
        }
    }
    format!("[{flag}]")
}

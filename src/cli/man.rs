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
    /// A subcommand whose page to print instead: `sweep`, or a nested one
    /// as `store audit` or `store-audit` (page casevault-store-audit(1)).
    #[arg(conflicts_with = "list", value_name = "COMMAND")]
    command: Vec<String>,
    /// List every subcommand that has a page of its own, nested ones
    /// included (`store-audit`), one per line: casevault-NAME(1) is its page
    /// and `casevault man NAME` prints it (for installing every page).
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
    let pages = pages(&cmd, &[]);
    if a.list {
        for path in &pages {
            println!("{}", path.join("-"));
        }
        return Ok(Exit::Success);
    }
    let page = if a.command.is_empty() {
        cmd
    } else {
        let wanted = a.command.join("-");
        let path = pages
            .iter()
            .find(|p| p.join("-") == wanted)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no such command: {} (`casevault man --list` names every page)",
                    sanitize(&a.command.join(" "))
                ))
            })?;
        let mut sub = &cmd;
        for name in path {
            sub = sub
                .find_subcommand(name)
                .expect("every path of pages() names subcommands of cmd");
        }
        // The process ends right after; leaking two short strings is fine
        // (clap names are &'static without its "string" feature).
        sub.clone()
            .name(String::leak(format!("casevault-{wanted}")) as &str)
            .bin_name(String::leak(format!("casevault {}", path.join(" "))) as &str)
            .version(env!("CARGO_PKG_VERSION"))
    };
    let usage = synopsis(&page);
    let page = page.override_usage(usage);
    clap_mangen::Man::new(page).render(&mut std::io::stdout())?;
    Ok(Exit::Success)
}

/// The command path (below `casevault`) of every subcommand that gets a page
/// of its own, at any depth, parents before their children, in clap's
/// order: walked from the clap definitions, so a new subcommand gets a page
/// (and the Debian package installs it) without a list to update. Hidden
/// subcommands and clap's `help` have none.
fn pages(cmd: &clap::Command, parent: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let mut path = parent.to_vec();
        path.push(sub.get_name().to_string());
        out.push(path.clone());
        out.extend(pages(sub, &path));
    }
    out
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

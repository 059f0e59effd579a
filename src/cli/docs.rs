//! `completions <shell>` and `man`: the shell completion script and the man page, both
//! generated from the same clap definition the parser uses, so they never drift from it.

use anyhow::Result;
use clap::{Args, CommandFactory};
use std::io::Write;

use super::{Cli, EXIT_OK};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {}

/// Writes the completion script for `shell` to stdout
/// (`speckit-hygiene completions bash > ~/.local/share/bash-completion/completions/speckit-hygiene`).
pub fn completions(args: CompletionsArgs) -> Result<u8> {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
    Ok(EXIT_OK)
}

/// Writes the man page (roff) to stdout (`speckit-hygiene man > speckit-hygiene.1`).
pub fn man(_args: ManArgs) -> Result<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    std::io::stdout().write_all(&page)?;
    Ok(EXIT_OK)
}

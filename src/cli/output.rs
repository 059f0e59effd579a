//! The output contract's switches, decided once per process: colour (`--color`,
//! `NO_COLOR`, whether the stream is a terminal) and quiet (`-q`: errors only on stderr).
//! Data always goes to stdout and diagnostics to stderr, each said once.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// `--color`: when output carries ANSI colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set (no-color.org).
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    color: ColorChoice,
    quiet: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Records the command line's choices; the first call wins (it is made in `main`).
pub fn init(color: ColorChoice, quiet: bool) {
    let _ = SETTINGS.set(Settings { color, quiet });
}

fn settings() -> Settings {
    SETTINGS.get().copied().unwrap_or(Settings {
        color: ColorChoice::Auto,
        quiet: false,
    })
}

fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

fn colour_for(is_terminal: bool) -> bool {
    match settings().color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => is_terminal && !no_color_env(),
    }
}

/// Whether what goes to stdout may carry colour.
pub fn stdout_colour() -> bool {
    colour_for(std::io::stdout().is_terminal())
}

/// Whether what goes to stderr (logs included) may carry colour.
pub fn stderr_colour() -> bool {
    colour_for(std::io::stderr().is_terminal())
}

/// `-q`: only errors on stderr (no warnings, no progress, logs at error level).
pub fn quiet() -> bool {
    settings().quiet
}

/// A warning on stderr, unless quiet.
pub fn warn(message: impl std::fmt::Display) {
    if !quiet() {
        eprintln!("warning: {message}");
    }
}

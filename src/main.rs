//! The `speckit-hygiene` command line. Data goes to stdout, logs to stderr (`RUST_LOG`).
//! Exit status: 0 all went well, 1 a job failed, 2 usage or config error, 3 guard blocked (or stats found a SPEC over its limit).

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Started by the engine as a dynamic plugin's host process: serve, then exit.
    speckit_engine::dynamic::serve_if_requested();
    // Die quietly on a closed pipe (`speckit-hygiene check | head`) like other Unix tools,
    // instead of panicking in println!.
    // SAFETY: called first in main, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    cli::init_tracing(&args.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    runtime.block_on(cli::dispatch(args))
}

//! A stub agent for `spawn`: behaves like a spec-kit agent CLI (reads a prompt file, signals
//! readiness, writes a response file) without any network or model, for the demo, the
//! spawn plugin's tests and its benchmark.
//!
//! Standard library only, so a test or bench can compile this one file with `rustc` when
//! cargo has not built the example (`cargo test -p speckit-spawn` does not build the root
//! package's examples).
//!
//! ```text
//! stub_agent [--prompt FILE] [--output FILE] [--ready-after-ms N] [--ready-line TEXT]
//!            [--never-ready] [--fail-before-ready] [--run-ms N] [--output-bytes N]
//!            [--exit-code N] [--stderr TEXT] [--times]
//! ```
//! - waits `--ready-after-ms` (default 0), then prints the ready line (default `READY`);
//! - `--never-ready` never prints it and sleeps until killed;
//! - `--fail-before-ready` prints `--stderr` (or a default message) to stderr and exits
//!   with `--exit-code` (default 3) before it is ready;
//! - otherwise works `--run-ms` (default 0), writes a response to `--output` (padded to
//!   `--output-bytes` if given) and exits with `--exit-code` (default 0);
//! - `--times` prints `stub_agent times: main_ns=N ready_ns=N` to stderr once it is ready:
//!   the wall-clock times (nanoseconds since the epoch) at which `main` began and the
//!   ready line was written, for the spawn bench's breakdown of where a spawn's time goes.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Default)]
struct Options {
    prompt: Option<String>,
    output: Option<String>,
    ready_after_ms: u64,
    ready_line: Option<String>,
    never_ready: bool,
    fail_before_ready: bool,
    run_ms: u64,
    output_bytes: Option<usize>,
    exit_code: Option<u8>,
    stderr: Option<String>,
    times: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options::default();
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|e| format!("{name} {v:?} is not a number: {e}"))
        };
        match flag.as_str() {
            "--prompt" => o.prompt = Some(value("--prompt")?),
            "--output" => o.output = Some(value("--output")?),
            "--ready-after-ms" => {
                o.ready_after_ms = number("--ready-after-ms", value("--ready-after-ms")?)?
            }
            "--ready-line" => o.ready_line = Some(value("--ready-line")?),
            "--never-ready" => o.never_ready = true,
            "--fail-before-ready" => o.fail_before_ready = true,
            "--run-ms" => o.run_ms = number("--run-ms", value("--run-ms")?)?,
            "--output-bytes" => {
                o.output_bytes = Some(number("--output-bytes", value("--output-bytes")?)? as usize)
            }
            "--exit-code" => {
                let v = value("--exit-code")?;
                o.exit_code = Some(
                    v.parse()
                        .map_err(|e| format!("--exit-code {v:?} is not 0-255: {e}"))?,
                )
            }
            "--stderr" => o.stderr = Some(value("--stderr")?),
            "--times" => o.times = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

/// Now as nanoseconds since the epoch: a clock the bench reads too.
fn wall_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let main_ns = wall_ns();
    let options = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("stub_agent: {message}");
            return ExitCode::from(2);
        }
    };
    if options.ready_after_ms > 0 {
        std::thread::sleep(Duration::from_millis(options.ready_after_ms));
    }
    if options.fail_before_ready {
        let message = options
            .stderr
            .as_deref()
            .unwrap_or("stub_agent: failing before ready, as asked");
        eprintln!("{message}");
        return ExitCode::from(options.exit_code.unwrap_or(3));
    }
    if options.never_ready {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    {
        let ready_ns = wall_ns();
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "{}",
            options.ready_line.as_deref().unwrap_or("READY")
        );
        let _ = stdout.flush();
        drop(stdout);
        if options.times {
            eprintln!("stub_agent times: main_ns={main_ns} ready_ns={ready_ns}");
        }
    }
    if let Some(message) = &options.stderr {
        eprintln!("{message}");
    }
    let prompt = match &options.prompt {
        // `-`: the prompt comes on stdin, as the host hands over a long one.
        Some(path) if path == "-" => {
            let mut text = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                eprintln!("stub_agent: cannot read the prompt from stdin: {e}");
                return ExitCode::from(4);
            }
            text
        }
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("stub_agent: cannot read prompt {path}: {e}");
                return ExitCode::from(4);
            }
        },
        None => String::new(),
    };
    if options.run_ms > 0 {
        std::thread::sleep(Duration::from_millis(options.run_ms));
    }
    let first_line = prompt.lines().next().unwrap_or("").trim();
    let mut response = format!(
        "{{\"agent\":\"stub\",\"prompt_bytes\":{},\"prompt_first_line\":{:?}}}\n",
        prompt.len(),
        first_line
    );
    if let Some(bytes) = options.output_bytes {
        // Multi-byte characters on purpose: a response cut at a byte limit must stay UTF-8.
        let filler = "é-stub-";
        while response.len() < bytes {
            response.push_str(filler);
        }
    }
    match &options.output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &response) {
                eprintln!("stub_agent: cannot write output {path}: {e}");
                return ExitCode::from(5);
            }
        }
        None => print!("{response}"),
    }
    ExitCode::from(options.exit_code.unwrap_or(0))
}

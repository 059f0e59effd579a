//! The SIGKILL tests' shared harness: the kill schedule (how many kills, and a seed that
//! replays their times), one kill of a running command at a delay, and the rerun that must
//! finish. What a kill may leave is each test's own check.

use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// How many kills a test makes and when, from `SPECKIT_CRASH_ITERATIONS` and
/// `SPECKIT_CRASH_SEED` (a random seed when unset, printed so a failure can be replayed).
pub struct KillSchedule {
    pub iterations: usize,
    pub seed: u64,
    rng: rand::rngs::StdRng,
}

impl KillSchedule {
    pub fn from_env(label: &str, default_iterations: usize) -> Self {
        let iterations = std::env::var("SPECKIT_CRASH_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_iterations);
        let seed = std::env::var("SPECKIT_CRASH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("{label}: {iterations} kills, SPECKIT_CRASH_SEED={seed}");
        Self {
            iterations,
            seed,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// When the next kill lands: somewhere in an uninterrupted run of length `full`.
    pub fn next_delay(&mut self, full: Duration) -> Duration {
        full.mul_f64(self.rng.random_range(0.0..1.0))
    }
}

/// One SIGKILL of a started command.
#[derive(Debug)]
pub struct Kill {
    /// The command had not ended by itself when the signal was sent.
    pub was_running: bool,
    pub status: ExitStatus,
}

/// Starts `command`, sends it SIGKILL after `delay`, and reaps it.
pub fn kill_after(command: &mut Command, delay: Duration) -> Kill {
    let mut child = command.spawn().expect("start the command to kill");
    std::thread::sleep(delay);
    let was_running = child.try_wait().expect("poll the child").is_none();
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL
    let status = child.wait().expect("reap the child");
    Kill {
        was_running,
        status,
    }
}

/// Runs `command` to its end; panics with `context` and its stderr unless it exits 0.
pub fn assert_succeeds(command: &mut Command, context: &str) {
    run_timed(command, context);
}

/// [`assert_succeeds`], returning how long the run took: the reference run's length is
/// what the kill schedule spreads its delays over.
pub fn run_timed(command: &mut Command, context: &str) -> Duration {
    let started = std::time::Instant::now();
    let out = command.output().expect("run the command");
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{context}: the run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// `speckit-hygiene --config <config> cleanup` as the crash tests run it (`bin` is the
/// test's `CARGO_BIN_EXE_speckit-hygiene`): stdout discarded, stderr kept for a failure's
/// message, without the developer's `SPECKIT_*` and `RUST_LOG`.
pub fn cleanup_command(bin: &str, config: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("--config")
        .arg(config)
        .arg("cleanup")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG");
    crate::process::without_speckit_env(&mut command);
    command
}

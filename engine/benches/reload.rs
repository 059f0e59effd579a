//! Reload and start-up benchmark.
//!
//! - Reload latency from a save (a new file renamed over `speckit.toml`) to the new policy
//!   applied, through the real watcher, with the default 300 ms debounce and, beside it,
//!   with no debounce (what the watcher adds besides its wait). The baseline is
//!   `Engine::reload` called directly after the save: loading, validating and swapping.
//! - Time from `Engine::start` to ready (handle returned) on a fresh database, beside its
//!   two parts measured alone: loading the policy and opening (creating) the database.
//!
//! `cargo bench -p speckit-engine --bench reload` runs it for real; without `--bench` (as
//! `cargo test --all-targets` runs it) it does a tiny smoke run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use speckit_engine::engine::{load_and_validate, storage_options};
use speckit_engine::events::{EngineEvent, ReloadCause, ReloadOutcome};
use speckit_engine::watch::{self, WatchOptions, DEFAULT_DEBOUNCE};
use speckit_engine::{Engine, EngineOptions, PluginRegistry, Storage};

/// Longest wait for one reload before the run is declared broken.
const WAIT: Duration = Duration::from_secs(10);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Summary {
    n: usize,
    median: Duration,
    p95: Duration,
    min: Duration,
    max: Duration,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    Summary {
        n: samples.len(),
        median: percentile(&samples, 50.0),
        p95: percentile(&samples, 95.0),
        min: samples.first().copied().unwrap_or_default(),
        max: samples.last().copied().unwrap_or_default(),
    }
}

fn print_row(what: &str, s: &Summary) {
    println!(
        "{what:<58} n={:<3} median {:>9.3} ms  p95 {:>9.3} ms  min {:>9.3} ms  max {:>9.3} ms",
        s.n,
        ms(s.median),
        ms(s.p95),
        ms(s.min),
        ms(s.max)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn policy_text(database: &Path, archive_after_days: u32) -> String {
    format!(
        "[storage]\ndatabase_path = {:?}\n\n[schedule]\njob_history_days = {archive_after_days}\n",
        database.display().to_string()
    )
}

fn save_by_rename(config: &Path, text: &str) {
    let temp = config.with_file_name(".speckit.toml.swp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, config).unwrap();
}

struct Workspace {
    _dir: tempfile::TempDir,
    config: PathBuf,
    database: PathBuf,
}

fn workspace() -> Workspace {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("speckit.toml");
    let database = dir.path().join("consensus.db");
    std::fs::write(&config, policy_text(&database, 30)).unwrap();
    Workspace {
        _dir: dir,
        config,
        database,
    }
}

fn options(config: &Path) -> EngineOptions {
    let mut options = EngineOptions::new(config);
    options.env = Vec::new();
    options
}

async fn next_applied(events: &mut tokio::sync::broadcast::Receiver<EngineEvent>) {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(EngineEvent::Reload {
                outcome: ReloadOutcome::Applied { .. },
                ..
            })) => return,
            Ok(Ok(EngineEvent::Reload {
                outcome: ReloadOutcome::Rejected { error },
                ..
            })) => panic!("reload rejected: {error}"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("event channel: {e}"),
            Err(_) => panic!("no reload within {WAIT:?}"),
        }
    }
}

/// Save-to-applied through the watcher with the given debounce.
async fn watched_reload(debounce: Duration, saves: usize) -> Vec<Duration> {
    let ws = workspace();
    let engine = Engine::start(options(&ws.config), Vec::new())
        .await
        .unwrap();
    let mut events = engine.events().subscribe();
    let watch = WatchOptions {
        debounce,
        max_delay: debounce,
        listen_sighup: false,
        ..WatchOptions::default()
    };
    watch::spawn_with(&engine, watch).unwrap();
    let mut samples = Vec::with_capacity(saves);
    for i in 0..saves {
        let text = policy_text(&ws.database, 31 + i as u32);
        let t0 = Instant::now();
        save_by_rename(&ws.config, &text);
        next_applied(&mut events).await;
        samples.push(t0.elapsed());
        // Settle: a save's late events may still cause an `Unchanged` reload; keep it out
        // of the next sample.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while events.try_recv().is_ok() {}
    }
    engine.shutdown(Duration::from_secs(5)).await;
    samples
}

/// Baseline: the save, then `Engine::reload` called directly (no watcher, no wait).
async fn direct_reload(saves: usize) -> Vec<Duration> {
    let ws = workspace();
    let engine = Engine::start(options(&ws.config), Vec::new())
        .await
        .unwrap();
    let mut samples = Vec::with_capacity(saves);
    for i in 0..saves {
        let text = policy_text(&ws.database, 31 + i as u32);
        let t0 = Instant::now();
        save_by_rename(&ws.config, &text);
        let outcome = engine.reload(ReloadCause::Api).await;
        samples.push(t0.elapsed());
        assert!(
            matches!(outcome, ReloadOutcome::Applied { .. }),
            "{outcome:?}"
        );
    }
    engine.shutdown(Duration::from_secs(5)).await;
    samples
}

struct Startup {
    start: Vec<Duration>,
    load_policy: Vec<Duration>,
    open_database: Vec<Duration>,
}

/// `Engine::start` on a fresh database, and its two parts alone, each on its own fresh
/// workspace.
async fn startup(runs: usize) -> Startup {
    let mut out = Startup {
        start: Vec::new(),
        load_policy: Vec::new(),
        open_database: Vec::new(),
    };
    let registry = PluginRegistry::new(Vec::new()).unwrap();
    for _ in 0..runs {
        let ws = workspace();
        let t0 = Instant::now();
        let engine = Engine::start(options(&ws.config), Vec::new())
            .await
            .unwrap();
        out.start.push(t0.elapsed());
        assert!(ws.database.exists());
        engine.shutdown(Duration::from_secs(5)).await;

        let ws = workspace();
        let t0 = Instant::now();
        let snapshot = load_and_validate(&options(&ws.config), &registry).unwrap();
        out.load_policy.push(t0.elapsed());

        let storage_opts = storage_options(&snapshot.policy);
        let t0 = Instant::now();
        let storage = tokio::task::spawn_blocking(move || Storage::open(storage_opts))
            .await
            .unwrap()
            .unwrap();
        out.open_database.push(t0.elapsed());
        tokio::task::spawn_blocking(move || storage.close())
            .await
            .unwrap();
    }
    out
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (saves, starts) = if full { (60, 40) } else { (2, 2) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let debounced = summarize(watched_reload(DEFAULT_DEBOUNCE, saves).await);
        let undebounced = summarize(watched_reload(Duration::ZERO, saves).await);
        let direct = summarize(direct_reload(saves).await);
        let startup = startup(starts).await;

        println!(
            "reload: save (rename into place) -> policy applied{}",
            if full { "" } else { " [smoke run]" }
        );
        print_row(
            &format!(
                "  watcher, debounce {} ms (default)",
                DEFAULT_DEBOUNCE.as_millis()
            ),
            &debounced,
        );
        print_row(
            "  watcher, debounce 0 ms (event delivery + reload)",
            &undebounced,
        );
        print_row("  baseline: Engine::reload called directly", &direct);
        println!(
            "  => default watcher: median {:.3} ms = {} ms debounce + {:.3} ms rest",
            ms(debounced.median),
            DEFAULT_DEBOUNCE.as_millis(),
            ms(debounced.median.saturating_sub(DEFAULT_DEBOUNCE))
        );
        println!("start-up: Engine::start to ready on a fresh database");
        print_row("  Engine::start (no plugins)", &summarize(startup.start));
        print_row(
            "  part: load + validate policy",
            &summarize(startup.load_policy),
        );
        print_row(
            "  part: open + create + migrate database",
            &summarize(startup.open_database),
        );
    });
}

//! Per-call overhead of a dynamic plugin against a compiled-in one, at three layers, each
//! with its compiled-in baseline measured beside it in the same run:
//!
//! 1. The boundary: the test probe's `run` called as plain Rust (linked in) against the
//!    same code called through the C ABI (context to JSON, the call, report from JSON,
//!    buffer freed), on the calling thread.
//! 2. `Plugin::run` as the engine calls it: a compiled-in no-op plugin against the dynamic
//!    plugin (the above plus `spawn_blocking` and a thread per call for the timeout).
//! 3. `Engine::run_job` end to end (two database writes, events) for both.
//!
//! The probe runs in `noop` mode (returns a one-line report), so the figures are the
//! boundary's own cost. `cargo bench -p speckit-engine --bench dynamic_call` runs it for
//! real; without `--bench` (as `cargo test --all-targets` runs it) it does a smoke run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use speckit_engine::dynamic::{DynamicPlugin, PluginFunction};
use speckit_engine::events::JobOutcome;
use speckit_engine::plugin::{BoxFuture, JobContext, JobReport, JobTrigger, Plugin, PluginError};
use speckit_engine::{Engine, EngineOptions};
use speckit_plugin_sdk::Plugin as SdkPlugin;

/// The compiled-in baseline: does as little as the probe's `noop` mode.
struct Noop;

impl Plugin for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn version(&self) -> &str {
        "0.0.0"
    }
    fn jobs(&self) -> Vec<String> {
        vec!["noop".into()]
    }
    fn run(&self, _ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async { Ok(JobReport::new("noop", serde_json::Value::Null)) })
    }
}

/// A shared library this workspace built (a dev-dependency).
fn built(lib: &str) -> PathBuf {
    speckit_testkit::artifacts::built_library(lib)
}

struct Plan {
    /// Batch pairs measured; the median pair is reported.
    batches: usize,
    /// Calls per batch, by layer.
    calls: [usize; 3],
}

/// Per-call times (ns) of a compiled-in and a dynamic call, each sorted. Batches of the
/// two alternate, so a change of load on this shared machine hits both alike.
struct Pair {
    compiled: Vec<f64>,
    dynamic: Vec<f64>,
    /// Dynamic minus compiled-in, per adjacent pair of batches.
    overhead: Vec<f64>,
}

impl Pair {
    fn push(&mut self, compiled: f64, dynamic: f64) {
        self.compiled.push(compiled);
        self.dynamic.push(dynamic);
        self.overhead.push(dynamic - compiled);
    }

    fn sorted(mut self) -> Self {
        for v in [&mut self.compiled, &mut self.dynamic, &mut self.overhead] {
            v.sort_by(|a, b| a.total_cmp(b));
        }
        self
    }
}

fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

fn time_batch(calls: usize, f: &mut impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn measure_pair(
    batches: usize,
    calls: usize,
    mut compiled: impl FnMut(),
    mut dynamic: impl FnMut(),
) -> Pair {
    time_batch(calls.min(100), &mut compiled);
    time_batch(calls.min(100), &mut dynamic);
    let mut pair = Pair {
        compiled: Vec::new(),
        dynamic: Vec::new(),
        overhead: Vec::new(),
    };
    for _ in 0..batches {
        let c = time_batch(calls, &mut compiled);
        let d = time_batch(calls, &mut dynamic);
        pair.push(c, d);
    }
    pair.sorted()
}

/// One call of an async case.
type Call<'a> = Box<dyn FnMut() -> BoxFuture<'a, ()> + 'a>;

async fn time_batch_async(calls: usize, f: &mut Call<'_>) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f().await;
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

async fn measure_pair_async(
    batches: usize,
    calls: usize,
    mut compiled: Call<'_>,
    mut dynamic: Call<'_>,
) -> Pair {
    time_batch_async(calls.min(20), &mut compiled).await;
    time_batch_async(calls.min(20), &mut dynamic).await;
    let mut pair = Pair {
        compiled: Vec::new(),
        dynamic: Vec::new(),
        overhead: Vec::new(),
    };
    for _ in 0..batches {
        let c = time_batch_async(calls, &mut compiled).await;
        let d = time_batch_async(calls, &mut dynamic).await;
        pair.push(c, d);
    }
    pair.sorted()
}

fn report(layer: &str, calls: usize, pair: &Pair) {
    let us = |ns: f64| ns / 1000.0;
    println!(
        "{layer:<42} {calls:>6} calls x {:>2}: compiled-in {:>8.2} us (min {:>7.2}), dynamic {:>8.2} us (min {:>7.2}), overhead {:>+8.2} us/call (medians)",
        pair.compiled.len(),
        us(median(&pair.compiled)),
        us(pair.compiled[0]),
        us(median(&pair.dynamic)),
        us(pair.dynamic[0]),
        us(median(&pair.overhead)),
    );
}

fn main() {
    let real = std::env::args().any(|a| a == "--bench");
    let plan = if real {
        Plan {
            batches: 15,
            calls: [20_000, 2_000, 300],
        }
    } else {
        Plan {
            batches: 1,
            calls: [10, 5, 2],
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(plan, real));
}

async fn bench(plan: Plan, real: bool) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    fs::create_dir(&plugins).unwrap();
    fs::set_permissions(&plugins, fs::Permissions::from_mode(0o755)).unwrap();
    let library = plugins.join("libprobe.so");
    fs::copy(built("speckit_test_probe"), &library).unwrap();
    fs::set_permissions(&library, fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("speckit.toml");
    fs::write(
        &config,
        "[storage]\ndatabase_path = \"consensus.db\"\n[schedule]\ncleanup = \"off\"\nvacuum = \"off\"\n\
         integrity_check = \"off\"\n[plugins.probe]\npath = \"plugins/libprobe.so\"\n\
         [plugins.probe.config]\nmode = \"noop\"\n",
    )
    .unwrap();
    let mut options = EngineOptions::new(&config);
    options.env = Vec::new();
    let engine = Engine::start(options, vec![Arc::new(Noop)]).await.unwrap();
    let failures = engine.registry().failures();
    assert!(failures.is_empty(), "{failures:?}");

    let context = |job: &str| JobContext {
        job: job.to_string(),
        run_id: 1,
        trigger: JobTrigger::Manual,
        policy: engine.policy(),
        storage: engine.storage().clone(),
        clock: engine.clock().clone(),
        cancel: engine.shutdown_token().child_token(),
        args: serde_json::Value::Null,
        events: engine.events().clone(),
        plugin: job.to_string(),
    };
    let dynamic = engine.registry().get("probe").unwrap();
    let compiled = engine.registry().get("noop").unwrap();
    let loaded = engine.dynamic_plugins().load(&library).unwrap().0;
    let wire = DynamicPlugin::new("probe", loaded.clone())
        .wire_context(&context("probe"))
        .unwrap();

    println!(
        "dynamic plugin per-call overhead (probe in noop mode; compiled-in and dynamic batches alternate)"
    );
    // Layer 1: the boundary itself, on this thread.
    let boundary = measure_pair(
        plan.batches,
        plan.calls[0],
        || {
            let report = speckit_test_probe::Probe
                .run(std::hint::black_box(&wire))
                .unwrap();
            std::hint::black_box(report);
        },
        || {
            let input = serde_json::to_vec(&wire).unwrap();
            let output = loaded.call(PluginFunction::Run, &input).unwrap();
            let report: speckit_plugin_sdk::Report = serde_json::from_slice(&output).unwrap();
            std::hint::black_box(report);
        },
    );
    report(
        "1. SDK run: Rust call vs C ABI + JSON",
        plan.calls[0],
        &boundary,
    );

    // Layer 2: Plugin::run as the engine calls it.
    let run = measure_pair_async(
        plan.batches,
        plan.calls[1],
        Box::new(|| {
            let plugin = compiled.clone();
            let ctx = context("noop");
            Box::pin(async move {
                plugin.run(ctx).await.unwrap();
            })
        }),
        Box::new(|| {
            let plugin = dynamic.clone();
            let ctx = context("probe");
            Box::pin(async move {
                let report = plugin.run(ctx).await.unwrap();
                assert_eq!(report.summary, "noop");
            })
        }),
    )
    .await;
    report(
        "2. Plugin::run (dynamic adds 2 threads)",
        plan.calls[1],
        &run,
    );

    // Layer 3: a whole job run, recorded in the database.
    let run_job = |job: &'static str| -> BoxFuture<'static, ()> {
        let engine = engine.clone();
        Box::pin(async move {
            let run = engine
                .run_job(job, JobTrigger::Manual, serde_json::Value::Null)
                .await
                .unwrap();
            assert_eq!(run.outcome, JobOutcome::Succeeded);
        })
    };
    let job = measure_pair_async(
        plan.batches,
        plan.calls[2],
        Box::new(|| run_job("noop")),
        Box::new(|| run_job("probe")),
    )
    .await;
    report(
        "3. Engine::run_job (+ 2 database writes)",
        plan.calls[2],
        &job,
    );

    if !real {
        println!("(smoke run: pass --bench, as `cargo bench` does, for real figures)");
    }
    engine.shutdown(Duration::from_secs(5)).await;
}

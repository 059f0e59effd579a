//! Per-call overhead of a dynamic plugin against a compiled-in one, at three layers, each
//! with its compiled-in baseline measured beside it in the same run:
//!
//! 1. The boundary: the test probe's `run` called as plain Rust (linked in) against the
//!    same code called through the C ABI in this process (context to JSON, the call,
//!    report from JSON, buffer freed), as dynamic plugins ran until they moved out of
//!    process.
//! 2. `Plugin::run` as the engine calls it: a compiled-in no-op plugin against the dynamic
//!    plugin, which now runs in a plugin host process (`spawn_blocking`, two frames over
//!    pipes, the host's call).
//! 3. `Engine::run_job` end to end (two database writes, events) for both.
//! 4. A transaction of 1,000 inserts: written by the probe through the SDK's storage
//!    (one batch, checked by the sandbox, run by the engine's writer), against the same
//!    1,000 inserts through `Storage::write` directly.
//!
//! The probe runs in `noop` mode (returns a one-line report), so the figures are the
//! boundary's own cost. `cargo bench -p speckit-engine --bench dynamic_call` runs it for
//! real; without `--bench` (as `cargo test --all-targets` runs it) it does a smoke run.

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use speckit_engine::dynamic::{library, locate, DynamicPlugin, HostCommand, PluginFunction};
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
    fn jobs(&self) -> Vec<speckit_engine::policy::JobSpec> {
        vec![speckit_engine::policy::JobSpec::on_request("noop")]
    }
    fn run(&self, _ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async { Ok(JobReport::new("noop", serde_json::Value::Null)) })
    }
}

struct Plan {
    /// Batch pairs measured; the median pair is reported.
    batches: usize,
    /// Calls per batch, by layer.
    calls: [usize; 4],
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
            calls: [20_000, 2_000, 300, 20],
        }
    } else {
        Plan {
            batches: 1,
            calls: [10, 5, 2, 1],
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
    let library = speckit_testkit::artifacts::install_library(
        dir.path(),
        "speckit_test_probe",
        "libprobe.so",
    );
    let config = dir.path().join("speckit.toml");
    fs::write(
        &config,
        "[storage]\ndatabase_path = \"consensus.db\"\n[plugins.probe]\npath = \"plugins/libprobe.so\"\n\
         [plugins.probe.config]\nmode = \"noop\"\n\
         [plugins.probe_inserts]\npath = \"plugins/libprobe.so\"\n\
         [plugins.probe_inserts.config]\nmode = \"storage\"\ninserts = 1000\n",
    )
    .unwrap();
    let mut options = EngineOptions::new(&config);
    options.env = Vec::new();
    options.plugin_host = HostCommand::new(env!("CARGO_BIN_EXE_speckit-plugin-host"));
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
    let section = &engine.policy().policy.plugins["probe"];
    let loaded = engine.dynamic_plugins().load(&library, section).unwrap();
    let wire = DynamicPlugin::new("probe", loaded.clone())
        .wire_context(&context("probe"))
        .unwrap();
    // Today's in-process call, for comparison: the same library opened in this process.
    let file = locate::locate(&library).unwrap();
    let in_process = library::open(&file, locate::check_permissions(&file).unwrap()).unwrap();

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
            let output = in_process.call(PluginFunction::Run, &input, None).unwrap();
            let report: speckit_plugin_sdk::Report = serde_json::from_slice(&output).unwrap();
            std::hint::black_box(report);
        },
    );
    report(
        "1. SDK run: Rust call vs in-process C ABI",
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
        "2. Plugin::run (dynamic: via plugin host)",
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

    // Layer 4: 1,000 inserts in one transaction, through the plugin or directly.
    engine
        .storage()
        .write(|tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS bench_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL)",
            )
            .map_err(speckit_engine::storage::sql_error(tx))
        })
        .await
        .unwrap();
    let direct_storage = engine.storage().clone();
    let direct = move || -> BoxFuture<'static, ()> {
        let storage = direct_storage.clone();
        Box::pin(async move {
            storage
                .write(|tx| {
                    for i in 0..1000 {
                        tx.execute(
                            "INSERT INTO bench_notes (note) VALUES (?1)",
                            [format!("note {i} of run 1")],
                        )
                        .map_err(speckit_engine::storage::sql_error(tx))?;
                    }
                    Ok::<_, speckit_engine::storage::StorageError>(())
                })
                .await
                .unwrap();
        })
    };
    let plugin_engine = engine.clone();
    let through_plugin = move || -> BoxFuture<'static, ()> {
        let engine = plugin_engine.clone();
        Box::pin(async move {
            let run = engine
                .run_job("probe_inserts", JobTrigger::Manual, serde_json::Value::Null)
                .await
                .unwrap();
            let data = &run.report.as_ref().unwrap().data;
            assert_eq!(
                data["inserts"]["changes"].as_array().map(Vec::len),
                Some(1000),
                "{data}"
            );
        })
    };
    let inserts = measure_pair_async(
        plan.batches,
        plan.calls[3],
        Box::new(direct),
        Box::new(through_plugin),
    )
    .await;
    report(
        "4. 1,000 inserts: Storage::write vs plugin",
        plan.calls[3],
        &inserts,
    );

    if !real {
        println!("(smoke run: pass --bench, as `cargo bench` does, for real figures)");
    }
    engine.shutdown(Duration::from_secs(5)).await;
}

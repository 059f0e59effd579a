//! Every value `check` accepts runs without a panic: random policies (each numeric field
//! from its edge values: 0, 1, typical, the type's limits, negative, NaN, infinity) are
//! loaded as `check` loads them; each one accepted then starts an engine and runs every
//! compiled-in job that can run here (dry runs where they change things), the evidence
//! stats and the guard. A refusal is fine; a panic, or a job the engine caught panicking,
//! fails the test with the policy that did it.

use proptest::prelude::*;
use speckit_engine::policy::load_policy;
use speckit_engine::{Engine, EngineOptions, JobErrorKind, JobTrigger};

/// (dotted key, whether it is a float).
const KEYS: &[(&str, bool)] = &[
    ("storage.busy_timeout_ms", false),
    ("storage.write_retry_attempts", false),
    ("storage.journal_size_limit_bytes", false),
    ("evidence.warn_mb", true),
    ("evidence.limit_mb", true),
    ("evidence.root_warn_mb", true),
    ("evidence.file_warn_mb", true),
    ("retention.archive_after_days", false),
    ("retention.purge_after_days", false),
    ("retention.max_removal_fraction", true),
    ("retention.zstd_level", false),
    ("retention.verify_archive_hashes_every_days", false),
    ("vacuum.free_fraction_threshold", true),
    ("vacuum.chunk_pages", false),
    ("vacuum.step_target_ms", true),
    ("vacuum.checkpoint_wal_kib", false),
    ("vacuum.lock_time_fraction", true),
    ("spawn.max_concurrency", false),
    ("spawn.spawn_timeout_ms", false),
    ("spawn.max_response_bytes", false),
    ("spawn.max_log_bytes", false),
    ("schedule.lease_seconds", false),
    ("schedule.shutdown_grace_seconds", false),
    ("schedule.job_history_days", false),
    ("schedule.job_history_max_rows", false),
];

fn integer() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(0i64),
        Just(1),
        Just(3),
        Just(30),
        Just(90),
        Just(36_500),
        Just(36_501),
        Just(i64::from(i32::MAX)),
        Just(i64::from(i32::MAX) + 1),
        Just(i64::from(u32::MAX)),
        Just(i64::from(u32::MAX) + 1),
        Just(i64::MAX),
        Just(-1),
        Just(i64::MIN),
        any::<i64>(),
        0i64..100_000,
    ]
    .prop_map(|n| n.to_string())
}

fn float() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0.0".to_string()),
        Just("1e-9".to_string()),
        Just("0.5".to_string()),
        Just("1.0".to_string()),
        Just("40.0".to_string()),
        Just("1e300".to_string()),
        Just("-1.0".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        (0.0f64..100.0).prop_map(|f| format!("{f:?}")),
    ]
}

/// A policy: some of the keys, each with a random value.
fn policy() -> impl Strategy<Value = Vec<(usize, String)>> {
    let value = |is_float: bool| -> BoxedStrategy<String> {
        if is_float {
            float().boxed()
        } else {
            integer().boxed()
        }
    };
    let entries: Vec<BoxedStrategy<(usize, String)>> = KEYS
        .iter()
        .enumerate()
        .map(|(i, (_, is_float))| value(*is_float).prop_map(move |v| (i, v)).boxed())
        .collect();
    proptest::sample::subsequence((0..entries.len()).collect::<Vec<_>>(), 1..6).prop_flat_map(
        move |chosen| {
            chosen
                .into_iter()
                .map(|i| entries[i].clone())
                .collect::<Vec<_>>()
        },
    )
}

fn toml_of(entries: &[(usize, String)]) -> String {
    let mut sections: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    // Always a [spawn] table: its agent below prints a ready line, so a spawn runs every
    // timing it has.
    sections.entry("spawn").or_default();
    for (i, value) in entries {
        let (section, key) = KEYS[*i].0.split_once('.').unwrap();
        sections
            .entry(section)
            .or_default()
            .push(format!("{key} = {value}"));
    }
    let mut text =
        String::from("[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"evidence\"\n");
    for (section, lines) in sections {
        // storage and evidence are open already: append their keys under them.
        if section != "storage" && section != "evidence" {
            text.push_str(&format!("[{section}]\n"));
        }
        for line in lines {
            text = insert_under(&text, section, &line);
        }
    }
    text.push_str(
        "[[spawn.agents]]\nname = \"echo\"\ncommand = \"/bin/sh\"\n\
         args = [\"-c\", \"echo READY; cat > /dev/null\"]\nreadiness = { line = \"READY\" }\n",
    );
    text
}

/// Adds `line` to `[section]` (creating it at the end when missing).
fn insert_under(text: &str, section: &str, line: &str) -> String {
    let header = format!("[{section}]\n");
    match text.find(&header) {
        Some(at) => {
            let at = at + header.len();
            format!("{}{line}\n{}", &text[..at], &text[at..])
        }
        None => format!("{text}{header}{line}\n"),
    }
}

/// Runs everything that reads the policy; returns what panicked, if anything.
async fn exercise(dir: &std::path::Path) -> Result<(), String> {
    let mut options = EngineOptions::new(dir.join("speckit.toml"));
    options.env = Vec::new();
    let engine = match Engine::start(options, speckit_hygiene::builtin_plugins()).await {
        Ok(engine) => engine,
        // Refused at start (a database setting the open rejects): not a panic.
        Err(_) => return Ok(()),
    };
    let jobs = [
        ("cleanup", serde_json::json!({ "dry_run": true })),
        ("vacuum", serde_json::json!({ "dry_run": true })),
        ("integrity_check", serde_json::Value::Null),
        (
            "spawn",
            serde_json::json!({ "spec": "SPEC-KIT-001", "stage": "plan" }),
        ),
    ];
    let mut panicked = None;
    for (job, args) in jobs {
        if let Ok(run) = engine.run_job(job, JobTrigger::Manual, args).await {
            if run.error_kind == Some(JobErrorKind::Panicked) {
                panicked = Some(format!("{job} panicked: {:?}", run.error));
                break;
            }
            if job == "spawn" && run.outcome == speckit_engine::events::JobOutcome::Succeeded {
                SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    let policy = engine.policy().policy.clone();
    let stats = tokio::task::spawn_blocking(move || {
        let names = speckit_retention::stats::SpecNames::canonical();
        let _ = speckit_retention::stats::collect(
            &policy,
            &speckit_retention::stats::Scope::All,
            &names,
        );
        let _ = speckit_retention::guard::evidence_guard(&policy, "SPEC-KIT-001");
    })
    .await;
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    if let Err(e) = stats {
        return Err(format!("stats or guard panicked: {e}"));
    }
    panicked.map_or(Ok(()), Err)
}

/// One random policy: written, loaded as `check` loads it, and run when accepted.
/// Returns whether it was accepted.
fn try_policy(entries: &[(usize, String)]) -> Result<bool, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let text = toml_of(entries);
    std::fs::write(dir.path().join("speckit.toml"), &text).unwrap();
    let spec = dir.path().join("evidence/commands/SPEC-KIT-001");
    std::fs::create_dir_all(&spec).unwrap();
    std::fs::write(spec.join("a.log"), b"x").unwrap();
    std::fs::write(
        dir.path().join("SPEC.md"),
        "| ID | Status |\n|---|---|\n| SPEC-KIT-001 | Done |\n",
    )
    .unwrap();
    let shape = speckit_hygiene::builtin_shape();
    if load_policy(&dir.path().join("speckit.toml"), true, Vec::new(), &shape).is_err() {
        return Ok(false);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(exercise(dir.path())).and_then(|()| {
        // A panic the engine or a task caught and turned into an error still counts.
        let panics = std::mem::take(&mut *PANICS.lock().unwrap());
        if panics.is_empty() {
            Ok(())
        } else {
            Err(format!("panicked: {}", panics.join("; ")))
        }
    });
    prop_assert!(
        outcome.is_ok(),
        "{}\n--- policy ---\n{}",
        outcome.unwrap_err(),
        text
    );
    Ok(true)
}

/// Policies whose spawn started its agent and saw it through: the spawn path really ran.
static SPAWNED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Panics anywhere in the process (jobs, blocking tasks the engine or a plugin spawned),
/// caught or not, with their messages.
static PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[test]
fn every_policy_check_accepts_runs_without_a_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.lock().unwrap().push(info.to_string());
        default_hook(info);
    }));
    let config = ProptestConfig {
        cases: 240,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let accepted = std::cell::Cell::new(0u32);
    let result = runner.run(&policy(), |entries| {
        if try_policy(&entries)? {
            accepted.set(accepted.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Most random values are refused; the property means something only if enough
    // policies got through to run.
    assert!(
        accepted.get() >= 20,
        "only {} of 240 random policies were accepted",
        accepted.get()
    );
    let spawned = SPAWNED.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        spawned > 0,
        "no accepted policy got as far as running its agent"
    );
    println!(
        "{} of 240 random policies accepted and run; {spawned} spawned their agent",
        accepted.get()
    );
}

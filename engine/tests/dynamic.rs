//! Dynamic plugins end to end through the engine: loading the test plugins built by this
//! workspace (`plugins/sdk/test-plugins/*`, dev-dependencies so `cargo test` builds their
//! shared libraries), refusing bad files with an error that names the file and the cause,
//! containing panics and hangs, hot reload, and scheduling.

#[path = "support/sample_section.rs"]
mod sample_section;
use sample_section::EvidencePlugin;
use speckit_engine::dynamic::HostCommand;
use speckit_engine::events::{EngineEvent, JobOutcome, ReloadCause, ReloadOutcome};
use speckit_engine::plugin::{BoxFuture, JobContext, JobReport, JobTrigger, Plugin, PluginError};
use speckit_engine::registry::{LoadFailure, PluginOrigin};
use speckit_engine::{Engine, EngineError, EngineOptions};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const PROBE: &str = "speckit_test_probe";
const BAD_ABI: &str = "speckit_test_bad_abi";
const NO_ENTRY: &str = "speckit_test_no_entry";

/// A shared library this workspace built (a dev-dependency).
fn built(lib: &str) -> PathBuf {
    speckit_testkit::artifacts::built_library(lib)
}

/// A temporary workspace: `speckit.toml`, its database, a `plugins/` folder (mode 0755).
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        speckit_testkit::artifacts::plugins_folder(dir.path());
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("speckit.toml")
    }

    /// Copies a built library to `plugins/<file>` (a new file, so a new inode: the way a
    /// user drops a plugin in) and returns its path.
    fn drop_in(&self, lib: &str, file: &str) -> PathBuf {
        speckit_testkit::artifacts::install_library(self.path(), lib, file)
    }

    /// Writes `speckit.toml`: no built-in schedule, and `plugins` (TOML) appended.
    fn write(&self, plugins: &str) {
        let body = format!(
            "[storage]\ndatabase_path = \"consensus.db\"\n\n[evidence]\nroot = \"evidence\"\n\n\
             \n{plugins}\n"
        );
        fs::write(self.config(), body).unwrap();
    }

    fn options(&self) -> EngineOptions {
        let mut options = EngineOptions::new(self.config());
        options.env = Vec::new();
        options.plugin_host = HostCommand::new(env!("CARGO_BIN_EXE_speckit-plugin-host"));
        options
    }

    async fn start(&self) -> Engine {
        self.start_with(Vec::new()).await
    }

    /// Starts with `builtin` and the stand-ins that declare `[evidence]` and `[retention]`.
    async fn start_with(&self, mut builtin: Vec<Arc<dyn Plugin>>) -> Engine {
        builtin.push(Arc::new(EvidencePlugin));
        Engine::start(self.options(), builtin).await.unwrap()
    }
}

/// The registry's dynamic plugins (the stand-ins are compiled in).
fn dynamic_plugins(engine: &Engine) -> Vec<speckit_engine::registry::PluginInfo> {
    engine
        .registry()
        .list()
        .into_iter()
        .filter(|p| matches!(p.origin, PluginOrigin::Dynamic { .. }))
        .collect()
}

fn probe_section(name: &str, file: &str, extra: &str, config: &str) -> String {
    format!(
        "[plugins.{name}]\npath = \"plugins/{file}\"\n{extra}\n[plugins.{name}.config]\n{config}\n"
    )
}

fn failure<'a>(failures: &'a [LoadFailure], name: &str) -> &'a LoadFailure {
    failures
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no load failure for {name}: {failures:?}"))
}

async fn run(engine: &Engine, job: &str) -> speckit_engine::engine::JobRun {
    engine
        .run_job(job, JobTrigger::Manual, serde_json::Value::Null)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_plugin_loads_validates_its_config_and_runs_with_the_job_context() {
    let ws = Workspace::new();
    let lib = ws.drop_in(PROBE, "libprobe.so");
    ws.write(&probe_section("probe", "libprobe.so", "", "mode = \"ok\""));
    let engine = ws.start().await;

    let listed = dynamic_plugins(&engine);
    let probe = listed.iter().find(|p| p.name == "probe").unwrap();
    assert_eq!(probe.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(probe.jobs, vec!["probe".to_string()]);
    assert_eq!(
        probe.origin,
        PluginOrigin::Dynamic {
            path: fs::canonicalize(&lib).unwrap()
        }
    );
    assert!(engine.registry().failures().is_empty());

    let run = engine
        .run_job(
            "probe",
            JobTrigger::Manual,
            serde_json::json!({"dry_run": true}),
        )
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{run:?}");
    let report = run.report.unwrap();
    assert_eq!(report.summary, "probe ran job probe");
    // The probe echoes the context it got back.
    let ctx = report.data;
    assert_eq!(ctx["plugin"], "probe");
    assert_eq!(ctx["job"], "probe");
    assert_eq!(ctx["run_id"], run.run_id);
    assert_eq!(ctx["trigger"], "manual");
    assert_eq!(ctx["args"]["dry_run"], true);
    assert_eq!(ctx["config"]["mode"], "ok");
    let dir = ws
        .path()
        .canonicalize()
        .unwrap_or_else(|_| ws.path().to_path_buf());
    let evidence = PathBuf::from(ctx["evidence_root"].as_str().unwrap());
    assert!(
        evidence.is_absolute() && evidence.ends_with("evidence"),
        "{evidence:?}"
    );
    assert_eq!(
        PathBuf::from(ctx["config_dir"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        dir
    );
    assert_eq!(ctx["policy_generation"], 1);
    assert!(ctx["now_unix_ms"].as_i64().unwrap() > 0);
    // Both status lists, as the built-in retention reads them.
    assert_eq!(ctx["active_statuses"][1], "In Progress");
    assert_eq!(ctx["finished_statuses"][0], "Done");
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_plugin_rejecting_its_config_rejects_the_policy_at_start_and_at_reload() {
    let ws = Workspace::new();
    ws.drop_in(PROBE, "libprobe.so");
    ws.write(&probe_section(
        "probe",
        "libprobe.so",
        "",
        "validate = \"reject\"",
    ));
    let err = Engine::start(ws.options(), vec![Arc::new(EvidencePlugin)])
        .await
        .err()
        .unwrap();
    assert!(matches!(err, EngineError::PluginPolicy { .. }), "{err}");
    assert!(err.is_usage());
    let text = err.to_string();
    assert!(
        text.contains("[plugins.probe.config]: validate = \"reject\""),
        "{text}"
    );
    assert!(text.contains("refusing this config"), "{text}");

    // `check` validates the same way.
    let registry = speckit_engine::PluginRegistry::new(Vec::new()).unwrap();
    assert!(speckit_engine::engine::load_and_validate(&ws.options(), &registry).is_err());

    ws.write(&probe_section("probe", "libprobe.so", "", "mode = \"ok\""));
    let engine = ws.start().await;
    ws.write(&probe_section(
        "probe",
        "libprobe.so",
        "",
        "validate = \"reject\"\nmode = \"fail\"",
    ));
    match engine.reload(ReloadCause::Api).await {
        ReloadOutcome::Rejected { error } => {
            assert!(error.contains("refusing this config"), "{error}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // The policy in effect (mode ok) still runs.
    assert_eq!(engine.policy().generation, 1);
    assert_eq!(run(&engine, "probe").await.outcome, JobOutcome::Succeeded);
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_plugin_for_another_abi_is_refused_naming_every_mismatched_field() {
    let ws = Workspace::new();
    let bad = ws.drop_in(BAD_ABI, "libfuture.so");
    ws.drop_in(PROBE, "libprobe.so");
    ws.write(&format!(
        "{}{}",
        probe_section("future", "libfuture.so", "", ""),
        probe_section("probe", "libprobe.so", "", "")
    ));
    let engine = ws.start().await;
    let failures = engine.registry().failures();
    let error = &failure(&failures, "future").error;
    let abi = speckit_plugin_sdk::abi::ABI_VERSION;
    let size = speckit_plugin_sdk::abi::TABLE_SIZE;
    assert!(
        error.contains(&fs::canonicalize(&bad).unwrap().display().to_string()),
        "{error}"
    );
    assert!(error.contains("built for another plugin ABI"), "{error}");
    assert!(
        error.contains(&format!("abi_version is {} (expected {abi})", abi + 1)),
        "{error}"
    );
    assert!(
        error.contains(&format!("table_size is {} (expected {size})", size + 128)),
        "{error}"
    );
    assert!(!error.contains("magic"), "the magic matched: {error}");
    assert!(engine.registry().get("future").is_none());
    // The engine goes on.
    assert_eq!(run(&engine, "probe").await.outcome, JobOutcome::Succeeded);
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn bad_files_are_refused_each_with_its_file_and_cause() {
    let ws = Workspace::new();
    let plugins = ws.path().join("plugins");
    ws.drop_in(PROBE, "libprobe.so");
    ws.drop_in(NO_ENTRY, "libnoentry.so");
    fs::write(
        plugins.join("libscript.so"),
        "#!/bin/sh\necho not a library\n",
    )
    .unwrap();
    // An ELF header and then garbage: it gets past the format check to the loader.
    let mut garbage = b"\x7fELF".to_vec();
    garbage.extend(std::iter::repeat_n(0xAB, 60));
    fs::write(plugins.join("libgarbage.so"), garbage).unwrap();
    let writable = ws.drop_in(PROBE, "libwritable.so");
    fs::set_permissions(&writable, fs::Permissions::from_mode(0o777)).unwrap();
    let open_dir = plugins.join("open");
    fs::create_dir(&open_dir).unwrap();
    fs::copy(built(PROBE), open_dir.join("libprobe2.so")).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::create_dir(plugins.join("empty")).unwrap();

    let mut config = String::new();
    for (name, file) in [
        ("noentry", "libnoentry.so"),
        ("script", "libscript.so"),
        ("garbage", "libgarbage.so"),
        ("writable", "libwritable.so"),
        ("opendir", "open"),
        ("empty", "empty"),
        ("missing", "libmissing.so"),
        ("probe", "libprobe.so"),
    ] {
        config.push_str(&probe_section(name, file, "", ""));
    }
    ws.write(&config);
    let engine = ws.start().await;
    let failures = engine.registry().failures();
    let expect = |name: &str, file: &Path, cause: &str| {
        let error = &failure(&failures, name).error;
        let shown = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        assert!(
            error.contains(&shown.display().to_string())
                || error.contains(&file.display().to_string()),
            "{name}: the error does not name {}: {error}",
            file.display()
        );
        assert!(
            error.contains(cause),
            "{name}: expected {cause:?} in: {error}"
        );
    };
    expect(
        "noentry",
        &plugins.join("libnoentry.so"),
        "has no symbol speckit_plugin_entry",
    );
    expect(
        "script",
        &plugins.join("libscript.so"),
        "is not a shared library: it starts with bytes 23 21 2f 62",
    );
    expect(
        "garbage",
        &plugins.join("libgarbage.so"),
        "cannot load plugin library",
    );
    expect(
        "writable",
        &writable,
        "writable by group or others (mode 0777)",
    );
    expect("opendir", &open_dir, "plugin folder");
    expect("opendir", &open_dir, "writable by group or others");
    expect("empty", &plugins.join("empty"), "holds no shared library");
    expect(
        "missing",
        &plugins.join("libmissing.so"),
        "cannot read plugin path",
    );
    assert_eq!(failures.len(), 7, "{failures:?}");
    assert_eq!(dynamic_plugins(&engine).len(), 1);
    assert_eq!(run(&engine, "probe").await.outcome, JobOutcome::Succeeded);
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_panicking_plugin_fails_its_job_and_the_engine_goes_on() {
    let ws = Workspace::new();
    ws.drop_in(PROBE, "libprobe.so");
    ws.write(&format!(
        "{}{}",
        probe_section("boom", "libprobe.so", "", "mode = \"panic\""),
        probe_section("fine", "libprobe.so", "", "mode = \"ok\"")
    ));
    let engine = ws.start().await;
    for _ in 0..2 {
        let run = run(&engine, "boom").await;
        assert_eq!(run.outcome, JobOutcome::Failed);
        let error = run.error.unwrap();
        assert!(error.contains("plugin boom"), "{error}");
        assert!(error.contains("panicked: probe panicked in run"), "{error}");
    }
    assert_eq!(run(&engine, "fine").await.outcome, JobOutcome::Succeeded);
    // Errors returned or reported (not panics) fail the run too.
    ws.write(&format!(
        "{}{}",
        probe_section("boom", "libprobe.so", "", "mode = \"fail\""),
        probe_section("fine", "libprobe.so", "", "mode = \"report_errors\"")
    ));
    assert!(matches!(
        engine.reload(ReloadCause::Api).await,
        ReloadOutcome::Applied { .. }
    ));
    let failed = run(&engine, "boom").await;
    assert_eq!(failed.outcome, JobOutcome::Failed);
    assert!(failed.error.unwrap().contains("probe failed on purpose"));
    let reported = run(&engine, "fine").await;
    assert_eq!(reported.outcome, JobOutcome::Failed);
    assert_eq!(
        reported.report.unwrap().errors,
        vec!["one file could not be read"]
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_plugin_that_never_returns_is_killed_at_its_timeout_and_the_next_call_starts_afresh() {
    let ws = Workspace::new();
    ws.drop_in(PROBE, "libprobe.so");
    ws.write(&format!(
        "{}{}",
        probe_section(
            "stuck",
            "libprobe.so",
            "call_timeout_ms = 200",
            "mode = \"hang\""
        ),
        probe_section("fine", "libprobe.so", "", "mode = \"ok\"")
    ));
    let engine = ws.start().await;
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let run = run(&engine, "stuck").await;
        assert_eq!(run.outcome, JobOutcome::Failed);
        let error = run.error.unwrap();
        assert!(
            error.contains(
                "did not return within 200 ms (call_timeout_ms); its host process was killed"
            ),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    // Everything else goes on, and shutdown has nothing to wait for.
    assert_eq!(run(&engine, "fine").await.outcome, JobOutcome::Succeeded);
    tokio::time::timeout(
        Duration::from_secs(10),
        engine.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("shutdown must not wait for a hung plugin");
}

#[tokio::test]
async fn a_panic_or_hang_in_validate_is_a_load_failure_not_a_crash() {
    let ws = Workspace::new();
    ws.drop_in(PROBE, "libprobe.so");
    ws.write(&format!(
        "{}{}{}",
        probe_section("vpanic", "libprobe.so", "", "validate = \"panic\""),
        probe_section(
            "vhang",
            "libprobe.so",
            "call_timeout_ms = 200",
            "validate = \"hang\""
        ),
        probe_section("fine", "libprobe.so", "", "")
    ));
    let engine = ws.start().await;
    let failures = engine.registry().failures();
    let error = &failure(&failures, "vpanic").error;
    assert!(
        error.contains("validating [plugins.vpanic.config]: panicked: probe panicked in validate"),
        "{error}"
    );
    let error = &failure(&failures, "vhang").error;
    assert!(error.contains("did not return within 200 ms"), "{error}");
    assert!(engine.registry().get("vpanic").is_none());
    assert_eq!(run(&engine, "fine").await.outcome, JobOutcome::Succeeded);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn hot_reload_adds_moves_and_removes_a_plugin_and_stops_unused_hosts() {
    let ws = Workspace::new();
    ws.write("");
    let engine = ws.start().await;
    assert!(dynamic_plugins(&engine).is_empty());

    // Added while running: loaded, registered, runnable.
    let v1 = ws.drop_in(PROBE, "libprobe-1.so");
    ws.write(&probe_section("probe", "libprobe-1.so", "", ""));
    assert!(matches!(
        engine.reload(ReloadCause::Api).await,
        ReloadOutcome::Applied { .. }
    ));
    assert_eq!(run(&engine, "probe").await.outcome, JobOutcome::Succeeded);

    // A config-only change keeps the same instance; a new path loads the new file.
    let v2 = ws.drop_in(PROBE, "libprobe-2.so");
    ws.write(&probe_section(
        "probe",
        "libprobe-2.so",
        "",
        "mode = \"ok\"",
    ));
    assert!(matches!(
        engine.reload(ReloadCause::Api).await,
        ReloadOutcome::Applied { .. }
    ));
    let origin = engine
        .registry()
        .list()
        .into_iter()
        .find(|p| p.name == "probe")
        .unwrap()
        .origin;
    assert_eq!(
        origin,
        PluginOrigin::Dynamic {
            path: fs::canonicalize(&v2).unwrap()
        }
    );
    assert_eq!(run(&engine, "probe").await.outcome, JobOutcome::Succeeded);

    // Removed: unregistered, no longer runnable; no host process keeps either library.
    ws.write("");
    assert!(matches!(
        engine.reload(ReloadCause::Api).await,
        ReloadOutcome::Applied { .. }
    ));
    assert!(engine.registry().get("probe").is_none());
    let err = engine
        .run_job("probe", JobTrigger::Manual, serde_json::Value::Null)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::UnknownJob { .. }), "{err}");
    assert!(engine.dynamic_plugins().loaded().is_empty());
    let _ = v2;

    // Added back from a path loaded before: loaded again, registered again.
    ws.write(&probe_section("probe", "libprobe-1.so", "", ""));
    assert!(matches!(
        engine.reload(ReloadCause::Api).await,
        ReloadOutcome::Applied { .. }
    ));
    assert_eq!(run(&engine, "probe").await.outcome, JobOutcome::Succeeded);
    let loaded: Vec<PathBuf> = engine
        .dynamic_plugins()
        .loaded()
        .into_iter()
        .map(|l| l.path)
        .collect();
    assert_eq!(loaded, vec![fs::canonicalize(&v1).unwrap()]);
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_library_replaced_in_place_is_loaded_afresh_at_the_next_reload() {
    let ws = Workspace::new();
    let path = ws.drop_in(PROBE, "libprobe.so");
    ws.write(&probe_section("probe", "libprobe.so", "", ""));
    let engine = ws.start().await;
    let before = std::fs::metadata(&path).unwrap();
    // A new build installed over the same name (a new inode at the same path).
    ws.drop_in(PROBE, "libprobe.so");
    ws.write(&probe_section("probe", "libprobe.so", "", "mode = \"ok\""));
    assert!(matches!(
        engine.reload(ReloadCause::Api).await,
        ReloadOutcome::Applied { .. }
    ));
    assert!(engine.registry().failures().is_empty());
    assert_ne!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()),
        std::os::unix::fs::MetadataExt::ino(&before)
    );
    assert_eq!(run(&engine, "probe").await.outcome, JobOutcome::Succeeded);
    assert_eq!(engine.dynamic_plugins().loaded().len(), 1);
    engine.shutdown(Duration::from_secs(5)).await;
}

/// A compiled-in plugin to collide with.
struct Builtin;

impl Plugin for Builtin {
    fn name(&self) -> &str {
        "counter"
    }
    fn version(&self) -> &str {
        "1.0.0"
    }
    fn jobs(&self) -> Vec<speckit_engine::policy::JobSpec> {
        vec![speckit_engine::policy::JobSpec::on_request("count")]
    }
    fn run(&self, _ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async { Ok(JobReport::new("counted", serde_json::json!({}))) })
    }
}

#[tokio::test]
async fn a_name_taken_by_a_compiled_in_plugin_is_a_load_failure() {
    let ws = Workspace::new();
    ws.drop_in(PROBE, "libprobe.so");
    ws.write(&format!(
        "{}{}",
        probe_section("counter", "libprobe.so", "", ""),
        probe_section("count", "libprobe.so", "", "")
    ));
    let engine = ws.start_with(vec![Arc::new(Builtin)]).await;
    let failures = engine.registry().failures();
    assert!(failure(&failures, "counter")
        .error
        .contains("taken by a compiled-in plugin"));
    assert!(failure(&failures, "count")
        .error
        .contains("taken by a compiled-in plugin"));
    assert_eq!(
        run(&engine, "count").await.report.unwrap().summary,
        "counted"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_scheduler_runs_a_dynamic_plugin_on_its_schedule() {
    let ws = Workspace::new();
    ws.drop_in(PROBE, "libprobe.so");
    // Every second (the seconds-first cron form), so the test waits about one second.
    ws.write(&probe_section(
        "probe",
        "libprobe.so",
        "schedule = \"* * * * * *\"",
        "",
    ));
    let engine = ws.start().await;
    let mut events = engine.events().subscribe();
    speckit_engine::scheduler::spawn(&engine);
    let scheduled = tokio::time::timeout(Duration::from_secs(30), async {
        let mut run_id = None;
        loop {
            match events.recv().await.unwrap() {
                EngineEvent::JobStarted {
                    job,
                    run_id: id,
                    trigger: JobTrigger::Schedule { .. },
                } if job == "probe" => run_id = Some(id),
                EngineEvent::JobFinished {
                    job,
                    run_id: id,
                    outcome,
                    ..
                } if job == "probe" && Some(id) == run_id => return outcome,
                _ => {}
            }
        }
    })
    .await
    .expect("the scheduler did not run the dynamic plugin within 30 s");
    assert_eq!(scheduled, JobOutcome::Succeeded);
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn links_and_odd_names_resolve_to_the_real_file_and_its_folder_is_checked() {
    let ws = Workspace::new();
    let plugins = ws.path().join("plugins");
    // An odd but legal name, reached through a symbolic link: loads, shown by its real path.
    let odd = ws.drop_in(PROBE, "lib prøbe \u{1F50C}.so");
    std::os::unix::fs::symlink(&odd, plugins.join("liblinked.so")).unwrap();
    // A link in a safe folder to a library in a folder anyone can write: refused, naming
    // the folder the file really is in.
    let open_dir = ws.path().join("open");
    fs::create_dir(&open_dir).unwrap();
    fs::copy(built(PROBE), open_dir.join("libprobe.so")).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(open_dir.join("libprobe.so"), plugins.join("libsneaky.so")).unwrap();
    ws.write(&format!(
        "{}{}",
        probe_section("linked", "liblinked.so", "", ""),
        probe_section("sneaky", "libsneaky.so", "", "")
    ));
    let engine = ws.start().await;
    let failures = engine.registry().failures();
    let error = &failure(&failures, "sneaky").error;
    let real_dir = fs::canonicalize(&open_dir).unwrap();
    assert!(
        error.contains(&format!("plugin folder {}", real_dir.display())),
        "{error}"
    );
    assert_eq!(failures.len(), 1, "{failures:?}");
    let origin = dynamic_plugins(&engine)[0].origin.clone();
    assert_eq!(
        origin,
        PluginOrigin::Dynamic {
            path: fs::canonicalize(&odd).unwrap()
        }
    );
    assert_eq!(run(&engine, "linked").await.outcome, JobOutcome::Succeeded);
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_of_dynamic_plugins_and_reloads_all_complete() {
    let ws = Workspace::new();
    ws.drop_in(PROBE, "libprobe.so");
    let sections = |mode: &str| {
        (0..4)
            .map(|i| {
                probe_section(
                    &format!("p{i}"),
                    "libprobe.so",
                    "",
                    &format!("mode = \"{mode}\""),
                )
            })
            .collect::<String>()
    };
    ws.write(&sections("ok"));
    let engine = ws.start().await;
    let mut tasks = Vec::new();
    for round in 0..5 {
        for i in 0..4 {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                engine
                    .run_job(
                        &format!("p{i}"),
                        JobTrigger::Manual,
                        serde_json::json!({"round": round}),
                    )
                    .await
                    .unwrap()
            }));
        }
    }
    // Reloads (config changes re-validate every plugin) while the jobs run.
    for mode in ["noop", "ok", "noop"] {
        ws.write(&sections(mode));
        assert!(matches!(
            engine.reload(ReloadCause::Api).await,
            ReloadOutcome::Applied { .. }
        ));
    }
    let mut succeeded = 0;
    for task in tasks {
        let run = task.await.unwrap();
        succeeded += usize::from(run.outcome == JobOutcome::Succeeded);
        // A job already running under the same name is skipped, never run twice at once.
        assert!(
            matches!(run.outcome, JobOutcome::Succeeded | JobOutcome::Skipped),
            "{run:?}"
        );
    }
    // Each name ran at least once; the four names ran side by side in one library.
    assert!(succeeded >= 4, "{succeeded} runs succeeded");
    assert!(engine.registry().failures().is_empty());
    for i in 0..4 {
        assert_eq!(
            run(&engine, &format!("p{i}")).await.outcome,
            JobOutcome::Succeeded
        );
    }
    engine.shutdown(Duration::from_secs(5)).await;
}

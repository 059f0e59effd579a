//! Hot reload end to end: real files in a temporary folder, the real OS watch (notify),
//! SIGHUP, and a running job that must keep its snapshot. Every wait is on the engine's
//! event channel (or policy channel) with a bounded timeout; nothing sleeps to wait.

#[path = "support/sample_section.rs"]
mod sample_section;

use sample_section::{Ages, AgesPlugin};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use speckit_engine::events::{EngineEvent, JobOutcome, ReloadCause, ReloadOutcome};
use speckit_engine::plugin::BoxFuture;
use speckit_engine::policy::JobSpec;
use speckit_engine::watch::{self, WatchOptions};
use speckit_engine::{
    Engine, EngineOptions, JobContext, JobReport, JobTrigger, Plugin, PluginError,
};
use tokio::sync::{broadcast, mpsc};

/// Longest wait for anything the watcher does (its debounce is 300 ms).
const WAIT: Duration = Duration::from_secs(10);

/// A workspace: the config in a folder with an odd name, the database in another folder
/// (so deleting the config folder never deletes the database under the engine).
struct Workspace {
    dir: tempfile::TempDir,
    config_dir: PathBuf,
    config: PathBuf,
    database: PathBuf,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_dir = dir.path().join("conf dir ü");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let config = config_dir.join("speckit.toml");
        let database = dir.path().join("data").join("consensus.db");
        Self {
            dir,
            config_dir,
            config,
            database,
        }
    }

    /// A valid policy; `extra` is appended (later tables may add keys).
    fn policy(&self, archive_after_days: u32, extra: &str) -> String {
        format!(
            "[storage]\ndatabase_path = {:?}\n\n[retention]\narchive_after_days = {archive_after_days}\npurge_after_days = 400\n{extra}",
            self.database.display().to_string()
        )
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    /// Saves the way editors do: a new file beside the old one, renamed over it.
    fn save_by_rename(&self, text: &str) {
        save_by_rename(&self.config, text);
    }

    fn options(&self) -> EngineOptions {
        let mut options = EngineOptions::new(&self.config);
        options.env = Vec::new();
        options
    }
}

fn save_by_rename(path: &Path, text: &str) {
    let temp = path.with_file_name(".speckit.toml.swp");
    let mut file = std::fs::File::create(&temp).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file.sync_all().unwrap();
    drop(file);
    std::fs::rename(&temp, path).unwrap();
}

struct Running {
    engine: Engine,
    events: broadcast::Receiver<EngineEvent>,
}

impl Running {
    async fn start(
        options: EngineOptions,
        plugins: Vec<Arc<dyn Plugin>>,
        watch: WatchOptions,
    ) -> Self {
        let mut plugins = plugins;
        plugins.push(Arc::new(AgesPlugin));
        let engine = Engine::start(options, plugins).await.unwrap();
        let events = engine.events().subscribe();
        watch::spawn_with(&engine, watch).unwrap();
        Self { engine, events }
    }

    async fn watching(ws: &Workspace) -> Self {
        Self::start(ws.options(), Vec::new(), file_only()).await
    }

    /// The next reload event, whatever its outcome.
    async fn next_reload(&mut self) -> (ReloadCause, ReloadOutcome) {
        loop {
            let event = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("timed out waiting for a reload event")
                .expect("event channel open");
            if let EngineEvent::Reload { cause, outcome } = event {
                return (cause, outcome);
            }
        }
    }

    /// The next reload that applied or rejected something. An `Unchanged` one may come
    /// first when one save's events straddle two quiet periods; it changes nothing.
    async fn next_change(&mut self) -> (ReloadCause, ReloadOutcome) {
        loop {
            let (cause, outcome) = self.next_reload().await;
            if outcome != ReloadOutcome::Unchanged {
                return (cause, outcome);
            }
        }
    }

    /// Waits for the file's change to be applied as `generation`. A rejection on the way
    /// is allowed (a multi-step change may be read half-way, like a folder removed then
    /// made again) but reported if nothing is applied.
    async fn expect_applied(&mut self, generation: u64) -> Vec<String> {
        let mut rejections = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.next_change()).await;
            match next {
                Ok((ReloadCause::FileChanged, ReloadOutcome::Applied { generation: g, changed_keys })) => {
                    assert_eq!(g, generation, "rejections before it: {rejections:?}");
                    assert_eq!(self.engine.policy().generation, generation);
                    return changed_keys;
                }
                Ok((ReloadCause::FileChanged, ReloadOutcome::Rejected { error })) => rejections.push(error),
                Ok(other) => panic!("expected generation {generation} applied from the file, got {other:?}"),
                Err(_) => panic!("generation {generation} not applied within {WAIT:?}; rejections: {rejections:?}"),
            }
        }
    }

    async fn expect_rejected(&mut self) -> String {
        match self.next_change().await {
            (ReloadCause::FileChanged, ReloadOutcome::Rejected { error }) => error,
            other => panic!("expected a rejected reload, got {other:?}"),
        }
    }

    fn archive_after_days(&self) -> u32 {
        self.engine
            .policy()
            .policy
            .section::<Ages>()
            .archive_after_days
    }

    async fn stop(self) {
        self.engine.shutdown(Duration::from_secs(5)).await;
    }
}

/// Only the file watch: SIGHUP is process-wide, and only the SIGHUP test listens for it,
/// so its signal cannot reload another test's engine.
fn file_only() -> WatchOptions {
    WatchOptions {
        listen_sighup: false,
        ..WatchOptions::default()
    }
}

#[tokio::test]
async fn valid_edit_in_place_is_applied() {
    let ws = Workspace::new();
    ws.write(&ws.policy(30, ""));
    let mut run = Running::watching(&ws).await;
    assert_eq!(run.engine.policy().generation, 1);

    ws.write(&ws.policy(45, ""));
    let changed = run.expect_applied(2).await;
    assert_eq!(changed, vec!["retention.archive_after_days".to_string()]);
    assert_eq!(run.archive_after_days(), 45);
    let counters = run.engine.events().counters();
    assert_eq!(counters.reloads_applied, 2, "start-up and the edit");
    assert_eq!(counters.reloads_rejected, 0);
    run.stop().await;
}

#[tokio::test]
async fn editor_save_by_rename_is_applied_again_and_again() {
    let ws = Workspace::new();
    ws.write(&ws.policy(30, ""));
    let mut run = Running::watching(&ws).await;
    // The first rename replaces the inode a file watch would hold; later saves must still
    // be seen.
    for (generation, days) in [(2, 31), (3, 32), (4, 33)] {
        ws.save_by_rename(&ws.policy(days, ""));
        run.expect_applied(generation).await;
        assert_eq!(run.archive_after_days(), days);
    }
    run.stop().await;
}

/// Captures log lines written through tracing.
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn bad_file_is_rejected_keeps_the_old_policy_and_fixing_it_applies() {
    // The test runtime has one thread, so the reload task logs to this subscriber.
    let logs = LogCapture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ws = Workspace::new();
    ws.write(&ws.policy(30, ""));
    let mut run = Running::watching(&ws).await;
    let before = run.engine.policy();

    // Purge age not above archive age: a semantic error, named by key and line.
    ws.write(
        &ws.policy(30, "")
            .replace("purge_after_days = 400", "purge_after_days = 10"),
    );
    let error = run.expect_rejected().await;
    assert!(error.contains("retention.purge_after_days"), "{error}");
    assert!(error.contains("line 6"), "{error}");
    assert!(error.contains(&ws.config.display().to_string()), "{error}");
    assert!(
        Arc::ptr_eq(&before, &run.engine.policy()),
        "old policy kept"
    );
    assert_eq!(run.engine.events().counters().reloads_rejected, 1);
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("WARN") && logged.contains("reload rejected"),
        "{logged}"
    );
    assert!(logged.contains("retention.purge_after_days"), "{logged}");

    // A syntax error: rejected too, and the watcher is still alive afterwards.
    ws.write("[retention\narchive_after_days = 3\n");
    let error = run.expect_rejected().await;
    assert!(error.contains("syntax error at line 1"), "{error}");
    // Bytes that are not text.
    std::fs::write(&ws.config, [0xff, 0xfe, b'[', 0x80]).unwrap();
    let error = run.expect_rejected().await;
    assert!(error.contains("not UTF-8"), "{error}");
    assert_eq!(run.engine.events().counters().reloads_rejected, 3);
    assert_eq!(run.engine.policy().generation, 1);

    ws.write(&ws.policy(40, ""));
    run.expect_applied(2).await;
    assert_eq!(run.archive_after_days(), 40);
    run.stop().await;
}

#[tokio::test]
async fn unchanged_content_is_not_reloaded() {
    let ws = Workspace::new();
    let text = ws.policy(30, "");
    ws.write(&text);
    let mut run = Running::watching(&ws).await;
    let before = run.engine.policy();

    // `touch`: only the modification time changes.
    std::fs::File::open(&ws.config)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        run.next_reload().await,
        (ReloadCause::FileChanged, ReloadOutcome::Unchanged)
    );
    // The same bytes written again, in place and by rename.
    ws.write(&text);
    assert_eq!(run.next_reload().await.1, ReloadOutcome::Unchanged);
    ws.save_by_rename(&text);
    assert_eq!(run.next_reload().await.1, ReloadOutcome::Unchanged);

    assert!(
        Arc::ptr_eq(&before, &run.engine.policy()),
        "snapshot not replaced"
    );
    let counters = run.engine.events().counters();
    assert_eq!(counters.reloads_applied, 1, "start-up only");
    assert!(counters.reloads_unchanged >= 3, "{counters:?}");
    run.stop().await;
}

#[tokio::test]
async fn database_path_change_is_rejected_with_a_restart_message() {
    let ws = Workspace::new();
    ws.write(&ws.policy(30, ""));
    let mut run = Running::watching(&ws).await;
    let moved = ws.dir.path().join("data").join("elsewhere.db");
    ws.write(&ws.policy(45, "").replace(
        &format!("{:?}", ws.database.display().to_string()),
        &format!("{:?}", moved.display().to_string()),
    ));
    let error = run.expect_rejected().await;
    assert!(error.contains("restart"), "{error}");
    assert!(error.contains("elsewhere.db"), "{error}");
    let policy = run.engine.policy();
    assert_eq!(policy.policy.storage.database_path, ws.database);
    assert_eq!(
        policy.policy.section::<Ages>().archive_after_days,
        30,
        "nothing of the file applied"
    );
    run.stop().await;
}

#[tokio::test]
async fn sighup_reloads_through_the_same_path() {
    let ws = Workspace::new();
    ws.write(&ws.policy(30, ""));
    // SIGHUP only: file events must not be what reloads here.
    let watch = WatchOptions {
        watch_file: false,
        listen_sighup: true,
        ..WatchOptions::default()
    };
    // spawn_with installs the handler before it returns, so raising SIGHUP is safe.
    let mut run = Running::start(ws.options(), Vec::new(), watch).await;

    ws.write(&ws.policy(50, ""));
    // SAFETY: kill(2) on our own process with a signal that has a handler installed.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    match run.next_reload().await {
        (ReloadCause::Signal, ReloadOutcome::Applied { generation: 2, .. }) => {}
        other => panic!("expected an applied reload from SIGHUP, got {other:?}"),
    }
    assert_eq!(run.archive_after_days(), 50);

    // Same content: not reloaded.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    assert_eq!(
        run.next_reload().await,
        (ReloadCause::Signal, ReloadOutcome::Unchanged)
    );

    // A bad file on SIGHUP is rejected like any other.
    ws.write("[retention]\narchive_after_days = \"soon\"\n");
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    match run.next_reload().await {
        (ReloadCause::Signal, ReloadOutcome::Rejected { error }) => {
            assert!(error.contains("retention.archive_after_days"), "{error}")
        }
        other => panic!("expected a rejected reload, got {other:?}"),
    }
    assert_eq!(run.archive_after_days(), 50);
    run.stop().await;
}

/// A job that reports the policy generation it started with, waits to be released, then
/// reports the generation it ends with.
struct GatedPlugin {
    started: mpsc::UnboundedSender<u64>,
    release: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
}

impl Plugin for GatedPlugin {
    fn name(&self) -> &str {
        "gated"
    }
    fn version(&self) -> &str {
        "0.0.0"
    }
    fn jobs(&self) -> Vec<JobSpec> {
        vec![JobSpec::on_request("gated")]
    }
    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            let start = ctx.policy.generation;
            let _ = self.started.send(start);
            self.release.lock().await.recv().await;
            Ok(JobReport::new(
                "gated job",
                serde_json::json!({
                    "start_generation": start,
                    "end_generation": ctx.policy.generation,
                    "archive_after_days_at_end": ctx.policy.policy.section::<Ages>().archive_after_days,
                }),
            ))
        })
    }
}

#[tokio::test]
async fn running_job_keeps_its_policy_snapshot_across_a_reload() {
    let ws = Workspace::new();
    ws.write(&ws.policy(30, ""));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (release, release_rx) = mpsc::unbounded_channel();
    let plugin = Arc::new(GatedPlugin {
        started: started_tx,
        release: tokio::sync::Mutex::new(release_rx),
    });
    let mut run = Running::start(ws.options(), vec![plugin], file_only()).await;

    let engine = run.engine.clone();
    let job = tokio::spawn(async move {
        engine
            .run_job("gated", JobTrigger::Manual, serde_json::Value::Null)
            .await
    });
    let start = tokio::time::timeout(WAIT, started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(start, 1);

    // The reload applies while the job is mid-run.
    ws.save_by_rename(&ws.policy(60, ""));
    run.expect_applied(2).await;
    assert!(run.engine.is_running("gated"));

    release.send(()).unwrap();
    let finished = tokio::time::timeout(WAIT, job)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(finished.outcome, JobOutcome::Succeeded);
    let data = &finished.report.as_ref().unwrap().data;
    assert_eq!(data["start_generation"], 1);
    assert_eq!(
        data["end_generation"], 1,
        "a reload never changes a running job"
    );
    assert_eq!(data["archive_after_days_at_end"], 30);

    // Its next run uses the new policy.
    release.send(()).unwrap();
    let next = run
        .engine
        .run_job("gated", JobTrigger::Manual, serde_json::Value::Null)
        .await
        .unwrap();
    assert_eq!(next.report.unwrap().data["end_generation"], 2);
    run.stop().await;
}

#[tokio::test]
async fn schedule_change_reaches_policy_subscribers() {
    let ws = Workspace::new();
    ws.write(&ws.policy(30, "\n[schedule]\ncleanup = \"0 3 * * *\"\n"));
    let run = Running::watching(&ws).await;
    let mut policies = run.engine.subscribe_policy();
    policies.borrow_and_update();

    ws.save_by_rename(&ws.policy(30, "\n[schedule]\ncleanup = \"15 2 * * 1-5\"\n"));
    tokio::time::timeout(WAIT, policies.changed())
        .await
        .expect("timed out waiting for the policy channel")
        .unwrap();
    let snapshot = policies.borrow_and_update().clone();
    assert_eq!(snapshot.policy.schedule.jobs["cleanup"], "15 2 * * 1-5");
    assert_eq!(snapshot.generation, 2);
    run.stop().await;
}

#[tokio::test]
async fn deleted_file_is_rejected_and_writing_it_again_applies() {
    // Both ways a config path is given: named by the user (must exist) and the implicit
    // ./speckit.toml (may be absent at start): a file that existed and is gone never
    // falls back to the defaults.
    for require_file in [true, false] {
        let ws = Workspace::new();
        ws.write(&ws.policy(30, ""));
        let mut options = ws.options();
        options.require_config_file = require_file;
        let mut run = Running::start(options, Vec::new(), file_only()).await;

        std::fs::remove_file(&ws.config).unwrap();
        let error = run.expect_rejected().await;
        // Not "[storage] changed ... restart": the defaults were never a candidate.
        assert!(error.contains("cannot read config file"), "{error}");
        assert!(error.contains(&ws.config.display().to_string()), "{error}");
        assert_eq!(run.archive_after_days(), 30, "require_file={require_file}");
        assert_eq!(
            run.engine.policy().policy.storage.database_path,
            ws.database
        );

        ws.write(&ws.policy(35, ""));
        run.expect_applied(2).await;
        assert_eq!(run.archive_after_days(), 35);
        run.stop().await;
    }
}

/// Makes a ConfigMap-style version folder and points `..data` at it the way the kubelet
/// does: a new link under a temporary name, renamed over the old one.
fn configmap_version(ws: &Workspace, version: &str, text: &str) {
    let folder = ws.config_dir.join(version);
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("speckit.toml"), text).unwrap();
    let temp = ws.config_dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &temp).unwrap();
    std::fs::rename(&temp, ws.config_dir.join("..data")).unwrap();
}

#[tokio::test]
async fn kubernetes_configmap_swap_is_applied() {
    let ws = Workspace::new();
    configmap_version(&ws, "..2024_01_01_00_00_00.1", &ws.policy(30, ""));
    std::os::unix::fs::symlink("..data/speckit.toml", &ws.config).unwrap();
    let mut run = Running::watching(&ws).await;
    assert_eq!(run.archive_after_days(), 30);

    for (generation, (old, new, days)) in [
        ("..2024_01_01_00_00_00.1", "..2024_01_02_00_00_00.2", 41),
        ("..2024_01_02_00_00_00.2", "..2024_01_03_00_00_00.3", 42),
    ]
    .into_iter()
    .enumerate()
    {
        configmap_version(&ws, new, &ws.policy(days, ""));
        std::fs::remove_dir_all(ws.config_dir.join(old)).unwrap();
        run.expect_applied(generation as u64 + 2).await;
        assert_eq!(run.archive_after_days(), days);
    }
    run.stop().await;
}

#[tokio::test]
async fn config_linked_from_another_folder_is_followed() {
    let ws = Workspace::new();
    let dotfiles = ws.dir.path().join("dotfiles");
    std::fs::create_dir(&dotfiles).unwrap();
    let target = dotfiles.join("speckit.toml");
    std::fs::write(&target, ws.policy(30, "")).unwrap();
    std::os::unix::fs::symlink("../dotfiles/speckit.toml", &ws.config).unwrap();
    let mut run = Running::watching(&ws).await;

    // An in-place edit of the target makes no event in the config's own folder.
    std::fs::write(&target, ws.policy(44, "")).unwrap();
    run.expect_applied(2).await;
    assert_eq!(run.archive_after_days(), 44);
    save_by_rename(&target, &ws.policy(46, ""));
    run.expect_applied(3).await;
    assert_eq!(run.archive_after_days(), 46);
    run.stop().await;
}

#[tokio::test]
async fn config_replaced_by_a_folder_is_rejected_then_recovered() {
    let ws = Workspace::new();
    ws.write(&ws.policy(30, ""));
    let mut run = Running::watching(&ws).await;

    std::fs::remove_file(&ws.config).unwrap();
    std::fs::create_dir(&ws.config).unwrap();
    let error = run.expect_rejected().await;
    assert!(error.contains("cannot read config file"), "{error}");
    assert_eq!(run.archive_after_days(), 30);

    std::fs::remove_dir(&ws.config).unwrap();
    ws.write(&ws.policy(33, ""));
    run.expect_applied(2).await;
    assert_eq!(run.archive_after_days(), 33);
    run.stop().await;
}

#[tokio::test]
async fn watch_waits_for_a_config_folder_that_does_not_exist_yet() {
    let ws = Workspace::new();
    let later = ws.dir.path().join("later");
    let config = later.join("speckit.toml");
    let mut options = EngineOptions::new(&config);
    options.require_config_file = false;
    options.env = vec![(
        "SPECKIT_STORAGE__DATABASE_PATH".into(),
        ws.database.display().to_string(),
    )];
    let watch = WatchOptions {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..file_only()
    };
    let mut run = Running::start(options, Vec::new(), watch).await;
    assert_eq!(run.engine.policy().source.content_sha256, None, "defaults");

    std::fs::create_dir(&later).unwrap();
    std::fs::write(&config, "[retention]\narchive_after_days = 37\n").unwrap();
    run.expect_applied(2).await;
    assert_eq!(run.archive_after_days(), 37);
    assert_eq!(
        run.engine.policy().policy.storage.database_path,
        ws.database
    );
    run.stop().await;
}

#[tokio::test]
async fn config_folder_deleted_and_made_again_is_followed() {
    let ws = Workspace::new();
    ws.write(&ws.policy(30, ""));
    let mut run = Running::watching(&ws).await;

    std::fs::remove_dir_all(&ws.config_dir).unwrap();
    run.expect_rejected().await;
    assert_eq!(run.archive_after_days(), 30);

    // A new folder (new inode) under the same name: the old watch died with the old one.
    std::fs::create_dir(&ws.config_dir).unwrap();
    ws.write(&ws.policy(38, ""));
    run.expect_applied(2).await;
    assert_eq!(run.archive_after_days(), 38);
    // And the watch on the new folder is live.
    ws.save_by_rename(&ws.policy(39, ""));
    run.expect_applied(3).await;
    run.stop().await;
}

#[tokio::test]
async fn a_burst_of_saves_applies_the_last_one() {
    let ws = Workspace::new();
    ws.write(&ws.policy(30, ""));
    // A long quiet period, so a test machine pausing this thread mid-burst cannot split it.
    let watch = WatchOptions {
        debounce: Duration::from_secs(2),
        max_delay: Duration::from_secs(8),
        ..file_only()
    };
    let mut run = Running::start(ws.options(), Vec::new(), watch).await;
    for days in 31..=50 {
        ws.save_by_rename(&ws.policy(days, ""));
    }
    // One applied reload, of the final content: the burst is well inside one quiet period.
    run.expect_applied(2).await;
    assert_eq!(run.archive_after_days(), 50);
    assert_eq!(run.engine.events().counters().reloads_applied, 2);
    run.stop().await;
}

//! Offload to a `file://` store, end to end: the dry run says what it would upload and
//! changes nothing; a real run uploads, reads back, records and only then deletes each
//! local archive (its sidecar stays); the archive check does not call an offloaded
//! archive missing; restore fetches it back; purge deletes the object before the record;
//! every failing step keeps the local archive and its record, and a rerun finishes; a
//! crash at any offload step leaves each archive local, remote or both, never neither.

mod cleanup_support;
mod offload_support;

use cleanup_support::*;
use offload_support::*;
use speckit_retention::faults::{Faults, Step};
use speckit_retention::offload::{locations, Whereabouts};
use speckit_retention::restore::{restore, RestoreRequest};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

fn file_section(store: &Path) -> String {
    format!(
        "[offload]\nafter_days = 40\nurl = \"file://{}\"\n",
        store.display()
    )
}

/// A workspace with a `file://` store folder inside it (`<dir>/store`, created).
fn file_workspace() -> (Ws, speckit_engine::Storage, PathBuf) {
    let (ws, storage, store, _) = file_workspace_with_tree();
    (ws, storage, store)
}

fn file_workspace_with_tree() -> (
    Ws,
    speckit_engine::Storage,
    PathBuf,
    std::collections::BTreeMap<String, String>,
) {
    // The store is a folder inside the workspace (removed with it); it must exist.
    let mut store = PathBuf::new();
    let (ws, storage, original) = archived_workspace_with(|dir| {
        store = dir.join("store");
        std::fs::create_dir(&store).unwrap();
        file_section(&store)
    });
    (ws, storage, store, original)
}

#[test]
fn offload_dry_run_upload_restore_and_purge() {
    let (ws, storage, store, original) = file_workspace_with_tree();
    let before = placement(&ws, &storage);
    assert_eq!(before.len(), 2);
    assert!(before
        .values()
        .all(|(url, local, _)| url.is_none() && *local));

    // Dry run: the plan lists both uploads; nothing changes.
    let dry = run_at(&ws, &storage, now(), true, None);
    let figures = dry.plan.figures();
    assert_eq!(figures.offload_archives, 2);
    let (report, actions) = speckit_retention::job::cleanup_report(&dry, &Default::default());
    assert!(
        report.summary.contains("offload 2 archive(s)"),
        "{}",
        report.summary
    );
    let offloads: Vec<_> = actions
        .iter()
        .filter(|a| a.action == speckit_retention::plan::ActionKind::Offload)
        .collect();
    assert_eq!(offloads.len(), 2);
    assert!(offloads[0]
        .archive
        .as_deref()
        .unwrap()
        .starts_with(&format!("file://{}/SPEC-KIT-10", store.display())));
    assert_eq!(placement(&ws, &storage), before);
    assert!(file_store_objects(&store).is_empty());

    // The real run.
    let result = run_at(&ws, &storage, now(), false, None);
    let (report, _) = speckit_retention::job::cleanup_report(&result, &Default::default());
    let executed = result.executed.unwrap();
    assert!(executed.errors.is_empty(), "{:?}", executed.errors);
    assert_eq!(executed.figures.offloaded_archives, 2);
    // Measured: every byte of the two local archives went up, and their files went.
    assert_eq!(
        executed.figures.uploaded_bytes,
        executed.figures.offloaded_local_bytes
    );
    assert!(executed.figures.uploaded_bytes > 0);
    assert!(
        report.summary.contains("offloaded 2 archive(s)"),
        "{}",
        report.summary
    );
    let after = placement(&ws, &storage);
    let hashes = recorded_hashes(&storage);
    let objects = file_store_objects(&store);
    for (path, (url, local, sidecar)) in &after {
        let url = url.as_ref().expect("recorded as offloaded");
        assert!(!local, "{path}: the local copy is deleted");
        assert!(sidecar, "{path}: the manifest sidecar stays");
        let key = path.strip_prefix("cleanup/archives/").unwrap();
        assert_eq!(url, &format!("file://{}/{key}", store.display()));
        assert_eq!(
            objects.get(key),
            hashes.get(path),
            "{path}: the object is the archive"
        );
    }
    let listed = locations(&ws.root, &storage, None).unwrap();
    assert!(
        listed.iter().all(|l| l.location == Whereabouts::Remote),
        "{listed:?}"
    );

    // The next run's archive check: offloaded, not missing; nothing to do.
    let again = run_at(&ws, &storage, now(), false, None);
    assert_eq!(again.archive_health.remote_archives, 2);
    assert!(again.archive_health.damaged_archives.is_empty());
    assert!(again.executed.unwrap().errors.is_empty());

    // Restore fetches the archives back; every original file of the SPEC returns.
    let original_100: Vec<(String, String)> = original
        .clone()
        .into_iter()
        .filter(|(p, _)| p.contains("SPEC-KIT-100"))
        .collect();
    let to = ws.dir.path().join("restored");
    let offload = ws
        .policy()
        .policy
        .section::<speckit_retention::OffloadPolicy>();
    let report = restore(&RestoreRequest {
        root: &ws.root,
        storage: &storage,
        spec: &speckit_engine::SpecId::parse("SPEC-KIT-100").unwrap(),
        archive: None,
        to: Some(&to),
        faults: None,
        offload: Some(&offload),
    })
    .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.restored_files > 0);
    let archived_100: Vec<_> = original_100
        .iter()
        .filter(|(p, _)| !ws.root.join(p).exists())
        .collect();
    assert!(!archived_100.is_empty());
    for (path, sha) in archived_100 {
        let back = std::fs::read(to.join(path)).unwrap_or_else(|e| panic!("{path} restored: {e}"));
        assert_eq!(&sha_hex(&back), sha, "{path} restored as it was");
    }
    // Nothing was written back into the archive folder.
    assert!(placement(&ws, &storage)
        .values()
        .all(|(_, local, _)| !local));

    // Purge at 120 days: the objects go first, then the records.
    let later = now() + chrono::Duration::days(60);
    let purge = run_at(&ws, &storage, later, false, None).executed.unwrap();
    assert!(purge.errors.is_empty(), "{:?}", purge.errors);
    assert_eq!(purge.figures.purged_archives, 2);
    assert_eq!(purge.figures.purged_remote_objects, 2);
    assert!(file_store_objects(&store).is_empty());
    let listed = locations(&ws.root, &storage, None).unwrap();
    assert!(
        listed.iter().all(|l| l.location == Whereabouts::Purged),
        "{listed:?}"
    );
}

/// Fails (an I/O error) at every step of kind `step`.
struct FailAt(Step);

impl Faults for FailAt {
    fn check(&self, step: Step, path: &Path) -> std::io::Result<()> {
        if step == self.0 {
            return Err(std::io::Error::other(format!(
                "injected failure at {step:?} {}",
                path.display()
            )));
        }
        Ok(())
    }
}

#[test]
fn a_failing_step_keeps_the_local_archive_and_a_rerun_finishes() {
    for step in [
        Step::UploadArchive,
        Step::PutObject,
        Step::ReadBackArchive,
        Step::RecordOffload,
        Step::DeleteOffloaded,
    ] {
        let (ws, storage, store) = file_workspace();
        let before = placement(&ws, &storage);
        let errors = offload_run(&ws, &storage, Some(&FailAt(step)));
        assert_eq!(errors.len(), 2, "{step:?}: {errors:?}");
        assert!(
            errors.iter().all(|e| e.contains("injected failure")),
            "{step:?}: {errors:?}"
        );
        let after = placement(&ws, &storage);
        for (path, (url, local, _)) in &after {
            assert!(local, "{step:?}: {path} kept locally");
            if step == Step::DeleteOffloaded {
                assert!(url.is_some(), "{step:?}: {path} recorded before the delete");
            } else {
                assert_eq!(url, &before[path].0, "{step:?}: {path}'s record unchanged");
            }
        }
        // The rerun finishes: recorded remote, local gone, object intact.
        let errors = offload_run(&ws, &storage, None);
        assert!(errors.is_empty(), "{step:?}: rerun {errors:?}");
        let hashes = recorded_hashes(&storage);
        let objects = file_store_objects(&store);
        for (path, (url, local, _)) in placement(&ws, &storage) {
            assert!(
                url.is_some() && !local,
                "{step:?}: {path} offloaded by the rerun"
            );
            let key = path.strip_prefix("cleanup/archives/").unwrap();
            assert_eq!(objects.get(key), hashes.get(&path), "{step:?}: {path}");
        }
    }
}

#[test]
fn a_missing_store_folder_fails_with_the_cause_and_deletes_nothing() {
    let (ws, storage, store) = file_workspace();
    std::fs::remove_dir(&store).unwrap();
    let before = placement(&ws, &storage);
    let errors = offload_run(&ws, &storage, None);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("never created by offload"), "{errors:?}");
    assert!(
        errors[0].contains("the local archive is kept"),
        "{errors:?}"
    );
    assert_eq!(placement(&ws, &storage), before);
    assert!(!store.exists());
    // Mounted again: the next run offloads.
    std::fs::create_dir(&store).unwrap();
    assert!(offload_run(&ws, &storage, None).is_empty());
    assert!(placement(&ws, &storage)
        .values()
        .all(|(u, l, _)| u.is_some() && !l));
}

/// Another writer (a second host offloading to the same prefix) puts its own object at
/// each archive's key just after the look-up found none.
struct RivalWriter {
    store: PathBuf,
}

const RIVAL: &[u8] = b"another host's object";

impl Faults for RivalWriter {
    fn check(&self, step: Step, path: &Path) -> std::io::Result<()> {
        if step == Step::PutObject {
            let path = path.to_string_lossy();
            let key = path
                .split("cleanup/archives/")
                .nth(1)
                .expect("an archive path");
            let object = self.store.join(key);
            std::fs::create_dir_all(object.parent().unwrap())?;
            std::fs::write(object, RIVAL)?;
        }
        Ok(())
    }
}

#[test]
fn an_object_put_after_the_look_up_is_never_overwritten() {
    let (ws, storage, store) = file_workspace();
    let before = placement(&ws, &storage);
    let errors = offload_run(
        &ws,
        &storage,
        Some(&RivalWriter {
            store: store.clone(),
        }),
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("it is not overwritten")),
        "{errors:?}"
    );
    assert_eq!(
        placement(&ws, &storage),
        before,
        "records and local files kept"
    );
    let objects = file_store_objects(&store);
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(
        objects.values().all(|h| *h == sha_hex(RIVAL)),
        "the rival objects are intact: {objects:?}"
    );
    // The next run finds the rival objects and refuses again, still keeping everything.
    let errors = offload_run(&ws, &storage, None);
    assert!(
        errors
            .iter()
            .all(|e| e.contains("another object is already there")),
        "{errors:?}"
    );
    assert_eq!(placement(&ws, &storage), before);
}

#[test]
fn an_upload_left_unrecorded_goes_with_its_archive_at_the_purge_age() {
    let (ws, storage, store) = file_workspace();
    // Uploaded and read back, then the record fails: objects no record names.
    let errors = offload_run(&ws, &storage, Some(&FailAt(Step::RecordOffload)));
    assert_eq!(errors.len(), 2, "{errors:?}");
    let objects = file_store_objects(&store);
    assert_eq!(objects.len(), 2, "{objects:?}");
    // Another writer's bytes at one of the keys: not the archive, so never deleted.
    let rival_key = objects.keys().next().unwrap().clone();
    std::fs::write(store.join(&rival_key), RIVAL).unwrap();
    // 60 days on, both archives (written 60 days ago) are past purge_after_days (90).
    let result = run_at(
        &ws,
        &storage,
        now() + chrono::Duration::days(60),
        false,
        None,
    );
    let executed = result.executed.expect("a real run");
    assert!(executed.errors.is_empty(), "{:?}", executed.errors);
    assert_eq!(executed.figures.purged_archives, 2);
    assert_eq!(executed.figures.purged_remote_objects, 1);
    assert!(placement(&ws, &storage).is_empty(), "both purged");
    assert_eq!(
        file_store_objects(&store),
        std::collections::BTreeMap::from([(rival_key.clone(), sha_hex(RIVAL))])
    );
    assert!(
        executed
            .warnings
            .iter()
            .any(|w| w.contains(&rival_key) && w.contains("left alone")),
        "{:?}",
        executed.warnings
    );
}

/// Panics at the `target`-th offload step (never when 0); counts them.
struct CrashAt {
    target: usize,
    seen: AtomicUsize,
    steps: Mutex<Vec<Step>>,
}

const OFFLOAD_STEPS: [Step; 6] = [
    Step::UploadArchive,
    Step::PutObject,
    Step::ReadBackArchive,
    Step::RecordOffload,
    Step::DeleteOffloaded,
    Step::SyncDir,
];

impl Faults for CrashAt {
    fn check(&self, step: Step, _path: &Path) -> std::io::Result<()> {
        if !OFFLOAD_STEPS.contains(&step) {
            return Ok(());
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        self.steps.lock().unwrap().push(step);
        if n == self.target {
            panic!("simulated crash at offload step {n}: {step:?}");
        }
        Ok(())
    }
}

#[test]
fn a_crash_at_any_offload_step_leaves_each_archive_somewhere_and_a_rerun_finishes() {
    let counter = CrashAt {
        target: 0,
        seen: AtomicUsize::new(0),
        steps: Mutex::new(Vec::new()),
    };
    {
        let (ws, storage, _) = file_workspace();
        assert!(offload_run(&ws, &storage, Some(&counter)).is_empty());
    }
    let total = counter.seen.load(Ordering::SeqCst);
    let steps = counter.steps.lock().unwrap().clone();
    assert!(total >= 8, "{total} offload steps: {steps:?}");
    eprintln!("{total} offload steps to crash at: {steps:?}");
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        if !info.to_string().contains("simulated crash") {
            eprintln!("{info}");
        }
    }));
    for n in 1..=total {
        let (ws, storage, store) = file_workspace();
        let hashes = recorded_hashes(&storage);
        let crash = CrashAt {
            target: n,
            seen: AtomicUsize::new(0),
            steps: Mutex::new(Vec::new()),
        };
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            offload_run(&ws, &storage, Some(&crash));
        }));
        assert!(crashed.is_err(), "step {n} did not crash");
        let context = format!("crash at offload step {n}/{total} ({:?})", steps[n - 1]);
        let objects = file_store_objects(&store);
        for (path, (url, local, _)) in placement(&ws, &storage) {
            let key = path.strip_prefix("cleanup/archives/").unwrap();
            let remote_ok = url.is_some() && objects.get(key) == hashes.get(&path);
            assert!(
                local || remote_ok,
                "{context}: {path} is neither local nor a recorded intact object"
            );
            if url.is_some() {
                assert_eq!(
                    objects.get(key),
                    hashes.get(&path),
                    "{context}: recorded only once intact"
                );
            }
        }
        let errors = offload_run(&ws, &storage, None);
        assert!(errors.is_empty(), "{context}: rerun {errors:?}");
        for (path, (url, local, _)) in placement(&ws, &storage) {
            let key = path.strip_prefix("cleanup/archives/").unwrap();
            assert!(
                url.is_some() && !local,
                "{context}: {path} offloaded by the rerun"
            );
            assert_eq!(
                objects_of(&store).get(key),
                hashes.get(&path),
                "{context}: {path}"
            );
        }
    }
    std::panic::set_hook(default_hook);
}

fn objects_of(store: &Path) -> std::collections::BTreeMap<String, String> {
    file_store_objects(store)
}

//! Cleanup spreads its work: SPECs run on several workers at once, and each SPEC deletes
//! its archived sources on several threads at once. Proved through the fault hook, not by
//! timing: a step waits (with a bound, so a serial run fails instead of hanging) until
//! another unit, or other deletions, have reached the same step. And a unit that fails
//! leaves the others done, counted and reported in the same order as a one-worker run.

mod cleanup_support;

use cleanup_support::*;
use speckit_retention::faults::{Faults, Step};
use speckit_retention::job::{cleanup_blocking, CleanupOptions, CleanupResult, Control};
use speckit_retention::plan::ActionStatus;
use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How long a step waits for its partners: far beyond any real overlap, short enough that
/// a serial run fails the test in reasonable time.
const WAIT: Duration = Duration::from_secs(30);

fn run(ws: &Ws, faults: Option<&dyn Faults>, workers: usize, dry_run: bool) -> CleanupResult {
    let storage = ws.storage();
    let options = CleanupOptions {
        dry_run,
        list_actions: true,
        ..CleanupOptions::default()
    };
    let result = cleanup_blocking(
        &ws.policy().policy,
        &storage,
        now(),
        &options,
        faults,
        &Control::NONE,
        1,
        workers,
    )
    .unwrap();
    storage.close();
    result
}

fn workspace(specs: &[&str], files_per_kind: usize) -> Ws {
    let statuses: Vec<(&str, &str)> = specs.iter().map(|s| (*s, "Done")).collect();
    let ws = Ws::new(&statuses, "");
    let evidence: Vec<_> = specs.iter().map(|s| spec(s, files_per_kind)).collect();
    ws.generate(&evidence);
    ws
}

/// Lets callers of `arrive` through once `needed` distinct keys have arrived, or after
/// [`WAIT`]; remembers whether they all met.
struct Rendezvous {
    needed: usize,
    arrived: Mutex<BTreeSet<String>>,
    all: Condvar,
    met: Mutex<Vec<bool>>,
}

impl Rendezvous {
    fn new(needed: usize) -> Self {
        Self {
            needed,
            arrived: Mutex::new(BTreeSet::new()),
            all: Condvar::new(),
            met: Mutex::new(Vec::new()),
        }
    }

    /// Returns at once for a key that arrived already (its later steps are not held).
    fn arrive(&self, key: String) {
        let mut arrived = self.arrived.lock().unwrap();
        if !arrived.insert(key) {
            return;
        }
        self.all.notify_all();
        let (arrived, waited) = self
            .all
            .wait_timeout_while(arrived, WAIT, |a| a.len() < self.needed)
            .unwrap();
        let met = !waited.timed_out() || arrived.len() >= self.needed;
        self.met.lock().unwrap().push(met);
    }

    fn all_met(&self) -> Vec<bool> {
        self.met.lock().unwrap().clone()
    }
}

/// The SPEC folder in a path below the root (`.../commands/SPEC-KIT-100/x.json`).
fn spec_of(path: &Path) -> Option<String> {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .find(|c| c.starts_with("SPEC-KIT-"))
}

/// Holds the first source read of each SPEC until two SPECs are reading.
struct TwoUnitsReading(Rendezvous);

impl Faults for TwoUnitsReading {
    fn check(&self, step: Step, path: &Path) -> io::Result<()> {
        if step == Step::ReadSource {
            if let Some(spec) = spec_of(path) {
                self.0.arrive(spec);
            }
        }
        Ok(())
    }
}

#[test]
fn two_specs_are_archived_at_the_same_time() {
    let specs = [
        "SPEC-KIT-100",
        "SPEC-KIT-101",
        "SPEC-KIT-102",
        "SPEC-KIT-103",
    ];
    let ws = workspace(&specs, 4);
    let before = tree(&ws.root);
    let faults = TwoUnitsReading(Rendezvous::new(2));
    let result = run(&ws, Some(&faults), 2, false);
    let met = faults.0.all_met();
    assert_eq!(met.len(), specs.len(), "each SPEC read sources: {met:?}");
    assert!(
        met.iter().all(|m| *m),
        "a SPEC read its first source while no other SPEC was reading: {met:?}"
    );
    let out = result.executed.unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.figures.archives_written, specs.len() as u64);
    assert_nothing_lost(&before, &ws.root, "after a two-worker run");
}

/// Holds the first `needed` source deletions until all of them are under way.
struct ManyDeletes(Rendezvous);

impl Faults for ManyDeletes {
    fn check(&self, step: Step, path: &Path) -> io::Result<()> {
        if step == Step::DeleteSource {
            self.0.arrive(path.to_string_lossy().into_owned());
        }
        Ok(())
    }
}

#[test]
fn one_spec_deletes_several_sources_at_the_same_time() {
    let ws = workspace(&["SPEC-KIT-100"], 6);
    let before = tree(&ws.root);
    let faults = ManyDeletes(Rendezvous::new(4));
    // One worker: the overlapping deletions are all this SPEC's.
    let result = run(&ws, Some(&faults), 1, false);
    let met = faults.0.all_met();
    assert!(met.len() >= 4, "{met:?}");
    assert!(
        met.iter().take(4).all(|m| *m),
        "four deletions of one SPEC never ran at once: {met:?}"
    );
    let out = result.executed.unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.figures.deleted_files, out.figures.archived_files);
    assert_eq!(out.figures.deleted_files, met.len() as u64);
    assert_nothing_lost(&before, &ws.root, "after parallel deletion");
    let left = tree(&ws.root);
    let archives = archive_files(&ws.root);
    assert_eq!(archives.len(), 1);
    let (archived, _) = read_archive(&archives[0]);
    assert_eq!(archived.len(), met.len());
    for path in before.keys() {
        assert_eq!(
            left.contains_key(path),
            !archived.contains_key(path),
            "{path}: deleted if and only if archived"
        );
    }
}

/// Fails every archive write of one SPEC, and the deletion of one source of another.
struct FailSome {
    archive_of: &'static str,
    delete_of: String,
}

impl Faults for FailSome {
    fn check(&self, step: Step, path: &Path) -> io::Result<()> {
        let p = path.to_string_lossy();
        if step == Step::WriteArchive && p.contains(self.archive_of) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if step == Step::DeleteSource && p.ends_with(&self.delete_of) {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        Ok(())
    }
}

#[test]
fn a_failing_spec_leaves_the_others_done_counted_and_reported_in_order() {
    let specs = [
        "SPEC-KIT-100",
        "SPEC-KIT-101",
        "SPEC-KIT-102",
        "SPEC-KIT-103",
        "SPEC-KIT-104",
        "SPEC-KIT-105",
        "SPEC-KIT-106",
        "SPEC-KIT-107",
    ];
    // Two identical workspaces: one run on four workers, one on one worker.
    let many = workspace(&specs, 4);
    let one = workspace(&specs, 4);
    assert_eq!(tree(&many.root), tree(&one.root));
    let before = tree(&many.root);
    let plan = run(&many, None, 1, true).plan;
    let unit_105 = plan.units.iter().find(|u| u.key == "SPEC-KIT-105").unwrap();
    let victim = unit_105.archive.as_ref().unwrap().files[0].path.clone();
    let faults = FailSome {
        archive_of: "SPEC-KIT-103",
        delete_of: victim.clone(),
    };

    let result = run(&many, Some(&faults), 4, false);
    let out = result.executed.as_ref().unwrap();
    assert_nothing_lost(&before, &many.root, "after a run with failures");

    // The failing SPEC: reported, nothing of it archived or deleted, no temporary left.
    assert!(
        out.errors.iter().any(|e| e.contains("SPEC-KIT-103")),
        "{:?}",
        out.errors
    );
    assert!(
        temp_files(&many.root).is_empty(),
        "{:?}",
        temp_files(&many.root)
    );
    let archives = archive_files(&many.root);
    assert!(!archives
        .iter()
        .any(|a| a.to_string_lossy().contains("SPEC-KIT-103")));
    let planned_103 = plan.units.iter().find(|u| u.key == "SPEC-KIT-103").unwrap();
    let left = tree(&many.root);
    for f in &planned_103.archive.as_ref().unwrap().files {
        assert!(left.contains_key(&f.path), "{} kept", f.path);
    }
    // Every other SPEC archived; its sources deleted but the one whose deletion failed.
    assert_eq!(archives.len(), specs.len() - 1, "{archives:?}");
    assert!(left.contains_key(&victim), "{victim} kept");
    let mut in_archives = 0;
    for a in &archives {
        let (files, _) = read_archive(a);
        for path in files.keys() {
            assert_eq!(
                left.contains_key(path),
                *path == victim,
                "{path}: deleted once archived, unless its deletion failed"
            );
        }
        in_archives += files.len() as u64;
    }
    // The figures are the sums of what was done.
    let f = &out.figures;
    assert_eq!(f.archives_written, archives.len() as u64);
    assert_eq!(f.archived_files, in_archives);
    assert_eq!(f.deleted_files, in_archives - 1);
    assert_eq!(f.kept_after_archiving, 1);
    assert!(
        out.errors.iter().any(|e| e.contains(&victim)),
        "{:?}",
        out.errors
    );

    // Same statuses, messages and order as the same failures on one worker.
    let serial = run(&one, Some(&faults), 1, false);
    let serial_out = serial.executed.as_ref().unwrap();
    let shape = |r: &CleanupResult| -> Vec<(String, String, Option<ActionStatus>)> {
        r.executed
            .as_ref()
            .unwrap()
            .actions
            .iter()
            .map(|a| (format!("{:?}", a.action), a.path.clone(), a.status))
            .collect()
    };
    assert_eq!(shape(&result), shape(&serial));
    assert_eq!(out.figures, serial_out.figures);
    let strip = |msgs: &[String], root: &Path| -> Vec<String> {
        msgs.iter()
            .map(|m| without_temp_numbers(&m.replace(&root.display().to_string(), "<root>")))
            .collect()
    };
    assert_eq!(
        strip(&out.errors, &many.root),
        strip(&serial_out.errors, &one.root)
    );
    assert_eq!(
        strip(&out.warnings, &many.root),
        strip(&serial_out.warnings, &one.root)
    );
    let failed = shape(&result)
        .into_iter()
        .filter(|a| a.2 == Some(ActionStatus::Failed))
        .count();
    assert!(failed > planned_103.archive.as_ref().unwrap().files.len());
}

/// `.speckit-tmp-archive-<pid>-<n>` with `<pid>-<n>` dropped: `n` counts temporaries made
/// in this process, so it differs between two runs.
fn without_temp_numbers(message: &str) -> String {
    const MARK: &str = ".speckit-tmp-archive-";
    match message.find(MARK) {
        Some(at) => {
            let rest = &message[at + MARK.len()..];
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                .unwrap_or(rest.len());
            format!("{}{MARK}{}", &message[..at], &rest[digits..])
        }
        None => message.to_string(),
    }
}

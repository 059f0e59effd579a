//! Building the plan: one walk of the tree, the trackers' verdicts, the archives on disk
//! and in the database, and the database rows, into per-SPEC [`Unit`]s.

use crate::RetentionPolicy;
use crate::UntrackedSpecs;
use chrono::{DateTime, Utc};
use speckit_engine::policy::Policy;
use speckit_engine::SpecId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::{
    synthesis_stage, Adopt, Exempt, Finish, Keep, NewArchive, Plan, PlanRequest, PlannedFile,
    Purge, Unit, CLEANUP_DIR,
};
use crate::age;
use crate::archive::{self, SourceFile};
use crate::catalog;
use crate::error::RetentionError;
use crate::git_times::GitTimes;
use crate::layout::{self, Skipped};
use crate::rows::{self, RowsPlan};
use crate::sidecar;
use crate::tracker::{Activity, StatusRules, Trackers};

/// Whether a SPEC may be touched.
#[derive(Debug, Clone)]
enum Decision {
    Exempt(String),
    Inactive(String),
}

struct Decider<'a> {
    trackers: &'a Trackers,
    ids: Vec<&'a str>,
    policy: &'a Policy,
    rules: StatusRules,
    cache: HashMap<String, (String, Decision)>,
    /// Tracker ID -> why it is protected although no row says it is active (an unknown
    /// status, rows that disagree, no status): reported as a warning once per ID.
    protected: BTreeMap<String, String>,
}

impl<'a> Decider<'a> {
    fn decide(&mut self, key: &str) -> (String, Decision) {
        self.decision(key).clone()
    }

    /// Like [`Decider::decide`], by reference (once per file of the walk: no clones).
    fn decision(&mut self, key: &str) -> &(String, Decision) {
        if self.cache.contains_key(key) {
            return &self.cache[key];
        }
        let tracker_id = layout::tracker_id(key, self.ids.iter().copied());
        let r = &self.policy.section::<RetentionPolicy>();
        let activity = self.trackers.activity(&tracker_id, &self.rules);
        let protection =
            self.trackers
                .protection_warning(&tracker_id, &activity, r.untracked_specs);
        let decision = match (activity, protection) {
            (Activity::Active { status }, _) => Decision::Exempt(format!(
                "active: the tracker says {tracker_id} is {status:?}"
            )),
            (Activity::Finished { status }, _) => Decision::Inactive(status),
            (_, Some(warning)) => {
                self.protected
                    .entry(tracker_id.clone())
                    .or_insert_with(|| warning.clone());
                Decision::Exempt(warning)
            }
            (Activity::Untracked, None) if r.untracked_specs == UntrackedSpecs::Archive => {
                Decision::Inactive("untracked".into())
            }
            (_, None) => Decision::Exempt(format!("{tracker_id}: no status to decide by")),
        };
        self.cache
            .entry(key.to_string())
            .or_insert((tracker_id, decision))
    }
}

/// Whether `key` (with `tracker_id`) is the SPEC `only` asks for.
fn selected(only: Option<&SpecId>, key: &str, tracker_id: &str) -> bool {
    match only {
        None => true,
        Some(id) => key == id.as_str() || tracker_id == id.as_str(),
    }
}

/// Per folder, while walking.
#[derive(Default)]
struct FolderScan {
    eligible: Vec<PlannedFile>,
    /// stage -> (time, path) of the newest synthesis file.
    newest_synthesis: HashMap<String, (DateTime<Utc>, String)>,
}
/// Builds the plan. Reads the tree and the database; changes nothing.
pub fn build(req: &PlanRequest<'_>) -> Result<Plan, RetentionError> {
    layout::check_root(req.root)?;
    let retention = &req.policy.section::<RetentionPolicy>();
    let archive_cutoff = req.now - chrono::Duration::days(i64::from(retention.archive_after_days));
    let purge_cutoff_ms = (req.now - chrono::Duration::days(i64::from(retention.purge_after_days)))
        .timestamp_millis();
    let mut decider = Decider {
        trackers: req.trackers,
        ids: req.trackers.ids().collect(),
        policy: req.policy,
        rules: StatusRules::from_policy(retention),
        cache: HashMap::new(),
        protected: BTreeMap::new(),
    };
    let mut plan = Plan {
        root: req.root.to_path_buf(),
        now: req.now,
        units: Vec::new(),
        exempt: Vec::new(),
        skipped: Vec::new(),
        total_files: 0,
        young_files: 0,
        newest_mtime: None,
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    let mut exempt: BTreeMap<String, Exempt> = BTreeMap::new();
    let mut scans: BTreeMap<String, FolderScan> = BTreeMap::new();

    // 1. The tree.
    let mut skipped = Vec::new();
    let mut total = 0u64;
    let mut young = 0u64;
    let mut newest_mtime: Option<std::time::SystemTime> = None;
    let mut non_utf8 = Vec::new();
    // Commit times for files without a timestamp in their name (once per plan; `None`
    // outside a git work tree or without git: mtimes, see `age`).
    let git = GitTimes::load(req.root);
    layout::walk(
        req.root,
        &mut |entry| {
            if entry.relative.starts_with(CLEANUP_DIR) {
                return; // our own archives and summaries are not evidence
            }
            total += 1;
            newest_mtime = newest_mtime.max(Some(entry.mtime));
            let Some((spec, kind)) = &entry.owner else {
                return; // non-SPEC entries: evidence.non_spec_entries = "ignore"
            };
            let key = spec.as_str();
            let (tracker_id, decision) = decider.decision(key);
            if !selected(req.only, key, tracker_id) {
                return;
            }
            match decision {
                Decision::Exempt(reason) => {
                    let folder = format!("{}/{key}", kind.dir_name());
                    let e = exempt.entry(key.to_string()).or_insert_with(|| Exempt {
                        spec: key.to_string(),
                        tracker_id: tracker_id.clone(),
                        reason: reason.clone(),
                        paths: Vec::new(),
                    });
                    if !e.paths.contains(&folder) {
                        e.paths.push(folder);
                    }
                }
                Decision::Inactive(_) => {
                    let Some(path) = entry.relative.to_str() else {
                        non_utf8.push(entry.relative.clone());
                        return;
                    };
                    let name = entry
                        .relative
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    let commit = git.as_ref().and_then(|g| g.commit_time(&entry.relative));
                    let time = age::file_time(name, entry.mtime, commit, req.now);
                    if !scans.contains_key(key) {
                        scans.insert(key.to_string(), FolderScan::default());
                    }
                    let scan = scans.get_mut(key).expect("inserted above");
                    if retention.keep_latest_synthesis {
                        if let Some(stage) = synthesis_stage(name, key) {
                            let newest = scan
                                .newest_synthesis
                                .entry(stage)
                                .or_insert((time.at, path.to_string()));
                            if (time.at, path) > (newest.0, newest.1.as_str()) {
                                *newest = (time.at, path.to_string());
                            }
                        }
                    }
                    if time.at < archive_cutoff {
                        scan.eligible.push(PlannedFile {
                            path: path.to_string(),
                            size: entry.size,
                            mtime_ns: crate::fsutil::system_time_ns(entry.mtime),
                            made_at: time.at,
                            age_source: time.source,
                            identity: Some((entry.dev, entry.ino)),
                            allocated_bytes: entry.allocated_bytes,
                        });
                    } else {
                        young += 1;
                    }
                }
            }
        },
        &mut |skip| skipped.push(skip),
    )?;
    plan.total_files = total;
    plan.young_files = young;
    plan.newest_mtime = newest_mtime;
    for p in non_utf8 {
        skipped.push(Skipped {
            relative: p,
            reason: layout::SkipReason::Unreadable {
                detail: "its name is not UTF-8; not archived".into(),
            },
        });
    }
    // Skips below SPEC folders matter to the user; with --spec, only that SPEC's.
    plan.skipped = skipped
        .into_iter()
        .filter(|s| {
            let mut parts = s.relative.components();
            let first = parts.next().and_then(|c| c.as_os_str().to_str());
            if first == Some(CLEANUP_DIR) {
                return false;
            }
            match (req.only, parts.next().and_then(|c| c.as_os_str().to_str())) {
                (None, _) => true,
                (Some(_), Some(folder)) => {
                    let (tid, _) = decider.decide(folder);
                    selected(req.only, folder, &tid)
                }
                (Some(_), None) => false,
            }
        })
        .collect();

    // 2. Archives on disk and in the database.
    // No table, or no database at all (a dry run on a host database retention never
    // ran on): nothing is recorded.
    let recorded = catalog::read(req.storage, catalog::unpurged)?;
    let recorded_paths: BTreeSet<&str> = recorded.iter().map(|r| r.path.as_str()).collect();
    let mut units: BTreeMap<String, Unit> = BTreeMap::new();
    let archives_root = req.root.join(archive::ARCHIVES_DIR);
    let mut disk_archives: Vec<(String, String)> = Vec::new(); // (key, relative path)
    let mut disk_temps: Vec<(String, String)> = Vec::new();
    match std::fs::symlink_metadata(&archives_root) {
        Ok(meta) if meta.is_dir() => {
            crate::fsutil::check_real_dir(req.root, Path::new(archive::ARCHIVES_DIR))
                .map_err(RetentionError::io(&archives_root))?;
            let entries = std::fs::read_dir(&archives_root).map_err(RetentionError::io(&archives_root))?;
            for dirent in entries {
                let dirent = dirent.map_err(RetentionError::io(&archives_root))?;
                let Some(name) = dirent.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if SpecId::parse(&name).is_err() {
                    continue;
                }
                let dir = archives_root.join(&name);
                let Ok(meta) = std::fs::symlink_metadata(&dir) else { continue };
                if !meta.is_dir() {
                    continue; // a symlink or a file: never followed
                }
                let files = std::fs::read_dir(&dir).map_err(RetentionError::io(&dir))?;
                for f in files {
                    let f = f.map_err(RetentionError::io(&dir))?;
                    let Some(file_name) = f.file_name().to_str().map(str::to_string) else {
                        continue;
                    };
                    let Ok(ft) = f.file_type() else { continue };
                    if !ft.is_file() {
                        continue;
                    }
                    let relative = format!("{}/{name}/{file_name}", archive::ARCHIVES_DIR);
                    if archive::is_temp_name(&file_name) || sidecar::is_temp_name(&file_name) {
                        disk_temps.push((name.clone(), relative));
                    } else if sidecar::is_sidecar_name(&file_name) {
                        // An archive's manifest sidecar: read with its archive, purged
                        // with it; neither an archive nor a leftover.
                    } else if archive::is_archive_name(&file_name) && !recorded_paths.contains(relative.as_str()) {
                        disk_archives.push((name.clone(), relative));
                    }
                }
            }
        }
        Ok(_) => {
            return Err(RetentionError::Io {
                path: archives_root.clone(),
                source: std::io::Error::other(
                    "is not a folder (a symbolic link or a file); archives are never written through links",
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RetentionError::io(&archives_root)(e)),
    }
    for (key, relative) in disk_temps {
        if let Some(k) = unit_for(&mut units, &mut decider, &mut exempt, req.only, &key) {
            units
                .get_mut(&k)
                .expect("unit")
                .discard_temps
                .push(relative);
        }
    }
    let offload = crate::offload::Planner::new(req.policy, req.now);
    for (key, relative) in disk_archives {
        let Some(k) = unit_for(&mut units, &mut decider, &mut exempt, req.only, &key) else {
            continue;
        };
        match archive::verify(&req.root.join(&relative)) {
            Ok(verified) if verified.manifest.spec == key => {
                let unit = units.get_mut(&k).expect("unit");
                if verified.manifest.created_at_ms >= purge_cutoff_ms {
                    unit.offload.extend(offload.plan_adopted(&relative, &verified));
                }
                if verified.manifest.created_at_ms < purge_cutoff_ms {
                    unit.purge.push(Purge {
                        archive_id: None,
                        path: relative.clone(),
                        created_at_ms: verified.manifest.created_at_ms,
                        bytes: verified.bytes,
                        remote: None,
                        sha256: verified.sha256.clone(),
                        // Never offloaded: an offload starts only once it is recorded.
                        unrecorded_object: None,
                    });
                }
                unit.adopt.push(Adopt {
                    path: relative,
                    verified,
                });
            }
            Ok(verified) => plan.errors.push(format!(
                "{relative}: an archive of SPEC {} in the folder of {key}; left alone",
                verified.manifest.spec
            )),
            Err(e) => plan.errors.push(format!(
                "{e}; the file has no database record either, so it is left alone for you to inspect"
            )),
        }
    }
    for rec in &recorded {
        let Some(k) = unit_for(&mut units, &mut decider, &mut exempt, req.only, &rec.spec) else {
            continue;
        };
        if rec.created_at_ms < purge_cutoff_ms {
            units.get_mut(&k).expect("unit").purge.push(Purge {
                archive_id: Some(rec.id),
                path: rec.path.clone(),
                created_at_ms: rec.created_at_ms,
                bytes: rec.bytes,
                remote: rec.remote.as_ref().map(|r| r.url.clone()),
                sha256: rec.sha256.clone(),
                unrecorded_object: rec
                    .remote
                    .is_none()
                    .then(|| offload.object_url(&rec.path))
                    .flatten(),
            });
        } else if let Some(o) = offload.plan(req.root, rec) {
            units.get_mut(&k).expect("unit").offload.push(o);
        }
        // A recorded archive missing or damaged on disk is reported by `verify`.
    }

    // 3. Files of inactive folders (moved out of the scan: a million of them must not be
    // held twice).
    let scan_keys: BTreeSet<String> = scans.keys().cloned().collect();
    for (key, scan) in std::mem::take(&mut scans) {
        let key = key.as_str();
        let Some(k) = unit_for(&mut units, &mut decider, &mut exempt, req.only, key) else {
            continue;
        };
        // Which eligible files recorded archives already hold: from the archives'
        // sidecars (or the archives themselves), not from the database.
        let held = if scan.eligible.is_empty() {
            catalog::HeldFiles::default()
        } else {
            catalog::file_members_of(req.root, &recorded, key)
        };
        plan.warnings.extend(held.warnings);
        let members = held.members;
        let unit = units.get_mut(&k).expect("unit");
        for repair in held.repairs {
            if !unit.purge.iter().any(|p| p.path == repair.path) {
                unit.repair_sidecars.push(repair);
            }
        }
        // Members of archives adopted in this run count as recorded.
        let mut adopted: HashMap<&str, (&str, &archive::Member)> = HashMap::new();
        for ad in &unit.adopt {
            for m in &ad.verified.manifest.files {
                adopted.insert(m.path.as_str(), (ad.path.as_str(), m));
            }
        }
        let keepers: BTreeSet<&str> = scan
            .newest_synthesis
            .values()
            .map(|(_, p)| p.as_str())
            .collect();
        let mut to_archive = Vec::new();
        for f in scan.eligible {
            if keepers.contains(f.path.as_str()) {
                let stage = Path::new(&f.path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| synthesis_stage(n, key))
                    .unwrap_or_default();
                unit.keep.push(Keep {
                    path: f.path,
                    reason: format!(
                        "newest {stage} synthesis of {key} (retention.keep_latest_synthesis)"
                    ),
                });
                continue;
            }
            let held = members
                .get(&f.path)
                .filter(|m| m.size == f.size && m.mtime_ns == f.mtime_ns)
                .map(|m| (m.archive_path.clone(), m.sha256.clone()))
                .or_else(|| {
                    adopted
                        .get(f.path.as_str())
                        .filter(|(_, m)| m.size == f.size && m.mtime_ns == f.mtime_ns)
                        .map(|(a, m)| (a.to_string(), m.sha256.clone()))
                });
            match held {
                Some((archive, sha256)) => unit.finish.push(Finish {
                    file: f,
                    archive,
                    sha256,
                }),
                None => to_archive.push(f),
            }
        }
        if !to_archive.is_empty() {
            to_archive.sort_by(|a, b| a.path.cmp(&b.path));
            unit.archive = Some(NewArchive {
                path: String::new(),
                files: to_archive,
                rows: RowsPlan::default(),
            });
        }
    }
    for e in exempt.values_mut() {
        e.paths.sort();
    }

    // 4. Database rows.
    if retention.archive_database_rows {
        let cutoff_ms = archive_cutoff.timestamp_millis();
        let spec_ids = catalog::read(req.storage, rows::spec_ids)?;
        for spec_id in spec_ids {
            let (tracker_id, decision) = decider.decide(&spec_id);
            if !selected(req.only, &spec_id, &tracker_id) {
                continue;
            }
            if matches!(decision, Decision::Exempt(_)) {
                continue; // rows of an exempt SPEC are left alone like its files
            }
            let (rows_plan, undated) =
                catalog::read(req.storage, |conn| rows::plan(conn, &spec_id, cutoff_ms))?;
            if rows_plan.is_empty() && undated == 0 {
                continue;
            }
            // The home folder: named exactly so, else the first folder mapping to it.
            let home = if scan_keys.contains(&spec_id) || units.contains_key(&spec_id) {
                Some(spec_id.clone())
            } else {
                scan_keys
                    .iter()
                    .chain(units.keys())
                    .find(|k| decider.decide(k).0 == spec_id)
                    .cloned()
            };
            let home = match home {
                Some(h) => h,
                None if SpecId::parse(&spec_id).is_ok() => spec_id.clone(),
                None => {
                    plan.warnings.push(format!(
                        "database rows of SPEC {spec_id:?} are kept: the name cannot be an archive folder"
                    ));
                    continue;
                }
            };
            let Some(k) = unit_for(&mut units, &mut decider, &mut exempt, req.only, &home) else {
                continue;
            };
            let unit = units.get_mut(&k).expect("unit");
            unit.undated_rows += undated;
            if undated > 0 {
                plan.warnings.push(format!(
                    "{undated} agent_executions row(s) of {spec_id} have a spawned_at that cannot be read; kept"
                ));
            }
            if rows_plan.is_empty() {
                continue;
            }
            let arch = unit.archive.get_or_insert_with(|| NewArchive {
                path: String::new(),
                files: Vec::new(),
                rows: RowsPlan::default(),
            });
            if arch.rows.is_empty() {
                arch.rows = rows_plan;
            } else {
                // Two database SPEC-IDs with one home folder: one archive, all rows.
                arch.rows.run_ids.extend(rows_plan.run_ids);
                arch.rows.output_ids.extend(rows_plan.output_ids);
                arch.rows.execution_ids.extend(rows_plan.execution_ids);
            }
        }
    }

    // 5. Name the new archives, now that their content is known.
    for unit in units.values_mut() {
        if let Some(arch) = unit.archive.as_mut() {
            let sources: Vec<SourceFile> = arch.files.iter().map(PlannedFile::source).collect();
            let name =
                archive::archive_name(&unit.key, req.now.date_naive(), &sources, &arch.rows.keys());
            arch.path = archive::spec_dir(&unit.key)
                .join(name)
                .to_string_lossy()
                .into_owned();
        }
    }
    plan.units = units.into_values().filter(|u| !u.is_empty()).collect();
    // 6. Protected without an active status: one warning per tracker ID (and with
    // --spec, only that SPEC's).
    if decider.rules.finished_is_empty() {
        plan.warnings.push(
            "retention.finished_statuses is empty: no SPEC will be archived by its tracker status"
                .into(),
        );
    }
    let mut warned = BTreeSet::new();
    for e in exempt.values() {
        if let Some(w) = decider.protected.get(&e.tracker_id) {
            if warned.insert(e.tracker_id.as_str()) {
                plan.warnings.push(w.clone());
            }
        }
    }
    plan.exempt = exempt.into_values().collect();
    Ok(plan)
}

/// The unit of `key` if it is selected and inactive (created on first use); an exempt key
/// is noted in `exempt` instead.
fn unit_for(
    units: &mut BTreeMap<String, Unit>,
    decider: &mut Decider<'_>,
    exempt: &mut BTreeMap<String, Exempt>,
    only: Option<&SpecId>,
    key: &str,
) -> Option<String> {
    let (tracker_id, decision) = decider.decide(key);
    if !selected(only, key, &tracker_id) {
        return None;
    }
    match decision {
        Decision::Exempt(reason) => {
            exempt.entry(key.to_string()).or_insert_with(|| Exempt {
                spec: key.to_string(),
                tracker_id,
                reason,
                paths: Vec::new(),
            });
            None
        }
        Decision::Inactive(status) => {
            units
                .entry(key.to_string())
                .or_insert_with(|| Unit::new(key, &tracker_id, &status));
            Some(key.to_string())
        }
    }
}

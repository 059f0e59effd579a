//! One SPEC's part of a run, under its lock: discard temporaries, adopt, purge, delete
//! already-archived sources, then write, verify, record the new archive and delete its
//! sources. Each step records its actions' statuses.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use super::{delete, ExecRequest, Figures, UnitOutcome};
use crate::archive::{self, ArchiveError, Excluded, WriteRequest};
use crate::catalog;
use crate::error::RetentionError;
use crate::faults::{self, Faults, Step};
use crate::folder::{FileStat, Folder, NodeKind, Removal, Tree};
use crate::lock::{self, LockError};
use crate::plan::{self, Action, ActionStatus, Unit};
use crate::rows;
use crate::sidecar;

/// Records statuses on a unit's actions by kind and path.
struct Statuses {
    actions: Vec<Action>,
    index: HashMap<(plan::ActionKind, String, Option<String>), Vec<usize>>,
}

impl Statuses {
    fn new(unit: &Unit) -> Self {
        let actions = plan::unit_actions(unit);
        let mut index: HashMap<_, Vec<usize>> = HashMap::new();
        for (i, a) in actions.iter().enumerate() {
            index
                .entry((a.action, a.path.clone(), a.table.clone()))
                .or_default()
                .push(i);
        }
        Self { actions, index }
    }

    fn set(
        &mut self,
        kind: plan::ActionKind,
        path: &str,
        status: ActionStatus,
        detail: Option<String>,
    ) {
        self.set_table(kind, path, None, status, detail)
    }

    fn set_table(
        &mut self,
        kind: plan::ActionKind,
        path: &str,
        table: Option<&str>,
        status: ActionStatus,
        detail: Option<String>,
    ) {
        if let Some(ids) = self
            .index
            .get(&(kind, path.to_string(), table.map(str::to_string)))
        {
            for i in ids {
                self.actions[*i].status = Some(status);
                self.actions[*i].detail = detail.clone();
            }
        }
    }

    /// Marks one archive's files and database-row tables failed with `detail`.
    fn fail_archive<'p>(
        &mut self,
        archive: &str,
        files: impl IntoIterator<Item = &'p str>,
        detail: &str,
    ) {
        for path in files {
            self.set(
                plan::ActionKind::Archive,
                path,
                ActionStatus::Failed,
                Some(detail.to_string()),
            );
        }
        for table in rows::TABLES {
            self.set_table(
                plan::ActionKind::ArchiveRows,
                archive,
                Some(table),
                ActionStatus::Failed,
                Some(detail.to_string()),
            );
        }
    }

    /// Every action still without a status gets this one.
    fn rest(&mut self, status: ActionStatus, detail: &str) {
        for a in &mut self.actions {
            if a.status.is_none() {
                a.status = Some(status);
                a.detail = Some(detail.to_string());
            }
        }
    }
}

struct UnitRun<'a, 'r> {
    req: &'a ExecRequest<'r>,
    unit: &'a Unit,
    /// The evidence root held by descriptor: every file of this unit is read, checked
    /// and deleted through these handles, opened once after the lock was taken.
    tree: Tree,
    t: Statuses,
    figures: Figures,
    errors: Vec<String>,
    warnings: Vec<String>,
    /// Archive path -> record id, for purges of archives adopted this run.
    adopted_ids: HashMap<String, i64>,
}

/// Runs one unit under its lock. `group_lock` is the tracker ID's lock its group already
/// holds: a folder named exactly that ID runs under it (opening the same lock file again
/// would be a second open file description, which flock refuses even in this process).
pub(super) fn run_unit(
    req: &ExecRequest<'_>,
    unit: &Unit,
    group_lock: Option<&lock::SpecLock>,
) -> UnitOutcome {
    let root = req.plan.root.as_path();
    let covered = group_lock.is_some_and(|l| l.path == lock::lock_path(root, &unit.key));
    let own = if covered {
        Ok(None)
    } else {
        lock::try_lock(root, &unit.key).map(Some)
    };
    let _lock = match own {
        Ok(l) => l,
        Err(e @ LockError::Busy { .. }) => {
            let mut out = UnitOutcome::all(unit, ActionStatus::Skipped, &e.to_string());
            out.warnings.push(e.to_string());
            return out;
        }
        Err(e) => {
            let mut out = UnitOutcome::all(unit, ActionStatus::Failed, &e.to_string());
            out.errors.push(e.to_string());
            return out;
        }
    };
    let tree = match Tree::open(root) {
        Ok(t) => t,
        Err(e) => {
            let message = format!("evidence root {}: {e}", root.display());
            let mut out = UnitOutcome::all(unit, ActionStatus::Failed, &message);
            out.errors.push(message);
            return out;
        }
    };
    let mut run = UnitRun {
        req,
        unit,
        tree,
        t: Statuses::new(unit),
        figures: Figures::default(),
        errors: Vec::new(),
        warnings: Vec::new(),
        adopted_ids: HashMap::new(),
    };
    run.discard_temps();
    run.repair_sidecars();
    run.adopt();
    run.purge();
    run.offload();
    run.finish();
    for k in &unit.keep {
        run.t
            .set(plan::ActionKind::Keep, &k.path, ActionStatus::Done, None);
    }
    let mut cancelled = false;
    if (req.cancelled)() {
        cancelled = true;
    } else {
        cancelled |= run.archive();
    }
    run.t.rest(ActionStatus::Skipped, "cancelled");
    UnitOutcome {
        actions: run.t.actions,
        figures: run.figures,
        errors: run.errors,
        warnings: run.warnings,
        cancelled,
    }
}

impl UnitRun<'_, '_> {
    fn faults(&self) -> Option<&dyn Faults> {
        self.req.faults
    }

    fn error(&mut self, kind: plan::ActionKind, path: &str, message: String) {
        tracing::warn!(spec = %self.unit.key, "{message}");
        self.t
            .set(kind, path, ActionStatus::Failed, Some(message.clone()));
        self.errors.push(message);
    }

    fn discard_temps(&mut self) {
        for rel in &self.unit.discard_temps {
            let path = self.tree.display(Path::new(rel));
            let result = (|| -> io::Result<()> {
                let (dir, name) = self.tree.parent_of(Path::new(rel))?;
                if dir.stat(name)?.kind != NodeKind::File {
                    return Err(io::Error::other("not a regular file"));
                }
                dir.remove_file(name)
            })();
            match result {
                Ok(()) => {
                    self.figures.discarded_temps += 1;
                    tracing::info!(spec = %self.unit.key, path = %rel, "discarded a temporary archive of an interrupted run");
                    self.t
                        .set(plan::ActionKind::DiscardTemp, rel, ActionStatus::Done, None);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.t.set(
                    plan::ActionKind::DiscardTemp,
                    rel,
                    ActionStatus::Skipped,
                    Some("already gone".into()),
                ),
                Err(e) => self.error(
                    plan::ActionKind::DiscardTemp,
                    rel,
                    format!("{}: {e}", path.display()),
                ),
            }
        }
    }

    /// Writes again the sidecars the plan found missing or stale (it read those manifests
    /// from the verified archives), so later plans need not read the archives. A failure
    /// only costs that: it is a warning.
    fn repair_sidecars(&mut self) {
        for r in &self.unit.repair_sidecars {
            let path = self.tree.display(Path::new(&r.path));
            let Ok((dir, name)) = self.tree.parent_of(Path::new(&r.path)) else {
                continue; // its folder changed since the plan: the next plan looks again
            };
            match dir.stat(name) {
                Ok(st) if st.kind == NodeKind::File && st.size == r.bytes => {}
                _ => continue, // changed or gone since the plan: the next plan looks again
            }
            match sidecar::write(&dir, name, &r.sha256, r.bytes, &r.manifest, self.faults()) {
                Ok(_) => {
                    tracing::info!(spec = %self.unit.key, archive = %r.path, "wrote the missing manifest sidecar of a recorded archive")
                }
                Err(e) => self.warnings.push(format!(
                    "{}: writing its manifest sidecar failed: {e} (plans read the manifest from the archive)",
                    path.display()
                )),
            }
        }
    }

    /// Writes an archive's sidecar before its record; a failure is a warning (the
    /// manifest is in the archive, and readers fall back to it).
    fn write_sidecar(
        &mut self,
        dir: &Folder,
        name: &OsStr,
        sha256: &str,
        bytes: u64,
        manifest: &archive::Manifest,
    ) {
        if let Err(e) = sidecar::write(dir, name, sha256, bytes, manifest, self.faults()) {
            self.warnings.push(format!(
                "{}: writing its manifest sidecar failed: {e}; recorded without it (plans read the manifest from the archive)",
                dir.display(name).display()
            ));
        }
    }

    fn adopt(&mut self) {
        for ad in &self.unit.adopt {
            let path = self.tree.display(Path::new(&ad.path));
            let (dir, name) = match self.tree.parent_of(Path::new(&ad.path)) {
                Ok(found) => found,
                Err(e) => {
                    self.error(
                        plan::ActionKind::Adopt,
                        &ad.path,
                        format!("{}: {e}", path.display()),
                    );
                    continue;
                }
            };
            // Verify again under the lock: it is about to become the only copy.
            let verified = match archive::verify_in(&dir, name) {
                Ok(v) if v.sha256 == ad.verified.sha256 => v,
                Ok(_) => {
                    self.error(
                        plan::ActionKind::Adopt,
                        &ad.path,
                        format!("{}: changed since the plan; not adopted", path.display()),
                    );
                    continue;
                }
                Err(e) => {
                    self.error(plan::ActionKind::Adopt, &ad.path, e.to_string());
                    continue;
                }
            };
            let mut hashes = Vec::new();
            if !verified.manifest.db.is_empty() {
                let read = dir
                    .open_file(name)
                    .map_err(|source| ArchiveError::Read {
                        path: path.clone(),
                        source,
                    })
                    .and_then(|(file, _)| {
                        archive::for_each_member_of(file, &path, |member, r| {
                            if let Some(part) =
                                verified.manifest.db.iter().find(|d| d.path == member)
                            {
                                let mut bytes = Vec::new();
                                r.read_to_end(&mut bytes)?;
                                hashes.extend(rows::hashes_of(&part.table, &bytes));
                            }
                            Ok(())
                        })
                    });
                if let Err(e) = read {
                    self.error(plan::ActionKind::Adopt, &ad.path, e.to_string());
                    continue;
                }
            }
            self.write_sidecar(
                &dir,
                name,
                &verified.sha256,
                verified.bytes,
                &verified.manifest,
            );
            let (rel, manifest, sha, bytes) = (
                ad.path.clone(),
                verified.manifest.clone(),
                verified.sha256.clone(),
                verified.bytes,
            );
            let recorded = faults::check(self.faults(), Step::RecordArchive, &path)
                .map_err(RetentionError::io(&path))
                .and_then(|()| {
                    self.req.storage.write_blocking(move |tx| {
                        let id = catalog::insert(tx, &rel, bytes, &sha, &manifest, "adopted")
                            .map_err(RetentionError::sqlite("recording an adopted archive"))?;
                        let deleted = rows::delete_archived(tx, &hashes)
                            .map_err(RetentionError::sqlite("deleting archived rows"))?;
                        Ok::<_, RetentionError>((id, deleted))
                    })
                });
            match recorded {
                Ok((id, deleted)) => {
                    self.adopted_ids.insert(ad.path.clone(), id);
                    self.figures.adopted_archives += 1;
                    tracing::info!(spec = %self.unit.key, archive = %ad.path, "adopted a verified archive that had no record");
                    self.figures.deleted_rows += deleted.rows;
                    self.warnings.extend(deleted.kept);
                    self.t
                        .set(plan::ActionKind::Adopt, &ad.path, ActionStatus::Done, None);
                }
                Err(e) => self.error(
                    plan::ActionKind::Adopt,
                    &ad.path,
                    format!("recording {} failed: {e}", path.display()),
                ),
            }
        }
    }

    fn purge(&mut self) {
        for p in &self.unit.purge {
            let id = p
                .archive_id
                .or_else(|| self.adopted_ids.get(&p.path).copied());
            let Some(id) = id else {
                self.t.set(
                    plan::ActionKind::Purge,
                    &p.path,
                    ActionStatus::Skipped,
                    Some("its adoption failed".into()),
                );
                continue;
            };
            let path = self.tree.display(Path::new(&p.path));
            // An offloaded archive's object goes first: its record is dropped only once
            // the object is gone (see `crate::offload`).
            if let Some(url) = &p.remote {
                match self.purge_remote(url, &path) {
                    Ok(existed) => self.figures.purged_remote_objects += u64::from(existed),
                    Err(message) => {
                        self.error(plan::ActionKind::Purge, &p.path, message);
                        continue;
                    }
                }
            }
            if let Some(url) = &p.unrecorded_object {
                self.purge_unrecorded(url, p, &path);
            }
            let removed = (|| -> io::Result<u64> {
                let (dir, name) = self.tree.parent_of(Path::new(&p.path))?;
                faults::check(self.faults(), Step::PurgeArchive, &path)?;
                // The sidecar first: a crash never leaves one without its archive.
                sidecar::remove(&dir, name)?;
                let stat = match dir.stat(name) {
                    Ok(st) => st,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                    Err(e) => return Err(e),
                };
                if stat.kind != NodeKind::File {
                    return Err(io::Error::other("not a regular file; left alone"));
                }
                dir.remove_file(name)?;
                faults::check(self.faults(), Step::SyncDir, dir.path())?;
                dir.sync()?;
                self.figures.purged_allocated_bytes += stat.allocated_bytes;
                Ok(stat.size)
            })();
            let bytes = match removed {
                Ok(b) => b,
                Err(e) => {
                    self.error(
                        plan::ActionKind::Purge,
                        &p.path,
                        format!("purging {}: {e}", path.display()),
                    );
                    continue;
                }
            };
            let at = self.req.now.timestamp_millis();
            let marked = self.req.storage.write_blocking(move |tx| {
                catalog::mark_purged(tx, id, at)
                    .map_err(RetentionError::sqlite("recording a purge"))
            });
            match marked {
                Ok(()) => {
                    self.figures.purged_archives += 1;
                    tracing::info!(spec = %self.unit.key, archive = %p.path, bytes, "purged an archive");
                    self.figures.purged_bytes += bytes;
                    let detail = (bytes == 0).then(|| "the file was already gone; record updated".to_string());
                    self.t.set(plan::ActionKind::Purge, &p.path, ActionStatus::Done, detail);
                }
                Err(e) => self.error(
                    plan::ActionKind::Purge,
                    &p.path,
                    format!("{} was deleted but recording the purge failed: {e} (the next run records it)", path.display()),
                ),
            }
        }
    }

    /// Deletes the object an offload stopped by a crash uploaded but never recorded (only
    /// if it is this archive's exact bytes). A failure is a warning naming the object:
    /// the purge of the local archive goes on (the store being down must not stop it).
    fn purge_unrecorded(&mut self, url: &str, p: &plan::Purge, path: &Path) {
        let checked = match self.req.remote {
            Ok(remote) => crate::offload::StoreUrl::parse(url)
                .map_err(|why| format!("{url}: {why}"))
                .and_then(|o| {
                    remote
                        .delete_unrecorded(&o, &p.sha256, p.bytes)
                        .map_err(|e| e.to_string())
                }),
            Err(why) => Err(why.to_string()),
        };
        match checked {
            Ok(crate::offload::Unrecorded::Nothing) => {}
            Ok(crate::offload::Unrecorded::Deleted) => {
                self.figures.purged_remote_objects += 1;
                tracing::info!(spec = %self.unit.key, archive = %p.path, url, "deleted an interrupted offload's unrecorded object");
            }
            Ok(crate::offload::Unrecorded::Other { bytes, sha256 }) => self.warnings.push(format!(
                "{url}: an object no record names ({bytes} bytes, sha256 {sha256}) is at the offload key of {}, which is purged; it is not this archive, so it is left alone",
                path.display()
            )),
            Err(e) => self.warnings.push(format!(
                "{}: checking {url} for an object an interrupted offload left unrecorded failed: {e}; the archive is purged anyway (if an object is there, delete it by hand)",
                path.display()
            )),
        }
    }

    /// Deletes an offloaded archive's object; whether there was one.
    fn purge_remote(&self, url: &str, path: &Path) -> Result<bool, String> {
        let remote = self
            .req
            .remote
            .map_err(|why| format!("purging {url}: {why}; the archive and its record are kept"))?;
        faults::check(self.faults(), Step::PurgeRemote, path)
            .map_err(|e| format!("purging {url}: {e}; the archive and its record are kept"))?;
        let object = crate::offload::StoreUrl::parse(url).map_err(|why| format!("{url}: {why}"))?;
        remote.delete(&object).map_err(|e| {
            format!(
                "purging {}: {e}; the archive and its record are kept",
                path.display()
            )
        })
    }

    fn offload(&mut self) {
        for o in &self.unit.offload {
            if (self.req.cancelled)() {
                return; // the rest are marked skipped ("cancelled")
            }
            let id = o
                .archive_id
                .or_else(|| self.adopted_ids.get(&o.path).copied());
            let Some(id) = id else {
                self.t.set(
                    plan::ActionKind::Offload,
                    &o.path,
                    ActionStatus::Skipped,
                    Some("its adoption failed".into()),
                );
                continue;
            };
            let result = match self.req.remote {
                Ok(remote) => crate::offload::offload_one(
                    remote,
                    &self.tree,
                    self.req.storage,
                    o,
                    id,
                    self.req.now,
                    self.faults(),
                ),
                Err(why) => Err(format!(
                    "offloading {}: {why}; the archive stays local",
                    o.path
                )),
            };
            match result {
                Ok(done) => {
                    self.figures.offloaded_archives += 1;
                    self.figures.offloaded_local_bytes += done.local_bytes;
                    self.figures.offloaded_allocated_bytes += done.local_allocated_bytes;
                    self.figures.uploaded_bytes += done.uploaded_bytes;
                    self.t.set(
                        plan::ActionKind::Offload,
                        &o.path,
                        ActionStatus::Done,
                        done.detail,
                    );
                }
                Err(message) => self.error(plan::ActionKind::Offload, &o.path, message),
            }
        }
    }

    fn finish(&mut self) {
        // Archive -> its verified members (path -> size, mtime, sha256): the plan's list
        // came from a sidecar, so each file is checked against the archive itself.
        type Held = HashMap<String, (u64, i64, String)>;
        let mut verified: HashMap<String, Result<Held, String>> = HashMap::new();
        let mut ready: Vec<&plan::Finish> = Vec::new();
        for f in &self.unit.finish {
            let tree = &self.tree;
            let check = verified.entry(f.archive.clone()).or_insert_with(|| {
                tree.parent_of(Path::new(&f.archive))
                    .map_err(|source| ArchiveError::Read {
                        path: tree.display(Path::new(&f.archive)),
                        source,
                    })
                    .and_then(|(dir, name)| archive::verify_in(&dir, name))
                    .map(|v| {
                        v.manifest
                            .files
                            .into_iter()
                            .map(|m| (m.path, (m.size, m.mtime_ns, m.sha256)))
                            .collect()
                    })
                    .map_err(|e| format!("{e}; its sources are kept"))
            });
            let held = match check {
                Ok(held) => held.get(&f.file.path),
                Err(message) => {
                    let message = format!("{}: {message}", f.file.path);
                    self.error(plan::ActionKind::DeleteArchived, &f.file.path, message);
                    continue;
                }
            };
            let same = held.is_some_and(|(size, mtime, sha)| {
                *size == f.file.size && *mtime == f.file.mtime_ns && *sha == f.sha256
            });
            if !same {
                let why = format!(
                    "{} does not hold this file as its manifest sidecar said; kept",
                    f.archive
                );
                self.warnings.push(format!("{}: {why}", f.file.path));
                self.t.set(
                    plan::ActionKind::DeleteArchived,
                    &f.file.path,
                    ActionStatus::Skipped,
                    Some(why),
                );
                continue;
            }
            ready.push(f);
        }
        // Hash each file through its held folder, then delete that very file: many at once
        // (see `super::delete`), recorded below in the plan's order.
        let (tree, faults) = (&self.tree, self.faults());
        let deleted = delete::map(&ready, self.req.delete_threads, |f| {
            delete_checked_source(tree, faults, f)
        });
        let mut dirs = BTreeSet::new();
        for (f, result) in ready.into_iter().zip(deleted) {
            match result {
                Ok(Ok(allocated)) => {
                    self.figures.deleted_files += 1;
                    self.figures.deleted_bytes += f.file.size;
                    self.figures.deleted_allocated_bytes += allocated;
                    dirs.insert(parent_dir(&f.file.path));
                    self.t.set(
                        plan::ActionKind::DeleteArchived,
                        &f.file.path,
                        ActionStatus::Done,
                        None,
                    );
                }
                Ok(Err(why)) => {
                    if why != ALREADY_GONE {
                        self.warnings.push(format!("{}: {why}", f.file.path));
                    }
                    self.t.set(
                        plan::ActionKind::DeleteArchived,
                        &f.file.path,
                        ActionStatus::Skipped,
                        Some(why),
                    );
                }
                Err(e) => self.error(
                    plan::ActionKind::DeleteArchived,
                    &f.file.path,
                    format!(
                        "{}: {e}",
                        self.tree.display(Path::new(&f.file.path)).display()
                    ),
                ),
            }
        }
        self.sync_dirs(dirs);
    }

    fn sync_dirs(&mut self, dirs: BTreeSet<PathBuf>) {
        for dir in dirs {
            let shown = self.tree.display(&dir);
            let result = faults::check(self.faults(), Step::SyncDir, &shown)
                .and_then(|()| self.tree.folder(&dir))
                .and_then(|folder| folder.sync());
            if let Err(e) = result {
                self.errors
                    .push(format!("fsync of {}: {e}", shown.display()));
            }
        }
    }

    /// The new archive. Returns whether it stopped because of cancellation.
    fn archive(&mut self) -> bool {
        let Some(arch) = &self.unit.archive else {
            return false;
        };
        let rel = PathBuf::from(&arch.path);
        let dir_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let dir = self.tree.display(&dir_rel);
        let fail_all = |run: &mut Self, message: String| {
            run.t.fail_archive(
                &arch.path,
                arch.files.iter().map(|f| f.path.as_str()),
                &message,
            );
            run.errors.push(message);
        };
        let archive_dir = match self.tree.create_folder(&dir_rel) {
            Ok(f) => f,
            Err(e) => {
                fail_all(
                    self,
                    format!("archive folder {}: {e}; sources kept", dir.display()),
                );
                return false;
            }
        };
        // Database rows first, into unnamed spool files beside the archive.
        let (spools, hashes) = if arch.rows.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let rows_plan = arch.rows.clone();
            let spool_dir = archive_dir.clone();
            match self
                .req
                .storage
                .read_blocking(move |conn| Ok(rows::spool(conn, &rows_plan, &spool_dir)))
            {
                Ok(Ok(s)) => (s.spools, s.hashes),
                Ok(Err(e)) => {
                    fail_all(
                        self,
                        format!(
                            "archive {} of {}: {e}; nothing archived",
                            arch.path, self.unit.key
                        ),
                    );
                    return false;
                }
                Err(e) => {
                    fail_all(
                        self,
                        format!(
                            "archive {} of {}: {e}; nothing archived",
                            arch.path, self.unit.key
                        ),
                    );
                    return false;
                }
            }
        };
        let sources: Vec<archive::SourceFile> =
            arch.files.iter().map(plan::PlannedFile::source).collect();
        let written = archive::write(WriteRequest {
            tree: &self.tree,
            relative: &rel,
            spec: &self.unit.key,
            created_at: self.req.now,
            files: &sources,
            db: &spools,
            zstd_level: self.req.zstd_level,
            faults: self.req.faults,
            cancelled: self.req.cancelled,
        });
        let outcome = match written {
            Ok(o) => o,
            Err(ArchiveError::Cancelled) => return true,
            Err(e) => {
                fail_all(
                    self,
                    format!("{e}; its {} source file(s) are kept", arch.files.len()),
                );
                return false;
            }
        };
        for ex in &outcome.excluded {
            match ex {
                Excluded::Changed { path, detail } => {
                    self.warnings
                        .push(format!("{path}: {detail}; not archived"));
                    self.t.set(
                        plan::ActionKind::Archive,
                        path,
                        ActionStatus::Skipped,
                        Some(detail.clone()),
                    );
                }
                Excluded::Failed { path, error } => {
                    let message = format!(
                        "{}: {error}; not archived, left in place",
                        self.tree.display(Path::new(path)).display()
                    );
                    self.error(plan::ActionKind::Archive, path, message);
                }
            }
        }
        let Some(w) = outcome.written else {
            return false;
        };
        // Its sidecar, then the record of the verified archive and the deletion of its
        // rows, in one transaction.
        let final_path = self.tree.display(Path::new(&w.path));
        let final_name = Path::new(&w.path).file_name().unwrap_or_default();
        self.write_sidecar(&archive_dir, final_name, &w.sha256, w.bytes, &w.manifest);
        let (rel_s, manifest, sha, bytes) = (
            w.path.clone(),
            w.manifest.clone(),
            w.sha256.clone(),
            w.bytes,
        );
        let recorded = faults::check(self.faults(), Step::RecordArchive, &final_path)
            .map_err(RetentionError::io(&final_path))
            .and_then(|()| {
                self.req.storage.write_blocking(move |tx| {
                    catalog::insert(tx, &rel_s, bytes, &sha, &manifest, "written")
                        .map_err(RetentionError::sqlite("recording an archive"))?;
                    rows::delete_archived(tx, &hashes)
                        .map_err(RetentionError::sqlite("deleting archived rows"))
                })
            });
        let deleted_rows = match recorded {
            Ok(d) => d,
            Err(e) => {
                let message = format!(
                    "recording archive {} failed: {e}; it stays on disk (the next run adopts it) and its sources are kept",
                    final_path.display()
                );
                self.t.fail_archive(
                    &arch.path,
                    w.manifest.files.iter().map(|m| m.path.as_str()),
                    &message,
                );
                self.errors.push(message);
                return false;
            }
        };
        self.figures.archives_written += 1;
        tracing::info!(
            spec = %self.unit.key,
            archive = %w.path,
            files = w.manifest.files.len(),
            rows = w.manifest.db_rows(),
            bytes = w.bytes,
            "archive written, verified and recorded; deleting its sources"
        );
        self.figures.archive_bytes_written += w.bytes;
        if let Ok(st) = archive_dir.stat(final_name) {
            self.figures.archive_allocated_bytes_written += st.allocated_bytes;
        }
        self.figures.archived_files += w.manifest.files.len() as u64;
        self.figures.archived_bytes += w.manifest.source_bytes();
        self.figures.archived_rows += w.manifest.db_rows();
        self.figures.deleted_rows += deleted_rows.rows;
        self.warnings.extend(deleted_rows.kept.iter().cloned());
        for part in &w.manifest.db {
            self.t.set_table(
                plan::ActionKind::ArchiveRows,
                &arch.path,
                Some(&part.table),
                ActionStatus::Done,
                Some(format!("{} row(s) archived", part.rows)),
            );
        }
        // Only now: delete the sources, each still exactly as archived, many at once
        // (each unlink waits on the disk; see `super::delete`). What each did is recorded
        // below in the manifest's order, whichever thread did it.
        let (tree, faults) = (&self.tree, self.faults());
        let deleted = delete::map(&w.manifest.files, self.req.delete_threads, |m| {
            delete_archived_source(tree, faults, m, w.sources.get(&m.path))
        });
        let mut dirs = BTreeSet::new();
        for (m, result) in w.manifest.files.iter().zip(deleted) {
            match result {
                Ok(Ok(allocated)) => {
                    self.figures.deleted_files += 1;
                    self.figures.deleted_bytes += m.size;
                    self.figures.deleted_allocated_bytes += allocated;
                    dirs.insert(parent_dir(&m.path));
                    self.t
                        .set(plan::ActionKind::Archive, &m.path, ActionStatus::Done, None);
                }
                Ok(Err(why)) => {
                    self.figures.kept_after_archiving += 1;
                    self.warnings.push(format!("{}: {why}", m.path));
                    self.t.set(
                        plan::ActionKind::Archive,
                        &m.path,
                        ActionStatus::Skipped,
                        Some(why),
                    );
                }
                Err(e) => {
                    self.figures.kept_after_archiving += 1;
                    let message = format!(
                        "{}: {e}; it is archived in {} but could not be deleted",
                        self.tree.display(Path::new(&m.path)).display(),
                        w.path
                    );
                    self.error(plan::ActionKind::Archive, &m.path, message);
                }
            }
        }
        self.sync_dirs(dirs);
        false
    }
}

/// The folder of a file's relative path.
fn parent_dir(relative: &str) -> PathBuf {
    Path::new(relative)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Deletes one source of a recorded archive through the handle it was read from, only
/// while its name still refers to that very file, unchanged (`read`: how it was read).
/// `Ok(Ok(allocated bytes freed))`, or `Ok(Err(why it was kept))`.
fn delete_archived_source(
    tree: &Tree,
    faults: Option<&dyn Faults>,
    m: &archive::Member,
    read: Option<&FileStat>,
) -> io::Result<Result<u64, String>> {
    let path = tree.display(Path::new(&m.path));
    faults::check(faults, Step::DeleteSource, &path)?;
    let Some(read) = read else {
        return Ok(Err("archived, but how it was read is unknown; kept".into()));
    };
    Ok(match tree.remove_if_same(Path::new(&m.path), read)? {
        Removal::Removed => Ok(read.allocated_bytes),
        Removal::Gone => Err("archived; the source was already gone".into()),
        Removal::Changed(why) => Err(format!(
            "{why} after it was archived; kept in place (the archive holds the version read)"
        )),
    })
}

/// Why [`delete_checked_source`] left a file: not a warning, the goal is reached.
const ALREADY_GONE: &str = "already gone";

/// Deletes a source an earlier run archived (`f`, whose archive was verified to hold it)
/// once its content, hashed through its held folder, is the archived one; then only while
/// its name still refers to the file hashed. `Ok(Ok(allocated bytes freed))`, or
/// `Ok(Err(why it was kept))`.
fn delete_checked_source(
    tree: &Tree,
    faults: Option<&dyn Faults>,
    f: &plan::Finish,
) -> io::Result<Result<u64, String>> {
    let relative = Path::new(&f.file.path);
    let (file, stat) = match tree.open_file(relative) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(ALREADY_GONE.into())),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Ok(Err(format!("{e}; kept"))),
        Err(e) => return Err(e),
    };
    let planned = f.file.identity.is_none_or(|id| id == (stat.dev, stat.ino));
    if !planned || stat.size != f.file.size || stat.mtime_ns != f.file.mtime_ns {
        return Ok(Err("changed since the plan; kept".into()));
    }
    let (sha, _) = archive::sha256_of(file)?;
    if sha != f.sha256 {
        return Ok(Err(format!(
            "its content differs from the copy in {}; kept",
            f.archive
        )));
    }
    faults::check(faults, Step::DeleteSource, &tree.display(relative))?;
    Ok(match tree.remove_if_same(relative, &stat)? {
        Removal::Removed => Ok(stat.allocated_bytes),
        Removal::Gone => Err(ALREADY_GONE.into()),
        Removal::Changed(why) => Err(format!("{why}; kept")),
    })
}

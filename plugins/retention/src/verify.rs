//! Damage found early: every cleanup checks the recorded archives before it changes
//! anything, so a deleted, truncated or rotten archive is reported while its evidence may
//! still be recovered (from a backup, or from sources not yet deleted), not at the restore
//! that needs it.
//!
//! - Every run, dry runs too: each unpurged recorded archive is looked up through the held
//!   evidence root (no symlink followed) and must be a regular file of its recorded size.
//! - A real run also reads and hashes the archives whose last full check is older than
//!   `retention.verify_archive_hashes_every_days` (an archive counts as checked when it
//!   is written: it is verified before it is recorded), and the ones found damaged before
//!   (a file put back is found intact and cleared). What it finds is recorded in
//!   `hygiene_archives` (`verified_at`, `damage`, `damage_found_at`) in one transaction.
//!
//! - An offloaded archive whose local file is gone is not missing: its object was read
//!   back and matched its sha256 before it was recorded and the local file deleted
//!   (see [`crate::offload`]); it is counted in `remote_archives` and not looked up on the
//!   store (a store that is down must not turn into recorded damage). Where the local
//!   file is still there, it is checked like any other.
//!
//! Damage not recorded before is an error of the run that finds it (the run fails, so a
//! scheduled run alerts); damage already recorded is a warning on each later run.
//! A damaged archive changes nothing else: its sources, where they still exist, are only
//! deleted after the archive verifies in full (see `execute`), and `restore` leaves it out
//! and names it.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use speckit_engine::Storage;
use std::collections::HashSet;
use std::io;
use std::path::Path;

use crate::archive;
use crate::catalog::{self, ArchiveRecord};
use crate::error::RetentionError;
use crate::folder::{NodeKind, Tree};

const DAY_MS: i64 = 86_400_000;

/// A recorded archive that is not as it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DamagedArchive {
    pub spec: String,
    /// Relative to the evidence root.
    pub path: String,
    /// What is wrong: missing, not a regular file, wrong size, wrong hash, unreadable.
    pub damage: String,
    /// When a cleanup first found this damage (RFC 3339); `None`: found by this run.
    pub known_since: Option<String>,
}

/// What checking the recorded archives found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ArchiveHealth {
    /// Archives whose size was checked.
    pub checked_archives: u64,
    /// Offloaded archives whose local file is gone (not checked here: see above).
    #[serde(default)]
    pub remote_archives: u64,
    /// Archives read in full and hashed by this run, and their bytes.
    pub hashed_archives: u64,
    pub hashed_bytes: u64,
    pub damaged_archives: Vec<DamagedArchive>,
    /// Archives found damaged before and intact now (put back by hand).
    pub repaired_archives: Vec<String>,
    /// The check itself could not run (the evidence root cannot be opened); nothing recorded.
    pub unavailable: Option<String>,
}

impl ArchiveHealth {
    /// Damage this run found for the first time: errors of the run.
    pub fn errors(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .damaged_archives
            .iter()
            .filter(|d| d.known_since.is_none())
            .map(|d| {
                format!(
                    "{}: recorded archive of {} is damaged: {}; restore its SPEC from the intact archives, or put the file back from a backup",
                    d.path, d.spec, d.damage
                )
            })
            .collect();
        out.extend(
            self.unavailable
                .iter()
                .map(|why| format!("the recorded archives could not be checked: {why}")),
        );
        out
    }

    /// Damage found by an earlier run, and archives found intact again: warnings.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .damaged_archives
            .iter()
            .filter_map(|d| {
                d.known_since.as_ref().map(|since| {
                    format!(
                        "{}: recorded archive of {} is still damaged (found {since}): {}",
                        d.path, d.spec, d.damage
                    )
                })
            })
            .collect();
        out.extend(self.repaired_archives.iter().map(|path| {
            format!("{path}: recorded archive found damaged before is intact again (its hash matches the record)")
        }));
        out
    }
}

/// What to check.
pub struct CheckRequest<'a> {
    pub root: &'a Path,
    /// The unpurged records to check (the caller leaves out those this run purges).
    pub records: &'a [ArchiveRecord],
    pub now: DateTime<Utc>,
    /// Re-hash archives last verified longer ago than this (0: never).
    pub hash_every_days: u32,
    /// A real run: hash what is due and record the findings. A dry run checks sizes only.
    pub real_run: bool,
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
}

/// What a real run records, one entry per archive checked in full or found damaged.
#[derive(Debug, Default)]
struct Findings {
    verified: Vec<i64>,
    damaged: Vec<(i64, String)>,
}

/// Checks the recorded archives (see the module documentation) and, on a real run,
/// records the findings in one transaction.
pub fn check(req: &CheckRequest<'_>, storage: &Storage) -> Result<ArchiveHealth, RetentionError> {
    let mut health = ArchiveHealth::default();
    if req.records.is_empty() {
        return Ok(health);
    }
    let tree = match Tree::open(req.root) {
        Ok(tree) => tree,
        Err(e) => {
            health.unavailable = Some(format!("{}: {e}", req.root.display()));
            return Ok(health);
        }
    };
    let now_ms = req.now.timestamp_millis();
    let mut findings = Findings::default();
    for record in req.records {
        if (req.cancelled)() {
            break;
        }
        let inspection = inspect(&tree, record, now_ms, req);
        if matches!(inspection, Inspection::Remote) {
            health.remote_archives += 1;
            continue;
        }
        health.checked_archives += 1;
        let found = match inspection {
            Inspection::Remote => None,
            Inspection::Intact => None,
            Inspection::Hashed { bytes } => {
                health.hashed_archives += 1;
                health.hashed_bytes += bytes;
                findings.verified.push(record.id);
                if record.damage.is_some() {
                    health.repaired_archives.push(record.path.clone());
                }
                None
            }
            Inspection::Damaged(damage) => Some(damage),
            // Unchecked because only a hash could tell: the recorded damage stands.
            Inspection::KnownDamage => record.damage.clone(),
        };
        let Some(damage) = found else { continue };
        let known_since = (record.damage.as_deref() == Some(damage.as_str()))
            .then_some(record.damage_found_at_ms)
            .flatten()
            .map(rfc3339);
        if known_since.is_none() {
            findings.damaged.push((record.id, damage.clone()));
        }
        health.damaged_archives.push(DamagedArchive {
            spec: record.spec.clone(),
            path: record.path.clone(),
            damage,
            known_since,
        });
    }
    if req.real_run && !(findings.verified.is_empty() && findings.damaged.is_empty()) {
        storage.write_blocking(move |tx| {
            let record = || -> rusqlite::Result<()> {
                for id in &findings.verified {
                    catalog::mark_verified(tx, *id, now_ms)?;
                }
                for (id, damage) in &findings.damaged {
                    catalog::mark_damaged(tx, *id, damage, now_ms)?;
                }
                Ok(())
            };
            record().map_err(RetentionError::sqlite("recording the archive check"))
        })?;
    }
    Ok(health)
}

enum Inspection {
    /// Right size; not due for a hash check.
    Intact,
    /// Read in full: its sha256 matches the record.
    Hashed {
        bytes: u64,
    },
    Damaged(String),
    /// Right size, damaged by hash before, and this run does not hash (a dry run).
    KnownDamage,
    /// Offloaded, and its local file deleted as planned.
    Remote,
}

fn inspect(tree: &Tree, record: &ArchiveRecord, now_ms: i64, req: &CheckRequest<'_>) -> Inspection {
    let relative = Path::new(&record.path);
    let stat = match tree.stat(relative) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound && record.is_offloaded() => {
            return Inspection::Remote
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Inspection::Damaged("missing from disk".into())
        }
        Err(e) => return Inspection::Damaged(format!("cannot be looked up: {e}")),
    };
    if stat.kind != NodeKind::File {
        return Inspection::Damaged(format!("not a regular file ({:?})", stat.kind));
    }
    if stat.size != record.bytes {
        return Inspection::Damaged(format!(
            "{} bytes on disk, {} recorded when it was written",
            stat.size, record.bytes
        ));
    }
    let last_checked = record.verified_at_ms.unwrap_or(record.created_at_ms);
    let due = req.hash_every_days > 0
        && now_ms.saturating_sub(last_checked) >= i64::from(req.hash_every_days) * DAY_MS;
    if !req.real_run {
        return if record.damage.is_some() {
            Inspection::KnownDamage
        } else {
            Inspection::Intact
        };
    }
    if !due && record.damage.is_none() {
        return Inspection::Intact;
    }
    let hashed = tree
        .open_file(relative)
        .and_then(|(file, _)| archive::sha256_of(file));
    match hashed {
        Ok((sha256, bytes)) if sha256 == record.sha256 && bytes == record.bytes => {
            Inspection::Hashed { bytes }
        }
        Ok((sha256, _)) => Inspection::Damaged(format!(
            "its sha256 is {sha256}, {} was recorded when it was written",
            record.sha256
        )),
        Err(e) => Inspection::Damaged(format!("cannot be read: {e}")),
    }
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| format!("{ms} ms after the epoch"))
}

/// The records a run checks: unpurged, of the selected SPEC (all without `--spec`), and
/// not purged by this run's plan.
pub fn records_to_check(
    recorded: Vec<ArchiveRecord>,
    only: Option<&speckit_engine::SpecId>,
    purged_by_plan: &HashSet<i64>,
) -> Vec<ArchiveRecord> {
    recorded
        .into_iter()
        .filter(|r| r.purged_at_ms.is_none() && !purged_by_plan.contains(&r.id))
        .filter(|r| {
            only.is_none_or(|id| {
                let id = id.as_str();
                r.spec == id
                    || r.spec
                        .strip_prefix(id)
                        .is_some_and(|rest| rest.starts_with('-'))
            })
        })
        .collect()
}

//! Offload: recorded archives older than `offload.after_days` move to object storage
//! (`[offload] url`), and only then leave the local disk. The manifest sidecar stays beside
//! where the archive was, so the catalog still says what each archive holds; `restore`
//! fetches the object back ([`crate::restore`]), `purge` deletes it ([`crate::execute`]).
//!
//! Durability order of one archive's offload (under its SPEC's lock), and what a crash
//! after each step leaves:
//!
//! | step | then a crash leaves | the next run |
//! |------|---------------------|--------------|
//! | 1. the local file is checked (regular, recorded size) | local | starts again |
//! | 2. look up the key, then upload, hashing the bytes sent: a file that is not the recorded archive is refused (a multipart upload aborted, also when a part fails); a one-request upload only creates (`PutMode::Create`) | local (maybe a partial or complete object) | a complete object with the archive's exact bytes is adopted (read back); another object at that key is never overwritten; a `file://` store's staging files of that key (`<object>#<n>`, left by a killed upload) are removed first |
//! | 3. read back in full: sha256 and size must match the record (else the object this run wrote is deleted) | local + object | as 2 |
//! | 4. record `remote_url`, ETag, version, `offloaded_at` in one transaction | local + recorded object | finds it recorded: HEAD must match size (and ETag), the local file must still hash as recorded, then 5 |
//! | 5. delete the local file (only if it is still the file checked), fsync its folder | recorded object (+ sidecar) | nothing to do |
//!
//! Any error at any step fails that archive's action with the cause, changes no record and
//! deletes nothing local; the next run tries again. A crash leaves the archive local,
//! remote, or both, never neither.
//!
//! What a crash can leave on the store that no record names, and what clears it: a
//! `file://` store's staging file of an upload cut short (removed by the next upload of
//! that key, which the rerun makes); on S3, the parts of a multipart upload cut short by
//! a crash (object_store cannot list them: an `AbortIncompleteMultipartUpload` lifecycle
//! rule on the bucket removes them). A complete object uploaded but not recorded is
//! adopted by the next run's offload, or, when that run finds the archive past the purge
//! age instead, deleted with it (if it holds the archive's exact bytes; a failure to
//! look is a warning naming the object, and the local purge goes on). Only a one-request upload (up to
//! `part_size_mib`) is conditional: a multipart upload's completion cannot be made
//! create-only through object_store, so for larger archives the look-up before the upload
//! is the only guard against another writer's object at the same key.
//!
//! Purge of an offloaded archive deletes the object first, then the local sidecar (and
//! file, if any), then records the purge: the record of an object is dropped only once
//! the object is gone, so no object is ever left that no record names (a crash between
//! leaves a record whose object is gone; the rerun's delete finds nothing and records it).

mod remote;

pub use remote::{redacted, ObjectInfo, OffloadError, Remote, StoreUrl, Unrecorded, Uploaded};

use chrono::{DateTime, Utc};
use serde::Serialize;
use speckit_engine::policy::Policy;
use speckit_engine::{SpecId, Storage};
use std::io;
use std::path::Path;

use crate::archive;
use crate::catalog::{self, ArchiveRecord, RemoteCopy};
use crate::error::RetentionError;
use crate::faults::{self, Faults, Step};
use crate::folder::{NodeKind, Removal, Tree};
use crate::plan::Offload;
use crate::settings::OffloadPolicy;

const DAY_MS: i64 = 86_400_000;

/// Decides which recorded archives a plan offloads.
pub struct Planner {
    base: Option<StoreUrl>,
    cutoff_ms: i64,
}

impl Planner {
    pub fn new(policy: &Policy, now: DateTime<Utc>) -> Planner {
        let p = policy.section::<OffloadPolicy>();
        let base = if p.enabled() {
            StoreUrl::parse(&p.url).ok()
        } else {
            None
        };
        Planner {
            base,
            cutoff_ms: now.timestamp_millis() - i64::from(p.after_days) * DAY_MS,
        }
    }

    /// The offload of `rec`, if any: an archive recorded as offloaded whose local file is
    /// still there (whatever the policy says now: the object is recorded, the local copy
    /// is the one to go), or, with offload on, an intact local archive past the age.
    pub fn plan(&self, root: &Path, rec: &ArchiveRecord) -> Option<Offload> {
        if rec.damage.is_some() || !is_local_file(root, &rec.path) {
            return None; // verify reports damage; a damaged archive is never uploaded
        }
        let offload = |target: String, recorded: Option<RemoteCopy>| Offload {
            archive_id: Some(rec.id),
            path: rec.path.clone(),
            created_at_ms: rec.created_at_ms,
            bytes: rec.bytes,
            sha256: rec.sha256.clone(),
            target,
            recorded,
        };
        if let Some(remote) = &rec.remote {
            return Some(offload(remote.url.clone(), Some(remote.clone())));
        }
        let base = self.base.as_ref()?;
        (rec.created_at_ms < self.cutoff_ms)
            .then(|| offload(base.join(object_key(&rec.path)).to_string(), None))
    }

    /// The URL the archive at `relative` is offloaded to under the configured
    /// `[offload] url` (`None` with offload off).
    pub fn object_url(&self, relative: &str) -> Option<String> {
        let base = self.base.as_ref()?;
        Some(base.join(object_key(relative)).to_string())
    }

    /// The offload of an unrecorded archive this run adopts (found verified on disk), if
    /// offload is on and it is past the age: it runs once the adoption is recorded.
    pub fn plan_adopted(&self, relative: &str, verified: &archive::Verified) -> Option<Offload> {
        let base = self.base.as_ref()?;
        (verified.manifest.created_at_ms < self.cutoff_ms).then(|| Offload {
            archive_id: None,
            path: relative.to_string(),
            created_at_ms: verified.manifest.created_at_ms,
            bytes: verified.bytes,
            sha256: verified.sha256.clone(),
            target: base.join(object_key(relative)).to_string(),
            recorded: None,
        })
    }
}

/// The object key below `[offload] url` of an archive at `relative`
/// (`cleanup/archives/<SPEC>/<name>` -> `<SPEC>/<name>`).
pub fn object_key(relative: &str) -> &str {
    relative
        .strip_prefix(archive::ARCHIVES_DIR)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(relative)
}

/// Whether `relative` below `root` is a regular file (no symlink followed).
fn is_local_file(root: &Path, relative: &str) -> bool {
    std::fs::symlink_metadata(root.join(relative)).is_ok_and(|m| m.is_file())
}

/// What one archive's offload did, measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offloaded {
    /// Bytes sent to the store (0: the object was already there or already recorded).
    pub uploaded_bytes: u64,
    /// The local file deleted: apparent and allocated bytes, from its `stat`.
    pub local_bytes: u64,
    pub local_allocated_bytes: u64,
    /// What happened besides a plain upload (adopted an object, finished a run's offload).
    pub detail: Option<String>,
}

/// Offloads one archive (see the module documentation for the order). Errors name the
/// archive or object and the cause; on any error nothing local was deleted and no record
/// changed beyond what a completed step recorded.
pub fn offload_one(
    remote: &Remote,
    tree: &Tree,
    storage: &Storage,
    o: &Offload,
    archive_id: i64,
    now: DateTime<Utc>,
    faults: Option<&dyn Faults>,
) -> Result<Offloaded, String> {
    let relative = Path::new(&o.path);
    let shown = tree.display(relative);
    let url = StoreUrl::parse(&o.target).map_err(|why| format!("{}: {why}", o.target))?;
    let io_error = |e: io::Error| format!("{}: {e}; not offloaded", shown.display());
    // 1. The local file: a regular file of the recorded size, held open from here on.
    let (file, stat) = tree.open_file(relative).map_err(io_error)?;
    if stat.kind != NodeKind::File || stat.size != o.bytes {
        return Err(format!(
            "{}: {} bytes on disk, {} recorded; not offloaded (the archive check reports it)",
            shown.display(),
            stat.size,
            o.bytes
        ));
    }
    let mut done = Offloaded::default();
    let recorded = match &o.recorded {
        Some(recorded) => {
            // A run stopped between record and delete: the object must be as recorded,
            // and the local file still the archive, before the local copy goes.
            confirm_recorded(remote, &url, o, recorded)?;
            let (sha, bytes) = archive::sha256_of(file).map_err(io_error)?;
            if sha != o.sha256 || bytes != o.bytes {
                return Err(format!(
                    "{}: its sha256 is {sha}, {} was recorded; the local file is kept (the archive check reports it)",
                    shown.display(),
                    o.sha256
                ));
            }
            done.detail = Some(format!(
                "already recorded as offloaded to {}: local copy deleted",
                recorded.url
            ));
            recorded.clone()
        }
        None => {
            // 2-3. Upload (or adopt an object a stopped run left) and read it back.
            faults::check(faults, Step::UploadArchive, &shown).map_err(io_error)?;
            let uploaded = upload_checked(remote, &url, file, &shown, o, faults)?;
            if uploaded.already_there {
                done.detail = Some(format!(
                    "{url} was already there with the archive's exact bytes (an interrupted run's upload): adopted"
                ));
            } else {
                done.uploaded_bytes = o.bytes;
            }
            // 4. Record, in one transaction.
            faults::check(faults, Step::RecordOffload, &shown).map_err(io_error)?;
            let copy = RemoteCopy {
                url: url.to_string(),
                etag: uploaded.e_tag,
                version: uploaded.version,
                offloaded_at_ms: now.timestamp_millis(),
            };
            let id = archive_id;
            let row = copy.clone();
            let marked = storage.write_blocking(move |tx| {
                catalog::mark_offloaded(tx, id, &row)
                    .map_err(RetentionError::sqlite("recording an offload"))
            });
            match marked {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "{}: uploaded to {url}, but its record is gone or purged; the local file is kept",
                        shown.display()
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "{}: uploaded to {url}, but recording it failed: {e}; the local file is kept (the next run finds the object and records it)",
                        shown.display()
                    ))
                }
            }
            copy
        }
    };
    // 5. Delete the local copy, only if its name still refers to the file checked.
    faults::check(faults, Step::DeleteOffloaded, &shown).map_err(io_error)?;
    match tree.remove_if_same(relative, &stat).map_err(io_error)? {
        Removal::Removed | Removal::Gone => {}
        Removal::Changed(why) => {
            return Err(format!(
                "{}: recorded as offloaded to {}, but the local file changed ({why}); left alone",
                shown.display(),
                recorded.url
            ))
        }
    }
    let (dir, _) = tree.parent_of(relative).map_err(io_error)?;
    faults::check(faults, Step::SyncDir, dir.path()).map_err(io_error)?;
    dir.sync().map_err(io_error)?;
    done.local_bytes = stat.size;
    done.local_allocated_bytes = stat.allocated_bytes;
    tracing::info!(archive = %o.path, url = %recorded.url, bytes = o.bytes, "offloaded an archive");
    Ok(done)
}

/// An object recorded as offloaded must still be there with the recorded size (and ETag,
/// where both have one) before the local copy goes.
fn confirm_recorded(
    remote: &Remote,
    url: &StoreUrl,
    o: &Offload,
    recorded: &RemoteCopy,
) -> Result<(), String> {
    let keep = "the local copy is kept";
    match remote.head(url).map_err(|e| format!("{e}; {keep}"))? {
        None => Err(format!(
            "{url}: recorded as offloaded, but there is no such object; {keep} (restore and verify use it)"
        )),
        Some(info) if info.size != o.bytes => Err(format!(
            "{url}: recorded as offloaded with {} bytes, the object has {}; {keep}",
            o.bytes, info.size
        )),
        Some(info)
            if recorded.etag.is_some() && info.e_tag.is_some() && info.e_tag != recorded.etag =>
        {
            Err(format!(
                "{url}: its ETag {:?} is not the recorded {:?} (the object was replaced); {keep}",
                info.e_tag.unwrap_or_default(),
                recorded.etag.clone().unwrap_or_default()
            ))
        }
        Some(_) => Ok(()),
    }
}

/// Uploads the archive unless an object with its exact bytes is already at `url` (an
/// interrupted run's), then reads the object back in full. An object with other bytes at
/// `url` is never overwritten; an object this call wrote that does not read back as the
/// archive is deleted again.
fn upload_checked(
    remote: &Remote,
    url: &StoreUrl,
    file: std::fs::File,
    shown: &Path,
    o: &Offload,
    faults: Option<&dyn Faults>,
) -> Result<Uploaded, String> {
    let text = |e: OffloadError| format!("{e}; the local archive is kept");
    if let Some(existing) = remote.head(url).map_err(text)? {
        let (sha, bytes) = remote.read_back(url).map_err(text)?;
        if sha == o.sha256 && bytes == o.bytes {
            return Ok(Uploaded {
                e_tag: existing.e_tag,
                version: existing.version,
                already_there: true,
            });
        }
        return Err(format!(
            "{url}: another object is already there ({bytes} bytes, sha256 {sha}); it is not overwritten and {} stays local (choose another offload.url prefix)",
            shown.display()
        ));
    }
    faults::check(faults, Step::PutObject, shown).map_err(|e| {
        text(OffloadError::Local {
            path: shown.to_path_buf(),
            source: e,
        })
    })?;
    // Created only if still absent (archives in one request; see `Remote::upload`): an
    // object another writer put there since the look-up is not overwritten.
    let uploaded = remote
        .upload(url, file, shown, o.bytes, &o.sha256)
        .map_err(text)?;
    faults::check(faults, Step::ReadBackArchive, shown).map_err(|e| {
        text(OffloadError::Local {
            path: shown.to_path_buf(),
            source: e,
        })
    })?;
    let (sha, bytes) = remote.read_back(url).map_err(text)?;
    if sha != o.sha256 || bytes != o.bytes {
        let cleanup = match remote.delete(url) {
            Ok(_) => "the object was deleted again".to_string(),
            Err(e) => format!("deleting the object again failed too: {e}"),
        };
        return Err(format!(
            "{}; {cleanup}; the local archive is kept",
            OffloadError::Mismatch {
                url: url.to_string(),
                got: sha,
                got_bytes: bytes,
                expected: o.sha256.clone(),
                expected_bytes: o.bytes,
            }
        ));
    }
    Ok(uploaded)
}

/// Where an archive is, for `speckit-hygiene archives`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Whereabouts {
    /// Only on the local disk.
    Local,
    /// Only in object storage (the local file was deleted after the upload was checked).
    Remote,
    /// In both (offloaded, the local copy not deleted yet).
    Both,
    /// Recorded, not purged, and neither the local file nor a recorded object (damage:
    /// `cleanup` reports it).
    Missing,
    /// Deleted by a purge.
    Purged,
}

/// One archive and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ArchiveLocation {
    pub spec: String,
    /// Relative to the evidence root.
    pub path: String,
    pub location: Whereabouts,
    pub bytes: u64,
    /// RFC 3339.
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offloaded_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
}

/// Every recorded archive (of `only`'s SPEC, when given) and where it is: the record
/// says whether it was offloaded or purged, the local disk (looked at without following
/// a symlink) whether the local file is there. Reads only.
pub fn locations(
    root: &Path,
    storage: &Storage,
    only: Option<&SpecId>,
) -> Result<Vec<ArchiveLocation>, RetentionError> {
    let records = catalog::read(storage, catalog::all)?;
    let tree = Tree::open(root).ok();
    let time = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339());
    Ok(records
        .into_iter()
        .filter(|r| only.is_none_or(|id| belongs(&r.spec, id.as_str())))
        .map(|r| {
            let local = tree.as_ref().is_some_and(|t| {
                t.stat(Path::new(&r.path))
                    .is_ok_and(|s| s.kind == NodeKind::File)
            });
            let location = match (r.purged_at_ms.is_some(), local, r.remote.is_some()) {
                (true, _, _) => Whereabouts::Purged,
                (false, true, true) => Whereabouts::Both,
                (false, true, false) => Whereabouts::Local,
                (false, false, true) => Whereabouts::Remote,
                (false, false, false) => Whereabouts::Missing,
            };
            ArchiveLocation {
                spec: r.spec.clone(),
                location,
                bytes: r.bytes,
                created_at: time(r.created_at_ms).unwrap_or_default(),
                remote_url: r.remote.as_ref().map(|c| c.url.clone()),
                offloaded_at: r.remote.as_ref().and_then(|c| time(c.offloaded_at_ms)),
                purged_at: r.purged_at_ms.and_then(time),
                damage: r.damage.clone(),
                path: r.path,
            }
        })
        .collect())
}

/// Whether an archive of folder `key` belongs to SPEC `spec` (the folder, or a folder
/// whose tracker ID it is).
fn belongs(key: &str, spec: &str) -> bool {
    key == spec || crate::layout::tracker_id(key, [spec]) == spec
}

//! `restore <SPEC-ID> [--archive FILE] [--to DIR]`: puts a SPEC's archived files back,
//! each checked against its manifest hash, and its database rows back.
//!
//! - Archives: every recorded, unpurged archive of the SPEC (its folders, and folders whose
//!   tracker ID it is), or the one `--archive` names. Each is verified in full first; a
//!   damaged or missing recorded archive is named and left out, and the SPEC is restored
//!   from its intact archives (a named `--archive` must be intact).
//! - Where a path is in several archives, the newest archive's copy is restored.
//! - Files go to their original place under the evidence root, or under `--to DIR`. An
//!   existing file is never overwritten: the same content counts as already there, other
//!   content is a conflict, reported. Each file is written to a short temporary name in
//!   its folder, hashed, fsynced, given its original mtime and linked into place; folders
//!   are reached by descriptor from the root (or `--to`), never through a symlink.
//! - Database rows go back in one transaction (rows whose key exists are left alone), or,
//!   with `--to`, are written as `db/<table>.jsonl` under DIR and the database is untouched.
//! - An offloaded archive whose local file is gone is fetched from its recorded URL into
//!   an unnamed temporary file (in `$TMPDIR`), checked against its recorded sha256 and
//!   size, and restored from there; it is never written back into the archive folder.
//! - Archives stay where they are; restore takes the SPEC's lock like cleanup does.

use serde::Serialize;
use speckit_engine::{SpecId, Storage};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::archive::{self, HashingReader, Member};
use crate::catalog::{self, ArchiveRecord};
use crate::error::RetentionError;
use crate::faults::{self, Faults, Step};
use crate::folder::{self, NodeKind, Tree};
use crate::fsutil;
use crate::lock;
use crate::rows::{self, RestoredRows};

pub struct RestoreRequest<'a> {
    pub root: &'a Path,
    pub storage: &'a Storage,
    pub spec: &'a SpecId,
    /// One archive file instead of every recorded one.
    pub archive: Option<&'a Path>,
    /// Restore under this folder instead of the evidence root.
    pub to: Option<&'a Path>,
    pub faults: Option<&'a dyn Faults>,
    /// `[offload]`, to fetch offloaded archives (`None`: they count as missing).
    pub offload: Option<&'a crate::OffloadPolicy>,
}

/// What became of one archived file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreStatus {
    Restored,
    /// The same bytes are already at its path.
    AlreadyPresent,
    /// Other bytes are at its path: left alone.
    Conflict,
    Failed,
}

/// One restored (or not) file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RestoredFile {
    pub path: String,
    pub archive: String,
    pub status: RestoreStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The `restore` job's report data: `report.figures::<RestoreReport>()`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct RestoreReport {
    pub archives: Vec<String>,
    pub restored_files: u64,
    pub restored_bytes: u64,
    pub already_present: u64,
    pub conflicts: u64,
    pub rows_inserted: u64,
    pub rows_identical: u64,
    pub row_conflicts: Vec<String>,
    /// With `--to`: where the rows were written instead.
    pub rows_written_to: Vec<String>,
    pub files: Vec<RestoredFile>,
    /// Archives left out because they are damaged or missing, each with the cause (also
    /// in `errors`); the SPEC's intact archives were restored.
    pub damaged_archives: Vec<String>,
    pub errors: Vec<String>,
}

/// Whether an archive of folder `key` belongs to SPEC `spec`.
fn belongs(key: &str, spec: &str) -> bool {
    key == spec || crate::layout::tracker_id(key, [spec]) == spec
}

/// One archive chosen for the restore: where it is, how to name it, its record.
struct Chosen {
    /// Relative to the evidence root for a recorded archive; as given for `--archive`.
    path: PathBuf,
    label: String,
    record: Option<ArchiveRecord>,
    /// An offloaded archive fetched into a temporary file.
    fetched: Option<fs::File>,
}

impl Chosen {
    /// Opens the archive: a fetched one from its temporary file, a recorded one through
    /// the root's held folders (never through a symlink below the root), a named one by
    /// its path.
    fn open(&self, root: &Tree) -> Result<(fs::File, PathBuf), archive::ArchiveError> {
        let read_error = |path: PathBuf| move |source| archive::ArchiveError::Read { path, source };
        if let Some(fetched) = &self.fetched {
            use std::io::Seek;
            let shown = PathBuf::from(self.remote_url().unwrap_or_default());
            return fetched
                .try_clone()
                .and_then(|mut f| f.rewind().map(|()| f))
                .map(|f| (f, shown.clone()))
                .map_err(read_error(shown));
        }
        if self.record.is_some() {
            let shown = root.display(&self.path);
            root.open_file(&self.path)
                .map(|(file, _)| (file, shown.clone()))
                .map_err(read_error(shown))
        } else {
            fsutil::open_nofollow(&self.path)
                .map(|file| (file, self.path.clone()))
                .map_err(read_error(self.path.clone()))
        }
    }

    fn remote_url(&self) -> Option<&str> {
        self.record
            .as_ref()
            .and_then(|r| r.remote.as_ref())
            .map(|c| c.url.as_str())
    }

    /// Fetches an offloaded archive whose local file is gone into a temporary file,
    /// checked against its record (a local file, when there, is used as it is).
    fn fetch_if_remote(
        &mut self,
        root: &Tree,
        remote: &mut Option<crate::offload::Remote>,
        req: &RestoreRequest<'_>,
    ) -> Result<(), String> {
        let (Some(record), Some(url)) = (&self.record, self.remote_url()) else {
            return Ok(());
        };
        if root.stat(&self.path).is_ok() {
            return Ok(());
        }
        let policy = req.offload.ok_or_else(|| {
            format!(
                "{}: offloaded to {url}, and no [offload] policy to fetch it with",
                self.label
            )
        })?;
        if remote.is_none() {
            *remote = Some(crate::offload::Remote::new(policy).map_err(|e| e.to_string())?);
        }
        let remote = remote.as_ref().expect("set above");
        let object = crate::offload::StoreUrl::parse(url).map_err(|why| format!("{url}: {why}"))?;
        faults::check(req.faults, Step::FetchArchive, Path::new(url))
            .map_err(|e| format!("fetching {url}: {e}"))?;
        let mut file =
            tempfile::tempfile().map_err(|e| format!("a temporary file for {url}: {e}"))?;
        let (sha, bytes) = remote
            .download(&object, &mut file)
            .map_err(|e| format!("fetching {}: {e}", self.label))?;
        if sha != record.sha256 || bytes != record.bytes {
            return Err(format!(
                "{url}: fetched {bytes} bytes with sha256 {sha}, but {} bytes with sha256 {} were recorded",
                record.bytes, record.sha256
            ));
        }
        self.fetched = Some(file);
        Ok(())
    }

    /// Verifies it in full, against its record when it has one.
    fn verify(&self, root: &Tree) -> Result<archive::Verified, archive::ArchiveError> {
        let (file, shown) = self.open(root)?;
        let v = archive::verify_file(file, &shown)?;
        if let Some(r) = &self.record {
            if r.sha256 != v.sha256 {
                return Err(archive::ArchiveError::Corrupt {
                    path: shown,
                    detail: format!(
                        "its sha256 is {} but {} was recorded when it was written",
                        v.sha256, r.sha256
                    ),
                });
            }
        }
        Ok(v)
    }
}

/// Runs a restore.
pub fn restore(req: &RestoreRequest<'_>) -> Result<RestoreReport, RetentionError> {
    let spec = req.spec.as_str();
    let root = Tree::open(req.root).map_err(RetentionError::io(req.root))?;
    // Which archives.
    let mut chosen: Vec<Chosen> = match req.archive {
        Some(file) => vec![Chosen {
            path: file.to_path_buf(),
            label: file.to_string_lossy().into_owned(),
            record: None,
            fetched: None,
        }],
        None => {
            let recorded = catalog::read(req.storage, catalog::unpurged)?;
            let mine: Vec<_> = recorded
                .into_iter()
                .filter(|r| belongs(&r.spec, spec))
                .map(|r| Chosen {
                    path: PathBuf::from(&r.path),
                    label: r.path.clone(),
                    record: Some(r),
                    fetched: None,
                })
                .collect();
            if mine.is_empty() {
                return Err(RetentionError::InvalidOption(format!(
                    "SPEC {spec} has no recorded archive that is not purged (see `speckit-hygiene cleanup --dry-run`, or name one with --archive)"
                )));
            }
            mine
        }
    };
    // Verify each in full before writing anything. A damaged or missing archive is named
    // and left out; the intact ones are restored (a named `--archive` must be intact).
    let mut verified = Vec::new();
    let mut damaged = Vec::new();
    let mut remote = None;
    let mut unfetched = vec![false; chosen.len()];
    for (i, c) in chosen.iter_mut().enumerate() {
        if let Err(why) = c.fetch_if_remote(&root, &mut remote, req) {
            damaged.push(format!("{why}; not restored from it"));
            unfetched[i] = true;
        }
    }
    for (c, _) in chosen.iter().zip(&unfetched).filter(|(_, skip)| !**skip) {
        match c.verify(&root) {
            Ok(v) => {
                if !belongs(&v.manifest.spec, spec) {
                    return Err(RetentionError::InvalidOption(format!(
                        "{} is an archive of SPEC {}, not of {spec}",
                        c.label, v.manifest.spec
                    )));
                }
                verified.push((c, v));
            }
            Err(e) if req.archive.is_some() => return Err(e.into()),
            Err(e) => damaged.push(format!("{e}; not restored from it")),
        }
    }
    if verified.is_empty() {
        return Err(RetentionError::InvalidOption(format!(
            "no intact archive of SPEC {spec}: {}",
            damaged.join("; ")
        )));
    }
    verified.sort_by_key(|(_, v)| v.manifest.created_at_ms);
    // The folders' locks and the SPEC-ID's, as cleanup takes them.
    let mut locks = Vec::new();
    let mut keys: Vec<&str> = verified
        .iter()
        .map(|(_, v)| v.manifest.spec.as_str())
        .collect();
    keys.push(spec);
    keys.sort();
    keys.dedup();
    for key in keys {
        locks.push(
            lock::try_lock(req.root, key).map_err(|e| RetentionError::Conflict(e.to_string()))?,
        );
    }
    // The newest copy of each path wins.
    let mut newest: HashMap<&str, usize> = HashMap::new();
    for (i, (_, v)) in verified.iter().enumerate() {
        for m in &v.manifest.files {
            newest.insert(m.path.as_str(), i);
        }
    }
    let base_tree;
    let base = match req.to {
        Some(to) => {
            fs::create_dir_all(to).map_err(RetentionError::io(to))?;
            base_tree = Tree::open(to).map_err(RetentionError::io(to))?;
            &base_tree
        }
        None => &root,
    };
    let mut report = RestoreReport {
        archives: verified.iter().map(|(c, _)| c.label.clone()).collect(),
        errors: damaged.clone(),
        damaged_archives: damaged,
        ..RestoreReport::default()
    };
    let mut db_parts: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut dirs = std::collections::BTreeSet::new();
    for (i, (c, v)) in verified.iter().enumerate() {
        let members: HashMap<&str, &Member> = v
            .manifest
            .files
            .iter()
            .filter(|m| newest.get(m.path.as_str()) == Some(&i))
            .map(|m| (m.path.as_str(), m))
            .collect();
        let parts: HashMap<&str, &str> = v
            .manifest
            .db
            .iter()
            .map(|d| (d.path.as_str(), d.table.as_str()))
            .collect();
        let (file, shown) = c.open(&root)?;
        archive::for_each_member_of(file, &shown, |name, reader| {
            if let Some(m) = members.get(name) {
                let dest = base.display(Path::new(&m.path));
                let outcome = put_back(base, m, reader, req.faults);
                let (status, detail) = match outcome {
                    Ok(Put::Restored) => {
                        report.restored_files += 1;
                        report.restored_bytes += m.size;
                        dirs.insert(
                            Path::new(&m.path)
                                .parent()
                                .map(Path::to_path_buf)
                                .unwrap_or_default(),
                        );
                        (RestoreStatus::Restored, None)
                    }
                    Ok(Put::Identical) => {
                        report.already_present += 1;
                        (RestoreStatus::AlreadyPresent, None)
                    }
                    Ok(Put::Conflict(why)) => {
                        report.conflicts += 1;
                        report.errors.push(format!("{}: {why}", dest.display()));
                        (RestoreStatus::Conflict, Some(why))
                    }
                    Err(e) => {
                        let message = format!("{}: {e}", dest.display());
                        report.errors.push(message.clone());
                        (RestoreStatus::Failed, Some(message))
                    }
                };
                report.files.push(RestoredFile {
                    path: m.path.clone(),
                    archive: c.label.clone(),
                    status,
                    detail,
                });
            } else if let Some(table) = parts.get(name) {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes)?;
                db_parts
                    .entry(table.to_string())
                    .or_default()
                    .extend_from_slice(&bytes);
            }
            Ok(())
        })?;
    }
    for dir in dirs {
        if let Err(e) = base.folder(&dir).and_then(|f| f.sync()) {
            report
                .errors
                .push(format!("fsync of {}: {e}", base.display(&dir).display()));
        }
    }
    if !db_parts.is_empty() {
        match req.to {
            Some(to) => {
                for (table, bytes) in &db_parts {
                    let member = Member {
                        path: format!("db/{table}.jsonl"),
                        size: bytes.len() as u64,
                        mtime_ns: fsutil::system_time_ns(std::time::SystemTime::now()),
                        sha256: sha_hex(bytes),
                    };
                    match put_back(base, &member, &mut bytes.as_slice(), req.faults) {
                        Ok(Put::Restored) | Ok(Put::Identical) => report
                            .rows_written_to
                            .push(to.join(&member.path).to_string_lossy().into_owned()),
                        Ok(Put::Conflict(why)) => report
                            .errors
                            .push(format!("{}: {why}", to.join(&member.path).display())),
                        Err(e) => report
                            .errors
                            .push(format!("{}: {e}", to.join(&member.path).display())),
                    }
                }
            }
            None => {
                let parts = db_parts.clone();
                let restored: Vec<RestoredRows> = req.storage.write_blocking(move |tx| {
                    let mut out = Vec::new();
                    for table in rows::TABLES {
                        if let Some(bytes) = parts.get(table) {
                            out.push(rows::restore(tx, table, bytes.as_slice())?);
                        }
                    }
                    Ok::<_, RetentionError>(out)
                })?;
                for r in restored {
                    report.rows_inserted += r.inserted;
                    report.rows_identical += r.identical;
                    report.row_conflicts.extend(r.conflicts);
                }
            }
        }
    }
    drop(locks);
    Ok(report)
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

enum Put {
    Restored,
    Identical,
    Conflict(String),
}

/// Writes one member under `base` through its held folders, never replacing an existing
/// file: a short temporary name in the destination folder (so any name that fits the file
/// system can be restored), hashed, fsynced, given its mtime, then linked into place.
fn put_back(
    base: &Tree,
    m: &Member,
    reader: &mut dyn Read,
    faults: Option<&dyn Faults>,
) -> io::Result<Put> {
    let relative = Path::new(&m.path);
    if !folder::is_plain_relative(relative) {
        return Ok(Put::Conflict("not a plain relative path; refused".into()));
    }
    let (parent_rel, name) = folder::split(relative)?;
    let dir = base.create_folder(parent_rel)?;
    match dir.stat(name) {
        Ok(st) if st.kind == NodeKind::File => {
            let (file, _) = dir.open_file(name)?;
            let (sha, _) = archive::sha256_of(file)?;
            return Ok(if sha == m.sha256 {
                Put::Identical
            } else {
                Put::Conflict("a different file is there; not overwritten".into())
            });
        }
        Ok(_) => {
            return Ok(Put::Conflict(
                "something other than a regular file is there; not overwritten".into(),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    faults::check(faults, Step::RestoreFile, &dir.display(name))?;
    let temp = folder::temp_name("restore");
    let result = (|| -> io::Result<Put> {
        let mut file = dir.create_new(&temp, 0o644)?;
        let mut hashing = HashingReader::new(reader);
        io::copy(&mut hashing, &mut file)?;
        let (_, sha, count) = hashing.into_parts();
        if sha != m.sha256 || count != m.size {
            return Err(io::Error::other(format!(
                "extracted {count} bytes with sha256 {sha}, manifest says {} bytes {}",
                m.size, m.sha256
            )));
        }
        file.flush()?;
        file.set_modified(fsutil::ns_to_system_time(m.mtime_ns))?;
        file.sync_all()?;
        match dir.link(&temp, name) {
            Ok(()) => Ok(Put::Restored),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Put::Conflict(
                "a file appeared there meanwhile; not overwritten".into(),
            )),
            Err(e) => Err(e),
        }
    })();
    let _ = dir.remove_file(&temp);
    result
}

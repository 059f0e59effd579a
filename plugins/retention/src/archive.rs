//! Per-SPEC archives: `tar` + `zstd`, with a manifest (path, size, mtime, sha256 of every
//! member) inside the archive as its last member and, once verified, in a sidecar file
//! beside it (see [`crate::sidecar`]); the database holds one row per archive.
//!
//! Writing follows the order that loses nothing: a temporary name beside the final place,
//! fsync, read the whole archive back and check every member's hash and size against the
//! manifest (and the file's own hash against the one computed while writing), link to the
//! final name (never replacing a file), fsync the folder. Recording and deleting sources is
//! the caller's next step.
//!
//! ```text
//! <root>/cleanup/archives/<SPEC>/<SPEC>_<YYYYMMDD>_<hash>.tar.zst
//!     commands/<SPEC>/...        evidence files, at their paths relative to the root
//!     consensus/<SPEC>/...
//!     db/<table>.jsonl           database rows (one JSON object per line)
//!     MANIFEST.json              format, SPEC, creation time, every member above
//! ```
//!
//! `tar -xf` of an archive in the evidence root puts the files back where they were.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek};
use std::path::{Path, PathBuf};

use crate::faults::{self, Faults, Step};
use crate::folder::{self, FileStat, Folder, Tree};
use crate::fsutil;

mod stream;

pub use stream::HashingReader;
use stream::{ExactReader, HashingWriter};

/// The archive format this code writes and reads.
pub const FORMAT: &str = "speckit-hygiene-archive/1";
/// The manifest's member name.
pub const MANIFEST_NAME: &str = "MANIFEST.json";
/// Where archives live, relative to the evidence root.
pub const ARCHIVES_DIR: &str = "cleanup/archives";
/// Suffix of archive files.
pub const ARCHIVE_SUFFIX: &str = ".tar.zst";
/// Marker in temporary archive names: `.<final name>.tmp-<pid>`.
pub const TEMP_MARKER: &str = ".tmp-";

/// One evidence file in an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Path relative to the evidence root (`commands/SPEC-KIT-900/x.json`).
    pub path: String,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub sha256: String,
}

/// One table's rows in an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbPart {
    pub table: String,
    /// Member name (`db/agent_executions.jsonl`).
    pub path: String,
    pub rows: u64,
    pub size: u64,
    pub sha256: String,
}

/// What an archive holds, stored inside it and in its sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The SPEC folder (or database SPEC-ID) the archive belongs to.
    pub spec: String,
    pub created_at_ms: i64,
    /// The same moment, RFC 3339, for people.
    pub created_at: String,
    pub files: Vec<Member>,
    pub db: Vec<DbPart>,
}

impl Manifest {
    pub fn source_bytes(&self) -> u64 {
        self.files.iter().map(|m| m.size).sum()
    }
    pub fn db_rows(&self) -> u64 {
        self.db.iter().map(|d| d.rows).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot write archive {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read archive {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("archive {} failed verification: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("archive {} already exists; another cleanup may be running", path.display())]
    Exists { path: PathBuf },
    #[error("cancelled")]
    Cancelled,
}

/// A source file the plan put into an archive, with the size and mtime it had then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// Device and inode when the plan saw it: another file under that name (a folder
    /// swapped for a look-alike) is not archived in its place.
    pub identity: Option<(u64, u64)>,
}

/// Database rows spooled to a temporary file, ready to go into an archive.
#[derive(Debug)]
pub struct DbSpool {
    pub table: String,
    pub file: File,
    pub rows: u64,
    pub size: u64,
    pub sha256: String,
}

/// Why a source file did not go into the archive.
#[derive(Debug)]
pub enum Excluded {
    /// Its size or mtime differ from the plan, it vanished or it is no longer a regular
    /// file: not archived stale, left as it is.
    Changed { path: String, detail: String },
    /// Reading it failed; left in place.
    Failed { path: String, error: io::Error },
}

/// A verified archive at its final name.
#[derive(Debug, Clone)]
pub struct Written {
    /// Relative to the evidence root.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub manifest: Manifest,
    /// Each archived source as it was read (its `fstat` after the read): a source is
    /// deleted only while its name still refers to exactly this file.
    pub sources: HashMap<String, FileStat>,
}

/// The archive folder of a SPEC, relative to the evidence root.
pub fn spec_dir(spec: &str) -> PathBuf {
    Path::new(ARCHIVES_DIR).join(spec)
}

/// The final name of an archive: SPEC, UTC day, and a digest of what goes in, so that a
/// dry run and the run after it name the same archive, and a rerun after a crash writes
/// the same one.
pub fn archive_name(
    spec: &str,
    day: chrono::NaiveDate,
    files: &[SourceFile],
    row_keys: &[String],
) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(f.size.to_le_bytes());
        h.update(f.mtime_ns.to_le_bytes());
    }
    for k in row_keys {
        h.update(k.as_bytes());
        h.update([0]);
    }
    let digest = hex::encode(h.finalize());
    // The archive and its sidecar (`<name>.manifest.json`) must fit the 255-byte name
    // limit whatever the SPEC folder's name: a long one is cut (the folder holding the
    // archive and the manifest inside it name the SPEC in full).
    let mut cut = spec.len().min(MAX_SPEC_IN_NAME);
    while !spec.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}_{}_{}{ARCHIVE_SUFFIX}",
        &spec[..cut],
        day.format("%Y%m%d"),
        &digest[..12]
    )
}

/// Most bytes of a SPEC folder's name put into an archive's name.
const MAX_SPEC_IN_NAME: usize = 180;

/// Whether a file name in an archive folder is one of our temporaries (this version's
/// short names, or the `.<final name>.tmp-<pid>` of earlier ones).
pub fn is_temp_name(name: &str) -> bool {
    (name.starts_with(folder::TEMP_PREFIX) && name.contains("-archive-"))
        || (name.starts_with('.') && name.contains(ARCHIVE_SUFFIX) && name.contains(TEMP_MARKER))
}

/// Whether a file name in an archive folder is a final archive.
pub fn is_archive_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(ARCHIVE_SUFFIX)
}

/// Everything needed to write one archive.
pub struct WriteRequest<'a> {
    /// The evidence root, held by descriptor: sources are read and the archive written
    /// through its folders' handles.
    pub tree: &'a Tree,
    /// Final path relative to the root (`cleanup/archives/<SPEC>/<name>`).
    pub relative: &'a Path,
    pub spec: &'a str,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub files: &'a [SourceFile],
    pub db: &'a [DbSpool],
    pub zstd_level: i32,
    pub faults: Option<&'a dyn Faults>,
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
}

/// The outcome of [`write`]: the archive (if anything went in) and the files left out.
#[derive(Debug)]
pub struct WriteOutcome {
    pub written: Option<Written>,
    pub excluded: Vec<Excluded>,
}

/// Writes, verifies and renames an archive of `files` and `db` into place.
///
/// A source that changed since the plan or cannot be read is left out (and reported), and
/// the archive is rebuilt without it; an error writing the archive itself fails the whole
/// archive, and the temporary file is removed. Sources are never touched here.
pub fn write(req: WriteRequest<'_>) -> Result<WriteOutcome, ArchiveError> {
    let final_path = req.tree.display(req.relative);
    let (dir_rel, final_name) =
        folder::split(req.relative).map_err(|source| ArchiveError::Write {
            path: final_path.clone(),
            source,
        })?;
    let dir = req
        .tree
        .create_folder(dir_rel)
        .map_err(|source| ArchiveError::Write {
            path: req.tree.display(dir_rel),
            source,
        })?;
    // Short whatever the archive's name: a temporary never exceeds the name limit.
    let temp = folder::temp_name("archive");
    let target = Target {
        dir: &dir,
        temp: &temp,
        temp_path: dir.display(&temp),
    };
    let mut excluded = Vec::new();
    let mut files: Vec<SourceFile> = req.files.to_vec();
    loop {
        if (req.cancelled)() {
            return Err(ArchiveError::Cancelled);
        }
        if files.is_empty() && req.db.iter().all(|d| d.rows == 0) {
            return Ok(WriteOutcome {
                written: None,
                excluded,
            });
        }
        match build(&req, &target, &files) {
            Ok(Built::Done {
                manifest,
                sha256,
                sources,
            }) => {
                let bytes = match finish(&req, &target, final_name, &final_path, &manifest, &sha256)
                {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        let _ = dir.remove_file(&temp);
                        return Err(e);
                    }
                };
                return Ok(WriteOutcome {
                    written: Some(Written {
                        path: req.relative.to_string_lossy().into_owned(),
                        bytes,
                        sha256,
                        manifest,
                        sources,
                    }),
                    excluded,
                });
            }
            Ok(Built::Exclude(index, why)) => {
                // Rebuild without that file: a member that changed while being read must
                // not go into the archive, and tar cannot take a member back.
                let _ = dir.remove_file(&temp);
                files.remove(index);
                excluded.push(why);
            }
            Err(e) => {
                let _ = dir.remove_file(&temp);
                return Err(e);
            }
        }
    }
}

/// Where an archive is being written: its folder's handle and the temporary's name.
struct Target<'a> {
    dir: &'a Folder,
    temp: &'a OsStr,
    /// For messages.
    temp_path: PathBuf,
}

enum Built {
    Done {
        manifest: Manifest,
        sha256: String,
        sources: HashMap<String, FileStat>,
    },
    /// The file at this index must be left out.
    Exclude(usize, Excluded),
}

fn build(
    req: &WriteRequest<'_>,
    target: &Target<'_>,
    files: &[SourceFile],
) -> Result<Built, ArchiveError> {
    let temp_path = target.temp_path.as_path();
    let werr = |source| ArchiveError::Write {
        path: temp_path.to_path_buf(),
        source,
    };
    let _ = target.dir.remove_file(target.temp);
    let file = target.dir.create_new(target.temp, 0o644).map_err(werr)?;
    let hashing = HashingWriter::new(BufWriter::with_capacity(256 * 1024, file));
    let encoder = zstd::stream::write::Encoder::new(hashing, req.zstd_level).map_err(werr)?;
    let mut tar = tar::Builder::new(encoder);
    let mtime_secs = req.created_at.timestamp().max(0) as u64;
    let mut members = Vec::with_capacity(files.len());
    let mut sources = HashMap::with_capacity(files.len());
    for (index, source) in files.iter().enumerate() {
        if index % 256 == 0 && (req.cancelled)() {
            return Err(ArchiveError::Cancelled);
        }
        let relative = Path::new(&source.path);
        let path = req.tree.display(relative);
        let (src_dir, name) = match req.tree.parent_of(relative) {
            Ok(found) => found,
            Err(e) => {
                return Ok(Built::Exclude(
                    index,
                    Excluded::Changed {
                        path: source.path.clone(),
                        detail: format!("its folder cannot be opened as a real folder: {e}"),
                    },
                ))
            }
        };
        if let Err(error) = faults::check(req.faults, Step::ReadSource, &path) {
            return Ok(Built::Exclude(
                index,
                Excluded::Failed {
                    path: source.path.clone(),
                    error,
                },
            ));
        }
        let opened = match open_unchanged(&src_dir, name, source) {
            Ok(f) => f,
            Err(Unchanged::Changed(detail)) => {
                return Ok(Built::Exclude(
                    index,
                    Excluded::Changed {
                        path: source.path.clone(),
                        detail,
                    },
                ))
            }
            Err(Unchanged::Io(error)) => {
                return Ok(Built::Exclude(
                    index,
                    Excluded::Failed {
                        path: source.path.clone(),
                        error,
                    },
                ))
            }
        };
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(source.size);
        header.set_mode(0o644);
        header.set_mtime((source.mtime_ns.max(0) / 1_000_000_000) as u64);
        let mut reader = HashingReader::new(ExactReader::new(opened, source.size));
        faults::check(req.faults, Step::WriteArchive, temp_path).map_err(werr)?;
        let appended = tar.append_data(&mut header, relative, &mut reader);
        let (exact, hash, _) = reader.into_parts();
        let (file, shortfall, read_error) = exact.into_parts();
        if let Some(error) = read_error {
            return Ok(Built::Exclude(
                index,
                Excluded::Failed {
                    path: source.path.clone(),
                    error,
                },
            ));
        }
        appended.map_err(werr)?;
        if shortfall > 0 {
            return Ok(Built::Exclude(
                index,
                Excluded::Changed {
                    path: source.path.clone(),
                    detail: format!("it shrank by {shortfall} bytes while being read"),
                },
            ));
        }
        // Compare again after reading: a writer that appended or rewrote it meanwhile.
        match rustix::fs::fstat(&file).map(|st| FileStat::of_stat(&st)) {
            Ok(stat) if stat.size == source.size && stat.mtime_ns == source.mtime_ns => {
                sources.insert(source.path.clone(), stat);
            }
            Ok(_) => {
                return Ok(Built::Exclude(
                    index,
                    Excluded::Changed {
                        path: source.path.clone(),
                        detail: "it was modified while being read".into(),
                    },
                ))
            }
            Err(error) => {
                return Ok(Built::Exclude(
                    index,
                    Excluded::Failed {
                        path: source.path.clone(),
                        error: error.into(),
                    },
                ))
            }
        }
        members.push(Member {
            path: source.path.clone(),
            size: source.size,
            mtime_ns: source.mtime_ns,
            sha256: hash,
        });
    }
    let mut parts = Vec::new();
    for spool in req.db.iter() {
        if spool.rows == 0 {
            continue;
        }
        let member = format!("db/{}.jsonl", spool.table);
        (&spool.file).rewind().map_err(werr)?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(spool.size);
        header.set_mode(0o644);
        header.set_mtime(mtime_secs);
        faults::check(req.faults, Step::WriteArchive, temp_path).map_err(werr)?;
        let mut reader = HashingReader::new((&spool.file).take(spool.size));
        tar.append_data(&mut header, &member, &mut reader)
            .map_err(werr)?;
        let (_, hash, count) = reader.into_parts();
        if count != spool.size || hash != spool.sha256 {
            return Err(ArchiveError::Corrupt {
                path: temp_path.to_path_buf(),
                detail: format!(
                    "the spooled rows of {} changed while being archived",
                    spool.table
                ),
            });
        }
        parts.push(DbPart {
            table: spool.table.clone(),
            path: member,
            rows: spool.rows,
            size: spool.size,
            sha256: spool.sha256.clone(),
        });
    }
    let manifest = Manifest {
        format: FORMAT.to_string(),
        spec: req.spec.to_string(),
        created_at_ms: req.created_at.timestamp_millis(),
        created_at: req.created_at.to_rfc3339(),
        files: members,
        db: parts,
    };
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| werr(io::Error::other(e)))?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(manifest_bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(mtime_secs);
    faults::check(req.faults, Step::WriteArchive, temp_path).map_err(werr)?;
    tar.append_data(&mut header, MANIFEST_NAME, manifest_bytes.as_slice())
        .map_err(werr)?;
    let encoder = tar.into_inner().map_err(werr)?;
    let hashing = encoder.finish().map_err(werr)?;
    let (buffered, sha256) = hashing.finish();
    let file = buffered.into_inner().map_err(|e| werr(e.into_error()))?;
    faults::check(req.faults, Step::SyncArchive, temp_path).map_err(werr)?;
    file.sync_all().map_err(werr)?;
    Ok(Built::Done {
        manifest,
        sha256,
        sources,
    })
}

/// Verify the temporary, give it its final name, fsync the folder. Returns its size.
fn finish(
    req: &WriteRequest<'_>,
    target: &Target<'_>,
    final_name: &OsStr,
    final_path: &Path,
    manifest: &Manifest,
    sha256: &str,
) -> Result<u64, ArchiveError> {
    let temp_path = target.temp_path.as_path();
    let rerr = |source| ArchiveError::Read {
        path: temp_path.to_path_buf(),
        source,
    };
    faults::check(req.faults, Step::VerifyArchive, temp_path).map_err(rerr)?;
    let (file, _) = target.dir.open_file(target.temp).map_err(rerr)?;
    let verified = verify_file(file, temp_path)?;
    if verified.sha256 != sha256 {
        return Err(ArchiveError::Corrupt {
            path: temp_path.to_path_buf(),
            detail: format!(
                "the file's sha256 is {} on disk but {sha256} was written",
                verified.sha256
            ),
        });
    }
    if verified.manifest != *manifest {
        return Err(ArchiveError::Corrupt {
            path: temp_path.to_path_buf(),
            detail: "the manifest read back differs from the one written".into(),
        });
    }
    let werr = |source| ArchiveError::Write {
        path: final_path.to_path_buf(),
        source,
    };
    faults::check(req.faults, Step::RenameArchive, final_path).map_err(werr)?;
    // A hard link never replaces an existing file (rename would); then drop the temp name.
    match target.dir.link(target.temp, final_name) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(ArchiveError::Exists {
                path: final_path.to_path_buf(),
            })
        }
        Err(e) => return Err(werr(e)),
    }
    target.dir.remove_file(target.temp).map_err(werr)?;
    faults::check(req.faults, Step::SyncDir, target.dir.path()).map_err(werr)?;
    target.dir.sync().map_err(werr)?;
    Ok(verified.bytes)
}

/// What reading an archive back found.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// sha256 of the archive file itself.
    pub sha256: String,
    pub bytes: u64,
}

/// Reads the whole archive, hashing every member, and checks each against the manifest
/// inside it: same set of members, same sizes, same hashes.
pub fn verify(path: &Path) -> Result<Verified, ArchiveError> {
    let file = fsutil::open_nofollow(path).map_err(|source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    verify_file(file, path)
}

/// [`verify`] of an archive in a held folder.
pub fn verify_in(dir: &Folder, name: &OsStr) -> Result<Verified, ArchiveError> {
    let path = dir.display(name);
    let (file, _) = dir.open_file(name).map_err(|source| ArchiveError::Read {
        path: path.clone(),
        source,
    })?;
    verify_file(file, &path)
}

/// [`verify`] of an open archive; `path` names it in messages.
pub fn verify_file(file: File, path: &Path) -> Result<Verified, ArchiveError> {
    let rerr = |source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |detail: String| ArchiveError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let meta = file.metadata().map_err(rerr)?;
    if !meta.is_file() {
        return Err(corrupt("not a regular file".into()));
    }
    let hashing = HashingReader::new(file);
    let decoder =
        zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(256 * 1024, hashing))
            .map_err(rerr)?;
    let mut archive = tar::Archive::new(decoder);
    let mut seen: HashMap<String, (u64, String)> = HashMap::new();
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let entries = archive
        .entries()
        .map_err(|e| corrupt(format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(format!("bad tar entry: {e}")))?;
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| corrupt("a member name is not UTF-8".into()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(corrupt(format!("member {name} is not a regular file")));
        }
        if name == MANIFEST_NAME {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| corrupt(format!("reading the manifest: {e}")))?;
            manifest_bytes = Some(bytes);
            continue;
        }
        let mut hasher = HashingReader::new(&mut entry);
        io::copy(&mut hasher, &mut io::sink())
            .map_err(|e| corrupt(format!("reading {name}: {e}")))?;
        let (_, hash, count) = hasher.into_parts();
        if seen.insert(name.clone(), (count, hash)).is_some() {
            return Err(corrupt(format!("member {name} appears twice")));
        }
    }
    // Drain to the end so the file hash covers every byte.
    let mut decoder = archive.into_inner();
    io::copy(&mut decoder, &mut io::sink()).map_err(|e| corrupt(format!("zstd stream: {e}")))?;
    let mut buffered = decoder.finish();
    io::copy(&mut buffered, &mut io::sink()).map_err(rerr)?;
    let (_, sha256, bytes) = buffered.into_inner().into_parts();

    let manifest_bytes = manifest_bytes.ok_or_else(|| corrupt(format!("no {MANIFEST_NAME}")))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| corrupt(format!("{MANIFEST_NAME} is not valid: {e}")))?;
    if manifest.format != FORMAT {
        return Err(corrupt(format!(
            "format {:?}, expected {FORMAT:?}",
            manifest.format
        )));
    }
    let expected = manifest
        .files
        .iter()
        .map(|m| (&m.path, m.size, &m.sha256))
        .chain(manifest.db.iter().map(|d| (&d.path, d.size, &d.sha256)));
    let mut count = 0;
    for (path, size, sha) in expected {
        count += 1;
        match seen.get(path.as_str()) {
            None => return Err(corrupt(format!("member {path} is missing"))),
            Some((s, h)) if *s != size || h != sha => {
                return Err(corrupt(format!(
                    "member {path}: size {s} sha256 {h}, manifest says size {size} sha256 {sha}"
                )))
            }
            Some(_) => {}
        }
    }
    if count != seen.len() {
        return Err(corrupt(format!(
            "{} members are not in the manifest",
            seen.len() - count
        )));
    }
    for m in &manifest.files {
        if !folder::is_plain_relative(Path::new(&m.path))
            || !(m.path.starts_with("commands/") || m.path.starts_with("consensus/"))
        {
            return Err(corrupt(format!(
                "member {} is not a path under commands/ or consensus/",
                m.path
            )));
        }
    }
    Ok(Verified {
        manifest,
        sha256,
        bytes,
    })
}

/// Streams every member of an (already verified) archive to `on_member`.
pub fn for_each_member(
    path: &Path,
    on_member: impl FnMut(&str, &mut dyn Read) -> io::Result<()>,
) -> Result<(), ArchiveError> {
    let rerr = |source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = fsutil::open_nofollow(path).map_err(rerr)?;
    for_each_member_of(file, path, on_member)
}

/// [`for_each_member`] of an open archive; `path` names it in messages.
pub fn for_each_member_of(
    file: File,
    path: &Path,
    mut on_member: impl FnMut(&str, &mut dyn Read) -> io::Result<()>,
) -> Result<(), ArchiveError> {
    let rerr = |source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    };
    let decoder = zstd::stream::read::Decoder::new(file).map_err(rerr)?;
    let mut archive = tar::Archive::new(decoder);
    for entry in archive.entries().map_err(rerr)? {
        let mut entry = entry.map_err(rerr)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        on_member(&name, &mut entry).map_err(rerr)?;
    }
    Ok(())
}

enum Unchanged {
    Changed(String),
    Io(io::Error),
}

/// Opens a source in its held folder without following symlinks and checks it is still
/// the regular file of the plan: the same file (device and inode, when the plan knew
/// them), the same size and mtime.
fn open_unchanged(dir: &Folder, name: &OsStr, source: &SourceFile) -> Result<File, Unchanged> {
    let (file, stat) = match dir.open_file(name) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Unchanged::Changed("it vanished since the plan".into()))
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(Unchanged::Changed(format!("{e}; not archived")))
        }
        Err(e) => return Err(Unchanged::Io(e)),
    };
    if let Some((dev, ino)) = source.identity {
        if (stat.dev, stat.ino) != (dev, ino) {
            return Err(Unchanged::Changed(
                "another file has its name since the plan (replaced, or its folder swapped)".into(),
            ));
        }
    }
    if stat.size != source.size {
        return Err(Unchanged::Changed(format!(
            "its size changed from {} to {} bytes since the plan",
            source.size, stat.size
        )));
    }
    if stat.mtime_ns != source.mtime_ns {
        return Err(Unchanged::Changed(
            "its mtime changed since the plan".into(),
        ));
    }
    Ok(file)
}

/// sha256 of a file's content, read without following a symlink.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    sha256_of(fsutil::open_nofollow(path)?)
}

/// sha256 of an open file's content, and how many bytes were read.
pub fn sha256_of(file: File) -> io::Result<(String, u64)> {
    let mut reader = HashingReader::new(BufReader::with_capacity(64 * 1024, file));
    io::copy(&mut reader, &mut io::sink())?;
    let (_, hash, count) = reader.into_parts();
    Ok((hash, count))
}

#[cfg(test)]
mod tests;

//! Fault injection for reliability tests: every I/O step of cleanup and restore asks a
//! [`Faults`] first, so a test can make step N fail (disk full, permission denied) or stop
//! dead there (a panic that skips all clean-up code, like a crash) and check that nothing
//! was lost. Production runs pass no faults; the hook then costs one branch per step.

use std::io;
use std::path::Path;

/// An I/O step cleanup or restore is about to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Reading a source file into an archive.
    ReadSource,
    /// Writing archive bytes to the temporary file.
    WriteArchive,
    /// fsync of the temporary archive.
    SyncArchive,
    /// Reading the archive back to check every member's hash.
    VerifyArchive,
    /// Renaming the temporary archive to its final name.
    RenameArchive,
    /// fsync of a folder after a rename or removal.
    SyncDir,
    /// Writing an archive's manifest sidecar (before it is recorded).
    WriteSidecar,
    /// Recording an archive (and deleting its database rows) in one transaction.
    RecordArchive,
    /// Deleting one source file after its archive is recorded.
    DeleteSource,
    /// Deleting an old archive.
    PurgeArchive,
    /// Uploading an archive to the offload store (after its local file was checked).
    UploadArchive,
    /// Sending an archive to the store, after a look-up found no object at its key.
    PutObject,
    /// Reading an uploaded archive back from the store.
    ReadBackArchive,
    /// Recording an archive as offloaded (one transaction).
    RecordOffload,
    /// Deleting an offloaded archive's local file (after its record).
    DeleteOffloaded,
    /// Deleting an offloaded archive's object (a purge, before its record).
    PurgeRemote,
    /// Fetching an offloaded archive for a restore.
    FetchArchive,
    /// Writing a restored file.
    RestoreFile,
    /// Writing the daily summary.
    WriteSummary,
}

/// Decides whether a step fails. Implementations may also panic to emulate a crash.
pub trait Faults: Send + Sync {
    fn check(&self, step: Step, path: &Path) -> io::Result<()>;
}

/// Asks `faults`, if any.
#[inline]
pub fn check(faults: Option<&dyn Faults>, step: Step, path: &Path) -> io::Result<()> {
    match faults {
        Some(f) => f.check(step, path),
        None => Ok(()),
    }
}

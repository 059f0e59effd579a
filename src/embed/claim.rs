//! Which databases an engine embedded in this process owns, so a second `start()` for the
//! same database is refused instead of opening a second writer beside the first.
//!
//! The engine serialises every write of a process through one writer thread; a second
//! engine on the same file in the same process would bring back the contended
//! `BEGIN IMMEDIATE` traffic that design avoids, and two schedulers would race for the same
//! ticks. Claims are keyed by the database's canonical path (symbolic links and `..`
//! resolved), so two config files that name one database through different paths collide.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::EmbedError;

/// The config file of the engine holding each claimed database.
fn claims() -> &'static Mutex<HashMap<PathBuf, PathBuf>> {
    static CLAIMS: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    CLAIMS.get_or_init(Default::default)
}

/// The path two references to the same database file agree on: the canonical path when the
/// file exists, else its canonical folder joined with its name (a database about to be
/// created), else the absolute path as written.
pub fn database_key(path: &Path) -> PathBuf {
    if let Ok(canonical) = std::fs::canonicalize(path) {
        return canonical;
    }
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(dir) = std::fs::canonicalize(parent) {
            return dir.join(name);
        }
    }
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// One database owned by one embedded engine; released when dropped.
#[derive(Debug)]
pub struct DatabaseClaim {
    key: PathBuf,
}

impl DatabaseClaim {
    /// Claims `database` for the engine started from `config`, or names the engine that
    /// already holds it.
    pub fn acquire(database: &Path, config: &Path) -> Result<Self, EmbedError> {
        let key = database_key(database);
        let mut claims = claims().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owner_config) = claims.get(&key) {
            return Err(EmbedError::AlreadyRunning {
                database: key,
                owner_config: owner_config.clone(),
            });
        }
        claims.insert(key.clone(), config.to_path_buf());
        Ok(Self { key })
    }

    /// The canonical database path this claim holds.
    pub fn key(&self) -> &Path {
        &self.key
    }
}

impl Drop for DatabaseClaim {
    fn drop(&mut self) {
        claims()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_claimed(database: &Path) -> bool {
        claims()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&database_key(database))
    }

    #[test]
    fn a_claimed_database_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let first = DatabaseClaim::acquire(&db, Path::new("/a/speckit.toml")).unwrap();
        let err = DatabaseClaim::acquire(&db, Path::new("/b/speckit.toml")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("c.db"), "{message}");
        assert!(message.contains("/a/speckit.toml"), "{message}");
        assert!(is_claimed(&db));
        drop(first);
        assert!(!is_claimed(&db));
        DatabaseClaim::acquire(&db, Path::new("/b/speckit.toml")).unwrap();
    }

    #[test]
    fn links_and_dot_dot_name_the_same_database() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        // Not created yet: the key comes from the canonical folder.
        let a = database_key(&real.join("c.db"));
        let b = database_key(&dir.path().join("link/c.db"));
        let c = database_key(&dir.path().join("real/../link/./c.db"));
        assert_eq!(a, b);
        assert_eq!(a, c);
        // Created: the file's own canonical path, the same key.
        std::fs::write(real.join("c.db"), b"").unwrap();
        assert_eq!(database_key(&dir.path().join("link/c.db")), a);
    }
}

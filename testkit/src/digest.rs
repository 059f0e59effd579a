//! SHA-256 as the tests check what the plugins wrote: computed here with the `sha2` crate,
//! never with the plugin's own hashing, so a test of an archive or a store does not trust
//! the code it tests.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The lowercase hex SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    std::fs::read(path).map(|bytes| sha256_hex(&bytes))
}

/// Every file below `dir` (symbolic links not followed), by path relative to `dir`, with
/// its SHA-256; empty when `dir` does not exist. A file that cannot be read panics with its
/// path and the cause (a test must not pass over what it could not check).
pub fn tree_sha256(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot list {}: {e}", folder.display()),
        };
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()));
            let path = entry.path();
            let file_type = entry
                .file_type()
                .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            let sha = sha256_file(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            out.insert(relative.to_string_lossy().into_owned(), sha);
        }
    }
    out
}

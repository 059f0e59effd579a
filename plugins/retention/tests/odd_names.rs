//! Every name that can be archived can be restored: 255-byte names (the file system's
//! limit, so any temporary name longer than the original would fail), newlines, leading
//! dashes. A name that is not UTF-8 cannot go into an archive's manifest: it is kept in
//! place and reported, never deleted.

mod cleanup_support;

use cleanup_support::*;
use speckit_engine::SpecId;
use speckit_retention::job::{cleanup_blocking, CleanupOptions};
use speckit_retention::restore::{restore, RestoreRequest};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

const SPEC: &str = "SPEC-KIT-300";

#[test]
fn odd_names_are_archived_and_restored_and_non_utf8_is_kept() {
    let ws = Ws::new(&[(SPEC, "Done")], "");
    let folder = ws.root.join("commands").join(SPEC);
    let deep = ws.root.join("consensus").join(SPEC).join("-n");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&deep).unwrap();
    let longest = format!("{}.json", "x".repeat(250));
    assert_eq!(longest.len(), 255);
    let names: Vec<(std::path::PathBuf, Vec<u8>)> = vec![
        (folder.join(&longest), b"longest".to_vec()),
        (folder.join("line\nbreak.json"), b"newline".to_vec()),
        (folder.join("-rf"), b"dash".to_vec()),
        (folder.join("--help.json"), b"dashes".to_vec()),
        (folder.join(" spaced name .log"), b"spaces".to_vec()),
        (deep.join(&longest), b"deep longest".to_vec()),
    ];
    let non_utf8 = folder.join(OsStr::from_bytes(b"bad-\xff\xfe.json"));
    let old = SystemTime::now() - Duration::from_secs(400 * 86_400);
    let now_real = chrono::Utc::now();
    for (path, body) in names
        .iter()
        .chain([(non_utf8.clone(), b"bytes".to_vec())].iter())
    {
        std::fs::write(path, body).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let storage = ws.storage();
    let policy = ws.policy();
    let result = cleanup_blocking(
        &policy.policy,
        &storage,
        now_real,
        &CleanupOptions::default(),
        None,
        &speckit_retention::job::Control::NONE,
        1,
        1,
    )
    .unwrap();
    let executed = result.executed.expect("a real run");
    assert!(executed.errors.is_empty(), "{:?}", executed.errors);
    assert_eq!(executed.figures.archived_files, names.len() as u64);
    for (path, _) in &names {
        assert!(!path.exists(), "{} was not archived", path.display());
    }
    // Not UTF-8: kept, and said so.
    assert_eq!(std::fs::read(&non_utf8).unwrap(), b"bytes");
    assert!(
        result.plan.skipped.iter().any(|s| s
            .relative
            .as_os_str()
            .as_bytes()
            .ends_with(b"bad-\xff\xfe.json")),
        "{:?}",
        result.plan.skipped
    );

    let spec = SpecId::parse(SPEC).unwrap();
    let report = restore(&RestoreRequest {
        root: &ws.root,
        storage: &storage,
        spec: &spec,
        archive: None,
        to: None,
        faults: None,
        offload: None,
    })
    .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.restored_files, names.len() as u64);
    for (path, body) in &names {
        assert_eq!(&std::fs::read(path).unwrap(), body, "{}", path.display());
        let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
        assert_eq!(mtime, old, "{}: mtime not restored", path.display());
    }
    // No temporary left beside the restored files.
    for dir in [&folder, &deep] {
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name();
            assert!(
                !name.as_bytes().starts_with(b".speckit-tmp-"),
                "temporary left: {name:?}"
            );
        }
    }
}

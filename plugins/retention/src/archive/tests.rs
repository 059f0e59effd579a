//! Archive round trips: written archives verify and extract to the same bytes; a changed
//! source is left out; a tampered member fails verification by name.

use super::*;
use chrono::TimeZone;
use std::fs;

fn source(root: &Path, rel: &str, body: &[u8]) -> SourceFile {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, body).unwrap();
    let meta = fs::metadata(&path).unwrap();
    SourceFile {
        path: rel.to_string(),
        size: meta.len(),
        mtime_ns: fsutil::meta_mtime_ns(&meta),
        identity: None,
    }
}

fn request<'a>(
    tree: &'a Tree,
    relative: &'a Path,
    files: &'a [SourceFile],
    db: &'a [DbSpool],
) -> WriteRequest<'a> {
    WriteRequest {
        tree,
        relative,
        spec: "SPEC-KIT-1",
        created_at: chrono::Utc.with_ymd_and_hms(2025, 10, 1, 0, 0, 0).unwrap(),
        files,
        db,
        zstd_level: 3,
        faults: None,
        cancelled: &|| false,
    }
}

#[test]
fn written_archive_verifies_and_extracts_with_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let long = format!("commands/SPEC-KIT-1/{}.json", "x".repeat(150));
    let files = vec![
        source(root, "commands/SPEC-KIT-1/a.json", b"{\"a\":1}"),
        source(root, "consensus/SPEC-KIT-1/sub/b.json", &vec![7u8; 100_000]),
        source(root, &long, b""),
    ];
    let rel = spec_dir("SPEC-KIT-1").join("a.tar.zst");
    let out = write(request(&Tree::open(root).unwrap(), &rel, &files, &[])).unwrap();
    let written = out.written.unwrap();
    assert!(out.excluded.is_empty());
    assert_eq!(written.manifest.files.len(), 3);
    let verified = verify(&root.join(&rel)).unwrap();
    assert_eq!(verified.manifest, written.manifest);
    assert_eq!(verified.sha256, written.sha256);
    let mut names = Vec::new();
    for_each_member(&root.join(&rel), |name, r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        if name != MANIFEST_NAME {
            assert_eq!(v, fs::read(root.join(name)).unwrap(), "{name}");
        }
        names.push(name.to_string());
        Ok(())
    })
    .unwrap();
    assert_eq!(names.last().unwrap(), MANIFEST_NAME);
    assert!(names.contains(&long));
    // Sources untouched; no temporary left.
    assert!(root.join("commands/SPEC-KIT-1/a.json").exists());
    let left: Vec<_> = fs::read_dir(root.join(spec_dir("SPEC-KIT-1")))
        .unwrap()
        .collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn changed_source_is_left_out_not_archived_stale() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let a = source(root, "commands/S/a.json", b"aaaa");
    let mut b = source(root, "commands/S/b.json", b"bbbb");
    b.size += 1; // the plan saw another size
    let rel = spec_dir("S").join("x.tar.zst");
    let out = write(request(&Tree::open(root).unwrap(), &rel, &[a, b], &[])).unwrap();
    let written = out.written.unwrap();
    assert_eq!(written.manifest.files.len(), 1);
    assert!(
        matches!(&out.excluded[0], Excluded::Changed { path, .. } if path == "commands/S/b.json")
    );
}

#[test]
fn corrupt_archive_fails_verification_naming_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let files = vec![source(root, "commands/S/a.json", &vec![b'q'; 5000])];
    let rel = spec_dir("S").join("x.tar.zst");
    write(request(&Tree::open(root).unwrap(), &rel, &files, &[])).unwrap();
    // Rewrite the archive with different content under the same manifest.
    let path = root.join(&rel);
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    for_each_member(&path, |name, r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        members.push((name.to_string(), v));
        Ok(())
    })
    .unwrap();
    members[0].1[10] ^= 1;
    let enc = zstd::stream::write::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
    let mut tar = tar::Builder::new(enc);
    for (name, data) in &members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
    let err = verify(&path).unwrap_err();
    assert!(err.to_string().contains("commands/S/a.json"), "{err}");
}

#[test]
fn names_are_deterministic() {
    let day = chrono::NaiveDate::from_ymd_opt(2025, 10, 1).unwrap();
    let f = vec![SourceFile {
        path: "commands/S/a".into(),
        size: 1,
        mtime_ns: 2,
        identity: None,
    }];
    assert_eq!(
        archive_name("S", day, &f, &[]),
        archive_name("S", day, &f, &[])
    );
    assert_ne!(
        archive_name("S", day, &f, &[]),
        archive_name("S", day, &f, &["r".into()])
    );
    let name = archive_name("S", day, &f, &[]);
    assert!(name.starts_with("S_20251001_") && is_archive_name(&name));
    assert!(is_temp_name(&format!(".{name}{TEMP_MARKER}12")));
    assert!(is_temp_name(folder::temp_name("archive").to_str().unwrap()));
    // A SPEC folder name of 255 bytes still gives names that fit, sidecar included.
    let long = "S".repeat(255);
    let name = archive_name(&long, day, &f, &[]);
    assert!(
        name.len() + crate::sidecar::SUFFIX.len() <= 255,
        "{}",
        name.len()
    );
}

//! Offload against a real S3-compatible server: `moto` (PyPI), started by these tests on a
//! free loopback port, polled until it answers, and killed at the end (`.ci/run` installs
//! it; in CI a missing moto fails these tests, elsewhere they skip and say so). Also a
//! closed port, a server answering 403 to everything and one that never answers.

mod cleanup_support;
mod offload_support;

use cleanup_support::*;
use offload_support::*;
use sha2::Digest;
use speckit_retention::faults::{Faults, Step};
use speckit_retention::offload::{Remote, StoreUrl};
use speckit_retention::restore::{restore, RestoreRequest};
use speckit_retention::OffloadPolicy;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

fn remote_for(ws: &Ws) -> (Remote, std::sync::Arc<OffloadPolicy>) {
    let policy = ws.policy().policy.section::<OffloadPolicy>();
    (Remote::new(&policy).unwrap(), policy)
}

#[test]
fn offload_to_s3_restore_from_it_and_purge() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("evidence");
    let (ws, storage, original) = archived_workspace(&moto.section("evidence", "team/repo"));
    let errors = offload_run(&ws, &storage, None);
    assert!(errors.is_empty(), "{errors:?}");
    let (remote, policy) = remote_for(&ws);
    let hashes = recorded_hashes(&storage);
    for (path, (url, local, sidecar)) in placement(&ws, &storage) {
        let url = url.expect("recorded");
        let key = path.strip_prefix("cleanup/archives/").unwrap();
        assert_eq!(url, format!("s3://evidence/team/repo/{key}"));
        assert!(
            !local && sidecar,
            "{path}: local copy deleted, sidecar kept"
        );
        let (sha, _) = remote.read_back(&StoreUrl::parse(&url).unwrap()).unwrap();
        assert_eq!(
            Some(&sha),
            hashes.get(&path),
            "{path}: the object is the archive"
        );
    }
    let etags: Vec<Option<String>> = storage
        .read_blocking(|c| {
            let mut s = c.prepare("SELECT remote_etag FROM hygiene_archives")?;
            let r = s.query_map([], |r| r.get(0))?;
            r.collect()
        })
        .unwrap();
    assert!(
        etags
            .iter()
            .all(|e| e.as_deref().is_some_and(|e| !e.is_empty())),
        "{etags:?}"
    );

    // Restore in place: the fetched archives put every archived file back.
    let report = restore(&RestoreRequest {
        root: &ws.root,
        storage: &storage,
        spec: &speckit_engine::SpecId::parse("SPEC-KIT-101").unwrap(),
        archive: None,
        to: None,
        faults: None,
        offload: Some(&policy),
    })
    .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.restored_files > 0);
    for (path, sha) in original.iter().filter(|(p, _)| p.contains("SPEC-KIT-101")) {
        assert_eq!(tree(&ws.root).get(path), Some(sha), "{path} back in place");
    }

    // Purge: objects first, then records.
    let purge = run_at(
        &ws,
        &storage,
        now() + chrono::Duration::days(60),
        false,
        None,
    )
    .executed
    .unwrap();
    assert!(purge.errors.is_empty(), "{:?}", purge.errors);
    assert_eq!(purge.figures.purged_remote_objects, 2);
    for path in hashes.keys() {
        let key = path.strip_prefix("cleanup/archives/").unwrap();
        let url = StoreUrl::parse(&format!("s3://evidence/team/repo/{key}")).unwrap();
        assert_eq!(remote.head(&url).unwrap(), None, "{key} deleted");
    }
}

#[test]
fn large_archives_go_up_in_parts() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("parts");
    let dir = tempfile::tempdir().unwrap();
    let policy = OffloadPolicy {
        after_days: 40,
        url: "s3://parts/p".into(),
        endpoint: moto.endpoint.clone(),
        allow_http: true,
        path_style: true,
        part_size_mib: 5,
        ..OffloadPolicy::default()
    };
    let remote = Remote::new(&policy).unwrap();
    let mut bytes = vec![0u8; 11 << 20];
    let mut x = 0x9e37_79b9_u32;
    for b in &mut bytes {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = (x >> 3) as u8;
    }
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let src = dir.path().join("big.tar.zst");
    std::fs::write(&src, &bytes).unwrap();
    let url = remote.base().unwrap().join("S/big.tar.zst");
    let up = remote
        .upload(
            &url,
            std::fs::File::open(&src).unwrap(),
            &src,
            bytes.len() as u64,
            &sha,
        )
        .unwrap();
    // S3's ETag of a multipart object ends in -<parts>.
    assert!(
        up.e_tag.as_deref().unwrap_or_default().contains("-3"),
        "{up:?}"
    );
    assert_eq!(remote.read_back(&url).unwrap(), (sha, bytes.len() as u64));
}

#[test]
fn an_object_put_after_the_look_up_is_not_overwritten() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("race");
    let dir = tempfile::tempdir().unwrap();
    let policy = OffloadPolicy {
        after_days: 40,
        url: "s3://race/p".into(),
        endpoint: moto.endpoint.clone(),
        allow_http: true,
        path_style: true,
        ..OffloadPolicy::default()
    };
    let remote = Remote::new(&policy).unwrap();
    let url = remote.base().unwrap().join("S/a.tar.zst");
    assert_eq!(remote.head(&url).unwrap(), None);
    // Another writer's (empty) object lands between the look-up and the upload.
    let status = http(moto.port, "PUT", "/race/p/S/a.tar.zst").expect("moto answers");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let src = dir.path().join("a.tar.zst");
    std::fs::write(&src, b"the archive").unwrap();
    let sha = hex::encode(sha2::Sha256::digest(b"the archive"));
    let e = remote
        .upload(&url, std::fs::File::open(&src).unwrap(), &src, 11, &sha)
        .unwrap_err();
    assert!(e.to_string().contains("it is not overwritten"), "{e}");
    assert_eq!(remote.head(&url).unwrap().map(|i| i.size), Some(0));
}

/// Stops the server at the second upload: the first archive is offloaded, the second's
/// upload fails.
struct StopServerAt {
    moto: Mutex<Moto>,
    uploads: AtomicUsize,
}

impl Faults for StopServerAt {
    fn check(&self, step: Step, _path: &Path) -> std::io::Result<()> {
        if step == Step::UploadArchive && self.uploads.fetch_add(1, Ordering::SeqCst) == 1 {
            self.moto.lock().unwrap().stop();
        }
        Ok(())
    }
}

#[test]
fn the_server_stopping_mid_run_keeps_the_local_archive_and_a_rerun_offloads_it() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("evidence");
    let (ws, storage, _) = archived_workspace(&moto.section("evidence", "p"));
    let port = moto.port;
    let before = placement(&ws, &storage);
    let stopper = StopServerAt {
        moto: Mutex::new(moto),
        uploads: AtomicUsize::new(0),
    };
    let errors = offload_run(&ws, &storage, Some(&stopper));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("the local archive is kept"),
        "{errors:?}"
    );
    eprintln!("the error with the server gone: {}", errors[0]);
    let after = placement(&ws, &storage);
    let offloaded: Vec<_> = after
        .iter()
        .filter(|(_, (u, l, _))| u.is_some() && !l)
        .collect();
    let kept: Vec<_> = after
        .iter()
        .filter(|(_, (u, l, _))| u.is_none() && *l)
        .collect();
    assert_eq!((offloaded.len(), kept.len()), (1, 1), "{after:?}");
    let (kept_path, _) = kept[0];
    assert_eq!(after[kept_path], before[kept_path], "its record unchanged");

    // The server back (moto keeps nothing across a restart: the bucket is made again).
    let moto = Moto::start_on(port);
    moto.create_bucket("evidence");
    let errors = offload_run(&ws, &storage, None);
    assert!(errors.is_empty(), "{errors:?}");
    let (url, local, _) = &placement(&ws, &storage)[kept_path];
    assert!(url.is_some() && !local, "offloaded by the rerun");
    let (remote, _) = remote_for(&ws);
    let (sha, _) = remote
        .read_back(&StoreUrl::parse(url.as_ref().unwrap()).unwrap())
        .unwrap();
    assert_eq!(Some(&sha), recorded_hashes(&storage).get(kept_path));
}

#[test]
fn a_missing_bucket_fails_with_the_cause_and_a_rerun_offloads() {
    let Some(moto) = Moto::start() else { return };
    let (ws, storage, _) = archived_workspace(&moto.section("not-there", "p"));
    let before = placement(&ws, &storage);
    let errors = offload_run(&ws, &storage, None);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("NoSuchBucket"), "{errors:?}");
    assert_eq!(placement(&ws, &storage), before);
    moto.create_bucket("not-there");
    assert!(offload_run(&ws, &storage, None).is_empty());
    assert!(placement(&ws, &storage)
        .values()
        .all(|(u, l, _)| u.is_some() && !l));
}

/// A loopback server that answers every request with `answer` (or, with `None`, reads
/// and never answers), for `seconds`.
fn fake_server(answer: Option<&'static str>, seconds: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        let mut held = Vec::new();
        while std::time::Instant::now() < end {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                        .unwrap();
                    let mut buf = [0u8; 65536];
                    let _ = s.read(&mut buf);
                    match answer {
                        Some(a) => {
                            let _ = s.write_all(a.as_bytes());
                        }
                        None => held.push(s),
                    }
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    });
    port
}

fn section_for_port(port: u16, timeout_seconds: u32) -> String {
    format!(
        "[offload]\nafter_days = 40\nurl = \"s3://evidence/p\"\nendpoint = \"http://127.0.0.1:{port}\"\nallow_http = true\npath_style = true\ntimeout_seconds = {timeout_seconds}\n"
    )
}

fn assert_kept_with(section: &str, cause: &str) {
    set_test_credentials();
    let (ws, storage, _) = archived_workspace(section);
    let before = placement(&ws, &storage);
    let started = std::time::Instant::now();
    let errors = offload_run(&ws, &storage, None);
    eprintln!("{cause}: {:?} in {:?}", errors.first(), started.elapsed());
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains(cause) && e.contains("the local archive is kept")),
        "{errors:?}"
    );
    assert_eq!(
        placement(&ws, &storage),
        before,
        "nothing deleted, no record changed"
    );
}

#[test]
fn a_closed_port_fails_with_the_cause() {
    assert_kept_with(
        &section_for_port(free_port(), 5),
        "looking up the object failed",
    );
}

#[test]
fn a_403_fails_with_the_cause() {
    let port = fake_server(
        Some("HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: 93\r\nConnection: close\r\n\r\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>1</RequestId></Error>"),
        60,
    );
    assert_kept_with(&section_for_port(port, 5), "403");
}

#[test]
fn a_server_that_never_answers_times_out() {
    let port = fake_server(None, 60);
    assert_kept_with(&section_for_port(port, 1), "looking up the object failed");
}

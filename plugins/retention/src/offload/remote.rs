//! The object store behind `[offload] url`, through the `object_store` crate (S3 and
//! S3-compatible servers, local or network folders), with blocking calls for the
//! retention code, which runs on blocking threads.
//!
//! Every object is named by its full URL (`s3://bucket/prefix/SPEC/name.tar.zst`,
//! `file:///folder/SPEC/name.tar.zst`), and that URL is what the catalog records: a later
//! change of `[offload] url` never loses track of an object already offloaded (purge and
//! restore reach it by its recorded URL; region, endpoint and path style come from the
//! policy in effect).
//!
//! Credentials for S3 come from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`), else from the static keys of
//! profile `AWS_PROFILE` (or `default`) in the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, or `~/.aws/credentials`; SSO, role and process
//! profiles are not read); without them the store is not used at all (no
//! instance-metadata lookups), and they are never logged or reported. A
//! `user:password@` put into `offload.url` or `endpoint` is refused, and messages show
//! such a url [`redacted`].

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::settings::OffloadPolicy;

/// An offload failure, naming the object or file and the cause. Never carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("offload.url {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("{0}")]
    Credentials(String),
    #[error("{url}: {op} failed: {}", with_causes(source))]
    Store {
        url: String,
        op: &'static str,
        source: object_store::Error,
    },
    #[error("{}: {source}", path.display())]
    Local { path: PathBuf, source: io::Error },
    #[error("{url}: read back {got_bytes} bytes with sha256 {got}, but the archive is {expected_bytes} bytes with sha256 {expected}")]
    Mismatch {
        url: String,
        got: String,
        got_bytes: u64,
        expected: String,
        expected_bytes: u64,
    },
    #[error("{url}: {detail}")]
    Refused { url: String, detail: String },
    #[error("the offload client cannot start: {0}")]
    Runtime(io::Error),
}

/// An error and its causes (`error sending request: ...: Connection refused`): the
/// store's own message often leaves the telling part to its sources.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Which store an object is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum StoreKey {
    S3 {
        bucket: String,
    },
    /// The local file system (`file://`), rooted at `/`.
    File,
}

/// A parsed `[offload] url`, or an object's URL: the store and the key (or prefix) in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    store: StoreKey,
    /// The key (an object) or prefix (the configured url), without leading or trailing `/`.
    key: String,
}

impl StoreUrl {
    /// Parses `s3://bucket[/prefix]` or `file:///absolute/path`; the message says why not.
    pub fn parse(url: &str) -> Result<StoreUrl, String> {
        let raw = url;
        // Messages show the url without any user:password part someone put in it.
        let url = redacted(raw);
        let url = url.as_str();
        if url.is_empty() {
            return Err(
                "is empty; set it to s3://bucket/prefix or file:///absolute/folder (or after_days = 0 to turn offload off)"
                    .into(),
            );
        }
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{url:?} names no bucket (s3://bucket/prefix)"));
            }
            if bucket.contains('@') || bucket.contains(':') {
                return Err(format!(
                    "{url:?}: the bucket name must not carry credentials or a port; credentials are read from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the server from endpoint"
                ));
            }
            return Ok(StoreUrl {
                store: StoreKey::S3 {
                    bucket: bucket.to_string(),
                },
                key: clean_key(prefix)?,
            });
        }
        if let Some(path) = raw.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{url:?}: a file:// url needs an absolute path (file:///srv/archives)"
                ));
            }
            return Ok(StoreUrl {
                store: StoreKey::File,
                key: clean_key(path)?,
            });
        }
        Err(format!(
            "{url:?} is not supported: use s3://bucket/prefix or file:///absolute/folder"
        ))
    }

    /// The URL of the object `relative` below this prefix.
    pub fn join(&self, relative: &str) -> StoreUrl {
        let key = match (self.key.is_empty(), relative.trim_matches('/')) {
            (true, r) => r.to_string(),
            (false, r) => format!("{}/{r}", self.key),
        };
        StoreUrl {
            store: self.store.clone(),
            key,
        }
    }

    /// The folder a `file://` url names (`None` for S3).
    pub fn local_path(&self) -> Option<PathBuf> {
        matches!(self.store, StoreKey::File).then(|| PathBuf::from(format!("/{}", self.key)))
    }

    fn object_path(&self) -> ObjectPath {
        ObjectPath::from(self.key.as_str())
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.store {
            StoreKey::S3 { bucket } if self.key.is_empty() => write!(f, "s3://{bucket}"),
            StoreKey::S3 { bucket } => write!(f, "s3://{bucket}/{}", self.key),
            StoreKey::File => write!(f, "file:///{}", self.key),
        }
    }
}

/// `url` with the `user:password@` of its authority (if any) replaced by `***@`, for
/// messages: a credential pasted into a url or endpoint is never shown or logged.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// Where the S3 keys come from.
enum Credentials {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (`AmazonS3Builder::from_env` reads
    /// them, with `AWS_SESSION_TOKEN`).
    Environment,
    /// A profile of the shared credentials file.
    Profile(ProfileKeys),
}

/// The static keys of one profile. No `Debug`: never printed.
struct ProfileKeys {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// The S3 keys, as the AWS tools find static ones: the environment first, else profile
/// `AWS_PROFILE` (or `default`) of the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, or `~/.aws/credentials`). `env` reads a variable. The
/// message, when there are none, names the variables, profile and file, never a value.
fn credentials(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, String> {
    if env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some() {
        return Ok(Credentials::Environment);
    }
    let named = env("AWS_PROFILE");
    let profile = named.clone().unwrap_or_else(|| "default".into());
    let file = match (env("AWS_SHARED_CREDENTIALS_FILE"), env("HOME")) {
        (Some(f), _) => PathBuf::from(f),
        (None, Some(home)) => Path::new(&home).join(".aws/credentials"),
        (None, None) => PathBuf::from("~/.aws/credentials"),
    };
    let none = |why: String| {
        Err(format!(
            "no S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set, and {why} (credentials come from the environment or a shared credentials profile, never from speckit.toml)"
        ))
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) => return none(format!("profile {profile:?}: {}: {e}", file.display())),
    };
    match profile_keys(&text, &profile) {
        Some(keys) => Ok(Credentials::Profile(keys)),
        None => none(format!(
            "{} has no profile {profile:?} with aws_access_key_id and aws_secret_access_key{}",
            file.display(),
            if named.is_some() {
                ""
            } else {
                " (AWS_PROFILE is not set)"
            }
        )),
    }
}

/// Profile `name`'s static keys in a shared credentials file (`[name]` sections of
/// `key = value` lines, `#` and `;` comments); `None` without both keys.
fn profile_keys(text: &str, name: &str) -> Option<ProfileKeys> {
    let mut inside = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == name;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !inside {
            continue;
        }
        let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    Some(ProfileKeys {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

/// A prefix or key without empty, `.` or `..` segments (object_store refuses those).
fn clean_key(raw: &str) -> Result<String, String> {
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(bad) = parts.iter().find(|p| **p == "." || **p == "..") {
        return Err(format!("{raw:?}: a path segment {bad:?} is not allowed"));
    }
    Ok(parts.join("/"))
}

/// What an upload left on the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub e_tag: Option<String>,
    pub version: Option<String>,
    /// The object was already there with the archive's exact bytes (a rerun after a crash
    /// between upload and record): nothing was sent.
    pub already_there: bool,
}

/// What [`Remote::delete_unrecorded`] found at an archive's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrecorded {
    /// No object.
    Nothing,
    /// The archive's exact bytes, now deleted.
    Deleted,
    /// An object that is not the archive (left alone).
    Other { bytes: u64, sha256: String },
}

/// An object's figures from a HEAD request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// The stores of one run, and the runtime their clients run on.
pub struct Remote {
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    policy: OffloadPolicy,
    stores: Mutex<HashMap<StoreKey, Arc<dyn ObjectStore>>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &redacted(&self.policy.url))
            .finish()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // A runtime dropped on a thread inside another runtime's context must not block.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Remote {
    /// A client for the stores `policy` reaches (nothing is contacted yet).
    pub fn new(policy: &OffloadPolicy) -> Result<Remote, OffloadError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("speckit-offload")
            .enable_all()
            .build()
            .map_err(OffloadError::Runtime)?;
        Ok(Remote {
            runtime: Some(runtime),
            policy: policy.clone(),
            stores: Mutex::new(HashMap::new()),
        })
    }

    /// The configured `[offload] url`.
    pub fn base(&self) -> Result<StoreUrl, OffloadError> {
        StoreUrl::parse(&self.policy.url).map_err(|why| OffloadError::Url {
            url: redacted(&self.policy.url),
            why,
        })
    }

    fn part_size(&self) -> usize {
        self.policy.part_size_mib as usize * 1024 * 1024
    }

    fn store(&self, url: &StoreUrl) -> Result<Arc<dyn ObjectStore>, OffloadError> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.get(&url.store) {
            return Ok(s.clone());
        }
        let store: Arc<dyn ObjectStore> = match &url.store {
            StoreKey::File => Arc::new(LocalFileSystem::new()),
            StoreKey::S3 { bucket } => Arc::new(self.s3(bucket, url)?),
        };
        stores.insert(url.store.clone(), store.clone());
        Ok(store)
    }

    fn s3(
        &self,
        bucket: &str,
        url: &StoreUrl,
    ) -> Result<object_store::aws::AmazonS3, OffloadError> {
        let keys = credentials(&|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
            .map_err(|why| OffloadError::Credentials(format!("{url}: {why}")))?;
        let p = &self.policy;
        let timeout = Duration::from_secs(u64::from(p.timeout_seconds));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(p.allow_http)
            .with_virtual_hosted_style_request(!p.path_style)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(p.allow_http)
                    .with_timeout(timeout)
                    .with_connect_timeout(Duration::from_secs(5).min(timeout)),
            )
            // A few quick retries: a server that is down fails this archive's step within
            // seconds, and the next run tries again.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: timeout,
            });
        let region = if !p.region.is_empty() {
            Some(p.region.clone())
        } else {
            std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .ok()
        };
        builder = builder.with_region(region.unwrap_or_else(|| "us-east-1".into()));
        if !p.endpoint.is_empty() {
            builder = builder.with_endpoint(&p.endpoint);
        }
        if let Credentials::Profile(keys) = keys {
            builder = builder
                .with_access_key_id(keys.access_key_id)
                .with_secret_access_key(keys.secret_access_key);
            if let Some(token) = keys.session_token {
                builder = builder.with_token(token);
            }
        }
        builder.build().map_err(|source| OffloadError::Store {
            url: url.to_string(),
            op: "setting up the S3 client",
            source,
        })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        // Called from blocking threads only (cleanup and restore run there), never from
        // inside an async task.
        self.runtime
            .as_ref()
            .expect("runtime until drop")
            .block_on(f)
    }

    /// The object's figures, or `None` when there is none at `url`.
    pub fn head(&self, url: &StoreUrl) -> Result<Option<ObjectInfo>, OffloadError> {
        let store = self.store(url)?;
        let location = url.object_path();
        match self.block_on(store.head(&location)) {
            Ok(meta) => Ok(Some(ObjectInfo {
                size: meta.size,
                e_tag: meta.e_tag,
                version: meta.version,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(OffloadError::Store {
                url: url.to_string(),
                op: "looking up the object",
                source,
            }),
        }
    }

    /// Uploads `file` (`size` bytes, whose sha256 must be `sha256`) to `url`: in one
    /// request up to `part_size_mib`, else in parts. The bytes are hashed as they are
    /// sent; a file that is not the recorded archive is not left on the store. For a
    /// `file://` store the object is fsynced (file and folder) before this returns.
    ///
    /// A one-request upload only creates: it fails ([`OffloadError::Refused`]) if an
    /// object is at `url` by then (`If-None-Match: *` on S3, a hard link on a folder). A
    /// multipart upload's completion cannot be made conditional through `object_store`,
    /// so for archives above `part_size_mib` the caller's look-up is the only guard.
    pub fn upload(
        &self,
        url: &StoreUrl,
        file: File,
        shown: &Path,
        size: u64,
        sha256: &str,
    ) -> Result<Uploaded, OffloadError> {
        if let Some(object) = url.local_path() {
            if let Some(folder) = object.parent() {
                self.check_file_base(url, folder)?;
            }
            remove_stale_staging(&object)?;
        }
        let store = self.store(url)?;
        let location = url.object_path();
        let store_error = |op| {
            let url = url.to_string();
            move |source| OffloadError::Store { url, op, source }
        };
        let local_error = |source| OffloadError::Local {
            path: shown.to_path_buf(),
            source,
        };
        let part = self.part_size();
        let mut hasher = Sha256::new();
        let mut reader = io::BufReader::with_capacity(1 << 20, file);
        let result = if size as usize <= part {
            let mut bytes = Vec::with_capacity(size as usize);
            reader.read_to_end(&mut bytes).map_err(local_error)?;
            hasher.update(&bytes);
            check_local(
                shown,
                &hex::encode(hasher.clone().finalize()),
                bytes.len() as u64,
                sha256,
                size,
            )?;
            let create = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match self.block_on(store.put_opts(
                &location,
                PutPayload::from(Bytes::from(bytes)),
                create,
            )) {
                Ok(done) => done,
                Err(object_store::Error::AlreadyExists { .. }) => {
                    return Err(OffloadError::Refused {
                        url: url.to_string(),
                        detail: "another object appeared at this key after the look-up (another host offloading to the same prefix?); it is not overwritten".into(),
                    })
                }
                Err(e) => return Err(store_error("uploading")(e)),
            }
        } else {
            self.block_on(async {
                let upload = store
                    .put_multipart(&location)
                    .await
                    .map_err(store_error("starting a multipart upload"))?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
                let mut sent = 0u64;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    // Blocking reads are fine here: this future runs on the calling
                    // (blocking) thread; the parts go out on the runtime's workers.
                    let n = match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => {
                            let _ = writer.abort().await;
                            return Err(local_error(e));
                        }
                    };
                    hasher.update(&buf[..n]);
                    sent += n as u64;
                    if let Err(e) = writer.wait_for_capacity(4).await {
                        // A part failed: abort, or the store keeps the parts sent (an
                        // incomplete multipart upload, billed and invisible) for good.
                        if let Err(abort) = writer.abort().await {
                            tracing::warn!(url = %url, "aborting a failed multipart upload failed too: {} (the parts sent stay on the store until a lifecycle rule removes them)", with_causes(&abort));
                        }
                        return Err(store_error("uploading a part")(e));
                    }
                    writer.write(&buf[..n]);
                }
                let got = hex::encode(hasher.clone().finalize());
                if let Err(e) = check_local(shown, &got, sent, sha256, size) {
                    let _ = writer.abort().await;
                    return Err(e);
                }
                writer
                    .finish()
                    .await
                    .map_err(store_error("completing the multipart upload"))
            })?
        };
        if let Some(path) = url.local_path() {
            sync_local_object(&path)?;
        }
        Ok(Uploaded {
            e_tag: result.e_tag,
            version: result.version,
            already_there: false,
        })
    }

    /// Reads the object at `url` in full: its sha256 and size.
    pub fn read_back(&self, url: &StoreUrl) -> Result<(String, u64), OffloadError> {
        self.download(url, &mut io::sink())
    }

    /// Downloads the object at `url` into `out`: its sha256 and size.
    pub fn download(
        &self,
        url: &StoreUrl,
        out: &mut dyn Write,
    ) -> Result<(String, u64), OffloadError> {
        let store = self.store(url)?;
        let location = url.object_path();
        let op_error = |op| {
            let url = url.to_string();
            move |source| OffloadError::Store { url, op, source }
        };
        self.block_on(async {
            let got = store
                .get(&location)
                .await
                .map_err(op_error("reading back"))?;
            let mut stream = got.into_stream();
            let mut hasher = Sha256::new();
            let mut count = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(op_error("reading back"))?;
                hasher.update(&chunk);
                count += chunk.len() as u64;
                out.write_all(&chunk)
                    .map_err(|source| OffloadError::Local {
                        path: PathBuf::from("(download)"),
                        source,
                    })?;
            }
            Ok((hex::encode(hasher.finalize()), count))
        })
    }

    /// Deletes the object at `url`; `false` when there was none (already deleted).
    pub fn delete(&self, url: &StoreUrl) -> Result<bool, OffloadError> {
        let store = self.store(url)?;
        let location = url.object_path();
        // S3 answers a DELETE of a missing key with success; ask first to tell.
        let existed = self.head(url)?.is_some();
        match self.block_on(store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(existed),
            Err(source) => Err(OffloadError::Store {
                url: url.to_string(),
                op: "deleting",
                source,
            }),
        }
    }

    /// Clears what an offload of the archive (`size` bytes, sha256 `sha256`) that a crash
    /// stopped before its record may have left at `url`: a `file://` store's staging
    /// files, and a complete object only if it holds exactly the archive's bytes (any
    /// other object there is someone else's and is left alone).
    pub fn delete_unrecorded(
        &self,
        url: &StoreUrl,
        sha256: &str,
        size: u64,
    ) -> Result<Unrecorded, OffloadError> {
        if let Some(object) = url.local_path() {
            remove_stale_staging(&object)?;
        }
        if self.head(url)?.is_none() {
            return Ok(Unrecorded::Nothing);
        }
        let (sha, bytes) = self.read_back(url)?;
        if sha != sha256 || bytes != size {
            return Ok(Unrecorded::Other { bytes, sha256: sha });
        }
        self.delete(url)?;
        Ok(Unrecorded::Deleted)
    }

    /// A `file://` store's folder must exist: an unmounted network folder must not be
    /// filled in its mount point's place.
    fn check_file_base(&self, url: &StoreUrl, object_folder: &Path) -> Result<(), OffloadError> {
        let base = self.base().ok().and_then(|b| b.local_path());
        let must_exist = match &base {
            Some(b) if object_folder.starts_with(b) => b.as_path(),
            _ => object_folder,
        };
        match std::fs::metadata(must_exist) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(OffloadError::Refused {
                url: url.to_string(),
                detail: format!("{} is not a folder", must_exist.display()),
            }),
            Err(e) => Err(OffloadError::Refused {
                url: url.to_string(),
                detail: format!(
                    "the store's folder {}: {e} (create it, or mount it; it is never created by offload)",
                    must_exist.display()
                ),
            }),
        }
    }
}

/// The local archive must be the recorded one before (and while) it is uploaded.
fn check_local(
    shown: &Path,
    got: &str,
    got_bytes: u64,
    sha256: &str,
    size: u64,
) -> Result<(), OffloadError> {
    if got == sha256 && got_bytes == size {
        return Ok(());
    }
    Err(OffloadError::Local {
        path: shown.to_path_buf(),
        source: io::Error::other(format!(
            "read {got_bytes} bytes with sha256 {got}, but {size} bytes with sha256 {sha256} were recorded: not offloaded (the next cleanup's archive check reports it)"
        )),
    })
}

/// Removes what a killed upload to a `file://` store left beside `object`: the local
/// store writes `<object>#<n>` and renames it into place when done, so a process killed
/// mid-upload leaves that file for good (the store's listing hides it). Called under the
/// SPEC's lock before the next upload of the same key, which is the only writer of those
/// names (an in-flight upload by another process whose file this removes fails its
/// rename and keeps its local archive).
fn remove_stale_staging(object: &Path) -> Result<(), OffloadError> {
    let (Some(folder), Some(name)) = (object.parent(), object.file_name()) else {
        return Ok(());
    };
    let prefix = format!("{}#", name.to_string_lossy());
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // first upload here
        Err(source) => {
            return Err(OffloadError::Local {
                path: folder.to_path_buf(),
                source,
            })
        }
    };
    let local = |path: PathBuf| move |source| OffloadError::Local { path, source };
    for entry in entries {
        let entry = entry.map_err(local(folder.to_path_buf()))?;
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            continue; // not a staging name of this object's
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed an interrupted upload's staging file")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(OffloadError::Local { path, source }),
        }
    }
    Ok(())
}

/// fsyncs an object `LocalFileSystem` wrote (it renames a staged file into place without
/// syncing), and its folder, so the local copy is deleted only after the offloaded one
/// would survive a power loss.
fn sync_local_object(path: &Path) -> Result<(), OffloadError> {
    let sync = |p: &Path| -> io::Result<()> { File::open(p)?.sync_all() };
    sync(path)
        .and_then(|()| path.parent().map_or(Ok(()), sync))
        .map_err(|source| OffloadError::Local {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_join() {
        let u = StoreUrl::parse("s3://bucket/a/b/").unwrap();
        assert_eq!(u.to_string(), "s3://bucket/a/b");
        assert_eq!(
            u.join("SPEC/x.tar.zst").to_string(),
            "s3://bucket/a/b/SPEC/x.tar.zst"
        );
        let bare = StoreUrl::parse("s3://bucket").unwrap();
        assert_eq!(bare.join("S/x").to_string(), "s3://bucket/S/x");
        let f = StoreUrl::parse("file:///srv/arch").unwrap();
        assert_eq!(f.join("S/x").to_string(), "file:///srv/arch/S/x");
        assert_eq!(
            f.join("S/x").local_path().unwrap(),
            PathBuf::from("/srv/arch/S/x")
        );
        // An object's recorded URL parses back to itself.
        let o = f.join("S/x");
        assert_eq!(StoreUrl::parse(&o.to_string()).unwrap(), o);
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, says) in [
            ("", "is empty"),
            ("s3:///x", "names no bucket"),
            ("s3://key:secret@bucket/x", "credentials"),
            ("file://relative/x", "absolute path"),
            ("gs://bucket", "not supported"),
            ("s3://b/a/../c", "not allowed"),
        ] {
            let e = StoreUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn credentials_come_from_the_environment_or_a_profile() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "# shared\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s3cr3t-default\n\n\
             [team]\n; a comment\nAWS_ACCESS_KEY_ID=AKIATEAM\naws_secret_access_key = s3cr3t-team\naws_session_token = tok\n\
             [half]\naws_access_key_id = AKIAHALF\n",
        )
        .unwrap();
        let file_s = file.display().to_string();
        fn with<'a>(
            vars: &'a [(&'a str, &'a str)],
            file: &str,
        ) -> impl Fn(&str) -> Option<String> + 'a {
            let file = file.to_string();
            move |k: &str| {
                if k == "AWS_SHARED_CREDENTIALS_FILE" {
                    return Some(file.clone());
                }
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        }
        let env_keys = [("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")];
        assert!(matches!(
            credentials(&with(&env_keys, &file_s)),
            Ok(Credentials::Environment)
        ));
        let Ok(Credentials::Profile(k)) = credentials(&with(&[], &file_s)) else {
            panic!("the default profile")
        };
        assert_eq!(
            (k.access_key_id.as_str(), k.session_token),
            ("AKIADEFAULT", None)
        );
        let Ok(Credentials::Profile(k)) = credentials(&with(&[("AWS_PROFILE", "team")], &file_s))
        else {
            panic!("profile team")
        };
        assert_eq!(
            (k.access_key_id.as_str(), k.secret_access_key.as_str()),
            ("AKIATEAM", "s3cr3t-team")
        );
        assert_eq!(k.session_token.as_deref(), Some("tok"));
        for (vars, file, says) in [
            (
                &[("AWS_PROFILE", "half")][..],
                file_s.clone(),
                "no profile \"half\"",
            ),
            (
                &[("AWS_PROFILE", "nope")][..],
                file_s.clone(),
                "no profile \"nope\"",
            ),
            (&[][..], format!("{file_s}.missing"), "credentials.missing"),
        ] {
            let Err(e) = credentials(&with(vars, &file)) else {
                panic!("{vars:?}: no keys")
            };
            assert!(
                e.contains(says) && e.contains("never from speckit.toml"),
                "{e}"
            );
            assert!(!e.contains("s3cr3t") && !e.contains("AKIA"), "{e}");
        }
    }

    #[test]
    fn credentials_in_a_url_are_never_shown() {
        for url in [
            "s3://AKIAEXAMPLE:SeCrEt@bucket/x",
            "file://AKIAEXAMPLE:SeCrEt@host/x",
            "gs://AKIAEXAMPLE:SeCrEt@bucket",
        ] {
            let e = StoreUrl::parse(url).unwrap_err();
            assert!(!e.contains("SeCrEt") && !e.contains("AKIAEXAMPLE"), "{e}");
            assert!(e.contains("***@"), "{e}");
        }
        assert_eq!(
            redacted("https://k:s@minio:9000/a@b"),
            "https://***@minio:9000/a@b"
        );
        assert_eq!(redacted("s3://bucket/pre@fix"), "s3://bucket/pre@fix");
    }

    #[test]
    fn a_file_store_round_trip_with_parts() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        std::fs::create_dir(&store_dir).unwrap();
        let policy = OffloadPolicy {
            after_days: 40,
            url: format!("file://{}", store_dir.display()),
            part_size_mib: 5,
            ..OffloadPolicy::default()
        };
        let remote = Remote::new(&policy).unwrap();
        // 12 MiB of noise: three parts of at most 5 MiB.
        let mut bytes = vec![0u8; 12 << 20];
        let mut x = 0x2545_f491_u32;
        for b in &mut bytes {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let sha = hex::encode(Sha256::digest(&bytes));
        let src = dir.path().join("a.tar.zst");
        std::fs::write(&src, &bytes).unwrap();
        let url = remote.base().unwrap().join("S/a.tar.zst");
        assert_eq!(remote.head(&url).unwrap(), None);
        let up = remote
            .upload(
                &url,
                File::open(&src).unwrap(),
                &src,
                bytes.len() as u64,
                &sha,
            )
            .unwrap();
        assert!(!up.already_there);
        assert_eq!(remote.head(&url).unwrap().unwrap().size, bytes.len() as u64);
        assert_eq!(
            remote.read_back(&url).unwrap(),
            (sha.clone(), bytes.len() as u64)
        );
        // A file that is not the recorded archive is refused, and nothing is left.
        let other = remote.base().unwrap().join("S/b.tar.zst");
        let e = remote
            .upload(
                &other,
                File::open(&src).unwrap(),
                &src,
                bytes.len() as u64,
                &"0".repeat(64),
            )
            .unwrap_err();
        assert!(e.to_string().contains("not offloaded"), "{e}");
        assert_eq!(remote.head(&other).unwrap(), None);
        assert!(remote.delete(&url).unwrap());
        assert!(!remote.delete(&url).unwrap());
    }

    #[test]
    fn an_interrupted_uploads_staging_files_are_removed_by_the_next_upload() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(store_dir.join("S")).unwrap();
        let policy = OffloadPolicy {
            after_days: 40,
            url: format!("file://{}", store_dir.display()),
            ..OffloadPolicy::default()
        };
        let remote = Remote::new(&policy).unwrap();
        // What a process killed mid-upload leaves (object_store's local staging names),
        // and names that are not staging files of this object.
        for name in ["a#1", "a#2", "a#x", "ab#1", "b#1"] {
            std::fs::write(store_dir.join("S").join(name), b"partial").unwrap();
        }
        let src = dir.path().join("a");
        std::fs::write(&src, b"abc").unwrap();
        let sha = hex::encode(Sha256::digest(b"abc"));
        let url = remote.base().unwrap().join("S/a");
        remote
            .upload(&url, File::open(&src).unwrap(), &src, 3, &sha)
            .unwrap();
        let mut left: Vec<String> = std::fs::read_dir(store_dir.join("S"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a", "a#x", "ab#1", "b#1"]);
    }

    #[test]
    fn a_missing_file_store_folder_is_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let policy = OffloadPolicy {
            after_days: 40,
            url: format!("file://{}/not-mounted", dir.path().display()),
            ..OffloadPolicy::default()
        };
        let remote = Remote::new(&policy).unwrap();
        let src = dir.path().join("a");
        std::fs::write(&src, b"abc").unwrap();
        let sha = hex::encode(Sha256::digest(b"abc"));
        let url = remote.base().unwrap().join("S/a");
        let e = remote
            .upload(&url, File::open(&src).unwrap(), &src, 3, &sha)
            .unwrap_err();
        assert!(e.to_string().contains("never created by offload"), "{e}");
        assert!(!dir.path().join("not-mounted").exists());
    }
}

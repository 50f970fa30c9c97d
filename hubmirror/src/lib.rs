//! A small server that speaks the part of the Hugging Face Hub protocol that model
//! downloaders use, over repos that live in local directories.
//!
//! It is the test hub of Lantern's end-to-end tests and the local mirror of the offline
//! demo: both point the host at it through the same endpoint setting (`HF_ENDPOINT`) a
//! user would use for the real Hub, so the host's real download path is what runs.
//!
//! Served routes:
//! - `GET /api/models/{org}/{name}` and `.../revision/{rev}`: repo info with `sha` and
//!   `siblings` (file names and sizes), as the Hub's model API answers.
//! - `GET|HEAD /{org}/{name}/resolve/{rev}/{path}`: a file, with `X-Repo-Commit`,
//!   `Accept-Ranges` and single-range `Range` support, identified as the Hub identifies
//!   it: a regular file by `ETag: "<git blob id>"`; an LFS file by
//!   `X-Linked-Etag: "<sha256>"` and `X-Linked-Size` (its plain `ETag` is the git blob id
//!   of its LFS pointer). Which files are LFS is decided as the Hub does ([`lfs`]).
//!
//! `rev` may be `main` or the repo's commit id (derived from the files' hashes).
//!
//! [`Faults`] make it misbehave the ways real links and hubs do (errors, resets,
//! truncation, stalls, corruption, slow links, redirects to a CDN), changeable while it
//! runs with [`Mirror::set_faults`], or drawn at random per request ([`RandomFaults`]);
//! [`Stats`] records what clients asked for and got, and every fault injected.

mod chaos;
pub mod lfs;

pub use chaos::{Injected, RandomFaults};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// One file of a served repo.
#[derive(Clone, Debug)]
pub struct RepoFile {
    /// Path inside the repo, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// The git blob id of the content (sha1 of `"blob {size}\0"` + content).
    pub git_blob_id: String,
    /// Whether the Hub would keep it in LFS ([`lfs::is_lfs`]).
    pub lfs: bool,
    local: PathBuf,
}

impl RepoFile {
    /// The file's identity as a client reads it (`X-Linked-Etag`, else `ETag`), which
    /// names its blob in a Hugging Face cache: the sha256 for an LFS file, else the git blob id.
    pub fn etag(&self) -> &str {
        if self.lfs {
            &self.sha256
        } else {
            &self.git_blob_id
        }
    }
}

/// A served repo: a directory whose files are the repo's files.
#[derive(Clone, Debug)]
pub struct Repo {
    pub id: String,
    pub commit: String,
    pub files: BTreeMap<String, RepoFile>,
}

impl Repo {
    /// Scans `dir` recursively and hashes every file (blocking; call it off async threads).
    pub fn scan(id: &str, dir: &Path) -> anyhow::Result<Repo> {
        let patterns = match std::fs::read_to_string(dir.join(".gitattributes")) {
            Ok(text) => lfs::lfs_patterns(&text),
            Err(_) => lfs::HUB_DEFAULT_LFS_PATTERNS.iter().map(|p| p.to_string()).collect(),
        };
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(current) = stack.pop() {
            for entry in std::fs::read_dir(&current).with_context(|| format!("reading {}", current.display()))? {
                let entry = entry?;
                let path = entry.path();
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                let relative = path
                    .strip_prefix(dir)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let hashed = hash_file(&path)?;
                let lfs = lfs::is_lfs(&relative, hashed.size, &hashed.sample, &patterns);
                let (size, sha256, git_blob_id) = (hashed.size, hashed.sha256, hashed.git_blob_id);
                files.insert(relative.clone(), RepoFile { path: relative, size, sha256, git_blob_id, lfs, local: path });
            }
        }
        if files.is_empty() {
            bail!("repo {id}: {} holds no files", dir.display());
        }
        let mut commit_hasher = Sha256::new();
        for file in files.values() {
            commit_hasher.update(file.path.as_bytes());
            commit_hasher.update([0]);
            commit_hasher.update(file.sha256.as_bytes());
        }
        let commit = hex::encode(commit_hasher.finalize())[..40].to_string();
        Ok(Repo { id: id.to_string(), commit, files })
    }
}

struct Hashed {
    size: u64,
    sha256: String,
    git_blob_id: String,
    /// The first bytes, for the binary check.
    sample: Vec<u8>,
}

fn hash_file(path: &Path) -> anyhow::Result<Hashed> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut hasher = Sha256::new();
    let mut blob_hasher = lfs::git_blob_hasher(size);
    let mut buffer = vec![0u8; 1 << 20];
    let mut sample = Vec::new();
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        hasher.update(&buffer[..n]);
        sha1::Digest::update(&mut blob_hasher, &buffer[..n]);
        if sample.len() < lfs::BINARY_SAMPLE {
            let take = (lfs::BINARY_SAMPLE - sample.len()).min(n);
            sample.extend_from_slice(&buffer[..take]);
        }
    }
    if read != size {
        bail!("{} changed while it was being read", path.display());
    }
    let git_blob_id = hex::encode(sha1::Digest::finalize(blob_hasher));
    Ok(Hashed { size, sha256: hex::encode(hasher.finalize()), git_blob_id, sample })
}

/// An error status the mirror answers instead of a file.
#[derive(Clone, Debug)]
pub struct ErrorStatus {
    /// e.g. 500, 503 or 429.
    pub code: u16,
    /// Seconds for a `Retry-After` header, if any.
    pub retry_after_secs: Option<u64>,
}

/// A pause in the middle of a body: the connection stays open but no bytes flow.
#[derive(Clone, Debug)]
pub struct Stall {
    pub after_bytes: u64,
    pub duration: Duration,
}

/// How the mirror misbehaves, to test clients against slow or broken hubs.
///
/// The per-request faults (`error_status`, `reset_after_bytes`, `truncate_after_bytes`,
/// `stall`, `flip_byte`) hit only the first `faulty_requests` GET file requests after the
/// faults were set (every request when `None`); the link faults (`response_delay`,
/// `bytes_per_second`, `redirect_to`) hit every request.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Wait this long before answering each file request (a slow hub or link).
    pub response_delay: Duration,
    /// How many GET file requests the per-request faults hit (`None`: all of them).
    pub faulty_requests: Option<u64>,
    /// Answer with this status instead of the file.
    pub error_status: Option<ErrorStatus>,
    /// Abort the connection after sending this many body bytes.
    pub reset_after_bytes: Option<u64>,
    /// End the body cleanly after this many bytes (Content-Length says as much), short of
    /// the range that was asked for.
    pub truncate_after_bytes: Option<u64>,
    /// Stop sending for a while in the middle of the body.
    pub stall: Option<Stall>,
    /// Invert the first byte of every body (the checksum must catch it).
    pub flip_byte: bool,
    /// Cap each response's sending rate (a slow link).
    pub bytes_per_second: Option<u64>,
    /// Answer file requests with a 302 to the same path on this endpoint (as the Hub
    /// redirects LFS files to its CDN), with the file's identity headers.
    pub redirect_to: Option<String>,
    /// Faults drawn at random for every file request (GET and HEAD), on top of the above.
    pub random: Option<RandomFaults>,
}

/// What the mirror has served, for tests that count transfers.
#[derive(Default, Debug)]
pub struct Stats {
    file_requests: Mutex<BTreeMap<String, u64>>,
    get_requests: Mutex<BTreeMap<String, u64>>,
    range_requests: Mutex<Vec<(String, String)>>,
    bytes_sent: AtomicU64,
    file_bytes_sent: Mutex<BTreeMap<String, u64>>,
    authorized_requests: AtomicU64,
    requests: AtomicU64,
    bodies_open: AtomicU64,
    most_bodies_open: AtomicU64,
    requests_open: AtomicU64,
    most_requests_open: AtomicU64,
    injected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Transfers of `repo/path` started so far: GET requests for the whole file or for a
    /// range starting at byte 0. A file fetched as parallel ranges counts once; HEAD
    /// requests and ranges further in (other parts, resumes) are not counted.
    pub fn file_requests(&self, repo: &str, path: &str) -> u64 {
        let key = format!("{repo}/{path}");
        *self.file_requests.lock().unwrap().get(&key).unwrap_or(&0)
    }

    /// Transfers of files of all repos started so far (see [`Stats::file_requests`]).
    pub fn total_file_requests(&self) -> u64 {
        self.file_requests.lock().unwrap().values().sum()
    }

    /// Every GET request for `repo/path` so far, ranges included.
    pub fn get_requests(&self, repo: &str, path: &str) -> u64 {
        let key = format!("{repo}/{path}");
        *self.get_requests.lock().unwrap().get(&key).unwrap_or(&0)
    }

    /// The `Range` header values of the GET requests for `repo/path`, in arrival order.
    pub fn range_requests(&self, repo: &str, path: &str) -> Vec<String> {
        let key = format!("{repo}/{path}");
        self.range_requests.lock().unwrap().iter().filter(|(k, _)| *k == key).map(|(_, r)| r.clone()).collect()
    }

    /// Body bytes sent for all files.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }

    /// Body bytes sent for `repo/path`.
    pub fn file_bytes_sent(&self, repo: &str, path: &str) -> u64 {
        let key = format!("{repo}/{path}");
        *self.file_bytes_sent.lock().unwrap().get(&key).unwrap_or(&0)
    }

    /// Requests of any kind (API, HEAD, GET, redirects) that carried an `Authorization` header.
    pub fn authorized_requests(&self) -> u64 {
        self.authorized_requests.load(Ordering::Relaxed)
    }

    /// The most file bodies that were being sent at one time (concurrent downloads).
    pub fn most_concurrent_bodies(&self) -> u64 {
        self.most_bodies_open.load(Ordering::Relaxed)
    }

    /// The most file-route requests (HEAD or GET) being answered at one time, each counted
    /// from its arrival until its response headers are ready (so a `response_delay` keeps
    /// it in flight): how many files a client asked for at once, however small they are.
    pub fn most_concurrent_requests(&self) -> u64 {
        self.most_requests_open.load(Ordering::Relaxed)
    }

    /// Requests of any kind on the file routes (HEAD, GET and redirects).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The random faults ([`Faults::random`]) injected so far, by kind ([`Injected::kind`]).
    pub fn injected_faults(&self) -> BTreeMap<&'static str, u64> {
        self.injected.lock().unwrap().clone()
    }

    /// All random faults injected so far.
    pub fn total_injected_faults(&self) -> u64 {
        self.injected.lock().unwrap().values().sum()
    }

    fn count_injected(&self, fault: &Injected) {
        *self.injected.lock().unwrap().entry(fault.kind()).or_default() += 1;
    }
}

struct Shared {
    repos: BTreeMap<String, Repo>,
    faults: Mutex<Faults>,
    /// GET file requests since the faults were last set, to apply `Faults::faulty_requests`.
    requests_since_faults: AtomicU64,
    /// Draws the random faults.
    dice: chaos::Dice,
    stats: Arc<Stats>,
}

/// Builds a mirror from local directories.
#[derive(Default)]
pub struct MirrorBuilder {
    sources: Vec<(String, PathBuf)>,
    faults: Faults,
}

impl MirrorBuilder {
    /// Serves the files under `dir` as the repo `id` (e.g. `sentence-transformers/all-MiniLM-L6-v2`).
    pub fn repo(mut self, id: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        self.sources.push((id.into(), dir.into()));
        self
    }

    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Scans the repos and starts serving on `addr` (use port 0 for any free port).
    pub async fn serve(self, addr: SocketAddr) -> anyhow::Result<Mirror> {
        let sources = self.sources;
        let repos = tokio::task::spawn_blocking(move || -> anyhow::Result<BTreeMap<String, Repo>> {
            let mut repos = BTreeMap::new();
            for (id, dir) in sources {
                if id.split('/').count() != 2 {
                    bail!("repo id {id:?} must be of the form org/name");
                }
                repos.insert(id.clone(), Repo::scan(&id, &dir)?);
            }
            Ok(repos)
        })
        .await??;
        let stats = Arc::new(Stats::default());
        let dice = chaos::Dice::default();
        if let Some(random) = &self.faults.random {
            dice.reseed(random.seed);
        }
        let shared = Arc::new(Shared { repos, faults: Mutex::new(self.faults), requests_since_faults: AtomicU64::new(0), dice, stats: stats.clone() });
        let app = Router::new()
            .route("/api/models/{org}/{name}", get(repo_info_main))
            .route("/api/models/{org}/{name}/revision/{rev}", get(repo_info))
            .route("/{org}/{name}/resolve/{rev}/{*path}", get(resolve).head(resolve))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
        Ok(Mirror { addr, shared, stats, stop: Some(stop_tx), task })
    }
}

/// A running mirror. Dropping it stops the server.
pub struct Mirror {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mirror {
    pub fn builder() -> MirrorBuilder {
        MirrorBuilder::default()
    }

    /// The value to put in `HF_ENDPOINT`, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn repo(&self, id: &str) -> Option<&Repo> {
        self.shared.repos.get(id)
    }

    /// Changes the faults for requests from now on.
    pub fn set_faults(&self, faults: Faults) {
        let mut current = self.shared.faults.lock().unwrap();
        if let Some(random) = &faults.random {
            self.shared.dice.reseed(random.seed);
        }
        *current = faults;
        self.shared.requests_since_faults.store(0, Ordering::Relaxed);
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

fn hub_error(status: StatusCode, code: &'static str, message: String) -> Response {
    let mut response = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    response.headers_mut().insert("x-error-code", HeaderValue::from_static(code));
    response
}

fn is_pull_request_ref(rev: &str) -> bool {
    rev.strip_prefix("refs/pr/").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn find_repo<'a>(shared: &'a Shared, org: &str, name: &str, rev: &str) -> Result<&'a Repo, Response> {
    let id = format!("{org}/{name}");
    let repo = shared
        .repos
        .get(&id)
        .ok_or_else(|| hub_error(StatusCode::NOT_FOUND, "RepoNotFound", format!("Repository not found: {id}")))?;
    // The mirror serves one version of each repo: `main`, its commit id, and pull-request
    // refs (`refs/pr/N`, where some upstream repos keep their safetensors) all name it.
    if rev != "main" && rev != repo.commit && !is_pull_request_ref(rev) {
        return Err(hub_error(StatusCode::NOT_FOUND, "RevisionNotFound", format!("Invalid rev id: {rev}")));
    }
    Ok(repo)
}

async fn repo_info_main(state: State<Arc<Shared>>, UrlPath((org, name)): UrlPath<(String, String)>) -> Response {
    repo_info(state, UrlPath((org, name, "main".to_string()))).await
}

async fn repo_info(
    State(shared): State<Arc<Shared>>,
    UrlPath((org, name, rev)): UrlPath<(String, String, String)>,
) -> Response {
    let repo = match find_repo(&shared, &org, &name, &rev) {
        Ok(repo) => repo,
        Err(response) => return response,
    };
    let siblings: Vec<_> = repo
        .files
        .values()
        .map(|f| {
            // As the Hub lists them: only LFS files carry an `lfs` object.
            let mut sibling = serde_json::json!({ "rfilename": f.path, "size": f.size, "blobId": f.git_blob_id });
            if f.lfs {
                sibling["lfs"] = serde_json::json!({ "sha256": f.sha256, "size": f.size });
            }
            sibling
        })
        .collect();
    axum::Json(serde_json::json!({ "id": repo.id, "modelId": repo.id, "sha": repo.commit, "siblings": siblings }))
        .into_response()
}

/// Parses a single `bytes=START-[END]` range against a file of `size` bytes.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let last = size.checked_sub(1)?;
    // A last byte past the end means "to the end" (RFC 9110 14.1.2); clients rely on it.
    let end: u64 = if end.trim().is_empty() { last } else { end.trim().parse::<u64>().ok()?.min(last) };
    (start <= end).then_some((start, end))
}

async fn resolve(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    UrlPath((org, name, rev, path)): UrlPath<(String, String, String, String)>,
) -> Response {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let _in_flight = RequestOpen::new(shared.stats.clone());
    if headers.contains_key(header::AUTHORIZATION) {
        shared.stats.authorized_requests.fetch_add(1, Ordering::Relaxed);
    }
    let repo = match find_repo(&shared, &org, &name, &rev) {
        Ok(repo) => repo,
        Err(response) => return response,
    };
    let Some(file) = repo.files.get(&path) else {
        return hub_error(StatusCode::NOT_FOUND, "EntryNotFound", format!("{path} does not exist in {}", repo.id));
    };
    let faults = shared.faults.lock().unwrap().clone();
    if !faults.response_delay.is_zero() {
        tokio::time::sleep(faults.response_delay).await;
    }
    let identity = |builder: axum::http::response::Builder| {
        let builder = builder.header("x-repo-commit", &repo.commit);
        if file.lfs {
            builder
                .header(header::ETAG, format!("\"{}\"", lfs::pointer_blob_id(&file.sha256, file.size)))
                .header("x-linked-etag", format!("\"{}\"", file.sha256))
                .header("x-linked-size", file.size)
        } else {
            builder.header(header::ETAG, format!("\"{}\"", file.git_blob_id))
        }
    };
    if let Some(target) = &faults.redirect_to {
        let location = format!("{}/{org}/{name}/resolve/{}/{path}", target.trim_end_matches('/'), rev.replace('/', "%2F"));
        return identity(Response::builder().status(StatusCode::FOUND).header(header::LOCATION, location))
            .body(Body::empty())
            .unwrap();
    }
    let key = format!("{}/{}", repo.id, file.path);
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = range_header.map(|v| parse_range(v, file.size));
    if method == Method::GET {
        *shared.stats.get_requests.lock().unwrap().entry(key.clone()).or_default() += 1;
        if matches!(range, None | Some(Some((0, _)))) {
            *shared.stats.file_requests.lock().unwrap().entry(key.clone()).or_default() += 1;
        }
        if let Some(value) = range_header {
            shared.stats.range_requests.lock().unwrap().push((key.clone(), value.to_string()));
        }
    }
    let faulty = method == Method::GET && {
        let index = shared.requests_since_faults.fetch_add(1, Ordering::Relaxed);
        faults.faulty_requests.is_none_or(|limit| index < limit)
    };
    if faulty {
        if let Some(error) = &faults.error_status {
            let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = hub_error(status, "InjectedFault", format!("injected HTTP {}", error.code));
            if let Some(seconds) = error.retry_after_secs {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return response;
        }
    }
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, file.size.saturating_sub(1)),
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(None) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{}", file.size)).unwrap());
            return response;
        }
    };
    let length = if file.size == 0 { 0 } else { end - start + 1 };
    let drawn = faults.random.as_ref().and_then(|random| chaos::draw(random, &shared.dice, (method == Method::GET).then_some(length)));
    if let Some(fault) = &drawn {
        shared.stats.count_injected(fault);
    }
    let random_retry_after = faults.random.as_ref().map_or(1, |r| r.retry_after_secs);
    match drawn {
        Some(Injected::ServerError { code }) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return hub_error(status, "InjectedFault", format!("injected HTTP {code}"));
        }
        Some(Injected::TooManyRequests) => {
            let mut response = hub_error(StatusCode::TOO_MANY_REQUESTS, "InjectedFault", "injected HTTP 429".into());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(random_retry_after));
            return response;
        }
        _ => {}
    }
    let truncate_after = match drawn {
        Some(Injected::Truncate { after }) => Some(after),
        _ => faults.truncate_after_bytes.filter(|_| faulty),
    };
    let mut builder = identity(
        Response::builder()
            .status(status)
            // A truncated body announces only the bytes it carries, so the response ends
            // cleanly and every byte sent reaches the client (an early end against a longer
            // Content-Length lets the server drop unflushed bytes, which made "resumed, not
            // restarted" depend on timing); the client still sees fewer bytes than it asked for.
            .header(header::CONTENT_LENGTH, truncate_after.map_or(length, |limit| limit.min(length)))
            .header(header::ACCEPT_RANGES, "bytes"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{}", file.size));
    }
    if method == Method::HEAD {
        return builder.body(Body::empty()).unwrap();
    }
    let mut handle = match tokio::fs::File::open(&file.local).await {
        Ok(handle) => handle,
        Err(error) => return hub_error(StatusCode::INTERNAL_SERVER_ERROR, "IoError", error.to_string()),
    };
    if let Err(error) = handle.seek(std::io::SeekFrom::Start(start)).await {
        return hub_error(StatusCode::INTERNAL_SERVER_ERROR, "IoError", error.to_string());
    }
    let random_stall = faults.random.as_ref().map_or(Duration::ZERO, |r| r.stall);
    let body = BodyFaults {
        reset_after: match drawn {
            Some(Injected::Reset { after }) => Some(after),
            _ => faults.reset_after_bytes.filter(|_| faulty),
        },
        truncate_after,
        stall: match drawn {
            Some(Injected::Stall { after }) => Some(Stall { after_bytes: after, duration: random_stall }),
            _ => faults.stall.clone().filter(|_| faulty),
        },
        flip_at: match drawn {
            Some(Injected::FlipByte { at }) => Some(at),
            _ => (faults.flip_byte && faulty).then_some(0),
        },
        bytes_per_second: faults.bytes_per_second,
    };
    builder.body(Body::from_stream(body_stream(handle, length, body, shared.stats.clone(), key))).unwrap()
}

/// The faults one response body suffers.
struct BodyFaults {
    reset_after: Option<u64>,
    truncate_after: Option<u64>,
    stall: Option<Stall>,
    /// The body byte to invert.
    flip_at: Option<u64>,
    bytes_per_second: Option<u64>,
}

/// Counts a request as being answered until its handler returns.
struct RequestOpen(Arc<Stats>);

impl RequestOpen {
    fn new(stats: Arc<Stats>) -> Self {
        let open = stats.requests_open.fetch_add(1, Ordering::SeqCst) + 1;
        stats.most_requests_open.fetch_max(open, Ordering::SeqCst);
        RequestOpen(stats)
    }
}

impl Drop for RequestOpen {
    fn drop(&mut self) {
        self.0.requests_open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a body as open from its creation until hyper drops it (sent or aborted).
struct OpenBody(Arc<Stats>);

impl OpenBody {
    fn new(stats: Arc<Stats>) -> Self {
        let open = stats.bodies_open.fetch_add(1, Ordering::SeqCst) + 1;
        stats.most_bodies_open.fetch_max(open, Ordering::SeqCst);
        OpenBody(stats)
    }
}

impl Drop for OpenBody {
    fn drop(&mut self) {
        self.0.bodies_open.fetch_sub(1, Ordering::SeqCst);
    }
}

struct BodyState {
    _open: OpenBody,
    file: tokio::fs::File,
    remaining: u64,
    sent: u64,
    started: tokio::time::Instant,
    faults: BodyFaults,
    stats: Arc<Stats>,
    key: String,
    done: bool,
}

const BODY_CHUNK: u64 = 64 * 1024;

/// The body of a file response, in chunks cut so that each fault strikes at its exact byte.
fn body_stream(
    file: tokio::fs::File,
    length: u64,
    faults: BodyFaults,
    stats: Arc<Stats>,
    key: String,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    let state = BodyState { _open: OpenBody::new(stats.clone()), file, remaining: length, sent: 0, started: tokio::time::Instant::now(), faults, stats, key, done: false };
    futures::stream::unfold(state, |mut state| async move {
        if state.done || state.remaining == 0 {
            return None;
        }
        if state.faults.reset_after.is_some_and(|limit| state.sent >= limit) {
            state.done = true;
            let error = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected connection reset");
            return Some((Err(error), state));
        }
        if state.faults.truncate_after.is_some_and(|limit| state.sent >= limit) {
            return None;
        }
        if let Some(stall) = state.faults.stall.clone().filter(|s| state.sent >= s.after_bytes) {
            tokio::time::sleep(stall.duration).await;
            state.faults.stall = None;
        }
        // The next fault boundary ahead, so that a chunk never straddles it.
        let boundary = [state.faults.reset_after, state.faults.truncate_after, state.faults.stall.as_ref().map(|s| s.after_bytes)]
            .into_iter()
            .flatten()
            .filter(|&b| b > state.sent)
            .min()
            .map(|b| b - state.sent);
        let want = BODY_CHUNK.min(state.remaining).min(boundary.unwrap_or(u64::MAX)) as usize;
        let mut buffer = vec![0u8; want];
        if let Err(error) = state.file.read_exact(&mut buffer).await {
            state.done = true;
            return Some((Err(error), state));
        }
        if let Some(at) = state.faults.flip_at.filter(|&at| at >= state.sent && at < state.sent + want as u64) {
            buffer[(at - state.sent) as usize] ^= 0xff;
        }
        state.sent += want as u64;
        state.remaining -= want as u64;
        if let Some(rate) = state.faults.bytes_per_second.filter(|r| *r > 0) {
            let due = state.started + Duration::from_secs_f64(state.sent as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        state.stats.bytes_sent.fetch_add(want as u64, Ordering::Relaxed);
        *state.stats.file_bytes_sent.lock().unwrap().entry(state.key.clone()).or_default() += want as u64;
        Some((Ok(bytes::Bytes::from(buffer)), state))
    })
}

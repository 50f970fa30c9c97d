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
//!   `ETag`/`X-Linked-Etag` (the sha256 of the content, as the Hub gives for LFS files),
//!   `X-Linked-Size`, `Accept-Ranges` and single-range `Range` support.
//!
//! `rev` may be `main` or the repo's commit id (derived from the files' hashes).

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
    local: PathBuf,
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
                let (size, sha256) = hash_file(&path)?;
                files.insert(relative.clone(), RepoFile { path: relative, size, sha256, local: path });
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

fn hash_file(path: &Path) -> anyhow::Result<(u64, String)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// How the mirror misbehaves, to test clients against slow or broken hubs.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Wait this long before answering each file request (a slow hub or link).
    pub response_delay: Duration,
}

/// What the mirror has served, for tests that count transfers.
#[derive(Default, Debug)]
pub struct Stats {
    file_requests: Mutex<BTreeMap<String, u64>>,
    bytes_sent: AtomicU64,
}

impl Stats {
    /// GET requests for `repo/path` so far (HEAD requests are not counted).
    pub fn file_requests(&self, repo: &str, path: &str) -> u64 {
        let key = format!("{repo}/{path}");
        *self.file_requests.lock().unwrap().get(&key).unwrap_or(&0)
    }

    /// GET requests for files of all repos so far.
    pub fn total_file_requests(&self) -> u64 {
        self.file_requests.lock().unwrap().values().sum()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }
}

struct Shared {
    repos: BTreeMap<String, Repo>,
    faults: Mutex<Faults>,
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
        let shared = Arc::new(Shared { repos, faults: Mutex::new(self.faults), stats: stats.clone() });
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
        *self.shared.faults.lock().unwrap() = faults;
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

fn find_repo<'a>(shared: &'a Shared, org: &str, name: &str, rev: &str) -> Result<&'a Repo, Response> {
    let id = format!("{org}/{name}");
    let repo = shared
        .repos
        .get(&id)
        .ok_or_else(|| hub_error(StatusCode::NOT_FOUND, "RepoNotFound", format!("Repository not found: {id}")))?;
    if rev != "main" && rev != repo.commit {
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
        .map(|f| serde_json::json!({ "rfilename": f.path, "size": f.size, "lfs": { "sha256": f.sha256, "size": f.size } }))
        .collect();
    axum::Json(serde_json::json!({ "id": repo.id, "modelId": repo.id, "sha": repo.commit, "siblings": siblings }))
        .into_response()
}

/// Parses a single `bytes=START-[END]` range against a file of `size` bytes.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = if end.trim().is_empty() { size.checked_sub(1)? } else { end.trim().parse().ok()? };
    (start <= end && end < size).then_some((start, end))
}

async fn resolve(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    UrlPath((org, name, rev, path)): UrlPath<(String, String, String, String)>,
) -> Response {
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
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, file.size));
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
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", file.sha256))
        .header("x-linked-etag", format!("\"{}\"", file.sha256))
        .header("x-linked-size", file.size)
        .header("x-repo-commit", &repo.commit);
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{}", file.size));
    }
    if method == Method::HEAD {
        return builder.body(Body::empty()).unwrap();
    }
    *shared
        .stats
        .file_requests
        .lock()
        .unwrap()
        .entry(format!("{}/{}", repo.id, file.path))
        .or_default() += 1;
    let mut handle = match tokio::fs::File::open(&file.local).await {
        Ok(handle) => handle,
        Err(error) => return hub_error(StatusCode::INTERNAL_SERVER_ERROR, "IoError", error.to_string()),
    };
    if let Err(error) = handle.seek(std::io::SeekFrom::Start(start)).await {
        return hub_error(StatusCode::INTERNAL_SERVER_ERROR, "IoError", error.to_string());
    }
    let stats = shared.stats.clone();
    let stream = futures::StreamExt::inspect(tokio_util::io::ReaderStream::new(handle.take(length)), move |chunk| {
        if let Ok(bytes) = chunk {
            stats.bytes_sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
    });
    builder.body(Body::from_stream(stream)).unwrap()
}

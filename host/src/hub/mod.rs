//! The one place that downloads.
//!
//! [`Hub::fetch`] brings every file of a model into the Hugging Face cache concurrently
//! and returns their local paths. Big files come as parallel byte ranges; every
//! connection counts against one limit shared by all files. Everything here is async;
//! nothing blocks the runtime's threads (writes, hashing, fsync and moves run on the
//! blocking pool), and transfers run on the hub's own small runtime ([`io_runtime`]), so
//! a download does not make the caller's runtime late for its own work. Transient failures are retried with backoff, stalled connections
//! restarted, and partial downloads resumed, within a process and after a restart.
//! A file enters the cache only complete and verified (size, and the sha256 or git blob
//! id that the Hub's ETag is), by atomic rename, and is synced to disk in the background. Many callers asking for one file share one transfer
//! (single flight, in-process by a map of transfers, across processes by lock files),
//! and a transfer outlives a caller that stops waiting for it.

mod cache;
mod config;
mod download;
mod durable;
mod io_runtime;
mod listing;
mod lock;
mod metadata;
pub mod names;
mod progress;
mod ranges;
mod retry;
mod transfer;
mod verify;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::sync::{watch, Semaphore};

pub use cache::{CachedRepo, RepoCache};
pub use config::{HubConfig, DEFAULT_ENDPOINT};
pub use lock::{host_name, LockHolder};
pub use retry::RetryPolicy;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum HubError {
    #[error("{0}")]
    InvalidName(String),
    #[error("offline mode (HF_HUB_OFFLINE) is on and {repo}/{file} at revision {revision} is not in the cache {cache}")]
    NotCachedOffline { repo: String, revision: String, file: String, cache: String },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    /// The bytes did not match the Hub's ETag (sha256 or git blob id) after `attempts` downloads.
    #[error("{file}: downloaded bytes failed verification {attempts} times: {message}")]
    Verification { file: String, message: String, attempts: u32 },
    #[error("cache I/O on {path}: {message}")]
    Io { path: String, message: String },
}

impl HubError {
    fn io(path: &Path, error: impl std::fmt::Display) -> Self {
        HubError::Io { path: path.display().to_string(), message: error.to_string() }
    }

    /// The error of the last of `tries` failed tries, saying how many there were.
    fn after_tries(self, tries: u32) -> Self {
        match self {
            HubError::Http { url, message } => HubError::Http { url, message: format!("{message} (gave up after {tries} tries)") },
            other => other,
        }
    }
}

/// A repo at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    pub repo: String,
    pub revision: String,
}

impl RepoRef {
    pub fn main(repo: impl Into<String>) -> Self {
        RepoRef { repo: repo.into(), revision: "main".to_string() }
    }
}

/// Progress of one file, as every caller waiting on it sees it.
#[derive(Debug, Clone, Default)]
pub struct FileProgress {
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// Set once, when the file is in the cache (or failed for good).
    pub outcome: Option<Result<PathBuf, HubError>>,
}

/// A progress report about one file of a [`Hub::fetch`], with the whole fetch's totals.
#[derive(Debug, Clone)]
pub struct FetchProgress {
    pub file: String,
    pub file_bytes_done: u64,
    pub file_bytes_total: Option<u64>,
    pub file_done: bool,
    /// Bytes of all the fetch's files present so far (cached and resumed bytes included).
    pub model_bytes_done: u64,
    /// Bytes of all the fetch's files, once every file's size is known.
    pub model_bytes_total: Option<u64>,
    pub files_done: usize,
    pub files_total: usize,
    /// Smoothed transfer rate of the fetch (bytes found on disk do not count).
    pub bytes_per_second: f64,
    /// Time left at that rate, once the total is known and bytes are moving.
    pub eta: Option<std::time::Duration>,
}

/// Where a caller wants progress reports; called from async tasks, so keep it cheap.
pub type ProgressSink = Arc<dyn Fn(FetchProgress) + Send + Sync>;

/// The local paths of a model's files, by their path in the repo.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub repo: RepoRef,
    files: BTreeMap<String, PathBuf>,
    /// Files of the other repos a model draws on (tokenizers, text encoders), by repo id.
    others: BTreeMap<String, BTreeMap<String, PathBuf>>,
}

impl ModelFiles {
    /// The local path of `file`; an error names the missing file (a catalog bug).
    pub fn path(&self, file: &str) -> Result<&Path, crate::error::LanternError> {
        self.files.get(file).map(PathBuf::as_path).ok_or_else(|| {
            crate::error::LanternError::InferenceFailed(format!("{} has no file {file} among those fetched", self.repo.repo))
        })
    }

    /// The local path of `file` of another repo the model draws on (see
    /// [`Hub::fetch_from_repos`]); an error names what is missing (a catalog bug).
    pub fn path_in(&self, repo: &str, file: &str) -> Result<&Path, crate::error::LanternError> {
        if repo == self.repo.repo {
            return self.path(file);
        }
        self.others.get(repo).and_then(|files| files.get(file)).map(PathBuf::as_path).ok_or_else(|| {
            crate::error::LanternError::InferenceFailed(format!("{}: no file {file} of {repo} among those fetched", self.repo.repo))
        })
    }

    /// Local files put together by hand (tests, programs that bring their own weights):
    /// `files` of the model's own repo, by their path in it.
    pub fn from_local(repo: RepoRef, files: impl IntoIterator<Item = (String, PathBuf)>) -> Self {
        ModelFiles { repo, files: files.into_iter().collect(), others: BTreeMap::new() }
    }

    /// Adds local files of another repo (see [`ModelFiles::path_in`]).
    pub fn with_local_repo(mut self, repo: &str, files: impl IntoIterator<Item = (String, PathBuf)>) -> Self {
        self.others.entry(repo.to_string()).or_default().extend(files);
        self
    }

    /// The model's own files (not those of other repos).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.files.iter().map(|(k, v)| (k.as_str(), v.as_path()))
    }

    /// Every file, the other repos' ones included, labelled `{repo}/{file}`.
    pub fn iter_all(&self) -> impl Iterator<Item = (String, &Path)> {
        let own = self.files.iter().map(|(k, v)| (k.clone(), v.as_path()));
        let others = self
            .others
            .iter()
            .flat_map(|(repo, files)| files.iter().map(move |(k, v)| (format!("{repo}/{k}"), v.as_path())));
        own.chain(others)
    }

    /// Bytes of all files together (following symlinks).
    pub fn total_bytes(&self) -> u64 {
        self.iter_all().filter_map(|(_, p)| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }
}

type InFlightKey = (String, String, String);

/// The downloader. Cheap to clone; clones share connections and in-flight transfers.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: HubConfig,
    /// For the bytes: follows redirects (reqwest drops the token on a cross-host one).
    client: reqwest::Client,
    /// For HEAD requests: redirects are not followed, so the Hub's identity headers on a
    /// CDN redirect can be read.
    metadata_client: reqwest::Client,
    /// Transfers under way, by (repo, revision, file); each publishes its progress.
    in_flight: Mutex<HashMap<InFlightKey, watch::Receiver<FileProgress>>>,
    /// Bounds the files transferring at once.
    files: Semaphore,
    /// Bounds the connections open at once, across all files and their parts.
    connections: Semaphore,
    /// Blobs this process verified and is syncing to disk in the background.
    syncing: Mutex<HashSet<PathBuf>>,
    /// Those syncs, for [`Hub::wait_until_synced`].
    pending_syncs: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Where transfers and listings run (see [`io_runtime`]).
    io: io_runtime::IoRuntime,
}

impl Hub {
    pub fn new(config: HubConfig) -> Result<Self, HubError> {
        let builder = || {
            reqwest::Client::builder()
                .user_agent(config.user_agent.clone())
                .connect_timeout(config.stall_timeout.min(std::time::Duration::from_secs(20)))
        };
        let build_error = |e: reqwest::Error| HubError::Http { url: config.endpoint.clone(), message: e.to_string() };
        let client = builder().build().map_err(build_error)?;
        let metadata_client = builder().redirect(reqwest::redirect::Policy::none()).build().map_err(build_error)?;
        let files = Semaphore::new(config.max_concurrent_files.max(1));
        let connections = Semaphore::new(config.max_connections.max(1));
        let in_flight = Mutex::new(HashMap::new());
        let (syncing, pending_syncs) = (Mutex::new(HashSet::new()), Mutex::new(Vec::new()));
        let io = io_runtime::IoRuntime::default();
        let inner = HubInner { config, client, metadata_client, in_flight, files, connections, syncing, pending_syncs, io };
        Ok(Hub { inner: Arc::new(inner) })
    }

    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    pub fn repo_cache(&self, repo: &str) -> RepoCache {
        RepoCache::new(&self.inner.config.cache_dir, repo)
    }

    /// True when every file is already in the cache for `repo` (no network).
    pub fn is_cached(&self, repo: &RepoRef, files: &[String]) -> bool {
        let cache = self.repo_cache(&repo.repo);
        files.iter().all(|file| cache.cached_file(&repo.revision, file).is_some())
    }

    /// The model repos in the cache, with their sizes on disk.
    pub async fn cached_repos(&self) -> Result<Vec<CachedRepo>, HubError> {
        let cache_dir = self.inner.config.cache_dir.clone();
        tokio::task::spawn_blocking(move || cache::cached_repos(&cache_dir))
            .await
            .map_err(|e| HubError::io(&self.inner.config.cache_dir, e))
    }

    /// Deletes `repo`'s cache folder and returns the bytes freed (0 if it was not cached).
    /// The name is checked first, so nothing outside the cache can be named.
    pub async fn remove_repo(&self, repo: &str) -> Result<u64, HubError> {
        names::check_repo_id(repo)?;
        let root = self.repo_cache(repo).root().to_path_buf();
        let target = root.clone();
        blocking_io(&root, move || {
            if !target.exists() {
                return Ok(0);
            }
            let bytes = cache::disk_usage(&target);
            std::fs::remove_dir_all(&target)?;
            Ok(bytes)
        })
        .await
    }

    /// Brings every one of `files` of `repo` into the cache, all at once, and returns
    /// their local paths. Progress reports go to `progress`, if given.
    pub async fn fetch(
        &self,
        repo: &RepoRef,
        files: &[String],
        progress: Option<ProgressSink>,
    ) -> Result<ModelFiles, HubError> {
        names::check_repo_id(&repo.repo)?;
        names::check_revision(&repo.revision)?;
        for file in files {
            names::check_file_name(file)?;
        }
        let progress = progress.map(|sink| Arc::new(progress::ModelProgress::new(files, sink)));
        let fetches = files.iter().map(|file| self.fetch_file(repo, file, file, progress.clone()));
        let paths = futures::future::try_join_all(fetches).await?;
        Ok(ModelFiles { repo: repo.clone(), files: files.iter().cloned().zip(paths).collect(), others: BTreeMap::new() })
    }

    /// Like [`Hub::fetch`] for a model whose files live in several repos (the first is the
    /// model's own): every file of every repo is in flight at once, under one progress
    /// report in which files of the other repos are labelled `{repo}/{file}`.
    pub async fn fetch_from_repos(
        &self,
        parts: &[(RepoRef, Vec<String>)],
        progress: Option<ProgressSink>,
    ) -> Result<ModelFiles, HubError> {
        let Some(((main_repo, _), _)) = parts.split_first() else {
            return Err(HubError::InvalidName("a model needs at least one repo".into()));
        };
        let mut labelled = Vec::new();
        for (index, (repo, files)) in parts.iter().enumerate() {
            names::check_repo_id(&repo.repo)?;
            names::check_revision(&repo.revision)?;
            for file in files {
                names::check_file_name(file)?;
                let label = if index == 0 { file.clone() } else { format!("{}/{file}", repo.repo) };
                labelled.push((repo, file, label));
            }
        }
        let labels: Vec<String> = labelled.iter().map(|(_, _, label)| label.clone()).collect();
        let progress = progress.map(|sink| Arc::new(progress::ModelProgress::new(&labels, sink)));
        let fetches = labelled.iter().map(|(repo, file, label)| self.fetch_file(repo, file, label, progress.clone()));
        let paths = futures::future::try_join_all(fetches).await?;
        let mut model = ModelFiles { repo: main_repo.clone(), files: BTreeMap::new(), others: BTreeMap::new() };
        for ((repo, file, _), path) in labelled.into_iter().zip(paths) {
            if *repo == *main_repo {
                model.files.insert(file.clone(), path);
            } else {
                model.others.entry(repo.repo.clone()).or_default().insert(file.clone(), path);
            }
        }
        Ok(model)
    }

    /// One file: from the cache, or by joining the transfer under way, or by starting one.
    async fn fetch_file(
        &self,
        repo: &RepoRef,
        file: &str,
        label: &str,
        progress: Option<Arc<progress::ModelProgress>>,
    ) -> Result<PathBuf, HubError> {
        let cache = self.repo_cache(&repo.repo);
        if let Some(path) = cache.cached_file(&repo.revision, file) {
            if durable::trusted(self, &path).await? {
                if let Some(progress) = &progress {
                    let size = tokio::fs::metadata(&path).await.map(|m| m.len()).ok();
                    progress.report(label, size.unwrap_or(0), size, true);
                }
                return Ok(path);
            }
        }
        if self.inner.config.offline {
            return Err(HubError::NotCachedOffline {
                repo: repo.repo.clone(),
                revision: repo.revision.clone(),
                file: file.to_string(),
                cache: self.inner.config.cache_dir.display().to_string(),
            });
        }
        let mut receiver = self.join_or_start(repo, file);
        loop {
            let state = receiver.borrow_and_update().clone();
            if let Some(progress) = &progress {
                progress.report(label, state.bytes_done, state.bytes_total, state.outcome.is_some());
            }
            if let Some(outcome) = state.outcome {
                return outcome;
            }
            if receiver.changed().await.is_err() {
                // The transfer task ended without an outcome: only a panic does that.
                return Err(HubError::Http { url: file.to_string(), message: "download task ended unexpectedly".into() });
            }
        }
    }

    /// The progress channel of the transfer of `file`, starting the transfer if none is under way.
    fn join_or_start(&self, repo: &RepoRef, file: &str) -> watch::Receiver<FileProgress> {
        let key = (repo.repo.clone(), repo.revision.clone(), file.to_string());
        let mut in_flight = self.inner.in_flight.lock().unwrap();
        if let Some(receiver) = in_flight.get(&key) {
            return receiver.clone();
        }
        let (sender, receiver) = watch::channel(FileProgress::default());
        in_flight.insert(key.clone(), receiver.clone());
        let hub = self.clone();
        let repo = repo.clone();
        let file = file.to_string();
        // A task of its own, on the hub's runtime: the transfer goes on for the others if
        // the first caller goes away.
        self.inner.io.spawn(async move {
            let outcome = {
                let _permit = hub.inner.files.acquire().await.expect("semaphore never closed");
                download::download_file(&hub, &repo, &file, &sender).await
            };
            if let Err(error) = &outcome {
                tracing::warn!(repo = %repo.repo, file = %file, %error, "download failed");
            }
            // Leave the in-flight map before publishing, so a caller that sees a failure
            // and retries starts a fresh transfer.
            hub.inner.in_flight.lock().unwrap().remove(&key);
            sender.send_modify(|state| state.outcome = Some(outcome));
        });
        receiver
    }
}

/// Runs file work on the blocking pool (never on the runtime's threads); any failure,
/// the pool's included, is an I/O error about `path`.
async fn blocking_io<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, HubError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| HubError::io(path, e))?.map_err(|e| HubError::io(path, e))
}

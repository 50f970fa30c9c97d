//! The Hugging Face cache layout, shared with `huggingface_hub` and `hf-hub`:
//!
//! ```text
//! {cache}/models--{org}--{name}/
//!     blobs/{etag}                 file contents, named by their ETag (sha256 for LFS files)
//!     blobs/{etag}.incomplete      a download in progress
//!     blobs/{etag}.incomplete.parts  its byte ranges and how far each got (resume)
//!     blobs/{etag}.lock            which process is downloading it
//!     snapshots/{commit}/{path}    relative symlinks into blobs/
//!     refs/{revision}              the commit a branch or tag pointed to when fetched
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A name for a temporary file beside `path`, unique across threads and processes, so
/// that concurrent writers never rename each other's temporaries.
fn temporary_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{unique}.tmp", std::process::id()))
}

/// The cache folder of one repo. Names must already be checked ([`super::names`]).
#[derive(Debug, Clone)]
pub struct RepoCache {
    root: PathBuf,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo: &str) -> Self {
        RepoCache { root: cache_dir.join(format!("models--{}", repo.replace('/', "--"))) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub fn incomplete_blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub fn parts_sidecar(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete.parts"))
    }

    pub fn lock_file(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.lock"))
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    pub fn snapshot_file(&self, commit: &str, file: &str) -> PathBuf {
        self.snapshot_dir(commit).join(file)
    }

    fn ref_path(&self, revision: &str) -> PathBuf {
        self.root.join("refs").join(revision)
    }

    /// The commit a revision resolves to in this cache: a commit id is itself; a branch
    /// or tag is whatever its ref file recorded.
    pub fn resolve_revision(&self, revision: &str) -> Option<String> {
        if super::names::is_commit_id(revision) {
            return Some(revision.to_string());
        }
        let commit = std::fs::read_to_string(self.ref_path(revision)).ok()?;
        let commit = commit.trim();
        super::names::is_commit_id(commit).then(|| commit.to_string())
    }

    /// The files of the cached snapshot of `revision` (paths relative to it), if any.
    pub fn snapshot_files(&self, revision: &str) -> Option<Vec<String>> {
        let root = self.snapshot_dir(&self.resolve_revision(revision)?);
        let mut files = Vec::new();
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).ok()?.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if let Ok(relative) = path.strip_prefix(&root) {
                    files.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        Some(files)
    }

    /// A cached file of `revision`, if present (following its symlink to a blob).
    pub fn cached_file(&self, revision: &str, file: &str) -> Option<PathBuf> {
        let commit = self.resolve_revision(revision)?;
        let path = self.snapshot_file(&commit, file);
        path.exists().then_some(path)
    }

    /// Records that `revision` points at `commit` (atomically: write then rename).
    pub fn write_ref(&self, revision: &str, commit: &str) -> std::io::Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(revision);
        std::fs::create_dir_all(path.parent().expect("ref path has a parent"))?;
        let temporary = temporary_beside(&path);
        std::fs::write(&temporary, commit)?;
        std::fs::rename(temporary, path)
    }

    /// Points `snapshots/{commit}/{file}` at `blobs/{etag}` with a relative symlink.
    pub fn link_snapshot(&self, commit: &str, file: &str, etag: &str) -> std::io::Result<PathBuf> {
        let link = self.snapshot_file(commit, file);
        let parent = link.parent().expect("snapshot path has a parent");
        std::fs::create_dir_all(parent)?;
        // snapshots/{commit}/a/b/file -> ../../../blobs/{etag}: one `..` per folder below the repo root.
        let depth = 2 + file.matches('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        let temporary = temporary_beside(&link);
        std::os::unix::fs::symlink(&target, &temporary)?;
        std::fs::rename(&temporary, &link)?;
        Ok(link)
    }
}

/// A repo folder found in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRepo {
    pub repo: String,
    pub path: PathBuf,
    /// Bytes of its blobs, partial downloads included.
    pub bytes: u64,
}

/// Bytes of the regular files under `dir` (symlinks are not followed, so snapshot links
/// do not count their blobs twice).
pub fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(entry.path()),
                Ok(kind) if kind.is_file() => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// The model repos in `cache_dir` (blocking: walks the folders), sorted by repo id.
pub fn cached_repos(cache_dir: &Path) -> Vec<CachedRepo> {
    let Ok(entries) = std::fs::read_dir(cache_dir) else { return Vec::new() };
    let mut repos: Vec<CachedRepo> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (org, model) = name.strip_prefix("models--")?.split_once("--")?;
            let repo = format!("{org}/{model}");
            super::names::check_repo_id(&repo).ok()?;
            Some(CachedRepo { bytes: disk_usage(&entry.path()), path: entry.path(), repo })
        })
        .collect();
    repos.sort_by(|a, b| a.repo.cmp(&b.repo));
    repos
}

//! What files a repo has at a revision: the Hub's model API (`/api/models/{repo}/revision/{rev}`,
//! its `siblings`), used to resolve a quantisation tag to file names and to pull a
//! whole repo. Offline, the listing comes from the cached snapshot instead.

use std::time::Duration;

use serde::Deserialize;

use super::retry::{self, Failure};
use super::{metadata, names, Hub, HubError, RepoRef};

/// Largest listing read (a repo with a few hundred thousand files).
const MAX_LISTING_BYTES: usize = 64 << 20;

#[derive(Debug, Deserialize)]
struct RepoInfo {
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
}

async fn fetch_listing(hub: &Hub, url: &str, repo: &RepoRef, timeout: Duration) -> Result<Vec<String>, Failure> {
    let request = metadata::authorize(hub, hub.inner.client.get(url), url);
    let response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => return Err(Failure::transient(url, format!("no response within {timeout:?}"))),
        Ok(Err(error)) => return Err(Failure::from_reqwest(url, &error)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if !status.is_success() {
        let error = metadata::status_error(url, status, response.headers(), repo, "(the file listing)");
        if retry::is_transient_status(status) {
            return Err(Failure::Transient { error, retry_after: retry::retry_after(&response) });
        }
        return Err(Failure::Permanent(error));
    }
    if response.content_length().is_some_and(|n| n as usize > MAX_LISTING_BYTES) {
        return Err(Failure::Permanent(HubError::Http { url: url.to_string(), message: "the file listing is too large".into() }));
    }
    let body = match tokio::time::timeout(timeout, response.bytes()).await {
        Err(_) => return Err(Failure::transient(url, "the listing stalled")),
        Ok(Err(error)) => return Err(Failure::from_reqwest(url, &error)),
        Ok(Ok(body)) => body,
    };
    let info: RepoInfo = serde_json::from_slice(&body)
        .map_err(|e| Failure::Permanent(HubError::Http { url: url.to_string(), message: format!("bad file listing: {e}") }))?;
    Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
}

impl Hub {
    /// The files of `repo` at its revision, sorted. Names that could not be fetched safely
    /// (absolute, `..`) are left out.
    pub async fn list_files(&self, repo: &RepoRef) -> Result<Vec<String>, HubError> {
        let (hub, repo) = (self.clone(), repo.clone());
        self.inner.io.run(async move { hub.list_files_here(&repo).await }).await
    }

    /// [`Hub::list_files`] on the runtime it is called on.
    async fn list_files_here(&self, repo: &RepoRef) -> Result<Vec<String>, HubError> {
        names::check_repo_id(&repo.repo)?;
        names::check_revision(&repo.revision)?;
        let mut files = if self.config().offline {
            let cache = self.repo_cache(&repo.repo);
            cache.snapshot_files(&repo.revision).ok_or_else(|| HubError::NotCachedOffline {
                repo: repo.repo.clone(),
                revision: repo.revision.clone(),
                file: "(any file)".into(),
                cache: self.config().cache_dir.display().to_string(),
            })?
        } else {
            let config = self.config();
            let revision = repo.revision.replace('/', "%2F");
            let url = format!("{}/api/models/{}/revision/{revision}", config.endpoint, repo.repo);
            retry::with_retries(&config.retry, || fetch_listing(self, &url, repo, config.stall_timeout)).await?
        };
        files.retain(|file| names::check_file_name(file).is_ok());
        files.sort();
        files.dedup();
        Ok(files)
    }
}

//! What a file is before any byte of it moves: a HEAD request (redirects not followed)
//! gives its commit, ETag (the sha256 for LFS files), size, and where its bytes are.
//!
//! The Hub answers LFS files with a 302 to its CDN carrying `X-Repo-Commit`,
//! `X-Linked-Etag` and `X-Linked-Size`; the bytes then come from the CDN without the
//! token, which is only ever sent to the configured endpoint's origin.

use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT_RANGES, CONTENT_LENGTH, LOCATION};
use reqwest::{RequestBuilder, StatusCode, Url};

use super::retry::{self, Failure};
use super::{names, Hub, HubError, RepoRef};

/// Relative redirects (renamed repos) followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// A file as the Hub describes it.
#[derive(Debug, Clone)]
pub struct Remote {
    pub commit: String,
    pub etag: String,
    pub size: Option<u64>,
    /// Where to GET the bytes (the CDN location for LFS files).
    pub download_url: String,
    /// Whether byte ranges may be asked for (parallel parts, resume).
    pub accepts_ranges: bool,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Adds the token to `request` only when `url` is on the configured endpoint's origin.
pub fn authorize(hub: &Hub, request: RequestBuilder, url: &str) -> RequestBuilder {
    let Some(token) = &hub.config().token else {
        return request;
    };
    let same_origin = match (Url::parse(url), Url::parse(&hub.config().endpoint)) {
        (Ok(target), Ok(endpoint)) => {
            target.scheme() == endpoint.scheme()
                && target.host_str() == endpoint.host_str()
                && target.port_or_known_default() == endpoint.port_or_known_default()
        }
        _ => false,
    };
    if same_origin {
        request.bearer_auth(token)
    } else {
        request
    }
}

/// The error for a status that retrying cannot fix, worded for the user.
pub fn status_error(url: &str, status: StatusCode, headers: &HeaderMap, repo: &RepoRef, file: &str) -> HubError {
    let code = header(headers, "x-error-code").unwrap_or("");
    let message = match (status.as_u16(), code) {
        (401 | 403, _) => format!("HTTP {status}: access denied (gated or private repo? set HF_TOKEN)"),
        (404, "EntryNotFound") => format!("HTTP {status}: {file} does not exist in {}", repo.repo),
        (404, "RevisionNotFound") => format!("HTTP {status}: revision {} not found in {}", repo.revision, repo.repo),
        (404, _) => format!("HTTP {status}: repo {} or file {file} not found", repo.repo),
        _ => format!("HTTP {status}"),
    };
    HubError::Http { url: url.to_string(), message }
}

/// One HEAD request, classified: transient failures are retried by the caller.
async fn head(hub: &Hub, url: &str, repo: &RepoRef, file: &str, timeout: Duration) -> Result<reqwest::Response, Failure> {
    let request = authorize(hub, hub.inner.metadata_client.head(url), url);
    let response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => return Err(Failure::transient(url, format!("no response within {timeout:?}"))),
        Ok(Err(error)) => return Err(Failure::from_reqwest(url, &error)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        return Ok(response);
    }
    let error = status_error(url, status, response.headers(), repo, file);
    if retry::is_transient_status(status) {
        return Err(Failure::Transient { error, retry_after: retry::retry_after(&response) });
    }
    Err(Failure::Permanent(error))
}

fn identity(headers: &HeaderMap, repo: &RepoRef, url: &str) -> Result<(String, String, Option<u64>), HubError> {
    let commit = header(headers, "x-repo-commit")
        .map(str::to_string)
        .or_else(|| names::is_commit_id(&repo.revision).then(|| repo.revision.clone()))
        .filter(|c| names::is_commit_id(c))
        .ok_or_else(|| HubError::Http { url: url.to_string(), message: "response has no valid X-Repo-Commit header".into() })?;
    // LFS files carry their sha256 in X-Linked-Etag; small files a git blob id in ETag.
    let etag = header(headers, "x-linked-etag")
        .or_else(|| header(headers, "etag"))
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"').to_string())
        .filter(|e| !e.is_empty() && e.len() <= 128 && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .ok_or_else(|| HubError::Http { url: url.to_string(), message: "response has no usable ETag".into() })?;
    let size = header(headers, "x-linked-size")
        .or_else(|| header(headers, CONTENT_LENGTH.as_str()))
        .and_then(|v| v.trim().parse().ok());
    Ok((commit, etag, size))
}

/// Describes `file` of `repo`, retrying transient failures.
pub async fn resolve(hub: &Hub, repo: &RepoRef, file: &str) -> Result<Remote, HubError> {
    let config = hub.config();
    // A revision such as `refs/pr/2` is one path segment, its slashes escaped (as huggingface_hub does).
    let revision = repo.revision.replace('/', "%2F");
    let mut url = format!("{}/{}/resolve/{revision}/{}", config.endpoint, repo.repo, file);
    for _ in 0..=MAX_REDIRECTS {
        let response = retry::with_retries(&config.retry, || head(hub, &url, repo, file, config.stall_timeout)).await?;
        let headers = response.headers();
        if response.status().is_redirection() {
            let location = header(headers, LOCATION.as_str())
                .and_then(|l| Url::parse(&url).ok()?.join(l).ok())
                .ok_or_else(|| HubError::Http { url: url.clone(), message: "redirect without a usable Location".into() })?;
            if headers.contains_key("x-repo-commit") || headers.contains_key("x-linked-etag") {
                let (commit, etag, size) = identity(headers, repo, &url)?;
                return Ok(Remote { commit, etag, size, download_url: location.to_string(), accepts_ranges: true });
            }
            url = location.to_string();
            continue;
        }
        let (commit, etag, size) = identity(headers, repo, &url)?;
        let accepts_ranges = header(headers, ACCEPT_RANGES.as_str()).is_some_and(|v| v.trim().eq_ignore_ascii_case("bytes"));
        return Ok(Remote { commit, etag, size, download_url: url, accepts_ranges });
    }
    Err(HubError::Http { url, message: format!("more than {MAX_REDIRECTS} redirects") })
}

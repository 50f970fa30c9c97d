//! One file's transfer: GET `{endpoint}/{repo}/resolve/{revision}/{file}`, stream the
//! body into `blobs/{etag}.incomplete` while hashing it, verify, rename into place and
//! link the snapshot.

use std::path::PathBuf;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{names, FileProgress, Hub, HubError, RepoRef};

/// The file's identity, as the Hub's response headers give it.
struct Identity {
    commit: String,
    etag: String,
    size: Option<u64>,
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn identity(response: &reqwest::Response, repo: &RepoRef, url: &str) -> Result<Identity, HubError> {
    let commit = header(response, "x-repo-commit")
        .map(str::to_string)
        .or_else(|| names::is_commit_id(&repo.revision).then(|| repo.revision.clone()))
        .filter(|c| names::is_commit_id(c))
        .ok_or_else(|| HubError::Http { url: url.to_string(), message: "response has no valid X-Repo-Commit header".into() })?;
    // LFS files carry their sha256 in X-Linked-Etag; small files a git blob id in ETag.
    let etag = header(response, "x-linked-etag")
        .or_else(|| header(response, "etag"))
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"').to_string())
        .filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .ok_or_else(|| HubError::Http { url: url.to_string(), message: "response has no usable ETag".into() })?;
    let size = header(response, "x-linked-size")
        .and_then(|v| v.parse().ok())
        .or_else(|| response.content_length());
    Ok(Identity { commit, etag, size })
}

fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit())
}

pub(super) async fn download_file(
    hub: &Hub,
    repo: &RepoRef,
    file: &str,
    progress: &watch::Sender<FileProgress>,
) -> Result<PathBuf, HubError> {
    let config = hub.config();
    let url = format!("{}/{}/resolve/{}/{}", config.endpoint, repo.repo, repo.revision, file);
    let mut request = hub.inner.client.get(&url);
    if let Some(token) = &config.token {
        // Only the configured endpoint is ever asked; reqwest drops this header on a
        // redirect to another host, as the Hub's CDN redirects need.
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| HubError::Http { url: url.clone(), message: e.to_string() })?;
    let status = response.status();
    if !status.is_success() {
        let code = header(&response, "x-error-code").unwrap_or("").to_string();
        let message = match (status.as_u16(), code.as_str()) {
            (401 | 403, _) => format!("HTTP {status}: access denied (gated or private repo? set HF_TOKEN)"),
            (404, "EntryNotFound") => format!("HTTP {status}: {file} does not exist in {}", repo.repo),
            (404, "RevisionNotFound") => format!("HTTP {status}: revision {} not found in {}", repo.revision, repo.repo),
            (404, _) => format!("HTTP {status}: repo {} or file {file} not found", repo.repo),
            _ => format!("HTTP {status}"),
        };
        return Err(HubError::Http { url, message });
    }
    let identity = identity(&response, repo, &url)?;
    let cache = hub.repo_cache(&repo.repo);
    let blob = cache.blob(&identity.etag);
    progress.send_modify(|state| state.bytes_total = identity.size);

    if !tokio::fs::try_exists(&blob).await.unwrap_or(false) {
        let incomplete = cache.incomplete_blob(&identity.etag);
        let blobs_dir = blob.parent().expect("blob path has a parent").to_path_buf();
        tokio::fs::create_dir_all(&blobs_dir).await.map_err(|e| HubError::io(&blobs_dir, e))?;
        let mut out = tokio::fs::File::create(&incomplete).await.map_err(|e| HubError::io(&incomplete, e))?;
        let mut hasher = is_sha256(&identity.etag).then(Sha256::new);
        let mut received: u64 = 0;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| HubError::Http { url: url.clone(), message: format!("body: {e}") })?;
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            out.write_all(&chunk).await.map_err(|e| HubError::io(&incomplete, e))?;
            received += chunk.len() as u64;
            progress.send_modify(|state| state.bytes_done = received);
        }
        out.flush().await.map_err(|e| HubError::io(&incomplete, e))?;
        out.sync_all().await.map_err(|e| HubError::io(&incomplete, e))?;
        drop(out);
        let verified = verify(&identity, received, hasher, file);
        if let Err(error) = verified {
            let _ = tokio::fs::remove_file(&incomplete).await;
            return Err(error);
        }
        tokio::fs::rename(&incomplete, &blob).await.map_err(|e| HubError::io(&blob, e))?;
    }

    let (commit, etag, revision, file_name) =
        (identity.commit.clone(), identity.etag.clone(), repo.revision.clone(), file.to_string());
    let link = tokio::task::spawn_blocking(move || -> Result<PathBuf, HubError> {
        let link = cache.link_snapshot(&commit, &file_name, &etag).map_err(|e| HubError::io(cache.root(), e))?;
        cache.write_ref(&revision, &commit).map_err(|e| HubError::io(cache.root(), e))?;
        Ok(link)
    })
    .await
    .map_err(|e| HubError::Io { path: file.to_string(), message: e.to_string() })??;
    Ok(link)
}

fn verify(identity: &Identity, received: u64, hasher: Option<Sha256>, file: &str) -> Result<(), HubError> {
    if let Some(expected) = identity.size {
        if expected != received {
            return Err(HubError::Verification {
                file: file.to_string(),
                message: format!("expected {expected} bytes, received {received}"),
            });
        }
    }
    if let Some(hasher) = hasher {
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(&identity.etag) {
            return Err(HubError::Verification {
                file: file.to_string(),
                message: format!("sha256 {actual} does not match the Hub's {}", identity.etag),
            });
        }
    }
    Ok(())
}

//! One file, start to finish: describe it (HEAD), take the cross-process lock on its
//! blob, transfer the bytes, verify size and sha256, rename into the cache atomically
//! and link the snapshot.

use std::path::PathBuf;

use tokio::sync::watch;

use super::cache::RepoCache;
use super::lock::{self, Acquired};
use super::metadata::{self, Remote};
use super::transfer::{self, Transferred};
use super::{FileProgress, Hub, HubError, RepoRef};

pub(super) async fn download_file(
    hub: &Hub,
    repo: &RepoRef,
    file: &str,
    progress: &watch::Sender<FileProgress>,
) -> Result<PathBuf, HubError> {
    let remote = metadata::resolve(hub, repo, file).await?;
    let cache = hub.repo_cache(&repo.repo);
    let blob = cache.blob(&remote.etag);
    progress.send_modify(|state| state.bytes_total = remote.size);

    if !tokio::fs::try_exists(&blob).await.unwrap_or(false) {
        let blobs_dir = blob.parent().expect("blob path has a parent").to_path_buf();
        tokio::fs::create_dir_all(&blobs_dir).await.map_err(|e| HubError::io(&blobs_dir, e))?;
        match lock::acquire(&cache.lock_file(&remote.etag), &blob, hub.config()).await? {
            Acquired::BlobAppeared => {}
            Acquired::Locked(held) => {
                // The previous holder may have finished just before we took over.
                if !tokio::fs::try_exists(&blob).await.unwrap_or(false) {
                    fetch_verified(hub, repo, file, &remote, &cache, progress).await?;
                }
                drop(held);
            }
        }
    }
    if let Some(size) = remote.size {
        progress.send_modify(|state| state.bytes_done = size);
    }

    let (commit, etag, revision, file_name) = (remote.commit.clone(), remote.etag.clone(), repo.revision.clone(), file.to_string());
    let root = cache.root().to_path_buf();
    super::blocking_io(&root, move || {
        let link = cache.link_snapshot(&commit, &file_name, &etag)?;
        cache.write_ref(&revision, &commit)?;
        Ok(link)
    })
    .await
}

/// Transfers and verifies the blob, then renames it into place. Bytes that fail the
/// check are deleted and downloaded once more from scratch (they may be a resumed
/// file's stale or torn part); failing twice is an error and leaves nothing behind.
async fn fetch_verified(
    hub: &Hub,
    repo: &RepoRef,
    file: &str,
    remote: &Remote,
    cache: &RepoCache,
    progress: &watch::Sender<FileProgress>,
) -> Result<(), HubError> {
    let incomplete = cache.incomplete_blob(&remote.etag);
    let sidecar = cache.parts_sidecar(&remote.etag);
    let blob = cache.blob(&remote.etag);
    let mut tries = 0;
    loop {
        tries += 1;
        let transferred = transfer::transfer(hub, repo, file, remote, &incomplete, &sidecar, progress).await?;
        let _ = tokio::fs::remove_file(&sidecar).await;
        match verify(remote, &transferred, file) {
            Ok(()) => {
                return tokio::fs::rename(&incomplete, &blob).await.map_err(|e| HubError::io(&blob, e));
            }
            Err(error) => {
                let _ = tokio::fs::remove_file(&incomplete).await;
                if tries >= 2 {
                    return Err(error);
                }
                tracing::warn!(%error, "downloaded bytes failed verification; downloading again from scratch");
                progress.send_modify(|state| state.bytes_done = 0);
            }
        }
    }
}

fn verify(remote: &Remote, transferred: &Transferred, file: &str) -> Result<(), HubError> {
    if let Some(expected) = remote.size {
        if expected != transferred.length {
            return Err(HubError::Verification {
                file: file.to_string(),
                message: format!("expected {expected} bytes, received {}", transferred.length),
            });
        }
    }
    if let Some(actual) = &transferred.sha256 {
        if !actual.eq_ignore_ascii_case(&remote.etag) {
            return Err(HubError::Verification {
                file: file.to_string(),
                message: format!("sha256 {actual} does not match the Hub's {}", remote.etag),
            });
        }
    }
    Ok(())
}

//! Making a verified blob durable without holding its callers up.
//!
//! An fsync of a freshly downloaded blob takes as long as the disk needs to write it
//! (about 4 s per GiB on a 260 MB/s disk): longer than the download itself on a fast link.
//! So a verified blob is renamed into the cache at once and synced in the background.
//! Until that sync is done, `blobs/{etag}.unsynced` marks it: the marker is created before
//! the rename (the filesystem's journal keeps the two in that order) and removed after the
//! sync. A blob found with a marker and no sync of this process under way may have lost
//! bytes to a crash or power cut before they reached the disk, so it is verified again
//! before use, and deleted if it fails: the cache never hands out unchecked bytes.

use std::path::{Path, PathBuf};

use super::verify::{self, DigestKind};
use super::{Hub, HubError};

/// The marker of a blob whose bytes may not be on disk yet.
pub fn marker(blob: &Path) -> PathBuf {
    let name = blob.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    blob.with_file_name(format!("{name}.unsynced"))
}

/// Moves the verified `incomplete` file to `blob` and syncs it in the background.
pub(super) async fn publish(hub: &Hub, incomplete: &Path, blob: &Path) -> Result<(), HubError> {
    let (from, to) = (incomplete.to_path_buf(), blob.to_path_buf());
    // Known by its canonical path, which is how [`trusted`] looks it up.
    let blob = super::blocking_io(blob, move || {
        std::fs::File::create(marker(&to))?;
        std::fs::rename(&from, &to)?;
        std::fs::canonicalize(&to)
    })
    .await?;
    hub.inner.syncing.lock().unwrap().insert(blob.clone());
    let inner = std::sync::Arc::downgrade(&hub.inner);
    let sync = tokio::spawn(async move {
        let target = blob.clone();
        let synced = super::blocking_io(&blob, move || sync_and_unmark(&target)).await;
        if let Err(error) = synced {
            tracing::warn!(%error, "could not sync a downloaded file to disk; it will be verified again before its next use");
        }
        if let Some(inner) = inner.upgrade() {
            inner.syncing.lock().unwrap().remove(&blob);
        }
    });
    let mut pending = hub.inner.pending_syncs.lock().unwrap();
    pending.retain(|task| !task.is_finished());
    pending.push(sync);
    Ok(())
}

impl Hub {
    /// Waits until every file this hub downloaded so far is on disk (a program about to
    /// exit calls it; the syncs otherwise run in the background).
    pub async fn wait_until_synced(&self) {
        loop {
            let pending = std::mem::take(&mut *self.inner.pending_syncs.lock().unwrap());
            if pending.is_empty() {
                return;
            }
            for task in pending {
                let _ = task.await;
            }
        }
    }
}

/// Syncs `blob` and its folder, then drops its marker (blocking).
fn sync_and_unmark(blob: &Path) -> std::io::Result<()> {
    std::fs::File::open(blob)?.sync_all()?;
    let folder = blob.parent().expect("a blob has a folder");
    std::fs::File::open(folder)?.sync_all()?;
    match std::fs::remove_file(marker(blob)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Whether the cached `blob` (or the snapshot link to it) may be used: yes unless it
/// carries a marker that no sync of this process accounts for, in which case it is
/// verified against its name (its ETag) first, then synced, or deleted if it no longer
/// matches.
pub(super) async fn trusted(hub: &Hub, blob: &Path) -> Result<bool, HubError> {
    let (hub, target) = (hub.clone(), blob.to_path_buf());
    super::blocking_io(blob, move || {
        let target = std::fs::canonicalize(&target)?;
        if hub.inner.syncing.lock().unwrap().contains(&target) || !marker(&target).exists() {
            return Ok(true);
        }
        let etag = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let matches = match DigestKind::of_etag(&etag) {
            Some(kind) => verify::hash_file(&target, kind)?.eq_ignore_ascii_case(&etag),
            None => false,
        };
        if matches {
            sync_and_unmark(&target)?;
        } else {
            tracing::warn!(blob = %target.display(), "a cached file lost bytes before they reached the disk; fetching it again");
            std::fs::remove_file(&target)?;
            std::fs::remove_file(marker(&target))?;
        }
        Ok(matches)
    })
    .await
}

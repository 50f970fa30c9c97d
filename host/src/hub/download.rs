//! One file, start to finish: describe it (HEAD), take the cross-process lock on its
//! blob, transfer the bytes, verify size and digest (sha256 or git blob id, whichever
//! the ETag is), rename into the cache atomically and link the snapshot.

use std::path::PathBuf;

use tokio::sync::watch;

use super::cache::RepoCache;
use super::lock::{self, Acquired};
use super::metadata::{self, Remote};
use super::ranges::{self, Part, PartsRecord};
use super::transfer::{self, Transferred};
use super::verify::{self, DigestKind};
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

    if !(tokio::fs::try_exists(&blob).await.unwrap_or(false) && super::durable::trusted(hub, &blob).await?) {
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

/// Transfers and verifies the blob, then renames it into place.
///
/// Bytes that fail the check are not all thrown away: each range of the file gets a
/// fingerprint, and the next try downloads again only the ranges that no two downloads
/// have agreed on yet (the first failure cannot tell which range was bad, so the first
/// retry fetches them all). A range two downloads agree on is settled, so every retry
/// that settles one is progress and resets the budget of retries, which are spaced by
/// exponential backoff; the tries of one file are still capped. When every range is
/// settled and the file still does not match, the server keeps sending the same wrong
/// bytes and retrying cannot help. A failure leaves nothing in the cache.
async fn fetch_verified(
    hub: &Hub,
    repo: &RepoRef,
    file: &str,
    remote: &Remote,
    cache: &RepoCache,
    progress: &watch::Sender<FileProgress>,
) -> Result<(), HubError> {
    let kind = DigestKind::of_etag(&remote.etag).ok_or_else(|| HubError::Verification {
        file: file.to_string(),
        message: format!("the Hub's ETag {:?} is neither a sha256 nor a git blob id, so the bytes cannot be checked", remote.etag),
        attempts: 0,
    })?;
    let incomplete = cache.incomplete_blob(&remote.etag);
    let sidecar = cache.parts_sidecar(&remote.etag);
    let blob = cache.blob(&remote.etag);
    let policy = &hub.config().retry;
    let mut ranges = RangeAgreement::default();
    let (mut tries, mut failures) = (0u32, 0u32);
    loop {
        tries += 1;
        let transferred = transfer::transfer(hub, repo, file, remote, kind, &incomplete, &sidecar, progress).await?;
        let mismatch = match verify(remote, kind, &transferred) {
            Ok(()) => {
                let _ = tokio::fs::remove_file(&sidecar).await;
                return super::durable::publish(hub, &incomplete, &blob).await;
            }
            Err(message) => message,
        };
        let failed = |message: String| {
            let (incomplete, sidecar) = (incomplete.clone(), sidecar.clone());
            async move {
                let _ = tokio::fs::remove_file(&sidecar).await;
                let _ = tokio::fs::remove_file(&incomplete).await;
                HubError::Verification { file: file.to_string(), message, attempts: tries }
            }
        };
        let (path, parts) = (incomplete.clone(), transferred.parts.clone());
        let fingerprints: Vec<u32> = super::blocking_io(&incomplete, move || {
            let file = std::fs::File::open(&path)?;
            parts.iter().map(|p| verify::fingerprint(&file, p.start, p.end.min(p.start + p.done))).collect()
        })
        .await?;
        let settled_before = ranges.settled();
        ranges.observe(&fingerprints);
        if ranges.settled() > settled_before {
            failures = 0;
        }
        failures += 1;
        if ranges.all_settled() {
            let message = format!("{mismatch}; two downloads of every range agree, so the server sends these bytes for this ETag");
            return Err(failed(message).await);
        }
        if failures > policy.attempts.max(1) || tries >= policy.most_tries() {
            return Err(failed(mismatch).await);
        }
        // The next try resumes with the settled ranges kept and the others fetched again
        // (a server without ranges sends the whole file again).
        let record = transferred.parts.iter().enumerate().map(|(index, part)| Part {
            done: if ranges.is_settled(index) { part.len() } else { 0 },
            ..part.clone()
        });
        let record = PartsRecord { etag: remote.etag.clone(), size: transferred.length, parts: record.collect() };
        let target = sidecar.clone();
        super::blocking_io(&sidecar, move || ranges::save(&target, &record)).await?;
        progress.send_modify(|state| state.bytes_done = 0);
        let delay = policy.delay(failures, None);
        tracing::warn!(file, error = %mismatch, tries, settled = ranges.settled(), ?delay, "downloaded bytes failed verification; fetching the unsettled ranges again");
        tokio::time::sleep(delay).await;
    }
}

/// The fingerprints each range of a file had in the downloads so far; a range is settled
/// once two downloads gave it the same one.
#[derive(Default)]
struct RangeAgreement {
    seen: Vec<Vec<u32>>,
    settled: Vec<bool>,
}

impl RangeAgreement {
    fn observe(&mut self, fingerprints: &[u32]) {
        if self.seen.len() != fingerprints.len() {
            self.seen = vec![Vec::new(); fingerprints.len()];
            self.settled = vec![false; fingerprints.len()];
        }
        for (index, &fingerprint) in fingerprints.iter().enumerate() {
            if self.settled[index] {
                continue;
            }
            if self.seen[index].contains(&fingerprint) {
                self.settled[index] = true;
            } else {
                self.seen[index].push(fingerprint);
            }
        }
    }

    fn settled(&self) -> usize {
        self.settled.iter().filter(|s| **s).count()
    }

    fn is_settled(&self, index: usize) -> bool {
        self.settled.get(index).copied().unwrap_or(false)
    }

    fn all_settled(&self) -> bool {
        !self.settled.is_empty() && self.settled.iter().all(|s| *s)
    }
}

/// Checks size and digest against the Hub's; the mismatch, worded, if any.
fn verify(remote: &Remote, kind: DigestKind, transferred: &Transferred) -> Result<(), String> {
    if let Some(expected) = remote.size {
        if expected != transferred.length {
            return Err(format!("expected {expected} bytes, received {}", transferred.length));
        }
    }
    if !transferred.digest.eq_ignore_ascii_case(&remote.etag) {
        return Err(format!("{} {} does not match the Hub's {}", kind.name(), transferred.digest, remote.etag));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RangeAgreement;

    #[test]
    fn a_range_settles_when_two_downloads_agree_and_only_then() {
        let mut ranges = RangeAgreement::default();
        ranges.observe(&[1, 2, 3]);
        assert_eq!(ranges.settled(), 0, "one download proves nothing");
        ranges.observe(&[1, 9, 3]);
        assert_eq!((ranges.settled(), ranges.is_settled(1)), (2, false));
        ranges.observe(&[7, 8, 7]);
        assert_eq!(ranges.settled(), 2, "settled ranges keep their first agreement");
        ranges.observe(&[0, 2, 0]);
        assert!(ranges.all_settled(), "a third download agreeing with the first settles the range");
    }
}

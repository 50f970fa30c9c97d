//! Cross-process single flight: `blobs/{etag}.lock` says which process is downloading a
//! blob, so processes sharing one cache download it once.
//!
//! A lock cannot hang others forever: its holder refreshes the file's mtime every
//! `lock_refresh`; a lock not refreshed for `lock_stale_after`, or whose holder is a dead
//! process on this host, is taken over. A waiter polls until the blob appears (the holder
//! finished) or the lock goes stale (the holder died).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{HubConfig, HubError};

/// Who holds a lock, as written into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    pub host: String,
    /// Tells apart holders in one process (two hubs), and a lock taken over from us.
    pub token: String,
}

impl LockHolder {
    fn this_process() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        LockHolder { pid: std::process::id(), host: host_name(), token: format!("{}-{nanos}-{sequence}", std::process::id()) }
    }
}

/// This machine's name, to tell whether a holder's PID can be checked here.
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// False only when `pid` surely is not running (checked through /proc where there is one).
fn process_alive(pid: u32) -> bool {
    let proc_root = Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

/// A held lock. Dropping it stops the heartbeat and removes the file (if still ours).
#[derive(Debug)]
pub struct BlobLock {
    path: PathBuf,
    token: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for BlobLock {
    fn drop(&mut self) {
        self.heartbeat.abort();
        // A tiny synchronous read and unlink: Drop cannot await, and it must happen even
        // when the download's task is cancelled.
        if read_holder(&self.path).is_some_and(|holder| holder.token == self.token) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How waiting for a lock ended.
#[derive(Debug)]
pub enum Acquired {
    /// We hold the lock and may download.
    Locked(BlobLock),
    /// Another process finished the blob while we waited.
    BlobAppeared,
}

fn read_holder(path: &Path) -> Option<LockHolder> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Whether the lock at `path` may be taken over: not refreshed recently, or held by a
/// dead process of this host. A lock whose content is unreadable (being written right
/// now) is judged by its age alone.
fn is_stale(path: &Path, stale_after: Duration, this_host: &str) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else {
        return false;
    };
    let age = metadata.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or_default();
    if age > stale_after {
        return true;
    }
    match read_holder(path) {
        Some(holder) => holder.host == this_host && !process_alive(holder.pid),
        None => false,
    }
}

/// Removes a stale lock. Renaming first means two processes taking over at once cannot
/// both succeed on the same file: the second rename fails and it simply tries again.
fn take_over(path: &Path) {
    let grave = path.with_extension(format!("lock.stale.{}", std::process::id()));
    if std::fs::rename(path, &grave).is_ok() {
        let _ = std::fs::remove_file(&grave);
    }
}

fn try_create(path: &Path, holder: &LockHolder) -> std::io::Result<bool> {
    match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut file) => {
            file.write_all(&serde_json::to_vec(holder).map_err(std::io::Error::other)?)?;
            Ok(true)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    }
}

fn touch(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new().write(true).open(path)?.set_modified(SystemTime::now())
}

/// Takes the lock on `blob`, waiting while another live process holds it.
pub async fn acquire(lock_path: &Path, blob: &Path, config: &HubConfig) -> Result<Acquired, HubError> {
    let holder = LockHolder::this_process();
    let mut reported_wait = false;
    loop {
        if tokio::fs::try_exists(blob).await.unwrap_or(false) {
            return Ok(Acquired::BlobAppeared);
        }
        let (path, me) = (lock_path.to_path_buf(), holder.clone());
        if super::blocking_io(lock_path, move || try_create(&path, &me)).await? {
            let heartbeat = tokio::spawn(refresh_forever(lock_path.to_path_buf(), config.lock_refresh));
            return Ok(Acquired::Locked(BlobLock { path: lock_path.to_path_buf(), token: holder.token, heartbeat }));
        }
        let (path, stale_after, host) = (lock_path.to_path_buf(), config.lock_stale_after, holder.host.clone());
        let stale = super::blocking_io(lock_path, move || Ok(is_stale(&path, stale_after, &host))).await?;
        if stale {
            tracing::info!(lock = %lock_path.display(), "taking over a stale download lock");
            let path = lock_path.to_path_buf();
            super::blocking_io(lock_path, move || {
                take_over(&path);
                Ok(())
            })
            .await?;
            continue;
        }
        if !reported_wait {
            tracing::info!(lock = %lock_path.display(), "another process is downloading this file; waiting");
            reported_wait = true;
        }
        tokio::time::sleep(config.lock_poll).await;
    }
}

async fn refresh_forever(path: PathBuf, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let target = path.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || touch(&target)).await {
            tracing::warn!(lock = %path.display(), %error, "could not refresh the download lock");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_local_holder_is_stale_and_a_live_or_foreign_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let write = |holder: &LockHolder| std::fs::write(&path, serde_json::to_vec(holder).unwrap()).unwrap();
        let here = host_name();
        write(&LockHolder { pid: std::process::id(), host: here.clone(), token: "t".into() });
        assert!(!is_stale(&path, Duration::from_secs(30), &here));
        // PIDs are below 2^22 on Linux, so this one is not running.
        write(&LockHolder { pid: u32::MAX - 1, host: here.clone(), token: "t".into() });
        assert!(is_stale(&path, Duration::from_secs(30), &here));
        write(&LockHolder { pid: u32::MAX - 1, host: "elsewhere".into(), token: "t".into() });
        assert!(!is_stale(&path, Duration::from_secs(30), &here));
        std::thread::sleep(Duration::from_millis(30));
        assert!(is_stale(&path, Duration::from_millis(10), &here));
    }
}

//! Moving one file's bytes into `blobs/{etag}.incomplete`: its byte ranges fetched in
//! parallel (one connection each, bounded by the hub's connection semaphore), each
//! written at its offset with positioned writes on the blocking pool, resumed from the
//! sidecar and after every dropped, truncated or stalled connection.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::metadata::{self, is_sha256, Remote};
use super::ranges::{self, Part, PartsRecord};
use super::retry::{self, Failure};
use super::{FileProgress, Hub, HubError, RepoRef};

/// Bytes gathered from the network before one positioned write.
const WRITE_BUFFER: usize = 1 << 20;
/// Longest a received byte waits in the buffer: on slow links progress and the
/// sidecar still move several times a second.
const WRITE_AT_LEAST_EVERY: Duration = Duration::from_millis(200);
/// How often progress is published.
const PROGRESS_EVERY: Duration = Duration::from_millis(60);
/// How often the sidecar is rewritten while parts are moving.
const SIDECAR_EVERY: Duration = Duration::from_millis(500);

/// What a finished transfer left in the `.incomplete` file.
pub struct Transferred {
    /// Bytes of the file.
    pub length: u64,
    /// Its sha256, when the ETag is one (computed while streaming or from the file).
    pub sha256: Option<String>,
}

/// State the part tasks of one file share.
struct Shared {
    hub: Hub,
    repo: RepoRef,
    file_name: String,
    url: String,
    size: Option<u64>,
    file: Arc<std::fs::File>,
    parts: Vec<Part>,
    /// Bytes of each part on disk; only grows after a write completed.
    done: Vec<AtomicU64>,
}

impl Shared {
    fn bytes_done(&self) -> u64 {
        self.done.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    fn record(&self, etag: &str, size: u64) -> PartsRecord {
        let parts = self
            .parts
            .iter()
            .zip(&self.done)
            .map(|(p, d)| Part { start: p.start, end: p.end, done: d.load(Ordering::Relaxed) })
            .collect();
        PartsRecord { etag: etag.to_string(), size, parts }
    }
}

/// Downloads `remote` into `incomplete`, resuming from `sidecar` when it matches.
pub async fn transfer(
    hub: &Hub,
    repo: &RepoRef,
    file_name: &str,
    remote: &Remote,
    incomplete: &Path,
    sidecar: &Path,
    progress: &watch::Sender<FileProgress>,
) -> Result<Transferred, HubError> {
    let config = hub.config();
    let resumable = remote.size.filter(|_| remote.accepts_ranges);
    let (previous, incomplete_path, sidecar_path) = (resumable, incomplete.to_path_buf(), sidecar.to_path_buf());
    let etag = remote.etag.clone();
    let resumed = super::blocking_io(incomplete, move || {
        let size = match previous {
            Some(size) => size,
            None => return Ok(None),
        };
        let on_disk = std::fs::metadata(&incomplete_path).map(|m| m.len()).ok();
        Ok(ranges::load(&sidecar_path, &etag, size).filter(|_| on_disk == Some(size)))
    })
    .await?;
    let parts = match (&resumed, remote.size) {
        (Some(record), _) => record.parts.clone(),
        (None, Some(size)) => {
            let threshold = if remote.accepts_ranges { config.parallel_threshold } else { u64::MAX };
            ranges::plan(size, threshold, config.min_part_size, config.max_connections)
        }
        // Unknown size: one stream read to its end.
        (None, None) => vec![Part { start: 0, end: u64::MAX, done: 0 }],
    };
    if let Some(record) = &resumed {
        tracing::info!(file = file_name, bytes_on_disk = record.bytes_done(), "resuming a partial download");
    }

    let (path, size, fresh) = (incomplete.to_path_buf(), remote.size, resumed.is_none());
    let file = super::blocking_io(incomplete, move || {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        if fresh {
            file.set_len(0)?;
            if let Some(size) = size {
                // Reserve the whole length so every part can write at its offset.
                file.set_len(size)?;
            }
        }
        Ok(file)
    })
    .await?;

    let shared = Arc::new(Shared {
        hub: hub.clone(),
        repo: repo.clone(),
        file_name: file_name.to_string(),
        url: remote.download_url.clone(),
        size: remote.size,
        file: Arc::new(file),
        done: parts.iter().map(|p| AtomicU64::new(p.done)).collect(),
        parts,
    });
    // A whole file streamed from byte 0 in order is hashed as it arrives (on the blocking
    // pool, with each write); anything else is hashed from disk at the end.
    let stream_hash = is_sha256(&remote.etag) && shared.parts.len() == 1 && shared.parts[0].done == 0;

    let mut tasks = JoinSet::new();
    for index in 0..shared.parts.len() {
        let hasher = stream_hash.then(Sha256::new);
        tasks.spawn(fetch_part(shared.clone(), index, hasher));
    }
    let mut streamed_hasher = None;
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    let mut last_saved = Instant::now();
    let save_sidecar = |shared: &Arc<Shared>| {
        let record = resumable.map(|size| shared.record(&remote.etag, size));
        let path = sidecar.to_path_buf();
        async move {
            if let Some(record) = record {
                let target = path.clone();
                if let Err(error) = super::blocking_io(&path, move || ranges::save(&target, &record)).await {
                    tracing::warn!(%error, "could not record download progress");
                }
            }
        }
    };
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(hasher))) => streamed_hasher = streamed_hasher.or(hasher),
                Some(Ok(Err(error))) => {
                    tasks.abort_all();
                    save_sidecar(&shared).await;
                    return Err(error);
                }
                Some(Err(join_error)) => {
                    tasks.abort_all();
                    save_sidecar(&shared).await;
                    return Err(HubError::io(incomplete, join_error));
                }
            },
            _ = ticker.tick() => {
                let done = shared.bytes_done();
                progress.send_if_modified(|state| std::mem::replace(&mut state.bytes_done, done) != done);
                if last_saved.elapsed() >= SIDECAR_EVERY {
                    save_sidecar(&shared).await;
                    last_saved = Instant::now();
                }
            }
        }
    }
    let length = shared.bytes_done();
    progress.send_modify(|state| state.bytes_done = length);

    let (file, path, want_hash) = (shared.file.clone(), incomplete.to_path_buf(), is_sha256(&remote.etag));
    let sha256 = super::blocking_io(incomplete, move || {
        file.sync_all()?;
        Ok(match streamed_hasher {
            Some(hasher) => Some(hex::encode(hasher.finalize())),
            None if want_hash => Some(hash_file(&path)?),
            None => None,
        })
    })
    .await?;
    Ok(Transferred { length, sha256 })
}

/// The sha256 of a file, read in large blocks (blocking; call on the blocking pool).
fn hash_file(path: &PathBuf) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 4 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

/// Brings one part to completion, retrying transient failures with backoff. A try that
/// moved bytes resets the count, so a long download on a flaky link keeps going.
async fn fetch_part(shared: Arc<Shared>, index: usize, mut hasher: Option<Sha256>) -> Result<Option<Sha256>, HubError> {
    let policy = shared.hub.config().retry.clone();
    let mut failures = 0;
    loop {
        let before = shared.done[index].load(Ordering::Relaxed);
        if shared.size.is_some() && before >= shared.parts[index].len() {
            return Ok(hasher);
        }
        let permit = shared.hub.inner.connections.acquire().await.map_err(|e| HubError::io(Path::new(&shared.url), e))?;
        let outcome = stream_range(&shared, index, &mut hasher).await;
        drop(permit);
        match outcome {
            Ok(()) => return Ok(hasher),
            Err(Failure::Permanent(error)) => return Err(error),
            Err(Failure::Transient { error, retry_after }) => {
                if shared.done[index].load(Ordering::Relaxed) > before {
                    failures = 0;
                }
                failures += 1;
                if failures >= policy.attempts.max(1) {
                    return Err(error);
                }
                let delay = policy.delay(failures, retry_after);
                tracing::debug!(file = %shared.file_name, part = index, %error, ?delay, "retrying a byte range");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Writes `buffer` at the part's current end, on the blocking pool, then counts it.
async fn write_out(shared: &Shared, index: usize, buffer: Vec<u8>, hasher: &mut Option<Sha256>) -> Result<Vec<u8>, Failure> {
    if buffer.is_empty() {
        return Ok(buffer);
    }
    let position = shared.parts[index].start + shared.done[index].load(Ordering::Relaxed);
    let (file, mut running_hash) = (shared.file.clone(), hasher.take());
    let written = tokio::task::spawn_blocking(move || {
        file.write_all_at(&buffer, position)?;
        if let Some(running_hash) = running_hash.as_mut() {
            running_hash.update(&buffer);
        }
        let length = buffer.len() as u64;
        let mut buffer = buffer;
        buffer.clear();
        Ok::<_, std::io::Error>((buffer, running_hash, length))
    })
    .await;
    let io_error = |message: String| Failure::Permanent(HubError::Io { path: shared.file_name.clone(), message });
    let (buffer, running_hash, length) = written.map_err(|e| io_error(e.to_string()))?.map_err(|e| io_error(e.to_string()))?;
    *hasher = running_hash;
    shared.done[index].fetch_add(length, Ordering::Relaxed);
    Ok(buffer)
}

/// One GET for the missing bytes of one part, streamed to disk. Whatever arrived before
/// a failure is kept, so the next try asks only for the rest.
async fn stream_range(shared: &Shared, index: usize, hasher: &mut Option<Sha256>) -> Result<(), Failure> {
    let config = shared.hub.config();
    let url = shared.url.as_str();
    let part = &shared.parts[index];
    let offset = part.start + shared.done[index].load(Ordering::Relaxed);
    let mut request = shared.hub.inner.client.get(url);
    if shared.size.is_some() || offset > 0 {
        let end = if part.end == u64::MAX { String::new() } else { (part.end - 1).to_string() };
        request = request.header(RANGE, format!("bytes={offset}-{end}"));
    }
    let request = metadata::authorize(&shared.hub, request, url);
    let response = match tokio::time::timeout(config.stall_timeout, request.send()).await {
        Err(_) => return Err(Failure::transient(url, format!("no response within {:?}", config.stall_timeout))),
        Ok(Err(error)) => return Err(Failure::from_reqwest(url, &error)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    match status {
        StatusCode::PARTIAL_CONTENT => {
            let range_start = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if range_start != Some(offset) {
                let message = format!("asked for bytes from {offset}, got Content-Range {range_start:?}");
                return Err(Failure::Permanent(HubError::Http { url: url.to_string(), message }));
            }
        }
        StatusCode::OK if offset == 0 => {}
        StatusCode::OK if shared.parts.len() == 1 => {
            // The server ignored the range: the whole file is coming again from byte 0.
            shared.done[index].store(0, Ordering::Relaxed);
            if hasher.is_some() {
                *hasher = Some(Sha256::new());
            }
        }
        StatusCode::OK => {
            let message = "the server ignored a Range request, so the file cannot download in parts".to_string();
            return Err(Failure::Permanent(HubError::Http { url: url.to_string(), message }));
        }
        _ => {
            let error = metadata::status_error(url, status, response.headers(), &shared.repo, &shared.file_name);
            return Err(if retry::is_transient_status(status) {
                Failure::Transient { error, retry_after: retry::retry_after(&response) }
            } else {
                Failure::Permanent(error)
            });
        }
    }
    let start = part.start + shared.done[index].load(Ordering::Relaxed);
    let expected = shared.size.map(|_| part.end - start);
    let mut received = 0u64;
    let mut buffer = Vec::with_capacity(WRITE_BUFFER);
    let mut last_write = Instant::now();
    let mut body = response.bytes_stream();
    let outcome = loop {
        match tokio::time::timeout(config.stall_timeout, body.next()).await {
            Err(_) => break Err(Failure::transient(url, format!("stalled: no bytes for {:?}", config.stall_timeout))),
            Ok(None) => {
                break match expected {
                    Some(expected) if received < expected => {
                        Err(Failure::transient(url, format!("connection closed after {received} of {expected} bytes")))
                    }
                    _ => Ok(()),
                }
            }
            Ok(Some(Err(error))) => break Err(Failure::from_reqwest(url, &error)),
            Ok(Some(Ok(chunk))) => {
                if expected.is_some_and(|expected| received + chunk.len() as u64 > expected) {
                    let message = format!("sent more than the {} bytes asked for", expected.unwrap_or(0));
                    break Err(Failure::Permanent(HubError::Http { url: url.to_string(), message }));
                }
                received += chunk.len() as u64;
                buffer.extend_from_slice(&chunk);
                if buffer.len() >= WRITE_BUFFER || last_write.elapsed() >= WRITE_AT_LEAST_EVERY {
                    buffer = write_out(shared, index, buffer, hasher).await?;
                    last_write = Instant::now();
                }
            }
        }
    };
    // Keep what arrived, even before a failure: the retry resumes after it.
    write_out(shared, index, buffer, hasher).await?;
    outcome
}

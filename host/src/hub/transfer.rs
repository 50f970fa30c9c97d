//! Moving one file's bytes into `blobs/{etag}.incomplete`: its byte ranges fetched in
//! parallel (one connection each, bounded by the hub's connection semaphore), each
//! written at its offset with positioned writes on the blocking pool, resumed from the
//! sidecar and after every dropped, truncated or stalled connection.
//!
//! Every byte is hashed while the file downloads, on a blocking thread of its own that
//! follows the file's written prefix in order ([`hash_in_order`]): the bytes of the first
//! range as they land, the later ranges as soon as everything before them is on disk,
//! read back from the page cache. Ranges are small and handed to connections in file
//! order, so that prefix advances steadily and little is left to hash when the last
//! byte arrives; the runtime's threads never write or hash.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::metadata::{self, Remote};
use super::ranges::{self, Part, PartsRecord};
use super::retry::{self, Failure};
use super::verify::{ContentHasher, DigestKind};
use super::{FileProgress, Hub, HubError, RepoRef};

/// Bytes gathered from the network before one positioned write.
const WRITE_BUFFER: usize = 1 << 20;
/// Bytes read back and hashed at a time.
const HASH_BLOCK: usize = 2 << 20;
/// Longest the hasher sleeps without being woken (a safety net; writes wake it).
const HASH_POLL: Duration = Duration::from_millis(50);
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
    /// Its digest, of the kind the ETag is (computed while the bytes arrived).
    pub digest: String,
    /// The byte ranges it was fetched as.
    pub parts: Vec<Part>,
}

/// What the hasher is told by the writers.
#[derive(Default)]
struct Signal {
    /// Completed writes so far (a change means the written prefix may have grown).
    writes: u64,
    /// Times a range went back to its start (the server ignored a Range): hash again from 0.
    restarts: u64,
    /// The transfer ended: hash what is there and stop.
    finished: bool,
    /// The transfer failed: stop without a digest.
    aborted: bool,
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
    signal: Mutex<Signal>,
    wake: Condvar,
}

impl Shared {
    fn bytes_done(&self) -> u64 {
        self.done.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    /// The end of the bytes on disk from the start of the file without a gap.
    fn written_prefix(&self) -> u64 {
        for (part, done) in self.parts.iter().zip(&self.done) {
            let done = done.load(Ordering::Acquire);
            if part.end == u64::MAX || done < part.len() {
                return part.start + done;
            }
        }
        self.parts.last().map_or(0, |p| p.end)
    }

    fn tell_hasher(&self, change: impl FnOnce(&mut Signal)) {
        change(&mut self.signal.lock().unwrap());
        self.wake.notify_all();
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

/// Downloads `remote` into `incomplete`, resuming from `sidecar` when it matches, and
/// hashes it (as `kind`) on the way.
#[allow(clippy::too_many_arguments)]
pub async fn transfer(
    hub: &Hub,
    repo: &RepoRef,
    file_name: &str,
    remote: &Remote,
    kind: DigestKind,
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
        if fresh {
            // A new file rather than a truncated one: ext4 flushes a file that was
            // truncated to zero and rewritten when it is closed (`auto_da_alloc`), which
            // would write the whole blob out at once, wherever the close happens.
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        if fresh {
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
        signal: Mutex::new(Signal::default()),
        wake: Condvar::new(),
    });
    let hashing = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || hash_in_order(&shared, kind))
    };

    // Parts start in file order (the connection semaphore is fair), which keeps the
    // written prefix, and so the hasher, moving.
    let mut tasks = JoinSet::new();
    for index in 0..shared.parts.len() {
        tasks.spawn(fetch_part(shared.clone(), index));
    }
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
            joined = tasks.join_next() => {
                let error = match joined {
                    None => break,
                    Some(Ok(Ok(()))) => continue,
                    Some(Ok(Err(error))) => error,
                    Some(Err(join_error)) => HubError::io(incomplete, join_error),
                };
                tasks.abort_all();
                shared.tell_hasher(|signal| signal.aborted = true);
                save_sidecar(&shared).await;
                let _ = hashing.await;
                return Err(error);
            }
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
    shared.tell_hasher(|signal| signal.finished = true);
    let hashed = hashing.await.map_err(|e| HubError::io(incomplete, e))?.map_err(|e| HubError::io(incomplete, e))?;
    let (digest, hashed_length) =
        hashed.ok_or_else(|| HubError::io(incomplete, "the hasher stopped before the end of the file"))?;
    if hashed_length != length {
        let message = format!("hashed {hashed_length} bytes of {length}");
        return Err(HubError::io(incomplete, message));
    }
    let parts = shared.parts.iter().zip(&shared.done).map(|(p, d)| Part { done: d.load(Ordering::Relaxed), ..p.clone() });
    let parts = parts.collect();
    // The last handle to the file closes on the blocking pool: a close may wait on the
    // filesystem, and this is a runtime thread.
    tokio::task::spawn_blocking(move || drop(shared));
    Ok(Transferred { length, digest, parts })
}

/// Hashes the file in order as its written prefix grows, until the transfer finishes
/// (blocking: runs on a thread of the blocking pool). Returns the digest and the bytes
/// hashed, or `None` if the transfer was aborted.
fn hash_in_order(shared: &Shared, kind: DigestKind) -> std::io::Result<Option<(String, u64)>> {
    let mut buffer = vec![0u8; HASH_BLOCK];
    let mut position = 0u64;
    let mut hasher = None;
    let mut restarts_seen = 0;
    loop {
        let (writes, finished) = {
            let signal = shared.signal.lock().unwrap();
            if signal.aborted {
                return Ok(None);
            }
            if signal.restarts != restarts_seen {
                (restarts_seen, position, hasher) = (signal.restarts, 0, None);
            }
            (signal.writes, signal.finished)
        };
        let available = shared.written_prefix();
        // A git blob id starts with the size, so an unknown size waits for the end.
        let size = shared.size.or(finished.then_some(available));
        if hasher.is_none() {
            hasher = size.map(|size| ContentHasher::new(kind, size));
        }
        if let Some(hasher) = hasher.as_mut().filter(|_| available > position) {
            let n = buffer.len().min((available - position) as usize);
            shared.file.read_exact_at(&mut buffer[..n], position)?;
            hasher.update(&buffer[..n]);
            position += n as u64;
            continue;
        }
        if finished {
            return Ok(hasher.map(|h| (h.finish(), position)));
        }
        let signal = shared.signal.lock().unwrap();
        if signal.writes == writes && !signal.finished && !signal.aborted {
            drop(shared.wake.wait_timeout(signal, HASH_POLL).unwrap());
        }
    }
}

/// Brings one part to completion, retrying transient failures with backoff. A try that
/// moved bytes resets the count, so a long download on a flaky link keeps going; the
/// tries of one part are still capped ([`super::RetryPolicy::most_tries`]), so a link
/// that delivers a trickle before every drop cannot keep it going for ever.
async fn fetch_part(shared: Arc<Shared>, index: usize) -> Result<(), HubError> {
    let policy = shared.hub.config().retry.clone();
    let mut failures = 0;
    let mut tries = 0;
    loop {
        let before = shared.done[index].load(Ordering::Relaxed);
        if shared.size.is_some() && before >= shared.parts[index].len() {
            return Ok(());
        }
        let permit = shared.hub.inner.connections.acquire().await.map_err(|e| HubError::io(Path::new(&shared.url), e))?;
        let outcome = stream_range(&shared, index).await;
        drop(permit);
        tries += 1;
        match outcome {
            Ok(()) => return Ok(()),
            Err(Failure::Permanent(error)) => return Err(error),
            Err(Failure::Transient { error, retry_after }) => {
                if shared.done[index].load(Ordering::Relaxed) > before {
                    failures = 0;
                }
                failures += 1;
                if failures >= policy.attempts.max(1) || tries >= policy.most_tries() {
                    return Err(error.after_tries(tries));
                }
                let delay = policy.delay(failures, retry_after);
                tracing::debug!(file = %shared.file_name, part = index, %error, ?delay, "retrying a byte range");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Writes `buffer` at the part's current end, on the blocking pool, then counts it and
/// wakes the hasher.
async fn write_out(shared: &Shared, index: usize, buffer: Vec<u8>) -> Result<Vec<u8>, Failure> {
    if buffer.is_empty() {
        return Ok(buffer);
    }
    let position = shared.parts[index].start + shared.done[index].load(Ordering::Relaxed);
    let file = shared.file.clone();
    let written = tokio::task::spawn_blocking(move || {
        file.write_all_at(&buffer, position)?;
        let length = buffer.len() as u64;
        let mut buffer = buffer;
        buffer.clear();
        Ok::<_, std::io::Error>((buffer, length))
    })
    .await;
    let io_error = |message: String| Failure::Permanent(HubError::Io { path: shared.file_name.clone(), message });
    let (buffer, length) = written.map_err(|e| io_error(e.to_string()))?.map_err(|e| io_error(e.to_string()))?;
    shared.done[index].fetch_add(length, Ordering::Release);
    shared.tell_hasher(|signal| signal.writes += 1);
    Ok(buffer)
}

/// One GET for the missing bytes of one part, streamed to disk. Whatever arrived before
/// a failure is kept, so the next try asks only for the rest.
async fn stream_range(shared: &Shared, index: usize) -> Result<(), Failure> {
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
            shared.done[index].store(0, Ordering::Release);
            shared.tell_hasher(|signal| signal.restarts += 1);
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
                    buffer = write_out(shared, index, buffer).await?;
                    last_write = Instant::now();
                }
            }
        }
    };
    // Keep what arrived, even before a failure: the retry resumes after it.
    write_out(shared, index, buffer).await?;
    outcome
}

//! Dynamic batching for embedding models: one thread per loaded model merges the
//! requests that plugins send at about the same time into one model call, then splits
//! the vectors back. Batching is continuous: requests that arrive while the model is
//! busy form the next call, so under load calls grow by themselves, and a request that
//! finds the model idle runs at once (by default; `max_wait` lets it wait for company,
//! trading latency for larger calls). A call holds at most `max_inputs` inputs; only
//! requests with the same options (task, dimensions, normalisation, truncation) share a
//! call. Within the call the family sorts inputs by length into padded sub-batches, so
//! mixing short and long requests costs little padding.
//!
//! Why a thread of its own and not a tokio task handing each call to `spawn_blocking`:
//! every hop between threads costs a wake-up, and on a small machine whose cores are all
//! busy inside the model's thread pool a wake-up waits for a time slice. A plugin's
//! request went task → batching task → blocking thread → back (three hops); now it goes
//! to this thread and back (two), and the model always runs on the same thread, whose
//! caches and heap arena stay warm. Measured at batch 1 on MiniLM: through the registry
//! 0.80x of a direct call before, BENCHMARKS.md ("Embeddings") for after. The runtime is
//! never blocked: submitting is a channel send, the answer a oneshot awaited.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::capabilities::{EmbedRequest, Embeddings, TextEmbedder};
use crate::error::{LanternError, LanternResult};
use crate::registry::panic_error;

/// How long and how large a batch may grow.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// How long a request that finds the model idle waits for others to join it.
    pub max_wait: Duration,
    /// Inputs per model call; one request larger than this runs alone.
    pub max_inputs: usize,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        // No wait: a lone sentence takes ~4 ms on MiniLM here, so the 3 ms the first
        // version waited cost a single plugin 40 % of its rate (BENCHMARKS.md), while
        // concurrent plugins batch anyway behind a busy model.
        BatchPolicy { max_wait: Duration::ZERO, max_inputs: 64 }
    }
}

/// What a batcher has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Requests answered or under way.
    pub requests: u64,
    /// Model calls made for them.
    pub model_calls: u64,
    /// Inputs embedded.
    pub inputs: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    model_calls: AtomicU64,
    inputs: AtomicU64,
}

struct Job {
    request: EmbedRequest,
    reply: oneshot::Sender<LanternResult<Embeddings>>,
}

/// The sending side of one model's batching thread; dropping it ends the thread once
/// the requests already sent are answered.
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    /// Requests submitted and not yet answered.
    active: Arc<AtomicUsize>,
}

/// Decrements the active count however the waiting request ends (answer or cancel).
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batcher {
    /// Starts the batching thread for `model`.
    pub fn spawn(model: Arc<dyn TextEmbedder>, policy: BatchPolicy) -> Self {
        let (jobs, receiver) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("lantern-embed".into())
            .spawn(move || run(model, receiver, policy, thread_counters))
            .expect("spawning an embedding thread");
        Batcher { jobs, counters, active: Arc::new(AtomicUsize::new(0)) }
    }

    /// Embeds `request`, in one model call with whatever compatible requests arrive with it.
    pub async fn embed(&self, request: EmbedRequest) -> LanternResult<Embeddings> {
        self.active.fetch_add(1, Ordering::SeqCst);
        let _active = ActiveGuard(self.active.clone());
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { request, reply }).map_err(|_| LanternError::Cancelled)?;
        answer.await.map_err(|_| LanternError::Cancelled)?
    }

    pub fn counts(&self) -> BatchCounts {
        BatchCounts {
            requests: self.counters.requests.load(Ordering::SeqCst),
            model_calls: self.counters.model_calls.load(Ordering::SeqCst),
            inputs: self.counters.inputs.load(Ordering::SeqCst),
        }
    }

    /// Whether any request is waiting for or inside a model call.
    pub fn is_busy(&self) -> bool {
        self.active.load(Ordering::SeqCst) > 0
    }
}

fn run(model: Arc<dyn TextEmbedder>, receiver: mpsc::Receiver<Job>, policy: BatchPolicy, counters: Arc<Counters>) {
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        if pending.is_empty() {
            // Idle: wait for a first request, then give others `max_wait` to join it.
            match receiver.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
            pending.extend(receiver.try_iter());
            let deadline = Instant::now() + policy.max_wait;
            while input_count(&pending) < policy.max_inputs {
                match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(job) => pending.push_back(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        } else {
            // Requests that queued during the last call have waited already.
            pending.extend(receiver.try_iter());
        }
        // A request whose plugin has gone (cancelled, timed out) is not computed.
        pending.retain(|job| !job.reply.is_closed());
        if pending.is_empty() {
            continue;
        }
        let group = take_compatible(&mut pending, policy.max_inputs);
        counters.requests.fetch_add(group.len() as u64, Ordering::SeqCst);
        run_group(&model, group, &counters);
    }
}

fn input_count(jobs: &VecDeque<Job>) -> usize {
    jobs.iter().map(|job| job.request.inputs.len()).sum()
}

/// The oldest request and the later ones with the same options that fit beside it.
fn take_compatible(pending: &mut VecDeque<Job>, max_inputs: usize) -> Vec<Job> {
    let first = pending.pop_front().expect("called with pending requests");
    let mut size = first.request.inputs.len();
    let mut group = vec![first];
    let mut rest = VecDeque::with_capacity(pending.len());
    for job in pending.drain(..) {
        let fits = size + job.request.inputs.len() <= max_inputs;
        if fits && job.request.same_options(&group[0].request) {
            size += job.request.inputs.len();
            group.push(job);
        } else {
            rest.push_back(job);
        }
    }
    *pending = rest;
    group
}

/// One model call on this thread; a panic in the model becomes a typed error and the
/// thread lives on for the next requests.
fn call_model(model: &Arc<dyn TextEmbedder>, request: &EmbedRequest, counters: &Counters) -> LanternResult<Embeddings> {
    counters.model_calls.fetch_add(1, Ordering::SeqCst);
    counters.inputs.fetch_add(request.inputs.len() as u64, Ordering::SeqCst);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.embed(request)))
        .unwrap_or_else(|payload| Err(panic_error("embedding", payload)))
}

/// One model call for the whole group, split back; if it fails (one request's input
/// refused, say), each request runs alone so that only its own error reaches it.
fn run_group(model: &Arc<dyn TextEmbedder>, group: Vec<Job>, counters: &Counters) {
    if group.len() == 1 {
        let job = group.into_iter().next().unwrap();
        let _ = job.reply.send(call_model(model, &job.request, counters));
        return;
    }
    let sizes: Vec<usize> = group.iter().map(|job| job.request.inputs.len()).collect();
    let mut merged = group[0].request.clone();
    merged.inputs = group.iter().flat_map(|job| job.request.inputs.iter().cloned()).collect();
    match call_model(model, &merged, counters) {
        Ok(embeddings) => {
            for (job, part) in group.into_iter().zip(embeddings.split(&sizes)) {
                let _ = job.reply.send(Ok(part));
            }
        }
        Err(_) => {
            for job in group {
                let _ = job.reply.send(call_model(model, &job.request, counters));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::capabilities::EmbedTask;

    /// Records each call's task and inputs; each vector is the input's length.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(EmbedTask, Vec<String>)>>,
    }

    impl TextEmbedder for Recorder {
        fn dimensions(&self) -> usize {
            1
        }
        fn max_tokens(&self) -> usize {
            100
        }
        fn embed(&self, request: &EmbedRequest) -> LanternResult<Embeddings> {
            self.calls.lock().unwrap().push((request.task.clone(), request.inputs.clone()));
            Ok(Embeddings {
                vectors: request.inputs.iter().map(|s| vec![s.len() as f32]).collect(),
                dimensions: 1,
                input_tokens: request.inputs.iter().map(|s| s.len()).collect(),
                input_truncated: vec![false; request.inputs.len()],
            })
        }
    }

    fn request(task: EmbedTask, inputs: &[&str]) -> EmbedRequest {
        EmbedRequest { task, ..EmbedRequest::new(inputs.iter().map(|s| s.to_string()).collect()) }
    }

    #[tokio::test]
    async fn merges_compatible_requests_only_and_splits_results_back() {
        let recorder = Arc::new(Recorder::default());
        let batcher = Batcher::spawn(recorder.clone(), BatchPolicy { max_wait: Duration::from_millis(50), max_inputs: 64 });
        let (a, b, c, d) = tokio::join!(
            batcher.embed(request(EmbedTask::Document, &["a", "bb"])),
            batcher.embed(request(EmbedTask::Query, &["ccc"])),
            batcher.embed(request(EmbedTask::Document, &["dddd"])),
            batcher.embed(request(EmbedTask::Query, &["eeeee", "ffffff"])),
        );
        assert_eq!(a.unwrap().vectors, vec![vec![1.0], vec![2.0]]);
        assert_eq!(b.unwrap().vectors, vec![vec![3.0]]);
        let c = c.unwrap();
        assert_eq!((c.vectors, c.input_tokens), (vec![vec![4.0]], vec![4]));
        assert_eq!(d.unwrap().vectors, vec![vec![5.0], vec![6.0]]);
        let calls = recorder.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                (EmbedTask::Document, vec!["a".into(), "bb".into(), "dddd".into()]),
                (EmbedTask::Query, vec!["ccc".into(), "eeeee".into(), "ffffff".into()]),
            ]
        );
        assert_eq!(batcher.counts(), BatchCounts { requests: 4, model_calls: 2, inputs: 6 });
    }

    #[tokio::test]
    async fn a_batch_holds_at_most_max_inputs() {
        let recorder = Arc::new(Recorder::default());
        let batcher = Batcher::spawn(recorder.clone(), BatchPolicy { max_wait: Duration::from_millis(50), max_inputs: 3 });
        let (a, b, c) = tokio::join!(
            batcher.embed(request(EmbedTask::Document, &["a", "b"])),
            batcher.embed(request(EmbedTask::Document, &["c", "d"])),
            batcher.embed(request(EmbedTask::Document, &["e"])),
        );
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        let sizes: Vec<usize> = recorder.calls.lock().unwrap().iter().map(|(_, inputs)| inputs.len()).collect();
        // a and b (4 inputs) cannot share a call; c joins whichever has room.
        assert_eq!(sizes.iter().sum::<usize>(), 5);
        assert_eq!(sizes.len(), 2, "{sizes:?}");
        assert!(sizes.iter().all(|&n| n <= 3), "{sizes:?}");
    }
}

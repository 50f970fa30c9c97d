//! Model-wide progress: sums the files of one [`super::Hub::fetch`] and estimates the
//! transfer rate and time left, for the CLI's total bar, embedders and guests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{FetchProgress, ProgressSink};

/// The rate is re-estimated at most this often, so bursts of tiny updates do not make it jump.
const RATE_WINDOW: Duration = Duration::from_millis(250);

#[derive(Default, Clone, Copy)]
struct FileState {
    /// Bytes present when the file was first reported (cached or resumed), not counted in the rate.
    initial: u64,
    done: u64,
    total: Option<u64>,
    finished: bool,
}

struct State {
    files: HashMap<String, FileState>,
    window_start: Instant,
    window_start_bytes: u64,
    /// Exponentially smoothed bytes per second of transfer (not of bytes found on disk).
    rate: f64,
}

/// Collects per-file reports of one fetch and passes them on with model totals.
pub struct ModelProgress {
    files_total: usize,
    sink: ProgressSink,
    state: Mutex<State>,
}

impl ModelProgress {
    pub fn new(files: &[String], sink: ProgressSink) -> Self {
        let state = State { files: HashMap::new(), window_start: Instant::now(), window_start_bytes: 0, rate: 0.0 };
        ModelProgress { files_total: files.len(), sink, state: Mutex::new(state) }
    }

    /// Records one file's state and reports it with the model's totals.
    pub fn report(&self, file: &str, done: u64, total: Option<u64>, finished: bool) {
        let progress = {
            let mut state = self.state.lock().unwrap();
            let entry = state.files.entry(file.to_string()).or_insert(FileState { initial: done, ..FileState::default() });
            entry.done = done.max(entry.done);
            entry.total = total.or(entry.total);
            entry.finished |= finished;
            let transferred: u64 = state.files.values().map(|f| f.done.saturating_sub(f.initial)).sum();
            let elapsed = state.window_start.elapsed();
            if elapsed >= RATE_WINDOW {
                let sample = (transferred - state.window_start_bytes.min(transferred)) as f64 / elapsed.as_secs_f64();
                state.rate = if state.rate == 0.0 { sample } else { 0.7 * state.rate + 0.3 * sample };
                state.window_start = Instant::now();
                state.window_start_bytes = transferred;
            }
            let model_done: u64 = state.files.values().map(|f| f.done).sum();
            let known: Vec<u64> = state.files.values().filter_map(|f| f.total).collect();
            let model_total = (known.len() == self.files_total).then(|| known.iter().sum::<u64>());
            let eta = match model_total {
                Some(total) if state.rate > 0.0 => Some(Duration::from_secs_f64(total.saturating_sub(model_done) as f64 / state.rate)),
                _ => None,
            };
            FetchProgress {
                file: file.to_string(),
                file_bytes_done: done,
                file_bytes_total: total,
                file_done: finished,
                model_bytes_done: model_done,
                model_bytes_total: model_total,
                files_done: state.files.values().filter(|f| f.finished).count(),
                files_total: self.files_total,
                bytes_per_second: state.rate,
                eta,
            }
        };
        (self.sink)(progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn totals_appear_once_every_file_size_is_known_and_cached_bytes_do_not_count_as_rate() {
        let seen: Arc<Mutex<Vec<FetchProgress>>> = Arc::default();
        let record = seen.clone();
        let files = vec!["a".to_string(), "b".to_string()];
        let progress = ModelProgress::new(&files, Arc::new(move |p| record.lock().unwrap().push(p)));
        progress.report("a", 100, Some(100), true);
        progress.report("b", 0, None, false);
        progress.report("b", 0, Some(1000), false);
        std::thread::sleep(RATE_WINDOW + Duration::from_millis(20));
        progress.report("b", 500, Some(1000), false);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[1].model_bytes_total, None);
        assert_eq!(seen[2].model_bytes_total, Some(1100));
        let last = seen.last().unwrap();
        assert_eq!((last.model_bytes_done, last.files_done, last.files_total), (600, 1, 2));
        // 500 bytes moved in ~270 ms: the cached 100 bytes of "a" are not part of the rate.
        assert!(last.bytes_per_second > 1000.0 && last.bytes_per_second < 2000.0, "{}", last.bytes_per_second);
        assert!(last.eta.is_some());
    }
}

//! The CPU budget of a run: the CPU time its future uses while it is being polled.
//!
//! Why this and not fuel or counting epoch ticks: fuel instruments every guest block
//! (a cost paid by every plugin, budget or not) and counts instructions, not time;
//! counting epoch deadlines charges the guest for ticks that passed while it waited on
//! a model or on stdin. The guest's code runs only inside `poll` of its run future
//! (wasmtime resumes the guest's fiber there, and the epoch tick makes a busy guest
//! return `Pending` every 10 ms), so the thread CPU time spent inside those polls is
//! exactly what the run cost the host's async threads: the guest's own instructions and
//! the host's glue for its calls. Model work runs on worker threads and is bounded by
//! the token and input limits instead; waiting costs nothing and is not charged. The
//! cost of measuring is two clock reads per poll. A run is stopped at the first poll
//! that ends over budget, so it overshoots by at most one tick.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// CPU time the calling thread has used so far (wall time where the platform has no
/// per-thread clock, which can only over-charge).
fn thread_cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `now` is a valid timespec for the call to fill.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0 {
            return Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        }
    }
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// What became of a metered future.
pub enum Metered<T> {
    Done(T),
    /// The budget ran out; the future was dropped (which stops the guest).
    OverBudget(Duration),
}

/// Polls `future` while its CPU time stays within `budget` (`None`: no limit), and
/// reports the CPU time it used.
pub async fn metered<F: Future>(future: F, budget: Option<Duration>) -> (Metered<F::Output>, Duration) {
    let mut future = std::pin::pin!(future);
    let mut used = Duration::ZERO;
    let outcome = std::future::poll_fn(|cx: &mut Context<'_>| {
        let start = thread_cpu_time();
        let poll = Pin::as_mut(&mut future).poll(cx);
        used += thread_cpu_time().saturating_sub(start);
        match poll {
            Poll::Ready(output) => Poll::Ready(Metered::Done(output)),
            Poll::Pending if budget.is_some_and(|budget| used > budget) => Poll::Ready(Metered::OverBudget(used)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    (outcome, used)
}

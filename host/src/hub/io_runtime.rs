//! The hub's own small tokio runtime, on which every transfer and listing runs.
//!
//! Why not the caller's runtime: a download keeps its runtime busy (up to eight
//! connections' bodies read and copied, writes and hashing handed to the blocking pool,
//! progress published), and a program that embeds the host runs its own work on its
//! runtime too — a web server's requests, a plugin's timers. On a current-thread
//! runtime a 1 ms ticker was 12-22 ms late during a 1 GiB download (BENCHMARKS.md,
//! "Downloads"). On threads of its own the transfer competes with the caller only for
//! CPU time, like any other thread; callers await a channel.
//!
//! Started on first use (a host that never downloads starts no threads); its HTTP
//! connections live on it, so a caller's runtime ending cannot strand a pooled
//! connection that another caller would then reuse.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

/// Worker threads: reading sockets is cheap; writes and hashing go to its blocking pool.
const WORKERS: usize = 2;

#[derive(Default)]
pub struct IoRuntime {
    runtime: OnceLock<Runtime>,
}

impl IoRuntime {
    fn handle(&self) -> &Handle {
        self.runtime
            .get_or_init(|| {
                Builder::new_multi_thread()
                    .worker_threads(WORKERS)
                    .thread_name("lantern-hub")
                    .enable_all()
                    .build()
                    .expect("starting the hub's runtime")
            })
            .handle()
    }

    /// Runs `work` on the hub's runtime.
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(work)
    }

    /// Runs `work` on the hub's runtime and waits for it; dropping the returned future
    /// cancels `work`, as dropping the future itself would.
    pub async fn run<F>(&self, work: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
        impl<T> Drop for AbortOnDrop<T> {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut task = AbortOnDrop(self.spawn(work));
        match (&mut task.0).await {
            Ok(output) => output,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("the hub's runtime stopped a task it was running: {error}"),
        }
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // The last handle to the hub may go on one of this runtime's own threads (a
            // transfer task held it) or inside another runtime, where a runtime may not
            // be dropped in place: shut it down from a plain thread without waiting.
            std::thread::spawn(move || runtime.shutdown_background());
        }
    }
}

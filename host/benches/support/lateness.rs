//! How punctual a runtime stays while work runs on it: shared by the download and the
//! inference benches (issue 9: a 1 ms ticker's worst lateness < 5 ms).

use std::time::{Duration, Instant};

/// Runs `work` on a current-thread runtime beside a 1 ms ticker, and returns how long the
/// work took and the ticker's worst lateness (recorded in a shared cell, since the
/// ticker is aborted at the end). A plain OS thread sleeping 1 ms at a time runs beside it
/// as the control: its worst lateness is what the OS scheduler alone costs on this machine
/// (a runtime cannot be more punctual than a thread of its own), the third value.
pub fn responsiveness<F: std::future::Future<Output = ()>>(work: impl FnOnce() -> F) -> (Duration, Duration, Duration) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let control = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let due = Instant::now() + Duration::from_millis(1);
                std::thread::sleep(Duration::from_millis(1));
                worst = worst.max(Instant::now().saturating_duration_since(due));
            }
            worst
        })
    };
    let worst = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let record = worst.clone();
    let elapsed = runtime.block_on(async move {
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let scheduled = interval.tick().await;
                let late = Instant::now().saturating_duration_since(scheduled.into_std());
                let mut worst = record.lock().unwrap();
                *worst = (*worst).max(late);
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        work().await;
        let elapsed = started.elapsed();
        // One more tick after the work, so a ticker starved to the end records it.
        tokio::time::sleep(Duration::from_millis(3)).await;
        ticker.abort();
        elapsed
    });
    let worst = *worst.lock().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (elapsed, worst, control.join().unwrap())
}

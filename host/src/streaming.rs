//! Streams of items produced on a worker and pulled by a consumer (a guest, or an
//! embedding program): a bounded channel plus a cancellation flag. Dropping the stream
//! raises the flag, which producers check between steps, so abandoned work stops at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::LanternError;

/// The consuming end of a stream of items produced on a worker.
pub struct EventStream<T> {
    receiver: mpsc::Receiver<Result<T, LanternError>>,
    cancelled: Arc<AtomicBool>,
    finished: bool,
}

/// The producing end. Blocking sends are for worker threads; async ones for tasks.
pub struct EventSender<T> {
    sender: mpsc::Sender<Result<T, LanternError>>,
    cancelled: Arc<AtomicBool>,
}

impl<T: Send + 'static> EventStream<T> {
    /// A stream that lets the producer run at most `ahead` items ahead of the consumer.
    pub fn channel(ahead: usize) -> (EventSender<T>, EventStream<T>) {
        let (sender, receiver) = mpsc::channel(ahead.max(1));
        let cancelled = Arc::new(AtomicBool::new(false));
        (
            EventSender { sender, cancelled: cancelled.clone() },
            EventStream { receiver, cancelled, finished: false },
        )
    }

    /// The next item; `Ok(None)` once the producer is done or after an error was returned.
    /// `is_last` tells which item ends the stream.
    pub async fn next(&mut self, is_last: impl Fn(&T) -> bool) -> Result<Option<T>, LanternError> {
        if self.finished {
            return Ok(None);
        }
        match self.receiver.recv().await {
            Some(Ok(item)) => {
                self.finished = is_last(&item);
                Ok(Some(item))
            }
            Some(Err(error)) => {
                self.finished = true;
                Err(error)
            }
            None => {
                self.finished = true;
                Ok(None)
            }
        }
    }
}

impl<T> Drop for EventStream<T> {
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::Release);
    }
}

impl<T> EventSender<T> {
    /// True once the consumer has gone; producers stop their work when they see it.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire) || self.sender.is_closed()
    }

    /// Sends from a worker thread, waiting while the consumer is behind. Returns false
    /// when the consumer has gone.
    pub fn send_blocking(&self, item: Result<T, LanternError>) -> bool {
        !self.is_cancelled() && self.sender.blocking_send(item).is_ok()
    }

    /// Sends from an async task. Returns false when the consumer has gone.
    pub async fn send(&self, item: Result<T, LanternError>) -> bool {
        !self.is_cancelled() && self.sender.send(item).await.is_ok()
    }
}

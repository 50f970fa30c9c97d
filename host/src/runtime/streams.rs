//! The host side of the WIT resources that stream (`preparation`, `generation-stream`,
//! `image-generation`): a bounded channel from the worker producing items to the guest
//! pulling them. Dropping the stream (the guest dropping its handle) raises the
//! cancellation flag that producers check between steps, so the work stops at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::bindings::lantern::ai::{generation, images};
use crate::error::LanternError;
use crate::registry::PrepareEvent;

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

/// A text generation in progress (also the answer of a vision-language model).
pub type GenerationStream = EventStream<generation::Chunk>;

/// An image generation in progress.
pub type ImageStream = EventStream<images::ImageEvent>;

/// The state of a model preparation that a guest watches. Progress updates replace each
/// other (a slow guest sees the latest, not a backlog); the end state is never lost.
#[derive(Debug, Clone)]
pub enum PreparationState {
    Starting,
    Event(PrepareEvent),
    Failed(LanternError),
}

pub struct PreparationStream {
    receiver: watch::Receiver<PreparationState>,
    finished: bool,
}

impl PreparationStream {
    pub fn new(receiver: watch::Receiver<PreparationState>) -> Self {
        PreparationStream { receiver, finished: false }
    }

    pub async fn next(&mut self) -> Result<Option<PrepareEvent>, LanternError> {
        while !self.finished {
            // `changed` returns at once for a state not yet seen, even after the sender is gone.
            if self.receiver.changed().await.is_err() {
                self.finished = true;
                break;
            }
            let state = self.receiver.borrow_and_update().clone();
            match state {
                PreparationState::Event(event) => {
                    self.finished = event == PrepareEvent::Ready;
                    return Ok(Some(event));
                }
                PreparationState::Failed(error) => {
                    self.finished = true;
                    return Err(error);
                }
                PreparationState::Starting => {}
            }
        }
        Ok(None)
    }
}

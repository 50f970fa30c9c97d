//! The host side of the WIT resources that stream (`preparation`, `generation-stream`,
//! `image-generation`). Dropping a guest's handle drops the stream, which cancels the
//! work behind it (see [`crate::streaming`]).

use tokio::sync::watch;

use crate::capabilities::GenerationEvent;
use crate::error::LanternError;
use crate::registry::{ImageEvent, PrepareEvent};
use crate::streaming::EventStream;

/// A text generation in progress (also the answer of a vision-language model).
pub type GenerationStream = EventStream<GenerationEvent>;

/// An image generation in progress.
pub type ImageStream = EventStream<ImageEvent>;

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

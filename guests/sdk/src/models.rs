//! Model discovery and preparation with progress.

use crate::bindings::lantern::ai::models as wit;
pub use wit::{DownloadProgress, ModelInfo, PreparationEvent};
use crate::Error;

/// Describes a model this plugin may use.
pub fn info(model: &str) -> Result<ModelInfo, Error> {
    wit::info(model).map_err(Error::from)
}

/// The models this plugin may use.
pub fn allowed() -> Vec<String> {
    wit::allowed()
}

/// Downloads (if needed) and loads `model`, calling `on_event` for each progress event.
pub fn prepare(model: &str, mut on_event: impl FnMut(&PreparationEvent)) -> Result<(), Error> {
    let preparation = wit::prepare(model)?;
    while let Some(event) = preparation.next().map_err(Error::from)? {
        on_event(&event);
    }
    Ok(())
}

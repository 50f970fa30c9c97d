//! Text to image: start a generation, follow its steps, get the PNG.

use crate::bindings::lantern::ai::images as wit;
pub use wit::{Image, ImageEvent, ImageParams, StepProgress};
use crate::Error;

impl Default for ImageParams {
    fn default() -> Self {
        ImageParams { width: None, height: None, steps: None, guidance_scale: None, negative_prompt: None, seed: None, truncate: None }
    }
}

/// An image being generated. Drop it to cancel the work on the host.
pub struct ImageGeneration {
    stream: wit::ImageGeneration,
}

impl ImageGeneration {
    /// Waits for the image, calling `on_step(step, total)` after each denoising step.
    pub fn wait(self, mut on_step: impl FnMut(u32, u32)) -> Result<Image, Error> {
        while let Some(event) = self.stream.next()? {
            match event {
                ImageEvent::Step(progress) => on_step(progress.step, progress.total),
                ImageEvent::Done(image) => return Ok(image),
            }
        }
        Err(Error::InferenceFailed("the image stream ended without an image".into()))
    }

    /// The next event (`None` after `done`), for callers that want to stop part-way.
    pub fn next_event(&self) -> Result<Option<ImageEvent>, Error> {
        Ok(self.stream.next()?)
    }
}

/// Starts generating an image of `prompt` with `model`.
pub fn generate(model: &str, prompt: &str, params: &ImageParams) -> Result<ImageGeneration, Error> {
    Ok(ImageGeneration { stream: wit::generate(model, prompt, params)? })
}

//! Text to image: the request every diffusion family answers, the limits it declares,
//! and the progress it reports.

use crate::error::LanternResult;

/// One text-to-image request with every default applied and checked against the
/// model's [`ImageModelLimits`] and the plugin's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    pub prompt: String,
    /// Only for models with classifier-free guidance (`ImageModelLimits::negative_prompt`).
    pub negative_prompt: Option<String>,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    /// 1.0 (or less) runs no unconditional pass.
    pub guidance_scale: f32,
    /// Seeds the host's own noise generator: same seed, prompt, size and steps give the
    /// same pixels on every run and every host.
    pub seed: u64,
    /// Cut a prompt longer than the text encoders take (true, the default) or refuse it.
    pub truncate: bool,
}

/// What a text-to-image model accepts, and what it does by default.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageModelLimits {
    pub default_width: u32,
    pub default_height: u32,
    pub default_steps: u32,
    pub default_guidance_scale: f32,
    /// Width and height must be multiples of this.
    pub size_multiple: u32,
    pub min_side: u32,
    pub max_side: u32,
    pub max_steps: u32,
    /// Whether a negative prompt means anything to the model.
    pub negative_prompt: bool,
}

/// A finished image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    /// Prompt tokens the text encoders did not see (0 unless the prompt was cut).
    pub truncated_tokens: u32,
}

/// Where a generation reports its steps. Both calls come from the worker thread.
pub trait ImageSink {
    /// Step `step` of `total` is done. Returns false when nobody listens any more: the
    /// generation then stops before the next step and returns `Cancelled`.
    fn step(&mut self, step: u32, total: u32) -> bool;
    /// Checked between steps (and between text encoders): false stops the work.
    fn keep_going(&self) -> bool {
        true
    }
}

impl<F: FnMut(u32, u32) -> bool> ImageSink for F {
    fn step(&mut self, step: u32, total: u32) -> bool {
        self(step, total)
    }
}

/// A loaded text-to-image model. Calls block: the registry runs them on worker threads.
pub trait ImageGenerator: Send + Sync {
    fn limits(&self) -> ImageModelLimits;
    /// Encodes the prompt, denoises `request.steps` steps from seeded noise (one
    /// [`ImageSink::step`] each) and decodes the latents to a PNG.
    fn generate(&self, request: &ImageRequest, sink: &mut dyn ImageSink) -> LanternResult<GeneratedImage>;
}

//! Text to image: the request every diffusion family answers, the limits it declares,
//! and the progress it reports.

use crate::error::{LanternError, LanternResult};

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

/// What a caller asks for; `None` takes the model's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageOptions {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub steps: Option<u32>,
    pub guidance_scale: Option<f32>,
    pub negative_prompt: Option<String>,
    pub seed: Option<u64>,
    pub truncate: Option<bool>,
}

impl ImageRequest {
    /// Fills `options` from the model's defaults and checks everything against its
    /// limits: a bad request is `InvalidInput` before any work starts. A missing seed
    /// is drawn at random (and reported back with the image).
    pub fn resolve(prompt: &str, options: &ImageOptions, limits: &ImageModelLimits) -> LanternResult<ImageRequest> {
        let invalid = |message: String| Err(LanternError::InvalidInput(message));
        if prompt.trim().is_empty() {
            return invalid("the prompt is empty".into());
        }
        let width = options.width.unwrap_or(limits.default_width);
        let height = options.height.unwrap_or(limits.default_height);
        for (name, side) in [("width", width), ("height", height)] {
            if side % limits.size_multiple != 0 {
                return invalid(format!("{name} {side} is not a multiple of {}", limits.size_multiple));
            }
            if side < limits.min_side || side > limits.max_side {
                return invalid(format!("{name} {side} is outside this model's range {}..={}", limits.min_side, limits.max_side));
            }
        }
        let steps = options.steps.unwrap_or(limits.default_steps);
        if steps == 0 || steps > limits.max_steps {
            return invalid(format!("steps must be 1..={} for this model, not {steps}", limits.max_steps));
        }
        let guidance_scale = options.guidance_scale.unwrap_or(limits.default_guidance_scale);
        if !guidance_scale.is_finite() || !(0.0..=100.0).contains(&guidance_scale) {
            return invalid(format!("guidance-scale must be between 0 and 100, not {guidance_scale}"));
        }
        let negative_prompt = options.negative_prompt.clone().filter(|p| !p.trim().is_empty());
        if negative_prompt.is_some() && !limits.negative_prompt {
            return invalid("this model takes no negative prompt".into());
        }
        let seed = options.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new().build_hasher().finish()
        });
        Ok(ImageRequest {
            prompt: prompt.to_string(),
            negative_prompt,
            width,
            height,
            steps,
            guidance_scale,
            seed,
            truncate: options.truncate.unwrap_or(true),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ImageModelLimits {
        ImageModelLimits {
            default_width: 1024,
            default_height: 1024,
            default_steps: 4,
            default_guidance_scale: 1.0,
            size_multiple: 16,
            min_side: 64,
            max_side: 2048,
            max_steps: 50,
            negative_prompt: false,
        }
    }

    fn resolve(options: ImageOptions) -> LanternResult<ImageRequest> {
        ImageRequest::resolve("a red cat", &options, &limits())
    }

    #[test]
    fn defaults_fill_what_is_not_asked() {
        let request = resolve(ImageOptions { seed: Some(5), ..Default::default() }).unwrap();
        assert_eq!((request.width, request.height, request.steps, request.seed), (1024, 1024, 4, 5));
        assert!(request.truncate);
    }

    #[test]
    fn bad_requests_are_invalid_input() {
        let bad = [
            ImageOptions { width: Some(100), ..Default::default() },
            ImageOptions { height: Some(4096), ..Default::default() },
            ImageOptions { width: Some(32), ..Default::default() },
            ImageOptions { steps: Some(0), ..Default::default() },
            ImageOptions { steps: Some(1_000_000), ..Default::default() },
            ImageOptions { guidance_scale: Some(f32::NAN), ..Default::default() },
            ImageOptions { negative_prompt: Some("blurry".into()), ..Default::default() },
        ];
        for options in bad {
            assert!(matches!(resolve(options.clone()), Err(LanternError::InvalidInput(_))), "{options:?}");
        }
        assert!(matches!(ImageRequest::resolve("  ", &ImageOptions::default(), &limits()), Err(LanternError::InvalidInput(_))));
    }
}

//! The one place that decides what a plugin may do. The runtime asks; policy answers.
//!
//! A plugin starts with nothing: no models, no files, no network, no environment. The
//! user (CLI flags) or the embedding program grants each of them explicitly.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{LanternError, LanternResult};

/// Which models a plugin may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelAllowList {
    /// Any model in the catalog (`--allow-all-models`).
    AnyCataloged,
    /// Only these keys.
    Only(BTreeSet<String>),
}

/// A host directory the plugin may read (and write, if `writable`), seen at `guest_path`.
#[derive(Debug, Clone)]
pub struct DirGrant {
    pub host_path: PathBuf,
    pub guest_path: String,
    pub writable: bool,
}

/// What one plugin instance may do, and how much.
#[derive(Debug, Clone)]
pub struct Policy {
    pub models: ModelAllowList,
    pub dirs: Vec<DirGrant>,
    /// Environment variables passed to the plugin (none by default).
    pub env: Vec<(String, String)>,
    /// Most linear memory the plugin may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Wall-clock limit of one `run` call; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Most strings in one `embed` call.
    pub max_embed_inputs: usize,
    /// Most bytes in one string handed to a model.
    pub max_input_bytes: usize,
    /// Longest log message kept, in bytes (longer ones are cut).
    pub max_log_bytes: usize,
    /// Most tokens one generation may ask for.
    pub max_generated_tokens: usize,
    /// Most generations one plugin may have open at once (image generations and
    /// vision answers count too).
    pub max_open_generations: usize,
    /// Widest and tallest image a plugin may ask a model to generate, in pixels.
    pub max_image_side: u32,
    /// Most denoising steps of one image.
    pub max_image_steps: u32,
    /// Most images in one `embed-images` call.
    pub max_images_per_call: usize,
    /// Most bytes of one encoded image handed to a model.
    pub max_image_bytes: usize,
    /// Widest and tallest image the host decodes for a plugin, in pixels.
    pub max_decoded_side: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            models: ModelAllowList::Only(BTreeSet::new()),
            dirs: Vec::new(),
            env: Vec::new(),
            max_memory_bytes: 512 << 20,
            timeout: None,
            max_embed_inputs: 4096,
            max_input_bytes: 1 << 20,
            max_log_bytes: 16 << 10,
            max_generated_tokens: 4096,
            max_open_generations: 16,
            max_image_side: 2048,
            max_image_steps: 100,
            max_images_per_call: 64,
            max_image_bytes: 32 << 20,
            max_decoded_side: 8192,
        }
    }
}

impl Policy {
    /// Lets the plugin use `key`.
    pub fn allow_model(mut self, key: impl Into<String>) -> Self {
        match &mut self.models {
            ModelAllowList::AnyCataloged => {}
            ModelAllowList::Only(keys) => {
                keys.insert(key.into());
            }
        }
        self
    }

    pub fn allow_any_model(mut self) -> Self {
        self.models = ModelAllowList::AnyCataloged;
        self
    }

    /// `Ok` when the plugin may use `key`, else the typed refusal it will see.
    pub fn check_model(&self, key: &str) -> LanternResult<()> {
        match &self.models {
            ModelAllowList::AnyCataloged => Ok(()),
            ModelAllowList::Only(keys) if keys.contains(key) => Ok(()),
            // Allowing a GGUF repo's key allows each of its quantisations (`KEY:TAG`).
            ModelAllowList::Only(keys) if key.rsplit_once(':').is_some_and(|(base, _)| keys.contains(base)) => Ok(()),
            ModelAllowList::Only(_) => Err(LanternError::ModelNotAllowed(format!(
                "this plugin may not use {key:?}; the host must allow it (lantern run --allow-model {key})"
            ))),
        }
    }

    /// Checks the size of one `embed` call's inputs.
    pub fn check_embed_inputs(&self, inputs: &[String]) -> LanternResult<()> {
        if inputs.len() > self.max_embed_inputs {
            return Err(LanternError::LimitExceeded(format!(
                "{} inputs in one call; the limit is {}",
                inputs.len(),
                self.max_embed_inputs
            )));
        }
        if let Some((index, input)) = inputs.iter().enumerate().find(|(_, s)| s.len() > self.max_input_bytes) {
            return Err(LanternError::LimitExceeded(format!(
                "input {index} is {} bytes; the limit is {}",
                input.len(),
                self.max_input_bytes
            )));
        }
        Ok(())
    }
}

impl Policy {
    /// Checks a generation request's token budget against the host's cap.
    pub fn check_max_tokens(&self, max_tokens: usize) -> LanternResult<()> {
        if max_tokens > self.max_generated_tokens {
            return Err(LanternError::LimitExceeded(format!(
                "max-tokens {max_tokens} is over this host's limit of {}",
                self.max_generated_tokens
            )));
        }
        Ok(())
    }
}

impl Policy {
    /// Checks an image generation's size and steps against this run's limits.
    pub fn check_image_request(&self, width: u32, height: u32, steps: u32) -> LanternResult<()> {
        let side = width.max(height);
        if side > self.max_image_side {
            return Err(LanternError::LimitExceeded(format!(
                "a {width}x{height} image is over this run's limit of {0} pixels a side (raise it with lantern run --max-image-side)",
                self.max_image_side
            )));
        }
        if steps > self.max_image_steps {
            return Err(LanternError::LimitExceeded(format!(
                "{steps} steps is over this run's limit of {} (raise it with lantern run --max-image-steps)",
                self.max_image_steps
            )));
        }
        Ok(())
    }

    /// Checks the encoded images a plugin hands to a model: how many, how large.
    pub fn check_images(&self, images: &[Vec<u8>]) -> LanternResult<()> {
        if images.len() > self.max_images_per_call {
            return Err(LanternError::LimitExceeded(format!(
                "{} images in one call; the limit is {} (lantern run --max-images-per-call)",
                images.len(),
                self.max_images_per_call
            )));
        }
        if let Some((index, image)) = images.iter().enumerate().find(|(_, i)| i.len() > self.max_image_bytes) {
            return Err(LanternError::LimitExceeded(format!(
                "image {index} is {} bytes; the limit is {} (lantern run --max-image-bytes)",
                image.len(),
                self.max_image_bytes
            )));
        }
        Ok(())
    }

    /// How large an image the host decodes for this plugin.
    pub fn decode_limits(&self) -> crate::image_codec::DecodeLimits {
        crate::image_codec::DecodeLimits { max_side: self.max_decoded_side, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_allowed_by_default() {
        let policy = Policy::default();
        assert!(matches!(policy.check_model("a/b"), Err(LanternError::ModelNotAllowed(_))));
        let policy = policy.allow_model("a/b");
        assert!(policy.check_model("a/b").is_ok());
        assert!(policy.check_model("a/c").is_err());
        assert!(policy.check_model("a/b:Q8_0").is_ok());
        let one_quant = Policy::default().allow_model("a/b:Q4_K_M");
        assert!(one_quant.check_model("a/b:Q4_K_M").is_ok());
        assert!(one_quant.check_model("a/b:Q8_0").is_err());
        assert!(one_quant.check_model("a/b").is_err());
    }

    #[test]
    fn image_limits_name_the_flag_that_raises_them() {
        let policy = Policy { max_image_side: 512, max_image_steps: 8, max_images_per_call: 2, ..Policy::default() };
        assert!(policy.check_image_request(512, 256, 8).is_ok());
        let Err(LanternError::LimitExceeded(message)) = policy.check_image_request(1024, 256, 4) else { panic!() };
        assert!(message.contains("--max-image-side"), "{message}");
        let Err(LanternError::LimitExceeded(message)) = policy.check_image_request(64, 64, 9) else { panic!() };
        assert!(message.contains("--max-image-steps"), "{message}");
        assert!(matches!(policy.check_images(&[vec![], vec![], vec![]]), Err(LanternError::LimitExceeded(_))));
    }
}

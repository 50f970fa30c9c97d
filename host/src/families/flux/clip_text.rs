//! FLUX's CLIP conditioning: the pooled output of CLIP ViT-L/14's text tower (HF
//! `CLIPTextModel.pooler_output`: the final-layer-normed state at the end-of-text token),
//! read from the full `CLIPModel` checkpoint, whose vision tower and projections FLUX
//! ignores.
//!
//! The tower is causal and pools at the end-of-text token, so the padding diffusers adds
//! after it changes nothing; the host runs the prompt's tokens alone.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_transformers::models::clip::text_model::{ClipTextConfig, ClipTextTransformer};
use tokenizers::Tokenizer;

use crate::error::{LanternError, LanternResult};

/// A prompt's CLIP token ids, at most the tower's positions long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipTokens {
    pub ids: Vec<u32>,
    /// Tokens cut from the end because the prompt was longer than the positions.
    pub truncated: usize,
}

/// Tokenizes `prompt` (start and end-of-text tokens added) to at most `max_len` ids. A
/// longer prompt keeps its first `max_len - 1` ids and its end-of-text token, as the
/// reference tokenizer's truncation does, or is refused when `truncate` is false.
pub fn tokenize(tokenizer: &Tokenizer, prompt: &str, max_len: usize, truncate: bool) -> LanternResult<ClipTokens> {
    let encoding = tokenizer.encode(prompt, true).map_err(|e| LanternError::inference("tokenizing for CLIP", e))?;
    let (ids, truncated) = crate::families::diffusion::fit_prompt(encoding.get_ids().to_vec(), max_len, truncate, "CLIP")?;
    Ok(ClipTokens { ids, truncated })
}

/// A loaded CLIP text tower.
pub struct ClipText {
    model: ClipTextTransformer,
    device: Device,
}

impl ClipText {
    /// Loads `text_model.*` of the CLIPModel checkpoint at `weights` in f32.
    pub fn load(config: &ClipTextConfig, weights: &Path, device: &Device) -> LanternResult<Self> {
        let failed = |e: candle_core::Error| LanternError::inference("loading the CLIP text encoder", e);
        // Safety: the cache's blobs are written once, renamed into place and never modified.
        let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device) }.map_err(failed)?;
        let model = ClipTextTransformer::new(vb.pp("text_model"), config).map_err(failed)?;
        Ok(ClipText { model, device: device.clone() })
    }

    /// The pooled embedding `(1, width)` of `ids`, which must end with the end-of-text
    /// token and have it as their largest id (CLIP pools at the arg-max).
    pub fn pooled(&self, ids: &[u32]) -> LanternResult<Tensor> {
        let failed = |e: candle_core::Error| LanternError::inference("running the CLIP text encoder", e);
        let input = Tensor::new(ids, &self.device).and_then(|t| t.unsqueeze(0)).map_err(failed)?;
        self.model.forward(&input).map_err(failed)
    }
}

//! The T5 v1.1 encoder that SD 3.5 and FLUX condition on: `config.json` from the T5
//! repo, the weights from wherever the family keeps them, and the tokenizer.
//!
//! T5 runs in f32 whatever the weights' dtype: in f16 its activations overflow (candle
//! issue #2480), which is also why candle's own pipelines upcast it.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::t5::{Config, T5EncoderModel};
use tokenizers::Tokenizer;

use crate::error::{LanternError, LanternResult};

/// A prompt's T5 token ids, padded to the fixed length the family asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct T5Tokens {
    pub ids: Vec<u32>,
    /// Tokens cut from the end because the prompt was longer than the length.
    pub truncated: usize,
}

/// Tokenizes `prompt` to exactly `length` ids: `</s>` ends it, `<pad>` (0) fills the
/// rest. A longer prompt is cut (its `</s>` kept, as the reference tokenizers do) and
/// the count of dropped tokens is returned, or refused when `truncate` is false.
pub fn tokenize(tokenizer: &Tokenizer, prompt: &str, length: usize, truncate: bool) -> LanternResult<T5Tokens> {
    let encoding = tokenizer.encode(prompt, true).map_err(|e| LanternError::inference("tokenizing for T5", e))?;
    let (mut ids, truncated) = super::fit_prompt(encoding.get_ids().to_vec(), length, truncate, "T5")?;
    ids.resize(length, 0);
    Ok(T5Tokens { ids, truncated })
}

/// A loaded T5 encoder.
pub struct T5Encoder {
    model: T5EncoderModel,
    device: Device,
}

impl T5Encoder {
    /// Loads the encoder from `config` and the safetensors `weights` (an encoder-only
    /// file, or a whole encoder-decoder checkpoint of which only the encoder is read).
    pub fn load(config: &Path, weights: &[&Path], device: &Device) -> LanternResult<Self> {
        let failed = |e: &dyn std::fmt::Display| LanternError::inference("loading the T5 encoder", e);
        let text = std::fs::read_to_string(config).map_err(|e| failed(&e))?;
        let config: Config = serde_json::from_str(&text).map_err(|e| failed(&e))?;
        // Safety: the cache's blobs are written once, renamed into place and never modified.
        let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(weights, DType::F32, device) }.map_err(|e| failed(&e))?;
        let model = T5EncoderModel::load(vb, &config).map_err(|e| failed(&e))?;
        Ok(T5Encoder { model, device: device.clone() })
    }

    /// Hidden states `(1, len(ids), d_model)` in f32.
    pub fn encode(&mut self, ids: &[u32]) -> LanternResult<Tensor> {
        let failed = |e: candle_core::Error| LanternError::inference("running the T5 encoder", e);
        let input = Tensor::new(ids, &self.device).and_then(|t| t.unsqueeze(0)).map_err(failed)?;
        self.model.forward_dt(&input, Some(DType::F32)).map_err(failed)
    }
}

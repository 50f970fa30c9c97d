//! Jina-BERT v2 (jinaai/jina-embeddings-v2-base-en): a BERT encoder with ALiBi attention
//! biases and a GEGLU MLP, mean pooling, no instructions. Files: `config.json`,
//! `tokenizer.json`, `model.safetensors` (tensors with or without a `bert.` prefix).
//!
//! Two limits come from candle's `jina_bert` module:
//! - its forward pass takes no attention mask, so padding would change the vectors:
//!   only inputs of equal token length share a forward pass;
//! - it precomputes the ALiBi bias for `max_position_embeddings`² × heads floats
//!   (3.2 GB at the real 8192), so the host caps the length at [`MAX_TOKENS`].

use candle_core::{Device, Module, Tensor};
use candle_transformers::models::jina_bert::{BertModel, Config};

use super::loading;
use super::pipeline::{EmbedderRules, Encoder, OutputDims, PipelineEmbedder, Prompts, TokenBatch};
use super::pooling;
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// The longest input read: 2048² × 12 heads × 4 bytes = 192 MB of ALiBi bias.
pub const MAX_TOKENS: usize = 2048;
const MAX_BATCH: usize = 32;

pub struct JinaBertEncoder {
    model: BertModel,
}

impl Encoder for JinaBertEncoder {
    fn forward(&self, batch: &TokenBatch, _head: Option<usize>) -> candle_core::Result<Tensor> {
        let hidden = self.model.forward(&batch.ids)?;
        pooling::mean(&hidden, &batch.mask)
    }
}

pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<PipelineEmbedder<JinaBertEncoder>> {
    let mut config: Config = loading::json_config(files, "config.json")?;
    config.max_position_embeddings = config.max_position_embeddings.min(MAX_TOKENS);
    let tokenizer = loading::tokenizer(files, "tokenizer.json")?;
    let weights = loading::checkpoint(files, candle_transformers::models::jina_bert::DTYPE, device)?;
    // Checkpoints saved from a task wrapper nest the encoder under `bert.`.
    let weights =
        if weights.contains_tensor("bert.embeddings.word_embeddings.weight") { weights.pp("bert") } else { weights };
    let model = BertModel::new(weights, &config).map_err(|e| LanternError::inference("loading Jina-BERT weights", e))?;
    let rules = EmbedderRules {
        family: "Jina-BERT",
        max_tokens: config.max_position_embeddings,
        pad_id: config.pad_token_id as u32,
        prompts: Prompts::None,
        suffix: "",
        dims: OutputDims::Native(config.hidden_size),
        max_batch: MAX_BATCH,
        attends_to_padding: true,
    };
    PipelineEmbedder::new(JinaBertEncoder { model }, tokenizer, rules, device)
}

//! GTE-Qwen2 instruct embedders (Alibaba-NLP/gte-Qwen2-1.5B-instruct): candle's Qwen2
//! base model run with a padding mask and bidirectional attention (candle's `qwen2`
//! builds a non-causal mask when given one, as GTE-Qwen2 was trained), last-token
//! pooling, `Instruct: {task}\nQuery: ` before queries. Files: `config.json`,
//! `tokenizer.json` (it appends `<|endoftext|>`, the token that is pooled), and the
//! sharded `model.safetensors.index.json` + shards.

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::qwen2::{Config, Model};

use super::loading;
use super::pipeline::{EmbedderRules, Encoder, OutputDims, PipelineEmbedder, Prompts, TokenBatch};
use super::pooling;
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// The default retrieval task of the model card.
pub const QUERY_TASK: &str = "Given a web search query, retrieve relevant passages that answer the query";
/// The model card's examples read at most 8192 tokens.
const MAX_TOKENS: usize = 8192;
const MAX_BATCH: usize = 16;

pub struct GteQwen2Encoder {
    /// candle's forward pass takes `&mut self` and fills a KV cache; one pass at a time.
    model: Mutex<Model>,
}

impl Encoder for GteQwen2Encoder {
    fn forward(&self, batch: &TokenBatch, _head: Option<usize>) -> candle_core::Result<Tensor> {
        let hidden = {
            let mut model = self.model.lock().unwrap();
            // Each batch is a fresh sequence: no cache from an earlier one may leak in.
            model.clear_kv_cache();
            let hidden = model.forward(&batch.ids, 0, Some(&batch.mask));
            model.clear_kv_cache();
            hidden?
        };
        pooling::last_token(&hidden, &batch.lengths)
    }
}

#[derive(serde::Deserialize)]
struct PadConfig {
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<u32>,
}

pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<PipelineEmbedder<GteQwen2Encoder>> {
    let config: Config = loading::json_config(files, "config.json")?;
    let pad: PadConfig = loading::json_config(files, "config.json")?;
    let tokenizer = loading::tokenizer(files, "tokenizer.json")?;
    let weights = loading::checkpoint(files, DType::F32, device)?;
    let weights = loading::accept_missing_prefix(weights, "model", "embed_tokens.weight");
    let model = Model::new(&config, weights).map_err(|e| LanternError::inference("loading GTE-Qwen2 weights", e))?;
    let rules = EmbedderRules {
        family: "GTE-Qwen2",
        max_tokens: config.max_position_embeddings.min(MAX_TOKENS),
        // Padding is masked and sits after the pooled token, so any id in range does.
        pad_id: pad.pad_token_id.or(pad.eos_token_id).unwrap_or(0),
        prompts: Prompts::Instruct { default_task: QUERY_TASK },
        suffix: "",
        dims: OutputDims::Native(config.hidden_size),
        max_batch: MAX_BATCH,
        attends_to_padding: false,
    };
    PipelineEmbedder::new(GteQwen2Encoder { model: Mutex::new(model) }, tokenizer, rules, device)
}

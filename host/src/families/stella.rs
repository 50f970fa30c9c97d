//! Stella v5 (dunzhang/stella_en_400M_v5, dunzhang/stella_en_1.5B_v5): candle's
//! `stella_en_v5` encoder, mean pooling, then one of the Matryoshka projection heads
//! `2_Dense_{256,768,1024,2048,4096,6144,8192}` (default 1024), fetched only when a
//! request asks for its size. Queries get the s2p prompt; documents are read as is.
//!
//! The variant follows `config.json`: `model_type` "qwen2" is the 1.5B model (Qwen2
//! decoder, tensors under `model.`), anything else the 400M model (the "new" BERT-like
//! encoder, tensors under `new.`). candle's `Config` is built from the real config keys.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::Activation;
use candle_transformers::models::stella_en_v5::{Config, EmbedHead, Model, ModelVariant};
use serde::Deserialize;

use super::heads::ProjectionHeads;
use super::loading;
use super::pipeline::{EmbedderRules, Encoder, OutputDims, PipelineEmbedder, Prompts, TokenBatch};
use super::pooling;
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// The output sizes Stella ships heads for.
pub const HEAD_SIZES: [usize; 7] = [256, 768, 1024, 2048, 4096, 6144, 8192];
pub const DEFAULT_SIZE: usize = 1024;
/// The sentence-to-passage prompt of the model card.
pub const QUERY_TASK: &str = "Given a web search query, retrieve relevant passages that answer the query.";
/// Stella was trained on inputs of up to 512 tokens.
const MAX_TOKENS: usize = 512;
const MAX_BATCH: usize = 32;

#[derive(Deserialize)]
struct RopeScaling {
    factor: f64,
}

/// The keys of the real `config.json` files of both variants.
#[derive(Deserialize)]
struct StellaConfigFile {
    #[serde(default)]
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    max_position_embeddings: usize,
    rope_theta: f64,
    #[serde(default)]
    rms_norm_eps: Option<f64>,
    #[serde(default)]
    layer_norm_eps: Option<f64>,
    #[serde(default)]
    type_vocab_size: Option<usize>,
    #[serde(default)]
    rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pad_token_id: Option<u32>,
}

impl StellaConfigFile {
    fn candle_config(&self) -> Config {
        let large = self.model_type == "qwen2";
        Config {
            variant: if large { ModelVariant::Large } else { ModelVariant::Small },
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            max_position_embeddings: self.max_position_embeddings,
            rope_theta: self.rope_theta,
            // candle builds the head itself only in its EmbeddingModel; the host loads heads on request.
            embed_head: EmbedHead { in_features: self.hidden_size, out_features: DEFAULT_SIZE },
            norm_eps: if large { self.rms_norm_eps.unwrap_or(1e-6) } else { self.layer_norm_eps.unwrap_or(1e-12) },
            activation_fn: if large { Activation::Silu } else { Activation::Gelu },
            num_key_value_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            type_vocab_size: self.type_vocab_size.unwrap_or(2),
            scaling_factor: if large { 0.0 } else { self.rope_scaling.as_ref().map_or(0.0, |s| s.factor) },
        }
    }
}

pub struct StellaEncoder {
    /// candle's forward pass takes `&mut self`; one pass at a time.
    model: Mutex<Model>,
    heads: Arc<ProjectionHeads>,
}

impl Encoder for StellaEncoder {
    fn forward(&self, batch: &TokenBatch, head: Option<usize>) -> candle_core::Result<Tensor> {
        let hidden = self.model.lock().unwrap().forward(&batch.ids, &batch.mask)?;
        let pooled = pooling::mean(&hidden.to_dtype(DType::F32)?, &batch.mask)?;
        let head = head.ok_or_else(|| candle_core::Error::Msg("Stella needs a projection head".into()))?;
        self.heads.apply(head, &pooled)
    }
}

pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<PipelineEmbedder<StellaEncoder>> {
    let file: StellaConfigFile = loading::json_config(files, "config.json")?;
    let config = file.candle_config();
    let tokenizer = loading::tokenizer(files, "tokenizer.json")?;
    let weights = loading::checkpoint(files, DType::F32, device)?;
    let weights = match config.variant {
        ModelVariant::Large => loading::accept_missing_prefix(weights, "model", "embed_tokens.weight"),
        ModelVariant::Small => loading::accept_missing_prefix(weights, "new", "embeddings.word_embeddings.weight"),
    };
    let model = Model::new(&config, weights).map_err(|e| LanternError::inference("loading Stella weights", e))?;
    let heads = Arc::new(ProjectionHeads::new(HEAD_SIZES.to_vec(), DEFAULT_SIZE, config.hidden_size, device));
    let rules = EmbedderRules {
        family: "Stella",
        max_tokens: config.max_position_embeddings.min(MAX_TOKENS),
        pad_id: file.pad_token_id.unwrap_or(0),
        prompts: Prompts::Instruct { default_task: QUERY_TASK },
        suffix: "",
        dims: OutputDims::Heads(heads.clone()),
        max_batch: MAX_BATCH,
        attends_to_padding: false,
    };
    PipelineEmbedder::new(StellaEncoder { model: Mutex::new(model), heads }, tokenizer, rules, device)
}

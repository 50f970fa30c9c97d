//! NV-Embed v2 (nvidia/NV-Embed-v2): a Mistral decoder run bidirectionally with a
//! padding mask (candle's `nvembed_v2::embedding::Model`), then latent-attention
//! pooling: the hidden states cross-attend to a trained latent array, pass a GEGLU
//! feed-forward, and are mean-pooled over the text tokens only — the instruction
//! prompt (`Instruct: {task}\nQuery: `, queries only) is attended to but not pooled.
//! Every input ends with `</s>`, as NV-Embed's own encode does.
//!
//! candle's `nvembed_v2::model::Model` hard-codes the 7B sizes (hidden 4096, 512
//! latents, 8 heads of 4096) and keeps its blocks private, so the latent-attention
//! block is implemented here with its sizes read from `config.json`
//! (`latent_attention_config`) and the real tensor names
//! (`latent_attention_model.latents`, `…cross_attend_blocks.{0,1}.…`).

use std::sync::Mutex;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{layer_norm, linear, linear_no_bias, LayerNorm, LayerNormConfig, Linear, VarBuilder};
use candle_transformers::models::mistral::Config as MistralConfig;
use candle_transformers::models::nvembed_v2::embedding::Model as Decoder;
use serde::Deserialize;

use super::loading;
use super::pipeline::{EmbedderRules, Encoder, OutputDims, PipelineEmbedder, Prompts, TokenBatch};
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// The default retrieval task of the model card.
pub const QUERY_TASK: &str = "Given a question, retrieve passages that answer the question";
/// The model card's examples read at most 32768 tokens.
const MAX_TOKENS: usize = 32768;
const MAX_BATCH: usize = 8;

#[derive(Deserialize)]
struct LatentAttentionConfig {
    num_latents_value: usize,
    num_cross_heads: usize,
    latent_dim: usize,
    #[serde(default)]
    cross_dim_head: Option<usize>,
}

#[derive(Deserialize)]
struct NvEmbedConfig {
    text_config: MistralConfig,
    latent_attention_config: LatentAttentionConfig,
}

/// Cross-attention from the hidden states (queries) to the latents (keys, values),
/// a residual GEGLU feed-forward, as in NV-Embed's `LatentAttentionModel`.
struct LatentAttention {
    latents: Tensor,
    norm: LayerNorm,
    norm_context: LayerNorm,
    to_q: Linear,
    to_kv: Linear,
    to_out: Linear,
    heads: usize,
    head_dim: usize,
    ff_norm: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl LatentAttention {
    fn new(config: &LatentAttentionConfig, hidden: usize, weights: VarBuilder) -> candle_core::Result<Self> {
        let heads = config.num_cross_heads;
        let head_dim = config.cross_dim_head.unwrap_or(config.latent_dim);
        let inner = heads * head_dim;
        let latents = weights.get((config.num_latents_value, config.latent_dim), "latents")?;
        let blocks = weights.pp("cross_attend_blocks");
        let norms = LayerNormConfig::default();
        let ff_inner = hidden * 4;
        Ok(LatentAttention {
            latents,
            norm: layer_norm(hidden, norms, blocks.pp("0.norm"))?,
            norm_context: layer_norm(config.latent_dim, norms, blocks.pp("0.norm_context"))?,
            to_q: linear_no_bias(hidden, inner, blocks.pp("0.fn.to_q"))?,
            to_kv: linear_no_bias(config.latent_dim, inner * 2, blocks.pp("0.fn.to_kv"))?,
            to_out: linear_no_bias(inner, hidden, blocks.pp("0.fn.to_out"))?,
            heads,
            head_dim,
            ff_norm: layer_norm(hidden, norms, blocks.pp("1.norm"))?,
            ff_in: linear(hidden, ff_inner * 2, blocks.pp("1.fn.net.0.proj"))?,
            ff_out: linear(ff_inner, hidden, blocks.pp("1.fn.net.2"))?,
        })
    }

    /// (batch, tokens, heads·head_dim) -> (batch, heads, tokens, head_dim)
    fn split_heads(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens, _) = xs.dims3()?;
        xs.reshape((batch, tokens, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens, _) = hidden.dims3()?;
        let latents = self.norm_context.forward(&self.latents.unsqueeze(0)?.repeat((batch, 1, 1))?)?;
        let query = self.split_heads(&self.to_q.forward(&self.norm.forward(hidden)?)?)?;
        let kv = self.to_kv.forward(&latents)?.chunk(2, D::Minus1)?;
        let (key, value) = (self.split_heads(&kv[0])?, self.split_heads(&kv[1])?);
        let scores = (query.matmul(&key.t()?)? / (self.head_dim as f64).sqrt())?;
        let attended = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&value)?;
        let attended = attended.transpose(1, 2)?.reshape((batch, tokens, self.heads * self.head_dim))?;
        let xs = (self.to_out.forward(&attended)? + hidden)?;
        let gate = self.ff_in.forward(&self.ff_norm.forward(&xs)?)?.chunk(2, D::Minus1)?;
        let ff = self.ff_out.forward(&(&gate[0] * gate[1].gelu_erf()?)?)?;
        ff + xs
    }
}

pub struct NvEmbedEncoder {
    /// candle's forward pass takes `&mut self`; one pass at a time.
    decoder: Mutex<Decoder>,
    latent_attention: LatentAttention,
}

impl Encoder for NvEmbedEncoder {
    fn forward(&self, batch: &TokenBatch, _head: Option<usize>) -> candle_core::Result<Tensor> {
        let mask = batch.mask.to_dtype(DType::F32)?;
        let hidden = self.decoder.lock().unwrap().forward(&mask, &batch.ids, DType::F32)?;
        let hidden = self.latent_attention.forward(&hidden)?;
        super::pooling::mean(&hidden, &batch.pool_mask(true)?)
    }
}

pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<PipelineEmbedder<NvEmbedEncoder>> {
    let config: NvEmbedConfig = loading::json_config(files, "config.json")?;
    let tokenizer = loading::tokenizer(files, "tokenizer.json")?;
    let weights = loading::checkpoint(files, DType::F32, device)?;
    let failed = |e| LanternError::inference("loading NV-Embed weights", e);
    let decoder = Decoder::new(&config.text_config, weights.pp("embedding_model")).map_err(failed)?;
    let hidden = config.text_config.hidden_size;
    let latent_attention =
        LatentAttention::new(&config.latent_attention_config, hidden, weights.pp("latent_attention_model")).map_err(failed)?;
    let rules = EmbedderRules {
        family: "NV-Embed",
        max_tokens: config.text_config.max_position_embeddings.min(MAX_TOKENS),
        pad_id: 0,
        prompts: Prompts::Instruct { default_task: QUERY_TASK },
        suffix: "</s>",
        dims: OutputDims::Native(hidden),
        max_batch: MAX_BATCH,
        attends_to_padding: false,
    };
    PipelineEmbedder::new(NvEmbedEncoder { decoder: Mutex::new(decoder), latent_attention }, tokenizer, rules, device)
}

//! DeepSeek-V2/V3 and Kimi-K2 (`general.architecture = deepseek2`) from GGUF, on any
//! device. candle 0.11 has only a safetensors model for this architecture
//! (`models::deepseek2`, DeepSeek-V2's softmax router, no quantized weights); this module
//! reads the tensors and metadata llama.cpp's converter writes and computes what
//! llama.cpp's `llm_build_deepseek2` computes:
//!
//! - [`attention`]: multi-head latent attention, absorbed (the compressed cache), from
//!   `attn_q_a`/`attn_q_a_norm`/`attn_q_b` (or `attn_q`), `attn_kv_a_mqa`,
//!   `attn_kv_a_norm`, `attn_k_b`/`attn_v_b` (or the older `attn_kv_b`), `attn_output`;
//! - [`rope`]: the decoupled rotary part, with YaRN (`rope.scaling.*`);
//! - the first `leading_dense_block_count` layers a SwiGLU FFN (`ffn_gate/up/down`), the
//!   others routed experts (`ffn_*_exps`, [`super::moe`]) chosen by [`router`] from
//!   `ffn_gate_inp` and `exp_probs_b`, plus the shared expert (`ffn_*_shexp`).
//!
//! Kimi-K2 is this architecture with 384 routed experts (8 used), one shared expert, one
//! expert group, 64 heads and one dense layer; DeepSeek-V3 has 256 experts in 8 groups
//! (4 used) and 3 dense layers. All of it comes from the metadata ([`config`]).

pub mod attention;
pub mod config;
pub mod rope;
pub mod router;

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Embedding;
use candle_transformers::models::quantized_qwen3::Gguf;
use candle_transformers::models::with_tracing::QMatMul;
use candle_transformers::quantized_nn::RmsNorm;
use candle_transformers::utils::build_additive_causal_mask;

use super::moe::{Experts, SwiGlu};
use crate::error::{LanternError, LanternResult};
use attention::Attention;
use config::Config;
use rope::Rope;
use router::Router;

#[derive(Clone)]
struct Mixture {
    router: Router,
    experts: Experts,
    shared: Option<SwiGlu>,
}

impl Mixture {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l, hidden) = xs.dims3()?;
        let flat = xs.reshape((b * l, hidden))?;
        let routed = self.experts.forward(&flat, &self.router.routes(&flat)?)?.reshape((b, l, hidden))?;
        match &self.shared {
            Some(shared) => routed + shared.forward(xs)?,
            None => Ok(routed),
        }
    }
}

#[derive(Clone)]
enum FeedForward {
    Dense(SwiGlu),
    Mixture(Mixture),
}

#[derive(Clone)]
struct Layer {
    attention_norm: RmsNorm,
    attention: Attention,
    ffn_norm: RmsNorm,
    ffn: FeedForward,
}

/// A DeepSeek-V2/V3 model with its own KV cache; clones share the weights (`Arc`s inside).
#[derive(Clone)]
pub struct DeepSeek2 {
    embeddings: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    device: Device,
}

fn failed(context: String) -> impl Fn(candle_core::Error) -> LanternError {
    move |e| LanternError::inference(&context, e)
}

impl DeepSeek2 {
    pub fn from_gguf<R: Read + Seek>(content: gguf_file::Content, reader: &mut R, device: &Device) -> LanternResult<Self> {
        let config = Config::from_metadata(&content.metadata)?;
        if let Some(fused) = content.tensor_infos.keys().find(|name| name.ends_with("ffn_gate_up_exps.weight")) {
            return Err(LanternError::ModelNotSupported(format!(
                "deepseek2 GGUF with fused gate/up expert tensors ({fused}); this host reads ffn_gate_exps and ffn_up_exps"
            )));
        }
        let mut gg = Gguf::new(content, reader, device.clone());
        let rope = Arc::new(Rope::new(&config, device).map_err(failed("building the rope tables".into()))?);
        let embeddings = gg
            .tensor("token_embd.weight")
            .and_then(|t| t.dequantize(device))
            .map_err(failed("loading token_embd.weight".into()))?;
        let embeddings = Embedding::new(embeddings, config.hidden);
        let mut layers = Vec::with_capacity(config.blocks);
        for i in 0..config.blocks {
            layers.push(Self::layer(&mut gg, i, &config, rope.clone(), device).map_err(failed(format!("loading layer {i}")))?);
        }
        let norm = gg.rms_norm("output_norm.weight", config.eps).map_err(failed("loading output_norm".into()))?;
        let output = gg
            .qmatmul("output.weight")
            .or_else(|_| gg.qmatmul("token_embd.weight"))
            .map_err(failed("loading the output layer".into()))?;
        Ok(DeepSeek2 { embeddings, layers, norm, output, device: device.clone() })
    }

    fn layer<R: Read + Seek>(
        gg: &mut Gguf<R>,
        i: usize,
        config: &Config,
        rope: Arc<Rope>,
        device: &Device,
    ) -> candle_core::Result<Layer> {
        let p = format!("blk.{i}");
        let ffn = if i < config.dense_blocks {
            FeedForward::Dense(SwiGlu::load(gg, &p, "")?)
        } else {
            let router = gg.tensor(&format!("{p}.ffn_gate_inp.weight"))?.dequantize(device)?;
            let bias = match gg.tensor(&format!("{p}.exp_probs_b.bias")) {
                Ok(bias) => Some(bias.dequantize(device)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
                Err(_) => None,
            };
            let router = Router::new(router, bias, config)?;
            let experts = Experts::load(gg, &p, device)?;
            if experts.len() != config.experts || router.experts() != config.experts {
                candle_core::bail!(
                    "{} stacked experts and {} router outputs, but expert_count is {}",
                    experts.len(),
                    router.experts(),
                    config.experts
                );
            }
            let shared = match config.shared_experts {
                0 => None,
                _ => Some(SwiGlu::load(gg, &p, "_shexp")?),
            };
            FeedForward::Mixture(Mixture { router, experts, shared })
        };
        Ok(Layer {
            attention_norm: gg.rms_norm(&format!("{p}.attn_norm.weight"), config.eps)?,
            attention: Attention::load(gg, &p, config, rope, device)?,
            ffn_norm: gg.rms_norm(&format!("{p}.ffn_norm.weight"), config.eps)?,
            ffn,
        })
    }

    /// Next-token logits (batch, vocab) for `input` (batch, tokens) at `offset`.
    pub fn forward(&mut self, input: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        let (_, l) = input.dims2()?;
        let mask = match l {
            1 => None,
            _ => Some(build_additive_causal_mask(l, offset, None, &self.device, DType::F32)?),
        };
        let mut xs = self.embeddings.forward(input)?;
        for layer in &mut self.layers {
            let attended = layer.attention.forward(&layer.attention_norm.forward(&xs)?, mask.as_ref(), offset)?;
            xs = (xs + attended)?;
            let normed = layer.ffn_norm.forward(&xs)?;
            let ffn = match &layer.ffn {
                FeedForward::Dense(mlp) => mlp.forward(&normed)?,
                FeedForward::Mixture(mixture) => mixture.forward(&normed)?,
            };
            xs = (xs + ffn)?;
        }
        let last = self.norm.forward(&xs)?.narrow(1, l - 1, 1)?;
        self.output.forward(&last)?.squeeze(1)
    }
}

//! Qwen3 mixture-of-experts (`general.architecture = qwen3moe`: Qwen3-30B-A3B,
//! Qwen3-Coder-30B-A3B / 480B-A35B) on any device.
//!
//! Why not `candle_transformers::models::quantized_qwen3_moe`: its expert layer calls
//! `candle_nn::moe::moe_gemm_gguf`, which in candle 0.11.1 only exists for CUDA (on the
//! CPU every forward pass fails with "moe_gemm_gguf is only implemented for the cuda
//! backend"), and its model is neither `Clone` nor able to clear its KV cache. This
//! module reads the same GGUF tensors, reuses candle's public building blocks (quantized
//! matmuls, RMS norm) and the host's Qwen3 rotary embedding ([`super::qwen3`], f64 angles) and routes tokens to the experts with
//! ordinary quantized matmuls ([`super::moe`], shared with DeepSeek-V2/V3): softmax over the router, top-k, renormalised (Qwen3's
//! `norm_topk_prob`), each expert's SwiGLU on the rows routed to it.

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::kv_cache::ConcatKvCache;
use candle_nn::Embedding;
use super::moe::{Experts, Route};
use super::qwen3::{Gguf, RotaryEmbedding};
use candle_transformers::models::with_tracing::QMatMul;
use candle_transformers::quantized_nn::RmsNorm;
use candle_transformers::utils::{build_additive_causal_mask, repeat_kv};

#[derive(Clone)]
struct Attention {
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    biases: [Option<Tensor>; 3],
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rotary: Arc<RotaryEmbedding>,
    cache: ConcatKvCache,
}

#[derive(Clone)]
struct Layer {
    attention_norm: RmsNorm,
    attention: Attention,
    ffn_norm: RmsNorm,
    /// Router weights, transposed: (hidden, experts), f32.
    router: Tensor,
    experts: Experts,
    experts_per_token: usize,
}

/// A Qwen3-MoE model with its own KV cache; clones share the weights (`Arc`s inside).
#[derive(Clone)]
pub struct Qwen3Moe {
    embeddings: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    device: Device,
}

impl Attention {
    fn forward(&mut self, xs: &Tensor, mask: Option<&Tensor>, offset: usize) -> Result<Tensor> {
        let (b, l, _) = xs.dims3()?;
        let project = |m: &QMatMul, bias: &Option<Tensor>, heads: usize| -> Result<Tensor> {
            let y = m.forward(xs)?;
            let y = match bias {
                Some(bias) => y.broadcast_add(bias)?,
                None => y,
            };
            y.reshape((b, l, heads, self.head_dim))?.transpose(1, 2)?.contiguous()
        };
        let q = project(&self.q, &self.biases[0], self.heads)?;
        let k = project(&self.k, &self.biases[1], self.kv_heads)?;
        let v = project(&self.v, &self.biases[2], self.kv_heads)?;
        // Qwen3 normalises each head's query and key before the rotation.
        let q = self.q_norm.forward(&q.flatten(0, 2)?)?.reshape((b, self.heads, l, self.head_dim))?;
        let k = self.k_norm.forward(&k.flatten(0, 2)?)?.reshape((b, self.kv_heads, l, self.head_dim))?;
        let (q, k) = self.rotary.apply(&q, &k, offset)?;
        let (k, v) = self.cache.append(&k.contiguous()?, &v)?;
        let groups = self.heads / self.kv_heads;
        let k = repeat_kv(k, groups)?.contiguous()?;
        let v = repeat_kv(v, groups)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (self.head_dim as f64).sqrt()))?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let context = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
        let context = context.transpose(1, 2)?.reshape((b, l, self.heads * self.head_dim))?;
        self.o.forward(&context)
    }
}

impl Layer {
    fn mixture(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, l, hidden) = xs.dims3()?;
        let xs = xs.reshape((b * l, hidden))?;
        let probabilities = candle_nn::ops::softmax_last_dim(&xs.matmul(&self.router)?)?.to_vec2::<f32>()?;
        let routes: Vec<Route> = probabilities
            .iter()
            .map(|p| {
                let mut order: Vec<usize> = (0..p.len()).collect();
                order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
                let chosen = &order[..self.experts_per_token.min(order.len())];
                let total: f32 = chosen.iter().map(|&e| p[e]).sum();
                chosen.iter().map(|&e| (e, p[e] / total)).collect()
            })
            .collect();
        let out = self.experts.forward(&xs, &routes)?;
        out.reshape((b, l, hidden))
    }
}

fn md_u32(gg: &Gguf<impl Read + Seek>, key: &str) -> Result<usize> {
    match gg.metadata().get(key) {
        Some(v) => Ok(v.to_u32()? as usize),
        None => candle_core::bail!("cannot find {key} in metadata"),
    }
}

impl Qwen3Moe {
    pub fn from_gguf<R: Read + Seek>(content: gguf_file::Content, reader: &mut R, device: &Device) -> Result<Self> {
        let mut gg = Gguf::new(content, reader, device.clone());
        let heads = md_u32(&gg, "qwen3moe.attention.head_count")?;
        let kv_heads = md_u32(&gg, "qwen3moe.attention.head_count_kv")?;
        let hidden = md_u32(&gg, "qwen3moe.embedding_length")?;
        let head_dim = md_u32(&gg, "qwen3moe.attention.key_length").unwrap_or(hidden / heads);
        let context = md_u32(&gg, "qwen3moe.context_length")?;
        let blocks = md_u32(&gg, "qwen3moe.block_count")?;
        let experts_per_token = md_u32(&gg, "qwen3moe.expert_used_count")?;
        let f32_md = |key: &str| gg.metadata().get(key).map(|v| v.to_f32());
        let eps = f32_md("qwen3moe.attention.layer_norm_rms_epsilon").unwrap_or(Ok(1e-6))? as f64;
        let rope_base = f32_md("qwen3moe.rope.freq_base").unwrap_or(Ok(1_000_000.0))? as f64;
        if md_u32(&gg, "qwen3moe.expert_shared_feed_forward_length").unwrap_or(0) > 0 {
            candle_core::bail!("qwen3moe with a shared expert (Qwen2-MoE style) is not supported");
        }

        let embeddings = Embedding::new(gg.tensor("token_embd.weight")?.dequantize(device)?, hidden);
        let norm = gg.rms_norm("output_norm.weight", eps)?;
        let output = gg.qmatmul("output.weight").or_else(|_| gg.qmatmul("token_embd.weight"))?;
        let rotary = Arc::new(RotaryEmbedding::new(head_dim, context, rope_base, device)?);
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let p = format!("blk.{i}");
            let mut bias = |name: &str| gg.tensor(&format!("{p}.{name}.bias")).ok().map(|t| t.dequantize(device)).transpose();
            let biases = [bias("attn_q")?, bias("attn_k")?, bias("attn_v")?];
            let attention = Attention {
                q: gg.qmatmul(&format!("{p}.attn_q.weight"))?,
                k: gg.qmatmul(&format!("{p}.attn_k.weight"))?,
                v: gg.qmatmul(&format!("{p}.attn_v.weight"))?,
                o: gg.qmatmul(&format!("{p}.attn_output.weight"))?,
                biases,
                q_norm: gg.rms_norm(&format!("{p}.attn_q_norm.weight"), eps)?,
                k_norm: gg.rms_norm(&format!("{p}.attn_k_norm.weight"), eps)?,
                heads,
                kv_heads,
                head_dim,
                rotary: rotary.clone(),
                cache: ConcatKvCache::new(2),
            };
            let router = gg.tensor(&format!("{p}.ffn_gate_inp.weight"))?.dequantize(device)?.to_dtype(DType::F32)?.t()?.contiguous()?;
            let experts = Experts::load(&mut gg, &p, device)?;
            layers.push(Layer {
                attention_norm: gg.rms_norm(&format!("{p}.attn_norm.weight"), eps)?,
                attention,
                ffn_norm: gg.rms_norm(&format!("{p}.ffn_norm.weight"), eps)?,
                router,
                experts,
                experts_per_token,
            });
        }
        Ok(Qwen3Moe { embeddings, layers, norm, output, device: device.clone() })
    }

    /// Next-token logits (batch, vocab) for `input` (batch, tokens) at `offset`.
    pub fn forward(&mut self, input: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, l) = input.dims2()?;
        let mask = match l {
            1 => None,
            _ => Some(build_additive_causal_mask(l, offset, None, &self.device, DType::F32)?),
        };
        let mut xs = self.embeddings.forward(input)?;
        for layer in &mut self.layers {
            let attended = layer.attention.forward(&layer.attention_norm.forward(&xs)?, mask.as_ref(), offset)?;
            xs = (xs + attended)?;
            let mixed = layer.mixture(&layer.ffn_norm.forward(&xs)?)?;
            xs = (xs + mixed)?;
        }
        let last = self.norm.forward(&xs)?.narrow(1, l - 1, 1)?;
        self.output.forward(&last)?.squeeze(1)
    }
}

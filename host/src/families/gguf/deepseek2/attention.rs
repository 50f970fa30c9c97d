//! Multi-head latent attention (MLA), computed the way llama.cpp computes MLA files:
//! absorbed. Keys and values of every head are linear in one compressed vector per token
//! (`kv_lora_rank` wide, RMS-normed) plus one rotated key shared by all heads, so the
//! cache holds only those two (576 numbers a token for DeepSeek-V3/Kimi-K2 instead of
//! 2 × heads × 128), each query's position-free part is taken through the heads' key
//! matrices into the compressed space (`attn_k_b`), attention runs there, and the heads'
//! value matrices (`attn_v_b`) are applied to the attended compressed vectors. This is
//! the same sum as Hugging Face's decompress-then-attend, in another order.
//!
//! Files converted before llama.cpp's MLA change hold the two matrices as one
//! `attn_kv_b` (per head: key rows, then value rows); it is split at load.

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::kv_cache::ConcatKvCache;
use candle_transformers::models::quantized_qwen3::Gguf;
use candle_transformers::models::with_tracing::QMatMul;
use candle_transformers::quantized_nn::RmsNorm;

use super::config::Config;
use super::rope::Rope;

#[derive(Clone)]
enum Queries {
    /// `attn_q` (q_lora_rank 0).
    Full(QMatMul),
    /// `attn_q_b(rms_norm(attn_q_a(x)))`.
    LowRank { a: QMatMul, norm: RmsNorm, b: QMatMul },
}

impl Queries {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Queries::Full(q) => q.forward(xs),
            Queries::LowRank { a, norm, b } => b.forward(&norm.forward(&a.forward(xs)?)?),
        }
    }
}

#[derive(Clone)]
pub struct Attention {
    queries: Queries,
    /// `attn_kv_a_mqa`: the compressed vector and the shared rotated key.
    compress: QMatMul,
    compressed_norm: RmsNorm,
    /// Per head, position-free key dims → compressed dims: (heads, nope, kv_lora), f32.
    keys: Tensor,
    /// Per head, compressed dims → value dims: (heads, kv_lora, value), f32.
    values: Tensor,
    output: QMatMul,
    rope: Arc<Rope>,
    heads: usize,
    nope_dims: usize,
    rope_dims: usize,
    kv_lora_rank: usize,
    value_dims: usize,
    scale: f64,
    /// (compressed vectors, rotated keys), both (batch, tokens, width), along the tokens.
    cache: ConcatKvCache,
}

fn shape_error(name: &str, got: &[usize], want: &[usize]) -> candle_core::Error {
    candle_core::Error::Msg(format!("{name} has shape {got:?}, the metadata implies {want:?}"))
}

impl Attention {
    pub fn load<R: Read + Seek>(gg: &mut Gguf<R>, p: &str, config: &Config, rope: Arc<Rope>, device: &Device) -> Result<Self> {
        let (heads, nope, kv_lora, value) = (config.heads, config.nope_dims, config.kv_lora_rank, config.value_dims);
        let queries = if config.q_lora_rank > 0 {
            Queries::LowRank {
                a: gg.qmatmul(&format!("{p}.attn_q_a.weight"))?,
                norm: gg.rms_norm(&format!("{p}.attn_q_a_norm.weight"), config.eps)?,
                b: gg.qmatmul(&format!("{p}.attn_q_b.weight"))?,
            }
        } else {
            Queries::Full(gg.qmatmul(&format!("{p}.attn_q.weight"))?)
        };
        let dequantized = |gg: &mut Gguf<R>, name: &str| -> Result<Tensor> {
            gg.tensor(&format!("{p}.{name}.weight"))?.dequantize(device)?.to_dtype(DType::F32)
        };
        let (keys, values) = match dequantized(gg, "attn_k_b") {
            Ok(k_b) => {
                // MLA layout: attn_k_b (heads, kv_lora, nope), attn_v_b (heads, value, kv_lora).
                if k_b.dims() != [heads, kv_lora, nope] {
                    return Err(shape_error(&format!("{p}.attn_k_b"), k_b.dims(), &[heads, kv_lora, nope]));
                }
                let v_b = dequantized(gg, "attn_v_b")?;
                if v_b.dims() != [heads, value, kv_lora] {
                    return Err(shape_error(&format!("{p}.attn_v_b"), v_b.dims(), &[heads, value, kv_lora]));
                }
                (k_b.transpose(1, 2)?, v_b.transpose(1, 2)?)
            }
            Err(_) => {
                // Legacy layout: attn_kv_b (heads × (nope + value), kv_lora).
                let kv_b = dequantized(gg, "attn_kv_b")?;
                if kv_b.dims() != [heads * (nope + value), kv_lora] {
                    return Err(shape_error(&format!("{p}.attn_kv_b"), kv_b.dims(), &[heads * (nope + value), kv_lora]));
                }
                let kv_b = kv_b.reshape((heads, nope + value, kv_lora))?;
                (kv_b.narrow(1, 0, nope)?, kv_b.narrow(1, nope, value)?.transpose(1, 2)?)
            }
        };
        Ok(Attention {
            queries,
            compress: gg.qmatmul(&format!("{p}.attn_kv_a_mqa.weight"))?,
            compressed_norm: gg.rms_norm(&format!("{p}.attn_kv_a_norm.weight"), config.eps)?,
            keys: keys.contiguous()?,
            values: values.contiguous()?,
            output: gg.qmatmul(&format!("{p}.attn_output.weight"))?,
            rope,
            heads,
            nope_dims: nope,
            rope_dims: config.rope_dims,
            kv_lora_rank: kv_lora,
            value_dims: value,
            scale: config.attention_scale(),
            cache: ConcatKvCache::new(1),
        })
    }

    /// `xs` (batch, tokens, hidden) at positions `offset..`; `mask` (tokens, cached tokens)
    /// is added to the logits.
    pub fn forward(&mut self, xs: &Tensor, mask: Option<&Tensor>, offset: usize) -> Result<Tensor> {
        let (b, l, _) = xs.dims3()?;
        let (h, nope, rope, kv, value) = (self.heads, self.nope_dims, self.rope_dims, self.kv_lora_rank, self.value_dims);
        let q = self.queries.forward(xs)?.reshape((b, l, h, nope + rope))?.transpose(1, 2)?;
        let q_nope = q.narrow(D::Minus1, 0, nope)?;
        let q_rope = self.rope.apply(&q.narrow(D::Minus1, nope, rope)?, offset)?;

        let compressed = self.compress.forward(xs)?;
        let latent = self.compressed_norm.forward(&compressed.narrow(D::Minus1, 0, kv)?.contiguous()?)?;
        let k_rope = compressed.narrow(D::Minus1, kv, rope)?.reshape((b, 1, l, rope))?;
        let k_rope = self.rope.apply(&k_rope, offset)?.squeeze(1)?;
        let (latent, k_rope) = self.cache.append(&latent.contiguous()?, &k_rope.contiguous()?)?;

        // Each head's position-free query, taken into the compressed space: (b, h, l, kv).
        let absorbed = q_nope.transpose(0, 1)?.reshape((h, b * l, nope))?.matmul(&self.keys)?;
        let absorbed = absorbed.reshape((h, b, l, kv))?.transpose(0, 1)?.reshape((b, h * l, kv))?;
        let q_rope = q_rope.reshape((b, h * l, rope))?;
        let logits = (absorbed.matmul(&latent.t()?)? + q_rope.matmul(&k_rope.t()?)?)?;
        let total = latent.dim(1)?;
        let logits = (logits.reshape((b, h, l, total))? * self.scale)?;
        let logits = match mask {
            Some(mask) => logits.broadcast_add(mask)?,
            None => logits,
        };
        let attended = candle_nn::ops::softmax_last_dim(&logits)?.reshape((b, h * l, total))?.matmul(&latent)?;
        // Each head's value matrix on its attended compressed vectors: (b, l, h × value).
        let attended = attended.reshape((b, h, l, kv))?.transpose(0, 1)?.reshape((h, b * l, kv))?;
        let heads_out = attended.matmul(&self.values)?.reshape((h, b, l, value))?;
        let heads_out = heads_out.permute((1, 2, 0, 3))?.reshape((b, l, h * value))?;
        self.output.forward(&heads_out)
    }
}

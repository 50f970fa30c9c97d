//! Phi-3 / Phi-4 (`general.architecture = phi3`) from GGUF, on candle's tensor ops: what
//! runs off the CPU and with `LANTERN_GGUF_ENGINE=candle`. On the CPU, phi3 files run on
//! the host's dense decoder engine ([`super::llama`]), which reads the RoPE settings
//! through this module's [`rope_settings`] (the same factors, the same refusals).
//!
//! Adapted from candle-transformers 0.11.1 `models::quantized_phi3` (© the candle
//! authors, MIT OR Apache-2.0), because that module computes RoPE with a hard-coded base
//! of 10 000 and ignores the file's `phi3.rope.freq_base`: Phi-4 and Phi-4-reasoning use
//! 250 000, so candle computes them wrongly. What this module reads, as llama.cpp does
//! (`llm_build_phi3`, `llama_model::get_rope_factors`, `llama_context`'s
//! `yarn_attn_factor *= rope_attn_factor`):
//!
//! - `phi3.rope.freq_base` (10 000 when absent);
//! - `phi3.rope.dimension_count`: the rotated part of each head (Phi-4-mini rotates 96 of
//!   128 dimensions, NeoX style, the rest pass through);
//! - LongRoPE (Phi-3-*-128k, Phi-4-mini): the per-dimension frequency divisors
//!   `rope_factors_long.weight` / `rope_factors_short.weight` (or `rope_freqs.weight`),
//!   the long ones when this host's context window (`phi3.context_length`) exceeds
//!   `phi3.rope.scaling.original_context_length`, as llama.cpp picks them for a context
//!   of that size; and `phi3.rope.scaling.attn_factor`, which scales cos and sin;
//! - `phi3.attention.key_length` for the head size (hidden / heads when absent); a tied
//!   output layer (no `output.weight`: the embeddings).
//!
//! Other RoPE scalings (`phi3.rope.scaling.type` linear or yarn, a `rope.scaling.factor`
//! other than 1) are refused rather than computed wrongly. The sliding window of the
//! Phi-3 4k models is ignored, as llama.cpp does. The rope tables are computed in f64
//! and stored in f32; the KV cache grows with the sequence (candle's preallocates the
//! whole context).

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file;
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::kv_cache::ConcatKvCache;
use candle_nn::{Embedding, RmsNorm};
use candle_transformers::utils::{build_additive_causal_mask, repeat_kv};

use crate::error::{LanternError, LanternResult};

#[derive(Debug, Clone)]
struct Mlp {
    ffn_up: QMatMul,
    ffn_down: QMatMul,
    i_size: usize,
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let up_states = xs.apply(&self.ffn_up)?;
        let gate = up_states.narrow(D::Minus1, 0, self.i_size)?;
        let up_states = up_states.narrow(D::Minus1, self.i_size, self.i_size)?;
        let up_states = (up_states * gate.silu()?)?;
        up_states.apply(&self.ffn_down)
    }
}

/// The rotary tables: (positions, rotated dims / 2) cos and sin, already scaled by the
/// attention factor.
#[derive(Debug, Clone)]
pub struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
    /// How many leading dimensions of each head are rotated.
    pub dims: usize,
}

impl Rope {
    /// `factors`: LongRoPE's per-frequency divisors (`dims / 2` of them), if any.
    pub fn new(dims: usize, positions: usize, base: f64, factors: Option<&[f32]>, attn_factor: f64, device: &Device) -> Result<Self> {
        let half = dims / 2;
        if let Some(f) = factors {
            if f.len() != half {
                candle_core::bail!("the rope factors have {} entries, the rotation {half} frequencies", f.len());
            }
        }
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| {
                let divisor = factors.map_or(1.0, |f| f[i] as f64);
                1.0 / (base.powf(2.0 * i as f64 / dims as f64) * divisor)
            })
            .collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for f in &inv_freq {
                let angle = p as f64 * f;
                cos.push((angle.cos() * attn_factor) as f32);
                sin.push((angle.sin() * attn_factor) as f32);
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (positions, half), device)?,
            sin: Tensor::from_vec(sin, (positions, half), device)?,
            dims,
        })
    }

    /// Rotates (batch, heads, seq, head_dim) `xs` at positions `offset..offset + seq`.
    pub fn apply(&self, xs: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, _, seq_len, head_dim) = xs.dims4()?;
        let cos = self.cos.narrow(0, offset, seq_len)?.to_dtype(xs.dtype())?;
        let sin = self.sin.narrow(0, offset, seq_len)?.to_dtype(xs.dtype())?;
        if self.dims == head_dim {
            return candle_nn::rotary_emb::rope(&xs.contiguous()?, &cos, &sin);
        }
        let rotated = candle_nn::rotary_emb::rope(&xs.narrow(D::Minus1, 0, self.dims)?.contiguous()?, &cos, &sin)?;
        let rest = xs.narrow(D::Minus1, self.dims, head_dim - self.dims)?;
        Tensor::cat(&[&rotated, &rest], D::Minus1)?.contiguous()
    }
}

#[derive(Debug, Clone)]
struct LayerWeights {
    attn_qkv: QMatMul,
    attn_output: QMatMul,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    mlp: Mlp,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    rope: Rope,
    kv_cache: ConcatKvCache,
}

impl LayerWeights {
    fn forward_attn(&mut self, x: &Tensor, mask: Option<&Tensor>, index_pos: usize) -> Result<Tensor> {
        let (b_sz, seq_len, _) = x.dims3()?;
        let qkv = self.attn_qkv.forward(x)?;

        let query_pos = self.n_head * self.head_dim;
        let kv_size = self.n_kv_head * self.head_dim;
        let q = qkv.narrow(D::Minus1, 0, query_pos)?;
        let k = qkv.narrow(D::Minus1, query_pos, kv_size)?;
        let v = qkv.narrow(D::Minus1, query_pos + kv_size, kv_size)?;

        let q = q.reshape((b_sz, seq_len, self.n_head, self.head_dim))?.transpose(1, 2)?;
        let k = k.reshape((b_sz, seq_len, self.n_kv_head, self.head_dim))?.transpose(1, 2)?;
        let v = v.reshape((b_sz, seq_len, self.n_kv_head, self.head_dim))?.transpose(1, 2)?;

        let q = self.rope.apply(&q, index_pos)?.contiguous()?;
        let k = self.rope.apply(&k, index_pos)?;

        if index_pos == 0 {
            self.kv_cache.reset();
        }
        let (k, v) = self.kv_cache.append(&k.contiguous()?, &v.contiguous()?)?;

        let k = repeat_kv(k, self.n_head / self.n_kv_head)?.contiguous()?;
        let v = repeat_kv(v, self.n_head / self.n_kv_head)?.contiguous()?;

        let att = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let att = match mask {
            None => att,
            Some(mask) => att.broadcast_add(mask)?,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?;
        let y = y.transpose(1, 2)?.reshape((b_sz, seq_len, self.n_head * self.head_dim))?;
        self.attn_output.forward(&y)
    }
}

/// A Phi-3 / Phi-4 model with its own KV cache; clones share the weights.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    tok_embeddings: Embedding,
    layers: Vec<LayerWeights>,
    output_norm: RmsNorm,
    output: QMatMul,
    device: Device,
}

fn rms_norm<R: Read + Seek>(ct: &gguf_file::Content, r: &mut R, name: &str, eps: f64, device: &Device) -> Result<RmsNorm> {
    Ok(RmsNorm::new(ct.tensor(r, name, device)?.dequantize(device)?, eps))
}

fn qmatmul<R: Read + Seek>(ct: &gguf_file::Content, r: &mut R, name: &str, device: &Device) -> Result<QMatMul> {
    QMatMul::from_qtensor(ct.tensor(r, name, device)?)
}

/// The RoPE settings a phi3 GGUF asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSettings {
    pub base: f64,
    pub dims: usize,
    pub attn_factor: f64,
    /// Which factor tensor to read, if any.
    pub factors: Option<&'static str>,
}

/// Reads the RoPE settings, refusing the scalings this module does not compute.
pub fn rope_settings(ct: &gguf_file::Content, head_dim: usize, context_length: usize) -> LanternResult<RopeSettings> {
    let md = |key: &str| ct.metadata.get(&format!("phi3.{key}"));
    let number = |key: &str| -> LanternResult<Option<f64>> {
        md(key)
            .map(|v| {
                v.to_f32()
                    .map(f64::from)
                    .or_else(|_| v.to_u32().map(f64::from))
                    .or_else(|_| v.to_u64().map(|n| n as f64))
                    .map_err(|e| LanternError::InferenceFailed(format!("phi3.{key}: {e}")))
            })
            .transpose()
    };
    if let Some(kind) = md("rope.scaling.type").and_then(|v| v.to_string().ok()) {
        if !matches!(kind.as_str(), "none" | "longrope" | "su") {
            return Err(LanternError::ModelNotSupported(format!(
                "phi3 GGUF with phi3.rope.scaling.type = {kind:?}: this host computes Phi-3/Phi-4 RoPE plain or \
                 LongRoPE (rope_factors_long/short), not {kind}"
            )));
        }
    }
    if let Some(factor) = number("rope.scaling.factor")? {
        if factor != 0.0 && factor != 1.0 {
            return Err(LanternError::ModelNotSupported(format!(
                "phi3 GGUF with phi3.rope.scaling.factor = {factor}: linear/YaRN RoPE scaling is not computed by this host"
            )));
        }
    }
    let base = number("rope.freq_base")?.unwrap_or(10_000.0);
    let dims = number("rope.dimension_count")?.map_or(head_dim, |d| d as usize);
    if dims > head_dim || dims % 2 != 0 {
        return Err(LanternError::ModelNotSupported(format!(
            "phi3 GGUF rotating {dims} dimensions of {head_dim}-dimension heads"
        )));
    }
    let attn_factor = number("rope.scaling.attn_factor")?.unwrap_or(1.0);
    let original = number("rope.scaling.original_context_length")?.map_or(context_length, |n| n as usize);
    let has = |name: &str| ct.tensor_infos.contains_key(name);
    let factors = if has("rope_freqs.weight") {
        Some("rope_freqs.weight")
    } else if has("rope_factors_long.weight") && context_length > original {
        Some("rope_factors_long.weight")
    } else if has("rope_factors_short.weight") {
        Some("rope_factors_short.weight")
    } else if has("rope_factors_long.weight") {
        Some("rope_factors_long.weight")
    } else {
        None
    };
    Ok(RopeSettings { base, dims, attn_factor, factors })
}

impl ModelWeights {
    pub fn from_gguf<R: Seek + Read>(ct: gguf_file::Content, reader: &mut R, device: &Device) -> LanternResult<Self> {
        let missing = |s: &str| LanternError::InferenceFailed(format!("the phi3 GGUF has no {s} in its metadata"));
        let md_u32 = |s: &str| -> LanternResult<usize> {
            let v = ct.metadata.get(s).ok_or_else(|| missing(s))?;
            Ok(v.to_u32().map_err(|e| LanternError::inference(s, e))? as usize)
        };
        let head_count = md_u32("phi3.attention.head_count")?;
        let head_count_kv = md_u32("phi3.attention.head_count_kv")?;
        let block_count = md_u32("phi3.block_count")?;
        let embedding_length = md_u32("phi3.embedding_length")?;
        let max_seq_len = md_u32("phi3.context_length")?;
        let head_dim = md_u32("phi3.attention.key_length").unwrap_or(embedding_length / head_count);
        let i_size = md_u32("phi3.feed_forward_length")?;
        let rms_eps = ct
            .metadata
            .get("phi3.attention.layer_norm_rms_epsilon")
            .ok_or_else(|| missing("phi3.attention.layer_norm_rms_epsilon"))?
            .to_f32()
            .map_err(|e| LanternError::inference("phi3.attention.layer_norm_rms_epsilon", e))? as f64;
        let settings = rope_settings(&ct, head_dim, max_seq_len)?;
        let failed = |e: candle_core::Error| LanternError::inference("loading phi3 weights", e);

        let factors = match settings.factors {
            Some(name) => Some(
                ct.tensor(reader, name, device)
                    .and_then(|t| t.dequantize(device))
                    .and_then(|t| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
                    .map_err(failed)?,
            ),
            None => None,
        };
        let rope = Rope::new(settings.dims, max_seq_len, settings.base, factors.as_deref(), settings.attn_factor, device)
            .map_err(failed)?;

        let load = |reader: &mut R| -> Result<Self> {
            let tok_embeddings = ct.tensor(reader, "token_embd.weight", device)?.dequantize(device)?;
            let output_norm = rms_norm(&ct, reader, "output_norm.weight", rms_eps, device)?;
            let output = match ct.tensor_infos.contains_key("output.weight") {
                true => qmatmul(&ct, reader, "output.weight", device)?,
                false => qmatmul(&ct, reader, "token_embd.weight", device)?,
            };
            let mut layers = Vec::with_capacity(block_count);
            for layer_idx in 0..block_count {
                let prefix = format!("blk.{layer_idx}");
                let mlp = Mlp {
                    ffn_up: qmatmul(&ct, reader, &format!("{prefix}.ffn_up.weight"), device)?,
                    ffn_down: qmatmul(&ct, reader, &format!("{prefix}.ffn_down.weight"), device)?,
                    i_size,
                };
                layers.push(LayerWeights {
                    attn_qkv: qmatmul(&ct, reader, &format!("{prefix}.attn_qkv.weight"), device)?,
                    attn_output: qmatmul(&ct, reader, &format!("{prefix}.attn_output.weight"), device)?,
                    attn_norm: rms_norm(&ct, reader, &format!("{prefix}.attn_norm.weight"), rms_eps, device)?,
                    ffn_norm: rms_norm(&ct, reader, &format!("{prefix}.ffn_norm.weight"), rms_eps, device)?,
                    mlp,
                    n_head: head_count,
                    n_kv_head: head_count_kv,
                    head_dim,
                    rope: rope.clone(),
                    kv_cache: ConcatKvCache::new(2),
                })
            }
            Ok(Self {
                tok_embeddings: Embedding::new(tok_embeddings, embedding_length),
                layers,
                output_norm,
                output,
                device: device.clone(),
            })
        };
        load(reader).map_err(failed)
    }

    /// Next-token logits (batch, vocab) for `xs` (batch, tokens) at `index_pos`.
    pub fn forward(&mut self, xs: &Tensor, index_pos: usize) -> Result<Tensor> {
        let (_b_sz, seq_len) = xs.dims2()?;
        let mask = match seq_len {
            1 => None,
            _ => Some(build_additive_causal_mask(seq_len, index_pos, None, &self.device, DType::F32)?),
        };
        let mut xs = self.tok_embeddings.forward(xs)?;
        for layer in self.layers.iter_mut() {
            let residual = &xs;
            let ys = xs.apply(&layer.attn_norm)?;
            let ys = layer.forward_attn(&ys, mask.as_ref(), index_pos)?;
            let ys = (ys + residual)?;
            let residual = &ys;
            let ys = ys.apply(&layer.ffn_norm)?;
            let ys = layer.mlp.forward(&ys)?;
            xs = (ys + residual)?
        }
        let xs = xs.apply(&self.output_norm)?.narrow(1, seq_len - 1, 1)?.squeeze(1)?;
        self.output.forward(&xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables hold cos/sin of position × base^(-2i/d) / factor, times the attention
    /// factor, to f64 accuracy even far into the context.
    #[test]
    fn rope_tables_follow_the_base_the_factors_and_the_attention_factor() {
        let factors = [1.0f32, 2.0, 4.0, 8.0];
        let rope = Rope::new(8, 5000, 250_000.0, Some(&factors), 1.19, &Device::Cpu).unwrap();
        let cos = rope.cos.to_vec2::<f32>().unwrap();
        let sin = rope.sin.to_vec2::<f32>().unwrap();
        for p in [0usize, 1, 2047, 2049, 3001, 4999] {
            for i in 0..4 {
                let angle = p as f64 / (250_000f64.powf(2.0 * i as f64 / 8.0) * factors[i] as f64);
                assert!((cos[p][i] as f64 - 1.19 * angle.cos()).abs() < 1e-6, "cos at {p}, {i}");
                assert!((sin[p][i] as f64 - 1.19 * angle.sin()).abs() < 1e-6, "sin at {p}, {i}");
            }
        }
    }

    /// A partial rotation turns the leading dimensions and passes the rest through.
    #[test]
    fn a_partial_rotation_leaves_the_trailing_dimensions_alone() {
        let device = Device::Cpu;
        let rope = Rope::new(4, 8, 10_000.0, None, 1.0, &device).unwrap();
        let xs = Tensor::arange(0f32, 2.0 * 3.0 * 6.0, &device).unwrap().reshape((1, 2, 3, 6)).unwrap();
        let ys = rope.apply(&xs, 2).unwrap();
        let full = Rope::new(4, 8, 10_000.0, None, 1.0, &device).unwrap();
        let expected_rotated = full.apply(&xs.narrow(3, 0, 4).unwrap().contiguous().unwrap(), 2).unwrap();
        let got = ys.narrow(3, 0, 4).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, expected_rotated.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let rest = ys.narrow(3, 4, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(rest, xs.narrow(3, 4, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
}

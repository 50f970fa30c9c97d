//! Gemma 3 text models (`general.architecture = gemma3`: Gemma 3 270M, 1B, 4B, 12B, 27B).
//!
//! Why not `candle_transformers::models::quantized_gemma3` (candle 0.11.1): its feed-forward
//! layer gates with SiLU, while Gemma (HF `gelu_pytorch_tanh`, llama.cpp `LLM_FFN_GELU`)
//! gates with the tanh-approximated GELU. The logits come out plausible but wrong: on
//! Gemma 3 270M "The capital of France is" → " the" then " largest" where llama.cpp
//! says " capital". Besides, that module ignores the sliding window while decoding one
//! token at a time (it only masks when several tokens go in at once, and then lets a key
//! 512 positions back through), masks the whole cache out when several tokens follow a
//! cached prefix, and precomputes 131,072 rotary positions per layer (~2.4 GB for 18
//! layers).
//!
//! This module follows llama.cpp's gemma3 graph (`src/models/gemma3.cpp`) and the HF
//! `Gemma3TextModel`; its loading is adapted from candle's module (MIT/Apache-2.0):
//! - embeddings scaled by sqrt(hidden);
//! - per layer: RMS norm → attention (per-head RMS norms on Q and K, NeoX rotary, Q scaled
//!   by 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 62-layer 27B as llama.cpp does)
//!   → post-attention RMS norm → residual; RMS norm → GELU(gate)·up → down → post-FFN RMS
//!   norm → residual. The GGUF converter already stores Gemma's norm weights as 1 + w;
//! - every 6th layer (5, 11, 17, …) attends globally with rotary base `rope.freq_base`
//!   (and `rope.scaling` linear factor, 4B and up); the others attend to a sliding window of
//!   `attention.sliding_window` positions (a key at distance ≥ window is masked, as in
//!   llama.cpp and HF) with base 10,000 (`rope.local_freq_base` if present). Sliding
//!   layers keep only the last window − 1 keys in their cache;
//! - final RMS norm and the output matrix (tied to the embeddings when `output.weight` is
//!   absent); no logit soft-capping (Gemma 3 has none);
//! - rounded to f16 where llama.cpp's CPU path is in f16 (queries, keys, values and
//!   attention weights around its default f16 KV cache; its GELU table), so greedy
//!   near-ties fall as in llama.cpp (tests/real_gguf.rs).

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::Embedding;
use candle_transformers::models::quantized_qwen3::Gguf;
use candle_transformers::models::with_tracing::QMatMul;
use candle_transformers::quantized_nn::RmsNorm;
use candle_transformers::utils::repeat_kv;

/// llama.cpp's (and HF's) Gemma 3 layer pattern: five sliding layers, then a global one.
const SLIDING_WINDOW_PATTERN: usize = 6;
/// Rotary base of the sliding layers when the file does not say (llama.cpp hard-codes it).
const LOCAL_ROPE_BASE: f32 = 10_000.0;

#[derive(Clone)]
struct Layer {
    attn_norm: RmsNorm,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    post_ffn_norm: RmsNorm,
    /// `Some(window)` on sliding layers: a query sees keys at distance < window.
    window: Option<usize>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Multiplies the queries before Q·Kᵀ (llama.cpp's `f_attention_scale`).
    scale: f64,
    /// Cached keys and values, (batch, kv_heads, cached, head_dim); `None` when empty.
    cache: Option<(Tensor, Tensor)>,
    /// The position the next token must have for the cache to be its past.
    next: usize,
}

/// A Gemma 3 model with its own KV cache; clones share the weights (`Arc`s inside).
#[derive(Clone)]
pub struct Gemma3 {
    embeddings: Embedding,
    embed_scale: f64,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    /// Rotary inverse frequencies, (1, head_dim / 2): global layers, sliding layers.
    inv_freq_global: Tensor,
    inv_freq_local: Tensor,
}

/// The additive mask for queries at `offset..offset + queries` over keys at
/// `start..start + keys`: causal, and within `window` positions when given.
fn mask(queries: usize, offset: usize, keys: usize, start: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..queries)
        .flat_map(|i| {
            let query = offset + i;
            (0..keys).map(move |j| {
                let key = start + j;
                let visible = key <= query && window.map_or(true, |w| query - key < w);
                if visible {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(values, (1, 1, queries, keys), device)
}

/// `t` through f16 and back: where llama.cpp's CPU path (its defaults: f16 KV cache, no
/// flash attention) holds a value in f16. Gemma 3 270M has greedy near-ties (top-2 logits
/// 0.03 apart) that these roundings decide; without them the host picks llama.cpp's
/// runner-up there.
fn f16_rounded(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F16)?.to_dtype(DType::F32)
}

/// Gemma's GELU (tanh approximation: HF `gelu_pytorch_tanh`, llama.cpp `LLM_FFN_GELU`) as
/// ggml's CPU computes it: a table of f16 results indexed by the f16 input, the input
/// itself from 10 up.
fn gelu_as_ggml(x: &Tensor) -> Result<Tensor> {
    let tabled = f16_rounded(&f16_rounded(x)?.gelu()?)?;
    x.ge(10f32)?.where_cond(x, &tabled)
}

fn inv_freq(head_dim: usize, base: f32, scale: f32, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / head_dim as f32) / scale).collect();
    let n = values.len();
    Tensor::from_vec(values, (1, n), device)
}

impl Layer {
    fn attention(&mut self, xs: &Tensor, offset: usize, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (b, l, _) = xs.dims3()?;
        let project = |m: &QMatMul, heads: usize| -> Result<Tensor> {
            m.forward(xs)?.reshape((b, l, heads, self.head_dim))?.transpose(1, 2)?.contiguous()
        };
        let q = self.q_norm.forward(&project(&self.q, self.heads)?)?;
        let k = self.k_norm.forward(&project(&self.k, self.kv_heads)?)?;
        let v = project(&self.v, self.kv_heads)?;
        let q = candle_nn::rotary_emb::rope(&q.contiguous()?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k.contiguous()?, cos, sin)?;

        // A generation starts at position 0 with an empty cache; anything else must
        // continue exactly where the cache ends.
        if offset == 0 {
            self.cache = None;
            self.next = 0;
        } else if offset != self.next {
            candle_core::bail!("gemma3: position {offset} does not follow the cached {} positions", self.next);
        }
        // llama.cpp keeps K and V in an f16 cache.
        let (k, v) = (f16_rounded(&k)?, f16_rounded(&v)?);
        let (k, v) = match self.cache.take() {
            Some((ck, cv)) => (Tensor::cat(&[&ck, &k], 2)?, Tensor::cat(&[&cv, &v], 2)?),
            None => (k, v),
        };
        let keys = k.dim(2)?;
        let start = offset + l - keys;
        self.next = offset + l;
        // The next query (at `self.next`) sees at most window − 1 of these keys.
        self.cache = match self.window {
            Some(w) if keys >= w => match w - 1 {
                0 => None,
                keep => Some((k.narrow(2, keys - keep, keep)?, v.narrow(2, keys - keep, keep)?)),
            },
            _ => Some((k.clone(), v.clone())),
        };

        let groups = self.heads / self.kv_heads;
        let k = repeat_kv(k, groups)?.contiguous()?;
        let v = repeat_kv(v, groups)?.contiguous()?;
        // llama.cpp scales the queries, then takes Q·Kᵀ unscaled, with the queries
        // rounded to f16 for the f16 keys (and the weights for the f16 values below).
        let q = f16_rounded(&(q * self.scale)?)?;
        let scores = q.matmul(&k.t()?)?;
        // One query after a trimmed cache sees every key; several need the mask.
        let scores = match l {
            1 => scores,
            _ => scores.broadcast_add(&mask(l, offset, keys, start, self.window, xs.device())?)?,
        };
        let context = f16_rounded(&candle_nn::ops::softmax_last_dim(&scores)?)?.matmul(&v)?;
        let context = context.transpose(1, 2)?.reshape((b, l, self.heads * self.head_dim))?;
        self.o.forward(&context)
    }

    fn feed_forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gated = (gelu_as_ggml(&self.gate.forward(xs)?)? * self.up.forward(xs)?)?;
        self.down.forward(&gated)
    }

    fn forward(&mut self, xs: &Tensor, offset: usize, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let attended = self.attention(&self.attn_norm.forward(xs)?, offset, cos, sin)?;
        let xs = (self.post_attn_norm.forward(&attended)? + xs)?;
        let fed = self.feed_forward(&self.ffn_norm.forward(&xs)?)?;
        self.post_ffn_norm.forward(&fed)? + xs
    }
}

fn md_u32(gg: &Gguf<impl Read + Seek>, key: &str) -> Result<Option<usize>> {
    gg.metadata().get(key).map(|v| v.to_u32().map(|v| v as usize)).transpose()
}

fn md_f32(gg: &Gguf<impl Read + Seek>, key: &str) -> Result<Option<f32>> {
    gg.metadata().get(key).map(|v| v.to_f32()).transpose()
}

fn required(value: Option<usize>, key: &str) -> Result<usize> {
    match value {
        Some(v) if v > 0 => Ok(v),
        Some(_) => candle_core::bail!("gemma3: {key} is 0"),
        None => candle_core::bail!("gemma3: cannot find {key} in metadata"),
    }
}

impl Gemma3 {
    pub fn from_gguf<R: Read + Seek>(content: gguf_file::Content, reader: &mut R, device: &Device) -> Result<Self> {
        let mut gg = Gguf::new(content, reader, device.clone());
        let u = |gg: &Gguf<_>, key: &str| required(md_u32(gg, &format!("gemma3.{key}"))?, key);
        let heads = u(&gg, "attention.head_count")?;
        let kv_heads = u(&gg, "attention.head_count_kv")?;
        let hidden = u(&gg, "embedding_length")?;
        let blocks = u(&gg, "block_count")?;
        let window = u(&gg, "attention.sliding_window")?;
        let head_dim = match md_u32(&gg, "gemma3.attention.key_length")? {
            Some(d) => d,
            None => hidden / heads,
        };
        if heads % kv_heads != 0 || head_dim == 0 || head_dim % 2 != 0 {
            candle_core::bail!("gemma3: {heads} query heads, {kv_heads} key/value heads of {head_dim} do not fit");
        }
        let eps = md_f32(&gg, "gemma3.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6) as f64;
        let global_base = md_f32(&gg, "gemma3.rope.freq_base")?.unwrap_or(1_000_000.0);
        let local_base = md_f32(&gg, "gemma3.rope.local_freq_base")?.unwrap_or(LOCAL_ROPE_BASE);
        // Linear position scaling applies to the global layers only (llama.cpp's swa
        // layers use freq_scale 1).
        let linear = gg.metadata().get("gemma3.rope.scaling.type").and_then(|v| v.to_string().ok()).map(|s| s == "linear");
        let factor = match (linear, md_f32(&gg, "gemma3.rope.scaling.factor")?) {
            (Some(true), Some(f)) if f > 0.0 => f,
            _ => 1.0,
        };
        let scale = match blocks {
            62 => 1.0 / ((hidden / heads) as f64).sqrt(),
            _ => 1.0 / (head_dim as f64).sqrt(),
        };

        let embeddings = Embedding::new(gg.tensor("token_embd.weight")?.dequantize(device)?, hidden);
        let norm = gg.rms_norm("output_norm.weight", eps)?;
        let output = gg.qmatmul("output.weight").or_else(|_| gg.qmatmul("token_embd.weight"))?;
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let p = format!("blk.{i}");
            let mut mm = |name: &str| gg.qmatmul(&format!("{p}.{name}.weight"));
            let (q, k, v, o) = (mm("attn_q")?, mm("attn_k")?, mm("attn_v")?, mm("attn_output")?);
            let (gate, up, down) = (mm("ffn_gate")?, mm("ffn_up")?, mm("ffn_down")?);
            let mut rms = |name: &str| gg.rms_norm(&format!("{p}.{name}.weight"), eps);
            layers.push(Layer {
                attn_norm: rms("attn_norm")?,
                q,
                k,
                v,
                o,
                q_norm: rms("attn_q_norm")?,
                k_norm: rms("attn_k_norm")?,
                post_attn_norm: rms("post_attention_norm")?,
                ffn_norm: rms("ffn_norm")?,
                gate,
                up,
                down,
                post_ffn_norm: rms("post_ffw_norm")?,
                window: ((i + 1) % SLIDING_WINDOW_PATTERN != 0).then_some(window),
                heads,
                kv_heads,
                head_dim,
                scale,
                cache: None,
                next: 0,
            });
        }
        Ok(Gemma3 {
            embeddings,
            embed_scale: (hidden as f64).sqrt(),
            layers,
            norm,
            output,
            inv_freq_global: inv_freq(head_dim, global_base, factor, device)?,
            inv_freq_local: inv_freq(head_dim, local_base, 1.0, device)?,
        })
    }

    /// Next-token logits (batch, vocab) for `input` (batch, tokens) at position `offset`.
    pub fn forward(&mut self, input: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, l) = input.dims2()?;
        if l == 0 {
            candle_core::bail!("gemma3: no tokens to run");
        }
        let positions = Tensor::arange(offset as u32, (offset + l) as u32, input.device())?.to_dtype(DType::F32)?.reshape((l, 1))?;
        let angles = |inv_freq: &Tensor| -> Result<(Tensor, Tensor)> {
            let freqs = positions.matmul(inv_freq)?;
            Ok((freqs.cos()?.contiguous()?, freqs.sin()?.contiguous()?))
        };
        let (cos_global, sin_global) = angles(&self.inv_freq_global)?;
        let (cos_local, sin_local) = angles(&self.inv_freq_local)?;
        let mut xs = (self.embeddings.forward(input)? * self.embed_scale)?;
        for layer in &mut self.layers {
            let (cos, sin) = match layer.window {
                Some(_) => (&cos_local, &sin_local),
                None => (&cos_global, &sin_global),
            };
            xs = layer.forward(&xs, offset, cos, sin)?;
        }
        let last = self.norm.forward(&xs.i((.., l - 1..l, ..))?.contiguous()?)?;
        self.output.forward(&last)?.squeeze(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible(m: &Tensor) -> Vec<Vec<bool>> {
        m.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap().iter().map(|r| r.iter().map(|v| *v == 0.0).collect()).collect()
    }

    /// Causal, and a key `window` positions back is already out of the window.
    #[test]
    fn the_mask_is_causal_and_sliding() {
        let m = mask(3, 2, 5, 0, Some(2), &Device::Cpu).unwrap();
        assert_eq!(
            visible(&m),
            vec![
                vec![false, true, true, false, false],
                vec![false, false, true, true, false],
                vec![false, false, false, true, true],
            ]
        );
        let m = mask(2, 3, 4, 1, None, &Device::Cpu).unwrap();
        assert_eq!(visible(&m), vec![vec![true, true, true, false], vec![true, true, true, true]]);
    }

    /// GELU, not SiLU: gelu(1) ≈ 0.8412 (silu(1) ≈ 0.7311), through f16; identity from 10.
    #[test]
    fn gelu_is_the_tanh_approximation_in_f16() {
        let x = Tensor::new(&[-20f32, 0.0, 1.0, 10.3], &Device::Cpu).unwrap();
        let y = gelu_as_ggml(&x).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(y[0], 0.0);
        assert_eq!(y[1], 0.0);
        assert!((y[2] - 0.8412).abs() < 1e-3, "{}", y[2]);
        assert_eq!(y[3], 10.3);
    }
}

//! The host's own forward pass for the dense decoder GGUFs — `llama` (SmolLM2, Llama 2/3,
//! Mistral), `qwen2` (Qwen2, Qwen2.5, Qwen2.5-Coder), `qwen3` (dense Qwen3) and `phi3`
//! (Phi-3, Phi-4) — on plain f32 buffers and the host's kernels ([`crate::kernels`]). The
//! module keeps llama's name because the others are llama's graph with a few switches
//! ([`Architecture`]); one engine, not four copies of a forward pass.
//!
//! Why not candle's `quantized_llama` / `quantized_qwen2` / the host's candle ports in
//! [`super::qwen3`] and [`super::phi3`] (still used for mixture-of-experts llama files, on
//! non-CPU devices and with `LANTERN_GGUF_ENGINE=candle`): every decode step copies the
//! whole KV cache (`Tensor::cat`) and repeats it per query head, quantizes the activations
//! once per projection, allocates each op's output and runs ~30 tensor ops per layer, and
//! its Q4_1 dot product is scalar in a portable build (0.22× llama.cpp's decode speed,
//! BENCHMARKS.md). Here:
//! - q|k|v and gate|up are fused projections (one activation quantization, one parallel
//!   region each), on weight tiles in the GGUF's own formats ([`linear`](super::linear));
//!   formats the tiles do not hold (k-quants, f16, f32) run on candle's quantized matmul
//!   inside the same [`Linear`];
//! - the KV cache grows in place and grouped-query heads read their shared key/value head
//!   directly;
//! - buffers live in the session and are reused from token to token;
//! - a prompt runs all its tokens through each projection at once (four activation rows
//!   share each weight load).
//!
//! The graph is llama.cpp's `llm_build_llama`: RMS norm → q, k, v → rotary → causal
//! softmax(q·kᵀ/√d)·v → output → residual; RMS norm → SiLU(gate)·up → down → residual;
//! final RMS norm → output (tied to the embeddings when `output.weight` is absent). What
//! the other architectures change, as llama.cpp's `llm_build_qwen2` / `_qwen3` / `_phi3`:
//!
//! | | rotary | q, k, v | gate, up | extra |
//! |---|---|---|---|---|
//! | `llama` | interleaved pairs (GGML "normal"); `rope_freqs.weight` divides the frequencies (Llama 3.1) | `attn_q`, `attn_k`, `attn_v` | `ffn_gate`, `ffn_up` | |
//! | `qwen2` | NeoX (pair i is x[i], x[i + d/2]) | separate, with biases `attn_{q,k,v}.bias` | separate | |
//! | `qwen3` | NeoX | separate | separate | RMS norm of each query and key head (`attn_q_norm`, `attn_k_norm`) before the rotary |
//! | `phi3` | NeoX over the first `phi3.rope.dimension_count` values; LongRoPE factors and `attn_factor` ([`super::phi3::rope_settings`], which also refuses linear/YaRN scaling) | one `attn_qkv` tensor (or separate) | one `ffn_up` tensor, gate rows first | |
//!
//! The rotary angles are computed in f64 (candle's qwen3 tables are f16 by default and
//! wrong past position 2048; its phi3 ignores `phi3.rope.freq_base`). Other RoPE scalings
//! in qwen2/qwen3 metadata (YaRN for 128k contexts) are ignored, as candle's modules these
//! replace ignored them.

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Result, Tensor};
use half::f16;

use super::linear::{Embedding, Linear};
use crate::error::{LanternError, LanternResult};
use crate::kernels::activations::QuantizedActivations;
use crate::kernels::parallel::{self, SharedMut};
use crate::kernels::vector;

/// The dense decoder architectures this engine runs, by `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Qwen3,
    Phi3,
}

impl Architecture {
    pub fn from_name(name: &str) -> Option<Architecture> {
        Some(match name {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "qwen3" => Architecture::Qwen3,
            "phi3" => Architecture::Phi3,
            _ => return None,
        })
    }

    /// The metadata keys' prefix (`llama.block_count`, …), also the architecture's name.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Phi3 => "phi3",
        }
    }

    /// llama.cpp's rope type for the architecture (`llama_model_rope_type`).
    fn rope(self) -> RopeStyle {
        match self {
            Architecture::Llama => RopeStyle::Interleaved,
            Architecture::Qwen2 | Architecture::Qwen3 | Architecture::Phi3 => RopeStyle::NeoX,
        }
    }

    /// Whether the q, k and v projections have biases (required: llama.cpp's qwen2 loader
    /// and candle's `quantized_qwen2` both need them).
    fn qkv_biases(self) -> bool {
        self == Architecture::Qwen2
    }

    /// Whether each query and key head is RMS-normed before the rotary (required).
    fn head_norms(self) -> bool {
        self == Architecture::Qwen3
    }
}

/// How a head's rotated values are paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RopeStyle {
    /// GGML's "normal" mode: pairs (x[2i], x[2i + 1]).
    Interleaved,
    /// GPT-NeoX's: pairs (x[i], x[i + d/2]) over the `d` rotated values.
    NeoX,
}

#[derive(Debug, Clone)]
struct Config {
    layers: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    rope: RopeStyle,
}

struct Layer {
    attn_norm: Vec<f32>,
    qkv: Linear,
    /// Where k and v start in a q|k|v output row: the fused parts' offsets, or for one
    /// fused tensor (phi3's `attn_qkv`) the widths the configuration gives.
    k_at: usize,
    v_at: usize,
    /// q|k|v biases laid out as a q|k|v output row (qwen2).
    qkv_bias: Option<Vec<f32>>,
    /// Per-head RMS norm weights of queries and keys (qwen3).
    head_norms: Option<(Vec<f32>, Vec<f32>)>,
    output: Linear,
    ffn_norm: Vec<f32>,
    gate_up: Linear,
    /// Where up starts in a gate|up output row.
    up_at: usize,
    down: Linear,
}

pub struct Llama {
    config: Config,
    embedding: Embedding,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// `None`: tied to the embedding table.
    output: Option<Linear>,
    /// Per rotary pair, its angle per position: `base^(-2i/rope_dim)`, divided by the pair's
    /// factor (`rope_freqs.weight`, phi3's LongRoPE factors) when the file has one.
    thetas: Vec<f64>,
    /// Scales cos and sin (phi3's `rope.scaling.attn_factor`; 1 elsewhere).
    attn_factor: f64,
    vocab: usize,
}

fn vector_of<R: Read + Seek>(content: &Content, reader: &mut R, name: &str) -> Result<Vec<f32>> {
    content.tensor(reader, name, &Device::Cpu)?.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()
}

fn md_u32(content: &Content, key: &str) -> Option<usize> {
    super::metadata_u32(content, key).map(|v| v as usize)
}

fn md_f32(content: &Content, key: &str) -> Option<f32> {
    content.metadata.get(key).and_then(|v| v.to_f32().ok())
}

impl Llama {
    /// Whether this file is one this engine runs: a dense file of one of the
    /// [`Architecture`]s (llama files with experts go to candle's `quantized_llama`).
    pub fn handles(content: &Content) -> bool {
        let name = super::metadata_string(content, "general.architecture").unwrap_or_default();
        match Architecture::from_name(&name) {
            Some(architecture) => md_u32(content, &format!("{}.expert_count", architecture.name())).unwrap_or(0) <= 1,
            None => false,
        }
    }

    /// Loads the weights. Refusals of what the engine does not compute (phi3's RoPE
    /// scalings) are `ModelNotSupported`; broken files are `InferenceFailed`.
    pub fn from_gguf<R: Read + Seek>(content: &Content, reader: &mut R) -> LanternResult<Llama> {
        let name = super::metadata_string(content, "general.architecture").unwrap_or_default();
        let architecture = Architecture::from_name(&name)
            .ok_or_else(|| LanternError::ModelNotSupported(format!("the dense decoder engine does not run {name:?} GGUFs")))?;
        let failed = |e: candle_core::Error| LanternError::inference(&format!("loading {name} weights"), e);
        let prefix = architecture.name();
        let need = |key: &str| {
            md_u32(content, &format!("{prefix}.{key}"))
                .ok_or_else(|| LanternError::InferenceFailed(format!("the {prefix} GGUF has no {prefix}.{key} in its metadata")))
        };
        let (heads, hidden, layers) = (need("attention.head_count")?, need("embedding_length")?, need("block_count")?);
        let kv_heads = md_u32(content, &format!("{prefix}.attention.head_count_kv")).unwrap_or(heads);
        let head_dim = md_u32(content, &format!("{prefix}.attention.key_length")).unwrap_or(hidden / heads.max(1));
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || head_dim == 0 || head_dim % 2 != 0 {
            return Err(LanternError::InferenceFailed(format!(
                "{prefix}: {heads} heads, {kv_heads} key/value heads of {head_dim} do not fit"
            )));
        }
        // The rotary: its width, base, per-pair divisors and cos/sin scale.
        let (rope_dim, rope_base, factors_tensor, attn_factor) = match architecture {
            Architecture::Phi3 => {
                let context = md_u32(content, "phi3.context_length").unwrap_or(4096);
                let settings = super::phi3::rope_settings(content, head_dim, context)?;
                (settings.dims, settings.base, settings.factors, settings.attn_factor)
            }
            _ => {
                let dims = md_u32(content, &format!("{prefix}.rope.dimension_count")).unwrap_or(head_dim);
                // llama.cpp's default base when the key is absent, for every architecture.
                let base = md_f32(content, &format!("{prefix}.rope.freq_base")).unwrap_or(10_000.0) as f64;
                let factors = content.tensor_infos.contains_key("rope_freqs.weight").then_some("rope_freqs.weight");
                (dims, base, factors, 1.0)
            }
        };
        if rope_dim > head_dim || rope_dim % 2 != 0 || rope_dim == 0 {
            return Err(LanternError::InferenceFailed(format!("{prefix}: a rotary of {rope_dim} in heads of {head_dim}")));
        }
        let config = Config {
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            eps: md_f32(content, &format!("{prefix}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            rope: architecture.rope(),
        };
        let load = |reader: &mut R| -> Result<Llama> {
            let token_embd = content.tensor(reader, "token_embd.weight", &Device::Cpu)?;
            let embedding = Embedding::from_tensor(&token_embd)?;
            let vocab = embedding.rows();
            // The GGUF copy of the table goes before the rest loads (the tiled table or the
            // output projection holds what is needed): kept to the end, it was 17.7 MiB of
            // SmolLM2's load peak (BENCHMARKS.md, "Memory").
            let output = match (content.tensor_infos.contains_key("output.weight"), &embedding) {
                (true, _) => {
                    drop(token_embd);
                    Some(Linear::load(content, reader, &["output.weight".into()])?)
                }
                (false, Embedding::Tiled(_)) => {
                    drop(token_embd);
                    None
                }
                (false, Embedding::Dense { .. }) => Some(Linear::from_tensors(vec![token_embd])?),
            };
            let freq_factors = match factors_tensor {
                Some(name) => vector_of(content, reader, name)?,
                None => vec![1.0; rope_dim / 2],
            };
            if freq_factors.len() != rope_dim / 2 {
                candle_core::bail!("the rope factors have {} entries for {} rotary pairs", freq_factors.len(), rope_dim / 2);
            }
            let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
            let mut blocks = Vec::with_capacity(layers);
            for i in 0..layers {
                let name = |n: &str| format!("blk.{i}.{n}.weight");
                let has = |n: &str| content.tensor_infos.contains_key(&name(n));
                let attn_norm = vector_of(content, reader, &name("attn_norm"))?;
                // Each part at least as wide as the heads need (a fused tensor: all three).
                let (qkv, k_at, v_at) = if has("attn_qkv") && !has("attn_q") {
                    let qkv = Linear::load(content, reader, &[name("attn_qkv")])?;
                    if qkv.rows(0) < q_width + 2 * kv_width {
                        candle_core::bail!("blk.{i}.attn_qkv has {} rows for q|k|v of {q_width}|{kv_width}|{kv_width}", qkv.rows(0));
                    }
                    (qkv, q_width, q_width + kv_width)
                } else {
                    let qkv = Linear::load(content, reader, &[name("attn_q"), name("attn_k"), name("attn_v")])?;
                    if qkv.rows(0) < q_width || qkv.rows(1) < kv_width || qkv.rows(2) < kv_width {
                        candle_core::bail!("blk.{i}: attention weights do not match {heads}×{head_dim} / {kv_heads}×{head_dim}");
                    }
                    let (k_at, v_at) = (qkv.offset(1), qkv.offset(2));
                    (qkv, k_at, v_at)
                };
                if attn_norm.len() != hidden {
                    candle_core::bail!("blk.{i}.attn_norm has {} values for a hidden size of {hidden}", attn_norm.len());
                }
                let qkv_bias = match architecture.qkv_biases() {
                    true => {
                        let mut bias = vec![0.0; qkv.width()];
                        for (part, at, rows) in [("attn_q", 0, qkv.rows(0)), ("attn_k", k_at, qkv.rows(1)), ("attn_v", v_at, qkv.rows(2))] {
                            let values = vector_of(content, reader, &format!("blk.{i}.{part}.bias"))?;
                            if values.len() != rows {
                                candle_core::bail!("blk.{i}.{part}.bias has {} values for {rows} rows", values.len());
                            }
                            bias[at..][..rows].copy_from_slice(&values);
                        }
                        Some(bias)
                    }
                    false => None,
                };
                let head_norms = match architecture.head_norms() {
                    true => {
                        let (q, k) = (vector_of(content, reader, &name("attn_q_norm"))?, vector_of(content, reader, &name("attn_k_norm"))?);
                        if q.len() != head_dim || k.len() != head_dim {
                            candle_core::bail!("blk.{i}: head norms of {} and {} values for heads of {head_dim}", q.len(), k.len());
                        }
                        Some((q, k))
                    }
                    false => None,
                };
                let output = Linear::load(content, reader, &[name("attn_output")])?;
                let ffn_norm = vector_of(content, reader, &name("ffn_norm"))?;
                let down = Linear::load(content, reader, &[name("ffn_down")])?;
                let ffn = down.k();
                // Phi-3 stores gate|up as one `ffn_up` tensor, gate rows first.
                let (gate_up, up_at) = if has("ffn_gate") {
                    let gate_up = Linear::load(content, reader, &[name("ffn_gate"), name("ffn_up")])?;
                    let up_at = gate_up.offset(1);
                    (gate_up, up_at)
                } else {
                    (Linear::load(content, reader, &[name("ffn_up")])?, ffn)
                };
                let gate_up_rows = (0..gate_up.parts()).map(|p| gate_up.rows(p)).sum::<usize>();
                if gate_up_rows != 2 * ffn {
                    candle_core::bail!("blk.{i}: gate|up of {gate_up_rows} rows for a feed-forward of {ffn}");
                }
                if ffn_norm.len() != hidden {
                    candle_core::bail!("blk.{i}.ffn_norm has {} values for a hidden size of {hidden}", ffn_norm.len());
                }
                blocks.push(Layer { attn_norm, qkv, k_at, v_at, qkv_bias, head_norms, output, ffn_norm, gate_up, up_at, down });
            }
            let norm = vector_of(content, reader, "output_norm.weight")?;
            let thetas = freq_factors
                .iter()
                .enumerate()
                .map(|(pair, factor)| rope_base.powf(-((2 * pair) as f64) / rope_dim as f64) / *factor as f64)
                .collect();
            Ok(Llama { config: config.clone(), embedding, layers: blocks, norm, output, thetas, attn_factor, vocab })
        };
        load(reader).map_err(failed)
    }
}

/// One generation's state: the KV cache and reused buffers.
pub struct Session {
    model: Arc<Llama>,
    /// Per layer, `positions × kv_heads·head_dim` keys and values, in f16 as llama.cpp
    /// keeps them by default: half the memory of f32 (sixteen SmolLM2 generations at
    /// once held ~30 MiB of cache in f32, BENCHMARKS.md "Memory") and half the bytes each
    /// attention step reads; widened back to f32 inside the dot products.
    keys: Vec<Vec<f16>>,
    values: Vec<Vec<f16>>,
    len: usize,
    buffers: Buffers,
}

#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attended: Vec<f32>,
    projected: Vec<f32>,
    gate_up: Vec<f32>,
    activated: Vec<f32>,
    logits: Vec<f32>,
    /// Per new token, per rotary pair: `(sin, cos)` of its angle.
    rotations: Vec<(f32, f32)>,
    /// One head's values, for the in-place head norms.
    head: Vec<f32>,
    activations: QuantizedActivations,
}

fn resize(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    &mut buffer[..len]
}

impl Session {
    pub fn new(model: Arc<Llama>) -> Session {
        let layers = model.config.layers;
        Session { model, keys: vec![Vec::new(); layers], values: vec![Vec::new(); layers], len: 0, buffers: Buffers::default() }
    }

    /// Rotates `x`'s first `2 · rotation.len()` values by one position's `(sin, cos)`s,
    /// paired as `style` says; the rest pass through (phi3's partial rotary).
    fn rotate(x: &mut [f32], rotation: &[(f32, f32)], style: RopeStyle) {
        let half = rotation.len();
        for (pair, &(sin, cos)) in rotation.iter().enumerate() {
            let (i, j) = match style {
                RopeStyle::Interleaved => (2 * pair, 2 * pair + 1),
                RopeStyle::NeoX => (pair, pair + half),
            };
            let (a, b) = (x[i], x[j]);
            x[i] = a * cos - b * sin;
            x[j] = a * sin + b * cos;
        }
    }

    /// RMS-normalises one head in place (qwen3's query and key norms).
    fn norm_head(x: &mut [f32], weight: &[f32], eps: f32, scratch: &mut Vec<f32>) {
        scratch.clear();
        scratch.extend_from_slice(x);
        vector::rms_norm(scratch, weight, eps, x);
    }

    /// Runs `tokens` at positions `position..`, returning the last token's logits.
    pub fn forward_tokens(&mut self, tokens: &[u32], position: usize) -> Result<Vec<f32>> {
        let model = self.model.clone();
        let c = &model.config;
        let rows = tokens.len();
        if rows == 0 {
            candle_core::bail!("no tokens to run");
        }
        if position > self.len {
            candle_core::bail!("position {position} is past the {} cached tokens", self.len);
        }
        // Going back (a new prompt over an old cache) forgets what came after.
        self.len = position;
        let kv_width = c.kv_heads * c.head_dim;
        for layer in 0..c.layers {
            self.keys[layer].truncate(position * kv_width);
            self.values[layer].truncate(position * kv_width);
        }
        let b = &mut self.buffers;
        let hidden = c.hidden;
        let x = resize(&mut b.x, rows * hidden);
        for (row, &token) in tokens.iter().enumerate() {
            if token as usize >= model.vocab {
                candle_core::bail!("token {token} is outside the vocabulary of {}", model.vocab);
            }
            model.embedding.row(token as usize, &mut x[row * hidden..][..hidden]);
        }
        // Every layer and head rotates by the same angles: compute them once per position.
        let pairs = model.thetas.len();
        b.rotations.clear();
        for r in 0..rows {
            b.rotations.extend(model.thetas.iter().map(|theta| {
                let (sin, cos) = ((position + r) as f64 * theta).sin_cos();
                ((sin * model.attn_factor) as f32, (cos * model.attn_factor) as f32)
            }));
        }
        for (index, layer) in model.layers.iter().enumerate() {
            let normed = resize(&mut b.normed, rows * hidden);
            for r in 0..rows {
                vector::rms_norm(&b.x[r * hidden..][..hidden], &layer.attn_norm, c.eps, &mut normed[r * hidden..][..hidden]);
            }
            let qkv_width = layer.qkv.width();
            let qkv = resize(&mut b.qkv, rows * qkv_width);
            layer.qkv.forward(normed, rows, &mut b.activations, qkv)?;
            let (k_at, v_at) = (layer.k_at, layer.v_at);
            for r in 0..rows {
                let row = &mut qkv[r * qkv_width..][..qkv_width];
                if let Some(bias) = &layer.qkv_bias {
                    row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
                }
                if let Some((q_norm, k_norm)) = &layer.head_norms {
                    for h in 0..c.heads {
                        Self::norm_head(&mut row[h * c.head_dim..][..c.head_dim], q_norm, c.eps, &mut b.head);
                    }
                    for h in 0..c.kv_heads {
                        Self::norm_head(&mut row[k_at + h * c.head_dim..][..c.head_dim], k_norm, c.eps, &mut b.head);
                    }
                }
                let rotation = &b.rotations[r * pairs..][..pairs];
                for h in 0..c.heads {
                    Self::rotate(&mut row[h * c.head_dim..][..c.head_dim], rotation, c.rope);
                }
                for h in 0..c.kv_heads {
                    Self::rotate(&mut row[k_at + h * c.head_dim..][..c.head_dim], rotation, c.rope);
                }
                self.keys[index].extend(row[k_at..][..kv_width].iter().map(|&x| f16::from_f32(x)));
                self.values[index].extend(row[v_at..][..kv_width].iter().map(|&x| f16::from_f32(x)));
            }
            let q_width = c.heads * c.head_dim;
            let attended = resize(&mut b.attended, rows * q_width);
            attend(c, qkv, qkv_width, &self.keys[index], &self.values[index], position, rows, attended);
            let projected = resize(&mut b.projected, rows * layer.output.width());
            layer.output.forward(attended, rows, &mut b.activations, projected)?;
            add_rows(&mut b.x, projected, layer.output.width(), hidden, rows);

            let normed = resize(&mut b.normed, rows * hidden);
            for r in 0..rows {
                vector::rms_norm(&b.x[r * hidden..][..hidden], &layer.ffn_norm, c.eps, &mut normed[r * hidden..][..hidden]);
            }
            let gu_width = layer.gate_up.width();
            let gate_up = resize(&mut b.gate_up, rows * gu_width);
            layer.gate_up.forward(normed, rows, &mut b.activations, gate_up)?;
            let ffn = layer.down.k();
            let up_at = layer.up_at;
            let activated = resize(&mut b.activated, rows * ffn);
            for r in 0..rows {
                let row = &gate_up[r * gu_width..][..gu_width];
                vector::silu_mul(&row[..ffn], &row[up_at..][..ffn], &mut activated[r * ffn..][..ffn]);
            }
            let projected = resize(&mut b.projected, rows * layer.down.width());
            layer.down.forward(activated, rows, &mut b.activations, projected)?;
            add_rows(&mut b.x, projected, layer.down.width(), hidden, rows);
        }
        self.len = position + rows;
        let last = &b.x[(rows - 1) * hidden..][..hidden];
        let normed = resize(&mut b.normed, hidden);
        vector::rms_norm(last, &model.norm, c.eps, normed);
        let logits = match (&model.output, &model.embedding) {
            (Some(output), _) => {
                let logits = resize(&mut b.logits, output.width());
                output.forward(normed, 1, &mut b.activations, logits)?;
                logits
            }
            (None, Embedding::Tiled(table)) => {
                let logits = resize(&mut b.logits, table.width());
                b.activations.quantize(normed, 1, hidden);
                table.matmul(&b.activations, logits, table.width());
                logits
            }
            (None, Embedding::Dense { .. }) => unreachable!("a dense table gets its own output projection at load"),
        };
        Ok(logits[..model.vocab].to_vec())
    }
}

/// `x[r] += y[r][..hidden]` for each row (`y` rows are `stride` wide).
fn add_rows(x: &mut [f32], y: &[f32], stride: usize, hidden: usize, rows: usize) {
    for r in 0..rows {
        for (x, y) in x[r * hidden..][..hidden].iter_mut().zip(&y[r * stride..][..hidden]) {
            *x += y;
        }
    }
}

/// Causal attention of `rows` new queries (at `position..`) over the cache, which already
/// holds their own keys and values. Query head `h` reads key/value head `h / group`.
#[allow(clippy::too_many_arguments)]
fn attend(c: &Config, qkv: &[f32], qkv_width: usize, keys: &[f16], values: &[f16], position: usize, rows: usize, out: &mut [f32]) {
    let (d, kv_width, group) = (c.head_dim, c.kv_heads * c.head_dim, c.heads / c.kv_heads);
    let scale = 1.0 / (d as f32).sqrt();
    let q_width = c.heads * d;
    let one = |item: usize, scores: &mut Vec<f32>, out: &mut [f32]| {
        let (r, h) = (item / c.heads, item % c.heads);
        let q = &qkv[r * qkv_width + h * d..][..d];
        let kv = (h / group) * d;
        let seen = position + r + 1;
        scores.clear();
        scores.extend((0..seen).map(|p| vector::dot_f16(q, &keys[p * kv_width + kv..][..d]) * scale));
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
        let total = vector::exp_shifted_sum(scores, max);
        let out = &mut out[r * q_width + h * d..][..d];
        out.fill(0.0);
        for (p, weight) in scores.iter().enumerate() {
            vector::axpy_f16(out, weight / total, &values[p * kv_width + kv..][..d]);
        }
    };
    let items = rows * c.heads;
    if rows == 1 {
        let mut scores = Vec::with_capacity(position + 1);
        (0..items).for_each(|item| one(item, &mut scores, out));
        return;
    }
    let shared = SharedMut::new(out);
    parallel::for_each_chunk(items, |range| {
        let mut scores = Vec::new();
        // SAFETY: item (r, h) writes only out[r][h·d..(h+1)·d].
        let out = unsafe { shared.get() };
        range.for_each(|item| one(item, &mut scores, out));
    });
}

/// `CausalLm` adapter for the shared decode loop.
impl super::super::decoding::CausalLm for Session {
    fn forward(&mut self, input: &Tensor, position: usize) -> Result<Tensor> {
        let tokens = input.flatten_all()?.to_vec1::<u32>()?;
        let logits = self.forward_tokens(&tokens, position)?;
        Tensor::from_vec(logits, self.model.vocab, &Device::Cpu)
    }

    /// The KV cache at its final size: grown by doubling, a short answer's cache held up
    /// to twice what it used (~4 MiB per SmolLM2 generation instead of ~2; sixteen
    /// plugins generating at once, BENCHMARKS.md "Memory").
    fn reserve(&mut self, positions: usize) {
        let width = self.model.config.kv_heads * self.model.config.head_dim;
        for cache in self.keys.iter_mut().chain(self.values.iter_mut()) {
            cache.reserve_exact((positions * width).saturating_sub(cache.len()));
        }
    }
}

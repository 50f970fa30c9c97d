//! The host's own forward pass for dense `llama` GGUFs (SmolLM2, Llama 2/3, Mistral), on
//! plain f32 buffers and the host's kernels ([`crate::kernels`]).
//!
//! Why not candle's `quantized_llama` (still used for mixture-of-experts llama files):
//! every decode step copies the whole KV cache (`Tensor::cat`) and repeats it per query
//! head, quantizes the activations once per projection, allocates each op's output and
//! runs ~30 tensor ops per layer, and its Q4_1 dot product is scalar in a portable build
//! (0.22× llama.cpp's decode speed, BENCHMARKS.md). Here:
//! - q|k|v and gate|up are fused projections (one activation quantization, one parallel
//!   region each), on weight tiles in the GGUF's own formats ([`linear`](super::linear));
//! - the KV cache grows in place and grouped-query heads read their shared key/value head
//!   directly;
//! - buffers live in the session and are reused from token to token;
//! - a prompt runs all its tokens through each projection at once (four activation rows
//!   share each weight load).
//!
//! The graph is llama.cpp's `llm_build_llama`: RMS norm → q, k, v → rotary (interleaved
//! pairs, GGML's "normal" mode; `rope_freqs.weight` divides the frequencies when present,
//! as for Llama 3.1) → causal softmax(q·kᵀ/√d)·v → output → residual; RMS norm →
//! SiLU(gate)·up → down → residual; final RMS norm → output (tied to the embeddings when
//! `output.weight` is absent).

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Result, Tensor};

use super::linear::{Embedding, Linear};
use crate::kernels::activations::QuantizedActivations;
use crate::kernels::parallel::{self, SharedMut};
use crate::kernels::vector;

#[derive(Debug, Clone)]
struct Config {
    layers: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
}

struct Layer {
    attn_norm: Vec<f32>,
    qkv: Linear,
    output: Linear,
    ffn_norm: Vec<f32>,
    gate_up: Linear,
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
    /// factor in `rope_freqs.weight` when the file has one.
    thetas: Vec<f64>,
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
    /// Whether this file is one this module runs: dense llama (no experts).
    pub fn handles(content: &Content) -> bool {
        md_u32(content, "llama.expert_count").unwrap_or(0) <= 1
    }

    pub fn from_gguf<R: Read + Seek>(content: &Content, reader: &mut R) -> Result<Llama> {
        let need = |key: &str| {
            md_u32(content, &format!("llama.{key}")).ok_or_else(|| candle_core::Error::Msg(format!("llama.{key} is missing")))
        };
        let (heads, hidden, layers) = (need("attention.head_count")?, need("embedding_length")?, need("block_count")?);
        let kv_heads = md_u32(content, "llama.attention.head_count_kv").unwrap_or(heads);
        let head_dim = md_u32(content, "llama.attention.key_length").unwrap_or(hidden / heads.max(1));
        let rope_dim = md_u32(content, "llama.rope.dimension_count").unwrap_or(head_dim);
        let rope_base = md_f32(content, "llama.rope.freq_base").unwrap_or(10_000.0);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || head_dim % 2 != 0 || rope_dim > head_dim || rope_dim % 2 != 0 {
            candle_core::bail!("llama: {heads} heads, {kv_heads} key/value heads of {head_dim} (rotary {rope_dim}) do not fit");
        }
        let config = Config {
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            eps: md_f32(content, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        };
        let token_embd = content.tensor(reader, "token_embd.weight", &Device::Cpu)?;
        let embedding = Embedding::from_tensor(&token_embd)?;
        let vocab = embedding.rows();
        let output = match content.tensor_infos.contains_key("output.weight") {
            true => Some(Linear::load(content, reader, &["output.weight".into()])?),
            false => match embedding {
                Embedding::Tiled(_) => None,
                Embedding::Dense { .. } => Some(Linear::from_tensors(vec![token_embd])?),
            },
        };
        let freq_factors = match content.tensor_infos.contains_key("rope_freqs.weight") {
            true => vector_of(content, reader, "rope_freqs.weight")?,
            false => vec![1.0; rope_dim / 2],
        };
        if freq_factors.len() != rope_dim / 2 {
            candle_core::bail!("rope_freqs.weight has {} factors for {} rotary pairs", freq_factors.len(), rope_dim / 2);
        }
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let name = |n: &str| format!("blk.{i}.{n}.weight");
            let layer = Layer {
                attn_norm: vector_of(content, reader, &name("attn_norm"))?,
                qkv: Linear::load(content, reader, &[name("attn_q"), name("attn_k"), name("attn_v")])?,
                output: Linear::load(content, reader, &[name("attn_output")])?,
                ffn_norm: vector_of(content, reader, &name("ffn_norm"))?,
                gate_up: Linear::load(content, reader, &[name("ffn_gate"), name("ffn_up")])?,
                down: Linear::load(content, reader, &[name("ffn_down")])?,
            };
            let q_width = heads * head_dim;
            let kv_width = kv_heads * head_dim;
            if layer.qkv.offset(1) < q_width || layer.qkv.offset(2) < layer.qkv.offset(1) + kv_width || layer.attn_norm.len() != hidden {
                candle_core::bail!("blk.{i}: attention weights do not match {heads}×{head_dim} / {kv_heads}×{head_dim}");
            }
            blocks.push(layer);
        }
        let norm = vector_of(content, reader, "output_norm.weight")?;
        let thetas = freq_factors
            .iter()
            .enumerate()
            .map(|(pair, factor)| (rope_base as f64).powf(-((2 * pair) as f64) / rope_dim as f64) / *factor as f64)
            .collect();
        Ok(Llama { config, embedding, layers: blocks, norm, output, thetas, vocab })
    }
}

/// One generation's state: the KV cache and reused buffers.
pub struct Session {
    model: Arc<Llama>,
    /// Per layer, `positions × kv_heads·head_dim` keys and values.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
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

    /// Rotates `x`'s first values in interleaved pairs by one position's `(sin, cos)`s.
    fn rotate(x: &mut [f32], rotation: &[(f32, f32)]) {
        for (pair, &(sin, cos)) in rotation.iter().enumerate() {
            let (a, b) = (x[2 * pair], x[2 * pair + 1]);
            x[2 * pair] = a * cos - b * sin;
            x[2 * pair + 1] = a * sin + b * cos;
        }
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
                (sin as f32, cos as f32)
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
            let (k_at, v_at) = (layer.qkv.offset(1), layer.qkv.offset(2));
            for r in 0..rows {
                let row = &mut qkv[r * qkv_width..][..qkv_width];
                let rotation = &b.rotations[r * pairs..][..pairs];
                for h in 0..c.heads {
                    Self::rotate(&mut row[h * c.head_dim..][..c.head_dim], rotation);
                }
                for h in 0..c.kv_heads {
                    Self::rotate(&mut row[k_at + h * c.head_dim..][..c.head_dim], rotation);
                }
                self.keys[index].extend_from_slice(&row[k_at..][..kv_width]);
                self.values[index].extend_from_slice(&row[v_at..][..kv_width]);
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
            let up_at = layer.gate_up.offset(1);
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
fn attend(c: &Config, qkv: &[f32], qkv_width: usize, keys: &[f32], values: &[f32], position: usize, rows: usize, out: &mut [f32]) {
    let (d, kv_width, group) = (c.head_dim, c.kv_heads * c.head_dim, c.heads / c.kv_heads);
    let scale = 1.0 / (d as f32).sqrt();
    let q_width = c.heads * d;
    let one = |item: usize, scores: &mut Vec<f32>, out: &mut [f32]| {
        let (r, h) = (item / c.heads, item % c.heads);
        let q = &qkv[r * qkv_width + h * d..][..d];
        let kv = (h / group) * d;
        let seen = position + r + 1;
        scores.clear();
        scores.extend((0..seen).map(|p| vector::dot(q, &keys[p * kv_width + kv..][..d]) * scale));
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
        let total = vector::exp_shifted_sum(scores, max);
        let out = &mut out[r * q_width + h * d..][..d];
        out.fill(0.0);
        for (p, weight) in scores.iter().enumerate() {
            vector::axpy(out, weight / total, &values[p * kv_width + kv..][..d]);
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
}

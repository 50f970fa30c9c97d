//! BERT's forward pass on the CPU, written for sentence embedding.
//!
//! Why not candle's `BertModel`: that runs a padded (batch, longest) tensor through some
//! twenty separate ops per layer, each a pass over memory followed by a thread-pool
//! synchronisation, with an exact GELU that calls scalar `erf` one value at a time
//! (BENCHMARKS.md: 0.53–0.72× PyTorch). This pass:
//!
//! - packs the batch: the sentences' tokens are stacked with no padding, so every matmul
//!   covers real tokens only, and attention runs per sentence with no mask;
//! - fuses q|k|v into one matmul, and finishes bias, GELU and the residual add inside the
//!   matmul's own column blocks ([`DenseLinear`]), on the `gemm` crate's AVX-512 kernels;
//! - vectorises GELU's erf, softmax and LayerNorm ([`vector`]);
//! - reuses its buffers between calls.
//!
//! The arithmetic is BERT's, in f32: within cosine 0.99999 of the NumPy reference
//! (`tests/embeddings.rs`), as candle's was. `LANTERN_BERT_ENGINE=candle` runs candle's
//! model instead, for comparison.

use std::sync::Mutex;

use crate::error::{LanternError, LanternResult};
use crate::families::safetensors_file::SafetensorsFile;
use serde::Deserialize;

use crate::kernels::dense::{Activation, DenseLinear};
use crate::kernels::parallel::{for_each_chunk, SharedMut};
use crate::kernels::vector;

/// The `config.json` keys the family reads (the same keys candle's `bert::Config` reads).
#[derive(Debug, Clone, Deserialize)]
pub struct BertShape {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub vocab_size: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_max_positions() -> usize {
    512
}

fn default_type_vocab() -> usize {
    2
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    qkv: DenseLinear,
    attention_out: DenseLinear,
    attention_norm: LayerNorm,
    up: DenseLinear,
    down: DenseLinear,
    output_norm: LayerNorm,
}

/// Working memory of one forward pass, kept for the next.
#[derive(Default)]
struct Scratch {
    hidden: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    intermediate: Vec<f32>,
}

pub struct PackedBert {
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    /// Token type 0's row: sentence encoders see one segment.
    token_type: Vec<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    head_dim: usize,
    vocab: usize,
    positions: usize,
    eps: f32,
    activation: Activation,
    scratch: Mutex<Vec<Scratch>>,
}

/// Tensors under one name prefix of the checkpoint.
struct Weights<'a> {
    file: &'a SafetensorsFile,
    prefix: String,
}

impl Weights<'_> {
    fn pp(&self, part: impl std::fmt::Display) -> Weights<'_> {
        Weights { file: self.file, prefix: format!("{}{part}.", self.prefix) }
    }

    fn tensor(&self, shape: &[usize], name: &str) -> LanternResult<Vec<f32>> {
        self.file.f32(&format!("{}{name}", self.prefix), shape)
    }

    fn linear(&self, prefix: &str, outputs: usize, inputs: usize) -> LanternResult<DenseLinear> {
        let weight = self.tensor(&[outputs, inputs], &format!("{prefix}.weight"))?;
        let bias = self.tensor(&[outputs], &format!("{prefix}.bias"))?;
        Ok(DenseLinear::new(weight, bias, outputs, inputs))
    }

    fn layer_norm(&self, prefix: &str, width: usize) -> LanternResult<LayerNorm> {
        Ok(LayerNorm { weight: self.tensor(&[width], &format!("{prefix}.weight"))?, bias: self.tensor(&[width], &format!("{prefix}.bias"))? })
    }
}

impl PackedBert {
    /// The activations this pass implements; others stay on candle's model.
    pub fn supports(shape: &BertShape) -> Option<Activation> {
        match shape.hidden_act.as_str() {
            "gelu" => Some(Activation::GeluErf),
            // candle's name for it, then transformers' names.
            "geluapproximate" | "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }

    pub fn load(file: &SafetensorsFile, shape: &BertShape) -> LanternResult<Self> {
        let (vocab, positions, type_vocab) = (shape.vocab_size, shape.max_position_embeddings, shape.type_vocab_size);
        let activation = Self::supports(shape)
            .ok_or_else(|| LanternError::ModelNotSupported(format!("hidden_act {:?} has no packed kernel", shape.hidden_act)))?;
        // Checkpoints name their tensors `embeddings.…`, `bert.embeddings.…` or
        // `{model_type}.embeddings.…`, as candle's loader accepts.
        let probe = "embeddings.word_embeddings.weight";
        let prefix = [Some("bert"), shape.model_type.as_deref()]
            .into_iter()
            .flatten()
            .find(|prefix| !file.contains(probe) && file.contains(&format!("{prefix}.{probe}")))
            .map_or(String::new(), |prefix| format!("{prefix}."));
        let weights = Weights { file, prefix };
        let (h, i) = (shape.hidden_size, shape.intermediate_size);
        let head_dim = h / shape.num_attention_heads;
        let embeddings = weights.pp("embeddings");
        let token_types = embeddings.tensor(&[type_vocab, h], "token_type_embeddings.weight")?;
        let mut layers = Vec::with_capacity(shape.num_hidden_layers);
        for index in 0..shape.num_hidden_layers {
            let layer = weights.pp(format!("encoder.layer.{index}"));
            let qkv = ["query", "key", "value"]
                .iter()
                .map(|part| layer.linear(&format!("attention.self.{part}"), h, h))
                .collect::<LanternResult<Vec<_>>>()?;
            layers.push(Layer {
                qkv: DenseLinear::stack(qkv),
                attention_out: layer.linear("attention.output.dense", h, h)?,
                attention_norm: layer.layer_norm("attention.output.LayerNorm", h)?,
                up: layer.linear("intermediate.dense", i, h)?,
                down: layer.linear("output.dense", h, i)?,
                output_norm: layer.layer_norm("output.LayerNorm", h)?,
            });
        }
        Ok(PackedBert {
            word_embeddings: embeddings.tensor(&[vocab, h], "word_embeddings.weight")?,
            position_embeddings: embeddings.tensor(&[positions, h], "position_embeddings.weight")?,
            token_type: token_types[..h].to_vec(),
            embedding_norm: embeddings.layer_norm("LayerNorm", h)?,
            layers,
            hidden: h,
            heads: shape.num_attention_heads,
            head_dim,
            vocab,
            positions,
            eps: shape.layer_norm_eps as f32,
            activation,
            scratch: Mutex::new(Vec::new()),
        })
    }

    pub fn width(&self) -> usize {
        self.hidden
    }

    /// The last hidden states of `sentences` (token ids each), stacked: one row per token,
    /// sentence after sentence.
    pub fn forward(&self, sentences: &[Vec<u32>]) -> candle_core::Result<Vec<f32>> {
        for ids in sentences {
            if ids.len() > self.positions {
                return Err(candle_core::Error::Msg(format!("{} tokens; the model has {} positions", ids.len(), self.positions)));
            }
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(candle_core::Error::Msg(format!("token id {bad} is outside the vocabulary of {}", self.vocab)));
            }
        }
        let starts: Vec<usize> = sentences.iter().scan(0, |at, ids| Some(std::mem::replace(at, *at + ids.len()))).collect();
        let tokens: usize = sentences.iter().map(Vec::len).sum();
        let mut scratch = self.scratch.lock().map(|mut kept| kept.pop()).ok().flatten().unwrap_or_default();
        let h = self.hidden;
        scratch.hidden.resize(tokens * h, 0.0);
        scratch.qkv.resize(tokens * 3 * h, 0.0);
        scratch.context.resize(tokens * h, 0.0);
        scratch.intermediate.resize(tokens * self.layers.first().map_or(0, |l| l.up.outputs()), 0.0);

        self.embed(sentences, &starts, &mut scratch.hidden);
        for layer in &self.layers {
            let Scratch { hidden, qkv, context, intermediate } = &mut scratch;
            layer.qkv.forward(hidden, tokens, qkv, Activation::None);
            self.attend(sentences, &starts, qkv, context);
            layer.attention_out.forward_add(context, tokens, hidden);
            self.normalize(hidden, &layer.attention_norm);
            layer.up.forward(hidden, tokens, intermediate, self.activation);
            layer.down.forward_add(intermediate, tokens, hidden);
            self.normalize(hidden, &layer.output_norm);
        }
        let out = scratch.hidden.clone();
        if let Ok(mut kept) = self.scratch.lock() {
            kept.push(scratch);
        }
        Ok(out)
    }

    /// Word + position + token-type embeddings, normalised.
    fn embed(&self, sentences: &[Vec<u32>], starts: &[usize], hidden: &mut [f32]) {
        let h = self.hidden;
        let shared = SharedMut::new(hidden);
        for_each_chunk(sentences.len(), |range| {
            // SAFETY: each sentence writes its own rows.
            let hidden = unsafe { shared.get() };
            for s in range {
                for (position, &id) in sentences[s].iter().enumerate() {
                    let row = &mut hidden[(starts[s] + position) * h..][..h];
                    let word = &self.word_embeddings[id as usize * h..][..h];
                    let place = &self.position_embeddings[position * h..][..h];
                    for (((out, w), p), t) in row.iter_mut().zip(word).zip(place).zip(&self.token_type) {
                        *out = w + p + t;
                    }
                    vector::layer_norm(row, &self.embedding_norm.weight, &self.embedding_norm.bias, self.eps);
                }
            }
        });
    }

    /// Self-attention of each sentence with itself, head by head: `softmax(q·kᵀ/√d)·v`.
    fn attend(&self, sentences: &[Vec<u32>], starts: &[usize], qkv: &[f32], context: &mut [f32]) {
        let (h, d) = (self.hidden, self.head_dim);
        let scale = 1.0 / (d as f32).sqrt();
        let shared = SharedMut::new(context);
        for_each_chunk(sentences.len() * self.heads, |range| {
            // SAFETY: each (sentence, head) item writes its own rows × head columns.
            let context = unsafe { shared.get() };
            let mut scores = Vec::new();
            for item in range {
                let (s, head) = (item / self.heads, item % self.heads);
                let (start, length) = (starts[s], sentences[s].len());
                let row = |token: usize, part: usize| &qkv[(start + token) * 3 * h + part * h + head * d..][..d];
                for query in 0..length {
                    scores.clear();
                    scores.extend((0..length).map(|key| vector::dot(row(query, 0), row(key, 1)) * scale));
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let total = vector::exp_shifted_sum(&mut scores, max);
                    let out = &mut context[(start + query) * h + head * d..][..d];
                    out.fill(0.0);
                    for (key, weight) in scores.iter().enumerate() {
                        vector::axpy(out, weight / total, row(key, 2));
                    }
                }
            }
        });
    }

    fn normalize(&self, hidden: &mut [f32], norm: &LayerNorm) {
        let h = self.hidden;
        let rows = hidden.len() / h;
        let shared = SharedMut::new(hidden);
        for_each_chunk(rows, |range| {
            // SAFETY: each chunk normalises its own rows.
            let hidden = unsafe { shared.get() };
            for row in range {
                vector::layer_norm(&mut hidden[row * h..][..h], &norm.weight, &norm.bias, self.eps);
            }
        });
    }
}

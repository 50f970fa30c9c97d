//! The CLIP text encoder that SD 3.5 conditions on (CLIP-L and OpenCLIP bigG), giving the
//! penultimate layer's hidden states and the pooled, final-normed state at the end token.
//!
//! Adapted from candle-transformers 0.11 `models/stable_diffusion/clip.rs` (MIT or
//! Apache-2.0, © the candle authors), itself after transformers' `modeling_clip.py`.
//! Changed: the config is public and inferred from the checkpoint's tensor shapes (candle's
//! is private and only offers the real sizes, so a tiny checkpoint cannot load); the pooled
//! state is taken at a position the caller gives; OpenCLIP bigG uses the exact (erf) GELU
//! as its `hidden_act: "gelu"` means in transformers, where candle uses the tanh form.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};

use super::weights::Shapes;
use crate::error::{LanternError, LanternResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`: OpenAI's CLIP (CLIP-L).
    QuickGelu,
    /// The exact GELU: OpenCLIP bigG (CLIP-G).
    Gelu,
}

impl Activation {
    fn forward(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
            Activation::Gelu => xs.gelu_erf(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub embed_dim: usize,
    pub intermediate_size: usize,
    /// Positions: the fixed length prompts are padded to (77 for the real ones).
    pub max_position_embeddings: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub activation: Activation,
    /// Width of `text_projection` when the checkpoint has one (CLIP-G's pooled output).
    pub projection_dim: Option<usize>,
}

impl ClipTextConfig {
    /// Sizes from a `CLIPTextModel(WithProjection)` checkpoint's shapes (names `text_model.*`),
    /// with heads of 64 as in every CLIP text tower SD uses. `projected`: whether the pooled
    /// output goes through the checkpoint's `text_projection` (SD 3.5's CLIP-G, not its CLIP-L).
    pub fn infer(shapes: &Shapes, activation: Activation, projected: bool) -> LanternResult<Self> {
        let embeddings = "text_model.embeddings.token_embedding.weight";
        let (vocab_size, embed_dim) = (shapes.dim(embeddings, 0)?, shapes.dim(embeddings, 1)?);
        let max_position_embeddings = shapes.dim("text_model.embeddings.position_embedding.weight", 0)?;
        let num_hidden_layers = shapes.count("text_model.encoder.layers.");
        if num_hidden_layers < 2 || embed_dim == 0 || embed_dim % 64 != 0 || max_position_embeddings < 2 {
            return Err(LanternError::InferenceFailed(format!(
                "{}: not a CLIP text encoder SD can use ({num_hidden_layers} layers of width {embed_dim}, {max_position_embeddings} positions)",
                shapes.label()
            )));
        }
        let intermediate_size = shapes.dim("text_model.encoder.layers.0.mlp.fc1.weight", 0)?;
        let projection_dim = if projected { Some(shapes.dim("text_projection.weight", 0)?) } else { None };
        Ok(ClipTextConfig {
            vocab_size,
            embed_dim,
            intermediate_size,
            max_position_embeddings,
            num_hidden_layers,
            num_attention_heads: embed_dim / 64,
            activation,
            projection_dim,
        })
    }

    /// Width of the pooled output: the projection's, or the hidden width.
    pub fn pooled_dim(&self) -> usize {
        self.projection_dim.unwrap_or(self.embed_dim)
    }
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder, c: &ClipTextConfig) -> Result<Self> {
        let d = c.embed_dim;
        Ok(Attention {
            q_proj: linear(d, d, vb.pp("q_proj"))?,
            k_proj: linear(d, d, vb.pp("k_proj"))?,
            v_proj: linear(d, d, vb.pp("v_proj"))?,
            out_proj: linear(d, d, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
            head_dim: d / c.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let (batch, len, width) = xs.dims3()?;
        let split = |t: Tensor| t.reshape((batch, len, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous();
        let q = split((self.q_proj.forward(xs)? * (self.head_dim as f64).powf(-0.5))?)?;
        let k = split(self.k_proj.forward(xs)?)?;
        let v = split(self.v_proj.forward(xs)?)?;
        let weights = q.matmul(&k.t()?)?.broadcast_add(causal_mask)?;
        let weights = candle_nn::ops::softmax(&weights, D::Minus1)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((batch, len, width))?;
        self.out_proj.forward(&out)
    }
}

struct Layer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Layer {
    fn new(vb: VarBuilder, c: &ClipTextConfig) -> Result<Self> {
        Ok(Layer {
            layer_norm1: layer_norm(c.embed_dim, 1e-5, vb.pp("layer_norm1"))?,
            self_attn: Attention::new(vb.pp("self_attn"), c)?,
            layer_norm2: layer_norm(c.embed_dim, 1e-5, vb.pp("layer_norm2"))?,
            fc1: linear(c.embed_dim, c.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: linear(c.intermediate_size, c.embed_dim, vb.pp("mlp.fc2"))?,
            activation: c.activation,
        })
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let xs = (self.self_attn.forward(&self.layer_norm1.forward(xs)?, causal_mask)? + xs)?;
        let mlp = self.fc2.forward(&self.activation.forward(&self.fc1.forward(&self.layer_norm2.forward(&xs)?)?)?)?;
        mlp + xs
    }
}

/// What SD takes from a CLIP text encoder.
pub struct ClipTextOutput {
    /// `(1, len, embed_dim)`: the input of the last layer (transformers' `hidden_states[-2]`).
    pub penultimate: Tensor,
    /// `(1, pooled_dim)`: the final-normed state at the pooled position, projected when the
    /// checkpoint has a projection.
    pub pooled: Tensor,
}

/// A CLIP text transformer (`text_model.*`, optional `text_projection`), in f32.
pub struct ClipTextEncoder {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<Layer>,
    final_layer_norm: LayerNorm,
    projection: Option<Linear>,
    config: ClipTextConfig,
}

impl ClipTextEncoder {
    pub fn new(vb: VarBuilder, config: &ClipTextConfig) -> Result<Self> {
        let text = vb.pp("text_model");
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::new(text.pp(format!("encoder.layers.{i}")), config))
            .collect::<Result<_>>()?;
        let projection = match config.projection_dim {
            Some(dim) => Some(candle_nn::linear_no_bias(config.embed_dim, dim, vb.pp("text_projection"))?),
            None => None,
        };
        Ok(ClipTextEncoder {
            token_embedding: embedding(config.vocab_size, config.embed_dim, text.pp("embeddings.token_embedding"))?,
            position_embedding: embedding(
                config.max_position_embeddings,
                config.embed_dim,
                text.pp("embeddings.position_embedding"),
            )?,
            layers,
            final_layer_norm: layer_norm(config.embed_dim, 1e-5, text.pp("final_layer_norm"))?,
            projection,
            config: config.clone(),
        })
    }

    /// Runs `ids` (exactly `max_position_embeddings` of them, all below the vocabulary
    /// size: the caller's tokenizer guarantees both), pooling at `pooled_at`.
    pub fn encode(&self, ids: &[u32], pooled_at: usize, device: &Device) -> Result<ClipTextOutput> {
        let len = ids.len();
        if len != self.config.max_position_embeddings || pooled_at >= len {
            candle_core::bail!("CLIP takes {} ids, got {len} (pooled at {pooled_at})", self.config.max_position_embeddings);
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            candle_core::bail!("token id {bad} is outside CLIP's vocabulary of {}", self.config.vocab_size);
        }
        let input = Tensor::new(ids, device)?.unsqueeze(0)?;
        let positions = Tensor::arange(0u32, len as u32, device)?.unsqueeze(0)?;
        let mut xs = self.token_embedding.forward(&input)?.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask: Vec<f32> = (0..len).flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let causal_mask = Tensor::from_vec(mask, (len, len), device)?;
        let mut penultimate = xs.clone();
        for (index, layer) in self.layers.iter().enumerate() {
            if index + 1 == self.layers.len() {
                penultimate = xs.clone();
            }
            xs = layer.forward(&xs, &causal_mask)?;
        }
        let last = self.final_layer_norm.forward(&xs)?;
        let pooled = last.narrow(1, pooled_at, 1)?.squeeze(1)?;
        let pooled = match &self.projection {
            Some(projection) => projection.forward(&pooled)?,
            None => pooled,
        };
        Ok(ClipTextOutput { penultimate: penultimate.to_dtype(DType::F32)?, pooled: pooled.to_dtype(DType::F32)? })
    }
}

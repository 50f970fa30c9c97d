//! SD 3.5's MMDiT in f32, put together from candle's public MMDiT parts plus two pieces
//! of our own (candle-transformers 0.11 `models/mmdit`, MIT or Apache-2.0):
//!
//! * the timestep embedder: candle's casts the sinusoid to f16
//!   (`embedding.to_dtype(F16)`), so f32 weights fail at its first linear; ours keeps the
//!   input's dtype (the same math as mmditx/ComfyUI `TimestepEmbedder`);
//! * the last joint block, whose context side only makes q, k, v: candle's skips that
//!   side's `ln_q`/`ln_k` RMS norms, which SD 3.5 Large has and the reference
//!   (mmditx `DismantledBlock(pre_only)`, diffusers `norm_added_q/k`) applies. Skipping
//!   them puts the tiny model's velocity 1.9e-2 (relative) off diffusers'; with them it
//!   is within 5e-6 (tests/sd35.rs).
//!
//! Sizes come from the checkpoint as mmditx infers them (see `config::mmdit`).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{linear, Linear, RmsNorm, VarBuilder};
use candle_transformers::models::mmdit::blocks::{
    DiTBlock, FinalLayer, JointBlock, LayerNormNoAffine, MMDiTJointBlock, MMDiTXJointBlock,
};
use candle_transformers::models::mmdit::embedding::{PatchEmbedder, PositionEmbedder, Unpatchifier, VectorEmbedder};
use candle_transformers::models::mmdit::model::Config;
use candle_transformers::models::mmdit::projections::Qkv;

/// The sinusoidal timestep embedding and its MLP (mmditx `TimestepEmbedder`), in the
/// weights' dtype.
struct TimestepEmbedder {
    fc1: Linear,
    fc2: Linear,
    frequencies: usize,
}

impl TimestepEmbedder {
    fn new(hidden: usize, frequencies: usize, vb: VarBuilder) -> Result<Self> {
        Ok(TimestepEmbedder { fc1: linear(frequencies, hidden, vb.pp("mlp.0"))?, fc2: linear(hidden, hidden, vb.pp("mlp.2"))?, frequencies })
    }

    /// `t`: `(B,)` timesteps (sigma * 1000), f32.
    fn forward(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        let half = self.frequencies / 2;
        let freqs: Vec<f32> = (0..half).map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32).collect();
        let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
        let args = t.to_dtype(DType::F32)?.unsqueeze(1)?.matmul(&freqs)?;
        let embedding = Tensor::cat(&[args.cos()?, args.sin()?], 1)?.to_dtype(dtype)?;
        self.fc2.forward(&self.fc1.forward(&embedding)?.silu()?)
    }
}

/// The last joint block: the image side is a whole DiT block, the context side only
/// feeds its (normed) q, k, v into the joint attention.
struct LastJointBlock {
    x_block: DiTBlock,
    context_norm: LayerNormNoAffine,
    context_modulation: Linear,
    context_qkv: Linear,
    context_ln_q: Option<RmsNorm>,
    context_ln_k: Option<RmsNorm>,
    heads: usize,
    head_dim: usize,
}

impl LastJointBlock {
    fn new(hidden: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let head_dim = hidden / heads;
        let context = vb.pp("context_block");
        let (context_ln_q, context_ln_k) = if context.contains_tensor("attn.ln_q.weight") {
            (
                Some(candle_nn::rms_norm(head_dim, 1e-6, context.pp("attn.ln_q"))?),
                Some(candle_nn::rms_norm(head_dim, 1e-6, context.pp("attn.ln_k"))?),
            )
        } else {
            (None, None)
        };
        Ok(LastJointBlock {
            x_block: DiTBlock::new(hidden, heads, vb.pp("x_block"))?,
            context_norm: LayerNormNoAffine::new(1e-6),
            context_modulation: linear(hidden, 2 * hidden, context.pp("adaLN_modulation.1"))?,
            context_qkv: linear(hidden, 3 * hidden, context.pp("attn.qkv"))?,
            context_ln_q,
            context_ln_k,
            heads,
            head_dim,
        })
    }

    fn context_qkv(&self, context: &Tensor, c: &Tensor) -> Result<Qkv> {
        let modulation = self.context_modulation.forward(&c.silu()?)?.chunk(2, D::Minus1)?;
        let (shift, scale) = (modulation[0].unsqueeze(1)?, (modulation[1].unsqueeze(1)? + 1.0)?);
        let normed = self.context_norm.forward(context)?.broadcast_mul(&scale)?.broadcast_add(&shift)?;
        let (batch, len, _) = normed.dims3()?;
        let qkv = self.context_qkv.forward(&normed)?.reshape((batch, len, 3, self.heads, self.head_dim))?;
        let part = |i: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let t = qkv.get_on_dim(2, i)?;
            let t = match norm {
                Some(norm) => norm.forward(&t)?,
                None => t,
            };
            t.reshape((batch, len, ()))
        };
        Ok(Qkv { q: part(0, &self.context_ln_q)?, k: part(1, &self.context_ln_k)?, v: part(2, &None)? })
    }

    fn forward(&self, context: &Tensor, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let context_qkv = self.context_qkv(context, c)?;
        let (x_qkv, x_intermediates) = self.x_block.pre_attention(x, c)?;
        let x_attention = joint_attention(&context_qkv, &x_qkv, self.heads)?;
        self.x_block.post_attention(&x_attention, x, &x_intermediates)
    }
}

/// Attention over the context and image tokens together, returning the image tokens' part
/// (what candle's private `joint_attn` does). candle's projections hand v over as
/// `(B, L, heads, head_dim)` and q, k as `(B, L, width)`: each is reshaped to the former.
fn joint_attention(context: &Qkv, x: &Qkv, heads: usize) -> Result<Tensor> {
    let (batch, context_len, width) = context.q.dims3()?;
    let x_len = x.q.dim(1)?;
    let head_dim = width / heads;
    let heads_first = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
        let a = a.reshape((batch, context_len, heads, head_dim))?;
        let b = b.reshape((batch, x_len, heads, head_dim))?;
        Tensor::cat(&[&a, &b], 1)?.transpose(1, 2)?.contiguous()
    };
    let q = heads_first(&context.q, &x.q)?;
    let k = heads_first(&context.k, &x.k)?;
    let v = heads_first(&context.v, &x.v)?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let weights = candle_nn::ops::softmax_last_dim(&(q.matmul(&k.t()?)? * scale)?)?;
    let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((batch, context_len + x_len, width))?;
    out.narrow(1, context_len, x_len)
}

/// The MMDiT (`model.diffusion_model.*` of the single-file checkpoint).
pub struct Mmdit {
    patch_embedder: PatchEmbedder,
    pos_embedder: PositionEmbedder,
    timestep_embedder: TimestepEmbedder,
    vector_embedder: VectorEmbedder,
    context_embedder: Linear,
    joint_blocks: Vec<Box<dyn JointBlock>>,
    last_block: LastJointBlock,
    final_layer: FinalLayer,
    unpatchifier: Unpatchifier,
    dtype: DType,
}

impl Mmdit {
    /// `cfg.depth` must be at least 2 (`config::mmdit` checks it).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.head_size * cfg.depth;
        let heads = cfg.depth;
        let mut joint_blocks: Vec<Box<dyn JointBlock>> = Vec::with_capacity(cfg.depth - 1);
        for i in 0..cfg.depth - 1 {
            let block = vb.pp(format!("joint_blocks.{i}"));
            joint_blocks.push(if block.contains_tensor("x_block.attn2.qkv.weight") {
                Box::new(MMDiTXJointBlock::new(hidden, heads, false, block)?)
            } else {
                Box::new(MMDiTJointBlock::new(hidden, heads, false, block)?)
            });
        }
        Ok(Mmdit {
            patch_embedder: PatchEmbedder::new(cfg.patch_size, cfg.in_channels, hidden, vb.pp("x_embedder"))?,
            pos_embedder: PositionEmbedder::new(hidden, cfg.patch_size, cfg.pos_embed_max_size, vb.clone())?,
            timestep_embedder: TimestepEmbedder::new(hidden, cfg.frequency_embedding_size, vb.pp("t_embedder"))?,
            vector_embedder: VectorEmbedder::new(cfg.adm_in_channels, hidden, vb.pp("y_embedder"))?,
            context_embedder: linear(cfg.context_embed_size, hidden, vb.pp("context_embedder"))?,
            joint_blocks,
            last_block: LastJointBlock::new(hidden, heads, vb.pp(format!("joint_blocks.{}", cfg.depth - 1)))?,
            final_layer: FinalLayer::new(hidden, cfg.patch_size, cfg.out_channels, vb.pp("final_layer"))?,
            unpatchifier: Unpatchifier::new(cfg.patch_size, cfg.out_channels)?,
            dtype: vb.dtype(),
        })
    }

    /// The predicted velocity `(B, C, h, w)` for latents `x` `(B, C, h, w)` at timesteps
    /// `t` `(B,)` (sigma * 1000), pooled text `y` `(B, adm_in)`, text tokens `context`
    /// `(B, L, context_dim)`.
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (h, w) = (x.dim(D::Minus2)?, x.dim(D::Minus1)?);
        let x = x.to_dtype(self.dtype)?;
        let pos = self.pos_embedder.get_cropped_pos_embed(h, w)?;
        let mut x = self.patch_embedder.forward(&x)?.broadcast_add(&pos)?;
        let c = (self.timestep_embedder.forward(t, self.dtype)? + self.vector_embedder.forward(&y.to_dtype(self.dtype)?)?)?;
        let mut context = self.context_embedder.forward(&context.to_dtype(self.dtype)?)?;
        for block in &self.joint_blocks {
            (context, x) = block.forward(&context, &x, &c)?;
        }
        let x = self.last_block.forward(&context, &x, &c)?;
        let x = self.final_layer.forward(&x, &c)?;
        let x = self.unpatchifier.unpatchify(&x, h, w)?;
        x.narrow(2, 0, h)?.narrow(3, 0, w)?.to_dtype(DType::F32)
    }
}

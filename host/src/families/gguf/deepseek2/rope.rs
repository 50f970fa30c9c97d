//! The decoupled rotary embedding of multi-head latent attention: only the last
//! `rope_dims` of each query and the one shared rotated key are rotated, in adjacent
//! pairs (llama.cpp's `LLAMA_ROPE_TYPE_NORM` for deepseek2, `rope_i` in candle; Hugging
//! Face's code permutes to halves and back, which is the same rotation), with YaRN when
//! the file asks for it. Angles in f64, tables in f32, as the host's other rope tables.

use candle_core::{Device, Result, Tensor};

use super::config::{yarn_mscale, Config};

#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

/// The dimension (of `dims`) whose wavelength makes `rotations` turns over `context`
/// positions (YaRN's `find_correction_dim`).
fn correction_dim(rotations: f64, dims: usize, base: f64, context: usize) -> f64 {
    dims as f64 * (context as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
}

impl Rope {
    pub fn new(config: &Config, device: &Device) -> Result<Self> {
        let dims = config.rope_dims;
        let half = dims / 2;
        let base = config.rope_base;
        let mut frequencies: Vec<f64> = (0..half).map(|i| base.powf(-2.0 * i as f64 / dims as f64)).collect();
        let mut magnitude = 1.0;
        if let Some(yarn) = config.yarn {
            // Low dimensions (many turns within the original context) keep their
            // frequency, high ones are interpolated by the factor, a linear ramp between.
            let low = correction_dim(yarn.beta_fast, dims, base, yarn.original_context).floor().max(0.0);
            let high = correction_dim(yarn.beta_slow, dims, base, yarn.original_context).ceil().min(dims as f64 - 1.0);
            for (i, frequency) in frequencies.iter_mut().enumerate() {
                let ramp = ((i as f64 - low) / (high - low).max(0.001)).clamp(0.0, 1.0);
                let keep = 1.0 - ramp;
                *frequency = *frequency / yarn.factor * (1.0 - keep) + *frequency * keep;
            }
            // Hugging Face: mscale(factor, mscale) / mscale(factor, mscale_all_dim). Every
            // DeepSeek and Kimi config has mscale == mscale_all_dim, which llama.cpp assumes
            // (it stores only the latter), so this is 1 unless the file has no multiplier.
            let mscale = if yarn.mscale_all_dim != 0.0 { yarn.mscale_all_dim } else { 1.0 };
            magnitude = yarn_mscale(yarn.factor, mscale) / yarn_mscale(yarn.factor, yarn.mscale_all_dim);
        }
        let positions = config.context;
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for position in 0..positions {
            for frequency in &frequencies {
                let angle = position as f64 * frequency;
                cos.push((angle.cos() * magnitude) as f32);
                sin.push((angle.sin() * magnitude) as f32);
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (positions, half), device)?,
            sin: Tensor::from_vec(sin, (positions, half), device)?,
        })
    }

    /// Rotates `xs` (batch, heads, tokens, rope_dims) for positions `offset..offset + tokens`.
    pub fn apply(&self, xs: &Tensor, offset: usize) -> Result<Tensor> {
        let tokens = xs.dim(2)?;
        let cos = self.cos.narrow(0, offset, tokens)?;
        let sin = self.sin.narrow(0, offset, tokens)?;
        candle_nn::rotary_emb::rope_i(&xs.contiguous()?, &cos, &sin)
    }
}

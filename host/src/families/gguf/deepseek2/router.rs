//! Which experts each token goes to, as llama.cpp's `build_moe_ffn` decides it for
//! deepseek2 (and DeepSeek-V3's `MoEGate` with `noaux_tc`):
//!
//! 1. scores = softmax or sigmoid of the router logits;
//! 2. the selection adds `exp_probs_b` (V3's `e_score_correction_bias`) to the scores; the
//!    bias picks experts but never weighs them;
//! 3. with expert groups, only the best `groups_used` groups (a group's worth: the sum of
//!    its two best selection scores) may be picked from;
//! 4. the top `experts_used` by selection; their weights are their *scores*, divided by
//!    the weights' sum when `expert_weights_norm` (the sum kept above f16's smallest
//!    normal number, as llama.cpp does), then times `expert_weights_scale`.

use candle_core::{DType, Result, Tensor};

use super::config::{Config, Gating};
use crate::families::gguf::moe::Route;

/// llama.cpp clamps the sum of the chosen weights to this before dividing.
const SMALLEST_SUM: f32 = 6.103515625e-5;

#[derive(Clone)]
pub struct Router {
    /// (hidden, experts), f32.
    weight: Tensor,
    /// `exp_probs_b.bias`, one per expert.
    bias: Option<Vec<f32>>,
    gating: Gating,
    experts_used: usize,
    groups: usize,
    groups_used: usize,
    norm: bool,
    scale: f32,
}

impl Router {
    /// `weight` is `ffn_gate_inp.weight` as stored: (experts, hidden).
    pub fn new(weight: Tensor, bias: Option<Vec<f32>>, config: &Config) -> Result<Self> {
        let (experts, _) = weight.dims2()?;
        if bias.as_ref().is_some_and(|b| b.len() != experts) {
            candle_core::bail!("exp_probs_b has {} entries for {experts} experts", bias.map_or(0, |b| b.len()));
        }
        Ok(Router {
            weight: weight.to_dtype(DType::F32)?.t()?.contiguous()?,
            bias,
            gating: config.gating,
            experts_used: config.experts_used,
            groups: config.groups,
            groups_used: config.groups_used,
            norm: config.weights_norm,
            scale: config.weights_scale,
        })
    }

    pub fn experts(&self) -> usize {
        self.weight.dims()[1]
    }

    /// One route per row of `xs` (tokens, hidden).
    pub fn routes(&self, xs: &Tensor) -> Result<Vec<Route>> {
        let logits = xs.to_dtype(DType::F32)?.matmul(&self.weight)?;
        let scores = match self.gating {
            Gating::Softmax => candle_nn::ops::softmax_last_dim(&logits)?,
            Gating::Sigmoid => candle_nn::ops::sigmoid(&logits)?,
        };
        Ok(scores.to_vec2::<f32>()?.iter().map(|scores| self.route(scores)).collect())
    }

    fn route(&self, scores: &[f32]) -> Route {
        let mut selection: Vec<f32> = match &self.bias {
            Some(bias) => scores.iter().zip(bias).map(|(s, b)| s + b).collect(),
            None => scores.to_vec(),
        };
        if self.groups > 1 && self.groups_used < self.groups {
            let size = selection.len() / self.groups;
            let worth = |group: &[f32]| {
                let mut best = group.to_vec();
                best.sort_by(|a, b| b.total_cmp(a));
                best.iter().take(2).sum::<f32>()
            };
            let mut groups: Vec<(usize, f32)> = selection.chunks(size).map(worth).enumerate().collect();
            groups.sort_by(|a, b| b.1.total_cmp(&a.1));
            for &(group, _) in &groups[self.groups_used..] {
                selection[group * size..(group + 1) * size].fill(f32::NEG_INFINITY);
            }
        }
        let mut order: Vec<usize> = (0..selection.len()).collect();
        order.sort_by(|&a, &b| selection[b].total_cmp(&selection[a]));
        let chosen = &order[..self.experts_used.min(order.len())];
        let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
        if self.norm {
            let sum = weights.iter().sum::<f32>().max(SMALLEST_SUM);
            weights.iter_mut().for_each(|w| *w /= sum);
        }
        if self.scale != 0.0 && self.scale != 1.0 {
            weights.iter_mut().for_each(|w| *w *= self.scale);
        }
        chosen.iter().copied().zip(weights).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn config(gating: Gating, experts_used: usize, groups: (usize, usize), norm: bool, scale: f32) -> Config {
        Config {
            hidden: 2,
            blocks: 1,
            heads: 1,
            q_lora_rank: 0,
            kv_lora_rank: 1,
            nope_dims: 1,
            rope_dims: 2,
            value_dims: 1,
            context: 1,
            eps: 1e-6,
            rope_base: 10_000.0,
            yarn: None,
            dense_blocks: 0,
            experts: 6,
            experts_used,
            shared_experts: 0,
            gating,
            weights_norm: norm,
            weights_scale: scale,
            groups: groups.0,
            groups_used: groups.1,
        }
    }

    /// A router whose logits for the input (1, 0) are `logits` (weight row e = (logit_e, 0)).
    fn routes(logits: &[f32], bias: Option<Vec<f32>>, config: &Config) -> Route {
        let weight = Tensor::from_vec(logits.iter().flat_map(|&l| [l, 0.0]).collect(), (logits.len(), 2), &Device::Cpu).unwrap();
        let router = Router::new(weight, bias, config).unwrap();
        let xs = Tensor::new(&[[1f32, 0.0]], &Device::Cpu).unwrap();
        router.routes(&xs).unwrap().remove(0)
    }

    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    fn assert_route(got: &Route, want: &[(usize, f32)]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for ((e, w), (we, ww)) in got.iter().zip(want) {
            assert_eq!(e, we, "{got:?} vs {want:?}");
            assert!((w - ww).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    /// Sigmoid scores; the bias changes which experts are chosen, not their weights.
    #[test]
    fn the_bias_selects_and_the_scores_weigh() {
        let logits = [2.0, 1.0, 0.5, -1.0, 0.0, 1.5];
        let plain = routes(&logits, None, &config(Gating::Sigmoid, 2, (1, 1), false, 1.0));
        assert_route(&plain, &[(0, sigmoid(2.0)), (5, sigmoid(1.5))]);
        let bias = vec![0.0, 0.0, 0.0, 2.0, 0.0, 0.0];
        let biased = routes(&logits, Some(bias), &config(Gating::Sigmoid, 2, (1, 1), false, 1.0));
        assert_route(&biased, &[(3, sigmoid(-1.0)), (0, sigmoid(2.0))]);
    }

    /// Normalised to sum 1, then scaled (DeepSeek-V3's routed_scaling_factor).
    #[test]
    fn weights_are_normalised_then_scaled() {
        let logits = [2.0, 1.0, 0.5, -1.0, 0.0, 1.5];
        let got = routes(&logits, None, &config(Gating::Sigmoid, 2, (1, 1), true, 2.5));
        let (a, b) = (sigmoid(2.0), sigmoid(1.5));
        assert_route(&got, &[(0, 2.5 * a / (a + b)), (5, 2.5 * b / (a + b))]);
        // Softmax without normalisation: the probabilities over all experts, scaled.
        let got = routes(&logits, None, &config(Gating::Softmax, 1, (1, 1), false, 2.0));
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        assert_route(&got, &[(0, 2.0 * 2f32.exp() / total)]);
    }

    /// Three groups of two; a group is worth the sum of its two best selection scores, and
    /// only the best group is picked from, even when another group holds the best expert.
    #[test]
    fn experts_come_only_from_the_best_groups() {
        //            group 0     group 1     group 2
        let logits = [3.0, -3.0, 1.0, 1.0, -1.0, -1.0];
        let got = routes(&logits, None, &config(Gating::Sigmoid, 2, (3, 1), false, 1.0));
        // Group 0 is worth σ(3)+σ(-3) = 1.0, group 1 2σ(1) ≈ 1.46: experts 2 and 3, not 0.
        assert_route(&got, &[(2, sigmoid(1.0)), (3, sigmoid(1.0))]);
        // Two groups allowed (1 and 0; group 2 is worth 2σ(-1) ≈ 0.54): expert 0 is back.
        let got = routes(&logits, None, &config(Gating::Sigmoid, 2, (3, 2), false, 1.0));
        assert_route(&got, &[(0, sigmoid(3.0)), (2, sigmoid(1.0))]);
    }
}

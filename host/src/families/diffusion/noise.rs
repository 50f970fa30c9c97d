//! The initial noise of a diffusion run, from the host's own seeded generator.
//!
//! candle cannot seed its CPU generator (`set_seed` fails there and `randn` draws from
//! the thread RNG), so noise made with candle differs on every run. The host draws it
//! from SplitMix64 through the Box–Muller transform instead: a few lines with no
//! dependency whose output is fixed by the seed alone, so the same seed gives the same
//! latents on every run, every host and every device.

use candle_core::{Device, Tensor};

use crate::error::{LanternError, LanternResult};

/// SplitMix64 (Steele, Lea and Flood, 2014): 64-bit state, passes BigCrush.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    fn next_open_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// `count` standard normal samples for `seed`.
pub fn standard_normal(seed: u64, count: usize) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    let mut values = Vec::with_capacity(count + 1);
    while values.len() < count {
        let (u1, u2) = (rng.next_open_unit(), rng.next_open_unit());
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        values.push((radius * angle.cos()) as f32);
        values.push((radius * angle.sin()) as f32);
    }
    values.truncate(count);
    values
}

/// A `(1, channels, height / 8, width / 8)` latent of standard normal noise for `seed`, in f32.
pub fn latents(seed: u64, channels: usize, width: u32, height: u32, device: &Device) -> LanternResult<Tensor> {
    let (h, w) = (height as usize / 8, width as usize / 8);
    let values = standard_normal(seed, channels * h * w);
    Tensor::from_vec(values, (1, channels, h, w), device).map_err(|e| LanternError::inference("making the noise", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_alone_fixes_the_noise() {
        assert_eq!(standard_normal(42, 1001), standard_normal(42, 1001));
        assert_ne!(standard_normal(42, 16), standard_normal(43, 16));
        // Pinned values (from an independent Python transcription of SplitMix64 and
        // Box-Muller): a change here changes every image users have made with a seed.
        let pinned = [-0.452_757_74f32, 0.207_766_04, 2.650_605_8, -0.490_422_83];
        for (got, want) in standard_normal(0, 4).iter().zip(pinned) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn the_noise_is_standard_normal() {
        let values = standard_normal(7, 200_000);
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }
}

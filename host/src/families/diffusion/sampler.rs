//! The Euler sampler of rectified-flow models (SD 3.5, FLUX): the model predicts a
//! velocity at noise level sigma, and each step moves the latents along it,
//! `x += v * (sigma_next - sigma)`. The two families differ only in the schedule.

use candle_core::Tensor;

use crate::capabilities::ImageSink;
use crate::error::{LanternError, LanternResult};

/// SD 3's schedule: `steps + 1` levels from 1 to 0, `t = 1 - i/steps`, time-shifted
/// by `shift` (`shift * t / (1 + (shift - 1) * t)`; 3.0 for SD 3.5).
pub fn shifted_sigmas(steps: u32, shift: f64) -> Vec<f64> {
    (0..=steps)
        .map(|i| {
            let t = 1.0 - i as f64 / steps as f64;
            shift * t / (1.0 + (shift - 1.0) * t)
        })
        .collect()
}

/// FLUX schnell's schedule: `steps + 1` evenly spaced levels from 1 to 0.
pub fn linear_sigmas(steps: u32) -> Vec<f64> {
    (0..=steps).map(|i| 1.0 - i as f64 / steps as f64).collect()
}

/// Runs the Euler steps from `latents` over `sigmas`, asking `velocity(x, sigma)` at each
/// level. Reports each finished step to `sink`; stops with `Cancelled` as soon as the
/// sink stops listening.
pub fn euler(
    mut latents: Tensor,
    sigmas: &[f64],
    sink: &mut dyn ImageSink,
    mut velocity: impl FnMut(&Tensor, f64) -> candle_core::Result<Tensor>,
) -> LanternResult<Tensor> {
    let failed = |e: candle_core::Error| LanternError::inference("denoising", e);
    let total = sigmas.len().saturating_sub(1) as u32;
    for (index, pair) in sigmas.windows(2).enumerate() {
        if !sink.keep_going() {
            return Err(LanternError::Cancelled);
        }
        let (sigma, next) = (pair[0], pair[1]);
        let v = velocity(&latents, sigma).map_err(failed)?;
        latents = (latents + (v * (next - sigma)).map_err(failed)?).map_err(failed)?;
        if !sink.step(index as u32 + 1, total) {
            return Err(LanternError::Cancelled);
        }
    }
    Ok(latents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedules_run_from_one_to_zero() {
        let sigmas = shifted_sigmas(4, 3.0);
        assert_eq!(sigmas.len(), 5);
        assert!((sigmas[0] - 1.0).abs() < 1e-12 && sigmas[4] == 0.0);
        // t = 0.5 shifted by 3: 1.5 / 2 = 0.75.
        assert!((sigmas[2] - 0.75).abs() < 1e-12);
        assert_eq!(linear_sigmas(4), vec![1.0, 0.75, 0.5, 0.25, 0.0]);
    }

    /// With a velocity of (x - target) / sigma... simpler: a constant velocity v moves x by
    /// exactly -v over the whole schedule.
    #[test]
    fn euler_integrates_and_reports_each_step() {
        let x = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let v = Tensor::new(&[0.5f32, -1.0], &Device::Cpu).unwrap();
        let mut steps = Vec::new();
        let mut sink = |step: u32, total: u32| {
            steps.push((step, total));
            true
        };
        let out = euler(x, &linear_sigmas(4), &mut sink, |_, _| Ok(v.clone())).unwrap();
        assert_eq!(out.to_vec1::<f32>().unwrap(), vec![0.5, 3.0]);
        assert_eq!(steps, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
    }

    #[test]
    fn euler_stops_when_the_listener_goes() {
        let x = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        let mut calls = 0;
        let mut sink = |step: u32, _| step < 2;
        let result = euler(x, &linear_sigmas(4), &mut sink, |x, _| {
            calls += 1;
            Ok(x.clone())
        });
        assert_eq!(result.unwrap_err(), LanternError::Cancelled);
        assert_eq!(calls, 2);
    }
}

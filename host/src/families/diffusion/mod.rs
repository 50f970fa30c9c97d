//! What the text-to-image families (SD 3.5, FLUX) share: the host's seeded noise, the
//! Euler flow-matching sampler, latents-to-PNG, the T5 and CLIP text encoders, and
//! reading checkpoint shapes (with a weightless dry run of the model constructors).

pub mod clip_text;
pub mod noise;
pub mod t5;
pub mod sampler;
pub mod weights;

use candle_core::{DType, Tensor};

use crate::error::{LanternError, LanternResult};

/// A decoded image tensor `(1, 3, H, W)` in [-1, 1] to a PNG, as the reference
/// pipelines do: clamp, map to 0..=255, round down to u8.
pub fn tensor_to_png(image: &Tensor) -> LanternResult<(Vec<u8>, u32, u32)> {
    let failed = |e: candle_core::Error| LanternError::inference("decoding the latents", e);
    let image = image.to_dtype(DType::F32).map_err(failed)?;
    let (batch, channels, height, width) = image.dims4().map_err(failed)?;
    if batch != 1 || channels != 3 {
        return Err(LanternError::inference("decoding the latents", format!("unexpected image shape {:?}", image.dims())));
    }
    let pixels = ((image.clamp(-1f32, 1f32).map_err(failed)? + 1.0)
        .and_then(|t| t * 127.5)
        .and_then(|t| t.to_dtype(DType::U8))
        .and_then(|t| t.squeeze(0))
        .and_then(|t| t.permute((1, 2, 0)))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<u8>()))
    .map_err(failed)?;
    let png = crate::image_codec::encode_png(width as u32, height as u32, pixels)?;
    Ok((png, width as u32, height as u32))
}

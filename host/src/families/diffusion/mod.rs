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

/// Fits a prompt's token ids (special tokens already added) into `max_len`, as the
/// reference tokenizers' truncation does for every text encoder here: a longer prompt
/// keeps its first `max_len - 1` ids and its last one (the end-of-text token the encoders
/// read or pool at). Returns the ids and how many were cut; with `truncate` false a longer
/// prompt is `InvalidInput` naming the `encoder`.
pub fn fit_prompt(mut ids: Vec<u32>, max_len: usize, truncate: bool, encoder: &str) -> LanternResult<(Vec<u32>, usize)> {
    if ids.len() <= max_len {
        return Ok((ids, 0));
    }
    if !truncate {
        return Err(LanternError::InvalidInput(format!(
            "the prompt is {} {encoder} tokens; this model reads at most {max_len} (allow truncation to cut it)",
            ids.len()
        )));
    }
    let cut = ids.len() - max_len;
    let end = *ids.last().expect("longer than max_len, so not empty");
    ids.truncate(max_len - 1);
    ids.push(end);
    Ok((ids, cut))
}

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

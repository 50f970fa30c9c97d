//! CLIP's image preprocessing, as transformers' `CLIPImageProcessor` does it from a
//! repo's `preprocessor_config.json` (used by CLIP and by LLaVA's vision tower): resize
//! so the shortest side is `size` (bicubic), centre crop to `crop_size`, scale by 1/255,
//! normalise with the CLIP mean and std. This is not candle's CLIP example, which
//! squashes to the full size and maps to [-1, 1].
//!
//! Resizing is Pillow's, reproduced exactly ([`super::pil_resize`]), so the pixels equal
//! those of transformers' PIL-backed `CLIPImageProcessor`; the reference fixture checks it.

use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::Deserialize;

use super::loading;
use super::pil_resize::{self, PilFilter};
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD, digits as published.
#[allow(clippy::excessive_precision)]
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// `size` / `crop_size` as the config spells them: a bare number (old CLIP repos) or a dict.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    Edge(u32),
    Shortest { shortest_edge: u32 },
    Exact { height: u32, width: u32 },
}

#[derive(Debug, Clone, Deserialize)]
struct PreprocessorConfig {
    size: Option<SizeSpec>,
    crop_size: Option<SizeSpec>,
    #[serde(default = "yes")]
    do_resize: bool,
    #[serde(default = "yes")]
    do_center_crop: bool,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "yes")]
    do_normalize: bool,
    #[serde(default = "one_over_255")]
    rescale_factor: f32,
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    /// PIL's resampling code: 1 lanczos, 2 bilinear, 3 bicubic (0 nearest, 4 box and
    /// 5 hamming are not supported).
    #[serde(default = "bicubic")]
    resample: u32,
}

fn yes() -> bool {
    true
}
fn one_over_255() -> f32 {
    1.0 / 255.0
}
fn bicubic() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resize {
    ShortestEdge(u32),
    Exact { width: u32, height: u32 },
}

/// The preprocessing of one model, checked at load.
#[derive(Debug, Clone)]
pub struct ClipPreprocessor {
    resize: Option<(Resize, PilFilter)>,
    crop: Option<(u32, u32)>,
    scale: f32,
    mean: [f32; 3],
    std: [f32; 3],
    /// (width, height) of what comes out.
    output: (u32, u32),
}

impl ClipPreprocessor {
    /// Reads `preprocessor_config.json`; the output must be `image_size` square, what the
    /// vision tower's position embeddings were trained for.
    pub fn load(files: &ModelFiles, image_size: usize) -> LanternResult<Self> {
        let config: PreprocessorConfig = loading::json_config(files, "preprocessor_config.json")?;
        Self::from_config(config, image_size)
    }

    fn from_config(config: PreprocessorConfig, image_size: usize) -> LanternResult<Self> {
        let unsupported = |what: String| LanternError::ModelNotSupported(format!("preprocessor_config.json: {what}"));
        let filter = match config.resample {
            1 => PilFilter::Lanczos,
            2 => PilFilter::Bilinear,
            3 => PilFilter::Bicubic,
            other => return Err(unsupported(format!("resample {other}"))),
        };
        let resize = match (config.do_resize, config.size) {
            (false, _) => None,
            (true, None) => return Err(unsupported("do_resize without size".into())),
            (true, Some(SizeSpec::Edge(edge) | SizeSpec::Shortest { shortest_edge: edge })) => {
                Some((Resize::ShortestEdge(edge), filter))
            }
            (true, Some(SizeSpec::Exact { height, width })) => Some((Resize::Exact { width, height }, filter)),
        };
        let crop = match (config.do_center_crop, config.crop_size) {
            (false, _) => None,
            (true, Some(SizeSpec::Edge(edge))) => Some((edge, edge)),
            (true, Some(SizeSpec::Exact { height, width })) => Some((width, height)),
            (true, other) => return Err(unsupported(format!("crop_size {other:?}"))),
        };
        // What the image is after resizing (before cropping), where it is known.
        let output = match (crop, resize) {
            (Some(crop), Some((Resize::ShortestEdge(edge), _))) if edge < crop.0.min(crop.1) => {
                return Err(unsupported(format!("shortest edge {edge} is smaller than the crop {crop:?}")));
            }
            (Some(crop), Some((Resize::Exact { width, height }, _))) if width < crop.0 || height < crop.1 => {
                return Err(unsupported(format!("resize to {width}x{height} is smaller than the crop {crop:?}")));
            }
            (Some(crop), _) => crop,
            (None, Some((Resize::Exact { width, height }, _))) => (width, height),
            (None, _) => return Err(unsupported("no centre crop and no fixed size: the image size would vary".into())),
        };
        if output != (image_size as u32, image_size as u32) {
            return Err(unsupported(format!("images come out {}x{}, the vision tower takes {image_size}", output.0, output.1)));
        }
        let (mean, std) = if config.do_normalize {
            (config.image_mean.unwrap_or(CLIP_MEAN), config.image_std.unwrap_or(CLIP_STD))
        } else {
            ([0.0; 3], [1.0; 3])
        };
        if std.contains(&0.0) {
            return Err(unsupported("image_std has a zero".into()));
        }
        let scale = if config.do_rescale { config.rescale_factor } else { 1.0 };
        Ok(ClipPreprocessor { resize, crop, scale, mean, std, output })
    }

    /// (width, height) of the preprocessed image.
    pub fn output_size(&self) -> (u32, u32) {
        self.output
    }

    /// The resized and cropped image, still 8-bit (what the normalisation then reads).
    /// Only the cropped part is computed, so an extreme aspect ratio costs nothing extra.
    pub fn resize_and_crop(&self, image: &RgbImage) -> LanternResult<RgbImage> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(LanternError::InvalidInput("the image is empty".into()));
        }
        let (resized, filter) = match self.resize {
            None => ((width, height), PilFilter::Bicubic),
            Some((Resize::Exact { width, height }, filter)) => ((width, height), filter),
            Some((Resize::ShortestEdge(edge), filter)) => (shortest_edge_size(width, height, edge), filter),
        };
        let (crop_w, crop_h) = self.crop.unwrap_or(resized);
        if resized.0 < crop_w || resized.1 < crop_h {
            // Only an image not resized can be smaller than the crop (the config is checked at load).
            return Err(LanternError::InvalidInput(format!(
                "image {}x{} is smaller than the crop {crop_w}x{crop_h}",
                resized.0, resized.1
            )));
        }
        // transformers' `center_crop`: the offset rounded down.
        let region = ((resized.0 - crop_w) / 2, (resized.1 - crop_h) / 2, crop_w, crop_h);
        Ok(pil_resize::resize_region(image, resized.0, resized.1, region, filter))
    }

    /// The model's input for one image: (3, height, width) f32, channels first.
    pub fn preprocess(&self, image: &RgbImage, device: &Device) -> LanternResult<Tensor> {
        let cropped = self.resize_and_crop(image)?;
        let (width, height) = cropped.dimensions();
        let plane = (width * height) as usize;
        let mut values = vec![0f32; 3 * plane];
        for (index, pixel) in cropped.pixels().enumerate() {
            for channel in 0..3 {
                let scaled = pixel[channel] as f32 * self.scale;
                values[channel * plane + index] = (scaled - self.mean[channel]) / self.std[channel];
            }
        }
        Tensor::from_vec(values, (3, height as usize, width as usize), device)
            .map_err(|e| LanternError::inference("preprocessing an image", e))
    }

    /// Several images stacked into one (N, 3, height, width) batch.
    pub fn batch(&self, images: &[RgbImage], device: &Device) -> LanternResult<Tensor> {
        let tensors: Vec<Tensor> = images.iter().map(|image| self.preprocess(image, device)).collect::<LanternResult<_>>()?;
        Tensor::stack(&tensors, 0).map_err(|e| LanternError::inference("stacking images", e))
    }
}

/// transformers' `get_resize_output_image_size(default_to_square=False)`: the shortest
/// side becomes `edge`, the longest keeps the aspect ratio, rounded down.
fn shortest_edge_size(width: u32, height: u32, edge: u32) -> (u32, u32) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_long = ((edge as u64 * long as u64) / short as u64).max(1) as u32;
    if width <= height {
        (edge, new_long)
    } else {
        (new_long, edge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> PreprocessorConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn old_and_new_size_spellings_mean_the_same() {
        let old = ClipPreprocessor::from_config(config(serde_json::json!({"size": 224, "crop_size": 224})), 224).unwrap();
        let new = ClipPreprocessor::from_config(
            config(serde_json::json!({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}})),
            224,
        )
        .unwrap();
        assert_eq!(old.resize, new.resize);
        assert_eq!(old.crop, new.crop);
        assert_eq!(old.output_size(), (224, 224));
    }

    #[test]
    fn a_crop_that_does_not_fit_the_tower_is_refused() {
        let got = ClipPreprocessor::from_config(config(serde_json::json!({"size": 224, "crop_size": 224})), 336);
        assert!(matches!(got, Err(LanternError::ModelNotSupported(_))));
    }

    #[test]
    fn the_shortest_side_is_resized_and_the_other_rounded_down() {
        assert_eq!(shortest_edge_size(48, 40, 32), (38, 32));
        assert_eq!(shortest_edge_size(20, 24, 32), (32, 38));
        assert_eq!(shortest_edge_size(640, 480, 224), (298, 224));
    }
}

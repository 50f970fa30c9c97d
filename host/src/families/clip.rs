//! CLIP (placeholder until the family lands: refuses to load).

use candle_core::Device;
use image::RgbImage;

use crate::capabilities::ImageEmbedder;
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

pub struct Clip;

pub fn load(files: &ModelFiles, _device: &Device) -> LanternResult<Clip> {
    Err(LanternError::ModelNotSupported(format!("{}: CLIP is not implemented yet", files.repo.repo)))
}

impl ImageEmbedder for Clip {
    fn dimensions(&self) -> usize {
        unreachable!()
    }
    fn embed_images(&self, _images: &[RgbImage]) -> LanternResult<Vec<Vec<f32>>> {
        unreachable!()
    }
    fn embed_texts(&self, _texts: &[String]) -> LanternResult<Vec<Vec<f32>>> {
        unreachable!()
    }
}

//! Stable Diffusion 3.5 (placeholder until the family lands: refuses to load).

use candle_core::Device;

use crate::capabilities::{GeneratedImage, ImageGenerator, ImageModelLimits, ImageRequest, ImageSink};
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

pub struct Sd35;

pub fn load(files: &ModelFiles, _device: &Device) -> LanternResult<Sd35> {
    Err(LanternError::ModelNotSupported(format!("{}: SD 3.5 is not implemented yet", files.repo.repo)))
}

impl ImageGenerator for Sd35 {
    fn limits(&self) -> ImageModelLimits {
        unreachable!()
    }
    fn generate(&self, _request: &ImageRequest, _sink: &mut dyn ImageSink) -> LanternResult<GeneratedImage> {
        unreachable!()
    }
}

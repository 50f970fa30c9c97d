//! FLUX.1 (placeholder until the family lands: refuses to load).

use candle_core::Device;

use crate::capabilities::{GeneratedImage, ImageGenerator, ImageModelLimits, ImageRequest, ImageSink};
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

pub struct Flux;

pub fn load(files: &ModelFiles, _device: &Device) -> LanternResult<Flux> {
    Err(LanternError::ModelNotSupported(format!("{}: FLUX is not implemented yet", files.repo.repo)))
}

impl ImageGenerator for Flux {
    fn limits(&self) -> ImageModelLimits {
        unreachable!()
    }
    fn generate(&self, _request: &ImageRequest, _sink: &mut dyn ImageSink) -> LanternResult<GeneratedImage> {
        unreachable!()
    }
}

//! LLaVA 1.5 (placeholder until the family lands: refuses to load).

use candle_core::Device;
use image::RgbImage;

use crate::capabilities::{Generated, GenerationSink, SamplingParams, VisionLanguageModel, VisionPrompt};
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

pub struct Llava;

pub fn load(files: &ModelFiles, _device: &Device) -> LanternResult<Llava> {
    Err(LanternError::ModelNotSupported(format!("{}: LLaVA is not implemented yet", files.repo.repo)))
}

impl VisionLanguageModel for Llava {
    fn prepare(&self, _image: &RgbImage, _question: &str) -> LanternResult<VisionPrompt> {
        unreachable!()
    }
    fn generate(&self, _prompt: &VisionPrompt, _params: &SamplingParams, _sink: &mut dyn GenerationSink) -> LanternResult<Generated> {
        unreachable!()
    }
}

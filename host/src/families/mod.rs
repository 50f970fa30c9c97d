//! One module per model family: load from files the hub already fetched, run a forward
//! pass. No I/O beyond reading those files, no awaiting, no downloading: the registry
//! calls these on worker threads.

pub mod bert;
pub mod clip;
pub mod clip_preprocess;
pub mod decoding;
pub mod diffusion;
pub mod flux;
pub mod gguf;
pub mod gte_qwen2;
mod heads;
pub mod jina_bert;
pub mod llava;
mod loading;
pub mod nvembed;
mod pil_resize;
pub mod pipeline;
mod pooling;
pub mod safetensors_file;
pub mod sd35;
pub mod stella;

use std::sync::Arc;

use candle_core::Device;

use crate::capabilities::{ImageEmbedder, ImageGenerator, TextEmbedder, TextGenerator, VisionLanguageModel};
use crate::catalog::Family;
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// Approximate memory of a loaded model: the bytes of its weight files.
pub fn weight_bytes(files: &ModelFiles) -> u64 {
    loading::weight_bytes(files)
}

/// Loads a text-embedding model of `family`.
pub fn load_text_embedder(family: Family, files: &ModelFiles, device: &Device) -> LanternResult<Arc<dyn TextEmbedder>> {
    match family {
        Family::Bert => Ok(Arc::new(bert::load(files, device)?)),
        Family::JinaBert => Ok(Arc::new(jina_bert::load(files, device)?)),
        Family::Stella => Ok(Arc::new(stella::load(files, device)?)),
        Family::GteQwen2 => Ok(Arc::new(gte_qwen2::load(files, device)?)),
        Family::NvEmbed => Ok(Arc::new(nvembed::load(files, device)?)),
        other => Err(LanternError::ModelNotSupported(format!("family {} does not embed text", other.name()))),
    }
}

/// Loads a text-generation model of `family`.
pub fn load_text_generator(family: Family, files: &ModelFiles, device: &Device) -> LanternResult<Arc<dyn TextGenerator>> {
    match family {
        Family::GgufLlm => Ok(Arc::new(gguf::GgufLlm::load(files, device)?)),
        other => Err(LanternError::ModelNotSupported(format!("family {} does not generate text", other.name()))),
    }
}

/// Loads a text-to-image model of `family`.
pub fn load_image_generator(family: Family, files: &ModelFiles, device: &Device) -> LanternResult<Arc<dyn ImageGenerator>> {
    match family {
        Family::Sd35 => Ok(Arc::new(sd35::load(files, device)?)),
        Family::Flux => Ok(Arc::new(flux::load(files, device)?)),
        other => Err(LanternError::ModelNotSupported(format!("family {} does not generate images", other.name()))),
    }
}

/// Loads a CLIP-style image and text embedder of `family`.
pub fn load_image_embedder(family: Family, files: &ModelFiles, device: &Device) -> LanternResult<Arc<dyn ImageEmbedder>> {
    match family {
        Family::Clip => Ok(Arc::new(clip::load(files, device)?)),
        other => Err(LanternError::ModelNotSupported(format!("family {} does not embed images", other.name()))),
    }
}

/// Loads a vision-language model of `family`.
pub fn load_vision_language(family: Family, files: &ModelFiles, device: &Device) -> LanternResult<Arc<dyn VisionLanguageModel>> {
    match family {
        Family::Llava => Ok(Arc::new(llava::load(files, device)?)),
        other => Err(LanternError::ModelNotSupported(format!("family {} does not answer about images", other.name()))),
    }
}

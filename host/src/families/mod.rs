//! One module per model family: load from files the hub already fetched, run a forward
//! pass. No I/O beyond reading those files, no awaiting, no downloading: the registry
//! calls these on worker threads.

pub mod bert;
pub mod decoding;
pub mod gguf;
pub mod gte_qwen2;
mod heads;
pub mod jina_bert;
mod loading;
pub mod nvembed;
pub mod pipeline;
mod pooling;
pub mod stella;

use std::sync::Arc;

use candle_core::Device;

use crate::capabilities::{TextEmbedder, TextGenerator};
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

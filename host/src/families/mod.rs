//! One module per model family: load from files the hub already fetched, run a forward
//! pass. No I/O beyond reading those files, no awaiting, no downloading: the registry
//! calls these on worker threads.

pub mod bert;
pub mod decoding;
pub mod gguf;
mod loading;

use std::sync::Arc;

use candle_core::Device;

use crate::capabilities::{TextEmbedder, TextGenerator};
use crate::catalog::Family;
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// Loads a text-embedding model of `family`.
pub fn load_text_embedder(family: Family, files: &ModelFiles, device: &Device) -> LanternResult<Arc<dyn TextEmbedder>> {
    match family {
        Family::Bert => Ok(Arc::new(bert::BertEmbedder::load(files, device)?)),
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

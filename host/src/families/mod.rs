//! One module per model family: load from files the hub already fetched, run a forward
//! pass. No I/O beyond reading those files, no awaiting, no downloading: the registry
//! calls these on worker threads.

pub mod bert;
mod loading;

use std::sync::Arc;

use candle_core::Device;

use crate::capabilities::TextEmbedder;
use crate::catalog::Family;
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// Loads a text-embedding model of `family`.
pub fn load_text_embedder(family: Family, files: &ModelFiles, device: &Device) -> LanternResult<Arc<dyn TextEmbedder>> {
    match family {
        Family::Bert => Ok(Arc::new(bert::BertEmbedder::load(files, device)?)),
        #[allow(unreachable_patterns)]
        other => Err(LanternError::ModelNotSupported(format!("family {} does not embed text", other.name()))),
    }
}

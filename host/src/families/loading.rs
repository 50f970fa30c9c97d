//! Loading steps that families share: JSON configs, tokenizers, safetensors weights.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use tokenizers::Tokenizer;

use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

fn load_error(file: &str, cause: impl std::fmt::Display) -> LanternError {
    LanternError::InferenceFailed(format!("loading {file}: {cause}"))
}

/// Parses a JSON file of the model (config.json and friends).
pub fn json_config<T: DeserializeOwned>(files: &ModelFiles, file: &str) -> LanternResult<T> {
    let path = files.path(file)?;
    let text = std::fs::read_to_string(path).map_err(|e| load_error(file, e))?;
    serde_json::from_str(&text).map_err(|e| load_error(file, e))
}

/// Loads `tokenizer.json` with its own padding and truncation turned off: families pad
/// and truncate per batch themselves.
pub fn tokenizer(files: &ModelFiles, file: &str) -> LanternResult<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(files.path(file)?).map_err(|e| load_error(file, e))?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|e| load_error(file, e))?;
    Ok(tokenizer)
}

/// Memory-maps safetensors weight files into a `VarBuilder`.
pub fn safetensors<'a>(files: &ModelFiles, names: &[&str], dtype: DType, device: &Device) -> LanternResult<VarBuilder<'a>> {
    let paths: Vec<&Path> = names.iter().map(|name| files.path(name)).collect::<LanternResult<_>>()?;
    // Safety: the cache's blobs are written once, renamed into place and never modified.
    unsafe { VarBuilder::from_mmaped_safetensors(&paths, dtype, device) }.map_err(|e| load_error(&names.join(", "), e))
}

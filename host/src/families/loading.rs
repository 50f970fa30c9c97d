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

/// The index of a sharded checkpoint (`model.safetensors.index.json`).
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

/// The weight files of the model: the shards named by `model.safetensors.index.json`
/// when the repo is sharded (the catalog then lists that index), else `model.safetensors`.
pub fn checkpoint_files(files: &ModelFiles) -> LanternResult<Vec<String>> {
    const INDEX: &str = "model.safetensors.index.json";
    if files.path(INDEX).is_err() {
        return Ok(vec!["model.safetensors".to_string()]);
    }
    let index: ShardIndex = json_config(files, INDEX)?;
    let mut shards: Vec<String> = index.weight_map.into_values().collect();
    shards.sort_unstable();
    shards.dedup();
    Ok(shards)
}

/// Memory-maps the model's weights (see [`checkpoint_files`]).
pub fn checkpoint<'a>(files: &ModelFiles, dtype: DType, device: &Device) -> LanternResult<VarBuilder<'a>> {
    let shards = checkpoint_files(files)?;
    let names: Vec<&str> = shards.iter().map(String::as_str).collect();
    safetensors(files, &names, dtype, device)
}

/// Lets candle code that asks for `{prefix}.name` read a checkpoint saved without that
/// prefix (a bare `Qwen2Model` instead of the causal-LM wrapper), deciding by whether
/// `{prefix}.{probe}` is present.
pub fn accept_missing_prefix<'a>(weights: VarBuilder<'a>, prefix: &'static str, probe: &str) -> VarBuilder<'a> {
    if weights.contains_tensor(&format!("{prefix}.{probe}")) || !weights.contains_tensor(probe) {
        return weights;
    }
    let with_dot = format!("{prefix}.");
    weights.rename_f(move |name| name.strip_prefix(with_dot.as_str()).unwrap_or(name).to_string())
}

/// Bytes of the weight files among `files`: what a loaded model roughly occupies.
pub fn weight_bytes(files: &ModelFiles) -> u64 {
    files
        .iter_all()
        .filter(|(name, _)| name.ends_with(".safetensors") || name.ends_with(".gguf"))
        .filter_map(|(_, path)| std::fs::metadata(path).ok())
        .map(|m| m.len())
        .sum()
}

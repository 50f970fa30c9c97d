//! Matryoshka projection heads in the sentence-transformers layout
//! (`2_Dense_{size}/model.safetensors`, tensors `linear.weight` and `linear.bias`), as
//! Stella ships them: one head per output size, of which a request needs one. Heads are
//! loaded when a request first asks for their size, from files the registry fetched
//! for that request, so only the heads in use are ever downloaded.

use std::collections::HashMap;
use std::sync::RwLock;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use super::loading;
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

pub struct ProjectionHeads {
    /// Output sizes that have a head, ascending.
    sizes: Vec<usize>,
    default_size: usize,
    in_features: usize,
    device: Device,
    loaded: RwLock<HashMap<usize, Linear>>,
}

impl ProjectionHeads {
    pub fn new(mut sizes: Vec<usize>, default_size: usize, in_features: usize, device: &Device) -> Self {
        sizes.sort_unstable();
        ProjectionHeads { sizes, default_size, in_features, device: device.clone(), loaded: RwLock::new(HashMap::new()) }
    }

    pub fn default_size(&self) -> usize {
        self.default_size
    }

    /// The head to run and the leading components to keep for `asked` dimensions: a
    /// size with a head uses it; a smaller size takes the prefix of the next larger
    /// head (the heads are Matryoshka-trained, so prefixes are embeddings too).
    pub fn choose(&self, asked: Option<usize>) -> LanternResult<(usize, usize)> {
        let asked = asked.unwrap_or(self.default_size);
        match self.sizes.iter().find(|&&size| size >= asked) {
            Some(&head) if asked > 0 => Ok((head, asked)),
            _ => Err(LanternError::InvalidInput(format!(
                "this model gives 1 to {} dimensions (heads: {:?}); {asked} was asked",
                self.sizes.last().copied().unwrap_or(0),
                self.sizes
            ))),
        }
    }

    /// The repo files of the head for `size`.
    pub fn files(&self, size: usize) -> Vec<String> {
        vec![head_file(size)]
    }

    pub fn is_loaded(&self, size: usize) -> bool {
        self.loaded.read().unwrap().contains_key(&size)
    }

    /// Loads every head whose file is among `files`.
    pub fn load_from(&self, files: &ModelFiles) -> LanternResult<()> {
        for &size in &self.sizes {
            let file = head_file(size);
            if self.is_loaded(size) || files.path(&file).is_err() {
                continue;
            }
            let weights = loading::safetensors(files, &[file.as_str()], DType::F32, &self.device)?;
            let head = candle_nn::linear(self.in_features, size, weights.pp("linear"))
                .map_err(|e| LanternError::inference(&format!("loading {file}"), e))?;
            self.loaded.write().unwrap().insert(size, head);
        }
        Ok(())
    }

    /// Projects pooled (batch, in_features) rows through the head for `size`.
    pub fn apply(&self, size: usize, pooled: &Tensor) -> candle_core::Result<Tensor> {
        let loaded = self.loaded.read().unwrap();
        let head = loaded.get(&size).ok_or_else(|| candle_core::Error::Msg(format!("projection head {size} is not loaded")))?;
        head.forward(&pooled.to_dtype(DType::F32)?)
    }
}

fn head_file(size: usize) -> String {
    format!("2_Dense_{size}/model.safetensors")
}

//! What `load` can learn from a safetensors file without reading its weights: the
//! header's tensor names, shapes and byte ranges (checked against the file's size), and
//! a dry run of candle's model constructors over those shapes.
//!
//! FLUX's files are large (the fp32 T5 checkpoint alone is 44.5 GB) and `generate`
//! loads them one stage at a time, so `load` must not read them; but a wrong or broken
//! file should still fail at load time with a typed error, not in the middle of a run.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{LanternError, LanternResult};
use crate::families::safetensors_file::SafetensorsFile;

fn corrupt(label: &str, cause: impl std::fmt::Display) -> LanternError {
    LanternError::InferenceFailed(format!("loading {label}: {cause}"))
}

/// The tensors one safetensors file declares.
#[derive(Debug, Clone)]
pub struct Shapes {
    label: String,
    tensors: BTreeMap<String, Vec<usize>>,
}


impl Shapes {
    /// Reads and checks the header of `path` (`label` names it in errors): every tensor's
    /// bytes must lie inside the file and match its dtype and shape.
    pub fn read(path: &Path, label: &str) -> LanternResult<Shapes> {
        let file = SafetensorsFile::open(path, label)?;
        let tensors = file.tensors().iter().map(|(name, entry)| (name.clone(), entry.shape.clone())).collect();
        Ok(Shapes { label: label.to_string(), tensors })
    }

    /// Reads and checks the tensor infos of the GGUF file at `path`: every tensor's
    /// blocks must lie inside the file. Shapes are in candle's order (GGUF stores them
    /// reversed; candle's reader turns them round).
    pub fn read_gguf(path: &Path, label: &str) -> LanternResult<Shapes> {
        let mut file = std::fs::File::open(path).map_err(|e| corrupt(label, e))?;
        let file_len = file.metadata().map_err(|e| corrupt(label, e))?.len();
        let content = candle_core::quantized::gguf_file::Content::read(&mut file).map_err(|e| corrupt(label, format!("not a GGUF file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, info) in content.tensor_infos {
            let elements = info.shape.elem_count() as u64;
            let block = info.ggml_dtype.block_size() as u64;
            let bytes = (elements / block) * info.ggml_dtype.type_size() as u64;
            let end = content.tensor_data_offset.checked_add(info.offset).and_then(|start| start.checked_add(bytes));
            if !elements.is_multiple_of(block) || end.is_none_or(|end| end > file_len) {
                return Err(corrupt(label, format!("tensor {name}: its {:?} blocks do not fit the file or its shape {:?}", info.ggml_dtype, info.shape)));
            }
            tensors.insert(name, info.shape.dims().to_vec());
        }
        Ok(Shapes { label: label.to_string(), tensors })
    }

    /// Shapes given by hand (tests).
    #[cfg(test)]
    pub fn from_map(label: &str, tensors: BTreeMap<String, Vec<usize>>) -> Shapes {
        Shapes { label: label.to_string(), tensors }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of `name`; a missing tensor means the file is not the model expected.
    pub fn shape(&self, name: &str) -> LanternResult<&[usize]> {
        self.tensors
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| LanternError::ModelNotSupported(format!("{} has no tensor {name}", self.label)))
    }

    /// Dimension `index` of `name`'s shape.
    pub fn dim(&self, name: &str, index: usize) -> LanternResult<usize> {
        let shape = self.shape(name)?;
        shape.get(index).copied().ok_or_else(|| {
            LanternError::ModelNotSupported(format!("{}: tensor {name} has shape {shape:?}, expected at least {} dims", self.label, index + 1))
        })
    }

    /// How many numbered children `{prefix}.{i}` there are, checking they run 0..n
    /// without gaps (blocks, layers).
    pub fn count(&self, prefix: &str) -> LanternResult<usize> {
        let with_dot = format!("{prefix}.");
        let mut indices: Vec<usize> = self
            .tensors
            .keys()
            .filter_map(|name| name.strip_prefix(&with_dot))
            .filter_map(|rest| rest.split('.').next()?.parse().ok())
            .collect();
        indices.sort_unstable();
        indices.dedup();
        if indices.iter().enumerate().any(|(i, &index)| i != index) {
            return Err(LanternError::ModelNotSupported(format!("{}: the blocks under {prefix} are not numbered 0..n", self.label)));
        }
        Ok(indices.len())
    }

    /// A `VarBuilder` that hands out weightless tensors of the declared shapes: running a
    /// candle constructor over it checks every name and shape the model asks for, and
    /// allocates nothing (each tensor is a broadcast zero).
    pub fn dry_run(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(DryRun(self.clone())), DType::F32, device.clone())
    }
}

struct DryRun(Shapes);

impl SimpleBackend for DryRun {
    fn get(&self, shape: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let declared = self.0.tensors.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        if declared.as_slice() != shape.dims() {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: declared.clone().into(),
            }
            .bt());
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(shape)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let declared = self.0.tensors.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        Tensor::zeros((), dtype, dev)?.broadcast_as(declared.clone())
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

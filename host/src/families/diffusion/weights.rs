//! Reading diffusion checkpoints without loading them: tensor shapes from the
//! safetensors headers (to infer model sizes the way the reference implementations do),
//! and a "dry run" `VarBuilder` that hands every model constructor weightless stand-ins
//! of the checked shapes, so `load()` finds a missing or misshapen tensor in seconds
//! without reading gigabytes it is about to drop (the families load their stages per
//! generation to keep peak memory to one stage).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{LanternError, LanternResult};

/// The tensors of one or more safetensors files: name → shape.
#[derive(Debug, Clone, Default)]
pub struct Shapes {
    shapes: BTreeMap<String, Vec<usize>>,
    /// What the files are, for error messages.
    label: String,
}

fn bad_file(label: &str, cause: impl std::fmt::Display) -> LanternError {
    LanternError::InferenceFailed(format!("{label}: {cause}"))
}

impl Shapes {
    /// Reads the headers of `path` (checking that the data they describe is all there:
    /// a truncated download fails here).
    pub fn read(path: &Path, label: &str) -> LanternResult<Shapes> {
        // Safety: the cache's blobs are written once, renamed into place and never modified.
        let file = unsafe { MmapedSafetensors::new(path) }.map_err(|e| bad_file(label, e))?;
        let shapes = file.tensors().into_iter().map(|(name, view)| (name, view.shape().to_vec())).collect();
        Ok(Shapes { shapes, label: label.to_string() })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The shape of `name`, or a typed error naming it.
    pub fn shape(&self, name: &str) -> LanternResult<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice).ok_or_else(|| bad_file(&self.label, format!("no tensor {name}")))
    }

    /// Dimension `dim` of `name`'s shape.
    pub fn dim(&self, name: &str, dim: usize) -> LanternResult<usize> {
        let shape = self.shape(name)?;
        shape.get(dim).copied().ok_or_else(|| bad_file(&self.label, format!("{name} has shape {shape:?}")))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// How many `{prefix}{i}.…` groups there are, counting i = 0, 1, … until one is absent.
    pub fn count(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                let group = format!("{prefix}{i}.");
                self.shapes.range(group.clone()..).next().is_some_and(|(name, _)| name.starts_with(&group))
            })
            .count()
    }

    /// A `VarBuilder` that checks each requested tensor against these shapes and hands out
    /// a zero of that shape that owns no memory (a broadcast scalar), in `dtype`.
    pub fn dry_run(&self, dtype: DType) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(DryRun(self.shapes.clone())), dtype, Device::Cpu)
    }
}

struct DryRun(BTreeMap<String, Vec<usize>>);

impl SimpleBackend for DryRun {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let got = self.get_unchecked(name, dtype, dev)?;
        if got.shape() != &s {
            candle_core::bail!("{name} has shape {:?}, expected {:?}", got.dims(), s.dims());
        }
        Ok(got)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let shape = self.0.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() })?;
        Tensor::zeros((), dtype, dev)?.broadcast_as(shape.as_slice())
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Memory-maps `paths` into a `VarBuilder` reading (and converting to `dtype`) each
/// tensor as a model asks for it.
pub fn mmap(paths: &[&Path], dtype: DType, device: &Device, label: &str) -> LanternResult<VarBuilder<'static>> {
    // Safety: the cache's blobs are written once, renamed into place and never modified.
    unsafe { VarBuilder::from_mmaped_safetensors(paths, dtype, device) }.map_err(|e| bad_file(label, e))
}

//! Optional re-quantisation at load, behind `LANTERN_GGUF_REQUANTIZE=q8_0` (off by default).
//!
//! Why: candle 0.11's dot products for the legacy 4/5-bit formats (Q4_0, Q4_1, Q5_0, Q5_1)
//! are scalar unless the whole build targets the CPU's features, while Q8_0 has
//! runtime-detected AVX kernels. Converting those tensors to Q8_0 once at load makes a
//! default build several times faster (shared/SPEED_NOTES.md), at the cost of about
//! twice their memory and an 8-bit rounding of already 4-bit weights (greedy outputs may
//! differ from the file's own format in near-tied steps, so it is opt-in).
//!
//! How: every tensor is read, the slow formats are dequantized and quantized to the
//! target, and a GGUF is written to memory for candle's loaders to read as usual.

use std::io::{Cursor, Read, Seek};

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{LanternError, LanternResult};

pub const VARIABLE: &str = "LANTERN_GGUF_REQUANTIZE";

/// The target format the environment asks for, if any.
pub fn target_from_env() -> LanternResult<Option<GgmlDType>> {
    match std::env::var(VARIABLE).unwrap_or_default().to_ascii_lowercase().as_str() {
        "" | "off" | "none" => Ok(None),
        "q8_0" => Ok(Some(GgmlDType::Q8_0)),
        other => Err(LanternError::InvalidInput(format!("{VARIABLE}={other:?}: the supported values are q8_0 and off"))),
    }
}

fn scalar_only(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

/// The same model with its slow-format tensors in `target`, as an in-memory GGUF.
pub fn requantize<R: Read + Seek>(
    content: Content,
    reader: &mut R,
    target: GgmlDType,
) -> candle_core::Result<(Content, Cursor<Vec<u8>>)> {
    let cpu = Device::Cpu;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort_by_key(|name| content.tensor_infos[*name].offset);
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let tensor = content.tensor(reader, name, &cpu)?;
        let fits = tensor.shape().dims().last().is_some_and(|cols| cols % target.block_size() == 0);
        let tensor = if scalar_only(tensor.dtype()) && fits { QTensor::quantize(&tensor.dequantize(&cpu)?, target)? } else { tensor };
        tensors.push((name.as_str(), tensor));
    }
    // candle's writer aligns to 32 bytes whatever the source said.
    let metadata: Vec<(&str, &Value)> =
        content.metadata.iter().filter(|(key, _)| key.as_str() != "general.alignment").map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(name, tensor)| (*name, tensor)).collect();
    let mut memory = Cursor::new(Vec::new());
    gguf_file::write(&mut memory, &metadata, &tensor_refs)?;
    memory.set_position(0);
    let content = Content::read(&mut memory)?;
    Ok((content, memory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    /// Q4_1 tensors become Q8_0 with (nearly) the same values; f32 ones are left alone.
    #[test]
    fn slow_formats_become_q8_0_and_keep_their_values() {
        let cpu = Device::Cpu;
        let values = Tensor::arange(0f32, 64.0 * 4.0, &cpu).unwrap().affine(0.01, -1.0).unwrap().reshape((4, 64)).unwrap();
        let q4 = QTensor::quantize(&values, GgmlDType::Q4_1).unwrap();
        let norm = QTensor::quantize(&Tensor::ones(64, candle_core::DType::F32, &cpu).unwrap(), GgmlDType::F32).unwrap();
        let mut file = Cursor::new(Vec::new());
        let arch = Value::String("llama".into());
        gguf_file::write(&mut file, &[("general.architecture", &arch)], &[("w", &q4), ("n", &norm)]).unwrap();
        file.set_position(0);
        let content = Content::read(&mut file).unwrap();
        let (content, mut memory) = requantize(content, &mut file, GgmlDType::Q8_0).unwrap();
        let w = content.tensor(&mut memory, "w", &cpu).unwrap();
        assert_eq!(w.dtype(), GgmlDType::Q8_0);
        assert_eq!(content.tensor(&mut memory, "n", &cpu).unwrap().dtype(), GgmlDType::F32);
        let before = q4.dequantize(&cpu).unwrap();
        let error = (w.dequantize(&cpu).unwrap() - before).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(error < 0.02, "max error {error}");
        assert_eq!(content.metadata["general.architecture"].to_string().unwrap(), "llama");
    }
}

//! Splits a GGUF file into parts the way llama.cpp's `gguf-split` does: every part a
//! valid GGUF holding some of the tensors; the first carries all the metadata; every
//! part carries `split.no` (u16), `split.count` (u16) and `split.tensors.count` (i32).

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

/// Writes `source` as `parts` files named `{stem}-0000N-of-0000M.gguf` in `dir`; returns their paths.
pub fn split(source: &Path, parts: usize, dir: &Path, stem: &str) -> Vec<PathBuf> {
    let mut file = std::fs::File::open(source).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> =
        names.iter().map(|name| ((*name).clone(), content.tensor(&mut file, name, &Device::Cpu).unwrap())).collect();
    let per_part = tensors.len().div_ceil(parts);
    let mut paths = Vec::new();
    for (index, chunk) in tensors.chunks(per_part).enumerate() {
        let mut metadata: Vec<(String, Value)> = if index == 0 {
            let mut all: Vec<(String, Value)> = content.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        } else {
            Vec::new()
        };
        metadata.push(("split.no".into(), Value::U16(index as u16)));
        metadata.push(("split.count".into(), Value::U16(parts as u16)));
        metadata.push(("split.tensors.count".into(), Value::I32(tensors.len() as i32)));
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let chunk: Vec<(&str, &QTensor)> = chunk.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let path = dir.join(format!("{stem}-{:05}-of-{parts:05}.gguf", index + 1));
        gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &metadata, &chunk).unwrap();
        paths.push(path);
    }
    assert_eq!(paths.len(), parts, "too few tensors for {parts} parts");
    paths
}

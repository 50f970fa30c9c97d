//! A safetensors file read tensor by tensor, without mapping it: the header's names,
//! dtypes, shapes and byte ranges (checked against the file's size before any weight is
//! read), and each tensor's bytes read straight into the `Vec<f32>` a family keeps.
//!
//! Why not candle's memory-mapped `VarBuilder` for the host's own engines: reading
//! through the map leaves every page of the file resident in the process until the map
//! goes, and candle's tensor plus the `to_vec` copy come on top, so loading MiniLM's
//! 87 MiB file peaked at ~140 MiB above what the loaded model keeps (BENCHMARKS.md,
//! "Memory"). Here the peak is the kept weights plus one tensor being converted. FLUX's
//! `load` uses the same header check to refuse a broken file before `generate` reads it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{LanternError, LanternResult};

/// Headers beyond this are not a checkpoint's (the real ones are a few hundred KB).
const MAX_HEADER: u64 = 64 << 20;

fn corrupt(label: &str, cause: impl std::fmt::Display) -> LanternError {
    LanternError::InferenceFailed(format!("loading {label}: {cause}"))
}

#[derive(serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// One tensor's place in the file.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Where its bytes start in the file (not the data section); their length follows
    /// from the dtype and shape, checked when the file is opened.
    start: u64,
}

fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F8_E4M3" | "F8_E5M2" | "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

pub struct SafetensorsFile {
    file: File,
    label: String,
    tensors: BTreeMap<String, TensorEntry>,
}

impl SafetensorsFile {
    /// Opens `path` and checks its header (`label` names it in errors): every tensor's
    /// bytes must lie inside the file and match its dtype and shape.
    pub fn open(path: &Path, label: &str) -> LanternResult<SafetensorsFile> {
        let mut file = File::open(path).map_err(|e| corrupt(label, e))?;
        let file_len = file.metadata().map_err(|e| corrupt(label, e))?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(|_| corrupt(label, "not a safetensors file (too short)"))?;
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER || header_len + 8 > file_len {
            return Err(corrupt(label, format!("not a safetensors file (header of {header_len} bytes in a {file_len}-byte file)")));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(|e| corrupt(label, e))?;
        let entries: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| corrupt(label, format!("unreadable safetensors header: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = file_len - data_start;
        let mut tensors = BTreeMap::new();
        for (name, value) in entries {
            if name == "__metadata__" {
                continue;
            }
            let entry: Entry = serde_json::from_value(value).map_err(|e| corrupt(label, format!("tensor {name}: {e}")))?;
            let size = dtype_bytes(&entry.dtype).ok_or_else(|| corrupt(label, format!("tensor {name}: unknown dtype {}", entry.dtype)))?;
            let [start, end] = entry.data_offsets;
            let elements = entry.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
            let expected = elements.and_then(|n| n.checked_mul(size));
            if start > end || end > data_len || Some(end - start) != expected {
                return Err(corrupt(label, format!("tensor {name}: bytes {start}..{end} do not fit the file or its shape {:?}", entry.shape)));
            }
            let entry = TensorEntry { dtype: entry.dtype, shape: entry.shape, start: data_start + start };
            tensors.insert(name, entry);
        }
        Ok(SafetensorsFile { file, label: label.to_string(), tensors })
    }

    pub fn tensors(&self) -> &BTreeMap<String, TensorEntry> {
        &self.tensors
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, which must have `shape`, as f32 values (F32, F16 and BF16
    /// files; read in one `pread`, converted in place for the 16-bit ones).
    pub fn f32(&self, name: &str, shape: &[usize]) -> LanternResult<Vec<f32>> {
        let entry = self.tensors.get(name).ok_or_else(|| corrupt(&self.label, format!("tensor {name} is missing")))?;
        if entry.shape != shape {
            return Err(corrupt(&self.label, format!("tensor {name} has shape {:?}, expected {shape:?}", entry.shape)));
        }
        let count: usize = shape.iter().product();
        let read = |bytes: &mut [u8]| self.file.read_exact_at(bytes, entry.start).map_err(|e| corrupt(&self.label, format!("tensor {name}: {e}")));
        match entry.dtype.as_str() {
            "F32" => {
                let mut values = vec![0f32; count];
                read(bytemuck_bytes(&mut values))?;
                if cfg!(target_endian = "big") {
                    values.iter_mut().for_each(|v| *v = f32::from_bits(v.to_bits().swap_bytes()));
                }
                Ok(values)
            }
            "F16" | "BF16" => {
                // Read the 16-bit values into the front half of the f32 buffer, then widen
                // from the back so no value is overwritten before it is read.
                let mut values = vec![0f32; count];
                let bytes = &mut bytemuck_bytes(&mut values)[..count * 2];
                read(bytes)?;
                let half = entry.dtype == "F16";
                for i in (0..count).rev() {
                    let raw = {
                        let b = bytemuck_bytes(&mut values);
                        u16::from_le_bytes([b[2 * i], b[2 * i + 1]])
                    };
                    values[i] = if half { half::f16::from_bits(raw).to_f32() } else { half::bf16::from_bits(raw).to_f32() };
                }
                Ok(values)
            }
            other => Err(corrupt(&self.label, format!("tensor {name} is {other}, not a float type"))),
        }
    }
}

/// The bytes of an f32 slice (little-endian on the machines this host runs on).
fn bytemuck_bytes(values: &mut [f32]) -> &mut [u8] {
    // SAFETY: f32 has no invalid bit patterns and no padding; the byte view covers exactly
    // the slice's memory and borrows it mutably for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let start = data.len();
            data.extend_from_slice(bytes);
            header.insert(name.to_string(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}));
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend(header);
        file.extend(data);
        std::fs::write(path, file).unwrap();
    }

    #[test]
    fn reads_f32_f16_and_bf16_as_f32_and_refuses_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let values = [1.5f32, -2.0, 0.25, 3.0, 65504.0, -0.0];
        let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16_bytes: Vec<u8> = values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        let bf16_bytes: Vec<u8> = values[..4].iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        write(&path, &[("a", "F32", vec![2, 3], f32_bytes), ("b", "F16", vec![6], f16_bytes), ("c", "BF16", vec![4], bf16_bytes), ("i", "I64", vec![1], vec![0; 8])]);
        let file = SafetensorsFile::open(&path, "w").unwrap();
        assert_eq!(file.f32("a", &[2, 3]).unwrap(), values);
        assert_eq!(file.f32("b", &[6]).unwrap(), values);
        assert_eq!(file.f32("c", &[4]).unwrap(), values[..4]);
        for (name, shape) in [("a", &[3usize, 2][..]), ("missing", &[1][..]), ("i", &[1][..])] {
            assert!(matches!(file.f32(name, shape), Err(LanternError::InferenceFailed(_))), "{name}");
        }
        // A file cut short: the last tensor's bytes no longer fit.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let error = SafetensorsFile::open(&path, "w").err().unwrap().to_string();
        assert!(error.contains("do not fit the file"), "{error}");
    }
}

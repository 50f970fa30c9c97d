//! Projections and embeddings read from a GGUF for the host's own forward passes
//! ([`super::llama`], the dense decoder engine): repacked into [`TiledMatrix`] tiles when the format allows (Q4_0,
//! Q4_1, Q8_0), else candle's quantized matmul (k-quants, f16, …), so any file loads and
//! the common formats run on the host's kernels.

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};

use crate::kernels::activations::QuantizedActivations;
use crate::kernels::tiles::{self, TiledMatrix};

/// One weight matrix or several fused along the output (q|k|v, gate|up).
pub enum Linear {
    Tiled(TiledMatrix),
    /// candle's matmul per part, each written at its offset of the output.
    Candle { parts: Vec<(QMatMul, usize, usize)>, width: usize, k: usize },
}

fn read<R: Read + Seek>(content: &Content, reader: &mut R, name: &str) -> Result<QTensor> {
    content.tensor(reader, name, &Device::Cpu)
}

fn shape(tensor: &QTensor) -> Result<(usize, usize)> {
    tensor.shape().dims2()
}

fn tiled(tensor: &QTensor) -> Result<Option<TiledMatrix>> {
    if !tiles::supports(tensor.dtype()) {
        return Ok(None);
    }
    let (n, k) = shape(tensor)?;
    Ok(TiledMatrix::from_gguf(tensor.dtype(), &tensor.data()?, n, k))
}

impl Linear {
    /// Reads the named tensors (all `n_i × k`) as one fused projection.
    pub fn load<R: Read + Seek>(content: &Content, reader: &mut R, names: &[String]) -> Result<Linear> {
        let tensors = names.iter().map(|name| read(content, reader, name)).collect::<Result<Vec<_>>>()?;
        Linear::from_tensors(tensors)
    }

    pub fn from_tensors(tensors: Vec<QTensor>) -> Result<Linear> {
        let k = shape(&tensors[0])?.1;
        for t in &tensors {
            if shape(t)?.1 != k {
                candle_core::bail!("fused projections need one input width, got {:?}", t.shape());
            }
        }
        let mut repacked = Vec::new();
        for t in &tensors {
            match tiled(t)? {
                Some(matrix) => repacked.push(matrix),
                None => break,
            }
        }
        if repacked.len() == tensors.len() {
            if let Ok(fused) = TiledMatrix::fuse(repacked) {
                return Ok(Linear::Tiled(fused));
            }
        }
        let mut parts = Vec::new();
        let mut width = 0;
        for t in tensors {
            let rows = shape(&t)?.0;
            parts.push((QMatMul::from_qtensor(t)?, width, rows));
            width += rows;
        }
        Ok(Linear::Candle { parts, width, k })
    }

    /// Width of one output row (fused parts side by side, tiled parts padded to 16).
    pub fn width(&self) -> usize {
        match self {
            Linear::Tiled(m) => m.width(),
            Linear::Candle { width, .. } => *width,
        }
    }

    /// Width of one input row.
    pub fn k(&self) -> usize {
        match self {
            Linear::Tiled(m) => m.k(),
            Linear::Candle { k, .. } => *k,
        }
    }

    /// Offset of fused part `i` in an output row.
    pub fn offset(&self, i: usize) -> usize {
        match self {
            Linear::Tiled(m) => m.parts()[i].0,
            Linear::Candle { parts, .. } => parts[i].1,
        }
    }

    /// How many fused parts this projection has (tensors it was loaded from).
    pub fn parts(&self) -> usize {
        match self {
            Linear::Tiled(m) => m.parts().len(),
            Linear::Candle { parts, .. } => parts.len(),
        }
    }

    /// Output rows of fused part `i` (without the tiles' padding).
    pub fn rows(&self, i: usize) -> usize {
        match self {
            Linear::Tiled(m) => m.parts()[i].1,
            Linear::Candle { parts, .. } => parts[i].2,
        }
    }

    /// `out (rows × width) = x (rows × k) · Wᵀ`.
    pub fn forward(&self, x: &[f32], rows: usize, scratch: &mut QuantizedActivations, out: &mut [f32]) -> Result<()> {
        match self {
            Linear::Tiled(m) => {
                scratch.quantize(&x[..rows * m.k()], rows, m.k());
                m.matmul(scratch, out, m.width());
            }
            Linear::Candle { parts, width, k } => {
                let input = Tensor::from_slice(&x[..rows * k], (rows, *k), &Device::Cpu)?;
                for (matmul, offset, n) in parts {
                    let y = matmul.forward(&input)?.flatten_all()?.to_vec1::<f32>()?;
                    for r in 0..rows {
                        out[r * width + offset..][..*n].copy_from_slice(&y[r * n..][..*n]);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The token embedding table: tiles read row by row, or a dequantized table for formats
/// the tiles do not hold (as candle's own loaders keep it).
pub enum Embedding {
    Tiled(TiledMatrix),
    Dense { table: Vec<f32>, width: usize },
}

impl Embedding {
    pub fn from_tensor(tensor: &QTensor) -> Result<Embedding> {
        if let Some(matrix) = tiled(tensor)? {
            return Ok(Embedding::Tiled(matrix));
        }
        let (_, width) = shape(tensor)?;
        Ok(Embedding::Dense { table: tensor.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?, width })
    }

    pub fn rows(&self) -> usize {
        match self {
            Embedding::Tiled(m) => m.parts()[0].1,
            Embedding::Dense { table, width } => table.len() / width,
        }
    }

    pub fn row(&self, token: usize, out: &mut [f32]) {
        match self {
            Embedding::Tiled(m) => m.row(token, out),
            Embedding::Dense { table, width } => out.copy_from_slice(&table[token * width..][..*width]),
        }
    }
}

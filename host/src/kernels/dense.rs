//! f32 linear layers (`y = x·Wᵀ + b`) for the encoder models, on the `gemm` crate's
//! AVX-512 kernels and candle's barrier pool.
//!
//! Why not candle's `Linear`: each candle op is a separate pass over memory followed by a
//! pool synchronisation (bias add, activation and residual add are three more passes),
//! and its matmul sizes its thread pool by reading `/proc/cpuinfo` on every call. Here
//! the output columns are split into blocks across the pool's threads, and each thread
//! finishes its block in place — bias, activation or residual — while it is still in
//! cache, so a whole layer costs one synchronisation per matmul.

use std::ops::Range;

use super::parallel::{for_each_chunk, SharedMut};
use super::vector;

/// Output columns per work item: a multiple of gemm's 16-wide AVX-512 tiles, small enough
/// that a 384-wide projection still gives each of a few threads several items to balance.
const COLUMN_BLOCK: usize = 64;

/// What happens to each output block after the product is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// Exact GELU, `x·Φ(x)` with the error function (BERT's `gelu`).
    GeluErf,
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

/// One `nn.Linear`: weight as stored, (outputs, inputs) row-major, and its bias.
pub struct DenseLinear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl DenseLinear {
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, outputs: usize, inputs: usize) -> Self {
        assert_eq!(weight.len(), outputs * inputs, "weight of a {inputs}→{outputs} linear layer");
        assert_eq!(bias.len(), outputs, "bias of a {inputs}→{outputs} linear layer");
        DenseLinear { weight, bias, inputs, outputs }
    }

    /// Rows of `[a; b; c]` stacked into one layer (fused q|k|v): one matmul reads the
    /// activations once instead of three times.
    pub fn stack(parts: Vec<DenseLinear>) -> Self {
        let inputs = parts[0].inputs;
        assert!(parts.iter().all(|p| p.inputs == inputs), "stacked layers share their input width");
        let outputs = parts.iter().map(|p| p.outputs).sum();
        let mut weight = Vec::with_capacity(outputs * inputs);
        let mut bias = Vec::with_capacity(outputs);
        for part in parts {
            weight.extend_from_slice(&part.weight);
            bias.extend_from_slice(&part.bias);
        }
        DenseLinear { weight, bias, inputs, outputs }
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `out = act(x·Wᵀ + b)` for `rows` rows of `x` (rows × inputs); `out` is rows × outputs.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], activation: Activation) {
        self.run(x, rows, out, activation, false);
    }

    /// `out += x·Wᵀ + b`: the residual connection, added in place.
    pub fn forward_add(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        self.run(x, rows, out, Activation::None, true);
    }

    fn run(&self, x: &[f32], rows: usize, out: &mut [f32], activation: Activation, accumulate: bool) {
        assert_eq!(x.len(), rows * self.inputs, "input of a {}-wide linear layer", self.inputs);
        assert_eq!(out.len(), rows * self.outputs, "output of a {}-wide linear layer", self.outputs);
        if rows == 0 {
            return;
        }
        let blocks = self.outputs.div_ceil(COLUMN_BLOCK);
        let shared = SharedMut::new(out);
        for_each_chunk(blocks, |range| {
            let columns = range.start * COLUMN_BLOCK..(range.end * COLUMN_BLOCK).min(self.outputs);
            // SAFETY: each work item writes only its own columns of `out`.
            let out = unsafe { shared.get() };
            self.block(x, rows, out, columns, activation, accumulate);
        });
    }

    /// Columns `columns` of the output, all rows.
    fn block(&self, x: &[f32], rows: usize, out: &mut [f32], columns: Range<usize>, activation: Activation, accumulate: bool) {
        let (n, k) = (self.outputs, self.inputs);
        let bias = &self.bias[columns.clone()];
        for row in out.chunks_exact_mut(n) {
            let row = &mut row[columns.clone()];
            if accumulate {
                row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
            } else {
                row.copy_from_slice(bias);
            }
        }
        // SAFETY: the pointers and strides describe `x` (rows × k, row-major), the weight
        // rows `columns` ((columns) × k, row-major, read as its transpose) and the block of
        // `out` (rows × n, row-major), all in bounds by the asserts in `run`.
        unsafe {
            gemm::gemm(
                rows,
                columns.len(),
                k,
                out.as_mut_ptr().add(columns.start),
                1,
                n as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                self.weight.as_ptr().add(columns.start * k),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        if activation != Activation::None {
            for row in out.chunks_exact_mut(n) {
                let row = &mut row[columns.clone()];
                match activation {
                    Activation::GeluErf => vector::gelu_erf(row),
                    Activation::GeluTanh => vector::gelu_tanh(row),
                    Activation::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
                    Activation::None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(layer: &DenseLinear, x: &[f32], rows: usize) -> Vec<f64> {
        let mut out = vec![0f64; rows * layer.outputs];
        for r in 0..rows {
            for o in 0..layer.outputs {
                let mut sum = layer.bias[o] as f64;
                for i in 0..layer.inputs {
                    sum += x[r * layer.inputs + i] as f64 * layer.weight[o * layer.inputs + i] as f64;
                }
                out[r * layer.outputs + o] = sum;
            }
        }
        out
    }

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * 0.618 + seed).sin() * 0.5).collect()
    }

    #[test]
    fn blocks_bias_activation_and_residual_match_the_plain_product() {
        // 150 outputs: two full blocks and a ragged one; 7 rows, 45 inputs.
        let (rows, inputs, outputs) = (7, 45, 150);
        let layer = DenseLinear::new(values(outputs * inputs, 1.0), values(outputs, 2.0), outputs, inputs);
        let x = values(rows * inputs, 3.0);
        let expected = reference(&layer, &x, rows);

        let mut out = vec![f32::NAN; rows * outputs];
        layer.forward(&x, rows, &mut out, Activation::None);
        for (o, e) in out.iter().zip(&expected) {
            assert!((*o as f64 - e).abs() < 1e-4, "{o} vs {e}");
        }

        layer.forward(&x, rows, &mut out, Activation::Relu);
        for (o, e) in out.iter().zip(&expected) {
            assert!((*o as f64 - e.max(0.0)).abs() < 1e-4, "{o} vs {e}");
        }

        let residual = values(rows * outputs, 4.0);
        let mut sum = residual.clone();
        layer.forward_add(&x, rows, &mut sum);
        for ((s, r), e) in sum.iter().zip(&residual).zip(&expected) {
            assert!((*s as f64 - (*r as f64 + e)).abs() < 1e-4, "{s} vs {r} + {e}");
        }
    }

    #[test]
    fn stacked_layers_compute_each_part() {
        let a = DenseLinear::new(values(6 * 5, 1.0), values(6, 2.0), 6, 5);
        let b = DenseLinear::new(values(3 * 5, 5.0), values(3, 6.0), 3, 5);
        let x = values(2 * 5, 7.0);
        let (ea, eb) = (reference(&a, &x, 2), reference(&b, &x, 2));
        let fused = DenseLinear::stack(vec![a, b]);
        let mut out = vec![0f32; 2 * 9];
        fused.forward(&x, 2, &mut out, Activation::None);
        for r in 0..2 {
            for o in 0..6 {
                assert!((out[r * 9 + o] as f64 - ea[r * 6 + o]).abs() < 1e-5);
            }
            for o in 0..3 {
                assert!((out[r * 9 + 6 + o] as f64 - eb[r * 3 + o]).abs() < 1e-5);
            }
        }
    }
}

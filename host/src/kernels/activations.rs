//! Activations quantized once per projection, in blocks of 32, to two bytes per value:
//! `x ≈ d·(q + r/254)` with `d = max|x| / 127`, `q = round(x / d)` (llama.cpp's own 8-bit
//! activation, Q8_1/Q8_0) and `r` the rounded remainder. llama.cpp and candle use `q`
//! alone; that 8-bit rounding moved greedy choices at near-ties away from the f32 model
//! (SmolLM2: 69 of 72 teacher-forced steps agreed with f32). With the remainder the
//! activations carry about 15 bits and only the weights' own quantization remains; the
//! kernels run a second `vpdpbusd` pass over the same weight registers, which costs
//! little where decoding waits on memory. Each block keeps its integer sums (Q4_1's min
//! term and the +128 offset of the Q8_0 tiles need them).

/// Values per quantization block, for weights and activations alike.
pub const BLOCK: usize = 32;

/// `rows × k` activations, quantized. The buffers are reused from call to call.
#[derive(Default)]
pub struct QuantizedActivations {
    pub rows: usize,
    pub k: usize,
    /// `rows × k` quantized values, row-major.
    pub q: Vec<i8>,
    /// `rows × k` rounded remainders, in units of `d / 254`.
    pub r: Vec<i8>,
    /// Per block (`rows × k/32`): the scale.
    pub d: Vec<f32>,
    /// Per block: `d / 254`, the remainders' scale.
    pub d_r: Vec<f32>,
    /// Per block: the sums of its `q` and of its `r`.
    pub sum: Vec<i32>,
    pub sum_r: Vec<i32>,
    /// Per block: the block's value sum, `d·Σq + d/254·Σr`, as Q4_1's min term uses it.
    pub dsum: Vec<f32>,
}

impl QuantizedActivations {
    pub fn blocks_per_row(&self) -> usize {
        self.k / BLOCK
    }

    /// Quantizes `x` (`rows × k`, row-major; `k` a multiple of 32) into these buffers.
    pub fn quantize(&mut self, x: &[f32], rows: usize, k: usize) {
        assert!(k % BLOCK == 0 && x.len() == rows * k, "activations of {rows}×{k} in {} values", x.len());
        self.rows = rows;
        self.k = k;
        let blocks = rows * k / BLOCK;
        self.q.resize(rows * k, 0);
        self.r.resize(rows * k, 0);
        self.d.resize(blocks, 0.0);
        self.d_r.resize(blocks, 0.0);
        self.sum.resize(blocks, 0);
        self.sum_r.resize(blocks, 0);
        self.dsum.resize(blocks, 0.0);
        let blocks_iter = x.chunks_exact(BLOCK).zip(self.q.chunks_exact_mut(BLOCK)).zip(self.r.chunks_exact_mut(BLOCK));
        for (b, ((values, q), r)) in blocks_iter.enumerate() {
            let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
            let (mut sum, mut sum_r) = (0i32, 0i32);
            for ((q, r), v) in q.iter_mut().zip(r.iter_mut()).zip(values) {
                // `round` is half away from zero, as C's roundf in llama.cpp.
                let scaled = v * inverse;
                let rounded = scaled.round();
                let remainder = ((scaled - rounded) * 254.0).round().clamp(-127.0, 127.0) as i32;
                *q = rounded as i32 as i8;
                *r = remainder as i8;
                sum += rounded as i32;
                sum_r += remainder;
            }
            self.d[b] = d;
            self.d_r[b] = d / 254.0;
            self.sum[b] = sum;
            self.sum_r[b] = sum_r;
            self.dsum[b] = d * sum as f32 + d / 254.0 * sum_r as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173).collect();
        let mut a = QuantizedActivations::default();
        a.quantize(&x, 2, 32);
        for (i, v) in x.iter().enumerate() {
            let d = a.d[i / BLOCK];
            assert!((a.q[i] as f32 * d - v).abs() <= d * 0.5 + 1e-6);
            // With the remainder, within half a step of d/254.
            assert!((a.q[i] as f32 * d + a.r[i] as f32 * a.d_r[i / BLOCK] - v).abs() <= d / 254.0 * 0.5 + 1e-6);
        }
        assert_eq!(a.sum[0], a.q[..32].iter().map(|&q| q as i32).sum::<i32>());
        let zeros = [0f32; 32];
        a.quantize(&zeros, 1, 32);
        assert_eq!((a.d[0], a.sum[0]), (0.0, 0));
    }
}

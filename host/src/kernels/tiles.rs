//! Weight matrices repacked at load into tiles of 16 output rows.
//!
//! A GGUF stores a `n × k` matrix row by row, in blocks of 32 values. Here the blocks of
//! 16 consecutive rows are interleaved so that one 64-byte load holds 4 consecutive
//! values of each of the 16 rows: exactly one `vpdpbusd` operand, whose 16 lanes are the
//! 16 outputs. A tile's blocks follow each other along `k`, so a tile streams from memory
//! front to back. Bytes per 16 rows × 32 values, the same as the GGUF's own blocks:
//!
//! - Q4_1 (`d·q + m`, `q` in 0..15): 256 bytes of nibbles (chunk `c` holds values
//!   `8c..8c+3` in its low and `8c+4..8c+7` in its high nibbles), 16 `d`, 16 `m` (f16):
//!   320 bytes, 20 per row-block as in the GGUF. Q4_0 (`d·(q−8)`) is Q4_1 with
//!   `m = −8d`, exactly.
//! - Q8_0 (`d·q`, `q` in −128..127): 512 bytes of `q + 128` (chunk `g` holds values
//!   `4g..4g+3`), 16 `d`: 544 bytes, 34 per row-block as in the GGUF. Stored unsigned
//!   because `vpdpbusd` multiplies unsigned by signed bytes; the kernel takes
//!   `128·Σ q_a` back off.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::activations::{QuantizedActivations, BLOCK};
use super::{has_avx512_vnni, parallel, portable};

/// Output rows per tile (the lanes of one 512-bit register of i32).
pub const TILE_ROWS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileFormat {
    Q4_1,
    Q8_0,
}

impl TileFormat {
    /// Bytes of one tile-block: 16 rows × 32 values.
    pub const fn block_bytes(self) -> usize {
        match self {
            TileFormat::Q4_1 => 320,
            TileFormat::Q8_0 => 544,
        }
    }
}

/// One matrix, or several with the same `k` fused along the output (q, k and v; gate and
/// up), so their activations are quantized once and they run in one parallel region.
#[derive(Debug)]
pub struct TiledMatrix {
    format: TileFormat,
    k: usize,
    /// `(offset, rows)` of each fused part in the output; offsets are multiples of 16.
    parts: Vec<(usize, usize)>,
    tiles: usize,
    data: Vec<u8>,
}

/// The GGUF formats these tiles hold without changing a value.
pub fn supports(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q8_0)
}

fn f16_bits(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[0], bytes[1]])
}

impl TiledMatrix {
    /// Repacks a GGUF tensor's raw blocks (`n` rows of `k` values), or `None` when its
    /// format is not one of [`supports`] or the bytes do not fit the shape.
    pub fn from_gguf(dtype: GgmlDType, raw: &[u8], n: usize, k: usize) -> Option<TiledMatrix> {
        if !supports(dtype) || k % BLOCK != 0 || n == 0 || raw.len() != n * (k / BLOCK) * dtype.type_size() {
            return None;
        }
        let format = if dtype == GgmlDType::Q8_0 { TileFormat::Q8_0 } else { TileFormat::Q4_1 };
        let blocks = k / BLOCK;
        let tiles = n.div_ceil(TILE_ROWS);
        let block_bytes = format.block_bytes();
        // Padding rows stay zero: d = m = 0 (Q4_1) or d = 0 (Q8_0) makes them output 0.
        let mut data = vec![0u8; tiles * blocks * block_bytes];
        if format == TileFormat::Q8_0 {
            data.chunks_exact_mut(block_bytes).for_each(|b| b[..512].fill(128));
        }
        let source_block = dtype.type_size();
        for row in 0..n {
            let (tile, lane) = (row / TILE_ROWS, row % TILE_ROWS);
            for b in 0..blocks {
                let src = &raw[(row * blocks + b) * source_block..][..source_block];
                let dst = &mut data[(tile * blocks + b) * block_bytes..][..block_bytes];
                match dtype {
                    GgmlDType::Q4_1 => write_q4_1(dst, lane, &src[4..20], f16_bits(&src[0..2]), f16_bits(&src[2..4])),
                    GgmlDType::Q4_0 => {
                        let d = f16::from_bits(f16_bits(&src[0..2]));
                        let m = f16::from_f32(-8.0 * d.to_f32());
                        write_q4_1(dst, lane, &src[2..18], d.to_bits(), m.to_bits())
                    }
                    _ => write_q8_0(dst, lane, &src[2..34], f16_bits(&src[0..2])),
                }
            }
        }
        Some(TiledMatrix { format, k, parts: vec![(0, n)], tiles, data })
    }

    /// Fuses matrices of one format and `k` along the output; `None` if they differ.
    pub fn fuse(parts: Vec<TiledMatrix>) -> Result<TiledMatrix, Vec<TiledMatrix>> {
        let same = parts.windows(2).all(|w| w[0].format == w[1].format && w[0].k == w[1].k);
        if parts.is_empty() || !same {
            return Err(parts);
        }
        let (format, k) = (parts[0].format, parts[0].k);
        let mut fused = TiledMatrix { format, k, parts: Vec::new(), tiles: 0, data: Vec::new() };
        for part in parts {
            fused.parts.push((fused.tiles * TILE_ROWS, part.parts[0].1));
            fused.tiles += part.tiles;
            fused.data.extend_from_slice(&part.data);
        }
        Ok(fused)
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Width of the output this matrix writes (its rows, padded per part to 16).
    pub fn width(&self) -> usize {
        self.tiles * TILE_ROWS
    }

    /// `(offset, rows)` of each fused part in the output.
    pub fn parts(&self) -> &[(usize, usize)] {
        &self.parts
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn blocks(&self) -> usize {
        self.k / BLOCK
    }

    fn tile(&self, tile: usize) -> &[u8] {
        let len = self.blocks() * self.format.block_bytes();
        &self.data[tile * len..][..len]
    }

    /// Row `row` (of the first part) as f32, for embedding lookups.
    pub fn row(&self, row: usize, out: &mut [f32]) {
        let (tile, lane) = (row / TILE_ROWS, row % TILE_ROWS);
        let block_bytes = self.format.block_bytes();
        for (b, out) in out[..self.k].chunks_exact_mut(BLOCK).enumerate() {
            let block = &self.tile(tile)[b * block_bytes..][..block_bytes];
            match self.format {
                TileFormat::Q4_1 => {
                    let d = f16::from_bits(f16_bits(&block[256 + lane * 2..])).to_f32();
                    let m = f16::from_bits(f16_bits(&block[288 + lane * 2..])).to_f32();
                    for (i, v) in out.iter_mut().enumerate() {
                        let byte = block[(i / 8) * 64 + lane * 4 + i % 4];
                        let q = if i % 8 < 4 { byte & 0x0F } else { byte >> 4 };
                        *v = d * q as f32 + m;
                    }
                }
                TileFormat::Q8_0 => {
                    let d = f16::from_bits(f16_bits(&block[512 + lane * 2..])).to_f32();
                    for (i, v) in out.iter_mut().enumerate() {
                        *v = d * (block[(i / 4) * 64 + lane * 4 + i % 4] as i32 - 128) as f32;
                    }
                }
            }
        }
    }

    /// `out[r][..width] = W · a[r]` for every activation row, `out` being `a.rows` rows of
    /// `stride` floats. Tiles are shared out over candle's thread pool.
    pub fn matmul(&self, a: &QuantizedActivations, out: &mut [f32], stride: usize) {
        assert!(a.k == self.k && stride >= self.width() && out.len() >= (a.rows.max(1) - 1) * stride + self.width());
        let out = parallel::SharedMut::new(out);
        let vnni = has_avx512_vnni();
        parallel::for_each_chunk(self.tiles, |tiles| {
            for tile in tiles {
                let weights = self.tile(tile);
                // SAFETY: each tile writes only its own 16 columns of each row.
                let out = unsafe { out.get().as_mut_ptr().add(tile * TILE_ROWS) };
                #[cfg(target_arch = "x86_64")]
                if vnni {
                    // SAFETY: the CPU has AVX-512 F/BW/VNNI; the slices cover what is read.
                    unsafe { super::vnni::tile(self.format, weights, a, out, stride) };
                    continue;
                }
                let _ = vnni;
                portable::tile(self.format, weights, a, out, stride);
            }
        });
    }
}

fn write_q4_1(block: &mut [u8], lane: usize, nibbles: &[u8], d: u16, m: u16) {
    let q = |i: usize| if i < 16 { nibbles[i] & 0x0F } else { nibbles[i - 16] >> 4 };
    for c in 0..4 {
        for j in 0..4 {
            block[c * 64 + lane * 4 + j] = q(8 * c + j) | (q(8 * c + 4 + j) << 4);
        }
    }
    block[256 + lane * 2..][..2].copy_from_slice(&d.to_le_bytes());
    block[288 + lane * 2..][..2].copy_from_slice(&m.to_le_bytes());
}

fn write_q8_0(block: &mut [u8], lane: usize, values: &[u8], d: u16) {
    for g in 0..8 {
        for j in 0..4 {
            block[g * 64 + lane * 4 + j] = (values[4 * g + j] as i8 as i32 + 128) as u8;
        }
    }
    block[512 + lane * 2..][..2].copy_from_slice(&d.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn weights(n: usize, k: usize) -> Tensor {
        let values: Vec<f32> = (0..n * k).map(|i| (((i * 7919) % 1013) as f32 / 1013.0 - 0.45) * 0.8).collect();
        Tensor::from_vec(values, (n, k), &Device::Cpu).unwrap()
    }

    fn activations(m: usize, k: usize) -> Vec<f32> {
        (0..m * k).map(|i| (((i * 104729) % 997) as f32 / 997.0 - 0.5) * 3.0).collect()
    }

    /// Each format's tiles give the values candle dequantizes from the same blocks, and
    /// the SIMD and portable products equal the exact product of the dequantized weights and
    /// the quantized activations (and candle's 8-bit-activation matmul, within its rounding).
    #[test]
    fn tiles_match_candle_for_every_format() {
        let (n, k, m) = (40, 128, 5);
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&weights(n, k), dtype).unwrap();
            let raw = q.data().unwrap();
            let tiled = TiledMatrix::from_gguf(dtype, &raw, n, k).unwrap();
            let reference = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            let mut row = vec![0f32; k];
            for (r, expected) in reference.iter().enumerate() {
                tiled.row(r, &mut row);
                assert_eq!(&row, expected, "{dtype:?} row {r}");
            }
            let x = activations(m, k);
            let mut a = QuantizedActivations::default();
            a.quantize(&x, m, k);
            let stride = tiled.width();
            let mut ours = vec![0f32; m * stride];
            tiled.matmul(&a, &mut ours, stride);
            let mut portable_out = vec![0f32; m * stride];
            for tile in 0..tiled.tiles {
                portable::tile(tiled.format, tiled.tile(tile), &a, portable_out[tile * TILE_ROWS..].as_mut_ptr(), stride);
            }
            let xs = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
            let candle = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
            let expected = candle_core::Module::forward(&candle, &xs).unwrap().to_vec2::<f32>().unwrap();
            for r in 0..m {
                for c in 0..n {
                    let (e, o, p) = (expected[r][c], ours[r * stride + c], portable_out[r * stride + c]);
                    // The exact product of the dequantized weights and quantized activations.
                    let value = |i: usize| a.q[i] as f64 * a.d[i / BLOCK] as f64 + a.r[i] as f64 * a.d_r[i / BLOCK] as f64;
                    let terms = (0..k).map(|i| reference[c][i] as f64 * value(r * k + i));
                    let (exact, size) = terms.fold((0.0, 0.0), |(s, z), t| (s + t, z + t.abs()));
                    assert!((o as f64 - exact).abs() <= 1e-6 * size, "{dtype:?} [{r},{c}] exact {exact} ours {o}");
                    assert!((p as f64 - exact).abs() <= 1e-6 * size, "{dtype:?} [{r},{c}] exact {exact} portable {p}");
                    // candle quantizes activations to 8 bits (and rounds its Q4_0 path further).
                    assert!((e - o).abs() <= 2e-2 * (1.0 + e.abs()), "{dtype:?} [{r},{c}] candle {e} ours {o}");
                }
                for c in n..stride {
                    assert_eq!(ours[r * stride + c], 0.0, "padding column {c}");
                }
            }
        }
    }

    #[test]
    fn fused_parts_sit_at_tile_offsets() {
        let q = |n| {
            let t = QTensor::quantize(&weights(n, 64), GgmlDType::Q8_0).unwrap();
            TiledMatrix::from_gguf(GgmlDType::Q8_0, &t.data().unwrap(), n, 64).unwrap()
        };
        let fused = TiledMatrix::fuse(vec![q(20), q(16), q(3)]).unwrap();
        assert_eq!(fused.parts(), &[(0, 20), (32, 16), (48, 3)]);
        assert_eq!(fused.width(), 64);
        let q4 = TiledMatrix::from_gguf(
            GgmlDType::Q4_1,
            &QTensor::quantize(&weights(16, 64), GgmlDType::Q4_1).unwrap().data().unwrap(),
            16,
            64,
        )
        .unwrap();
        assert!(TiledMatrix::fuse(vec![q(16), q4]).is_err());
    }
}

//! The tile kernels in plain Rust: the fallback on CPUs without AVX-512 VNNI, and the
//! yardstick the SIMD kernels are tested against. Same integer sums, same per-block f32
//! steps.

use half::f16;

use super::activations::{QuantizedActivations, BLOCK};
use super::tiles::{TileFormat, TILE_ROWS};

fn scale(block: &[u8], at: usize, lane: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[at + lane * 2], block[at + lane * 2 + 1]])).to_f32()
}

/// Writes 16 outputs per activation row: `out[r * stride + 0..16]`.
pub fn tile(format: TileFormat, weights: &[u8], a: &QuantizedActivations, out: *mut f32, stride: usize) {
    let blocks = a.blocks_per_row();
    let block_bytes = format.block_bytes();
    for r in 0..a.rows {
        let mut acc = [0f32; TILE_ROWS];
        for b in 0..blocks {
            let block = &weights[b * block_bytes..][..block_bytes];
            let q = &a.q[(r * blocks + b) * BLOCK..][..BLOCK];
            let rem = &a.r[(r * blocks + b) * BLOCK..][..BLOCK];
            let (da, index) = (a.d[r * blocks + b], r * blocks + b);
            for (lane, acc) in acc.iter_mut().enumerate() {
                let (mut isum, mut rsum) = (0i32, 0i32);
                match format {
                    TileFormat::Q4_1 => {
                        for (i, (&qa, &ra)) in q.iter().zip(rem).enumerate() {
                            let byte = block[(i / 8) * 64 + lane * 4 + i % 4];
                            let qw = if i % 8 < 4 { byte & 0x0F } else { byte >> 4 };
                            isum += qw as i32 * qa as i32;
                            rsum += qw as i32 * ra as i32;
                        }
                        let dw = scale(block, 256, lane);
                        *acc += isum as f32 * (dw * da);
                        *acc += rsum as f32 * (dw * a.d_r[index]);
                        *acc += scale(block, 288, lane) * a.dsum[index];
                    }
                    TileFormat::Q8_0 => {
                        for (i, (&qa, &ra)) in q.iter().zip(rem).enumerate() {
                            let w = block[(i / 4) * 64 + lane * 4 + i % 4] as i32;
                            isum += w * qa as i32;
                            rsum += w * ra as i32;
                        }
                        isum -= 128 * a.sum[index];
                        rsum -= 128 * a.sum_r[index];
                        let dw = scale(block, 512, lane);
                        *acc += isum as f32 * (dw * da);
                        *acc += rsum as f32 * (dw * a.d_r[index]);
                    }
                }
            }
        }
        // SAFETY: the caller hands a pointer with 16 writable floats at each row's start.
        unsafe { std::ptr::copy_nonoverlapping(acc.as_ptr(), out.add(r * stride), TILE_ROWS) };
    }
}

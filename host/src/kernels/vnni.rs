//! The tile kernels with AVX-512 VNNI: one `vpdpbusd` multiplies 64 weight bytes (16 rows
//! × 4 values) by 4 activation bytes broadcast to every lane, so a 32-value block of 16
//! rows takes 8 instructions and no horizontal sums. Up to four activation rows share
//! each weight load (prompt processing); decoding has one. Functions, not closures, carry
//! `#[target_feature]`, so the intrinsics inline.

use std::arch::x86_64::*;

use super::activations::{QuantizedActivations, BLOCK};
use super::tiles::TileFormat;

/// Activation rows that share one pass over a tile's weights.
const ROWS_PER_PASS: usize = 4;

/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI; `weights` is one tile, `out` has 16 writable
/// floats at each activation row's start (`r * stride`).
pub unsafe fn tile(format: TileFormat, weights: &[u8], a: &QuantizedActivations, out: *mut f32, stride: usize) {
    let mut row = 0;
    while row < a.rows {
        let out = out.add(row * stride);
        match (format, a.rows - row) {
            (TileFormat::Q4_1, 1) => q4_1::<1>(weights, a, row, out, stride),
            (TileFormat::Q4_1, 2) => q4_1::<2>(weights, a, row, out, stride),
            (TileFormat::Q4_1, 3) => q4_1::<3>(weights, a, row, out, stride),
            (TileFormat::Q4_1, _) => q4_1::<4>(weights, a, row, out, stride),
            (TileFormat::Q8_0, 1) => q8_0::<1>(weights, a, row, out, stride),
            (TileFormat::Q8_0, 2) => q8_0::<2>(weights, a, row, out, stride),
            (TileFormat::Q8_0, 3) => q8_0::<3>(weights, a, row, out, stride),
            (TileFormat::Q8_0, _) => q8_0::<4>(weights, a, row, out, stride),
        }
        row += ROWS_PER_PASS;
    }
}

#[inline(always)]
unsafe fn broadcast(q: *const i8, group: usize) -> __m512i {
    _mm512_set1_epi32((q.add(group * 4) as *const i32).read_unaligned())
}

/// One 32-value block of 16 rows: `Σ_g operands[g] · bytes 4g..4g+4 of q`, as 16 i32 lanes
/// (two accumulators, so the eight `vpdpbusd` form two dependency chains).
#[inline(always)]
unsafe fn block_dot(operands: &[__m512i; 8], q: *const i8) -> __m512i {
    let mut s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), operands[0], broadcast(q, 0));
    let mut s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), operands[1], broadcast(q, 1));
    for g in (2..8).step_by(2) {
        s0 = _mm512_dpbusd_epi32(s0, operands[g], broadcast(q, g));
        s1 = _mm512_dpbusd_epi32(s1, operands[g + 1], broadcast(q, g + 1));
    }
    _mm512_add_epi32(s0, s1)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q4_1<const R: usize>(w: &[u8], a: &QuantizedActivations, row0: usize, out: *mut f32, stride: usize) {
    let blocks = a.blocks_per_row();
    debug_assert!(w.len() >= blocks * 320);
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..blocks {
        let p = w.as_ptr().add(b * 320);
        // Chunk c's low nibbles are value group 2c, its high nibbles group 2c + 1.
        let mut nibbles = [_mm512_setzero_si512(); 8];
        for c in 0..4 {
            let v = _mm512_loadu_si512(p.add(c * 64) as *const _);
            nibbles[2 * c] = _mm512_and_si512(v, low);
            nibbles[2 * c + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(256) as *const _));
        let m = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(288) as *const _));
        for r in 0..R {
            let index = (row0 + r) * blocks + b;
            let isum = _mm512_cvtepi32_ps(block_dot(&nibbles, a.q.as_ptr().add(index * BLOCK)));
            let rsum = _mm512_cvtepi32_ps(block_dot(&nibbles, a.r.as_ptr().add(index * BLOCK)));
            acc[r] = _mm512_fmadd_ps(isum, _mm512_mul_ps(d, _mm512_set1_ps(*a.d.get_unchecked(index))), acc[r]);
            acc[r] = _mm512_fmadd_ps(rsum, _mm512_mul_ps(d, _mm512_set1_ps(*a.d_r.get_unchecked(index))), acc[r]);
            acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(*a.dsum.get_unchecked(index)), acc[r]);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add(r * stride), *acc);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q8_0<const R: usize>(w: &[u8], a: &QuantizedActivations, row0: usize, out: *mut f32, stride: usize) {
    let blocks = a.blocks_per_row();
    debug_assert!(w.len() >= blocks * 544);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..blocks {
        let p = w.as_ptr().add(b * 544);
        let mut v = [_mm512_setzero_si512(); 8];
        for (g, v) in v.iter_mut().enumerate() {
            *v = _mm512_loadu_si512(p.add(g * 64) as *const _);
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(512) as *const _));
        for r in 0..R {
            let index = (row0 + r) * blocks + b;
            // The weights were stored +128: take 128·Σq_a (and 128·Σr_a) back off.
            let offset = |sum: i32| _mm512_set1_epi32(128 * sum);
            let isum = block_dot(&v, a.q.as_ptr().add(index * BLOCK));
            let isum = _mm512_cvtepi32_ps(_mm512_sub_epi32(isum, offset(*a.sum.get_unchecked(index))));
            let rsum = block_dot(&v, a.r.as_ptr().add(index * BLOCK));
            let rsum = _mm512_cvtepi32_ps(_mm512_sub_epi32(rsum, offset(*a.sum_r.get_unchecked(index))));
            acc[r] = _mm512_fmadd_ps(isum, _mm512_mul_ps(d, _mm512_set1_ps(*a.d.get_unchecked(index))), acc[r]);
            acc[r] = _mm512_fmadd_ps(rsum, _mm512_mul_ps(d, _mm512_set1_ps(*a.d_r.get_unchecked(index))), acc[r]);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add(r * stride), *acc);
    }
}

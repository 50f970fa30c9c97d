//! Lantern's own CPU kernels for quantized language models (and, in [`dense`], the f32
//! linear layers of the encoder models).
//!
//! Why they exist: candle 0.11 picks its quantized dot products at compile time (Q4_1 is
//! scalar in a portable build), works one output row and one 32-value block at a time,
//! and re-quantizes activations per projection. On an AVX-512 VNNI CPU that leaves most
//! of the machine idle (measured in BENCHMARKS.md: 0.22× llama.cpp decode). These kernels
//! keep the GGUF's own numbers (no re-quantisation of weights) and:
//!
//! - repack weights at load into tiles of 16 output rows ([`tiles`]), so one `vpdpbusd`
//!   produces 16 outputs at once and no horizontal sums are needed;
//! - quantize activations once per (fused) projection ([`activations`]), as llama.cpp's
//!   Q8_1/Q8_0 activation blocks;
//! - choose the instruction set at run time (`is_x86_feature_detected!`), so one binary
//!   runs on any x86-64: AVX-512 VNNI where the CPU has it, portable Rust elsewhere;
//! - run on candle's persistent barrier pool ([`parallel`]), the threads candle itself
//!   uses, so the two never compete.
//!
//! The arithmetic is llama.cpp's: for Q4_1 weights `d·q + m` and Q8 activations `d_a·q_a`,
//! a block contributes `d·d_a·Σ q·q_a + m·d_a·Σ q_a`; integer sums are exact, so the SIMD
//! and portable paths differ only in the order f32 partial sums are added
//! (`tests` below compare them).

pub mod activations;
pub mod dense;
pub mod parallel;
pub mod tiles;
mod portable;
#[cfg(target_arch = "x86_64")]
mod vnni;
pub mod vector;

/// Whether this CPU runs the AVX-512 VNNI kernels (checked once).
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::env::var_os("LANTERN_FORCE_PORTABLE_KERNELS").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

//! SplitMix64: a fixed, dependency-free random source for the tiny test checkpoints,
//! so the same seed always writes the same weights.

pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next value, uniform in [0, 1).
    pub fn next_unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

//! f32 vector operations of the decode loop (attention dot products, softmax, SiLU),
//! with AVX-512 where the CPU has it. A portable build of Rust vectorises only to SSE2,
//! and exp/erf come from libm one value at a time.

/// `Σ a·b`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512 F is present.
        return unsafe { x86::dot(a, b) };
    }
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// `y += alpha·x`.
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    debug_assert_eq!(y.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512 F is present.
        return unsafe { x86::axpy(y, alpha, x) };
    }
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

/// `x = exp(x - max)` in place; returns the sum (softmax without the division).
pub fn exp_shifted_sum(x: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512 F is present.
        return unsafe { x86::exp_shifted_sum(x, max) };
    }
    x.iter_mut().fold(0.0, |sum, v| {
        *v = (*v - max).exp();
        sum + *v
    })
}

/// `out = silu(gate) · up`, SwiGLU.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512 F is present.
        return unsafe { x86::silu_mul(gate, up, out) };
    }
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// `out = x / sqrt(mean(x²) + eps) · weight`, the sum of squares in f64 as llama.cpp.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean = x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / x.len() as f64;
    let scale = (1.0 / (mean + eps as f64).sqrt()) as f32;
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx512f") && std::env::var_os("LANTERN_FORCE_PORTABLE_KERNELS").is_none())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len() / 16 * 16;
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 32 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)), s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i + 16)), _mm512_loadu_ps(b.as_ptr().add(i + 16)), s1);
            i += 32;
        }
        if i < n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)), s0);
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
        for j in n..a.len() {
            sum += a[j] * b[j];
        }
        sum
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
        let n = y.len() / 16 * 16;
        let a = _mm512_set1_ps(alpha);
        let mut i = 0;
        while i < n {
            let p = y.as_mut_ptr().add(i);
            _mm512_storeu_ps(p, _mm512_fmadd_ps(a, _mm512_loadu_ps(x.as_ptr().add(i)), _mm512_loadu_ps(p)));
            i += 16;
        }
        for j in n..y.len() {
            y[j] += alpha * x[j];
        }
    }

    /// exp(x) for x ≤ ~88: 2^n · p(r), r = x − n·ln2 in two parts, a degree-6 polynomial
    /// (relative error about 2e-7, as glibc's expf within a couple of ulps).
    #[inline(always)]
    unsafe fn exp(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 120.0));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 24.0));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 6.0));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        _mm512_scalef_ps(p, n)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_shifted_sum(x: &mut [f32], max: f32) -> f32 {
        let n = x.len() / 16 * 16;
        let m = _mm512_set1_ps(max);
        let mut sum = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            let p = x.as_mut_ptr().add(i);
            let e = exp(_mm512_sub_ps(_mm512_loadu_ps(p), m));
            _mm512_storeu_ps(p, e);
            sum = _mm512_add_ps(sum, e);
            i += 16;
        }
        let mut total = _mm512_reduce_add_ps(sum);
        for v in &mut x[n..] {
            *v = (*v - max).exp();
            total += *v;
        }
        total
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let n = out.len() / 16 * 16;
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i < n {
            let g = _mm512_loadu_ps(gate.as_ptr().add(i));
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
            _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(silu, _mm512_loadu_ps(up.as_ptr().add(i))));
            i += 16;
        }
        for j in n..out.len() {
            out[j] = gate[j] / (1.0 + (-gate[j]).exp()) * up[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_ops_match_scalar_math() {
        let a: Vec<f32> = (0..70).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let b: Vec<f32> = (0..70).map(|i| (i as f32 * 0.11).cos()).collect();
        let expected: f64 = a.iter().zip(&b).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((dot(&a, &b) as f64 - expected).abs() < 1e-4);
        let mut e = a.clone();
        let sum = exp_shifted_sum(&mut e, 4.0);
        let mut total = 0.0;
        for (e, a) in e.iter().zip(&a) {
            let exact = ((*a - 4.0) as f64).exp();
            assert!((*e as f64 - exact).abs() <= 1e-6 * exact, "{a}: {e} vs {exact}");
            total += exact;
        }
        assert!((sum as f64 - total).abs() < 1e-5 * total);
        let mut out = vec![0f32; 70];
        silu_mul(&a, &b, &mut out);
        for i in 0..70 {
            let g = a[i] as f64;
            let exact = g / (1.0 + (-g).exp()) * b[i] as f64;
            assert!((out[i] as f64 - exact).abs() < 1e-5 * (1.0 + exact.abs()), "{i}");
        }
        let mut y = b.clone();
        axpy(&mut y, 0.5, &a);
        assert!((y[33] - (b[33] + 0.5 * a[33])).abs() < 1e-6);
    }
}

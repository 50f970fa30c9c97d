//! f32 vector operations of the forward passes (attention dot products, softmax, SiLU,
//! GELU, normalisation), with AVX-512 where the CPU has it. A portable build of Rust vectorises only to SSE2,
//! and exp/erf come from libm one value at a time.

use half::f16;

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

/// `Σ a·b` with `b` in f16 (a KV cache row).
pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512 F is present.
        return unsafe { x86::dot_f16(a, b) };
    }
    a.iter().zip(b).map(|(a, b)| a * b.to_f32()).sum()
}

/// `y += alpha·x` with `x` in f16 (a KV cache row).
pub fn axpy_f16(y: &mut [f32], alpha: f32, x: &[f16]) {
    debug_assert_eq!(y.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512 F is present.
        return unsafe { x86::axpy_f16(y, alpha, x) };
    }
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x.to_f32());
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

/// Exact GELU in place: `x·½(1 + erf(x/√2))`, erf as [`erf`] (Eigen's and TensorFlow's
/// rational approximation), so the SIMD and portable paths compute the same formula.
pub fn gelu_erf(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512 F is present.
        return unsafe { x86::gelu_erf(x) };
    }
    x.iter_mut().for_each(|v| *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2)));
}

/// GELU's tanh approximation in place (`gelu_new`); scalar: no model on a hot path uses it.
pub fn gelu_tanh(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    x.iter_mut().for_each(|v| *v = 0.5 * *v * (1.0 + (SQRT_2_OVER_PI * (*v + 0.044_715 * *v * *v * *v)).tanh()));
}

/// Numerator (odd) and denominator (even) coefficients of erf on [-4, 4], lowest power first.
const ERF_P: [f32; 7] = [
    -1.609_603_3e-2,
    -2.954_600e-3,
    -7.349_906e-4,
    -5.692_506_4e-5,
    -2.101_024e-6,
    2.770_681_4e-8,
    -2.726_142_3e-10,
];
const ERF_Q: [f32; 5] = [-1.426_473_9e-2, -7.373_329e-3, -1.682_827e-3, -2.133_740_6e-4, -1.456_607_2e-5];

/// erf(x) to within a few ulp: a degree-13/8 rational function on [-4, 4] (beyond that,
/// erf is ±1 in f32).
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ERF_P.iter().rev().fold(0.0, |acc, c| acc * x2 + c) * x;
    let q = ERF_Q.iter().rev().fold(0.0, |acc, c| acc * x2 + c);
    p / q
}

/// LayerNorm of one row in place: `(x − mean)/sqrt(var + eps)·weight + bias`, mean and
/// variance in two passes (one pass loses digits when the mean is large).
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    debug_assert!(x.len() == weight.len() && x.len() == bias.len());
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let variance = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let scale = 1.0 / (variance + eps).sqrt();
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512 F is present.
        return unsafe { x86::scale_shift(x, mean, scale, weight, bias) };
    }
    for ((v, w), b) in x.iter_mut().zip(weight).zip(bias) {
        *v = (*v - mean) * scale * w + b;
    }
}

fn sum(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512 F is present.
        return unsafe { x86::sum(x) };
    }
    x.iter().sum()
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx512f") && std::env::var_os("LANTERN_FORCE_PORTABLE_KERNELS").is_none())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
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

    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
        let n = a.len() / 16 * 16;
        let mut s = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            let wide = _mm512_cvtph_ps(_mm256_loadu_si256(b.as_ptr().add(i).cast()));
            s = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), wide, s);
            i += 16;
        }
        let mut sum = _mm512_reduce_add_ps(s);
        for j in n..a.len() {
            sum += a[j] * b[j].to_f32();
        }
        sum
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn axpy_f16(y: &mut [f32], alpha: f32, x: &[f16]) {
        let n = y.len() / 16 * 16;
        let a = _mm512_set1_ps(alpha);
        let mut i = 0;
        while i < n {
            let p = y.as_mut_ptr().add(i);
            let wide = _mm512_cvtph_ps(_mm256_loadu_si256(x.as_ptr().add(i).cast()));
            _mm512_storeu_ps(p, _mm512_fmadd_ps(a, wide, _mm512_loadu_ps(p)));
            i += 16;
        }
        for j in n..y.len() {
            y[j] += alpha * x[j].to_f32();
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
    pub unsafe fn gelu_erf(x: &mut [f32]) {
        use super::{ERF_P, ERF_Q};
        let n = x.len() / 16 * 16;
        let (half, one) = (_mm512_set1_ps(0.5), _mm512_set1_ps(1.0));
        let (low, high) = (_mm512_set1_ps(-4.0), _mm512_set1_ps(4.0));
        let mut i = 0;
        while i < n {
            let ptr = x.as_mut_ptr().add(i);
            let v = _mm512_loadu_ps(ptr);
            let z = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2)), low), high);
            let z2 = _mm512_mul_ps(z, z);
            let mut p = _mm512_set1_ps(ERF_P[6]);
            for c in ERF_P[..6].iter().rev() {
                p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(*c));
            }
            let mut q = _mm512_set1_ps(ERF_Q[4]);
            for c in ERF_Q[..4].iter().rev() {
                q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(*c));
            }
            let erf = _mm512_div_ps(_mm512_mul_ps(p, z), q);
            _mm512_storeu_ps(ptr, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, erf)));
            i += 16;
        }
        for v in &mut x[n..] {
            *v = 0.5 * *v * (1.0 + super::erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn sum(x: &[f32]) -> f32 {
        let n = x.len() / 16 * 16;
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            acc = _mm512_add_ps(acc, _mm512_loadu_ps(x.as_ptr().add(i)));
            i += 16;
        }
        _mm512_reduce_add_ps(acc) + x[n..].iter().sum::<f32>()
    }

    /// `x = (x − mean)·scale·weight + bias`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn scale_shift(x: &mut [f32], mean: f32, scale: f32, weight: &[f32], bias: &[f32]) {
        let n = x.len() / 16 * 16;
        let (m, s) = (_mm512_set1_ps(mean), _mm512_set1_ps(scale));
        let mut i = 0;
        while i < n {
            let ptr = x.as_mut_ptr().add(i);
            let centred = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(ptr), m), s);
            let out = _mm512_fmadd_ps(centred, _mm512_loadu_ps(weight.as_ptr().add(i)), _mm512_loadu_ps(bias.as_ptr().add(i)));
            _mm512_storeu_ps(ptr, out);
            i += 16;
        }
        for j in n..x.len() {
            x[j] = (x[j] - mean) * scale * weight[j] + bias[j];
        }
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

    /// erf in f64 by its Taylor series (|x| ≤ 3) or continued fraction, for checking.
    fn erf_f64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) ≈ e^{-x²}/(x√π)·(1 − 1/(2x²) + 3/(4x⁴)), ample at |x| > 3 for f32 checks.
            let t = (-x * x).exp() / (x.abs() * std::f64::consts::PI.sqrt()) * (1.0 - 0.5 / (x * x) + 0.75 / x.powi(4));
            return x.signum() * (1.0 - t);
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_a_few_ulp() {
        for i in -600..=600 {
            let x = i as f32 * 0.01;
            let exact = erf_f64(x as f64);
            assert!((erf(x) as f64 - exact).abs() < 5e-7, "erf({x}) = {}, not {exact}", erf(x));
        }
    }

    #[test]
    fn f16_rows_widen_exactly_in_dot_and_axpy() {
        // 70 values: four 16-lane blocks and a scalar tail.
        let a: Vec<f32> = (0..70).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let b: Vec<f16> = (0..70).map(|i| f16::from_f32((i as f32 * 0.11).cos())).collect();
        let widened: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
        let expected: f64 = a.iter().zip(&widened).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((dot_f16(&a, &b) as f64 - expected).abs() < 1e-4);
        let (mut y, mut reference) = (a.clone(), a.clone());
        axpy_f16(&mut y, 0.75, &b);
        axpy(&mut reference, 0.75, &widened);
        assert_eq!(y, reference);
    }

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
        let mut gelu = a.clone();
        gelu_erf(&mut gelu);
        for (g, a) in gelu.iter().zip(&a) {
            let x = *a as f64;
            let exact = 0.5 * x * (1.0 + erf_f64(x / std::f64::consts::SQRT_2));
            assert!((*g as f64 - exact).abs() < 2e-6 * (1.0 + exact.abs()), "gelu({a}) = {g}, not {exact}");
        }
        let (weight, bias): (Vec<f32>, Vec<f32>) = (0..70).map(|i| (1.0 + i as f32 * 0.01, i as f32 * -0.02)).unzip();
        let mut normed: Vec<f32> = a.iter().map(|v| v + 1000.0).collect();
        layer_norm(&mut normed, &weight, &bias, 1e-12);
        let mean = a.iter().map(|v| *v as f64).sum::<f64>() / 70.0;
        let var = a.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / 70.0;
        for i in 0..70 {
            let exact = (a[i] as f64 - mean) / var.sqrt() * weight[i] as f64 + bias[i] as f64;
            // The +1000 offset costs f32 digits of the input itself (ulp 6e-5), not of the norm.
            assert!((normed[i] as f64 - exact).abs() < 1e-3, "{i}: {} vs {exact}", normed[i]);
        }
        let mut y = b.clone();
        axpy(&mut y, 0.5, &a);
        assert!((y[33] - (b[33] + 0.5 * a[33])).abs() < 1e-6);
    }
}

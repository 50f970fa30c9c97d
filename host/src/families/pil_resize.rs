//! Pillow's `Image.resize` for 8-bit RGB (libImaging/Resample.c), reproduced exactly:
//! a horizontal then a vertical convolution pass, the filter widened by the scale when
//! downscaling, weights normalised then turned into 22-bit fixed point, each pass rounded
//! and clipped to 8 bits. transformers' CLIP image processors resize with Pillow, and
//! the `image` crate's resize (same kernels) keeps the first pass in floats, which near
//! sharp edges puts pixels up to ~13 levels away from Pillow's; with this they are equal.

use image::RgbImage;

/// The Pillow filters CLIP-style preprocessors use (`resample` 2, 3 and 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    Bilinear,
    Bicubic,
    Lanczos,
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

impl PilFilter {
    fn support(self) -> f64 {
        match self {
            PilFilter::Bilinear => 1.0,
            PilFilter::Bicubic => 2.0,
            PilFilter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            PilFilter::Bilinear => (1.0 - x).max(0.0),
            PilFilter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            PilFilter::Lanczos => {
                let sinc = |x: f64| if x == 0.0 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
                if x < 3.0 {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// For each output index: the first input index and the fixed-point weights from it.
struct Coefficients {
    taps: Vec<(usize, Vec<i32>)>,
}

/// Pillow's `precompute_coeffs` then `normalize_coeffs_8bpc`, for the whole input.
fn coefficients(in_size: usize, out_size: usize, filter: PilFilter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let taps = (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filter_scale;
            // C's (int) truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (xmin..xmax).map(|x| filter.weight((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let scaled = w * (1u32 << PRECISION_BITS) as f64;
                    (if scaled < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect();
    Coefficients { taps }
}

fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass along x (`horizontal`) or y, over every pixel of the output of that pass.
fn pass(input: &RgbImage, out_width: u32, out_height: u32, horizontal: bool, filter: PilFilter) -> RgbImage {
    let (in_size, out_size) =
        if horizontal { (input.width(), out_width) } else { (input.height(), out_height) };
    let coefficients = coefficients(in_size as usize, out_size as usize, filter);
    RgbImage::from_fn(out_width, out_height, |x, y| {
        let (start, weights) = &coefficients.taps[if horizontal { x } else { y } as usize];
        let mut sums = [1i32 << (PRECISION_BITS - 1); 3];
        for (offset, weight) in weights.iter().enumerate() {
            let at = (*start + offset) as u32;
            let pixel = if horizontal { input.get_pixel(at, y) } else { input.get_pixel(x, at) };
            for channel in 0..3 {
                sums[channel] += pixel[channel] as i32 * weight;
            }
        }
        image::Rgb(sums.map(clip8))
    })
}

/// `image.resize((width, height), filter)` as Pillow does it (no `reducing_gap`).
pub fn resize(image: &RgbImage, width: u32, height: u32, filter: PilFilter) -> RgbImage {
    let mut out = image.clone();
    if width != image.width() {
        out = pass(&out, width, out.height(), true, filter);
    }
    if height != image.height() {
        out = pass(&out, width, height, false, filter);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_each_output_sum_to_one_in_fixed_point() {
        for (from, to) in [(48, 38), (20, 32), (336, 224), (7, 300)] {
            for filter in [PilFilter::Bilinear, PilFilter::Bicubic, PilFilter::Lanczos] {
                for (_, weights) in coefficients(from, to, filter).taps {
                    let sum: i32 = weights.iter().sum();
                    assert!((sum - (1 << PRECISION_BITS)).abs() <= weights.len() as i32, "{from}->{to} {filter:?}: {sum}");
                }
            }
        }
    }

    #[test]
    fn the_same_size_is_the_same_image() {
        let image = RgbImage::from_fn(9, 7, |x, y| image::Rgb([(x * 20) as u8, (y * 30) as u8, ((x * y) % 256) as u8]));
        assert_eq!(resize(&image, 9, 7, PilFilter::Bicubic), image);
    }
}

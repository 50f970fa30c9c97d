//! Pillow's `Image.resize` for 8-bit RGB (libImaging/Resample.c), reproduced exactly:
//! a horizontal then a vertical convolution pass, the filter widened by the scale when
//! downscaling, weights normalised then turned into 22-bit fixed point, each pass rounded
//! and clipped to 8 bits. transformers' CLIP image processors resize with Pillow, and
//! the `image` crate's resize (same kernels) keeps the first pass in floats, which near
//! sharp edges puts pixels up to ~13 levels away from Pillow's; with this they are equal
//! (Pillow 13.0's wheel orders the passes differently for some tall images, where a
//! few pixels still differ).

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

/// One output pixel of a pass: the weighted sum of `read(start + offset)`.
fn convolve(taps: &(usize, Vec<i32>), read: impl Fn(u32) -> image::Rgb<u8>) -> image::Rgb<u8> {
    let (start, weights) = taps;
    let mut sums = [1i32 << (PRECISION_BITS - 1); 3];
    for (offset, weight) in weights.iter().enumerate() {
        let pixel = read((*start + offset) as u32);
        for channel in 0..3 {
            sums[channel] += pixel[channel] as i32 * weight;
        }
    }
    image::Rgb(sums.map(clip8))
}

/// Where a resized image is cut: `(left, top, width, height)` in the resized image.
pub type Region = (u32, u32, u32, u32);

/// `image.resize((width, height), filter).crop(region)` as Pillow computes it (no
/// `reducing_gap`), computing only the pixels inside `region`: every output pixel of a
/// pass depends only on its own taps, so the region comes out the same as when cut from
/// the whole resized image, and a very long thin picture costs no more than the crop.
pub fn resize_region(image: &RgbImage, width: u32, height: u32, region: Region, filter: PilFilter) -> RgbImage {
    let (left, top, crop_width, crop_height) = region;
    let horizontal = (width != image.width()).then(|| coefficients(image.width() as usize, width as usize, filter));
    let vertical = (height != image.height()).then(|| coefficients(image.height() as usize, height as usize, filter));
    let rows = top as usize..(top + crop_height) as usize;
    // The source rows the vertical pass reads for the region's rows.
    let (first, last) = match &vertical {
        Some(v) => (
            rows.clone().map(|y| v.taps[y].0).min().unwrap_or(0),
            rows.clone().map(|y| v.taps[y].0 + v.taps[y].1.len()).max().unwrap_or(0),
        ),
        None => (rows.start, rows.end),
    };
    let middle = RgbImage::from_fn(crop_width, (last - first) as u32, |x, y| {
        let row = first as u32 + y;
        match &horizontal {
            Some(h) => convolve(&h.taps[(left + x) as usize], |at| *image.get_pixel(at, row)),
            None => *image.get_pixel(left + x, row),
        }
    });
    RgbImage::from_fn(crop_width, crop_height, |x, y| match &vertical {
        Some(v) => convolve(&v.taps[(top + y) as usize], |at| *middle.get_pixel(x, at - first as u32)),
        None => *middle.get_pixel(x, top + y - first as u32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `image.resize((width, height), filter)` as Pillow does it.
    fn resize(image: &RgbImage, width: u32, height: u32, filter: PilFilter) -> RgbImage {
        resize_region(image, width, height, (0, 0, width, height), filter)
    }

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

    #[test]
    fn a_region_is_the_same_as_cut_from_the_whole() {
        let image = RgbImage::from_fn(23, 41, |x, y| image::Rgb([(x * 11) as u8, (y * 6) as u8, ((x * 7 + y * 13) % 256) as u8]));
        for (width, height, region) in [(16, 30, (2, 7, 12, 12)), (40, 70, (0, 13, 40, 40)), (23, 30, (5, 0, 10, 30))] {
            let whole = resize(&image, width, height, PilFilter::Bicubic);
            let cut = image::imageops::crop_imm(&whole, region.0, region.1, region.2, region.3).to_image();
            assert_eq!(resize_region(&image, width, height, region, PilFilter::Bicubic), cut);
        }
    }
}

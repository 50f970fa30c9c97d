//! Image bytes in and out: decoding what plugins send (PNG or JPEG) under limits, and
//! encoding what diffusion models make as PNG.
//!
//! Decoding runs on worker threads (the registry calls it there). A hostile image must
//! cost nothing: the format is sniffed from the bytes, dimensions are checked from the
//! header before any pixel buffer is allocated, and the decoder's own allocation limit
//! stops a decompression bomb.

use image::{ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{LanternError, LanternResult};

/// How large an image the host agrees to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels along either side.
    pub max_side: u32,
    /// Most bytes the decoder may allocate for one image.
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_side: 8192, max_alloc_bytes: 512 << 20 }
    }
}

/// Decodes PNG or JPEG bytes to RGB. Anything else, a truncated file, or an image over
/// `limits` is `InvalidInput` (over the limits: `LimitExceeded`).
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> LanternResult<RgbImage> {
    let format = image::guess_format(bytes)
        .map_err(|_| LanternError::InvalidInput("the bytes are not an image (expected PNG or JPEG)".into()))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(LanternError::InvalidInput(format!("{format:?} images are not accepted; send PNG or JPEG")));
    }
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(decoder_limits);
    let decoded = reader.decode().map_err(|error| match error {
        image::ImageError::Limits(limit) => LanternError::LimitExceeded(format!(
            "the image is too large to decode ({limit}); the host decodes at most {0}x{0} pixels",
            limits.max_side
        )),
        other => LanternError::InvalidInput(format!("the {format:?} image could not be decoded: {other}")),
    })?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(LanternError::InvalidInput("the image has no pixels".into()));
    }
    Ok(decoded.to_rgb8())
}

/// Encodes 8-bit RGB pixels (row-major, `width * height * 3` bytes) as PNG.
pub fn encode_png(width: u32, height: u32, rgb: Vec<u8>) -> LanternResult<Vec<u8>> {
    let image = RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| LanternError::inference("encoding the PNG", "pixel buffer does not match the size"))?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| LanternError::inference("encoding the PNG", e))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        encode_png(width, height, vec![7; (width * height * 3) as usize]).unwrap()
    }

    #[test]
    fn round_trips_png() {
        let image = decode(&png(5, 3), DecodeLimits::default()).unwrap();
        assert_eq!((image.width(), image.height()), (5, 3));
        assert!(image.pixels().all(|p| p.0 == [7, 7, 7]));
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        assert!(matches!(decode(b"hello, world", DecodeLimits::default()), Err(LanternError::InvalidInput(_))));
        assert!(matches!(decode(b"", DecodeLimits::default()), Err(LanternError::InvalidInput(_))));
    }

    #[test]
    fn refuses_a_truncated_png() {
        let bytes = png(64, 64);
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(decode(cut, DecodeLimits::default()), Err(LanternError::InvalidInput(_))));
    }

    #[test]
    fn refuses_an_image_over_the_limits_before_decoding_it() {
        let limits = DecodeLimits { max_side: 32, ..DecodeLimits::default() };
        assert!(matches!(decode(&png(64, 8), limits), Err(LanternError::LimitExceeded(_))));
    }

    /// A PNG header claiming 60000x60000 pixels (a 10 GB buffer) over a few bytes of data:
    /// refused from the header, nothing allocated.
    #[test]
    fn refuses_a_decompression_bomb() {
        let mut bytes = png(1, 1);
        // IHDR width and height live at bytes 16..24; the CRC no longer matches, which
        // the size check must not depend on.
        bytes[16..20].copy_from_slice(&60000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&60000u32.to_be_bytes());
        let result = decode(&bytes, DecodeLimits::default());
        assert!(matches!(result, Err(LanternError::LimitExceeded(_)) | Err(LanternError::InvalidInput(_))), "{result:?}");
    }
}

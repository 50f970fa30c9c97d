//! Images in: CLIP embeddings of images and texts, and questions about an image.

use crate::bindings::lantern::ai::vision as wit;
use crate::generation::{Generation, Sampling};
use crate::Error;

/// L2-normalised vectors of encoded images (PNG or JPEG bytes).
pub fn embed_images(model: &str, images: &[Vec<u8>]) -> Result<Vec<Vec<f32>>, Error> {
    Ok(wit::embed_images(model, images)?)
}

/// L2-normalised vectors of texts, in the same space as [`embed_images`] of the same model.
pub fn embed_texts(model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
    Ok(wit::embed_texts(model, texts)?)
}

/// Dot product of two L2-normalised vectors: their cosine similarity.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Asks a vision-language model about an image; the answer streams like a generation.
pub fn ask(model: &str, image: &[u8], question: &str, params: &Sampling) -> Result<Generation, Error> {
    Ok(Generation::from_stream(wit::ask(model, image, question, params)?))
}

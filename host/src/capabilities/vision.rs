//! Images in: CLIP-style paired embeddings and vision-language answers.

use image::RgbImage;

use super::{GenerationSink, Generated, SamplingParams};
use crate::error::LanternResult;

/// A loaded CLIP-style model: an image tower and a text tower in one space.
/// Vectors are L2-normalised. Calls block (worker threads).
pub trait ImageEmbedder: Send + Sync {
    /// Width of the shared space.
    fn dimensions(&self) -> usize;
    /// Embeds decoded images (the model does its own resizing, cropping and normalising).
    fn embed_images(&self, images: &[RgbImage]) -> LanternResult<Vec<Vec<f32>>>;
    /// Embeds texts with the text tower. A text longer than the tower takes is cut,
    /// as CLIP's own processor does.
    fn embed_texts(&self, texts: &[String]) -> LanternResult<Vec<Vec<f32>>>;
}

/// An image and a question, preprocessed and tokenized, ready to answer.
pub struct VisionPrompt {
    /// The prompt's token ids, the image's place marked by the model's image token.
    pub ids: Vec<u32>,
    /// The preprocessed image, as the vision tower takes it.
    pub pixels: candle_core::Tensor,
    /// The original image size (width, height).
    pub image_size: (u32, u32),
}

/// A loaded vision-language model (LLaVA). Calls block (worker threads).
pub trait VisionLanguageModel: Send + Sync {
    /// Preprocesses the image and builds the prompt around the question; a question
    /// that leaves no room to answer is `InvalidInput`.
    fn prepare(&self, image: &RgbImage, question: &str) -> LanternResult<VisionPrompt>;
    /// Answers, streaming into `sink` exactly as a text generation does (ending with
    /// `Finished`).
    fn generate(&self, prompt: &VisionPrompt, params: &SamplingParams, sink: &mut dyn GenerationSink) -> LanternResult<Generated>;
}

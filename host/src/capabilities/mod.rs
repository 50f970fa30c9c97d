//! The capability traits that the runtime calls and that model families implement.
//!
//! Families run synchronously on worker threads (never on the async runtime); the
//! [`crate::registry::ModelRegistry`] is what moves their work off the runtime.

mod embedding;
mod generation;
mod image;
mod vision;

pub use embedding::{EmbedRequest, EmbedTask, Embeddings, TextEmbedder};
pub use generation::{
    ChatMessage, ChatRole, FinishReason, Generated, GenerationEvent, GenerationSink, PreparedPrompt, PromptInput, SamplingParams,
    TextGenerator, Usage,
};
pub use image::{GeneratedImage, ImageGenerator, ImageModelLimits, ImageOptions, ImageRequest, ImageSink};
pub use vision::{ImageEmbedder, VisionLanguageModel, VisionPrompt};

/// What a catalog model can do (mirrors the WIT `capability` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    TextEmbedding,
    TextGeneration,
    TextToImage,
    ImageEmbedding,
    VisionLanguage,
}

impl Capability {
    /// The capability as the WIT `capability` enum spells it (`text-embedding`, ...).
    pub fn wit_name(self) -> &'static str {
        match self {
            Capability::TextEmbedding => "text-embedding",
            Capability::TextGeneration => "text-generation",
            Capability::TextToImage => "text-to-image",
            Capability::ImageEmbedding => "image-embedding",
            Capability::VisionLanguage => "vision-language",
        }
    }

    /// The capability named as in WIT.
    pub fn from_name(name: &str) -> Option<Capability> {
        [
            Capability::TextEmbedding,
            Capability::TextGeneration,
            Capability::TextToImage,
            Capability::ImageEmbedding,
            Capability::VisionLanguage,
        ]
        .into_iter()
        .find(|c| c.wit_name() == name)
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Capability::TextEmbedding => "text embedding",
            Capability::TextGeneration => "text generation",
            Capability::TextToImage => "text to image",
            Capability::ImageEmbedding => "image embedding",
            Capability::VisionLanguage => "vision-language",
        })
    }
}

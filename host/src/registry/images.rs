//! The image capabilities of the registry: text to image (streamed steps), CLIP image
//! and text embeddings, and vision-language answers (streamed like text generation).
//! Image bytes are decoded on worker threads, under the caller's decoding limits.

use std::sync::Arc;

use super::{run_blocking, Activity, ActiveGuard, ModelRegistry, PrepareSink, GENERATION_AHEAD};
use crate::capabilities::{
    Capability, GeneratedImage, GenerationEvent, ImageEmbedder, ImageGenerator, ImageRequest, ImageSink, SamplingParams,
    VisionLanguageModel,
};
use crate::error::{LanternError, LanternResult};
use crate::families;
use crate::image_codec::{self, DecodeLimits};
use crate::streaming::{EventSender, EventStream};

/// What an image generation streams: one `Step` per denoising step, then `Done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageEvent {
    Step { step: u32, total: u32 },
    Done(GeneratedImage),
}

/// Sends a generation's steps into its stream and to the host's observer.
struct StepSink<'a> {
    sender: &'a EventSender<ImageEvent>,
    registry: &'a ModelRegistry,
    model: &'a str,
}

impl ImageSink for StepSink<'_> {
    fn step(&mut self, step: u32, total: u32) -> bool {
        self.registry.observe(Activity::ImageStep { model: self.model.to_string(), step, total });
        self.sender.send_blocking(Ok(ImageEvent::Step { step, total }))
    }

    fn keep_going(&self) -> bool {
        !self.sender.is_cancelled()
    }
}

/// Decodes every image on a worker thread; the first bad one is the error, naming its index.
async fn decode_all(images: Vec<Vec<u8>>, limits: DecodeLimits) -> LanternResult<Vec<image::RgbImage>> {
    run_blocking("decoding images", move || {
        images
            .iter()
            .enumerate()
            .map(|(index, bytes)| {
                image_codec::decode(bytes, limits).map_err(|error| match error {
                    LanternError::InvalidInput(m) => LanternError::InvalidInput(format!("image {index}: {m}")),
                    LanternError::LimitExceeded(m) => LanternError::LimitExceeded(format!("image {index}: {m}")),
                    other => other,
                })
            })
            .collect()
    })
    .await
}

impl ModelRegistry {
    /// The loaded text-to-image model for `key`: downloaded and loaded on first use.
    pub async fn image_generator(&self, key: &str, sink: Option<PrepareSink>) -> LanternResult<Arc<dyn ImageGenerator>> {
        let load = families::load_image_generator;
        let (model, loaded_now) = self.load_shared(&self.image_generators, key, Capability::TextToImage, sink, load, |m, _| m).await?;
        self.account(key, loaded_now);
        Ok(model)
    }

    /// The loaded CLIP-style model for `key`.
    pub async fn image_embedder(&self, key: &str, sink: Option<PrepareSink>) -> LanternResult<Arc<dyn ImageEmbedder>> {
        let load = families::load_image_embedder;
        let (model, loaded_now) = self.load_shared(&self.image_embedders, key, Capability::ImageEmbedding, sink, load, |m, _| m).await?;
        self.account(key, loaded_now);
        Ok(model)
    }

    /// The loaded vision-language model for `key`.
    pub async fn vision_model(&self, key: &str, sink: Option<PrepareSink>) -> LanternResult<Arc<dyn VisionLanguageModel>> {
        let load = families::load_vision_language;
        let (model, loaded_now) = self.load_shared(&self.vision_models, key, Capability::VisionLanguage, sink, load, |m, _| m).await?;
        self.account(key, loaded_now);
        Ok(model)
    }

    /// Starts generating an image with `key` from a request already checked against the
    /// model's limits (see `ImageRequest::resolve`). The steps stream from a worker thread
    /// of its own, which stops within a step once the returned stream is dropped.
    pub fn generate_image(self: &Arc<Self>, key: &str, model: Arc<dyn ImageGenerator>, request: ImageRequest) -> EventStream<ImageEvent> {
        let (sender, stream) = EventStream::channel(GENERATION_AHEAD);
        let registry = self.clone();
        let key = key.to_string();
        let active = ActiveGuard::enter(&self.active_generations);
        tokio::task::spawn_blocking(move || {
            let _active = active;
            let mut sink = StepSink { sender: &sender, registry: &registry, model: &key };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.generate(&request, &mut sink)));
            registry.observe(Activity::ImageFinished { model: key.clone() });
            let event = match outcome {
                Ok(Ok(image)) => Ok(ImageEvent::Done(image)),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(LanternError::InferenceFailed(format!("{key}: the image generation panicked"))),
            };
            sender.send_blocking(event);
        });
        stream
    }

    /// Embeds encoded images (PNG or JPEG) with the CLIP-style model `key`.
    pub async fn embed_images(&self, key: &str, images: Vec<Vec<u8>>, limits: DecodeLimits) -> LanternResult<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Err(LanternError::InvalidInput("no images to embed".into()));
        }
        self.resolve_entry(key, Some(Capability::ImageEmbedding)).await?;
        // Bad bytes are refused before anything is downloaded or loaded.
        let decoded = decode_all(images, limits).await?;
        let model = self.image_embedder(key, None).await?;
        run_blocking("embedding images", move || model.embed_images(&decoded)).await
    }

    /// Embeds texts with the text tower of the CLIP-style model `key`.
    pub async fn embed_image_texts(&self, key: &str, texts: Vec<String>) -> LanternResult<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Err(LanternError::InvalidInput("no texts to embed".into()));
        }
        if let Some(index) = texts.iter().position(|s| s.trim().is_empty()) {
            return Err(LanternError::InvalidInput(format!("text {index} is empty")));
        }
        let model = self.image_embedder(key, None).await?;
        run_blocking("embedding texts", move || model.embed_texts(&texts)).await
    }

    /// Asks the vision-language model `key` about an image. Errors known before the first
    /// token (bad image bytes, a question too long) are returned here; the answer then
    /// streams from a worker thread that stops when the stream is dropped.
    pub async fn ask(
        &self,
        key: &str,
        image: Vec<u8>,
        question: String,
        params: SamplingParams,
        limits: DecodeLimits,
    ) -> LanternResult<EventStream<GenerationEvent>> {
        if question.trim().is_empty() {
            return Err(LanternError::InvalidInput("the question is empty".into()));
        }
        self.resolve_entry(key, Some(Capability::VisionLanguage)).await?;
        let mut decoded = decode_all(vec![image], limits).await?;
        let model = self.vision_model(key, None).await?;
        let picture = decoded.pop().expect("one image in, one out");
        let preparing = model.clone();
        let prompt = run_blocking("preparing the image and question", move || preparing.prepare(&picture, &question)).await?;
        Ok(self.stream_text(key, move |sink| model.generate(&prompt, &params, sink)))
    }
}

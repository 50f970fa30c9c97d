//! `lantern:ai/images` and `lantern:ai/vision`: policy checks, type translation, then
//! the registry. Image bytes are checked for count and size here and decoded on worker
//! threads by the registry; generated images stream their steps.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::bindings::lantern::ai::generation::Sampling;
use super::bindings::lantern::ai::images::{self, Image, ImageEvent, ImageParams, StepProgress};
use super::bindings::lantern::ai::vision;
use super::bindings::WitError;
use super::host_generation::sampling_params;
use super::state::PluginState;
use super::streams::{GenerationStream, ImageStream};
use crate::capabilities::{ImageOptions, ImageRequest};
use crate::error::{LanternError, LanternResult};
use crate::policy::Policy;
use crate::registry::{ImageEvent as HostImageEvent, ModelRegistry};

fn options(params: ImageParams) -> ImageOptions {
    ImageOptions {
        width: params.width,
        height: params.height,
        steps: params.steps,
        guidance_scale: params.guidance_scale,
        negative_prompt: params.negative_prompt,
        seed: params.seed,
        truncate: params.truncate,
    }
}

/// Owns what it needs, so the future is `Send` (the store's state is not `Sync`).
async fn start_image(
    policy: Arc<Policy>,
    registry: Arc<ModelRegistry>,
    model: String,
    prompt: String,
    params: ImageParams,
) -> LanternResult<ImageStream> {
    policy.check_model(&model)?;
    if prompt.len() > policy.max_input_bytes {
        return Err(LanternError::LimitExceeded(format!(
            "the prompt is {} bytes; the limit is {}",
            prompt.len(),
            policy.max_input_bytes
        )));
    }
    let options = options(params);
    // Policy limits on what was asked, before the model is even loaded.
    policy.check_image_request(options.width.unwrap_or(0), options.height.unwrap_or(0), options.steps.unwrap_or(0))?;
    let generator = registry.image_generator(&model, None).await?;
    let request = ImageRequest::resolve(&prompt, &options, &generator.limits())?;
    // And on what the model's defaults made of it.
    policy.check_image_request(request.width, request.height, request.steps)?;
    Ok(registry.generate_image(&model, generator, request))
}

fn image_event(event: HostImageEvent) -> ImageEvent {
    match event {
        HostImageEvent::Step { step, total } => ImageEvent::Step(StepProgress { step, total }),
        HostImageEvent::Done(image) => ImageEvent::Done(Image {
            png: image.png,
            width: image.width,
            height: image.height,
            seed: image.seed,
            truncated_tokens: image.truncated_tokens,
        }),
    }
}

impl PluginState {
    /// The typed refusal when the plugin already holds as many streams as policy allows.
    fn check_open_streams(&self) -> LanternResult<()> {
        if self.open_generations >= self.policy.max_open_generations {
            let limit = self.policy.max_open_generations;
            return Err(LanternError::LimitExceeded(format!("{limit} generations are open; drop one first")));
        }
        Ok(())
    }
}

impl images::Host for PluginState {
    async fn generate(
        &mut self,
        model: String,
        prompt: String,
        params: ImageParams,
    ) -> wasmtime::Result<Result<Resource<ImageStream>, WitError>> {
        if let Err(error) = self.check_open_streams() {
            return Ok(Err(error.into()));
        }
        match start_image(self.policy.clone(), self.registry.clone(), model, prompt, params).await {
            Ok(stream) => {
                self.open_generations += 1;
                Ok(Ok(self.table.push(stream)?))
            }
            Err(error) => Ok(Err(error.into())),
        }
    }
}

impl images::HostImageGeneration for PluginState {
    async fn next(&mut self, stream: Resource<ImageStream>) -> wasmtime::Result<Result<Option<ImageEvent>, WitError>> {
        let stream = self.table.get_mut(&stream)?;
        let next = stream.next(|event| matches!(event, HostImageEvent::Done(_))).await;
        Ok(next.map(|event| event.map(image_event)).map_err(Into::into))
    }

    async fn drop(&mut self, stream: Resource<ImageStream>) -> wasmtime::Result<()> {
        // Dropping the stream raises its cancellation flag: the worker stops before its next step.
        self.table.delete(stream)?;
        self.open_generations = self.open_generations.saturating_sub(1);
        Ok(())
    }
}

async fn embed_images_checked(
    policy: Arc<Policy>,
    registry: Arc<ModelRegistry>,
    model: String,
    images: Vec<Vec<u8>>,
) -> LanternResult<Vec<Vec<f32>>> {
    policy.check_model(&model)?;
    policy.check_images(&images)?;
    registry.embed_images(&model, images, policy.decode_limits()).await
}

async fn embed_texts_checked(
    policy: Arc<Policy>,
    registry: Arc<ModelRegistry>,
    model: String,
    texts: Vec<String>,
) -> LanternResult<Vec<Vec<f32>>> {
    policy.check_model(&model)?;
    policy.check_embed_inputs(&texts)?;
    registry.embed_image_texts(&model, texts).await
}

async fn ask_checked(
    policy: Arc<Policy>,
    registry: Arc<ModelRegistry>,
    model: String,
    image: Vec<u8>,
    question: String,
    params: Sampling,
) -> LanternResult<GenerationStream> {
    policy.check_model(&model)?;
    policy.check_images(std::slice::from_ref(&image))?;
    policy.check_embed_inputs(std::slice::from_ref(&question))?;
    let params = sampling_params(params)?;
    policy.check_max_tokens(params.max_tokens)?;
    registry.ask(&model, image, question, params, policy.decode_limits()).await
}

impl vision::Host for PluginState {
    async fn embed_images(&mut self, model: String, images: Vec<Vec<u8>>) -> wasmtime::Result<Result<Vec<Vec<f32>>, WitError>> {
        let work = embed_images_checked(self.policy.clone(), self.registry.clone(), model, images);
        Ok(work.await.map_err(Into::into))
    }

    async fn embed_texts(&mut self, model: String, texts: Vec<String>) -> wasmtime::Result<Result<Vec<Vec<f32>>, WitError>> {
        let work = embed_texts_checked(self.policy.clone(), self.registry.clone(), model, texts);
        Ok(work.await.map_err(Into::into))
    }

    async fn ask(
        &mut self,
        model: String,
        image: Vec<u8>,
        question: String,
        params: Sampling,
    ) -> wasmtime::Result<Result<Resource<GenerationStream>, WitError>> {
        if let Err(error) = self.check_open_streams() {
            return Ok(Err(error.into()));
        }
        match ask_checked(self.policy.clone(), self.registry.clone(), model, image, question, params).await {
            Ok(stream) => {
                self.open_generations += 1;
                Ok(Ok(self.table.push(stream)?))
            }
            Err(error) => Ok(Err(error.into())),
        }
    }
}

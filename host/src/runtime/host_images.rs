//! `lantern:ai/images` and `lantern:ai/vision`: policy checks, type translation, then
//! the registry. Image bytes are checked for count and size here and decoded on worker
//! threads by the registry; generated images stream their steps.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::bindings::lantern::ai::generation::Sampling;
use super::bindings::lantern::ai::images::{self, Image, ImageEvent, ImageParams, StepProgress};
use super::bindings::lantern::ai::vision;
use super::bindings::WitError;
use super::state::PluginState;
use super::streams::{GenerationStream, ImageStream};
use crate::capabilities::{ImageOptions, ImageRequest};
use crate::error::LanternResult;
use crate::policy::{Policy, RunUsage};
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
    usage: Arc<RunUsage>,
    registry: Arc<ModelRegistry>,
    model: String,
    prompt: String,
    params: ImageParams,
) -> LanternResult<ImageStream> {
    let refuse = |refusal| usage.refuse(refusal);
    policy.check_model(&model)?;
    policy.check_input_bytes(std::slice::from_ref(&prompt)).map_err(refuse)?;
    let options = options(params);
    // Policy limits on what was asked, before the model is even loaded.
    policy
        .check_image_request(options.width.unwrap_or(0), options.height.unwrap_or(0), options.steps.unwrap_or(0))
        .map_err(refuse)?;
    let generator = registry.image_generator(&model, None).await?;
    let request = ImageRequest::resolve(&prompt, &options, &generator.limits())?;
    // And on what the model's defaults made of it.
    policy.check_image_request(request.width, request.height, request.steps).map_err(refuse)?;
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

impl images::Host for PluginState {
    async fn generate(
        &mut self,
        model: String,
        prompt: String,
        params: ImageParams,
    ) -> wasmtime::Result<Result<Resource<ImageStream>, WitError>> {
        let admitted = self.host_call().and_then(|()| {
            self.policy.check_open_generations(self.open_generations).map_err(|r| self.usage.refuse(r))
        });
        if let Err(error) = admitted {
            return Ok(Err(error.into()));
        }
        match start_image(self.policy.clone(), self.usage.clone(), self.registry.clone(), model, prompt, params).await {
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
        if let Err(error) = self.host_call() {
            return Ok(Err(error.into()));
        }
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
    usage: Arc<RunUsage>,
    registry: Arc<ModelRegistry>,
    model: String,
    images: Vec<Vec<u8>>,
) -> LanternResult<Vec<Vec<f32>>> {
    usage.host_call(&policy)?;
    policy.check_model(&model)?;
    policy.check_images(&images).map_err(|r| usage.refuse(r))?;
    usage.embed_inputs(&policy, images.len() as u64)?;
    registry.embed_images(&model, images, policy.decode_limits()).await
}

async fn embed_texts_checked(
    policy: Arc<Policy>,
    usage: Arc<RunUsage>,
    registry: Arc<ModelRegistry>,
    model: String,
    texts: Vec<String>,
) -> LanternResult<Vec<Vec<f32>>> {
    usage.host_call(&policy)?;
    policy.check_model(&model)?;
    policy.check_embed_inputs(&texts).map_err(|r| usage.refuse(r))?;
    usage.embed_inputs(&policy, texts.len() as u64)?;
    registry.embed_image_texts(&model, texts).await
}

impl vision::Host for PluginState {
    async fn embed_images(&mut self, model: String, images: Vec<Vec<u8>>) -> wasmtime::Result<Result<Vec<Vec<f32>>, WitError>> {
        let work = embed_images_checked(self.policy.clone(), self.usage.clone(), self.registry.clone(), model, images);
        Ok(work.await.map_err(Into::into))
    }

    async fn embed_texts(&mut self, model: String, texts: Vec<String>) -> wasmtime::Result<Result<Vec<Vec<f32>>, WitError>> {
        let work = embed_texts_checked(self.policy.clone(), self.usage.clone(), self.registry.clone(), model, texts);
        Ok(work.await.map_err(Into::into))
    }

    async fn ask(
        &mut self,
        model: String,
        image: Vec<u8>,
        question: String,
        params: Sampling,
    ) -> wasmtime::Result<Result<Resource<GenerationStream>, WitError>> {
        let params = match self.admit_text_stream(&model, params) {
            Ok(params) => params,
            Err(error) => return Ok(Err(error.into())),
        };
        let reserved = params.max_tokens;
        let checked = self
            .policy
            .check_images(std::slice::from_ref(&image))
            .and_then(|()| self.policy.check_input_bytes(std::slice::from_ref(&question)))
            .map_err(|r| self.usage.refuse(r));
        if let Err(error) = checked {
            return self.push_text_stream(reserved, Err(error));
        }
        // Owned, so the future is `Send` (the store's state is not `Sync`).
        let (registry, limits) = (self.registry.clone(), self.policy.decode_limits());
        let started = registry.ask(&model, image, question, params, limits).await;
        self.push_text_stream(reserved, started)
    }
}

//! `lantern:ai/generation`, `lantern:ai/images` and `lantern:ai/vision`: the streaming
//! and image capabilities. Requests are checked against policy and the catalog here;
//! the catalog decides which families serve them, and a key whose catalog entry does
//! not offer the capability is answered with `model-not-supported`.

use wasmtime::component::Resource;

use super::bindings::lantern::ai::generation::{self, Chunk, Prompt, Sampling};
use super::bindings::lantern::ai::images::{self, ImageEvent, ImageParams};
use super::bindings::lantern::ai::vision;
use super::bindings::WitError;
use super::state::PluginState;
use super::streams::{GenerationStream, ImageStream};
use crate::capabilities::Capability;
use crate::error::{LanternError, LanternResult};

impl PluginState {
    /// Policy, then catalog: the model must be allowed and must offer `capability`.
    /// No family of this build serves `capability` yet, so a model that passes both
    /// checks is still refused, naming what is missing.
    fn check_capability(&self, model: &str, capability: Capability) -> LanternResult<()> {
        self.policy.check_model(model)?;
        let entry = self.registry.entry(model, Some(capability))?;
        Err(LanternError::ModelNotSupported(format!(
            "{model} is cataloged as family {}, which this build of the host cannot run for {capability}",
            entry.family.name()
        )))
    }
}

impl generation::Host for PluginState {
    async fn generate(
        &mut self,
        model: String,
        _prompt: Prompt,
        _params: Sampling,
    ) -> wasmtime::Result<Result<Resource<GenerationStream>, WitError>> {
        Ok(Err(self.check_capability(&model, Capability::TextGeneration).unwrap_err().into()))
    }
}

impl generation::HostGenerationStream for PluginState {
    async fn next(&mut self, stream: Resource<GenerationStream>) -> wasmtime::Result<Result<Option<Chunk>, WitError>> {
        let stream = self.table.get_mut(&stream)?;
        Ok(stream.next(|chunk| chunk.finished.is_some()).await.map_err(Into::into))
    }

    async fn drop(&mut self, stream: Resource<GenerationStream>) -> wasmtime::Result<()> {
        // Dropping the stream raises its cancellation flag: the worker stops at its next token.
        self.table.delete(stream)?;
        Ok(())
    }
}

impl images::Host for PluginState {
    async fn generate(
        &mut self,
        model: String,
        _prompt: String,
        _params: ImageParams,
    ) -> wasmtime::Result<Result<Resource<ImageStream>, WitError>> {
        Ok(Err(self.check_capability(&model, Capability::TextToImage).unwrap_err().into()))
    }
}

impl images::HostImageGeneration for PluginState {
    async fn next(&mut self, stream: Resource<ImageStream>) -> wasmtime::Result<Result<Option<ImageEvent>, WitError>> {
        let stream = self.table.get_mut(&stream)?;
        Ok(stream.next(|event| matches!(event, ImageEvent::Done(_))).await.map_err(Into::into))
    }

    async fn drop(&mut self, stream: Resource<ImageStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        Ok(())
    }
}

impl vision::Host for PluginState {
    async fn embed_images(&mut self, model: String, _images: Vec<Vec<u8>>) -> wasmtime::Result<Result<Vec<Vec<f32>>, WitError>> {
        Ok(Err(self.check_capability(&model, Capability::ImageEmbedding).unwrap_err().into()))
    }

    async fn embed_texts(&mut self, model: String, _texts: Vec<String>) -> wasmtime::Result<Result<Vec<Vec<f32>>, WitError>> {
        Ok(Err(self.check_capability(&model, Capability::ImageEmbedding).unwrap_err().into()))
    }

    async fn ask(
        &mut self,
        model: String,
        _image: Vec<u8>,
        _question: String,
        _params: Sampling,
    ) -> wasmtime::Result<Result<Resource<GenerationStream>, WitError>> {
        Ok(Err(self.check_capability(&model, Capability::VisionLanguage).unwrap_err().into()))
    }
}

//! `lantern:ai/embeddings`: policy check, type translation, then the registry.

use super::bindings::lantern::ai::embeddings::{self, EmbedOptions, EmbedTask as WitTask, EmbeddingBatch};
use super::bindings::WitError;
use super::state::PluginState;
use crate::capabilities::{EmbedRequest, EmbedTask};
use crate::error::LanternResult;
use crate::policy::{Policy, RunUsage};
use crate::registry::ModelRegistry;
use std::sync::Arc;

fn request(inputs: Vec<String>, options: EmbedOptions) -> EmbedRequest {
    EmbedRequest {
        inputs,
        task: match options.task {
            None | Some(WitTask::Document) => EmbedTask::Document,
            Some(WitTask::Query) => EmbedTask::Query,
            Some(WitTask::Instruction(text)) => EmbedTask::Instruction(text),
        },
        dimensions: options.dimensions.map(|d| d as usize),
        normalize: options.normalize.unwrap_or(true),
        truncate: options.truncate.unwrap_or(true),
    }
}

/// Owns what it needs, so the future is `Send` (the store's state is not `Sync`).
async fn embed_checked(
    policy: Arc<Policy>,
    usage: Arc<RunUsage>,
    registry: Arc<ModelRegistry>,
    model: String,
    inputs: Vec<String>,
    options: EmbedOptions,
) -> LanternResult<EmbeddingBatch> {
    usage.host_call(&policy)?;
    policy.check_model(&model)?;
    policy.check_embed_inputs(&inputs).map_err(|r| usage.refuse(r))?;
    usage.embed_inputs(&policy, inputs.len() as u64)?;
    let result = registry.embed(&model, request(inputs, options)).await?;
    Ok(EmbeddingBatch {
        prompt_tokens: result.prompt_tokens() as u32,
        truncated_inputs: result.truncated_inputs() as u32,
        dimensions: result.dimensions as u32,
        vectors: result.vectors,
    })
}

impl embeddings::Host for PluginState {
    async fn embed(
        &mut self,
        model: String,
        inputs: Vec<String>,
        options: EmbedOptions,
    ) -> wasmtime::Result<Result<EmbeddingBatch, WitError>> {
        let work = embed_checked(self.policy.clone(), self.usage.clone(), self.registry.clone(), model, inputs, options);
        Ok(work.await.map_err(Into::into))
    }
}

//! `lantern:ai/generation`: streamed text. Requests are checked against policy here;
//! the catalog decides which family serves them, and a key whose catalog entry does not
//! offer the capability is answered with `model-not-supported`.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::bindings::lantern::ai::generation::{self, Chunk, FinishReason as WitFinish, Finished, Prompt, Role, Sampling};
use super::bindings::WitError;
use super::state::PluginState;
use super::streams::GenerationStream;
use crate::capabilities::{ChatMessage, ChatRole, FinishReason, GenerationEvent, PromptInput, SamplingParams};
use crate::error::{LanternError, LanternResult};
use crate::policy::Policy;
use crate::registry::ModelRegistry;

fn prompt_input(prompt: Prompt) -> PromptInput {
    match prompt {
        Prompt::Text(text) => PromptInput::Text(text),
        Prompt::Chat(messages) => PromptInput::Chat(
            messages
                .into_iter()
                .map(|m| ChatMessage {
                    role: match m.role {
                        Role::System => ChatRole::System,
                        Role::User => ChatRole::User,
                        Role::Assistant => ChatRole::Assistant,
                    },
                    content: m.content,
                })
                .collect(),
        ),
    }
}

/// The WIT sampling record with the host's defaults filled in, checked for sense.
pub(super) fn sampling_params(params: Sampling) -> LanternResult<SamplingParams> {
    let defaults = SamplingParams::default();
    let sampling = SamplingParams {
        max_tokens: params.max_tokens.map(|n| n as usize).unwrap_or(defaults.max_tokens),
        temperature: params.temperature.map(f64::from).unwrap_or(defaults.temperature),
        top_k: params.top_k.map(|k| k as usize),
        top_p: params.top_p.map(f64::from),
        repeat_penalty: params.repeat_penalty.unwrap_or(defaults.repeat_penalty),
        repeat_last_n: params.repeat_last_n.map(|n| n as usize).unwrap_or(defaults.repeat_last_n),
        seed: params.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new().build_hasher().finish()
        }),
        stop: params.stop,
    };
    let invalid = |m: String| Err(LanternError::InvalidInput(m));
    if !(sampling.temperature.is_finite() && sampling.temperature >= 0.0) {
        return invalid(format!("temperature must be 0 or more, not {}", sampling.temperature));
    }
    if let Some(p) = sampling.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return invalid(format!("top-p must be in (0, 1], not {p}"));
        }
    }
    if sampling.top_k == Some(0) {
        return invalid("top-k must be at least 1".into());
    }
    if !(sampling.repeat_penalty.is_finite() && sampling.repeat_penalty > 0.0) {
        return invalid(format!("repeat-penalty must be above 0, not {}", sampling.repeat_penalty));
    }
    if sampling.max_tokens == 0 {
        return invalid("max-tokens must be at least 1".into());
    }
    Ok(sampling)
}

/// Owns what it needs, so the future is `Send` (the store's state is not `Sync`).
async fn start_generation(
    policy: Arc<Policy>,
    registry: Arc<ModelRegistry>,
    model: String,
    prompt: Prompt,
    params: Sampling,
) -> LanternResult<GenerationStream> {
    policy.check_model(&model)?;
    let params = sampling_params(params)?;
    policy.check_max_tokens(params.max_tokens)?;
    registry.generate(&model, prompt_input(prompt), params).await
}

fn chunk(event: GenerationEvent) -> Chunk {
    match event {
        GenerationEvent::Text(text) => Chunk { text, finished: None },
        GenerationEvent::Finished { reason, usage } => Chunk {
            text: String::new(),
            finished: Some(Finished {
                reason: match reason {
                    FinishReason::Eos => WitFinish::Eos,
                    FinishReason::StopSequence => WitFinish::StopSequence,
                    FinishReason::MaxTokens => WitFinish::MaxTokens,
                    FinishReason::Cancelled => WitFinish::Cancelled,
                },
                usage: generation::Usage {
                    prompt_tokens: usage.prompt_tokens as u32,
                    generated_tokens: usage.generated_tokens as u32,
                },
            }),
        },
    }
}

impl generation::Host for PluginState {
    async fn generate(
        &mut self,
        model: String,
        prompt: Prompt,
        params: Sampling,
    ) -> wasmtime::Result<Result<Resource<GenerationStream>, WitError>> {
        if self.open_generations >= self.policy.max_open_generations {
            let limit = self.policy.max_open_generations;
            return Ok(Err(LanternError::LimitExceeded(format!("{limit} generations are open; drop one first")).into()));
        }
        let work = start_generation(self.policy.clone(), self.registry.clone(), model, prompt, params);
        match work.await {
            Ok(stream) => {
                self.open_generations += 1;
                Ok(Ok(self.table.push(stream)?))
            }
            Err(error) => Ok(Err(error.into())),
        }
    }
}

impl generation::HostGenerationStream for PluginState {
    async fn next(&mut self, stream: Resource<GenerationStream>) -> wasmtime::Result<Result<Option<Chunk>, WitError>> {
        let stream = self.table.get_mut(&stream)?;
        let next = stream.next(|event| matches!(event, GenerationEvent::Finished { .. })).await;
        Ok(next.map(|event| event.map(chunk)).map_err(Into::into))
    }

    async fn drop(&mut self, stream: Resource<GenerationStream>) -> wasmtime::Result<()> {
        // Dropping the stream raises its cancellation flag: the worker stops at its next token.
        self.table.delete(stream)?;
        self.open_generations = self.open_generations.saturating_sub(1);
        Ok(())
    }
}

//! `lantern:ai/generation`: streamed text. Requests are checked against policy here;
//! the catalog decides which family serves them, and a key whose catalog entry does not
//! offer the capability is answered with `model-not-supported`.

use wasmtime::component::Resource;

use super::bindings::lantern::ai::generation::{self, Chunk, FinishReason as WitFinish, Finished, Prompt, Role, Sampling};
use super::bindings::WitError;
use super::state::PluginState;
use super::streams::GenerationStream;
use crate::capabilities::{ChatMessage, ChatRole, FinishReason, GenerationEvent, PromptInput, SamplingParams};
use crate::error::{LanternError, LanternResult};

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

impl PluginState {
    /// The checks every new text stream passes (a generation, a vision answer): the
    /// host-call count, open streams, the model, the sampling, tokens per request, and
    /// the run's token budget, which is charged the request's `max-tokens` here.
    pub(super) fn admit_text_stream(&self, model: &str, params: Sampling) -> LanternResult<SamplingParams> {
        self.host_call()?;
        self.policy.check_open_generations(self.open_generations).map_err(|r| self.usage.refuse(r))?;
        self.policy.check_model(model)?;
        let params = sampling_params(params)?;
        self.policy.check_max_tokens(params.max_tokens).map_err(|r| self.usage.refuse(r))?;
        self.usage.reserve_tokens(&self.policy, params.max_tokens as u64)?;
        Ok(params)
    }

    /// Hands a started text stream to the guest, remembering its token reservation; a
    /// stream that failed to start gives its reservation back.
    pub(super) fn push_text_stream(
        &mut self,
        reserved: usize,
        started: LanternResult<GenerationStream>,
    ) -> wasmtime::Result<Result<Resource<GenerationStream>, WitError>> {
        match started {
            Ok(stream) => {
                let handle = self.table.push(stream)?;
                self.open_generations += 1;
                self.token_reservations.insert(handle.rep(), reserved as u64);
                Ok(Ok(handle))
            }
            Err(error) => {
                self.usage.settle_tokens(reserved as u64, 0);
                Ok(Err(error.into()))
            }
        }
    }
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
        let params = match self.admit_text_stream(&model, params) {
            Ok(params) => params,
            Err(error) => return Ok(Err(error.into())),
        };
        let reserved = params.max_tokens;
        // Owned, so the future is `Send` (the store's state is not `Sync`).
        let registry = self.registry.clone();
        let started = registry.generate(&model, prompt_input(prompt), params).await;
        self.push_text_stream(reserved, started)
    }
}

impl generation::HostGenerationStream for PluginState {
    async fn next(&mut self, stream: Resource<GenerationStream>) -> wasmtime::Result<Result<Option<Chunk>, WitError>> {
        if let Err(error) = self.host_call() {
            return Ok(Err(error.into()));
        }
        let handle = stream.rep();
        let stream = self.table.get_mut(&stream)?;
        let next = stream.next(|event| matches!(event, GenerationEvent::Finished { .. })).await;
        if let Ok(Some(GenerationEvent::Finished { usage, .. })) = &next {
            // The run is charged what was generated, not what was reserved.
            if let Some(reserved) = self.token_reservations.remove(&handle) {
                self.usage.settle_tokens(reserved, usage.generated_tokens as u64);
            }
        }
        Ok(next.map(|event| event.map(chunk)).map_err(Into::into))
    }

    async fn drop(&mut self, stream: Resource<GenerationStream>) -> wasmtime::Result<()> {
        // Dropping the stream raises its cancellation flag: the worker stops at its next token.
        // An unfinished stream keeps its whole reservation charged: how far it got is unknown.
        self.token_reservations.remove(&stream.rep());
        self.table.delete(stream)?;
        self.open_generations = self.open_generations.saturating_sub(1);
        Ok(())
    }
}

//! GGUF quantized language models behind the text-generation capability. The architecture
//! is read from `general.architecture` in the file's metadata, never guessed from its name:
//!
//! | `general.architecture` | runs on | models |
//! |---|---|---|
//! | `llama` | [`llama`], the host's dense decoder engine (candle's `quantized_llama` for MoE files) | SmolLM2, Llama 2/3, Mistral |
//! | `qwen2` | [`llama`] (NeoX rotary, q/k/v biases) | Qwen2, Qwen2.5, Qwen2.5-Coder |
//! | `qwen3` | [`llama`] (NeoX rotary, per-head q/k norms) | Qwen3, Qwen3-Coder (dense) |
//! | `phi3` | [`llama`] (partial NeoX rotary, LongRoPE, fused `attn_qkv` / gate\|up) | Phi-3, Phi-4 (reasoning) |
//! | `qwen3moe` | [`qwen3_moe`] (candle's `quantized_qwen3_moe` runs on CUDA only) | Qwen3 / Qwen3-Coder MoE |
//! | `gemma3` | [`gemma3`] (candle's `quantized_gemma3` gates its FFN with SiLU, not GELU) | Gemma 3 |
//! | `deepseek2` | [`deepseek2`] (candle 0.11 has no quantized loader; its safetensors `deepseek2` has only V2's softmax router) | DeepSeek-V2/V3, Kimi-K2 |
//!
//! The dense decoder engine runs on the CPU. On other devices, and with
//! `LANTERN_GGUF_ENGINE=candle` (for comparison), the dense architectures run on candle's
//! modules instead: `quantized_llama`, `quantized_qwen2`, and the host's ports [`qwen3`]
//! (candle's `quantized_qwen3` with rope tables from f64 angles, not f16) and [`phi3`]
//! (candle's `quantized_phi3` ignores `phi3.rope.freq_base`).
//!
//! The tokenizer comes from the GGUF metadata ([`tokenizer`]); the chat template from
//! `tokenizer.chat_template` or a fallback ([`chat_template`]).
//! `LANTERN_GGUF_REQUANTIZE=q8_0` converts the 4/5-bit legacy formats to Q8_0 at load
//! for speed ([`requantize`]; off by default).

pub mod chat_template;
pub mod deepseek2;
pub mod files;
pub mod gemma3;
pub mod linear;
pub mod llama;
pub mod moe;
pub mod phi3;
pub mod qwen3;
pub mod split;
pub mod qwen3_moe;
pub mod requantize;
pub mod tokenizer;

use std::io::{Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2};
use tokenizers::Tokenizer;

use super::decoding::{self, CausalLm, DecodeSetup};
use crate::capabilities::{Generated, GenerationSink, PreparedPrompt, PromptInput, SamplingParams, TextGenerator};
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;
use chat_template::ChatTemplate;

/// Tokens that end an assistant's turn in the common chat formats.
const END_OF_TURN_TOKENS: [&str; 5] = ["<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "<end_of_turn>"];

/// The loaded weights. Each generation gets its own copy (the weights are shared through
/// `Arc`s inside; only the KV cache is per copy), so generations run in parallel.
enum Weights {
    /// Dense llama, qwen2, qwen3 and phi3 files on the host's own forward pass and
    /// kernels ([`llama`]).
    Dense(std::sync::Arc<llama::Llama>),
    /// Mixture-of-experts llama files, and below, the dense architectures on other devices
    /// or with `LANTERN_GGUF_ENGINE=candle`: candle's modules.
    Llama(quantized_llama::ModelWeights),
    Qwen3(qwen3::ModelWeights),
    Phi3(phi3::ModelWeights),
    Qwen3Moe(qwen3_moe::Qwen3Moe),
    /// candle's qwen2 weights cannot be cloned per generation (no `Clone`): generations
    /// of a qwen2 model take turns, each starting from an empty KV cache.
    Qwen2(std::sync::Mutex<quantized_qwen2::ModelWeights>),
    Gemma3(gemma3::Gemma3),
    DeepSeek2(deepseek2::DeepSeek2),
}

struct Session<M>(M);

macro_rules! causal_lm {
    ($($model:ty),*) => {$(
        impl CausalLm for Session<$model> {
            fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
                self.0.forward(input, position)
            }
        }
    )*};
}
causal_lm!(
    quantized_llama::ModelWeights,
    qwen3::ModelWeights,
    phi3::ModelWeights,
    qwen3_moe::Qwen3Moe,
    gemma3::Gemma3,
    deepseek2::DeepSeek2
);

impl CausalLm for Session<&mut quantized_qwen2::ModelWeights> {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        self.0.forward(input, position)
    }
}

pub struct GgufLlm {
    architecture: String,
    weights: Weights,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    eos_ids: Vec<u32>,
    bos_id: Option<u32>,
    add_bos: bool,
    context_length: usize,
    device: Device,
}

fn failed(context: &str) -> impl Fn(candle_core::Error) -> LanternError + '_ {
    move |e| LanternError::inference(context, e)
}

fn metadata_string(content: &Content, key: &str) -> Option<String> {
    content.metadata.get(key).and_then(|v| v.to_string().ok().cloned())
}

fn metadata_u32(content: &Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok())
}

/// Refuses, before any weight is read, the architectures this host cannot run.
fn supported(architecture: &str) -> LanternResult<()> {
    match architecture {
        "llama" | "qwen3" | "phi3" | "qwen3moe" | "qwen2" | "gemma3" | "deepseek2" => Ok(()),
        other => Err(LanternError::ModelNotSupported(format!(
            "GGUF architecture {other:?} is not one this host runs (llama, qwen2, qwen3, qwen3moe, phi3, gemma3, deepseek2)"
        ))),
    }
}

/// `LANTERN_GGUF_ENGINE=candle` runs dense llama, qwen2, qwen3 and phi3 files on candle's
/// modules instead of the host's forward pass (for comparison; the default is `host`).
fn candle_engine_from_env() -> LanternResult<bool> {
    match std::env::var("LANTERN_GGUF_ENGINE").unwrap_or_default().to_ascii_lowercase().as_str() {
        "" | "host" => Ok(false),
        "candle" => Ok(true),
        other => Err(LanternError::InvalidInput(format!("LANTERN_GGUF_ENGINE={other:?}: the values are host and candle"))),
    }
}

fn load_weights<R: Read + Seek>(architecture: &str, content: Content, reader: &mut R, device: &Device) -> LanternResult<Weights> {
    Ok(match architecture {
        // The host's kernels are CPU code; other devices take candle's modules. Which
        // architectures the engine runs, `Llama::handles` alone says. Its load errors are
        // already typed (phi3's unsupported RoPE scalings: ModelNotSupported).
        _ if device.is_cpu() && llama::Llama::handles(&content) && !candle_engine_from_env()? => {
            Weights::Dense(std::sync::Arc::new(llama::Llama::from_gguf(&content, reader)?))
        }
        "llama" => Weights::Llama(
            quantized_llama::ModelWeights::from_gguf(content, reader, device).map_err(failed("loading llama weights"))?,
        ),
        "qwen3" => Weights::Qwen3(
            qwen3::ModelWeights::from_gguf(content, reader, device).map_err(failed("loading qwen3 weights"))?,
        ),
        "phi3" => Weights::Phi3(phi3::ModelWeights::from_gguf(content, reader, device)?),
        "qwen2" => Weights::Qwen2(std::sync::Mutex::new(
            quantized_qwen2::ModelWeights::from_gguf(content, reader, device).map_err(failed("loading qwen2 weights"))?,
        )),
        "gemma3" => Weights::Gemma3(
            gemma3::Gemma3::from_gguf(content, reader, device).map_err(failed("loading gemma3 weights"))?,
        ),
        "qwen3moe" => Weights::Qwen3Moe(
            qwen3_moe::Qwen3Moe::from_gguf(content, reader, device).map_err(failed("loading qwen3moe weights"))?,
        ),
        "deepseek2" => Weights::DeepSeek2(deepseek2::DeepSeek2::from_gguf(content, reader, device)?),
        other => return supported(other).and(Err(LanternError::InferenceFailed(format!("no loader for {other}")))),
    })
}

impl GgufLlm {
    /// Loads the model from the `.gguf` file among `files`, or from all the parts of a
    /// split one (in part order) as one model.
    pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<Self> {
        let paths: Vec<&Path> = files.iter().filter(|(name, _)| name.ends_with(".gguf")).map(|(_, path)| path).collect();
        if paths.is_empty() {
            return Err(LanternError::InferenceFailed(format!("{} has no .gguf file in its catalog entry", files.repo.repo)));
        }
        let (content, mut file) = split::open(&paths)?;
        let architecture = metadata_string(&content, "general.architecture")
            .ok_or_else(|| LanternError::InferenceFailed("the GGUF metadata has no general.architecture".into()))?;
        let tokenizer = tokenizer::from_gguf(&content)?;
        let token_text = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id)).unwrap_or_default();
        let bos_id = metadata_u32(&content, "tokenizer.ggml.bos_token_id");
        let eos_id = metadata_u32(&content, "tokenizer.ggml.eos_token_id");
        let add_bos = content
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(metadata_string(&content, "tokenizer.ggml.model").as_deref() == Some("llama"));
        let mut eos_ids: Vec<u32> = END_OF_TURN_TOKENS.iter().filter_map(|t| tokenizer.token_to_id(t)).collect();
        eos_ids.extend(eos_id);
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let template = ChatTemplate::choose(
            metadata_string(&content, "tokenizer.chat_template"),
            &tokenizer,
            token_text(bos_id),
            token_text(eos_id),
        )?;
        let context_length = metadata_u32(&content, &format!("{architecture}.context_length")).unwrap_or(4096) as usize;
        supported(&architecture)?;
        let weights = match requantize::target_from_env()? {
            Some(target) => {
                let (content, mut memory) =
                    requantize::requantize(content, &mut file, target).map_err(failed("re-quantising the weights"))?;
                load_weights(&architecture, content, &mut memory, device)?
            }
            None => load_weights(&architecture, content, &mut file, device)?,
        };
        Ok(GgufLlm {
            architecture,
            weights,
            tokenizer,
            template,
            eos_ids,
            bos_id,
            add_bos,
            context_length,
            device: device.clone(),
        })
    }

    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// Where the chat template came from (`gguf`, or a fallback's name).
    pub fn template_origin(&self) -> &'static str {
        self.template.origin
    }
}

impl TextGenerator for GgufLlm {
    fn context_length(&self) -> usize {
        self.context_length
    }

    fn tokenize(&self, text: &str) -> LanternResult<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| LanternError::inference("tokenizing", e))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn prepare(&self, prompt: &PromptInput) -> LanternResult<PreparedPrompt> {
        let text = match prompt {
            PromptInput::Text(text) => text.clone(),
            PromptInput::Chat(messages) if messages.is_empty() => {
                return Err(LanternError::InvalidInput("a chat prompt needs at least one message".into()))
            }
            PromptInput::Chat(messages) => self.template.render(messages)?,
        };
        let mut ids = self.tokenize(&text)?;
        if let (true, Some(bos)) = (self.add_bos, self.bos_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        if ids.is_empty() {
            return Err(LanternError::InvalidInput("the prompt is empty".into()));
        }
        if ids.len() >= self.context_length {
            return Err(LanternError::InvalidInput(format!(
                "the prompt is {} tokens; this model's context holds {} tokens, prompt and answer together",
                ids.len(),
                self.context_length
            )));
        }
        Ok(PreparedPrompt { ids })
    }

    fn generate(
        &self,
        prompt: &PreparedPrompt,
        params: &SamplingParams,
        sink: &mut dyn GenerationSink,
    ) -> LanternResult<Generated> {
        let setup = DecodeSetup {
            tokenizer: &self.tokenizer,
            eos_ids: &self.eos_ids,
            context_length: self.context_length,
            device: &self.device,
        };
        let ids = &prompt.ids;
        match &self.weights {
            Weights::Dense(w) => decoding::generate(&mut llama::Session::new(w.clone()), &setup, ids, params, sink),
            Weights::Llama(w) => decoding::generate(&mut Session(w.clone()), &setup, ids, params, sink),
            Weights::Qwen3(w) => decoding::generate(&mut Session(w.clone()), &setup, ids, params, sink),
            Weights::Phi3(w) => decoding::generate(&mut Session(w.clone()), &setup, ids, params, sink),
            Weights::Qwen3Moe(w) => decoding::generate(&mut Session(w.clone()), &setup, ids, params, sink),
            Weights::Qwen2(w) => {
                // A generation that panicked poisons the lock; its cache is cleared anyway.
                let mut weights = w.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                weights.clear_kv_cache();
                decoding::generate(&mut Session(&mut *weights), &setup, ids, params, sink)
            }
            Weights::Gemma3(w) => decoding::generate(&mut Session(w.clone()), &setup, ids, params, sink),
            Weights::DeepSeek2(w) => decoding::generate(&mut Session(w.clone()), &setup, ids, params, sink),
        }
    }
}

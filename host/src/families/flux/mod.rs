//! FLUX.1 schnell (`black-forest-labs/FLUX.1-schnell`): text to image with a rectified
//! flow transformer, conditioned on T5-XXL hidden states and CLIP ViT-L/14's pooled text
//! embedding, denoised in 4 Euler steps and decoded by its 16-channel autoencoder.
//!
//! Files (seven, from three repos): the transformer `flux1-schnell.safetensors` and the
//! autoencoder `ae.safetensors` in BFL's names, the T5 tokenizer `tokenizer_2/tokenizer.json`;
//! `google/t5-v1_1-xxl`@`refs/pr/2` `config.json` and `model.safetensors` (the whole
//! encoder-decoder, of which only the encoder is read); `openai/clip-vit-large-patch14`
//! `model.safetensors` (a full CLIPModel, of which only `text_model` is read) and
//! `tokenizer.json`. Every size is read from the checkpoints' shapes ([`config`]).
//!
//! A second catalog entry, `lmz/candle-flux`, swaps the transformer for its GGUF
//! quantisation `flux1-schnell.gguf` (candle's `quantized_model`, the same BFL names;
//! activations stay f32) and takes the other six files from the same repos.
//!
//! The run follows diffusers' `FluxPipeline` for schnell: T5 ids padded or cut to 256
//! (schnell's `max_sequence_length`), CLIP's pooled output, the host's seeded noise
//! `(1, 16, h/8, w/8)` packed into 2x2 patches with their (0, row, column) position ids,
//! evenly spaced sigmas from 1 to 0 with no shift (schnell's scheduler config has
//! `use_dynamic_shifting: false`, `shift: 1.0`) and no guidance, Euler steps with the
//! transformer's output as the velocity, then the latents unpacked, unscaled
//! (`/ 0.3611 + 0.1159`) and decoded.
//!
//! **dtype**: everything runs in f32. candle's CPU matmul has no bf16 (the checkpoints'
//! dtype), f16 on the CPU is slower than f32 through gemm, and T5 overflows in f16.
//!
//! **Memory**: the networks are loaded one stage at a time inside each `generate`: T5
//! (about 19 GB in f32 for the real encoder) encodes and is dropped, then CLIP, then the
//! transformer (about 48 GB in f32) denoises and is dropped, then the AE decoder decodes.
//! Peak memory is the largest stage rather than the sum (over 70 GB), at the price of
//! reading the weights again for every image: a FLUX run on a CPU takes minutes anyway,
//! and keeping all four resident would rule out most machines. `load` reads only the
//! checkpoints' headers and tokenizers, and checks every tensor name and shape the four
//! networks ask for by building them over weightless tensors, so a wrong or broken file
//! still fails at load time with a typed error.

mod checkpoint;
mod clip_text;
pub mod config;

use candle_core::{Device, Tensor};
use candle_transformers::models::clip::text_model::{ClipTextConfig, ClipTextTransformer};
use candle_transformers::models::flux::sampling::{unpack, State};
use candle_transformers::models::flux::{autoencoder, model, quantized_model, WithForward};
use candle_transformers::models::t5;
use tokenizers::Tokenizer;

use self::checkpoint::Shapes;
use self::clip_text::ClipText;
use super::diffusion::{noise, sampler, t5 as t5_text, tensor_to_png};
use crate::capabilities::{GeneratedImage, ImageGenerator, ImageModelLimits, ImageRequest, ImageSink};
use crate::catalog::text_encoder_repos::{t5_xxl, CLIP_L};
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// The repo of the autoencoder and T5 tokenizer (and, for the full entry, the transformer).
const FLUX_REPO: &str = "black-forest-labs/FLUX.1-schnell";
const TRANSFORMER_FILE: &str = "flux1-schnell.safetensors";
/// The quantized transformer of the `lmz/candle-flux` entry, in its own repo.
const GGUF_FILE: &str = "flux1-schnell.gguf";
const AE_FILE: &str = "ae.safetensors";
const T5_TOKENIZER_FILE: &str = "tokenizer_2/tokenizer.json";
/// Schnell was distilled with 256 T5 tokens (diffusers' `max_sequence_length=256`).
pub const T5_LENGTH: usize = 256;

/// Where the four networks' files are.
#[derive(Debug, Clone)]
struct Paths {
    transformer: TransformerWeights,
    ae: std::path::PathBuf,
    t5_config: std::path::PathBuf,
    t5_weights: std::path::PathBuf,
    clip_weights: std::path::PathBuf,
}

/// The flow transformer's weights: BFL's safetensors (run in f32) or a GGUF quantisation.
#[derive(Debug, Clone)]
enum TransformerWeights {
    Safetensors(std::path::PathBuf),
    Gguf(std::path::PathBuf),
}

/// A FLUX schnell model: its files, checked, and the configurations read from them. The
/// networks themselves are loaded per generation (see the module doc).
pub struct Flux {
    paths: Paths,
    transformer: model::Config,
    autoencoder: autoencoder::Config,
    clip: ClipTextConfig,
    t5_tokenizer: Tokenizer,
    clip_tokenizer: Tokenizer,
    device: Device,
}

/// A prompt's token ids for both text encoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTokens {
    /// Exactly [`T5_LENGTH`] ids.
    pub t5_ids: Vec<u32>,
    /// Start, prompt and end-of-text ids, at most CLIP's positions (77).
    pub clip_ids: Vec<u32>,
    /// The larger of the two encoders' cuts.
    pub truncated: usize,
}

/// The loaded flow transformer.
pub struct Transformer {
    model: Box<dyn WithForward>,
}

impl Transformer {
    /// The velocity the transformer predicts for the packed latents `img`
    /// `(1, h/16 * w/16, 64)` at noise level `sigma` in [0, 1], with the text, pooled
    /// vector and position ids of `state` (candle's `State`, built from the same latents).
    pub fn velocity(&self, img: &Tensor, state: &State, sigma: f64) -> candle_core::Result<Tensor> {
        let timesteps = Tensor::full(sigma as f32, img.dim(0)?, img.device())?;
        self.model.forward(img, &state.img_ids, &state.txt, &state.txt_ids, &timesteps, &state.vec, None)
    }
}

/// Stops between stages once nobody listens any more.
fn go_on(sink: &dyn ImageSink) -> LanternResult<()> {
    if sink.keep_going() {
        Ok(())
    } else {
        Err(LanternError::Cancelled)
    }
}

fn not_flux(label: &str, cause: impl std::fmt::Display) -> LanternError {
    LanternError::ModelNotSupported(format!("{label} does not fit FLUX: {cause}"))
}

fn tokenizer_at(path: &std::path::Path, label: &str) -> LanternResult<Tokenizer> {
    let failed = |e: &dyn std::fmt::Display| LanternError::InferenceFailed(format!("loading {label}: {e}"));
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| failed(&e))?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|e| failed(&e))?;
    Ok(tokenizer)
}

/// Checks the seven files and reads the networks' configurations (no weights are read).
pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<Flux> {
    let t5_repo = t5_xxl().repo;
    let (transformer_weights, transformer_label) = match files.path(GGUF_FILE) {
        Ok(path) => (TransformerWeights::Gguf(path.to_path_buf()), GGUF_FILE),
        Err(_) => (TransformerWeights::Safetensors(files.path_in(FLUX_REPO, TRANSFORMER_FILE)?.to_path_buf()), TRANSFORMER_FILE),
    };
    let paths = Paths {
        transformer: transformer_weights,
        ae: files.path_in(FLUX_REPO, AE_FILE)?.to_path_buf(),
        t5_config: files.path_in(&t5_repo, "config.json")?.to_path_buf(),
        t5_weights: files.path_in(&t5_repo, "model.safetensors")?.to_path_buf(),
        clip_weights: files.path_in(CLIP_L, "model.safetensors")?.to_path_buf(),
    };
    // A GGUF transformer asks for the same names and shapes as the safetensors one, so
    // both are checked by the same dry run below.
    let transformer_shapes = match &paths.transformer {
        TransformerWeights::Safetensors(path) => Shapes::read(path, transformer_label)?,
        TransformerWeights::Gguf(path) => Shapes::read_gguf(path, transformer_label)?,
    };
    let ae_shapes = Shapes::read(&paths.ae, AE_FILE)?;
    let t5_label = format!("{t5_repo}/model.safetensors");
    let t5_shapes = Shapes::read(&paths.t5_weights, &t5_label)?;
    let clip_label = format!("{CLIP_L}/model.safetensors");
    let clip_shapes = Shapes::read(&paths.clip_weights, &clip_label)?;

    let transformer = config::transformer(&transformer_shapes)?;
    let autoencoder = config::autoencoder(&ae_shapes)?;
    let clip = config::clip_text(&clip_shapes)?;
    let t5_config_label = format!("{t5_repo}/config.json");
    let t5_text = std::fs::read_to_string(&paths.t5_config).map_err(|e| LanternError::InferenceFailed(format!("loading {t5_config_label}: {e}")))?;
    let t5_config: t5::Config =
        serde_json::from_str(&t5_text).map_err(|e| LanternError::InferenceFailed(format!("loading {t5_config_label}: {e}")))?;
    if t5_config.d_model != transformer.context_in_dim {
        return Err(not_flux(&t5_label, format!("T5 is {} wide, the transformer reads {}", t5_config.d_model, transformer.context_in_dim)));
    }
    if clip.embed_dim != transformer.vec_in_dim {
        return Err(not_flux(&clip_label, format!("CLIP is {} wide, the transformer reads {}", clip.embed_dim, transformer.vec_in_dim)));
    }

    // Build each network over weightless tensors: every name and shape it asks for is checked.
    model::Flux::new(&transformer, transformer_shapes.dry_run(device)).map_err(|e| not_flux(transformer_label, e))?;
    autoencoder::Decoder::new(&autoencoder, ae_shapes.dry_run(device).pp("decoder")).map_err(|e| not_flux(AE_FILE, e))?;
    ClipTextTransformer::new(clip_shapes.dry_run(device).pp("text_model"), &clip).map_err(|e| not_flux(&clip_label, e))?;
    t5::T5EncoderModel::load(t5_shapes.dry_run(device), &t5_config).map_err(|e| not_flux(&t5_label, e))?;

    let t5_tokenizer = tokenizer_at(files.path_in(FLUX_REPO, T5_TOKENIZER_FILE)?, T5_TOKENIZER_FILE)?;
    let clip_tokenizer_label = format!("{CLIP_L}/tokenizer.json");
    let clip_tokenizer = tokenizer_at(files.path_in(CLIP_L, "tokenizer.json")?, &clip_tokenizer_label)?;
    // Token ids index the embeddings; CLIP also pools at the largest id, which must be
    // the end-of-text token.
    if t5_tokenizer.get_vocab_size(true) > t5_config.vocab_size {
        return Err(not_flux(T5_TOKENIZER_FILE, format!("{} tokens for {} embeddings", t5_tokenizer.get_vocab_size(true), t5_config.vocab_size)));
    }
    let clip_vocab = clip_tokenizer.get_vocab_size(true);
    if clip_vocab > clip.vocab_size || clip_tokenizer.token_to_id("<|endoftext|>") != Some(clip_vocab as u32 - 1) {
        return Err(not_flux(&clip_tokenizer_label, format!("{clip_vocab} tokens for {} embeddings, or <|endoftext|> is not the last", clip.vocab_size)));
    }
    Ok(Flux { paths, transformer, autoencoder, clip, t5_tokenizer, clip_tokenizer, device: device.clone() })
}

impl Flux {
    /// The transformer's configuration, as read from its checkpoint.
    pub fn transformer_config(&self) -> &model::Config {
        &self.transformer
    }

    /// The autoencoder's configuration, as read from its checkpoint.
    pub fn autoencoder_config(&self) -> &autoencoder::Config {
        &self.autoencoder
    }

    /// Tokenizes `prompt` for T5 and CLIP; a prompt too long for either is cut (and the
    /// larger cut counted) or, when `truncate` is false, refused.
    pub fn tokenize(&self, prompt: &str, truncate: bool) -> LanternResult<PromptTokens> {
        let t5 = t5_text::tokenize(&self.t5_tokenizer, prompt, T5_LENGTH, truncate)?;
        let clip = clip_text::tokenize(&self.clip_tokenizer, prompt, self.clip.max_position_embeddings, truncate)?;
        Ok(PromptTokens { t5_ids: t5.ids, clip_ids: clip.ids, truncated: t5.truncated.max(clip.truncated) })
    }

    /// T5's hidden states `(1, len, d_model)` for `ids`; loads the encoder and drops it.
    pub fn encode_t5(&self, ids: &[u32]) -> LanternResult<Tensor> {
        let mut encoder = t5_text::T5Encoder::load(&self.paths.t5_config, &[self.paths.t5_weights.as_path()], &self.device)?;
        encoder.encode(ids)
    }

    /// CLIP's pooled text embedding `(1, width)` for `ids`; loads the tower and drops it.
    pub fn encode_clip(&self, ids: &[u32]) -> LanternResult<Tensor> {
        ClipText::load(&self.clip, &self.paths.clip_weights, &self.device)?.pooled(ids)
    }

    /// Loads the flow transformer: f32 weights, or the GGUF's quantized ones.
    pub fn load_transformer(&self) -> LanternResult<Transformer> {
        let failed = |e: candle_core::Error| LanternError::inference("loading the FLUX transformer", e);
        let model: Box<dyn WithForward> = match &self.paths.transformer {
            TransformerWeights::Safetensors(path) => {
                // Safety: the cache's blobs are written once, renamed into place and never modified.
                let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[path], candle_core::DType::F32, &self.device) }
                    .map_err(failed)?;
                Box::new(model::Flux::new(&self.transformer, vb).map_err(failed)?)
            }
            TransformerWeights::Gguf(path) => {
                let vb = candle_transformers::quantized_var_builder::VarBuilder::from_gguf(path, &self.device).map_err(failed)?;
                Box::new(quantized_model::Flux::new(&self.transformer, vb).map_err(failed)?)
            }
        };
        Ok(Transformer { model })
    }

    /// Runs `steps` Euler steps from the noise `(1, 16, h/8, w/8)` conditioned on the T5
    /// states `txt` and CLIP vector `vec`; returns the denoised latents, same shape.
    pub fn denoise(&self, txt: &Tensor, vec: &Tensor, noise: &Tensor, steps: u32, sink: &mut dyn ImageSink) -> LanternResult<Tensor> {
        let failed = |e: candle_core::Error| LanternError::inference("denoising", e);
        let (_, _, h, w) = noise.dims4().map_err(failed)?;
        let state = State::new(txt, vec, noise).map_err(failed)?;
        let transformer = self.load_transformer()?;
        let packed = sampler::euler(state.img.clone(), &sampler::linear_sigmas(steps), sink, |img, sigma| {
            transformer.velocity(img, &state, sigma)
        })?;
        drop(transformer);
        unpack(&packed, h * 8, w * 8).map_err(failed)
    }

    /// Decodes latents `(1, 16, h/8, w/8)` to an image `(1, 3, h, w)` in about [-1, 1];
    /// loads the AE decoder and drops it.
    pub fn decode(&self, latents: &Tensor) -> LanternResult<Tensor> {
        let failed = |e: candle_core::Error| LanternError::inference("decoding the latents", e);
        // Safety: the cache's blobs are written once, renamed into place and never modified.
        let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[&self.paths.ae], candle_core::DType::F32, &self.device) }
            .map_err(failed)?;
        let decoder = autoencoder::Decoder::new(&self.autoencoder, vb.pp("decoder")).map_err(failed)?;
        let latents = ((latents / self.autoencoder.scale_factor).and_then(|t| t + self.autoencoder.shift_factor)).map_err(failed)?;
        candle_core::Module::forward(&decoder, &latents).map_err(failed)
    }

    fn check(&self, request: &ImageRequest) -> LanternResult<()> {
        let limits = self.limits();
        for (side, value) in [("width", request.width), ("height", request.height)] {
            if value % limits.size_multiple != 0 || value < limits.min_side || value > limits.max_side {
                return Err(LanternError::InvalidInput(format!(
                    "{side} {value}: FLUX takes multiples of {} from {} to {}",
                    limits.size_multiple, limits.min_side, limits.max_side
                )));
            }
        }
        if request.steps == 0 || request.steps > limits.max_steps {
            return Err(LanternError::InvalidInput(format!("{} steps: FLUX takes 1 to {}", request.steps, limits.max_steps)));
        }
        Ok(())
    }
}

impl ImageGenerator for Flux {
    fn limits(&self) -> ImageModelLimits {
        ImageModelLimits {
            default_width: 1024,
            default_height: 1024,
            default_steps: 4,
            // Schnell is guidance-distilled: it has no guidance input and no unconditional pass.
            default_guidance_scale: 0.0,
            // 8x autoencoder, then 2x2 patches.
            size_multiple: 16,
            min_side: 64,
            max_side: 2048,
            max_steps: 50,
            negative_prompt: false,
        }
    }

    fn generate(&self, request: &ImageRequest, sink: &mut dyn ImageSink) -> LanternResult<GeneratedImage> {
        self.check(request)?;
        let tokens = self.tokenize(&request.prompt, request.truncate)?;
        go_on(sink)?;
        let txt = self.encode_t5(&tokens.t5_ids)?;
        go_on(sink)?;
        let vec = self.encode_clip(&tokens.clip_ids)?;
        let noise = noise::latents(request.seed, config::LATENT_CHANNELS, request.width, request.height, &self.device)?;
        let latents = self.denoise(&txt, &vec, &noise, request.steps, sink)?;
        go_on(sink)?;
        let (png, width, height) = tensor_to_png(&self.decode(&latents)?)?;
        Ok(GeneratedImage { png, width, height, seed: request.seed, truncated_tokens: tokens.truncated as u32 })
    }
}

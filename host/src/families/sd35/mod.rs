//! Stable Diffusion 3.5 (Large Turbo): text to image with an MMDiT conditioned on CLIP-L,
//! CLIP-G and T5-XXL, sampled by Euler flow matching and decoded by a 16-channel VAE.
//!
//! Files (see the catalog): the single-file `sd3.5_large_turbo.safetensors` (MMDiT under
//! `model.diffusion_model.`, VAE under `first_stage_model.` in LDM names), the three text
//! encoders under `text_encoders/`, T5's `config.json` and the three tokenizers from
//! their own repos. Every size is read from the checkpoints (`config`), so a tiny test
//! checkpoint loads through the same code as the real one.
//!
//! What a generation follows: diffusers' `StableDiffusion3Pipeline` with its
//! `FlowMatchEulerDiscreteScheduler` (shift 3.0): `steps` timesteps spaced evenly from 1
//! to the schedule's smallest training sigma, time-shifted, then 0 ([`sigmas`]); the MMDiT
//! sees `sigma * 1000`; with guidance above 1 the negative prompt (or `""`) runs in the
//! same batch and the prediction is `uncond + g * (cond - uncond)`, at 1 or below there is
//! no unconditional pass. T5 reads 77 tokens as Stability's `sd3_infer.py` does
//! (diffusers defaults to 256; see `text::T5_LENGTH`). Latents are decoded as
//! `vae.decode(x / 1.5305 + 0.0609)`. The initial noise is the host's seeded noise.
//!
//! dtype: f32 throughout on the CPU, measured as the fastest correct choice
//! (`f16_against_f32_on_the_cpu` in tests/sd35.rs, 2 cores): the tiny MMDiT takes 15.8 ms a
//! forward at 128x128 in f32 against 35.0 ms in f16 (whose output is off by 1.4e-2), and
//! a matmul of the real MMDiT's size (4250 tokens, width 2432) 972 ms in f32 against
//! 1233 ms in f16: candle's CPU f16 matmul converts through gemm, and it has no bf16 matmul
//! at all. T5 must run in f32 anyway (it overflows in f16). candle's MMDiT casts its
//! timestep embedding to f16, so f32 weights fail there; we assemble the MMDiT from
//! candle's public parts with an f32 timestep embedder of our own (`mmdit`). The 16-bit
//! weights are widened to f32 as each stage loads.
//!
//! Memory: the stages load in turn on every generation (text encoders, one at a time →
//! encode → dropped; MMDiT → denoise → dropped; VAE → decode), so the peak is the largest
//! stage (the 8B MMDiT: about 32 GB in f32), not the sum of all of them (about 55 GB with
//! the 4.7B T5-XXL encoder and the two CLIPs).
//! The price is reading the weights again on each generation (memory-mapped files, so
//! from the page cache when memory allows). `load()` still reads every header, infers
//! every config and builds every model against weightless stand-ins, so a missing or
//! misshapen tensor fails at load time with a typed error.

pub mod config;
pub mod mmdit;
pub mod text;
pub mod vae;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::mmdit::model::Config as MmditConfig;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;
use candle_transformers::models::t5;
use tokenizers::Tokenizer;

use crate::capabilities::{GeneratedImage, ImageGenerator, ImageModelLimits, ImageRequest, ImageSink};
use crate::catalog::text_encoder_repos::{t5_xxl, CLIP_G, CLIP_L, T5_TOKENIZER};
use crate::error::{LanternError, LanternResult};
use crate::families::diffusion::clip_text::ClipTextConfig;
use crate::families::diffusion::weights::{mmap, Shapes};
use crate::families::diffusion::{noise, sampler, t5::T5Encoder, tensor_to_png};
use crate::hub::ModelFiles;

pub use text::{Conditioning, PromptTokens};

const CHECKPOINT: &str = "sd3.5_large_turbo.safetensors";
const CLIP_L_WEIGHTS: &str = "text_encoders/clip_l.safetensors";
const CLIP_G_WEIGHTS: &str = "text_encoders/clip_g.safetensors";
const T5_WEIGHTS: &str = "text_encoders/t5xxl_fp16.safetensors";

/// SD 3.5 Large Turbo's sampling: 4 steps, no guidance, time shift 3.
const DEFAULT_STEPS: u32 = 4;
const SHIFT: f64 = 3.0;
const TRAIN_TIMESTEPS: f64 = 1000.0;

/// The sigmas of diffusers' `FlowMatchEulerDiscreteScheduler(shift)` for `steps` steps
/// (`set_timesteps` without custom sigmas), ending with 0; rounded through f32 as there.
pub fn sigmas(steps: u32, shift: f64) -> Vec<f64> {
    let shifted = |s: f64| shift * s / (1.0 + (shift - 1.0) * s);
    // The smallest training sigma, computed in f32 as the scheduler's tensors are.
    let smallest = {
        let s = 1.0f32 / TRAIN_TIMESTEPS as f32;
        (shift as f32 * s / (1.0 + (shift as f32 - 1.0) * s)) as f64
    };
    let n = steps.max(1) as usize;
    let mut out: Vec<f64> = (0..n)
        .map(|i| {
            let t = if n == 1 { 1.0 } else { 1.0 + (smallest - 1.0) * i as f64 / (n - 1) as f64 };
            shifted(t) as f32 as f64
        })
        .collect();
    out.push(0.0);
    out
}

struct Paths {
    checkpoint: PathBuf,
    clip_l: PathBuf,
    clip_g: PathBuf,
    t5: PathBuf,
    t5_config: PathBuf,
}

/// A loaded SD 3.5 model: its files, configs and tokenizers (weights load per generation).
pub struct Sd35 {
    paths: Paths,
    mmdit: MmditConfig,
    vae: AutoEncoderKLConfig,
    clip_l: ClipTextConfig,
    clip_g: ClipTextConfig,
    t5_vocab: usize,
    tokenizers: text::Tokenizers,
    device: Device,
}

fn build_failed(label: &str) -> impl Fn(candle_core::Error) -> LanternError + '_ {
    move |e| LanternError::InferenceFailed(format!("{label}: {e}"))
}

fn read_tokenizer(path: &Path, label: &str) -> LanternResult<Tokenizer> {
    let failed = |e: &dyn std::fmt::Display| LanternError::InferenceFailed(format!("loading {label}: {e}"));
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| failed(&e))?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|e| failed(&e))?;
    Ok(tokenizer)
}

/// Reads every header and config, infers the sizes, and builds each model against
/// weightless stand-ins of the checkpoint's shapes (see the module doc).
pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<Sd35> {
    let paths = Paths {
        checkpoint: files.path(CHECKPOINT)?.to_path_buf(),
        clip_l: files.path(CLIP_L_WEIGHTS)?.to_path_buf(),
        clip_g: files.path(CLIP_G_WEIGHTS)?.to_path_buf(),
        t5: files.path(T5_WEIGHTS)?.to_path_buf(),
        t5_config: files.path_in(&t5_xxl().repo, "config.json")?.to_path_buf(),
    };
    let checkpoint = Shapes::read(&paths.checkpoint, CHECKPOINT)?;
    let clip_l_shapes = Shapes::read(&paths.clip_l, CLIP_L_WEIGHTS)?;
    let clip_g_shapes = Shapes::read(&paths.clip_g, CLIP_G_WEIGHTS)?;
    let t5_shapes = Shapes::read(&paths.t5, T5_WEIGHTS)?;
    let t5_config: t5::Config = std::fs::read_to_string(&paths.t5_config)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
        .map_err(|e| LanternError::InferenceFailed(format!("loading the T5 config.json: {e}")))?;
    if t5_config.num_layers == 0 || t5_config.num_heads == 0 || t5_config.d_kv == 0 || t5_config.d_model == 0 {
        return Err(LanternError::InferenceFailed("the T5 config.json has a zero size".into()));
    }

    let mmdit_config = config::mmdit(&checkpoint)?;
    let vae_config = config::vae(&checkpoint)?;
    let (clip_l, clip_g) = config::clips(&clip_l_shapes, &clip_g_shapes)?;
    config::check_fit(&mmdit_config, &clip_l, &clip_g, t5_config.d_model, &checkpoint)?;

    // Every constructor against the shapes alone: a missing or misshapen tensor fails here.
    let dry = checkpoint.dry_run(DType::F32);
    mmdit::Mmdit::new(&mmdit_config, dry.pp(config::MMDIT.trim_end_matches('.'))).map_err(build_failed(CHECKPOINT))?;
    vae::build(dry, &vae_config).map_err(build_failed(CHECKPOINT))?;
    crate::families::diffusion::clip_text::ClipTextEncoder::new(clip_l_shapes.dry_run(DType::F32), &clip_l)
        .map_err(build_failed(CLIP_L_WEIGHTS))?;
    crate::families::diffusion::clip_text::ClipTextEncoder::new(clip_g_shapes.dry_run(DType::F32), &clip_g)
        .map_err(build_failed(CLIP_G_WEIGHTS))?;
    t5::T5EncoderModel::load(t5_shapes.dry_run(DType::F32), &t5_config).map_err(build_failed(T5_WEIGHTS))?;

    let tokenizers = text::Tokenizers {
        clip_l: text::ClipTokenizer::new(read_tokenizer(files.path_in(CLIP_L, "tokenizer.json")?, "the CLIP-L tokenizer")?, "<|endoftext|>", "the CLIP-L tokenizer")?,
        clip_g: text::ClipTokenizer::new(read_tokenizer(files.path_in(CLIP_G, "tokenizer.json")?, "the CLIP-G tokenizer")?, "!", "the CLIP-G tokenizer")?,
        t5: read_tokenizer(files.path_in(T5_TOKENIZER, "t5-v1_1-xxl.tokenizer.json")?, "the T5 tokenizer")?,
    };
    for (label, size, vocab) in [
        ("CLIP-L", tokenizers.clip_l.tokenizer.get_vocab_size(true), clip_l.vocab_size),
        ("CLIP-G", tokenizers.clip_g.tokenizer.get_vocab_size(true), clip_g.vocab_size),
        ("T5", tokenizers.t5.get_vocab_size(true), t5_config.vocab_size),
    ] {
        if size > vocab {
            return Err(LanternError::InferenceFailed(format!("the {label} tokenizer has {size} tokens, the encoder {vocab}")));
        }
    }
    Ok(Sd35 {
        paths,
        mmdit: mmdit_config,
        vae: vae_config,
        clip_l,
        clip_g,
        t5_vocab: t5_config.vocab_size,
        tokenizers,
        device: device.clone(),
    })
}

fn check_going(sink: &dyn ImageSink) -> LanternResult<()> {
    if sink.keep_going() {
        Ok(())
    } else {
        Err(LanternError::Cancelled)
    }
}

impl Sd35 {
    /// The prompt's tokens for CLIP-L, CLIP-G and T5 (see [`text::Tokenizers::tokenize`]).
    pub fn tokenize(&self, prompt: &str, truncate: bool) -> LanternResult<PromptTokens> {
        self.tokenizers.tokenize(prompt, self.clip_l.max_position_embeddings, truncate)
    }

    /// The text stage: loads each encoder in turn, runs every prompt through it, drops it.
    pub fn encode(&self, prompts: &[&PromptTokens], sink: &dyn ImageSink) -> LanternResult<Vec<Conditioning>> {
        let device = &self.device;
        check_going(sink)?;
        let clip_l = {
            let vb = mmap(&[&self.paths.clip_l], DType::F32, device, CLIP_L_WEIGHTS)?;
            let inputs: Vec<(&[u32], usize)> = prompts.iter().map(|p| (&p.clip_l[..], p.clip_l_end)).collect();
            text::run_clip(vb, &self.clip_l, &inputs, device).map_err(|e| LanternError::inference("running CLIP-L", e))?
        };
        check_going(sink)?;
        let clip_g = {
            let vb = mmap(&[&self.paths.clip_g], DType::F32, device, CLIP_G_WEIGHTS)?;
            let inputs: Vec<(&[u32], usize)> = prompts.iter().map(|p| (&p.clip_g[..], p.clip_g_end)).collect();
            text::run_clip(vb, &self.clip_g, &inputs, device).map_err(|e| LanternError::inference("running CLIP-G", e))?
        };
        check_going(sink)?;
        let mut t5 = T5Encoder::load(&self.paths.t5_config, &[&self.paths.t5], device)?;
        let mut out = Vec::with_capacity(prompts.len());
        for ((prompt, l), g) in prompts.iter().zip(&clip_l).zip(&clip_g) {
            if let Some(bad) = prompt.t5.iter().find(|&&id| id as usize >= self.t5_vocab) {
                return Err(LanternError::InvalidInput(format!("T5 token {bad} is outside the encoder's vocabulary")));
            }
            let hidden = t5.encode(&prompt.t5)?;
            out.push(text::stack(l, g, &hidden).map_err(|e| LanternError::inference("stacking the text encodings", e))?);
        }
        Ok(out)
    }

    fn load_mmdit(&self) -> LanternResult<mmdit::Mmdit> {
        let vb = mmap(&[&self.paths.checkpoint], DType::F32, &self.device, CHECKPOINT)?;
        mmdit::Mmdit::new(&self.mmdit, vb.pp(config::MMDIT.trim_end_matches('.'))).map_err(build_failed(CHECKPOINT))
    }

    /// One MMDiT prediction (loads the MMDiT for it): the velocity at `sigma` for
    /// `latents` `(1, 16, h, w)` under `cond`.
    pub fn velocity(&self, latents: &Tensor, sigma: f64, cond: &Conditioning) -> LanternResult<Tensor> {
        let model = self.load_mmdit()?;
        let t = Tensor::new(&[(sigma as f32) * TRAIN_TIMESTEPS as f32], &self.device).map_err(|e| LanternError::inference("denoising", e))?;
        model.forward(latents, &t, &cond.y, &cond.context).map_err(|e| LanternError::inference("denoising", e))
    }

    /// The denoising stage: loads the MMDiT, runs `steps` Euler steps from `latents`
    /// (reporting each to `sink`), drops it. `uncond` with `guidance > 1` batches
    /// classifier-free guidance.
    pub fn denoise(
        &self,
        latents: Tensor,
        cond: &Conditioning,
        uncond: Option<&Conditioning>,
        steps: u32,
        guidance: f64,
        sink: &mut dyn ImageSink,
    ) -> LanternResult<Tensor> {
        check_going(sink)?;
        let model = self.load_mmdit()?;
        let failed = |e: candle_core::Error| LanternError::inference("denoising", e);
        let batched = match uncond.filter(|_| guidance > 1.0) {
            Some(uncond) => Some((
                Tensor::cat(&[&uncond.y, &cond.y], 0).map_err(failed)?,
                Tensor::cat(&[&uncond.context, &cond.context], 0).map_err(failed)?,
            )),
            None => None,
        };
        let device = self.device.clone();
        sampler::euler(latents, &sigmas(steps, SHIFT), sink, |x, sigma| {
            let t = (sigma as f32) * TRAIN_TIMESTEPS as f32;
            match &batched {
                None => model.forward(x, &Tensor::new(&[t], &device)?, &cond.y, &cond.context),
                Some((y, context)) => {
                    let pred = model.forward(&Tensor::cat(&[x, x], 0)?, &Tensor::new(&[t, t], &device)?, y, context)?;
                    let (uncond, cond) = (pred.narrow(0, 0, 1)?, pred.narrow(0, 1, 1)?);
                    &uncond + ((cond - &uncond)? * guidance)?
                }
            }
        })
    }

    /// The decoding stage: loads the VAE, decodes `latents` to an image `(1, 3, H, W)`
    /// in about [-1, 1], drops it.
    pub fn decode(&self, latents: &Tensor) -> LanternResult<Tensor> {
        let vb = mmap(&[&self.paths.checkpoint], DType::F32, &self.device, CHECKPOINT)?;
        let model = vae::build(vb, &self.vae).map_err(build_failed(CHECKPOINT))?;
        vae::decode(&model, latents).map_err(|e| LanternError::inference("decoding the latents", e))
    }

    fn check(&self, request: &ImageRequest) -> LanternResult<()> {
        let limits = self.limits();
        for (side, name) in [(request.width, "width"), (request.height, "height")] {
            if side % limits.size_multiple != 0 || side < limits.min_side || side > limits.max_side {
                return Err(LanternError::InvalidInput(format!(
                    "{name} {side} must be a multiple of {} from {} to {}",
                    limits.size_multiple, limits.min_side, limits.max_side
                )));
            }
        }
        if request.steps == 0 || request.steps > limits.max_steps {
            return Err(LanternError::InvalidInput(format!("steps must be 1 to {}", limits.max_steps)));
        }
        if !request.guidance_scale.is_finite() {
            return Err(LanternError::InvalidInput("the guidance scale must be a number".into()));
        }
        Ok(())
    }
}

impl ImageGenerator for Sd35 {
    fn limits(&self) -> ImageModelLimits {
        // The VAE scales by 8 and the MMDiT patches the latents; its position table caps
        // the patches per side.
        let size_multiple = 8 * self.mmdit.patch_size as u32;
        let max_side = (self.mmdit.pos_embed_max_size * self.mmdit.patch_size * 8) as u32;
        let default_side = 1024.min(max_side);
        ImageModelLimits {
            default_width: default_side,
            default_height: default_side,
            default_steps: DEFAULT_STEPS,
            default_guidance_scale: 1.0,
            size_multiple,
            min_side: 64.max(size_multiple).min(max_side),
            max_side,
            max_steps: 50,
            negative_prompt: true,
        }
    }

    fn generate(&self, request: &ImageRequest, sink: &mut dyn ImageSink) -> LanternResult<GeneratedImage> {
        self.check(request)?;
        let guided = request.guidance_scale > 1.0;
        let cond = self.tokenize(&request.prompt, request.truncate)?;
        let uncond = if guided { Some(self.tokenize(request.negative_prompt.as_deref().unwrap_or(""), true)?) } else { None };
        let prompts: Vec<&PromptTokens> = std::iter::once(&cond).chain(uncond.as_ref()).collect();
        let conditioning = self.encode(&prompts, sink)?;
        let latents = noise::latents(request.seed, config::LATENT_CHANNELS, request.width, request.height, &self.device)?;
        let latents = self.denoise(
            latents,
            &conditioning[0],
            conditioning.get(1),
            request.steps,
            request.guidance_scale as f64,
            sink,
        )?;
        check_going(sink)?;
        let image = self.decode(&latents)?;
        let (png, width, height) = tensor_to_png(&image)?;
        Ok(GeneratedImage { png, width, height, seed: request.seed, truncated_tokens: cond.truncated as u32 })
    }
}

#[cfg(test)]
mod tests {
    use super::sigmas;

    /// diffusers' `FlowMatchEulerDiscreteScheduler(shift=3.0)` after `set_timesteps(n)`.
    #[test]
    fn the_schedule_is_diffusers() {
        let expected = [1.0, 0.857692301273346, 0.602150559425354, 0.008928571827709675, 0.0];
        let got = sigmas(4, 3.0);
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-7, "{got:?}");
        }
        assert_eq!(sigmas(1, 3.0), vec![1.0, 0.0]);
        assert!((sigmas(2, 3.0)[1] - 0.008928571827709675).abs() < 1e-7);
    }
}

//! CLIP (`openai/clip-vit-base-patch32`, `openai/clip-vit-large-patch14-336`): an image
//! tower and a text tower projected into one space, vectors L2-normalised, as
//! transformers' `CLIPModel.get_image_features` / `get_text_features` then `x / |x|`.
//!
//! Files: `config.json` (HF `CLIPConfig`), `model.safetensors` (HF names), `tokenizer.json`,
//! `preprocessor_config.json`. The towers are candle's; the host assembles them (rather
//! than candle's `ClipModel`) to pool the text where it chooses and to refuse a checkpoint
//! without `class_embedding`, which candle would fill with unseeded random numbers.
//!
//! Texts: tokenized with `<|startoftext|>`/`<|endoftext|>`, cut to the text tower's
//! positions keeping `<|endoftext|>` last (as `CLIPTokenizer(truncation=True)`), padded per
//! batch with `<|endoftext|>`. The text vector is read at the first highest id of each
//! text's own ids — transformers' rule for the OpenAI configs (whose `eos_token_id` is the
//! legacy 2) and the end-of-text position, since `<|endoftext|>` is the highest id. It is
//! taken from the unpadded ids, so padding cannot move it; the tower is causal, so padding
//! after it cannot change it.
//!
//! dtype: f32 (candle's CPU matmul has no bf16; the checkpoints are f32).

mod config;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use candle_transformers::models::clip::text_model::ClipTextTransformer;
use candle_transformers::models::clip::vision_model::ClipVisionTransformer;
use image::RgbImage;
use tokenizers::Tokenizer;

pub(crate) use config::{HfClipConfig, HfVisionConfig};

use super::clip_preprocess::ClipPreprocessor;
use super::loading;
use crate::capabilities::ImageEmbedder;
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// Images per forward pass of the vision tower.
const IMAGE_BATCH: usize = 16;
/// Texts per forward pass of the text tower.
const TEXT_BATCH: usize = 32;
const END_OF_TEXT: &str = "<|endoftext|>";

pub struct Clip {
    text: ClipTextTransformer,
    vision: ClipVisionTransformer,
    text_projection: Linear,
    visual_projection: Linear,
    tokenizer: Tokenizer,
    preprocessor: ClipPreprocessor,
    max_positions: usize,
    end_of_text: u32,
    dimensions: usize,
    device: Device,
}

fn failed(context: &'static str) -> impl Fn(candle_core::Error) -> LanternError {
    move |e| LanternError::inference(context, e)
}

/// Tensors candle would not miss (it invents them) but a real checkpoint has.
fn require(weights: &VarBuilder, names: &[&str]) -> LanternResult<()> {
    for name in names {
        if !weights.contains_tensor(name) {
            return Err(LanternError::ModelNotSupported(format!("the checkpoint has no tensor {name}")));
        }
    }
    Ok(())
}

pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<Clip> {
    let config: HfClipConfig = loading::json_config(files, "config.json")?;
    let dimensions = config.projection_dim;
    let text_config = config.text_config.to_candle(dimensions)?;
    let vision_config = config.vision_config.to_candle(dimensions)?;
    let preprocessor = ClipPreprocessor::load(files, vision_config.image_size)?;
    let tokenizer = loading::tokenizer(files, "tokenizer.json")?;
    let end_of_text = tokenizer
        .token_to_id(END_OF_TEXT)
        .ok_or_else(|| LanternError::ModelNotSupported(format!("tokenizer.json has no {END_OF_TEXT}")))?;
    let weights = loading::safetensors(files, &["model.safetensors"], DType::F32, device)?;
    require(&weights, &["vision_model.embeddings.class_embedding"])?;
    let bad = |e: candle_core::Error| LanternError::ModelNotSupported(format!("{}: {e}", files.repo.repo));
    let text = ClipTextTransformer::new(weights.pp("text_model"), &text_config).map_err(bad)?;
    let vision = ClipVisionTransformer::new(weights.pp("vision_model"), &vision_config).map_err(bad)?;
    let text_projection =
        candle_nn::linear_no_bias(text_config.embed_dim, dimensions, weights.pp("text_projection")).map_err(bad)?;
    let visual_projection =
        candle_nn::linear_no_bias(vision_config.embed_dim, dimensions, weights.pp("visual_projection")).map_err(bad)?;
    Ok(Clip {
        text,
        vision,
        text_projection,
        visual_projection,
        tokenizer,
        preprocessor,
        max_positions: text_config.max_position_embeddings,
        end_of_text,
        dimensions,
        device: device.clone(),
    })
}

/// Each row divided by its L2 norm, as rows of f32.
fn normalised_rows(features: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    candle_transformers::models::clip::div_l2_norm(features)?.to_vec2::<f32>()
}

impl Clip {
    /// A text's ids with the special tokens, cut to the tower's positions with the end
    /// of text kept last.
    pub fn token_ids(&self, text: &str) -> LanternResult<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| LanternError::inference("tokenizing", e))?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > self.max_positions {
            ids.truncate(self.max_positions - 1);
            ids.push(self.end_of_text);
        }
        Ok(ids)
    }

    /// Normalised text vectors of already tokenized texts (one forward pass).
    pub fn embed_token_ids(&self, texts: &[Vec<u32>]) -> LanternResult<Vec<Vec<f32>>> {
        let longest = texts.iter().map(Vec::len).max().unwrap_or(0);
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        if longest == 0 || longest > self.max_positions {
            return Err(LanternError::InvalidInput(format!("token sequences must hold 1 to {} ids", self.max_positions)));
        }
        let mut padded = Vec::with_capacity(texts.len() * longest);
        let mut pooled_rows = Vec::with_capacity(texts.len());
        for (row, ids) in texts.iter().enumerate() {
            // The first highest id (see the module doc), from the text's own ids.
            let at = ids.iter().enumerate().fold(0, |best, (i, id)| if *id > ids[best] { i } else { best });
            pooled_rows.push((row * longest + at) as u32);
            padded.extend_from_slice(ids);
            padded.extend(std::iter::repeat_n(self.end_of_text, longest - ids.len()));
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = Tensor::from_vec(padded, (texts.len(), longest), &self.device)?;
            let hidden = self.text.forward_with_mask(&ids, usize::MAX)?;
            let width = hidden.dim(2)?;
            let rows = Tensor::new(pooled_rows.as_slice(), &self.device)?;
            let pooled = hidden.reshape((texts.len() * longest, width))?.index_select(&rows, 0)?;
            normalised_rows(&self.text_projection.forward(&pooled)?)
        };
        run().map_err(failed("embedding texts"))
    }

    /// Normalised image vectors of already preprocessed images (N, 3, H, W).
    pub fn embed_pixels(&self, pixels: &Tensor) -> LanternResult<Vec<Vec<f32>>> {
        let run = || normalised_rows(&self.visual_projection.forward(&self.vision.forward(pixels)?)?);
        run().map_err(failed("embedding images"))
    }

    /// The preprocessing this model applies to images.
    pub fn preprocessor(&self) -> &ClipPreprocessor {
        &self.preprocessor
    }
}

impl ImageEmbedder for Clip {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn embed_images(&self, images: &[RgbImage]) -> LanternResult<Vec<Vec<f32>>> {
        let mut vectors = Vec::with_capacity(images.len());
        for chunk in images.chunks(IMAGE_BATCH) {
            let pixels = self.preprocessor.batch(chunk, &self.device)?;
            vectors.extend(self.embed_pixels(&pixels)?);
        }
        Ok(vectors)
    }

    fn embed_texts(&self, texts: &[String]) -> LanternResult<Vec<Vec<f32>>> {
        let mut vectors = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(TEXT_BATCH) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|text| self.token_ids(text)).collect::<LanternResult<_>>()?;
            vectors.extend(self.embed_token_ids(&ids)?);
        }
        Ok(vectors)
    }
}

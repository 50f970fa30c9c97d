//! LLaVA 1.5 in the llava-hf layout (`llava-hf/llava-1.5-7b-hf`): a CLIP vision tower
//! (`vision_tower.vision_model.*`), a two-layer GELU projector
//! (`multi_modal_projector.linear_{1,2}`) and a Llama (`language_model.*`), sharded with
//! `model.safetensors.index.json`.
//!
//! Assembled from candle's pieces rather than its `LLaVA`, which cannot load 1.5: it
//! always reads `image_newline` (a 1.6 tensor) and picks the vision layer one off from
//! transformers (see [`config`]). The Llama's tensors are checked before `Llama::load`,
//! which panics on a missing one.
//!
//! Prompt: llava-hf's template `USER: <image>\n{question} ASSISTANT:` with BOS, the
//! `<image>` token repeated once per image feature (576 for 336/14), as `LlavaProcessor`
//! does; the first forward pass puts the projected features in those positions. The
//! answer streams through the shared decode loop.
//!
//! dtype: f32 on every device (candle's CPU matmul has no bf16; the 7B model so takes
//! ~28 GB of memory).

mod config;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use candle_transformers::models::clip::vision_model::ClipVisionTransformer;
use candle_transformers::models::llama::{Cache, Llama};
use image::RgbImage;
use tokenizers::Tokenizer;

use super::clip_preprocess::ClipPreprocessor;
use super::decoding::{self, CausalLm, DecodeSetup};
use super::diffusion::weights::Shapes;
use super::loading;
use crate::capabilities::{Generated, GenerationSink, SamplingParams, VisionLanguageModel, VisionPrompt};
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;
use config::LlavaSetup;

const IMAGE_TOKEN: &str = "<image>";
const LANGUAGE_MODEL: &str = "language_model";
const VISION_TOWER: &str = "vision_tower.vision_model";

pub struct Llava {
    vision: ClipVisionTransformer,
    projector: [Linear; 2],
    llama: Llama,
    setup: LlavaSetup,
    tokenizer: Tokenizer,
    preprocessor: ClipPreprocessor,
    device: Device,
}

fn read_text(files: &ModelFiles, file: &str) -> LanternResult<String> {
    std::fs::read_to_string(files.path(file)?).map_err(|e| LanternError::InferenceFailed(format!("loading {file}: {e}")))
}

/// Every tensor candle will ask for, present with the shape it will ask for (read from
/// the shards' headers only).
fn check_tensors(files: &ModelFiles, setup: &LlavaSetup) -> LanternResult<()> {
    let shards = loading::checkpoint_files(files)?
        .iter()
        .map(|name| Shapes::read(files.path(name)?, &format!("{}/{name}", files.repo.repo)))
        .collect::<LanternResult<Vec<Shapes>>>()?;
    let vision_width = setup.vision.embed_dim;
    let width = setup.llama.hidden_size;
    let mut needed = setup.llama_tensors(LANGUAGE_MODEL);
    // candle fills a missing class embedding with unseeded random numbers.
    needed.push((format!("{VISION_TOWER}.embeddings.class_embedding"), vec![vision_width]));
    needed.push(("multi_modal_projector.linear_1.weight".into(), vec![width, vision_width]));
    needed.push(("multi_modal_projector.linear_2.weight".into(), vec![width, width]));
    for (name, shape) in needed {
        match shards.iter().find(|shard| shard.contains(&name)).map(|shard| shard.shape(&name)).transpose()? {
            None => {
                return Err(LanternError::ModelNotSupported(format!("{}: the checkpoint has no tensor {name}", files.repo.repo)))
            }
            Some(found) if *found != shape => {
                return Err(LanternError::ModelNotSupported(format!(
                    "{}: tensor {name} has shape {found:?}, the config implies {shape:?}",
                    files.repo.repo
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn projector_layer(weights: &VarBuilder, setup: &LlavaSetup, index: usize, inputs: usize) -> candle_core::Result<Linear> {
    let outputs = setup.llama.hidden_size;
    let vb = weights.pp(format!("multi_modal_projector.linear_{index}"));
    if setup.projector_bias {
        candle_nn::linear(inputs, outputs, vb)
    } else {
        candle_nn::linear_no_bias(inputs, outputs, vb)
    }
}

pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<Llava> {
    let setup = LlavaSetup::parse(&read_text(files, "config.json")?, &read_text(files, "generation_config.json")?)?;
    let preprocessor = ClipPreprocessor::load(files, setup.vision.image_size)?;
    let tokenizer = loading::tokenizer(files, "tokenizer.json")?;
    match tokenizer.token_to_id(IMAGE_TOKEN) {
        Some(id) if id == setup.image_token => {}
        other => {
            return Err(LanternError::ModelNotSupported(format!(
                "tokenizer.json's {IMAGE_TOKEN} is {other:?}, config.json's image_token_index {}",
                setup.image_token
            )))
        }
    }
    check_tensors(files, &setup)?;
    let weights = loading::checkpoint(files, DType::F32, device)?;
    let bad = |e: candle_core::Error| LanternError::ModelNotSupported(format!("{}: {e}", files.repo.repo));
    let vision = ClipVisionTransformer::new(weights.pp(VISION_TOWER), &setup.vision).map_err(bad)?;
    let projector = [
        projector_layer(&weights, &setup, 1, setup.vision.embed_dim).map_err(bad)?,
        projector_layer(&weights, &setup, 2, setup.llama.hidden_size).map_err(bad)?,
    ];
    let llama = Llama::load(weights.pp(LANGUAGE_MODEL), &setup.llama).map_err(bad)?;
    Ok(Llava { vision, projector, llama, setup, tokenizer, preprocessor, device: device.clone() })
}

impl Llava {
    /// The prompt's ids for `question`, the image token repeated once per image feature.
    pub fn prompt_ids(&self, question: &str) -> LanternResult<Vec<u32>> {
        let prompt = format!("USER: {IMAGE_TOKEN}\n{question} ASSISTANT:");
        let encoding = self.tokenizer.encode(prompt, true).map_err(|e| LanternError::inference("tokenizing", e))?;
        let ids = encoding.get_ids();
        let image_tokens = ids.iter().filter(|id| **id == self.setup.image_token).count();
        if image_tokens != 1 {
            return Err(LanternError::InvalidInput(format!("the question may not contain {IMAGE_TOKEN}")));
        }
        let mut expanded = Vec::with_capacity(ids.len() + self.setup.image_features);
        for &id in ids {
            if id == self.setup.image_token {
                expanded.extend(std::iter::repeat_n(id, self.setup.image_features));
            } else {
                expanded.push(id);
            }
        }
        if expanded.len() >= self.setup.llama.max_position_embeddings {
            return Err(LanternError::InvalidInput(format!(
                "the prompt takes {} of the model's {} positions: no room to answer",
                expanded.len(),
                self.setup.llama.max_position_embeddings
            )));
        }
        Ok(expanded)
    }

    /// The projected image features, (features, hidden): the chosen vision layer, the
    /// class token dropped unless the config keeps it, through the projector.
    pub fn image_features(&self, pixels: &Tensor) -> LanternResult<Tensor> {
        let run = || -> candle_core::Result<Tensor> {
            let layers = self.vision.output_hidden_states(pixels)?;
            let selected = &layers[self.setup.vision_layer];
            let selected = if self.setup.keep_class_token { selected.clone() } else { selected.i((.., 1..))? };
            let hidden = self.projector[0].forward(&selected)?.apply(&self.setup.projector_act)?;
            self.projector[1].forward(&hidden)?.squeeze(0)
        };
        run().map_err(|e| LanternError::inference("encoding the image", e))
    }
}

/// The Llama with one image's features waiting for the first forward pass.
struct WithImage<'a> {
    llama: &'a Llama,
    cache: Cache,
    image: Option<Tensor>,
    image_token: u32,
}

impl WithImage<'_> {
    /// The prompt's embeddings with the image token's positions holding the features, in order.
    fn embed_prompt(&self, ids: &Tensor, features: &Tensor) -> candle_core::Result<Tensor> {
        let ids: Vec<u32> = ids.squeeze(0)?.to_vec1()?;
        let text_ids: Vec<u32> = ids.iter().map(|&id| if id == self.image_token { 0 } else { id }).collect();
        let text = self.llama.embed(&Tensor::new(text_ids.as_slice(), features.device())?)?;
        let mut next_feature = ids.len();
        let rows: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(at, &id)| {
                if id == self.image_token {
                    next_feature += 1;
                    (next_feature - 1) as u32
                } else {
                    at as u32
                }
            })
            .collect();
        if next_feature - ids.len() != features.dim(0)? {
            candle_core::bail!(
                "the prompt has {} image positions for {} image features",
                next_feature - ids.len(),
                features.dim(0)?
            );
        }
        let all = Tensor::cat(&[text, features.to_dtype(DType::F32)?], 0)?;
        all.index_select(&Tensor::new(rows.as_slice(), features.device())?, 0)?.unsqueeze(0)
    }
}

impl CausalLm for WithImage<'_> {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        match self.image.take() {
            Some(features) => {
                let embeds = self.embed_prompt(input, &features)?;
                self.llama.forward_input_embed(&embeds, position, &mut self.cache)
            }
            None => self.llama.forward(input, position, &mut self.cache),
        }
    }
}

impl VisionLanguageModel for Llava {
    fn prepare(&self, image: &RgbImage, question: &str) -> LanternResult<VisionPrompt> {
        let ids = self.prompt_ids(question)?;
        let pixels = self
            .preprocessor
            .preprocess(image, &self.device)?
            .unsqueeze(0)
            .map_err(|e| LanternError::inference("preprocessing an image", e))?;
        Ok(VisionPrompt { ids, pixels, image_size: image.dimensions() })
    }

    fn generate(
        &self,
        prompt: &VisionPrompt,
        params: &SamplingParams,
        sink: &mut dyn GenerationSink,
    ) -> LanternResult<Generated> {
        let features = self.image_features(&prompt.pixels)?;
        let image_positions = prompt.ids.iter().filter(|id| **id == self.setup.image_token).count();
        if image_positions != self.setup.image_features {
            return Err(LanternError::InvalidInput(format!(
                "the prompt has {image_positions} image positions, the image takes {}",
                self.setup.image_features
            )));
        }
        let cache = Cache::new(true, DType::F32, &self.setup.llama, &self.device)
            .map_err(|e| LanternError::inference("generating", e))?;
        let mut model = WithImage { llama: &self.llama, cache, image: Some(features), image_token: self.setup.image_token };
        let setup = DecodeSetup {
            tokenizer: &self.tokenizer,
            eos_ids: &self.setup.eos,
            context_length: self.setup.llama.max_position_embeddings,
            device: &self.device,
        };
        decoding::generate(&mut model, &setup, &prompt.ids, params, sink)
    }
}

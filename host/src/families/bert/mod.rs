//! BERT sentence encoders in the sentence-transformers layout (all-MiniLM-L6-v2 and kin):
//! `config.json`, `tokenizer.json`, `model.safetensors`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`. Mean or CLS pooling; no instructions; native width only.

mod encoder;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};

use crate::families::safetensors_file::SafetensorsFile;
use serde::Deserialize;

use encoder::{BertShape, PackedBert};

use super::loading;
use super::pipeline::{EmbedderRules, Encoder, OutputDims, PipelineEmbedder, Prompts, TokenBatch};
use super::pooling;
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// Inputs per forward pass. Sorting by length first keeps padding small within a pass.
const MAX_BATCH: usize = 32;

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
}

/// The network that runs: the host's own packed pass on the CPU, candle's model elsewhere
/// (and where `LANTERN_BERT_ENGINE=candle` asks for it).
enum Network {
    Packed(PackedBert),
    Candle(BertModel),
}

pub struct BertEncoder {
    network: Network,
    pooling: Pooling,
}

impl Encoder for BertEncoder {
    fn forward(&self, batch: &TokenBatch, _head: Option<usize>) -> candle_core::Result<Tensor> {
        match &self.network {
            Network::Candle(model) => {
                let hidden = model.forward(&batch.ids, &batch.ids.zeros_like()?, Some(&batch.mask))?;
                match self.pooling {
                    Pooling::Cls => pooling::first_token(&hidden),
                    Pooling::Mean => pooling::mean(&hidden, &batch.mask),
                }
            }
            Network::Packed(model) => {
                let sentences: Vec<Vec<u32>> =
                    batch.ids.to_vec2::<u32>()?.into_iter().zip(&batch.lengths).map(|(ids, &length)| ids[..length].to_vec()).collect();
                let hidden = model.forward(&sentences)?;
                let width = model.width();
                let mut pooled = Vec::with_capacity(sentences.len() * width);
                let mut row = 0;
                for ids in &sentences {
                    let rows = &hidden[row * width..(row + ids.len()) * width];
                    match self.pooling {
                        Pooling::Cls => pooled.extend_from_slice(&rows[..width]),
                        Pooling::Mean => {
                            let mut mean = vec![0f32; width];
                            rows.chunks_exact(width).for_each(|token| crate::kernels::vector::axpy(&mut mean, 1.0, token));
                            let count = ids.len().max(1) as f32;
                            pooled.extend(mean.iter().map(|v| v / count));
                        }
                    }
                    row += ids.len();
                }
                Tensor::from_vec(pooled, (sentences.len(), width), batch.ids.device())
            }
        }
    }
}

/// Candle's model where asked for or off the CPU (the packed pass is CPU code).
fn wants_candle(device: &Device, shape: &BertShape) -> bool {
    !device.is_cpu() || PackedBert::supports(shape).is_none() || std::env::var("LANTERN_BERT_ENGINE").is_ok_and(|engine| engine == "candle")
}

pub type BertEmbedder = PipelineEmbedder<BertEncoder>;

pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<BertEmbedder> {
    let shape: BertShape = loading::json_config(files, "config.json")?;
    let pooling: PoolingConfig = loading::json_config(files, "1_Pooling/config.json")?;
    let sentence: SentenceBertConfig = loading::json_config(files, "sentence_bert_config.json")?;
    let pooling = match (pooling.pooling_mode_mean_tokens, pooling.pooling_mode_cls_token) {
        (true, _) => Pooling::Mean,
        (false, true) => Pooling::Cls,
        (false, false) => {
            return Err(LanternError::ModelNotSupported(
                "1_Pooling/config.json asks for a pooling mode other than mean or CLS".into(),
            ))
        }
    };
    let tokenizer = loading::tokenizer(files, "tokenizer.json")?;
    let network = if wants_candle(device, &shape) {
        let weights = loading::safetensors(files, &["model.safetensors"], DType::F32, device)?;
        let config: Config = loading::json_config(files, "config.json")?;
        Network::Candle(BertModel::load(weights, &config).map_err(|e| LanternError::inference("loading BERT weights", e))?)
    } else {
        let file = SafetensorsFile::open(files.path("model.safetensors")?, "model.safetensors")?;
        Network::Packed(PackedBert::load(&file, &shape)?)
    };
    let rules = EmbedderRules {
        family: "BERT",
        max_tokens: sentence.max_seq_length.min(shape.max_position_embeddings),
        pad_id: shape.pad_token_id,
        prompts: Prompts::None,
        suffix: "",
        dims: OutputDims::Native(shape.hidden_size),
        max_batch: MAX_BATCH,
        attends_to_padding: false,
    };
    PipelineEmbedder::new(BertEncoder { network, pooling }, tokenizer, rules, device)
}
